//! The first handshake agrees on the resume secret by X25519: someone who
//! recorded every byte of it still cannot resume the session.

use crate::session::auth::{Credentials, KeyPair, Prover};
use crate::session::frame::{Decoder, Frame, SessionId, PROTOCOL_VERSION};
use crate::session::{AcceptError, Accepted, Acceptor, Config};
use tokio::io::{AsyncReadExt, AsyncWriteExt, DuplexStream};

/// Reads frames until one arrives; records the raw bytes read.
async fn next_frame(s: &mut DuplexStream, dec: &mut Decoder, seen: &mut Vec<u8>) -> Frame {
    let mut buf = [0u8; 256];
    loop {
        if let Ok(Some(f)) = dec.next_frame() {
            return f;
        }
        let n = s.read(&mut buf).await.unwrap();
        assert!(n > 0, "closed");
        seen.extend_from_slice(&buf[..n]);
        dec.feed(&buf[..n]);
    }
}

/// Opens a transport to `acceptor` and asks to resume `id` with `token`
/// (the proof is computed as an honest client would).
async fn try_resume(
    acceptor: &Acceptor,
    id: SessionId,
    token: [u8; 16],
) -> Result<(), AcceptError> {
    let (mut c, s) = tokio::io::duplex(4096);
    let acc = acceptor.clone();
    let task = tokio::spawn(async move { acc.accept(s).await });
    let mut dec = Decoder::new(1024);
    let Frame::ServerHello { nonce, .. } = next_frame(&mut c, &mut dec, &mut Vec::new()).await
    else {
        panic!("no ServerHello");
    };
    let creds = Credentials { id, token };
    let mut out = Vec::new();
    Frame::Resume {
        version: PROTOCOL_VERSION,
        session_id: id,
        recv_offset: 0,
        proof: creds.proof(Prover::Client, &nonce, 0),
    }
    .encode(&mut out);
    c.write_all(&out).await.unwrap();
    task.await
        .unwrap()
        .map(|a| assert!(matches!(a, Accepted::Resumed(_))))
}

#[tokio::test(start_paused = true)]
async fn a_recorded_first_handshake_gives_no_way_to_resume() {
    let acceptor = Acceptor::new(Config::default()).unwrap();
    // The legitimate client's first handshake, every byte recorded.
    let (mut c, s) = tokio::io::duplex(4096);
    let acc = acceptor.clone();
    let accepted = tokio::spawn(async move { acc.accept(s).await });
    let mut transcript = Vec::new();
    let mut dec = Decoder::new(1024);
    let _hello = next_frame(&mut c, &mut dec, &mut transcript).await;
    let mine = KeyPair::from_random([42; 32]);
    let mut out = Vec::new();
    Frame::NewSession {
        version: PROTOCOL_VERSION,
        key: mine.public(),
    }
    .encode(&mut out);
    transcript.extend_from_slice(&out);
    c.write_all(&out).await.unwrap();
    let Frame::Welcome { session_id, key } = next_frame(&mut c, &mut dec, &mut transcript).await
    else {
        panic!("no Welcome");
    };
    let Ok(Accepted::New(_session)) = accepted.await.unwrap() else {
        panic!("no session");
    };
    drop(c);

    // The observer has the transcript: the session id and both public
    // keys, nothing secret. Every 16-byte window of it as a token fails.
    assert!(transcript.len() > 100);
    for w in transcript.windows(16).step_by(4) {
        let mut guess = [0u8; 16];
        guess.copy_from_slice(w);
        assert!(matches!(
            try_resume(&acceptor, session_id, guess).await,
            Err(AcceptError::BadProof(_))
        ));
    }
    // A key pair of the observer's own agrees on something else.
    let theirs = KeyPair::from_random([7; 32]);
    let wrong = theirs
        .agree(session_id, &key, &mine.public(), &key)
        .unwrap();
    assert!(matches!(
        try_resume(&acceptor, session_id, wrong.token).await,
        Err(AcceptError::BadProof(_))
    ));
    // The client, with its secret, can.
    let right = mine.agree(session_id, &key, &mine.public(), &key).unwrap();
    assert!(try_resume(&acceptor, session_id, right.token).await.is_ok());
}

#[tokio::test(start_paused = true)]
async fn a_degenerate_client_key_is_refused() {
    let acceptor = Acceptor::new(Config::default()).unwrap();
    let (mut c, s) = tokio::io::duplex(4096);
    let acc = acceptor.clone();
    let accepted = tokio::spawn(async move { acc.accept(s).await });
    let mut dec = Decoder::new(1024);
    let _ = next_frame(&mut c, &mut dec, &mut Vec::new()).await;
    let mut out = Vec::new();
    // The all-zero point: the shared secret would be zero, known to all.
    Frame::NewSession {
        version: PROTOCOL_VERSION,
        key: [0; 32],
    }
    .encode(&mut out);
    c.write_all(&out).await.unwrap();
    assert!(matches!(
        accepted.await.unwrap(),
        Err(AcceptError::Handshake(_))
    ));
    assert_eq!(acceptor.session_count(), 0);
}
