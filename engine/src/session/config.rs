//! Tunables of a resumable session.

use std::time::Duration;

/// Parameters of a resumable session. `Config::default()` is tuned for
/// interactive and bulk traffic over paths with up to a few hundred ms RTT.
#[derive(Clone, Debug)]
pub struct Config {
    /// Bytes the sender keeps for replay until the peer acknowledges them.
    /// When full, writes wait (backpressure). Default 4 MiB.
    pub replay_capacity: usize,
    /// Bytes received but not yet read by the application before the session
    /// stops reading from the transport. Default 1 MiB.
    pub receive_buffer: usize,
    /// Largest frame payload accepted from the peer; a larger header closes
    /// the transport. Default 64 KiB.
    pub max_frame_payload: u32,
    /// Largest data frame this side sends. Default 64 KiB - 64; must not exceed
    /// `max_frame_payload - 8`.
    pub max_data_frame: usize,
    /// A keepalive goes out when nothing was sent for this long. Default 1 s.
    pub keepalive_interval: Duration,
    /// A transport on which nothing arrived for this long is declared dead
    /// and replaced. Default 4 s.
    pub dead_after: Duration,
    /// Time allowed for a transport's handshake. Default 3 s.
    pub handshake_timeout: Duration,
    /// Time allowed for the connector to yield a stream. Default 3 s.
    pub connect_timeout: Duration,
    /// Acknowledgements are delayed at most this long. Default 10 ms.
    pub ack_delay: Duration,
    /// An acknowledgement goes out at once after this many unacknowledged
    /// received bytes. Default 64 KiB.
    pub ack_every: u64,
    /// Server side: a session with no transport for this long expires.
    /// Default 60 s.
    pub idle_expiry: Duration,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            replay_capacity: 4 << 20,
            receive_buffer: 1 << 20,
            max_frame_payload: 64 << 10,
            max_data_frame: (64 << 10) - 64,
            keepalive_interval: Duration::from_secs(1),
            dead_after: Duration::from_secs(4),
            handshake_timeout: Duration::from_secs(3),
            connect_timeout: Duration::from_secs(3),
            ack_delay: Duration::from_millis(10),
            ack_every: 64 << 10,
            idle_expiry: Duration::from_secs(60),
        }
    }
}
