//! The signaling workload: the client sends numbered messages to the
//! server through brokers, and the server's application records each one
//! it is handed. Both programs are generic over the engine's
//! [`Broker`] trait, so the very same code runs against real mosquitto
//! (netns) and the simulated brokers (sim).
//!
//! * Baseline: what a typical peer does — one broker, fire and forget,
//!   reconnecting in a blind loop when it notices the broker is gone; each
//!   message stamped with an absolute expiry time (its sender's wall clock
//!   plus the TTL) that the receiver checks against its own, with a few
//!   seconds' leeway, as JWT's `exp` is checked (RFC 7519 §4.1.4).
//! * Mitigated: [`netmend::signal::Signal`] over every broker.

use super::programs::Net;
use super::Recorder;
use netmend::signal::{topic_for, Broker, BrokerConn, LinkConfig, SendError, Signal, SignalConfig};
use std::io;
use std::time::Duration;

/// Endpoint name of the sending peer (its topic is derived from it).
pub const SENDER: &str = "client";
/// Endpoint name of the receiving peer.
pub const RECEIVER: &str = "server";

/// Pause of the naive peer between reconnects.
const NAIVE_RETRY: Duration = Duration::from_millis(100);

/// How far past its expiry time the naive receiver still takes a message
/// (its clock and the sender's may disagree a little): the engine's old
/// tolerance, within the range JWT libraries default to.
const NAIVE_LEEWAY: Duration = Duration::from_secs(5);

/// Unix time (ms) at the start of every run: the peers' wall clocks start
/// here (plus their skew), so a run replays exactly whatever the day.
pub const WALL_EPOCH_MS: u64 = 1_800_000_000_000;

/// A peer's wall clock: the run's epoch, plus the time since the run
/// started, plus what the run's clock skews put on that peer's host by
/// then.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct WallClock {
    /// `(from, offset ms)`: each adds its offset from its time on.
    pub steps: Vec<(Duration, i64)>,
}

impl WallClock {
    /// Its offset at `at` (time since the run started), ms.
    pub fn offset_ms(&self, at: Duration) -> i64 {
        self.steps
            .iter()
            .filter(|(from, _)| *from <= at)
            .map(|(_, o)| o)
            .sum()
    }

    /// What it reads at `at` (Unix ms).
    pub fn now_ms(&self, at: Duration) -> u64 {
        let since = u64::try_from(at.as_millis()).unwrap_or(u64::MAX);
        WALL_EPOCH_MS
            .saturating_add(since)
            .saturating_add_signed(self.offset_ms(at))
    }

    /// What it reads at `at`, as a `SystemTime`.
    pub fn system_time(&self, at: Duration) -> std::time::SystemTime {
        std::time::UNIX_EPOCH + Duration::from_millis(self.now_ms(at))
    }
}

/// The naive peers' message: its absolute expiry time (Unix ms, big
/// endian), then the payload.
fn stamped(expires_ms: u64, payload: &[u8]) -> Vec<u8> {
    let mut out = expires_ms.to_be_bytes().to_vec();
    out.extend_from_slice(payload);
    out
}

/// The expiry time and payload of a naive message; `None` when too short.
fn unstamped(bytes: &[u8]) -> Option<(u64, &[u8])> {
    let (expires, payload) = bytes.split_first_chunk::<8>()?;
    Some((u64::from_be_bytes(*expires), payload))
}

/// How long the sender waits for the receiver to come online before it
/// starts anyway (the messages then show as lost).
const READY_WAIT: Duration = Duration::from_secs(10);

/// What the sending peer does.
#[derive(Clone, Debug)]
pub struct SignalingSpec {
    /// Messages to send.
    pub messages: u64,
    /// Time between two sends.
    pub interval: Duration,
    /// Payload bytes of each message.
    pub payload: usize,
    /// Time allowed for one broker connect.
    pub connect_timeout: Duration,
    /// After the last send, how long stragglers may still arrive.
    pub settle: Duration,
    /// How long a message stays worth delivering.
    pub ttl: Duration,
    /// The sending peer's wall clock (its host's skew).
    pub sender_clock: WallClock,
    /// The receiving peer's wall clock.
    pub receiver_clock: WallClock,
}

/// The payload of message `n`: its number, then filler derived from it, so
/// that a payload mixed up with another one's is caught.
pub fn payload(n: u64, len: usize) -> Vec<u8> {
    let mut out = n.to_le_bytes().to_vec();
    out.extend((0..len.saturating_sub(8)).map(|i| filler(n, i)));
    out
}

