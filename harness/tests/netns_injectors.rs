//! Every fault injector of the netns backend has its real effect on a real
//! socket. Needs root: `#[ignore]`d, run with `--include-ignored` (and
//! failing there when the kernel's tools are missing).

mod common;

use common::{control_runtime, require_netns};
use netmend_harness::backend::netns::delay::{DelayQueue, Impairment};
use netmend_harness::backend::netns::faults::{apply_rules, divert_to_queue, set_bandwidth};
use netmend_harness::backend::netns::firewall::PathRules;
use netmend_harness::backend::netns::host::HostTask;
use netmend_harness::backend::netns::lab::{Lab, LabSpec};
use netmend_harness::fault::Action;
use netmend_harness::scenario::Direction;
use std::io;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::mpsc;
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream, UdpSocket};

const PORT: u16 = 7000;

/// A lab of client, router and server with its control runtime.
struct Rig {
    rt: tokio::runtime::Runtime,
    lab: Lab,
}

impl Rig {
    fn new() -> Rig {
        let rt = control_runtime();
        let lab = rt
            .block_on(Lab::build(&LabSpec {
                router: "router".into(),
                hosts: vec!["client".into(), "server".into()],
            }))
            .expect("lab");
        Rig { rt, lab }
    }

    fn server_addr(&self, v6: bool) -> SocketAddr {
        let a = self.lab.attachment("server").expect("server");
        SocketAddr::new(a.host_addr(v6), PORT)
    }

    fn client_router_if(&self) -> String {
        self.lab
            .attachment("client")
            .expect("client")
            .router_if
            .clone()
    }
}

/// What the echo server saw: the peer and the bytes of each read.
type Seen = mpsc::Receiver<(SocketAddr, Vec<u8>, Instant)>;

/// A TCP server on the server host that echoes everything and reports it.
fn echo_server(rig: &Rig, v6: bool) -> (HostTask, Seen) {
    let (tx, rx) = mpsc::channel();
    let any: IpAddr = if v6 {
        std::net::Ipv6Addr::UNSPECIFIED.into()
    } else {
        Ipv4Addr::UNSPECIFIED.into()
    };
    let task = HostTask::spawn(rig.lab.namespace("server").unwrap(), "server", move || {
        let std_listener = std::net::TcpListener::bind(SocketAddr::new(any, PORT))?;
        std_listener.set_nonblocking(true)?;
        Ok(async move {
            let listener = TcpListener::from_std(std_listener).expect("listener");
            loop {
                let Ok((mut s, peer)) = listener.accept().await else {
                    return;
                };
                let _ = s.set_nodelay(true);
                let tx = tx.clone();
                tokio::spawn(async move {
                    let mut buf = vec![0u8; 256 << 10];
                    while let Ok(n) = s.read(&mut buf).await {
                        if n == 0 {
                            return;
                        }
                        let _ = tx.send((peer, buf[..n].to_vec(), Instant::now()));
                        if s.write_all(&buf[..n]).await.is_err() {
                            return;
                        }
                    }
                });
            }
        })
    })
    .expect("server task");
    (task, rx)
}

enum Cmd {
    Connect(SocketAddr),
    /// Write the bytes while reading their echo (concurrently, so a large
    /// echo never deadlocks on full buffers); the read result decides.
    Echo(Vec<u8>, Duration),
    Read(usize, Duration),
}

#[derive(Debug, PartialEq)]
enum Reply {
    Done(Vec<u8>),
    Failed(io::ErrorKind),
    TimedOut,
}

/// A TCP client in the client host, driven step by step from the test.
struct Client {
    commands: tokio::sync::mpsc::UnboundedSender<Cmd>,
    replies: mpsc::Receiver<Reply>,
    _task: HostTask,
}

