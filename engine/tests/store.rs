//! Every session store keeps the same rules: one suite, run against the
//! memory store, the embedded store (a redb file) and the Redis store (a
//! real `redis-server`): records round-trip, checkpoints append and trim,
//! claims fence, and the bounds (size cap, expiry) hold under a flood.

#[path = "support/redis.rs"]
mod redis_server;

use bytes::Bytes;
use netmend::session::SessionId;
use netmend::store::{
    Checkpoint, EmbeddedStore, MemoryStore, RedisStore, SealedToken, SessionStore, StoreError,
    StoreLimits, StoredSession,
};
use redis_server::RedisServer;
use std::time::Duration;

/// A fixed wall clock for the stores (ms since the Unix epoch): the tests
/// move it by hand.
const T0: u64 = 1_800_000_000_000;

fn limits(max_sessions: usize, ttl: Duration) -> StoreLimits {
    let mut l = StoreLimits::default();
    l.max_sessions = max_sessions;
    l.ttl = ttl;
    l.claim_guard = Duration::from_millis(500);
    l
}

fn session(n: u8) -> StoredSession {
    StoredSession::new(SessionId([n; 16]), SealedToken([n; 44]))
}

fn checkpoint(
    s: &StoredSession,
    epoch: u64,
    base: u64,
    append: Option<(u64, &[u8])>,
) -> Checkpoint {
    let end = append.map_or(s.send_end, |(o, b)| o + b.len() as u64);
    Checkpoint {
        id: s.id,
        epoch,
        recv: 77,
        recv_fin: true,
        send_base: base,
        send_end: end,
        send_fin: false,
        append: append.map(|(o, b)| (o, Bytes::copy_from_slice(b))),
    }
}

/// The rules every store keeps.
async fn rules(store: &dyn SessionStore) {
    // A record round-trips, its outgoing bytes with it.
    let mut s = session(1);
    s.send_base = 10;
    s.send_end = 15;
    s.data = b"hello".to_vec();
    store.create(&s, T0).await.unwrap();
    assert_eq!(store.load(s.id, T0).await.unwrap(), Some(s.clone()));
    assert_eq!(store.load(SessionId([9; 16]), T0).await.unwrap(), None);

    // Checkpoints append outgoing bytes and drop what was acknowledged.
    let cp = checkpoint(&s, 1, 12, Some((15, b" world")));
    store.checkpoint(&cp, T0).await.unwrap();
    let got = store.load(s.id, T0).await.unwrap().unwrap();
    assert_eq!((got.send_base, got.send_end), (12, 21));
    assert_eq!(got.data, b"llo world");
    assert_eq!((got.recv, got.recv_fin), (77, true));
    let cp = checkpoint(&got, 1, 16, Some((21, b"!")));
    store.checkpoint(&cp, T0).await.unwrap();
    assert_eq!(store.load(s.id, T0).await.unwrap().unwrap().data, b"world!");
    let cp = checkpoint(&got, 1, 22, None);
    let mut all_acked = cp.clone();
    all_acked.send_end = 22;
    store.checkpoint(&all_acked, T0).await.unwrap();
    assert_eq!(store.load(s.id, T0).await.unwrap().unwrap().data, b"");

    // A claim moves the epoch once; the old epoch is fenced.
    assert_eq!(store.claim(s.id, 1, T0).await, Ok(2));
    assert_eq!(
        store.claim(s.id, 1, T0).await,
        Err(StoreError::Claimed(s.id))
    );
    assert_eq!(store.load(s.id, T0).await.unwrap().unwrap().epoch, 2);
    // Within the claim guard even the current epoch is refused; after it,
    // the session is taken over.
    assert_eq!(
        store.claim(s.id, 2, T0 + 999).await,
        Err(StoreError::Claimed(s.id))
    );
    assert_eq!(store.claim(s.id, 2, T0 + 1_000).await, Ok(3));
    assert_eq!(store.load(s.id, T0).await.unwrap().unwrap().epoch, 3);
    assert_eq!(
        store.checkpoint(&checkpoint(&s, 1, 22, None), T0).await,
        Err(StoreError::Fenced(s.id))
    );
    // A fenced instance never removes its successor's record.
    store.remove(s.id, 2).await.unwrap();
    assert!(store.load(s.id, T0).await.unwrap().is_some());
    store.remove(s.id, 3).await.unwrap();
    assert_eq!(store.load(s.id, T0).await.unwrap(), None);
    assert_eq!(
        store.claim(s.id, 3, T0 + 5_000).await,
        Err(StoreError::Claimed(s.id))
    );
    assert_eq!(
        store.checkpoint(&checkpoint(&s, 3, 22, None), T0).await,
        Err(StoreError::Fenced(s.id))
    );
    assert_eq!(store.count(T0).await.unwrap(), 0);
}

/// Two instances claim one session at once: exactly one wins — also when
/// the slower one read the record after the winner's claim.
async fn race(a: &dyn SessionStore, b: &dyn SessionStore) {
    for n in 0..50u8 {
        let s = session(100 + n);
        a.create(&s, T0).await.unwrap();
        let (x, y) = tokio::join!(a.claim(s.id, 1, T0), b.claim(s.id, 1, T0 + 1));
        let wins = [&x, &y].iter().filter(|r| r.is_ok()).count();
        assert_eq!(wins, 1, "round {n}: {x:?} {y:?}");
        for r in [x, y] {
            assert!(matches!(r, Ok(2) | Err(StoreError::Claimed(_))), "{r:?}");
        }
        assert_eq!(
            b.claim(s.id, 2, T0 + 2).await,
            Err(StoreError::Claimed(s.id))
        );
        a.remove(s.id, 2).await.unwrap();
    }
}