fn filler(n: u64, i: usize) -> u8 {
    (n as u8).wrapping_mul(31).wrapping_add(i as u8)
}

/// The number of a payload made by [`payload`]; `None` for anything else.
pub fn number(bytes: &[u8]) -> Option<u64> {
    let n = u64::from_le_bytes(bytes.get(..8)?.try_into().ok()?);
    bytes[8..]
        .iter()
        .enumerate()
        .all(|(i, b)| *b == filler(n, i))
        .then_some(n)
}

/// What the receiver records for a payload that is no message of the run.
const UNKNOWN: u64 = u64::MAX;

/// A broker whose connection attempts are recorded in the run's record,
/// timed on `net`'s clock.
pub struct Counted<B, N> {
    inner: B,
    net: N,
    rec: Recorder,
}

impl<B, N> Counted<B, N> {
    /// Records `inner`'s connects into `rec`.
    pub fn new(inner: B, net: N, rec: Recorder) -> Self {
        Counted { inner, net, rec }
    }
}

impl<B: Broker, N: Net> Broker for Counted<B, N> {
    type Conn = B::Conn;

    async fn connect(&mut self, client_id: &str, topic: &str) -> io::Result<B::Conn> {
        self.rec.attempt(self.net.now());
        self.inner.connect(client_id, topic).await
    }
}

/// Sleeps until `at` (time since the run started).
async fn until<N: Net>(net: &N, at: Duration) {
    let now = net.now();
    if at > now {
        tokio::time::sleep(at - now).await;
    }
}

