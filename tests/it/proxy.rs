//! The gateway on the wire: forwarding, decoration, failures as answers, routing, protocols.

use std::time::Duration;

use crate::common::*;
use corsgate::config::Timeouts;

const RULES: &str = r#"<CORSConfiguration>
  <CORSRule>
    <AllowedOrigin>https://app.example.com</AllowedOrigin>
    <AllowedMethod>GET</AllowedMethod>
    <AllowedMethod>PUT</AllowedMethod>
    <AllowedHeader>x-custom</AllowedHeader>
    <ExposeHeader>ETag</ExposeHeader>
    <MaxAgeSeconds>600</MaxAgeSeconds>
  </CORSRule>
</CORSConfiguration>"#;

const APP: (&str, &str) = ("origin", "https://app.example.com");

#[tokio::test]
async fn origin_cors_headers_never_leak_and_vary_is_merged_into_one_line() {
    let origin = Origin::start(Reply {
        headers: vec![
            ("access-control-allow-origin", "*"),
            ("access-control-allow-methods", "GET, POST, PATCH"),
            ("access-control-expose-headers", "x-secret"),
            ("access-control-allow-credentials", "false"),
            ("vary", "Accept-Encoding, origin"),
            ("vary", "X-Tenant"),
            ("etag", "\"abc\""),
        ],
        ..Reply::default()
    })
    .await;
    let gateway = gateway_for(&origin, Some(RULES)).await;

    let granted = send(gateway.addr(), "GET", "/k", &[APP]).await;
    assert_eq!(
        granted.cors_headers(),
        [
            ("access-control-allow-credentials".into(), "true".into()),
            ("access-control-allow-methods".into(), "GET, PUT".into()),
            (
                "access-control-allow-origin".into(),
                "https://app.example.com".into()
            ),
            ("access-control-expose-headers".into(), "ETag".into()),
            ("access-control-max-age".into(), "600".into()),
        ]
    );
    assert_eq!(
        granted.vary_lines(),
        [
            "Accept-Encoding, origin, X-Tenant, Access-Control-Request-Headers, Access-Control-Request-Method"
        ]
    );
    assert_eq!(granted.header("etag"), Some("\"abc\""));

    let refused = send(
        gateway.addr(),
        "GET",
        "/k",
        &[("origin", "https://evil.example")],
    )
    .await;
    assert_eq!(refused.cors_headers(), []);
    assert_eq!(refused.vary_lines(), ["Accept-Encoding, origin, X-Tenant"]);

    let anonymous = send(gateway.addr(), "GET", "/k", &[]).await;
    assert_eq!(anonymous.cors_headers(), []);
    gateway.shutdown().await;
}

#[tokio::test]
async fn vary_origin_is_added_to_every_response_unless_the_route_asks_for_exact_s3() {
    let origin = Origin::start(Reply::default()).await;
    let gateway = gateway_for(&origin, Some(RULES)).await;
    assert_eq!(
        send(gateway.addr(), "GET", "/k", &[]).await.vary_lines(),
        ["Origin"]
    );

    let mut exact = route(&["*"], &origin, Some(RULES));
    exact.vary_origin_always = false;
    let exact = start(config(vec![exact])).await;
    assert!(
        send(exact.addr(), "GET", "/k", &[])
            .await
            .vary_lines()
            .is_empty()
    );

    // A route without rules is a bucket without CORS: S3 adds nothing, nor do we.
    let bare = gateway_for(&origin, None).await;
    assert!(
        send(bare.addr(), "GET", "/k", &[APP])
            .await
            .vary_lines()
            .is_empty()
    );
}

