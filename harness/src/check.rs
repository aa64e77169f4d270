//! Checkers: turn a run's [`Recording`] into measured figures and symptoms.

use crate::fault::Action;
use crate::scenario::{Scenario, Symptom};
use crate::workload::messages::{self, MessageLog};
use crate::workload::pattern::{self, Piece};
use crate::workload::QueuePeak;
use crate::workload::Recording;
use serde::Serialize;
use std::time::Duration;

/// Pass or fail of one run against the scenario's invariants.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Outcome {
    /// Every invariant held.
    Passed,
    /// At least one symptom showed.
    Failed,
}

/// The judged figures of one run (the `baseline` / `mitigated` objects of
/// the JSON report).
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Measured {
    /// Whether the invariants held.
    pub outcome: Outcome,
    /// What `delivered`, `lost` and `duplicated` count.
    pub unit: &'static str,
    /// Bytes the workload meant to deliver.
    pub expected: u64,
    /// Distinct stream bytes that arrived.
    pub delivered: u64,
    /// Stream bytes that never arrived.
    pub lost: u64,
    /// Bytes that arrived more than once.
    pub duplicated: u64,
    /// Bytes that arrived after later bytes had (filling a gap).
    pub reordered: u64,
    /// Bytes that are not part of the stream.
    pub corrupted: u64,
    /// Time from the path working again until a byte written after that
    /// arrived; `None` if that never happened. The worst over all faults.
    pub recovery_ms: Option<u64>,
    /// Connection attempts by the client.
    pub attempts: u32,
    /// What went wrong, if anything.
    pub symptoms: Vec<Symptom>,
    /// The client's fatal error, if any.
    pub error: Option<String>,
    /// Median one-way latency of the messages delivered, in µs (messages
    /// only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub latency_p50_us: Option<u64>,
    /// Their 99th percentile, in µs (messages only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub latency_p99_us: Option<u64>,
    /// The engine queue the scenario watches: its peak and stated bound.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub queue: Option<QueuePeak>,
    /// How the scenario's herd came back, if it has one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub herd: Option<HerdFigures>,
    /// What the run left behind that it should not have (symptom
    /// `residue`), in words.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub residue: Option<String>,
}

/// How a herd came back after its server returned.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub struct HerdFigures {
    /// Its clients.
    pub clients: u32,
    /// Connections established in the busiest 100 ms of its return: the
    /// first `clients` connections after the server returned (each client
    /// comes back once; later waves, after other faults, are not judged).
    pub peak_per_100ms: u32,
    /// `expect.max_herd_peak`.
    pub bound: u32,
    /// Connections established after the server returned (each client
    /// holds one: all back when this is `clients`).
    pub back: u32,
    /// From the server's return until the last client was back; `None`
    /// when not all were by the end of the run.
    pub all_back_ms: Option<u64>,
    /// Attempts in the busiest 100 ms of the run, refused ones included.
    pub attempts_peak_per_100ms: u32,
    /// Attempts over the whole run.
    pub attempts: u64,
}

/// The window a herd's peak is counted in.
const HERD_WINDOW: Duration = Duration::from_millis(100);

/// The most of `times` (sorted) within any [`HERD_WINDOW`].
fn peak(times: &[Duration]) -> u32 {
    let mut best = 0;
    let mut from = 0;
    for (i, t) in times.iter().enumerate() {
        while times[from] + HERD_WINDOW <= *t {
            from += 1;
        }
        best = best.max(i + 1 - from);
    }
    u32::try_from(best).unwrap_or(u32::MAX)
}

