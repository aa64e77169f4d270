//! The engine over TLS (tokio-rustls): what TLS adds — confidentiality and
//! the server's identity — with the session's resume on top. A transport
//! reset mid-stream kills the TLS connection; the session resumes on a new
//! one with every byte exactly once.

use super::session_tcp::{fast_policy, pattern, reset_and_wait, Relay};
use crate::session::{Accepted, Acceptor, Config, SessionBuilder};
use std::sync::Arc;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::rustls;

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

#[tokio::test]
async fn a_session_over_tls_resumes_after_resets_with_exact_bytes() {
    let cert = rcgen::generate_simple_self_signed(vec!["netmend.test".to_string()]).unwrap();
    let cert_der = cert.cert.der().clone();
    let key_der =
        rustls::pki_types::PrivateKeyDer::try_from(cert.signing_key.serialize_der()).unwrap();
    let server_config = rustls::ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(vec![cert_der.clone()], key_der)
        .unwrap();
    let mut roots = rustls::RootCertStore::empty();
    roots.add(cert_der).unwrap();
    let client_config = rustls::ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();

    // Server: TLS, then the acceptor; new sessions are echoed to `got`.
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let server_addr = listener.local_addr().unwrap();
    let tls = tokio_rustls::TlsAcceptor::from(Arc::new(server_config));
    let acceptor = Acceptor::new(Config::default()).unwrap();
    let (got_tx, mut got) = tokio::sync::mpsc::channel(1);
    tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            let (tls, acceptor, got_tx) = (tls.clone(), acceptor.clone(), got_tx.clone());
            tokio::spawn(async move {
                let _ = tcp.set_nodelay(true);
                let Ok(stream) = tls.accept(tcp).await else {
                    return;
                };
                if let Ok(Accepted::New(mut session)) = acceptor.accept(stream).await {
                    let mut all = Vec::new();
                    let _ = session.read_to_end(&mut all).await;
                    let _ = session.shutdown().await;
                    let _ = got_tx.send(all).await;
                }
            });
        }
    });

    // Client: through a relay that resets, TLS to the server's name.
    let (relay_addr, relay) = Relay::start(server_addr).await;
    let connector = tokio_rustls::TlsConnector::from(Arc::new(client_config));
    let mut session = SessionBuilder::new()
        .policy(fast_policy())
        .connect(move || {
            let connector = connector.clone();
            async move {
                let tcp = TcpStream::connect(relay_addr).await?;
                tcp.set_nodelay(true)?;
                let name = rustls::pki_types::ServerName::try_from("netmend.test")
                    .map_err(std::io::Error::other)?;
                connector.connect(name, tcp).await
            }
        })
        .await
        .unwrap();
    let data = pattern(2 << 20);
    for (i, chunk) in data.chunks(64 << 10).enumerate() {
        session.write_all(chunk).await.unwrap();
        if i % 8 == 7 {
            reset_and_wait(&relay, &session).await;
        }
    }
    session.shutdown().await.unwrap();
    let received = got.recv().await.unwrap();
    assert!(received == data, "exact bytes, in order, over TLS");
    assert!(session.stats().protocol.resumes >= 3);
}
