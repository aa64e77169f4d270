//! Reading scenario files, with errors that point into the file.

use super::model::{IpVersion, PolicyKind, Scenario, WorkloadKind};
use crate::fault::Fault;
use std::path::{Path, PathBuf};
use thiserror::Error;

/// A scenario file could not be used. Every variant names the file; parse
/// and validation errors also name line, column and field.
#[derive(Debug, Error)]
pub enum LoadError {
    /// The path could not be read.
    #[error("{path}: {source}")]
    Io {
        /// The path.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The file is not a valid scenario.
    #[error("{path}:{line}:{col}: {field}: {message}")]
    Invalid {
        /// The file.
        path: PathBuf,
        /// 1-based line.
        line: usize,
        /// 1-based column.
        col: usize,
        /// Dotted path of the offending field (`faults[1].duration`).
        field: String,
        /// What is wrong.
        message: String,
    },
    /// Two files declare the same id.
    #[error("{path}: duplicate scenario id `{id}` (also in {other})")]
    Duplicate {
        /// The second file.
        path: PathBuf,
        /// The id.
        id: String,
        /// The first file.
        other: PathBuf,
    },
    /// A directory held no scenario.
    #[error("{0}: no scenario files (*.toml) found")]
    Empty(PathBuf),
}

/// A scenario and the file it came from.
#[derive(Clone, Debug)]
pub struct Loaded {
    /// The file.
    pub path: PathBuf,
    /// Its content.
    pub scenario: Scenario,
}

/// Loads every `*.toml` under the given files and directories, sorted by id.
pub fn load_all(paths: &[PathBuf]) -> Result<Vec<Loaded>, LoadError> {
    let mut files = Vec::new();
    for p in paths {
        let meta = std::fs::metadata(p).map_err(|source| LoadError::Io {
            path: p.clone(),
            source,
        })?;
        if meta.is_dir() {
            let mut found: Vec<PathBuf> = std::fs::read_dir(p)
                .map_err(|source| LoadError::Io {
                    path: p.clone(),
                    source,
                })?
                .filter_map(|e| e.ok().map(|e| e.path()))
                .filter(|f| f.extension().is_some_and(|x| x == "toml"))
                .collect();
            if found.is_empty() {
                return Err(LoadError::Empty(p.clone()));
            }
            found.sort();
            files.extend(found);
        } else {
            files.push(p.clone());
        }
    }
    let mut loaded: Vec<Loaded> = Vec::new();
    for f in files {
        let scenario = load_file(&f)?;
        if let Some(other) = loaded.iter().find(|l| l.scenario.id == scenario.id) {
            return Err(LoadError::Duplicate {
                path: f,
                id: scenario.id,
                other: other.path.clone(),
            });
        }
        loaded.push(Loaded { path: f, scenario });
    }
    loaded.sort_by(|a, b| a.scenario.id.cmp(&b.scenario.id));
    Ok(loaded)
}

/// Loads and validates one file.
pub fn load_file(path: &Path) -> Result<Scenario, LoadError> {
    let bytes = std::fs::read(path).map_err(|source| LoadError::Io {
        path: path.to_path_buf(),
        source,
    })?;
    parse_bytes(path, &bytes)
}

/// Parses and validates the bytes of a scenario file, as [`load_file`]
/// read them: bytes that are not UTF-8 are refused with the line and
/// column of the first invalid one, then the text goes to [`parse`].
/// `path` is only used in errors.
///
/// ```
/// use netmend_harness::scenario::parse_bytes;
/// use std::path::Path;
///
/// let err = parse_bytes(Path::new("s.toml"), b"id = \"t\"\n\xff").unwrap_err();
/// assert_eq!(err.to_string(), "s.toml:2:1: (document): not UTF-8: invalid byte 0xff");
/// ```
pub fn parse_bytes(path: &Path, bytes: &[u8]) -> Result<Scenario, LoadError> {
    let text = std::str::from_utf8(bytes).map_err(|e| {
        let at = e.valid_up_to();
        // Everything before `at` is UTF-8.
        let (line, col) = line_col(std::str::from_utf8(&bytes[..at]).unwrap_or_default(), at);
        LoadError::Invalid {
            path: path.to_path_buf(),
            line,
            col,
            field: "(document)".into(),
            message: format!("not UTF-8: invalid byte {:#04x}", bytes[at]),
        }
    })?;
    parse(path, text)
}

/// Parses and validates scenario text; `path` is only used in errors.
///
/// ```
/// use netmend_harness::scenario::parse;
/// use std::path::Path;
///
/// let err = parse(Path::new("s.toml"), "id = 3").unwrap_err();
/// assert_eq!(err.to_string(), "s.toml:1:6: id: invalid type: integer `3`, expected a string");
/// ```
pub fn parse(path: &Path, text: &str) -> Result<Scenario, LoadError> {
    let de = toml::Deserializer::new(text);
    let scenario: Scenario = serde_path_to_error::deserialize(de).map_err(|e| {
        let field = e.path().to_string();
        let inner = e.into_inner();
        let (line, col) = inner
            .span()
            .map(|s| line_col(text, s.start))
            .unwrap_or((1, 1));
        LoadError::Invalid {
            path: path.to_path_buf(),
            line,
            col,
            field: if field == "." {
                "(document)".into()
            } else {
                field
            },
            message: inner.message().trim().replace('\n', "; "),
        }
    })?;
    validate(&scenario).map_err(|(field, key, nth, message)| {
        let (line, col) = locate(text, key, nth);
        LoadError::Invalid {
            path: path.to_path_buf(),
            line,
            col,
            field,
            message,
        }
    })?;
    Ok(scenario)
}

type Invalid = (String, &'static str, usize, String);

/// Checks what the types cannot: ordering, bounds, consistency.
fn validate(s: &Scenario) -> Result<(), Invalid> {
    let bad =
        |field: String, key: &'static str, nth: usize, msg: String| Err((field, key, nth, msg));
    if s.id.is_empty()
        || !s
            .id
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
    {
        return bad(
            "id".into(),
            "id",
            0,
            "must be non-empty and use only letters, digits, `-` and `_`".into(),
        );
    }
    for (i, tag) in s.tags.iter().enumerate() {
        let well_formed = tag.len() <= 32
            && tag.starts_with(|c: char| c.is_ascii_lowercase() || c.is_ascii_digit())
            && tag
                .chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-');
        if !well_formed {
            return bad(
                format!("tags[{i}]"),
                "tags",
                0,
                "a tag is 1 to 32 lowercase letters, digits and `-`, starting with a letter or digit"
                    .into(),
            );
        }
    }
    validate_hosts(s)?;
    let mut last = None;
    for (i, f) in s.faults.iter().enumerate() {
        if last.is_some_and(|l| f.at() < l) {
            return bad(
                format!("faults[{i}].at"),
                "at",
                i,
                "faults must be in time order".into(),
            );
        }
        if f.healed_at() >= s.expect.deadline {
            return bad(
                format!("faults[{i}].at"),
                "at",
                i,
                format!(
                    "fault ends at {} but the run deadline is {}",
                    f.healed_at(),
                    s.expect.deadline
                ),
            );
        }
        last = Some(f.at());
    }
    if s.workload.kind != WorkloadKind::Signaling {
        validate_bytes(s)?;
        // Broker faults act on brokers; only the signaling peers read the
        // wall clock a clock skew moves.
        if let Some(i) = s
            .faults
            .iter()
            .position(|f| f.broker().is_some() || matches!(f, Fault::ClockSkew(_)))
        {
            return bad(
                format!("faults[{i}].kind"),
                "kind",
                i + 1,
                format!("a {} fault needs a signaling workload", s.faults[i].kind()),
            );
        }
    }
    validate_herd(s)?;
    if s.workload.kind == WorkloadKind::Command {
        if let Some(i) = s
            .faults
            .iter()
            .position(|f| matches!(f, Fault::DnsFailure(_)))
        {
            return bad(
                format!("faults[{i}].kind"),
                "kind",
                i + 1,
                "a dns-failure takes the lab's name service away, which a command does not use (it resolves through the system's resolver)".into(),
            );
        }
    }
    if s.workload.kind != WorkloadKind::Stream && s.topology.ip == IpVersion::Dual {
        return bad(
            "topology.ip".into(),
            "ip",
            0,
            "a dual-stack topology takes a stream workload".into(),
        );
    }
    if s.topology.ip != IpVersion::Dual {
        if let Some(i) = s
            .faults
            .iter()
            .position(|f| matches!(f, Fault::Ipv6Blackhole(_)))
        {
            return bad(
                format!("faults[{i}].kind"),
                "kind",
                i + 1,
                "an IPv6 blackhole needs both families: `ip = \"dual\"` in [topology]".into(),
            );
        }
    }
    if s.workload.kind != WorkloadKind::Stream && s.baseline != Default::default() {
        return bad(
            "baseline.follow_changes".into(),
            "follow_changes",
            0,
            "only a stream workload's naive client follows network changes".into(),
        );
    }
    if s.baseline
        .ack_timeout
        .is_some_and(|t| t.0 < 2 * crate::workload::programs::REPORT_EVERY)
    {
        return bad(
            "baseline.ack_timeout".into(),
            "ack_timeout",
            0,
            format!(
                "must be at least 200ms: the naive server reports every {}ms",
                crate::workload::programs::REPORT_EVERY.as_millis()
            ),
        );
    }
    match s.workload.kind {
        WorkloadKind::Stream => validate_paired(s, "stream", PolicyKind::ResumableSession)?,
        WorkloadKind::Signaling => {
            validate_paired(s, "signaling", PolicyKind::RedundantSignaling)?;
            validate_signaling(s)?;
        }
        WorkloadKind::Command => {
            if s.workload.command.first().is_none_or(|p| p.is_empty()) {
                return bad(
                    "workload.command".into(),
                    "kind",
                    0,
                    "a command workload needs `command = [\"program\", \"arg\", …]`".into(),
                );
            }
            if s.expect.output.is_some()
                && !s.workload.command.iter().any(|a| a.contains("{output}"))
            {
                return bad(
                    "expect.output".into(),
                    "output",
                    0,
                    "judging the output needs the command to write it to `{output}`".into(),
                );
            }
            if s.expect.exit.is_none() {
                return bad(
                    "expect.exit".into(),
                    "kind",
                    0,
                    "a command workload needs the exit status it must end with (`exit = 0`)".into(),
                );
            }
        }
    }
    Ok(())
}

/// What every scenario that pairs a failure with an engine policy needs:
/// the policy of its kind, a baseline symptom to show, and none of the
/// command workload's fields.
fn validate_paired(s: &Scenario, kind: &str, policy: PolicyKind) -> Result<(), Invalid> {
    let bad =
        |field: String, key: &'static str, nth: usize, msg: String| Err((field, key, nth, msg));
    if !s.workload.command.is_empty() {
        return bad(
            "workload.command".into(),
            "command",
            0,
            "only a command workload runs a command".into(),
        );
    }
    match &s.mitigation {
        None => {
            return bad(
                "mitigation".into(),
                "kind",
                0,
                format!(
                    "a {kind} scenario pairs its failure with an engine policy: add [mitigation]"
                ),
            )
        }
        Some(m) if m.policy != policy => {
            return bad(
                "mitigation.policy".into(),
                "policy",
                0,
                format!(
                    "a {kind} scenario pairs its failure with `policy = \"{}\"`",
                    policy.name()
                ),
            )
        }
        Some(m) => {
            let session_only = [
                ("keepalive_interval", m.keepalive_interval.is_some()),
                ("dead_after", m.dead_after.is_some()),
                ("handshake_timeout", m.handshake_timeout.is_some()),
                ("max_attempts", m.max_attempts.is_some()),
                ("replay_buffer", m.replay_buffer.is_some()),
                ("planted_bug", m.planted_bug.is_some()),
                ("monitor", m.monitor),
                ("debounce", m.debounce.is_some()),
                ("probe_interval", m.probe_interval.is_some()),
                ("max_probe_interval", m.max_probe_interval.is_some()),
                ("probe_timeout", m.probe_timeout.is_some()),
                ("store", m.store.is_some()),
            ];
            let signaling_only = [("fanout", m.fanout.is_some()), ("ttl", m.ttl.is_some())];
            let foreign = match policy {
                PolicyKind::ResumableSession => &signaling_only[..],
                PolicyKind::RedundantSignaling => &session_only[..],
            };
            if let Some(&(field, _)) = foreign.iter().find(|(_, set)| *set) {
                return bad(
                    format!("mitigation.{field}"),
                    field,
                    0,
                    format!("does not apply to policy `{}`", policy.name()),
                );
            }
        }
    }
    if s.expect.exit.is_some() {
        return bad(
            "expect.exit".into(),
            "exit",
            0,
            "only a command workload has an exit status".into(),
        );
    }
    if s.expect.output.is_some() {
        return bad(
            "expect.output".into(),
            "output",
            0,
            "only a command workload writes an output to judge".into(),
        );
    }
    if s.expect.baseline.is_empty() {
        return bad(
            "expect.baseline".into(),
            "baseline",
            0,
            "name at least one symptom: a scenario whose baseline does not fail proves nothing"
                .into(),
        );
    }
    Ok(())
}

/// The byte-stream fields of a stream or command workload.
fn validate_bytes(s: &Scenario) -> Result<(), Invalid> {
    let bad =
        |field: String, key: &'static str, nth: usize, msg: String| Err((field, key, nth, msg));
    let (bytes, chunk, rate) = (s.workload.bytes, s.workload.chunk, s.workload.rate);
    if bytes == 0 || bytes % 8 != 0 {
        return bad(
            "workload.bytes".into(),
            "bytes",
            0,
            "must be a positive multiple of 8".into(),
        );
    }
    if chunk == 0 || chunk > 1 << 20 {
        return bad(
            "workload.chunk".into(),
            "chunk",
            0,
            "must be between 1 and 1048576".into(),
        );
    }
    if rate == Some(0) {
        return bad(
            "workload.rate".into(),
            "rate",
            0,
            "must be positive (omit it for unpaced)".into(),
        );
    }
    let w = &s.workload;
    match (w.pause_at, w.pause_for) {
        (None, None) => {}
        (Some(_), Some(len)) if w.kind == WorkloadKind::Stream && rate.is_some() => {
            if len.0.is_zero() {
                return bad(
                    "workload.pause_for".into(),
                    "pause_for",
                    0,
                    "must be positive".into(),
                );
            }
            if s.faults
                .iter()
                .any(|f| matches!(f, Fault::ProcessRestart(_)))
            {
                return bad(
                    "workload.pause_at".into(),
                    "pause_at",
                    0,
                    "a process restart's client processes do not pause".into(),
                );
            }
        }
        (Some(_), Some(_)) => {
            return bad(
                "workload.pause_at".into(),
                "pause_at",
                0,
                "a pause needs a paced stream workload (`rate`)".into(),
            )
        }
        (Some(_), None) | (None, Some(_)) => {
            return bad(
                "workload.pause_at".into(),
                if w.pause_at.is_some() {
                    "pause_at"
                } else {
                    "pause_for"
                },
                0,
                "`pause_at` and `pause_for` go together".into(),
            )
        }
    }
    Ok(())
}

/// A herd needs a stream workload, a server restart to lose its server
/// by, and the bound its return is judged by; one per scenario.
fn validate_herd(s: &Scenario) -> Result<(), Invalid> {
    let bad =
        |field: String, key: &'static str, nth: usize, msg: String| Err((field, key, nth, msg));
    let mut herds = s
        .faults
        .iter()
        .enumerate()
        .filter(|(_, f)| matches!(f, Fault::Herd(_)));
    let Some((i, _)) = herds.next() else {
        if s.expect.max_herd_peak.is_some() {
            return bad(
                "expect.max_herd_peak".into(),
                "max_herd_peak",
                0,
                "only a scenario with a `herd` fault has a herd peak".into(),
            );
        }
        return Ok(());
    };
    let kind = |i: usize, why: &str| -> Result<(), Invalid> {
        // The workload's `kind =` comes first.
        bad(format!("faults[{i}].kind"), "kind", i + 1, why.into())
    };
    if let Some((j, _)) = herds.next() {
        return kind(j, "a scenario has at most one herd");
    }
    if s.workload.kind != WorkloadKind::Stream {
        return kind(
            i,
            "a herd needs a stream workload (its server is the stream's)",
        );
    }
    if !s
        .faults
        .iter()
        .any(|f| matches!(f, Fault::ServerRestart(_)))
    {
        return kind(
            i,
            "a herd needs a `server-restart` fault: the loss it comes back from",
        );
    }
    // The herd's port is the scenario's + 1, which a failover's instances
    // take.
    if s.faults
        .iter()
        .any(|f| matches!(f, Fault::ServerFailover(_)))
        || s.topology.port == u16::MAX
    {
        return kind(i, "a herd holds its connections on the scenario's port + 1: not with a `server-failover`, nor with port 65535");
    }
    if s.expect.max_herd_peak.is_none_or(|p| p == 0) {
        return bad(
            "expect".into(),
            "expect",
            0,
            "a herd needs `max_herd_peak` (its connections accepted per 100 ms after the server returns, at most; above 0)".into(),
        );
    }
    Ok(())
}

/// A signaling workload: its messages, its brokers, their faults, and the
/// policy's fan-out.
fn validate_signaling(s: &Scenario) -> Result<(), Invalid> {
    let bad =
        |field: String, key: &'static str, nth: usize, msg: String| Err((field, key, nth, msg));
    let w = &s.workload;
    if w.messages == 0 || w.messages > 1_000_000 {
        return bad(
            "workload.messages".into(),
            "messages",
            0,
            "a signaling workload sends between 1 and 1000000 messages".into(),
        );
    }
    if !(8..=32 << 10).contains(&w.payload) {
        return bad(
            "workload.payload".into(),
            "payload",
            0,
            "must be between 8 and 32768 bytes".into(),
        );
    }
    if w.interval.0.is_zero() {
        return bad(
            "workload.interval".into(),
            "interval",
            0,
            "must be positive".into(),
        );
    }
    let brokers = s.topology.brokers;
    if !(1..=16).contains(&brokers) {
        return bad(
            "topology.brokers".into(),
            "brokers",
            0,
            "a signaling workload needs between 1 and 16 brokers".into(),
        );
    }
    let mut broker_faults = 0;
    for (i, f) in s.faults.iter().enumerate() {
        if matches!(f, Fault::ClockSkew(_)) {
            // The peers' clocks: no broker.
            continue;
        }
        let Some(broker) = f.broker() else {
            return bad(
                format!("faults[{i}].kind"),
                "kind",
                // The workload's `kind =` comes first.
                i + 1,
                format!(
                    "a signaling workload takes broker faults and clock skews only, not {}",
                    f.kind()
                ),
            );
        };
        if broker >= brokers {
            return bad(
                format!("faults[{i}].broker"),
                "broker",
                // Each broker fault so far had a `broker =`.
                broker_faults,
                format!("the topology has brokers 0 to {}", brokers - 1),
            );
        }
        broker_faults += 1;
    }
    let fanout = s.mitigation.as_ref().and_then(|m| m.fanout);
    if fanout.is_some_and(|f| f == 0 || f > usize::from(brokers)) {
        return bad(
            "mitigation.fanout".into(),
            "fanout",
            0,
            format!("must be between 1 and the {brokers} broker(s)"),
        );
    }
    Ok(())
}

/// Host names become turmoil hosts and parts of namespace names: each must
/// be a plain name, and no two hosts of the run — the three named ones, the
/// brokers and the hosts the harness adds (`<client>-flood`,
/// `<client>-forger<N>`) — may share one (the simulator refuses a second
/// host of a name, and two namespaces would be one).
fn validate_hosts(s: &Scenario) -> Result<(), Invalid> {
    let t = &s.topology;
    let named = [
        ("topology.client", "client", &t.client),
        ("topology.server", "server", &t.server),
        ("topology.middlebox", "middlebox", &t.middlebox),
    ];
    for (field, key, name) in named {
        let plain = name.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
            && name.chars().next().is_some_and(|c| c.is_ascii_alphabetic());
        if !plain || name.len() > 32 {
            return Err((
                field.into(),
                key,
                0,
                format!("`{name}` must start with a letter, use only letters, digits and `-`, and have at most 32 characters"),
            ));
        }
    }
    let mut taken: Vec<(String, String)> = t
        .broker_hosts()
        .into_iter()
        .map(|b| (b, "a broker".to_string()))
        .collect();
    taken.push((format!("{}-flood", t.client), "the flood host".into()));
    taken.extend(
        (0..t.brokers).map(|i| (format!("{}-forger{i}", t.client), "a forger host".into())),
    );
    for (field, key, name) in named {
        if let Some((_, owner)) = taken.iter().find(|(n, _)| n == name) {
            return Err((
                field.into(),
                key,
                0,
                format!(
                    "`{name}` is already the name of {owner}; every host needs a name of its own"
                ),
            ));
        }
        taken.push((name.clone(), field.to_string()));
    }
    Ok(())
}

/// Finds `key =` (the `nth` occurrence, for array tables) in the text.
fn locate(text: &str, key: &str, nth: usize) -> (usize, usize) {
    let mut seen = 0;
    for (i, line) in text.lines().enumerate() {
        let trimmed = line.trim_start();
        if let Some(rest) = trimmed.strip_prefix(key) {
            if rest.trim_start().starts_with('=') {
                if seen == nth {
                    return (i + 1, line.len() - trimmed.len() + 1);
                }
                seen += 1;
            }
        }
    }
    (1, 1)
}

fn line_col(text: &str, offset: usize) -> (usize, usize) {
    let before = &text[..offset.min(text.len())];
    let line = before.matches('\n').count() + 1;
    let col = before.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1;
    (line, col)
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = r#"
id = "t"
catalog = "tcp-reset"
description = "d"

[topology]
latency = "2ms"

[workload]
kind = "stream"
bytes = 800

[[faults]]
kind = "reset"
at = "1s"

[mitigation]
policy = "resumable-session"

[expect]
baseline = ["loss"]
recovery_within = "2s"
max_attempts = 5
"#;

    fn err(text: &str) -> String {
        parse(Path::new("s.toml"), text).unwrap_err().to_string()
    }

    #[test]
    fn a_herd_needs_its_server_restart_and_its_bound() {
        let herd = GOOD.replace(
            "kind = \"reset\"\nat = \"1s\"",
            "kind = \"herd\"\nat = \"0s\"\ncount = 100\n\n[[faults]]\nkind = \"server-restart\"\nat = \"1s\"\nduration = \"1s\"",
        );
        let bounded = herd.replace("max_attempts = 5", "max_attempts = 5\nmax_herd_peak = 20");
        let s = parse(Path::new("s.toml"), &bounded).unwrap();
        assert_eq!(s.expect.max_herd_peak, Some(20));
        assert!(
            err(&herd).contains("a herd needs `max_herd_peak`"),
            "{}",
            err(&herd)
        );
        let alone = bounded
            .replace("kind = \"server-restart\"", "kind = \"reset\"")
            .replace("duration = \"1s\"\n", "");
        assert!(
            err(&alone).ends_with("faults[0].kind: a herd needs a `server-restart` fault: the loss it comes back from"),
            "{}",
            err(&alone)
        );
        let unbounded = GOOD.replace("max_attempts = 5", "max_attempts = 5\nmax_herd_peak = 20");
        assert!(
            err(&unbounded).ends_with(
                "expect.max_herd_peak: only a scenario with a `herd` fault has a herd peak"
            ),
            "{}",
            err(&unbounded)
        );
        let none = bounded.replace("count = 100", "count = 0");
        assert!(
            err(&none).contains("a herd has 1 to 5000 clients"),
            "{}",
            err(&none)
        );
    }

    #[test]
    fn good_file_parses() {
        let s = parse(Path::new("s.toml"), GOOD).unwrap();
        assert_eq!(s.faults.len(), 1);
    }

    #[test]
    fn unknown_field_names_file_line_col_and_field() {
        let text = GOOD.replace("latency = \"2ms\"", "latency = \"2ms\"\nlatensy = \"3ms\"");
        assert_eq!(
            err(&text),
            "s.toml:8:1: topology.latensy: unknown field `latensy`, expected one of `client`, `server`, `middlebox`, `latency`, `port`, `ip`, `brokers`, `broker_port`"
        );
    }

    #[test]
    fn every_host_needs_a_plain_name_of_its_own() {
        let with =
            |extra: &str| GOOD.replace("latency = \"2ms\"", &format!("latency = \"2ms\"\n{extra}"));
        assert_eq!(
            err(&with("client = \"server\"")),
            // The clash is with `server`'s default name: no line to point at.
            "s.toml:1:1: topology.server: `server` is already the name of topology.client; every host needs a name of its own"
        );
        assert_eq!(
            err(&with("server = \"client-flood\"")),
            "s.toml:8:1: topology.server: `client-flood` is already the name of the flood host; every host needs a name of its own"
        );
        assert!(err(&with("middlebox = \"a b\"")).contains("must start with a letter"));
        assert!(err(&with("client = \"\"")).contains("must start with a letter"));
        assert!(parse(Path::new("s.toml"), &with("client = \"laptop\"")).is_ok());
    }

    const SIGNALING: &str = r#"
id = "b"
catalog = "broker-loss"
description = "d"

[topology]
brokers = 2

[workload]
kind = "signaling"
messages = 10

[[faults]]
kind = "broker-down"
at = "1s"
broker = 1
duration = "1s"

[mitigation]
policy = "redundant-signaling"

[expect]
baseline = ["loss"]
"#;

    #[test]
    fn signaling_scenarios_check_their_brokers_faults_and_policy() {
        let s = parse(Path::new("s.toml"), SIGNALING).unwrap();
        assert_eq!(s.topology.broker_hosts(), ["broker0", "broker1"]);
        assert_eq!(
            err(&SIGNALING.replace("broker = 1", "broker = 2")),
            "s.toml:16:1: faults[0].broker: the topology has brokers 0 to 1"
        );
        assert_eq!(
            err(&SIGNALING.replace("brokers = 2", "brokers = 0")),
            "s.toml:7:1: topology.brokers: a signaling workload needs between 1 and 16 brokers"
        );
        assert_eq!(
            err(&SIGNALING.replace("redundant-signaling", "resumable-session")),
            "s.toml:20:1: mitigation.policy: a signaling scenario pairs its failure with `policy = \"redundant-signaling\"`"
        );
        assert_eq!(
            err(&SIGNALING.replace("kind = \"broker-down\"", "kind = \"blackhole\"")
                .replace("broker = 1\n", "")),
            "s.toml:14:1: faults[0].kind: a signaling workload takes broker faults and clock skews only, not blackhole"
        );
        assert_eq!(
            err(&SIGNALING.replace("messages = 10", "messages = 0")),
            "s.toml:11:1: workload.messages: a signaling workload sends between 1 and 1000000 messages"
        );
        assert_eq!(
            err(&SIGNALING.replace("[topology]\n", "[topology]\nip = \"dual\"\n")),
            "s.toml:7:1: topology.ip: a dual-stack topology takes a stream workload"
        );
        assert_eq!(
            err(&GOOD.replace("kind = \"reset\"", "kind = \"ipv6-blackhole\"")),
            "s.toml:14:1: faults[0].kind: an IPv6 blackhole needs both families: `ip = \"dual\"` in [topology]"
        );
        let dual = GOOD
            .replace("kind = \"reset\"", "kind = \"ipv6-blackhole\"")
            .replace("[topology]\n", "[topology]\nip = \"dual\"\n");
        assert!(parse(Path::new("s.toml"), &dual).is_ok());
        assert_eq!(
            err(&SIGNALING.replace("[mitigation]\n", "[baseline]\nfollow_changes = true\n[mitigation]\n")),
            "s.toml:20:1: baseline.follow_changes: only a stream workload's naive client follows network changes"
        );
        assert_eq!(
            err(&SIGNALING.replace("[mitigation]\n", "[mitigation]\nmonitor = true\n")),
            "s.toml:20:1: mitigation.monitor: does not apply to policy `redundant-signaling`"
        );
        assert_eq!(
            err(&GOOD.replace("[mitigation]\n", "[mitigation]\nfanout = 2\n")),
            "s.toml:18:1: mitigation.fanout: does not apply to policy `resumable-session`"
        );
        // A broker fault in a stream scenario has no broker to act on.
        let stream = GOOD.replace("kind = \"reset\"", "kind = \"broker-down\"\nbroker = 0");
        assert_eq!(
            err(&stream),
            "s.toml:14:1: faults[0].kind: a broker-down fault needs a signaling workload"
        );
    }

    #[test]
    fn wrong_type_names_the_field() {
        let text = GOOD.replace("bytes = 800", "bytes = \"lots\"");
        let e = err(&text);
        assert!(
            e.starts_with("s.toml:11:9: workload.bytes: invalid type: string \"lots\""),
            "{e}"
        );
    }

    #[test]
    fn bad_duration_names_the_field() {
        let text = GOOD.replace("at = \"1s\"", "at = \"5 parsecs\"");
        let e = err(&text);
        assert!(
            e.starts_with("s.toml:15:6: faults[0].at: invalid duration `5 parsecs`"),
            "{e}"
        );
    }

    /// Found by the `scenario` fuzz target: times beyond what a `Duration`
    /// holds, or a fault whose end overflows one, are errors, not panics.
    #[test]
    fn huge_times_are_errors_not_panics() {
        let text = GOOD.replace(
            "at = \"1s\"",
            "at = \"4111111111111111111111111111111111s\"",
        );
        assert_eq!(
            err(&text),
            "s.toml:15:6: faults[0].at: invalid duration `4111111111111111111111111111111111s` (too long)"
        );
        let text = GOOD.replace(
            "kind = \"reset\"\nat = \"1s\"",
            "kind = \"blackhole\"\nat = \"18446744073709550000s\"\nduration = \"1000000s\"",
        );
        assert!(
            err(&text).starts_with("s.toml:15:1: faults[0].at: fault ends at "),
            "{}",
            err(&text)
        );
    }

    #[test]
    fn bad_toml_points_at_the_syntax_error() {
        let text = GOOD.replace("[topology]", "[topology");
        let e = err(&text);
        assert!(e.starts_with("s.toml:6:10: (document): "), "{e}");
    }

    #[test]
    fn unknown_fault_kind_and_semantic_errors_are_located() {
        let text = GOOD.replace("kind = \"reset\"", "kind = \"meteor\"");
        let e = err(&text);
        assert!(
            e.starts_with("s.toml:14:8: faults[0].kind: unknown variant `meteor`"),
            "{e}"
        );
        let text = GOOD.replace("at = \"1s\"", "at = \"1s\"\nduration = \"2s\"");
        let e = err(&text);
        assert!(
            e.starts_with("s.toml:13:1: faults[0]: `duration` does not apply to a reset fault"),
            "{e}"
        );
        let text = GOOD.replace("at = \"1s\"", "at = \"90s\"");
        assert_eq!(
            err(&text),
            "s.toml:15:1: faults[0].at: fault ends at 1m 30s but the run deadline is 1m"
        );
        // conntrack counts in whole seconds: a NAT idle timeout is refused
        // below a second or with a fraction of one.
        for bad in ["500ms", "1500ms"] {
            let text = GOOD.replace(
                "kind = \"reset\"\nat = \"1s\"",
                &format!("kind = \"nat-idle-timeout\"\nat = \"1s\"\ntimeout = \"{bad}\""),
            );
            let e = err(&text);
            assert!(
                e.contains("`timeout` must be a whole number of seconds"),
                "{e}"
            );
        }
        let text = GOOD.replace(
            "kind = \"reset\"\nat = \"1s\"",
            "kind = \"nat-idle-timeout\"\nat = \"1s\"\ntimeout = \"3s\"",
        );
        assert!(parse(Path::new("s.toml"), &text).is_ok());
    }

    #[test]
    fn an_mtu_is_refused_outside_what_its_fault_can_make() {
        let with = |kind: &str, mtu: &str| {
            GOOD.replace(
                "kind = \"reset\"\nat = \"1s\"",
                &format!("kind = \"{kind}\"\nat = \"1s\"{mtu}"),
            )
        };
        for (kind, bad, message) in [
            (
                "mtu-blackhole",
                "1279",
                "to 1499 (below the links' 1500), not 1279",
            ),
            (
                "mtu-blackhole",
                "1500",
                "to 1499 (below the links' 1500), not 1500",
            ),
            (
                "vpn-up",
                "1473",
                "to 1472 (a 1500-byte link less the tunnel's IPv4 and UDP headers), not 1473",
            ),
        ] {
            let e = err(&with(kind, &format!("\nmtu = {bad}")));
            assert!(
                e.contains(&format!(
                    "`mtu` must be from 1280 (IPv6's minimum) {message}"
                )),
                "{e}"
            );
        }
        let e = err(&with("vpn-up", ""));
        assert!(e.contains("a vpn-up fault needs `mtu`"), "{e}");
        for (kind, good) in [
            ("mtu-blackhole", 1280),
            ("mtu-blackhole", 1499),
            ("vpn-up", 1472),
        ] {
            let text = with(kind, &format!("\nmtu = {good}"));
            assert!(parse(Path::new("s.toml"), &text).is_ok(), "{kind} {good}");
        }
    }

    #[test]
    fn a_pause_needs_both_fields_and_a_paced_stream() {
        let paused = |fields: &str| {
            GOOD.replace(
                "bytes = 800\n",
                &format!("bytes = 800\nrate = 100\n{fields}"),
            )
        };
        assert!(parse(
            Path::new("s.toml"),
            &paused("pause_at = \"1s\"\npause_for = \"2s\"\n")
        )
        .is_ok());
        let e = err(&paused("pause_at = \"1s\"\n"));
        assert!(e.contains("`pause_at` and `pause_for` go together"), "{e}");
        let e = err(&paused("pause_at = \"1s\"\npause_for = \"0s\"\n"));
        assert!(e.contains("workload.pause_for: must be positive"), "{e}");
        let unpaced = GOOD.replace(
            "bytes = 800\n",
            "bytes = 800\npause_at = \"1s\"\npause_for = \"2s\"\n",
        );
        assert!(err(&unpaced).contains("a pause needs a paced stream workload"));
    }
}
