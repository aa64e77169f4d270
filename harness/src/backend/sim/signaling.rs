//! A signaling run on sim: the client (sender), the server (receiver) and
//! one turmoil host per broker; a broker crash kills the broker process
//! on its host (its connections close, connects are refused until it
//! restarts, empty). A frozen broker, or one whose port is blocked, is a host whose
//! links hold their traffic (turmoil `hold`/`release`): nothing is
//! refused or lost; it arrives when the freeze ends (the frozen broker's
//! kernel took it meanwhile), or when the sender's doubling retransmission
//! timer first fires after a block ends, as after a real one. A hostile publisher runs
//! on a host of its own.

use super::broker::{self, SimBroker};
use super::router;
use super::SimNet;
use crate::backend::signaling;
use crate::backend::BackendError;
use crate::fault::Action;
use crate::plan::{SignalingPlan, Variant};
use crate::scenario::{HostRole, IpVersion, Scenario};
use crate::workload::signaling::Counted;
use crate::workload::{Recorder, Recording};
use std::cell::RefCell;
use std::collections::HashMap;
use std::time::Duration;

/// Runs one variant of the signaling scenario `s`, planned as `plan`.
///
/// # Errors
///
/// The simulation broke (a host panicked, virtual time ran out).
pub fn run(
    s: &Scenario,
    plan: &SignalingPlan,
    variant: Variant,
    seed: u64,
) -> Result<Recording, BackendError> {
    let topo = &s.topology;
    let v6 = topo.ip == IpVersion::Ipv6;
    // Peers reach a broker through a router on netns (two hops); turmoil
    // links hosts directly, so one link carries both hops' latency.
    let latency = topo.latency.0 * 2;
    let mut sim = super::world(s, latency, seed);
    let net = SimNet {
        v6,
        ..SimNet::default()
    };
    let port = topo.broker_port;
    let hosts = topo.broker_hosts();
    let mut processes = Vec::new();
    for host in &hosts {
        let (up, running) = tokio::sync::watch::channel(true);
        processes.push(up);
        sim.host(host.as_str(), move || {
            let running = running.clone();
            async move {
                broker::supervise(port, v6, running).await?;
                Ok(())
            }
        });
    }
    let rec = Recorder::tapped(0, plan.received.clone());
    let plan = plan.clone();
    let brokers = |rec: &Recorder| -> Vec<Counted<SimBroker, SimNet>> {
        hosts
            .iter()
            .map(|h| {
                Counted::new(
                    SimBroker {
                        host: h.clone(),
                        port,
                    },
                    net.clone(),
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
    let attacks = plan.attacks.clone();
    let forger = format!("{}-forger", topo.client);
    for (index, attacks) in attacks {
        let (net, broker) = (
            net.clone(),
            SimBroker {
                host: topo.broker(index),
                port,
            },
        );
        sim.client(format!("{forger}{index}").as_str(), async move {
            crate::workload::signaling::forger(net, broker, attacks).await;
            Ok(())
        });
    }
    let sender_rec = rec.clone();
    sim.client(topo.client.as_str(), async move {
        signaling::sender(variant, net, sender_brokers, plan, sender_rec).await;
        Ok(())
    });
    let peers = |host: Option<HostRole>| -> Vec<String> {
        match host {
            Some(HostRole::Client) => vec![topo.client.clone()],
            Some(HostRole::Server) => vec![topo.server.clone()],
            None => vec![topo.client.clone(), topo.server.clone()],
        }
    };

    // A blocked link's traffic is released when the sender's doubling
    // retransmission timer next fires after the block ends, as a real
    // kernel delivers it (`blocked`: when each block began; `releases`:
    // the releases due).
    let blocked = RefCell::new(HashMap::new());
    let releases = RefCell::new(Vec::<(Duration, String, Vec<String>)>::new());
    super::drive(
        &mut sim,
        s,
        &rec,
        |sim, action| match action {
            Action::Broker { index, down } => {
                if let Some(up) = processes.get(usize::from(*index)) {
                    up.send_replace(!down);
                }
            }
            Action::BrokerFreeze { index, frozen } => {
                hold(sim, &topo.broker(*index), &peers(None), *frozen);
            }
            Action::BrokerBlock {
                index,
                host,
                blocked: true,
            } => {
                blocked.borrow_mut().insert((*index, *host), sim.elapsed());
                hold(sim, &topo.broker(*index), &peers(*host), true);
            }
            Action::BrokerBlock {
                index,
                host,
                blocked: false,
            } => {
                let now = sim.elapsed();
                let since = blocked.borrow_mut().remove(&(*index, *host)).unwrap_or(now);
                let due = since + router::first_retransmission_after(now - since);
                releases
                    .borrow_mut()
                    .push((due, topo.broker(*index), peers(*host)));
            }
            // The forger hosts carry these out on their own schedule.
            Action::Forge { .. } => {}
            other => tracing::warn!(action = ?other, "not a signaling fault; ignored"),
        },
        |sim, now| {
            releases.borrow_mut().retain(|(due, broker, peers)| {
                let waiting = *due > now;
                if !waiting {
                    hold(sim, broker, peers, false);
                }
                waiting
            });
        },
    )
}

/// Holds (or releases) the links between `broker` and each of `peers`.
fn hold(sim: &turmoil::Sim<'_>, broker: &str, peers: &[String], on: bool) {
    for peer in peers {
        if on {
            sim.hold(peer.as_str(), broker);
        } else {
            sim.release(peer.as_str(), broker);
        }
    }
}
