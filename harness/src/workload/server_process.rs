//! The server of a `server-restart` or `server-failover` scenario: a real
//! process (this binary, `netmend __stream-server`, started in the server's
//! namespace) that the harness kills mid-transfer.
//!
//! The application keeps its own durable state, as the store's contract
//! asks: every stream it receives is appended to a file in `--dir`, one
//! read at a time, before it reads again. The naive server names a
//! stream by its process and connection; the engine's by the session, so
//! a session served from the store by a successor (or another instance)
//! goes on in the same file: it skips what the file already holds
//! (`Restored::incoming` is at or before the file's end).
//!
//! It reports on stdout, timed from the run's start: `ready`, `read MS
//! STREAM LENGTH` (the stream's file now holds LENGTH bytes), `restored MS
//! STREAM INCOMING`, `failed WHAT`.

use super::restart::Out;
use netmend::session::{Accepted, Acceptor, Config, Limits, Session};
use netmend::store::{EmbeddedStore, RedisStore, StoreKey, StoreLimits};
use std::io::Write as _;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// The environment variable that carries the store key (hex) from the
/// harness to every server process of a run.
pub const STORE_KEY_ENV: &str = "NETMEND_STORE_KEY";

/// Where the engine's server keeps its sessions.
#[derive(Clone, Debug)]
pub enum StoreArg {
    /// In memory: they die with the process.
    None,
    /// A redb file.
    Embedded(PathBuf),
    /// A Redis server, by URL.
    Redis(String),
}

/// What one server process does.
#[derive(Clone, Debug)]
pub struct ServerArgs {
    /// The engine's server (`true`) or the naive one.
    pub engine: bool,
    /// Where to listen.
    pub listen: SocketAddr,
    /// The engine's session store.
    pub store: StoreArg,
    /// Where the application keeps its streams.
    pub dir: PathBuf,
    /// `CLOCK_MONOTONIC` at the run's start, ns.
    pub epoch_ns: u128,
    /// The engine's keepalive interval.
    pub keepalive: Duration,
    /// The engine's dead-path timeout.
    pub dead_after: Duration,
    /// The engine's handshake timeout.
    pub handshake_timeout: Duration,
    /// Where it also holds a herd's connections, if anywhere.
    pub herd: Option<SocketAddr>,
}

/// Runs one server process until it is killed.
///
/// # Errors
///
/// What went wrong, in words (also printed as `failed …`).
pub fn run_server(args: ServerArgs) -> Result<(), String> {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .map_err(|e| format!("runtime: {e}"))?;
    let out = Arc::new(Out {
        epoch_ns: args.epoch_ns,
    });
    let result = rt.block_on(serve(&args, &out));
    if let Err(e) = &result {
        out.line(format_args!("failed {e}"));
    }
    result
}

