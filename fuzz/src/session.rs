//! The client and the server session cores (`engine/src/session/proto.rs`)
//! driven together by an arbitrary script: application writes, reads,
//! finishes and aborts; the wire carrying any prefix of what was sent in
//! either direction; transports that break and reconnect; time passing;
//! and a hostile wire (bytes and frames injected, bytes altered in flight).
//!
//! The server side runs the acceptor's steps (handshake, new session or a
//! verified resume) with a nonce per transport. Invariants checked after
//! every step:
//!
//! * no panic; a session error is sticky;
//! * received but unread bytes stay within `Config::receive_buffer`, and
//!   written but unacknowledged ones within `Config::replay_capacity`;
//! * a timer that fired moves on (`poll_timeout` after `handle_timeout(now)`
//!   is later than `now`, or gone);
//! * while nobody tampered with the wire, each application reads exactly
//!   the bytes the other wrote, in order, none lost or duplicated.

use crate::enc::{Enc, Encode};
use arbitrary::{Arbitrary, Unstructured};
use bytes::Bytes;
use netmend::fuzzing::{
    ClientRequest, Credentials, Event, Frame, KeyPair, Prover, ServerHandshake, ServerOpen,
    SessionCore,
};
use netmend::session::{Config, Limits, RejectReason, SessionId, INITIAL_WINDOW, MAX_DATA_FRAME};
use std::collections::HashMap;
use std::sync::OnceLock;
use std::time::{Duration, Instant};

/// Tunables, mapped into the bounds `Config::validate` accepts.
#[derive(Arbitrary, Clone, Debug)]
struct Tunables {
    replay: u16,
    receive_extra: u8,
    max_data_frame: u16,
    keepalive_ms: u16,
    dead_extra_ms: u16,
    handshake_ms: u16,
    ack_delay_ms: u8,
    ack_every: u16,
}

impl Tunables {
    fn config(&self) -> Config {
        let mut c = Config::default();
        c.replay_capacity = 1 + usize::from(self.replay) * 8;
        c.receive_buffer = INITIAL_WINDOW + usize::from(self.receive_extra) * 1024;
        c.max_data_frame = 1 + usize::from(self.max_data_frame) % MAX_DATA_FRAME;
        c.keepalive_interval = Duration::from_millis(1 + u64::from(self.keepalive_ms));
        c.dead_after =
            c.keepalive_interval + Duration::from_millis(1 + u64::from(self.dead_extra_ms));
        c.handshake_timeout = Duration::from_millis(1 + u64::from(self.handshake_ms));
        c.ack_delay = Duration::from_millis(u64::from(self.ack_delay_ms));
        c.ack_every = u64::from(self.ack_every) * 4;
        c
    }
}

/// One step of the script.
#[derive(Arbitrary, Clone, Debug)]
enum Op {
    /// An application writes this many bytes of its stream.
    Write {
        server: bool,
        len: u16,
    },
    /// An application reads up to this many bytes.
    Read {
        server: bool,
        len: u16,
    },
    Finish {
        server: bool,
    },
    Abort {
        server: bool,
    },
    Discard {
        server: bool,
    },
    /// The wire delivers up to this many bytes in one direction.
    Carry {
        to_server: bool,
        len: u16,
    },
    /// The transport breaks: bytes in flight are lost, both ends see it.
    Reset,
    /// The client opens a new transport (when it has none).
    Connect,
    /// Time passes; timers fire at their deadlines.
    Wait {
        ms: u16,
    },
    WaitLong {
        secs: u8,
    },
    /// Hostile wire: bytes injected into a direction.
    Inject {
        to_server: bool,
        bytes: Vec<u8>,
    },
    /// Hostile wire: a well-formed frame injected.
    InjectFrame {
        to_server: bool,
        frame: AnyFrame,
    },
    /// Hostile wire: a byte in flight altered.
    Alter {
        to_server: bool,
        at: u16,
        xor: u8,
    },
}

