//! Network-change monitor: what the interfaces, addresses and default
//! routes are now ([`Snapshot`]), every change as a typed [`Event`], and one
//! coalesced [`MajorChange`] per burst that touches the path out.
//!
//! Sources: the kernel on Linux ([`Monitor::linux`], rtnetlink), a polling
//! source for platforms without a native one ([`Monitor::polling`]), and an
//! injected one for simulations and tests ([`Monitor::injected`]). All feed
//! the same sans-IO [`MonitorCore`], so every source reports the same
//! events for the same change.
//!
//! ```
//! use netmend::monitor::{Change, Debounce, Event, Interface, Monitor, Snapshot};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() {
//! let (monitor, injector) = Monitor::injected(Snapshot::default(), Debounce::default());
//! let mut events = monitor.events();
//! injector.send(Change::Link(Interface { index: 2, name: "wlan0".into(), up: true, carrier: true }));
//! assert!(matches!(events.next().await, Some(Event::InterfaceAdded(_))));
//! assert!(matches!(events.next().await, Some(Event::LinkUp(_))));
//! assert!(monitor.snapshot().interfaces[&2].usable());
//! # }
//! ```

mod core;
#[cfg(all(target_os = "linux", feature = "netlink"))]
pub mod linux;
mod state;

pub use self::core::{Debounce, MajorChange, MonitorCore, Path};
pub use self::state::{diff, Address, Change, DefaultRoute, Event, Family, Interface, Snapshot};

use std::sync::{Arc, Mutex};
use std::time::Duration;
use thiserror::Error;
use tokio::sync::{broadcast, mpsc, watch, Notify};
use tokio::time::Instant;

/// The monitor could not watch the network.
#[derive(Debug, Error)]
#[non_exhaustive]
pub enum MonitorError {
    /// A system call failed.
    #[error("{op}: {source}")]
    Io {
        /// What was being done.
        op: &'static str,
        /// Why it failed.
        source: std::io::Error,
    },
    /// The kernel refused a netlink request.
    #[error("{op}: {message}")]
    Netlink {
        /// What was being done.
        op: &'static str,
        /// The kernel's answer.
        message: String,
    },
}

type Callback = Box<dyn FnMut(&Event) + Send>;

/// What the monitor's handles read. The senders belong to the monitor's
/// driver task: when its source stops (or the last handle is dropped) they
/// go with it, so every subscriber learns that the monitor stopped.
struct Shared {
    snapshot: watch::Receiver<Snapshot>,
    /// Templates to subscribe from (never read themselves).
    events: Mutex<broadcast::Receiver<Event>>,
    decisions: Mutex<broadcast::Receiver<MajorChange>>,
    callbacks: Mutex<Vec<Callback>>,
    resyncs: std::sync::atomic::AtomicU64,
}

/// The driver's ends of the monitor's channels.
struct Publishers {
    snapshot: watch::Sender<Snapshot>,
    events: broadcast::Sender<Event>,
    decisions: broadcast::Sender<MajorChange>,
}

/// A running monitor. Cheap to clone; the source stops when the last clone
/// is dropped.
#[derive(Clone)]
pub struct Monitor {
    shared: Arc<Shared>,
    /// The driver and the source; aborted when the last clone goes.
    tasks: Arc<Mutex<Vec<AbortOnDrop>>>,
}

impl std::fmt::Debug for Monitor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let s = self.shared.snapshot.borrow();
        f.debug_struct("Monitor")
            .field("interfaces", &s.interfaces.len())
            .field("addresses", &s.addresses.len())
            .field("default_interface", &s.default_interface())
            .finish()
    }
}

struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Changes a source may queue for the monitor's driver. A kernel source
/// that finds the queue full waits, so the kernel's socket overflows and
/// the monitor re-reads the whole state (as after any overflow); an
/// injector folds what does not fit into one re-sync (see [`Injector`]).
pub const CHANGE_QUEUE: usize = 1024;

