//! Backends: the worlds a scenario runs in. Each runs one variant (baseline
//! or mitigated) of a scenario and returns the raw [`Recording`].

pub mod netns;
pub mod sim;

use crate::scenario::{Direction, Fault, Scenario};
use crate::workload::programs::MitigationSpec;
use crate::workload::Recording;
use netmend::session::Config;
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
    // The only policy so far is the resumable session.
    let m = &s.mitigation;
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
    let config = Config {
        keepalive_interval: keepalive_interval.map_or(d.keepalive_interval, |v| v.0),
        dead_after: dead_after.map_or(d.dead_after, |v| v.0),
        handshake_timeout: handshake_timeout.map_or(d.handshake_timeout, |v| v.0),
        connect_timeout: connect_timeout.map_or(d.connect_timeout, |v| v.0),
        replay_capacity: replay_buffer.unwrap_or(d.replay_capacity),
        ..d
    };
    let p = Policy::default();
    let policy = Policy {
        initial_delay: initial_backoff.map_or(p.initial_delay, |v| v.0),
        max_delay: max_backoff.map_or(p.max_delay, |v| v.0),
        max_attempts: max_attempts.or(p.max_attempts),
        max_outage: Some(s.expect.deadline.0),
        ..p
    };
    MitigationSpec {
        config,
        policy,
        seed,
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

/// One change to the world at a point in time, as both backends apply it.
#[derive(Clone, Debug)]
pub(crate) enum Action {
    Reset,
    Blackhole(bool),
    Partition { direction: Direction, on: bool },
    Latency(Duration),
}

/// The scenario's faults as a time-ordered list of changes.
pub(crate) fn schedule(s: &Scenario) -> Vec<(Duration, Action)> {
    let base = s.topology.latency.0;
    let mut out = Vec::new();
    for f in &s.faults {
        match f {
            Fault::Reset { at } => out.push((at.0, Action::Reset)),
            Fault::Blackhole { at, duration } => {
                out.push((at.0, Action::Blackhole(true)));
                out.push((at.0 + duration.0, Action::Blackhole(false)));
            }
            Fault::Partition {
                at,
                duration,
                direction,
            } => {
                out.push((
                    at.0,
                    Action::Partition {
                        direction: *direction,
                        on: true,
                    },
                ));
                out.push((
                    at.0 + duration.0,
                    Action::Partition {
                        direction: *direction,
                        on: false,
                    },
                ));
            }
            Fault::Latency {
                at,
                latency,
                duration,
            } => {
                out.push((at.0, Action::Latency(latency.0)));
                if let Some(d) = duration {
                    out.push((at.0 + d.0, Action::Latency(base)));
                }
            }
        }
    }
    // Stable: simultaneous actions keep file order.
    out.sort_by_key(|(t, _)| *t);
    out
}
