//! Every configuration field at 0, 1 and its maximum either works or is
//! refused when the session is built, with a typed error naming a field:
//! no panic, no hang (paused tokio time, in-memory transports).

use super::memory::Server;
use crate::gate::GateConfig;
use crate::monitor::{
    Address, Change, Debounce, DefaultRoute, Family, Interface, Monitor, Snapshot,
};
use crate::session::{Config, SessionBuilder, SessionError, SessionErrorKind};
use crate::Policy;
use proptest::prelude::*;
use std::net::{IpAddr, Ipv4Addr};
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// The values every field is tried at.
#[derive(Clone, Copy, Debug)]
enum Level {
    Zero,
    /// The smallest step of the field's type (1 ns for a duration).
    One,
    /// 1 ms: the smallest accepted timer.
    OneMs,
    Max,
    Default,
}

const LEVELS: [Level; 5] = [
    Level::Zero,
    Level::One,
    Level::OneMs,
    Level::Max,
    Level::Default,
];

fn dur(l: Level, default: Duration) -> Duration {
    match l {
        Level::Zero => Duration::ZERO,
        Level::One => Duration::from_nanos(1),
        Level::OneMs => Duration::from_millis(1),
        Level::Max => Duration::MAX,
        Level::Default => default,
    }
}

fn int<T: From<u8>>(l: Level, max: T, default: T) -> T {
    match l {
        Level::Zero => T::from(0),
        Level::One | Level::OneMs => T::from(1),
        Level::Max => max,
        Level::Default => default,
    }
}

/// All settings of one run.
#[derive(Clone, Debug)]
struct Settings {
    config: Config,
    policy: Policy,
    gate: Option<GateConfig>,
}

/// The fields, each as a name and a setter.
type Setter = fn(&mut Settings, Level);

const FIELDS: &[(&str, Setter)] = &[
    ("replay_capacity", |s, l| {
        s.config.replay_capacity = int(l, usize::MAX, 4 << 20)
    }),
    ("receive_buffer", |s, l| {
        s.config.receive_buffer = int(l, usize::MAX, 4 << 20)
    }),
    ("max_frame_payload", |s, l| {
        s.config.max_frame_payload = int(l, u32::MAX, 64 << 10)
    }),
    ("max_data_frame", |s, l| {
        s.config.max_data_frame = int(l, usize::MAX, 1000)
    }),
    ("keepalive_interval", |s, l| {
        s.config.keepalive_interval = dur(l, Duration::from_secs(1))
    }),
    ("dead_after", |s, l| {
        s.config.dead_after = dur(l, Duration::from_secs(4))
    }),
    ("handshake_timeout", |s, l| {
        s.config.handshake_timeout = dur(l, Duration::from_secs(3))
    }),
    ("connect_timeout", |s, l| {
        s.config.connect_timeout = dur(l, Duration::from_secs(3))
    }),
    ("ack_delay", |s, l| {
        s.config.ack_delay = dur(l, Duration::from_millis(10))
    }),
    ("ack_every", |s, l| {
        s.config.ack_every = int(l, u64::MAX, 64 << 10)
    }),
    ("idle_expiry", |s, l| {
        s.config.idle_expiry = dur(l, Duration::from_secs(60))
    }),
    ("initial_delay", |s, l| {
        s.policy.initial_delay = dur(l, Duration::from_millis(100))
    }),
    ("max_delay", |s, l| {
        s.policy.max_delay = dur(l, Duration::from_secs(5))
    }),
    ("max_attempts", |s, l| {
        s.policy.max_attempts = Some(int(l, u32::MAX, 50))
    }),
    ("max_outage", |s, l| {
        s.policy.max_outage = Some(dur(l, Duration::from_secs(120)))
    }),
    ("min_stable", |s, l| {
        s.policy.min_stable = dur(l, Duration::from_secs(1))
    }),
    ("budget.capacity", |s, l| {
        s.policy.budget.capacity = int(l, u32::MAX, 100)
    }),
    ("budget.refill_every", |s, l| {
        s.policy.budget.refill_every = dur(l, Duration::from_secs(1))
    }),
    ("probe_interval", |s, l| {
        gate(s).probe_interval = dur(l, Duration::from_millis(200))
    }),
    ("max_probe_interval", |s, l| {
        gate(s).max_probe_interval = dur(l, Duration::from_secs(2))
    }),
    ("probe_timeout", |s, l| {
        gate(s).probe_timeout = dur(l, Duration::from_secs(1))
    }),
    ("deadline", |s, l| {
        gate(s).deadline = dur(l, Duration::from_secs(120))
    }),
];

fn gate(s: &mut Settings) -> &mut GateConfig {
    s.gate.get_or_insert_with(GateConfig::default)
}

