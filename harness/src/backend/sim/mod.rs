//! The simulated backend: a turmoil world, deterministic by seed.
//!
//! Hosts: the client, the middlebox (a relay the harness controls, see
//! [`relay`]) and the server. Faults act on the middlebox (reset, blackhole)
//! or on turmoil's links (partition, latency). A signaling scenario runs
//! its own world instead (see [`signaling`]): peers and broker hosts.

pub mod broker;
pub mod relay;
pub mod signaling;
pub mod world;

use super::{baseline_follows, mitigation_spec, schedule, Action, BackendError, Variant};
use crate::scenario::{Direction, HostRole, IpVersion, Scenario, WorkloadKind};
use crate::workload::programs::{self, Net, StreamSpec};
use crate::workload::{Recorder, Recording};
use netmend::monitor::{Debounce, Injector, Monitor};
use relay::PathMode;
use std::future::Future;
use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::watch;
use turmoil::net::{TcpListener, TcpStream};

/// The [`Net`] of turmoil hosts.
#[derive(Clone, Debug, Default)]
pub struct SimNet {
    /// Listen on IPv6 (the world was built with `IpVersion::V6`).
    pub v6: bool,
    /// Where a host's monitor leaves its injector, for the simulation to
    /// report the changes its faults make.
    pub injector: Arc<Mutex<Option<Injector>>>,
}

impl Net for SimNet {
    type Stream = TcpStream;
    type Listener = TcpListener;

    fn connect(&self, host: &str, port: u16) -> impl Future<Output = io::Result<TcpStream>> + Send {
        let addr = (host.to_string(), port);
        async move { TcpStream::connect(addr).await }
    }

    fn bind(&self, port: u16) -> impl Future<Output = io::Result<TcpListener>> + Send {
        let any: IpAddr = if self.v6 {
            Ipv6Addr::UNSPECIFIED.into()
        } else {
            Ipv4Addr::UNSPECIFIED.into()
        };
        TcpListener::bind((any, port))
    }

    async fn accept(l: &TcpListener) -> io::Result<TcpStream> {
        l.accept().await.map(|(s, _)| s)
    }

    fn now(&self) -> Duration {
        turmoil::sim_elapsed().unwrap_or_default()
    }

    async fn monitor(&self, debounce: Debounce) -> Option<Monitor> {
        let (monitor, injector) = Monitor::injected(world::initial(), debounce);
        *self.injector.lock().unwrap_or_else(|e| e.into_inner()) = Some(injector);
        Some(monitor)
    }
}

/// The turmoil world of `s`: 1 ms ticks, virtual time enough for its
/// deadline, every link `latency` one way, its address family, seeded.
fn world<'a>(s: &Scenario, latency: Duration, seed: u64) -> turmoil::Sim<'a> {
    turmoil::Builder::new()
        .simulation_duration(s.expect.deadline.0 + Duration::from_secs(30))
        .tick_duration(Duration::from_millis(1))
        .min_message_latency(latency)
        .max_message_latency(latency)
        .ip_version(if s.topology.ip == IpVersion::Ipv6 {
            turmoil::IpVersion::V6
        } else {
            turmoil::IpVersion::V4
        })
        .rng_seed(seed)
        // A host's TCP buffer (turmoil panics when a burst of connects
        // overflows a listener's): room for a session flood's thousands.
        .tcp_capacity(1 << 16)
        .build()
}

/// Runs one variant of `s` and returns what it recorded.
pub fn run(s: &Scenario, variant: Variant, seed: u64) -> Result<Recording, BackendError> {
    if s.workload.kind == WorkloadKind::Signaling {
        return signaling::run(s, variant, seed);
    }
    let topo = &s.topology;
    let (bytes, chunk, rate) = (s.workload.bytes, s.workload.chunk, s.workload.rate);
    let v6 = topo.ip == IpVersion::Ipv6;
    let mut sim = world(s, topo.latency.0, seed);
    let net = SimNet {
        v6,
        injector: Arc::default(),
    };
    let injector = net.injector.clone();
    let rec = Recorder::new(bytes);
    let (mode_tx, mode_rx) = watch::channel(PathMode::default());
    let mitigation = mitigation_spec(s, seed);

    let (server_rec, port, config, server_net) = (
        rec.clone(),
        topo.port,
        mitigation.config.clone(),
        net.clone(),
    );
    let chosen = super::programs(s, variant);
    sim.host(topo.server.as_str(), move || {
        let (rec, config, net) = (server_rec.clone(), config.clone(), server_net.clone());
        async move {
            match chosen.engine_server {
                None => programs::baseline_server(net, port, rec).await?,
                Some(limits) => {
                    programs::mitigated_server(
                        net,
                        port,
                        config,
                        limits,
                        chosen.watch_sessions,
                        rec,
                    )
                    .await?
                }
            }
            Ok(())
        }
    });
    let server_name = topo.server.clone();
    let relay_net = net.clone();
    sim.host(topo.middlebox.as_str(), move || {
        let (target, mode, net) = (server_name.clone(), mode_rx.clone(), relay_net.clone());
        async move {
            relay::run(net, port, target, mode).await?;
            Ok(())
        }
    });
    let spec = StreamSpec {
        host: topo.middlebox.clone(),
        port,
        total: bytes,
        chunk,
        rate,
        connect_timeout: mitigation.config.connect_timeout,
        follow_changes: baseline_follows(s),
    };
    let floods = super::floods(s);
    if !floods.is_empty() {
        let (net, host) = (net.clone(), topo.middlebox.clone());
        sim.client(format!("{}-flood", topo.client).as_str(), async move {
            programs::flood(net, host, port, floods).await;
            Ok(())
        });
    }
    let client_rec = rec.clone();
    sim.client(topo.client.as_str(), async move {
        if chosen.engine_client {
            programs::mitigated_client(net, spec, mitigation, client_rec).await
        } else {
            programs::baseline_client(net, spec, client_rec).await
        }
        Ok(())
    });

    drive(&mut sim, s, &rec, |sim, action| {
        let injected = injector.lock().unwrap_or_else(|e| e.into_inner()).clone();
        apply(sim, s, &mode_tx, action);
        if let Some(injector) = injected {
            for change in world::changes(action) {
                injector.send(change);
            }
        }
    })
}

