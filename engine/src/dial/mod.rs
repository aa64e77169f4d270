//! Dialing a server that has several addresses: Happy Eyeballs v2
//! (RFC 8305). The addresses are raced — the preferred family first, the
//! next address started beside it after a short delay or as soon as an
//! attempt fails — and the first connection wins; the others are dropped.
//! A broken family (IPv6 configured but blackholed, a dead address among
//! several) then costs the delay, not a connect timeout per attempt.
//!
//! [`race`] takes the addresses and a connect function, so it runs over
//! any transport; [`dial`] resolves a host name first, on every call, so a
//! session's connector built on it follows a server that moved (its name
//! now points elsewhere) at the next reconnect; [`dial_with`] resolves
//! through a [`Resolver`] that serves the last good answer while the
//! resolver is unreachable (RFC 8767). The policies are the sans-IO
//! [`Race`] and [`StaleCache`]; this module only drives them.
//!
//! ```no_run
//! # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
//! use netmend::dial::{self, RaceConfig};
//! use netmend::session::SessionBuilder;
//!
//! // Resolve on every attempt, race what the name has now.
//! let connector = || dial::dial("server.example", 7000, RaceConfig::default(), |addr| async move {
//!     tokio::net::TcpStream::connect(addr).await
//! });
//! let session = SessionBuilder::new().connect(move || {
//!     let attempt = connector();
//!     async move { attempt.await.map_err(std::io::Error::from) }
//! }).await?;
//! # drop(session);
//! # Ok(())
//! # }
//! ```

mod race;
mod stale;

pub use race::{AttemptId, Outcome, Race, RaceConfig};
pub use stale::{Plan, Resolver, StaleCache, StaleConfig};

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::task::Poll;
use thiserror::Error;

/// Why a dial found no connection.
#[derive(Debug, Error)]
#[non_exhaustive]
pub enum DialError {
    /// The name resolved to no address (or none was given).
    #[error("no address to connect to")]
    NoAddress,
    /// The name could not be resolved.
    #[error("resolving the server's name failed: {0}")]
    Resolve(io::Error),
    /// Every address was tried and every attempt failed; each address with
    /// its error, in the order they were tried.
    #[error("every address failed: {}", summary(.0))]
    AllFailed(Vec<(SocketAddr, io::Error)>),
}

fn summary(failures: &[(SocketAddr, io::Error)]) -> String {
    failures
        .iter()
        .map(|(a, e)| format!("{a}: {e}"))
        .collect::<Vec<_>>()
        .join("; ")
}

impl From<DialError> for io::Error {
    /// The kind of the last attempt's error (what a plain `connect` would
    /// have said), `NotFound` without an address; the message names every
    /// address tried.
    fn from(e: DialError) -> io::Error {
        let kind = match &e {
            DialError::NoAddress => io::ErrorKind::NotFound,
            DialError::Resolve(r) => r.kind(),
            DialError::AllFailed(f) => f.last().map_or(io::ErrorKind::Other, |(_, e)| e.kind()),
        };
        io::Error::new(kind, e)
    }
}

type Attempt<'a, S> = (
    AttemptId,
    SocketAddr,
    Pin<Box<dyn Future<Output = io::Result<S>> + Send + 'a>>,
);