/// Waits (bounded) for the receiver to be online; returns when sending
/// starts.
async fn wait_for_receiver<N: Net>(net: &N, rec: &Recorder) -> Duration {
    let give_up = net.now() + READY_WAIT;
    while !rec.is_receiver_ready() && net.now() < give_up {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    net.now()
}

/// After the last send: waits until every message arrived or `settle`
/// passed, then marks the client done.
async fn settle<N: Net>(net: &N, spec: &SignalingSpec, rec: &Recorder) {
    let give_up = net.now() + spec.settle;
    while (rec.messages_delivered() as u64) < spec.messages && net.now() < give_up {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    rec.client_done(net.now());
}

/// The naive sender: one broker; a message goes out on the connection it
/// has, or is gone if it has none (the application believes it sent it,
/// as with clients that queue into a dead connection). It notices a dead
/// broker when a publish fails and reconnects at most every
/// 100 ms.
pub async fn baseline_sender<N: Net, B: Broker>(
    net: N,
    mut broker: B,
    spec: SignalingSpec,
    rec: Recorder,
) {
    let client_id = format!("nm-naive-{SENDER}");
    let mut conn: Option<B::Conn> = None;
    let mut last_try: Option<Duration> = None;
    let start = wait_for_receiver(&net, &rec).await;
    for n in 0..spec.messages {
        until(&net, start + spec.interval * n as u32).await;
        if conn.is_none() && last_try.is_none_or(|t| net.now() >= t + NAIVE_RETRY) {
            last_try = Some(net.now());
            let connected = tokio::time::timeout(
                spec.connect_timeout,
                broker.connect(&client_id, &topic_for(SENDER)),
            )
            .await;
            conn = match connected {
                Ok(Ok(c)) => Some(c),
                Ok(Err(e)) => {
                    tracing::debug!(error = %e, "naive sender: broker unreachable");
                    None
                }
                Err(_) => None,
            };
        }
        rec.message_sent(n, net.now());
        if let Some(c) = conn.as_mut() {
            let ttl_ms = u64::try_from(spec.ttl.as_millis()).unwrap_or(u64::MAX);
            let expires_ms = spec.sender_clock.now_ms(net.now()).saturating_add(ttl_ms);
            if let Err(e) = c
                .publish(
                    &topic_for(RECEIVER),
                    stamped(expires_ms, &payload(n, spec.payload)),
                )
                .await
            {
                tracing::debug!(error = %e, n, "naive sender: publish failed, message gone");
                conn = None;
            }
        }
    }
    settle(&net, &spec, &rec).await;
}

/// The naive receiver: one broker, subscribed while connected; after a
/// loss it reconnects in a blind loop.
pub async fn baseline_receiver<N: Net, B: Broker>(
    net: N,
    mut broker: B,
    spec: SignalingSpec,
    rec: Recorder,
) {
    let client_id = format!("nm-naive-{RECEIVER}");
    loop {
        let connected = tokio::time::timeout(
            spec.connect_timeout,
            broker.connect(&client_id, &topic_for(RECEIVER)),
        )
        .await
        .unwrap_or_else(|_| Err(io::Error::from(io::ErrorKind::TimedOut)));
        match connected {
            Ok(mut conn) => {
                rec.receiver_ready();
                loop {
                    match conn.recv().await {
                        Ok(bytes) => {
                            let now = net.now();
                            let leeway = u64::try_from(NAIVE_LEEWAY.as_millis()).unwrap_or(0);
                            match unstamped(&bytes) {
                                Some((expires_ms, _))
                                    if spec.receiver_clock.now_ms(now)
                                        > expires_ms.saturating_add(leeway) =>
                                {
                                    tracing::debug!(expires_ms, "naive receiver: expired, dropped");
                                }
                                Some((_, payload)) => {
                                    rec.message_received(number(payload).unwrap_or(UNKNOWN), now)
                                }
                                None => rec.message_received(UNKNOWN, now),
                            }
                        }
                        Err(e) => {
                            tracing::debug!(error = %e, "naive receiver: broker lost");
                            break;
                        }
                    }
                }
            }
            Err(e) => tracing::debug!(error = %e, "naive receiver: broker unreachable"),
        }
        tokio::time::sleep(NAIVE_RETRY).await;
    }
}

/// The engine's sender: every message through every healthy broker.
pub async fn mitigated_sender<N: Net, B: Broker>(
    net: N,
    brokers: Vec<B>,
    config: SignalConfig,
    link: LinkConfig,
    spec: SignalingSpec,
    rec: Recorder,
) {
    let signal = Signal::start(SENDER, brokers, config, link);
    let bound = config.max_recent as u64;
    let outbox = |signal: &Signal| rec.queue_len("outbox", signal.unacked() as u64, bound);
    let start = wait_for_receiver(&net, &rec).await;
    for n in 0..spec.messages {
        until(&net, start + spec.interval * n as u32).await;
        rec.message_sent(n, net.now());
        // A full outbox is backpressure: the application keeps the message
        // and tries again (the wait counts in its latency).
        loop {
            match signal.send(RECEIVER, &payload(n, spec.payload)) {
                Ok(_) => break,
                Err(SendError::Full { .. }) => {
                    outbox(&signal);
                    tokio::time::sleep(Duration::from_millis(5)).await;
                }
                Err(e) => {
                    rec.client_failed(format!("send message {n}: {e}"));
                    return;
                }
            }
        }
        outbox(&signal);
    }
    // Until everything arrived (or the settle time passed); the sender
    // keeps resending meanwhile.
    let give_up = net.now() + spec.settle;
    while (rec.messages_delivered() as u64) < spec.messages && net.now() < give_up {
        outbox(&signal);
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    rec.client_done(net.now());
}

/// A hostile publisher: subscribed to the receiver's topic on one broker
/// from the start, it records the genuine envelopes it sees; at each
/// `(at, count)` it publishes `count` forgeries on that topic, in turn:
/// a replay of a recorded envelope, the real sender's id with a huge
/// sequence number, a foreign sender id, a recorded envelope with one byte
/// altered, and garbage. It knows no group key.
pub async fn forger<N: Net, B: Broker>(net: N, mut broker: B, attacks: Vec<(Duration, u32)>) {
    let mut conn = forger_connect(&mut broker).await;
    let mut seen: Vec<Vec<u8>> = Vec::new();
    for (at, count) in attacks {
        // Record until it is time.
        loop {
            let now = net.now();
            if now >= at {
                break;
            }
            match tokio::time::timeout(at - now, conn.recv()).await {
                // Bounded: a forger keeps at most 1,024 envelopes.
                Ok(Ok(bytes)) if seen.len() < 1024 => seen.push(bytes),
                Ok(Ok(_)) | Err(_) => {}
                // The broker went away: connect again (a closed connection
                // answers at once, so waiting on it would spin).
                Ok(Err(_)) => conn = forger_connect(&mut broker).await,
            }
        }
        for i in 0..count {
            let forged = forgery(i, &seen);
            if conn.publish(&topic_for(RECEIVER), forged).await.is_err() {
                tracing::debug!("forger: broker lost");
                return;
            }
        }
    }
    // Stay connected: a client library may still hold what was published
    // in its queue, and closing would drop it.
    while conn.recv().await.is_ok() {}
}

/// The forger's subscription to the receiver's topic, retried every
/// 100 ms until the broker takes it.
async fn forger_connect<B: Broker>(broker: &mut B) -> B::Conn {
    loop {
        match broker.connect("nm-forger", &topic_for(RECEIVER)).await {
            Ok(c) => return c,
            Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
        }
    }
}

/// Forgery `i` of the kinds [`forger`] cycles through.
fn forgery(i: u32, seen: &[Vec<u8>]) -> Vec<u8> {
    use netmend::signal::{Envelope, Kind, MessageId};
    let pick = |k: u32| seen.get(k as usize % seen.len().max(1)).cloned();
    // Fields of a recorded envelope (see the envelope format: magic,
    // version, kind, sender, seq, sent_at_ms, …): the real sender's id, and
    // a send time the receiver finds plausible.
    let field = |range: std::ops::Range<usize>| {
        pick(i).and_then(|e| {
            e.get(range)
                .and_then(|b| <[u8; 8]>::try_from(b).ok())
                .map(u64::from_be_bytes)
        })
    };
    let (real_id, sent_at_ms) = (field(5..13), field(21..29).unwrap_or(0));
    let forge = |sender: u64, seq: u64| {
        Envelope {
            kind: Kind::Message,
            id: MessageId { sender, seq },
            sent_at_ms,
            ttl_ms: 30_000,
            age_ms: 0,
            recipient: RECEIVER.into(),
            from: SENDER.into(),
            payload: payload(u64::MAX - u64::from(i), 32),
        }
        .encode(1 << 16)
        .unwrap_or_default()
    };
    match i % 5 {
        0 => pick(i).unwrap_or_else(|| b"replay".to_vec()),
        1 => forge(real_id.unwrap_or(1), u64::MAX - u64::from(i)),
        2 => forge(0xF0F0_0000 + u64::from(i), u64::from(i) + 1),
        3 => {
            let mut e = pick(i).unwrap_or_else(|| b"altered".to_vec());
            if let Some(b) = e.last_mut() {
                *b ^= 0x40;
            }
            e
        }
        _ => format!("garbage {i}").into_bytes(),
    }
}

/// The engine's receiver: subscribed on every broker, each message handed
/// over once. Online once every broker has confirmed it.
pub async fn mitigated_receiver<N: Net, B: Broker>(
    net: N,
    brokers: Vec<B>,
    config: SignalConfig,
    link: LinkConfig,
    rec: Recorder,
) {
    let count = brokers.len();
    let mut signal = Signal::start(RECEIVER, brokers, config, link);
    let give_up = net.now() + READY_WAIT;
    while signal.healthy().len() < count && net.now() < give_up {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    rec.receiver_ready();
    while let Some(d) = signal.recv().await {
        rec.message_received(number(&d.payload).unwrap_or(UNKNOWN), net.now());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_wall_clock_adds_the_skews_that_have_begun() {
        let clock = WallClock {
            steps: vec![(Duration::ZERO, -60_000), (Duration::from_secs(2), 5_000)],
        };
        assert_eq!(clock.now_ms(Duration::ZERO), WALL_EPOCH_MS - 60_000);
        assert_eq!(
            clock.now_ms(Duration::from_millis(1_999)),
            WALL_EPOCH_MS - 58_001
        );
        assert_eq!(clock.now_ms(Duration::from_secs(2)), WALL_EPOCH_MS - 53_000);
        assert_eq!(
            WallClock::default().now_ms(Duration::from_secs(1)),
            WALL_EPOCH_MS + 1_000
        );
        assert_eq!(
            stamped(7, b"abc"),
            [0, 0, 0, 0, 0, 0, 0, 7, b'a', b'b', b'c']
        );
        assert_eq!(unstamped(&stamped(7, b"abc")), Some((7, &b"abc"[..])));
        assert_eq!(unstamped(b"short"), None);
    }

    #[test]
    fn payloads_carry_their_number_and_refuse_anything_else() {
        for (n, len) in [(0, 8), (7, 64), (u64::MAX - 1, 200)] {
            assert_eq!(number(&payload(n, len)), Some(n));
        }
        let mut p = payload(5, 64);
        p[40] ^= 1;
        assert_eq!(number(&p), None);
        assert_eq!(number(b"short"), None);
        // Another message's filler under this number.
        let mut q = payload(6, 64);
        q[..8].copy_from_slice(&5u64.to_le_bytes());
        assert_eq!(number(&q), None);
    }
}
