//! The fuzz targets of netmend: one plain function per decoder of untrusted
//! bytes, so that the same body runs under libFuzzer (`cargo +nightly fuzz
//! run <target>`, through the thin binaries in `fuzz_targets/`) and on the
//! stable toolchain, where `tests/corpus.rs` replays every file of the
//! committed corpus (`corpus/<target>/`) through it.
//!
//! Each function must never panic on any input: a panic is a bug, found
//! either by a hostile input or by an invariant the target asserts (the
//! engine's stated bounds, round trips, the stream's integrity).

mod enc;
mod envelope;
mod frames;
mod handover;
mod handshake;
mod netlink;
mod scenario;
pub mod seeds;
mod session;
mod signal;

pub use envelope::envelope;
pub use frames::frames;
pub use handover::handover;
pub use handshake::handshake;
pub use netlink::netlink;
pub use scenario::scenario;
pub use session::session;
pub use signal::signal;

/// The body of a fuzz target: any bytes in, a panic on a bug.
pub type Target = fn(&[u8]);

/// Every target: its name (its binary in `fuzz_targets/` and its corpus
/// directory `corpus/<name>/`) and its body.
pub const TARGETS: &[(&str, Target)] = &[
    ("frames", frames),
    ("handshake", handshake),
    ("session", session),
    ("envelope", envelope),
    ("signal", signal),
    ("netlink", netlink),
    ("handover", handover),
    ("scenario", scenario),
];

/// The `main` of a target binary built without libFuzzer: runs each file
/// named on the command line through `target` (to debug a crash on the
/// stable toolchain: `cargo run -p netmend-fuzz --bin frames -- crash-…`).
pub fn replay_args(target: Target) {
    let mut ran = 0;
    for path in std::env::args_os().skip(1) {
        match std::fs::read(&path) {
            Ok(bytes) => {
                target(&bytes);
                ran += 1;
            }
            Err(e) => {
                eprintln!("{}: {e}", path.to_string_lossy());
                std::process::exit(2);
            }
        }
    }
    eprintln!("{ran} input(s) ran without a crash (build with `cargo +nightly fuzz run` to fuzz)");
}
