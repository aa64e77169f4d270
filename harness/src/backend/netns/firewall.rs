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

use crate::scenario::Direction;
use std::fmt::Write;

/// Name of the router's table.
pub const TABLE: &str = "nm-path";

/// What happens to flows of an ended epoch.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Fate {
    /// TCP segments get a reset back; anything else is dropped.
    Reset,
    /// Dropped without a word.
    Forgotten,
}

/// The state of the path through the router.
#[derive(Clone, Debug)]
pub struct PathRules {
    /// Interface of the router toward the client.
    client_if: String,
    /// Mark given to new flows.
    epoch: u32,
    /// Fate of every ended epoch (index 0 is epoch 1).
    ended: Vec<Fate>,
    blackhole: bool,
    partition: Option<Direction>,
    /// An interface whose traffic is dropped (a network not routable yet).
    held: Option<String>,
    /// A captive portal intercepting new TCP flows to a port.
    portal: Option<Portal>,
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
            epoch: 1,
            ended: Vec::new(),
            blackhole: false,
            partition: None,
            held: None,
            portal: None,
        }
    }

    fn end_epoch(&mut self, fate: Fate) {
        self.ended.push(fate);
        self.epoch += 1;
    }

    /// Resets every established flow; new ones pass.
    pub fn reset(&mut self) {
        self.end_epoch(Fate::Reset);
    }

    /// Starts or ends a blackhole. Starting one drops everything and makes
    /// the router forget the flows it carried, which stay dead afterwards.
    pub fn set_blackhole(&mut self, on: bool) {
        if on && !self.blackhole {
            self.end_epoch(Fate::Forgotten);
        }
        self.blackhole = on;
    }

    /// The router loses the state of every flow it carries (the client is
    /// now behind another gateway): they are dropped from now on, new flows
    /// pass.
    pub fn forget(&mut self) {
        self.end_epoch(Fate::Forgotten);
    }

    /// Drops everything through `interface` (`None` lifts it): routes and
    /// addresses look right, nothing gets through.
    pub fn hold(&mut self, interface: Option<&str>) {
        self.held = interface.map(str::to_string);
    }

    /// Starts (`Some`) or lifts (`None`) a captive portal.
    pub fn captive(&mut self, portal: Option<Portal>) {
        self.portal = portal;
    }

    /// Starts (`Some`) or heals (`None`) a partition of the client's link.
    pub fn set_partition(&mut self, direction: Option<Direction>) {
        self.partition = direction;
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
        match self.partition {
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
        if let Some(held) = &self.held {
            let _ = writeln!(s, "    iifname \"{held}\" drop");
            let _ = writeln!(s, "    oifname \"{held}\" drop");
        }
        if self.blackhole {
            let _ = writeln!(s, "    drop");
        }
        for (i, fate) in self.ended.iter().enumerate() {
            let mark = i + 1;
            if *fate == Fate::Reset {
                let _ = writeln!(
                    s,
                    "    ct mark {mark} meta l4proto tcp reject with tcp reset"
                );
            }
            let _ = writeln!(s, "    ct mark {mark} drop");
        }
        let _ = writeln!(s, "    ct state new ct mark set {}", self.epoch);
        let _ = writeln!(s, "  }}");
        if let Some(p) = &self.portal {
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
        p.reset();
        let s = p.script();
        assert!(s.contains("ct mark 1 meta l4proto tcp reject with tcp reset\n"));
        assert!(s.contains("ct state new ct mark set 2\n"));
        assert!(!s.contains("    drop\n"));
    }

    #[test]
    fn a_healed_blackhole_keeps_dropping_the_flows_it_forgot() {
        let mut p = PathRules::new("x");
        p.set_blackhole(true);
        assert!(p.script().contains("    drop\n"));
        p.set_blackhole(false);
        let s = p.script();
        assert!(!s.contains("    drop\n"));
        assert!(s.contains("ct mark 1 drop\n"));
        assert!(!s.contains("reject"));
        assert!(s.contains("ct mark set 2\n"));
    }

    #[test]
    fn a_held_interface_drops_both_ways_and_forgetting_drops_old_flows_silently() {
        let mut p = PathRules::new("c0");
        p.hold(Some("c1"));
        p.forget();
        let s = p.script();
        assert!(s.contains("iifname \"c1\" drop\n") && s.contains("oifname \"c1\" drop\n"));
        assert!(s.contains("ct mark 1 drop\n") && !s.contains("reject"));
        p.hold(None);
        assert!(!p.script().contains("c1"));
    }

    #[test]
    fn partitions_act_on_the_client_interface_by_direction() {
        let mut p = PathRules::new("c0");
        p.set_partition(Some(Direction::ClientToServer));
        assert!(p.script().contains("iifname \"c0\" drop"));
        assert!(!p.script().contains("oifname"));
        p.set_partition(Some(Direction::ServerToClient));
        assert!(p.script().contains("oifname \"c0\" drop"));
        p.set_partition(None);
        assert!(!p.script().contains("ifname"));
    }
}
