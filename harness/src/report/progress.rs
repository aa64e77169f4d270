//! Signs of life while a run goes, on stderr: on a terminal one live line
//! for the running scenario (its phase, time in it, what it has received so
//! far), redrawn ten times a second; otherwise one plain line as each phase
//! begins; nothing with `--quiet`. `NO_COLOR` turns colour off.

use crate::runner::{Live, RunEvent};
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressState, ProgressStyle};
use std::io::{IsTerminal, Write};
use std::time::{Duration, Instant};

/// How progress is shown.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    /// A live line redrawn in place (stderr is a terminal).
    Live,
    /// A line as each phase begins (stderr is a file or a pipe).
    Plain,
    /// Nothing.
    Quiet,
}

impl Mode {
    /// `Quiet` if asked, else `Live` on a terminal, `Plain` otherwise.
    pub fn detect(quiet: bool) -> Mode {
        if quiet {
            Mode::Quiet
        } else if std::io::stderr().is_terminal() {
            Mode::Live
        } else {
            Mode::Plain
        }
    }
}

/// Shows progress from [`RunEvent`]s.
pub struct Progress {
    mode: Mode,
    colour: bool,
    bar: Option<ProgressBar>,
    started: Instant,
    width: usize,
}

impl Progress {
    /// A display in `mode`; colour unless `NO_COLOR` is set (and not empty).
    pub fn new(mode: Mode) -> Progress {
        let colour = std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty());
        Progress {
            mode,
            colour,
            bar: None,
            started: Instant::now(),
            width: 22,
        }
    }

    /// Takes one event. Call it before the human report takes the same
    /// event, so the live line is gone before a result line is printed.
    pub fn event(&mut self, ev: &RunEvent) {
        match ev {
            RunEvent::RunStarted { scenarios, .. } => {
                self.started = Instant::now();
                self.width = scenarios.iter().map(String::len).max().unwrap_or(0).max(21) + 1;
            }
            RunEvent::Phase { id, phase, live } => match self.mode {
                Mode::Quiet => {}
                Mode::Plain => {
                    let mut err = std::io::stderr().lock();
                    // A closed stderr costs the progress line only.
                    let _ = writeln!(
                        err,
                        "[{:>7.1}s] {id}: {} run",
                        self.started.elapsed().as_secs_f64(),
                        phase.name()
                    );
                }
                Mode::Live => {
                    self.clear();
                    // Built whole before its first draw.
                    let bar = ProgressBar::with_draw_target(None, ProgressDrawTarget::stderr())
                        .with_style(self.style(live.clone()))
                        .with_prefix(id.clone())
                        .with_message(phase.name());
                    bar.enable_steady_tick(Duration::from_millis(100));
                    self.bar = Some(bar);
                }
            },
            RunEvent::ScenarioFinished { .. } | RunEvent::RunFinished { .. } => self.clear(),
            RunEvent::ScenarioStarted { .. } => {}
        }
    }

    fn clear(&mut self) {
        if let Some(bar) = self.bar.take() {
            bar.finish_and_clear();
        }
    }

    /// The live line: spinner, id, phase, time in the phase, received so
    /// far (read from the run's tap at each redraw).
    fn style(&self, live: Option<Live>) -> ProgressStyle {
        let spinner = if self.colour {
            "{spinner:.cyan}"
        } else {
            "{spinner}"
        };
        let template = format!(
            "{spinner} {{prefix:{width}}} {{msg:9}} {{elapsed:>4}}  {{received}}",
            width = self.width
        );
        let style = ProgressStyle::with_template(&template)
            .unwrap_or_else(|_| ProgressStyle::default_spinner());
        style.with_key(
            "received",
            move |_: &ProgressState, w: &mut dyn std::fmt::Write| {
                if let Some(live) = &live {
                    let _ = write!(w, "{} of {} {}", live.received.get(), live.total, live.unit);
                }
            },
        )
    }
}

impl Drop for Progress {
    fn drop(&mut self) {
        self.clear();
    }
}
