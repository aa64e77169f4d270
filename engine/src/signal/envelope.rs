//! The signaling envelope: an application message id that survives any
//! number of brokers (MQTT packet ids are per connection and say nothing
//! about a message that went through two brokers), a TTL, the recipient,
//! the sender's own name (where acknowledgements go) and the payload.
//!
//! Two kinds travel in it: a message, and an acknowledgement, whose
//! payload lists the sequence numbers (of sender `id.sender`) that the
//! acknowledging endpoint (`from`) has received.
//!
//! Written by hand rather than with a serialization crate: the format must
//! be stable across versions of this crate and of its dependencies, and a
//! receiver must reject garbage, foreign and oversized messages before it
//! allocates for them.
//!
//! ```text
//! "NMS" | version u8 | kind u8 | sender u64 | seq u64 | sent_at_ms u64
//!       | ttl_ms u32 | age_ms u32 | recipient_len u8 | recipient
//!       | from_len u8 | from | payload_len u32 | payload
//!       [ | mac [u8; 32] ]                      (version 6 only)
//! ```
//! (big endian; `kind` 0 is a message, 1 an acknowledgement whose payload
//! is a list of `seq` u64s).
//!
//! **Expiry does not depend on the two ends' clocks agreeing.** `age_ms` is
//! how long the sender had held the message when it published this copy,
//! measured on its own monotonic clock (as HTTP's `Age` header, RFC 9111
//! §4.2.3, and MQTT 5's message expiry interval, which a broker counts
//! down while it holds a message): a receiver counts the TTL from receipt,
//! never compares the sender's clock with its own. `sent_at_ms` is the
//! sender's Unix time when it made the message, on its own clock, which
//! may be off by any amount; a receiver uses it only relative to the same
//! sender's other envelopes (the transit estimate in
//! [`SignalCore`](super::core::SignalCore)).
//!
//! Versions 1 to 4 (before acknowledgements, then with absolute expiry:
//! a receiver whose clock was off by more than its tolerance dropped
//! everything) are no longer read. Version 5 is unauthenticated: anyone
//! who can publish on the topic can write one. Version 6 ends with an
//! HMAC-SHA256 of everything before it under the signaling group's
//! [`SignalKey`]; a receiver with a key accepts only version 6 envelopes
//! whose MAC verifies (checked in constant time, before anything else is
//! looked at), so a publisher without the key can neither inject a message
//! nor touch the receiver's duplicate filter. A sender restamps `age_ms`
//! (and the MAC) on every copy it publishes ([`restamp`]).

use hmac::{Hmac, Mac};
use sha2::Sha256;
use thiserror::Error;

const MAGIC: &[u8; 3] = b"NMS";
/// The unauthenticated envelope version.
pub const VERSION: u8 = 5;
/// The authenticated envelope version (a MAC trailer).
pub const VERSION_AUTHENTICATED: u8 = 6;
/// Magic, version, kind, sender, seq, sent_at_ms, ttl_ms, age_ms, the two
/// name lengths and the payload length.
const HEADER: usize = 3 + 1 + 1 + 8 + 8 + 8 + 4 + 4 + 1 + 1 + 4;
/// Where `age_ms` sits: after magic, version, kind, sender, seq, sent_at_ms
/// and ttl_ms.
const AGE_AT: usize = 3 + 1 + 1 + 8 + 8 + 8 + 4;
/// Sequence numbers one acknowledgement carries at most.
pub const MAX_ACKS_PER_ENVELOPE: usize = 128;
/// Bytes of the MAC trailer.
pub const MAC_LEN: usize = 32;

/// The key a signaling group shares: every envelope its members write
/// carries a MAC under it, and every envelope they accept must.
///
/// Its `Debug` output does not show the key.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct SignalKey([u8; 32]);

impl SignalKey {
    /// A key from 32 secret bytes (e.g. from the application's own key
    /// store, or derived from a shared secret with a KDF).
    pub fn from_bytes(bytes: [u8; 32]) -> SignalKey {
        SignalKey(bytes)
    }

    /// A fresh random key from the OS.
    ///
    /// # Errors
    ///
    /// When the OS random source fails.
    pub fn generate() -> Result<SignalKey, getrandom::Error> {
        let mut k = [0u8; 32];
        getrandom::fill(&mut k)?;
        Ok(SignalKey(k))
    }

    fn mac(&self) -> Hmac<Sha256> {
        let mut mac = match <Hmac<Sha256> as Mac>::new_from_slice(&self.0) {
            Ok(m) => m,
            Err(_) => unreachable!("HMAC takes keys of any length"),
        };
        // Domain separation: this key's MACs mean "a signaling envelope".
        mac.update(b"netmend signal envelope v4\0");
        mac
    }
}

