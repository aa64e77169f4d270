//! A herd: many clients holding connections to one server, which they all
//! lose at once when it restarts (AWS Architecture Blog, "Exponential
//! Backoff and Jitter", 2015: clients that retry on the same schedule come
//! back in the same instant, again and again).
//!
//! The server side ([`hold_server`]) accepts connections on the herd port
//! and sends each a heartbeat byte every [`HEARTBEAT`] until it goes; it
//! runs inside the server (the host's software on sim, the
//! `__stream-server` process on netns), so a server restart takes it down
//! with the rest. A client takes [`SILENCE`] without a heartbeat as the
//! loss of its connection, as long-lived protocols do (MQTT's keepalive,
//! WebSocket pings): a connection whose server vanished without a word —
//! one the server's kernel never fully took, behind SYN cookies under the
//! returning crowd — would otherwise be held for ever. The clients
//! ([`herd`]) run on a host of their own beside the stream's client:
//!
//! * naive: connect; when the connection is lost, connect again at once;
//!   when a connect fails, wait one second and try again — the loop most
//!   programs have, which keeps a crowd that lost its server together in
//!   step;
//! * engine: the engine's [`ReconnectCore`] under the scenario's policy
//!   (jittered, growing intervals; staggered attempts), driven here as the
//!   session's driver drives it.
//!
//! Both record every attempt and every connection established, timed on
//! the run's clock (`Recorder::herd_attempt`, `herd_connected`).

use super::programs::Net;
use super::Recorder;
use crate::plan::HerdPlan;
use netmend::reconnect::{Action, AttemptFailure, AttemptId, Pacing, ReconnectCore};
use std::collections::HashMap;
use std::io;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::task::{AbortHandle, JoinSet};

/// The naive clients' pause after a failed connect.
pub const NAIVE_RETRY: Duration = Duration::from_secs(1);

/// How often the server sends each client a heartbeat byte.
pub const HEARTBEAT: Duration = Duration::from_secs(1);

/// How long a client waits for a heartbeat before it takes its connection
/// for lost.
pub const SILENCE: Duration = Duration::from_secs(3);

