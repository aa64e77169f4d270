//! The simulated backend: a turmoil world, deterministic by seed.
//!
//! Hosts: the client and the server, linked directly, and the middlebox,
//! which only serves the captive portal. Path faults are packet rules: the
//! [`router`] judges every segment a host sends by the scenario's
//! [`PathState`](crate::backend::path::PathState), the same rules the netns
//! router applies with nftables. A signaling scenario runs its own world
//! instead (see [`signaling`]): peers and broker hosts.

pub mod broker;
pub mod router;
pub mod signaling;
pub mod world;

use super::path::Side;
use super::BackendError;
use crate::fault::Action;
use crate::plan::{StreamPlan, Variant};
use crate::scenario::{IpVersion, Scenario};
use crate::workload::programs::{self, Net};
use crate::workload::{Recorder, Recording};
use netmend::monitor::{Debounce, Injector, Monitor};
use netmend::session::TransportHint;
use router::{Router, SimStream};
use std::future::Future;
use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use turmoil::net::TcpListener;

/// The [`Net`] of turmoil hosts.
#[derive(Clone, Debug, Default)]
pub struct SimNet {
    /// Listen on IPv6 (the world was built with `IpVersion::V6`).
    pub v6: bool,
    /// Where a host's monitor leaves its injector, for the simulation to
    /// report the changes its faults make.
    pub injector: Arc<Mutex<Option<Injector>>>,
    /// The path's router and this host's place on it.
    pub place: Place,
}

/// Where a host sits on the simulated path.
#[derive(Clone, Debug, Default)]
pub struct Place {
    /// The router every segment goes through.
    pub router: Router,
    /// This host's side.
    pub side: Side,
    /// The server's host name (connections to it cross the path).
    pub server: String,
    /// The host serving the router's captive portal.
    pub portal: String,
}

impl SimNet {
    /// The same network seen from a host on `side`.
    pub fn on(&self, side: Side) -> SimNet {
        let mut net = self.clone();
        net.place.side = side;
        net
    }
}

/// A listening socket of a simulated host.
pub struct SimListener {
    inner: TcpListener,
    place: Place,
}

impl std::fmt::Debug for SimListener {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SimListener")
            .field("place", &self.place)
            .finish_non_exhaustive()
    }
}

impl Net for SimNet {
    type Stream = SimStream;
    type Listener = SimListener;

    fn connect(&self, host: &str, port: u16) -> impl Future<Output = io::Result<SimStream>> + Send {
        let (host, place) = (host.to_string(), self.place.clone());
        async move {
            let to = if host == place.server {
                Side::Server
            } else {
                Side::Other
            };
            place
                .router
                .connect(place.side, (&host, port), to, &place.portal)
                .await
        }
    }

    /// A turmoil host has one address and the router connects by name, so
    /// every name resolves to one address: the unspecified one of the
    /// world's family, standing for the host (`connect_addr` goes by name).
    fn resolve(
        &self,
        _host: &str,
        port: u16,
    ) -> impl Future<Output = io::Result<Vec<SocketAddr>>> + Send {
        // Connects go by name (turmoil's): the address only carries the
        // port and the family.
        let ip: IpAddr = if self.v6 {
            Ipv6Addr::UNSPECIFIED.into()
        } else {
            Ipv4Addr::UNSPECIFIED.into()
        };
        let names = self.place.router.names().clone();
        async move { names.lookup(|| Ok(vec![SocketAddr::new(ip, port)])).await }
    }

    fn connect_addr(
        &self,
        host: &str,
        addr: SocketAddr,
        _hint: TransportHint,
    ) -> impl Future<Output = io::Result<SimStream>> + Send {
        self.connect(host, addr.port())
    }

    fn tune(_: &SimStream, _: &crate::workload::peers::TcpTuning) -> io::Result<()> {
        Err(io::Error::new(
            io::ErrorKind::Unsupported,
            crate::plan::Peer::TunedTcp.sim_gap(),
        ))
    }

