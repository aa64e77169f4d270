//! What the application asks the host firewall for: inbound TCP or UDP to
//! some local ports, from any peer or from named ones — never "allow all".

use std::fmt;
use std::net::IpAddr;

/// A transport protocol a rule allows.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Protocol {
    /// TCP.
    Tcp,
    /// UDP.
    Udp,
}

impl Protocol {
    /// Its name as firewalls write it (`tcp`, `udp`).
    pub fn name(self) -> &'static str {
        match self {
            Protocol::Tcp => "tcp",
            Protocol::Udp => "udp",
        }
    }
}

/// A peer network: an address and a prefix length (`198.18.0.0/15`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Peer {
    /// The network's address.
    pub addr: IpAddr,
    /// Its prefix length (32 or 128 for one host).
    pub prefix: u8,
}

impl Peer {
    /// One host.
    pub fn host(addr: IpAddr) -> Peer {
        let prefix = if addr.is_ipv4() { 32 } else { 128 };
        Peer { addr, prefix }
    }

    /// Whether it is an IPv6 network.
    pub fn is_ipv6(&self) -> bool {
        self.addr.is_ipv6()
    }
}

impl fmt::Display for Peer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.addr, self.prefix)
    }
}

/// One opening: inbound `protocol` to `ports`, from `peers` (any peer when
/// empty).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Opening {
    /// TCP or UDP.
    pub protocol: Protocol,
    /// Local ports, at least one.
    pub ports: Vec<u16>,
    /// Allowed peers; empty: any.
    pub peers: Vec<Peer>,
}

/// Why a request was refused before anything was planned.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum RequestError {
    /// The application name is empty, too long or has characters a
    /// firewall's comment or rule name does not take.
    #[error("application name `{0}`: 1–24 of A-Z a-z 0-9 . _ -")]
    App(String),
    /// The instance id is empty, too long or not of the same characters.
    #[error("instance id `{0}`: 1–16 of A-Z a-z 0-9 . _ -")]
    Instance(String),
    /// No opening, or one without ports (that would be "allow all").
    #[error("a request opens at least one port; never everything")]
    NoPorts,
    /// Port 0 is no port.
    #[error("port 0 cannot be opened")]
    PortZero,
    /// A prefix longer than the address.
    #[error("peer {0}: prefix longer than the address")]
    Prefix(String),
    /// More than the planner takes in one request.
    #[error("at most {MAX_OPENINGS} openings of {MAX_PORTS} ports and {MAX_PEERS} peers each")]
    TooMany,
}

/// Openings in one request at most.
pub const MAX_OPENINGS: usize = 16;
/// Ports in one opening at most.
pub const MAX_PORTS: usize = 64;
/// Peers in one opening at most.
pub const MAX_PEERS: usize = 64;

/// A request: the application, this instance of it, and what to open.
///
/// ```
/// use netmend::firewall::{Protocol, Request};
///
/// let request = Request::new("chat", "4242")?
///     .allow(Protocol::Tcp, &[7000])
///     .allow_from(Protocol::Udp, &[7001], &["198.18.0.0/15".parse()?]);
/// assert_eq!(request.tag(), "netmend:chat:4242");
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Request {
    app: String,
    instance: String,
    openings: Vec<Opening>,
}

fn valid_name(s: &str, max: usize) -> bool {
    !s.is_empty()
        && s.len() <= max
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b))
}

impl Request {
    /// A request of application `app`, instance `instance` (the process id,
    /// say): every rule is tagged `netmend:APP:INSTANCE`, so a later start
    /// can sweep what a crashed instance left.
    ///
    /// # Errors
    ///
    /// [`RequestError::App`], [`RequestError::Instance`].
    pub fn new(app: &str, instance: &str) -> Result<Request, RequestError> {
        if !valid_name(app, 24) {
            return Err(RequestError::App(app.to_string()));
        }
        if !valid_name(instance, 16) {
            return Err(RequestError::Instance(instance.to_string()));
        }
        Ok(Request {
            app: app.to_string(),
            instance: instance.to_string(),
            openings: Vec::new(),
        })
    }

    /// Also inbound `protocol` to `ports` from any peer.
    #[must_use]
    pub fn allow(self, protocol: Protocol, ports: &[u16]) -> Request {
        self.allow_from(protocol, ports, &[])
    }

    /// Also inbound `protocol` to `ports` from `peers` only.
    #[must_use]
    pub fn allow_from(mut self, protocol: Protocol, ports: &[u16], peers: &[Peer]) -> Request {
        self.openings.push(Opening {
            protocol,
            ports: ports.to_vec(),
            peers: peers.to_vec(),
        });
        self
    }

    /// The application's name.
    pub fn app(&self) -> &str {
        &self.app
    }

    /// The tag every rule of this request carries.
    pub fn tag(&self) -> String {
        format!("{}{}:{}", TAG_PREFIX, self.app, self.instance)
    }

    /// The openings, checked.
    ///
    /// # Errors
    ///
    /// [`RequestError::NoPorts`], [`RequestError::PortZero`],
    /// [`RequestError::Prefix`], [`RequestError::TooMany`].
    pub fn openings(&self) -> Result<&[Opening], RequestError> {
        if self.openings.is_empty() {
            return Err(RequestError::NoPorts);
        }
        if self.openings.len() > MAX_OPENINGS {
            return Err(RequestError::TooMany);
        }
        for o in &self.openings {
            if o.ports.is_empty() {
                return Err(RequestError::NoPorts);
            }
            if o.ports.len() > MAX_PORTS || o.peers.len() > MAX_PEERS {
                return Err(RequestError::TooMany);
            }
            if o.ports.contains(&0) {
                return Err(RequestError::PortZero);
            }
            if let Some(p) = o
                .peers
                .iter()
                .find(|p| p.prefix > if p.is_ipv6() { 128 } else { 32 })
            {
                return Err(RequestError::Prefix(p.to_string()));
            }
        }
        Ok(&self.openings)
    }
}

/// What every rule netmend makes begins its tag with.
pub const TAG_PREFIX: &str = "netmend:";

impl std::str::FromStr for Peer {
    type Err = RequestError;
    /// `ADDR` (one host) or `ADDR/PREFIX`.
    fn from_str(s: &str) -> Result<Peer, RequestError> {
        let bad = || RequestError::Prefix(s.to_string());
        match s.split_once('/') {
            None => s.parse().map(Peer::host).map_err(|_| bad()),
            Some((a, p)) => {
                let addr: IpAddr = a.parse().map_err(|_| bad())?;
                let prefix: u8 = p.parse().map_err(|_| bad())?;
                if prefix > if addr.is_ipv6() { 128 } else { 32 } {
                    return Err(bad());
                }
                Ok(Peer { addr, prefix })
            }
        }
    }
}
