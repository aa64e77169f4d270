//! Redundant signaling (work in progress): the pieces that make a message
//! sent through several brokers arrive exactly once.
//!
//! * [`envelope`]: the wire format — an application message id across
//!   brokers, a TTL, the recipient and the payload; garbage, foreign,
//!   wrong-version and oversized bytes are refused before allocation.
//! * [`dedup`]: receiver-side duplicate suppression with bounded memory.
//!
//! The broker fan-out, per-broker health and the MQTT client (rumqttc)
//! come next.

pub mod dedup;
pub mod envelope;

pub use dedup::{Dedup, DedupConfig, Verdict};
pub use envelope::{DecodeError, EncodeError, Envelope, MessageId};
