//! `netmend explore`: random fault schedules over a scenario's topology and
//! workload, run with its engine policy on sim and judged by the same
//! checks as `run`; a violation is shrunk to a minimal schedule and written
//! as a ready-to-run scenario file.
//!
//! The invariant each schedule is judged against (stated in the README):
//! the mitigated run delivers every byte (or message) exactly once, no
//! error, at most `expect.max_attempts` connection attempts per fault plus
//! what its backoff allows during the fault (twice `⌈log2(max_backoff /
//! initial_backoff)⌉ + 1 + ⌈duration / max_backoff⌉`, for jitter), and
//! delivery resumes within `recovery_within + dead_after + connect_timeout +
//! handshake_timeout + max_backoff` of the path being whole again after
//! every fault (the scenario's own bound is for its own fault; a silent
//! fault drawn here first has to be noticed, an attempt begun in the
//! outage can run its full timeouts, then a backoff is waited); a herd
//! returns within twice its `max_herd_peak` per 100 ms (a drawn fault
//! overlapping the return holds attempts back and TCP's unjittered SYN
//! retransmission releases them together), every client back.
//! Schedules the path cannot survive by construction are not drawn: faults
//! start while the workload runs and last a sixth of the deadline
//! together, and a signaling schedule leaves one broker alone.

pub mod draw;

use crate::backend::{self, BackendKind};
use crate::check::{Measured, Outcome};
use crate::fault::Fault;
use crate::plan::{Plan, Variant};
use crate::runner;
use crate::scenario::{self, Scenario};
use draw::Window;
use netmend::session::Config;
use netmend::Policy;
use serde::Serialize;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;
use std::time::Duration;

/// Runs a shrink may spend on one violation.
const SHRINK_BUDGET: usize = 200;
/// Violations shrunk per exploration; later ones are reported as drawn.
const SHRINK_AT_MOST: usize = 10;

/// One scenario explore works on: its file as a TOML table (the base of
/// every schedule's scenario) and its loaded form.
#[derive(Clone, Debug)]
pub struct Base {
    /// The scenario file.
    pub path: PathBuf,
    table: toml::Table,
    scenario: Scenario,
    plan: Plan,
    window: Window,
}

/// Why a scenario cannot be explored.
#[derive(Debug, thiserror::Error)]
pub enum ExploreError {
    /// The file could not be read or is not TOML.
    #[error("{path}: {why}")]
    Read {
        /// The file.
        path: PathBuf,
        /// What went wrong.
        why: String,
    },
    /// A drawn schedule made a scenario the loader refuses (a bug in the
    /// generator, reported rather than hidden).
    #[error("schedule {index} of {id} is not a valid scenario: {why}")]
    Invalid {
        /// The scenario.
        id: String,
        /// The schedule.
        index: u64,
        /// The loader's message.
        why: String,
    },
}

impl Base {
    /// Reads a scenario to explore; `None` with the reason if sim cannot
    /// run it (command workloads, faults sim cannot make).
    ///
    /// # Errors
    ///
    /// The file cannot be read or parsed.
    pub fn load(path: &Path) -> Result<Result<Base, String>, ExploreError> {
        let read = |why: String| ExploreError::Read {
            path: path.to_path_buf(),
            why,
        };
        let text = std::fs::read_to_string(path).map_err(|e| read(e.to_string()))?;
        let scenario = scenario::parse(path, &text).map_err(|e| read(e.to_string()))?;
        // The plan's kind and engine tunables; its seed only jitters.
        let plan = Plan::of(&scenario, 0);
        if let Some(why) = backend::unsupported(BackendKind::Sim, &scenario, &plan) {
            return Ok(Err(why));
        }
        let table: toml::Table = text
            .parse()
            .map_err(|e: toml::de::Error| read(e.to_string()))?;
        Ok(Ok(Base {
            path: path.to_path_buf(),
            window: Window::of(&scenario, &plan),
            plan,
            table,
            scenario,
        }))
    }

    /// The scenario's id.
    pub fn id(&self) -> &str {
        &self.scenario.id
    }

    /// The recovery bound of explored schedules (see the module doc).
    fn bound(&self) -> Duration {
        let s = &self.scenario;
        let m = s.mitigation.clone().unwrap_or_default();
        let (c, p) = (Config::default(), Policy::default());
        let waits = match &self.plan {
            Plan::Signaling(p) => p.config.ack_timeout,
            Plan::Stream(_) | Plan::Command(_) => {
                m.dead_after.map_or(c.dead_after, |d| d.0)
                    + m.connect_timeout.map_or(c.connect_timeout, |d| d.0)
                    + m.handshake_timeout.map_or(c.handshake_timeout, |d| d.0)
            }
        };
        s.expect.recovery_within.0 + waits + m.max_backoff.map_or(p.max_delay, |d| d.0)
    }

