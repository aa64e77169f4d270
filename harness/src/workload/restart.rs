//! The client of a `process-restart` scenario: a real process (this binary,
//! `netmend __stream-client`, started in the client's namespace) that a
//! successor process replaces mid-transfer.
//!
//! - The naive client writes through an application buffer (as most
//!   programs do) and records, in a checkpoint file, how far its
//!   application got; it is killed at the restart, and its successor
//!   connects afresh and goes on from the checkpoint — what the old
//!   process had buffered or in flight is gone, and the server's
//!   per-connection state with it.
//! - The engine's client writes through a resumable session; at the restart
//!   it detaches the session and hands it — its live TCP connection and its
//!   sealed state — to the successor (`netmend::handover`), which goes on
//!   on the same connection.
//!
//! A process tells the harness what it does in lines on stdout, timed from
//! the run's start (`CLOCK_MONOTONIC`, shared by every process):
//! `attempt MS`, `wrote MS OFFSET`, `ready` (a successor listens),
//! `handed MS OFFSET`, `done MS`, `failed WHAT`. The old process takes
//! "restart" on stdin (the engine's client) or SIGKILL (the naive one); a
//! naive successor, started ahead, runs on "go".

use super::pattern;
use netmend::handover::{Allow, Channel, Rendezvous, Socket};
use netmend::session::{SessionBuilder, StateKey};
use std::io::Write as _;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// The environment variable that carries the session-state key (hex) from
/// the harness to both processes.
pub const KEY_ENV: &str = "NETMEND_STATE_KEY";
/// The naive client's application buffer: what a `BufWriter` holds.
const APP_BUFFER: usize = 256 << 10;

/// What one client process does.
#[derive(Clone, Debug)]
pub struct ClientArgs {
    /// The engine's client (`true`) or the naive one.
    pub mitigated: bool,
    /// This process replaces another.
    pub successor: bool,
    /// The server.
    pub server: SocketAddr,
    /// Bytes of the whole stream.
    pub total: u64,
    /// Bytes per write.
    pub chunk: usize,
    /// Pacing, bytes per second.
    pub rate: Option<u64>,
    /// `CLOCK_MONOTONIC` at the run's start, ns.
    pub epoch_ns: u128,
    /// Where the successor listens for the session (engine).
    pub rendezvous: PathBuf,
    /// Where the naive client records its progress.
    pub checkpoint: PathBuf,
}

/// `CLOCK_MONOTONIC` now, ns.
///
/// # Errors
///
/// The clock could not be read.
pub fn monotonic_ns() -> Result<u128, String> {
    let t = nix::time::clock_gettime(nix::time::ClockId::CLOCK_MONOTONIC)
        .map_err(|e| format!("CLOCK_MONOTONIC: {e}"))?;
    Ok(t.tv_sec() as u128 * 1_000_000_000 + t.tv_nsec() as u128)
}

/// A process's report to the harness: lines on stdout, timed from the
/// run's start.
pub(crate) struct Out {
    pub(crate) epoch_ns: u128,
}

impl Out {
    /// Milliseconds since the run's start.
    pub(crate) fn ms(&self) -> u64 {
        monotonic_ns()
            .map(|now| (now.saturating_sub(self.epoch_ns) / 1_000_000) as u64)
            .unwrap_or(0)
    }

    /// Writes one line and flushes it.
    pub(crate) fn line(&self, what: std::fmt::Arguments<'_>) {
        let mut out = std::io::stdout().lock();
        let _ = writeln!(out, "{what}");
        let _ = out.flush();
    }
}

/// Runs one client process to its end.
///
/// # Errors
///
/// What went wrong, in words (also printed as `failed …`).
pub fn run_client(args: ClientArgs) -> Result<(), String> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| format!("runtime: {e}"))?;
    let out = Out {
        epoch_ns: args.epoch_ns,
    };
    let result = rt.block_on(async {
        match (args.mitigated, args.successor) {
            (false, false) => naive_first(&args, &out).await,
            (false, true) => naive_successor(&args, &out).await,
            (true, false) => engine_first(&args, &out).await,
            (true, true) => engine_successor(&args, &out).await,
        }
    });
    if let Err(e) = &result {
        out.line(format_args!("failed {e}"));
    }
    result
}

