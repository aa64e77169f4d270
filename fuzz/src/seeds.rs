//! The seed corpus: small, meaningful inputs for every target, made with
//! the engine's own encoders (frames, envelopes), the kernel crate's own
//! emitter (netlink), the shipped scenario files, and scripts for the
//! structured targets. `cargo run -p netmend-fuzz --example seeds` writes
//! them to `corpus/<target>/seed-<name>`.

use crate::handshake::{KNOWN, NONCE};
use crate::{envelope, session, signal};
use netlink_packet_core::{NetlinkHeader, NetlinkMessage, NetlinkPayload, NLM_F_REPLACE};
use netlink_packet_route::address::{AddressAttribute, AddressMessage};
use netlink_packet_route::link::{LinkAttribute, LinkFlags, LinkMessage};
use netlink_packet_route::route::{
    RouteAddress, RouteAttribute, RouteHeader, RouteMessage, RouteNextHop, RouteProtocol,
    RouteScope, RouteType,
};
use netlink_packet_route::{AddressFamily, RouteNetlinkMessage};
use netmend::fuzzing::{Frame, KeyPair, Prover, PROTOCOL_VERSION};
use netmend::session::{RejectReason, SessionId, MAX_HANDSHAKE_FRAME};
use netmend::signal::{Envelope, Kind, MessageId, SignalKey};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::path::Path;