/// How the herd of `scenario` came back in `rec`: counted from when its
/// server returned (the end of the first server restart).
fn herd(scenario: &Scenario, rec: &Recording) -> Option<HerdFigures> {
    let clients = scenario.faults.iter().find_map(|f| match f {
        crate::fault::Fault::Herd(h) => Some(h.count),
        _ => None,
    })?;
    let returned = scenario
        .faults
        .iter()
        .find(|f| matches!(f, crate::fault::Fault::ServerRestart(_)))
        .map_or(Duration::ZERO, |f| f.healed_at().0);
    let mut connects: Vec<Duration> = rec
        .herd
        .connects
        .iter()
        .copied()
        .filter(|t| *t >= returned)
        .collect();
    connects.sort();
    let mut attempts = rec.herd.attempts.clone();
    attempts.sort();
    let back = u32::try_from(connects.len())
        .unwrap_or(u32::MAX)
        .min(clients);
    let all_back_ms = (back == clients)
        .then(|| connects.get(clients as usize - 1))
        .flatten()
        .map(|t| t.saturating_sub(returned).as_millis() as u64);
    let wave = &connects[..connects.len().min(clients as usize)];
    Some(HerdFigures {
        clients,
        peak_per_100ms: peak(wave),
        bound: scenario.expect.max_herd_peak.unwrap_or(u32::MAX),
        back,
        all_back_ms,
        attempts_peak_per_100ms: peak(&attempts),
        attempts: attempts.len() as u64 + rec.herd.dropped,
    })
}

impl Measured {
    /// One line of what the run showed: outcome and symptoms, delivery,
    /// recovery, latency, attempts, the watched queue.
    pub fn describe(&self) -> String {
        let m = self;
        let outcome = match m.outcome {
            Outcome::Passed => "passed".to_string(),
            Outcome::Failed => {
                let names: Vec<String> = m.symptoms.iter().map(|x| x.name().to_string()).collect();
                format!("failed ({})", names.join(", "))
            }
        };
        let recovery = m.recovery_ms.map_or("never recovered".to_string(), |r| {
            format!("recovered in {r} ms")
        });
        let unit = if m.unit == "messages" { "msgs" } else { "B" };
        let latency = match (m.latency_p50_us, m.latency_p99_us) {
            (Some(p50), Some(p99)) => format!(
                ", latency p50 {:.1} ms p99 {:.1} ms",
                p50 as f64 / 1000.0,
                p99 as f64 / 1000.0
            ),
            _ => String::new(),
        };
        let queue = m.queue.map_or(String::new(), |q| {
            format!(", {} peak {} (bound {})", q.queue, q.peak, q.bound)
        });
        let herd = m.herd.map_or(String::new(), |h| {
            let back = h
                .all_back_ms
                .map_or(format!("{} of {} back", h.back, h.clients), |t| {
                    format!("all {} back in {t} ms", h.clients)
                });
            format!(
                ", herd: peak {}/100 ms (bound {}), {back}",
                h.peak_per_100ms, h.bound
            )
        });
        let residue = m
            .residue
            .as_ref()
            .map_or(String::new(), |r| format!("; left behind: {r}"));
        format!(
            "{outcome}: {}/{} {unit} delivered, {} lost, {} dup, {recovery}{latency}, {} attempt(s){queue}{herd}{residue}",
            m.delivered, m.expected, m.lost, m.duplicated, m.attempts
        )
    }
}

/// What one run looked like over time, for a timeline to draw: how much
/// had arrived when, the client's connection attempts, what its stack
/// reported, and the recovery interval the judgement measured.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Trace {
    /// `(time, delivered so far)` — the highest stream offset delivered in
    /// order of arrival, or distinct messages — at most [`TRACE_POINTS`]
    /// points, thinned evenly over the run (the last point of each slice
    /// kept, so the curve's steps stay where they were).
    pub delivered: Vec<(Duration, u64)>,
    /// When each connection attempt began.
    pub attempts: Vec<Duration>,
    /// `(time, what)` the client's stack reported.
    pub events: Vec<(Duration, String)>,
    /// `(scheduled, in effect)` for fault actions that took effect late.
    pub applied: Vec<(Duration, Duration)>,
    /// The worst recovery interval `(path whole again, delivery resumed)`;
    /// `None` if delivery never resumed, and for a run without faults.
    pub recovery: Option<(Duration, Duration)>,
    /// How long the run lasted.
    pub elapsed: Duration,
}

