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

use crate::validate::{at_least_1ms, cap_at_least, ConfigError};

/// Gate tunables.
///
/// `#[non_exhaustive]`: start from [`GateConfig::default`] and set fields,
/// so new tunables can be added without breaking callers.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct GateConfig {
    /// Spacing between the starts of the first two probes; it doubles with
    /// every probe up to `max_probe_interval`. Default 200 ms.
    pub probe_interval: Duration,
    /// Cap on the spacing. Default 2 s.
    pub max_probe_interval: Duration,
    /// How long one probe may take. Default 1.5 s: past the kernel's first
    /// SYN retransmission (1 s), so a probe still in flight is sent again
    /// for free — more chances to catch the path as it heals, without one
    /// more attempt.
    pub probe_timeout: Duration,
    /// How long to wait in all before giving up. Default 120 s.
    pub deadline: Duration,
}

impl Default for GateConfig {
    fn default() -> Self {
        GateConfig {
            probe_interval: Duration::from_millis(200),
            max_probe_interval: Duration::from_secs(2),
            probe_timeout: Duration::from_millis(1500),
            deadline: Duration::from_secs(120),
        }
    }
}

impl GateConfig {
    /// Checks every field: all durations at least 1 ms, the cap at least the
    /// first interval. `Duration::MAX` is accepted everywhere and means
    /// "never".
    ///
    /// # Errors
    ///
    /// A [`ConfigError`] naming the first field that is refused.
    pub fn validate(&self) -> Result<(), ConfigError> {
        at_least_1ms("GateConfig::probe_interval", self.probe_interval)?;
        at_least_1ms("GateConfig::probe_timeout", self.probe_timeout)?;
        at_least_1ms("GateConfig::deadline", self.deadline)?;
        cap_at_least(
            "GateConfig::max_probe_interval",
            self.max_probe_interval,
            "probe_interval",
            self.probe_interval,
        )
    }
}

/// What keeps the gate shut before any probe.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Blocked {
    /// No default route over an interface that is up.
    NoRoute,
    /// The kernel's default route leaves by an interface without carrier:
    /// traffic goes nowhere until it comes back.
    NoCarrier,
    /// A default route, but no address on its interface.
    NoAddress,
}

