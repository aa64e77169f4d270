//! The real-kernel backend: every host of the scenario in its own Linux
//! network namespace, joined through a router namespace by veth links, with
//! faults made by real kernel operations (nftables, NFQUEUE, netlink).
//!
//! Workloads run on threads that entered a host's namespace, each with its
//! own current-thread tokio runtime: a socket belongs to the namespace of the
//! thread that creates it, so the very same programs the simulated backend
//! runs open real `tokio::net` sockets inside the lab. Threads rather than
//! child processes keep the recording in memory and let a panicking workload
//! surface as a failed run instead of a lost process; user commands, which
//! are other programs, run as children that enter the namespace between
//! fork and exec.

pub mod command;
pub mod delay;
pub mod dns;
pub mod faults;
pub mod firewall;
pub mod host;
pub mod lab;
pub mod mosquitto;
pub mod mptcp;
pub mod namespace;
pub mod restart;
pub mod server;
pub mod service;
pub mod signaling;
pub mod vpn;

use super::BackendError;
use crate::plan::{Peer, Plan, SignalingPlan, StreamPlan, Variant};
use crate::scenario::{IpVersion, Scenario};
use crate::workload::peers;
use crate::workload::programs::{self, Net};
use crate::workload::{Recorder, Recording};
use faults::PathFaults;
use host::HostTask;
use lab::{Lab, LabSpec};
use netmend::monitor::{Debounce, Monitor};
use netmend::session::TransportHint;
use std::collections::HashMap;
use std::future::Future;
use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};
use thiserror::Error;

/// Something the lab could not do.
#[derive(Debug, Error)]
#[non_exhaustive]
pub enum LabError {
    /// A system call or file operation failed.
    #[error("{op}: {source}")]
    Io {
        /// What was being done.
        op: String,
        /// Why it failed.
        source: io::Error,
    },
    /// The kernel refused a netlink request.
    #[error("{op}: {source}")]
    Netlink {
        /// What was being done.
        op: String,
        /// The kernel's answer.
        source: rtnetlink::Error,
    },
    /// A helper program (nft, iptables, tc) failed.
    #[error("`{command}` failed ({status}): {stderr}")]
    Command {
        /// The command line.
        command: String,
        /// Its exit status.
        status: String,
        /// What it printed on stderr.
        stderr: String,
    },
    /// The harness was about to change the initial network namespace.
    #[error("refusing to change the initial network namespace")]
    InitialNamespace,
    /// The lab itself lost its path: after every fault healed, the client
    /// could not reach the server. The run says nothing about the engine.
    #[error("a broken lab, not an engine failure: {0}")]
    Broken(String),
    /// The run was interrupted: no namespace is created any more.
    #[error("interrupted: no new namespace is created")]
    Interrupted,
    /// An address outside 198.18.0.0/15 and 2001:db8::/32.
    #[error("{0} is outside the lab's ranges (198.18.0.0/15, 2001:db8::/32)")]
    ForeignAddress(IpAddr),
    /// A name the lab does not know or cannot use.
    #[error("{0}")]
    BadName(String),
    /// A thread of the lab panicked.
    #[error("{0} panicked")]
    Panicked(String),
    /// The machine lacks something the backend needs.
    #[error("{0}")]
    Unavailable(String),
    /// The lab fell behind the fault schedule: a fault was due this long
    /// ago when its turn came. The run is stopped; what it would show is
    /// not the scenario's schedule.
    #[error("the lab fell behind its fault schedule: {kind} due at {at:?} came {late:?} late (tolerance {FAULT_TOLERANCE:?})")]
    Behind {
        /// The fault.
        kind: String,
        /// When it was due.
        at: std::time::Duration,
        /// How late its turn came.
        late: std::time::Duration,
    },
}

/// How late a fault may be applied before the run is a broken lab rather
/// than the scenario's schedule: well above what one `nft` transaction or
/// process start takes on a loaded machine, well below the gaps the
/// scenarios' faults rely on.
pub const FAULT_TOLERANCE: std::time::Duration = std::time::Duration::from_millis(500);

