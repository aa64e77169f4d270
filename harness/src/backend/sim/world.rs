//! The network the simulated client's monitor sees: turmoil gives a host one
//! address and no interfaces, so the simulation reports, as a kernel would,
//! the changes its faults stand for.
//!
//! The client starts on `eth0` (198.18.1.2/24 and 2001:db8:0:1::2/64,
//! gateways .1 and ::1); `eth1` exists but is down until a NIC swap moves
//! the default routes to it (198.18.3.0/24, 2001:db8:0:3::/64) and takes
//! `eth0` away. Each fault reports the changes, in the order, that the
//! netns lab's kernel reports for it: both families, and a link that goes
//! down and loses its addresses before it is removed — a program that
//! reacts to every notification reacts as often on both backends.

use crate::fault::Action;
use netmend::monitor::{Address, Change, DefaultRoute, Family, Interface, Snapshot};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

const ETH0: u32 = 2;
const ETH1: u32 = 3;

fn interface(index: u32, up: bool, carrier: bool) -> Interface {
    Interface {
        index,
        name: format!("eth{}", index - ETH0),
        up,
        carrier,
    }
}

/// The addresses of subnet `net` (host `.2`, gateway `gw`) in both families.
fn v4(net: u8, host: u8) -> IpAddr {
    IpAddr::V4(Ipv4Addr::new(198, 18, net, host))
}

fn v6(net: u8, host: u8) -> IpAddr {
    IpAddr::V6(Ipv6Addr::new(
        0x2001,
        0xdb8,
        0,
        net.into(),
        0,
        0,
        0,
        host.into(),
    ))
}

fn routes(interface: u32, net: u8, gw: u8) -> [DefaultRoute; 2] {
    [
        DefaultRoute {
            family: Family::V4,
            gateway: Some(v4(net, gw)),
            interface,
            metric: 0,
        },
        DefaultRoute {
            family: Family::V6,
            gateway: Some(v6(net, gw)),
            interface,
            metric: 1024,
        },
    ]
}

fn addresses(interface: u32, net: u8) -> [Address; 2] {
    [
        Address {
            interface,
            ip: v4(net, 2),
            prefix_len: 24,
        },
        Address {
            interface,
            ip: v6(net, 2),
            prefix_len: 64,
        },
    ]
}

/// The client's network when the run starts.
pub fn initial() -> Snapshot {
    let mut s = Snapshot::default();
    let mut changes = vec![
        Change::Link(interface(ETH0, true, true)),
        Change::Link(interface(ETH1, false, false)),
    ];
    changes.extend(addresses(ETH0, 1).map(Change::AddressAdded));
    changes.extend(routes(ETH0, 1, 1).map(Change::DefaultRouteAdded));
    for c in changes {
        s.apply(&c);
    }
    s
}

/// What the client's kernel would report for `action`.
pub fn changes(action: &Action) -> Vec<Change> {
    match action {
        Action::NicSwap { .. } => {
            let mut out = vec![Change::Link(interface(ETH1, true, true))];
            out.extend(addresses(ETH1, 3).map(Change::AddressAdded));
            out.extend(routes(ETH1, 3, 1).map(Change::DefaultRouteReplaced));
            out.push(Change::Link(interface(ETH0, false, false)));
            out.extend(addresses(ETH0, 1).map(Change::AddressRemoved));
            out.push(Change::LinkRemoved(ETH0));
            out
        }
        Action::GatewayChange { .. } => routes(ETH0, 1, 254)
            .map(Change::DefaultRouteReplaced)
            .to_vec(),
        Action::Carrier { lost } => vec![Change::Link(interface(ETH0, true, !lost))],
        Action::RouteLoss {
            host: crate::scenario::HostRole::Client,
            lost,
        } => routes(ETH0, 1, 1)
            .map(|r| {
                if *lost {
                    Change::DefaultRouteRemoved(r)
                } else {
                    Change::DefaultRouteAdded(r)
                }
            })
            .to_vec(),
        Action::LinkDown {
            host: crate::scenario::HostRole::Client,
            down,
        } => vec![Change::Link(interface(ETH0, true, !down))],
        _ => Vec::new(),
    }
}
