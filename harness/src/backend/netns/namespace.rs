//! Named network namespaces the harness creates, enters and deletes.
//!
//! Written on `nix` rather than `rtnetlink::NetworkNamespace`, which forks a
//! child process per namespace: here a short-lived thread unshares its
//! network namespace and bind-mounts it under `/run/netns/<name>` (the same
//! place `ip netns` uses, so `ip netns exec nm-… ss -tn` works while a run is
//! paused in a debugger). Only a thread, never the process, changes
//! namespace, so the initial namespace is never touched.

use super::LabError;
use nix::mount::{mount, umount2, MntFlags, MsFlags};
use nix::sched::{setns, unshare, CloneFlags};
use std::fs::File;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, MutexGuard};

/// Namespace creation and the interrupt handler's sweep, one at a time: a
/// creation under way finishes (its name on disk, so the sweep finds it)
/// before the sweep reads the directory, and none starts after the sweep
/// began (`true`). Without it a SIGTERM that arrived while a lab was being
/// built left the namespace being made behind.
static CREATION: Mutex<bool> = Mutex::new(false);

/// Stops namespace creation for good (the process is being interrupted)
/// and holds it stopped while the caller sweeps: the returned guard
/// waits for a creation under way to finish first.
pub fn stop_creating() -> MutexGuard<'static, bool> {
    let mut gate = CREATION.lock().unwrap_or_else(|e| e.into_inner());
    *gate = true;
    gate
}

/// Where named namespaces live (as with `ip netns add`).
pub const NETNS_DIR: &str = "/run/netns";

/// Every namespace, link and table the harness creates starts with this.
pub const PREFIX: &str = "nm-";

/// A network namespace this harness created; deleted by [`Namespace::delete`]
/// (or by `netmend clean` if the process was killed).
#[derive(Debug)]
pub struct Namespace {
    name: String,
    file: File,
}

/// Identity of a network namespace: device and inode of its nsfs file.
fn identity(f: &File) -> std::io::Result<(u64, u64)> {
    let m = f.metadata()?;
    Ok((m.dev(), m.ino()))
}

/// Fails if `file` is the namespace this process started in or the one of
/// PID 1: the harness must never change either.
fn refuse_initial(file: &File) -> Result<(), LabError> {
    let me = identity(file).map_err(|e| LabError::io("stat a namespace", e))?;
    for path in ["/proc/self/ns/net", "/proc/1/ns/net"] {
        if let Ok(f) = File::open(path) {
            if identity(&f).ok() == Some(me) {
                return Err(LabError::InitialNamespace);
            }
        }
    }
    Ok(())
}

