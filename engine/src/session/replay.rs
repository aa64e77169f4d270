//! Bounded replay buffer of the sending half.

use bytes::{Buf, Bytes, BytesMut};
use std::collections::VecDeque;

/// Bytes written by the application and not yet acknowledged by the peer.
///
/// Offsets are absolute stream offsets. Bytes leave only when the peer's
/// cumulative acknowledgement covers them, so after any transport failure the
/// sender can replay from whatever offset the peer reports.
///
/// Written bytes are copied once, into `tail`; transmitting seals the tail
/// into a refcounted chunk, and data frames carry slices of those chunks, so
/// the bulk path never copies again before the socket.
///
/// Each chunk is stored with its absolute start offset, so finding the
/// chunk that holds an offset is a binary search: replaying or sending from
/// any offset costs O(log n) in the number of chunks held, however many
/// small writes filled the buffer.
#[derive(Debug)]
pub struct ReplayBuffer {
    /// Sealed chunks with their start offsets, oldest first; the first
    /// starts at `base`, each next one where the previous ends.
    chunks: VecDeque<(u64, Bytes)>,
    /// Written but not yet sealed; follows the last chunk.
    tail: BytesMut,
    /// Absolute offset of the first byte held.
    base: u64,
    len: usize,
    capacity: usize,
}

impl ReplayBuffer {
    /// An empty buffer holding at most `capacity` bytes.
    pub fn new(capacity: usize) -> Self {
        Self {
            chunks: VecDeque::new(),
            tail: BytesMut::new(),
            base: 0,
            len: 0,
            capacity: capacity.max(1),
        }
    }

    /// An empty buffer whose next byte is stream offset `base` (a session
    /// re-attached in another process goes on where it was).
    pub fn starting_at(capacity: usize, base: u64) -> Self {
        let mut buffer = Self::new(capacity);
        buffer.base = base;
        buffer
    }

    /// Offset of the oldest byte still held.
    pub fn base(&self) -> u64 {
        self.base
    }

    /// Offset one past the newest byte written.
    pub fn end(&self) -> u64 {
        self.base + self.len as u64
    }

    /// Room left for new writes.
    pub fn free(&self) -> usize {
        self.capacity - self.len
    }

    /// Appends as much of `data` as fits; returns how many bytes were taken.
    pub fn push(&mut self, data: &[u8]) -> usize {
        let n = data.len().min(self.free());
        self.tail.extend_from_slice(&data[..n]);
        self.len += n;
        n
    }

    /// Appends `data` without copying: it becomes a chunk of its own. The
    /// caller checked `free()`; anything beyond it is not taken. Returns how
    /// many bytes were taken.
    pub fn push_bytes(&mut self, mut data: Bytes) -> usize {
        let n = data.len().min(self.free());
        data.truncate(n);
        if n == 0 {
            return 0;
        }
        self.seal_tail();
        self.chunks.push_back((self.end(), data));
        self.len += n;
        n
    }

    /// Moves the unsealed tail into a chunk of its own.
    fn seal_tail(&mut self) {
        if !self.tail.is_empty() {
            let start = self.end() - self.tail.len() as u64;
            let sealed = self.tail.split().freeze();
            self.chunks.push_back((start, sealed));
        }
    }

    /// Drops everything before `offset` (clamped to what is held).
    pub fn trim_to(&mut self, offset: u64) {
        let upto = offset.clamp(self.base, self.end());
        let mut drop = (upto - self.base) as usize;
        self.base = upto;
        self.len -= drop;
        while drop > 0 {
            let Some((start, front)) = self.chunks.front_mut() else {
                // The rest lies in the unsealed tail.
                self.tail.advance(drop);
                return;
            };
            if front.len() <= drop {
                drop -= front.len();
                self.chunks.pop_front();
            } else {
                front.advance(drop);
                *start += drop as u64;
                return;
            }
        }
    }

    /// Up to `max` held bytes starting at `offset`, without copying; empty
    /// when `offset` is at or past the end. The slice never spans two
    /// chunks, so callers loop.
    pub fn slice_from(&mut self, offset: u64, max: usize) -> Bytes {
        if offset >= self.end() || max == 0 {
            return Bytes::new();
        }
        self.seal_tail();
        let offset = offset.max(self.base);
        // The first chunk that ends past `offset` holds it.
        let i = self
            .chunks
            .partition_point(|(start, c)| start + c.len() as u64 <= offset);
        let Some((start, chunk)) = self.chunks.get(i) else {
            return Bytes::new();
        };
        let skip = (offset - start) as usize;
        let end = chunk.len().min(skip.saturating_add(max));
        chunk.slice(skip..end)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn gather(r: &mut ReplayBuffer, mut offset: u64, max: usize) -> Vec<u8> {
        let mut out = Vec::new();
        while out.len() < max {
            let s = r.slice_from(offset, max - out.len());
            if s.is_empty() {
                break;
            }
            offset += s.len() as u64;
            out.extend_from_slice(&s);
        }
        out
    }

    #[test]
    fn push_stops_at_capacity_and_trim_frees_room() {
        let mut r = ReplayBuffer::new(10);
        assert_eq!(r.push(b"abcdefgh"), 8);
        assert_eq!(r.push(b"ijkl"), 2);
        assert_eq!(r.free(), 0);
        r.trim_to(4);
        assert_eq!((r.base(), r.end(), r.free()), (4, 10, 4));
        assert_eq!(gather(&mut r, 6, 100), b"ghij");
        assert_eq!(r.push(b"klmnop"), 4);
        assert_eq!(gather(&mut r, 4, 5), b"efghi");
        assert_eq!(gather(&mut r, 4, 100), b"efghijklmn");
        r.trim_to(12);
        assert_eq!(gather(&mut r, 12, 100), b"mn");
        r.trim_to(100);
        assert_eq!((r.base(), r.end()), (14, 14));
        assert!(r.slice_from(14, 10).is_empty());
    }

    #[test]
    fn owned_chunks_interleave_with_copied_writes() {
        let mut r = ReplayBuffer::new(100);
        r.push(b"ab");
        assert_eq!(r.push_bytes(Bytes::from_static(b"cdef")), 4);
        r.push(b"gh");
        assert_eq!(gather(&mut r, 0, 100), b"abcdefgh");
        r.trim_to(3);
        assert_eq!(gather(&mut r, 3, 100), b"defgh");
        let mut small = ReplayBuffer::new(3);
        assert_eq!(small.push_bytes(Bytes::from_static(b"wxyz")), 3);
        assert_eq!(gather(&mut small, 0, 10), b"wxy");
    }

    #[test]
    fn many_small_chunks_slice_from_any_offset() {
        let mut r = ReplayBuffer::new(1 << 20);
        let mut expect = Vec::new();
        for i in 0..5000u32 {
            let b = [(i % 251) as u8; 3];
            r.push(&b);
            expect.extend_from_slice(&b);
            // Seal every write into a chunk of its own, as transmits do.
            let _ = r.slice_from(r.end() - 1, 1);
        }
        r.trim_to(7);
        for offset in [7u64, 8, 2999, 3000, 14_998, 14_999] {
            assert_eq!(
                gather(&mut r, offset, 10),
                expect[offset as usize..(offset as usize + 10).min(15_000)]
            );
        }
        assert!(r.slice_from(15_000, 10).is_empty());
    }

    #[test]
    fn trimming_into_the_unsealed_tail_works() {
        let mut r = ReplayBuffer::new(100);
        r.push(b"0123456789");
        r.trim_to(3);
        assert_eq!(gather(&mut r, 3, 100), b"3456789");
    }
}
