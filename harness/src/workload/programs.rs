//! The programs of the stream workload: a naive baseline client and server,
//! and their mitigated counterparts built on `netmend::session`. They are
//! generic over [`Net`] so every backend runs the very same code.

use super::pattern;
use super::Recorder;
use crate::scenario::PlantedBug;
use netmend::dial::{self, RaceConfig, Resolver, StaleConfig};
use netmend::gate::GateConfig;
use netmend::monitor::{Debounce, Events, Monitor};
use netmend::session::{
    with_hints, Accepted, Acceptor, Config, Limits, SessionBuilder, SessionEvent, SessionId,
    TransportHint,
};
use netmend::Policy;
use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

/// The network a backend offers its programs.
pub trait Net: Clone + Send + Sync + 'static {
    /// A connected stream.
    type Stream: AsyncRead + AsyncWrite + Send + Unpin + 'static;
    /// A listening socket.
    type Listener: Send + 'static;
    /// Connects to `host:port`.
    fn connect(
        &self,
        host: &str,
        port: u16,
    ) -> impl Future<Output = io::Result<Self::Stream>> + Send;
    /// Every address `host` has now, preferred first (the lab's name
    /// service on netns; on sim a host's one address).
    fn resolve(
        &self,
        host: &str,
        port: u16,
    ) -> impl Future<Output = io::Result<Vec<SocketAddr>>> + Send;
    /// Connects to `addr`, one of `host`'s addresses, as `hint` advises
    /// (a clamped segment size; sim's TCP has no segments and ignores it).
    fn connect_addr(
        &self,
        host: &str,
        addr: SocketAddr,
        hint: TransportHint,
    ) -> impl Future<Output = io::Result<Self::Stream>> + Send;
    /// Listens on `port` on all addresses.
    fn bind(&self, port: u16) -> impl Future<Output = io::Result<Self::Listener>> + Send;
    /// Accepts one connection.
    fn accept(l: &Self::Listener) -> impl Future<Output = io::Result<Self::Stream>> + Send;
    /// Time since the run started (virtual on sim).
    fn now(&self) -> Duration;
    /// A network monitor for the calling host (the kernel's on netns, one
    /// the simulation drives on sim); `None` if it cannot be had.
    fn monitor(&self, debounce: Debounce) -> impl Future<Output = Option<Monitor>> + Send;
    /// Sets `stream`'s keepalive and `TCP_USER_TIMEOUT` as `tuning` says
    /// (the tuned-TCP peer).
    ///
    /// # Errors
    ///
    /// The socket refused an option, or this network's TCP has none
    /// (`Unsupported`: turmoil's).
    fn tune(stream: &Self::Stream, tuning: &super::peers::TcpTuning) -> io::Result<()>;
    /// Connects to `addr` over Multipath TCP (`IPPROTO_MPTCP`: the MPTCP
    /// peer).
    ///
    /// # Errors
    ///
    /// As [`Net::connect_addr`]; `Unsupported` where this network has no
    /// MPTCP (turmoil's).
    fn connect_mptcp(
        &self,
        addr: SocketAddr,
    ) -> impl Future<Output = io::Result<Self::Stream>> + Send;
    /// Listens on `port` on all addresses over Multipath TCP.
    ///
    /// # Errors
    ///
    /// As [`Net::bind`]; `Unsupported` where this network has no MPTCP.
    fn bind_mptcp(&self, port: u16) -> impl Future<Output = io::Result<Self::Listener>> + Send;
    /// A kernel UDP socket of the calling host bound to `addr` (port 0:
    /// any), non-blocking: the QUIC peer's, for quinn.
    ///
    /// # Errors
    ///
    /// Binding failed; `Unsupported` where this network's UDP is not the
    /// kernel's (turmoil's).
    fn udp_socket(&self, addr: SocketAddr) -> io::Result<std::net::UdpSocket>;
    /// Opens TCP `port` in the calling host's firewall (the engine's
    /// `netmend::firewall` on netns, the simulated host firewall on sim);
    /// the opening lasts while the returned value lives.
    fn open_inbound(
        &self,
        port: u16,
    ) -> impl Future<Output = io::Result<Box<dyn std::any::Any + Send>>> + Send;
}

