//! Against a real S3-compatible server (moto's) and the real client of the Spaces documentation
//! (s3cmd): `s3cmd setcors` through corsgate is in force for the very next preflight, `delcors`
//! turns CORS off, a document the origin refuses changes nothing, moto's own CORS headers never
//! leak, and bucket routes fetch signed and reload on demand.
//!
//! Needs `.venv/bin/moto_server` and `.venv/bin/s3cmd` (`scripts/test.sh` installs them), or
//! `CORSGATE_MOTO_SERVER` / `CORSGATE_S3CMD` naming other executables. Fails when they are
//! missing.
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use crate::common::*;
use corsgate::rules::{EndpointSource, RulesSource};
use corsgate::s3::Addressing;
use http::StatusCode;

const ALLOW_A: &str = "<CORSConfiguration><CORSRule><AllowedOrigin>https://a.example</AllowedOrigin><AllowedMethod>GET</AllowedMethod></CORSRule></CORSConfiguration>";
const ALLOW_B: &str = "<CORSConfiguration><CORSRule><AllowedOrigin>https://b.example</AllowedOrigin><AllowedMethod>GET</AllowedMethod><AllowedMethod>PUT</AllowedMethod><ExposeHeader>ETag</ExposeHeader></CORSRule></CORSConfiguration>";
/// S3 (and moto) refuse a lower-case method.
const REFUSED: &str = "<CORSConfiguration><CORSRule><AllowedOrigin>https://c.example</AllowedOrigin><AllowedMethod>get</AllowedMethod></CORSRule></CORSConfiguration>";

async fn preflight(gateway: SocketAddr, path: &str, origin: &str) -> Answer {
    send(
        gateway,
        "OPTIONS",
        path,
        &[("origin", origin), ("access-control-request-method", "GET")],
    )
    .await
}

/// s3cmd blocks: run it off the async runtime.
async fn s3cmd<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> T {
    tokio::task::spawn_blocking(f).await.expect("s3cmd task")
}

#[tokio::test(flavor = "multi_thread")]
async fn s3cmd_through_corsgate_changes_the_rules_for_the_very_next_preflight() {
    let moto = Moto::start();
    let route = route_to(
        &moto.url(),
        RulesSource::Endpoint(EndpointSource {
            addressing: Addressing::Path,
            // Long: nothing but write-through may explain a change here.
            poll: Duration::from_secs(3600),
            max_buckets: 100,
            ..EndpointSource::defaults(Addressing::Path)
        }),
    );
    let gateway = start(config(vec![route])).await;
    let addr = gateway.addr();
    let cmd = std::sync::Arc::new(S3cmd::new(addr));

    let c = cmd.clone();
    s3cmd(move || c.ok(&["mb", "s3://photos"])).await;
    let off = preflight(addr, "/photos/cat.jpg", "https://a.example").await;
    assert_eq!(off.status, StatusCode::FORBIDDEN);
    assert_eq!(
        off.xml("Message").as_deref(),
        Some("CORSResponse: CORS is not enabled for this bucket.")
    );

    let c = cmd.clone();
    let (ok, said) = s3cmd(move || c.setcors(ALLOW_A, "photos")).await;
    assert!(ok, "{said}");
    assert_eq!(
        preflight(addr, "/photos/cat.jpg", "https://a.example")
            .await
            .status,
        StatusCode::OK
    );

    let c = cmd.clone();
    let (ok, said) = s3cmd(move || c.setcors(ALLOW_B, "photos")).await;
    assert!(ok, "{said}");
    let b = preflight(addr, "/photos/cat.jpg", "https://b.example").await;
    assert_eq!(b.status, StatusCode::OK);
    assert_eq!(b.header("access-control-allow-methods"), Some("GET, PUT"));
    assert_eq!(
        preflight(addr, "/photos/cat.jpg", "https://a.example")
            .await
            .status,
        StatusCode::FORBIDDEN
    );

    // moto refuses the document: nothing changes.
    let c = cmd.clone();
    let (ok, said) = s3cmd(move || c.setcors(REFUSED, "photos")).await;
    assert!(!ok, "the origin accepted an invalid document:\n{said}");
    assert!(said.contains("InvalidRequest"), "{said}");
    assert_eq!(
        preflight(addr, "/photos/cat.jpg", "https://b.example")
            .await
            .status,
        StatusCode::OK
    );

    // moto answers with its own CORS headers; only ours reach the client.
    let get = send(
        addr,
        "GET",
        "/photos/cat.jpg",
        &[("origin", "https://b.example")],
    )
    .await;
    assert_eq!(
        get.header("access-control-allow-origin"),
        Some("https://b.example")
    );
    assert_eq!(get.header("access-control-allow-methods"), Some("GET, PUT"));
    assert_eq!(get.header("access-control-expose-headers"), Some("ETag"));

    let c = cmd.clone();
    s3cmd(move || c.ok(&["delcors", "s3://photos"])).await;
    let off = preflight(addr, "/photos/cat.jpg", "https://b.example").await;
    assert_eq!(off.status, StatusCode::FORBIDDEN);
    assert_eq!(
        off.xml("Message").as_deref(),
        Some("CORSResponse: CORS is not enabled for this bucket.")
    );

    let ghost = preflight(addr, "/ghost/cat.jpg", "https://a.example").await;
    assert_eq!(
        ghost.xml("Message").as_deref(),
        Some("CORSResponse: Bucket not found")
    );
    gateway.shutdown().await;
}

#[test]
fn a_bucket_route_fetches_signed_and_reloads_on_demand() {
    let moto = Moto::start();
    let direct = S3cmd::new(moto.addr);
    direct.ok(&["mb", "s3://assets"]);
    let (ok, said) = direct.setcors(ALLOW_A, "assets");
    assert!(ok, "{said}");

    let url = moto.url();
    let (binary, addr) = Binary::serve(
        &url,
        &["--rules-bucket", "assets"],
        &[
            ("AWS_ACCESS_KEY_ID", "testing"),
            ("AWS_SECRET_ACCESS_KEY", "testing"),
        ],
    );
    let runtime = tokio::runtime::Runtime::new().expect("runtime");
    runtime.block_on(async {
        assert_eq!(
            preflight(addr, "/cat.jpg", "https://a.example")
                .await
                .status,
            StatusCode::OK
        );

        // Changed behind corsgate's back: in force after the admin reload, not before.
        let (ok, said) = direct.setcors(ALLOW_B, "assets");
        assert!(ok, "{said}");
        assert_eq!(
            preflight(addr, "/cat.jpg", "https://b.example")
                .await
                .status,
            StatusCode::FORBIDDEN
        );
        let (status, outcome) = admin(binary.admin(), "POST", "/-/reload").await;
        assert_eq!(status, StatusCode::OK, "{outcome}");
        assert_eq!(outcome["routes"][0]["results"][0]["changed"], true);
        assert_eq!(
            preflight(addr, "/cat.jpg", "https://b.example")
                .await
                .status,
            StatusCode::OK
        );

        // And after SIGHUP.
        direct.ok(&["delcors", "s3://assets"]);
        binary.hangup();
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let answer = preflight(addr, "/cat.jpg", "https://b.example").await;
            if answer.xml("Message").as_deref()
                == Some("CORSResponse: CORS is not enabled for this bucket.")
            {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "SIGHUP did not refetch the bucket"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let (_, view) = admin(binary.admin(), "GET", "/-/rules").await;
        assert_eq!(view["routes"][0]["source"]["bucket"], "assets");
        assert_eq!(view["routes"][0]["rules"]["state"], "not-configured");
    });
}
