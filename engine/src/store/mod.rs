//! Session stores: what a server keeps so that its sessions survive the
//! server process — a restart of the one process ([`EmbeddedStore`], a
//! single file) or the loss of one instance of a fleet ([`RedisStore`],
//! shared by every instance).
//!
//! Without a store (the default, [`Acceptor::new`](crate::session::Acceptor::new))
//! a server keeps its sessions in memory, and a client that resumes on a
//! restarted server or on another instance is told
//! [`RejectReason::UnknownSession`](crate::session::RejectReason). With one
//! ([`Acceptor::with_store`](crate::session::Acceptor::with_store)), each
//! server session writes a [`Checkpoint`] as it advances, and a resume that
//! names a session this process does not hold is served from the store
//! ([`Accepted::Restored`](crate::session::Accepted::Restored)).
//!
//! # What is stored
//!
//! Per session: its id, its resume token sealed under a [`StoreKey`] the
//! store never holds, the *fencing epoch* (see below), the position of the
//! incoming stream the application committed, and the server's outgoing
//! stream from the first byte the client has not acknowledged: its bytes,
//! its end and whether it ended.
//!
//! # Durability: never a silent gap
//!
//! A store-backed session lets nothing leave the server that the store
//! cannot account for: it acknowledges incoming bytes, grants receive
//! window and sends outgoing bytes only up to what a completed checkpoint
//! recorded (with [`Outgoing::ProducedAgain`] outgoing bytes go freely and
//! only their end waits for the store: the application writes them again
//! after a restore). So whenever the server dies, the client still holds every
//! incoming byte past the recorded position, and has received no outgoing
//! byte past the recorded end: the resume from the store continues exactly.
//! What a crash loses is only what was not yet acknowledged or sent, which
//! the two ends replay. A store that went *behind* what it confirmed (a
//! Redis failover that lost acknowledged writes, a file restored from a
//! backup) cannot be papered over: the resume fails with a typed error —
//! [`SessionErrorKind::ResumeGap`](crate::session::SessionErrorKind) on
//! the side that no longer holds the bytes, or
//! [`RejectReason::CannotResume`](crate::session::RejectReason) — and the
//! [`Delivery`](crate::session::Delivery) it carries says how far the
//! stream was acknowledged.
//!
//! # The incoming position and the application
//!
//! The incoming position is *committed* when the application comes back
//! to read more: a read commits everything earlier reads returned (as a
//! Kafka consumer's poll commits the previous batch). So an application
//! that processes what one read returned — and records its own state with
//! the stream offset it reflects — before it reads again never loses a
//! byte at its level: after a restore the incoming stream continues at
//! the recorded position, at or before where the application got, and the
//! application skips the bytes it had already processed
//! ([`Restored::incoming`](crate::session::Restored)). Its outgoing stream
//! continues at [`Restored::outgoing`](crate::session::Restored): bytes it
//! wrote past that position were never recorded (nor sent), so it writes
//! them again.
//!
//! One consequence to design for: a store-backed server acknowledges
//! incoming bytes once its application has come back to read after them,
//! so a client waiting for its bytes to be acknowledged
//! ([`Session::shutdown`](crate::session::Session) resolves then) waits
//! for the server application to read again. A server that writes a long
//! answer before it reads more holds the client's `shutdown` that long.
//!
//! # Fencing: one owner per session
//!
//! Every record carries an epoch. Serving a session from the store claims
//! it: the epoch moves on only if nobody moved it since the record was
//! read and no other claim was made within [`StoreLimits::claim_guard`], so
//! of two instances racing to resume one session exactly one wins and the
//! other gets [`StoreError::Claimed`] (its client is told `Busy` and
//! retries). A resume after the guard takes the session over: the
//! client's latest transport wins. An instance that still
//! serves a session another instance claimed is fenced: its next
//! checkpoint is refused ([`StoreError::Fenced`]) and its copy of the
//! session ends.
//!
//! # Bounds
//!
//! A store holds at most [`StoreLimits::max_sessions`] records (a new
//! session past it is refused, [`StoreError::Full`]: the client is told
//! `Busy`), each at most the replay capacity of outgoing bytes plus a
//! fixed header, and forgets a record [`StoreLimits::ttl`] after its last
//! write (a live session rewrites its record well within it).
//!
//! # Secrets at rest
//!
//! The resume proof is an HMAC under the session's token, so the server
//! must hold the token itself to check a proof; a store cannot keep only a
//! verifier of it. The store keeps the token sealed (ChaCha20-Poly1305,
//! bound to the session id) under a [`StoreKey`] that lives in the server
//! processes' configuration and never in the store: a reader of the store
//! alone cannot resume a session. What the store does not protect: the
//! unacknowledged outgoing bytes are stored as they are (encrypt the
//! stream, or the store, if they are secret), and whoever holds the store
//! *and* the key can resume.

