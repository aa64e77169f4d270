//! The Linux source: rtnetlink multicast notifications for links, IPv4 and
//! IPv6 addresses and routes, an initial dump, and a full re-dump when the
//! socket overflows (ENOBUFS: the kernel dropped notifications, so only a
//! fresh read of the whole state is trustworthy again).
//!
//! The notification socket is read with `netlink-sys` directly rather than
//! through `rtnetlink`'s connection, which reports a receive-buffer overflow
//! only as a log line: the monitor must see it to resync.

use super::state::{Address, Change, DefaultRoute, Family, Interface, Snapshot};
use super::MonitorError;
use futures_util::TryStreamExt;
use netlink_packet_core::{NetlinkMessage, NetlinkPayload, NLM_F_REPLACE};
use netlink_packet_route::address::{AddressAttribute, AddressMessage};
use netlink_packet_route::link::{LinkAttribute, LinkFlags, LinkMessage};
use netlink_packet_route::route::{
    RouteAddress, RouteAttribute, RouteHeader, RouteMessage, RouteType,
};
use netlink_packet_route::{AddressFamily, RouteNetlinkMessage};
use netlink_sys::{protocols::NETLINK_ROUTE, AsyncSocket, AsyncSocketExt, SocketAddr, TokioSocket};
use std::net::IpAddr;

// Legacy multicast group bits (linux/rtnetlink.h), enough for bind(2).
const RTMGRP_LINK: u32 = 0x1;
const RTMGRP_IPV4_IFADDR: u32 = 0x10;
const RTMGRP_IPV4_ROUTE: u32 = 0x40;
const RTMGRP_IPV6_IFADDR: u32 = 0x100;
const RTMGRP_IPV6_ROUTE: u32 = 0x400;
const GROUPS: u32 =
    RTMGRP_LINK | RTMGRP_IPV4_IFADDR | RTMGRP_IPV4_ROUTE | RTMGRP_IPV6_IFADDR | RTMGRP_IPV6_ROUTE;

const ENOBUFS: i32 = 105;

/// How long after a change that flushes routes silently the state is
/// re-read. The kernel announces the link or address change before its
/// notifier chain removes the routes, and route dumps do not wait for that
/// chain, so an immediate dump can still show them.
const SETTLE: std::time::Duration = std::time::Duration::from_millis(10);

/// Reads the kernel's notifications and dumps its state.
pub struct LinuxSource {
    /// When to re-read the whole state (see [`SETTLE`]).
    resync_at: Option<tokio::time::Instant>,
    socket: TokioSocket,
    handle: rtnetlink::Handle,
    connection: tokio::task::JoinHandle<()>,
}

impl Drop for LinuxSource {
    fn drop(&mut self) {
        self.connection.abort();
    }
}

fn io(op: &'static str) -> impl FnOnce(std::io::Error) -> MonitorError {
    move |source| MonitorError::Io { op, source }
}

impl LinuxSource {
    /// Subscribes to the notification groups. Must run inside a tokio
    /// runtime, on a thread in the network namespace to watch (sockets
    /// belong to the namespace of the thread that opens them).
    /// `receive_buffer` sets SO_RCVBUF (bytes); `None` keeps the default.
    pub fn open(receive_buffer: Option<usize>) -> Result<LinuxSource, MonitorError> {
        let mut socket = TokioSocket::new(NETLINK_ROUTE).map_err(io("open a netlink socket"))?;
        if let Some(size) = receive_buffer {
            socket
                .socket_ref()
                .set_rx_buf_sz(size)
                .map_err(io("set the netlink receive buffer"))?;
        }
        socket
            .socket_mut()
            .bind(&SocketAddr::new(0, GROUPS))
            .map_err(io("join the rtnetlink groups"))?;
        let (connection, handle, _) =
            rtnetlink::new_connection().map_err(io("open the rtnetlink dump socket"))?;
        let connection = tokio::spawn(connection);
        Ok(LinuxSource {
            resync_at: None,
            socket,
            handle,
            connection,
        })
    }

