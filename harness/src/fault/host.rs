//! Faults of one host's link, address and routes, and of the client's
//! move to another network.

use super::{halved, ms, Action, HostRole, Kind, Normal, Raw, Spec, Step};
use crate::duration::Dur;
use schemars::JsonSchema;
use serde::Serialize;
use std::time::Duration;

/// The host loses carrier on its link for `duration` (the far end of its
/// cable goes down), then gets it back.
#[derive(Clone, Debug, PartialEq, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct LinkDown {
    /// When.
    pub at: Dur,
    /// For how long.
    pub duration: Dur,
    /// Whose link. (the client when absent)
    #[serde(default)]
    pub host: HostRole,
}

impl Kind for LinkDown {
    const NAME: &'static str = "link-down";
    const FIELDS: &'static [&'static str] = &["duration", "host"];
    const SUMMARY: &'static str = "a host's link loses carrier, then gets it back";
    fn example() -> Self {
        LinkDown {
            at: ms(1_000),
            duration: ms(2_000),
            host: HostRole::Client,
        }
    }
    fn read(r: &Raw) -> Result<Self, String> {
        Ok(LinkDown {
            at: r.at,
            duration: r.positive_duration()?,
            host: r.host.unwrap_or_default(),
        })
    }
}

impl Spec for LinkDown {
    fn duration(&self) -> Option<Dur> {
        Some(self.duration)
    }
    fn steps(&self, _: &Normal) -> Vec<Step> {
        let host = self.host;
        vec![Step::lasting(
            self.at,
            Some(self.duration),
            Action::LinkDown { host, down: true },
            Action::LinkDown { host, down: false },
        )]
    }
    fn halve(&mut self, floor: Duration) {
        self.duration = halved(self.duration, floor);
    }
}

/// The host's address is replaced by another one on the same link (a DHCP
/// renumbering): connections bound to the old address are dead.
#[derive(Clone, Debug, PartialEq, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct AddressChange {
    /// When.
    pub at: Dur,
    /// Which host. (the client when absent)
    #[serde(default)]
    pub host: HostRole,
}

impl Kind for AddressChange {
    const NAME: &'static str = "address-change";
    const FIELDS: &'static [&'static str] = &["host"];
    const SUMMARY: &'static str = "a host is renumbered on the same link";
    fn example() -> Self {
        AddressChange {
            at: ms(1_000),
            host: HostRole::Client,
        }
    }
    fn read(r: &Raw) -> Result<Self, String> {
        Ok(AddressChange {
            at: r.at,
            host: r.host.unwrap_or_default(),
        })
    }
}

impl Spec for AddressChange {
    fn duration(&self) -> Option<Dur> {
        None
    }
    fn steps(&self, _: &Normal) -> Vec<Step> {
        vec![Step::once(
            self.at,
            Action::AddressChange { host: self.host },
        )]
    }
}

/// The host's default routes disappear for `duration`, then come back.
#[derive(Clone, Debug, PartialEq, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RouteLoss {
    /// When.
    pub at: Dur,
    /// For how long.
    pub duration: Dur,
    /// Which host. (the client when absent)
    #[serde(default)]
    pub host: HostRole,
}

impl Kind for RouteLoss {
    const NAME: &'static str = "route-loss";
    const FIELDS: &'static [&'static str] = &["duration", "host"];
    const SUMMARY: &'static str = "a host's default routes disappear, then come back";
    fn example() -> Self {
        RouteLoss {
            at: ms(1_000),
            duration: ms(2_000),
            host: HostRole::Client,
        }
    }
    fn read(r: &Raw) -> Result<Self, String> {
        Ok(RouteLoss {
            at: r.at,
            duration: r.positive_duration()?,
            host: r.host.unwrap_or_default(),
        })
    }
}

impl Spec for RouteLoss {
    fn duration(&self) -> Option<Dur> {
        Some(self.duration)
    }
    fn steps(&self, _: &Normal) -> Vec<Step> {
        let host = self.host;
        vec![Step::lasting(
            self.at,
            Some(self.duration),
            Action::RouteLoss { host, lost: true },
            Action::RouteLoss { host, lost: false },
        )]
    }
    fn halve(&mut self, floor: Duration) {
        self.duration = halved(self.duration, floor);
    }
}

