//! The tokio side of signaling: a [`Signal`] endpoint over N brokers, one
//! task per broker (connect, confirm, subscribe, publish, receive,
//! reconnect with jittered backoff) and one timer task (resends for want
//! of an acknowledgement), all feeding one [`SignalCore`]. Every task is
//! aborted when the [`Signal`] is dropped.
//!
//! Brokers sit behind the small [`Broker`] trait, so the simulated backend
//! can drive the same endpoint; [`Mqtt`] is the real one (rumqttc).

use super::core::{Delivered, DropCounts, SendError, SignalConfig, SignalCore};
use super::envelope::MessageId;
use crate::reconnect::{Backoff, Policy};
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};
use std::collections::VecDeque;
use std::future::Future;
use std::io;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::{mpsc, Notify};

/// One broker a signaling endpoint can use.
pub trait Broker: Send + 'static {
    /// A confirmed connection, subscribed to the endpoint's topic.
    type Conn: BrokerConn;
    /// Connects as `client_id`, waits for the broker to confirm the
    /// connection, and subscribes to `topic`.
    fn connect(
        &mut self,
        client_id: &str,
        topic: &str,
    ) -> impl Future<Output = io::Result<Self::Conn>> + Send;
}

/// A live broker connection.
pub trait BrokerConn: Send + 'static {
    /// Publishes `bytes` on `topic`.
    fn publish(
        &mut self,
        topic: &str,
        bytes: Vec<u8>,
    ) -> impl Future<Output = io::Result<()>> + Send;
    /// The next message on the subscribed topic; an error means the
    /// connection is gone.
    fn recv(&mut self) -> impl Future<Output = io::Result<Vec<u8>>> + Send;
}

/// The topic messages for `recipient` go to.
pub fn topic_for(recipient: &str) -> String {
    // MQTT wildcards and level separators would let a name reach other
    // topics; replace them.
    let safe: String = recipient
        .chars()
        .map(|c| {
            if matches!(c, '+' | '#' | '/' | '\0') {
                '_'
            } else {
                c
            }
        })
        .collect();
    format!("netmend/signal/v1/{safe}")
}

struct Inner {
    core: SignalCore,
    /// Messages for the application, at most `SignalConfig::max_delivered`;
    /// when full the oldest is dropped (counted in `delivered_dropped`).
    delivered: VecDeque<Delivered>,
    max_delivered: usize,
    delivered_dropped: u64,
}

impl Inner {
    fn deliver(&mut self, d: Delivered) {
        if self.delivered.len() >= self.max_delivered {
            self.delivered.pop_front();
            self.delivered_dropped += 1;
            tracing::warn!("the application is not reading: oldest signaling message dropped");
        }
        self.delivered.push_back(d);
    }
}

/// Wake-ups between the endpoint and its broker tasks (no queue: each
/// broker task pulls its next publish from the core).
struct Wake {
    brokers: Vec<Notify>,
    delivered: Notify,
    /// A send may move the next resend earlier.
    timer: Notify,
}

impl Wake {
    fn brokers(&self, set: u64) {
        for (i, w) in self.brokers.iter().enumerate() {
            if set & (1u64 << i) != 0 {
                w.notify_one();
            }
        }
    }
}

fn tokio_now() -> std::time::Instant {
    // tokio's clock: virtual under turmoil and paused tests.
    tokio::time::Instant::now().into_std()
}

/// The endpoint's Unix time in ms: the wall clock read once at start,
/// advanced by tokio's monotonic clock. A wall clock stepped mid-run does
/// not move resends or expiry, and under turmoil or a paused runtime the
/// time is virtual like every other timer of the endpoint.
#[derive(Clone, Copy, Debug)]
struct Clock {
    base_ms: u64,
    started: tokio::time::Instant,
}

