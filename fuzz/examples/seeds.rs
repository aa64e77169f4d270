//! Writes the seed corpus of every fuzz target (`netmend_fuzz::seeds`) to
//! `fuzz/corpus/<target>/seed-<name>`, replacing older seeds; inputs that
//! fuzzing added (other names) are left alone:
//!
//! ```text
//! cargo run -p netmend-fuzz --example seeds
//! ```

use std::path::Path;

fn main() -> std::io::Result<()> {
    let fuzz = Path::new(env!("CARGO_MANIFEST_DIR"));
    let repo = fuzz.parent().expect("fuzz/ is in the repository");
    let seeds = netmend_fuzz::seeds::all(repo);
    for (target, _) in netmend_fuzz::TARGETS {
        let dir = fuzz.join("corpus").join(target);
        std::fs::create_dir_all(&dir)?;
        for entry in std::fs::read_dir(&dir)? {
            let path = entry?.path();
            if path
                .file_name()
                .is_some_and(|n| n.to_string_lossy().starts_with("seed-"))
            {
                std::fs::remove_file(path)?;
            }
        }
    }
    for (target, name, bytes) in &seeds {
        let path = fuzz
            .join("corpus")
            .join(target)
            .join(format!("seed-{name}"));
        std::fs::write(&path, bytes)?;
    }
    eprintln!("{} seeds written", seeds.len());
    Ok(())
}
