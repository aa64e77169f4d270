//! Bulk throughput of store-backed sessions against the in-memory table,
//! side by side in one run over loopback: the embedded store (redb, each
//! checkpoint written to the file; forced to the disk; and keeping only the
//! outgoing stream's positions, `Outgoing::ProducedAgain`), the Redis store
//! (a real `redis-server`, started here) and the memory store. Uploads
//! (client → server: the store records positions) and downloads (server →
//! client: the store also holds the unacknowledged bytes).
//!
//! `cargo bench -p netmend --bench store`

#[path = "../tests/support/redis.rs"]
mod redis_server;

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use netmend::session::{Accepted, Acceptor, Config, Limits, Session, SessionBuilder};
use netmend::store::{
    EmbeddedStore, FileDurability, MemoryStore, Outgoing, RedisStore, StoreKey, StoreLimits,
};
use std::net::SocketAddr;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::runtime::Runtime;

const TOTAL: usize = 32 << 20;
const CHUNK: usize = 64 << 10;

/// Serves every session: reads the client's stream to its end (upload) or
/// writes `TOTAL` bytes to it (download: the client's first byte asks).
async fn server(acceptor: Acceptor) -> SocketAddr {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((s, _)) = l.accept().await {
            let _ = s.set_nodelay(true);
            let acceptor = acceptor.clone();
            tokio::spawn(async move {
                let Ok(Accepted::New(mut session)) = acceptor.accept(s).await else {
                    return;
                };
                let mut buf = vec![0u8; CHUNK];
                let mut first = [0u8; 1];
                if session.read_exact(&mut first).await.is_err() {
                    return;
                }
                if first[0] == b'd' {
                    let data = bytes::Bytes::from(vec![0x5au8; CHUNK]);
                    for _ in 0..TOTAL / CHUNK {
                        if session.write_bytes(data.clone()).await.is_err() {
                            return;
                        }
                    }
                    // Ends its stream first: the client reads to its end.
                    if session.shutdown().await.is_err() {
                        return;
                    }
                }
                while let Ok(n) = session.read(&mut buf).await {
                    if n == 0 {
                        break;
                    }
                }
                let _ = session.shutdown().await;
            });
        }
    });
    addr
}

async fn open(addr: SocketAddr) -> Session {
    SessionBuilder::new()
        .connect(move || async move {
            let s = TcpStream::connect(addr).await?;
            s.set_nodelay(true)?;
            Ok(s)
        })
        .await
        .unwrap()
}

async fn upload(addr: SocketAddr, data: &bytes::Bytes) {
    let mut s = open(addr).await;
    s.write_all(b"u").await.unwrap();
    for _ in 0..TOTAL / CHUNK {
        s.write_bytes(data.clone()).await.unwrap();
    }
    s.shutdown().await.unwrap();
    let mut rest = Vec::new();
    s.read_to_end(&mut rest).await.unwrap();
}

async fn download(addr: SocketAddr) {
    let mut s = open(addr).await;
    s.write_all(b"d").await.unwrap();
    let mut buf = vec![0u8; CHUNK];
    let mut got = 0;
    loop {
        let n = s.read(&mut buf).await.unwrap();
        if n == 0 {
            break;
        }
        got += n;
    }
    assert_eq!(got, TOTAL);
    // Only now: a store-backed server acknowledges what its application
    // read, and this one reads again once it wrote everything.
    s.shutdown().await.unwrap();
}

fn with(store: impl netmend::store::SessionStore) -> Acceptor {
    let key = StoreKey::from_bytes([0x42; 32]);
    Acceptor::with_store(Config::default(), Limits::default(), store, key).unwrap()
}

fn bulk(c: &mut Criterion) {
    let rt = Runtime::new().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let redis = redis_server::RedisServer::start();
    let servers: Vec<(&str, SocketAddr)> = rt.block_on(async {
        let embedded =
            EmbeddedStore::open(dir.path().join("a.redb"), StoreLimits::default()).unwrap();
        let disk = EmbeddedStore::open(dir.path().join("b.redb"), StoreLimits::default())
            .unwrap()
            .with_durability(FileDurability::Disk);
        let again = EmbeddedStore::open(dir.path().join("c.redb"), StoreLimits::default()).unwrap();
        let redis = RedisStore::connect(&redis.url(), StoreLimits::default())
            .await
            .unwrap();
        let memory = MemoryStore::new(StoreLimits::default()).unwrap();
        vec![
            (
                "in_memory_table",
                server(Acceptor::new(Config::default()).unwrap()).await,
            ),
            ("embedded_store", server(with(embedded)).await),
            ("embedded_store_fsync", server(with(disk)).await),
            (
                "embedded_store_produced_again",
                server(
                    Acceptor::with_store_keeping(
                        Config::default(),
                        Limits::default(),
                        again,
                        StoreKey::from_bytes([0x42; 32]),
                        Outgoing::ProducedAgain,
                    )
                    .unwrap(),
                )
                .await,
            ),
            ("redis_store", server(with(redis)).await),
            ("memory_store", server(with(memory)).await),
        ]
    });
    let data = bytes::Bytes::from(vec![0x5au8; CHUNK]);
    let mut group = c.benchmark_group("store_bulk_32MiB_loopback");
    group.throughput(Throughput::Bytes(TOTAL as u64));
    group.sample_size(10);
    for (name, addr) in &servers {
        group.bench_function(BenchmarkId::new(format!("upload_{name}"), TOTAL), |b| {
            b.to_async(&rt).iter(|| upload(*addr, &data))
        });
        group.bench_function(BenchmarkId::new(format!("download_{name}"), TOTAL), |b| {
            b.to_async(&rt).iter(|| download(*addr))
        });
    }
    group.finish();
}

criterion_group!(benches, bulk);
criterion_main!(benches);