/// One seed: its target, its name, its bytes.
pub type Seed = (&'static str, String, Vec<u8>);

/// Every seed of every target. `repo` is the repository root (the scenario
/// seeds are the shipped scenario files).
pub fn all(repo: &Path) -> Vec<Seed> {
    let mut out = Vec::new();
    out.extend(frames().into_iter().map(|(n, b)| ("frames", n, b)));
    out.extend(handshake().into_iter().map(|(n, b)| ("handshake", n, b)));
    out.extend(
        session::seeds()
            .into_iter()
            .map(|(n, b)| ("session", n.to_string(), b)),
    );
    out.extend(envelopes().into_iter().map(|(n, b)| ("envelope", n, b)));
    out.extend(
        signal::seeds()
            .into_iter()
            .map(|(n, b)| ("signal", n.to_string(), b)),
    );
    out.extend(netlink().into_iter().map(|(n, b)| ("netlink", n, b)));
    out.extend(handover().into_iter().map(|(n, b)| ("handover", n, b)));
    out.extend(scenarios(repo).into_iter().map(|(n, b)| ("scenario", n, b)));
    out
}

fn encode(frames: &[Frame]) -> Vec<u8> {
    let mut out = Vec::new();
    for f in frames {
        f.encode(&mut out);
    }
    out
}

/// One frame of every type, and a whole conversation.
fn all_frames() -> Vec<(&'static str, Frame)> {
    vec![
        (
            "server-hello",
            Frame::ServerHello {
                version: PROTOCOL_VERSION,
                nonce: NONCE,
            },
        ),
        (
            "new-session",
            Frame::NewSession {
                version: PROTOCOL_VERSION,
                key: [0x42; 32],
            },
        ),
        (
            "resume",
            Frame::Resume {
                version: PROTOCOL_VERSION,
                session_id: KNOWN.id,
                recv_offset: 1234,
                proof: [0x77; 32],
            },
        ),
        (
            "welcome",
            Frame::Welcome {
                session_id: SessionId([1; 16]),
                key: [2; 32],
            },
        ),
        (
            "resumed",
            Frame::Resumed {
                recv_offset: 99,
                proof: [3; 32],
            },
        ),
        (
            "reject",
            Frame::Reject {
                reason: RejectReason::Busy,
            },
        ),
        (
            "data",
            Frame::Data {
                offset: 0,
                payload: bytes::Bytes::from_static(b"hello, world"),
            },
        ),
        ("ack", Frame::Ack { recv_offset: 12 }),
        ("keepalive", Frame::Keepalive { recv_offset: 12 }),
        ("fin", Frame::Fin { offset: 12 }),
        ("abort", Frame::Abort),
        (
            "window",
            Frame::Window {
                max_offset: 1 << 20,
            },
        ),
        ("close", Frame::Close),
    ]
}

fn frames() -> Vec<(String, Vec<u8>)> {
    // The first byte: the limit (low 2 bits: the default 64 KiB is 2) and
    // the chunk size of incremental feeding (the rest).
    let mut out: Vec<(String, Vec<u8>)> = all_frames()
        .into_iter()
        .map(|(n, f)| (n.to_string(), [vec![0x02 | 4 << 2], encode(&[f])].concat()))
        .collect();
    let every: Vec<Frame> = all_frames().into_iter().map(|(_, f)| f).collect();
    out.push((
        "every-frame-byte-by-byte".into(),
        [vec![0x02], encode(&every)].concat(),
    ));
    // A data frame exactly at the smallest limit (the handshake's), and one
    // a byte over it.
    let at_limit = |extra: usize| Frame::Data {
        offset: 1 << 33,
        payload: vec![0xab; MAX_HANDSHAKE_FRAME as usize - 8 + extra].into(),
    };
    out.push((
        "data-at-the-limit".into(),
        [vec![0x00], encode(&[at_limit(0)])].concat(),
    ));
    out.push((
        "data-over-the-limit".into(),
        [vec![0x00], encode(&[at_limit(1)])].concat(),
    ));
    // A header announcing more than the limit, and a malformed Ack.
    out.push((
        "oversized".into(),
        vec![0x00, 0x10, 0x00, 0x00, 0x01, 0x00, 0xff],
    ));
    out.push((
        "malformed-ack".into(),
        vec![0x02, 0x11, 0, 0, 0, 3, 1, 2, 3],
    ));
    out
}

fn handshake() -> Vec<(String, Vec<u8>)> {
    let client = KeyPair::from_random([0xc1; 32]);
    let new = Frame::NewSession {
        version: PROTOCOL_VERSION,
        key: client.public(),
    };
    let resume = |offset: u64| Frame::Resume {
        version: PROTOCOL_VERSION,
        session_id: KNOWN.id,
        recv_offset: offset,
        proof: KNOWN.proof(Prover::Client, &NONCE, offset),
    };
    let data = Frame::Data {
        offset: 0,
        payload: bytes::Bytes::from_static(b"early data"),
    };
    // The first byte: reads of (byte + 1) bytes.
    let seed = |read: u8, frames: &[Frame]| [vec![read], encode(frames)].concat();
    vec![
        ("new-session".into(), seed(255, std::slice::from_ref(&new))),
        (
            "new-session-with-data".into(),
            seed(255, &[new.clone(), data.clone(), Frame::Fin { offset: 10 }]),
        ),
        (
            "new-session-in-small-reads".into(),
            seed(6, &[new.clone(), data.clone()]),
        ),
        (
            "new-session-degenerate-key".into(),
            seed(
                255,
                &[Frame::NewSession {
                    version: PROTOCOL_VERSION,
                    key: [0; 32],
                }],
            ),
        ),
        ("resume-from-0".into(), seed(255, &[resume(0)])),
        (
            "resume-from-50-with-ack".into(),
            seed(255, &[resume(50), Frame::Ack { recv_offset: 0 }]),
        ),
        ("resume-from-100".into(), seed(255, &[resume(100)])),
        ("resume-beyond-written".into(), seed(255, &[resume(101)])),
        (
            "resume-bad-proof".into(),
            seed(
                255,
                &[Frame::Resume {
                    version: PROTOCOL_VERSION,
                    session_id: KNOWN.id,
                    recv_offset: 0,
                    proof: [0; 32],
                }],
            ),
        ),
        (
            "old-version".into(),
            seed(
                255,
                &[Frame::NewSession {
                    version: 1,
                    key: client.public(),
                }],
            ),
        ),
        (
            "unexpected-frame".into(),
            seed(
                255,
                &[Frame::Welcome {
                    session_id: KNOWN.id,
                    key: [5; 32],
                }],
            ),
        ),
        ("oversized".into(), vec![255, 0x03, 0, 0, 0x10, 0]),
    ]
}

fn envelopes() -> Vec<(String, Vec<u8>)> {
    let key = SignalKey::from_bytes(envelope::KEY);
    let message = Envelope {
        kind: Kind::Message,
        id: MessageId {
            sender: 0xa11ce,
            seq: 42,
        },
        sent_at_ms: signal::EPOCH_MS,
        ttl_ms: 30_000,
        age_ms: 1_500,
        recipient: "bob".into(),
        from: "alice".into(),
        payload: b"offer: 198.18.1.2:4000".to_vec(),
    };
    let ack = Envelope::ack(
        0xa11ce,
        &[40, 41, 42],
        "alice",
        "bob",
        signal::EPOCH_MS,
        30_000,
    );
    let mut out = Vec::new();
    for (name, e) in [("message", &message), ("ack", &ack)] {
        out.push((name.to_string(), e.encode(64 << 10).expect("fits")));
        out.push((
            format!("{name}-keyed"),
            e.encode_with(64 << 10, Some(&key)).expect("fits"),
        ));
    }
    let mut truncated = out[0].1.clone();
    truncated.truncate(truncated.len() - 3);
    out.push(("truncated".into(), truncated));
    out
}

fn nl(message: RouteNetlinkMessage, flags: u16) -> Vec<u8> {
    let mut header = NetlinkHeader::default();
    header.flags = flags;
    let mut m = NetlinkMessage::new(header, NetlinkPayload::InnerMessage(message));
    m.finalize();
    let mut buf = vec![0; m.buffer_len()];
    m.serialize(&mut buf);
    buf
}

fn link(index: u32, name: &str, up: bool) -> LinkMessage {
    let mut l = LinkMessage::default();
    l.header.index = index;
    if up {
        l.header.flags = LinkFlags::Up | LinkFlags::LowerUp | LinkFlags::Running;
    }
    l.attributes.push(LinkAttribute::IfName(name.into()));
    l
}

fn addr(index: u32, ip: IpAddr, prefix_len: u8) -> AddressMessage {
    let mut a = AddressMessage::default();
    a.header.family = match ip {
        IpAddr::V4(_) => AddressFamily::Inet,
        IpAddr::V6(_) => AddressFamily::Inet6,
    };
    a.header.index = index;
    a.header.prefix_len = prefix_len;
    if ip.is_ipv4() {
        a.attributes.push(AddressAttribute::Local(ip));
    }
    a.attributes.push(AddressAttribute::Address(ip));
    a
}

fn default_route(v6: bool, hops: &[(u32, IpAddr)], oif: Option<u32>) -> RouteMessage {
    let mut r = RouteMessage::default();
    r.header.address_family = if v6 {
        AddressFamily::Inet6
    } else {
        AddressFamily::Inet
    };
    r.header.table = RouteHeader::RT_TABLE_MAIN;
    r.header.kind = RouteType::Unicast;
    r.header.protocol = RouteProtocol::Boot;
    r.header.scope = RouteScope::Universe;
    let gw = |ip: IpAddr| match ip {
        IpAddr::V4(a) => RouteAddress::Inet(a),
        IpAddr::V6(a) => RouteAddress::Inet6(a),
    };
    r.attributes
        .push(RouteAttribute::Table(u32::from(RouteHeader::RT_TABLE_MAIN)));
    r.attributes.push(RouteAttribute::Priority(100));
    if let Some(oif) = oif {
        r.attributes.push(RouteAttribute::Oif(oif));
        r.attributes.push(RouteAttribute::Gateway(gw(hops[0].1)));
    } else {
        r.attributes.push(RouteAttribute::MultiPath(
            hops.iter()
                .map(|(i, ip)| {
                    let mut h = RouteNextHop::default();
                    h.interface_index = *i;
                    h.attributes.push(RouteAttribute::Gateway(gw(*ip)));
                    h
                })
                .collect(),
        ));
    }
    r
}

/// Real datagrams, as the kernel sends them, built with
/// netlink-packet-route's emitter (addresses from the benchmarking and
/// documentation ranges).
fn netlink() -> Vec<(String, Vec<u8>)> {
    let v4 = |d: u8| IpAddr::V4(Ipv4Addr::new(198, 18, 0, d));
    let v6 = |d: u16| IpAddr::V6(Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, d));
    let mut out = vec![
        (
            "new-link".to_string(),
            nl(RouteNetlinkMessage::NewLink(link(2, "eth0", true)), 0),
        ),
        (
            "link-down".into(),
            nl(RouteNetlinkMessage::NewLink(link(2, "eth0", false)), 0),
        ),
        (
            "del-link".into(),
            nl(RouteNetlinkMessage::DelLink(link(3, "wlan0", false)), 0),
        ),
        (
            "new-address-v4".into(),
            nl(RouteNetlinkMessage::NewAddress(addr(2, v4(2), 24)), 0),
        ),
        (
            "del-address-v6".into(),
            nl(RouteNetlinkMessage::DelAddress(addr(2, v6(2), 64)), 0),
        ),
        (
            "new-default-route-v4".into(),
            nl(
                RouteNetlinkMessage::NewRoute(default_route(false, &[(2, v4(1))], Some(2))),
                0,
            ),
        ),
        (
            "replace-default-route-v4".into(),
            nl(
                RouteNetlinkMessage::NewRoute(default_route(false, &[(3, v4(254))], Some(3))),
                NLM_F_REPLACE,
            ),
        ),
        (
            "multipath-default-route-v6".into(),
            nl(
                RouteNetlinkMessage::NewRoute(default_route(
                    true,
                    &[(2, v6(1)), (3, v6(0xfe))],
                    None,
                )),
                0,
            ),
        ),
        (
            "del-default-route-v4".into(),
            nl(
                RouteNetlinkMessage::DelRoute(default_route(false, &[(2, v4(1))], Some(2))),
                0,
            ),
        ),
    ];
    // A netconf notification (RTM_NEWNETCONF, 80: not decoded by the
    // crate, seen by type): a netlink header and a netconfmsg family byte.
    let mut netconf = Vec::new();
    netconf.extend_from_slice(&20u32.to_ne_bytes());
    netconf.extend_from_slice(&80u16.to_ne_bytes());
    netconf.extend_from_slice(&[0; 10]);
    netconf.extend_from_slice(&[2, 0, 0, 0]);
    out.push(("netconf".into(), netconf.clone()));
    // Several messages in one datagram, as the kernel batches them.
    let burst = [
        out[0].1.clone(),
        out[3].1.clone(),
        netconf,
        out[5].1.clone(),
    ]
    .concat();
    out.push(("burst".into(), burst));
    out
}

