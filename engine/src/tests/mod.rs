//! Tests that need the protocol internals (as quinn-proto's `src/tests/`):
//! a client/server pair of cores in memory with a virtual clock, and
//! sessions over real TCP with forged frames.

mod admission;
mod config;
mod lifecycle;
mod memory;
mod observer;
mod pair;
mod session_tcp;
mod tls;
