//! The rendezvous socket and the channel a handover travels on: Unix domain
//! stream sockets, the descriptor as `SCM_RIGHTS` on a message's first byte.
//!
//! The system calls go through rustix (safe wrappers for `sendmsg`/`recvmsg`
//! with ancillary data and `SO_PEERCRED`); tokio's readiness drives them.

use super::header::{Header, SocketKind, HEADER_LEN, MAX_STATE};
use super::peer::{Allow, PeerCred};
use super::{addresses, HandoverError, Received, Socket};
use rustix::net::{
    RecvAncillaryBuffer, RecvAncillaryMessage, RecvFlags, ReturnFlags, SendAncillaryBuffer,
    SendAncillaryMessage, SendFlags,
};
use std::io::{IoSlice, IoSliceMut};
use std::mem::MaybeUninit;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use tokio::io::{AsyncReadExt, AsyncWriteExt, Interest};
use tokio::net::{UnixListener, UnixStream};

/// Descriptors one receive makes room for: a handover carries one; room for
/// a few more lets the receiver see (and close) what a confused or hostile
/// sender added, and anything beyond is truncated by the kernel, which
/// closes what it did not deliver.
const FD_ROOM: usize = 8;

/// A listening rendezvous socket: where the process that takes over waits
/// for the one that hands over.
#[derive(Debug)]
pub struct Rendezvous {
    listener: UnixListener,
    allow: Allow,
    /// The path to remove on drop (none in the abstract namespace).
    path: Option<PathBuf>,
}

impl Rendezvous {
    /// Listens at `path`, made owner-only (`0600`). The credential check at
    /// [`accept`](Self::accept) also refuses a process that connected in the
    /// moment between `bind` and `chmod`. The path is removed on drop.
    ///
    /// # Errors
    ///
    /// The socket could not be made (the path exists, its directory is not
    /// writable, …); must be called inside a tokio runtime.
    pub fn bind(path: impl AsRef<Path>, allow: Allow) -> Result<Rendezvous, HandoverError> {
        let path = path.as_ref();
        let listener = std::os::unix::net::UnixListener::bind(path)?;
        let rendezvous = Rendezvous::from_std(listener, allow, Some(path.to_path_buf()))?;
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))?;
        Ok(rendezvous)
    }

    /// Listens at `name` in Linux's abstract namespace: no file, no
    /// permissions — the credential check is the guard.
    ///
    /// # Errors
    ///
    /// The name is taken or too long; must be called inside a tokio runtime.
    pub fn bind_abstract(name: &[u8], allow: Allow) -> Result<Rendezvous, HandoverError> {
        use std::os::linux::net::SocketAddrExt;
        let addr = std::os::unix::net::SocketAddr::from_abstract_name(name)?;
        let listener = std::os::unix::net::UnixListener::bind_addr(&addr)?;
        Rendezvous::from_std(listener, allow, None)
    }

    fn from_std(
        listener: std::os::unix::net::UnixListener,
        allow: Allow,
        path: Option<PathBuf>,
    ) -> Result<Rendezvous, HandoverError> {
        listener.set_nonblocking(true)?;
        Ok(Rendezvous {
            listener: UnixListener::from_std(listener)?,
            allow,
            path,
        })
    }

    /// The next process that connects, once its credentials pass the
    /// allow-list.
    ///
    /// # Errors
    ///
    /// [`HandoverError::PeerRefused`] for a process not on the list (its
    /// connection is closed; call again for the next); I/O errors.
    ///
    /// # Cancel safety
    ///
    /// Cancel safe: a connection is taken from the kernel's queue only when
    /// the call returns it.
    pub async fn accept(&self) -> Result<Channel, HandoverError> {
        let (stream, _) = self.listener.accept().await?;
        Channel::checked(stream, &self.allow)
    }
}

impl Drop for Rendezvous {
    fn drop(&mut self) {
        if let Some(path) = &self.path {
            // Best effort: a path someone else replaced stays theirs to
            // clean up only in that we do not fail here.
            let _ = std::fs::remove_file(path);
        }
    }
}

/// One end of a handover channel: sends sockets, receives them.
#[derive(Debug)]
pub struct Channel {
    stream: UnixStream,
    peer: PeerCred,
}

impl Channel {
    /// Connects to the rendezvous at `path`, checking who listens there.
    ///
    /// # Errors
    ///
    /// [`HandoverError::PeerRefused`] when the listening process is not on
    /// `allow`; I/O errors (nobody listens, no permission).
    ///
    /// # Cancel safety
    ///
    /// Cancel safe: a dropped call leaves nothing behind.
    pub async fn connect(path: impl AsRef<Path>, allow: Allow) -> Result<Channel, HandoverError> {
        let stream = UnixStream::connect(path).await?;
        Channel::checked(stream, &allow)
    }

