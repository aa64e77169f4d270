//! The sans-IO signaling endpoint: messages in and out, broker health in,
//! publishes out. No socket, no clock: the caller passes the time.
//!
//! **Delivery is acknowledged end to end.** A receiver answers every copy
//! of a message it accepts (the first and the duplicates) with an
//! acknowledgement through the broker the copy came from, addressed to the
//! sender's own name. The sender keeps each message until an
//! acknowledgement arrives or its TTL passes, and when none has arrived
//! within the recipient's ack timeout it sends the message again through
//! the brokers that are healthy *for that recipient*. So a restarted
//! broker, a frozen one, a blocked port or a receiver that has not
//! resubscribed yet costs latency, never a message, as long as one broker
//! carries messages both ways between the two ends.
//!
//! **A broker's health is judged end to end, per recipient.** A broker is
//! usable while its connection is confirmed (the MQTT CONNACK arrived and
//! nothing has failed since). For each recipient the endpoint also notes
//! when it first published through a broker without hearing an
//! acknowledgement back through it since; once that is older than the
//! recipient's ack timeout, the broker is *suspect* for that recipient:
//! new messages and resends go through the others first, and a suspect
//! broker gets at most one probe copy per ack timeout until an
//! acknowledgement through it clears it. A frozen broker, whose TCP
//! connection looks fine for seconds, is therefore noticed within one ack
//! timeout (at most [`SignalConfig::ack_timeout`]) of the first message it
//! fails to carry.
//!
//! **The ack timeout adapts** to the round trips measured per recipient
//! (SRTT + 4·RTTVAR as TCP's RTO, RFC 6298; no sample from a resent
//! message, Karn's rule), between [`MIN_ACK_TIMEOUT`] and
//! [`SignalConfig::ack_timeout`]. Resends back off (one, two, then four
//! ack timeouts apart).
//!
//! **Bounded by construction.** Nothing is queued per broker for
//! messages: every message waiting for an acknowledgement sits once in the
//! endpoint's recent list (at most [`SignalConfig::max_recent`]), marked
//! with the brokers that still owe a publish of it, and each broker's task
//! pulls its next one ([`SignalCore::poll_publish`]). A broker that
//! confirms and drops again and again only re-marks the unacknowledged
//! messages — it never appends copies. When the list is full of
//! unacknowledged messages (by count or by bytes), [`SignalCore::send`]
//! refuses the new one with [`SendError::Full`]: backpressure, so a
//! message the endpoint took is never dropped within its TTL, and the
//! application decides what waits. Acknowledgements waiting to go out are at
//! most [`SignalConfig::max_pending_acks`] per broker (overflow drops the
//! oldest: its message is resent and acknowledged again), recipients'
//! round trips and health at most [`SignalConfig::max_peers`] (least
//! recently used forgotten), and the duplicate filter is bounded by
//! [`DedupConfig`].
//!
//! **Expiry survives clock skew.** A copy carries its age (how long its
//! sender had held it when it published that copy, on the sender's
//! monotonic clock) and the receiver counts the rest of the TTL from
//! receipt: the two ends' wall clocks may be minutes apart and nothing
//! changes. The receiver also estimates how long a broker held each copy
//! (its arrival beyond the fastest of its sender's recent copies, which
//! cancels the clock offset; see `transit.rs`), so a copy a broker sat on
//! past its TTL, or replayed after its sender went quiet, is dropped too.
//! That estimate remembers a sender longer than the duplicate filter does
//! (it forgets only the least recently heard, past `dedup.max_senders`),
//! and the filter remembers a sender for the TTL plus twice the delay
//! tolerance: a copy the filter would no longer recognise arrives that
//! late, which the estimate sees, less any rise of its sender's fastest
//! transit since (covered by the second tolerance), and is expired here. The first copy
//! ever heard from a sender sets its estimate, so one a broker held before
//! it is not counted late. Without a group key, a forged envelope with a
//! sender's id can make its genuine messages look late (as it can make
//! them look old to the duplicate filter): the answer is a key.
//!
//! Incoming copies are decoded, checked against the recipient and the TTL,
//! and deduplicated, so the application sees each message once, in arrival
//! order (per sender that is send order unless a broker overtakes another;
//! the sequence number in [`Delivered::id`] tells).

use super::dedup::{Dedup, DedupConfig, Verdict};
use super::envelope::{
    restamp, EncodeError, Envelope, Kind, MessageId, SignalKey, MAX_ACKS_PER_ENVELOPE,
};
use super::transit::Transit;
use lru::LruCache;
use std::collections::VecDeque;
use std::num::NonZeroUsize;
use std::time::{Duration, Instant};

/// The shortest ack timeout, however short the measured round trip: below
/// it a broker's scheduling hiccup would trigger resends.
pub const MIN_ACK_TIMEOUT: Duration = Duration::from_millis(100);