    /// The attempt bound of a schedule (see the module doc).
    fn attempts(&self, draws: &[Fault]) -> i64 {
        let m = self.scenario.mitigation.clone().unwrap_or_default();
        let p = Policy::default();
        let initial = m
            .initial_backoff
            .map_or(p.initial_delay, |d| d.0)
            .max(Duration::from_millis(1));
        let max = m.max_backoff.map_or(p.max_delay, |d| d.0).max(initial);
        let doublings = (max.as_secs_f64() / initial.as_secs_f64()).log2().ceil() as i64;
        let per_fault = i64::from(self.scenario.expect.max_attempts);
        let draws_or_one = if draws.is_empty() { 1 } else { draws.len() };
        let mut total = per_fault * draws_or_one as i64;
        for d in draws {
            let during = (draw::length_ms(d) as f64 / max.as_millis().max(1) as f64).ceil() as i64;
            total += 2 * (doublings + 1 + during);
        }
        total
    }

    /// The scenario file of schedule `index`: the base with its faults
    /// replaced by `draws` (attacks that are part of the workload — floods,
    /// forgeries, a herd —, a server restart, what its store and a herd
    /// are there for, and a clock skew, kept), the attempt bound per fault and the explored
    /// recovery bound.
    ///
    /// # Errors
    ///
    /// A drawn fault has no TOML form (never for the kinds drawn).
    pub fn text(&self, index: u64, draws: &[Fault]) -> Result<String, ExploreError> {
        let mut t = self.table.clone();
        let kept: Vec<toml::Value> = t
            .get("faults")
            .and_then(toml::Value::as_array)
            .map(|faults| {
                faults
                    .iter()
                    .filter(|f| {
                        matches!(
                            f.get("kind").and_then(toml::Value::as_str),
                            Some(
                                "session-flood"
                                    | "forged-publish"
                                    | "server-restart"
                                    | "clock-skew"
                                    | "herd"
                            )
                        )
                    })
                    .cloned()
                    .collect()
            })
            .unwrap_or_default();
        let mut faults = kept;
        let invalid = |why: String| ExploreError::Invalid {
            id: self.scenario.id.clone(),
            index,
            why,
        };
        for d in draws {
            let table = d.to_toml().map_err(|e| invalid(e.to_string()))?;
            faults.push(toml::Value::Table(table));
        }
        // Time order, as the loader wants it (stable: ties keep file order).
        let at = |f: &toml::Value| {
            f.get("at")
                .and_then(toml::Value::as_str)
                .and_then(|t| humantime::parse_duration(t).ok())
                .unwrap_or_default()
        };
        faults.sort_by_key(at);
        t.insert("faults".into(), toml::Value::Array(faults));
        let id = format!("{}-explore-{index}", self.scenario.id);
        t.insert("id".into(), id.into());
        t.insert(
            "description".into(),
            format!(
                "{} — schedule {index} drawn by netmend explore",
                self.scenario.description
            )
            .into(),
        );
        let attempts = self.attempts(draws);
        if let Some(expect) = t.get_mut("expect").and_then(toml::Value::as_table_mut) {
            expect.insert("max_attempts".into(), attempts.into());
            expect.insert(
                "recovery_within".into(),
                format!("{}ms", self.bound().as_millis()).into(),
            );
            // A drawn fault overlapping a herd's return holds its attempts
            // back, and TCP's SYN retransmission (which it does not
            // jitter) lets them through together: twice the bound.
            if let (Some(peak), false) = (self.scenario.expect.max_herd_peak, draws.is_empty()) {
                expect.insert(
                    "max_herd_peak".into(),
                    i64::from(peak.saturating_mul(2)).into(),
                );
            }
        }
        toml::to_string(&t).map_err(|e| invalid(e.to_string()))
    }
}

/// What one schedule's mitigated run showed.
#[derive(Clone, Debug, Serialize)]
pub struct Violation {
    /// The scenario.
    pub scenario: String,
    /// Index of the schedule.
    pub schedule: u64,
    /// The seed its simulation ran with (`netmend run --seed`).
    pub run_seed: u64,
    /// The drawn faults.
    pub faults: Vec<Fault>,
    /// The shrunk faults (still violating).
    pub shrunk: Vec<Fault>,
    /// Runs the shrink took.
    pub shrink_runs: usize,
    /// What the shrunk schedule's run showed.
    pub measured: Option<Measured>,
    /// Why it is a violation.
    pub why: String,
    /// Where its scenario file was written.
    pub saved: Option<PathBuf>,
}

