//! The application's handle to a session: `AsyncRead + AsyncWrite`.

use super::detach::{CoreState, Detached, StateKey};
use super::error::{Delivery, SessionError, SessionErrorKind};
use super::frame::SessionId;
use super::proto::{SessionCore, Stats};
use bytes::Bytes;
use std::io;
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll, Waker};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::sync::Notify;

/// State shared by the application handle and the driver task.
#[derive(Debug)]
pub(crate) struct Shared {
    state: Mutex<State>,
    /// Wakes the driver after the application wrote, read or closed.
    pub(crate) driver: Notify,
    /// Wakes the client's reconnect loop: a transport finished its
    /// handshake, or the application aborted or dropped the session.
    pub(crate) client: Notify,
    /// Wakes a store-backed server session's checkpoint writer: the
    /// application read, wrote or ended its stream, or the peer
    /// acknowledged.
    pub(crate) persist: Notify,
}

#[derive(Debug)]
pub(crate) struct State {
    pub(crate) core: SessionCore,
    read_waker: Option<Waker>,
    write_waker: Option<Waker>,
    pub(crate) connect_attempts: u32,
    pub(crate) handle_dropped: bool,
    pub(crate) driver_gone: bool,
    /// Set by the transport's driver when a handshake completed, for the
    /// client's reconnect loop.
    pub(crate) established_news: bool,
    /// Moving the session to another process (see [`Session::detach`]).
    pub(crate) detach: DetachSlot,
    /// Set by the driver when it has nothing to send: the next write must
    /// wake it. While it is busy writing it picks new data up by itself, and
    /// skipping the wake-up saves a futex call per application write.
    pub(crate) wake_on_write: bool,
}

/// Where a detach stands.
#[derive(Default)]
pub(crate) enum DetachSlot {
    /// Not asked for.
    #[default]
    No,
    /// Asked for: the driver stops at a frame boundary.
    Requested,
    /// The driver stopped: the state (unsealed) and the transport.
    Done(Box<CoreState>, Option<Box<dyn std::any::Any + Send>>),
}

impl std::fmt::Debug for DetachSlot {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            DetachSlot::No => "No",
            DetachSlot::Requested => "Requested",
            DetachSlot::Done(..) => "Done",
        })
    }
}

impl State {
    /// Whether the application asked to detach the session.
    pub(crate) fn detach_requested(&self) -> bool {
        !matches!(self.detach, DetachSlot::No)
    }

    /// Wakes whichever application task waits on the session.
    pub(crate) fn wake_app(&mut self) {
        if let Some(w) = self.read_waker.take() {
            w.wake();
        }
        if let Some(w) = self.write_waker.take() {
            w.wake();
        }
    }

    /// Whether the driver has nothing left to do.
    /// Nothing more to exchange: the session failed, or it is closed on
    /// both sides (done, and the peer said so), or the application dropped
    /// its handle and every byte it wrote was acknowledged. A session that
    /// is done but has not heard the peer's `Close` is not finished: its
    /// last acknowledgement may have been lost, and a broken transport is
    /// resumed to deliver it.
    ///
    /// A store-backed session is finished only once the store recorded all
    /// of it: its last acknowledgement waits for that checkpoint.
    pub(crate) fn finished(&self) -> bool {
        self.core.error().is_some()
            || ((self.core.is_closed() || (self.handle_dropped && self.core.send_complete()))
                && self.core.checkpoint_settled())
    }

    fn terminal_error(&self) -> Option<SessionError> {
        if let Some(e) = self.core.error() {
            return Some(e.clone());
        }
        if self.driver_gone {
            return Some(self.core.error_now(SessionErrorKind::Closed));
        }
        None
    }
}

