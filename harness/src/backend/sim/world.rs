//! The network the simulated client's monitor sees: turmoil gives a host one
//! address and no interfaces, so the simulation reports, as a kernel would,
//! the changes its faults stand for.
//!
//! The client starts on `eth0` (198.18.1.2/24, gateway 198.18.1.1); `eth1`
//! exists but is down until a NIC swap moves the default route to it
//! (198.18.3.2/24, gateway 198.18.3.1) and takes `eth0` away.

use crate::backend::Action;
use netmend::monitor::{Address, Change, DefaultRoute, Family, Interface, Snapshot};
use std::net::{IpAddr, Ipv4Addr};

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

fn route(interface: u32, gateway: [u8; 4]) -> DefaultRoute {
    DefaultRoute {
        family: Family::V4,
        gateway: Some(IpAddr::V4(Ipv4Addr::from(gateway))),
        interface,
        metric: 0,
    }
}

fn address(interface: u32, ip: [u8; 4]) -> Address {
    Address {
        interface,
        ip: IpAddr::V4(Ipv4Addr::from(ip)),
        prefix_len: 24,
    }
}

/// The client's network when the run starts.
pub fn initial() -> Snapshot {
    let mut s = Snapshot::default();
    for c in [
        Change::Link(interface(ETH0, true, true)),
        Change::Link(interface(ETH1, false, false)),
        Change::AddressAdded(address(ETH0, [198, 18, 1, 2])),
        Change::DefaultRouteAdded(route(ETH0, [198, 18, 1, 1])),
    ] {
        s.apply(&c);
    }
    s
}

/// What the client's kernel would report for `action`.
pub fn changes(action: &Action) -> Vec<Change> {
    match action {
        Action::NicSwap { .. } => vec![
            Change::Link(interface(ETH1, true, true)),
            Change::AddressAdded(address(ETH1, [198, 18, 3, 2])),
            Change::DefaultRouteReplaced(route(ETH1, [198, 18, 3, 1])),
            Change::LinkRemoved(ETH0),
        ],
        Action::GatewayChange { .. } => {
            vec![Change::DefaultRouteReplaced(route(ETH0, [198, 18, 1, 254]))]
        }
        Action::Carrier { lost } => vec![Change::Link(interface(ETH0, true, !lost))],
        Action::LinkDown {
            host: crate::scenario::HostRole::Client,
            down,
        } => vec![Change::Link(interface(ETH0, true, !down))],
        _ => Vec::new(),
    }
}
