//! Applies a scenario's fault schedule to a lab: each [`Action`] becomes a
//! real kernel operation on the router or a host.

use super::delay::{DelayQueue, Impairment};
use super::dns::NameServer;
use super::firewall::{PathRules, Portal};
use super::host::HostTask;
use super::lab::{Attachment, Lab};
use super::{LabError, NetnsNet};
use crate::backend::portal::{self, PORTAL_PORT};
use crate::fault::Action;
use crate::scenario::{HostRole, Scenario};
use crate::workload::programs::Net;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::time::Duration;

/// The fault state of one lab, and the schedule it works through.
pub struct PathFaults<'a> {
    lab: &'a Lab,
    schedule: Vec<(Duration, Action)>,
    /// Index of the next action due.
    next: usize,
    rules: PathRules,
    delay: Option<DelayQueue>,
    impairment: Impairment,
    client: (String, Attachment),
    server: (String, Attachment),
    /// Current addresses of client and server (address changes move them).
    current: [(Ipv4Addr, Ipv6Addr); 2],
    /// Last host number handed out by an address change (hosts start at 2).
    renumbered: u8,
    /// The service port (a captive portal intercepts it).
    port: u16,
    /// The router's captive portal, when the schedule has one.
    _portal: Option<HostTask>,
    /// The client's VPN while it is up.
    vpn: Option<super::vpn::Vpn>,
    /// The lab's DNS server, where the schedule changes or fails names
    /// (borrowed: it outlives the faults, for the closing path check).
    names: Option<&'a mut NameServer>,
    /// Each address the client gains becomes an MPTCP `subflow` endpoint
    /// (the multipath MPTCP peer's path manager, see [`super::mptcp`]).
    mptcp_endpoints: bool,
}

/// Per-hop latency as the router applies it: a packet crosses two hops
/// (host → router → host) and the router is the only place that holds it.
fn path_delay(per_hop: Duration, jitter: Duration) -> (Duration, Duration) {
    (per_hop * 2, jitter * 2)
}

impl<'a> PathFaults<'a> {
    /// Installs the router's base rules (and the delay queue when the
    /// scenario has latency or loss at any point). `names` is the lab's DNS
    /// server: a DNS failure makes it unreachable, an address change
    /// publishes the new address through it.
    pub fn new(
        lab: &'a Lab,
        s: &Scenario,
        seed: u64,
        schedule: Vec<(Duration, Action)>,
        names: Option<&'a mut NameServer>,
    ) -> Result<Self, LabError> {
        let topo = &s.topology;
        let client = lab.attachment(&topo.client)?.clone();
        let server = lab.attachment(&topo.server)?.clone();
        let rules = PathRules::new(&client.router_if);
        apply_rules(lab, &rules)?;
        let (delay, jitter) = path_delay(topo.latency.0, Duration::ZERO);
        let impairment = Impairment {
            delay,
            jitter,
            loss: 0.0,
        };
        let needs_queue = !delay.is_zero()
            || schedule
                .iter()
                .any(|(_, a)| matches!(a, Action::Latency { .. } | Action::Loss(_)));
        let delay = if needs_queue {
            let q = DelayQueue::start(lab.namespace(lab.router())?, impairment, seed)?;
            divert_to_queue(lab, lab.router())?;
            Some(q)
        } else {
            None
        };
        let current = [
            (client.host_v4(), client.host_v6()),
            (server.host_v4(), server.host_v6()),
        ];
        let captive = schedule.iter().any(|(_, a)| {
            matches!(
                a,
                Action::NicSwap { captive: true, .. } | Action::GatewayChange { captive: true, .. }
            )
        });
        let portal = if captive {
            Some(HostTask::spawn(
                lab.namespace(lab.router())?,
                "portal",
                || {
                    let std = std::net::TcpListener::bind(("::", PORTAL_PORT))?;
                    std.set_nonblocking(true)?;
                    let listener = tokio::net::TcpListener::from_std(std)?;
                    Ok(portal::serve(listener))
                },
            )?)
        } else {
            None
        };
        Ok(PathFaults {
            names,
            port: topo.port,
            _portal: portal,
            current,
            lab,
            schedule,
            next: 0,
            rules,
            delay,
            impairment,
            client: (topo.client.clone(), client),
            server: (topo.server.clone(), server),
            renumbered: 2,
            vpn: None,
            mptcp_endpoints: false,
        })
    }

