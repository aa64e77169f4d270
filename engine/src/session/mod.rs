//! Resumable sessions: a byte stream that survives transport failures.
//!
//! The main types are [`SessionBuilder`] (client), [`Acceptor`] (server) and
//! [`Session`] (both). The protocol itself lives in a sans-IO state machine
//! (`proto::SessionCore`, crate-private); everything with tokio in it is a
//! thin driver.

mod accept;
mod admission;
pub(crate) mod auth;
mod config;
mod connect;
mod detach;
mod driver;
mod error;
mod event;
pub(crate) mod frame;
mod handle;
pub(crate) mod handshake;
pub(crate) mod proto;
mod replay;
mod rtt;
mod segment;

pub use accept::{AcceptError, Accepted, Acceptor, Incoming, Restored, Transport};
pub use admission::{Limits, Refusal};
pub use config::{Config, INITIAL_WINDOW, MAX_DATA_FRAME, MAX_FRAME_PAYLOAD_LIMIT};
pub use connect::{with_hints, Connector, SessionBuilder, WithHints};
pub use detach::{Detached, StateError, StateKey};
pub use error::{Delivery, LinkError, SessionError, SessionErrorKind};
pub use event::SessionEvent;
pub use frame::{FrameError, RejectReason, SessionId};
pub use handle::{session_error, Session, SessionStats};
pub use handshake::MAX_HANDSHAKE_FRAME;
pub use proto::Stats;
pub use replay::ReplayBuffer;
pub use segment::{TransportHint, SEGMENT_STEPS};