impl Shared {
    pub(crate) fn new(core: SessionCore) -> Arc<Self> {
        Arc::new(Self {
            state: Mutex::new(State {
                core,
                read_waker: None,
                write_waker: None,
                connect_attempts: 0,
                handle_dropped: false,
                driver_gone: false,
                established_news: false,
                detach: DetachSlot::No,
                wake_on_write: true,
            }),
            driver: Notify::new(),
            client: Notify::new(),
            persist: Notify::new(),
        })
    }

    pub(crate) fn lock(&self) -> MutexGuard<'_, State> {
        // A panic while holding the lock leaves plain data behind; keep going.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Waits until the first transport is established or the session failed.
    pub(crate) async fn established(&self) -> Result<(), SessionError> {
        std::future::poll_fn(|cx| {
            let mut st = self.lock();
            if st.core.credentials().is_some() && st.core.stats().links_established > 0 {
                return Poll::Ready(Ok(()));
            }
            if let Some(e) = st.terminal_error() {
                return Poll::Ready(Err(e));
            }
            st.write_waker = Some(cx.waker().clone());
            Poll::Pending
        })
        .await
    }
}

/// Counters of a session, for reports and metrics.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SessionStats {
    /// Protocol counters (transports, resumes, replayed bytes).
    pub protocol: Stats,
    /// Client side: transports the connector was asked for (including failed ones).
    pub connect_attempts: u32,
}

/// A resumable byte stream. Reads and writes survive transport failures:
/// the driver reconnects (client) or waits for the client to come back
/// (server) and resumes where the peer's acknowledgements left off, so no
/// byte is lost or duplicated. A session that cannot resume fails with a
/// typed [`SessionError`], carried in the `io::Error` of the failing call
/// (see [`session_error`]).
///
/// `poll_flush` returns at once: written bytes sit in the replay buffer and
/// the driver sends them as soon as a transport allows. `poll_shutdown` ends
/// the stream and resolves once the peer acknowledged every byte and the end
/// of stream. Dropping the handle is a graceful close: the driver keeps
/// delivering what was written (reconnecting as the policy allows), then
/// stops. [`Session::abort`] stops at once.
///
/// # Cancel safety
///
/// Reads and writes go through the session's buffers: a cancelled
/// `read` loses no byte (it was either copied into the caller's buffer
/// and reported, or is still in the session), and a cancelled `write`
/// wrote exactly what its last `poll_write` reported. `shutdown` and
/// [`Session::write_bytes`] are cancel safe in the same sense: bytes taken
/// stay taken, the rest stays with the caller.
#[derive(Debug)]
pub struct Session {
    pub(crate) shared: Arc<Shared>,
    /// The driver task, aborted when the session is dropped after
    /// [`Session::abort`].
    pub(crate) driver: Option<tokio::task::JoinHandle<()>>,
}

/// The [`SessionError`] behind an `io::Error` returned by a [`Session`], if any.
pub fn session_error(e: &io::Error) -> Option<&SessionError> {
    e.get_ref()
        .and_then(|inner| inner.downcast_ref::<SessionError>())
}

fn io_error(e: SessionError) -> io::Error {
    let kind = match e.kind() {
        SessionErrorKind::Closed => io::ErrorKind::BrokenPipe,
        SessionErrorKind::Expired(_) | SessionErrorKind::ReconnectExhausted(_) => {
            io::ErrorKind::TimedOut
        }
        _ => io::ErrorKind::ConnectionAborted,
    };
    io::Error::new(kind, e)
}

impl Session {
    /// The session identifier issued by the server.
    pub fn id(&self) -> Option<SessionId> {
        self.shared.lock().core.credentials().map(|c| c.id)
    }

    /// Current counters.
    pub fn stats(&self) -> SessionStats {
        let st = self.shared.lock();
        SessionStats {
            protocol: st.core.stats(),
            connect_attempts: st.connect_attempts,
        }
    }

    /// How far both streams got: bytes written, acknowledged by the peer,
    /// received. Readable at any time, also after the session failed (the
    /// [`SessionError`] carries the same figures).
    pub fn delivery(&self) -> Delivery {
        self.shared.lock().core.delivery()
    }

