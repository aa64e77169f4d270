//! Client side: open a session through a connector and keep it alive.

use super::config::Config;
use super::driver::{drive_link, now, LinkEnd};
use super::error::SessionError;
use super::handle::{Session, Shared};
use super::proto::SessionCore;
use crate::gate::{GateConfig, GateDriver, GateExpired};
use crate::monitor::Monitor;
use crate::reconnect::{Backoff, GiveUp, Policy};
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};
use std::future::Future;
use std::io;
use std::sync::Arc;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::sync::mpsc::{unbounded_channel, UnboundedReceiver};

/// Anything that yields a fresh byte stream to the server: a TCP connect, a
/// turmoil connect, a TLS handshake, a connect through a proxy…
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
    fn connect(&mut self) -> impl Future<Output = io::Result<Self::Stream>> + Send;
}

impl<F, Fut, S> Connector for F
where
    F: FnMut() -> Fut + Send + 'static,
    Fut: Future<Output = io::Result<S>> + Send,
    S: AsyncRead + AsyncWrite + Send + Unpin + 'static,
{
    type Stream = S;
    fn connect(&mut self) -> impl Future<Output = io::Result<S>> + Send {
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
    /// reconnects from the new path; every reconnect waits on the
    /// [routability gate](crate::gate) instead of the backoff policy, so no
    /// attempt is made while there is no route or address, and probes are
    /// spaced with jitter until the path carries traffic.
    pub fn monitor(mut self, monitor: Monitor) -> Self {
        self.monitor = Some(monitor);
        self
    }

    /// Gate tunables (with a monitor). By default the gate's deadline is
    /// the policy's `max_outage`.
    pub fn gate(mut self, gate: GateConfig) -> Self {
        self.gate = Some(gate);
        self
    }

    /// Spawns the session's driver on the current tokio runtime and waits for
    /// the first transport to be established (retrying per the policy).
    pub async fn connect<C: Connector>(self, connector: C) -> Result<Session, SessionError> {
        let shared = Shared::new(SessionCore::new_client(self.config.clone()));
        let rng = match self.rng_seed {
            Some(s) => SmallRng::seed_from_u64(s),
            // Jitter only has to decorrelate clients: if the OS random source
            // fails, the clock's nanoseconds do that well enough.
            None => SmallRng::try_from_os_rng().unwrap_or_else(|_| {
                let nanos = std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map_or(0, |d| d.subsec_nanos());
                SmallRng::seed_from_u64(u64::from(nanos))
            }),
        };
        let gated = self.monitor.map(|m| {
            let gate = self.gate.unwrap_or(GateConfig {
                deadline: self
                    .policy
                    .max_outage
                    .unwrap_or(GateConfig::default().deadline),
                ..GateConfig::default()
            });
            (m, gate)
        });
        let backoff = Backoff::new(self.policy, now());
        tokio::spawn(run_client(
            Arc::clone(&shared),
            connector,
            self.config,
            backoff,
            rng,
            gated,
        ));
        shared.established().await?;
        Ok(Session { shared })
    }
}

/// Tells the driver when the monitor decides the path has changed.
fn spawn_rebinder(monitor: &Monitor) -> (UnboundedReceiver<()>, AbortOnDrop) {
    let (tx, rx) = unbounded_channel();
    let mut decisions = monitor.decisions();
    let task = tokio::spawn(async move {
        while let Some(change) = decisions.next().await {
            if change.path_changed && tx.send(()).is_err() {
                return;
            }
        }
    });
    (rx, AbortOnDrop(task))
}

struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// One connect attempt under the policy's timeout.
async fn connect_once<C: Connector>(
    shared: &Shared,
    connector: &mut C,
    config: &Config,
) -> Option<C::Stream> {
    shared.lock().connect_attempts += 1;
    match tokio::time::timeout(config.connect_timeout, connector.connect()).await {
        Ok(Ok(stream)) => Some(stream),
        Ok(Err(e)) => {
            tracing::debug!(error = %e, "connect failed");
            None
        }
        Err(_) => {
            tracing::debug!("connect timed out");
            None
        }
    }
}

/// Connects through the routability gate: each probe is a real connect,
/// and the first that succeeds becomes the transport.
async fn connect_gated<C: Connector>(
    shared: &Shared,
    connector: &mut C,
    monitor: &Monitor,
    gate: GateConfig,
    seed: u64,
) -> Result<C::Stream, GateExpired> {
    let mut driver = GateDriver::new(monitor, gate, seed);
    loop {
        driver.next_probe().await?;
        shared.lock().connect_attempts += 1;
        match tokio::time::timeout(gate.probe_timeout, connector.connect()).await {
            Ok(Ok(stream)) => {
                driver.probe_done(true);
                return Ok(stream);
            }
            Ok(Err(e)) => tracing::debug!(error = %e, "probe connect failed"),
            Err(_) => tracing::debug!("probe connect timed out"),
        }
        driver.probe_done(false);
    }
}

/// Waits out the policy's next delay; `false` (with the session failed)
/// when the policy gives up.
async fn wait_backoff(shared: &Shared, backoff: &mut Backoff, rng: &mut SmallRng) -> bool {
    match backoff.next_delay(now(), rng) {
        Ok(delay) => {
            tokio::time::sleep(delay).await;
            true
        }
        Err(give_up) => {
            tracing::warn!(%give_up, "giving up on the session");
            let err = match give_up {
                GiveUp::Budget => SessionError::BudgetExhausted,
                GiveUp::Attempts { attempts, elapsed } | GiveUp::Deadline { attempts, elapsed } => {
                    SessionError::ReconnectExhausted { attempts, elapsed }
                }
            };
            shared.lock().core.fail(err);
            false
        }
    }
}

async fn run_client<C: Connector>(
    shared: Arc<Shared>,
    mut connector: C,
    config: Config,
    mut backoff: Backoff,
    mut rng: SmallRng,
    gated: Option<(Monitor, GateConfig)>,
) {
    let mut rebind = gated.as_ref().map(|(m, _)| spawn_rebinder(m));
    loop {
        if shared.lock().finished() {
            break;
        }
        let stream = match &gated {
            Some((monitor, gate)) => {
                let seed = rng.random();
                match connect_gated(&shared, &mut connector, monitor, *gate, seed).await {
                    Ok(stream) => stream,
                    Err(expired) => {
                        tracing::warn!(%expired, "giving up on the session");
                        shared.lock().core.fail(SessionError::ReconnectExhausted {
                            attempts: expired.probes,
                            elapsed: expired.waited,
                        });
                        break;
                    }
                }
            }
            None => match connect_once(&shared, &mut connector, &config).await {
                Some(stream) => stream,
                None => {
                    if shared.lock().finished()
                        || !wait_backoff(&shared, &mut backoff, &mut rng).await
                    {
                        break;
                    }
                    continue;
                }
            },
        };
        // Path changes decided before this transport existed are history.
        let rebind_rx = rebind.as_mut().map(|(rx, _)| {
            while rx.try_recv().is_ok() {}
            rx
        });
        shared.lock().core.open_client_link(now());
        let report = drive_link::<_, ()>(&shared, stream, rebind_rx).await;
        shared.lock().core.link_lost();
        if report.established {
            backoff.succeeded();
        }
        match report.end {
            LinkEnd::Finished => break,
            LinkEnd::Failed(why) => tracing::info!(%why, "transport lost, reconnecting"),
            LinkEnd::Preempted(()) => tracing::info!("the network path changed, rebinding"),
        }
        if shared.lock().finished() {
            break;
        }
        // With a monitor, the gate paces the next attempts.
        if gated.is_none() && !wait_backoff(&shared, &mut backoff, &mut rng).await {
            break;
        }
    }
    let mut st = shared.lock();
    st.driver_gone = true;
    st.wake_app();
}