/// Checks that an action due at `at` is applied at `now` within
/// [`FAULT_TOLERANCE`].
pub fn on_time(
    kind: &dyn std::fmt::Debug,
    at: std::time::Duration,
    now: std::time::Duration,
) -> Result<(), LabError> {
    let late = now.saturating_sub(at);
    if late > FAULT_TOLERANCE {
        return Err(LabError::Behind {
            kind: format!("{kind:?}"),
            at,
            late,
        });
    }
    Ok(())
}

impl LabError {
    pub(crate) fn io(op: impl Into<String>, source: io::Error) -> Self {
        LabError::Io {
            op: op.into(),
            source,
        }
    }
}

impl From<LabError> for BackendError {
    fn from(e: LabError) -> Self {
        BackendError::Netns(e.to_string())
    }
}

/// Whether this process can run the netns backend; `Err` says why not.
pub fn probe() -> Result<(), String> {
    let unshared = std::thread::spawn(|| nix::sched::unshare(nix::sched::CloneFlags::CLONE_NEWNET))
        .join()
        .map_err(|_| "probing namespaces panicked".to_string())?;
    if let Err(e) = unshared {
        return Err(format!(
            "cannot create network namespaces ({e}); the netns backend needs root (CAP_SYS_ADMIN and CAP_NET_ADMIN)"
        ));
    }
    for (tool, package) in [
        ("nft", "nftables"),
        ("iptables", "iptables"),
        ("tc", "iproute2"),
    ] {
        let found = std::process::Command::new(tool)
            .arg("--version")
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .status()
            .is_ok();
        if !found {
            return Err(format!("`{tool}` is missing (apt-get install {package})"));
        }
    }
    Ok(())
}

/// `dnsmasq`, with how to install it, when the lab of `s` runs a name
/// server (see [`dns::needed`]) and this machine lacks it.
pub fn missing_name_server(s: &Scenario) -> Option<String> {
    if dns::needed(&s.schedule()) {
        dns::available().err().map(|e| e.to_string())
    } else {
        None
    }
}

/// What `plan` needs on this machine beyond what [`probe`] checks, if it
/// is missing, with how to install it: `mosquitto` for the brokers of a
/// signaling run, the program of a command run.
pub fn missing_tool(plan: &Plan) -> Option<String> {
    match plan {
        Plan::Stream(p) if !p.restarts.is_empty() => match restart::netmend_binary() {
            None => Some(format!(
                "a process restart runs the client as `netmend __stream-client`: run the scenario with the netmend binary, or set {} to it",
                restart::BIN_ENV
            )),
            Some(_) if p.restarts.len() > 1 => {
                Some("one process restart per scenario is supported".into())
            }
            Some(_) => None,
        },
        Plan::Stream(p) if p.servers.is_some() => match restart::netmend_binary() {
            None => Some(format!(
                "a server restart or failover runs the server as `netmend __stream-server`: run the scenario with the netmend binary, or set {} to it",
                restart::BIN_ENV
            )),
            Some(_) if p.store == Some(crate::scenario::StoreKind::Redis) => {
                server::redis_available().err()
            }
            Some(_) => None,
        },
        Plan::Stream(_) => None,
        Plan::Signaling(_) => mosquitto::available().err().map(|e| e.to_string()),
        Plan::Command(command) => {
            let program = command.argv.first()?;
            which::which(program).err().map(|_| {
                format!("`{program}` is not installed here (not found on PATH); the command workload runs it")
            })
        }
    }
}

/// The [`Net`] of a lab host: real tokio sockets, created on the host's
/// thread and so inside its namespace.
#[derive(Clone, Debug)]
pub struct NetnsNet {
    addresses: Arc<RwLock<HashMap<String, Vec<IpAddr>>>>,
    /// The lab's DNS server, when it has one (see [`dns`]): lookups ask
    /// it instead of the table.
    name_server: Option<SocketAddr>,
    start: Instant,
    v6: bool,
    prebound: Arc<Mutex<Option<Prebound>>>,
}

impl NetnsNet {
    /// A net where `addresses` maps host names to lab addresses and time
    /// counts from `start`.
    pub fn new(addresses: HashMap<String, IpAddr>, start: Instant, v6: bool) -> Self {
        let names = addresses.into_iter().map(|(k, v)| (k, vec![v])).collect();
        Self::with_names(names, start, v6)
    }

