//! What a run of a message workload (signaling) records — every message
//! sent and every delivery to the application — and the figures judged
//! from it: delivered, lost, duplicated, reordered (per sender), and the
//! one-way latency percentiles. The broker-loss scenario reports these with
//! `unit: "messages"`.

use std::collections::HashMap;
use std::time::Duration;

/// Messages are numbered from 0 by the sending workload.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct MessageLog {
    /// `(number, time sent)`.
    pub sent: Vec<(u64, Duration)>,
    /// `(number, time delivered)`, in delivery order.
    pub received: Vec<(u64, Duration)>,
}

/// The judged figures of a message run.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MessageFigures {
    /// Messages sent.
    pub expected: u64,
    /// Distinct sent messages delivered.
    pub delivered: u64,
    /// Sent messages never delivered.
    pub lost: u64,
    /// Extra deliveries of a message already delivered.
    pub duplicated: u64,
    /// Deliveries of a message numbered below one delivered before it.
    pub reordered: u64,
    /// Deliveries of numbers never sent.
    pub unknown: u64,
    /// Median one-way latency of first deliveries, in µs.
    pub latency_p50_us: Option<u64>,
    /// 99th percentile, in µs.
    pub latency_p99_us: Option<u64>,
}

/// Judges a log.
pub fn judge(log: &MessageLog) -> MessageFigures {
    let sent: HashMap<u64, Duration> = log.sent.iter().copied().collect();
    let mut seen: HashMap<u64, u32> = HashMap::new();
    let mut latencies = Vec::new();
    let (mut duplicated, mut reordered, mut unknown) = (0, 0, 0);
    let mut highest: Option<u64> = None;
    for &(n, at) in &log.received {
        let Some(&sent_at) = sent.get(&n) else {
            unknown += 1;
            continue;
        };
        let copies = seen.entry(n).or_default();
        *copies += 1;
        if *copies > 1 {
            duplicated += 1;
            continue;
        }
        latencies.push(at.saturating_sub(sent_at));
        if highest.is_some_and(|h| n < h) {
            reordered += 1;
        }
        highest = Some(highest.map_or(n, |h| h.max(n)));
    }
    latencies.sort();
    let at = |q: f64| {
        (!latencies.is_empty()).then(|| {
            latencies[((latencies.len() - 1) as f64 * q).round() as usize].as_micros() as u64
        })
    };
    let delivered = seen.len() as u64;
    MessageFigures {
        expected: sent.len() as u64,
        delivered,
        lost: sent.len() as u64 - delivered,
        duplicated,
        reordered,
        unknown,
        latency_p50_us: at(0.5),
        latency_p99_us: at(0.99),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    #[test]
    fn counts_losses_duplicates_reorders_and_strangers_exactly() {
        let log = MessageLog {
            sent: (0..5).map(|n| (n, ms(n * 10))).collect(),
            received: [(0, 2), (2, 23), (1, 25), (2, 26), (4, 44), (9, 50)]
                .into_iter()
                .map(|(n, t)| (n, ms(t)))
                .collect(),
        };
        let f = judge(&log);
        assert_eq!(
            (
                f.expected,
                f.delivered,
                f.lost,
                f.duplicated,
                f.reordered,
                f.unknown
            ),
            (5, 4, 1, 1, 1, 1)
        );
        // First deliveries: 2, 3, 15, 4 ms → p50 4 ms, p99 15 ms.
        assert_eq!(f.latency_p50_us, Some(4_000));
        assert_eq!(f.latency_p99_us, Some(15_000));
    }

    #[test]
    fn nothing_delivered_has_no_latency() {
        let log = MessageLog {
            sent: vec![(0, ms(0))],
            received: Vec::new(),
        };
        let f = judge(&log);
        assert_eq!((f.delivered, f.lost, f.latency_p50_us), (0, 1, None));
    }
}
