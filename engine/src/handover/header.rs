//! The handover header: what travels beside a descriptor, so that the
//! receiver knows what it got and can check it. Sans-IO: bytes in, a
//! [`Header`] or a typed error out, and back.
//!
//! Wire format, version 1 (all integers big-endian; documented in the
//! README for receivers in other languages):
//!
//! | offset | size | field |
//! | --- | --- | --- |
//! | 0 | 4 | magic `NMHO` |
//! | 4 | 1 | version, 1 |
//! | 5 | 1 | kind: 1 TCP stream, 2 TCP listener, 3 UDP socket |
//! | 6 | 1 | tag length `T`, 0–255 |
//! | 7 | 1 | reserved, 0 |
//! | 8 | 4 | state length `S`, at most [`MAX_STATE`] |
//! | 12 | 19 | local address |
//! | 31 | 19 | peer address |
//! | 50 | `T` | tag, UTF-8 |
//! | 50 + `T` | `S` | state, opaque |
//!
//! An address is 1 byte family (4, 6, or 0 for none), 16 bytes of address
//! (IPv4 in the first 4, the rest zero) and 2 bytes port. The descriptor
//! rides (`SCM_RIGHTS`) on the message's first byte.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

/// The header's fixed part, before tag and state.
pub const HEADER_LEN: usize = 50;
/// The largest state a handover carries: a session's resume state with its
/// unacknowledged bytes fits (the replay buffer's default is 4 MiB); larger
/// is refused before anything is read.
pub const MAX_STATE: u32 = 64 << 20;
/// The wire format's version.
pub const VERSION: u8 = 1;
const MAGIC: &[u8; 4] = b"NMHO";
const ADDR_LEN: usize = 19;

/// What kind of socket a handover carries.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum SocketKind {
    /// A connected TCP stream.
    TcpStream,
    /// A listening TCP socket.
    TcpListener,
    /// A UDP socket, connected or not.
    Udp,
}

impl SocketKind {
    fn code(self) -> u8 {
        match self {
            SocketKind::TcpStream => 1,
            SocketKind::TcpListener => 2,
            SocketKind::Udp => 3,
        }
    }

    fn of(code: u8) -> Option<SocketKind> {
        match code {
            1 => Some(SocketKind::TcpStream),
            2 => Some(SocketKind::TcpListener),
            3 => Some(SocketKind::Udp),
            _ => None,
        }
    }
}

/// The fixed part of a handover message.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Header {
    /// The socket's kind.
    pub kind: SocketKind,
    /// Its local address.
    pub local: SocketAddr,
    /// Its peer, for a connected socket.
    pub peer: Option<SocketAddr>,
    /// Length of the tag that follows.
    pub tag_len: u8,
    /// Length of the state after the tag.
    pub state_len: u32,
}

/// Why a header was refused.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum HeaderError {
    /// Fewer than [`HEADER_LEN`] bytes.
    #[error("a handover header is {HEADER_LEN} bytes, got {0}")]
    Short(usize),
    /// Not a netmend handover.
    #[error("not a netmend handover (bad magic)")]
    Magic,
    /// A version this build does not speak.
    #[error("handover format version {0}, this build speaks {VERSION}")]
    Version(u8),
    /// An unknown socket kind.
    #[error("unknown socket kind {0}")]
    Kind(u8),
    /// The reserved byte is not zero.
    #[error("reserved header byte is {0}, not 0")]
    Reserved(u8),
    /// An address that cannot be read, in the named field.
    #[error("bad {0} address")]
    Address(&'static str),
    /// A listener or stream without a local address family.
    #[error("a handed socket has a local address")]
    NoLocal,
    /// A listener with a peer address.
    #[error("a {kind:?} {} a peer address", if *.has_peer { "cannot have" } else { "must have" })]
    Peer {
        /// The claimed kind.
        kind: SocketKind,
        /// Whether the header names a peer.
        has_peer: bool,
    },
    /// More state than [`MAX_STATE`].
    #[error("{0} bytes of state, at most {MAX_STATE}")]
    TooLarge(u32),
}

