//! Faults of the path at the middlebox: what happens to the packets
//! between client and server.

use super::{halved, ms, Action, Direction, Kind, Normal, Raw, Spec, Step};
use crate::duration::Dur;
use schemars::JsonSchema;
use serde::Serialize;
use std::time::Duration;

/// The middlebox resets every established connection; both endpoints stay
/// alive and new connections work at once. On sim both ends get their RST
/// at once; on netns the router answers each later segment of an old flow
/// with a RST to its sender, so a side that only receives hears of it when
/// it next sends (an ACK, a keepalive probe).
#[derive(Clone, Debug, PartialEq, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Reset {
    /// When.
    pub at: Dur,
}

impl Kind for Reset {
    const NAME: &'static str = "reset";
    const FIELDS: &'static [&'static str] = &[];
    const SUMMARY: &'static str = "the middlebox resets every established connection";
    fn example() -> Self {
        Reset { at: ms(1_000) }
    }
    fn read(r: &Raw) -> Result<Self, String> {
        Ok(Reset { at: r.at })
    }
}

impl Spec for Reset {
    fn duration(&self) -> Option<Dur> {
        None
    }
    fn steps(&self, _: &Normal) -> Vec<Step> {
        vec![Step::once(self.at, Action::Reset)]
    }
}

/// The stateful firewall on the path is reloaded and loses the state of
/// every flow it carried (a complete reload, a conntrack flush, a failover
/// to a standby without state sync): their later segments are dropped as
/// invalid, without a RST; new connections pass at once.
#[derive(Clone, Debug, PartialEq, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct FirewallReload {
    /// When.
    pub at: Dur,
}

impl Kind for FirewallReload {
    const NAME: &'static str = "firewall-reload";
    const FIELDS: &'static [&'static str] = &[];
    const SUMMARY: &'static str =
        "the path's stateful firewall forgets every flow; their segments are dropped";
    fn example() -> Self {
        FirewallReload { at: ms(1_000) }
    }
    fn read(r: &Raw) -> Result<Self, String> {
        Ok(FirewallReload { at: r.at })
    }
}

impl Spec for FirewallReload {
    fn duration(&self) -> Option<Dur> {
        None
    }
    fn steps(&self, _: &Normal) -> Vec<Step> {
        vec![Step::once(self.at, Action::ForgetFlows)]
    }
}

/// IPv6 is configured and advertised but broken on the path: every IPv6
/// packet is dropped (for `duration`, or until the end) while IPv4 works.
/// Needs a dual-stack topology (`ip = "dual"`).
#[derive(Clone, Debug, PartialEq, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Ipv6Blackhole {
    /// When.
    pub at: Dur,
    /// For how long; absent means until the end.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub duration: Option<Dur>,
}

impl Kind for Ipv6Blackhole {
    const NAME: &'static str = "ipv6-blackhole";
    const FIELDS: &'static [&'static str] = &["duration"];
    const SUMMARY: &'static str = "every IPv6 packet is dropped while IPv4 works";
    fn example() -> Self {
        Ipv6Blackhole {
            at: ms(1_000),
            duration: None,
        }
    }
    fn read(r: &Raw) -> Result<Self, String> {
        Ok(Ipv6Blackhole {
            at: r.at,
            duration: r.open_ended_duration()?,
        })
    }
}

impl Spec for Ipv6Blackhole {
    fn duration(&self) -> Option<Dur> {
        self.duration
    }
    fn steps(&self, _: &Normal) -> Vec<Step> {
        vec![Step::lasting(
            self.at,
            self.duration,
            Action::Ipv6Blackhole(true),
            Action::Ipv6Blackhole(false),
        )]
    }
    fn halve(&mut self, floor: Duration) {
        self.duration = self.duration.map(|d| halved(d, floor));
    }
}

/// From `at` to the end of the run, the middlebox forgets a flow that
/// carried nothing for `timeout`, as a NAT or stateful firewall lets an
/// idle mapping expire: the flow's later segments are dropped, without a
/// RST; new flows pass. Keepalives under the timeout keep a flow alive.
#[derive(Clone, Debug, PartialEq, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct NatIdleTimeout {
    /// When the timeout starts to apply.
    pub at: Dur,
    /// How long a flow may idle (whole seconds on netns: conntrack's unit).
    pub timeout: Dur,
}

