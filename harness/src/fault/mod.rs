//! Faults: each kind is one value — a struct with its fields — that knows
//! how it is written in a scenario file, when it acts, and which changes to
//! the world it makes, each paired with the change that undoes it.
//!
//! The backends implement the changes ([`Action`]), each once: the simulated
//! network in `backend::path` and `backend::sim`, the real kernel in
//! `backend::netns::faults`. A backend that cannot make a change says why
//! in one place (`backend::sim::cannot`), so a scenario needing it is
//! reported unsupported there, never run differently in silence.
//!
//! Adding a fault: a struct with an `at` field and its own fields, `impl
//! Kind` (its name in files, the fields it takes, how it reads them), `impl
//! Spec` (how long it lasts, its steps), and its name in the `kinds!` list
//! below. A fault made of changes the backends already know needs nothing
//! more; a new change is one [`Action`] variant and one arm per backend.

mod action;
mod broker;
mod flood;
mod host;
mod path;
mod raw;

pub use action::Action;
pub use broker::{BrokerBlock, BrokerDown, BrokerFlap, BrokerFreeze, ForgedPublish};
pub use flood::{Herd, SessionFlood, MAX_HERD};
pub use host::{
    AddressChange, ClockSkew, DnsFailure, FirewallFlavour, GatewayChange, HostFirewall, LinkDown,
    LinkFlap, NicSwap, ProcessRestart, RouteLoss, ServerFailover, ServerRestart, VpnUp,
    MAX_TUNNEL_MTU,
};
pub use path::{
    Bandwidth, Blackhole, FirewallReload, Ipv6Blackhole, Latency, Loss, MtuBlackhole,
    NatIdleTimeout, Partition, Reset, LINK_MTU, RAMP_STEPS,
};
pub use raw::Raw;

use crate::duration::Dur;
use schemars::JsonSchema;
use serde::{Deserialize, Deserializer, Serialize};
use std::time::Duration;

/// A host of the scenario's topology, for faults that act on one host.
#[derive(Clone, Copy, Debug, Default, Deserialize, Serialize, PartialEq, Eq, Hash, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum HostRole {
    /// The client.
    #[default]
    Client,
    /// The server.
    Server,
}

/// Which traffic a path fault hits.
#[derive(Clone, Copy, Debug, Deserialize, Serialize, PartialEq, Eq, Default, JsonSchema)]
#[serde(rename_all = "kebab-case")]
pub enum Direction {
    /// Both directions.
    #[default]
    Both,
    /// Client to server only.
    ClientToServer,
    /// Server to client only.
    ServerToClient,
}

/// The path as it is without faults: what an undo restores.
#[derive(Clone, Copy, Debug)]
pub struct Normal {
    /// One-way latency of each hop.
    pub latency: Duration,
}

/// One change a fault makes, and, unless it is for good, the change that
/// undoes it and when.
#[derive(Clone, Debug, PartialEq)]
pub struct Step {
    /// When it is made, from the start of the run.
    pub at: Duration,
    /// The change.
    pub apply: Action,
    /// When and how it is undone.
    pub undo: Option<(Duration, Action)>,
}

impl Step {
    /// A change for good (a reset, a renumbering).
    pub fn once(at: Dur, apply: Action) -> Step {
        Step {
            at: at.0,
            apply,
            undo: None,
        }
    }

    /// A change undone by `undo` after `duration`; without one (or after
    /// none), it lasts to the end of the run.
    pub fn lasting(at: Dur, duration: Option<Dur>, apply: Action, undo: Action) -> Step {
        Step {
            at: at.0,
            apply,
            undo: duration
                .filter(|d| !d.0.is_zero())
                .map(|d| (at.0 + d.0, undo)),
        }
    }
}

/// What each kind of fault does once it is read.
pub trait Spec {
    /// How long it lasts; `None` for instantaneous or open-ended faults.
    fn duration(&self) -> Option<Dur>;

    /// The changes it makes to the world, each with its undo. Empty for a
    /// fault that is a program of its own (a session flood).
    fn steps(&self, normal: &Normal) -> Vec<Step>;

    /// The signaling broker it acts on (`None` for path and host faults).
    fn broker(&self) -> Option<u8> {
        None
    }

