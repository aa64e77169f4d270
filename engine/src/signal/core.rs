//! The sans-IO signaling endpoint: messages in and out, broker health in,
//! publishes out. No socket, no clock: the caller passes the time.
//!
//! A broker is healthy only while its connection is confirmed (the MQTT
//! CONNACK arrived and nothing has failed since), never merely because it
//! has not errored yet. Every message goes to up to `fanout` healthy
//! brokers, and the endpoint keeps its recent messages (bounded, within
//! their TTL): whenever a broker's connection is confirmed again, they are
//! published to it too.
//!
//! Nothing is queued per broker: each broker has a cursor into the recent
//! messages and its task pulls the next one ([`SignalCore::poll_publish`]).
//! A broker that confirms and drops again and again only moves its cursor
//! back to the oldest recent message — it never appends more copies — so
//! the endpoint's memory is `max_recent` messages, whatever the brokers do. So a message whose only broker crashed before
//! passing it on, or that was sent while no broker was up, still arrives
//! through the next broker that is; receivers drop the extra copies. Incoming copies are decoded,
//! checked against the recipient and the TTL, and deduplicated, so the
//! application sees each message once, in arrival order (per sender that is
//! send order unless a broker overtakes another; the sequence number in
//! [`Delivered::id`] tells).

use super::dedup::{Dedup, DedupConfig, Verdict};
use super::envelope::{EncodeError, Envelope, MessageId, SignalKey};
use std::collections::VecDeque;
use std::time::{Duration, Instant};

/// Tunables.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SignalConfig {
    /// Healthy brokers each message goes to. Default 3.
    pub fanout: usize,
    /// How long a message stays worth delivering. Default 30 s.
    pub ttl: Duration,
    /// Clock difference tolerated between sender and receiver. Default 5 s.
    pub clock_skew: Duration,
    /// Largest envelope sent or accepted. Default 64 KiB.
    pub max_envelope: usize,
    /// Recent messages kept for brokers that (re)connect, at most: the
    /// endpoint's whole outgoing memory (brokers hold cursors into it, no
    /// queues). Default 1024.
    pub max_recent: usize,
    /// Messages held for the application until it reads them; when full the
    /// oldest is dropped and counted (`Signal::delivered_dropped`).
    /// Default 1024.
    pub max_delivered: usize,
    /// Dedup memory (its horizon is set from `ttl + clock_skew`).
    pub dedup: DedupConfig,
    /// The signaling group's key: with one, every envelope sent carries a
    /// MAC and only envelopes whose MAC verifies are accepted; without
    /// one, anyone who can publish on the topic can inject messages.
    /// Default none.
    pub key: Option<SignalKey>,
}

impl Default for SignalConfig {
    fn default() -> Self {
        SignalConfig {
            fanout: 3,
            ttl: Duration::from_secs(30),
            clock_skew: Duration::from_secs(5),
            max_envelope: 64 << 10,
            max_recent: 1024,
            max_delivered: 1024,
            dedup: DedupConfig::default(),
            key: None,
        }
    }
}

/// A message for the application.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Delivered {
    /// Its identity (sender and sequence number).
    pub id: MessageId,
    /// The payload.
    pub payload: Vec<u8>,
    /// Which broker delivered the first copy.
    pub via: usize,
}

fn bit(broker: usize) -> u64 {
    1u64.checked_shl(broker as u32).unwrap_or(0)
}

/// Why an incoming publish was dropped.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Dropped {
    /// Not a valid envelope (garbage, foreign, wrong version, oversized).
    Invalid(super::envelope::DecodeError),
    /// Addressed to someone else.
    NotForUs,
    /// Past its TTL.
    Expired,
    /// A copy already delivered (or too old to tell).
    Duplicate,
    /// Claims what no genuine sender sends: a TTL beyond the receiver's, a
    /// send time in the future, a sequence number far ahead of its sender.
    Implausible,
}

/// A publish to make.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Publish {
    /// Broker index.
    pub broker: usize,
    /// Recipient (the topic is derived from it).
    pub recipient: String,
    /// Encoded envelope.
    pub bytes: Vec<u8>,
}

struct Recent {
    /// Position in the send order (the first message is 0).
    index: u64,
    recipient: String,
    bytes: Vec<u8>,
    deadline_ms: u64,
    /// Brokers it was fanned out to when sent (bit `i`: broker `i`).
    targets: u64,
}