impl Kind for NatIdleTimeout {
    const NAME: &'static str = "nat-idle-timeout";
    const FIELDS: &'static [&'static str] = &["timeout"];
    const SUMMARY: &'static str =
        "the middlebox forgets flows idle for longer than `timeout` (NAT mapping expiry)";
    fn example() -> Self {
        NatIdleTimeout {
            at: ms(0),
            timeout: ms(3_000),
        }
    }
    fn read(r: &Raw) -> Result<Self, String> {
        let timeout = r.need("timeout", r.timeout)?;
        if timeout.0 < Duration::from_secs(1) || timeout.0.subsec_nanos() != 0 {
            return Err(format!(
                "`timeout` must be a whole number of seconds, at least 1 (conntrack counts in seconds), not {timeout}"
            ));
        }
        Ok(NatIdleTimeout { at: r.at, timeout })
    }
}

impl Spec for NatIdleTimeout {
    fn duration(&self) -> Option<Dur> {
        None
    }
    fn steps(&self, _: &Normal) -> Vec<Step> {
        vec![Step::once(
            self.at,
            Action::NatIdleTimeout(Some(self.timeout.0)),
        )]
    }
}

/// The path's MTU falls below the links' (a tunnel or PPPoE link on the
/// way, a misconfigured interface) and the router that cannot forward a
/// full-size packet drops it with the ICMP "fragmentation needed" /
/// "packet too big" that would tell the sender filtered: an MTU black hole
/// (RFC 2923 section 2.1). Handshakes and small frames pass, full-size
/// segments vanish; for `duration`, or until the end.
#[derive(Clone, Debug, PartialEq, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct MtuBlackhole {
    /// When.
    pub at: Dur,
    /// The path's MTU meanwhile, in bytes (1280 to 1499: at least IPv6's
    /// minimum, below the links' 1500).
    pub mtu: u32,
    /// For how long; absent means until the end.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub duration: Option<Dur>,
}

/// The MTU of the netns lab's links (Ethernet's); what a healed
/// `mtu-blackhole` restores.
pub const LINK_MTU: u32 = 1500;

impl Kind for MtuBlackhole {
    const NAME: &'static str = "mtu-blackhole";
    const FIELDS: &'static [&'static str] = &["mtu", "duration"];
    const SUMMARY: &'static str =
        "the path's MTU falls and the ICMP that says so is filtered: full-size packets vanish";
    fn example() -> Self {
        MtuBlackhole {
            at: ms(1_000),
            mtu: 1400,
            duration: None,
        }
    }
    fn read(r: &Raw) -> Result<Self, String> {
        Ok(MtuBlackhole {
            at: r.at,
            mtu: r.mtu_up_to(LINK_MTU - 1, &format!("below the links' {LINK_MTU}"))?,
            duration: r.open_ended_duration()?,
        })
    }
}

impl Spec for MtuBlackhole {
    fn duration(&self) -> Option<Dur> {
        self.duration
    }
    fn steps(&self, _: &Normal) -> Vec<Step> {
        vec![Step::lasting(
            self.at,
            self.duration,
            Action::PathMtu(Some(self.mtu)),
            Action::PathMtu(None),
        )]
    }
    fn halve(&mut self, floor: Duration) {
        self.duration = self.duration.map(|d| halved(d, floor));
    }
}

/// The middlebox silently drops everything for `duration` and forgets the
/// flows it carried: no RST, old connections stay half-open forever, new
/// connections work once it heals.
#[derive(Clone, Debug, PartialEq, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Blackhole {
    /// When.
    pub at: Dur,
    /// For how long.
    pub duration: Dur,
}

impl Kind for Blackhole {
    const NAME: &'static str = "blackhole";
    const FIELDS: &'static [&'static str] = &["duration"];
    const SUMMARY: &'static str =
        "everything is dropped for a while; the flows it caught stay dead";
    fn example() -> Self {
        Blackhole {
            at: ms(1_000),
            duration: ms(2_000),
        }
    }
    fn read(r: &Raw) -> Result<Self, String> {
        Ok(Blackhole {
            at: r.at,
            duration: r.positive_duration()?,
        })
    }
}

impl Spec for Blackhole {
    fn duration(&self) -> Option<Dur> {
        Some(self.duration)
    }
    fn steps(&self, _: &Normal) -> Vec<Step> {
        vec![Step::lasting(
            self.at,
            Some(self.duration),
            Action::Blackhole(true),
            Action::Blackhole(false),
        )]
    }
    fn halve(&mut self, floor: Duration) {
        self.duration = halved(self.duration, floor);
    }
}

