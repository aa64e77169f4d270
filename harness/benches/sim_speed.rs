//! Simulated backend speed: virtual seconds simulated per wall second over
//! the whole shipped suite (baseline and mitigated runs of every scenario).
//!
//! `cargo bench -p netmend-harness --bench sim_speed`

use netmend_harness::backend::BackendKind;
use netmend_harness::{runner, scenario};
use std::path::Path;
use std::time::Instant;

const ROUNDS: u64 = 9;

fn main() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../scenarios");
    let loaded = match scenario::load_all(&[dir]) {
        Ok(l) => l,
        Err(e) => {
            eprintln!("sim_speed: {e}");
            std::process::exit(2);
        }
    };
    let mut ratios = Vec::new();
    let mut walls = Vec::new();
    let mut virtual_s = 0.0;
    for seed in 0..ROUNDS {
        let start = Instant::now();
        let summary = runner::run(
            &loaded,
            BackendKind::Sim,
            "bench".into(),
            runner::Options::once(seed),
            &mut |_| {},
        );
        let wall = start.elapsed().as_secs_f64();
        assert_eq!(summary.failed, 0, "suite must pass while benchmarked");
        virtual_s = summary.virtual_ms as f64 / 1000.0;
        walls.push(wall);
        ratios.push(virtual_s / wall);
    }
    walls.sort_by(f64::total_cmp);
    ratios.sort_by(f64::total_cmp);
    let mid = ratios.len() / 2;
    println!(
        "sim_speed: {} scenarios, {virtual_s:.1} virtual s per round, {ROUNDS} rounds: \
         median wall {:.3} s, median speed {:.0}x (min {:.0}x, max {:.0}x) virtual/wall",
        loaded.len(),
        walls[mid],
        ratios[mid],
        ratios[0],
        ratios[ratios.len() - 1]
    );
}
