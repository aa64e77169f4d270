//! The embedded store: one file (redb), for one server process that
//! restarts.

use super::record::{chunk_dead, Header};
use super::{
    guard_ms, ttl_ms, Checkpoint, OpenError, SessionStore, StoreError, StoreFuture, StoreLimits,
    StoredSession,
};
use crate::session::SessionId;
use redb::{Database, ReadableTable, ReadableTableMetadata, TableDefinition, WriteTransaction};
use std::path::Path;
use std::sync::Arc;

/// Session id → header.
const HEADERS: TableDefinition<&[u8], &[u8]> = TableDefinition::new("netmend_session_headers");
/// (session id, stream offset) → outgoing bytes from that offset.
const CHUNKS: TableDefinition<(&[u8], u64), &[u8]> = TableDefinition::new("netmend_session_chunks");

/// What a completed write of an [`EmbeddedStore`] survives.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub enum FileDurability {
    /// Written to the file before the write completes, not forced to the
    /// disk: survives the server process crashing or being killed, not
    /// the operating system crashing or the power failing (the last writes
    /// may then be lost, and resumes behind them fail with a typed error).
    /// The default: what a server restart needs, at a fraction of the cost.
    #[default]
    Process,
    /// Forced to the disk (fsync) before the write completes: survives a
    /// power failure too.
    Disk,
}

/// A [`SessionStore`] in one file, for a server process that restarts
/// (one process at a time: the file is locked while open).
///
/// ```no_run
/// use netmend::session::{Acceptor, Config, Limits};
/// use netmend::store::{EmbeddedStore, StoreKey, StoreLimits};
///
/// # fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let store = EmbeddedStore::open("/var/lib/myserver/sessions.redb", StoreLimits::default())?;
/// // The same key on every start (from the server's secrets, not the store).
/// let key = StoreKey::from_bytes([0x42; 32]);
/// let acceptor = Acceptor::with_store(Config::default(), Limits::default(), store, key)?;
/// # drop(acceptor);
/// # Ok(())
/// # }
/// ```
#[derive(Clone)]
pub struct EmbeddedStore {
    db: Arc<Database>,
    limits: StoreLimits,
    durability: FileDurability,
}

impl std::fmt::Debug for EmbeddedStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EmbeddedStore")
            .field("limits", &self.limits)
            .field("durability", &self.durability)
            .finish_non_exhaustive()
    }
}

fn backend(e: impl std::fmt::Display) -> StoreError {
    StoreError::Backend(e.to_string())
}

impl EmbeddedStore {
    /// Opens (or creates) the store in the file at `path`, with
    /// [`FileDurability::Process`].
    ///
    /// # Errors
    ///
    /// [`OpenError::Config`] when `limits` is refused;
    /// [`OpenError::Store`] when the file cannot be opened (another process
    /// has it open, no permission, not a store).
    pub fn open(path: impl AsRef<Path>, limits: StoreLimits) -> Result<Self, OpenError> {
        limits.validate()?;
        let db = Database::create(path.as_ref()).map_err(backend)?;
        let txn = db.begin_write().map_err(backend)?;
        txn.open_table(HEADERS).map_err(backend)?;
        txn.open_table(CHUNKS).map_err(backend)?;
        txn.commit().map_err(backend)?;
        Ok(EmbeddedStore {
            db: Arc::new(db),
            limits,
            durability: FileDurability::default(),
        })
    }

    /// The same store with `durability` for its writes.
    pub fn with_durability(mut self, durability: FileDurability) -> Self {
        self.durability = durability;
        self
    }

    fn write(&self) -> Result<WriteTransaction, StoreError> {
        let mut txn = self.db.begin_write().map_err(backend)?;
        txn.set_durability(match self.durability {
            FileDurability::Process => redb::Durability::Eventual,
            FileDurability::Disk => redb::Durability::Immediate,
        });
        Ok(txn)
    }

