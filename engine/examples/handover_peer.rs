//! A process on the other end of a socket handover: what the engine's tests
//! run as a real second process, and an example of receiving (and
//! sending) live sockets with `netmend::handover`.
//!
//! ```text
//! handover_peer receive PATH     bind a rendezvous at PATH, print "ready",
//!                                take one socket and use it by its kind:
//!                                  TCP stream: write "child got TAG/STATE",
//!                                    then echo everything until EOF
//!                                  TCP listener: accept one connection and
//!                                    write "accepted by the child"
//!                                  UDP: send "udp from the child" to the
//!                                    address in STATE
//! handover_peer session PATH ADDR
//!                                bind a rendezvous at PATH, print "ready",
//!                                take a detached session (its transport and
//!                                state; the key in NETMEND_STATE_KEY, hex,
//!                                the stream's length in the tag, "total=N"),
//!                                attach it (resuming through ADDR if its
//!                                transport is gone), write the rest of the
//!                                stream, read to the end, print
//!                                "wrote FROM..TO read N sha256 HEX"
//! handover_peer connect PATH     connect to the rendezvous at PATH and
//!                                report how it went (the refusal tests
//!                                run this as another user)
//! ```
//!
//! A PATH that begins with `@` names a rendezvous in the abstract namespace.
//! Exit status 0 when it went as described; 3 with the error on stderr.

#[cfg(target_os = "linux")]
fn main() {
    let args: Vec<String> = std::env::args().collect();
    let (Some(mode), Some(path)) = (args.get(1), args.get(2)) else {
        eprintln!("usage: handover_peer receive|connect PATH");
        std::process::exit(2);
    };
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("runtime: {e}");
            std::process::exit(3);
        }
    };
    let result = runtime.block_on(async {
        match mode.as_str() {
            "receive" => receive(path).await,
            "session" => match args.get(3) {
                Some(addr) => session(path, addr).await,
                None => Err("usage: handover_peer session PATH ADDR".into()),
            },
            "connect" => connect(path).await,
            other => Err(format!("unknown mode {other}")),
        }
    });
    if let Err(e) = result {
        eprintln!("{e}");
        std::process::exit(3);
    }
}

#[cfg(target_os = "linux")]
async fn receive(path: &str) -> Result<(), String> {
    use netmend::handover::{Allow, Rendezvous, Socket};
    use std::io::{Read, Write};

    let rendezvous = match path.strip_prefix('@') {
        Some(name) => Rendezvous::bind_abstract(name.as_bytes(), Allow::same_user()),
        None => Rendezvous::bind(path, Allow::same_user()),
    }
    .map_err(|e| e.to_string())?;
    println!("ready");
    let mut channel = rendezvous.accept().await.map_err(|e| e.to_string())?;
    let received = channel.recv().await.map_err(|e| e.to_string())?;
    let state = String::from_utf8_lossy(&received.state).into_owned();
    match received.socket {
        Socket::TcpStream(mut stream) => {
            write!(stream, "child got {}/{state}", received.tag).map_err(|e| e.to_string())?;
            let mut buf = [0u8; 64 << 10];
            loop {
                match stream.read(&mut buf) {
                    Ok(0) => return Ok(()),
                    Ok(n) => stream.write_all(&buf[..n]).map_err(|e| e.to_string())?,
                    Err(e) => return Err(e.to_string()),
                }
            }
        }
        Socket::TcpListener(listener) => {
            let (mut stream, _) = listener.accept().map_err(|e| e.to_string())?;
            stream
                .write_all(b"accepted by the child")
                .map_err(|e| e.to_string())
        }
        Socket::Udp(socket) => {
            socket
                .send_to(b"udp from the child", state.as_str())
                .map_err(|e| e.to_string())?;
            Ok(())
        }
    }
}

#[cfg(target_os = "linux")]
async fn session(path: &str, addr: &str) -> Result<(), String> {
    use netmend::handover::{Allow, Rendezvous, Socket};
    use netmend::session::{SessionBuilder, StateKey};
    use sha2::{Digest, Sha256};
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    let hex = std::env::var("NETMEND_STATE_KEY").map_err(|_| "NETMEND_STATE_KEY unset")?;
    let mut key = [0u8; 32];
    for (i, b) in key.iter_mut().enumerate() {
        *b = hex
            .get(2 * i..2 * i + 2)
            .and_then(|h| u8::from_str_radix(h, 16).ok())
            .ok_or("NETMEND_STATE_KEY: 64 hex digits")?;
    }
    let rendezvous = Rendezvous::bind(path, Allow::same_user()).map_err(|e| e.to_string())?;
    println!("ready");
    let mut channel = rendezvous.accept().await.map_err(|e| e.to_string())?;
    let received = channel.recv().await.map_err(|e| e.to_string())?;
    let total: u64 = received
        .tag
        .strip_prefix("total=")
        .and_then(|n| n.parse().ok())
        .ok_or("tag: total=N")?;
    let Socket::TcpStream(stream) = received.socket else {
        return Err("expected the session's TCP transport".into());
    };
    stream.set_nonblocking(true).map_err(|e| e.to_string())?;
    let transport = tokio::net::TcpStream::from_std(stream).map_err(|e| e.to_string())?;
    let addr = addr.to_string();
    let mut session = SessionBuilder::new()
        .attach(
            &received.state,
            &StateKey::from_bytes(key),
            Some(transport),
            move || tokio::net::TcpStream::connect(addr.clone()),
        )
        .await
        .map_err(|e| e.to_string())?;
    let from = session.delivery().written;
    let mut offset = from;
    let mut chunk = vec![0u8; 64 << 10];
    while offset < total {
        let n = (total - offset).min(chunk.len() as u64) as usize;
        for (i, b) in chunk[..n].iter_mut().enumerate() {
            *b = ((offset + i as u64) % 251) as u8;
        }
        session
            .write_all(&chunk[..n])
            .await
            .map_err(|e| e.to_string())?;
        offset += n as u64;
    }
    session.shutdown().await.map_err(|e| e.to_string())?;
    let mut read = Vec::new();
    session
        .read_to_end(&mut read)
        .await
        .map_err(|e| e.to_string())?;
    let digest = Sha256::digest(&read);
    let hex: String = digest.iter().map(|b| format!("{b:02x}")).collect();
    println!("wrote {from}..{offset} read {} sha256 {hex}", read.len());
    Ok(())
}

#[cfg(target_os = "linux")]
async fn connect(path: &str) -> Result<(), String> {
    use netmend::handover::{Allow, Channel};
    let channel = match path.strip_prefix('@') {
        Some(name) => Channel::connect_abstract(name.as_bytes(), Allow::same_user()),
        None => Channel::connect(path, Allow::same_user()).await,
    }
    .map_err(|e| e.to_string())?;
    println!("connected to pid {}", channel.peer().pid);
    Ok(())
}

#[cfg(not(target_os = "linux"))]
fn main() {
    eprintln!("socket handover is Linux-only for now");
    std::process::exit(2);
}
