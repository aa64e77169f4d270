//! The client of a `process-restart` scenario as real processes in the
//! client's namespace (`netmend __stream-client`, see
//! `workload::restart`). The first process and one successor per restart
//! are started with the run (a successor waits: the engine's listens for
//! the session, the naive one for "go"); at each restart the old process is
//! replaced — the naive one killed and its successor told to go, the
//! engine's told to hand its session over. What the processes report on
//! stdout goes into the run's record.

use super::lab::Lab;
use super::LabError;
use crate::workload::restart::{monotonic_ns, KEY_ENV};
use crate::workload::Recorder;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Child, ChildStdin, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// The environment variable that names the `netmend` binary when the
/// backend runs inside another program (the harness's own tests).
pub const BIN_ENV: &str = "NETMEND_BIN";

/// The `netmend` binary that runs client processes: `NETMEND_BIN`, this
/// process's own executable when it is `netmend`, or a `netmend` one
/// directory up from it (cargo's layout: tests in `target/*/deps/`, the
/// binary in `target/*/`).
pub fn netmend_binary() -> Option<PathBuf> {
    if let Some(bin) = std::env::var_os(BIN_ENV) {
        return Some(PathBuf::from(bin));
    }
    let exe = std::env::current_exe().ok()?;
    if exe.file_name()? == "netmend" {
        return Some(exe);
    }
    let beside = exe.parent()?.parent()?.join("netmend");
    beside.is_file().then_some(beside)
}

/// How long a successor may take to be ready.
const READY_WAIT: Duration = Duration::from_secs(5);

/// What every client process of a run is started with.
#[derive(Clone, Debug)]
pub struct Launch {
    /// The `netmend` binary.
    pub bin: PathBuf,
    /// The client's host name in the lab.
    pub host: String,
    /// The engine's client, not the naive one.
    pub mitigated: bool,
    /// The server's address.
    pub server: SocketAddr,
    /// Bytes of the stream.
    pub total: u64,
    /// Bytes per write.
    pub chunk: usize,
    /// Pacing, bytes per second.
    pub rate: Option<u64>,
}

/// One client process and the thread that reads its output.
struct Proc {
    child: Child,
    stdin: Option<ChildStdin>,
    ready: Arc<AtomicBool>,
    reader: Option<std::thread::JoinHandle<()>>,
}

impl Proc {
    fn tell(&mut self, line: &str) {
        if let Some(stdin) = self.stdin.as_mut() {
            let _ = stdin.write_all(line.as_bytes());
            let _ = stdin.flush();
        }
    }

    fn end(mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if let Some(r) = self.reader.take() {
            let _ = r.join();
        }
    }
}

/// The client processes of one run.
pub struct ClientProcesses {
    /// Ends the restarter early.
    stop: Arc<AtomicBool>,
    restarter: Option<std::thread::JoinHandle<Vec<Proc>>>,
    _dir: tempfile::TempDir,
}

