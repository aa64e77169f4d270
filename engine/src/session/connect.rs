//! Client side: open a session through a connector and keep it alive.
//!
//! All reconnect policy lives in the sans-IO [`ReconnectCore`]; the task
//! here only carries out its actions: it starts and drops connection
//! attempts, runs the transport, feeds the monitor's view in and re-arms
//! one timer.

use super::auth::KeyPair;
use super::config::Config;
use super::driver::{drive_link, now, LinkEnd, LinkReport};
use super::error::{Delivery, SessionError, SessionErrorKind};
use super::event::{EventHandler, SessionEvent};
use super::handle::{DetachSlot, Session, Shared};
use super::proto::SessionCore;
use super::segment::{SegmentClamp, TransportHint};
use crate::gate::{changed_opt, readiness, GateConfig};
use crate::monitor::{Decisions, DefaultRoute, Family, MajorChange, Monitor, Snapshot};
use crate::reconnect::{Action, AttemptFailure, AttemptId, Event, Pacing, Policy, ReconnectCore};
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};
use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use tokio::io::{AsyncRead, AsyncWrite};

/// Anything that yields a fresh byte stream to the server: a TCP connect, a
/// turmoil connect, a TLS handshake, a connect through a proxy…
///
/// The future it returns must own what it needs (`'static`): the session
/// may run several attempts at once (staggered, see [`Policy`]) and drops
/// those it no longer wants.
///
/// For TCP, set `TCP_NODELAY` on the stream (on both ends): acknowledgements
/// and keepalives are small frames, and Nagle's algorithm holding them back
/// halves bulk throughput.
///
/// Closures returning a future implement it:
///
/// ```no_run
/// # async fn f() {
/// let connector = || tokio::net::TcpStream::connect("198.18.0.2:7000");
/// # let _ = netmend::session::SessionBuilder::new().connect(connector);
/// # }
/// ```
pub trait Connector: Send + 'static {
    /// The stream type.
    type Stream: AsyncRead + AsyncWrite + Send + Unpin + 'static;
    /// Opens one transport.
    fn connect(&mut self) -> impl Future<Output = io::Result<Self::Stream>> + Send + 'static;
    /// Opens one transport as the session advises: with segments of at
    /// most `hint.max_segment` bytes after the session suspected an MTU
    /// black hole (see [`TransportHint`]). The session calls this one; by
    /// default it ignores the hint and calls [`connect`](Self::connect).
    /// A connector made with [`with_hints`] gets the hint.
    fn connect_with_hint(
        &mut self,
        hint: TransportHint,
    ) -> impl Future<Output = io::Result<Self::Stream>> + Send + 'static {
        let _ = hint;
        self.connect()
    }
}

/// A connector that takes the session's [`TransportHint`] for each
/// transport: a closure given the hint, which it applies to the socket
/// before connecting ([`TransportHint::apply_to`]).
///
/// ```no_run
/// use netmend::session::{with_hints, SessionBuilder, TransportHint};
///
/// # async fn f() -> Result<(), Box<dyn std::error::Error>> {
/// let connector = with_hints(|hint: TransportHint| async move {
///     let socket = tokio::net::TcpSocket::new_v4()?;
///     hint.apply_to(&socket)?;
///     let stream = socket.connect("198.18.0.2:7000".parse().unwrap()).await?;
///     stream.set_nodelay(true)?;
///     Ok(stream)
/// });
/// let session = SessionBuilder::new().connect(connector).await?;
/// # Ok(()) }
/// ```
pub fn with_hints<F, Fut, S>(connect: F) -> WithHints<F>
where
    F: FnMut(TransportHint) -> Fut + Send + 'static,
    Fut: Future<Output = io::Result<S>> + Send + 'static,
    S: AsyncRead + AsyncWrite + Send + Unpin + 'static,
{
    WithHints(connect)
}

/// A connector closure that takes the session's hint ([`with_hints`]).
#[derive(Clone, Debug)]
pub struct WithHints<F>(F);

