//! TLS end to end, with certificates made by a test CA: ALPN picks HTTP/2 or HTTP/1.1 and both
//! answer alike, SNI picks the certificate, certificates reload under open connections, bad
//! ones never take a listener down, HTTPS origins are trusted through a private CA and reused,
//! the redirect listener, and HTTP/2 settings as announced.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use crate::common::https::{HttpsConn, handshake};
use crate::common::pki::{Leaf, TestCa};
use crate::common::*;
use corsgate::config::{Config, Http2Config, RouteConfig, TlsListenerConfig};
use corsgate::gateway::Running;
use corsgate::tls::{OriginRoots, UnknownName};
use http::{StatusCode, Version};

const RULES: &str = "<CORSConfiguration><CORSRule>\
    <AllowedOrigin>https://app.test</AllowedOrigin>\
    <AllowedMethod>GET</AllowedMethod><AllowedMethod>PUT</AllowedMethod>\
    <AllowedHeader>content-type</AllowedHeader><ExposeHeader>ETag</ExposeHeader>\
    </CORSRule></CORSConfiguration>";

const PREFLIGHT: [(&str, &str); 3] = [
    ("origin", "https://app.test"),
    ("access-control-request-method", "PUT"),
    ("access-control-request-headers", "content-type"),
];

/// A gateway serving `routes` on one TLS listener (and no plain one) with these certificates,
/// and that listener's address.
async fn start_tls(
    routes: Vec<RouteConfig>,
    certs: &[&Leaf],
    unknown_name: UnknownName,
) -> (Running, SocketAddr) {
    let gateway = start(tls_config(routes, certs, unknown_name)).await;
    let addr = gateway.tls_addrs[0];
    (gateway, addr)
}

/// `routes` behind one TLS listener (and no plain one) with these certificates.
fn tls_config(routes: Vec<RouteConfig>, certs: &[&Leaf], unknown_name: UnknownName) -> Config {
    let mut config = config(routes);
    config.server.listen = Vec::new();
    config.server.tls = vec![TlsListenerConfig {
        listen: vec![SocketAddr::from(([127, 0, 0, 1], 0))],
        certs: certs.iter().map(|l| l.files.clone()).collect(),
        unknown_name,
    }];
    config
}

#[tokio::test]
async fn alpn_h2_and_http11_answer_preflights_and_proxied_requests_alike() {
    let origin = Origin::start(Reply {
        headers: vec![("etag", "\"v1\"")],
        ..Reply::default()
    })
    .await;
    let ca = TestCa::new("alpn");
    let leaf = ca.leaf(&["a.test"]);
    let (_gateway, addr) = start_tls(
        vec![route(&["a.test"], &origin, Some(RULES))],
        &[&leaf],
        UnknownName::Reject,
    )
    .await;

    let mut seen = Vec::new();
    for alpn in ["h2", "http/1.1"] {
        let mut conn = HttpsConn::open(addr, "a.test", ca.client_config(&[alpn]))
            .await
            .expect("handshake");
        assert_eq!(conn.alpn.as_deref(), Some(alpn.as_bytes()));
        let preflight = conn.send("OPTIONS", "/k.txt", &PREFLIGHT).await;
        assert_eq!(preflight.status, StatusCode::OK, "{alpn}");
        let get = conn
            .send("GET", "/k.txt", &[("origin", "https://app.test")])
            .await;
        assert_eq!(get.status, StatusCode::OK, "{alpn}");
        assert_eq!(get.body, "origin body");
        assert_eq!(get.header("etag"), Some("\"v1\""));
        seen.push((
            preflight.cors_headers(),
            get.cors_headers(),
            get.vary_lines().join(","),
        ));
    }
    assert_eq!(seen[0], seen[1], "HTTP/2 and HTTP/1.1 answer alike");
    assert!(
        seen[0].0.contains(&(
            "access-control-allow-origin".into(),
            "https://app.test".into()
        )),
        "{seen:?}"
    );
    let received = origin.received();
    assert_eq!(received.len(), 2, "preflights are never forwarded");
    for r in received {
        assert_eq!(r.headers["x-forwarded-proto"], "https");
    }
}

