//! What one run of a workload records, on any backend: the bytes of a
//! stream, or the messages of a signaling run.

use super::messages::MessageLog;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

/// Bytes one server-side connection (baseline) or session (mitigated)
/// received, with the time of every read.
#[derive(Clone, Debug, Default)]
pub struct StreamLog {
    /// Everything read, in order.
    pub bytes: Vec<u8>,
    /// `(time, bytes read so far)` after each read.
    pub reads: Vec<(Duration, u64)>,
}

/// The largest length one engine queue reached in a run, against the bound
/// the engine states for it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
pub struct QueuePeak {
    /// Which queue ("outbox": messages a sender holds until acknowledged;
    /// "sessions": sessions a server holds).
    pub queue: &'static str,
    /// Its largest length.
    pub peak: u64,
    /// Its stated bound.
    pub bound: u64,
}

/// The raw record of one run, judged later by `check`.
#[derive(Clone, Debug, Default)]
pub struct Recording {
    /// Bytes the workload meant to deliver.
    pub total: u64,
    /// Server-side streams in the order they were opened.
    pub streams: Vec<StreamLog>,
    /// `(time, stream offset written so far)` after each client write.
    pub writes: Vec<(Duration, u64)>,
    /// When the client began each connection attempt (a signaling run:
    /// each broker connect of either peer).
    pub attempts: Vec<Duration>,
    /// What the client's network stack or engine reported as it went —
    /// `(time, what)`: a monitor's change, a session's reconnect, resume or
    /// rebind — for a timeline to mark (not judged).
    pub events: Vec<(Duration, String)>,
    /// The client's fatal error, if any.
    pub client_error: Option<String>,
    /// When the client finished its work.
    pub client_done_at: Option<Duration>,
    /// How long the run lasted (virtual time on sim).
    pub elapsed: Duration,
    /// Messages sent and delivered (signaling workloads).
    pub messages: MessageLog,
    /// The receiving side is online (signaling: the sender starts then).
    pub receiver_ready: bool,
    /// `(scheduled, in effect)` for each fault action a backend applied
    /// later than scheduled (netns: kernel operations take time); the
    /// checks measure recovery from when a heal really took effect.
    pub applied: Vec<(Duration, Duration)>,
    /// The engine queue the scenario watches, if any.
    pub queue: Option<QueuePeak>,
    /// What the run left behind that it should not have (a host firewall
    /// rule), in words.
    pub residue: Option<String>,
    /// The herd's connection attempts and connections, if it has one.
    pub herd: HerdLog,
}

/// When a herd's clients tried to connect and when they got a connection
/// (both at most [`MAX_HERD_EVENTS`]; past that, counted only).
#[derive(Clone, Debug, Default)]
pub struct HerdLog {
    /// When a client began a connection attempt.
    pub attempts: Vec<Duration>,
    /// When a client's connection was established.
    pub connects: Vec<Duration>,
    /// Events past the bound, not kept.
    pub dropped: u64,
    /// Its clients (0: no herd).
    pub clients: u32,
    /// Its clients holding a connection now.
    pub holding: u32,
}

/// Herd events one run keeps, attempts and connections together (16 MiB
/// of times; a thousand clients retrying every 50 ms for 20 s stay under
/// it).
pub const MAX_HERD_EVENTS: usize = 1 << 20;

/// Events one run keeps (see [`Recorder::event`]).
pub const MAX_EVENTS: usize = 1000;

/// A shared handle the workload programs record into.
#[derive(Clone, Debug, Default)]
pub struct Recorder {
    record: Arc<Mutex<Recording>>,
    received: Tap,
}

/// A live count of what a run has received so far — bytes of a stream (a
/// duplicate counts again), messages of a signaling run — for a progress
/// display to read while the run goes. The judged record is [`Recording`].
#[derive(Clone, Debug, Default)]
pub struct Tap(Arc<AtomicU64>);

impl Tap {
    /// Received so far.
    pub fn get(&self) -> u64 {
        self.0.load(Ordering::Relaxed)
    }

    /// Back to zero, for the next run.
    pub fn reset(&self) {
        self.0.store(0, Ordering::Relaxed);
    }

    fn add(&self, n: u64) {
        self.0.fetch_add(n, Ordering::Relaxed);
    }
}

impl Recorder {
    /// A recorder for a stream of `total` bytes.
    pub fn new(total: u64) -> Self {
        Self::tapped(total, Tap::default())
    }

    /// A recorder for a stream of `total` bytes (0 for messages) that also
    /// counts what is received on `received`.
    pub fn tapped(total: u64, received: Tap) -> Self {
        Self {
            record: Arc::new(Mutex::new(Recording {
                total,
                ..Recording::default()
            })),
            received,
        }
    }

    fn lock(&self) -> MutexGuard<'_, Recording> {
        self.record.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Opens a server-side stream; returns its index.
    pub fn open_stream(&self) -> usize {
        let mut r = self.lock();
        r.streams.push(StreamLog::default());
        r.streams.len() - 1
    }