/// The state an injector reached while the change queue was full; the
/// driver re-syncs from it once it has applied everything queued before.
#[derive(Debug, Default)]
struct Overflow {
    state: Mutex<Option<Snapshot>>,
    notify: Notify,
}

/// Feeds changes into an injected monitor. It keeps the state its changes
/// lead to, so when the monitor's queue ([`CHANGE_QUEUE`]) is full nothing
/// is lost: the changes that do not fit become one re-sync to that state.
#[derive(Clone, Debug)]
pub struct Injector {
    tx: mpsc::Sender<Change>,
    mirror: Arc<Mutex<Snapshot>>,
    overflow: Arc<Overflow>,
}

impl Injector {
    /// Reports a change, as a kernel would. Never blocks.
    pub fn send(&self, change: Change) {
        let mut mirror = lock(&self.mirror);
        mirror.apply(&change);
        let mut pending = lock(&self.overflow.state);
        if pending.is_some() {
            // Already behind: fold this change into the re-sync too.
            *pending = Some(mirror.clone());
            return;
        }
        if let Err(mpsc::error::TrySendError::Full(_)) = self.tx.try_send(change) {
            tracing::debug!("monitor change queue full; the injected state will be re-synced");
            *pending = Some(mirror.clone());
            self.overflow.notify.notify_one();
        }
    }
}

/// Events in the order they happened. A subscriber that falls more than
/// [`EVENT_BACKLOG`] events behind skips the oldest (with a log line); the
/// [`Monitor::snapshot`] is always current.
pub struct Events(broadcast::Receiver<Event>);

/// Decisions in the order they were made.
pub struct Decisions(broadcast::Receiver<MajorChange>);

/// How many events or decisions a slow subscriber may fall behind.
pub const EVENT_BACKLOG: usize = 4096;

async fn next_of<T: Clone>(rx: &mut broadcast::Receiver<T>) -> Option<T> {
    loop {
        match rx.recv().await {
            Ok(v) => return Some(v),
            Err(broadcast::error::RecvError::Lagged(n)) => {
                tracing::warn!(skipped = n, "monitor subscriber fell behind");
            }
            Err(broadcast::error::RecvError::Closed) => return None,
        }
    }
}

impl Events {
    /// The next event; `None` once the monitor has stopped.
    ///
    /// # Cancel safety
    ///
    /// Cancel safe: an event is taken only when this returns it.
    pub async fn next(&mut self) -> Option<Event> {
        next_of(&mut self.0).await
    }
}

impl Decisions {
    /// The next decision; `None` once the monitor has stopped.
    ///
    /// # Cancel safety
    ///
    /// Cancel safe: a decision is taken only when this returns it.
    pub async fn next(&mut self) -> Option<MajorChange> {
        next_of(&mut self.0).await
    }
}

impl Monitor {
    /// A monitor fed by whatever sends on the returned channel (bounded:
    /// [`CHANGE_QUEUE`]) or leaves a state in the returned overflow.
    fn start(
        initial: Snapshot,
        debounce: Debounce,
    ) -> (Monitor, mpsc::Sender<Change>, Arc<Overflow>) {
        let (tx, rx) = mpsc::channel(CHANGE_QUEUE);
        let overflow = Arc::new(Overflow::default());
        let (snapshot_tx, snapshot) = watch::channel(initial.clone());
        let (events_tx, events) = broadcast::channel(EVENT_BACKLOG);
        let (decisions_tx, decisions) = broadcast::channel(EVENT_BACKLOG);
        let shared = Arc::new(Shared {
            snapshot,
            events: Mutex::new(events),
            decisions: Mutex::new(decisions),
            callbacks: Mutex::new(Vec::new()),
            resyncs: std::sync::atomic::AtomicU64::new(0),
        });
        let publishers = Publishers {
            snapshot: snapshot_tx,
            events: events_tx,
            decisions: decisions_tx,
        };
        let core = MonitorCore::new(initial, debounce);
        let task = tokio::spawn(drive(
            core,
            rx,
            overflow.clone(),
            shared.clone(),
            publishers,
        ));
        (
            Monitor {
                shared,
                tasks: Arc::new(Mutex::new(vec![AbortOnDrop(task)])),
            },
            tx,
            overflow,
        )
    }

