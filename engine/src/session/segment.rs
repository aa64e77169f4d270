//! Segment size of new transports after a suspected MTU black hole
//! (RFC 2923 section 2.1, RFC 4821).
//!
//! A path whose MTU is below what the endpoints assume (a tunnel, PPPoE, a
//! misconfigured link) drops full-size packets, and a router filtering
//! ICMP "fragmentation needed" / "packet too big" hides why: the handshake
//! and every small frame pass, bulk data vanishes. TCP retransmits the same
//! full-size segments for minutes. The session sees the sign — its data
//! goes unacknowledged while the peer's keepalives still arrive
//! ([`SessionCore::data_stall`](super::proto::SessionCore::data_stall)) —
//! and asks the transports it opens next for smaller segments
//! ([`TransportHint::max_segment`], `TCP_MAXSEG` before connect, which
//! also makes the peer send smaller segments back: it is the MSS the SYN
//! announces).
//!
//! Written here rather than left to the kernel: Linux searches for a
//! working segment size only with `net.ipv4.tcp_mtu_probing` set (off by
//! default, a system-wide setting an application cannot count on), and
//! not every system has such a search. As RFC 4821 asks of a search, the
//! clamp does not last for ever: once
//! [`Config::segment_probe_interval`](super::Config::segment_probe_interval)
//! passed, the next transport tries one size larger again, and a stall
//! brings it back down.

use std::io;
use std::time::{Duration, Instant};

/// The segment sizes the session steps down through, largest first:
/// 1220 bytes fit IPv6's minimum MTU of 1280 (RFC 8200 section 5) with the
/// IPv6 and TCP headers, so most tunnels; 536 is IPv4's default MSS, what
/// every IPv4 path carries (RFC 9293 section 3.7.1).
pub const SEGMENT_STEPS: [u16; 2] = [1220, 536];

/// How a connector should open the next transport, as the session advises
/// ([`Connector::connect_with_hint`](super::Connector::connect_with_hint)).
///
/// `#[non_exhaustive]`: read its fields; [`TransportHint::default`] is "as
/// the system chooses".
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub struct TransportHint {
    /// Largest TCP segment to send and announce (`TCP_MAXSEG` before
    /// connect), when the session suspects the path drops larger packets;
    /// `None`: the system's choice from the route's MTU.
    pub max_segment: Option<u16>,
}

impl TransportHint {
    /// A hint that clamps segments to `max_segment` bytes.
    pub fn clamped(max_segment: u16) -> Self {
        TransportHint {
            max_segment: Some(max_segment),
        }
    }

    /// Applies the hint to a TCP socket before it connects: sets
    /// `TCP_MAXSEG` when segments are clamped (on Unix; elsewhere the hint
    /// is ignored).
    ///
    /// ```no_run
    /// # async fn f(hint: netmend::session::TransportHint) -> std::io::Result<()> {
    /// let socket = tokio::net::TcpSocket::new_v4()?;
    /// hint.apply_to(&socket)?;
    /// let stream = socket.connect("198.18.0.2:7000".parse().unwrap()).await?;
    /// # Ok(()) }
    /// ```
    ///
    /// # Errors
    ///
    /// The error of `setsockopt`.
    pub fn apply_to(&self, socket: &tokio::net::TcpSocket) -> io::Result<()> {
        #[cfg(unix)]
        if let Some(mss) = self.max_segment {
            socket2::SockRef::from(socket).set_tcp_mss(u32::from(mss))?;
        }
        #[cfg(not(unix))]
        let _ = socket;
        Ok(())
    }

    /// Index in the ladder: 0 unclamped, `i + 1` for `SEGMENT_STEPS[i]`.
    fn level(self) -> usize {
        self.max_segment
            .and_then(|m| SEGMENT_STEPS.iter().position(|s| *s == m))
            .map_or(0, |i| i + 1)
    }

    fn at_level(level: usize) -> Self {
        TransportHint {
            max_segment: level
                .checked_sub(1)
                .and_then(|i| SEGMENT_STEPS.get(i))
                .copied(),
        }
    }
}

/// The segment size ladder of one client session (sans-IO: the driver
/// asks [`hint`](Self::hint) before each attempt and reports each
/// transport's start and end).
#[derive(Clone, Debug)]
pub(crate) struct SegmentClamp {
    probe_interval: Duration,
    /// 0: unclamped; `i + 1`: `SEGMENT_STEPS[i]`.
    level: usize,
    /// When the level last changed.
    since: Option<Instant>,
    /// The level the live transport opened with.
    live: Option<usize>,
}