/// Headers of each socket kind, as the sending process writes them.
fn handover() -> Vec<(String, Vec<u8>)> {
    use netmend::handover::{Header, SocketKind};
    let local = "198.18.0.2:4000".parse().expect("an address");
    let peer = "[2001:db8::1]:443".parse().expect("an address");
    let h = |kind, peer, tag_len, state_len| Header {
        kind,
        local,
        peer,
        tag_len,
        state_len,
    };
    let mut out: Vec<(String, Vec<u8>)> = [
        ("tcp-stream", h(SocketKind::TcpStream, Some(peer), 4, 100)),
        ("tcp-listener", h(SocketKind::TcpListener, None, 0, 0)),
        ("udp", h(SocketKind::Udp, None, 255, 1 << 20)),
    ]
    .into_iter()
    .map(|(n, h)| (n.to_string(), h.encode().to_vec()))
    .collect();
    // With the tag and state that follow the header.
    let mut whole = out[0].1.clone();
    whole.extend_from_slice(b"web1");
    whole.extend_from_slice(&[0x5a; 100]);
    out.push(("tcp-stream-with-tag-and-state".into(), whole));
    out.push(("short".into(), out[1].1[..20].to_vec()));
    out
}

/// Every shipped scenario file.
fn scenarios(repo: &Path) -> Vec<(String, Vec<u8>)> {
    let dir = repo.join("scenarios");
    let mut out: Vec<(String, Vec<u8>)> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| e.expect("a directory entry").path())
        .filter(|p| p.extension().is_some_and(|x| x == "toml"))
        .map(|p| {
            let name = p
                .file_stem()
                .expect("a name")
                .to_string_lossy()
                .into_owned();
            (name, std::fs::read(&p).expect("readable"))
        })
        .collect();
    out.sort();
    out
}
