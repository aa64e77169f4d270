//! The network state the monitor tracks, the changes that reach it, and
//! the events that tell applications what changed. Pure data and logic: no
//! socket, no clock.

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;

/// An address family.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Family {
    /// IPv4.
    V4,
    /// IPv6.
    V6,
}

impl Family {
    /// The family of `ip`.
    pub fn of(ip: IpAddr) -> Family {
        match ip {
            IpAddr::V4(_) => Family::V4,
            IpAddr::V6(_) => Family::V6,
        }
    }
}

/// A network interface.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Interface {
    /// Kernel interface index.
    pub index: u32,
    /// Name (`eth0`, `wlan0`).
    pub name: String,
    /// Administratively up.
    pub up: bool,
    /// Has carrier (the cable is in, the radio associated).
    pub carrier: bool,
}

impl Interface {
    /// Up and with carrier: able to carry traffic.
    pub fn usable(&self) -> bool {
        self.up && self.carrier
    }
}

/// An address on an interface.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Address {
    /// Interface index.
    pub interface: u32,
    /// The address.
    pub ip: IpAddr,
    /// Prefix length.
    pub prefix_len: u8,
}

/// A default route (destination `0.0.0.0/0` or `::/0`, main table).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct DefaultRoute {
    /// Its family.
    pub family: Family,
    /// Next hop; `None` for a point-to-point route.
    pub gateway: Option<IpAddr>,
    /// Output interface index.
    pub interface: u32,
    /// Route metric (priority); the lowest wins.
    pub metric: u32,
}

/// Everything the monitor knows at one moment.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Snapshot {
    /// Interfaces by index.
    pub interfaces: BTreeMap<u32, Interface>,
    /// Every address.
    pub addresses: BTreeSet<Address>,
    /// Every default route (several may exist; see [`Snapshot::default_route`]).
    /// A multipath route is one entry per next hop, all with its metric.
    pub default_routes: BTreeSet<DefaultRoute>,
    /// `(family, interface)` pairs where the kernel ignores routes whose
    /// interface lost carrier (`net.ipv{4,6}.conf.{all,IF}.
    /// ignore_routes_with_linkdown`, either set). Elsewhere the kernel keeps
    /// using such a route — Linux's default — and so does
    /// [`Snapshot::default_route`].
    pub ignore_linkdown: BTreeSet<(Family, u32)>,
}

impl Snapshot {
    /// The default route the kernel uses for `family`: the lowest metric
    /// among those whose interface is up. A route over an interface without
    /// carrier (`linkdown`) stays a candidate unless the kernel is told to
    /// ignore such routes there ([`Snapshot::ignore_linkdown`]) — the kernel
    /// keeps sending into it, and so the path has not moved. Of the next
    /// hops of a multipath route, the one on the lowest interface index
    /// stands for it.
    pub fn default_route(&self, family: Family) -> Option<DefaultRoute> {
        self.default_routes
            .iter()
            .filter(|r| r.family == family)
            .filter(|r| {
                self.interfaces.get(&r.interface).is_some_and(|i| {
                    i.up && (i.carrier || !self.ignore_linkdown.contains(&(family, i.index)))
                })
            })
            .min_by_key(|r| (r.metric, r.interface))
            .copied()
    }

    /// The interface traffic leaves by: that of the IPv4 default route,
    /// else of the IPv6 one.
    pub fn default_interface(&self) -> Option<u32> {
        self.default_route(Family::V4)
            .or_else(|| self.default_route(Family::V6))
            .map(|r| r.interface)
    }

    /// Addresses of `family` on `interface`.
    pub fn addresses_on(&self, interface: u32, family: Family) -> impl Iterator<Item = &Address> {
        self.addresses
            .iter()
            .filter(move |a| a.interface == interface && Family::of(a.ip) == family)
    }

    /// Applies one kernel change.
    pub fn apply(&mut self, change: &Change) {
        match change {
            Change::Link(i) => {
                self.interfaces.insert(i.index, i.clone());
            }
            Change::LinkRemoved(index) => {
                self.interfaces.remove(index);
                // The kernel drops an interface's addresses and routes with
                // it without always saying so one by one.
                self.addresses.retain(|a| a.interface != *index);
                self.default_routes.retain(|r| r.interface != *index);
            }
            Change::AddressAdded(a) => {
                self.addresses.insert(*a);
            }
            Change::AddressRemoved(a) => {
                self.addresses.remove(a);
            }
            Change::DefaultRouteAdded(r) => {
                self.default_routes.insert(*r);
            }
            Change::DefaultRouteReplaced(r) => {
                // The kernel's key for a route: table, destination and
                // metric; a replace swaps gateway or interface under it.
                self.default_routes
                    .retain(|x| (x.family, x.metric) != (r.family, r.metric));
                self.default_routes.insert(*r);
            }
            Change::DefaultRouteRemoved(r) => {
                self.default_routes.remove(r);
            }
            Change::IgnoreLinkdown(set) => self.ignore_linkdown = set.clone(),
            Change::Resync(s) => *self = s.clone(),
        }
    }
}

