//! The server's half of a transport handshake, before a session is chosen.
//!
//! The acceptor runs this on every fresh transport: send a challenge, read the
//! client's first frame, and say what the client asks for. Verifying a resume
//! proof needs the session table, so that step belongs to the acceptor.

use super::frame::{Decoder, Frame, FrameError, SessionId, PROTOCOL_VERSION};
use thiserror::Error;

/// What the client asked for in its first frame.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ClientRequest {
    /// Open a new session; the client's X25519 public key.
    New {
        /// The client's half of the key agreement.
        key: [u8; 32],
    },
    /// Continue `session_id`; the proof still has to be verified.
    Resume {
        /// Session to continue.
        session_id: SessionId,
        /// Client's received position.
        recv_offset: u64,
        /// HMAC over the challenge.
        proof: [u8; 32],
    },
}

/// The client's first frame was unusable.
#[derive(Clone, Debug, Error, PartialEq, Eq)]
#[non_exhaustive]
pub enum HandshakeError {
    /// Undecodable bytes.
    #[error("bad frame: {0}")]
    Frame(#[from] FrameError),
    /// A frame that may not open a transport.
    #[error("client opened with an unexpected frame")]
    Unexpected,
    /// The client speaks another protocol version.
    #[error("client speaks protocol version {0}")]
    UnsupportedVersion(u8),
    /// The client's public key is degenerate (no shared secret).
    #[error("client sent a degenerate key")]
    WeakKey,
}

/// The largest frame that may open a transport: a `Resume` (57 payload
/// bytes; `NewSession` has 33). A header announcing more is refused before
/// anything is buffered, so a client that has not authenticated can make
/// the server hold at most this much for it.
pub const MAX_HANDSHAKE_FRAME: u32 = 57;

/// Sans-IO server handshake for one transport.
#[derive(Debug)]
pub struct ServerHandshake {
    nonce: [u8; 16],
    decoder: Decoder,
}

impl ServerHandshake {
    /// A handshake whose challenge is `nonce` (fresh from the CSPRNG).
    pub fn new(nonce: [u8; 16]) -> Self {
        Self {
            nonce,
            decoder: Decoder::new(MAX_HANDSHAKE_FRAME),
        }
    }

    #[cfg(test)]
    /// The challenge the client's proof must cover.
    pub fn nonce(&self) -> [u8; 16] {
        self.nonce
    }

    /// The ServerHello bytes to send first.
    pub fn hello(&self) -> Vec<u8> {
        let mut out = Vec::new();
        Frame::ServerHello {
            version: PROTOCOL_VERSION,
            nonce: self.nonce,
        }
        .encode(&mut out);
        out
    }

    /// Feeds client bytes; returns the request once its frame is complete.
    pub fn handle_input(&mut self, bytes: &[u8]) -> Result<Option<ClientRequest>, HandshakeError> {
        self.decoder.feed(bytes);
        let request = match self.decoder.next_frame()? {
            None => return Ok(None),
            Some(Frame::NewSession { version, key }) if version == PROTOCOL_VERSION => {
                ClientRequest::New { key }
            }
            Some(Frame::Resume {
                version,
                session_id,
                recv_offset,
                proof,
            }) if version == PROTOCOL_VERSION => ClientRequest::Resume {
                session_id,
                recv_offset,
                proof,
            },
            Some(Frame::NewSession { version, .. } | Frame::Resume { version, .. }) => {
                return Err(HandshakeError::UnsupportedVersion(version))
            }
            Some(_) => return Err(HandshakeError::Unexpected),
        };
        Ok(Some(request))
    }

    /// Bytes the client sent after its request (normally none).
    pub fn leftover(&self) -> &[u8] {
        self.decoder.buffered()
    }
}
