//! The signaling receive path (`engine/src/signal/core.rs`): two endpoints
//! over a few brokers that lose, duplicate and replay publishes, and a
//! hostile publisher on the topic (garbage, and envelopes forged with any
//! field, unsigned or signed with a key that is not the group's), all at
//! arbitrary times. Invariants checked after every step, on both ends:
//!
//! * no panic;
//! * the stated bounds: the outbox (`max_recent` messages and
//!   `max_recent_bytes`), acknowledgements waiting per broker
//!   (`max_pending_acks`), the duplicate filter (`dedup.max_senders`);
//! * with a group key, or while nobody forged anything: every message
//!   delivered is one the other end sent (same id, sender name, payload),
//!   and none is delivered twice, whatever the brokers duplicate or replay.

use crate::enc::{Enc, Encode};
use arbitrary::{Arbitrary, Unstructured};
use netmend::signal::{
    DedupConfig, Envelope, Kind, MessageId, SignalConfig, SignalCore, SignalKey,
};
use std::collections::{HashMap, HashSet, VecDeque};
use std::time::{Duration, Instant};

/// The group key of the keyed runs (the seeds sign with it).
pub const GROUP_KEY: [u8; 32] = [0x4b; 32];
/// A key that is not the group's.
const ATTACKER_KEY: [u8; 32] = [0xa7; 32];
/// Unix ms at the start of a run.
pub const EPOCH_MS: u64 = 1_700_000_000_000;
const NAMES: [&str; 2] = ["alice", "bob"];
const SENDERS: [u64; 2] = [0xa11ce, 0xb0b];
/// Publishes a broker holds in flight at most (the test's bound).
const IN_FLIGHT: usize = 64;
const REMEMBERED: usize = 64;
const MAX_OPS: usize = 256;

#[derive(Arbitrary, Clone, Debug)]
struct Tunables {
    keyed: bool,
    brokers: u8,
    fanout: u8,
    ttl_s: u8,
    tolerance_s: u8,
    max_envelope: u16,
    max_recent: u8,
    max_recent_bytes: u16,
    max_pending_acks: u8,
    max_senders: u8,
    window: u8,
    max_jump: u16,
    ack_timeout_ms: u16,
    max_peers: u8,
}

impl Tunables {
    fn config(&self) -> SignalConfig {
        SignalConfig {
            fanout: usize::from(self.fanout % 4),
            ttl: Duration::from_secs(1 + u64::from(self.ttl_s % 60)),
            delay_tolerance: Duration::from_secs(u64::from(self.tolerance_s % 10)),
            max_envelope: 128 + usize::from(self.max_envelope),
            max_recent: usize::from(self.max_recent % 32),
            max_recent_bytes: usize::from(self.max_recent_bytes) * 4,
            max_delivered: 16,
            dedup: DedupConfig {
                window: 64 * (1 + u64::from(self.window % 4)),
                // Two at least: an endpoint hears its peer and itself.
                max_senders: 2 + usize::from(self.max_senders % 8),
                horizon: Duration::ZERO, // set by the core from ttl + 2 tolerances
                max_jump: u64::from(self.max_jump),
            },
            key: self.keyed.then(|| SignalKey::from_bytes(GROUP_KEY)),
            ack_timeout: Duration::from_millis(1 + u64::from(self.ack_timeout_ms)),
            max_peers: usize::from(self.max_peers % 8),
            max_pending_acks: usize::from(self.max_pending_acks % 16),
        }
    }
}

/// An endpoint name: one of the two, or another.
#[derive(Arbitrary, Clone, Debug)]
enum Name {
    Alice,
    Bob,
    Other(u8),
}

impl Name {
    fn text(&self) -> String {
        match self {
            Name::Alice => NAMES[0].into(),
            Name::Bob => NAMES[1].into(),
            Name::Other(n) => format!("peer{n}"),
        }
    }
}

#[derive(Arbitrary, Clone, Debug)]
enum Signer {
    None,
    Attacker,
}

#[derive(Arbitrary, Clone, Debug)]
enum Sender {
    Alice,
    Bob,
    Any(u64),
}

