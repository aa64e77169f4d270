//! The sans-IO resume protocol: one session, any number of transports over time.
//!
//! [`SessionCore`] never opens a socket and never reads a clock. Its methods
//! come in four groups, as in `quinn-proto`:
//!
//! * **getters** — [`SessionCore::is_established`], [`SessionCore::wants_read`], …
//! * **transport and timer input** — [`SessionCore::open_client_link`],
//!   [`SessionCore::open_server_link`], [`SessionCore::handle_input`],
//!   [`SessionCore::handle_timeout`], [`SessionCore::link_lost`]
//! * **application commands** — [`SessionCore::write`], [`SessionCore::read`],
//!   [`SessionCore::finish`]
//! * **output** — [`SessionCore::poll_transmit`], [`SessionCore::poll_timeout`],
//!   [`SessionCore::poll_event`]
//!
//! A driver calls, after every input: `poll_event` until `None`, then
//! `poll_transmit`, then re-arms its timer from `poll_timeout`.
//!
//! The protocol is written here rather than taken from a crate because no
//! maintained crate offers byte-exact resume of a TCP stream: the guarantee
//! "no byte lost, none duplicated, across any number of transport failures"
//! rests on the offset bookkeeping below.
//!
//! Stream positions count bytes; the FIN counts as one more position, so an
//! acknowledgement of `len + 1` means "all bytes and the end of stream".

use super::auth::{Credentials, KeyPair, Prover};
use super::config::{Config, INITIAL_WINDOW};
use super::detach::{CoreState, LinkState, StateError};
use super::error::{Delivery, LinkError, SessionError, SessionErrorKind};
use super::frame::{self, Decoder, Frame, RejectReason, PROTOCOL_VERSION};
use super::replay::ReplayBuffer;
use super::rtt::{RttEstimator, SendTimes};
use crate::store::{Checkpoint, Outgoing, StoreError, StoredSession};
use bytes::{Buf, Bytes, BytesMut};
use std::collections::VecDeque;
use std::time::{Duration, Instant};

/// Small received payloads are copied into blocks of this size.
const TAIL_BLOCK: usize = 16 << 10;

/// Which end of the session this core is.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Role {
    /// Opens transports and resumes.
    Client,
    /// Accepts transports and hands resumes to the session.
    Server,
}

/// Something the driver must react to.
#[derive(Clone, PartialEq, Eq, Debug)]
pub enum Event {
    /// The current transport finished its handshake. `resumed` is false for the
    /// very first transport of the session.
    Established {
        /// Whether this transport continued an existing session.
        resumed: bool,
    },
    /// The current transport is unusable; drop it (after flushing
    /// `poll_transmit`) and, on the client, open a new one.
    LinkFailed(LinkError),
    /// The session is over with an error; nothing more will be delivered.
    Failed(SessionError),
}

/// What a server transport was opened for, after the acceptor checked the
/// client's first frame.
#[derive(Clone, Copy, Debug)]
pub enum ServerOpen {
    /// A brand-new session: send its id and the server's public key (the
    /// credentials were agreed from the client's).
    New {
        /// The server's ephemeral X25519 public key.
        key: [u8; 32],
    },
    /// A verified resume: the client has received up to `peer_recv`, and its
    /// proof covered `nonce`.
    Resume {
        /// The nonce this transport's ServerHello carried.
        nonce: [u8; 16],
        /// The client's received position.
        peer_recv: u64,
    },
}

/// Counters of one session's life.
#[derive(Clone, Copy, Default, Debug, PartialEq, Eq)]
pub struct Stats {
    /// Transports that completed a handshake.
    pub links_established: u32,
    /// Of those, how many resumed an existing session.
    pub resumes: u32,
    /// Transports abandoned because of a failure.
    pub links_failed: u32,
    /// Bytes sent again after a resume because the old transport lost them.
    pub bytes_replayed: u64,
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Phase {
    AwaitHello,
    AwaitWelcome,
    AwaitResumed { nonce: [u8; 16] },
    Established,
}

#[derive(Debug)]
struct Link {
    phase: Phase,
    decoder: Decoder,
    /// Input given by slice to `handle_input`, awaiting a complete frame.
    inbuf: BytesMut,
    /// Control frames waiting for `poll_transmit`.
    control: Vec<u8>,
    /// Next data offset to send on this transport.
    next_send: u64,
    fin_sent: bool,
    opened: Instant,
    last_rx: Instant,
    last_tx: Instant,
    /// Received position last acknowledged on this transport.
    ack_sent: u64,
    ack_due: Option<Instant>,
    failed: bool,
    /// `Close` queued on this transport.
    close_sent: bool,
    /// When the data in flight on this transport was sent.
    send_times: SendTimes,
    /// When the peer's acknowledgement last moved on this transport (when
    /// it opened, before that).
    acked_at: Instant,
}

impl Link {
    fn new(phase: Phase, now: Instant, max_payload: u32, ack_sent: u64) -> Self {
        Self {
            phase,
            decoder: Decoder::new(max_payload),
            inbuf: BytesMut::new(),
            control: Vec::new(),
            next_send: 0,
            fin_sent: false,
            opened: now,
            last_rx: now,
            last_tx: now,
            ack_sent,
            ack_due: None,
            failed: false,
            close_sent: false,
            send_times: SendTimes::new(now),
            acked_at: now,
        }
    }

    fn queue(&mut self, frame: Frame) {
        frame.encode(&mut self.control);
    }
}

/// The deadlines of one transport. Every deadline of a session is
/// computed here, in one place, with checked arithmetic (as quinn-proto's
/// timer table): a duration too long to represent (`Duration::MAX`) means
/// the timer never fires, never an overflow.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Timer {
    /// The handshake must finish by then.
    Handshake,
    /// Nothing arrived for `dead_after`: the path is dead.
    Dead,
    /// Data sent is unacknowledged for `dead_after`: the path lets small
    /// frames (keepalives) through but not the data.
    Stall,
    /// Nothing was sent for `keepalive_interval`.
    Keepalive,
    /// A delayed acknowledgement is due.
    Ack,
}

impl Timer {
    const ALL: [Timer; 5] = [
        Timer::Handshake,
        Timer::Dead,
        Timer::Stall,
        Timer::Keepalive,
        Timer::Ack,
    ];
}

/// What the timers of a transport read besides the transport itself.
struct TimerInputs<'a> {
    cfg: &'a Config,
    /// Every wait for the peer is at least the path's retransmission
    /// timeout (see [`super::rtt`]).
    rtt: &'a RttEstimator,
    /// What the peer acknowledged of our stream.
    peer_acked: u64,
}

fn timer_deadline(t: Timer, link: &Link, i: &TimerInputs<'_>) -> Option<Instant> {
    let established = link.phase == Phase::Established;
    let cfg = i.cfg;
    match t {
        Timer::Handshake if !established => link
            .opened
            .checked_add(i.rtt.at_least(cfg.handshake_timeout)),
        Timer::Dead if established => link.last_rx.checked_add(i.rtt.at_least(cfg.dead_after)),
        Timer::Stall if established => link
            .send_times
            .oldest_unacked(i.peer_acked, link.next_send)?
            .checked_add(i.rtt.at_least(cfg.dead_after)),
        // A queued frame already tells the peer we are alive once it goes
        // out; announcing the keepalive deadline again would make a driver
        // whose socket is blocked spin on a timer that can do nothing.
        Timer::Keepalive if established && link.control.is_empty() => {
            link.last_tx.checked_add(cfg.keepalive_interval)
        }
        Timer::Ack if established => link.ack_due,
        _ => None,
    }
}

/// State of one resumable session, independent of any transport.
#[derive(Debug)]
pub struct SessionCore {
    role: Role,
    config: Config,
    creds: Option<Credentials>,
    /// Client: the ephemeral key pair of the first handshake, until the
    /// server's `Welcome` turns it into credentials.
    key: Option<KeyPair>,
    replay: ReplayBuffer,
    /// Highest position the peer acknowledged (FIN included).
    peer_acked: u64,
    /// Highest data offset ever sent, to count replayed bytes.
    sent_high: u64,
    fin_requested: bool,
    recv_offset: u64,
    recv_fin: bool,
    /// Received payloads not yet read: large ones as zero-copy slices of
    /// the input, then `ready_tail`.
    ready: VecDeque<Bytes>,
    /// Small payloads, copied and coalesced after everything in `ready`
    /// (a slice would pin its whole read chunk, and one entry per 1-byte
    /// frame costs more than the byte).
    ready_tail: BytesMut,
    /// Unread bytes in `ready` and `ready_tail`.
    ready_len: usize,
    /// The receive window last granted to the peer (absolute offset).
    window_sent: u64,
    /// A window update was queued since the driver last looked.
    window_news: bool,
    /// The peer said it is done (`Close`).
    peer_closed: bool,
    /// How far the peer lets us send (absolute offset).
    peer_window: u64,
    /// Unacknowledged bytes writes may reach while no transport is
    /// established (server sessions; `None`: the replay capacity).
    away_cap: Option<usize>,
    /// Reused allocation for data-frame prefixes.
    scratch: BytesMut,
    discard_incoming: bool,
    link: Option<Link>,
    events: VecDeque<Event>,
    error: Option<SessionError>,
    stats: Stats,
    /// The path's round trip, measured on every transport of the session
    /// (a new transport most likely takes the same path).
    rtt: RttEstimator,
    /// A store-backed server session: what the store recorded bounds what
    /// leaves the server (see [`crate::store`]).
    durable: Option<Durable>,
}

