//! `netmend compare`: each stream scenario run with the naive client, the
//! engine and every peer policy a user could pick instead (see
//! [`Peer`]), on the same backend, topology, workload, fault schedule and
//! seed, judged by the same checks — a matrix of failure mode × policy.

use crate::backend::{self, BackendKind};
use crate::check::Measured;
use crate::plan::{Peer, Plan, Variant};
use crate::runner;
use crate::scenario::Scenario;
use serde::Serialize;
use std::fmt::Write as _;

/// A policy of a comparison's columns.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Policy {
    /// The scenario's naive client.
    Naive,
    /// The scenario's engine policy.
    Netmend,
    /// A peer policy.
    #[serde(untagged)]
    Peer(Peer),
}

impl Policy {
    /// Its name in reports.
    pub fn name(self) -> &'static str {
        match self {
            Policy::Naive => "naive",
            Policy::Netmend => "netmend",
            Policy::Peer(p) => p.name(),
        }
    }

    fn variant(self) -> Variant {
        match self {
            Policy::Naive => Variant::Baseline,
            Policy::Netmend => Variant::Mitigated,
            Policy::Peer(p) => Variant::Peer(p),
        }
    }
}

/// How one policy came through one scenario.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Verdict {
    /// Every byte delivered exactly once.
    Exact,
    /// Bytes lost, duplicated or corrupted, or the client gave up.
    Damaged,
    /// The run could not be made (the lab broke).
    Error,
    /// This policy cannot run here (the reason says why).
    Unsupported,
}

/// One policy's run of one scenario.
#[derive(Clone, Debug, Serialize)]
pub struct PolicyRun {
    /// Which policy.
    pub policy: Policy,
    /// The run's seed (the row's, plus the run's index).
    pub seed: u64,
    /// How it came through.
    pub verdict: Verdict,
    /// What the checks measured, when it ran.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub measured: Option<Measured>,
    /// Why it did not run, or broke.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

/// One scenario's row.
#[derive(Clone, Debug, Serialize)]
pub struct Row {
    /// Scenario id.
    pub id: String,
    /// Its failure mode (catalog entry).
    pub catalog: String,
    /// Where it ran.
    pub backend: BackendKind,
    /// Its seed.
    pub seed: u64,
    /// Why the scenario itself cannot run here (then `runs` is empty).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub unsupported: Option<String>,
    /// Every run: each policy's in turn, in the order asked.
    pub runs: Vec<PolicyRun>,
    /// Each policy's runs in figures, in the same order.
    pub summary: Vec<Summary>,
}

/// One policy's runs of one scenario in figures: how many came through
/// exact, and the medians.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Summary {
    /// Which policy.
    pub policy: Policy,
    /// Its runs.
    pub runs: u32,
    /// Runs with every byte delivered once.
    pub exact: u32,
    /// The median recovery after the path healed, over the runs that ran
    /// (one that never recovered counts as longer than any); `None`: most
    /// never recovered, or none ran.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub recovery_p50_ms: Option<u64>,
    /// The median connection attempts over the runs that ran.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub attempts_p50: Option<u32>,
}

impl Summary {
    fn of(policy: Policy, runs: &[&PolicyRun]) -> Summary {
        let measured: Vec<&Measured> = runs.iter().filter_map(|r| r.measured.as_ref()).collect();
        // Never recovered sorts last: after every recovery.
        let mut recoveries: Vec<Option<u64>> = measured.iter().map(|m| m.recovery_ms).collect();
        recoveries.sort_by_key(|r| r.unwrap_or(u64::MAX));
        let mut attempts: Vec<u32> = measured.iter().map(|m| m.attempts).collect();
        attempts.sort_unstable();
        Summary {
            policy,
            runs: u32::try_from(runs.len()).unwrap_or(u32::MAX),
            exact: u32::try_from(runs.iter().filter(|r| r.verdict == Verdict::Exact).count())
                .unwrap_or(u32::MAX),
            recovery_p50_ms: median(&recoveries).flatten(),
            attempts_p50: median(&attempts),
        }
    }
}

/// The middle of `sorted` (the lower of the two middles of an even count:
/// a median that never flatters).
fn median<T: Copy>(sorted: &[T]) -> Option<T> {
    match sorted.len() {
        0 => None,
        n => Some(sorted[n / 2 - usize::from(n % 2 == 0)]),
    }
}

