//! Receiver-side duplicate suppression with bounded memory.
//!
//! Every message reaches a receiver once per broker it went through. Per
//! sender, the receiver keeps the highest sequence number seen and a bitmap
//! of the `window` numbers below it (the anti-replay window of IPsec, RFC
//! 4303 §3.4.3): constant memory per sender, whatever the run's length.
//! Senders are forgotten once idle for longer than the horizon — the TTL
//! plus twice the delay tolerance — because any copy of their messages arriving
//! later is expired and dropped before it gets here (the core's transit
//! estimate, which remembers senders longer, sees it that late); and beyond `max_senders`, the
//! least recently heard sender is forgotten first. Senders are kept in an
//! LRU list (the `lru` crate: a hash map threaded with a linked list), so
//! every lookup, admission and eviction is O(1) however many senders a
//! flood of forged ids brings.
//!
//! A known sender's sequence number may move ahead by at most `max_jump`
//! at once: a number beyond that is implausible (no sender sends that many
//! messages between two that reach us) and is dropped without moving the
//! window, so one forged `seq = u64::MAX` cannot make the sender's real
//! messages look old. Against forgeries in general the answer is a group
//! key ([`SignalKey`](super::envelope::SignalKey)): forged envelopes then
//! fail their MAC before they reach this filter.

use super::envelope::MessageId;
use lru::LruCache;
use std::num::NonZeroUsize;
use std::time::{Duration, Instant};

/// What to do with a message.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// First copy: deliver.
    New,
    /// Already delivered: drop.
    Duplicate,
    /// Older than the window: cannot be told apart from a duplicate; drop.
    TooOld,
    /// Further ahead of the sender's highest number than `max_jump`: drop,
    /// and leave the window as it was.
    Implausible,
}

/// Dedup limits.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DedupConfig {
    /// Sequence numbers remembered below the highest, per sender (a
    /// multiple of 64). Default 4096.
    pub window: u64,
    /// Senders remembered at once. Default 4096.
    pub max_senders: usize,
    /// A sender idle this long is forgotten (the core sets it to the TTL
    /// plus twice its delay tolerance). Default 60 s.
    pub horizon: Duration,
    /// How far a known sender's sequence number may move ahead at once.
    /// Default 1,048,576.
    pub max_jump: u64,
}

impl Default for DedupConfig {
    fn default() -> Self {
        DedupConfig {
            window: 4096,
            max_senders: 4096,
            horizon: Duration::from_secs(60),
            max_jump: 1 << 20,
        }
    }
}

struct Window {
    highest: u64,
    /// Bit `i` of the ring set: `highest - i` was seen.
    bits: Vec<u64>,
    heard: Instant,
}

impl Window {
    fn new(words: usize, now: Instant) -> Window {
        Window {
            highest: 0,
            bits: vec![0; words],
            heard: now,
        }
    }

    fn slot(&self, seq: u64) -> (usize, u64) {
        let i = seq % (self.bits.len() as u64 * 64);
        ((i / 64) as usize, 1 << (i % 64))
    }

    fn check(&mut self, seq: u64, window: u64, max_jump: u64) -> Verdict {
        if seq > self.highest.saturating_add(max_jump) {
            return Verdict::Implausible;
        }
        if seq > self.highest {
            // Clear the slots the window slides over.
            let shift = (seq - self.highest).min(window);
            for s in 1..=shift {
                let (w, b) = self.slot(self.highest + s);
                self.bits[w] &= !b;
            }
            self.highest = seq;
            let (w, b) = self.slot(seq);
            self.bits[w] |= b;
            return Verdict::New;
        }
        if self.highest - seq >= window {
            return Verdict::TooOld;
        }
        let (w, b) = self.slot(seq);
        if self.bits[w] & b != 0 {
            Verdict::Duplicate
        } else {
            self.bits[w] |= b;
            Verdict::New
        }
    }
}

/// The dedup state of one receiver.
pub struct Dedup {
    config: DedupConfig,
    /// Least recently heard first.
    senders: LruCache<u64, Window>,
}

impl Dedup {
    /// An empty filter.
    pub fn new(config: DedupConfig) -> Dedup {
        let window = config.window.max(64).div_ceil(64) * 64;
        let capacity = NonZeroUsize::new(config.max_senders).unwrap_or(NonZeroUsize::MIN);
        Dedup {
            config: DedupConfig { window, ..config },
            senders: LruCache::new(capacity),
        }
    }

    /// Classifies message `id` arriving at `now`. O(1).
    pub fn check(&mut self, id: MessageId, now: Instant) -> Verdict {
        let (window, max_jump) = (self.config.window, self.config.max_jump);
        if let Some(w) = self.senders.get_mut(&id.sender) {
            w.heard = now;
            return w.check(id.seq, window, max_jump);
        }
        self.forget_idle(now);
        let mut w = Window::new((window / 64) as usize, now);
        // A first message starts the window wherever it is.
        w.highest = id.seq.saturating_sub(1);
        let verdict = w.check(id.seq, window, max_jump);
        // Full: the least recently heard sender goes.
        self.senders.push(id.sender, w);
        verdict
    }

