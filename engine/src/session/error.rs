//! Errors of a resumable session.

use super::frame::{FrameError, RejectReason};
use std::time::Duration;
use thiserror::Error;

/// The session cannot continue. Sticky: once returned, every later operation
/// on the session returns it again.
#[derive(Clone, Debug, Error, PartialEq, Eq)]
#[non_exhaustive]
pub enum SessionError {
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
    /// Reconnecting gave up as the policy says. Hint: raise
    /// `Policy::max_attempts`, `Policy::max_outage` or the retry budget.
    #[error("gave up reconnecting after {attempts} attempts over {elapsed:?}")]
    ReconnectExhausted {
        /// Connection attempts made during this outage.
        attempts: u32,
        /// Time since the outage began.
        elapsed: Duration,
    },
    /// The retry budget is empty: the session reconnected too often recently.
    #[error("retry budget exhausted")]
    BudgetExhausted,
    /// Server side: the client did not come back within `Config::idle_expiry`.
    #[error("session expired after {0:?} without a transport")]
    Expired(Duration),
    /// The peer broke the protocol during the data phase.
    #[error("protocol violation: {0}")]
    Protocol(String),
    /// The session was shut down locally.
    #[error("session closed")]
    Closed,
}

/// Why one transport was abandoned. The session itself survives and resumes
/// on a new transport.
#[derive(Clone, Debug, Error, PartialEq, Eq)]
#[non_exhaustive]
pub enum LinkError {
    /// Nothing arrived for `Config::dead_after`.
    #[error("no traffic for {0:?}, path considered dead")]
    Silent(Duration),
    /// The handshake did not finish in `Config::handshake_timeout`.
    #[error("handshake timed out")]
    HandshakeTimeout,
    /// The peer sent an undecodable frame.
    #[error("bad frame: {0}")]
    Frame(#[from] FrameError),
    /// The peer sent a frame that does not fit the protocol state.
    #[error("unexpected {0} frame")]
    Unexpected(&'static str),
}
