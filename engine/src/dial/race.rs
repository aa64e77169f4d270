//! The connection race of Happy Eyeballs v2 (RFC 8305), sans-IO: which
//! address to try next and when, which attempt won. Addresses, attempt
//! results and `Instant`s in; attempts to start and one deadline out.
//!
//! Written here rather than taken from a crate: the crates that race
//! connections own their sockets (tokio or socket2 ones), so they can run
//! neither over the engine's connector (any stream: tokio, turmoil, TLS)
//! nor on a virtual clock, and the sans-IO one (Happy Eyeballs v3) also
//! drives DNS and QUIC and is still a draft implementation.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use crate::validate::ConfigError;

/// How a race paces its attempts.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RaceConfig {
    /// How long an attempt runs alone before the next address is tried
    /// beside it (RFC 8305 §5 "Connection Attempt Delay": 250 ms
    /// recommended, at least 100 ms, at most 2 s). An attempt that fails
    /// starts the next one at once.
    pub attempt_delay: Duration,
    /// How many addresses of the first family lead before the families
    /// alternate (RFC 8305 §4 "First Address Family Count": 1 by default).
    pub first_family_count: usize,
}

impl Default for RaceConfig {
    fn default() -> Self {
        RaceConfig {
            attempt_delay: Duration::from_millis(250),
            first_family_count: 1,
        }
    }
}

impl RaceConfig {
    /// Checks the values against RFC 8305's limits.
    ///
    /// # Errors
    ///
    /// [`ConfigError`] naming the field: an attempt delay outside
    /// 100 ms ..= 2 s, or a first family count of 0.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let range = Duration::from_millis(100)..=Duration::from_secs(2);
        if !range.contains(&self.attempt_delay) {
            return Err(ConfigError::new(
                "RaceConfig::attempt_delay",
                format!(
                    "({:?}) must be within RFC 8305's 100 ms ..= 2 s",
                    self.attempt_delay
                ),
            ));
        }
        if self.first_family_count == 0 {
            return Err(ConfigError::new(
                "RaceConfig::first_family_count",
                "must be at least 1",
            ));
        }
        Ok(())
    }
}

/// One connection attempt of a race: its index in [`Race::order`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct AttemptId(pub usize);

/// How a race ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// This attempt connected first; every other one is to be dropped.
    Won(AttemptId),
    /// Every address was tried and every attempt failed.
    Exhausted,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum State {
    Waiting,
    InFlight,
    Failed,
}

/// One race over a name's addresses.
///
/// Bounded by construction: it holds one entry per address it was given
/// (the caller bounds those; [`Race::new`] keeps at most
/// [`Race::MAX_ADDRESSES`]).
#[derive(Debug)]
pub struct Race {
    order: Vec<SocketAddr>,
    state: Vec<State>,
    next: usize,
    last_start: Option<Instant>,
    delay: Duration,
    outcome: Option<Outcome>,
}

impl Race {
    /// The most addresses one race tries; more are left out (a name with
    /// hundreds of addresses would otherwise hold as many sockets).
    pub const MAX_ADDRESSES: usize = 64;

    /// A race over `addrs`, ordered as RFC 8305 §4 says: the first
    /// address's family leads with `first_family_count` addresses, then
    /// the families alternate; within a family the given order (the
    /// resolver's RFC 6724 preference) stays. Duplicates are dropped.
    pub fn new(addrs: impl IntoIterator<Item = SocketAddr>, config: RaceConfig) -> Race {
        let mut unique: Vec<SocketAddr> = Vec::new();
        for a in addrs {
            if !unique.contains(&a) && unique.len() < Self::MAX_ADDRESSES {
                unique.push(a);
            }
        }
        let order = interleave(&unique, config.first_family_count.max(1));
        let n = order.len();
        Race {
            order,
            state: vec![State::Waiting; n],
            next: 0,
            last_start: None,
            delay: config.attempt_delay,
            outcome: (n == 0).then_some(Outcome::Exhausted),
        }
    }

    /// The addresses in the order they are tried.
    pub fn order(&self) -> &[SocketAddr] {
        &self.order
    }

