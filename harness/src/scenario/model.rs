//! What a scenario file says. Every struct refuses unknown fields.

use super::duration::Dur;
use serde::{Deserialize, Serialize};
use std::time::Duration;

/// One failure case: topology, workload, fault schedule, mitigation, expectations.
#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Scenario {
    /// Unique id, also the file stem by convention.
    pub id: String,
    /// The catalog entry this scenario reproduces.
    pub catalog: String,
    /// One sentence for humans.
    pub description: String,
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
    /// How the baseline must fail and what the mitigated run must hold.
    pub expect: Expect,
    /// Per-backend notes: what a backend models differently, or cannot express.
    #[serde(default)]
    pub backends: Backends,
}

/// Client and server joined by one path through a middlebox, where faults act.
#[derive(Clone, Debug, Deserialize, PartialEq)]
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
#[derive(Clone, Copy, Debug, Default, Deserialize, Serialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum IpVersion {
    /// IPv4 (198.18.0.0/15 on netns).
    #[default]
    Ipv4,
    /// IPv6 (2001:db8::/32 on netns).
    Ipv6,
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
#[derive(Clone, Copy, Debug, Deserialize, PartialEq, Eq)]
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
#[derive(Clone, Debug, Deserialize, PartialEq)]
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

/// Which traffic a path fault hits.
#[derive(Clone, Copy, Debug, Deserialize, Serialize, PartialEq, Eq, Default)]
#[serde(rename_all = "kebab-case")]
pub enum Direction {
    /// Both directions.
    #[default]
    Both,
    /// Client to server only.
    ClientToServer,
    /// Server to client only.
    ServerToClient,
}

/// A host of the scenario's topology, for faults that act on one host.
#[derive(Clone, Copy, Debug, Default, Deserialize, Serialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum HostRole {
    /// The client.
    #[default]
    Client,
    /// The server.
    Server,
}

