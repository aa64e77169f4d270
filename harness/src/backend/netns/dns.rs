//! The lab's name server on netns: a real DNS server (dnsmasq, from the
//! distribution) on a host of its own behind the router, as a resolver of
//! the access network is, answering the lab's names from a hosts file the
//! harness rewrites when a host is renumbered. A `dns-failure` drops its
//! port 53 (the resolver unreachable: no answer, no ICMP error).
//!
//! A lab has one where the scenario's names change or go away (a
//! `dns-failure`, an `address-change`); elsewhere the answers never change
//! and the harness's table of names gives them without a server
//! ([`crate::backend::names`]), as on sim, where turmoil has no DNS.
//!
//! Programs ask it through [`lookup`], which behaves as glibc's stub
//! resolver does with resolv.conf(5)'s defaults: the A and AAAA questions
//! go out together over UDP, each try waits [`TRY`], [`TRIES`] tries, then
//! a temporary failure. (The harness's programs run as threads inside the
//! client's network namespace but share the machine's mount namespace, so
//! they cannot be given a resolv.conf of their own; they ask the lab's
//! server by address instead.)

use super::lab::Lab;
use super::service::{self, Transport};
use super::LabError;
use crate::backend::names::{TRIES, TRY};
use crate::fault::Action;
use hickory_proto::op::{Message, MessageType, OpCode, Query, ResponseCode};
use hickory_proto::rr::{Name, RData, RecordType};
use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::path::PathBuf;
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

/// The lab host the name server runs on.
pub const HOST: &str = "resolver";
/// The DNS port.
pub const PORT: u16 = 53;
/// How long dnsmasq may take to start, or to reread its hosts file.
const READY_TIMEOUT: Duration = Duration::from_secs(5);
/// The nftables table in the resolver's namespace that drops port 53.
const BLOCK_TABLE: &str = "nm-dns";
/// A DNS message over UDP is at most this long (RFC 1035 section 2.3.4;
/// dnsmasq answers the lab's few addresses well within it).
const MAX_UDP_MESSAGE: usize = 512;

/// Whether a lab with `schedule` runs a name server: its names change (an
/// address change) or the resolver goes away (a DNS failure).
pub fn needed(schedule: &[(Duration, Action)]) -> bool {
    schedule
        .iter()
        .any(|(_, a)| matches!(a, Action::NameServiceDown(_) | Action::AddressChange { .. }))
}

/// Whether dnsmasq can be run here, with how to install it if not.
///
/// # Errors
///
/// `Unavailable` with the install hint.
pub fn available() -> Result<(), LabError> {
    service::installed(
        "dnsmasq",
        "--version",
        "`dnsmasq` is missing; the netns lab's name server is dnsmasq (apt-get install dnsmasq-base)",
    )
}

/// The hosts file of `names`: one `address name` line per address, in the
/// order given (dnsmasq answers them in file order).
pub fn hosts_file<'a>(names: impl IntoIterator<Item = (&'a str, &'a [IpAddr])>) -> String {
    let mut lines: Vec<String> = names
        .into_iter()
        .flat_map(|(name, addrs)| addrs.iter().map(move |a| format!("{a} {name}")))
        .collect();
    // A stable file for a map's iteration order.
    lines.sort();
    lines.iter().map(|l| format!("{l}\n")).collect()
}

/// The nft script that drops (or, with `blocked` false, stops dropping)
/// every DNS question to the resolver's namespace, over UDP and TCP.
fn block_script(blocked: bool) -> String {
    let mut s = format!("table inet {BLOCK_TABLE}\ndelete table inet {BLOCK_TABLE}\n");
    if blocked {
        s.push_str(&format!(
            "table inet {BLOCK_TABLE} {{\n  chain input {{\n    type filter hook input priority 0; policy accept;\n    udp dport {PORT} drop\n    tcp dport {PORT} drop\n  }}\n}}\n"
        ));
    }
    s
}

/// The lab's dnsmasq. Dropping it kills the process.
pub struct NameServer {
    addr: SocketAddr,
    process: Child,
    hosts: PathBuf,
    log: PathBuf,
    /// Hosts-file reads dnsmasq has logged so far.
    reads: usize,
    /// Holds the hosts file and the log.
    _dir: tempfile::TempDir,
}

