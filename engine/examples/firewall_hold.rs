//! Opens the host firewall for a port and holds it until a signal: SIGTERM
//! or SIGINT close the openings (`close_on_signal`), SIGKILL leaves them for
//! `sweep` — what the firewall tests show.
//!
//! ```text
//! firewall_hold APP INSTANCE PORT
//! ```
//!
//! Prints "open" once the rules are in place, "closed on signal N" after.

#[cfg(target_os = "linux")]
fn main() {
    use netmend::firewall::{detect, open, Protocol, Request};
    let args: Vec<String> = std::env::args().collect();
    let (Some(app), Some(instance), Some(port)) = (args.get(1), args.get(2), args.get(3)) else {
        eprintln!("usage: firewall_hold APP INSTANCE PORT");
        std::process::exit(2);
    };
    let Ok(port) = port.parse::<u16>() else {
        eprintln!("bad port {port}");
        std::process::exit(2);
    };
    let result = Request::new(app, instance)
        .map_err(|e| e.to_string())
        .and_then(|r| {
            let manager = detect().map_err(|e| e.to_string())?;
            open(&r.allow(Protocol::Tcp, &[port]), &manager).map_err(|e| e.to_string())
        });
    match result {
        Ok(guard) => {
            println!("open");
            // SIGINT/SIGTERM close the openings first; SIGKILL leaves them
            // for `sweep`.
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build();
            match runtime.map(|rt| rt.block_on(netmend::firewall::close_on_signal(guard))) {
                Ok(Ok(signal)) => println!("closed on signal {signal}"),
                Ok(Err(e)) => {
                    eprintln!("{e}");
                    std::process::exit(3);
                }
                Err(e) => {
                    eprintln!("runtime: {e}");
                    std::process::exit(3);
                }
            }
        }
        Err(e) => {
            eprintln!("{e}");
            std::process::exit(3);
        }
    }
}

#[cfg(not(target_os = "linux"))]
fn main() {
    eprintln!("the firewall executor is Linux-only for now");
    std::process::exit(2);
}