#[tokio::test]
async fn sni_picks_the_certificate_that_names_the_host_wildcards_included() {
    let origin = Origin::start(Reply::default()).await;
    let ca = TestCa::new("sni");
    let a = ca.leaf(&["a.test"]);
    let b = ca.leaf(&["*.b.test"]);
    let (_gateway, addr) = start_tls(
        vec![route(&["*"], &origin, None)],
        &[&a, &b],
        UnknownName::DefaultCert,
    )
    .await;
    let client = ca.client_config(&["h2"]);

    for (name, expected) in [("a.test", &a), ("img.b.test", &b), ("css.b.test", &b)] {
        let mut conn = HttpsConn::open(addr, name, client.clone())
            .await
            .unwrap_or_else(|e| panic!("{name}: {e}"));
        assert!(
            conn.peer == expected.der,
            "{name} got the wrong certificate"
        );
        assert_eq!(conn.send("GET", "/", &[]).await.status, StatusCode::OK);
    }
    // A name no certificate covers gets the first one: the client's verification refuses it.
    let unknown = handshake(addr, "other.test", client).await;
    assert!(
        unknown.is_err(),
        "a.test's certificate is not valid for other.test"
    );
    let lenient = HttpsConn::open(addr, "a.test", ca.client_config(&[]))
        .await
        .expect("no ALPN at all still works");
    assert_eq!(lenient.alpn, None);
}

#[tokio::test]
async fn an_unknown_name_fails_the_handshake_when_told_to_reject_and_others_still_work() {
    let origin = Origin::start(Reply::default()).await;
    let ca = TestCa::new("reject");
    let a = ca.leaf(&["a.test"]);
    let (_gateway, addr) = start_tls(
        vec![route(&["*"], &origin, None)],
        &[&a],
        UnknownName::Reject,
    )
    .await;
    let refused = handshake(addr, "other.test", ca.client_config(&["h2"])).await;
    let Err(err) = refused else {
        panic!("the handshake must fail")
    };
    assert!(
        err.to_string().to_lowercase().contains("alert"),
        "a clean TLS alert, not a dropped socket: {err}"
    );
    let mut conn = HttpsConn::open(addr, "a.test", ca.client_config(&["h2"]))
        .await
        .expect("a covered name still works");
    assert_eq!(conn.send("GET", "/", &[]).await.status, StatusCode::OK);
}

#[tokio::test]
async fn certificates_reload_while_a_keep_alive_connection_keeps_working() {
    let origin = Origin::start(Reply::default()).await;
    let ca = TestCa::new("reload");
    let old = ca.leaf(&["a.test"]);
    let (gateway, addr) = start_tls(
        vec![route(&["*"], &origin, None)],
        &[&old],
        UnknownName::Reject,
    )
    .await;
    for alpn in ["http/1.1", "h2"] {
        let mut open = HttpsConn::open(addr, "a.test", ca.client_config(&[alpn]))
            .await
            .expect("handshake");
        assert_eq!(open.send("GET", "/1", &[]).await.status, StatusCode::OK);

        let renewed = ca.leaf(&["a.test"]);
        renewed.write_to(&old.files);
        let results = gateway.reload_tls();
        assert_eq!(results.len(), 1);
        assert!(results[0].result.is_ok(), "{}", results[0]);

        assert_eq!(
            open.send("GET", "/2", &[]).await.status,
            StatusCode::OK,
            "{alpn}: the open connection outlives the reload"
        );
        assert!(open.peer != renewed.der);
        let fresh = HttpsConn::open(addr, "a.test", ca.client_config(&[alpn]))
            .await
            .expect("handshake after reload");
        assert!(
            fresh.peer == renewed.der,
            "new connections get the new certificate"
        );
    }
}

