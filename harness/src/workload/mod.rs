//! The `stream` workload: the bytes, what a run records, and the programs
//! (baseline and mitigated clients, their servers) that produce the records.

pub mod pattern;
pub mod programs;
mod recording;

pub use recording::{Recorder, Recording, StreamLog};
