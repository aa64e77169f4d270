//! The `netmend` binary as users and CI call it: exit codes, reports, errors.

use std::path::{Path, PathBuf};
use std::process::Output;

mod common;

use common::{netmend, repo};

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

#[test]
fn default_run_passes_both_scenarios_with_the_json_contract() {
    let out = netmend(&["run", "--backend", "sim", "--seed", "7", "--format", "json"]);
    assert_eq!(out.status.code(), Some(0), "stderr: {}", stderr(&out));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("valid JSON");
    assert_eq!(v["seed"], 7);
    assert_eq!(v["summary"]["passed"], 25);
    assert_eq!(v["summary"]["failed"], 0);
    assert_eq!(v["summary"]["unsupported"], 8);
    let all = v["scenarios"].as_array().unwrap();
    let ids: Vec<&str> = all.iter().map(|s| s["id"].as_str().unwrap()).collect();
    assert_eq!(
        ids,
        [
            "address-change",
            "all-brokers-down",
            "broker-flap",
            "broker-freeze-restart",
            "broker-loss",
            "broker-partition",
            "captive-portal",
            "clock-skew",
            "curl-under-reset",
            "delayed-routability",
            "dns-failure",
            "firewall-blocks-inbound",
            "firewall-blocks-inbound-iptables",
            "firewall-reload",
            "forged-signal",
            "gateway-change",
            "ipv6-blackhole",
            "latency-spike",
            "link-flap",
            "mtu-blackhole",
            "nat-idle-expiry",
            "nic-swap",
            "one-way-partition",
            "process-restart",
            "route-loss",
            "server-failover",
            "server-moves",
            "server-restart",
            "session-flood",
            "silent-path-loss",
            "tcp-reset",
            "thundering-herd",
            "vpn-up"
        ]
    );
    // A failover kills one of two real processes sharing a real Redis:
    // sim says why it cannot. A restart it models as a host crash.
    let by_id = |id: &str| &all[ids.iter().position(|i| *i == id).unwrap()];
    assert_eq!(by_id("server-failover")["verdict"], "unsupported");
    assert!(by_id("server-failover")["unsupported"]
        .as_str()
        .unwrap()
        .contains("Redis"));
    assert_eq!(by_id("server-restart")["verdict"], "pass");
    // A process restart replaces a real process: sim says so too.
    assert_eq!(by_id("process-restart")["verdict"], "unsupported");
    assert!(by_id("process-restart")["unsupported"]
        .as_str()
        .unwrap()
        .contains("process"));
    // Turmoil hosts have one address, of one family.
    for id in ["address-change", "ipv6-blackhole", "server-moves"] {
        assert_eq!(by_id(id)["verdict"], "unsupported", "{id}");
        assert!(by_id(id)["unsupported"].as_str().unwrap().contains("netns"));
    }
    // The command workload runs real programs: sim says so instead of passing.
    let curl = by_id("curl-under-reset");
    assert_eq!(curl["verdict"], "unsupported");
    assert!(curl["unsupported"].as_str().unwrap().contains("netns"));
    // Signaling counts messages, with their latency.
    let signaling = by_id("broker-loss");
    assert_eq!(signaling["verdict"], "pass");
    for run in [&signaling["baseline"], &signaling["mitigated"]] {
        assert_eq!(run["unit"], "messages");
        assert_eq!(run["expected"], 400);
        assert!(run["latency_p50_us"].is_u64() && run["latency_p99_us"].is_u64());
    }
    assert_eq!(signaling["mitigated"]["delivered"], 400);
    assert_eq!(signaling["mitigated"]["lost"], 0);
    assert_eq!(signaling["mitigated"]["duplicated"], 0);
    assert!(signaling["baseline"]["lost"].as_u64().unwrap() > 0);
    // A flapping broker: the sender's outbox is reported with its bound.
    let queue = &by_id("broker-flap")["mitigated"]["queue"];
    assert_eq!(queue["queue"], "outbox");
    assert!(queue["peak"].as_u64().unwrap() <= queue["bound"].as_u64().unwrap());
    let scenarios: Vec<_> = all
        .iter()
        .filter(|s| ["silent-path-loss", "tcp-reset"].contains(&s["id"].as_str().unwrap()))
        .collect();
    for s in scenarios.iter().copied() {
        assert_eq!(s["catalog"], s["id"]);
        assert_eq!(s["backend"], "sim");
        assert!(s["seed"].is_u64());
        assert_eq!(s["verdict"], "pass");
        let (b, m) = (&s["baseline"], &s["mitigated"]);
        assert_eq!(b["outcome"], "failed");
        assert_eq!(m["outcome"], "passed");
        for run in [b, m] {
            assert_eq!(run["unit"], "bytes");
            for field in ["delivered", "lost", "duplicated", "attempts"] {
                assert!(run[field].is_u64(), "{field} in {run}");
            }
            assert!(run["recovery_ms"].is_u64() || run["recovery_ms"].is_null());
        }
        assert_eq!(m["lost"], 0);
        assert_eq!(m["duplicated"], 0);
        assert_eq!(m["delivered"], 1_048_576);
        assert!(b["lost"].as_u64().unwrap() > 0);
    }
    // The half-open baseline never recovers: recovery_ms is null.
    assert!(scenarios[0]["baseline"]["recovery_ms"].is_null());
}