impl Client {
    fn start(rig: &Rig) -> Client {
        let (commands, mut rx) = tokio::sync::mpsc::unbounded_channel::<Cmd>();
        let (reply, replies) = mpsc::channel();
        let task = HostTask::spawn(rig.lab.namespace("client").unwrap(), "client", move || {
            Ok(async move {
                let mut stream: Option<TcpStream> = None;
                while let Some(cmd) = rx.recv().await {
                    let r = match cmd {
                        Cmd::Connect(to) => {
                            match tokio::time::timeout(
                                Duration::from_secs(2),
                                TcpStream::connect(to),
                            )
                            .await
                            {
                                Ok(Ok(s)) => {
                                    let _ = s.set_nodelay(true);
                                    stream = Some(s);
                                    Reply::Done(Vec::new())
                                }
                                Ok(Err(e)) => Reply::Failed(e.kind()),
                                Err(_) => Reply::TimedOut,
                            }
                        }
                        Cmd::Echo(bytes, limit) => match stream.as_mut() {
                            Some(s) => {
                                let (mut r, mut w) = s.split();
                                let mut buf = vec![0u8; bytes.len()];
                                let (wrote, read) = tokio::join!(
                                    w.write_all(&bytes),
                                    tokio::time::timeout(limit, r.read_exact(&mut buf))
                                );
                                match (read, wrote) {
                                    (Ok(Ok(_)), _) => Reply::Done(buf),
                                    (Ok(Err(e)), _) | (Err(_), Err(e)) => Reply::Failed(e.kind()),
                                    (Err(_), Ok(())) => Reply::TimedOut,
                                }
                            }
                            None => Reply::Failed(io::ErrorKind::NotConnected),
                        },
                        Cmd::Read(n, limit) => match stream.as_mut() {
                            Some(s) => {
                                let mut buf = vec![0u8; n];
                                match tokio::time::timeout(limit, s.read_exact(&mut buf)).await {
                                    Ok(Ok(_)) => Reply::Done(buf),
                                    Ok(Err(e)) => Reply::Failed(e.kind()),
                                    Err(_) => Reply::TimedOut,
                                }
                            }
                            None => Reply::Failed(io::ErrorKind::NotConnected),
                        },
                    };
                    if reply.send(r).is_err() {
                        return;
                    }
                }
            })
        })
        .expect("client task");
        Client {
            commands,
            replies,
            _task: task,
        }
    }

    fn call(&self, cmd: Cmd) -> Reply {
        self.commands.send(cmd).expect("client alive");
        self.replies
            .recv_timeout(Duration::from_secs(30))
            .expect("client answers")
    }

    fn connect(&self, to: SocketAddr) -> Reply {
        self.call(Cmd::Connect(to))
    }

    fn echo(&self, bytes: &[u8], limit: Duration) -> Reply {
        self.call(Cmd::Echo(bytes.to_vec(), limit))
    }
}

fn done(bytes: &[u8]) -> Reply {
    Reply::Done(bytes.to_vec())
}

fn apply(rig: &Rig, rules: &PathRules) {
    apply_rules(&rig.lab, rules).expect("nft");
}

/// A lab with an echo server, a client whose connection has carried one
/// echo, and the router's path rules in place (nothing dropped yet).
/// Destructure with `_server` bound: dropping it stops the server.
struct Established {
    client: Client,
    seen: Seen,
    rules: PathRules,
    _server: HostTask,
    rig: Rig,
}

fn established(v6: bool) -> Established {
    let rig = Rig::new();
    let (server, seen) = echo_server(&rig, v6);
    let client = Client::start(&rig);
    let rules = PathRules::new(&rig.client_router_if());
    apply(&rig, &rules);
    assert_eq!(client.connect(rig.server_addr(v6)), done(b""));
    assert_eq!(
        client.echo(b"hello", Duration::from_secs(2)),
        done(b"hello")
    );
    let _ = seen.try_iter().count();
    Established {
        client,
        seen,
        rules,
        _server: server,
        rig,
    }
}