    /// The attempt to start now, if one is due: the first at once; the next
    /// when the last one has run alone for the attempt delay, or at once
    /// when no attempt is in flight any more. Call until `None`.
    pub fn poll_start(&mut self, now: Instant) -> Option<(AttemptId, SocketAddr)> {
        if self.outcome.is_some() || self.next >= self.order.len() {
            return None;
        }
        let due = match self.last_start {
            None => true,
            Some(last) => !self.any_in_flight() || now >= last + self.delay,
        };
        if !due {
            return None;
        }
        let id = AttemptId(self.next);
        self.state[self.next] = State::InFlight;
        self.next += 1;
        self.last_start = Some(now);
        Some((id, self.order[id.0]))
    }

    /// When [`Race::poll_start`] next has something to start (`None`: not
    /// before an attempt ends).
    pub fn poll_timeout(&self) -> Option<Instant> {
        if self.outcome.is_some() || self.next >= self.order.len() {
            return None;
        }
        self.last_start.map(|last| last + self.delay)
    }

    /// Attempt `id` connected. The first to do so wins the race; returns
    /// whether it did (a later one is to be dropped).
    pub fn handle_connected(&mut self, id: AttemptId) -> bool {
        if self.outcome.is_some() || self.state.get(id.0) != Some(&State::InFlight) {
            return false;
        }
        self.outcome = Some(Outcome::Won(id));
        true
    }

    /// Attempt `id` failed. The next address is due at once (see
    /// [`Race::poll_start`]); when none is left and nothing is in flight,
    /// the race is exhausted.
    pub fn handle_failed(&mut self, id: AttemptId) {
        if let Some(s @ State::InFlight) = self.state.get_mut(id.0) {
            *s = State::Failed;
        }
        if self.outcome.is_none() && self.next >= self.order.len() && !self.any_in_flight() {
            self.outcome = Some(Outcome::Exhausted);
        }
    }

    /// How the race ended, once it has.
    pub fn outcome(&self) -> Option<Outcome> {
        self.outcome
    }

    /// Attempts started and not ended.
    pub fn in_flight(&self) -> impl Iterator<Item = AttemptId> + '_ {
        self.state
            .iter()
            .enumerate()
            .filter(|(_, s)| **s == State::InFlight)
            .map(|(i, _)| AttemptId(i))
    }

    fn any_in_flight(&self) -> bool {
        self.state.contains(&State::InFlight)
    }
}

