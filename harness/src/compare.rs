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
    /// One run per policy, in the order asked.
    pub runs: Vec<PolicyRun>,
}

/// Runs `s` on `backend` with the naive client, the engine and `peers`.
pub fn compare(s: &Scenario, backend: BackendKind, seed: u64, peers: &[Peer]) -> Row {
    let plan = Plan::of(s, seed);
    let mut row = Row {
        id: s.id.clone(),
        catalog: s.catalog.clone(),
        backend,
        seed,
        unsupported: None,
        runs: Vec::new(),
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
        row.runs.push(run(s, backend, seed, &plan, policy));
    }
    row
}

fn run(s: &Scenario, backend: BackendKind, seed: u64, plan: &Plan, policy: Policy) -> PolicyRun {
    let unsupported = |why: String| PolicyRun {
        policy,
        verdict: Verdict::Unsupported,
        measured: None,
        reason: Some(why),
    };
    if let Policy::Peer(peer) = policy {
        if let Some(why) = peer.unsupported(plan) {
            return unsupported(why.into());
        }
        if backend == BackendKind::Sim {
            return unsupported(Peer::SIM_HAS_NO_TCP_OPTIONS.into());
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
            verdict: Verdict::Error,
            measured: None,
            reason: Some(e.to_string()),
        },
    }
}

/// One cell of the human matrix: `exact 1.05s 3×`, `lost 78 KB`, …
fn cell(r: &PolicyRun) -> String {
    let Some(m) = &r.measured else {
        return match r.verdict {
            Verdict::Unsupported => "unsupported".into(),
            _ => "error".into(),
        };
    };
    let what = if r.verdict == Verdict::Exact {
        "exact".to_string()
    } else if m.lost > 0 {
        format!("lost {}", bytes(m.lost))
    } else if m.duplicated > 0 {
        format!("dup {}", bytes(m.duplicated))
    } else if m.corrupted > 0 {
        format!("corrupt {}", bytes(m.corrupted))
    } else {
        "failed".into()
    };
    let recovery = match m.recovery_ms {
        Some(ms) => format!("{:.2}s", ms as f64 / 1000.0),
        None => "never".into(),
    };
    format!("{what} {recovery} {}x", m.attempts)
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
        .find(|r| !r.runs.is_empty())
        .map(|r| r.runs.iter().map(|x| x.policy.name()).collect())
        .unwrap_or_default();
    let width = rows.iter().map(|r| r.id.len()).max().unwrap_or(8).max(8);
    let cells: Vec<Vec<String>> = rows
        .iter()
        .map(|r| r.runs.iter().map(cell).collect())
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
    out.push_str("each cell: exact (every byte once) or what was lost; recovery after the path healed; connection attempts\n");
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

    #[test]
    fn policies_serialize_by_name() {
        let json =
            serde_json::to_string(&[Policy::Naive, Policy::Netmend, Policy::Peer(Peer::TunedTcp)])
                .unwrap();
        assert_eq!(json, r#"["naive","netmend","tuned-tcp"]"#);
    }
}