impl<F, Fut, S> Connector for WithHints<F>
where
    F: FnMut(TransportHint) -> Fut + Send + 'static,
    Fut: Future<Output = io::Result<S>> + Send + 'static,
    S: AsyncRead + AsyncWrite + Send + Unpin + 'static,
{
    type Stream = S;
    fn connect(&mut self) -> impl Future<Output = io::Result<S>> + Send + 'static {
        (self.0)(TransportHint::default())
    }
    fn connect_with_hint(
        &mut self,
        hint: TransportHint,
    ) -> impl Future<Output = io::Result<S>> + Send + 'static {
        (self.0)(hint)
    }
}

impl<F, Fut, S> Connector for F
where
    F: FnMut() -> Fut + Send + 'static,
    Fut: Future<Output = io::Result<S>> + Send + 'static,
    S: AsyncRead + AsyncWrite + Send + Unpin + 'static,
{
    type Stream = S;
    fn connect(&mut self) -> impl Future<Output = io::Result<S>> + Send + 'static {
        self()
    }
}

/// Opens client sessions.
///
/// ```no_run
/// use netmend::session::{Config, SessionBuilder};
/// use netmend::Policy;
/// use tokio::io::AsyncWriteExt;
///
/// # async fn run() -> Result<(), Box<dyn std::error::Error>> {
/// let mut session = SessionBuilder::new()
///     .config(Config::default())
///     .policy(Policy::default())
///     .connect(|| tokio::net::TcpStream::connect("198.18.0.2:7000"))
///     .await?;
/// session.write_all(b"survives resets").await?;
/// session.shutdown().await?; // resolves once the server has every byte
/// # Ok(()) }
/// ```
#[derive(Clone, Debug, Default)]
pub struct SessionBuilder {
    config: Config,
    policy: Policy,
    rng_seed: Option<u64>,
    monitor: Option<Monitor>,
    gate: Option<GateConfig>,
    on_event: Option<EventHandler>,
}

impl SessionBuilder {
    /// Defaults everywhere.
    pub fn new() -> Self {
        Self::default()
    }

    /// Protocol tunables.
    pub fn config(mut self, config: Config) -> Self {
        self.config = config;
        self
    }

    /// Reconnect policy.
    pub fn policy(mut self, policy: Policy) -> Self {
        self.policy = policy;
        self
    }

    /// Seeds the backoff jitter, for reproducible simulations. Without it the
    /// jitter is seeded from the OS.
    pub fn rng_seed(mut self, seed: u64) -> Self {
        self.rng_seed = Some(seed);
        self
    }

    /// Follows the network with `monitor`: when a burst of changes moves the
    /// path (default interface, gateway, source address), the session
    /// drops its transport, even one that never reported an error, and
    /// reconnects from the new path at once; every reconnect waits on the
    /// [routability gate](crate::gate), so no attempt is made while there
    /// is no route or address, and attempts follow the gate's probe
    /// schedule. The policy's limits (attempts, outage, budget) hold all
    /// the same.
    pub fn monitor(mut self, monitor: Monitor) -> Self {
        self.monitor = Some(monitor);
        self
    }

    /// Gate tunables (with a monitor): probe spacing and timeout; an
    /// outage ends at the earlier of the gate's deadline and the policy's
    /// `max_outage`.
    pub fn gate(mut self, gate: GateConfig) -> Self {
        self.gate = Some(gate);
        self
    }

    /// Calls `handler` for every [`SessionEvent`], in order, on the
    /// session's driver task. The handler must not block; it runs without
    /// any session lock held.
    pub fn on_event(mut self, handler: impl FnMut(&SessionEvent) + Send + 'static) -> Self {
        self.on_event = Some(EventHandler::new(handler));
        self
    }

