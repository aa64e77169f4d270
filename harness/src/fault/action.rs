//! The changes a fault makes to the world: the vocabulary both backends
//! implement, each change once (`backend::path` and `backend::sim` for the
//! simulated network, `backend::netns::faults` for the real one).

use super::{Direction, HostRole};
use std::time::Duration;

/// One change to the world at a point in time, as both backends apply it.
#[derive(Clone, Debug, PartialEq)]
pub enum Action {
    /// Reset every established flow.
    Reset,
    /// The lab's name server stops answering (`true`) or answers again.
    NameServiceDown(bool),
    /// The middlebox loses the state of every flow it carries and drops
    /// their later segments (a stateful firewall reloaded); new flows pass.
    ForgetFlows,
    /// Start (`true`) or end a blackhole.
    Blackhole(bool),
    /// Start (`true`) or end dropping every IPv6 packet (IPv4 passes).
    Ipv6Blackhole(bool),
    /// The path's MTU falls to this many bytes and the ICMP "too big"
    /// that would say so is dropped (`None`: the links' MTU again, ICMP
    /// passes).
    PathMtu(Option<u32>),
    /// The middlebox forgets a flow that carried nothing for this long
    /// (its NAT mapping or conntrack entry expires) and drops the flow's
    /// later segments; `None`: flows are kept however long they idle.
    NatIdleTimeout(Option<Duration>),
    /// Start or heal a partition of the client's link.
    Partition {
        /// Which way.
        direction: Direction,
        /// Start (`true`) or heal.
        on: bool,
    },
    /// Set the per-hop one-way latency and its spread.
    Latency {
        /// Latency of each hop.
        per_hop: Duration,
        /// Spread around it.
        jitter: Duration,
    },
    /// Set the path's loss probability.
    Loss(f64),
    /// Limit the path to bytes per second, `None` for unlimited.
    Bandwidth(Option<u64>),
    /// Take a host's carrier away (`down`) or give it back.
    LinkDown {
        /// Whose link.
        host: HostRole,
        /// Down (`true`) or back up.
        down: bool,
    },
    /// Give a host a new address on its link.
    AddressChange {
        /// Which host.
        host: HostRole,
    },
    /// Remove (`lost`) or restore a host's default routes.
    RouteLoss {
        /// Which host.
        host: HostRole,
        /// Removed (`true`) or restored.
        lost: bool,
    },
    /// Move the client's default route to its second NIC (new address)
    /// and take the first away; `routable`: whether the new path carries
    /// traffic yet; `captive`: whether its gateway intercepts TCP.
    NicSwap {
        /// Carries traffic at once.
        routable: bool,
        /// A captive portal answers every new TCP connection.
        captive: bool,
    },
    /// Change the client's gateway on the same interface; the new gateway
    /// knows none of the old flows.
    GatewayChange {
        /// Carries traffic at once.
        routable: bool,
        /// A captive portal answers every new TCP connection.
        captive: bool,
    },
    /// The new path (after a swap or gateway change) carries traffic to the
    /// real server (no more drops, no more portal).
    Routable,
    /// A VPN takes the client's IPv4 default route into a tunnel of this
    /// MTU whose far end forwards only the tunnel address's packets
    /// (`None`: the VPN goes down, the route returns to the NIC).
    Vpn(Option<u32>),
    /// The client's carrier goes (`lost`) or comes back.
    Carrier {
        /// Gone (`true`) or back.
        lost: bool,
    },
    /// A signaling broker crashes (`down`) or starts again, empty.
    Broker {
        /// Which broker.
        index: u8,
        /// Crashed (`true`) or restarted.
        down: bool,
    },
    /// A signaling broker freezes (`frozen`, SIGSTOP) or thaws.
    BrokerFreeze {
        /// Which broker.
        index: u8,
        /// Frozen (`true`) or thawed.
        frozen: bool,
    },
    /// Traffic between a peer (both if `None`) and a broker is dropped
    /// (`blocked`) or flows again.
    BrokerBlock {
        /// Which broker.
        index: u8,
        /// Which peer.
        host: Option<HostRole>,
        /// Dropped (`true`) or flowing.
        blocked: bool,
    },
    /// A hostile publisher sends `count` forgeries through a broker.
    Forge {
        /// Which broker.
        index: u8,
        /// How many.
        count: u32,
    },
}