/// Any frame of the protocol.
#[derive(Arbitrary, Clone, Debug)]
enum AnyFrame {
    ServerHello {
        version: u8,
        nonce: [u8; 16],
    },
    NewSession {
        version: u8,
        key: [u8; 32],
    },
    Resume {
        version: u8,
        id: [u8; 16],
        recv_offset: u64,
        proof: [u8; 32],
    },
    Welcome {
        id: [u8; 16],
        key: [u8; 32],
    },
    Resumed {
        recv_offset: u64,
        proof: [u8; 32],
    },
    Reject {
        reason: u8,
    },
    Data {
        offset: u64,
        payload: Vec<u8>,
    },
    Ack {
        recv_offset: u64,
    },
    Keepalive {
        recv_offset: u64,
    },
    Fin {
        offset: u64,
    },
    Abort,
    Window {
        max_offset: u64,
    },
    Close,
}

impl AnyFrame {
    fn encode(self, out: &mut Vec<u8>) {
        let frame = match self {
            AnyFrame::ServerHello { version, nonce } => Frame::ServerHello { version, nonce },
            AnyFrame::NewSession { version, key } => Frame::NewSession { version, key },
            AnyFrame::Resume {
                version,
                id,
                recv_offset,
                proof,
            } => Frame::Resume {
                version,
                session_id: SessionId(id),
                recv_offset,
                proof,
            },
            AnyFrame::Welcome { id, key } => Frame::Welcome {
                session_id: SessionId(id),
                key,
            },
            AnyFrame::Resumed { recv_offset, proof } => Frame::Resumed { recv_offset, proof },
            AnyFrame::Reject { reason } => {
                const REASONS: [RejectReason; 6] = [
                    RejectReason::UnknownSession,
                    RejectReason::BadProof,
                    RejectReason::CannotResume,
                    RejectReason::UnsupportedVersion,
                    RejectReason::Refused,
                    RejectReason::Busy,
                ];
                Frame::Reject {
                    reason: REASONS[usize::from(reason) % REASONS.len()],
                }
            }
            AnyFrame::Data { offset, payload } => Frame::Data {
                offset,
                payload: Bytes::from(payload),
            },
            AnyFrame::Ack { recv_offset } => Frame::Ack { recv_offset },
            AnyFrame::Keepalive { recv_offset } => Frame::Keepalive { recv_offset },
            AnyFrame::Fin { offset } => Frame::Fin { offset },
            AnyFrame::Abort => Frame::Abort,
            AnyFrame::Window { max_offset } => Frame::Window { max_offset },
            AnyFrame::Close => Frame::Close,
        };
        frame.encode(out);
    }
}

const CLIENT_SALT: u8 = 0xc1;
const SERVER_SALT: u8 = 0x5e;
/// The streams repeat with this period (a prime): a shifted, lost or
/// repeated run of bytes reads differently.
const PERIOD: usize = 65_521;

/// `len` (at most 64 KiB) bytes of the stream with `salt` from offset `o`:
/// one slice, written and compared whole (the fuzzer's comparison tracing
/// would make a loop over bytes the most expensive part of a run).
fn stream_at(salt: u8, o: u64, len: usize) -> &'static [u8] {
    static STREAMS: OnceLock<[Vec<u8>; 2]> = OnceLock::new();
    let streams = STREAMS.get_or_init(|| {
        [CLIENT_SALT, SERVER_SALT].map(|salt| {
            (0..(PERIOD + (1 << 16)) as u64)
                .map(|o| ((o % PERIOD as u64).wrapping_mul(0x9E37_79B9) >> 7) as u8 ^ salt)
                .collect()
        })
    });
    let start = (o % PERIOD as u64) as usize;
    &streams[usize::from(salt == SERVER_SALT)][start..start + len]
}

/// Credentials by client key and session id.
type Agreed = HashMap<([u8; 32], SessionId), Option<Credentials>>;

/// Credentials the server agreed with a client key, kept: the key
/// agreement is the costliest step of a run, and its result only depends
/// on the client's key and the session id.
fn agree(id: SessionId, client: [u8; 32]) -> Option<Credentials> {
    thread_local! {
        static AGREED: std::cell::RefCell<Agreed> = std::cell::RefCell::new(HashMap::new());
    }
    AGREED.with_borrow_mut(|agreed| {
        if agreed.len() > 256 {
            agreed.clear();
        }
        agreed
            .entry((client, id))
            .or_insert_with(|| {
                let server = server_key();
                server.agree(id, &client, &client, &server.public())
            })
            .clone()
    })
}
/// Steps of one script at most, and timer firings per wait.
const MAX_OPS: usize = 256;
const MAX_FIRINGS: usize = 32;

