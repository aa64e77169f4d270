//! The self-describing byte stream of the `stream` workload.
//!
//! Word `k` (bytes `8k .. 8k+8`) is `k * MIX` in little endian. `MIX` is odd,
//! so the map is a bijection on `u64` and any 8 aligned bytes name their own
//! offset; misaligned windows decode to absurd offsets and are rejected. The
//! receiver can thus attribute every run of bytes it got to a stream offset,
//! whatever connection carried it and wherever that connection started.

const MIX: u64 = 0x9E37_79B9_7F4A_7C15;

/// Multiplicative inverse of `MIX` modulo 2^64 (Newton iteration).
const fn inverse(a: u64) -> u64 {
    let mut x = a; // correct to 3 bits for odd a
    let mut i = 0;
    while i < 6 {
        x = x.wrapping_mul(2u64.wrapping_sub(a.wrapping_mul(x)));
        i += 1;
    }
    x
}

const MIX_INV: u64 = inverse(MIX);

/// The byte at stream offset `o`.
pub fn byte_at(o: u64) -> u8 {
    let word = (o / 8).wrapping_mul(MIX);
    word.to_le_bytes()[(o % 8) as usize]
}

/// Writes the stream bytes `start .. start + out.len()` into `out`.
pub fn fill(start: u64, out: &mut [u8]) {
    // A word at a time: every simulated run writes and checks each byte
    // of its stream through here and `decode`, in the tests' unoptimized
    // builds too.
    let mut offset = start;
    let mut rest = out;
    while !rest.is_empty() {
        let word = (offset / 8).wrapping_mul(MIX).to_le_bytes();
        let from = (offset % 8) as usize;
        let n = (8 - from).min(rest.len());
        let (head, tail) = rest.split_at_mut(n);
        head.copy_from_slice(&word[from..from + n]);
        offset += n as u64;
        rest = tail;
    }
}

/// How many bytes from the start of `bytes` continue the stream at
/// `start`, within a stream of length `total`.
fn matching_run(bytes: &[u8], start: u64, total: u64) -> u64 {
    // Block by block: the expected bytes are made with `fill` and compared
    // as slices; only the block with the first difference goes byte by byte.
    let mut expected = [0u8; 1024];
    let mut len = 0u64;
    loop {
        let left = total.saturating_sub(start + len);
        let at = len as usize;
        let n = (bytes.len() - at)
            .min(expected.len())
            .min(usize::try_from(left).unwrap_or(usize::MAX));
        if n == 0 {
            return len;
        }
        fill(start + len, &mut expected[..n]);
        let got = &bytes[at..at + n];
        if got == &expected[..n] {
            len += n as u64;
            continue;
        }
        let same = got
            .iter()
            .zip(&expected[..n])
            .take_while(|(a, b)| a == b)
            .count();
        return len + same as u64;
    }
}

/// A run of bytes that matched the stream contiguously.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Piece {
    /// Stream offset of the first byte.
    pub start: u64,
    /// Length in bytes.
    pub len: u64,
}

/// What one connection's received bytes decode to.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Decoded {
    /// Runs in arrival order.
    pub pieces: Vec<Piece>,
    /// Where each piece begins within the received bytes.
    pub positions: Vec<u64>,
    /// Bytes that matched no stream position (corruption, or a fragment too
    /// short to attribute).
    pub unattributed: u64,
}

/// Splits `bytes` into maximal runs of the stream of total length `total`.
pub fn decode(bytes: &[u8], total: u64) -> Decoded {
    let mut out = Decoded::default();
    let mut pos = 0usize;
    let mut hint: Option<u64> = None;
    while pos < bytes.len() {
        match locate(&bytes[pos..], total, hint) {
            Some(start) => {
                let len = matching_run(&bytes[pos..], start, total);
                out.pieces.push(Piece { start, len });
                out.positions.push(pos as u64);
                pos += len as usize;
                hint = Some(start + len);
            }
            None => {
                out.unattributed += 1;
                pos += 1;
                hint = None;
            }
        }
    }
    out
}