/// Races connections to `addrs` (Happy Eyeballs v2, paced by `config`) and
/// returns the first that connects; every other attempt is dropped.
///
/// `connect` opens one connection; it is called once per address tried.
/// A time limit per attempt is `connect`'s own (an attempt that never
/// ends only holds its address; the others go on beside it).
///
/// # Errors
///
/// [`DialError::NoAddress`] for no address, [`DialError::AllFailed`] when
/// every attempt failed.
///
/// # Cancel safety
///
/// Cancel safe: dropping the future drops every attempt in flight (their
/// half-open sockets close); nothing is left running.
pub async fn race<'a, S, F, Fut>(
    addrs: impl IntoIterator<Item = SocketAddr>,
    config: RaceConfig,
    mut connect: F,
) -> Result<S, DialError>
where
    F: FnMut(SocketAddr) -> Fut,
    Fut: Future<Output = io::Result<S>> + Send + 'a,
    S: 'a,
{
    let mut race = Race::new(addrs, config);
    // At most one per address, and Race keeps at most MAX_ADDRESSES.
    let mut flying: Vec<Attempt<'a, S>> = Vec::new();
    let mut failures: Vec<(SocketAddr, io::Error)> = Vec::new();
    loop {
        let now = tokio::time::Instant::now().into_std();
        while let Some((id, addr)) = race.poll_start(now) {
            tracing::debug!(%addr, attempt = id.0, "dial: attempt");
            flying.push((id, addr, Box::pin(connect(addr))));
        }
        if race.outcome() == Some(Outcome::Exhausted) {
            return Err(if failures.is_empty() {
                DialError::NoAddress
            } else {
                DialError::AllFailed(failures)
            });
        }
        let mut timer = race
            .poll_timeout()
            .map(|t| Box::pin(tokio::time::sleep_until(tokio::time::Instant::from_std(t))));
        let ended = std::future::poll_fn(|cx| {
            for (i, (_, _, attempt)) in flying.iter_mut().enumerate() {
                if let Poll::Ready(result) = attempt.as_mut().poll(cx) {
                    return Poll::Ready(Some((i, result)));
                }
            }
            match timer.as_mut().map(|t| t.as_mut().poll(cx)) {
                Some(Poll::Ready(())) => Poll::Ready(None),
                _ => Poll::Pending,
            }
        })
        .await;
        // `None`: the attempt delay passed; the loop starts the next one.
        let Some((i, result)) = ended else { continue };
        let (id, addr, _) = flying.swap_remove(i);
        match result {
            Ok(stream) => {
                if race.handle_connected(id) {
                    tracing::debug!(%addr, attempt = id.0, "dial: connected");
                    return Ok(stream);
                }
            }
            Err(e) => {
                tracing::debug!(%addr, attempt = id.0, error = %e, "dial: attempt failed");
                race.handle_failed(id);
                failures.push((addr, e));
            }
        }
    }
}

/// Resolves `host` (the system resolver: its RFC 6724 order) and races
/// connections to what it has now; see [`race`]. Called once per
/// reconnect attempt, it follows a name that points elsewhere since the
/// last one.
///
/// # Errors
///
/// [`DialError::Resolve`] when the name does not resolve, else as
/// [`race`].
///
/// # Cancel safety
///
/// Cancel safe, as [`race`].
pub async fn dial<'a, S, F, Fut>(
    host: &str,
    port: u16,
    config: RaceConfig,
    connect: F,
) -> Result<S, DialError>
where
    F: FnMut(SocketAddr) -> Fut,
    Fut: Future<Output = io::Result<S>> + Send + 'a,
    S: 'a,
{
    let addrs: Vec<SocketAddr> = tokio::net::lookup_host((host, port))
        .await
        .map_err(DialError::Resolve)?
        .collect();
    race(addrs, config, connect).await
}