/// What the store confirmed of a store-backed server session, and the
/// checkpoint being written.
#[derive(Debug)]
struct Durable {
    epoch: u64,
    /// The store holds the outgoing bytes until the client acknowledges
    /// them ([`Outgoing::Stored`]); else only their positions, and a
    /// restored session's application writes them again.
    keep_outgoing: bool,
    /// Confirmed by the store: the incoming offset and end the application
    /// committed, the outgoing bytes held from `send_base` to `send_end`.
    recv: u64,
    recv_fin: bool,
    send_base: u64,
    send_end: u64,
    send_fin: bool,
    /// What the application committed: what its reads returned before its
    /// latest read.
    committed: u64,
    committed_fin: bool,
    /// The checkpoint being written (its bytes went to the store).
    in_flight: Option<Checkpoint>,
    /// When the store last confirmed a write: a record is rewritten every
    /// `refresh` so it never expires under a live session.
    last_write: Instant,
    refresh: Duration,
    /// Writes failing since, and when to try again.
    failing_since: Option<Instant>,
    retry_at: Option<Instant>,
    failures: u32,
}

/// First wait before rewriting a checkpoint the store refused for a
/// reason other than fencing; doubles per failure up to
/// [`CHECKPOINT_RETRY_MAX`].
const CHECKPOINT_RETRY: Duration = Duration::from_millis(50);
const CHECKPOINT_RETRY_MAX: Duration = Duration::from_secs(2);

impl SessionCore {
    /// A client session that has not connected yet.
    pub fn new_client(config: Config, key: KeyPair) -> Self {
        let mut core = Self::new(Role::Client, config, None);
        core.key = Some(key);
        core
    }

    /// A server session created for credentials the acceptor just issued.
    pub fn new_server(config: Config, creds: Credentials) -> Self {
        Self::new(Role::Server, config, Some(creds))
    }

    fn new(role: Role, config: Config, creds: Option<Credentials>) -> Self {
        Self {
            key: None,
            replay: ReplayBuffer::new(config.replay_capacity),
            role,
            config,
            creds,
            peer_acked: 0,
            sent_high: 0,
            fin_requested: false,
            recv_offset: 0,
            recv_fin: false,
            ready: VecDeque::new(),
            ready_tail: BytesMut::new(),
            ready_len: 0,
            window_sent: INITIAL_WINDOW as u64,
            window_news: false,
            peer_closed: false,
            away_cap: None,
            peer_window: INITIAL_WINDOW as u64,
            scratch: BytesMut::new(),
            discard_incoming: false,
            link: None,
            events: VecDeque::new(),
            error: None,
            stats: Stats::default(),
            rtt: RttEstimator::default(),
            durable: None,
        }
    }

    // ---- getters -------------------------------------------------------

    /// The session's credentials, once the server issued them.
    pub fn credentials(&self) -> Option<&Credentials> {
        self.creds.as_ref()
    }

    /// Whether the driver should read from the transport: while it is
    /// alive, always — the peer may only send what the receive window
    /// allows, so reading never buffers more than `Config::receive_buffer`
    /// of data, and keepalives and acknowledgements keep flowing while the
    /// application does not read.
    pub fn wants_read(&self) -> bool {
        matches!(&self.link, Some(l) if !l.failed)
    }

    /// Whether a window update was queued since the last call (the driver
    /// should be woken to send it).
    pub fn take_window_news(&mut self) -> bool {
        std::mem::take(&mut self.window_news)
    }

    /// Bytes received and not read yet (at most `Config::receive_buffer`).
    #[cfg(test)]
    pub fn unread(&self) -> usize {
        self.ready_len
    }

    /// The window to grant now: what the application consumed plus the
    /// receive buffer.
    fn window_end(&self) -> u64 {
        let consumed = match &self.durable {
            // Store-backed: within the buffer of what the store confirmed,
            // so a server restored from the store grants at least as much
            // as any grant made before it.
            Some(d) => d.recv,
            None => self.recv_offset - self.ready_len as u64,
        };
        consumed.saturating_add(self.config.receive_buffer as u64)
    }

    /// Queues a window update if the window moved by half the buffer (or
    /// `always`, on a new transport).
    fn update_window(&mut self, always: bool) {
        let end = self.window_end();
        let step = (self.config.receive_buffer / 2).max(1) as u64;
        if end <= self.window_sent && !always {
            return;
        }
        if !always && end - self.window_sent < step {
            return;
        }
        let Some(link) = self.link.as_mut() else {
            return;
        };
        if link.phase != Phase::Established || link.failed {
            return;
        }
        self.window_sent = self.window_sent.max(end);
        link.queue(Frame::Window {
            max_offset: self.window_sent,
        });
        self.window_news = true;
    }

    /// The fatal error, if the session ended with one.
    pub fn error(&self) -> Option<&SessionError> {
        self.error.as_ref()
    }

    /// Counters.
    pub fn stats(&self) -> Stats {
        self.stats
    }

    /// How far both streams got: bytes written, acknowledged by the peer,
    /// received.
    pub fn delivery(&self) -> Delivery {
        let written = self.replay.end();
        Delivery {
            written,
            acknowledged: self.peer_acked.min(written),
            received: self.recv_offset,
        }
    }

    /// Whether the peer acknowledged every written byte and the end of stream.
    pub fn send_complete(&self) -> bool {
        self.fin_requested && self.peer_acked == self.replay.end() + 1
    }

    /// Whether the peer ended its stream and the application read all of it.
    pub fn recv_complete(&self) -> bool {
        self.recv_fin && self.ready_len == 0
    }

    /// Whether both directions are finished on this side: our stream was
    /// acknowledged whole and we received the peer's (or will not read
    /// it). The peer may not know yet that its last bytes arrived: see
    /// [`SessionCore::is_closed`].
    pub fn is_done(&self) -> bool {
        self.send_complete() && (self.recv_fin || self.discard_incoming)
    }

    /// Whether the session is over on both sides as far as this side can
    /// know: it is done, and the peer said it is done too (`Close`), so the
    /// peer received every acknowledgement it needed. The driver can close
    /// the transport for good.
    pub fn is_closed(&self) -> bool {
        self.is_done() && self.peer_closed
    }

    /// Takes the end as closed without the peer's `Close`: the peer is gone
    /// for good while this side is done (the server no longer knows the
    /// session, or reconnecting gave up), and nothing of ours is missing.
    pub fn judge_closed(&mut self) {
        if self.is_done() {
            self.peer_closed = true;
        }
    }

    fn recv_position(&self) -> u64 {
        self.recv_offset + u64::from(self.recv_fin)
    }

    /// The position to acknowledge: what was received, and for a
    /// store-backed session no more than the store confirmed.
    fn ack_position(&self) -> u64 {
        let received = self.recv_position();
        match &self.durable {
            Some(d) => received.min(d.recv + u64::from(d.recv_fin)),
            None => received,
        }
    }

    /// How far outgoing data may be sent: for a store-backed session, what
    /// the store holds.
    fn sendable_end(&self) -> u64 {
        match &self.durable {
            Some(d) if d.keep_outgoing => self.replay.end().min(d.send_end),
            _ => self.replay.end(),
        }
    }

    /// Whether the end of the outgoing stream may be sent.
    fn fin_sendable(&self) -> bool {
        self.fin_requested && self.durable.as_ref().is_none_or(|d| d.send_fin)
    }

    fn fin_position(&self) -> u64 {
        self.replay.end() + 1
    }

    // ---- application commands -----------------------------------------

    /// Caps what writes may hold unacknowledged while no transport is
    /// established (see `Limits::max_bytes_while_away`).
    pub fn set_away_cap(&mut self, cap: usize) {
        self.away_cap = Some(cap);
    }

    /// Bytes a write may add now: the replay buffer's free space, and
    /// while the peer is away no more than the away cap allows.
    fn room(&self) -> usize {
        let free = self.replay.free();
        let connected = matches!(&self.link, Some(l) if l.phase == Phase::Established && !l.failed);
        match self.away_cap {
            Some(cap) if !connected => {
                let held =
                    usize::try_from(self.replay.end() - self.replay.base()).unwrap_or(usize::MAX);
                free.min(cap.saturating_sub(held))
            }
            _ => free,
        }
    }

    /// Copies as much of `data` into the replay buffer as fits and returns
    /// how much that was (0 means: wait for acknowledgements, or for the
    /// peer to come back).
    pub fn write(&mut self, data: &[u8]) -> Result<usize, SessionError> {
        if let Some(e) = &self.error {
            return Err(e.clone());
        }
        if self.fin_requested {
            return Err(self.error_now(SessionErrorKind::Closed));
        }
        let n = data.len().min(self.room());
        Ok(self.replay.push(&data[..n]))
    }

