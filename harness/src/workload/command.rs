//! The `command` workload: a user's own program under a fault, against the
//! built-in HTTP server. This module holds the server and the result type;
//! the netns backend starts the program.

use super::pattern;
use super::programs::Net;
use serde::Serialize;
use std::io;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// What the user's program did.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct CommandRun {
    /// The command line as run (placeholders filled in).
    pub argv: Vec<String>,
    /// Its exit status; `None` when a signal ended it.
    pub exit_code: Option<i32>,
    /// It was still running at the scenario's deadline and was killed.
    pub timed_out: bool,
    /// The last bytes it wrote to standard output.
    pub stdout: String,
    /// The last bytes it wrote to standard error.
    pub stderr: String,
    /// How long it ran, in ms.
    pub duration_ms: u64,
    /// What it wrote to `{output}`, judged against the served stream (when
    /// the command line has the placeholder).
    pub output: Option<OutputCheck>,
}

/// A command's `{output}` file against the stream the server served.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub struct OutputCheck {
    /// Bytes in the file.
    pub bytes: u64,
    /// The leading bytes that are the stream, in order (all of them when
    /// the file is exactly the stream).
    pub intact: u64,
    /// Bytes the server serves.
    pub expected: u64,
}

impl OutputCheck {
    /// Judges `file` (what the command wrote) against `total` bytes of the
    /// stream pattern.
    pub fn of(file: &[u8], total: u64) -> OutputCheck {
        let intact = file
            .iter()
            .enumerate()
            .take_while(|&(i, b)| (i as u64) < total && *b == pattern::byte_at(i as u64))
            .count() as u64;
        OutputCheck {
            bytes: file.len() as u64,
            intact,
            expected: total,
        }
    }

    /// The file is exactly the stream.
    pub fn complete(&self) -> bool {
        self.bytes == self.expected && self.intact == self.expected
    }
}

/// How much of each output stream a report keeps (the tail: errors come last).
pub const OUTPUT_TAIL: usize = 4096;

/// Fills `{server}`, `{client}`, `{port}`, `{url}` and `{output}` (a file
/// the harness reads back after the run) in each argument.
pub fn fill_placeholders(
    argv: &[String],
    server: &str,
    client: &str,
    port: u16,
    output: &str,
) -> Vec<String> {
    let host = if server.contains(':') {
        format!("[{server}]")
    } else {
        server.to_string()
    };
    let url = format!("http://{host}:{port}/");
    argv.iter()
        .map(|a| {
            a.replace("{url}", &url)
                .replace("{server}", server)
                .replace("{client}", client)
                .replace("{port}", &port.to_string())
                .replace("{output}", output)
        })
        .collect()
}

/// Serves `total` bytes of the stream pattern at every path, paced at
/// `rate` bytes per second, honouring `Range: bytes=N-` so that resuming
/// clients (`curl -C -`) can be put under a fault too.
pub async fn serve_http<N: Net>(
    net: N,
    port: u16,
    total: u64,
    rate: Option<u64>,
) -> io::Result<()> {
    let listener = net.bind(port).await?;
    loop {
        let stream = N::accept(&listener).await?;
        tokio::spawn(async move {
            if let Err(e) = respond(stream, total, rate).await {
                tracing::debug!(error = %e, "http: connection ended");
            }
        });
    }
}

/// Largest request head accepted.
const MAX_HEAD: usize = 8192;

async fn respond<S>(mut s: S, total: u64, rate: Option<u64>) -> io::Result<()>
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    let mut head = Vec::new();
    let mut buf = [0u8; 1024];
    while !head.windows(4).any(|w| w == b"\r\n\r\n") {
        let n = s.read(&mut buf).await?;
        if n == 0 {
            return Ok(());
        }
        head.extend_from_slice(&buf[..n]);
        if head.len() > MAX_HEAD {
            s.write_all(b"HTTP/1.1 431 Request Header Fields Too Large\r\nConnection: close\r\nContent-Length: 0\r\n\r\n")
                .await?;
            return Ok(());
        }
    }
    let start = range_start(&String::from_utf8_lossy(&head)).unwrap_or(0);
    if start >= total && total > 0 {
        let h = format!(
            "HTTP/1.1 416 Range Not Satisfiable\r\nContent-Range: bytes */{total}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
        );
        return s.write_all(h.as_bytes()).await;
    }
    let len = total - start;
    let h = if start == 0 {
        format!("HTTP/1.1 200 OK\r\nContent-Type: application/octet-stream\r\nAccept-Ranges: bytes\r\nContent-Length: {len}\r\nConnection: close\r\n\r\n")
    } else {
        format!(
            "HTTP/1.1 206 Partial Content\r\nContent-Type: application/octet-stream\r\nContent-Range: bytes {start}-{}/{total}\r\nContent-Length: {len}\r\nConnection: close\r\n\r\n",
            total - 1
        )
    };
    s.write_all(h.as_bytes()).await?;
    let began = tokio::time::Instant::now();
    let mut chunk = vec![0u8; 16 << 10];
    let mut sent = 0u64;
    while sent < len {
        if let Some(rate) = rate {
            let due = began
                + Duration::try_from_secs_f64(sent as f64 / rate as f64)
                    .unwrap_or(Duration::from_secs(u32::MAX.into()));
            tokio::time::sleep_until(due).await;
        }
        let n = (len - sent).min(chunk.len() as u64) as usize;
        pattern::fill(start + sent, &mut chunk[..n]);
        s.write_all(&chunk[..n]).await?;
        sent += n as u64;
    }
    s.shutdown().await
}

