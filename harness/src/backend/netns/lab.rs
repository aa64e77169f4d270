//! A lab: namespaces joined by veth links to one router, built and changed
//! through rtnetlink. The injectors here are the kernel operations faults
//! are made of (link, address and route changes); firewall faults live in
//! `firewall`, delay and loss in `delay`.
//!
//! Addressing (binding, see DESIGN.md): host `k` (1-based) sits on
//! 198.18.k.0/24 and 2001:db8:0:k::/64, the host at `.2`/`::2`, the router at
//! `.1`/`::1`. Each host's default routes point at the router; the router has
//! no default route, so nothing in the lab can reach beyond it.

use super::namespace::{Namespace, PREFIX};
use super::LabError;
use futures_util::TryStreamExt;
use netlink_packet_route::address::{AddressAttribute, AddressMessage};
use netlink_packet_route::link::{InfoData, InfoVeth, LinkAttribute, LinkMessage};
use netlink_packet_route::neighbour::NeighbourState;
use netlink_packet_route::route::{RouteAttribute, RouteFlags, RouteHeader, RouteMessage};
use rtnetlink::{Handle, LinkUnspec, LinkVeth, RouteMessageBuilder};
use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::os::fd::AsRawFd;
use std::os::unix::process::CommandExt;
use std::process::{Command, Output, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Mutex;

/// Which hosts hang off the router.
#[derive(Clone, Debug)]
pub struct LabSpec {
    /// Name of the router (the scenario's middlebox).
    pub router: String,
    /// Hosts, each on its own link to the router, in subnet order.
    pub hosts: Vec<String>,
}

/// One host's link to the router.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Attachment {
    /// Host name.
    pub host: String,
    /// Interface name on the host.
    pub host_if: String,
    /// Interface name on the router.
    pub router_if: String,
    /// Subnet number `k` (198.18.k.0/24).
    pub subnet: u8,
}

impl Attachment {
    /// The host's IPv4 address.
    pub fn host_v4(&self) -> Ipv4Addr {
        Ipv4Addr::new(198, 18, self.subnet, 2)
    }
    /// The router's IPv4 address on this link.
    pub fn router_v4(&self) -> Ipv4Addr {
        Ipv4Addr::new(198, 18, self.subnet, 1)
    }
    /// The host's IPv6 address.
    pub fn host_v6(&self) -> Ipv6Addr {
        Ipv6Addr::new(0x2001, 0xdb8, 0, self.subnet.into(), 0, 0, 0, 2)
    }
    /// The router's IPv6 address on this link.
    pub fn router_v6(&self) -> Ipv6Addr {
        Ipv6Addr::new(0x2001, 0xdb8, 0, self.subnet.into(), 0, 0, 0, 1)
    }
    /// The host's address in `family`.
    pub fn host_addr(&self, v6: bool) -> IpAddr {
        if v6 {
            self.host_v6().into()
        } else {
            self.host_v4().into()
        }
    }
}

/// A namespace of the lab with its netlink handle.
struct Node {
    ns: Namespace,
    handle: Handle,
    connection: tokio::task::JoinHandle<()>,
}

/// Prefixes of labs alive in this process, for the Ctrl-C handler.
static LIVE: Mutex<Vec<String>> = Mutex::new(Vec::new());
static NEXT_LAB: AtomicU32 = AtomicU32::new(0);

/// Removes every lab of this process (the Ctrl-C path). No namespace is
/// created from then on, and one being created is waited for.
pub fn remove_live_labs() -> Vec<String> {
    let _stopped = super::namespace::stop_creating();
    let prefixes = std::mem::take(&mut *LIVE.lock().unwrap_or_else(|e| e.into_inner()));
    prefixes
        .iter()
        .flat_map(|p| super::namespace::remove_matching(&format!("{p}-")))
        .collect()
}

/// Registers a name prefix for the Ctrl-C handler while it lives (for
/// namespaces made outside a [`Lab`], such as the `ip` side of the bench).
pub struct LiveGuard(String);

impl LiveGuard {
    /// Registers `prefix`.
    pub fn new(prefix: &str) -> LiveGuard {
        LIVE.lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(prefix.to_string());
        LiveGuard(prefix.to_string())
    }
}

