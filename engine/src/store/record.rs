//! A stored session and the checkpoints that advance it, and the byte
//! layout every backend stores (one header per session, the outgoing
//! bytes as chunks keyed by their stream offset).

use super::seal::SealedToken;
#[cfg(any(feature = "store-embedded", test))]
use super::seal::SEALED_LEN;
use super::StoreError;
use crate::session::SessionId;
use bytes::Bytes;

/// Everything a server needs to go on with a session in another process.
#[derive(Clone, PartialEq, Eq)]
pub struct StoredSession {
    /// The session.
    pub id: SessionId,
    /// The fencing epoch: moves on each time an instance claims the
    /// session.
    pub epoch: u64,
    /// The resume token, sealed under the servers' [`StoreKey`](super::StoreKey).
    pub token: SealedToken,
    /// The incoming stream's committed offset.
    pub recv: u64,
    /// The incoming stream's end was committed (the application read it).
    pub recv_fin: bool,
    /// The first outgoing byte the client has not acknowledged.
    pub send_base: u64,
    /// The end of the outgoing bytes written.
    pub send_end: u64,
    /// The outgoing stream ended at `send_end`.
    pub send_fin: bool,
    /// The outgoing bytes `send_base..send_end`.
    pub data: Vec<u8>,
}

impl StoredSession {
    /// The record of a session just created: epoch 1, nothing sent or
    /// received.
    pub fn new(id: SessionId, token: SealedToken) -> StoredSession {
        StoredSession {
            id,
            epoch: 1,
            token,
            recv: 0,
            recv_fin: false,
            send_base: 0,
            send_end: 0,
            send_fin: false,
            data: Vec::new(),
        }
    }
}

impl std::fmt::Debug for StoredSession {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StoredSession")
            .field("id", &self.id)
            .field("epoch", &self.epoch)
            .field("recv", &self.recv)
            .field("send_base", &self.send_base)
            .field("send_end", &self.send_end)
            .field("send_fin", &self.send_fin)
            .finish_non_exhaustive()
    }
}

/// One step of a session's record: its new positions and the outgoing
/// bytes written since the last one.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Checkpoint {
    /// The session.
    pub id: SessionId,
    /// The epoch of the instance that writes it (fencing).
    pub epoch: u64,
    /// As [`StoredSession::recv`].
    pub recv: u64,
    /// As [`StoredSession::recv_fin`].
    pub recv_fin: bool,
    /// As [`StoredSession::send_base`]: chunks wholly below it are dropped.
    pub send_base: u64,
    /// As [`StoredSession::send_end`].
    pub send_end: u64,
    /// As [`StoredSession::send_fin`].
    pub send_fin: bool,
    /// Outgoing bytes new since the last checkpoint, from their offset (the
    /// last checkpoint's `send_end`) to `send_end`.
    pub append: Option<(u64, Bytes)>,
}

/// The header as backends store it (little work to change: a version byte
/// leads).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Header {
    pub epoch: u64,
    pub recv: u64,
    pub recv_fin: bool,
    pub send_base: u64,
    pub send_end: u64,
    pub send_fin: bool,
    /// Wall-clock expiry, ms since the Unix epoch.
    pub expires_at: u64,
    /// When the session was last claimed (0: never), ms since the Unix
    /// epoch.
    pub claimed_at: u64,
    pub token: SealedToken,
}

/// The header as bytes: used by the embedded store.
#[cfg(any(feature = "store-embedded", test))]
const LAYOUT: u8 = 1;
#[cfg(any(feature = "store-embedded", test))]
pub(crate) const HEADER_LEN: usize = 1 + 8 * 6 + 2 + SEALED_LEN;

impl Header {
    pub(crate) fn of(s: &StoredSession, expires_at: u64) -> Header {
        Header {
            epoch: s.epoch,
            recv: s.recv,
            recv_fin: s.recv_fin,
            send_base: s.send_base,
            send_end: s.send_end,
            send_fin: s.send_fin,
            expires_at,
            claimed_at: 0,
            token: s.token,
        }
    }

    #[cfg(any(feature = "store-embedded", test))]
    pub(crate) fn encode(&self) -> [u8; HEADER_LEN] {
        let mut out = [0u8; HEADER_LEN];
        out[0] = LAYOUT;
        let fields = [
            self.epoch,
            self.recv,
            self.send_base,
            self.send_end,
            self.expires_at,
            self.claimed_at,
        ];
        for (i, v) in fields.iter().enumerate() {
            out[1 + i * 8..9 + i * 8].copy_from_slice(&v.to_be_bytes());
        }
        out[49] = u8::from(self.send_fin);
        out[50] = u8::from(self.recv_fin);
        out[51..].copy_from_slice(&self.token.0);
        out
    }