async fn serve(args: &ServerArgs, out: &Arc<Out>) -> Result<(), String> {
    let listener = TcpListener::bind(args.listen)
        .await
        .map_err(|e| format!("listen on {}: {e}", args.listen))?;
    let acceptor = if args.engine {
        Some(acceptor(args).await?)
    } else {
        None
    };
    if let Some(herd) = args.herd {
        let herd = TcpListener::bind(herd)
            .await
            .map_err(|e| format!("listen on {herd} for the herd: {e}"))?;
        tokio::spawn(async move {
            loop {
                match herd.accept().await {
                    Ok((stream, _)) => {
                        tokio::spawn(super::herd::serve(stream));
                    }
                    Err(e) => {
                        tracing::debug!(error = %e, "herd: accept failed");
                        tokio::time::sleep(Duration::from_millis(20)).await;
                    }
                }
            }
        });
    }
    out.line(format_args!("ready"));
    let connections = AtomicU32::new(0);
    loop {
        let (stream, _) = match listener.accept().await {
            Ok(s) => s,
            Err(e) => {
                // EMFILE and the like: go on serving.
                tracing::debug!(error = %e, "accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let _ = stream.set_nodelay(true);
        let (out, dir) = (Arc::clone(out), args.dir.clone());
        match &acceptor {
            None => {
                let n = connections.fetch_add(1, Ordering::Relaxed);
                let name = format!("p{}c{n}", std::process::id());
                tokio::spawn(async move {
                    if let Err(e) = naive(stream, &dir, &name, &out).await {
                        tracing::debug!(error = %e, "naive server: connection ended");
                    }
                });
            }
            Some(acceptor) => {
                let acceptor = acceptor.clone();
                tokio::spawn(async move {
                    if let Err(e) = engine(&acceptor, stream, &dir, &out).await {
                        out.line(format_args!("failed {e}"));
                    }
                });
            }
        }
    }
}

async fn acceptor(args: &ServerArgs) -> Result<Acceptor, String> {
    let mut config = Config::default();
    config.keepalive_interval = args.keepalive;
    config.dead_after = args.dead_after;
    config.handshake_timeout = args.handshake_timeout;
    let limits = Limits::default();
    let key = || -> Result<StoreKey, String> {
        let hex = std::env::var(STORE_KEY_ENV).map_err(|_| format!("{STORE_KEY_ENV} unset"))?;
        let bytes: Vec<u8> = (0..hex.len())
            .step_by(2)
            .filter_map(|i| hex.get(i..i + 2))
            .filter_map(|b| u8::from_str_radix(b, 16).ok())
            .collect();
        let bytes: [u8; 32] = bytes
            .try_into()
            .map_err(|_| format!("{STORE_KEY_ENV} is not 32 bytes of hex"))?;
        Ok(StoreKey::from_bytes(bytes))
    };
    let refused = |e: netmend::ConfigError| e.to_string();
    match &args.store {
        StoreArg::None => Acceptor::with_limits(config, limits).map_err(refused),
        StoreArg::Embedded(path) => {
            let store = EmbeddedStore::open(path, StoreLimits::default())
                .map_err(|e| format!("session store {}: {e}", path.display()))?;
            Acceptor::with_store(config, limits, store, key()?).map_err(refused)
        }
        StoreArg::Redis(url) => {
            let store = RedisStore::connect(url, StoreLimits::default())
                .await
                .map_err(|e| format!("session store {url}: {e}"))?;
            Acceptor::with_store(config, limits, store, key()?).map_err(refused)
        }
    }
}

/// The application's durable record of one stream.
struct StreamFile {
    name: String,
    file: std::fs::File,
    len: u64,
}

impl StreamFile {
    fn open(dir: &Path, name: &str) -> Result<StreamFile, String> {
        let path = dir.join(format!("{name}.bin"));
        let file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)
            .map_err(|e| format!("{}: {e}", path.display()))?;
        let len = file
            .metadata()
            .map_err(|e| format!("{}: {e}", path.display()))?
            .len();
        Ok(StreamFile {
            name: name.to_string(),
            file,
            len,
        })
    }

    /// Records what one read returned (before the next read: the store's
    /// contract) and reports it.
    fn append(&mut self, bytes: &[u8], out: &Out) -> Result<(), String> {
        self.file
            .write_all(bytes)
            .map_err(|e| format!("{}: {e}", self.name))?;
        self.len += bytes.len() as u64;
        out.line(format_args!("read {} {} {}", out.ms(), self.name, self.len));
        Ok(())
    }
}

async fn naive(mut stream: TcpStream, dir: &Path, name: &str, out: &Out) -> Result<(), String> {
    let mut file = StreamFile::open(dir, name)?;
    let mut buf = vec![0u8; 64 << 10];
    loop {
        let n = stream.read(&mut buf).await.map_err(|e| e.to_string())?;
        if n == 0 {
            break;
        }
        file.append(&buf[..n], out)?;
    }
    let _ = stream.shutdown().await;
    Ok(())
}

async fn engine(
    acceptor: &Acceptor,
    stream: TcpStream,
    dir: &Path,
    out: &Out,
) -> Result<(), String> {
    let hex = |s: &Session| -> String {
        s.id()
            .map(|id| id.0.iter().map(|b| format!("{b:02x}")).collect())
            .unwrap_or_default()
    };
    let (mut session, file, mut skip) = match acceptor.accept(stream).await {
        Ok(Accepted::New(session)) => {
            let file = StreamFile::open(dir, &hex(&session))?;
            (session, file, 0)
        }
        Ok(Accepted::Restored(session, restored)) => {
            let file = StreamFile::open(dir, &hex(&session))?;
            out.line(format_args!(
                "restored {} {} {}",
                out.ms(),
                file.name,
                restored.incoming
            ));
            // The store recorded what the application had committed: at or
            // before what its file holds.
            let skip = file.len.checked_sub(restored.incoming).ok_or_else(|| {
                format!(
                    "the store says {} byte(s) were processed, the application's file holds {}",
                    restored.incoming, file.len
                )
            })?;
            (session, file, skip)
        }
        Ok(Accepted::Resumed(_)) => return Ok(()),
        Err(e) => {
            tracing::debug!(error = %e, "handshake refused");
            return Ok(());
        }
    };
    let mut file = file;
    let mut buf = vec![0u8; 64 << 10];
    loop {
        let n = match session.read(&mut buf).await {
            Ok(0) => break,
            Ok(n) => n,
            // The session's end (expired, fenced): nothing more to record.
            Err(e) => return Err(format!("session {}: {e}", file.name)),
        };
        let dup = (n as u64).min(skip) as usize;
        skip -= dup as u64;
        if dup < n {
            file.append(&buf[dup..n], out)?;
        }
    }
    let _ = session.shutdown().await;
    Ok(())
}
