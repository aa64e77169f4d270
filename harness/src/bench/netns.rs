//! `netmend bench netns-setup`: building and tearing down a 4-namespace lab
//! through netlink, side by side with the same lab built by `ip` commands.

use crate::backend::netns::lab::{Lab, LabSpec, LiveGuard};
use crate::backend::netns::LabError;
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

/// Detection latency of one watcher over a run of changes.
#[derive(Clone, Debug)]
pub struct Latency {
    /// Who watched.
    pub watcher: &'static str,
    /// Changes it reported (of those made).
    pub seen: usize,
    /// Median, 99th percentile and worst, kernel change → report.
    pub p50: Duration,
    /// 99th percentile.
    pub p99: Duration,
    /// Worst.
    pub max: Duration,
}

fn latency(watcher: &'static str, mut v: Vec<Duration>) -> Latency {
    v.sort();
    let at = |q: f64| {
        v.get(((v.len().max(1) - 1) as f64 * q).round() as usize)
            .copied()
            .unwrap_or_default()
    };
    Latency {
        watcher,
        seen: v.len(),
        p50: at(0.5),
        p99: at(0.99),
        max: v.last().copied().unwrap_or_default(),
    }
}

/// `netmend bench monitor`: `changes` address additions in a lab
/// namespace, each timed from just before the netlink request to the moment
/// a watcher reports it — netmend's monitor (handler invoked), `ip -o
/// monitor address` (line read), and netmend's polling source at a 1 s
/// interval — all watching the same changes at once.
pub fn monitor_latency(changes: usize, spacing: Duration) -> Result<Vec<Latency>, LabError> {
    use netmend::monitor::{Debounce, Event, Monitor};
    use std::io::BufRead;
    use std::net::{IpAddr, Ipv6Addr};
    use std::sync::mpsc;

    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| LabError::io("runtime", e))?;
    let lab = runtime.block_on(Lab::build(&LabSpec {
        router: "router".into(),
        hosts: vec!["client".into()],
    }))?;
    let nic = lab.attachment("client")?.clone();
    let address = |i: usize| -> IpAddr {
        Ipv6Addr::new(0x2001, 0xdb8, 0, nic.subnet.into(), 0, 0, 1, i as u16).into()
    };

    // Watchers: each reports (address, when) for every address it sees added.
    let (seen_tx, seen_rx) = mpsc::channel::<(&'static str, IpAddr, Instant)>();
    let (ready_tx, ready_rx) = mpsc::channel::<Result<(), String>>();
    let tx = seen_tx.clone();
    let _watchers = crate::backend::netns::host::HostTask::spawn(
        lab.namespace("client")?,
        "watchers",
        move || {
            Ok(async move {
                let started: Result<(Monitor, Monitor), String> = async {
                    let native = Monitor::linux(Debounce::default())
                        .await
                        .map_err(|e| e.to_string())?;
                    let (connection, handle, _) =
                        rtnetlink::new_connection().map_err(|e| e.to_string())?;
                    tokio::spawn(connection);
                    let polling =
                        Monitor::polling(Duration::from_secs(1), Debounce::default(), move || {
                            let handle = handle.clone();
                            async move {
                                netmend::monitor::linux::dump(&handle)
                                    .await
                                    .map_err(std::io::Error::other)
                            }
                        })
                        .await
                        .map_err(|e| e.to_string())?;
                    Ok((native, polling))
                }
                .await;
                let (native, polling) = match started {
                    Ok(m) => m,
                    Err(e) => {
                        let _ = ready_tx.send(Err(e));
                        return;
                    }
                };
                for (monitor, name) in [(&native, "netmend monitor"), (&polling, "1 s polling")] {
                    let tx = tx.clone();
                    monitor.on_event(move |e| {
                        if let Event::AddressAdded(a) = e {
                            let _ = tx.send((name, a.ip, Instant::now()));
                        }
                    });
                }
                let _ = ready_tx.send(Ok(()));
                std::future::pending::<()>().await;
            })
        },
    )?;
    ready_rx
        .recv_timeout(Duration::from_secs(10))
        .map_err(|_| LabError::Panicked("the watchers".into()))?
        .map_err(LabError::Unavailable)?;

    let mut ip_monitor = lab
        .command("client", "ip")?
        .args(["-o", "-6", "monitor", "address"])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .map_err(|e| LabError::io("start ip monitor", e))?;
    let stdout = ip_monitor
        .stdout
        .take()
        .ok_or_else(|| LabError::Unavailable("ip monitor has no stdout".into()))?;
    let tx = seen_tx.clone();
    let reader = std::thread::spawn(move || {
        for line in std::io::BufReader::new(stdout)
            .lines()
            .map_while(Result::ok)
        {
            let at = Instant::now();
            if line.starts_with("Deleted") {
                continue;
            }
            let ip = line
                .split_whitespace()
                .skip_while(|w| *w != "inet6")
                .nth(1)
                .and_then(|cidr| cidr.split('/').next())
                .and_then(|a| a.parse::<IpAddr>().ok());
            if let Some(ip) = ip {
                let _ = tx.send(("ip monitor", ip, at));
            }
        }
    });
    drop(seen_tx);
    // Let `ip monitor` subscribe before the first change.
    std::thread::sleep(Duration::from_millis(300));

    let mut made = Vec::with_capacity(changes);
    for i in 0..changes {
        let t0 = Instant::now();
        runtime.block_on(lab.address_add("client", &nic.host_if, address(i), 64))?;
        made.push((address(i), t0));
        std::thread::sleep(spacing);
    }
    // The polling watcher needs up to one interval more.
    std::thread::sleep(Duration::from_millis(1200));
    let _ = ip_monitor.kill();
    let _ = ip_monitor.wait();
    let _ = reader.join();

    let mut per: std::collections::BTreeMap<&'static str, Vec<Duration>> = Default::default();
    let reports: Vec<_> = seen_rx.try_iter().collect();
    for (ip, t0) in &made {
        for watcher in ["netmend monitor", "ip monitor", "1 s polling"] {
            if let Some((_, _, at)) = reports
                .iter()
                .find(|(w, seen, _)| *w == watcher && seen == ip)
            {
                per.entry(watcher)
                    .or_default()
                    .push(at.saturating_duration_since(*t0));
            }
        }
    }
    lab.teardown();
    Ok(["netmend monitor", "ip monitor", "1 s polling"]
        .into_iter()
        .map(|w| latency(w, per.remove(w).unwrap_or_default()))
        .collect())
}

