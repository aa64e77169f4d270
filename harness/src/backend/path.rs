//! The path between client and server as packet rules: the state a router
//! keeps (flow epochs, blackholes, partitions, a network not routable yet,
//! a captive portal, links down) and the verdict it gives each segment.
//!
//! This is the sans-IO half of every path fault: [`PathState::apply`] takes
//! the schedule's [`Action`]s, [`PathState::verdict`] judges one segment.
//! The netns backend renders the same state as an nftables table (see
//! `netns::firewall`); the sim backend asks for a verdict before each
//! segment leaves a host (see `sim::path`). Both make the same decisions in
//! the same order, so a scenario shows the same failure on both.
//!
//! Flows are told apart by the epoch they were born in (netns: a conntrack
//! mark). A reset or blackhole ends the epoch, and the segments of an ended
//! epoch's flows are from then on answered with a TCP reset (reset) or
//! silently dropped (blackhole, new gateway, new network: the middlebox
//! lost their state), while new flows pass.

use crate::fault::Action;
use crate::scenario::{Direction, HostRole};
use std::time::Duration;

/// What happens to the flows of an ended epoch.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Fate {
    /// Their next segment is answered with a TCP reset.
    Reset,
    /// Their segments are dropped without a word, for good.
    Forgotten,
}

/// Which end of the path a segment leaves from.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Side {
    /// The client (its link is the one partitions and carrier faults cut).
    Client,
    /// The server.
    Server,
    /// Another host behind the router (a flood's clients), or the router
    /// itself: only blackholes, resets and ended epochs touch it.
    #[default]
    Other,
}

impl From<HostRole> for Side {
    fn from(role: HostRole) -> Self {
        match role {
            HostRole::Client => Side::Client,
            HostRole::Server => Side::Server,
        }
    }
}

/// One segment as the router sees it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Segment {
    /// The sender's side.
    pub from: Side,
    /// The receiver's side.
    pub to: Side,
    /// The epoch of the segment's flow (for a SYN: [`PathState::epoch`]).
    pub epoch: u32,
    /// A connection request (the first segment of a new flow).
    pub syn: bool,
    /// The flow ends at the router itself (the captive portal): the
    /// forwarding rules do not see it, only the links it crosses do.
    pub to_router: bool,
}

/// What the router does with a segment.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// Forwarded.
    Pass,
    /// Dropped on the way; the sender's TCP retransmits it later.
    Drop,
    /// Never sent: the sender's own link has no carrier. Its TCP sends it
    /// as soon as the link is back and it has anything to push.
    Unsent,
    /// Answered with a TCP reset: the sender's connection is gone.
    Reset,
    /// A new flow redirected to the router's captive portal.
    Portal,
}

/// The state of the path, changed by the schedule's actions.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PathState {
    /// Epoch given to new flows.
    epoch: u32,
    /// Fate of every ended epoch (index 0 is epoch 1).
    ended: Vec<Fate>,
    blackhole: bool,
    partition: Option<Direction>,
    /// The client's (new) network drops everything: not routable yet.
    held: bool,
    /// New flows from the client are answered by a captive portal.
    captive: bool,
    /// The client's carrier, or the link of client or server, is down.
    down: [bool; 2],
    /// The server's host firewall drops new inbound flows, unless
    /// `server_opened`.
    server_firewall: bool,
    /// The server's application opened its port in its host firewall.
    server_opened: bool,
    /// Every IPv6 packet is dropped (IPv4 passes). Only a dual-stack path
    /// can show it: sim's hosts have one family and never do.
    v6_blackhole: bool,
    /// Flows idle for longer are forgotten (a NAT mapping's lifetime). The
    /// per-flow clock is each backend's: sim's router, netns's conntrack.
    nat_idle: Option<Duration>,
    /// The client's or the server's default routes are gone: it can send
    /// nothing beyond its link (netns removes the routes themselves).
    no_route: [bool; 2],
}

impl Default for PathState {
    fn default() -> Self {
        PathState {
            epoch: 1,
            ended: Vec::new(),
            blackhole: false,
            partition: None,
            held: false,
            captive: false,
            down: [false; 2],
            server_firewall: false,
            server_opened: false,
            v6_blackhole: false,
            nat_idle: None,
            no_route: [false; 2],
        }
    }
}