/// One scheduled fault.
#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(try_from = "RawFault")]
pub enum Fault {
    /// The middlebox resets every established connection; both endpoints
    /// stay alive and new connections work at once. On sim both ends get
    /// their RST at once; on netns the router answers each later segment of
    /// an old flow with a RST to its sender, so a side that only receives
    /// hears of it when it next sends (an ACK, a keepalive probe).
    Reset {
        /// When.
        at: Dur,
    },
    /// The middlebox silently drops everything for `duration` and forgets the
    /// flows it carried: no RST, old connections stay half-open forever,
    /// new connections work once it heals.
    Blackhole {
        /// When.
        at: Dur,
        /// For how long.
        duration: Dur,
    },
    /// The client's link to the middlebox loses every packet for `duration`
    /// (one way or both), then carries traffic again.
    Partition {
        /// When.
        at: Dur,
        /// For how long.
        duration: Dur,
        /// Which way.
        #[serde(default)]
        direction: Direction,
    },
    /// Every hop's one-way latency becomes `latency`, each packet's drawn
    /// from `latency ± jitter` (for `duration`, or until the end).
    Latency {
        /// When.
        at: Dur,
        /// New one-way latency per hop.
        latency: Dur,
        /// Spread around `latency`; zero when absent.
        jitter: Option<Dur>,
        /// For how long; absent means until the end.
        duration: Option<Dur>,
    },
    /// The path drops each packet with probability `probability`.
    Loss {
        /// When.
        at: Dur,
        /// Share of packets dropped, 0 to 1.
        probability: f64,
        /// For how long; absent means until the end.
        duration: Option<Dur>,
    },
    /// The path carries at most `rate` bytes per second each way (a token
    /// bucket at the middlebox).
    Bandwidth {
        /// When.
        at: Dur,
        /// Bytes per second.
        rate: u64,
        /// For how long; absent means until the end.
        duration: Option<Dur>,
    },
    /// The host loses carrier on its link for `duration` (the far end of
    /// its cable goes down), then gets it back.
    LinkDown {
        /// When.
        at: Dur,
        /// For how long.
        duration: Dur,
        /// Whose link.
        host: HostRole,
    },
    /// The host's address is replaced by another one on the same link
    /// (a DHCP renumbering): connections bound to the old address are dead.
    AddressChange {
        /// When.
        at: Dur,
        /// Which host.
        host: HostRole,
    },
    /// The host's default routes disappear for `duration`, then come back.
    RouteLoss {
        /// When.
        at: Dur,
        /// For how long.
        duration: Dur,
        /// Which host.
        host: HostRole,
    },
    /// The client's default route moves from its first NIC to a second one
    /// with a new address, and the first NIC goes away (Wi-Fi to Ethernet,
    /// a new access network). With `routable_after`, addresses and routes
    /// are right at once but traffic over the new NIC is dropped for that
    /// long (a network that needs seconds before it carries traffic).
    NicSwap {
        /// When.
        at: Dur,
        /// How long the new path drops traffic after the swap.
        routable_after: Option<Dur>,
        /// How long the new network's gateway intercepts TCP after the
        /// swap: a captive portal accepts every connection, answers with an
        /// HTTP redirect and closes it; then the real server is reachable.
        captive_for: Option<Dur>,
    },
    /// The client's default gateway changes on the same interface (router
    /// failover, a DHCP renewal naming another router); the new gateway has
    /// no state for flows the old one carried.
    GatewayChange {
        /// When.
        at: Dur,
        /// How long the new gateway drops traffic after the change.
        routable_after: Option<Dur>,
        /// How long the new gateway intercepts TCP (see [`Fault::NicSwap`]).
        captive_for: Option<Dur>,
    },
    /// The client's carrier drops and returns `count` times, one flap every
    /// `period` (down for half of it).
    LinkFlap {
        /// When the first flap starts.
        at: Dur,
        /// Flaps.
        count: u32,
        /// Length of one flap.
        period: Dur,
    },
    /// Signaling broker `broker` crashes: its process dies with every
    /// connection, subscription and message in flight (a real broker with
    /// persistence off). After `duration` it starts again, empty; without
    /// one it stays down.
    BrokerDown {
        /// When.
        at: Dur,
        /// Which broker (index into the topology's brokers).
        broker: u8,
        /// How long until it restarts.
        duration: Option<Dur>,
    },
    /// Broker `broker` crashes and restarts empty `count` times, one flap
    /// every `period` (down for half of it).
    BrokerFlap {
        /// When the first crash happens.
        at: Dur,
        /// Which broker.
        broker: u8,
        /// Flaps.
        count: u32,
        /// Length of one flap.
        period: Dur,
    },
    /// Broker `broker` freezes (SIGSTOP) for `duration`: its connections
    /// stay open and look alive until a keepalive says otherwise, what it
    /// is sent waits, and it delivers late when it thaws (SIGCONT).
    BrokerFreeze {
        /// When.
        at: Dur,
        /// Which broker.
        broker: u8,
        /// How long it stays frozen.
        duration: Dur,
    },
    /// Traffic between `host` (or, without one, both peers) and broker
    /// `broker` is dropped for `duration`, as by a firewall on the port:
    /// nothing is refused, TCP retransmits into silence.
    BrokerBlock {
        /// When.
        at: Dur,
        /// Which broker.
        broker: u8,
        /// Which peer is cut off from it (both if none).
        host: Option<HostRole>,
        /// How long.
        duration: Dur,
    },
    /// A hostile publisher on the receiver's topic, through broker
    /// `broker`: it records what it sees there from the start, and at `at`
    /// publishes `count` forgeries — replays of genuine envelopes, the real
    /// sender's id with huge sequence numbers, foreign ids, altered bytes
    /// and garbage.
    ForgedPublish {
        /// When it publishes.
        at: Dur,
        /// Through which broker.
        broker: u8,
        /// How many forgeries.
        count: u32,
    },
    /// A flood against the session server, from `at`: `count` clients,
    /// spread over one second, each opening a session and vanishing, and
    /// `trickle` clients sending a handshake one byte every 200 ms. The
    /// scenario's baseline is the engine's server without admission limits
    /// (its client the engine's too); the mitigated run holds the limits of
    /// `[mitigation]`, and the report shows the peak of sessions held
    /// against `max_sessions`.
    SessionFlood {
        /// When it starts.
        at: Dur,
        /// Hit-and-run clients.
        count: u32,
        /// Trickling handshakes.
        trickle: u32,
    },
}