    /// A monitor driven by the caller: simulations inject the changes their
    /// world makes, tests script them.
    pub fn injected(initial: Snapshot, debounce: Debounce) -> (Monitor, Injector) {
        let mirror = Arc::new(Mutex::new(initial.clone()));
        let (m, tx, overflow) = Monitor::start(initial, debounce);
        (
            m,
            Injector {
                tx,
                mirror,
                overflow,
            },
        )
    }

    /// A monitor that re-reads the whole state every `interval` with
    /// `read` and reports the differences: for platforms without a native
    /// source. It sees a change up to `interval` late and misses changes
    /// undone within one interval.
    ///
    /// # Errors
    ///
    /// The first read's error.
    ///
    /// # Cancel safety
    ///
    /// Cancel safe: the monitor starts only when this returns.
    pub async fn polling<F, Fut>(
        interval: Duration,
        debounce: Debounce,
        mut read: F,
    ) -> Result<Monitor, std::io::Error>
    where
        F: FnMut() -> Fut + Send + 'static,
        Fut: std::future::Future<Output = std::io::Result<Snapshot>> + Send,
    {
        let initial = read().await?;
        let (m, tx, _) = Monitor::start(initial, debounce);
        let poller = tokio::spawn(async move {
            let mut tick = tokio::time::interval(interval);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            tick.tick().await;
            loop {
                tick.tick().await;
                match read().await {
                    Ok(s) => {
                        if tx.send(Change::Resync(s)).await.is_err() {
                            return;
                        }
                    }
                    Err(e) => tracing::warn!(error = %e, "polling the network state failed"),
                }
            }
        });
        Ok(m.with_source(poller))
    }

    /// Polls the operating system's interface table every `interval`
    /// (through the `netdev` crate: getifaddrs and the platform's routing
    /// API on Linux, macOS, Windows, BSD, Android, iOS): the portable
    /// source for platforms without a native one. It knows the default
    /// interface and its gateway but not route metrics (reported as 0), and
    /// carrier as the interface's running flag.
    ///
    /// # Errors
    ///
    /// None in practice (reading the table does not fail); the signature
    /// is [`Monitor::polling`]'s.
    ///
    /// # Cancel safety
    ///
    /// Cancel safe, as [`Monitor::polling`].
    #[cfg(feature = "system-monitor")]
    pub async fn system_polling(
        interval: Duration,
        debounce: Debounce,
    ) -> Result<Monitor, std::io::Error> {
        Monitor::polling(interval, debounce, || async { Ok(read_system()) }).await
    }

    /// Watches the kernel of the calling thread's network namespace.
    ///
    /// # Errors
    ///
    /// [`MonitorError`] when the netlink socket cannot be opened or the
    /// first dump fails.
    ///
    /// # Cancel safety
    ///
    /// Cancel safe: the monitor starts only when this returns.
    #[cfg(all(target_os = "linux", feature = "netlink"))]
    pub async fn linux(debounce: Debounce) -> Result<Monitor, MonitorError> {
        Monitor::linux_with_buffer(debounce, None).await
    }