#[test]
fn same_seed_gives_byte_identical_json_with_any_number_of_jobs() {
    let a = netmend(&[
        "run",
        "--backend",
        "sim",
        "--seed",
        "42",
        "--format",
        "json",
    ]);
    // Two at once: the same results, reported in the same order.
    let b = netmend(&[
        "run",
        "--backend",
        "sim",
        "--seed",
        "42",
        "--jobs",
        "2",
        "--format",
        "json",
    ]);
    assert_eq!(a.status.code(), Some(0));
    assert!(!a.stdout.is_empty());
    assert_eq!(a.stdout, b.stdout);
}

#[test]
fn junit_report_is_valid_xml_with_one_case_per_scenario() {
    let dir = tempfile::tempdir().unwrap();
    // Into directories nobody made yet, as on a fresh checkout.
    let file = dir.path().join("target/netmend/report.xml");
    let json = dir.path().join("elsewhere/report.json");
    let out = netmend(&[
        "run",
        "--backend",
        "sim",
        "--format",
        "junit",
        "--output",
        file.to_str().unwrap(),
        "--json",
        json.to_str().unwrap(),
    ]);
    // The extra report comes from the same run.
    let v: serde_json::Value = serde_json::from_slice(&std::fs::read(&json).unwrap()).unwrap();
    assert_eq!(v["summary"]["passed"], 25);
    assert_eq!(out.status.code(), Some(0), "stderr: {}", stderr(&out));
    let xml = std::fs::read_to_string(&file).unwrap();
    let doc = roxmltree::Document::parse(&xml).expect("well-formed XML");
    let root = doc.root_element();
    assert_eq!(root.tag_name().name(), "testsuites");
    let cases: Vec<_> = root
        .descendants()
        .filter(|n| n.has_tag_name("testcase"))
        .collect();
    let names: Vec<_> = cases.iter().map(|c| c.attribute("name").unwrap()).collect();
    assert_eq!(names.len(), 33);
    let curl = names.iter().position(|n| *n == "curl-under-reset").unwrap();
    assert!(cases
        .iter()
        .all(|c| c.children().all(|k| !k.has_tag_name("failure"))));
    assert!(cases[curl].children().any(|k| k.has_tag_name("skipped")));
    // Human progress went to stderr, not into the report.
    // (`--junit FILE` / `--json FILE` write the same reports next to any format.)
    assert!(stderr(&out).contains("25 passed, 0 failed, 8 unsupported"));
}

fn write_scenario(dir: &Path, name: &str, text: &str) -> PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, text).unwrap();
    p
}

fn tcp_reset_with(from: &str, to: &str) -> String {
    let text = std::fs::read_to_string(repo().join("scenarios/tcp-reset.toml")).unwrap();
    assert!(text.contains(from), "fixture drifted: {from}");
    text.replacen(from, to, 1)
}

