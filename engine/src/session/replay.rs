//! Bounded replay buffer of the sending half.

use std::collections::VecDeque;

/// Bytes written by the application and not yet acknowledged by the peer.
///
/// Offsets are absolute stream offsets. Bytes leave only when the peer's
/// cumulative acknowledgement covers them, so after any transport failure the
/// sender can replay from whatever offset the peer reports.
#[derive(Debug)]
pub struct ReplayBuffer {
    bytes: VecDeque<u8>,
    /// Absolute offset of `bytes[0]`.
    base: u64,
    capacity: usize,
}

impl ReplayBuffer {
    /// An empty buffer holding at most `capacity` bytes.
    pub fn new(capacity: usize) -> Self {
        Self {
            bytes: VecDeque::new(),
            base: 0,
            capacity: capacity.max(1),
        }
    }

    /// Offset of the oldest byte still held.
    pub fn base(&self) -> u64 {
        self.base
    }

    /// Offset one past the newest byte written.
    pub fn end(&self) -> u64 {
        self.base + self.bytes.len() as u64
    }

    /// Room left for new writes.
    pub fn free(&self) -> usize {
        self.capacity - self.bytes.len()
    }

    /// Appends as much of `data` as fits; returns how many bytes were taken.
    pub fn push(&mut self, data: &[u8]) -> usize {
        let n = data.len().min(self.free());
        self.bytes.extend(&data[..n]);
        n
    }

    /// Drops everything before `offset` (clamped to what is held).
    pub fn trim_to(&mut self, offset: u64) {
        let upto = offset.clamp(self.base, self.end());
        let n = (upto - self.base) as usize;
        self.bytes.drain(..n);
        self.base = upto;
    }

    /// The held bytes from `offset`, at most `max` of them, as two slices
    /// (the ring may wrap). `offset` must lie within `base()..=end()`.
    pub fn slice_from(&self, offset: u64, max: usize) -> (&[u8], &[u8]) {
        let skip = (offset.saturating_sub(self.base) as usize).min(self.bytes.len());
        let len = (self.bytes.len() - skip).min(max);
        let (a, b) = self.bytes.as_slices();
        if skip >= a.len() {
            let s = skip - a.len();
            (&b[s..s + len], &[])
        } else {
            let a_take = (a.len() - skip).min(len);
            (&a[skip..skip + a_take], &b[..len - a_take])
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn push_stops_at_capacity_and_trim_frees_room() {
        let mut r = ReplayBuffer::new(10);
        assert_eq!(r.push(b"abcdefgh"), 8);
        assert_eq!(r.push(b"ijkl"), 2);
        assert_eq!(r.free(), 0);
        r.trim_to(4);
        assert_eq!((r.base(), r.end(), r.free()), (4, 10, 4));
        let (a, b) = r.slice_from(6, 100);
        assert_eq!([a, b].concat(), b"ghij");
        assert_eq!(r.push(b"klmnop"), 4);
        let (a, b) = r.slice_from(4, 5);
        assert_eq!([a, b].concat(), b"efghi");
        r.trim_to(100);
        assert_eq!((r.base(), r.end()), (14, 14));
    }
}
