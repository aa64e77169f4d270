//! Faults of the signaling brokers: crashes, freezes, a firewall on their
//! port, and a hostile publisher.

use super::{halved, ms, Action, HostRole, Kind, Normal, Raw, Spec, Step};
use crate::duration::Dur;
use schemars::JsonSchema;
use serde::Serialize;
use std::time::Duration;

/// Signaling broker `broker` crashes: its process dies with every
/// connection, subscription and message in flight (a real broker with
/// persistence off). After `duration` it starts again, empty; without one
/// it stays down.
#[derive(Clone, Debug, PartialEq, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct BrokerDown {
    /// When.
    pub at: Dur,
    /// Which broker (index into the topology's brokers).
    pub broker: u8,
    /// How long until it restarts.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub duration: Option<Dur>,
}

impl Kind for BrokerDown {
    const NAME: &'static str = "broker-down";
    const FIELDS: &'static [&'static str] = &["broker", "duration"];
    const SUMMARY: &'static str = "a signaling broker crashes and restarts empty";
    fn example() -> Self {
        BrokerDown {
            at: ms(1_000),
            broker: 0,
            duration: Some(ms(2_000)),
        }
    }
    fn read(r: &Raw) -> Result<Self, String> {
        Ok(BrokerDown {
            at: r.at,
            broker: r.need("broker", r.broker)?,
            duration: r.open_ended_duration()?,
        })
    }
}

impl Spec for BrokerDown {
    fn duration(&self) -> Option<Dur> {
        self.duration
    }
    fn steps(&self, _: &Normal) -> Vec<Step> {
        let index = self.broker;
        vec![Step::lasting(
            self.at,
            self.duration,
            Action::Broker { index, down: true },
            Action::Broker { index, down: false },
        )]
    }
    fn broker(&self) -> Option<u8> {
        Some(self.broker)
    }
    fn halve(&mut self, floor: Duration) {
        self.duration = self.duration.map(|d| halved(d, floor));
    }
}

/// Broker `broker` crashes and restarts empty `count` times, one flap every
/// `period` (down for half of it).
#[derive(Clone, Debug, PartialEq, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct BrokerFlap {
    /// When the first crash happens.
    pub at: Dur,
    /// Which broker.
    pub broker: u8,
    /// Flaps.
    pub count: u32,
    /// Length of one flap.
    pub period: Dur,
}

impl Kind for BrokerFlap {
    const NAME: &'static str = "broker-flap";
    const FIELDS: &'static [&'static str] = &["broker", "count", "period"];
    const SUMMARY: &'static str = "a broker crashes and restarts, again and again";
    fn example() -> Self {
        BrokerFlap {
            at: ms(1_000),
            broker: 0,
            count: 3,
            period: ms(1_000),
        }
    }
    fn read(r: &Raw) -> Result<Self, String> {
        let (count, period) = r.flaps()?;
        Ok(BrokerFlap {
            at: r.at,
            broker: r.need("broker", r.broker)?,
            count,
            period,
        })
    }
}

impl Spec for BrokerFlap {
    fn duration(&self) -> Option<Dur> {
        Some(Dur(self.period.0 * self.count))
    }
    fn steps(&self, _: &Normal) -> Vec<Step> {
        let index = self.broker;
        (0..self.count)
            .map(|i| {
                Step::lasting(
                    Dur(self.at.0 + self.period.0 * i),
                    Some(Dur(self.period.0 / 2)),
                    Action::Broker { index, down: true },
                    Action::Broker { index, down: false },
                )
            })
            .collect()
    }
    fn broker(&self) -> Option<u8> {
        Some(self.broker)
    }
    fn halve(&mut self, _: Duration) {
        self.count = (self.count / 2).max(1);
    }
}

/// Broker `broker` freezes (SIGSTOP) for `duration`: its connections stay
/// open and look alive until a keepalive says otherwise, what it is sent
/// waits, and it delivers late when it thaws (SIGCONT).
#[derive(Clone, Debug, PartialEq, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct BrokerFreeze {
    /// When.
    pub at: Dur,
    /// Which broker.
    pub broker: u8,
    /// How long it stays frozen.
    pub duration: Dur,
}

