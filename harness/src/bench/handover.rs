//! `netmend bench handover`: how long a live connection takes to change
//! process — from the engine's `send` of the socket until the receiving
//! process's first byte on it arrives at the far end — side by side with
//! what a process without handover does: open a fresh connection and write.
//!
//! Both on loopback, with a second real process (this binary, run as
//! `netmend __handover-receiver`), and both start with a wake-up of that
//! process (the handover by its message, the fresh connection by one byte
//! on a connection it holds); a
//! fresh connection on a real network adds a round trip or more (and, for a
//! session, its handshake), a handover does not.

use netmend::handover::{Allow, Channel, Rendezvous, Socket};
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// One way's figures.
#[derive(Clone, Debug)]
pub struct Figures {
    /// Median.
    pub median: Duration,
    /// 99th percentile.
    pub p99: Duration,
    /// Fastest.
    pub min: Duration,
}

fn figures(mut v: Vec<Duration>) -> Figures {
    v.sort_unstable();
    let at = |q: f64| v[((v.len() - 1) as f64 * q).round() as usize];
    Figures {
        median: at(0.5),
        p99: at(0.99),
        min: v[0],
    }
}

/// The byte the receiving process writes first.
const FIRST: u8 = b'!';

/// The receiving process: binds a rendezvous at `path`, says "ready", and
/// for each message on its one channel either takes the handed socket and
/// writes one byte (`!`) on it (a handover), or — on a socket whose state is
/// `connect ADDR` — opens a fresh connection to ADDR and writes that byte
/// there (the baseline, told when to start by the same channel).
///
/// # Errors
///
/// What went wrong, in words.
pub fn receiver(path: &Path) -> Result<(), String> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| format!("runtime: {e}"))?;
    rt.block_on(async {
        let rendezvous = Rendezvous::bind(path, Allow::same_user()).map_err(|e| e.to_string())?;
        println!("ready");
        let mut channel = rendezvous.accept().await.map_err(|e| e.to_string())?;
        loop {
            let received = match channel.recv().await {
                Ok(r) => r,
                Err(netmend::handover::HandoverError::Closed) => return Ok(()),
                Err(e) => return Err(e.to_string()),
            };
            let Socket::TcpStream(mut stream) = received.socket else {
                return Err("expected a TCP stream".into());
            };
            match received.state.strip_prefix(b"connect ") {
                Some(addr) => {
                    let addr = String::from_utf8_lossy(addr).into_owned();
                    // Go when the sender says so, on the handed socket.
                    let mut go = [0u8; 1];
                    stream.read_exact(&mut go).map_err(|e| e.to_string())?;
                    drop(stream);
                    let mut fresh = TcpStream::connect(addr.as_str())
                        .map_err(|e| format!("connect {addr}: {e}"))?;
                    fresh.set_nodelay(true).map_err(|e| e.to_string())?;
                    fresh.write_all(&[FIRST]).map_err(|e| e.to_string())?;
                }
                None => {
                    stream.set_nodelay(true).map_err(|e| e.to_string())?;
                    stream.write_all(&[FIRST]).map_err(|e| e.to_string())?;
                }
            }
        }
    })
}

/// The receiving process, ended on drop.
struct Receiver(Child);

impl Drop for Receiver {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Runs `rounds` handovers and `rounds` fresh connections, interleaved;
/// returns (handover, fresh connection).
///
/// # Errors
///
/// The receiving process or a socket failed, in words.
pub fn run(rounds: usize) -> Result<(Figures, Figures), String> {
    let dir = tempfile::tempdir().map_err(|e| format!("temp dir: {e}"))?;
    let path = dir.path().join("handover.sock");
    let exe = std::env::current_exe().map_err(|e| format!("this binary: {e}"))?;
    let mut child = Command::new(exe)
        .arg("__handover-receiver")
        .arg(&path)
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .map_err(|e| format!("the receiving process: {e}"))?;
    let mut line = String::new();
    if let Some(out) = child.stdout.as_mut() {
        BufReader::new(out)
            .read_line(&mut line)
            .map_err(|e| format!("the receiving process: {e}"))?;
    }
    let _receiver = Receiver(child);
    if line.trim() != "ready" {
        return Err("the receiving process did not start".into());
    }
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| format!("runtime: {e}"))?;
    let server = TcpListener::bind("127.0.0.1:0").map_err(|e| format!("listen: {e}"))?;
    let addr = server.local_addr().map_err(|e| e.to_string())?;
    let io = |e: std::io::Error| e.to_string();
    rt.block_on(async {
        let mut channel = Channel::connect(&path, Allow::same_user())
            .await
            .map_err(|e| e.to_string())?;
        let (mut handover, mut fresh) = (Vec::new(), Vec::new());
        let mut byte = [0u8; 1];
        for round in 0..rounds + rounds / 10 {
            // A handover: the connection exists, its far end waits.
            let client = TcpStream::connect(addr).map_err(io)?;
            let (mut far, _) = server.accept().map_err(io)?;
            let t0 = Instant::now();
            channel
                .send(&Socket::TcpStream(client), "bench", b"")
                .await
                .map_err(|e| e.to_string())?;
            far.read_exact(&mut byte).map_err(io)?;
            let took = t0.elapsed();
            // The first tenth warms up, unmeasured.
            if round >= rounds / 10 {
                handover.push(took);
            }
            drop(far);

            // The baseline: the other process connects afresh when told to
            // by one byte on a connection it already holds (handed over
            // before the clock starts: the start signal costs a wake-up,
            // as the handover's does).
            let token = TcpStream::connect(addr).map_err(io)?;
            let (mut token_far, _) = server.accept().map_err(io)?;
            let state = format!("connect {addr}");
            channel
                .send(&Socket::TcpStream(token), "bench", state.as_bytes())
                .await
                .map_err(|e| e.to_string())?;
            // Let it arrive and the receiver block on the start signal.
            std::thread::sleep(Duration::from_millis(2));
            token_far.set_nodelay(true).map_err(io)?;
            let t0 = Instant::now();
            token_far.write_all(b"g").map_err(io)?;
            let (mut far, _) = server.accept().map_err(io)?;
            far.read_exact(&mut byte).map_err(io)?;
            let took = t0.elapsed();
            if round >= rounds / 10 {
                fresh.push(took);
            }
        }
        Ok((figures(handover), figures(fresh)))
    })
}