    /// Ends the session at once: no further reconnect, no further read or
    /// write (each returns [`SessionErrorKind::Aborted`]), bytes not yet
    /// acknowledged are dropped. If a transport is established the peer is
    /// told (its session fails with [`SessionErrorKind::PeerAborted`]);
    /// connection attempts in flight are dropped. Dropping the session
    /// after `abort` stops its driver task outright.
    pub fn abort(&mut self) {
        let mut st = self.shared.lock();
        st.core.abort();
        st.wake_app();
        drop(st);
        self.shared.driver.notify_one();
        self.shared.client.notify_one();
    }

    /// Writes `data` without copying it (buffers of 4 KiB and more are kept
    /// as they are in the replay buffer; smaller ones are copied and
    /// coalesced). Waits while the replay buffer is full, like `write_all`.
    ///
    /// ```no_run
    /// # async fn f(session: &mut netmend::session::Session) -> std::io::Result<()> {
    /// let frame = bytes::Bytes::from(vec![0u8; 1 << 20]);
    /// session.write_bytes(frame).await?; // no copy of the megabyte
    /// # Ok(()) }
    /// ```
    ///
    /// # Errors
    ///
    /// The session's [`SessionError`] (see [`session_error`]) once it failed.
    ///
    /// # Cancel safety
    ///
    /// Not cancel safe: if the future is dropped, a prefix of `data` may
    /// already be in the session (see [`Session::delivery`]`.written`).
    pub async fn write_bytes(&mut self, mut data: Bytes) -> io::Result<()> {
        std::future::poll_fn(|cx| {
            let mut st = self.shared.lock();
            if let Some(e) = st.terminal_error() {
                return Poll::Ready(Err(io_error(e)));
            }
            let n = st.core.write_bytes(&mut data).map_err(io_error)?;
            if n > 0 && st.core.is_durable() {
                self.shared.persist.notify_one();
            }
            let wake = n > 0 && std::mem::take(&mut st.wake_on_write);
            let done = data.is_empty();
            if !done {
                st.write_waker = Some(cx.waker().clone());
            }
            drop(st);
            if wake {
                self.shared.driver.notify_one();
            }
            if done {
                Poll::Ready(Ok(()))
            } else {
                Poll::Pending
            }
        })
        .await
    }

    /// Takes the session out of this process, to go on in another
    /// ([`SessionBuilder::attach`](super::SessionBuilder::attach)): the
    /// driver stops at a frame boundary — every frame it took is written,
    /// nothing more is taken or read — and hands back the live transport
    /// with the session's state sealed under `key`. Between transports
    /// (reconnecting), it detaches without one; the other process then
    /// resumes. Nothing is sent to the server: it sees a transport go
    /// quiet, at most for `Config::dead_after` before it would give up on
    /// that transport (it keeps the session for `Config::idle_expiry`).
    ///
    /// ```no_run
    /// # async fn f(session: netmend::session::Session) -> Result<(), Box<dyn std::error::Error>> {
    /// use netmend::session::StateKey;
    /// let key = StateKey::generate()?; // the new process gets it too
    /// let mut detached = session.detach(&key).await?;
    /// let transport: Option<tokio::net::TcpStream> = detached.take_transport();
    /// // hand `transport` and `detached.state()` to the new process
    /// # Ok(()) }
    /// ```
    ///
    /// # Errors
    ///
    /// The session had failed or was aborted (its error); a session that
    /// was never established, or a server session
    /// ([`SessionErrorKind::Protocol`]).
    ///
    /// # Cancel safety
    ///
    /// Not cancel safe: once called, the session stops in this process even
    /// if the future is dropped; its state is then lost with it.
    pub async fn detach(mut self, key: &StateKey) -> Result<Detached, SessionError> {
        {
            let mut st = self.shared.lock();
            if let Some(e) = st.terminal_error() {
                return Err(e);
            }
            st.detach = DetachSlot::Requested;
        }
        self.shared.driver.notify_one();
        self.shared.client.notify_one();
        let done = std::future::poll_fn(|cx| {
            let mut st = self.shared.lock();
            match std::mem::take(&mut st.detach) {
                DetachSlot::Done(state, transport) => {
                    return Poll::Ready(Ok((state, transport)));
                }
                other => st.detach = other,
            }
            if let Some(e) = st.terminal_error() {
                return Poll::Ready(Err(e));
            }
            st.write_waker = Some(cx.waker().clone());
            Poll::Pending
        })
        .await;
        // The driver is gone; the handle must not close anything on drop.
        if let Some(task) = self.driver.take() {
            task.abort();
        }
        let (state, transport) = done?;
        Ok(Detached::new(state.seal(key), transport))
    }

