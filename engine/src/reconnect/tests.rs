//! The reconnect core against simulated peers and paths, on a virtual
//! clock: every run is deterministic from its inputs.

use super::*;
use crate::gate::{Blocked, GateConfig};
use proptest::prelude::*;
use std::time::{Duration, Instant};

/// What the far end does with one connection attempt.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Peer {
    /// The real server: connects in one RTT, handshake in another.
    Healthy,
    /// Accepts TCP, then closes during the handshake (captive portal, L7
    /// middlebox, the wrong server after a failover).
    AcceptThenClose,
    /// Accepts TCP, then answers garbage: the handshake fails at once.
    AcceptThenGarbage,
    /// Accepts TCP, then says nothing: the handshake times out.
    AcceptThenSilence,
    /// Refuses (RST) after one RTT.
    Refuse,
    /// Drops the SYN: the attempt never ends by itself.
    Blackhole,
}

fn peer() -> impl Strategy<Value = Peer> {
    prop_oneof![
        Just(Peer::Healthy),
        Just(Peer::AcceptThenClose),
        Just(Peer::AcceptThenGarbage),
        Just(Peer::AcceptThenSilence),
        Just(Peer::Refuse),
        Just(Peer::Blackhole),
    ]
}

/// Something that happens to the path at a point in time.
#[derive(Clone, Copy, Debug)]
enum PathEvent {
    /// The monitor sees the route go (or come back).
    Ready(bool),
    /// The monitor decides the path moved.
    Changed,
    /// The established transport (if any) is reset; handshakes cut short
    /// are the peers' business (`AcceptThenClose`).
    Reset,
}

fn path_event() -> impl Strategy<Value = PathEvent> {
    prop_oneof![
        any::<bool>().prop_map(PathEvent::Ready),
        Just(PathEvent::Changed),
        Just(PathEvent::Reset),
    ]
}

const RTT: Duration = Duration::from_millis(20);
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(3);

#[derive(Debug)]
enum Pending {
    Connected(AttemptId),
    Failed(AttemptId),
    /// The transport of `attempt` finishes its handshake.
    Established(AttemptId),
    /// The transport of `attempt` ends (`bool`: it carried data).
    Lost(AttemptId, bool),
}

/// What one run recorded.
#[derive(Debug, Default)]
struct Record {
    starts: Vec<Instant>,
    /// (outage start, attempts in it, give-up time if it ended so).
    outages: Vec<(Instant, u32, Option<Instant>)>,
    give_up: Option<GiveUp>,
    recoveries: u32,
}

struct World {
    now: Instant,
    core: ReconnectCore,
    /// Peer behaviour: `(until, peer)` periods, the last one for ever.
    peers: Vec<(Instant, Peer)>,
    pending: Vec<(Instant, Pending)>,
    /// The attempt whose transport is live (handshaking or established).
    transport: Option<AttemptId>,
    established: bool,
    record: Record,
}

impl World {
    fn new(core: ReconnectCore, t0: Instant, peers: Vec<(Duration, Peer)>) -> World {
        let mut at = t0;
        let peers = peers
            .into_iter()
            .map(|(d, p)| {
                at += d;
                (at, p)
            })
            .collect();
        World {
            now: t0,
            core,
            peers,
            pending: Vec::new(),
            transport: None,
            established: false,
            record: Record::default(),
        }
    }

    fn peer_now(&self) -> Peer {
        self.peers
            .iter()
            .find(|(until, _)| self.now < *until)
            .or(self.peers.last())
            .map_or(Peer::Healthy, |(_, p)| *p)
    }

    fn schedule(&mut self, after: Duration, p: Pending) {
        self.pending.push((self.now + after, p));
    }