#[derive(Arbitrary, Clone, Debug)]
struct Forged {
    ack: bool,
    sender: Sender,
    seq: u64,
    /// Send time relative to now, seconds.
    sent_at_s: i16,
    ttl_ms: u32,
    age_ms: u32,
    recipient: Name,
    from: Name,
    payload: Vec<u8>,
    signer: Signer,
}

#[derive(Arbitrary, Clone, Debug)]
enum Op {
    Send {
        bob: bool,
        to: Name,
        len: u8,
    },
    Health {
        bob: bool,
        broker: u8,
        up: bool,
    },
    /// A broker's task takes one publish from an endpoint.
    Publish {
        bob: bool,
        broker: u8,
    },
    /// A broker delivers its oldest publish to its recipient.
    Deliver {
        broker: u8,
    },
    /// ... delivers it and keeps it (it will deliver it again).
    Duplicate {
        broker: u8,
    },
    Lose {
        broker: u8,
    },
    /// A publish seen earlier is delivered again, through any broker.
    Replay {
        index: u8,
        broker: u8,
    },
    Garbage {
        bob: bool,
        broker: u16,
        bytes: Vec<u8>,
    },
    Forge {
        broker: u8,
        envelope: Forged,
    },
    Wait {
        ms: u16,
    },
    WaitLong {
        secs: u8,
    },
    Timeout {
        bob: bool,
    },
}

struct World {
    config: SignalConfig,
    ends: [SignalCore; 2],
    brokers: usize,
    in_flight: Vec<VecDeque<(String, Vec<u8>)>>,
    seen: VecDeque<(String, Vec<u8>)>,
    t0: Instant,
    elapsed_ms: u64,
    /// What each end sent: (sender, seq) → payload.
    sent: HashMap<MessageId, (usize, Vec<u8>)>,
    delivered: [HashSet<MessageId>; 2],
    forged: bool,
}

impl World {
    fn now(&self) -> (Instant, u64) {
        (
            self.t0 + Duration::from_millis(self.elapsed_ms),
            EPOCH_MS + self.elapsed_ms,
        )
    }

    fn broker(&self, b: u8) -> usize {
        usize::from(b) % self.brokers
    }

    fn deliver(&mut self, broker: usize, recipient: &str, bytes: &[u8]) {
        let Some(to) = NAMES.iter().position(|n| *n == recipient) else {
            return;
        };
        let (now, now_ms) = self.now();
        let got = self.ends[to].handle_incoming(broker, bytes, now, now_ms);
        if self.seen.len() == REMEMBERED {
            self.seen.pop_front();
        }
        self.seen.push_back((recipient.to_string(), bytes.to_vec()));
        let Ok(Some(d)) = got else { return };
        assert_eq!(d.via, broker);
        if self.config.key.is_some() || !self.forged {
            let Some((from, payload)) = self.sent.get(&d.id) else {
                panic!("{} delivered {:?}, which nobody sent", NAMES[to], d.id);
            };
            assert_eq!(d.from, NAMES[*from]);
            assert_eq!(&d.payload, payload);
            assert!(
                self.delivered[to].insert(d.id),
                "{:?} delivered twice to {}",
                d.id,
                NAMES[to]
            );
        }
    }

    fn forge(&mut self, broker: usize, f: Forged) {
        self.forged = true;
        let (_, now_ms) = self.now();
        let sender = match f.sender {
            Sender::Alice => SENDERS[0],
            Sender::Bob => SENDERS[1],
            Sender::Any(s) => s,
        };
        let sent_at_ms = now_ms.saturating_add_signed(i64::from(f.sent_at_s) * 1000);
        let recipient = f.recipient.text();
        let envelope = Envelope {
            kind: if f.ack { Kind::Ack } else { Kind::Message },
            id: MessageId { sender, seq: f.seq },
            sent_at_ms,
            ttl_ms: f.ttl_ms,
            age_ms: f.age_ms,
            recipient: recipient.clone(),
            from: f.from.text(),
            payload: f.payload,
        };
        let key = match f.signer {
            Signer::None => None,
            Signer::Attacker => Some(SignalKey::from_bytes(ATTACKER_KEY)),
        };
        if let Ok(bytes) = envelope.encode_with(self.config.max_envelope, key.as_ref()) {
            self.deliver(broker, &recipient, &bytes);
        }
    }

