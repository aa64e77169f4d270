//! The plan of a signaling scenario: the messages, the engine's tunables
//! and the hostile publishers.

use crate::fault::{ClockSkew, Fault, ForgedPublish, HostRole};
use crate::scenario::Scenario;
use crate::workload::signaling::{SignalingSpec, WallClock};
use crate::workload::Tap;
use netmend::signal::{LinkConfig, SignalConfig, SignalKey};
use netmend::Policy;
use std::time::Duration;

/// Everything a signaling run needs besides its brokers.
#[derive(Clone, Debug)]
pub struct SignalingPlan {
    /// The workload.
    pub spec: SignalingSpec,
    /// The engine's signaling tunables (mitigated run).
    pub config: SignalConfig,
    /// Broker connection tunables of the sender and the receiver
    /// (mitigated run; each with its own seed).
    pub links: [LinkConfig; 2],
    /// The hostile publishers: for each broker, when and how many
    /// forgeries it publishes.
    pub attacks: Vec<(u8, Vec<(Duration, u32)>)>,
    /// Messages the receiver has taken so far in the current run (a
    /// progress display reads it; the runner zeroes it before each run).
    pub received: Tap,
}

impl SignalingPlan {
    /// The signaling workload and policy of `s`, its links jittered by `seed`.
    pub fn of(s: &Scenario, seed: u64) -> SignalingPlan {
        let m = s.mitigation.clone().unwrap_or_default();
        let w = &s.workload;
        let connect_timeout = m.connect_timeout.map_or(Duration::from_secs(2), |d| d.0);
        let d = SignalConfig::default();
        let config = SignalConfig {
            fanout: m.fanout.unwrap_or(usize::from(s.topology.brokers)),
            ttl: m.ttl.map_or(d.ttl, |t| t.0),
            // The group key both peers were given (derived from the seed: the
            // run replays exactly; the forger never learns it).
            key: m.authenticated.then(|| {
                let mut k = [0u8; 32];
                k[..8].copy_from_slice(&seed.to_be_bytes());
                k[8..16].copy_from_slice(b"groupkey");
                SignalKey::from_bytes(k)
            }),
            ..d
        };
        let l = LinkConfig::default();
        let mut policy: Policy = l.policy.clone();
        policy.initial_delay = m.initial_backoff.map_or(l.policy.initial_delay, |v| v.0);
        policy.max_delay = m.max_backoff.map_or(l.policy.max_delay, |v| v.0);
        let (sender_clock, receiver_clock) =
            (clock(s, HostRole::Client), clock(s, HostRole::Server));
        // The endpoint reads its wall clock once, when it starts (at the
        // start of the run): a later step passes it by.
        let link = |seed, clock: &WallClock| LinkConfig {
            policy: policy.clone(),
            connect_timeout,
            seed: Some(seed),
            wall_clock: Some(clock.system_time(Duration::ZERO)),
        };
        SignalingPlan {
            spec: SignalingSpec {
                messages: w.messages,
                interval: w.interval.0,
                payload: w.payload,
                connect_timeout,
                settle: s.expect.recovery_within.0,
                ttl: config.ttl,
                sender_clock: sender_clock.clone(),
                receiver_clock: receiver_clock.clone(),
            },
            config,
            links: [
                link(seed, &sender_clock),
                link(seed.wrapping_add(1), &receiver_clock),
            ],
            attacks: attacks(s),
            received: Tap::default(),
        }
    }
}

/// The wall clock of the peer on `host` (the sender on the client, the
/// receiver on the server): the clock skews of `s` on that host.
fn clock(s: &Scenario, host: HostRole) -> WallClock {
    WallClock {
        steps: s
            .faults
            .iter()
            .filter_map(|f| match f {
                Fault::ClockSkew(c @ ClockSkew { at, .. }) if c.host == host => {
                    Some((at.0, c.offset_ms()))
                }
                _ => None,
            })
            .collect(),
    }
}

/// The hostile publishers of `s`: for each broker, when and how many
/// forgeries it publishes.
fn attacks(s: &Scenario) -> Vec<(u8, Vec<(Duration, u32)>)> {
    let mut out: Vec<(u8, Vec<(Duration, u32)>)> = Vec::new();
    for f in &s.faults {
        if let Fault::ForgedPublish(ForgedPublish { at, broker, count }) = f {
            match out.iter_mut().find(|(b, _)| b == broker) {
                Some((_, list)) => list.push((at.0, *count)),
                None => out.push((*broker, vec![(at.0, *count)])),
            }
        }
    }
    out
}