    /// Like [`SessionCore::write`] but takes ownership of the bytes: large
    /// buffers are kept as they are (no copy), small ones are coalesced.
    /// Takes what fits off the front of `data`; returns how many bytes.
    pub fn write_bytes(&mut self, data: &mut Bytes) -> Result<usize, SessionError> {
        /// Below this, copying into the shared tail beats one chunk per write.
        const ZERO_COPY_MIN: usize = 4096;
        if let Some(e) = &self.error {
            return Err(e.clone());
        }
        if self.fin_requested {
            return Err(self.error_now(SessionErrorKind::Closed));
        }
        let n = data.len().min(self.room());
        let chunk = data.split_to(n);
        if n >= ZERO_COPY_MIN {
            self.replay.push_bytes(chunk);
        } else {
            self.replay.push(&chunk);
        }
        Ok(n)
    }

    /// Moves received bytes into `buf`; returns how many. Opens the
    /// receive window again (a window update is queued once half the
    /// buffer was read; see [`SessionCore::take_window_news`]).
    pub fn read(&mut self, buf: &mut [u8]) -> usize {
        // Coming back to read commits what earlier reads returned.
        let consumed = self.recv_offset - self.ready_len as u64;
        let ended = self.recv_fin && self.ready_len == 0;
        if let Some(d) = self.durable.as_mut() {
            d.committed = consumed;
            d.committed_fin = ended;
        }
        let mut n = 0;
        while n < buf.len() {
            let Some(front) = self.ready.front_mut() else {
                break;
            };
            let k = front.len().min(buf.len() - n);
            buf[n..n + k].copy_from_slice(&front[..k]);
            front.advance(k);
            if front.is_empty() {
                self.ready.pop_front();
            }
            n += k;
        }
        if n < buf.len() && self.ready.is_empty() {
            let k = self.ready_tail.len().min(buf.len() - n);
            buf[n..n + k].copy_from_slice(&self.ready_tail[..k]);
            self.ready_tail.advance(k);
            n += k;
        }
        self.ready_len -= n;
        self.release_read_memory();
        if n > 0 {
            self.update_window(false);
        }
        n
    }

    /// Returns what an emptied receive buffer held beyond a small floor, so
    /// a session that once held a full window does not keep it while idle.
    fn release_read_memory(&mut self) {
        if self.ready_tail.is_empty() && self.ready_tail.capacity() > TAIL_BLOCK {
            self.ready_tail = BytesMut::new();
        }
        if self.ready.is_empty() && self.ready.capacity() > 64 {
            self.ready = VecDeque::new();
        }
    }

    /// Ends the outgoing stream after the bytes written so far. Returns
    /// whether this call ended it (false if it was already ended).
    pub fn finish(&mut self) -> bool {
        !std::mem::replace(&mut self.fin_requested, true)
    }

    /// The application will not read any more: received bytes are dropped
    /// (still acknowledged, so the peer can finish).
    pub fn discard_incoming(&mut self) {
        self.discard_incoming = true;
        self.ready.clear();
        self.ready_tail.clear();
        self.ready_len = 0;
        self.release_read_memory();
        self.commit_discarded();
        self.update_window(false);
    }

    /// Nobody reads: what arrives is committed as it arrives.
    fn commit_discarded(&mut self) {
        if !self.discard_incoming {
            return;
        }
        let (offset, fin) = (self.recv_offset, self.recv_fin);
        if let Some(d) = self.durable.as_mut() {
            d.committed = offset;
            d.committed_fin = fin;
        }
    }

    // ---- transport and timer input ------------------------------------

    /// Client: a new transport connected; the server speaks first.
    pub fn open_client_link(&mut self, now: Instant) {
        debug_assert_eq!(self.role, Role::Client);
        self.link = Some(Link::new(
            Phase::AwaitHello,
            now,
            self.config.max_frame_payload,
            self.recv_position(),
        ));
    }

    /// Server: the acceptor attached a transport (its ServerHello is already
    /// sent and the client's request verified). `leftover` holds bytes the
    /// acceptor read past the request.
    pub fn open_server_link(
        &mut self,
        now: Instant,
        open: ServerOpen,
        leftover: &[u8],
    ) -> Result<(), LinkError> {
        debug_assert_eq!(self.role, Role::Server);
        let mut link = Link::new(
            Phase::Established,
            now,
            self.config.max_frame_payload,
            self.ack_position(),
        );
        let Some(creds) = self.creds.clone() else {
            // A server core always has credentials; refuse rather than panic.
            link.queue(Frame::Reject {
                reason: RejectReason::Refused,
            });
            self.link = Some(link);
            self.fail(SessionErrorKind::Protocol(
                "server session without credentials".into(),
            ));
            return Ok(());
        };
        match open {
            ServerOpen::New { key } => {
                link.queue(Frame::Welcome {
                    session_id: creds.id,
                    key,
                });
                self.link = Some(link);
                self.established(false);
            }
            ServerOpen::Resume { nonce, peer_recv } => {
                self.link = Some(link);
                if let Err(e) = self.rewind(peer_recv) {
                    if let Some(l) = self.link.as_mut() {
                        l.queue(Frame::Reject {
                            reason: RejectReason::CannotResume,
                        });
                    }
                    self.fail(e);
                    return Ok(());
                }
                // A store-backed session resumes from what the store
                // confirmed; bytes past it come again (`on_data` skips what
                // it holds).
                let recv = self.ack_position();
                if let Some(l) = self.link.as_mut() {
                    l.queue(Frame::Resumed {
                        recv_offset: recv,
                        proof: creds.proof(Prover::Server, &nonce, recv),
                    });
                }
                self.established(true);
            }
        }
        self.handle_input(now, leftover)
    }

    /// The transport is gone (closed or reset). Counted in
    /// [`Stats::links_failed`] unless it had already failed or the session
    /// was over.
    pub fn link_lost(&mut self) {
        if let Some(l) = self.link.take() {
            if !l.failed && self.error.is_none() && !self.is_done() {
                self.stats.links_failed += 1;
            }
        }
    }

    /// The driver left the transport on purpose (the path moved): not a
    /// failure.
    pub fn link_abandoned(&mut self) {
        self.link = None;
    }

    /// Feeds bytes read from the transport. An error means this transport must
    /// be dropped; the session lives on (see [`Event::LinkFailed`]).
    pub fn handle_input(&mut self, now: Instant, bytes: &[u8]) -> Result<(), LinkError> {
        let Some(link) = self.link.as_mut() else {
            return Ok(());
        };
        if bytes.is_empty() {
            return Ok(());
        }
        link.inbuf.extend_from_slice(bytes);
        let mut inbuf = std::mem::take(&mut link.inbuf);
        let result = self.handle_input_buf(now, &mut inbuf);
        if let Some(l) = self.link.as_mut() {
            l.inbuf = inbuf;
        }
        result
    }

    /// Zero-copy variant of [`SessionCore::handle_input`] for drivers that
    /// read into a `BytesMut`: call it after appending newly received bytes
    /// to `buf`. Complete frames are cut off its front (payloads are kept as
    /// slices of it, not copied); a trailing partial frame stays in `buf`
    /// for the next read to complete.
    pub fn handle_input_buf(&mut self, now: Instant, buf: &mut BytesMut) -> Result<(), LinkError> {
        let Some(link) = self.link.as_mut() else {
            return Ok(());
        };
        if link.failed || self.error.is_some() {
            return Ok(());
        }
        link.last_rx = now;
        if !link.inbuf.is_empty() {
            // Bytes given by slice before (the acceptor's leftover past the
            // handshake, possibly a partial frame) come first.
            let mut joined = std::mem::take(&mut link.inbuf);
            joined.extend_from_slice(buf);
            *buf = joined;
        }
        // Frame handling needs `self` mutably; move the decoder out meanwhile.
        let placeholder = Decoder::new(self.config.max_frame_payload);
        let mut decoder = std::mem::replace(&mut link.decoder, placeholder);
        let result = self.drain_frames(now, &mut decoder, buf);
        if let Some(l) = self.link.as_mut() {
            l.decoder = decoder;
        }
        result
    }

    fn drain_frames(
        &mut self,
        now: Instant,
        decoder: &mut Decoder,
        buf: &mut BytesMut,
    ) -> Result<(), LinkError> {
        loop {
            if !matches!(&self.link, Some(l) if !l.failed) || self.error.is_some() {
                return Ok(());
            }
            let result = match decoder.decode_from(buf) {
                Ok(Some(frame)) => self.handle_frame(now, frame),
                Ok(None) => return Ok(()),
                Err(e) => Err(LinkError::from(e)),
            };
            if let Err(e) = result {
                self.link_failed(e.clone());
                return Err(e);
            }
        }
    }