    /// From now on, each address the client gains (a NIC swap's, an
    /// address change's) becomes an MPTCP `subflow` endpoint.
    pub fn add_mptcp_endpoints(&mut self) {
        self.mptcp_endpoints = true;
    }

    /// Makes the client's new addresses on `ifname` MPTCP endpoints, when
    /// the run asks for it.
    fn mptcp_endpoints_for(&self, ifname: &str, addrs: [IpAddr; 2]) -> Result<(), LabError> {
        if !self.mptcp_endpoints {
            return Ok(());
        }
        for addr in addrs {
            super::mptcp::add_endpoint(self.lab, &self.client.0, ifname, addr)?;
        }
        Ok(())
    }

    /// A captive portal on the router's end of `a`, for the service port.
    fn portal_on(&self, a: &Attachment) -> Portal {
        Portal {
            iface: a.router_if.clone(),
            port: self.port,
            to4: a.router_v4(),
            to6: a.router_v6(),
            portal_port: PORTAL_PORT,
        }
    }

    fn host(&self, role: HostRole) -> &(String, Attachment) {
        match role {
            HostRole::Client => &self.client,
            HostRole::Server => &self.server,
        }
    }

    /// Applies every action due by `now` (time since the run started);
    /// returns `(scheduled, in effect)` for each: when its kernel
    /// operation had returned.
    pub async fn apply_due(
        &mut self,
        now: Duration,
        net: &NetnsNet,
    ) -> Result<Vec<(Duration, Duration)>, LabError> {
        let mut applied = Vec::new();
        while let Some((at, action)) = self.schedule.get(self.next).cloned() {
            if at > now {
                break;
            }
            tracing::debug!(?action, ?at, late = ?now.saturating_sub(at), "fault");
            // Measured again for each: applying the ones before took time.
            super::on_time(&action, at, net.now().max(now))?;
            self.apply(&action, net).await?;
            applied.push((at, net.now().max(now)));
            self.next += 1;
        }
        Ok(applied)
    }

    /// How long after `now` the next action is due (`None`: none left).
    pub fn next_due(&self, now: Duration) -> Option<Duration> {
        self.schedule
            .get(self.next)
            .map(|(at, _)| at.saturating_sub(now))
    }

