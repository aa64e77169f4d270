//! Every simulated fault kind has a real effect, and the engine survives it.

use netmend_harness::backend::BackendKind;
use netmend_harness::plan::Variant;
use netmend_harness::runner::{self, run_one, Verdict};
use netmend_harness::scenario::{parse, Symptom};
use std::path::Path;

fn scenario(faults: &str, baseline: &str) -> netmend_harness::scenario::Scenario {
    let text = format!(
        r#"
id = "t"
catalog = "t"
description = "test"
[topology]
latency = "5ms"
[workload]
kind = "stream"
bytes = 524288
chunk = 4096
rate = 262144
{faults}
[mitigation]
policy = "resumable-session"
keepalive_interval = "250ms"
dead_after = "1s"
handshake_timeout = "500ms"
connect_timeout = "1s"
initial_backoff = "50ms"
max_backoff = "1s"
[expect]
baseline = {baseline}
recovery_within = "2s"
max_attempts = 12
deadline = "30s"
"#
    );
    parse(Path::new("t.toml"), &text).unwrap()
}

/// A partition heals: plain TCP rides it out by retransmission (no byte
/// lost, as on a real path), and the session, finding its transport silent
/// past `dead_after`, replaces it and loses nothing either.
#[test]
fn a_healed_partition_loses_nothing_and_the_session_replaces_its_silent_transport() {
    let s = scenario(
        "[[faults]]\nkind = \"partition\"\nat = \"500ms\"\nduration = \"3s\"\n",
        r#"["loss"]"#,
    );
    let (_, b) = runner::measure(BackendKind::Sim, &s, Variant::Baseline, 3, None).unwrap();
    assert_eq!((b.delivered, b.lost, b.attempts), (524288, 0, 1), "{b:?}");
    let (_, m) = runner::measure(BackendKind::Sim, &s, Variant::Mitigated, 3, Some(12)).unwrap();
    assert_eq!((m.delivered, m.lost, m.duplicated), (524288, 0, 0), "{m:?}");
    assert!(m.attempts >= 2, "the dead transport was replaced: {m:?}");
}

#[test]
fn one_way_partition_is_detected_by_keepalive_silence() {
    let s = scenario(
        "[[faults]]\nkind = \"partition\"\nat = \"500ms\"\nduration = \"3s\"\ndirection = \"server-to-client\"\n",
        r#"["stall"]"#,
    );
    let r = run_one(&s, BackendKind::Sim, 4);
    let m = r.mitigated.as_ref().unwrap();
    assert_eq!((m.lost, m.duplicated), (0, 0), "{:?}", r.reasons);
    assert!(m.attempts >= 2);
}

#[test]
fn latency_fault_delays_delivery_without_loss() {
    let s = scenario(
        "[[faults]]\nkind = \"latency\"\nat = \"500ms\"\nlatency = \"400ms\"\nduration = \"2s\"\n",
        r#"["loss"]"#,
    );
    // Nothing breaks: the baseline delivers everything too (so this scenario
    // would rightly fail its "loss" expectation)…
    let r = run_one(&s, BackendKind::Sim, 5);
    assert_eq!(r.verdict, Verdict::Fail);
    let b = r.baseline.unwrap();
    assert_eq!(b.lost, 0);
    assert!(!b.symptoms.contains(&Symptom::Loss));
    // …but the path really got slower: the stream takes longer than unpaced
    // delivery at the base latency would.
    let (rec, m) = runner::measure(BackendKind::Sim, &s, Variant::Mitigated, 5, Some(12)).unwrap();
    assert_eq!((m.lost, m.duplicated), (0, 0));
    let first_after = rec.streams[0]
        .reads
        .iter()
        .find(|(t, _)| t.as_millis() >= 500)
        .map(|(t, _)| t.as_millis())
        .unwrap();
    assert!(
        first_after >= 850,
        "a 400 ms hop delays the next read: {first_after} ms"
    );
}