impl Namespace {
    /// Creates the namespace `name` (which must start with [`PREFIX`]) and
    /// runs `init` on a thread inside it before returning. `init` is where
    /// per-namespace sysctls are written and netlink sockets opened: both
    /// bind to the namespace of the thread that makes them.
    pub fn create<T: Send>(
        name: &str,
        init: impl FnOnce() -> Result<T, LabError> + Send,
    ) -> Result<(Namespace, T), LabError> {
        if !name.starts_with(PREFIX) || name.contains('/') || name.len() > 64 {
            return Err(LabError::BadName(name.to_string()));
        }
        // Held until the namespace exists under its name (see CREATION).
        let gate = CREATION.lock().unwrap_or_else(|e| e.into_inner());
        if *gate {
            return Err(LabError::Interrupted);
        }
        std::fs::create_dir_all(NETNS_DIR)
            .map_err(|e| LabError::io(format!("create {NETNS_DIR}"), e))?;
        let path = Path::new(NETNS_DIR).join(name);
        std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&path)
            .map_err(|e| LabError::io(format!("create {}", path.display()), e))?;
        let made = std::thread::scope(|scope| {
            scope
                .spawn(|| -> Result<T, LabError> {
                    unshare(CloneFlags::CLONE_NEWNET)
                        .map_err(|e| LabError::io("unshare(CLONE_NEWNET)", e.into()))?;
                    mount(
                        Some("/proc/thread-self/ns/net"),
                        &path,
                        None::<&str>,
                        MsFlags::MS_BIND,
                        None::<&str>,
                    )
                    .map_err(|e| {
                        LabError::io(format!("bind-mount {}", path.display()), e.into())
                    })?;
                    init()
                })
                .join()
                .unwrap_or_else(|_| Err(LabError::Panicked(format!("creating {name}"))))
        });
        let value = match made {
            Ok(v) => v,
            Err(e) => {
                remove_mount(&path);
                return Err(e);
            }
        };
        let file = match File::open(&path) {
            Ok(f) => f,
            Err(e) => {
                remove_mount(&path);
                return Err(LabError::io(format!("open {}", path.display()), e));
            }
        };
        let ns = Namespace {
            name: name.to_string(),
            file,
        };
        drop(gate);
        refuse_initial(&ns.file)?;
        Ok((ns, value))
    }

    /// A second handle on the same namespace, for entering it from another
    /// thread. Only the handle [`Namespace::create`] returned deletes it.
    pub fn try_clone(&self) -> Result<Namespace, LabError> {
        Ok(Namespace {
            name: self.name.clone(),
            file: self
                .file
                .try_clone()
                .map_err(|e| LabError::io(format!("dup {}", self.name), e))?,
        })
    }

    /// Its name under `/run/netns`.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The namespace file, e.g. for `IFLA_NET_NS_FD` or a child's `setns`.
    pub fn fd(&self) -> BorrowedFd<'_> {
        self.file.as_fd()
    }

    /// Moves the calling thread into this namespace. Only for threads the
    /// harness spawned for the purpose (host runtimes, helpers, children
    /// between fork and exec); never the main thread.
    pub fn enter_this_thread(&self) -> Result<(), LabError> {
        refuse_initial(&self.file)?;
        setns(self.file.as_fd(), CloneFlags::CLONE_NEWNET)
            .map_err(|e| LabError::io(format!("setns into {}", self.name), e.into()))
    }

    /// Runs `f` on a fresh thread inside this namespace and returns its result.
    pub fn run<T: Send>(
        &self,
        f: impl FnOnce() -> Result<T, LabError> + Send,
    ) -> Result<T, LabError> {
        std::thread::scope(|scope| {
            scope
                .spawn(|| {
                    self.enter_this_thread()?;
                    f()
                })
                .join()
                .unwrap_or_else(|_| Err(LabError::Panicked(format!("a task in {}", self.name))))
        })
    }

    /// The raw fd for `pre_exec` hooks, which must not allocate.
    pub fn raw_fd(&self) -> i32 {
        self.file.as_raw_fd()
    }

    /// SIGKILLs every process inside but this one: the namespace, not the
    /// process tree, says what belongs to the lab (a child that left its
    /// process group with `setsid` is still in here).
    pub fn kill_processes(&self) {
        if let Ok(id) = identity(&self.file) {
            kill_processes_in(id);
        }
    }

    /// Kills every process still inside (a command's children, one that
    /// left its process group with `setsid`), then unmounts and removes the
    /// name. The kernel frees the namespace (and every veth end and
    /// nftables table in it) once nothing holds it; a process left inside
    /// would hold it in a namespace no name points to any more, out of
    /// reach of `netmend clean`.
    pub fn delete(self) {
        self.kill_processes();
        remove_mount(&Path::new(NETNS_DIR).join(&self.name));
    }
}

fn remove_mount(path: &Path) {
    if let Err(e) = umount2(path, MntFlags::MNT_DETACH) {
        if e != nix::errno::Errno::EINVAL && e != nix::errno::Errno::ENOENT {
            tracing::warn!(path = %path.display(), error = %e, "unmount failed");
        }
    }
    if let Err(e) = std::fs::remove_file(path) {
        if e.kind() != std::io::ErrorKind::NotFound {
            tracing::warn!(path = %path.display(), error = %e, "removing namespace file failed");
        }
    }
}