impl Fault {
    /// When the fault starts.
    pub fn at(&self) -> Dur {
        match self {
            Fault::Reset { at }
            | Fault::Blackhole { at, .. }
            | Fault::Partition { at, .. }
            | Fault::Latency { at, .. }
            | Fault::Loss { at, .. }
            | Fault::Bandwidth { at, .. }
            | Fault::LinkDown { at, .. }
            | Fault::AddressChange { at, .. }
            | Fault::RouteLoss { at, .. }
            | Fault::NicSwap { at, .. }
            | Fault::GatewayChange { at, .. }
            | Fault::LinkFlap { at, .. }
            | Fault::BrokerDown { at, .. }
            | Fault::BrokerFlap { at, .. }
            | Fault::BrokerFreeze { at, .. }
            | Fault::BrokerBlock { at, .. }
            | Fault::ForgedPublish { at, .. }
            | Fault::SessionFlood { at, .. } => *at,
        }
    }

    /// How long it lasts; `None` for instantaneous or open-ended faults.
    pub fn duration(&self) -> Option<Dur> {
        match self {
            Fault::Reset { .. }
            | Fault::AddressChange { .. }
            | Fault::ForgedPublish { .. }
            | Fault::SessionFlood { .. } => None,
            Fault::BrokerFreeze { duration, .. } | Fault::BrokerBlock { duration, .. } => {
                Some(*duration)
            }
            Fault::BrokerFlap { count, period, .. } => Some(Dur(period.0 * *count)),
            Fault::Blackhole { duration, .. }
            | Fault::Partition { duration, .. }
            | Fault::LinkDown { duration, .. }
            | Fault::RouteLoss { duration, .. } => Some(*duration),
            Fault::Latency { duration, .. }
            | Fault::Loss { duration, .. }
            | Fault::Bandwidth { duration, .. }
            | Fault::BrokerDown { duration, .. } => *duration,
            Fault::NicSwap {
                routable_after,
                captive_for,
                ..
            }
            | Fault::GatewayChange {
                routable_after,
                captive_for,
                ..
            } => routable_after.or(*captive_for),
            Fault::LinkFlap { count, period, .. } => Some(Dur(period.0 * *count)),
        }
    }

    /// When the path works again (for instantaneous faults, when it hit).
    pub fn healed_at(&self) -> Dur {
        Dur(self.at().0 + self.duration().map(|d| d.0).unwrap_or_default())
    }

    /// Short name, as in the file.
    pub fn kind(&self) -> &'static str {
        match self {
            Fault::Reset { .. } => "reset",
            Fault::Blackhole { .. } => "blackhole",
            Fault::Partition { .. } => "partition",
            Fault::Latency { .. } => "latency",
            Fault::Loss { .. } => "loss",
            Fault::Bandwidth { .. } => "bandwidth",
            Fault::LinkDown { .. } => "link-down",
            Fault::AddressChange { .. } => "address-change",
            Fault::RouteLoss { .. } => "route-loss",
            Fault::NicSwap { .. } => "nic-swap",
            Fault::GatewayChange { .. } => "gateway-change",
            Fault::LinkFlap { .. } => "link-flap",
            Fault::BrokerDown { .. } => "broker-down",
            Fault::BrokerFlap { .. } => "broker-flap",
            Fault::BrokerFreeze { .. } => "broker-freeze",
            Fault::BrokerBlock { .. } => "broker-block",
            Fault::ForgedPublish { .. } => "forged-publish",
            Fault::SessionFlood { .. } => "session-flood",
        }
    }

    /// The broker a signaling fault acts on (`None` for path faults).
    pub fn broker(&self) -> Option<u8> {
        match self {
            Fault::BrokerDown { broker, .. }
            | Fault::BrokerFlap { broker, .. }
            | Fault::BrokerFreeze { broker, .. }
            | Fault::BrokerBlock { broker, .. }
            | Fault::ForgedPublish { broker, .. } => Some(*broker),
            _ => None,
        }
    }
}

