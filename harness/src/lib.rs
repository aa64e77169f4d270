//! netmend-harness: declarative failure scenarios, run on a deterministic
//! simulated network (`backend::sim`) or in real Linux network namespaces
//! (`backend::netns`), judged by checkers, reported for humans and CI.
//!
//! The flow is `scenario` (load; its faults are `fault` values) → `plan`
//! (what the scenario's workload runs, decided once) → `runner` (run each
//! plan on a `backend`, baseline and mitigated) → `check` (judge the
//! recordings) → `report` (reporters built from `RunEvent`s only).
//! `explore` draws random fault schedules and shrinks violations; `bench`
//! measures the engine against its peers.

pub mod backend;
pub mod bench;
pub mod catalog;
pub mod check;
pub mod compare;
pub mod duration;
pub mod explore;
pub mod fault;
pub mod hash;
pub mod plan;
pub mod report;
pub mod runner;
pub mod scenario;
pub mod select;
pub mod workload;
