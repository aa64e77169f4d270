//! The middlebox of the simulated path: a TCP relay the harness controls.
//!
//! turmoil has no API to inject a RST into a connection or to make a router
//! forget a flow, so the path runs through this relay host: client ↔ relay ↔
//! server. Dropping both relay sockets resets the connection (turmoil sends
//! RST for unread data and refuses later segments), and parking a pipe
//! without reading models a middlebox that silently lost the flow's state.

use crate::workload::programs::Net;
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};
use tokio::sync::watch;

/// What the middlebox does to traffic right now.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PathMode {
    /// Bumped by every reset: pipes born in an older epoch are torn down.
    pub epoch: u64,
    /// While true, the middlebox drops everything and forgets every flow it
    /// carries (those flows stay dead after it heals).
    pub blackhole: bool,
    /// Bumped when the path loses its flow state (a swap to another
    /// network, a new gateway): pipes born before are parked forever.
    pub forgotten: u64,
    /// While true, a captive portal answers every new flow itself (a
    /// redirect, then close) instead of relaying it.
    pub captive: bool,
}

/// Accepts connections on `port` and relays each to `target:port`.
pub async fn run<N: Net>(
    net: N,
    port: u16,
    target: String,
    mode: watch::Receiver<PathMode>,
) -> std::io::Result<()> {
    let listener = net.bind(port).await?;
    loop {
        let down = N::accept(&listener).await?;
        let (net, target, mode) = (net.clone(), target.clone(), mode.clone());
        tokio::spawn(async move { pipe(net, down, &target, port, mode).await });
    }
}

async fn pipe<N: Net>(
    net: N,
    down: N::Stream,
    target: &str,
    port: u16,
    mut mode: watch::Receiver<PathMode>,
) {
    let born = *mode.borrow_and_update();
    if born.blackhole {
        return park(down).await;
    }
    if born.captive {
        return crate::backend::portal::answer(down).await;
    }
    let Ok(up) = net.connect(target, port).await else {
        return; // dropping `down` closes it: the server is unreachable
    };
    let (mut dr, mut dw) = tokio::io::split(down);
    let (mut ur, mut uw) = tokio::io::split(up);
    let forward = async {
        tokio::join!(
            copy_then_close(&mut dr, &mut uw),
            copy_then_close(&mut ur, &mut dw)
        );
    };
    tokio::pin!(forward);
    loop {
        tokio::select! {
            _ = &mut forward => return,
            changed = mode.changed() => {
                let now = *mode.borrow_and_update();
                if changed.is_err() || now.epoch != born.epoch {
                    tracing::debug!("middlebox: resetting flow");
                    return; // halves drop: RST/FIN towards both ends
                }
                if now.blackhole || now.forgotten != born.forgotten {
                    tracing::debug!("middlebox: flow forgotten");
                    // Keep the sockets but never read or write again.
                    std::future::pending::<()>().await;
                }
            }
        }
    }
}

async fn park<S>(stream: S) {
    let _keep = stream;
    std::future::pending::<()>().await;
}

async fn copy_then_close<R, W>(r: &mut R, w: &mut W)
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
    let _ = tokio::io::copy(r, w).await;
    let _ = w.shutdown().await;
}
