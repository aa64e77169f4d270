//! The sans-IO reconnect core: one state per outage.

use super::policy::{Bucket, Policy};
use crate::gate::{Blocked, Gate, GateConfig, GateState};
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};
use std::collections::VecDeque;
use std::fmt;
use std::time::{Duration, Instant};
use thiserror::Error;

/// Most connection attempts in flight at once. When the schedule says
/// "start one" and this many are pending, the start waits for a slot (an
/// attempt ends or times out), so a path that swallows SYNs costs at most
/// this many sockets.
pub const MAX_ATTEMPTS_IN_FLIGHT: usize = 8;

/// How many failure causes a [`GiveUp`] keeps (the most recent ones).
pub const LAST_CAUSES: usize = 4;

/// Events the core keeps for [`ReconnectCore::poll_event`]; past this the
/// oldest is dropped (a driver that drains after every input never gets
/// near it).
pub const EVENT_BACKLOG: usize = 64;

/// Names one connection attempt of a [`ReconnectCore`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct AttemptId(u64);

/// Why one connection attempt did not become the session's transport.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum AttemptFailure {
    /// The connector failed (refused, unreachable, …).
    Connect {
        /// The I/O error's kind.
        kind: std::io::ErrorKind,
        /// The I/O error's message.
        message: String,
    },
    /// The connector did not yield a stream in time.
    TimedOut(Duration),
    /// The stream connected but the handshake failed: the peer closed it,
    /// sent garbage, stayed silent or refused. Typical of a captive portal,
    /// an L7 middlebox or an overloaded server.
    Handshake(String),
}

impl fmt::Display for AttemptFailure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            AttemptFailure::Connect { message, .. } => write!(f, "connect failed: {message}"),
            AttemptFailure::TimedOut(d) => write!(f, "connect timed out after {d:?}"),
            AttemptFailure::Handshake(why) => write!(f, "handshake failed: {why}"),
        }
    }
}

impl From<&std::io::Error> for AttemptFailure {
    fn from(e: &std::io::Error) -> Self {
        AttemptFailure::Connect {
            kind: e.kind(),
            message: e.to_string(),
        }
    }
}

/// Why an outage began.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum OutageCause {
    /// The session's first connection.
    Initial,
    /// The transport failed (reset, closed, silent, bad frame…).
    TransportLost(String),
    /// The network path changed: the transport was left on purpose.
    PathChanged,
}

impl fmt::Display for OutageCause {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            OutageCause::Initial => f.write_str("first connection"),
            OutageCause::TransportLost(why) => write!(f, "transport lost: {why}"),
            OutageCause::PathChanged => f.write_str("the network path changed"),
        }
    }
}

/// Which limit ended reconnecting.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum GiveUpReason {
    /// `Policy::max_attempts` attempts failed in this outage.
    Attempts,
    /// `Policy::max_outage` (or the gate's deadline) passed.
    Deadline,
    /// The retry budget is empty: too many failed attempts recently.
    Budget,
}

impl fmt::Display for GiveUpReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            GiveUpReason::Attempts => "attempt limit reached",
            GiveUpReason::Deadline => "outage deadline passed",
            GiveUpReason::Budget => "retry budget exhausted",
        })
    }
}

/// Reconnecting stopped: which limit, after what, and why the last
/// attempts failed.
#[derive(Clone, Debug, Error, PartialEq, Eq)]
#[error("{reason} after {attempts} attempt(s) over {elapsed:?}{}", causes(.last_causes))]
#[non_exhaustive]
pub struct GiveUp {
    /// The limit that was reached.
    pub reason: GiveUpReason,
    /// Attempts made in this outage.
    pub attempts: u32,
    /// Length of the outage.
    pub elapsed: Duration,
    /// Why the last attempts failed, oldest first (at most [`LAST_CAUSES`]).
    pub last_causes: Vec<AttemptFailure>,
}