/// Tunables.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SignalConfig {
    /// Healthy brokers each message goes to first. Default 3.
    pub fanout: usize,
    /// How long a message stays worth delivering (and resending), from
    /// when it is sent. Default 30 s.
    pub ttl: Duration,
    /// How much longer than the fastest of its sender's recent copies a
    /// copy may take (a broker's queue) before that time counts against
    /// its TTL. The duplicate filter remembers a sender for the TTL plus
    /// twice this. Default 5 s.
    pub delay_tolerance: Duration,
    /// Largest envelope sent or accepted. Default 64 KiB.
    pub max_envelope: usize,
    /// Messages kept until acknowledged (or past their TTL), at most: the
    /// endpoint's outgoing memory (brokers only mark which of them they
    /// owe). When that many are unacknowledged, sends are refused
    /// ([`SendError::Full`]) until acknowledgements or expiry make room.
    /// Default 4096.
    pub max_recent: usize,
    /// Bytes of encoded envelopes kept until acknowledged, at most (the
    /// same policy as `max_recent`, whichever is reached first). Default
    /// 8 MiB.
    pub max_recent_bytes: usize,
    /// Messages held for the application until it reads them; when full the
    /// oldest is dropped and counted (`Signal::delivered_dropped`).
    /// Default 1024.
    pub max_delivered: usize,
    /// Dedup memory (its horizon is set to `ttl + 2 · delay_tolerance`; its
    /// `max_senders` also bounds the senders whose transit is estimated).
    pub dedup: DedupConfig,
    /// The signaling group's key: with one, every envelope sent carries a
    /// MAC and only envelopes whose MAC verifies are accepted; without
    /// one, anyone who can publish on the topic can inject messages (and
    /// acknowledgements). Default none.
    pub key: Option<SignalKey>,
    /// The ack timeout for a recipient not yet measured, and the most any
    /// recipient's grows to: the bound within which a broker that stops
    /// carrying messages is noticed. Default 1 s.
    pub ack_timeout: Duration,
    /// Recipients whose round trip and broker health are remembered; past
    /// it the least recently used is forgotten (and starts again from
    /// `ack_timeout`). Default 256.
    pub max_peers: usize,
    /// Acknowledgements waiting to be published, per broker; past it the
    /// oldest is dropped (counted in [`SignalCore::acks_dropped`]) and its
    /// message, resent, is acknowledged again. Default 1024.
    pub max_pending_acks: usize,
}

impl Default for SignalConfig {
    fn default() -> Self {
        SignalConfig {
            fanout: 3,
            ttl: Duration::from_secs(30),
            delay_tolerance: Duration::from_secs(5),
            max_envelope: 64 << 10,
            max_recent: 4096,
            max_recent_bytes: 8 << 20,
            max_delivered: 1024,
            dedup: DedupConfig::default(),
            key: None,
            ack_timeout: Duration::from_secs(1),
            max_peers: 256,
            max_pending_acks: 1024,
        }
    }
}

/// A message for the application.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Delivered {
    /// Its identity (sender and sequence number).
    pub id: MessageId,
    /// The sender's endpoint name (where a reply goes).
    pub from: String,
    /// The payload.
    pub payload: Vec<u8>,
    /// Which broker delivered the first copy.
    pub via: usize,
}

fn bit(broker: usize) -> u64 {
    1u64.checked_shl(broker as u32).unwrap_or(0)
}

fn ms(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

/// Why an incoming publish was dropped.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Dropped {
    /// Not a valid envelope (garbage, foreign, wrong version, oversized).
    Invalid(super::envelope::DecodeError),
    /// Addressed to someone else (or an acknowledgement for another
    /// endpoint instance).
    NotForUs,
    /// Past its TTL: held by its sender for all of it, or by a broker for
    /// the rest (the transit estimate).
    Expired,
    /// A copy already delivered (or too old to tell).
    Duplicate,
    /// Claims what no genuine sender sends: a TTL beyond the receiver's, or
    /// a sequence number far ahead of its sender.
    Implausible,
}

/// Why a message was not sent.
#[derive(Clone, Debug, thiserror::Error, PartialEq, Eq)]
#[non_exhaustive]
pub enum SendError {
    /// It does not fit an envelope.
    #[error(transparent)]
    Encode(#[from] EncodeError),
    /// `max_recent` messages (or `max_recent_bytes`) await acknowledgement:
    /// try again when some are acknowledged or expired.
    #[error("{messages} messages ({bytes} bytes) await acknowledgement; the outbox is full")]
    Full {
        /// Messages held.
        messages: usize,
        /// Their bytes.
        bytes: usize,
    },
}

/// Incoming publishes dropped, by reason (see [`Dropped`]).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct DropCounts {
    /// Not a valid envelope: garbage, foreign, oversized, bad or missing MAC.
    pub invalid: u64,
    /// Addressed to someone else.
    pub not_for_us: u64,
    /// Past their TTL.
    pub expired: u64,
    /// Copies of messages already delivered.
    pub duplicate: u64,
    /// Implausible TTL or sequence number.
    pub implausible: u64,
}

