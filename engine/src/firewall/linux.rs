//! Carrying a plan out on Linux: detection of what manages the firewall,
//! a guard that holds the openings and takes them away, and a sweep of
//! what a crashed instance left.
//!
//! The executor runs the planner's commands as they are (`nft`,
//! `iptables-nft`, `ufw`, `firewall-cmd`) rather than the kernel API: the
//! commands are exactly what [`FirewallError::Privilege`] tells a user
//! without the privilege to run, and what the golden tests check — what is
//! printed is what is done. (`ufw` and `firewalld` must be driven through
//! their own tools anyway, never behind their backs.)

use super::plan::{plan, Command, IptablesBackend, Manager, NftChain, Plan, Privilege, Step, Undo};
use super::request::{Request, RequestError, TAG_PREFIX};
use std::process::Stdio;

/// Why the firewall could not be changed (or read).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum FirewallError {
    /// The request itself.
    #[error(transparent)]
    Request(#[from] RequestError),
    /// The process lacks the privilege; `script` is what a privileged user
    /// can run instead (the exact commands, and their undo).
    #[error("changing the firewall needs {needs:?}; run instead:\n{script}")]
    Privilege {
        /// The privilege.
        needs: Privilege,
        /// The plan as commands.
        script: String,
    },
    /// A command failed; what had been applied before it was undone
    /// (`undone`), so nothing is half-applied.
    #[error("`{command}` failed ({status}): {stderr}; {} undone", if *.undone { "what was applied was" } else { "NOT everything could be" })]
    Command {
        /// The command line.
        command: String,
        /// Its exit status.
        status: String,
        /// What it said.
        stderr: String,
        /// Whether every earlier step was undone.
        undone: bool,
    },
    /// A tool is not installed.
    #[error("`{0}` is not installed")]
    Missing(String),
    /// A tool's output could not be read.
    #[error("could not read `{tool}` output: {why}")]
    Output {
        /// The tool.
        tool: String,
        /// Why.
        why: String,
    },
}

/// What a command printed.
struct Ran {
    stdout: String,
}