    /// Whether the path is broken while it lasts (recovery is measured from
    /// when the path is whole again); `false` for a fault that leaves the
    /// path alone (an unreachable resolver): the other faults' recovery is
    /// judged through it.
    fn breaks_path(&self) -> bool {
        true
    }

    /// Halves what makes it last (its duration, its flaps), not below
    /// `floor`; a shrink's step towards a smaller fault. No-op for an
    /// instant.
    fn halve(&mut self, floor: Duration) {
        let _ = floor;
    }
}

/// How a kind of fault is written: its name in `kind = "…"`, the fields
/// it takes besides `kind` and `at`, and how it reads them.
pub trait Kind: Spec + Sized {
    /// The name in files.
    const NAME: &'static str;
    /// The fields it takes besides `kind` and `at`; any other is an error.
    const FIELDS: &'static [&'static str];
    /// What it does, in a few words (`netmend faults`).
    const SUMMARY: &'static str;
    /// A typical one, every field it needs set (`netmend faults`, `netmend
    /// new`, the tests).
    fn example() -> Self;
    /// Reads it from the flat form, whose given fields are all in
    /// [`Kind::FIELDS`] (checked before).
    ///
    /// # Errors
    ///
    /// A missing field or a value out of range, in one sentence.
    fn read(raw: &Raw) -> Result<Self, String>;
}

/// One kind of fault, as the reader and `netmend faults` see it.
pub struct Entry {
    /// Its name in files.
    pub name: &'static str,
    /// The fields it takes besides `kind` and `at`.
    pub fields: &'static [&'static str],
    /// What it does, in a few words.
    pub summary: &'static str,
    /// A typical one.
    pub example: fn() -> Fault,
    read: fn(&Raw) -> Result<Fault, String>,
}

/// Declares the kinds once: the [`Fault`] enum, its dispatch, and the
/// reader's table. Every kind's struct has an `at: Dur` field.
macro_rules! kinds {
    ($($kind:ident),* $(,)?) => {
        /// One scheduled fault: a value of one of the kinds. Written as a
        /// `[[faults]]` table with `kind = "…"` and the kind's fields.
        #[derive(Clone, Debug, PartialEq, Serialize, JsonSchema)]
        #[serde(tag = "kind", rename_all = "kebab-case")]
        pub enum Fault {
            // Each variant is documented by its struct, whose description
            // the JSON Schema of scenario files takes.
            $(
                $kind($kind),
            )*
        }

        impl Fault {
            fn spec(&self) -> &dyn Spec {
                match self {
                    $(Fault::$kind(f) => f,)*
                }
            }

            fn spec_mut(&mut self) -> &mut dyn Spec {
                match self {
                    $(Fault::$kind(f) => f,)*
                }
            }

            /// Short name, as in the file.
            pub fn kind(&self) -> &'static str {
                match self {
                    $(Fault::$kind(_) => <$kind as Kind>::NAME,)*
                }
            }

            /// When the fault starts.
            pub fn at(&self) -> Dur {
                match self {
                    $(Fault::$kind(f) => f.at,)*
                }
            }

            /// When the fault starts, to move it.
            pub fn at_mut(&mut self) -> &mut Dur {
                match self {
                    $(Fault::$kind(f) => &mut f.at,)*
                }
            }
        }

        $(
            impl From<$kind> for Fault {
                fn from(f: $kind) -> Fault {
                    Fault::$kind(f)
                }
            }
        )*

        /// Every kind of fault, in the order of the list.
        pub const KINDS: &[Entry] = &[
            $(Entry {
                name: <$kind as Kind>::NAME,
                fields: <$kind as Kind>::FIELDS,
                summary: <$kind as Kind>::SUMMARY,
                example: || Fault::$kind(<$kind as Kind>::example()),
                read: |raw| <$kind as Kind>::read(raw).map(Fault::$kind),
            },)*
        ];

        /// Every kind's name, for "expected one of".
        const NAMES: &[&str] = &[$(<$kind as Kind>::NAME,)*];
    };
}

kinds!(
    Reset,
    FirewallReload,
    Blackhole,
    Ipv6Blackhole,
    MtuBlackhole,
    NatIdleTimeout,
    Partition,
    Latency,
    Loss,
    Bandwidth,
    LinkDown,
    AddressChange,
    RouteLoss,
    DnsFailure,
    NicSwap,
    GatewayChange,
    VpnUp,
    LinkFlap,
    BrokerDown,
    BrokerFlap,
    BrokerFreeze,
    BrokerBlock,
    ForgedPublish,
    SessionFlood,
    Herd,
    ProcessRestart,
    ServerRestart,
    ServerFailover,
    HostFirewall,
    ClockSkew,
);

