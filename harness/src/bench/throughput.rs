//! `netmend bench throughput`: bulk transfer over each transport a user
//! could carry a stream on, side by side in one run — raw TCP, a netmend
//! session through both of its write paths (`write_bytes`: owned buffers
//! kept by reference; `AsyncWrite::write_all`: the caller's bytes copied
//! into the replay buffer), Multipath TCP (one subflow: what it costs when
//! nothing fails) and QUIC (quinn, one stream, TLS 1.3) — over loopback and
//! over the netns lab (client and server namespaces through the router's
//! veth links, no added latency).
//!
//! Each round moves `total` bytes in 64 KiB writes over a new connection
//! (connect, transfer, the server's close after the last byte), for every
//! transport and path in turn, so the machine's noise falls on all alike;
//! the figures are medians over the rounds.

use crate::backend::netns::host::HostTask;
use crate::backend::netns::lab::{Lab, LabSpec};
use crate::backend::netns::LabError;
use crate::workload::peers::quic;
use netmend::session::{Accepted, Acceptor, Config, SessionBuilder};
use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::mpsc;
use std::time::{Duration, Instant};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

/// Bytes per write.
const CHUNK: usize = 64 << 10;

/// QUIC's keepalive and idle timeout in the bench: long enough never to
/// matter.
const QUIC_IDLE: (Duration, Duration) = (Duration::from_secs(1), Duration::from_secs(30));

/// A transport of the bench.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Transport {
    /// A `TcpStream`.
    Tcp,
    /// A netmend session, written with `Session::write_bytes`.
    SessionWriteBytes,
    /// A netmend session, written with `AsyncWrite::write_all`.
    SessionWriteAll,
    /// An `IPPROTO_MPTCP` stream (one subflow).
    Mptcp,
    /// One quinn stream.
    Quic,
}

impl Transport {
    /// Every transport, in the order of the report.
    pub const ALL: [Transport; 5] = [
        Transport::Tcp,
        Transport::SessionWriteBytes,
        Transport::SessionWriteAll,
        Transport::Mptcp,
        Transport::Quic,
    ];

    /// Its name in the report.
    pub fn name(self) -> &'static str {
        match self {
            Transport::Tcp => "raw TCP",
            Transport::SessionWriteBytes => "session write_bytes",
            Transport::SessionWriteAll => "session write_all",
            Transport::Mptcp => "MPTCP",
            Transport::Quic => "QUIC (quinn)",
        }
    }

    /// The sinks' port of this transport.
    fn port(self) -> u16 {
        match self {
            Transport::Tcp => 7101,
            Transport::SessionWriteBytes | Transport::SessionWriteAll => 7102,
            Transport::Mptcp => 7103,
            Transport::Quic => 7104,
        }
    }
}

/// Where the bytes go.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Path {
    /// The client's own loopback.
    Loopback,
    /// From the client's namespace through the router to the server's.
    Lab,
}

impl Path {
    /// Both paths, in the order of the report.
    pub const ALL: [Path; 2] = [Path::Loopback, Path::Lab];

    /// Its name in the report.
    pub fn name(self) -> &'static str {
        match self {
            Path::Loopback => "loopback",
            Path::Lab => "netns lab",
        }
    }
}

/// One transport's figure on one path.
#[derive(Clone, Debug)]
pub struct Figure {
    /// The transport.
    pub transport: Transport,
    /// The path.
    pub path: Path,
    /// Median time of a round (connect, transfer, close).
    pub median: Duration,
    /// `total` bytes over the median time, in MiB/s.
    pub mib_per_s: f64,
}

/// Runs `rounds` rounds of `total` bytes over every transport and path.
///
/// # Errors
///
/// The lab could not be built, a sink or the client could not start, or a
/// transfer failed (a message says which).
pub fn run(total: usize, rounds: usize) -> Result<Vec<Figure>, String> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| format!("runtime: {e}"))?;
    let lab = runtime
        .block_on(Lab::build(&LabSpec {
            router: "router".into(),
            hosts: vec!["client".into(), "server".into()],
        }))
        .map_err(|e| e.to_string())?;
    // The loopback path is the client's own `lo`, down in a new namespace.
    let measured = runtime
        .block_on(lab.set_link_up("client", "lo", true))
        .map_err(|e| e.to_string())
        .and_then(|()| measure(&lab, total, rounds));
    lab.teardown();
    let times = measured?;
    Ok(Path::ALL
        .iter()
        .flat_map(|&path| Transport::ALL.iter().map(move |&t| (path, t)))
        .map(|(path, transport)| {
            let mut v: Vec<Duration> = times
                .iter()
                .filter(|(p, t, _)| *p == path && *t == transport)
                .map(|(_, _, d)| *d)
                .collect();
            v.sort_unstable();
            let median = v.get(v.len() / 2).copied().unwrap_or_default();
            Figure {
                transport,
                path,
                median,
                mib_per_s: total as f64 / f64::from(1u32 << 20) / median.as_secs_f64().max(1e-9),
            }
        })
        .collect())
}

