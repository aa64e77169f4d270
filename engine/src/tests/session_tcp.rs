//! The tokio drivers over real loopback TCP sockets.

use crate::session::frame::{Decoder, Frame, PROTOCOL_VERSION};
use crate::session::{
    session_error, AcceptError, Accepted, Acceptor, Config, RejectReason, Session, SessionBuilder,
    SessionError, SessionErrorKind, INITIAL_WINDOW,
};
use crate::Policy;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;

pub(super) fn pattern(len: usize) -> Vec<u8> {
    (0..len).map(|i| (i % 251) as u8).collect()
}

/// Server: accepts sessions, reads each to EOF, reports what it read, echoes
/// the byte count back, closes. Resumes are routed by the acceptor.
async fn server(
    config: Config,
) -> (
    SocketAddr,
    Acceptor,
    mpsc::UnboundedReceiver<Vec<u8>>,
    mpsc::UnboundedReceiver<AcceptError>,
) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let acceptor = Acceptor::new(config).unwrap();
    let (tx, rx) = mpsc::unbounded_channel();
    let (etx, erx) = mpsc::unbounded_channel();
    let acc = acceptor.clone();
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                return;
            };
            let (acc, tx, etx) = (acc.clone(), tx.clone(), etx.clone());
            tokio::spawn(async move {
                match acc.accept(stream).await {
                    Ok(Accepted::New(mut s) | Accepted::Restored(mut s, _)) => {
                        let mut got = Vec::new();
                        s.read_to_end(&mut got).await.unwrap();
                        s.write_all(&(got.len() as u64).to_be_bytes())
                            .await
                            .unwrap();
                        s.shutdown().await.unwrap();
                        let _ = tx.send(got);
                    }
                    Ok(Accepted::Resumed(_)) => {}
                    Err(e) => {
                        let _ = etx.send(e);
                    }
                }
            });
        }
    });
    (addr, acceptor, rx, erx)
}

/// A TCP relay on loopback whose connections the test can reset (RST, via
/// SO_LINGER 0) while both endpoints stay alive.
#[derive(Clone)]
pub(super) struct Relay {
    target: Arc<Mutex<SocketAddr>>,
    kill: Arc<tokio::sync::Notify>,
}

impl Relay {
    pub(super) async fn start(target: SocketAddr) -> (SocketAddr, Relay) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let relay = Relay {
            target: Arc::new(Mutex::new(target)),
            kill: Arc::default(),
        };
        let r = relay.clone();
        tokio::spawn(async move {
            loop {
                let Ok((down, _)) = listener.accept().await else {
                    return;
                };
                let target = *r.target.lock().unwrap();
                let Ok(up) = TcpStream::connect(target).await else {
                    continue;
                };
                let kill = Arc::clone(&r.kill);
                tokio::spawn(async move {
                    let (mut down, mut up) = (down, up);
                    tokio::select! {
                        _ = tokio::io::copy_bidirectional(&mut down, &mut up) => {}
                        _ = kill.notified() => {
                            // Linger 0 makes close send RST; it does not block then.
                            #[allow(deprecated)]
                            let _ = down.set_linger(Some(Duration::ZERO));
                            #[allow(deprecated)]
                            let _ = up.set_linger(Some(Duration::ZERO));
                        }
                    }
                });
            }
        });
        (addr, relay)
    }

    pub(super) fn reset_all(&self) {
        self.kill.notify_waiters();
    }

    fn retarget(&self, to: SocketAddr) {
        *self.target.lock().unwrap() = to;
    }
}

pub(super) fn fast_policy() -> Policy {
    Policy {
        initial_delay: Duration::from_millis(10),
        max_delay: Duration::from_millis(100),
        ..Policy::default()
    }
}

/// A client session whose transports go through the relay.
async fn via_relay(relay_addr: SocketAddr) -> Session {
    SessionBuilder::new()
        .policy(fast_policy())
        .connect(move || TcpStream::connect(relay_addr))
        .await
        .unwrap()
}