impl NameServer {
    /// Starts dnsmasq on the lab's [`HOST`], answering from `hosts` (see
    /// [`hosts_file`]) on its address of the lab's family (`v6`); returns
    /// once it has read the file and listens.
    ///
    /// # Errors
    ///
    /// dnsmasq is missing, did not start in time, or the files could not
    /// be written.
    pub fn start(lab: &Lab, hosts: &str, v6: bool) -> Result<Self, LabError> {
        available()?;
        let a = lab.attachment(HOST)?;
        let (v4_addr, v6_addr) = (a.host_v4(), a.host_v6());
        let addr = SocketAddr::new(if v6 { v6_addr.into() } else { v4_addr.into() }, PORT);
        let dir = tempfile::tempdir().map_err(|e| LabError::io("name server directory", e))?;
        let (hosts_path, log) = (dir.path().join("hosts"), dir.path().join("dnsmasq.log"));
        std::fs::write(&hosts_path, hosts)
            .map_err(|e| LabError::io(format!("write {}", hosts_path.display()), e))?;
        let process = lab
            .command(HOST, "dnsmasq")?
            .args([
                "--keep-in-foreground",
                // Nothing of the machine's: no /etc/dnsmasq.conf,
                // /etc/resolv.conf or /etc/hosts.
                "--conf-file=/dev/null",
                "--no-resolv",
                "--no-hosts",
                "--no-poll",
                // Every name is the lab's: one it does not know is
                // NXDOMAIN, never forwarded.
                "--local=/#/",
                "--bind-interfaces",
                // Root keeps the hosts file (in a private directory)
                // readable at a reread.
                "--user=root",
                "--group=root",
                "--pid-file=",
            ])
            .arg(format!("--port={PORT}"))
            .arg(format!("--listen-address={v4_addr}"))
            .arg(format!("--listen-address={v6_addr}"))
            .arg(format!("--addn-hosts={}", hosts_path.display()))
            .arg(format!("--log-facility={}", log.display()))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .map_err(|e| LabError::io("start dnsmasq", e))?;
        tracing::debug!(pid = process.id(), %addr, "dnsmasq started");
        let mut server = NameServer {
            addr,
            process,
            hosts: hosts_path,
            log,
            reads: 0,
            _dir: dir,
        };
        server.wait_for_read()?;
        Ok(server)
    }

    /// A name server for a lab with `schedule` if it needs one (see
    /// [`needed`]), started as [`NameServer::start`] does.
    ///
    /// # Errors
    ///
    /// As [`NameServer::start`].
    pub fn for_schedule(
        lab: &Lab,
        schedule: &[(Duration, Action)],
        hosts: &str,
        v6: bool,
    ) -> Result<Option<Self>, LabError> {
        match needed(schedule) {
            true => Self::start(lab, hosts, v6).map(Some),
            false => Ok(None),
        }
    }

    /// Where programs ask it.
    pub fn address(&self) -> SocketAddr {
        self.addr
    }