/// Points a [`Trace`]'s delivery curve keeps at most.
pub const TRACE_POINTS: usize = 2000;

impl Trace {
    fn of(
        rec: &Recording,
        delivered: Vec<(Duration, u64)>,
        recovery: Option<(Duration, Duration)>,
    ) -> Trace {
        Trace {
            delivered: thin(delivered, rec.elapsed, TRACE_POINTS),
            attempts: rec.attempts.clone(),
            events: rec.events.clone(),
            applied: rec.applied.clone(),
            recovery: recovery.filter(|(from, to)| !(from.is_zero() && to.is_zero())),
            elapsed: rec.elapsed,
        }
    }
}

/// At most `max` points of a time series, one per equal slice of
/// `0..=elapsed`: the last point of each slice.
fn thin(points: Vec<(Duration, u64)>, elapsed: Duration, max: usize) -> Vec<(Duration, u64)> {
    if points.len() <= max {
        return points;
    }
    let span = elapsed
        .max(points.last().map_or(Duration::ZERO, |p| p.0))
        .as_nanos()
        .max(1);
    let slice = |t: Duration| (t.as_nanos() * (max as u128 - 1) / span) as usize;
    let mut out: Vec<(Duration, u64)> = Vec::with_capacity(max);
    for p in points {
        match out.last_mut() {
            Some(last) if slice(last.0) == slice(p.0) => *last = p,
            _ => out.push(p),
        }
    }
    out
}

/// Judges one run of the stream scenario `scenario`.
pub fn judge_stream(scenario: &Scenario, rec: &Recording, max_attempts: Option<u32>) -> Measured {
    judge_stream_traced(scenario, rec, max_attempts).0
}

/// [`judge_stream`], with the run's [`Trace`].
pub fn judge_stream_traced(
    scenario: &Scenario,
    rec: &Recording,
    max_attempts: Option<u32>,
) -> (Measured, Trace) {
    let total = rec.total;
    let mut pieces: Vec<Piece> = Vec::new();
    let mut corrupted = 0;
    // (time, highest offset end delivered by that read)
    let mut arrivals: Vec<(Duration, u64)> = Vec::new();
    for s in &rec.streams {
        let d = pattern::decode(&s.bytes, total);
        corrupted += d.unattributed;
        arrivals.extend(read_offsets(&d, &s.reads));
        pieces.extend(d.pieces);
    }
    arrivals.sort();

    let (delivered, duplicated, reordered) = coverage(&pieces, total);
    let lost = total - delivered;
    let interval = recovery(scenario, rec, &arrivals);
    let recovery = interval.map(|(from, to)| to.saturating_sub(from));
    let recovery_ms = recovery.map(|d| d.as_millis() as u64);
    let progress = arrivals
        .iter()
        .scan(0u64, |high, &(t, end)| {
            *high = (*high).max(end);
            Some((t, *high))
        })
        .collect();

    let mut symptoms = symptoms(
        scenario,
        rec,
        Counts {
            lost,
            duplicated,
            reordered,
            corrupted,
        },
        recovery,
        max_attempts,
    );
    let herd = herd(scenario, rec);
    if herd.is_some_and(|h| h.peak_per_100ms > h.bound || h.all_back_ms.is_none()) {
        symptoms.push(Symptom::Herd);
        symptoms.sort();
    }
    let measured = Measured {
        outcome: outcome(&symptoms),
        unit: "bytes",
        expected: total,
        delivered,
        lost,
        duplicated,
        reordered,
        corrupted,
        recovery_ms,
        attempts: attempts(rec),
        symptoms,
        error: rec.client_error.clone(),
        latency_p50_us: None,
        latency_p99_us: None,
        queue: rec.queue,
        herd,
        residue: rec.residue.clone(),
    };
    let trace = Trace::of(rec, progress, interval);
    (measured, trace)
}

