//! What both backends share of a signaling run: the two peers' programs,
//! by variant, following the run's [`SignalingPlan`]. The backends only
//! supply brokers, hosts and faults.

use crate::plan::{SignalingPlan, Variant};
use crate::workload::programs::Net;
use crate::workload::signaling as programs;
use crate::workload::Recorder;
use netmend::signal::Broker;

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
        // The backends refuse such a run before it starts (see Peer).
        Variant::Peer(peer) => rec.client_failed(format!(
            "{} carries byte streams, not signaling",
            peer.name()
        )),
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
        Variant::Peer(peer) => rec.client_failed(format!(
            "{} carries byte streams, not signaling",
            peer.name()
        )),
    }
}
