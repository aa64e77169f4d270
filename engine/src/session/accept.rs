//! Server side: the acceptor and its session table.

use super::admission::{Admission, Limits, Refusal};
use super::auth::{self, Credentials, KeyPair, Prover};
use super::config::Config;
use super::driver::{drive_link, now, LinkEnd};
use super::error::SessionErrorKind;
use super::frame::{Frame, RejectReason, SessionId};
use super::handle::{Session, Shared};
use super::handshake::{ClientRequest, HandshakeError, ServerHandshake};
use super::proto::{ServerOpen, SessionCore};
use crate::validate::ConfigError;
use std::collections::HashMap;
use std::io;
use std::net::IpAddr;
use std::sync::{Arc, Mutex, MutexGuard, Weak};
use thiserror::Error;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::sync::mpsc::{self, error::TrySendError, Receiver, Sender};

/// Any byte stream a server session can run on.
pub trait Transport: AsyncRead + AsyncWrite + Send + Unpin + 'static {}
impl<T: AsyncRead + AsyncWrite + Send + Unpin + 'static> Transport for T {}

type BoxedTransport = Box<dyn Transport>;

/// A verified transport for an existing session.
struct Attach {
    stream: BoxedTransport,
    open: ServerOpen,
    leftover: Vec<u8>,
}

impl std::fmt::Debug for Attach {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Attach").field("open", &self.open).finish()
    }
}

struct Entry {
    creds: Credentials,
    /// Resumed transports waiting for the session's driver (at most
    /// [`ATTACH_QUEUE`]; past it a resume is told `Busy` and retries).
    attach: Sender<Attach>,
}

type Hook = Arc<dyn Fn(&Incoming) -> bool + Send + Sync>;

/// Resumed transports one session holds before its driver takes them: the
/// driver takes each at once, so more than a few means a client (or a
/// forger with a stolen token) racing itself.
const ATTACH_QUEUE: usize = 4;

/// A map that once held many entries keeps their memory: once it is a
/// quarter full, give back what it does not need, so a server returns
/// what a flood of sessions took once they expire.
pub(crate) fn shrink_when_sparse<K: std::hash::Hash + Eq, V>(map: &mut HashMap<K, V>) {
    if map.capacity() > 64 && map.len() < map.capacity() / 4 {
        map.shrink_to(map.len() * 2);
    }
}

struct Table {
    config: Config,
    sessions: Mutex<HashMap<SessionId, Entry>>,
    admission: Mutex<Admission>,
    hook: std::sync::RwLock<Option<Hook>>,
}

impl Table {
    fn lock(&self) -> MutexGuard<'_, HashMap<SessionId, Entry>> {
        self.sessions.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn admission(&self) -> MutexGuard<'_, Admission> {
        self.admission.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// A new session about to be created, for the application's admission
/// hook ([`Acceptor::on_new_session`]): the model is quinn's `Incoming`.
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct Incoming {
    /// Where the transport comes from, when the caller said
    /// ([`Acceptor::accept_from`]).
    pub source: Option<IpAddr>,
    /// Sessions alive before this one.
    pub sessions: usize,
}

/// Holds a handshake slot; gives it back when dropped (also when the
/// accept future is cancelled).
struct HandshakeSlot<'a> {
    table: &'a Table,
    source: Option<IpAddr>,
}

impl Drop for HandshakeSlot<'_> {
    fn drop(&mut self) {
        self.table.admission().end_handshake(self.source);
    }
}

/// What a transport handed to [`Acceptor::accept`] turned out to be.
#[derive(Debug)]
pub enum Accepted {
    /// A new session for the application to serve.
    New(Session),
    /// A resume, handed to the session that already exists.
    Resumed(SessionId),
}

