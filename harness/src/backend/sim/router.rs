//! The router of the simulated path: the [`PathState`]'s packet rules,
//! applied to every segment before it leaves a simulated host.
//!
//! Why here, and not in turmoil or turmoil-net: turmoil 0.7 can partition
//! and hold whole links but has no per-segment hook (its `Sim::links` can
//! inspect and deliver in-flight messages, never drop or answer one), and
//! its TCP never retransmits, so a dropped segment would stall a flow for
//! good where a real one resumes. turmoil-net has packet rules and a TCP
//! with retransmission, but it is a socket stack without turmoil's
//! per-host runtimes: a task the engine spawns would run against whichever
//! host polled last, and it cannot replay a run from a seed. So the hosts
//! stay on turmoil, talking to each other directly (no relay, no host that
//! accepts a connection on the path's behalf), and each end of a
//! connection asks the router for a [`Verdict`] on each segment it sends,
//! as a real router would judge it on the wire:
//!
//! - `Pass`: the segment goes out on turmoil's link.
//! - `Drop`: it is kept in the end's send buffer and retransmitted with
//!   TCP's doubling timeout (200 ms up to 120 s; SYNs from 1 s, six
//!   times, as Linux does) until a verdict lets it pass, so a connect
//!   through a blackholed path times out and a flow resumes after a heal.
//! - `Reset`: the sender's connection is reset (its next operation fails
//!   with `ConnectionReset`), as an RST from the router does.
//! - `Unsent`: the sender's own link is down; the segment waits in its
//!   send buffer and goes out at the first write (or timer tick, every
//!   200 ms) after the link is back, as a kernel pushes what its device
//!   could not send.
//! - `Portal`: a new flow is redirected to the captive portal on the
//!   router (the middlebox host), as the netns router's DNAT does.
//!
//! Halves of a reset or dropped flow are kept until the run ends instead of
//! being dropped: turmoil would send their FIN or RST straight to the peer,
//! a segment the router would not have passed.

use crate::backend::names::NameService;
use crate::backend::path::{PathState, Segment, Side, Verdict};
use crate::backend::portal::PORTAL_PORT;
use crate::fault::Action;
use std::any::Any;
use std::collections::{HashMap, VecDeque};
use std::future::poll_fn;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll, Waker};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use turmoil::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use turmoil::net::{TcpListener, TcpStream};

/// Linux's `TCP_RTO_MIN`: the first retransmission of dropped data.
const RTO_MIN: Duration = Duration::from_millis(200);
/// When a segment first sent at the start of an outage of `outage` gets
/// through: at the first retransmission, by TCP's doubling timer (200 ms,
/// then 400 ms, 800 ms… after each), that comes no earlier than the heal.
/// For links turmoil holds and releases whole (a blocked broker), whose
/// release would otherwise deliver at the very heal.
pub(crate) fn first_retransmission_after(outage: Duration) -> Duration {
    let (mut at, mut rto) = (RTO_MIN, RTO_MIN);
    while at < outage && rto < RTO_MAX {
        rto = (rto * 2).min(RTO_MAX);
        at += rto;
    }
    at.max(outage)
}

/// Linux's `TCP_RTO_MAX`.
const RTO_MAX: Duration = Duration::from_secs(120);
/// Linux's `tcp_retries2`: retransmissions of data before the connection
/// times out (about 15 minutes; no simulated run lasts that long).
const DATA_RETRIES: u32 = 15;
/// Linux's initial SYN timeout (`TCP_TIMEOUT_INIT`).
const SYN_RTO: Duration = Duration::from_secs(1);
/// Linux's `tcp_syn_retries`: a connect gives up after about 127 s.
const SYN_RETRIES: u32 = 6;
/// Bytes an end accepts while its segments are being dropped: its send
/// buffer. Past this, a write waits (as a real one blocks).
const SEND_BUFFER: usize = 256 << 10;
/// Bound of the table of flows whose SYN passed and whose server has not
/// accepted them yet; past it the oldest is forgotten (its server end is
/// then judged as a flow of the current epoch).
const MAX_CONNECTING: usize = 1 << 16;