    /// [`Monitor::linux`] with the notification socket's receive buffer
    /// set to `receive_buffer` bytes (small buffers overflow sooner; the
    /// monitor then re-reads the whole state).
    ///
    /// # Errors
    ///
    /// As [`Monitor::linux`].
    ///
    /// # Cancel safety
    ///
    /// Cancel safe, as [`Monitor::linux`].
    #[cfg(all(target_os = "linux", feature = "netlink"))]
    pub async fn linux_with_buffer(
        debounce: Debounce,
        receive_buffer: Option<usize>,
    ) -> Result<Monitor, MonitorError> {
        // Subscribe first, then dump: a change racing the dump is then
        // both in the dump and in a notification, and applying it twice is
        // harmless, where the other order could lose it.
        let mut source = linux::LinuxSource::open(receive_buffer)?;
        let initial = source.dump().await?;
        let (m, tx, _) = Monitor::start(initial, debounce);
        let reader = tokio::spawn(async move {
            loop {
                match source.next_changes().await {
                    Ok(changes) => {
                        for c in changes {
                            // A full queue makes this wait: the kernel's
                            // socket overflows meanwhile and the source
                            // re-reads the whole state after it.
                            if tx.send(c).await.is_err() {
                                return;
                            }
                        }
                    }
                    Err(e) => {
                        tracing::error!(error = %e, "network monitor stopped");
                        return;
                    }
                }
            }
        });
        Ok(m.with_source(reader))
    }

    fn with_source(self, source: tokio::task::JoinHandle<()>) -> Monitor {
        self.tasks
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(AbortOnDrop(source));
        self
    }

    /// What is known now.
    pub fn snapshot(&self) -> Snapshot {
        self.shared.snapshot.borrow().clone()
    }

    /// How often the whole state was re-read (after a socket overflow, after
    /// a change the kernel does not announce in full, or every poll).
    pub fn resyncs(&self) -> u64 {
        self.shared
            .resyncs
            .load(std::sync::atomic::Ordering::Relaxed)
    }

    /// A receiver that is woken whenever the snapshot changes; its
    /// `changed()` fails once the monitor has stopped.
    pub fn watch(&self) -> watch::Receiver<Snapshot> {
        let mut rx = self.shared.snapshot.clone();
        rx.mark_unchanged();
        rx
    }

    /// Every event from now on; `None` once the monitor has stopped.
    pub fn events(&self) -> Events {
        Events(lock(&self.shared.events).resubscribe())
    }

    /// Every decision from now on; `None` once the monitor has stopped.
    pub fn decisions(&self) -> Decisions {
        Decisions(lock(&self.shared.decisions).resubscribe())
    }

    /// Whether the monitor still follows its source. It stops when the
    /// source fails (a netlink socket error, logged) — then its streams
    /// end, its watchers' `changed()` fails, and [`Monitor::snapshot`]
    /// keeps the last state it knew.
    pub fn is_running(&self) -> bool {
        self.shared.snapshot.has_changed().is_ok()
    }

