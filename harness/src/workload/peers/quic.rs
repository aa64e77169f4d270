//! The QUIC peers: the stream over one bidirectional quinn stream per
//! connection, resumed from the server's count as the TCP peers resume.
//!
//! A QUIC connection is named by connection IDs, not by its addresses: when
//! the client's datagrams arrive from a new address the server validates
//! the path and carries on (RFC 9000, section 9). So a client whose
//! address changed needs to do nothing; one whose address stayed but whose
//! path forgot it can move to a new port (`Endpoint::rebind`). The `quic`
//! peer rebinds on every path change the engine's monitor reports; the
//! `quic-no-rebind` peer never does. Both keep the connection alive at the
//! engine's keepalive interval and give it up after the engine's dead-path
//! timeout (QUIC's idle timeout), then reconnect with the same backoff as
//! every peer.
//!
//! The server's certificate is made once per process (rcgen) and trusted
//! by the peers' clients alone: TLS is verified as a deployment would.

use super::{connect_to_name, resuming_client, serve, Dial, Held, Settings};
use crate::workload::programs::{AbortOnDrop, Net, StreamSpec};
use crate::workload::Recorder;
use netmend::monitor::Monitor;
use std::io;
use std::net::{Ipv6Addr, SocketAddr};
use std::sync::{Arc, OnceLock};
use std::time::Duration;
use tokio::io::AsyncReadExt;

/// The name the server's certificate is for.
pub(crate) const SERVER_NAME: &str = "netmend-peer.test";

/// The byte with which a client opens its stream: a QUIC stream reaches
/// the server with its first byte, and the server speaks first.
const HELLO: u8 = 0x4e;

/// What the QUIC client does when the monitor reports a path change.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum OnPathChange {
    /// Moves the endpoint to a new UDP socket (a new port).
    Rebind,
    /// Nothing: the server follows a new address by itself.
    Nothing,
}

/// The server's certificate and key, made once per process.
struct Identity {
    cert: rustls::pki_types::CertificateDer<'static>,
    key: rustls::pki_types::PrivatePkcs8KeyDer<'static>,
}

fn identity() -> io::Result<&'static Identity> {
    static IDENTITY: OnceLock<Result<Identity, String>> = OnceLock::new();
    IDENTITY
        .get_or_init(|| {
            let made = rcgen::generate_simple_self_signed(vec![SERVER_NAME.to_string()])
                .map_err(|e| format!("making the QUIC peer's certificate: {e}"))?;
            Ok(Identity {
                cert: made.cert.der().clone(),
                key: rustls::pki_types::PrivatePkcs8KeyDer::from(made.signing_key.serialize_der()),
            })
        })
        .as_ref()
        .map_err(|e| io::Error::other(e.clone()))
}

/// Keepalive at the engine's interval; the connection given up after the
/// engine's dead-path timeout without a word from the other end.
fn transport(
    (keepalive, dead_after): (Duration, Duration),
) -> io::Result<Arc<quinn::TransportConfig>> {
    let idle = quinn::IdleTimeout::try_from(dead_after).map_err(|e| {
        io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("a dead-path timeout of {dead_after:?} as QUIC's idle timeout: {e}"),
        )
    })?;
    let mut t = quinn::TransportConfig::default();
    t.keep_alive_interval(Some(keepalive))
        .max_idle_timeout(Some(idle));
    Ok(Arc::new(t))
}

/// The QUIC peers' client configuration: the peer server's certificate
/// trusted, keepalive and idle timeout as `idle` (interval, timeout) says.
pub(crate) fn client_config(idle: (Duration, Duration)) -> io::Result<quinn::ClientConfig> {
    let mut roots = rustls::RootCertStore::empty();
    roots
        .add(identity()?.cert.clone())
        .map_err(|e| io::Error::other(format!("trusting the QUIC peer's certificate: {e}")))?;
    let mut config = quinn::ClientConfig::with_root_certificates(Arc::new(roots))
        .map_err(|e| io::Error::other(format!("the QUIC client's TLS: {e}")))?;
    config.transport_config(transport(idle)?);
    Ok(config)
}

/// The QUIC peers' server configuration: the certificate, keepalive and
/// idle timeout as `idle` (interval, timeout) says.
pub(crate) fn server_config(idle: (Duration, Duration)) -> io::Result<quinn::ServerConfig> {
    let id = identity()?;
    let mut config =
        quinn::ServerConfig::with_single_cert(vec![id.cert.clone()], id.key.clone_key().into())
            .map_err(|e| io::Error::other(format!("the QUIC server's TLS: {e}")))?;
    config.transport_config(transport(idle)?);
    Ok(config)
}

/// A dual-stack wildcard address: IPv4 servers are reached through mapped
/// addresses (quinn maps them).
pub(crate) fn any_port() -> SocketAddr {
    SocketAddr::new(Ipv6Addr::UNSPECIFIED.into(), 0)
}

/// A quinn endpoint on `socket` (a server's with `server`).
pub(crate) fn endpoint(
    socket: std::net::UdpSocket,
    server: Option<quinn::ServerConfig>,
) -> io::Result<quinn::Endpoint> {
    quinn::Endpoint::new(
        quinn::EndpointConfig::default(),
        server,
        socket,
        Arc::new(quinn::TokioRuntime),
    )
}