    /// A net whose names may have several addresses each, preferred first
    /// (a dual-stack lab).
    pub fn with_names(addresses: HashMap<String, Vec<IpAddr>>, start: Instant, v6: bool) -> Self {
        NetnsNet {
            addresses: Arc::new(RwLock::new(addresses)),
            name_server: None,
            start,
            v6,
            prebound: Arc::new(Mutex::new(None)),
        }
    }

    /// Lookups ask the DNS server at `server` (the lab's [`dns`] server,
    /// which publishes this net's table) instead of the table itself.
    #[must_use]
    pub fn with_name_server(mut self, server: Option<SocketAddr>) -> Self {
        self.name_server = server;
        self
    }

    /// The table as a hosts file, for the lab's DNS server.
    pub fn hosts_file(&self) -> String {
        let table = self.addresses.read().unwrap_or_else(|e| e.into_inner());
        dns::hosts_file(table.iter().map(|(k, v)| (k.as_str(), v.as_slice())))
    }

    /// The current preferred address of `host`: the lab's name service.
    pub fn address(&self, host: &str) -> Option<IpAddr> {
        self.all_addresses(host).first().copied()
    }

    /// Every current address of `host`, preferred first.
    pub fn all_addresses(&self, host: &str) -> Vec<IpAddr> {
        self.addresses
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .get(host)
            .cloned()
            .unwrap_or_default()
    }

    /// Points `host`'s address of `ip`'s family at `ip` (after an address
    /// change), as a DNS update would. A name without an address of that
    /// family keeps none (a single-stack lab's names stay single-stack); a
    /// host without a name gets one.
    pub fn set_address(&self, host: &str, ip: IpAddr) {
        let mut map = self.addresses.write().unwrap_or_else(|e| e.into_inner());
        let list = map.entry(host.to_string()).or_default();
        if list.is_empty() {
            list.push(ip);
        } else if let Some(slot) = list.iter_mut().find(|a| a.is_ipv6() == ip.is_ipv6()) {
            *slot = ip;
        }
    }

    /// Binds `port` now (on the calling thread, so in its namespace) as
    /// `how` says and keeps the socket for the program's own `bind`,
    /// `bind_mptcp` or `udp_socket`, so the harness knows the server
    /// listens before it starts the client.
    pub fn prebind(&self, port: u16, how: Listen) -> io::Result<()> {
        let at = SocketAddr::new(self.unspecified(), port);
        let socket = match how {
            Listen::Tcp => Prebound::Tcp(std::net::TcpListener::bind(at)?),
            Listen::Mptcp => Prebound::Tcp(mptcp_listener(at)?),
            Listen::Udp => Prebound::Udp(std::net::UdpSocket::bind(at)?),
        };
        match &socket {
            Prebound::Tcp(l) => l.set_nonblocking(true)?,
            Prebound::Udp(u) => u.set_nonblocking(true)?,
        }
        *self.prebound.lock().unwrap_or_else(|e| e.into_inner()) = Some(socket);
        Ok(())
    }

    /// The listener prebound on `port`, if there is one.
    fn prebound_listener(&self, port: u16) -> Option<std::net::TcpListener> {
        let mut slot = self.prebound.lock().unwrap_or_else(|e| e.into_inner());
        match slot.take() {
            Some(Prebound::Tcp(l)) if l.local_addr().map(|a| a.port()).ok() == Some(port) => {
                Some(l)
            }
            other => {
                *slot = other;
                None
            }
        }
    }

    /// The UDP socket prebound on `port`, if there is one.
    fn prebound_udp(&self, port: u16) -> Option<std::net::UdpSocket> {
        let mut slot = self.prebound.lock().unwrap_or_else(|e| e.into_inner());
        match slot.take() {
            Some(Prebound::Udp(u)) if u.local_addr().map(|a| a.port()).ok() == Some(port) => {
                Some(u)
            }
            other => {
                *slot = other;
                None
            }
        }
    }

    fn unspecified(&self) -> IpAddr {
        if self.v6 {
            Ipv6Addr::UNSPECIFIED.into()
        } else {
            Ipv4Addr::UNSPECIFIED.into()
        }
    }
}

/// How a server listens on its port (see [`NetnsNet::prebind`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Listen {
    /// A TCP listener.
    Tcp,
    /// A Multipath TCP listener.
    Mptcp,
    /// A UDP socket (QUIC).
    Udp,
}

