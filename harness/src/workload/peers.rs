//! The programs of the peer policies: what a user would pick instead of a
//! netmend session to survive the same failures, run on the scenario's
//! topology, workload and fault schedule and judged by the same checks as
//! its baseline and engine runs (see [`crate::plan::Peer`]).
//!
//! The tuned-TCP peer is the best a careful engineer writes without a
//! session layer: plain TCP whose keepalive and `TCP_USER_TIMEOUT` come from
//! the scenario's timeouts (so a dead path is found by the kernel, not by a
//! write that blocks forever), the name resolved at every attempt, a
//! reconnect loop with full-jitter backoff, and resumption from the
//! server's count: each connection begins with the server saying how many
//! bytes of the stream it holds (8 bytes, big-endian), and the client
//! writes from there. The server keeps each byte once, by its offset, so a
//! connection that is still delivering when the next one starts causes no
//! duplicate.

use super::pattern;
use super::programs::{pace, MitigationSpec, Net, StreamSpec};
use super::Recorder;
use netmend::session::TransportHint;
use rand::{Rng, SeedableRng};
use std::io;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// How the tuned-TCP peer sets up each connection's socket.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TcpTuning {
    /// Idle time before the first keepalive probe, and between probes.
    pub keepalive: Duration,
    /// Unanswered probes before the kernel drops the connection.
    pub keepalive_probes: u32,
    /// `TCP_USER_TIMEOUT`: how long written data may stay unacknowledged
    /// before the kernel drops the connection.
    pub user_timeout: Duration,
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
            user_timeout: dead_after,
        }
    }
}

/// The tuned-TCP peer's reconnect schedule.
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

/// The tuned-TCP peer's settings for a scenario: its socket tuning from
/// the engine's timeouts (keepalive interval, dead-path timeout), and its
/// backoff from the engine's reconnect policy, connect timeout and seed —
/// the same numbers, so the comparison is of policies, not of tuning.
pub fn tuned_tcp_settings(spec: &StreamSpec, m: &MitigationSpec) -> (TcpTuning, Backoff) {
    (
        TcpTuning::from_timeouts(m.config.keepalive_interval, m.config.dead_after),
        Backoff {
            initial: m.policy.initial_delay,
            max: m.policy.max_delay,
            connect_timeout: spec.connect_timeout,
            seed: m.seed,
        },
    )
}

/// The length of the server's count at the start of a connection.
const COUNT_LEN: usize = 8;

/// The tuned-TCP client: writes `spec`'s stream, resuming each new
/// connection where the server's count says, until the server has it all.
pub async fn tuned_tcp_client<N: Net>(
    net: N,
    spec: StreamSpec,
    tuning: TcpTuning,
    backoff: Backoff,
    rec: Recorder,
) {
    let mut rng = rand::rngs::SmallRng::seed_from_u64(backoff.seed);
    let mut failures = 0u32;
    let mut buf = vec![0u8; spec.chunk];
    loop {
        if failures > 0 {
            // Full jitter (AWS Architecture Blog): uniform in
            // [0, min(max, initial * 2^(failures - 1))].
            let ceiling = backoff
                .initial
                .saturating_mul(1u32 << (failures - 1).min(16))
                .min(backoff.max);
            let delay = ceiling.mul_f64(rng.random::<f64>());
            tokio::time::sleep(delay).await;
        }
        rec.attempt(net.now());
        match connection(&net, &spec, tuning, backoff, &rec, &mut buf).await {
            Ok(()) => {
                rec.client_done(net.now());
                return;
            }
            Err(e) => {
                tracing::debug!(error = %e, "tuned-tcp: connection ended, reconnecting");
                failures = failures.saturating_add(1);
            }
        }
    }
}