/// The router every host of one simulated world sends through.
#[derive(Clone, Default)]
pub struct Router {
    inner: Arc<Mutex<Inner>>,
    names: NameService,
}

impl std::fmt::Debug for Router {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Router").finish_non_exhaustive()
    }
}

#[derive(Default)]
struct Inner {
    state: PathState,
    /// One-way latency between client and server, and to the router: a
    /// connect completes after the SYN-ACK's way back too.
    latency: (Duration, Duration),
    /// Flows whose SYN passed, by the client's address, until accepted.
    connecting: HashMap<SocketAddr, Flow>,
    /// Insertion order of `connecting` (its bound's oldest-first policy).
    order: VecDeque<SocketAddr>,
    /// Halves of flows that must never send again (see the module doc);
    /// at most two per connection the run made.
    graveyard: Vec<Box<dyn Any + Send>>,
    /// Each flow's activity while an idle timeout applies, by the client's
    /// address (at most `MAX_CONNECTING`, oldest forgotten first).
    idle: HashMap<SocketAddr, Idle>,
    idle_order: VecDeque<SocketAddr>,
    /// The server's process is dead (its host stays up): connects to it
    /// are refused, as a live kernel answers a SYN to a closed port.
    server_down: bool,
}

/// A flow as a NAT with an idle timeout keeps it.
#[derive(Clone, Copy, Debug)]
struct Idle {
    /// When a segment of it last passed.
    last: Duration,
    /// Its mapping expired: every later segment is dropped.
    expired: bool,
}

/// The simulation's clock (zero outside one).
fn sim_now() -> Duration {
    turmoil::sim_elapsed().unwrap_or_default()
}

/// What the router knows of a flow.
#[derive(Clone, Copy, Debug)]
struct Flow {
    epoch: u32,
    /// The side that opened it.
    opener: Side,
    /// It ends at the router (the portal).
    to_router: bool,
}

impl Router {
    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Applies a path action of the schedule, or the name service's
    /// (others are ignored).
    pub fn apply(&self, action: &Action) -> bool {
        if let Action::NameServiceDown(down) = action {
            self.names.set_down(*down);
            return true;
        }
        self.lock().state.apply(action)
    }

    /// The lab's name service.
    pub fn names(&self) -> &NameService {
        &self.names
    }

    /// Whether flow `key` (the client's address) is still known to a NAT
    /// with an idle timeout as one of its segments passes now, which
    /// refreshes it. A flow's clock starts at its first segment under the
    /// timeout, as conntrack applies a new timeout at an entry's next
    /// packet.
    fn through_nat(&self, key: SocketAddr) -> bool {
        let mut inner = self.lock();
        let Some(timeout) = inner.state.nat_idle() else {
            return true;
        };
        let now = sim_now();
        if !inner.idle.contains_key(&key) {
            inner.idle_order.push_back(key);
            while inner.idle_order.len() > MAX_CONNECTING {
                if let Some(old) = inner.idle_order.pop_front() {
                    inner.idle.remove(&old);
                }
            }
        }
        let flow = inner.idle.entry(key).or_insert(Idle {
            last: now,
            expired: false,
        });
        if flow.expired || now.saturating_sub(flow.last) > timeout {
            flow.expired = true;
            return false;
        }
        flow.last = now;
        true
    }

    /// The server's host firewall on or off (see `PathState`).
    pub fn set_server_firewall(&self, on: bool) {
        self.lock().state.set_server_firewall(on);
    }

    /// The server's process died (`true`) or was started again. Its death
    /// resets every flow (the next segment of each is answered with a
    /// reset, as the kernel of a host whose process died answers a
    /// connection it no longer has: turmoil's crashed host would hold them
    /// silently until it boots); while dead, connects to the server are
    /// refused after a round trip.
    pub fn set_server_down(&self, down: bool) {
        let mut inner = self.lock();
        inner.server_down = down;
        if down {
            inner.state.reset();
        }
    }

