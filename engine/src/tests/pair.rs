//! Drives a client and a server `SessionCore` in memory with a virtual clock
//! and injects transport faults at arbitrary byte offsets (mid-frame and on
//! frame boundaries), in the style of quinn-proto's `Pair` tests.

use crate::session::auth::{Credentials, KeyPair, Prover};
use crate::session::frame::Frame;
use crate::session::frame::SessionId;
use crate::session::handshake::{ClientRequest, ServerHandshake};
use crate::session::proto::{Event, ServerOpen, SessionCore};
use crate::session::{Config, SessionErrorKind, INITIAL_WINDOW};
use proptest::prelude::*;
use std::time::{Duration, Instant};

/// The byte at stream offset `o` of test stream `salt`.
fn pattern(salt: u8, o: usize) -> u8 {
    ((o as u64).wrapping_mul(0x9E37_79B9) >> 7) as u8 ^ salt
}

#[derive(Clone, Debug)]
enum Fault {
    /// After `at` more client→server wire bytes, deliver `keep` of what is in
    /// flight (or, with `keep: None`, exactly up to the next frame boundary),
    /// then reset the transport on both ends.
    Reset { at: usize, keep: Option<usize> },
    /// After `at` more wire bytes, the path stops carrying anything for `ms`
    /// without an error (TCP stalls; it never delivers a stream with holes).
    Blackhole { at: usize, ms: u64 },
}

fn fault() -> impl Strategy<Value = Fault> {
    prop_oneof![
        (1usize..20_000, proptest::option::of(0usize..2_000))
            .prop_map(|(at, keep)| Fault::Reset { at, keep }),
        (1usize..20_000, 100u64..8_000).prop_map(|(at, ms)| Fault::Blackhole { at, ms }),
    ]
}

struct Pair {
    now: Instant,
    config: Config,
    client: SessionCore,
    server: Option<SessionCore>,
    creds: Option<Credentials>,
    handshake: Option<ServerHandshake>,
    /// Wire queues of the current transport.
    c2s: Vec<u8>,
    s2c: Vec<u8>,
    client_connected: bool,
    reconnect_at: Option<Instant>,
    blackhole_until: Option<Instant>,
    wire_c2s: usize,
    connects: u32,
    nonce_counter: u8,
    /// Server sessions created; a lost Welcome orphans the first one.
    generation: u32,
    /// Client→server bytes left in the frame being delivered, and the header
    /// bytes of the next one seen so far: where the frame boundaries are.
    frame_left: usize,
    header: Vec<u8>,
}

impl Pair {
    fn new(config: Config) -> Self {
        let now = Instant::now();
        Self {
            now,
            client: SessionCore::new_client(config.clone(), KeyPair::from_random([11; 32])),
            config,
            server: None,
            creds: None,
            handshake: None,
            c2s: Vec::new(),
            s2c: Vec::new(),
            client_connected: false,
            reconnect_at: Some(now),
            blackhole_until: None,
            wire_c2s: 0,
            connects: 0,
            nonce_counter: 0,
            generation: 0,
            frame_left: 0,
            header: Vec::new(),
        }
    }

    fn blackholed(&self) -> bool {
        self.blackhole_until.is_some_and(|t| self.now < t)
    }

    fn connect(&mut self) {
        self.connects += 1;
        self.c2s.clear();
        self.s2c.clear();
        self.frame_left = 0;
        self.header.clear();
        self.client.open_client_link(self.now);
        self.client_connected = true;
        // The old server transport, if still alive, is replaced once the
        // resume verifies, as the acceptor does.
        self.nonce_counter = self.nonce_counter.wrapping_add(1);
        let hs = ServerHandshake::new([self.nonce_counter; 16]);
        self.s2c.extend(hs.hello());
        self.handshake = Some(hs);
    }

    fn reset(&mut self) {
        self.client.link_lost();
        self.client_connected = false;
        if let Some(s) = self.server.as_mut() {
            s.link_lost();
        }
        self.handshake = None;
        self.c2s.clear();
        self.s2c.clear();
        self.reconnect_at = Some(self.now + Duration::from_millis(20));
    }