impl Clock {
    fn start(wall: Option<std::time::SystemTime>) -> Clock {
        Clock {
            base_ms: wall
                .unwrap_or_else(std::time::SystemTime::now)
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX)),
            started: tokio::time::Instant::now(),
        }
    }

    fn now_ms(&self) -> u64 {
        let elapsed = u64::try_from(self.started.elapsed().as_millis()).unwrap_or(u64::MAX);
        self.base_ms.saturating_add(elapsed)
    }

    fn instant_at(&self, at_ms: u64) -> tokio::time::Instant {
        self.started + Duration::from_millis(at_ms.saturating_sub(self.base_ms))
    }
}

/// A signaling endpoint: `send` goes out through every healthy broker,
/// `recv` yields each message once.
pub struct Signal {
    inner: Arc<Mutex<Inner>>,
    wake: Arc<Wake>,
    clock: Clock,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Drop for Signal {
    fn drop(&mut self) {
        for t in &self.tasks {
            t.abort();
        }
    }
}

/// Connection tunables of each broker task.
#[derive(Clone, Debug)]
pub struct LinkConfig {
    /// Reconnect backoff per broker (never gives up by default).
    pub policy: Policy,
    /// Time allowed for connect + confirm + subscribe.
    pub connect_timeout: Duration,
    /// Seed of the endpoint's sender id and backoff jitter; `None` draws
    /// them from the OS. A simulation sets it so a run replays exactly.
    pub seed: Option<u64>,
    /// The wall-clock time the endpoint starts at; `None` reads the system
    /// clock. It is read once: the endpoint's time then advances with
    /// tokio's monotonic clock. Whatever it is, peers need not agree on it
    /// (expiry counts from receipt); a simulation sets it to replay
    /// exactly, or to give two peers clocks that disagree.
    pub wall_clock: Option<std::time::SystemTime>,
}

impl Default for LinkConfig {
    fn default() -> Self {
        LinkConfig {
            policy: Policy {
                initial_delay: Duration::from_millis(100),
                max_delay: Duration::from_secs(5),
                max_attempts: None,
                max_outage: None,
                ..Policy::default()
            },
            connect_timeout: Duration::from_secs(5),
            seed: None,
            wall_clock: None,
        }
    }
}

impl Signal {
    /// Starts endpoint `me` over `brokers` on the current runtime.
    pub fn start<B: Broker>(
        me: &str,
        brokers: Vec<B>,
        config: SignalConfig,
        link: LinkConfig,
    ) -> Signal {
        let mut seeds = match link.seed {
            Some(seed) => SmallRng::seed_from_u64(seed),
            None => SmallRng::from_os_rng(),
        };
        let sender: u64 = seeds.random();
        let brokers: Vec<B> = brokers.into_iter().take(super::core::MAX_BROKERS).collect();
        let wake = Arc::new(Wake {
            brokers: brokers.iter().map(|_| Notify::new()).collect(),
            delivered: Notify::new(),
            timer: Notify::new(),
        });
        let clock = Clock::start(link.wall_clock);
        let inner = Arc::new(Mutex::new(Inner {
            core: SignalCore::new(me, sender, brokers.len(), config),
            delivered: VecDeque::new(),
            max_delivered: config.max_delivered.max(1),
            delivered_dropped: 0,
        }));
        let topic = topic_for(me);
        let mut tasks: Vec<_> = brokers
            .into_iter()
            .enumerate()
            .map(|(i, broker)| {
                let slot = Slot {
                    index: i,
                    client_id: format!("nm-{me}-{sender:016x}-{i}"),
                    topic: topic.clone(),
                    rng: SmallRng::seed_from_u64(seeds.random()),
                };
                tokio::spawn(run_broker(
                    slot,
                    broker,
                    wake.clone(),
                    inner.clone(),
                    link.clone(),
                    clock,
                ))
            })
            .collect();
        tasks.push(tokio::spawn(run_timer(wake.clone(), inner.clone(), clock)));
        Signal {
            inner,
            wake,
            clock,
            tasks,
        }
    }

