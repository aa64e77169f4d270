//! What a scenario file says. Every struct refuses unknown fields.

use crate::duration::Dur;
use crate::fault::{Action, Fault, Normal};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use std::time::Duration;

/// One failure case: topology, workload, fault schedule, mitigation, expectations.
#[derive(Clone, Debug, Deserialize, PartialEq, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Scenario {
    /// Unique id, also the file stem by convention.
    pub id: String,
    /// The catalog entry this scenario reproduces.
    pub catalog: String,
    /// One sentence for humans.
    pub description: String,
    /// Labels to select scenarios by (`netmend run --tag path`).
    #[serde(default)]
    pub tags: Vec<String>,
    /// Hosts and the path between them.
    pub topology: Topology,
    /// What the application does.
    pub workload: Workload,
    /// Time-ordered faults.
    #[serde(default, rename = "faults")]
    pub faults: Vec<Fault>,
    /// The engine policy that mitigates the failure (stream workloads;
    /// a command workload is the user's own program and has none).
    #[serde(default)]
    pub mitigation: Option<Mitigation>,
    /// What the naive client of the baseline run does (stream workloads).
    #[serde(default)]
    pub baseline: Baseline,
    /// How the baseline must fail and what the mitigated run must hold.
    pub expect: Expect,
    /// Per-backend notes: what a backend models differently, or cannot express.
    #[serde(default)]
    pub backends: Backends,
}

impl Scenario {
    /// Whether the programs listen on IPv6 (and, dual-stack, IPv4 too).
    pub fn listens_v6(&self) -> bool {
        self.topology.ip != IpVersion::Ipv4
    }

    /// The scenario's faults as a time-ordered list of changes, each
    /// fault's undo at its heal; simultaneous changes keep file order.
    pub fn schedule(&self) -> Vec<(Duration, Action)> {
        let normal = Normal {
            latency: self.topology.latency.0,
        };
        let mut out = Vec::new();
        for step in self.faults.iter().flat_map(|f| f.steps(&normal)) {
            out.push((step.at, step.apply));
            out.extend(step.undo);
        }
        // Stable: simultaneous actions keep file order.
        out.sort_by_key(|(t, _)| *t);
        out
    }
}

/// Client and server joined by one path through a middlebox, where faults act.
#[derive(Clone, Debug, Deserialize, PartialEq, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Topology {
    /// Host name of the client.
    #[serde(default = "default_client")]
    pub client: String,
    /// Host name of the server.
    #[serde(default = "default_server")]
    pub server: String,
    /// Host name of the middlebox (router, NAT, firewall) on the path.
    #[serde(default = "default_middlebox")]
    pub middlebox: String,
    /// One-way latency of each hop.
    #[serde(default = "default_latency")]
    pub latency: Dur,
    /// TCP port the server listens on.
    #[serde(default = "default_port")]
    pub port: u16,
    /// Address family of the path.
    #[serde(default)]
    pub ip: IpVersion,
    /// Signaling brokers (hosts `broker0`, `broker1`, …), each one hop
    /// from the middlebox like client and server. Only a signaling
    /// workload uses them.
    #[serde(default)]
    pub brokers: u8,
    /// TCP port the brokers listen on.
    #[serde(default = "default_broker_port")]
    pub broker_port: u16,
}

impl Topology {
    /// Host name of broker `index`.
    pub fn broker(&self, index: u8) -> String {
        format!("broker{index}")
    }

    /// Host names of every broker, in index order.
    pub fn broker_hosts(&self) -> Vec<String> {
        (0..self.brokers).map(|i| self.broker(i)).collect()
    }
}

/// Address family of a scenario's path.
#[derive(Clone, Copy, Debug, Default, Deserialize, Serialize, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum IpVersion {
    /// IPv4 (198.18.0.0/15 on netns).
    #[default]
    Ipv4,
    /// IPv6 (2001:db8::/32 on netns).
    Ipv6,
    /// Both: every host has an IPv4 and an IPv6 address and a name
    /// resolves to both, IPv6 first (as RFC 6724 prefers); listeners take
    /// both. Stream workloads, netns only (a turmoil host has one address).
    Dual,
}

