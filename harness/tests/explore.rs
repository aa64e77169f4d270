//! `netmend explore` (issue 11): it finds a planted bug and shrinks it to a
//! schedule that reproduces with `netmend run`; the same seed gives the
//! same schedules and results; the real engine survives what it draws.

use std::path::{Path, PathBuf};
use std::process::Output;

mod common;

use common::{netmend, repo};

fn text(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

/// The tcp-reset scenario with a mitigated client that skips one chunk
/// after every odd-numbered resume.
fn planted(dir: &Path) -> PathBuf {
    let original = std::fs::read_to_string(repo().join("scenarios/tcp-reset.toml")).unwrap();
    let buggy = original.replacen(
        "[mitigation]\n",
        "[mitigation]\nplanted_bug = \"lose-chunk-on-resume\"\n",
        1,
    );
    assert_ne!(buggy, original);
    let path = dir.join("tcp-reset-buggy.toml");
    std::fs::write(&path, buggy).unwrap();
    path
}

#[test]
fn a_planted_bug_is_found_shrunk_to_at_most_two_faults_and_reproduced_by_run() {
    let dir = tempfile::tempdir().unwrap();
    let scenario = planted(dir.path());
    let save = dir.path().join("found");
    let json = dir.path().join("explore.json");
    let out = netmend(&[
        "explore",
        scenario.to_str().unwrap(),
        "--schedules",
        "1000",
        "--seed",
        "5",
        "--first",
        "--save",
        save.to_str().unwrap(),
        "--json",
        json.to_str().unwrap(),
    ]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    let v: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&json).unwrap()).unwrap();
    let violations = v["violations"].as_array().unwrap();
    assert_eq!(violations.len(), 1, "--first stops at the first");
    let first = &violations[0];
    assert!(first["schedule"].as_u64().unwrap() < 1000);
    let shrunk = first["shrunk"].as_array().unwrap();
    assert!(
        (1..=2).contains(&shrunk.len()),
        "shrunk to {} faults: {first}",
        shrunk.len()
    );
    assert!(first["why"].as_str().unwrap().contains("loss"), "{first}");
    assert!(text(&out).contains("VIOLATION tcp-reset schedule"));

    // The saved file reproduces the loss with `netmend run` on sim.
    let saved = first["saved"].as_str().unwrap();
    let seed = first["run_seed"].as_u64().unwrap().to_string();
    let run = netmend(&[
        "run",
        saved,
        "--backend",
        "sim",
        "--seed",
        &seed,
        "--format",
        "json",
    ]);
    assert_eq!(run.status.code(), Some(1), "{}", text(&run));
    let r: serde_json::Value = serde_json::from_slice(&run.stdout).unwrap();
    let m = &r["scenarios"][0]["mitigated"];
    assert!(m["lost"].as_u64().unwrap() > 0, "{m}");
    assert_eq!(
        m["lost"], first["measured"]["lost"],
        "the same loss as explore saw"
    );
    // Byte-identical on a second run with the same seed.
    let again = netmend(&[
        "run",
        saved,
        "--backend",
        "sim",
        "--seed",
        &seed,
        "--format",
        "json",
    ]);
    assert_eq!(run.stdout, again.stdout);
}

#[test]
fn the_same_seed_draws_the_same_schedules_with_the_same_results() {
    let dir = tempfile::tempdir().unwrap();
    let scenario = planted(dir.path());
    let run = |seed: &str, name: &str| {
        let json = dir.path().join(name);
        let out = netmend(&[
            "explore",
            scenario.to_str().unwrap(),
            "--schedules",
            "60",
            "--seed",
            seed,
            "--json",
            json.to_str().unwrap(),
        ]);
        let mut v: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(&json).unwrap()).unwrap();
        v.as_object_mut().unwrap().remove("seconds");
        v.as_object_mut().unwrap().remove("per_second");
        (out.status.code(), v)
    };
    let (a, b) = (run("9", "a.json"), run("9", "b.json"));
    assert_eq!(a, b);
    assert!(
        !a.1["violations"].as_array().unwrap().is_empty(),
        "the planted bug shows in 60 schedules: {}",
        a.1
    );
    let c = run("10", "c.json");
    assert_ne!(
        a.1["violations"], c.1["violations"],
        "another seed draws others"
    );
}

#[test]
fn the_real_engine_survives_random_schedules_of_every_stream_scenario() {
    let out = netmend(&[
        "explore",
        "scenarios/tcp-reset.toml",
        "scenarios/nic-swap.toml",
        "scenarios/silent-path-loss.toml",
        "scenarios/link-flap.toml",
        // A few in this debug build: CI's `ci/run-suite.sh` explores 3,000
        // schedules of every scenario with the release build.
        "--schedules",
        "60",
        "--seed",
        "3",
    ]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    assert!(text(&out).contains("explored 60 schedule(s) over 4 scenario(s)"));
}

#[test]
fn bad_input_exits_2_with_one_message() {
    let out = netmend(&["explore", "no/such/dir", "--schedules", "5"]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    let out = netmend(&["explore", "scenarios/curl-under-reset.toml"]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    assert!(text(&out).contains("no scenario here can be explored on sim"));
    let out = netmend(&["explore", "--max-faults", "0"]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
}
