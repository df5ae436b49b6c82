//! What the origin learns about who asked, and which request targets are refused before routing:
//! forwarding headers believed only from trusted proxies, never removable through `Connection`;
//! userinfo in a target and an HTTP/2 `Host` that contradicts `:authority` answered 400.

use std::net::SocketAddr;
use std::time::Duration;

use crate::common::*;
use bytes::Bytes;
use http::{Request, StatusCode};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const CLAIMS: [(&str, &str); 5] = [
    ("x-forwarded-for", "203.0.113.7"),
    ("forwarded", "for=203.0.113.7;proto=https"),
    ("x-real-ip", "203.0.113.7"),
    ("x-forwarded-proto", "https"),
    ("x-forwarded-host", "claimed.example"),
];

/// `CLAIMS`, plus a `Connection` header naming one of them and an ordinary header.
fn claims_naming_xff_in_connection() -> Vec<(&'static str, &'static str)> {
    let mut headers = CLAIMS.to_vec();
    headers.push(("connection", "X-Forwarded-For, x-foo"));
    headers.push(("x-foo", "hop"));
    headers
}

async fn trusting_gateway(origin: &Origin, trusted: &[&str]) -> corsgate::gateway::Running {
    let mut config = config(vec![route(&["*"], origin, None)]);
    config.server.trusted_proxies = trusted
        .iter()
        .map(|net| net.parse().expect("test net"))
        .collect();
    start(config).await
}

#[tokio::test]
async fn an_untrusted_client_forwarding_claims_are_replaced_by_its_own_address() {
    let origin = Origin::start(Reply::default()).await;
    let gateway = trusting_gateway(&origin, &["10.0.0.0/8"]).await;
    let headers = claims_naming_xff_in_connection();
    let answer = send(gateway.addr(), "GET", "/k", &headers).await;
    assert_eq!(answer.status, StatusCode::OK);

    let seen = &origin.received()[0].headers;
    let host = gateway.addr().to_string();
    assert_eq!(seen["x-forwarded-for"], "127.0.0.1");
    assert_eq!(seen["x-real-ip"], "127.0.0.1");
    assert_eq!(
        seen["forwarded"],
        format!("for=127.0.0.1;proto=http;host=\"{host}\"").as_str()
    );
    assert_eq!(seen["x-forwarded-proto"], "http");
    assert_eq!(seen["x-forwarded-host"], host.as_str());
    for name in ["x-forwarded-for", "forwarded", "x-real-ip"] {
        assert_eq!(seen.get_all(name).iter().count(), 1, "{name}: one line");
    }
    assert!(
        !seen.contains_key("x-foo"),
        "Connection still removes x-foo"
    );
    assert!(!seen.contains_key("connection"));
    gateway.shutdown().await;
}

#[tokio::test]
async fn a_trusted_proxy_forwarding_headers_are_kept_and_appended_to() {
    let origin = Origin::start(Reply::default()).await;
    let gateway = trusting_gateway(&origin, &["127.0.0.1/32"]).await;
    let headers = claims_naming_xff_in_connection();
    send(gateway.addr(), "GET", "/k", &headers).await;

    let seen = &origin.received()[0].headers;
    assert_eq!(
        seen["x-forwarded-for"], "203.0.113.7, 127.0.0.1",
        "Connection cannot remove X-Forwarded-For"
    );
    assert_eq!(
        seen["forwarded"],
        "for=203.0.113.7;proto=https, for=127.0.0.1"
    );
    assert_eq!(seen["x-real-ip"], "203.0.113.7");
    assert_eq!(seen["x-forwarded-proto"], "https");
    assert_eq!(seen["x-forwarded-host"], "claimed.example");
    assert!(
        !seen.contains_key("x-foo"),
        "Connection still removes x-foo"
    );

    // A proxy that only writes X-Forwarded-For: the real client is the last untrusted entry.
    send(
        gateway.addr(),
        "GET",
        "/k",
        &[("x-forwarded-for", "198.51.100.1, 203.0.113.7")],
    )
    .await;
    let seen = &origin.received()[1].headers;
    assert_eq!(
        seen["x-forwarded-for"],
        "198.51.100.1, 203.0.113.7, 127.0.0.1"
    );
    assert_eq!(seen["x-real-ip"], "203.0.113.7");
    assert_eq!(
        seen["forwarded"],
        format!("for=127.0.0.1;proto=http;host=\"{}\"", gateway.addr()).as_str()
    );
    gateway.shutdown().await;
}

