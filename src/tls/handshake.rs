//! The server side of one TLS handshake: bounded in time, and reporting which HTTP version ALPN
//! settled on so the connection is served with exactly that protocol.
//!
//! A handshake that fails or times out is the client's problem, never the listener's: callers
//! log it and drop the socket.

use std::io;
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite};
use tokio_rustls::TlsAcceptor;
use tokio_rustls::server::TlsStream;

/// The HTTP version a TLS connection agreed on (RFC 7301).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Alpn {
    /// `h2`: the client's first bytes will be the HTTP/2 preface.
    H2,
    /// `http/1.1`.
    Http11,
    /// No ALPN (old or scripted clients): whatever the client speaks.
    None,
}

/// Why a TLS handshake did not complete.
#[derive(Debug, thiserror::Error)]
pub enum HandshakeError {
    #[error("TLS handshake not done after {0:?}")]
    Timeout(Duration),
    #[error("TLS handshake failed: {0}")]
    Failed(#[source] io::Error),
}

/// Runs the TLS handshake on `io`, giving up after `limit`.
pub async fn handshake<IO>(
    acceptor: &TlsAcceptor,
    io: IO,
    limit: Duration,
) -> Result<(TlsStream<IO>, Alpn), HandshakeError>
where
    IO: AsyncRead + AsyncWrite + Unpin,
{
    let stream = tokio::time::timeout(limit, acceptor.accept(io))
        .await
        .map_err(|_| HandshakeError::Timeout(limit))?
        .map_err(HandshakeError::Failed)?;
    let alpn = match stream.get_ref().1.alpn_protocol() {
        Some(b"h2") => Alpn::H2,
        Some(b"http/1.1") => Alpn::Http11,
        // The server config offers only those two, so rustls never agrees on anything else.
        _ => Alpn::None,
    };
    Ok((stream, alpn))
}