impl ClientProcesses {
    /// Starts the first client process and a successor for each of
    /// `restarts` (times from `start`), and a thread that makes the
    /// restarts happen.
    ///
    /// # Errors
    ///
    /// A process could not be started, or the clock or the OS random
    /// source read.
    pub fn start(
        lab: &Lab,
        launch: &Launch,
        restarts: &[Duration],
        start: Instant,
        rec: &Recorder,
    ) -> Result<ClientProcesses, LabError> {
        let dir = tempfile::tempdir().map_err(|e| LabError::io("a directory for the client", e))?;
        let epoch_ns = monotonic_ns()
            .map_err(LabError::Broken)?
            .saturating_sub(start.elapsed().as_nanos());
        let key: String = netmend::session::StateKey::generate()
            .map_err(|e| LabError::Broken(format!("OS random source: {e}")))?
            .to_bytes()
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        let checkpoint = dir.path().join("checkpoint");
        // One restart per run (the plan refuses more): the successor
        // listens here, the first process hands over here.
        let rendezvous = dir.path().join("session.sock");
        let mut procs = Vec::new();
        for i in 0..=restarts.len().min(1) {
            let mut cmd = lab.command(&launch.host, &launch.bin.to_string_lossy())?;
            cmd.arg("__stream-client")
                .arg("--server")
                .arg(launch.server.to_string())
                .arg("--total")
                .arg(launch.total.to_string())
                .arg("--chunk")
                .arg(launch.chunk.to_string())
                .arg("--epoch-ns")
                .arg(epoch_ns.to_string())
                .arg("--rendezvous")
                .arg(&rendezvous)
                .arg("--checkpoint")
                .arg(&checkpoint)
                .env(KEY_ENV, &key)
                .env_remove("RUST_LOG")
                .stdin(Stdio::piped())
                .stdout(Stdio::piped())
                .stderr(Stdio::null());
            if let Some(rate) = launch.rate {
                cmd.arg("--rate").arg(rate.to_string());
            }
            if launch.mitigated {
                cmd.arg("--mitigated");
            }
            if i > 0 {
                cmd.arg("--successor");
            }
            let mut child = cmd
                .spawn()
                .map_err(|e| LabError::io("start a client process", e))?;
            let stdin = child.stdin.take();
            let ready = Arc::new(AtomicBool::new(false));
            let reader = child.stdout.take().map(|out| {
                let (rec, ready) = (rec.clone(), Arc::clone(&ready));
                std::thread::spawn(move || read_lines(out, &rec, &ready))
            });
            procs.push(Proc {
                child,
                stdin,
                ready,
                reader,
            });
        }
        let stop = Arc::new(AtomicBool::new(false));
        let (stop2, rec2, mitigated) = (Arc::clone(&stop), rec.clone(), launch.mitigated);
        let restarts = restarts.to_vec();
        let restarter = std::thread::spawn(move || {
            let mut procs = procs.into_iter();
            let mut ended = Vec::new();
            let Some(mut current) = procs.next() else {
                return ended;
            };
            for at in restarts {
                while start.elapsed() < at {
                    if stop2.load(Ordering::Relaxed) {
                        ended.push(current);
                        ended.extend(procs);
                        return ended;
                    }
                    std::thread::sleep(Duration::from_millis(2));
                }
                let Some(mut next) = procs.next() else { break };
                let waited = Instant::now();
                while !next.ready.load(Ordering::Relaxed) && waited.elapsed() < READY_WAIT {
                    std::thread::sleep(Duration::from_millis(2));
                }
                if mitigated {
                    rec2.event(start.elapsed(), "restart: session handed over".into());
                    current.tell("restart\n");
                } else {
                    // The supervisor kills it: what it had buffered is gone.
                    let _ = current.child.kill();
                    let _ = current.child.wait();
                    rec2.event(start.elapsed(), "restart: old process killed".into());
                    next.tell("go\n");
                }
                ended.push(current);
                current = next;
            }
            ended.push(current);
            ended.extend(procs);
            ended
        });
        Ok(ClientProcesses {
            stop,
            restarter: Some(restarter),
            _dir: dir,
        })
    }

    /// Ends every client process and the threads around them.
    pub fn stop(mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(r) = self.restarter.take() {
            if let Ok(procs) = r.join() {
                for p in procs {
                    p.end();
                }
            }
        }
    }
}

/// Records what a client process reports, line by line.
fn read_lines(out: impl Read, rec: &Recorder, ready: &AtomicBool) {
    let ms = |s: Option<&str>| Duration::from_millis(s.and_then(|v| v.parse().ok()).unwrap_or(0));
    for line in BufReader::new(out).lines() {
        let Ok(line) = line else { return };
        let mut words = line.split_whitespace();
        match words.next() {
            Some("ready") => ready.store(true, Ordering::Relaxed),
            Some("attempt") => rec.attempt(ms(words.next())),
            Some("wrote") => {
                let t = ms(words.next());
                if let Some(offset) = words.next().and_then(|v| v.parse().ok()) {
                    rec.wrote(t, offset);
                }
            }
            Some("handed") => {
                let t = ms(words.next());
                rec.event(
                    t,
                    format!("handed over at offset {}", words.next().unwrap_or("?")),
                );
            }
            Some("done") => rec.client_done(ms(words.next())),
            Some("failed") => rec.client_failed(line["failed".len()..].trim().to_string()),
            _ => {}
        }
    }
}