    /// Fires whatever deadline passed: handshake timeout, silent path,
    /// stalled data, delayed acknowledgement, keepalive.
    pub fn handle_timeout(&mut self, now: Instant) {
        let recv = self.ack_position();
        let inputs = TimerInputs {
            cfg: &self.config,
            rtt: &self.rtt,
            peer_acked: self.peer_acked,
        };
        let due =
            |t: Timer, link: &Link| timer_deadline(t, link, &inputs).is_some_and(|d| now >= d);
        let waited = self.rtt.at_least(self.config.dead_after);
        let Some(link) = self.link.as_mut() else {
            return;
        };
        if link.failed {
            return;
        }
        if due(Timer::Handshake, link) {
            self.link_failed(LinkError::HandshakeTimeout);
            return;
        }
        if due(Timer::Dead, link) {
            self.link_failed(LinkError::Silent(waited));
            return;
        }
        if due(Timer::Stall, link) {
            self.link_failed(LinkError::Stalled(waited));
            return;
        }
        if due(Timer::Ack, link) {
            link.ack_due = None;
            link.ack_sent = recv;
            link.queue(Frame::Ack { recv_offset: recv });
        }
        if due(Timer::Keepalive, link) {
            link.ack_sent = recv;
            link.ack_due = None;
            link.queue(Frame::Keepalive { recv_offset: recv });
        }
    }

    // ---- output ---------------------------------------------------------

    /// Appends what to send on the transport to `out`, in order, up to about
    /// `budget` bytes; returns whether anything was appended. Data payloads
    /// are slices of the replay buffer (no copy): write them with a vectored
    /// write. Call it after every input and every write.
    pub fn poll_transmit(&mut self, now: Instant, out: &mut Vec<Bytes>, budget: usize) -> bool {
        let start = out.len();
        let recv = self.ack_position();
        let max_frame = self.config.max_data_frame;
        let sendable = self.sendable_end();
        let fin_sendable = self.fin_sendable();
        let Some(link) = self.link.as_mut() else {
            return false;
        };
        if !link.control.is_empty() {
            out.push(Bytes::from(std::mem::take(&mut link.control)));
        }
        if link.phase == Phase::Established && !link.failed && self.error.is_none() {
            let end = self.replay.end();
            // Within the peer's receive window.
            let limit = sendable.min(self.peer_window);
            let mut sent = 0usize;
            while link.next_send < limit && sent < budget {
                let room = usize::try_from(limit - link.next_send).unwrap_or(usize::MAX);
                let payload = self.replay.slice_from(link.next_send, max_frame.min(room));
                if payload.is_empty() {
                    break;
                }
                frame::encode_data_prefix(&mut self.scratch, link.next_send, payload.len());
                out.push(self.scratch.split().freeze());
                link.next_send += payload.len() as u64;
                sent += payload.len();
                out.push(payload);
            }
            if sent > 0 {
                link.send_times.on_sent(now, link.next_send, &self.rtt);
            }
            if link.next_send > self.sent_high {
                self.sent_high = link.next_send;
            }
            let done = self.fin_requested
                && self.peer_acked == end + 1
                && (self.recv_fin || self.discard_incoming);
            let mut tail = Vec::new();
            if fin_sendable && !link.fin_sent && link.next_send == end && self.peer_acked <= end {
                Frame::Fin { offset: end }.encode(&mut tail);
                link.fin_sent = true;
            }
            // Piggyback a pending acknowledgement on outgoing data.
            if (out.len() > start || !tail.is_empty() || (done && !link.close_sent))
                && recv > link.ack_sent
            {
                Frame::Ack { recv_offset: recv }.encode(&mut tail);
                link.ack_sent = recv;
                link.ack_due = None;
            }
            // Done: say so once per transport, after the last ack.
            if done && !link.close_sent {
                Frame::Close.encode(&mut tail);
                link.close_sent = true;
            }
            if !tail.is_empty() {
                out.push(Bytes::from(tail));
            }
        }
        let wrote = out.len() > start;
        if wrote {
            link.last_tx = now;
        }
        wrote
    }

    /// How long this transport's oldest unacknowledged data has waited,
    /// when it and the peer's last acknowledgement that moved are both at
    /// least half the stall timeout old, and a frame of the peer arrived
    /// more than a round trip after both: the peer goes on talking but no
    /// longer acknowledges. That is the sign of a path that carries the
    /// peer's small frames (keepalives) but not this side's data, an MTU
    /// black hole (RFC 2923), rather than a dead path (nothing the peer
    /// sent after the data arrives), a slow one (its acknowledgements keep
    /// moving) or a transport that broke during a transfer (its data is a
    /// round trip old). Half the timeout: a peer that hears nothing closes
    /// the transport after its own `dead_after`, a little before our stall
    /// timer fires. Without a measured round trip, half a keepalive
    /// interval stands for it. `None` without an established transport,
    /// with everything acknowledged, or otherwise. Read it before
    /// [`link_lost`](Self::link_lost).
    pub fn data_stall(&self, now: Instant) -> Option<Duration> {
        let link = self.link.as_ref()?;
        if link.phase != Phase::Established {
            return None;
        }
        let oldest = link
            .send_times
            .oldest_unacked(self.peer_acked, link.next_send)?;
        let quiet_since = oldest.max(link.acked_at);
        let heard_for = link.last_rx.checked_duration_since(quiet_since)?;
        let round_trip = self
            .rtt
            .srtt()
            .unwrap_or(self.config.keepalive_interval / 2);
        let half_timeout = self.rtt.at_least(self.config.dead_after) / 2;
        let age = now.saturating_duration_since(oldest);
        let quiet = now.saturating_duration_since(link.acked_at);
        (age >= half_timeout && quiet >= half_timeout && heard_for > round_trip).then_some(age)
    }

    /// The path's retransmission timeout as measured on this session's
    /// transports (`SRTT + 4·RTTVAR`, RFC 6298), once data was
    /// acknowledged: every wait for the peer lasts at least that long.
    pub fn round_trip_timeout(&self) -> Option<Duration> {
        self.rtt.rto()
    }

    /// The next instant `handle_timeout` must be called, if any.
    #[must_use]
    pub fn poll_timeout(&self) -> Option<Instant> {
        let link = self.link.as_ref()?;
        if link.failed || self.error.is_some() {
            return None;
        }
        let inputs = TimerInputs {
            cfg: &self.config,
            rtt: &self.rtt,
            peer_acked: self.peer_acked,
        };
        Timer::ALL
            .iter()
            .filter_map(|&t| timer_deadline(t, link, &inputs))
            .min()
    }

    /// The next event, if any.
    #[must_use]
    pub fn poll_event(&mut self) -> Option<Event> {
        self.events.pop_front()
    }

    // ---- internals --------------------------------------------------------

