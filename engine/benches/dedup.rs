//! The receiver's duplicate filter under a flood of sender ids (forged or
//! not): every id new, the filter full (4096 senders), so every message is
//! an admission and an eviction. Each must cost O(1): the time per id at
//! 100,000 ids must match that at 10,000.
//!
//! `cargo bench -p netmend --bench dedup`

use criterion::{criterion_group, criterion_main, BatchSize, BenchmarkId, Criterion, Throughput};
use netmend::signal::{Dedup, DedupConfig, MessageId};
use std::time::Instant;

fn ids(n: usize) -> Vec<MessageId> {
    // A fixed xorshift stream: random-looking ids, the same every run.
    let mut x = 0x9E37_79B9_7F4A_7C15u64;
    (0..n)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            MessageId { sender: x, seq: 1 }
        })
        .collect()
}

fn bench(c: &mut Criterion) {
    let mut g = c.benchmark_group("dedup_new_senders");
    for n in [10_000usize, 100_000] {
        let flood = ids(n);
        g.throughput(Throughput::Elements(n as u64));
        g.bench_with_input(BenchmarkId::from_parameter(n), &flood, |b, flood| {
            b.iter_batched_ref(
                || Dedup::new(DedupConfig::default()),
                |d| {
                    let now = Instant::now();
                    for id in flood {
                        criterion::black_box(d.check(*id, now));
                    }
                },
                BatchSize::LargeInput,
            )
        });
    }
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