#[tokio::test]
async fn preflights_are_answered_here_and_never_reach_the_origin() {
    let origin = Origin::start(Reply::default()).await;
    let gateway = gateway_for(&origin, Some(RULES)).await;
    let preflight = [
        APP,
        ("access-control-request-method", "PUT"),
        ("access-control-request-headers", "X-Custom"),
    ];
    for _ in 0..3 {
        let answer = send(gateway.addr(), "OPTIONS", "/k", &preflight).await;
        assert_eq!(answer.status, 200);
        assert_eq!(
            answer.header("access-control-allow-headers"),
            Some("x-custom")
        );
        assert_eq!(answer.header("content-length"), Some("0"));
        assert!(answer.header("x-amz-request-id").is_some());
        assert!(answer.body.is_empty());
    }
    assert_eq!(origin.count(), 0);
}

#[tokio::test]
async fn path_and_query_reach_the_origin_byte_for_byte_under_its_prefix() {
    let origin = Origin::start(Reply::default()).await;
    let mut r = route(&["*"], &origin, None);
    r.origin =
        corsgate::config::OriginUrl::parse(&format!("{}/bucket/", origin.url())).expect("url");
    let gateway = start(config(vec![r])).await;
    let target = "/a%2Fb/c%20d/../e?x=1&y=%2F&z=a+b&&";
    send(gateway.addr(), "GET", target, &[]).await;
    assert_eq!(origin.received()[0].target, format!("/bucket{target}"));
}

#[tokio::test]
async fn host_is_rewritten_to_the_origin_unless_preserved_and_forwarded_headers_are_set() {
    let origin = Origin::start(Reply::default()).await;
    let rewrite = gateway_for(&origin, None).await;
    send(
        rewrite.addr(),
        "GET",
        "/k",
        &[
            ("host", "assets.example.com"),
            ("x-forwarded-for", "203.0.113.7"),
            ("x-forwarded-proto", "ftp"),
            ("connection", "keep-alive, x-hop"),
            ("x-hop", "secret"),
            ("proxy-authorization", "Basic Zm9v"),
        ],
    )
    .await;
    let seen = &origin.received()[0].headers;
    let origin_authority = origin.addr.to_string();
    assert_eq!(seen["host"], origin_authority.as_str());
    assert_eq!(seen["x-forwarded-host"], "assets.example.com");
    // No trusted proxies: the client's own claim is replaced.
    assert_eq!(seen["x-forwarded-for"], "127.0.0.1");
    assert_eq!(seen["x-forwarded-proto"], "http");
    for hop in ["x-hop", "proxy-authorization", "keep-alive"] {
        assert!(!seen.contains_key(hop), "{hop} was forwarded");
    }

    let mut preserve = route(&["*"], &origin, None);
    preserve.preserve_host = true;
    let preserve = start(config(vec![preserve])).await;
    send(
        preserve.addr(),
        "GET",
        "/k",
        &[("host", "assets.example.com")],
    )
    .await;
    assert_eq!(origin.received()[1].headers["host"], "assets.example.com");
}

#[tokio::test]
async fn origin_refusing_connections_is_a_502_with_an_s3_body_and_earned_cors_headers() {
    // Bind, then close: nothing listens on this port any more.
    let closed = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        l.local_addr().expect("addr")
    };
    let mut r = route(&["*"], &Origin::start(Reply::default()).await, Some(RULES));
    r.origin = corsgate::config::OriginUrl::parse(&format!("http://{closed}")).expect("url");
    let gateway = start(config(vec![r])).await;

    let answer = send(gateway.addr(), "GET", "/k", &[APP]).await;
    assert_eq!(answer.status, 502);
    assert_eq!(answer.xml("Code").as_deref(), Some("BadGateway"));
    assert_eq!(answer.header("content-type"), Some("application/xml"));
    assert_eq!(
        answer.xml("RequestId").as_deref(),
        answer.header("x-amz-request-id")
    );
    assert_eq!(
        answer.header("access-control-allow-origin"),
        Some("https://app.example.com")
    );
    assert_eq!(answer.header("access-control-expose-headers"), Some("ETag"));

    let anonymous = send(gateway.addr(), "GET", "/k", &[]).await;
    assert_eq!(anonymous.status, 502);
    assert_eq!(anonymous.cors_headers(), []);
}