impl LiveGuard {
    /// Unregisters the prefix (its namespaces are gone).
    pub fn release(&self) {
        LIVE.lock()
            .unwrap_or_else(|e| e.into_inner())
            .retain(|p| p != &self.0);
    }
}

impl Drop for LiveGuard {
    fn drop(&mut self) {
        self.release();
    }
}

/// How a new link's host end starts.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum HostSide {
    /// Up, addressed, default routes through it.
    Primary,
    /// Up and addressed.
    Secondary,
    /// Down and unaddressed.
    Standby,
}

/// First interface index of the router's veth ends (hosts get small
/// kernel-assigned indexes, which these never meet).
const ROUTER_IF_INDEX_BASE: u32 = 1000;

/// A built lab. Dropping it removes everything it created.
pub struct Lab {
    /// Keeps the prefix registered for the Ctrl-C handler until removal.
    live: LiveGuard,
    prefix: String,
    router: String,
    nodes: BTreeMap<String, Node>,
    attachments: Vec<Attachment>,
}

/// Interface names are at most 15 bytes.
fn if_name(base: &str) -> String {
    let mut s = format!("{PREFIX}{base}");
    s.truncate(15);
    s
}

fn sysctl(path: &str, value: &str) -> Result<(), LabError> {
    std::fs::write(path, value).map_err(|e| LabError::io(format!("write {path}"), e))
}

fn netlink(op: impl Into<String>) -> impl FnOnce(rtnetlink::Error) -> LabError {
    let op = op.into();
    move |source| LabError::Netlink { op, source }
}

impl Lab {
    /// Builds the lab: one namespace per host and one for the router, a veth
    /// per host, addresses, routes and forwarding. Must run inside a tokio
    /// runtime, which drives the netlink sockets.
    pub async fn build(spec: &LabSpec) -> Result<Lab, LabError> {
        let prefix = format!(
            "{PREFIX}{:x}-{}",
            std::process::id(),
            NEXT_LAB.fetch_add(1, Ordering::Relaxed)
        );
        let mut lab = Lab {
            live: LiveGuard::new(&prefix),
            prefix,
            router: spec.router.clone(),
            nodes: BTreeMap::new(),
            attachments: Vec::new(),
        };
        // On error, `lab` drops here and removes whatever was made.
        lab.add_node(&spec.router, true)?;
        for (i, host) in spec.hosts.iter().enumerate() {
            if host == &spec.router || lab.nodes.contains_key(host) {
                return Err(LabError::BadName(format!("host `{host}` named twice")));
            }
            let subnet =
                u8::try_from(i + 1).map_err(|_| LabError::BadName("more than 255 hosts".into()))?;
            lab.add_node(host, false)?;
            lab.attach(host, subnet, "eth0", HostSide::Primary).await?;
        }
        Ok(lab)
    }

    fn add_node(&mut self, name: &str, router: bool) -> Result<(), LabError> {
        let ns_name = format!("{}-{}", self.prefix, name);
        let runtime = tokio::runtime::Handle::current();
        let (ns, (connection, handle)) = Namespace::create(&ns_name, || {
            // Link-local addresses would fall outside the lab's ranges, and
            // duplicate address detection would hold new IPv6 addresses
            // back for a second; the loopback stays down (no 127/8, ::1).
            sysctl("/proc/sys/net/ipv6/conf/default/addr_gen_mode", "1")?;
            sysctl("/proc/sys/net/ipv6/conf/all/accept_dad", "0")?;
            sysctl("/proc/sys/net/ipv6/conf/default/accept_dad", "0")?;
            // Carrier and admin changes keep addresses, as on a real NIC
            // whose cable is pulled.
            sysctl("/proc/sys/net/ipv6/conf/all/keep_addr_on_down", "1")?;
            sysctl("/proc/sys/net/ipv6/conf/default/keep_addr_on_down", "1")?;
            if router {
                sysctl("/proc/sys/net/ipv4/ip_forward", "1")?;
                sysctl("/proc/sys/net/ipv6/conf/all/forwarding", "1")?;
            } else {
                // An address change adds the new address before removing the
                // old one; without promotion, removing a primary IPv4 address
                // takes every secondary of its subnet with it.
                sysctl("/proc/sys/net/ipv4/conf/all/promote_secondaries", "1")?;
                sysctl("/proc/sys/net/ipv4/conf/default/promote_secondaries", "1")?;
            }
            let _entered = runtime.enter();
            let (connection, handle, _) =
                rtnetlink::new_connection().map_err(|e| LabError::io("open rtnetlink", e))?;
            Ok((connection, handle))
        })?;
        let connection = tokio::spawn(connection);
        self.nodes.insert(
            name.to_string(),
            Node {
                ns,
                handle,
                connection,
            },
        );
        Ok(())
    }