/// The first byte asked for by a `Range: bytes=N-` (or `N-M`) header.
fn range_start(head: &str) -> Option<u64> {
    head.lines().find_map(|line| {
        let (name, value) = line.split_once(':')?;
        if !name.trim().eq_ignore_ascii_case("range") {
            return None;
        }
        let spec = value.trim().strip_prefix("bytes=")?;
        spec.split('-').next()?.trim().parse().ok()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn placeholders_fill_in_addresses_and_bracket_ipv6_in_urls() {
        let argv: Vec<String> = [
            "curl",
            "{url}",
            "{server}:{port}",
            "from={client}",
            "-o{output}",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        assert_eq!(
            fill_placeholders(&argv, "198.18.2.2", "198.18.1.2", 7000, "/tmp/x/output"),
            [
                "curl",
                "http://198.18.2.2:7000/",
                "198.18.2.2:7000",
                "from=198.18.1.2",
                "-o/tmp/x/output"
            ]
        );
        assert_eq!(
            fill_placeholders(&argv[..2], "2001:db8:0:2::2", "x", 80, "")[1],
            "http://[2001:db8:0:2::2]:80/"
        );
    }

    #[test]
    fn an_output_is_complete_only_when_it_is_exactly_the_stream() {
        let mut stream = vec![0u8; 1000];
        pattern::fill(0, &mut stream);
        assert!(OutputCheck::of(&stream, 1000).complete());
        let short = OutputCheck::of(&stream[..600], 1000);
        assert_eq!(
            (short.bytes, short.intact, short.complete()),
            (600, 600, false)
        );
        let mut altered = stream.clone();
        altered[300] ^= 1;
        let a = OutputCheck::of(&altered, 1000);
        assert_eq!((a.bytes, a.intact, a.complete()), (1000, 300, false));
        let mut longer = stream.clone();
        longer.extend_from_slice(&stream[..10]);
        assert!(!OutputCheck::of(&longer, 1000).complete());
        assert!(!OutputCheck::of(&[], 1000).complete());
    }

    #[test]
    fn range_headers_are_read_case_insensitively() {
        assert_eq!(
            range_start("GET / HTTP/1.1\r\nrange: bytes=1024-\r\n\r\n"),
            Some(1024)
        );
        assert_eq!(
            range_start("GET / HTTP/1.1\r\nRange: bytes=5-9\r\n\r\n"),
            Some(5)
        );
        assert_eq!(range_start("GET / HTTP/1.1\r\nHost: x\r\n\r\n"), None);
    }

    #[tokio::test]
    async fn serves_the_pattern_from_the_requested_offset() {
        let (mut client, server) = tokio::io::duplex(1 << 20);
        let task = tokio::spawn(respond(server, 4096, None));
        client
            .write_all(b"GET /x HTTP/1.1\r\nRange: bytes=1000-\r\n\r\n")
            .await
            .unwrap();
        let mut got = Vec::new();
        client.read_to_end(&mut got).await.unwrap();
        task.await.unwrap().unwrap();
        let text = String::from_utf8_lossy(&got);
        assert!(
            text.starts_with("HTTP/1.1 206 Partial Content\r\n"),
            "{text}"
        );
        assert!(text.contains("Content-Range: bytes 1000-4095/4096\r\n"));
        let body_at = got.windows(4).position(|w| w == b"\r\n\r\n").unwrap() + 4;
        let mut want = vec![0u8; 3096];
        pattern::fill(1000, &mut want);
        assert_eq!(&got[body_at..], &want[..]);
    }
}