fn server_key() -> &'static KeyPair {
    static KEY: OnceLock<KeyPair> = OnceLock::new();
    KEY.get_or_init(|| KeyPair::from_random([0x5e; 32]))
}

/// One application and its core.
struct End {
    core: SessionCore,
    salt: u8,
    config: Config,
    written: u64,
    read: u64,
    discarded: bool,
    /// The core's link failed; the driver drops the transport.
    link_failed: bool,
}

impl End {
    fn new(core: SessionCore, salt: u8, config: Config) -> End {
        End {
            core,
            salt,
            config,
            written: 0,
            read: 0,
            discarded: false,
            link_failed: false,
        }
    }

    fn write(&mut self, len: u16) {
        let before = self.core.error().cloned();
        // At most 256 data frames per write: tiny frames would otherwise
        // make a run spend its time cutting them.
        let len = usize::from(len)
            .min(self.config.replay_capacity)
            .min(self.config.max_data_frame * 256);
        let data = stream_at(self.salt, self.written, len);
        match self.core.write(data) {
            Ok(n) => {
                assert!(before.is_none(), "a failed session took a write");
                self.written += n as u64;
            }
            Err(e) => {
                if let Some(b) = before {
                    assert_eq!(e, b, "the error is sticky");
                }
            }
        }
    }

    /// Reads up to `len` bytes; checks them against the peer's stream
    /// unless the wire was tampered with.
    fn read(&mut self, len: u16, peer_salt: u8, trusted: bool) {
        let mut buf = vec![0; usize::from(len)];
        let n = self.core.read(&mut buf);
        if trusted {
            assert!(
                buf[..n] == *stream_at(peer_salt, self.read, n),
                "bytes {}..{} of the stream differ from what was written",
                self.read,
                self.read + n as u64
            );
        }
        self.read += n as u64;
    }

    fn check_bounds(&self) {
        let d = self.core.delivery();
        assert!(d.acknowledged <= d.written);
        assert_eq!(d.written, self.written);
        assert!(
            d.written - d.acknowledged <= self.config.replay_capacity as u64,
            "{d:?} beyond the replay capacity {}",
            self.config.replay_capacity
        );
        if !self.discarded {
            assert!(d.received >= self.read);
            assert!(
                d.received - self.read <= self.config.receive_buffer as u64,
                "{} unread bytes beyond the receive buffer {}",
                d.received - self.read,
                self.config.receive_buffer
            );
        }
        let s = self.core.stats();
        assert!(s.resumes <= s.links_established);
    }

    /// Fires due timers; checks the timer moved on.
    fn tick(&mut self, now: Instant) {
        if self.core.poll_timeout().is_some_and(|t| t <= now) {
            self.core.handle_timeout(now);
            let next = self.core.poll_timeout();
            assert!(
                next.is_none_or(|t| t > now),
                "timer stuck at {next:?} after firing at {now:?}"
            );
        }
    }
}

/// The server's acceptor for the current transport.
enum Accept {
    /// Waiting for the client's request.
    Handshake(ServerHandshake, [u8; 16]),
    /// The transport belongs to the server session.
    Attached,
    /// Refused: the server reads nothing more on it.
    Closed,
}

struct World {
    now: Instant,
    config: Config,
    client: End,
    server: Option<End>,
    creds: Option<Credentials>,
    accept: Option<Accept>,
    c2s: Vec<u8>,
    s2c: Vec<u8>,
    transports: u32,
    /// Someone injected or altered bytes: the streams prove nothing.
    tampered: bool,
}

impl World {
    fn new(config: Config) -> World {
        let key = KeyPair::from_random([0xc1; 32]);
        World {
            now: Instant::now(),
            client: End::new(
                SessionCore::new_client(config.clone(), key),
                CLIENT_SALT,
                config.clone(),
            ),
            config,
            server: None,
            creds: None,
            accept: None,
            c2s: Vec::new(),
            s2c: Vec::new(),
            transports: 0,
            tampered: false,
        }
    }

