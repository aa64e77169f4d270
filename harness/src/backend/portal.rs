//! The captive portal of a network change (`captive_for`): what the new
//! network's gateway does to every TCP connection until the user "logs in".
//! One behaviour for both backends: the sim middlebox calls [`answer`] on
//! the flows it intercepts, the netns router runs [`serve`] behind a DNAT
//! rule.

use tokio::io::{AsyncWrite, AsyncWriteExt};

/// Port the netns router's portal listens on (in the router's namespace,
/// which runs nothing else).
pub const PORTAL_PORT: u16 = 8089;

/// The portal's whole answer: a redirect to its login page, then close —
/// what hotel, airport and café portals send to any intercepted request
/// (RFC 8952 describes the pattern).
pub const REDIRECT: &[u8] = b"HTTP/1.1 302 Found\r\n\
Location: http://portal.invalid/login\r\n\
Content-Length: 0\r\n\
Connection: close\r\n\r\n";

/// Answers one intercepted connection: the redirect at once, then close.
pub async fn answer<S: AsyncWrite + Unpin>(mut stream: S) {
    let _ = stream.write_all(REDIRECT).await;
    let _ = stream.shutdown().await;
}

/// Accepts on `listener` and answers every connection, until dropped.
pub async fn serve(listener: tokio::net::TcpListener) {
    while let Ok((stream, _)) = listener.accept().await {
        tokio::spawn(answer(stream));
    }
}
