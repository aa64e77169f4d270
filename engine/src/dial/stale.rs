//! Serve-stale name resolution (RFC 8767): when the resolver cannot be
//! reached, the last good answer is still worth dialing — the server is
//! most likely where it was a minute ago, and a program that cannot
//! resolve its server's name cannot reconnect at all, however healthy the
//! path to the server is.
//!
//! [`StaleCache`] is the policy, sans-IO: per name, the last good answer
//! and when it came. A fresh answer (younger than
//! [`StaleConfig::fresh_for`]) is used without asking; past that, the
//! resolver is asked, and if it fails — or takes longer than
//! [`StaleConfig::client_timeout`] (RFC 8767 §5's client response timer) —
//! the stale answer is served, for at most [`StaleConfig::max_stale`]
//! after it stopped being fresh. After a failure the resolver is not asked
//! again for [`StaleConfig::failure_recheck`] (RFC 8767 §5's failure
//! recheck timer): a dead resolver does not add its timeout to every
//! reconnect attempt. An answer that the name has no address is an
//! answer, not a failure: the entry is forgotten, nothing stale is served
//! (RFC 8767 applies to failures to get an answer).
//!
//! [`Resolver`] drives it around any lookup function (the system
//! resolver by default); [`super::dial_with`] dials through it.

use crate::validate::{at_least_1ms, ConfigError};
use std::collections::HashMap;
use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Tunables of a [`StaleCache`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct StaleConfig {
    /// How long an answer is used without asking the resolver again.
    /// Default 0: every dial asks (the resolver's own cache answers
    /// quickly; a name that moved is followed at once).
    pub fresh_for: Duration,
    /// How long after it stopped being fresh an answer may still be served
    /// while the resolver fails. Default 1 day (RFC 8767 §5 suggests 1 to
    /// 3 days).
    pub max_stale: Duration,
    /// After a failed lookup, how long stale answers are served without
    /// asking again. Default 30 s (RFC 8767 §5).
    pub failure_recheck: Duration,
    /// How long a lookup may take before a stale answer is served instead.
    /// Default 1.8 s (RFC 8767 §5).
    pub client_timeout: Duration,
    /// Names remembered at once; past it the least recently used is
    /// forgotten. Default 64.
    pub max_names: usize,
}

impl Default for StaleConfig {
    fn default() -> Self {
        StaleConfig {
            fresh_for: Duration::ZERO,
            max_stale: Duration::from_secs(86_400),
            failure_recheck: Duration::from_secs(30),
            client_timeout: Duration::from_millis(1_800),
            max_names: 64,
        }
    }
}

impl StaleConfig {
    /// Checks every field.
    ///
    /// # Errors
    ///
    /// [`ConfigError`] naming the field: a client timeout under 1 ms, or
    /// no name to remember.
    pub fn validate(&self) -> Result<(), ConfigError> {
        at_least_1ms("StaleConfig::client_timeout", self.client_timeout)?;
        if self.max_names == 0 {
            return Err(ConfigError::new(
                "StaleConfig::max_names",
                "must be at least 1",
            ));
        }
        Ok(())
    }
}

/// What to do for a name now.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Plan {
    /// Use these addresses; no lookup.
    Use(Vec<SocketAddr>),
    /// Ask the resolver. With a deadline, a stale answer is there: when the
    /// lookup has not answered by then, call [`StaleCache::handle_timeout`].
    Lookup {
        /// When to give up on the lookup and serve the stale answer.
        deadline: Option<Instant>,
    },
}

/// One name's last good answer.
#[derive(Clone, Debug)]
struct Entry {
    addrs: Vec<SocketAddr>,
    fetched: Instant,
    /// The last failed lookup, if it came after the answer.
    failed: Option<Instant>,
    used: Instant,
}

/// The serve-stale policy for a set of names (see the module doc).
#[derive(Debug)]
pub struct StaleCache {
    config: StaleConfig,
    /// At most `max_names`.
    names: HashMap<String, Entry>,
}

impl StaleCache {
    /// An empty cache.
    ///
    /// # Errors
    ///
    /// As [`StaleConfig::validate`].
    pub fn new(config: StaleConfig) -> Result<StaleCache, ConfigError> {
        config.validate()?;
        Ok(StaleCache {
            config,
            names: HashMap::new(),
        })
    }