    /// Bytes stream `idx` holds so far (0 for no such stream).
    pub fn stream_len(&self, idx: usize) -> u64 {
        self.lock()
            .streams
            .get(idx)
            .map_or(0, |s| s.bytes.len() as u64)
    }

    /// Appends bytes read on stream `idx` at time `t`.
    pub fn received(&self, idx: usize, t: Duration, bytes: &[u8]) {
        self.received.add(bytes.len() as u64);
        let mut r = self.lock();
        if let Some(s) = r.streams.get_mut(idx) {
            s.bytes.extend_from_slice(bytes);
            let n = s.bytes.len() as u64;
            s.reads.push((t, n));
        }
    }

    /// The client's write position reached `offset` at `t`.
    pub fn wrote(&self, t: Duration, offset: u64) {
        self.lock().writes.push((t, offset));
    }

    /// The client began a connection attempt at `t`.
    pub fn attempt(&self, t: Duration) {
        self.lock().attempts.push(t);
    }

    /// The client's stack reported `what` at `t`. Bounded: a run keeps its
    /// first `MAX_EVENTS` (1,000; a flapping link must not grow the record
    /// without end); later ones are dropped, marked by one last entry.
    pub fn event(&self, t: Duration, what: String) {
        let mut r = self.lock();
        match r.events.len() {
            n if n < MAX_EVENTS => r.events.push((t, what)),
            n if n == MAX_EVENTS => r.events.push((t, "later events not kept".into())),
            _ => {}
        }
    }

    /// The client failed.
    pub fn client_failed(&self, e: String) {
        self.lock().client_error.get_or_insert(e);
    }

    /// The client finished at `t`.
    pub fn client_done(&self, t: Duration) {
        self.lock().client_done_at = Some(t);
    }

    /// The fault action scheduled at `scheduled` took effect at `at`.
    pub fn fault_applied(&self, scheduled: Duration, at: Duration) {
        self.lock().applied.push((scheduled, at));
    }

    /// Message `n` was sent at `t`.
    pub fn message_sent(&self, n: u64, t: Duration) {
        self.lock().messages.sent.push((n, t));
    }

    /// Message `n` reached the receiving application at `t`.
    pub fn message_received(&self, n: u64, t: Duration) {
        self.received.add(1);
        self.lock().messages.received.push((n, t));
    }

    /// Distinct messages of this run delivered so far (a payload that is
    /// no message of the run does not count).
    pub fn messages_delivered(&self) -> usize {
        let r = self.lock();
        // Messages are numbered 0, 1, … in send order.
        let sent = r.messages.sent.len() as u64;
        let mut seen: Vec<u64> = r
            .messages
            .received
            .iter()
            .map(|&(n, _)| n)
            .filter(|n| *n < sent)
            .collect();
        seen.sort_unstable();
        seen.dedup();
        seen.len()
    }

    /// Queue `queue` (bound `bound`) holds `len` now.
    pub fn queue_len(&self, queue: &'static str, len: u64, bound: u64) {
        let mut r = self.lock();
        let q = r.queue.get_or_insert(QueuePeak {
            queue,
            peak: 0,
            bound,
        });
        q.peak = q.peak.max(len);
    }

    /// The receiving side is online.
    pub fn receiver_ready(&self) {
        self.lock().receiver_ready = true;
    }

    /// Whether the receiving side is online.
    pub fn is_receiver_ready(&self) -> bool {
        self.lock().receiver_ready
    }

    /// Whether the client finished (and, with a herd, every herd client
    /// holds a connection: the run waits for its return).
    pub fn is_client_done(&self) -> bool {
        let r = self.lock();
        // A herd still coming back is part of the run.
        r.client_done_at.is_some() && r.herd.holding >= r.herd.clients
    }

    /// A herd client began a connection attempt at `t`.
    pub fn herd_attempt(&self, t: Duration) {
        let mut r = self.lock();
        let h = &mut r.herd;
        if h.attempts.len() + h.connects.len() < MAX_HERD_EVENTS {
            h.attempts.push(t);
        } else {
            h.dropped += 1;
        }
    }

    /// A herd of `clients` starts: the run is not over before every one
    /// of them holds a connection.
    pub fn herd_started(&self, clients: u32) {
        self.lock().herd.clients = clients;
    }

    /// A herd client lost its connection.
    pub fn herd_lost(&self) {
        let mut r = self.lock();
        r.herd.holding = r.herd.holding.saturating_sub(1);
    }

    /// A herd client's connection was established at `t`.
    pub fn herd_connected(&self, t: Duration) {
        let mut r = self.lock();
        let h = &mut r.herd;
        h.holding = h.holding.saturating_add(1);
        if h.attempts.len() + h.connects.len() < MAX_HERD_EVENTS {
            h.connects.push(t);
        } else {
            h.dropped += 1;
        }
    }

    /// A copy of the record, stamped with the run's length.
    pub fn snapshot(&self, elapsed: Duration) -> Recording {
        let mut r = self.lock().clone();
        r.elapsed = elapsed;
        r
    }
}
