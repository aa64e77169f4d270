//! What a server does with a client's first bytes
//! (`engine/src/session/handshake.rs`, the steps of `accept.rs`).
//!
//! The acceptor's tokio glue (admission, the socket) is not run here; its
//! decisions are, in its order and with a fixed nonce and fixed keys, so a
//! crash replays exactly: decode the request with [`ServerHandshake`]; a
//! new session agrees its credentials from the client's key and opens the
//! server core on the bytes read past the request; a resume is checked
//! against the one session this server holds and, with a proof that
//! verifies (the seeds carry valid ones), continues it from the client's
//! offset.

use netmend::fuzzing::{
    ClientRequest, Credentials, Decoder, Frame, KeyPair, Prover, ServerHandshake, ServerOpen,
    SessionCore, HEADER_LEN, PROTOCOL_VERSION,
};
use netmend::session::{Config, Limits, SessionId, MAX_HANDSHAKE_FRAME};
use std::sync::OnceLock;
use std::time::Instant;

/// The challenge of every transport here (the seeds' proofs cover it).
pub const NONCE: [u8; 16] = *b"netmend-fuzz-nce";
/// The session this server already holds.
pub const KNOWN: Credentials = Credentials {
    id: SessionId(*b"known-session-id"),
    token: *b"known-sess-token",
};
/// Bytes the known session wrote before its transport broke: a resume
/// may ask for any offset up to it.
pub const KNOWN_WRITTEN: usize = 100;
/// The id a new session gets.
const NEW_ID: SessionId = SessionId(*b"fresh-session-id");

fn server_key() -> &'static KeyPair {
    static KEY: OnceLock<KeyPair> = OnceLock::new();
    KEY.get_or_init(|| KeyPair::from_random([0x5e; 32]))
}

/// The first byte is the size of the reads the client's bytes arrive in
/// (the acceptor stops reading once the request is complete; the rest of
/// that read is the leftover); the others are the client's bytes.
pub fn handshake(data: &[u8]) {
    let Some((&first, rest)) = data.split_first() else {
        return;
    };
    let read = usize::from(first) + 1;
    let mut hs = ServerHandshake::new(NONCE);
    let mut d = Decoder::new(MAX_HANDSHAKE_FRAME);
    d.feed(&hs.hello());
    assert_eq!(
        d.next_frame(),
        Ok(Some(Frame::ServerHello {
            version: PROTOCOL_VERSION,
            nonce: NONCE
        }))
    );
    let mut request = None;
    for piece in rest.chunks(read) {
        match hs.handle_input(piece) {
            Ok(Some(r)) => {
                request = Some(r);
                break;
            }
            // An unauthenticated client makes the server hold less than
            // one handshake frame.
            Ok(None) => assert!(hs.leftover().len() < HEADER_LEN + MAX_HANDSHAKE_FRAME as usize),
            // The acceptor refuses the transport (typed error).
            Err(_) => return,
        }
    }
    let Some(request) = request else { return };
    let leftover = hs.leftover().to_vec();
    let now = Instant::now();
    match request {
        ClientRequest::New { key } => {
            let server = server_key();
            let Some(creds) = server.agree(NEW_ID, &key, &key, &server.public()) else {
                return; // a degenerate key: refused
            };
            let mut core = SessionCore::new_server(Config::default(), creds);
            core.set_away_cap(Limits::default().max_bytes_while_away);
            let _ = core.open_server_link(
                now,
                ServerOpen::New {
                    key: server.public(),
                },
                &leftover,
            );
            let sent = settle(&mut core, now);
            assert!(
                sent.starts_with(&[Frame::Welcome {
                    session_id: NEW_ID,
                    key: server.public()
                }]),
                "{sent:?}"
            );
        }
        ClientRequest::Resume {
            session_id,
            recv_offset,
            proof,
        } => {
            if session_id != KNOWN.id || !KNOWN.verify(Prover::Client, &NONCE, recv_offset, &proof)
            {
                return; // Reject: unknown session, bad proof
            }
            let mut core = known_session(now);
            let _ = core.open_server_link(
                now,
                ServerOpen::Resume {
                    nonce: NONCE,
                    peer_recv: recv_offset,
                },
                &leftover,
            );
            let sent = settle(&mut core, now);
            let first = sent.first();
            if recv_offset <= KNOWN_WRITTEN as u64 {
                let proof = KNOWN.proof(Prover::Server, &NONCE, 0);
                assert_eq!(
                    first,
                    Some(&Frame::Resumed {
                        recv_offset: 0,
                        proof
                    })
                );
            } else {
                assert!(core.error().is_some(), "a resume beyond what was written");
            }
        }
    }
}

/// The known session: it wrote [`KNOWN_WRITTEN`] bytes on its first
/// transport, which broke before anything was acknowledged.
fn known_session(now: Instant) -> SessionCore {
    let mut core = SessionCore::new_server(Config::default(), KNOWN);
    let _ = core.open_server_link(now, ServerOpen::New { key: [9; 32] }, &[]);
    assert_eq!(core.write(&[7; KNOWN_WRITTEN]), Ok(KNOWN_WRITTEN));
    settle(&mut core, now);
    core.link_lost();
    core
}

/// Takes the core's events and output as a driver would; returns the
/// frames it sent.
fn settle(core: &mut SessionCore, now: Instant) -> Vec<Frame> {
    while core.poll_event().is_some() {}
    let mut out = Vec::new();
    core.poll_transmit(now, &mut out, 1 << 20);
    let mut d = Decoder::new(u32::MAX);
    for b in &out {
        d.feed(b);
    }
    let mut frames = Vec::new();
    while let Ok(Some(f)) = d.next_frame() {
        frames.push(f);
    }
    frames
}