fn default_client() -> String {
    "client".into()
}
fn default_server() -> String {
    "server".into()
}
fn default_middlebox() -> String {
    "middlebox".into()
}
fn default_latency() -> Dur {
    Dur(std::time::Duration::from_millis(1))
}
fn default_port() -> u16 {
    7000
}
fn default_broker_port() -> u16 {
    1883
}

/// Kinds of workload.
#[derive(Clone, Copy, Debug, Deserialize, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "kebab-case")]
pub enum WorkloadKind {
    /// The client sends `bytes` bytes in which every 8-byte word encodes its
    /// own offset, so the receiver can tell exactly what arrived.
    Stream,
    /// A program of the user's (`command`), started in the client's
    /// namespace against the built-in HTTP server on the server host, which
    /// serves `bytes` bytes (paced at `rate`) at every path and honours
    /// `Range: bytes=N-`. Its exit status and output are the result.
    Command,
    /// The client sends `messages` signaling messages to the server, one
    /// every `interval`, through the topology's brokers; the report counts
    /// messages delivered, lost and duplicated, and their latency.
    Signaling,
}

/// What the application does.
#[derive(Clone, Debug, Deserialize, PartialEq, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Workload {
    /// The workload kind (`stream` or `command`).
    pub kind: WorkloadKind,
    /// Total bytes (for `command`: the size of the HTTP response).
    #[serde(default)]
    pub bytes: u64,
    /// Bytes per write call.
    #[serde(default = "default_chunk")]
    pub chunk: usize,
    /// Pacing in bytes per second; absent means as fast as the path allows.
    #[serde(default)]
    pub rate: Option<u64>,
    /// For `stream`: the application goes quiet at this point of its
    /// paced stream (an idle chat, a terminal session nobody types in) and
    /// writes nothing for `pause_for`. Needs `rate`.
    #[serde(default)]
    pub pause_at: Option<Dur>,
    /// For `stream`: how long the quiet lasts (with `pause_at`).
    #[serde(default)]
    pub pause_for: Option<Dur>,
    /// For `command`: the program and its arguments. `{server}` and
    /// `{client}` become the hosts' addresses, `{port}` the server port and
    /// `{url}` `http://server:port/` (IPv6 in brackets).
    #[serde(default)]
    pub command: Vec<String>,
    /// For `signaling`: how many messages the client sends.
    #[serde(default)]
    pub messages: u64,
    /// For `signaling`: time between two messages.
    #[serde(default = "default_interval")]
    pub interval: Dur,
    /// For `signaling`: payload bytes of each message (at least 8: the
    /// message number).
    #[serde(default = "default_payload")]
    pub payload: usize,
}

fn default_chunk() -> usize {
    4096
}
fn default_interval() -> Dur {
    Dur(Duration::from_millis(20))
}
fn default_payload() -> usize {
    64
}

/// Engine policies a scenario can pair with its failure.
#[derive(Clone, Copy, Debug, Default, Deserialize, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "kebab-case")]
pub enum PolicyKind {
    /// `netmend::session`: resume the byte stream on a new transport.
    #[default]
    ResumableSession,
    /// `netmend::signal`: every message through several brokers, each
    /// delivered once.
    RedundantSignaling,
}

impl PolicyKind {
    /// The name as written in files.
    pub fn name(self) -> &'static str {
        match self {
            PolicyKind::ResumableSession => "resumable-session",
            PolicyKind::RedundantSignaling => "redundant-signaling",
        }
    }
}

/// What a command's `{output}` file must hold.
#[derive(Clone, Copy, Debug, Deserialize, Serialize, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "kebab-case")]
pub enum OutputExpectation {
    /// The whole served stream, exactly.
    Complete,
}

/// A deliberate bug the harness's own tests plant in the mitigated client.
#[derive(Clone, Copy, Debug, Deserialize, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "kebab-case")]
pub enum PlantedBug {
    /// After every odd-numbered resume the client skips one chunk of the
    /// stream: a frame lost on some resumes.
    LoseChunkOnResume,
}