    #[cfg(any(feature = "store-embedded", test))]
    pub(crate) fn decode(id: SessionId, bytes: &[u8]) -> Result<Header, StoreError> {
        let corrupt = |why: &str| StoreError::Corrupt {
            id,
            why: why.to_string(),
        };
        if bytes.len() != HEADER_LEN {
            return Err(corrupt("header of the wrong length"));
        }
        if bytes[0] != LAYOUT {
            return Err(corrupt("unknown layout version"));
        }
        let field = |i: usize| {
            let mut b = [0u8; 8];
            b.copy_from_slice(&bytes[1 + i * 8..9 + i * 8]);
            u64::from_be_bytes(b)
        };
        let flag = |b: u8| match b {
            0 => Ok(false),
            1 => Ok(true),
            _ => Err(corrupt("bad end-of-stream flag")),
        };
        let send_fin = flag(bytes[49])?;
        let recv_fin = flag(bytes[50])?;
        let mut token = [0u8; SEALED_LEN];
        token.copy_from_slice(&bytes[51..]);
        let h = Header {
            epoch: field(0),
            recv: field(1),
            recv_fin,
            send_base: field(2),
            send_end: field(3),
            expires_at: field(4),
            claimed_at: field(5),
            send_fin,
            token: SealedToken(token),
        };
        if h.send_base > h.send_end {
            return Err(corrupt("acknowledged past the end of the stream"));
        }
        Ok(h)
    }

    /// The header after `cp` (its expiry renewed to `expires_at`).
    pub(crate) fn advance(&self, cp: &Checkpoint, expires_at: u64) -> Header {
        Header {
            epoch: self.epoch,
            recv: cp.recv,
            recv_fin: cp.recv_fin,
            send_base: cp.send_base,
            send_end: cp.send_end,
            send_fin: cp.send_fin,
            expires_at,
            claimed_at: self.claimed_at,
            token: self.token,
        }
    }

    /// The session: this header and its chunks `(offset, bytes)` in offset
    /// order.
    pub(crate) fn session<'a>(
        &self,
        id: SessionId,
        chunks: impl IntoIterator<Item = (u64, &'a [u8])>,
    ) -> Result<StoredSession, StoreError> {
        let len =
            usize::try_from(self.send_end - self.send_base).map_err(|_| StoreError::Corrupt {
                id,
                why: "outgoing bytes too long".into(),
            })?;
        let mut data = Vec::with_capacity(len);
        let mut at = self.send_base;
        for (offset, bytes) in chunks {
            let end = offset + bytes.len() as u64;
            if end <= at || offset >= self.send_end {
                continue;
            }
            if offset > at {
                return Err(StoreError::Corrupt {
                    id,
                    why: format!("outgoing bytes missing from offset {at}"),
                });
            }
            let from = (at - offset) as usize;
            let to = (end.min(self.send_end) - offset) as usize;
            data.extend_from_slice(&bytes[from..to]);
            at = offset + to as u64;
        }
        if at != self.send_end {
            return Err(StoreError::Corrupt {
                id,
                why: format!("outgoing bytes missing from offset {at}"),
            });
        }
        Ok(StoredSession {
            id,
            epoch: self.epoch,
            token: self.token,
            recv: self.recv,
            recv_fin: self.recv_fin,
            send_base: self.send_base,
            send_end: self.send_end,
            send_fin: self.send_fin,
            data,
        })
    }
}

/// Whether a chunk at `offset` of `len` bytes is wholly acknowledged once
/// the stream is acknowledged up to `base`.
pub(crate) fn chunk_dead(offset: u64, len: usize, base: u64) -> bool {
    offset + len as u64 <= base
}

#[cfg(test)]
mod tests {
    use super::*;

    fn header() -> Header {
        Header {
            epoch: 3,
            recv: 10,
            recv_fin: true,
            send_base: 4,
            send_end: 9,
            send_fin: true,
            expires_at: 77,
            claimed_at: 12,
            token: SealedToken([5; SEALED_LEN]),
        }
    }

    #[test]
    fn a_header_round_trips_and_bad_ones_are_refused() {
        let id = SessionId([1; 16]);
        let h = header();
        assert_eq!(Header::decode(id, &h.encode()), Ok(h));
        let mut b = h.encode();
        b[0] = 9;
        assert!(matches!(
            Header::decode(id, &b),
            Err(StoreError::Corrupt { .. })
        ));
        assert!(Header::decode(id, &b[..10]).is_err());
        let mut b = h.encode();
        b[49] = 2;
        assert!(Header::decode(id, &b).is_err());
    }

    #[test]
    fn chunks_are_cut_to_the_unacknowledged_bytes_and_a_hole_is_refused() {
        let id = SessionId([1; 16]);
        let h = header();
        let s = h
            .session(id, [(0u64, &b"abcdef"[..]), (6, &b"ghij"[..])])
            .unwrap();
        assert_eq!(s.data, b"efghi");
        assert!(h.session(id, [(0u64, &b"abcdef"[..])]).is_err());
        assert!(h
            .session(id, [(0u64, &b"ab"[..]), (6, &b"ghij"[..])])
            .is_err());
    }
}