/// What the client sends and how.
#[derive(Clone, Debug)]
pub struct StreamSpec {
    /// Server (or middlebox) host to connect to.
    pub host: String,
    /// Port.
    pub port: u16,
    /// Total bytes.
    pub total: u64,
    /// Bytes per write.
    pub chunk: usize,
    /// Pacing, bytes per second.
    pub rate: Option<u64>,
    /// The application writes nothing from this point of its paced stream
    /// for this long: `(at, for)`.
    pub pause: Option<(Duration, Duration)>,
    /// Time allowed for one connect.
    pub connect_timeout: Duration,
    /// The naive client follows network changes: it drops its connection
    /// and reconnects on every change notification (what programs that
    /// subscribe to connectivity notifications typically do).
    pub follow_changes: Option<Debounce>,
    /// The naive client resolves the server's name before every connect
    /// (else once, at start).
    pub resolve_each_attempt: bool,
    /// The naive client drops a connection on which a byte it wrote was
    /// not reported received within this long (`[baseline] ack_timeout`).
    pub ack_timeout: Option<Duration>,
}

/// How often a naive server that reports progress tells its client how
/// many bytes it received on the connection (8 bytes, big-endian).
pub const REPORT_EVERY: Duration = Duration::from_millis(100);

/// Most write times a naive client with an acknowledgement timeout keeps
/// (one per 10 ms of writing at most): writes beyond are timed by the next
/// one kept, which can only make the client's deadline later.
const MAX_UNREPORTED: usize = 4096;

/// A naive client's fixed acknowledgement deadline: the connection is dead
/// when a byte written was not reported within `timeout`.
struct AckWatch {
    timeout: Duration,
    /// `(connection offset, written at)`, oldest first.
    written: std::collections::VecDeque<(u64, Duration)>,
    reported: Arc<std::sync::atomic::AtomicU64>,
}

impl AckWatch {
    fn wrote(&mut self, now: Duration, end: u64) {
        let due = self
            .written
            .back()
            .is_none_or(|&(_, at)| now.saturating_sub(at) >= Duration::from_millis(10));
        if due && self.written.len() < MAX_UNREPORTED {
            self.written.push_back((end, now));
        }
    }

    /// When the oldest byte not yet reported runs out of time.
    fn deadline(&mut self) -> Option<Duration> {
        let reported = self.reported.load(std::sync::atomic::Ordering::Relaxed);
        while self
            .written
            .front()
            .is_some_and(|&(end, _)| end <= reported)
        {
            self.written.pop_front();
        }
        self.written.front().map(|&(_, at)| at + self.timeout)
    }
}

/// Reads a progress-reporting server's reports into `reported` until the
/// connection ends.
async fn read_reports<R: AsyncRead + Unpin>(
    mut rd: R,
    reported: Arc<std::sync::atomic::AtomicU64>,
) {
    let mut report = [0u8; 8];
    while rd.read_exact(&mut report).await.is_ok() {
        reported.fetch_max(
            u64::from_be_bytes(report),
            std::sync::atomic::Ordering::Relaxed,
        );
    }
}

/// Resolves at `deadline` (time since the run started), never without one.
async fn until<N: Net>(net: &N, deadline: Option<Duration>) {
    match deadline {
        Some(d) => tokio::time::sleep(d.saturating_sub(net.now())).await,
        None => std::future::pending().await,
    }
}

/// Pause of the naive client between reconnects: what a typical blind retry
/// loop does (`sleep(100ms); connect()`).
const NAIVE_RETRY: Duration = Duration::from_millis(100);

/// Waits until the paced stream (its pause included) is due to write
/// `offset`.
pub(crate) async fn pace<N: Net>(net: &N, spec: &StreamSpec, offset: u64) {
    if let Some(rate) = spec.rate {
        // Saturating: a huge stream at a crawl is due "never", not a panic.
        let mut due =
            Duration::try_from_secs_f64(offset as f64 / rate as f64).unwrap_or(Duration::MAX);
        if let Some((_, quiet)) = spec.pause.filter(|(at, _)| due >= *at) {
            due = due.saturating_add(quiet);
        }
        let now = net.now();
        if due > now {
            tokio::time::sleep(due - now).await;
        }
    }
}

