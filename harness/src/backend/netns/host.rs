//! A workload running on a thread inside a host's namespace, on its own
//! current-thread tokio runtime (so every socket it opens, and every task it
//! spawns, stays in that namespace).

use super::namespace::Namespace;
use super::LabError;
use std::future::Future;
use std::io;
use std::sync::mpsc;
use std::thread::JoinHandle;
use tokio::sync::oneshot;

/// A running host program; stopping or dropping it ends the program and
/// closes its sockets.
pub struct HostTask {
    name: String,
    stop: Option<oneshot::Sender<()>>,
    thread: Option<JoinHandle<()>>,
}

fn panic_message(payload: &(dyn std::any::Any + Send)) -> String {
    payload
        .downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| payload.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "unknown panic".into())
}

impl HostTask {
    /// Starts a thread in `ns`, calls `make` there (inside the runtime) and
    /// runs the future it returns. Returns once `make` has returned, with
    /// its error if it failed.
    pub fn spawn<F, Fut>(ns: &Namespace, name: &str, make: F) -> Result<HostTask, LabError>
    where
        F: FnOnce() -> io::Result<Fut> + Send + 'static,
        Fut: Future<Output = ()> + 'static,
    {
        let entry = ns.try_clone()?;
        let (ready_tx, ready_rx) = mpsc::channel::<Result<(), LabError>>();
        let (stop_tx, stop_rx) = oneshot::channel::<()>();
        let label = name.to_string();
        let thread = std::thread::Builder::new()
            .name(format!("nm-host-{name}"))
            .spawn(move || {
                let prepared = entry.enter_this_thread().and_then(|()| {
                    tokio::runtime::Builder::new_current_thread()
                        .enable_all()
                        .build()
                        .map_err(|e| LabError::io(format!("runtime for {label}"), e))
                });
                let runtime = match prepared {
                    Ok(rt) => rt,
                    Err(e) => {
                        let _ = ready_tx.send(Err(e));
                        return;
                    }
                };
                let program = {
                    let _entered = runtime.enter();
                    make()
                };
                let program = match program {
                    Ok(p) => {
                        let _ = ready_tx.send(Ok(()));
                        p
                    }
                    Err(e) => {
                        let _ = ready_tx.send(Err(LabError::io(format!("start {label}"), e)));
                        return;
                    }
                };
                runtime.block_on(async move {
                    tokio::select! {
                        () = program => {}
                        _ = stop_rx => {}
                    }
                });
            })
            .map_err(|e| LabError::io(format!("spawn the thread of {name}"), e))?;
        let mut task = HostTask {
            name: name.to_string(),
            stop: Some(stop_tx),
            thread: Some(thread),
        };
        match ready_rx.recv() {
            Ok(Ok(())) => Ok(task),
            Ok(Err(e)) => Err(e),
            Err(_) => Err(task
                .join()
                .err()
                .unwrap_or_else(|| LabError::Panicked(format!("the thread of {name}")))),
        }
    }

    /// Whether the program has ended (or panicked).
    pub fn is_finished(&self) -> bool {
        self.thread.as_ref().is_none_or(|t| t.is_finished())
    }

    /// Ends the program; reports a panic of the workload as an error.
    pub fn stop(mut self) -> Result<(), LabError> {
        self.join()
    }

    fn join(&mut self) -> Result<(), LabError> {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        match self.thread.take() {
            Some(t) => t.join().map_err(|payload| {
                LabError::Panicked(format!(
                    "the workload on {} ({})",
                    self.name,
                    panic_message(payload.as_ref())
                ))
            }),
            None => Ok(()),
        }
    }
}

impl Drop for HostTask {
    fn drop(&mut self) {
        let _ = self.join();
    }
}
