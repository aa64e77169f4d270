//! The plain backoff schedule of one reconnect loop, for callers that
//! retry one thing in sequence (the signaling broker links). Sessions use
//! the [`ReconnectCore`](super::ReconnectCore), which adds staggered
//! attempts, a routability gate and give-up causes.

use super::policy::Policy;
use super::GiveUpReason;
use rand::Rng;
use std::time::{Duration, Instant};

/// The running state of a [`Policy`]: call [`Backoff::next_delay`] after each
/// failure and [`Backoff::succeeded`] once a connection works again.
#[derive(Debug)]
pub(crate) struct Backoff {
    policy: Policy,
    attempt: u32,
    outage_start: Option<Instant>,
    tokens: u32,
    refilled_at: Instant,
}

impl Backoff {
    /// Fresh state at `now`, with a full budget.
    pub fn new(policy: Policy, now: Instant) -> Self {
        Self {
            tokens: policy.budget.capacity,
            policy,
            attempt: 0,
            outage_start: None,
            refilled_at: now,
        }
    }

    /// A connection failed at `now`: returns how long to wait before the next
    /// attempt, or why to stop.
    pub fn next_delay<R: Rng + ?Sized>(
        &mut self,
        now: Instant,
        rng: &mut R,
    ) -> Result<Duration, GiveUpReason> {
        let start = *self.outage_start.get_or_insert(now);
        let elapsed = now.saturating_duration_since(start);
        self.attempt += 1;
        if let Some(max) = self.policy.max_attempts {
            if self.attempt > max {
                return Err(GiveUpReason::Attempts);
            }
        }
        if let Some(max) = self.policy.max_outage {
            if elapsed >= max {
                return Err(GiveUpReason::Deadline);
            }
        }
        self.refill(now);
        if self.tokens == 0 {
            return Err(GiveUpReason::Budget);
        }
        self.tokens -= 1;
        let ceiling = self.ceiling(self.attempt - 1);
        let nanos = rng.random_range(0..=ceiling.as_nanos().min(u64::MAX as u128) as u64);
        let mut delay = Duration::from_nanos(nanos);
        if let Some(max) = self.policy.max_outage {
            // Never sleep past the deadline: the last attempt happens at it.
            delay = delay.min(max.saturating_sub(elapsed));
        }
        Ok(delay)
    }

    /// A connection worked: the next failure starts a new outage.
    pub fn succeeded(&mut self) {
        self.attempt = 0;
        self.outage_start = None;
    }

    /// Upper bound of the delay before attempt `n` of an outage.
    pub fn ceiling(&self, n: u32) -> Duration {
        let factor = 1u32.checked_shl(n.min(31)).unwrap_or(u32::MAX);
        self.policy
            .initial_delay
            .checked_mul(factor)
            .unwrap_or(self.policy.max_delay)
            .min(self.policy.max_delay)
    }

    fn refill(&mut self, now: Instant) {
        let every = self.policy.budget.refill_every;
        if every.is_zero() {
            self.tokens = self.policy.budget.capacity;
            return;
        }
        let since = now.saturating_duration_since(self.refilled_at);
        let n = (since.as_nanos() / every.as_nanos()).min(u32::MAX as u128) as u32;
        if n > 0 {
            self.tokens = self
                .tokens
                .saturating_add(n)
                .min(self.policy.budget.capacity);
            self.refilled_at += every * n;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::reconnect::RetryBudget;
    use proptest::prelude::*;
    use rand::{rngs::SmallRng, SeedableRng};

    fn policy() -> Policy {
        Policy {
            initial_delay: Duration::from_millis(100),
            max_delay: Duration::from_secs(2),
            max_attempts: Some(6),
            max_outage: None,
            min_stable: Duration::from_secs(1),
            budget: RetryBudget {
                capacity: 100,
                refill_every: Duration::from_secs(1),
            },
        }
    }

    #[test]
    fn gives_up_after_max_attempts_and_success_starts_over() {
        let t0 = Instant::now();
        let mut b = Backoff::new(policy(), t0);
        let mut rng = SmallRng::seed_from_u64(1);
        for _ in 0..6 {
            assert!(b.next_delay(t0, &mut rng).is_ok());
        }
        assert!(matches!(
            b.next_delay(t0, &mut rng),
            Err(GiveUpReason::Attempts)
        ));
        b.succeeded();
        assert!(b.next_delay(t0, &mut rng).is_ok());
    }

    #[test]
    fn outage_deadline_stops_and_clamps_delay() {
        let t0 = Instant::now();
        let mut p = policy();
        p.max_attempts = None;
        p.max_outage = Some(Duration::from_secs(3));
        let mut b = Backoff::new(p, t0);
        let mut rng = SmallRng::seed_from_u64(2);
        assert!(b.next_delay(t0, &mut rng).is_ok());
        let d = b
            .next_delay(t0 + Duration::from_millis(2950), &mut rng)
            .unwrap();
        assert!(d <= Duration::from_millis(50));
        assert!(matches!(
            b.next_delay(t0 + Duration::from_secs(3), &mut rng),
            Err(GiveUpReason::Deadline)
        ));
    }

    #[test]
    fn budget_empties_and_refills_with_time() {
        let t0 = Instant::now();
        let mut p = policy();
        p.max_attempts = None;
        p.budget = RetryBudget {
            capacity: 3,
            refill_every: Duration::from_secs(10),
        };
        let mut b = Backoff::new(p, t0);
        let mut rng = SmallRng::seed_from_u64(3);
        for _ in 0..3 {
            assert!(b.next_delay(t0, &mut rng).is_ok());
            b.succeeded();
        }
        assert_eq!(b.next_delay(t0, &mut rng), Err(GiveUpReason::Budget));
        b.succeeded();
        assert!(b.next_delay(t0 + Duration::from_secs(10), &mut rng).is_ok());
        assert_eq!(
            b.next_delay(t0 + Duration::from_secs(10), &mut rng),
            Err(GiveUpReason::Budget)
        );
    }

    proptest! {
        #[test]
        fn delays_stay_within_the_full_jitter_envelope(seed: u64, failures in 1u32..40) {
            let t0 = Instant::now();
            let mut p = policy();
            p.max_attempts = None;
            let mut b = Backoff::new(p, t0);
            let mut rng = SmallRng::seed_from_u64(seed);
            for n in 0..failures {
                let d = b.next_delay(t0, &mut rng).unwrap();
                prop_assert!(d <= b.ceiling(n));
                prop_assert!(b.ceiling(n) <= Duration::from_secs(2));
            }
        }

        #[test]
        fn same_seed_same_schedule(seed: u64) {
            let t0 = Instant::now();
            let run = |seed| {
                let mut b = Backoff::new(policy(), t0);
                let mut rng = SmallRng::seed_from_u64(seed);
                (0..6).map(|_| b.next_delay(t0, &mut rng)).collect::<Vec<_>>()
            };
            prop_assert_eq!(run(seed), run(seed));
        }
    }
}