    fn handle_frame(&mut self, now: Instant, frame: Frame) -> Result<(), LinkError> {
        let phase = match &self.link {
            Some(l) => l.phase,
            None => return Ok(()),
        };
        match (phase, frame) {
            (Phase::AwaitHello, Frame::ServerHello { version, nonce }) => {
                if version != PROTOCOL_VERSION {
                    self.fail(SessionErrorKind::Protocol(format!(
                        "server speaks protocol version {version}"
                    )));
                    return Ok(());
                }
                let recv = self.recv_position();
                let request = match (&self.creds, &self.key) {
                    (None, Some(k)) => (
                        Phase::AwaitWelcome,
                        Frame::NewSession {
                            version: PROTOCOL_VERSION,
                            key: k.public(),
                        },
                    ),
                    (None, None) => {
                        self.fail(SessionErrorKind::Protocol(
                            "client session without a key pair".into(),
                        ));
                        return Ok(());
                    }
                    (Some(c), _) => (
                        Phase::AwaitResumed { nonce },
                        Frame::Resume {
                            version: PROTOCOL_VERSION,
                            session_id: c.id,
                            recv_offset: recv,
                            proof: c.proof(Prover::Client, &nonce, recv),
                        },
                    ),
                };
                if let Some(l) = self.link.as_mut() {
                    l.phase = request.0;
                    l.queue(request.1);
                }
                Ok(())
            }
            (Phase::AwaitWelcome, Frame::Welcome { session_id, key }) => {
                let Some(mine) = self.key.take() else {
                    return Err(LinkError::Unexpected("Welcome"));
                };
                let mine_pub = mine.public();
                match mine.agree(session_id, &key, &mine_pub, &key) {
                    Some(creds) => {
                        self.creds = Some(creds);
                        self.established(false);
                    }
                    None => self.fail(SessionErrorKind::Protocol(
                        "the server sent a degenerate key".into(),
                    )),
                }
                Ok(())
            }
            (Phase::AwaitResumed { nonce }, Frame::Resumed { recv_offset, proof }) => {
                let valid = self
                    .creds
                    .as_ref()
                    .is_some_and(|c| c.verify(Prover::Server, &nonce, recv_offset, &proof));
                if !valid {
                    self.fail(SessionErrorKind::ServerProofInvalid);
                    return Ok(());
                }
                if let Err(e) = self.rewind(recv_offset) {
                    self.fail(e);
                    return Ok(());
                }
                self.established(true);
                Ok(())
            }
            // A busy server refuses this transport, not the session.
            (
                Phase::AwaitResumed { .. },
                Frame::Reject {
                    reason: RejectReason::Busy,
                },
            ) => Err(LinkError::Busy),
            // Done, resuming only to deliver our last acknowledgement: a
            // server that no longer knows the session has finished it.
            (
                Phase::AwaitResumed { .. },
                Frame::Reject {
                    reason: RejectReason::UnknownSession,
                },
            ) if self.is_done() => {
                self.judge_closed();
                Ok(())
            }
            (Phase::AwaitWelcome | Phase::AwaitResumed { .. }, Frame::Reject { reason }) => {
                self.fail(SessionErrorKind::Rejected(reason));
                Ok(())
            }
            (Phase::Established, Frame::Data { offset, payload }) => {
                self.on_data(now, offset, payload)
            }
            (Phase::Established, Frame::Ack { recv_offset })
            | (Phase::Established, Frame::Keepalive { recv_offset }) => {
                self.on_ack(now, recv_offset)
            }
            (Phase::Established, Frame::Close) => {
                // Only a peer that received our whole stream says so.
                if !self.fin_requested {
                    return Err(LinkError::Unexpected("Close before our stream ended"));
                }
                self.peer_closed = true;
                Ok(())
            }
            (Phase::Established, Frame::Window { max_offset }) => {
                self.peer_window = self.peer_window.max(max_offset);
                Ok(())
            }
            (Phase::Established, Frame::Abort) => {
                self.fail(SessionErrorKind::PeerAborted);
                Ok(())
            }
            (Phase::Established, Frame::Fin { offset }) => {
                // A store-backed session may get again an end it holds.
                if self.durable.is_some() && self.recv_fin && offset == self.recv_offset {
                    return Ok(());
                }
                if self.recv_fin {
                    // The peer already ended its stream, elsewhere: it
                    // lost track of it (a store gone behind), and no
                    // transport will fix that.
                    self.fail(SessionErrorKind::Protocol(format!(
                        "the peer ended its stream at offset {} and again at {offset}",
                        self.recv_offset
                    )));
                    return Ok(());
                }
                if offset != self.recv_offset {
                    return Err(LinkError::Unexpected("misplaced Fin"));
                }
                self.recv_fin = true;
                self.commit_discarded();
                let recv = self.ack_position();
                if let Some(l) = self.link.as_mut() {
                    l.ack_sent = recv;
                    l.ack_due = None;
                    l.queue(Frame::Ack { recv_offset: recv });
                }
                Ok(())
            }
            (_, f) => Err(LinkError::Unexpected(frame_name(&f))),
        }
    }

    fn on_data(&mut self, now: Instant, offset: u64, mut payload: Bytes) -> Result<(), LinkError> {
        // A store-backed session resumes from what the store confirmed, and
        // may hold more: the peer's replay of bytes it holds is skipped.
        let mut offset = offset;
        if self.durable.is_some() && offset < self.recv_offset {
            let end = offset.saturating_add(payload.len() as u64);
            if end <= self.recv_offset {
                return Ok(());
            }
            payload.advance((self.recv_offset - offset) as usize);
            offset = self.recv_offset;
        }
        // The sender rewinds to exactly the position we reported in the
        // handshake, so on one transport data is always contiguous. Anything
        // else is a broken peer; dropping the transport makes it rewind again.
        if self.recv_fin || offset != self.recv_offset {
            return Err(LinkError::Unexpected("misplaced Data"));
        }
        // A peer that ignores the window it was granted would make us
        // buffer without bound: not a path problem, a broken peer.
        let end = offset.saturating_add(payload.len() as u64);
        if end > self.window_sent {
            self.fail(SessionErrorKind::Protocol(format!(
                "the peer sent up to offset {end}, beyond the receive window ({})",
                self.window_sent
            )));
            return Ok(());
        }
        self.recv_offset = end;
        if self.discard_incoming {
            // Nobody reads: keep the window open so the peer can finish.
            self.commit_discarded();
            self.update_window(false);
        } else {
            self.push_ready(payload);
        }
        let recv = self.ack_position();
        let (every, delay) = (self.config.ack_every, self.config.ack_delay);
        if let Some(l) = self.link.as_mut() {
            if recv - l.ack_sent >= every {
                l.ack_sent = recv;
                l.ack_due = None;
                l.queue(Frame::Ack { recv_offset: recv });
            } else if l.ack_due.is_none() {
                l.ack_due = now.checked_add(delay);
            }
        }
        Ok(())
    }

    /// Keeps a received payload for the application: large ones as they
    /// are (a slice of the read buffer), small ones copied into the tail.
    fn push_ready(&mut self, payload: Bytes) {
        /// Payloads below this are copied: at most a frame header (13
        /// bytes) of read buffer is pinned per this many payload bytes.
        const COPY_BELOW: usize = 1024;
        self.ready_len += payload.len();
        if payload.len() < COPY_BELOW {
            // Fixed-size blocks, not one growing buffer: unread small
            // payloads cost their bytes plus at most one block.
            let mut rest = &payload[..];
            while !rest.is_empty() {
                if self.ready_tail.capacity() == self.ready_tail.len() {
                    if !self.ready_tail.is_empty() {
                        let full = std::mem::take(&mut self.ready_tail).freeze();
                        self.ready.push_back(full);
                    }
                    self.ready_tail = BytesMut::with_capacity(TAIL_BLOCK);
                }
                let room = self.ready_tail.capacity() - self.ready_tail.len();
                let (now, later) = rest.split_at(rest.len().min(room));
                self.ready_tail.extend_from_slice(now);
                rest = later;
            }
            return;
        }
        if !self.ready_tail.is_empty() {
            let tail = self.ready_tail.split().freeze();
            self.ready.push_back(tail);
        }
        self.ready.push_back(payload);
    }

    fn on_ack(&mut self, now: Instant, pos: u64) -> Result<(), LinkError> {
        let limit = if self.fin_requested {
            self.fin_position()
        } else {
            self.replay.end()
        };
        if pos > limit {
            return Err(LinkError::Unexpected("acknowledgement beyond sent data"));
        }
        if pos > self.peer_acked {
            if let Some(l) = self.link.as_mut() {
                l.acked_at = now;
            }
            let sample = self
                .link
                .as_mut()
                .and_then(|l| l.send_times.on_acked(now, self.peer_acked, pos));
            if let Some(r) = sample {
                self.rtt.on_sample(r);
            }
            self.peer_acked = pos;
            self.replay.trim_to(pos);
        }
        Ok(())
    }

    /// Continues sending from the peer's received position `peer_recv`.
    fn rewind(&mut self, peer_recv: u64) -> Result<(), SessionErrorKind> {
        let fin_pos = self.fin_position();
        let too_high = if self.fin_requested {
            peer_recv > fin_pos
        } else {
            peer_recv > self.replay.end()
        };
        if peer_recv < self.replay.base() || too_high {
            return Err(SessionErrorKind::ResumeGap {
                peer_offset: peer_recv,
                held_from: self.replay.base(),
                held_to: self.replay.end(),
            });
        }
        let data_pos = peer_recv.min(self.replay.end());
        self.stats.bytes_replayed += self.sent_high.saturating_sub(data_pos);
        self.peer_acked = self.peer_acked.max(peer_recv);
        self.replay.trim_to(data_pos);
        if let Some(l) = self.link.as_mut() {
            l.next_send = data_pos;
            l.fin_sent = self.fin_requested && peer_recv == fin_pos;
        }
        Ok(())
    }

    fn established(&mut self, resumed: bool) {
        if let Some(l) = self.link.as_mut() {
            l.phase = Phase::Established;
            if !resumed {
                l.next_send = self.replay.base();
            }
        }
        self.stats.links_established += 1;
        if resumed {
            self.stats.resumes += 1;
        }
        // Every transport starts with the current window: one granted on a
        // transport that died may never have arrived.
        self.update_window(true);
        self.events.push_back(Event::Established { resumed });
    }

    fn link_failed(&mut self, e: LinkError) {
        if let Some(l) = self.link.as_mut() {
            if !l.failed {
                l.failed = true;
                self.stats.links_failed += 1;
                self.events.push_back(Event::LinkFailed(e));
            }
        }
    }

    /// Ends the session with `kind`. Sticky: the first error wins. The
    /// error records how far the streams got at this moment.
    pub fn fail(&mut self, kind: SessionErrorKind) {
        if self.error.is_none() {
            let e = self.error_now(kind);
            self.error = Some(e.clone());
            self.events.push_back(Event::Failed(e));
        }
    }

    /// An error of `kind` carrying the current delivery.
    pub fn error_now(&self, kind: SessionErrorKind) -> SessionError {
        SessionError::new(kind, self.delivery())
    }

    /// The application aborts: the session fails at once with
    /// [`SessionErrorKind::Aborted`] and, if a transport is established,
    /// an `Abort` frame tells the peer (send it with `poll_transmit`).
    pub fn abort(&mut self) {
        if self.error.is_some() {
            return;
        }
        if let Some(l) = self.link.as_mut() {
            if l.phase == Phase::Established && !l.failed {
                l.queue(Frame::Abort);
            }
        }
        self.fail(SessionErrorKind::Aborted);
    }
}

