//! Wire format of the resume protocol: length-prefixed frames.
//!
//! Every frame is `type: u8`, `len: u32` (big endian, payload length), then
//! `len` payload bytes. The decoder refuses a header that announces more than
//! the configured maximum before it buffers a single payload byte, so a
//! hostile peer cannot make us allocate.

use bytes::{Buf, BufMut, Bytes, BytesMut};
use thiserror::Error;

/// Protocol version carried in the handshake. Version 2 added the
/// receive window ([`Frame::Window`]); peers of version 1 are refused.
pub const PROTOCOL_VERSION: u8 = 2;

/// Bytes in a frame header.
pub const HEADER_LEN: usize = 5;

/// Opaque identifier of a session, chosen by the server.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
pub struct SessionId(pub [u8; 16]);

impl std::fmt::Display for SessionId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        for b in &self.0[..6] {
            write!(f, "{b:02x}")?;
        }
        Ok(())
    }
}

/// Why a server refused a handshake. Sent on the wire as one byte.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
#[non_exhaustive]
pub enum RejectReason {
    /// The session id is unknown to the server (never issued, or expired).
    UnknownSession,
    /// The proof of the resume token did not verify.
    BadProof,
    /// The bytes the client is missing were already trimmed from the replay buffer.
    CannotResume,
    /// The client speaks a protocol version the server does not.
    UnsupportedVersion,
    /// The server is shutting down or refused for a reason it does not name.
    Refused,
    /// The server is at a limit (sessions, handshakes, per-source) or its
    /// application refused new sessions for now: try again later.
    Busy,
}

impl RejectReason {
    fn to_byte(self) -> u8 {
        match self {
            Self::UnknownSession => 1,
            Self::BadProof => 2,
            Self::CannotResume => 3,
            Self::UnsupportedVersion => 4,
            Self::Refused => 5,
            Self::Busy => 6,
        }
    }

    fn from_byte(b: u8) -> Self {
        match b {
            1 => Self::UnknownSession,
            2 => Self::BadProof,
            3 => Self::CannotResume,
            4 => Self::UnsupportedVersion,
            6 => Self::Busy,
            _ => Self::Refused,
        }
    }
}

/// One protocol frame.
#[derive(Clone, PartialEq, Eq, Debug)]
pub enum Frame {
    /// Server → client, first frame on every transport: a fresh challenge.
    ServerHello {
        /// Protocol version of the server.
        version: u8,
        /// Random challenge the client's resume proof must cover.
        nonce: [u8; 16],
    },
    /// Client → server: start a new session.
    NewSession {
        /// Protocol version of the client.
        version: u8,
        /// The client's ephemeral X25519 public key.
        key: [u8; 32],
    },
    /// Client → server: continue an existing session on this transport.
    Resume {
        /// Protocol version of the client.
        version: u8,
        /// The session to resume.
        session_id: SessionId,
        /// Stream offset up to which the client has received (FIN counts as one).
        recv_offset: u64,
        /// HMAC proof of the resume token over the server's nonce.
        proof: [u8; 32],
    },
    /// Server → client: the new session's identifier and the server's half
    /// of the key agreement (the token is derived on both sides, never
    /// sent).
    Welcome {
        /// Identifier of the new session.
        session_id: SessionId,
        /// The server's ephemeral X25519 public key.
        key: [u8; 32],
    },
    /// Server → client: resume accepted.
    Resumed {
        /// Stream offset up to which the server has received.
        recv_offset: u64,
        /// HMAC proof that the server holds the token too.
        proof: [u8; 32],
    },
    /// Server → client: handshake refused; the transport closes after it.
    Reject {
        /// Why.
        reason: RejectReason,
    },
    /// Stream bytes starting at `offset`.
    Data {
        /// Stream offset of the first payload byte.
        offset: u64,
        /// The bytes (a zero-copy slice of the receive buffer when decoded).
        payload: Bytes,
    },
    /// Everything before `recv_offset` arrived (FIN counts as one byte).
    Ack {
        /// Cumulative received offset.
        recv_offset: u64,
    },
    /// Liveness probe on an idle transport; carries an ack too.
    Keepalive {
        /// Cumulative received offset.
        recv_offset: u64,
    },
    /// The sender's stream ends at `offset`.
    Fin {
        /// Total length of the sender's stream.
        offset: u64,
    },
    /// The sender's application aborted the session: nothing more will be
    /// sent or resumed.
    Abort,
    /// The sender of this frame accepts stream data up to (excluding)
    /// `max_offset`: its receive window. Never moves back; until the first
    /// one arrives a peer may send up to
    /// [`INITIAL_WINDOW`](super::config::INITIAL_WINDOW).
    Window {
        /// Highest stream offset (exclusive) the peer may send.
        max_offset: u64,
    },
    /// The sender of this frame is done: its stream ended and was
    /// acknowledged whole, and it received the peer's whole stream. A
    /// session is closed on a side once it is done and has received the
    /// peer's `Close`; until then the last acknowledgement may have been
    /// lost, and a broken transport is resumed to deliver it.
    Close,
}

