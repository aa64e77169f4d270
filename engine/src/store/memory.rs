//! A store in this process's memory: it survives nothing a real store
//! must, and exists for tests and for embedding the store's rules in a
//! deterministic simulation (a "crash" drops the server's sessions and
//! keeps the store).

use super::record::{chunk_dead, Header};
use super::{
    guard_ms, ttl_ms, Checkpoint, SessionStore, StoreError, StoreFuture, StoreLimits, StoredSession,
};
use crate::session::SessionId;
use crate::validate::ConfigError;
use bytes::Bytes;
use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex, MutexGuard};

type Records = HashMap<SessionId, (Header, BTreeMap<u64, Bytes>)>;

/// A [`SessionStore`] in memory (cheap to clone: clones share the records).
#[derive(Clone, Debug)]
pub struct MemoryStore {
    limits: StoreLimits,
    records: Arc<Mutex<Records>>,
}

impl MemoryStore {
    /// An empty store within `limits`.
    ///
    /// # Errors
    ///
    /// A [`ConfigError`] when `limits` is refused.
    pub fn new(limits: StoreLimits) -> Result<Self, ConfigError> {
        limits.validate()?;
        Ok(MemoryStore {
            limits,
            records: Arc::new(Mutex::new(HashMap::new())),
        })
    }

    fn lock(&self) -> MutexGuard<'_, Records> {
        self.records.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Sets the record of `id` back to `older` (a store that lost writes it
    /// had confirmed, as a Redis failover can): for tests of what a resume
    /// does then.
    pub fn roll_back(&self, older: &StoredSession) {
        let mut records = self.lock();
        if let Some((h, chunks)) = records.get_mut(&older.id) {
            let (expires, claimed) = (h.expires_at, h.claimed_at);
            *h = Header::of(older, expires);
            h.claimed_at = claimed;
            chunks.clear();
            chunks.insert(older.send_base, Bytes::copy_from_slice(&older.data));
        }
    }

    pub(crate) fn sync_create(&self, s: &StoredSession, now: u64) -> Result<(), StoreError> {
        let mut records = self.lock();
        if records.len() >= self.limits.max_sessions {
            records.retain(|_, (h, _)| h.expires_at > now);
        }
        if records.len() >= self.limits.max_sessions {
            return Err(StoreError::Full(self.limits.max_sessions));
        }
        let expires = now.saturating_add(ttl_ms(&self.limits));
        let mut chunks = BTreeMap::new();
        if !s.data.is_empty() {
            chunks.insert(s.send_base, Bytes::copy_from_slice(&s.data));
        }
        records.insert(s.id, (Header::of(s, expires), chunks));
        Ok(())
    }

    pub(crate) fn sync_load(
        &self,
        id: SessionId,
        now: u64,
    ) -> Result<Option<StoredSession>, StoreError> {
        let mut records = self.lock();
        match records.get(&id) {
            Some((h, _)) if h.expires_at <= now => {
                records.remove(&id);
                Ok(None)
            }
            Some((h, chunks)) => h
                .session(id, chunks.iter().map(|(o, b)| (*o, &b[..])))
                .map(Some),
            None => Ok(None),
        }
    }

    pub(crate) fn sync_claim(&self, id: SessionId, seen: u64, now: u64) -> Result<u64, StoreError> {
        let mut records = self.lock();
        match records.get_mut(&id) {
            Some((h, _))
                if h.epoch == seen
                    && h.expires_at > now
                    && now >= h.claimed_at.saturating_add(guard_ms(&self.limits)) =>
            {
                h.epoch += 1;
                h.claimed_at = now;
                h.expires_at = now.saturating_add(ttl_ms(&self.limits));
                Ok(h.epoch)
            }
            _ => Err(StoreError::Claimed(id)),
        }
    }

    pub(crate) fn sync_checkpoint(&self, cp: &Checkpoint, now: u64) -> Result<(), StoreError> {
        let mut records = self.lock();
        let Some((h, chunks)) = records.get_mut(&cp.id) else {
            return Err(StoreError::Fenced(cp.id));
        };
        if h.epoch != cp.epoch || h.expires_at <= now {
            return Err(StoreError::Fenced(cp.id));
        }
        *h = h.advance(cp, now.saturating_add(ttl_ms(&self.limits)));
        if let Some((offset, bytes)) = &cp.append {
            chunks.insert(*offset, bytes.clone());
        }
        chunks.retain(|o, b| !chunk_dead(*o, b.len(), cp.send_base));
        Ok(())
    }

    pub(crate) fn sync_remove(&self, id: SessionId, epoch: u64) {
        let mut records = self.lock();
        if records.get(&id).is_some_and(|(h, _)| h.epoch == epoch) {
            records.remove(&id);
        }
        if records.capacity() > 64 && records.len() < records.capacity() / 4 {
            let len = records.len();
            records.shrink_to(len * 2);
        }
    }
}

impl SessionStore for MemoryStore {
    fn limits(&self) -> StoreLimits {
        self.limits
    }

    fn create<'a>(&'a self, session: &'a StoredSession, now: u64) -> StoreFuture<'a, ()> {
        let r = self.sync_create(session, now);
        Box::pin(async move { r })
    }

    fn load(&self, id: SessionId, now: u64) -> StoreFuture<'_, Option<StoredSession>> {
        let r = self.sync_load(id, now);
        Box::pin(async move { r })
    }

    fn claim(&self, id: SessionId, seen: u64, now: u64) -> StoreFuture<'_, u64> {
        let r = self.sync_claim(id, seen, now);
        Box::pin(async move { r })
    }

    fn checkpoint<'a>(&'a self, checkpoint: &'a Checkpoint, now: u64) -> StoreFuture<'a, ()> {
        let r = self.sync_checkpoint(checkpoint, now);
        Box::pin(async move { r })
    }

    fn remove(&self, id: SessionId, epoch: u64) -> StoreFuture<'_, ()> {
        self.sync_remove(id, epoch);
        Box::pin(async { Ok(()) })
    }

    fn count(&self, now: u64) -> StoreFuture<'_, usize> {
        let n = self
            .lock()
            .values()
            .filter(|(h, _)| h.expires_at > now)
            .count();
        Box::pin(async move { Ok(n) })
    }
}
