//! Random fault schedules: what `explore` draws, how a draw is written as a
//! scenario's `[[faults]]` table, and the simpler draws a shrink tries.

use crate::scenario::{Direction, HostRole, Scenario, WorkloadKind};
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};
use serde::Serialize;
use std::time::Duration;

/// The shortest fault a draw or a shrink makes.
const MIN_DURATION_MS: u64 = 100;
/// The longest single fault drawn.
const MAX_DURATION_MS: u64 = 3_000;
/// No fault before this: the workload has started.
const FIRST_AT_MS: u64 = 200;

/// One drawn fault.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(tag = "kind", rename_all = "kebab-case")]
pub enum Draw {
    /// Every established flow reset.
    Reset {
        /// Start, ms.
        at: u64,
    },
    /// Everything dropped; flows caught stay dead.
    Blackhole {
        /// Start, ms.
        at: u64,
        /// Length, ms.
        duration: u64,
    },
    /// The client's link cut one or both ways; flows survive.
    Partition {
        /// Start, ms.
        at: u64,
        /// Length, ms.
        duration: u64,
        /// Which way.
        direction: Direction,
    },
    /// Per-hop latency raised.
    Latency {
        /// Start, ms.
        at: u64,
        /// Length, ms.
        duration: u64,
        /// One-way latency per hop, ms.
        latency: u64,
    },
    /// A host's link down.
    LinkDown {
        /// Start, ms.
        at: u64,
        /// Length, ms.
        duration: u64,
        /// Whose.
        host: HostRole,
    },
    /// The client's carrier flaps.
    LinkFlap {
        /// Start, ms.
        at: u64,
        /// Flaps.
        count: u32,
        /// Period of one flap, ms.
        period: u64,
    },
    /// The client moves to its second NIC (at most once per schedule: the
    /// netns lab has one standby NIC).
    NicSwap {
        /// Start, ms.
        at: u64,
        /// Not routable for this long, ms (0: at once).
        routable_after: u64,
    },
    /// The client's gateway changes (at most once per schedule).
    GatewayChange {
        /// Start, ms.
        at: u64,
        /// Not routable for this long, ms (0: at once).
        routable_after: u64,
    },
    /// A broker crashes and restarts empty.
    BrokerDown {
        /// Start, ms.
        at: u64,
        /// Down for, ms.
        duration: u64,
        /// Which broker.
        broker: u8,
    },
    /// A broker freezes.
    BrokerFreeze {
        /// Start, ms.
        at: u64,
        /// Frozen for, ms.
        duration: u64,
        /// Which broker.
        broker: u8,
    },
    /// The traffic between the peers and a broker is dropped.
    BrokerBlock {
        /// Start, ms.
        at: u64,
        /// Blocked for, ms.
        duration: u64,
        /// Which broker.
        broker: u8,
    },
}

impl Draw {
    /// When it starts, ms.
    pub fn at(&self) -> u64 {
        match *self {
            Draw::Reset { at }
            | Draw::Blackhole { at, .. }
            | Draw::Partition { at, .. }
            | Draw::Latency { at, .. }
            | Draw::LinkDown { at, .. }
            | Draw::LinkFlap { at, .. }
            | Draw::NicSwap { at, .. }
            | Draw::GatewayChange { at, .. }
            | Draw::BrokerDown { at, .. }
            | Draw::BrokerFreeze { at, .. }
            | Draw::BrokerBlock { at, .. } => at,
        }
    }

    fn at_mut(&mut self) -> &mut u64 {
        match self {
            Draw::Reset { at }
            | Draw::Blackhole { at, .. }
            | Draw::Partition { at, .. }
            | Draw::Latency { at, .. }
            | Draw::LinkDown { at, .. }
            | Draw::LinkFlap { at, .. }
            | Draw::NicSwap { at, .. }
            | Draw::GatewayChange { at, .. }
            | Draw::BrokerDown { at, .. }
            | Draw::BrokerFreeze { at, .. }
            | Draw::BrokerBlock { at, .. } => at,
        }
    }

    /// How long it lasts, ms.
    pub fn duration(&self) -> u64 {
        match *self {
            Draw::Reset { .. } => 0,
            Draw::Blackhole { duration, .. }
            | Draw::Partition { duration, .. }
            | Draw::Latency { duration, .. }
            | Draw::LinkDown { duration, .. }
            | Draw::BrokerDown { duration, .. }
            | Draw::BrokerFreeze { duration, .. }
            | Draw::BrokerBlock { duration, .. } => duration,
            Draw::LinkFlap { count, period, .. } => u64::from(count) * period,
            Draw::NicSwap { routable_after, .. } | Draw::GatewayChange { routable_after, .. } => {
                routable_after
            }
        }
    }

