//! A resumable session handed to a second real process mid-transfer (the
//! `handover_peer` example): 64 MiB to the server, exact (SHA-256 at the
//! server against the stream's), the server's bytes exact at the client
//! across both processes (SHA-256 in the second process against what the
//! first left unread) — on the same transport, and again with a reset
//! injected during the handover.
#![cfg(target_os = "linux")]

use netmend::handover::{Allow, Channel, Socket};
use netmend::session::{Accepted, Acceptor, Config, SessionBuilder, StateKey};
use sha2::{Digest, Sha256};
use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

const TOTAL: u64 = 64 << 20;
const SPLIT: u64 = 24 << 20;
const GREETING: usize = 1 << 20;
const READ_FIRST: usize = 100_000;

fn pattern(from: u64, len: usize) -> Vec<u8> {
    (0..len as u64).map(|i| ((from + i) % 251) as u8).collect()
}

fn peer_binary() -> PathBuf {
    let exe = std::env::current_exe().expect("test binary path");
    let bin = exe
        .parent()
        .and_then(Path::parent)
        .expect("target profile dir")
        .join("examples")
        .join("handover_peer");
    {
        // Built with the library as it is now: `cargo test --test X` builds
        // no examples, and an old one would test old code (a no-op when
        // `cargo test` built it already; the lock is free while tests run).
        static BUILD: std::sync::Once = std::sync::Once::new();
        BUILD.call_once(|| {
            let status = Command::new(env!("CARGO"))
                // With the workspace's features, as `cargo test --workspace`
                // built it (then a no-op); `-p netmend` alone resolves other
                // features and rebuilds the library and its dependencies.
                .args(["build", "-q", "--workspace", "--example", "handover_peer"])
                .status()
                .expect("cargo runs");
            assert!(status.success(), "building the handover_peer example");
        });
    }
    bin
}

/// The server: sends `GREETING` bytes, reads the client's stream to the
/// end, hashes it, sends the 32-byte hash back. Returns its address, the
/// hash it computed and the count of transports it accepted.
async fn server() -> (
    SocketAddr,
    tokio::sync::oneshot::Receiver<[u8; 32]>,
    Arc<AtomicU32>,
) {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    let acceptor = Acceptor::new(Config::default()).expect("acceptor");
    let transports = Arc::new(AtomicU32::new(0));
    let counted = Arc::clone(&transports);
    let (tx, rx) = tokio::sync::oneshot::channel();
    tokio::spawn(async move {
        let mut tx = Some(tx);
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                return;
            };
            counted.fetch_add(1, Ordering::SeqCst);
            let _ = stream.set_nodelay(true);
            if let Ok(Accepted::New(mut s)) = acceptor.accept(stream).await {
                let Some(tx) = tx.take() else { return };
                tokio::spawn(async move {
                    s.write_all(&pattern(0, GREETING)).await.expect("greeting");
                    let mut hasher = Sha256::new();
                    let mut buf = vec![0u8; 1 << 16];
                    loop {
                        let n = s.read(&mut buf).await.expect("read");
                        if n == 0 {
                            break;
                        }
                        hasher.update(&buf[..n]);
                    }
                    let hash: [u8; 32] = hasher.finalize().into();
                    s.write_all(&hash).await.expect("hash back");
                    s.shutdown().await.expect("shutdown");
                    let _ = tx.send(hash);
                });
            }
        }
    });
    (addr, rx, transports)
}