    /// Sends `payload` to `peer` through the healthy brokers (or, if none
    /// is, through the next one confirmed within the TTL), and again
    /// through the brokers healthy for `peer` until `peer` acknowledges it
    /// or its TTL passes.
    ///
    /// # Errors
    ///
    /// [`SendError::Encode`] when the names or the payload do not fit an
    /// envelope of `SignalConfig::max_envelope` bytes; [`SendError::Full`]
    /// when `SignalConfig::max_recent` messages (or `max_recent_bytes`)
    /// await acknowledgement — try again later, nothing was sent.
    pub fn send(&self, peer: &str, payload: &[u8]) -> Result<MessageId, SendError> {
        let id = lock(&self.inner)
            .core
            .send(peer, payload, self.clock.now_ms())?;
        for w in &self.wake.brokers {
            w.notify_one();
        }
        self.wake.timer.notify_one();
        Ok(id)
    }

    /// Messages sent and not acknowledged yet (within their TTL).
    pub fn unacked(&self) -> usize {
        lock(&self.inner).core.unacked(self.clock.now_ms())
    }

    /// Messages sent again for want of an acknowledgement.
    pub fn resends(&self) -> u64 {
        lock(&self.inner).core.resends()
    }

    /// Sends refused because the outbox was full.
    pub fn refused(&self) -> u64 {
        lock(&self.inner).core.refused()
    }

    /// The next message for this endpoint, each exactly once.
    ///
    /// # Cancel safety
    ///
    /// Cancel safe: a message is taken off the queue only when this
    /// returns it.
    pub async fn recv(&mut self) -> Option<Delivered> {
        loop {
            if let Some(d) = lock(&self.inner).delivered.pop_front() {
                return Some(d);
            }
            // A delivery between the check and here left a permit: no
            // wake-up is lost.
            self.wake.delivered.notified().await;
        }
    }

    /// Messages dropped because the application did not read and the
    /// queue held `SignalConfig::max_delivered` already (oldest first).
    pub fn delivered_dropped(&self) -> u64 {
        lock(&self.inner).delivered_dropped
    }

    /// Incoming publishes dropped so far, by reason.
    pub fn dropped(&self) -> DropCounts {
        lock(&self.inner).core.dropped()
    }

    /// Brokers whose connections are confirmed now.
    pub fn healthy(&self) -> Vec<usize> {
        self.inner
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .core
            .healthy()
            .collect()
    }
}

fn lock(inner: &Mutex<Inner>) -> std::sync::MutexGuard<'_, Inner> {
    inner.lock().unwrap_or_else(|e| e.into_inner())
}

/// Who one broker task is: its broker's index, the MQTT client id and
/// topic it uses, and its own jitter source.
struct Slot {
    index: usize,
    client_id: String,
    topic: String,
    rng: SmallRng,
}

/// Resends for want of an acknowledgement: sleeps until the core's next
/// resend is due (or a send may have moved it), lets the core mark what is
/// due and wakes the brokers that owe it.
async fn run_timer(wake: Arc<Wake>, inner: Arc<Mutex<Inner>>, clock: Clock) {
    loop {
        let now_ms = clock.now_ms();
        let next = {
            let mut i = lock(&inner);
            let woken = i.core.handle_timeout(now_ms);
            wake.brokers(woken);
            i.core.poll_timeout(now_ms)
        };
        match next {
            Some(at) => {
                tokio::select! {
                    () = tokio::time::sleep_until(clock.instant_at(at.max(now_ms + 1))) => {}
                    () = wake.timer.notified() => {}
                }
            }
            None => wake.timer.notified().await,
        }
    }
}

