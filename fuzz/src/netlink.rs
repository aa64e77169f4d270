//! The kernel's notification datagrams (`engine/src/monitor/linux.rs`):
//! what the Linux source does with each datagram it reads.

use netmend::monitor::linux::{has_netconf, parse_datagram};
use netmend::monitor::{Debounce, MonitorCore, Snapshot};
use std::time::{Duration, Instant};

/// Parses the datagram as the Linux source does (`parse_datagram`, and
/// `has_netconf` for the notifications netlink-packet-route does not
/// decode), then feeds the changes to the monitor's core as its driver
/// does. Every message takes at least a 16-byte header, and yields at most
/// a change per next hop of 8 bytes.
pub fn netlink(data: &[u8]) {
    let _ = has_netconf(data);
    let changes = parse_datagram(data);
    assert!(
        changes.len() <= data.len() / 8,
        "{} changes from {} bytes",
        changes.len(),
        data.len()
    );
    let t0 = Instant::now();
    let mut core = MonitorCore::new(Snapshot::default(), Debounce::default());
    for (i, c) in changes.iter().enumerate() {
        let _ = core.handle_change(c, t0 + Duration::from_millis(i as u64));
    }
    if let Some(t) = core.poll_timeout() {
        core.handle_timeout(t);
    }
    while core.poll_decision().is_some() {}
}