    /// Applies one change; `net` learns about address changes.
    pub async fn apply(&mut self, action: &Action, net: &NetnsNet) -> Result<(), LabError> {
        let lab = self.lab;
        match action {
            // The lab's DNS server stops answering: its port 53 drops.
            Action::NameServiceDown(down) => self
                .names
                .as_ref()
                .ok_or_else(|| LabError::BadName("the lab has no name server".into()))?
                .set_unreachable(lab, *down),
            Action::Reset
            | Action::ForgetFlows
            | Action::Blackhole(_)
            | Action::Ipv6Blackhole(_)
            | Action::Partition { .. }
            | Action::Routable => {
                self.rules.apply(action);
                apply_rules(lab, &self.rules)
            }
            Action::NatIdleTimeout(timeout) => {
                // The router's own connection tracking is the NAT: its
                // established-flow timeout (whole seconds; the kernel's
                // default back without one), and no loose pickup, so a
                // segment of an expired flow is invalid and dropped.
                let (secs, loose) = match timeout {
                    Some(t) => (t.as_secs().max(1), 0),
                    None => (432_000, 1),
                };
                lab.exec(
                    lab.router(),
                    &[
                        "sysctl",
                        "-q",
                        "-w",
                        &format!("net.netfilter.nf_conntrack_tcp_timeout_established={secs}"),
                        &format!("net.netfilter.nf_conntrack_tcp_loose={loose}"),
                    ],
                    None,
                )?;
                self.rules.apply(action);
                apply_rules(lab, &self.rules)
            }
            Action::Latency { per_hop, jitter } => {
                let (delay, jitter) = path_delay(*per_hop, *jitter);
                self.impairment.delay = delay;
                self.impairment.jitter = jitter;
                self.push_impairment();
                Ok(())
            }
            Action::Loss(p) => {
                self.impairment.loss = *p;
                self.push_impairment();
                Ok(())
            }
            Action::PathMtu(mtu) => {
                // Both of the router's links, so the path is as narrow
                // both ways (a tunnel is); packets arriving too big for
                // the router's link are dropped at once, those it would
                // forward too big get the ICMP error the rules drop. The
                // filter is up before the MTU falls and stays until it is
                // back: one ICMP error let through (a few ms between the
                // two at 256 KiB/s are enough) and the sender's kernel
                // learns the path MTU for 10 min, no black hole at all.
                let ifs = [
                    self.client.1.router_if.clone(),
                    self.server.1.router_if.clone(),
                ];
                let set_mtu = |mtu: u32| -> Result<(), LabError> {
                    for dev in &ifs {
                        lab.exec(
                            lab.router(),
                            &["ip", "link", "set", "dev", dev, "mtu", &mtu.to_string()],
                            None,
                        )?;
                    }
                    Ok(())
                };
                match mtu {
                    Some(mtu) => {
                        self.rules.set_too_big_filtered(true);
                        apply_rules(lab, &self.rules)?;
                        set_mtu(*mtu)
                    }
                    None => {
                        set_mtu(crate::fault::LINK_MTU)?;
                        self.rules.set_too_big_filtered(false);
                        apply_rules(lab, &self.rules)
                    }
                }
            }
            Action::Vpn(Some(mtu)) => {
                // A second `up` replaces the first: the old one goes down
                // (route back, devices gone) before the new one is made.
                if let Some(old) = self.vpn.take() {
                    old.down(lab, &self.client).await?;
                }
                let host = self.current[HostRole::Client as usize].0;
                self.vpn = Some(super::vpn::Vpn::up(lab, &self.client, host, *mtu)?);
                Ok(())
            }
            Action::Vpn(None) => match self.vpn.take() {
                Some(vpn) => vpn.down(lab, &self.client).await,
                None => Ok(()),
            },
            Action::Bandwidth(rate) => {
                let ifs = [
                    self.client.1.router_if.clone(),
                    self.server.1.router_if.clone(),
                ];
                for dev in &ifs {
                    set_bandwidth(lab, dev, *rate)?;
                }
                Ok(())
            }
            Action::LinkDown { host, down } => {
                let router_if = self.host(*host).1.router_if.clone();
                lab.set_link_up(lab.router(), &router_if, !down).await
            }
            Action::AddressChange { host } => {
                let (name, a) = self.host(*host).clone();
                self.renumbered = self
                    .renumbered
                    .checked_add(1)
                    .filter(|n| *n < 255)
                    .ok_or_else(|| LabError::BadName("too many address changes".into()))?;
                let n = self.renumbered;
                let slot = *host as usize;
                let (old4, old6) = self.current[slot];
                let new4 = Ipv4Addr::new(198, 18, a.subnet, n);
                let new6 = Ipv6Addr::new(0x2001, 0xdb8, 0, a.subnet.into(), 0, 0, 0, n.into());
                lab.address_replace(&name, &a.host_if, old4.into(), new4.into(), 24)
                    .await?;
                lab.address_replace(&name, &a.host_if, old6.into(), new6.into(), 64)
                    .await?;
                self.current[slot] = (new4, new6);
                if *host == HostRole::Client {
                    self.mptcp_endpoints_for(&a.host_if, [new4.into(), new6.into()])?;
                }
                // Removing the old address can take the default route with
                // it; put it back as DHCP would after a renumbering.
                lab.default_route_replace(&name, a.router_v4().into(), &a.host_if)
                    .await?;
                lab.default_route_replace(&name, a.router_v6().into(), &a.host_if)
                    .await?;
                // The lab's name service follows (both families: a
                // dual-stack name has both; one family's is replaced).
                net.set_address(&name, IpAddr::V6(new6));
                net.set_address(&name, IpAddr::V4(new4));
                match self.names.as_mut() {
                    Some(names) => names.publish(&net.hosts_file()),
                    None => Ok(()),
                }
            }
            Action::NicSwap { captive, .. } => {
                let (name, old) = self.client.clone();
                let new = lab
                    .attachments()
                    .iter()
                    .find(|a| a.host == name && a.host_if != old.host_if)
                    .cloned()
                    .ok_or_else(|| LabError::BadName("the client has no second NIC".into()))?;
                // The old flows die with the move: forget them before the
                // client can see the change, or a program that reacts at
                // once would get its last bytes through on the old flow
                // while `nft` is still starting (a race, not the fault).
                self.rules.set_client_network(&new.router_if);
                if *captive {
                    self.rules.set_portal(self.portal_on(&new));
                }
                self.rules.apply(action);
                apply_rules(lab, &self.rules)?;
                lab.configure_host_side(&new).await?;
                lab.default_route_replace(&name, new.router_v4().into(), &new.host_if)
                    .await?;
                lab.default_route_replace(&name, new.router_v6().into(), &new.host_if)
                    .await?;
                self.mptcp_endpoints_for(
                    &new.host_if,
                    [new.host_v4().into(), new.host_v6().into()],
                )?;
                lab.remove_link(&name, &old.host_if).await?;
                self.client.1 = new;
                Ok(())
            }
            Action::GatewayChange { captive, .. } => {
                let (name, a) = self.client.clone();
                let (gw4, gw6) = second_gateway(&a);
                // As with a NIC swap: the old flows are gone before the
                // client hears of the new gateway.
                self.rules.set_client_network(&a.router_if);
                if *captive {
                    self.rules.set_portal(self.portal_on(&a));
                }
                self.rules.apply(action);
                apply_rules(lab, &self.rules)?;
                lab.default_route_replace(&name, gw4, &a.host_if).await?;
                lab.default_route_replace(&name, gw6, &a.host_if).await
            }
            Action::Carrier { lost } => {
                let router_if = self.client.1.router_if.clone();
                lab.set_link_up(lab.router(), &router_if, !lost).await
            }
            // Broker processes belong to the signaling run, which applies
            // these itself; validation keeps them out of path schedules.
            Action::Broker { .. }
            | Action::BrokerFreeze { .. }
            | Action::BrokerBlock { .. }
            | Action::Forge { .. } => Err(LabError::BadName(
                "a broker fault outside a signaling run".into(),
            )),
            Action::RouteLoss { host, lost } => {
                let (name, a) = self.host(*host).clone();
                if *lost {
                    lab.default_route_remove(&name, false).await?;
                    lab.default_route_remove(&name, true).await
                } else {
                    lab.default_route_replace(&name, a.router_v4().into(), &a.host_if)
                        .await?;
                    lab.default_route_replace(&name, a.router_v6().into(), &a.host_if)
                        .await
                }
            }
        }
    }

