//! The planner: a request and what manages the host firewall in, the
//! operations that open exactly what was asked — each with its undo — out.
//! Sans-IO: nothing here runs a command or reads the system, so every
//! platform's plan is tested here on any platform (golden outputs).

use super::request::{Opening, Peer, Request, RequestError};
use std::fmt;

/// An nftables base chain that drops inbound traffic (policy `drop`, or a
/// `drop`/`reject` rule): an `accept` in another base chain on the same
/// hook does not override its verdict, so the opening goes into it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NftChain {
    /// `inet`, `ip` or `ip6`.
    pub family: String,
    /// Its table.
    pub table: String,
    /// Its name.
    pub chain: String,
}

/// Which iptables back end manages the rules.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum IptablesBackend {
    /// `iptables-nft` (the nftables kernel API under iptables' syntax).
    Nft,
    /// `iptables-legacy` (the x_tables kernel API).
    Legacy,
}

/// What manages the host firewall, as detection found it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Manager {
    /// Nothing filters inbound traffic: there is nothing to open.
    Open,
    /// nftables, with the base chains on the input hook that drop.
    Nftables {
        /// Those chains (none: nothing to do).
        dropping: Vec<NftChain>,
    },
    /// iptables' `INPUT` chain, and ip6tables' when `ipv6`.
    Iptables {
        /// Which back end.
        backend: IptablesBackend,
        /// IPv6 too.
        ipv6: bool,
    },
    /// ufw (rules through `ufw` itself, never behind its back).
    Ufw,
    /// firewalld (runtime rules through `firewall-cmd`), in `zone` (its
    /// default zone when `None`).
    Firewalld {
        /// The zone.
        zone: Option<String>,
    },
    /// Windows Defender Firewall, a rule scoped to `program`.
    Windows {
        /// The application's executable.
        program: String,
    },
    /// macOS's application firewall (`socketfilterfw`) for `program`.
    MacosApplicationFirewall {
        /// The application's executable.
        program: String,
    },
    /// macOS's pf, rules in an anchor of netmend's.
    MacosPf {
        /// Whether the main ruleset evaluates `com.netmend/*` anchors.
        anchor_referenced: bool,
    },
}

/// One command as it would be typed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Command {
    /// The program.
    pub program: String,
    /// Its arguments.
    pub args: Vec<String>,
    /// What it reads on standard input, if anything.
    pub stdin: Option<String>,
}

impl Command {
    pub(crate) fn new(program: &str, args: &[&str]) -> Command {
        Command {
            program: program.to_string(),
            args: args.iter().map(|a| a.to_string()).collect(),
            stdin: None,
        }
    }

    fn arg(mut self, a: impl Into<String>) -> Command {
        self.args.push(a.into());
        self
    }
}

impl fmt::Display for Command {
    /// As a shell line, arguments quoted where a shell needs it.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.program)?;
        for a in &self.args {
            f.write_str(" ")?;
            f.write_str(&quote(a))?;
        }
        if let Some(input) = &self.stdin {
            write!(f, " <<'EOF'\n{input}EOF")?;
        }
        Ok(())
    }
}

fn quote(a: &str) -> String {
    let plain = !a.is_empty()
        && a.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_./:=,@%+".contains(&b));
    if plain {
        a.to_string()
    } else {
        format!("'{}'", a.replace('\'', r"'\''"))
    }
}

/// How an operation is undone.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Undo {
    /// Run this command.
    Run(Command),
    /// Delete the nftables rule the apply command inserted, by the handle
    /// it echoed (`nft --echo --handle`).
    NftDeleteInserted {
        /// The rule's chain.
        chain: NftChain,
    },
}

impl fmt::Display for Undo {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Undo::Run(c) => c.fmt(f),
            Undo::NftDeleteInserted { chain } => write!(
                f,
                "nft delete rule {} {} {} handle HANDLE  # the handle the insert echoed",
                chain.family, chain.table, chain.chain
            ),
        }
    }
}