    /// Carries out the core's actions and collects its events. Events
    /// first: an outage that began with the last input owns the attempts
    /// its actions start.
    fn pump(&mut self) {
        self.collect_events();
        while let Some(a) = self.core.poll_action(self.now) {
            match a {
                Action::Connect(id) => {
                    self.record.starts.push(self.now);
                    if let Some(o) = self.record.outages.last_mut() {
                        o.1 += 1;
                    }
                    match self.peer_now() {
                        Peer::Healthy
                        | Peer::AcceptThenClose
                        | Peer::AcceptThenGarbage
                        | Peer::AcceptThenSilence => self.schedule(RTT, Pending::Connected(id)),
                        Peer::Refuse => self.schedule(RTT, Pending::Failed(id)),
                        Peer::Blackhole => {}
                    }
                }
                Action::Cancel(id) => self.pending.retain(|(_, p)| !concerns(p, id)),
                Action::DropTransport => {
                    if let Some(t) = self.transport.take() {
                        self.pending.retain(|(_, p)| !concerns(p, t));
                    }
                }
                Action::GiveUp(g) => {
                    if let Some(o) = self.record.outages.last_mut() {
                        o.2 = Some(self.now);
                    }
                    self.record.give_up = Some(g);
                }
            }
        }
        self.collect_events();
    }

    fn collect_events(&mut self) {
        while let Some(e) = self.core.poll_event() {
            match e {
                Event::OutageBegan { .. } => self.record.outages.push((self.now, 0, None)),
                Event::Recovered { .. } => self.record.recoveries += 1,
                _ => {}
            }
        }
    }

    fn fire(&mut self, p: Pending) {
        let now = self.now;
        match p {
            Pending::Connected(id) => {
                if !self.core.handle_connected(now, id) {
                    return;
                }
                self.transport = Some(id);
                self.established = false;
                match self.peer_now() {
                    Peer::Healthy => self.schedule(RTT, Pending::Established(id)),
                    Peer::AcceptThenClose | Peer::AcceptThenGarbage => {
                        self.schedule(RTT, Pending::Lost(id, false))
                    }
                    _ => self.schedule(HANDSHAKE_TIMEOUT, Pending::Lost(id, false)),
                }
            }
            Pending::Failed(id) => self.core.handle_attempt_failed(
                now,
                id,
                AttemptFailure::Connect {
                    kind: std::io::ErrorKind::ConnectionRefused,
                    message: "refused".into(),
                },
            ),
            Pending::Established(_) => {
                self.established = true;
                self.core.handle_established(now);
            }
            Pending::Lost(id, progressed) => {
                if self.transport == Some(id) {
                    self.transport = None;
                    self.core
                        .handle_transport_lost(now, "reset".into(), progressed);
                }
            }
        }
    }

    /// Runs until `end`, applying `path` events at their times.
    fn run(&mut self, end: Instant, mut path: Vec<(Instant, PathEvent)>) {
        path.sort_by_key(|(t, _)| *t);
        path.reverse();
        loop {
            self.core.handle_timeout(self.now);
            self.pump();
            if self.core.gave_up() {
                return;
            }
            let next_pending = self.pending.iter().map(|(t, _)| *t).min();
            let next_path = path.last().map(|(t, _)| *t);
            let next = [self.core.poll_timeout(), next_pending, next_path]
                .into_iter()
                .flatten()
                .min();
            let Some(next) = next.filter(|t| *t <= end) else {
                return;
            };
            assert!(next >= self.now, "time runs forward");
            self.now = next;
            if let Some(i) = self.pending.iter().position(|(t, _)| *t <= next) {
                let (_, p) = self.pending.remove(i);
                self.fire(p);
            } else if next_path == Some(next) {
                let (_, e) = path.pop().expect("a path event is due");
                match e {
                    PathEvent::Ready(up) => {
                        let ready = if up { Ok(()) } else { Err(Blocked::NoRoute) };
                        self.core.handle_path(next, ready);
                    }
                    PathEvent::Changed => self.core.handle_path_changed(next),
                    PathEvent::Reset => {
                        if let Some(t) = self.transport.filter(|_| self.established) {
                            self.pending.retain(|(_, p)| !concerns(p, t));
                            self.pending.push((next, Pending::Lost(t, true)));
                        }
                    }
                }
            }
        }
    }
}

