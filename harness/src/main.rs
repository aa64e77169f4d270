//! `netmend`: run failure scenarios against the recovery engine.

use clap::{Parser, Subcommand, ValueEnum};
use netmend_harness::backend::{netns, BackendKind};
use netmend_harness::report::{
    render_json, render_junit, timeline_path, write_timeline, Collector, Human, Progress,
    ProgressMode,
};
use netmend_harness::runner::RunEvent;
use netmend_harness::scenario::template::{self, Template};
use netmend_harness::select::{Partition, Pattern, Selection};
use netmend_harness::{catalog, runner, scenario};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

/// Every scenario passed (or there was nothing to do).
const EXIT_OK: u8 = 0;
/// At least one scenario failed.
const EXIT_FAILED: u8 = 1;
/// Bad input or usage.
const EXIT_USAGE: u8 = 2;
/// Interrupted (128 + SIGINT, as shells report it).
const EXIT_INTERRUPTED: i32 = 130;

/// Where an interrupted run writes the report of the scenarios it
/// finished: the collected results so far and the documents asked for.
struct PartialReport {
    collector: Collector,
    /// `--output` when `--format` is json or junit.
    output: Option<(Format, PathBuf)>,
    junit: Option<PathBuf>,
    json: Option<PathBuf>,
}

static PARTIAL: std::sync::Mutex<Option<PartialReport>> = std::sync::Mutex::new(None);

impl PartialReport {
    /// Writes every document asked for, marked interrupted.
    fn write(mut self) {
        self.collector.interrupted = true;
        let json = render_json(&self.collector);
        let junit = render_junit(&self.collector).unwrap_or_default();
        let mut targets: Vec<(PathBuf, &String)> = Vec::new();
        if let Some((format, path)) = self.output {
            targets.push((
                path,
                if format == Format::Json {
                    &json
                } else {
                    &junit
                },
            ));
        }
        targets.extend(self.junit.map(|p| (p, &junit)));
        targets.extend(self.json.map(|p| (p, &json)));
        for (path, doc) in targets {
            if let Err(e) = std::fs::write(&path, doc) {
                // Not `eprintln!`: with stderr a closed pipe (`| tee`,
                // killed by the same Ctrl-C) it would panic this thread
                // before it exits.
                let _ = writeln!(
                    std::io::stderr(),
                    "netmend: writing the report of the finished scenarios to {}: {e}",
                    path.display()
                );
            }
        }
    }
}

/// On SIGINT or SIGTERM, remove every lab this process built, write the
/// report of the scenarios that finished, then exit: the runner may be
/// blocked in the middle of a scenario, so the handler thread cleans up by
/// name rather than waiting for it to unwind.
fn install_interrupt_cleanup() -> Result<(), String> {
    use signal_hook::consts::{SIGINT, SIGTERM};
    let mut signals = signal_hook::iterator::Signals::new([SIGINT, SIGTERM])
        .map_err(|e| format!("installing the Ctrl-C handler: {e}"))?;
    std::thread::Builder::new()
        .name("nm-signals".into())
        .spawn(move || {
            if let Some(signal) = signals.forever().next() {
                // Held to the exit: the run, whose scenario fails at once
                // when its lab goes, must not write its own report over
                // this one (it waits on this lock), and a run that was
                // already writing its report finishes first.
                let mut held = PARTIAL.lock().unwrap_or_else(|e| e.into_inner());
                let removed = netns::lab::remove_live_labs();
                let partial = held.take();
                let report = match partial {
                    Some(p) => {
                        let finished = p.collector.results.len();
                        p.write();
                        format!("report of the {finished} finished scenario(s) written")
                    }
                    // Before the run started, or after it wrote its own.
                    None => "no report left to write".to_string(),
                };
                let _ = writeln!(
                    std::io::stderr(),
                    "netmend: interrupted (signal {signal}); removed {} lab namespace(s); {report}",
                    removed.len()
                );
                std::process::exit(EXIT_INTERRUPTED);
            }
        })
        .map_err(|e| format!("starting the signal thread: {e}"))?;
    Ok(())
}

