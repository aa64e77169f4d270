//! Backends: the worlds a scenario runs in. Each runs one variant (baseline
//! or mitigated) of a stream or signaling plan and returns the raw
//! [`Recording`], or a command plan once.

pub mod names;
pub mod netns;
pub mod path;
pub mod portal;
pub mod signaling;
pub mod sim;

use crate::plan::{CommandPlan, Plan, SignalingPlan, StreamPlan, Variant};
use crate::scenario::Scenario;
use crate::workload::command::CommandRun;
use crate::workload::Recording;
use serde::Serialize;
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

/// A run could not be carried out (as opposed to: it ran and failed).
#[derive(Debug, Error)]
pub enum BackendError {
    /// The simulation itself broke (a host panicked, time ran out).
    #[error("simulation error: {0}")]
    Sim(String),
    /// The lab could not be built, changed or torn down.
    #[error("netns lab: {0}")]
    Netns(String),
    /// The run asked for does not exist for this plan (a command runs once,
    /// not as baseline and mitigated).
    #[error("{0}")]
    NoSuchRun(String),
}

/// Runs one variant of the stream scenario `s`, planned as `plan`, on
/// `backend`.
///
/// # Errors
///
/// The world could not be built or broke (not: the run failed).
pub fn run_stream(
    backend: BackendKind,
    s: &Scenario,
    plan: &StreamPlan,
    variant: Variant,
    seed: u64,
) -> Result<Recording, BackendError> {
    match backend {
        BackendKind::Sim => sim::run_stream(s, plan, variant, seed),
        BackendKind::Netns => netns::run_stream(s, plan, variant, seed),
    }
}

/// Runs one variant of the signaling scenario `s`, planned as `plan`, on
/// `backend`.
///
/// # Errors
///
/// The world could not be built or broke (not: the run failed).
pub fn run_signaling(
    backend: BackendKind,
    s: &Scenario,
    plan: &SignalingPlan,
    variant: Variant,
    seed: u64,
) -> Result<Recording, BackendError> {
    if let Variant::Peer(peer) = variant {
        return Err(BackendError::NoSuchRun(format!(
            "{}: {} carries byte streams, not signaling",
            s.id,
            peer.name()
        )));
    }
    match backend {
        BackendKind::Sim => sim::signaling::run(s, plan, variant, seed),
        BackendKind::Netns => netns::run_signaling(s, plan, variant),
    }
}

/// Runs the command scenario `s`, planned as `plan`, on `backend`.
///
/// # Errors
///
/// The lab could not be built or broke; sim cannot run a command.
pub fn run_command(
    backend: BackendKind,
    s: &Scenario,
    plan: &CommandPlan,
    seed: u64,
) -> Result<CommandRun, BackendError> {
    match backend {
        BackendKind::Netns => netns::command::run(s, plan, seed),
        BackendKind::Sim => Err(BackendError::Sim(
            "command workloads need the netns backend".into(),
        )),
    }
}

/// Why `backend` cannot run `s` (planned as `plan`), if it cannot: what
/// the scenario file says, a kind of run it cannot carry, a change to the
/// world it has no way to make, or a tool the run needs that this machine
/// lacks (with how to install it).
pub fn unsupported(backend: BackendKind, s: &Scenario, plan: &Plan) -> Option<String> {
    let note = match backend {
        BackendKind::Sim => s.backends.sim.as_ref(),
        BackendKind::Netns => s.backends.netns.as_ref(),
    };
    if let Some(why) = note.and_then(|n| n.unsupported.clone()) {
        return Some(why);
    }
    if backend == BackendKind::Netns {
        return netns::missing_tool(plan).or_else(|| netns::missing_name_server(s));
    }
    if s.topology.ip == crate::scenario::IpVersion::Dual {
        return Some(
            "a turmoil host has one address of one family; a dual-stack topology needs the netns backend"
                .into(),
        );
    }
    plan.sim_gap().map(str::to_string).or_else(|| {
        s.schedule()
            .iter()
            .find_map(|(_, action)| sim::cannot(action).map(str::to_string))
    })
}
