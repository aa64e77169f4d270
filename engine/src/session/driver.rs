//! Drives one transport of a session: the shared loop of client and server.

use super::handle::Shared;
use super::proto::Event;
use bytes::{Buf, Bytes, BytesMut};
use std::collections::VecDeque;
use std::future::pending;
use std::io::IoSlice;
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::sync::mpsc::Receiver;
use tokio::time::Instant;

/// Largest read buffer per transport: what a busy transport reads at once.
const READ_CHUNK: usize = 256 * 1024;
/// First read buffer of a transport: an idle or quiet transport never
/// holds more (a server with thousands of idle sessions would otherwise
/// hold `READ_CHUNK` each); it doubles while reads fill it.
const FIRST_READ: usize = 4 * 1024;
/// Bytes taken from the core per write batch.
const WRITE_BATCH: usize = 1024 * 1024;
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
    /// The application detaches the session (client): every frame taken
    /// from the core was written; here is the transport, and what was read
    /// from it past the last whole frame.
    Detached {
        /// The transport, as the connector's stream type.
        transport: Box<dyn std::any::Any + Send>,
        /// Bytes read and not yet a whole frame.
        input: BytesMut,
    },
}

/// What happened on one transport.
#[derive(Debug)]
pub(crate) struct LinkReport<A> {
    pub(crate) end: LinkEnd<A>,
}

pub(crate) fn now() -> std::time::Instant {
    // tokio's clock: virtual under turmoil and paused tests, real otherwise.
    Instant::now().into_std()
}

/// One turn's outcome of the transport's select loop.
enum Turn<A> {
    Read(std::io::Result<usize>),
    Wrote(std::io::Result<usize>),
    Timer,
    Woken,
    Preempted(A),
}

/// Most slices handed to one vectored write.
const MAX_IOVECS: usize = 64;