#[derive(Parser)]
#[command(
    name = "netmend",
    version,
    about = "Reproduce network failures and prove the recovery engine survives them"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run scenarios: each once with a naive client (must fail) and once with its engine policy (must hold).
    Run {
        /// Scenario files or directories.
        #[arg(default_value = "scenarios")]
        paths: Vec<PathBuf>,
        /// Where to run them.
        #[arg(long, value_enum, default_value_t = BackendArg::Auto)]
        backend: BackendArg,
        /// Seed of the run; the same seed gives the same results on sim.
        #[arg(long, default_value_t = 1)]
        seed: u64,
        /// Report format.
        #[arg(long, value_enum, default_value_t = Format::Human)]
        format: Format,
        /// Write the report here instead of standard output.
        #[arg(long)]
        output: Option<PathBuf>,
        /// Also write a JUnit report here (from the same run).
        #[arg(long, value_name = "FILE")]
        junit: Option<PathBuf>,
        /// Also write a JSON report here (from the same run).
        #[arg(long, value_name = "FILE")]
        json: Option<PathBuf>,
        /// Write one timeline per scenario run into this directory
        /// (ID.svg: faults, delivery over time, attempts, events, recovery).
        #[arg(long, value_name = "DIR")]
        timeline: Option<PathBuf>,
        #[command(flatten)]
        select: SelectArgs,
        /// Run each scenario N times in a row (repeat r seeded with seed + r - 1)
        /// and report the flaky ones.
        #[arg(long, value_name = "N", default_value_t = 1,
              value_parser = clap::value_parser!(u32).range(1..=1000))]
        repeat: u32,
        /// Stop at the first scenario that fails.
        #[arg(long)]
        fail_fast: bool,
        /// Scenario runs at once (each netns run has a lab of its own;
        /// CPU-heavy scenarios share the cores). Results are reported in
        /// scenario order; the progress line then shows no phases. On
        /// netns, timing-sensitive figures move with the load, and one lab
        /// in a 30-scenario run was once found unable to carry its closing
        /// path check (cause not found yet): the shipped CI runs netns
        /// scenarios one at a time.
        #[arg(long, value_name = "N", default_value_t = 1,
              value_parser = clap::value_parser!(u32).range(1..=64))]
        jobs: u32,
        /// Exit 1 when a scenario is unsupported on the backend (a CI job
        /// meant to run everything on netns must not pass having skipped).
        #[arg(long)]
        fail_on_unsupported: bool,
        /// No progress on stderr, no engine warnings (RUST_LOG still shows
        /// them), and only the scenarios that did not pass in the human
        /// report.
        #[arg(long, short)]
        quiet: bool,
    },
    /// Run stream scenarios with the naive client, the engine and the peer
    /// policies a user could pick instead, on the same fault schedule;
    /// print the matrix of scenario × policy.
    Compare {
        /// Scenario files or directories.
        #[arg(default_value = "scenarios")]
        paths: Vec<PathBuf>,
        /// Where to run them (the peers need netns).
        #[arg(long, value_enum, default_value_t = BackendArg::Auto)]
        backend: BackendArg,
        /// Seed of the run.
        #[arg(long, default_value_t = 1)]
        seed: u64,
        /// The peer policies, comma-separated (default: all).
        #[arg(long, value_enum, value_delimiter = ',')]
        peers: Vec<netmend_harness::plan::Peer>,
        /// Runs of each policy per scenario (seeds SEED, SEED+1, …): the
        /// matrix shows medians.
        #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..=100))]
        runs: u32,
        /// `human` prints the matrix, `json` every measurement.
        #[arg(long, value_enum, default_value_t = CompareFormat::Human)]
        format: CompareFormat,
        #[command(flatten)]
        select: SelectArgs,
    },
    /// List scenarios (those a `run` with the same selection would take).
    List {
        /// Scenario files or directories.
        #[arg(default_value = "scenarios")]
        paths: Vec<PathBuf>,
        #[command(flatten)]
        select: SelectArgs,
    },
    /// Validate scenario files without running them.
    Check {
        /// Scenario files or directories.
        #[arg(default_value = "scenarios")]
        paths: Vec<PathBuf>,
    },
    /// Random fault schedules over scenarios, run with their engine policy on sim; violations are shrunk and saved.
    Explore {
        /// Scenario files or directories.
        #[arg(default_value = "scenarios")]
        paths: Vec<PathBuf>,
        /// Schedules in total, spread evenly over the scenarios.
        #[arg(long, default_value_t = 1000)]
        schedules: u64,
        /// Seed: the same seed draws the same schedules with the same results.
        #[arg(long, default_value_t = 1)]
        seed: u64,
        /// Most faults in one schedule.
        #[arg(long, default_value_t = 4, value_parser = clap::value_parser!(u32).range(1..=16))]
        max_faults: u32,
        /// Write each shrunk violation here as a ready-to-run scenario file.
        #[arg(long, value_name = "DIR")]
        save: Option<PathBuf>,
        /// Write the summary and every violation as JSON here.
        #[arg(long, value_name = "FILE")]
        json: Option<PathBuf>,
        /// Worker threads (default: the machine's cores).
        #[arg(long)]
        threads: Option<usize>,
        /// Stop at the first violation (the lowest schedule index that fails).
        #[arg(long)]
        first: bool,
    },
    /// A client process of a process-restart scenario (not for users; the
    /// netns backend starts it in the client's namespace).
    #[command(name = "__stream-client", hide = true)]
    StreamClient {
        /// The engine's client, not the naive one.
        #[arg(long)]
        mitigated: bool,
        /// This process replaces another.
        #[arg(long)]
        successor: bool,
        /// The server, IP:port.
        #[arg(long)]
        server: std::net::SocketAddr,
        /// Bytes of the whole stream.
        #[arg(long)]
        total: u64,
        /// Bytes per write.
        #[arg(long)]
        chunk: usize,
        /// Pacing, bytes per second.
        #[arg(long)]
        rate: Option<u64>,
        /// CLOCK_MONOTONIC at the run's start, ns.
        #[arg(long)]
        epoch_ns: u128,
        /// The successor's rendezvous socket.
        #[arg(long)]
        rendezvous: PathBuf,
        /// The naive client's checkpoint file.
        #[arg(long)]
        checkpoint: PathBuf,
    },
    /// A server process of a server-restart or server-failover scenario
    /// (not for users; the netns backend starts it in the server's
    /// namespace).
    #[command(name = "__stream-server", hide = true)]
    StreamServer {
        /// The engine's server, not the naive one.
        #[arg(long)]
        engine: bool,
        /// Where to listen, IP:port.
        #[arg(long)]
        listen: std::net::SocketAddr,
        /// The engine's session store: `none`, `embedded:PATH`,
        /// `redis:URL`.
        #[arg(long, default_value = "none")]
        store: String,
        /// Where the application keeps its streams.
        #[arg(long)]
        dir: PathBuf,
        /// CLOCK_MONOTONIC at the run's start, ns.
        #[arg(long)]
        epoch_ns: u128,
        /// The engine's keepalive interval, ms.
        #[arg(long)]
        keepalive_ms: u64,
        /// The engine's dead-path timeout, ms.
        #[arg(long)]
        dead_after_ms: u64,
        /// The engine's handshake timeout, ms.
        #[arg(long)]
        handshake_timeout_ms: u64,
        /// Where to hold a herd's connections too, IP:port.
        #[arg(long)]
        herd: Option<std::net::SocketAddr>,
    },
    /// The receiving process of `bench handover` (not for users).
    #[command(name = "__handover-receiver", hide = true)]
    HandoverReceiver {
        /// Rendezvous path.
        path: PathBuf,
    },
    /// Measure netmend against its peers (needs root for netns benches).
    Bench {
        #[command(subcommand)]
        what: BenchCommand,
    },
    /// Write a new commented scenario and its catalog entry, ready to edit.
    New {
        /// Its id (letters, digits, `-`, `_`): the file names too.
        id: String,
        /// The workload to start from.
        #[arg(long, value_enum, default_value_t = Template::Stream)]
        from: Template,
        /// Where the scenario file goes.
        #[arg(long, value_name = "DIR", default_value = "scenarios")]
        scenarios: PathBuf,
        /// Where the catalog entry goes.
        #[arg(long, value_name = "DIR", default_value = "catalog")]
        catalog: PathBuf,
    },
    /// List the kinds of fault a scenario can schedule: fields, what each does, where it runs.
    Faults,
    /// Print the JSON Schema of scenario files (also in scenarios/scenario.schema.json).
    Schema,
    /// Remove namespaces left by netmend runs that were killed (`nm-*` under /run/netns whose run is gone).
    Clean,
    /// Print the failure catalog as Markdown.
    Catalog {
        /// Directory of catalog entries.
        #[arg(long, default_value = "catalog")]
        dir: PathBuf,
    },
}