/// A VPN comes up on the client: a tunnel device with an address of its
/// own and an MTU below the link's takes the client's IPv4 default route,
/// and the tunnel's far end forwards only what comes from that address (a
/// WireGuard peer's allowed IPs, a VPN concentrator's NAT), so flows bound
/// to the NIC's address go nowhere; after `duration` the VPN goes down and
/// the route returns to the NIC.
#[derive(Clone, Debug, PartialEq, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct VpnUp {
    /// When.
    pub at: Dur,
    /// The tunnel's MTU in bytes (1280 to 1472: what a 1500-byte link
    /// carries inside the tunnel's IPv4 and UDP headers).
    pub mtu: u32,
    /// How long it stays up; absent means until the end.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub duration: Option<Dur>,
}

/// The largest tunnel MTU: a link's less the encapsulation's IPv4 (20)
/// and UDP (8) headers.
pub const MAX_TUNNEL_MTU: u32 = super::LINK_MTU - 28;

impl Kind for VpnUp {
    const NAME: &'static str = "vpn-up";
    const FIELDS: &'static [&'static str] = &["mtu", "duration"];
    const SUMMARY: &'static str =
        "a VPN takes the client's IPv4 default route into a tunnel with its own address and a smaller MTU";
    fn example() -> Self {
        VpnUp {
            at: ms(1_000),
            mtu: 1420,
            duration: Some(ms(4_000)),
        }
    }
    fn read(r: &Raw) -> Result<Self, String> {
        Ok(VpnUp {
            at: r.at,
            mtu: r.mtu_up_to(
                MAX_TUNNEL_MTU,
                "a 1500-byte link less the tunnel's IPv4 and UDP headers",
            )?,
            duration: r.open_ended_duration()?,
        })
    }
}

impl Spec for VpnUp {
    fn duration(&self) -> Option<Dur> {
        self.duration
    }
    fn steps(&self, _: &Normal) -> Vec<Step> {
        vec![Step::lasting(
            self.at,
            self.duration,
            Action::Vpn(Some(self.mtu)),
            Action::Vpn(None),
        )]
    }
    fn halve(&mut self, floor: Duration) {
        self.duration = self.duration.map(|d| halved(d, floor));
    }
}

/// The client's default route moves from its first NIC to a second one
/// with a new address, and the first NIC goes away (Wi-Fi to Ethernet, a
/// new access network). With `routable_after`, addresses and routes are
/// right at once but traffic over the new NIC is dropped for that long (a
/// network that needs seconds before it carries traffic).
#[derive(Clone, Debug, PartialEq, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct NicSwap {
    /// When.
    pub at: Dur,
    /// How long the new path drops traffic after the swap.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub routable_after: Option<Dur>,
    /// How long the new network's gateway intercepts TCP after the swap: a
    /// captive portal accepts every connection, answers with an HTTP
    /// redirect and closes it; then the real server is reachable.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub captive_for: Option<Dur>,
}

impl Kind for NicSwap {
    const NAME: &'static str = "nic-swap";
    const FIELDS: &'static [&'static str] = &["routable_after", "captive_for"];
    const SUMMARY: &'static str = "the client moves to a second NIC with a new address";
    fn example() -> Self {
        NicSwap {
            at: ms(1_000),
            routable_after: Some(ms(1_500)),
            captive_for: None,
        }
    }
    fn read(r: &Raw) -> Result<Self, String> {
        let (routable_after, captive_for) = new_network(r)?;
        Ok(NicSwap {
            at: r.at,
            routable_after,
            captive_for,
        })
    }
}

impl Spec for NicSwap {
    fn duration(&self) -> Option<Dur> {
        self.routable_after.or(self.captive_for)
    }
    fn steps(&self, _: &Normal) -> Vec<Step> {
        let (routable, captive) = arrival(self.routable_after, self.captive_for);
        vec![Step::lasting(
            self.at,
            self.duration(),
            Action::NicSwap { routable, captive },
            Action::Routable,
        )]
    }
    fn halve(&mut self, floor: Duration) {
        halve_arrival(&mut self.routable_after, &mut self.captive_for, floor);
    }
}

/// The client's default gateway changes on the same interface (router
/// failover, a DHCP renewal naming another router); the new gateway has no
/// state for flows the old one carried.
#[derive(Clone, Debug, PartialEq, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct GatewayChange {
    /// When.
    pub at: Dur,
    /// How long the new gateway drops traffic after the change.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub routable_after: Option<Dur>,
    /// How long the new gateway intercepts TCP (see [`NicSwap`]).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub captive_for: Option<Dur>,
}

