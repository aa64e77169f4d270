//! The engine's network monitor against a real kernel: random sequences of
//! link, address and route changes in a lab namespace, carrier loss, a
//! same-interface gateway change, and a socket overflow.

mod common;

use common::{control_runtime, require_netns};
use netmend::monitor::{diff, Debounce, Event, Family, Monitor, Snapshot};
use netmend_harness::backend::netns::host::HostTask;
use netmend_harness::backend::netns::lab::{Attachment, Lab, LabSpec};
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::sync::mpsc;
use std::time::{Duration, Instant};

/// A monitor running in the client's namespace, and a way to ask it for
/// its snapshot next to a fresh dump of the kernel.
struct Watched {
    events: mpsc::Receiver<Event>,
    ask: tokio::sync::mpsc::UnboundedSender<()>,
    answers: mpsc::Receiver<(Snapshot, Snapshot, u64)>,
    _task: HostTask,
}

fn watch(lab: &Lab, receive_buffer: Option<usize>) -> Watched {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .with_test_writer()
        .try_init();
    let (event_tx, events) = mpsc::channel();
    let (ask, mut asks) = tokio::sync::mpsc::unbounded_channel::<()>();
    let (answer_tx, answers) = mpsc::channel();
    let (ready_tx, ready) = mpsc::channel();
    let task = HostTask::spawn(lab.namespace("client").unwrap(), "monitor", move || {
        Ok(async move {
            let monitor = Monitor::linux_with_buffer(Debounce::default(), receive_buffer)
                .await
                .expect("monitor");
            monitor.on_event(move |e| {
                let _ = event_tx.send(e.clone());
            });
            let mut dumper = netmend::monitor::linux::LinuxSource::open(None).expect("dump socket");
            let _ = ready_tx.send(());
            while asks.recv().await.is_some() {
                let kernel = dumper.dump().await.expect("dump");
                let _ = answer_tx.send((monitor.snapshot(), kernel, monitor.resyncs()));
            }
        })
    })
    .unwrap();
    ready.recv_timeout(Duration::from_secs(5)).unwrap();
    Watched {
        events,
        ask,
        answers,
        _task: task,
    }
}

impl Watched {
    fn state(&self) -> (Snapshot, Snapshot, u64) {
        self.ask.send(()).unwrap();
        self.answers.recv_timeout(Duration::from_secs(5)).unwrap()
    }

    /// Waits until the monitor's snapshot equals the kernel's; returns the
    /// kernel's state and every event seen meanwhile.
    fn settle(&self, what: &str) -> (Snapshot, Vec<Event>) {
        let t = Instant::now();
        loop {
            let (mine, kernel, _) = self.state();
            if mine == kernel {
                return (kernel, self.events.try_iter().collect());
            }
            assert!(
                t.elapsed() < Duration::from_secs(5),
                "after {what}: the monitor is off the kernel by {:#?}\nroutes: {:?} vs {:?}\ninterfaces: {:?} vs {:?}",
                diff(&mine, &kernel),
                mine.default_routes,
                kernel.default_routes,
                mine.interfaces.values().collect::<Vec<_>>(),
                kernel.interfaces.values().collect::<Vec<_>>()
            );
            std::thread::sleep(Duration::from_millis(2));
        }
    }
}

fn lab_with_two_nics(rt: &tokio::runtime::Runtime) -> (Lab, Attachment, Attachment) {
    let mut lab = rt
        .block_on(Lab::build(&LabSpec {
            router: "router".into(),
            hosts: vec!["client".into(), "server".into()],
        }))
        .unwrap();
    let nic0 = lab.attachment("client").unwrap().clone();
    let nic1 = rt.block_on(lab.add_link("client", false)).unwrap();
    (lab, nic0, nic1)
}

