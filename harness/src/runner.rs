//! Runs scenarios and emits [`RunEvent`]s; reporters are built from those alone.

use crate::backend::{self, BackendError, BackendKind};
use crate::check::{self, Measured, Outcome, Trace};
use crate::plan::{CommandPlan, Plan, Variant};
use crate::scenario::{Loaded, OutputExpectation, Scenario, Symptom};
use crate::workload::command::CommandRun;
use crate::workload::{Recording, Tap};
use serde::Serialize;
use std::time::{Duration, Instant};

/// Final judgement of one scenario.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Verdict {
    /// The baseline showed the failure and the mitigated run held.
    Pass,
    /// Either half did not.
    Fail,
    /// The backend cannot express this scenario (reason in `unsupported`).
    Unsupported,
    /// A run could not be carried out — the simulation or the lab broke
    /// (the reasons say how): no judgement of the engine either way.
    Error,
}

/// Everything known about one scenario after it ran.
#[derive(Clone, Debug, Serialize)]
pub struct ScenarioResult {
    /// Scenario id.
    pub id: String,
    /// Catalog entry it reproduces.
    pub catalog: String,
    /// Backend it ran on.
    pub backend: BackendKind,
    /// Seed of this scenario's runs.
    pub seed: u64,
    /// Pass iff the baseline failed as expected and the mitigated run held.
    pub verdict: Verdict,
    /// Symptoms the scenario says the baseline must show.
    pub expected_baseline: Vec<Symptom>,
    /// The naive run (absent when unsupported or broken).
    pub baseline: Option<Measured>,
    /// The engine run.
    pub mitigated: Option<Measured>,
    /// Why the scenario failed, in words.
    pub reasons: Vec<String>,
    /// Why the backend could not run it.
    pub unsupported: Option<String>,
    /// The exit status a command workload must end with.
    pub expected_exit: Option<i32>,
    /// What the user's program did (command workloads only).
    pub command: Option<CommandRun>,
    /// Virtual time both runs took, in ms (sim); wall time is kept out of
    /// the report so that the same seed gives identical output.
    pub virtual_ms: u64,
    /// Which repeat of the scenario this is, from 1 (`run --repeat N`;
    /// absent without it).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub repeat: Option<u32>,
    /// What the runs looked like over time (`run --timeline`); kept out of
    /// the JSON report, which holds the judged figures.
    #[serde(skip)]
    pub traces: Box<Traces>,
}

/// The schedule of a scenario and what each of its runs looked like over
/// time: what a timeline draws.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Traces {
    /// Each fault: its kind and when it holds, `(kind, from, to)`.
    pub faults: Vec<(&'static str, Duration, Duration)>,
    /// Each change the faults make to the world, when scheduled.
    pub actions: Vec<(Duration, String)>,
    /// The naive run.
    pub baseline: Option<Trace>,
    /// The engine run.
    pub mitigated: Option<Trace>,
}

impl Traces {
    /// The schedule of `s`, no run yet.
    pub fn of(s: &Scenario) -> Traces {
        Traces {
            faults: s
                .faults
                .iter()
                .map(|f| (f.kind(), f.at().0, f.healed_at().0))
                .collect(),
            actions: s
                .schedule()
                .into_iter()
                .map(|(t, a)| (t, a.to_string()))
                .collect(),
            baseline: None,
            mitigated: None,
        }
    }
}