#[test]
fn malformed_scenarios_exit_2_naming_file_line_col_and_field() {
    let dir = tempfile::tempdir().unwrap();
    let cases = [
        (
            "bad-toml.toml",
            tcp_reset_with("[workload]", "[workload"),
            ":15:10: (document): ",
        ),
        (
            "unknown.toml",
            tcp_reset_with("chunk = 4096", "chunk = 4096\nburst = 3"),
            ":19:1: workload.burst: unknown field `burst`",
        ),
        (
            "wrong-type.toml",
            tcp_reset_with("bytes = 1048576", "bytes = \"a lot\""),
            ":17:9: workload.bytes: invalid type: string \"a lot\", expected u64",
        ),
        (
            "bad-duration.toml",
            tcp_reset_with("at = \"1s\"", "at = \"soon\""),
            ":23:6: faults[0].at: invalid duration `soon`",
        ),
    ];
    for (name, text, want) in cases {
        let path = write_scenario(dir.path(), name, &text);
        for cmd in ["run", "check"] {
            let out = netmend(&[cmd, path.to_str().unwrap()]);
            assert_eq!(out.status.code(), Some(2), "{name} {cmd}");
            let err = stderr(&out);
            let expected = format!("netmend: {}{want}", path.display());
            assert!(
                err.starts_with(&expected),
                "{name}: got {err:?}, want prefix {expected:?}"
            );
            assert!(
                !err.contains("panicked") && !err.contains("backtrace"),
                "{err}"
            );
            assert_eq!(err.lines().count(), 1, "one clear line: {err}");
        }
    }
}

#[test]
fn a_scenario_whose_baseline_does_not_fail_as_described_fails_the_run() {
    let dir = tempfile::tempdir().unwrap();
    let path = write_scenario(
        dir.path(),
        "wrong-expectation.toml",
        &tcp_reset_with("baseline = [\"loss\"]", "baseline = [\"duplication\"]"),
    );
    let out = netmend(&["run", "--backend", "sim", path.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1), "stdout: {}", stdout(&out));
    let text = stdout(&out);
    assert!(text.contains("FAIL tcp-reset"), "{text}");
    assert!(
        text.contains("baseline did not show the expected failure (duplication)"),
        "{text}"
    );
    assert!(text.contains("0 passed, 1 failed"), "{text}");
}