#[tokio::test]
async fn a_renewed_certificate_renamed_into_place_is_served_without_a_signal() {
    let origin = Origin::start(Reply::default()).await;
    let ca = TestCa::new("watched");
    let old = ca.leaf(&["a.test"]);
    let (_gateway, addr) = start_tls(
        vec![route(&["*"], &origin, None)],
        &[&old],
        UnknownName::Reject,
    )
    .await;

    // What renewal tools do: write the new files beside the old ones, rename them over.
    let renewed = ca.leaf(&["a.test"]);
    let staged = corsgate::tls::CertFiles {
        cert: old.files.cert.with_extension("new-cert"),
        key: old.files.key.with_extension("new-key"),
    };
    renewed.write_to(&staged);
    std::fs::rename(&staged.key, &old.files.key).expect("rename key");
    std::fs::rename(&staged.cert, &old.files.cert).expect("rename cert");

    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let fresh = HttpsConn::open(addr, "a.test", ca.client_config(&["h2"]))
            .await
            .expect("handshake");
        if fresh.peer == renewed.der {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the renewed certificate was not picked up"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn a_bad_certificate_file_keeps_the_old_certificate_serving_and_is_reported() {
    let origin = Origin::start(Reply::default()).await;
    let ca = TestCa::new("bad");
    let good = ca.leaf(&["a.test"]);
    let other = ca.leaf(&["z.test"]);
    let (gateway, addr) = start_tls(
        vec![route(&["*"], &origin, None)],
        &[&good],
        UnknownName::Reject,
    )
    .await;
    let mut open = HttpsConn::open(addr, "a.test", ca.client_config(&["h2"]))
        .await
        .expect("handshake");

    // (what the error names, the file replaced, its new content)
    let broken = [
        (
            "cert.pem",
            &good.files.cert,
            "-----BEGIN CERTIFICATE-----\nnope",
        ),
        ("key.pem", &good.files.key, ""),
        ("does not belong", &good.files.key, other.key_pem.as_str()),
    ];
    for (needle, file, content) in broken {
        good.write_to(&good.files);
        std::fs::write(file, content).expect("overwrite");
        let results = gateway.reload_tls();
        let err = results[0].result.as_ref().expect_err("bad files");
        assert!(err.to_string().contains(needle), "{err}");
        assert!(
            results[0]
                .to_string()
                .contains("previous certificates stay")
        );

        assert_eq!(open.send("GET", "/", &[]).await.status, StatusCode::OK);
        let fresh = HttpsConn::open(addr, "a.test", ca.client_config(&["h2"]))
            .await
            .expect("the old certificate still serves new connections");
        assert!(fresh.peer == good.der);
    }
}

#[tokio::test]
async fn stalled_and_garbage_handshakes_neither_block_others_nor_last_past_the_timeout() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let origin = Origin::start(Reply::default()).await;
    let ca = TestCa::new("stall");
    let leaf = ca.leaf(&["a.test"]);
    let mut config = tls_config(
        vec![route(&["*"], &origin, None)],
        &[&leaf],
        UnknownName::Reject,
    );
    // Long enough that a busy test machine's handshake fits well inside it: a client that had
    // to wait for the stalled handshakes would wait this long.
    const HANDSHAKE: Duration = Duration::from_secs(2);
    config.server.timeouts.tls_handshake = HANDSHAKE;
    let gateway = start(config).await;
    let addr = gateway.tls_addrs[0];

    let mut silent = tokio::net::TcpStream::connect(addr).await.expect("connect");
    let mut garbage = tokio::net::TcpStream::connect(addr).await.expect("connect");
    garbage
        .write_all(b"GET / HTTP/1.1\r\nHost: a.test\r\n\r\n")
        .await
        .expect("write");

    let started = Instant::now();
    let mut conn = HttpsConn::open(addr, "a.test", ca.client_config(&["h2"]))
        .await
        .expect("a real client is served meanwhile");
    assert_eq!(conn.send("GET", "/", &[]).await.status, StatusCode::OK);
    assert!(
        started.elapsed() < HANDSHAKE * 3 / 4,
        "served after {:?}",
        started.elapsed()
    );

    let mut buf = [0u8; 64];
    let closed = tokio::time::timeout(HANDSHAKE * 5, silent.read(&mut buf))
        .await
        .expect("the silent client is cut after the handshake timeout");
    assert!(matches!(closed, Ok(0) | Err(_)));
    let mut rest = Vec::new();
    let _ = tokio::time::timeout(HANDSHAKE * 5, garbage.read_to_end(&mut rest)).await;
    assert!(
        !rest.starts_with(b"HTTP/"),
        "plain HTTP on a TLS port gets no HTTP answer"
    );
    assert_eq!(conn.send("GET", "/", &[]).await.status, StatusCode::OK);
}

