//! Session credentials and the resume proofs.
//!
//! The token never crosses the wire. The first handshake of a session is an
//! ephemeral X25519 key agreement (`NewSession` carries the client's public
//! key, `Welcome` the server's); both sides derive the token from the shared
//! secret, so a passive observer of that handshake learns nothing it could
//! resume with. A resume then proves the token with an HMAC over the
//! server's fresh nonce, so a captured resume cannot be replayed on another
//! transport, and the server proves it back so a client cannot be hijacked
//! by an impostor server. What this does not give: confidentiality of the
//! stream and the server's identity against an active attacker who sits in
//! the first handshake (run the session over TLS for those).

use super::frame::SessionId;
use hmac::{Hmac, Mac};
use sha2::Sha256;

type HmacSha256 = Hmac<Sha256>;

/// Which side computes a proof; the two proofs never collide.
#[derive(Clone, Copy, Debug)]
pub enum Prover {
    /// The client resuming.
    Client,
    /// The server answering.
    Server,
}

/// Identifier and secret token of one session.
#[derive(Clone, PartialEq, Eq)]
pub struct Credentials {
    /// Public identifier.
    pub id: SessionId,
    /// 128-bit secret from the OS CSPRNG.
    pub token: [u8; 16],
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never print the token.
        f.debug_struct("Credentials").field("id", &self.id).finish()
    }
}

/// One side's ephemeral X25519 key pair for a session's first handshake.
pub struct KeyPair {
    secret: x25519_dalek::StaticSecret,
    public: [u8; 32],
}

impl std::fmt::Debug for KeyPair {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never print the secret.
        f.debug_struct("KeyPair").finish_non_exhaustive()
    }
}

impl KeyPair {
    /// A key pair from 32 random bytes (the caller draws them: the cores
    /// stay free of system calls).
    pub fn from_random(bytes: [u8; 32]) -> Self {
        let secret = x25519_dalek::StaticSecret::from(bytes);
        let public = x25519_dalek::PublicKey::from(&secret).to_bytes();
        KeyPair { secret, public }
    }

    /// A key pair from the operating system's CSPRNG.
    pub fn generate() -> Result<Self, getrandom::Error> {
        let mut bytes = [0u8; 32];
        getrandom::fill(&mut bytes)?;
        Ok(KeyPair::from_random(bytes))
    }

    /// The public key to send.
    pub fn public(&self) -> [u8; 32] {
        self.public
    }

    /// The credentials of session `id` agreed with `peer`'s public key;
    /// `client` and `server` are the two public keys in the order of the
    /// handshake. `None` when the peer's key is degenerate (a low-order
    /// point: the shared secret would be known to anyone).
    pub fn agree(
        &self,
        id: SessionId,
        peer: &[u8; 32],
        client: &[u8; 32],
        server: &[u8; 32],
    ) -> Option<Credentials> {
        let shared = self
            .secret
            .diffie_hellman(&x25519_dalek::PublicKey::from(*peer));
        if !shared.was_contributory() {
            return None;
        }
        let mut mac = match HmacSha256::new_from_slice(shared.as_bytes()) {
            Ok(m) => m,
            Err(_) => unreachable!("HMAC takes keys of any length"),
        };
        mac.update(b"netmend/1 session token");
        mac.update(&id.0);
        mac.update(client);
        mac.update(server);
        let full = mac.finalize().into_bytes();
        let mut token = [0u8; 16];
        token.copy_from_slice(&full[..16]);
        Some(Credentials { id, token })
    }
}

impl SessionId {
    /// A fresh random identifier from the OS CSPRNG.
    pub fn random() -> Result<Self, getrandom::Error> {
        let mut id = [0u8; 16];
        getrandom::fill(&mut id)?;
        Ok(SessionId(id))
    }
}

impl Credentials {
    /// Fresh random credentials (tests; sessions agree on theirs).
    #[cfg(test)]
    pub fn generate() -> Result<Self, getrandom::Error> {
        let mut id = [0u8; 16];
        let mut token = [0u8; 16];
        getrandom::fill(&mut id)?;
        getrandom::fill(&mut token)?;
        Ok(Self {
            id: SessionId(id),
            token,
        })
    }

    fn mac(&self, who: Prover, nonce: &[u8; 16], offset: u64) -> HmacSha256 {
        // HMAC accepts keys of any length; 16 bytes cannot fail.
        let mut mac = match HmacSha256::new_from_slice(&self.token) {
            Ok(m) => m,
            Err(_) => unreachable!("HMAC takes keys of any length"),
        };
        mac.update(match who {
            Prover::Client => b"netmend/1 client resume",
            Prover::Server => b"netmend/1 server resume",
        });
        mac.update(nonce);
        mac.update(&self.id.0);
        mac.update(&offset.to_be_bytes());
        mac
    }

    /// The proof `who` sends for `nonce` and its received `offset`.
    pub fn proof(&self, who: Prover, nonce: &[u8; 16], offset: u64) -> [u8; 32] {
        self.mac(who, nonce, offset).finalize().into_bytes().into()
    }

    /// Checks a proof in constant time.
    pub fn verify(&self, who: Prover, nonce: &[u8; 16], offset: u64, proof: &[u8; 32]) -> bool {
        self.mac(who, nonce, offset).verify_slice(proof).is_ok()
    }
}

/// A fresh random nonce from the OS CSPRNG.
pub fn nonce() -> Result<[u8; 16], getrandom::Error> {
    let mut n = [0u8; 16];
    getrandom::fill(&mut n)?;
    Ok(n)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn proofs_bind_token_nonce_offset_and_side() {
        let c = Credentials::generate().unwrap();
        let n = [5u8; 16];
        let p = c.proof(Prover::Client, &n, 42);
        assert!(c.verify(Prover::Client, &n, 42, &p));
        assert!(!c.verify(Prover::Server, &n, 42, &p));
        assert!(!c.verify(Prover::Client, &n, 43, &p));
        assert!(!c.verify(Prover::Client, &[6u8; 16], 42, &p));
        let mut other = c.clone();
        other.token[0] ^= 1;
        assert!(!other.verify(Prover::Client, &n, 42, &p));
    }
}