/// Engine policies a scenario can pair with its failure.
#[derive(Clone, Copy, Debug, Default, Deserialize, PartialEq, Eq)]
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
#[derive(Clone, Copy, Debug, Deserialize, Serialize, PartialEq, Eq)]
#[serde(rename_all = "kebab-case")]
pub enum OutputExpectation {
    /// The whole served stream, exactly.
    Complete,
}

/// A deliberate bug the harness's own tests plant in the mitigated client.
#[derive(Clone, Copy, Debug, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "kebab-case")]
pub enum PlantedBug {
    /// After every odd-numbered resume the client skips one chunk of the
    /// stream: a frame lost on some resumes.
    LoseChunkOnResume,
}

/// The engine policy of the mitigated run and its parameters.
#[derive(Clone, Debug, Default, Deserialize, PartialEq)]
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
}

/// A failure symptom a run can show.
#[derive(Clone, Copy, Debug, Deserialize, Serialize, PartialEq, Eq, PartialOrd, Ord)]
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
    /// The 99th percentile of message latency exceeded
    /// `latency_p99_within` (signaling).
    Late,
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
            Symptom::Late => "late",
        }
    }
}

/// Expectations.
#[derive(Clone, Debug, Deserialize, PartialEq)]
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
#[derive(Clone, Debug, Default, Deserialize, PartialEq)]
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
#[derive(Clone, Debug, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct BackendNote {
    /// How the faults are made on this backend.
    #[serde(default)]
    pub note: Option<String>,
    /// Set when the backend cannot express this scenario; the reason is reported.
    #[serde(default)]
    pub unsupported: Option<String>,
}

/// Kinds of fault, as written in `kind = "…"`.
#[derive(Clone, Copy, Debug, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "kebab-case")]
pub enum FaultKind {
    /// See [`Fault::Reset`].
    Reset,
    /// See [`Fault::Blackhole`].
    Blackhole,
    /// See [`Fault::Partition`].
    Partition,
    /// See [`Fault::Latency`].
    Latency,
    /// See [`Fault::Loss`].
    Loss,
    /// See [`Fault::Bandwidth`].
    Bandwidth,
    /// See [`Fault::LinkDown`].
    LinkDown,
    /// See [`Fault::AddressChange`].
    AddressChange,
    /// See [`Fault::RouteLoss`].
    RouteLoss,
    /// See [`Fault::NicSwap`].
    NicSwap,
    /// See [`Fault::GatewayChange`].
    GatewayChange,
    /// See [`Fault::LinkFlap`].
    LinkFlap,
    /// See [`Fault::BrokerDown`].
    BrokerDown,
    /// See [`Fault::BrokerFlap`].
    BrokerFlap,
    /// See [`Fault::BrokerFreeze`].
    BrokerFreeze,
    /// See [`Fault::BrokerBlock`].
    BrokerBlock,
    /// See [`Fault::ForgedPublish`].
    ForgedPublish,
    /// See [`Fault::SessionFlood`].
    SessionFlood,
}

impl FaultKind {
    /// The name as written in files.
    pub fn name(self) -> &'static str {
        match self {
            FaultKind::Reset => "reset",
            FaultKind::Blackhole => "blackhole",
            FaultKind::Partition => "partition",
            FaultKind::Latency => "latency",
            FaultKind::Loss => "loss",
            FaultKind::Bandwidth => "bandwidth",
            FaultKind::LinkDown => "link-down",
            FaultKind::AddressChange => "address-change",
            FaultKind::RouteLoss => "route-loss",
            FaultKind::NicSwap => "nic-swap",
            FaultKind::GatewayChange => "gateway-change",
            FaultKind::LinkFlap => "link-flap",
            FaultKind::BrokerDown => "broker-down",
            FaultKind::BrokerFlap => "broker-flap",
            FaultKind::BrokerFreeze => "broker-freeze",
            FaultKind::BrokerBlock => "broker-block",
            FaultKind::ForgedPublish => "forged-publish",
            FaultKind::SessionFlood => "session-flood",
        }
    }
}