/// The contract between the runner and every reporter.
#[derive(Clone, Debug)]
pub enum RunEvent {
    /// Before the first scenario.
    RunStarted {
        /// Run seed.
        seed: u64,
        /// Backend used.
        backend: BackendKind,
        /// Why this backend (for `auto`).
        backend_reason: String,
        /// Scenario ids, in run order.
        scenarios: Vec<String>,
        /// Runs of each scenario.
        repeat: u32,
    },
    /// A scenario begins.
    ScenarioStarted {
        /// Its id.
        id: String,
    },
    /// A scenario's next phase begins (progress displays only).
    Phase {
        /// The scenario.
        id: String,
        /// What it runs now.
        phase: Phase,
        /// How far it has got, read while it runs (not for commands).
        live: Option<Live>,
    },
    /// A scenario ended.
    ScenarioFinished {
        /// Its result.
        result: Box<ScenarioResult>,
        /// Wall time it took (human reporter only).
        wall: std::time::Duration,
    },
    /// After the last scenario.
    RunFinished {
        /// Counts.
        summary: Summary,
        /// Wall time of the run (human reporter only).
        wall: std::time::Duration,
    },
}

/// Counts of a run.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub struct Summary {
    /// Scenarios with verdict pass.
    pub passed: usize,
    /// Scenarios with verdict fail.
    pub failed: usize,
    /// Scenarios the backend could not express.
    pub unsupported: usize,
    /// Virtual time simulated over the whole run, in ms.
    pub virtual_ms: u64,
    /// Scenarios whose run could not be carried out.
    #[serde(skip_serializing_if = "is_zero")]
    pub errors: usize,
    /// Scenario runs left out after a failure (`--fail-fast`).
    #[serde(skip_serializing_if = "is_zero")]
    pub not_run: usize,
}

impl Summary {
    /// Counts one finished scenario run.
    pub fn count(&mut self, result: &ScenarioResult) {
        match result.verdict {
            Verdict::Pass => self.passed += 1,
            Verdict::Fail => self.failed += 1,
            Verdict::Unsupported => self.unsupported += 1,
            Verdict::Error => self.errors += 1,
        }
        self.virtual_ms += result.virtual_ms;
    }
}

fn is_zero(n: &usize) -> bool {
    *n == 0
}

/// How a run goes through its scenarios.
#[derive(Clone, Copy, Debug)]
pub struct Options {
    /// Run seed: each scenario's runs are seeded from it and the id.
    pub seed: u64,
    /// Runs of each scenario (at least 1), repeat `r` with run seed
    /// `seed + r - 1`.
    pub repeat: u32,
    /// Stop at the first scenario that fails.
    pub fail_fast: bool,
    /// Scenario runs carried out at once (at least 1). Each netns run
    /// builds its own lab (its own namespaces, named per lab), so runs do
    /// not share a network; they do share the machine's cores, which a
    /// timing bound feels when the runs are CPU-heavy.
    pub jobs: usize,
}

impl Options {
    /// One run of each scenario with `seed`, not stopping at a failure.
    pub fn once(seed: u64) -> Options {
        Options {
            seed,
            repeat: 1,
            fail_fast: false,
            jobs: 1,
        }
    }
}

/// Seed of one scenario: the run seed mixed with the id (FNV-1a), so adding
/// a scenario does not change the others' runs. Kept below 2^53 so that JSON
/// consumers that read numbers as doubles (JavaScript) see it exactly.
///
/// ```
/// use netmend_harness::runner::scenario_seed;
///
/// assert_eq!(scenario_seed(1, "tcp-reset"), scenario_seed(1, "tcp-reset"));
/// assert_ne!(scenario_seed(1, "tcp-reset"), scenario_seed(2, "tcp-reset"));
/// assert!(scenario_seed(u64::MAX, "x") < 1 << 53);
/// ```
pub fn scenario_seed(run_seed: u64, id: &str) -> u64 {
    (crate::hash::fnv1a(id.bytes()) ^ run_seed) & ((1 << 53) - 1)
}