    /// Spawns the session's driver on the current tokio runtime and waits for
    /// the first transport to be established (retrying per the policy).
    ///
    /// # Errors
    ///
    /// [`SessionErrorKind::Config`] when the configuration, policy or gate
    /// is refused (checked before anything else); otherwise the error that
    /// ended the session before its first transport, such as
    /// [`SessionErrorKind::ReconnectExhausted`] with the causes of the last
    /// attempts.
    ///
    /// # Cancel safety
    ///
    /// Cancel safe: dropping the future (e.g. under `tokio::time::timeout`)
    /// stops the driver and every attempt in flight; no session outlives it.
    pub async fn connect<C: Connector>(self, connector: C) -> Result<Session, SessionError> {
        let key = KeyPair::generate().map_err(|e| {
            SessionError::new(
                SessionErrorKind::Protocol(format!("OS random source failed: {e}")),
                Default::default(),
            )
        })?;
        let config = self.config.clone();
        self.start(connector, None, move || {
            Ok(SessionCore::new_client(config, key))
        })
        .await
    }

    /// Goes on with a session [detached](Session::detach) in another
    /// process: `state` is [`Detached::state`](super::Detached::state),
    /// sealed under `key`; `transport` the live transport that came along
    /// ([`Detached::take_transport`](super::Detached::take_transport)), if
    /// any. The session continues on it — the server sees the same
    /// transport carry on — and, when it is lost (or none came), resumes
    /// through `connector` as any session does: no byte lost, none twice.
    /// The builder's config must take the state's unacknowledged bytes
    /// (`replay_capacity`).
    ///
    /// ```no_run
    /// # async fn f(state: Vec<u8>, key: netmend::session::StateKey, tcp: std::net::TcpStream) -> Result<(), Box<dyn std::error::Error>> {
    /// use netmend::session::SessionBuilder;
    /// tcp.set_nonblocking(true)?;
    /// let transport = tokio::net::TcpStream::from_std(tcp)?;
    /// let session = SessionBuilder::new()
    ///     .attach(&state, &key, Some(transport), || tokio::net::TcpStream::connect("198.18.0.2:7000"))
    ///     .await?;
    /// # Ok(()) }
    /// ```
    ///
    /// # Errors
    ///
    /// [`SessionErrorKind::State`] for a state that does not open under
    /// `key` or does not fit; [`SessionErrorKind::Config`]; with no
    /// transport, what ends a session before it resumed.
    ///
    /// # Cancel safety
    ///
    /// Cancel safe as [`connect`](Self::connect): dropping the future stops
    /// the session (the transport closes; the server keeps the session for
    /// `idle_expiry`, so the state can be attached again meanwhile).
    pub async fn attach<C: Connector>(
        self,
        state: &[u8],
        key: &super::StateKey,
        transport: Option<C::Stream>,
        connector: C,
    ) -> Result<Session, SessionError> {
        let state = super::detach::CoreState::open(state, key)
            .map_err(|e| SessionError::new(SessionErrorKind::State(e), Default::default()))?;
        // A transport whose state did not come along cannot go on.
        let transport = transport.filter(|_| state.link.is_some());
        let config = self.config.clone();
        self.start(connector, transport, move || {
            SessionCore::from_state(config, state, now())
                .map_err(|e| SessionError::new(SessionErrorKind::State(e), Default::default()))
        })
        .await
    }

