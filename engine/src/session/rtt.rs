//! Round-trip time of a session's path, estimated as TCP does (RFC 6298),
//! and the send times the samples come from.
//!
//! A session's timers that wait for the peer — the silent-path timer, the
//! stall timer on unacknowledged data, the handshake and connect timeouts
//! — are configured for the path the application expects. A path whose
//! round trip grows past them (a bloated buffer filling under load, a
//! fallback to a satellite or congested cellular link) is slow, not dead:
//! each timer waits at least the retransmission timeout RFC 6298 computes
//! from the measured round trips, `SRTT + 4·RTTVAR`, so a session follows
//! its path's round trip instead of reconnecting again and again on it.
//!
//! Written here rather than taken from a crate: the estimator is a dozen
//! lines of RFC 6298, and the samples depend on this protocol's
//! acknowledgements (stream positions, not packets).

use std::collections::VecDeque;
use std::time::{Duration, Instant};

/// Upper bound of the timeout (RFC 6298 (2.5) allows a maximum of at
/// least 60 s).
pub const MAX_RTO: Duration = Duration::from_secs(60);

/// Clock granularity `G` of RFC 6298 (2.2): the least `4·RTTVAR` counts.
const GRANULARITY: Duration = Duration::from_millis(1);

/// Smoothed round-trip time and its variation (RFC 6298 section 2).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RttEstimator {
    /// `SRTT` and `RTTVAR`, once a sample was taken.
    state: Option<(Duration, Duration)>,
}

impl RttEstimator {
    /// Takes one round-trip measurement `r` (counted as at most
    /// [`MAX_RTO`], which also keeps the arithmetic far from overflow).
    pub fn on_sample(&mut self, r: Duration) {
        let r = r.min(MAX_RTO);
        self.state = Some(match self.state {
            // (2.2) the first measurement.
            None => (r, r / 2),
            // (2.3) α = 1/8, β = 1/4; RTTVAR is updated with the SRTT
            // before this sample, as the RFC requires.
            Some((srtt, rttvar)) => {
                let deviation = srtt.abs_diff(r);
                let rttvar = (rttvar * 3 + deviation) / 4;
                let srtt = (srtt * 7 + r) / 8;
                (srtt, rttvar)
            }
        });
    }

    /// The smoothed round-trip time, once measured.
    pub fn srtt(&self) -> Option<Duration> {
        self.state.map(|(srtt, _)| srtt)
    }

    /// `SRTT + max(G, 4·RTTVAR)`, at most [`MAX_RTO`]; `None` before the
    /// first sample. (RFC 6298's 1 s floor is for retransmissions; here
    /// the configured timers are the floor.)
    pub fn rto(&self) -> Option<Duration> {
        self.state.map(|(srtt, rttvar)| {
            srtt.saturating_add(rttvar.saturating_mul(4).max(GRANULARITY))
                .min(MAX_RTO)
        })
    }

    /// `floor`, or the timeout when the path's round trip needs more.
    pub fn at_least(&self, floor: Duration) -> Duration {
        self.rto().map_or(floor, |rto| rto.max(floor))
    }
}

/// Most send times a transport keeps: a record is only added once
/// [`SendTimes::spacing`] passed since the last, so 64 records cover about
/// two round trips of data in flight; data sent while all are in use has
/// no record (its age is taken from the acknowledgement before it, which
/// never overstates it).
pub const MAX_SEND_TIMES: usize = 64;

/// When the data in flight on one transport was sent: the source of round
/// trip samples and of the age of the oldest unacknowledged byte.
///
/// Each record `(end, at)` says that every byte below stream position
/// `end` (and above the previous record's) was handed to the transport by
/// `at`. Ages read from it can only be understated (a record's time is
/// that of its last byte), so a stall is never declared early.
#[derive(Clone, Debug)]
pub struct SendTimes {
    records: VecDeque<(u64, Instant)>,
    /// When the acknowledged position last moved on this transport (or the
    /// transport began): the send time assumed for data without a record.
    progress_at: Instant,
}

impl SendTimes {
    /// No data in flight, as on a new transport at `now`.
    pub fn new(now: Instant) -> Self {
        Self {
            records: VecDeque::new(),
            progress_at: now,
        }
    }

    /// The least time between two records: 1/32 of the round trip (at
    /// least 1 ms), so that records stay within [`MAX_SEND_TIMES`] and a
    /// sample overstates the round trip by at most that much.
    fn spacing(rtt: &RttEstimator) -> Duration {
        rtt.srtt()
            .map_or(Duration::ZERO, |srtt| srtt / 32)
            .max(Duration::from_millis(1))
    }

