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
//! not every system has such a search. As RFC 4821 section 7.7 asks, the
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

    proptest! {
        /// Over any history of transports (stalled or not) at any times:
        /// every hint is a step of the ladder or none; the size falls only
        /// after a stall of a transport opened at the current size, one
        /// step at a time; it rises only at a transport's start, one step,
        /// and only once `probe_interval` passed since it last moved; and
        /// a history without stalls never clamps.
        #[test]
        fn the_ladder_moves_one_step_at_a_time_for_a_reason(
            history in proptest::collection::vec((0u64..1_200_000, any::<bool>(), any::<bool>()), 0..60),
        ) {
            let probe = Duration::from_secs(300);
            let t0 = Instant::now();
            let mut c = SegmentClamp::new(probe);
            let mut now = t0;
            let mut last_move = None::<Instant>;
            let mut any_stall = false;
            for (gap_ms, stalled, ends) in history {
                now += Duration::from_millis(gap_ms);
                let before = c.hint(now).level();
                let hint = c.hint(now);
                prop_assert!(hint.max_segment.is_none() || SEGMENT_STEPS.contains(&hint.max_segment.unwrap_or(0)));
                let current = c.level;
                prop_assert!(before + 1 >= current && before <= current);
                if before < current {
                    prop_assert!(last_move.is_some_and(|m| now >= m + probe));
                }
                if let Some(raised) = c.handle_transport_opened(now, hint) {
                    prop_assert_eq!(raised.level(), current - 1);
                    last_move = Some(now);
                }
                if ends {
                    let opened = c.level;
                    let lowered = c.handle_transport_end(now, stalled);
                    any_stall |= stalled;
                    match lowered {
                        Some(h) => {
                            prop_assert!(stalled);
                            prop_assert_eq!(h.level(), opened + 1);
                            last_move = Some(now);
                        }
                        None => prop_assert!(!stalled || opened == SEGMENT_STEPS.len()),
                    }
                }
                if !any_stall {
                    prop_assert_eq!(c.hint(now), TransportHint::default());
                }
            }
        }
    }
}
