//! Real MQTT brokers in the lab: one `mosquitto` process per broker host
//! namespace, from a generated config, killed and restarted, stopped and
//! continued (SIGSTOP/SIGCONT), or cut off from peers by nftables rules
//! in its namespace, as a scenario's broker faults say.

use super::lab::Lab;
use super::service::{self, Transport};
use super::LabError;
use std::net::IpAddr;
use std::path::PathBuf;
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

/// How long a fresh mosquitto may take to listen.
const START_TIMEOUT: Duration = Duration::from_secs(5);

/// One broker: where it listens and its process while it runs.
struct Broker {
    node: String,
    addr: IpAddr,
    config: PathBuf,
    process: Option<Child>,
    /// Stopped with SIGSTOP (a restart starts it running).
    frozen: bool,
    /// Peers whose traffic to it is dropped.
    blocked: Vec<IpAddr>,
}

/// Name of the table each broker namespace's blocks live in.
const BLOCK_TABLE: &str = "nm-broker";

/// The nft script that drops all traffic between the broker's `port` and
/// `peers` (both directions, so TCP retransmits into silence), replacing
/// the table as a whole; with no peers it only removes the table.
pub fn block_script(peers: &[IpAddr], port: u16) -> String {
    let mut s = format!("table inet {BLOCK_TABLE}\ndelete table inet {BLOCK_TABLE}\n");
    if peers.is_empty() {
        return s;
    }
    let set = |v6: bool| -> Vec<String> {
        peers
            .iter()
            .filter(|p| p.is_ipv6() == v6)
            .map(|p| p.to_string())
            .collect()
    };
    s.push_str(&format!("table inet {BLOCK_TABLE} {{\n"));
    for (chain, hook, dir_peer, dir_port) in [
        ("input", "input", "saddr", "dport"),
        ("output", "output", "daddr", "sport"),
    ] {
        s.push_str(&format!(
            "  chain {chain} {{\n    type filter hook {hook} priority 0; policy accept;\n"
        ));
        for (family, v6) in [("ip", false), ("ip6", true)] {
            let addrs = set(v6);
            if !addrs.is_empty() {
                s.push_str(&format!(
                    "    {family} {dir_peer} {{ {} }} tcp {dir_port} {port} drop\n",
                    addrs.join(", ")
                ));
            }
        }
        s.push_str("  }\n");
    }
    s.push_str("}\n");
    s
}

/// The lab's brokers. Dropping them kills every process still running.
pub struct Mosquittos {
    brokers: Vec<Broker>,
    /// Holds the config files.
    dir: tempfile::TempDir,
}

/// The config of a broker listening on `addr:port`: anonymous clients (the
/// lab is closed), no persistence (a restart comes back empty, as the
/// scenarios' crashes mean), room for a burst of queued messages.
pub fn config(addr: IpAddr, port: u16) -> String {
    format!(
        "listener {port} {addr}\n\
         allow_anonymous true\n\
         persistence false\n\
         max_queued_messages 10000\n\
         log_dest none\n"
    )
}

/// Whether mosquitto can be run here.
pub fn available() -> Result<(), LabError> {
    // `mosquitto -h` prints its usage and exits non-zero.
    service::installed(
        "mosquitto",
        "-h",
        "`mosquitto` is missing; the netns backend runs real brokers (apt-get install mosquitto)",
    )
}

impl Mosquittos {
    /// Writes a config for each `(node, address)` and starts a broker in
    /// each node; returns once all of them listen.
    pub fn start(lab: &Lab, brokers: &[(String, IpAddr)], port: u16) -> Result<Self, LabError> {
        available()?;
        let dir = tempfile::tempdir().map_err(|e| LabError::io("broker config directory", e))?;
        let mut out = Mosquittos {
            brokers: Vec::new(),
            dir,
        };
        for (i, (node, addr)) in brokers.iter().enumerate() {
            let config = out.dir.path().join(format!("broker{i}.conf"));
            std::fs::write(&config, self::config(*addr, port))
                .map_err(|e| LabError::io(format!("write {}", config.display()), e))?;
            out.brokers.push(Broker {
                node: node.clone(),
                addr: *addr,
                config,
                process: None,
                frozen: false,
                blocked: Vec::new(),
            });
        }
        for i in 0..out.brokers.len() {
            out.spawn(lab, i)?;
        }
        let deadline = Instant::now() + START_TIMEOUT;
        for b in &mut out.brokers {
            wait_listening(b, port, deadline)?;
        }
        Ok(out)
    }

    fn spawn(&mut self, lab: &Lab, index: usize) -> Result<(), LabError> {
        let b = self
            .brokers
            .get_mut(index)
            .ok_or_else(|| LabError::BadName(format!("no broker {index}")))?;
        let child = lab
            .command(&b.node, "mosquitto")?
            .arg("-c")
            .arg(&b.config)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .map_err(|e| LabError::io(format!("start mosquitto in {}", b.node), e))?;
        tracing::debug!(broker = index, pid = child.id(), addr = %b.addr, "mosquitto started");
        b.process = Some(child);
        b.frozen = false;
        Ok(())
    }

    fn broker(&mut self, index: usize) -> Result<&mut Broker, LabError> {
        self.brokers
            .get_mut(index)
            .ok_or_else(|| LabError::BadName(format!("no broker {index}")))
    }

