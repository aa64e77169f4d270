//! Routability gate: after a network change, a path counts as usable only
//! when (a) a source address exists, (b) a default route exists over an
//! interface with carrier, and (c) an active probe to the peer succeeds.
//!
//! Code that runs right after a network change often fails although the
//! addressing looks right: a new Wi-Fi network can take seconds to carry
//! traffic. Instead of hammering the path (or giving up early), callers wait
//! on the gate: no probe while (a) or (b) is missing, then probes spaced by
//! a jittered, growing interval, until one succeeds or the deadline passes.
//!
//! [`Gate`] is the sans-IO state machine; [`GateDriver`] runs it against a
//! [`Monitor`].

use crate::monitor::{Family, Monitor, Snapshot};
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};
use std::time::{Duration, Instant};
use thiserror::Error;

/// Gate tunables.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct GateConfig {
    /// Spacing before the second probe; it doubles up to
    /// `max_probe_interval`. Default 200 ms.
    pub probe_interval: Duration,
    /// Cap on the spacing. Default 2 s.
    pub max_probe_interval: Duration,
    /// How long one probe may take. Default 1 s.
    pub probe_timeout: Duration,
    /// How long to wait in all before giving up. Default 120 s.
    pub deadline: Duration,
}

impl Default for GateConfig {
    fn default() -> Self {
        GateConfig {
            probe_interval: Duration::from_millis(200),
            max_probe_interval: Duration::from_secs(2),
            probe_timeout: Duration::from_secs(1),
            deadline: Duration::from_secs(120),
        }
    }
}

/// What keeps the gate shut before any probe.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Blocked {
    /// No default route over an interface with carrier.
    NoRoute,
    /// A default route, but no address on its interface.
    NoAddress,
}

/// Whether `s` offers a path out: the family of the first default route
/// (IPv4, then IPv6) whose interface has carrier and an address.
pub fn readiness(s: &Snapshot) -> Result<Family, Blocked> {
    let mut blocked = Blocked::NoRoute;
    for family in [Family::V4, Family::V6] {
        if let Some(r) = s.default_route(family) {
            if s.addresses_on(r.interface, family).next().is_some() {
                return Ok(family);
            }
            blocked = Blocked::NoAddress;
        }
    }
    Err(blocked)
}

/// Where the gate stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum GateState {
    /// No probe until the addressing is there.
    Waiting(Blocked),
    /// Probing (one in flight, or the next one scheduled).
    Probing,
    /// A probe succeeded.
    Open,
    /// The deadline passed.
    Expired,
}

/// The gate gave up.
#[derive(Clone, Copy, Debug, Error, PartialEq, Eq)]
#[error("no usable path after {waited:?} ({probes} probes)")]
pub struct GateExpired {
    /// Probes sent.
    pub probes: u32,
    /// Time waited.
    pub waited: Duration,
}

/// The sans-IO gate.
#[derive(Debug)]
pub struct Gate {
    config: GateConfig,
    started: Instant,
    state: GateState,
    probes: u32,
    failures: u32,
    next_probe: Option<Instant>,
    in_flight: bool,
    rng: SmallRng,
}

impl Gate {
    /// A shut gate at `now`; jitter seeded by `seed`.
    pub fn new(config: GateConfig, now: Instant, seed: u64) -> Gate {
        Gate {
            config,
            started: now,
            state: GateState::Waiting(Blocked::NoRoute),
            probes: 0,
            failures: 0,
            next_probe: None,
            in_flight: false,
            rng: SmallRng::seed_from_u64(seed),
        }
    }

    /// Where it stands.
    pub fn state(&self) -> GateState {
        self.state
    }

    /// Probes started so far.
    pub fn probes(&self) -> u32 {
        self.probes
    }

    /// The addressing changed: `ready` says whether (a) and (b) hold.
    pub fn observe(&mut self, ready: Result<(), Blocked>, now: Instant) {
        match (self.state, ready) {
            (GateState::Waiting(_), Ok(())) => {
                // The path just appeared: probe at once.
                self.state = GateState::Probing;
                self.next_probe = Some(now);
            }
            (GateState::Waiting(_) | GateState::Probing, Err(why)) => {
                // A probe in flight may still succeed; nothing new starts.
                self.state = GateState::Waiting(why);
                self.next_probe = None;
            }
            _ => {}
        }
    }