    /// Gives `host` one more link to the router (its next NIC, `nm-eth1`,
    /// …) on a fresh subnet, with addresses but without touching the host's
    /// default routes: what plugging in a second interface does.
    ///
    /// With `standby`, the host's end stays down and unaddressed until
    /// [`Lab::configure_host_side`] (a NIC waiting for its network).
    pub async fn add_link(&mut self, host: &str, standby: bool) -> Result<Attachment, LabError> {
        let nics = self.attachments.iter().filter(|a| a.host == host).count();
        let subnet = self
            .attachments
            .iter()
            .map(|a| a.subnet)
            .max()
            .unwrap_or(0)
            .checked_add(1)
            .ok_or_else(|| LabError::BadName("no subnet left".into()))?;
        let side = if standby {
            HostSide::Standby
        } else {
            HostSide::Secondary
        };
        self.attach(host, subnet, &format!("eth{nics}"), side)
            .await?;
        self.attachments
            .last()
            .cloned()
            .ok_or_else(|| LabError::BadName("link vanished".into()))
    }

    /// Brings a standby NIC (see [`Lab::add_link`]) up with its addresses,
    /// as a host does when it joins the network behind it.
    pub async fn configure_host_side(&self, a: &Attachment) -> Result<(), LabError> {
        self.set_link_up(&a.host, &a.host_if, true).await?;
        self.address_add(&a.host, &a.host_if, a.host_v4().into(), 24)
            .await?;
        self.address_add(&a.host, &a.host_if, a.host_v6().into(), 64)
            .await?;
        let router_mac = self.mac(&self.router, &a.router_if).await?;
        self.pin_neighbour(&a.host, &a.host_if, a.router_v6().into(), &router_mac)
            .await
    }

    /// Deletes an interface (and with a veth, its peer): the NIC is gone.
    pub async fn remove_link(&self, node: &str, ifname: &str) -> Result<(), LabError> {
        let index = self.link_index(node, ifname).await?;
        self.node(node)?
            .handle
            .link()
            .del(index)
            .execute()
            .await
            .map_err(netlink(format!("delete {ifname} in {node}")))
    }

    async fn attach(
        &mut self,
        host: &str,
        subnet: u8,
        nic: &str,
        side: HostSide,
    ) -> Result<(), LabError> {
        let a = Attachment {
            host: host.to_string(),
            host_if: if_name(nic),
            router_if: if_name(&format!("{subnet}-{host}")),
            subnet,
        };
        let host_ns_fd = self.node(host)?.ns.fd().as_raw_fd();
        let peer = LinkUnspec::new_with_name(&a.host_if)
            .setns_by_fd(host_ns_fd)
            .build();
        let mut veth = LinkVeth::new(&a.router_if, &a.host_if)
            .set_info_data(InfoData::Veth(InfoVeth::Peer(peer)))
            .build();
        // Interface indexes are per namespace, so both ends would otherwise
        // both get the first free one (2) and the kernel would take the
        // veth for a device that is its own lower link: its carrier changes
        // would then go through the rate-limited link watcher (at most one
        // report a second, sampling the state of that moment) and a burst
        // of flaps could go unreported. Distinct indexes make carrier
        // changes immediate, as on a veth or VLAN anywhere else.
        // `remove_link` keeps attachments, so the count never reuses an index.
        veth.header.index = ROUTER_IF_INDEX_BASE + self.attachments.len() as u32;
        let router = self.node(&self.router)?;
        router
            .handle
            .link()
            .add(veth)
            .execute()
            .await
            .map_err(netlink(format!("create veth {}", a.router_if)))?;
        let router_name = self.router.clone();
        self.set_link_up(&router_name, &a.router_if, true).await?;
        self.address_add(&router_name, &a.router_if, a.router_v4().into(), 24)
            .await?;
        self.address_add(&router_name, &a.router_if, a.router_v6().into(), 64)
            .await?;
        let host_mac = self.mac(host, &a.host_if).await?;
        self.pin_neighbour(&router_name, &a.router_if, a.host_v6().into(), &host_mac)
            .await?;
        if side != HostSide::Standby {
            self.configure_host_side(&a).await?;
        }
        if side == HostSide::Primary {
            self.default_route_replace(host, a.router_v4().into(), &a.host_if)
                .await?;
            self.default_route_replace(host, a.router_v6().into(), &a.host_if)
                .await?;
        }
        self.attachments.push(a);
        Ok(())
    }

