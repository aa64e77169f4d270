//! Acceptor admission under floods: hit-and-run clients, trickling
//! handshakes, oversized handshake frames (paused tokio time, in-memory
//! transports).

use super::memory::Server;
use crate::session::frame::{Decoder, Frame};
use crate::session::{
    AcceptError, Accepted, Acceptor, Config, Limits, Refusal, RejectReason, SessionBuilder,
    SessionErrorKind,
};
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt, DuplexStream};

/// Speaks the client's side of a new session by hand and returns the
/// server's answer frame, then vanishes (the stream is dropped).
async fn hit_and_run(mut client: DuplexStream) -> Option<Frame> {
    let mut dec = Decoder::new(1024);
    let mut buf = [0u8; 256];
    // ServerHello first.
    loop {
        if let Ok(Some(_)) = dec.next_frame() {
            break;
        }
        let n = client.read(&mut buf).await.ok()?;
        if n == 0 {
            return None;
        }
        dec.feed(&buf[..n]);
    }
    client.write_all(&super::new_session_request()).await.ok()?;
    loop {
        if let Ok(Some(f)) = dec.next_frame() {
            return Some(f);
        }
        let n = client.read(&mut buf).await.ok()?;
        if n == 0 {
            return None;
        }
        dec.feed(&buf[..n]);
    }
}

#[tokio::test(start_paused = true)]
async fn ten_thousand_hit_and_run_clients_never_hold_more_than_the_session_limit() {
    let limits = Limits {
        max_sessions: 1000,
        ..Limits::default()
    };
    let acceptor = Acceptor::with_limits(Config::default(), limits).unwrap();
    let (mut welcomed, mut busy) = (0, 0);
    for _ in 0..10_000 {
        let (client, server) = tokio::io::duplex(4096);
        let acc = acceptor.clone();
        let accepted = tokio::spawn(async move { acc.accept(server).await });
        match hit_and_run(client).await {
            Some(Frame::Welcome { .. }) => welcomed += 1,
            Some(Frame::Reject {
                reason: RejectReason::Busy,
            }) => busy += 1,
            other => panic!("unexpected answer {other:?}"),
        }
        match accepted.await.unwrap() {
            Ok(Accepted::New(session)) => drop(session),
            Err(AcceptError::Refused(Refusal::Sessions(1000))) => {}
            other => panic!("unexpected accept result {other:?}"),
        }
        assert!(acceptor.session_count() <= 1000);
    }
    // The vanished clients' sessions wait for a resume (idle_expiry): the
    // table fills at 1,000 and every later new session is refused.
    assert_eq!((welcomed, busy), (1000, 9000));

    // A legitimate client while the table is full: a typed refusal…
    assert_eq!(acceptor.session_count(), 1000);
    let (server, _sessions) = Server::with_acceptor(acceptor.clone());
    let err = SessionBuilder::new()
        .connect(server.connector())
        .await
        .unwrap_err();
    assert_eq!(err.kind(), &SessionErrorKind::Rejected(RejectReason::Busy));
    // …and served once the vanished clients' sessions expire.
    tokio::time::sleep(Config::default().idle_expiry + Duration::from_secs(1)).await;
    assert_eq!(acceptor.session_count(), 0);
    let (server, mut sessions) = Server::with_acceptor(acceptor.clone());
    let mut client = SessionBuilder::new()
        .connect(server.connector())
        .await
        .unwrap();
    let mut served = sessions.recv().await.unwrap();
    client.write_all(b"served").await.unwrap();
    client.shutdown().await.unwrap();
    let mut got = Vec::new();
    served.read_to_end(&mut got).await.unwrap();
    assert_eq!(got, b"served");
}

