//! An in-memory server for driver tests on paused tokio time.

use crate::session::{Accepted, Acceptor, Config, Session};
use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use tokio::io::{AsyncReadExt, AsyncWriteExt, DuplexStream};
use tokio::sync::mpsc;

type Connect = Pin<Box<dyn Future<Output = io::Result<DuplexStream>> + Send>>;

/// An in-memory server: every connect is a duplex pipe handed to a real
/// acceptor, while `up`; refused otherwise. Counts connects.
#[derive(Clone)]
pub(crate) struct Server {
    pub(crate) acceptor: Acceptor,
    pub(crate) up: Arc<AtomicBool>,
    connects: Arc<AtomicU32>,
    /// The server end of the latest transport, to break it.
    last: Arc<Mutex<Option<tokio::task::AbortHandle>>>,
    /// Set: what the client sends on the latest transport vanishes.
    muted: Arc<Mutex<Arc<AtomicBool>>>,
    sessions: mpsc::Sender<Session>,
}

impl Server {
    pub(crate) fn new(config: Config) -> (Server, mpsc::Receiver<Session>) {
        Server::with_acceptor(Acceptor::new(config).expect("a valid server config"))
    }

    pub(crate) fn with_acceptor(acceptor: Acceptor) -> (Server, mpsc::Receiver<Session>) {
        let (tx, rx) = mpsc::channel(16);
        let server = Server {
            acceptor,
            up: Arc::new(AtomicBool::new(true)),
            connects: Arc::new(AtomicU32::new(0)),
            last: Arc::new(Mutex::new(None)),
            muted: Arc::default(),
            sessions: tx,
        };
        (server, rx)
    }

    pub(crate) fn connects(&self) -> u32 {
        self.connects.load(Ordering::SeqCst)
    }

    /// Breaks the live transport, as a reset would.
    pub(crate) fn reset(&self) {
        if let Some(h) = self.last.lock().unwrap().take() {
            h.abort();
        }
    }

    /// From now on, what the client sends on the live transport vanishes
    /// (the transport stays up); later transports are not affected.
    pub(crate) fn mute_client(&self) {
        self.muted.lock().unwrap().store(true, Ordering::SeqCst);
    }

    pub(crate) fn connector(&self) -> impl FnMut() -> Connect + Send + 'static {
        let s = self.clone();
        move || {
            let s = s.clone();
            Box::pin(async move {
                s.connects.fetch_add(1, Ordering::SeqCst);
                if !s.up.load(Ordering::SeqCst) {
                    return Err(io::ErrorKind::ConnectionRefused.into());
                }
                let (client, server) = tokio::io::duplex(256 << 10);
                let muted = Arc::new(AtomicBool::new(false));
                *s.muted.lock().unwrap() = Arc::clone(&muted);
                let (acceptor, sessions) = (s.acceptor.clone(), s.sessions.clone());
                // The transport lives in this task: aborting it is a reset.
                let relay = tokio::spawn(async move {
                    let (inner, outer) = tokio::io::duplex(256 << 10);
                    let accept = tokio::spawn(async move {
                        if let Ok(Accepted::New(session)) = acceptor.accept(outer).await {
                            let _ = sessions.send(session).await;
                        }
                    });
                    let (mut from_client, mut to_client) = tokio::io::split(server);
                    let (mut from_server, mut to_server) = tokio::io::split(inner);
                    let upstream = async {
                        let mut buf = vec![0u8; 16 << 10];
                        loop {
                            let n = from_client.read(&mut buf).await?;
                            if n == 0 {
                                return to_server.shutdown().await;
                            }
                            if !muted.load(Ordering::SeqCst) {
                                to_server.write_all(&buf[..n]).await?;
                            }
                        }
                    };
                    let downstream = tokio::io::copy(&mut from_server, &mut to_client);
                    let _: (io::Result<()>, io::Result<u64>) = tokio::join!(upstream, downstream);
                    drop(accept);
                });
                *s.last.lock().unwrap() = Some(relay.abort_handle());
                Ok(client)
            })
        }
    }
}
