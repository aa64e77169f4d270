//! The monitor's sans-IO core: changes and instants in; events, one
//! coalesced decision per burst, and a deadline out.

use super::state::{diff, Change, Event, Family, Snapshot};
use std::collections::VecDeque;
use std::time::{Duration, Instant};

/// How bursts of changes become decisions.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Debounce {
    /// A burst ends after this much quiet.
    pub quiet: Duration,
    /// …or this long after it began, however noisy it stays.
    pub max_delay: Duration,
}

impl Default for Debounce {
    /// 150 ms of quiet, at most 1 s: longer than a kernel's burst for one
    /// Wi-Fi roam or DHCP renewal, short enough not to delay recovery.
    fn default() -> Self {
        Debounce {
            quiet: Duration::from_millis(150),
            max_delay: Duration::from_secs(1),
        }
    }
}

/// What traffic to the outside depends on: per family, the default route's
/// interface and gateway and the addresses on that interface.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Path {
    /// Per family (IPv4, IPv6): `(interface, gateway)` of the default route.
    pub routes: [Option<(u32, Option<std::net::IpAddr>)>; 2],
    /// Addresses on the default interfaces.
    pub sources: Vec<std::net::IpAddr>,
}

impl Path {
    /// The path `s` describes.
    pub fn of(s: &Snapshot) -> Path {
        let mut routes = [None, None];
        let mut sources = Vec::new();
        for (slot, family) in [Family::V4, Family::V6].into_iter().enumerate() {
            if let Some(r) = s.default_route(family) {
                routes[slot] = Some((r.interface, r.gateway));
                sources.extend(s.addresses_on(r.interface, family).map(|a| a.ip));
            }
        }
        Path { routes, sources }
    }

    /// Whether any family has a default route.
    pub fn exists(&self) -> bool {
        self.routes.iter().any(Option::is_some)
    }
}

/// One decision: a burst of changes that touched the path, coalesced.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MajorChange {
    /// Every event of the burst, in order.
    pub events: Vec<Event>,
    /// The state when the burst began.
    pub before: Snapshot,
    /// The state now.
    pub after: Snapshot,
    /// The path differs between `before` and `after` (a flap that ends
    /// where it began does not).
    pub path_changed: bool,
}

struct Burst {
    began: Instant,
    last: Instant,
    before: Snapshot,
    events: Vec<Event>,
}

/// The state machine.
pub struct MonitorCore {
    snapshot: Snapshot,
    debounce: Debounce,
    burst: Option<Burst>,
    decisions: VecDeque<MajorChange>,
}

/// Whether `e` can change how traffic leaves: anything on the default
/// interface before or after, or about default routes.
fn touches_path(e: &Event, old: &Snapshot, new: &Snapshot) -> bool {
    let on_default =
        |i: u32| old.default_interface() == Some(i) || new.default_interface() == Some(i);
    match e {
        Event::DefaultRouteAdded(_)
        | Event::DefaultRouteRemoved(_)
        | Event::DefaultRouteChanged { .. }
        | Event::DefaultInterfaceChanged { .. } => true,
        Event::LinkUp(i) | Event::LinkDown(i) => on_default(i.index),
        Event::AddressAdded(a) | Event::AddressRemoved(a) => on_default(a.interface),
        Event::InterfaceAdded(_) | Event::InterfaceRemoved(_) => false,
    }
}

impl MonitorCore {
    /// A core that starts from `initial`.
    pub fn new(initial: Snapshot, debounce: Debounce) -> Self {
        MonitorCore {
            snapshot: initial,
            debounce,
            burst: None,
            decisions: VecDeque::new(),
        }
    }

    /// What is known now.
    pub fn snapshot(&self) -> &Snapshot {
        &self.snapshot
    }

    /// Applies a change at `now` and returns the events it caused.
    pub fn handle_change(&mut self, change: &Change, now: Instant) -> Vec<Event> {
        let old = self.snapshot.clone();
        self.snapshot.apply(change);
        let events = diff(&old, &self.snapshot);
        if events.iter().any(|e| touches_path(e, &old, &self.snapshot)) {
            let burst = self.burst.get_or_insert_with(|| Burst {
                began: now,
                last: now,
                before: old,
                events: Vec::new(),
            });
            burst.last = now;
            burst.events.extend(events.iter().cloned());
        } else if let Some(b) = &mut self.burst {
            // Part of the story, but not a reason to wait longer.
            b.events.extend(events.iter().cloned());
        }
        events
    }