/// A connection's stream: its receiving half read, its sending half
/// written (each holds the connection open).
type QuicStream = tokio::io::Join<quinn::RecvStream, quinn::SendStream>;

/// The QUIC peer's connections, all from one endpoint (so a rebind moves
/// them all).
struct QuicDial<N> {
    net: N,
    host: String,
    port: u16,
    endpoint: quinn::Endpoint,
    config: quinn::ClientConfig,
    connect_timeout: Duration,
}

impl<N: Net> Dial for QuicDial<N> {
    type Stream = QuicStream;

    async fn dial(&mut self) -> io::Result<QuicStream> {
        let (endpoint, config) = (&self.endpoint, &self.config);
        connect_to_name(
            &self.net,
            (self.host.as_str(), self.port),
            self.connect_timeout,
            |addr| async move {
                let connection = endpoint
                    .connect_with(config.clone(), addr, SERVER_NAME)
                    .map_err(|e| io::Error::other(format!("connecting to {addr}: {e}")))?
                    .await?;
                let (mut send, recv) = connection.open_bi().await?;
                send.write_all(&[HELLO]).await?;
                Ok(tokio::io::join(recv, send))
            },
        )
        .await
    }
}

/// The QUIC peer's client: what it does on a path change is `on_change`.
pub async fn client<N: Net>(
    net: N,
    spec: StreamSpec,
    on_change: OnPathChange,
    settings: Settings,
    rec: Recorder,
) {
    let made = client_config((settings.keepalive, settings.dead_after)).and_then(|config| {
        let socket = net.udp_socket(any_port())?;
        Ok((config, endpoint(socket, None)?))
    });
    let (config, endpoint) = match made {
        Ok(made) => made,
        Err(e) => return rec.client_failed(format!("the QUIC client: {e}")),
    };
    // Rebinding follows the monitor beside the stream, and stops with it.
    let _follower = match on_change {
        OnPathChange::Nothing => None,
        OnPathChange::Rebind => match net.monitor(settings.debounce).await {
            Some(monitor) => Some(AbortOnDrop(tokio::spawn(rebind_on_path_change(
                net.clone(),
                endpoint.clone(),
                monitor,
                rec.clone(),
            )))),
            None => return rec.client_failed("the backend offers no network monitor".into()),
        },
    };
    let mut dial = QuicDial {
        net: net.clone(),
        host: spec.host.clone(),
        port: spec.port,
        endpoint,
        config,
        connect_timeout: settings.backoff.connect_timeout,
    };
    resuming_client(&net, &spec, &mut dial, settings.backoff, &rec).await;
}

/// Moves `endpoint` to a new UDP socket on every path change `monitor`
/// decides on: its connections continue from the new port, so a router
/// that forgot the old one sees a new flow.
async fn rebind_on_path_change<N: Net>(
    net: N,
    endpoint: quinn::Endpoint,
    monitor: Monitor,
    rec: Recorder,
) {
    let mut decisions = monitor.decisions();
    while let Some(change) = decisions.next().await {
        if !change.path_changed {
            continue;
        }
        let rebound = net
            .udp_socket(any_port())
            .and_then(|socket| endpoint.rebind(socket));
        match rebound {
            Ok(()) => rec.event(net.now(), "quic: rebound to a new UDP socket".into()),
            Err(e) => tracing::warn!(error = %e, "quic: rebinding failed"),
        }
    }
}

/// The QUIC peer's server on UDP `port`: each connection's streams served
/// as the TCP peers' connections are.
///
/// # Errors
///
/// The certificate, the socket or the endpoint could not be made.
pub async fn server<N: Net>(
    net: N,
    port: u16,
    total: u64,
    idle: (Duration, Duration),
    rec: Recorder,
) -> io::Result<()> {
    let config = server_config(idle)?;
    let socket = net.udp_socket(SocketAddr::new(Ipv6Addr::UNSPECIFIED.into(), port))?;
    let endpoint = endpoint(socket, Some(config))?;
    let held = Arc::new(Held::default());
    while let Some(incoming) = endpoint.accept().await {
        let (net, rec, held) = (net.clone(), rec.clone(), held.clone());
        tokio::spawn(async move {
            if let Err(e) = connection(&net, incoming, total, &rec, &held).await {
                tracing::debug!(error = %e, "quic peer server: connection ended");
            }
        });
    }
    Ok(())
}

/// One connection: each stream the client opens is served until the
/// connection ends (it stays open after the stream is whole, until the
/// client closes it, so the end of the stream is not lost to a close).
async fn connection<N: Net>(
    net: &N,
    incoming: quinn::Incoming,
    total: u64,
    rec: &Recorder,
    held: &Arc<Held>,
) -> io::Result<()> {
    let connection = incoming.await?;
    loop {
        let (send, mut recv) = connection.accept_bi().await?;
        let mut hello = [0u8; 1];
        AsyncReadExt::read_exact(&mut recv, &mut hello).await?;
        if hello[0] != HELLO {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                "not a peer's stream",
            ));
        }
        serve(net, tokio::io::join(recv, send), total, rec, held).await?;
    }
}