/// Where a broker stands in the recent messages.
#[derive(Clone, Copy, Debug, Default)]
struct Cursor {
    /// Confirmed now.
    healthy: bool,
    /// The next message index to consider.
    next: u64,
    /// Messages below this index go to it whatever their targets (the
    /// replay after it came up).
    replay_until: u64,
}

/// One signaling endpoint.
pub struct SignalCore {
    me: String,
    sender: u64,
    next_seq: u64,
    /// One per broker (at most [`MAX_BROKERS`]).
    cursors: Vec<Cursor>,
    config: SignalConfig,
    dedup: Dedup,
    /// Bounded by `max_recent`: the oldest is dropped first.
    recent: VecDeque<Recent>,
    /// Index the next message sent gets.
    next_index: u64,
    /// See [`SignalCore::skipped`].
    skipped: u64,
}

/// Most brokers one endpoint uses (targets are a 64-bit set).
pub const MAX_BROKERS: usize = 64;

impl SignalCore {
    /// Endpoint `me` (its recipient name), with sender id `sender` (random
    /// per endpoint instance), over `brokers` brokers, all unconfirmed.
    pub fn new(me: &str, sender: u64, brokers: usize, config: SignalConfig) -> SignalCore {
        let horizon = config.ttl + config.clock_skew;
        SignalCore {
            me: me.to_string(),
            sender,
            next_seq: 1,
            cursors: vec![Cursor::default(); brokers.min(MAX_BROKERS)],
            dedup: Dedup::new(DedupConfig {
                horizon,
                ..config.dedup
            }),
            config,
            recent: VecDeque::new(),
            next_index: 0,
            skipped: 0,
        }
    }

    /// Broker `i`'s connection is confirmed (CONNACK) or lost. A broker
    /// that comes up is given every recent message within its TTL again
    /// (its cursor moves back; nothing is copied).
    pub fn set_healthy(&mut self, broker: usize, healthy: bool, now_ms: u64) {
        let Some(c) = self.cursors.get_mut(broker) else {
            return;
        };
        let came_up = healthy && !c.healthy;
        c.healthy = healthy;
        if came_up {
            while self.recent.front().is_some_and(|r| r.deadline_ms < now_ms) {
                self.recent.pop_front();
            }
            c.next = self.recent.front().map_or(self.next_index, |r| r.index);
            c.replay_until = self.next_index;
        }
    }