impl Kind for BrokerFreeze {
    const NAME: &'static str = "broker-freeze";
    const FIELDS: &'static [&'static str] = &["broker", "duration"];
    const SUMMARY: &'static str = "a broker freezes (SIGSTOP), then thaws and delivers late";
    fn example() -> Self {
        BrokerFreeze {
            at: ms(1_000),
            broker: 0,
            duration: ms(2_000),
        }
    }
    fn read(r: &Raw) -> Result<Self, String> {
        Ok(BrokerFreeze {
            at: r.at,
            broker: r.need("broker", r.broker)?,
            duration: r.positive_duration()?,
        })
    }
}

impl Spec for BrokerFreeze {
    fn duration(&self) -> Option<Dur> {
        Some(self.duration)
    }
    fn steps(&self, _: &Normal) -> Vec<Step> {
        let index = self.broker;
        vec![Step::lasting(
            self.at,
            Some(self.duration),
            Action::BrokerFreeze {
                index,
                frozen: true,
            },
            Action::BrokerFreeze {
                index,
                frozen: false,
            },
        )]
    }
    fn broker(&self) -> Option<u8> {
        Some(self.broker)
    }
    fn halve(&mut self, floor: Duration) {
        self.duration = halved(self.duration, floor);
    }
}

/// Traffic between `host` (or, without one, both peers) and broker
/// `broker` is dropped for `duration`, as by a firewall on the port:
/// nothing is refused, TCP retransmits into silence.
#[derive(Clone, Debug, PartialEq, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct BrokerBlock {
    /// When.
    pub at: Dur,
    /// Which broker.
    pub broker: u8,
    /// Which peer is cut off from it (both if none).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub host: Option<HostRole>,
    /// How long.
    pub duration: Dur,
}

impl Kind for BrokerBlock {
    const NAME: &'static str = "broker-block";
    const FIELDS: &'static [&'static str] = &["broker", "host", "duration"];
    const SUMMARY: &'static str = "traffic to a broker's port is dropped, as by a firewall";
    fn example() -> Self {
        BrokerBlock {
            at: ms(1_000),
            broker: 0,
            host: None,
            duration: ms(2_000),
        }
    }
    fn read(r: &Raw) -> Result<Self, String> {
        Ok(BrokerBlock {
            at: r.at,
            broker: r.need("broker", r.broker)?,
            host: r.host,
            duration: r.positive_duration()?,
        })
    }
}

impl Spec for BrokerBlock {
    fn duration(&self) -> Option<Dur> {
        Some(self.duration)
    }
    fn steps(&self, _: &Normal) -> Vec<Step> {
        let (index, host) = (self.broker, self.host);
        vec![Step::lasting(
            self.at,
            Some(self.duration),
            Action::BrokerBlock {
                index,
                host,
                blocked: true,
            },
            Action::BrokerBlock {
                index,
                host,
                blocked: false,
            },
        )]
    }
    fn broker(&self) -> Option<u8> {
        Some(self.broker)
    }
    fn halve(&mut self, floor: Duration) {
        self.duration = halved(self.duration, floor);
    }
}

/// A hostile publisher on the receiver's topic, through broker `broker`:
/// it records what it sees there from the start, and at `at` publishes
/// `count` forgeries — replays of genuine envelopes, the real sender's id
/// with huge sequence numbers, foreign ids, altered bytes and garbage.
#[derive(Clone, Debug, PartialEq, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ForgedPublish {
    /// When it publishes.
    pub at: Dur,
    /// Through which broker.
    pub broker: u8,
    /// How many forgeries.
    pub count: u32,
}

impl Kind for ForgedPublish {
    const NAME: &'static str = "forged-publish";
    const FIELDS: &'static [&'static str] = &["broker", "count"];
    const SUMMARY: &'static str = "a hostile publisher sends forgeries through a broker";
    fn example() -> Self {
        ForgedPublish {
            at: ms(1_000),
            broker: 0,
            count: 10,
        }
    }
    fn read(r: &Raw) -> Result<Self, String> {
        let count = r.need("count", r.count)?;
        if count == 0 || count > 100_000 {
            return Err("`count` must be between 1 and 100000".into());
        }
        Ok(ForgedPublish {
            at: r.at,
            broker: r.need("broker", r.broker)?,
            count,
        })
    }
}

impl Spec for ForgedPublish {
    fn duration(&self) -> Option<Dur> {
        None
    }
    fn steps(&self, _: &Normal) -> Vec<Step> {
        vec![Step::once(
            self.at,
            Action::Forge {
                index: self.broker,
                count: self.count,
            },
        )]
    }
    fn broker(&self) -> Option<u8> {
        Some(self.broker)
    }
}
