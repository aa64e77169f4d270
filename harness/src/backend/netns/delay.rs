//! Latency, jitter and loss without netem: the router's forwarded packets go
//! to an NFQUEUE (iptables-nft `-j NFQUEUE`; nft's own `queue` statement is
//! off on this kernel) and a thread in the router namespace holds each one
//! for its delay before it accepts it, or drops it.
//!
//! [`DelayLine`] is the sans-IO part: arrival time in, release time (or a
//! drop) out, seeded. Packets leave in arrival order, as on a real link:
//! jitter stretches gaps, it never reorders (netem reorders with jitter by
//! default, which TCP then reads as loss).

use super::namespace::Namespace;
use super::LabError;
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};
use std::collections::VecDeque;
use std::sync::mpsc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// The queue number the router uses (queues are per namespace).
pub const QUEUE: u16 = 0;

/// What the path does to each packet.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Impairment {
    /// Added one-way delay.
    pub delay: Duration,
    /// Each packet's delay is drawn uniformly from `delay ± jitter`.
    pub jitter: Duration,
    /// Probability that a packet is dropped.
    pub loss: f64,
}

/// Sans-IO delay line.
#[derive(Debug)]
pub struct DelayLine {
    impairment: Impairment,
    rng: SmallRng,
    last_release: Option<Instant>,
}

impl DelayLine {
    /// A delay line with its own seeded randomness.
    pub fn new(impairment: Impairment, seed: u64) -> Self {
        DelayLine {
            impairment,
            rng: SmallRng::seed_from_u64(seed),
            last_release: None,
        }
    }

    /// Changes the impairment for packets arriving from now on.
    pub fn set(&mut self, impairment: Impairment) {
        self.impairment = impairment;
    }

    /// A packet arrived at `now`: when to release it, or `None` to drop it.
    pub fn admit(&mut self, now: Instant) -> Option<Instant> {
        let i = self.impairment;
        if i.loss > 0.0 && self.rng.random::<f64>() < i.loss {
            return None;
        }
        let delay = if i.jitter.is_zero() {
            i.delay
        } else {
            let low = i.delay.saturating_sub(i.jitter);
            let high = i.delay + i.jitter;
            low + (high - low).mul_f64(self.rng.random::<f64>())
        };
        let mut release = now + delay;
        if let Some(last) = self.last_release {
            release = release.max(last);
        }
        self.last_release = Some(release);
        Some(release)
    }
}

/// Commands to the queue thread.
enum Control {
    Set(Impairment),
    Stop,
}

/// The running queue consumer in the router namespace.
pub struct DelayQueue {
    control: mpsc::Sender<Control>,
    thread: Option<JoinHandle<Result<(), LabError>>>,
}

/// How long the consumer sleeps when it has nothing due. The `nfq` crate
/// does not expose its socket for `poll`, so the thread polls; 200 µs keeps
/// the added error far below the ±20% the injector promises for delays of
/// a millisecond and up.
const IDLE_TICK: Duration = Duration::from_micros(200);

impl DelayQueue {
    /// Binds the queue inside `ns` and starts releasing packets. The caller
    /// then diverts traffic to [`QUEUE`] with an iptables rule.
    pub fn start(
        ns: &Namespace,
        impairment: Impairment,
        seed: u64,
    ) -> Result<DelayQueue, LabError> {
        let entry = ns.try_clone()?;
        let (control, commands) = mpsc::channel();
        let (ready_tx, ready_rx) = mpsc::channel();
        let thread = std::thread::Builder::new()
            .name("nm-delay".into())
            .spawn(move || -> Result<(), LabError> {
                let opened = entry.enter_this_thread().and_then(|()| open_queue());
                let mut queue = match opened {
                    Ok(q) => {
                        let _ = ready_tx.send(Ok(()));
                        q
                    }
                    Err(e) => {
                        let _ = ready_tx.send(Err(e.to_string()));
                        return Err(e);
                    }
                };
                run(&mut queue, DelayLine::new(impairment, seed), commands)
            })
            .map_err(|e| LabError::io("spawn the delay thread", e))?;
        match ready_rx.recv() {
            Ok(Ok(())) => Ok(DelayQueue {
                control,
                thread: Some(thread),
            }),
            Ok(Err(msg)) => {
                let _ = thread.join();
                Err(LabError::Unavailable(format!("NFQUEUE: {msg}")))
            }
            Err(_) => Err(LabError::Panicked("the delay thread".into())),
        }
    }

    /// Changes the impairment from now on.
    pub fn set(&self, impairment: Impairment) {
        let _ = self.control.send(Control::Set(impairment));
    }

    /// Stops the consumer, releasing every held packet first.
    pub fn stop(mut self) -> Result<(), LabError> {
        self.shutdown()
    }

    fn shutdown(&mut self) -> Result<(), LabError> {
        let _ = self.control.send(Control::Stop);
        match self.thread.take() {
            Some(t) => t
                .join()
                .unwrap_or_else(|_| Err(LabError::Panicked("the delay thread".into()))),
            None => Ok(()),
        }
    }
}

