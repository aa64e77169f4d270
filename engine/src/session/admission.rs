//! Acceptor admission: who may start a handshake and who may open a
//! session, as a sans-IO state (counters in, verdicts out), so that a flood
//! of clients costs bounded memory and existing sessions are untouched.

use crate::validate::ConfigError;
use std::collections::HashMap;
use std::net::IpAddr;
use thiserror::Error;

/// What an acceptor admits at once.
///
/// `#[non_exhaustive]`: start from [`Limits::default`] and set fields.
///
/// Memory per handshake in progress is bounded by the handshake itself: a
/// 512-byte read buffer and at most one frame of
/// [`MAX_HANDSHAKE_FRAME`](super::handshake::MAX_HANDSHAKE_FRAME) payload
/// bytes (a header announcing more is refused before anything is
/// buffered). A session holds at most `Config::replay_capacity` bytes of
/// unacknowledged output, and for its input the receive window
/// (`Config::receive_buffer` bytes of unread data, small frames coalesced
/// into 16 KiB blocks, so at most one block more), one read buffer that
/// starts at 4 KiB and grows to 256 KiB only while reads fill it, and a few
/// KiB of its own state (measured: about 5 KiB per session waiting for its
/// client; `engine/tests/memory_bound.rs`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct Limits {
    /// Sessions alive at once (connected or waiting for their client to
    /// resume). A new session over it is refused; resumes of existing
    /// sessions are not. Default 10,000.
    pub max_sessions: usize,
    /// Handshakes in progress at once; a transport over it is closed at
    /// once. Default 1,024.
    pub max_handshakes: usize,
    /// Sessions plus handshakes in progress per source address (only for
    /// transports given with [`Acceptor::accept_from`](super::Acceptor::accept_from)).
    /// Default 256.
    pub max_per_source: usize,
    /// Unacknowledged bytes a session may hold while its client is away
    /// (no transport): writes past it wait until the client resumes or the
    /// session expires. A client that opens a session and vanishes so
    /// costs at most this much of reply data until `Config::idle_expiry`,
    /// not `Config::replay_capacity`. At least 1. Default 256 KiB.
    pub max_bytes_while_away: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_sessions: 10_000,
            max_handshakes: 1_024,
            max_per_source: 256,
            max_bytes_while_away: 256 << 10,
        }
    }
}

impl Limits {
    /// Checks every field: each at least 1.
    ///
    /// # Errors
    ///
    /// A [`ConfigError`] naming the first field that is zero.
    pub fn validate(&self) -> Result<(), ConfigError> {
        for (field, v) in [
            ("Limits::max_sessions", self.max_sessions),
            ("Limits::max_handshakes", self.max_handshakes),
            ("Limits::max_per_source", self.max_per_source),
            ("Limits::max_bytes_while_away", self.max_bytes_while_away),
        ] {
            if v == 0 {
                return Err(ConfigError::new(field, "must be at least 1"));
            }
        }
        Ok(())
    }
}

/// Why a transport or a new session was refused. Existing sessions are
/// never touched by a refusal.
#[derive(Clone, Copy, Debug, Error, PartialEq, Eq)]
#[non_exhaustive]
pub enum Refusal {
    /// `Limits::max_sessions` sessions are alive.
    #[error("session limit reached ({0})")]
    Sessions(usize),
    /// `Limits::max_handshakes` handshakes are in progress.
    #[error("handshake limit reached ({0})")]
    Handshakes(usize),
    /// The source address holds `Limits::max_per_source` already.
    #[error("per-source limit reached ({limit}) for {address}")]
    Source {
        /// The address.
        address: IpAddr,
        /// The limit.
        limit: usize,
    },
    /// The session already holds `ATTACH_QUEUE` resumed transports its
    /// driver has not taken yet.
    #[error("too many resumes waiting for one session ({0})")]
    PendingResumes(usize),
    /// The application's admission hook said no.
    #[error("refused by the application")]
    Application,
}

/// The counters. Every `begin_*` that returns `Ok` must be matched by its
/// `end_*` (the acceptor does it with guards, so a cancelled accept cannot
/// leak a slot).
#[derive(Debug)]
pub(crate) struct Admission {
    limits: Limits,
    handshakes: usize,
    sessions: usize,
    /// Bounded: an entry exists only while its address holds a handshake
    /// or a session, so at most `max_handshakes + max_sessions` entries.
    per_source: HashMap<IpAddr, usize>,
}

impl Admission {
    pub(crate) fn new(limits: Limits) -> Self {
        Admission {
            limits,
            handshakes: 0,
            sessions: 0,
            per_source: HashMap::new(),
        }
    }

    pub(crate) fn limits(&self) -> Limits {
        self.limits
    }

