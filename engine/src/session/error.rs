//! Errors of a resumable session.

use super::frame::{FrameError, RejectReason};
use crate::reconnect::GiveUp;
use crate::validate::ConfigError;
use std::time::Duration;
use thiserror::Error;

/// How far a session's two streams got: what an application needs to
/// restart at its own level after the session failed.
///
/// Readable at any time with [`Session::delivery`](super::Session::delivery),
/// and carried by every [`SessionError`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct Delivery {
    /// Bytes the application wrote into the session.
    pub written: u64,
    /// Of those, how many the peer acknowledged: bytes `0..acknowledged`
    /// are in the peer session's receive buffer or already read by its
    /// application. Bytes past it may or may not have arrived.
    pub acknowledged: u64,
    /// Bytes received from the peer (delivered to the receive buffer, in
    /// order, no gap).
    pub received: u64,
}

/// The session cannot continue: what ended it ([`SessionError::kind`]) and
/// how far the streams got ([`SessionError::delivery`]). Sticky: once
/// returned, every later operation on the session returns it again.
#[derive(Clone, Debug, Error, PartialEq, Eq)]
#[error("{kind} (peer acknowledged {} of {} byte(s) written; {} received)", .delivery.acknowledged, .delivery.written, .delivery.received)]
pub struct SessionError {
    kind: SessionErrorKind,
    delivery: Delivery,
}

impl SessionError {
    pub(crate) fn new(kind: SessionErrorKind, delivery: Delivery) -> Self {
        SessionError { kind, delivery }
    }

    /// What ended the session.
    pub fn kind(&self) -> &SessionErrorKind {
        &self.kind
    }

    /// How far the streams got when it ended.
    pub fn delivery(&self) -> Delivery {
        self.delivery
    }
}

/// What ended a session.
#[derive(Clone, Debug, Error, PartialEq, Eq)]
#[non_exhaustive]
pub enum SessionErrorKind {
    /// The server refused to resume. Hint: `UnknownSession` usually means the
    /// server restarted or the session expired; open a new session.
    #[error("server rejected the session: {0:?}")]
    Rejected(RejectReason),
    /// The peer needs bytes this side already trimmed, or claims bytes this
    /// side never sent. Continuing would lose or duplicate data, so the session ends.
    #[error("resume impossible: peer is at offset {peer_offset}, replay buffer holds {held_from}..{held_to}")]
    ResumeGap {
        /// Offset the peer asked to continue from.
        peer_offset: u64,
        /// First offset still held for replay.
        held_from: u64,
        /// End of what was written.
        held_to: u64,
    },
    /// The server's resume proof did not verify: it does not hold the token.
    #[error("server failed to prove the resume token")]
    ServerProofInvalid,
    /// Reconnecting gave up as the policy says: which limit, after how
    /// many attempts, and why the last ones failed. Hint: look at the
    /// causes first (a peer that accepts and closes is no network fault);
    /// then raise `Policy::max_attempts`, `Policy::max_outage` or the budget.
    #[error("gave up reconnecting: {0}")]
    ReconnectExhausted(GiveUp),
    /// The configuration was refused when the session was built.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// Server side: the client did not come back within `Config::idle_expiry`.
    #[error("session expired after {0:?} without a transport")]
    Expired(Duration),
    /// The peer broke the protocol during the data phase.
    #[error("protocol violation: {0}")]
    Protocol(String),
    /// The session was shut down locally.
    #[error("session closed")]
    Closed,
    /// The application aborted the session ([`Session::abort`](super::Session::abort)).
    #[error("session aborted")]
    Aborted,
    /// The peer's application aborted the session.
    #[error("session aborted by the peer")]
    PeerAborted,
    /// A detached session's state was refused at
    /// [`SessionBuilder::attach`](super::SessionBuilder::attach).
    #[error("detached session state refused: {0}")]
    State(#[from] super::detach::StateError),
    /// The session store refused a checkpoint: another server instance
    /// took the session over (fenced), or writes failed for the idle
    /// expiry.
    #[error("session store: {0}")]
    Store(crate::store::StoreError),
}

/// Why one transport was abandoned. The session itself survives and resumes
/// on a new transport.
#[derive(Clone, Debug, Error, PartialEq, Eq)]
#[non_exhaustive]
pub enum LinkError {
    /// Nothing arrived for `Config::dead_after` (or the path's
    /// retransmission timeout, when longer).
    #[error("no traffic for {0:?}, path considered dead")]
    Silent(Duration),
    /// Data sent was not acknowledged for `Config::dead_after` (or the
    /// path's retransmission timeout, when longer) while the transport
    /// stayed open: a path that passes small frames but loses the data (an
    /// MTU black hole, RFC 2923), or a peer that stopped reading its
    /// socket.
    #[error("data unacknowledged for {0:?}, path considered stalled")]
    Stalled(Duration),
    /// The handshake did not finish in `Config::handshake_timeout`.
    #[error("handshake timed out")]
    HandshakeTimeout,
    /// The peer sent an undecodable frame.
    #[error("bad frame: {0}")]
    Frame(#[from] FrameError),
    /// The server was too busy to take this resume; the session tries
    /// again on a new transport.
    #[error("server busy")]
    Busy,
    /// The peer sent a frame that does not fit the protocol state.
    #[error("unexpected {0} frame")]
    Unexpected(&'static str),
}