    fn servable(&self, e: &Entry, now: Instant) -> bool {
        let until = e
            .fetched
            .checked_add(self.config.fresh_for)
            .and_then(|t| t.checked_add(self.config.max_stale));
        until.is_none_or(|t| now < t)
    }

    /// What to do for `name` at `now`.
    pub fn poll(&mut self, now: Instant, name: &str) -> Plan {
        let config = self.config;
        let Some(e) = self.names.get(name).cloned() else {
            return Plan::Lookup { deadline: None };
        };
        let fresh = e
            .fetched
            .checked_add(config.fresh_for)
            .is_none_or(|t| now < t);
        let rechecking = e
            .failed
            .and_then(|f| f.checked_add(config.failure_recheck))
            .is_some_and(|t| now < t);
        let servable = self.servable(&e, now);
        if let Some(entry) = self.names.get_mut(name) {
            entry.used = now;
        }
        if fresh || (rechecking && servable) {
            return Plan::Use(e.addrs);
        }
        if servable {
            return Plan::Lookup {
                deadline: now.checked_add(config.client_timeout),
            };
        }
        // Too old to serve: forget it.
        self.names.remove(name);
        Plan::Lookup { deadline: None }
    }

    /// The lookup for `name` ended at `now` with `answer`: the addresses
    /// to dial — the answer, or the stale one when the lookup failed.
    ///
    /// # Errors
    ///
    /// The lookup's error when there is nothing stale to serve.
    pub fn handle_answer(
        &mut self,
        now: Instant,
        name: &str,
        answer: io::Result<Vec<SocketAddr>>,
    ) -> io::Result<Vec<SocketAddr>> {
        match answer {
            Ok(addrs) if addrs.is_empty() => {
                // The name has no address: an answer, not a failure.
                self.names.remove(name);
                Ok(addrs)
            }
            Ok(addrs) => {
                self.insert(now, name, addrs.clone());
                Ok(addrs)
            }
            Err(e) => self.stale(now, name).ok_or(e),
        }
    }

    /// The lookup for `name` passed its deadline at `now`: the stale answer,
    /// if one may be served.
    pub fn handle_timeout(&mut self, now: Instant, name: &str) -> Option<Vec<SocketAddr>> {
        self.stale(now, name)
    }

    fn stale(&mut self, now: Instant, name: &str) -> Option<Vec<SocketAddr>> {
        let e = self.names.get(name)?;
        if !self.servable(e, now) {
            self.names.remove(name);
            return None;
        }
        let e = self.names.get_mut(name)?;
        e.failed = Some(now);
        e.used = now;
        tracing::debug!(name, "resolver failed: serving the last good answer");
        Some(e.addrs.clone())
    }

    fn insert(&mut self, now: Instant, name: &str, addrs: Vec<SocketAddr>) {
        if !self.names.contains_key(name) && self.names.len() >= self.config.max_names {
            // O(max_names), only when a new name comes to a full cache.
            let oldest = self
                .names
                .iter()
                .min_by_key(|(_, e)| e.used)
                .map(|(n, _)| n.clone());
            if let Some(oldest) = oldest {
                self.names.remove(&oldest);
            }
        }
        self.names.insert(
            name.to_string(),
            Entry {
                addrs,
                fetched: now,
                failed: None,
                used: now,
            },
        );
    }

    /// Names remembered now.
    pub fn len(&self) -> usize {
        self.names.len()
    }

    /// Whether no name is remembered.
    pub fn is_empty(&self) -> bool {
        self.names.is_empty()
    }
}

/// A resolver that serves stale answers (a [`StaleCache`] around a lookup
/// function); share one per program.
#[derive(Debug)]
pub struct Resolver {
    cache: Mutex<StaleCache>,
}

fn now() -> Instant {
    // tokio's clock: virtual under turmoil and paused tests.
    tokio::time::Instant::now().into_std()
}

impl Resolver {
    /// A resolver with an empty cache.
    ///
    /// # Errors
    ///
    /// As [`StaleConfig::validate`].
    pub fn new(config: StaleConfig) -> Result<Resolver, ConfigError> {
        Ok(Resolver {
            cache: Mutex::new(StaleCache::new(config)?),
        })
    }