    fn connect(&mut self) {
        if self.accept.is_some() || self.client.core.error().is_some() {
            return;
        }
        self.transports += 1;
        self.client.core.open_client_link(self.now);
        self.client.link_failed = false;
        let mut nonce = [0u8; 16];
        nonce[..4].copy_from_slice(&self.transports.to_be_bytes());
        let hs = ServerHandshake::new(nonce);
        self.s2c = hs.hello();
        self.c2s.clear();
        self.accept = Some(Accept::Handshake(hs, nonce));
    }

    /// The transport is gone: both ends learn it, bytes in flight are lost.
    fn reset(&mut self) {
        let Some(accept) = self.accept.take() else {
            return;
        };
        self.client.core.link_lost();
        if let Some(s) = self
            .server
            .as_mut()
            .filter(|_| matches!(accept, Accept::Attached))
        {
            s.core.link_lost();
        }
        self.c2s.clear();
        self.s2c.clear();
    }

    fn carry(&mut self, to_server: bool, len: u16) {
        let wire = if to_server {
            &mut self.c2s
        } else {
            &mut self.s2c
        };
        let n = wire.len().min(usize::from(len));
        let rest = wire.split_off(n);
        let bytes = std::mem::replace(wire, rest);
        if bytes.is_empty() {
            return;
        }
        if to_server {
            self.deliver_to_server(&bytes);
        } else if !self.client.link_failed {
            let _ = self.client.core.handle_input(self.now, &bytes);
        }
    }

    fn deliver_to_server(&mut self, bytes: &[u8]) {
        match self.accept.take() {
            Some(Accept::Handshake(mut hs, nonce)) => {
                self.accept = Some(match hs.handle_input(bytes) {
                    Ok(None) => Accept::Handshake(hs, nonce),
                    Ok(Some(request)) => {
                        let leftover = hs.leftover().to_vec();
                        self.open(request, nonce, &leftover)
                    }
                    Err(_) => Accept::Closed,
                });
            }
            Some(Accept::Attached) => {
                self.accept = Some(Accept::Attached);
                if let Some(s) = self.server.as_mut().filter(|s| !s.link_failed) {
                    let _ = s.core.handle_input(self.now, bytes);
                }
            }
            other => self.accept = other,
        }
    }

    /// The acceptor's decision on a complete request.
    fn open(&mut self, request: ClientRequest, nonce: [u8; 16], leftover: &[u8]) -> Accept {
        let reject = |s2c: &mut Vec<u8>, reason| {
            Frame::Reject { reason }.encode(s2c);
            Accept::Closed
        };
        match request {
            ClientRequest::New { key } => {
                let server = server_key();
                let mut id = [0x1d; 16];
                id[..4].copy_from_slice(&self.transports.to_be_bytes());
                let Some(creds) = agree(SessionId(id), key) else {
                    return reject(&mut self.s2c, RejectReason::Refused);
                };
                // A session whose Welcome was lost lives on alone on a real
                // server; here the new one replaces it.
                let mut core = SessionCore::new_server(self.config.clone(), creds.clone());
                core.set_away_cap(Limits::default().max_bytes_while_away);
                let _ = core.open_server_link(
                    self.now,
                    ServerOpen::New {
                        key: server.public(),
                    },
                    leftover,
                );
                self.server = Some(End::new(core, SERVER_SALT, self.config.clone()));
                self.creds = Some(creds);
                Accept::Attached
            }
            ClientRequest::Resume {
                session_id,
                recv_offset,
                proof,
            } => {
                let known = self.creds.as_ref().filter(|c| c.id == session_id);
                let Some(creds) = known else {
                    return reject(&mut self.s2c, RejectReason::UnknownSession);
                };
                if !creds.verify(Prover::Client, &nonce, recv_offset, &proof) {
                    return reject(&mut self.s2c, RejectReason::BadProof);
                }
                let Some(s) = self.server.as_mut() else {
                    return reject(&mut self.s2c, RejectReason::UnknownSession);
                };
                s.core.link_lost();
                s.link_failed = false;
                let _ = s.core.open_server_link(
                    self.now,
                    ServerOpen::Resume {
                        nonce,
                        peer_recv: recv_offset,
                    },
                    leftover,
                );
                Accept::Attached
            }
        }
    }

