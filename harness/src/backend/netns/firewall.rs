//! Path faults made with nftables in the router: resets, blackholes and
//! partitions.
//!
//! [`PathRules`] is the sans-IO part: the state of the path in, one nft
//! script out. Every change replaces the whole `inet nm-path` table in one
//! `nft -f` transaction, so the router never passes packets under a
//! half-applied rule set. The script is nft's own text syntax rather than
//! the JSON schema of the `nftables` crate: both are fed to the same `nft`
//! binary, and the text is what a user reads in `nft list ruleset` when a
//! scenario misbehaves.
//!
//! Flows are told apart by connection-tracking marks: every new flow is
//! marked with the current epoch; a reset or blackhole ends the epoch, and
//! the flows of an ended epoch are from then on rejected with a TCP reset
//! (reset) or silently dropped (blackhole: the middlebox lost their state),
//! while new flows pass. That is what a middlebox failure does to a real
//! path, and it leaves both endpoints alive.

use crate::backend::path::{Fate, PathState};
use crate::fault::Action;
use crate::scenario::Direction;
use std::fmt::Write;

/// Name of the router's table.
pub const TABLE: &str = "nm-path";

/// The state of the path through the router: the shared [`PathState`]
/// (the sim backend judges segments by the same value) and where this lab
/// applies it.
#[derive(Clone, Debug)]
pub struct PathRules {
    /// Interface of the router toward the client.
    client_if: String,
    state: PathState,
    /// The interface dropped while the state says the client's network is
    /// held (not routable yet).
    held_if: Option<String>,
    /// Where the captive portal intercepts while the state says captive.
    portal: Option<Portal>,
    /// The router's own ICMP "fragmentation needed" / "packet too big" is
    /// dropped (an MTU black hole).
    too_big_filtered: bool,
}

/// Where a captive portal intercepts: new TCP flows arriving on `iface`
/// for `port` are redirected (DNAT) to the router's own portal at
/// `to4`/`to6` port `portal_port`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Portal {
    /// Router interface toward the client.
    pub iface: String,
    /// The service port the client connects to.
    pub port: u16,
    /// The router's IPv4 address on that link.
    pub to4: std::net::Ipv4Addr,
    /// The router's IPv6 address on that link.
    pub to6: std::net::Ipv6Addr,
    /// The portal's port on the router.
    pub portal_port: u16,
}

impl PathRules {
    /// A path that carries everything; `client_if` is the router's
    /// interface toward the client (partitions act on it).
    pub fn new(client_if: &str) -> Self {
        PathRules {
            client_if: client_if.to_string(),
            state: PathState::default(),
            held_if: None,
            portal: None,
            too_big_filtered: false,
        }
    }

    /// Drop (`true`) or pass the ICMP errors the router sends when a
    /// packet is too big for the next link: the filter of an MTU black
    /// hole (RFC 2923 section 2.1).
    pub fn set_too_big_filtered(&mut self, on: bool) {
        self.too_big_filtered = on;
    }

    /// Applies a path action to the state; `false` if it is none (links,
    /// carrier and the rest are kernel operations, not rules).
    pub fn apply(&mut self, action: &Action) -> bool {
        self.state.apply(action)
    }

    /// The client's network is now behind `interface` (a NIC swap): a held
    /// network drops everything through it.
    pub fn set_client_network(&mut self, interface: &str) {
        self.held_if = Some(interface.to_string());
    }

    /// Where the captive portal intercepts when the state says captive.
    pub fn set_portal(&mut self, portal: Portal) {
        self.portal = Some(portal);
    }