/// A transport was refused. The real sessions are untouched.
#[derive(Debug, Error)]
#[non_exhaustive]
pub enum AcceptError {
    /// Reading or writing the transport failed.
    #[error("transport error during handshake: {0}")]
    Io(#[from] io::Error),
    /// The client did not finish its handshake in time.
    #[error("handshake timed out")]
    Timeout,
    /// The client's first frame was unusable.
    #[error(transparent)]
    Handshake(#[from] HandshakeError),
    /// The resume named a session this server does not have.
    #[error("resume of unknown session {0}")]
    UnknownSession(SessionId),
    /// The resume proof did not verify (wrong or forged token).
    #[error("resume of session {0} with an invalid proof")]
    BadProof(SessionId),
    /// The OS random source failed.
    #[error("random source failed: {0}")]
    Random(String),
    /// A limit or the application's hook refused it (a new session is told
    /// `Busy`; a transport over the handshake limit is closed at once).
    /// Existing sessions are untouched.
    #[error("refused: {0}")]
    Refused(#[from] Refusal),
}

/// Accepts transports, creates sessions and routes resumes to them.
///
/// Feed it every stream your listener accepts; it is cheap to clone.
///
/// ```no_run
/// use netmend::session::{Accepted, Acceptor, Config};
///
/// # async fn serve() -> std::io::Result<()> {
/// let acceptor = Acceptor::new(Config::default()).expect("valid config");
/// let listener = tokio::net::TcpListener::bind("198.18.0.2:7000").await?;
/// loop {
///     let Ok((stream, peer)) = listener.accept().await else {
///         // EMFILE under a flood: back off and go on serving.
///         tokio::time::sleep(std::time::Duration::from_millis(100)).await;
///         continue;
///     };
///     let acceptor = acceptor.clone();
///     tokio::spawn(async move {
///         if let Ok(Accepted::New(session)) = acceptor.accept_from(stream, peer.ip()).await {
///             // serve `session` like any AsyncRead + AsyncWrite
///             drop(session);
///         }
///     });
/// }
/// # }
/// ```
#[derive(Clone)]
pub struct Acceptor {
    table: Arc<Table>,
}

impl std::fmt::Debug for Acceptor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Acceptor")
            .field("sessions", &self.session_count())
            .finish()
    }
}

impl Acceptor {
    /// An acceptor whose sessions use `config`, within the default
    /// [`Limits`].
    ///
    /// # Errors
    ///
    /// A [`ConfigError`] naming the field when `config` is refused by
    /// [`Config::validate`].
    pub fn new(config: Config) -> Result<Self, ConfigError> {
        Acceptor::with_limits(config, Limits::default())
    }

    /// An acceptor whose sessions use `config`, admitting within `limits`.
    ///
    /// # Errors
    ///
    /// A [`ConfigError`] naming the field when `config` or `limits` is
    /// refused.
    pub fn with_limits(config: Config, limits: Limits) -> Result<Self, ConfigError> {
        config.validate()?;
        limits.validate()?;
        Ok(Self {
            table: Arc::new(Table {
                config,
                sessions: Mutex::new(HashMap::new()),
                admission: Mutex::new(Admission::new(limits)),
                hook: std::sync::RwLock::new(None),
            }),
        })
    }

    /// The limits it admits within.
    pub fn limits(&self) -> Limits {
        self.table.admission().limits()
    }

    /// Handshakes in progress now.
    pub fn handshakes_in_progress(&self) -> usize {
        self.table.admission().handshakes()
    }

    /// Asks `hook` before every new session (after the limits allowed it):
    /// `false` refuses it (the client is told `Busy`), before any session
    /// state exists. Resumes of existing sessions are not asked. Replaces
    /// an earlier hook; applies to every clone of this acceptor.
    pub fn on_new_session(&self, hook: impl Fn(&Incoming) -> bool + Send + Sync + 'static) {
        let mut slot = self.table.hook.write().unwrap_or_else(|e| e.into_inner());
        *slot = Some(Arc::new(hook));
    }

    /// Sessions alive (connected or waiting for their client to resume).
    pub fn session_count(&self) -> usize {
        self.table.lock().len()
    }

    /// Runs the handshake on `stream` and either creates a session or hands
    /// the stream to the session it resumes.
    ///
    /// # Errors
    ///
    /// An [`AcceptError`] when this transport is refused (I/O, timeout, a
    /// bad first frame, an unknown session, a bad proof); existing
    /// sessions are untouched, so a server loop logs it and goes on.
    ///
    /// # Cancel safety
    ///
    /// Cancel safe: until it returns no session exists and no resume was
    /// handed over; dropping the future drops the stream.
    pub async fn accept<S: Transport>(&self, stream: S) -> Result<Accepted, AcceptError> {
        self.accept_inner(stream, None).await
    }

