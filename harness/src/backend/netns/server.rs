//! The server of a `server-restart` or `server-failover` scenario as real
//! processes in the server's namespace (`netmend __stream-server`, see
//! `workload::server_process`):
//!
//! - restart: one process on the scenario's port, SIGKILLed at the fault
//!   and started again after its duration (the engine's successor opens the
//!   same store file);
//! - failover: two instances on the next two ports behind a TCP load
//!   balancer on the scenario's port (each new connection goes to the
//!   first instance that takes it), sharing a `redis-server` on the
//!   server's lab address; the first instance is SIGKILLed at the fault.
//!
//! What the processes report on stdout goes into the run's record: the
//! bytes of each stream are read from the application's own files.

use super::host::HostTask;
use super::lab::Lab;
use super::restart::netmend_binary;
use super::LabError;
use crate::plan::ServerEvents;
use crate::scenario::StoreKind;
use crate::workload::restart::monotonic_ns;
use crate::workload::server_process::STORE_KEY_ENV;
use crate::workload::Recorder;
use std::collections::HashMap;
use std::io::{BufRead, BufReader, Read, Seek, SeekFrom};
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::process::{Child, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::net::{TcpListener, TcpStream};

/// How long a server process may take to listen.
const READY_WAIT: Duration = Duration::from_secs(5);
/// The Redis port on the server's lab address.
const REDIS_PORT: u16 = 6379;

/// What every server process of a run is started with.
#[derive(Clone, Debug)]
pub struct ServerLaunch {
    /// The server's host name in the lab.
    pub host: String,
    /// Its lab address.
    pub addr: IpAddr,
    /// The scenario's port.
    pub port: u16,
    /// The engine's server, not the naive one.
    pub engine: bool,
    /// The engine's session store.
    pub store: Option<StoreKind>,
    /// The engine's keepalive interval, dead-path and handshake timeouts.
    pub timers: (Duration, Duration, Duration),
    /// The port each process also holds a herd's connections on.
    pub herd_port: Option<u16>,
}

/// One server process and the thread that reads its output.
struct Proc {
    child: Child,
    ready: Arc<AtomicBool>,
    reader: Option<std::thread::JoinHandle<()>>,
    /// Where its stderr goes.
    log: PathBuf,
}

impl Proc {
    /// SIGKILLs it (what the scenario does to it) and waits for it.
    fn kill(self) {
        drop(self);
    }
}

impl Drop for Proc {
    /// A process is never left running: not when the run ends, not when
    /// starting the others failed.
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if let Some(r) = self.reader.take() {
            let _ = r.join();
        }
    }
}