    /// Calls `handler` for every event from now on, on the monitor's own
    /// task, as soon as the change is known (the lowest-latency way to
    /// hear of one). The handler must not block; it runs without any of
    /// the monitor's locks held, so it may call the monitor (subscribe,
    /// add a handler, read the snapshot).
    pub fn on_event(&self, handler: impl FnMut(&Event) + Send + 'static) {
        lock(&self.shared.callbacks).push(Box::new(handler));
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    // A panic while holding the lock leaves plain data behind; keep going.
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// The operating system's interfaces, addresses and default route, read
/// on the calling thread (so, on Linux, in its network namespace).
#[cfg(feature = "system-monitor")]
pub fn read_system() -> Snapshot {
    let mut s = Snapshot::default();
    for i in netdev::get_interfaces() {
        s.interfaces.insert(
            i.index,
            Interface {
                index: i.index,
                name: i.name.clone(),
                up: i.is_up(),
                carrier: i.is_running(),
            },
        );
        for net in &i.ipv4 {
            s.addresses.insert(Address {
                interface: i.index,
                ip: std::net::IpAddr::V4(net.addr()),
                prefix_len: net.prefix_len(),
            });
        }
        for net in &i.ipv6 {
            s.addresses.insert(Address {
                interface: i.index,
                ip: std::net::IpAddr::V6(net.addr()),
                prefix_len: net.prefix_len(),
            });
        }
        if let (true, Some(gw)) = (i.default, &i.gateway) {
            let routes = gw
                .ipv4
                .first()
                .map(|g| (Family::V4, std::net::IpAddr::V4(*g)))
                .into_iter()
                .chain(
                    gw.ipv6
                        .first()
                        .map(|g| (Family::V6, std::net::IpAddr::V6(*g))),
                );
            for (family, gateway) in routes {
                s.default_routes.insert(DefaultRoute {
                    family,
                    gateway: Some(gateway),
                    interface: i.index,
                    metric: 0,
                });
            }
        }
    }
    s
}

/// The next change: what is queued first, then a re-sync an injector left
/// when the queue was full (so it lands after everything queued before
/// it); `None` once the source is gone.
async fn next_change(changes: &mut mpsc::Receiver<Change>, overflow: &Overflow) -> Option<Change> {
    loop {
        tokio::select! {
            biased;
            c = changes.recv() => {
                return match c {
                    Some(c) => Some(c),
                    None => lock(&overflow.state).take().map(Change::Resync),
                };
            }
            () = overflow.notify.notified() => {
                if let Some(s) = lock(&overflow.state).take() {
                    return Some(Change::Resync(s));
                }
            }
        }
    }
}

async fn drive(
    mut core: MonitorCore,
    mut changes: mpsc::Receiver<Change>,
    overflow: Arc<Overflow>,
    shared: Arc<Shared>,
    publish: Publishers,
) {
    // The core runs on std Instants; tokio's clock drives the sleeps, so
    // map between them from one origin (this keeps paused-time tests right).
    let origin = (Instant::now(), std::time::Instant::now());
    let to_std = |t: Instant| origin.1 + t.saturating_duration_since(origin.0);
    let to_tokio = |t: std::time::Instant| origin.0 + t.saturating_duration_since(origin.1);
    loop {
        let deadline = core.poll_timeout().map(to_tokio);
        tokio::select! {
            // Fixed order: simulations must replay exactly from their seed.
            biased;
            change = next_change(&mut changes, &overflow) => {
                let Some(change) = change else {
                    tracing::warn!("network monitor source stopped; subscribers are told (streams end)");
                    return;
                };
                if matches!(change, Change::Resync(_)) {
                    shared.resyncs.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                }
                let events = core.handle_change(&change, to_std(Instant::now()));
                // Publish every change of state, also those no event names
                // (a route over a downed interface going away).
                publish.snapshot.send_if_modified(|s| {
                    let changed = s != core.snapshot();
                    if changed {
                        *s = core.snapshot().clone();
                    }
                    changed
                });
                if !events.is_empty() {
                    // Handlers run without the lock: one that registers
                    // another handler or reads the monitor cannot deadlock.
                    let mut running = std::mem::take(&mut *lock(&shared.callbacks));
                    for e in &events {
                        for cb in running.iter_mut() {
                            cb(e);
                        }
                        let _ = publish.events.send(e.clone());
                    }
                    let mut callbacks = lock(&shared.callbacks);
                    running.append(&mut callbacks);
                    *callbacks = running;
                }
            }
            () = async {
                match deadline {
                    Some(d) => tokio::time::sleep_until(d).await,
                    None => std::future::pending().await,
                }
            } => {
                core.handle_timeout(to_std(Instant::now()));
            }
        }
        while let Some(d) = core.poll_decision() {
            tracing::debug!(
                path_changed = d.path_changed,
                events = d.events.len(),
                "network change decided"
            );
            let _ = publish.decisions.send(d);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn eth(carrier: bool) -> Interface {
        Interface {
            index: 2,
            name: "eth0".into(),
            up: true,
            carrier,
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_polling_source_reports_what_changed_between_polls() {
        let states = Arc::new(Mutex::new(vec![Snapshot::default()]));
        let feed = states.clone();
        let monitor = Monitor::polling(Duration::from_secs(1), Debounce::default(), move || {
            let s = feed.lock().unwrap().last().cloned().unwrap_or_default();
            async move { Ok(s) }
        })
        .await
        .unwrap();
        let mut events = monitor.events();
        let mut up = Snapshot::default();
        up.apply(&Change::Link(eth(true)));
        states.lock().unwrap().push(up);
        assert_eq!(events.next().await, Some(Event::InterfaceAdded(eth(true))));
        assert_eq!(events.next().await, Some(Event::LinkUp(eth(true))));
        assert_eq!(monitor.resyncs(), 1);
    }

    #[tokio::test(start_paused = true)]
    async fn handlers_and_streams_see_the_same_events_and_decisions_follow() {
        let mut start = Snapshot::default();
        start.apply(&Change::Link(eth(true)));
        start.apply(&Change::DefaultRouteAdded(DefaultRoute {
            family: Family::V4,
            gateway: None,
            interface: 2,
            metric: 0,
        }));
        start.ignore_linkdown.insert((Family::V4, 2));
        let (monitor, injector) = Monitor::injected(start, Debounce::default());
        let seen = Arc::new(Mutex::new(Vec::new()));
        let sink = seen.clone();
        monitor.on_event(move |e| sink.lock().unwrap().push(e.clone()));
        let mut decisions = monitor.decisions();
        injector.send(Change::Link(eth(false)));
        let d = decisions.next().await.expect("a decision");
        assert!(
            d.path_changed,
            "the only route lost carrier, and the kernel ignores such routes here"
        );
        assert_eq!(d.events, *seen.lock().unwrap());
        assert!(matches!(d.events[0], Event::LinkDown(_)));
    }

    #[tokio::test(start_paused = true)]
    async fn a_handler_may_subscribe_and_read_the_monitor_without_deadlock() {
        let (monitor, injector) = Monitor::injected(Snapshot::default(), Debounce::default());
        let inner = monitor.clone();
        let seen = Arc::new(Mutex::new(0));
        let count = seen.clone();
        monitor.on_event(move |_| {
            let _ = inner.snapshot();
            let _ = inner.events();
            let c = count.clone();
            inner.on_event(move |_| *c.lock().unwrap() += 1);
        });
        let mut events = monitor.events();
        injector.send(Change::Link(eth(true)));
        assert!(events.next().await.is_some());
        assert!(events.next().await.is_some());
        injector.send(Change::Link(eth(false)));
        assert!(events.next().await.is_some());
        // The handlers added while the first batch ran saw the second.
        assert!(*seen.lock().unwrap() >= 2);
    }

    #[tokio::test(start_paused = true)]
    async fn an_injector_that_outruns_the_queue_loses_no_state() {
        let (monitor, injector) = Monitor::injected(Snapshot::default(), Debounce::default());
        let mut watch = monitor.watch();
        // Far more changes than the queue holds, without yielding once.
        for i in 0..(3 * CHANGE_QUEUE as u32) {
            injector.send(Change::Link(Interface {
                index: 2 + i,
                name: format!("eth{i}"),
                up: true,
                carrier: i % 2 == 0,
            }));
        }
        injector.send(Change::LinkRemoved(2));
        let mut want = Snapshot::default();
        for i in 1..(3 * CHANGE_QUEUE as u32) {
            want.apply(&Change::Link(Interface {
                index: 2 + i,
                name: format!("eth{i}"),
                up: true,
                carrier: i % 2 == 0,
            }));
        }
        while monitor.snapshot() != want {
            watch.changed().await.expect("the monitor runs");
        }
        assert!(monitor.resyncs() >= 1, "the overflow became a re-sync");
    }

    #[tokio::test(start_paused = true)]
    async fn a_monitor_whose_source_stopped_says_so() {
        let (monitor, injector) = Monitor::injected(Snapshot::default(), Debounce::default());
        let mut events = monitor.events();
        let mut decisions = monitor.decisions();
        let mut watch = monitor.watch();
        assert!(monitor.is_running());
        drop(injector);
        assert_eq!(events.next().await, None);
        assert!(decisions.next().await.is_none());
        assert!(watch.changed().await.is_err());
        assert!(!monitor.is_running());
        assert!(
            monitor.events().next().await.is_none(),
            "late subscribers too"
        );
    }
}