impl Listen {
    /// How the server of `peer` (none: the naive or the engine's) listens.
    pub fn of(peer: Option<Peer>) -> Listen {
        match peer {
            Some(Peer::Mptcp | Peer::MptcpMultipath) => Listen::Mptcp,
            Some(Peer::Quic | Peer::QuicNoRebind) => Listen::Udp,
            Some(Peer::TunedTcp) | None => Listen::Tcp,
        }
    }
}

/// A server's socket, bound before its program runs.
#[derive(Debug)]
enum Prebound {
    Tcp(std::net::TcpListener),
    Udp(std::net::UdpSocket),
}

/// An `IPPROTO_MPTCP` stream socket for `addr`'s family, non-blocking.
fn mptcp_socket(addr: &SocketAddr) -> io::Result<socket2::Socket> {
    let socket = socket2::Socket::new(
        socket2::Domain::for_address(*addr),
        socket2::Type::STREAM,
        Some(socket2::Protocol::MPTCP),
    )?;
    socket.set_nonblocking(true)?;
    Ok(socket)
}

/// A Multipath TCP listener on `at` (a backlog as std's listeners have).
fn mptcp_listener(at: SocketAddr) -> io::Result<std::net::TcpListener> {
    let socket = mptcp_socket(&at)?;
    socket.set_reuse_address(true)?;
    socket.bind(&at.into())?;
    socket.listen(128)?;
    Ok(socket.into())
}

impl Net for NetnsNet {
    type Stream = tokio::net::TcpStream;
    type Listener = tokio::net::TcpListener;

    fn connect(
        &self,
        host: &str,
        port: u16,
    ) -> impl Future<Output = io::Result<Self::Stream>> + Send {
        let addr = self.address(host);
        let host = host.to_string();
        async move {
            let ip = addr.ok_or_else(|| {
                io::Error::new(io::ErrorKind::NotFound, format!("no lab host `{host}`"))
            })?;
            let s = tokio::net::TcpStream::connect(SocketAddr::new(ip, port)).await?;
            s.set_nodelay(true)?;
            Ok(s)
        }
    }

    fn resolve(
        &self,
        host: &str,
        port: u16,
    ) -> impl Future<Output = io::Result<Vec<SocketAddr>>> + Send {
        let (host, net) = (host.to_string(), self.clone());
        async move {
            if let Some(server) = net.name_server {
                return dns::lookup(server, &host, port).await;
            }
            // Without a name server the table answers: its names neither
            // change nor fail in this lab.
            let addrs: Vec<SocketAddr> = net
                .all_addresses(&host)
                .into_iter()
                .map(|ip| SocketAddr::new(ip, port))
                .collect();
            if addrs.is_empty() {
                return Err(io::Error::new(
                    io::ErrorKind::NotFound,
                    format!("no lab host `{host}`"),
                ));
            }
            Ok(addrs)
        }
    }

    async fn connect_addr(
        &self,
        _host: &str,
        addr: SocketAddr,
        hint: TransportHint,
    ) -> io::Result<Self::Stream> {
        let socket = match addr {
            SocketAddr::V4(_) => tokio::net::TcpSocket::new_v4()?,
            SocketAddr::V6(_) => tokio::net::TcpSocket::new_v6()?,
        };
        hint.apply_to(&socket)?;
        let s = socket.connect(addr).await?;
        s.set_nodelay(true)?;
        Ok(s)
    }

    fn bind(&self, port: u16) -> impl Future<Output = io::Result<Self::Listener>> + Send {
        let pre = self.prebound_listener(port);
        let at = SocketAddr::new(self.unspecified(), port);
        async move {
            match pre {
                Some(l) => tokio::net::TcpListener::from_std(l),
                None => tokio::net::TcpListener::bind(at).await,
            }
        }
    }

    async fn connect_mptcp(&self, addr: SocketAddr) -> io::Result<Self::Stream> {
        let socket = tokio::net::TcpSocket::from_std_stream(mptcp_socket(&addr)?.into());
        let s = socket.connect(addr).await?;
        s.set_nodelay(true)?;
        Ok(s)
    }

    async fn bind_mptcp(&self, port: u16) -> io::Result<Self::Listener> {
        let listener = match self.prebound_listener(port) {
            Some(l) => l,
            None => mptcp_listener(SocketAddr::new(self.unspecified(), port))?,
        };
        tokio::net::TcpListener::from_std(listener)
    }