    async fn connect_mptcp(&self, _addr: SocketAddr) -> io::Result<SimStream> {
        Err(io::Error::new(
            io::ErrorKind::Unsupported,
            crate::plan::Peer::Mptcp.sim_gap(),
        ))
    }

    async fn bind_mptcp(&self, _port: u16) -> io::Result<SimListener> {
        Err(io::Error::new(
            io::ErrorKind::Unsupported,
            crate::plan::Peer::Mptcp.sim_gap(),
        ))
    }

    fn udp_socket(&self, _addr: SocketAddr) -> io::Result<std::net::UdpSocket> {
        Err(io::Error::new(
            io::ErrorKind::Unsupported,
            crate::plan::Peer::Quic.sim_gap(),
        ))
    }

    fn bind(&self, port: u16) -> impl Future<Output = io::Result<SimListener>> + Send {
        let any: IpAddr = if self.v6 {
            Ipv6Addr::UNSPECIFIED.into()
        } else {
            Ipv4Addr::UNSPECIFIED.into()
        };
        let place = self.place.clone();
        async move {
            Ok(SimListener {
                inner: TcpListener::bind((any, port)).await?,
                place,
            })
        }
    }

    async fn accept(l: &SimListener) -> io::Result<SimStream> {
        l.place.router.accept(&l.inner, l.place.side).await
    }

    fn now(&self) -> Duration {
        turmoil::sim_elapsed().unwrap_or_default()
    }

    async fn monitor(&self, debounce: Debounce) -> Option<Monitor> {
        let (monitor, injector) = Monitor::injected(world::initial(), debounce);
        *self.injector.lock().unwrap_or_else(|e| e.into_inner()) = Some(injector);
        Some(monitor)
    }

    async fn open_inbound(&self, _port: u16) -> io::Result<Box<dyn std::any::Any + Send>> {
        // The simulated host firewall knows one port, the scenario's.
        let router = self.place.router.clone();
        router.set_server_opened(true);
        Ok(Box::new(SimOpening(router)))
    }
}

/// The simulated host firewall's opening: closed when dropped.
struct SimOpening(Router);