impl Kind for GatewayChange {
    const NAME: &'static str = "gateway-change";
    const FIELDS: &'static [&'static str] = &["routable_after", "captive_for"];
    const SUMMARY: &'static str = "the client's gateway changes; the new one knows no old flow";
    fn example() -> Self {
        GatewayChange {
            at: ms(1_000),
            routable_after: None,
            captive_for: None,
        }
    }
    fn read(r: &Raw) -> Result<Self, String> {
        let (routable_after, captive_for) = new_network(r)?;
        Ok(GatewayChange {
            at: r.at,
            routable_after,
            captive_for,
        })
    }
}

impl Spec for GatewayChange {
    fn duration(&self) -> Option<Dur> {
        self.routable_after.or(self.captive_for)
    }
    fn steps(&self, _: &Normal) -> Vec<Step> {
        let (routable, captive) = arrival(self.routable_after, self.captive_for);
        vec![Step::lasting(
            self.at,
            self.duration(),
            Action::GatewayChange { routable, captive },
            Action::Routable,
        )]
    }
    fn halve(&mut self, floor: Duration) {
        halve_arrival(&mut self.routable_after, &mut self.captive_for, floor);
    }
}

/// `routable_after` and `captive_for` of a move to a new network: one of
/// them at most, a portal for a positive time.
fn new_network(r: &Raw) -> Result<(Option<Dur>, Option<Dur>), String> {
    if r.routable_after.is_some() && r.captive_for.is_some() {
        return Err(format!(
            "a {} fault takes `routable_after` or `captive_for`, not both",
            r.kind()
        ));
    }
    if r.captive_for.is_some_and(|d| d.0.is_zero()) {
        return Err("`captive_for` must be positive".into());
    }
    Ok((r.routable_after, r.captive_for))
}

/// What the new network is like when the client arrives: carries traffic
/// at once, and whether a portal answers.
fn arrival(routable_after: Option<Dur>, captive_for: Option<Dur>) -> (bool, bool) {
    (
        routable_after.is_none_or(|d| d.0.is_zero()),
        captive_for.is_some(),
    )
}

/// Halves how long a new network withholds traffic; under `floor` it
/// carries traffic at once.
fn halve_arrival(routable_after: &mut Option<Dur>, captive_for: &mut Option<Dur>, floor: Duration) {
    for wait in [routable_after, captive_for] {
        *wait = wait.map(|d| Dur(d.0 / 2)).filter(|d| d.0 >= floor);
    }
}

/// The client's carrier drops and returns `count` times, one flap every
/// `period` (down for half of it).
#[derive(Clone, Debug, PartialEq, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct LinkFlap {
    /// When the first flap starts.
    pub at: Dur,
    /// Flaps.
    pub count: u32,
    /// Length of one flap.
    pub period: Dur,
}

impl Kind for LinkFlap {
    const NAME: &'static str = "link-flap";
    const FIELDS: &'static [&'static str] = &["count", "period"];
    const SUMMARY: &'static str = "the client's carrier drops and returns, again and again";
    fn example() -> Self {
        LinkFlap {
            at: ms(1_000),
            count: 3,
            period: ms(400),
        }
    }
    fn read(r: &Raw) -> Result<Self, String> {
        let (count, period) = r.flaps()?;
        Ok(LinkFlap {
            at: r.at,
            count,
            period,
        })
    }
}

impl Spec for LinkFlap {
    fn duration(&self) -> Option<Dur> {
        Some(Dur(self.period.0 * self.count))
    }
    fn steps(&self, _: &Normal) -> Vec<Step> {
        (0..self.count)
            .map(|i| {
                Step::lasting(
                    Dur(self.at.0 + self.period.0 * i),
                    Some(Dur(self.period.0 / 2)),
                    Action::Carrier { lost: true },
                    Action::Carrier { lost: false },
                )
            })
            .collect()
    }
    fn halve(&mut self, _: Duration) {
        self.count = (self.count / 2).max(1);
    }
}

/// The client's process is replaced by a new one at `at` (an upgrade, a
/// supervisor's restart). The naive client's process is killed and its
/// successor connects afresh, going on from the last position the old one
/// recorded; the engine's hands its live session to the successor
/// (`netmend::handover`), which goes on on the same connection. Real
/// processes: the netns backend only.
#[derive(Clone, Debug, PartialEq, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ProcessRestart {
    /// When.
    pub at: Dur,
}

impl Kind for ProcessRestart {
    const NAME: &'static str = "process-restart";
    const FIELDS: &'static [&'static str] = &[];
    const SUMMARY: &'static str = "the client's process is replaced by a new one";
    fn example() -> Self {
        ProcessRestart { at: ms(1_000) }
    }
    fn read(r: &Raw) -> Result<Self, String> {
        Ok(ProcessRestart { at: r.at })
    }
}