    /// The server's application opened or closed its port.
    pub fn set_server_opened(&self, opened: bool) {
        self.lock().state.set_server_opened(opened);
    }

    /// The verdict on `seg` right now.
    fn verdict(&self, seg: &Segment) -> Verdict {
        self.lock().state.verdict(seg)
    }

    /// Sets the one-way latency client–server and host–router.
    pub fn set_latency(&self, end_to_end: Duration, to_router: Duration) {
        self.lock().latency = (end_to_end, to_router);
    }

    fn epoch(&self) -> u32 {
        self.lock().state.epoch()
    }

    fn bury(&self, half: Box<dyn Any + Send>) {
        self.lock().graveyard.push(half);
    }

    fn connecting(&self, client: SocketAddr, flow: Flow) {
        let mut inner = self.lock();
        if inner.connecting.insert(client, flow).is_none() {
            inner.order.push_back(client);
        }
        while inner.order.len() > MAX_CONNECTING {
            if let Some(old) = inner.order.pop_front() {
                inner.connecting.remove(&old);
            }
        }
    }

    fn accepted(&self, client: SocketAddr) -> Option<Flow> {
        let mut inner = self.lock();
        let flow = inner.connecting.remove(&client)?;
        inner.order.retain(|a| *a != client);
        Some(flow)
    }

    /// Connects from a host on `side` to `host:port` (on `to`'s side),
    /// through the path: SYNs the router drops are sent again after 1, 2,
    /// 4… seconds; a captive portal takes the flow to `portal:PORTAL_PORT`.
    ///
    /// # Errors
    ///
    /// `TimedOut` after Linux's SYN retries; turmoil's errors (refused,
    /// unknown host) as they are.
    pub async fn connect(
        &self,
        side: Side,
        (host, port): (&str, u16),
        to: Side,
        portal: &str,
    ) -> io::Result<SimStream> {
        if !self.lock().state.routed(side) {
            // connect(2) without a route: ENETUNREACH at once.
            return Err(io::ErrorKind::NetworkUnreachable.into());
        }
        let mut rto = SYN_RTO;
        for _ in 0..=SYN_RETRIES {
            let epoch = self.epoch();
            let syn = Segment {
                from: side,
                to,
                epoch,
                syn: true,
                to_router: false,
            };
            let (target, to_router) = match self.verdict(&syn) {
                Verdict::Pass if to == Side::Server && self.lock().server_down => {
                    // turmoil holds a SYN to a crashed host until it boots;
                    // the kernel of a host whose process died answers it
                    // with a reset.
                    let end_to_end = self.lock().latency.0;
                    tokio::time::sleep(end_to_end * 2).await;
                    return Err(io::ErrorKind::ConnectionRefused.into());
                }
                Verdict::Pass => ((host, port), false),
                Verdict::Portal => ((portal, PORTAL_PORT), true),
                Verdict::Drop | Verdict::Unsent => {
                    tokio::time::sleep(rto).await;
                    rto *= 2;
                    continue;
                }
                // A new flow belongs to no ended epoch.
                Verdict::Reset => return Err(io::ErrorKind::ConnectionRefused.into()),
            };
            let stream = TcpStream::connect(target).await?;
            // turmoil answers a SYN at once; a real SYN-ACK travels back.
            let (end_to_end, router_hop) = self.lock().latency;
            tokio::time::sleep(if to_router { router_hop } else { end_to_end }).await;
            let flow = Flow {
                epoch,
                opener: side,
                to_router,
            };
            let key = stream.local_addr()?;
            self.connecting(key, flow);
            let seg = Segment {
                from: side,
                to: if to_router { Side::Other } else { to },
                epoch,
                syn: false,
                to_router,
            };
            let key = (!to_router).then_some(key);
            return Ok(SimStream::new(stream, seg, self.clone(), None, key));
        }
        Err(io::ErrorKind::TimedOut.into())
    }