#[tokio::test]
async fn an_https_origin_with_a_private_ca_is_reached_over_h2_on_one_connection() {
    let origin_ca = TestCa::new("origin");
    let origin_leaf = origin_ca.leaf(&["127.0.0.1"]);
    for (alpn, version) in [
        (&["h2", "http/1.1"][..], Version::HTTP_2),
        (&["http/1.1"][..], Version::HTTP_11),
    ] {
        let origin = Origin::start_tls(Reply::default(), origin_leaf.server_config(alpn)).await;
        let mut config = config(vec![route(&["*"], &origin, Some(RULES))]);
        config.server.origin_tls.roots = OriginRoots::None;
        config.server.origin_tls.ca_file = Some(origin_ca.file.clone());
        let gateway = start(config).await;
        for _ in 0..3 {
            let answer = send(
                gateway.addr(),
                "GET",
                "/obj",
                &[("origin", "https://app.test")],
            )
            .await;
            assert_eq!(answer.status, StatusCode::OK, "{alpn:?}");
            assert_eq!(answer.body, "origin body");
            assert_eq!(
                answer.header("access-control-allow-origin"),
                Some("https://app.test")
            );
        }
        let received = origin.received();
        assert_eq!(received.len(), 3);
        assert!(received.iter().all(|r| r.version == version), "{alpn:?}");
        assert_eq!(
            origin.connections(),
            1,
            "{alpn:?}: the connection is reused"
        );
    }
}

#[tokio::test]
async fn an_https_origin_whose_certificate_nobody_vouches_for_is_502_and_never_reached() {
    let origin_ca = TestCa::new("untrusted");
    let leaf = origin_ca.leaf(&["127.0.0.1"]);
    let origin = Origin::start_tls(Reply::default(), leaf.server_config(&["http/1.1"])).await;
    // Default roots: Mozilla's, which never heard of this CA.
    let gateway = gateway_for(&origin, Some(RULES)).await;
    let answer = send(gateway.addr(), "GET", "/obj", &[]).await;
    assert_eq!(answer.status, StatusCode::BAD_GATEWAY);
    assert_eq!(origin.count(), 0);
}

#[tokio::test]
async fn connection_specific_headers_from_the_origin_never_reach_the_client() {
    let origin = Origin::start(Reply {
        headers: vec![
            ("connection", "x-hop"),
            ("x-hop", "1"),
            ("keep-alive", "timeout=5"),
            ("proxy-connection", "keep-alive"),
            ("upgrade", "h2c"),
            ("x-end-to-end", "kept"),
        ],
        ..Reply::default()
    })
    .await;
    let ca = TestCa::new("hop");
    let leaf = ca.leaf(&["a.test"]);
    let gateway = start(tls_config(
        vec![route(&["*"], &origin, Some(RULES))],
        &[&leaf],
        UnknownName::Reject,
    ))
    .await;
    for alpn in ["h2", "http/1.1"] {
        let mut conn = HttpsConn::open(gateway.tls_addrs[0], "a.test", ca.client_config(&[alpn]))
            .await
            .expect("handshake");
        // An HTTP/2 client treats any of these as a malformed response (RFC 9113 §8.2.2), so
        // getting an answer at all is half the proof.
        let answer = conn
            .send("GET", "/", &[("origin", "https://app.test")])
            .await;
        assert_eq!(answer.status, StatusCode::OK, "{alpn}");
        for name in [
            "connection",
            "x-hop",
            "keep-alive",
            "proxy-connection",
            "upgrade",
            "transfer-encoding",
        ] {
            assert!(!answer.headers.contains_key(name), "{alpn}: {name} leaked");
        }
        assert_eq!(answer.header("x-end-to-end"), Some("kept"));
    }
}