fn quick(timeouts: Timeouts) -> Timeouts {
    Timeouts {
        origin_response: Duration::from_millis(300),
        ..timeouts
    }
}

#[tokio::test]
async fn origin_too_slow_to_answer_is_a_504_with_earned_cors_headers() {
    let origin = Origin::start(Reply {
        delay: Duration::from_secs(5),
        ..Reply::default()
    })
    .await;
    let mut c = config(vec![route(&["*"], &origin, Some(RULES))]);
    c.server.timeouts = quick(c.server.timeouts);
    let gateway = start(c).await;
    let started = std::time::Instant::now();
    let answer = send(gateway.addr(), "GET", "/k", &[APP]).await;
    assert_eq!(answer.status, 504);
    assert!(started.elapsed() < Duration::from_secs(3));
    assert_eq!(answer.xml("Code").as_deref(), Some("GatewayTimeout"));
    assert_eq!(
        answer.header("access-control-allow-origin"),
        Some("https://app.example.com")
    );
}

#[tokio::test]
async fn origin_stalling_mid_body_is_cut_instead_of_pinning_the_connection() {
    let origin = Origin::start(Reply {
        stall_after_head: Some(Duration::from_secs(10)),
        ..Reply::default()
    })
    .await;
    let mut c = config(vec![route(&["*"], &origin, None)]);
    c.server.timeouts = quick(c.server.timeouts);
    let gateway = start(c).await;
    let req = http::Request::get(format!("http://{}/k", gateway.addr()))
        .body(http_body_util::Full::new(bytes::Bytes::new()))
        .expect("request");
    let response = client().request(req).await.expect("head arrives");
    assert_eq!(response.status(), 200);
    use http_body_util::BodyExt;
    let body = tokio::time::timeout(Duration::from_secs(5), response.into_body().collect())
        .await
        .expect("the gateway gives up well before the origin's 10 s stall");
    assert!(body.is_err(), "a truncated body must not look complete");
}

#[tokio::test]
async fn a_host_no_route_serves_is_421_and_never_forwarded() {
    let origin = Origin::start(Reply::default()).await;
    let gateway = start(config(vec![route(
        &["assets.example.com"],
        &origin,
        Some(RULES),
    )]))
    .await;
    let answer = send(
        gateway.addr(),
        "GET",
        "/k",
        &[("host", "evil.example.net"), APP],
    )
    .await;
    assert_eq!(answer.status, 421);
    assert_eq!(answer.xml("Code").as_deref(), Some("MisdirectedRequest"));
    assert_eq!(answer.cors_headers(), []);
    let preflight = send(
        gateway.addr(),
        "OPTIONS",
        "/k",
        &[
            ("host", "evil.example.net"),
            APP,
            ("access-control-request-method", "GET"),
        ],
    )
    .await;
    assert_eq!(preflight.status, 421);
    assert_eq!(origin.count(), 0);

    let served = send(
        gateway.addr(),
        "GET",
        "/k",
        &[("host", "Assets.Example.com:443"), APP],
    )
    .await;
    assert_eq!(served.status, 200);
    assert_eq!(origin.count(), 1);
}

#[tokio::test]
async fn http2_prior_knowledge_requests_are_routed_by_authority_and_decorated() {
    let origin = Origin::start(Reply::default()).await;
    let gateway = start(config(vec![route(&["127.0.0.1"], &origin, Some(RULES))])).await;
    let h2 = h2c_client();
    let answer = send_with(&h2, gateway.addr(), "GET", "/k", &[APP]).await;
    assert_eq!(answer.status, 200);
    assert_eq!(answer.body, "origin body");
    assert_eq!(
        answer.header("access-control-allow-origin"),
        Some("https://app.example.com")
    );
    let preflight = send_with(
        &h2,
        gateway.addr(),
        "OPTIONS",
        "/k",
        &[APP, ("access-control-request-method", "PUT")],
    )
    .await;
    assert_eq!(preflight.status, 200);
    assert_eq!(
        preflight.header("access-control-allow-methods"),
        Some("GET, PUT")
    );
    assert_eq!(origin.count(), 1);
    assert_eq!(
        origin.received()[0].headers["x-forwarded-host"],
        gateway.addr().to_string().as_str()
    );
}