    /// A transport arrives: may its handshake start?
    pub(crate) fn begin_handshake(&mut self, source: Option<IpAddr>) -> Result<(), Refusal> {
        if self.handshakes >= self.limits.max_handshakes {
            return Err(Refusal::Handshakes(self.limits.max_handshakes));
        }
        if let Some(ip) = source {
            let held = self.per_source.get(&ip).copied().unwrap_or(0);
            if held >= self.limits.max_per_source {
                return Err(Refusal::Source {
                    address: ip,
                    limit: self.limits.max_per_source,
                });
            }
            *self.per_source.entry(ip).or_insert(0) += 1;
        }
        self.handshakes += 1;
        Ok(())
    }

    /// The handshake ended (whatever came of it).
    pub(crate) fn end_handshake(&mut self, source: Option<IpAddr>) {
        self.handshakes = self.handshakes.saturating_sub(1);
        self.release(source);
    }

    /// Whether a new session may start now (the handshake still holds its
    /// slot).
    pub(crate) fn may_open_session(&self) -> Result<(), Refusal> {
        if self.sessions >= self.limits.max_sessions {
            return Err(Refusal::Sessions(self.limits.max_sessions));
        }
        Ok(())
    }

    /// A session started for `source`.
    pub(crate) fn begin_session(&mut self, source: Option<IpAddr>) {
        self.sessions += 1;
        if let Some(ip) = source {
            *self.per_source.entry(ip).or_insert(0) += 1;
        }
    }

    /// A session ended.
    pub(crate) fn end_session(&mut self, source: Option<IpAddr>) {
        self.sessions = self.sessions.saturating_sub(1);
        self.release(source);
    }

    fn release(&mut self, source: Option<IpAddr>) {
        if let Some(ip) = source {
            if let Some(n) = self.per_source.get_mut(&ip) {
                *n = n.saturating_sub(1);
                if *n == 0 {
                    self.per_source.remove(&ip);
                    super::accept::shrink_when_sparse(&mut self.per_source);
                }
            }
        }
    }

    pub(crate) fn handshakes(&self) -> usize {
        self.handshakes
    }

    #[cfg(test)]
    pub(crate) fn sources(&self) -> usize {
        self.per_source.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn ip(n: u8) -> Option<IpAddr> {
        Some(IpAddr::from([198, 18, 0, n]))
    }

    #[test]
    fn each_limit_refuses_by_name_and_frees_its_slot() {
        let mut a = Admission::new(Limits {
            max_sessions: 2,
            max_handshakes: 2,
            max_per_source: 2,
            ..Limits::default()
        });
        assert_eq!(a.begin_handshake(ip(1)), Ok(()));
        assert_eq!(a.begin_handshake(ip(1)), Ok(()));
        assert_eq!(a.begin_handshake(ip(2)), Err(Refusal::Handshakes(2)));
        // One handshake becomes a session, the other ends.
        assert_eq!(a.may_open_session(), Ok(()));
        a.begin_session(ip(1));
        a.end_handshake(ip(1));
        a.end_handshake(ip(1));
        // ip 1 holds its session and one new handshake: a third is refused.
        assert_eq!(a.begin_handshake(ip(1)), Ok(()));
        assert!(matches!(
            a.begin_handshake(ip(1)),
            Err(Refusal::Source { limit: 2, .. })
        ));
        a.end_handshake(ip(1));
        a.begin_session(ip(3));
        assert_eq!(a.may_open_session(), Err(Refusal::Sessions(2)));
        a.end_session(ip(1));
        a.end_session(ip(3));
        assert_eq!((a.handshakes(), a.sources()), (0, 0));
    }

    proptest! {
        /// Any interleaving of arrivals, sessions and departures: the
        /// counters never pass their limits and return to zero.
        #[test]
        fn counters_stay_within_limits(ops in proptest::collection::vec((0u8..4, 0u8..6), 0..400)) {
            let limits = Limits { max_sessions: 5, max_handshakes: 3, max_per_source: 2, ..Limits::default() };
            let mut a = Admission::new(limits);
            let mut handshakes: Vec<Option<IpAddr>> = Vec::new();
            let mut sessions: Vec<Option<IpAddr>> = Vec::new();
            for (op, who) in ops {
                let src = if who == 5 { None } else { ip(who) };
                match op {
                    0 => if a.begin_handshake(src).is_ok() { handshakes.push(src) },
                    1 => if let Some(s) = handshakes.pop() {
                        if a.may_open_session().is_ok() {
                            a.begin_session(s);
                            sessions.push(s);
                        }
                        a.end_handshake(s);
                    },
                    2 => if let Some(s) = sessions.pop() { a.end_session(s) },
                    _ => if let Some(s) = handshakes.pop() { a.end_handshake(s) },
                }
                prop_assert!(handshakes.len() <= 3 && sessions.len() <= 5);
                for n in 0..5 {
                    let held = handshakes.iter().chain(&sessions).filter(|s| **s == ip(n)).count();
                    prop_assert!(held <= 2 + 1, "{held} for one source");
                }
            }
            for s in handshakes.drain(..) { a.end_handshake(s) }
            for s in sessions.drain(..) { a.end_session(s) }
            prop_assert_eq!((a.handshakes(), a.sources()), (0, 0));
        }
    }
}
