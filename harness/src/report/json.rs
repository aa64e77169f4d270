//! The JSON report. Its fields are a public contract (see the README).

use super::{flaky, repeated, Collector, Flaky};
use crate::backend::BackendKind;
use crate::runner::{ScenarioResult, Summary};
use serde::Serialize;

/// The document `--format json` writes.
#[derive(Debug, Serialize)]
pub struct JsonReport<'a> {
    /// Format version of this document.
    pub version: u32,
    /// Run seed.
    pub seed: u64,
    /// Backend of the run.
    pub backend: Option<BackendKind>,
    /// One entry per scenario.
    pub scenarios: &'a [ScenarioResult],
    /// Counts.
    pub summary: Summary,
    /// Scenarios that passed in some repeats and failed in others (`run
    /// --repeat N`; absent when none).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub flaky: Vec<Flaky>,
    /// Present (true) only when the run was interrupted: the scenarios are
    /// those it finished.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub interrupted: bool,
}

/// Renders the collected run as pretty JSON (deterministic for a seed).
pub fn render_json(c: &Collector) -> String {
    let report = JsonReport {
        version: 1,
        seed: c.seed,
        backend: c.backend,
        scenarios: &c.results,
        summary: c.summary,
        flaky: flaky(repeated(&c.results)),
        interrupted: c.interrupted,
    };
    // Serializing plain structs of strings and numbers cannot fail.
    let mut s = serde_json::to_string_pretty(&report).unwrap_or_default();
    s.push('\n');
    s
}
