//! Tests that need the protocol internals (as quinn-proto's `src/tests/`):
//! a client/server pair of cores in memory with a virtual clock, and
//! sessions over real TCP with forged frames.

mod admission;
mod config;
mod detach;
mod lifecycle;
mod memory;
mod observer;
mod pair;
mod session_tcp;
mod store_crash;
mod store_race;
mod tls;

/// The bytes of a client's `NewSession` frame (a fixed test key), for
/// tests that speak the protocol by hand.
fn new_session_request() -> Vec<u8> {
    let mut out = Vec::new();
    crate::session::frame::Frame::NewSession {
        version: crate::session::frame::PROTOCOL_VERSION,
        key: crate::session::auth::KeyPair::from_random([7; 32]).public(),
    }
    .encode(&mut out);
    out
}