/// A fault as written: one flat table, so that every field error carries its
/// exact path and position (serde's tagged enums buffer and lose both).
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawFault {
    kind: FaultKind,
    at: Dur,
    #[serde(default)]
    duration: Option<Dur>,
    #[serde(default)]
    direction: Option<Direction>,
    #[serde(default)]
    latency: Option<Dur>,
    #[serde(default)]
    jitter: Option<Dur>,
    #[serde(default)]
    probability: Option<f64>,
    #[serde(default)]
    rate: Option<u64>,
    #[serde(default)]
    host: Option<HostRole>,
    #[serde(default)]
    routable_after: Option<Dur>,
    #[serde(default)]
    captive_for: Option<Dur>,
    #[serde(default)]
    count: Option<u32>,
    #[serde(default)]
    period: Option<Dur>,
    #[serde(default)]
    broker: Option<u8>,
    #[serde(default)]
    trickle: Option<u32>,
}

impl TryFrom<RawFault> for Fault {
    type Error = String;

    fn try_from(r: RawFault) -> Result<Self, String> {
        use FaultKind as K;
        let kind = r.kind.name();
        let need = |field: &str| format!("a {kind} fault needs `{field}`");
        // Which optional fields each kind takes.
        let takes = |field: &str| match field {
            "duration" => !matches!(
                r.kind,
                K::Reset
                    | K::AddressChange
                    | K::NicSwap
                    | K::GatewayChange
                    | K::LinkFlap
                    | K::BrokerFlap
                    | K::ForgedPublish
                    | K::SessionFlood
            ),
            "broker" => matches!(
                r.kind,
                K::BrokerDown | K::BrokerFlap | K::BrokerFreeze | K::BrokerBlock | K::ForgedPublish
            ),
            "routable_after" | "captive_for" => matches!(r.kind, K::NicSwap | K::GatewayChange),
            "count" => matches!(
                r.kind,
                K::LinkFlap | K::BrokerFlap | K::ForgedPublish | K::SessionFlood
            ),
            "trickle" => r.kind == K::SessionFlood,
            "period" => matches!(r.kind, K::LinkFlap | K::BrokerFlap),
            "direction" => r.kind == K::Partition,
            "latency" | "jitter" => r.kind == K::Latency,
            "probability" => r.kind == K::Loss,
            "rate" => r.kind == K::Bandwidth,
            "host" => matches!(
                r.kind,
                K::LinkDown | K::AddressChange | K::RouteLoss | K::BrokerBlock
            ),
            _ => false,
        };
        let given = [
            ("duration", r.duration.is_some()),
            ("direction", r.direction.is_some()),
            ("latency", r.latency.is_some()),
            ("jitter", r.jitter.is_some()),
            ("probability", r.probability.is_some()),
            ("rate", r.rate.is_some()),
            ("host", r.host.is_some()),
            ("routable_after", r.routable_after.is_some()),
            ("captive_for", r.captive_for.is_some()),
            ("count", r.count.is_some()),
            ("period", r.period.is_some()),
            ("broker", r.broker.is_some()),
            ("trickle", r.trickle.is_some()),
        ];
        if let Some((field, _)) = given.iter().find(|(f, set)| *set && !takes(f)) {
            return Err(format!("`{field}` does not apply to a {kind} fault"));
        }
        let positive = |d: Option<Dur>| match d {
            Some(d) if d.0 > Duration::ZERO => Ok(d),
            Some(_) => Err("`duration` must be positive".to_string()),
            None => Err(need("duration")),
        };
        let open_ended = |d: Option<Dur>| match d {
            Some(d) if d.0.is_zero() => Err("`duration` must be positive".to_string()),
            d => Ok(d),
        };
        let host = r.host.unwrap_or_default();
        Ok(match r.kind {
            K::Reset => Fault::Reset { at: r.at },
            K::Blackhole => Fault::Blackhole {
                at: r.at,
                duration: positive(r.duration)?,
            },
            K::Partition => Fault::Partition {
                at: r.at,
                duration: positive(r.duration)?,
                direction: r.direction.unwrap_or_default(),
            },
            K::Latency => Fault::Latency {
                at: r.at,
                latency: r.latency.ok_or_else(|| need("latency"))?,
                jitter: r.jitter,
                duration: open_ended(r.duration)?,
            },
            K::Loss => {
                let p = r.probability.ok_or_else(|| need("probability"))?;
                if !(0.0..=1.0).contains(&p) {
                    return Err("`probability` must be between 0 and 1".into());
                }
                Fault::Loss {
                    at: r.at,
                    probability: p,
                    duration: open_ended(r.duration)?,
                }
            }
            K::Bandwidth => {
                let rate = r.rate.ok_or_else(|| need("rate"))?;
                if rate < 1024 {
                    return Err("`rate` must be at least 1024 bytes per second".into());
                }
                Fault::Bandwidth {
                    at: r.at,
                    rate,
                    duration: open_ended(r.duration)?,
                }
            }
            K::LinkDown => Fault::LinkDown {
                at: r.at,
                duration: positive(r.duration)?,
                host,
            },
            K::AddressChange => Fault::AddressChange { at: r.at, host },
            K::RouteLoss => Fault::RouteLoss {
                at: r.at,
                duration: positive(r.duration)?,
                host,
            },
            K::NicSwap | K::GatewayChange => {
                if r.routable_after.is_some() && r.captive_for.is_some() {
                    return Err(format!(
                        "a {kind} fault takes `routable_after` or `captive_for`, not both"
                    ));
                }
                if r.captive_for.is_some_and(|d| d.0.is_zero()) {
                    return Err("`captive_for` must be positive".into());
                }
                if r.kind == K::NicSwap {
                    Fault::NicSwap {
                        at: r.at,
                        routable_after: r.routable_after,
                        captive_for: r.captive_for,
                    }
                } else {
                    Fault::GatewayChange {
                        at: r.at,
                        routable_after: r.routable_after,
                        captive_for: r.captive_for,
                    }
                }
            }
            K::LinkFlap | K::BrokerFlap => {
                let count = r.count.ok_or_else(|| need("count"))?;
                let period = r.period.ok_or_else(|| need("period"))?;
                if count == 0 || count > 100 {
                    return Err("`count` must be between 1 and 100".into());
                }
                if period.0 < Duration::from_millis(2) {
                    return Err("`period` must be at least 2ms".into());
                }
                match r.broker {
                    Some(broker) => Fault::BrokerFlap {
                        at: r.at,
                        broker,
                        count,
                        period,
                    },
                    None if r.kind == K::BrokerFlap => return Err(need("broker")),
                    None => Fault::LinkFlap {
                        at: r.at,
                        count,
                        period,
                    },
                }
            }
            K::BrokerFreeze => Fault::BrokerFreeze {
                at: r.at,
                broker: r.broker.ok_or_else(|| need("broker"))?,
                duration: positive(r.duration)?,
            },
            K::BrokerBlock => Fault::BrokerBlock {
                at: r.at,
                broker: r.broker.ok_or_else(|| need("broker"))?,
                host: r.host,
                duration: positive(r.duration)?,
            },
            K::SessionFlood => {
                let count = r.count.ok_or_else(|| need("count"))?;
                let trickle = r.trickle.unwrap_or(0);
                if count > 100_000 || trickle > 10_000 {
                    return Err(
                        "a session flood takes at most 100000 clients and 10000 trickling ones"
                            .into(),
                    );
                }
                Fault::SessionFlood {
                    at: r.at,
                    count,
                    trickle,
                }
            }
            K::ForgedPublish => {
                let count = r.count.ok_or_else(|| need("count"))?;
                if count == 0 || count > 100_000 {
                    return Err("`count` must be between 1 and 100000".into());
                }
                Fault::ForgedPublish {
                    at: r.at,
                    broker: r.broker.ok_or_else(|| need("broker"))?,
                    count,
                }
            }
            K::BrokerDown => Fault::BrokerDown {
                at: r.at,
                broker: r.broker.ok_or_else(|| need("broker"))?,
                duration: open_ended(r.duration)?,
            },
        })
    }
}