    fn node(&self, name: &str) -> Result<&Node, LabError> {
        self.nodes
            .get(name)
            .ok_or_else(|| LabError::BadName(format!("no lab node `{name}`")))
    }

    /// The namespace of `node`.
    pub fn namespace(&self, node: &str) -> Result<&Namespace, LabError> {
        Ok(&self.node(node)?.ns)
    }

    /// Names of the lab's namespaces.
    pub fn namespace_names(&self) -> Vec<String> {
        self.nodes
            .values()
            .map(|n| n.ns.name().to_string())
            .collect()
    }

    /// The router's name.
    pub fn router(&self) -> &str {
        &self.router
    }

    /// The unique prefix of this lab's names.
    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    /// Every link of the lab.
    pub fn attachments(&self) -> &[Attachment] {
        &self.attachments
    }

    /// A host's first link to the router.
    pub fn attachment(&self, host: &str) -> Result<&Attachment, LabError> {
        self.attachments
            .iter()
            .find(|a| a.host == host)
            .ok_or_else(|| LabError::BadName(format!("no host `{host}` in the lab")))
    }

    async fn find_link(&self, node: &str, ifname: &str) -> Result<LinkMessage, LabError> {
        self.node(node)?
            .handle
            .link()
            .get()
            .match_name(ifname.to_string())
            .execute()
            .try_next()
            .await
            .map_err(netlink(format!("find {ifname} in {node}")))?
            .ok_or_else(|| LabError::BadName(format!("no interface {ifname} in {node}")))
    }

    async fn link_index(&self, node: &str, ifname: &str) -> Result<u32, LabError> {
        Ok(self.find_link(node, ifname).await?.header.index)
    }

    /// Sets `ifname` in `node` administratively up or down. Down on one end
    /// of a veth is carrier loss on the other.
    pub async fn set_link_up(&self, node: &str, ifname: &str, up: bool) -> Result<(), LabError> {
        let index = self.link_index(node, ifname).await?;
        let msg = LinkUnspec::new_with_index(index);
        let msg = if up { msg.up() } else { msg.down() }.build();
        self.node(node)?
            .handle
            .link()
            .set(msg)
            .execute()
            .await
            .map_err(netlink(format!("set {ifname} in {node} up={up}")))?;
        if up {
            self.repin(node, ifname).await?;
        }
        Ok(())
    }

    /// Pins the IPv6 neighbours of both ends of the link `ifname` of `node`
    /// again. A carrier loss turns the kernel's permanent entries into
    /// incomplete ones, and without link-local addresses they never
    /// resolve again (see [`Lab::pin_on_peer`]): after a `link-flap` or
    /// `link-down` the path would stay dead for the rest of the run and the
    /// report would blame the engine.
    async fn repin(&self, node: &str, ifname: &str) -> Result<(), LabError> {
        let Some(a) = self.attachments.iter().find(|a| {
            (a.host == node && a.host_if == ifname)
                || (node == self.router && a.router_if == ifname)
        }) else {
            return Ok(());
        };
        let ends = [
            (
                a.host.as_str(),
                a.host_if.as_str(),
                self.router.as_str(),
                a.router_if.as_str(),
            ),
            (
                self.router.as_str(),
                a.router_if.as_str(),
                a.host.as_str(),
                a.host_if.as_str(),
            ),
        ];
        for (owner, owner_if, peer, peer_if) in ends {
            // A standby NIC not configured yet, or one a swap removed.
            let Ok(owner_index) = self.link_index(owner, owner_if).await else {
                continue;
            };
            if self.link_index(peer, peer_if).await.is_err() {
                continue;
            }
            let mac = self.mac(owner, owner_if).await?;
            for (index, ip) in self.addresses(owner).await? {
                if index == owner_index && ip.is_ipv6() {
                    self.pin_neighbour(peer, peer_if, ip, &mac).await?;
                }
            }
        }
        Ok(())
    }