/// Names of namespaces under [`NETNS_DIR`] that carry the [`PREFIX`].
pub fn leftovers() -> Vec<String> {
    let Ok(dir) = std::fs::read_dir(NETNS_DIR) else {
        return Vec::new();
    };
    let mut names: Vec<String> = dir
        .filter_map(|e| e.ok())
        .filter_map(|e| e.file_name().into_string().ok())
        .filter(|n| n.starts_with(PREFIX))
        .collect();
    names.sort();
    names
}

/// Removes namespaces whose names start with `prefix` (which itself must
/// start with [`PREFIX`]), killing every process still inside them first so
/// that nothing keeps them alive. Returns the names removed.
pub fn remove_matching(prefix: &str) -> Vec<String> {
    if !prefix.starts_with(PREFIX) {
        return Vec::new();
    }
    let names: Vec<String> = leftovers()
        .into_iter()
        .filter(|n| n.starts_with(prefix))
        .collect();
    // A full name must not also match longer names (`nm-1-1` vs `nm-1-10-…`).
    let names: Vec<String> = if names.iter().any(|n| n == prefix) {
        vec![prefix.to_string()]
    } else {
        names
    };
    for name in &names {
        let path: PathBuf = Path::new(NETNS_DIR).join(name);
        if let Ok(f) = File::open(&path) {
            if let Ok(id) = identity(&f) {
                kill_processes_in(id);
            }
        }
        remove_mount(&path);
    }
    names
}

/// The process that created a lab namespace: names are
/// `nm-<pid in hex>-<lab>-<host>`.
pub fn owner(name: &str) -> Option<u32> {
    let rest = name.strip_prefix(PREFIX)?;
    u32::from_str_radix(rest.split('-').next()?, 16).ok()
}

/// What `netmend clean` did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Cleaned {
    /// Namespaces removed (their creator is gone).
    pub removed: Vec<String>,
    /// Namespaces left alone because the process that made them still runs.
    pub in_use: Vec<(String, u32)>,
}

/// Removes the `nm-` namespaces whose creating process is gone (a run
/// killed with SIGKILL), and leaves those of live runs alone, so cleaning
/// up never breaks a run in progress.
pub fn remove_orphans() -> Cleaned {
    let mut out = Cleaned::default();
    for name in leftovers() {
        match owner(&name) {
            Some(pid) if Path::new(&format!("/proc/{pid}")).exists() => {
                out.in_use.push((name, pid));
            }
            _ => out.removed.extend(remove_matching(&name)),
        }
    }
    out
}

/// SIGKILLs every process (other than this one) whose network namespace is `id`.
fn kill_processes_in(id: (u64, u64)) {
    let me = std::process::id();
    let Ok(procs) = std::fs::read_dir("/proc") else {
        return;
    };
    for entry in procs.filter_map(|e| e.ok()) {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|s| s.parse::<i32>().ok())
        else {
            continue;
        };
        if pid as u32 == me {
            continue;
        }
        let Ok(f) = File::open(entry.path().join("ns/net")) else {
            continue;
        };
        if identity(&f).ok() == Some(id) {
            tracing::info!(pid, "killing a process left in a lab namespace");
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(pid),
                nix::sys::signal::Signal::SIGKILL,
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_initial_namespace_is_refused() {
        let mine = File::open("/proc/self/ns/net").expect("nsfs");
        assert!(matches!(
            refuse_initial(&mine),
            Err(LabError::InitialNamespace)
        ));
        let ns = Namespace {
            name: "nm-test".into(),
            file: mine,
        };
        assert!(matches!(
            ns.enter_this_thread(),
            Err(LabError::InitialNamespace)
        ));
    }

    #[test]
    fn names_without_the_prefix_are_refused_before_anything_is_made() {
        let made = Namespace::create("lab-x", || Ok(()));
        assert!(matches!(made, Err(LabError::BadName(_))));
        assert!(!Path::new(NETNS_DIR).join("lab-x").exists());
    }

    #[test]
    fn owners_are_read_from_lab_names() {
        assert_eq!(owner("nm-1a2b-0-client"), Some(0x1a2b));
        assert_eq!(owner("nm-ff-12-router"), Some(0xff));
        assert_eq!(owner("nm-x-0-client"), None);
        assert_eq!(owner("other-1-0"), None);
    }
}