    /// The error that ended the session, if one did.
    pub fn error(&self) -> Option<SessionError> {
        self.shared.lock().core.error().cloned()
    }
}

impl AsyncRead for Session {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let mut st = self.shared.lock();
        let n = st.core.read(buf.initialize_unfilled());
        if st.core.is_durable() {
            // Reading again committed what earlier reads returned.
            self.shared.persist.notify_one();
        }
        if n > 0 {
            buf.advance(n);
            // The read opened the receive window: the update must go out.
            let wake = st.core.take_window_news();
            drop(st);
            if wake {
                self.shared.driver.notify_one();
            }
            return Poll::Ready(Ok(()));
        }
        if st.core.recv_complete() {
            return Poll::Ready(Ok(()));
        }
        if let Some(e) = st.terminal_error() {
            return Poll::Ready(Err(io_error(e)));
        }
        st.read_waker = Some(cx.waker().clone());
        Poll::Pending
    }
}

impl AsyncWrite for Session {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<io::Result<usize>> {
        let mut st = self.shared.lock();
        if let Some(e) = st.terminal_error() {
            return Poll::Ready(Err(io_error(e)));
        }
        match st.core.write(data) {
            Err(e) => Poll::Ready(Err(io_error(e))),
            Ok(0) if !data.is_empty() => {
                st.write_waker = Some(cx.waker().clone());
                Poll::Pending
            }
            Ok(n) => {
                if st.core.is_durable() {
                    self.shared.persist.notify_one();
                }
                let wake = std::mem::take(&mut st.wake_on_write);
                drop(st);
                if wake {
                    self.shared.driver.notify_one();
                }
                Poll::Ready(Ok(n))
            }
        }
    }

    fn poll_flush(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let mut st = self.shared.lock();
        // Only the first call has news for the driver; notifying on every
        // poll would ping-pong with the driver waking us.
        let newly_finished = st.core.finish();
        if newly_finished && st.core.is_durable() {
            self.shared.persist.notify_one();
        }
        if st.core.send_complete() {
            return Poll::Ready(Ok(()));
        }
        if let Some(e) = st.terminal_error() {
            return Poll::Ready(Err(io_error(e)));
        }
        st.write_waker = Some(cx.waker().clone());
        drop(st);
        if newly_finished {
            self.shared.driver.notify_one();
        }
        Poll::Pending
    }
}

impl Drop for Session {
    fn drop(&mut self) {
        let mut st = self.shared.lock();
        st.handle_dropped = true;
        let aborted = matches!(
            st.core.error().map(SessionError::kind),
            Some(SessionErrorKind::Aborted)
        );
        st.core.finish();
        st.core.discard_incoming();
        drop(st);
        if aborted {
            if let Some(task) = self.driver.take() {
                task.abort();
            }
        }
        self.shared.driver.notify_one();
        self.shared.client.notify_one();
        // Dropping committed what was received (and ended the stream).
        self.shared.persist.notify_one();
    }
}
