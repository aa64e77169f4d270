//! Reporters: each is built from [`RunEvent`]s alone.
//!
//! The human reporter prints as the run goes; the JSON and JUnit reporters
//! collect results and render a document at the end.

mod human;
mod json;
mod junit;

pub use human::Human;
pub use json::{render_json, JsonReport};
pub use junit::render_junit;

use crate::backend::BackendKind;
use crate::runner::{RunEvent, ScenarioResult, Summary};

/// Collects what the document reporters need.
#[derive(Clone, Debug, Default)]
pub struct Collector {
    /// Run seed.
    pub seed: u64,
    /// Backend.
    pub backend: Option<BackendKind>,
    /// Results in run order.
    pub results: Vec<ScenarioResult>,
    /// Final counts (counted as scenarios finish, so an interrupted run's
    /// report has those of the scenarios it finished).
    pub summary: Summary,
    /// The run was interrupted (SIGINT/SIGTERM) before it finished.
    pub interrupted: bool,
}

impl Collector {
    /// Takes one event.
    pub fn event(&mut self, ev: &RunEvent) {
        match ev {
            RunEvent::RunStarted { seed, backend, .. } => {
                self.seed = *seed;
                self.backend = Some(*backend);
            }
            RunEvent::ScenarioStarted { .. } => {}
            RunEvent::ScenarioFinished { result, .. } => {
                match result.verdict {
                    crate::runner::Verdict::Pass => self.summary.passed += 1,
                    crate::runner::Verdict::Fail => self.summary.failed += 1,
                    crate::runner::Verdict::Unsupported => self.summary.unsupported += 1,
                }
                self.summary.virtual_ms += result.virtual_ms;
                self.results.push((**result).clone());
            }
            RunEvent::RunFinished { summary, .. } => self.summary = *summary,
        }
    }
}