fn online() -> Snapshot {
    let mut s = Snapshot::default();
    s.apply(&Change::Link(Interface {
        index: 2,
        name: "eth0".into(),
        up: true,
        carrier: true,
    }));
    s.apply(&Change::AddressAdded(Address {
        interface: 2,
        ip: IpAddr::V4(Ipv4Addr::new(198, 18, 1, 2)),
        prefix_len: 24,
    }));
    s.apply(&Change::DefaultRouteAdded(DefaultRoute {
        family: Family::V4,
        gateway: Some(IpAddr::V4(Ipv4Addr::new(198, 18, 1, 1))),
        interface: 2,
        metric: 0,
    }));
    s
}

/// What one run came to.
#[derive(Debug)]
enum Outcome {
    Worked,
    Refused(&'static str),
}

/// Builds a session with `s` (the server with the same `Config`), sends
/// a request and reads the reply. A hang is a failure of the test.
fn exchange(s: Settings) -> Result<Outcome, String> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .start_paused(true)
        .build()
        .map_err(|e| e.to_string())?;
    rt.block_on(async move {
        let work = async {
            if let Err(e) = s.config.validate() {
                // The acceptor refuses the same configuration.
                let refused = crate::session::Acceptor::new(s.config.clone()).is_err();
                assert!(refused, "the acceptor takes what the client refuses");
                return Ok(Outcome::Refused(e.field));
            }
            let (server, mut sessions) = Server::new(s.config.clone());
            let mut builder = SessionBuilder::new()
                .config(s.config.clone())
                .policy(s.policy.clone())
                .rng_seed(1);
            if let Some(g) = s.gate {
                let (monitor, _injector) = Monitor::injected(online(), Debounce::default());
                builder = builder.monitor(monitor).gate(g);
            }
            let mut client = match builder.connect(server.connector()).await {
                Ok(c) => c,
                Err(e) => return refused(e),
            };
            let mut served = sessions.recv().await.ok_or("no server session")?;
            client.write_all(b"ping").await.map_err(|e| e.to_string())?;
            client.shutdown().await.map_err(|e| e.to_string())?;
            let mut request = Vec::new();
            served
                .read_to_end(&mut request)
                .await
                .map_err(|e| e.to_string())?;
            served.write_all(b"pong").await.map_err(|e| e.to_string())?;
            served.shutdown().await.map_err(|e| e.to_string())?;
            let mut reply = Vec::new();
            client
                .read_to_end(&mut reply)
                .await
                .map_err(|e| e.to_string())?;
            if (request.as_slice(), reply.as_slice()) != (b"ping".as_slice(), b"pong".as_slice()) {
                return Err(format!("got {request:?} and {reply:?}"));
            }
            Ok(Outcome::Worked)
        };
        tokio::time::timeout(Duration::from_secs(3600), work)
            .await
            .map_err(|_| "hung for an hour of virtual time".to_string())?
    })
}

fn refused(e: SessionError) -> Result<Outcome, String> {
    match e.kind() {
        SessionErrorKind::Config(c) => Ok(Outcome::Refused(c.field)),
        other => Err(format!("neither worked nor refused: {other}")),
    }
}

#[test]
fn every_field_at_zero_one_and_max_works_or_is_refused_by_name() {
    for (name, set) in FIELDS {
        for level in LEVELS {
            let mut s = Settings {
                config: Config::default(),
                policy: Policy::default(),
                gate: None,
            };
            set(&mut s, level);
            match exchange(s) {
                Ok(Outcome::Worked) => {}
                Ok(Outcome::Refused(field)) => assert!(
                    field.ends_with(name)
                        // A bound relative to another field names that one.
                        || (*name == "keepalive_interval" && field == "Config::dead_after")
                        || (*name == "probe_interval" && field == "GateConfig::max_probe_interval")
                        || (*name == "initial_delay" && field == "Policy::max_delay"),
                    "{name} at {level:?} refused as {field}"
                ),
                Err(e) => panic!("{name} at {level:?}: {e}"),
            }
        }
    }
}

fn level() -> impl Strategy<Value = Level> {
    prop_oneof![
        Just(Level::Zero),
        Just(Level::One),
        Just(Level::OneMs),
        Just(Level::Max),
        Just(Level::Default),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]

    /// Any combination of extreme values: works or is refused, never a
    /// panic or a hang.
    #[test]
    fn any_combination_works_or_is_refused(levels in proptest::collection::vec(level(), FIELDS.len())) {
        let mut s = Settings { config: Config::default(), policy: Policy::default(), gate: None };
        for ((_, set), l) in FIELDS.iter().zip(levels) {
            set(&mut s, l);
        }
        if let Err(e) = exchange(s) {
            prop_assert!(false, "{}", e);
        }
    }
}
