//! A TLS client on one connection: the handshake's outcome (ALPN, the certificate the server
//! chose) and requests sent over that very connection, HTTP/2 or HTTP/1.1 as ALPN agreed.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderName, HeaderValue, Request, Version};
use http_body_util::{BodyExt, Full};
use hyper::client::conn::{http1, http2};
use hyper_util::rt::{TokioExecutor, TokioIo};
use rustls::pki_types::{CertificateDer, ServerName};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;

use super::Answer;

enum Sender {
    H1(http1::SendRequest<Full<Bytes>>),
    H2(http2::SendRequest<Full<Bytes>>),
}

/// One open TLS connection to the gateway.
pub struct HttpsConn {
    /// The protocol ALPN settled on.
    pub alpn: Option<Vec<u8>>,
    /// The leaf certificate the server presented.
    pub peer: CertificateDer<'static>,
    host: String,
    sender: Sender,
}

/// The TLS handshake alone: the leaf certificate presented and the ALPN result, or the error.
pub async fn handshake(
    addr: SocketAddr,
    server_name: &str,
    config: Arc<rustls::ClientConfig>,
) -> std::io::Result<(
    tokio_rustls::client::TlsStream<TcpStream>,
    CertificateDer<'static>,
    Option<Vec<u8>>,
)> {
    let tcp = TcpStream::connect(addr).await?;
    let name = ServerName::try_from(server_name.to_string()).expect("server name");
    let tls = tokio::time::timeout(
        Duration::from_secs(10),
        TlsConnector::from(config).connect(name, tcp),
    )
    .await
    .map_err(|_| std::io::Error::other("handshake timed out"))??;
    let (_, session) = tls.get_ref();
    let peer = session
        .peer_certificates()
        .and_then(|c| c.first())
        .expect("server sent a certificate")
        .clone()
        .into_owned();
    let alpn = session.alpn_protocol().map(<[u8]>::to_vec);
    Ok((tls, peer, alpn))
}

impl HttpsConn {
    /// Connects to `addr` asking for `server_name` (SNI, and the requests' host).
    pub async fn open(
        addr: SocketAddr,
        server_name: &str,
        config: Arc<rustls::ClientConfig>,
    ) -> std::io::Result<HttpsConn> {
        let (tls, peer, alpn) = handshake(addr, server_name, config).await?;
        let io = TokioIo::new(tls);
        let sender = if alpn.as_deref() == Some(b"h2") {
            let (sender, conn) = http2::handshake(TokioExecutor::new(), io)
                .await
                .map_err(std::io::Error::other)?;
            tokio::spawn(conn);
            Sender::H2(sender)
        } else {
            let (sender, conn) = http1::handshake(io).await.map_err(std::io::Error::other)?;
            tokio::spawn(conn);
            Sender::H1(sender)
        };
        Ok(HttpsConn {
            alpn,
            peer,
            host: format!("{server_name}:{}", addr.port()),
            sender,
        })
    }

    /// Sends one request on this connection and reads the whole answer.
    pub async fn send(&mut self, method: &str, path: &str, headers: &[(&str, &str)]) -> Answer {
        self.try_send(method, path, headers)
            .await
            .expect("the gateway answers on this connection")
    }

    pub async fn try_send(
        &mut self,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
    ) -> Result<Answer, hyper::Error> {
        let mut req = Request::builder().method(method);
        req = match self.sender {
            Sender::H2(_) => req
                .uri(format!("https://{}{path}", self.host))
                .version(Version::HTTP_2),
            Sender::H1(_) => req.uri(path).header("host", &self.host),
        };
        for (name, value) in headers {
            req = req.header(
                HeaderName::from_bytes(name.as_bytes()).expect("header name"),
                HeaderValue::from_str(value).expect("header value"),
            );
        }
        let req = req.body(Full::new(Bytes::new())).expect("request");
        let response = match &mut self.sender {
            Sender::H1(s) => {
                s.ready().await?;
                s.send_request(req).await?
            }
            Sender::H2(s) => {
                s.ready().await?;
                s.send_request(req).await?
            }
        };
        let (parts, body) = response.into_parts();
        let body = body.collect().await?.to_bytes();
        Ok(Answer {
            status: parts.status,
            headers: parts.headers,
            body,
        })
    }
}
