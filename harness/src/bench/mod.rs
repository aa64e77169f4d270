//! `netmend bench …`: the engine against its peers, measured on this
//! machine. `netns`: lab setup, change detection and recovery, in network
//! namespaces (root); `signal`: signaling over real mosquitto on loopback;
//! `handover`: a live socket changing process against a fresh connection;
//! `throughput`: bulk transfer over TCP, a session, MPTCP and QUIC.

pub mod handover;
pub mod netns;
pub mod signal;
pub mod throughput;
