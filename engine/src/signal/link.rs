//! The tokio side of signaling: a [`Signal`] endpoint over N brokers, one
//! task per broker (connect, confirm, subscribe, publish, receive,
//! reconnect with jittered backoff), all feeding one [`SignalCore`].
//!
//! Brokers sit behind the small [`Broker`] trait, so the simulated backend
//! can drive the same endpoint; [`Mqtt`] is the real one (rumqttc).

use super::core::{Delivered, Publish, SignalConfig, SignalCore};
use super::envelope::{EncodeError, MessageId};
use crate::reconnect::{Backoff, Policy};
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};
use std::future::Future;
use std::io;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::mpsc::{unbounded_channel, UnboundedReceiver, UnboundedSender};

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
    outboxes: Vec<UnboundedSender<Publish>>,
    delivered: UnboundedSender<Delivered>,
}

impl Inner {
    fn route(&mut self) {
        while let Some(p) = self.core.poll_publish() {
            if let Some(tx) = self.outboxes.get(p.broker) {
                let _ = tx.send(p);
            }
        }
    }
}

fn tokio_now() -> std::time::Instant {
    // tokio's clock: virtual under turmoil and paused tests.
    tokio::time::Instant::now().into_std()
}

fn unix_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// A signaling endpoint: `send` goes out through every healthy broker,
/// `recv` yields each message once.
pub struct Signal {
    inner: Arc<Mutex<Inner>>,
    delivered: UnboundedReceiver<Delivered>,
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
        let (delivered_tx, delivered) = unbounded_channel();
        let mut receivers = Vec::new();
        let mut outboxes = Vec::new();
        for _ in 0..brokers.len() {
            let (tx, rx) = unbounded_channel();
            outboxes.push(tx);
            receivers.push(rx);
        }
        let inner = Arc::new(Mutex::new(Inner {
            core: SignalCore::new(me, sender, brokers.len(), config),
            outboxes,
            delivered: delivered_tx,
        }));
        let topic = topic_for(me);
        let tasks = brokers
            .into_iter()
            .zip(receivers)
            .enumerate()
            .map(|(i, (broker, outbox))| {
                let slot = Slot {
                    index: i,
                    client_id: format!("nm-{me}-{sender:016x}-{i}"),
                    topic: topic.clone(),
                    rng: SmallRng::seed_from_u64(seeds.random()),
                };
                tokio::spawn(run_broker(
                    slot,
                    broker,
                    outbox,
                    inner.clone(),
                    link.clone(),
                ))
            })
            .collect();
        Signal {
            inner,
            delivered,
            tasks,
        }
    }

    /// Sends `payload` to `peer` through the healthy brokers (or, if none
    /// is, through the next one confirmed within the TTL).
    pub fn send(&self, peer: &str, payload: &[u8]) -> Result<MessageId, EncodeError> {
        let mut inner = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        let id = inner.core.send(peer, payload, unix_ms())?;
        inner.route();
        Ok(id)
    }

    /// The next message for this endpoint, each exactly once.
    ///
    /// # Cancel safety
    ///
    /// Cancel safe: a message is taken off the queue only when this
    /// returns it.
    pub async fn recv(&mut self) -> Option<Delivered> {
        self.delivered.recv().await
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

async fn run_broker<B: Broker>(
    slot: Slot,
    mut broker: B,
    mut outbox: UnboundedReceiver<Publish>,
    inner: Arc<Mutex<Inner>>,
    link: LinkConfig,
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
                {
                    let mut i = lock(&inner);
                    i.core.set_healthy(index, true, unix_ms());
                    i.route();
                }
                let why = loop {
                    tokio::select! {
                        biased;
                        incoming = conn.recv() => match incoming {
                            Ok(bytes) => {
                                let mut i = lock(&inner);
                                let now = tokio_now();
                                if let Ok(d) = i.core.handle_incoming(index, &bytes, now, unix_ms()) {
                                    let _ = i.delivered.send(d);
                                }
                            }
                            Err(e) => break e,
                        },
                        publish = outbox.recv() => {
                            let Some(p) = publish else { return };
                            if let Err(e) = conn.publish(&topic_for(&p.recipient), p.bytes).await {
                                break e;
                            }
                        }
                    }
                };
                tracing::info!(broker = index, error = %why, "signaling broker lost");
                lock(&inner).core.set_healthy(index, false, unix_ms());
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

/// A real MQTT broker, through rumqttc.
#[derive(Clone, Debug)]
pub struct Mqtt {
    /// Host name or address.
    pub host: String,
    /// Port.
    pub port: u16,
    /// MQTT keepalive: a broker that answers no ping for 1.5× this is lost.
    pub keep_alive: Duration,
    /// Largest packet accepted or sent.
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

/// A confirmed rumqttc connection: its event loop runs on a task of its
/// own (so a publish never cancels a half-read packet) and forwards
/// incoming publishes.
pub struct MqttConn {
    client: rumqttc::AsyncClient,
    incoming: UnboundedReceiver<io::Result<Vec<u8>>>,
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
        use rumqttc::{Event, Packet, QoS};
        let mut opts = rumqttc::MqttOptions::new(client_id, self.host.clone(), self.port);
        opts.set_keep_alive(self.keep_alive);
        opts.set_clean_session(true);
        opts.set_max_packet_size(self.max_packet, self.max_packet);
        let (client, mut events) = rumqttc::AsyncClient::new(opts, 256);
        // Confirmed means CONNACK and SUBACK seen, not "no error yet".
        loop {
            match events.poll().await.map_err(mqtt_err)? {
                Event::Incoming(Packet::ConnAck(_)) => break,
                _ => continue,
            }
        }
        client
            .subscribe(topic, QoS::AtLeastOnce)
            .await
            .map_err(mqtt_err)?;
        loop {
            match events.poll().await.map_err(mqtt_err)? {
                Event::Incoming(Packet::SubAck(_)) => break,
                _ => continue,
            }
        }
        let (tx, incoming) = unbounded_channel();
        let pump = tokio::spawn(async move {
            loop {
                match events.poll().await {
                    Ok(Event::Incoming(Packet::Publish(p))) => {
                        if tx.send(Ok(p.payload.to_vec())).is_err() {
                            return;
                        }
                    }
                    Ok(_) => {}
                    Err(e) => {
                        let _ = tx.send(Err(mqtt_err(e)));
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
            .publish(topic, rumqttc::QoS::AtLeastOnce, false, bytes)
            .await
            .map_err(mqtt_err)
    }

    async fn recv(&mut self) -> io::Result<Vec<u8>> {
        match self.incoming.recv().await {
            Some(r) => r,
            None => Err(io::Error::new(
                io::ErrorKind::ConnectionAborted,
                "event loop ended",
            )),
        }
    }
}