    /// Accepts a connection on `listener` of a host on `side`.
    ///
    /// turmoil hands the server its end before the client's `connect`
    /// returns, so the flow's epoch and opener are looked up when this end
    /// first sends.
    ///
    /// # Errors
    ///
    /// turmoil's accept errors.
    pub async fn accept(&self, listener: &TcpListener, side: Side) -> io::Result<SimStream> {
        let (stream, peer) = listener.accept().await?;
        let seg = Segment {
            from: side,
            to: Side::Other,
            epoch: self.epoch(),
            syn: false,
            to_router: false,
        };
        Ok(SimStream::new(
            stream,
            seg,
            self.clone(),
            Some(peer),
            Some(peer),
        ))
    }
}

/// The sending state of one end of a connection, shared with its
/// retransmission task.
struct End {
    write: Option<OwnedWriteHalf>,
    /// Every segment this end sends looks like this to the router.
    seg: Segment,
    /// A server end whose flow is not known yet: the client's address.
    unresolved: Option<SocketAddr>,
    /// The flow's key at the router (the client's address); `None` for a
    /// flow that ends at the router itself.
    key: Option<SocketAddr>,
    /// Bytes accepted while the router drops this end's segments, in order.
    held: VecDeque<u8>,
    /// A FIN waits behind `held`.
    fin: bool,
    /// `held` was never sent (the link was down), rather than dropped on
    /// the way: the next write pushes it once the link is back.
    unsent: bool,
    /// The connection is gone: `ConnectionReset` or `TimedOut`.
    error: Option<io::ErrorKind>,
    /// A retransmission task runs for this end.
    retransmitting: bool,
    read_waker: Option<Waker>,
    write_waker: Option<Waker>,
}

impl End {
    /// The router's verdict on this end's next segment.
    fn judge(&mut self, router: &Router) -> Verdict {
        if let Some(peer) = self.unresolved {
            if let Some(flow) = router.accepted(peer) {
                self.unresolved = None;
                self.seg.epoch = flow.epoch;
                self.seg.to = flow.opener;
                self.seg.to_router = flow.to_router;
                if flow.to_router {
                    self.seg.from = Side::Other;
                }
            }
        }
        match router.verdict(&self.seg) {
            Verdict::Pass if self.seg.to_router => Verdict::Pass,
            Verdict::Pass => match self.key {
                Some(key) if !router.through_nat(key) => Verdict::Drop,
                _ => Verdict::Pass,
            },
            other => other,
        }
    }

    fn fail(&mut self, kind: io::ErrorKind, router: &Router) {
        self.error = Some(kind);
        if let Some(w) = self.write.take() {
            router.bury(Box::new(w));
        }
        self.held.clear();
        for w in [self.read_waker.take(), self.write_waker.take()]
            .into_iter()
            .flatten()
        {
            w.wake();
        }
    }
}

fn lock(end: &Mutex<End>) -> MutexGuard<'_, End> {
    end.lock().unwrap_or_else(|e| e.into_inner())
}

/// One end of a TCP connection on the simulated path.
pub struct SimStream {
    read: Option<OwnedReadHalf>,
    end: Arc<Mutex<End>>,
    router: Router,
}

impl std::fmt::Debug for SimStream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SimStream").finish_non_exhaustive()
    }
}

impl SimStream {
    fn new(
        stream: TcpStream,
        seg: Segment,
        router: Router,
        unresolved: Option<SocketAddr>,
        key: Option<SocketAddr>,
    ) -> Self {
        let (read, write) = stream.into_split();
        SimStream {
            read: Some(read),
            end: Arc::new(Mutex::new(End {
                write: Some(write),
                seg,
                unresolved,
                key,
                held: VecDeque::new(),
                fin: false,
                unsent: false,
                error: None,
                retransmitting: false,
                read_waker: None,
                write_waker: None,
            })),
            router,
        }
    }
}