impl std::fmt::Debug for SignalKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SignalKey(..)")
    }
}

/// Identifies a message across brokers: its sender and the sender's
/// sequence number.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct MessageId {
    /// The sending endpoint (random per endpoint).
    pub sender: u64,
    /// Per-sender sequence number, from 1.
    pub seq: u64,
}

/// What an envelope carries.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// An application message.
    Message,
    /// An acknowledgement: the payload lists the sequence numbers of
    /// sender `id.sender` that `from` received (see [`Envelope::acked`]).
    Ack,
}

/// One signaling envelope.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Envelope {
    /// A message or an acknowledgement.
    pub kind: Kind,
    /// Its identity (an acknowledgement: the acknowledged sender, seq 0).
    pub id: MessageId,
    /// When the sender made it (Unix ms, the sender's clock, which need not
    /// agree with the receiver's).
    pub sent_at_ms: u64,
    /// How long it stays worth delivering, from when it was made.
    pub ttl_ms: u32,
    /// How long the sender had held it when it published this copy (ms, the
    /// sender's monotonic clock); the receiver counts the rest of the TTL
    /// from receipt.
    pub age_ms: u32,
    /// Who it is for.
    pub recipient: String,
    /// Who wrote it: the name acknowledgements are addressed to.
    pub from: String,
    /// The application's bytes (an acknowledgement: the sequence numbers).
    pub payload: Vec<u8>,
}

/// Why bytes on the signaling topic are not an envelope for us.
#[derive(Clone, Debug, Error, PartialEq, Eq)]
#[non_exhaustive]
pub enum DecodeError {
    /// Not a netmend envelope at all.
    #[error("not a netmend envelope")]
    Foreign,
    /// A version this crate does not read.
    #[error("envelope version {0} is not supported")]
    Version(u8),
    /// Larger than the receiver accepts.
    #[error("envelope of {len} bytes exceeds the limit of {max}")]
    Oversized {
        /// Its length.
        len: usize,
        /// The limit.
        max: usize,
    },
    /// Shorter than its own lengths say, or with bytes after the payload.
    #[error("malformed envelope")]
    Malformed,
    /// The receiver requires authenticated envelopes and this one has no
    /// MAC, or it has one the receiver has no key to check.
    #[error("envelope is not authenticated for this group")]
    Unauthenticated,
    /// The MAC does not verify: forged, altered, or another group's key.
    #[error("envelope MAC does not verify")]
    BadMac,
}

/// Why a message cannot be encoded.
#[derive(Clone, Debug, Error, PartialEq, Eq)]
#[non_exhaustive]
pub enum EncodeError {
    /// Recipient and sender names are at most 255 bytes.
    #[error("endpoint name longer than 255 bytes")]
    RecipientTooLong,
    /// The whole envelope would exceed the limit.
    #[error("envelope of {len} bytes exceeds the limit of {max}")]
    Oversized {
        /// Its length.
        len: usize,
        /// The limit.
        max: usize,
    },
}

impl Envelope {
    /// The encoded length without a key (with one, [`MAC_LEN`] more).
    pub fn encoded_len(&self) -> usize {
        HEADER + self.recipient.len() + self.from.len() + self.payload.len()
    }

    /// An acknowledgement from `from` to `to` of `seqs` (at most
    /// [`MAX_ACKS_PER_ENVELOPE`] are kept) sent by `sender`.
    pub fn ack(
        sender: u64,
        seqs: &[u64],
        to: &str,
        from: &str,
        now_ms: u64,
        ttl_ms: u32,
    ) -> Envelope {
        Envelope {
            kind: Kind::Ack,
            id: MessageId { sender, seq: 0 },
            sent_at_ms: now_ms,
            ttl_ms,
            age_ms: 0,
            recipient: to.to_string(),
            from: from.to_string(),
            payload: seqs
                .iter()
                .take(MAX_ACKS_PER_ENVELOPE)
                .flat_map(|s| s.to_be_bytes())
                .collect(),
        }
    }

