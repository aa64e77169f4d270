//! The shared store: Redis, for a fleet of server instances any of which
//! may resume any session.
//!
//! Layout, per session (hex id in braces, so both keys of a session hash
//! to one slot): `PREFIX:{id}` a hash (`epoch`, `claimed`, `token`: sealed, `recv`,
//! `rfin`, `base`, `end`, `fin`),
//! `PREFIX:{id}:d` a hash of outgoing chunks (field: decimal offset), and
//! one index `PREFIX:index`, a sorted set of ids by expiry, which bounds
//! the number of records. Every step is one Lua script, so it is atomic;
//! both keys expire natively with the record's TTL. The index spans
//! sessions, so the store wants one Redis server (or a primary and its
//! replicas), not a cluster.
//!
//! Epochs and offsets pass through Lua numbers (doubles): exact up to
//! 2^53, which no session reaches.

use super::record::Header;
use super::{
    guard_ms, ttl_ms, Checkpoint, OpenError, SessionStore, StoreError, StoreFuture, StoreLimits,
    StoredSession,
};
use crate::session::SessionId;
use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use redis::Script;
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

const CREATE: &str = r"
redis.call('ZREMRANGEBYSCORE', KEYS[3], '-inf', ARGV[2])
if redis.call('ZCARD', KEYS[3]) >= tonumber(ARGV[4]) then return 0 end
redis.call('DEL', KEYS[1], KEYS[2])
redis.call('HSET', KEYS[1], 'epoch', 1, 'token', ARGV[1], 'recv', ARGV[8], 'base', ARGV[9], 'end', ARGV[10], 'fin', ARGV[11], 'rfin', ARGV[12])
redis.call('PEXPIRE', KEYS[1], ARGV[3])
if ARGV[6] ~= '' then
  redis.call('HSET', KEYS[2], ARGV[6], ARGV[7])
  redis.call('PEXPIRE', KEYS[2], ARGV[3])
end
redis.call('ZADD', KEYS[3], tonumber(ARGV[2]) + tonumber(ARGV[3]), ARGV[5])
return 1
";

const CLAIM: &str = r"
local e = redis.call('HGET', KEYS[1], 'epoch')
if not e or tonumber(e) ~= tonumber(ARGV[1]) then return 0 end
local c = tonumber(redis.call('HGET', KEYS[1], 'claimed') or '0')
if tonumber(ARGV[4]) < c + tonumber(ARGV[5]) then return 0 end
local n = tonumber(e) + 1
redis.call('HSET', KEYS[1], 'epoch', n, 'claimed', ARGV[4])
redis.call('PEXPIRE', KEYS[1], ARGV[2])
redis.call('PEXPIRE', KEYS[2], ARGV[2])
redis.call('ZADD', KEYS[3], tonumber(ARGV[4]) + tonumber(ARGV[2]), ARGV[3])
return n
";

const CHECKPOINT: &str = r"
local e = redis.call('HGET', KEYS[1], 'epoch')
if not e or tonumber(e) ~= tonumber(ARGV[1]) then return 0 end
redis.call('HSET', KEYS[1], 'recv', ARGV[2], 'base', ARGV[4], 'end', ARGV[9], 'fin', ARGV[10], 'rfin', ARGV[11])
if ARGV[7] ~= '' then redis.call('HSET', KEYS[2], ARGV[7], ARGV[8]) end
local base = tonumber(ARGV[4])
for _, f in ipairs(redis.call('HKEYS', KEYS[2])) do
  if tonumber(f) + redis.call('HSTRLEN', KEYS[2], f) <= base then
    redis.call('HDEL', KEYS[2], f)
  end
end
redis.call('PEXPIRE', KEYS[1], ARGV[3])
redis.call('PEXPIRE', KEYS[2], ARGV[3])
redis.call('ZADD', KEYS[3], tonumber(ARGV[6]) + tonumber(ARGV[3]), ARGV[5])
return 1
";

const REMOVE: &str = r"
local e = redis.call('HGET', KEYS[1], 'epoch')
if not e or tonumber(e) ~= tonumber(ARGV[1]) then return 0 end
redis.call('DEL', KEYS[1], KEYS[2])
redis.call('ZREM', KEYS[3], ARGV[2])
return 1
";

const COUNT: &str = r"
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', ARGV[1])
return redis.call('ZCARD', KEYS[1])
";

struct Scripts {
    create: Script,
    claim: Script,
    checkpoint: Script,
    remove: Script,
    count: Script,
}

