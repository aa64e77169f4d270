//! Backends: the worlds a scenario runs in. Each runs one variant (baseline
//! or mitigated) of a scenario and returns the raw [`Recording`].

pub mod netns;
pub mod path;
pub mod portal;
pub mod signaling;
pub mod sim;

use crate::fault::{Fault, SessionFlood};
use crate::scenario::{Scenario, WorkloadKind};
use crate::workload::programs::MitigationSpec;
use crate::workload::Recording;
use netmend::gate::GateConfig;
use netmend::monitor::Debounce;
use netmend::session::{Config, Limits};
use netmend::Policy;
use serde::Serialize;
use std::time::Duration;
use thiserror::Error;

/// Which world.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum BackendKind {
    /// Deterministic simulated network (turmoil).
    Sim,
    /// Real Linux network namespaces.
    Netns,
}

impl std::fmt::Display for BackendKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            BackendKind::Sim => "sim",
            BackendKind::Netns => "netns",
        })
    }
}

/// Which client and server run.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Variant {
    /// The naive client: plain TCP and a reconnect loop.
    Baseline,
    /// The scenario's engine policy.
    Mitigated,
}

/// A run could not be carried out (as opposed to: it ran and failed).
#[derive(Debug, Error)]
pub enum BackendError {
    /// The simulation itself broke (a host panicked, time ran out).
    #[error("simulation error: {0}")]
    Sim(String),
    /// The lab could not be built, changed or torn down.
    #[error("netns lab: {0}")]
    Netns(String),
}

/// The engine parameters the scenario's mitigation section asks for.
pub fn mitigation_spec(s: &Scenario, seed: u64) -> MitigationSpec {
    // The only policy so far is the resumable session; a command scenario
    // has none and never uses this.
    let m = s.mitigation.clone().unwrap_or_default();
    let (keepalive_interval, dead_after, handshake_timeout, connect_timeout) = (
        m.keepalive_interval,
        m.dead_after,
        m.handshake_timeout,
        m.connect_timeout,
    );
    let (initial_backoff, max_backoff, max_attempts, replay_buffer) = (
        m.initial_backoff,
        m.max_backoff,
        m.max_attempts,
        m.replay_buffer,
    );
    let d = Config::default();
    let mut config = d.clone();
    config.keepalive_interval = keepalive_interval.map_or(d.keepalive_interval, |v| v.0);
    config.dead_after = dead_after.map_or(d.dead_after, |v| v.0);
    config.handshake_timeout = handshake_timeout.map_or(d.handshake_timeout, |v| v.0);
    config.connect_timeout = connect_timeout.map_or(d.connect_timeout, |v| v.0);
    config.replay_capacity = replay_buffer.unwrap_or(d.replay_capacity);
    let p = Policy::default();
    let mut policy = p.clone();
    policy.initial_delay = initial_backoff.map_or(p.initial_delay, |v| v.0);
    policy.max_delay = max_backoff.map_or(p.max_delay, |v| v.0);
    policy.max_attempts = max_attempts.or(p.max_attempts);
    policy.max_outage = Some(s.expect.deadline.0);
    let follow = follow_spec(s);
    MitigationSpec {
        config,
        policy,
        seed,
        follow,
        planted_bug: m.planted_bug,
    }
}

/// Which programs serve and use a stream scenario's variant.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Programs {
    /// The engine's client (resumable session), else the naive one.
    pub engine_client: bool,
    /// The engine's server within these limits, else the naive TCP server.
    pub engine_server: Option<Limits>,
    /// Record the sessions the server holds against this bound.
    pub watch_sessions: Option<u64>,
}

