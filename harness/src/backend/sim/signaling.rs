//! A signaling run on sim: the client (sender), the server (receiver) and
//! one turmoil host per broker; broker faults crash and restart those
//! hosts.

use super::broker::{self, SimBroker};
use super::SimNet;
use crate::backend::signaling;
use crate::backend::{Action, BackendError, Variant};
use crate::scenario::{IpVersion, Scenario};
use crate::workload::signaling::Counted;
use crate::workload::{Recorder, Recording};
use std::sync::Arc;

/// Runs one variant of the signaling scenario `s`.
pub fn run(s: &Scenario, variant: Variant, seed: u64) -> Result<Recording, BackendError> {
    let topo = &s.topology;
    let v6 = topo.ip == IpVersion::Ipv6;
    // Peers reach a broker through a router on netns (two hops); turmoil
    // links hosts directly, so one link carries both hops' latency.
    let latency = topo.latency.0 * 2;
    let mut sim = super::world(s, latency, seed);
    let net = SimNet {
        v6,
        injector: Arc::default(),
    };
    let port = topo.broker_port;
    let hosts = topo.broker_hosts();
    for host in &hosts {
        sim.host(host.as_str(), move || async move {
            broker::serve(port, v6).await?;
            Ok(())
        });
    }
    let rec = Recorder::new(0);
    let plan = signaling::plan(s, seed);
    let brokers = |rec: &Recorder| -> Vec<Counted<SimBroker>> {
        hosts
            .iter()
            .map(|h| {
                Counted::new(
                    SimBroker {
                        host: h.clone(),
                        port,
                    },
                    rec.clone(),
                )
            })
            .collect()
    };
    let (receiver_brokers, sender_brokers) = (brokers(&rec), brokers(&rec));
    let (receiver_rec, receiver_net, receiver_plan) = (rec.clone(), net.clone(), plan.clone());
    sim.client(topo.server.as_str(), async move {
        signaling::receiver(
            variant,
            receiver_net,
            receiver_brokers,
            receiver_plan,
            receiver_rec,
        )
        .await;
        Ok(())
    });
    let sender_rec = rec.clone();
    sim.client(topo.client.as_str(), async move {
        signaling::sender(variant, net, sender_brokers, plan, sender_rec).await;
        Ok(())
    });

    super::drive(&mut sim, s, &rec, |sim, action| match action {
        Action::Broker { index, down } => {
            let host = topo.broker(*index);
            if *down {
                sim.crash(host.as_str());
            } else {
                sim.bounce(host.as_str());
            }
        }
        other => tracing::warn!(action = ?other, "not a signaling fault; ignored"),
    })
}