#[test]
#[ignore = "needs root and network namespaces (nft, iptables, tc): run with --include-ignored"]
fn reset_makes_the_established_connection_fail_with_econnreset_over_ipv4_and_ipv6() {
    require_netns("reset");
    for v6 in [false, true] {
        let Established {
            client,
            mut rules,
            rig,
            _server,
            ..
        } = established(v6);
        rules.apply(&Action::Reset);
        apply(&rig, &rules);
        // Both ends are alive; the next segment draws a RST from the path.
        assert_eq!(
            client.echo(b"again", Duration::from_secs(2)),
            Reply::Failed(io::ErrorKind::ConnectionReset),
            "v6={v6}"
        );
        // New connections pass at once.
        assert_eq!(client.connect(rig.server_addr(v6)), done(b""));
        assert_eq!(
            client.echo(b"fresh", Duration::from_secs(2)),
            done(b"fresh")
        );
    }
}

#[test]
#[ignore = "needs root and network namespaces (nft, iptables, tc): run with --include-ignored"]
fn blackhole_stalls_silently_and_the_forgotten_flow_stays_dead_after_it_heals() {
    require_netns("blackhole");
    let Established {
        client,
        seen,
        mut rules,
        rig,
        _server,
        ..
    } = established(false);
    rules.apply(&Action::Blackhole(true));
    apply(&rig, &rules);
    // No RST, no error: the read just never completes.
    assert_eq!(
        client.echo(b"two", Duration::from_millis(1500)),
        Reply::TimedOut
    );
    assert_eq!(client.connect(rig.server_addr(false)), Reply::TimedOut);
    rules.apply(&Action::Blackhole(false));
    apply(&rig, &rules);
    assert!(
        seen.try_iter().next().is_none(),
        "nothing crossed the blackhole"
    );
    // A new flow works; the old one's retransmissions are still dropped.
    assert_eq!(client.connect(rig.server_addr(false)), done(b""));
    assert_eq!(
        client.echo(b"three", Duration::from_secs(2)),
        done(b"three")
    );
    let got: Vec<Vec<u8>> = seen.try_iter().map(|(_, b, _)| b).collect();
    assert_eq!(got, vec![b"three".to_vec()]);
}

#[test]
#[ignore = "needs root and network namespaces (nft, iptables, tc): run with --include-ignored"]
fn one_way_partitions_drop_exactly_one_direction_and_tcp_recovers_after() {
    require_netns("partition");
    let Established {
        client,
        seen,
        mut rules,
        rig,
        _server,
        ..
    } = established(false);

    rules.apply(&Action::Partition {
        direction: Direction::ClientToServer,
        on: true,
    });
    apply(&rig, &rules);
    assert_eq!(
        client.echo(b"b", Duration::from_millis(600)),
        Reply::TimedOut
    );
    assert!(seen.try_iter().next().is_none(), "client-to-server is cut");

    rules.apply(&Action::Partition {
        direction: Direction::Both,
        on: false,
    });
    apply(&rig, &rules);
    // TCP retransmits: "b" arrives and comes back once the path heals.
    assert_eq!(
        client.call(Cmd::Read(1, Duration::from_secs(5))),
        done(b"b")
    );

    let _ = seen.try_iter().count();
    rules.apply(&Action::Partition {
        direction: Direction::ServerToClient,
        on: true,
    });
    apply(&rig, &rules);
    assert_eq!(
        client.echo(b"c", Duration::from_millis(600)),
        Reply::TimedOut
    );
    let (_, got, _) = seen
        .recv_timeout(Duration::from_secs(1))
        .expect("client-to-server still carries");
    assert_eq!(got, b"c");
    rules.apply(&Action::Partition {
        direction: Direction::Both,
        on: false,
    });
    apply(&rig, &rules);
    assert_eq!(
        client.call(Cmd::Read(1, Duration::from_secs(5))),
        done(b"c")
    );
}

