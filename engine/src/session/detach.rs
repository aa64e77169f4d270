//! A client session taken out of its process and put back in another: the
//! state it needs to go on (credentials, offsets, the unacknowledged bytes,
//! the received bytes not read yet, and — when its transport goes along —
//! where that transport's frames stand), its wire form, and the seal that
//! protects it.
//!
//! The state carries the session's resume secret and the application's
//! bytes. It is sealed with HMAC-SHA256 under a [`StateKey`] the two
//! processes share (the old process makes it and gives it to the new one
//! when it starts it, say): a state that was changed or cut, or sealed under
//! another key, is refused before any of it is used. It is not encrypted:
//! hand it only over a channel only the two processes reach (a
//! [`handover`](crate::handover) channel checks the peer's credentials).
//! netmend never writes it to disk; neither should the application.

use super::auth::Credentials;
use super::frame::SessionId;
use hmac::{Hmac, Mac};
use sha2::Sha256;
use std::any::Any;

/// The state format's version.
const STATE_VERSION: u8 = 1;
/// Length of the seal (HMAC-SHA256).
const SEAL_LEN: usize = 32;

/// A key that seals a detached session's state. Both processes must hold
/// the same one.
#[derive(Clone)]
pub struct StateKey([u8; 32]);

impl StateKey {
    /// A fresh key from the OS random source.
    ///
    /// # Errors
    ///
    /// The OS random source failed.
    pub fn generate() -> Result<StateKey, getrandom::Error> {
        let mut k = [0u8; 32];
        getrandom::fill(&mut k)?;
        Ok(StateKey(k))
    }

    /// A key from its bytes (handed to the new process by the old one).
    pub fn from_bytes(bytes: [u8; 32]) -> StateKey {
        StateKey(bytes)
    }

    /// The key's bytes, to hand to the new process.
    pub fn to_bytes(&self) -> [u8; 32] {
        self.0
    }

    fn mac(&self) -> Hmac<Sha256> {
        // HMAC takes keys of any length: this cannot fail.
        <Hmac<Sha256> as Mac>::new_from_slice(&self.0).unwrap_or_else(|_| unreachable!())
    }
}

impl std::fmt::Debug for StateKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("StateKey(..)")
    }
}

/// Why a detached state was refused.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum StateError {
    /// The seal does not match: changed, cut, or another key.
    #[error("the session state's seal does not match (changed, truncated, or another key)")]
    Seal,
    /// A format version this build does not read.
    #[error("session state version {0}, this build reads {STATE_VERSION}")]
    Version(u8),
    /// Sealed but malformed (a bug on the sending side).
    #[error("malformed session state: {0}")]
    Malformed(&'static str),
    /// The state holds more unacknowledged bytes than this side's replay
    /// buffer (`Config::replay_capacity`) takes.
    #[error("the state holds {held} unacknowledged bytes, the replay buffer takes {capacity}")]
    TooLarge {
        /// Bytes in the state.
        held: usize,
        /// This side's capacity.
        capacity: usize,
    },
}

/// A client session taken out of its process by
/// [`Session::detach`](super::Session::detach): its sealed state and, if it
/// had one, its live transport.
pub struct Detached {
    state: Vec<u8>,
    transport: Option<Box<dyn Any + Send>>,
}

impl std::fmt::Debug for Detached {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Detached")
            .field("state_len", &self.state.len())
            .field("transport", &self.transport.is_some())
            .finish()
    }
}

impl Detached {
    pub(crate) fn new(state: Vec<u8>, transport: Option<Box<dyn Any + Send>>) -> Detached {
        Detached { state, transport }
    }

    /// The sealed state, to hand over with the transport (as a
    /// [`handover`](crate::handover) message's state bytes).
    pub fn state(&self) -> &[u8] {
        &self.state
    }

    /// Whether a live transport came along (none when the session was
    /// between transports).
    pub fn has_transport(&self) -> bool {
        self.transport.is_some()
    }