#[test]
fn usage_errors_exit_2() {
    let out = netmend(&["run", "--backend", "bogus"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr(&out).contains("bogus"), "{}", stderr(&out));
    assert_eq!(netmend(&["run", "--format", "yaml"]).status.code(), Some(2));
    assert_eq!(netmend(&["run", "no/such/dir"]).status.code(), Some(2));
    assert_eq!(netmend(&["frobnicate"]).status.code(), Some(2));
}

#[test]
fn list_check_and_catalog_work_on_the_shipped_files() {
    let out = netmend(&["list"]);
    assert_eq!(out.status.code(), Some(0));
    assert!(stdout(&out).contains("tcp-reset") && stdout(&out).contains("[blackhole]"));
    let out = netmend(&["check"]);
    assert_eq!(stdout(&out), "33 scenario(s) valid\n");
    let out = netmend(&["catalog"]);
    assert_eq!(out.status.code(), Some(0));
    assert!(stdout(&out).starts_with("# netmend failure catalog"));
}

/// The ids `netmend list` prints for `args`.
fn listed(args: &[&str]) -> Vec<String> {
    let mut all = vec!["list"];
    all.extend_from_slice(args);
    let out = netmend(&all);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    stdout(&out)
        .lines()
        .filter_map(|l| l.split_whitespace().next().map(str::to_string))
        .collect()
}

#[test]
fn only_skip_and_tag_select_by_id_glob_and_tag() {
    assert_eq!(listed(&["--only", "tcp-reset"]), ["tcp-reset"]);
    assert_eq!(
        listed(&["--only", "broker-*"]),
        [
            "broker-flap",
            "broker-freeze-restart",
            "broker-loss",
            "broker-partition"
        ]
    );
    assert_eq!(
        listed(&["--only", "broker-*", "--skip", "broker-f*"]),
        ["broker-loss", "broker-partition"]
    );
    assert_eq!(
        listed(&["--tag", "adversary"]),
        ["forged-signal", "session-flood"]
    );
    assert_eq!(
        listed(&["--tag", "path", "--only", "*-reset"]),
        ["curl-under-reset", "tcp-reset"]
    );
    // A selection that names nothing is a typo, not an empty success.
    let out = netmend(&["run", "--backend", "sim", "--only", "no-such-*"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        stderr(&out).contains("no scenario matches"),
        "{}",
        stderr(&out)
    );
    let out = netmend(&["list", "--only", "broker-["]);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        stderr(&out).contains("not a valid id or glob"),
        "{}",
        stderr(&out)
    );
}

#[test]
fn the_partitions_of_the_suite_hold_every_scenario_exactly_once() {
    let all = listed(&[]);
    assert_eq!(all.len(), 33);
    for n in 1..=5 {
        let mut union: Vec<String> = Vec::new();
        for k in 1..=n {
            union.extend(listed(&["--partition", &format!("{k}/{n}")]));
        }
        union.sort();
        let mut expected = all.clone();
        expected.sort();
        assert_eq!(union, expected, "the {n} shards together");
    }
    for bad in ["0/3", "4/3", "x"] {
        let out = netmend(&["run", "--backend", "sim", "--partition", bad]);
        assert_eq!(out.status.code(), Some(2), "{bad}");
    }
}

#[test]
fn repeat_runs_each_scenario_with_its_own_seed_and_fail_fast_stops_at_a_failure() {
    let out = netmend(&[
        "run",
        "--backend",
        "sim",
        "--only",
        "tcp-reset",
        "--repeat",
        "3",
        "--format",
        "json",
    ]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let runs = v["scenarios"].as_array().unwrap();
    let repeats: Vec<u64> = runs.iter().map(|r| r["repeat"].as_u64().unwrap()).collect();
    assert_eq!(repeats, [1, 2, 3]);
    let seeds: std::collections::HashSet<u64> =
        runs.iter().map(|r| r["seed"].as_u64().unwrap()).collect();
    assert_eq!(seeds.len(), 3, "each repeat its own seed");
    assert_eq!(v["summary"]["passed"], 3);
    assert!(v.get("flaky").is_none(), "nothing flaky: {v}");

    // Two scenarios, the first failing: --fail-fast runs no more.
    let dir = tempfile::tempdir().unwrap();
    write_scenario(
        dir.path(),
        "a.toml",
        &tcp_reset_with("baseline = [\"loss\"]", "baseline = [\"duplication\"]").replacen(
            "id = \"tcp-reset\"",
            "id = \"a-fails\"",
            1,
        ),
    );
    write_scenario(
        dir.path(),
        "b.toml",
        &tcp_reset_with("id = \"tcp-reset\"", "id = \"b-passes\""),
    );
    let run = |extra: &[&str]| {
        let mut args = vec!["run", "--backend", "sim", "--format", "json"];
        args.extend_from_slice(extra);
        args.push(dir.path().to_str().unwrap());
        let out = netmend(&args);
        let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        (out.status.code(), v)
    };
    for jobs in ["1", "2"] {
        let (code, v) = run(&["--fail-fast", "--jobs", jobs]);
        assert_eq!(code, Some(1));
        assert_eq!(v["scenarios"].as_array().unwrap().len(), 1, "jobs {jobs}");
        assert_eq!(v["scenarios"][0]["id"], "a-fails");
        assert_eq!(v["summary"]["not_run"], 1);
    }
    let (code, v) = run(&[]);
    assert_eq!(code, Some(1));
    assert_eq!(v["scenarios"].as_array().unwrap().len(), 2);
    assert!(v["summary"].get("not_run").is_none());
}

#[test]
fn fail_on_unsupported_turns_a_skipped_scenario_into_a_failed_run() {
    let args = [
        "run",
        "--backend",
        "sim",
        "--only",
        "curl-under-reset",
        "--format",
        "json",
    ];
    let out = netmend(&args);
    assert_eq!(
        out.status.code(),
        Some(0),
        "unsupported alone is no failure"
    );
    let mut strict = args.to_vec();
    strict.push("--fail-on-unsupported");
    let out = netmend(&strict);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).contains("1 scenario(s) unsupported on this backend"),
        "{}",
        stderr(&out)
    );
}