    /// Runs `f` on a blocking thread (redb does file I/O).
    fn blocking<T: Send + 'static>(
        &self,
        f: impl FnOnce(&EmbeddedStore) -> Result<T, StoreError> + Send + 'static,
    ) -> StoreFuture<'static, T> {
        let me = self.clone();
        Box::pin(async move {
            tokio::task::spawn_blocking(move || f(&me))
                .await
                .map_err(backend)?
        })
    }

    fn header(
        table: &impl ReadableTable<&'static [u8], &'static [u8]>,
        id: SessionId,
    ) -> Result<Option<Header>, StoreError> {
        match table.get(&id.0[..]).map_err(backend)? {
            Some(v) => Header::decode(id, v.value()).map(Some),
            None => Ok(None),
        }
    }

    /// Removes the record of `id` and its chunks.
    fn erase(txn: &WriteTransaction, id: SessionId) -> Result<(), StoreError> {
        let mut headers = txn.open_table(HEADERS).map_err(backend)?;
        headers.remove(&id.0[..]).map_err(backend)?;
        Self::drop_chunks(txn, id, u64::MAX)
    }

    /// Removes the chunks of `id` wholly below `base`.
    fn drop_chunks(txn: &WriteTransaction, id: SessionId, base: u64) -> Result<(), StoreError> {
        let mut chunks = txn.open_table(CHUNKS).map_err(backend)?;
        let mut dead = Vec::new();
        for entry in chunks
            .range((&id.0[..], 0u64)..=(&id.0[..], u64::MAX))
            .map_err(backend)?
        {
            let (k, v) = entry.map_err(backend)?;
            let offset = k.value().1;
            if base == u64::MAX || chunk_dead(offset, v.value().len(), base) {
                dead.push(offset);
            } else {
                break;
            }
        }
        for offset in dead {
            chunks.remove((&id.0[..], offset)).map_err(backend)?;
        }
        Ok(())
    }

    fn sync_create(&self, s: &StoredSession, now: u64) -> Result<(), StoreError> {
        let txn = self.write()?;
        {
            let mut headers = txn.open_table(HEADERS).map_err(backend)?;
            let held = headers.len().map_err(backend)? as usize;
            if held >= self.limits.max_sessions {
                // Full: forget the expired records first.
                let mut expired = Vec::new();
                for entry in headers.iter().map_err(backend)? {
                    let (k, v) = entry.map_err(backend)?;
                    let Ok(id) = <[u8; 16]>::try_from(k.value()) else {
                        continue;
                    };
                    let id = SessionId(id);
                    // An unreadable record is of no use to anyone: forget it too.
                    if Header::decode(id, v.value()).map_or(true, |h| h.expires_at <= now) {
                        expired.push(id);
                    }
                }
                drop(headers);
                if held - expired.len() >= self.limits.max_sessions {
                    return Err(StoreError::Full(self.limits.max_sessions));
                }
                for id in expired {
                    Self::erase(&txn, id)?;
                }
                headers = txn.open_table(HEADERS).map_err(backend)?;
            }
            let expires = now.saturating_add(ttl_ms(&self.limits));
            headers
                .insert(&s.id.0[..], &Header::of(s, expires).encode()[..])
                .map_err(backend)?;
        }
        Self::drop_chunks(&txn, s.id, u64::MAX)?;
        if !s.data.is_empty() {
            let mut chunks = txn.open_table(CHUNKS).map_err(backend)?;
            chunks
                .insert((&s.id.0[..], s.send_base), &s.data[..])
                .map_err(backend)?;
        }
        txn.commit().map_err(backend)
    }

    fn sync_load(&self, id: SessionId, now: u64) -> Result<Option<StoredSession>, StoreError> {
        let txn = self.db.begin_read().map_err(backend)?;
        let headers = txn.open_table(HEADERS).map_err(backend)?;
        let Some(h) = Self::header(&headers, id)? else {
            return Ok(None);
        };
        if h.expires_at <= now {
            return Ok(None);
        }
        let chunks = txn.open_table(CHUNKS).map_err(backend)?;
        let mut held = Vec::new();
        for entry in chunks
            .range((&id.0[..], 0u64)..=(&id.0[..], u64::MAX))
            .map_err(backend)?
        {
            let (k, v) = entry.map_err(backend)?;
            held.push((k.value().1, v.value().to_vec()));
        }
        h.session(id, held.iter().map(|(o, b)| (*o, &b[..])))
            .map(Some)
    }

    fn sync_claim(&self, id: SessionId, seen: u64, now: u64) -> Result<u64, StoreError> {
        let txn = self.write()?;
        let epoch = {
            let mut headers = txn.open_table(HEADERS).map_err(backend)?;
            let mut h = match Self::header(&headers, id)? {
                Some(h)
                    if h.epoch == seen
                        && h.expires_at > now
                        && now >= h.claimed_at.saturating_add(guard_ms(&self.limits)) =>
                {
                    h
                }
                _ => return Err(StoreError::Claimed(id)),
            };
            h.epoch += 1;
            h.claimed_at = now;
            h.expires_at = now.saturating_add(ttl_ms(&self.limits));
            headers
                .insert(&id.0[..], &h.encode()[..])
                .map_err(backend)?;
            h.epoch
        };
        txn.commit().map_err(backend)?;
        Ok(epoch)
    }

    fn sync_checkpoint(&self, cp: &Checkpoint, now: u64) -> Result<(), StoreError> {
        let txn = self.write()?;
        {
            let mut headers = txn.open_table(HEADERS).map_err(backend)?;
            let h = match Self::header(&headers, cp.id)? {
                Some(h) if h.epoch == cp.epoch && h.expires_at > now => h,
                _ => return Err(StoreError::Fenced(cp.id)),
            };
            let next = h.advance(cp, now.saturating_add(ttl_ms(&self.limits)));
            headers
                .insert(&cp.id.0[..], &next.encode()[..])
                .map_err(backend)?;
        }
        if let Some((offset, bytes)) = &cp.append {
            let mut chunks = txn.open_table(CHUNKS).map_err(backend)?;
            chunks
                .insert((&cp.id.0[..], *offset), &bytes[..])
                .map_err(backend)?;
        }
        Self::drop_chunks(&txn, cp.id, cp.send_base)?;
        txn.commit().map_err(backend)
    }

    fn sync_remove(&self, id: SessionId, epoch: u64) -> Result<(), StoreError> {
        let txn = self.write()?;
        let mine = {
            let headers = txn.open_table(HEADERS).map_err(backend)?;
            Self::header(&headers, id)?.is_some_and(|h| h.epoch == epoch)
        };
        if !mine {
            return Ok(());
        }
        Self::erase(&txn, id)?;
        txn.commit().map_err(backend)
    }

    fn sync_count(&self, now: u64) -> Result<usize, StoreError> {
        let txn = self.db.begin_read().map_err(backend)?;
        let headers = txn.open_table(HEADERS).map_err(backend)?;
        let mut n = 0;
        for entry in headers.iter().map_err(backend)? {
            let (k, v) = entry.map_err(backend)?;
            let id = SessionId(<[u8; 16]>::try_from(k.value()).unwrap_or([0; 16]));
            if Header::decode(id, v.value()).is_ok_and(|h| h.expires_at > now) {
                n += 1;
            }
        }
        Ok(n)
    }
}

impl SessionStore for EmbeddedStore {
    fn limits(&self) -> StoreLimits {
        self.limits
    }

    fn create<'a>(&'a self, session: &'a StoredSession, now: u64) -> StoreFuture<'a, ()> {
        let s = session.clone();
        self.blocking(move |me| me.sync_create(&s, now))
    }

    fn load(&self, id: SessionId, now: u64) -> StoreFuture<'_, Option<StoredSession>> {
        self.blocking(move |me| me.sync_load(id, now))
    }

    fn claim(&self, id: SessionId, seen: u64, now: u64) -> StoreFuture<'_, u64> {
        self.blocking(move |me| me.sync_claim(id, seen, now))
    }

    fn checkpoint<'a>(&'a self, checkpoint: &'a Checkpoint, now: u64) -> StoreFuture<'a, ()> {
        let cp = checkpoint.clone();
        self.blocking(move |me| me.sync_checkpoint(&cp, now))
    }

    fn remove(&self, id: SessionId, epoch: u64) -> StoreFuture<'_, ()> {
        self.blocking(move |me| me.sync_remove(id, epoch))
    }

    fn count(&self, now: u64) -> StoreFuture<'_, usize> {
        self.blocking(move |me| me.sync_count(now))
    }
}