    /// Whether to start a probe now. A `true` must be answered by
    /// [`Gate::probe_done`].
    pub fn poll_probe(&mut self, now: Instant) -> bool {
        self.handle_timeout(now);
        if self.state != GateState::Probing || self.in_flight {
            return false;
        }
        match self.next_probe {
            Some(t) if t <= now => {
                self.next_probe = None;
                self.in_flight = true;
                self.probes += 1;
                true
            }
            _ => false,
        }
    }

    /// A probe ended.
    pub fn probe_done(&mut self, ok: bool, now: Instant) {
        self.in_flight = false;
        if ok {
            if self.state != GateState::Expired {
                self.state = GateState::Open;
            }
            return;
        }
        self.failures += 1;
        if self.state == GateState::Probing {
            // Equal jitter: uniform in [ceiling/2, ceiling]. Full jitter
            // could space probes by nothing at all; a floor bounds the rate.
            let ceiling = self
                .config
                .probe_interval
                .saturating_mul(1u32 << (self.failures - 1).min(16))
                .min(self.config.max_probe_interval);
            let spread = self.rng.random_range(0.5..=1.0);
            self.next_probe = Some(now + ceiling.mul_f64(spread));
        }
    }

    /// When [`Gate::handle_timeout`] (or [`Gate::poll_probe`]) is due.
    pub fn poll_timeout(&self) -> Option<Instant> {
        match self.state {
            GateState::Open | GateState::Expired => None,
            _ => {
                let deadline = self.started + self.config.deadline;
                Some(self.next_probe.map_or(deadline, |t| t.min(deadline)))
            }
        }
    }

    /// Expires the gate once the deadline has passed.
    pub fn handle_timeout(&mut self, now: Instant) {
        let live = matches!(self.state, GateState::Waiting(_) | GateState::Probing);
        if live && now >= self.started + self.config.deadline {
            self.state = GateState::Expired;
            self.next_probe = None;
        }
    }

    /// The error to report once expired.
    pub fn expired(&self, now: Instant) -> GateExpired {
        GateExpired {
            probes: self.probes,
            waited: now.saturating_duration_since(self.started),
        }
    }
}

/// Runs a [`Gate`] against a monitor's snapshots. The caller makes the
/// probes (so that a successful one can be kept, e.g. as the connection):
///
/// ```no_run
/// use netmend::gate::{GateConfig, GateDriver};
/// use netmend::monitor::{Debounce, Monitor};
///
/// # async fn f() -> Result<(), Box<dyn std::error::Error>> {
/// let monitor = Monitor::linux(Debounce::default()).await?;
/// let config = GateConfig::default();
/// let mut gate = GateDriver::new(&monitor, config, 7);
/// let stream = loop {
///     gate.next_probe().await?;
///     let probe = tokio::net::TcpStream::connect("198.18.2.2:7000");
///     match tokio::time::timeout(config.probe_timeout, probe).await {
///         Ok(Ok(stream)) => {
///             gate.probe_done(true);
///             break stream;
///         }
///         _ => gate.probe_done(false),
///     }
/// };
/// # drop(stream); Ok(()) }
/// ```
pub struct GateDriver {
    gate: Gate,
    watch: tokio::sync::watch::Receiver<Snapshot>,
}

fn now() -> Instant {
    // tokio's clock: virtual under turmoil and paused tests.
    tokio::time::Instant::now().into_std()
}

impl GateDriver {
    /// A shut gate that follows `monitor`.
    pub fn new(monitor: &Monitor, config: GateConfig, seed: u64) -> GateDriver {
        let mut watch = monitor.watch();
        let mut gate = Gate::new(config, now(), seed);
        gate.observe(readiness(&watch.borrow_and_update()).map(drop), now());
        GateDriver { gate, watch }
    }

