//! Server side: the acceptor and its session table.

use super::auth::{self, Credentials, Prover};
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
use std::sync::{Arc, Mutex, MutexGuard, Weak};
use thiserror::Error;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::sync::mpsc::{unbounded_channel, UnboundedReceiver, UnboundedSender};

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
    attach: UnboundedSender<Attach>,
}

struct Table {
    config: Config,
    sessions: Mutex<HashMap<SessionId, Entry>>,
}

impl Table {
    fn lock(&self) -> MutexGuard<'_, HashMap<SessionId, Entry>> {
        self.sessions.lock().unwrap_or_else(|e| e.into_inner())
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
///     let (stream, _) = listener.accept().await?;
///     let acceptor = acceptor.clone();
///     tokio::spawn(async move {
///         if let Ok(Accepted::New(session)) = acceptor.accept(stream).await {
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
    /// An acceptor whose sessions use `config`.
    ///
    /// # Errors
    ///
    /// A [`ConfigError`] naming the field when `config` is refused by
    /// [`Config::validate`].
    pub fn new(config: Config) -> Result<Self, ConfigError> {
        config.validate()?;
        Ok(Self {
            table: Arc::new(Table {
                config,
                sessions: Mutex::new(HashMap::new()),
            }),
        })
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
    pub async fn accept<S: Transport>(&self, mut stream: S) -> Result<Accepted, AcceptError> {
        let nonce = auth::nonce().map_err(|e| AcceptError::Random(e.to_string()))?;
        let mut hs = ServerHandshake::new(nonce, self.table.config.max_frame_payload);
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
            ClientRequest::New => self.start_session(stream, leftover),
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
                    Ok(tx) => match tx.send(attach) {
                        Ok(()) => Ok(Accepted::Resumed(session_id)),
                        Err(back) => {
                            let mut stream = back.0.stream;
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

    fn start_session<S: Transport>(
        &self,
        stream: S,
        leftover: Vec<u8>,
    ) -> Result<Accepted, AcceptError> {
        let creds = Credentials::generate().map_err(|e| AcceptError::Random(e.to_string()))?;
        let id = creds.id;
        let mut core = SessionCore::new_server(self.table.config.clone(), creds.clone());
        // A bad frame in the leftover surfaces as a link failure in the driver.
        let _ = core.open_server_link(now(), ServerOpen::New, &leftover);
        let shared = Shared::new(core);
        let (tx, rx) = unbounded_channel();
        self.table.lock().insert(id, Entry { creds, attach: tx });
        let driver = tokio::spawn(run_server(
            Arc::clone(&shared),
            Box::new(stream),
            rx,
            Arc::downgrade(&self.table),
            id,
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
    mut attach_rx: UnboundedReceiver<Attach>,
    table: Weak<Table>,
    id: SessionId,
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
            LinkEnd::Finished => break,
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
                        shared
                            .lock()
                            .core
                            .fail(SessionErrorKind::Expired(idle_expiry));
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
        t.lock().remove(&id);
    }
    let mut st = shared.lock();
    st.driver_gone = true;
    st.wake_app();
}