/// What most programs do: resolve the server's name once, at start (or,
/// with `resolve_each_attempt`, before every connect); plain TCP to that
/// address; on an error (or, with `ack_timeout`, a byte not reported in
/// time), reconnect to it in a loop and keep writing where their own
/// `write` calls left off.
pub async fn baseline_client<N: Net>(net: N, spec: StreamSpec, rec: Recorder) {
    let first = |addrs: Vec<SocketAddr>| {
        addrs
            .first()
            .copied()
            .ok_or_else(|| io::Error::new(io::ErrorKind::NotFound, "the name has no address"))
    };
    let mut server = match net.resolve(&spec.host, spec.port).await.and_then(first) {
        Ok(a) => a,
        Err(e) => return rec.client_failed(format!("resolving `{}`: {e}", spec.host)),
    };
    let mut resolved = true;
    let mut offset = 0u64;
    let mut buf = vec![0u8; spec.chunk];
    let monitor = match spec.follow_changes {
        Some(debounce) => net.monitor(debounce).await,
        None => None,
    };
    let mut changes = monitor.as_ref().map(Monitor::events);
    loop {
        rec.attempt(net.now());
        if spec.resolve_each_attempt && !std::mem::take(&mut resolved) {
            match net.resolve(&spec.host, spec.port).await.and_then(first) {
                Ok(a) => server = a,
                Err(e) => {
                    tracing::debug!(error = %e, "baseline: resolving failed");
                    tokio::time::sleep(NAIVE_RETRY).await;
                    continue;
                }
            }
        }
        let connected = tokio::time::timeout(
            spec.connect_timeout,
            net.connect_addr(&spec.host, server, TransportHint::default()),
        )
        .await;
        let stream = match connected {
            Ok(Ok(s)) => s,
            Ok(Err(e)) => {
                tracing::debug!(error = %e, "baseline: connect failed");
                tokio::time::sleep(NAIVE_RETRY).await;
                continue;
            }
            Err(_) => {
                tracing::debug!("baseline: connect timed out");
                tokio::time::sleep(NAIVE_RETRY).await;
                continue;
            }
        };
        let (rd, mut wr) = tokio::io::split(stream);
        let conn_start = offset;
        let mut watch = spec.ack_timeout.map(|timeout| AckWatch {
            timeout,
            written: Default::default(),
            reported: Default::default(),
        });
        // With a deadline, the reports are read beside the writes (and end
        // with them); without, the read half waits for the polite ending.
        let (rd, reports) = match &watch {
            Some(w) => (
                None,
                Some(AbortOnDrop(tokio::spawn(read_reports(
                    rd,
                    w.reported.clone(),
                )))),
            ),
            None => (Some(rd), None),
        };
        let mut failed = false;
        while offset < spec.total {
            let n = (spec.total - offset).min(spec.chunk as u64) as usize;
            pattern::fill(offset, &mut buf[..n]);
            let deadline = watch.as_mut().and_then(AckWatch::deadline);
            let step = async {
                pace(&net, &spec, offset).await;
                wr.write(&buf[..n]).await
            };
            let written = tokio::select! {
                // Fixed order: simulations must replay exactly from their
                // seed. A notification first: an event-driven program
                // handles it when it arrives, not when its writes block
                // (which a simulated socket's large buffer rarely does).
                biased;
                () = next_change(&net, &rec, &mut changes) => {
                    tracing::debug!(offset, "baseline: the network changed, reconnecting");
                    failed = true;
                    break;
                }
                () = until(&net, deadline) => {
                    // Reports may have come since the deadline was read.
                    if watch.as_mut().and_then(AckWatch::deadline).is_some_and(|d| d <= net.now()) {
                        tracing::debug!(offset, "baseline: a write was not acknowledged in time, reconnecting");
                        failed = true;
                        break;
                    }
                    continue;
                }
                r = step => r,
            };
            match written {
                Ok(k) => {
                    offset += k as u64;
                    rec.wrote(net.now(), offset);
                    if let Some(w) = watch.as_mut() {
                        w.wrote(net.now(), offset - conn_start);
                    }
                }
                Err(e) => {
                    tracing::debug!(error = %e, offset, "baseline: write failed, reconnecting");
                    failed = true;
                    break;
                }
            }
        }
        if !failed {
            // Half-close and wait for the server to close: the polite ending.
            let _ = wr.shutdown().await;
            match (rd, reports) {
                (Some(mut half), _) => {
                    let mut sink = Vec::new();
                    let _ = half.read_to_end(&mut sink).await;
                }
                // The report reader ends when the server closes.
                (None, Some(mut task)) => {
                    let _ = (&mut task.0).await;
                }
                (None, None) => {}
            }
            rec.client_done(net.now());
            return;
        }
        tokio::time::sleep(NAIVE_RETRY).await;
    }
}

