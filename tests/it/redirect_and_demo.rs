//! The two listeners beside the gateway that answer on their own: the plain-HTTP redirect to
//! HTTPS (only for hosts a route serves, so never an open redirect) and the demo bucket (S3's
//! `NoSuchKey` for every key that names no file).

use std::net::SocketAddr;
use std::path::PathBuf;

use crate::common::*;
use corsgate::config::{DemoOriginConfig, RedirectConfig};
use http::StatusCode;

#[tokio::test]
async fn the_redirect_listener_redirects_served_hosts_and_refuses_others_with_421() {
    let origin = Origin::start(Reply::default()).await;
    let mut config = config(vec![route(&["cdn.example.com"], &origin, None)]);
    config.server.redirect = Some(RedirectConfig {
        listen: vec![SocketAddr::from(([127, 0, 0, 1], 0))],
        https_port: Some(8443),
    });
    let gateway = start(config).await;
    let plain = gateway.redirect_addrs[0];

    let served = send(plain, "GET", "/k?x=1", &[("host", "cdn.example.com")]).await;
    assert_eq!(served.status, StatusCode::PERMANENT_REDIRECT);
    assert_eq!(
        served.header("location"),
        Some("https://cdn.example.com:8443/k?x=1")
    );

    let unknown = send(plain, "GET", "/k", &[("host", "evil.example")]).await;
    assert_eq!(unknown.status, StatusCode::MISDIRECTED_REQUEST);
    assert_eq!(unknown.header("location"), None);
    assert_eq!(origin.count(), 0, "the redirect listener forwards nothing");
}

/// A demo bucket with `hello.txt` and a directory without an index.
fn demo_root() -> PathBuf {
    static N: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let n = N.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let dir = std::env::temp_dir()
        .join(format!("corsgate-tests-{}", std::process::id()))
        .join(format!("demo-bucket-{n}"));
    std::fs::create_dir_all(dir.join("empty-dir")).expect("demo root");
    std::fs::write(dir.join("hello.txt"), "hello\n").expect("hello.txt");
    dir
}

async fn demo() -> (corsgate::gateway::Running, SocketAddr) {
    let mut config = config(Vec::new());
    config.demo_origin = Some(DemoOriginConfig {
        listen: SocketAddr::from(([127, 0, 0, 1], 0)),
        root: demo_root(),
    });
    let running = start(config).await;
    let addr = running.demo_origin.expect("demo origin");
    (running, addr)
}

fn assert_no_such_key(answer: &Answer, key: &str) {
    assert_eq!(
        answer.status,
        StatusCode::NOT_FOUND,
        "{key}: {:?}",
        answer.body
    );
    assert_eq!(answer.header("content-type"), Some("application/xml"));
    assert_eq!(answer.xml("Code").as_deref(), Some("NoSuchKey"), "{key}");
    assert_eq!(
        answer.xml("Message").as_deref(),
        Some("The specified key does not exist.")
    );
    assert_eq!(answer.xml("Key").as_deref(), Some(key));
    assert!(answer.header("x-amz-request-id").is_some());
}

#[tokio::test]
async fn a_path_through_a_file_is_no_such_key() {
    let (_demo, addr) = demo().await;
    let answer = send(addr, "GET", "/hello.txt/x", &[]).await;
    assert_no_such_key(&answer, "hello.txt/x");
}

#[tokio::test]
async fn missing_keys_are_no_such_key_whatever_the_reason() {
    let (_demo, addr) = demo().await;
    let cases = [
        ("/missing.txt", "missing.txt"),
        ("/empty-dir/", "empty-dir/"),
        ("/empty-dir", "empty-dir"),
        ("/no/such/dir/x", "no/such/dir/x"),
        ("/empty-dir/../hello.txt", "empty-dir/../hello.txt"),
        ("/empty-dir/%2e%2e/hello.txt", "empty-dir/../hello.txt"),
    ];
    for (path, key) in cases {
        let answer = send(addr, "GET", path, &[]).await;
        assert_no_such_key(&answer, key);
    }
    let long = format!("/{}", "x".repeat(300));
    assert_no_such_key(&send(addr, "GET", &long, &[]).await, &long[1..]);

    let found = send(addr, "GET", "/hello.txt", &[]).await;
    assert_eq!(found.status, StatusCode::OK);
    assert_eq!(&found.body[..], b"hello\n");
}

#[tokio::test]
async fn methods_other_than_get_and_head_are_405() {
    let (_demo, addr) = demo().await;
    let answer = send(addr, "PUT", "/hello.txt", &[]).await;
    assert_eq!(answer.status, StatusCode::METHOD_NOT_ALLOWED);
    assert_eq!(answer.header("allow"), Some("GET, HEAD"));
    assert_eq!(answer.xml("Code").as_deref(), Some("MethodNotAllowed"));
}