impl Spec for ProcessRestart {
    fn duration(&self) -> Option<Dur> {
        None
    }
    /// None: the restart is done by the backend to the client's process at
    /// `at` (see `StreamPlan::restarts`), not a change to the path.
    fn steps(&self, _: &Normal) -> Vec<Step> {
        Vec::new()
    }
}

/// The server's process dies (SIGKILL: its sessions, sockets and memory
/// gone) and a new one starts `duration` later on the same host and port.
/// The naive server starts afresh; the engine's opens its session store
/// (`[mitigation] store`) and serves the clients' resumes from it. Real
/// processes: the netns backend only.
#[derive(Clone, Debug, PartialEq, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ServerRestart {
    /// When the process is killed.
    pub at: Dur,
    /// How long until its successor starts.
    pub duration: Dur,
}

impl Kind for ServerRestart {
    const NAME: &'static str = "server-restart";
    const FIELDS: &'static [&'static str] = &["duration"];
    const SUMMARY: &'static str =
        "the server's process is killed and a new one starts after a while";
    fn example() -> Self {
        ServerRestart {
            at: ms(1_000),
            duration: ms(500),
        }
    }
    fn read(r: &Raw) -> Result<Self, String> {
        Ok(ServerRestart {
            at: r.at,
            duration: r.positive_duration()?,
        })
    }
}

impl Spec for ServerRestart {
    fn duration(&self) -> Option<Dur> {
        Some(self.duration)
    }
    /// None: the backend kills and starts the server's processes (see
    /// `StreamPlan::servers`), not a change to the path.
    fn steps(&self, _: &Normal) -> Vec<Step> {
        Vec::new()
    }
    fn halve(&mut self, floor: Duration) {
        self.duration = halved(self.duration, floor);
    }
}

/// The server runs as two instances behind a TCP load balancer that sends
/// each new connection to the first instance that takes it; at `at` the
/// instance holding the session dies for good, and the client's next
/// connection lands on the other. The engine's instances share a session
/// store (`[mitigation] store = "redis"`). Real processes: the netns
/// backend only.
#[derive(Clone, Debug, PartialEq, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ServerFailover {
    /// When the first instance dies.
    pub at: Dur,
}

impl Kind for ServerFailover {
    const NAME: &'static str = "server-failover";
    const FIELDS: &'static [&'static str] = &[];
    const SUMMARY: &'static str =
        "the server instance holding the session dies; a load balancer sends the client to another";
    fn example() -> Self {
        ServerFailover { at: ms(1_000) }
    }
    fn read(r: &Raw) -> Result<Self, String> {
        Ok(ServerFailover { at: r.at })
    }
}

impl Spec for ServerFailover {
    fn duration(&self) -> Option<Dur> {
        None
    }
    /// None: the backend kills the instance (see `StreamPlan::servers`).
    fn steps(&self, _: &Normal) -> Vec<Step> {
        Vec::new()
    }
}

/// Which host firewall a [`HostFirewall`] installs.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, serde::Deserialize, JsonSchema)]
#[serde(rename_all = "kebab-case")]
pub enum FirewallFlavour {
    /// nftables: `table inet filter`, input policy drop.
    Nftables,
    /// iptables-nft: `INPUT` policy DROP.
    IptablesNft,
}

/// The server's host has a distribution-style firewall from the start:
/// inbound policy drop, established flows and loopback allowed. The naive
/// server listens behind it; the engine's asks `netmend::firewall` for its
/// port when it starts (and takes the opening away when it stops).
#[derive(Clone, Debug, PartialEq, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct HostFirewall {
    /// When (it is in place before the programs start: write `0s`).
    pub at: Dur,
    /// Which firewall.
    pub firewall: FirewallFlavour,
}

impl Kind for HostFirewall {
    const NAME: &'static str = "host-firewall";
    const FIELDS: &'static [&'static str] = &["firewall"];
    const SUMMARY: &'static str =
        "the server's host firewall drops inbound connections unless the application opens its port";
    fn example() -> Self {
        HostFirewall {
            at: ms(0),
            firewall: FirewallFlavour::Nftables,
        }
    }
    fn read(r: &Raw) -> Result<Self, String> {
        if !r.at.0.is_zero() {
            return Err("a host firewall is in place from the start: `at = \"0s\"`".into());
        }
        Ok(HostFirewall {
            at: r.at,
            firewall: r.need("firewall", r.firewall)?,
        })
    }
}

impl Spec for HostFirewall {
    fn duration(&self) -> Option<Dur> {
        None
    }
    /// None: the firewall is part of the server's host from the start (the
    /// backends install it before the programs run, see
    /// `StreamPlan::host_firewall`), not a change during the run.
    fn steps(&self, _: &Normal) -> Vec<Step> {
        Vec::new()
    }
}