    /// How complicated a kind is: a shrink replaces a fault by a simpler
    /// one (a reset is the simplest, an instant).
    fn complexity(&self) -> u8 {
        match self {
            Draw::Reset { .. } => 0,
            Draw::Blackhole { .. } | Draw::BrokerDown { .. } => 1,
            Draw::Partition { .. } | Draw::BrokerBlock { .. } => 2,
            Draw::LinkDown { .. } | Draw::BrokerFreeze { .. } => 3,
            Draw::Latency { .. } => 4,
            Draw::LinkFlap { .. } => 5,
            Draw::GatewayChange { .. } => 6,
            Draw::NicSwap { .. } => 7,
        }
    }

    /// The `[[faults]]` table of this draw.
    pub fn to_toml(&self) -> toml::Table {
        let ms = |v: u64| toml::Value::String(format!("{v}ms"));
        let mut t = toml::Table::new();
        let kind = match self {
            Draw::Reset { .. } => "reset",
            Draw::Blackhole { .. } => "blackhole",
            Draw::Partition { .. } => "partition",
            Draw::Latency { .. } => "latency",
            Draw::LinkDown { .. } => "link-down",
            Draw::LinkFlap { .. } => "link-flap",
            Draw::NicSwap { .. } => "nic-swap",
            Draw::GatewayChange { .. } => "gateway-change",
            Draw::BrokerDown { .. } => "broker-down",
            Draw::BrokerFreeze { .. } => "broker-freeze",
            Draw::BrokerBlock { .. } => "broker-block",
        };
        t.insert("kind".into(), kind.into());
        t.insert("at".into(), ms(self.at()));
        match *self {
            Draw::Reset { .. } => {}
            Draw::Blackhole { duration, .. } => {
                t.insert("duration".into(), ms(duration));
            }
            Draw::Partition {
                duration,
                direction,
                ..
            } => {
                t.insert("duration".into(), ms(duration));
                let d = match direction {
                    Direction::Both => "both",
                    Direction::ClientToServer => "client-to-server",
                    Direction::ServerToClient => "server-to-client",
                };
                t.insert("direction".into(), d.into());
            }
            Draw::Latency {
                duration, latency, ..
            } => {
                t.insert("duration".into(), ms(duration));
                t.insert("latency".into(), ms(latency));
            }
            Draw::LinkDown { duration, host, .. } => {
                t.insert("duration".into(), ms(duration));
                let h = match host {
                    HostRole::Client => "client",
                    HostRole::Server => "server",
                };
                t.insert("host".into(), h.into());
            }
            Draw::LinkFlap { count, period, .. } => {
                t.insert("count".into(), i64::from(count).into());
                t.insert("period".into(), ms(period));
            }
            Draw::NicSwap { routable_after, .. } | Draw::GatewayChange { routable_after, .. } => {
                if routable_after > 0 {
                    t.insert("routable_after".into(), ms(routable_after));
                }
            }
            Draw::BrokerDown {
                duration, broker, ..
            }
            | Draw::BrokerFreeze {
                duration, broker, ..
            }
            | Draw::BrokerBlock {
                duration, broker, ..
            } => {
                t.insert("duration".into(), ms(duration));
                t.insert("broker".into(), i64::from(broker).into());
            }
        }
        t
    }

    /// Simpler versions of this fault, simplest first: a reset at the same
    /// time, then shorter, fewer flaps, earlier.
    pub fn simpler(&self) -> Vec<Draw> {
        let mut out = Vec::new();
        let at = self.at();
        if self.complexity() > 1 {
            out.push(match self {
                Draw::BrokerFreeze {
                    duration, broker, ..
                }
                | Draw::BrokerBlock {
                    duration, broker, ..
                } => Draw::BrokerDown {
                    at,
                    duration: *duration,
                    broker: *broker,
                },
                _ => Draw::Blackhole {
                    at,
                    duration: self.duration().max(MIN_DURATION_MS),
                },
            });
        }
        if self.complexity() > 0 && !self.is_broker() {
            out.push(Draw::Reset { at });
        }
        let mut shorter = self.clone();
        match &mut shorter {
            Draw::Blackhole { duration, .. }
            | Draw::Partition { duration, .. }
            | Draw::Latency { duration, .. }
            | Draw::LinkDown { duration, .. }
            | Draw::BrokerDown { duration, .. }
            | Draw::BrokerFreeze { duration, .. }
            | Draw::BrokerBlock { duration, .. } => {
                *duration = (*duration / 2).max(MIN_DURATION_MS);
            }
            Draw::LinkFlap { count, .. } => *count = (*count / 2).max(1),
            Draw::NicSwap { routable_after, .. } | Draw::GatewayChange { routable_after, .. } => {
                *routable_after /= 2;
                if *routable_after < MIN_DURATION_MS {
                    *routable_after = 0;
                }
            }
            Draw::Reset { .. } => {}
        }
        if shorter != *self {
            out.push(shorter);
        }
        let mut earlier = self.clone();
        *earlier.at_mut() = FIRST_AT_MS.max(at / 2);
        if earlier != *self {
            out.push(earlier);
        }
        out
    }