impl SegmentClamp {
    /// Unclamped; a clamp is lifted one step at a time, each after
    /// `probe_interval` (`Duration::MAX`: never).
    pub fn new(probe_interval: Duration) -> Self {
        SegmentClamp {
            probe_interval,
            level: 0,
            since: None,
            live: None,
        }
    }

    /// The level a transport opened at `now` uses: the current one, or one
    /// step up once `probe_interval` passed since it was set.
    fn next_level(&self, now: Instant) -> usize {
        let due = self
            .since
            .and_then(|s| s.checked_add(self.probe_interval))
            .is_some_and(|t| now >= t);
        if self.level > 0 && due {
            self.level - 1
        } else {
            self.level
        }
    }

    /// How to open a transport started at `now`.
    pub fn hint(&self, now: Instant) -> TransportHint {
        TransportHint::at_level(self.next_level(now))
    }

    /// A transport opened with `hint` (as [`hint`](Self::hint) gave it for
    /// its attempt). Returns the new segment limit when this raised it (the
    /// probe of the next larger size, once due: if it stalls, the clamp
    /// comes back). A hint from before the clamp last fell (an attempt
    /// started earlier) is no probe and moves nothing.
    pub fn handle_transport_opened(
        &mut self,
        now: Instant,
        hint: TransportHint,
    ) -> Option<TransportHint> {
        let level = hint.level();
        self.live = Some(level);
        let probe = level + 1 == self.level && self.next_level(now) == level;
        probe.then(|| {
            self.level = level;
            self.since = Some(now);
            hint
        })
    }

    /// The path changed (another interface, gateway or address): its MTU
    /// is its own, so new transports start from the system's size again.
    /// Returns the new limit when this lifted a clamp.
    pub fn handle_path_changed(&mut self) -> Option<TransportHint> {
        let lifted = self.level > 0;
        self.level = 0;
        self.since = None;
        lifted.then(TransportHint::default)
    }