fn causes(c: &[AttemptFailure]) -> String {
    match c.last() {
        Some(last) => format!("; last: {last}"),
        None => String::new(),
    }
}

/// What the driver must do next.
#[derive(Clone, Debug, PartialEq, Eq)]
#[must_use]
pub enum Action {
    /// Start a connection attempt; report its end with
    /// [`ReconnectCore::handle_connected`] or
    /// [`ReconnectCore::handle_attempt_failed`].
    Connect(AttemptId),
    /// Abandon this attempt (drop its future); nothing more is reported.
    Cancel(AttemptId),
    /// Drop the current transport (the path moved); do not report its end.
    DropTransport,
    /// Stop: the session fails with this.
    GiveUp(GiveUp),
}

/// What happened, for the application's event handlers.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Event {
    /// An outage began: the session has no usable transport.
    OutageBegan {
        /// Why.
        why: OutageCause,
    },
    /// One attempt failed.
    AttemptFailed {
        /// Its number in this outage, from 1.
        attempt: u32,
        /// Why.
        cause: AttemptFailure,
    },
    /// A transport was established: the outage is over.
    Recovered {
        /// How long the outage lasted.
        outage: Duration,
        /// Attempts it took.
        attempts: u32,
    },
    /// The network monitor decided the path changed.
    PathChanged,
}

/// No attempt starts before this: half the first interval after the
/// previous start, across outages too.
fn floor(last_start: Option<Instant>, pacing: &Pacing) -> Option<Instant> {
    last_start?.checked_add(pacing.schedule.probe_interval / 2)
}

#[derive(Debug)]
struct InFlight {
    id: AttemptId,
    /// 1-based number in the outage.
    n: u32,
    deadline: Option<Instant>,
}

#[derive(Debug)]
struct Outage {
    began: Instant,
    deadline: Option<Instant>,
    attempts: u32,
    gate: Gate,
    causes: VecDeque<AttemptFailure>,
    /// The attempt whose transport is in its handshake.
    handshake: Option<InFlight>,
}

#[derive(Debug)]
enum Phase {
    Connected {
        since: Instant,
        /// Spacing exponent of the outage that ended, for a transport that
        /// does not hold.
        run: u32,
    },
    Outage(Box<Outage>),
    GaveUp,
}

/// How attempts are paced: the policy's backoff without a monitor, the
/// gate's probe schedule with one.
#[derive(Clone, Copy, Debug)]
pub struct Pacing {
    /// Spacing schedule, per-attempt timeout and (with a monitor) deadline.
    pub schedule: GateConfig,
    /// Whether a monitor says when the path is there; without one the
    /// path is assumed to be there.
    pub monitored: bool,
}

impl Pacing {
    /// Pacing without a monitor: the policy's delays, `connect_timeout`
    /// per attempt.
    pub fn unmonitored(policy: &Policy, connect_timeout: Duration) -> Pacing {
        let schedule = GateConfig {
            probe_interval: policy.initial_delay,
            max_probe_interval: policy.max_delay,
            probe_timeout: connect_timeout,
            deadline: Duration::MAX,
        };
        Pacing {
            schedule,
            monitored: false,
        }
    }

    /// Pacing through the routability gate: its probe schedule, timeout
    /// and deadline.
    pub fn gated(gate: GateConfig) -> Pacing {
        Pacing {
            schedule: gate,
            monitored: true,
        }
    }
}