#[tokio::test(start_paused = true)]
async fn trickling_handshakes_take_at_most_the_handshake_limit_and_nothing_big() {
    let limits = Limits {
        max_handshakes: 1000,
        ..Limits::default()
    };
    let acceptor = Acceptor::with_limits(Config::default(), limits).unwrap();
    let mut clients = Vec::new();
    let mut pending = Vec::new();
    let mut refused = 0;
    for _ in 0..3000 {
        let (mut client, server) = tokio::io::duplex(4096);
        let acc = acceptor.clone();
        let task = tokio::spawn(async move { acc.accept(server).await });
        // One byte of a frame header, then nothing.
        let _ = client.write_all(&[0x02]).await;
        tokio::task::yield_now().await;
        if task.is_finished() {
            match task.await.unwrap() {
                Err(AcceptError::Refused(Refusal::Handshakes(1000))) => refused += 1,
                other => panic!("unexpected {other:?}"),
            }
        } else {
            pending.push(task);
        }
        clients.push(client);
        assert!(acceptor.handshakes_in_progress() <= 1000);
    }
    assert_eq!(refused, 2000);
    assert_eq!(pending.len(), 1000);
    assert_eq!(acceptor.handshakes_in_progress(), 1000);
    // The handshake timeout frees every slot.
    for t in pending {
        assert!(matches!(t.await.unwrap(), Err(AcceptError::Timeout)));
    }
    assert_eq!(acceptor.handshakes_in_progress(), 0);
    assert_eq!(acceptor.session_count(), 0);
}

#[tokio::test(start_paused = true)]
async fn a_handshake_frame_larger_than_a_resume_is_refused_before_it_is_buffered() {
    let acceptor = Acceptor::new(Config::default()).unwrap();
    let (mut client, server) = tokio::io::duplex(4096);
    let acc = acceptor.clone();
    let task = tokio::spawn(async move { acc.accept(server).await });
    // A Resume header announcing 60,000 payload bytes (a valid one has 57).
    client.write_all(&[0x03, 0, 0, 0xEA, 0x60]).await.unwrap();
    let result = tokio::time::timeout(Duration::from_millis(10), task)
        .await
        .expect("refused at once, not after the handshake timeout")
        .unwrap();
    assert!(
        matches!(result, Err(AcceptError::Handshake(_))),
        "{result:?}"
    );
    assert_eq!(acceptor.handshakes_in_progress(), 0);
}

#[tokio::test(start_paused = true)]
async fn the_application_hook_refuses_before_any_session_exists() {
    let acceptor = Acceptor::new(Config::default()).unwrap();
    acceptor.on_new_session(|incoming| incoming.sessions < 1);
    let (server, mut sessions) = Server::with_acceptor(acceptor.clone());
    let _first = SessionBuilder::new()
        .connect(server.connector())
        .await
        .unwrap();
    let _served = sessions.recv().await.unwrap();
    let err = SessionBuilder::new()
        .connect(server.connector())
        .await
        .unwrap_err();
    assert_eq!(err.kind(), &SessionErrorKind::Rejected(RejectReason::Busy));
    assert_eq!(acceptor.session_count(), 1);
}

#[tokio::test(start_paused = true)]
async fn the_per_source_limit_counts_handshakes_and_sessions() {
    let limits = Limits {
        max_per_source: 2,
        ..Limits::default()
    };
    let acceptor = Acceptor::with_limits(Config::default(), limits).unwrap();
    let source = std::net::IpAddr::from([198, 18, 0, 9]);
    let mut held = Vec::new();
    for k in 0..3 {
        let (client, server) = tokio::io::duplex(4096);
        let acc = acceptor.clone();
        let task = tokio::spawn(async move { acc.accept_from(server, source).await });
        if k < 2 {
            assert!(matches!(
                hit_and_run(client).await,
                Some(Frame::Welcome { .. })
            ));
            held.push(task.await.unwrap().unwrap());
        } else {
            assert!(matches!(
                task.await.unwrap(),
                Err(AcceptError::Refused(Refusal::Source { limit: 2, .. }))
            ));
        }
    }
    // Another address is not affected.
    let (client, server) = tokio::io::duplex(4096);
    let acc = acceptor.clone();
    let other = std::net::IpAddr::from([198, 18, 0, 10]);
    let task = tokio::spawn(async move { acc.accept_from(server, other).await });
    assert!(matches!(
        hit_and_run(client).await,
        Some(Frame::Welcome { .. })
    ));
    assert!(task.await.unwrap().is_ok());
}