/// One operation and its undo.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Step {
    /// Opens.
    pub apply: Command,
    /// Closes again.
    pub undo: Undo,
}

/// What a plan needs to run.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Privilege {
    /// Nothing: the plan is empty.
    None,
    /// Linux: root, or `CAP_NET_ADMIN` (nft, iptables).
    NetAdmin,
    /// Linux: root (ufw; firewalld also through polkit).
    Root,
    /// Windows: an elevated (Administrator) process.
    Administrator,
}

/// The operations that open what a request asks, in order, each with its
/// undo (run in reverse order to close), and what they need.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Plan {
    /// The operations.
    pub steps: Vec<Step>,
    /// The privilege they need.
    pub privilege: Privilege,
    /// What the user should know (an inert pf anchor, a firewall whose
    /// rules cannot be tagged…).
    pub notes: Vec<String>,
}

impl fmt::Display for Plan {
    /// The plan as a script: apply, then undo (the exact commands).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "# needs: {:?}", self.privilege)?;
        for n in &self.notes {
            writeln!(f, "# note: {n}")?;
        }
        writeln!(f, "# apply")?;
        for s in &self.steps {
            writeln!(f, "{}", s.apply)?;
        }
        writeln!(f, "# undo")?;
        for s in self.steps.iter().rev() {
            writeln!(f, "{}", s.undo)?;
        }
        Ok(())
    }
}