    /// Adds an address; refuses anything outside the lab's ranges.
    pub async fn address_add(
        &self,
        node: &str,
        ifname: &str,
        ip: IpAddr,
        prefix_len: u8,
    ) -> Result<(), LabError> {
        check_lab_address(ip)?;
        let index = self.link_index(node, ifname).await?;
        self.node(node)?
            .handle
            .address()
            .add(index, ip, prefix_len)
            .execute()
            .await
            .map_err(netlink(format!(
                "add {ip}/{prefix_len} on {ifname} in {node}"
            )))?;
        if ip.is_ipv6() {
            self.pin_on_peer(node, ifname, ip).await?;
        }
        Ok(())
    }

    /// Without link-local addresses (which would fall outside the lab's
    /// ranges) the kernel cannot send neighbour solicitations for packets
    /// it forwards, so the far end of the link learns each IPv6 address
    /// statically: a permanent neighbour entry with this end's MAC.
    async fn pin_on_peer(&self, node: &str, ifname: &str, ip: IpAddr) -> Result<(), LabError> {
        let peer = self.attachments.iter().find_map(|a| {
            if a.host == node && a.host_if == ifname {
                Some((self.router.clone(), a.router_if.clone()))
            } else if node == self.router && a.router_if == ifname {
                Some((a.host.clone(), a.host_if.clone()))
            } else {
                None
            }
        });
        // During `attach` the link is not recorded yet; it pins both ends itself.
        let Some((peer_node, peer_if)) = peer else {
            return Ok(());
        };
        let mac = self.mac(node, ifname).await?;
        self.pin_neighbour(&peer_node, &peer_if, ip, &mac).await
    }

    async fn mac(&self, node: &str, ifname: &str) -> Result<Vec<u8>, LabError> {
        let link = self.find_link(node, ifname).await?;
        link.attributes
            .into_iter()
            .find_map(|a| match a {
                LinkAttribute::Address(mac) => Some(mac),
                _ => None,
            })
            .ok_or_else(|| LabError::BadName(format!("{ifname} in {node} has no MAC")))
    }

    async fn pin_neighbour(
        &self,
        node: &str,
        ifname: &str,
        ip: IpAddr,
        mac: &[u8],
    ) -> Result<(), LabError> {
        let index = self.link_index(node, ifname).await?;
        self.node(node)?
            .handle
            .neighbours()
            .add(index, ip)
            .link_layer_address(mac)
            .state(NeighbourState::Permanent)
            .replace()
            .execute()
            .await
            .map_err(netlink(format!("pin neighbour {ip} on {ifname} in {node}")))
    }

    /// Removes an address.
    pub async fn address_remove(
        &self,
        node: &str,
        ifname: &str,
        ip: IpAddr,
    ) -> Result<(), LabError> {
        let index = self.link_index(node, ifname).await?;
        let handle = &self.node(node)?.handle;
        let found = handle
            .address()
            .get()
            .set_link_index_filter(index)
            .set_address_filter(ip)
            .execute()
            .try_next()
            .await
            .map_err(netlink(format!("find {ip} on {ifname} in {node}")))?
            .ok_or_else(|| LabError::BadName(format!("{ip} is not on {ifname} in {node}")))?;
        handle
            .address()
            .del(found)
            .execute()
            .await
            .map_err(netlink(format!("remove {ip} from {ifname} in {node}")))
    }

    /// Replaces `old` by `new` on the interface (new first, so a socket
    /// bound to `old` sees its address vanish, not the link).
    pub async fn address_replace(
        &self,
        node: &str,
        ifname: &str,
        old: IpAddr,
        new: IpAddr,
        prefix_len: u8,
    ) -> Result<(), LabError> {
        self.address_add(node, ifname, new, prefix_len).await?;
        self.address_remove(node, ifname, old).await
    }