const T_SERVER_HELLO: u8 = 0x01;
const T_NEW_SESSION: u8 = 0x02;
const T_RESUME: u8 = 0x03;
const T_WELCOME: u8 = 0x04;
const T_RESUMED: u8 = 0x05;
const T_REJECT: u8 = 0x06;
const T_DATA: u8 = 0x10;
const T_ACK: u8 = 0x11;
const T_KEEPALIVE: u8 = 0x12;
const T_FIN: u8 = 0x13;
const T_ABORT: u8 = 0x14;
const T_WINDOW: u8 = 0x15;
const T_CLOSE: u8 = 0x16;

/// A frame could not be decoded. The transport that carried it must be closed.
#[derive(Clone, PartialEq, Eq, Debug, Error)]
#[non_exhaustive]
pub enum FrameError {
    /// The header announced a payload larger than the configured bound.
    #[error("frame of {len} bytes exceeds the limit of {max}")]
    Oversized {
        /// Announced payload length.
        len: u32,
        /// Configured maximum.
        max: u32,
    },
    /// The frame type byte is not part of the protocol.
    #[error("unknown frame type {0:#04x}")]
    UnknownType(u8),
    /// The payload length does not match the frame type.
    #[error("malformed {kind} frame: {len} payload bytes")]
    Malformed {
        /// Frame kind.
        kind: &'static str,
        /// Payload length seen.
        len: usize,
    },
}

impl Frame {
    /// Appends the encoding of this frame to `out`.
    pub fn encode(&self, out: &mut Vec<u8>) {
        match self {
            Frame::ServerHello { version, nonce } => {
                header(out, T_SERVER_HELLO, 17);
                out.push(*version);
                out.extend_from_slice(nonce);
            }
            Frame::NewSession { version, key } => {
                header(out, T_NEW_SESSION, 33);
                out.push(*version);
                out.extend_from_slice(key);
            }
            Frame::Resume {
                version,
                session_id,
                recv_offset,
                proof,
            } => {
                header(out, T_RESUME, 1 + 16 + 8 + 32);
                out.push(*version);
                out.extend_from_slice(&session_id.0);
                out.extend_from_slice(&recv_offset.to_be_bytes());
                out.extend_from_slice(proof);
            }
            Frame::Welcome { session_id, key } => {
                header(out, T_WELCOME, 48);
                out.extend_from_slice(&session_id.0);
                out.extend_from_slice(key);
            }
            Frame::Resumed { recv_offset, proof } => {
                header(out, T_RESUMED, 40);
                out.extend_from_slice(&recv_offset.to_be_bytes());
                out.extend_from_slice(proof);
            }
            Frame::Reject { reason } => {
                header(out, T_REJECT, 1);
                out.push(reason.to_byte());
            }
            Frame::Data { offset, payload } => encode_data(out, *offset, payload),
            Frame::Ack { recv_offset } => offset_frame(out, T_ACK, *recv_offset),
            Frame::Keepalive { recv_offset } => offset_frame(out, T_KEEPALIVE, *recv_offset),
            Frame::Fin { offset } => offset_frame(out, T_FIN, *offset),
            Frame::Abort => header(out, T_ABORT, 0),
            Frame::Window { max_offset } => offset_frame(out, T_WINDOW, *max_offset),
            Frame::Close => header(out, T_CLOSE, 0),
        }
    }

