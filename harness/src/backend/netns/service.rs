//! What the lab's service programs (the MQTT brokers, the name server)
//! share: whether the program is installed, and whether a started one
//! listens yet, read from its own namespace's view of /proc/net.

use super::LabError;
use std::process::Stdio;

/// A transport a service listens on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Transport {
    /// A listening TCP socket.
    Tcp,
    /// A bound UDP socket.
    Udp,
}

/// Whether `program` can be run here: it is run with `arg`, and any exit
/// status will do (some print their usage and exit non-zero); only a
/// missing program is an error, `Unavailable` with `missing` as its text.
///
/// # Errors
///
/// `Unavailable(missing)`.
pub fn installed(program: &str, arg: &str, missing: &str) -> Result<(), LabError> {
    std::process::Command::new(program)
        .arg(arg)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .map(drop)
        .map_err(|_| LabError::Unavailable(missing.to_string()))
}

/// Whether the network namespace of process `pid` has a socket on `port`
/// over `transport`: listening, for TCP; bound, for UDP.
pub fn listening(pid: u32, port: u16, transport: Transport) -> bool {
    let (tables, state) = match transport {
        Transport::Tcp => (["tcp", "tcp6"], Some("0A")),
        Transport::Udp => (["udp", "udp6"], None),
    };
    tables.iter().any(|table| {
        let Ok(text) = std::fs::read_to_string(format!("/proc/{pid}/net/{table}")) else {
            return false;
        };
        text.lines().skip(1).any(|line| {
            let mut fields = line.split_whitespace();
            let local = fields.nth(1);
            let st = fields.nth(1);
            let local_port = local
                .and_then(|l| l.rsplit(':').next())
                .and_then(|p| u16::from_str_radix(p, 16).ok());
            local_port == Some(port) && state.is_none_or(|want| st == Some(want))
        })
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_missing_program_is_unavailable_with_its_hint_and_any_exit_is_installed() {
        let e = installed("nm-no-such-program", "--version", "install it").unwrap_err();
        assert_eq!(e.to_string(), "install it");
        // `false` exits 1: installed all the same.
        assert!(installed("false", "x", "install it").is_ok());
    }

    #[test]
    fn this_process_is_seen_listening_on_tcp_and_bound_on_udp() {
        let tcp = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let udp = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        let (t, u) = (
            tcp.local_addr().unwrap().port(),
            udp.local_addr().unwrap().port(),
        );
        let me = std::process::id();
        assert!(listening(me, t, Transport::Tcp));
        assert!(listening(me, u, Transport::Udp));
    }
}