    fn push_impairment(&self) {
        if let Some(q) = &self.delay {
            q.set(self.impairment);
        }
    }

    /// Stops the delay queue (releasing what it holds).
    pub fn stop(mut self) -> Result<(), LabError> {
        match self.delay.take() {
            Some(q) => q.stop(),
            None => Ok(()),
        }
    }
}

/// The second gateway of a link (`.254`, `::fe`): the router answers there
/// too, standing in for another router on the same segment.
pub fn second_gateway(a: &Attachment) -> (IpAddr, IpAddr) {
    (
        Ipv4Addr::new(198, 18, a.subnet, 254).into(),
        Ipv6Addr::new(0x2001, 0xdb8, 0, a.subnet.into(), 0, 0, 0, 0xfe).into(),
    )
}

/// Prepares what the schedule's network changes need: a standby second NIC
/// on the client (NIC swap), a second gateway address on the client's link
/// (gateway change).
pub async fn prepare(lab: &mut Lab, s: &Scenario) -> Result<(), LabError> {
    let client = s.topology.client.as_str();
    let actions = s.schedule();
    let needs = |want: fn(&Action) -> bool| actions.iter().any(|(_, a)| want(a));
    if needs(|a| matches!(a, Action::NicSwap { .. })) {
        lab.add_link(client, true).await?;
    }
    if needs(|a| matches!(a, Action::GatewayChange { .. })) {
        let a = lab.attachment(client)?.clone();
        let (gw4, gw6) = second_gateway(&a);
        let router = lab.router().to_string();
        lab.address_add(&router, &a.router_if, gw4, 24).await?;
        lab.address_add(&router, &a.router_if, gw6, 64).await?;
    }
    Ok(())
}