/// Runs `stream` for the session until it fails, the session finishes, or
/// (server) a newer transport arrives on `preempt`.
pub(crate) async fn drive_link<S, A>(
    shared: &Shared,
    stream: S,
    mut preempt: Option<&mut Receiver<A>>,
) -> LinkReport<A>
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let (mut rd, mut wr) = tokio::io::split(stream);
    // Frames to write, in order; payloads are slices of the replay buffer.
    let mut pending: VecDeque<Bytes> = VecDeque::new();
    let mut batch: Vec<Bytes> = Vec::new();
    // The core cuts frames off this buffer without copying them.
    let mut read_size = FIRST_READ;
    let mut rbuf = BytesMut::with_capacity(read_size);
    loop {
        let now = now();
        let detaching = shared.lock().detach_requested();
        if detaching {
            {
                // Take no more from the core and read no more: what is
                // queued in it, and what the transport holds, go along.
                if pending.is_empty() {
                    return LinkReport {
                        end: LinkEnd::Detached {
                            transport: Box::new(rd.unsplit(wr)),
                            input: rbuf,
                        },
                    };
                }
                let slices: Vec<IoSlice<'_>> = pending
                    .iter()
                    .take(MAX_IOVECS)
                    .map(|b| IoSlice::new(b))
                    .collect();
                // A transport that takes nothing for a while is left
                // behind: the session goes without it and resumes.
                match tokio::time::timeout(FLUSH_GRACE, wr.write_vectored(&slices)).await {
                    Ok(Ok(0)) => return failed("transport refused writes".into()),
                    Ok(Ok(n)) => {
                        drop(slices);
                        advance(&mut pending, n);
                    }
                    Ok(Err(e)) => return failed(e.to_string()),
                    Err(_) => {
                        return failed("detaching: the transport took nothing for 1 s".into())
                    }
                }
                continue;
            }
        }
        let (deadline, want_read, ending) = {
            let mut st = shared.lock();
            if pending.is_empty() {
                st.core.poll_transmit(now, &mut batch, WRITE_BATCH);
                pending.extend(batch.drain(..));
            }
            let mut ending = None;
            while let Some(ev) = st.core.poll_event() {
                match ev {
                    Event::Established { resumed } => {
                        st.established_news = true;
                        shared.client.notify_one();
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
            if st.core.is_durable() {
                // Acknowledgements may have moved what the store must hold.
                shared.persist.notify_one();
            }
            st.wake_app();
            let want_read = st.core.wants_read();
            st.wake_on_write = pending.is_empty();
            (st.core.poll_timeout(), want_read, ending)
        };
        if let Some(end) = ending {
            if matches!(end, LinkEnd::Finished) {
                // The core's last words (the final ack, `Close`) may not be
                // in `pending` yet.
                shared
                    .lock()
                    .core
                    .poll_transmit(now, &mut batch, WRITE_BATCH);
                pending.extend(batch.drain(..));
                // Last frames (final ack, Reject) should reach the peer.
                let _ = tokio::time::timeout(FLUSH_GRACE, async {
                    for b in &pending {
                        wr.write_all(b).await?;
                    }
                    wr.shutdown().await
                })
                .await;
            }
            return LinkReport { end };
        }
        if rbuf.capacity() - rbuf.len() < read_size / 4 {
            rbuf.reserve(read_size);
        }
        let spare = rbuf.capacity() - rbuf.len();
        let sleep_until = deadline.map(Instant::from_std);
        let slices: Vec<IoSlice<'_>> = pending
            .iter()
            .take(MAX_IOVECS)
            .map(|b| IoSlice::new(b))
            .collect();
        let turn = tokio::select! {
            r = rd.read_buf(&mut rbuf), if want_read => Turn::Read(r),
            w = wr.write_vectored(&slices), if !slices.is_empty() => Turn::Wrote(w),
            _ = sleep_opt(sleep_until) => Turn::Timer,
            _ = shared.driver.notified() => Turn::Woken,
            a = recv_opt(&mut preempt) => Turn::Preempted(a),
        };
        drop(slices);
        match turn {
            Turn::Read(Ok(0)) => return failed("transport closed by peer".into()),
            Turn::Read(Ok(n)) => {
                if n == spare {
                    read_size = (read_size * 2).min(READ_CHUNK);
                }
                // A bad frame surfaces as Event::LinkFailed on the next turn.
                let _ = shared
                    .lock()
                    .core
                    .handle_input_buf(super::driver::now(), &mut rbuf);
            }
            Turn::Read(Err(e)) => return failed(e.to_string()),
            Turn::Wrote(Ok(0)) => return failed("transport refused writes".into()),
            Turn::Wrote(Ok(n)) => advance(&mut pending, n),
            Turn::Wrote(Err(e)) => return failed(e.to_string()),
            Turn::Timer => shared.lock().core.handle_timeout(super::driver::now()),
            Turn::Woken => {}
            Turn::Preempted(a) => {
                return LinkReport {
                    end: LinkEnd::Preempted(a),
                }
            }
        }
    }
}

/// Drops the first `n` written bytes off the queue of frames.
fn advance(pending: &mut VecDeque<Bytes>, mut n: usize) {
    while n > 0 {
        let Some(front) = pending.front_mut() else {
            break;
        };
        if front.len() <= n {
            n -= front.len();
            pending.pop_front();
        } else {
            front.advance(n);
            n = 0;
        }
    }
}

fn failed<A>(why: String) -> LinkReport<A> {
    tracing::debug!(%why, "transport lost");
    LinkReport {
        end: LinkEnd::Failed(why),
    }
}

async fn sleep_opt(at: Option<Instant>) {
    match at {
        Some(t) => tokio::time::sleep_until(t).await,
        None => pending().await,
    }
}

async fn recv_opt<A>(rx: &mut Option<&mut Receiver<A>>) -> A {
    match rx {
        Some(r) => match r.recv().await {
            Some(a) => a,
            None => pending().await,
        },
        None => pending().await,
    }
}