    fn cache(&self) -> std::sync::MutexGuard<'_, StaleCache> {
        self.cache.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The addresses of `host:port`: by `lookup` when the policy says to
    /// ask, else (or when it fails or is too slow, and an answer not too
    /// old is there) the last good answer.
    ///
    /// # Errors
    ///
    /// The lookup's error (`TimedOut` past the client timeout) when there is
    /// nothing stale to serve.
    ///
    /// # Cancel safety
    ///
    /// Cancel safe: dropping the future drops the lookup; the cache is
    /// only changed once an answer or a timeout is in.
    pub async fn resolve<F, Fut>(
        &self,
        host: &str,
        port: u16,
        lookup: F,
    ) -> io::Result<Vec<SocketAddr>>
    where
        F: FnOnce() -> Fut,
        Fut: Future<Output = io::Result<Vec<SocketAddr>>>,
    {
        let name = format!("{host}:{port}");
        let plan = self.cache().poll(now(), &name);
        match plan {
            Plan::Use(addrs) => Ok(addrs),
            Plan::Lookup { deadline: None } => {
                let answer = lookup().await;
                self.cache().handle_answer(now(), &name, answer)
            }
            Plan::Lookup {
                deadline: Some(deadline),
            } => match tokio::time::timeout_at(deadline.into(), lookup()).await {
                Ok(answer) => self.cache().handle_answer(now(), &name, answer),
                Err(_) => self.cache().handle_timeout(now(), &name).ok_or_else(|| {
                    io::Error::new(io::ErrorKind::TimedOut, "the resolver did not answer")
                }),
            },
        }
    }

    /// [`Resolver::resolve`] with the system resolver.
    ///
    /// # Errors
    ///
    /// As [`Resolver::resolve`].
    ///
    /// # Cancel safety
    ///
    /// Cancel safe, as [`Resolver::resolve`].
    pub async fn system(&self, host: &str, port: u16) -> io::Result<Vec<SocketAddr>> {
        self.resolve(host, port, || async move {
            tokio::net::lookup_host((host, port))
                .await
                .map(Iterator::collect)
        })
        .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::net::{IpAddr, Ipv4Addr};

    fn addr(n: u8) -> SocketAddr {
        SocketAddr::new(IpAddr::V4(Ipv4Addr::new(198, 18, 0, n)), 7000)
    }

    fn config() -> StaleConfig {
        StaleConfig {
            fresh_for: Duration::from_secs(10),
            max_stale: Duration::from_secs(60),
            failure_recheck: Duration::from_secs(30),
            client_timeout: Duration::from_millis(1_800),
            max_names: 4,
        }
    }

    fn refused() -> io::Error {
        io::Error::new(io::ErrorKind::TimedOut, "no resolver")
    }

    #[test]
    fn a_dead_resolver_is_answered_from_the_last_good_answer_within_max_stale() {
        let t0 = Instant::now();
        let at = |s: u64| t0 + Duration::from_secs(s);
        let mut c = StaleCache::new(config()).unwrap();
        assert_eq!(c.poll(t0, "s"), Plan::Lookup { deadline: None });
        assert_eq!(
            c.handle_answer(t0, "s", Ok(vec![addr(1)])).unwrap(),
            vec![addr(1)]
        );
        // Fresh: no lookup.
        assert_eq!(c.poll(at(9), "s"), Plan::Use(vec![addr(1)]));
        // Stale: ask, with a deadline for the stale answer.
        assert_eq!(
            c.poll(at(10), "s"),
            Plan::Lookup {
                deadline: Some(at(10) + Duration::from_millis(1_800))
            }
        );
        assert_eq!(
            c.handle_answer(at(10), "s", Err(refused())).unwrap(),
            vec![addr(1)]
        );
        // Within the failure recheck: served without asking.
        assert_eq!(c.poll(at(39), "s"), Plan::Use(vec![addr(1)]));
        // Past it: asked again; a slow resolver is answered stale.
        assert!(matches!(
            c.poll(at(40), "s"),
            Plan::Lookup { deadline: Some(_) }
        ));
        assert_eq!(c.handle_timeout(at(42), "s"), Some(vec![addr(1)]));
        // 70 s after the answer (10 fresh + 60 stale): nothing to serve.
        assert_eq!(c.poll(at(70), "s"), Plan::Lookup { deadline: None });
        let e = c.handle_answer(at(70), "s", Err(refused())).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::TimedOut);
        assert!(c.is_empty());
    }

