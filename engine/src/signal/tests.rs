//! Two [`SignalCore`] endpoints over modelled brokers, on a virtual clock:
//! random crash, freeze, block and restart schedules, late resubscription,
//! flapping. Deterministic: everything is driven from the test's inputs.

use super::core::{SignalConfig, SignalCore};
use super::envelope::MessageId;
use proptest::prelude::*;
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};
use std::collections::HashMap;
use std::time::{Duration, Instant};

/// Time step of the model (ms).
const STEP: u64 = 5;
/// How long a peer takes to notice a frozen or blocked broker: MQTT's
/// 1.5 × keepalive, at a 1 s keepalive.
const KEEPALIVE_DETECT: u64 = 1_500;
/// One-way latency through a broker.
const LATENCY: u64 = 10;
/// Unix ms at the start of the model.
const T0_MS: u64 = 1_000_000;

const SENDER: usize = 0;
const RECEIVER: usize = 1;
const NAMES: [&str; 2] = ["alice", "bob"];

/// What a broker is doing.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Fault {
    /// Working.
    Up,
    /// Process gone: its connections close at once; it restarts empty.
    Crashed,
    /// SIGSTOP: connections look alive until the keepalive says otherwise;
    /// what it was sent is held and delivered when it thaws.
    Frozen,
    /// Its port is dropped by a firewall: what goes through is lost and the
    /// connections die by keepalive.
    Blocked,
}

/// One peer's connection to one broker.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Conn {
    /// Confirmed and subscribed.
    Live,
    /// Lost: try again at this time.
    Down { retry_at: u64 },
}

struct Broker {
    fault: Fault,
    /// When the current freeze or block began.
    since: u64,
    /// (due, recipient peer, bytes) — held while frozen.
    in_flight: Vec<(u64, usize, Vec<u8>)>,
}

/// Two peers, `n` brokers, a virtual clock.
pub struct World {
    pub now: u64,
    brokers: Vec<Broker>,
    peers: [SignalCore; 2],
    conns: [Vec<Conn>; 2],
    rng: SmallRng,
    /// Longest a receiver waits to reconnect to a broker (late
    /// resubscription).
    max_resubscribe: u64,
    pub sent: Vec<MessageId>,
    pub sent_at: HashMap<MessageId, u64>,
    pub got: Vec<MessageId>,
    pub latency: Vec<u64>,
    pub peak_recent: usize,
    pub peak_backlog: usize,
    pub peak_acks: usize,
}

impl World {
    pub fn new(n: usize, config: SignalConfig, seed: u64, max_resubscribe: u64) -> World {
        let mut peers = [
            SignalCore::new(NAMES[0], 1, n, config),
            SignalCore::new(NAMES[1], 2, n, config),
        ];
        for p in &mut peers {
            for b in 0..n {
                p.set_healthy(b, true, T0_MS);
            }
        }
        World {
            now: 0,
            brokers: (0..n)
                .map(|_| Broker {
                    fault: Fault::Up,
                    since: 0,
                    in_flight: Vec::new(),
                })
                .collect(),
            peers,
            conns: [vec![Conn::Live; n], vec![Conn::Live; n]],
            rng: SmallRng::seed_from_u64(seed),
            max_resubscribe,
            sent: Vec::new(),
            sent_at: HashMap::new(),
            got: Vec::new(),
            latency: Vec::new(),
            peak_recent: 0,
            peak_backlog: 0,
            peak_acks: 0,
        }
    }

    fn ms(&self) -> u64 {
        T0_MS + self.now
    }

    /// Whether both peers are subscribed on a working broker `b`.
    pub fn carries(&self, b: usize) -> bool {
        self.brokers[b].fault == Fault::Up && self.conns.iter().all(|c| c[b] == Conn::Live)
    }

    fn lose(&mut self, peer: usize, b: usize) {
        if self.conns[peer][b] == Conn::Live {
            let delay = if peer == RECEIVER {
                self.rng.random_range(0..=self.max_resubscribe)
            } else {
                self.rng.random_range(50..=300)
            };
            self.conns[peer][b] = Conn::Down {
                retry_at: self.now + delay,
            };
            let ms = self.ms();
            self.peers[peer].set_healthy(b, false, ms);
        }
    }

    /// Puts broker `b` into `fault` (healing whatever it had first).
    pub fn set_fault(&mut self, b: usize, fault: Fault) {
        let was = self.brokers[b].fault;
        if was == fault {
            return;
        }
        // Heal.
        match was {
            Fault::Crashed => self.brokers[b].in_flight.clear(),
            Fault::Frozen => {
                // Thawed: what it held goes out now to who is still there.
                let now = self.now;
                for item in &mut self.brokers[b].in_flight {
                    item.0 = item.0.max(now);
                }
            }
            Fault::Blocked | Fault::Up => {}
        }
        self.brokers[b].fault = fault;
        self.brokers[b].since = self.now;
        if fault == Fault::Crashed {
            self.brokers[b].in_flight.clear();
            for p in 0..2 {
                self.lose(p, b);
            }
        }
    }