/// Moving a client session to another process.
impl SessionCore {
    /// The client session's state, to go on in another process
    /// ([`SessionCore::from_state`]). `input`: bytes the driver read past the
    /// last whole frame of the live transport, which goes along when there is
    /// one (`with_link`); the driver wrote every frame it took from
    /// [`poll_transmit`](Self::poll_transmit) and takes no more.
    pub(crate) fn export(
        &mut self,
        with_link: bool,
        input: &[u8],
    ) -> Result<CoreState, SessionError> {
        let refuse = |core: &Self, why: &str| {
            Err(core.error_now(SessionErrorKind::Protocol(format!("cannot detach: {why}"))))
        };
        if self.role != Role::Client {
            return refuse(self, "only a client session moves to another process");
        }
        if let Some(e) = &self.error {
            return Err(e.clone());
        }
        let Some(creds) = self.creds.clone() else {
            return refuse(self, "the session was never established");
        };
        let mut replay =
            Vec::with_capacity(self.replay.end().saturating_sub(self.replay.base()) as usize);
        let mut at = self.replay.base();
        loop {
            let chunk = self.replay.slice_from(at, usize::MAX);
            if chunk.is_empty() {
                break;
            }
            at += chunk.len() as u64;
            replay.extend_from_slice(&chunk);
        }
        let mut unread = Vec::with_capacity(self.ready_len);
        for b in &self.ready {
            unread.extend_from_slice(b);
        }
        unread.extend_from_slice(&self.ready_tail);
        let link = match &self.link {
            Some(l) if with_link && l.phase == Phase::Established && !l.failed => {
                let mut pending = l.inbuf.to_vec();
                pending.extend_from_slice(input);
                Some(LinkState {
                    next_send: l.next_send,
                    fin_sent: l.fin_sent,
                    ack_sent: l.ack_sent,
                    close_sent: l.close_sent,
                    control: l.control.clone(),
                    input: pending,
                })
            }
            _ => None,
        };
        Ok(CoreState {
            creds,
            peer_acked: self.peer_acked,
            sent_high: self.sent_high,
            fin_requested: self.fin_requested,
            recv_offset: self.recv_offset,
            recv_fin: self.recv_fin,
            window_sent: self.window_sent,
            peer_closed: self.peer_closed,
            peer_window: self.peer_window,
            replay_base: self.replay.base(),
            replay,
            unread,
            link,
        })
    }

    /// A client session going on from `state` (made by
    /// [`export`](Self::export) in another process) at `now`; with the
    /// transport's state when its transport came along.
    pub(crate) fn from_state(
        config: Config,
        state: CoreState,
        now: Instant,
    ) -> Result<SessionCore, StateError> {
        if state.replay.len() > config.replay_capacity {
            return Err(StateError::TooLarge {
                held: state.replay.len(),
                capacity: config.replay_capacity,
            });
        }
        let mut core = Self::new(Role::Client, config, Some(state.creds));
        core.peer_acked = state.peer_acked;
        core.sent_high = state.sent_high;
        core.fin_requested = state.fin_requested;
        core.recv_offset = state.recv_offset;
        core.recv_fin = state.recv_fin;
        core.window_sent = state.window_sent;
        core.peer_closed = state.peer_closed;
        core.peer_window = state.peer_window;
        core.replay = ReplayBuffer::starting_at(core.config.replay_capacity, state.replay_base);
        core.replay.push(&state.replay);
        core.ready_len = state.unread.len();
        core.ready_tail = BytesMut::from(&state.unread[..]);
        if let Some(l) = state.link {
            let mut link = Link::new(
                Phase::Established,
                now,
                core.config.max_frame_payload,
                l.ack_sent,
            );
            link.next_send = l.next_send;
            link.fin_sent = l.fin_sent;
            link.close_sent = l.close_sent;
            link.control = l.control;
            link.inbuf = BytesMut::from(&l.input[..]);
            core.link = Some(link);
            core.stats.links_established = 1;
        }
        Ok(core)
    }
}

/// Store-backed server sessions (see [`crate::store`]): the core says
/// what to write and when; a thin task writes it.
impl SessionCore {
    /// Makes a new server session store-backed: nothing leaves it that a
    /// checkpoint did not record. `refresh`: the longest time between two
    /// writes (under the store's TTL).
    pub(crate) fn make_durable(
        &mut self,
        epoch: u64,
        outgoing: Outgoing,
        refresh: Duration,
        now: Instant,
    ) {
        self.durable = Some(Durable {
            epoch,
            keep_outgoing: outgoing == Outgoing::Stored,
            recv: self.recv_offset,
            recv_fin: self.recv_fin,
            send_base: self.replay.base(),
            send_end: self.replay.end(),
            send_fin: self.fin_requested,
            committed: self.recv_offset,
            committed_fin: self.recv_fin,
            in_flight: None,
            last_write: now,
            refresh,
            failing_since: None,
            retry_at: None,
            failures: 0,
        });
    }

    /// A server session going on from its stored record, claimed at
    /// `epoch`, with `creds` (the token opened with the store key), for a
    /// client that has received the outgoing stream up to `peer_recv`.
    /// With [`Outgoing::ProducedAgain`] the outgoing stream goes on at the
    /// client's position (the application writes it again from there).
    ///
    /// # Errors
    ///
    /// [`StoreError::Corrupt`] when the record holds more outgoing bytes
    /// than this server's replay capacity.
    pub(crate) fn from_stored(
        config: Config,
        creds: Credentials,
        stored: &StoredSession,
        (epoch, outgoing, peer_recv): (u64, Outgoing, u64),
        refresh: Duration,
        now: Instant,
    ) -> Result<SessionCore, StoreError> {
        if stored.data.len() > config.replay_capacity {
            return Err(StoreError::Corrupt {
                id: stored.id,
                why: format!(
                    "{} outgoing bytes held, over the replay capacity of {}",
                    stored.data.len(),
                    config.replay_capacity
                ),
            });
        }
        let mut core = Self::new(Role::Server, config, Some(creds));
        match outgoing {
            Outgoing::Stored => {
                core.replay =
                    ReplayBuffer::starting_at(core.config.replay_capacity, stored.send_base);
                core.replay.push(&stored.data);
                core.peer_acked = stored.send_base;
                core.sent_high = stored.send_end;
                core.fin_requested = stored.send_fin;
            }
            Outgoing::ProducedAgain => {
                // The end is sent only once recorded: a client past the
                // recorded end's position has the end too.
                let ended = stored.send_fin && peer_recv == stored.send_end + 1;
                let start = if ended { stored.send_end } else { peer_recv };
                core.replay = ReplayBuffer::starting_at(core.config.replay_capacity, start);
                core.peer_acked = peer_recv;
                core.sent_high = start;
                core.fin_requested = ended;
            }
        }
        core.recv_offset = stored.recv;
        core.recv_fin = stored.recv_fin;
        core.make_durable(epoch, outgoing, refresh, now);
        // No grant before the restart went past the confirmed position
        // plus the buffer: grant exactly that, so whatever the client was
        // allowed to send is welcome.
        core.window_sent = core.window_end();
        Ok(core)
    }

    /// Whether this session is store-backed.
    pub(crate) fn is_durable(&self) -> bool {
        self.durable.is_some()
    }

    /// Whether the store holds everything of this session there is to
    /// hold (always, when it is not store-backed).
    pub(crate) fn checkpoint_settled(&self) -> bool {
        self.durable.as_ref().is_none_or(|d| {
            d.in_flight.is_none()
                && d.committed == d.recv
                && d.committed_fin == d.recv_fin
                && (!d.keep_outgoing
                    || (self.replay.base() == d.send_base && self.replay.end() == d.send_end))
                && self.fin_requested == d.send_fin
        })
    }

    /// Where the outgoing stream goes on, and whether it ended.
    pub(crate) fn outgoing_position(&self) -> (u64, bool) {
        (self.replay.end(), self.fin_requested)
    }

    /// The store epoch this session holds, if store-backed.
    pub(crate) fn durable_epoch(&self) -> Option<u64> {
        self.durable.as_ref().map(|d| d.epoch)
    }