    /// The live transport, as the connector's stream type `S` (a
    /// `tokio::net::TcpStream` for a TCP connector); `None` if there is none
    /// or it is of another type (then it stays here, and is closed when this
    /// value is dropped).
    pub fn take_transport<S: 'static>(&mut self) -> Option<S> {
        let t = self.transport.take()?;
        match t.downcast::<S>() {
            Ok(s) => Some(*s),
            Err(t) => {
                self.transport = Some(t);
                None
            }
        }
    }
}

/// What a client session needs to go on elsewhere.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct CoreState {
    pub(crate) creds: Credentials,
    pub(crate) peer_acked: u64,
    pub(crate) sent_high: u64,
    pub(crate) fin_requested: bool,
    pub(crate) recv_offset: u64,
    pub(crate) recv_fin: bool,
    pub(crate) window_sent: u64,
    pub(crate) peer_closed: bool,
    pub(crate) peer_window: u64,
    /// Stream offset of the first unacknowledged byte held.
    pub(crate) replay_base: u64,
    /// The unacknowledged bytes, from `replay_base`.
    pub(crate) replay: Vec<u8>,
    /// Received bytes the application has not read.
    pub(crate) unread: Vec<u8>,
    /// The transport's state, when the transport goes along.
    pub(crate) link: Option<LinkState>,
}

/// Where an established transport's frames stand.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct LinkState {
    pub(crate) next_send: u64,
    pub(crate) fin_sent: bool,
    pub(crate) ack_sent: u64,
    pub(crate) close_sent: bool,
    /// Whole frames queued and not yet written: the new process writes them
    /// first.
    pub(crate) control: Vec<u8>,
    /// Bytes read from the transport past the last whole frame.
    pub(crate) input: Vec<u8>,
}

impl CoreState {
    /// The state's wire form, sealed under `key`.
    pub(crate) fn seal(&self, key: &StateKey) -> Vec<u8> {
        let mut out = Vec::with_capacity(128 + self.replay.len() + self.unread.len());
        out.push(STATE_VERSION);
        out.extend_from_slice(&self.creds.id.0);
        out.extend_from_slice(&self.creds.token);
        for v in [
            self.peer_acked,
            self.sent_high,
            self.recv_offset,
            self.window_sent,
            self.peer_window,
            self.replay_base,
        ] {
            out.extend_from_slice(&v.to_be_bytes());
        }
        out.push(flags(&[
            self.fin_requested,
            self.recv_fin,
            self.peer_closed,
            self.link.is_some(),
        ]));
        put_bytes(&mut out, &self.replay);
        put_bytes(&mut out, &self.unread);
        if let Some(l) = &self.link {
            out.extend_from_slice(&l.next_send.to_be_bytes());
            out.extend_from_slice(&l.ack_sent.to_be_bytes());
            out.push(flags(&[l.fin_sent, l.close_sent]));
            put_bytes(&mut out, &l.control);
            put_bytes(&mut out, &l.input);
        }
        let mut mac = key.mac();
        mac.update(&out);
        out.extend_from_slice(&mac.finalize().into_bytes());
        out
    }

    /// Checks the seal under `key`, then reads the state.
    pub(crate) fn open(sealed: &[u8], key: &StateKey) -> Result<CoreState, StateError> {
        let body_len = sealed.len().checked_sub(SEAL_LEN).ok_or(StateError::Seal)?;
        let (body, seal) = sealed.split_at(body_len);
        let mut mac = key.mac();
        mac.update(body);
        mac.verify_slice(seal).map_err(|_| StateError::Seal)?;
        let mut r = Reader(body);
        let version = r.u8()?;
        if version != STATE_VERSION {
            return Err(StateError::Version(version));
        }
        let id = SessionId(r.array()?);
        let token = r.array()?;
        let [peer_acked, sent_high, recv_offset, window_sent, peer_window, replay_base] =
            [r.u64()?, r.u64()?, r.u64()?, r.u64()?, r.u64()?, r.u64()?];
        let f = r.u8()?;
        let replay = r.bytes()?;
        let unread = r.bytes()?;
        let link = if f & 8 != 0 {
            let next_send = r.u64()?;
            let ack_sent = r.u64()?;
            let lf = r.u8()?;
            Some(LinkState {
                next_send,
                ack_sent,
                fin_sent: lf & 1 != 0,
                close_sent: lf & 2 != 0,
                control: r.bytes()?,
                input: r.bytes()?,
            })
        } else {
            None
        };
        if !r.0.is_empty() {
            return Err(StateError::Malformed("bytes after the state"));
        }
        Ok(CoreState {
            creds: Credentials { id, token },
            peer_acked,
            sent_high,
            fin_requested: f & 1 != 0,
            recv_offset,
            recv_fin: f & 2 != 0,
            window_sent,
            peer_closed: f & 4 != 0,
            peer_window,
            replay_base,
            replay,
            unread,
            link,
        })
    }
}

