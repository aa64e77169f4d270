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
    RouteAddress, RouteAttribute, RouteHeader, RouteMessage, RouteNextHop, RouteType,
};
use netlink_packet_route::{AddressFamily, RouteNetlinkMessage};
use netlink_sys::{protocols::NETLINK_ROUTE, AsyncSocket, AsyncSocketExt, SocketAddr, TokioSocket};
use std::collections::BTreeSet;
use std::net::IpAddr;

// Legacy multicast group bits (linux/rtnetlink.h), enough for bind(2).
const RTMGRP_LINK: u32 = 0x1;
const RTMGRP_IPV4_IFADDR: u32 = 0x10;
const RTMGRP_IPV4_ROUTE: u32 = 0x40;
const RTMGRP_IPV6_IFADDR: u32 = 0x100;
const RTMGRP_IPV6_ROUTE: u32 = 0x400;
/// rtnetlink's netconf groups (RTNLGRP_IPV4_NETCONF = 24 and
/// RTNLGRP_IPV6_NETCONF = 25 as bits of the legacy group mask): the kernel
/// announces a change of `ignore_routes_with_linkdown` there.
const NETCONF_GROUPS: u32 = (1 << 23) | (1 << 24);

const GROUPS: u32 = RTMGRP_LINK
    | RTMGRP_IPV4_IFADDR
    | RTMGRP_IPV4_ROUTE
    | RTMGRP_IPV6_IFADDR
    | RTMGRP_IPV6_ROUTE
    | NETCONF_GROUPS;

/// RTM_NEWNETCONF and RTM_DELNETCONF, which netlink-packet-route does not
/// decode: seen by type only, they trigger a re-read of the sysctls.
const RTM_NEWNETCONF: u16 = 80;
const RTM_DELNETCONF: u16 = 81;

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
    /// Interface indexes and the linkdown policy last reported.
    interfaces: BTreeSet<(u32, String)>,
    ignore_linkdown: BTreeSet<(Family, u32)>,
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
            interfaces: BTreeSet::new(),
            ignore_linkdown: BTreeSet::new(),
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
    ///
    /// # Errors
    ///
    /// [`MonitorError`] when a netlink dump fails.
    ///
    /// # Cancel safety
    ///
    /// Cancel safe: a dropped call leaves nothing half-read behind (each
    /// dump is a fresh request).
    pub async fn dump(&mut self) -> Result<Snapshot, MonitorError> {
        let s = dump(&self.handle).await?;
        self.interfaces = s
            .interfaces
            .values()
            .map(|i| (i.index, i.name.clone()))
            .collect();
        self.ignore_linkdown = s.ignore_linkdown.clone();
        Ok(s)
    }

    /// Re-reads the linkdown sysctls; a change when they differ from what
    /// was last reported.
    fn linkdown_change(&mut self) -> Option<Change> {
        let now = read_ignore_linkdown(self.interfaces.iter().map(|(i, n)| (*i, n.as_str())));
        (now != self.ignore_linkdown).then(|| {
            self.ignore_linkdown = now.clone();
            Change::IgnoreLinkdown(now)
        })
    }

    /// Waits for the next notification datagram and returns its changes;
    /// after an overflow, or shortly after a change that can take routes
    /// with it, one [`Change::Resync`] with a fresh dump.
    ///
    /// # Errors
    ///
    /// [`MonitorError`] when the socket fails (the source is then done).
    ///
    /// # Cancel safety
    ///
    /// Cancel safe while waiting for a datagram (a datagram is read whole
    /// or not at all); a resync dropped mid-dump is due again next call.
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
                let mut changes = parse_datagram(&bytes);
                if changes.iter().any(flushes_silently) && self.resync_at.is_none() {
                    self.resync_at = Some(tokio::time::Instant::now() + SETTLE);
                }
                let mut links_changed = has_netconf(&bytes);
                for c in &changes {
                    match c {
                        Change::Link(i) => {
                            links_changed |= self.interfaces.insert((i.index, i.name.clone()));
                        }
                        Change::LinkRemoved(index) => {
                            self.interfaces.retain(|(i, _)| i != index);
                            links_changed = true;
                        }
                        _ => {}
                    }
                }
                if links_changed {
                    changes.extend(self.linkdown_change());
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
///
/// # Errors
///
/// [`MonitorError::Netlink`] when the kernel refuses a dump.
///
/// # Cancel safety
///
/// Cancel safe: nothing is kept between calls.
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
            .extend(routes.iter().flat_map(default_routes));
    }
    s.ignore_linkdown =
        read_ignore_linkdown(s.interfaces.values().map(|i| (i.index, i.name.as_str())));
    Ok(s)
}

/// Where the kernel of the calling thread's namespace ignores routes that
/// lost carrier: for each family and interface, the `all` setting or the
/// interface's own (the kernel ORs them). A file that cannot be read
/// counts as the kernel's default, 0.
pub fn read_ignore_linkdown<'a>(
    interfaces: impl Iterator<Item = (u32, &'a str)>,
) -> BTreeSet<(Family, u32)> {
    let on = |family: &str, conf: &str| {
        std::fs::read_to_string(format!(
            "/proc/sys/net/{family}/conf/{conf}/ignore_routes_with_linkdown"
        ))
        .is_ok_and(|v| v.trim() != "0")
    };
    let all = [on("ipv4", "all"), on("ipv6", "all")];
    let mut set = BTreeSet::new();
    for (index, name) in interfaces {
        for (k, (family, dir)) in [(Family::V4, "ipv4"), (Family::V6, "ipv6")]
            .into_iter()
            .enumerate()
        {
            if all[k] || on(dir, name) {
                set.insert((family, index));
            }
        }
    }
    set
}

