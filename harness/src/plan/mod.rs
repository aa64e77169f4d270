//! What a scenario runs, decided once from its workload: a [`Plan`] of one
//! kind — a byte stream, signaling messages, or the user's command — with
//! everything its runs need worked out from the scenario. The runner
//! branches on the plan once; the backends and checkers below take the plan
//! of their kind and never look at the workload kind again.

mod command;
mod signaling;
mod stream;

pub use command::CommandPlan;
pub use signaling::SignalingPlan;
pub use stream::{HerdPlan, Programs, ServerEvents, StreamPlan};

use crate::scenario::{Scenario, WorkloadKind};

/// Which client and server run.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Variant {
    /// The naive client: plain TCP and a reconnect loop.
    Baseline,
    /// The scenario's engine policy.
    Mitigated,
}

/// A scenario's runs, by workload.
#[derive(Clone, Debug)]
pub enum Plan {
    /// A byte stream from client to server: baseline and mitigated runs.
    Stream(StreamPlan),
    /// Signaling messages through brokers: baseline and mitigated runs.
    Signaling(SignalingPlan),
    /// The user's program, run once (it is its own policy).
    Command(CommandPlan),
}

impl Plan {
    /// The plan of `s`; `seed` jitters the engine's timers.
    pub fn of(s: &Scenario, seed: u64) -> Plan {
        match s.workload.kind {
            WorkloadKind::Stream => Plan::Stream(StreamPlan::of(s, seed)),
            WorkloadKind::Signaling => Plan::Signaling(SignalingPlan::of(s, seed)),
            WorkloadKind::Command => Plan::Command(CommandPlan::of(s)),
        }
    }

    /// Why the simulated network cannot carry this kind of run, if it
    /// cannot.
    pub fn sim_gap(&self) -> Option<&'static str> {
        match self {
            Plan::Stream(p) if !p.restarts.is_empty() => Some(
                "a process restart replaces a real process (the simulation runs programs as tasks of one process); it needs the netns backend",
            ),
            Plan::Stream(p) if p.servers.as_ref().is_some_and(|e| e.failover.is_some()) => Some(
                "a failover kills one of two server instances (real processes, SIGKILL) that share a real redis-server behind a load balancer; the simulation has no Redis: it needs the netns backend",
            ),
            Plan::Stream(_) | Plan::Signaling(_) => None,
            Plan::Command(_) => Some(
                "a command workload runs a real program on real sockets; it needs the netns backend",
            ),
        }
    }
}
