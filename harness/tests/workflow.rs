//! The GitHub Actions workflow users copy (`ci/github-workflow.yml`) works
//! as shipped (issue 12): every `run:` step of every job, for every value of
//! its matrix, runs here as root — `sudo` is then a no-op — and must
//! succeed, leaving the reports its upload step collects.

mod common;

use common::{repo, require_netns};
use std::path::Path;
use std::process::Command;
use yaml_rust2::{Yaml, YamlLoader};

/// One step to run: its job, its matrix value, its name and its script.
struct Step {
    job: String,
    shard: Option<i64>,
    name: String,
    script: String,
}

/// Every `run:` step of the workflow, each matrix value substituted.
fn steps(workflow: &Yaml) -> Vec<Step> {
    let mut out = Vec::new();
    let jobs = workflow["jobs"].as_hash().expect("jobs");
    for (job, spec) in jobs {
        let job = job.as_str().expect("job name").to_string();
        let shards: Vec<Option<i64>> = match spec["strategy"]["matrix"]["shard"].as_vec() {
            Some(values) => values.iter().map(Yaml::as_i64).collect(),
            None => vec![None],
        };
        assert!(
            spec["strategy"]["matrix"].is_badvalue()
                || spec["strategy"]["matrix"]
                    .as_hash()
                    .is_some_and(|m| m.len() == 1),
            "{job}: only a `shard` matrix is expanded here"
        );
        for shard in shards {
            for step in spec["steps"].as_vec().expect("steps") {
                let Some(run) = step["run"].as_str() else {
                    continue;
                };
                let fill = |text: &str| match shard {
                    Some(k) => text.replace("${{ matrix.shard }}", &k.to_string()),
                    None => text.to_string(),
                };
                let script = fill(run);
                assert!(
                    !script.contains("${{"),
                    "{job}: an expression this test does not fill: {script}"
                );
                out.push(Step {
                    job: job.clone(),
                    shard,
                    name: fill(step["name"].as_str().unwrap_or("(unnamed)")),
                    script,
                });
            }
        }
    }
    out
}

/// A `sudo` for a root shell: drops sudo's own options, runs the rest.
fn sudo_shim(dir: &Path) {
    let path = dir.join("sudo");
    std::fs::write(
        &path,
        "#!/bin/sh\nwhile [ $# -gt 0 ]; do case \"$1\" in -*) shift;; *) break;; esac; done\nexec \"$@\"\n",
    )
    .unwrap();
    let mut perms = std::fs::metadata(&path).unwrap().permissions();
    std::os::unix::fs::PermissionsExt::set_mode(&mut perms, 0o755);
    std::fs::set_permissions(&path, perms).unwrap();
}

/// What the netns shards run here: a stream scenario and one with real
/// processes and redis-server, one in each shard (the whole suite runs on
/// netns in `ci/run-suite.sh`, mosquitto's scenarios included; two short
/// ones keep this test's share of CI's 25 minutes small).
const NETNS_SAMPLE: &[&str] = &["tcp-reset", "server-failover"];

#[test]
#[ignore = "needs root and network namespaces (nft, iptables, tc): run with --include-ignored"]
fn every_step_of_the_shipped_workflow_runs_here_and_leaves_its_reports() {
    require_netns("workflow");
    let text = std::fs::read_to_string(repo().join("ci/github-workflow.yml")).unwrap();
    let docs = YamlLoader::load_from_str(&text).expect("the workflow is YAML");
    let steps = steps(&docs[0]);
    let jobs: Vec<&str> = steps.iter().map(|s| s.job.as_str()).collect();
    for job in ["sim", "netns", "tests"] {
        assert!(jobs.contains(&job), "job {job}: {jobs:?}");
    }

    let shims = tempfile::tempdir().unwrap();
    sudo_shim(shims.path());
    let path = format!(
        "{}:{}",
        shims.path().display(),
        std::env::var("PATH").unwrap_or_default()
    );
    // Reports go where the upload steps look; start from none.
    let reports = repo().join("target/netmend");
    for step in &steps {
        // This test is part of the test run that step starts: it builds
        // the tests (as the step's first line does) instead of running
        // them again from inside themselves.
        let script: String = step
            .script
            .lines()
            .map(|line| {
                if line.contains("cargo test") && !line.contains("--no-run") {
                    line.replace("cargo test", "cargo test --no-run")
                } else {
                    line.to_string()
                }
            })
            .map(|line| {
                // The netns shards run a few scenarios, not the suite:
                // `ci/run-suite.sh` and the backends-agree test run every
                // shipped scenario on netns in the same CI, and the shards'
                // partition is the sim job's (checked in full below).
                if step.job == "netns" && line.contains("netmend run") {
                    let only: String = NETNS_SAMPLE
                        .iter()
                        .map(|id| format!(" --only {id}"))
                        .collect();
                    format!("{line}{only}")
                } else {
                    line
                }
            })
            .collect::<Vec<_>>()
            .join("\n");
        let out = Command::new("bash")
            .args(["-euo", "pipefail", "-c", &script])
            .current_dir(repo())
            .env("PATH", &path)
            .env_remove("RUST_LOG")
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "job {} (shard {:?}), step `{}` failed ({}):\n{}\n{}",
            step.job,
            step.shard,
            step.name,
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    // Each shard of each suite left its JUnit and JSON report, and the
    // shards together ran every shipped scenario once.
    let mut ran: Vec<String> = Vec::new();
    for (backend, shards) in [("sim", 3), ("netns", 2)] {
        for k in 1..=shards {
            let junit = reports.join(format!("junit-{backend}-{k}.xml"));
            assert!(junit.is_file(), "{} missing", junit.display());
            let json = reports.join(format!("report-{backend}-{k}.json"));
            let v: serde_json::Value =
                serde_json::from_slice(&std::fs::read(&json).unwrap()).unwrap();
            for s in v["scenarios"].as_array().unwrap() {
                ran.push(format!("{backend}:{}", s["id"].as_str().unwrap()));
            }
        }
    }
    let shipped = std::fs::read_dir(repo().join("scenarios"))
        .unwrap()
        .filter(|e| {
            e.as_ref()
                .is_ok_and(|e| e.path().extension().is_some_and(|x| x == "toml"))
        })
        .count();
    for (backend, expected) in [("sim", shipped), ("netns", NETNS_SAMPLE.len())] {
        let mut ids: Vec<&String> = ran
            .iter()
            .filter(|r| r.starts_with(&format!("{backend}:")))
            .collect();
        let all = ids.len();
        ids.sort();
        ids.dedup();
        assert_eq!((all, ids.len()), (expected, expected), "{backend}: {ran:?}");
    }
}