/// Whether a datagram carries a netconf notification (`RTM_NEWNETCONF` or
/// `RTM_DELNETCONF`, which [`parse_datagram`] skips: netlink-packet-route
/// does not decode them).
pub fn has_netconf(mut bytes: &[u8]) -> bool {
    while bytes.len() >= 16 {
        let len = u32::from_ne_bytes([bytes[0], bytes[1], bytes[2], bytes[3]]) as usize;
        let kind = u16::from_ne_bytes([bytes[4], bytes[5]]);
        if kind == RTM_NEWNETCONF || kind == RTM_DELNETCONF {
            return true;
        }
        let step = (len + 3) & !3;
        if len < 16 || step > bytes.len() {
            return false;
        }
        bytes = &bytes[step..];
    }
    false
}

/// Every change in one notification datagram (several messages may share it).
pub fn parse_datagram(mut bytes: &[u8]) -> Vec<Change> {
    let mut out = Vec::new();
    while !bytes.is_empty() {
        if bytes.len() >= 6 {
            let kind = u16::from_ne_bytes([bytes[4], bytes[5]]);
            let len = u32::from_ne_bytes([bytes[0], bytes[1], bytes[2], bytes[3]]) as usize;
            if kind == RTM_NEWNETCONF || kind == RTM_DELNETCONF {
                // Not decoded here; `has_netconf` saw it.
                let step = (len + 3) & !3;
                if len == 0 || step > bytes.len() {
                    break;
                }
                bytes = &bytes[step..];
                continue;
            }
        }
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
            out.extend(changes(&inner, replace));
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

fn changes(m: &RouteNetlinkMessage, replace: bool) -> Vec<Change> {
    match m {
        RouteNetlinkMessage::NewLink(l) => interface(l).map(Change::Link).into_iter().collect(),
        RouteNetlinkMessage::DelLink(l) => vec![Change::LinkRemoved(l.header.index)],
        RouteNetlinkMessage::NewAddress(a) => {
            address(a).map(Change::AddressAdded).into_iter().collect()
        }
        RouteNetlinkMessage::DelAddress(a) => {
            address(a).map(Change::AddressRemoved).into_iter().collect()
        }
        RouteNetlinkMessage::NewRoute(r) => default_routes(r)
            .into_iter()
            .enumerate()
            .map(|(k, hop)| {
                // A replace swaps the whole route (all its next hops) under
                // its key; the other hops are then added to the new one.
                if replace && k == 0 {
                    Change::DefaultRouteReplaced(hop)
                } else {
                    Change::DefaultRouteAdded(hop)
                }
            })
            .collect(),
        RouteNetlinkMessage::DelRoute(r) => default_routes(r)
            .into_iter()
            .map(Change::DefaultRouteRemoved)
            .collect(),
        _ => Vec::new(),
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

/// A default route of the main table from a route message: its first next
/// hop for a multipath route (see [`default_routes`] for all of them).
pub fn default_route(r: &RouteMessage) -> Option<DefaultRoute> {
    default_routes(r).into_iter().next()
}

/// Every next hop of a default route of the main table, one
/// [`DefaultRoute`] each: one for a plain route, several for a multipath
/// route (`RTA_MULTIPATH`, IPv4 `nexthop … nexthop …` or IPv6 `append`).
pub fn default_routes(r: &RouteMessage) -> Vec<DefaultRoute> {
    let family = match r.header.address_family {
        AddressFamily::Inet => Family::V4,
        AddressFamily::Inet6 => Family::V6,
        _ => return Vec::new(),
    };
    if r.header.destination_prefix_length != 0 || r.header.kind != RouteType::Unicast {
        return Vec::new();
    }
    let mut table = u32::from(r.header.table);
    let (mut gateway, mut interface, mut metric) = (None, None, 0);
    let mut hops: &[RouteNextHop] = &[];
    for a in &r.attributes {
        match a {
            RouteAttribute::Table(t) => table = *t,
            RouteAttribute::Gateway(g) => gateway = route_address(g),
            RouteAttribute::Oif(i) => interface = Some(*i),
            RouteAttribute::Priority(p) => metric = *p,
            RouteAttribute::MultiPath(h) => hops = h,
            _ => {}
        }
    }
    if table != u32::from(RouteHeader::RT_TABLE_MAIN) {
        return Vec::new();
    }
    let mut out: Vec<DefaultRoute> = hops
        .iter()
        .map(|h| DefaultRoute {
            family,
            gateway: h.attributes.iter().find_map(|a| match a {
                RouteAttribute::Gateway(g) => route_address(g),
                _ => None,
            }),
            interface: h.interface_index,
            metric,
        })
        .collect();
    if let Some(interface) = interface {
        out.push(DefaultRoute {
            family,
            gateway,
            interface,
            metric,
        });
    }
    out
}

/// The address in a route attribute (IPv4 or IPv6).
pub fn route_address(a: &RouteAddress) -> Option<IpAddr> {
    match a {
        RouteAddress::Inet(v4) => Some(IpAddr::V4(*v4)),
        RouteAddress::Inet6(v6) => Some(IpAddr::V6(*v6)),
        _ => None,
    }
}