    fn udp_socket(&self, addr: SocketAddr) -> io::Result<std::net::UdpSocket> {
        let socket = match self.prebound_udp(addr.port()).filter(|_| addr.port() != 0) {
            Some(u) => u,
            None => std::net::UdpSocket::bind(addr)?,
        };
        socket.set_nonblocking(true)?;
        Ok(socket)
    }

    async fn accept(l: &Self::Listener) -> io::Result<Self::Stream> {
        let (s, _) = l.accept().await?;
        s.set_nodelay(true)?;
        Ok(s)
    }

    fn now(&self) -> Duration {
        self.start.elapsed()
    }

    fn tune(
        stream: &tokio::net::TcpStream,
        tuning: &crate::workload::peers::TcpTuning,
    ) -> io::Result<()> {
        let socket = socket2::SockRef::from(stream);
        socket.set_tcp_keepalive(
            &socket2::TcpKeepalive::new()
                .with_time(tuning.keepalive)
                .with_interval(tuning.keepalive)
                .with_retries(tuning.keepalive_probes),
        )?;
        match tuning.user_timeout {
            Some(timeout) => socket.set_tcp_user_timeout(Some(timeout)),
            None => Ok(()),
        }
    }

    async fn open_inbound(&self, port: u16) -> io::Result<Box<dyn std::any::Any + Send>> {
        use netmend::firewall::{detect, open, Protocol, Request};
        // Called on the host's thread, inside its namespace: the commands
        // the engine runs inherit it. (A few milliseconds of blocking, once,
        // before the server starts.)
        let other = |e: String| io::Error::other(e);
        let request = Request::new("netmend-server", &std::process::id().to_string())
            .map_err(|e| other(e.to_string()))?
            .allow(Protocol::Tcp, &[port]);
        let manager = detect().map_err(|e| other(e.to_string()))?;
        let guard = open(&request, &manager).map_err(|e| other(e.to_string()))?;
        Ok(Box::new(guard))
    }

    async fn monitor(&self, debounce: Debounce) -> Option<Monitor> {
        // Called on the host's thread: the monitor watches its namespace.
        match Monitor::linux(debounce).await {
            Ok(m) => Some(m),
            Err(e) => {
                tracing::warn!(error = %e, "no network monitor");
                None
            }
        }
    }
}

/// How long the control loop may sleep: until the next fault, and never so
/// long that the end of the workload goes unnoticed for more than 10 ms.
/// A time-ordered fault schedule a netns run works through: the path's
/// ([`PathFaults`]) or the brokers' (the signaling run's).
pub(crate) trait FaultSchedule {
    /// Applies every action due by `now`; `(scheduled, in effect)` for each.
    async fn apply_due(
        &mut self,
        now: Duration,
        net: &NetnsNet,
    ) -> Result<Vec<(Duration, Duration)>, LabError>;
    /// How long after `now` the next action is due (`None`: none left).
    fn next_due(&self, now: Duration) -> Option<Duration>;
}

impl FaultSchedule for PathFaults<'_> {
    async fn apply_due(
        &mut self,
        now: Duration,
        net: &NetnsNet,
    ) -> Result<Vec<(Duration, Duration)>, LabError> {
        PathFaults::apply_due(self, now, net).await
    }

    fn next_due(&self, now: Duration) -> Option<Duration> {
        PathFaults::next_due(self, now)
    }
}

/// The control loop of every netns run (stream, command, signaling): applies
/// each fault when it is due and records when it took effect, until `over`
/// returns the run's end (`Some`) or the deadline passes (`None`). It wakes
/// for the next fault or every 10 ms, whichever comes first.
pub(crate) async fn control<F: FaultSchedule, T>(
    faults: &mut F,
    net: &NetnsNet,
    deadline: Duration,
    rec: Option<&Recorder>,
    mut over: impl FnMut() -> Result<Option<T>, LabError>,
) -> Result<Option<T>, LabError> {
    loop {
        let now = net.now();
        for (scheduled, at) in faults.apply_due(now, net).await? {
            if let Some(rec) = rec {
                rec.fault_applied(scheduled, at);
            }
        }
        if let Some(end) = over()? {
            return Ok(Some(end));
        }
        if now >= deadline {
            return Ok(None);
        }
        let wait = faults
            .next_due(now)
            .unwrap_or(Duration::MAX)
            .min(Duration::from_millis(10));
        tokio::time::sleep(wait).await;
    }
}