/// [`dial`] through `resolver`: when the system resolver fails or is slow,
/// the last good answer for the name (serve-stale, RFC 8767; see
/// [`StaleCache`]) is raced instead.
///
/// # Errors
///
/// [`DialError::Resolve`] when the name does not resolve and nothing
/// stale may be served, else as [`race`].
///
/// # Cancel safety
///
/// Cancel safe, as [`race`] and [`Resolver::resolve`].
pub async fn dial_with<'a, S, F, Fut>(
    resolver: &Resolver,
    host: &str,
    port: u16,
    config: RaceConfig,
    connect: F,
) -> Result<S, DialError>
where
    F: FnMut(SocketAddr) -> Fut,
    Fut: Future<Output = io::Result<S>> + Send + 'a,
    S: 'a,
{
    let addrs = resolver
        .system(host, port)
        .await
        .map_err(DialError::Resolve)?;
    race(addrs, config, connect).await
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
    use std::sync::{Arc, Mutex};
    use std::time::Duration;

    fn v4() -> SocketAddr {
        SocketAddr::new(IpAddr::V4(Ipv4Addr::new(198, 18, 0, 1)), 7)
    }
    fn v6() -> SocketAddr {
        SocketAddr::new(
            IpAddr::V6(Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 1)),
            7,
        )
    }

    /// A blackholed IPv6 address (its attempt never ends) and a working
    /// IPv4 one: connected over IPv4 after the attempt delay, the IPv6
    /// attempt dropped.
    #[tokio::test(start_paused = true)]
    async fn a_blackholed_family_costs_the_attempt_delay() {
        let dropped = Arc::new(Mutex::new(Vec::new()));
        let t0 = tokio::time::Instant::now();
        let d = dropped.clone();
        let got = race([v6(), v4()], RaceConfig::default(), move |addr| {
            let guard = DropMark(addr, d.clone());
            async move {
                let _guard = guard;
                if addr.is_ipv6() {
                    std::future::pending::<()>().await;
                }
                tokio::time::sleep(Duration::from_millis(10)).await;
                Ok(addr)
            }
        })
        .await
        .unwrap();
        assert_eq!(got, v4());
        assert_eq!(t0.elapsed(), Duration::from_millis(260));
        let mut dropped = dropped.lock().unwrap().clone();
        dropped.sort();
        assert_eq!(
            dropped,
            [v4(), v6()],
            "every attempt ended, the hanging one dropped"
        );
    }

    struct DropMark(SocketAddr, Arc<Mutex<Vec<SocketAddr>>>);
    impl Drop for DropMark {
        fn drop(&mut self) {
            self.1
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .push(self.0);
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_refused_address_starts_the_next_at_once_and_all_failures_are_named() {
        let t0 = tokio::time::Instant::now();
        let err = race([v6(), v4()], RaceConfig::default(), |addr| async move {
            tokio::time::sleep(Duration::from_millis(5)).await;
            Err::<(), _>(io::Error::new(
                io::ErrorKind::ConnectionRefused,
                format!("{addr} refused"),
            ))
        })
        .await
        .unwrap_err();
        assert_eq!(
            t0.elapsed(),
            Duration::from_millis(10),
            "no delay after a failure"
        );
        let DialError::AllFailed(f) = &err else {
            panic!("{err:?}")
        };
        assert_eq!(f.iter().map(|(a, _)| *a).collect::<Vec<_>>(), [v6(), v4()]);
        let io: io::Error = err.into();
        assert_eq!(io.kind(), io::ErrorKind::ConnectionRefused);
        assert!(
            io.to_string().contains("[2001:db8::1]:7") && io.to_string().contains("198.18.0.1:7")
        );
        let none = race(Vec::new(), RaceConfig::default(), |_| async { Ok(()) }).await;
        assert!(matches!(none, Err(DialError::NoAddress)));
    }

    /// Dropping the dial mid-race drops every attempt in flight.
    #[tokio::test(start_paused = true)]
    async fn cancelling_a_dial_drops_every_attempt() {
        let dropped = Arc::new(Mutex::new(Vec::new()));
        let d = dropped.clone();
        let dial = race([v6(), v4()], RaceConfig::default(), move |addr| {
            let guard = DropMark(addr, d.clone());
            async move {
                let _guard = guard;
                std::future::pending::<io::Result<()>>().await
            }
        });
        let r = tokio::time::timeout(Duration::from_millis(400), dial).await;
        assert!(r.is_err());
        assert_eq!(dropped.lock().unwrap().len(), 2);
    }

    #[tokio::test]
    async fn a_name_is_resolved_on_every_call() {
        let got = dial("localhost", 9, RaceConfig::default(), |addr| async move {
            Ok(addr)
        })
        .await
        .unwrap();
        assert!(got.ip().is_loopback() && got.port() == 9);
    }
}