    /// One step: faults noticed, reconnects, sends, publishes, deliveries,
    /// timers.
    pub fn step(&mut self, send: bool) {
        self.now += STEP;
        let ms = self.ms();
        let n = self.brokers.len();
        for b in 0..n {
            let stale = matches!(self.brokers[b].fault, Fault::Frozen | Fault::Blocked)
                && self.now >= self.brokers[b].since + KEEPALIVE_DETECT;
            for p in 0..2 {
                match self.conns[p][b] {
                    Conn::Live if stale => self.lose(p, b),
                    Conn::Down { retry_at } if self.now >= retry_at => {
                        if self.brokers[b].fault == Fault::Up {
                            self.conns[p][b] = Conn::Live;
                            self.peers[p].set_healthy(b, true, ms);
                        } else {
                            self.conns[p][b] = Conn::Down {
                                retry_at: self.now + 200,
                            };
                        }
                    }
                    _ => {}
                }
            }
        }
        if send {
            let n = self.sent.len() as u64;
            let id = self.peers[SENDER]
                .send(NAMES[RECEIVER], &n.to_be_bytes(), ms)
                .unwrap();
            self.sent.push(id);
            self.sent_at.insert(id, self.now);
        }
        for p in 0..2 {
            if self.peers[p].poll_timeout(ms).is_some_and(|t| t <= ms) {
                self.peers[p].handle_timeout(ms);
            }
        }
        for p in 0..2 {
            for b in 0..n {
                if self.conns[p][b] != Conn::Live {
                    continue;
                }
                while let Some(publish) = self.peers[p].poll_publish(b, ms) {
                    let to = NAMES.iter().position(|n| *n == publish.recipient).unwrap();
                    let broker = &mut self.brokers[b];
                    match broker.fault {
                        // No subscriber there: MQTT drops it.
                        Fault::Up if self.conns[to][b] != Conn::Live => {}
                        Fault::Up | Fault::Frozen => {
                            broker
                                .in_flight
                                .push((self.now + LATENCY, to, publish.bytes))
                        }
                        Fault::Crashed | Fault::Blocked => {}
                    }
                }
            }
        }
        let t0 = Instant::now();
        for b in 0..n {
            if self.brokers[b].fault != Fault::Up {
                continue;
            }
            let now = self.now;
            let (due, later): (Vec<_>, Vec<_>) = self.brokers[b]
                .in_flight
                .drain(..)
                .partition(|(at, _, _)| *at <= now);
            self.brokers[b].in_flight = later;
            for (_, to, bytes) in due {
                if self.conns[to][b] != Conn::Live {
                    continue;
                }
                let at = t0 + Duration::from_millis(self.now);
                if let Ok(Some(d)) = self.peers[to].handle_incoming(b, &bytes, at, ms) {
                    assert_eq!(to, RECEIVER, "only the receiver gets messages");
                    self.latency.push(self.now - self.sent_at[&d.id]);
                    self.got.push(d.id);
                }
            }
        }
        let alice = &self.peers[SENDER];
        self.peak_recent = self.peak_recent.max(alice.recent_len());
        for b in 0..n {
            self.peak_backlog = self.peak_backlog.max(alice.backlog(b));
            self.peak_acks = self.peak_acks.max(self.peers[RECEIVER].pending_acks(b));
        }
    }

    /// Heals every broker and runs `ms` more without sending.
    pub fn settle(&mut self, ms: u64) {
        for b in 0..self.brokers.len() {
            self.set_fault(b, Fault::Up);
        }
        for _ in 0..ms / STEP {
            self.step(false);
        }
    }

    /// Exactly once: every message sent delivered, none twice.
    pub fn check_exactly_once(&self) -> Result<(), String> {
        let mut unique = self.got.clone();
        unique.sort();
        unique.dedup();
        if unique.len() != self.got.len() {
            return Err(format!(
                "{} messages delivered twice",
                self.got.len() - unique.len()
            ));
        }
        let mut want = self.sent.clone();
        want.sort();
        if unique != want {
            let lost = want.iter().filter(|id| !unique.contains(id)).count();
            return Err(format!("{lost} of {} messages lost", want.len()));
        }
        Ok(())
    }

    pub fn sender(&self) -> &SignalCore {
        &self.peers[SENDER]
    }
}

/// One epoch of a fault schedule: how long it lasts, which broker is kept
/// working (among those that carry messages both ways when it starts), and
/// what each other broker does.
fn epoch() -> impl Strategy<Value = (u64, usize, [u8; 3])> {
    (200u64..2_000, 0usize..3, any::<[u8; 3]>())
}