/// The scenario's lab: its router is the middlebox, client and server hang
/// off it.
pub fn lab_spec(s: &Scenario) -> LabSpec {
    let mut hosts = vec![s.topology.client.clone(), s.topology.server.clone()];
    if dns::needed(&s.schedule()) {
        hosts.push(dns::HOST.to_string());
    }
    LabSpec {
        router: s.topology.middlebox.clone(),
        hosts,
    }
}

/// Runs `run` on a control runtime of its own (the lab's hosts run on
/// threads of theirs).
fn block_on<T>(run: impl Future<Output = Result<T, BackendError>>) -> Result<T, BackendError> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| BackendError::Netns(format!("control runtime: {e}")))?
        .block_on(run)
}

/// Runs one variant of the stream scenario `s`, planned as `plan`, in a
/// fresh lab and returns what it recorded.
///
/// # Errors
///
/// The lab could not be built, changed or torn down, or lost its path.
pub fn run_stream(
    s: &Scenario,
    plan: &StreamPlan,
    variant: Variant,
    seed: u64,
) -> Result<Recording, BackendError> {
    block_on(run_in_lab(s, plan, variant, seed))
}

/// Runs one variant of the signaling scenario `s`, planned as `plan`, in
/// a fresh lab and returns what it recorded.
///
/// # Errors
///
/// The lab or its brokers could not be started, changed or torn down.
pub fn run_signaling(
    s: &Scenario,
    plan: &SignalingPlan,
    variant: Variant,
) -> Result<Recording, BackendError> {
    block_on(signaling::run_in_lab(s, plan, variant))
}