/// The client's reconnect policy as a sans-IO state machine: backoff, the
/// routability gate, the rebind decision and the give-up rules, one state
/// per outage. It never opens a socket and never reads a clock.
///
/// Methods, as in `quinn-proto`:
///
/// * **input** — [`handle_path`](Self::handle_path),
///   [`handle_path_changed`](Self::handle_path_changed),
///   [`handle_connected`](Self::handle_connected),
///   [`handle_attempt_failed`](Self::handle_attempt_failed),
///   [`handle_established`](Self::handle_established),
///   [`handle_transport_lost`](Self::handle_transport_lost),
///   [`handle_timeout`](Self::handle_timeout);
/// * **output** — [`poll_action`](Self::poll_action) until `None`, then
///   [`poll_event`](Self::poll_event) until `None`, then re-arm one timer
///   at [`poll_timeout`](Self::poll_timeout).
///
/// Its limits hold with and without a monitor: at most
/// `Policy::max_attempts` attempts per outage, none closer than half the
/// first interval to the previous one, none started once the budget is
/// empty, and a typed [`GiveUp`] at the outage deadline at the latest,
/// attempts and handshakes in flight included.
///
/// ```
/// use netmend::reconnect::{Action, Pacing, ReconnectCore};
/// use netmend::Policy;
/// use std::time::{Duration, Instant};
///
/// let policy = Policy::default();
/// let pacing = Pacing::unmonitored(&policy, Duration::from_secs(3));
/// let t0 = Instant::now();
/// let mut core = ReconnectCore::new(policy, pacing, t0, 7);
/// let Some(Action::Connect(first)) = core.poll_action(t0) else { panic!() };
/// // The peer accepts the TCP connection, then closes it in the handshake:
/// assert!(core.handle_connected(t0, first));
/// core.handle_transport_lost(t0, "closed by peer".into(), false);
/// // No second attempt at once: the next is one jittered interval later.
/// assert_eq!(core.poll_action(t0), None);
/// assert!(core.poll_timeout().unwrap() >= t0 + Duration::from_millis(50));
/// ```
#[derive(Debug)]
pub struct ReconnectCore {
    policy: Policy,
    pacing: Pacing,
    /// Outage limit: the policy's, and the gate's deadline with a monitor.
    outage_limit: Option<Duration>,
    readiness: Result<(), Blocked>,
    rng: SmallRng,
    budget: Bucket,
    phase: Phase,
    in_flight: Vec<InFlight>,
    last_start: Option<Instant>,
    next_id: u64,
    /// Bounded: at most `MAX_ATTEMPTS_IN_FLIGHT` cancels, one drop and one
    /// give-up are ever queued.
    actions: VecDeque<Action>,
    events: VecDeque<Event>,
    events_dropped: u64,
    attempts_total: u64,
    /// The least time an attempt is given: the path's measured
    /// retransmission timeout ([`handle_round_trip`](Self::handle_round_trip)).
    round_trip_floor: Duration,
}

impl ReconnectCore {
    /// A core at `now` whose first outage (the initial connect) begins at
    /// once; jitter seeded by `seed`. With `pacing.monitored` no attempt
    /// starts before [`handle_path`](Self::handle_path) reports a path.
    pub fn new(policy: Policy, pacing: Pacing, now: Instant, seed: u64) -> Self {
        let gate_limit = pacing.monitored.then_some(pacing.schedule.deadline);
        let outage_limit = match (policy.max_outage, gate_limit) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
        let mut core = ReconnectCore {
            budget: Bucket::new(policy.budget, now),
            policy,
            pacing,
            outage_limit,
            readiness: if pacing.monitored {
                Err(Blocked::NoRoute)
            } else {
                Ok(())
            },
            rng: SmallRng::seed_from_u64(seed),
            phase: Phase::GaveUp,
            in_flight: Vec::new(),
            last_start: None,
            next_id: 0,
            actions: VecDeque::new(),
            events: VecDeque::new(),
            events_dropped: 0,
            attempts_total: 0,
            round_trip_floor: Duration::ZERO,
        };
        core.begin_outage(now, OutageCause::Initial, 0);
        core
    }

    /// A core at `now` whose transport is already established (a session
    /// re-attached in another process with its live transport): no outage,
    /// no attempt until that transport is lost.
    pub fn new_connected(policy: Policy, pacing: Pacing, now: Instant, seed: u64) -> Self {
        let mut core = ReconnectCore::new(policy, pacing, now, seed);
        // The initial outage `new` began is over before it started: no
        // attempt was made, none is counted.
        core.phase = Phase::Connected { since: now, run: 0 };
        core.actions.clear();
        core.events.clear();
        core
    }