/// Which scenarios a command takes.
#[derive(clap::Args)]
struct SelectArgs {
    /// Only scenarios whose id matches (an id or a glob: `broker-*`); repeatable.
    #[arg(long, value_name = "ID|GLOB")]
    only: Vec<Pattern>,
    /// Leave out scenarios whose id matches; repeatable.
    #[arg(long, value_name = "ID|GLOB")]
    skip: Vec<Pattern>,
    /// Only scenarios with this tag (`tags = [...]` in the file); repeatable.
    #[arg(long, value_name = "TAG")]
    tag: Vec<String>,
    /// Only shard k of n, by a hash of each id (for a CI matrix: every
    /// scenario falls into exactly one shard).
    #[arg(long, value_name = "k/n")]
    partition: Option<Partition>,
}

impl SelectArgs {
    /// The loaded scenarios this selection takes.
    fn apply(self, loaded: Vec<scenario::Loaded>) -> Result<Vec<scenario::Loaded>, String> {
        let selection = Selection {
            only: self.only,
            skip: self.skip,
            tags: self.tag,
            partition: self.partition,
        };
        if selection.names_something() && !loaded.iter().any(|l| selection.chosen(&l.scenario)) {
            return Err("no scenario matches --only/--tag (see `netmend list`)".into());
        }
        Ok(loaded
            .into_iter()
            .filter(|l| selection.keeps(&l.scenario))
            .collect())
    }
}

#[derive(Subcommand)]
enum BenchCommand {
    /// Setup + teardown of a 4-namespace lab (router, client, server, one
    /// more host): netmend's netlink code against the same lab built with `ip`.
    NetnsSetup {
        /// Measured rounds of each.
        #[arg(long, default_value_t = 30)]
        iterations: usize,
    },
    /// Detection latency, kernel change → report, in a lab namespace:
    /// netmend's monitor against `ip monitor` and a 1 s polling monitor.
    Monitor {
        /// Address changes to make.
        #[arg(long, default_value_t = 200)]
        changes: usize,
        /// Pause between changes, in ms.
        #[arg(long, default_value_t = 10)]
        spacing_ms: u64,
    },
    /// A live TCP connection handed to another process (send → its first
    /// byte at the far end) against that process opening a fresh one.
    Handover {
        /// Measured rounds of each (a tenth more warm up first).
        #[arg(long, default_value_t = 1000)]
        rounds: usize,
    },
    /// Signaling through 3 brokers with dedup against 1 broker, on real
    /// mosquitto (loopback): burst throughput and one-way latency.
    Signal {
        /// Rounds of each configuration.
        #[arg(long, default_value_t = 5)]
        rounds: usize,
        /// Messages per throughput burst.
        #[arg(long, default_value_t = 5000)]
        burst: usize,
        /// Messages per latency run.
        #[arg(long, default_value_t = 1000)]
        count: usize,
        /// Messages per second in the latency run.
        #[arg(long, default_value_t = 500)]
        rate: u32,
    },
    /// Bulk throughput of raw TCP, a netmend session (both write paths),
    /// MPTCP and QUIC (quinn), over loopback and over the netns lab, in one
    /// run.
    Throughput {
        /// MiB per round and transport.
        #[arg(long, default_value_t = 64, value_parser = clap::value_parser!(u32).range(1..=4096))]
        mib: u32,
        /// Rounds (each transport and path once per round; medians).
        #[arg(long, default_value_t = 5, value_parser = clap::value_parser!(u32).range(1..=1000))]
        rounds: u32,
    },
    /// Recovery after routability returns (delayed-routability on netns):
    /// the session behind the routability gate against the same session
    /// with a plain exponential-backoff reconnect loop.
    Recovery {
        /// Runs of each.
        #[arg(long, default_value_t = 10)]
        runs: usize,
        /// The scenario to measure.
        #[arg(long, default_value = "scenarios/delayed-routability.toml")]
        scenario: PathBuf,
        /// Override how long the new path stays dead (e.g. "10s").
        #[arg(long)]
        routable_after: Option<String>,
    },
}

