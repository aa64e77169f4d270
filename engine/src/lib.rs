//! netmend: a recovery engine for networked programs.
//!
//! Ordinary network events — a middlebox resetting a connection, a path that
//! silently drops everything for a while — should not kill a program's
//! sessions. This crate provides:
//!
//! * [`session`]: resumable byte streams. A [`session::Session`] is
//!   `AsyncRead + AsyncWrite`; when its transport breaks it reconnects and
//!   resumes at the exact byte, never losing or duplicating one, or fails
//!   with a typed [`session::SessionError`].
//! * [`reconnect`]: exponential backoff with full jitter, caps and a retry
//!   budget ([`Policy`]).
//! * [`dial`]: Happy Eyeballs v2 (RFC 8305) — a server's addresses raced,
//!   its name resolved again on every attempt.
//! * [`monitor`]: network-change detection — interfaces, carrier,
//!   addresses, default routes — as typed events and one coalesced decision
//!   per burst of changes.
//! * [`gate`]: the routability gate — after a change, wait for an address,
//!   a route with carrier and a successful probe before using the path.
//! * `signal` (feature `signal`): redundant signaling — every message
//!   through several MQTT brokers, each delivered to the application
//!   exactly once.
//!
//! Cargo features (all on by default): `signal` (rumqttc), `netlink` (the
//! Linux monitor source, rtnetlink), `system-monitor` (the portable polling
//! source, netdev). With `default-features = false` the crate builds
//! sessions, the reconnect core, the gate and the monitor's core alone.
//!
//! Protocol and policy logic is sans-IO (the session's resume core, the
//! [`reconnect::ReconnectCore`], the [`gate::Gate`]); the tokio
//! drivers run it over `tokio::net`, `turmoil::net` or any other stream.
#![warn(missing_docs)]
#![forbid(unsafe_code)]

pub mod dial;
pub mod firewall;
#[doc(hidden)]
pub mod fuzzing;
pub mod gate;
#[cfg(target_os = "linux")]
pub mod handover;
pub mod monitor;
pub mod reconnect;
pub mod session;
#[cfg(feature = "signal")]
pub mod signal;
pub mod store;
pub mod validate;

#[cfg(test)]
mod tests;

pub use reconnect::Policy;
pub use validate::ConfigError;

/// The README's Rust examples, compiled as doctests so they cannot rot.
#[cfg(all(doctest, feature = "signal", feature = "netlink"))]
#[doc = include_str!("../../README.md")]
pub struct ReadmeDoctests;