async fn pace(args: &ClientArgs, out: &Out, offset: u64) {
    if let Some(rate) = args.rate {
        let due = offset * 1000 / rate.max(1);
        let now = out.ms();
        if due > now {
            tokio::time::sleep(Duration::from_millis(due - now)).await;
        }
    }
}

async fn connect(args: &ClientArgs, out: &Out) -> Result<TcpStream, String> {
    loop {
        out.line(format_args!("attempt {}", out.ms()));
        match tokio::time::timeout(Duration::from_secs(3), TcpStream::connect(args.server)).await {
            Ok(Ok(s)) => {
                let _ = s.set_nodelay(true);
                return Ok(s);
            }
            _ => tokio::time::sleep(Duration::from_millis(100)).await,
        }
    }
}

/// The naive client: plain TCP through an application buffer; its progress
/// in the checkpoint file after every write the application made.
async fn naive_first(args: &ClientArgs, out: &Out) -> Result<(), String> {
    let stream = connect(args, out).await?;
    let mut writer = tokio::io::BufWriter::with_capacity(APP_BUFFER, stream);
    naive_write(args, out, &mut writer, 0).await
}

async fn naive_successor(args: &ClientArgs, out: &Out) -> Result<(), String> {
    // Started ahead, it runs when the supervisor says so ("go"), after the
    // old process is gone.
    out.line(format_args!("ready"));
    let mut lines = tokio::io::BufReader::new(tokio::io::stdin()).lines();
    while let Ok(Some(line)) = lines.next_line().await {
        if line.trim() == "go" {
            break;
        }
    }
    let from = std::fs::read(&args.checkpoint)
        .ok()
        .and_then(|b| b.try_into().ok())
        .map_or(0, u64::from_be_bytes);
    let stream = connect(args, out).await?;
    let mut writer = tokio::io::BufWriter::with_capacity(APP_BUFFER, stream);
    naive_write(args, out, &mut writer, from).await
}

async fn naive_write(
    args: &ClientArgs,
    out: &Out,
    writer: &mut tokio::io::BufWriter<TcpStream>,
    from: u64,
) -> Result<(), String> {
    let mut buf = vec![0u8; args.chunk];
    let mut offset = from;
    while offset < args.total {
        pace(args, out, offset).await;
        let n = (args.total - offset).min(args.chunk as u64) as usize;
        pattern::fill(offset, &mut buf[..n]);
        writer
            .write_all(&buf[..n])
            .await
            .map_err(|e| e.to_string())?;
        offset += n as u64;
        // The application's own record of how far it got.
        std::fs::write(&args.checkpoint, offset.to_be_bytes())
            .map_err(|e| format!("checkpoint: {e}"))?;
        out.line(format_args!("wrote {} {offset}", out.ms()));
    }
    writer.flush().await.map_err(|e| e.to_string())?;
    let stream = writer.get_mut();
    let _ = stream.shutdown().await;
    let mut sink = Vec::new();
    let _ = stream.read_to_end(&mut sink).await;
    out.line(format_args!("done {}", out.ms()));
    Ok(())
}

fn key() -> Result<StateKey, String> {
    let hex = std::env::var(KEY_ENV).map_err(|_| format!("{KEY_ENV} unset"))?;
    let mut key = [0u8; 32];
    for (i, b) in key.iter_mut().enumerate() {
        *b = hex
            .get(2 * i..2 * i + 2)
            .and_then(|h| u8::from_str_radix(h, 16).ok())
            .ok_or(format!("{KEY_ENV}: 64 hex digits"))?;
    }
    Ok(StateKey::from_bytes(key))
}

fn connector(args: &ClientArgs) -> impl netmend::session::Connector<Stream = TcpStream> {
    let (server, epoch_ns) = (args.server, args.epoch_ns);
    move || {
        let out = Out { epoch_ns };
        out.line(format_args!("attempt {}", out.ms()));
        async move {
            let s = TcpStream::connect(server).await?;
            s.set_nodelay(true)?;
            Ok(s)
        }
    }
}