    /// Connects to the rendezvous `name` in the abstract namespace.
    ///
    /// # Errors
    ///
    /// As [`connect`](Self::connect); must be called inside a tokio runtime.
    pub fn connect_abstract(name: &[u8], allow: Allow) -> Result<Channel, HandoverError> {
        use std::os::linux::net::SocketAddrExt;
        let addr = std::os::unix::net::SocketAddr::from_abstract_name(name)?;
        // A Unix connect completes at once (or fails): no need to wait.
        let stream = std::os::unix::net::UnixStream::connect_addr(&addr)?;
        Channel::from_std(stream, allow)
    }

    /// A channel over a connected Unix stream socket — one end of a
    /// `socketpair` a child process inherited, say — once the process at the
    /// other end passes `allow`.
    ///
    /// # Errors
    ///
    /// [`HandoverError::PeerRefused`]; I/O errors; must be called inside a
    /// tokio runtime.
    pub fn from_std(
        stream: std::os::unix::net::UnixStream,
        allow: Allow,
    ) -> Result<Channel, HandoverError> {
        stream.set_nonblocking(true)?;
        Channel::checked(UnixStream::from_std(stream)?, &allow)
    }

    fn checked(stream: UnixStream, allow: &Allow) -> Result<Channel, HandoverError> {
        let cred = rustix::net::sockopt::socket_peercred(&stream).map_err(std::io::Error::from)?;
        let peer = PeerCred {
            pid: cred.pid.as_raw_nonzero().get(),
            uid: cred.uid.as_raw(),
            gid: cred.gid.as_raw(),
        };
        if !allow.permits(peer, rustix::process::getuid().as_raw()) {
            tracing::warn!(?peer, "handover: peer refused");
            return Err(HandoverError::PeerRefused(peer));
        }
        Ok(Channel { stream, peer })
    }

    /// Who is at the other end.
    pub fn peer(&self) -> PeerCred {
        self.peer
    }

    /// Hands `socket` over with `tag` and `state`. The receiver gets its own
    /// descriptor of the same socket; close this process's (drop `socket`)
    /// once the receiver has taken over, or both keep using it.
    ///
    /// # Errors
    ///
    /// [`HandoverError::Tag`], [`HandoverError::StateTooLarge`], a socket
    /// that is not bound to an IP address ([`HandoverError::Mismatch`]), I/O
    /// errors (the receiver went away).
    ///
    /// # Cancel safety
    ///
    /// Not cancel safe: a call dropped part-way may have sent part of the
    /// message; drop the channel then.
    pub async fn send(
        &mut self,
        socket: &Socket,
        tag: &str,
        state: &[u8],
    ) -> Result<(), HandoverError> {
        let tag_len = u8::try_from(tag.len()).map_err(|_| HandoverError::Tag)?;
        let state_len = u32::try_from(state.len())
            .ok()
            .filter(|&n| n <= MAX_STATE)
            .ok_or(HandoverError::StateTooLarge(state.len()))?;
        let (local, peer) = addresses(socket.fd())?;
        let header = Header {
            kind: socket.kind(),
            local,
            peer: if socket.kind() == SocketKind::TcpListener {
                None
            } else {
                peer
            },
            tag_len,
            state_len,
        };
        let head = header.encode();
        let fds = [socket.fd()];
        let mut space = [MaybeUninit::uninit(); rustix::cmsg_space!(ScmRights(1))];
        let mut control = SendAncillaryBuffer::new(&mut space);
        if !control.push(SendAncillaryMessage::ScmRights(&fds)) {
            return Err(std::io::Error::other("no room for one descriptor").into());
        }
        // The header, tag and state leave in one `sendmsg` as far as the
        // socket buffer takes them; the descriptor rides on the first byte.
        let parts = [
            IoSlice::new(&head),
            IoSlice::new(tag.as_bytes()),
            IoSlice::new(state),
        ];
        let stream = &self.stream;
        let sent = stream
            .async_io(Interest::WRITABLE, || {
                rustix::net::sendmsg(stream, &parts, &mut control, SendFlags::NOSIGNAL)
                    .map_err(std::io::Error::from)
            })
            .await?;
        let mut rest: Vec<u8> = Vec::new();
        for part in [&head[..], tag.as_bytes(), state] {
            rest.extend_from_slice(part);
        }
        self.stream.write_all(&rest[sent.min(rest.len())..]).await?;
        self.stream.flush().await?;
        Ok(())
    }