    /// Delivers up to `chunk` bytes each way.
    fn transfer(&mut self, chunk: usize) {
        if self.blackholed() {
            return;
        }
        let n = chunk.min(self.c2s.len());
        let bytes: Vec<u8> = self.c2s.drain(..n).collect();
        self.track_frames(&bytes);
        self.wire_c2s += n;
        self.server_input(&bytes);
        let n = chunk.min(self.s2c.len());
        let bytes: Vec<u8> = self.s2c.drain(..n).collect();
        if self.client_connected {
            let _ = self.client.handle_input(self.now, &bytes);
        }
    }

    fn track_frames(&mut self, bytes: &[u8]) {
        for &b in bytes {
            if self.frame_left > 0 {
                self.frame_left -= 1;
                continue;
            }
            self.header.push(b);
            if self.header.len() == 5 {
                let len = u32::from_be_bytes([
                    self.header[1],
                    self.header[2],
                    self.header[3],
                    self.header[4],
                ]);
                self.frame_left = len as usize;
                self.header.clear();
            }
        }
    }

    /// Bytes to deliver so that the server has seen exactly whole frames.
    fn to_boundary(&self) -> usize {
        if self.header.is_empty() {
            return self.frame_left;
        }
        // Mid-header: finish the header, then the payload it announces.
        let need = 5 - self.header.len();
        let mut hdr = self.header.clone();
        hdr.extend(self.c2s.iter().take(need));
        if hdr.len() < 5 {
            return self.c2s.len();
        }
        need + u32::from_be_bytes([hdr[1], hdr[2], hdr[3], hdr[4]]) as usize
    }

    fn server_input(&mut self, bytes: &[u8]) {
        if let Some(hs) = self.handshake.as_mut() {
            let Some(req) = hs.handle_input(bytes).expect("honest client") else {
                return;
            };
            let nonce = hs.nonce();
            let leftover = hs.leftover().to_vec();
            self.handshake = None;
            match req {
                ClientRequest::New { key } => {
                    let mine = KeyPair::from_random([self.nonce_counter; 32]);
                    let id = SessionId([self.nonce_counter; 16]);
                    let creds = mine
                        .agree(id, &key, &key, &mine.public())
                        .expect("an honest client's key");
                    self.creds = Some(creds.clone());
                    let mut s = SessionCore::new_server(self.config.clone(), creds);
                    s.open_server_link(self.now, ServerOpen::New { key: mine.public() }, &leftover)
                        .unwrap();
                    self.server = Some(s);
                    self.generation += 1;
                }
                ClientRequest::Resume {
                    session_id,
                    recv_offset,
                    proof,
                } => {
                    let creds = self.creds.as_ref().unwrap();
                    assert_eq!(creds.id, session_id);
                    assert!(creds.verify(Prover::Client, &nonce, recv_offset, &proof));
                    let s = self.server.as_mut().unwrap();
                    s.link_lost();
                    let _ = s.open_server_link(
                        self.now,
                        ServerOpen::Resume {
                            nonce,
                            peer_recv: recv_offset,
                        },
                        &leftover,
                    );
                }
            }
        } else if let Some(s) = self.server.as_mut() {
            let _ = s.handle_input(self.now, bytes);
        }
    }

    fn pump_output(&mut self) {
        let mut frames = Vec::new();
        if self.client_connected {
            self.client.poll_transmit(self.now, &mut frames, 64 << 10);
            self.c2s.extend(frames.drain(..).flatten());
        }
        if self.handshake.is_none() {
            if let Some(s) = self.server.as_mut() {
                s.poll_transmit(self.now, &mut frames, 64 << 10);
                self.s2c.extend(frames.drain(..).flatten());
            }
        }
    }

    fn events(&mut self) {
        while let Some(ev) = self.client.poll_event() {
            match ev {
                Event::LinkFailed(_) => {
                    self.client.link_lost();
                    self.client_connected = false;
                    self.handshake = None;
                    self.reconnect_at = Some(self.now + Duration::from_millis(50));
                }
                Event::Failed(e) => panic!("client session failed: {e}"),
                Event::Established { .. } => {}
            }
        }
        if let Some(s) = self.server.as_mut() {
            while let Some(ev) = s.poll_event() {
                match ev {
                    Event::LinkFailed(_) => s.link_lost(),
                    Event::Failed(e) => panic!("server session failed: {e}"),
                    Event::Established { .. } => {}
                }
            }
        }
    }

