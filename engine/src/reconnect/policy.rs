//! What a session's reconnect policy may do: pacing, limits, budget.

use crate::validate::{at_least_1ms, cap_at_least, ConfigError};
use std::time::{Duration, Instant};

/// How a session reconnects after its transport fails.
///
/// Attempts of one outage start on a schedule: the first at once, then
/// each one a jittered, growing interval after the previous one *started*,
/// whether or not that one has finished (staggered, as Happy Eyeballs
/// staggers connection attempts). The `k`-th interval is drawn uniformly
/// from `[c/2, c]` with `c = min(max_delay, initial_delay · 2^k)` ("equal
/// jitter"): a crowd of clients that lost the same path does not reconnect
/// in lockstep, and two attempts are never closer than `initial_delay / 2`
/// — against any peer, including one that accepts and then closes.
///
/// `#[non_exhaustive]`: start from [`Policy::default`] and set fields.
///
/// ```
/// use netmend::Policy;
/// use std::time::Duration;
///
/// let mut policy = Policy::default();
/// policy.initial_delay = Duration::from_millis(50);
/// policy.max_attempts = Some(20);
/// assert_eq!(policy.max_delay, Duration::from_secs(5));
/// assert!(policy.validate().is_ok());
/// ```
#[derive(Clone, Debug, PartialEq)]
#[non_exhaustive]
pub struct Policy {
    /// Upper bound of the first interval between attempts; half of it is
    /// the least spacing of any two attempts. Default 100 ms.
    pub initial_delay: Duration,
    /// Cap on any interval. Default 5 s.
    pub max_delay: Duration,
    /// Attempts per outage before giving up; `None` for no limit. Default 50.
    pub max_attempts: Option<u32>,
    /// Longest outage before giving up, attempts in flight included;
    /// `None` for no limit. Default 120 s.
    pub max_outage: Option<Duration>,
    /// A transport that made no progress (no byte acknowledged or received)
    /// and lived less than this does not count as a recovery for pacing:
    /// the next outage continues the previous one's spacing instead of
    /// starting at once. Default 1 s.
    pub min_stable: Duration,
    /// Retry budget shared by all outages of a session.
    pub budget: RetryBudget,
}

impl Default for Policy {
    fn default() -> Self {
        Self {
            initial_delay: Duration::from_millis(100),
            max_delay: Duration::from_secs(5),
            max_attempts: Some(50),
            max_outage: Some(Duration::from_secs(120)),
            min_stable: Duration::from_secs(1),
            budget: RetryBudget::default(),
        }
    }
}

impl Policy {
    /// Checks every field. Delays and outages under 1 ms, zero attempts and
    /// an empty budget are refused; `Duration::MAX` and `u32::MAX` are
    /// accepted and mean "never" / "no limit in practice".
    ///
    /// # Errors
    ///
    /// A [`ConfigError`] naming the first field that is refused.
    pub fn validate(&self) -> Result<(), ConfigError> {
        at_least_1ms("Policy::initial_delay", self.initial_delay)?;
        cap_at_least(
            "Policy::max_delay",
            self.max_delay,
            "initial_delay",
            self.initial_delay,
        )?;
        if self.max_attempts == Some(0) {
            return Err(ConfigError::new(
                "Policy::max_attempts",
                "must be at least 1 (None for no limit)",
            ));
        }
        if let Some(d) = self.max_outage {
            at_least_1ms("Policy::max_outage", d)?;
        }
        if self.budget.capacity == 0 {
            return Err(ConfigError::new(
                "Policy::budget.capacity",
                "must be at least 1 (u32::MAX for no limit in practice)",
            ));
        }
        at_least_1ms("Policy::budget.refill_every", self.budget.refill_every)?;
        Ok(())
    }
}

/// A token bucket of failed reconnect attempts: `capacity` tokens, one
/// refilled every `refill_every`. An attempt takes a token when it starts
/// and gives it back when it turns out not to be a failure (it became the
/// session's transport, or lost a race to one that did), so the budget
/// charges failures, not recoveries: a path that resets often but always
/// recovers never empties it, while a peer that fails every attempt does.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct RetryBudget {
    /// Tokens when full. Default 100.
    pub capacity: u32,
    /// One token comes back per this interval. Default 1 s.
    pub refill_every: Duration,
}

impl Default for RetryBudget {
    fn default() -> Self {
        Self {
            capacity: 100,
            refill_every: Duration::from_secs(1),
        }
    }
}

impl RetryBudget {
    /// A budget of `capacity` tokens, one back every `refill_every`.
    pub fn new(capacity: u32, refill_every: Duration) -> Self {
        RetryBudget {
            capacity,
            refill_every,
        }
    }
}

/// The running token bucket.
#[derive(Debug)]
pub(crate) struct Bucket {
    config: RetryBudget,
    tokens: u32,
    refilled_at: Instant,
}

impl Bucket {
    pub(crate) fn new(config: RetryBudget, now: Instant) -> Self {
        Bucket {
            config,
            tokens: config.capacity,
            refilled_at: now,
        }
    }

    pub(crate) fn refill(&mut self, now: Instant) {
        if self.tokens >= self.config.capacity {
            self.refilled_at = now;
            return;
        }
        let every = self.config.refill_every.as_nanos().max(1);
        let since = now.saturating_duration_since(self.refilled_at).as_nanos();
        let n = (since / every).min(u128::from(u32::MAX)) as u32;
        if n > 0 {
            self.tokens = self.tokens.saturating_add(n).min(self.config.capacity);
            self.refilled_at = if self.tokens >= self.config.capacity {
                now
            } else {
                self.refilled_at
                    .checked_add(self.config.refill_every.saturating_mul(n))
                    .unwrap_or(now)
            };
        }
    }

    /// Takes a token if there is one.
    pub(crate) fn take(&mut self, now: Instant) -> bool {
        self.refill(now);
        if self.tokens == 0 {
            return false;
        }
        self.tokens -= 1;
        true
    }

    /// Whether a token is there.
    pub(crate) fn available(&mut self, now: Instant) -> bool {
        self.refill(now);
        self.tokens > 0
    }

    /// Returns a token taken for an attempt that was not a failure.
    pub(crate) fn give_back(&mut self) {
        self.tokens = self.tokens.saturating_add(1).min(self.config.capacity);
    }

    /// When the next token comes back, if the bucket is empty.
    pub(crate) fn next_refill(&self) -> Option<Instant> {
        if self.tokens > 0 {
            return None;
        }
        self.refilled_at.checked_add(self.config.refill_every)
    }

    pub(crate) fn tokens(&self) -> u32 {
        self.tokens
    }
}
