//! A test that cannot run here is reported as ignored, never as passed
//! (issue 12): every real-kernel test is `#[ignore]`d, so plain
//! `cargo test` lists it as ignored; `--include-ignored` runs it, and then
//! it fails with what is missing instead of returning early.

mod common;

use common::repo;
use std::path::{Path, PathBuf};
use std::process::Command;

/// Test files, and the calls that mark a test as needing the real kernel
/// or a real broker.
const NEEDS: [&str; 2] = ["require_netns(", "require_mosquitto("];

fn test_files() -> Vec<PathBuf> {
    let mut files = Vec::new();
    for dir in ["harness/tests", "engine/tests"] {
        for entry in std::fs::read_dir(repo().join(dir)).unwrap() {
            let path = entry.unwrap().path();
            if path.extension().is_some_and(|e| e == "rs") {
                files.push(path);
            }
        }
    }
    files
}

/// `(test name, its attributes)` of every test function that calls one of
/// [`NEEDS`] in its body.
fn tests_needing_the_kernel(path: &Path) -> Vec<(String, Vec<String>)> {
    let text = std::fs::read_to_string(path).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    let mut found = Vec::new();
    for (i, line) in lines.iter().enumerate() {
        let Some(rest) = line
            .strip_prefix("fn ")
            .or_else(|| line.strip_prefix("async fn "))
        else {
            continue;
        };
        let name = rest.split('(').next().unwrap_or_default().to_string();
        // The body: up to the next top-level closing brace.
        let body = lines[i + 1..]
            .iter()
            .take_while(|l| **l != "}")
            .copied()
            .collect::<Vec<_>>()
            .join("\n");
        if !NEEDS.iter().any(|n| body.contains(n)) {
            continue;
        }
        let attributes = lines[..i]
            .iter()
            .rev()
            .take_while(|l| l.starts_with("#["))
            .map(|l| l.to_string())
            .collect();
        found.push((name, attributes));
    }
    found
}

#[test]
fn every_test_that_needs_the_kernel_or_a_broker_is_ignored_with_a_reason() {
    let mut checked = 0;
    for file in test_files() {
        for (name, attributes) in tests_needing_the_kernel(&file) {
            let is_test = attributes.iter().any(|a| a.contains("test"));
            if !is_test {
                // A helper that calls `require_netns` for its callers.
                continue;
            }
            assert!(
                attributes
                    .iter()
                    .any(|a| a.starts_with("#[ignore = \"needs ")),
                "{}: {name} needs the real kernel or a broker but is not #[ignore = \"needs …\"]",
                file.display()
            );
            checked += 1;
        }
    }
    // The netns suites and the mosquitto tests of the engine.
    assert!(checked >= 30, "only {checked} real-kernel tests found");
}

/// The newest build of the test binary `name` (cargo builds every test
/// binary of the workspace before it runs any: `cargo test --workspace`).
fn test_binary(name: &str) -> PathBuf {
    let deps = std::env::current_exe()
        .unwrap()
        .parent()
        .unwrap()
        .to_path_buf();
    let prefix = format!("{name}-");
    std::fs::read_dir(&deps)
        .unwrap()
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| {
            let file = p.file_name().and_then(|f| f.to_str()).unwrap_or_default();
            file.starts_with(&prefix) && p.extension().is_none()
        })
        .max_by_key(|p| std::fs::metadata(p).and_then(|m| m.modified()).ok())
        .unwrap_or_else(|| {
            panic!(
                "no build of the {name} tests in {}: run `cargo test --workspace`",
                deps.display()
            )
        })
}

#[test]
fn without_the_kernels_tools_the_injector_tests_are_ignored_and_when_asked_for_they_fail() {
    let binary = test_binary("netns_injectors");
    // A PATH with nothing on it: no nft, iptables or tc.
    let empty = tempfile::tempdir().unwrap();
    let run = |extra: &[&str]| {
        Command::new(&binary)
            .args(extra)
            .env("PATH", empty.path())
            .env_remove("NETMEND_REQUIRE_NETNS")
            .output()
            .unwrap()
    };

    let plain = run(&[]);
    let out = String::from_utf8_lossy(&plain.stdout);
    assert_eq!(plain.status.code(), Some(0), "{out}");
    assert!(
        out.contains("test result: ok. 0 passed; 0 failed; 9 ignored"),
        "plain `cargo test` must report the real-kernel tests as ignored: {out}"
    );
    assert!(
        out.contains("needs root and network namespaces"),
        "the reason is shown: {out}"
    );

    let asked = run(&["--include-ignored"]);
    let (out, err) = (
        String::from_utf8_lossy(&asked.stdout),
        String::from_utf8_lossy(&asked.stderr),
    );
    assert_eq!(asked.status.code(), Some(101), "{out}{err}");
    assert!(
        out.contains("test result: FAILED. 0 passed; 9 failed; 0 ignored"),
        "asked for and unable to run, each fails: {out}"
    );
    assert!(
        out.contains("needs the netns backend, which cannot run here"),
        "each says why: {out}"
    );
}