/// Finds the stream offset of `window[0]`: first the continuation `hint`,
/// then every alignment of the first whole word.
fn locate(window: &[u8], total: u64, hint: Option<u64>) -> Option<u64> {
    if let Some(h) = hint {
        if h < total && window[0] == byte_at(h) && matches_at(window, h, total, 8) {
            return Some(h);
        }
    }
    for skip in 0..8usize {
        if window.len() < skip + 8 {
            break;
        }
        let mut w = [0u8; 8];
        w.copy_from_slice(&window[skip..skip + 8]);
        let k = u64::from_le_bytes(w).wrapping_mul(MIX_INV);
        let Some(word_start) = k.checked_mul(8) else {
            continue;
        };
        let Some(start) = word_start.checked_sub(skip as u64) else {
            continue;
        };
        if word_start + 8 <= total && matches_at(window, start, total, skip + 8) {
            return Some(start);
        }
    }
    None
}

fn matches_at(window: &[u8], start: u64, total: u64, need: usize) -> bool {
    let n = need.min(window.len());
    (0..n).all(|i| start + (i as u64) < total && window[i] == byte_at(start + i as u64))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn stream(start: u64, len: u64) -> Vec<u8> {
        let mut v = vec![0u8; len as usize];
        fill(start, &mut v);
        v
    }

    #[test]
    fn inverse_is_an_inverse() {
        assert_eq!(MIX.wrapping_mul(MIX_INV), 1);
    }

    #[test]
    fn reconnect_pieces_decode_at_their_offsets() {
        // A baseline client: first connection carried 0..1003, the next
        // (after loss) 1500..4000, and a replay duplicated 3000..3100.
        let mut bytes = stream(0, 1003);
        bytes.extend(stream(1500, 2500));
        bytes.extend(stream(3000, 100));
        let d = decode(&bytes, 4000);
        assert_eq!(
            d.pieces,
            vec![
                Piece {
                    start: 0,
                    len: 1003
                },
                Piece {
                    start: 1500,
                    len: 2500
                },
                Piece {
                    start: 3000,
                    len: 100
                }
            ]
        );
        assert_eq!(d.unattributed, 0);
    }

    proptest! {
        #[test]
        fn fill_and_the_run_match_byte_at(start in 0u64..1 << 40, len in 0usize..3000, flip in proptest::option::of(0usize..3000)) {
            let mut v = vec![0u8; len];
            fill(start, &mut v);
            for (i, b) in v.iter().enumerate() {
                prop_assert_eq!(*b, byte_at(start + i as u64));
            }
            let total = start + len as u64;
            if let Some(i) = flip.filter(|i| *i < len) {
                v[i] ^= 0xff;
                prop_assert_eq!(matching_run(&v, start, total), i as u64);
            } else {
                prop_assert_eq!(matching_run(&v, start, total), len as u64);
                // The stream's end ends the run.
                prop_assert_eq!(matching_run(&v, start, total.saturating_sub(5).max(start)), (len as u64).saturating_sub(5));
            }
        }

        #[test]
        fn any_split_of_the_stream_round_trips(total in 16u64..5000, cuts in proptest::collection::vec(0u64..5000, 0..6)) {
            let mut cuts: Vec<u64> = cuts.into_iter().map(|c| c % total).collect();
            cuts.push(0);
            cuts.push(total);
            cuts.sort();
            cuts.dedup();
            // Concatenate pieces with a gap of 16 bytes removed after each cut.
            let mut bytes = Vec::new();
            let mut want = Vec::new();
            for w in cuts.windows(2) {
                let (a, b) = (w[0], w[1]);
                let a2 = (a + 16).min(b);
                if b - a2 >= 16 {
                    bytes.extend(stream(a2, b - a2));
                    want.push((a2, b - a2));
                }
            }
            let d = decode(&bytes, total);
            let total_len: u64 = d.pieces.iter().map(|p| p.len).sum();
            prop_assert_eq!(total_len + d.unattributed, bytes.len() as u64);
            prop_assert_eq!(d.unattributed, 0);
            // The pieces rebuild the bytes exactly. Where the bytes at a
            // boundary happen to match both pieces' streams (one chance in
            // 256 per byte) no decoder can tell where one ends: the
            // boundary may move by a few bytes, never more than a word.
            let rebuilt: Vec<u8> = d.pieces.iter().flat_map(|p| stream(p.start, p.len)).collect();
            prop_assert_eq!(&rebuilt, &bytes);
            prop_assert_eq!(d.pieces.len(), want.len());
            for (g, (start, len)) in d.pieces.iter().zip(&want) {
                prop_assert!(g.start.abs_diff(*start) < 8 && g.len.abs_diff(*len) < 16, "{:?} vs {:?}", g, (start, len));
            }
        }
    }
}
