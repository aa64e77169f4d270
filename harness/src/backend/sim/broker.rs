//! Simulated signaling brokers: a turmoil host that behaves like an MQTT
//! broker with persistence off, and the client side of it behind the
//! engine's [`Broker`] trait.
//!
//! The wire protocol is a minimal stand-in for MQTT (length-prefixed
//! frames: connect/connack, subscribe/suback, publish), enough to give the
//! broker a real broker's failure behaviour on turmoil TCP: a connection
//! counts only once acknowledged, messages go to the subscribers present
//! when they arrive, and a crash loses every subscription and every
//! message in flight. A crash is the broker *process* dying on a live host
//! (see [`supervise`]), as on netns where mosquitto is killed: its
//! connections close and a new connection is refused at once. A restarted
//! broker starts empty. MQTT's QoS and keepalive are
//! left out: a crash here always closes the connections, so no keepalive
//! is needed to notice it.

use netmend::signal::{Broker, BrokerConn};
use std::collections::HashMap;
use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::sync::mpsc::{unbounded_channel, UnboundedReceiver, UnboundedSender};
use tokio::sync::watch;
use tokio::task::JoinSet;
use turmoil::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use turmoil::net::{TcpListener, TcpStream};

const CONNECT: u8 = 1;
const CONNACK: u8 = 2;
const SUBSCRIBE: u8 = 3;
const SUBACK: u8 = 4;
const PUBLISH: u8 = 5;

/// Largest frame either side accepts (MQTT's default limit is far larger;
/// signaling messages are small).
const MAX_FRAME: usize = 256 << 10;

/// A frame: length (4 bytes, counting the kind), kind, body.
fn encode_frame(kind: u8, body: &[u8]) -> io::Result<Vec<u8>> {
    let len = u32::try_from(body.len() + 1)
        .ok()
        .filter(|l| *l as usize <= MAX_FRAME)
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "frame too large"))?;
    let mut frame = Vec::with_capacity(body.len() + 5);
    frame.extend_from_slice(&len.to_be_bytes());
    frame.push(kind);
    frame.extend_from_slice(body);
    Ok(frame)
}

async fn write_frame<W: AsyncWrite + Unpin>(w: &mut W, kind: u8, body: &[u8]) -> io::Result<()> {
    w.write_all(&encode_frame(kind, body)?).await
}

async fn read_frame<R: AsyncRead + Unpin>(r: &mut R) -> io::Result<(u8, Vec<u8>)> {
    let mut len = [0u8; 4];
    r.read_exact(&mut len).await?;
    let len = u32::from_be_bytes(len) as usize;
    if len == 0 || len > MAX_FRAME {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!("bad frame length {len}"),
        ));
    }
    let mut frame = vec![0u8; len];
    r.read_exact(&mut frame).await?;
    let kind = frame.remove(0);
    Ok((kind, frame))
}

/// A publish body: topic length (2 bytes), topic, payload.
fn publish_body(topic: &str, payload: &[u8]) -> io::Result<Vec<u8>> {
    let len = u16::try_from(topic.len())
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "topic too long"))?;
    let mut body = len.to_be_bytes().to_vec();
    body.extend_from_slice(topic.as_bytes());
    body.extend_from_slice(payload);
    Ok(body)
}

fn split_publish(body: &[u8]) -> Option<(&str, &[u8])> {
    let len = u16::from_be_bytes(body.get(..2)?.try_into().ok()?) as usize;
    let topic = std::str::from_utf8(body.get(2..2 + len)?).ok()?;
    Some((topic, &body[2 + len..]))
}

fn protocol_error(what: &str) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, what.to_string())
}

/// Subscribers by topic: each a connection's outgoing frame queue.
type Subscriptions = Arc<Mutex<HashMap<String, Vec<(u64, UnboundedSender<Vec<u8>>)>>>>;

/// The broker host's program: runs the broker process while `up` says
/// so. A crash drops the process with its listener and every connection
/// (the peers see them close; new connects are refused: nothing listens);
/// a restart starts an empty one.
///
/// # Errors
///
/// The listener could not be bound.
pub async fn supervise(port: u16, v6: bool, mut up: watch::Receiver<bool>) -> io::Result<()> {
    loop {
        if up.wait_for(|up| *up).await.is_err() {
            return Ok(());
        }
        tokio::select! {
            r = serve(port, v6) => r?,
            _ = up.wait_for(|up| !*up) => tracing::debug!(port, "broker process killed"),
        }
    }
}