#[derive(Clone, Copy, ValueEnum)]
enum BackendArg {
    Sim,
    Netns,
    Auto,
}

#[derive(Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Format {
    Human,
    Json,
    Junit,
}

#[derive(Clone, Copy, ValueEnum)]
enum CompareFormat {
    Human,
    Json,
}

/// The backend `backend` asks for, and why it was picked.
fn pick_backend(backend: BackendArg) -> Result<(BackendKind, String), String> {
    Ok(match backend {
        BackendArg::Sim => (BackendKind::Sim, "requested".to_string()),
        BackendArg::Netns => {
            netns::probe().map_err(|why| format!("--backend netns: {why}"))?;
            (BackendKind::Netns, "requested".to_string())
        }
        BackendArg::Auto => match netns::probe() {
            Ok(()) => (
                BackendKind::Netns,
                "auto: network namespaces work here, using netns".to_string(),
            ),
            Err(why) => (BackendKind::Sim, format!("auto: {why}; using sim")),
        },
    })
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    // `explore` runs thousands of simulations: the engine's warnings about
    // the faults it draws (forgeries dropped, brokers lost) would bury its
    // progress and verdicts. RUST_LOG still shows them.
    // A quiet run likewise: its report says what went wrong.
    let quiet = if matches!(
        cli.command,
        Command::Explore { .. } | Command::Run { quiet: true, .. }
    ) {
        "error"
    } else {
        "warn"
    };
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                // quinn's socket layer warns at every datagram a fault
                // makes unsendable (no route): the QUIC peers' runs would
                // drown in them, and the run's figures say what they cost.
                .unwrap_or_else(|_| {
                    tracing_subscriber::EnvFilter::new(format!("{quiet},quinn_udp=error"))
                }),
        )
        .with_writer(std::io::stderr)
        .init();
    match execute(cli.command) {
        Ok(code) => ExitCode::from(code),
        Err(msg) => {
            eprintln!("netmend: {msg}");
            ExitCode::from(EXIT_USAGE)
        }
    }
}