#[test]
#[ignore = "needs root and network namespaces (nft, iptables, tc): run with --include-ignored"]
fn two_hundred_random_changes_are_each_reported_and_the_snapshot_stays_the_kernels() {
    require_netns("monitor random changes");
    let rt = control_runtime();
    let (lab, nic0, nic1) = lab_with_two_nics(&rt);
    let watched = watch(&lab, None);
    let (mut kernel, _) = watched.settle("start");
    let nics = [nic0, nic1];
    let mut rng = SmallRng::seed_from_u64(20261124);
    let (mut changes, mut reported) = (0, 0);
    for step in 0..300 {
        let nic = &nics[rng.random_range(0..2)];
        let index = kernel
            .interfaces
            .values()
            .find(|i| i.name == nic.host_if)
            .map(|i| i.index)
            .unwrap();
        let up = kernel.interfaces[&index].up;
        let v6 = rng.random_bool(0.5);
        let family = if v6 { Family::V6 } else { Family::V4 };
        let (gateway, prefix_len): (IpAddr, u8) = if v6 {
            (nic.router_v6().into(), 64)
        } else {
            (nic.router_v4().into(), 24)
        };
        let pool = |host: u8| -> IpAddr {
            if v6 {
                Ipv6Addr::new(0x2001, 0xdb8, 0, nic.subnet.into(), 0, 0, 0, host.into()).into()
            } else {
                Ipv4Addr::new(198, 18, nic.subnet, host).into()
            }
        };
        let present: Vec<IpAddr> = kernel
            .addresses_on(index, family)
            .map(|a| a.ip)
            .filter(|ip| (10..30).any(|h| pool(h) == *ip))
            .collect();
        // Pick an operation that changes something in the current state.
        let what = match rng.random_range(0..5) {
            0 | 1 if present.len() < 6 || rng.random_bool(0.5) => {
                let ip = pool(rng.random_range(10..30));
                let _ = rt.block_on(lab.address_add("client", &nic.host_if, ip, prefix_len));
                format!("add {ip} on {}", nic.host_if)
            }
            0 | 1 => {
                let ip = present[rng.random_range(0..present.len())];
                rt.block_on(lab.address_remove("client", &nic.host_if, ip))
                    .unwrap();
                format!("remove {ip} from {}", nic.host_if)
            }
            2 if up => {
                rt.block_on(lab.default_route_replace("client", gateway, &nic.host_if))
                    .unwrap();
                format!("default via {gateway} on {}", nic.host_if)
            }
            3 if kernel.default_routes.iter().any(|r| r.family == family) => {
                rt.block_on(lab.default_route_remove("client", v6)).unwrap();
                format!("remove the {family:?} default route")
            }
            _ => {
                rt.block_on(lab.set_link_up("client", &nic.host_if, !up))
                    .unwrap();
                format!("set {} {}", nic.host_if, if up { "down" } else { "up" })
            }
        };
        let what = format!("step {step}: {what}");
        let (after, events) = watched.settle(&what);
        let expected = diff(&kernel, &after);
        if !expected.is_empty() || after != kernel {
            changes += 1;
        }
        for want in expected {
            assert!(
                events.contains(&want),
                "{what}: {want:?} not reported in {events:?}"
            );
            reported += 1;
        }
        kernel = after;
    }
    assert!(
        changes >= 200,
        "only {changes} of 300 steps changed the state"
    );
    assert!(reported >= 200, "only {reported} events checked");
}

#[test]
#[ignore = "needs root and network namespaces (nft, iptables, tc): run with --include-ignored"]
fn carrier_loss_and_a_same_interface_gateway_change_are_reported() {
    require_netns("monitor carrier and gateway");
    let rt = control_runtime();
    let (lab, nic0, _nic1) = lab_with_two_nics(&rt);
    let watched = watch(&lab, None);
    let (start, _) = watched.settle("start");
    let index = start
        .interfaces
        .values()
        .find(|i| i.name == nic0.host_if)
        .map(|i| i.index)
        .unwrap();

    // The far end goes down: the client keeps IFF_UP but loses carrier.
    rt.block_on(lab.set_link_up("router", &nic0.router_if, false))
        .unwrap();
    let t = Instant::now();
    let down = loop {
        let e = watched
            .events
            .recv_timeout(Duration::from_secs(3))
            .expect("carrier loss reported");
        if let Event::LinkDown(i) = e {
            break i;
        }
    };
    assert_eq!((down.index, down.up, down.carrier), (index, true, false));
    assert!(t.elapsed() < Duration::from_secs(3));
    rt.block_on(lab.set_link_up("router", &nic0.router_if, true))
        .unwrap();
    let up = loop {
        if let Event::LinkUp(i) = watched.events.recv_timeout(Duration::from_secs(3)).unwrap() {
            break i;
        }
    };
    assert_eq!((up.index, up.carrier), (index, true));
    watched.settle("carrier back");

    // Same interface, new gateway.
    let gw2: IpAddr = Ipv4Addr::new(198, 18, nic0.subnet, 254).into();
    rt.block_on(lab.address_add("router", &nic0.router_if, gw2, 24))
        .unwrap();
    rt.block_on(lab.default_route_replace("client", gw2, &nic0.host_if))
        .unwrap();
    let (_, events) = watched.settle("gateway change");
    let changed = events.iter().find_map(|e| match e {
        Event::DefaultRouteChanged { from, to } => Some((*from, *to)),
        _ => None,
    });
    let (from, to) = changed.unwrap_or_else(|| panic!("no gateway change in {events:?}"));
    assert_eq!(from.gateway, Some(nic0.router_v4().into()));
    assert_eq!((to.gateway, to.interface), (Some(gw2), index));
}