/// Judges one run of the signaling scenario `scenario`. Delivery order is reported (`reordered`) but
/// is no symptom: the engine hands messages over in arrival order, and a
/// copy through a faster broker may overtake (each carries its sequence
/// number for applications that need send order).
pub fn judge_messages(scenario: &Scenario, rec: &Recording, max_attempts: Option<u32>) -> Measured {
    judge_messages_traced(scenario, rec, max_attempts).0
}

/// [`judge_messages`], with the run's [`Trace`].
pub fn judge_messages_traced(
    scenario: &Scenario,
    rec: &Recording,
    max_attempts: Option<u32>,
) -> (Measured, Trace) {
    let f = messages::judge(&rec.messages);
    let interval = message_recovery(scenario, rec);
    let recovery = interval.map(|(from, to)| to.saturating_sub(from));
    let mut symptoms = symptoms(
        scenario,
        rec,
        Counts {
            lost: f.lost,
            duplicated: f.duplicated,
            reordered: 0,
            corrupted: f.unknown,
        },
        recovery,
        max_attempts,
    );
    let late = scenario
        .expect
        .latency_p99_within
        .zip(f.latency_p99_us)
        .is_some_and(|(bound, p99)| u128::from(p99) > bound.0.as_micros());
    if late {
        symptoms.push(Symptom::Late);
    }
    let measured = Measured {
        outcome: outcome(&symptoms),
        unit: "messages",
        expected: f.expected,
        delivered: f.delivered,
        lost: f.lost,
        duplicated: f.duplicated,
        reordered: f.reordered,
        corrupted: f.unknown,
        recovery_ms: recovery.map(|d| d.as_millis() as u64),
        attempts: attempts(rec),
        symptoms,
        error: rec.client_error.clone(),
        latency_p50_us: f.latency_p50_us,
        latency_p99_us: f.latency_p99_us,
        queue: rec.queue,
        herd: None,
        residue: rec.residue.clone(),
    };
    let trace = Trace::of(rec, messages_over_time(&rec.messages), interval);
    (measured, trace)
}

/// Distinct messages of the run delivered, after each delivery.
fn messages_over_time(log: &MessageLog) -> Vec<(Duration, u64)> {
    let sent = log.sent.len() as u64;
    let mut arrivals: Vec<(Duration, u64)> = log
        .received
        .iter()
        .filter(|(n, _)| *n < sent)
        .map(|&(n, t)| (t, n))
        .collect();
    arrivals.sort_unstable();
    let mut seen = std::collections::HashSet::new();
    let mut out = Vec::with_capacity(arrivals.len());
    for (t, n) in arrivals {
        if seen.insert(n) {
            out.push((t, seen.len() as u64));
        }
    }
    out
}

/// The worst recovery interval over all faults of a signaling run: from the fault
/// (when it took effect) until the first message sent after it is
/// delivered (a broker crash needs no repair for delivery to go on while
/// another broker lives; when every broker is down, from the moment the
/// first comes back). `None` if messages were sent after a fault and none
/// of them arrived.
fn message_recovery(scenario: &Scenario, rec: &Recording) -> Option<(Duration, Duration)> {
    let log = &rec.messages;
    let sent_at: std::collections::HashMap<u64, Duration> = log.sent.iter().copied().collect();
    let mut worst = (Duration::ZERO, Duration::ZERO);
    for fault in &scenario.faults {
        // A message sent before a netns change took effect is not judged
        // by it: it may slip through before the block.
        let at = in_effect(rec, fault.at().0);
        let from = some_broker_up(scenario, fault.at().0).max(at);
        if !log.sent.iter().any(|&(_, t)| t >= at) {
            continue;
        }
        let first = log
            .received
            .iter()
            .filter(|(n, _)| sent_at.get(n).is_some_and(|&t| t >= at))
            .map(|&(_, t)| t)
            .min()?;
        worst = longer(worst, (from, first.max(from)));
    }
    Some(worst)
}

