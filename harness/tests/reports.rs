//! Reporters on a real simulated run (snapshots reviewed by hand), and the
//! suite's verdicts across many seeds.

use netmend_harness::backend::BackendKind;
use netmend_harness::report::{render_json, Collector, Human};
use netmend_harness::runner::{self, Verdict};
use netmend_harness::scenario::{self, WorkloadKind};
use std::path::Path;

fn shipped() -> Vec<scenario::Loaded> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../scenarios");
    scenario::load_all(&[dir]).unwrap()
}

#[test]
fn human_and_json_reports_snapshot() {
    let loaded = shipped();
    let mut human_out = Vec::new();
    let mut collector = Collector::default();
    {
        let mut human = Human::new(&mut human_out);
        human.show_wall = false;
        runner::run(
            &loaded,
            BackendKind::Sim,
            "requested".into(),
            runner::Options::once(1),
            &mut |ev| {
                human.event(ev);
                collector.event(ev);
            },
        );
    }
    insta::assert_snapshot!("human", String::from_utf8(human_out).unwrap());
    insta::assert_snapshot!("json", render_json(&collector));
}

#[test]
fn every_scenario_passes_under_many_seeds() {
    let runnable: Vec<_> = shipped()
        .into_iter()
        .filter(|l| {
            // What sim cannot run (a command, a process restart, a
            // renumbering) it reports unsupported; the report snapshot
            // holds that.
            let plan = netmend_harness::plan::Plan::of(&l.scenario, 0);
            netmend_harness::backend::unsupported(BackendKind::Sim, &l.scenario, &plan).is_none()
        })
        .collect();
    let runs: Vec<(usize, u64)> = (0..runnable.len())
        // Four seeds each (in CI's debug build about a second per run on
        // 2 cores): `netmend explore` draws thousands more schedules in
        // the same CI run.
        .flat_map(|i| (0..4u64).map(move |seed| (i, seed)))
        .collect();
    // Every simulation is its own deterministic world: they run side by
    // side on every core.
    let threads = std::thread::available_parallelism().map_or(1, usize::from);
    std::thread::scope(|scope| {
        for k in 0..threads {
            let (runs, runnable) = (&runs, &runnable);
            scope.spawn(move || {
                for &(i, seed) in runs.iter().skip(k).step_by(threads) {
                    check_one_seed(&runnable[i].scenario, seed);
                }
            });
        }
    });
}

fn check_one_seed(s: &netmend_harness::scenario::Scenario, seed: u64) {
    let r = runner::run_one(s, BackendKind::Sim, seed);
    assert_eq!(
        r.verdict,
        Verdict::Pass,
        "{} seed {seed}: {:?}",
        s.id,
        r.reasons
    );
    let m = r.mitigated.unwrap();
    // Signaling hands messages over in arrival order: a resent one may come
    // after later ones (each carries its sequence number).
    let reordered = if s.workload.kind == WorkloadKind::Signaling {
        0
    } else {
        m.reordered
    };
    assert_eq!(
        (m.lost, m.duplicated, reordered, m.corrupted),
        (0, 0, 0, 0),
        "{} seed {seed}",
        s.id
    );
}