/// One change as a source reports it (a kernel notification, or a fresh
/// full state after the source lost track).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Change {
    /// An interface appeared or its state changed.
    Link(Interface),
    /// An interface went away.
    LinkRemoved(u32),
    /// An address was added.
    AddressAdded(Address),
    /// An address was removed.
    AddressRemoved(Address),
    /// A default route was added next to any others.
    DefaultRouteAdded(DefaultRoute),
    /// A default route took the place of the one with the same family and
    /// metric (`ip route replace`, a DHCP client moving the gateway).
    DefaultRouteReplaced(DefaultRoute),
    /// A default route was removed.
    DefaultRouteRemoved(DefaultRoute),
    /// The whole state, re-read (after a socket overflow, or by a polling
    /// source); events are the difference to what was known.
    Resync(Snapshot),
    /// Where the kernel ignores routes that lost carrier changed (see
    /// [`Snapshot::ignore_linkdown`]).
    IgnoreLinkdown(BTreeSet<(Family, u32)>),
}

/// What an application hears.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Event {
    /// An interface appeared.
    InterfaceAdded(Interface),
    /// An interface went away.
    InterfaceRemoved(Interface),
    /// An interface became able to carry traffic (up with carrier).
    LinkUp(Interface),
    /// An interface lost carrier or was taken down.
    LinkDown(Interface),
    /// An address was added.
    AddressAdded(Address),
    /// An address was removed.
    AddressRemoved(Address),
    /// A family got a default route.
    DefaultRouteAdded(DefaultRoute),
    /// A family lost its default route.
    DefaultRouteRemoved(DefaultRoute),
    /// A family's default route changed gateway or interface.
    DefaultRouteChanged {
        /// Before.
        from: DefaultRoute,
        /// After.
        to: DefaultRoute,
    },
    /// Traffic now leaves by another interface (or by none).
    DefaultInterfaceChanged {
        /// Before.
        from: Option<u32>,
        /// After.
        to: Option<u32>,
    },
}