/// The programs of `s`'s `variant`. Usually the naive client and server
/// against the engine's; a scenario with a session flood compares servers
/// instead — the engine's without admission limits against the engine's
/// within `[mitigation]`'s — with the engine's client in both.
pub fn programs(s: &Scenario, variant: Variant) -> Programs {
    let m = s.mitigation.clone().unwrap_or_default();
    let mut limits = Limits::default();
    limits.max_sessions = m.max_sessions.unwrap_or(limits.max_sessions);
    limits.max_handshakes = m.max_handshakes.unwrap_or(limits.max_handshakes);
    let flood = s.faults.iter().any(|f| matches!(f, Fault::SessionFlood(_)));
    match (variant, flood) {
        (Variant::Baseline, false) => Programs {
            engine_client: false,
            engine_server: None,
            watch_sessions: None,
        },
        (Variant::Mitigated, false) => Programs {
            engine_client: true,
            engine_server: Some(limits),
            watch_sessions: None,
        },
        (Variant::Baseline, true) => {
            let mut unlimited = Limits::default();
            unlimited.max_sessions = usize::MAX;
            unlimited.max_handshakes = usize::MAX;
            unlimited.max_per_source = usize::MAX;
            unlimited.max_bytes_while_away = usize::MAX;
            Programs {
                engine_client: true,
                engine_server: Some(unlimited),
                watch_sessions: Some(limits.max_sessions as u64),
            }
        }
        (Variant::Mitigated, true) => Programs {
            engine_client: true,
            engine_server: Some(limits),
            watch_sessions: Some(limits.max_sessions as u64),
        },
    }
}

/// The session floods of `s`: when each starts, its hit-and-run clients
/// and its trickling handshakes.
pub fn floods(s: &Scenario) -> Vec<(Duration, u32, u32)> {
    s.faults
        .iter()
        .filter_map(|f| match f {
            Fault::SessionFlood(SessionFlood { at, count, trickle }) => {
                Some((at.0, *count, *trickle))
            }
            _ => None,
        })
        .collect()
}

/// Runs the command workload of `s` on `backend`.
pub fn run_command(
    backend: BackendKind,
    s: &Scenario,
    seed: u64,
) -> Result<crate::workload::command::CommandRun, BackendError> {
    match backend {
        BackendKind::Netns => netns::command::run(s, seed),
        BackendKind::Sim => Err(BackendError::Sim(
            "command workloads need the netns backend".into(),
        )),
    }
}

/// Runs one variant of `scenario` on `backend`.
pub fn run(
    backend: BackendKind,
    s: &Scenario,
    variant: Variant,
    seed: u64,
) -> Result<Recording, BackendError> {
    match backend {
        BackendKind::Sim => sim::run(s, variant, seed),
        BackendKind::Netns => netns::run(s, variant, seed),
    }
}

/// Why `backend` cannot run `s`, if it cannot: what the scenario file says,
/// or a fault the backend has no way to make.
pub fn unsupported(backend: BackendKind, s: &Scenario) -> Option<String> {
    let note = match backend {
        BackendKind::Sim => s.backends.sim.as_ref(),
        BackendKind::Netns => s.backends.netns.as_ref(),
    };
    if let Some(why) = note.and_then(|n| n.unsupported.clone()) {
        return Some(why);
    }
    if backend == BackendKind::Netns {
        return None;
    }
    if s.workload.kind == WorkloadKind::Command {
        return Some(
            "a command workload runs a real program on real sockets; it needs the netns backend"
                .into(),
        );
    }
    s.schedule()
        .iter()
        .find_map(|(_, action)| sim::cannot(action).map(str::to_string))
}

/// How the naive client of `s` behaves: it follows change notifications
/// when the scenario's engine policy does.
pub fn baseline_follows(s: &Scenario) -> Option<Debounce> {
    follow_spec(s).map(|(d, _)| d)
}

/// The monitor debounce and gate of a scenario whose policy follows
/// network changes (`monitor = true`).
fn follow_spec(s: &Scenario) -> Option<(Debounce, GateConfig)> {
    let m = s.mitigation.as_ref().filter(|m| m.monitor)?;
    let debounce = Debounce {
        quiet: m.debounce.map_or(Debounce::default().quiet, |d| d.0),
        ..Debounce::default()
    };
    let g = GateConfig::default();
    let mut gate = g;
    gate.probe_interval = m.probe_interval.map_or(g.probe_interval, |d| d.0);
    gate.max_probe_interval = m.max_probe_interval.map_or(g.max_probe_interval, |d| d.0);
    gate.probe_timeout = m.probe_timeout.map_or(g.probe_timeout, |d| d.0);
    gate.deadline = s.expect.deadline.0;
    Some((debounce, gate))
}
