//! The programs of the peer policies: what a user would pick instead of a
//! netmend session to survive the same failures, run on the scenario's
//! topology, workload and fault schedule and judged by the same checks as
//! its baseline and engine runs (see [`crate::plan::Peer`]).
//!
//! Every peer carries the stream the same way above its transport, the
//! best a careful engineer writes without a session layer: a reconnect
//! loop with full-jitter backoff from the engine's own policy numbers, the
//! name resolved at every attempt and every address tried in turn, and
//! resumption from the server's count — each connection begins with the
//! server saying how many bytes of the stream it holds (8 bytes,
//! big-endian), and the client writes from there. The server keeps each
//! byte once, by its offset, so a connection that is still delivering when
//! the next one starts causes no duplicate. What differs between peers is
//! the transport ([`tcp`]: tuned TCP and MPTCP; [`quic`]: quinn) and so how
//! it meets the fault.

pub mod quic;
pub mod tcp;

pub use tcp::TcpTuning;

use super::pattern;
use super::programs::{pace, MitigationSpec, Net, StreamSpec};
use super::Recorder;
use crate::plan::Peer;
use netmend::monitor::Debounce;
use rand::{Rng, SeedableRng};
use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

/// A peer's reconnect schedule.
#[derive(Clone, Copy, Debug)]
pub struct Backoff {
    /// The first ceiling of the jittered delay.
    pub initial: Duration,
    /// The largest ceiling.
    pub max: Duration,
    /// Time allowed for one connect, and for the server's count.
    pub connect_timeout: Duration,
    /// Seeds the jitter.
    pub seed: u64,
}

impl Backoff {
    /// The delay before the attempt that follows `failures` failed ones:
    /// full jitter (AWS Architecture Blog), uniform in
    /// `[0, min(max, initial * 2^(failures - 1))]`; none before the first.
    fn delay(&self, failures: u32, rng: &mut impl Rng) -> Duration {
        if failures == 0 {
            return Duration::ZERO;
        }
        let ceiling = self
            .initial
            .saturating_mul(1u32 << (failures - 1).min(16))
            .min(self.max);
        ceiling.mul_f64(rng.random::<f64>())
    }
}

/// A peer's settings for a scenario, all from the engine's own: its socket
/// tuning from the engine's keepalive interval and dead-path timeout, its
/// backoff from the engine's reconnect policy, connect timeout and seed,
/// and (QUIC with rebind) the monitor's debounce — the same numbers, so the
/// comparison is of policies, not of tuning.
#[derive(Clone, Copy, Debug)]
pub struct Settings {
    /// The engine's keepalive interval.
    pub keepalive: Duration,
    /// The engine's dead-path timeout.
    pub dead_after: Duration,
    /// The reconnect schedule.
    pub backoff: Backoff,
    /// The debounce of the network monitor a rebinding QUIC client
    /// follows (the engine's when it follows one, else the default).
    pub debounce: Debounce,
}

impl Settings {
    /// The settings for `spec`'s stream under the engine policy `m`.
    pub fn of(spec: &StreamSpec, m: &MitigationSpec) -> Settings {
        Settings {
            keepalive: m.config.keepalive_interval,
            dead_after: m.config.dead_after,
            backoff: Backoff {
                initial: m.policy.initial_delay,
                max: m.policy.max_delay,
                connect_timeout: spec.connect_timeout,
                seed: m.seed,
            },
            debounce: m.follow.as_ref().map(|(d, _)| *d).unwrap_or_default(),
        }
    }
}

/// Runs `peer`'s client: writes `spec`'s stream to the server until the
/// server holds all of it (or the run ends).
pub async fn client<N: Net>(
    peer: Peer,
    net: N,
    spec: StreamSpec,
    m: &MitigationSpec,
    rec: Recorder,
) {
    let settings = Settings::of(&spec, m);
    match peer {
        Peer::TunedTcp => tcp::client(net, spec, tcp::Protocol::Tcp, settings, rec).await,
        Peer::Mptcp | Peer::MptcpMultipath => {
            tcp::client(net, spec, tcp::Protocol::Mptcp, settings, rec).await;
        }
        Peer::Quic => quic::client(net, spec, quic::OnPathChange::Rebind, settings, rec).await,
        Peer::QuicNoRebind => {
            quic::client(net, spec, quic::OnPathChange::Nothing, settings, rec).await;
        }
    }
}

