//! One line per scenario, for people.

use crate::backend::BackendKind;
use crate::check::Measured;
use crate::runner::{RunEvent, Verdict};
use std::io::Write;

/// Writes human-readable progress to `out`.
pub struct Human<W: Write> {
    out: W,
    /// Show wall times (off in snapshot tests, where they would vary).
    pub show_wall: bool,
    /// Only what did not pass, and the summary (`--quiet`).
    pub quiet: bool,
    /// Set by `RunStarted`: on sim, run time is virtual and worth comparing
    /// with wall time; on netns the two are the same.
    simulated: bool,
    /// `(id, verdict)` of each repeated run, for the flakiness summary.
    repeats: Vec<(String, Verdict)>,
    /// Width of the id column: the longest id of the run (and its repeat
    /// number), so long ids do not push the columns out of line.
    width: usize,
}

impl<W: Write> Human<W> {
    /// A reporter writing to `out`.
    pub fn new(out: W) -> Self {
        Self {
            out,
            show_wall: true,
            quiet: false,
            simulated: true,
            repeats: Vec::new(),
            width: 22,
        }
    }

    /// Takes one event. Write errors (a closed pipe) are ignored: the exit
    /// code still tells the result.
    pub fn event(&mut self, ev: &RunEvent) {
        let _ = self.write(ev);
    }

    fn write(&mut self, ev: &RunEvent) -> std::io::Result<()> {
        match ev {
            RunEvent::RunStarted {
                seed,
                backend,
                backend_reason,
                scenarios,
                repeat,
            } => {
                self.simulated = *backend == BackendKind::Sim;
                let suffix = if *repeat > 1 {
                    format!(" #{repeat}").len()
                } else {
                    0
                };
                let longest = scenarios.iter().map(String::len).max().unwrap_or(0);
                self.width = self.width.max(longest + suffix + 1);
                writeln!(
                    self.out,
                    "netmend: {} scenario(s), backend {backend} ({backend_reason}), seed {seed}",
                    scenarios.len()
                )
            }
            RunEvent::ScenarioStarted { .. } | RunEvent::Phase { .. } => Ok(()),
            RunEvent::ScenarioFinished { result, wall } => {
                if self.quiet && matches!(result.verdict, Verdict::Pass | Verdict::Unsupported) {
                    return Ok(());
                }
                let tag = match result.verdict {
                    Verdict::Pass => "PASS",
                    Verdict::Fail => "FAIL",
                    Verdict::Unsupported => "SKIP",
                    Verdict::Error => "ERR",
                };
                let id = match result.repeat {
                    Some(r) => {
                        self.repeats.push((result.id.clone(), result.verdict));
                        format!("{} #{r}", result.id)
                    }
                    None => result.id.clone(),
                };
                write!(self.out, "{tag:<5}{id:<width$}", width = self.width)?;
                if let Some(why) = &result.unsupported {
                    writeln!(self.out, "unsupported on {}: {why}", result.backend)?;
                    return Ok(());
                }
                if let Some(run) = &result.command {
                    let code = |c: Option<i32>| c.map_or("a signal".to_string(), |c| c.to_string());
                    write!(
                        self.out,
                        "command `{}` exited with {} (expected {}) after {} ms",
                        run.argv.first().map(String::as_str).unwrap_or(""),
                        code(run.exit_code),
                        code(result.expected_exit),
                        run.duration_ms
                    )?;
                } else {
                    write!(self.out, "baseline {}", describe(result.baseline.as_ref()))?;
                    write!(
                        self.out,
                        " | mitigated {}",
                        describe(result.mitigated.as_ref())
                    )?;
                }
                if self.show_wall && !self.simulated {
                    write!(self.out, "  [{:.2}s]", wall.as_secs_f64())?;
                } else if self.show_wall {
                    write!(
                        self.out,
                        "  [{:.1}s virtual in {:.2}s]",
                        result.virtual_ms as f64 / 1000.0,
                        wall.as_secs_f64()
                    )?;
                }
                writeln!(self.out)?;
                for r in &result.reasons {
                    writeln!(self.out, "     - {r}")?;
                }
                Ok(())
            }
            RunEvent::RunFinished { summary, wall } => {
                write!(
                    self.out,
                    "{} passed, {} failed",
                    summary.passed, summary.failed
                )?;
                if summary.errors > 0 {
                    write!(self.out, ", {} broken run(s)", summary.errors)?;
                }
                if summary.unsupported > 0 {
                    write!(self.out, ", {} unsupported", summary.unsupported)?;
                }
                if summary.not_run > 0 {
                    write!(
                        self.out,
                        ", {} not run (--fail-fast stopped at the first failure)",
                        summary.not_run
                    )?;
                }
                if self.show_wall && !self.simulated {
                    write!(self.out, " ({:.1}s)", wall.as_secs_f64())?;
                } else if self.show_wall {
                    let secs = wall.as_secs_f64().max(1e-9);
                    write!(
                        self.out,
                        " ({:.1}s virtual in {:.2}s wall, {:.0}x)",
                        summary.virtual_ms as f64 / 1000.0,
                        secs,
                        summary.virtual_ms as f64 / 1000.0 / secs
                    )?;
                }
                writeln!(self.out)?;
                let runs = self.repeats.iter().map(|(id, v)| (id.as_str(), *v));
                for f in super::flaky(runs) {
                    writeln!(
                        self.out,
                        "FLAKY {}: passed {} of {} repeats",
                        f.id,
                        f.passed,
                        f.passed + f.failed
                    )?;
                }
                Ok(())
            }
        }
    }
}

fn describe(m: Option<&Measured>) -> String {
    m.map_or_else(|| "did not run".to_string(), Measured::describe)
}