/// Plans `request` for `manager`.
///
/// # Errors
///
/// The request's own [`RequestError`].
pub fn plan(request: &Request, manager: &Manager) -> Result<Plan, RequestError> {
    let openings = request.openings()?;
    let tag = request.tag();
    let mut p = Plan {
        steps: Vec::new(),
        privilege: Privilege::None,
        notes: Vec::new(),
    };
    match manager {
        Manager::Open => p
            .notes
            .push("nothing filters inbound traffic here: nothing to open".into()),
        Manager::Nftables { dropping } => {
            if dropping.is_empty() {
                p.notes
                    .push("no nftables input chain drops: nothing to open".into());
            }
            for chain in dropping {
                for o in openings {
                    for peers in by_family(chain, o) {
                        p.steps.push(nft_step(chain, o, &peers, &tag));
                    }
                }
            }
            p.privilege = Privilege::NetAdmin;
        }
        Manager::Iptables { backend, ipv6 } => {
            let (v4, v6) = match backend {
                IptablesBackend::Nft => ("iptables-nft", "ip6tables-nft"),
                IptablesBackend::Legacy => ("iptables-legacy", "ip6tables-legacy"),
            };
            for o in openings {
                let (peers4, peers6): (Vec<Peer>, Vec<Peer>) =
                    o.peers.iter().partition(|p| !p.is_ipv6());
                let any = o.peers.is_empty();
                if any || !peers4.is_empty() {
                    p.steps.push(iptables_step(v4, o, &peers4, &tag));
                }
                if *ipv6 && (any || !peers6.is_empty()) {
                    p.steps.push(iptables_step(v6, o, &peers6, &tag));
                }
            }
            p.privilege = Privilege::NetAdmin;
        }
        Manager::Ufw => {
            for o in openings {
                let froms: Vec<Option<&Peer>> = if o.peers.is_empty() {
                    vec![None]
                } else {
                    o.peers.iter().map(Some).collect()
                };
                for from in froms {
                    let spec = ufw_spec(o, from);
                    let mut apply = Command::new("ufw", &["allow"]);
                    apply.args.extend(spec.iter().cloned());
                    apply = apply.arg("comment").arg(tag.clone());
                    let mut undo = Command::new("ufw", &["delete", "allow"]);
                    undo.args.extend(spec);
                    p.steps.push(Step {
                        apply,
                        undo: Undo::Run(undo),
                    });
                }
            }
            p.notes.push(
                "ufw rules persist until deleted: the guard deletes them, `sweep` finds a crashed instance's by their comment".into(),
            );
            p.privilege = Privilege::Root;
        }
        Manager::Firewalld { zone } => {
            for o in openings {
                for rule in firewalld_rules(o) {
                    let mut apply = Command::new("firewall-cmd", &[]);
                    let mut undo = Command::new("firewall-cmd", &[]);
                    if let Some(z) = zone {
                        apply = apply.arg(format!("--zone={z}"));
                        undo = undo.arg(format!("--zone={z}"));
                    }
                    let (add, remove) = match &rule {
                        FirewalldRule::Port(port) => (
                            format!("--add-port={port}"),
                            format!("--remove-port={port}"),
                        ),
                        FirewalldRule::Rich(r) => (
                            format!("--add-rich-rule={r}"),
                            format!("--remove-rich-rule={r}"),
                        ),
                    };
                    p.steps.push(Step {
                        apply: apply.arg(add),
                        undo: Undo::Run(undo.arg(remove)),
                    });
                }
            }
            p.notes.push(
                "firewalld runtime rules (no --permanent): a reload or reboot drops them; they carry no tag, so `sweep` relies on that".into(),
            );
            p.privilege = Privilege::Root;
        }
        Manager::Windows { program } => {
            for o in openings {
                let ports = join(&o.ports, ",");
                let name = format!("name={tag}");
                let protocol = format!("protocol={}", o.protocol.name().to_uppercase());
                let local = format!("localport={ports}");
                let mut apply = Command::new(
                    "netsh",
                    &[
                        "advfirewall",
                        "firewall",
                        "add",
                        "rule",
                        &name,
                        "dir=in",
                        "action=allow",
                    ],
                )
                .arg(protocol.clone())
                .arg(local.clone())
                .arg(format!("program={program}"))
                .arg("enable=yes")
                .arg("profile=any");
                if !o.peers.is_empty() {
                    let remote: Vec<String> = o.peers.iter().map(Peer::to_string).collect();
                    apply = apply.arg(format!("remoteip={}", remote.join(",")));
                }
                let undo = Command::new(
                    "netsh",
                    &["advfirewall", "firewall", "delete", "rule", &name, "dir=in"],
                )
                .arg(protocol)
                .arg(local);
                p.steps.push(Step {
                    apply,
                    undo: Undo::Run(undo),
                });
            }
            p.privilege = Privilege::Administrator;
        }
        Manager::MacosApplicationFirewall { program } => {
            const SFW: &str = "/usr/libexec/ApplicationFirewall/socketfilterfw";
            p.steps.push(Step {
                apply: Command::new(SFW, &["--add", program]),
                undo: Undo::Run(Command::new(SFW, &["--remove", program])),
            });
            p.steps.push(Step {
                apply: Command::new(SFW, &["--unblockapp", program]),
                undo: Undo::Run(Command::new(SFW, &["--blockapp", program])),
            });
            p.notes.push(
                "the application firewall allows or blocks a program as a whole: ports and peers cannot be narrowed there (pf can)".into(),
            );
            p.privilege = Privilege::Root;
        }
        Manager::MacosPf { anchor_referenced } => {
            let anchor = format!("com.netmend/{}", request.app());
            let mut rules = String::new();
            for o in openings {
                let ports = join(&o.ports, " ");
                let froms: Vec<String> = if o.peers.is_empty() {
                    vec!["any".into()]
                } else {
                    o.peers.iter().map(Peer::to_string).collect()
                };
                for from in froms {
                    rules.push_str(&format!(
                        "pass in quick proto {} from {from} to any port {{ {ports} }} keep state label \"{tag}\"\n",
                        o.protocol.name()
                    ));
                }
            }
            let mut apply = Command::new("pfctl", &["-a", &anchor, "-f", "-"]);
            apply.stdin = Some(rules);
            p.steps.push(Step {
                apply,
                undo: Undo::Run(Command::new("pfctl", &["-a", &anchor, "-F", "rules"])),
            });
            if !anchor_referenced {
                p.notes.push(format!(
                    "pf does not evaluate `{anchor}`: add `anchor \"com.netmend/*\"` to /etc/pf.conf (before any block rule) or the rules stay inert"
                ));
            }
            p.privilege = Privilege::Root;
        }
    }
    Ok(p)
}

