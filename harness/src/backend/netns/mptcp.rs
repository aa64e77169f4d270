//! The lab's in-kernel Multipath TCP path manager, set up for the
//! multipath MPTCP peer as NetworkManager sets it up on a desktop (its
//! `connection.mptcp-flags`): limits of two subflows on both ends, and a
//! `subflow` endpoint for each address the client gains, added as the
//! address is configured, so the kernel opens a subflow from it on every
//! open connection. The single-path peer gets none of this: the kernel's
//! defaults (no endpoints) are what most hosts run.

use super::lab::Lab;
use super::LabError;
use std::net::IpAddr;

/// Subflows per connection on each end, and addresses a client accepts
/// from the server's announcements: two paths.
const SUBFLOWS: &str = "2";

/// Allows two subflows per connection on `hosts` (limits; no endpoints).
///
/// # Errors
///
/// `ip mptcp` failed (no MPTCP in this kernel, or disabled).
pub fn allow_subflows(lab: &Lab, hosts: &[&str]) -> Result<(), LabError> {
    for host in hosts {
        lab.exec(
            host,
            &[
                "ip",
                "mptcp",
                "limits",
                "set",
                "subflows",
                SUBFLOWS,
                "add_addr_accepted",
                SUBFLOWS,
            ],
            None,
        )?;
    }
    Ok(())
}

/// Makes `addr` on `ifname` of `host` a `subflow` endpoint: the kernel
/// opens a subflow from it, through that interface, on each open
/// connection.
///
/// # Errors
///
/// `ip mptcp` failed.
pub fn add_endpoint(lab: &Lab, host: &str, ifname: &str, addr: IpAddr) -> Result<(), LabError> {
    let addr = addr.to_string();
    lab.exec(
        host,
        &[
            "ip", "mptcp", "endpoint", "add", &addr, "dev", ifname, "subflow",
        ],
        None,
    )
    .map(drop)
}