mod memory;
mod record;
mod seal;

#[cfg(feature = "store-embedded")]
mod embedded;
#[cfg(feature = "store-redis")]
mod redis;

pub use memory::MemoryStore;
pub use record::{Checkpoint, StoredSession};
pub use seal::{SealedToken, StoreKey};

#[cfg(feature = "store-redis")]
pub use self::redis::RedisStore;
#[cfg(feature = "store-embedded")]
pub use embedded::{EmbeddedStore, FileDurability};

use crate::session::SessionId;
use crate::validate::ConfigError;
use std::future::Future;
use std::pin::Pin;
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use thiserror::Error;

/// What a store operation returns.
pub type StoreFuture<'a, T> = Pin<Box<dyn Future<Output = Result<T, StoreError>> + Send + 'a>>;

/// A store operation failed.
#[derive(Clone, Debug, Error, PartialEq, Eq)]
#[non_exhaustive]
pub enum StoreError {
    /// The store holds [`StoreLimits::max_sessions`] live records: a new
    /// session is refused.
    #[error("the session store holds its limit of {0} sessions")]
    Full(usize),
    /// Another instance claimed the session first (two resumes raced).
    #[error("session {0} was claimed by another server instance")]
    Claimed(SessionId),
    /// Another instance took the session over: this instance's copy of it
    /// must end.
    #[error("session {0} was taken over by another server instance")]
    Fenced(SessionId),
    /// A record could not be read back (written by something else, or
    /// damaged).
    #[error("the stored record of session {id} is unusable: {why}")]
    Corrupt {
        /// The session.
        id: SessionId,
        /// What is wrong with it.
        why: String,
    },
    /// The record's token does not open with this [`StoreKey`].
    #[error("the stored token of session {0} does not open with this store key")]
    Key(SessionId),
    /// The backend failed (I/O, the database, the network to it).
    #[error("session store backend: {0}")]
    Backend(String),
}

/// What a store-backed server keeps of its outgoing stream.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub enum Outgoing {
    /// Every outgoing byte stays in the store until the client acknowledges
    /// it, so the application never writes a byte twice: after a restore
    /// its stream goes on at [`Restored::outgoing`](crate::session::Restored),
    /// the end of what it had written and the store recorded. The cost:
    /// every outgoing byte is written to the store before it is sent.
    #[default]
    Stored,
    /// The store keeps positions only (and the end of the stream once it is
    /// sent); outgoing bytes are sent at the session's own speed. After a
    /// restore the application writes its stream again from
    /// [`Restored::outgoing`](crate::session::Restored), the client's
    /// position — for streams it can produce again from an offset (a file,
    /// a log, derived state).
    ProducedAgain,
}

/// A store could not be opened or reached.
#[derive(Debug, Error)]
#[non_exhaustive]
pub enum OpenError {
    /// The limits were refused.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// The file could not be opened or created (another process has it
    /// open, no permission, not a store), or the server not reached.
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// How much a store holds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct StoreLimits {
    /// Records held at most (default 10,000, as
    /// [`Limits::max_sessions`](crate::session::Limits)).
    pub max_sessions: usize,
    /// A record is forgotten this long after its last write (default
    /// 120 s: twice the sessions' default idle expiry, so a session the
    /// server still waits for is never forgotten before it).
    pub ttl: Duration,
    /// After an instance claimed a session, other claims are refused for
    /// this long (default 1 s): resumes that race (a client's retry landing
    /// on two instances) have exactly one winner, and a later resume —
    /// the client's latest transport — takes the session over. Measured on
    /// the claiming instances' wall clocks.
    pub claim_guard: Duration,
}

