//! The signaling envelope: an application message id that survives any
//! number of brokers (MQTT packet ids are per connection and say nothing
//! about a message that went through two brokers), a TTL, the recipient and
//! the payload.
//!
//! Written by hand rather than with a serialization crate: the format must
//! be stable across versions of this crate and of its dependencies, and a
//! receiver must reject garbage, foreign and oversized messages before it
//! allocates for them.
//!
//! ```text
//! "NMS" | version u8 | sender u64 | seq u64 | sent_at_ms u64 | ttl_ms u32
//!       | recipient_len u8 | recipient | payload_len u32 | payload
//! ```
//! (big endian; `sent_at_ms` is the sender's Unix time).

use thiserror::Error;

const MAGIC: &[u8; 3] = b"NMS";
/// The envelope version this crate writes and reads.
pub const VERSION: u8 = 1;
const HEADER: usize = 3 + 1 + 8 + 8 + 8 + 4 + 1;

/// Identifies a message across brokers: its sender and the sender's
/// sequence number.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct MessageId {
    /// The sending endpoint (random per endpoint).
    pub sender: u64,
    /// Per-sender sequence number, from 1.
    pub seq: u64,
}

/// One signaling message.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Envelope {
    /// Its identity.
    pub id: MessageId,
    /// When the sender sent it (Unix ms, sender's clock).
    pub sent_at_ms: u64,
    /// How long it stays worth delivering.
    pub ttl_ms: u32,
    /// Who it is for.
    pub recipient: String,
    /// The application's bytes.
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
}

/// Why a message cannot be encoded.
#[derive(Clone, Debug, Error, PartialEq, Eq)]
#[non_exhaustive]
pub enum EncodeError {
    /// Recipient names are at most 255 bytes.
    #[error("recipient name longer than 255 bytes")]
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
    /// The encoded length.
    pub fn encoded_len(&self) -> usize {
        HEADER + self.recipient.len() + 4 + self.payload.len()
    }

    /// Encodes, refusing anything over `max` bytes.
    pub fn encode(&self, max: usize) -> Result<Vec<u8>, EncodeError> {
        let rlen = u8::try_from(self.recipient.len()).map_err(|_| EncodeError::RecipientTooLong)?;
        let len = self.encoded_len();
        let plen =
            u32::try_from(self.payload.len()).map_err(|_| EncodeError::Oversized { len, max })?;
        if len > max {
            return Err(EncodeError::Oversized { len, max });
        }
        let mut out = Vec::with_capacity(len);
        out.extend_from_slice(MAGIC);
        out.push(VERSION);
        out.extend_from_slice(&self.id.sender.to_be_bytes());
        out.extend_from_slice(&self.id.seq.to_be_bytes());
        out.extend_from_slice(&self.sent_at_ms.to_be_bytes());
        out.extend_from_slice(&self.ttl_ms.to_be_bytes());
        out.push(rlen);
        out.extend_from_slice(self.recipient.as_bytes());
        out.extend_from_slice(&plen.to_be_bytes());
        out.extend_from_slice(&self.payload);
        Ok(out)
    }

    /// Decodes `bytes`, refusing anything over `max` bytes before looking
    /// further.
    pub fn decode(bytes: &[u8], max: usize) -> Result<Envelope, DecodeError> {
        if bytes.len() > max {
            return Err(DecodeError::Oversized {
                len: bytes.len(),
                max,
            });
        }
        if bytes.len() < 4 || &bytes[..3] != MAGIC {
            return Err(DecodeError::Foreign);
        }
        if bytes[3] != VERSION {
            return Err(DecodeError::Version(bytes[3]));
        }
        let mut r = Reader(&bytes[4..]);
        let sender = r.u64()?;
        let seq = r.u64()?;
        let sent_at_ms = r.u64()?;
        let ttl_ms = r.u32()?;
        let rlen = usize::from(r.u8()?);
        let recipient = std::str::from_utf8(r.take(rlen)?)
            .map_err(|_| DecodeError::Malformed)?
            .to_string();
        let plen = r.u32()? as usize;
        let payload = r.take(plen)?.to_vec();
        if !r.0.is_empty() {
            return Err(DecodeError::Malformed);
        }
        Ok(Envelope {
            id: MessageId { sender, seq },
            sent_at_ms,
            ttl_ms,
            recipient,
            payload,
        })
    }

    /// Whether it is past its TTL at `now_ms` (Unix ms, receiver's clock),
    /// allowing `skew_ms` of clock difference between the two ends.
    pub fn expired(&self, now_ms: u64, skew_ms: u64) -> bool {
        now_ms
            > self
                .sent_at_ms
                .saturating_add(u64::from(self.ttl_ms))
                .saturating_add(skew_ms)
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
            id: MessageId { sender: 7, seq: 42 },
            sent_at_ms: 1_700_000_000_000,
            ttl_ms: 30_000,
            recipient: "peer-b".into(),
            payload: b"offer: 198.18.1.2:4000".to_vec(),
        }
    }

    #[test]
    fn round_trips_and_refuses_what_is_not_ours() {
        let bytes = sample().encode(1024).unwrap();
        assert_eq!(Envelope::decode(&bytes, 1024).unwrap(), sample());
        assert_eq!(
            Envelope::decode(b"{\"json\":1}", 1024),
            Err(DecodeError::Foreign)
        );
        let mut v2 = bytes.clone();
        v2[3] = 2;
        assert_eq!(Envelope::decode(&v2, 1024), Err(DecodeError::Version(2)));
        assert_eq!(
            Envelope::decode(&bytes, 16),
            Err(DecodeError::Oversized {
                len: bytes.len(),
                max: 16
            })
        );
        assert_eq!(
            Envelope::decode(&bytes[..bytes.len() - 1], 1024),
            Err(DecodeError::Malformed)
        );
        let mut longer = bytes.clone();
        longer.push(0);
        assert_eq!(Envelope::decode(&longer, 1024), Err(DecodeError::Malformed));
    }

    #[test]
    fn expiry_allows_for_clock_skew() {
        let e = sample();
        let deadline = e.sent_at_ms + u64::from(e.ttl_ms);
        assert!(!e.expired(deadline, 0));
        assert!(e.expired(deadline + 1, 0));
        assert!(!e.expired(deadline + 1, 5));
    }

    proptest! {
        #[test]
        fn garbage_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
            let _ = Envelope::decode(&bytes, 4096);
        }

        #[test]
        fn any_valid_envelope_round_trips(
            sender in any::<u64>(), seq in any::<u64>(), sent in any::<u64>(), ttl in any::<u32>(),
            recipient in "[a-z0-9-]{0,40}", payload in proptest::collection::vec(any::<u8>(), 0..300),
        ) {
            let e = Envelope { id: MessageId { sender, seq }, sent_at_ms: sent, ttl_ms: ttl, recipient, payload };
            let bytes = e.encode(1 << 16).unwrap();
            prop_assert_eq!(bytes.len(), e.encoded_len());
            prop_assert_eq!(Envelope::decode(&bytes, 1 << 16).unwrap(), e);
        }
    }
}