    fn check(&self) {
        let c = &self.config;
        let (_, now_ms) = self.now();
        for end in &self.ends {
            assert!(end.recent_len() <= c.max_recent.max(1));
            assert!(end.recent_bytes() <= c.max_recent_bytes);
            assert!(end.unacked(now_ms) <= end.recent_len());
            for b in 0..self.brokers {
                assert!(end.pending_acks(b) <= c.max_pending_acks.max(1));
                assert!(end.backlog(b) <= end.recent_len());
            }
            assert!(end.dedup().senders() <= c.dedup.max_senders.max(1));
        }
    }

    fn step(&mut self, op: Op) {
        let (now, now_ms) = self.now();
        match op {
            Op::Send { bob, to, len } => {
                let from = usize::from(bob);
                let payload = vec![len; usize::from(len)];
                if let Ok(id) = self.ends[from].send(&to.text(), &payload, now_ms) {
                    assert_eq!(id.sender, SENDERS[from]);
                    assert!(
                        self.sent.insert(id, (from, payload)).is_none(),
                        "{id:?} used twice"
                    );
                }
            }
            Op::Health { bob, broker, up } => {
                let b = self.broker(broker);
                self.ends[usize::from(bob)].set_healthy(b, up, now_ms);
            }
            Op::Publish { bob, broker } => {
                let b = self.broker(broker);
                if let Some(p) = self.ends[usize::from(bob)].poll_publish(b, now_ms) {
                    assert_eq!(p.broker, b);
                    let q = &mut self.in_flight[b];
                    if q.len() == IN_FLIGHT {
                        q.pop_front();
                    }
                    q.push_back((p.recipient, p.bytes));
                }
            }
            Op::Deliver { broker } => {
                let b = self.broker(broker);
                if let Some((to, bytes)) = self.in_flight[b].pop_front() {
                    self.deliver(b, &to, &bytes);
                }
            }
            Op::Duplicate { broker } => {
                let b = self.broker(broker);
                if let Some((to, bytes)) = self.in_flight[b].front().cloned() {
                    self.deliver(b, &to, &bytes);
                }
            }
            Op::Lose { broker } => {
                let b = self.broker(broker);
                self.in_flight[b].pop_front();
            }
            Op::Replay { index, broker } => {
                let b = self.broker(broker);
                if let Some((to, bytes)) = self.seen.get(usize::from(index)).cloned() {
                    self.deliver(b, &to, &bytes);
                }
            }
            Op::Garbage { bob, broker, bytes } => {
                self.forged = true;
                // Any broker index, also one the endpoint does not have.
                let got = self.ends[usize::from(bob)].handle_incoming(
                    usize::from(broker),
                    &bytes,
                    now,
                    now_ms,
                );
                if self.config.key.is_some() {
                    assert!(
                        !matches!(got, Ok(Some(_))),
                        "garbage delivered under a group key"
                    );
                }
            }
            Op::Forge { broker, envelope } => {
                let b = self.broker(broker);
                self.forge(b, envelope);
            }
            Op::Wait { ms } => self.elapsed_ms += u64::from(ms),
            Op::WaitLong { secs } => self.elapsed_ms += u64::from(secs) * 1000,
            Op::Timeout { bob } => {
                let end = &mut self.ends[usize::from(bob)];
                let woken = end.handle_timeout(now_ms);
                assert_eq!(woken >> self.brokers, 0, "a broker it does not have");
            }
        }
        self.check();
    }
}

/// What an input says: the tunables and up to [`MAX_OPS`] steps.
fn script(data: &[u8]) -> Option<(Tunables, Vec<Op>)> {
    let mut u = Unstructured::new(data);
    let tunables = Tunables::arbitrary(&mut u).ok()?;
    let mut ops = Vec::new();
    while ops.len() < MAX_OPS && !u.is_empty() {
        let Ok(op) = Op::arbitrary(&mut u) else { break };
        ops.push(op);
    }
    Some((tunables, ops))
}

