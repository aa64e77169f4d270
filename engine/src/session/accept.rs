//! Server side: the acceptor and its session table.

use super::admission::{Admission, Limits, Refusal};
use super::auth::{self, Credentials, KeyPair, Prover};
use super::config::Config;
use super::driver::{drive_link, now, LinkEnd};
use super::error::SessionError;
use super::error::SessionErrorKind;
use super::frame::{Frame, RejectReason, SessionId};
use super::handle::{Session, Shared};
use super::handshake::{ClientRequest, HandshakeError, ServerHandshake};
use super::proto::{ServerOpen, SessionCore};
use crate::store::{wall_ms, Outgoing, SessionStore, StoreError, StoreKey, StoredSession};
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
    store: Option<Store>,
}

/// The session store of a store-backed acceptor.
struct Store {
    store: Arc<dyn SessionStore>,
    key: StoreKey,
    /// The longest time between two writes of a record: a third of the
    /// store's TTL, so a live session's record never expires.
    refresh: std::time::Duration,
    /// What the store keeps of the outgoing streams.
    outgoing: Outgoing,
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
    /// A resume of a session this process did not hold, served from the
    /// session store ([`Acceptor::with_store`]): the session goes on here
    /// (after this server restarted, or on another instance of a fleet).
    /// The application continues its own state from the positions in
    /// [`Restored`].
    Restored(Session, Restored),
}