impl Fault {
    /// How long it lasts; `None` for instantaneous or open-ended faults.
    pub fn duration(&self) -> Option<Dur> {
        self.spec().duration()
    }

    /// Whether the path is broken while it lasts (see [`Spec::breaks_path`]).
    pub fn breaks_path(&self) -> bool {
        self.spec().breaks_path()
    }

    /// When the path works again (for instantaneous faults, when it hit).
    pub fn healed_at(&self) -> Dur {
        // Saturating: a file may say any time (the loader then refuses a
        // fault that ends after the deadline), never a panic.
        Dur(self
            .at()
            .0
            .saturating_add(self.duration().map(|d| d.0).unwrap_or_default()))
    }

    /// The broker a signaling fault acts on (`None` for path faults).
    pub fn broker(&self) -> Option<u8> {
        self.spec().broker()
    }

    /// The changes it makes, each with its undo.
    pub fn steps(&self, normal: &Normal) -> Vec<Step> {
        self.spec().steps(normal)
    }

    /// Halves what makes it last, not below `floor`.
    pub fn halve(&mut self, floor: Duration) {
        self.spec_mut().halve(floor);
    }

    /// The fault as a scenario file's `[[faults]]` table.
    ///
    /// # Errors
    ///
    /// Only if a value has no TOML form (a non-finite probability).
    pub fn to_toml(&self) -> Result<toml::Table, toml::ser::Error> {
        toml::Table::try_from(self)
    }
}

impl<'de> Deserialize<'de> for Fault {
    /// Through the flat [`Raw`] table, so that every field error carries
    /// its exact path and position (serde's tagged enums buffer the table
    /// and lose both).
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let raw = Raw::deserialize(d)?;
        raw.read().map_err(serde::de::Error::custom)
    }
}

/// `v` milliseconds.
fn ms(v: u64) -> Dur {
    Dur(Duration::from_millis(v))
}

