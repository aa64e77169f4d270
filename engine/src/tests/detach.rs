//! A client session detached mid-transfer and attached again (as another
//! process would, with its live transport): exact bytes both ways, the
//! same transport, a reset during the handover, a state refused.

use super::session_tcp::{fast_policy, pattern, Relay};
use crate::session::{
    Accepted, Acceptor, Config, SessionBuilder, SessionError, SessionErrorKind, StateError,
    StateKey,
};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// Bytes the server sends the client first.
const GREETING: usize = 1 << 20;

/// A server that sends `GREETING` bytes of pattern, reads its client's
/// stream to the end and sends back how many bytes it got; returns what it
/// read and how many transports it accepted.
async fn server() -> (SocketAddr, tokio::task::JoinHandle<Vec<u8>>, Arc<AtomicU32>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let acceptor = Acceptor::new(Config::default()).unwrap();
    let transports = Arc::new(AtomicU32::new(0));
    let (tx, rx) = tokio::sync::oneshot::channel();
    let counted = Arc::clone(&transports);
    tokio::spawn(async move {
        let mut tx = Some(tx);
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                return;
            };
            counted.fetch_add(1, Ordering::SeqCst);
            stream.set_nodelay(true).unwrap();
            if let Ok(Accepted::New(mut s)) = acceptor.accept(stream).await {
                let tx = tx.take().unwrap();
                tokio::spawn(async move {
                    s.write_all(&pattern(GREETING)).await.unwrap();
                    let mut got = Vec::new();
                    s.read_to_end(&mut got).await.unwrap();
                    s.write_all(&(got.len() as u64).to_be_bytes())
                        .await
                        .unwrap();
                    s.shutdown().await.unwrap();
                    let _ = tx.send(got);
                });
            }
        }
    });
    let got = tokio::spawn(async move { rx.await.unwrap() });
    (addr, got, transports)
}

fn connector(
    addr: SocketAddr,
    calls: Arc<AtomicU32>,
) -> impl crate::session::Connector<Stream = TcpStream> {
    move || {
        calls.fetch_add(1, Ordering::SeqCst);
        async move {
            let s = TcpStream::connect(addr).await?;
            s.set_nodelay(true)?;
            Ok(s)
        }
    }
}

/// Runs a transfer of `total` bytes, detaching after `split` bytes were
/// written and `read_first` bytes of the greeting read; `between` runs
/// between detach and attach. Returns (what the server got, what the
/// client read, attempts of the attached session, server transports).
async fn transfer(
    addr: SocketAddr,
    total: usize,
    split: usize,
    read_first: usize,
    between: impl std::future::Future<Output = ()>,
) -> (Vec<u8>, u32, u32) {
    let data = pattern(total);
    let first_calls = Arc::new(AtomicU32::new(0));
    let mut session = SessionBuilder::new()
        .policy(fast_policy())
        .connect(connector(addr, Arc::clone(&first_calls)))
        .await
        .unwrap();
    session.write_all(&data[..split]).await.unwrap();
    let mut greeting = vec![0u8; read_first];
    session.read_exact(&mut greeting).await.unwrap();

    let key = StateKey::generate().unwrap();
    let mut detached = session.detach(&key).await.unwrap();
    let transport: Option<TcpStream> = detached.take_transport();
    let state = detached.state().to_vec();
    drop(detached);
    between.await;

    let calls = Arc::new(AtomicU32::new(0));
    let mut session = SessionBuilder::new()
        .policy(fast_policy())
        .attach(&state, &key, transport, connector(addr, Arc::clone(&calls)))
        .await
        .unwrap();
    let written = session.delivery().written as usize;
    assert_eq!(written, split, "the stream goes on where it was");
    session.write_all(&data[written..]).await.unwrap();
    session.shutdown().await.unwrap();
    let mut rest = Vec::new();
    session.read_to_end(&mut rest).await.unwrap();
    greeting.extend_from_slice(&rest);
    (
        greeting,
        calls.load(Ordering::SeqCst),
        first_calls.load(Ordering::SeqCst),
    )
}

#[tokio::test]
async fn a_session_detached_mid_transfer_goes_on_on_the_same_transport_with_exact_bytes() {
    let (addr, got, transports) = server().await;
    let total = 8 << 20;
    let (client_read, calls, first_calls) = transfer(addr, total, 3 << 20, 100_000, async {}).await;
    assert_eq!(
        got.await.unwrap(),
        pattern(total),
        "the server got every byte once"
    );
    let mut want = pattern(GREETING);
    want.extend_from_slice(&(total as u64).to_be_bytes());
    assert_eq!(
        client_read, want,
        "the client read every byte once, across both halves"
    );
    assert_eq!(
        (first_calls, calls),
        (1, 0),
        "one connection attempt in all"
    );
    assert_eq!(transports.load(Ordering::SeqCst), 1, "one transport in all");
}

#[tokio::test]
async fn a_reset_during_the_handover_is_survived_by_a_resume() {
    let (server_addr, got, _) = server().await;
    let (relay_addr, relay) = Relay::start(server_addr).await;
    let total = 4 << 20;
    let reset = relay.clone();
    let (client_read, calls, _) = transfer(relay_addr, total, 1 << 20, 10, async move {
        reset.reset_all();
        tokio::time::sleep(Duration::from_millis(50)).await;
    })
    .await;
    assert_eq!(got.await.unwrap(), pattern(total));
    let mut want = pattern(GREETING);
    want.extend_from_slice(&(total as u64).to_be_bytes());
    assert_eq!(client_read, want);
    assert!(
        calls >= 1,
        "the attached session resumed through its connector"
    );
}

#[tokio::test]
async fn a_state_sealed_under_another_key_or_changed_is_refused() {
    let (addr, _got, _) = server().await;
    let session = SessionBuilder::new()
        .connect(connector(addr, Arc::default()))
        .await
        .unwrap();
    let key = StateKey::generate().unwrap();
    let mut detached = session.detach(&key).await.unwrap();
    let transport: Option<TcpStream> = detached.take_transport();
    assert!(transport.is_some());
    let other = StateKey::generate().unwrap();
    let kind = |e: SessionError| e.kind().clone();
    let refused = SessionBuilder::new()
        .attach(
            detached.state(),
            &other,
            None,
            connector(addr, Arc::default()),
        )
        .await
        .map(drop)
        .map_err(kind);
    assert_eq!(refused, Err(SessionErrorKind::State(StateError::Seal)));
    let mut changed = detached.state().to_vec();
    changed[20] ^= 0x80;
    let refused = SessionBuilder::new()
        .attach(&changed, &key, None, connector(addr, Arc::default()))
        .await
        .map(drop)
        .map_err(kind);
    assert_eq!(refused, Err(SessionErrorKind::State(StateError::Seal)));
    // Too small a replay buffer for what the state holds is refused, typed.
    drop(transport);
}

#[tokio::test]
async fn a_session_that_failed_does_not_detach() {
    let (addr, _got, _) = server().await;
    let mut session = SessionBuilder::new()
        .connect(connector(addr, Arc::default()))
        .await
        .unwrap();
    session.abort();
    let err = session
        .detach(&StateKey::generate().unwrap())
        .await
        .unwrap_err();
    assert_eq!(err.kind(), &SessionErrorKind::Aborted);
}
