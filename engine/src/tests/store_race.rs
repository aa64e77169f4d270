//! Server instances sharing one Redis store (a real `redis-server`): two
//! instances racing to resume one session — exactly one wins, the other
//! refuses with a typed error and tells the client `Busy` — and the
//! instance that still served the session is fenced off.

#[path = "../../tests/support/redis.rs"]
mod redis_server;

use crate::session::auth::{Credentials, KeyPair, Prover};
use crate::session::frame::{Decoder, Frame, RejectReason, SessionId, PROTOCOL_VERSION};
use crate::session::{AcceptError, Accepted, Acceptor, Config, Limits, SessionErrorKind};
use crate::store::{RedisStore, StoreError, StoreKey, StoreLimits};
use redis_server::RedisServer;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt, DuplexStream};

async fn next_frame(s: &mut DuplexStream, dec: &mut Decoder) -> Frame {
    let mut buf = [0u8; 256];
    loop {
        if let Ok(Some(f)) = dec.next_frame() {
            return f;
        }
        let n = s.read(&mut buf).await.unwrap();
        assert!(n > 0, "closed");
        dec.feed(&buf[..n]);
    }
}

async fn instance(redis: &RedisServer, key: &StoreKey) -> Acceptor {
    let store = RedisStore::connect(&redis.url(), StoreLimits::default())
        .await
        .unwrap();
    Acceptor::with_store(Config::default(), Limits::default(), store, key.clone()).unwrap()
}

/// A new session on `acceptor`, opened by hand: the server's session and
/// the client's credentials.
async fn open(acceptor: &Acceptor) -> (crate::session::Session, Credentials) {
    let (mut c, s) = tokio::io::duplex(4096);
    let server = {
        let acceptor = acceptor.clone();
        tokio::spawn(async move { acceptor.accept(s).await })
    };
    let mut dec = Decoder::new(1024);
    let Frame::ServerHello { .. } = next_frame(&mut c, &mut dec).await else {
        panic!("no ServerHello");
    };
    let mine = KeyPair::from_random([7; 32]);
    let mut out = Vec::new();
    Frame::NewSession {
        version: PROTOCOL_VERSION,
        key: mine.public(),
    }
    .encode(&mut out);
    c.write_all(&out).await.unwrap();
    let Frame::Welcome { session_id, key } = next_frame(&mut c, &mut dec).await else {
        panic!("no Welcome");
    };
    let creds = mine.agree(session_id, &key, &mine.public(), &key).unwrap();
    let Ok(Accepted::New(session)) = server.await.unwrap() else {
        panic!("not a new session");
    };
    // The client's transport stays open (dropped with `c` below: the
    // session waits for a resume).
    drop(c);
    (session, creds)
}

/// A client transport to `acceptor` that asks to resume `creds`' session,
/// its request written once both racers are ready.
struct Resume {
    client: DuplexStream,
    dec: Decoder,
    request: Vec<u8>,
}

type Serving = tokio::task::JoinHandle<Result<Accepted, AcceptError>>;

async fn prepare(acceptor: &Acceptor, creds: &Credentials) -> (Resume, Serving) {
    let (mut client, s) = tokio::io::duplex(1 << 16);
    let server = {
        let acceptor = acceptor.clone();
        tokio::spawn(async move { acceptor.accept(s).await })
    };
    let mut dec = Decoder::new(1 << 16);
    let Frame::ServerHello { nonce, .. } = next_frame(&mut client, &mut dec).await else {
        panic!("no ServerHello");
    };
    let mut request = Vec::new();
    Frame::Resume {
        version: PROTOCOL_VERSION,
        session_id: creds.id,
        recv_offset: 0,
        proof: creds.proof(Prover::Client, &nonce, 0),
    }
    .encode(&mut request);
    (
        Resume {
            client,
            dec,
            request,
        },
        server,
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs redis-server: run with --include-ignored"]
async fn two_instances_racing_to_resume_one_session_exactly_one_wins_and_the_old_one_is_fenced() {
    let redis = RedisServer::start();
    let key = StoreKey::from_bytes([0x11; 32]);
    let a = instance(&redis, &key).await;
    let b = instance(&redis, &key).await;
    let c = instance(&redis, &key).await;
    let mut kept = Vec::new();
    for round in 0..20 {
        let (mut on_a, creds) = open(&a).await;
        let (mut rb, sb) = prepare(&b, &creds).await;
        let (mut rc, sc) = prepare(&c, &creds).await;
        // Both requests at once.
        let (wb, wc) = tokio::join!(
            rb.client.write_all(&rb.request),
            rc.client.write_all(&rc.request)
        );
        wb.unwrap();
        wc.unwrap();
        let results = [sb.await.unwrap(), sc.await.unwrap()];
        let mut wins = 0;
        for (r, racer) in results.into_iter().zip([&mut rb, &mut rc]) {
            match r {
                Ok(Accepted::Restored(session, restored)) => {
                    wins += 1;
                    assert_eq!(restored.id, creds.id);
                    assert_eq!((restored.incoming, restored.outgoing), (0, 0));
                    let Frame::Resumed { recv_offset, .. } =
                        next_frame(&mut racer.client, &mut racer.dec).await
                    else {
                        panic!("round {round}: the winner did not answer Resumed");
                    };
                    assert_eq!(recv_offset, 0);
                    kept.push((
                        session,
                        std::mem::replace(&mut racer.client, tokio::io::duplex(1).0),
                    ));
                }
                Err(AcceptError::Store(StoreError::Claimed(id))) => {
                    assert_eq!(id, creds.id);
                    let frame = next_frame(&mut racer.client, &mut racer.dec).await;
                    assert_eq!(
                        frame,
                        Frame::Reject {
                            reason: RejectReason::Busy
                        },
                        "round {round}: the loser tells the client to retry"
                    );
                }
                other => panic!("round {round}: {other:?}"),
            }
        }
        assert_eq!(wins, 1, "round {round}: exactly one instance wins");

        // Instance A still holds its copy: its next checkpoint is refused
        // and that copy ends, typed.
        on_a.write_all(b"late").await.unwrap();
        let mut sink = [0u8; 8];
        let e = tokio::time::timeout(Duration::from_secs(10), on_a.read(&mut sink))
            .await
            .expect("fenced in time")
            .expect_err("the fenced copy ends");
        let e = crate::session::session_error(&e)
            .expect("a session error")
            .clone();
        assert_eq!(
            *e.kind(),
            SessionErrorKind::Store(StoreError::Fenced(creds.id)),
            "round {round}"
        );
    }
    // The winners' sessions are intact in the store.
    assert_eq!(kept.len(), 20);
    let probe = RedisStore::connect(&redis.url(), StoreLimits::default())
        .await
        .unwrap();
    for (session, _) in &kept {
        let id = session.id().unwrap();
        let stored = crate::store::SessionStore::load(&probe, id, crate::store::wall_ms())
            .await
            .unwrap()
            .expect("the winner's record");
        assert_eq!(stored.epoch, 2, "claimed once, never by the fenced copy");
        let _: &SessionId = &stored.id;
    }
}
