//! `netmend bench signal`: signaling through three brokers with dedup
//! against a single broker, side by side on real mosquitto (loopback).

use netmend::signal::{LinkConfig, Mqtt, Signal, SignalConfig};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A mosquitto process on a loopback port.
struct Mosquitto {
    port: u16,
    child: Child,
    _dir: tempfile::TempDir,
}

impl Mosquitto {
    fn start() -> Result<Mosquitto, String> {
        let dir = tempfile::tempdir().map_err(|e| format!("temp dir: {e}"))?;
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .map(|a| a.port())
            .map_err(|e| format!("a free port: {e}"))?;
        let config = dir.path().join("mosquitto.conf");
        std::fs::write(
            &config,
            format!("listener {port} 127.0.0.1\nallow_anonymous true\npersistence false\nmax_queued_messages 100000\n"),
        )
        .map_err(|e| format!("mosquitto config: {e}"))?;
        let child = Command::new("mosquitto")
            .arg("-c")
            .arg(&config)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .map_err(|e| format!("mosquitto ({e}); apt-get install mosquitto"))?;
        let t = Instant::now();
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            if t.elapsed() > Duration::from_secs(5) {
                return Err("mosquitto did not start".into());
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        Ok(Mosquitto {
            port,
            child,
            _dir: dir,
        })
    }
}

impl Drop for Mosquitto {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// One configuration's figures.
#[derive(Clone, Debug)]
pub struct Figures {
    /// "1 broker" or "3 brokers + dedup".
    pub name: &'static str,
    /// Messages per second through a burst, median over rounds.
    pub throughput: f64,
    /// One-way latency at a steady rate, median over rounds of the p50.
    pub p50: Duration,
    /// Likewise of the p99.
    pub p99: Duration,
}

async fn endpoints(brokers: &[Mosquitto]) -> Result<(Signal, Signal), String> {
    let make = || {
        brokers
            .iter()
            .map(|m| Mqtt::new("127.0.0.1", m.port))
            .collect::<Vec<_>>()
    };
    let config = SignalConfig {
        max_recent: 64,
        ..SignalConfig::default()
    };
    let alice = Signal::start("alice", make(), config, LinkConfig::default());
    let bob = Signal::start("bob", make(), config, LinkConfig::default());
    let t = Instant::now();
    while alice.healthy().len() < brokers.len() || bob.healthy().len() < brokers.len() {
        if t.elapsed() > Duration::from_secs(10) {
            return Err("brokers were not confirmed".into());
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    Ok((alice, bob))
}

/// Sends `burst` messages back to back and times their arrival.
async fn throughput(alice: &Signal, bob: &mut Signal, burst: usize) -> Result<f64, String> {
    let t = Instant::now();
    for n in 0..burst as u64 {
        alice
            .send("bob", &n.to_be_bytes())
            .map_err(|e| e.to_string())?;
    }
    for _ in 0..burst {
        tokio::time::timeout(Duration::from_secs(30), bob.recv())
            .await
            .map_err(|_| "a burst message never arrived".to_string())?
            .ok_or("the endpoint stopped")?;
    }
    Ok(burst as f64 / t.elapsed().as_secs_f64())
}

/// Sends `count` messages at `rate` per second; returns sorted latencies.
async fn latencies(
    alice: &Signal,
    bob: &mut Signal,
    count: usize,
    rate: u32,
) -> Result<Vec<Duration>, String> {
    let origin = Instant::now();
    let gap = Duration::from_secs(1) / rate;
    let sender = async {
        for n in 0..count as u32 {
            tokio::time::sleep_until((origin + gap * n).into()).await;
            let at = origin.elapsed().as_nanos() as u64;
            alice
                .send("bob", &at.to_be_bytes())
                .map_err(|e| e.to_string())?;
        }
        Ok::<(), String>(())
    };
    let receiver = async {
        let mut v = Vec::with_capacity(count);
        while v.len() < count {
            let d = tokio::time::timeout(Duration::from_secs(30), bob.recv())
                .await
                .map_err(|_| "a message never arrived".to_string())?
                .ok_or("the endpoint stopped")?;
            let sent = u64::from_be_bytes(d.payload[..8].try_into().map_err(|_| "short payload")?);
            v.push(origin.elapsed().saturating_sub(Duration::from_nanos(sent)));
        }
        Ok::<Vec<Duration>, String>(v)
    };
    let (sent, got) = tokio::join!(sender, receiver);
    sent?;
    let mut v = got?;
    v.sort();
    Ok(v)
}

fn median<T: Copy + PartialOrd>(mut v: Vec<T>) -> T {
    v.sort_by(|a, b| a.partial_cmp(b).unwrap_or(std::cmp::Ordering::Equal));
    v[v.len() / 2]
}

/// Runs both configurations, interleaved, `rounds` times.
pub fn run(
    rounds: usize,
    burst: usize,
    count: usize,
    rate: u32,
) -> Result<(Figures, Figures), String> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .map_err(|e| format!("runtime: {e}"))?;
    runtime.block_on(async {
        let brokers: Vec<Mosquitto> = (0..3)
            .map(|_| Mosquitto::start())
            .collect::<Result<_, _>>()?;
        let mut acc: Vec<(Vec<f64>, Vec<Duration>, Vec<Duration>)> =
            vec![Default::default(), Default::default()];
        for _ in 0..rounds {
            for (slot, used) in [(0usize, 1usize), (1, 3)] {
                let (alice, mut bob) = endpoints(&brokers[..used]).await?;
                let tput = throughput(&alice, &mut bob, burst).await?;
                let lat = latencies(&alice, &mut bob, count, rate).await?;
                let at = |q: f64| lat[((lat.len() - 1) as f64 * q).round() as usize];
                acc[slot].0.push(tput);
                acc[slot].1.push(at(0.5));
                acc[slot].2.push(at(0.99));
            }
        }
        let figures = |name, (t, p50, p99): (Vec<f64>, Vec<Duration>, Vec<Duration>)| Figures {
            name,
            throughput: median(t),
            p50: median(p50),
            p99: median(p99),
        };
        let mut acc = acc.into_iter();
        let one = acc.next().ok_or("no figures")?;
        let three = acc.next().ok_or("no figures")?;
        Ok((
            figures("1 broker", one),
            figures("3 brokers + dedup", three),
        ))
    })
}