/// Runs every scenario on `backend` (`opts.repeat` times each, in a row),
/// reporting through `emit`. With `opts.jobs` above 1, up to that many runs
/// go at once; their events still come in scenario order (each run's
/// `ScenarioStarted` just before its `ScenarioFinished`, and no `Phase`:
/// several runs at once have no single phase to show).
pub fn run(
    scenarios: &[Loaded],
    backend: BackendKind,
    backend_reason: String,
    opts: Options,
    emit: &mut dyn FnMut(&RunEvent),
) -> Summary {
    let start = Instant::now();
    let repeat = opts.repeat.max(1);
    emit(&RunEvent::RunStarted {
        seed: opts.seed,
        backend,
        backend_reason,
        scenarios: scenarios.iter().map(|l| l.scenario.id.clone()).collect(),
        repeat,
    });
    let work: Vec<(&Scenario, u32)> = scenarios
        .iter()
        .flat_map(|l| (0..repeat).map(move |r| (&l.scenario, r)))
        .collect();
    let run_at = |k: usize, watch: &mut dyn FnMut(Phase, Option<Live>)| {
        let (s, r) = work[k];
        let t = Instant::now();
        let mut result = run_watched(
            s,
            backend,
            scenario_seed(opts.seed.wrapping_add(u64::from(r)), &s.id),
            watch,
        );
        result.repeat = (repeat > 1).then_some(r + 1);
        (result, t.elapsed())
    };
    let mut summary = Summary::default();
    let mut done = 0;
    let mut finish = |result: ScenarioResult, wall: Duration, emit: &mut dyn FnMut(&RunEvent)| {
        done += 1;
        summary.count(&result);
        let failed = matches!(result.verdict, Verdict::Fail | Verdict::Error);
        emit(&RunEvent::ScenarioFinished {
            result: Box::new(result),
            wall,
        });
        failed && opts.fail_fast
    };
    if opts.jobs <= 1 {
        for (k, (s, _)) in work.iter().enumerate() {
            let id = s.id.clone();
            emit(&RunEvent::ScenarioStarted { id: id.clone() });
            let (result, wall) = run_at(k, &mut |phase, live| {
                emit(&RunEvent::Phase {
                    id: id.clone(),
                    phase,
                    live,
                })
            });
            if finish(result, wall, emit) {
                break;
            }
        }
    } else {
        let next = std::sync::atomic::AtomicUsize::new(0);
        let stop = std::sync::atomic::AtomicBool::new(false);
        // Bounded: a worker that finishes waits for the emitter, which only
        // receives, so at most `jobs` results are in flight.
        let (tx, rx) =
            std::sync::mpsc::sync_channel::<(usize, ScenarioResult, Duration)>(opts.jobs);
        std::thread::scope(|scope| {
            for _ in 0..opts.jobs.min(work.len()) {
                let tx = tx.clone();
                let (next, stop, run_at, work) = (&next, &stop, &run_at, &work);
                scope.spawn(move || loop {
                    let k = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    if k >= work.len() || stop.load(std::sync::atomic::Ordering::Relaxed) {
                        return;
                    }
                    let (result, wall) = run_at(k, &mut |_, _| {});
                    if opts.fail_fast && matches!(result.verdict, Verdict::Fail | Verdict::Error) {
                        stop.store(true, std::sync::atomic::Ordering::Relaxed);
                    }
                    if tx.send((k, result, wall)).is_err() {
                        return;
                    }
                });
            }
            drop(tx);
            // Results arrive in any order and are told in scenario order.
            let mut waiting = std::collections::BTreeMap::new();
            let mut told = 0;
            'told: for (k, result, wall) in rx.iter() {
                waiting.insert(k, (result, wall));
                while let Some((result, wall)) = waiting.remove(&told) {
                    told += 1;
                    emit(&RunEvent::ScenarioStarted {
                        id: result.id.clone(),
                    });
                    if finish(result, wall, emit) {
                        stop.store(true, std::sync::atomic::Ordering::Relaxed);
                        break 'told;
                    }
                }
            }
            // Dropping the receiver ends the workers' sends; a run under
            // way finishes first (scope joins it).
            drop(rx);
        });
    }
    summary.not_run = work.len() - done;
    emit(&RunEvent::RunFinished {
        summary,
        wall: start.elapsed(),
    });
    summary
}