/// The client's link to the middlebox loses every packet for `duration`
/// (one way or both), then carries traffic again.
#[derive(Clone, Debug, PartialEq, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Partition {
    /// When.
    pub at: Dur,
    /// For how long.
    pub duration: Dur,
    /// Which way (both when absent).
    #[serde(default)]
    pub direction: Direction,
}

impl Kind for Partition {
    const NAME: &'static str = "partition";
    const FIELDS: &'static [&'static str] = &["duration", "direction"];
    const SUMMARY: &'static str =
        "the client's link drops every packet, one way or both, then heals";
    fn example() -> Self {
        Partition {
            at: ms(1_000),
            duration: ms(2_000),
            direction: Direction::Both,
        }
    }
    fn read(r: &Raw) -> Result<Self, String> {
        Ok(Partition {
            at: r.at,
            duration: r.positive_duration()?,
            direction: r.direction.unwrap_or_default(),
        })
    }
}

impl Spec for Partition {
    fn duration(&self) -> Option<Dur> {
        Some(self.duration)
    }
    fn steps(&self, _: &Normal) -> Vec<Step> {
        let direction = self.direction;
        vec![Step::lasting(
            self.at,
            Some(self.duration),
            Action::Partition {
                direction,
                on: true,
            },
            Action::Partition {
                direction,
                on: false,
            },
        )]
    }
    fn halve(&mut self, floor: Duration) {
        self.duration = halved(self.duration, floor);
    }
}

/// Every hop's one-way latency becomes `latency`, each packet's drawn from
/// `latency ± jitter` (for `duration`, or until the end). With `ramp` the
/// change is not a step but a queue filling and draining, as in a bloated
/// buffer under load: the latency climbs evenly over `ramp` (in
/// [`RAMP_STEPS`] steps), holds, and after `duration` falls back as evenly
/// over `ramp` again — never faster than time passes, so packets are never
/// reordered by the fall.
#[derive(Clone, Debug, PartialEq, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Latency {
    /// When.
    pub at: Dur,
    /// New one-way latency per hop.
    pub latency: Dur,
    /// Spread around `latency`; zero when absent.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub jitter: Option<Dur>,
    /// For how long; absent means until the end. With a ramp, from `at`
    /// until the fall begins.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub duration: Option<Dur>,
    /// How long the rise (and the fall) takes; absent: a step. At least
    /// `latency` (a fall faster than time passes would reorder packets)
    /// and within `duration`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ramp: Option<Dur>,
}

/// Steps of a latency ramp, each way.
pub const RAMP_STEPS: u32 = 20;

impl Kind for Latency {
    const NAME: &'static str = "latency";
    const FIELDS: &'static [&'static str] = &["latency", "jitter", "duration", "ramp"];
    const SUMMARY: &'static str =
        "every hop gets slower, at once or ramping up and down (with jitter on netns)";
    fn example() -> Self {
        Latency {
            at: ms(1_000),
            latency: ms(200),
            jitter: None,
            duration: Some(ms(2_000)),
            ramp: None,
        }
    }
    fn read(r: &Raw) -> Result<Self, String> {
        let latency = r.need("latency", r.latency)?;
        let duration = r.open_ended_duration()?;
        if let Some(ramp) = r.ramp {
            if ramp.0 < latency.0 {
                return Err(format!(
                    "`ramp` ({ramp}) must be at least `latency` ({latency}): a latency falling faster than time passes reorders packets"
                ));
            }
            if duration.is_some_and(|d| d.0 < ramp.0) {
                return Err("`ramp` must fit within `duration`".into());
            }
        }
        Ok(Latency {
            at: r.at,
            latency,
            jitter: r.jitter,
            duration,
            ramp: r.ramp,
        })
    }
}