/// Runs `peer`'s server on `port` for a stream of `total` bytes; `idle`
/// is the engine's keepalive interval and dead-path timeout (QUIC's).
///
/// # Errors
///
/// Binding or accepting failed.
pub async fn server<N: Net>(
    peer: Peer,
    net: N,
    port: u16,
    total: u64,
    idle: (Duration, Duration),
    rec: Recorder,
) -> io::Result<()> {
    match peer {
        Peer::TunedTcp => tcp::server(net, port, tcp::Protocol::Tcp, total, rec).await,
        Peer::Mptcp | Peer::MptcpMultipath => {
            tcp::server(net, port, tcp::Protocol::Mptcp, total, rec).await
        }
        Peer::Quic | Peer::QuicNoRebind => quic::server(net, port, total, idle, rec).await,
    }
}

/// Opens a peer's connections to the server: a byte stream each, on which
/// the server's count comes first.
pub(crate) trait Dial: Send {
    /// A connection's stream.
    type Stream: AsyncRead + AsyncWrite + Unpin + Send;
    /// Opens one connection: resolves the server's name and tries each of
    /// its addresses in turn, each within the connect timeout.
    fn dial(&mut self) -> impl Future<Output = io::Result<Self::Stream>> + Send;
}

/// Resolves `host` and tries each of its addresses in turn, as std's and
/// tokio's `connect` to a name do: the first that `connect` opens within
/// `within` (the resolving too is given `within`).
///
/// # Errors
///
/// Resolving failed or timed out, or no address connected (the last
/// address's error).
pub(crate) async fn connect_to_name<N, T, F, Fut>(
    net: &N,
    (host, port): (&str, u16),
    within: Duration,
    mut connect: F,
) -> io::Result<T>
where
    N: Net,
    F: FnMut(SocketAddr) -> Fut,
    Fut: Future<Output = io::Result<T>>,
{
    let addrs = tokio::time::timeout(within, net.resolve(host, port))
        .await
        .map_err(|_| io::Error::new(io::ErrorKind::TimedOut, "resolving timed out"))??;
    let mut last = io::Error::new(io::ErrorKind::NotFound, "the name has no address");
    for addr in addrs {
        match tokio::time::timeout(within, connect(addr)).await {
            Ok(Ok(connected)) => return Ok(connected),
            Ok(Err(e)) => last = e,
            Err(_) => {
                last = io::Error::new(
                    io::ErrorKind::TimedOut,
                    format!("connecting to {addr} timed out"),
                )
            }
        }
    }
    Err(last)
}

/// The length of the server's count at the start of a connection.
const COUNT_LEN: usize = 8;

/// The client side of every peer: connections opened by `dial`, each
/// resuming where the server's count says, until the server has the whole
/// stream. Each attempt is recorded; the backoff is full jitter.
pub(crate) async fn resuming_client<N: Net, D: Dial>(
    net: &N,
    spec: &StreamSpec,
    dial: &mut D,
    backoff: Backoff,
    rec: &Recorder,
) {
    let mut rng = rand::rngs::SmallRng::seed_from_u64(backoff.seed);
    let mut failures = 0u32;
    let mut buf = vec![0u8; spec.chunk];
    loop {
        tokio::time::sleep(backoff.delay(failures, &mut rng)).await;
        rec.attempt(net.now());
        let delivered = async {
            let stream = dial.dial().await?;
            deliver(net, spec, stream, backoff.connect_timeout, rec, &mut buf).await
        };
        match delivered.await {
            Ok(()) => {
                rec.client_done(net.now());
                return;
            }
            Err(e) => {
                tracing::debug!(error = %e, "peer: connection ended, reconnecting");
                failures = failures.saturating_add(1);
            }
        }
    }
}

/// One connection: read the server's count, write from it to the end, and
/// wait for the server to close. `Ok` once the server holds the whole
/// stream.
async fn deliver<N: Net, S: AsyncRead + AsyncWrite + Unpin>(
    net: &N,
    spec: &StreamSpec,
    mut stream: S,
    count_within: Duration,
    rec: &Recorder,
    buf: &mut [u8],
) -> io::Result<()> {
    let mut count = [0u8; COUNT_LEN];
    tokio::time::timeout(count_within, stream.read_exact(&mut count))
        .await
        .map_err(|_| io::Error::new(io::ErrorKind::TimedOut, "the server's count timed out"))??;
    // A count past the stream is not our server's (a middlebox answered):
    // this connection is not to be written on.
    let mut offset = u64::from_be_bytes(count);
    if offset > spec.total {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!("the server says it holds {offset} bytes of {}", spec.total),
        ));
    }
    while offset < spec.total {
        let n = usize::try_from((spec.total - offset).min(buf.len() as u64)).unwrap_or(buf.len());
        pattern::fill(offset, &mut buf[..n]);
        pace(net, spec, offset).await;
        stream.write_all(&buf[..n]).await?;
        offset += n as u64;
        rec.wrote(net.now(), offset);
    }
    // The server closes once it holds the whole stream: every byte read.
    stream.shutdown().await?;
    let mut rest = Vec::new();
    stream.read_to_end(&mut rest).await?;
    Ok(())
}