/// The seed of schedule `index` of `scenario` in an exploration seeded
/// with `seed` (FNV-1a over the three; stable across versions and runs).
pub fn schedule_seed(seed: u64, scenario: &str, index: u64) -> u64 {
    crate::hash::fnv1a(
        seed.to_le_bytes()
            .into_iter()
            .chain(scenario.bytes())
            .chain(index.to_le_bytes()),
    )
}

/// Runs schedule `draws` of `base` on sim with `run_seed`; `Some(reason,
/// measurements)` if the invariant does not hold.
///
/// # Errors
///
/// The drawn scenario is refused by the loader.
pub fn judge(
    base: &Base,
    index: u64,
    draws: &[Fault],
    run_seed: u64,
) -> Result<Option<(String, Option<Measured>)>, ExploreError> {
    tracing::debug!(
        scenario = base.id(),
        index,
        run_seed,
        ?draws,
        "explore: schedule"
    );
    let text = base.text(index, draws)?;
    let s =
        scenario::parse(Path::new("explore.toml"), &text).map_err(|e| ExploreError::Invalid {
            id: base.id().to_string(),
            index,
            why: e.to_string(),
        })?;
    let max_attempts = Some(s.expect.max_attempts);
    match runner::measure(
        BackendKind::Sim,
        &s,
        Variant::Mitigated,
        run_seed,
        max_attempts,
    ) {
        Err(e) => Ok(Some((format!("the run broke: {e}"), None))),
        Ok((_, m)) if m.outcome == Outcome::Passed => Ok(None),
        Ok((_, m)) => {
            let names: Vec<&str> = m.symptoms.iter().map(|x| x.name()).collect();
            Ok(Some((names.join(", "), Some(m))))
        }
    }
}

/// Shrinks a violating schedule: fewer faults, then simpler kinds, shorter
/// and earlier ones, keeping each change that still violates, until none
/// does or the budget is spent. Returns the schedule, its violation and
/// the runs spent.
fn shrink(
    base: &Base,
    index: u64,
    draws: &[Fault],
    run_seed: u64,
    found: (String, Option<Measured>),
) -> (Vec<Fault>, (String, Option<Measured>), usize) {
    let mut best = draws.to_vec();
    let mut why = found;
    let mut runs = 0;
    'outer: loop {
        let mut candidates: Vec<Vec<Fault>> = Vec::new();
        for i in 0..best.len() {
            if best.len() > 1 {
                let mut fewer = best.clone();
                fewer.remove(i);
                candidates.push(fewer);
            }
        }
        for i in 0..best.len() {
            for simpler in draw::simpler(&best[i]) {
                let mut c = best.clone();
                c[i] = simpler;
                c.sort_by_key(Fault::at);
                candidates.push(c);
            }
        }
        for c in candidates {
            if runs >= SHRINK_BUDGET {
                break 'outer;
            }
            runs += 1;
            if let Ok(Some(v)) = judge(base, index, &c, run_seed) {
                best = c;
                why = v;
                continue 'outer;
            }
        }
        break;
    }
    (best, why, runs)
}

/// A violating schedule as a worker found it: scenario index, schedule
/// index, its draws, its run seed, why.
type Found = (usize, u64, Vec<Fault>, u64, (String, Option<Measured>));

/// What `explore` is asked to do.
#[derive(Clone, Debug)]
pub struct Options {
    /// Schedules in total, spread evenly over the scenarios.
    pub schedules: u64,
    /// The exploration's seed.
    pub seed: u64,
    /// Most faults in one schedule.
    pub max_faults: u32,
    /// Where to write the scenario file of each shrunk violation.
    pub save: Option<PathBuf>,
    /// Worker threads.
    pub threads: usize,
    /// Stop at the first violation: no schedule is started after one is
    /// found, so the lowest violating index among those drawn is reported
    /// (every lower index was started before and finishes).
    pub first: bool,
}

/// Progress, as schedules finish.
#[derive(Clone, Copy, Debug)]
pub struct Progress {
    /// Schedules done.
    pub done: u64,
    /// Schedules in total.
    pub total: u64,
    /// Violations found so far.
    pub violations: u64,
}

/// The result of an exploration.
#[derive(Clone, Debug, Serialize)]
pub struct Summary {
    /// The seed.
    pub seed: u64,
    /// Schedules run.
    pub schedules: u64,
    /// Per scenario: id and schedules run.
    pub scenarios: Vec<(String, u64)>,
    /// Scenarios left out, with the reason.
    pub skipped: Vec<(String, String)>,
    /// Every violation, shrunk.
    pub violations: Vec<Violation>,
    /// Wall time, seconds.
    pub seconds: f64,
    /// Schedules per second.
    pub per_second: f64,
}