fn fault_of(x: u8) -> Fault {
    match x % 5 {
        0 | 1 => Fault::Up,
        2 => Fault::Crashed,
        3 => Fault::Frozen,
        _ => Fault::Blocked,
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 96, ..ProptestConfig::default() })]

    /// Random crash / freeze / block / restart schedules over three
    /// brokers, receivers resubscribing up to 2 s late, any fanout, with
    /// at least one broker carrying messages both ways at any time: every
    /// message arrives exactly once, and every queue stays within its
    /// bound. (With a fanout below the broker count and no end-to-end
    /// acknowledgement, a message fanned out to a frozen broker alone is
    /// lost: this is what the acknowledgements are for.)
    #[test]
    fn random_broker_faults_never_lose_or_duplicate(
        schedule in proptest::collection::vec(epoch(), 1..10),
        fanout in 1usize..=3,
        seed in any::<u64>(),
    ) {
        let config = SignalConfig { fanout, max_recent: 4096, ..SignalConfig::default() };
        let mut w = World::new(3, config, seed, 2_000);
        for (len, anchor, faults) in schedule {
            // The kept broker: one that carries messages both ways now (the
            // previous epoch's kept broker does, so there is one).
            let carrying: Vec<usize> = (0..3).filter(|&b| w.carries(b)).collect();
            prop_assert!(!carrying.is_empty());
            let anchor = carrying[anchor % carrying.len()];
            for (b, fault) in faults.into_iter().enumerate() {
                let f = if b == anchor { Fault::Up } else { fault_of(fault) };
                w.set_fault(b, f);
            }
            for _ in 0..len / STEP {
                // One message every 10 ms.
                let send = w.now % 10 == 0;
                w.step(send);
            }
        }
        w.settle(20_000);
        prop_assert_eq!(w.check_exactly_once(), Ok(()));
        prop_assert!(w.peak_recent <= 4096);
        prop_assert!(w.peak_acks <= config.max_pending_acks);
        prop_assert_eq!(w.sender().refused(), 0);
        // Acknowledged messages are swept: nothing is held at the end.
        prop_assert_eq!(w.sender().unacked(T0_MS + w.now), 0);
    }
}

/// A broker that crashes and restarts every 200 ms for 30 s of virtual
/// time while messages flow at 200/s, another that stays up: every queue
/// stays within its bound (asserted on lengths) and the receiver gets each
/// message once.
#[test]
fn a_flapping_broker_keeps_every_queue_bounded_and_loses_nothing() {
    let config = SignalConfig {
        max_recent: 256,
        max_pending_acks: 64,
        ..SignalConfig::default()
    };
    let mut w = World::new(2, config, 7, 100);
    for step in 0..6_000u64 {
        if step % 20 == 0 {
            let down = (step / 20) % 2 == 1;
            w.set_fault(0, if down { Fault::Crashed } else { Fault::Up });
        }
        w.step(true);
    }
    w.settle(5_000);
    w.check_exactly_once().unwrap();
    assert_eq!(w.sent.len(), 6_000);
    assert!(w.peak_recent <= 256, "recent {}", w.peak_recent);
    assert!(w.peak_backlog <= 256, "backlog {}", w.peak_backlog);
    assert!(w.peak_acks <= 64, "acks {}", w.peak_acks);
    assert_eq!(w.sender().refused(), 0);
}

/// A frozen broker (its connections look alive for 1.5 s) with a fanout of
/// one: the sender notices it within one ack timeout and resends through
/// the other broker, so no message waits for the keepalive, let alone for
/// the broker to thaw.
#[test]
fn a_frozen_broker_is_noticed_within_the_ack_timeout() {
    let config = SignalConfig {
        fanout: 1,
        ..SignalConfig::default()
    };
    let mut w = World::new(2, config, 3, 0);
    // Warm up: round trips measured.
    for _ in 0..200 {
        w.step(true);
    }
    let timeout = w.sender().ack_timeout("bob");
    assert!(timeout < Duration::from_millis(200), "{timeout:?}");
    w.set_fault(0, Fault::Frozen);
    let frozen_at = w.now;
    let mut noticed = None;
    for _ in 0..1_000 {
        w.step(true);
        if noticed.is_none() && w.sender().is_suspect(0, "bob", T0_MS + w.now) {
            noticed = Some(w.now - frozen_at);
        }
    }
    let noticed = noticed.expect("the frozen broker was never suspected");
    // The first message through it goes within a step; it is suspect one
    // ack timeout later.
    assert!(
        noticed <= timeout.as_millis() as u64 + 2 * STEP,
        "noticed after {noticed} ms (ack timeout {timeout:?})"
    );
    w.settle(5_000);
    w.check_exactly_once().unwrap();
    let worst = w.latency.iter().max().copied().unwrap_or(0);
    assert!(
        worst < KEEPALIVE_DETECT,
        "a message waited {worst} ms: as long as the keepalive"
    );
}
