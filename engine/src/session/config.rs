//! Tunables of a resumable session.

use crate::validate::{at_least_1ms, ConfigError};
use std::time::Duration;

/// The largest data frame payload any peer may send, and so the least
/// every peer must accept: two peers with valid configurations always
/// understand each other's frames (a sender above a receiver's limit would
/// otherwise fail every transport and reconnect forever).
pub const MAX_DATA_FRAME: usize = (64 << 10) - 64;

/// The receive window every peer grants before it has said otherwise: a
/// sender may send this many bytes beyond what it knows the receiver's
/// application consumed until a window update arrives, so every receive
/// buffer must hold at least this much.
pub const INITIAL_WINDOW: usize = 64 << 10;

/// Upper bound of [`Config::max_frame_payload`]: what one frame may make a
/// receiver buffer.
pub const MAX_FRAME_PAYLOAD_LIMIT: u32 = 16 << 20;

/// Parameters of a resumable session. `Config::default()` is tuned for
/// interactive and bulk traffic over paths with up to a few hundred ms RTT.
///
/// `#[non_exhaustive]`: start from [`Config::default`] and set fields.
/// Checked by [`Config::validate`] when a session or acceptor is built.
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct Config {
    /// Bytes the sender keeps for replay until the peer acknowledges them.
    /// When full, writes wait (backpressure). At least 1. Default 4 MiB.
    pub replay_capacity: usize,
    /// The receive window: bytes received but not yet read by the
    /// application that the peer may send. The peer is told how far it may
    /// send (flow control), so the session keeps reading the transport —
    /// acknowledgements and keepalives go on, and a vanished peer is
    /// detected within `dead_after` — while the application does not read.
    /// At least [`INITIAL_WINDOW`]. Default 4 MiB, as `replay_capacity`: a
    /// peer draining what it wrote during an outage is not throttled below
    /// what it holds for replay (a smaller window costs recovery time on
    /// long paths, ~80 ms at 1 MiB on the sim's captive-portal scenario).
    /// A server with many sessions and an application that may stop
    /// reading sets it lower: it is what one session may hold unread.
    pub receive_buffer: usize,
    /// Largest frame payload accepted from the peer; a larger header closes
    /// the transport. Between [`MAX_DATA_FRAME`]` + 8` and
    /// [`MAX_FRAME_PAYLOAD_LIMIT`]. Default 64 KiB.
    pub max_frame_payload: u32,
    /// Largest data frame this side sends. Between 1 and [`MAX_DATA_FRAME`]
    /// (the default).
    pub max_data_frame: usize,
    /// A keepalive goes out when nothing was sent for this long. At least
    /// 1 ms. Default 1 s.
    pub keepalive_interval: Duration,
    /// A transport on which nothing arrived for this long is declared dead
    /// and replaced; so is one whose oldest unacknowledged data was sent
    /// this long ago (a path that passes keepalives but not data). Both
    /// wait at least the path's measured retransmission timeout (`SRTT +
    /// 4·RTTVAR`, RFC 6298), so a path that became slow is not taken for
    /// a dead one. Above `keepalive_interval`; `Duration::MAX` for never.
    /// Default 4 s.
    pub dead_after: Duration,
    /// Time allowed for a transport's handshake (at least the measured
    /// retransmission timeout, once there is one). At least 1 ms. Default
    /// 3 s.
    pub handshake_timeout: Duration,
    /// Time allowed for the connector to yield a stream (at least the
    /// measured retransmission timeout, once there is one). At least 1 ms.
    /// Default 3 s.
    pub connect_timeout: Duration,
    /// Acknowledgements are delayed at most this long (zero: at once).
    /// Default 10 ms.
    pub ack_delay: Duration,
    /// An acknowledgement goes out at once after this many unacknowledged
    /// received bytes (zero: after every data frame). Default 64 KiB.
    pub ack_every: u64,
    /// Server side: a session with no transport for this long expires.
    /// At least 1 ms. Default 60 s.
    pub idle_expiry: Duration,
    /// Client side: after a suspected MTU black hole (data unacknowledged
    /// while the peer's small frames arrive) the next transports ask for
    /// smaller segments ([`TransportHint`](super::TransportHint)); once
    /// this long passed, the next transport tries one size larger again
    /// (RFC 4821's periodic probing; Linux's `tcp_probe_interval` is the same
    /// 10 min). At least 1 ms; `Duration::MAX` for never. Default 10 min.
    pub segment_probe_interval: Duration,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            replay_capacity: 4 << 20,
            receive_buffer: 4 << 20,
            max_frame_payload: 64 << 10,
            max_data_frame: MAX_DATA_FRAME,
            keepalive_interval: Duration::from_secs(1),
            dead_after: Duration::from_secs(4),
            handshake_timeout: Duration::from_secs(3),
            connect_timeout: Duration::from_secs(3),
            ack_delay: Duration::from_millis(10),
            ack_every: 64 << 10,
            idle_expiry: Duration::from_secs(60),
            segment_probe_interval: Duration::from_secs(600),
        }
    }
}

impl Config {
    /// Checks every field against the bounds its documentation states.
    /// `Duration::MAX` is accepted wherever a duration is and means
    /// "never"; every deadline is computed with checked arithmetic.
    ///
    /// # Errors
    ///
    /// A [`ConfigError`] naming the first field that is refused.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.replay_capacity == 0 {
            return Err(ConfigError::new(
                "Config::replay_capacity",
                "must be at least 1 byte",
            ));
        }
        if self.receive_buffer < INITIAL_WINDOW {
            return Err(ConfigError::new(
                "Config::receive_buffer",
                format!(
                    "({}) must be at least {INITIAL_WINDOW} bytes, the window any peer may use before it is told the real one",
                    self.receive_buffer
                ),
            ));
        }
        let least = MAX_DATA_FRAME as u32 + 8;
        if !(least..=MAX_FRAME_PAYLOAD_LIMIT).contains(&self.max_frame_payload) {
            return Err(ConfigError::new(
                "Config::max_frame_payload",
                format!(
                    "({}) must be between {least} (what any peer may send) and {MAX_FRAME_PAYLOAD_LIMIT}",
                    self.max_frame_payload
                ),
            ));
        }
        if !(1..=MAX_DATA_FRAME).contains(&self.max_data_frame) {
            return Err(ConfigError::new(
                "Config::max_data_frame",
                format!(
                    "({}) must be between 1 and {MAX_DATA_FRAME} (what every peer accepts)",
                    self.max_data_frame
                ),
            ));
        }
        at_least_1ms("Config::keepalive_interval", self.keepalive_interval)?;
        if self.dead_after <= self.keepalive_interval {
            return Err(ConfigError::new(
                "Config::dead_after",
                format!(
                    "({:?}) must exceed keepalive_interval ({:?}), or a quiet but healthy path is declared dead",
                    self.dead_after, self.keepalive_interval
                ),
            ));
        }
        at_least_1ms("Config::handshake_timeout", self.handshake_timeout)?;
        at_least_1ms("Config::connect_timeout", self.connect_timeout)?;
        at_least_1ms("Config::idle_expiry", self.idle_expiry)?;
        at_least_1ms(
            "Config::segment_probe_interval",
            self.segment_probe_interval,
        )?;
        Ok(())
    }
}
