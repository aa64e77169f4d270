//! The lab's name service, as both backends give it: the harness's own
//! table of the lab's names (a host's addresses, updated when it is
//! renumbered), which a `dns-failure` takes away. While it is away, a
//! lookup behaves as glibc's stub resolver does against a name server that
//! does not answer (resolv.conf(5) defaults `timeout:5`, `attempts:2`): it
//! waits five seconds per try, answers if the server is back by a try, and
//! after the second fails with a temporary failure. This is sim's name
//! service (turmoil has no DNS); the netns backend runs a real DNS server
//! where names change or fail ([`crate::backend::netns::dns`]), asked with
//! the same timings, and answers from its table elsewhere.

use std::io;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

/// How long one try waits for the name server.
pub const TRY: Duration = Duration::from_secs(5);
/// Tries before a lookup fails.
pub const TRIES: u32 = 2;

/// Whether the lab's name server answers; shared by every host's net.
#[derive(Clone, Debug, Default)]
pub struct NameService {
    down: Arc<AtomicBool>,
}

impl NameService {
    /// The name server stops answering (`true`) or answers again.
    pub fn set_down(&self, down: bool) {
        self.down.store(down, Ordering::Relaxed);
    }

    fn is_down(&self) -> bool {
        self.down.load(Ordering::Relaxed)
    }

    /// A lookup whose answer, once the server answers, is `answer`.
    ///
    /// # Errors
    ///
    /// `answer`'s error; `TimedOut` when the server did not answer any try.
    pub async fn lookup(
        &self,
        answer: impl FnOnce() -> io::Result<Vec<SocketAddr>>,
    ) -> io::Result<Vec<SocketAddr>> {
        for _ in 0..TRIES {
            if !self.is_down() {
                return answer();
            }
            tokio::time::sleep(TRY).await;
        }
        Err(io::Error::new(
            io::ErrorKind::TimedOut,
            "temporary failure in name resolution (the name server did not answer)",
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn a_lookup_waits_out_a_dead_server_as_glibc_does() {
        let names = NameService::default();
        let one = || Ok(vec!["198.18.0.2:7".parse().unwrap()]);
        assert_eq!(names.lookup(one).await.unwrap().len(), 1);
        names.set_down(true);
        let t = tokio::time::Instant::now();
        let e = names.lookup(one).await.unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::TimedOut);
        assert_eq!(t.elapsed(), TRY * TRIES);
        // Back during the first try: answered at the second.
        let (n2, t) = (names.clone(), tokio::time::Instant::now());
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_secs(3)).await;
            n2.set_down(false);
        });
        assert!(names.lookup(one).await.is_ok());
        assert_eq!(t.elapsed(), TRY);
    }
}