/// Issue 11: the simulated path drops SYNs and answers old flows with a
/// reset, as the netns router does; nothing on the path accepts a
/// connection itself.
mod packet_rules {
    use netmend_harness::backend::path::Side;
    use netmend_harness::backend::sim::{Place, SimNet};
    use netmend_harness::fault::Action;
    use netmend_harness::workload::programs::Net;
    use std::io::ErrorKind;
    use std::sync::atomic::{AtomicU32, Ordering};
    use std::sync::Arc;
    use std::time::Duration;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    /// A world with an echo server; `client` runs against it with the
    /// router's `before` actions applied from the start. Returns how many
    /// connections the server accepted.
    fn world<F, Fut>(before: &[Action], client: F) -> u32
    where
        F: FnOnce(SimNet) -> Fut + 'static,
        Fut: std::future::Future<Output = ()> + 'static,
    {
        let mut sim = turmoil::Builder::new()
            .simulation_duration(Duration::from_secs(120))
            .min_message_latency(Duration::from_millis(5))
            .max_message_latency(Duration::from_millis(5))
            .build();
        let net = SimNet {
            place: Place {
                server: "server".into(),
                portal: "router".into(),
                ..Place::default()
            },
            ..SimNet::default()
        };
        for action in before {
            net.place.router.apply(action);
        }
        let accepted = Arc::new(AtomicU32::new(0));
        let (server_net, count) = (net.on(Side::Server), accepted.clone());
        sim.host("server", move || {
            let (net, count) = (server_net.clone(), count.clone());
            async move {
                let listener = net.bind(7000).await?;
                loop {
                    let mut s = SimNet::accept(&listener).await?;
                    count.fetch_add(1, Ordering::Relaxed);
                    tokio::spawn(async move {
                        let mut buf = [0u8; 64];
                        while let Ok(n) = s.read(&mut buf).await {
                            if n == 0 || s.write_all(&buf[..n]).await.is_err() {
                                break;
                            }
                        }
                    });
                }
            }
        });
        let client_net = net.on(Side::Client);
        sim.client("client", async move {
            client(client_net).await;
            Ok(())
        });
        sim.run().unwrap();
        accepted.load(Ordering::Relaxed)
    }

    #[test]
    fn a_connect_through_a_blackholed_path_times_out_and_reaches_nobody() {
        let accepted = world(&[Action::Blackhole(true)], |net| async move {
            let t0 = tokio::time::Instant::now();
            let r = tokio::time::timeout(Duration::from_secs(5), net.connect("server", 7000)).await;
            assert!(r.is_err(), "the connect timed out: {r:?}");
            assert_eq!(t0.elapsed(), Duration::from_secs(5));
        });
        assert_eq!(accepted, 0, "no SYN crossed the path");
    }

    #[test]
    fn a_syn_dropped_until_the_path_heals_is_retried_like_linux() {
        // Not routable for 2.5 s: SYNs at 0, 1 and 3 s; the third passes.
        let accepted = world(&[], |net| async move {
            let router = net.place.router.clone();
            router.apply(&Action::NicSwap {
                routable: false,
                captive: false,
            });
            let heal = tokio::spawn(async move {
                tokio::time::sleep(Duration::from_millis(2500)).await;
                router.apply(&Action::Routable);
            });
            let t0 = tokio::time::Instant::now();
            let mut s = net.connect("server", 7000).await.unwrap();
            let took = t0.elapsed();
            assert!(
                took >= Duration::from_secs(3) && took < Duration::from_millis(3100),
                "{took:?}"
            );
            s.write_all(b"ping").await.unwrap();
            let mut buf = [0u8; 4];
            s.read_exact(&mut buf).await.unwrap();
            assert_eq!(&buf, b"ping");
            heal.await.unwrap();
        });
        assert_eq!(accepted, 1);
    }

    #[test]
    fn after_a_reset_an_old_flow_gets_econnreset_at_its_next_send_and_new_flows_pass() {
        let accepted = world(&[], |net| async move {
            let mut s = net.connect("server", 7000).await.unwrap();
            s.write_all(b"one").await.unwrap();
            let mut buf = [0u8; 3];
            s.read_exact(&mut buf).await.unwrap();
            net.place.router.apply(&Action::Reset);
            // The segment is accepted by the kernel; its RST ends the flow.
            s.write_all(b"two").await.unwrap();
            let e = s.read(&mut buf).await.unwrap_err();
            assert_eq!(e.kind(), ErrorKind::ConnectionReset);
            assert_eq!(
                s.write_all(b"three").await.unwrap_err().kind(),
                ErrorKind::ConnectionReset
            );
            let mut fresh = net.connect("server", 7000).await.unwrap();
            fresh.write_all(b"new").await.unwrap();
            fresh.read_exact(&mut buf).await.unwrap();
            assert_eq!(&buf, b"new");
        });
        assert_eq!(accepted, 2);
    }