async fn run_broker<B: Broker>(
    slot: Slot,
    mut broker: B,
    wake: Arc<Wake>,
    inner: Arc<Mutex<Inner>>,
    link: LinkConfig,
    clock: Clock,
) {
    let Slot {
        index,
        client_id,
        topic,
        mut rng,
    } = slot;
    let mut backoff = Backoff::new(link.policy.clone(), tokio_now());
    loop {
        let connected =
            tokio::time::timeout(link.connect_timeout, broker.connect(&client_id, &topic)).await;
        match connected {
            Ok(Ok(mut conn)) => {
                backoff.succeeded();
                tracing::debug!(broker = index, "signaling broker confirmed");
                lock(&inner).core.set_healthy(index, true, clock.now_ms());
                let why = 'conn: loop {
                    // Pull what this broker owes: nothing waits in a queue.
                    loop {
                        let next = lock(&inner).core.poll_publish(index, clock.now_ms());
                        let Some(p) = next else { break };
                        if let Err(e) = conn.publish(&topic_for(&p.recipient), p.bytes).await {
                            break 'conn e;
                        }
                    }
                    tokio::select! {
                        biased;
                        incoming = conn.recv() => match incoming {
                            Ok(bytes) => {
                                let mut i = lock(&inner);
                                let now = tokio_now();
                                if let Ok(Some(d)) = i.core.handle_incoming(index, &bytes, now, clock.now_ms()) {
                                    i.deliver(d);
                                    drop(i);
                                    wake.delivered.notify_one();
                                }
                            }
                            Err(e) => break e,
                        },
                        () = wake.brokers[index].notified() => {}
                    }
                };
                tracing::info!(broker = index, error = %why, "signaling broker lost");
                lock(&inner).core.set_healthy(index, false, clock.now_ms());
                // What it owed is due elsewhere now.
                wake.timer.notify_one();
            }
            Ok(Err(e)) => {
                tracing::debug!(broker = index, error = %e, "signaling broker unreachable")
            }
            Err(_) => tracing::debug!(broker = index, "signaling broker connect timed out"),
        }
        let delay = backoff
            .next_delay(tokio_now(), &mut rng)
            .unwrap_or(link.policy.max_delay);
        tokio::time::sleep(delay).await;
    }
}

/// A real MQTT broker, through rumqttc, speaking MQTT 5.
///
/// MQTT 5 because two of its options keep a subscription from being
/// wedged by what others put on the topic: the subscription asks for no
/// retained messages (a retained message, oversized or not, is never sent
/// on subscribe), and the connection states its maximum packet size, which
/// the broker must respect by dropping larger messages for this client
/// rather than sending them (MQTT 5.0 §3.1.2.11.4) — without it, one
/// publish larger than the client accepts would break the connection on
/// every resubscribe. A publish that still arrives retained (a broker that
/// ignores the option) is dropped with a log line; envelopes larger than
/// `SignalConfig::max_envelope` but within `max_packet` are dropped by the
/// endpoint and counted ([`Signal::dropped`]).
#[derive(Clone, Debug)]
pub struct Mqtt {
    /// Host name or address.
    pub host: String,
    /// Port.
    pub port: u16,
    /// MQTT keepalive: a broker that answers no ping for 1.5× this is lost.
    /// At least [`MIN_KEEP_ALIVE`] (the client refuses less; shorter values
    /// are raised to it). A frozen broker is noticed sooner than that by
    /// the endpoint's acknowledgements (`SignalConfig::ack_timeout`).
    pub keep_alive: Duration,
    /// Largest packet accepted or sent (announced to the broker).
    pub max_packet: usize,
}

impl Mqtt {
    /// A broker at `host:port` with a 5 s keepalive.
    pub fn new(host: impl Into<String>, port: u16) -> Mqtt {
        Mqtt {
            host: host.into(),
            port,
            keep_alive: Duration::from_secs(5),
            max_packet: 128 << 10,
        }
    }
}

/// The shortest MQTT keepalive the client (rumqttc's MQTT 5 one) accepts.
pub const MIN_KEEP_ALIVE: Duration = Duration::from_secs(5);

/// Incoming publishes one MQTT connection holds for its broker task.
const INCOMING_QUEUE: usize = 256;

/// What one MQTT connection hands its broker task.
enum Inbound {
    /// A publish on the subscribed topic.
    Publish(Vec<u8>),
    /// A retained publish: not a message sent now; dropped.
    Retained,
}