impl Header {
    /// The header's bytes, [`HEADER_LEN`] of them.
    pub fn encode(&self) -> [u8; HEADER_LEN] {
        let mut out = [0u8; HEADER_LEN];
        out[..4].copy_from_slice(MAGIC);
        out[4] = VERSION;
        out[5] = self.kind.code();
        out[6] = self.tag_len;
        out[8..12].copy_from_slice(&self.state_len.to_be_bytes());
        put_addr(&mut out[12..12 + ADDR_LEN], Some(self.local));
        put_addr(&mut out[31..31 + ADDR_LEN], self.peer);
        out
    }

    /// Reads and checks a header: everything a receiver can check before it
    /// looks at the descriptor.
    ///
    /// # Errors
    ///
    /// [`HeaderError`] for each way the bytes can be wrong.
    pub fn decode(bytes: &[u8]) -> Result<Header, HeaderError> {
        let b = bytes
            .get(..HEADER_LEN)
            .ok_or(HeaderError::Short(bytes.len()))?;
        if &b[..4] != MAGIC {
            return Err(HeaderError::Magic);
        }
        if b[4] != VERSION {
            return Err(HeaderError::Version(b[4]));
        }
        let kind = SocketKind::of(b[5]).ok_or(HeaderError::Kind(b[5]))?;
        if b[7] != 0 {
            return Err(HeaderError::Reserved(b[7]));
        }
        let state_len = u32::from_be_bytes([b[8], b[9], b[10], b[11]]);
        if state_len > MAX_STATE {
            return Err(HeaderError::TooLarge(state_len));
        }
        let local = get_addr(&b[12..12 + ADDR_LEN])
            .map_err(|()| HeaderError::Address("local"))?
            .ok_or(HeaderError::NoLocal)?;
        let peer = get_addr(&b[31..31 + ADDR_LEN]).map_err(|()| HeaderError::Address("peer"))?;
        // A stream has a peer — unless it was reset before it was sent
        // (its first read then reports the reset); a listener never has one.
        let peer_ok = kind != SocketKind::TcpListener || peer.is_none();
        if !peer_ok {
            return Err(HeaderError::Peer {
                kind,
                has_peer: peer.is_some(),
            });
        }
        Ok(Header {
            kind,
            local,
            peer,
            tag_len: b[6],
            state_len,
        })
    }
}

fn put_addr(out: &mut [u8], addr: Option<SocketAddr>) {
    match addr {
        None => {}
        Some(SocketAddr::V4(a)) => {
            out[0] = 4;
            out[1..5].copy_from_slice(&a.ip().octets());
            out[17..19].copy_from_slice(&a.port().to_be_bytes());
        }
        Some(SocketAddr::V6(a)) => {
            out[0] = 6;
            out[1..17].copy_from_slice(&a.ip().octets());
            out[17..19].copy_from_slice(&a.port().to_be_bytes());
        }
    }
}