/// Halves a duration, not below `floor`.
fn halved(d: Dur, floor: Duration) -> Dur {
    Dur((d.0 / 2).max(floor))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// One fault of every kind, and the optional fields the examples
    /// leave out.
    fn one_of_each() -> Vec<Fault> {
        let mut all: Vec<Fault> = KINDS.iter().map(|k| (k.example)()).collect();
        all.push(
            Latency {
                at: ms(1),
                latency: ms(40),
                jitter: Some(ms(5)),
                duration: None,
                ramp: None,
            }
            .into(),
        );
        all.push(
            Latency {
                at: ms(1),
                latency: ms(40),
                jitter: None,
                duration: Some(ms(100)),
                ramp: Some(ms(40)),
            }
            .into(),
        );
        all.push(
            GatewayChange {
                at: ms(1),
                routable_after: None,
                captive_for: Some(ms(3)),
            }
            .into(),
        );
        all.push(
            BrokerBlock {
                at: ms(1),
                broker: 2,
                host: Some(HostRole::Server),
                duration: ms(2),
            }
            .into(),
        );
        all
    }

    #[test]
    fn every_kind_is_written_as_it_is_read() {
        for f in one_of_each() {
            let table = f.to_toml().unwrap();
            assert_eq!(table["kind"].as_str(), Some(f.kind()));
            let back: Fault = table.clone().try_into().unwrap();
            assert_eq!(back, f, "{table}");
        }
    }

    #[test]
    fn the_table_names_each_kind_once_with_the_fields_it_reads() {
        let mut names = NAMES.to_vec();
        names.sort_unstable();
        names.dedup();
        assert_eq!(names.len(), KINDS.len());
        for f in one_of_each() {
            let table = f.to_toml().unwrap();
            let entry = KINDS.iter().find(|e| e.name == f.kind()).unwrap();
            for key in table.keys().filter(|k| *k != "kind" && *k != "at") {
                assert!(
                    entry.fields.contains(&key.as_str()),
                    "{key} of {}",
                    f.kind()
                );
            }
        }
    }

    #[test]
    fn a_lasting_fault_is_undone_when_it_heals_and_a_flap_flaps() {
        let normal = Normal {
            latency: Duration::from_millis(1),
        };
        let latency = Fault::from(Latency {
            at: ms(100),
            latency: ms(40),
            jitter: None,
            duration: Some(ms(50)),
            ramp: None,
        });
        assert_eq!(
            latency.steps(&normal),
            vec![Step {
                at: Duration::from_millis(100),
                apply: Action::Latency {
                    per_hop: Duration::from_millis(40),
                    jitter: Duration::ZERO,
                },
                undo: Some((
                    Duration::from_millis(150),
                    Action::Latency {
                        per_hop: Duration::from_millis(1),
                        jitter: Duration::ZERO,
                    }
                )),
            }]
        );
        let flap = Fault::from(LinkFlap {
            at: ms(100),
            count: 2,
            period: ms(10),
        });
        let times: Vec<(u128, Option<u128>)> = flap
            .steps(&normal)
            .iter()
            .map(|s| (s.at.as_millis(), s.undo.as_ref().map(|u| u.0.as_millis())))
            .collect();
        assert_eq!(times, vec![(100, Some(105)), (110, Some(115))]);
        // A swap that is routable at once has nothing to undo.
        let swap = Fault::from(NicSwap {
            at: ms(100),
            routable_after: Some(ms(0)),
            captive_for: None,
        });
        assert_eq!(swap.steps(&normal)[0].undo, None);
    }

    #[test]
    fn a_ramped_latency_climbs_and_falls_evenly_and_ends_where_it_began() {
        let normal = Normal {
            latency: Duration::from_millis(5),
        };
        let spike = Fault::from(Latency {
            at: ms(1_000),
            latency: ms(505),
            jitter: None,
            duration: Some(ms(10_000)),
            ramp: Some(ms(2_000)),
        });
        assert_eq!(spike.duration(), Some(ms(12_000)));
        let steps: Vec<(u64, u64)> = spike
            .steps(&normal)
            .iter()
            .map(|s| match s.apply {
                Action::Latency { per_hop, .. } => {
                    (s.at.as_millis() as u64, per_hop.as_millis() as u64)
                }
                ref other => panic!("{other:?}"),
            })
            .collect();
        assert_eq!(steps.len(), 2 * RAMP_STEPS as usize);
        // Up: 25 ms more every 100 ms, from the start; down likewise after
        // the 10 s, reaching the normal latency at 13 s.
        assert_eq!(&steps[..3], &[(1_000, 30), (1_100, 55), (1_200, 80)]);
        assert_eq!(steps[19], (2_900, 505));
        assert_eq!(&steps[20..22], &[(11_100, 480), (11_200, 455)]);
        assert_eq!(steps[38], (12_900, 30));
        assert_eq!(steps[39], (13_000, 5));
        // Never falling faster than time passes.
        for w in steps.windows(2) {
            assert!(w[0].1.saturating_sub(w[1].1) <= w[1].0 - w[0].0);
        }
        // A ramp shorter than the latency, or longer than the duration,
        // is refused.
        let read = |ramp: &str| {
            let text = format!(
                "kind = \"latency\"\nat = \"1s\"\nlatency = \"500ms\"\nduration = \"2s\"\nramp = \"{ramp}\"\n"
            );
            toml::from_str::<Raw>(&text).unwrap().read().map(drop)
        };
        assert!(read("1s").is_ok());
        assert!(read("400ms").unwrap_err().contains("reorders packets"));
        assert!(read("3s").unwrap_err().contains("within `duration`"));
    }

    #[test]
    fn halving_shortens_what_lasts_and_leaves_instants() {
        let mut b = Fault::from(Blackhole {
            at: ms(1),
            duration: ms(300),
        });
        b.halve(Duration::from_millis(100));
        assert_eq!(b.duration(), Some(ms(150)));
        b.halve(Duration::from_millis(100));
        assert_eq!(b.duration(), Some(ms(100)));
        let mut swap = Fault::from(NicSwap {
            at: ms(1),
            routable_after: Some(ms(150)),
            captive_for: None,
        });
        swap.halve(Duration::from_millis(100));
        assert_eq!(swap.duration(), None, "under the floor: routable at once");
        let mut r = Fault::from(Reset { at: ms(1) });
        r.halve(Duration::from_millis(100));
        assert_eq!(r, Fault::from(Reset { at: ms(1) }));
    }
}
