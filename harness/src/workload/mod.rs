//! Workloads. `stream`: the bytes, what a run records, and the programs
//! (baseline and mitigated clients, their servers) that produce the records.
//! `command`: a user's program against the built-in HTTP server.
//! `signaling`: numbered messages through brokers (`messages` judges them).

pub mod command;
pub mod herd;
pub mod messages;
pub mod pattern;
pub mod peers;
pub mod programs;
mod recording;
pub mod restart;
pub mod server_process;
pub mod signaling;

pub use recording::{QueuePeak, Recorder, Recording, StreamLog, Tap};