impl PathState {
    /// The epoch new flows are born in.
    pub fn epoch(&self) -> u32 {
        self.epoch
    }

    /// The fate of every ended epoch, oldest first (epoch `i + 1`).
    pub fn ended(&self) -> &[Fate] {
        &self.ended
    }

    /// Whether everything is dropped right now.
    pub fn blackhole(&self) -> bool {
        self.blackhole
    }

    /// The partition of the client's link, if one is on.
    pub fn partition(&self) -> Option<Direction> {
        self.partition
    }

    /// Whether the client's network drops everything (not routable yet).
    pub fn held(&self) -> bool {
        self.held
    }

    /// Whether a captive portal answers new flows.
    pub fn captive(&self) -> bool {
        self.captive
    }

    fn end_epoch(&mut self, fate: Fate) {
        self.ended.push(fate);
        self.epoch += 1;
    }

    /// Resets every established flow; new ones pass.
    pub fn reset(&mut self) {
        self.end_epoch(Fate::Reset);
    }

    /// The router loses the state of every flow it carries.
    pub fn forget(&mut self) {
        self.end_epoch(Fate::Forgotten);
    }

    /// Starts or ends a blackhole. Starting one drops everything and makes
    /// the router forget the flows it carried, which stay dead afterwards.
    pub fn set_blackhole(&mut self, on: bool) {
        if on && !self.blackhole {
            self.forget();
        }
        self.blackhole = on;
    }

    /// Whether `side` has a default route (a host other than client and
    /// server always has).
    pub fn routed(&self, side: Side) -> bool {
        match side {
            Side::Client => !self.no_route[HostRole::Client as usize],
            Side::Server => !self.no_route[HostRole::Server as usize],
            Side::Other => true,
        }
    }

    /// How long a flow may idle before the middlebox forgets it.
    pub fn nat_idle(&self) -> Option<Duration> {
        self.nat_idle
    }

    /// Whether every IPv6 packet is dropped.
    pub fn v6_blackhole(&self) -> bool {
        self.v6_blackhole
    }

    /// Starts (`Some`) or heals (`None`) a partition of the client's link.
    pub fn set_partition(&mut self, direction: Option<Direction>) {
        self.partition = direction;
    }

    /// The client's network drops everything (`true`) or is routable.
    pub fn set_held(&mut self, held: bool) {
        self.held = held;
    }

    /// A captive portal answers new flows (`true`) or is gone.
    pub fn set_captive(&mut self, captive: bool) {
        self.captive = captive;
    }

    /// The server's host has a default-drop firewall for new inbound
    /// flows (the scenario's one service port: the model keeps no ports).
    pub fn set_server_firewall(&mut self, on: bool) {
        self.server_firewall = on;
    }

    /// The server's application opened (`true`) or closed its port in its
    /// host firewall.
    pub fn set_server_opened(&mut self, opened: bool) {
        self.server_opened = opened;
    }

    /// Applies one action of the schedule; `false` if it is not a path
    /// action (address, route, bandwidth, latency, loss and broker changes
    /// are made elsewhere).
    pub fn apply(&mut self, action: &Action) -> bool {
        match action {
            Action::Reset => self.reset(),
            Action::ForgetFlows => self.forget(),
            Action::Ipv6Blackhole(on) => self.v6_blackhole = *on,
            Action::NatIdleTimeout(t) => self.nat_idle = *t,
            Action::RouteLoss { host, lost } => self.no_route[*host as usize] = *lost,
            Action::Blackhole(on) => self.set_blackhole(*on),
            Action::Partition { direction, on } => self.set_partition(on.then_some(*direction)),
            Action::NicSwap { routable, captive } | Action::GatewayChange { routable, captive } => {
                // The old flows die with the move, before anything else.
                self.forget();
                self.held = !routable;
                self.captive = *captive;
            }
            Action::Routable => {
                self.held = false;
                self.captive = false;
            }
            Action::LinkDown { host, down } => self.down[*host as usize] = *down,
            Action::Carrier { lost } => self.down[HostRole::Client as usize] = *lost,
            _ => return false,
        }
        true
    }