    /// Receives one handed-over socket, checked against its header.
    ///
    /// # Errors
    ///
    /// [`HandoverError::Closed`] at the end of the channel; a refused
    /// message — [`Truncated`](HandoverError::Truncated),
    /// [`NoDescriptor`](HandoverError::NoDescriptor),
    /// [`ExtraDescriptors`](HandoverError::ExtraDescriptors),
    /// [`Header`](HandoverError::Header),
    /// [`Mismatch`](HandoverError::Mismatch), [`Tag`](HandoverError::Tag) —
    /// with every descriptor it carried closed; after one the channel is out
    /// of step: drop it.
    ///
    /// # Cancel safety
    ///
    /// Not cancel safe: a call dropped after the first bytes arrived loses
    /// that message (its descriptor is closed, not leaked).
    pub async fn recv(&mut self) -> Result<Received, HandoverError> {
        let mut head = [0u8; HEADER_LEN];
        let mut space = [MaybeUninit::uninit(); rustix::cmsg_space!(ScmRights(FD_ROOM))];
        let stream = &self.stream;
        let (got, flags, mut fds) = stream
            .async_io(Interest::READABLE, || {
                let mut control = RecvAncillaryBuffer::new(&mut space);
                let msg = rustix::net::recvmsg(
                    stream,
                    &mut [IoSliceMut::new(&mut head)],
                    &mut control,
                    RecvFlags::CMSG_CLOEXEC,
                )
                .map_err(std::io::Error::from)?;
                let fds: Vec<OwnedFd> = control
                    .drain()
                    .flat_map(|m| match m {
                        RecvAncillaryMessage::ScmRights(fds) => fds.collect::<Vec<_>>(),
                        _ => Vec::new(),
                    })
                    .collect();
                Ok((msg.bytes, msg.flags, fds))
            })
            .await?;
        // From here every early return drops `fds`: nothing leaks.
        if flags.contains(ReturnFlags::CTRUNC) {
            return Err(HandoverError::Truncated);
        }
        if got == 0 {
            return Err(HandoverError::Closed);
        }
        let fd = match fds.len() {
            0 => return Err(HandoverError::NoDescriptor),
            1 => fds.remove(0),
            n => return Err(HandoverError::ExtraDescriptors(n)),
        };
        if got < HEADER_LEN {
            self.read_exact(&mut head[got..]).await?;
        }
        let header = Header::decode(&head)?;
        let mut tag = vec![0u8; usize::from(header.tag_len)];
        self.read_exact(&mut tag).await?;
        let tag = String::from_utf8(tag).map_err(|_| HandoverError::Tag)?;
        // Bounded by the header's check (MAX_STATE).
        let mut state = vec![0u8; header.state_len as usize];
        self.read_exact(&mut state).await?;
        let socket = checked_socket(fd, &header)?;
        Ok(Received {
            socket,
            tag,
            state,
            from: self.peer,
        })
    }

    async fn read_exact(&mut self, buf: &mut [u8]) -> Result<(), HandoverError> {
        match self.stream.read_exact(buf).await {
            Ok(_) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => Err(HandoverError::Closed),
            Err(e) => Err(e.into()),
        }
    }
}

/// What the kernel says `fd` is, in the header's words.
fn actual_kind(fd: BorrowedFd<'_>) -> Result<Option<SocketKind>, HandoverError> {
    use rustix::net::{sockopt, AddressFamily, SocketType};
    let io = |e: rustix::io::Errno| HandoverError::Io(e.into());
    let family = sockopt::socket_domain(fd).map_err(io)?;
    if family != AddressFamily::INET && family != AddressFamily::INET6 {
        return Ok(None);
    }
    let kind = match sockopt::socket_type(fd).map_err(io)? {
        SocketType::STREAM => {
            let protocol = sockopt::socket_protocol(fd).map_err(io)?;
            if protocol != Some(rustix::net::ipproto::TCP) {
                return Ok(None);
            }
            if sockopt::socket_acceptconn(fd).map_err(io)? {
                SocketKind::TcpListener
            } else {
                SocketKind::TcpStream
            }
        }
        SocketType::DGRAM => SocketKind::Udp,
        _ => return Ok(None),
    };
    Ok(Some(kind))
}

/// `fd` as the socket the header says it is, or a [`HandoverError::Mismatch`]
/// (and `fd` closed).
fn checked_socket(fd: OwnedFd, header: &Header) -> Result<Socket, HandoverError> {
    let kind = actual_kind(fd.as_fd())?;
    if kind != Some(header.kind) {
        return Err(HandoverError::Mismatch {
            claimed: format!("{:?}", header.kind),
            actual: kind.map_or("not a TCP or UDP socket".into(), |k| format!("{k:?}")),
        });
    }
    let (local, peer) = addresses(fd.as_fd())?;
    // A stream reset in flight has no peer any more, and the kernel may
    // have let its local port go too: it is still a TCP stream, of no use
    // to anyone but the receiver, whose first read reports the reset (a
    // resumable session then resumes). Only its kind is checked.
    let dead_stream = header.kind == SocketKind::TcpStream && peer.is_none();
    let peer = match header.kind {
        SocketKind::TcpListener => None,
        _ => peer,
    };
    if !dead_stream && (local != header.local || peer != header.peer) {
        return Err(HandoverError::Mismatch {
            claimed: format!("local {} peer {:?}", header.local, header.peer),
            actual: format!("local {local} peer {peer:?}"),
        });
    }
    Ok(match header.kind {
        SocketKind::TcpStream => Socket::TcpStream(fd.into()),
        SocketKind::TcpListener => Socket::TcpListener(fd.into()),
        SocketKind::Udp => Socket::Udp(fd.into()),
    })
}
