//! Internals that the fuzz targets in the repository's `fuzz/` directory
//! drive directly: the session wire format ([`Frame`], [`Decoder`]), the
//! server's half of a transport handshake ([`ServerHandshake`]) and the
//! sans-IO session core ([`SessionCore`]) with the credentials it runs on.
//!
//! Not part of the API: hidden from the documentation, no stability
//! promise. Applications use [`crate::session`]. Re-exported here, rather
//! than made public where they live, so that the modules stay crate-private
//! and this one list says what the fuzz targets reach.

pub use crate::session::auth::{Credentials, KeyPair, Prover};
pub use crate::session::frame::{Decoder, Frame, HEADER_LEN, PROTOCOL_VERSION};
pub use crate::session::handshake::{ClientRequest, HandshakeError, ServerHandshake};
pub use crate::session::proto::{Event, ServerOpen, SessionCore};
