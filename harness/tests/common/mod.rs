//! Shared by the integration tests: the repository, the `netmend` binary
//! as users call it, and what the tests that need the real kernel share.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// The repository's root.
pub fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// Runs the `netmend` binary in the repository's root, without the
/// caller's `RUST_LOG`.
pub fn netmend(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_netmend"))
        .args(args)
        .current_dir(repo())
        .env_remove("RUST_LOG")
        .output()
        .expect("binary runs")
}

use netmend_harness::backend::netns;

/// Fails the test when the netns backend cannot run here (not root, no
/// namespaces, `nft`/`iptables`/`tc` missing). Every test that calls it is
/// `#[ignore]`d: plain `cargo test` reports it ignored, `--include-ignored`
/// (the README's test command, `.ci/run`) runs it — and a test that was
/// asked for and could not run must fail, never pass.
pub fn require_netns(test: &str) {
    if let Err(why) = netns::probe() {
        panic!("{test}: needs the netns backend, which cannot run here: {why}");
    }
}

/// A current-thread runtime for driving a lab's netlink sockets.
pub fn control_runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("tokio runtime")
}

/// A small stream scenario with the given fault tables and expected
/// baseline symptoms (TOML array text).
pub fn stream_scenario(
    id: &str,
    extra_topology: &str,
    faults: &str,
    baseline: &str,
    bytes: u64,
) -> String {
    format!(
        r#"
id = "{id}"
catalog = "{id}"
description = "test"
[topology]
latency = "2ms"
{extra_topology}
[workload]
kind = "stream"
bytes = {bytes}
chunk = 4096
rate = 262144
{faults}
[mitigation]
policy = "resumable-session"
keepalive_interval = "250ms"
dead_after = "1s"
handshake_timeout = "500ms"
connect_timeout = "1s"
initial_backoff = "50ms"
max_backoff = "500ms"
max_attempts = 30
[expect]
baseline = {baseline}
recovery_within = "3s"
max_attempts = 20
deadline = "15s"
"#
    )
}

/// Parses scenario text (panics on error: test fixtures are trusted).
pub fn parse(text: &str) -> netmend_harness::scenario::Scenario {
    netmend_harness::scenario::parse(std::path::Path::new("test.toml"), text)
        .expect("fixture parses")
}

/// mosquitto processes started by a lab (their config is `broker<N>.conf`).
pub fn lab_brokers_running() -> usize {
    std::fs::read_dir("/proc")
        .unwrap()
        .filter_map(|e| std::fs::read(e.ok()?.path().join("cmdline")).ok())
        .filter(|cmd| {
            let args: Vec<&[u8]> = cmd.split(|b| *b == 0).collect();
            args.first().is_some_and(|a| a.ends_with(b"mosquitto"))
                && args.iter().any(|a| {
                    let a = String::from_utf8_lossy(a);
                    a.contains("/broker") && a.ends_with(".conf")
                })
        })
        .count()
}