    /// Data up to stream position `end` was handed to the transport at
    /// `now`.
    pub fn on_sent(&mut self, now: Instant, end: u64, rtt: &RttEstimator) {
        let due = self
            .records
            .back()
            .is_none_or(|&(_, at)| now.saturating_duration_since(at) >= Self::spacing(rtt));
        if due && self.records.len() < MAX_SEND_TIMES {
            self.records.push_back((end, now));
        }
    }

    /// The peer acknowledged everything below `acked` at `now` (after
    /// having acknowledged `before`): drops the records it covers and, when
    /// it covers one, returns the round trip of that record's last byte.
    pub fn on_acked(&mut self, now: Instant, before: u64, acked: u64) -> Option<Duration> {
        if acked <= before {
            return None;
        }
        self.progress_at = now;
        let mut sample = None;
        while let Some(&(end, at)) = self.records.front() {
            if end > acked {
                break;
            }
            sample = Some(now.saturating_duration_since(at));
            self.records.pop_front();
        }
        sample
    }

    /// When the oldest byte still unacknowledged was sent, at the latest;
    /// `None` when nothing sent is unacknowledged (`acked` ≥ `sent`).
    pub fn oldest_unacked(&self, acked: u64, sent: u64) -> Option<Instant> {
        if acked >= sent {
            return None;
        }
        // The first record above `acked` covers the oldest byte (sent by
        // its time); data without a record was sent before the last
        // progress (records are only skipped while all are in use, and an
        // acknowledgement frees them).
        Some(
            self.records
                .iter()
                .find(|&&(end, _)| end > acked)
                .map_or(self.progress_at, |&(_, at)| at),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const MS: Duration = Duration::from_millis(1);

    #[test]
    fn the_first_sample_sets_srtt_and_half_of_it_as_variation() {
        let mut e = RttEstimator::default();
        assert_eq!((e.srtt(), e.rto()), (None, None));
        assert_eq!(e.at_least(MS * 700), MS * 700);
        e.on_sample(MS * 100);
        // SRTT 100 ms, RTTVAR 50 ms: RTO = 100 + 4·50.
        assert_eq!(e.srtt(), Some(MS * 100));
        assert_eq!(e.rto(), Some(MS * 300));
        assert_eq!(e.at_least(MS * 200), MS * 300);
        assert_eq!(e.at_least(MS * 700), MS * 700);
    }

    #[test]
    fn later_samples_follow_rfc_6298_arithmetic() {
        let mut e = RttEstimator::default();
        e.on_sample(MS * 100);
        e.on_sample(MS * 180);
        // RTTVAR = 3/4·50 + 1/4·|100 − 180| = 57.5; SRTT = 7/8·100 + 1/8·180 = 110.
        assert_eq!(e.srtt(), Some(MS * 110));
        assert_eq!(e.rto(), Some(MS * 110 + Duration::from_micros(57_500) * 4));
    }

    #[test]
    fn the_timeout_is_capped() {
        let mut e = RttEstimator::default();
        e.on_sample(Duration::from_secs(1000));
        assert_eq!(e.rto(), Some(MAX_RTO));
        e.on_sample(Duration::MAX);
        assert_eq!(e.rto(), Some(MAX_RTO));
    }

    #[test]
    fn a_ramp_of_round_trips_stays_under_the_timeout() {
        // A buffer filling under a steady path: the round trip grows 20 ms
        // per sample from 10 ms to 2 s (a sample per acknowledgement,
        // every ~10 ms, is a growth of 2 s per second). The wait computed
        // before each sample, with a 200 ms floor, must cover it, or a
        // stall timer would fire on a path that is only getting slower.
        // (Without the floor the first steps would not be: RFC 6298 lags
        // a ramp by 8 steps and its 4·RTTVAR covers 32 once settled.)
        let floor = MS * 200;
        let mut e = RttEstimator::default();
        let mut r = MS * 10;
        for _ in 0..20 {
            e.on_sample(r);
        }
        while r < Duration::from_secs(2) {
            r += MS * 20;
            let wait = e.at_least(floor);
            assert!(wait >= r, "wait {wait:?} below the sample {r:?}");
            e.on_sample(r);
        }
    }

    #[test]
    fn samples_come_from_the_record_an_acknowledgement_covers() {
        let t0 = Instant::now();
        let rtt = RttEstimator::default();
        let mut s = SendTimes::new(t0);
        s.on_sent(t0, 100, &rtt);
        s.on_sent(t0 + MS * 10, 200, &rtt);
        assert_eq!(s.oldest_unacked(0, 200), Some(t0));
        // Half of the first record: no sample, the oldest byte is its
        // (acknowledgements that move do not make old data young).
        assert_eq!(s.on_acked(t0 + MS * 40, 0, 50), None);
        assert_eq!(s.oldest_unacked(50, 200), Some(t0));
        // Both records: the sample is the last one's.
        assert_eq!(s.on_acked(t0 + MS * 60, 50, 200), Some(MS * 50));
        assert_eq!(s.oldest_unacked(200, 200), None);
        // No progress, no sample.
        assert_eq!(s.on_acked(t0 + MS * 70, 200, 200), None);
    }

    #[test]
    fn records_are_spaced_and_bounded() {
        let t0 = Instant::now();
        let rtt = RttEstimator::default();
        let mut s = SendTimes::new(t0);
        // Within a millisecond of the last record: no new one.
        s.on_sent(t0, 10, &rtt);
        s.on_sent(t0 + Duration::from_micros(500), 20, &rtt);
        assert_eq!(s.records.len(), 1);
        for i in 1..1000u64 {
            s.on_sent(t0 + MS * i as u32, 10 + i, &rtt);
        }
        assert_eq!(s.records.len(), MAX_SEND_TIMES);
        // Data past the last record has none; once the records are
        // acknowledged its age counts from that acknowledgement.
        let last = s.records.back().map(|r| r.0).unwrap_or_default();
        s.on_acked(t0 + Duration::from_secs(2), 0, last);
        assert_eq!(
            s.oldest_unacked(last, 1009),
            Some(t0 + Duration::from_secs(2))
        );
    }

    proptest! {
        /// RFC 6298's invariants: the timeout is at least the smoothed
        /// round trip (plus the granularity), at most the cap, and the
        /// smoothed round trip stays within the samples seen.
        #[test]
        fn the_timeout_bounds_hold_for_any_samples(
            samples in proptest::collection::vec(0u64..120_000, 1..200),
        ) {
            let mut e = RttEstimator::default();
            let (mut lo, mut hi) = (u64::MAX, 0u64);
            for ms in samples {
                e.on_sample(MS * ms as u32);
                // Samples count as at most the cap.
                let ms = ms.min(MAX_RTO.as_millis() as u64);
                lo = lo.min(ms);
                hi = hi.max(ms);
                let srtt = e.srtt().unwrap_or_default();
                let rto = e.rto().unwrap_or_default();
                prop_assert!(srtt >= MS * lo as u32 && srtt <= MS * hi as u32);
                prop_assert!(rto <= MAX_RTO);
                prop_assert!(rto >= (srtt + GRANULARITY).min(MAX_RTO));
            }
        }

        /// A stall is never declared early: for any sends and
        /// acknowledgements, the send time `oldest_unacked` gives is no
        /// earlier than the true send time of the oldest unacknowledged
        /// byte, and a sample never understates a true round trip.
        #[test]
        fn ages_and_samples_never_overstate_or_understate(
            steps in proptest::collection::vec((1u64..40, 0u64..5_000, any::<bool>()), 1..300),
        ) {
            let t0 = Instant::now();
            let mut rtt = RttEstimator::default();
            let mut s = SendTimes::new(t0);
            // The true send time of every byte range: (end, at).
            let mut truth: Vec<(u64, Instant)> = Vec::new();
            let (mut now, mut sent, mut acked) = (t0, 0u64, 0u64);
            for (gap_us, bytes, ack) in steps {
                now += Duration::from_micros(gap_us * 250);
                if ack && acked < sent {
                    let to = acked + (sent - acked).div_ceil(2);
                    if let Some(sample) = s.on_acked(now, acked, to) {
                        // The newest byte acknowledged was sent no later
                        // than now − sample.
                        let newest = truth.iter().filter(|&&(end, _)| end <= to).map(|&(_, at)| at).max();
                        if let Some(at) = newest {
                            prop_assert!(now.saturating_duration_since(at) <= sample + SendTimes::spacing(&rtt) + MS);
                        }
                        prop_assert!(sample <= now.saturating_duration_since(t0));
                        rtt.on_sample(sample);
                    }
                    acked = to;
                } else if bytes > 0 {
                    sent += bytes;
                    truth.push((sent, now));
                    s.on_sent(now, sent, &rtt);
                }
                let oldest_true = truth.iter().find(|&&(end, _)| end > acked).map(|&(_, at)| at);
                let given = s.oldest_unacked(acked, sent);
                prop_assert_eq!(given.is_some(), oldest_true.is_some());
                if let (Some(given), Some(t)) = (given, oldest_true) {
                    prop_assert!(given >= t, "age overstated: {:?} before {:?}", given, t);
                }
            }
        }
    }
}