async fn run_in_lab(
    s: &Scenario,
    plan: &StreamPlan,
    variant: Variant,
    seed: u64,
) -> Result<Recording, BackendError> {
    let topo = &s.topology;
    let mut lab = Lab::build(&lab_spec(s)).await?;
    faults::prepare(&mut lab, s).await?;
    // A host firewall is in place before the programs start; its ruleset
    // must be the same after the run as before it (the engine's server
    // takes its opening away when it stops).
    let walled = match plan.host_firewall {
        Some(flavour) => {
            faults::install_host_firewall(&lab, &topo.server, flavour)?;
            Some(faults::host_ruleset(&lab, &topo.server)?)
        }
        None => None,
    };
    let v6 = s.listens_v6();
    let client = lab.attachment(&topo.client)?.clone();
    let server = lab.attachment(&topo.server)?.clone();

    // The lab's name service: one address per name, or (dual-stack) the
    // IPv6 one first, then the IPv4 one, as RFC 6724 orders them.
    let names = |a: &lab::Attachment| match topo.ip {
        IpVersion::Dual => vec![a.host_addr(true), a.host_addr(false)],
        _ => vec![a.host_addr(v6)],
    };
    let addresses: HashMap<String, Vec<IpAddr>> = [
        (topo.server.clone(), names(&server)),
        (topo.client.clone(), names(&client)),
    ]
    .into();
    // Where the names change or go away, a real DNS server gives them.
    let hosts = dns::hosts_file(addresses.iter().map(|(k, v)| (k.as_str(), v.as_slice())));
    let mut name_server = dns::NameServer::for_schedule(&lab, &s.schedule(), &hosts, v6)?;
    let name_server_addr = name_server.as_ref().map(dns::NameServer::address);
    let mut faults = PathFaults::new(&lab, s, seed, s.schedule(), name_server.as_mut())?;
    let rec = Recorder::tapped(plan.spec.total, plan.received.clone());
    let mitigation = plan.mitigation.clone();
    let start = Instant::now();
    let net = NetnsNet::with_names(addresses, start, v6).with_name_server(name_server_addr);

    let (port, config, server_rec, server_net) = (
        topo.port,
        mitigation.config.clone(),
        rec.clone(),
        net.clone(),
    );
    let chosen = plan.programs(variant);
    if chosen.peer == Some(Peer::MptcpMultipath) {
        mptcp::allow_subflows(&lab, &[&topo.client, &topo.server])?;
        faults.add_mptcp_endpoints();
    }
    // The server: a task on a thread in its namespace, or — when the
    // scenario kills it — real processes.
    let server_task = match &plan.servers {
        Some(events) => {
            let launch = server::ServerLaunch {
                host: topo.server.clone(),
                addr: server.host_addr(v6),
                port,
                engine: chosen.engine_server.is_some(),
                store: plan.store,
                timers: (
                    config.keepalive_interval,
                    config.dead_after,
                    config.handshake_timeout,
                ),
                herd_port: plan.herd.as_ref().map(|h| h.port),
            };
            Server::Processes(server::ServerProcesses::start(
                &lab, &launch, events, start, &rec,
            )?)
        }
        None => Server::Task(server_task(
            &lab,
            topo,
            &server_net,
            server_rec,
            chosen,
            (config, plan.spec.total),
        )?),
    };

    let spec = plan.spec.clone();
    let floods = plan.floods.clone();
    let flood_task = if floods.is_empty() {
        None
    } else {
        let (net, host) = (net.clone(), topo.server.clone());
        Some(HostTask::spawn(
            lab.namespace(&topo.client)?,
            &format!("{}-flood", topo.client),
            move || Ok(programs::flood(net, host, port, floods)),
        )?)
    };
    // The herd beside the client, in its namespace (a herd comes with a
    // server restart: its server is in the server's processes).
    let herd_task = match plan.herd.clone() {
        None => None,
        Some(herd) => {
            let (net, host, rec) = (net.clone(), topo.server.clone(), rec.clone());
            let engine = chosen.engine_client;
            Some(HostTask::spawn(
                lab.namespace(&topo.client)?,
                &format!("{}-herd", topo.client),
                move || Ok(crate::workload::herd::herd(net, host, *herd, engine, rec)),
            )?)
        }
    };
    // The client: a task on a thread in its namespace, or — when the
    // scenario restarts its process — real processes.
    let client = if plan.restarts.is_empty() {
        let (client_rec, client_net) = (rec.clone(), net.clone());
        Client::Task(HostTask::spawn(
            lab.namespace(&topo.client)?,
            &topo.client,
            move || {
                Ok(async move {
                    match chosen.peer {
                        Some(peer) => {
                            peers::client(peer, client_net, spec, &mitigation, client_rec).await;
                        }
                        None if chosen.engine_client => {
                            programs::mitigated_client(client_net, spec, mitigation, client_rec)
                                .await
                        }
                        None => programs::baseline_client(client_net, spec, client_rec).await,
                    }
                })
            },
        )?)
    } else {
        let bin = restart::netmend_binary().ok_or_else(|| {
            LabError::Broken(format!(
                "no netmend binary for the client process (set {})",
                restart::BIN_ENV
            ))
        })?;
        let launch = restart::Launch {
            bin,
            host: topo.client.clone(),
            mitigated: chosen.engine_client,
            server: SocketAddr::new(server.host_addr(v6), port),
            total: spec.total,
            chunk: spec.chunk,
            rate: spec.rate,
        };
        Client::Processes(restart::ClientProcesses::start(
            &lab,
            &launch,
            &plan.restarts,
            start,
            &rec,
        )?)
    };

    // Over when the client is done, or its thread ended without finishing
    // its work (it panicked).
    control(&mut faults, &net, s.expect.deadline.0, Some(&rec), || {
        let gone = matches!(&client, Client::Task(t) if t.is_finished());
        Ok((rec.is_client_done() || gone).then_some(()))
    })
    .await?;
    let mut recording = rec.snapshot(start.elapsed());
    match client {
        Client::Task(t) => t.stop()?,
        Client::Processes(p) => p.stop(),
    }
    if let Some(flood) = flood_task {
        flood.stop()?;
    }
    if let Some(herd) = herd_task {
        herd.stop()?;
    }
    match server_task {
        Server::Task(t) => t.stop()?,
        Server::Processes(p) => p.stop()?,
    }
    if let Some(before) = walled {
        let after = faults::host_ruleset(&lab, &topo.server)?;
        if after != before {
            recording.residue = Some(format!(
                "the server's ruleset differs after the run:\n{after}"
            ));
        }
        // The firewall never heals; the lab's own path check below must
        // see the path without it.
        lab.exec(&topo.server, &["nft", "flush", "ruleset"], None)?;
    }
    faults.stop()?;
    // A lab that lost its path would have the engine blamed for it: once
    // every fault has healed, a new connection must get through.
    let elapsed = start.elapsed();
    if s.faults.iter().all(|f| f.healed_at().0 <= elapsed) {
        check_path(&lab, s, &net).await?;
    }
    lab.teardown();
    Ok(recording)
}