    // ---- getters ---------------------------------------------------------

    /// Attempts started over the core's whole life.
    pub fn attempts_total(&self) -> u64 {
        self.attempts_total
    }

    /// Attempts in flight now (connecting, or in their handshake).
    pub fn attempts_in_flight(&self) -> usize {
        let handshake = match &self.phase {
            Phase::Outage(o) => usize::from(o.handshake.is_some()),
            _ => 0,
        };
        self.in_flight.len() + handshake
    }

    /// Whether a transport is established.
    pub fn is_connected(&self) -> bool {
        matches!(self.phase, Phase::Connected { .. })
    }

    /// Whether the core gave up.
    pub fn gave_up(&self) -> bool {
        matches!(self.phase, Phase::GaveUp)
    }

    /// Tokens left in the retry budget.
    pub fn budget_tokens(&self) -> u32 {
        self.budget.tokens()
    }

    /// Events dropped because nobody drained them (see [`EVENT_BACKLOG`]).
    pub fn events_dropped(&self) -> u64 {
        self.events_dropped
    }

    // ---- input -------------------------------------------------------------

    /// The path's retransmission timeout as the session measured it
    /// (`SRTT + 4·RTTVAR`): attempts started from now on are given at
    /// least that long (a path that became slow is not a dead one: a
    /// connect over a 2 s round trip needs more than a 1 s timeout).
    /// `None` forgets it.
    pub fn handle_round_trip(&mut self, rto: Option<Duration>) {
        self.round_trip_floor = rto.unwrap_or(Duration::ZERO);
    }

    fn attempt_timeout(&self) -> Duration {
        self.pacing
            .schedule
            .probe_timeout
            .max(self.round_trip_floor)
    }

    /// The monitor's view of the path: `Ok` when an address and a route
    /// with carrier exist. Without a monitor, never needed.
    pub fn handle_path(&mut self, now: Instant, ready: Result<(), Blocked>) {
        self.readiness = ready;
        if let Phase::Outage(o) = &mut self.phase {
            o.gate.observe(ready, now);
        }
    }

    /// The monitor decided the path moved: a transport on the old path is
    /// dropped ([`Action::DropTransport`]), attempts on it are cancelled,
    /// and the next attempt starts at once on the new one.
    pub fn handle_path_changed(&mut self, now: Instant) {
        self.push_event(Event::PathChanged);
        match &mut self.phase {
            Phase::Connected { .. } => {
                self.actions.push_back(Action::DropTransport);
                self.begin_outage(now, OutageCause::PathChanged, 0);
            }
            Phase::Outage(o) => {
                if o.handshake.take().is_some() {
                    self.actions.push_back(Action::DropTransport);
                    self.budget.give_back();
                }
                for a in self.in_flight.drain(..) {
                    self.actions.push_back(Action::Cancel(a.id));
                    self.budget.give_back();
                }
                if o.gate.state() == GateState::Probing {
                    o.gate.restart_run(now);
                }
            }
            Phase::GaveUp => {}
        }
    }

    /// Attempt `id` yielded a stream; its handshake begins. Returns `false`
    /// when the attempt is no longer wanted (cancelled, or the core gave
    /// up): drop the stream. Other attempts in flight are cancelled.
    pub fn handle_connected(&mut self, _now: Instant, id: AttemptId) -> bool {
        let Phase::Outage(o) = &mut self.phase else {
            return false;
        };
        let Some(i) = self.in_flight.iter().position(|a| a.id == id) else {
            return false;
        };
        let won = self.in_flight.remove(i);
        for a in self.in_flight.drain(..) {
            self.actions.push_back(Action::Cancel(a.id));
            self.budget.give_back();
        }
        o.handshake = Some(won);
        true
    }