/// From `at` on, the host's wall clock reads `ahead` more (or `behind`
/// less) than the other host's: a clock never synchronised (no NTP, a
/// dead RTC battery, a VM restored from a snapshot) or stepped at `at`.
/// Only programs that read the wall clock see it, so it takes a signaling
/// workload: its naive peers stamp absolute expiry times, as most
/// messaging code does; the engine's endpoint reads its wall clock once
/// at start (a later step passes it by) and counts expiry from receipt.
/// Both backends give the peers the same skewed clock (the netns hosts
/// share the machine's one kernel clock: a time namespace offsets only the
/// monotonic and boot clocks, not the wall clock).
#[derive(Clone, Debug, PartialEq, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ClockSkew {
    /// When the host's clock is off from (0: from the start).
    pub at: Dur,
    /// Which host. (the client when absent)
    #[serde(default)]
    pub host: HostRole,
    /// How far its clock runs ahead.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ahead: Option<Dur>,
    /// How far its clock runs behind.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub behind: Option<Dur>,
}

/// The largest clock offset a scenario may give a host (a day).
const MAX_CLOCK_OFFSET: Duration = Duration::from_secs(86_400);

impl ClockSkew {
    /// The offset it adds to its host's clock, in ms (negative: behind).
    pub fn offset_ms(&self) -> i64 {
        let ms = |d: Option<Dur>| d.map_or(0, |d| i64::try_from(d.0.as_millis()).unwrap_or(0));
        ms(self.ahead) - ms(self.behind)
    }
}

impl Kind for ClockSkew {
    const NAME: &'static str = "clock-skew";
    const FIELDS: &'static [&'static str] = &["host", "ahead", "behind"];
    const SUMMARY: &'static str = "a host's wall clock runs ahead or behind the other's";
    fn example() -> Self {
        ClockSkew {
            at: ms(0),
            host: HostRole::Client,
            ahead: None,
            behind: Some(Dur(Duration::from_secs(60))),
        }
    }
    fn read(r: &Raw) -> Result<Self, String> {
        let offset = match (r.ahead, r.behind) {
            (Some(d), None) | (None, Some(d)) => d,
            _ => return Err("a clock skew takes one of `ahead` or `behind`".into()),
        };
        if offset.0.is_zero() || offset.0 > MAX_CLOCK_OFFSET {
            return Err("a clock skew is more than 0 and at most a day".into());
        }
        Ok(ClockSkew {
            at: r.at,
            host: r.host.unwrap_or_default(),
            ahead: r.ahead,
            behind: r.behind,
        })
    }
}

impl Spec for ClockSkew {
    fn duration(&self) -> Option<Dur> {
        None
    }
    /// None: the network is untouched; the signaling peers read the
    /// skewed clock (`workload::signaling::WallClock`).
    fn steps(&self, _: &Normal) -> Vec<Step> {
        Vec::new()
    }
}

/// The resolver is unreachable for `duration` (its server restarts, a VPN
/// took it away, a captive network intercepts it): every name lookup of
/// every host waits out its tries and fails, as glibc's stub resolver does
/// against a server that does not answer (5 s per try, 2 tries). Addresses
/// and paths are untouched.
#[derive(Clone, Debug, PartialEq, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct DnsFailure {
    /// When.
    pub at: Dur,
    /// For how long.
    pub duration: Dur,
}

impl Kind for DnsFailure {
    const NAME: &'static str = "dns-failure";
    const FIELDS: &'static [&'static str] = &["duration"];
    const SUMMARY: &'static str = "the resolver is unreachable: name lookups time out";
    fn example() -> Self {
        DnsFailure {
            at: ms(1_000),
            duration: ms(10_000),
        }
    }
    fn read(r: &Raw) -> Result<Self, String> {
        Ok(DnsFailure {
            at: r.at,
            duration: r.positive_duration()?,
        })
    }
}

impl Spec for DnsFailure {
    fn duration(&self) -> Option<Dur> {
        Some(self.duration)
    }
    fn steps(&self, _: &Normal) -> Vec<Step> {
        vec![Step::lasting(
            self.at,
            Some(self.duration),
            Action::NameServiceDown(true),
            Action::NameServiceDown(false),
        )]
    }
    /// The path is whole: what a lost connection needs then is the name.
    fn breaks_path(&self) -> bool {
        false
    }
    fn halve(&mut self, floor: Duration) {
        self.duration = halved(self.duration, floor);
    }
}