    /// When [`MonitorCore::handle_timeout`] must be called next.
    #[must_use]
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.burst
            .as_ref()
            .map(|b| (b.last + self.debounce.quiet).min(b.began + self.debounce.max_delay))
    }

    /// Ends a burst whose time has come.
    pub fn handle_timeout(&mut self, now: Instant) {
        if self.poll_timeout().is_some_and(|t| t <= now) {
            if let Some(b) = self.burst.take() {
                let after = self.snapshot.clone();
                let path_changed = Path::of(&b.before) != Path::of(&after);
                self.decisions.push_back(MajorChange {
                    events: b.events,
                    before: b.before,
                    after,
                    path_changed,
                });
            }
        }
    }

    /// The next decision, if one is ready.
    #[must_use]
    pub fn poll_decision(&mut self) -> Option<MajorChange> {
        self.decisions.pop_front()
    }
}

#[cfg(test)]
mod tests {
    use super::super::state::{DefaultRoute, Interface};
    use super::*;
    use proptest::prelude::*;
    use std::net::{IpAddr, Ipv4Addr};

    fn link(index: u32, carrier: bool) -> Change {
        Change::Link(Interface {
            index,
            name: format!("eth{index}"),
            up: true,
            carrier,
        })
    }

    fn default_via(interface: u32, last: u8) -> Change {
        Change::DefaultRouteAdded(DefaultRoute {
            family: Family::V4,
            gateway: Some(IpAddr::V4(Ipv4Addr::new(198, 18, interface as u8, last))),
            interface,
            metric: 0,
        })
    }

    fn base() -> Snapshot {
        let mut s = Snapshot::default();
        for c in [link(1, true), default_via(1, 1)] {
            s.apply(&c);
        }
        s
    }

    proptest! {
        /// However a carrier flaps inside one debounce window, the burst
        /// gives exactly one decision, and it says the path did not change
        /// when the flapping ends where it began.
        #[test]
        fn a_flap_burst_is_one_decision(gaps in proptest::collection::vec(1u64..100, 1..20)) {
            let t0 = Instant::now();
            let d = Debounce { quiet: Duration::from_millis(150), max_delay: Duration::from_secs(5) };
            let mut core = MonitorCore::new(base(), d);
            let mut now = t0;
            for (i, gap) in gaps.iter().enumerate() {
                now += Duration::from_millis(*gap);
                core.handle_change(&link(1, i % 2 == 1), now);
                core.handle_timeout(now);
                prop_assert!(core.poll_decision().is_none(), "decided mid-burst");
            }
            if gaps.len() % 2 == 1 {
                now += Duration::from_millis(1);
                core.handle_change(&link(1, true), now);
            }
            let due = core.poll_timeout().expect("a burst is open");
            prop_assert_eq!(due, now + d.quiet);
            core.handle_timeout(due);
            let decision = core.poll_decision().expect("one decision");
            prop_assert!(!decision.path_changed);
            prop_assert!(core.poll_decision().is_none());
            prop_assert!(core.poll_timeout().is_none());
        }
    }

    #[test]
    fn a_gateway_change_is_a_path_change_decided_after_the_quiet_period() {
        let t0 = Instant::now();
        let mut core = MonitorCore::new(base(), Debounce::default());
        let mut s = base();
        s.default_routes.clear();
        core.handle_change(&Change::Resync(s), t0);
        core.handle_change(&default_via(1, 254), t0 + Duration::from_millis(10));
        core.handle_timeout(t0 + Duration::from_millis(100));
        assert!(core.poll_decision().is_none());
        core.handle_timeout(t0 + Duration::from_millis(160));
        let d = core.poll_decision().expect("decided");
        assert!(d.path_changed);
        assert_eq!(d.events.len(), 4, "{:?}", d.events);
    }

    #[test]
    fn max_delay_bounds_a_burst_that_never_goes_quiet() {
        let t0 = Instant::now();
        let d = Debounce {
            quiet: Duration::from_millis(100),
            max_delay: Duration::from_millis(300),
        };
        let mut core = MonitorCore::new(base(), d);
        for i in 0..10u64 {
            let now = t0 + Duration::from_millis(50 * i);
            core.handle_change(&link(1, i % 2 == 1), now);
            core.handle_timeout(now);
        }
        let decided: Vec<_> = std::iter::from_fn(|| core.poll_decision()).collect();
        assert_eq!(decided.len(), 1, "the burst was cut at 300 ms");
    }

    #[test]
    fn changes_off_the_path_are_not_decisions() {
        let t0 = Instant::now();
        let mut core = MonitorCore::new(base(), Debounce::default());
        let events = core.handle_change(&link(7, true), t0);
        assert_eq!(events.len(), 2, "added and up");
        assert_eq!(core.poll_timeout(), None);
    }
}
