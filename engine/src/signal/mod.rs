//! Redundant signaling: every message through several brokers, each
//! delivered to the application exactly once.
//!
//! * [`envelope`]: the wire format — an application message id across
//!   brokers, a TTL, the recipient and the payload; garbage, foreign,
//!   wrong-version and oversized bytes are refused before allocation.
//! * [`dedup`]: receiver-side duplicate suppression with bounded memory.
//! * [`core`]: the sans-IO endpoint — fan-out to the brokers healthy for
//!   each recipient, end-to-end acknowledgements and resends until a
//!   message is acknowledged or expires, decode/expiry/dedup on receipt.
//!
//! * [`link`]: the tokio endpoint [`Signal`] over N brokers behind the
//!   [`Broker`] trait, and [`Mqtt`], the real broker (rumqttc).
//!
//! The harness's `broker-loss` scenario runs it against real mosquitto
//! brokers (netns) and simulated ones (sim) that crash mid-stream.

pub mod core;
pub mod dedup;
pub mod envelope;
pub mod link;
#[cfg(test)]
mod tests;
mod transit;

pub use self::core::{
    Delivered, DropCounts, Dropped, Publish, SendError, SignalConfig, SignalCore,
};
pub use self::link::{
    topic_for, Broker, BrokerConn, LinkConfig, Mqtt, MqttConn, Signal, MIN_KEEP_ALIVE,
};
pub use dedup::{Dedup, DedupConfig, Verdict};
pub use envelope::{DecodeError, EncodeError, Envelope, Kind, MessageId, SignalKey};