/// The first moment from `at` on at which some broker is neither crashed
/// nor frozen by the scenario's faults (`at` itself unless every broker is
/// down then).
fn some_broker_up(scenario: &Scenario, at: Duration) -> Duration {
    let brokers = usize::from(scenario.topology.brokers);
    let mut down = vec![false; brokers];
    let mut frozen = vec![false; brokers];
    let all_out = |down: &[bool], frozen: &[bool]| {
        brokers > 0 && down.iter().zip(frozen).all(|(d, f)| *d || *f)
    };
    let mut out_since = None;
    for (t, action) in scenario.schedule() {
        if t > at && out_since.is_none() {
            break;
        }
        match action {
            Action::Broker { index, down: d } => {
                if let Some(slot) = down.get_mut(usize::from(index)) {
                    *slot = d;
                }
            }
            Action::BrokerFreeze { index, frozen: f } => {
                if let Some(slot) = frozen.get_mut(usize::from(index)) {
                    *slot = f;
                }
            }
            _ => continue,
        }
        match (all_out(&down, &frozen), out_since) {
            (true, None) if t <= at => out_since = Some(t),
            (false, Some(_)) if t > at => return t,
            (false, Some(_)) => out_since = None,
            _ => {}
        }
    }
    at
}

/// The longer of two recovery intervals `(from, to)` (the first if equal).
fn longer(a: (Duration, Duration), b: (Duration, Duration)) -> (Duration, Duration) {
    if b.1.saturating_sub(b.0) > a.1.saturating_sub(a.0) {
        b
    } else {
        a
    }
}

/// What went wrong in a run, in the unit of its workload.
struct Counts {
    lost: u64,
    duplicated: u64,
    /// Zero where order is no invariant.
    reordered: u64,
    corrupted: u64,
}

/// The symptoms a run shows, in a fixed order.
fn symptoms(
    scenario: &Scenario,
    rec: &Recording,
    c: Counts,
    recovery: Option<Duration>,
    max_attempts: Option<u32>,
) -> Vec<Symptom> {
    let mut out = Vec::new();
    if c.lost > 0 {
        out.push(Symptom::Loss);
    }
    if c.duplicated > 0 {
        out.push(Symptom::Duplication);
    }
    if c.reordered > 0 {
        out.push(Symptom::Reorder);
    }
    match recovery {
        None => out.push(Symptom::Stall),
        Some(r) if r > scenario.expect.recovery_within.0 => out.push(Symptom::SlowRecovery),
        Some(_) => {}
    }
    if max_attempts.is_some_and(|m| attempts(rec) > m) {
        out.push(Symptom::Storm);
    }
    if c.corrupted > 0 {
        out.push(Symptom::Corruption);
    }
    if rec.client_error.is_some() {
        out.push(Symptom::Error);
    }
    if rec.queue.is_some_and(|q| q.peak > q.bound) {
        out.push(Symptom::Overflow);
    }
    if rec.residue.is_some() {
        out.push(Symptom::Residue);
    }
    out
}

/// Connection attempts of a run.
fn attempts(rec: &Recording) -> u32 {
    u32::try_from(rec.attempts.len()).unwrap_or(u32::MAX)
}

fn outcome(symptoms: &[Symptom]) -> Outcome {
    if symptoms.is_empty() {
        Outcome::Passed
    } else {
        Outcome::Failed
    }
}

/// When the action scheduled at `scheduled` really took effect (a backend
/// reports the ones that took time; on sim they act when due).
fn in_effect(rec: &Recording, scheduled: Duration) -> Duration {
    rec.applied
        .iter()
        .filter(|(s, _)| *s == scheduled)
        .map(|(_, at)| *at)
        .max()
        .unwrap_or(scheduled)
}