/// Sends raw bytes and reads the whole answer (the request asks the gateway to close after it).
/// The forwarding headers as the origin received them: every line of each, in order.
fn forwarding_lines(received: &http::HeaderMap) -> Vec<(&'static str, Vec<String>)> {
    let names = [
        "x-forwarded-for",
        "forwarded",
        "x-real-ip",
        "x-forwarded-proto",
        "x-forwarded-host",
    ];
    names
        .into_iter()
        .map(|name| {
            let lines = received.get_all(name).iter();
            let lines = lines.map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned());
            (name, lines.collect())
        })
        .collect()
}

#[tokio::test]
async fn a_get_and_an_upload_tell_the_origin_the_same_about_who_asked() {
    // The GET goes through corsgate's own client, the upload through hyper's.
    for trusted in [&["10.0.0.0/8"][..], &["127.0.0.1/32"][..]] {
        let origin = Origin::start(Reply::default()).await;
        let gateway = trusting_gateway(&origin, trusted).await;
        let headers = claims_naming_xff_in_connection();
        let get = send(gateway.addr(), "GET", "/k", &headers).await;
        let put = send_body(gateway.addr(), "PUT", "/k", &headers, "data").await;
        assert_eq!((get.status, put.status), (StatusCode::OK, StatusCode::OK));

        let received = origin.received();
        assert_eq!(received.len(), 2);
        assert_eq!(received[1].body_len, 4, "the upload went with its body");
        let (get, put) = (
            forwarding_lines(&received[0].headers),
            forwarding_lines(&received[1].headers),
        );
        assert_eq!(get, put, "trusting {trusted:?}");
        assert!(get.iter().all(|(_, lines)| lines.len() == 1), "{get:?}");
        gateway.shutdown().await;
    }
}

async fn exchange(gateway: SocketAddr, request: &str) -> String {
    let mut stream = TcpStream::connect(gateway).await.expect("connect");
    stream.write_all(request.as_bytes()).await.expect("write");
    let mut answer = Vec::new();
    tokio::time::timeout(Duration::from_secs(10), stream.read_to_end(&mut answer))
        .await
        .expect("the gateway answers and closes")
        .expect("read");
    String::from_utf8_lossy(&answer).into_owned()
}

#[tokio::test]
async fn an_absolute_target_with_userinfo_is_400_and_never_forwarded() {
    let origin = Origin::start(Reply::default()).await;
    let gateway = gateway_for(&origin, None).await;
    let addr = gateway.addr();

    let answer = exchange(
        addr,
        &format!(
            "GET http://user:pass@{addr}/k HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
        ),
    )
    .await;
    assert!(answer.starts_with("HTTP/1.1 400 "), "{answer}");
    assert!(answer.contains("<Code>InvalidURI</Code>"), "{answer}");
    assert_eq!(origin.count(), 0);

    let plain = exchange(
        addr,
        &format!("GET http://{addr}/k HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"),
    )
    .await;
    assert!(plain.starts_with("HTTP/1.1 200 "), "{plain}");
    assert_eq!(origin.count(), 1);
    gateway.shutdown().await;
}

/// The status and body of an HTTP/2 `GET` with this `Host` header (or none).
async fn h2_get(gateway: SocketAddr, host: Option<&str>) -> (StatusCode, String) {
    let tcp = TcpStream::connect(gateway).await.expect("connect");
    let (h2, connection) = h2::client::handshake(tcp).await.expect("h2c handshake");
    tokio::spawn(connection);
    let mut h2 = h2.ready().await.expect("ready");
    let mut req = Request::get(format!("http://{gateway}/k"));
    if let Some(host) = host {
        req = req.header("host", host);
    }
    let (response, _) = h2
        .send_request(req.body(()).expect("request"), true)
        .expect("send");
    let response = tokio::time::timeout(Duration::from_secs(10), response)
        .await
        .expect("answered")
        .expect("a response");
    let status = response.status();
    let mut body = response.into_body();
    let mut text: Vec<u8> = Vec::new();
    while let Some(chunk) = body.data().await {
        let chunk: Bytes = chunk.expect("body");
        let _ = body.flow_control().release_capacity(chunk.len());
        text.extend_from_slice(&chunk);
    }
    (status, String::from_utf8_lossy(&text).into_owned())
}

#[tokio::test]
async fn an_http2_host_header_that_contradicts_authority_is_400() {
    let origin = Origin::start(Reply::default()).await;
    let gateway = gateway_for(&origin, None).await;
    let addr = gateway.addr();

    let (status, body) = h2_get(addr, Some("other.example")).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    assert!(body.contains("<Code>InvalidArgument</Code>"), "{body}");
    assert_eq!(origin.count(), 0);

    let (status, body) = h2_get(addr, Some(&addr.to_string())).await;
    assert_eq!(status, StatusCode::OK, "a matching Host passes: {body}");
    let (status, body) = h2_get(addr, None).await;
    assert_eq!(status, StatusCode::OK, "no Host at all passes: {body}");
    assert_eq!(origin.count(), 2);
    gateway.shutdown().await;
}