    /// Sets (adds or replaces) the default route of `gateway`'s family.
    pub async fn default_route_replace(
        &self,
        node: &str,
        gateway: IpAddr,
        ifname: &str,
    ) -> Result<(), LabError> {
        check_lab_address(gateway)?;
        let index = self.link_index(node, ifname).await?;
        let msg = match gateway {
            IpAddr::V4(g) => RouteMessageBuilder::<Ipv4Addr>::new()
                .gateway(g)
                .output_interface(index)
                .build(),
            IpAddr::V6(g) => RouteMessageBuilder::<Ipv6Addr>::new()
                .gateway(g)
                .output_interface(index)
                .build(),
        };
        self.node(node)?
            .handle
            .route()
            .add(msg)
            .replace()
            .execute()
            .await
            .map_err(netlink(format!(
                "default via {gateway} dev {ifname} in {node}"
            )))
    }

    /// Removes the default route of a family (`v6` or IPv4).
    pub async fn default_route_remove(&self, node: &str, v6: bool) -> Result<(), LabError> {
        let handle = &self.node(node)?.handle;
        let routes = self.routes(node, v6).await?;
        for r in routes.into_iter().filter(|r| r.prefix_len == 0) {
            handle
                .route()
                .del(r.message)
                .execute()
                .await
                .map_err(netlink(format!("remove default route in {node}")))?;
        }
        Ok(())
    }

    /// The main-table routes of a family in `node`.
    pub async fn routes(&self, node: &str, v6: bool) -> Result<Vec<Route>, LabError> {
        let handle = &self.node(node)?.handle;
        let query = if v6 {
            RouteMessageBuilder::<Ipv6Addr>::new().build()
        } else {
            RouteMessageBuilder::<Ipv4Addr>::new().build()
        };
        let messages: Vec<RouteMessage> = handle
            .route()
            .get(query)
            .execute()
            .try_collect()
            .await
            .map_err(netlink(format!("dump routes in {node}")))?;
        Ok(messages
            .into_iter()
            .filter(|m| m.header.table == RouteHeader::RT_TABLE_MAIN)
            .map(Route::from_message)
            .collect())
    }

    /// Every address configured in `node`, as `(interface index, address)`.
    pub async fn addresses(&self, node: &str) -> Result<Vec<(u32, IpAddr)>, LabError> {
        let messages: Vec<AddressMessage> = self
            .node(node)?
            .handle
            .address()
            .get()
            .execute()
            .try_collect()
            .await
            .map_err(netlink(format!("dump addresses in {node}")))?;
        Ok(messages
            .into_iter()
            .flat_map(|m| {
                let index = m.header.index;
                m.attributes.into_iter().filter_map(move |a| match a {
                    AddressAttribute::Address(ip) | AddressAttribute::Local(ip) => {
                        Some((index, ip))
                    }
                    _ => None,
                })
            })
            .collect())
    }

    /// Every link in `node`.
    pub async fn links(&self, node: &str) -> Result<Vec<LinkMessage>, LabError> {
        self.node(node)?
            .handle
            .link()
            .get()
            .execute()
            .try_collect()
            .await
            .map_err(netlink(format!("dump links in {node}")))
    }

    /// Runs a program inside `node`'s namespace and waits for it.
    pub fn exec(
        &self,
        node: &str,
        argv: &[&str],
        stdin: Option<&[u8]>,
    ) -> Result<Output, LabError> {
        let (program, args) = argv
            .split_first()
            .ok_or_else(|| LabError::BadName("empty command".into()))?;
        let mut cmd = self.command(node, program)?;
        cmd.args(args)
            .stdin(if stdin.is_some() {
                Stdio::piped()
            } else {
                Stdio::null()
            })
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let shown = argv.join(" ");
        let mut child = cmd
            .spawn()
            .map_err(|e| LabError::io(format!("run {shown}"), e))?;
        if let (Some(input), Some(mut pipe)) = (stdin, child.stdin.take()) {
            use std::io::Write;
            pipe.write_all(input)
                .map_err(|e| LabError::io(format!("feed {shown}"), e))?;
        }
        let out = child
            .wait_with_output()
            .map_err(|e| LabError::io(format!("run {shown}"), e))?;
        if !out.status.success() {
            return Err(LabError::Command {
                command: shown,
                status: out.status.to_string(),
                stderr: String::from_utf8_lossy(&out.stderr).trim().to_string(),
            });
        }
        Ok(out)
    }