fn measure(
    lab: &Lab,
    total: usize,
    rounds: usize,
) -> Result<Vec<(Path, Transport, Duration)>, String> {
    let lab_err = |e: LabError| e.to_string();
    // Sinks on both hosts: the client's own serve its loopback.
    let _sinks = ["server", "client"]
        .into_iter()
        .map(|host| {
            HostTask::spawn(
                lab.namespace(host).map_err(lab_err)?,
                &format!("sinks-{host}"),
                || {
                    let sinks = Sinks::bind()?;
                    Ok(sinks.serve())
                },
            )
            .map_err(lab_err)
        })
        .collect::<Result<Vec<_>, String>>()?;
    let server = lab.attachment("server").map_err(lab_err)?.host_v4();
    let (tx, rx) = mpsc::channel();
    let client = HostTask::spawn(
        lab.namespace("client").map_err(lab_err)?,
        "bench-client",
        move || {
            Ok(async move {
                let result = rounds_of(server.into(), total, rounds).await;
                let _ = tx.send(result);
            })
        },
    )
    .map_err(lab_err)?;
    let result = rx
        .recv()
        .map_err(|_| "the bench client stopped without a result".to_string());
    client.stop().map_err(lab_err)?;
    result?
}

/// The client's rounds: every path and transport in turn, each round.
async fn rounds_of(
    server: IpAddr,
    total: usize,
    rounds: usize,
) -> Result<Vec<(Path, Transport, Duration)>, String> {
    let quic = quic::client_config(QUIC_IDLE)
        .and_then(|config| {
            let socket = std::net::UdpSocket::bind(quic::any_port())?;
            socket.set_nonblocking(true)?;
            Ok((config, quic::endpoint(socket, None)?))
        })
        .map_err(|e| format!("the QUIC client: {e}"))?;
    let data = vec![0x5au8; CHUNK];
    let mut out = Vec::new();
    for _ in 0..rounds {
        for path in Path::ALL {
            let ip = match path {
                Path::Loopback => IpAddr::V4(Ipv4Addr::LOCALHOST),
                Path::Lab => server,
            };
            for transport in Transport::ALL {
                let to = SocketAddr::new(ip, transport.port());
                let started = Instant::now();
                transfer(transport, to, total, &data, &quic)
                    .await
                    .map_err(|e| format!("{} over {}: {e}", transport.name(), path.name()))?;
                out.push((path, transport, started.elapsed()));
            }
        }
    }
    Ok(out)
}

/// One round of one transport: connect, send `total` bytes, and wait for
/// the server's close after the last.
async fn transfer(
    transport: Transport,
    to: SocketAddr,
    total: usize,
    data: &[u8],
    (quic_config, quic_endpoint): &(quinn::ClientConfig, quinn::Endpoint),
) -> io::Result<()> {
    match transport {
        Transport::Tcp => {
            let s = tokio::net::TcpStream::connect(to).await?;
            s.set_nodelay(true)?;
            bulk(s, total, data).await
        }
        Transport::Mptcp => {
            let socket = socket2::Socket::new(
                socket2::Domain::for_address(to),
                socket2::Type::STREAM,
                Some(socket2::Protocol::MPTCP),
            )?;
            socket.set_nonblocking(true)?;
            let s = tokio::net::TcpSocket::from_std_stream(socket.into())
                .connect(to)
                .await?;
            s.set_nodelay(true)?;
            bulk(s, total, data).await
        }
        Transport::SessionWriteAll | Transport::SessionWriteBytes => {
            let mut session = SessionBuilder::new()
                .connect(move || async move {
                    let s = tokio::net::TcpStream::connect(to).await?;
                    s.set_nodelay(true)?;
                    Ok(s)
                })
                .await
                .map_err(io::Error::other)?;
            if transport == Transport::SessionWriteAll {
                return bulk(session, total, data).await;
            }
            // Owned buffers: the replay buffer keeps a reference.
            let owned = bytes::Bytes::copy_from_slice(data);
            for _ in 0..total / data.len() {
                session.write_bytes(owned.clone()).await?;
            }
            finish(session).await
        }
        Transport::Quic => {
            let connection = quic_endpoint
                .connect_with(quic_config.clone(), to, quic::SERVER_NAME)
                .map_err(io::Error::other)?
                .await?;
            let (send, recv) = connection.open_bi().await?;
            bulk(tokio::io::join(recv, send), total, data).await
        }
    }
}