    /// The live transport ended; `stalled`: its data went unacknowledged
    /// while the peer's small frames arrived
    /// ([`SessionCore::data_stall`](super::proto::SessionCore::data_stall)).
    /// Returns the new segment limit when this lowered it.
    pub fn handle_transport_end(&mut self, now: Instant, stalled: bool) -> Option<TransportHint> {
        let opened = self.live.take()?;
        let lower = opened + 1;
        (stalled && lower <= SEGMENT_STEPS.len() && lower > self.level).then(|| {
            self.level = lower;
            self.since = Some(now);
            TransportHint::at_level(lower)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const PROBE: Duration = Duration::from_secs(600);

    /// Opens a transport at `now` with the hint of that moment and ends it.
    fn transport(c: &mut SegmentClamp, now: Instant, stalled: bool) -> TransportHint {
        let hint = c.hint(now);
        c.handle_transport_opened(now, hint);
        c.handle_transport_end(now, stalled);
        hint
    }

    #[test]
    fn a_stall_steps_down_once_per_transport_to_the_floor() {
        let t0 = Instant::now();
        let mut c = SegmentClamp::new(PROBE);
        assert_eq!(c.hint(t0), TransportHint::default());
        let hint = c.hint(t0);
        c.handle_transport_opened(t0, hint);
        assert_eq!(
            c.handle_transport_end(t0, true),
            Some(TransportHint::clamped(1220))
        );
        assert_eq!(transport(&mut c, t0, true), TransportHint::clamped(1220));
        assert_eq!(c.hint(t0), TransportHint::clamped(536));
        // The floor holds: a stall at 536 lowers nothing.
        let hint = c.hint(t0);
        c.handle_transport_opened(t0, hint);
        assert_eq!(c.handle_transport_end(t0, true), None);
        assert_eq!(c.hint(t0), TransportHint::clamped(536));
    }

    #[test]
    fn transports_that_end_otherwise_leave_the_size_alone() {
        let t0 = Instant::now();
        let mut c = SegmentClamp::new(PROBE);
        for _ in 0..5 {
            transport(&mut c, t0, false);
        }
        assert_eq!(c.hint(t0), TransportHint::default());
        // An end without a transport (a failed attempt) is no stall.
        assert_eq!(c.handle_transport_end(t0, true), None);
        assert_eq!(c.hint(t0), TransportHint::default());
    }

    #[test]
    fn the_clamp_is_lifted_one_step_per_probe_interval_and_returns_on_a_stall() {
        let t0 = Instant::now();
        let mut c = SegmentClamp::new(PROBE);
        transport(&mut c, t0, true);
        transport(&mut c, t0, true);
        assert_eq!(
            c.hint(t0 + PROBE - Duration::from_millis(1)),
            TransportHint::clamped(536)
        );
        let t1 = t0 + PROBE;
        let hint = c.hint(t1);
        assert_eq!(hint, TransportHint::clamped(1220));
        assert_eq!(c.handle_transport_opened(t1, hint), Some(hint));
        // The probe stalls: back to 536, for another interval.
        assert_eq!(
            c.handle_transport_end(t1, true),
            Some(TransportHint::clamped(536))
        );
        assert_eq!(c.hint(t1 + PROBE / 2), TransportHint::clamped(536));
        // A probe that works stays, and the next step waits its interval.
        let t2 = t1 + PROBE;
        transport(&mut c, t2, false);
        assert_eq!(c.hint(t2 + PROBE / 2), TransportHint::clamped(1220));
        assert_eq!(c.hint(t2 + PROBE), TransportHint::default());
    }

    #[test]
    fn a_hint_given_before_the_clamp_changed_is_judged_by_its_own_size() {
        // Two attempts were staggered: the first started unclamped, the
        // clamp fell meanwhile. A stall of the unclamped transport does not
        // lower the clamp twice.
        let t0 = Instant::now();
        let mut c = SegmentClamp::new(PROBE);
        transport(&mut c, t0, true);
        c.handle_transport_opened(t0, TransportHint::default());
        assert_eq!(c.handle_transport_end(t0, true), None);
        assert_eq!(c.hint(t0), TransportHint::clamped(1220));
    }

    #[test]
    fn never_is_never() {
        let t0 = Instant::now();
        let mut c = SegmentClamp::new(Duration::MAX);
        transport(&mut c, t0, true);
        assert_eq!(
            c.hint(t0 + Duration::from_secs(1 << 40)),
            TransportHint::clamped(1220)
        );
    }

    #[test]
    fn a_new_path_starts_unclamped() {
        let t0 = Instant::now();
        let mut c = SegmentClamp::new(PROBE);
        assert_eq!(c.handle_path_changed(), None);
        transport(&mut c, t0, true);
        assert_eq!(c.handle_path_changed(), Some(TransportHint::default()));
        assert_eq!(c.hint(t0), TransportHint::default());
        // And a stall there clamps from the top again.
        transport(&mut c, t0, true);
        assert_eq!(c.hint(t0), TransportHint::clamped(1220));
    }

    proptest! {
        /// Over any history of transports (stalled or not, ended or not),
        /// path changes and times, the ladder moves exactly as specified,
        /// checked against the times the test saw it move: a hint is one
        /// step above the current size exactly when `probe_interval`
        /// passed since the last move; opening with it is the move up; a
        /// stalled end lowers the size one step below the transport's own,
        /// down to the floor; nothing else moves it; a path change resets.
        #[test]
        fn the_ladder_moves_one_step_at_a_time_for_a_reason(
            history in proptest::collection::vec(
                (0u64..1_200_000, any::<bool>(), any::<bool>(), 0u8..20),
                0..80,
            ),
        ) {
            let probe = Duration::from_secs(300);
            let t0 = Instant::now();
            let mut c = SegmentClamp::new(probe);
            let mut now = t0;
            // The level and when it last moved, as seen from the outside.
            let mut level = 0usize;
            let mut moved: Option<Instant> = None;
            for (gap_ms, stalled, ends, path) in history {
                now += Duration::from_millis(gap_ms);
                if path == 0 {
                    let lifted = c.handle_path_changed();
                    prop_assert_eq!(lifted.is_some(), level > 0);
                    level = 0;
                    moved = None;
                }
                let hint = c.hint(now);
                let due = level > 0 && moved.is_some_and(|m| now >= m + probe);
                prop_assert_eq!(hint.level(), if due { level - 1 } else { level });
                prop_assert!(hint.max_segment.is_none_or(|m| SEGMENT_STEPS.contains(&m)));
                let raised = c.handle_transport_opened(now, hint);
                prop_assert_eq!(raised, due.then_some(hint));
                if due {
                    level -= 1;
                    moved = Some(now);
                }
                if ends {
                    let lowered = c.handle_transport_end(now, stalled);
                    let falls = stalled && hint.level() < SEGMENT_STEPS.len();
                    prop_assert_eq!(
                        lowered,
                        falls.then(|| TransportHint::at_level(hint.level() + 1))
                    );
                    if falls {
                        level = hint.level() + 1;
                        moved = Some(now);
                    }
                }
                prop_assert_eq!(c.hint(now).level(), level.saturating_sub(usize::from(
                    level > 0 && moved.is_some_and(|m| now >= m + probe)
                )));
            }
        }
    }
}
