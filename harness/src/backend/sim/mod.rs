//! The simulated backend: a turmoil world, deterministic by seed.
//!
//! Hosts: the client, the middlebox (a relay the harness controls, see
//! [`relay`]) and the server. Faults act on the middlebox (reset, blackhole)
//! or on turmoil's links (partition, latency).

pub mod relay;

use super::{mitigation_spec, schedule, Action, BackendError, Variant};
use crate::scenario::{Direction, HostRole, IpVersion, Scenario};
use crate::workload::programs::{self, Net, StreamSpec};
use crate::workload::{Recorder, Recording};
use relay::PathMode;
use std::future::Future;
use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::time::Duration;
use tokio::sync::watch;
use turmoil::net::{TcpListener, TcpStream};

/// The [`Net`] of turmoil hosts.
#[derive(Clone, Copy, Debug, Default)]
pub struct SimNet {
    /// Listen on IPv6 (the world was built with `IpVersion::V6`).
    pub v6: bool,
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
}

/// Runs one variant of `s` and returns what it recorded.
pub fn run(s: &Scenario, variant: Variant, seed: u64) -> Result<Recording, BackendError> {
    let topo = &s.topology;
    let (bytes, chunk, rate) = (s.workload.bytes, s.workload.chunk, s.workload.rate);
    let deadline = s.expect.deadline.0;
    let v6 = topo.ip == IpVersion::Ipv6;
    let mut sim = turmoil::Builder::new()
        .simulation_duration(deadline + Duration::from_secs(30))
        .tick_duration(Duration::from_millis(1))
        .min_message_latency(topo.latency.0)
        .max_message_latency(topo.latency.0)
        .ip_version(if v6 {
            turmoil::IpVersion::V6
        } else {
            turmoil::IpVersion::V4
        })
        .rng_seed(seed)
        .build();
    let net = SimNet { v6 };
    let rec = Recorder::new(bytes);
    let (mode_tx, mode_rx) = watch::channel(PathMode::default());
    let mitigation = mitigation_spec(s, seed);

    let (server_rec, port, config) = (rec.clone(), topo.port, mitigation.config.clone());
    sim.host(topo.server.as_str(), move || {
        let (rec, config) = (server_rec.clone(), config.clone());
        async move {
            match variant {
                Variant::Baseline => programs::baseline_server(net, port, rec).await?,
                Variant::Mitigated => programs::mitigated_server(net, port, config, rec).await?,
            }
            Ok(())
        }
    });
    let server_name = topo.server.clone();
    sim.host(topo.middlebox.as_str(), move || {
        let (target, mode) = (server_name.clone(), mode_rx.clone());
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
    };
    let client_rec = rec.clone();
    sim.client(topo.client.as_str(), async move {
        match variant {
            Variant::Baseline => programs::baseline_client(net, spec, client_rec).await,
            Variant::Mitigated => {
                programs::mitigated_client(net, spec, mitigation, client_rec).await
            }
        }
        Ok(())
    });

    let actions = schedule(s);
    let mut next = 0;
    loop {
        let finished = sim.step().map_err(|e| BackendError::Sim(e.to_string()))?;
        let now = sim.elapsed();
        while next < actions.len() && actions[next].0 <= now {
            apply(&sim, s, &mode_tx, &actions[next].1);
            next += 1;
        }
        if finished || rec.is_client_done() || now >= deadline {
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
    tracing::debug!(?action, at = ?sim.elapsed(), "fault");
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
        // `backend::unsupported` keeps scenarios with these faults off sim.
        Action::Loss(_)
        | Action::Bandwidth(_)
        | Action::AddressChange { .. }
        | Action::RouteLoss { .. } => {
            tracing::warn!(?action, "not expressible on sim; ignored");
        }
    }
}
