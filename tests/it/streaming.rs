//! Multi-GiB bodies stream through the gateway with flat memory: a 2 GiB download and a 2 GiB
//! upload through the real `corsgate` binary, whose peak RSS (VmHWM) must stay under 64 MiB.

use std::net::SocketAddr;
use std::process::Child;
use std::time::{Duration, Instant};

use crate::common::*;
use bytes::Bytes;
use http_body_util::BodyExt;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;

const TWO_GIB: u64 = 2 * 1024 * 1024 * 1024;
const RSS_LIMIT_KIB: u64 = 64 * 1024;

fn start_binary(origin: &Origin) -> (Binary, SocketAddr) {
    let rules = rules_file(
        "<CORSConfiguration><CORSRule><AllowedOrigin>*</AllowedOrigin>\
         <AllowedMethod>GET</AllowedMethod><AllowedMethod>PUT</AllowedMethod></CORSRule></CORSConfiguration>",
    );
    let rules = rules.to_string_lossy().into_owned();
    Binary::serve(&origin.url(), &["--rules", &rules], &[])
}

fn peak_rss_kib(child: &Child) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{}/status", child.id()))
        .expect("/proc/PID/status of the gateway");
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmHWM line")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_gib_download_and_upload_stream_with_flat_gateway_memory() {
    let origin = Origin::start(Reply {
        stream: Some(TWO_GIB),
        ..Reply::default()
    })
    .await;
    let (binary, gateway) = start_binary(&origin);

    // Download: the origin streams 2 GiB (for any request), the client counts what arrives.
    let started = Instant::now();
    let req = http::Request::get(format!("http://{gateway}/big"))
        .header("origin", "https://app.example.com")
        .body(http_body_util::Empty::<Bytes>::new())
        .expect("request");
    let download = Client::builder(TokioExecutor::new()).build_http();
    let response = download.request(req).await.expect("download starts");
    assert_eq!(response.status(), 200);
    assert_eq!(response.headers()["access-control-allow-origin"], "*");
    let mut body = response.into_body();
    let mut received = 0u64;
    while let Some(frame) = body.frame().await {
        received += frame
            .expect("download frame")
            .data_ref()
            .map_or(0, |d| d.len() as u64);
    }
    assert_eq!(received, TWO_GIB);
    let download_time = started.elapsed();

    // Upload: the client streams 2 GiB, the origin counts what arrives and says so.
    let started = Instant::now();
    let req = http::Request::put(format!("http://{gateway}/big"))
        .header("origin", "https://app.example.com")
        .body(Zeros::new(TWO_GIB))
        .expect("request");
    let upload = Client::builder(TokioExecutor::new()).build_http();
    let response = tokio::time::timeout(Duration::from_secs(600), upload.request(req))
        .await
        .expect("upload within 10 min")
        .expect("upload answered");
    assert_eq!(response.status(), 200);
    assert_eq!(
        response.headers()["x-upload-bytes"],
        TWO_GIB.to_string().as_str()
    );
    let put = origin
        .received()
        .into_iter()
        .find(|r| r.method == http::Method::PUT);
    assert_eq!(
        put.map(|r| r.body_len),
        Some(TWO_GIB),
        "the origin's own count"
    );
    let mut body = response.into_body();
    while let Some(frame) = body.frame().await {
        frame.expect("upload answer frame");
    }
    let upload_time = started.elapsed();

    let peak = peak_rss_kib(&binary.0);
    eprintln!(
        "2 GiB download {:.1} s, 2 GiB upload {:.1} s, gateway VmHWM {} KiB",
        download_time.as_secs_f64(),
        upload_time.as_secs_f64(),
        peak
    );
    assert!(
        peak < RSS_LIMIT_KIB,
        "gateway peak RSS {peak} KiB ≥ {RSS_LIMIT_KIB} KiB"
    );
}
