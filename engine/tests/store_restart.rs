//! A store-backed server process dies mid-transfer — its runtime, its
//! sessions, its sockets all gone — and its successor, opening the same
//! store file, serves the client's resume from it: both streams arrive
//! exact. Without a store, the same restart loses the session.

use netmend::session::{
    Accepted, Acceptor, Config, Limits, RejectReason, Restored, SessionBuilder, SessionErrorKind,
};
use netmend::store::{EmbeddedStore, Outgoing, StoreKey, StoreLimits};
use netmend::Policy;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::runtime::Runtime;

const CLIENT_LEN: usize = 24 << 20;
const SERVER_LEN: usize = 6 << 20;

fn pattern(salt: u8, from: usize, len: usize) -> Vec<u8> {
    (from..from + len)
        .map(|o| ((o as u64).wrapping_mul(0x9E37_79B9) >> 7) as u8 ^ salt)
        .collect()
}

/// The server application's own durable state: what it processed (it
/// records each read before reading again, as the store's contract asks)
/// and what the store told it on each restore.
#[derive(Default)]
struct App {
    got: Vec<u8>,
    restores: Vec<Restored>,
}

fn runtime() -> Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime")
}

/// One server process: a runtime serving `port`, with the store in `store`
/// (or none), keeping `outgoing` of the outgoing streams.
fn server(port: u16, store: Option<(&Path, Outgoing)>, app: Arc<Mutex<App>>) -> Runtime {
    let rt = runtime();
    let store = store.map(|(p, o)| (p.to_path_buf(), o));
    rt.block_on(async move {
        let listener = TcpListener::bind(("127.0.0.1", port)).await.expect("bind");
        let acceptor = match store {
            Some((path, outgoing)) => {
                let store = EmbeddedStore::open(path, StoreLimits::default()).expect("store");
                let key = StoreKey::from_bytes([0x5e; 32]);
                Acceptor::with_store_keeping(
                    Config::default(),
                    Limits::default(),
                    store,
                    key,
                    outgoing,
                )
            }
            None => Acceptor::new(Config::default()),
        }
        .expect("acceptor");
        tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    return;
                };
                let (acceptor, app) = (acceptor.clone(), Arc::clone(&app));
                tokio::spawn(async move {
                    let (session, skip, outgoing) = match acceptor.accept(stream).await {
                        Ok(Accepted::New(s)) => (s, 0, 0),
                        Ok(Accepted::Restored(s, r)) => {
                            let mut app = app.lock().unwrap();
                            app.restores.push(r);
                            let skip = app.got.len() - r.incoming as usize;
                            (s, skip, r.outgoing as usize)
                        }
                        _ => return,
                    };
                    serve(session, app, skip, outgoing).await;
                });
            }
        });
    });
    rt
}

async fn serve(
    session: netmend::session::Session,
    app: Arc<Mutex<App>>,
    mut skip: usize,
    outgoing: usize,
) {
    let (mut rd, mut wr) = tokio::io::split(session);
    let writer = tokio::spawn(async move {
        let mut at = outgoing;
        while at < SERVER_LEN {
            let n = (SERVER_LEN - at).min(64 << 10);
            if wr.write_all(&pattern(2, at, n)).await.is_err() {
                return;
            }
            at += n;
        }
        let _ = wr.shutdown().await;
    });
    let mut buf = vec![0u8; 64 << 10];
    loop {
        let n = match rd.read(&mut buf).await {
            Ok(0) => break,
            Err(_) => break,
            Ok(n) => n,
        };
        let dup = n.min(skip);
        skip -= dup;
        app.lock().unwrap().got.extend_from_slice(&buf[dup..n]);
    }
    let _ = writer.await;
}