impl DropCounts {
    /// Counts one drop; returns how many of its kind so far.
    fn count(&mut self, why: &Dropped) -> u64 {
        let n = match why {
            Dropped::Invalid(_) => &mut self.invalid,
            Dropped::NotForUs => &mut self.not_for_us,
            Dropped::Expired => &mut self.expired,
            Dropped::Duplicate => &mut self.duplicate,
            Dropped::Implausible => &mut self.implausible,
        };
        *n += 1;
        *n
    }
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

/// A message kept until it is acknowledged or past its TTL.
struct Recent {
    seq: u64,
    recipient: String,
    /// Encoded; its age is restamped on each publish.
    bytes: Vec<u8>,
    /// When it was sent (the endpoint's clock): each copy's age counts
    /// from here.
    sent_ms: u64,
    deadline_ms: u64,
    /// Brokers that still owe a publish of it (bit `i`: broker `i`).
    pending: u64,
    acked: bool,
    /// Its first publish, for a round-trip sample.
    first_sent_ms: Option<u64>,
    /// Sent again: its acknowledgement gives no round-trip sample.
    resent: bool,
    /// When to send it again if no acknowledgement came.
    retry_at_ms: u64,
    retries: u32,
}

impl Recent {
    fn live(&self, now_ms: u64) -> bool {
        !self.acked && self.deadline_ms >= now_ms
    }
}

/// What the endpoint knows of one broker for one recipient.
#[derive(Clone, Copy, Debug, Default)]
struct PathHealth {
    /// The first publish through this broker to the recipient not
    /// answered through it since.
    unanswered_since: Option<u64>,
    last_sent_ms: Option<u64>,
}

/// What the endpoint knows of one recipient: its round trip, and each
/// broker's health for it.
struct Peer {
    srtt_ms: Option<u64>,
    rttvar_ms: u64,
    paths: Vec<PathHealth>,
}

impl Peer {
    fn new(brokers: usize) -> Peer {
        Peer {
            srtt_ms: None,
            rttvar_ms: 0,
            paths: vec![PathHealth::default(); brokers],
        }
    }

    fn ack_timeout_ms(&self, cap_ms: u64) -> u64 {
        let floor = ms(MIN_ACK_TIMEOUT).min(cap_ms);
        match self.srtt_ms {
            None => cap_ms,
            Some(srtt) => srtt
                .saturating_add(self.rttvar_ms.saturating_mul(4))
                .clamp(floor, cap_ms.max(floor)),
        }
    }

    /// RFC 6298 §2 with α = 1/8, β = 1/4.
    fn sample(&mut self, rtt_ms: u64) {
        match self.srtt_ms {
            None => {
                self.srtt_ms = Some(rtt_ms);
                self.rttvar_ms = rtt_ms / 2;
            }
            Some(srtt) => {
                self.rttvar_ms = (3 * self.rttvar_ms + srtt.abs_diff(rtt_ms)) / 4;
                self.srtt_ms = Some((7 * srtt + rtt_ms) / 8);
            }
        }
    }

    fn suspect(&self, broker: usize, now_ms: u64, timeout_ms: u64) -> bool {
        self.paths
            .get(broker)
            .and_then(|p| p.unanswered_since)
            .is_some_and(|t| now_ms >= t.saturating_add(timeout_ms))
    }
}

/// An acknowledgement to publish.
struct PendingAck {
    to: String,
    sender: u64,
    seq: u64,
}

/// One broker as the endpoint sees it.
#[derive(Default)]
struct Link {
    /// Confirmed now.
    connected: bool,
    /// No message below this sequence number is marked for this broker.
    hint: u64,
    /// At most `max_pending_acks`.
    acks: VecDeque<PendingAck>,
}

/// One signaling endpoint.
pub struct SignalCore {
    me: String,
    sender: u64,
    next_seq: u64,
    /// One per broker (at most [`MAX_BROKERS`]).
    links: Vec<Link>,
    config: SignalConfig,
    dedup: Dedup,
    /// Per sender, bounded by `dedup.max_senders`.
    transit: Transit,
    /// Bounded by `max_recent` and `max_recent_bytes`, in sequence order.
    recent: VecDeque<Recent>,
    /// Bytes of the envelopes in `recent`.
    recent_bytes: usize,
    /// Bounded by `max_peers`.
    peers: LruCache<String, Peer>,
    refused: u64,
    resends: u64,
    acks_dropped: u64,
    dropped: DropCounts,
}

/// Most brokers one endpoint uses (broker sets are 64-bit masks).
pub const MAX_BROKERS: usize = 64;

impl SignalCore {
    /// Endpoint `me` (its recipient name), with sender id `sender` (random
    /// per endpoint instance), over `brokers` brokers, all unconfirmed.
    pub fn new(me: &str, sender: u64, brokers: usize, config: SignalConfig) -> SignalCore {
        // Two tolerances: see "Expiry survives clock skew" above.
        let horizon = config
            .ttl
            .saturating_add(config.delay_tolerance.saturating_mul(2));
        let brokers = brokers.min(MAX_BROKERS);
        SignalCore {
            me: me.to_string(),
            sender,
            next_seq: 1,
            links: (0..brokers).map(|_| Link::default()).collect(),
            dedup: Dedup::new(DedupConfig {
                horizon,
                ..config.dedup
            }),
            transit: Transit::new(config.dedup.max_senders, ms(horizon)),
            peers: LruCache::new(NonZeroUsize::new(config.max_peers).unwrap_or(NonZeroUsize::MIN)),
            config,
            recent: VecDeque::new(),
            recent_bytes: 0,
            refused: 0,
            resends: 0,
            acks_dropped: 0,
            dropped: DropCounts::default(),
        }
    }

    fn cap_ms(&self) -> u64 {
        ms(self.config.ack_timeout).max(1)
    }

    fn peer(&mut self, recipient: &str) -> &mut Peer {
        if !self.peers.contains(recipient) {
            self.peers
                .put(recipient.to_string(), Peer::new(self.links.len()));
        }
        match self.peers.get_mut(recipient) {
            Some(p) => p,
            None => unreachable!("just inserted"),
        }
    }

    fn mark(&mut self, i: usize, brokers: u64) {
        let seq = self.recent[i].seq;
        self.recent[i].pending |= brokers;
        for (b, link) in self.links.iter_mut().enumerate() {
            if brokers & bit(b) != 0 {
                link.hint = link.hint.min(seq);
            }
        }
    }

