//! Random fault schedules: what `explore` draws, and the simpler faults a
//! shrink tries. A draw is a [`Fault`] like any a scenario file holds, so
//! it is written to a file, run and reported as one.

use crate::fault::{
    Blackhole, BrokerBlock, BrokerDown, BrokerFreeze, Direction, Fault, GatewayChange, HostRole,
    Latency, LinkDown, LinkFlap, NicSwap, Partition, Reset,
};
use crate::plan::Plan;
use crate::scenario::{Dur, Scenario};
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};
use std::time::Duration;

/// The shortest fault a draw or a shrink makes.
const MIN_DURATION_MS: u64 = 100;
/// The longest single fault drawn.
const MAX_DURATION_MS: u64 = 3_000;
/// No fault before this: the workload has started.
const FIRST_AT_MS: u64 = 200;

fn ms(v: u64) -> Dur {
    Dur(Duration::from_millis(v))
}

/// How long `f` lasts, ms (0 for an instant).
pub fn length_ms(f: &Fault) -> u64 {
    f.duration().map_or(0, |d| d.0.as_millis() as u64)
}

/// Simpler versions of `f`, simplest first: a fault of a simpler kind at
/// the same time (a broker crash for a broker fault, a blackhole for a path
/// or host fault, then a reset), then shorter, then earlier.
pub fn simpler(f: &Fault) -> Vec<Fault> {
    let at = f.at();
    let floor = Duration::from_millis(MIN_DURATION_MS);
    let mut out: Vec<Fault> = match f {
        Fault::Reset(_) | Fault::BrokerDown(_) => Vec::new(),
        Fault::Blackhole(_) => vec![Reset { at }.into()],
        Fault::BrokerFreeze(BrokerFreeze {
            broker, duration, ..
        })
        | Fault::BrokerBlock(BrokerBlock {
            broker, duration, ..
        }) => vec![BrokerDown {
            at,
            broker: *broker,
            duration: Some(*duration),
        }
        .into()],
        _ => vec![
            Blackhole {
                at,
                duration: Dur(f.duration().map_or(floor, |d| d.0.max(floor))),
            }
            .into(),
            Reset { at }.into(),
        ],
    };
    let mut shorter = f.clone();
    shorter.halve(floor);
    if shorter != *f {
        out.push(shorter);
    }
    let mut earlier = f.clone();
    *earlier.at_mut() = ms(FIRST_AT_MS).max(Dur(at.0 / 2));
    if earlier != *f {
        out.push(earlier);
    }
    out
}

/// Where and how long faults may be drawn for one scenario.
#[derive(Clone, Copy, Debug)]
pub struct Window {
    /// Faults start in `FIRST_AT_MS ..= last_at`, ms.
    last_at: u64,
    /// The faults of one schedule last this long together at most, ms.
    total: u64,
    /// Brokers of a signaling scenario (0 for a stream).
    brokers: u8,
    /// The client follows network changes (NIC swaps, gateway changes and
    /// carrier flaps are drawn only then: without a monitor a program
    /// cannot tell them apart from a silent path, which blackholes cover).
    monitor: bool,
}

impl Window {
    /// The window of `s`: faults start while its workload runs (at most
    /// the first third of its deadline) and last at most a sixth of the
    /// deadline together, so the path is whole long before the deadline.
    pub fn of(s: &Scenario, plan: &Plan) -> Window {
        let deadline = s.expect.deadline.0.as_millis() as u64;
        let paced = |bytes: u64, rate: Option<u64>| match rate {
            Some(rate) if rate > 0 => bytes.saturating_mul(1000) / rate,
            _ => 2_000,
        };
        let (active, brokers) = match plan {
            Plan::Signaling(p) => (
                p.spec.interval.as_millis() as u64 * p.spec.messages,
                s.topology.brokers,
            ),
            Plan::Stream(p) => (paced(p.spec.total, p.spec.rate), 0),
            Plan::Command(p) => (paced(p.bytes, p.rate), 0),
        };
        Window {
            last_at: active.clamp(FIRST_AT_MS + 100, deadline / 3),
            total: (deadline / 6).max(MIN_DURATION_MS),
            brokers,
            monitor: s.mitigation.as_ref().is_some_and(|m| m.monitor),
        }
    }
}

