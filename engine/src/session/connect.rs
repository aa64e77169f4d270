//! Client side: open a session through a connector and keep it alive.

use super::config::Config;
use super::driver::{drive_link, now, LinkEnd};
use super::error::SessionError;
use super::handle::{Session, Shared};
use super::proto::SessionCore;
use crate::reconnect::{Backoff, GiveUp, Policy};
use rand::rngs::SmallRng;
use rand::SeedableRng;
use std::future::Future;
use std::io;
use std::sync::Arc;
use tokio::io::{AsyncRead, AsyncWrite};

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
        let backoff = Backoff::new(self.policy, now());
        tokio::spawn(run_client(
            Arc::clone(&shared),
            connector,
            self.config,
            backoff,
            rng,
        ));
        shared.established().await?;
        Ok(Session { shared })
    }
}

async fn run_client<C: Connector>(
    shared: Arc<Shared>,
    mut connector: C,
    config: Config,
    mut backoff: Backoff,
    mut rng: SmallRng,
) {
    loop {
        if shared.lock().finished() {
            break;
        }
        shared.lock().connect_attempts += 1;
        let attempt = tokio::time::timeout(config.connect_timeout, connector.connect()).await;
        match attempt {
            Ok(Ok(stream)) => {
                shared.lock().core.open_client_link(now());
                let report = drive_link::<_, ()>(&shared, stream, None).await;
                shared.lock().core.link_lost();
                if report.established {
                    backoff.succeeded();
                }
                match report.end {
                    LinkEnd::Finished => break,
                    LinkEnd::Failed(why) => tracing::info!(%why, "transport lost, reconnecting"),
                    LinkEnd::Preempted(()) => {}
                }
            }
            Ok(Err(e)) => tracing::debug!(error = %e, "connect failed"),
            Err(_) => tracing::debug!("connect timed out"),
        }
        if shared.lock().finished() {
            break;
        }
        match backoff.next_delay(now(), &mut rng) {
            Ok(delay) => tokio::time::sleep(delay).await,
            Err(give_up) => {
                tracing::warn!(%give_up, "giving up on the session");
                let err = match give_up {
                    GiveUp::Budget => SessionError::BudgetExhausted,
                    GiveUp::Attempts { attempts, elapsed }
                    | GiveUp::Deadline { attempts, elapsed } => {
                        SessionError::ReconnectExhausted { attempts, elapsed }
                    }
                };
                shared.lock().core.fail(err);
                break;
            }
        }
    }
    let mut st = shared.lock();
    st.driver_gone = true;
    st.wake_app();
}