#[tokio::test]
async fn malformed_requests_get_a_4xx_and_the_gateway_keeps_serving() {
    let origin = Origin::start(Reply::default()).await;
    let gateway = gateway_for(&origin, Some(RULES)).await;
    for garbage in [
        &b"GET / HTTP/1.1\r\nHost: a\r\nBad Header\r\n\r\n"[..],
        b"\x00\x01\x02 nonsense\r\n\r\n",
        b"GET /k HTTP/1.1\r\nHost: a\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n",
        b"GET /k HTTP/1.1\r\nHost: a b\r\n\r\n",
        b"CONNECT 127.0.0.1:1 HTTP/1.1\r\nHost: 127.0.0.1:1\r\n\r\n",
    ] {
        let answer = raw(gateway.addr(), garbage).await;
        let status: u16 = answer
            .get(9..12)
            .and_then(|s| s.parse().ok())
            .unwrap_or_else(|| panic!("no status line for {garbage:?}: {answer:?}"));
        assert!((400..500).contains(&status), "{garbage:?} -> {answer:?}");
    }
    assert_eq!(origin.count(), 0);
    assert_eq!(send(gateway.addr(), "GET", "/k", &[]).await.status, 200);
}

#[tokio::test]
async fn a_request_without_host_is_400_unless_a_route_serves_any_host() {
    let origin = Origin::start(Reply::default()).await;
    let strict = start(config(vec![route(&["a.example.com"], &origin, None)])).await;
    let answer = raw(strict.addr(), b"GET /k HTTP/1.0\r\n\r\n").await;
    assert!(
        answer.starts_with("HTTP/1.0 400") || answer.starts_with("HTTP/1.1 400"),
        "{answer}"
    );
    let any = gateway_for(&origin, None).await;
    let answer = raw(any.addr(), b"GET /k HTTP/1.0\r\n\r\n").await;
    assert!(answer.contains(" 200 "), "{answer}");
}

#[tokio::test]
async fn shutdown_lets_an_in_flight_request_finish() {
    let origin = Origin::start(Reply {
        delay: Duration::from_millis(500),
        ..Reply::default()
    })
    .await;
    let gateway = gateway_for(&origin, None).await;
    let addr = gateway.addr();
    let in_flight = tokio::spawn(async move { send(addr, "GET", "/k", &[]).await });
    assert!(
        eventually(Duration::from_secs(10), || async { origin.count() == 1 }).await,
        "the request reaches the origin"
    );
    gateway.shutdown().await;
    let answer = in_flight.await.expect("request task");
    assert_eq!(answer.status, 200);
    assert!(
        tokio::net::TcpStream::connect(addr).await.is_err(),
        "still accepting after shutdown"
    );
}

#[tokio::test]
async fn the_default_configuration_fronts_the_demo_bucket() {
    // Paths in the file are relative to the repository root, where `cargo run` starts.
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut c = corsgate::config::Config::load(&root.join("config/corsgate.toml"))
        .expect("config/corsgate.toml is valid");
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("free port");
    c.server.listen = vec!["127.0.0.1:0".parse().expect("addr")];
    let demo = c
        .demo_origin
        .as_mut()
        .expect("the default config starts the demo origin");
    demo.listen = port;
    demo.root = root.join(&demo.root);
    let route = &mut c.routes[0];
    route.origin = corsgate::config::OriginUrl::parse(&format!("http://{port}")).expect("url");
    let corsgate::rules::RulesSource::File(rules) = &route.rules else {
        panic!("the default route has rules")
    };
    route.rules = corsgate::rules::RulesSource::File(root.join(rules));
    let gateway = start(c).await;
    let answer = send(
        gateway.addr(),
        "GET",
        "/hello.txt",
        &[("origin", "https://www.example.com")],
    )
    .await;
    assert_eq!(answer.status, 200);
    assert!(String::from_utf8_lossy(&answer.body).contains("demo bucket"));
    assert_eq!(
        answer.header("access-control-allow-origin"),
        Some("https://www.example.com")
    );
    assert!(answer.header("etag").is_some());
}

