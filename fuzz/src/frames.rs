//! The session frame decoder (`engine/src/session/frame.rs`).

use bytes::BytesMut;
use netmend::fuzzing::{Decoder, Frame, HEADER_LEN};
use netmend::session::{FrameError, MAX_DATA_FRAME, MAX_FRAME_PAYLOAD_LIMIT, MAX_HANDSHAKE_FRAME};

/// Payload limits decoders run with: the handshake's, the least a session
/// may configure, the default, the largest allowed.
const LIMITS: [u32; 4] = [
    MAX_HANDSHAKE_FRAME,
    MAX_DATA_FRAME as u32 + 8,
    64 << 10,
    MAX_FRAME_PAYLOAD_LIMIT,
];

/// What a decoder made of some input: its frames, then its error if any.
type Outcome = (Vec<Frame>, Option<FrameError>);

/// The first byte picks the limit (low 2 bits) and a chunk size (the rest,
/// 1 to 64 bytes; larger for inputs over 16 KiB); the other bytes are the
/// wire. Checks that:
///
/// * the input gives the same frames and the same error whether it is fed
///   whole or in chunks, through `feed`/`next_frame` or cut off a caller's
///   buffer with `decode_from` ("feed bytes in any split");
/// * an error is sticky;
/// * a decoder waiting for more input holds less than one frame of the
///   limit (a header announcing more is refused before it is buffered);
/// * every decoded frame re-encodes to a frame that decodes to itself, and
///   to the very bytes it came from (the one exception by design: a
///   `Reject` reason unknown to this version reads as `Refused`).
pub fn frames(data: &[u8]) {
    let Some((&first, wire)) = data.split_first() else {
        return;
    };
    let max = LIMITS[usize::from(first & 3)];
    // At most 256 pieces: a large input in tiny pieces would make a run
    // spend its time on the loop, not on the decoder.
    let chunk = (usize::from(first >> 2) + 1).max(wire.len() / 256);
    let whole = fed(max, wire, wire.len().max(1));
    assert_eq!(fed(max, wire, chunk), whole, "fed in chunks of {chunk}");
    assert_eq!(cut(max, wire, chunk), whole, "cut off a buffer");
    round_trip(max, wire, &whole.0);
}

fn fed(max: u32, wire: &[u8], chunk: usize) -> Outcome {
    let mut d = Decoder::new(max);
    let mut frames = Vec::new();
    for piece in wire.chunks(chunk) {
        d.feed(piece);
        loop {
            match d.next_frame() {
                Ok(Some(f)) => frames.push(f),
                Ok(None) => {
                    assert!(d.buffered().len() < HEADER_LEN + max as usize);
                    break;
                }
                Err(e) => {
                    assert_eq!(d.next_frame(), Err(e.clone()), "sticky error");
                    return (frames, Some(e));
                }
            }
        }
    }
    (frames, None)
}

fn cut(max: u32, wire: &[u8], chunk: usize) -> Outcome {
    let mut d = Decoder::new(max);
    let mut buf = BytesMut::new();
    let mut frames = Vec::new();
    for piece in wire.chunks(chunk) {
        buf.extend_from_slice(piece);
        loop {
            match d.decode_from(&mut buf) {
                Ok(Some(f)) => frames.push(f),
                Ok(None) => {
                    assert!(buf.len() < HEADER_LEN + max as usize);
                    break;
                }
                Err(e) => {
                    assert_eq!(d.decode_from(&mut buf), Err(e.clone()), "sticky error");
                    return (frames, Some(e));
                }
            }
        }
    }
    (frames, None)
}

fn round_trip(max: u32, wire: &[u8], frames: &[Frame]) {
    let mut at = 0;
    for f in frames {
        let mut bytes = Vec::new();
        f.encode(&mut bytes);
        let mut d = Decoder::new(max);
        d.feed(&bytes);
        assert_eq!(d.next_frame().as_ref(), Ok(&Some(f.clone())), "{f:?}");
        assert_eq!(d.next_frame(), Ok(None));
        assert!(d.buffered().is_empty());
        let original = &wire[at..at + bytes.len()];
        if matches!(f, Frame::Reject { .. }) {
            assert_eq!(bytes[..HEADER_LEN], original[..HEADER_LEN]);
        } else {
            assert_eq!(bytes, original, "{f:?} re-encodes to other bytes");
        }
        at += bytes.len();
    }
}
