//! The plan of a stream scenario: the bytes the client sends, the engine's
//! tunables, the programs each variant runs, and the floods against the
//! server.

use super::Variant;
use crate::fault::{Fault, FirewallFlavour, Herd, SessionFlood};
use crate::scenario::{ResolveWhen, Scenario, StoreKind};
use crate::workload::programs::{MitigationSpec, StreamSpec};
use crate::workload::Tap;
use netmend::gate::GateConfig;
use netmend::monitor::Debounce;
use netmend::session::{Config, Limits};
use netmend::Policy;
use std::time::Duration;

/// Everything a stream run needs besides its world.
#[derive(Clone, Debug)]
pub struct StreamPlan {
    /// What the client sends, to which host and port.
    pub spec: StreamSpec,
    /// The engine's tunables (mitigated programs).
    pub mitigation: MitigationSpec,
    /// The session floods against the server: when each starts, its
    /// hit-and-run clients and its trickling handshakes.
    pub floods: Vec<(Duration, u32, u32)>,
    /// The herd of clients beside the stream's, if any (boxed: most
    /// scenarios have none).
    pub herd: Option<Box<HerdPlan>>,
    /// When the client's process is replaced by a new one (real processes:
    /// netns only).
    pub restarts: Vec<Duration>,
    /// When the server's processes die (real processes: netns only);
    /// `None`: the server is a task of the run that lives to its end.
    pub servers: Option<ServerEvents>,
    /// Where the engine's server keeps its sessions (`[mitigation] store`).
    pub store: Option<StoreKind>,
    /// The host firewall the server's host has from the start, if any.
    pub host_firewall: Option<FirewallFlavour>,
    /// Bytes the server has received so far in the current run (a
    /// progress display reads it; the runner zeroes it before each run).
    pub received: Tap,
    baseline: Programs,
    mitigated: Programs,
}

impl StreamPlan {
    /// The plan of `s`, its engine jittered by `seed`.
    pub fn of(s: &Scenario, seed: u64) -> StreamPlan {
        let mitigation = mitigation_spec(s, seed);
        let herd = herd(s, &mitigation);
        StreamPlan {
            spec: StreamSpec {
                host: s.topology.server.clone(),
                port: s.topology.port,
                total: s.workload.bytes,
                chunk: s.workload.chunk,
                rate: s.workload.rate,
                pause: s
                    .workload
                    .pause_at
                    .zip(s.workload.pause_for)
                    .map(|(a, f)| (a.0, f.0)),
                connect_timeout: mitigation.config.connect_timeout,
                follow_changes: baseline_follows(s),
                resolve_each_attempt: s.baseline.resolve == Some(ResolveWhen::EachAttempt),
                ack_timeout: s.baseline.ack_timeout.map(|d| d.0),
            },
            mitigation,
            floods: floods(s),
            herd,
            restarts: s
                .faults
                .iter()
                .filter_map(|f| match f {
                    Fault::ProcessRestart(r) => Some(r.at.0),
                    _ => None,
                })
                .collect(),
            servers: server_events(s),
            store: s.mitigation.as_ref().and_then(|m| m.store),
            host_firewall: s.faults.iter().find_map(|f| match f {
                Fault::HostFirewall(h) => Some(h.firewall),
                _ => None,
            }),
            received: Tap::default(),
            baseline: programs(s, Variant::Baseline),
            mitigated: programs(s, Variant::Mitigated),
        }
    }

    /// The programs of `variant`.
    pub fn programs(&self, variant: Variant) -> Programs {
        match variant {
            Variant::Baseline => self.baseline,
            Variant::Mitigated => self.mitigated,
            Variant::Peer(peer) => Programs::of_peer(peer),
        }
    }
}

/// A herd of clients holding connections to the server's herd port.
#[derive(Clone, Debug)]
pub struct HerdPlan {
    /// When the clients start arriving (over one second).
    pub at: Duration,
    /// How many.
    pub count: u32,
    /// The server's herd port (the scenario's port + 1).
    pub port: u16,
    /// The mitigated run's clients' reconnect policy (the scenario's, never
    /// giving up within the run).
    pub policy: Policy,
    /// Time allowed for one connect.
    pub connect_timeout: Duration,
    /// Seeds the mitigated clients' jitter (client `i`: `seed + i`).
    pub seed: u64,
}

fn herd(s: &Scenario, m: &MitigationSpec) -> Option<Box<HerdPlan>> {
    let Herd { at, count } = s.faults.iter().find_map(|f| match f {
        Fault::Herd(h) => Some(h.clone()),
        _ => None,
    })?;
    let mut policy = m.policy.clone();
    policy.max_attempts = None;
    policy.max_outage = None;
    Some(Box::new(HerdPlan {
        at: at.0,
        count,
        port: s.topology.port.wrapping_add(1),
        policy,
        connect_timeout: m.config.connect_timeout,
        seed: m.seed.wrapping_mul(0x9e37_79b9_7f4a_7c15),
    }))
}

/// When the server's processes die.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ServerEvents {
    /// `(when killed, how long until its successor starts)`.
    pub restarts: Vec<(Duration, Duration)>,
    /// When the first of two instances behind a load balancer dies for
    /// good.
    pub failover: Option<Duration>,
}