    fn next_timer(&self) -> Option<Instant> {
        [
            self.client.poll_timeout(),
            self.server.as_ref().and_then(|s| s.poll_timeout()),
            self.reconnect_at,
            self.blackhole_until,
        ]
        .into_iter()
        .flatten()
        .min()
    }

    fn fire_timers(&mut self) {
        self.client.handle_timeout(self.now);
        if let Some(s) = self.server.as_mut() {
            s.handle_timeout(self.now);
        }
        if self.blackhole_until.is_some_and(|t| self.now >= t) {
            self.blackhole_until = None;
        }
        if self.reconnect_at.is_some_and(|t| self.now >= t) && !self.client_connected {
            self.reconnect_at = None;
            self.connect();
        } else if self.reconnect_at.is_some_and(|t| self.now >= t) {
            self.reconnect_at = None;
        }
    }
}

/// Runs a full bidirectional transfer under `faults`; returns what each side
/// read and the number of transports used.
fn run(
    client_len: usize,
    server_len: usize,
    chunk: usize,
    write_size: usize,
    mut faults: Vec<Fault>,
) -> (Vec<u8>, Vec<u8>, u32) {
    let config = Config {
        replay_capacity: 8 << 10,
        // The smallest window: longer streams run on window updates, and
        // resets lose some of them.
        receive_buffer: INITIAL_WINDOW,
        max_data_frame: 1000,
        dead_after: Duration::from_millis(1500),
        keepalive_interval: Duration::from_millis(300),
        ..Config::default()
    };
    let mut p = Pair::new(config);
    let (mut c_sent, mut s_sent) = (0usize, 0usize);
    let mut c_got = Vec::new();
    let mut s_got = Vec::new();
    let mut buf = vec![0u8; 4096];
    let mut generation = 0;
    faults.reverse();
    let mut next_fault_at = faults.last().map(|f| match f {
        Fault::Reset { at, .. } | Fault::Blackhole { at, .. } => *at,
    });
    for _ in 0..2_000_000 {
        // Application.
        if c_sent < client_len {
            let end = (c_sent + write_size).min(client_len);
            let data: Vec<u8> = (c_sent..end).map(|o| pattern(1, o)).collect();
            c_sent += p.client.write(&data).unwrap();
        } else {
            p.client.finish();
        }
        if p.generation != generation {
            // The client never saw the orphaned session's Welcome, so it
            // never received a byte of it; the application starts over.
            generation = p.generation;
            s_sent = 0;
            s_got.clear();
        }
        if let Some(s) = p.server.as_mut() {
            if s_sent < server_len {
                let end = (s_sent + write_size).min(server_len);
                let data: Vec<u8> = (s_sent..end).map(|o| pattern(2, o)).collect();
                s_sent += s.write(&data).unwrap();
            } else {
                s.finish();
            }
            loop {
                let n = s.read(&mut buf);
                if n == 0 {
                    break;
                }
                s_got.extend_from_slice(&buf[..n]);
            }
        }
        loop {
            let n = p.client.read(&mut buf);
            if n == 0 {
                break;
            }
            c_got.extend_from_slice(&buf[..n]);
        }
        if p.client.is_done() && p.server.as_ref().is_some_and(|s| s.is_done()) {
            return (s_got, c_got, p.connects);
        }
        p.pump_output();
        // Faults trigger on client→server wire bytes, wherever they fall.
        if let Some(at) = next_fault_at {
            if p.wire_c2s + chunk >= at && !p.c2s.is_empty() {
                let short = at.saturating_sub(p.wire_c2s).min(p.c2s.len());
                p.transfer(short);
                match faults.pop() {
                    Some(Fault::Reset { keep, .. }) => {
                        let on_boundary = keep.is_none();
                        let keep = keep.unwrap_or_else(|| p.to_boundary());
                        let whole = p.c2s.len() >= keep;
                        p.transfer(keep);
                        if on_boundary && whole && !p.blackholed() {
                            assert!(
                                p.frame_left == 0 && p.header.is_empty(),
                                "cut on a frame boundary"
                            );
                        }
                        p.reset();
                    }
                    Some(Fault::Blackhole { ms, .. }) => {
                        p.blackhole_until = Some(p.now + Duration::from_millis(ms));
                    }
                    None => {}
                }
                next_fault_at = faults.last().map(|f| match f {
                    Fault::Reset { at, .. } | Fault::Blackhole { at, .. } => p.wire_c2s + *at,
                });
            }
        }
        let had_traffic = !p.blackholed() && (!p.c2s.is_empty() || !p.s2c.is_empty());
        p.transfer(chunk);
        p.events();
        if had_traffic {
            p.now += Duration::from_micros(200);
        } else if let Some(t) = p.next_timer() {
            p.now = p.now.max(t);
        } else {
            p.now += Duration::from_millis(1);
        }
        p.fire_timers();
        p.events();
    }
    panic!(
        "transfer did not finish: client sent {c_sent}, server got {}, client got {}",
        s_got.len(),
        c_got.len()
    );
}