/// Runs the baseline and the mitigated variant of one scenario and judges both.
pub fn run_one(s: &Scenario, backend: BackendKind, seed: u64) -> ScenarioResult {
    run_watched(s, backend, seed, &mut |_, _| {})
}

/// What a scenario is running now.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Phase {
    /// The naive program (with its world's setup).
    Baseline,
    /// The engine's policy (with its world's setup).
    Mitigated,
    /// The user's command.
    Command,
}

impl Phase {
    /// The name shown.
    pub fn name(self) -> &'static str {
        match self {
            Phase::Baseline => "baseline",
            Phase::Mitigated => "mitigated",
            Phase::Command => "command",
        }
    }
}

/// How far a running phase has got: what it has received so far, of how
/// much, in which unit.
#[derive(Clone, Debug)]
pub struct Live {
    /// Received so far (read while the run goes).
    pub received: Tap,
    /// What the run is to deliver.
    pub total: u64,
    /// `"B"` or `"msgs"`.
    pub unit: &'static str,
}

/// [`run_one`], telling `watch` as each phase begins.
fn run_watched(
    s: &Scenario,
    backend: BackendKind,
    seed: u64,
    watch: &mut dyn FnMut(Phase, Option<Live>),
) -> ScenarioResult {
    let mut result = ScenarioResult {
        id: s.id.clone(),
        catalog: s.catalog.clone(),
        backend,
        seed,
        verdict: Verdict::Fail,
        expected_baseline: s.expect.baseline.clone(),
        baseline: None,
        mitigated: None,
        reasons: Vec::new(),
        unsupported: None,
        expected_exit: s.expect.exit,
        command: None,
        virtual_ms: 0,
        repeat: None,
        traces: Box::new(Traces::of(s)),
    };
    let plan = Plan::of(s, seed);
    if let Some(why) = backend::unsupported(backend, s, &plan) {
        result.verdict = Verdict::Unsupported;
        result.unsupported = Some(why);
        return result;
    }
    if let Plan::Command(command) = &plan {
        watch(Phase::Command, None);
        judge_command(s, backend, command, seed, &mut result);
        return result;
    }
    let mut broke = false;
    for (variant, phase) in [
        (Variant::Baseline, Phase::Baseline),
        (Variant::Mitigated, Phase::Mitigated),
    ] {
        let live = match &plan {
            Plan::Stream(p) => Some(Live {
                received: p.received.clone(),
                total: p.spec.total,
                unit: "B",
            }),
            Plan::Signaling(p) => Some(Live {
                received: p.received.clone(),
                total: p.spec.messages,
                unit: "msgs",
            }),
            Plan::Command(_) => None,
        };
        if let Some(live) = &live {
            live.received.reset();
        }
        watch(phase, live);
        // The baseline is judged against the same attempt bound, so a naive
        // client's reconnect storm shows as `storm`.
        match measure_plan(
            backend,
            s,
            &plan,
            variant,
            seed,
            Some(s.expect.max_attempts),
        ) {
            Ok((rec, measured, trace)) => {
                result.virtual_ms += rec.elapsed.as_millis() as u64;
                let (slot, traced) = match phase {
                    Phase::Baseline => (&mut result.baseline, &mut result.traces.baseline),
                    _ => (&mut result.mitigated, &mut result.traces.mitigated),
                };
                *slot = Some(measured);
                *traced = Some(trace);
            }
            Err(e) => {
                broke = true;
                result.reasons.push(format!("{variant:?} run broke: {e}"));
            }
        }
    }
    if let Some(b) = &result.baseline {
        let missing: Vec<String> = s
            .expect
            .baseline
            .iter()
            .filter(|want| !b.symptoms.contains(want))
            .map(|w| w.name().to_string())
            .collect();
        if !missing.is_empty() {
            result.reasons.push(format!(
                "baseline did not show the expected failure ({}); the scenario proves nothing",
                missing.join(", ")
            ));
        }
    }
    if let Some(m) = &result.mitigated {
        if m.outcome == Outcome::Failed {
            let names: Vec<String> = m.symptoms.iter().map(|x| x.name().to_string()).collect();
            result
                .reasons
                .push(format!("mitigated run failed: {}", names.join(", ")));
        }
    }
    result.verdict = if broke {
        Verdict::Error
    } else if result.reasons.is_empty() {
        Verdict::Pass
    } else {
        Verdict::Fail
    };
    result
}