/// Runs a command; `Err` is a usage or input error (exit 2).
fn execute(command: Command) -> Result<u8, String> {
    match command {
        Command::Explore {
            paths,
            schedules,
            seed,
            max_faults,
            save,
            json,
            threads,
            first,
        } => explore(
            &paths,
            netmend_harness::explore::Options {
                schedules,
                seed,
                max_faults,
                save,
                threads: threads
                    .or_else(|| std::thread::available_parallelism().ok().map(usize::from))
                    .unwrap_or(1),
                first,
            },
            json,
        ),
        Command::Run {
            paths,
            backend,
            seed,
            format,
            output,
            junit,
            json,
            timeline,
            select,
            repeat,
            fail_fast,
            jobs,
            fail_on_unsupported,
            quiet,
        } => {
            let loaded = scenario::load_all(&paths).map_err(|e| e.to_string())?;
            let loaded = select.apply(loaded)?;
            let opts = runner::Options {
                seed,
                repeat,
                fail_fast,
                jobs: jobs as usize,
            };
            let reports = Reports {
                format,
                output,
                junit,
                json,
                timeline,
                quiet,
            };
            let summary = run_scenarios(&loaded, backend, opts, reports)?;
            if fail_on_unsupported && summary.unsupported > 0 {
                eprintln!(
                    "netmend: {} scenario(s) unsupported on this backend, and --fail-on-unsupported",
                    summary.unsupported
                );
                return Ok(EXIT_FAILED);
            }
            Ok(if summary.failed + summary.errors > 0 {
                EXIT_FAILED
            } else {
                EXIT_OK
            })
        }
        Command::Compare {
            paths,
            backend,
            seed,
            peers,
            runs,
            format,
            select,
        } => {
            let loaded = scenario::load_all(&paths).map_err(|e| e.to_string())?;
            let loaded = select.apply(loaded)?;
            let (kind, reason) = pick_backend(backend)?;
            if kind == BackendKind::Netns {
                install_interrupt_cleanup()?;
            }
            let peers = if peers.is_empty() {
                netmend_harness::plan::Peer::ALL.to_vec()
            } else {
                peers
            };
            eprintln!(
                "netmend compare: {} scenario(s), backend {kind} ({reason}), seed {seed}",
                loaded.len()
            );
            let rows: Vec<_> = loaded
                .iter()
                .map(|l| {
                    let s = &l.scenario;
                    let row = netmend_harness::compare::compare(
                        s,
                        kind,
                        runner::scenario_seed(seed, &s.id),
                        &peers,
                        runs,
                    );
                    eprintln!("{}: done", s.id);
                    row
                })
                .collect();
            match format {
                CompareFormat::Human => print!("{}", netmend_harness::compare::human(&rows)),
                CompareFormat::Json => println!(
                    "{}",
                    serde_json::to_string_pretty(&rows).map_err(|e| e.to_string())?
                ),
            }
            Ok(EXIT_OK)
        }
        Command::List { paths, select } => {
            let loaded = scenario::load_all(&paths).map_err(|e| e.to_string())?;
            for l in select.apply(loaded)? {
                let faults: Vec<&str> = l.scenario.faults.iter().map(|f| f.kind()).collect();
                println!(
                    "{:<22} {:<20} [{}] {}",
                    l.scenario.id,
                    l.scenario.catalog,
                    faults.join(", "),
                    l.scenario.description
                );
            }
            Ok(EXIT_OK)
        }
        Command::Check { paths } => {
            let loaded = scenario::load_all(&paths).map_err(|e| e.to_string())?;
            println!("{} scenario(s) valid", loaded.len());
            Ok(EXIT_OK)
        }
        Command::Bench { what } => bench(what),
        Command::StreamClient {
            mitigated,
            successor,
            server,
            total,
            chunk,
            rate,
            epoch_ns,
            rendezvous,
            checkpoint,
        } => {
            netmend_harness::workload::restart::run_client(
                netmend_harness::workload::restart::ClientArgs {
                    mitigated,
                    successor,
                    server,
                    total,
                    chunk,
                    rate,
                    epoch_ns,
                    rendezvous,
                    checkpoint,
                },
            )?;
            Ok(EXIT_OK)
        }
        Command::StreamServer {
            engine,
            listen,
            store,
            dir,
            epoch_ns,
            keepalive_ms,
            dead_after_ms,
            handshake_timeout_ms,
            herd,
        } => {
            use netmend_harness::workload::server_process::{run_server, ServerArgs, StoreArg};
            let store = match store.split_once(':') {
                _ if store == "none" => StoreArg::None,
                Some(("embedded", path)) => StoreArg::Embedded(PathBuf::from(path)),
                Some(("redis", url)) => StoreArg::Redis(url.to_string()),
                _ => return Err(format!("--store {store}: none, embedded:PATH or redis:URL")),
            };
            run_server(ServerArgs {
                engine,
                listen,
                store,
                dir,
                epoch_ns,
                keepalive: std::time::Duration::from_millis(keepalive_ms),
                dead_after: std::time::Duration::from_millis(dead_after_ms),
                handshake_timeout: std::time::Duration::from_millis(handshake_timeout_ms),
                herd,
            })?;
            Ok(EXIT_OK)
        }
        Command::HandoverReceiver { path } => {
            netmend_harness::bench::handover::receiver(&path)?;
            Ok(EXIT_OK)
        }
        Command::New {
            id,
            from,
            scenarios,
            catalog,
        } => new_scenario(&id, from, &scenarios, &catalog),
        Command::Schema => {
            print!("{}", scenario::schema());
            Ok(EXIT_OK)
        }
        Command::Faults => {
            print!("{}", faults_table());
            Ok(EXIT_OK)
        }
        Command::Clean => {
            let cleaned = netns::namespace::remove_orphans();
            for name in &cleaned.removed {
                println!("removed {name}");
            }
            for (name, pid) in &cleaned.in_use {
                println!("kept {name}: its run (pid {pid}) is still going");
            }
            println!("{} namespace(s) removed", cleaned.removed.len());
            Ok(EXIT_OK)
        }
        Command::Catalog { dir } => {
            let entries = catalog::load(&dir).map_err(|e| e.to_string())?;
            print!("{}", catalog::render(&entries));
            Ok(EXIT_OK)
        }
    }
}

/// `netmend explore`: progress on stderr, a summary on stdout, exit 1 on a
/// violation.
fn explore(
    paths: &[PathBuf],
    opts: netmend_harness::explore::Options,
    json: Option<PathBuf>,
) -> Result<u8, String> {
    use netmend_harness::explore::{self, Base, Progress};
    let loaded = scenario::load_all(paths).map_err(|e| e.to_string())?;
    let (mut bases, mut skipped) = (Vec::new(), Vec::new());
    for l in &loaded {
        match Base::load(&l.path).map_err(|e| e.to_string())? {
            Ok(base) => bases.push(base),
            Err(why) => skipped.push((l.scenario.id.clone(), why)),
        }
    }
    if bases.is_empty() {
        return Err("no scenario here can be explored on sim".into());
    }
    for (id, why) in &skipped {
        eprintln!("explore: skipping {id}: {why}");
    }
    let started = std::time::Instant::now();
    let last = std::sync::Mutex::new(std::time::Instant::now());
    let show = |p: Progress| {
        let mut last = last.lock().unwrap_or_else(|e| e.into_inner());
        if p.done == p.total || last.elapsed() >= std::time::Duration::from_secs(2) {
            *last = std::time::Instant::now();
            let rate = p.done as f64 / started.elapsed().as_secs_f64().max(1e-9);
            eprintln!(
                "explore: {}/{} schedules, {rate:.0}/s, {} violation(s)",
                p.done, p.total, p.violations
            );
        }
    };
    let summary = explore::explore(&bases, skipped, &opts, &show).map_err(|e| e.to_string())?;
    for v in &summary.violations {
        println!(
            "VIOLATION {} schedule {} (seed {}): {}",
            v.scenario, v.schedule, v.run_seed, v.why
        );
        println!("  drawn:  {}", describe(&v.faults));
        println!("  shrunk: {} ({} runs)", describe(&v.shrunk), v.shrink_runs);
        if let Some(path) = &v.saved {
            println!(
                "  saved:  {} — netmend run {} --backend sim --seed {}",
                path.display(),
                path.display(),
                v.run_seed
            );
        }
    }
    println!(
        "explored {} schedule(s) over {} scenario(s) in {:.1}s ({:.0} schedules/s), seed {}: {} violation(s)",
        summary.schedules,
        summary.scenarios.len(),
        summary.seconds,
        summary.per_second,
        summary.seed,
        summary.violations.len()
    );
    if let Some(path) = json {
        let doc = serde_json::to_string_pretty(&summary).map_err(|e| e.to_string())?;
        create_parent(&path)?;
        std::fs::write(&path, doc).map_err(|e| format!("{}: {e}", path.display()))?;
    }
    Ok(if summary.violations.is_empty() {
        EXIT_OK
    } else {
        EXIT_FAILED
    })
}

