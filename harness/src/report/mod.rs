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
#[derive(Debug, Default)]
pub struct Collector {
    /// Run seed.
    pub seed: u64,
    /// Backend.
    pub backend: Option<BackendKind>,
    /// Results in run order.
    pub results: Vec<ScenarioResult>,
    /// Final counts.
    pub summary: Summary,
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
            RunEvent::ScenarioFinished { result, .. } => self.results.push((**result).clone()),
            RunEvent::RunFinished { summary, .. } => self.summary = *summary,
        }
    }
}
