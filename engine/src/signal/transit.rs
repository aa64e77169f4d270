//! How late each sender's copies arrive, without trusting its clock.
//!
//! A receiver cannot compare a sender's Unix time with its own: the two
//! may be minutes apart. But for the copies of one sender, `receipt −
//! (sent_at + age)` — the receiver's clock at arrival minus the sender's at
//! publish — is the offset between the two clocks (constant while both
//! run) plus that copy's transit. Its minimum over recent copies is the
//! offset plus the fastest transit; a copy's excess over that minimum is
//! how much longer it took than the fastest: the time a broker held it.
//! LEDBAT keeps its base delay the same way (RFC 6817 §3.4.2: minimums
//! per interval, so that a stale minimum ages out when clocks drift).
//!
//! The minimum is kept per epoch, and the base is the lower of the current
//! and the previous epoch's: drift between the two clocks can make copies
//! look late by at most what it adds up to over two epochs. A sender heard
//! again after a long silence is judged against the base it had (a copy
//! replayed then shows as late as it is); the engine's senders stamp from
//! a clock read once per endpoint and advanced monotonically, so their
//! offset does not step, and a restarted endpoint has a new id. At most
//! `max_senders` senders are remembered (least recently heard forgotten
//! first), so the table is bounded whatever ids a flood brings. A forger
//! who can write a sender's envelopes can lower its minimum and make every
//! genuine copy of that sender look late: with a group key, nobody can.

use lru::LruCache;
use std::num::NonZeroUsize;

/// One sender's offset minimums.
#[derive(Clone, Copy, Debug)]
struct Base {
    current: i64,
    previous: Option<i64>,
    epoch_start_ms: u64,
}

/// The transit estimate of one receiver.
pub(crate) struct Transit {
    epoch_ms: u64,
    senders: LruCache<u64, Base>,
}

impl Transit {
    /// At most `max_senders` senders, minimums kept per `epoch_ms`.
    pub(crate) fn new(max_senders: usize, epoch_ms: u64) -> Transit {
        Transit {
            epoch_ms: epoch_ms.max(1),
            senders: LruCache::new(NonZeroUsize::new(max_senders).unwrap_or(NonZeroUsize::MIN)),
        }
    }

    /// Notes a copy from `sender` that its clock says was published at
    /// `published_ms` and that arrived at `now_ms` on ours; returns how much
    /// later than the sender's fastest recent copy it arrived (ms, 0 for
    /// the fastest and for a sender's first copy).
    pub(crate) fn excess(&mut self, sender: u64, published_ms: u64, now_ms: u64) -> u64 {
        let offset = i64::try_from(i128::from(now_ms) - i128::from(published_ms)).unwrap_or(
            if now_ms >= published_ms {
                i64::MAX
            } else {
                i64::MIN
            },
        );
        let epoch = self.epoch_ms;
        let base = match self.senders.get_mut(&sender) {
            Some(b) => {
                let since = now_ms.saturating_sub(b.epoch_start_ms);
                if since >= epoch {
                    // After a long silence too: the old base still judges
                    // a replayed copy.
                    b.previous = Some(b.current);
                    b.current = offset;
                    b.epoch_start_ms = now_ms;
                } else {
                    b.current = b.current.min(offset);
                }
                b.previous.map_or(b.current, |p| p.min(b.current))
            }
            None => {
                self.senders.put(
                    sender,
                    Base {
                        current: offset,
                        previous: None,
                        epoch_start_ms: now_ms,
                    },
                );
                offset
            }
        };
        u64::try_from(i128::from(offset) - i128::from(base)).unwrap_or(u64::MAX)
    }

    /// Senders remembered now.
    #[cfg(test)]
    pub(crate) fn senders(&self) -> usize {
        self.senders.len()
    }
}

#[cfg(test)]
mod tests {
    use super::Transit;
    use proptest::prelude::*;

    #[test]
    fn a_copy_held_by_a_broker_shows_as_late_whatever_the_clock_offset() {
        for offset in [-3_600_000i64, -60_000, 0, 60_000, 3_600_000] {
            let mut t = Transit::new(8, 35_000);
            // The sender's clock reads `offset` ms more than ours.
            let sender_clock = |ours: u64| ours.saturating_add_signed(offset);
            let at = 1_800_000_000_000u64;
            // Copies taking 20 ms, 25 ms and 18 ms; then one held 12 s.
            assert_eq!(t.excess(1, sender_clock(at), at + 20), 0);
            assert_eq!(t.excess(1, sender_clock(at + 100), at + 125), 5);
            assert_eq!(t.excess(1, sender_clock(at + 200), at + 218), 0);
            assert_eq!(t.excess(1, sender_clock(at + 300), at + 12_318), 12_000);
            // Another sender's copies are judged against its own base.
            assert_eq!(t.excess(2, 5, at), 0);
            assert_eq!(t.excess(1, sender_clock(at + 400), at + 430), 12);
        }
    }

    #[test]
    fn drift_ages_out_within_two_epochs() {
        let mut t = Transit::new(8, 1_000);
        assert_eq!(t.excess(1, 0, 10), 0);
        // The sender's clock falls behind by 1 ms per 10 ms (an absurd
        // drift, to see it): copies seem ever later, but the base follows.
        let mut worst = 0;
        for i in 1..=1_000u64 {
            let ours = 10 + i * 10;
            let theirs = i * 10 - i;
            worst = worst.max(t.excess(1, theirs, ours));
        }
        // Over two epochs (2,000 ms) the drift adds up to 200 ms.
        assert!(worst <= 200, "{worst}");
        assert!(worst >= 100, "{worst}");
    }

    #[test]
    fn a_copy_replayed_after_a_long_silence_is_as_late_as_it_is() {
        let mut t = Transit::new(8, 1_000);
        assert_eq!(t.excess(1, 1_000, 1_010), 0);
        // An hour later a broker hands over that copy again.
        assert_eq!(t.excess(1, 1_000, 3_601_010), 3_600_000);
        // The sender's fresh copies are on time, and still are an epoch on.
        assert_eq!(t.excess(1, 3_601_500, 3_601_512), 2);
        assert_eq!(t.excess(1, 3_603_000, 3_603_010), 0);
    }

    #[test]
    fn the_table_keeps_at_most_its_bound() {
        let mut t = Transit::new(4, 1_000);
        for s in 0..1_000 {
            t.excess(s, s, s + 1);
        }
        assert_eq!(t.senders(), 4);
    }

    proptest! {
        /// Whatever the offset and the transits, the excess of a copy is
        /// its transit minus the fastest transit of the sender's copies
        /// within the last two epochs (exact when no epoch has ended).
        #[test]
        fn the_excess_is_the_transit_beyond_the_fastest(
            offset in -10_000_000i64..10_000_000,
            transits in proptest::collection::vec(0u64..60_000, 1..40),
        ) {
            let mut t = Transit::new(8, u64::MAX / 4);
            let mut fastest = u64::MAX;
            for (i, transit) in transits.iter().enumerate() {
                let ours = 1_800_000_000_000 + i as u64 * 10;
                let published = ours.saturating_add_signed(offset).saturating_sub(*transit);
                fastest = fastest.min(*transit);
                prop_assert_eq!(t.excess(9, published, ours), transit - fastest);
            }
        }
    }
}