    /// Reads and discards every queued notification (the socket is
    /// non-blocking); returns how many datagrams were dropped.
    fn drain(&self) -> usize {
        let mut buf = vec![0u8; 64 << 10];
        let mut n = 0;
        loop {
            buf.clear();
            match self.socket.socket_ref().recv(&mut buf, 0) {
                Ok(_) => n += 1,
                Err(e) if e.raw_os_error() == Some(ENOBUFS) => continue,
                Err(_) => return n,
            }
        }
    }

    /// The kernel's whole state, read afresh.
    pub async fn dump(&self) -> Result<Snapshot, MonitorError> {
        dump(&self.handle).await
    }

    /// Waits for the next notification datagram and returns its changes;
    /// after an overflow, or shortly after a change that can take routes
    /// with it, one [`Change::Resync`] with a fresh dump.
    pub async fn next_changes(&mut self) -> Result<Vec<Change>, MonitorError> {
        let resync_at = self.resync_at;
        let received = tokio::select! {
            // Fixed order: simulations must replay exactly from their seed.
            biased;
            r = self.socket.recv_from_full() => r,
            () = async {
                match resync_at {
                    Some(t) => tokio::time::sleep_until(t).await,
                    None => std::future::pending().await,
                }
            } => {
                self.resync_at = None;
                return Ok(vec![Change::Resync(self.dump().await?)]);
            }
        };
        match received {
            Ok((bytes, _)) => {
                let changes = parse_datagram(&bytes);
                if changes.iter().any(flushes_silently) && self.resync_at.is_none() {
                    self.resync_at = Some(tokio::time::Instant::now() + SETTLE);
                }
                Ok(changes)
            }
            Err(e) if e.raw_os_error() == Some(ENOBUFS) => {
                tracing::debug!("netlink socket overflowed; re-reading the whole state");
                // The kernel reports an overflow once and then drops
                // silently until the queue has been drained; drain it first
                // so that any loss after the dump is reported again.
                let discarded = self.drain();
                tracing::debug!(discarded, "stale notifications dropped");
                Ok(vec![Change::Resync(self.dump().await?)])
            }
            Err(e) => Err(MonitorError::Io {
                op: "read netlink notifications",
                source: e,
            }),
        }
    }
}

/// Whether the kernel may have removed routes along with this change
/// without announcing them: IPv4 deletes the routes of an interface taken
/// down or removed, and the routes through a removed address's subnet,
/// without an RTM_DELROUTE each. A fresh dump after such a change keeps
/// the snapshot true.
fn flushes_silently(c: &Change) -> bool {
    match c {
        Change::Link(i) => !i.up,
        Change::LinkRemoved(_) | Change::AddressRemoved(_) => true,
        _ => false,
    }
}

/// Reads links, addresses and default routes through `handle`.
pub async fn dump(handle: &rtnetlink::Handle) -> Result<Snapshot, MonitorError> {
    let netlink = |op: &'static str| {
        move |e: rtnetlink::Error| MonitorError::Netlink {
            op,
            message: e.to_string(),
        }
    };
    let mut s = Snapshot::default();
    let links: Vec<LinkMessage> = handle
        .link()
        .get()
        .execute()
        .try_collect()
        .await
        .map_err(netlink("dump links"))?;
    for i in links.iter().filter_map(interface) {
        s.interfaces.insert(i.index, i);
    }
    let addresses: Vec<AddressMessage> = handle
        .address()
        .get()
        .execute()
        .try_collect()
        .await
        .map_err(netlink("dump addresses"))?;
    s.addresses.extend(addresses.iter().filter_map(address));
    for family in [Family::V4, Family::V6] {
        let query = match family {
            Family::V4 => rtnetlink::RouteMessageBuilder::<std::net::Ipv4Addr>::new().build(),
            Family::V6 => rtnetlink::RouteMessageBuilder::<std::net::Ipv6Addr>::new().build(),
        };
        let routes: Vec<RouteMessage> = handle
            .route()
            .get(query)
            .execute()
            .try_collect()
            .await
            .map_err(netlink("dump routes"))?;
        s.default_routes
            .extend(routes.iter().filter_map(default_route));
    }
    Ok(s)
}