    /// The nft script that makes the router behave like this.
    pub fn script(&self) -> String {
        let mut s = String::new();
        // `add` then `delete` makes the replacement work whether or not the
        // table exists yet; the whole file is one transaction.
        let _ = writeln!(s, "add table inet {TABLE}");
        let _ = writeln!(s, "delete table inet {TABLE}");
        let _ = writeln!(s, "table inet {TABLE} {{");
        let _ = writeln!(s, "  chain forward {{");
        let _ = writeln!(
            s,
            "    type filter hook forward priority -10; policy accept;"
        );
        let client = &self.client_if;
        match self.state.partition() {
            Some(Direction::Both) => {
                let _ = writeln!(s, "    iifname \"{client}\" drop");
                let _ = writeln!(s, "    oifname \"{client}\" drop");
            }
            Some(Direction::ClientToServer) => {
                let _ = writeln!(s, "    iifname \"{client}\" drop");
            }
            Some(Direction::ServerToClient) => {
                let _ = writeln!(s, "    oifname \"{client}\" drop");
            }
            None => {}
        }
        if self.state.held() {
            let held = self.held_if.as_ref().unwrap_or(&self.client_if);
            let _ = writeln!(s, "    iifname \"{held}\" drop");
            let _ = writeln!(s, "    oifname \"{held}\" drop");
        }
        if self.state.blackhole() {
            let _ = writeln!(s, "    drop");
        }
        if self.state.v6_blackhole() {
            let _ = writeln!(s, "    meta nfproto ipv6 drop");
        }
        // An ended flow is a TCP connection the router forgot: it drops
        // (or resets) the segments of a connection it did not see open, as
        // a stateful router without loose pickup does. A datagram of a
        // forgotten UDP flow (the QUIC peers') is a new flow to such a
        // router and passes: UDP has no connection to lose.
        for (i, fate) in self.state.ended().iter().enumerate() {
            let mark = i + 1;
            if *fate == Fate::Reset {
                let _ = writeln!(
                    s,
                    "    ct mark {mark} meta l4proto tcp reject with tcp reset"
                );
            }
            let _ = writeln!(s, "    ct mark {mark} meta l4proto tcp drop");
        }
        if let Some(p) = self.portal.as_ref().filter(|_| self.state.captive()) {
            // Until the user logs in, a captive network carries nothing to
            // the service but what its portal intercepts (TCP, below):
            // datagrams to it are dropped.
            let _ = writeln!(s, "    iifname \"{}\" udp dport {} drop", p.iface, p.port);
        }
        if self.state.nat_idle().is_some() {
            // A flow whose conntrack entry expired (the timeout is set in
            // the router's sysctls, with loose pickup off) is invalid: a
            // NAT that lost the mapping drops it.
            let _ = writeln!(s, "    ct state invalid drop");
        }
        let _ = writeln!(s, "    ct state new ct mark set {}", self.state.epoch());
        let _ = writeln!(s, "  }}");
        if self.too_big_filtered {
            // The router makes these errors itself: its output hook.
            let _ = writeln!(s, "  chain output {{");
            let _ = writeln!(
                s,
                "    type filter hook output priority -10; policy accept;"
            );
            let _ = writeln!(
                s,
                "    icmp type destination-unreachable icmp code frag-needed drop"
            );
            let _ = writeln!(s, "    icmpv6 type packet-too-big drop");
            let _ = writeln!(s, "  }}");
        }
        if let Some(p) = self.portal.as_ref().filter(|_| self.state.captive()) {
            // Only new flows are redirected (NAT is decided on a flow's
            // first packet); lifting the portal leaves intercepted flows
            // with the portal, which closes them anyway.
            let _ = writeln!(s, "  chain portal {{");
            let _ = writeln!(
                s,
                "    type nat hook prerouting priority -100; policy accept;"
            );
            let _ = writeln!(
                s,
                "    iifname \"{}\" meta nfproto ipv4 tcp dport {} dnat ip to {}:{}",
                p.iface, p.port, p.to4, p.portal_port
            );
            let _ = writeln!(
                s,
                "    iifname \"{}\" meta nfproto ipv6 tcp dport {} dnat ip6 to [{}]:{}",
                p.iface, p.port, p.to6, p.portal_port
            );
            let _ = writeln!(s, "  }}");
        }
        let _ = writeln!(s, "}}");
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_reset_rejects_old_flows_and_marks_new_ones_with_the_next_epoch() {
        let mut p = PathRules::new("nm-1-client");
        p.apply(&Action::Reset);
        let s = p.script();
        assert!(s.contains("ct mark 1 meta l4proto tcp reject with tcp reset\n"));
        assert!(s.contains("ct state new ct mark set 2\n"));
        assert!(!s.contains("    drop\n"));
    }

    #[test]
    fn a_healed_blackhole_keeps_dropping_the_flows_it_forgot() {
        let mut p = PathRules::new("x");
        p.apply(&Action::Blackhole(true));
        assert!(p.script().contains("    drop\n"));
        p.apply(&Action::Blackhole(false));
        let s = p.script();
        assert!(!s.contains("    drop\n"));
        assert!(s.contains("ct mark 1 meta l4proto tcp drop\n"));
        assert!(!s.contains("reject"));
        assert!(s.contains("ct mark set 2\n"));
    }

    #[test]
    fn a_held_network_drops_both_ways_and_forgetting_drops_old_flows_silently() {
        let mut p = PathRules::new("c0");
        p.set_client_network("c1");
        p.apply(&Action::NicSwap {
            routable: false,
            captive: false,
        });
        let s = p.script();
        assert!(s.contains("iifname \"c1\" drop\n") && s.contains("oifname \"c1\" drop\n"));
        assert!(s.contains("ct mark 1 meta l4proto tcp drop\n") && !s.contains("reject"));
        p.apply(&Action::Routable);
        assert!(!p.script().contains("c1"));
    }

    #[test]
    fn partitions_act_on_the_client_interface_by_direction() {
        let mut p = PathRules::new("c0");
        let partition = |direction, on| Action::Partition { direction, on };
        p.apply(&partition(Direction::ClientToServer, true));
        assert!(p.script().contains("iifname \"c0\" drop"));
        assert!(!p.script().contains("oifname"));
        p.apply(&partition(Direction::ServerToClient, true));
        assert!(p.script().contains("oifname \"c0\" drop"));
        p.apply(&partition(Direction::ServerToClient, false));
        assert!(!p.script().contains("ifname"));
    }

    #[test]
    fn an_mtu_black_hole_drops_only_the_routers_too_big_errors() {
        let mut p = PathRules::new("c0");
        assert!(!p.script().contains("chain output"));
        p.set_too_big_filtered(true);
        let s = p.script();
        assert!(s.contains(
            "  chain output {\n    type filter hook output priority -10; policy accept;\n    icmp type destination-unreachable icmp code frag-needed drop\n    icmpv6 type packet-too-big drop\n  }\n"
        ));
        // Nothing else is dropped.
        assert!(!s.contains("    drop\n"));
        p.set_too_big_filtered(false);
        assert!(!p.script().contains("icmp"));
    }

    #[test]
    fn the_portal_intercepts_and_blocks_only_while_the_state_says_captive() {
        let mut p = PathRules::new("c0");
        p.set_portal(Portal {
            iface: "c0".into(),
            port: 7000,
            to4: std::net::Ipv4Addr::new(198, 18, 1, 1),
            to6: "2001:db8:0:1::1".parse().unwrap(),
            portal_port: 8089,
        });
        assert!(!p.script().contains("dnat"));
        p.apply(&Action::GatewayChange {
            routable: true,
            captive: true,
        });
        let s = p.script();
        assert!(s.contains("dnat ip to 198.18.1.1:8089"));
        // Datagrams to the service go nowhere while captive.
        assert!(s.contains("    iifname \"c0\" udp dport 7000 drop\n"));
        p.apply(&Action::Routable);
        assert!(!p.script().contains("dnat"));
        assert!(!p.script().contains("udp"));
    }
}