/// One broker process: accepts connections on `port`. Dropping it drops
/// every connection it serves.
async fn serve(port: u16, v6: bool) -> io::Result<()> {
    let any: IpAddr = if v6 {
        Ipv6Addr::UNSPECIFIED.into()
    } else {
        Ipv4Addr::UNSPECIFIED.into()
    };
    let listener = TcpListener::bind((any, port)).await?;
    let subscriptions: Subscriptions = Arc::default();
    let mut next_id = 0u64;
    let mut connections = JoinSet::new();
    loop {
        tokio::select! {
            accepted = listener.accept() => {
                let (stream, _) = accepted?;
                next_id += 1;
                connections.spawn(serve_connection(next_id, stream, subscriptions.clone()));
            }
            Some(_) = connections.join_next() => {}
        }
    }
}

async fn serve_connection(id: u64, stream: TcpStream, subscriptions: Subscriptions) {
    let (reader, mut writer) = stream.into_split();
    let (out_tx, mut out_rx) = unbounded_channel::<Vec<u8>>();
    // One writer per connection, so forwarded publishes and acks never
    // interleave inside a frame; part of this future, so a killed broker
    // takes it along.
    let writing = async move {
        while let Some(frame) = out_rx.recv().await {
            if writer.write_all(&frame).await.is_err() {
                return;
            }
        }
    };
    tokio::join!(read_connection(id, reader, out_tx, subscriptions), writing);
}

/// The reading side of a broker connection: acts on the client's frames.
async fn read_connection(
    id: u64,
    mut reader: OwnedReadHalf,
    out_tx: UnboundedSender<Vec<u8>>,
    subscriptions: Subscriptions,
) {
    // Acks have empty bodies: encoding them cannot fail.
    let ack = |kind: u8| {
        if let Ok(frame) = encode_frame(kind, &[]) {
            let _ = out_tx.send(frame);
        }
    };
    let mut connected = false;
    while let Ok((kind, body)) = read_frame(&mut reader).await {
        match kind {
            CONNECT => {
                connected = true;
                ack(CONNACK);
            }
            SUBSCRIBE if connected => {
                let Ok(topic) = String::from_utf8(body) else {
                    break;
                };
                subscriptions
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .entry(topic)
                    .or_default()
                    .push((id, out_tx.clone()));
                ack(SUBACK);
            }
            PUBLISH if connected => {
                let (Some((topic, _)), Ok(frame)) =
                    (split_publish(&body), encode_frame(PUBLISH, &body))
                else {
                    break;
                };
                let subs = subscriptions.lock().unwrap_or_else(|e| e.into_inner());
                for (_, tx) in subs.get(topic).into_iter().flatten() {
                    let _ = tx.send(frame.clone());
                }
            }
            // A frame out of order or of no known kind: drop the client,
            // as an MQTT broker does on a protocol violation.
            _ => break,
        }
    }
    for subs in subscriptions
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .values_mut()
    {
        subs.retain(|(sub, _)| *sub != id);
    }
}

/// A simulated broker, reached as `host:port` inside the simulation.
#[derive(Clone, Debug)]
pub struct SimBroker {
    /// Host name.
    pub host: String,
    /// Port.
    pub port: u16,
}

/// A confirmed connection to a [`SimBroker`]: a task reads incoming
/// publishes (so a cancelled `recv` never loses half a frame).
pub struct SimBrokerConn {
    writer: OwnedWriteHalf,
    /// Set by the reading task once the broker closed the connection: a
    /// client library notices that on its next operation, as rumqttc's
    /// event loop ending makes its next publish fail.
    closed: Arc<AtomicBool>,
    incoming: UnboundedReceiver<io::Result<Vec<u8>>>,
    reading: tokio::task::JoinHandle<()>,
}

impl Drop for SimBrokerConn {
    fn drop(&mut self) {
        self.reading.abort();
    }
}

async fn expect_frame<R: AsyncRead + Unpin>(r: &mut R, kind: u8) -> io::Result<()> {
    match read_frame(r).await? {
        (k, _) if k == kind => Ok(()),
        (k, _) => Err(protocol_error(&format!("expected frame {kind}, got {k}"))),
    }
}

impl Broker for SimBroker {
    type Conn = SimBrokerConn;