/// Starts the retransmission task of `end` unless one runs. Outside a
/// runtime (a world being torn down) the end is buried instead.
fn retransmit_later(end: &Arc<Mutex<End>>, e: &mut End, router: &Router) {
    if e.retransmitting {
        return;
    }
    if tokio::runtime::Handle::try_current().is_err() {
        e.fail(io::ErrorKind::TimedOut, router);
        return;
    }
    e.retransmitting = true;
    tokio::spawn(retransmit(end.clone(), router.clone()));
}

/// Sends `end`'s held bytes (then its FIN) once the router passes them,
/// asking again after each timeout, doubled every time.
async fn retransmit(end: Arc<Mutex<End>>, router: Router) {
    let mut rto = RTO_MIN;
    let mut tries = 0;
    loop {
        tokio::time::sleep(rto).await;
        let mut e = lock(&end);
        if e.error.is_some() || e.write.is_none() {
            return;
        }
        match e.judge(&router) {
            Verdict::Pass => break,
            Verdict::Reset => return e.fail(io::ErrorKind::ConnectionReset, &router),
            Verdict::Drop | Verdict::Portal => {
                tries += 1;
                if tries > DATA_RETRIES {
                    return e.fail(io::ErrorKind::TimedOut, &router);
                }
                e.unsent = false;
                rto = (rto * 2).min(RTO_MAX);
            }
            // Nothing left the host: no backoff, no retry counted.
            Verdict::Unsent => e.unsent = true,
        }
    }
    send_held(&end).await;
}

/// Writes `end`'s held bytes, then its FIN, to turmoil.
async fn send_held(end: &Mutex<End>) {
    poll_fn(|cx| {
        let mut e = lock(end);
        let e = &mut *e;
        let Some(w) = e.write.as_mut() else {
            return Poll::Ready(());
        };
        while !e.held.is_empty() {
            let (front, _) = e.held.as_slices();
            match Pin::new(&mut *w).poll_write(cx, front) {
                Poll::Ready(Ok(n)) => drop(e.held.drain(..n)),
                Poll::Ready(Err(_)) => {
                    e.held.clear();
                    break;
                }
                Poll::Pending => return Poll::Pending,
            }
        }
        if e.fin && Pin::new(&mut *w).poll_shutdown(cx).is_pending() {
            return Poll::Pending;
        }
        e.retransmitting = false;
        if let Some(waker) = e.write_waker.take() {
            waker.wake();
        }
        e.unsent = false;
        Poll::Ready(())
    })
    .await;
}

impl AsyncRead for SimStream {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        {
            let mut e = lock(&self.end);
            if let Some(kind) = e.error {
                return Poll::Ready(Err(kind.into()));
            }
            // A reset found by this end's own sending wakes a pending read.
            e.read_waker = Some(cx.waker().clone());
        }
        match self.read.as_mut() {
            Some(r) => Pin::new(r).poll_read(cx, buf),
            None => Poll::Ready(Err(io::ErrorKind::NotConnected.into())),
        }
    }
}

