//! Nothing a run creates outlives it: 21 runs, including a failing
//! scenario, a panicking workload, a panic in the harness itself, Ctrl-C
//! and SIGKILL (with `netmend clean`), leave no `nm-` namespace, veth,
//! nftables table or broker process behind.
//!
//! One test in its own binary: cargo runs test binaries one after another,
//! so no other test's lab is alive while this one counts leftovers.

mod common;

use common::{control_runtime, lab_brokers_running, parse, require_netns, stream_scenario};
use netmend_harness::backend::netns::host::HostTask;
use netmend_harness::backend::netns::lab::{Lab, LabSpec};
use netmend_harness::backend::netns::namespace;
use netmend_harness::backend::BackendKind;
use netmend_harness::runner::{run_one, Verdict};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

fn netmend() -> Command {
    Command::new(env!("CARGO_BIN_EXE_netmend"))
}

/// `nm-` names visible from the initial namespace: namespaces under
/// /run/netns, links, and nftables tables.
fn leftovers() -> Vec<String> {
    let mut found: Vec<String> = namespace::leftovers();
    let links = Command::new("ip")
        .args(["-o", "link"])
        .output()
        .expect("ip link");
    for line in String::from_utf8_lossy(&links.stdout).lines() {
        if let Some(name) = line.split(':').nth(1) {
            if name.trim().starts_with("nm-") {
                found.push(format!("link {}", name.trim()));
            }
        }
    }
    let tables = Command::new("nft")
        .args(["list", "tables"])
        .output()
        .expect("nft");
    for line in String::from_utf8_lossy(&tables.stdout).lines() {
        if line.contains("nm-") {
            found.push(line.to_string());
        }
    }
    found
}

/// Starts `netmend run --backend netns` on a shipped scenario and returns
/// once its lab exists and the scenario is under way.
fn run_in_background(scenario: &str) -> Child {
    let mut child = netmend()
        .args(["run", "--backend", "netns"])
        .arg(
            std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
                .join(format!("../scenarios/{scenario}.toml")),
        )
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    wait_for_lab(&mut child);
    child
}

fn wait_for_lab(child: &mut Child) {
    let t = Instant::now();
    while namespace::leftovers().is_empty() {
        assert!(
            t.elapsed() < Duration::from_secs(10),
            "the run never built its lab"
        );
        assert!(child.try_wait().unwrap().is_none(), "netmend exited early");
        std::thread::sleep(Duration::from_millis(20));
    }
    // Let it get into the scenario proper.
    std::thread::sleep(Duration::from_millis(700));
}

fn signal(child: &Child, sig: nix::sys::signal::Signal) {
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(child.id() as i32), sig).unwrap();
}