/// When the path is whole again after a fault healed at `healed`: faults
/// that overlap it (and those overlapping them) must heal too — delivery
/// cannot resume while another fault still holds the path.
fn whole_again(scenario: &Scenario, healed: Duration) -> Duration {
    let mut end = healed;
    loop {
        let later = scenario
            .faults
            .iter()
            .filter(|f| f.breaks_path() && f.at().0 <= end && f.healed_at().0 > end)
            .map(|f| f.healed_at().0)
            .max();
        match later {
            Some(t) => end = t,
            None => return end,
        }
    }
}

/// For each read of a stream, the highest stream offset end it delivered.
fn read_offsets(d: &pattern::Decoded, reads: &[(Duration, u64)]) -> Vec<(Duration, u64)> {
    let mut out = Vec::with_capacity(reads.len());
    let mut best = 0u64;
    let mut i = 0;
    for &(t, end) in reads {
        // Every piece that begins before this read's end contributes.
        while i < d.pieces.len() && d.positions[i] < end {
            let (p, pos) = (d.pieces[i], d.positions[i]);
            best = best.max(p.start + (end - pos).min(p.len));
            if pos + p.len <= end {
                i += 1;
            } else {
                break;
            }
        }
        out.push((t, best));
    }
    out
}

/// `(delivered, duplicated, reordered)` for pieces in arrival order.
fn coverage(pieces: &[Piece], total: u64) -> (u64, u64, u64) {
    // Sorted, merged intervals of what arrived so far.
    let mut have: Vec<(u64, u64)> = Vec::new();
    let (mut dup, mut reordered, mut high) = (0u64, 0u64, 0u64);
    for p in pieces {
        let (a, b) = (p.start, (p.start + p.len).min(total));
        if a >= b {
            continue;
        }
        let overlap: u64 = have
            .iter()
            .map(|&(x, y)| y.min(b).saturating_sub(x.max(a)))
            .sum();
        dup += overlap;
        if a < high {
            reordered += (b - a) - overlap - (b.saturating_sub(high.max(a)));
        }
        high = high.max(b);
        have.push((a, b));
        have.sort();
        let mut merged: Vec<(u64, u64)> = Vec::with_capacity(have.len());
        for (x, y) in have.drain(..) {
            match merged.last_mut() {
                Some(last) if x <= last.1 => last.1 = last.1.max(y),
                _ => merged.push((x, y)),
            }
        }
        have = merged;
    }
    let delivered = have.iter().map(|(x, y)| y - x).sum();
    (delivered, dup, reordered)
}

