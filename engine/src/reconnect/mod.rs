//! Reconnect policy: when to try again, how often, and when to stop.
//!
//! [`Policy`] says what is allowed; [`ReconnectCore`] is the sans-IO state
//! machine that applies it to one session, outage by outage, with or
//! without a network monitor; the session's tokio driver only carries out
//! its [`Action`]s.
//!
//! Written here rather than taken from `backon`/`backoff`: the engine needs
//! time and randomness *injected* (the simulated backend replays a run bit
//! for bit from its seed), staggered attempts, a routability gate and a
//! retry budget that outlives one outage; no crate offers these together.

#[cfg(feature = "signal")]
mod backoff;
mod core;
mod policy;
#[cfg(test)]
mod tests;

#[cfg(feature = "signal")]
pub(crate) use backoff::Backoff;
pub use core::{
    Action, AttemptFailure, AttemptId, Event, GiveUp, GiveUpReason, OutageCause, Pacing,
    ReconnectCore, EVENT_BACKLOG, LAST_CAUSES, MAX_ATTEMPTS_IN_FLIGHT,
};
pub use policy::{Policy, RetryBudget};