/// Whether `s` offers a path out: the family of the first default route the
/// kernel uses (IPv4, then IPv6) whose interface has carrier and an address.
pub fn readiness(s: &Snapshot) -> Result<Family, Blocked> {
    let mut blocked = Blocked::NoRoute;
    for family in [Family::V4, Family::V6] {
        let Some(r) = s.default_route(family) else {
            continue;
        };
        if !s.interfaces.get(&r.interface).is_some_and(|i| i.carrier) {
            blocked = Blocked::NoCarrier;
        } else if s.addresses_on(r.interface, family).next().is_some() {
            return Ok(family);
        } else if blocked == Blocked::NoRoute {
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
    /// Probing: probes start on a schedule, whether or not earlier ones
    /// are still in flight.
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

/// Upper bound of the spacing after the `k`-th probe (0-based) of a run:
/// `initial · 2^k`, capped at `max`, without overflow.
pub(crate) fn spacing_ceiling(initial: Duration, max: Duration, k: u32) -> Duration {
    initial.saturating_mul(1u32 << k.min(30)).min(max)
}

/// Equal jitter: uniform in `[ceiling/2, ceiling]`. Full jitter could space
/// two probes by nothing at all; the floor bounds the rate.
pub(crate) fn jittered(ceiling: Duration, rng: &mut SmallRng) -> Duration {
    let f: f64 = rng.random_range(0.5..=1.0);
    Duration::try_from_secs_f64(ceiling.as_secs_f64() * f)
        .unwrap_or(ceiling)
        .clamp(ceiling / 2, ceiling)
}

/// The sans-IO gate.
///
/// Probes are *staggered*: once probing, a new probe is due every
/// (growing, jittered) interval counted from the start of the previous
/// one, whether that one has finished or not — as Happy Eyeballs (RFC 8305)
/// staggers connection attempts. A probe whose SYN was dropped just before
/// the path healed therefore never holds the next one back: recovery after
/// the path heals takes at most one interval plus one round trip. The
/// caller bounds how many probes it keeps in flight.
#[derive(Debug)]
pub struct Gate {
    config: GateConfig,
    started: Instant,
    deadline: Option<Instant>,
    state: GateState,
    probes: u32,
    /// Probes started since the path last (re)appeared: the exponent of
    /// the spacing.
    run: u32,
    next_probe: Option<Instant>,
    rng: SmallRng,
}

impl Gate {
    /// A shut gate at `now`; jitter seeded by `seed`. A `deadline` too far
    /// to be represented (e.g. `Duration::MAX`) never passes.
    pub fn new(config: GateConfig, now: Instant, seed: u64) -> Gate {
        Gate::with_deadline(config, now, now.checked_add(config.deadline), seed)
    }

    /// A shut gate that expires at `deadline` (never if `None`), whatever
    /// `config.deadline` says.
    pub(crate) fn with_deadline(
        config: GateConfig,
        now: Instant,
        deadline: Option<Instant>,
        seed: u64,
    ) -> Gate {
        Gate {
            config,
            started: now,
            deadline,
            state: GateState::Waiting(Blocked::NoRoute),
            probes: 0,
            run: 0,
            next_probe: None,
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

    /// When the next probe is due, if one is scheduled.
    pub fn next_probe_at(&self) -> Option<Instant> {
        match self.state {
            GateState::Probing => self.next_probe,
            _ => None,
        }
    }

    /// The addressing changed: `ready` says whether (a) and (b) hold.
    pub fn observe(&mut self, ready: Result<(), Blocked>, now: Instant) {
        match (self.state, ready) {
            (GateState::Waiting(_), Ok(())) => {
                // The path just appeared: probe at once, spacing from the start.
                self.state = GateState::Probing;
                self.restart_run(now);
            }
            (GateState::Waiting(_) | GateState::Probing, Err(why)) => {
                // Probes in flight may still succeed; nothing new starts.
                self.state = GateState::Waiting(why);
                self.next_probe = None;
            }
            _ => {}
        }
    }

    /// The path is new (a change moved it): the next probe is due at once
    /// and the spacing starts over.
    pub(crate) fn restart_run(&mut self, now: Instant) {
        self.run = 0;
        self.next_probe = Some(now);
    }

    /// Continues the spacing of an earlier run that ended in a transport
    /// that did not hold: `run` probes were made, the last at `last_start`.
    pub(crate) fn continue_run(&mut self, run: u32, last_start: Instant, now: Instant) {
        if run == 0 {
            return self.restart_run(now);
        }
        self.run = run;
        let ceiling = spacing_ceiling(
            self.config.probe_interval,
            self.config.max_probe_interval,
            run - 1,
        );
        let gap = jittered(ceiling, &mut self.rng);
        self.next_probe = Some(last_start.checked_add(gap).map_or(now, |t| t.max(now)));
    }

    /// Probes started in the current run (the spacing's exponent).
    pub(crate) fn run(&self) -> u32 {
        self.run
    }

    /// Whether to start a probe now. Each `true` should be answered by
    /// [`Gate::probe_done`]; the next probe is scheduled at once, counted
    /// from this one's start.
    #[must_use]
    pub fn poll_probe(&mut self, now: Instant) -> bool {
        self.handle_timeout(now);
        if self.state != GateState::Probing {
            return false;
        }
        match self.next_probe {
            Some(t) if t <= now => {
                let ceiling = spacing_ceiling(
                    self.config.probe_interval,
                    self.config.max_probe_interval,
                    self.run,
                );
                let gap = jittered(ceiling, &mut self.rng);
                // An interval too long to represent means: no further probe.
                self.next_probe = now.checked_add(gap);
                self.run = self.run.saturating_add(1);
                self.probes = self.probes.saturating_add(1);
                true
            }
            _ => false,
        }
    }

    /// A probe ended. A failure changes nothing: the next probe is already
    /// scheduled.
    pub fn probe_done(&mut self, ok: bool, _now: Instant) {
        if ok && self.state != GateState::Expired {
            self.state = GateState::Open;
        }
    }

    /// When [`Gate::handle_timeout`] (or [`Gate::poll_probe`]) is due.
    #[must_use]
    pub fn poll_timeout(&self) -> Option<Instant> {
        match self.state {
            GateState::Open | GateState::Expired => None,
            GateState::Waiting(_) => self.deadline,
            GateState::Probing => match (self.next_probe, self.deadline) {
                (Some(p), Some(d)) => Some(p.min(d)),
                (p, d) => p.or(d),
            },
        }
    }

    /// Expires the gate once the deadline has passed.
    pub fn handle_timeout(&mut self, now: Instant) {
        let live = matches!(self.state, GateState::Waiting(_) | GateState::Probing);
        if live && self.deadline.is_some_and(|d| now >= d) {
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
    /// `None` once the monitor has stopped.
    watch: Option<tokio::sync::watch::Receiver<Snapshot>>,
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
        GateDriver {
            gate,
            watch: Some(watch),
        }
    }

    /// The gate.
    pub fn gate(&self) -> &Gate {
        &self.gate
    }

    /// Waits until a probe is due; fails once the deadline has passed —
    /// also when the monitor stopped meanwhile (the gate then goes on with
    /// the last state it knew, says so in the log, and expires on time).
    ///
    /// # Errors
    ///
    /// [`GateExpired`] once the deadline has passed.
    ///
    /// # Cancel safety
    ///
    /// Cancel safe: a probe is counted only when this returns `Ok`, so a
    /// dropped call loses nothing and the next call resumes the schedule.
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
                changed = changed_opt(&mut self.watch) => {
                    match changed {
                        Some(ready) => self.gate.observe(ready, now()),
                        None => {
                            tracing::warn!("network monitor stopped; the gate probes on what it knew until its deadline");
                            self.watch = None;
                            self.gate.observe(Ok(()), now());
                        }
                    }
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

/// The readiness after the next snapshot change; `None` once the monitor
/// has stopped; pending forever without a monitor.
pub(crate) async fn changed_opt(
    watch: &mut Option<tokio::sync::watch::Receiver<Snapshot>>,
) -> Option<Result<(), Blocked>> {
    let Some(w) = watch.as_mut() else {
        return std::future::pending().await;
    };
    match w.changed().await {
        Ok(()) => Some(readiness(&w.borrow_and_update()).map(drop)),
        Err(_) => None,
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
    fn probes_are_staggered_not_held_back_by_one_in_flight() {
        let t0 = Instant::now();
        let mut g = Gate::new(cfg(), t0, 3);
        g.observe(Ok(()), t0);
        assert!(g.poll_probe(t0));
        // The first probe never answers; the second is due one interval
        // (jittered in [50, 100] ms) after the first started, not after a timeout.
        let next = g.poll_timeout().unwrap();
        assert!(next - t0 >= Duration::from_millis(50) && next - t0 <= Duration::from_millis(100));
        assert!(g.poll_probe(next));
        assert_eq!(g.probes(), 2);
    }

    #[test]
    fn a_deadline_of_duration_max_never_passes_and_never_panics() {
        let t0 = Instant::now();
        let mut c = cfg();
        c.deadline = Duration::MAX;
        c.max_probe_interval = Duration::MAX;
        let mut g = Gate::new(c, t0, 1);
        g.observe(Ok(()), t0);
        let mut now = t0;
        for _ in 0..64 {
            if g.poll_probe(now) {
                g.probe_done(false, now);
            }
            match g.poll_timeout() {
                Some(t) => now = t,
                None => break,
            }
        }
        assert_eq!(g.state(), GateState::Probing);
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

    #[tokio::test(start_paused = true)]
    async fn a_gate_whose_monitor_stopped_still_expires_at_its_deadline() {
        use crate::monitor::{Debounce, Monitor};
        let (monitor, injector) = Monitor::injected(Snapshot::default(), Debounce::default());
        let mut c = cfg();
        c.deadline = Duration::from_secs(3);
        let mut gate = GateDriver::new(&monitor, c, 1);
        // No route, so no probe; then the monitor's source goes away.
        drop(injector);
        let t0 = tokio::time::Instant::now();
        let mut probes = 0;
        let expired = loop {
            match tokio::time::timeout(Duration::from_secs(60), gate.next_probe()).await {
                Ok(Ok(())) => {
                    probes += 1;
                    gate.probe_done(false);
                }
                Ok(Err(e)) => break e,
                Err(_) => panic!("next_probe hung after its monitor stopped"),
            }
        };
        assert_eq!(t0.elapsed(), Duration::from_secs(3));
        assert_eq!(expired.probes, probes);
        assert!(
            probes > 0,
            "it probed on what it knew once the monitor was gone"
        );
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