    #[test]
    fn a_new_answer_replaces_the_old_and_no_address_is_an_answer() {
        let t0 = Instant::now();
        let mut c = StaleCache::new(config()).unwrap();
        c.handle_answer(t0, "s", Ok(vec![addr(1)])).unwrap();
        let later = t0 + Duration::from_secs(20);
        assert!(matches!(c.poll(later, "s"), Plan::Lookup { .. }));
        assert_eq!(
            c.handle_answer(later, "s", Ok(vec![addr(2)])).unwrap(),
            vec![addr(2)]
        );
        assert_eq!(c.poll(later, "s"), Plan::Use(vec![addr(2)]));
        // The name is gone (NXDOMAIN, no address): nothing stale after.
        let gone = later + Duration::from_secs(20);
        assert_eq!(c.handle_answer(gone, "s", Ok(vec![])).unwrap(), vec![]);
        assert_eq!(
            c.handle_answer(gone, "s", Err(refused()))
                .unwrap_err()
                .kind(),
            io::ErrorKind::TimedOut
        );
    }

    #[test]
    fn it_remembers_at_most_max_names_least_recently_used_forgotten() {
        let t0 = Instant::now();
        let mut c = StaleCache::new(config()).unwrap();
        for n in 0..4u8 {
            c.handle_answer(
                t0 + Duration::from_secs(n.into()),
                &format!("n{n}"),
                Ok(vec![addr(n)]),
            )
            .unwrap();
        }
        // n0 used again: n1 is now the least recently used.
        assert_eq!(
            c.poll(t0 + Duration::from_secs(5), "n0"),
            Plan::Use(vec![addr(0)])
        );
        c.handle_answer(t0 + Duration::from_secs(6), "n9", Ok(vec![addr(9)]))
            .unwrap();
        assert_eq!(c.len(), 4);
        assert_eq!(
            c.poll(t0 + Duration::from_secs(6), "n1"),
            Plan::Lookup { deadline: None }
        );
        assert_eq!(
            c.poll(t0 + Duration::from_secs(6), "n0"),
            Plan::Use(vec![addr(0)])
        );
    }

    #[test]
    fn bad_config_is_refused_by_field() {
        let e = StaleCache::new(StaleConfig {
            max_names: 0,
            ..StaleConfig::default()
        })
        .unwrap_err();
        assert_eq!(e.field, "StaleConfig::max_names");
        let e = Resolver::new(StaleConfig {
            client_timeout: Duration::ZERO,
            ..StaleConfig::default()
        })
        .unwrap_err();
        assert_eq!(e.field, "StaleConfig::client_timeout");
    }

