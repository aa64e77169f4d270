//! FNV-1a, 64 bit: seeds and shards derived from ids and seeds. Written
//! here (a few lines) because the values must stay the same across Rust
//! versions, machines and runs — std's hashers promise none of that — and
//! a saved explore file or a CI shard names them.

/// The FNV-1a hash of `bytes`.
///
/// ```
/// use netmend_harness::hash::fnv1a;
///
/// assert_eq!(fnv1a(*b""), 0xcbf2_9ce4_8422_2325);
/// assert_eq!(fnv1a(*b"a"), 0xaf63_dc4c_8601_ec8c);
/// ```
pub fn fnv1a(bytes: impl IntoIterator<Item = u8>) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in bytes {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    h
}
