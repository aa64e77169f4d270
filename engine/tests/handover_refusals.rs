//! A handover receiver refuses what a confused or hostile sender sends —
//! truncated control data, extra descriptors, none, a header that lies
//! about the descriptor, garbage — with a typed error, and closes every
//! descriptor that came with it: the process's open descriptors are counted
//! before and after (one test, alone in this binary, so that nothing else
//! opens descriptors meanwhile).
#![cfg(target_os = "linux")]

use netmend::handover::{Allow, Channel, HandoverError, Header, HeaderError, SocketKind};
use rustix::net::{SendAncillaryBuffer, SendAncillaryMessage, SendFlags};
use std::io::IoSlice;
use std::mem::MaybeUninit;
use std::net::{TcpListener, UdpSocket};
use std::os::fd::{AsFd, BorrowedFd};
use std::os::unix::net::UnixStream;

fn open_fds() -> usize {
    std::fs::read_dir("/proc/self/fd").expect("/proc").count()
}

/// Sends `bytes` with `fds` attached, as a hand-written sender would.
fn raw_send(to: &UnixStream, bytes: &[u8], fds: &[BorrowedFd<'_>]) {
    let mut space = vec![MaybeUninit::uninit(); rustix::cmsg_space!(ScmRights(fds.len().max(1)))];
    let mut control = SendAncillaryBuffer::new(&mut space);
    if !fds.is_empty() {
        assert!(control.push(SendAncillaryMessage::ScmRights(fds)));
    }
    let sent = rustix::net::sendmsg(to, &[IoSlice::new(bytes)], &mut control, SendFlags::empty())
        .expect("sendmsg");
    assert_eq!(sent, bytes.len());
}

fn header(kind: SocketKind, local: std::net::SocketAddr) -> Vec<u8> {
    Header {
        kind,
        local,
        peer: None,
        tag_len: 0,
        state_len: 0,
    }
    .encode()
    .to_vec()
}

#[test]
fn every_refused_message_is_a_typed_error_and_closes_its_descriptors() {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(async {
        let udp = UdpSocket::bind("127.0.0.1:0").expect("udp");
        let listener = TcpListener::bind("127.0.0.1:0").expect("tcp");
        let udp_addr = udp.local_addr().expect("addr");
        let tcp_addr = listener.local_addr().expect("addr");

        // Each case on a fresh channel: after a refusal the channel is out
        // of step and is dropped, as the docs say.
        type Case<'a> = (&'a str, Vec<u8>, Vec<BorrowedFd<'a>>);
        let many: Vec<BorrowedFd> = (0..20).map(|_| udp.as_fd()).collect();
        let cases: Vec<Case> = vec![
            (
                "two descriptors",
                header(SocketKind::Udp, udp_addr),
                vec![udp.as_fd(), udp.as_fd()],
            ),
            (
                "twenty descriptors (truncated)",
                header(SocketKind::Udp, udp_addr),
                many,
            ),
            ("no descriptor", header(SocketKind::Udp, udp_addr), vec![]),
            (
                "a UDP socket said to be a listener",
                header(SocketKind::TcpListener, udp_addr),
                vec![udp.as_fd()],
            ),
            (
                "a listener said to be at another address",
                header(SocketKind::TcpListener, udp_addr),
                vec![listener.as_fd()],
            ),
            ("garbage", vec![0x42; 50], vec![udp.as_fd()]),
            (
                "a Unix socket said to be UDP",
                header(SocketKind::Udp, udp_addr),
                vec![],
            ),
        ];
        let before = open_fds();
        for (what, bytes, fds) in cases {
            let (ours, theirs) = UnixStream::pair().expect("socketpair");
            let mut channel = Channel::from_std(ours, Allow::same_user()).expect("channel");
            let unix = what
                .starts_with("a Unix socket")
                .then(|| theirs.try_clone().expect("clone"));
            let fds = match &unix {
                Some(u) => vec![u.as_fd()],
                None => fds,
            };
            raw_send(&theirs, &bytes, &fds);
            drop((theirs, unix));
            let err = channel.recv().await.expect_err(what);
            match (what, &err) {
                ("two descriptors", HandoverError::ExtraDescriptors(2))
                | ("twenty descriptors (truncated)", HandoverError::Truncated)
                | ("no descriptor", HandoverError::NoDescriptor)
                | ("garbage", HandoverError::Header(HeaderError::Magic)) => {}
                (
                    "a UDP socket said to be a listener",
                    HandoverError::Mismatch { claimed, actual },
                ) => {
                    assert_eq!((claimed.as_str(), actual.as_str()), ("TcpListener", "Udp"));
                }
                (
                    "a listener said to be at another address",
                    HandoverError::Mismatch { claimed, actual },
                ) => {
                    assert!(claimed.contains(&udp_addr.to_string()), "{claimed}");
                    assert!(actual.contains(&tcp_addr.to_string()), "{actual}");
                }
                ("a Unix socket said to be UDP", HandoverError::Mismatch { actual, .. }) => {
                    assert_eq!(actual, "not a TCP or UDP socket");
                }
                _ => panic!("{what}: unexpected {err:?}"),
            }
            drop(channel);
            assert_eq!(open_fds(), before, "{what}: a descriptor leaked");
        }

        // And a good one on the same kind of channel goes through, with
        // exactly one new descriptor, close-on-exec.
        let (ours, theirs) = UnixStream::pair().expect("socketpair");
        let mut channel = Channel::from_std(ours, Allow::same_user()).expect("channel");
        raw_send(&theirs, &header(SocketKind::Udp, udp_addr), &[udp.as_fd()]);
        let received = channel.recv().await.expect("a good handover");
        let netmend::handover::Socket::Udp(got) = received.socket else {
            panic!("not UDP");
        };
        assert_eq!(got.local_addr().expect("addr"), udp_addr);
        let flags = rustix::io::fcntl_getfd(&got).expect("fcntl");
        assert!(flags.contains(rustix::io::FdFlags::CLOEXEC));
        assert_eq!(received.from.pid, std::process::id() as i32);
        drop((got, channel, theirs));
        assert_eq!(open_fds(), before);
    });
}
