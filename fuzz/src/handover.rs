//! The socket-handover header (`engine/src/handover/header.rs`): what a
//! receiving process reads beside a descriptor, from another process.

use netmend::handover::{Header, HeaderError, HEADER_LEN, MAX_STATE};

/// Checks that decoding never panics, that a short input is refused as
/// short, and that the format is canonical: a header that decodes
/// re-encodes to exactly the bytes it came from.
pub fn handover(data: &[u8]) {
    match Header::decode(data) {
        Ok(h) => {
            assert_eq!(h.encode()[..], data[..HEADER_LEN], "{h:?}");
            assert!(h.state_len <= MAX_STATE);
        }
        Err(HeaderError::Short(n)) => assert!(n == data.len() && n < HEADER_LEN),
        Err(_) => assert!(data.len() >= HEADER_LEN),
    }
}