    /// Whether the link of `side` carries nothing.
    fn link_down(&self, side: Side) -> bool {
        match side {
            Side::Client => self.down[HostRole::Client as usize],
            Side::Server => self.down[HostRole::Server as usize],
            Side::Other => false,
        }
    }

    /// What the router does with `seg`, in the order the netns router's
    /// table decides it: links, the portal's redirect (NAT comes before
    /// filtering), partitions, a held network, a blackhole, ended epochs.
    pub fn verdict(&self, seg: &Segment) -> Verdict {
        if self.link_down(seg.from) {
            return Verdict::Unsent;
        }
        if self.link_down(seg.to) {
            return Verdict::Drop;
        }
        // Without a route the sender's kernel cannot send it; its TCP keeps
        // retransmitting on its doubling timer (a new connect fails at once:
        // the router's `connect` asks `routed`).
        if !self.routed(seg.from) {
            return Verdict::Drop;
        }
        if seg.to_router {
            return Verdict::Pass;
        }
        // The server's own firewall (it sits on the server, after the
        // path): a new flow to it is dropped unless its port was opened.
        if seg.syn && seg.to == Side::Server && self.server_firewall && !self.server_opened {
            return Verdict::Drop;
        }
        if seg.syn && seg.from == Side::Client && self.captive {
            return Verdict::Portal;
        }
        let client_link = |from: Side| match self.partition {
            Some(Direction::Both) => from == Side::Client || seg.to == Side::Client,
            Some(Direction::ClientToServer) => from == Side::Client,
            Some(Direction::ServerToClient) => seg.to == Side::Client,
            None => false,
        };
        if client_link(seg.from) {
            return Verdict::Drop;
        }
        if self.held && (seg.from == Side::Client || seg.to == Side::Client) {
            return Verdict::Drop;
        }
        if self.blackhole {
            return Verdict::Drop;
        }
        let ended = seg
            .epoch
            .checked_sub(1)
            .and_then(|i| self.ended.get(i as usize));
        match ended {
            Some(Fate::Reset) => Verdict::Reset,
            Some(Fate::Forgotten) => Verdict::Drop,
            None => Verdict::Pass,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn data(from: Side, to: Side, epoch: u32) -> Segment {
        Segment {
            from,
            to,
            epoch,
            syn: false,
            to_router: false,
        }
    }

    fn syn(p: &PathState) -> Segment {
        Segment {
            syn: true,
            ..data(Side::Client, Side::Server, p.epoch())
        }
    }

    #[test]
    fn a_host_without_a_route_sends_nothing_until_it_is_back() {
        let mut p = PathState::default();
        assert!(p.apply(&Action::RouteLoss {
            host: HostRole::Client,
            lost: true,
        }));
        assert!(!p.routed(Side::Client) && p.routed(Side::Server) && p.routed(Side::Other));
        assert_eq!(
            p.verdict(&data(Side::Client, Side::Server, 1)),
            Verdict::Drop
        );
        // What reaches the client still arrives: its link is up.
        assert_eq!(
            p.verdict(&data(Side::Server, Side::Client, 1)),
            Verdict::Pass
        );
        p.apply(&Action::RouteLoss {
            host: HostRole::Client,
            lost: false,
        });
        assert_eq!(
            p.verdict(&data(Side::Client, Side::Server, 1)),
            Verdict::Pass
        );
    }

    #[test]
    fn a_server_firewall_drops_new_inbound_flows_until_the_port_is_opened() {
        let mut p = PathState::default();
        p.set_server_firewall(true);
        let syn = Segment {
            from: Side::Client,
            to: Side::Server,
            epoch: 1,
            syn: true,
            to_router: false,
        };
        assert_eq!(p.verdict(&syn), Verdict::Drop);
        // An established flow's segments pass (the firewall allows them).
        assert_eq!(p.verdict(&Segment { syn: false, ..syn }), Verdict::Pass);
        p.set_server_opened(true);
        assert_eq!(p.verdict(&syn), Verdict::Pass);
    }

    #[test]
    fn a_reset_answers_old_flows_with_a_reset_and_lets_new_flows_pass() {
        let mut p = PathState::default();
        p.apply(&Action::Reset);
        assert_eq!(
            p.verdict(&data(Side::Client, Side::Server, 1)),
            Verdict::Reset
        );
        assert_eq!(
            p.verdict(&data(Side::Server, Side::Client, 1)),
            Verdict::Reset
        );
        assert_eq!(p.verdict(&syn(&p)), Verdict::Pass);
        assert_eq!(
            p.verdict(&data(Side::Client, Side::Server, 2)),
            Verdict::Pass
        );
    }

    #[test]
    fn a_blackhole_drops_syns_and_forgets_the_flows_it_carried_for_good() {
        let mut p = PathState::default();
        p.apply(&Action::Blackhole(true));
        assert_eq!(p.verdict(&syn(&p)), Verdict::Drop);
        assert_eq!(
            p.verdict(&data(Side::Client, Side::Server, 2)),
            Verdict::Drop
        );
        p.apply(&Action::Blackhole(false));
        assert_eq!(p.verdict(&syn(&p)), Verdict::Pass);
        assert_eq!(
            p.verdict(&data(Side::Client, Side::Server, 1)),
            Verdict::Drop
        );
        assert_eq!(
            p.verdict(&data(Side::Client, Side::Server, 2)),
            Verdict::Pass
        );
    }

    #[test]
    fn partitions_cut_the_client_link_by_direction_and_flows_survive_the_heal() {
        let mut p = PathState::default();
        let on = |direction| Action::Partition {
            direction,
            on: true,
        };
        p.apply(&on(Direction::ClientToServer));
        assert_eq!(
            p.verdict(&data(Side::Client, Side::Server, 1)),
            Verdict::Drop
        );
        assert_eq!(
            p.verdict(&data(Side::Server, Side::Client, 1)),
            Verdict::Pass
        );
        p.apply(&on(Direction::ServerToClient));
        assert_eq!(
            p.verdict(&data(Side::Client, Side::Server, 1)),
            Verdict::Pass
        );
        assert_eq!(
            p.verdict(&data(Side::Server, Side::Client, 1)),
            Verdict::Drop
        );
        p.apply(&on(Direction::Both));
        assert_eq!(p.verdict(&syn(&p)), Verdict::Drop);
        assert_eq!(
            p.verdict(&data(Side::Other, Side::Server, 1)),
            Verdict::Pass
        );
        p.apply(&Action::Partition {
            direction: Direction::Both,
            on: false,
        });
        assert_eq!(
            p.verdict(&data(Side::Client, Side::Server, 1)),
            Verdict::Pass
        );
    }

    #[test]
    fn a_nic_swap_forgets_old_flows_holds_the_new_network_and_its_portal_answers() {
        let mut p = PathState::default();
        p.apply(&Action::NicSwap {
            routable: false,
            captive: true,
        });
        assert_eq!(
            p.verdict(&data(Side::Client, Side::Server, 1)),
            Verdict::Drop
        );
        assert_eq!(p.verdict(&syn(&p)), Verdict::Portal);
        let portal = Segment {
            to_router: true,
            ..data(Side::Client, Side::Server, 2)
        };
        assert_eq!(p.verdict(&portal), Verdict::Pass);
        p.set_captive(false);
        assert_eq!(p.verdict(&syn(&p)), Verdict::Drop);
        p.apply(&Action::Routable);
        assert_eq!(p.verdict(&syn(&p)), Verdict::Pass);
        assert_eq!(
            p.verdict(&data(Side::Client, Side::Server, 1)),
            Verdict::Drop
        );
    }

    #[test]
    fn a_link_down_drops_everything_of_its_host_even_to_the_router() {
        let mut p = PathState::default();
        p.apply(&Action::Carrier { lost: true });
        let portal = Segment {
            to_router: true,
            ..data(Side::Client, Side::Server, 1)
        };
        assert_eq!(p.verdict(&portal), Verdict::Unsent);
        assert_eq!(
            p.verdict(&data(Side::Server, Side::Client, 1)),
            Verdict::Drop
        );
        p.apply(&Action::Carrier { lost: false });
        p.apply(&Action::LinkDown {
            host: HostRole::Server,
            down: true,
        });
        assert_eq!(
            p.verdict(&data(Side::Client, Side::Server, 1)),
            Verdict::Drop
        );
        assert_eq!(
            p.verdict(&data(Side::Other, Side::Server, 1)),
            Verdict::Drop
        );
        assert!(!p.apply(&Action::Loss(0.5)));
    }
}