/// One connection: resolve, connect to the first address that answers,
/// tune, read the server's count, write from it to the end, and wait for
/// the server to close. `Ok` once the server holds the whole stream.
async fn connection<N: Net>(
    net: &N,
    spec: &StreamSpec,
    tuning: TcpTuning,
    backoff: Backoff,
    rec: &Recorder,
    buf: &mut [u8],
) -> io::Result<()> {
    let within = |what: &'static str| {
        move |_| io::Error::new(io::ErrorKind::TimedOut, format!("{what} timed out"))
    };
    let addrs = tokio::time::timeout(backoff.connect_timeout, net.resolve(&spec.host, spec.port))
        .await
        .map_err(within("resolving"))??;
    // Every address in turn, as std's and tokio's `connect` to a name do.
    let mut last = io::Error::new(io::ErrorKind::NotFound, "the name has no address");
    let mut connected = None;
    for addr in addrs {
        let attempt = tokio::time::timeout(
            backoff.connect_timeout,
            net.connect_addr(&spec.host, addr, TransportHint::default()),
        );
        match attempt.await {
            Ok(Ok(s)) => {
                connected = Some(s);
                break;
            }
            Ok(Err(e)) => last = e,
            Err(_) => last = io::Error::new(io::ErrorKind::TimedOut, "connecting timed out"),
        }
    }
    let mut stream = connected.ok_or(last)?;
    N::tune(&stream, &tuning)?;
    let mut count = [0u8; COUNT_LEN];
    tokio::time::timeout(backoff.connect_timeout, stream.read_exact(&mut count))
        .await
        .map_err(within("the server's count"))??;
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

/// The tuned-TCP server: tells each connection how many bytes of the
/// stream it holds, then keeps each byte that continues the stream once,
/// by its offset, and closes a connection once the stream of `total`
/// bytes is whole.
///
/// # Errors
///
/// Binding or accepting failed.
pub async fn tuned_tcp_server<N: Net>(
    net: N,
    port: u16,
    total: u64,
    rec: Recorder,
) -> io::Result<()> {
    let listener = net.bind(port).await?;
    // Bytes of the stream held, in order: shared by every connection.
    let held = Arc::new(Mutex::new(0u64));
    loop {
        let stream = N::accept(&listener).await?;
        let (net, rec, held) = (net.clone(), rec.clone(), held.clone());
        tokio::spawn(async move {
            if let Err(e) = serve(&net, stream, total, &rec, &held).await {
                tracing::debug!(error = %e, "tuned-tcp server: connection ended");
            }
        });
    }
}

async fn serve<N: Net>(
    net: &N,
    mut stream: N::Stream,
    total: u64,
    rec: &Recorder,
    held: &Mutex<u64>,
) -> io::Result<()> {
    let lock = || held.lock().unwrap_or_else(|e| e.into_inner());
    let start = *lock();
    stream.write_all(&start.to_be_bytes()).await?;
    let idx = rec.open_stream();
    // The stream offset of the next byte this connection delivers.
    let mut at = start;
    let mut buf = vec![0u8; 64 << 10];
    loop {
        if *lock() >= total {
            stream.shutdown().await?;
            return Ok(());
        }
        let n = stream.read(&mut buf).await?;
        if n == 0 {
            return Ok(());
        }
        let end = at + n as u64;
        let kept = keep(&mut lock(), at, n)?;
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
    fn the_tuning_follows_the_scenarios_timeouts() {
        let ms = Duration::from_millis;
        assert_eq!(
            TcpTuning::from_timeouts(ms(1000), ms(3000)),
            TcpTuning {
                keepalive: ms(1000),
                keepalive_probes: 3,
                user_timeout: ms(3000)
            }
        );
        // The kernel's keepalive is in whole seconds, at least one; a part
        // of an interval is one more probe; at least one probe.
        assert_eq!(
            TcpTuning::from_timeouts(ms(250), ms(1000)),
            TcpTuning {
                keepalive: ms(1000),
                keepalive_probes: 1,
                user_timeout: ms(1000)
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
}