/// A [`SessionStore`] in Redis, shared by every instance of a server fleet
/// (cheap to clone: clones share one multiplexed connection, which
/// reconnects by itself).
///
/// ```no_run
/// use netmend::session::{Acceptor, Config, Limits};
/// use netmend::store::{RedisStore, StoreKey, StoreLimits};
///
/// # async fn serve() -> Result<(), Box<dyn std::error::Error>> {
/// let store = RedisStore::connect("redis://198.18.0.9:6379/", StoreLimits::default()).await?;
/// let key = StoreKey::from_bytes([0x42; 32]); // the fleet's key, from its secrets
/// let acceptor = Acceptor::with_store(Config::default(), Limits::default(), store, key)?;
/// # drop(acceptor);
/// # Ok(())
/// # }
/// ```
#[derive(Clone)]
pub struct RedisStore {
    con: ConnectionManager,
    prefix: Arc<str>,
    limits: StoreLimits,
    scripts: Arc<Scripts>,
}

impl std::fmt::Debug for RedisStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisStore")
            .field("prefix", &self.prefix)
            .field("limits", &self.limits)
            .finish_non_exhaustive()
    }
}

fn backend(e: impl std::fmt::Display) -> StoreError {
    StoreError::Backend(e.to_string())
}

fn hex(id: SessionId) -> String {
    id.0.iter().map(|b| format!("{b:02x}")).collect()
}

impl RedisStore {
    /// Connects to the Redis server at `url` (`redis://host:port/db`),
    /// keys under the prefix `netmend`.
    ///
    /// # Errors
    ///
    /// [`OpenError::Config`] when `limits` is refused; [`OpenError::Store`]
    /// when the URL is unusable or the server does not answer.
    ///
    /// # Cancel safety
    ///
    /// Cancel safe: nothing is written before it returns.
    pub async fn connect(url: &str, limits: StoreLimits) -> Result<Self, OpenError> {
        limits.validate()?;
        let client = redis::Client::open(url).map_err(backend)?;
        // A Redis that does not answer must not hold a checkpoint (or a
        // resume) for long: the session retries with backoff, and a
        // handshake times out on its own.
        let config = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(Duration::from_secs(2)))
            .set_response_timeout(Some(Duration::from_secs(2)))
            .set_number_of_retries(2)
            .set_max_delay(Duration::from_millis(500));
        let con = ConnectionManager::new_with_config(client, config)
            .await
            .map_err(backend)?;
        Ok(RedisStore {
            con,
            prefix: Arc::from("netmend"),
            limits,
            scripts: Arc::new(Scripts {
                create: Script::new(CREATE),
                claim: Script::new(CLAIM),
                checkpoint: Script::new(CHECKPOINT),
                remove: Script::new(REMOVE),
                count: Script::new(COUNT),
            }),
        })
    }

    /// The same store under another key prefix (several stores in one
    /// Redis database).
    pub fn with_prefix(mut self, prefix: &str) -> Self {
        self.prefix = Arc::from(prefix);
        self
    }

    fn keys(&self, id: SessionId) -> [String; 3] {
        let h = hex(id);
        [
            format!("{}:{{{h}}}", self.prefix),
            format!("{}:{{{h}}}:d", self.prefix),
            format!("{}:index", self.prefix),
        ]
    }

    fn ttl(&self) -> u64 {
        ttl_ms(&self.limits)
    }
}

impl SessionStore for RedisStore {
    fn limits(&self) -> StoreLimits {
        self.limits
    }

    fn create<'a>(&'a self, s: &'a StoredSession, now: u64) -> StoreFuture<'a, ()> {
        Box::pin(async move {
            let [head, data, index] = self.keys(s.id);
            let mut call = self.scripts.create.prepare_invoke();
            call.key(head).key(data).key(index);
            call.arg(&s.token.0[..])
                .arg(now)
                .arg(self.ttl())
                .arg(self.limits.max_sessions)
                .arg(hex(s.id));
            if s.data.is_empty() {
                call.arg("").arg("");
            } else {
                call.arg(s.send_base).arg(&s.data[..]);
            }
            call.arg(s.recv)
                .arg(s.send_base)
                .arg(s.send_end)
                .arg(u8::from(s.send_fin))
                .arg(u8::from(s.recv_fin));
            let mut con = self.con.clone();
            let made: i64 = call.invoke_async(&mut con).await.map_err(backend)?;
            match made {
                1 => Ok(()),
                _ => Err(StoreError::Full(self.limits.max_sessions)),
            }
        })
    }