    /// [`Acceptor::accept`] for a transport from `source`: the per-source
    /// limit applies to it.
    ///
    /// # Errors
    ///
    /// As [`Acceptor::accept`].
    ///
    /// # Cancel safety
    ///
    /// As [`Acceptor::accept`].
    pub async fn accept_from<S: Transport>(
        &self,
        stream: S,
        source: IpAddr,
    ) -> Result<Accepted, AcceptError> {
        self.accept_inner(stream, Some(source)).await
    }

    async fn accept_inner<S: Transport>(
        &self,
        mut stream: S,
        source: Option<IpAddr>,
    ) -> Result<Accepted, AcceptError> {
        if let Err(refusal) = self.table.admission().begin_handshake(source) {
            tracing::debug!(%refusal, "transport refused before its handshake");
            return Err(refusal.into());
        }
        let _slot = HandshakeSlot {
            table: &self.table,
            source,
        };
        let nonce = auth::nonce().map_err(|e| AcceptError::Random(e.to_string()))?;
        let mut hs = ServerHandshake::new(nonce);
        let read = tokio::time::timeout(self.table.config.handshake_timeout, async {
            stream.write_all(&hs.hello()).await?;
            let mut buf = [0u8; 512];
            loop {
                let n = stream.read(&mut buf).await?;
                if n == 0 {
                    return Err(AcceptError::Io(io::ErrorKind::UnexpectedEof.into()));
                }
                if let Some(req) = hs.handle_input(&buf[..n])? {
                    return Ok(req);
                }
            }
        })
        .await;
        let request = match read {
            Err(_) => return Err(AcceptError::Timeout),
            Ok(Err(AcceptError::Handshake(HandshakeError::UnsupportedVersion(v)))) => {
                reject(&mut stream, RejectReason::UnsupportedVersion).await;
                return Err(HandshakeError::UnsupportedVersion(v).into());
            }
            Ok(r) => r?,
        };
        let leftover = hs.leftover().to_vec();
        match request {
            ClientRequest::New { key } => {
                if let Err(refusal) = self.admit_new(source) {
                    tracing::debug!(%refusal, "new session refused");
                    reject(&mut stream, RejectReason::Busy).await;
                    return Err(refusal.into());
                }
                self.start_session(stream, leftover, source, key).await
            }
            ClientRequest::Resume {
                session_id,
                recv_offset,
                proof,
            } => {
                let verdict = {
                    let sessions = self.table.lock();
                    match sessions.get(&session_id) {
                        None => Err(RejectReason::UnknownSession),
                        Some(e) if !e.creds.verify(Prover::Client, &nonce, recv_offset, &proof) => {
                            Err(RejectReason::BadProof)
                        }
                        Some(e) => Ok(e.attach.clone()),
                    }
                };
                let attach = Attach {
                    stream: Box::new(stream),
                    open: ServerOpen::Resume {
                        nonce,
                        peer_recv: recv_offset,
                    },
                    leftover,
                };
                match verdict {
                    Ok(tx) => match tx.try_send(attach) {
                        Ok(()) => Ok(Accepted::Resumed(session_id)),
                        Err(TrySendError::Full(back)) => {
                            let mut stream = back.stream;
                            reject(&mut stream, RejectReason::Busy).await;
                            Err(AcceptError::Refused(Refusal::PendingResumes(ATTACH_QUEUE)))
                        }
                        Err(TrySendError::Closed(back)) => {
                            let mut stream = back.stream;
                            reject(&mut stream, RejectReason::UnknownSession).await;
                            Err(AcceptError::UnknownSession(session_id))
                        }
                    },
                    Err(reason) => {
                        let mut stream = attach.stream;
                        tracing::warn!(session = %session_id, ?reason, "resume refused");
                        reject(&mut stream, reason).await;
                        Err(match reason {
                            RejectReason::BadProof => AcceptError::BadProof(session_id),
                            _ => AcceptError::UnknownSession(session_id),
                        })
                    }
                }
            }
        }
    }