    /// Attempt `id` failed before yielding a stream.
    pub fn handle_attempt_failed(&mut self, _now: Instant, id: AttemptId, cause: AttemptFailure) {
        let Some(i) = self.in_flight.iter().position(|a| a.id == id) else {
            return;
        };
        let a = self.in_flight.remove(i);
        self.record_failure(a.n, cause);
    }

    /// The transport finished its handshake: the outage is over.
    pub fn handle_established(&mut self, now: Instant) {
        let Phase::Outage(o) = &mut self.phase else {
            return;
        };
        if o.handshake.take().is_none() {
            return;
        }
        // The winning attempt was no failure.
        self.budget.give_back();
        let event = Event::Recovered {
            outage: now.saturating_duration_since(o.began),
            attempts: o.attempts,
        };
        let run = o.gate.run();
        self.phase = Phase::Connected { since: now, run };
        self.push_event(event);
    }

    /// The transport ended (it failed or the peer closed it). `progressed`
    /// says whether any byte was acknowledged or received on it. A
    /// transport still in its handshake is a failed attempt; one that
    /// held begins a new outage.
    pub fn handle_transport_lost(&mut self, now: Instant, why: String, progressed: bool) {
        match &mut self.phase {
            Phase::Outage(o) => {
                if let Some(a) = o.handshake.take() {
                    self.record_failure(a.n, AttemptFailure::Handshake(why));
                }
            }
            Phase::Connected { since, run } => {
                let lived = now.saturating_duration_since(*since);
                let held = progressed || lived >= self.policy.min_stable;
                // An immediate close of a transport that carried nothing
                // counts like a failed attempt: the spacing goes on.
                let carry = if held { 0 } else { *run };
                self.begin_outage(now, OutageCause::TransportLost(why), carry);
            }
            Phase::GaveUp => {}
        }
    }

    /// Fires what is due: attempts past their timeout.
    pub fn handle_timeout(&mut self, now: Instant) {
        let Phase::Outage(o) = &mut self.phase else {
            return;
        };
        o.gate.handle_timeout(now);
        let timeout = self.attempt_timeout();
        let mut i = 0;
        while i < self.in_flight.len() {
            if self.in_flight[i].deadline.is_some_and(|d| now >= d) {
                let a = self.in_flight.remove(i);
                self.actions.push_back(Action::Cancel(a.id));
                self.record_failure(a.n, AttemptFailure::TimedOut(timeout));
            } else {
                i += 1;
            }
        }
    }

    // ---- output ------------------------------------------------------------

    /// The next thing to do at `now`, if any. Call until `None` after
    /// every input.
    #[must_use]
    pub fn poll_action(&mut self, now: Instant) -> Option<Action> {
        if let Some(a) = self.actions.pop_front() {
            return Some(a);
        }
        let Phase::Outage(o) = &mut self.phase else {
            return None;
        };
        if o.deadline.is_some_and(|d| now >= d) {
            return self.give_up(now, GiveUpReason::Deadline);
        }
        if o.handshake.is_some() || self.in_flight.len() >= MAX_ATTEMPTS_IN_FLIGHT {
            return None;
        }
        if self
            .policy
            .max_attempts
            .is_some_and(|max| o.attempts >= max)
        {
            return if self.in_flight.is_empty() {
                self.give_up(now, GiveUpReason::Attempts)
            } else {
                None
            };
        }
        if !self.budget.available(now) {
            // An empty budget ends the outage as soon as nothing is left
            // in flight that could still succeed.
            return if self.in_flight.is_empty() {
                self.give_up(now, GiveUpReason::Budget)
            } else {
                None
            };
        }
        if floor(self.last_start, &self.pacing).is_some_and(|t| now < t) {
            return None;
        }
        if o.gate.next_probe_at().is_none_or(|t| t > now) {
            return None;
        }
        if !o.gate.poll_probe(now) {
            return None;
        }
        self.budget.take(now);
        o.attempts += 1;
        self.attempts_total += 1;
        self.last_start = Some(now);
        let id = AttemptId(self.next_id);
        self.next_id += 1;
        let timeout = now.checked_add(
            self.pacing
                .schedule
                .probe_timeout
                .max(self.round_trip_floor),
        );
        let deadline = match (timeout, o.deadline) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
        self.in_flight.push(InFlight {
            id,
            n: o.attempts,
            deadline,
        });
        Some(Action::Connect(id))
    }