/// RFC 8305 §4: `first_count` addresses of the first address's family,
/// then one of the other family and one of the first, alternating; what
/// one family has left over goes last, in order.
fn interleave(addrs: &[SocketAddr], first_count: usize) -> Vec<SocketAddr> {
    let Some(first) = addrs.first() else {
        return Vec::new();
    };
    let lead_v6 = first.is_ipv6();
    let (mut lead, mut other): (Vec<SocketAddr>, Vec<SocketAddr>) =
        addrs.iter().partition(|a| a.is_ipv6() == lead_v6);
    lead.reverse();
    other.reverse();
    let mut out = Vec::with_capacity(addrs.len());
    for _ in 0..first_count {
        match lead.pop() {
            Some(a) => out.push(a),
            None => break,
        }
    }
    while !(lead.is_empty() && other.is_empty()) {
        out.extend(other.pop());
        out.extend(lead.pop());
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

    fn v4(n: u8) -> SocketAddr {
        SocketAddr::new(IpAddr::V4(Ipv4Addr::new(198, 18, 0, n)), 443)
    }

    fn v6(n: u16) -> SocketAddr {
        SocketAddr::new(
            IpAddr::V6(Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, n)),
            443,
        )
    }

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    #[test]
    fn families_alternate_after_the_first_family_leads() {
        let addrs = [v6(1), v6(2), v6(3), v4(1), v4(2)];
        let race = Race::new(addrs, RaceConfig::default());
        assert_eq!(race.order(), [v6(1), v4(1), v6(2), v4(2), v6(3)]);
        let two = RaceConfig {
            first_family_count: 2,
            ..RaceConfig::default()
        };
        assert_eq!(
            Race::new(addrs, two).order(),
            [v6(1), v6(2), v4(1), v6(3), v4(2)]
        );
        // IPv4 first when the resolver put it first; duplicates once.
        assert_eq!(
            Race::new([v4(1), v4(1), v6(1)], RaceConfig::default()).order(),
            [v4(1), v6(1)]
        );
    }

    #[test]
    fn the_next_address_starts_after_the_delay_or_at_once_after_a_failure() {
        let t0 = Instant::now();
        let mut race = Race::new([v6(1), v4(1), v6(2)], RaceConfig::default());
        assert_eq!(race.poll_start(t0), Some((AttemptId(0), v6(1))));
        assert_eq!(race.poll_start(t0), None);
        assert_eq!(race.poll_timeout(), Some(t0 + ms(250)));
        assert_eq!(race.poll_start(t0 + ms(249)), None);
        assert_eq!(race.poll_start(t0 + ms(250)), Some((AttemptId(1), v4(1))));
        // Attempt 1 fails at 300 ms; attempt 0 is still in flight, so the
        // third waits for its delay from the last start.
        race.handle_failed(AttemptId(1));
        assert_eq!(race.poll_start(t0 + ms(300)), None);
        // Attempt 0 fails too: nothing in flight, the third starts at once.
        race.handle_failed(AttemptId(0));
        assert_eq!(race.poll_start(t0 + ms(310)), Some((AttemptId(2), v6(2))));
        assert_eq!(race.outcome(), None);
        race.handle_failed(AttemptId(2));
        assert_eq!(race.outcome(), Some(Outcome::Exhausted));
        assert_eq!(race.poll_start(t0 + ms(999)), None);
    }

    #[test]
    fn the_first_to_connect_wins_and_later_ones_lose() {
        let t0 = Instant::now();
        let mut race = Race::new([v6(1), v4(1)], RaceConfig::default());
        race.poll_start(t0);
        race.poll_start(t0 + ms(250));
        assert!(race.handle_connected(AttemptId(1)));
        assert!(!race.handle_connected(AttemptId(0)));
        assert_eq!(race.outcome(), Some(Outcome::Won(AttemptId(1))));
        assert_eq!(race.poll_start(t0 + ms(999)), None);
        // An attempt that never started cannot win.
        let mut race = Race::new([v6(1), v4(1)], RaceConfig::default());
        race.poll_start(t0);
        assert!(!race.handle_connected(AttemptId(1)));
    }

    #[test]
    fn no_address_is_exhausted_at_once_and_bad_configs_are_refused() {
        let race = Race::new([], RaceConfig::default());
        assert_eq!(race.outcome(), Some(Outcome::Exhausted));
        for (delay, count, field) in [
            (ms(99), 1, "RaceConfig::attempt_delay"),
            (ms(2_001), 1, "RaceConfig::attempt_delay"),
            (ms(250), 0, "RaceConfig::first_family_count"),
        ] {
            let c = RaceConfig {
                attempt_delay: delay,
                first_family_count: count,
            };
            assert_eq!(c.validate().unwrap_err().field, field);
        }
        assert!(RaceConfig::default().validate().is_ok());
    }

    /// What happens to an attempt to one address: it connects or fails
    /// after so many milliseconds, or hangs (a blackholed family).
    #[derive(Clone, Copy, Debug)]
    enum Fate {
        Connects(u64),
        Fails(u64),
        Hangs,
    }

    fn fate() -> impl Strategy<Value = Fate> {
        prop_oneof![
            (1u64..3_000).prop_map(Fate::Connects),
            (1u64..3_000).prop_map(Fate::Fails),
            Just(Fate::Hangs),
        ]
    }

    /// Runs a race on a virtual clock (1 ms steps) to its end or to 60 s;
    /// returns the outcome, when it ended and each attempt's start.
    fn simulate(
        addrs: &[SocketAddr],
        fates: &[Fate],
        config: RaceConfig,
    ) -> (Option<Outcome>, u64, Vec<(usize, u64)>) {
        let t0 = Instant::now();
        let mut race = Race::new(addrs.iter().copied(), config);
        let index_of = |a: SocketAddr| addrs.iter().position(|x| *x == a).unwrap_or(0);
        let mut started: Vec<(usize, u64)> = Vec::new();
        // (attempt, address index, start)
        let mut flying: Vec<(AttemptId, usize, u64)> = Vec::new();
        for t in 0..60_000u64 {
            let now = t0 + ms(t);
            // Results due now, in attempt order.
            flying.sort_by_key(|f| f.0);
            let mut still = Vec::new();
            for (id, a, at) in flying.drain(..) {
                match fates[a] {
                    Fate::Connects(d) if at + d == t => {
                        race.handle_connected(id);
                    }
                    Fate::Fails(d) if at + d == t => race.handle_failed(id),
                    _ => still.push((id, a, at)),
                }
            }
            flying = still;
            while let Some((id, addr)) = race.poll_start(now) {
                started.push((id.0, t));
                flying.push((id, index_of(addr), t));
            }
            if race.outcome().is_some() {
                return (race.outcome(), t, started);
            }
        }
        (race.outcome(), 60_000, started)
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(512))]

        /// Whatever each address does: the race ends with the attempt that
        /// connected first among those it started; it is exhausted only if
        /// every address was tried and failed; it starts attempts in its
        /// order, one at a time, each no sooner than the delay after the
        /// last unless nothing was in flight; and an address that connects
        /// is never left untried while the race waits on hanging ones.
        #[test]
        fn the_race_is_won_by_the_first_connection_and_paces_its_attempts(
            v6s in 0usize..4,
            v4s in 0usize..4,
            v6_first in any::<bool>(),
            fates in proptest::collection::vec(fate(), 8),
            delay_ms in 100u64..600,
        ) {
            let mut addrs: Vec<SocketAddr> = Vec::new();
            let (a, b): (Vec<SocketAddr>, Vec<SocketAddr>) = (
                (1..=v6s as u16).map(v6).collect(),
                (1..=v4s as u8).map(v4).collect(),
            );
            if v6_first { addrs.extend(&a); addrs.extend(&b); } else { addrs.extend(&b); addrs.extend(&a); }
            let config = RaceConfig { attempt_delay: ms(delay_ms), first_family_count: 1 };
            let (outcome, ended, started) = simulate(&addrs, &fates, config);
            let order = Race::new(addrs.iter().copied(), config).order().to_vec();
            // Attempts start in order, ids in sequence.
            for (k, (id, _)) in started.iter().enumerate() {
                prop_assert_eq!(*id, k);
            }
            // Pacing: no two starts closer than the delay unless every
            // earlier attempt had ended by then.
            for w in started.windows(2) {
                let (_, t1) = w[1];
                let gap = t1 - w[0].1;
                if gap < delay_ms {
                    for (id, t) in &started[..started.len().min(w[1].0)] {
                        let addr = order[*id];
                        let i = addrs.iter().position(|x| *x == addr).unwrap();
                        let ended_by = match fates[i] {
                            Fate::Fails(d) => t + d,
                            _ => u64::MAX,
                        };
                        prop_assert!(ended_by <= t1, "attempt {id} still in flight at {t1}");
                    }
                }
            }
            let fate_of = |id: usize| fates[addrs.iter().position(|x| *x == order[id]).unwrap()];
            match outcome {
                Some(Outcome::Won(AttemptId(w))) => {
                    let Fate::Connects(d) = fate_of(w) else {
                        return Err(TestCaseError::fail("a winner that did not connect"));
                    };
                    let start = started[w].1;
                    prop_assert_eq!(ended, start + d);
                    // No started attempt connected earlier.
                    for (id, t) in &started {
                        if let Fate::Connects(e) = fate_of(*id) {
                            prop_assert!(t + e >= ended, "attempt {} connected at {} before the winner", id, t + e);
                        }
                    }
                }
                Some(Outcome::Exhausted) => {
                    prop_assert_eq!(started.len(), order.len());
                    for id in 0..order.len() {
                        prop_assert!(matches!(fate_of(id), Fate::Fails(_)));
                    }
                }
                None => {
                    // Undecided after 60 s: only hanging attempts are left,
                    // every address was tried, and none connects.
                    prop_assert_eq!(started.len(), order.len());
                    for id in 0..order.len() {
                        prop_assert!(!matches!(fate_of(id), Fate::Connects(_)));
                    }
                }
            }
            // An address that connects is reached: some attempt wins.
            if (0..order.len()).any(|id| matches!(fate_of(id), Fate::Connects(_))) {
                prop_assert!(matches!(outcome, Some(Outcome::Won(_))));
            }
        }
    }
}