/// The input is the tunables, then a script of steps.
pub fn signal(data: &[u8]) {
    let Some((tunables, ops)) = script(data) else {
        return;
    };
    let config = tunables.config();
    let brokers = 1 + usize::from(tunables.brokers % 4);
    let mut world = World {
        config,
        ends: [0, 1].map(|i| SignalCore::new(NAMES[i], SENDERS[i], brokers, config)),
        brokers,
        in_flight: vec![VecDeque::new(); brokers],
        seen: VecDeque::new(),
        t0: Instant::now(),
        elapsed_ms: 0,
        sent: HashMap::new(),
        delivered: [HashSet::new(), HashSet::new()],
        forged: false,
    };
    for op in ops {
        world.step(op);
    }
}

// The seeds' encoding of scripts (see `enc.rs`): field by field, in the
// order of the declarations above.

impl Encode for Tunables {
    fn encode(&self, e: &mut Enc) {
        e.put(&self.keyed)
            .put(&self.brokers)
            .put(&self.fanout)
            .put(&self.ttl_s)
            .put(&self.tolerance_s)
            .put(&self.max_envelope)
            .put(&self.max_recent)
            .put(&self.max_recent_bytes)
            .put(&self.max_pending_acks)
            .put(&self.max_senders)
            .put(&self.window)
            .put(&self.max_jump)
            .put(&self.ack_timeout_ms)
            .put(&self.max_peers);
    }
}

impl Encode for Name {
    fn encode(&self, e: &mut Enc) {
        match self {
            Name::Alice => e.variant(0, 3),
            Name::Bob => e.variant(1, 3),
            Name::Other(n) => {
                e.variant(2, 3);
                e.put(n);
            }
        }
    }
}

impl Encode for Signer {
    fn encode(&self, e: &mut Enc) {
        match self {
            Signer::None => e.variant(0, 2),
            Signer::Attacker => e.variant(1, 2),
        }
    }
}

impl Encode for Sender {
    fn encode(&self, e: &mut Enc) {
        match self {
            Sender::Alice => e.variant(0, 3),
            Sender::Bob => e.variant(1, 3),
            Sender::Any(s) => {
                e.variant(2, 3);
                e.put(s);
            }
        }
    }
}

impl Encode for Forged {
    fn encode(&self, e: &mut Enc) {
        e.put(&self.ack)
            .put(&self.sender)
            .put(&self.seq)
            .put(&self.sent_at_s)
            .put(&self.ttl_ms)
            .put(&self.age_ms)
            .put(&self.recipient)
            .put(&self.from)
            .put(&self.payload)
            .put(&self.signer);
    }
}

impl Encode for Op {
    fn encode(&self, e: &mut Enc) {
        const N: u32 = 12;
        match self {
            Op::Send { bob, to, len } => {
                e.variant(0, N);
                e.put(bob).put(to).put(len);
            }
            Op::Health { bob, broker, up } => {
                e.variant(1, N);
                e.put(bob).put(broker).put(up);
            }
            Op::Publish { bob, broker } => {
                e.variant(2, N);
                e.put(bob).put(broker);
            }
            Op::Deliver { broker } => {
                e.variant(3, N);
                e.put(broker);
            }
            Op::Duplicate { broker } => {
                e.variant(4, N);
                e.put(broker);
            }
            Op::Lose { broker } => {
                e.variant(5, N);
                e.put(broker);
            }
            Op::Replay { index, broker } => {
                e.variant(6, N);
                e.put(index).put(broker);
            }
            Op::Garbage { bob, broker, bytes } => {
                e.variant(7, N);
                e.put(bob).put(broker).put(bytes);
            }
            Op::Forge { broker, envelope } => {
                e.variant(8, N);
                e.put(broker).put(envelope);
            }
            Op::Wait { ms } => {
                e.variant(9, N);
                e.put(ms);
            }
            Op::WaitLong { secs } => {
                e.variant(10, N);
                e.put(secs);
            }
            Op::Timeout { bob } => {
                e.variant(11, N);
                e.put(bob);
            }
        }
    }
}