fn flags(bits: &[bool]) -> u8 {
    bits.iter()
        .enumerate()
        .fold(0, |acc, (i, &b)| acc | (u8::from(b) << i))
}

fn put_bytes(out: &mut Vec<u8>, b: &[u8]) {
    // Lengths fit: the replay buffer and the receive buffer are bounded far
    // below 4 GiB by `Config::validate`.
    out.extend_from_slice(&u32::try_from(b.len()).unwrap_or(u32::MAX).to_be_bytes());
    out.extend_from_slice(b);
}

struct Reader<'a>(&'a [u8]);

impl Reader<'_> {
    fn take(&mut self, n: usize) -> Result<&[u8], StateError> {
        if self.0.len() < n {
            return Err(StateError::Malformed("cut short"));
        }
        let (head, rest) = self.0.split_at(n);
        self.0 = rest;
        Ok(head)
    }

    fn u8(&mut self) -> Result<u8, StateError> {
        Ok(self.take(1)?[0])
    }

    fn u64(&mut self) -> Result<u64, StateError> {
        let mut a = [0u8; 8];
        a.copy_from_slice(self.take(8)?);
        Ok(u64::from_be_bytes(a))
    }

    fn array<const N: usize>(&mut self) -> Result<[u8; N], StateError> {
        let mut a = [0u8; N];
        a.copy_from_slice(self.take(N)?);
        Ok(a)
    }

    fn bytes(&mut self) -> Result<Vec<u8>, StateError> {
        let mut a = [0u8; 4];
        a.copy_from_slice(self.take(4)?);
        let n = u32::from_be_bytes(a) as usize;
        Ok(self.take(n)?.to_vec())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn state(link: bool) -> CoreState {
        CoreState {
            creds: Credentials {
                id: SessionId([1; 16]),
                token: [2; 16],
            },
            peer_acked: 10,
            sent_high: 20,
            fin_requested: false,
            recv_offset: 30,
            recv_fin: true,
            window_sent: 40,
            peer_closed: false,
            peer_window: 50,
            replay_base: 10,
            replay: b"0123456789".to_vec(),
            unread: b"unread".to_vec(),
            link: link.then(|| LinkState {
                next_send: 20,
                fin_sent: false,
                ack_sent: 31,
                close_sent: true,
                control: vec![7, 0, 0, 0, 0],
                input: vec![5, 0],
            }),
        }
    }

    #[test]
    fn a_sealed_state_opens_under_its_key_and_only_there() {
        let key = StateKey::from_bytes([9; 32]);
        for link in [false, true] {
            let sealed = state(link).seal(&key);
            assert_eq!(CoreState::open(&sealed, &key), Ok(state(link)));
            assert_eq!(
                CoreState::open(&sealed, &StateKey::from_bytes([8; 32])),
                Err(StateError::Seal)
            );
            // Any one byte changed, or the state cut, breaks the seal.
            for i in [0, 17, 40, sealed.len() / 2, sealed.len() - 1] {
                let mut bad = sealed.clone();
                bad[i] ^= 1;
                assert_eq!(CoreState::open(&bad, &key), Err(StateError::Seal), "{i}");
            }
            assert_eq!(
                CoreState::open(&sealed[..sealed.len() - 1], &key),
                Err(StateError::Seal)
            );
            assert_eq!(CoreState::open(&[], &key), Err(StateError::Seal));
        }
    }

    #[test]
    fn the_key_is_never_printed() {
        assert_eq!(
            format!("{:?}", StateKey::from_bytes([7; 32])),
            "StateKey(..)"
        );
    }
}
