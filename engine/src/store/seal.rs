//! Resume tokens at rest: sealed under a key the store never holds.

use super::StoreError;
use crate::session::SessionId;
use chacha20poly1305::aead::{Aead, KeyInit, Payload};
use chacha20poly1305::{ChaCha20Poly1305, Key, Nonce};

/// Bytes of a sealed token: a 12-byte nonce, the 16-byte token encrypted,
/// a 16-byte tag.
pub const SEALED_LEN: usize = 44;

/// The key that seals resume tokens in a session store. Every server
/// instance that serves the store's sessions holds the same key, from its
/// configuration (not from the store: a reader of the store alone must not
/// be able to resume a session).
#[derive(Clone)]
pub struct StoreKey([u8; 32]);

impl std::fmt::Debug for StoreKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never print the key.
        f.write_str("StoreKey(..)")
    }
}

impl StoreKey {
    /// A key from 32 secret bytes (e.g. from a secrets manager).
    pub fn from_bytes(bytes: [u8; 32]) -> Self {
        StoreKey(bytes)
    }

    /// A fresh key from the operating system's CSPRNG.
    ///
    /// # Errors
    ///
    /// The OS random source failed.
    pub fn generate() -> Result<Self, getrandom::Error> {
        let mut bytes = [0u8; 32];
        getrandom::fill(&mut bytes)?;
        Ok(StoreKey(bytes))
    }

    fn cipher(&self) -> ChaCha20Poly1305 {
        ChaCha20Poly1305::new(Key::from_slice(&self.0))
    }

    /// Seals `token` of session `id` with a fresh `nonce` (never reuse one
    /// under a key: draw it from the OS CSPRNG).
    pub(crate) fn seal(&self, id: SessionId, token: &[u8; 16], nonce: [u8; 12]) -> SealedToken {
        let payload = Payload {
            msg: token,
            aad: &id.0,
        };
        let mut out = [0u8; SEALED_LEN];
        out[..12].copy_from_slice(&nonce);
        // Encrypting 16 bytes into a fresh buffer cannot fail.
        if let Ok(ct) = self.cipher().encrypt(Nonce::from_slice(&nonce), payload) {
            out[12..].copy_from_slice(&ct);
        }
        SealedToken(out)
    }

    /// Opens the token of session `id`.
    ///
    /// # Errors
    ///
    /// [`StoreError::Key`] when it was sealed under another key or for
    /// another session, or was changed.
    pub(crate) fn open(&self, id: SessionId, sealed: &SealedToken) -> Result<[u8; 16], StoreError> {
        let payload = Payload {
            msg: &sealed.0[12..],
            aad: &id.0,
        };
        let plain = self
            .cipher()
            .decrypt(Nonce::from_slice(&sealed.0[..12]), payload)
            .map_err(|_| StoreError::Key(id))?;
        <[u8; 16]>::try_from(plain.as_slice()).map_err(|_| StoreError::Key(id))
    }
}

/// A resume token as a store keeps it (see [`StoreKey`]).
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct SealedToken(pub [u8; SEALED_LEN]);

impl std::fmt::Debug for SealedToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SealedToken(..)")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_token_opens_only_with_its_key_and_its_session() {
        let key = StoreKey::from_bytes([7; 32]);
        let id = SessionId([1; 16]);
        let sealed = key.seal(id, &[9; 16], [3; 12]);
        assert_eq!(key.open(id, &sealed), Ok([9; 16]));
        // The token is not in the sealed bytes.
        assert!(!sealed.0.windows(16).any(|w| w == [9; 16]));
        assert_eq!(
            StoreKey::from_bytes([8; 32]).open(id, &sealed),
            Err(StoreError::Key(id))
        );
        let other = SessionId([2; 16]);
        assert_eq!(key.open(other, &sealed), Err(StoreError::Key(other)));
        let mut changed = sealed;
        changed.0[20] ^= 1;
        assert_eq!(key.open(id, &changed), Err(StoreError::Key(id)));
    }
}