#[test]
fn faults_lists_every_kind_with_its_fields_and_where_it_runs() {
    let out = netmend(&["faults"]);
    assert_eq!(out.status.code(), Some(0));
    let text = stdout(&out);
    let row = |kind: &str| {
        text.lines()
            .find(|l| l.split_whitespace().next() == Some(kind))
            .unwrap_or_else(|| panic!("no row for {kind}: {text}"))
            .to_string()
    };
    assert!(row("reset").contains(" yes "), "{}", row("reset"));
    assert!(row("partition").contains("duration, direction"));
    assert!(row("loss").contains(" no "), "{}", row("loss"));
    assert!(row("route-loss").contains(" yes "), "{}", row("route-loss"));
    assert!(row("address-change").contains(" no "));
    assert!(row("broker-freeze").contains("broker, duration"));
    assert!(
        text.contains("address-change: turmoil hosts have one fixed address"),
        "{text}"
    );
    // Every kind the loader knows, once.
    let kinds = text.lines().skip(1).take_while(|l| !l.is_empty()).count();
    assert_eq!(kinds, 30, "{text}");
}

#[test]
fn new_writes_a_scenario_and_its_entry_that_check_takes_as_written() {
    let dir = tempfile::tempdir().unwrap();
    let (scenarios, catalog) = (dir.path().join("s"), dir.path().join("c"));
    for (id, from) in [
        ("my-stream", "stream"),
        ("my-signals", "signaling"),
        ("my-program", "command"),
    ] {
        let out = netmend(&[
            "new",
            id,
            "--from",
            from,
            "--scenarios",
            scenarios.to_str().unwrap(),
            "--catalog",
            catalog.to_str().unwrap(),
        ]);
        assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
        assert!(scenarios.join(format!("{id}.toml")).is_file());
    }
    let out = netmend(&["check", scenarios.to_str().unwrap()]);
    assert_eq!(stdout(&out), "3 scenario(s) valid\n", "{}", stderr(&out));
    let entries = netmend_harness::catalog::load(&catalog).unwrap();
    assert_eq!(entries.len(), 3);
    assert!(entries
        .iter()
        .all(|e| e.scenarios == [e.id.clone()] && e.id.starts_with("my-")));
    // The stream and signaling scaffolds are working scenarios as written:
    // their baselines fail as they say and their policies hold.
    let out = netmend(&["run", "--backend", "sim", scenarios.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(0), "{}", stdout(&out));
    assert!(
        stdout(&out).contains("2 passed, 0 failed, 1 unsupported"),
        "{}",
        stdout(&out)
    );
    // Nothing is overwritten; a bad id is refused.
    let again = netmend(&[
        "new",
        "my-stream",
        "--scenarios",
        scenarios.to_str().unwrap(),
        "--catalog",
        catalog.to_str().unwrap(),
    ]);
    assert_eq!(again.status.code(), Some(2));
    assert!(stderr(&again).contains("exists; not overwritten"));
    assert_eq!(netmend(&["new", "no spaces"]).status.code(), Some(2));
}

#[test]
fn progress_is_a_plain_line_per_phase_off_a_terminal_and_quiet_silences_it() {
    let out = netmend(&["run", "--backend", "sim", "--only", "tcp-reset"]);
    assert_eq!(out.status.code(), Some(0));
    let err = stderr(&out);
    assert!(err.contains("tcp-reset: baseline run"), "{err}");
    assert!(err.contains("tcp-reset: mitigated run"), "{err}");
    assert!(stdout(&out).contains("PASS tcp-reset"));

    let out = netmend(&["run", "--backend", "sim", "--only", "tcp-*", "--quiet"]);
    assert_eq!(out.status.code(), Some(0));
    assert!(!stderr(&out).contains(" run"), "{}", stderr(&out));
    let text = stdout(&out);
    assert!(!text.contains("PASS"), "only what did not pass: {text}");
    assert!(text.contains("1 passed, 0 failed"), "{text}");
}

/// Runs `netmend args` under a pseudo-terminal (util-linux `script`), with
/// `env` set; what the terminal showed.
fn on_a_terminal(args: &[&str], env: &[(&str, &str)]) -> String {
    let line = std::iter::once(env!("CARGO_BIN_EXE_netmend").to_string())
        .chain(args.iter().map(|a| a.to_string()))
        .collect::<Vec<_>>()
        .join(" ");
    let mut cmd = std::process::Command::new("script");
    cmd.args(["-qec", &line, "/dev/null"])
        .current_dir(repo())
        .env_remove("RUST_LOG")
        .env_remove("NO_COLOR");
    for (k, v) in env {
        cmd.env(k, v);
    }
    let out = cmd.output().expect("script(1) from util-linux");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn on_a_terminal_a_live_line_shows_the_phase_and_what_arrived_and_no_color_holds() {
    let shown = on_a_terminal(&["run", "--backend", "sim", "--only", "tcp-reset"], &[]);
    assert!(shown.contains("tcp-reset"), "{shown}");
    assert!(shown.contains("mitigated"), "{shown}");
    assert!(shown.contains("of 1048576 B"), "the bytes so far: {shown}");
    assert!(
        shown.contains("\u{1b}[36m"),
        "a coloured spinner: {shown:?}"
    );
    assert!(shown.contains("PASS tcp-reset"), "{shown}");
    let plain = on_a_terminal(
        &["run", "--backend", "sim", "--only", "tcp-reset"],
        &[("NO_COLOR", "1")],
    );
    assert!(plain.contains("of 1048576 B"), "{plain}");
    assert!(!plain.contains("\u{1b}[36m"), "NO_COLOR: {plain:?}");
}

#[test]
fn bench_handover_measures_both_ways_with_a_second_process_and_refuses_zero_rounds() {
    let out = netmend(&["bench", "handover", "--rounds", "20"]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 5, "{text}");
    assert!(
        lines[2].starts_with("handover (send -> first byte)"),
        "{text}"
    );
    assert!(
        lines[3].starts_with("fresh connect (go -> first byte)"),
        "{text}"
    );
    assert!(
        lines[4].starts_with("fresh connect / handover (median): "),
        "{text}"
    );
    let out = netmend(&["bench", "handover", "--rounds", "0"]);
    assert_eq!(out.status.code(), Some(2));
    assert_eq!(
        String::from_utf8_lossy(&out.stderr).trim(),
        "netmend: --rounds must be at least 1"
    );
}

/// Issue 17: `compare` runs the naive client, the engine and each peer on
/// the same scenario; on sim the tuned-TCP peer is unsupported with the
/// reason, and a scenario that carries no stream says so; bad peers exit 2.
#[test]
fn compare_on_sim_runs_naive_and_engine_and_says_why_a_peer_cannot_run() {
    let out = netmend(&[
        "compare",
        "--backend",
        "sim",
        "--format",
        "json",
        "scenarios/tcp-reset.toml",
        "scenarios/broker-loss.toml",
    ]);
    assert_eq!(out.status.code(), Some(0), "stderr: {}", stderr(&out));
    let rows: serde_json::Value = serde_json::from_slice(&out.stdout).expect("valid JSON");
    let rows = rows.as_array().unwrap();
    assert_eq!(rows.len(), 2);
    assert_eq!(rows[0]["id"], "broker-loss");
    assert_eq!(
        rows[0]["unsupported"],
        "the comparison carries byte streams; this scenario's workload is not one"
    );
    let reset = &rows[1];
    assert_eq!(reset["id"], "tcp-reset");
    let runs = reset["runs"].as_array().unwrap();
    let policies: Vec<&str> = runs.iter().map(|r| r["policy"].as_str().unwrap()).collect();
    assert_eq!(
        policies,
        [
            "naive",
            "netmend",
            "tuned-tcp",
            "mptcp",
            "mptcp-multipath",
            "quic",
            "quic-no-rebind"
        ]
    );
    // The engine delivers every byte once; the naive client loses some.
    assert_eq!(runs[1]["verdict"], "exact");
    assert_eq!(runs[1]["measured"]["lost"], 0);
    assert_eq!(runs[0]["verdict"], "damaged");
    // Each peer says why sim cannot run it.
    let reasons: Vec<(&str, &str)> = runs[2..]
        .iter()
        .map(|r| {
            (
                r["verdict"].as_str().unwrap(),
                r["reason"].as_str().unwrap(),
            )
        })
        .collect();
    let tcp = "turmoil's TCP has no keepalive and no TCP_USER_TIMEOUT; the tuned-TCP peer needs the netns backend";
    let mptcp = "turmoil has no Multipath TCP (subflows, path manager); the MPTCP peers need the netns backend";
    let quic = "quinn drives kernel UDP sockets (quinn-udp: GSO, ECN, the source address of each datagram), which turmoil's UDP is not; the QUIC peers need the netns backend";
    assert_eq!(
        reasons,
        [
            ("unsupported", tcp),
            ("unsupported", mptcp),
            ("unsupported", mptcp),
            ("unsupported", quic),
            ("unsupported", quic)
        ]
    );
    // One run each by default, summarized per policy in the same order.
    let summary = reset["summary"].as_array().unwrap();
    assert_eq!(summary.len(), 7);
    assert_eq!(summary[1]["policy"], "netmend");
    assert_eq!(
        (summary[1]["runs"].as_u64(), summary[1]["exact"].as_u64()),
        (Some(1), Some(1))
    );
    assert_eq!(
        summary[1]["recovery_p50_ms"],
        runs[1]["measured"]["recovery_ms"]
    );
    assert_eq!(
        (summary[0]["runs"].as_u64(), summary[0]["exact"].as_u64()),
        (Some(1), Some(0))
    );
    assert_eq!(summary[2]["runs"], 1);
    assert_eq!(summary[2]["exact"], 0);
    assert!(summary[2].get("recovery_p50_ms").is_none());
    // Several runs: seeds in turn, medians in the cells.
    let three = netmend(&[
        "compare",
        "--backend",
        "sim",
        "--runs",
        "3",
        "--peers",
        "tuned-tcp",
        "--format",
        "json",
        "scenarios/tcp-reset.toml",
    ]);
    assert_eq!(three.status.code(), Some(0), "stderr: {}", stderr(&three));
    let rows: serde_json::Value = serde_json::from_slice(&three.stdout).expect("valid JSON");
    let runs = rows[0]["runs"].as_array().unwrap();
    let seeds: Vec<u64> = runs.iter().map(|r| r["seed"].as_u64().unwrap()).collect();
    let first = seeds[0];
    assert_eq!(
        seeds,
        [
            first,
            first + 1,
            first + 2,
            first,
            first + 1,
            first + 2,
            first,
            first + 1,
            first + 2
        ]
    );
    assert_eq!(rows[0]["summary"][1]["runs"], 3);
    assert_eq!(rows[0]["summary"][1]["exact"], 3);
    let zero = netmend(&["compare", "--runs", "0", "scenarios/tcp-reset.toml"]);
    assert_eq!(zero.status.code(), Some(2));
    // The matrix for people: a header and a row per scenario.
    let human = netmend(&["compare", "--backend", "sim", "scenarios/tcp-reset.toml"]);
    assert_eq!(human.status.code(), Some(0));
    let text = stdout(&human);
    let lines: Vec<&str> = text.lines().collect();
    assert!(lines[0].starts_with("scenario "), "{text}");
    assert!(
        lines[0].contains("naive") && lines[0].contains("tuned-tcp"),
        "{text}"
    );
    assert!(
        lines[1].starts_with("tcp-reset ") && lines[1].contains("unsupported"),
        "{text}"
    );
    let bad = netmend(&[
        "compare",
        "--peers",
        "carrier-pigeon",
        "scenarios/tcp-reset.toml",
    ]);
    assert_eq!(bad.status.code(), Some(2));
    assert!(stderr(&bad).contains("carrier-pigeon"), "{}", stderr(&bad));
}