/// Draws one schedule of 1 ..= `max_faults` faults for a scenario of
/// `window`, from `seed`. Signaling schedules leave one broker (drawn)
/// untouched: the invariant is exactly-once delivery while one broker works.
pub fn schedule(window: Window, max_faults: u32, seed: u64) -> Vec<Fault> {
    let mut rng = SmallRng::seed_from_u64(seed);
    let n = rng.random_range(1..=max_faults.max(1));
    let mut left = window.total;
    let mut moved = false;
    let survivor = if window.brokers > 0 {
        rng.random_range(0..window.brokers)
    } else {
        0
    };
    let mut out = Vec::new();
    for _ in 0..n {
        let at = ms(rng.random_range(FIRST_AT_MS..=window.last_at));
        let mut duration =
            rng.random_range(MIN_DURATION_MS..=MAX_DURATION_MS.min(left.max(MIN_DURATION_MS)));
        let fault: Fault = if window.brokers > 1 {
            let others: Vec<u8> = (0..window.brokers).filter(|b| *b != survivor).collect();
            let broker = others[rng.random_range(0..others.len())];
            match rng.random_range(0..3) {
                0 => BrokerDown {
                    at,
                    broker,
                    duration: Some(ms(duration)),
                }
                .into(),
                1 => BrokerFreeze {
                    at,
                    broker,
                    duration: ms(duration),
                }
                .into(),
                _ => BrokerBlock {
                    at,
                    broker,
                    host: None,
                    duration: ms(duration),
                }
                .into(),
            }
        } else if window.brokers == 1 {
            return Vec::new(); // one broker: nothing may fail
        } else {
            let kinds = if window.monitor && !moved {
                8
            } else if window.monitor {
                6
            } else {
                5
            };
            match rng.random_range(0..kinds) {
                0 => {
                    duration = 0;
                    Reset { at }.into()
                }
                1 => Blackhole {
                    at,
                    duration: ms(duration),
                }
                .into(),
                2 => Partition {
                    at,
                    duration: ms(duration),
                    direction: match rng.random_range(0..3) {
                        0 => Direction::Both,
                        1 => Direction::ClientToServer,
                        _ => Direction::ServerToClient,
                    },
                }
                .into(),
                3 => Latency {
                    at,
                    duration: Some(ms(duration)),
                    latency: ms(rng.random_range(10..=200)),
                    jitter: None,
                    ramp: None,
                }
                .into(),
                4 => LinkDown {
                    at,
                    duration: ms(duration),
                    host: if rng.random_bool(0.5) {
                        HostRole::Client
                    } else {
                        HostRole::Server
                    },
                }
                .into(),
                5 => {
                    let count = rng.random_range(1..=5u32);
                    let period = rng.random_range(100..=400u64);
                    duration = u64::from(count) * period;
                    LinkFlap {
                        at,
                        count,
                        period: ms(period),
                    }
                    .into()
                }
                k => {
                    moved = true;
                    let routable_after = if rng.random_bool(0.5) { 0 } else { duration };
                    duration = routable_after;
                    let routable_after = (routable_after > 0).then(|| ms(routable_after));
                    if k == 6 {
                        GatewayChange {
                            at,
                            routable_after,
                            captive_for: None,
                        }
                        .into()
                    } else {
                        NicSwap {
                            at,
                            routable_after,
                            captive_for: None,
                        }
                        .into()
                    }
                }
            }
        };
        left = left.saturating_sub(duration);
        out.push(fault);
        if left < MIN_DURATION_MS {
            break;
        }
    }
    out.sort_by_key(Fault::at);
    out
}

/// When the last fault of `faults` heals.
pub fn last_heal(faults: &[Fault]) -> Duration {
    faults
        .iter()
        .map(|f| f.healed_at().0)
        .max()
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn window() -> Window {
        Window {
            last_at: 4_000,
            total: 4_000,
            brokers: 0,
            monitor: true,
        }
    }

    #[test]
    fn the_same_seed_draws_the_same_schedule_and_others_differ() {
        assert_eq!(schedule(window(), 4, 7), schedule(window(), 4, 7));
        let distinct: std::collections::HashSet<String> = (0..50)
            .map(|s| format!("{:?}", schedule(window(), 4, s)))
            .collect();
        assert!(distinct.len() > 45, "{}", distinct.len());
    }

    #[test]
    fn schedules_stay_in_their_window_and_move_the_client_at_most_once() {
        for seed in 0..2_000 {
            let s = schedule(window(), 4, seed);
            assert!(!s.is_empty() && s.len() <= 4);
            assert!(s.windows(2).all(|w| w[0].at() <= w[1].at()));
            assert!(s
                .iter()
                .all(|d| (ms(FIRST_AT_MS)..=ms(4_000)).contains(&d.at())));
            let total: u64 = s.iter().map(length_ms).sum();
            assert!(total <= 4_000 + MAX_DURATION_MS, "{s:?}");
            let moves = s
                .iter()
                .filter(|d| matches!(d, Fault::NicSwap(_) | Fault::GatewayChange(_)))
                .count();
            assert!(moves <= 1, "{s:?}");
        }
    }

    #[test]
    fn signaling_schedules_spare_one_broker() {
        let w = Window {
            brokers: 3,
            ..window()
        };
        for seed in 0..500 {
            let s = schedule(w, 4, seed);
            let hit: std::collections::HashSet<u8> = s
                .iter()
                .map(|d| match d.broker() {
                    Some(broker) => broker,
                    None => panic!("a path fault in a signaling schedule: {d:?}"),
                })
                .collect();
            assert!(hit.len() <= 2, "{s:?}");
        }
    }

    #[test]
    fn simpler_faults_are_simpler_or_shorter_or_earlier() {
        let swap = Fault::from(NicSwap {
            at: ms(3_000),
            routable_after: Some(ms(2_000)),
            captive_for: None,
        });
        assert_eq!(
            simpler(&swap),
            vec![
                Blackhole {
                    at: ms(3_000),
                    duration: ms(2_000)
                }
                .into(),
                Reset { at: ms(3_000) }.into(),
                NicSwap {
                    at: ms(3_000),
                    routable_after: Some(ms(1_000)),
                    captive_for: None,
                }
                .into(),
                NicSwap {
                    at: ms(1_500),
                    routable_after: Some(ms(2_000)),
                    captive_for: None,
                }
                .into(),
            ]
        );
        let freeze = Fault::from(BrokerFreeze {
            at: ms(400),
            broker: 1,
            duration: ms(150),
        });
        assert_eq!(
            simpler(&freeze),
            vec![
                BrokerDown {
                    at: ms(400),
                    broker: 1,
                    duration: Some(ms(150)),
                }
                .into(),
                BrokerFreeze {
                    at: ms(400),
                    broker: 1,
                    duration: ms(100),
                }
                .into(),
                BrokerFreeze {
                    at: ms(200),
                    broker: 1,
                    duration: ms(150),
                }
                .into(),
            ]
        );
        assert!(simpler(&Reset { at: ms(200) }.into()).is_empty());
    }
}