    /// The next checkpoint to write, if one is due: something changed since
    /// the last, or the record needs its expiry renewed. At most one is
    /// being written at a time; report its outcome with
    /// [`handle_persisted`](Self::handle_persisted).
    pub(crate) fn poll_checkpoint(&mut self, now: Instant) -> Option<Checkpoint> {
        let id = self.creds.as_ref()?.id;
        if self.error.is_some() {
            return None;
        }
        let (base, end, fin) = (self.replay.base(), self.replay.end(), self.fin_requested);
        let d = self.durable.as_ref()?;
        if d.in_flight.is_some() || d.retry_at.is_some_and(|t| now < t) {
            return None;
        }
        // Without the outgoing bytes, their positions alone are no reason
        // to write (the end is: it is sent only once recorded).
        let outgoing_moved = d.keep_outgoing && (base != d.send_base || end != d.send_end);
        let changed = d.committed != d.recv
            || d.committed_fin != d.recv_fin
            || outgoing_moved
            || fin != d.send_fin;
        if !changed && now < d.last_write + d.refresh {
            return None;
        }
        let append = (d.keep_outgoing && end > d.send_end).then(|| {
            let mut bytes = BytesMut::with_capacity((end - d.send_end) as usize);
            let mut at = d.send_end;
            while at < end {
                let chunk = self.replay.slice_from(at, usize::MAX);
                if chunk.is_empty() {
                    break;
                }
                at += chunk.len() as u64;
                bytes.extend_from_slice(&chunk);
            }
            (d.send_end, bytes.freeze())
        });
        // Without the outgoing bytes the record holds none: its position
        // only (the end's, once the stream ended).
        let send_base = if d.keep_outgoing { base } else { end };
        let cp = Checkpoint {
            id,
            epoch: d.epoch,
            recv: d.committed,
            recv_fin: d.committed_fin,
            send_base,
            send_end: end,
            send_fin: fin,
            append,
        };
        let mut in_flight = cp.clone();
        in_flight.append = None;
        if let Some(d) = self.durable.as_mut() {
            d.in_flight = Some(in_flight);
        }
        Some(cp)
    }

    /// When a checkpoint falls due without anything changing (the record's
    /// renewal, or a retry).
    pub(crate) fn checkpoint_deadline(&self) -> Option<Instant> {
        let d = self.durable.as_ref()?;
        if d.in_flight.is_some() || self.error.is_some() {
            return None;
        }
        Some(d.retry_at.unwrap_or(d.last_write + d.refresh))
    }

    /// The store's answer to the checkpoint being written. Confirmed: what
    /// it recorded may now leave (acknowledgements, window, data, end).
    /// Fenced (another instance took the session over): the session fails.
    /// Any other failure: written again after a backoff; the session fails
    /// once writes failed for `Config::idle_expiry`.
    pub(crate) fn handle_persisted(&mut self, now: Instant, result: Result<(), StoreError>) {
        let expiry = self.config.idle_expiry;
        let Some(d) = self.durable.as_mut() else {
            return;
        };
        let Some(cp) = d.in_flight.take() else {
            return;
        };
        match result {
            Ok(()) => {
                d.recv = cp.recv;
                d.recv_fin = cp.recv_fin;
                d.send_base = cp.send_base;
                d.send_end = cp.send_end;
                d.send_fin = cp.send_fin;
                d.last_write = now;
                d.failing_since = None;
                d.retry_at = None;
                d.failures = 0;
                let ack = self.ack_position();
                if let Some(l) = self.link.as_mut() {
                    if l.phase == Phase::Established && !l.failed && ack > l.ack_sent {
                        l.ack_sent = ack;
                        l.ack_due = None;
                        l.queue(Frame::Ack { recv_offset: ack });
                    }
                }
                self.update_window(false);
            }
            Err(e @ (StoreError::Fenced(_) | StoreError::Claimed(_))) => {
                self.fail(SessionErrorKind::Store(e));
            }
            Err(e) => {
                let since = *d.failing_since.get_or_insert(now);
                d.failures = d.failures.saturating_add(1);
                let wait = CHECKPOINT_RETRY
                    .saturating_mul(1 << d.failures.min(8))
                    .min(CHECKPOINT_RETRY_MAX);
                d.retry_at = Some(now + wait);
                tracing::warn!(error = %e, failures = d.failures, "session checkpoint failed");
                if now.duration_since(since) >= expiry {
                    self.fail(SessionErrorKind::Store(e));
                }
            }
        }
    }
}

