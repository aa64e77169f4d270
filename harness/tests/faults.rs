//! Every simulated fault kind has a real effect, and the engine survives it.

use netmend_harness::backend::{self, BackendKind, Variant};
use netmend_harness::check;
use netmend_harness::runner::{run_one, Verdict};
use netmend_harness::scenario::{parse, Symptom};
use std::path::Path;

fn scenario(faults: &str, baseline: &str) -> netmend_harness::scenario::Scenario {
    let text = format!(
        r#"
id = "t"
catalog = "t"
description = "test"
[topology]
latency = "5ms"
[workload]
kind = "stream"
bytes = 524288
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
max_backoff = "1s"
[expect]
baseline = {baseline}
recovery_within = "2s"
max_attempts = 12
deadline = "30s"
"#
    );
    parse(Path::new("t.toml"), &text).unwrap()
}

#[test]
fn partition_breaks_plain_tcp_and_the_session_resumes_after_repair() {
    let s = scenario(
        "[[faults]]\nkind = \"partition\"\nat = \"500ms\"\nduration = \"3s\"\n",
        r#"["loss", "stall"]"#,
    );
    let r = run_one(&s, BackendKind::Sim, 3);
    assert_eq!(r.verdict, Verdict::Pass, "{:?}", r.reasons);
    let m = r.mitigated.unwrap();
    assert_eq!((m.lost, m.duplicated), (0, 0));
    assert!(m.attempts >= 2, "the dead transport was replaced: {m:?}");
}

#[test]
fn one_way_partition_is_detected_by_keepalive_silence() {
    let s = scenario(
        "[[faults]]\nkind = \"partition\"\nat = \"500ms\"\nduration = \"3s\"\ndirection = \"server-to-client\"\n",
        r#"["stall"]"#,
    );
    let r = run_one(&s, BackendKind::Sim, 4);
    let m = r.mitigated.as_ref().unwrap();
    assert_eq!((m.lost, m.duplicated), (0, 0), "{:?}", r.reasons);
    assert!(m.attempts >= 2);
}

#[test]
fn latency_fault_delays_delivery_without_loss() {
    let s = scenario(
        "[[faults]]\nkind = \"latency\"\nat = \"500ms\"\nlatency = \"400ms\"\nduration = \"2s\"\n",
        r#"["loss"]"#,
    );
    // Nothing breaks: the baseline delivers everything too (so this scenario
    // would rightly fail its "loss" expectation)…
    let r = run_one(&s, BackendKind::Sim, 5);
    assert_eq!(r.verdict, Verdict::Fail);
    let b = r.baseline.unwrap();
    assert_eq!(b.lost, 0);
    assert!(!b.symptoms.contains(&Symptom::Loss));
    // …but the path really got slower: the stream takes longer than unpaced
    // delivery at the base latency would.
    let rec = backend::run(BackendKind::Sim, &s, Variant::Mitigated, 5).unwrap();
    let m = check::judge(&s, &rec, Some(12));
    assert_eq!((m.lost, m.duplicated), (0, 0));
    let first_after = rec.streams[0]
        .reads
        .iter()
        .find(|(t, _)| t.as_millis() >= 500)
        .map(|(t, _)| t.as_millis())
        .unwrap();
    assert!(
        first_after >= 850,
        "a 400 ms hop delays the next read: {first_after} ms"
    );
}