#[tokio::test]
async fn a_client_dribbling_its_request_head_is_cut_off_after_the_header_read_timeout() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let origin = Origin::start(Reply::default()).await;
    let mut c = config(vec![route(&["*"], &origin, None)]);
    c.server.timeouts.header_read = Duration::from_millis(300);
    let gateway = start(c).await;
    let mut stream = tokio::net::TcpStream::connect(gateway.addr())
        .await
        .expect("connect");
    stream
        .write_all(b"GET /k HTTP/1.1\r\nHost: a\r\nX-Slow: ")
        .await
        .expect("write");
    let mut rest = Vec::new();
    let closed = tokio::time::timeout(Duration::from_secs(5), stream.read_to_end(&mut rest)).await;
    assert!(
        closed.is_ok(),
        "connection still open 5 s after a 300 ms header timeout"
    );
    assert_eq!(origin.count(), 0);
}

/// Reads one HTTP/1.1 response with a `Content-Length` (or none) from `stream`; `None` once the
/// connection is closed.
async fn read_response(stream: &mut tokio::net::TcpStream) -> Option<String> {
    use tokio::io::AsyncReadExt;
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&buf[..end]).to_ascii_lowercase();
            let length: usize = head
                .lines()
                .find_map(|l| l.strip_prefix("content-length:"))
                .map_or(0, |v| v.trim().parse().expect("numeric content-length"));
            if buf.len() >= end + 4 + length {
                return Some(head);
            }
        }
        let n = stream.read(&mut chunk).await.ok()?;
        if n == 0 {
            return None;
        }
        buf.extend_from_slice(&chunk[..n]);
    }
}

#[tokio::test]
async fn a_kept_alive_connection_waits_idle_for_the_next_head_and_header_read_to_finish_it() {
    use tokio::io::AsyncWriteExt;
    let origin = Origin::start(Reply::default()).await;
    let mut c = config(vec![route(&["*"], &origin, None)]);
    c.server.timeouts.header_read = Duration::from_millis(300);
    c.server.timeouts.idle = Duration::from_secs(3);
    let gateway = start(c).await;
    let mut stream = tokio::net::TcpStream::connect(gateway.addr())
        .await
        .expect("connect");
    let request = b"GET /k HTTP/1.1\r\nHost: a\r\n\r\n";
    stream.write_all(request).await.expect("write");
    let first = read_response(&mut stream).await.expect("a response");
    assert!(first.starts_with("http/1.1 200"), "{first}");

    // Quiet for longer than header_read, well within idle: still open.
    tokio::time::sleep(Duration::from_millis(900)).await;
    stream.write_all(request).await.expect("write");
    let second = read_response(&mut stream).await;
    assert!(
        second.is_some_and(|h| h.starts_with("http/1.1 200")),
        "a kept-alive connection was closed before its idle timeout"
    );

    // A head that starts but never ends is cut off after header_read, not idle.
    stream
        .write_all(b"GET /k HTTP/1.1\r\nHost: a\r\nX-Slow: ")
        .await
        .expect("write");
    let started = std::time::Instant::now();
    let cut = tokio::time::timeout(Duration::from_secs(2), read_response(&mut stream)).await;
    assert_eq!(cut, Ok(None), "a dribbled head was not cut off");
    assert!(started.elapsed() >= Duration::from_millis(250));
    assert_eq!(origin.count(), 2);
}

