//! Bulk throughput over loopback: a resumable session vs a raw
//! `tokio::net::TcpStream`, side by side in one run.
//!
//! `cargo bench -p netmend --bench throughput`

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use netmend::session::{Accepted, Acceptor, Config, Session, SessionBuilder};
use std::net::SocketAddr;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::runtime::Runtime;

const TOTAL: usize = 64 << 20;
const CHUNK: usize = 64 << 10;

/// Reads every connection to EOF, then closes it.
async fn raw_sink() -> SocketAddr {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((mut s, _)) = l.accept().await {
            tokio::spawn(async move {
                let mut buf = vec![0u8; CHUNK];
                while let Ok(n) = s.read(&mut buf).await {
                    if n == 0 {
                        break;
                    }
                }
                let _ = s.shutdown().await;
            });
        }
    });
    addr
}

/// Reads every session to EOF, then closes it.
async fn session_sink() -> SocketAddr {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    let acceptor = Acceptor::new(Config::default()).expect("default config is valid");
    tokio::spawn(async move {
        while let Ok((s, _)) = l.accept().await {
            // Acks are small frames: Nagle would hold them back.
            let _ = s.set_nodelay(true);
            let acceptor = acceptor.clone();
            tokio::spawn(async move {
                if let Ok(Accepted::New(mut session)) = acceptor.accept(s).await {
                    let mut buf = vec![0u8; CHUNK];
                    while let Ok(n) = session.read(&mut buf).await {
                        if n == 0 {
                            break;
                        }
                    }
                    let _ = session.shutdown().await;
                }
            });
        }
    });
    addr
}

/// A client session over loopback TCP with Nagle off, as the README advises.
async fn open_session(addr: SocketAddr) -> Session {
    SessionBuilder::new()
        .connect(move || async move {
            let s = TcpStream::connect(addr).await?;
            s.set_nodelay(true)?;
            Ok(s)
        })
        .await
        .unwrap()
}

fn bulk(c: &mut Criterion) {
    let rt = Runtime::new().unwrap();
    let raw_addr = rt.block_on(raw_sink());
    let session_addr = rt.block_on(session_sink());
    let data = vec![0x5au8; CHUNK];
    let mut group = c.benchmark_group("bulk_64MiB_loopback");
    group.throughput(Throughput::Bytes(TOTAL as u64));
    group.sample_size(20);
    group.bench_function(BenchmarkId::new("raw_tcp", TOTAL), |b| {
        b.to_async(&rt).iter(|| async {
            let mut s = TcpStream::connect(raw_addr).await.unwrap();
            s.set_nodelay(true).unwrap();
            for _ in 0..TOTAL / CHUNK {
                s.write_all(&data).await.unwrap();
            }
            s.shutdown().await.unwrap();
            let mut rest = Vec::new();
            s.read_to_end(&mut rest).await.unwrap();
        })
    });
    group.bench_function(BenchmarkId::new("resumable_session", TOTAL), |b| {
        b.to_async(&rt).iter(|| async {
            let mut s = open_session(session_addr).await;
            for _ in 0..TOTAL / CHUNK {
                s.write_all(&data).await.unwrap();
            }
            // Resolves once the server acknowledged every byte.
            s.shutdown().await.unwrap();
            let mut rest = Vec::new();
            s.read_to_end(&mut rest).await.unwrap();
        })
    });
    let owned = bytes::Bytes::from(data.clone());
    group.bench_function(
        BenchmarkId::new("resumable_session_write_bytes", TOTAL),
        |b| {
            b.to_async(&rt).iter(|| async {
                let mut s = open_session(session_addr).await;
                for _ in 0..TOTAL / CHUNK {
                    // Zero-copy: the replay buffer keeps a reference.
                    s.write_bytes(owned.clone()).await.unwrap();
                }
                s.shutdown().await.unwrap();
                let mut rest = Vec::new();
                s.read_to_end(&mut rest).await.unwrap();
            })
        },
    );
    group.finish();
}

criterion_group!(benches, bulk);
criterion_main!(benches);
