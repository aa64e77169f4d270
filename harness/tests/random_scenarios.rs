//! `check` and `run` share one validation: any scenario file the loader
//! accepts runs to a verdict on sim without a panic. Random files mix
//! colliding host names, every fault kind sim can make, overlaps and edge
//! values; whatever the loader refuses it refuses with a located error.

use netmend_harness::backend::BackendKind;
use netmend_harness::runner::run_one;
use netmend_harness::scenario::parse;
use proptest::prelude::*;
use std::path::Path;

/// Host names, some colliding with each other or with generated hosts.
fn host() -> impl Strategy<Value = &'static str> {
    prop::sample::select(vec![
        "client",
        "server",
        "middlebox",
        "alpha",
        "broker0",
        "client-flood",
        "9lives",
        "",
    ])
}

/// One `[[faults]]` table of a stream scenario, at `at_ms`.
fn fault(at_ms: u64) -> impl Strategy<Value = String> {
    let d = 1u64..4_000;
    prop_oneof![
        Just(format!("kind = \"reset\"\nat = \"{at_ms}ms\"")),
        d.clone()
            .prop_map(move |d| format!("kind = \"blackhole\"\nat = \"{at_ms}ms\"\nduration = \"{d}ms\"")),
        d.clone().prop_map(move |d| format!(
            "kind = \"partition\"\nat = \"{at_ms}ms\"\nduration = \"{d}ms\"\ndirection = \"client-to-server\""
        )),
        d.clone()
            .prop_map(move |d| format!("kind = \"link-down\"\nat = \"{at_ms}ms\"\nduration = \"{d}ms\"\nhost = \"server\"")),
        (1u32..5, 2u64..500).prop_map(move |(c, p)| format!(
            "kind = \"link-flap\"\nat = \"{at_ms}ms\"\ncount = {c}\nperiod = \"{p}ms\""
        )),
        d.clone().prop_map(move |d| format!("kind = \"nic-swap\"\nat = \"{at_ms}ms\"\nroutable_after = \"{d}ms\"")),
        d.clone().prop_map(move |d| format!("kind = \"gateway-change\"\nat = \"{at_ms}ms\"\ncaptive_for = \"{d}ms\"")),
        (0u32..50, 0u32..20).prop_map(move |(c, t)| format!(
            "kind = \"session-flood\"\nat = \"{at_ms}ms\"\ncount = {c}\ntrickle = {t}"
        )),
    ]
}

fn scenario() -> impl Strategy<Value = String> {
    (
        (host(), host(), host()),
        prop::collection::vec(0u64..6_000, 0..4),
        any::<bool>(),
        1u64..200,
    )
        .prop_flat_map(|((c, s, m), mut ats, monitor, bytes_k)| {
            ats.sort_unstable();
            let faults: Vec<_> = ats.into_iter().map(fault).collect();
            (Just((c, s, m, monitor, bytes_k)), faults)
        })
        .prop_map(|((c, s, m, monitor, bytes_k), faults)| {
            let mut text = format!(
                "id = \"random\"\ncatalog = \"tcp-reset\"\ndescription = \"random\"\n\n[topology]\nclient = \"{c}\"\nserver = \"{s}\"\nmiddlebox = \"{m}\"\nlatency = \"2ms\"\n\n[workload]\nkind = \"stream\"\nbytes = {}\nchunk = 4096\nrate = 262144\n\n",
                bytes_k * 1024
            );
            for f in faults {
                text.push_str(&format!("[[faults]]\n{f}\n\n"));
            }
            text.push_str(&format!(
                "[mitigation]\npolicy = \"resumable-session\"\nmonitor = {monitor}\nkeepalive_interval = \"250ms\"\ndead_after = \"1s\"\ninitial_backoff = \"50ms\"\nmax_backoff = \"500ms\"\n\n[expect]\nbaseline = [\"loss\"]\ndeadline = \"20s\"\n"
            ));
            text
        })
}

static ACCEPTED: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]

    #[test]
    fn any_scenario_the_loader_accepts_runs_to_a_verdict(text in scenario(), seed in 0u64..1000) {
        match parse(Path::new("random.toml"), &text) {
            Ok(s) => {
                ACCEPTED.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                let run = std::panic::catch_unwind(|| run_one(&s, BackendKind::Sim, seed));
                prop_assert!(run.is_ok(), "the run panicked on an accepted file:\n{text}");
            }
            Err(e) => {
                let shown = e.to_string();
                prop_assert!(shown.starts_with("random.toml:"), "located: {shown}");
            }
        }
    }
}

/// The generator is not a wall of refusals: a good share of its files are
/// accepted and run (runs after the property above in this binary's order
/// is not guaranteed, so it generates its own).
#[test]
fn the_generator_produces_files_the_loader_accepts() {
    use proptest::strategy::ValueTree;
    let mut runner = proptest::test_runner::TestRunner::deterministic();
    let accepted = (0..200)
        .filter(|_| {
            let text = scenario().new_tree(&mut runner).unwrap().current();
            parse(Path::new("random.toml"), &text).is_ok()
        })
        .count();
    assert!(accepted >= 40, "only {accepted} of 200 accepted");
}