/// A confirmed rumqttc connection: its event loop runs on a task of its
/// own (so a publish never cancels a half-read packet) and forwards
/// incoming publishes.
pub struct MqttConn {
    client: rumqttc::v5::AsyncClient,
    /// Bounded (`INCOMING_QUEUE`): a full queue stops the event loop
    /// reading, and the broker's TCP flow control holds the rest.
    incoming: mpsc::Receiver<io::Result<Inbound>>,
    pump: tokio::task::JoinHandle<()>,
}

impl Drop for MqttConn {
    fn drop(&mut self) {
        self.pump.abort();
    }
}

fn mqtt_err(e: impl std::fmt::Display) -> io::Error {
    io::Error::new(io::ErrorKind::ConnectionAborted, e.to_string())
}

impl Broker for Mqtt {
    type Conn = MqttConn;

    async fn connect(&mut self, client_id: &str, topic: &str) -> io::Result<MqttConn> {
        use rumqttc::v5::mqttbytes::v5::{Filter, Packet, RetainForwardRule, SubscribeReasonCode};
        use rumqttc::v5::mqttbytes::QoS;
        use rumqttc::v5::Event;
        let max_packet = u32::try_from(self.max_packet).unwrap_or(u32::MAX);
        let mut opts = rumqttc::v5::MqttOptions::new(client_id, self.host.clone(), self.port);
        // rumqttc panics below 5 s.
        opts.set_keep_alive(self.keep_alive.max(MIN_KEEP_ALIVE));
        opts.set_clean_start(true);
        opts.set_max_packet_size(Some(max_packet));
        let (client, mut events) = rumqttc::v5::AsyncClient::new(opts, 256);
        // Confirmed means CONNACK and SUBACK seen, not "no error yet".
        loop {
            match events.poll().await.map_err(mqtt_err)? {
                Event::Incoming(Packet::ConnAck(_)) => break,
                _ => continue,
            }
        }
        let mut filter = Filter::new(topic, QoS::AtLeastOnce);
        filter.retain_forward_rule = RetainForwardRule::Never;
        client.subscribe_many([filter]).await.map_err(mqtt_err)?;
        loop {
            match events.poll().await.map_err(mqtt_err)? {
                Event::Incoming(Packet::SubAck(ack)) => {
                    if ack
                        .return_codes
                        .iter()
                        .all(|c| matches!(c, SubscribeReasonCode::Success(_)))
                    {
                        break;
                    }
                    return Err(io::Error::new(
                        io::ErrorKind::PermissionDenied,
                        format!("subscription refused: {:?}", ack.return_codes),
                    ));
                }
                _ => continue,
            }
        }
        let (tx, incoming) = mpsc::channel(INCOMING_QUEUE);
        let pump = tokio::spawn(async move {
            loop {
                match events.poll().await {
                    Ok(Event::Incoming(Packet::Publish(p))) => {
                        let inbound = if p.retain {
                            Inbound::Retained
                        } else {
                            Inbound::Publish(p.payload.to_vec())
                        };
                        if tx.send(Ok(inbound)).await.is_err() {
                            return;
                        }
                    }
                    Ok(_) => {}
                    Err(e) => {
                        let _ = tx.send(Err(mqtt_err(e))).await;
                        return;
                    }
                }
            }
        });
        Ok(MqttConn {
            client,
            incoming,
            pump,
        })
    }
}

impl BrokerConn for MqttConn {
    async fn publish(&mut self, topic: &str, bytes: Vec<u8>) -> io::Result<()> {
        self.client
            .publish(
                topic,
                rumqttc::v5::mqttbytes::QoS::AtLeastOnce,
                false,
                bytes,
            )
            .await
            .map_err(mqtt_err)
    }

    async fn recv(&mut self) -> io::Result<Vec<u8>> {
        loop {
            match self.incoming.recv().await {
                Some(Ok(Inbound::Publish(bytes))) => return Ok(bytes),
                Some(Ok(Inbound::Retained)) => {
                    tracing::warn!("dropping a retained publish on the signaling topic");
                    continue;
                }
                Some(Err(e)) => return Err(e),
                None => {
                    return Err(io::Error::new(
                        io::ErrorKind::ConnectionAborted,
                        "event loop ended",
                    ))
                }
            }
        }
    }
}