/// What the naive client of a stream scenario's baseline run does besides
/// reconnecting in a loop on errors.
#[derive(Clone, Debug, Default, Deserialize, PartialEq, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Baseline {
    /// Whether it also drops its connection and reconnects on every change
    /// notification, as programs that subscribe to connectivity changes do;
    /// `false`: it knows nothing of the network, as most programs. (when
    /// absent: as the mitigation, which follows changes with `monitor =
    /// true`)
    #[serde(default)]
    pub follow_changes: Option<bool>,
    /// When it resolves the server's name: `"once"`, at start, as most
    /// programs do (when absent), or `"each-attempt"`, before every
    /// connect, as programs that connect by name in a loop do.
    #[serde(default)]
    pub resolve: Option<ResolveWhen>,
    /// A fixed deadline for what it wrote: the naive server reports the
    /// bytes it received every 100 ms, and the client takes its
    /// connection for dead (and reconnects) when a byte it wrote was not
    /// reported within this long — an application acknowledgement timeout
    /// or a heartbeat with a fixed deadline, as `TCP_USER_TIMEOUT` is in
    /// the kernel. Absent: it never looks. At least 200 ms.
    #[serde(default)]
    pub ack_timeout: Option<Dur>,
}

/// When the naive client resolves the server's name.
#[derive(Clone, Copy, Debug, Deserialize, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "kebab-case")]
pub enum ResolveWhen {
    /// Once, at start.
    Once,
    /// Before every connect.
    EachAttempt,
}

/// The engine policy of the mitigated run and its parameters.
#[derive(Clone, Debug, Default, Deserialize, PartialEq, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Mitigation {
    /// Which policy.
    pub policy: PolicyKind,
    /// Keepalive interval on an idle transport.
    #[serde(default)]
    pub keepalive_interval: Option<Dur>,
    /// Silence after which a transport counts as dead.
    #[serde(default)]
    pub dead_after: Option<Dur>,
    /// Time allowed for a transport handshake.
    #[serde(default)]
    pub handshake_timeout: Option<Dur>,
    /// Time allowed for a TCP connect.
    #[serde(default)]
    pub connect_timeout: Option<Dur>,
    /// First backoff ceiling.
    #[serde(default)]
    pub initial_backoff: Option<Dur>,
    /// Backoff cap.
    #[serde(default)]
    pub max_backoff: Option<Dur>,
    /// Reconnect attempts per outage.
    #[serde(default)]
    pub max_attempts: Option<u32>,
    /// Replay buffer size in bytes.
    #[serde(default)]
    pub replay_buffer: Option<usize>,
    /// A deliberate bug in the mitigated client, for testing the harness
    /// itself: `explore` must find it and shrink it. Never in a real
    /// scenario.
    #[serde(default)]
    pub planted_bug: Option<PlantedBug>,
    /// Follow network changes (`netmend::monitor`) and reconnect through
    /// the routability gate. The baseline of such a scenario is the naive
    /// change-aware client: it drops its connection and reconnects in a
    /// blind loop on every change notification.
    #[serde(default)]
    pub monitor: bool,
    /// Quiet time that ends a burst of changes (monitor).
    #[serde(default)]
    pub debounce: Option<Dur>,
    /// First spacing of gate probes (monitor).
    #[serde(default)]
    pub probe_interval: Option<Dur>,
    /// Cap on the spacing of gate probes (monitor).
    #[serde(default)]
    pub max_probe_interval: Option<Dur>,
    /// Time allowed for one gate probe (monitor).
    #[serde(default)]
    pub probe_timeout: Option<Dur>,
    /// Brokers each message goes through (signaling; default all).
    #[serde(default)]
    pub fanout: Option<usize>,
    /// How long a message stays worth delivering (signaling).
    #[serde(default)]
    pub ttl: Option<Dur>,
    /// Authenticate every envelope with a group key both peers share
    /// (signaling): forgeries fail their MAC.
    #[serde(default)]
    pub authenticated: bool,
    /// Sessions the server holds at once (`netmend::session::Limits`).
    #[serde(default)]
    pub max_sessions: Option<usize>,
    /// Handshakes the server runs at once (`netmend::session::Limits`).
    #[serde(default)]
    pub max_handshakes: Option<usize>,
    /// Where the engine's server keeps its sessions so they outlive its
    /// process (`netmend::store`): `embedded` (a redb file: a restart of
    /// the one process) or `redis` (shared by every instance: a fleet).
    /// Without it the server keeps them in memory.
    #[serde(default)]
    pub store: Option<StoreKind>,
}

/// Where the engine's server keeps its sessions.
#[derive(Clone, Copy, Debug, Deserialize, Serialize, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "kebab-case")]
pub enum StoreKind {
    /// `netmend::store::EmbeddedStore`: one file on the server's host.
    Embedded,
    /// `netmend::store::RedisStore`: a `redis-server` on the server's host,
    /// shared by every instance.
    Redis,
}