/// A schedule in one line: `reset@1200ms, blackhole@800ms+400ms`.
fn describe(faults: &[netmend_harness::fault::Fault]) -> String {
    faults
        .iter()
        .map(|f| {
            let (kind, at) = (f.kind(), f.at().0.as_millis());
            match f.duration().map(|d| d.0.as_millis()) {
                None | Some(0) => format!("{kind}@{at}ms"),
                Some(len) => format!("{kind}@{at}ms+{len}ms"),
            }
        })
        .collect::<Vec<_>>()
        .join(", ")
}

/// What `run` reports, where, and how much.
struct Reports {
    format: Format,
    output: Option<PathBuf>,
    junit: Option<PathBuf>,
    json: Option<PathBuf>,
    timeline: Option<PathBuf>,
    quiet: bool,
}

/// `netmend run`: the selected scenarios, baseline and mitigated, on one
/// backend; the reports asked for written, the counts returned.
fn run_scenarios(
    loaded: &[scenario::Loaded],
    backend: BackendArg,
    opts: runner::Options,
    reports: Reports,
) -> Result<runner::Summary, String> {
    let Reports {
        format,
        output,
        junit,
        json,
        timeline,
        quiet,
    } = reports;
    let (kind, reason) = pick_backend(backend)?;
    if kind == BackendKind::Netns {
        install_interrupt_cleanup()?;
    }
    // Report files go where they are asked to, directories made first (a
    // fresh checkout has no target/netmend/): a bad path fails before the
    // run, not after it.
    for path in [&output, &junit, &json].into_iter().flatten() {
        create_parent(path)?;
    }
    if let Some(dir) = &timeline {
        std::fs::create_dir_all(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    }
    // The first timeline that could not be written; the run goes on.
    let mut timeline_error: Option<String> = None;
    let mut sink: Box<dyn Write> = match &output {
        Some(p) => Box::new(std::fs::File::create(p).map_err(|e| format!("{}: {e}", p.display()))?),
        None => Box::new(std::io::stdout()),
    };
    let mut collector = Collector::default();
    // Human output goes to the sink when it is the format, else
    // progress goes to stderr so the document stays clean.
    let mut human = if format == Format::Human {
        Human::new(Box::new(&mut sink) as Box<dyn Write>)
    } else {
        Human::new(Box::new(std::io::stderr()) as Box<dyn Write>)
    };
    human.quiet = quiet;
    let mut progress = Progress::new(ProgressMode::detect(quiet));
    let partial_output = output
        .clone()
        .filter(|_| format != Format::Human)
        .map(|p| (format, p));
    let summary = runner::run(loaded, kind, reason, opts, &mut |ev| {
        // Progress first: its live line is gone before a result is printed.
        progress.event(ev);
        collector.event(ev);
        // In the interrupt's report before its line is printed: a user who
        // presses Ctrl-C on seeing a result finds it in the report.
        if let RunEvent::ScenarioFinished { .. } | RunEvent::RunStarted { .. } = ev {
            *PARTIAL.lock().unwrap_or_else(|e| e.into_inner()) = Some(PartialReport {
                collector: collector.clone(),
                output: partial_output.clone(),
                junit: junit.clone(),
                json: json.clone(),
            });
        }
        human.event(ev);
        if let (Some(dir), RunEvent::ScenarioFinished { result, .. }) = (&timeline, ev) {
            if let Err(e) = write_timeline(dir, result) {
                timeline_error.get_or_insert_with(|| {
                    format!("{}: {e}", timeline_path(dir, result).display())
                });
            }
        }
    });
    // Finished: an interrupt from here on has nothing to add, and waits
    // until the report is written (the lock is held to the end of this
    // function).
    let mut finishing = PARTIAL.lock().unwrap_or_else(|e| e.into_inner());
    finishing.take();
    drop(human);
    let doc = match format {
        Format::Human => None,
        Format::Json => Some(render_json(&collector)),
        Format::Junit => Some(render_junit(&collector).map_err(|e| format!("JUnit report: {e}"))?),
    };
    if let Some(doc) = doc {
        sink.write_all(doc.as_bytes())
            .and_then(|()| sink.flush())
            .map_err(|e| format!("writing the report: {e}"))?;
    }
    if let Some(path) = junit {
        let doc = render_junit(&collector).map_err(|e| format!("JUnit report: {e}"))?;
        std::fs::write(&path, doc).map_err(|e| format!("{}: {e}", path.display()))?;
    }
    if let Some(path) = json {
        std::fs::write(&path, render_json(&collector))
            .map_err(|e| format!("{}: {e}", path.display()))?;
    }
    if let Some(e) = timeline_error {
        return Err(format!("writing a timeline: {e}"));
    }
    Ok(summary)
}

/// `netmend new`: the scaffold of `id` written, nothing overwritten.
fn new_scenario(id: &str, from: Template, scenarios: &Path, catalog: &Path) -> Result<u8, String> {
    if !template::valid_id(id) {
        return Err(format!(
            "`{id}` cannot be a scenario id: use letters, digits, `-` and `_`"
        ));
    }
    let (scenario_text, entry_text) = template::scaffold(id, from);
    let targets = [
        (scenarios.join(format!("{id}.toml")), scenario_text),
        (catalog.join(format!("{id}.toml")), entry_text),
    ];
    if let Some((path, _)) = targets.iter().find(|(p, _)| p.exists()) {
        return Err(format!("{} exists; not overwritten", path.display()));
    }
    for (path, text) in &targets {
        create_parent(path)?;
        std::fs::write(path, text).map_err(|e| format!("{}: {e}", path.display()))?;
        println!("wrote {}", path.display());
    }
    println!(
        "next: edit both, then `netmend check {}` and `netmend run {} --backend sim`",
        targets[0].0.display(),
        targets[0].0.display()
    );
    Ok(EXIT_OK)
}

/// `netmend faults`: every kind, its fields, what it does, and whether the
/// simulated network makes it (netns makes every one).
fn faults_table() -> String {
    use netmend_harness::backend::sim;
    use netmend_harness::fault::{Normal, KINDS};
    let normal = Normal {
        latency: std::time::Duration::from_millis(1),
    };
    let mut out = format!(
        "{:<16} {:<34} {:<5} {}\n",
        "kind", "fields", "sim", "what it does"
    );
    let mut gaps = Vec::new();
    for k in KINDS {
        let example = (k.example)();
        let gap = example
            .steps(&normal)
            .iter()
            .find_map(|step| sim::cannot(&step.apply));
        let fields = if k.fields.is_empty() {
            "-".to_string()
        } else {
            k.fields.join(", ")
        };
        let sim = if gap.is_some() { "no" } else { "yes" };
        out.push_str(&format!(
            "{:<16} {fields:<34} {sim:<5} {}\n",
            k.name, k.summary
        ));
        gaps.extend(gap.map(|why| format!("{}: {why}", k.name)));
    }
    out.push_str("\nEvery kind runs on netns. Not on sim:\n");
    for gap in gaps {
        out.push_str(&format!("  {gap}\n"));
    }
    out
}

/// Creates the directory `path` goes into.
fn create_parent(path: &Path) -> Result<(), String> {
    match path.parent().filter(|d| !d.as_os_str().is_empty()) {
        Some(dir) => std::fs::create_dir_all(dir).map_err(|e| format!("{}: {e}", dir.display())),
        None => Ok(()),
    }
}

/// `netmend bench …`.
fn bench(what: BenchCommand) -> Result<u8, String> {
    match what {
        BenchCommand::Throughput { mib, rounds } => {
            use netmend_harness::bench::throughput::{self, Path, Transport};
            netns::probe().map_err(|why| format!("bench throughput: {why}"))?;
            install_interrupt_cleanup()?;
            let total = (mib as usize) << 20;
            let figures = throughput::run(total, rounds as usize)
                .map_err(|e| format!("bench throughput: {e}"))?;
            println!("{mib} MiB per round (connect, transfer in 64 KiB writes, close), {rounds} rounds, every transport and path in turn; medians");
            for path in Path::ALL {
                let of = |t: Transport| figures.iter().find(|f| f.path == path && f.transport == t);
                let raw = of(Transport::Tcp).map_or(0.0, |f| f.mib_per_s);
                println!("{}:", path.name());
                for f in figures.iter().filter(|f| f.path == path) {
                    println!(
                        "  {:<22} {:>9.1} MiB/s {:>9.2} ms  {:.2} of raw TCP",
                        f.transport.name(),
                        f.mib_per_s,
                        f.median.as_secs_f64() * 1000.0,
                        f.mib_per_s / raw.max(1e-9)
                    );
                }
            }
            Ok(EXIT_OK)
        }
        BenchCommand::Handover { rounds } => {
            if rounds == 0 {
                return Err("--rounds must be at least 1".into());
            }
            let (handover, fresh) = netmend_harness::bench::handover::run(rounds)
                .map_err(|e| format!("bench handover: {e}"))?;
            let ms = |d: std::time::Duration| d.as_secs_f64() * 1000.0;
            println!("a live TCP connection to another process on loopback, {rounds} rounds each, interleaved");
            println!("{:<34} {:>10} {:>10} {:>10}", "", "median", "p99", "min");
            for (name, f) in [
                ("handover (send -> first byte)", &handover),
                ("fresh connect (go -> first byte)", &fresh),
            ] {
                println!(
                    "{name:<34} {:>8.3}ms {:>8.3}ms {:>8.3}ms",
                    ms(f.median),
                    ms(f.p99),
                    ms(f.min)
                );
            }
            println!(
                "fresh connect / handover (median): {:.2}x",
                ms(fresh.median) / ms(handover.median).max(1e-9)
            );
            Ok(EXIT_OK)
        }
        BenchCommand::NetnsSetup { iterations } => {
            if iterations == 0 {
                return Err("--iterations must be at least 1".into());
            }
            netns::probe().map_err(|why| format!("bench netns-setup: {why}"))?;
            install_interrupt_cleanup()?;
            let (netlink, shell) = netmend_harness::bench::netns::run(iterations)
                .map_err(|e| format!("bench netns-setup: {e}"))?;
            let ms = |d: std::time::Duration| d.as_secs_f64() * 1000.0;
            println!(
                "setup + teardown of a 4-namespace lab, {iterations} rounds each, interleaved"
            );
            println!("{:<22} {:>10} {:>10} {:>10}", "", "median", "p90", "min");
            for (name, f) in [("netmend (netlink)", &netlink), ("ip shell-outs", &shell)] {
                println!(
                    "{name:<22} {:>8.1}ms {:>8.1}ms {:>8.1}ms",
                    ms(f.median),
                    ms(f.p90),
                    ms(f.min)
                );
            }
            println!(
                "netlink is {:.1}x faster (median)",
                ms(shell.median) / ms(netlink.median).max(1e-9)
            );
            Ok(EXIT_OK)
        }
        BenchCommand::Monitor {
            changes,
            spacing_ms,
        } => {
            if changes == 0 {
                return Err("--changes must be at least 1".into());
            }
            netns::probe().map_err(|why| format!("bench monitor: {why}"))?;
            install_interrupt_cleanup()?;
            let figures = netmend_harness::bench::netns::monitor_latency(
                changes,
                std::time::Duration::from_millis(spacing_ms),
            )
            .map_err(|e| format!("bench monitor: {e}"))?;
            let ms = |d: std::time::Duration| d.as_secs_f64() * 1000.0;
            println!("detection latency, kernel change -> report, {changes} address additions, {spacing_ms} ms apart");
            println!(
                "{:<18} {:>6} {:>10} {:>10} {:>10}",
                "", "seen", "p50", "p99", "max"
            );
            for f in &figures {
                println!(
                    "{:<18} {:>6} {:>8.3}ms {:>8.3}ms {:>8.3}ms",
                    f.watcher,
                    f.seen,
                    ms(f.p50),
                    ms(f.p99),
                    ms(f.max)
                );
            }
            Ok(EXIT_OK)
        }
        BenchCommand::Recovery {
            runs,
            scenario,
            routable_after,
        } => {
            if runs == 0 {
                return Err("--runs must be at least 1".into());
            }
            let mut s = scenario::load_file(&scenario).map_err(|e| e.to_string())?;
            if let Some(text) = routable_after {
                let d = humantime::parse_duration(&text)
                    .map_err(|e| format!("--routable-after {text}: {e}"))?;
                netmend_harness::bench::netns::stretch_outage(&mut s, d);
            }
            netns::probe().map_err(|why| format!("bench recovery: {why}"))?;
            install_interrupt_cleanup()?;
            let (gated, naive) = netmend_harness::bench::netns::recovery(&s, runs)
                .map_err(|e| format!("bench recovery: {e}"))?;
            println!(
                "recovery after the path carries traffic again ({}), {runs} runs each, interleaved",
                s.id
            );
            println!(
                "{:<34} {:>12} {:>12} {:>12} {:>10} {:>10} {:>9}",
                "", "resumed p50", "resumed max", "recovery p50", "min", "max", "attempts"
            );
            for f in [&gated, &naive] {
                println!(
                    "{:<34} {:>10}ms {:>10}ms {:>10}ms {:>8}ms {:>8}ms {:>9}",
                    f.name,
                    f.resumed_p50_ms,
                    f.resumed_max_ms,
                    f.p50_ms,
                    f.min_ms,
                    f.max_ms,
                    f.attempts_p50
                );
            }
            println!("resumed: path working again -> first byte delivered; recovery: -> first byte written after that delivered (behind the outage's backlog)");
            Ok(EXIT_OK)
        }
        BenchCommand::Signal {
            rounds,
            burst,
            count,
            rate,
        } => {
            if rounds == 0 || burst == 0 || count == 0 || rate == 0 {
                return Err("--rounds, --burst, --count and --rate must be positive".into());
            }
            let (one, three) = netmend_harness::bench::signal::run(rounds, burst, count, rate)
                .map_err(|e| format!("bench signal: {e}"))?;
            let ms = |d: std::time::Duration| d.as_secs_f64() * 1000.0;
            println!(
                "signaling alice -> bob on mosquitto (loopback), {rounds} rounds each, interleaved"
            );
            println!(
                "{:<20} {:>14} {:>10} {:>10}",
                "", "burst msg/s", "p50", "p99"
            );
            for f in [&one, &three] {
                println!(
                    "{:<20} {:>14.0} {:>8.3}ms {:>8.3}ms",
                    f.name,
                    f.throughput,
                    ms(f.p50),
                    ms(f.p99)
                );
            }
            println!(
                "3 brokers: throughput {:.2} of 1 broker, p99 {:+.3} ms",
                three.throughput / one.throughput,
                ms(three.p99) - ms(one.p99)
            );
            Ok(EXIT_OK)
        }
    }
}