/// Runs `s` on `backend` with the naive client, the engine and `peers`,
/// `runs` times each (seeds `seed`, `seed + 1`, …).
pub fn compare(s: &Scenario, backend: BackendKind, seed: u64, peers: &[Peer], runs: u32) -> Row {
    let plan = Plan::of(s, seed);
    let mut row = Row {
        id: s.id.clone(),
        catalog: s.catalog.clone(),
        backend,
        seed,
        unsupported: None,
        runs: Vec::new(),
        summary: Vec::new(),
    };
    if !matches!(plan, Plan::Stream(_)) {
        row.unsupported =
            Some("the comparison carries byte streams; this scenario's workload is not one".into());
        return row;
    }
    if let Some(why) = backend::unsupported(backend, s, &plan) {
        row.unsupported = Some(why);
        return row;
    }
    let policies = [Policy::Naive, Policy::Netmend]
        .into_iter()
        .chain(peers.iter().copied().map(Policy::Peer));
    for policy in policies {
        let first = row.runs.len();
        for k in 0..runs.max(1) {
            let seed = seed.wrapping_add(u64::from(k));
            // The plan follows the seed (the engine's jitter).
            let plan = Plan::of(s, seed);
            row.runs.push(run(s, backend, seed, &plan, policy));
        }
        let mine: Vec<&PolicyRun> = row.runs[first..].iter().collect();
        row.summary.push(Summary::of(policy, &mine));
    }
    row
}

fn run(s: &Scenario, backend: BackendKind, seed: u64, plan: &Plan, policy: Policy) -> PolicyRun {
    let unsupported = |why: String| PolicyRun {
        policy,
        seed,
        verdict: Verdict::Unsupported,
        measured: None,
        reason: Some(why),
    };
    if let Policy::Peer(peer) = policy {
        if let Some(why) = peer.unsupported(plan) {
            return unsupported(why.into());
        }
        if backend == BackendKind::Sim {
            return unsupported(peer.sim_gap().into());
        }
    }
    match runner::measure(
        backend,
        s,
        policy.variant(),
        seed,
        Some(s.expect.max_attempts),
    ) {
        Ok((_, m)) => PolicyRun {
            policy,
            seed,
            verdict: if m.lost + m.duplicated + m.corrupted == 0 && m.error.is_none() {
                Verdict::Exact
            } else {
                Verdict::Damaged
            },
            measured: Some(m),
            reason: None,
        },
        Err(e) => PolicyRun {
            policy,
            seed,
            verdict: Verdict::Error,
            measured: None,
            reason: Some(e.to_string()),
        },
    }
}

/// One cell of the human matrix: `exact 1.05s 3x`, `lost 78 KiB never 1x`;
/// over several runs the medians and how many were exact
/// (`exact 0.19s 2x 5/5`). What was lost is the first damaged run's.
fn cell(summary: &Summary, runs: &[&PolicyRun]) -> String {
    let damaged = runs.iter().find(|r| r.verdict != Verdict::Exact);
    let what = match damaged {
        None if runs.is_empty() => return "error".into(),
        None => "exact".to_string(),
        Some(r) => match &r.measured {
            None if r.verdict == Verdict::Unsupported => return "unsupported".into(),
            None => return "error".into(),
            Some(m) if m.lost > 0 => format!("lost {}", bytes(m.lost)),
            Some(m) if m.duplicated > 0 => format!("dup {}", bytes(m.duplicated)),
            Some(m) if m.corrupted > 0 => format!("corrupt {}", bytes(m.corrupted)),
            Some(_) => "failed".into(),
        },
    };
    let recovery = match summary.recovery_p50_ms {
        Some(ms) => format!("{:.2}s", ms as f64 / 1000.0),
        None => "never".into(),
    };
    let attempts = summary.attempts_p50.unwrap_or(0);
    if summary.runs > 1 {
        format!(
            "{what} {recovery} {attempts}x {}/{}",
            summary.exact, summary.runs
        )
    } else {
        format!("{what} {recovery} {attempts}x")
    }
}

fn bytes(n: u64) -> String {
    match n {
        n if n >= 1 << 20 => format!("{:.1} MiB", n as f64 / f64::from(1u32 << 20)),
        n if n >= 1 << 10 => format!("{:.0} KiB", n as f64 / 1024.0),
        n => format!("{n} B"),
    }
}

