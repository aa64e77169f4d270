//! Crowds against the server: a hostile one (a session flood) and a
//! well-meaning one (a herd of clients that lose the server at once).

use super::{ms, Kind, Normal, Raw, Spec, Step};
use crate::duration::Dur;
use schemars::JsonSchema;
use serde::Serialize;

/// A flood against the session server, from `at`: `count` clients, spread
/// over one second, each opening a session and vanishing, and `trickle`
/// clients sending a handshake one byte every 200 ms. The scenario's
/// baseline is the engine's server without admission limits (its client
/// the engine's too); the mitigated run holds the limits of
/// `[mitigation]`, and the report shows the peak of sessions held against
/// `max_sessions`.
#[derive(Clone, Debug, PartialEq, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct SessionFlood {
    /// When it starts.
    pub at: Dur,
    /// Hit-and-run clients.
    pub count: u32,
    /// Trickling handshakes (none when absent).
    #[serde(default)]
    pub trickle: u32,
}

impl Kind for SessionFlood {
    const NAME: &'static str = "session-flood";
    const FIELDS: &'static [&'static str] = &["count", "trickle"];
    const SUMMARY: &'static str = "hit-and-run clients and trickling handshakes flood the server";
    fn example() -> Self {
        SessionFlood {
            at: ms(1_000),
            count: 1_000,
            trickle: 10,
        }
    }
    fn read(r: &Raw) -> Result<Self, String> {
        let count = r.need("count", r.count)?;
        let trickle = r.trickle.unwrap_or(0);
        if count > 100_000 || trickle > 10_000 {
            return Err(
                "a session flood takes at most 100000 clients and 10000 trickling ones".into(),
            );
        }
        Ok(SessionFlood {
            at: r.at,
            count,
            trickle,
        })
    }
}

impl Spec for SessionFlood {
    fn duration(&self) -> Option<Dur> {
        None
    }
    /// None: the flood is a program of its own, started by the backend at
    /// `at` (see `backend::floods`), not a change to the path.
    fn steps(&self, _: &Normal) -> Vec<Step> {
        Vec::new()
    }
}

/// From `at`, `count` clients (arriving over one second) each hold a
/// connection to the server's herd port (the scenario's port + 1), and
/// reconnect whenever they lose it: the crowd behind every popular
/// service. A `server-restart` makes them lose it at once. The baseline's
/// clients reconnect at once, then retry every second (the usual
/// fixed-interval loop: after a shared loss they stay in step); the
/// mitigated run's are paced by the engine's `ReconnectCore` under the
/// scenario's policy. The report shows the peak of connections the server
/// accepts per 100 ms after it returns, against `expect.max_herd_peak`,
/// and how long until every client was back.
#[derive(Clone, Debug, PartialEq, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Herd {
    /// When the clients start arriving.
    pub at: Dur,
    /// How many clients.
    pub count: u32,
}

/// The largest herd a scenario may have.
pub const MAX_HERD: u32 = 5_000;

impl Kind for Herd {
    const NAME: &'static str = "herd";
    const FIELDS: &'static [&'static str] = &["count"];
    const SUMMARY: &'static str =
        "a crowd of clients holds connections to the server and reconnects when it loses them";
    fn example() -> Self {
        Herd {
            at: ms(0),
            count: 1_000,
        }
    }
    fn read(r: &Raw) -> Result<Self, String> {
        let count = r.need("count", r.count)?;
        if count == 0 || count > MAX_HERD {
            return Err(format!("a herd has 1 to {MAX_HERD} clients"));
        }
        Ok(Herd { at: r.at, count })
    }
}

impl Spec for Herd {
    fn duration(&self) -> Option<Dur> {
        None
    }
    /// None: the herd is a program of its own (`workload::herd`), not a
    /// change to the path.
    fn steps(&self, _: &Normal) -> Vec<Step> {
        Vec::new()
    }
}