    /// The limits, then the application, on a new session.
    fn admit_new(&self, source: Option<IpAddr>) -> Result<(), Refusal> {
        self.table.admission().may_open_session()?;
        let hook = self
            .table
            .hook
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        if let Some(hook) = hook {
            let incoming = Incoming {
                source,
                sessions: self.session_count(),
            };
            if !hook(&incoming) {
                return Err(Refusal::Application);
            }
        }
        Ok(())
    }

    async fn start_session<S: Transport>(
        &self,
        mut stream: S,
        leftover: Vec<u8>,
        source: Option<IpAddr>,
        client_key: [u8; 32],
    ) -> Result<Accepted, AcceptError> {
        let random = |e: getrandom::Error| AcceptError::Random(e.to_string());
        let mine = KeyPair::generate().map_err(random)?;
        let id = SessionId::random().map_err(random)?;
        let server_key = mine.public();
        let Some(creds) = mine.agree(id, &client_key, &client_key, &server_key) else {
            reject(&mut stream, RejectReason::Refused).await;
            return Err(HandshakeError::WeakKey.into());
        };
        let mut core = SessionCore::new_server(self.table.config.clone(), creds.clone());
        core.set_away_cap(self.table.admission().limits().max_bytes_while_away);
        // A bad frame in the leftover surfaces as a link failure in the driver.
        let _ = core.open_server_link(now(), ServerOpen::New { key: server_key }, &leftover);
        let shared = Shared::new(core);
        let (tx, rx) = mpsc::channel(ATTACH_QUEUE);
        self.table.admission().begin_session(source);
        self.table.lock().insert(id, Entry { creds, attach: tx });
        let driver = tokio::spawn(run_server(
            Arc::clone(&shared),
            Box::new(stream),
            rx,
            Arc::downgrade(&self.table),
            (id, source),
        ));
        Ok(Accepted::New(Session {
            shared,
            driver: Some(driver),
        }))
    }
}

async fn reject<S: AsyncWrite + Unpin>(stream: &mut S, reason: RejectReason) {
    let mut out = Vec::new();
    Frame::Reject { reason }.encode(&mut out);
    let _ = stream.write_all(&out).await;
    let _ = stream.shutdown().await;
}

async fn run_server(
    shared: Arc<Shared>,
    first: BoxedTransport,
    mut attach_rx: Receiver<Attach>,
    table: Weak<Table>,
    (id, source): (SessionId, Option<IpAddr>),
) {
    let idle_expiry = table
        .upgrade()
        .map(|t| t.config.idle_expiry)
        .unwrap_or_default();
    let mut stream = first;
    loop {
        let report = drive_link(&shared, stream, Some(&mut attach_rx)).await;
        shared.lock().core.link_lost();
        let next = match report.end {
            // Only a client session detaches.
            LinkEnd::Finished | LinkEnd::Detached { .. } => break,
            LinkEnd::Preempted(a) => a,
            LinkEnd::Failed(why) => {
                tracing::info!(session = %id, %why, "transport lost, waiting for resume");
                if shared.lock().finished() {
                    break;
                }
                match tokio::time::timeout(idle_expiry, attach_rx.recv()).await {
                    Ok(Some(a)) => a,
                    Ok(None) => break,
                    Err(_) => {
                        let mut st = shared.lock();
                        if st.core.is_done() {
                            // Everything was exchanged; only the client's
                            // `Close` never came. Not a failure.
                            st.core.judge_closed();
                        } else {
                            st.core.fail(SessionErrorKind::Expired(idle_expiry));
                        }
                        break;
                    }
                }
            }
        };
        // A bad frame in the leftover surfaces as a link failure in the driver.
        let _ = shared
            .lock()
            .core
            .open_server_link(now(), next.open, &next.leftover);
        stream = next.stream;
    }
    if let Some(t) = table.upgrade() {
        let mut sessions = t.lock();
        sessions.remove(&id);
        shrink_when_sparse(&mut sessions);
        drop(sessions);
        t.admission().end_session(source);
    }
    let mut st = shared.lock();
    st.driver_gone = true;
    st.wake_app();
}
