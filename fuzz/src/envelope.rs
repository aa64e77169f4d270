//! The signaling envelope (`engine/src/signal/envelope.rs`): `decode`
//! without a key and with one.

use netmend::signal::{DecodeError, Envelope, SignalKey};

/// The key the keyed seeds are signed with.
pub const KEY: [u8; 32] = [0x4b; 32];
/// The limit the signaling core uses by default.
const MAX: usize = 64 << 10;

/// Checks that decoding never panics, that the limit is applied before
/// anything else, and that the format is canonical: an envelope that
/// decodes re-encodes to exactly the same bytes (with the same key).
pub fn envelope(data: &[u8]) {
    let key = SignalKey::from_bytes(KEY);
    for key in [None, Some(&key)] {
        match Envelope::decode(data, MAX, key) {
            Ok(e) => {
                assert_eq!(e.encode_with(MAX, key).as_deref(), Ok(data), "{e:?}");
                assert!(e.acked().count() <= e.payload.len() / 8);
            }
            Err(DecodeError::Oversized { .. }) => unreachable!("within the limit"),
            Err(_) => {}
        }
        if let Some(below) = data.len().checked_sub(1) {
            assert_eq!(
                Envelope::decode(data, below, key),
                Err(DecodeError::Oversized {
                    len: data.len(),
                    max: below
                })
            );
        }
    }
}
