//! Shared by the tests that need the real kernel.
#![allow(dead_code)]

use netmend_harness::backend::netns;

/// True when the netns backend can run here. Otherwise prints a visible
/// skip notice and returns false, unless `NETMEND_REQUIRE_NETNS=1` (as in
/// CI), where a skip is a failure.
pub fn netns_or_skip(test: &str) -> bool {
    match netns::probe() {
        Ok(()) => true,
        Err(why) => {
            if std::env::var("NETMEND_REQUIRE_NETNS").as_deref() == Ok("1") {
                panic!("{test}: NETMEND_REQUIRE_NETNS=1 but the netns backend cannot run: {why}");
            }
            eprintln!("SKIPPED {test}: needs the netns backend ({why})");
            false
        }
    }
}

/// A current-thread runtime for driving a lab's netlink sockets.
pub fn control_runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("tokio runtime")
}