    /// Brokers confirmed now.
    pub fn healthy(&self) -> impl Iterator<Item = usize> + '_ {
        self.cursors
            .iter()
            .enumerate()
            .filter(|(_, c)| c.healthy)
            .map(|(i, _)| i)
    }

    /// Recent messages held (at most `max_recent`).
    pub fn recent_len(&self) -> usize {
        self.recent.len()
    }

    /// Publishes broker `i` still has to make (at most `recent_len`).
    pub fn backlog(&self, broker: usize) -> usize {
        let Some(c) = self.cursors.get(broker).filter(|c| c.healthy) else {
            return 0;
        };
        self.recent
            .iter()
            .filter(|r| {
                r.index >= c.next && (r.index < c.replay_until || r.targets & bit(broker) != 0)
            })
            .count()
    }

    /// Recent messages that left the buffer (`max_recent` newer ones were
    /// sent) before a broker's cursor passed them, summed over brokers
    /// (whether or not each was meant for that broker).
    pub fn skipped(&self) -> u64 {
        self.skipped
    }

    /// Sends `payload` to `recipient` at `now_ms` (Unix ms).
    pub fn send(
        &mut self,
        recipient: &str,
        payload: &[u8],
        now_ms: u64,
    ) -> Result<MessageId, EncodeError> {
        let id = MessageId {
            sender: self.sender,
            seq: self.next_seq,
        };
        let ttl_ms = u32::try_from(self.config.ttl.as_millis()).unwrap_or(u32::MAX);
        let envelope = Envelope {
            id,
            sent_at_ms: now_ms,
            ttl_ms,
            recipient: recipient.to_string(),
            payload: payload.to_vec(),
        };
        let bytes = envelope.encode_with(self.config.max_envelope, self.config.key.as_ref())?;
        self.next_seq += 1;
        let targets = self
            .healthy()
            .take(self.config.fanout.max(1))
            .fold(0u64, |set, b| set | bit(b));
        if self.recent.len() >= self.config.max_recent.max(1) {
            self.recent.pop_front();
        }
        self.recent.push_back(Recent {
            index: self.next_index,
            recipient: envelope.recipient,
            bytes,
            deadline_ms: now_ms.saturating_add(u64::from(ttl_ms)),
            targets,
        });
        self.next_index += 1;
        Ok(id)
    }

    /// The next publish broker `broker` should make at `now_ms`, if any:
    /// messages fanned out to it, and after it came up every recent one,
    /// in send order, each once per confirmation, none past its TTL.
    pub fn poll_publish(&mut self, broker: usize, now_ms: u64) -> Option<Publish> {
        let c = self.cursors.get_mut(broker).filter(|c| c.healthy)?;
        let oldest = self.recent.front().map_or(self.next_index, |r| r.index);
        if c.next < oldest {
            // They left `recent` before this broker's cursor passed them.
            self.skipped += oldest - c.next;
            c.next = oldest;
        }
        // Recent messages have consecutive indexes: the cursor is a position.
        let start = usize::try_from(c.next - oldest).unwrap_or(usize::MAX);
        for r in self.recent.iter().skip(start) {
            c.next = r.index + 1;
            let wanted = r.index < c.replay_until || r.targets & bit(broker) != 0;
            if wanted && r.deadline_ms >= now_ms {
                return Some(Publish {
                    broker,
                    recipient: r.recipient.clone(),
                    bytes: r.bytes.clone(),
                });
            }
        }
        None
    }

    /// A publish arrived from `broker`: the message for the application,
    /// or why it was dropped (already logged).
    pub fn handle_incoming(
        &mut self,
        broker: usize,
        bytes: &[u8],
        now: Instant,
        now_ms: u64,
    ) -> Result<Delivered, Dropped> {
        let e = Envelope::decode(bytes, self.config.max_envelope, self.config.key.as_ref())
            .map_err(|e| {
                tracing::warn!(broker, error = %e, "dropping a message on the signaling topic");
                Dropped::Invalid(e)
            })?;
        if e.recipient != self.me {
            return Err(Dropped::NotForUs);
        }
        let skew_ms = u64::try_from(self.config.clock_skew.as_millis()).unwrap_or(u64::MAX);
        let max_ttl_ms = u64::try_from(self.config.ttl.as_millis()).unwrap_or(u64::MAX);
        // The receiver bounds what a message may claim: a TTL longer than
        // its own, or a send time beyond the allowed skew, would let a
        // message (or a replay of it) live for ever.
        if u64::from(e.ttl_ms) > max_ttl_ms || e.sent_at_ms > now_ms.saturating_add(skew_ms) {
            tracing::warn!(?e.id, ttl_ms = e.ttl_ms, sent_at_ms = e.sent_at_ms, "dropping an implausible message");
            return Err(Dropped::Implausible);
        }
        if e.expired(now_ms, skew_ms) {
            tracing::debug!(?e.id, "dropping an expired message");
            return Err(Dropped::Expired);
        }
        match self.dedup.check(e.id, now) {
            Verdict::New => Ok(Delivered {
                id: e.id,
                payload: e.payload,
                via: broker,
            }),
            Verdict::Duplicate | Verdict::TooOld => Err(Dropped::Duplicate),
            Verdict::Implausible => {
                tracing::warn!(?e.id, "dropping a message whose sequence number jumps too far");
                Err(Dropped::Implausible)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// A broker as the tests model it: while up it forwards each publish
    /// after `delay` steps; a crash loses what it holds.
    #[derive(Default)]
    struct Broker {
        up: bool,
        in_flight: Vec<(u64, Vec<u8>)>,
    }

    proptest! {
        /// Random crash/restart schedules over three brokers, with at least
        /// one broker up and known healthy at every step: every message the
        /// sender sends reaches the receiver exactly once.
        #[test]
        fn broker_crashes_never_lose_or_duplicate(
            schedule in proptest::collection::vec((0usize..3, any::<bool>()), 1..120),
            delays in proptest::collection::vec(0u64..4, 3),
        ) {
            let t0 = Instant::now();
            let config = SignalConfig::default();
            let mut alice = SignalCore::new("alice", 1, 3, config);
            let mut bob = SignalCore::new("bob", 2, 3, config);
            let mut brokers: Vec<Broker> = (0..3).map(|_| Broker { up: true, ..Broker::default() }).collect();
            for i in 0..3 {
                alice.set_healthy(i, true, 0);
                bob.set_healthy(i, true, 0);
            }
            let mut sent = Vec::new();
            let mut got: Vec<MessageId> = Vec::new();
            let mut step: u64 = 0;
            for (victim, up) in schedule {
                step += 1;
                let now_ms = step * 10;
                // Crash or restart, never leaving no broker up. The sender
                // learns of a crash at once here: brokers it still believes
                // up but are gone are the next test's business.
                let others_up = (0..3).filter(|&j| j != victim && brokers[j].up).count();
                if up || others_up > 0 {
                    if !up {
                        brokers[victim].in_flight.clear();
                    }
                    brokers[victim].up = up;
                    alice.set_healthy(victim, up, now_ms);
                    bob.set_healthy(victim, up, now_ms);
                }
                sent.push(alice.send("bob", &step.to_be_bytes(), now_ms).unwrap());
                for i in 0..3 {
                    while let Some(p) = alice.poll_publish(i, now_ms) {
                        let b = &mut brokers[p.broker];
                        if b.up {
                            b.in_flight.push((step + delays[p.broker], p.bytes));
                        }
                    }
                }
                for (i, b) in brokers.iter_mut().enumerate() {
                    let (due, later): (Vec<_>, Vec<_>) = b.in_flight.drain(..).partition(|(at, _)| *at <= step);
                    b.in_flight = later;
                    for (_, bytes) in due {
                        if let Ok(d) = bob.handle_incoming(i, &bytes, t0, now_ms) {
                            got.push(d.id);
                        }
                    }
                }
            }
            // Drain what is still in flight on live brokers.
            for (i, b) in brokers.iter_mut().enumerate() {
                for (_, bytes) in b.in_flight.drain(..) {
                    if let Ok(d) = bob.handle_incoming(i, &bytes, t0, step * 10) {
                        got.push(d.id);
                    }
                }
            }
            let mut sorted = got.clone();
            sorted.sort();
            sorted.dedup();
            prop_assert_eq!(sorted.len(), got.len(), "a message was delivered twice");
            let mut want = sent.clone();
            want.sort();
            prop_assert_eq!(sorted, want, "a message was lost");
        }
    }

    /// What a hostile publisher on the topic sends.
    #[derive(Clone, Debug)]
    enum Forgery {
        /// A genuine envelope with one byte flipped.
        Altered(usize),
        /// A genuine envelope published again later.
        Replay,
        /// The real sender's id with a huge sequence number.
        HugeSeq(u64),
        /// Any sender id, any sequence number.
        Foreign(u64, u64),
        /// Bytes that are no envelope.
        Garbage(Vec<u8>),
    }

    fn forgery() -> impl Strategy<Value = Forgery> {
        prop_oneof![
            any::<usize>().prop_map(Forgery::Altered),
            Just(Forgery::Replay),
            (u64::MAX / 2..=u64::MAX).prop_map(Forgery::HugeSeq),
            (any::<u64>(), any::<u64>()).prop_map(|(s, q)| Forgery::Foreign(s, q)),
            proptest::collection::vec(any::<u8>(), 0..80).prop_map(Forgery::Garbage),
        ]
    }

    proptest! {
        /// Forged envelopes (altered: a bad MAC, replayed, huge sequence
        /// numbers under the real sender's id, foreign ids, garbage),
        /// interleaved with a genuine stream: with a group key no forgery
        /// is delivered and every genuine message is delivered exactly
        /// once; without one, replays, garbage, other ids and huge
        /// sequence numbers under the real id still never suppress or
        /// duplicate a genuine message.
        #[test]
        fn forgeries_never_suppress_a_genuine_message_nor_get_delivered(
            keyed in any::<bool>(),
            attacks in proptest::collection::vec((0usize..40, forgery()), 0..60),
        ) {
            let t0 = Instant::now();
            let key = SignalKey::from_bytes([42; 32]);
            let mut config = SignalConfig::default();
            if keyed {
                config.key = Some(key);
            }
            let mut alice = SignalCore::new("alice", 77, 1, config);
            let mut bob = SignalCore::new("bob", 2, 1, config);
            alice.set_healthy(0, true, 0);
            let mut wire: Vec<Vec<u8>> = Vec::new();
            let mut got: Vec<Vec<u8>> = Vec::new();
            let mut genuine = 0u32;
            let mut attacks = attacks;
            attacks.sort_by_key(|(at, _)| *at);
            let mut attacks = attacks.into_iter().peekable();
            let attacker = SignalKey::from_bytes([13; 32]);
            for step in 0..40usize {
                let now_ms = 1_000 + step as u64;
                let id = alice.send("bob", format!("genuine {step}").as_bytes(), now_ms).unwrap();
                genuine += 1;
                let p = alice.poll_publish(0, now_ms).unwrap();
                wire.push(p.bytes.clone());
                let mut arrivals = vec![p.bytes];
                while let Some((_, f)) = attacks.next_if(|(at, _)| *at <= step) {
                    let last = wire.last().cloned().unwrap_or_default();
                    // Without the key a forger signs with its own, or not at all.
                    let forge = |sender, seq| {
                        let e = Envelope {
                            id: MessageId { sender, seq },
                            sent_at_ms: now_ms,
                            ttl_ms: 30_000,
                            recipient: "bob".into(),
                            payload: b"forged".to_vec(),
                        };
                        e.encode_with(1 << 16, keyed.then_some(&attacker)).unwrap()
                    };
                    arrivals.push(match f {
                        // Without a key an altered envelope is a new,
                        // valid message, and a small sequence number under
                        // the real id takes a genuine one's place: what a
                        // key is for. Unkeyed runs check the rest.
                        Forgery::Altered(_) if !keyed => continue,
                        Forgery::Foreign(sender, _) if !keyed && sender == id.sender => continue,
                        Forgery::Altered(i) => {
                            let mut b = last.clone();
                            let i = 4 + i % (b.len() - 4);
                            b[i] ^= 0x40;
                            b
                        }
                        Forgery::Replay => wire[step / 2].clone(),
                        Forgery::HugeSeq(seq) => forge(id.sender, seq),
                        Forgery::Foreign(sender, seq) => forge(sender, seq),
                        Forgery::Garbage(g) => g,
                    });
                }
                for bytes in arrivals {
                    if let Ok(d) = bob.handle_incoming(0, &bytes, t0, now_ms) {
                        got.push(d.payload);
                    }
                }
            }
            let genuine_got: Vec<_> = got.iter().filter(|p| p.starts_with(b"genuine ")).collect();
            let mut unique = genuine_got.clone();
            unique.sort();
            unique.dedup();
            prop_assert_eq!(unique.len(), genuine_got.len(), "a genuine message twice");
            prop_assert_eq!(genuine_got.len() as u32, genuine, "a genuine message suppressed");
            if keyed {
                prop_assert!(got.iter().all(|p| p.starts_with(b"genuine ")), "a forgery delivered");
            }
        }
    }

    #[test]
    fn a_receiver_bounds_the_ttl_and_send_time_a_message_claims() {
        let t = Instant::now();
        let mut b = SignalCore::new("b", 2, 1, SignalConfig::default());
        let forge = |ttl_ms, sent_at_ms| {
            Envelope {
                id: MessageId { sender: 5, seq: 1 },
                sent_at_ms,
                ttl_ms,
                recipient: "b".into(),
                payload: b"x".to_vec(),
            }
            .encode(1024)
            .unwrap()
        };
        let now = 1_000_000;
        assert_eq!(
            b.handle_incoming(0, &forge(u32::MAX, now), t, now),
            Err(Dropped::Implausible),
            "a TTL beyond the receiver's"
        );
        assert_eq!(
            b.handle_incoming(0, &forge(1_000, now + 3_600_000), t, now),
            Err(Dropped::Implausible),
            "a send time an hour ahead"
        );
        assert!(
            b.handle_incoming(0, &forge(1_000, now + 4_000), t, now)
                .is_ok(),
            "within the skew"
        );
    }

    /// A broker that confirms and drops every 200 ms for 30 s while
    /// messages flow at 200/s, another that stays up: the endpoint holds
    /// at most `max_recent` messages and no broker owes more than that (no
    /// copy is ever queued), and the receiver gets each message once.
    #[test]
    fn a_flapping_broker_keeps_every_queue_bounded_and_loses_nothing() {
        let t0 = Instant::now();
        let config = SignalConfig {
            max_recent: 256,
            ..SignalConfig::default()
        };
        let mut alice = SignalCore::new("alice", 1, 2, config);
        let mut bob = SignalCore::new("bob", 2, 2, config);
        alice.set_healthy(1, true, 0);
        let (mut sent, mut got) = (Vec::new(), Vec::new());
        let (mut peak_recent, mut peak_backlog) = (0, 0);
        // 5 ms steps: one message each; broker 0 flips every 100 ms.
        for step in 0..6_000u64 {
            let now_ms = step * 5;
            if step % 20 == 0 {
                let up = (step / 20) % 2 == 0;
                alice.set_healthy(0, up, now_ms);
            }
            sent.push(alice.send("bob", &step.to_be_bytes(), now_ms).unwrap());
            peak_recent = peak_recent.max(alice.recent_len());
            for b in 0..2 {
                peak_backlog = peak_backlog.max(alice.backlog(b));
                // Each broker passes on a few publishes per step; broker 0
                // loses what it holds when it drops (it is never asked then).
                for _ in 0..4 {
                    let Some(p) = alice.poll_publish(b, now_ms) else {
                        break;
                    };
                    if let Ok(d) = bob.handle_incoming(b, &p.bytes, t0, now_ms) {
                        got.push(d.id);
                    }
                }
            }
        }
        assert!(peak_recent <= 256, "recent {peak_recent}");
        assert!(peak_backlog <= 256, "backlog {peak_backlog}");
        let mut unique = got.clone();
        unique.sort();
        unique.dedup();
        assert_eq!(unique.len(), got.len(), "a message delivered twice");
        assert_eq!(unique, sent, "a message lost");
    }

    #[test]
    fn recent_messages_go_to_each_broker_that_comes_up_within_their_ttl() {
        let mut a = SignalCore::new("a", 1, 2, SignalConfig::default());
        a.send("b", b"early", 1_000).unwrap();
        assert_eq!(a.poll_publish(0, 1_000), None, "no broker confirmed yet");
        assert_eq!(a.poll_publish(1, 1_000), None, "no broker confirmed yet");
        a.set_healthy(1, true, 2_000);
        let p = a.poll_publish(1, 2_000).unwrap();
        assert_eq!(p.broker, 1);
        assert_eq!(a.poll_publish(1, 2_000), None);
        // Confirmed again later: the message goes out to it once more.
        a.set_healthy(1, true, 2_500);
        assert_eq!(
            a.poll_publish(1, 2_500),
            None,
            "already confirmed: nothing new"
        );
        a.set_healthy(0, true, 3_000);
        assert_eq!(a.poll_publish(0, 3_000).map(|p| p.broker), Some(0));
        assert_eq!(a.poll_publish(1, 3_000), None);
        // Past its TTL, a message is not sent late.
        a.set_healthy(1, false, 3_000);
        a.set_healthy(1, true, 1_000 + 31_000);
        assert_eq!(a.poll_publish(1, 32_000), None);
    }

    #[test]
    fn foreign_and_expired_messages_are_dropped() {
        let t = Instant::now();
        let mut a = SignalCore::new("a", 1, 1, SignalConfig::default());
        let mut b = SignalCore::new("b", 2, 1, SignalConfig::default());
        a.set_healthy(0, true, 0);
        a.send("b", b"x", 0).unwrap();
        a.send("c", b"y", 0).unwrap();
        let p1 = a.poll_publish(0, 0).unwrap();
        let p2 = a.poll_publish(0, 0).unwrap();
        assert!(matches!(
            b.handle_incoming(0, b"garbage", t, 0),
            Err(Dropped::Invalid(_))
        ));
        assert_eq!(
            b.handle_incoming(0, &p2.bytes, t, 0),
            Err(Dropped::NotForUs)
        );
        assert_eq!(
            b.handle_incoming(0, &p1.bytes, t, 36_000),
            Err(Dropped::Expired)
        );
        assert!(b.handle_incoming(0, &p1.bytes, t, 1).is_ok());
        assert_eq!(
            b.handle_incoming(0, &p1.bytes, t, 2),
            Err(Dropped::Duplicate)
        );
    }
}