/// The next change notification (recorded); never, without a monitor.
async fn next_change<N: Net>(net: &N, rec: &Recorder, changes: &mut Option<Events>) {
    match changes {
        Some(events) => match events.next().await {
            Some(event) => {
                tracing::debug!(?event, "baseline: network event");
                rec.event(net.now(), format!("{event:?}"));
            }
            None => std::future::pending::<()>().await,
        },
        None => std::future::pending().await,
    }
}

/// Aborts its task when dropped.
pub(crate) struct AbortOnDrop<T>(pub(crate) tokio::task::JoinHandle<T>);

impl<T> Drop for AbortOnDrop<T> {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Baseline server: every connection's bytes are one stream log. With
/// `report_progress`, it tells the client how many bytes it received on
/// the connection every [`REPORT_EVERY`].
pub async fn baseline_server<N: Net>(
    net: N,
    port: u16,
    rec: Recorder,
    report_progress: bool,
) -> io::Result<()> {
    let listener = net.bind(port).await?;
    loop {
        let stream = N::accept(&listener).await?;
        let (net, rec) = (net.clone(), rec.clone());
        tokio::spawn(async move {
            let idx = rec.open_stream();
            let (mut rd, mut wr) = tokio::io::split(stream);
            let received = std::sync::atomic::AtomicU64::new(0);
            let (stop, mut stopped) = tokio::sync::oneshot::channel::<()>();
            let reading = async {
                let mut buf = vec![0u8; 64 << 10];
                loop {
                    match rd.read(&mut buf).await {
                        Ok(0) | Err(_) => break,
                        Ok(n) => {
                            rec.received(idx, net.now(), &buf[..n]);
                            received.fetch_add(n as u64, std::sync::atomic::Ordering::Relaxed);
                        }
                    }
                }
                let _ = stop.send(());
            };
            let reporting = async {
                if !report_progress {
                    return;
                }
                loop {
                    tokio::select! {
                        biased;
                        _ = &mut stopped => break,
                        () = tokio::time::sleep(REPORT_EVERY) => {}
                    }
                    let n = received.load(std::sync::atomic::Ordering::Relaxed);
                    if wr.write_all(&n.to_be_bytes()).await.is_err() {
                        break;
                    }
                }
            };
            tokio::join!(reading, reporting);
            let _ = wr.shutdown().await;
        });
    }
}

/// Engine parameters of the mitigated run.
#[derive(Clone, Debug)]
pub struct MitigationSpec {
    /// Session tunables.
    pub config: Config,
    /// Reconnect policy.
    pub policy: Policy,
    /// Jitter seed.
    pub seed: u64,
    /// Follow network changes through a monitor, reconnecting through the
    /// routability gate.
    pub follow: Option<(Debounce, GateConfig)>,
    /// A deliberate bug (the harness's own tests of `explore`).
    pub planted_bug: Option<PlantedBug>,
}

/// The mitigated client: the same writes through a resumable session.
pub async fn mitigated_client<N: Net>(net: N, spec: StreamSpec, m: MitigationSpec, rec: Recorder) {
    let (host, port, n2, r2) = (spec.host.clone(), spec.port, net.clone(), rec.clone());
    // The engine calls the connector once per attempt: its calls are the
    // attempts, timed. Each resolves the server's name again — through a
    // serve-stale resolver: the last good answer when the name server is
    // gone (RFC 8767), its client timeout within the attempt's — and races
    // its addresses (netmend::dial, Happy Eyeballs v2).
    let stale = StaleConfig {
        client_timeout: (m.config.connect_timeout / 2).min(StaleConfig::default().client_timeout),
        ..StaleConfig::default()
    };
    let resolver = match Resolver::new(stale) {
        Ok(r) => Arc::new(r),
        Err(e) => return rec.client_failed(format!("resolver: {e}")),
    };
    // With the session's hint: smaller segments after a suspected MTU
    // black hole.
    let connector = with_hints(move |hint: TransportHint| {
        let (net, host, resolver) = (n2.clone(), host.clone(), resolver.clone());
        r2.attempt(net.now());
        async move {
            let addrs = resolver
                .resolve(&host, port, || net.resolve(&host, port))
                .await?;
            let (n, h) = (net.clone(), host.clone());
            dial::race(addrs, RaceConfig::default(), move |addr| {
                let (n, h) = (n.clone(), h.clone());
                async move { n.connect_addr(&h, addr, hint).await }
            })
            .await
            .map_err(io::Error::from)
        }
    });
    let (n3, r3) = (net.clone(), rec.clone());
    let mut builder = SessionBuilder::new()
        .config(m.config)
        .policy(m.policy)
        .rng_seed(m.seed)
        .on_event(move |event| r3.event(n3.now(), session_event(event)));
    if let Some((debounce, gate)) = m.follow {
        match net.monitor(debounce).await {
            Some(monitor) => builder = builder.monitor(monitor).gate(gate),
            None => {
                rec.client_failed("the backend offers no network monitor".into());
                return;
            }
        }
    }
    let mut session = match builder.connect(connector).await {
        Ok(s) => s,
        Err(e) => {
            rec.client_failed(e.to_string());
            return;
        }
    };
    let mut buf = vec![0u8; spec.chunk];
    let mut offset = 0u64;
    let mut resumes_seen = 0;
    let result: io::Result<()> = async {
        while offset < spec.total {
            pace(&net, &spec, offset).await;
            let n = (spec.total - offset).min(spec.chunk as u64) as usize;
            pattern::fill(offset, &mut buf[..n]);
            let resumes = session.stats().protocol.resumes;
            let skip = m.planted_bug == Some(PlantedBug::LoseChunkOnResume)
                && resumes > resumes_seen
                && resumes % 2 == 1;
            resumes_seen = resumes;
            if !skip {
                session.write_all(&buf[..n]).await?;
            }
            offset += n as u64;
            rec.wrote(net.now(), offset);
        }
        session.shutdown().await?;
        let mut sink = Vec::new();
        session.read_to_end(&mut sink).await?;
        Ok(())
    }
    .await;
    match result {
        Ok(()) => rec.client_done(net.now()),
        Err(e) => rec.client_failed(e.to_string()),
    }
}

/// A session event as a timeline marks it: what happened, in a few words.
fn session_event(event: &SessionEvent) -> String {
    match event {
        SessionEvent::Connected { attempts } => format!("connected ({attempts} attempt(s))"),
        SessionEvent::Reconnecting { why } => format!("reconnecting: {why:?}"),
        SessionEvent::AttemptFailed { attempt, cause } => {
            format!("attempt {attempt} failed: {cause:?}")
        }
        SessionEvent::Resumed { outage, attempts } => format!(
            "resumed after {} ms ({attempts} attempt(s))",
            outage.as_millis()
        ),
        SessionEvent::PathChanged { from, to } => format!("path changed: {from:?} -> {to:?}"),
        SessionEvent::Rebound { .. } => "left the old path".to_string(),
        SessionEvent::SegmentSize {
            max_segment: Some(mss),
        } => format!("segments clamped to {mss} bytes"),
        SessionEvent::SegmentSize { max_segment: None } => "segments unclamped".to_string(),
        SessionEvent::Failed(e) => format!("failed: {e}"),
        other => format!("{other:?}"),
    }
}

/// What outlives a server that is killed (sim: a host crash): its session
/// store, and the application's own record of which stream log each
/// session writes to (the logs themselves are the run's record).
#[derive(Clone, Debug)]
pub struct Durable {
    /// The session store (standing in for a file on the host's disk).
    pub store: netmend::store::MemoryStore,
    /// The key that seals the tokens in it.
    pub key: netmend::store::StoreKey,
    /// Session → its stream log.
    pub streams: std::sync::Arc<std::sync::Mutex<std::collections::HashMap<SessionId, usize>>>,
}

/// The mitigated server: one stream log per session, however many
/// transports it took — and, with `durable`, however many server processes:
/// a session served from the store goes on in its log, skipping what the
/// log already holds (the application recorded each read before the next).
pub async fn mitigated_server<N: Net>(
    net: N,
    port: u16,
    config: Config,
    limits: Limits,
    watch: (Option<u64>, bool),
    rec: Recorder,
    durable: Option<Durable>,
) -> io::Result<()> {
    let (watch_sessions, open_firewall) = watch;
    // Behind a host firewall the server asks for its port first, and holds
    // the opening for as long as it serves.
    let _opening = match open_firewall {
        true => Some(net.open_inbound(port).await?),
        false => None,
    };
    let listener = net.bind(port).await?;
    let acceptor = match &durable {
        None => Acceptor::with_limits(config, limits),
        Some(d) => Acceptor::with_store(config, limits, d.store.clone(), d.key.clone()),
    }
    .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?;
    if let Some(bound) = watch_sessions {
        let (acceptor, rec) = (acceptor.clone(), rec.clone());
        tokio::spawn(async move {
            loop {
                rec.queue_len("sessions", acceptor.session_count() as u64, bound);
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        });
    }
    loop {
        let stream = N::accept(&listener).await?;
        let (net, rec, acceptor) = (net.clone(), rec.clone(), acceptor.clone());
        let streams = durable.as_ref().map(|d| d.streams.clone());
        tokio::spawn(async move {
            let accepted = acceptor.accept(stream).await;
            let (mut session, idx, mut skip) = match accepted {
                Ok(Accepted::New(session)) => {
                    let idx = rec.open_stream();
                    if let (Some(m), Some(id)) = (&streams, session.id()) {
                        if let Ok(mut g) = m.lock() {
                            g.insert(id, idx);
                        }
                    }
                    (session, idx, 0)
                }
                Ok(Accepted::Restored(session, restored)) => {
                    let known = streams
                        .as_ref()
                        .and_then(|m| m.lock().ok()?.get(&restored.id).copied());
                    let idx = known.unwrap_or_else(|| rec.open_stream());
                    // The store recorded what the application had
                    // committed: at or before what its log holds.
                    let skip = rec.stream_len(idx).saturating_sub(restored.incoming);
                    rec.event(
                        net.now(),
                        format!(
                            "session served from the store at offset {}",
                            restored.incoming
                        ),
                    );
                    (session, idx, skip)
                }
                Ok(Accepted::Resumed(id)) => {
                    tracing::debug!(session = %id, "resumed");
                    return;
                }
                Err(e) => {
                    tracing::debug!(error = %e, "handshake refused");
                    return;
                }
            };
            let mut buf = vec![0u8; 64 << 10];
            loop {
                match session.read(&mut buf).await {
                    Ok(0) => break,
                    Ok(n) => {
                        let dup = (n as u64).min(skip) as usize;
                        skip -= dup as u64;
                        if dup < n {
                            rec.received(idx, net.now(), &buf[dup..n]);
                        }
                    }
                    Err(e) => {
                        tracing::debug!(error = %e, "server session failed");
                        return;
                    }
                }
            }
            let _ = session.shutdown().await;
        });
    }
}

/// A client's first frame, written by hand as a hostile client would:
/// `NewSession` (type 0x02, 33 bytes: protocol version 2, an X25519 public
/// key — the base point).
fn new_session_frame() -> Vec<u8> {
    let mut out = vec![0x02, 0, 0, 0, 33, 2, 9];
    out.extend_from_slice(&[0; 31]);
    out
}

/// A session flood against `host:port`: from each `(at, count, trickle)`,
/// `count` clients spread over one second open a session and vanish, and
/// `trickle` clients send a handshake one byte every 200 ms until the
/// server gives up on them.
pub async fn flood<N: Net>(net: N, host: String, port: u16, floods: Vec<(Duration, u32, u32)>) {
    let mut tasks = Vec::new();
    for (at, count, trickle) in floods {
        let now = net.now();
        if at > now {
            tokio::time::sleep(at - now).await;
        }
        for _ in 0..trickle {
            let (net, host) = (net.clone(), host.clone());
            tasks.push(tokio::spawn(async move {
                let Ok(mut s) = net.connect(&host, port).await else {
                    return;
                };
                for b in new_session_frame() {
                    if s.write_all(&[b]).await.is_err() {
                        return;
                    }
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
            }));
        }
        let gap = Duration::from_secs(1) / count.max(1);
        for _ in 0..count {
            let (net, host) = (net.clone(), host.clone());
            tasks.push(tokio::spawn(async move {
                let Ok(mut s) = net.connect(&host, port).await else {
                    return;
                };
                if s.write_all(&new_session_frame()).await.is_err() {
                    return;
                }
                // Until the server answered (the session exists), then gone.
                let mut answer = [0u8; 256];
                let _ = tokio::time::timeout(Duration::from_millis(500), s.read(&mut answer)).await;
            }));
            tokio::time::sleep(gap).await;
        }
    }
    for t in tasks {
        let _ = t.await;
    }
}