    /// Answers from `hosts` from now on: the file is replaced, dnsmasq
    /// told (SIGHUP), and this returns once it has read the new file, so a
    /// lookup after it sees the change.
    ///
    /// # Errors
    ///
    /// The file could not be written, or dnsmasq did not reread it in time.
    pub fn publish(&mut self, hosts: &str) -> Result<(), LabError> {
        let next = self.hosts.with_extension("next");
        std::fs::write(&next, hosts)
            .and_then(|()| std::fs::rename(&next, &self.hosts))
            .map_err(|e| LabError::io(format!("write {}", self.hosts.display()), e))?;
        let pid = nix::unistd::Pid::from_raw(self.pid()?);
        nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGHUP)
            .map_err(|e| LabError::io("SIGHUP dnsmasq", e.into()))?;
        self.wait_for_read()
    }

    /// Drops every question to it (`true`) or lets them through again.
    ///
    /// # Errors
    ///
    /// nft failed.
    pub fn set_unreachable(&self, lab: &Lab, unreachable: bool) -> Result<(), LabError> {
        lab.exec(
            HOST,
            &["nft", "-f", "-"],
            Some(block_script(unreachable).as_bytes()),
        )
        .map(drop)
    }

    fn pid(&self) -> Result<i32, LabError> {
        i32::try_from(self.process.id())
            .map_err(|_| LabError::BadName("dnsmasq's pid is out of range".into()))
    }

    /// Waits until dnsmasq has logged one more read of its hosts file than
    /// before (the first at its start) and listens on UDP.
    fn wait_for_read(&mut self) -> Result<(), LabError> {
        let want = self.reads + 1;
        let deadline = Instant::now() + READY_TIMEOUT;
        let hosts = self.hosts.display().to_string();
        loop {
            let log = std::fs::read_to_string(&self.log).unwrap_or_default();
            // dnsmasq logs "read <file> - <n> names" (or "addresses").
            let reads = log
                .lines()
                .filter(|l| l.contains(&format!("read {hosts} - ")))
                .count();
            if reads >= want && service::listening(self.process.id(), PORT, Transport::Udp) {
                self.reads = reads;
                return Ok(());
            }
            if let Ok(Some(status)) = self.process.try_wait() {
                return Err(LabError::Unavailable(format!(
                    "dnsmasq exited ({status}): {}",
                    log.lines().last().unwrap_or("no log")
                )));
            }
            if Instant::now() >= deadline {
                return Err(LabError::Unavailable(format!(
                    "dnsmasq did not read {hosts} within {READY_TIMEOUT:?}"
                )));
            }
            std::thread::sleep(Duration::from_millis(5));
        }
    }
}

impl Drop for NameServer {
    fn drop(&mut self) {
        let _ = self.process.kill();
        let _ = self.process.wait();
    }
}

/// One question of a lookup and what came back for it.
struct Question {
    kind: RecordType,
    id: u16,
    wire: Vec<u8>,
    answer: Option<(ResponseCode, Vec<IpAddr>)>,
}

impl Question {
    fn new(name: &Name, kind: RecordType) -> io::Result<Self> {
        let id = rand::random();
        let mut m = Message::new();
        m.set_id(id)
            .set_message_type(MessageType::Query)
            .set_op_code(OpCode::Query)
            .set_recursion_desired(true)
            .add_query(Query::query(name.clone(), kind));
        let wire = m
            .to_vec()
            .map_err(|e| io::Error::other(format!("DNS query: {e}")))?;
        Ok(Question {
            kind,
            id,
            wire,
            answer: None,
        })
    }

    /// Takes `reply` if it answers this question (its id and question).
    fn take(&mut self, reply: &Message, name: &Name) -> bool {
        let ours = reply.id() == self.id
            && reply.message_type() == MessageType::Response
            && reply
                .queries()
                .first()
                .is_some_and(|q| q.query_type() == self.kind && q.name() == name);
        if ours && self.answer.is_none() {
            let addrs = reply
                .answers()
                .iter()
                .filter_map(|r| match r.data() {
                    RData::A(a) => Some(IpAddr::V4(a.0)),
                    RData::AAAA(a) => Some(IpAddr::V6(a.0)),
                    _ => None,
                })
                .collect();
            self.answer = Some((reply.response_code(), addrs));
        }
        ours
    }
}