    /// Decodes one frame from a complete payload.
    fn decode(kind: u8, p: &[u8]) -> Result<Frame, FrameError> {
        let malformed = |kind| FrameError::Malformed { kind, len: p.len() };
        let frame = match kind {
            T_SERVER_HELLO if p.len() == 17 => Frame::ServerHello {
                version: p[0],
                nonce: array(&p[1..17]),
            },
            T_SERVER_HELLO => return Err(malformed("ServerHello")),
            T_NEW_SESSION if p.len() == 33 => Frame::NewSession {
                version: p[0],
                key: array(&p[1..33]),
            },
            T_NEW_SESSION => return Err(malformed("NewSession")),
            T_RESUME if p.len() == 57 => Frame::Resume {
                version: p[0],
                session_id: SessionId(array(&p[1..17])),
                recv_offset: u64::from_be_bytes(array(&p[17..25])),
                proof: array(&p[25..57]),
            },
            T_RESUME => return Err(malformed("Resume")),
            T_WELCOME if p.len() == 48 => Frame::Welcome {
                session_id: SessionId(array(&p[..16])),
                key: array(&p[16..48]),
            },
            T_WELCOME => return Err(malformed("Welcome")),
            T_RESUMED if p.len() == 40 => Frame::Resumed {
                recv_offset: u64::from_be_bytes(array(&p[..8])),
                proof: array(&p[8..40]),
            },
            T_RESUMED => return Err(malformed("Resumed")),
            T_REJECT if p.len() == 1 => Frame::Reject {
                reason: RejectReason::from_byte(p[0]),
            },
            T_REJECT => return Err(malformed("Reject")),
            // `decode_from` cuts well-formed data frames off the buffer
            // without copying before it gets here; only empty ones remain.
            T_DATA => return Err(malformed("Data")),
            T_ACK | T_KEEPALIVE | T_FIN | T_WINDOW if p.len() == 8 => {
                let v = u64::from_be_bytes(array(p));
                match kind {
                    T_ACK => Frame::Ack { recv_offset: v },
                    T_KEEPALIVE => Frame::Keepalive { recv_offset: v },
                    T_WINDOW => Frame::Window { max_offset: v },
                    _ => Frame::Fin { offset: v },
                }
            }
            T_ACK => return Err(malformed("Ack")),
            T_KEEPALIVE => return Err(malformed("Keepalive")),
            T_FIN => return Err(malformed("Fin")),
            T_WINDOW => return Err(malformed("Window")),
            T_ABORT if p.is_empty() => Frame::Abort,
            T_ABORT => return Err(malformed("Abort")),
            T_CLOSE if p.is_empty() => Frame::Close,
            T_CLOSE => return Err(malformed("Close")),
            other => return Err(FrameError::UnknownType(other)),
        };
        Ok(frame)
    }
}

/// Writes the prefix of a data frame whose payload (`len` bytes) the caller
/// sends right after it, so the payload itself is never copied.
pub fn encode_data_prefix(out: &mut BytesMut, offset: u64, len: usize) {
    out.put_u8(T_DATA);
    out.put_u32((8 + len) as u32);
    out.put_u64(offset);
}

fn encode_data(out: &mut Vec<u8>, offset: u64, payload: &[u8]) {
    header(out, T_DATA, 8 + payload.len());
    out.extend_from_slice(&offset.to_be_bytes());
    out.extend_from_slice(payload);
}

fn offset_frame(out: &mut Vec<u8>, kind: u8, value: u64) {
    header(out, kind, 8);
    out.extend_from_slice(&value.to_be_bytes());
}

fn header(out: &mut Vec<u8>, kind: u8, len: usize) {
    out.push(kind);
    // Payload lengths are bounded by the frame-size limit, far below u32::MAX.
    out.extend_from_slice(&(len as u32).to_be_bytes());
}

fn array<const N: usize>(s: &[u8]) -> [u8; N] {
    let mut a = [0u8; N];
    a.copy_from_slice(&s[..N]);
    a
}

/// Incremental frame decoder: feed bytes in any split, take frames out.
///
/// Either feed it (`feed` + `next_frame`, one copy into its own buffer) or
/// let it cut frames out of a buffer the caller reads into
/// (`decode_from`): data payloads are then split off that buffer without
/// copying.
#[derive(Debug)]
pub struct Decoder {
    buf: BytesMut,
    max_payload: u32,
    error: Option<FrameError>,
}

impl Decoder {
    /// A decoder that refuses payloads larger than `max_payload` bytes.
    pub fn new(max_payload: u32) -> Self {
        Self {
            buf: BytesMut::new(),
            max_payload,
            error: None,
        }
    }

    /// Buffers more input for [`Decoder::next_frame`].
    pub fn feed(&mut self, bytes: &[u8]) {
        self.buf.extend_from_slice(bytes);
    }