    /// A `Command` whose child enters `node`'s namespace before exec.
    pub fn command(&self, node: &str, program: &str) -> Result<Command, LabError> {
        let fd = self.node(node)?.ns.raw_fd();
        let mut cmd = Command::new(program);
        // SAFETY: between fork and exec only async-signal-safe calls are
        // allowed; setns(2) and close_range(2) are plain system calls (on an
        // fd we keep open).
        unsafe {
            cmd.pre_exec(move || {
                let ns = std::os::fd::BorrowedFd::borrow_raw(fd);
                nix::sched::setns(ns, nix::sched::CloneFlags::CLONE_NEWNET)
                    .map_err(std::io::Error::from)?;
                // The child keeps only its stdio: sockets some crates open
                // without SOCK_CLOEXEC (the delay thread's NFQUEUE socket,
                // netlink connections) would otherwise live on in a broker
                // or server process of another lab. With two labs at once
                // (`run --jobs`), a broker holding a copy of a router's
                // NFQUEUE socket left that router's queue stuck: packets
                // queued, never given a verdict. CLOEXEC rather than close,
                // so std's own exec-error pipe still works until exec.
                const CLOSE_RANGE_CLOEXEC: nix::libc::c_uint = 1 << 2;
                if nix::libc::syscall(
                    nix::libc::SYS_close_range,
                    3 as nix::libc::c_uint,
                    nix::libc::c_uint::MAX,
                    CLOSE_RANGE_CLOEXEC,
                ) != 0
                {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        Ok(cmd)
    }

    /// Removes everything the lab created.
    pub fn teardown(mut self) {
        self.remove();
    }

    fn remove(&mut self) {
        for (_, node) in std::mem::take(&mut self.nodes) {
            node.connection.abort();
            drop(node.handle);
            node.ns.delete();
        }
        // Also catches processes still inside (a command workload).
        super::namespace::remove_matching(&format!("{}-", self.prefix));
        self.live.release();
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        self.remove();
    }
}

/// One route, decoded.
#[derive(Clone, Debug)]
pub struct Route {
    /// Destination prefix length (0 for a default route).
    pub prefix_len: u8,
    /// Destination.
    pub destination: Option<IpAddr>,
    /// Gateway.
    pub gateway: Option<IpAddr>,
    /// Output interface index.
    pub interface: Option<u32>,
    /// The kernel marks the route's next hop as link-down (carrier lost).
    pub linkdown: bool,
    message: RouteMessage,
}

impl Route {
    fn from_message(m: RouteMessage) -> Route {
        let addr = netmend::monitor::linux::route_address;
        let mut r = Route {
            prefix_len: m.header.destination_prefix_length,
            destination: None,
            gateway: None,
            interface: None,
            linkdown: m.header.flags.contains(RouteFlags::Linkdown),
            message: m.clone(),
        };
        for a in &m.attributes {
            match a {
                RouteAttribute::Destination(d) => r.destination = addr(d),
                RouteAttribute::Gateway(g) => r.gateway = addr(g),
                RouteAttribute::Oif(i) => r.interface = Some(*i),
                _ => {}
            }
        }
        r
    }
}

/// Whether `ip` is one the lab may use: 198.18.0.0/15 or 2001:db8::/32.
pub fn is_lab_address(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => {
            let o = v4.octets();
            o[0] == 198 && (o[1] & 0xfe) == 18
        }
        IpAddr::V6(v6) => {
            let s = v6.segments();
            s[0] == 0x2001 && s[1] == 0x0db8
        }
    }
}

fn check_lab_address(ip: IpAddr) -> Result<(), LabError> {
    if is_lab_address(ip) {
        Ok(())
    } else {
        Err(LabError::ForeignAddress(ip))
    }
}
