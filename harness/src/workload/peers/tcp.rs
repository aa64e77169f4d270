//! The TCP peers: tuned TCP, and Multipath TCP (single-path as most hosts
//! run it, or with the lab's in-kernel path manager adding subflows).
//!
//! Both set their sockets up from the scenario's timeouts so that a dead
//! path is found by the kernel, not by a write that blocks forever:
//! keepalive, and on plain TCP `TCP_USER_TIMEOUT`. Linux refuses
//! `TCP_USER_TIMEOUT` on an MPTCP socket (`ENOPROTOOPT`, seen on 6.18): an
//! MPTCP connection is given up by its subflows' own retransmission
//! timeouts (minutes) or keepalive, which is what users of MPTCP get.

use super::{connect_to_name, resuming_client, serve, Dial, Held, Settings};
use crate::workload::programs::{Net, StreamSpec};
use crate::workload::Recorder;
use netmend::session::TransportHint;
use std::io;
use std::sync::Arc;
use std::time::Duration;

/// The protocol of a TCP peer's sockets.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Protocol {
    /// `IPPROTO_TCP`.
    Tcp,
    /// `IPPROTO_MPTCP`.
    Mptcp,
}

/// How a TCP peer sets up each connection's socket.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TcpTuning {
    /// Idle time before the first keepalive probe, and between probes.
    pub keepalive: Duration,
    /// Unanswered probes before the kernel drops the connection.
    pub keepalive_probes: u32,
    /// `TCP_USER_TIMEOUT`: how long written data may stay unacknowledged
    /// before the kernel drops the connection; `None` leaves the kernel's
    /// retransmission limit (MPTCP sockets refuse the option).
    pub user_timeout: Option<Duration>,
}

impl TcpTuning {
    /// The tuning a careful engineer derives from the scenario's timeouts:
    /// a probe every `keepalive`, as many as fit in `dead_after` (at least
    /// one), and `dead_after` for unacknowledged data. Linux counts the
    /// keepalive's idle time and interval in whole seconds, at least one
    /// (`TCP_KEEPIDLE`, `TCP_KEEPINTVL`; tcp(7)): a shorter keepalive is
    /// rounded up — a limit of the kernel's keepalive that an application's
    /// own does not have. `TCP_USER_TIMEOUT` is in milliseconds.
    pub fn from_timeouts(keepalive: Duration, dead_after: Duration) -> Self {
        let keepalive = Duration::from_secs(keepalive.as_millis().div_ceil(1000).max(1) as u64);
        let probes = dead_after
            .as_millis()
            .div_ceil(keepalive.as_millis())
            .clamp(1, u128::from(u8::MAX));
        TcpTuning {
            keepalive,
            keepalive_probes: u32::try_from(probes).unwrap_or(1),
            user_timeout: Some(dead_after),
        }
    }

    /// The same tuning for a socket of `protocol`: MPTCP's without
    /// `TCP_USER_TIMEOUT`.
    fn for_protocol(self, protocol: Protocol) -> Self {
        match protocol {
            Protocol::Tcp => self,
            Protocol::Mptcp => TcpTuning {
                user_timeout: None,
                ..self
            },
        }
    }
}

/// A TCP peer's connections.
struct TcpDial<N> {
    net: N,
    host: String,
    port: u16,
    protocol: Protocol,
    tuning: TcpTuning,
    connect_timeout: Duration,
}

impl<N: Net> Dial for TcpDial<N> {
    type Stream = N::Stream;

    async fn dial(&mut self) -> io::Result<N::Stream> {
        let (net, host, protocol) = (&self.net, self.host.as_str(), self.protocol);
        let stream = connect_to_name(
            net,
            (host, self.port),
            self.connect_timeout,
            |addr| async move {
                match protocol {
                    Protocol::Tcp => net.connect_addr(host, addr, TransportHint::default()).await,
                    Protocol::Mptcp => net.connect_mptcp(addr).await,
                }
            },
        )
        .await?;
        N::tune(&stream, &self.tuning)?;
        Ok(stream)
    }
}

/// A TCP peer's client over `protocol`.
pub async fn client<N: Net>(
    net: N,
    spec: StreamSpec,
    protocol: Protocol,
    settings: Settings,
    rec: Recorder,
) {
    let mut dial = TcpDial {
        net: net.clone(),
        host: spec.host.clone(),
        port: spec.port,
        protocol,
        tuning: TcpTuning::from_timeouts(settings.keepalive, settings.dead_after)
            .for_protocol(protocol),
        connect_timeout: settings.backoff.connect_timeout,
    };
    resuming_client(&net, &spec, &mut dial, settings.backoff, &rec).await;
}

/// A TCP peer's server over `protocol` on `port`.
///
/// # Errors
///
/// Binding or accepting failed.
pub async fn server<N: Net>(
    net: N,
    port: u16,
    protocol: Protocol,
    total: u64,
    rec: Recorder,
) -> io::Result<()> {
    let listener = match protocol {
        Protocol::Tcp => net.bind(port).await?,
        Protocol::Mptcp => net.bind_mptcp(port).await?,
    };
    let held = Arc::new(Held::default());
    loop {
        let stream = N::accept(&listener).await?;
        let (net, rec, held) = (net.clone(), rec.clone(), held.clone());
        tokio::spawn(async move {
            if let Err(e) = serve(&net, stream, total, &rec, &held).await {
                tracing::debug!(error = %e, "tcp peer server: connection ended");
            }
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_tuning_follows_the_scenarios_timeouts() {
        let ms = Duration::from_millis;
        assert_eq!(
            TcpTuning::from_timeouts(ms(1000), ms(3000)),
            TcpTuning {
                keepalive: ms(1000),
                keepalive_probes: 3,
                user_timeout: Some(ms(3000))
            }
        );
        // The kernel's keepalive is in whole seconds, at least one; a part
        // of an interval is one more probe; at least one probe.
        assert_eq!(
            TcpTuning::from_timeouts(ms(250), ms(1000)),
            TcpTuning {
                keepalive: ms(1000),
                keepalive_probes: 1,
                user_timeout: Some(ms(1000))
            }
        );
        assert_eq!(
            TcpTuning::from_timeouts(ms(1500), ms(3000)).keepalive,
            ms(2000)
        );
        assert_eq!(
            TcpTuning::from_timeouts(ms(1500), ms(3000)).keepalive_probes,
            2
        );
        assert_eq!(
            TcpTuning::from_timeouts(ms(5000), ms(1000)).keepalive_probes,
            1
        );
    }

    #[test]
    fn mptcp_keeps_the_keepalive_without_a_user_timeout() {
        let ms = Duration::from_millis;
        let tcp = TcpTuning::from_timeouts(ms(1000), ms(3000));
        assert_eq!(tcp.for_protocol(Protocol::Tcp), tcp);
        assert_eq!(
            tcp.for_protocol(Protocol::Mptcp),
            TcpTuning {
                user_timeout: None,
                ..tcp
            }
        );
    }
}