fn frame_name(f: &Frame) -> &'static str {
    match f {
        Frame::ServerHello { .. } => "ServerHello",
        Frame::NewSession { .. } => "NewSession",
        Frame::Resume { .. } => "Resume",
        Frame::Welcome { .. } => "Welcome",
        Frame::Resumed { .. } => "Resumed",
        Frame::Reject { .. } => "Reject",
        Frame::Data { .. } => "Data",
        Frame::Ack { .. } => "Ack",
        Frame::Keepalive { .. } => "Keepalive",
        Frame::Fin { .. } => "Fin",
        Frame::Abort => "Abort",
        Frame::Window { .. } => "Window",
        Frame::Close => "Close",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::session::frame::FrameError;

    fn established_server(config: Config, now: Instant) -> SessionCore {
        let creds = Credentials::generate().unwrap();
        let mut s = SessionCore::new_server(config, creds);
        s.open_server_link(now, ServerOpen::New { key: [9; 32] }, &[])
            .unwrap();
        assert_eq!(s.poll_event(), Some(Event::Established { resumed: false }));
        s
    }

    #[test]
    fn a_busy_server_refuses_a_resume_transport_not_the_session() {
        let now = Instant::now();
        let mut c = SessionCore::new_client(Config::default(), KeyPair::from_random([1; 32]));
        let frame = |f: Frame| {
            let mut out = Vec::new();
            f.encode(&mut out);
            out
        };
        let hello = frame(Frame::ServerHello {
            version: PROTOCOL_VERSION,
            nonce: [5; 16],
        });
        c.open_client_link(now);
        c.handle_input(now, &hello).unwrap();
        let server = KeyPair::from_random([2; 32]);
        let welcome = frame(Frame::Welcome {
            session_id: super::super::frame::SessionId([3; 16]),
            key: server.public(),
        });
        c.handle_input(now, &welcome).unwrap();
        assert!(c.credentials().is_some());
        c.link_lost();
        while c.poll_event().is_some() {}
        // The resume is refused `Busy`: this transport fails, the session lives.
        c.open_client_link(now);
        c.handle_input(now, &hello).unwrap();
        let busy = frame(Frame::Reject {
            reason: RejectReason::Busy,
        });
        assert_eq!(c.handle_input(now, &busy), Err(LinkError::Busy));
        assert_eq!(c.poll_event(), Some(Event::LinkFailed(LinkError::Busy)));
        assert!(c.error().is_none());
    }

    #[test]
    fn oversized_frame_fails_the_transport_not_the_session() {
        let now = Instant::now();
        let mut s = established_server(Config::default(), now);
        let err = s
            .handle_input(now, &[0x10, 0x7f, 0xff, 0xff, 0xff])
            .unwrap_err();
        assert_eq!(
            err,
            LinkError::Frame(FrameError::Oversized {
                len: 0x7fff_ffff,
                max: 64 << 10
            })
        );
        assert_eq!(s.poll_event(), Some(Event::LinkFailed(err)));
        assert!(s.error().is_none());
        assert!(!s.wants_read());
    }

    #[test]
    fn data_off_the_expected_offset_and_acks_beyond_sent_fail_the_transport() {
        let now = Instant::now();
        let mut s = established_server(Config::default(), now);
        let mut wire = Vec::new();
        Frame::Data {
            offset: 5,
            payload: Bytes::from_static(b"x"),
        }
        .encode(&mut wire);
        assert_eq!(
            s.handle_input(now, &wire),
            Err(LinkError::Unexpected("misplaced Data"))
        );
        let mut s = established_server(Config::default(), now);
        let mut wire = Vec::new();
        Frame::Ack { recv_offset: 1 }.encode(&mut wire);
        assert_eq!(
            s.handle_input(now, &wire),
            Err(LinkError::Unexpected("acknowledgement beyond sent data"))
        );
    }

    #[test]
    fn full_replay_buffer_blocks_writes_until_acknowledged() {
        let now = Instant::now();
        let cfg = Config {
            replay_capacity: 10,
            ..Config::default()
        };
        let mut s = established_server(cfg, now);
        assert_eq!(s.write(b"0123456789abc").unwrap(), 10);
        assert_eq!(s.write(b"x").unwrap(), 0);
        let mut out = Vec::new();
        assert!(s.poll_transmit(now, &mut out, 1 << 20));
        let mut wire = Vec::new();
        Frame::Ack { recv_offset: 4 }.encode(&mut wire);
        s.handle_input(now, &wire).unwrap();
        assert_eq!(s.write(b"abcdef").unwrap(), 4);
    }

    #[test]
    fn every_timeout_makes_progress_even_when_nothing_is_transmitted() {
        // A driver whose socket is blocked never calls poll_transmit; the
        // timer it re-arms must still move forward, then end the transport.
        let t0 = Instant::now();
        let mut s = established_server(Config::default(), t0);
        let mut last = t0;
        for _ in 0..100 {
            let Some(t) = s.poll_timeout() else { break };
            assert!(t > last || t == t0, "timer did not advance: {t:?}");
            last = t;
            s.handle_timeout(t);
        }
        assert!(matches!(
            s.poll_event(),
            Some(Event::LinkFailed(LinkError::Silent(_)))
        ));
        assert_eq!(s.poll_timeout(), None);
    }

    fn wire(f: Frame) -> Vec<u8> {
        let mut out = Vec::new();
        f.encode(&mut out);
        out
    }

    /// Runs `s`'s timers from `from`, feeding `heard` from the peer every
    /// `every`, until an event; returns it and when it came.
    fn until_event(
        s: &mut SessionCore,
        from: Instant,
        every: Duration,
        heard: &[u8],
    ) -> (Event, Instant) {
        let mut out = Vec::new();
        let mut next_heard = from + every;
        loop {
            let t = s.poll_timeout().map_or(next_heard, |d| d.min(next_heard));
            assert!(t - from < Duration::from_secs(120), "no event");
            if t == next_heard {
                s.handle_input(t, heard).unwrap();
                next_heard += every;
            }
            s.handle_timeout(t);
            s.poll_transmit(t, &mut out, 1 << 20);
            if let Some(e) = s.poll_event() {
                return (e, t);
            }
        }
    }

    /// Keepalives every 250 ms, a dead or stalled path after 1 s.
    fn quick_timers() -> Config {
        Config {
            keepalive_interval: Duration::from_millis(250),
            dead_after: Duration::from_secs(1),
            ..Config::default()
        }
    }

    #[test]
    fn data_left_unacknowledged_while_keepalives_arrive_stalls_the_transport() {
        // An MTU black hole: the peer's keepalives (small) arrive, our data
        // (large) does not, so its acknowledged position never moves.
        let t0 = Instant::now();
        let cfg = quick_timers();
        let mut s = established_server(cfg, t0);
        assert_eq!(s.write(&[7; 40_000]).unwrap(), 40_000);
        let mut out = Vec::new();
        assert!(s.poll_transmit(t0, &mut out, 1 << 20));
        let keepalive = wire(Frame::Keepalive { recv_offset: 0 });
        let (event, at) = until_event(&mut s, t0, Duration::from_millis(200), &keepalive);
        assert_eq!(
            event,
            Event::LinkFailed(LinkError::Stalled(Duration::from_secs(1)))
        );
        assert_eq!(at - t0, Duration::from_secs(1));
    }

    #[test]
    fn a_stall_with_the_peer_heard_after_a_round_trip_is_a_data_stall() {
        let t0 = Instant::now();
        let ms = Duration::from_millis;
        let mut s = established_server(quick_timers(), t0);
        let mut out = Vec::new();
        // One round trip measured: 20 ms.
        s.write(&[1; 100]).unwrap();
        s.poll_transmit(t0, &mut out, 1 << 20);
        s.handle_input(t0 + ms(20), &wire(Frame::Ack { recv_offset: 100 }))
            .unwrap();
        assert_eq!(s.data_stall(t0 + ms(20)), None, "nothing unacknowledged");
        let sent = t0 + ms(100);
        s.write(&[2; 40_000]).unwrap();
        s.poll_transmit(sent, &mut out, 1 << 20);
        let keepalive = wire(Frame::Keepalive { recv_offset: 0 });
        // A frame within the round trip may have left the peer before our
        // data reached it: no sign.
        s.handle_input(sent + ms(20), &keepalive).unwrap();
        assert_eq!(s.data_stall(sent + ms(900)), None);
        // One the peer sent after it should have had the data is, once the
        // data waited half the stall timeout (`dead_after` 1 s).
        s.handle_input(sent + ms(21), &keepalive).unwrap();
        assert_eq!(s.data_stall(sent + ms(499)), None, "a transfer cut short");
        assert_eq!(s.data_stall(sent + ms(500)), Some(ms(500)));
        assert_eq!(s.data_stall(sent + ms(900)), Some(ms(900)));
        // Acknowledgements still moving (a slow path, not a black hole):
        // no sign until they stopped for half the timeout too.
        s.handle_input(
            sent + ms(600),
            &wire(Frame::Ack {
                recv_offset: 10_100,
            }),
        )
        .unwrap();
        s.handle_input(sent + ms(650), &keepalive).unwrap();
        assert_eq!(s.data_stall(sent + ms(900)), None);
        assert!(s.data_stall(sent + ms(1_100)).is_some());
        // Acknowledged after all: no stall.
        s.handle_input(
            sent + ms(1_100),
            &wire(Frame::Ack {
                recv_offset: 40_100,
            }),
        )
        .unwrap();
        assert_eq!(s.data_stall(sent + ms(1_200)), None);
    }

    #[test]
    fn a_silent_peer_or_a_handshake_shows_no_data_stall() {
        let t0 = Instant::now();
        let ms = Duration::from_millis;
        let mut s = established_server(quick_timers(), t0);
        let mut out = Vec::new();
        s.write(&[2; 40_000]).unwrap();
        s.poll_transmit(t0, &mut out, 1 << 20);
        // Nothing heard since the data left (a dead path), however long.
        assert_eq!(s.data_stall(t0 + ms(5_000)), None);
        // Without a measured round trip, half a keepalive interval (125
        // ms here) stands for the frames in flight.
        let keepalive = wire(Frame::Keepalive { recv_offset: 0 });
        s.handle_input(t0 + ms(125), &keepalive).unwrap();
        assert_eq!(s.data_stall(t0 + ms(900)), None);
        s.handle_input(t0 + ms(126), &keepalive).unwrap();
        assert_eq!(s.data_stall(t0 + ms(499)), None);
        assert_eq!(s.data_stall(t0 + ms(900)), Some(ms(900)));
        // A client transport in its handshake has no data of its own yet.
        let mut c = SessionCore::new_client(quick_timers(), KeyPair::from_random([1; 32]));
        c.open_client_link(t0);
        assert_eq!(c.data_stall(t0 + ms(900)), None);
    }

    #[test]
    fn acknowledged_data_and_an_idle_transport_never_stall() {
        let t0 = Instant::now();
        let cfg = quick_timers();
        let mut s = established_server(cfg, t0);
        s.write(&[7; 1000]).unwrap();
        let mut out = Vec::new();
        s.poll_transmit(t0, &mut out, 1 << 20);
        s.handle_input(
            t0 + Duration::from_millis(900),
            &wire(Frame::Ack { recv_offset: 1000 }),
        )
        .unwrap();
        // Nothing unacknowledged: only silence could end it, and the
        // peer's keepalives keep coming.
        let keepalive = wire(Frame::Keepalive { recv_offset: 1000 });
        let mut t = t0 + Duration::from_millis(900);
        while t < t0 + Duration::from_secs(30) {
            t += Duration::from_millis(200);
            s.handle_input(t, &keepalive).unwrap();
            s.handle_timeout(t);
            s.poll_transmit(t, &mut out, 1 << 20);
            assert_eq!(s.poll_event(), None);
        }
    }

    #[test]
    fn a_path_measured_slow_is_given_its_retransmission_timeout() {
        // The round trip grew to 2 s (a bloated buffer): with a 1 s
        // `dead_after`, a fixed timer would declare every transport dead.
        let t0 = Instant::now();
        let cfg = quick_timers();
        let mut s = established_server(cfg, t0);
        let mut out = Vec::new();
        let rtt = Duration::from_secs(2);
        let mut t = t0;
        let mut sent = 0u64;
        for _ in 0..10 {
            sent += s.write(&[1; 100]).unwrap() as u64;
            s.poll_transmit(t, &mut out, 1 << 20);
            t += rtt;
            s.handle_input(t, &wire(Frame::Ack { recv_offset: sent }))
                .unwrap();
        }
        // SRTT 2 s; RTTVAR 1 s after the first sample, ×3/4 per sample.
        let rto = s.round_trip_timeout().unwrap();
        let var = Duration::from_secs(1).mul_f64(0.75f64.powi(9));
        assert!(
            rto.abs_diff(rtt + var * 4) < Duration::from_millis(1),
            "{rto:?}"
        );
        // Data sent now and not acknowledged: the stall is declared after
        // the timeout, not after `dead_after`; keepalives keep it from
        // looking silent meanwhile.
        s.write(&[2; 100]).unwrap();
        s.poll_transmit(t, &mut out, 1 << 20);
        let keepalive = wire(Frame::Keepalive { recv_offset: sent });
        let (event, at) = until_event(&mut s, t, Duration::from_millis(200), &keepalive);
        assert_eq!(event, Event::LinkFailed(LinkError::Stalled(rto)));
        assert_eq!(at - t, rto);
    }

    #[test]
    fn silent_transport_is_declared_dead_after_the_timeout() {
        let t0 = Instant::now();
        let cfg = Config::default();
        let dead_after = cfg.dead_after;
        let mut s = established_server(cfg, t0);
        let mut out = Vec::new();
        s.poll_transmit(t0, &mut out, 1 << 20);
        let mut t = t0;
        while s.poll_event().is_none() {
            t = s.poll_timeout().unwrap();
            s.handle_timeout(t);
            s.poll_transmit(t, &mut out, 1 << 20);
        }
        assert_eq!(t - t0, dead_after);
        let mut dec = Decoder::new(1 << 20);
        dec.feed(&out.concat());
        let mut keepalives = 0;
        while let Some(f) = dec.next_frame().unwrap() {
            keepalives += usize::from(matches!(f, Frame::Keepalive { .. }));
        }
        // One per keepalive interval while the peer stayed silent.
        assert_eq!(keepalives, 3);
    }
}