    /// A resolver that dies after its first answer: the driver serves the
    /// stale answer at once within the recheck, and after the client
    /// timeout when the resolver hangs.
    #[tokio::test(start_paused = true)]
    async fn the_driver_serves_stale_when_the_resolver_fails_or_hangs() {
        let r = Resolver::new(StaleConfig {
            fresh_for: Duration::ZERO,
            failure_recheck: Duration::from_secs(5),
            ..StaleConfig::default()
        })
        .unwrap();
        let ok = r
            .resolve("s", 7000, || async { Ok(vec![addr(1)]) })
            .await
            .unwrap();
        assert_eq!(ok, vec![addr(1)]);
        let t = tokio::time::Instant::now();
        let hung = r
            .resolve("s", 7000, || {
                std::future::pending::<io::Result<Vec<SocketAddr>>>()
            })
            .await
            .unwrap();
        assert_eq!(hung, vec![addr(1)]);
        assert_eq!(t.elapsed(), Duration::from_millis(1_800));
        // Within the recheck: no lookup at all.
        let served = r
            .resolve("s", 7000, || async { panic!("asked within the recheck") })
            .await
            .unwrap();
        assert_eq!(served, vec![addr(1)]);
        // Another port is another name: nothing to serve.
        let e = r
            .resolve("s", 7001, || async { Err(refused()) })
            .await
            .unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::TimedOut);
    }

    /// Dropping a resolve mid-lookup changes nothing: the next one asks
    /// again, and the stale answer is still there to serve.
    #[tokio::test(start_paused = true)]
    async fn a_cancelled_resolve_leaves_the_cache_as_it_was() {
        let r = Resolver::new(StaleConfig::default()).unwrap();
        r.resolve("s", 7000, || async { Ok(vec![addr(1)]) })
            .await
            .unwrap();
        let hung = r.resolve("s", 7000, || {
            std::future::pending::<io::Result<Vec<SocketAddr>>>()
        });
        assert!(tokio::time::timeout(Duration::from_millis(500), hung)
            .await
            .is_err());
        // No failure was recorded: the next call asks (and gets a new answer).
        let asked = r
            .resolve("s", 7000, || async { Ok(vec![addr(2)]) })
            .await
            .unwrap();
        assert_eq!(asked, vec![addr(2)]);
        // Another cancelled lookup, then a failing one: the stale answer is served.
        let hung = r.resolve("s", 7000, || {
            std::future::pending::<io::Result<Vec<SocketAddr>>>()
        });
        assert!(tokio::time::timeout(Duration::from_millis(500), hung)
            .await
            .is_err());
        let served = r
            .resolve("s", 7000, || async { Err(refused()) })
            .await
            .unwrap();
        assert_eq!(served, vec![addr(2)]);
    }

    #[derive(Clone, Debug)]
    enum Step {
        /// Time passes (ms), then a dial: the resolver answers this address,
        /// fails, or hangs.
        Dial {
            after_ms: u32,
            answer: Option<Option<u8>>,
        },
    }

    fn step() -> impl Strategy<Value = Step> {
        (
            0u32..40_000,
            proptest::option::of(proptest::option::of(0u8..4)),
        )
            .prop_map(|(after_ms, answer)| Step::Dial { after_ms, answer })
    }

    proptest! {
        /// Whatever the resolver does and whenever: what is used is always
        /// the latest good answer; no lookup while it is fresh or within
        /// the recheck after a failure; a stale answer only within
        /// `max_stale` of its freshness ending; a failure with nothing
        /// servable is the lookup's error.
        #[test]
        fn stale_answers_follow_rfc_8767(steps in proptest::collection::vec(step(), 1..60)) {
            let cfg = config();
            let mut c = StaleCache::new(cfg).unwrap();
            let t0 = Instant::now();
            let mut now = t0;
            let mut last_good: Option<(Instant, Vec<SocketAddr>)> = None;
            let mut last_failure: Option<Instant> = None;
            for Step::Dial { after_ms, answer } in steps {
                now += Duration::from_millis(u64::from(after_ms));
                let servable_at = |last: &Option<(Instant, Vec<SocketAddr>)>, t: Instant| {
                    last.as_ref().is_some_and(|(f, _)| t < *f + cfg.fresh_for + cfg.max_stale)
                };
                let fresh = last_good.as_ref().is_some_and(|(t, _)| now < *t + cfg.fresh_for);
                let servable = servable_at(&last_good, now);
                let rechecking = last_failure.is_some_and(|f| now < f + cfg.failure_recheck);
                let (got, looked_up) = match c.poll(now, "s") {
                    Plan::Use(a) => {
                        prop_assert!(fresh || (servable && rechecking), "used without cause");
                        (Ok(a), false)
                    }
                    Plan::Lookup { deadline } => {
                        prop_assert!(!fresh);
                        prop_assert_eq!(deadline.is_some(), servable);
                        let got = match (answer, deadline) {
                            (Some(Some(n)), _) => c.handle_answer(now, "s", Ok(vec![addr(n)])),
                            (Some(None), _) | (None, None) => c.handle_answer(now, "s", Err(refused())),
                            (None, Some(d)) => {
                                // The lookup hangs until the deadline.
                                now = d;
                                c.handle_timeout(d, "s").ok_or_else(refused)
                            }
                        };
                        (got, true)
                    }
                };
                match (got, looked_up, answer) {
                    (Ok(a), true, Some(Some(n))) => {
                        prop_assert_eq!(&a, &vec![addr(n)]);
                        last_good = Some((now, a));
                        last_failure = None;
                    }
                    (Ok(a), looked_up, _) => {
                        let good = last_good.as_ref().map(|(_, g)| g.clone());
                        prop_assert_eq!(Some(a), good, "served what was not the last answer");
                        if looked_up {
                            prop_assert!(servable_at(&last_good, now));
                            last_failure = Some(now);
                        }
                    }
                    (Err(_), _, _) => {
                        prop_assert!(!servable_at(&last_good, now));
                        last_good = None;
                        last_failure = None;
                    }
                }
            }
            prop_assert!(c.len() <= 1);
        }
    }
}
