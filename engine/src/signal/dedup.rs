//! Receiver-side duplicate suppression with bounded memory.
//!
//! Every message reaches a receiver once per broker it went through. Per
//! sender, the receiver keeps the highest sequence number seen and a bitmap
//! of the `window` numbers below it (the anti-replay window of IPsec, RFC
//! 4303 §3.4.3): constant memory per sender, whatever the run's length.
//! Senders are forgotten once idle for longer than the horizon — the TTL
//! plus clock skew — because any copy of their messages arriving later is
//! expired and dropped before it gets here; and beyond `max_senders`, the
//! least recently heard sender is forgotten first.

use super::envelope::MessageId;
use std::collections::HashMap;
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
}

/// Dedup limits.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DedupConfig {
    /// Sequence numbers remembered below the highest, per sender (a
    /// multiple of 64). Default 4096.
    pub window: u64,
    /// Senders remembered at once. Default 4096.
    pub max_senders: usize,
    /// A sender idle this long is forgotten (set it to the TTL plus the
    /// allowed clock skew). Default 60 s.
    pub horizon: Duration,
}

impl Default for DedupConfig {
    fn default() -> Self {
        DedupConfig {
            window: 4096,
            max_senders: 4096,
            horizon: Duration::from_secs(60),
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

    fn check(&mut self, seq: u64, window: u64) -> Verdict {
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
    senders: HashMap<u64, Window>,
}

impl Dedup {
    /// An empty filter.
    pub fn new(config: DedupConfig) -> Dedup {
        let window = config.window.max(64).div_ceil(64) * 64;
        Dedup {
            config: DedupConfig { window, ..config },
            senders: HashMap::new(),
        }
    }

    /// Classifies message `id` arriving at `now`.
    pub fn check(&mut self, id: MessageId, now: Instant) -> Verdict {
        if !self.senders.contains_key(&id.sender) {
            self.forget_idle(now);
            if self.senders.len() >= self.config.max_senders {
                if let Some(oldest) = self
                    .senders
                    .iter()
                    .min_by_key(|(_, w)| w.heard)
                    .map(|(s, _)| *s)
                {
                    self.senders.remove(&oldest);
                }
            }
        }
        let words = (self.config.window / 64) as usize;
        let w = self
            .senders
            .entry(id.sender)
            .or_insert_with(|| Window::new(words, now));
        w.heard = now;
        w.check(id.seq, self.config.window)
    }

    fn forget_idle(&mut self, now: Instant) {
        let horizon = self.config.horizon;
        self.senders
            .retain(|_, w| now.saturating_duration_since(w.heard) <= horizon);
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
        });
        assert_eq!(d.check(id(1, 100), t0), Verdict::New);
        assert_eq!(d.check(id(1, 36), t0), Verdict::TooOld);
        assert_eq!(d.check(id(1, 37), t0), Verdict::New);
        assert_eq!(d.check(id(2, 1), t0 + Duration::from_secs(2)), Verdict::New);
        assert_eq!(d.senders(), 1, "sender 1 was idle past the horizon");
    }
}