/// An opening's peers split by what `chain`'s family can match: one
/// element per rule (an `inet` chain takes a rule per address family when
/// both appear; an `ip` chain only IPv4 peers, `ip6` only IPv6). An opening
/// whose peers are all of the other family needs no rule in this chain.
fn by_family(chain: &NftChain, o: &Opening) -> Vec<Vec<Peer>> {
    let (v4, v6): (Vec<Peer>, Vec<Peer>) = o.peers.iter().partition(|p| !p.is_ipv6());
    if o.peers.is_empty() {
        return vec![Vec::new()];
    }
    let mut out = Vec::new();
    if chain.family != "ip6" && !v4.is_empty() {
        out.push(v4);
    }
    if chain.family != "ip" && !v6.is_empty() {
        out.push(v6);
    }
    out
}

fn join(ports: &[u16], sep: &str) -> String {
    ports
        .iter()
        .map(u16::to_string)
        .collect::<Vec<_>>()
        .join(sep)
}

fn set<T: ToString>(items: &[T]) -> String {
    if items.len() == 1 {
        items[0].to_string()
    } else {
        let v: Vec<String> = items.iter().map(T::to_string).collect();
        format!("{{ {} }}", v.join(", "))
    }
}

fn nft_step(chain: &NftChain, o: &Opening, peers: &[Peer], tag: &str) -> Step {
    let mut apply = Command::new(
        "nft",
        &[
            "--echo",
            "--handle",
            "insert",
            "rule",
            &chain.family,
            &chain.table,
            &chain.chain,
        ],
    );
    if !peers.is_empty() {
        let field = if peers[0].is_ipv6() { "ip6" } else { "ip" };
        apply = apply.arg(field).arg("saddr").arg(set(peers));
    }
    apply = apply
        .arg("meta")
        .arg("l4proto")
        .arg(o.protocol.name())
        .arg("th")
        .arg("dport")
        .arg(set(&o.ports))
        .arg("accept")
        .arg("comment")
        .arg(format!("\"{tag}\""));
    Step {
        apply,
        undo: Undo::NftDeleteInserted {
            chain: chain.clone(),
        },
    }
}

fn iptables_step(program: &str, o: &Opening, peers: &[Peer], tag: &str) -> Step {
    let mut spec: Vec<String> = vec!["-p".into(), o.protocol.name().into()];
    if o.ports.len() == 1 {
        spec.extend(["--dport".into(), o.ports[0].to_string()]);
    } else {
        spec.extend([
            "-m".into(),
            "multiport".into(),
            "--dports".into(),
            join(&o.ports, ","),
        ]);
    }
    if !peers.is_empty() {
        let v: Vec<String> = peers.iter().map(Peer::to_string).collect();
        spec.extend(["-s".into(), v.join(",")]);
    }
    spec.extend([
        "-m".into(),
        "comment".into(),
        "--comment".into(),
        tag.to_string(),
        "-j".into(),
        "ACCEPT".into(),
    ]);
    let mut apply = Command::new(program, &["-I", "INPUT", "1"]);
    apply.args.extend(spec.iter().cloned());
    let mut undo = Command::new(program, &["-D", "INPUT"]);
    undo.args.extend(spec);
    Step {
        apply,
        undo: Undo::Run(undo),
    }
}

fn ufw_spec(o: &Opening, from: Option<&Peer>) -> Vec<String> {
    let mut spec = vec!["proto".to_string(), o.protocol.name().to_string()];
    spec.extend([
        "from".to_string(),
        from.map_or("any".to_string(), Peer::to_string),
    ]);
    spec.extend([
        "to".to_string(),
        "any".to_string(),
        "port".to_string(),
        join(&o.ports, ","),
    ]);
    spec
}

enum FirewalldRule {
    Port(String),
    Rich(String),
}