/// The matrix for people: a row per scenario, a column per policy; each
/// cell the outcome, the recovery after the path healed and the attempts.
pub fn human(rows: &[Row]) -> String {
    let policies: Vec<&str> = rows
        .iter()
        .find(|r| !r.summary.is_empty())
        .map(|r| r.summary.iter().map(|x| x.policy.name()).collect())
        .unwrap_or_default();
    let width = rows.iter().map(|r| r.id.len()).max().unwrap_or(8).max(8);
    let cells: Vec<Vec<String>> = rows
        .iter()
        .map(|r| {
            r.summary
                .iter()
                .map(|sum| {
                    let runs: Vec<&PolicyRun> =
                        r.runs.iter().filter(|x| x.policy == sum.policy).collect();
                    cell(sum, &runs)
                })
                .collect()
        })
        .collect();
    let col = cells
        .iter()
        .flatten()
        .map(String::len)
        .chain(policies.iter().map(|p| p.len()))
        .max()
        .unwrap_or(8);
    let mut out = String::new();
    let _ = write!(out, "{:<width$}", "scenario");
    for p in &policies {
        let _ = write!(out, "  {p:<col$}");
    }
    out.push('\n');
    for (row, cells) in rows.iter().zip(&cells) {
        let _ = write!(out, "{:<width$}", row.id);
        match &row.unsupported {
            Some(why) => {
                let _ = write!(out, "  unsupported: {why}");
            }
            None => {
                for c in cells {
                    let _ = write!(out, "  {c:<col$}");
                }
            }
        }
        out.push('\n');
    }
    out.push_str("each cell: exact (every byte once) or what was lost; recovery after the path healed; connection attempts (over several runs: medians, and runs exact of runs)\n");
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_read_as_people_write_them() {
        assert_eq!(bytes(512), "512 B");
        assert_eq!(bytes(78 << 10), "78 KiB");
        assert_eq!(bytes(3 << 19), "1.5 MiB");
    }

    fn measured_run(
        policy: Policy,
        recovery_ms: Option<u64>,
        attempts: u32,
        lost: u64,
    ) -> PolicyRun {
        let m = Measured {
            outcome: if lost == 0 {
                crate::check::Outcome::Passed
            } else {
                crate::check::Outcome::Failed
            },
            unit: "bytes",
            expected: 1 << 20,
            delivered: (1 << 20) - lost,
            lost,
            duplicated: 0,
            reordered: 0,
            corrupted: 0,
            recovery_ms,
            attempts,
            symptoms: Vec::new(),
            error: None,
            latency_p50_us: None,
            latency_p99_us: None,
            queue: None,
            herd: None,
            residue: None,
        };
        PolicyRun {
            policy,
            seed: 1,
            verdict: if lost == 0 {
                Verdict::Exact
            } else {
                Verdict::Damaged
            },
            measured: Some(m),
            reason: None,
        }
    }

    #[test]
    fn a_summary_takes_medians_and_never_recovering_counts_as_longest() {
        let p = Policy::Netmend;
        let runs = [
            measured_run(p, Some(300), 3, 0),
            measured_run(p, Some(100), 2, 0),
            measured_run(p, None, 1, 4096),
        ];
        let refs: Vec<&PolicyRun> = runs.iter().collect();
        let sum = Summary::of(p, &refs);
        assert_eq!(
            sum,
            Summary {
                policy: p,
                runs: 3,
                exact: 2,
                recovery_p50_ms: Some(300),
                attempts_p50: Some(2),
            }
        );
        assert_eq!(cell(&sum, &refs), "lost 4 KiB 0.30s 2x 2/3");
        // Most never recovered: the median is never.
        let never = [
            measured_run(p, None, 1, 1),
            measured_run(p, None, 1, 1),
            runs[1].clone(),
        ];
        let refs: Vec<&PolicyRun> = never.iter().collect();
        assert_eq!(Summary::of(p, &refs).recovery_p50_ms, None);
        // An even count takes the lower middle; one run is itself.
        assert_eq!(median(&[1, 2, 3, 4]), Some(2));
        assert_eq!(median(&[7]), Some(7));
        assert_eq!(median::<u32>(&[]), None);
        let one: Vec<&PolicyRun> = runs[..1].iter().collect();
        assert_eq!(cell(&Summary::of(p, &one), &one), "exact 0.30s 3x");
    }

    #[test]
    fn policies_serialize_by_name() {
        let json =
            serde_json::to_string(&[Policy::Naive, Policy::Netmend, Policy::Peer(Peer::TunedTcp)])
                .unwrap();
        assert_eq!(json, r#"["naive","netmend","tuned-tcp"]"#);
    }
}