    fn index_of(&self, seq: u64) -> Option<usize> {
        let i = self.recent.partition_point(|r| r.seq < seq);
        (self.recent.get(i)?.seq == seq).then_some(i)
    }

    /// Connected brokers for `recipient`: up to `fanout` that are not
    /// suspect (all connected ones if every one is), plus a probe copy
    /// through each suspect one not tried for an ack timeout.
    fn targets(&mut self, recipient: &str, fanout: usize, now_ms: u64) -> u64 {
        let cap = self.cap_ms();
        let connected: Vec<usize> = self.connected().collect();
        let peer = self.peer(recipient);
        let timeout = peer.ack_timeout_ms(cap);
        let (mut good, mut suspect) = (0u64, 0u64);
        let mut chosen = 0;
        for &b in &connected {
            if peer.suspect(b, now_ms, timeout) {
                let probed = peer.paths[b]
                    .last_sent_ms
                    .is_some_and(|t| now_ms < t.saturating_add(timeout));
                if !probed {
                    suspect |= bit(b);
                }
            } else if chosen < fanout {
                good |= bit(b);
                chosen += 1;
            }
        }
        if good == 0 {
            // Nothing known to work: every connected broker.
            return connected.iter().fold(0, |s, &b| s | bit(b));
        }
        good | suspect
    }

    /// Broker `i`'s connection is confirmed (CONNACK) or lost. A broker
    /// that comes up owes every unacknowledged message within its TTL (they
    /// are marked, not copied); one that goes down owes nothing, and the
    /// messages it still owed are due for a resend at once.
    pub fn set_healthy(&mut self, broker: usize, healthy: bool, now_ms: u64) {
        let Some(link) = self.links.get_mut(broker) else {
            return;
        };
        let was = link.connected;
        link.connected = healthy;
        if healthy && !was {
            link.hint = self.recent.front().map_or(self.next_seq, |r| r.seq);
            for r in self.recent.iter_mut().filter(|r| r.live(now_ms)) {
                r.pending |= bit(broker);
            }
        } else if !healthy {
            link.hint = self.next_seq;
            link.acks.clear();
            for r in self.recent.iter_mut() {
                if r.pending & bit(broker) != 0 {
                    r.pending &= !bit(broker);
                    r.retry_at_ms = r.retry_at_ms.min(now_ms);
                }
            }
        }
    }

    /// Brokers confirmed now.
    pub fn connected(&self) -> impl Iterator<Item = usize> + '_ {
        self.links
            .iter()
            .enumerate()
            .filter(|(_, l)| l.connected)
            .map(|(i, _)| i)
    }

