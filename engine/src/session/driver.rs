//! Drives one transport of a session: the shared loop of client and server.

use super::handle::Shared;
use super::proto::Event;
use std::future::pending;
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::sync::mpsc::UnboundedReceiver;
use tokio::time::Instant;

/// Read buffer per transport.
const READ_CHUNK: usize = 64 * 1024;
/// Bytes taken from the core per write batch.
const WRITE_BATCH: usize = 256 * 1024;
/// How long a closing transport may take to flush its last frames.
const FLUSH_GRACE: Duration = Duration::from_secs(1);

/// How a transport ended.
#[derive(Debug)]
pub(crate) enum LinkEnd<A> {
    /// The session is over (done or failed); no new transport is needed.
    Finished,
    /// The transport failed; the session wants a new one.
    Failed(String),
    /// The server got a newer transport for this session.
    Preempted(A),
}

/// What happened on one transport.
#[derive(Debug)]
pub(crate) struct LinkReport<A> {
    pub(crate) established: bool,
    pub(crate) end: LinkEnd<A>,
}

pub(crate) fn now() -> std::time::Instant {
    // tokio's clock: virtual under turmoil and paused tests, real otherwise.
    Instant::now().into_std()
}

/// Runs `stream` for the session until it fails, the session finishes, or
/// (server) a newer transport arrives on `preempt`.
pub(crate) async fn drive_link<S, A>(
    shared: &Shared,
    stream: S,
    mut preempt: Option<&mut UnboundedReceiver<A>>,
) -> LinkReport<A>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let (mut rd, mut wr) = tokio::io::split(stream);
    let mut out: Vec<u8> = Vec::with_capacity(WRITE_BATCH);
    let mut pos = 0usize;
    let mut rbuf = vec![0u8; READ_CHUNK];
    let mut established = false;
    loop {
        let now = now();
        let (deadline, want_read, ending) = {
            let mut st = shared.lock();
            if pos == out.len() {
                out.clear();
                pos = 0;
                st.core.poll_transmit(now, &mut out, WRITE_BATCH);
            }
            let mut ending = None;
            while let Some(ev) = st.core.poll_event() {
                match ev {
                    Event::Established { resumed } => {
                        established = true;
                        tracing::debug!(resumed, "transport established");
                    }
                    Event::LinkFailed(e) => {
                        tracing::debug!(error = %e, "transport failed");
                        ending.get_or_insert(LinkEnd::Failed(e.to_string()));
                    }
                    Event::Failed(e) => {
                        tracing::debug!(error = %e, "session failed");
                        ending = Some(LinkEnd::Finished);
                    }
                }
            }
            if ending.is_none() && st.finished() {
                ending = Some(LinkEnd::Finished);
            }
            st.wake_app();
            (st.core.poll_timeout(), st.core.wants_read(), ending)
        };
        if let Some(end) = ending {
            if matches!(end, LinkEnd::Finished) {
                // Last frames (final ack, Reject) should reach the peer.
                let _ = tokio::time::timeout(FLUSH_GRACE, async {
                    wr.write_all(&out[pos..]).await?;
                    wr.shutdown().await
                })
                .await;
            }
            return LinkReport { established, end };
        }
        let sleep_until = deadline.map(Instant::from_std);
        tokio::select! {
            r = rd.read(&mut rbuf), if want_read => match r {
                Ok(0) => return failed(established, "transport closed by peer".into()),
                Ok(n) => {
                    // A bad frame surfaces as Event::LinkFailed on the next turn.
                    let _ = shared.lock().core.handle_input(super::driver::now(), &rbuf[..n]);
                }
                Err(e) => return failed(established, e.to_string()),
            },
            w = wr.write(&out[pos..]), if pos < out.len() => match w {
                Ok(0) => return failed(established, "transport refused writes".into()),
                Ok(n) => pos += n,
                Err(e) => return failed(established, e.to_string()),
            },
            _ = sleep_opt(sleep_until) => shared.lock().core.handle_timeout(super::driver::now()),
            _ = shared.driver.notified() => {}
            a = recv_opt(&mut preempt) => {
                return LinkReport { established, end: LinkEnd::Preempted(a) };
            }
        }
    }
}

fn failed<A>(established: bool, why: String) -> LinkReport<A> {
    tracing::debug!(%why, "transport lost");
    LinkReport {
        established,
        end: LinkEnd::Failed(why),
    }
}

async fn sleep_opt(at: Option<Instant>) {
    match at {
        Some(t) => tokio::time::sleep_until(t).await,
        None => pending().await,
    }
}

async fn recv_opt<A>(rx: &mut Option<&mut UnboundedReceiver<A>>) -> A {
    match rx {
        Some(r) => match r.recv().await {
            Some(a) => a,
            None => pending().await,
        },
        None => pending().await,
    }
}