    /// Forgets senders idle past the horizon, oldest first (O(1) each).
    fn forget_idle(&mut self, now: Instant) {
        let horizon = self.config.horizon;
        while let Some((_, w)) = self.senders.peek_lru() {
            if now.saturating_duration_since(w.heard) <= horizon {
                break;
            }
            self.senders.pop_lru();
        }
    }

    /// Senders remembered now.
    pub fn senders(&self) -> usize {
        self.senders.len()
    }

    /// Bytes of state held now (the bound is `max_senders` times
    /// `window / 8` plus per-entry overhead).
    pub fn memory_bytes(&self) -> usize {
        self.senders.len() * (self.config.window as usize / 8 + std::mem::size_of::<Window>() + 8)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn id(sender: u64, seq: u64) -> MessageId {
        MessageId { sender, seq }
    }

    proptest! {
        /// Whatever the interleaving of copies (each message through 1–3
        /// brokers, shuffled within the window), every message is delivered
        /// exactly once.
        #[test]
        fn every_message_passes_exactly_once(
            copies in proptest::collection::vec(1usize..4, 1..400),
            order in any::<u64>(),
        ) {
            let t = Instant::now();
            let mut arrivals: Vec<(usize, MessageId)> = Vec::new();
            for (i, n) in copies.iter().enumerate() {
                for k in 0..*n {
                    // Broker k delays by k·7 positions: copies interleave.
                    arrivals.push((i * 3 + k * 7 + (order as usize % 5), id(1, i as u64 + 1)));
                }
            }
            arrivals.sort_by_key(|(at, _)| *at);
            let mut d = Dedup::new(DedupConfig::default());
            let mut delivered = vec![0u32; copies.len()];
            for (_, m) in arrivals {
                if d.check(m, t) == Verdict::New {
                    delivered[(m.seq - 1) as usize] += 1;
                }
            }
            prop_assert!(delivered.iter().all(|n| *n == 1), "{delivered:?}");
        }
    }

    #[test]
    fn memory_stays_bounded_over_a_hundred_thousand_messages() {
        let config = DedupConfig {
            window: 1024,
            max_senders: 64,
            horizon: Duration::from_secs(30),
            ..DedupConfig::default()
        };
        let mut d = Dedup::new(config);
        let t0 = Instant::now();
        let mut peak = 0;
        for i in 0..100_000u64 {
            // 500 senders take turns; each message arrives twice.
            let m = id(i % 500, i / 500 + 1);
            let now = t0 + Duration::from_millis(i);
            assert_eq!(d.check(m, now), Verdict::New);
            assert_eq!(d.check(m, now), Verdict::Duplicate);
            peak = peak.max(d.memory_bytes());
        }
        assert!(d.senders() <= 64);
        let bound = 64 * (1024 / 8 + std::mem::size_of::<Window>() + 8);
        assert!(peak <= bound, "{peak} > {bound}");
    }

    #[test]
    fn idle_senders_are_forgotten_after_the_horizon_and_old_numbers_are_refused() {
        let t0 = Instant::now();
        let mut d = Dedup::new(DedupConfig {
            window: 64,
            max_senders: 10,
            horizon: Duration::from_secs(1),
            ..DedupConfig::default()
        });
        assert_eq!(d.check(id(1, 100), t0), Verdict::New);
        assert_eq!(d.check(id(1, 36), t0), Verdict::TooOld);
        assert_eq!(d.check(id(1, 37), t0), Verdict::New);
        assert_eq!(d.check(id(2, 1), t0 + Duration::from_secs(2)), Verdict::New);
        assert_eq!(d.senders(), 1, "sender 1 was idle past the horizon");
    }

    #[test]
    fn a_forged_huge_sequence_number_does_not_silence_the_sender() {
        let t = Instant::now();
        let mut d = Dedup::new(DedupConfig::default());
        assert_eq!(d.check(id(9, 1), t), Verdict::New);
        assert_eq!(d.check(id(9, u64::MAX), t), Verdict::Implausible);
        for seq in 2..=100 {
            assert_eq!(d.check(id(9, seq), t), Verdict::New, "seq {seq}");
        }
    }

    #[test]
    fn senders_are_admitted_and_evicted_least_recently_heard_first() {
        let t0 = Instant::now();
        let mut d = Dedup::new(DedupConfig {
            max_senders: 3,
            ..DedupConfig::default()
        });
        for s in 1..=3 {
            assert_eq!(d.check(id(s, 1), t0), Verdict::New);
        }
        // Sender 1 is heard again: sender 2 is now the least recent.
        assert_eq!(d.check(id(1, 2), t0), Verdict::New);
        assert_eq!(d.check(id(4, 1), t0), Verdict::New);
        assert_eq!(d.senders(), 3);
        assert_eq!(d.check(id(1, 2), t0), Verdict::Duplicate, "1 kept");
        assert_eq!(d.check(id(3, 1), t0), Verdict::Duplicate, "3 kept");
    }
}