/// A child process killed when dropped (Redis).
struct KillOnDrop(Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Streams the server's application recorded, by name: their index in the
/// record and how much of each file is in it.
struct Streams {
    dir: PathBuf,
    rec: Recorder,
    seen: Mutex<HashMap<String, (usize, u64)>>,
}

impl Streams {
    /// The stream `name`'s file holds `len` bytes at `t`: record the new
    /// ones.
    fn grew(&self, name: &str, t: Duration, len: u64) {
        let mut seen = self.seen.lock().unwrap_or_else(|e| e.into_inner());
        let entry = seen
            .entry(name.to_string())
            .or_insert_with(|| (self.rec.open_stream(), 0));
        if len <= entry.1 {
            return;
        }
        let path = self.dir.join(format!("{name}.bin"));
        let mut bytes = vec![0u8; (len - entry.1) as usize];
        let read = std::fs::File::open(&path).and_then(|mut f| {
            f.seek(SeekFrom::Start(entry.1))?;
            f.read_exact(&mut bytes)
        });
        match read {
            Ok(()) => {
                self.rec.received(entry.0, t, &bytes);
                entry.1 = len;
            }
            Err(e) => tracing::warn!(stream = name, error = %e, "server stream file unreadable"),
        }
    }
}

/// The server processes of one run.
pub struct ServerProcesses {
    stop: Arc<AtomicBool>,
    supervisor: Option<std::thread::JoinHandle<Vec<Proc>>>,
    balancer: Option<HostTask>,
    redis: Option<KillOnDrop>,
    _dir: tempfile::TempDir,
}

impl ServerProcesses {
    /// Starts the server's processes (and, for a failover, the balancer
    /// and Redis), and a thread that kills and starts them on `events`
    /// (times from `start`).
    ///
    /// # Errors
    ///
    /// A process could not be started or did not become ready, or the
    /// clock or the OS random source could not be read.
    pub fn start(
        lab: &Lab,
        launch: &ServerLaunch,
        events: &ServerEvents,
        start: Instant,
        rec: &Recorder,
    ) -> Result<ServerProcesses, LabError> {
        let bin = netmend_binary().ok_or_else(|| {
            LabError::Broken(format!(
                "no netmend binary for the server process (set {})",
                super::restart::BIN_ENV
            ))
        })?;
        let dir = tempfile::tempdir().map_err(|e| LabError::io("a directory for the server", e))?;
        let epoch_ns = monotonic_ns()
            .map_err(LabError::Broken)?
            .saturating_sub(start.elapsed().as_nanos());
        // The fleet's store key: 32 random bytes, the same for every
        // process of the run, never in the store.
        let key: String = netmend::session::StateKey::generate()
            .map_err(|e| LabError::Broken(format!("OS random source: {e}")))?
            .to_bytes()
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        let failover = events.failover.is_some();
        if failover {
            // The balancer, the instances and Redis talk over the server's
            // own lab address, which the kernel delivers through the
            // loopback device: bring it up in this namespace (the lab keeps
            // it down elsewhere; nothing listens on 127/8 or ::1).
            lab.exec(&launch.host, &["ip", "link", "set", "lo", "up"], None)?;
        }
        let mut redis = None;
        let store = match (launch.engine, launch.store) {
            (true, Some(StoreKind::Embedded)) => {
                format!("embedded:{}", dir.path().join("sessions.redb").display())
            }
            (true, Some(StoreKind::Redis)) => {
                redis = Some(start_redis(lab, &launch.host, launch.addr)?);
                format!(
                    "redis:redis://{}/",
                    SocketAddr::new(launch.addr, REDIS_PORT)
                )
            }
            _ => "none".to_string(),
        };
        let streams = Arc::new(Streams {
            dir: dir.path().to_path_buf(),
            rec: rec.clone(),
            seen: Mutex::new(HashMap::new()),
        });
        let ports: Vec<u16> = if failover {
            vec![launch.port + 1, launch.port + 2]
        } else {
            vec![launch.port]
        };
        let (keepalive, dead_after, handshake) = launch.timers;
        let command = ProcessCommand {
            engine: launch.engine,
            herd: launch.herd_port.map(|p| SocketAddr::new(launch.addr, p)),
            store,
            dir: dir.path().to_path_buf(),
            epoch_ns,
            key,
            timers: [keepalive, dead_after, handshake],
        };
        let mut instances = Vec::new();
        for port in &ports {
            let cmd = lab.command(&launch.host, &bin.to_string_lossy())?;
            let p = command.spawn(cmd, SocketAddr::new(launch.addr, *port), &streams)?;
            wait_ready(&p)?;
            instances.push(Some(p));
        }
        let balancer = if failover {
            let backends: Vec<SocketAddr> = ports
                .iter()
                .map(|p| SocketAddr::new(launch.addr, *p))
                .collect();
            let listen = SocketAddr::new(launch.addr, launch.port);
            Some(HostTask::spawn(
                lab.namespace(&launch.host)?,
                "balancer",
                move || Ok(balance(listen, backends)),
            )?)
        } else {
            None
        };
        // One command per successor, made here: it enters the server's
        // namespace through the lab, which the supervisor thread does not
        // take along.
        let mut successors = Vec::new();
        for _ in &events.restarts {
            successors.push(lab.command(&launch.host, &bin.to_string_lossy())?);
        }
        let stop = Arc::new(AtomicBool::new(false));
        let supervisor = {
            let args = SuperviseArgs {
                instances,
                plan: events.clone(),
                successors,
                command,
                listen: SocketAddr::new(launch.addr, ports[0]),
                stop: Arc::clone(&stop),
                rec: rec.clone(),
                streams,
                start,
            };
            std::thread::spawn(move || supervise(args))
        };
        Ok(ServerProcesses {
            stop,
            supervisor: Some(supervisor),
            balancer,
            redis,
            _dir: dir,
        })
    }

    /// Ends every server process, the balancer and Redis.
    ///
    /// # Errors
    ///
    /// The balancer's thread failed.
    pub fn stop(mut self) -> Result<(), LabError> {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(s) = self.supervisor.take() {
            if let Ok(procs) = s.join() {
                for p in procs {
                    p.kill();
                }
            }
        }
        drop(self.redis.take());
        match self.balancer.take() {
            Some(b) => b.stop(),
            None => Ok(()),
        }
    }
}

impl Drop for ServerProcesses {
    /// Without `stop` (an error on the way): the supervisor ends and kills
    /// what it holds; Redis goes with this value.
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

/// How a server process is started.
struct ProcessCommand {
    engine: bool,
    store: String,
    dir: PathBuf,
    epoch_ns: u128,
    key: String,
    timers: [Duration; 3],
    herd: Option<SocketAddr>,
}

impl ProcessCommand {
    fn spawn(
        &self,
        mut cmd: std::process::Command,
        listen: SocketAddr,
        streams: &Arc<Streams>,
    ) -> Result<Proc, LabError> {
        let [keepalive, dead_after, handshake] = self.timers;
        // Its warnings, for the report when it does not come up.
        let log_path = self.dir.join(format!("server-{}.log", listen.port()));
        let log = std::fs::File::options()
            .create(true)
            .append(true)
            .open(&log_path)
            .map_err(|e| LabError::io("a server process's log", e))?;
        cmd.arg("__stream-server")
            .arg("--listen")
            .arg(listen.to_string())
            .arg("--store")
            .arg(&self.store)
            .arg("--dir")
            .arg(&self.dir)
            .arg("--epoch-ns")
            .arg(self.epoch_ns.to_string())
            .arg("--keepalive-ms")
            .arg(keepalive.as_millis().to_string())
            .arg("--dead-after-ms")
            .arg(dead_after.as_millis().to_string())
            .arg("--handshake-timeout-ms")
            .arg(handshake.as_millis().to_string())
            .env("RUST_LOG", "warn")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(log);
        cmd.env(STORE_KEY_ENV, &self.key);
        if self.engine {
            cmd.arg("--engine");
        }
        if let Some(herd) = self.herd {
            cmd.arg("--herd").arg(herd.to_string());
        }
        let mut child = cmd
            .spawn()
            .map_err(|e| LabError::io("start a server process", e))?;
        let ready = Arc::new(AtomicBool::new(false));
        let reader = child.stdout.take().map(|out| {
            let (streams, ready) = (Arc::clone(streams), Arc::clone(&ready));
            std::thread::spawn(move || read_lines(out, &streams, &ready))
        });
        Ok(Proc {
            child,
            ready,
            reader,
            log: log_path,
        })
    }
}

fn wait_ready(p: &Proc) -> Result<(), LabError> {
    let waited = Instant::now();
    while !p.ready.load(Ordering::Relaxed) {
        if waited.elapsed() > READY_WAIT {
            let said = std::fs::read_to_string(&p.log).unwrap_or_default();
            let last: Vec<&str> = said.lines().rev().take(5).collect();
            return Err(LabError::Broken(format!(
                "a server process did not start listening within 5 s; it said: {}",
                last.into_iter().rev().collect::<Vec<_>>().join(" / ")
            )));
        }
        std::thread::sleep(Duration::from_millis(2));
    }
    Ok(())
}

struct SuperviseArgs {
    instances: Vec<Option<Proc>>,
    plan: ServerEvents,
    successors: Vec<std::process::Command>,
    command: ProcessCommand,
    /// Where the first instance (the one that is killed) listens.
    listen: SocketAddr,
    stop: Arc<AtomicBool>,
    rec: Recorder,
    streams: Arc<Streams>,
    start: Instant,
}

/// Kills and starts the server's processes on the plan; returns those
/// still running when the run stops.
fn supervise(mut a: SuperviseArgs) -> Vec<Proc> {
    // (when, kill the first instance: true / start its successor: false)
    let mut steps: Vec<(Duration, bool)> = Vec::new();
    for (at, down) in &a.plan.restarts {
        steps.push((*at, true));
        steps.push((at.saturating_add(*down), false));
    }
    if let Some(at) = a.plan.failover {
        steps.push((at, true));
    }
    steps.sort();
    let mut successors = a.successors.into_iter();
    for (at, kill) in steps {
        while a.start.elapsed() < at {
            if a.stop.load(Ordering::Relaxed) {
                return a.instances.into_iter().flatten().collect();
            }
            std::thread::sleep(Duration::from_millis(2));
        }
        if kill {
            if let Some(p) = a.instances.first_mut().and_then(Option::take) {
                p.kill();
                a.rec
                    .event(a.start.elapsed(), "server process killed".into());
            }
        } else if let Some(cmd) = successors.next() {
            match a.command.spawn(cmd, a.listen, &a.streams) {
                Ok(p) => {
                    if wait_ready(&p).is_err() {
                        a.rec
                            .event(a.start.elapsed(), "server successor not ready".into());
                    }
                    a.rec
                        .event(a.start.elapsed(), "server process started again".into());
                    if let Some(slot) = a.instances.first_mut() {
                        *slot = Some(p);
                    }
                }
                Err(e) => a
                    .rec
                    .event(a.start.elapsed(), format!("server successor: {e}")),
            }
        }
    }
    while !a.stop.load(Ordering::Relaxed) {
        std::thread::sleep(Duration::from_millis(5));
    }
    a.instances.into_iter().flatten().collect()
}

/// Records what a server process reports, line by line.
fn read_lines(out: impl Read, streams: &Streams, ready: &AtomicBool) {
    let ms = |s: Option<&str>| Duration::from_millis(s.and_then(|v| v.parse().ok()).unwrap_or(0));
    for line in BufReader::new(out).lines() {
        let Ok(line) = line else { return };
        let mut words = line.split_whitespace();
        match words.next() {
            Some("ready") => ready.store(true, Ordering::Relaxed),
            Some("read") => {
                let t = ms(words.next());
                let (Some(name), Some(len)) = (words.next(), words.next()) else {
                    continue;
                };
                if let Ok(len) = len.parse() {
                    streams.grew(name, t, len);
                }
            }
            Some("restored") => {
                let t = ms(words.next());
                let _name = words.next();
                let at = words.next().unwrap_or("?");
                streams
                    .rec
                    .event(t, format!("session served from the store at offset {at}"));
            }
            Some("failed") => {
                let what = line["failed".len()..].trim().to_string();
                tracing::warn!(%what, "server process");
                streams.rec.event(Duration::ZERO, format!("server: {what}"));
            }
            _ => {}
        }
    }
}

/// Starts `redis-server` on `addr` in `host`'s namespace and waits until it
/// accepts connections.
fn start_redis(lab: &Lab, host: &str, addr: IpAddr) -> Result<KillOnDrop, LabError> {
    let mut cmd = lab.command(host, "redis-server")?;
    cmd.args([
        "--bind",
        &addr.to_string(),
        "--port",
        &REDIS_PORT.to_string(),
    ])
    .args(["--save", "", "--appendonly", "no", "--protected-mode", "no"])
    .stdin(Stdio::null())
    .stdout(Stdio::piped())
    .stderr(Stdio::null());
    // Killed on every way out of here but the last.
    let mut child = KillOnDrop(
        cmd.spawn()
            .map_err(|e| LabError::io("start redis-server", e))?,
    );
    let Some(out) = child.0.stdout.take() else {
        return Err(LabError::Broken("redis-server without stdout".into()));
    };
    let (tx, rx) = std::sync::mpsc::sync_channel(1);
    std::thread::spawn(move || {
        for line in BufReader::new(out).lines() {
            let Ok(line) = line else { return };
            if line.contains("Ready to accept connections") {
                let _ = tx.try_send(());
            }
        }
    });
    if rx.recv_timeout(READY_WAIT).is_err() {
        return Err(LabError::Broken(
            "redis-server did not accept connections within 5 s".into(),
        ));
    }
    Ok(child)
}

/// Whether `redis-server` can be run here.
pub fn redis_available() -> Result<(), String> {
    which::which("redis-server").map(|_| ()).map_err(|_| {
        "`redis-server` is not installed here (apt-get install redis-server); the failover scenario's shared session store runs on it".to_string()
    })
}

/// The load balancer: each new connection goes to the first backend that
/// takes it, and lives as long as both ends do.
async fn balance(listen: SocketAddr, backends: Vec<SocketAddr>) {
    let listener = match TcpListener::bind(listen).await {
        Ok(l) => l,
        Err(e) => {
            tracing::warn!(error = %e, "balancer: cannot listen");
            return;
        }
    };
    loop {
        let Ok((mut down, _)) = listener.accept().await else {
            tokio::time::sleep(Duration::from_millis(20)).await;
            continue;
        };
        let backends = backends.clone();
        tokio::spawn(async move {
            for b in backends {
                let connected =
                    tokio::time::timeout(Duration::from_millis(500), TcpStream::connect(b)).await;
                if let Ok(Ok(mut up)) = connected {
                    let _ = down.set_nodelay(true);
                    let _ = up.set_nodelay(true);
                    let _ = tokio::io::copy_bidirectional(&mut down, &mut up).await;
                    return;
                }
            }
        });
    }
}
