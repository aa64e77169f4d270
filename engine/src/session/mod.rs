//! Resumable sessions: a byte stream that survives transport failures.
//!
//! The main types are [`SessionBuilder`] (client), [`Acceptor`] (server) and
//! [`Session`] (both). The protocol itself lives in [`proto::SessionCore`], a
//! sans-IO state machine; everything with tokio in it is a thin driver.

mod accept;
pub mod auth;
mod config;
mod connect;
mod driver;
mod error;
pub mod frame;
mod handle;
pub mod handshake;
pub mod proto;
mod replay;

pub use accept::{AcceptError, Accepted, Acceptor, Transport};
pub use config::Config;
pub use connect::{Connector, SessionBuilder};
pub use error::{LinkError, SessionError};
pub use frame::{RejectReason, SessionId};
pub use handle::{session_error, Session, SessionStats};
pub use replay::ReplayBuffer;
