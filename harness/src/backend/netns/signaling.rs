//! A signaling run on netns: the client (sender) and the server
//! (receiver) each in their namespace, one real mosquitto per broker
//! namespace, all hanging off the router; broker faults kill and restart
//! the mosquitto processes, stop and continue them, or drop their port's
//! traffic to a peer. A hostile publisher runs in the client's namespace.

use super::host::HostTask;
use super::lab::{Lab, LabSpec};
use super::mosquitto::Mosquittos;
use super::{control, FaultSchedule, LabError, NetnsNet};
use crate::backend::signaling;
use crate::backend::BackendError;
use crate::fault::Action;
use crate::plan::{SignalingPlan, Variant};
use crate::scenario::{HostRole, IpVersion, Scenario};
use crate::workload::programs::Net;
use crate::workload::signaling::Counted;
use crate::workload::{Recorder, Recording};
use netmend::signal::Mqtt;
use std::collections::HashMap;
use std::net::IpAddr;
use std::time::{Duration, Instant};

/// The lab of a signaling scenario: client, server and every broker.
pub fn lab_spec(s: &Scenario) -> LabSpec {
    let topo = &s.topology;
    let mut hosts = vec![topo.client.clone(), topo.server.clone()];
    hosts.extend(topo.broker_hosts());
    LabSpec {
        router: topo.middlebox.clone(),
        hosts,
    }
}

/// Runs one variant of the signaling scenario `s`, planned as `plan`, in
/// a fresh lab.
pub async fn run_in_lab(
    s: &Scenario,
    plan: &SignalingPlan,
    variant: Variant,
) -> Result<Recording, BackendError> {
    let topo = &s.topology;
    let v6 = topo.ip == IpVersion::Ipv6;
    let lab = Lab::build(&lab_spec(s)).await?;
    let mut addresses: HashMap<String, IpAddr> = HashMap::new();
    for host in [&topo.client, &topo.server] {
        addresses.insert(host.clone(), lab.attachment(host)?.host_addr(v6));
    }
    let mut broker_addrs = Vec::new();
    for host in topo.broker_hosts() {
        let addr = lab.attachment(&host)?.host_addr(v6);
        addresses.insert(host.clone(), addr);
        broker_addrs.push((host, addr));
    }
    let port = topo.broker_port;
    let mut brokers = Mosquittos::start(&lab, &broker_addrs, port)?;

    let rec = Recorder::tapped(0, plan.received.clone());
    let (attacks, plan) = (plan.attacks.clone(), plan.clone());
    let start = Instant::now();
    let net = NetnsNet::new(addresses, start, v6);
    let mqtt = |rec: &Recorder| -> Vec<Counted<Mqtt, NetnsNet>> {
        broker_addrs
            .iter()
            .map(|(_, addr)| {
                Counted::new(Mqtt::new(addr.to_string(), port), net.clone(), rec.clone())
            })
            .collect()
    };

    let (receiver_brokers, receiver_rec, receiver_net, receiver_plan) =
        (mqtt(&rec), rec.clone(), net.clone(), plan.clone());
    let receiver = HostTask::spawn(lab.namespace(&topo.server)?, &topo.server, move || {
        Ok(signaling::receiver(
            variant,
            receiver_net,
            receiver_brokers,
            receiver_plan,
            receiver_rec,
        ))
    })?;
    let (sender_brokers, sender_rec, sender_net) = (mqtt(&rec), rec.clone(), net.clone());
    let sender = HostTask::spawn(lab.namespace(&topo.client)?, &topo.client, move || {
        Ok(signaling::sender(
            variant,
            sender_net,
            sender_brokers,
            plan,
            sender_rec,
        ))
    })?;

    let mut forgers = Vec::new();
    for (index, attacks) in attacks {
        let Some((_, addr)) = broker_addrs.get(usize::from(index)) else {
            continue;
        };
        let (broker, net) = (Mqtt::new(addr.to_string(), port), net.clone());
        forgers.push(HostTask::spawn(
            lab.namespace(&topo.client)?,
            &format!("{}-forger{index}", topo.client),
            move || Ok(crate::workload::signaling::forger(net, broker, attacks)),
        )?);
    }
    let peers = |host: Option<HostRole>| -> Vec<IpAddr> {
        let roles: &[&String] = match host {
            Some(HostRole::Client) => &[&topo.client],
            Some(HostRole::Server) => &[&topo.server],
            None => &[&topo.client, &topo.server],
        };
        roles
            .iter()
            .filter_map(|h| lab.attachment(h).ok())
            .flat_map(|a| [IpAddr::from(a.host_v4()), IpAddr::from(a.host_v6())])
            .collect()
    };

    let mut faults = BrokerFaults {
        actions: s.schedule(),
        next: 0,
        brokers: &mut brokers,
        lab: &lab,
        peers: &peers,
        port,
    };
    control(&mut faults, &net, s.expect.deadline.0, Some(&rec), || {
        Ok((rec.is_client_done() || sender.is_finished()).then_some(()))
    })
    .await?;
    let recording = rec.snapshot(start.elapsed());
    sender.stop()?;
    receiver.stop()?;
    for f in forgers {
        f.stop()?;
    }
    brokers.stop();
    lab.teardown();
    Ok(recording)
}

/// The broker faults of a signaling run, applied to its mosquittos.
struct BrokerFaults<'a, P: Fn(Option<HostRole>) -> Vec<IpAddr>> {
    actions: Vec<(Duration, Action)>,
    /// Index of the next action due.
    next: usize,
    brokers: &'a mut Mosquittos,
    lab: &'a Lab,
    /// The addresses of a peer (both without one).
    peers: &'a P,
    port: u16,
}

impl<P: Fn(Option<HostRole>) -> Vec<IpAddr>> FaultSchedule for BrokerFaults<'_, P> {
    async fn apply_due(
        &mut self,
        now: Duration,
        net: &NetnsNet,
    ) -> Result<Vec<(Duration, Duration)>, LabError> {
        let mut applied = Vec::new();
        while let Some((at, action)) = self.actions.get(self.next) {
            if *at > now {
                break;
            }
            // Measured again for each: applying the ones before took time.
            super::on_time(action, *at, net.now())?;
            match action {
                Action::Broker { index, down } => {
                    tracing::debug!(broker = index, down, late = ?now - *at, "broker fault");
                    self.brokers
                        .set_down(self.lab, usize::from(*index), *down)?;
                }
                Action::BrokerFreeze { index, frozen } => {
                    self.brokers.set_frozen(usize::from(*index), *frozen)?;
                }
                Action::BrokerBlock {
                    index,
                    host,
                    blocked,
                } => {
                    self.brokers.set_blocked(
                        self.lab,
                        usize::from(*index),
                        &(self.peers)(*host),
                        *blocked,
                        self.port,
                    )?;
                }
                // The forger tasks carry these out on their own schedule.
                Action::Forge { .. } => {}
                other => tracing::warn!(action = ?other, "not a signaling fault; ignored"),
            }
            applied.push((*at, net.now()));
            self.next += 1;
        }
        Ok(applied)
    }

    fn next_due(&self, now: Duration) -> Option<Duration> {
        self.actions
            .get(self.next)
            .map(|(at, _)| at.saturating_sub(now))
    }
}