    /// Brokers confirmed now (the same as [`SignalCore::connected`]).
    pub fn healthy(&self) -> impl Iterator<Item = usize> + '_ {
        self.connected()
    }

    /// Whether broker `broker` is suspect for `recipient` at `now_ms`: a
    /// publish through it has gone unanswered for the recipient's ack
    /// timeout.
    pub fn is_suspect(&self, broker: usize, recipient: &str, now_ms: u64) -> bool {
        let cap = self.cap_ms();
        self.peers
            .peek(recipient)
            .is_some_and(|p| p.suspect(broker, now_ms, p.ack_timeout_ms(cap)))
    }

    /// `recipient`'s current ack timeout (the configured one until its
    /// round trip is measured).
    pub fn ack_timeout(&self, recipient: &str) -> Duration {
        let cap = self.cap_ms();
        Duration::from_millis(
            self.peers
                .peek(recipient)
                .map_or(cap, |p| p.ack_timeout_ms(cap)),
        )
    }

    /// Messages held (acknowledged ones until they are swept; at most
    /// `max_recent`).
    pub fn recent_len(&self) -> usize {
        self.recent.len()
    }

    /// Messages sent and not acknowledged yet, within their TTL.
    pub fn unacked(&self, now_ms: u64) -> usize {
        self.recent.iter().filter(|r| r.live(now_ms)).count()
    }

    /// Publishes of messages broker `i` still owes (at most `max_recent`).
    pub fn backlog(&self, broker: usize) -> usize {
        if !self.links.get(broker).is_some_and(|l| l.connected) {
            return 0;
        }
        self.recent
            .iter()
            .filter(|r| !r.acked && r.pending & bit(broker) != 0)
            .count()
    }

    /// Acknowledgements waiting for broker `i` (at most `max_pending_acks`).
    pub fn pending_acks(&self, broker: usize) -> usize {
        self.links.get(broker).map_or(0, |l| l.acks.len())
    }

    /// Sends refused because the outbox was full.
    pub fn refused(&self) -> u64 {
        self.refused
    }

    /// Bytes of the envelopes held (at most `max_recent_bytes`).
    pub fn recent_bytes(&self) -> usize {
        self.recent_bytes
    }

    /// Messages sent again for want of an acknowledgement.
    pub fn resends(&self) -> u64 {
        self.resends
    }

    /// Incoming publishes dropped so far, by reason.
    pub fn dropped(&self) -> DropCounts {
        self.dropped
    }

    /// Acknowledgements dropped because `max_pending_acks` were waiting.
    pub fn acks_dropped(&self) -> u64 {
        self.acks_dropped
    }

    /// The duplicate filter, read-only: how many senders it remembers (at
    /// most [`DedupConfig::max_senders`]) and the memory it holds.
    pub fn dedup(&self) -> &Dedup {
        &self.dedup
    }

    /// Drops acknowledged and expired messages from the front; when
    /// `len` more bytes would not fit, sweeps the whole list. Whether they
    /// fit now.
    fn make_room(&mut self, len: usize, now_ms: u64) -> bool {
        self.sweep_front(now_ms);
        let (max, max_bytes) = (self.config.max_recent.max(1), self.config.max_recent_bytes);
        let fits = |core: &Self| {
            core.recent.len() < max && core.recent_bytes.saturating_add(len) <= max_bytes
        };
        if !fits(self) {
            self.recent.retain(|r| r.live(now_ms));
            self.recent_bytes = self.recent.iter().map(|r| r.bytes.len()).sum();
        }
        fits(self)
    }

    fn sweep_front(&mut self, now_ms: u64) {
        while self.recent.front().is_some_and(|r| !r.live(now_ms)) {
            if let Some(r) = self.recent.pop_front() {
                self.recent_bytes = self.recent_bytes.saturating_sub(r.bytes.len());
            }
        }
    }

    /// Sends `payload` to `recipient` at `now_ms` (Unix ms).
    ///
    /// # Errors
    ///
    /// [`SendError::Encode`] when the names or the payload do not fit an
    /// envelope; [`SendError::Full`] when the outbox holds `max_recent`
    /// unacknowledged messages or `max_recent_bytes` (nothing is sent, no
    /// sequence number is used).
    pub fn send(
        &mut self,
        recipient: &str,
        payload: &[u8],
        now_ms: u64,
    ) -> Result<MessageId, SendError> {
        let id = MessageId {
            sender: self.sender,
            seq: self.next_seq,
        };
        let ttl_ms = u32::try_from(self.config.ttl.as_millis()).unwrap_or(u32::MAX);
        let envelope = Envelope {
            kind: Kind::Message,
            id,
            sent_at_ms: now_ms,
            ttl_ms,
            age_ms: 0,
            recipient: recipient.to_string(),
            from: self.me.clone(),
            payload: payload.to_vec(),
        };
        let bytes = envelope.encode_with(self.config.max_envelope, self.config.key.as_ref())?;
        if !self.make_room(bytes.len(), now_ms) {
            self.refused += 1;
            return Err(SendError::Full {
                messages: self.recent.len(),
                bytes: self.recent_bytes,
            });
        }
        self.next_seq += 1;
        self.recent_bytes += bytes.len();
        let targets = self.targets(recipient, self.config.fanout.max(1), now_ms);
        let cap = self.cap_ms();
        let timeout = self.peer(recipient).ack_timeout_ms(cap);
        self.recent.push_back(Recent {
            seq: id.seq,
            recipient: envelope.recipient,
            bytes,
            sent_ms: now_ms,
            deadline_ms: now_ms.saturating_add(u64::from(ttl_ms)),
            pending: 0,
            acked: false,
            first_sent_ms: None,
            resent: false,
            retry_at_ms: now_ms.saturating_add(timeout),
            retries: 0,
        });
        self.mark(self.recent.len() - 1, targets);
        Ok(id)
    }

    /// The next publish broker `broker` should make at `now_ms`, if any:
    /// acknowledgements first, then the messages it owes in send order,
    /// none acknowledged or past its TTL.
    pub fn poll_publish(&mut self, broker: usize, now_ms: u64) -> Option<Publish> {
        let link = self.links.get_mut(broker).filter(|l| l.connected)?;
        while let Some(first) = link.acks.pop_front() {
            let mut seqs = vec![first.seq];
            while seqs.len() < MAX_ACKS_PER_ENVELOPE {
                match link.acks.front() {
                    Some(a) if a.to == first.to && a.sender == first.sender => {
                        seqs.push(a.seq);
                        link.acks.pop_front();
                    }
                    _ => break,
                }
            }
            let ttl_ms = u32::try_from(self.config.ttl.as_millis()).unwrap_or(u32::MAX);
            let ack = Envelope::ack(first.sender, &seqs, &first.to, &self.me, now_ms, ttl_ms);
            match ack.encode_with(self.config.max_envelope, self.config.key.as_ref()) {
                Ok(bytes) => {
                    return Some(Publish {
                        broker,
                        recipient: first.to,
                        bytes,
                    })
                }
                Err(e) => tracing::warn!(error = %e, "signaling: cannot encode an acknowledgement"),
            }
        }
        let start = self.recent.partition_point(|r| r.seq < link.hint);
        let mut found = None;
        for (i, r) in self.recent.iter_mut().enumerate().skip(start) {
            if r.pending & bit(broker) == 0 {
                continue;
            }
            r.pending &= !bit(broker);
            if r.live(now_ms) {
                found = Some(i);
                break;
            }
        }
        let Some(i) = found else {
            link.hint = self.next_seq;
            return None;
        };
        link.hint = self.recent[i].seq + 1;
        let r = &mut self.recent[i];
        r.first_sent_ms.get_or_insert(now_ms);
        let mut bytes = r.bytes.clone();
        // Live, so younger than its TTL (a u32).
        let age_ms = u32::try_from(now_ms.saturating_sub(r.sent_ms)).unwrap_or(u32::MAX);
        restamp(&mut bytes, age_ms, self.config.key.as_ref());
        let publish = Publish {
            broker,
            recipient: r.recipient.clone(),
            bytes,
        };
        if let Some(path) = self.peer(&publish.recipient).paths.get_mut(broker) {
            path.unanswered_since.get_or_insert(now_ms);
            path.last_sent_ms = Some(now_ms);
        }
        Some(publish)
    }

    /// When [`SignalCore::handle_timeout`] is next due (Unix ms): the
    /// earliest resend of an unacknowledged message.
    pub fn poll_timeout(&self, now_ms: u64) -> Option<u64> {
        self.recent
            .iter()
            .filter(|r| r.live(now_ms))
            .map(|r| r.retry_at_ms)
            .min()
    }

    /// Resends what is due at `now_ms`: every unacknowledged message whose
    /// ack timeout passed goes again through the connected brokers not
    /// suspect for its recipient (all connected ones if every one is).
    /// Returns the brokers that now owe publishes (bit `i`: broker `i`).
    pub fn handle_timeout(&mut self, now_ms: u64) -> u64 {
        let cap = self.cap_ms();
        let mut woken = 0u64;
        for i in 0..self.recent.len() {
            let r = &self.recent[i];
            if !r.live(now_ms) || r.retry_at_ms > now_ms {
                continue;
            }
            let recipient = r.recipient.clone();
            let targets = self.targets(&recipient, usize::MAX, now_ms);
            let timeout = self.peer(&recipient).ack_timeout_ms(cap);
            let r = &mut self.recent[i];
            if targets != 0 {
                if r.first_sent_ms.is_some() {
                    r.resent = true;
                    self.resends += 1;
                }
                r.retries = r.retries.saturating_add(1);
            }
            // One, two, then four ack timeouts apart.
            let backoff = 1u64 << r.retries.saturating_sub(1).min(2);
            r.retry_at_ms = now_ms.saturating_add(timeout.saturating_mul(backoff));
            self.mark(i, targets);
            woken |= targets;
        }
        woken
    }

    fn queue_ack(&mut self, broker: usize, to: &str, sender: u64, seq: u64) {
        if to.is_empty() {
            return;
        }
        let max = self.config.max_pending_acks.max(1);
        let Some(link) = self.links.get_mut(broker) else {
            return;
        };
        if link.acks.len() >= max {
            link.acks.pop_front();
            self.acks_dropped += 1;
        }
        link.acks.push_back(PendingAck {
            to: to.to_string(),
            sender,
            seq,
        });
    }

    fn handle_ack(&mut self, broker: usize, e: &Envelope, now_ms: u64) {
        let mut sample = None;
        let mut any = false;
        for seq in e.acked() {
            let Some(i) = self.index_of(seq) else {
                continue;
            };
            let r = &mut self.recent[i];
            if r.recipient != e.from {
                continue;
            }
            any = true;
            if !r.acked {
                r.acked = true;
                r.pending = 0;
                if !r.resent {
                    sample = r.first_sent_ms.map(|t| now_ms.saturating_sub(t));
                }
            }
        }
        if !any {
            return;
        }
        let peer = self.peer(&e.from);
        if let Some(path) = peer.paths.get_mut(broker) {
            path.unanswered_since = None;
        }
        if let Some(rtt) = sample {
            peer.sample(rtt);
        }
        self.sweep_front(now_ms);
    }

    /// A publish arrived from `broker`: the message for the application
    /// (`None` for an acknowledgement, which is taken in), or why it was
    /// dropped (already logged). A message accepted — new or a duplicate —
    /// queues an acknowledgement for the broker it came through.
    ///
    /// # Errors
    ///
    /// [`Dropped`]: why the publish gives the application nothing.
    pub fn handle_incoming(
        &mut self,
        broker: usize,
        bytes: &[u8],
        now: Instant,
        now_ms: u64,
    ) -> Result<Option<Delivered>, Dropped> {
        let received = self.receive(broker, bytes, now, now_ms);
        if let Err(why) = &received {
            let n = self.dropped.count(why);
            // Whoever can publish on the topic can send garbage as fast as
            // it likes: a log line for each of the first eight of a kind,
            // then at every power of two; the counters count them all.
            if n <= 8 || n.is_power_of_two() {
                match why {
                    Dropped::Invalid(e) => tracing::warn!(
                        broker,
                        error = %e,
                        dropped = n,
                        "dropping a message on the signaling topic"
                    ),
                    Dropped::Implausible => tracing::warn!(
                        broker,
                        dropped = n,
                        "dropping an implausible message (TTL, send time or sequence number)"
                    ),
                    _ => {}
                }
            }
        }
        received
    }

    fn receive(
        &mut self,
        broker: usize,
        bytes: &[u8],
        now: Instant,
        now_ms: u64,
    ) -> Result<Option<Delivered>, Dropped> {
        let e = Envelope::decode(bytes, self.config.max_envelope, self.config.key.as_ref())
            .map_err(Dropped::Invalid)?;
        if e.recipient != self.me {
            return Err(Dropped::NotForUs);
        }
        // The receiver bounds what a message may claim: a TTL longer than
        // its own would let a message (or a replay of it) live longer than
        // the receiver remembers it.
        if u64::from(e.ttl_ms) > ms(self.config.ttl) {
            tracing::debug!(?e.id, ttl_ms = e.ttl_ms, "implausible TTL");
            return Err(Dropped::Implausible);
        }
        // Nothing here compares the sender's clock with ours: the age says
        // how much of its TTL the sender used, the transit estimate how
        // long a broker held it beyond the tolerance. (Acknowledgements
        // carry the acknowledged sender's id, not their writer's: only
        // their age counts; a late one is harmless.)
        let held_ms = if e.kind == Kind::Message {
            let published_ms = e.sent_at_ms.saturating_add(u64::from(e.age_ms));
            self.transit
                .excess(e.id.sender, published_ms, now_ms)
                .saturating_sub(ms(self.config.delay_tolerance))
        } else {
            0
        };
        if u64::from(e.age_ms).saturating_add(held_ms) >= u64::from(e.ttl_ms) {
            tracing::debug!(?e.id, age_ms = e.age_ms, held_ms, "dropping an expired message");
            return Err(Dropped::Expired);
        }
        if e.kind == Kind::Ack {
            if e.id.sender != self.sender {
                return Err(Dropped::NotForUs);
            }
            self.handle_ack(broker, &e, now_ms);
            return Ok(None);
        }
        match self.dedup.check(e.id, now) {
            Verdict::New => {
                self.queue_ack(broker, &e.from, e.id.sender, e.id.seq);
                Ok(Some(Delivered {
                    id: e.id,
                    from: e.from,
                    payload: e.payload,
                    via: broker,
                }))
            }
            Verdict::Duplicate => {
                // Its sender may not have heard the first acknowledgement.
                self.queue_ack(broker, &e.from, e.id.sender, e.id.seq);
                Err(Dropped::Duplicate)
            }
            Verdict::TooOld => Err(Dropped::Duplicate),
            Verdict::Implausible => {
                tracing::debug!(?e.id, "sequence number jumps too far");
                Err(Dropped::Implausible)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::signal::envelope::Kind;
    use proptest::prelude::*;

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
                            kind: Kind::Message,
                            id: MessageId { sender, seq },
                            sent_at_ms: now_ms,
                            ttl_ms: 30_000,
                            age_ms: 0,
                            recipient: "bob".into(),
                            from: "alice".into(),
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
                    if let Ok(Some(d)) = bob.handle_incoming(0, &bytes, t0, now_ms) {
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

    fn envelope(seq: u64, sent_at_ms: u64, ttl_ms: u32, age_ms: u32) -> Vec<u8> {
        Envelope {
            kind: Kind::Message,
            id: MessageId { sender: 5, seq },
            sent_at_ms,
            ttl_ms,
            age_ms,
            recipient: "b".into(),
            from: "a".into(),
            payload: b"x".to_vec(),
        }
        .encode(1024)
        .unwrap()
    }

    #[test]
    fn a_receiver_bounds_the_ttl_a_message_claims_and_never_compares_clocks() {
        let t = Instant::now();
        let mut b = SignalCore::new("b", 2, 1, SignalConfig::default());
        let now = 1_800_000_000_000;
        assert_eq!(
            b.handle_incoming(0, &envelope(1, now, u32::MAX, 0), t, now),
            Err(Dropped::Implausible),
            "a TTL beyond the receiver's"
        );
        // Its sender's clock is an hour ahead of ours: no matter.
        assert!(b
            .handle_incoming(0, &envelope(2, now + 3_600_000, 1_000, 0), t, now)
            .is_ok_and(|d| d.is_some()),);
        // Its sender held it for its whole TTL before this copy: expired.
        assert_eq!(
            b.handle_incoming(0, &envelope(3, now + 3_600_000, 1_000, 1_000), t, now + 10),
            Err(Dropped::Expired)
        );
        assert!(b
            .handle_incoming(0, &envelope(4, now + 3_600_000, 1_000, 999), t, now + 10)
            .is_ok_and(|d| d.is_some()));
    }

    #[test]
    fn a_copy_a_broker_held_past_its_ttl_is_dropped_whatever_the_clocks() {
        for offset in [-3_600_000i64, -60_000, 0, 60_000] {
            let t = Instant::now();
            let config = SignalConfig {
                ttl: Duration::from_secs(10),
                delay_tolerance: Duration::from_secs(2),
                ..SignalConfig::default()
            };
            let mut b = SignalCore::new("b", 2, 1, config);
            let ours = 1_800_000_000_000u64;
            let theirs = |at: u64| at.saturating_add_signed(offset);
            // Copies that took 20 ms.
            for seq in 1..=3 {
                let at = ours + seq * 100;
                assert!(b
                    .handle_incoming(0, &envelope(seq, theirs(at - 20), 10_000, 0), t, at)
                    .is_ok_and(|d| d.is_some()));
            }
            // Published 9.5 s before it arrived: held 7.48 s beyond the
            // tolerance, after its sender had held it for 3 s.
            let at = ours + 20_000;
            assert_eq!(
                b.handle_incoming(0, &envelope(4, theirs(at - 12_500), 10_000, 3_000), t, at),
                Err(Dropped::Expired),
                "offset {offset}"
            );
            // 6.98 s beyond the tolerance after 2 s with its sender: 1.02 s
            // of its life left.
            assert!(b
                .handle_incoming(0, &envelope(5, theirs(at - 11_000), 10_000, 2_000), t, at)
                .is_ok_and(|d| d.is_some()));
            // Message 1 again, an hour later, when the duplicate filter has
            // long forgotten its sender (unkeyed: a broker replaying it).
            let later = ours + 3_600_000;
            assert_eq!(
                b.handle_incoming(
                    0,
                    &envelope(1, theirs(ours + 80), 10_000, 0),
                    t + Duration::from_secs(3_600),
                    later
                ),
                Err(Dropped::Expired)
            );
        }
    }

    /// Two endpoints whose wall clocks are far apart, both ways: every
    /// message delivered once, every acknowledgement taken (so nothing is
    /// resent), as with clocks that agree.
    #[test]
    fn endpoints_whose_clocks_disagree_by_an_hour_talk_as_if_they_agreed() {
        for offset in [-3_600_000i64, -60_000, 0, 60_000, 3_600_000] {
            let t0 = Instant::now();
            let config = SignalConfig {
                key: Some(SignalKey::from_bytes([3; 32])),
                ..SignalConfig::default()
            };
            let mut a = SignalCore::new("a", 1, 1, config);
            let mut b = SignalCore::new("b", 2, 1, config);
            let ours = 1_800_000_000_000u64;
            let theirs = |at: u64| at.saturating_add_signed(offset);
            a.set_healthy(0, true, ours);
            b.set_healthy(0, true, theirs(ours));
            let mut got = Vec::new();
            for i in 0..50u64 {
                let at = ours + i * 40;
                a.send("b", &i.to_be_bytes(), at).unwrap();
                let p = a.poll_publish(0, at).unwrap();
                let now = t0 + Duration::from_millis(i * 40 + 15);
                if let Ok(Some(d)) = b.handle_incoming(0, &p.bytes, now, theirs(at + 15)) {
                    got.push(d.payload);
                }
                let ack = b.poll_publish(0, theirs(at + 15)).unwrap();
                assert_eq!(a.handle_incoming(0, &ack.bytes, now, at + 30), Ok(None));
            }
            let want: Vec<Vec<u8>> = (0..50u64).map(|i| i.to_be_bytes().to_vec()).collect();
            assert_eq!(got, want, "offset {offset}");
            assert_eq!(a.unacked(ours + 2_000), 0);
            assert_eq!(a.resends(), 0);
            assert_eq!(b.dropped(), DropCounts::default());
        }
    }

    /// A publisher flooding the topic with garbage is counted exactly but
    /// logged only for the first eight and then at powers of two, so it
    /// cannot flood the log.
    #[test]
    fn a_garbage_flood_is_counted_whole_and_logged_sparsely() {
        #[derive(Clone, Default)]
        struct Lines(std::sync::Arc<std::sync::Mutex<Vec<u8>>>);
        impl std::io::Write for Lines {
            fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
                self.0.lock().unwrap().extend_from_slice(buf);
                Ok(buf.len())
            }
            fn flush(&mut self) -> std::io::Result<()> {
                Ok(())
            }
        }
        let lines = Lines::default();
        let sink = lines.clone();
        let subscriber = tracing_subscriber::fmt()
            .with_writer(move || sink.clone())
            .with_ansi(false)
            .finish();
        let t = Instant::now();
        let mut b = SignalCore::new("b", 2, 1, SignalConfig::default());
        tracing::subscriber::with_default(subscriber, || {
            for i in 0..1000u32 {
                let _ = b.handle_incoming(0, &i.to_be_bytes(), t, 0);
            }
        });
        assert_eq!(b.dropped().invalid, 1000);
        let log = String::from_utf8(lines.0.lock().unwrap().clone()).unwrap();
        // 1..=8, then 16, 32, 64, 128, 256, 512.
        assert_eq!(log.lines().count(), 14, "{log}");
        assert!(log.lines().last().unwrap().contains("dropped=512"));
    }

    /// A full outbox refuses new messages (backpressure) instead of
    /// dropping held ones; acknowledgements or expiry make room again.
    #[test]
    fn a_full_outbox_refuses_new_messages_and_drops_none() {
        let t = Instant::now();
        let config = SignalConfig {
            max_recent: 3,
            ..SignalConfig::default()
        };
        let mut a = SignalCore::new("a", 1, 1, config);
        let mut b = SignalCore::new("b", 2, 1, config);
        a.set_healthy(0, true, 0);
        b.set_healthy(0, true, 0);
        for i in 0..3u8 {
            a.send("b", &[i], 0).unwrap();
        }
        assert_eq!(
            a.send("b", b"fourth", 0),
            Err(SendError::Full {
                messages: 3,
                bytes: a.recent_bytes()
            })
        );
        assert_eq!(a.refused(), 1);
        // The receiver gets the three and acknowledges them.
        while let Some(p) = a.poll_publish(0, 1) {
            b.handle_incoming(0, &p.bytes, t, 1).unwrap();
        }
        while let Some(p) = b.poll_publish(0, 2) {
            assert_eq!(a.handle_incoming(0, &p.bytes, t, 2), Ok(None));
        }
        assert_eq!(a.unacked(3), 0);
        let id = a.send("b", b"fourth", 3).unwrap();
        assert_eq!(id.seq, 4, "a refused send uses no sequence number");
        // Unacknowledged ones leave only by expiry.
        a.send("b", b"5", 3).unwrap();
        a.send("b", b"6", 3).unwrap();
        assert!(a.send("b", b"7", 3).is_err());
        assert!(
            a.send("b", b"7", 3 + 30_001).is_ok(),
            "expired ones make room"
        );
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
        assert!(b.handle_incoming(0, &p1.bytes, t, 1).is_ok());
        assert_eq!(
            b.handle_incoming(0, &p1.bytes, t, 2),
            Err(Dropped::Duplicate)
        );
        // A copy 36 s late: past its 30 s TTL with the 5 s tolerance.
        assert_eq!(
            b.handle_incoming(0, &p1.bytes, t, 36_000),
            Err(Dropped::Expired)
        );
        assert_eq!(b.dropped().expired, 1);
    }
}