/// Asks the name server at `server` for `host`'s addresses, as glibc's
/// stub resolver does: the AAAA and A questions together over UDP, each
/// try waiting [`TRY`] for both answers and asking again what is still
/// unanswered, [`TRIES`] tries. The IPv6 addresses come first (RFC 6724
/// prefers them where the host has IPv6), each paired with `port`.
///
/// # Errors
///
/// `NotFound` when the name does not exist or has no address; `TimedOut`
/// (a temporary failure) when a question went unanswered through every
/// try; another error for a socket failure or an answer that is an error.
///
/// # Cancel safety
///
/// Cancel safe: dropping the future drops its socket; nothing is kept.
pub async fn lookup(server: SocketAddr, host: &str, port: u16) -> io::Result<Vec<SocketAddr>> {
    let mut name = Name::from_ascii(host)
        .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, format!("`{host}`: {e}")))?;
    // On the wire every name is absolute; so is the question in a reply.
    name.set_fqdn(true);
    let mut questions = [
        Question::new(&name, RecordType::AAAA)?,
        Question::new(&name, RecordType::A)?,
    ];
    let local: IpAddr = if server.is_ipv6() {
        Ipv6Addr::UNSPECIFIED.into()
    } else {
        Ipv4Addr::UNSPECIFIED.into()
    };
    let socket = tokio::net::UdpSocket::bind(SocketAddr::new(local, 0)).await?;
    socket.connect(server).await?;
    let mut buf = [0u8; MAX_UDP_MESSAGE];
    for _ in 0..TRIES {
        for q in questions.iter().filter(|q| q.answer.is_none()) {
            socket.send(&q.wire).await?;
        }
        let deadline = tokio::time::Instant::now() + TRY;
        while questions.iter().any(|q| q.answer.is_none()) {
            let Ok(received) = tokio::time::timeout_at(deadline, socket.recv(&mut buf)).await
            else {
                break;
            };
            let n = received?;
            // What is not a DNS message, or answers nothing we asked, is
            // ignored (a late answer to a query of an earlier lookup).
            let Ok(reply) = Message::from_vec(buf.get(..n).unwrap_or_default()) else {
                continue;
            };
            for q in &mut questions {
                if q.take(&reply, &name) {
                    break;
                }
            }
        }
        if questions.iter().all(|q| q.answer.is_some()) {
            return answer(host, port, &questions);
        }
    }
    Err(io::Error::new(
        io::ErrorKind::TimedOut,
        "temporary failure in name resolution (the name server did not answer)",
    ))
}