#[test]
#[ignore = "needs root and network namespaces (nft, iptables, tc): run with --include-ignored"]
fn an_overflowing_socket_is_resynced_from_a_fresh_dump() {
    require_netns("monitor overflow");
    let rt = control_runtime();
    let (lab, nic0, _) = lab_with_two_nics(&rt);
    // The smallest buffer the kernel allows: a burst must overflow it.
    let watched = watch(&lab, Some(1));
    watched.settle("start");
    // A burst from one `ip -batch`, faster than the monitor reads.
    let mut batch = String::new();
    for k in 0..250u32 {
        batch.push_str(&format!(
            "address add 2001:db8:0:{}::{:x}/64 dev {}\n",
            nic0.subnet,
            0x100 + k,
            nic0.host_if
        ));
    }
    lab.exec("client", &["ip", "-batch", "-"], Some(batch.as_bytes()))
        .unwrap();
    let (kernel, _) = watched.settle("a burst of 250 addresses");
    assert!(kernel.addresses.len() >= 250);
    let (_, _, resyncs) = watched.state();
    assert!(
        resyncs >= 1,
        "the burst overflowed the socket and was re-read"
    );
}

#[test]
#[ignore = "needs root and network namespaces (nft, iptables, tc): run with --include-ignored"]
fn the_portable_polling_source_sees_what_the_kernel_has_and_follows_a_default_change() {
    require_netns("portable polling source");
    let rt = control_runtime();
    let (lab, _nic0, nic1) = lab_with_two_nics(&rt);
    let (tx, rx) = mpsc::channel();
    let (go_tx, go_rx) = tokio::sync::oneshot::channel::<()>();
    let _task = HostTask::spawn(lab.namespace("client").unwrap(), "poller", move || {
        Ok(async move {
            let portable = netmend::monitor::read_system();
            let kernel = netmend::monitor::linux::LinuxSource::open(None)
                .expect("dump socket")
                .dump()
                .await
                .expect("dump");
            let monitor = Monitor::system_polling(Duration::from_millis(100), Debounce::default())
                .await
                .expect("polling monitor");
            let mut events = monitor.events();
            let _ = tx.send(Ok((portable, kernel)));
            let _ = go_rx.await;
            let deadline = tokio::time::sleep(Duration::from_secs(3));
            tokio::pin!(deadline);
            loop {
                tokio::select! {
                    e = events.next() => {
                        if let Some(e @ Event::DefaultInterfaceChanged { .. }) = e {
                            let _ = tx.send(Err(e));
                            return;
                        }
                    }
                    () = &mut deadline => return,
                }
            }
        })
    })
    .unwrap();
    let Ok((portable, kernel)) = rx.recv_timeout(Duration::from_secs(5)).unwrap() else {
        panic!("no snapshots");
    };
    assert_eq!(portable.addresses, kernel.addresses);
    assert_eq!(portable.default_interface(), kernel.default_interface());
    let names = |s: &Snapshot| {
        s.interfaces
            .values()
            .map(|i| i.name.clone())
            .collect::<Vec<_>>()
    };
    assert_eq!(names(&portable), names(&kernel));

    // Move the default route (both families) to the second NIC.
    rt.block_on(lab.default_route_replace("client", nic1.router_v4().into(), &nic1.host_if))
        .unwrap();
    rt.block_on(lab.default_route_replace("client", nic1.router_v6().into(), &nic1.host_if))
        .unwrap();
    go_tx.send(()).unwrap();
    match rx.recv_timeout(Duration::from_secs(5)).unwrap() {
        Err(Event::DefaultInterfaceChanged { to, .. }) => {
            let idx = kernel
                .interfaces
                .values()
                .find(|i| i.name == nic1.host_if)
                .map(|i| i.index);
            assert_eq!(to, idx);
        }
        other => panic!("expected a default interface change, got {other:?}"),
    }
}