/// A flood of new sessions: the cap holds, the rest are refused `Full`;
/// once the records expire, new sessions are taken again.
async fn flood(store: &dyn SessionStore, cap: usize, ttl: Duration) {
    let mut made = 0;
    for i in 0..2_000u32 {
        let mut s = session(0);
        s.id.0[..4].copy_from_slice(&i.to_be_bytes());
        match store.create(&s, T0).await {
            Ok(()) => made += 1,
            Err(StoreError::Full(n)) => assert_eq!(n, cap),
            Err(e) => panic!("{e}"),
        }
    }
    assert_eq!(made, cap);
    assert_eq!(store.count(T0).await.unwrap(), cap);
    let later = T0 + ttl.as_millis() as u64 + 1;
    assert_eq!(store.count(later).await.unwrap(), 0);
    for i in 0..(2 * cap as u32) {
        let mut s = session(1);
        s.id.0[..4].copy_from_slice(&(10_000 + i).to_be_bytes());
        let r = store.create(&s, later).await;
        assert_eq!(r.is_ok(), (i as usize) < cap, "{r:?}");
    }
    assert_eq!(store.count(later).await.unwrap(), cap);
}

#[tokio::test]
async fn the_memory_store_keeps_the_rules() {
    let store = MemoryStore::new(StoreLimits::default()).unwrap();
    rules(&store).await;
    race(&store, &store.clone()).await;
}

#[tokio::test]
async fn the_memory_store_holds_its_bounds_under_a_flood() {
    let store = MemoryStore::new(limits(100, Duration::from_secs(5))).unwrap();
    flood(&store, 100, Duration::from_secs(5)).await;
    // An expired record is gone for a resume too.
    let later = T0 + 10_000;
    let mut s = session(1);
    s.id.0[..4].copy_from_slice(&10_000u32.to_be_bytes());
    assert_eq!(store.load(s.id, later + 5_000).await.unwrap(), None);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_embedded_store_keeps_the_rules_and_survives_reopening() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("sessions.redb");
    let store = EmbeddedStore::open(&path, StoreLimits::default()).unwrap();
    rules(&store).await;
    race(&store, &store.clone()).await;
    let mut s = session(7);
    s.data = b"kept".to_vec();
    s.send_end = 4;
    store.create(&s, T0).await.unwrap();
    drop(store);
    let reopened = EmbeddedStore::open(&path, StoreLimits::default()).unwrap();
    assert_eq!(reopened.load(s.id, T0).await.unwrap(), Some(s));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_embedded_store_holds_its_bounds_under_a_flood() {
    let dir = tempfile::tempdir().unwrap();
    let store = EmbeddedStore::open(
        dir.path().join("sessions.redb"),
        limits(100, Duration::from_secs(5)),
    )
    .unwrap();
    flood(&store, 100, Duration::from_secs(5)).await;
}

#[test]
fn a_store_refuses_limits_it_cannot_keep() {
    assert!(MemoryStore::new(limits(0, Duration::from_secs(5))).is_err());
    assert!(MemoryStore::new(limits(1, Duration::from_millis(10))).is_err());
    let mut guard_past_ttl = limits(1, Duration::from_secs(2));
    guard_past_ttl.claim_guard = Duration::from_secs(2);
    assert!(MemoryStore::new(guard_past_ttl).is_err());
    let dir = tempfile::tempdir().unwrap();
    assert!(EmbeddedStore::open(dir.path().join("s"), limits(0, Duration::from_secs(5))).is_err());
    // A file that is not a store is refused, typed.
    let junk = dir.path().join("junk");
    std::fs::write(&junk, b"not a database").unwrap();
    assert!(EmbeddedStore::open(&junk, StoreLimits::default()).is_err());
}

#[tokio::test]
#[ignore = "needs redis-server: run with --include-ignored"]
async fn the_redis_store_keeps_the_rules() {
    let redis = RedisServer::start();
    let a = RedisStore::connect(&redis.url(), StoreLimits::default())
        .await
        .unwrap();
    rules(&a).await;
    // Two instances: two connections.
    let b = RedisStore::connect(&redis.url(), StoreLimits::default())
        .await
        .unwrap();
    race(&a, &b).await;
    // Prefixes keep stores apart in one database.
    let other = a.clone().with_prefix("other");
    let s = session(3);
    a.create(&s, T0).await.unwrap();
    assert_eq!(other.load(s.id, T0).await.unwrap(), None);
}

#[tokio::test]
#[ignore = "needs redis-server: run with --include-ignored"]
async fn the_redis_store_holds_its_bounds_under_a_flood() {
    let redis = RedisServer::start();
    let ttl = Duration::from_secs(1);
    let store = RedisStore::connect(&redis.url(), limits(100, ttl))
        .await
        .unwrap();
    flood(&store, 100, ttl).await;
    // Redis expires the records themselves, on its own clock.
    let mut s = session(0);
    s.id.0[..4].copy_from_slice(&0u32.to_be_bytes());
    tokio::time::sleep(Duration::from_millis(1_200)).await;
    assert_eq!(store.load(s.id, T0).await.unwrap(), None);
}

#[tokio::test]
#[ignore = "needs redis-server: run with --include-ignored"]
async fn the_redis_store_reports_a_server_it_cannot_reach() {
    let redis = RedisServer::start();
    let url = redis.url();
    drop(redis);
    assert!(RedisStore::connect(&url, StoreLimits::default())
        .await
        .is_err());
    assert!(RedisStore::connect("not a url", StoreLimits::default())
        .await
        .is_err());
}
