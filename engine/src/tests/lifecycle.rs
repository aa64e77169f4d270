//! Lifecycle of a client session: cancel, abort, events, delivery, on
//! paused tokio time with in-memory transports (deterministic; no wall
//! clock).

use super::memory::Server;
use crate::reconnect::{AttemptFailure, GiveUpReason, OutageCause};
use crate::session::Config;
use crate::session::{
    session_error, with_hints, SessionBuilder, SessionErrorKind, SessionEvent, TransportHint,
};
use crate::Policy;
use std::io;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

fn fast_policy() -> Policy {
    Policy {
        initial_delay: Duration::from_millis(50),
        max_delay: Duration::from_millis(400),
        ..Policy::default()
    }
}

#[tokio::test(start_paused = true)]
async fn a_cancelled_connect_leaves_nothing_running() {
    let (server, mut sessions) = Server::new(Config::default());
    server.up.store(false, Ordering::SeqCst);
    let connect = SessionBuilder::new()
        .policy(fast_policy())
        .rng_seed(1)
        .connect(server.connector());
    assert!(tokio::time::timeout(Duration::from_secs(2), connect)
        .await
        .is_err());
    let made = server.connects();
    assert!(made >= 3, "it was trying ({made} connects)");
    // The server comes up; a leaked driver would connect now.
    server.up.store(true, Ordering::SeqCst);
    tokio::time::sleep(Duration::from_secs(600)).await;
    assert_eq!(server.connects(), made, "no connect after the drop");
    assert!(sessions.try_recv().is_err(), "no session was created");
    assert_eq!(server.acceptor.session_count(), 0);
}