#[tokio::test]
async fn the_redirect_listener_sends_clients_to_https_except_health_checks() {
    let origin = Origin::start(Reply::default()).await;
    let ca = TestCa::new("redirect");
    let leaf = ca.leaf(&["a.test"]);
    let mut config = tls_config(
        vec![route(&["*"], &origin, None)],
        &[&leaf],
        UnknownName::Reject,
    );
    config.server.redirect = Some(corsgate::config::RedirectConfig {
        listen: vec![SocketAddr::from(([127, 0, 0, 1], 0))],
        https_port: None,
    });
    let gateway = start(config).await;
    let plain = gateway.redirect_addrs[0];
    let https_port = gateway.tls_addrs[0].port();

    let put = raw(
        plain,
        b"PUT /up/cat.txt?x=1 HTTP/1.1\r\nHost: a.test:80\r\nContent-Length: 0\r\n\r\n",
    )
    .await;
    assert!(put.starts_with("HTTP/1.1 308"), "{put}");
    let location = format!("location: https://a.test:{https_port}/up/cat.txt?x=1\r\n");
    assert!(put.to_ascii_lowercase().contains(&location), "{put}");
    assert!(!put.to_ascii_lowercase().contains("access-control-"));

    for path in ["/healthz", "/readyz"] {
        let health = send(plain, "GET", path, &[]).await;
        assert_eq!(health.status, StatusCode::OK, "{path}");
    }
    assert_eq!(origin.count(), 0, "the redirect listener forwards nothing");
}

#[tokio::test]
async fn http2_settings_are_announced_as_configured() {
    let origin = Origin::start(Reply::default()).await;
    let ca = TestCa::new("settings");
    let leaf = ca.leaf(&["a.test"]);
    let mut config = tls_config(
        vec![route(&["*"], &origin, None)],
        &[&leaf],
        UnknownName::Reject,
    );
    config.server.limits.max_concurrent_streams = 7;
    config.server.http2 = Http2Config {
        initial_stream_window_size: 100_000,
        initial_connection_window_size: 1_000_000,
    };
    let gateway = start(config).await;
    let (tls, _, alpn) = handshake(gateway.tls_addrs[0], "a.test", ca.client_config(&["h2"]))
        .await
        .expect("handshake");
    assert_eq!(alpn.as_deref(), Some(&b"h2"[..]));
    let (client, mut connection) = h2::client::handshake(tls).await.expect("h2 handshake");
    let mut ping_pong = connection.ping_pong().expect("the connection's pings");
    tokio::spawn(connection);
    let mut client = client.ready().await.expect("ready");
    let req = http::Request::post("https://a.test/upload")
        .body(())
        .expect("request");
    let (_response, mut upload) = client.send_request(req, false).expect("send");
    upload.reserve_capacity(10_000_000);
    let deadline = Instant::now() + Duration::from_secs(5);
    while upload.capacity() < 100_000 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    // Any window the server granted before answering a ping has been applied once the answer
    // is read.
    ping_pong
        .ping(h2::Ping::opaque())
        .await
        .expect("the server answers a ping");
    assert_eq!(
        upload.capacity(),
        100_000,
        "one stream may send its window, no more"
    );
    assert_eq!(client.current_max_send_streams(), 7);
}