/// The client: sends its stream, reads the server's; what it got, or the
/// session's error.
async fn client(port: u16) -> Result<Vec<u8>, netmend::session::SessionError> {
    let mut policy = Policy::default();
    policy.initial_delay = Duration::from_millis(20);
    policy.max_delay = Duration::from_millis(200);
    let mut session = SessionBuilder::new()
        .policy(policy)
        .connect(move || {
            let addr = std::net::SocketAddr::from(([127, 0, 0, 1], port));
            TcpStream::connect(addr)
        })
        .await?;
    let mut at = 0;
    let mut got = Vec::new();
    let mut buf = vec![0u8; 64 << 10];
    let io = |e: std::io::Error, s: &netmend::session::Session| {
        netmend::session::session_error(&e)
            .cloned()
            .unwrap_or_else(|| s.error().expect("a session error behind the I/O error"))
    };
    while at < CLIENT_LEN {
        let n = (CLIENT_LEN - at).min(256 << 10);
        // Read what the server sent so far as we go (its window must open).
        while let Ok(Ok(k)) =
            tokio::time::timeout(Duration::from_millis(0), session.read(&mut buf)).await
        {
            if k == 0 {
                break;
            }
            got.extend_from_slice(&buf[..k]);
        }
        if let Err(e) = session.write_all(&pattern(1, at, n)).await {
            return Err(io(e, &session));
        }
        at += n;
    }
    if let Err(e) = session.shutdown().await {
        return Err(io(e, &session));
    }
    loop {
        match session.read(&mut buf).await {
            Ok(0) => return Ok(got),
            Ok(k) => got.extend_from_slice(&buf[..k]),
            Err(e) => return Err(io(e, &session)),
        }
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

/// Runs the client against a server that is killed once it processed a
/// third of the stream and started again; returns what the client ended
/// with and the server application's state.
fn restart_mid_transfer(
    store: Option<(PathBuf, Outgoing)>,
) -> (
    Result<Vec<u8>, netmend::session::SessionError>,
    Arc<Mutex<App>>,
) {
    let store = store.as_ref().map(|(p, o)| (p.as_path(), *o));
    let port = free_port();
    let app = Arc::new(Mutex::new(App::default()));
    let first = server(port, store, Arc::clone(&app));
    let client_rt = runtime();
    let done = client_rt.spawn(client(port));
    let t = Instant::now();
    while app.lock().unwrap().got.len() < CLIENT_LEN / 3 {
        assert!(
            t.elapsed() < Duration::from_secs(30),
            "the transfer did not start"
        );
        std::thread::sleep(Duration::from_millis(1));
    }
    // The server process dies: every task, socket and in-flight write.
    first.shutdown_timeout(Duration::from_secs(5));
    std::thread::sleep(Duration::from_millis(100));
    let second = server(port, store, Arc::clone(&app));
    let result = client_rt
        .block_on(async { tokio::time::timeout(Duration::from_secs(60), done).await })
        .expect("the client finished")
        .expect("the client task");
    // Let the server's reader see the end.
    let t = Instant::now();
    while result.is_ok() && app.lock().unwrap().got.len() < CLIENT_LEN {
        assert!(t.elapsed() < Duration::from_secs(10));
        std::thread::sleep(Duration::from_millis(5));
    }
    second.shutdown_timeout(Duration::from_secs(5));
    client_rt.shutdown_timeout(Duration::from_secs(5));
    (result, app)
}

#[test]
fn a_restarted_server_serves_the_session_from_its_store_with_exact_bytes() {
    for outgoing in [Outgoing::Stored, Outgoing::ProducedAgain] {
        restarted_with(outgoing);
    }
}

fn restarted_with(outgoing: Outgoing) {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("sessions.redb");
    let (result, app) = restart_mid_transfer(Some((path, outgoing)));
    let got = result.unwrap_or_else(|e| panic!("{outgoing:?}: the session died: {e}"));
    assert!(
        got == pattern(2, 0, SERVER_LEN),
        "{outgoing:?}: server → client"
    );
    let app = app.lock().unwrap();
    assert_eq!(
        app.restores.len(),
        1,
        "{outgoing:?}: served from the store once"
    );
    assert!(app.restores[0].incoming as usize >= CLIENT_LEN / 3 - (8 << 20));
    assert!(
        app.got == pattern(1, 0, CLIENT_LEN),
        "{outgoing:?}: client → server: exact"
    );
}

#[test]
fn without_a_store_the_restart_loses_the_session() {
    let (result, app) = restart_mid_transfer(None);
    let e = result.expect_err("nothing to resume from");
    assert_eq!(
        *e.kind(),
        SessionErrorKind::Rejected(RejectReason::UnknownSession)
    );
    assert!(app.lock().unwrap().restores.is_empty());
}
