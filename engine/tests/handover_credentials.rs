//! A process of another user is refused at either end of a handover
//! channel, and the refused connection leaves no descriptor behind. Alone
//! in its test binary: it counts the process's open descriptors, which
//! tests running beside it would change.
#![cfg(target_os = "linux")]

use netmend::handover::{Allow, HandoverError, Rendezvous};
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

/// The `handover_peer` example, built as the library is now.
fn peer_binary() -> PathBuf {
    let status = Command::new(env!("CARGO"))
        // With the workspace's features, as `cargo test --workspace`
        // built it (then a no-op); `-p netmend` alone resolves other
        // features and rebuilds the library and its dependencies.
        .args(["build", "-q", "--workspace", "--example", "handover_peer"])
        .status()
        .expect("cargo runs");
    assert!(status.success(), "building the handover_peer example");
    let exe = std::env::current_exe().expect("test binary path");
    exe.parent()
        .and_then(Path::parent)
        .expect("target profile dir")
        .join("examples")
        .join("handover_peer")
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime")
}

/// Runs the peer as user `nobody` (needs root); the binary is copied into
/// `dir`, which nobody can enter (removed with it).
fn as_nobody(dir: &tempfile::TempDir, args: &[&str]) -> Command {
    use std::os::unix::fs::PermissionsExt;
    use std::os::unix::process::CommandExt;
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755))
        .expect("open the directory");
    let bin = dir.path().join("handover_peer");
    if !bin.exists() {
        std::fs::copy(peer_binary(), &bin).expect("copy the peer");
    }
    let mut cmd = Command::new(bin);
    cmd.args(args).uid(65534).gid(65534);
    cmd
}

fn require_root(test: &str) {
    if !rustix::process::getuid().is_root() {
        panic!("{test}: needs root, to run a process as another user");
    }
}

fn open_fds() -> usize {
    std::fs::read_dir("/proc/self/fd").expect("/proc").count()
}

#[test]
#[ignore = "needs root (runs a process as another user)"]
fn another_users_process_is_refused_at_either_end_and_nothing_leaks() {
    require_root("another_users_process_is_refused");
    let rt = runtime();
    // Another user connects to this process's rendezvous (abstract: no file
    // permission stands in the way, the credential check must).
    let name = format!("netmend-test-{}", std::process::id());
    let dir = tempfile::tempdir().expect("temp dir");
    rt.block_on(async {
        let rendezvous =
            Rendezvous::bind_abstract(name.as_bytes(), Allow::same_user()).expect("bind");
        let before = open_fds();
        let mut child = as_nobody(&dir, &["connect", &format!("@{name}")])
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn as nobody");
        // The child, as the sender, refuses root's rendezvous too: it must
        // fail (exit 3) with "peer refused".
        let refused = rendezvous.accept().await;
        match refused {
            Err(HandoverError::PeerRefused(cred)) => {
                assert_eq!((cred.uid, cred.gid), (65534, 65534));
                assert_eq!(cred.pid, i32::try_from(child.id()).expect("pid"));
            }
            other => panic!("expected a refusal, got {other:?}"),
        }
        let status = tokio::task::spawn_blocking(move || {
            let mut err = String::new();
            let _ = child
                .stderr
                .take()
                .expect("stderr")
                .read_to_string(&mut err);
            (child.wait().expect("wait"), err)
        })
        .await
        .expect("join");
        assert_eq!(status.0.code(), Some(3), "{}", status.1);
        assert!(status.1.contains("peer refused"), "{}", status.1);
        assert_eq!(open_fds(), before, "the refused connection is closed");
        // Allowed explicitly, the same user is let in.
        drop(rendezvous);
        let rendezvous = Rendezvous::bind_abstract(name.as_bytes(), Allow::same_user().uid(65534))
            .expect("bind");
        let child = as_nobody(&dir, &["connect", &format!("@{name}")])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn as nobody");
        let channel = rendezvous.accept().await.expect("allowed by uid");
        assert_eq!(channel.peer().uid, 65534);
        drop(channel);
        let _ = tokio::task::spawn_blocking(move || child.wait_with_output()).await;
    });
}
