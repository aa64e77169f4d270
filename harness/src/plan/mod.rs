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
    /// A policy a user could pick instead of the engine (`netmend compare`).
    Peer(Peer),
}

/// A policy a user could pick instead of a netmend session, run on the
/// scenario's topology, workload and fault schedule and judged by the same
/// checks as the engine (`netmend compare`). Each carries the stream with
/// the same resumption (the server's count, each byte kept once) and the
/// same reconnect schedule as the others, so what differs is the transport
/// and how it meets the fault ([`crate::workload::peers`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, serde::Serialize, clap::ValueEnum)]
#[serde(rename_all = "kebab-case")]
pub enum Peer {
    /// Plain TCP with keepalive and `TCP_USER_TIMEOUT` set from the
    /// scenario's timeouts, the name resolved at every attempt, full-jitter
    /// reconnects, and resumption from the server's count: the best a
    /// careful engineer writes without a session layer.
    TunedTcp,
    /// Multipath TCP as most hosts run it: `IPPROTO_MPTCP` sockets with the
    /// kernel's default path manager limits and no endpoints, so one
    /// subflow (it falls back to TCP where a middlebox strips the option).
    Mptcp,
    /// Multipath TCP with the in-kernel path manager set up as
    /// NetworkManager does: limits of two subflows on both sides, and a
    /// `subflow` endpoint for every address the client gains during the run.
    MptcpMultipath,
    /// QUIC (quinn) whose client rebinds its UDP socket on every path
    /// change the engine's monitor reports (`Endpoint::rebind`).
    Quic,
    /// QUIC (quinn) that does nothing on a path change: the server follows
    /// the client's new address as it would a NAT rebinding.
    QuicNoRebind,
}

impl Peer {
    /// Every peer, in the order of a comparison's columns.
    pub const ALL: [Peer; 5] = [
        Peer::TunedTcp,
        Peer::Mptcp,
        Peer::MptcpMultipath,
        Peer::Quic,
        Peer::QuicNoRebind,
    ];

    /// Its name on the command line and in reports.
    pub fn name(self) -> &'static str {
        match self {
            Peer::TunedTcp => "tuned-tcp",
            Peer::Mptcp => "mptcp",
            Peer::MptcpMultipath => "mptcp-multipath",
            Peer::Quic => "quic",
            Peer::QuicNoRebind => "quic-no-rebind",
        }
    }

    /// Why the simulated network cannot run this peer: each needs the
    /// kernel's transport (netns).
    pub fn sim_gap(self) -> &'static str {
        match self {
            Peer::TunedTcp => {
                "turmoil's TCP has no keepalive and no TCP_USER_TIMEOUT; the tuned-TCP peer needs the netns backend"
            }
            Peer::Mptcp | Peer::MptcpMultipath => {
                "turmoil has no Multipath TCP (subflows, path manager); the MPTCP peers need the netns backend"
            }
            Peer::Quic | Peer::QuicNoRebind => {
                "quinn drives kernel UDP sockets (quinn-udp: GSO, ECN, the source address of each datagram), which turmoil's UDP is not; the QUIC peers need the netns backend"
            }
        }
    }

    /// Why this peer cannot stand in `plan`'s runs, if it cannot (on any
    /// backend; sim's own gap is [`Peer::sim_gap`]).
    pub fn unsupported(self, plan: &Plan) -> Option<&'static str> {
        match plan {
            Plan::Stream(p) if !p.restarts.is_empty() => Some(
                "the client's process restart replaces the naive or the engine's client binary; a peer has none",
            ),
            Plan::Stream(p) if p.servers.is_some() => Some(
                "the server's processes (restart, failover) run the naive or the engine's server binary; a peer has none",
            ),
            Plan::Stream(p) if !p.floods.is_empty() => {
                Some("a session flood compares the engine's servers, not clients")
            }
            Plan::Stream(p) if p.herd.is_some() => {
                Some("a herd scenario compares how a thousand clients reconnect, not the stream's client")
            }
            Plan::Stream(_) => None,
            Plan::Signaling(_) | Plan::Command(_) => {
                Some("the peers carry byte streams; this scenario's workload is not one")
            }
        }
    }

    /// It carries the stream over QUIC (UDP), not a TCP byte stream.
    pub fn is_quic(self) -> bool {
        matches!(self, Peer::Quic | Peer::QuicNoRebind)
    }
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