/// A relay whose live connections `reset` kills with RST.
async fn relay(target: SocketAddr) -> (SocketAddr, Arc<tokio::sync::Notify>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    let reset = Arc::new(tokio::sync::Notify::new());
    let kill = Arc::clone(&reset);
    tokio::spawn(async move {
        loop {
            let Ok((mut down, _)) = listener.accept().await else {
                return;
            };
            let Ok(mut up) = TcpStream::connect(target).await else {
                continue;
            };
            let kill = Arc::clone(&kill);
            tokio::spawn(async move {
                tokio::select! {
                    _ = tokio::io::copy_bidirectional(&mut down, &mut up) => {}
                    () = kill.notified() => {
                        // Linger 0: close sends RST.
                        #[allow(deprecated)]
                        let _ = down.set_linger(Some(std::time::Duration::ZERO));
                        #[allow(deprecated)]
                        let _ = up.set_linger(Some(std::time::Duration::ZERO));
                    }
                }
            });
        }
    });
    (addr, reset)
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

async fn hand_over_mid_transfer(reset_during_handover: bool) {
    let (server_addr, hash_rx, transports) = server().await;
    let (relay_addr, reset) = relay(server_addr).await;
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("session.sock");
    let key = StateKey::generate().expect("key");

    let mut child = Command::new(peer_binary())
        .arg("session")
        .arg(&path)
        .arg(relay_addr.to_string())
        .env("NETMEND_STATE_KEY", hex(&key.to_bytes()))
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn the second process");
    let mut out = BufReader::new(child.stdout.take().expect("stdout"));
    let mut line = String::new();
    out.read_line(&mut line).expect("ready line");
    assert_eq!(line.trim(), "ready");

    // The first process: writes the first part, reads some of the server's.
    let mut session = SessionBuilder::new()
        .connect(move || async move {
            let s = TcpStream::connect(relay_addr).await?;
            s.set_nodelay(true)?;
            Ok(s)
        })
        .await
        .expect("session");
    for at in (0..SPLIT).step_by(1 << 20) {
        session
            .write_all(&pattern(at, 1 << 20))
            .await
            .expect("write");
    }
    let mut first = vec![0u8; READ_FIRST];
    session.read_exact(&mut first).await.expect("read");
    assert_eq!(first, pattern(0, READ_FIRST));

    let mut detached = session.detach(&key).await.expect("detach");
    let transport: TcpStream = detached.take_transport().expect("a live transport");
    let transport = transport.into_std().expect("std socket");
    let mut channel = Channel::connect(&path, Allow::same_user())
        .await
        .expect("channel");
    if reset_during_handover {
        reset.notify_waiters();
    }
    let sent = channel
        .send(
            &Socket::TcpStream(transport),
            &format!("total={TOTAL}"),
            detached.state(),
        )
        .await;
    if let Err(e) = sent {
        let out = child.wait_with_output().expect("child exits");
        panic!(
            "hand over: {e}; the second process said: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    drop((channel, detached));

    // The second process ends first (it reads the server's hash last).
    let output = tokio::task::spawn_blocking(move || {
        let mut rest = String::new();
        let _ = out.read_line(&mut rest);
        (child.wait_with_output().expect("child exits"), rest)
    })
    .await
    .expect("join");
    let (status, report) = output;
    assert!(
        status.status.success(),
        "second process: {}",
        String::from_utf8_lossy(&status.stderr)
    );
    let server_hash = tokio::time::timeout(std::time::Duration::from_secs(10), hash_rx)
        .await
        .expect("the server finished")
        .expect("server hash");

    // The server got the whole stream, once: its hash is the stream's.
    let mut want = Sha256::new();
    for at in (0..TOTAL).step_by(1 << 20) {
        want.update(pattern(at, 1 << 20));
    }
    let want: [u8; 32] = want.finalize().into();
    assert_eq!(hex(&server_hash), hex(&want), "server side: exact stream");
    // The second process read what the first left, then the server's hash.
    let mut left = pattern(READ_FIRST as u64, GREETING - READ_FIRST);
    left.extend_from_slice(&server_hash);
    assert_eq!(
        report.trim(),
        format!(
            "wrote {SPLIT}..{TOTAL} read {} sha256 {}",
            left.len(),
            hex(&Sha256::digest(&left))
        ),
        "client side: exact bytes in the second process"
    );
    let accepted = transports.load(Ordering::SeqCst);
    if reset_during_handover {
        assert_eq!(accepted, 2, "the reset transport, then the resume");
    } else {
        assert_eq!(accepted, 1, "the same transport all along");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_session_handed_to_another_process_mid_transfer_goes_on_exactly() {
    hand_over_mid_transfer(false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reset_during_the_handover_to_another_process_is_survived_exactly() {
    hand_over_mid_transfer(true).await;
}