/// The bytes of the stream a peer's server holds, in order: shared by
/// every connection.
#[derive(Debug, Default)]
pub(crate) struct Held(Mutex<u64>);

impl Held {
    fn lock(&self) -> std::sync::MutexGuard<'_, u64> {
        self.0.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// The server side of every peer, on one connection: tells it how many
/// bytes of the stream are held, then keeps each byte that continues the
/// stream once, by its offset, and closes once the stream of `total` bytes
/// is whole.
pub(crate) async fn serve<N: Net, S: AsyncRead + AsyncWrite + Unpin>(
    net: &N,
    mut stream: S,
    total: u64,
    rec: &Recorder,
    held: &Arc<Held>,
) -> io::Result<()> {
    let start = *held.lock();
    stream.write_all(&start.to_be_bytes()).await?;
    let idx = rec.open_stream();
    // The stream offset of the next byte this connection delivers.
    let mut at = start;
    let mut buf = vec![0u8; 64 << 10];
    loop {
        if *held.lock() >= total {
            stream.shutdown().await?;
            return Ok(());
        }
        let n = stream.read(&mut buf).await?;
        if n == 0 {
            return Ok(());
        }
        let end = at + n as u64;
        let kept = keep(&mut held.lock(), at, n)?;
        if !kept.is_empty() {
            rec.received(idx, net.now(), &buf[kept]);
        }
        at = end;
    }
}

/// Of `n` bytes a connection delivered from stream offset `at`, the part
/// that continues the stream of which `held` bytes are held (what another
/// connection already delivered is dropped); `held` moves past it.
///
/// # Errors
///
/// The bytes start past what is held: a connection starts at the count it
/// was told, never past it, so this is a broken protocol, not papered over.
fn keep(held: &mut u64, at: u64, n: usize) -> io::Result<std::ops::Range<usize>> {
    if at > *held {
        return Err(io::Error::other(format!(
            "bytes from {at} arrived with only {held} held"
        )));
    }
    let end = at + n as u64;
    if end <= *held {
        return Ok(n..n);
    }
    let skip = usize::try_from(*held - at).unwrap_or(n);
    *held = end;
    Ok(skip..n)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_byte_is_kept_once_whichever_connection_brings_it() {
        let mut held = 0;
        // The first connection brings 0..100.
        assert_eq!(keep(&mut held, 0, 100).unwrap(), 0..100);
        assert_eq!(held, 100);
        // A second starts at the count (100) and brings 100..150, while the
        // first, not yet dead, still delivers 100..130 and 130..200.
        assert_eq!(keep(&mut held, 100, 50).unwrap(), 0..50);
        assert_eq!(keep(&mut held, 100, 30).unwrap(), 30..30);
        assert_eq!(keep(&mut held, 130, 70).unwrap(), 20..70);
        assert_eq!(held, 200);
        // Bytes past what is held would leave a gap: refused, held kept.
        let e = keep(&mut held, 201, 10).unwrap_err();
        assert_eq!(e.to_string(), "bytes from 201 arrived with only 200 held");
        assert_eq!(held, 200);
    }

    #[test]
    fn the_backoff_is_full_jitter_under_a_doubling_ceiling() {
        let ms = Duration::from_millis;
        let b = Backoff {
            initial: ms(100),
            max: ms(1000),
            connect_timeout: ms(1000),
            seed: 1,
        };
        let mut rng = rand::rngs::SmallRng::seed_from_u64(7);
        assert_eq!(b.delay(0, &mut rng), Duration::ZERO);
        for (failures, ceiling) in [
            (1, 100),
            (2, 200),
            (3, 400),
            (4, 800),
            (5, 1000),
            (40, 1000),
        ] {
            let delays: Vec<Duration> = (0..200).map(|_| b.delay(failures, &mut rng)).collect();
            assert!(
                delays.iter().all(|d| *d <= ms(ceiling)),
                "{failures}: {delays:?}"
            );
            // Spread over the whole range, not bunched at the ceiling.
            assert!(delays.iter().any(|d| *d < ms(ceiling / 4)));
            assert!(delays.iter().any(|d| *d > ms(ceiling * 3 / 4)));
        }
    }
}
