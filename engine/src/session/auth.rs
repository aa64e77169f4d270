//! Session credentials and the resume proofs.
//!
//! A resume never sends the token itself: the client proves it holds the token
//! with an HMAC over the server's fresh nonce, so a captured resume cannot be
//! replayed on another transport, and the server proves it back so a client
//! cannot be hijacked by an impostor server.

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
#[derive(Clone)]
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

impl Credentials {
    /// Fresh credentials from the operating system's CSPRNG.
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