    /// Stops broker `index` (SIGSTOP: its sockets stay open, nothing is
    /// answered) or lets it run again (SIGCONT). A broker that is down
    /// stays down.
    pub fn set_frozen(&mut self, index: usize, frozen: bool) -> Result<(), LabError> {
        let b = self.broker(index)?;
        let Some(child) = b.process.as_ref() else {
            return Ok(());
        };
        let pid = nix::unistd::Pid::from_raw(child.id() as i32);
        let signal = if frozen {
            nix::sys::signal::Signal::SIGSTOP
        } else {
            nix::sys::signal::Signal::SIGCONT
        };
        nix::sys::signal::kill(pid, signal)
            .map_err(|e| LabError::io(format!("{signal} mosquitto"), e.into()))?;
        b.frozen = frozen;
        tracing::debug!(broker = index, frozen, "mosquitto signalled");
        Ok(())
    }

    /// Drops (or lets through again) the traffic between broker `index`'s
    /// port and `peers`, with nftables rules in the broker's namespace.
    pub fn set_blocked(
        &mut self,
        lab: &Lab,
        index: usize,
        peers: &[IpAddr],
        blocked: bool,
        port: u16,
    ) -> Result<(), LabError> {
        let b = self.broker(index)?;
        for p in peers {
            b.blocked.retain(|q| q != p);
            if blocked {
                b.blocked.push(*p);
            }
        }
        let script = block_script(&b.blocked, port);
        let node = b.node.clone();
        lab.exec(&node, &["nft", "-f", "-"], Some(script.as_bytes()))
            .map(drop)
    }

    /// Crashes broker `index` (SIGKILL: no goodbye to its clients beyond
    /// what the kernel does for a dead process) or starts it again, empty.
    pub fn set_down(&mut self, lab: &Lab, index: usize, down: bool) -> Result<(), LabError> {
        if down {
            let b = self.broker(index)?;
            b.frozen = false;
            if let Some(mut child) = b.process.take() {
                let _ = child.kill();
                child
                    .wait()
                    .map_err(|e| LabError::io("reap mosquitto", e))?;
                tracing::debug!(broker = index, "mosquitto killed");
            }
            Ok(())
        } else if self.brokers.get(index).is_some_and(|b| b.process.is_none()) {
            self.spawn(lab, index)
        } else {
            Ok(())
        }
    }

    /// Stops every broker.
    pub fn stop(mut self) {
        self.kill_all();
    }

    fn kill_all(&mut self) {
        for b in &mut self.brokers {
            if let Some(mut child) = b.process.take() {
                if b.frozen {
                    // A stopped process dies of SIGKILL too; continue it
                    // anyway so nothing is left stopped if the kill fails.
                    let pid = nix::unistd::Pid::from_raw(child.id() as i32);
                    let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGCONT);
                }
                let _ = child.kill();
                let _ = child.wait();
            }
        }
    }
}

fn wait_listening(b: &mut Broker, port: u16, deadline: Instant) -> Result<(), LabError> {
    loop {
        let Some(child) = b.process.as_mut() else {
            return Ok(());
        };
        if let Ok(Some(status)) = child.try_wait() {
            return Err(LabError::Unavailable(format!(
                "mosquitto in {} exited at start ({status})",
                b.node
            )));
        }
        if service::listening(child.id(), port, Transport::Tcp) {
            return Ok(());
        }
        if Instant::now() > deadline {
            return Err(LabError::Unavailable(format!(
                "mosquitto in {} did not listen on {}:{port} within {START_TIMEOUT:?}",
                b.node, b.addr
            )));
        }
        std::thread::sleep(Duration::from_millis(5));
    }
}

impl Drop for Mosquittos {
    fn drop(&mut self) {
        self.kill_all();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn configs_listen_on_the_lab_address_only_and_keep_nothing() {
        let c = config("198.18.3.2".parse().expect("literal"), 1883);
        assert!(c.starts_with("listener 1883 198.18.3.2\n"));
        assert!(c.contains("persistence false\n"));
        let c6 = config("2001:db8:0:3::2".parse().expect("literal"), 1883);
        assert!(c6.starts_with("listener 1883 2001:db8:0:3::2\n"));
    }

    #[test]
    fn block_rules_drop_both_directions_on_the_broker_port_only() {
        let peers: Vec<IpAddr> = vec![
            "198.18.1.2".parse().expect("literal"),
            "2001:db8:0:1::2".parse().expect("literal"),
        ];
        let s = block_script(&peers, 1883);
        assert!(s.starts_with("table inet nm-broker\ndelete table inet nm-broker\n"));
        assert!(s.contains("ip saddr { 198.18.1.2 } tcp dport 1883 drop"));
        assert!(s.contains("ip6 saddr { 2001:db8:0:1::2 } tcp dport 1883 drop"));
        assert!(s.contains("ip daddr { 198.18.1.2 } tcp sport 1883 drop"));
        assert!(s.contains("ip6 daddr { 2001:db8:0:1::2 } tcp sport 1883 drop"));
        assert_eq!(
            block_script(&[], 1883),
            "table inet nm-broker\ndelete table inet nm-broker\n",
            "unblocking removes the table"
        );
    }
}