impl Default for StoreLimits {
    fn default() -> Self {
        StoreLimits {
            max_sessions: 10_000,
            ttl: Duration::from_secs(120),
            claim_guard: Duration::from_secs(1),
        }
    }
}

impl StoreLimits {
    /// Checks every field.
    ///
    /// # Errors
    ///
    /// A [`ConfigError`] naming the field: no session allowed, or a TTL
    /// under one second (a live session must rewrite its record within
    /// it) or over a day.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.max_sessions == 0 {
            return Err(ConfigError::new(
                "StoreLimits::max_sessions",
                "must be at least 1",
            ));
        }
        if self.ttl < Duration::from_secs(1) || self.ttl > Duration::from_secs(86_400) {
            return Err(ConfigError::new(
                "StoreLimits::ttl",
                "must be between 1 s and 1 day",
            ));
        }
        if self.claim_guard >= self.ttl {
            return Err(ConfigError::new(
                "StoreLimits::claim_guard",
                "must be shorter than the TTL",
            ));
        }
        Ok(())
    }
}

/// Where a server keeps its sessions' records. Every call is one atomic
/// step of the backend; every implementation keeps the rules of this
/// module (bounds, expiry, fencing) — `tests/store.rs` runs one suite of
/// them against each.
///
/// `now` is the wall clock in milliseconds since the Unix epoch, given by
/// the caller (records outlive the process, so their expiry is wall-clock
/// time; tests pass their own).
///
/// # Cancel safety
///
/// A step whose future is dropped may have been applied or not, whole
/// (each is one atomic step of the backend): the sessions treat that as
/// the crash it models — a checkpoint not known to be confirmed lets
/// nothing out, and a claim or record left behind expires with the TTL.
pub trait SessionStore: Send + Sync + std::fmt::Debug + 'static {
    /// The limits it keeps.
    fn limits(&self) -> StoreLimits;

    /// Records a new session (epoch 1, nothing sent or received).
    ///
    /// # Errors
    ///
    /// [`StoreError::Full`] when the store holds its limit of live
    /// records; [`StoreError::Backend`].
    fn create<'a>(&'a self, session: &'a StoredSession, now: u64) -> StoreFuture<'a, ()>;

    /// The live record of `id`, if any.
    ///
    /// # Errors
    ///
    /// [`StoreError::Corrupt`], [`StoreError::Backend`].
    fn load(&self, id: SessionId, now: u64) -> StoreFuture<'_, Option<StoredSession>>;

    /// Takes the session over: moves its epoch from `seen` (read with
    /// [`SessionStore::load`]) to `seen + 1`, and returns the new epoch.
    ///
    /// # Errors
    ///
    /// [`StoreError::Claimed`] when the epoch is no longer `seen`, another
    /// claim was made within [`StoreLimits::claim_guard`], or the record is
    /// gone; [`StoreError::Backend`].
    fn claim(&self, id: SessionId, seen: u64, now: u64) -> StoreFuture<'_, u64>;

    /// Applies a checkpoint, if the record's epoch is still the
    /// checkpoint's, and renews the record's expiry.
    ///
    /// # Errors
    ///
    /// [`StoreError::Fenced`] when another epoch holds the record or it is
    /// gone; [`StoreError::Backend`].
    fn checkpoint<'a>(&'a self, checkpoint: &'a Checkpoint, now: u64) -> StoreFuture<'a, ()>;

    /// Forgets the session, if the record's epoch is still `epoch` (a
    /// fenced instance never removes its successor's record).
    ///
    /// # Errors
    ///
    /// [`StoreError::Backend`].
    fn remove(&self, id: SessionId, epoch: u64) -> StoreFuture<'_, ()>;

    /// Live records now (for bounds and tests).
    ///
    /// # Errors
    ///
    /// [`StoreError::Backend`].
    fn count(&self, now: u64) -> StoreFuture<'_, usize>;
}

/// The wall clock in milliseconds since the Unix epoch (what stores take
/// as `now`).
pub fn wall_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
        .unwrap_or(0)
}

fn guard_ms(limits: &StoreLimits) -> u64 {
    u64::try_from(limits.claim_guard.as_millis()).unwrap_or(u64::MAX)
}

fn ttl_ms(limits: &StoreLimits) -> u64 {
    u64::try_from(limits.ttl.as_millis()).unwrap_or(u64::MAX)
}