fn server_events(s: &Scenario) -> Option<ServerEvents> {
    let mut events = ServerEvents::default();
    for f in &s.faults {
        match f {
            Fault::ServerRestart(r) => events.restarts.push((r.at.0, r.duration.0)),
            Fault::ServerFailover(f) => events.failover = Some(f.at.0),
            _ => {}
        }
    }
    (events != ServerEvents::default()).then_some(events)
}

/// The engine parameters the scenario's mitigation section asks for.
fn mitigation_spec(s: &Scenario, seed: u64) -> MitigationSpec {
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
    /// The server asks the host firewall for its port when it starts
    /// (`netmend::firewall`; the engine's server behind a host firewall).
    pub open_firewall: bool,
    /// The naive server reports what it received
    /// ([`crate::workload::programs::REPORT_EVERY`]), for a naive client
    /// with an acknowledgement timeout.
    pub report_progress: bool,
    /// A peer's client and server run instead of all of the above.
    pub peer: Option<super::Peer>,
}

impl Programs {
    /// The peer's own client and server, nothing of the engine's.
    fn of_peer(peer: super::Peer) -> Programs {
        Programs {
            engine_client: false,
            engine_server: None,
            watch_sessions: None,
            open_firewall: false,
            report_progress: false,
            peer: Some(peer),
        }
    }
}

/// The programs of `s`'s `variant`. Usually the naive client and server
/// against the engine's; a scenario with a session flood compares servers
/// instead — the engine's without admission limits against the engine's
/// within `[mitigation]`'s — with the engine's client in both.
fn programs(s: &Scenario, variant: Variant) -> Programs {
    let m = s.mitigation.clone().unwrap_or_default();
    let mut limits = Limits::default();
    limits.max_sessions = m.max_sessions.unwrap_or(limits.max_sessions);
    limits.max_handshakes = m.max_handshakes.unwrap_or(limits.max_handshakes);
    let flood = s.faults.iter().any(|f| matches!(f, Fault::SessionFlood(_)));
    let walled = s.faults.iter().any(|f| matches!(f, Fault::HostFirewall(_)));
    let mut chosen = match (variant, flood) {
        (Variant::Baseline, false) => Programs {
            engine_client: false,
            engine_server: None,
            watch_sessions: None,
            open_firewall: false,
            report_progress: false,
            peer: None,
        },
        (Variant::Mitigated, false) => Programs {
            engine_client: true,
            engine_server: Some(limits),
            watch_sessions: None,
            open_firewall: false,
            report_progress: false,
            peer: None,
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
                open_firewall: false,
                report_progress: false,
                peer: None,
            }
        }
        (Variant::Peer(peer), _) => return Programs::of_peer(peer),
        (Variant::Mitigated, true) => Programs {
            engine_client: true,
            engine_server: Some(limits),
            watch_sessions: Some(limits.max_sessions as u64),
            open_firewall: false,
            report_progress: false,
            peer: None,
        },
    };
    chosen.open_firewall = walled && variant == Variant::Mitigated;
    chosen.report_progress = s.baseline.ack_timeout.is_some() && chosen.engine_server.is_none();
    chosen
}

/// The session floods of `s`: when each starts, its hit-and-run clients
/// and its trickling handshakes.
fn floods(s: &Scenario) -> Vec<(Duration, u32, u32)> {
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

/// How the naive client of `s` behaves: it follows change notifications
/// when `[baseline] follow_changes` says so, else when the scenario's
/// engine policy does; with the engine's debounce, or the default one.
fn baseline_follows(s: &Scenario) -> Option<Debounce> {
    let follow = follow_spec(s).map(|(d, _)| d);
    match s.baseline.follow_changes {
        None => follow,
        Some(false) => None,
        Some(true) => Some(follow.unwrap_or_default()),
    }
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

#[cfg(test)]
mod tests {
    use super::*;

    fn scenario(extra: &str) -> Scenario {
        let text = format!(
            "id = \"s\"\ncatalog = \"nic-swap\"\ndescription = \"d\"\n[topology]\n\
             [workload]\nkind = \"stream\"\nbytes = 8\nchunk = 8\n{extra}\n\
             [expect]\nbaseline = [\"loss\"]\nrecovery_within = \"1s\"\nmax_attempts = 3\ndeadline = \"5s\"\n"
        );
        crate::scenario::parse(std::path::Path::new("s.toml"), &text).unwrap()
    }

    #[test]
    fn the_naive_client_follows_changes_as_the_baseline_table_says() {
        let monitored =
            "[mitigation]\npolicy = \"resumable-session\"\nmonitor = true\ndebounce = \"70ms\"\n";
        let plain = "[mitigation]\npolicy = \"resumable-session\"\n";
        let follows = |extra: &str| baseline_follows(&scenario(extra));
        // By default, as the engine's policy: with its debounce.
        assert_eq!(
            follows(monitored).map(|d| d.quiet),
            Some(Duration::from_millis(70))
        );
        assert_eq!(follows(plain), None);
        // Said outright, either way.
        let off = format!("[baseline]\nfollow_changes = false\n{monitored}");
        assert_eq!(follows(&off), None);
        let on = format!("[baseline]\nfollow_changes = true\n{plain}");
        assert_eq!(follows(&on), Some(Debounce::default()));
    }
}