#[tokio::test(start_paused = true)]
async fn abort_ends_at_once_tells_the_peer_and_stops_reconnecting() {
    let (server, mut sessions) = Server::new(Config::default());
    let mut client = SessionBuilder::new()
        .policy(fast_policy())
        .rng_seed(2)
        .connect(server.connector())
        .await
        .unwrap();
    let mut served = sessions.recv().await.unwrap();
    client.write_all(b"hello").await.unwrap();
    let mut got = [0u8; 5];
    served.read_exact(&mut got).await.unwrap();
    assert_eq!(&got, b"hello");
    // Wait for the acknowledgement, so what was delivered is known.
    while client.delivery().acknowledged < 5 {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    client.abort();
    let err = client.write_all(b"more").await.unwrap_err();
    let e = session_error(&err).expect("a session error");
    assert_eq!(e.kind(), &SessionErrorKind::Aborted);
    assert_eq!((e.delivery().written, e.delivery().acknowledged), (5, 5));
    // The peer hears of it.
    let mut b = [0u8; 1];
    let err = tokio::time::timeout(Duration::from_secs(5), served.read(&mut b))
        .await
        .expect("the abort reaches the server")
        .unwrap_err();
    assert_eq!(
        session_error(&err).map(|e| e.kind()),
        Some(&SessionErrorKind::PeerAborted)
    );
    let made = server.connects();
    drop(client);
    tokio::time::sleep(Duration::from_secs(600)).await;
    assert_eq!(server.connects(), made);
}

#[tokio::test(start_paused = true)]
async fn abort_during_an_outage_stops_the_reconnect_loop() {
    let (server, mut sessions) = Server::new(Config::default());
    let mut client = SessionBuilder::new()
        .policy(fast_policy())
        .rng_seed(3)
        .connect(server.connector())
        .await
        .unwrap();
    let _served = sessions.recv().await.unwrap();
    // The server goes away and the transport breaks: the client reconnects.
    server.up.store(false, Ordering::SeqCst);
    server.reset();
    while server.connects() < 4 {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    client.abort();
    drop(client);
    let made = server.connects();
    tokio::time::sleep(Duration::from_secs(600)).await;
    assert_eq!(server.connects(), made, "no attempt after abort and drop");
}

#[tokio::test(start_paused = true)]
async fn events_tell_the_story_of_a_reset_and_counters_count_it() {
    let (server, mut sessions) = Server::new(Config::default());
    let events = Arc::new(Mutex::new(Vec::new()));
    let log = Arc::clone(&events);
    let mut client = SessionBuilder::new()
        .policy(fast_policy())
        .rng_seed(4)
        .on_event(move |e| log.lock().unwrap().push(e.clone()))
        .connect(server.connector())
        .await
        .unwrap();
    let mut served = sessions.recv().await.unwrap();
    client.write_all(b"ab").await.unwrap();
    server.reset();
    client.write_all(b"cd").await.unwrap();
    client.shutdown().await.unwrap();
    let mut all = Vec::new();
    served.read_to_end(&mut all).await.unwrap();
    assert_eq!(all, b"abcd");
    let stats = client.stats();
    assert_eq!(stats.protocol.links_failed, 1);
    assert_eq!(stats.protocol.resumes, 1);
    assert_eq!(stats.connect_attempts, 2);
    let events = events.lock().unwrap().clone();
    assert_eq!(
        events[0],
        SessionEvent::Reconnecting {
            why: OutageCause::Initial
        }
    );
    assert_eq!(events[1], SessionEvent::Connected { attempts: 1 });
    assert!(
        matches!(
            &events[2],
            SessionEvent::Reconnecting {
                why: OutageCause::TransportLost(_)
            }
        ),
        "{events:?}"
    );
    assert!(
        matches!(events[3], SessionEvent::Resumed { attempts: 1, .. }),
        "{events:?}"
    );
    assert_eq!(events.len(), 4, "{events:?}");
}

#[tokio::test(start_paused = true)]
async fn giving_up_says_which_limit_and_why_the_attempts_failed() {
    let (server, _sessions) = Server::new(Config::default());
    server.up.store(false, Ordering::SeqCst);
    let mut policy = fast_policy();
    policy.max_attempts = Some(5);
    let err = SessionBuilder::new()
        .policy(policy)
        .rng_seed(5)
        .connect(server.connector())
        .await
        .unwrap_err();
    let SessionErrorKind::ReconnectExhausted(g) = err.kind() else {
        panic!("{err}");
    };
    assert_eq!((g.reason, g.attempts), (GiveUpReason::Attempts, 5));
    assert!(matches!(
        g.last_causes.last(),
        Some(AttemptFailure::Connect {
            kind: io::ErrorKind::ConnectionRefused,
            ..
        })
    ));
    assert_eq!(server.connects(), 5);
}

/// Issue 10, server point 4: the client receives the server's whole reply
/// and its last acknowledgement is lost with the transport. The client is
/// done but has not heard the server's `Close`, so it resumes once more to
/// deliver that acknowledgement: the server's `shutdown` succeeds instead
/// of failing with `Expired` a minute later.
#[tokio::test(start_paused = true)]
async fn a_lost_final_acknowledgement_is_delivered_by_a_resume_not_reported_as_a_failure() {
    let config = Config {
        keepalive_interval: Duration::from_millis(100),
        dead_after: Duration::from_millis(400),
        ..Config::default()
    };
    let (server, mut sessions) = Server::new(config.clone());
    let mut client = SessionBuilder::new()
        .config(config)
        .policy(fast_policy())
        .rng_seed(5)
        .connect(server.connector())
        .await
        .unwrap();
    let mut served = sessions.recv().await.unwrap();
    client.write_all(b"request").await.unwrap();
    client.shutdown().await.unwrap();
    let mut request = Vec::new();
    served.read_to_end(&mut request).await.unwrap();
    assert_eq!(request, b"request");
    // From here the client's frames on this transport vanish: its
    // acknowledgement of the reply's end among them.
    server.mute_client();
    let replying = tokio::spawn(async move {
        served.write_all(b"reply").await?;
        served.shutdown().await?;
        Ok::<_, io::Error>(served)
    });
    let mut reply = Vec::new();
    client.read_to_end(&mut reply).await.unwrap();
    assert_eq!(reply, b"reply");
    let served = tokio::time::timeout(Duration::from_secs(10), replying)
        .await
        .expect("the server's shutdown completes, long before idle expiry")
        .unwrap()
        .expect("and succeeds");
    assert_eq!(served.stats().protocol.resumes, 1, "through one resume");
    assert_eq!(served.error(), None);
    // Both ends close for good: no further transport.
    tokio::time::sleep(Duration::from_secs(30)).await;
    assert_eq!(server.connects(), 2);
    assert_eq!(client.error(), None);
    assert_eq!(server.acceptor.session_count(), 0, "the session is gone");
}

/// Issue 10, server point 1: while its client is away, a server session
/// takes at most `Limits::max_bytes_while_away` of unacknowledged writes;
/// the rest waits and goes out when the client resumes, exactly.
#[tokio::test(start_paused = true)]
async fn a_server_session_holds_at_most_the_away_cap_while_its_client_is_gone() {
    let limits = crate::session::Limits {
        max_bytes_while_away: 64 << 10,
        ..crate::session::Limits::default()
    };
    let acceptor = crate::session::Acceptor::with_limits(Config::default(), limits).unwrap();
    let (server, mut sessions) = Server::with_acceptor(acceptor);
    let mut client = SessionBuilder::new()
        .policy(fast_policy())
        .rng_seed(6)
        .connect(server.connector())
        .await
        .unwrap();
    let mut served = sessions.recv().await.unwrap();
    client.write_all(b"hi").await.unwrap();
    let mut hi = [0u8; 2];
    served.read_exact(&mut hi).await.unwrap();
    // The client goes away and cannot come back for now.
    server.up.store(false, Ordering::SeqCst);
    server.reset();
    while served.stats().protocol.links_failed == 0 {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let reply: Vec<u8> = (0..1 << 20).map(|i| (i % 251) as u8).collect();
    let waited = tokio::time::timeout(Duration::from_secs(5), served.write_all(&reply)).await;
    assert!(waited.is_err(), "the write waits for the client");
    let taken = served.delivery().written;
    assert_eq!(taken, 64 << 10, "exactly the away cap was taken");
    // The client comes back: the rest flows, exactly.
    server.up.store(true, Ordering::SeqCst);
    tokio::time::timeout(
        Duration::from_secs(30),
        served.write_all(&reply[taken as usize..]),
    )
    .await
    .expect("the write completes once the client is back")
    .unwrap();
    let mut got = vec![0u8; reply.len()];
    client.read_exact(&mut got).await.unwrap();
    assert!(got == reply, "the reply arrives exactly");
    assert!(served.stats().protocol.resumes >= 1);
}

/// Keepalives every 250 ms, a dead or stalled transport after 1 s.
fn quick_config() -> Config {
    Config {
        keepalive_interval: Duration::from_millis(250),
        dead_after: Duration::from_secs(1),
        ..Config::default()
    }
}

/// Connects through `server` with a hinted connector and carries 1000
/// bytes (a round trip measured); returns the client, the served session,
/// the hints of every connect and the client's events.
async fn hinted_pair(
    server: &Server,
    sessions: &mut tokio::sync::mpsc::Receiver<crate::session::Session>,
) -> (
    crate::session::Session,
    crate::session::Session,
    Arc<Mutex<Vec<TransportHint>>>,
    Arc<Mutex<Vec<SessionEvent>>>,
) {
    let hints = Arc::new(Mutex::new(Vec::new()));
    let events = Arc::new(Mutex::new(Vec::new()));
    let (h, e) = (Arc::clone(&hints), Arc::clone(&events));
    let mut connect = server.connector();
    let mut client = SessionBuilder::new()
        .config(quick_config())
        .policy(fast_policy())
        .rng_seed(7)
        .on_event(move |ev| e.lock().unwrap().push(ev.clone()))
        .connect(with_hints(move |hint| {
            h.lock().unwrap().push(hint);
            connect()
        }))
        .await
        .unwrap();
    let mut served = sessions.recv().await.unwrap();
    client.write_all(&[1; 1000]).await.unwrap();
    let mut got = vec![0u8; 1000];
    served.read_exact(&mut got).await.unwrap();
    (client, served, hints, events)
}

#[tokio::test(start_paused = true)]
async fn data_lost_while_the_peer_is_heard_clamps_the_next_transports_segments() {
    let (server, mut sessions) = Server::new(quick_config());
    let (mut client, mut served, hints, events) = hinted_pair(&server, &mut sessions).await;
    // The client's data vanishes from here on, the server's keepalives
    // still arrive: an MTU black hole as the session sees it.
    server.mute_client();
    client.write_all(&[2; 5000]).await.unwrap();
    let mut got = vec![0u8; 5000];
    tokio::time::timeout(Duration::from_secs(10), served.read_exact(&mut got))
        .await
        .expect("the data arrives on the next transport")
        .unwrap();
    assert_eq!(got, vec![2; 5000]);
    assert_eq!(
        *hints.lock().unwrap(),
        [TransportHint::default(), TransportHint::clamped(1220)]
    );
    // Told before the reconnect, the one that resumes on the clamped
    // transport.
    let events = events.lock().unwrap();
    assert!(
        matches!(
            events.as_slice(),
            [
                SessionEvent::Reconnecting {
                    why: OutageCause::Initial
                },
                SessionEvent::Connected { attempts: 1 },
                SessionEvent::SegmentSize {
                    max_segment: Some(1220)
                },
                SessionEvent::Reconnecting {
                    why: OutageCause::TransportLost(_)
                },
                SessionEvent::Resumed { attempts: 1, .. },
            ]
        ),
        "{events:?}"
    );
}

#[tokio::test(start_paused = true)]
async fn a_transport_that_breaks_early_leaves_the_segment_size_alone() {
    let (server, mut sessions) = Server::new(quick_config());
    let (mut client, mut served, hints, events) = hinted_pair(&server, &mut sessions).await;
    // Data that vanishes while the server's keepalives still arrive, then
    // a reset before the data waited half the stall timeout (0.5 s): a
    // transport that broke, no sign of the path's MTU.
    server.mute_client();
    client.write_all(&[2; 5000]).await.unwrap();
    tokio::time::sleep(Duration::from_millis(400)).await;
    server.reset();
    let mut got = vec![0u8; 5000];
    tokio::time::timeout(Duration::from_secs(10), served.read_exact(&mut got))
        .await
        .expect("the data arrives on the next transport")
        .unwrap();
    assert_eq!(
        *hints.lock().unwrap(),
        [TransportHint::default(), TransportHint::default()]
    );
    assert!(!events
        .lock()
        .unwrap()
        .iter()
        .any(|e| matches!(e, SessionEvent::SegmentSize { .. })));
}
