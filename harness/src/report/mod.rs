//! Reporters: each is built from [`RunEvent`]s alone.
//!
//! The human reporter prints as the run goes, the progress display shows
//! signs of life on stderr; the JSON and JUnit reporters collect results and
//! render a document at the end; the timeline writes one drawing per
//! scenario run as it finishes.

mod human;
mod json;
mod junit;
mod progress;
mod timeline;

pub use human::Human;
pub use json::{render_json, JsonReport};
pub use junit::render_junit;
pub use progress::{Mode as ProgressMode, Progress};
pub use timeline::{render_timeline, timeline_path, write_timeline};

use crate::backend::BackendKind;
use crate::runner::{RunEvent, ScenarioResult, Summary, Verdict};
use serde::Serialize;

/// A scenario that both passed and failed over the repeats of one run.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Flaky {
    /// Its id.
    pub id: String,
    /// Repeats that passed.
    pub passed: u32,
    /// Repeats that failed.
    pub failed: u32,
}

/// The flaky scenarios among repeated runs, given as `(id, verdict)` in
/// run order (`run --repeat N`).
pub fn flaky<'a>(runs: impl IntoIterator<Item = (&'a str, Verdict)>) -> Vec<Flaky> {
    let mut out: Vec<Flaky> = Vec::new();
    for (id, verdict) in runs {
        let i = match out.iter().position(|f| f.id == id) {
            Some(i) => i,
            None => {
                out.push(Flaky {
                    id: id.to_string(),
                    passed: 0,
                    failed: 0,
                });
                out.len() - 1
            }
        };
        match verdict {
            Verdict::Pass => out[i].passed += 1,
            Verdict::Fail => out[i].failed += 1,
            Verdict::Unsupported | Verdict::Error => {}
        }
    }
    out.retain(|f| f.passed > 0 && f.failed > 0);
    out
}

/// The repeated runs among `results`, for [`flaky`].
fn repeated(results: &[ScenarioResult]) -> impl Iterator<Item = (&str, Verdict)> {
    results
        .iter()
        .filter(|r| r.repeat.is_some())
        .map(|r| (r.id.as_str(), r.verdict))
}

/// Collects what the document reporters need.
#[derive(Clone, Debug, Default)]
pub struct Collector {
    /// Run seed.
    pub seed: u64,
    /// Backend.
    pub backend: Option<BackendKind>,
    /// Results in run order.
    pub results: Vec<ScenarioResult>,
    /// The wall time of each, in the same order (JUnit's `time`; kept out
    /// of the JSON report, which a seed makes byte-identical).
    pub walls: Vec<std::time::Duration>,
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
            RunEvent::ScenarioStarted { .. } | RunEvent::Phase { .. } => {}
            RunEvent::ScenarioFinished { result, wall } => {
                self.summary.count(result);
                self.results.push((**result).clone());
                self.walls.push(*wall);
            }
            RunEvent::RunFinished { summary, .. } => self.summary = *summary,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_scenario_is_flaky_when_its_repeats_both_passed_and_failed() {
        use Verdict::{Fail, Pass, Unsupported};
        let runs = [
            ("steady", Pass),
            ("wobbly", Pass),
            ("steady", Pass),
            ("wobbly", Fail),
            ("broken", Fail),
            ("wobbly", Pass),
            ("broken", Fail),
            ("elsewhere", Unsupported),
        ];
        assert_eq!(
            flaky(runs),
            vec![Flaky {
                id: "wobbly".into(),
                passed: 2,
                failed: 1
            }]
        );
    }
}