/// Explores `bases` as `opts` asks, calling `progress` as schedules end.
///
/// # Errors
///
/// A drawn schedule the loader refuses, or a shrunk scenario that cannot
/// be saved.
pub fn explore(
    bases: &[Base],
    skipped: Vec<(String, String)>,
    opts: &Options,
    progress: &(dyn Fn(Progress) + Sync),
) -> Result<Summary, ExploreError> {
    let started = std::time::Instant::now();
    let per = if bases.is_empty() {
        0
    } else {
        opts.schedules.div_ceil(bases.len() as u64)
    };
    let jobs: Vec<(usize, u64)> = (0..bases.len())
        .flat_map(|b| (0..per).map(move |i| (b, i)))
        .take(opts.schedules as usize)
        .collect();
    let next = AtomicUsize::new(0);
    let done = AtomicUsize::new(0);
    let found: Mutex<Vec<Found>> = Mutex::new(Vec::new());
    let failed: Mutex<Option<ExploreError>> = Mutex::new(None);
    std::thread::scope(|scope| {
        for _ in 0..opts.threads.max(1) {
            scope.spawn(|| loop {
                let k = next.fetch_add(1, Ordering::Relaxed);
                let Some(&(b, index)) = jobs.get(k) else {
                    return;
                };
                let base = &bases[b];
                let seed = schedule_seed(opts.seed, base.id(), index);
                let draws = draw::schedule(base.window, opts.max_faults, seed);
                match judge(base, index, &draws, seed) {
                    Ok(Some(v)) => {
                        found
                            .lock()
                            .unwrap_or_else(|e| e.into_inner())
                            .push((b, index, draws, seed, v));
                        if opts.first {
                            next.store(jobs.len(), Ordering::Relaxed);
                        }
                    }
                    Ok(None) => {}
                    Err(e) => {
                        *failed.lock().unwrap_or_else(|e| e.into_inner()) = Some(e);
                        next.store(jobs.len(), Ordering::Relaxed);
                        return;
                    }
                }
                let d = done.fetch_add(1, Ordering::Relaxed) + 1;
                progress(Progress {
                    done: d as u64,
                    total: jobs.len() as u64,
                    violations: found.lock().map_or(0, |f| f.len() as u64),
                });
            });
        }
    });
    if let Some(e) = failed.into_inner().unwrap_or_else(|e| e.into_inner()) {
        return Err(e);
    }
    let mut found = found.into_inner().unwrap_or_else(|e| e.into_inner());
    // Shrink in schedule order, whatever order the threads found them in.
    found.sort_by_key(|(b, index, ..)| (*b, *index));
    if opts.first {
        found.truncate(1);
    }
    let mut violations = Vec::new();
    for (n, (b, index, draws, run_seed, v)) in found.into_iter().enumerate() {
        let base = &bases[b];
        let (shrunk, (why, measured), shrink_runs) = if n < SHRINK_AT_MOST {
            shrink(base, index, &draws, run_seed, v)
        } else {
            (draws.clone(), v, 0)
        };
        let saved = match &opts.save {
            Some(dir) => Some(save(dir, base, index, &shrunk, run_seed)?),
            None => None,
        };
        violations.push(Violation {
            scenario: base.id().to_string(),
            schedule: index,
            run_seed,
            faults: draws,
            shrunk,
            shrink_runs,
            measured,
            why,
            saved,
        });
    }
    let seconds = started.elapsed().as_secs_f64();
    let ran = done.into_inner();
    let mut scenarios: Vec<(String, u64)> = bases.iter().map(|b| (b.id().to_string(), 0)).collect();
    for (b, _) in jobs.iter().take(ran) {
        scenarios[*b].1 += 1;
    }
    Ok(Summary {
        seed: opts.seed,
        schedules: ran as u64,
        scenarios,
        skipped,
        violations,
        seconds,
        per_second: ran as f64 / seconds.max(1e-9),
    })
}

/// Writes the scenario of a shrunk violation to `dir`, with how to
/// reproduce it in a comment.
fn save(
    dir: &Path,
    base: &Base,
    index: u64,
    draws: &[Fault],
    run_seed: u64,
) -> Result<PathBuf, ExploreError> {
    let path = dir.join(format!("{}-explore-{index}.toml", base.id()));
    let text = format!(
        "# Found by `netmend explore` in {} (schedule {index}) and shrunk.\n\
         # Reproduce on sim: netmend run {} --backend sim --seed {run_seed}\n\
         # (it runs on netns too: --backend netns)\n\n{}",
        base.path.display(),
        path.display(),
        base.text(index, draws)?
    );
    let write = |why: String| ExploreError::Read {
        path: path.clone(),
        why,
    };
    std::fs::create_dir_all(dir).map_err(|e| write(e.to_string()))?;
    std::fs::write(&path, text).map_err(|e| write(e.to_string()))?;
    Ok(path)
}
