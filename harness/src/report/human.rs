//! One line per scenario, for people.

use crate::backend::BackendKind;
use crate::check::{Measured, Outcome};
use crate::runner::{RunEvent, Verdict};
use std::io::Write;

/// Writes human-readable progress to `out`.
pub struct Human<W: Write> {
    out: W,
    /// Show wall times (off in snapshot tests, where they would vary).
    pub show_wall: bool,
    /// Set by `RunStarted`: on sim, run time is virtual and worth comparing
    /// with wall time; on netns the two are the same.
    simulated: bool,
}

impl<W: Write> Human<W> {
    /// A reporter writing to `out`.
    pub fn new(out: W) -> Self {
        Self {
            out,
            show_wall: true,
            simulated: true,
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
            } => {
                self.simulated = *backend == BackendKind::Sim;
                writeln!(
                    self.out,
                    "netmend: {} scenario(s), backend {backend} ({backend_reason}), seed {seed}",
                    scenarios.len()
                )
            }
            RunEvent::ScenarioStarted { .. } => Ok(()),
            RunEvent::ScenarioFinished { result, wall } => {
                let tag = match result.verdict {
                    Verdict::Pass => "PASS",
                    Verdict::Fail => "FAIL",
                    Verdict::Unsupported => "SKIP",
                };
                write!(self.out, "{tag:<5}{:<22}", result.id)?;
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
                    write!(self.out, "baseline {}", line(result.baseline.as_ref()))?;
                    write!(self.out, " | mitigated {}", line(result.mitigated.as_ref()))?;
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
                if summary.unsupported > 0 {
                    write!(self.out, ", {} unsupported", summary.unsupported)?;
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
                writeln!(self.out)
            }
        }
    }
}

fn line(m: Option<&Measured>) -> String {
    let Some(m) = m else {
        return "did not run".into();
    };
    let outcome = match m.outcome {
        Outcome::Passed => "passed".to_string(),
        Outcome::Failed => {
            let names: Vec<String> = m.symptoms.iter().map(|x| x.name().to_string()).collect();
            format!("failed ({})", names.join(", "))
        }
    };
    let recovery = m.recovery_ms.map_or("never recovered".to_string(), |r| {
        format!("recovered in {r} ms")
    });
    let unit = if m.unit == "messages" { "msgs" } else { "B" };
    let latency = match (m.latency_p50_us, m.latency_p99_us) {
        (Some(p50), Some(p99)) => format!(
            ", latency p50 {:.1} ms p99 {:.1} ms",
            p50 as f64 / 1000.0,
            p99 as f64 / 1000.0
        ),
        _ => String::new(),
    };
    let queue = m.queue.map_or(String::new(), |q| {
        format!(", {} peak {} (bound {})", q.queue, q.peak, q.bound)
    });
    format!(
        "{outcome}: {}/{} {unit} delivered, {} lost, {} dup, {recovery}{latency}, {} attempt(s){queue}",
        m.delivered, m.expected, m.lost, m.duplicated, m.attempts
    )
}