/// The worst recovery interval over all faults: from the moment the path works again
/// (every overlapping fault healed) until a byte the client wrote after that
/// moment arrives (or, if the client had written everything by then, until
/// the last byte arrives). A fault followed by another before delivery
/// resumed is judged by the later one's recovery.
fn recovery(
    scenario: &Scenario,
    rec: &Recording,
    arrivals: &[(Duration, u64)],
) -> Option<(Duration, Duration)> {
    let mut worst = (Duration::ZERO, Duration::ZERO);
    for fault in scenario.faults.iter().filter(|f| f.breaks_path()) {
        let healed = in_effect(rec, whole_again(scenario, fault.healed_at().0));
        let written = rec
            .writes
            .iter()
            .take_while(|(t, _)| *t <= healed)
            .last()
            .map_or(0, |&(_, o)| o);
        let target = if written >= rec.total {
            rec.total
        } else {
            written + 1
        };
        let got = arrivals
            .iter()
            .find(|&&(_, end)| end >= target)
            .map(|&(t, _)| t)?;
        // A fault that breaks the path again before delivery resumed takes
        // this one's recovery over: it is judged from its own heal.
        let next = scenario
            .faults
            .iter()
            .filter(|f| f.breaks_path())
            .map(|f| f.at().0)
            .filter(|&at| at > healed)
            .min();
        if next.is_some_and(|at| at < got) {
            continue;
        }
        worst = longer(worst, (healed, got));
    }
    Some(worst)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_herd_peak_is_the_busiest_100_ms() {
        let ms = |v: &[u64]| {
            v.iter()
                .map(|m| Duration::from_millis(*m))
                .collect::<Vec<_>>()
        };
        assert_eq!(super::peak(&[]), 0);
        assert_eq!(super::peak(&ms(&[7])), 1);
        // 50, 99, 100 and 149 lie within 100 ms; 0 and 150 do not join them.
        assert_eq!(super::peak(&ms(&[0, 50, 99, 100, 149, 150])), 4);
        assert_eq!(super::peak(&ms(&[0, 100, 200, 300])), 1);
        assert_eq!(super::peak(&ms(&[5; 1000])), 1000);
    }

    #[test]
    fn thinning_keeps_at_most_max_points_and_the_last_of_each_slice() {
        let ms = Duration::from_millis;
        let points: Vec<(Duration, u64)> = (0..10_000).map(|i| (ms(i), i)).collect();
        let thinned = thin(points.clone(), ms(10_000), 100);
        assert!(thinned.len() <= 100, "{}", thinned.len());
        assert_eq!(thinned.last(), points.last(), "the final value stays");
        assert!(thinned
            .windows(2)
            .all(|w| w[0].0 < w[1].0 && w[0].1 < w[1].1));
        // Few points: untouched.
        assert_eq!(thin(points[..5].to_vec(), ms(10_000), 100), points[..5]);
    }

    #[test]
    fn coverage_counts_loss_duplication_and_reordering() {
        let p = |start, len| Piece { start, len };
        assert_eq!(coverage(&[p(0, 100)], 100), (100, 0, 0));
        // A gap, then a replay that overlaps and fills part of it.
        assert_eq!(
            coverage(&[p(0, 40), p(60, 40), p(30, 20)], 100),
            (90, 10, 10)
        );
        assert_eq!(coverage(&[p(0, 50), p(0, 50)], 100), (50, 50, 0));
    }

    #[test]
    fn signaling_recovery_starts_when_the_first_broker_is_back() {
        let text = |faults: &str| {
            format!(
                "id = \"b\"\ncatalog = \"broker-loss\"\ndescription = \"d\"\n\
                 [topology]\nbrokers = 2\n[workload]\nkind = \"signaling\"\nmessages = 10\n\
                 interval = \"100ms\"\npayload = 8\n{faults}\
                 [mitigation]\npolicy = \"redundant-signaling\"\n\
                 [expect]\nbaseline = [\"loss\"]\nrecovery_within = \"1s\"\nmax_attempts = 9\ndeadline = \"20s\"\n"
            )
        };
        let s = |faults: &str| {
            crate::scenario::parse(std::path::Path::new("b.toml"), &text(faults)).unwrap()
        };
        let ms = Duration::from_millis;
        let down = |at: &str, broker: u8, duration: &str| {
            format!("[[faults]]\nkind = \"broker-down\"\nat = \"{at}\"\nbroker = {broker}\nduration = \"{duration}\"\n")
        };
        // One broker of two down: delivery can go on at once.
        let one = s(&down("1s", 0, "3s"));
        assert_eq!(some_broker_up(&one, ms(1_000)), ms(1_000));
        // Both down, broker 1 back first, at 3 s.
        let both = s(&(down("1s", 0, "5s") + &down("1s", 1, "2s")));
        assert_eq!(some_broker_up(&both, ms(1_000)), ms(3_000));
        assert_eq!(some_broker_up(&both, ms(500)), ms(500));
        // A frozen broker is as good as a crashed one.
        let frozen = s(&(down("1s", 0, "5s")
            + "[[faults]]\nkind = \"broker-freeze\"\nat = \"2s\"\nbroker = 1\nduration = \"1500ms\"\n"));
        assert_eq!(some_broker_up(&frozen, ms(2_000)), ms(3_500));
    }
}