fn concerns(p: &Pending, id: AttemptId) -> bool {
    match p {
        Pending::Connected(a) | Pending::Failed(a) | Pending::Established(a) => *a == id,
        Pending::Lost(a, _) => *a == id,
    }
}

fn policy(max_attempts: u32, max_outage_s: u64) -> Policy {
    Policy {
        initial_delay: Duration::from_millis(100),
        max_delay: Duration::from_secs(2),
        max_attempts: Some(max_attempts),
        max_outage: Some(Duration::from_secs(max_outage_s)),
        ..Policy::default()
    }
}

fn gate() -> GateConfig {
    GateConfig {
        probe_interval: Duration::from_millis(200),
        max_probe_interval: Duration::from_secs(2),
        probe_timeout: Duration::from_secs(1),
        deadline: Duration::from_secs(600),
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    /// Whatever the peer does and however the path moves, with or without
    /// a monitor: at most `max_attempts` per outage, no two attempts closer
    /// than the floor, a typed give-up no later than `max_outage`.
    #[test]
    fn limits_hold_against_any_peer_and_path(
        seed in any::<u64>(),
        monitored in any::<bool>(),
        max_attempts in 1u32..40,
        max_outage_s in 1u64..30,
        peers in proptest::collection::vec((1u64..20_000, peer()), 1..8),
        path in proptest::collection::vec((0u64..120_000, path_event()), 0..30),
    ) {
        let t0 = Instant::now();
        let p = policy(max_attempts, max_outage_s);
        let pacing = if monitored {
            Pacing::gated(gate())
        } else {
            Pacing::unmonitored(&p, Duration::from_secs(3))
        };
        let floor = pacing.schedule.probe_interval / 2;
        let mut core = ReconnectCore::new(p, pacing, t0, seed);
        if monitored {
            core.handle_path(t0, Ok(()));
        }
        let peers = peers.into_iter().map(|(ms, p)| (Duration::from_millis(ms), p)).collect();
        let mut w = World::new(core, t0, peers);
        let path = path
            .into_iter()
            .map(|(ms, e)| (t0 + Duration::from_millis(ms), e))
            .collect();
        w.run(t0 + Duration::from_secs(120), path);
        let r = &w.record;
        for pair in r.starts.windows(2) {
            prop_assert!(pair[1] - pair[0] >= floor, "attempts {:?} apart", pair[1] - pair[0]);
        }
        for (began, attempts, gave_up) in &r.outages {
            prop_assert!(*attempts <= max_attempts, "{attempts} attempts in one outage");
            if let Some(t) = gave_up {
                prop_assert!(*t - *began <= Duration::from_secs(max_outage_s));
            }
        }
        if let Some(g) = &r.give_up {
            prop_assert!(g.elapsed <= Duration::from_secs(max_outage_s));
            prop_assert!(g.last_causes.len() <= LAST_CAUSES);
            prop_assert_eq!(w.core.attempts_in_flight(), 0, "nothing left in flight");
        }
    }

    /// A path that resets the transport every 50–500 ms but always lets
    /// the next attempt through never exhausts the budget or the attempt
    /// limit, over ten minutes and thousands of resets (the old policy
    /// charged every reconnect and gave up after 45 s of such resets).
    #[test]
    fn frequent_resets_that_recover_never_give_up(
        seed in any::<u64>(),
        monitored in any::<bool>(),
        gaps in proptest::collection::vec(50u64..500, 64),
    ) {
        let t0 = Instant::now();
        // The default budget (100 tokens, one back a second) and a tight
        // attempt limit: only resets that cut a handshake short cost a
        // token, and every recovery gives its attempt's token back.
        let p = policy(3, 5);
        let pacing = if monitored { Pacing::gated(gate()) } else { Pacing::unmonitored(&p, Duration::from_secs(3)) };
        let mut core = ReconnectCore::new(p, pacing, t0, seed);
        if monitored {
            core.handle_path(t0, Ok(()));
        }
        let mut w = World::new(core, t0, vec![(Duration::from_secs(3600), Peer::Healthy)]);
        let mut t = t0;
        let mut path = Vec::new();
        while t < t0 + Duration::from_secs(600) {
            for g in &gaps {
                t += Duration::from_millis(*g);
                path.push((t, PathEvent::Reset));
            }
        }
        let resets = path.len();
        w.run(t0 + Duration::from_secs(600), path);
        prop_assert!(w.record.give_up.is_none(), "gave up: {:?}", w.record.give_up);
        prop_assert!(w.record.recoveries as usize >= resets / 2, "{} recoveries", w.record.recoveries);
    }
}

#[test]
fn a_peer_that_accepts_then_closes_gets_no_storm() {
    // The bug this core fixes: ~11,000 connects a second against such a
    // peer with a monitor. Now: the policy's spacing, then a typed give-up
    // naming the cause.
    for monitored in [false, true] {
        let t0 = Instant::now();
        let p = policy(50, 120);
        let pacing = if monitored {
            Pacing::gated(gate())
        } else {
            Pacing::unmonitored(&p, Duration::from_secs(3))
        };
        let mut core = ReconnectCore::new(p, pacing, t0, 1);
        core.handle_path(t0, Ok(()));
        let mut w = World::new(
            core,
            t0,
            vec![(Duration::from_secs(600), Peer::AcceptThenClose)],
        );
        w.run(t0 + Duration::from_secs(1), Vec::new());
        let in_first_second = w.record.starts.len();
        assert!(
            (3..=10).contains(&in_first_second),
            "{in_first_second} attempts in the first second (monitored: {monitored})"
        );
        w.run(t0 + Duration::from_secs(600), Vec::new());
        let g = w.record.give_up.clone().expect("gives up");
        assert_eq!(g.reason, GiveUpReason::Attempts);
        assert_eq!(g.attempts, 50);
        assert_eq!(
            g.last_causes.last(),
            Some(&AttemptFailure::Handshake("reset".into()))
        );
    }
}

#[test]
fn the_give_up_deadline_includes_the_attempt_in_flight() {
    let t0 = Instant::now();
    let p = policy(1000, 2);
    // Attempts may take 3 s; the outage may take 2 s.
    let core = ReconnectCore::new(
        p.clone(),
        Pacing::unmonitored(&p, Duration::from_secs(3)),
        t0,
        1,
    );
    let mut w = World::new(core, t0, vec![(Duration::from_secs(60), Peer::Blackhole)]);
    w.run(t0 + Duration::from_secs(60), Vec::new());
    let g = w.record.give_up.clone().expect("gives up");
    assert_eq!(g.reason, GiveUpReason::Deadline);
    assert_eq!(g.elapsed, Duration::from_secs(2));
    assert_eq!(w.now, t0 + Duration::from_secs(2));
    assert!(w.record.starts.len() <= MAX_ATTEMPTS_IN_FLIGHT + 2);
}

#[test]
fn staggered_attempts_recover_within_one_interval_after_the_path_heals() {
    // A path that swallows SYNs for 10 s, then works: the first attempt
    // after it heals starts within one (capped) interval, and succeeds.
    let t0 = Instant::now();
    let mut p = policy(1000, 120);
    p.max_delay = Duration::from_millis(500);
    let mut core = ReconnectCore::new(
        p.clone(),
        Pacing::unmonitored(&p, Duration::from_secs(3)),
        t0,
        9,
    );
    core.handle_path(t0, Ok(()));
    let heal = t0 + Duration::from_secs(10);
    let mut w = World::new(
        core,
        t0,
        vec![
            (Duration::from_secs(10), Peer::Blackhole),
            (Duration::from_secs(600), Peer::Healthy),
        ],
    );
    w.run(t0 + Duration::from_secs(30), Vec::new());
    assert_eq!(w.record.recoveries, 1);
    let first_after = w
        .record
        .starts
        .iter()
        .find(|t| **t >= heal)
        .expect("an attempt after healing");
    assert!(
        *first_after - heal <= Duration::from_millis(500),
        "{:?}",
        *first_after - heal
    );
}

#[test]
fn budget_empties_on_failures_only_and_names_itself() {
    let t0 = Instant::now();
    let mut p = policy(1000, 600);
    p.budget = RetryBudget {
        capacity: 5,
        refill_every: Duration::from_secs(3600),
    };
    let core = ReconnectCore::new(
        p.clone(),
        Pacing::unmonitored(&p, Duration::from_secs(3)),
        t0,
        2,
    );
    let mut w = World::new(core, t0, vec![(Duration::from_secs(600), Peer::Refuse)]);
    w.run(t0 + Duration::from_secs(600), Vec::new());
    let g = w.record.give_up.clone().expect("gives up");
    assert_eq!(g.reason, GiveUpReason::Budget);
    assert_eq!(g.attempts, 5);
    assert!(matches!(
        g.last_causes.last(),
        Some(AttemptFailure::Connect {
            kind: std::io::ErrorKind::ConnectionRefused,
            ..
        })
    ));
}

#[test]
fn no_attempt_while_the_monitor_sees_no_route_and_one_at_once_when_it_does() {
    let t0 = Instant::now();
    let p = policy(50, 120);
    let mut core = ReconnectCore::new(p, Pacing::gated(gate()), t0, 3);
    core.handle_path(t0, Err(Blocked::NoRoute));
    let mut w = World::new(core, t0, vec![(Duration::from_secs(600), Peer::Healthy)]);
    let up = t0 + Duration::from_secs(7);
    w.run(
        t0 + Duration::from_secs(20),
        vec![(up, PathEvent::Ready(true))],
    );
    assert_eq!(w.record.starts, vec![up]);
    assert_eq!(w.record.recoveries, 1);
}

#[test]
fn a_path_change_drops_the_transport_and_reconnects_at_once() {
    let t0 = Instant::now();
    let p = policy(50, 120);
    let mut core = ReconnectCore::new(p, Pacing::gated(gate()), t0, 4);
    core.handle_path(t0, Ok(()));
    let mut w = World::new(core, t0, vec![(Duration::from_secs(600), Peer::Healthy)]);
    let moved = t0 + Duration::from_secs(5);
    w.run(
        t0 + Duration::from_secs(10),
        vec![(moved, PathEvent::Changed)],
    );
    assert_eq!(w.record.starts, vec![t0, moved]);
    assert_eq!(w.record.recoveries, 2);
    assert!(w.core.is_connected());
}

#[test]
fn attempts_are_given_at_least_the_measured_round_trip_timeout() {
    let t0 = Instant::now();
    let p = Policy {
        max_attempts: Some(1),
        ..policy(1, 60)
    };
    let deadline_of_first = |rto: Option<Duration>| {
        let mut core = ReconnectCore::new(
            p.clone(),
            Pacing::unmonitored(&p, Duration::from_secs(1)),
            t0,
            1,
        );
        core.handle_round_trip(rto);
        let Some(Action::Connect(_)) = core.poll_action(t0) else {
            panic!("no first attempt");
        };
        // The attempt is cancelled when its timeout passes, not before.
        loop {
            let t = core.poll_timeout().expect("a deadline");
            core.handle_timeout(t);
            if let Some(Action::Cancel(_)) = core.poll_action(t) {
                return t - t0;
            }
        }
    };
    assert_eq!(deadline_of_first(None), Duration::from_secs(1));
    // A path measured at 2.3 s: a 1 s connect timeout would cancel every
    // attempt before its SYN-ACK could come back.
    assert_eq!(
        deadline_of_first(Some(Duration::from_millis(2300))),
        Duration::from_millis(2300)
    );
    // A fast path keeps the configured timeout.
    assert_eq!(
        deadline_of_first(Some(Duration::from_millis(30))),
        Duration::from_secs(1)
    );
}