    /// Validates, builds the core with `make_core`, spawns the driver (on
    /// `transport` when there is one) and waits until established.
    async fn start<C: Connector>(
        self,
        connector: C,
        transport: Option<C::Stream>,
        make_core: impl FnOnce() -> Result<SessionCore, SessionError>,
    ) -> Result<Session, SessionError> {
        let config_error = |e| SessionError::new(SessionErrorKind::Config(e), Default::default());
        self.config.validate().map_err(config_error)?;
        self.policy.validate().map_err(config_error)?;
        let pacing = match &self.monitor {
            Some(_) => {
                let gate = self.gate.unwrap_or_default();
                gate.validate().map_err(config_error)?;
                Pacing::gated(gate)
            }
            None => Pacing::unmonitored(&self.policy, self.config.connect_timeout),
        };
        let seed = self.rng_seed.unwrap_or_else(|| {
            // Jitter only has to decorrelate clients: if the OS random source
            // fails, the clock's nanoseconds do that well enough.
            SmallRng::try_from_os_rng()
                .map(|mut r| r.random())
                .unwrap_or_else(|_| {
                    std::time::SystemTime::now()
                        .duration_since(std::time::UNIX_EPOCH)
                        .map_or(0, |d| u64::from(d.subsec_nanos()))
                })
        });
        let shared = Shared::new(make_core()?);
        let core = match transport {
            Some(_) => ReconnectCore::new_connected(self.policy, pacing, now(), seed),
            None => ReconnectCore::new(self.policy, pacing, now(), seed),
        };
        let clamp = SegmentClamp::new(self.config.segment_probe_interval);
        let task = tokio::spawn(run_client(
            Arc::clone(&shared),
            connector,
            (core, clamp),
            transport,
            self.monitor,
            self.on_event,
        ));
        // Until the session is handed out, dropping this future stops it.
        let mut guard = AbortOnDrop(Some(task));
        shared.established().await?;
        Ok(Session {
            shared,
            driver: guard.0.take(),
        })
    }
}

/// Aborts the task when dropped, unless taken out.
struct AbortOnDrop(Option<tokio::task::JoinHandle<()>>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        if let Some(t) = self.0.take() {
            t.abort();
        }
    }
}

type AttemptFuture<S> = Pin<Box<dyn Future<Output = io::Result<S>> + Send>>;
type LinkFuture = Pin<Box<dyn Future<Output = LinkReport<()>> + Send>>;

/// Connection attempts in flight, polled in the order they started (a
/// fixed order: simulations replay exactly from their seed). At most
/// [`MAX_ATTEMPTS_IN_FLIGHT`](crate::reconnect::MAX_ATTEMPTS_IN_FLIGHT),
/// as the core says.
struct Attempts<S> {
    /// Each with the hint it was started with.
    pending: Vec<(AttemptId, TransportHint, AttemptFuture<S>)>,
}

impl<S> Attempts<S> {
    fn cancel(&mut self, id: AttemptId) {
        self.pending.retain(|(a, _, _)| *a != id);
    }

    /// The next attempt to end; pending forever while there is none.
    fn next(&mut self) -> impl Future<Output = (AttemptId, TransportHint, io::Result<S>)> + '_ {
        std::future::poll_fn(move |cx: &mut Context<'_>| {
            for i in 0..self.pending.len() {
                if let Poll::Ready(r) = self.pending[i].2.as_mut().poll(cx) {
                    let (id, hint, _) = self.pending.remove(i);
                    return Poll::Ready((id, hint, r));
                }
            }
            Poll::Pending
        })
    }
}

async fn drive_opt(link: &mut Option<LinkFuture>) -> LinkReport<()> {
    match link {
        Some(f) => f.await,
        None => std::future::pending().await,
    }
}

async fn next_decision(d: &mut Option<Decisions>) -> Option<MajorChange> {
    match d {
        Some(d) => d.next().await,
        None => std::future::pending().await,
    }
}

async fn sleep_opt(at: Option<std::time::Instant>) {
    match at {
        Some(t) => tokio::time::sleep_until(t.into()).await,
        None => std::future::pending().await,
    }
}

/// What counts as progress on a transport: bytes the peer acknowledged or
/// that arrived from it (not what the application wrote meanwhile).
fn progress(d: &Delivery) -> (u64, u64) {
    (d.acknowledged, d.received)
}

/// The default route traffic leaves by: IPv4's, else IPv6's.
fn path_of(s: &Snapshot) -> Option<DefaultRoute> {
    s.default_route(Family::V4)
        .or_else(|| s.default_route(Family::V6))
}