/// The server of a stream run as a task on a thread in its namespace.
fn server_task(
    lab: &Lab,
    topo: &crate::scenario::Topology,
    net: &NetnsNet,
    rec: Recorder,
    chosen: crate::plan::Programs,
    (config, total): (netmend::session::Config, u64),
) -> Result<HostTask, LabError> {
    let (port, server_net) = (topo.port, net.clone());
    HostTask::spawn(lab.namespace(&topo.server)?, &topo.server, move || {
        server_net
            .prebind(port, Listen::of(chosen.peer))
            .map(|()| async move {
                let served = match (chosen.peer, chosen.engine_server) {
                    (Some(peer), _) => {
                        let idle = (config.keepalive_interval, config.dead_after);
                        peers::server(peer, server_net, port, total, idle, rec).await
                    }
                    (None, None) => {
                        programs::baseline_server(server_net, port, rec, chosen.report_progress)
                            .await
                    }
                    (None, Some(limits)) => {
                        programs::mitigated_server(
                            server_net,
                            port,
                            config,
                            limits,
                            (chosen.watch_sessions, chosen.open_firewall),
                            rec,
                            None,
                        )
                        .await
                    }
                };
                if let Err(e) = served {
                    tracing::warn!(error = %e, "server stopped");
                }
            })
    })
}

/// How the server of a stream run runs.
enum Server {
    /// A task on a thread in the server's namespace.
    Task(HostTask),
    /// Real processes (a server restart or failover).
    Processes(server::ServerProcesses),
}

/// How the client of a stream run runs.
enum Client {
    /// A task on a thread in the client's namespace.
    Task(HostTask),
    /// Real processes (a process-restart scenario).
    Processes(restart::ClientProcesses),
}

/// Checks that the lab carries a new TCP connection from the client to
/// the server's scenario port (its server has stopped; a listener stands in
/// for it), within 3 s.
///
/// # Errors
///
/// [`LabError::Broken`] when it does not; the lab's own errors.
pub async fn check_path(lab: &Lab, s: &Scenario, net: &NetnsNet) -> Result<(), LabError> {
    let topo = &s.topology;
    let (port, server_net, client_net) = (topo.port, net.clone(), net.clone());
    let listener = HostTask::spawn(lab.namespace(&topo.server)?, "path-check", move || {
        Ok(async move {
            if let Ok(l) = server_net.bind(port).await {
                while NetnsNet::accept(&l).await.is_ok() {}
            }
        })
    })?;
    let (tx, rx) = std::sync::mpsc::channel();
    let server = topo.server.clone();
    let probe = HostTask::spawn(lab.namespace(&topo.client)?, "path-check", move || {
        Ok(async move {
            let give_up = tokio::time::Instant::now() + Duration::from_secs(3);
            // Any of the server's addresses will do: a dual-stack lab
            // whose IPv6 stays blackholed to the end still carries IPv4.
            let any_address = || async {
                for addr in client_net.resolve(&server, port).await.unwrap_or_default() {
                    let attempt = tokio::time::timeout(
                        Duration::from_millis(500),
                        client_net.connect_addr(&server, addr, TransportHint::default()),
                    );
                    if let Ok(Ok(_)) = attempt.await {
                        return true;
                    }
                }
                false
            };
            let reached = loop {
                match any_address().await {
                    true => break true,
                    _ if tokio::time::Instant::now() >= give_up => break false,
                    _ => tokio::time::sleep(Duration::from_millis(100)).await,
                }
            };
            let _ = tx.send(reached);
        })
    })?;
    let waited = Instant::now();
    while !probe.is_finished() && waited.elapsed() < Duration::from_secs(5) {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    probe.stop()?;
    listener.stop()?;
    match rx.try_recv() {
        Ok(true) => Ok(()),
        _ => Err(LabError::Broken(format!(
            "after every fault healed, {} could not connect to {}:{port}",
            topo.client, topo.server
        ))),
    }
}