/// Steps `sim` through the scenario's schedule, handing each action to
/// `apply` when it is due, until the client is done, every client ended
/// or the deadline passed; returns what was recorded.
fn drive(
    sim: &mut turmoil::Sim<'_>,
    s: &Scenario,
    rec: &Recorder,
    mut apply: impl FnMut(&mut turmoil::Sim<'_>, &Action),
) -> Result<Recording, BackendError> {
    let actions = schedule(s);
    let mut next = 0;
    loop {
        let finished = sim.step().map_err(|e| BackendError::Sim(e.to_string()))?;
        let now = sim.elapsed();
        while let Some((at, action)) = actions.get(next) {
            if *at > now {
                break;
            }
            tracing::debug!(?action, at = ?now, "fault");
            apply(sim, action);
            next += 1;
        }
        if finished || rec.is_client_done() || now >= s.expect.deadline.0 {
            return Ok(rec.snapshot(now));
        }
    }
}

fn apply(sim: &turmoil::Sim<'_>, s: &Scenario, mode: &watch::Sender<PathMode>, action: &Action) {
    let topo = &s.topology;
    let (client, mbox, server) = (
        topo.client.as_str(),
        topo.middlebox.as_str(),
        topo.server.as_str(),
    );
    match action {
        Action::Reset => mode.send_modify(|m| m.epoch += 1),
        Action::Blackhole(on) => mode.send_modify(|m| m.blackhole = *on),
        Action::Partition {
            direction,
            on: true,
        } => match direction {
            Direction::Both => sim.partition(client, mbox),
            Direction::ClientToServer => sim.partition_oneway(client, mbox),
            Direction::ServerToClient => sim.partition_oneway(mbox, client),
        },
        Action::Partition {
            direction,
            on: false,
        } => match direction {
            Direction::Both => sim.repair(client, mbox),
            Direction::ClientToServer => sim.repair_oneway(client, mbox),
            Direction::ServerToClient => sim.repair_oneway(mbox, client),
        },
        Action::Latency { per_hop, .. } => {
            sim.set_link_latency(client, mbox, *per_hop);
            sim.set_link_latency(mbox, server, *per_hop);
        }
        // turmoil has no carrier: a host whose link is down is cut off from
        // the middlebox both ways (the scenario's sim note says so).
        Action::LinkDown { host, down } => {
            let h = match host {
                HostRole::Client => client,
                HostRole::Server => server,
            };
            if *down {
                sim.partition(h, mbox);
            } else {
                sim.repair(h, mbox);
            }
        }
        // The client moves to another network: the middlebox state of its
        // flows is gone (parked forever), and with a delay the new path
        // drops new flows too until it is routable.
        Action::NicSwap { routable, captive } | Action::GatewayChange { routable, captive } => {
            mode.send_modify(|m| {
                m.forgotten += 1;
                m.blackhole = !routable;
                m.captive = *captive;
            });
        }
        Action::Routable => mode.send_modify(|m| {
            m.blackhole = false;
            m.captive = false;
        }),
        // turmoil loses what a partition drops and never retransmits, so a
        // flap holds the client's messages instead and delivers them when
        // the carrier returns: what TCP's retransmission achieves for real.
        Action::Carrier { lost } => {
            if *lost {
                sim.hold(client, mbox);
            } else {
                sim.release(client, mbox);
            }
        }
        // `backend::unsupported` keeps scenarios with these faults off sim.
        Action::Loss(_)
        | Action::Bandwidth(_)
        | Action::AddressChange { .. }
        | Action::RouteLoss { .. }
        // Scenario validation keeps broker faults to signaling runs.
        | Action::Broker { .. }
        | Action::BrokerFreeze { .. }
        | Action::BrokerBlock { .. }
        | Action::Forge { .. } => {
            tracing::warn!(?action, "not expressible on sim; ignored");
        }
    }
}