/// Writes `total` bytes in `data`-sized writes, then finishes.
async fn bulk<S: AsyncRead + AsyncWrite + Unpin>(
    mut s: S,
    total: usize,
    data: &[u8],
) -> io::Result<()> {
    for _ in 0..total / data.len() {
        s.write_all(data).await?;
    }
    finish(s).await
}

/// Closes the sending side and waits for the server's close: the server
/// closes after the last byte (a session's shutdown also waits for the
/// server to acknowledge every byte).
async fn finish<S: AsyncRead + AsyncWrite + Unpin>(mut s: S) -> io::Result<()> {
    s.shutdown().await?;
    let mut rest = [0u8; 64];
    while s.read(&mut rest).await? > 0 {}
    Ok(())
}

/// A host's sinks: each reads every connection to its end, then closes it.
struct Sinks {
    tcp: tokio::net::TcpListener,
    session: tokio::net::TcpListener,
    mptcp: tokio::net::TcpListener,
    quic: quinn::Endpoint,
}

impl Sinks {
    /// Binds every sink (dual-stack wildcard) on the calling thread, so in
    /// its namespace.
    fn bind() -> io::Result<Sinks> {
        let any = |port| SocketAddr::new(Ipv6Addr::UNSPECIFIED.into(), port);
        let tcp = |port| -> io::Result<tokio::net::TcpListener> {
            let l = std::net::TcpListener::bind(any(port))?;
            l.set_nonblocking(true)?;
            tokio::net::TcpListener::from_std(l)
        };
        let mptcp = {
            let socket = socket2::Socket::new(
                socket2::Domain::IPV6,
                socket2::Type::STREAM,
                Some(socket2::Protocol::MPTCP),
            )?;
            socket.set_only_v6(false)?;
            socket.set_reuse_address(true)?;
            socket.bind(&any(Transport::Mptcp.port()).into())?;
            socket.listen(128)?;
            socket.set_nonblocking(true)?;
            tokio::net::TcpListener::from_std(socket.into())?
        };
        let udp = std::net::UdpSocket::bind(any(Transport::Quic.port()))?;
        udp.set_nonblocking(true)?;
        Ok(Sinks {
            tcp: tcp(Transport::Tcp.port())?,
            session: tcp(Transport::SessionWriteBytes.port())?,
            mptcp,
            quic: quic::endpoint(udp, Some(quic::server_config(QUIC_IDLE)?))?,
        })
    }

    async fn serve(self) {
        let Sinks {
            tcp,
            session,
            mptcp,
            quic,
        } = self;
        let acceptor = match Acceptor::new(Config::default()) {
            Ok(a) => a,
            Err(e) => return tracing::warn!(error = %e, "bench: no session acceptor"),
        };
        let streams = |l: tokio::net::TcpListener| async move {
            while let Ok((s, _)) = l.accept().await {
                let _ = s.set_nodelay(true);
                tokio::spawn(drain(s));
            }
        };
        let sessions = async move {
            while let Ok((s, _)) = session.accept().await {
                let _ = s.set_nodelay(true);
                let acceptor = acceptor.clone();
                tokio::spawn(async move {
                    if let Ok(Accepted::New(session)) = acceptor.accept(s).await {
                        drain(session).await;
                    }
                });
            }
        };
        let quic_connections = async move {
            while let Some(incoming) = quic.accept().await {
                tokio::spawn(async move {
                    let Ok(connection) = incoming.await else {
                        return;
                    };
                    if let Ok((send, recv)) = connection.accept_bi().await {
                        drain(tokio::io::join(recv, send)).await;
                    }
                    // Until the client has the close, and closes itself.
                    connection.closed().await;
                });
            }
        };
        tokio::join!(streams(tcp), streams(mptcp), sessions, quic_connections);
    }
}

/// Reads `s` to its end, then closes it.
async fn drain<S: AsyncRead + AsyncWrite + Unpin>(mut s: S) {
    let mut buf = vec![0u8; CHUNK];
    while let Ok(n) = s.read(&mut buf).await {
        if n == 0 {
            break;
        }
    }
    let _ = s.shutdown().await;
}