fn firewalld_rules(o: &Opening) -> Vec<FirewalldRule> {
    let mut out = Vec::new();
    for port in &o.ports {
        let proto = o.protocol.name();
        if o.peers.is_empty() {
            out.push(FirewalldRule::Port(format!("{port}/{proto}")));
        }
        for peer in &o.peers {
            let family = if peer.is_ipv6() { "ipv6" } else { "ipv4" };
            out.push(FirewalldRule::Rich(format!(
                "rule family=\"{family}\" source address=\"{peer}\" port port=\"{port}\" protocol=\"{proto}\" accept"
            )));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::firewall::Protocol;

    fn request() -> Request {
        Request::new("chat", "4242")
            .expect("request")
            .allow(Protocol::Tcp, &[7000])
            .allow_from(
                Protocol::Udp,
                &[7001, 7002],
                &[
                    "198.18.0.0/15".parse().expect("peer"),
                    "2001:db8::/32".parse().expect("peer"),
                ],
            )
    }

    fn golden(manager: Manager) -> String {
        plan(&request(), &manager).expect("plan").to_string()
    }

    #[test]
    fn nftables_goes_into_every_chain_that_drops() {
        insta::assert_snapshot!(golden(Manager::Nftables {
            dropping: vec![
                NftChain {
                    family: "inet".into(),
                    table: "filter".into(),
                    chain: "input".into()
                },
                NftChain {
                    family: "ip".into(),
                    table: "fw".into(),
                    chain: "in".into()
                },
            ]
        }));
        // A ruleset that drops nothing needs nothing.
        let p = plan(&request(), &Manager::Nftables { dropping: vec![] }).expect("plan");
        assert!(p.steps.is_empty());
    }

    #[test]
    fn iptables_inserts_first_with_a_comment_both_back_ends() {
        insta::assert_snapshot!(golden(Manager::Iptables {
            backend: IptablesBackend::Nft,
            ipv6: true
        }));
        let legacy = golden(Manager::Iptables {
            backend: IptablesBackend::Legacy,
            ipv6: false,
        });
        assert!(legacy.contains("iptables-legacy -I INPUT 1 -p tcp --dport 7000"));
        assert!(!legacy.contains("ip6tables"));
    }

    #[test]
    fn ufw_through_its_own_interface() {
        insta::assert_snapshot!(golden(Manager::Ufw));
    }

    #[test]
    fn firewalld_runtime_rules() {
        insta::assert_snapshot!(golden(Manager::Firewalld {
            zone: Some("public".into())
        }));
    }

    #[test]
    fn windows_program_scoped_rule() {
        insta::assert_snapshot!(golden(Manager::Windows {
            program: r"C:\Program Files\Chat\chat.exe".into()
        }));
    }

    #[test]
    fn macos_application_firewall_and_pf() {
        insta::assert_snapshot!(golden(Manager::MacosApplicationFirewall {
            program: "/Applications/Chat.app/Contents/MacOS/chat".into()
        }));
        insta::assert_snapshot!(golden(Manager::MacosPf {
            anchor_referenced: false
        }));
    }

    #[test]
    fn requests_that_would_open_everything_or_are_malformed_are_refused() {
        let bare = Request::new("chat", "1").expect("request");
        assert_eq!(plan(&bare, &Manager::Ufw), Err(RequestError::NoPorts));
        let empty = bare.clone().allow(Protocol::Tcp, &[]);
        assert_eq!(plan(&empty, &Manager::Ufw), Err(RequestError::NoPorts));
        let zero = bare.allow(Protocol::Tcp, &[0]);
        assert_eq!(plan(&zero, &Manager::Ufw), Err(RequestError::PortZero));
        assert!(matches!(
            Request::new("bad name", "1"),
            Err(RequestError::App(_))
        ));
        assert!(matches!(
            Request::new("chat", "x'; rm"),
            Err(RequestError::Instance(_))
        ));
        assert!("198.18.0.0/33".parse::<Peer>().is_err());
        assert!("2001:db8::/129".parse::<Peer>().is_err());
        assert!(matches!(plan(&request(), &Manager::Open), Ok(p) if p.steps.is_empty()));
    }
}