    /// When [`handle_timeout`](Self::handle_timeout) and
    /// [`poll_action`](Self::poll_action) are next due, if ever.
    #[must_use]
    pub fn poll_timeout(&self) -> Option<Instant> {
        let Phase::Outage(o) = &self.phase else {
            return None;
        };
        let mut t = o.deadline;
        let mut at = |x: Option<Instant>| {
            if let Some(x) = x {
                t = Some(t.map_or(x, |t| t.min(x)));
            }
        };
        for a in &self.in_flight {
            at(a.deadline);
        }
        let may_start = o.handshake.is_none()
            && self.in_flight.len() < MAX_ATTEMPTS_IN_FLIGHT
            && self.policy.max_attempts.is_none_or(|m| o.attempts < m);
        if may_start {
            match self.budget.next_refill() {
                // Empty budget, attempts in flight: a start waits for a
                // token (or for them to end, which is an input anyway).
                Some(refill) => at(Some(refill)),
                None => {
                    if let Some(next) = o.gate.next_probe_at() {
                        at(Some(
                            next.max(floor(self.last_start, &self.pacing).unwrap_or(next)),
                        ));
                    }
                }
            }
        }
        t
    }

    /// The next event, if any.
    #[must_use]
    pub fn poll_event(&mut self) -> Option<Event> {
        self.events.pop_front()
    }

    // ---- internals ---------------------------------------------------------

    fn begin_outage(&mut self, now: Instant, why: OutageCause, carry_run: u32) {
        let deadline = self.outage_limit.and_then(|d| now.checked_add(d));
        let mut gate = Gate::with_deadline(self.pacing.schedule, now, deadline, self.rng.random());
        gate.observe(self.readiness, now);
        if gate.state() == GateState::Probing {
            if let Some(last) = self.last_start.filter(|_| carry_run > 0) {
                gate.continue_run(carry_run, last, now);
            }
        }
        self.phase = Phase::Outage(Box::new(Outage {
            began: now,
            deadline,
            attempts: 0,
            gate,
            causes: VecDeque::new(),
            handshake: None,
        }));
        self.push_event(Event::OutageBegan { why });
    }

    fn record_failure(&mut self, n: u32, cause: AttemptFailure) {
        tracing::debug!(attempt = n, %cause, "connection attempt failed");
        if let Phase::Outage(o) = &mut self.phase {
            if o.causes.len() == LAST_CAUSES {
                o.causes.pop_front();
            }
            o.causes.push_back(cause.clone());
        }
        self.push_event(Event::AttemptFailed { attempt: n, cause });
    }

    fn give_up(&mut self, now: Instant, reason: GiveUpReason) -> Option<Action> {
        let Phase::Outage(o) = std::mem::replace(&mut self.phase, Phase::GaveUp) else {
            return None;
        };
        for a in self.in_flight.drain(..) {
            self.actions.push_back(Action::Cancel(a.id));
        }
        if o.handshake.is_some() {
            self.actions.push_back(Action::DropTransport);
        }
        let give_up = GiveUp {
            reason,
            attempts: o.attempts,
            elapsed: now.saturating_duration_since(o.began),
            last_causes: o.causes.into_iter().collect(),
        };
        tracing::warn!(%give_up, "giving up reconnecting");
        self.actions.push_back(Action::GiveUp(give_up));
        self.actions.pop_front()
    }

    fn push_event(&mut self, e: Event) {
        if self.events.len() == EVENT_BACKLOG {
            self.events.pop_front();
            self.events_dropped += 1;
        }
        self.events.push_back(e);
    }
}
