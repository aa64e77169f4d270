//! A fault as written: one flat table with every field any kind takes, so
//! that every field error carries its exact path and position (serde's
//! tagged enums buffer the table and lose both). [`Raw::read`] then checks
//! the given fields against the kind's and lets the kind read them.

use super::{Direction, Fault, HostRole, KINDS, NAMES};
use crate::duration::Dur;
use serde::{Deserialize, Deserializer};
use std::time::Duration;

/// The kind named by `kind = "…"`: an index into the kinds' table.
#[derive(Clone, Copy, Debug)]
struct KindName(usize);

impl<'de> Deserialize<'de> for KindName {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let name = String::deserialize(d)?;
        KINDS
            .iter()
            .position(|k| k.name == name)
            .map(KindName)
            .ok_or_else(|| serde::de::Error::unknown_variant(&name, NAMES))
    }
}

/// A `[[faults]]` table before its kind reads it.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Raw {
    kind: KindName,
    /// When.
    pub at: Dur,
    /// How long.
    #[serde(default)]
    pub duration: Option<Dur>,
    /// Which way (partitions).
    #[serde(default)]
    pub direction: Option<Direction>,
    /// One-way latency per hop.
    #[serde(default)]
    pub latency: Option<Dur>,
    /// Spread around the latency.
    #[serde(default)]
    pub jitter: Option<Dur>,
    /// Share of packets lost.
    #[serde(default)]
    pub probability: Option<f64>,
    /// Bytes per second.
    #[serde(default)]
    pub rate: Option<u64>,
    /// Which host.
    #[serde(default)]
    pub host: Option<HostRole>,
    /// How long a new path drops traffic.
    #[serde(default)]
    pub routable_after: Option<Dur>,
    /// How long a new gateway intercepts TCP.
    #[serde(default)]
    pub captive_for: Option<Dur>,
    /// How many.
    #[serde(default)]
    pub count: Option<u32>,
    /// Length of one flap.
    #[serde(default)]
    pub period: Option<Dur>,
    /// Which broker.
    #[serde(default)]
    pub broker: Option<u8>,
    /// Trickling handshakes.
    #[serde(default)]
    pub trickle: Option<u32>,
    /// Which host firewall.
    #[serde(default)]
    pub firewall: Option<super::FirewallFlavour>,
    /// How long an idle flow is kept.
    #[serde(default)]
    pub timeout: Option<Dur>,
    /// How far a host's clock runs ahead.
    #[serde(default)]
    pub ahead: Option<Dur>,
    /// How far a host's clock runs behind.
    #[serde(default)]
    pub behind: Option<Dur>,
    /// How long a latency takes to rise (and fall).
    #[serde(default)]
    pub ramp: Option<Dur>,
    /// A path MTU, in bytes.
    #[serde(default)]
    pub mtu: Option<u32>,
}

impl Raw {
    /// The kind's name, for messages.
    pub fn kind(&self) -> &'static str {
        KINDS[self.kind.0].name
    }

    /// Checks that every field given is one the kind takes, then lets the
    /// kind read them.
    ///
    /// # Errors
    ///
    /// The first field the kind does not take, or the kind's own error.
    pub fn read(&self) -> Result<Fault, String> {
        let entry = &KINDS[self.kind.0];
        let given = [
            ("duration", self.duration.is_some()),
            ("direction", self.direction.is_some()),
            ("latency", self.latency.is_some()),
            ("jitter", self.jitter.is_some()),
            ("probability", self.probability.is_some()),
            ("rate", self.rate.is_some()),
            ("host", self.host.is_some()),
            ("routable_after", self.routable_after.is_some()),
            ("captive_for", self.captive_for.is_some()),
            ("count", self.count.is_some()),
            ("period", self.period.is_some()),
            ("broker", self.broker.is_some()),
            ("trickle", self.trickle.is_some()),
            ("firewall", self.firewall.is_some()),
            ("timeout", self.timeout.is_some()),
            ("ahead", self.ahead.is_some()),
            ("behind", self.behind.is_some()),
            ("ramp", self.ramp.is_some()),
            ("mtu", self.mtu.is_some()),
        ];
        if let Some((field, _)) = given
            .iter()
            .find(|(f, set)| *set && !entry.fields.contains(f))
        {
            return Err(format!(
                "`{field}` does not apply to a {} fault",
                entry.name
            ));
        }
        (entry.read)(self)
    }

    /// `value`, or the error that the kind needs `field`.
    ///
    /// # Errors
    ///
    /// When `value` is `None`.
    pub fn need<T>(&self, field: &str, value: Option<T>) -> Result<T, String> {
        value.ok_or_else(|| format!("a {} fault needs `{field}`", self.kind()))
    }

    /// A `duration` the kind requires, positive.
    ///
    /// # Errors
    ///
    /// Missing or zero.
    pub fn positive_duration(&self) -> Result<Dur, String> {
        match self.duration {
            Some(d) if d.0 > Duration::ZERO => Ok(d),
            Some(_) => Err("`duration` must be positive".into()),
            None => self.need("duration", None),
        }
    }

    /// `mtu`, from 1280 (IPv6's minimum) to `max`; `max_is` says what
    /// bounds it, for the message.
    ///
    /// # Errors
    ///
    /// Missing or out of range.
    pub fn mtu_up_to(&self, max: u32, max_is: &str) -> Result<u32, String> {
        let mtu = self.need("mtu", self.mtu)?;
        if (1280..=max).contains(&mtu) {
            Ok(mtu)
        } else {
            Err(format!(
                "`mtu` must be from 1280 (IPv6's minimum) to {max} ({max_is}), not {mtu}"
            ))
        }
    }

    /// A `duration` that may be absent (until the end), but not zero.
    ///
    /// # Errors
    ///
    /// Zero.
    pub fn open_ended_duration(&self) -> Result<Option<Dur>, String> {
        match self.duration {
            Some(d) if d.0.is_zero() => Err("`duration` must be positive".into()),
            d => Ok(d),
        }
    }

    /// `count` and `period` of a flap, in range.
    ///
    /// # Errors
    ///
    /// Missing, or more than 100 flaps, or a period under 2 ms.
    pub fn flaps(&self) -> Result<(u32, Dur), String> {
        let count = self.need("count", self.count)?;
        let period = self.need("period", self.period)?;
        if count == 0 || count > 100 {
            return Err("`count` must be between 1 and 100".into());
        }
        if period.0 < Duration::from_millis(2) {
            return Err("`period` must be at least 2ms".into());
        }
        Ok((count, period))
    }
}