    /// The sequence numbers an acknowledgement lists (none for a message,
    /// or for a payload that is not a whole number of them).
    pub fn acked(&self) -> impl Iterator<Item = u64> + '_ {
        let whole = self.kind == Kind::Ack && self.payload.len() % 8 == 0;
        self.payload
            .chunks_exact(8)
            .filter(move |_| whole)
            .map(|c| u64::from_be_bytes([c[0], c[1], c[2], c[3], c[4], c[5], c[6], c[7]]))
    }

    /// Encodes unauthenticated (version 5), refusing anything over `max`
    /// bytes.
    ///
    /// # Errors
    ///
    /// [`EncodeError`] when the recipient name or the whole is too long.
    pub fn encode(&self, max: usize) -> Result<Vec<u8>, EncodeError> {
        self.encode_with(max, None)
    }

    /// Encodes, authenticated under `key` (version 6, a MAC trailer) when
    /// one is given; the limit counts the trailer.
    ///
    /// # Errors
    ///
    /// [`EncodeError`] when the recipient name or the whole is too long.
    pub fn encode_with(&self, max: usize, key: Option<&SignalKey>) -> Result<Vec<u8>, EncodeError> {
        let rlen = u8::try_from(self.recipient.len()).map_err(|_| EncodeError::RecipientTooLong)?;
        let flen = u8::try_from(self.from.len()).map_err(|_| EncodeError::RecipientTooLong)?;
        let len = self.encoded_len() + if key.is_some() { MAC_LEN } else { 0 };
        let plen =
            u32::try_from(self.payload.len()).map_err(|_| EncodeError::Oversized { len, max })?;
        if len > max {
            return Err(EncodeError::Oversized { len, max });
        }
        let mut out = Vec::with_capacity(len);
        out.extend_from_slice(MAGIC);
        out.push(if key.is_some() {
            VERSION_AUTHENTICATED
        } else {
            VERSION
        });
        out.push(match self.kind {
            Kind::Message => 0,
            Kind::Ack => 1,
        });
        out.extend_from_slice(&self.id.sender.to_be_bytes());
        out.extend_from_slice(&self.id.seq.to_be_bytes());
        out.extend_from_slice(&self.sent_at_ms.to_be_bytes());
        out.extend_from_slice(&self.ttl_ms.to_be_bytes());
        out.extend_from_slice(&self.age_ms.to_be_bytes());
        out.push(rlen);
        out.extend_from_slice(self.recipient.as_bytes());
        out.push(flen);
        out.extend_from_slice(self.from.as_bytes());
        out.extend_from_slice(&plen.to_be_bytes());
        out.extend_from_slice(&self.payload);
        if let Some(key) = key {
            let mut mac = key.mac();
            mac.update(&out);
            out.extend_from_slice(&mac.finalize().into_bytes());
        }
        Ok(out)
    }

    /// Decodes `bytes`, refusing anything over `max` bytes before looking
    /// further. With `key`, only an authenticated envelope whose MAC
    /// verifies is accepted (the MAC is checked before the body is read);
    /// without one, only unauthenticated ones.
    ///
    /// # Errors
    ///
    /// [`DecodeError`]: what is wrong with the bytes.
    pub fn decode(
        bytes: &[u8],
        max: usize,
        key: Option<&SignalKey>,
    ) -> Result<Envelope, DecodeError> {
        if bytes.len() > max {
            return Err(DecodeError::Oversized {
                len: bytes.len(),
                max,
            });
        }
        if bytes.len() < 4 || &bytes[..3] != MAGIC {
            return Err(DecodeError::Foreign);
        }
        let body = match (bytes[3], key) {
            (VERSION, None) => &bytes[4..],
            (VERSION_AUTHENTICATED, Some(key)) => {
                if bytes.len() < 4 + MAC_LEN {
                    return Err(DecodeError::Malformed);
                }
                let (signed, tag) = bytes.split_at(bytes.len() - MAC_LEN);
                let mut mac = key.mac();
                mac.update(signed);
                mac.verify_slice(tag).map_err(|_| DecodeError::BadMac)?;
                &signed[4..]
            }
            (VERSION, Some(_)) | (VERSION_AUTHENTICATED, None) => {
                return Err(DecodeError::Unauthenticated)
            }
            (v, _) => return Err(DecodeError::Version(v)),
        };
        let mut r = Reader(body);
        let kind = match r.u8()? {
            0 => Kind::Message,
            1 => Kind::Ack,
            _ => return Err(DecodeError::Malformed),
        };
        let sender = r.u64()?;
        let seq = r.u64()?;
        let sent_at_ms = r.u64()?;
        let ttl_ms = r.u32()?;
        let age_ms = r.u32()?;
        let rlen = usize::from(r.u8()?);
        let recipient = std::str::from_utf8(r.take(rlen)?)
            .map_err(|_| DecodeError::Malformed)?
            .to_string();
        let flen = usize::from(r.u8()?);
        let from = std::str::from_utf8(r.take(flen)?)
            .map_err(|_| DecodeError::Malformed)?
            .to_string();
        let plen = r.u32()? as usize;
        let payload = r.take(plen)?.to_vec();
        if !r.0.is_empty() {
            return Err(DecodeError::Malformed);
        }
        Ok(Envelope {
            kind,
            id: MessageId { sender, seq },
            sent_at_ms,
            ttl_ms,
            age_ms,
            recipient,
            from,
            payload,
        })
    }

    /// Whether its sender held it for its whole TTL before this copy went
    /// out (then nothing of its life is left on arrival).
    pub fn stale(&self) -> bool {
        self.age_ms >= self.ttl_ms
    }
}