#[tokio::test]
async fn an_idle_connection_is_closed_after_the_idle_timeout() {
    let origin = Origin::start(Reply::default()).await;
    let mut c = config(vec![route(&["*"], &origin, None)]);
    c.server.timeouts.idle = Duration::from_millis(300);
    let gateway = start(c).await;
    // HTTP/2 has no header-read timer between requests: once its first request is answered,
    // the idle timeout alone must close it.
    let tcp = tokio::net::TcpStream::connect(gateway.addr())
        .await
        .expect("connect");
    let (client, connection) = h2::client::handshake(tcp).await.expect("h2 handshake");
    let connection = tokio::spawn(connection);
    let mut client = client.ready().await.expect("h2 ready");
    let request = http::Request::get("http://a/k").body(()).expect("request");
    let (answer, _) = client.send_request(request, true).expect("send");
    let mut body = answer.await.expect("an answer").into_body();
    while let Some(chunk) = body.data().await {
        chunk.expect("body chunk");
    }
    let started = std::time::Instant::now();
    let closed = tokio::time::timeout(Duration::from_secs(5), connection).await;
    assert!(
        closed.is_ok(),
        "idle HTTP/2 connection still open after 5 s"
    );
    assert!(started.elapsed() >= Duration::from_millis(250));
}

#[tokio::test]
async fn origin_connections_are_reused_but_never_one_whose_body_was_abandoned() {
    const BIG: u64 = 64 << 20;
    let origin = Origin::start(Reply {
        // Far more than socket buffers hold, so a hang-up leaves most of it unread.
        stream: Some(BIG),
        ..Reply::default()
    })
    .await;
    let gateway = gateway_for(&origin, Some(RULES)).await;
    for _ in 0..3 {
        let answer = send(gateway.addr(), "GET", "/big", &[APP]).await;
        assert_eq!(answer.status, 200);
        assert_eq!(answer.body.len() as u64, BIG);
    }
    assert_eq!(
        origin.connections(),
        1,
        "sequential requests share one connection"
    );

    // A client that reads the head and hangs up: the rest of the body is still on the origin
    // connection, which must not serve anyone else.
    {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let mut stream = tokio::net::TcpStream::connect(gateway.addr())
            .await
            .expect("connect");
        stream
            .write_all(b"GET /big HTTP/1.1\r\nHost: a\r\n\r\n")
            .await
            .expect("write");
        let mut head = [0u8; 4096];
        let n = stream.read(&mut head).await.expect("read");
        assert!(head[..n].starts_with(b"HTTP/1.1 200"));
    }
    let answer = send(gateway.addr(), "GET", "/big", &[APP]).await;
    assert_eq!(answer.status, 200);
    assert_eq!(
        answer.body.len() as u64,
        BIG,
        "a whole body, not another's tail"
    );
    assert_eq!(origin.connections(), 2);
}

#[tokio::test]
async fn an_origin_closing_kept_connections_costs_no_request() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    // Answers one request per connection, keep-alive in all but deed: closes right after.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("address");
    let served = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let count = std::sync::Arc::clone(&served);
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            let count = std::sync::Arc::clone(&count);
            tokio::spawn(async move {
                let mut head = Vec::new();
                let mut buf = [0u8; 1024];
                while !head.windows(4).any(|w| w == b"\r\n\r\n") {
                    match stream.read(&mut buf).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => head.extend_from_slice(&buf[..n]),
                    }
                }
                count.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                let _ = stream
                    .write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok")
                    .await;
            });
        }
    });
    let c = config(vec![route_to(
        &format!("http://{addr}"),
        corsgate::rules::RulesSource::None,
    )]);
    let gateway = start(c).await;
    for i in 0..20 {
        let answer = send(gateway.addr(), "GET", "/k", &[]).await;
        assert_eq!(answer.status, 200, "request {i}: {:?}", answer.body);
        assert_eq!(&answer.body[..], b"ok");
        if i % 2 == 1 {
            // Give the close time to arrive, so both sides of the race are seen.
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
    assert_eq!(served.load(std::sync::atomic::Ordering::SeqCst), 20);
}