/// Runs `ip` in the client's namespace.
fn ip(lab: &Lab, args: &[&str]) {
    let mut argv = vec!["ip"];
    argv.extend_from_slice(args);
    lab.exec("client", &argv, None)
        .unwrap_or_else(|e| panic!("ip {}: {e}", args.join(" ")));
}

/// Deletes every default route of a family in the client's namespace.
fn flush_defaults(lab: &Lab, v6: bool) {
    let family = if v6 { "-6" } else { "-4" };
    for _ in 0..16 {
        if lab
            .exec("client", &["ip", family, "route", "del", "default"], None)
            .is_err()
        {
            return;
        }
    }
}

/// The kernel's default routes of a family as `(gateway, device)` pairs,
/// one per next hop, from `ip -j route show default` (independent of the
/// engine's own parser).
fn kernel_defaults(lab: &Lab, v6: bool) -> std::collections::BTreeSet<(String, String)> {
    let family = if v6 { "-6" } else { "-4" };
    let out = lab
        .exec(
            "client",
            &["ip", "-j", family, "route", "show", "default"],
            None,
        )
        .unwrap();
    let routes: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let mut set = std::collections::BTreeSet::new();
    for r in routes.as_array().into_iter().flatten() {
        let hops = match r.get("nexthops").and_then(|h| h.as_array()) {
            Some(h) => h.clone(),
            None => vec![r.clone()],
        };
        for h in hops {
            let gw = h.get("gateway").and_then(|g| g.as_str()).unwrap_or("");
            let dev = h.get("dev").and_then(|d| d.as_str()).unwrap_or("");
            set.insert((gw.to_string(), dev.to_string()));
        }
    }
    set
}

/// The monitor's default routes of a family, in the same form.
fn snapshot_defaults(s: &Snapshot, family: Family) -> std::collections::BTreeSet<(String, String)> {
    s.default_routes
        .iter()
        .filter(|r| r.family == family)
        .map(|r| {
            let gw = r.gateway.map(|g| g.to_string()).unwrap_or_default();
            (gw, s.interfaces[&r.interface].name.clone())
        })
        .collect()
}

#[test]
#[ignore = "needs root and network namespaces (nft, iptables, tc): run with --include-ignored"]
fn multipath_defaults_are_in_the_snapshot_through_add_append_replace_and_delete() {
    require_netns("monitor multipath");
    let rt = control_runtime();
    let (lab, nic0, nic1) = lab_with_two_nics(&rt);
    let watched = watch(&lab, None);
    watched.settle("start");
    let (a, b) = (&nic0.host_if, &nic1.host_if);
    let (a4, b4) = (nic0.router_v4().to_string(), nic1.router_v4().to_string());
    let (a6, b6) = (nic0.router_v6().to_string(), nic1.router_v6().to_string());
    let steps: Vec<(String, Vec<Vec<&str>>, bool)> = vec![
        ("v4 flush".into(), vec![], false),
        (
            "v4 multipath add".into(),
            vec![vec![
                "route", "add", "default", "nexthop", "via", &a4, "dev", a, "nexthop", "via", &b4,
                "dev", b,
            ]],
            false,
        ),
        (
            "v4 replace by a single hop".into(),
            vec![vec!["route", "replace", "default", "via", &b4, "dev", b]],
            false,
        ),
        (
            "v4 replace by a multipath route".into(),
            vec![vec![
                "route", "replace", "default", "nexthop", "via", &a4, "dev", a, "nexthop", "via",
                &b4, "dev", b,
            ]],
            false,
        ),
        (
            "v4 delete".into(),
            vec![vec!["-4", "route", "del", "default"]],
            false,
        ),
        ("v6 flush".into(), vec![], true),
        (
            "v6 add and append".into(),
            vec![
                vec!["-6", "route", "add", "default", "via", &a6, "dev", a],
                vec!["-6", "route", "append", "default", "via", &b6, "dev", b],
            ],
            true,
        ),
        (
            "v6 replace by a multipath route".into(),
            vec![vec![
                "-6", "route", "replace", "default", "nexthop", "via", &a6, "dev", a, "nexthop",
                "via", &b6, "dev", b,
            ]],
            true,
        ),
        (
            "v6 delete".into(),
            vec![vec!["-6", "route", "del", "default"]],
            true,
        ),
        (
            "v6 append to nothing, then delete one hop".into(),
            vec![
                vec!["-6", "route", "append", "default", "via", &a6, "dev", a],
                vec!["-6", "route", "append", "default", "via", &b6, "dev", b],
                vec!["-6", "route", "del", "default", "via", &a6, "dev", a],
            ],
            true,
        ),
    ];
    let mut saw_multipath = [false, false];
    for (what, commands, v6) in steps {
        if commands.is_empty() {
            flush_defaults(&lab, v6);
        }
        for c in &commands {
            ip(&lab, c);
        }
        let (snapshot, _) = watched.settle(&what);
        let family = if v6 { Family::V6 } else { Family::V4 };
        let kernel = kernel_defaults(&lab, v6);
        assert_eq!(snapshot_defaults(&snapshot, family), kernel, "after {what}");
        if kernel.len() >= 2 {
            saw_multipath[usize::from(v6)] = true;
        }
    }
    assert_eq!(
        saw_multipath,
        [true, true],
        "both families had a multipath route"
    );
}