    /// What a driver does after every input: take events, send output.
    fn settle(&mut self) {
        let trusted = !self.tampered;
        for end in [Some(&mut self.client), self.server.as_mut()]
            .into_iter()
            .flatten()
        {
            while let Some(ev) = end.core.poll_event() {
                match ev {
                    Event::LinkFailed(_) => end.link_failed = true,
                    Event::Failed(e) => {
                        assert_eq!(end.core.error(), Some(&e));
                        if trusted && !end.discarded {
                            assert!(e.delivery().received >= end.read);
                        }
                    }
                    Event::Established { .. } => {}
                }
            }
        }
        let attached = matches!(self.accept, Some(Accept::Attached));
        let mut out = Vec::new();
        if self.accept.is_some() {
            self.client.core.poll_transmit(self.now, &mut out, 1 << 20);
            out.drain(..).for_each(|b| self.c2s.extend_from_slice(&b));
        }
        if let Some(s) = self.server.as_mut().filter(|_| attached) {
            s.core.poll_transmit(self.now, &mut out, 1 << 20);
            out.drain(..).for_each(|b| self.s2c.extend_from_slice(&b));
        }
        // A failed transport is dropped by its driver.
        let server_failed = attached && self.server.as_ref().is_some_and(|s| s.link_failed);
        if self.accept.is_some() && (self.client.link_failed || server_failed) {
            self.reset();
        }
        self.client.check_bounds();
        if let Some(s) = &self.server {
            s.check_bounds();
        }
    }

    fn wait(&mut self, by: Duration) {
        let until = self.now + by;
        for _ in 0..MAX_FIRINGS {
            let next = [Some(&self.client), self.server.as_ref()]
                .into_iter()
                .flatten()
                .filter_map(|e| e.core.poll_timeout())
                .filter(|t| *t <= until)
                .min();
            let Some(t) = next else { break };
            self.now = self.now.max(t);
            self.tick();
        }
        self.now = until;
        self.tick();
    }

    fn tick(&mut self) {
        let now = self.now;
        self.client.tick(now);
        if let Some(s) = self.server.as_mut() {
            s.tick(now);
        }
        self.settle();
    }

    fn end(&mut self, server: bool) -> Option<&mut End> {
        if server {
            self.server.as_mut()
        } else {
            Some(&mut self.client)
        }
    }

    fn step(&mut self, op: Op) {
        let trusted = !self.tampered;
        match op {
            Op::Write { server, len } => self.end(server).into_iter().for_each(|e| e.write(len)),
            Op::Read { server, len } => {
                let peer = if server { CLIENT_SALT } else { SERVER_SALT };
                self.end(server)
                    .into_iter()
                    .for_each(|e| e.read(len, peer, trusted));
            }
            Op::Finish { server } => self.end(server).into_iter().for_each(|e| {
                e.core.finish();
            }),
            Op::Abort { server } => self.end(server).into_iter().for_each(|e| e.core.abort()),
            Op::Discard { server } => self.end(server).into_iter().for_each(|e| {
                e.core.discard_incoming();
                e.discarded = true;
            }),
            Op::Carry { to_server, len } => self.carry(to_server, len),
            Op::Reset => self.reset(),
            Op::Connect => self.connect(),
            Op::Wait { ms } => self.wait(Duration::from_millis(u64::from(ms))),
            Op::WaitLong { secs } => self.wait(Duration::from_secs(u64::from(secs))),
            Op::Inject { to_server, bytes } => {
                self.tampered = true;
                let wire = if to_server {
                    &mut self.c2s
                } else {
                    &mut self.s2c
                };
                wire.extend_from_slice(&bytes);
            }
            Op::InjectFrame { to_server, frame } => {
                self.tampered = true;
                frame.encode(if to_server {
                    &mut self.c2s
                } else {
                    &mut self.s2c
                });
            }
            Op::Alter { to_server, at, xor } => {
                let wire = if to_server {
                    &mut self.c2s
                } else {
                    &mut self.s2c
                };
                if let Some(b) = wire.get_mut(usize::from(at)) {
                    self.tampered |= xor != 0;
                    *b ^= xor;
                }
            }
        }
        self.settle();
    }
}