impl Spec for Latency {
    fn duration(&self) -> Option<Dur> {
        // The path is back to normal once the fall is over.
        self.duration
            .map(|d| Dur(d.0 + self.ramp.map_or(Duration::ZERO, |r| r.0)))
    }
    fn steps(&self, normal: &Normal) -> Vec<Step> {
        let jitter = self.jitter.map(|j| j.0).unwrap_or_default();
        let to = |per_hop: Duration| Action::Latency { per_hop, jitter };
        let back = Action::Latency {
            per_hop: normal.latency,
            jitter: Duration::ZERO,
        };
        let Some(ramp) = self.ramp.filter(|r| !r.0.is_zero()) else {
            return vec![Step::lasting(
                self.at,
                self.duration,
                to(self.latency.0),
                back,
            )];
        };
        // Evenly from `normal` to `latency` over the ramp, and back.
        let (from, peak) = (normal.latency, self.latency.0);
        let between = |k: u32| {
            let span = peak.abs_diff(from) * k / RAMP_STEPS;
            if peak >= from {
                from + span
            } else {
                from - span
            }
        };
        let tick = ramp.0 / RAMP_STEPS;
        let mut steps: Vec<Step> = (1..=RAMP_STEPS)
            .map(|k| Step::once(Dur(self.at.0 + tick * (k - 1)), to(between(k))))
            .collect();
        if let Some(d) = self.duration {
            let fall = self.at.0 + d.0;
            steps.extend(
                (1..RAMP_STEPS)
                    .map(|k| Step::once(Dur(fall + tick * k), to(between(RAMP_STEPS - k)))),
            );
            steps.push(Step::once(Dur(fall + ramp.0), back));
        }
        steps
    }
    fn halve(&mut self, floor: Duration) {
        self.duration = self
            .duration
            .map(|d| halved(d, floor.max(self.ramp.map_or(Duration::ZERO, |r| r.0))));
    }
}

/// The path drops each packet with probability `probability`.
#[derive(Clone, Debug, PartialEq, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Loss {
    /// When.
    pub at: Dur,
    /// Share of packets dropped, 0 to 1.
    pub probability: f64,
    /// For how long; absent means until the end.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub duration: Option<Dur>,
}

impl Kind for Loss {
    const NAME: &'static str = "loss";
    const FIELDS: &'static [&'static str] = &["probability", "duration"];
    const SUMMARY: &'static str = "the path drops a share of packets at random";
    fn example() -> Self {
        Loss {
            at: ms(1_000),
            probability: 0.05,
            duration: Some(ms(2_000)),
        }
    }
    fn read(r: &Raw) -> Result<Self, String> {
        let probability = r.need("probability", r.probability)?;
        if !(0.0..=1.0).contains(&probability) {
            return Err("`probability` must be between 0 and 1".into());
        }
        Ok(Loss {
            at: r.at,
            probability,
            duration: r.open_ended_duration()?,
        })
    }
}

impl Spec for Loss {
    fn duration(&self) -> Option<Dur> {
        self.duration
    }
    fn steps(&self, _: &Normal) -> Vec<Step> {
        vec![Step::lasting(
            self.at,
            self.duration,
            Action::Loss(self.probability),
            Action::Loss(0.0),
        )]
    }
    fn halve(&mut self, floor: Duration) {
        self.duration = self.duration.map(|d| halved(d, floor));
    }
}

/// The path carries at most `rate` bytes per second each way (a token
/// bucket at the middlebox).
#[derive(Clone, Debug, PartialEq, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Bandwidth {
    /// When.
    pub at: Dur,
    /// Bytes per second.
    pub rate: u64,
    /// For how long; absent means until the end.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub duration: Option<Dur>,
}

impl Kind for Bandwidth {
    const NAME: &'static str = "bandwidth";
    const FIELDS: &'static [&'static str] = &["rate", "duration"];
    const SUMMARY: &'static str = "the path carries at most so many bytes per second";
    fn example() -> Self {
        Bandwidth {
            at: ms(1_000),
            rate: 65_536,
            duration: Some(ms(2_000)),
        }
    }
    fn read(r: &Raw) -> Result<Self, String> {
        let rate = r.need("rate", r.rate)?;
        if rate < 1024 {
            return Err("`rate` must be at least 1024 bytes per second".into());
        }
        Ok(Bandwidth {
            at: r.at,
            rate,
            duration: r.open_ended_duration()?,
        })
    }
}

impl Spec for Bandwidth {
    fn duration(&self) -> Option<Dur> {
        self.duration
    }
    fn steps(&self, _: &Normal) -> Vec<Step> {
        vec![Step::lasting(
            self.at,
            self.duration,
            Action::Bandwidth(Some(self.rate)),
            Action::Bandwidth(None),
        )]
    }
    fn halve(&mut self, floor: Duration) {
        self.duration = self.duration.map(|d| halved(d, floor));
    }
}