/// The engine's client: writes through a session until told to restart,
/// then hands the session to its successor and exits.
async fn engine_first(args: &ClientArgs, out: &Out) -> Result<(), String> {
    let key = key()?;
    let mut session = SessionBuilder::new()
        .connect(connector(args))
        .await
        .map_err(|e| e.to_string())?;
    let mut restart = tokio::io::BufReader::new(tokio::io::stdin()).lines();
    let mut buf = vec![0u8; args.chunk];
    let mut offset = 0;
    let mut stdin_open = true;
    while offset < args.total {
        let n = (args.total - offset).min(args.chunk as u64) as usize;
        pattern::fill(offset, &mut buf[..n]);
        let told = tokio::select! {
            // A restart between two writes: a write is whole or not made
            // (`next_line` is cancel safe; the write is not started).
            biased;
            line = restart.next_line(), if stdin_open => match line {
                Ok(Some(l)) => l.trim() == "restart",
                _ => {
                    stdin_open = false;
                    false
                }
            },
            () = pace(args, out, offset) => false,
        };
        if told {
            return hand_over(args, out, session, &key, offset).await;
        }
        session
            .write_all(&buf[..n])
            .await
            .map_err(|e| e.to_string())?;
        offset += n as u64;
        out.line(format_args!("wrote {} {offset}", out.ms()));
    }
    session.shutdown().await.map_err(|e| e.to_string())?;
    out.line(format_args!("done {}", out.ms()));
    Ok(())
}

async fn hand_over(
    args: &ClientArgs,
    out: &Out,
    session: netmend::session::Session,
    key: &StateKey,
    offset: u64,
) -> Result<(), String> {
    let mut detached = session.detach(key).await.map_err(|e| e.to_string())?;
    let mut channel = Channel::connect(&args.rendezvous, Allow::same_user())
        .await
        .map_err(|e| e.to_string())?;
    let state = detached.state().to_vec();
    match detached.take_transport::<TcpStream>() {
        Some(t) => {
            let socket = t.into_std().map_err(|e| e.to_string())?;
            channel
                .send(&Socket::TcpStream(socket), "netmend-session", &state)
                .await
                .map_err(|e| e.to_string())?;
        }
        // Between transports: the state alone (the successor resumes). A
        // handover message carries a socket: an unconnected UDP one stands
        // in, and the successor, finding no TCP stream, resumes.
        None => {
            let placeholder = std::net::UdpSocket::bind("0.0.0.0:0").map_err(|e| e.to_string())?;
            channel
                .send(&Socket::Udp(placeholder), "netmend-session", &state)
                .await
                .map_err(|e| e.to_string())?;
        }
    }
    out.line(format_args!("handed {} {offset}", out.ms()));
    Ok(())
}

/// The engine's successor: takes the session over and finishes the stream.
async fn engine_successor(args: &ClientArgs, out: &Out) -> Result<(), String> {
    let key = key()?;
    let rendezvous =
        Rendezvous::bind(&args.rendezvous, Allow::same_user()).map_err(|e| e.to_string())?;
    out.line(format_args!("ready"));
    let mut channel = rendezvous.accept().await.map_err(|e| e.to_string())?;
    let received = channel.recv().await.map_err(|e| e.to_string())?;
    let transport = match received.socket {
        Socket::TcpStream(s) => {
            s.set_nonblocking(true).map_err(|e| e.to_string())?;
            Some(TcpStream::from_std(s).map_err(|e| e.to_string())?)
        }
        _ => None,
    };
    let mut session = SessionBuilder::new()
        .attach(&received.state, &key, transport, connector(args))
        .await
        .map_err(|e| e.to_string())?;
    let mut offset = session.delivery().written;
    let mut buf = vec![0u8; args.chunk];
    while offset < args.total {
        pace(args, out, offset).await;
        let n = (args.total - offset).min(args.chunk as u64) as usize;
        pattern::fill(offset, &mut buf[..n]);
        session
            .write_all(&buf[..n])
            .await
            .map_err(|e| e.to_string())?;
        offset += n as u64;
        out.line(format_args!("wrote {} {offset}", out.ms()));
    }
    session.shutdown().await.map_err(|e| e.to_string())?;
    let mut sink = Vec::new();
    let _ = session.read_to_end(&mut sink).await;
    out.line(format_args!("done {}", out.ms()));
    Ok(())
}
