//! What a client session tells its application about its transports.

use super::error::SessionError;
use crate::monitor::DefaultRoute;
use crate::reconnect::{AttemptFailure, OutageCause};
use std::fmt;
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// Something that happened to a client session's transports. Handlers get
/// them in order, on the session's driver task
/// ([`SessionBuilder::on_event`](super::SessionBuilder::on_event)).
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum SessionEvent {
    /// The session's first transport is established.
    Connected {
        /// Attempts it took.
        attempts: u32,
    },
    /// The session lost its transport and is reconnecting.
    Reconnecting {
        /// Why the transport was lost.
        why: OutageCause,
    },
    /// One reconnect attempt failed.
    AttemptFailed {
        /// Its number in this outage, from 1.
        attempt: u32,
        /// Why it failed.
        cause: AttemptFailure,
    },
    /// The session resumed on a new transport; no byte was lost.
    Resumed {
        /// How long it had no transport.
        outage: Duration,
        /// Attempts it took.
        attempts: u32,
    },
    /// The network monitor decided the path changed.
    PathChanged {
        /// The default route before (IPv4 first, else IPv6).
        from: Option<DefaultRoute>,
        /// The default route after.
        to: Option<DefaultRoute>,
    },
    /// The session left a transport on the old path to reconnect on the new
    /// one.
    Rebound {
        /// The default route it left.
        from: Option<DefaultRoute>,
        /// The default route it moves to.
        to: Option<DefaultRoute>,
    },
    /// The segment size the session's next transports ask for changed
    /// ([`TransportHint`](super::TransportHint)): clamped after data went
    /// unacknowledged while the peer's small frames arrived (a suspected
    /// MTU black hole), or raised again after
    /// [`Config::segment_probe_interval`](super::Config::segment_probe_interval).
    SegmentSize {
        /// The new limit; `None`: the system's choice.
        max_segment: Option<u16>,
    },
    /// The session failed; nothing more will happen.
    Failed(SessionError),
}

type Handler = Box<dyn FnMut(&SessionEvent) + Send>;

/// A shared event handler (the builder is `Clone`).
#[derive(Clone)]
pub(crate) struct EventHandler(Arc<Mutex<Handler>>);

impl EventHandler {
    pub(crate) fn new(f: impl FnMut(&SessionEvent) + Send + 'static) -> Self {
        EventHandler(Arc::new(Mutex::new(Box::new(f))))
    }

    pub(crate) fn call(&self, e: &SessionEvent) {
        let mut f = self.0.lock().unwrap_or_else(|e| e.into_inner());
        f(e);
    }
}

impl fmt::Debug for EventHandler {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("EventHandler")
    }
}