fn expected(salt: u8, len: usize) -> Vec<u8> {
    (0..len).map(|o| pattern(salt, o)).collect()
}

#[test]
fn clean_transfer_uses_one_transport() {
    let (s_got, c_got, connects) = run(50_000, 7_000, 600, 3000, vec![]);
    assert_eq!(s_got, expected(1, 50_000));
    assert_eq!(c_got, expected(2, 7_000));
    assert_eq!(connects, 1);
}

#[test]
fn reset_mid_frame_resumes_exactly() {
    let faults = vec![
        Fault::Reset {
            at: 3_333,
            keep: Some(7),
        },
        Fault::Reset {
            at: 5,
            keep: Some(0),
        },
        Fault::Reset {
            at: 2_000,
            keep: None,
        },
    ];
    let (s_got, c_got, connects) = run(40_000, 9_000, 512, 2048, faults);
    assert_eq!(s_got, expected(1, 40_000));
    assert_eq!(c_got, expected(2, 9_000));
    assert_eq!(connects, 4);
}

#[test]
fn blackhole_is_detected_by_keepalive_and_resumed() {
    let faults = vec![Fault::Blackhole {
        at: 10_000,
        ms: 5_000,
    }];
    let (s_got, c_got, connects) = run(30_000, 100, 700, 4096, faults);
    assert_eq!(s_got, expected(1, 30_000));
    assert_eq!(c_got, expected(2, 100));
    assert!(
        connects >= 2,
        "a blackhole longer than dead_after forces a new transport"
    );
}

/// Steps the pair by 1 ms of virtual time: output, transfer, events,
/// timers.
fn step(p: &mut Pair) {
    p.pump_output();
    p.transfer(64 << 10);
    p.events();
    p.now += Duration::from_millis(1);
    p.fire_timers();
    p.events();
}

fn window_config() -> Config {
    Config {
        receive_buffer: INITIAL_WINDOW,
        keepalive_interval: Duration::from_millis(100),
        dead_after: Duration::from_millis(400),
        ..Config::default()
    }
}

/// Issue 10, acceptance 2: the server's application stops reading while
/// the client has 1 MiB to send. The server holds exactly its window, the
/// transport stays up for 10 s on keepalives (both ways), and when the
/// client vanishes the server notices within `dead_after`.
#[test]
fn a_receiver_that_does_not_read_holds_its_window_and_still_detects_a_vanished_peer() {
    let mut p = Pair::new(window_config());
    let data = expected(1, 1 << 20);
    let mut written = 0;
    let start = p.now;
    while p.now < start + Duration::from_secs(10) {
        written += p.client.write(&data[written..]).unwrap();
        step(&mut p);
        let held = p.server.as_ref().map_or(0, |s| s.unread());
        assert!(held <= INITIAL_WINDOW, "server holds {held}");
    }
    let server = p.server.as_ref().unwrap();
    assert_eq!(server.unread(), INITIAL_WINDOW, "the window is full");
    assert_eq!(server.stats().links_failed, 0, "keepalives kept it alive");
    assert_eq!(p.client.stats().links_failed, 0);
    assert_eq!(p.client.delivery().acknowledged, INITIAL_WINDOW as u64);
    assert_eq!(p.connects, 1);

    // The client vanishes: nothing more arrives from it.
    let last_heard = p.now;
    let server = p.server.as_mut().unwrap();
    let failed_at = loop {
        let Some(t) = server.poll_timeout() else {
            panic!("the server stopped watching its transport");
        };
        server.handle_timeout(t);
        let mut out = Vec::new();
        server.poll_transmit(t, &mut out, 1 << 16);
        if let Some(Event::LinkFailed(_)) = server.poll_event() {
            break t;
        }
        assert!(t < last_heard + Duration::from_secs(5), "never noticed");
    };
    let took = failed_at - last_heard;
    assert!(
        took <= Duration::from_millis(400),
        "noticed after {took:?}, dead_after is 400 ms"
    );
}