fn run(c: &Command) -> Result<Ran, FirewallError> {
    let mut cmd = std::process::Command::new(&c.program);
    cmd.args(&c.args)
        .stdin(if c.stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = cmd.spawn().map_err(|e| {
        if e.kind() == std::io::ErrorKind::NotFound {
            FirewallError::Missing(c.program.clone())
        } else {
            failed(c, "could not start".into(), e.to_string())
        }
    })?;
    if let (Some(input), Some(mut stdin)) = (&c.stdin, child.stdin.take()) {
        use std::io::Write;
        let _ = stdin.write_all(input.as_bytes());
    }
    let out = child
        .wait_with_output()
        .map_err(|e| failed(c, "could not wait".into(), e.to_string()))?;
    let stderr = String::from_utf8_lossy(&out.stderr).trim().to_string();
    if !out.status.success() {
        return Err(failed(c, out.status.to_string(), stderr));
    }
    Ok(Ran {
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
    })
}

fn failed(c: &Command, status: String, stderr: String) -> FirewallError {
    FirewallError::Command {
        command: c.to_string(),
        status,
        stderr,
        undone: true,
    }
}

fn denied(e: &FirewallError) -> bool {
    matches!(e, FirewallError::Command { stderr, .. }
        if stderr.contains("Operation not permitted")
            || stderr.contains("Permission denied")
            || stderr.contains("must be root")
            || stderr.contains("You need to be root"))
}

/// The handle `nft --echo --handle` printed for the rule it inserted.
fn echoed_handle(stdout: &str) -> Option<u64> {
    stdout
        .lines()
        .rev()
        .filter_map(|l| l.rsplit_once("# handle "))
        .find_map(|(_, h)| h.trim().parse().ok())
}

/// The base chains on the input hook that drop inbound traffic (policy
/// `drop`, or a `drop`/`reject` verdict in a rule), from
/// `nft -j list ruleset`; and whether any is iptables-nft's (table
/// `filter`, chain `INPUT`: then iptables owns it).
///
/// The JSON is read as plain values rather than the `nftables` crate's
/// typed schema: three fields are needed, and a typed parse fails as a
/// whole on any statement the crate does not model.
///
/// # Errors
///
/// The output is not nft's JSON.
pub fn dropping_chains(json: &str) -> Result<(Vec<NftChain>, bool), String> {
    let v: serde_json::Value = serde_json::from_str(json).map_err(|e| e.to_string())?;
    let items = v["nftables"].as_array().ok_or("no `nftables` array")?;
    let mut chains: Vec<NftChain> = Vec::new();
    let text = |x: &serde_json::Value| x.as_str().unwrap_or_default().to_string();
    for item in items {
        let c = &item["chain"];
        if c["hook"] == "input" && c["type"] == "filter" && c["policy"] == "drop" {
            chains.push(NftChain {
                family: text(&c["family"]),
                table: text(&c["table"]),
                chain: text(&c["name"]),
            });
        }
    }
    let base: Vec<NftChain> = items
        .iter()
        .map(|i| &i["chain"])
        .filter(|c| c["hook"] == "input" && c["type"] == "filter")
        .map(|c| NftChain {
            family: text(&c["family"]),
            table: text(&c["table"]),
            chain: text(&c["name"]),
        })
        .collect();
    for item in items {
        let r = &item["rule"];
        let Some(exprs) = r["expr"].as_array() else {
            continue;
        };
        let drops = exprs
            .iter()
            .any(|e| e.get("drop").is_some() || e.get("reject").is_some());
        let chain = NftChain {
            family: text(&r["family"]),
            table: text(&r["table"]),
            chain: text(&r["chain"]),
        };
        if drops && base.contains(&chain) && !chains.contains(&chain) {
            chains.push(chain);
        }
    }
    let iptables = chains
        .iter()
        .any(|c| c.table == "filter" && c.chain == "INPUT" && c.family != "inet");
    Ok((chains, iptables))
}

/// What manages the firewall here: firewalld or ufw when running (they
/// own the rules underneath), iptables-nft when its tables drop, nftables
/// otherwise; [`Manager::Open`] when nothing drops inbound traffic.
///
/// # Errors
///
/// [`FirewallError::Privilege`] without `CAP_NET_ADMIN` (reading the
/// ruleset needs it too); `nft` missing; output that cannot be read.
pub fn detect() -> Result<Manager, FirewallError> {
    let state = Command::new("firewall-cmd", &["--state"]);
    if matches!(run(&state), Ok(r) if r.stdout.trim() == "running") {
        return Ok(Manager::Firewalld { zone: None });
    }
    let ufw = Command::new("ufw", &["status"]);
    if matches!(run(&ufw), Ok(r) if r.stdout.contains("Status: active")) {
        return Ok(Manager::Ufw);
    }
    let list = Command::new("nft", &["-j", "list", "ruleset"]);
    let listed = match run(&list) {
        Ok(l) => l,
        // Reading the ruleset needs the same capability as changing it.
        Err(e) if denied(&e) => {
            return Err(FirewallError::Privilege {
                needs: Privilege::NetAdmin,
                script: format!(
                    "{list}  # lists the ruleset: the chains that drop decide the plan"
                ),
            })
        }
        Err(e) => return Err(e),
    };
    let (dropping, iptables) =
        dropping_chains(&listed.stdout).map_err(|why| FirewallError::Output {
            tool: "nft".into(),
            why,
        })?;
    Ok(if dropping.is_empty() {
        Manager::Open
    } else if iptables {
        Manager::Iptables {
            backend: IptablesBackend::Nft,
            ipv6: dropping.iter().any(|c| c.family == "ip6"),
        }
    } else {
        Manager::Nftables { dropping }
    })
}

/// The openings of one request, held: they exist while the guard lives and
/// are taken away when it is closed or dropped (dropping runs the undo
/// commands, blocking for a few milliseconds; call [`Guard::close`] from
/// `spawn_blocking` in async code to see errors). A process killed with
/// SIGKILL runs no destructor: [`sweep`] removes what it left.
#[derive(Debug)]
pub struct Guard {
    /// Undo commands of what was applied, in apply order.
    applied: Vec<Command>,
}

impl Guard {
    /// Takes the openings away now.
    ///
    /// # Errors
    ///
    /// The first undo command that failed (the others are still run).
    pub fn close(mut self) -> Result<(), FirewallError> {
        self.undo_all()
    }

    fn undo_all(&mut self) -> Result<(), FirewallError> {
        let mut first = None;
        while let Some(c) = self.applied.pop() {
            if let Err(e) = run(&c) {
                tracing::warn!(command = %c, error = %e, "firewall: undo failed");
                first.get_or_insert(e);
            }
        }
        first.map_or(Ok(()), Err)
    }
}

impl Drop for Guard {
    fn drop(&mut self) {
        let _ = self.undo_all();
    }
}

/// Waits for SIGINT or SIGTERM, then closes `guard` (the openings go before
/// the process does) and returns the signal's number. An application's
/// `main` selects on it beside its work, then exits; SIGKILL cannot be
/// caught — [`sweep`] at the next start handles that.
///
/// # Errors
///
/// The signal handlers could not be installed; closing failed.
///
/// # Cancel safety
///
/// Cancel safe: dropping the future drops the guard, which closes it too.
pub async fn close_on_signal(guard: Guard) -> Result<i32, FirewallError> {
    use tokio::signal::unix::{signal, SignalKind};
    let io = |e: std::io::Error| FirewallError::Output {
        tool: "signal handlers".into(),
        why: e.to_string(),
    };
    let mut int = signal(SignalKind::interrupt()).map_err(io)?;
    let mut term = signal(SignalKind::terminate()).map_err(io)?;
    let number = tokio::select! {
        _ = int.recv() => 2,
        _ = term.recv() => 15,
    };
    // The undo commands block for a few milliseconds: off the runtime.
    tokio::task::spawn_blocking(move || guard.close())
        .await
        .map_err(|e| FirewallError::Output {
            tool: "firewall undo".into(),
            why: e.to_string(),
        })??;
    Ok(number)
}

/// Opens what `request` asks through `manager` (from [`detect`]). Nothing
/// is half-applied: when a step fails, the steps before it are undone.
///
/// # Errors
///
/// [`FirewallError::Privilege`] with the commands to run instead;
/// [`FirewallError::Command`]; [`FirewallError::Missing`]; the request's
/// own errors.
pub fn open(request: &Request, manager: &Manager) -> Result<Guard, FirewallError> {
    let p = plan(request, manager)?;
    apply(&p)
}

/// Carries `p` out (see [`open`]).
///
/// # Errors
///
/// As [`open`].
pub fn apply(p: &Plan) -> Result<Guard, FirewallError> {
    let mut guard = Guard {
        applied: Vec::new(),
    };
    for Step { apply, undo } in &p.steps {
        match run(apply) {
            Ok(ran) => {
                let undo = match undo {
                    Undo::Run(c) => c.clone(),
                    Undo::NftDeleteInserted { chain } => {
                        let Some(handle) = echoed_handle(&ran.stdout) else {
                            let e = failed(apply, "no handle echoed".into(), ran.stdout);
                            return Err(abandon(guard, e));
                        };
                        Command::new(
                            "nft",
                            &[
                                "delete",
                                "rule",
                                &chain.family,
                                &chain.table,
                                &chain.chain,
                                "handle",
                                &handle.to_string(),
                            ],
                        )
                    }
                };
                guard.applied.push(undo);
            }
            Err(e) if denied(&e) => {
                let _ = guard.undo_all();
                return Err(FirewallError::Privilege {
                    needs: p.privilege,
                    script: p.to_string(),
                });
            }
            Err(e) => return Err(abandon(guard, e)),
        }
    }
    Ok(guard)
}

/// Undoes what `guard` holds after `e`; says in `e` whether that worked.
fn abandon(mut guard: Guard, mut e: FirewallError) -> FirewallError {
    let undone = guard.undo_all().is_ok();
    if let FirewallError::Command { undone: u, .. } = &mut e {
        *u = undone;
    }
    e
}

/// Removes every rule tagged for `app` (any instance) — what an instance
/// killed before it could close its guard left. Returns how many.
///
/// # Errors
///
/// The ruleset could not be read or a rule not deleted.
pub fn sweep(app: &str) -> Result<usize, FirewallError> {
    let prefix = format!("{TAG_PREFIX}{app}:");
    let mut removed = 0;
    // nftables (iptables-nft's rules included: they are nftables rules).
    let listed = run(&Command::new("nft", &["-j", "-a", "list", "ruleset"]))?;
    let v: serde_json::Value =
        serde_json::from_str(&listed.stdout).map_err(|e| FirewallError::Output {
            tool: "nft".into(),
            why: e.to_string(),
        })?;
    for item in v["nftables"].as_array().into_iter().flatten() {
        let r = &item["rule"];
        let tagged = r["comment"]
            .as_str()
            .is_some_and(|c| c.starts_with(&prefix));
        if !tagged {
            continue;
        }
        let (Some(family), Some(table), Some(chain), Some(handle)) = (
            r["family"].as_str(),
            r["table"].as_str(),
            r["chain"].as_str(),
            r["handle"].as_u64(),
        ) else {
            continue;
        };
        run(&Command::new(
            "nft",
            &[
                "delete",
                "rule",
                family,
                table,
                chain,
                "handle",
                &handle.to_string(),
            ],
        ))?;
        removed += 1;
    }
    Ok(removed)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_distribution_style_ruleset_drops_in_its_input_chain() {
        let json = r#"{"nftables": [
            {"metainfo": {"version": "1.0.6"}},
            {"table": {"family": "inet", "name": "filter", "handle": 1}},
            {"chain": {"family": "inet", "table": "filter", "name": "input", "handle": 1,
                       "type": "filter", "hook": "input", "prio": 0, "policy": "drop"}},
            {"chain": {"family": "inet", "table": "filter", "name": "forward", "handle": 2,
                       "type": "filter", "hook": "forward", "prio": 0, "policy": "drop"}},
            {"chain": {"family": "ip", "table": "other", "name": "in", "handle": 1,
                       "type": "filter", "hook": "input", "prio": 10, "policy": "accept"}},
            {"rule": {"family": "ip", "table": "other", "chain": "in", "handle": 4,
                      "expr": [{"match": {"op": "==", "left": {"payload": {"protocol": "tcp", "field": "dport"}}, "right": 23}}, {"reject": null}]}}
        ]}"#;
        let (chains, iptables) = dropping_chains(json).expect("parse");
        assert_eq!(
            chains,
            vec![
                NftChain {
                    family: "inet".into(),
                    table: "filter".into(),
                    chain: "input".into()
                },
                NftChain {
                    family: "ip".into(),
                    table: "other".into(),
                    chain: "in".into()
                },
            ]
        );
        assert!(!iptables);
        assert!(dropping_chains("not json").is_err());
        let empty = r#"{"nftables": [{"metainfo": {"version": "1.0.6"}}]}"#;
        assert_eq!(dropping_chains(empty), Ok((vec![], false)));
    }

    #[test]
    fn iptables_nft_tables_are_left_to_iptables() {
        let json = r#"{"nftables": [
            {"chain": {"family": "ip", "table": "filter", "name": "INPUT", "handle": 1,
                       "type": "filter", "hook": "input", "prio": 0, "policy": "drop"}}
        ]}"#;
        assert!(dropping_chains(json).expect("parse").1);
    }

    #[test]
    fn the_echoed_handle_is_read() {
        let out =
            "add rule inet filter input tcp dport 7000 accept comment \"netmend:a:1\" # handle 7\n";
        assert_eq!(echoed_handle(out), Some(7));
        assert_eq!(echoed_handle("nothing"), None);
    }
}
