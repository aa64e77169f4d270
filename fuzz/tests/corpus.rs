//! Replays the committed corpus of every fuzz target through the same
//! function libFuzzer runs (`netmend_fuzz::<target>`), on the stable
//! toolchain, as part of `cargo test --workspace`: every seed and every
//! input a long run kept (crashes fixed included) stays a regression test.
//!
//! Fails when a target has no corpus directory or an empty one, and when
//! the targets listed in the library, the binaries in `fuzz_targets/` and
//! the directories in `corpus/` disagree, so it cannot silently test nothing.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

fn fuzz_dir() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

fn names_in(dir: &str, ext: Option<&str>) -> BTreeSet<String> {
    let dir = fuzz_dir().join(dir);
    std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| e.unwrap().path())
        .filter(|p| ext.is_none_or(|x| p.extension().is_some_and(|e| e == x)))
        .map(|p| p.file_stem().unwrap().to_string_lossy().into_owned())
        .collect()
}

#[test]
fn every_target_has_a_binary_and_a_corpus() {
    let listed: BTreeSet<String> = netmend_fuzz::TARGETS
        .iter()
        .map(|(n, _)| n.to_string())
        .collect();
    assert_eq!(
        names_in("fuzz_targets", Some("rs")),
        listed,
        "fuzz_targets/*.rs"
    );
    assert_eq!(names_in("corpus", None), listed, "corpus/*/");
}

#[test]
fn the_corpus_of_every_target_replays_without_a_crash() {
    for (name, target) in netmend_fuzz::TARGETS {
        let dir = fuzz_dir().join("corpus").join(name);
        let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
            .unwrap_or_else(|e| panic!("corpus of `{name}` ({}): {e}", dir.display()))
            .map(|e| e.unwrap().path())
            .filter(|p| p.is_file())
            .collect();
        files.sort();
        assert!(!files.is_empty(), "the corpus of `{name}` is empty");
        for file in &files {
            let bytes = std::fs::read(file).unwrap();
            let run = std::panic::catch_unwind(|| target(&bytes));
            assert!(run.is_ok(), "`{name}` crashed on {}", file.display());
        }
        eprintln!("{name}: {} inputs", files.len());
    }
}

/// The seeds in the corpus are what the generator writes now (run `cargo
/// run -p netmend-fuzz --example seeds` after changing a target's input
/// format), and the generator's scripts read back as written (it checks).
/// The scenario seeds are copies of the shipped files: those are replayed
/// as they are now instead, so editing a scenario needs no new seed.
#[test]
fn the_seeds_are_the_generators_and_every_shipped_scenario_replays() {
    let repo = fuzz_dir().parent().expect("fuzz/ is in the repository");
    for (target, name, bytes) in netmend_fuzz::seeds::all(repo) {
        let path = fuzz_dir()
            .join("corpus")
            .join(target)
            .join(format!("seed-{name}"));
        if target == "scenario" {
            netmend_fuzz::scenario(&bytes);
            continue;
        }
        assert!(
            std::fs::read(&path).ok() == Some(bytes),
            "{} is not what the generator writes: run `cargo run -p netmend-fuzz --example seeds`",
            path.display()
        );
    }
}