    /// The gate.
    pub fn gate(&self) -> &Gate {
        &self.gate
    }

    /// Waits until a probe is due; fails once the deadline has passed.
    pub async fn next_probe(&mut self) -> Result<(), GateExpired> {
        loop {
            if self.gate.poll_probe(now()) {
                return Ok(());
            }
            if self.gate.state() == GateState::Expired {
                return Err(self.gate.expired(now()));
            }
            let wake = self.gate.poll_timeout().map(tokio::time::Instant::from_std);
            tokio::select! {
                // Fixed order: simulations must replay exactly from their seed.
                biased;
                changed = self.watch.changed() => {
                    if changed.is_err() {
                        // The monitor stopped: keep probing on what we knew.
                        self.gate.observe(Ok(()), now());
                        std::future::pending::<()>().await;
                    }
                    let ready = readiness(&self.watch.borrow_and_update()).map(drop);
                    self.gate.observe(ready, now());
                }
                () = async {
                    match wake {
                        Some(t) => tokio::time::sleep_until(t).await,
                        None => std::future::pending().await,
                    }
                } => self.gate.handle_timeout(now()),
            }
        }
    }

    /// Reports the probe [`GateDriver::next_probe`] allowed.
    pub fn probe_done(&mut self, ok: bool) {
        self.gate.probe_done(ok, now());
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn cfg() -> GateConfig {
        GateConfig {
            probe_interval: Duration::from_millis(100),
            max_probe_interval: Duration::from_millis(800),
            probe_timeout: Duration::from_millis(300),
            deadline: Duration::from_secs(10),
        }
    }

    #[test]
    fn no_probe_until_route_and_address_exist() {
        let t0 = Instant::now();
        let mut g = Gate::new(cfg(), t0, 1);
        assert!(!g.poll_probe(t0));
        g.observe(Err(Blocked::NoAddress), t0);
        assert!(!g.poll_probe(t0 + Duration::from_secs(1)));
        assert_eq!(g.state(), GateState::Waiting(Blocked::NoAddress));
        g.observe(Ok(()), t0 + Duration::from_secs(2));
        assert!(g.poll_probe(t0 + Duration::from_secs(2)), "probes at once");
        g.probe_done(true, t0 + Duration::from_secs(2));
        assert_eq!(g.state(), GateState::Open);
        assert_eq!(g.probes(), 1);
    }

    #[test]
    fn expires_at_the_deadline_with_what_it_tried() {
        let t0 = Instant::now();
        let mut g = Gate::new(cfg(), t0, 1);
        g.observe(Ok(()), t0);
        let mut now = t0;
        while g.state() != GateState::Expired {
            if g.poll_probe(now) {
                g.probe_done(false, now);
            }
            now = g
                .poll_timeout()
                .unwrap_or(now)
                .max(now + Duration::from_millis(1));
            g.handle_timeout(now);
        }
        assert!(now >= t0 + cfg().deadline);
        let e = g.expired(now);
        assert!(e.probes >= 10 && e.probes <= 30, "{e:?}");
    }

    proptest! {
        /// Probe spacing stays within [interval/2 · 2^k, interval · 2^k],
        /// capped: never a storm, never longer than the cap.
        #[test]
        fn probes_back_off_with_bounded_jitter(seed in any::<u64>(), failures in 1usize..12) {
            let c = cfg();
            let t0 = Instant::now();
            let mut g = Gate::new(c, t0, seed);
            g.observe(Ok(()), t0);
            let mut now = t0;
            prop_assert!(g.poll_probe(now));
            for k in 0..failures {
                g.probe_done(false, now);
                let next = g.poll_timeout().unwrap();
                let gap = next - now;
                let ceiling = (c.probe_interval * (1u32 << k.min(16))).min(c.max_probe_interval);
                prop_assert!(gap >= ceiling / 2 && gap <= ceiling, "gap {gap:?}, ceiling {ceiling:?}");
                prop_assert!(!g.poll_probe(next - Duration::from_micros(1)));
                now = next;
                prop_assert!(g.poll_probe(now));
            }
        }
    }
}
