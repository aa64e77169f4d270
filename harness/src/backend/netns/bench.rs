//! `netmend bench netns-setup`: building and tearing down a 4-namespace lab
//! through netlink, side by side with the same lab built by `ip` commands.

use super::lab::{Lab, LabSpec, LiveGuard};
use super::LabError;
use std::process::Command;
use std::time::{Duration, Instant};

/// Medians and spread of one way of building the lab.
#[derive(Clone, Debug)]
pub struct Figures {
    /// Median setup + teardown.
    pub median: Duration,
    /// 90th percentile.
    pub p90: Duration,
    /// Fastest run.
    pub min: Duration,
}

fn figures(mut v: Vec<Duration>) -> Figures {
    v.sort();
    let at = |q: f64| v[((v.len() - 1) as f64 * q).round() as usize];
    Figures {
        median: at(0.5),
        p90: at(0.9),
        min: v[0],
    }
}

/// The topology both sides build: a router and three hosts (client,
/// server, one more), each host on its own veth with IPv4 and IPv6
/// addresses and default routes.
pub fn spec() -> LabSpec {
    LabSpec {
        router: "router".into(),
        hosts: vec!["client".into(), "server".into(), "peer".into()],
    }
}

/// One netlink build + teardown.
pub async fn netlink_once() -> Result<Duration, LabError> {
    let t = Instant::now();
    let lab = Lab::build(&spec()).await?;
    lab.teardown();
    Ok(t.elapsed())
}

fn ip(args: &[&str]) -> Result<(), LabError> {
    let out = Command::new("ip")
        .args(args)
        .output()
        .map_err(|e| LabError::io("run ip", e))?;
    if !out.status.success() {
        return Err(LabError::Command {
            command: format!("ip {}", args.join(" ")),
            status: out.status.to_string(),
            stderr: String::from_utf8_lossy(&out.stderr).trim().to_string(),
        });
    }
    Ok(())
}

/// The same lab through `ip` shell-outs (what most test scripts do).
pub fn shell_once(run: usize) -> Result<Duration, LabError> {
    let t = Instant::now();
    // Named like a lab (`nm-<pid>-…`) so Ctrl-C and `netmend clean` treat
    // it as one.
    let prefix = format!("nm-{:x}-ipbench{run}", std::process::id());
    let _live = LiveGuard::new(&prefix);
    let router = format!("{prefix}-router");
    let result = (|| {
        ip(&["netns", "add", &router])?;
        ip(&[
            "netns",
            "exec",
            &router,
            "sysctl",
            "-qw",
            "net.ipv6.conf.default.addr_gen_mode=1",
            "net.ipv6.conf.all.accept_dad=0",
            "net.ipv6.conf.default.accept_dad=0",
            "net.ipv4.ip_forward=1",
            "net.ipv6.conf.all.forwarding=1",
        ])?;
        for (k, host) in spec().hosts.iter().enumerate() {
            let k = k + 1;
            let ns = format!("{prefix}-{host}");
            let rif = format!("nm-{k}-{host}");
            ip(&["netns", "add", &ns])?;
            ip(&[
                "netns",
                "exec",
                &ns,
                "sysctl",
                "-qw",
                "net.ipv6.conf.default.addr_gen_mode=1",
                "net.ipv6.conf.all.accept_dad=0",
                "net.ipv6.conf.default.accept_dad=0",
            ])?;
            ip(&[
                "-n", &router, "link", "add", &rif, "type", "veth", "peer", "name", "nm-eth0",
                "netns", &ns,
            ])?;
            ip(&["-n", &router, "link", "set", &rif, "up"])?;
            ip(&[
                "-n",
                &router,
                "addr",
                "add",
                &format!("198.18.{k}.1/24"),
                "dev",
                &rif,
            ])?;
            ip(&[
                "-n",
                &router,
                "addr",
                "add",
                &format!("2001:db8:0:{k}::1/64"),
                "dev",
                &rif,
            ])?;
            ip(&["-n", &ns, "link", "set", "nm-eth0", "up"])?;
            ip(&[
                "-n",
                &ns,
                "addr",
                "add",
                &format!("198.18.{k}.2/24"),
                "dev",
                "nm-eth0",
            ])?;
            ip(&[
                "-n",
                &ns,
                "addr",
                "add",
                &format!("2001:db8:0:{k}::2/64"),
                "dev",
                "nm-eth0",
            ])?;
            ip(&[
                "-n",
                &ns,
                "route",
                "add",
                "default",
                "via",
                &format!("198.18.{k}.1"),
            ])?;
            ip(&[
                "-n",
                &ns,
                "-6",
                "route",
                "add",
                "default",
                "via",
                &format!("2001:db8:0:{k}::1"),
            ])?;
        }
        Ok(())
    })();
    for host in spec()
        .hosts
        .iter()
        .chain(std::iter::once(&"router".to_string()))
    {
        let _ = ip(&["netns", "del", &format!("{prefix}-{host}")]);
    }
    result.map(|()| t.elapsed())
}

/// Runs both, interleaved so that machine noise hits them alike.
pub fn run(iterations: usize) -> Result<(Figures, Figures), LabError> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| LabError::io("runtime", e))?;
    // One warm-up round of each: module loading, first netlink sockets.
    runtime.block_on(netlink_once())?;
    shell_once(0)?;
    let (mut netlink, mut shell) = (Vec::new(), Vec::new());
    for i in 0..iterations {
        netlink.push(runtime.block_on(netlink_once())?);
        shell.push(shell_once(i + 1)?);
    }
    Ok((figures(netlink), figures(shell)))
}
