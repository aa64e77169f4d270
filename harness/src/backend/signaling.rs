//! What both backends share of a signaling run: its plan (workload and
//! engine tunables from the scenario) and the two peers' programs, by
//! variant. The backends only supply brokers, hosts and faults.

use super::Variant;
use crate::fault::{Fault, ForgedPublish};
use crate::scenario::Scenario;
use crate::workload::programs::Net;
use crate::workload::signaling::{self as programs, SignalingSpec};
use crate::workload::Recorder;
use netmend::signal::{Broker, LinkConfig, SignalConfig, SignalKey};
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
}

/// The signaling workload and policy of `s`.
pub fn plan(s: &Scenario, seed: u64) -> SignalingPlan {
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
    let link = |seed| LinkConfig {
        policy: policy.clone(),
        connect_timeout,
        seed: Some(seed),
    };
    SignalingPlan {
        spec: SignalingSpec {
            messages: w.messages,
            interval: w.interval.0,
            payload: w.payload,
            connect_timeout,
            settle: s.expect.recovery_within.0,
        },
        config,
        links: [link(seed), link(seed.wrapping_add(1))],
    }
}

/// The hostile publishers of `s`: for each broker, when and how many
/// forgeries it publishes.
pub fn attacks(s: &Scenario) -> Vec<(u8, Vec<(Duration, u32)>)> {
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

/// The receiving peer (on the server host): the naive single-broker
/// receiver on broker 0, or the engine's endpoint on every broker.
pub async fn receiver<N: Net, B: Broker>(
    variant: Variant,
    net: N,
    brokers: Vec<B>,
    plan: SignalingPlan,
    rec: Recorder,
) {
    match variant {
        Variant::Baseline => {
            if let Some(first) = brokers.into_iter().next() {
                programs::baseline_receiver(net, first, plan.spec, rec).await;
            }
        }
        Variant::Mitigated => {
            let [_, link] = plan.links;
            programs::mitigated_receiver(net, brokers, plan.config, link, rec).await;
        }
    }
}

/// The sending peer (on the client host), likewise.
pub async fn sender<N: Net, B: Broker>(
    variant: Variant,
    net: N,
    brokers: Vec<B>,
    plan: SignalingPlan,
    rec: Recorder,
) {
    match variant {
        Variant::Baseline => {
            if let Some(first) = brokers.into_iter().next() {
                programs::baseline_sender(net, first, plan.spec, rec).await;
            }
        }
        Variant::Mitigated => {
            let [link, _] = plan.links;
            programs::mitigated_sender(net, brokers, plan.config, link, plan.spec, rec).await;
        }
    }
}
