//! Replay after a resume: sending everything the replay buffer holds again,
//! from the peer's offset, when it holds many small chunks (an application
//! that writes small messages). The lookup is a binary search over chunk
//! offsets, so the time per chunk must not grow with the number held.
//!
//! `cargo bench -p netmend --bench replay`

use criterion::{criterion_group, criterion_main, BatchSize, BenchmarkId, Criterion, Throughput};
use netmend::session::ReplayBuffer;

/// Bytes per application write.
const CHUNK: usize = 16;
/// Largest data frame, as the session sends them.
const FRAME: usize = (64 << 10) - 64;

/// A buffer holding `n` separately sealed chunks, as `n` writes each
/// followed by a transmit leave it.
fn filled(n: usize) -> ReplayBuffer {
    let mut r = ReplayBuffer::new(n * CHUNK);
    let data = [7u8; CHUNK];
    for _ in 0..n {
        r.push(&data);
        // Transmitting seals the written tail into a chunk of its own.
        let end = r.end();
        let _ = r.slice_from(end - 1, 1);
    }
    r
}

/// Sends everything from the oldest byte, frame by frame, as a resume does.
fn replay_all(r: &mut ReplayBuffer) -> u64 {
    let mut offset = r.base();
    let mut frames = 0;
    while offset < r.end() {
        let s = r.slice_from(offset, FRAME);
        offset += s.len() as u64;
        frames += 1;
    }
    frames
}

fn bench(c: &mut Criterion) {
    let mut g = c.benchmark_group("replay_small_chunks");
    for n in [10_000usize, 100_000] {
        g.throughput(Throughput::Elements(n as u64));
        g.bench_with_input(BenchmarkId::from_parameter(n), &n, |b, &n| {
            b.iter_batched_ref(
                || filled(n),
                |r| criterion::black_box(replay_all(r)),
                BatchSize::LargeInput,
            )
        });
    }
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