    /// Returns the next complete frame of the fed input, `Ok(None)` when more
    /// input is needed. An error is sticky: every later call returns it again.
    pub fn next_frame(&mut self) -> Result<Option<Frame>, FrameError> {
        let mut buf = std::mem::take(&mut self.buf);
        let result = self.decode_from(&mut buf);
        self.buf = buf;
        result
    }

    /// Cuts the next complete frame off the front of `buf`, leaving any
    /// partial frame in place for the caller to append to.
    pub fn decode_from(&mut self, buf: &mut BytesMut) -> Result<Option<Frame>, FrameError> {
        if let Some(e) = &self.error {
            return Err(e.clone());
        }
        if buf.len() < HEADER_LEN {
            return Ok(None);
        }
        let kind = buf[0];
        let len = u32::from_be_bytes(array(&buf[1..5]));
        if len > self.max_payload {
            let e = FrameError::Oversized {
                len,
                max: self.max_payload,
            };
            self.error = Some(e.clone());
            return Err(e);
        }
        let total = HEADER_LEN + len as usize;
        if buf.len() < total {
            return Ok(None);
        }
        let mut frame = buf.split_to(total);
        frame.advance(HEADER_LEN);
        if kind == T_DATA && len > 8 {
            let offset = frame.get_u64();
            return Ok(Some(Frame::Data {
                offset,
                payload: frame.freeze(),
            }));
        }
        match Frame::decode(kind, &frame) {
            Ok(f) => Ok(Some(f)),
            Err(e) => {
                self.error = Some(e.clone());
                Err(e)
            }
        }
    }

    /// Bytes fed but not yet decoded.
    pub fn buffered(&self) -> &[u8] {
        &self.buf
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn all_frames() -> Vec<Frame> {
        vec![
            Frame::ServerHello {
                version: 1,
                nonce: [7; 16],
            },
            Frame::NewSession {
                version: 1,
                key: [5; 32],
            },
            Frame::Resume {
                version: 1,
                session_id: SessionId([3; 16]),
                recv_offset: 99,
                proof: [9; 32],
            },
            Frame::Welcome {
                session_id: SessionId([1; 16]),
                key: [2; 32],
            },
            Frame::Resumed {
                recv_offset: u64::MAX,
                proof: [4; 32],
            },
            Frame::Reject {
                reason: RejectReason::BadProof,
            },
            Frame::Data {
                offset: 12,
                payload: Bytes::from_static(b"hello"),
            },
            Frame::Ack { recv_offset: 5 },
            Frame::Keepalive { recv_offset: 6 },
            Frame::Fin { offset: 7 },
            Frame::Abort,
            Frame::Window {
                max_offset: 1 << 40,
            },
            Frame::Close,
        ]
    }

    #[test]
    fn every_frame_round_trips_through_byte_by_byte_feeding() {
        let mut wire = Vec::new();
        for f in all_frames() {
            f.encode(&mut wire);
        }
        let mut d = Decoder::new(1024);
        let mut got = Vec::new();
        for b in wire {
            d.feed(&[b]);
            while let Some(f) = d.next_frame().unwrap() {
                got.push(f);
            }
        }
        assert_eq!(got, all_frames());
    }

    #[test]
    fn oversized_header_is_refused_before_payload_arrives_and_error_is_sticky() {
        let mut d = Decoder::new(64);
        d.feed(&[T_DATA, 0, 0, 1, 0]);
        let want = FrameError::Oversized { len: 256, max: 64 };
        assert_eq!(d.next_frame(), Err(want.clone()));
        d.feed(&[0; 300]);
        assert_eq!(d.next_frame(), Err(want));
    }

    #[test]
    fn unknown_type_and_wrong_length_are_errors() {
        let mut d = Decoder::new(64);
        d.feed(&[0x7f, 0, 0, 0, 0]);
        assert_eq!(d.next_frame(), Err(FrameError::UnknownType(0x7f)));
        let mut d = Decoder::new(64);
        d.feed(&[T_ACK, 0, 0, 0, 3, 1, 2, 3]);
        assert_eq!(
            d.next_frame(),
            Err(FrameError::Malformed {
                kind: "Ack",
                len: 3
            })
        );
        let mut d = Decoder::new(64);
        d.feed(&[T_DATA, 0, 0, 0, 8, 0, 0, 0, 0, 0, 0, 0, 0]);
        assert!(matches!(d.next_frame(), Err(FrameError::Malformed { .. })));
    }
}
