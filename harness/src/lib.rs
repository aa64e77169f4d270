//! netmend-harness: declarative failure scenarios, run on a deterministic
//! simulated network (`backend::sim`) or in real Linux network namespaces
//! (`backend::netns`), judged by checkers, reported for humans and CI.
//!
//! The flow is `scenario` (load) → `runner` (run each scenario on a
//! `backend`, baseline and mitigated, with the stream `workload`) → `check`
//! (judge the recordings) → `report` (reporters built from `RunEvent`s only).

pub mod backend;
pub mod bench;
pub mod catalog;
pub mod check;
pub mod explore;
pub mod fault;
pub mod report;
pub mod runner;
pub mod scenario;
pub mod workload;