/// Recovery figures of one client over several runs.
#[derive(Clone, Debug)]
pub struct Recovery {
    /// Which client.
    pub name: &'static str,
    /// Median time from the path working again to the first byte
    /// delivered after that (the session is delivering again), in ms.
    pub resumed_p50_ms: u64,
    /// Worst run of the same (with few runs, the p99).
    pub resumed_max_ms: u64,
    /// Median recovery, path working again → first byte written after that
    /// delivered (after the backlog written during the outage), in ms.
    pub p50_ms: u64,
    /// Best run.
    pub min_ms: u64,
    /// Worst run.
    pub max_ms: u64,
    /// Median connection attempts per run.
    pub attempts_p50: u32,
}

/// `netmend bench recovery`: the mitigated run of `s` (a session following
/// the monitor, reconnecting through the gate) against the same session
/// without a monitor (keepalive notices the dead path, then a plain
/// exponential backoff reconnects), runs interleaved.
pub fn recovery(
    s: &crate::scenario::Scenario,
    runs: usize,
) -> Result<(Recovery, Recovery), LabError> {
    use crate::backend::BackendKind;
    use crate::plan::Variant;
    let mut naive = s.clone();
    if let Some(m) = naive.mitigation.as_mut() {
        m.monitor = false;
        m.initial_backoff = Some(crate::scenario::Dur(Duration::from_millis(100)));
        m.max_backoff = Some(crate::scenario::Dur(Duration::from_secs(5)));
    }
    let mut gated_runs = Vec::new();
    let mut naive_runs = Vec::new();
    for i in 0..runs {
        for (scenario, out) in [(s, &mut gated_runs), (&naive, &mut naive_runs)] {
            let (rec, m) = crate::runner::measure(
                BackendKind::Netns,
                scenario,
                Variant::Mitigated,
                i as u64,
                None,
            )
            .map_err(|e| LabError::Unavailable(e.to_string()))?;
            let recovery = m.recovery_ms.ok_or_else(|| {
                LabError::Unavailable(format!("a run of {} never recovered", scenario.id))
            })?;
            let healed = scenario
                .faults
                .iter()
                .map(|f| f.healed_at().0)
                .max()
                .unwrap_or_default();
            let resumed = rec
                .streams
                .iter()
                .flat_map(|s| s.reads.iter().map(|(t, _)| *t))
                .filter(|t| *t >= healed)
                .min()
                .map_or(recovery, |t| (t - healed).as_millis() as u64);
            out.push((recovery, m.attempts, resumed));
        }
    }
    let summarize = |name: &'static str, mut v: Vec<(u64, u32, u64)>| {
        v.sort();
        let mut attempts: Vec<u32> = v.iter().map(|r| r.1).collect();
        attempts.sort();
        let mut resumed: Vec<u64> = v.iter().map(|r| r.2).collect();
        resumed.sort();
        Recovery {
            name,
            resumed_p50_ms: resumed[resumed.len() / 2],
            resumed_max_ms: resumed[resumed.len() - 1],
            p50_ms: v[v.len() / 2].0,
            min_ms: v[0].0,
            max_ms: v[v.len() - 1].0,
            attempts_p50: attempts[attempts.len() / 2],
        }
    };
    Ok((
        summarize("gate (monitor + probes)", gated_runs),
        summarize("exponential backoff (no monitor)", naive_runs),
    ))
}

/// Makes every delayed path in `s` stay dead for `d` (and the deadline
/// long enough for it). The attempt limit grows with the outage: probes
/// keep coming every (capped) interval while the path is dead, and the
/// policy's limit holds with a monitor too.
pub fn stretch_outage(s: &mut crate::scenario::Scenario, d: Duration) {
    use crate::fault::{Fault, GatewayChange, NicSwap};
    use crate::scenario::Dur;
    if let Some(m) = s.mitigation.as_mut() {
        let cap = m
            .max_probe_interval
            .map_or(Duration::from_secs(2), |c| c.0)
            .max(Duration::from_millis(2));
        let probes = (d.as_nanos() / (cap / 2).as_nanos()).min(10_000) as u32 + 8;
        m.max_attempts = Some(m.max_attempts.unwrap_or(0).max(probes));
    }
    for f in &mut s.faults {
        if let Fault::NicSwap(NicSwap { routable_after, .. })
        | Fault::GatewayChange(GatewayChange { routable_after, .. }) = f
        {
            *routable_after = Some(Dur(d));
        }
    }
    s.expect.deadline = Dur(s.expect.deadline.0.max(d * 3));
}