/// The client's driver: carries out the reconnect core's actions.
async fn run_client<C: Connector>(
    shared: Arc<Shared>,
    mut connector: C,
    (mut core, mut clamp): (ReconnectCore, SegmentClamp),
    transport: Option<C::Stream>,
    monitor: Option<Monitor>,
    handler: Option<EventHandler>,
) {
    let emit = |e: SessionEvent| {
        if let Some(h) = &handler {
            h.call(&e);
        }
    };
    let segment_news = |hint: Option<TransportHint>| {
        if let Some(hint) = hint {
            tracing::info!(max_segment = ?hint.max_segment, "segment size of new transports");
            emit(SessionEvent::SegmentSize {
                max_segment: hint.max_segment,
            });
        }
    };
    let mut watch = monitor.as_ref().map(Monitor::watch);
    let mut decisions = monitor.as_ref().map(Monitor::decisions);
    // The monitor's source runs while a clone is alive: this one keeps it
    // going for the session's life.
    let _monitor = monitor;
    if let Some(w) = watch.as_mut() {
        core.handle_path(now(), readiness(&w.borrow_and_update()).map(drop));
    }
    let mut attempts = Attempts::<C::Stream> {
        pending: Vec::new(),
    };
    // Delivery when the transport opened, to tell whether it made progress.
    let mut opened_at = shared.lock().core.delivery();
    // A transport that came with a detached session goes on at once.
    let mut link: Option<LinkFuture> = transport.map(|stream| -> LinkFuture {
        let shared = Arc::clone(&shared);
        Box::pin(async move { drive_link::<_, ()>(&shared, stream, None).await })
    });
    let mut ever_connected = link.is_some();
    if link.is_some() {
        // It was opened in another process, with the system's segment size
        // as far as this one knows; a stall on it clamps as on any other.
        clamp.handle_transport_opened(now(), TransportHint::default());
    }
    let mut moved: (Option<DefaultRoute>, Option<DefaultRoute>) = (None, None);
    loop {
        let t = now();
        {
            let mut st = shared.lock();
            if std::mem::take(&mut st.established_news) {
                core.handle_established(t);
            }
            if matches!(st.detach, DetachSlot::Requested) && link.is_none() {
                // Between transports: the session goes without one.
                match st.core.export(false, &[]) {
                    Ok(state) => st.detach = DetachSlot::Done(Box::new(state), None),
                    Err(e) => st.core.fail(e.kind().clone()),
                }
                break;
            }
            if st.finished() {
                // Aborted, failed or done: no new transport. A live one
                // ends by itself (it flushes its last frames first).
                attempts.pending.clear();
                if link.is_none() {
                    break;
                }
            }
        }
        while let Some(action) = core.poll_action(t) {
            match action {
                Action::Connect(id) => {
                    shared.lock().connect_attempts += 1;
                    let hint = clamp.hint(t);
                    attempts
                        .pending
                        .push((id, hint, Box::pin(connector.connect_with_hint(hint))));
                }
                Action::Cancel(id) => attempts.cancel(id),
                Action::DropTransport => {
                    if link.take().is_some() {
                        shared.lock().core.link_abandoned();
                        // Left on purpose: no sign of the path's MTU.
                        segment_news(clamp.handle_transport_end(t, false));
                        emit(SessionEvent::Rebound {
                            from: moved.0,
                            to: moved.1,
                        });
                    }
                }
                Action::GiveUp(give_up) => {
                    let mut st = shared.lock();
                    if st.core.is_done() {
                        // Only the server's `Close` was missing: nothing of
                        // ours is, so this is no failure.
                        st.core.judge_closed();
                    } else {
                        st.core.fail(SessionErrorKind::ReconnectExhausted(give_up));
                    }
                }
            }
        }
        while let Some(event) = core.poll_event() {
            match event {
                Event::OutageBegan { why } => emit(SessionEvent::Reconnecting { why }),
                Event::AttemptFailed { attempt, cause } => {
                    emit(SessionEvent::AttemptFailed { attempt, cause })
                }
                Event::Recovered { outage, attempts } => {
                    if std::mem::replace(&mut ever_connected, true) {
                        emit(SessionEvent::Resumed { outage, attempts });
                    } else {
                        emit(SessionEvent::Connected { attempts });
                    }
                }
                Event::PathChanged => emit(SessionEvent::PathChanged {
                    from: moved.0,
                    to: moved.1,
                }),
            }
        }
        if core.gave_up() && link.is_none() {
            break;
        }
        let timer = core.poll_timeout();
        tokio::select! {
            // Fixed order: simulations must replay exactly from their seed.
            biased;
            () = shared.client.notified() => {}
            ready = changed_opt(&mut watch) => match ready {
                Some(ready) => core.handle_path(now(), ready),
                None => {
                    tracing::warn!("network monitor stopped; reconnecting on the last known path, within the policy's limits");
                    watch = None;
                    core.handle_path(now(), Ok(()));
                }
            },
            decision = next_decision(&mut decisions) => match decision {
                Some(d) if d.path_changed => {
                    // A new path has its own MTU: start from the system's
                    // segment size again.
                    segment_news(clamp.handle_path_changed());
                    moved = (path_of(&d.before), path_of(&d.after));
                    core.handle_path_changed(now());
                }
                Some(_) => {}
                None => decisions = None,
            },
            report = drive_opt(&mut link) => {
                link = None;
                let report = match report.end {
                    LinkEnd::Detached { transport, input } => {
                        let mut st = shared.lock();
                        match st.core.export(true, &input) {
                            Ok(state) => {
                                // A transport still in its handshake stays.
                                let transport = state.link.is_some().then_some(transport);
                                st.detach = DetachSlot::Done(Box::new(state), transport);
                            }
                            Err(e) => st.core.fail(e.kind().clone()),
                        }
                        break;
                    }
                    end => LinkReport { end },
                };
                let (progressed, stalled) = {
                    let mut st = shared.lock();
                    // A handshake that completed just before the transport
                    // failed, in the same turn: it was a recovery.
                    if std::mem::take(&mut st.established_news) {
                        core.handle_established(now());
                    }
                    // Data unacknowledged while the peer's small frames
                    // arrived: read before the transport is gone.
                    let stalled = st.core.data_stall(now()).is_some();
                    st.core.link_lost();
                    // The next attempts are given at least the path's
                    // measured retransmission timeout.
                    core.handle_round_trip(st.core.round_trip_timeout());
                    (progress(&st.core.delivery()) != progress(&opened_at), stalled)
                };
                // The next transports use smaller segments after a data
                // stall (told without the session's lock held).
                segment_news(clamp.handle_transport_end(now(), stalled));
                match report.end {
                    LinkEnd::Finished | LinkEnd::Detached { .. } => {}
                    LinkEnd::Failed(why) => {
                        tracing::info!(%why, "transport lost");
                        core.handle_transport_lost(now(), why, progressed);
                    }
                    LinkEnd::Preempted(()) => {
                        core.handle_transport_lost(now(), "preempted".into(), progressed);
                    }
                }
            }
            (id, hint, result) = attempts.next() => match result {
                Ok(stream) => {
                    if core.handle_connected(now(), id) {
                        segment_news(clamp.handle_transport_opened(now(), hint));
                        let mut st = shared.lock();
                        st.core.open_client_link(now());
                        opened_at = st.core.delivery();
                        drop(st);
                        let shared = Arc::clone(&shared);
                        link = Some(Box::pin(async move {
                            drive_link::<_, ()>(&shared, stream, None).await
                        }));
                    }
                }
                Err(e) => core.handle_attempt_failed(now(), id, AttemptFailure::from(&e)),
            },
            () = sleep_opt(timer) => core.handle_timeout(now()),
        }
    }
    attempts.pending.clear();
    let error = shared.lock().core.error().cloned();
    if let Some(e) = error {
        emit(SessionEvent::Failed(e));
    }
    let mut st = shared.lock();
    st.driver_gone = true;
    st.wake_app();
}
