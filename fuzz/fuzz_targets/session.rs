//! Fuzz target `session`: its body is [`netmend_fuzz::session`].
#![cfg_attr(fuzzing, no_main)]

#[cfg(fuzzing)]
libfuzzer_sys::fuzz_target!(|data: &[u8]| netmend_fuzz::session(data));

/// Without libFuzzer (a stable build): runs the files named on the command
/// line through the target, e.g. to debug a crash it found.
#[cfg(not(fuzzing))]
fn main() {
    netmend_fuzz::replay_args(netmend_fuzz::session);
}