#[test]
#[ignore = "needs root and network namespaces (nft, iptables, tc): run with --include-ignored"]
fn twenty_runs_leave_nothing_behind() {
    require_netns("cleanup");
    assert_eq!(
        leftovers(),
        Vec::<String>::new(),
        "clean machine to start with"
    );
    let quick = parse(&stream_scenario(
        "quick",
        "",
        "[[faults]]\nkind = \"reset\"\nat = \"200ms\"\n",
        r#"["loss"]"#,
        65536,
    ));
    // 1–16: ordinary runs (baseline + mitigated each).
    for i in 0..16 {
        let r = run_one(&quick, BackendKind::Netns, i);
        assert_eq!(r.verdict, Verdict::Pass, "run {i}: {:?}", r.reasons);
        assert_eq!(leftovers(), Vec::<String>::new(), "after run {i}");
    }

    // 17: a failing scenario (its baseline cannot show duplication).
    let failing = parse(&stream_scenario(
        "failing",
        "",
        "[[faults]]\nkind = \"reset\"\nat = \"200ms\"\n",
        r#"["duplication"]"#,
        65536,
    ));
    assert_eq!(
        run_one(&failing, BackendKind::Netns, 17).verdict,
        Verdict::Fail
    );
    assert_eq!(
        leftovers(),
        Vec::<String>::new(),
        "after a failing scenario"
    );

    // 18: a workload that panics inside its namespace, then a panic in the
    // harness thread itself while the lab is up.
    let rt = control_runtime();
    let lab = rt
        .block_on(Lab::build(&LabSpec {
            router: "r".into(),
            hosts: vec!["a".into(), "b".into()],
        }))
        .unwrap();
    let task = HostTask::spawn(lab.namespace("a").unwrap(), "a", || {
        Ok(async {
            let _socket = tokio::net::UdpSocket::bind("198.18.1.2:9").await;
            panic!("workload blew up");
        })
    })
    .unwrap();
    let t = Instant::now();
    while !task.is_finished() && t.elapsed() < Duration::from_secs(5) {
        std::thread::sleep(Duration::from_millis(10));
    }
    let err = task.stop().unwrap_err().to_string();
    assert!(err.contains("workload blew up"), "{err}");
    let unwound = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        let _lab = lab;
        panic!("harness bug while the lab is up");
    }));
    assert!(unwound.is_err());
    drop(rt);
    assert_eq!(leftovers(), Vec::<String>::new(), "after the panics");

    // 19, 20: Ctrl-C in the middle of a scenario, also one whose brokers
    // are processes of their own.
    for scenario in ["silent-path-loss", "broker-loss"] {
        let child = run_in_background(scenario);
        signal(&child, nix::sys::signal::Signal::SIGINT);
        let out = child.wait_with_output().unwrap();
        assert_eq!(out.status.code(), Some(130), "{scenario}");
        assert!(String::from_utf8_lossy(&out.stderr).contains("interrupted"));
        assert_eq!(leftovers(), Vec::<String>::new(), "after Ctrl-C");
        assert_eq!(lab_brokers_running(), 0, "after Ctrl-C in {scenario}");
    }

    // Issue 11: an interrupted run still writes the report of the
    // scenarios it finished (JSON and JUnit), marked interrupted.
    let dir = tempfile::tempdir().unwrap();
    let (json, junit) = (dir.path().join("r.json"), dir.path().join("r.xml"));
    let scenarios = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../scenarios");
    let mut child = netmend()
        .args(["run", "--backend", "netns", "--format", "json", "--output"])
        .arg(&json)
        .arg("--junit")
        .arg(&junit)
        .arg(scenarios.join("link-flap.toml"))
        .arg(scenarios.join("silent-path-loss.toml"))
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // They run in id order: link-flap (~8 s), then silent-path-loss
    // (~27 s), interrupted as soon as link-flap's result is out (which is
    // in the report before its line is printed).
    use std::io::BufRead;
    let mut stderr = std::io::BufReader::new(child.stderr.take().unwrap()).lines();
    let mut said = String::new();
    for line in stderr.by_ref() {
        let line = line.unwrap();
        said.push_str(&line);
        said.push('\n');
        if line.starts_with("PASS link-flap") {
            break;
        }
    }
    signal(&child, nix::sys::signal::Signal::SIGINT);
    let status = child.wait().unwrap();
    for line in stderr {
        said.push_str(&line.unwrap());
        said.push('\n');
    }
    assert_eq!(status.code(), Some(130), "{said}");
    assert!(
        said.contains("report of the 1 finished scenario(s) written"),
        "{said}"
    );
    let v: serde_json::Value = serde_json::from_slice(&std::fs::read(&json).unwrap()).unwrap();
    assert_eq!(v["interrupted"], true);
    assert_eq!(v["scenarios"].as_array().unwrap().len(), 1);
    assert_eq!(v["scenarios"][0]["id"], "link-flap");
    assert_eq!(v["summary"]["passed"], 1);
    let xml = std::fs::read_to_string(&junit).unwrap();
    assert!(
        xml.contains("link-flap") && !xml.contains("silent-path-loss"),
        "{xml}"
    );
    assert_eq!(
        leftovers(),
        Vec::<String>::new(),
        "after Ctrl-C with reports"
    );

    // Issue 11: SIGTERM at 20 moments spread over a run's start (lab being
    // built, brokers starting, scenario under way, between variants) —
    // one in five used to leave the namespace being made behind.
    let mut moment: u64 = 0x9e37_79b9;
    for i in 0..20 {
        moment = moment
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1);
        let delay = Duration::from_millis(moment >> 33 & 0x7ff); // 0..2047 ms
        let scenario = if i % 2 == 0 {
            "tcp-reset"
        } else {
            "broker-loss"
        };
        let child = netmend()
            .args(["run", "--backend", "netns"])
            .arg(scenarios.join(format!("{scenario}.toml")))
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        std::thread::sleep(delay);
        signal(&child, nix::sys::signal::Signal::SIGTERM);
        let out = child.wait_with_output().unwrap();
        // Before the handler is installed (no lab exists yet) the signal
        // ends the process; after, the handler cleans up and exits 130.
        use std::os::unix::process::ExitStatusExt;
        assert!(
            out.status.code() == Some(130) || out.status.signal() == Some(15),
            "SIGTERM {i} after {delay:?}: {:?} {}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
        assert_eq!(
            leftovers(),
            Vec::<String>::new(),
            "SIGTERM {i} after {delay:?} ({scenario})"
        );
        assert_eq!(lab_brokers_running(), 0, "SIGTERM {i} after {delay:?}");
    }

    // 21: SIGKILL cannot be caught: the namespaces, and the brokers in
    // them, stay until `netmend clean`.
    let mut child = run_in_background("broker-loss");
    assert_eq!(lab_brokers_running(), 3, "the run's brokers are up");
    // While the run is alive, `clean` leaves its lab alone.
    let live = leftovers();
    let out = netmend().arg("clean").output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("0 namespace(s) removed") && text.contains("is still going"),
        "{text}"
    );
    assert_eq!(leftovers(), live);
    signal(&child, nix::sys::signal::Signal::SIGKILL);
    child.wait().unwrap();
    let left = leftovers();
    assert!(!left.is_empty(), "a killed run leaves its namespaces");
    assert_eq!(lab_brokers_running(), 3, "and its brokers");
    let out = netmend().arg("clean").output().unwrap();
    assert_eq!(out.status.code(), Some(0));
    assert!(
        String::from_utf8_lossy(&out.stdout)
            .contains(&format!("{} namespace(s) removed", left.len())),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    assert_eq!(leftovers(), Vec::<String>::new(), "after netmend clean");
    assert_eq!(lab_brokers_running(), 0, "netmend clean killed the brokers");
}