impl AsyncWrite for SimStream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let mut guard = lock(&this.end);
        let e = &mut *guard;
        if let Some(kind) = e.error {
            return Poll::Ready(Err(kind.into()));
        }
        if e.write.is_none() {
            return Poll::Ready(Err(io::ErrorKind::BrokenPipe.into()));
        }
        let queue = |e: &mut End| {
            let n = buf.len().min(SEND_BUFFER - e.held.len());
            e.held.extend(&buf[..n]);
            n
        };
        if e.unsent && e.judge(&this.router) == Verdict::Pass {
            // The link is back: push what it could not send, then this.
            if let Some(w) = e.write.as_mut() {
                while !e.held.is_empty() {
                    let (front, _) = e.held.as_slices();
                    match Pin::new(&mut *w).poll_write(cx, front) {
                        Poll::Ready(Ok(n)) => drop(e.held.drain(..n)),
                        Poll::Ready(Err(err)) => return Poll::Ready(Err(err)),
                        Poll::Pending => return Poll::Pending,
                    }
                }
                e.unsent = false;
            }
        }
        if !e.held.is_empty() || e.retransmitting {
            // Behind bytes waiting for the router: keep the order.
            if e.held.len() >= SEND_BUFFER {
                e.write_waker = Some(cx.waker().clone());
                return Poll::Pending;
            }
            return Poll::Ready(Ok(queue(e)));
        }
        match e.judge(&this.router) {
            Verdict::Pass => match e.write.as_mut() {
                Some(w) => Pin::new(w).poll_write(cx, buf),
                None => Poll::Ready(Err(io::ErrorKind::BrokenPipe.into())),
            },
            verdict @ (Verdict::Drop | Verdict::Unsent | Verdict::Portal) => {
                let n = queue(e);
                e.unsent = verdict == Verdict::Unsent;
                retransmit_later(&this.end, e, &this.router);
                Poll::Ready(Ok(n))
            }
            Verdict::Reset => {
                // The write was accepted; the RST it draws ends the flow.
                e.fail(io::ErrorKind::ConnectionReset, &this.router);
                Poll::Ready(Ok(buf.len()))
            }
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let mut e = lock(&self.end);
        if let Some(kind) = e.error {
            return Poll::Ready(Err(kind.into()));
        }
        if !e.held.is_empty() {
            // A kernel's flush does not wait for retransmissions either.
            return Poll::Ready(Ok(()));
        }
        match e.write.as_mut() {
            Some(w) => Pin::new(w).poll_flush(cx),
            None => Poll::Ready(Ok(())),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let mut e = lock(&this.end);
        if let Some(kind) = e.error {
            return Poll::Ready(Err(kind.into()));
        }
        if e.write.is_none() {
            return Poll::Ready(Ok(()));
        }
        if !e.held.is_empty() || e.retransmitting {
            e.fin = true;
            return Poll::Ready(Ok(()));
        }
        match e.judge(&this.router) {
            Verdict::Pass => match e.write.as_mut() {
                Some(w) => Pin::new(w).poll_shutdown(cx),
                None => Poll::Ready(Ok(())),
            },
            Verdict::Drop | Verdict::Unsent | Verdict::Portal => {
                e.fin = true;
                retransmit_later(&this.end, &mut e, &this.router);
                Poll::Ready(Ok(()))
            }
            Verdict::Reset => {
                e.fail(io::ErrorKind::ConnectionReset, &this.router);
                Poll::Ready(Ok(()))
            }
        }
    }
}

impl Drop for SimStream {
    /// Closing: a FIN the router passes goes out now; one it drops waits
    /// behind the held bytes and is retransmitted; a reset or dropped
    /// flow's halves are buried (see the module doc).
    fn drop(&mut self) {
        let mut e = lock(&self.end);
        let clean = e.error.is_none()
            && e.held.is_empty()
            && !e.retransmitting
            && e.judge(&self.router) == Verdict::Pass;
        if clean {
            return; // turmoil's halves close the flow with FIN (or RST)
        }
        if let Some(r) = self.read.take() {
            self.router.bury(Box::new(r));
        }
        if e.error.is_none() && e.write.is_some() {
            e.fin = true;
            let end = self.end.clone();
            retransmit_later(&end, &mut e, &self.router);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_held_link_is_released_at_the_next_doubled_retransmission() {
        let ms = Duration::from_millis;
        // Retransmissions 200 ms, 600 ms, 1.4 s, 3 s, 6.2 s after the first send.
        assert_eq!(first_retransmission_after(ms(0)), ms(200));
        assert_eq!(first_retransmission_after(ms(600)), ms(600));
        assert_eq!(first_retransmission_after(ms(601)), ms(1_400));
        assert_eq!(first_retransmission_after(ms(4_000)), ms(6_200));
        // Past TCP_RTO_MAX the timer stops doubling; never before the heal.
        let long = Duration::from_secs(100_000);
        assert_eq!(first_retransmission_after(long), long);
    }
}