/// The addresses of answered `questions`, or the error they amount to.
fn answer(host: &str, port: u16, questions: &[Question]) -> io::Result<Vec<SocketAddr>> {
    let mut addrs = Vec::new();
    for (code, found) in questions.iter().filter_map(|q| q.answer.as_ref()) {
        match *code {
            ResponseCode::NoError => {
                addrs.extend(found.iter().map(|ip| SocketAddr::new(*ip, port)))
            }
            ResponseCode::NXDomain => {}
            other => {
                return Err(io::Error::other(format!(
                    "the name server answered `{host}` with {other}"
                )))
            }
        }
    }
    if addrs.is_empty() {
        return Err(io::Error::new(
            io::ErrorKind::NotFound,
            format!("no lab host `{host}`"),
        ));
    }
    Ok(addrs)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_hosts_file_lists_every_address_of_every_name() {
        let server: Vec<IpAddr> = vec![
            "2001:db8:0:2::2".parse().unwrap(),
            "198.18.2.2".parse().unwrap(),
        ];
        let client: Vec<IpAddr> = vec!["198.18.1.2".parse().unwrap()];
        assert_eq!(
            hosts_file([("server", &server[..]), ("client", &client[..])]),
            "198.18.1.2 client\n198.18.2.2 server\n2001:db8:0:2::2 server\n"
        );
    }

    #[test]
    fn the_block_drops_port_53_and_its_removal_only_deletes_the_table() {
        assert_eq!(
            block_script(true),
            "table inet nm-dns\ndelete table inet nm-dns\ntable inet nm-dns {\n  chain input {\n    type filter hook input priority 0; policy accept;\n    udp dport 53 drop\n    tcp dport 53 drop\n  }\n}\n"
        );
        assert_eq!(
            block_script(false),
            "table inet nm-dns\ndelete table inet nm-dns\n"
        );
    }

    #[test]
    fn a_lab_with_changing_or_failing_names_needs_a_server() {
        let at = Duration::from_secs(1);
        assert!(needed(&[(at, Action::NameServiceDown(true))]));
        assert!(needed(&[(
            at,
            Action::AddressChange {
                host: crate::scenario::HostRole::Server
            }
        )]));
        assert!(!needed(&[
            (at, Action::Reset),
            (at, Action::Blackhole(true))
        ]));
    }

    /// A name server on loopback that answers `replies(question)` to each
    /// question it gets, and counts them.
    async fn fake_server(
        replies: impl Fn(&Message) -> Vec<Message> + Send + 'static,
    ) -> (SocketAddr, std::sync::Arc<std::sync::atomic::AtomicUsize>) {
        use std::sync::atomic::Ordering;
        let socket = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let addr = socket.local_addr().unwrap();
        let asked = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let counter = asked.clone();
        tokio::spawn(async move {
            let mut buf = [0u8; 512];
            while let Ok((n, from)) = socket.recv_from(&mut buf).await {
                counter.fetch_add(1, Ordering::SeqCst);
                let q = Message::from_vec(&buf[..n]).unwrap();
                for r in replies(&q) {
                    socket.send_to(&r.to_vec().unwrap(), from).await.unwrap();
                }
            }
        });
        (addr, asked)
    }

    fn reply(q: &Message, code: ResponseCode, addrs: &[IpAddr]) -> Message {
        use hickory_proto::rr::{rdata, Record};
        let mut m = Message::new();
        m.set_id(q.id())
            .set_message_type(MessageType::Response)
            .set_response_code(code);
        let query = q.queries()[0].clone();
        for a in addrs {
            let data = match (a, query.query_type()) {
                (IpAddr::V4(v4), RecordType::A) => RData::A(rdata::A(*v4)),
                (IpAddr::V6(v6), RecordType::AAAA) => RData::AAAA(rdata::AAAA(*v6)),
                _ => continue,
            };
            m.add_answer(Record::from_rdata(query.name().clone(), 0, data));
        }
        m.add_query(query);
        m
    }

    #[tokio::test]
    async fn both_families_come_back_ipv6_first_with_the_port() {
        let addrs: Vec<IpAddr> = vec![
            "198.18.2.2".parse().unwrap(),
            "2001:db8:0:2::2".parse().unwrap(),
        ];
        let (server, asked) =
            fake_server(move |q| vec![reply(q, ResponseCode::NoError, &addrs)]).await;
        let got = lookup(server, "server", 7000).await.unwrap();
        assert_eq!(
            got,
            vec![
                "[2001:db8:0:2::2]:7000".parse().unwrap(),
                "198.18.2.2:7000".parse().unwrap()
            ]
        );
        assert_eq!(asked.load(std::sync::atomic::Ordering::SeqCst), 2);
    }

    #[tokio::test]
    async fn an_unknown_name_is_not_found_and_a_refusal_is_an_error() {
        let (server, _) = fake_server(|q| vec![reply(q, ResponseCode::NXDomain, &[])]).await;
        let e = lookup(server, "nothere", 1).await.unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::NotFound);
        assert_eq!(e.to_string(), "no lab host `nothere`");
        let (server, _) = fake_server(|q| vec![reply(q, ResponseCode::Refused, &[])]).await;
        let e = lookup(server, "server", 1).await.unwrap_err();
        assert_eq!(
            e.to_string(),
            "the name server answered `server` with Query Refused"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_silent_server_is_asked_twice_and_the_lookup_fails_after_both_tries() {
        let (server, asked) = fake_server(|_| Vec::new()).await;
        let t = tokio::time::Instant::now();
        let e = lookup(server, "server", 1).await.unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::TimedOut);
        assert_eq!(t.elapsed(), TRY * TRIES);
        // Two questions per try (the server may read the last ones after
        // the lookup gave up).
        for _ in 0..10_000 {
            if asked.load(std::sync::atomic::Ordering::SeqCst) == 4 {
                break;
            }
            tokio::task::yield_now().await;
        }
        assert_eq!(asked.load(std::sync::atomic::Ordering::SeqCst), 4);
    }

    #[tokio::test]
    async fn a_reply_with_another_id_or_question_is_ignored() {
        let addr: Vec<IpAddr> = vec!["198.18.2.2".parse().unwrap()];
        let (server, _) = fake_server(move |q| {
            let mut wrong_id = reply(q, ResponseCode::NoError, &["198.18.9.9".parse().unwrap()]);
            wrong_id.set_id(q.id().wrapping_add(1));
            let mut other = q.clone();
            other.queries_mut()[0].set_name(Name::from_ascii("elsewhere").unwrap());
            let wrong_question = reply(
                &other,
                ResponseCode::NoError,
                &["198.18.9.8".parse().unwrap()],
            );
            vec![
                wrong_id,
                wrong_question,
                reply(q, ResponseCode::NoError, &addr),
            ]
        })
        .await;
        assert_eq!(
            lookup(server, "server", 1).await.unwrap(),
            vec!["198.18.2.2:1".parse::<SocketAddr>().unwrap()]
        );
    }
}