/// Where a session served from the store goes on (see [`crate::store`] for
/// what the application must keep itself).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct Restored {
    /// The session.
    pub id: SessionId,
    /// The offset of the incoming stream the next read returns: at or
    /// before where the application got (the store recorded what it had
    /// committed by reading again). An application that processed more
    /// skips the difference.
    pub incoming: u64,
    /// The offset of the outgoing stream the next write continues. With
    /// [`Outgoing::Stored`] (the default): the end of what the store
    /// recorded — bytes the application wrote past it were never sent, and
    /// go again. With [`Outgoing::ProducedAgain`]: the client's position —
    /// the application writes its stream again from there.
    pub outgoing: u64,
    /// The outgoing stream had already ended.
    pub outgoing_ended: bool,
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
    /// The session store refused it: full (a new session is told `Busy`),
    /// another instance claimed the session first (told `Busy`: it
    /// resumes there or here), the store's token does not open with this
    /// key, or the store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// A resume from the store cannot go on without a gap (the store went
    /// behind what it confirmed): the client is told `CannotResume`, the
    /// record is forgotten. The error says how far the stream was
    /// acknowledged.
    #[error("resume from the store refused: {0}")]
    CannotResume(SessionError),
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
        Self::build(config, limits, None)
    }

    /// An acceptor whose sessions survive this process: each writes its
    /// progress to `store`, and a resume of a session this process does
    /// not hold is served from it ([`Accepted::Restored`]). `key` seals the
    /// resume tokens in the store: every instance that serves the store
    /// holds the same key, and the store never does. See [`crate::store`]
    /// for the guarantees and their cost.
    ///
    /// # Errors
    ///
    /// A [`ConfigError`] naming the field when `config` or `limits` is
    /// refused.
    pub fn with_store(
        config: Config,
        limits: Limits,
        store: impl SessionStore,
        key: StoreKey,
    ) -> Result<Self, ConfigError> {
        Self::with_store_keeping(config, limits, store, key, Outgoing::Stored)
    }

    /// [`Acceptor::with_store`], keeping `outgoing` of the sessions'
    /// outgoing streams: with [`Outgoing::ProducedAgain`] the store holds
    /// positions only and outgoing bytes go at the session's own speed;
    /// after a restore the application writes its stream again from the
    /// client's position ([`Restored::outgoing`]).
    ///
    /// # Errors
    ///
    /// As [`Acceptor::with_store`].
    pub fn with_store_keeping(
        config: Config,
        limits: Limits,
        store: impl SessionStore,
        key: StoreKey,
        outgoing: Outgoing,
    ) -> Result<Self, ConfigError> {
        let refresh = store.limits().ttl / 3;
        Self::build(
            config,
            limits,
            Some(Store {
                store: Arc::new(store),
                key,
                refresh,
                outgoing,
            }),
        )
    }

    fn build(config: Config, limits: Limits, store: Option<Store>) -> Result<Self, ConfigError> {
        config.validate()?;
        limits.validate()?;
        Ok(Self {
            table: Arc::new(Table {
                config,
                sessions: Mutex::new(HashMap::new()),
                admission: Mutex::new(Admission::new(limits)),
                hook: std::sync::RwLock::new(None),
                store,
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
    /// bad first frame, an unknown session, a bad proof; with a store: the
    /// store full, a racing instance's claim, a store gone behind, the
    /// store failing); existing sessions are untouched, so a server loop
    /// logs it and goes on.
    ///
    /// # Cancel safety
    ///
    /// Cancel safe: until it returns no session exists and no resume was
    /// handed over; dropping the future drops the stream. With a store
    /// ([`Acceptor::with_store`]), a future dropped after it wrote a new
    /// session's record or claimed a stored one leaves that record behind
    /// unserved: it expires with the store's TTL, and a client that resumes
    /// it is served once the claim guard has passed.
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
                        // Not here: the store may know it.
                        None if self.table.store.is_some() => None,
                        None => Some(Err(RejectReason::UnknownSession)),
                        Some(e) if !e.creds.verify(Prover::Client, &nonce, recv_offset, &proof) => {
                            Some(Err(RejectReason::BadProof))
                        }
                        Some(e) => Some(Ok(e.attach.clone())),
                    }
                };
                let Some(verdict) = verdict else {
                    let resume = StoreResume {
                        id: session_id,
                        nonce,
                        recv_offset,
                        proof,
                        leftover,
                    };
                    return self.restore(stream, resume, source).await;
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
        if let Some(store) = &self.table.store {
            // Recorded before the client learns the session exists.
            let mut nonce = [0u8; 12];
            getrandom::fill(&mut nonce).map_err(random)?;
            let stored = StoredSession::new(id, store.key.seal(id, &creds.token, nonce));
            if let Err(e) = store.store.create(&stored, wall_ms()).await {
                tracing::debug!(error = %e, "new session refused by the store");
                reject(&mut stream, RejectReason::Busy).await;
                return Err(e.into());
            }
            core.make_durable(1, store.outgoing, store.refresh, now());
        }
        // A bad frame in the leftover surfaces as a link failure in the driver.
        let _ = core.open_server_link(now(), ServerOpen::New { key: server_key }, &leftover);
        Ok(Accepted::New(self.spawn(
            core,
            creds,
            Box::new(stream),
            source,
        )))
    }

    /// Starts the driver of a session whose first transport is `stream`.
    fn spawn(
        &self,
        core: SessionCore,
        creds: Credentials,
        stream: BoxedTransport,
        source: Option<IpAddr>,
    ) -> Session {
        let id = creds.id;
        let shared = Shared::new(core);
        let (tx, rx) = mpsc::channel(ATTACH_QUEUE);
        self.table.admission().begin_session(source);
        self.table.lock().insert(id, Entry { creds, attach: tx });
        let store = self.table.store.as_ref().map(|s| Arc::clone(&s.store));
        let driver = tokio::spawn(run_server(
            Arc::clone(&shared),
            stream,
            rx,
            Arc::downgrade(&self.table),
            (id, source),
            store,
        ));
        Session {
            shared,
            driver: Some(driver),
        }
    }

    /// Serves a resume of a session this process does not hold from the
    /// store: load, check the proof, claim, go on.
    async fn restore<S: Transport>(
        &self,
        mut stream: S,
        resume: StoreResume,
        source: Option<IpAddr>,
    ) -> Result<Accepted, AcceptError> {
        let id = resume.id;
        match self.restore_core(resume).await {
            Ok((core, creds, restored)) => {
                let session = self.spawn(core, creds, Box::new(stream), source);
                Ok(Accepted::Restored(session, restored))
            }
            Err((reason, e)) => {
                tracing::warn!(session = %id, ?reason, error = %e, "resume from the store refused");
                reject(&mut stream, reason).await;
                Err(e)
            }
        }
    }

    /// The session of `resume` from the store, claimed for this instance,
    /// on the resumed transport; or what to tell the client and why.
    async fn restore_core(
        &self,
        resume: StoreResume,
    ) -> Result<(SessionCore, Credentials, Restored), (RejectReason, AcceptError)> {
        let id = resume.id;
        let Some(store) = &self.table.store else {
            return Err((
                RejectReason::UnknownSession,
                AcceptError::UnknownSession(id),
            ));
        };
        let busy = |e: AcceptError| (RejectReason::Busy, e);
        self.table
            .admission()
            .may_open_session()
            .map_err(|r| busy(r.into()))?;
        let stored = match store.store.load(id, wall_ms()).await {
            Ok(Some(s)) => s,
            Ok(None) => {
                return Err((
                    RejectReason::UnknownSession,
                    AcceptError::UnknownSession(id),
                ))
            }
            Err(e) => return Err(busy(e.into())),
        };
        let token = store
            .key
            .open(id, &stored.token)
            .map_err(|e| (RejectReason::UnknownSession, e.into()))?;
        let creds = Credentials { id, token };
        if !creds.verify(
            Prover::Client,
            &resume.nonce,
            resume.recv_offset,
            &resume.proof,
        ) {
            return Err((RejectReason::BadProof, AcceptError::BadProof(id)));
        }
        let epoch = store
            .store
            .claim(id, stored.epoch, wall_ms())
            .await
            .map_err(|e| busy(e.into()))?;
        let config = self.table.config.clone();
        let claim = (epoch, store.outgoing, resume.recv_offset);
        let mut core =
            SessionCore::from_stored(config, creds.clone(), &stored, claim, store.refresh, now())
                .map_err(|e| (RejectReason::CannotResume, e.into()))?;
        core.set_away_cap(self.table.admission().limits().max_bytes_while_away);
        let open = ServerOpen::Resume {
            nonce: resume.nonce,
            peer_recv: resume.recv_offset,
        };
        // A bad frame in the leftover surfaces as a link failure in the driver.
        let _ = core.open_server_link(now(), open, &resume.leftover);
        if let Some(e) = core.error().cloned() {
            // The client holds less than the store says it acknowledged, or
            // more than was ever recorded: the store went behind.
            let _ = store.store.remove(id, epoch).await;
            return Err((RejectReason::CannotResume, AcceptError::CannotResume(e)));
        }
        tracing::info!(
            session = %id,
            epoch,
            incoming = stored.recv,
            "session restored from the store"
        );
        let (outgoing, outgoing_ended) = core.outgoing_position();
        let restored = Restored {
            id,
            incoming: stored.recv,
            outgoing,
            outgoing_ended,
        };
        Ok((core, creds, restored))
    }
}

/// A verified-looking resume for a session only the store may know.
struct StoreResume {
    id: SessionId,
    nonce: [u8; 16],
    recv_offset: u64,
    proof: [u8; 32],
    leftover: Vec<u8>,
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
    store: Option<Arc<dyn SessionStore>>,
) {
    // The checkpoint writer lives as long as this driver.
    let _writer = store
        .clone()
        .map(|s| AbortOnDrop(tokio::spawn(write_checkpoints(Arc::clone(&shared), s))));
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
    if let Some(store) = store {
        // Over (finished, failed or expired): forget the record, unless
        // another instance took the session over (the epoch tells).
        let (epoch, fenced) = {
            let st = shared.lock();
            let fenced = matches!(
                st.core.error().map(SessionError::kind),
                Some(SessionErrorKind::Store(
                    StoreError::Fenced(_) | StoreError::Claimed(_)
                ))
            );
            (st.core.durable_epoch(), fenced)
        };
        if let (Some(epoch), false) = (epoch, fenced) {
            if let Err(e) = store.remove(id, epoch).await {
                tracing::warn!(session = %id, error = %e, "could not forget the stored session");
            }
        }
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

/// Aborts a task when dropped.
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// The checkpoint writer of a store-backed session: writes what the core
/// says is due, one at a time, and tells the core the store's answer.
async fn write_checkpoints(shared: Arc<Shared>, store: Arc<dyn SessionStore>) {
    loop {
        let (due, deadline) = {
            let mut st = shared.lock();
            if st.core.error().is_some() {
                return;
            }
            (
                st.core.poll_checkpoint(now()),
                st.core.checkpoint_deadline(),
            )
        };
        match due {
            Some(cp) => {
                let result = store.checkpoint(&cp, wall_ms()).await;
                let mut st = shared.lock();
                st.core.handle_persisted(now(), result);
                st.wake_app();
                drop(st);
                // Acknowledgements, window and data the store now covers.
                shared.driver.notify_one();
            }
            None => {
                let sleep = async {
                    match deadline {
                        Some(t) => tokio::time::sleep_until(t.into()).await,
                        None => std::future::pending().await,
                    }
                };
                tokio::select! {
                    _ = shared.persist.notified() => {}
                    _ = sleep => {}
                }
            }
        }
    }
}