    fn load(&self, id: SessionId, _now: u64) -> StoreFuture<'_, Option<StoredSession>> {
        Box::pin(async move {
            let [head, data, _] = self.keys(id);
            let mut con = self.con.clone();
            type Fields = (
                Option<u64>,
                Option<Vec<u8>>,
                Option<u64>,
                Option<u64>,
                Option<u64>,
                Option<u8>,
                Option<u8>,
            );
            let (fields, chunks): (Fields, HashMap<String, Vec<u8>>) = redis::pipe()
                .atomic()
                .cmd("HMGET")
                .arg(&head)
                .arg(&["epoch", "token", "recv", "base", "end", "fin", "rfin"])
                .hgetall(&data)
                .query_async(&mut con)
                .await
                .map_err(backend)?;
            let (
                Some(epoch),
                Some(token),
                Some(recv),
                Some(send_base),
                Some(send_end),
                Some(fin),
                Some(rfin),
            ) = fields
            else {
                return Ok(None);
            };
            let corrupt = |why: &str| StoreError::Corrupt {
                id,
                why: why.to_string(),
            };
            let token = <[u8; super::seal::SEALED_LEN]>::try_from(token.as_slice())
                .map_err(|_| corrupt("sealed token of the wrong length"))?;
            if send_base > send_end || fin > 1 || rfin > 1 {
                return Err(corrupt("inconsistent positions"));
            }
            let h = Header {
                epoch,
                recv,
                recv_fin: rfin == 1,
                send_base,
                send_end,
                send_fin: fin == 1,
                expires_at: u64::MAX,
                claimed_at: 0,
                token: super::SealedToken(token),
            };
            let mut chunks: Vec<(u64, Vec<u8>)> = chunks
                .into_iter()
                .map(|(k, v)| {
                    k.parse::<u64>()
                        .map(|o| (o, v))
                        .map_err(|_| StoreError::Corrupt {
                            id,
                            why: format!("chunk field {k:?} is not an offset"),
                        })
                })
                .collect::<Result<_, _>>()?;
            chunks.sort_by_key(|(o, _)| *o);
            h.session(id, chunks.iter().map(|(o, b)| (*o, &b[..])))
                .map(Some)
        })
    }

    fn claim(&self, id: SessionId, seen: u64, now: u64) -> StoreFuture<'_, u64> {
        Box::pin(async move {
            let [head, data, index] = self.keys(id);
            let mut con = self.con.clone();
            let epoch: u64 = self
                .scripts
                .claim
                .key(head)
                .key(data)
                .key(index)
                .arg(seen)
                .arg(self.ttl())
                .arg(hex(id))
                .arg(now)
                .arg(guard_ms(&self.limits))
                .invoke_async(&mut con)
                .await
                .map_err(backend)?;
            match epoch {
                0 => Err(StoreError::Claimed(id)),
                e => Ok(e),
            }
        })
    }

    fn checkpoint<'a>(&'a self, cp: &'a Checkpoint, now: u64) -> StoreFuture<'a, ()> {
        Box::pin(async move {
            let [head, data, index] = self.keys(cp.id);
            let mut call = self.scripts.checkpoint.prepare_invoke();
            call.key(head).key(data).key(index);
            call.arg(cp.epoch)
                .arg(cp.recv)
                .arg(self.ttl())
                .arg(cp.send_base)
                .arg(hex(cp.id))
                .arg(now);
            match &cp.append {
                Some((offset, bytes)) => call.arg(*offset).arg(&bytes[..]),
                None => call.arg("").arg(""),
            };
            call.arg(cp.send_end)
                .arg(u8::from(cp.send_fin))
                .arg(u8::from(cp.recv_fin));
            let mut con = self.con.clone();
            let done: i64 = call.invoke_async(&mut con).await.map_err(backend)?;
            match done {
                1 => Ok(()),
                _ => Err(StoreError::Fenced(cp.id)),
            }
        })
    }

    fn remove(&self, id: SessionId, epoch: u64) -> StoreFuture<'_, ()> {
        Box::pin(async move {
            let [head, data, index] = self.keys(id);
            let mut con = self.con.clone();
            let _: i64 = self
                .scripts
                .remove
                .key(head)
                .key(data)
                .key(index)
                .arg(epoch)
                .arg(hex(id))
                .invoke_async(&mut con)
                .await
                .map_err(backend)?;
            Ok(())
        })
    }

    fn count(&self, now: u64) -> StoreFuture<'_, usize> {
        Box::pin(async move {
            let index = format!("{}:index", self.prefix);
            let mut con = self.con.clone();
            let n: usize = self
                .scripts
                .count
                .key(index)
                .arg(now)
                .invoke_async(&mut con)
                .await
                .map_err(backend)?;
            Ok(n)
        })
    }
}
