//! Runs a command workload: the user's program in the client's namespace,
//! the built-in HTTP server in the server's, the fault schedule in between.

use super::faults::{self, PathFaults};
use super::host::HostTask;
use super::lab::Lab;
use super::{control, dns, lab_spec, LabError, NetnsNet};
use crate::backend::BackendError;
use crate::plan::CommandPlan;
use crate::scenario::{IpVersion, Scenario};
use crate::workload::command::{
    fill_placeholders, serve_http, CommandRun, OutputCheck, OUTPUT_TAIL,
};
use std::collections::HashMap;
use std::io::Read;
use std::process::Stdio;
use std::time::Instant;

/// Runs the command of `s`, planned as `plan`, under its faults and
/// reports what it did.
///
/// # Errors
///
/// The lab could not be built, changed or torn down, or the command could
/// not be started.
pub fn run(s: &Scenario, plan: &CommandPlan, seed: u64) -> Result<CommandRun, BackendError> {
    super::block_on(run_in_lab(s, plan, seed))
}

/// Keeps the last [`OUTPUT_TAIL`] bytes a pipe delivers; draining on a
/// thread of its own so a chatty program never blocks on a full pipe.
fn drain(pipe: Option<impl Read + Send + 'static>) -> std::thread::JoinHandle<String> {
    std::thread::spawn(move || {
        let Some(mut pipe) = pipe else {
            return String::new();
        };
        let mut tail: Vec<u8> = Vec::new();
        let mut buf = [0u8; 8192];
        while let Ok(n) = pipe.read(&mut buf) {
            if n == 0 {
                break;
            }
            tail.extend_from_slice(&buf[..n]);
            if tail.len() > 2 * OUTPUT_TAIL {
                tail.drain(..tail.len() - OUTPUT_TAIL);
            }
        }
        let keep = tail.len().saturating_sub(OUTPUT_TAIL);
        String::from_utf8_lossy(&tail[keep..]).into_owned()
    })
}

async fn run_in_lab(
    s: &Scenario,
    plan: &CommandPlan,
    seed: u64,
) -> Result<CommandRun, BackendError> {
    let topo = &s.topology;
    let mut lab = Lab::build(&lab_spec(s)).await?;
    faults::prepare(&mut lab, s).await?;
    let v6 = topo.ip == IpVersion::Ipv6;
    let server_ip = lab.attachment(&topo.server)?.host_addr(v6);
    let client_ip = lab.attachment(&topo.client)?.host_addr(v6);
    let addresses: HashMap<String, _> = [
        (topo.server.clone(), server_ip),
        (topo.client.clone(), client_ip),
    ]
    .into();
    // The command is given the server's address, not its name; the lab's
    // name server (see backend::netns::dns) follows the faults all the same.
    let hosts = dns::hosts_file(
        addresses
            .iter()
            .map(|(k, v)| (k.as_str(), std::slice::from_ref(v))),
    );
    let mut name_server = dns::NameServer::for_schedule(&lab, &s.schedule(), &hosts, v6)?;
    let mut faults = PathFaults::new(&lab, s, seed, s.schedule(), name_server.as_mut())?;
    let start = Instant::now();
    let net = NetnsNet::new(addresses, start, v6);
    let (port, total, rate, server_net) = (topo.port, plan.bytes, plan.rate, net.clone());
    let server = HostTask::spawn(lab.namespace(&topo.server)?, &topo.server, move || {
        server_net
            .prebind(port, super::Listen::Tcp)
            .map(|()| async move {
                if let Err(e) = serve_http(server_net, port, total, rate).await {
                    tracing::warn!(error = %e, "http server stopped");
                }
            })
    })?;

    // `{output}`: a file in a directory of this run's, read back after it.
    let scratch = tempfile::tempdir().map_err(|e| LabError::io("a directory for {output}", e))?;
    let output = scratch.path().join("output");
    let argv = fill_placeholders(
        &plan.argv,
        &server_ip.to_string(),
        &client_ip.to_string(),
        port,
        &output.to_string_lossy(),
    );
    let mut cmd = lab.command(&topo.client, &argv[0])?;
    // A process group of its own: at the deadline (and when it exits) the
    // whole tree goes, so no grandchild keeps the output pipes — and the
    // run — going.
    std::os::unix::process::CommandExt::process_group(&mut cmd, 0);
    cmd.args(&argv[1..])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let began = Instant::now();
    let mut child = cmd
        .spawn()
        .map_err(|e| LabError::io(format!("start `{}`", argv.join(" ")), e))?;
    let (out, err) = (drain(child.stdout.take()), drain(child.stderr.take()));
    let exited = control(&mut faults, &net, s.expect.deadline.0, None, || {
        child
            .try_wait()
            .map_err(|e| LabError::io("wait for the command", e))
    })
    .await?;
    let timed_out = exited.is_none();
    let status = match exited {
        Some(status) => status,
        None => {
            kill_group(&child);
            child
                .wait()
                .map_err(|e| LabError::io("wait for the command", e))?
        }
    };
    let duration_ms = began.elapsed().as_millis() as u64;
    // What is left of its tree goes too: the group, then whatever else
    // runs in the client's namespace (a `setsid` child), so no process
    // keeps the output pipes — and the run — going.
    kill_group(&child);
    lab.namespace(&topo.client)?.kill_processes();
    let stdout = out.join().unwrap_or_default();
    let stderr = err.join().unwrap_or_default();
    server.stop()?;
    faults.stop()?;
    lab.teardown();
    let output = plan.writes_output.then(|| {
        // A program that never created it wrote nothing.
        let file = std::fs::read(&output).unwrap_or_default();
        OutputCheck::of(&file, total)
    });
    Ok(CommandRun {
        argv,
        exit_code: status.code(),
        timed_out,
        stdout,
        stderr,
        duration_ms,
        output,
    })
}

/// SIGKILLs the process group the command leads (itself and every child
/// that did not leave the group).
fn kill_group(child: &std::process::Child) {
    let group = nix::unistd::Pid::from_raw(child.id() as i32);
    let _ = nix::sys::signal::killpg(group, nix::sys::signal::Signal::SIGKILL);
}