/// Every change in one notification datagram (several messages may share it).
pub fn parse_datagram(mut bytes: &[u8]) -> Vec<Change> {
    let mut out = Vec::new();
    while !bytes.is_empty() {
        let msg = match NetlinkMessage::<RouteNetlinkMessage>::deserialize(bytes) {
            Ok(m) => m,
            Err(e) => {
                tracing::warn!(error = %e, "undecodable netlink message skipped");
                break;
            }
        };
        let len = msg.header.length as usize;
        let replace = msg.header.flags & NLM_F_REPLACE != 0;
        if let NetlinkPayload::InnerMessage(inner) = msg.payload {
            out.extend(change(&inner, replace));
        }
        // Messages are 4-byte aligned.
        let step = (len + 3) & !3;
        if len == 0 || step > bytes.len() {
            break;
        }
        bytes = &bytes[step..];
    }
    out
}

fn change(m: &RouteNetlinkMessage, replace: bool) -> Option<Change> {
    match m {
        RouteNetlinkMessage::NewLink(l) => interface(l).map(Change::Link),
        RouteNetlinkMessage::DelLink(l) => Some(Change::LinkRemoved(l.header.index)),
        RouteNetlinkMessage::NewAddress(a) => address(a).map(Change::AddressAdded),
        RouteNetlinkMessage::DelAddress(a) => address(a).map(Change::AddressRemoved),
        RouteNetlinkMessage::NewRoute(r) => default_route(r).map(if replace {
            Change::DefaultRouteReplaced
        } else {
            Change::DefaultRouteAdded
        }),
        RouteNetlinkMessage::DelRoute(r) => default_route(r).map(Change::DefaultRouteRemoved),
        _ => None,
    }
}

/// An interface from a link message.
pub fn interface(l: &LinkMessage) -> Option<Interface> {
    let name = l.attributes.iter().find_map(|a| match a {
        LinkAttribute::IfName(n) => Some(n.clone()),
        _ => None,
    })?;
    Some(Interface {
        index: l.header.index,
        name,
        up: l.header.flags.contains(LinkFlags::Up),
        carrier: l.header.flags.contains(LinkFlags::LowerUp),
    })
}

/// An address from an address message (IPv4: the local address, which
/// differs from `IFA_ADDRESS` on point-to-point links).
pub fn address(a: &AddressMessage) -> Option<Address> {
    let mut ip = None;
    for attr in &a.attributes {
        match attr {
            AddressAttribute::Local(l) => ip = Some(*l),
            AddressAttribute::Address(x) if ip.is_none() => ip = Some(*x),
            _ => {}
        }
    }
    Some(Address {
        interface: a.header.index,
        ip: ip?,
        prefix_len: a.header.prefix_len,
    })
}

/// A default route of the main table from a route message.
pub fn default_route(r: &RouteMessage) -> Option<DefaultRoute> {
    let family = match r.header.address_family {
        AddressFamily::Inet => Family::V4,
        AddressFamily::Inet6 => Family::V6,
        _ => return None,
    };
    if r.header.destination_prefix_length != 0 || r.header.kind != RouteType::Unicast {
        return None;
    }
    let mut table = u32::from(r.header.table);
    let (mut gateway, mut interface, mut metric) = (None, None, 0);
    for a in &r.attributes {
        match a {
            RouteAttribute::Table(t) => table = *t,
            RouteAttribute::Gateway(g) => gateway = route_address(g),
            RouteAttribute::Oif(i) => interface = Some(*i),
            RouteAttribute::Priority(p) => metric = *p,
            _ => {}
        }
    }
    if table != u32::from(RouteHeader::RT_TABLE_MAIN) {
        return None;
    }
    Some(DefaultRoute {
        family,
        gateway,
        interface: interface?,
        metric,
    })
}

/// The address in a route attribute (IPv4 or IPv6).
pub fn route_address(a: &RouteAddress) -> Option<IpAddr> {
    match a {
        RouteAddress::Inet(v4) => Some(IpAddr::V4(*v4)),
        RouteAddress::Inet6(v6) => Some(IpAddr::V6(*v6)),
        _ => None,
    }
}