impl Drop for SimOpening {
    fn drop(&mut self) {
        self.0.set_server_opened(false);
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

/// Runs one variant of the stream scenario `s`, planned as `plan`, and
/// returns what it recorded.
///
/// # Errors
///
/// The simulation broke (a host panicked, virtual time ran out).
pub fn run_stream(
    s: &Scenario,
    plan: &StreamPlan,
    variant: Variant,
    seed: u64,
) -> Result<Recording, BackendError> {
    let topo = &s.topology;
    let v6 = topo.ip == IpVersion::Ipv6;
    // Client and server are linked directly: one link carries both hops of
    // the routed path; the middlebox (the router's portal) is one hop away.
    let mut sim = world(s, topo.latency.0 * 2, seed);
    let net = SimNet {
        v6,
        injector: Arc::default(),
        place: Place {
            router: Router::default(),
            side: Side::Other,
            server: topo.server.clone(),
            portal: topo.middlebox.clone(),
        },
    };
    let injector = net.injector.clone();
    let router = net.place.router.clone();
    // A host firewall is in place before anything runs.
    router.set_server_firewall(plan.host_firewall.is_some());
    let rec = Recorder::tapped(plan.spec.total, plan.received.clone());
    let mitigation = plan.mitigation.clone();

    let (server_rec, port, config, server_net) = (
        rec.clone(),
        topo.port,
        mitigation.config.clone(),
        net.on(Side::Server),
    );
    let chosen = plan.programs(variant);
    if let Some(peer) = chosen.peer {
        return Err(BackendError::Sim(peer.sim_gap().into()));
    }
    // A server that is killed and started again (a host crash and restart
    // here): what outlives it — its session store, standing in for the
    // file on its disk, and its application's record — lives outside it.
    let durable = match (&plan.servers, plan.store, chosen.engine_server) {
        (Some(_), Some(_), Some(_)) => Some(programs::Durable {
            store: netmend::store::MemoryStore::new(netmend::store::StoreLimits::default())
                .map_err(|e| BackendError::Sim(e.to_string()))?,
            key: netmend::store::StoreKey::from_bytes(seed_key(seed)),
            streams: Arc::default(),
        }),
        _ => None,
    };
    let restarts = plan
        .servers
        .as_ref()
        .map(|s| s.restarts.clone())
        .unwrap_or_default();
    let herd = plan.herd.clone();
    let herd_port = herd.as_ref().map(|h| h.port);
    sim.host(topo.server.as_str(), move || {
        let (rec, config, net) = (server_rec.clone(), config.clone(), server_net.clone());
        let durable = durable.clone();
        async move {
            // The herd's connections end with the server's host.
            if let Some(port) = herd_port {
                let net = net.clone();
                tokio::spawn(async move {
                    if let Err(e) = crate::workload::herd::hold_server(net, port).await {
                        tracing::warn!(error = %e, "herd server");
                    }
                });
            }
            match chosen.engine_server {
                None => programs::baseline_server(net, port, rec, chosen.report_progress).await?,
                Some(limits) => {
                    programs::mitigated_server(
                        net,
                        port,
                        config,
                        limits,
                        (chosen.watch_sessions, chosen.open_firewall),
                        rec,
                        durable,
                    )
                    .await?
                }
            }
            Ok(())
        }
    });
    let portal_net = net.on(Side::Other);
    sim.host(topo.middlebox.as_str(), move || {
        let net = portal_net.clone();
        async move {
            let listener = net.bind(super::portal::PORTAL_PORT).await?;
            loop {
                let stream = SimNet::accept(&listener).await?;
                tokio::spawn(super::portal::answer(stream));
            }
        }
    });
    let spec = plan.spec.clone();
    let floods = plan.floods.clone();
    if !floods.is_empty() {
        let (net, host) = (net.on(Side::Other), topo.server.clone());
        sim.client(format!("{}-flood", topo.client).as_str(), async move {
            programs::flood(net, host, port, floods).await;
            Ok(())
        });
    }
    if let Some(herd) = herd {
        let (net, host, rec) = (net.on(Side::Other), topo.server.clone(), rec.clone());
        let engine = chosen.engine_client;
        sim.client(format!("{}-herd", topo.client).as_str(), async move {
            crate::workload::herd::herd(net, host, *herd, engine, rec).await;
            Ok(())
        });
    }
    let client_rec = rec.clone();
    let client_net = net.on(Side::Client);
    sim.client(topo.client.as_str(), async move {
        if chosen.engine_client {
            programs::mitigated_client(client_net, spec, mitigation, client_rec).await
        } else {
            programs::baseline_client(client_net, spec, client_rec).await
        }
        Ok(())
    });
    set_latency(&sim, &router, s, topo.latency.0);

    // The server host crashes at each restart and boots again after its
    // duration: its software starts afresh.
    let mut host_events: Vec<(Duration, bool)> = Vec::new();
    for (at, down) in restarts {
        host_events.push((at, true));
        host_events.push((at.saturating_add(down), false));
    }
    host_events.sort();
    let server_host = topo.server.clone();
    let mut next_host_event = 0;
    drive(
        &mut sim,
        s,
        &rec,
        |sim, action| {
            let injected = injector.lock().unwrap_or_else(|e| e.into_inner()).clone();
            apply(sim, s, &router, action);
            if let Some(injector) = injected {
                for change in world::changes(action) {
                    injector.send(change);
                }
            }
        },
        |sim, now| {
            while let Some(&(at, crash)) = host_events.get(next_host_event) {
                if at > now {
                    break;
                }
                router.set_server_down(crash);
                if crash {
                    sim.crash(server_host.as_str());
                } else {
                    sim.bounce(server_host.as_str());
                }
                next_host_event += 1;
            }
        },
    )
}

/// A store key drawn from the run's seed (a simulation replays exactly).
fn seed_key(seed: u64) -> [u8; 32] {
    let mut key = [0u8; 32];
    for (i, chunk) in key.chunks_mut(8).enumerate() {
        chunk.copy_from_slice(
            &seed
                .wrapping_mul(0x9E37_79B9_7F4A_7C15)
                .rotate_left(i as u32 * 13)
                .to_be_bytes(),
        );
    }
    key
}

/// Steps `sim` through the scenario's schedule, handing each action to
/// `apply` when it is due, until the client is done, every client ended
/// or the deadline passed; returns what was recorded.
fn drive(
    sim: &mut turmoil::Sim<'_>,
    s: &Scenario,
    rec: &Recorder,
    mut apply: impl FnMut(&mut turmoil::Sim<'_>, &Action),
    mut tick: impl FnMut(&mut turmoil::Sim<'_>, Duration),
) -> Result<Recording, BackendError> {
    let actions = s.schedule();
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
        tick(sim, now);
        if finished || rec.is_client_done() || now >= s.expect.deadline.0 {
            return Ok(rec.snapshot(now));
        }
    }
}

/// Every link's latency: `per_hop` to the middlebox, twice that between
/// client and server (two hops of the routed path).
fn set_latency(sim: &turmoil::Sim<'_>, router: &Router, s: &Scenario, per_hop: Duration) {
    router.set_latency(per_hop * 2, per_hop);
    let topo = &s.topology;
    let (client, mbox, server) = (
        topo.client.as_str(),
        topo.middlebox.as_str(),
        topo.server.as_str(),
    );
    sim.set_link_latency(client, server, per_hop * 2);
    sim.set_link_latency(client, mbox, per_hop);
    sim.set_link_latency(mbox, server, per_hop);
}

fn apply(sim: &turmoil::Sim<'_>, s: &Scenario, router: &Router, action: &Action) {
    if router.apply(action) {
        return;
    }
    match action {
        Action::Latency { per_hop, .. } => set_latency(sim, router, s, *per_hop),
        // `cannot` keeps scenarios with these changes off sim, and scenario
        // validation keeps broker changes to signaling runs.
        _ => tracing::warn!(?action, "not expressible on sim; ignored"),
    }
}

/// Why the simulated network cannot make `action`, if it cannot: the one
/// place that says what sim lacks (`backend::unsupported` reports it).
pub fn cannot(action: &Action) -> Option<&'static str> {
    match action {
        Action::Latency { jitter, .. } if !jitter.is_zero() => Some(
            "turmoil gives each link one latency; per-packet jitter needs the netns backend",
        ),
        Action::Loss(p) if *p > 0.0 => Some(
            "the simulated TCP retransmits on timeouts only (no fast retransmit), so random loss would not play out as on a real path; loss needs the netns backend",
        ),
        Action::Bandwidth(Some(_)) => {
            Some("turmoil models no link capacity; bandwidth limits need the netns backend")
        }
        Action::Ipv6Blackhole(true) => Some(
            "a turmoil host has one address of one family, so there is no other family to fall back to; an IPv6 blackhole needs the netns backend's dual-stack lab",
        ),
        Action::Vpn(Some(_)) => Some(
            "turmoil hosts have no interfaces and no routing table: a tunnel that takes the default route needs the netns backend",
        ),
        Action::PathMtu(Some(_)) => Some(
            "turmoil's TCP sends each write as one segment of any size, with no MTU and no MSS: a path that drops packets above a size cannot be made; MTU black holes need the netns backend",
        ),
        Action::AddressChange { .. } => Some(
            "turmoil hosts have one fixed address; address changes need the netns backend",
        ),
        _ => None,
    }
}