/// `Ok(None)` for "no address" (family 0, all zero), `Err` for anything
/// that is not an address.
fn get_addr(b: &[u8]) -> Result<Option<SocketAddr>, ()> {
    let port = u16::from_be_bytes([b[17], b[18]]);
    match b[0] {
        0 if b.iter().all(|&x| x == 0) => Ok(None),
        4 if b[5..17].iter().all(|&x| x == 0) => {
            let ip = Ipv4Addr::new(b[1], b[2], b[3], b[4]);
            Ok(Some(SocketAddr::new(IpAddr::V4(ip), port)))
        }
        6 => {
            let mut octets = [0u8; 16];
            octets.copy_from_slice(&b[1..17]);
            Ok(Some(SocketAddr::new(
                IpAddr::V6(Ipv6Addr::from(octets)),
                port,
            )))
        }
        _ => Err(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn header(kind: SocketKind, peer: Option<SocketAddr>) -> Header {
        Header {
            kind,
            local: "198.18.0.2:4000".parse().expect("address"),
            peer,
            tag_len: 3,
            state_len: 10,
        }
    }

    #[test]
    fn the_wire_bytes_are_the_documented_ones() {
        let h = header(
            SocketKind::TcpStream,
            Some("[2001:db8::1]:443".parse().expect("address")),
        );
        let b = h.encode();
        assert_eq!(&b[..12], b"NMHO\x01\x01\x03\x00\x00\x00\x00\x0a");
        assert_eq!(&b[12..17], &[4, 198, 18, 0, 2]);
        assert_eq!(&b[29..31], &4000u16.to_be_bytes());
        assert_eq!(b[31], 6);
        assert_eq!(&b[32..34], &[0x20, 0x01]);
        assert_eq!(&b[48..50], &443u16.to_be_bytes());
        assert_eq!(Header::decode(&b), Ok(h));
    }

    #[test]
    fn every_kind_of_wrong_header_is_refused_with_its_reason() {
        let good = header(SocketKind::TcpListener, None).encode();
        assert_eq!(Header::decode(&good[..49]), Err(HeaderError::Short(49)));
        let mut b = good;
        b[0] = b'X';
        assert_eq!(Header::decode(&b), Err(HeaderError::Magic));
        let mut b = good;
        b[4] = 2;
        assert_eq!(Header::decode(&b), Err(HeaderError::Version(2)));
        let mut b = good;
        b[5] = 9;
        assert_eq!(Header::decode(&b), Err(HeaderError::Kind(9)));
        let mut b = good;
        b[7] = 1;
        assert_eq!(Header::decode(&b), Err(HeaderError::Reserved(1)));
        let mut b = good;
        b[8..12].copy_from_slice(&(MAX_STATE + 1).to_be_bytes());
        assert_eq!(
            Header::decode(&b),
            Err(HeaderError::TooLarge(MAX_STATE + 1))
        );
        let mut b = good;
        b[12] = 5;
        assert_eq!(Header::decode(&b), Err(HeaderError::Address("local")));
        let mut b = good;
        b[12..31].fill(0);
        assert_eq!(Header::decode(&b), Err(HeaderError::NoLocal));
        // A listener with a peer, a stream without one.
        let mut b = good;
        b[31] = 4;
        assert_eq!(
            Header::decode(&b),
            Err(HeaderError::Peer {
                kind: SocketKind::TcpListener,
                has_peer: true
            })
        );
        // A stream without a peer (reset before it was sent) is a stream.
        let mut b = good;
        b[5] = 1;
        assert_eq!(
            Header::decode(&b).map(|h| (h.kind, h.peer)),
            Ok((SocketKind::TcpStream, None))
        );
    }

    fn addr() -> impl Strategy<Value = SocketAddr> {
        prop_oneof![
            (any::<[u8; 4]>(), any::<u16>())
                .prop_map(|(ip, port)| SocketAddr::new(IpAddr::from(ip), port)),
            (any::<[u8; 16]>(), any::<u16>())
                .prop_map(|(ip, port)| SocketAddr::new(IpAddr::from(ip), port)),
        ]
    }

    proptest! {
        #[test]
        fn every_header_round_trips(
            local in addr(),
            peer in addr(),
            kind in prop_oneof![
                Just(SocketKind::TcpStream),
                Just(SocketKind::TcpListener),
                Just(SocketKind::Udp)
            ],
            tag_len in any::<u8>(),
            state_len in 0..=MAX_STATE,
        ) {
            let peer = (kind != SocketKind::TcpListener).then_some(peer);
            let h = Header { kind, local, peer, tag_len, state_len };
            prop_assert_eq!(Header::decode(&h.encode()), Ok(h));
        }

        #[test]
        fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..80)) {
            let _ = Header::decode(&bytes);
        }
    }
}