    #[test]
    fn a_partition_delays_bytes_that_arrive_exactly_once_after_the_heal() {
        world(&[], |net| async move {
            let mut s = net.connect("server", 7000).await.unwrap();
            let router = net.place.router.clone();
            router.apply(&Action::Partition {
                direction: netmend_harness::scenario::Direction::Both,
                on: true,
            });
            let t0 = tokio::time::Instant::now();
            s.write_all(b"held").await.unwrap();
            tokio::spawn(async move {
                tokio::time::sleep(Duration::from_millis(1000)).await;
                router.apply(&Action::Partition {
                    direction: netmend_harness::scenario::Direction::Both,
                    on: false,
                });
            });
            let mut buf = [0u8; 4];
            s.read_exact(&mut buf).await.unwrap();
            assert_eq!(&buf, b"held");
            // Retransmitted at 200 + 400 + 800 ms: the first try after the heal.
            let took = t0.elapsed();
            assert!(
                took >= Duration::from_millis(1400) && took < Duration::from_millis(1500),
                "{took:?}"
            );
        });
    }

    #[test]
    fn a_blackhole_forgets_the_flows_it_caught_for_good() {
        world(&[], |net| async move {
            let mut s = net.connect("server", 7000).await.unwrap();
            let router = net.place.router.clone();
            router.apply(&Action::Blackhole(true));
            router.apply(&Action::Blackhole(false));
            s.write_all(b"lost").await.unwrap();
            let mut buf = [0u8; 4];
            let r = tokio::time::timeout(Duration::from_secs(30), s.read(&mut buf)).await;
            assert!(r.is_err(), "nothing comes back on a forgotten flow: {r:?}");
            let mut fresh = net.connect("server", 7000).await.unwrap();
            fresh.write_all(b"back").await.unwrap();
            fresh.read_exact(&mut buf).await.unwrap();
            assert_eq!(&buf, b"back");
        });
    }
}

/// nat-idle-timeout on sim: the shipped scenario's naive client loses what
/// it writes after its pause (its flow idled out), the engine's session
/// keeps its one flow with keepalives under the timeout — and the same
/// session with keepalives slower than the timeout loses its flow too, so
/// the pass is the keepalive pacing's doing.
#[test]
fn a_nat_forgets_idle_flows_and_keepalives_under_its_timeout_keep_them() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../scenarios/nat-idle-expiry.toml");
    let text = std::fs::read_to_string(&path).unwrap();
    let r = run_one(&parse(&path, &text).unwrap(), BackendKind::Sim, 3);
    assert_eq!(r.verdict, Verdict::Pass, "{:?}", r.reasons);
    let (b, m) = (r.baseline.unwrap(), r.mitigated.unwrap());
    assert_eq!((b.delivered, b.lost), (262_144, 262_144), "{b:?}");
    assert_eq!((m.delivered, m.lost, m.attempts), (524_288, 0, 1), "{m:?}");

    let slow = text
        .replace("keepalive_interval = \"1s\"", "keepalive_interval = \"4s\"")
        .replace("dead_after = \"3s\"", "dead_after = \"5s\"")
        .replace("deadline = \"12s\"", "deadline = \"20s\"");
    assert_ne!(slow, text, "fixture drifted");
    let (_, m) = runner::measure(
        BackendKind::Sim,
        &parse(&path, &slow).unwrap(),
        Variant::Mitigated,
        3,
        None,
    )
    .unwrap();
    assert!(m.attempts > 1, "the idle flow was lost and replaced: {m:?}");
    assert_eq!(
        (m.delivered, m.lost),
        (524_288, 0),
        "and resumed exactly: {m:?}"
    );
}
