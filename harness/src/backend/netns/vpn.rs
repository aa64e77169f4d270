//! A VPN in the lab: a tunnel between the client and the router, a TUN
//! device at each end and a user-space relay at each that carries the
//! tunnel's packets over UDP across the client's link, as WireGuard or
//! OpenVPN carry theirs. The client's IPv4 default route moves into the
//! tunnel; the router's end forwards only packets whose source is the
//! client's tunnel address (WireGuard's allowed IPs; a VPN concentrator's
//! NAT has the same effect on a flow bound to the old address).
//!
//! A relay of its own rather than a kernel tunnel: this kernel has no
//! WireGuard, ipip or GRE (DESIGN.md), but TUN. A relay holds one packet
//! at a time (a buffer per direction, no queue) and passes it on before it
//! reads the next; a datagram the other end is not there to take is lost,
//! as a tunnel loses it. Its UDP socket is unconnected and takes datagrams
//! from the other end only, so an ICMP error (the other end not up yet)
//! never reaches it: the relay's only ends are being stopped and a device
//! or socket that fails for good (logged).

use super::host::HostTask;
use super::lab::{Attachment, Lab};
use super::LabError;
use std::io;
use std::net::{Ipv4Addr, SocketAddr};
use tokio_tun::Tun;

/// The tunnel device's name at both ends.
pub const DEVICE: &str = "nm-vpn";
/// The client's address inside the tunnel.
pub const CLIENT_TUNNEL: Ipv4Addr = Ipv4Addr::new(198, 18, 254, 2);
/// The router's address inside the tunnel.
pub const ROUTER_TUNNEL: Ipv4Addr = Ipv4Addr::new(198, 18, 254, 1);
/// The relays' UDP port (WireGuard's).
const PORT: u16 = 51820;
/// Largest packet a relay takes (a UDP datagram's payload).
const MAX_PACKET: usize = 65_535;

/// A VPN that is up; dropping it stops both relays, and the tunnel
/// devices (not persistent) go with their file descriptors.
pub struct Vpn {
    _client: HostTask,
    _router: HostTask,
}

impl Vpn {
    /// Brings the tunnel up between `client` (its namespace and link; its
    /// address there now `host`, after any renumbering) and the router,
    /// with `mtu`, and moves the client's IPv4 default route into it.
    ///
    /// # Errors
    ///
    /// A device, socket or route that could not be made (what was made
    /// goes again).
    pub fn up(
        lab: &Lab,
        client: &(String, Attachment),
        host: Ipv4Addr,
        mtu: u32,
    ) -> Result<Vpn, LabError> {
        let (name, link) = client;
        let router = link.router_v4();
        let router_end = HostTask::spawn(lab.namespace(lab.router())?, "vpn-router", move || {
            let tun = open(ROUTER_TUNNEL, CLIENT_TUNNEL, mtu)?;
            let udp = udp(router, host)?;
            Ok(relay(tun, udp, Some(CLIENT_TUNNEL)))
        })?;
        let client_end = HostTask::spawn(lab.namespace(name)?, "vpn-client", move || {
            let tun = open(CLIENT_TUNNEL, ROUTER_TUNNEL, mtu)?;
            let udp = udp(host, router)?;
            Ok(relay(tun, udp, None))
        })?;
        // The route last: the tunnel carries traffic once both ends run.
        lab.exec(
            name,
            &["ip", "-4", "route", "replace", "default", "dev", DEVICE],
            None,
        )?;
        Ok(Vpn {
            _client: client_end,
            _router: router_end,
        })
    }

    /// Takes the tunnel down: the client's IPv4 default route returns to
    /// its NIC, then the relays stop and the devices vanish.
    ///
    /// # Errors
    ///
    /// The route that could not be set back.
    pub async fn down(self, lab: &Lab, client: &(String, Attachment)) -> Result<(), LabError> {
        let (name, link) = client;
        lab.default_route_replace(name, link.router_v4().into(), &link.host_if)
            .await?;
        drop(self);
        Ok(())
    }
}

/// A TUN device named [`DEVICE`] in the calling thread's namespace, with
/// `local` and the point-to-point `peer`, up.
fn open(local: Ipv4Addr, peer: Ipv4Addr, mtu: u32) -> io::Result<Tun> {
    let mtu = i32::try_from(mtu).map_err(|_| io::Error::other(format!("MTU {mtu}")))?;
    Tun::builder()
        .name(DEVICE)
        .mtu(mtu)
        .address(local)
        .destination(peer)
        .netmask(Ipv4Addr::BROADCAST)
        .up()
        .build()
        .map_err(|e| io::Error::other(format!("TUN device {DEVICE}: {e}")))?
        .pop()
        .ok_or_else(|| io::Error::other(format!("TUN device {DEVICE}: no queue")))
}

/// The relay's UDP socket on `local` and the other end's address, both
/// on [`PORT`].
fn udp(local: Ipv4Addr, peer: Ipv4Addr) -> io::Result<(tokio::net::UdpSocket, SocketAddr)> {
    let socket = std::net::UdpSocket::bind((local, PORT))?;
    socket.set_nonblocking(true)?;
    Ok((
        tokio::net::UdpSocket::from_std(socket)?,
        SocketAddr::from((peer, PORT)),
    ))
}

/// The IPv4 source address of `packet`, if it is an IPv4 packet.
fn source(packet: &[u8]) -> Option<Ipv4Addr> {
    match packet {
        [version, _, _, _, _, _, _, _, _, _, _, _, a, b, c, d, ..] if version >> 4 == 4 => {
            Some(Ipv4Addr::new(*a, *b, *c, *d))
        }
        _ => None,
    }
}

/// Carries packets between `tun` and `udp` (to and from `peer` only)
/// until stopped; from `udp`, only those whose source is `allowed` (any
/// without it).
async fn relay(
    tun: Tun,
    (udp, peer): (tokio::net::UdpSocket, SocketAddr),
    allowed: Option<Ipv4Addr>,
) {
    let (mut out, mut back) = (vec![0u8; MAX_PACKET], vec![0u8; MAX_PACKET]);
    loop {
        tokio::select! {
            read = tun.recv(&mut out) => match read {
                Ok(n) => {
                    let _ = udp.send_to(&out[..n], peer).await;
                }
                Err(e) => {
                    tracing::warn!(error = %e, "vpn relay: reading the TUN device failed; the tunnel is down");
                    return;
                }
            },
            read = udp.recv_from(&mut back) => match read {
                Ok((n, from)) if from == peer => {
                    let packet = &back[..n];
                    if allowed.is_none_or(|a| source(packet) == Some(a)) {
                        let _ = tun.send(packet).await;
                    }
                }
                Ok(_) => {}
                Err(e) => {
                    tracing::warn!(error = %e, "vpn relay: reading the UDP socket failed; the tunnel is down");
                    return;
                }
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_source_of_an_ipv4_packet_and_nothing_else() {
        let mut packet = [0u8; 20];
        packet[0] = 0x45;
        packet[12..16].copy_from_slice(&[198, 18, 254, 2]);
        assert_eq!(source(&packet), Some(CLIENT_TUNNEL));
        assert_eq!(source(&packet[..15]), None, "too short");
        packet[0] = 0x60;
        assert_eq!(source(&packet), None, "IPv6");
    }
}