/// The input is the tunables, then a script of steps.
pub fn session(data: &[u8]) {
    let Some((tunables, ops)) = script(data) else {
        return;
    };
    let config = tunables.config();
    assert!(config.validate().is_ok());
    let mut world = World::new(config);
    world.connect();
    world.settle();
    for op in ops {
        world.step(op);
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

// The seeds' encoding of scripts (see `enc.rs`): field by field, in the
// order of the declarations above.

impl Encode for Tunables {
    fn encode(&self, e: &mut Enc) {
        e.put(&self.replay)
            .put(&self.receive_extra)
            .put(&self.max_data_frame)
            .put(&self.keepalive_ms)
            .put(&self.dead_extra_ms)
            .put(&self.handshake_ms)
            .put(&self.ack_delay_ms)
            .put(&self.ack_every);
    }
}

impl Encode for Op {
    fn encode(&self, e: &mut Enc) {
        const N: u32 = 13;
        match self {
            Op::Write { server, len } => {
                e.variant(0, N);
                e.put(server).put(len);
            }
            Op::Read { server, len } => {
                e.variant(1, N);
                e.put(server).put(len);
            }
            Op::Finish { server } => {
                e.variant(2, N);
                e.put(server);
            }
            Op::Abort { server } => {
                e.variant(3, N);
                e.put(server);
            }
            Op::Discard { server } => {
                e.variant(4, N);
                e.put(server);
            }
            Op::Carry { to_server, len } => {
                e.variant(5, N);
                e.put(to_server).put(len);
            }
            Op::Reset => e.variant(6, N),
            Op::Connect => e.variant(7, N),
            Op::Wait { ms } => {
                e.variant(8, N);
                e.put(ms);
            }
            Op::WaitLong { secs } => {
                e.variant(9, N);
                e.put(secs);
            }
            Op::Inject { to_server, bytes } => {
                e.variant(10, N);
                e.put(to_server).put(bytes);
            }
            Op::InjectFrame { to_server, frame } => {
                e.variant(11, N);
                e.put(to_server).put(frame);
            }
            Op::Alter { to_server, at, xor } => {
                e.variant(12, N);
                e.put(to_server).put(at).put(xor);
            }
        }
    }
}

impl Encode for AnyFrame {
    fn encode(&self, e: &mut Enc) {
        const N: u32 = 13;
        match self {
            AnyFrame::ServerHello { version, nonce } => {
                e.variant(0, N);
                e.put(version).put(nonce);
            }
            AnyFrame::NewSession { version, key } => {
                e.variant(1, N);
                e.put(version).put(key);
            }
            AnyFrame::Resume {
                version,
                id,
                recv_offset,
                proof,
            } => {
                e.variant(2, N);
                e.put(version).put(id).put(recv_offset).put(proof);
            }
            AnyFrame::Welcome { id, key } => {
                e.variant(3, N);
                e.put(id).put(key);
            }
            AnyFrame::Resumed { recv_offset, proof } => {
                e.variant(4, N);
                e.put(recv_offset).put(proof);
            }
            AnyFrame::Reject { reason } => {
                e.variant(5, N);
                e.put(reason);
            }
            AnyFrame::Data { offset, payload } => {
                e.variant(6, N);
                e.put(offset).put(payload);
            }
            AnyFrame::Ack { recv_offset } => {
                e.variant(7, N);
                e.put(recv_offset);
            }
            AnyFrame::Keepalive { recv_offset } => {
                e.variant(8, N);
                e.put(recv_offset);
            }
            AnyFrame::Fin { offset } => {
                e.variant(9, N);
                e.put(offset);
            }
            AnyFrame::Abort => e.variant(10, N),
            AnyFrame::Window { max_offset } => {
                e.variant(11, N);
                e.put(max_offset);
            }
            AnyFrame::Close => e.variant(12, N),
        }
    }
}

/// Seed scripts: a whole session with a resume, flow control, a hostile
/// wire, and timers.
pub(crate) fn seeds() -> Vec<(&'static str, Vec<u8>)> {
    use Op::*;
    let tunables = |replay: u16, keepalive_ms: u16| Tunables {
        replay,
        receive_extra: 0,
        max_data_frame: 1400,
        keepalive_ms,
        dead_extra_ms: 3000,
        handshake_ms: 2000,
        ack_delay_ms: 10,
        ack_every: 1024,
    };
    let handshake = vec![
        Carry {
            to_server: false,
            len: 100,
        },
        Carry {
            to_server: true,
            len: 100,
        },
        Carry {
            to_server: false,
            len: 100,
        },
        Carry {
            to_server: true,
            len: 100,
        },
    ];
    let exchange = |server: bool, len: u16| {
        vec![
            Write { server, len },
            Carry {
                to_server: !server,
                len: u16::MAX,
            },
            Read {
                server: !server,
                len,
            },
            Carry {
                to_server: server,
                len: u16::MAX,
            },
        ]
    };
    let mut scripts: Vec<(&'static str, Tunables, Vec<Op>)> = Vec::new();
    let mut whole = handshake.clone();
    whole.extend(exchange(false, 3000));
    whole.extend(exchange(true, 5000));
    whole.extend([
        Finish { server: false },
        Finish { server: true },
        Carry {
            to_server: true,
            len: u16::MAX,
        },
        Carry {
            to_server: false,
            len: u16::MAX,
        },
        Read {
            server: true,
            len: 100,
        },
        Read {
            server: false,
            len: 100,
        },
        Carry {
            to_server: true,
            len: u16::MAX,
        },
        Carry {
            to_server: false,
            len: u16::MAX,
        },
    ]);
    scripts.push(("whole-session", tunables(8192, 1000), whole));
    let mut resume = handshake.clone();
    resume.extend([
        Write {
            server: false,
            len: 4000,
        },
        Write {
            server: true,
            len: 4000,
        },
        Carry {
            to_server: true,
            len: 1500,
        },
        Reset,
        Wait { ms: 50 },
        Connect,
    ]);
    resume.extend(handshake.clone());
    resume.extend([
        Carry {
            to_server: true,
            len: u16::MAX,
        },
        Carry {
            to_server: false,
            len: u16::MAX,
        },
        Read {
            server: true,
            len: 4000,
        },
        Read {
            server: false,
            len: 4000,
        },
    ]);
    scripts.push(("resume-after-reset", tunables(8192, 1000), resume));
    let mut window = handshake.clone();
    for _ in 0..4 {
        window.extend([
            Write {
                server: true,
                len: u16::MAX,
            },
            Carry {
                to_server: false,
                len: u16::MAX,
            },
            Carry {
                to_server: true,
                len: u16::MAX,
            },
        ]);
    }
    window.extend([
        Read {
            server: false,
            len: u16::MAX,
        },
        Carry {
            to_server: true,
            len: u16::MAX,
        },
    ]);
    scripts.push(("flow-control", tunables(u16::MAX, 1000), window));
    let mut silent = handshake.clone();
    silent.extend([
        Wait { ms: 900 },
        Wait { ms: 900 },
        WaitLong { secs: 5 },
        Connect,
    ]);
    scripts.push(("silent-path", tunables(512, 300), silent));
    let mut hostile = handshake.clone();
    hostile.extend([
        Write {
            server: false,
            len: 10,
        },
        InjectFrame {
            to_server: true,
            frame: AnyFrame::Data {
                offset: 0,
                payload: b"forged".to_vec(),
            },
        },
        InjectFrame {
            to_server: false,
            frame: AnyFrame::Ack {
                recv_offset: 1 << 40,
            },
        },
        Inject {
            to_server: true,
            bytes: vec![0x10, 0x7f, 0xff, 0xff, 0xff],
        },
        Alter {
            to_server: true,
            at: 3,
            xor: 0x40,
        },
        Carry {
            to_server: true,
            len: u16::MAX,
        },
        Carry {
            to_server: false,
            len: u16::MAX,
        },
    ]);
    scripts.push(("hostile-wire", tunables(512, 1000), hostile));
    let mut abort = handshake;
    abort.extend([
        Abort { server: true },
        Carry {
            to_server: false,
            len: 100,
        },
        Discard { server: false },
    ]);
    scripts.push(("abort", tunables(512, 1000), abort));
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