/// The application reads slowly (1 KiB a step) from a 64 KiB window: 1 MiB
/// arrives exactly, window update by window update, on one transport.
#[test]
fn window_updates_carry_a_transfer_many_times_the_window() {
    let mut p = Pair::new(window_config());
    let data = expected(1, 1 << 20);
    let (mut written, mut got) = (0, Vec::new());
    let mut buf = [0u8; 1024];
    for _ in 0..200_000 {
        written += p.client.write(&data[written..]).unwrap();
        if let Some(s) = p.server.as_mut() {
            let n = s.read(&mut buf);
            got.extend_from_slice(&buf[..n]);
            assert!(s.unread() <= INITIAL_WINDOW);
        }
        if got.len() == data.len() {
            break;
        }
        step(&mut p);
    }
    assert!(
        got == data,
        "{} of {} bytes, not exact",
        got.len(),
        data.len()
    );
    assert_eq!(p.connects, 1);
}

/// A peer that sends beyond the window it was granted is broken (or
/// hostile): the session fails with a protocol error instead of buffering.
#[test]
fn data_beyond_the_window_fails_the_session() {
    let now = Instant::now();
    let mut server = SessionCore::new_server(window_config(), Credentials::generate().unwrap());
    server
        .open_server_link(now, ServerOpen::New { key: [3; 32] }, &[])
        .unwrap();
    let mut wire = Vec::new();
    let first = vec![1u8; 60_000];
    Frame::Data {
        offset: 0,
        payload: first.clone().into(),
    }
    .encode(&mut wire);
    Frame::Data {
        offset: 60_000,
        payload: vec![2u8; INITIAL_WINDOW - 60_000 + 1].into(),
    }
    .encode(&mut wire);
    let _ = server.handle_input(now, &wire);
    let failed = std::iter::from_fn(|| server.poll_event()).find_map(|e| match e {
        Event::Failed(e) => Some(e),
        _ => None,
    });
    let e = failed.expect("the session failed");
    assert!(
        matches!(e.kind(), SessionErrorKind::Protocol(m) if m.contains("beyond the receive window")),
        "{e}"
    );
    assert_eq!(server.unread(), 60_000, "nothing past the window was kept");
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 96, ..ProptestConfig::default() })]

    #[test]
    fn faults_at_any_offset_never_lose_duplicate_or_reorder(
        client_len in 0usize..200_000,
        server_len in 0usize..20_000,
        chunk in 1usize..3_000,
        write_size in 1usize..10_000,
        faults in proptest::collection::vec(fault(), 0..6),
    ) {
        let (s_got, c_got, _) = run(client_len, server_len, chunk, write_size, faults);
        prop_assert_eq!(s_got, expected(1, client_len));
        prop_assert_eq!(c_got, expected(2, server_len));
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    /// Garbage from the network never panics, in any phase; at worst it
    /// costs the transport, never the session's data.
    #[test]
    fn random_input_never_panics(chunks in proptest::collection::vec(proptest::collection::vec(any::<u8>(), 0..200), 1..8)) {
        let now = Instant::now();
        let config = Config::default();
        let mut hs = ServerHandshake::new([1; 16]);
        let mut server = SessionCore::new_server(config.clone(), Credentials::generate().unwrap());
        server.open_server_link(now, ServerOpen::New { key: [3; 32] }, &[]).unwrap();
        let mut client = SessionCore::new_client(config.clone(), KeyPair::from_random([4; 32]));
        client.open_client_link(now);
        let mut out = Vec::new();
        for c in &chunks {
            let _ = hs.handle_input(c);
            let _ = server.handle_input(now, c);
            let _ = client.handle_input(now, c);
            server.poll_transmit(now, &mut out, 1 << 20);
            client.poll_transmit(now, &mut out, 1 << 20);
        }
        // The server has no handshake left to fail: garbage can only cost
        // it the transport, never end the session.
        prop_assert!(server.error().is_none());
    }
}