/// Runs one variant of the stream or signaling scenario `s` on `backend`
/// and judges it against `max_attempts`: what the runner does for each
/// half of a scenario, for tests, `explore` and benchmarks to call alone.
///
/// # Errors
///
/// The world could not be built or broke; a command scenario, which runs
/// once and not as variants.
pub fn measure(
    backend: BackendKind,
    s: &Scenario,
    variant: Variant,
    seed: u64,
    max_attempts: Option<u32>,
) -> Result<(Recording, Measured), BackendError> {
    measure_plan(backend, s, &Plan::of(s, seed), variant, seed, max_attempts)
        .map(|(rec, measured, _)| (rec, measured))
}

fn measure_plan(
    backend: BackendKind,
    s: &Scenario,
    plan: &Plan,
    variant: Variant,
    seed: u64,
    max_attempts: Option<u32>,
) -> Result<(Recording, Measured, Trace), BackendError> {
    match plan {
        Plan::Stream(p) => backend::run_stream(backend, s, p, variant, seed).map(|rec| {
            let (m, t) = check::judge_stream_traced(s, &rec, max_attempts);
            (rec, m, t)
        }),
        Plan::Signaling(p) => backend::run_signaling(backend, s, p, variant, seed).map(|rec| {
            let (m, t) = check::judge_messages_traced(s, &rec, max_attempts);
            (rec, m, t)
        }),
        Plan::Command(_) => Err(BackendError::NoSuchRun(format!(
            "{} is a command scenario: it runs once, not as baseline and mitigated",
            s.id
        ))),
    }
}

/// A command workload runs once (the user's program is its own policy);
/// it passes when the program ends with the exit status the scenario names.
fn judge_command(
    s: &Scenario,
    backend: BackendKind,
    plan: &CommandPlan,
    seed: u64,
    result: &mut ScenarioResult,
) {
    match backend::run_command(backend, s, plan, seed) {
        Ok(run) => {
            result.virtual_ms = run.duration_ms;
            if run.timed_out {
                result.reasons.push(format!(
                    "the command was still running at the deadline ({}) and was killed",
                    s.expect.deadline
                ));
            } else if run.exit_code != s.expect.exit {
                let show = |c: Option<i32>| c.map_or("a signal".to_string(), |c| c.to_string());
                let last = run.stderr.lines().last().unwrap_or("").trim().to_string();
                result.reasons.push(format!(
                    "the command exited with {}, the scenario expects {}{}",
                    show(run.exit_code),
                    show(s.expect.exit),
                    if last.is_empty() {
                        String::new()
                    } else {
                        format!(" (stderr: {last})")
                    }
                ));
            }
            if s.expect.output == Some(OutputExpectation::Complete) {
                match run.output {
                    Some(o) if o.complete() => {}
                    Some(o) => result.reasons.push(format!(
                        "the command's output holds {} bytes, {} of them the stream in order; the server serves {}",
                        o.bytes, o.intact, o.expected
                    )),
                    None => result
                        .reasons
                        .push("the command line writes no `{output}` to judge".into()),
                }
            }
            result.command = Some(run);
        }
        Err(e) => {
            result.reasons.push(format!("the command run broke: {e}"));
            result.verdict = Verdict::Error;
            return;
        }
    }
    if result.reasons.is_empty() {
        result.verdict = Verdict::Pass;
    }
}
