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