/// Resets whatever transport is live, mid-stream, and waits until a new one
/// is up, so every reset hits a working session.
pub(super) async fn reset_and_wait(relay: &Relay, session: &Session) {
    let before = session.stats().protocol.links_established;
    relay.reset_all();
    while session.stats().protocol.links_established == before {
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
}

#[tokio::test]
async fn bytes_survive_repeated_resets_exactly_once() {
    let (srv, _acc, mut got, _errs) = server(Config::default()).await;
    let (relay_addr, relay) = Relay::start(srv).await;
    let mut session = via_relay(relay_addr).await;
    let data = pattern(3 << 20);
    for (i, chunk) in data.chunks(64 << 10).enumerate() {
        session.write_all(chunk).await.unwrap();
        if i % 12 == 11 {
            reset_and_wait(&relay, &session).await;
        }
    }
    session.shutdown().await.unwrap();
    let mut echo = Vec::new();
    session.read_to_end(&mut echo).await.unwrap();
    let received = got.recv().await.unwrap();
    assert_eq!(received.len(), data.len());
    assert!(received == data, "server must read the exact bytes");
    assert_eq!(echo, (data.len() as u64).to_be_bytes());
    let stats = session.stats().protocol;
    assert_eq!(stats.resumes, 4, "{stats:?}");
    assert_eq!(stats.links_established, 5);
}

#[tokio::test]
async fn forged_resume_token_is_rejected_and_real_session_is_undisturbed() {
    let (srv, acceptor, mut got, mut errs) = server(Config::default()).await;
    let mut session = SessionBuilder::new()
        .connect(move || TcpStream::connect(srv))
        .await
        .unwrap();
    session.write_all(b"before ").await.unwrap();
    let id = session.id().unwrap();

    // An attacker who knows the session id but not the token.
    let mut evil = TcpStream::connect(srv).await.unwrap();
    let mut dec = Decoder::new(1024);
    let mut buf = [0u8; 256];
    let n = evil.read(&mut buf).await.unwrap();
    dec.feed(&buf[..n]);
    assert!(matches!(
        dec.next_frame().unwrap(),
        Some(Frame::ServerHello { .. })
    ));
    let mut out = Vec::new();
    Frame::Resume {
        version: PROTOCOL_VERSION,
        session_id: id,
        recv_offset: 0,
        proof: [0xAB; 32],
    }
    .encode(&mut out);
    evil.write_all(&out).await.unwrap();
    let mut reply = Vec::new();
    evil.read_to_end(&mut reply).await.unwrap();
    let mut dec = Decoder::new(1024);
    dec.feed(&reply);
    assert_eq!(
        dec.next_frame().unwrap(),
        Some(Frame::Reject {
            reason: RejectReason::BadProof
        })
    );
    assert!(matches!(errs.recv().await, Some(AcceptError::BadProof(x)) if x == id));

    session.write_all(b"after").await.unwrap();
    session.shutdown().await.unwrap();
    assert_eq!(got.recv().await.unwrap(), b"before after");
    assert_eq!(session.stats().protocol.resumes, 0);
    drop(session);
    drop(acceptor);
}

#[tokio::test]
async fn oversized_first_frame_is_refused_without_allocation() {
    let (srv, _acc, _got, mut errs) = server(Config::default()).await;
    let mut raw = TcpStream::connect(srv).await.unwrap();
    let mut buf = [0u8; 64];
    let _ = raw.read(&mut buf).await.unwrap();
    // Header announcing a 1 GiB NewSession frame.
    raw.write_all(&[0x02, 0x40, 0, 0, 0]).await.unwrap();
    let err = errs.recv().await.unwrap();
    assert!(
        err.to_string().contains("exceeds the limit"),
        "unexpected error: {err}"
    );
    let mut rest = Vec::new();
    let _ = raw.read_to_end(&mut rest).await;
}

#[tokio::test]
async fn resume_at_a_server_that_never_issued_the_session_fails_typed() {
    let (srv_a, _acc_a, _got_a, _e_a) = server(Config::default()).await;
    let (srv_b, _acc_b, _got_b, mut errs_b) = server(Config::default()).await;
    let (relay_addr, relay) = Relay::start(srv_a).await;
    let mut session = via_relay(relay_addr).await;
    session.write_all(b"hello").await.unwrap();
    // The path now leads to another server (a restart, a failover without
    // shared state), and the current transport is reset.
    relay.retarget(srv_b);
    relay.reset_all();
    let mut b = [0u8; 1];
    let err = tokio::time::timeout(Duration::from_secs(5), session.read(&mut b))
        .await
        .expect("rejection arrives")
        .unwrap_err();
    assert_eq!(
        session_error(&err).map(SessionError::kind),
        Some(&SessionErrorKind::Rejected(RejectReason::UnknownSession)),
        "got {err:?}"
    );
    assert!(matches!(
        errs_b.recv().await,
        Some(AcceptError::UnknownSession(_))
    ));
    // Sticky: every later call fails the same way.
    let again = session.write_all(b"more").await.unwrap_err();
    assert_eq!(
        session_error(&again).map(SessionError::kind),
        Some(&SessionErrorKind::Rejected(RejectReason::UnknownSession))
    );
}

/// A client end speaking the protocol by hand to `acceptor` over an
/// in-memory pipe of `capacity` bytes: the server's challenge is read; the
/// acceptor's result comes from the returned task.
async fn challenged(
    acceptor: &Acceptor,
    capacity: usize,
) -> (
    tokio::io::DuplexStream,
    tokio::task::JoinHandle<Result<Accepted, AcceptError>>,
) {
    let (mut client_end, server_end) = tokio::io::duplex(capacity);
    let acc = acceptor.clone();
    let accepted = tokio::spawn(async move { acc.accept(server_end).await });
    let mut dec = Decoder::new(1024);
    let mut buf = [0u8; 256];
    while dec.next_frame().unwrap().is_none() {
        let n = client_end.read(&mut buf).await.unwrap();
        dec.feed(&buf[..n]);
    }
    (client_end, accepted)
}

#[tokio::test]
async fn server_session_expires_when_its_client_never_comes_back() {
    let acceptor = Acceptor::new(Config {
        idle_expiry: Duration::from_millis(200),
        ..Config::default()
    })
    .unwrap();
    // Speak the protocol by hand: read the challenge, ask for a new session.
    let (mut client_end, accepted) = challenged(&acceptor, 4096).await;
    client_end
        .write_all(&super::new_session_request())
        .await
        .unwrap();
    let Ok(Accepted::New(mut session)) = accepted.await.unwrap() else {
        panic!("expected a new session");
    };
    assert_eq!(acceptor.session_count(), 1);
    drop(client_end); // the client vanishes and never resumes
    let mut b = [0u8; 1];
    let err = tokio::time::timeout(Duration::from_secs(5), session.read(&mut b))
        .await
        .expect("expiry is reported")
        .unwrap_err();
    assert_eq!(
        session_error(&err).map(SessionError::kind),
        Some(&SessionErrorKind::Expired(Duration::from_millis(200)))
    );
    assert_eq!(
        acceptor.session_count(),
        0,
        "expired sessions leave the table"
    );
}

/// Issue 10, acceptance 2 and 7, through the real driver: a client sends
/// its whole window as 1-byte frames to a server application that never
/// reads, then vanishes without closing (its socket stays open, silent).
/// The server holds exactly the window (bytes left past the handshake
/// included) and notices the silence within `dead_after`.
#[tokio::test(start_paused = true)]
async fn a_server_that_does_not_read_still_detects_a_vanished_client() {
    let config = Config {
        receive_buffer: INITIAL_WINDOW,
        keepalive_interval: Duration::from_millis(100),
        dead_after: Duration::from_millis(400),
        ..Config::default()
    };
    let acceptor = Acceptor::new(config).unwrap();
    let (mut client_end, accepted) = challenged(&acceptor, 2 << 20).await;
    let mut wire = super::new_session_request();
    for offset in 0..INITIAL_WINDOW as u64 {
        Frame::Data {
            offset,
            payload: bytes::Bytes::from_static(b"x"),
        }
        .encode(&mut wire);
    }
    client_end.write_all(&wire).await.unwrap();
    let Ok(Accepted::New(session)) = accepted.await.unwrap() else {
        panic!("expected a new session");
    };
    while session.delivery().received < INITIAL_WINDOW as u64 {
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    assert_eq!(session.stats().protocol.links_failed, 0);
    // The client end is silent from here: it vanished.
    let last_heard = tokio::time::Instant::now();
    while session.stats().protocol.links_failed == 0 {
        tokio::time::sleep(Duration::from_millis(5)).await;
        assert!(
            last_heard.elapsed() < Duration::from_secs(5),
            "never noticed"
        );
    }
    let took = last_heard.elapsed();
    assert!(
        took <= Duration::from_millis(405),
        "noticed after {took:?}, dead_after is 400 ms"
    );
    assert_eq!(session.delivery().received, INITIAL_WINDOW as u64);
    drop(client_end);
}

#[tokio::test]
async fn zero_copy_writes_mix_with_copied_ones_across_resets() {
    let (srv, _acc, mut got, _errs) = server(Config::default()).await;
    let (relay_addr, relay) = Relay::start(srv).await;
    let mut session = via_relay(relay_addr).await;
    let data = pattern(2 << 20);
    let mut sent = 0;
    for (i, piece) in data.chunks(50_000).enumerate() {
        if i % 2 == 0 {
            session
                .write_bytes(bytes::Bytes::copy_from_slice(piece))
                .await
                .unwrap();
        } else {
            session.write_all(piece).await.unwrap();
        }
        sent += piece.len();
        if i % 10 == 9 {
            reset_and_wait(&relay, &session).await;
        }
    }
    assert_eq!(sent, data.len());
    session.shutdown().await.unwrap();
    let received = got.recv().await.unwrap();
    assert!(received == data, "exact bytes, in order");
    assert!(session.stats().protocol.resumes >= 4);
}

mod with_monitor {
    use super::*;
    use crate::gate::GateConfig;
    use crate::monitor::{
        Address, Change, Debounce, DefaultRoute, Family, Injector, Interface, Monitor, Snapshot,
    };
    use std::net::{IpAddr, Ipv4Addr};

    const ETH0: u32 = 2;

    fn route_via(last: u8) -> DefaultRoute {
        DefaultRoute {
            family: Family::V4,
            gateway: Some(IpAddr::V4(Ipv4Addr::new(198, 18, 1, last))),
            interface: ETH0,
            metric: 0,
        }
    }

    fn online() -> Snapshot {
        let mut s = Snapshot::default();
        s.apply(&Change::Link(Interface {
            index: ETH0,
            name: "eth0".into(),
            up: true,
            carrier: true,
        }));
        s.apply(&Change::AddressAdded(Address {
            interface: ETH0,
            ip: IpAddr::V4(Ipv4Addr::new(198, 18, 1, 2)),
            prefix_len: 24,
        }));
        s.apply(&Change::DefaultRouteAdded(route_via(1)));
        s
    }

    async fn monitored_session(addr: SocketAddr) -> (Session, Injector) {
        let (monitor, injector) = Monitor::injected(
            online(),
            Debounce {
                quiet: Duration::from_millis(30),
                max_delay: Duration::from_millis(200),
            },
        );
        let session = SessionBuilder::new()
            .policy(fast_policy())
            .monitor(monitor)
            .gate(GateConfig {
                probe_interval: Duration::from_millis(20),
                max_probe_interval: Duration::from_millis(100),
                probe_timeout: Duration::from_millis(500),
                deadline: Duration::from_secs(10),
            })
            .connect(move || TcpStream::connect(addr))
            .await
            .unwrap();
        (session, injector)
    }

    async fn wait_links(session: &Session, n: u32) {
        let t = tokio::time::Instant::now();
        while session.stats().protocol.links_established < n {
            assert!(t.elapsed() < Duration::from_secs(5), "no new transport");
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }

    #[tokio::test]
    async fn a_path_change_rebinds_a_healthy_transport_and_loses_nothing() {
        let (addr, _acceptor, mut got, _) = server(Config::default()).await;
        let (mut session, injector) = monitored_session(addr).await;
        let data = pattern(1 << 20);
        session.write_all(&data[..400_000]).await.unwrap();
        // The gateway moves: the old transport never failed, yet the
        // session must leave it for the new path.
        injector.send(Change::DefaultRouteReplaced(route_via(254)));
        wait_links(&session, 2).await;
        session.write_all(&data[400_000..]).await.unwrap();
        session.shutdown().await.unwrap();
        assert_eq!(got.recv().await.unwrap(), data);
        assert_eq!(session.stats().connect_attempts, 2);
    }

    #[tokio::test]
    async fn the_gate_makes_no_attempt_while_there_is_no_route() {
        let (addr, _acceptor, mut got, _) = server(Config::default()).await;
        let (mut session, injector) = monitored_session(addr).await;
        let data = pattern(300_000);
        session.write_all(&data[..100_000]).await.unwrap();
        injector.send(Change::DefaultRouteRemoved(route_via(1)));
        // The change is decided, the transport dropped, and then nothing:
        // no route, no attempt, however long it lasts.
        tokio::time::sleep(Duration::from_millis(600)).await;
        assert_eq!(session.stats().connect_attempts, 1);
        session.write_all(&data[100_000..200_000]).await.unwrap();
        injector.send(Change::DefaultRouteAdded(route_via(1)));
        wait_links(&session, 2).await;
        assert_eq!(session.stats().connect_attempts, 2, "one probe, at once");
        session.write_all(&data[200_000..]).await.unwrap();
        session.shutdown().await.unwrap();
        assert_eq!(got.recv().await.unwrap(), data);
    }

    #[tokio::test]
    async fn a_flap_that_ends_where_it_began_does_not_churn() {
        let (addr, _acceptor, mut got, _) = server(Config::default()).await;
        let (mut session, injector) = monitored_session(addr).await;
        let data = pattern(200_000);
        session.write_all(&data[..100_000]).await.unwrap();
        for carrier in [false, true, false, true, false, true] {
            injector.send(Change::Link(Interface {
                index: ETH0,
                name: "eth0".into(),
                up: true,
                carrier,
            }));
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
        session.write_all(&data[100_000..]).await.unwrap();
        session.shutdown().await.unwrap();
        assert_eq!(got.recv().await.unwrap(), data);
        assert_eq!(session.stats().connect_attempts, 1);
        assert_eq!(session.stats().protocol.links_established, 1);
    }
}