/// A failure symptom a run can show.
#[derive(
    Clone, Copy, Debug, Deserialize, Serialize, PartialEq, Eq, PartialOrd, Ord, JsonSchema,
)]
#[serde(rename_all = "kebab-case")]
pub enum Symptom {
    /// Bytes never arrived.
    Loss,
    /// Bytes arrived twice.
    Duplication,
    /// Bytes arrived out of order.
    Reorder,
    /// Delivery never resumed after the fault.
    Stall,
    /// Delivery resumed later than `recovery_within`.
    SlowRecovery,
    /// More connection attempts than `max_attempts`.
    Storm,
    /// Bytes arrived that are not part of the stream at all.
    Corruption,
    /// The client's session ended with an error.
    Error,
    /// An engine queue went past the bound the engine states for it.
    Overflow,
    /// A herd came back in a wave: more of its connections accepted in one
    /// 100 ms than `max_herd_peak`, or not all of it back by the end.
    Herd,
    /// The 99th percentile of message latency exceeded
    /// `latency_p99_within` (signaling).
    Late,
    /// The run left something behind (a host firewall rule).
    Residue,
}

impl Symptom {
    /// The name as written in scenario files and reports.
    pub fn name(self) -> &'static str {
        match self {
            Symptom::Loss => "loss",
            Symptom::Duplication => "duplication",
            Symptom::Reorder => "reorder",
            Symptom::Stall => "stall",
            Symptom::SlowRecovery => "slow-recovery",
            Symptom::Storm => "storm",
            Symptom::Corruption => "corruption",
            Symptom::Error => "error",
            Symptom::Overflow => "overflow",
            Symptom::Herd => "herd",
            Symptom::Late => "late",
            Symptom::Residue => "residue",
        }
    }
}

/// Expectations.
#[derive(Clone, Debug, Deserialize, PartialEq, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Expect {
    /// Symptoms the naive baseline must show (all of them; stream only).
    #[serde(default)]
    pub baseline: Vec<Symptom>,
    /// Delivery must resume within this long after the path works again.
    #[serde(default = "default_recovery_within")]
    pub recovery_within: Dur,
    /// At most this many connection attempts in the mitigated run.
    #[serde(default = "default_max_attempts")]
    pub max_attempts: u32,
    /// Signaling: the 99th percentile of message latency must stay within
    /// this (unchecked if absent).
    #[serde(default)]
    pub latency_p99_within: Option<Dur>,
    /// With a `herd`: at most this many of its connections accepted in any
    /// 100 ms after the server returns (required with a herd, refused
    /// without one).
    #[serde(default)]
    pub max_herd_peak: Option<u32>,
    /// For `command`: the exit status the program must end with.
    #[serde(default)]
    pub exit: Option<i32>,
    /// For `command`: what the program must have written to `{output}`.
    /// `"complete"`: exactly the stream the built-in server serves, every
    /// byte once and in order — an exit status alone cannot tell a
    /// download that gave up quietly from one that finished.
    #[serde(default)]
    pub output: Option<OutputExpectation>,
    /// Each run is cut off after this much (virtual) time.
    #[serde(default = "default_deadline")]
    pub deadline: Dur,
}

fn default_recovery_within() -> Dur {
    Dur(std::time::Duration::from_secs(5))
}
fn default_max_attempts() -> u32 {
    10
}
fn default_deadline() -> Dur {
    Dur(std::time::Duration::from_secs(60))
}

/// Per-backend notes.
#[derive(Clone, Debug, Default, Deserialize, PartialEq, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Backends {
    /// How the simulated backend models the faults.
    #[serde(default)]
    pub sim: Option<BackendNote>,
    /// How the real-kernel backend models them.
    #[serde(default)]
    pub netns: Option<BackendNote>,
}

/// What one backend does with the scenario.
#[derive(Clone, Debug, Default, Deserialize, PartialEq, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct BackendNote {
    /// How the faults are made on this backend.
    #[serde(default)]
    pub note: Option<String>,
    /// Set when the backend cannot express this scenario; the reason is reported.
    #[serde(default)]
    pub unsupported: Option<String>,
}