/// Accepts connections on `port` and serves each ([`serve`]) until its
/// client goes.
///
/// # Errors
///
/// The port cannot be bound.
pub async fn hold_server<N: Net>(net: N, port: u16) -> io::Result<()> {
    let listener = net.bind(port).await?;
    loop {
        match N::accept(&listener).await {
            Ok(stream) => {
                tokio::spawn(serve(stream));
            }
            Err(e) => {
                // Out of descriptors and the like: go on accepting.
                tracing::debug!(error = %e, "herd server: accept failed");
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
    }
}

/// Sends a heartbeat byte every [`HEARTBEAT`] until the connection fails.
pub async fn serve<S: tokio::io::AsyncWrite + Unpin>(mut stream: S) {
    while stream.write_all(b".").await.is_ok() {
        tokio::time::sleep(HEARTBEAT).await;
    }
}

/// Reads heartbeats until the server closes, the connection fails, or
/// none came for [`SILENCE`].
async fn hold<S: tokio::io::AsyncRead + Unpin>(mut stream: S) {
    let mut buf = [0u8; 64];
    while matches!(
        tokio::time::timeout(SILENCE, stream.read(&mut buf)).await,
        Ok(Ok(n)) if n > 0
    ) {}
}

/// The herd's clients against `host`: `plan.count` of them, arriving
/// evenly over one second from `plan.at`, each holding a connection and
/// reconnecting as its variant does (`engine`: the engine's policy). Runs
/// until the backend stops it.
pub async fn herd<N: Net>(net: N, host: String, plan: HerdPlan, engine: bool, rec: Recorder) {
    let now = net.now();
    if plan.at > now {
        tokio::time::sleep(plan.at - now).await;
    }
    rec.herd_started(plan.count);
    let gap = Duration::from_secs(1) / plan.count.max(1);
    let mut clients = JoinSet::new();
    for i in 0..plan.count {
        let (net, host, plan, rec) = (net.clone(), host.clone(), plan.clone(), rec.clone());
        if engine {
            clients.spawn(engine_client(net, host, plan, u64::from(i), rec));
        } else {
            clients.spawn(naive_client(net, host, plan.port, rec));
        }
        tokio::time::sleep(gap).await;
    }
    while clients.join_next().await.is_some() {}
}

/// Connect, hold, and on a loss connect again at once; after a failed
/// connect, wait [`NAIVE_RETRY`].
async fn naive_client<N: Net>(net: N, host: String, port: u16, rec: Recorder) {
    loop {
        rec.herd_attempt(net.now());
        match net.connect(&host, port).await {
            Ok(stream) => {
                rec.herd_connected(net.now());
                hold(stream).await;
                rec.herd_lost();
            }
            Err(_) => tokio::time::sleep(NAIVE_RETRY).await,
        }
    }
}

fn instant() -> std::time::Instant {
    // tokio's clock: virtual under turmoil.
    tokio::time::Instant::now().into_std()
}

/// One client paced by the engine's reconnect core: its actions carried
/// out (attempts as tasks, cancelled when it says so), its timers kept.
async fn engine_client<N: Net>(net: N, host: String, plan: HerdPlan, i: u64, rec: Recorder) {
    let pacing = Pacing::unmonitored(&plan.policy, plan.connect_timeout);
    let seed = plan.seed.wrapping_add(i);
    let mut core = ReconnectCore::new(plan.policy.clone(), pacing, instant(), seed);
    // Bounded by the core: at most `MAX_ATTEMPTS_IN_FLIGHT` at once.
    let mut attempts: JoinSet<(AttemptId, io::Result<N::Stream>)> = JoinSet::new();
    let mut handles: HashMap<AttemptId, AbortHandle> = HashMap::new();
    loop {
        let mut connected = None;
        while let Some(action) = core.poll_action(instant()) {
            match action {
                Action::Connect(id) => {
                    rec.herd_attempt(net.now());
                    let (net, host, port) = (net.clone(), host.clone(), plan.port);
                    let handle =
                        attempts.spawn(async move { (id, net.connect(&host, port).await) });
                    handles.insert(id, handle);
                }
                Action::Cancel(id) => {
                    if let Some(h) = handles.remove(&id) {
                        h.abort();
                    }
                }
                Action::DropTransport => {}
                Action::GiveUp(g) => {
                    tracing::debug!(?g, "herd client: gave up");
                    return;
                }
            }
        }
        // Its events are for an application's handlers: none here.
        while core.poll_event().is_some() {}
        tokio::select! {
            Some(done) = attempts.join_next(), if !attempts.is_empty() => {
                // An aborted attempt ends as a cancelled task: nothing to say.
                let Ok((id, result)) = done else { continue };
                handles.remove(&id);
                match result {
                    Ok(stream) => {
                        if core.handle_connected(instant(), id) {
                            core.handle_established(instant());
                            connected = Some(stream);
                        }
                    }
                    Err(e) => core.handle_attempt_failed(instant(), id, AttemptFailure::from(&e)),
                }
            }
            () = sleep_until(core.poll_timeout()) => core.handle_timeout(instant()),
        }
        if let Some(stream) = connected {
            // The other attempts in flight: cancelled by the core's actions.
            while let Some(action) = core.poll_action(instant()) {
                if let Action::Cancel(id) = action {
                    if let Some(h) = handles.remove(&id) {
                        h.abort();
                    }
                }
            }
            rec.herd_connected(net.now());
            hold(stream).await;
            rec.herd_lost();
            core.handle_transport_lost(instant(), "the server closed".into(), true);
        }
    }
}

/// Sleeps until `at`, or for ever without one.
async fn sleep_until(at: Option<std::time::Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at.into()).await,
        None => std::future::pending().await,
    }
}