impl Drop for DelayQueue {
    fn drop(&mut self) {
        let _ = self.shutdown();
    }
}

fn open_queue() -> Result<nfq::Queue, LabError> {
    let io = |op: &str| {
        let op = op.to_string();
        move |e| LabError::io(op, e)
    };
    let mut q = nfq::Queue::open().map_err(io("open nfnetlink_queue"))?;
    q.bind(QUEUE).map_err(io("bind NFQUEUE 0"))?;
    // Only the verdict matters: copy a header's worth, and let the kernel
    // hand over GSO super-packets whole instead of segmenting them for us.
    q.set_copy_range(QUEUE, 64)
        .map_err(io("set NFQUEUE copy range"))?;
    q.set_recv_gso(QUEUE, true)
        .map_err(io("enable NFQUEUE GSO"))?;
    q.set_queue_max_len(QUEUE, 1 << 16)
        .map_err(io("set NFQUEUE length"))?;
    q.set_nonblocking(true);
    Ok(q)
}

fn run(
    queue: &mut nfq::Queue,
    mut line: DelayLine,
    commands: mpsc::Receiver<Control>,
) -> Result<(), LabError> {
    let mut held: VecDeque<(Instant, nfq::Message)> = VecDeque::new();
    loop {
        loop {
            match commands.try_recv() {
                Ok(Control::Set(i)) => line.set(i),
                Ok(Control::Stop) | Err(mpsc::TryRecvError::Disconnected) => {
                    for (_, mut msg) in held.drain(..) {
                        msg.set_verdict(nfq::Verdict::Accept);
                        let _ = queue.verdict(msg);
                    }
                    return Ok(());
                }
                Err(mpsc::TryRecvError::Empty) => break,
            }
        }
        loop {
            match queue.recv() {
                Ok(mut msg) => match line.admit(Instant::now()) {
                    Some(at) => held.push_back((at, msg)),
                    None => {
                        msg.set_verdict(nfq::Verdict::Drop);
                        verdict(queue, msg)?;
                    }
                },
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => break,
                // The kernel dropped messages for a full socket buffer: those
                // packets are lost, as on an overrun link; carry on.
                Err(e) if e.raw_os_error() == Some(nix::libc::ENOBUFS) => break,
                // Verdicts are not acknowledged one by one; the kernel's
                // complaint about a packet that vanished meanwhile (its flow
                // or interface is gone) arrives here instead.
                Err(e) if e.raw_os_error() == Some(nix::libc::ENOENT) => continue,
                Err(e) => return Err(LabError::io("read NFQUEUE", e)),
            }
        }
        let now = Instant::now();
        while held.front().is_some_and(|(at, _)| *at <= now) {
            if let Some((_, mut msg)) = held.pop_front() {
                msg.set_verdict(nfq::Verdict::Accept);
                verdict(queue, msg)?;
            }
        }
        let nap = held.front().map_or(IDLE_TICK, |(at, _)| {
            at.saturating_duration_since(now).min(IDLE_TICK)
        });
        std::thread::sleep(nap);
    }
}

fn verdict(queue: &mut nfq::Queue, msg: nfq::Message) -> Result<(), LabError> {
    match queue.verdict(msg) {
        Ok(()) => Ok(()),
        // The packet is gone already (e.g. its interface went down).
        Err(e) if e.raw_os_error() == Some(nix::libc::ENOENT) => Ok(()),
        Err(e) => Err(LabError::io("NFQUEUE verdict", e)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn releases_keep_arrival_order_and_stay_within_the_jitter_band(
            delay_ms in 0u64..200,
            jitter_ms in 0u64..50,
            gaps in proptest::collection::vec(0u64..5_000, 1..200),
            seed in any::<u64>(),
        ) {
            let imp = Impairment {
                delay: Duration::from_millis(delay_ms),
                jitter: Duration::from_millis(jitter_ms),
                loss: 0.0,
            };
            let mut line = DelayLine::new(imp, seed);
            let mut now = Instant::now();
            let mut last = None;
            for gap in gaps {
                now += Duration::from_micros(gap);
                let at = line.admit(now).expect("no loss configured");
                prop_assert!(at >= now + imp.delay.saturating_sub(imp.jitter));
                if let Some(l) = last {
                    prop_assert!(at >= l);
                    // Only the order constraint may push a packet past its band.
                    prop_assert!(at <= (now + imp.delay + imp.jitter).max(l));
                } else {
                    prop_assert!(at <= now + imp.delay + imp.jitter);
                }
                last = Some(at);
            }
        }
    }

    #[test]
    fn loss_drops_about_the_configured_share_and_is_seeded() {
        let imp = Impairment {
            loss: 0.25,
            ..Impairment::default()
        };
        let run = |seed| {
            let mut line = DelayLine::new(imp, seed);
            let now = Instant::now();
            (0..10_000).filter(|_| line.admit(now).is_none()).count()
        };
        let dropped = run(7);
        assert_eq!(dropped, run(7));
        assert!((2_200..2_800).contains(&dropped), "{dropped}");
    }
}