/// Every event that leads from `old` to `new`, in a fixed order: links,
/// addresses, default routes, default interface.
///
/// Events come from comparing states, never from single kernel messages, so
/// a burst, a lost message (resync) and a polling source all give the same
/// answer for the same change.
pub fn diff(old: &Snapshot, new: &Snapshot) -> Vec<Event> {
    let mut events = Vec::new();
    for (index, i) in &new.interfaces {
        match old.interfaces.get(index) {
            None => {
                events.push(Event::InterfaceAdded(i.clone()));
                if i.usable() {
                    events.push(Event::LinkUp(i.clone()));
                }
            }
            Some(was) if was.usable() != i.usable() => events.push(if i.usable() {
                Event::LinkUp(i.clone())
            } else {
                Event::LinkDown(i.clone())
            }),
            Some(_) => {}
        }
    }
    for (index, was) in &old.interfaces {
        if !new.interfaces.contains_key(index) {
            if was.usable() {
                let mut gone = was.clone();
                gone.carrier = false;
                events.push(Event::LinkDown(gone));
            }
            events.push(Event::InterfaceRemoved(was.clone()));
        }
    }
    for a in old.addresses.difference(&new.addresses) {
        events.push(Event::AddressRemoved(*a));
    }
    for a in new.addresses.difference(&old.addresses) {
        events.push(Event::AddressAdded(*a));
    }
    for family in [Family::V4, Family::V6] {
        match (old.default_route(family), new.default_route(family)) {
            (None, Some(r)) => events.push(Event::DefaultRouteAdded(r)),
            (Some(r), None) => events.push(Event::DefaultRouteRemoved(r)),
            (Some(from), Some(to))
                if (from.gateway, from.interface) != (to.gateway, to.interface) =>
            {
                events.push(Event::DefaultRouteChanged { from, to })
            }
            _ => {}
        }
    }
    let (from, to) = (old.default_interface(), new.default_interface());
    if from != to {
        events.push(Event::DefaultInterfaceChanged { from, to });
    }
    events
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::Ipv4Addr;

    fn iface(index: u32, up: bool, carrier: bool) -> Interface {
        Interface {
            index,
            name: format!("eth{index}"),
            up,
            carrier,
        }
    }

    fn route(interface: u32, gw: [u8; 4], metric: u32) -> DefaultRoute {
        DefaultRoute {
            family: Family::V4,
            gateway: Some(IpAddr::V4(Ipv4Addr::from(gw))),
            interface,
            metric,
        }
    }

    fn state(changes: &[Change]) -> Snapshot {
        let mut s = Snapshot::default();
        for c in changes {
            s.apply(c);
        }
        s
    }

    #[test]
    fn carrier_loss_moves_the_default_away_only_where_the_kernel_ignores_linkdown_routes() {
        let mut before = state(&[
            Change::Link(iface(1, true, true)),
            Change::Link(iface(2, true, true)),
            Change::DefaultRouteAdded(route(1, [198, 18, 1, 1], 100)),
            Change::DefaultRouteAdded(route(2, [198, 18, 2, 1], 600)),
        ]);
        // Linux's default (ignore_routes_with_linkdown = 0): the kernel
        // keeps sending by the route that lost carrier.
        let mut after = before.clone();
        after.apply(&Change::Link(iface(1, true, false)));
        assert_eq!(
            diff(&before, &after),
            vec![Event::LinkDown(iface(1, true, false))]
        );
        assert_eq!(after.default_interface(), Some(1));
        // With the sysctl set on eth1, it moves to the next route.
        before.apply(&Change::IgnoreLinkdown([(Family::V4, 1)].into()));
        let mut after = before.clone();
        after.apply(&Change::Link(iface(1, true, false)));
        assert_eq!(
            diff(&before, &after),
            vec![
                Event::LinkDown(iface(1, true, false)),
                Event::DefaultRouteChanged {
                    from: route(1, [198, 18, 1, 1], 100),
                    to: route(2, [198, 18, 2, 1], 600)
                },
                Event::DefaultInterfaceChanged {
                    from: Some(1),
                    to: Some(2)
                },
            ]
        );
    }

    #[test]
    fn a_multipath_route_is_one_entry_per_next_hop_and_survives_one_hop_down() {
        let mut s = state(&[
            Change::Link(iface(1, true, true)),
            Change::Link(iface(2, true, true)),
            Change::IgnoreLinkdown([(Family::V4, 1), (Family::V4, 2)].into()),
            Change::DefaultRouteAdded(route(1, [198, 18, 1, 1], 0)),
            Change::DefaultRouteAdded(route(2, [198, 18, 2, 1], 0)),
        ]);
        assert_eq!(
            s.default_route(Family::V4),
            Some(route(1, [198, 18, 1, 1], 0))
        );
        s.apply(&Change::Link(iface(1, true, false)));
        assert_eq!(
            s.default_route(Family::V4),
            Some(route(2, [198, 18, 2, 1], 0))
        );
        // Replacing the route swaps every next hop under its key.
        s.apply(&Change::DefaultRouteReplaced(route(2, [198, 18, 2, 9], 0)));
        assert_eq!(s.default_routes.len(), 1);
    }

    #[test]
    fn a_gateway_change_on_the_same_interface_is_reported() {
        let before = state(&[
            Change::Link(iface(1, true, true)),
            Change::DefaultRouteAdded(route(1, [198, 18, 1, 1], 0)),
        ]);
        let mut after = before.clone();
        after.apply(&Change::DefaultRouteRemoved(route(1, [198, 18, 1, 1], 0)));
        after.apply(&Change::DefaultRouteAdded(route(1, [198, 18, 1, 254], 0)));
        assert_eq!(
            diff(&before, &after),
            vec![Event::DefaultRouteChanged {
                from: route(1, [198, 18, 1, 1], 0),
                to: route(1, [198, 18, 1, 254], 0)
            }]
        );
    }

    #[test]
    fn a_removed_interface_takes_its_addresses_and_routes() {
        let a = Address {
            interface: 1,
            ip: IpAddr::V4(Ipv4Addr::new(198, 18, 1, 2)),
            prefix_len: 24,
        };
        let before = state(&[
            Change::Link(iface(1, true, true)),
            Change::AddressAdded(a),
            Change::DefaultRouteAdded(route(1, [198, 18, 1, 1], 0)),
        ]);
        let mut after = before.clone();
        after.apply(&Change::LinkRemoved(1));
        assert_eq!(
            diff(&before, &after),
            vec![
                Event::LinkDown(iface(1, true, false)),
                Event::InterfaceRemoved(iface(1, true, true)),
                Event::AddressRemoved(a),
                Event::DefaultRouteRemoved(route(1, [198, 18, 1, 1], 0)),
                Event::DefaultInterfaceChanged {
                    from: Some(1),
                    to: None
                },
            ]
        );
    }
}