/// The device the kernel picks for a destination off every connected
/// subnet (a lookup only; nothing is sent).
fn kernel_choice(lab: &Lab, v6: bool) -> Option<String> {
    let (family, dst) = if v6 {
        ("-6", "2001:db8:ff::1")
    } else {
        ("-4", "198.18.250.1")
    };
    let out = lab
        .exec("client", &["ip", "-j", family, "route", "get", dst], None)
        .ok()?;
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).ok()?;
    v.get(0)?.get("dev")?.as_str().map(str::to_string)
}

#[test]
#[ignore = "needs root and network namespaces (nft, iptables, tc): run with --include-ignored"]
fn routes_that_lost_carrier_are_chosen_as_the_kernel_chooses_under_both_sysctl_values() {
    require_netns("monitor linkdown");
    let mut checks = 0;
    for ignore in ["0", "1"] {
        let rt = control_runtime();
        let (lab, nic0, nic1) = lab_with_two_nics(&rt);
        let watched = watch(&lab, None);
        watched.settle("start");
        for v6 in [false, true] {
            flush_defaults(&lab, v6);
        }
        let (a, b) = (&nic0.host_if, &nic1.host_if);
        let (a4, b4) = (nic0.router_v4().to_string(), nic1.router_v4().to_string());
        let (a6, b6) = (nic0.router_v6().to_string(), nic1.router_v6().to_string());
        ip(
            &lab,
            &[
                "route", "add", "default", "via", &a4, "dev", a, "metric", "100",
            ],
        );
        ip(
            &lab,
            &[
                "route", "add", "default", "via", &b4, "dev", b, "metric", "200",
            ],
        );
        ip(
            &lab,
            &[
                "-6", "route", "add", "default", "via", &a6, "dev", a, "metric", "100",
            ],
        );
        ip(
            &lab,
            &[
                "-6", "route", "add", "default", "via", &b6, "dev", b, "metric", "200",
            ],
        );
        // Changed while the monitor runs: it must hear of it (netconf).
        for family in ["ipv4", "ipv6"] {
            let set = format!(
                "echo {ignore} > /proc/sys/net/{family}/conf/all/ignore_routes_with_linkdown"
            );
            lab.exec("client", &["sh", "-c", &set], None).unwrap();
        }
        for (step, carrier) in [
            ("carrier lost", false),
            ("carrier back", true),
            ("lost again", false),
        ] {
            rt.block_on(lab.set_link_up("router", &nic0.router_if, carrier))
                .unwrap();
            let what = format!("ignore_routes_with_linkdown={ignore}, {step}");
            let (snapshot, _) = watched.settle(&what);
            for v6 in [false, true] {
                let family = if v6 { Family::V6 } else { Family::V4 };
                let mine = snapshot
                    .default_route(family)
                    .map(|r| snapshot.interfaces[&r.interface].name.clone());
                // The kernel settles its choice a moment after the carrier event.
                let t = Instant::now();
                loop {
                    let kernel = kernel_choice(&lab, v6);
                    if kernel == mine {
                        break;
                    }
                    assert!(
                        t.elapsed() < Duration::from_secs(3),
                        "{what}, {family:?}: the snapshot routes by {mine:?}, the kernel by {kernel:?}"
                    );
                    std::thread::sleep(Duration::from_millis(20));
                }
                checks += 1;
            }
        }
    }
    assert_eq!(checks, 12);
}