    fn is_broker(&self) -> bool {
        matches!(
            self,
            Draw::BrokerDown { .. } | Draw::BrokerFreeze { .. } | Draw::BrokerBlock { .. }
        )
    }
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
    pub fn of(s: &Scenario) -> Window {
        let deadline = s.expect.deadline.0.as_millis() as u64;
        let active = match s.workload.kind {
            WorkloadKind::Signaling => {
                s.workload.interval.0.as_millis() as u64 * s.workload.messages
            }
            _ => match s.workload.rate {
                Some(rate) if rate > 0 => s.workload.bytes.saturating_mul(1000) / rate,
                _ => 2_000,
            },
        };
        Window {
            last_at: active.clamp(FIRST_AT_MS + 100, deadline / 3),
            total: (deadline / 6).max(MIN_DURATION_MS),
            brokers: if s.workload.kind == WorkloadKind::Signaling {
                s.topology.brokers
            } else {
                0
            },
            monitor: s.mitigation.as_ref().is_some_and(|m| m.monitor),
        }
    }
}

/// Draws one schedule of 1 ..= `max_faults` faults for a scenario of
/// `window`, from `seed`. Signaling schedules leave one broker (drawn)
/// untouched: the invariant is exactly-once delivery while one broker works.
pub fn schedule(window: Window, max_faults: u32, seed: u64) -> Vec<Draw> {
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
        let at = rng.random_range(FIRST_AT_MS..=window.last_at);
        let mut duration =
            rng.random_range(MIN_DURATION_MS..=MAX_DURATION_MS.min(left.max(MIN_DURATION_MS)));
        let draw = if window.brokers > 1 {
            let others: Vec<u8> = (0..window.brokers).filter(|b| *b != survivor).collect();
            let broker = others[rng.random_range(0..others.len())];
            match rng.random_range(0..3) {
                0 => Draw::BrokerDown {
                    at,
                    duration,
                    broker,
                },
                1 => Draw::BrokerFreeze {
                    at,
                    duration,
                    broker,
                },
                _ => Draw::BrokerBlock {
                    at,
                    duration,
                    broker,
                },
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
                    Draw::Reset { at }
                }
                1 => Draw::Blackhole { at, duration },
                2 => Draw::Partition {
                    at,
                    duration,
                    direction: match rng.random_range(0..3) {
                        0 => Direction::Both,
                        1 => Direction::ClientToServer,
                        _ => Direction::ServerToClient,
                    },
                },
                3 => Draw::Latency {
                    at,
                    duration,
                    latency: rng.random_range(10..=200),
                },
                4 => Draw::LinkDown {
                    at,
                    duration,
                    host: if rng.random_bool(0.5) {
                        HostRole::Client
                    } else {
                        HostRole::Server
                    },
                },
                5 => {
                    let count = rng.random_range(1..=5u32);
                    let period = rng.random_range(100..=400u64);
                    duration = u64::from(count) * period;
                    Draw::LinkFlap { at, count, period }
                }
                k => {
                    moved = true;
                    let routable_after = if rng.random_bool(0.5) { 0 } else { duration };
                    duration = routable_after;
                    if k == 6 {
                        Draw::GatewayChange { at, routable_after }
                    } else {
                        Draw::NicSwap { at, routable_after }
                    }
                }
            }
        };
        left = left.saturating_sub(duration);
        out.push(draw);
        if left < MIN_DURATION_MS {
            break;
        }
    }
    out.sort_by_key(Draw::at);
    out
}

/// When the last fault of `draws` heals.
pub fn last_heal(draws: &[Draw]) -> Duration {
    Duration::from_millis(
        draws
            .iter()
            .map(|d| d.at() + d.duration())
            .max()
            .unwrap_or(0),
    )
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
            assert!(s.iter().all(|d| (FIRST_AT_MS..=4_000).contains(&d.at())));
            let total: u64 = s.iter().map(Draw::duration).sum();
            assert!(total <= 4_000 + MAX_DURATION_MS, "{s:?}");
            let moves = s
                .iter()
                .filter(|d| matches!(d, Draw::NicSwap { .. } | Draw::GatewayChange { .. }))
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
                .map(|d| match d {
                    Draw::BrokerDown { broker, .. }
                    | Draw::BrokerFreeze { broker, .. }
                    | Draw::BrokerBlock { broker, .. } => *broker,
                    other => panic!("a path fault in a signaling schedule: {other:?}"),
                })
                .collect();
            assert!(hit.len() <= 2, "{s:?}");
        }
    }

    #[test]
    fn simpler_draws_are_simpler_or_shorter_or_earlier() {
        let d = Draw::NicSwap {
            at: 3_000,
            routable_after: 2_000,
        };
        let s = d.simpler();
        assert_eq!(
            s,
            vec![
                Draw::Blackhole {
                    at: 3_000,
                    duration: 2_000
                },
                Draw::Reset { at: 3_000 },
                Draw::NicSwap {
                    at: 3_000,
                    routable_after: 1_000
                },
                Draw::NicSwap {
                    at: 1_500,
                    routable_after: 2_000
                },
            ]
        );
        assert!(Draw::Reset { at: 200 }.simpler().is_empty());
    }
}
