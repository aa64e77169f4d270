//! Handing live sockets to other processes (Linux).
//!
//! One process opens a connection — through the routability gate, a NAT
//! traversal, a resumable session's handshake — and passes the live socket
//! to another process, which uses it as its own: the model of systemd
//! socket activation, Envoy's hot restart and HAProxy's seamless reload.
//! The same mechanism keeps connections alive when an application replaces
//! its own process.
//!
//! The descriptor travels over a Unix domain socket as `SCM_RIGHTS`, with a
//! small self-describing [`Header`]: format version, socket kind, local and
//! peer addresses, an application tag and optional opaque state bytes. The
//! wire format is in the README, with a Python and a C receiver.
//!
//! Safety rules, each tested:
//! - both ends check the other's kernel-reported credentials
//!   (`SO_PEERCRED`) against an [`Allow`] list — by default the same user
//!   only; a refused peer gets [`HandoverError::PeerRefused`] and nothing is
//!   sent or kept;
//! - a rendezvous path is created owner-only (`0600`); the abstract
//!   namespace ([`Rendezvous::bind_abstract`]) has no permissions, so there
//!   the credential check is the guard;
//! - received descriptors are close-on-exec (`MSG_CMSG_CLOEXEC`);
//! - a message with its control data truncated (`MSG_CTRUNC`), with more
//!   than one descriptor, with none, or whose header does not match the
//!   descriptor's real kind and addresses (checked with `getsockopt`,
//!   `getsockname`, `getpeername`) is refused with a typed error, and every
//!   descriptor it carried is closed, never leaked.
//!
//! ```no_run
//! use netmend::handover::{Allow, Channel, Rendezvous, Socket};
//!
//! # async fn demo() -> Result<(), netmend::handover::HandoverError> {
//! // The process that takes over:
//! let rendezvous = Rendezvous::bind("/run/user/1000/app.sock", Allow::same_user())?;
//! let mut channel = rendezvous.accept().await?;
//! let received = channel.recv().await?;
//! let Socket::TcpStream(stream) = received.socket else { return Ok(()) };
//!
//! // The process that hands over (elsewhere):
//! let mut channel = Channel::connect("/run/user/1000/app.sock", Allow::same_user()).await?;
//! # let stream = std::net::TcpStream::connect("198.18.0.1:80").map_err(netmend::handover::HandoverError::Io)?;
//! channel.send(&Socket::TcpStream(stream), "app/v1", b"state").await?;
//! # Ok(()) }
//! ```

mod channel;
mod header;
mod peer;

pub use channel::{Channel, Rendezvous};
pub use header::{Header, HeaderError, SocketKind, HEADER_LEN, MAX_STATE, VERSION};
pub use peer::{Allow, PeerCred};

use std::net::SocketAddr;
use std::os::fd::{AsFd, BorrowedFd};

/// A socket to hand over, or one received.
#[derive(Debug)]
pub enum Socket {
    /// A connected TCP stream.
    TcpStream(std::net::TcpStream),
    /// A listening TCP socket.
    TcpListener(std::net::TcpListener),
    /// A UDP socket.
    Udp(std::net::UdpSocket),
}

impl Socket {
    /// Its kind.
    pub fn kind(&self) -> SocketKind {
        match self {
            Socket::TcpStream(_) => SocketKind::TcpStream,
            Socket::TcpListener(_) => SocketKind::TcpListener,
            Socket::Udp(_) => SocketKind::Udp,
        }
    }

    fn fd(&self) -> BorrowedFd<'_> {
        match self {
            Socket::TcpStream(s) => s.as_fd(),
            Socket::TcpListener(s) => s.as_fd(),
            Socket::Udp(s) => s.as_fd(),
        }
    }
}

/// What a handover delivered.
#[derive(Debug)]
pub struct Received {
    /// The socket, now this process's own (close-on-exec, blocking as the
    /// sender left it).
    pub socket: Socket,
    /// The sender's application tag.
    pub tag: String,
    /// The sender's opaque state bytes.
    pub state: Vec<u8>,
    /// Who sent it.
    pub from: PeerCred,
}

/// Why a handover failed. Whatever the error, a descriptor that arrived
/// with a refused message has been closed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum HandoverError {
    /// A system call failed.
    #[error("handover I/O: {0}")]
    Io(#[from] std::io::Error),
    /// The process at the other end is not on the allow-list.
    #[error("peer refused: pid {} uid {} gid {} is not allowed", .0.pid, .0.uid, .0.gid)]
    PeerRefused(PeerCred),
    /// The other end closed the channel before a whole message.
    #[error("the channel closed before a whole handover message")]
    Closed,
    /// The message's header is wrong.
    #[error("bad handover header: {0}")]
    Header(#[from] HeaderError),
    /// The tag is not UTF-8, or longer than 255 bytes (sending).
    #[error("the tag must be UTF-8 of at most 255 bytes")]
    Tag,
    /// The state is longer than [`MAX_STATE`] (sending).
    #[error("{0} bytes of state, at most {MAX_STATE}")]
    StateTooLarge(usize),
    /// The kernel truncated the control data (`MSG_CTRUNC`): more
    /// descriptors than one message may carry; those that arrived were
    /// closed.
    #[error("control data truncated: the sender passed more descriptors than a handover carries")]
    Truncated,
    /// A message without a descriptor.
    #[error("a handover message arrived without a descriptor")]
    NoDescriptor,
    /// A message with more than one descriptor (all closed).
    #[error("a handover carries one descriptor, this one carried {0}")]
    ExtraDescriptors(usize),
    /// The descriptor is not what the header says it is.
    #[error("the header says {claimed}, the descriptor is {actual}")]
    Mismatch {
        /// What the header claims.
        claimed: String,
        /// What the kernel says.
        actual: String,
    },
}

/// The local and peer addresses of a socket, as the kernel reports them.
fn addresses(fd: BorrowedFd<'_>) -> Result<(SocketAddr, Option<SocketAddr>), HandoverError> {
    let local = rustix::net::getsockname(fd).map_err(std::io::Error::from)?;
    let local = SocketAddr::try_from(local).map_err(|_| HandoverError::Mismatch {
        claimed: "an IP socket".into(),
        actual: "a socket of another family".into(),
    })?;
    let peer = match rustix::net::getpeername(fd) {
        Ok(Some(addr)) => SocketAddr::try_from(addr).ok(),
        // Not connected (a listener, an unconnected UDP socket).
        Ok(None) | Err(rustix::io::Errno::NOTCONN) => None,
        Err(e) => return Err(std::io::Error::from(e).into()),
    };
    Ok((local, peer))
}