#[test]
#[ignore = "needs root and network namespaces (nft, iptables, tc): run with --include-ignored"]
fn link_down_takes_the_carrier_and_marks_the_default_route_linkdown() {
    require_netns("link-down");
    let rig = Rig::new();
    let router_if = rig.client_router_if();
    let default_linkdown = |rig: &Rig| {
        let routes = rig.rt.block_on(rig.lab.routes("client", false)).unwrap();
        let d = routes
            .iter()
            .find(|r| r.prefix_len == 0)
            .expect("default route");
        d.linkdown
    };
    assert!(!default_linkdown(&rig));
    rig.rt
        .block_on(rig.lab.set_link_up("router", &router_if, false))
        .unwrap();
    // Carrier changes reach the routing table through linkwatch, which
    // batches non-urgent events for up to a second.
    let t = Instant::now();
    while !default_linkdown(&rig) && t.elapsed() < Duration::from_secs(3) {
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(
        default_linkdown(&rig),
        "route is linkdown while the peer is down"
    );
    let client = Client::start(&rig);
    assert_ne!(client.connect(rig.server_addr(false)), done(b""));
    rig.rt
        .block_on(rig.lab.set_link_up("router", &router_if, true))
        .unwrap();
    let t = Instant::now();
    while default_linkdown(&rig) && t.elapsed() < Duration::from_secs(3) {
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(!default_linkdown(&rig));
    let (_server, _seen) = echo_server(&rig, false);
    assert_eq!(client.connect(rig.server_addr(false)), done(b""));
}

#[test]
#[ignore = "needs root and network namespaces (nft, iptables, tc): run with --include-ignored"]
fn address_add_remove_and_replace_change_the_source_the_server_sees() {
    require_netns("address");
    let rig = Rig::new();
    let (_server, seen) = echo_server(&rig, false);
    let a = rig.lab.attachment("client").unwrap().clone();
    let new: IpAddr = Ipv4Addr::new(198, 18, a.subnet, 7).into();
    rig.rt
        .block_on(
            rig.lab
                .address_replace("client", &a.host_if, a.host_v4().into(), new, 24),
        )
        .unwrap();
    let addrs: Vec<IpAddr> = rig
        .rt
        .block_on(rig.lab.addresses("client"))
        .unwrap()
        .into_iter()
        .map(|(_, ip)| ip)
        .collect();
    assert!(addrs.contains(&new) && !addrs.contains(&IpAddr::V4(a.host_v4())));
    let client = Client::start(&rig);
    assert_eq!(client.connect(rig.server_addr(false)), done(b""));
    assert_eq!(client.echo(b"x", Duration::from_secs(2)), done(b"x"));
    let (peer, _, _) = seen.recv_timeout(Duration::from_secs(1)).unwrap();
    assert_eq!(peer.ip(), new);

    // A second address, then the first removed: the host is still reachable
    // from its remaining one.
    let extra: IpAddr = Ipv4Addr::new(198, 18, a.subnet, 8).into();
    rig.rt
        .block_on(rig.lab.address_add("client", &a.host_if, extra, 24))
        .unwrap();
    rig.rt
        .block_on(rig.lab.address_remove("client", &a.host_if, new))
        .unwrap();
    rig.rt
        .block_on(
            rig.lab
                .default_route_replace("client", a.router_v4().into(), &a.host_if),
        )
        .unwrap();
    assert_eq!(client.connect(rig.server_addr(false)), done(b""));
    assert_eq!(client.echo(b"y", Duration::from_secs(2)), done(b"y"));
    let (peer, _, _) = seen.recv_timeout(Duration::from_secs(1)).unwrap();
    assert_eq!(peer.ip(), extra);

    // Addresses outside the lab's ranges are refused before the kernel sees them.
    let foreign: IpAddr = Ipv4Addr::new(10, 0, 0, 1).into();
    assert!(rig
        .rt
        .block_on(rig.lab.address_add("client", &a.host_if, foreign, 24))
        .is_err());
}

#[test]
#[ignore = "needs root and network namespaces (nft, iptables, tc): run with --include-ignored"]
fn default_route_remove_gateway_change_and_interface_change() {
    require_netns("default-route");
    let mut rig = Rig::new();
    let (_server, seen) = echo_server(&rig, false);
    let client = Client::start(&rig);
    let a = rig.lab.attachment("client").unwrap().clone();

    rig.rt
        .block_on(rig.lab.default_route_remove("client", false))
        .unwrap();
    assert_eq!(
        client.connect(rig.server_addr(false)),
        Reply::Failed(io::ErrorKind::NetworkUnreachable)
    );

    // Gateway change on the same interface: the router answers on a second
    // address of the same link.
    let gw2: IpAddr = Ipv4Addr::new(198, 18, a.subnet, 254).into();
    rig.rt
        .block_on(rig.lab.address_add("router", &a.router_if, gw2, 24))
        .unwrap();
    rig.rt
        .block_on(rig.lab.default_route_replace("client", gw2, &a.host_if))
        .unwrap();
    let routes = rig.rt.block_on(rig.lab.routes("client", false)).unwrap();
    let d = routes.iter().find(|r| r.prefix_len == 0).unwrap();
    assert_eq!(d.gateway, Some(gw2));
    assert_eq!(client.connect(rig.server_addr(false)), done(b""));

    // Interface change: a second NIC, and the default route moves to it.
    let nic1 = rig.rt.block_on(rig.lab.add_link("client", false)).unwrap();
    rig.rt
        .block_on(
            rig.lab
                .default_route_replace("client", nic1.router_v4().into(), &nic1.host_if),
        )
        .unwrap();
    let _ = seen.try_iter().count();
    assert_eq!(client.connect(rig.server_addr(false)), done(b""));
    assert_eq!(client.echo(b"z", Duration::from_secs(2)), done(b"z"));
    let (peer, _, _) = seen.recv_timeout(Duration::from_secs(1)).unwrap();
    assert_eq!(peer.ip(), IpAddr::V4(nic1.host_v4()));
}

#[test]
#[ignore = "needs root and network namespaces (nft, iptables, tc): run with --include-ignored"]
fn bandwidth_limit_holds_a_bulk_transfer_to_the_configured_rate() {
    require_netns("bandwidth");
    let rig = Rig::new();
    let (_server, seen) = echo_server(&rig, false);
    let server_side = rig.lab.attachment("server").unwrap().router_if.clone();
    let client_side = rig.client_router_if();
    const RATE: u64 = 1 << 20;
    set_bandwidth(&rig.lab, &server_side, Some(RATE)).unwrap();
    set_bandwidth(&rig.lab, &client_side, Some(RATE)).unwrap();
    let client = Client::start(&rig);
    assert_eq!(client.connect(rig.server_addr(false)), done(b""));
    let total = 3 << 20;
    let payload = vec![7u8; total];
    assert_eq!(
        client.echo(&payload, Duration::from_secs(20)),
        done(&payload)
    );
    let reads: Vec<(usize, Instant)> = seen.try_iter().map(|(_, b, t)| (b.len(), t)).collect();
    let received: usize = reads.iter().map(|r| r.0).sum();
    assert_eq!(received, total);
    let span = reads.last().unwrap().1 - reads.first().unwrap().1;
    let rate = (total - reads[0].0) as f64 / span.as_secs_f64();
    assert!(
        rate < RATE as f64 * 1.25 && rate > RATE as f64 * 0.6,
        "measured {rate:.0} B/s against a limit of {RATE}"
    );
    set_bandwidth(&rig.lab, &server_side, None).unwrap();
}

/// Median round trip of 1-byte echoes.
fn rtts(client: &Client, n: usize) -> Vec<Duration> {
    (0..n)
        .map(|_| {
            let t = Instant::now();
            assert_eq!(client.echo(b"p", Duration::from_secs(5)), done(b"p"));
            t.elapsed()
        })
        .collect()
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

#[test]
#[ignore = "needs root and network namespaces (nft, iptables, tc): run with --include-ignored"]
fn latency_and_jitter_come_from_the_user_space_delay_queue() {
    require_netns("latency");
    let rig = Rig::new();
    let (_server, _seen) = echo_server(&rig, false);
    let client = Client::start(&rig);
    assert_eq!(client.connect(rig.server_addr(false)), done(b""));
    let base = median(rtts(&client, 20));

    let delay = Duration::from_millis(40);
    let q = DelayQueue::start(
        rig.lab.namespace("router").unwrap(),
        Impairment {
            delay,
            ..Impairment::default()
        },
        1,
    )
    .unwrap();
    divert_to_queue(&rig.lab, "router").unwrap();
    // Each direction is held `delay` once: the round trip grows by 2x.
    let added = median(rtts(&client, 20)).saturating_sub(base);
    let want = delay * 2;
    assert!(
        added >= want.mul_f64(0.8) && added <= want.mul_f64(1.2),
        "added {added:?}, configured {want:?}"
    );

    q.set(Impairment {
        delay,
        jitter: Duration::from_millis(20),
        loss: 0.0,
    });
    let samples = rtts(&client, 30);
    let (lo, hi) = (samples.iter().min().unwrap(), samples.iter().max().unwrap());
    assert!(
        *hi - *lo >= Duration::from_millis(10),
        "jitter spreads: {lo:?}..{hi:?}"
    );
    assert!(*lo >= Duration::from_millis(40) && *hi <= Duration::from_millis(130));
    q.stop().unwrap();
}

#[test]
#[ignore = "needs root and network namespaces (nft, iptables, tc): run with --include-ignored"]
fn loss_drops_the_configured_share_of_datagrams() {
    require_netns("loss");
    let rig = Rig::new();
    let q = DelayQueue::start(
        rig.lab.namespace("router").unwrap(),
        Impairment {
            loss: 0.3,
            ..Impairment::default()
        },
        9,
    )
    .unwrap();
    divert_to_queue(&rig.lab, "router").unwrap();
    let server = rig.server_addr(false);
    let (count_tx, count_rx) = mpsc::channel();
    let _sink = HostTask::spawn(rig.lab.namespace("server").unwrap(), "server", move || {
        let sock = std::net::UdpSocket::bind(server)?;
        sock.set_nonblocking(true)?;
        Ok(async move {
            let sock = UdpSocket::from_std(sock).expect("udp");
            let mut buf = [0u8; 64];
            let mut n = 0u32;
            while let Ok(Ok(_)) =
                tokio::time::timeout(Duration::from_secs(2), sock.recv(&mut buf)).await
            {
                n += 1;
            }
            let _ = count_tx.send(n);
        })
    })
    .unwrap();
    let sent = 2000u32;
    let (done_tx, done_rx) = mpsc::channel();
    let _sender = HostTask::spawn(rig.lab.namespace("client").unwrap(), "client", move || {
        Ok(async move {
            let udp = UdpSocket::bind("0.0.0.0:0").await.expect("bind");
            for i in 0..sent {
                let _ = udp.send_to(&i.to_be_bytes(), server).await;
                if i % 50 == 0 {
                    tokio::time::sleep(Duration::from_millis(2)).await;
                }
            }
            let _ = done_tx.send(());
        })
    })
    .unwrap();
    done_rx.recv_timeout(Duration::from_secs(20)).unwrap();
    let got = count_rx.recv_timeout(Duration::from_secs(20)).unwrap();
    let share = f64::from(sent - got) / f64::from(sent);
    assert!((0.25..=0.35).contains(&share), "lost {share:.3} of {sent}");
    q.stop().unwrap();
}
