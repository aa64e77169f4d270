//! Socket handover between real processes: a TCP stream, a listener and a
//! UDP socket handed to a second process (the `handover_peer` example)
//! keep working; a Python program receives a socket from the engine.
//! (Another user's process refused: `handover_credentials.rs`, alone in its
//! binary because it counts descriptors.)
#![cfg(target_os = "linux")]

use netmend::handover::{Allow, Channel, Socket};
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

/// The `handover_peer` example, built beside the tests (`cargo test` builds
/// examples).
fn peer_binary() -> PathBuf {
    let exe = std::env::current_exe().expect("test binary path");
    let dir = exe
        .parent()
        .and_then(Path::parent)
        .expect("target profile dir");
    let bin = dir.join("examples").join("handover_peer");
    {
        // Built with the library as it is now: `cargo test --test X` builds
        // no examples, and an old one would test old code (a no-op when
        // `cargo test` built it already; the lock is free while tests run).
        static BUILD: std::sync::Once = std::sync::Once::new();
        BUILD.call_once(|| {
            let status = Command::new(env!("CARGO"))
                // With the workspace's features, as `cargo test --workspace`
                // built it (then a no-op); `-p netmend` alone resolves other
                // features and rebuilds the library and its dependencies.
                .args(["build", "-q", "--workspace", "--example", "handover_peer"])
                .status()
                .expect("cargo runs");
            assert!(status.success(), "building the handover_peer example");
        });
    }
    assert!(bin.is_file(), "{} missing", bin.display());
    bin
}

/// A fresh rendezvous path in a fresh directory.
fn rendezvous_path(name: &str) -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join(format!("{name}.sock"));
    (dir, path)
}

/// Starts `handover_peer receive PATH` and waits until it listens.
fn spawn_receiver(path: &Path) -> Child {
    let mut child = Command::new(peer_binary())
        .arg("receive")
        .arg(path)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn the peer");
    let mut line = String::new();
    BufReader::new(child.stdout.as_mut().expect("stdout"))
        .read_line(&mut line)
        .expect("the peer's first line");
    assert_eq!(line.trim(), "ready");
    child
}

fn wait_ok(child: Child) {
    let out = child.wait_with_output().expect("peer exits");
    assert!(
        out.status.success(),
        "peer failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime")
}

/// Hands `socket` to the process listening at `path`, then closes this
/// process's copy.
fn hand_over(path: &Path, socket: Socket, tag: &str, state: &[u8]) {
    runtime().block_on(async {
        let mut channel = Channel::connect(path, Allow::same_user())
            .await
            .expect("connect to the peer");
        channel.send(&socket, tag, state).await.expect("send");
    });
    drop(socket);
}

#[test]
fn a_connected_tcp_stream_keeps_working_in_the_second_process() {
    let (_dir, path) = rendezvous_path("stream");
    let child = spawn_receiver(&path);
    let server = TcpListener::bind("127.0.0.1:0").expect("listen");
    let client = TcpStream::connect(server.local_addr().expect("addr")).expect("connect");
    let (mut far, _) = server.accept().expect("accept");
    // This process wrote first, on the connection it opened.
    (&client).write_all(b"before; ").expect("write");
    hand_over(&path, Socket::TcpStream(client), "app/v1", b"offset=8");

    far.set_read_timeout(Some(Duration::from_secs(10)))
        .expect("timeout");
    let greeting = b"child got app/v1/offset=8";
    let mut got = vec![0u8; 8 + greeting.len()];
    far.read_exact(&mut got).expect("read");
    assert_eq!(&got[..8], b"before; ");
    assert_eq!(&got[8..], greeting);
    // The same connection, both ways, exact bytes.
    let payload: Vec<u8> = (0..200_000u32).map(|i| (i % 251) as u8).collect();
    let writer = {
        let mut far = far.try_clone().expect("clone");
        let payload = payload.clone();
        std::thread::spawn(move || {
            far.write_all(&payload).expect("write");
            far.shutdown(std::net::Shutdown::Write).expect("shutdown");
        })
    };
    let mut echoed = Vec::new();
    far.read_to_end(&mut echoed).expect("echo");
    writer.join().expect("writer");
    assert_eq!(echoed, payload);
    wait_ok(child);
}

#[test]
fn a_listener_accepts_in_the_second_process() {
    let (_dir, path) = rendezvous_path("listener");
    let child = spawn_receiver(&path);
    let listener = TcpListener::bind("127.0.0.1:0").expect("listen");
    let addr = listener.local_addr().expect("addr");
    hand_over(&path, Socket::TcpListener(listener), "listener", b"");
    // Nobody in this process listens any more: the child accepts.
    let mut conn = TcpStream::connect(addr).expect("connect");
    let mut got = String::new();
    conn.read_to_string(&mut got).expect("read");
    assert_eq!(got, "accepted by the child");
    wait_ok(child);
}

#[test]
fn a_udp_socket_sends_from_the_second_process() {
    let (_dir, path) = rendezvous_path("udp");
    let child = spawn_receiver(&path);
    let socket = UdpSocket::bind("127.0.0.1:0").expect("bind");
    let from = socket.local_addr().expect("addr");
    let sink = UdpSocket::bind("127.0.0.1:0").expect("bind");
    sink.set_read_timeout(Some(Duration::from_secs(10)))
        .expect("timeout");
    let to = sink.local_addr().expect("addr").to_string();
    hand_over(&path, Socket::Udp(socket), "udp", to.as_bytes());
    let mut buf = [0u8; 64];
    let (n, sender) = sink.recv_from(&mut buf).expect("datagram");
    assert_eq!(&buf[..n], b"udp from the child");
    assert_eq!(sender, from, "sent from the handed socket's own address");
    wait_ok(child);
}

#[test]
fn a_python_program_receives_a_socket_from_the_engine() {
    let (_dir, path) = rendezvous_path("python");
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/handover_receiver.py");
    let mut child = Command::new("python3")
        .arg(&script)
        .arg(&path)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("python3 runs (.ci/run installs it)");
    let mut line = String::new();
    BufReader::new(child.stdout.as_mut().expect("stdout"))
        .read_line(&mut line)
        .expect("python's first line");
    assert_eq!(line.trim(), "ready");
    let server = TcpListener::bind("127.0.0.1:0").expect("listen");
    let client = TcpStream::connect(server.local_addr().expect("addr")).expect("connect");
    let (mut far, _) = server.accept().expect("accept");
    hand_over(&path, Socket::TcpStream(client), "py", b"\x00\x01state");
    far.set_read_timeout(Some(Duration::from_secs(10)))
        .expect("timeout");
    far.write_all(b"ping from the far end").expect("write");
    far.shutdown(std::net::Shutdown::Write).expect("shutdown");
    let mut got = Vec::new();
    far.read_to_end(&mut got).expect("read");
    let want: &[u8] = b"python got kind=1 tag=py state=0001 7374617465 data=ping from the far end";
    assert_eq!(String::from_utf8_lossy(&got), String::from_utf8_lossy(want));
    wait_ok(child);
}