impl std::fmt::Display for Action {
    /// What the change does, in a few words (a timeline's marks).
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let host = |h: &HostRole| match h {
            HostRole::Client => "client",
            HostRole::Server => "server",
        };
        let new_path = |kind: &str, routable: bool, captive: bool| {
            let state = match (routable, captive) {
                (true, _) => "",
                (false, true) => " (captive portal)",
                (false, false) => " (not routable yet)",
            };
            format!("{kind}{state}")
        };
        match self {
            Action::Reset => write!(f, "flows reset"),
            Action::NameServiceDown(true) => write!(f, "resolver unreachable"),
            Action::NameServiceDown(false) => write!(f, "resolver back"),
            Action::ForgetFlows => write!(f, "flow state lost"),
            Action::Blackhole(true) => write!(f, "blackhole"),
            Action::Blackhole(false) => write!(f, "blackhole healed"),
            Action::Ipv6Blackhole(true) => write!(f, "IPv6 blackholed"),
            Action::Ipv6Blackhole(false) => write!(f, "IPv6 back"),
            Action::PathMtu(Some(mtu)) => write!(f, "path MTU {mtu}, ICMP too-big dropped"),
            Action::PathMtu(None) => write!(f, "path MTU restored"),
            Action::Vpn(Some(mtu)) => write!(f, "VPN up (tunnel MTU {mtu})"),
            Action::Vpn(None) => write!(f, "VPN down"),
            Action::NatIdleTimeout(Some(t)) => {
                write!(f, "idle flows forgotten after {} ms", t.as_millis())
            }
            Action::NatIdleTimeout(None) => write!(f, "idle flows kept"),
            Action::Partition { direction, on } => {
                let way = match direction {
                    Direction::Both => "both ways",
                    Direction::ClientToServer => "client to server",
                    Direction::ServerToClient => "server to client",
                };
                let state = if *on { "" } else { " healed" };
                write!(f, "partition {way}{state}")
            }
            Action::Latency { per_hop, jitter } => write!(
                f,
                "latency {} ms ± {} ms per hop",
                per_hop.as_millis(),
                jitter.as_millis()
            ),
            Action::Loss(p) => write!(f, "loss {:.0} %", p * 100.0),
            Action::Bandwidth(Some(rate)) => write!(f, "bandwidth {rate} B/s"),
            Action::Bandwidth(None) => write!(f, "bandwidth unlimited"),
            Action::LinkDown { host: h, down } => {
                write!(f, "{} link {}", host(h), if *down { "down" } else { "up" })
            }
            Action::AddressChange { host: h } => write!(f, "{} renumbered", host(h)),
            Action::RouteLoss { host: h, lost } => write!(
                f,
                "{} default route {}",
                host(h),
                if *lost { "lost" } else { "back" }
            ),
            Action::NicSwap { routable, captive } => {
                f.write_str(&new_path("NIC swap", *routable, *captive))
            }
            Action::GatewayChange { routable, captive } => {
                f.write_str(&new_path("gateway change", *routable, *captive))
            }
            Action::Routable => write!(f, "new path routable"),
            Action::Carrier { lost } => {
                write!(f, "carrier {}", if *lost { "lost" } else { "back" })
            }
            Action::Broker { index, down } => write!(
                f,
                "broker {index} {}",
                if *down { "crashed" } else { "restarted" }
            ),
            Action::BrokerFreeze { index, frozen } => write!(
                f,
                "broker {index} {}",
                if *frozen { "frozen" } else { "thawed" }
            ),
            Action::BrokerBlock {
                index,
                host: h,
                blocked,
            } => {
                let peer = h.as_ref().map_or("peers", host);
                let state = if *blocked { "blocked" } else { "unblocked" };
                write!(f, "broker {index} {state} for {peer}")
            }
            Action::Forge { index, count } => write!(f, "{count} forgeries via broker {index}"),
        }
    }
}