/// Sets the age of an envelope this crate encoded (`bytes` from
/// [`Envelope::encode_with`] with the same `key`) to `age_ms`, and its MAC
/// to match: what a sender does to each copy it publishes. Bytes too short
/// to be an envelope are left alone.
pub fn restamp(bytes: &mut [u8], age_ms: u32, key: Option<&SignalKey>) {
    let tail = if key.is_some() { MAC_LEN } else { 0 };
    if bytes.len() < HEADER + tail {
        return;
    }
    bytes[AGE_AT..AGE_AT + 4].copy_from_slice(&age_ms.to_be_bytes());
    if let Some(key) = key {
        let (signed, tag) = bytes.split_at_mut(bytes.len() - MAC_LEN);
        let mut mac = key.mac();
        mac.update(signed);
        tag.copy_from_slice(&mac.finalize().into_bytes());
    }
}

struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], DecodeError> {
        if self.0.len() < n {
            return Err(DecodeError::Malformed);
        }
        let (head, rest) = self.0.split_at(n);
        self.0 = rest;
        Ok(head)
    }
    fn u8(&mut self) -> Result<u8, DecodeError> {
        Ok(self.take(1)?[0])
    }
    fn u32(&mut self) -> Result<u32, DecodeError> {
        let b = self.take(4)?;
        Ok(u32::from_be_bytes([b[0], b[1], b[2], b[3]]))
    }
    fn u64(&mut self) -> Result<u64, DecodeError> {
        let b = self.take(8)?;
        let mut a = [0u8; 8];
        a.copy_from_slice(b);
        Ok(u64::from_be_bytes(a))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn sample() -> Envelope {
        Envelope {
            kind: Kind::Message,
            id: MessageId { sender: 7, seq: 42 },
            sent_at_ms: 1_700_000_000_000,
            ttl_ms: 30_000,
            age_ms: 1_250,
            recipient: "peer-b".into(),
            from: "peer-a".into(),
            payload: b"offer: 198.18.1.2:4000".to_vec(),
        }
    }

    #[test]
    fn round_trips_and_refuses_what_is_not_ours() {
        let bytes = sample().encode(1024).unwrap();
        assert_eq!(Envelope::decode(&bytes, 1024, None).unwrap(), sample());
        assert_eq!(
            Envelope::decode(b"{\"json\":1}", 1024, None),
            Err(DecodeError::Foreign)
        );
        let mut v9 = bytes.clone();
        v9[3] = 9;
        assert_eq!(
            Envelope::decode(&v9, 1024, None),
            Err(DecodeError::Version(9))
        );
        assert_eq!(
            Envelope::decode(&bytes, 16, None),
            Err(DecodeError::Oversized {
                len: bytes.len(),
                max: 16
            })
        );
        assert_eq!(
            Envelope::decode(&bytes[..bytes.len() - 1], 1024, None),
            Err(DecodeError::Malformed)
        );
        let mut longer = bytes.clone();
        longer.push(0);
        assert_eq!(
            Envelope::decode(&longer, 1024, None),
            Err(DecodeError::Malformed)
        );
    }

    #[test]
    fn a_keyed_receiver_takes_only_envelopes_whose_mac_verifies() {
        let key = SignalKey::from_bytes([7; 32]);
        let other = SignalKey::from_bytes([8; 32]);
        let signed = sample().encode_with(1024, Some(&key)).unwrap();
        assert_eq!(signed.len(), sample().encoded_len() + MAC_LEN);
        assert_eq!(
            Envelope::decode(&signed, 1024, Some(&key)).unwrap(),
            sample()
        );
        assert_eq!(
            Envelope::decode(&signed, 1024, Some(&other)),
            Err(DecodeError::BadMac)
        );
        let plain = sample().encode(1024).unwrap();
        assert_eq!(
            Envelope::decode(&plain, 1024, Some(&key)),
            Err(DecodeError::Unauthenticated)
        );
        assert_eq!(
            Envelope::decode(&signed, 1024, None),
            Err(DecodeError::Unauthenticated)
        );
        // Any altered byte, header or payload or tag, fails the MAC.
        for i in 4..signed.len() {
            let mut bad = signed.clone();
            bad[i] ^= 0x01;
            assert_eq!(
                Envelope::decode(&bad, 1024, Some(&key)),
                Err(DecodeError::BadMac),
                "byte {i}"
            );
        }
        assert_eq!(format!("{key:?}"), "SignalKey(..)");
    }

    #[test]
    fn an_acknowledgement_lists_its_sequence_numbers() {
        let seqs: Vec<u64> = (1..=200).collect();
        let a = Envelope::ack(7, &seqs, "peer-a", "peer-b", 5, 1_000);
        assert_eq!(a.kind, Kind::Ack);
        assert_eq!(a.id, MessageId { sender: 7, seq: 0 });
        assert_eq!(a.acked().collect::<Vec<_>>(), seqs[..MAX_ACKS_PER_ENVELOPE]);
        let bytes = a.encode(1 << 16).unwrap();
        assert_eq!(Envelope::decode(&bytes, 1 << 16, None).unwrap(), a);
        // A message lists none, nor does a ragged payload.
        assert_eq!(sample().acked().count(), 0);
        let mut ragged = a.clone();
        ragged.payload.push(0);
        assert_eq!(ragged.acked().count(), 0);
        // An unknown kind is malformed.
        let mut bad = bytes.clone();
        bad[4] = 2;
        assert_eq!(
            Envelope::decode(&bad, 1 << 16, None),
            Err(DecodeError::Malformed)
        );
    }

    #[test]
    fn a_restamped_copy_carries_its_new_age_and_a_valid_mac() {
        let key = SignalKey::from_bytes([7; 32]);
        for key in [None, Some(&key)] {
            let mut bytes = sample().encode_with(1024, key).unwrap();
            restamp(&mut bytes, 29_999, key);
            let e = Envelope::decode(&bytes, 1024, key).unwrap();
            assert_eq!(e.age_ms, 29_999);
            assert!(!e.stale());
            assert_eq!(Envelope { age_ms: 1_250, ..e }, sample());
            restamp(&mut bytes, 30_000, key);
            assert!(Envelope::decode(&bytes, 1024, key).unwrap().stale());
        }
        // Too short to be an envelope: untouched.
        let mut short = vec![1u8; 10];
        restamp(&mut short, 5, None);
        assert_eq!(short, vec![1u8; 10]);
    }

    #[test]
    fn the_header_is_laid_out_as_documented() {
        let bytes = sample().encode(1024).unwrap();
        assert_eq!(&bytes[..3], b"NMS");
        assert_eq!(bytes[3], VERSION);
        assert_eq!(&bytes[21..29], &1_700_000_000_000u64.to_be_bytes());
        assert_eq!(&bytes[29..33], &30_000u32.to_be_bytes());
        assert_eq!(&bytes[AGE_AT..AGE_AT + 4], &1_250u32.to_be_bytes());
        assert_eq!(bytes[37], 6, "the recipient's length follows the age");
    }

    proptest! {
        #[test]
        fn garbage_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
            let _ = Envelope::decode(&bytes, 4096, None);
            let _ = Envelope::decode(&bytes, 4096, Some(&SignalKey::from_bytes([1; 32])));
        }

        #[test]
        fn any_valid_envelope_round_trips(
            sender in any::<u64>(), seq in any::<u64>(), sent in any::<u64>(), ttl in any::<u32>(),
            age in any::<u32>(),
            recipient in "[a-z0-9-]{0,40}", from in "[a-z0-9-]{0,40}", ack in any::<bool>(),
            payload in proptest::collection::vec(any::<u8>(), 0..300),
        ) {
            let kind = if ack { Kind::Ack } else { Kind::Message };
            let e = Envelope { kind, id: MessageId { sender, seq }, sent_at_ms: sent, ttl_ms: ttl, age_ms: age, recipient, from, payload };
            let bytes = e.encode(1 << 16).unwrap();
            prop_assert_eq!(bytes.len(), e.encoded_len());
            prop_assert_eq!(Envelope::decode(&bytes, 1 << 16, None).unwrap(), e.clone());
            let key = SignalKey::from_bytes([sender as u8; 32]);
            let signed = e.encode_with(1 << 16, Some(&key)).unwrap();
            prop_assert_eq!(Envelope::decode(&signed, 1 << 16, Some(&key)).unwrap(), e);
        }
    }
}