    async fn connect(&mut self, client_id: &str, topic: &str) -> io::Result<SimBrokerConn> {
        let stream = TcpStream::connect((self.host.as_str(), self.port)).await?;
        let (mut reader, mut writer) = stream.into_split();
        write_frame(&mut writer, CONNECT, client_id.as_bytes()).await?;
        expect_frame(&mut reader, CONNACK).await?;
        write_frame(&mut writer, SUBSCRIBE, topic.as_bytes()).await?;
        expect_frame(&mut reader, SUBACK).await?;
        let (tx, incoming) = unbounded_channel();
        let closed = Arc::new(AtomicBool::new(false));
        let seen_closed = closed.clone();
        let reading = tokio::spawn(async move {
            loop {
                let next = match read_frame(&mut reader).await {
                    Ok((PUBLISH, body)) => match split_publish(&body) {
                        Some((_, payload)) => Ok(payload.to_vec()),
                        None => Err(protocol_error("malformed publish")),
                    },
                    Ok((k, _)) => Err(protocol_error(&format!("unexpected frame {k}"))),
                    Err(e) => Err(e),
                };
                let failed = next.is_err();
                if failed {
                    seen_closed.store(true, Ordering::Relaxed);
                }
                if tx.send(next).is_err() || failed {
                    return;
                }
            }
        });
        Ok(SimBrokerConn {
            writer,
            closed,
            incoming,
            reading,
        })
    }
}

impl BrokerConn for SimBrokerConn {
    async fn publish(&mut self, topic: &str, bytes: Vec<u8>) -> io::Result<()> {
        if self.closed.load(Ordering::Relaxed) {
            return Err(io::Error::new(
                io::ErrorKind::ConnectionReset,
                "the broker closed the connection",
            ));
        }
        write_frame(&mut self.writer, PUBLISH, &publish_body(topic, &bytes)?).await
    }

    async fn recv(&mut self) -> io::Result<Vec<u8>> {
        match self.incoming.recv().await {
            Some(r) => r,
            None => Err(io::Error::new(
                io::ErrorKind::ConnectionAborted,
                "broker connection closed",
            )),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn broker() -> SimBroker {
        SimBroker {
            host: "broker".into(),
            port: 1883,
        }
    }

    /// What the subscriber saw, in order; `None` marks a lost connection.
    type Seen = Arc<Mutex<Vec<Option<Vec<u8>>>>>;

    #[test]
    fn a_crash_closes_connections_and_a_restart_forgets_every_subscription() {
        let mut sim = turmoil::Builder::new()
            .tick_duration(Duration::from_millis(1))
            .simulation_duration(Duration::from_secs(20))
            .build();
        sim.host("broker", || async {
            serve(1883, false).await?;
            Ok(())
        });
        let seen: Seen = Arc::default();
        let log = seen.clone();
        sim.client("subscriber", async move {
            // Subscribed before the crash (at 1 s); after it, subscribed
            // again only from 2.5 s on.
            let mut conn = broker().connect("sub", "t").await?;
            while let Ok(m) = conn.recv().await {
                log.lock().unwrap().push(Some(m));
            }
            log.lock().unwrap().push(None);
            tokio::time::sleep_until(tokio::time::Instant::now() + Duration::from_millis(1500))
                .await;
            let mut conn = broker().connect("sub", "t").await?;
            while let Ok(m) = conn.recv().await {
                log.lock().unwrap().push(Some(m));
            }
            Ok(())
        });
        sim.client("publisher", async move {
            let at = |ms| tokio::time::sleep(Duration::from_millis(ms));
            at(100).await;
            let mut conn = broker().connect("pub", "unused").await?;
            conn.publish("t", b"before".to_vec()).await?;
            conn.publish("other", b"not subscribed".to_vec()).await?;
            at(1400).await; // 1.5 s: the broker has crashed at 1 s and is back at 2 s
            at(700).await; // 2.2 s: restarted, the subscriber not back yet
            let mut conn = broker().connect("pub", "unused").await?;
            conn.publish("t", b"nobody listening".to_vec()).await?;
            at(2000).await; // 4.2 s: subscribed again
            conn.publish("t", b"after".to_vec()).await?;
            at(200).await;
            Ok(())
        });
        let mut crashed = false;
        let mut restarted = false;
        while !sim.step().unwrap() {
            let now = sim.elapsed();
            if !crashed && now >= Duration::from_secs(1) {
                sim.crash("broker");
                crashed = true;
            }
            if !restarted && now >= Duration::from_secs(2) {
                sim.bounce("broker");
                restarted = true;
            }
            if now > Duration::from_secs(5) {
                break;
            }
        }
        let seen = seen.lock().unwrap().clone();
        assert_eq!(
            seen,
            [Some(b"before".to_vec()), None, Some(b"after".to_vec())]
        );
    }
}