/// Seed scripts: messages both ways over two brokers with acknowledgements,
/// a broker lost and resends, duplicates and replays, and forgeries; keyed
/// and not.
pub(crate) fn seeds() -> Vec<(&'static str, Vec<u8>)> {
    use Op::*;
    let tunables = |keyed: bool| Tunables {
        keyed,
        brokers: 1,
        fanout: 2,
        ttl_s: 29,
        tolerance_s: 5,
        max_envelope: 4096,
        max_recent: 8,
        max_recent_bytes: 2048,
        max_pending_acks: 4,
        max_senders: 2,
        window: 0,
        max_jump: 1000,
        ack_timeout_ms: 500,
        max_peers: 4,
    };
    let mut up = Vec::new();
    for bob in [false, true] {
        for broker in [0, 1] {
            up.push(Health {
                bob,
                broker,
                up: true,
            });
        }
    }
    let round = |bob: bool| {
        vec![
            Send {
                bob,
                to: if bob { Name::Alice } else { Name::Bob },
                len: 20,
            },
            Publish { bob, broker: 0 },
            Publish { bob, broker: 1 },
            Deliver { broker: 0 },
            Duplicate { broker: 1 },
            Deliver { broker: 1 },
            Publish {
                bob: !bob,
                broker: 0,
            },
            Deliver { broker: 0 },
        ]
    };
    let mut exchange = up.clone();
    exchange.extend(round(false));
    exchange.extend(round(true));
    exchange.extend([
        Replay {
            index: 0,
            broker: 1,
        },
        Wait { ms: 100 },
        Timeout { bob: false },
    ]);
    let mut outage = up.clone();
    outage.extend([
        Send {
            bob: false,
            to: Name::Bob,
            len: 8,
        },
        Publish {
            bob: false,
            broker: 0,
        },
        Lose { broker: 0 },
        Health {
            bob: false,
            broker: 0,
            up: false,
        },
        Wait { ms: 600 },
        Timeout { bob: false },
        Publish {
            bob: false,
            broker: 1,
        },
        Deliver { broker: 1 },
        Publish {
            bob: true,
            broker: 1,
        },
        Deliver { broker: 1 },
        WaitLong { secs: 40 },
        Timeout { bob: false },
        Send {
            bob: false,
            to: Name::Bob,
            len: 8,
        },
    ]);
    let forged = |signer: Signer, ack: bool| Forge {
        broker: 0,
        envelope: Forged {
            ack,
            sender: if ack { Sender::Bob } else { Sender::Alice },
            seq: if ack { 1 } else { 2 },
            sent_at_s: 0,
            ttl_ms: 10_000,
            age_ms: 0,
            recipient: Name::Bob,
            from: Name::Alice,
            payload: if ack {
                1u64.to_be_bytes().to_vec()
            } else {
                b"forged".to_vec()
            },
            signer,
        },
    };
    let mut hostile = up;
    hostile.extend(round(false));
    hostile.extend([
        forged(Signer::None, false),
        forged(Signer::Attacker, false),
        forged(Signer::None, true),
        Forge {
            broker: 1,
            envelope: Forged {
                ack: false,
                sender: Sender::Any(u64::MAX),
                seq: u64::MAX,
                sent_at_s: 3600,
                ttl_ms: u32::MAX,
                age_ms: u32::MAX,
                recipient: Name::Other(1),
                from: Name::Other(2),
                payload: Vec::new(),
                signer: Signer::None,
            },
        },
        Garbage {
            bob: true,
            broker: 999,
            bytes: b"NMS\x05garbage".to_vec(),
        },
    ]);
    let scripts = [
        ("exchange", tunables(false), exchange.clone()),
        ("exchange-keyed", tunables(true), exchange),
        ("broker-outage", tunables(true), outage),
        ("forgeries", tunables(false), hostile.clone()),
        ("forgeries-keyed", tunables(true), hostile),
    ];
    scripts
        .into_iter()
        .map(|(name, tunables, ops)| {
            let mut e = Enc::default();
            e.put(&tunables);
            ops.iter().for_each(|op| op.encode(&mut e));
            // The encoding reads back as the script.
            let (t, read) = script(&e.0).expect("a script");
            assert_eq!(format!("{t:?}"), format!("{tunables:?}"), "{name}");
            assert_eq!(format!("{read:?}"), format!("{ops:?}"), "{name}");
            (name, e.0)
        })
        .collect()
}