/// A distribution's host firewall on `host`: inbound policy drop,
/// established flows and loopback allowed — as nftables or iptables-nft.
///
/// # Errors
///
/// The tool failed.
pub fn install_host_firewall(
    lab: &Lab,
    host: &str,
    flavour: crate::fault::FirewallFlavour,
) -> Result<(), LabError> {
    use crate::fault::FirewallFlavour;
    match flavour {
        FirewallFlavour::Nftables => lab
            .exec(
                host,
                &["nft", "-f", "-"],
                Some(
                    b"table inet filter {\n  chain input {\n    type filter hook input priority 0; policy drop;\n    ct state established,related accept\n    iif lo accept\n  }\n}\n",
                ),
            )
            .map(drop),
        FirewallFlavour::IptablesNft => {
            for tool in ["iptables-nft", "ip6tables-nft"] {
                for rule in [
                    &["-A", "INPUT", "-m", "conntrack", "--ctstate", "ESTABLISHED,RELATED", "-j", "ACCEPT"][..],
                    &["-A", "INPUT", "-i", "lo", "-j", "ACCEPT"],
                    &["-P", "INPUT", "DROP"],
                ] {
                    let mut argv = vec![tool];
                    argv.extend_from_slice(rule);
                    lab.exec(host, &argv, None)?;
                }
            }
            Ok(())
        }
    }
}

/// `nft --stateless list ruleset` on `host` (iptables-nft's rules
/// included): without counters, which any stray packet moves (CI saw one
/// IPv4 packet counted after the run and took it for a rule left behind).
///
/// # Errors
///
/// nft failed.
pub fn host_ruleset(lab: &Lab, host: &str) -> Result<String, LabError> {
    lab.exec(host, &["nft", "--stateless", "list", "ruleset"], None)
        .map(|out| String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Replaces the router's path table.
pub fn apply_rules(lab: &Lab, rules: &PathRules) -> Result<(), LabError> {
    lab.exec(
        lab.router(),
        &["nft", "-f", "-"],
        Some(rules.script().as_bytes()),
    )
    .map(drop)
}

/// Sends every forwarded packet of both families through the delay queue.
pub fn divert_to_queue(lab: &Lab, node: &str) -> Result<(), LabError> {
    let queue = super::delay::QUEUE.to_string();
    for tool in ["iptables", "ip6tables"] {
        lab.exec(
            node,
            &[
                tool,
                "-w",
                "-A",
                "FORWARD",
                "-j",
                "NFQUEUE",
                "--queue-num",
                &queue,
                "--queue-bypass",
            ],
            None,
        )?;
    }
    Ok(())
}

/// Puts a token bucket on the router's egress `dev` (`None` removes it).
/// Through `tc`: netlink-packet-route has no encoder for tbf's rate tables.
pub fn set_bandwidth(lab: &Lab, dev: &str, rate: Option<u64>) -> Result<(), LabError> {
    match rate {
        Some(bytes_per_sec) => {
            // A burst of at least 10 ms of traffic and one 64 KiB GSO packet;
            // packets wait at most 500 ms in the bucket, then drop.
            let burst = (bytes_per_sec / 100).max(64 << 10).to_string();
            let rate = format!("{}bit", bytes_per_sec * 8);
            lab.exec(
                lab.router(),
                &[
                    "tc", "qdisc", "replace", "dev", dev, "root", "tbf", "rate", &rate, "burst",
                    &burst, "latency", "500ms",
                ],
                None,
            )
            .map(drop)
        }
        None => lab
            .exec(
                lab.router(),
                &["tc", "qdisc", "del", "dev", dev, "root"],
                None,
            )
            .map(drop),
    }
}
