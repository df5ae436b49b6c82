//! Rules read from the bucket itself, against a small S3-compatible origin: bucket routes, S3
//! endpoint routes (path-style and virtual-hosted), polling, backoff, write-through, signing.

use std::net::SocketAddr;
use std::time::Duration;

use crate::common::*;
use corsgate::rules::{BucketSource, EndpointSource, RulesSource, SigningConfig};
use corsgate::s3::Addressing;
use http::StatusCode;

const ALLOW_A: &str = "<CORSConfiguration><CORSRule><AllowedOrigin>https://a.example</AllowedOrigin><AllowedMethod>GET</AllowedMethod><MaxAgeSeconds>100</MaxAgeSeconds></CORSRule></CORSConfiguration>";
const ALLOW_B: &str = "<CORSConfiguration><CORSRule><AllowedOrigin>https://b.example</AllowedOrigin><AllowedMethod>GET</AllowedMethod><AllowedMethod>PUT</AllowedMethod></CORSRule></CORSConfiguration>";

fn bucket_route(s3: &FakeS3, bucket: &str, poll: Duration) -> corsgate::config::RouteConfig {
    route_to(
        &s3.url(),
        RulesSource::Bucket(BucketSource {
            bucket: bucket.into(),
            poll,
            signing: SigningConfig::default(),
        }),
    )
}

fn endpoint_route(s3: &FakeS3, addressing: Addressing) -> corsgate::config::RouteConfig {
    route_to(
        &s3.url(),
        RulesSource::Endpoint(EndpointSource {
            addressing,
            // Long: only first requests, write-through and reloads fetch in these tests.
            poll: Duration::from_secs(3600),
            max_buckets: 100,
            ..EndpointSource::defaults(addressing)
        }),
    )
}

async fn preflight(gateway: SocketAddr, path: &str, origin: &str) -> Answer {
    send(
        gateway,
        "OPTIONS",
        path,
        &[("origin", origin), ("access-control-request-method", "GET")],
    )
    .await
}

async fn put(gateway: SocketAddr, path: &str, body: &str) -> StatusCode {
    send_body(gateway, "PUT", path, &[], body.to_string())
        .await
        .status
}

#[tokio::test]
async fn a_bucket_route_serves_the_bucket_rules_and_follows_them_by_polling() {
    let s3 = FakeS3::start().await;
    s3.put_bucket("photos", Some(ALLOW_A));
    let gateway = start(config(vec![bucket_route(
        &s3,
        "photos",
        Duration::from_secs(1),
    )]))
    .await;
    assert_eq!(
        preflight(gateway.addr(), "/k", "https://a.example")
            .await
            .status,
        StatusCode::OK
    );

    s3.put_bucket("photos", Some(ALLOW_B));
    let followed = eventually(Duration::from_secs(5), || async {
        preflight(gateway.addr(), "/k", "https://b.example")
            .await
            .status
            == StatusCode::OK
    })
    .await;
    assert!(followed, "the poll picked up the new document");
    assert_eq!(
        preflight(gateway.addr(), "/k", "https://a.example")
            .await
            .status,
        StatusCode::FORBIDDEN
    );
    gateway.shutdown().await;
}

#[tokio::test]
async fn no_cors_configuration_and_no_bucket_answer_as_s3_does() {
    let s3 = FakeS3::start().await;
    s3.put_bucket("plain", None);
    let gateway = start(config(vec![endpoint_route(&s3, Addressing::Path)])).await;

    let off = preflight(gateway.addr(), "/plain/k", "https://a.example").await;
    assert_eq!(off.status, StatusCode::FORBIDDEN);
    assert_eq!(
        off.xml("Message").as_deref(),
        Some("CORSResponse: CORS is not enabled for this bucket.")
    );
    let ghost = preflight(gateway.addr(), "/ghost/k", "https://a.example").await;
    assert_eq!(ghost.status, StatusCode::FORBIDDEN);
    assert_eq!(
        ghost.xml("Message").as_deref(),
        Some("CORSResponse: Bucket not found")
    );
    gateway.shutdown().await;
}

#[tokio::test]
async fn each_bucket_of_an_endpoint_has_its_own_rules_and_the_key_gives_the_resource_type() {
    let s3 = FakeS3::start().await;
    s3.put_bucket("a", Some(ALLOW_A));
    s3.put_bucket("b", Some(ALLOW_B));
    let gateway = start(config(vec![endpoint_route(&s3, Addressing::Path)])).await;

    assert_eq!(
        preflight(gateway.addr(), "/a/k", "https://a.example")
            .await
            .status,
        StatusCode::OK
    );
    assert_eq!(
        preflight(gateway.addr(), "/b/k", "https://b.example")
            .await
            .status,
        StatusCode::OK
    );
    let object = preflight(gateway.addr(), "/b/k", "https://a.example").await;
    assert_eq!(object.status, StatusCode::FORBIDDEN);
    assert_eq!(object.xml("ResourceType").as_deref(), Some("OBJECT"));
    let bucket = preflight(gateway.addr(), "/b", "https://a.example").await;
    assert_eq!(bucket.xml("ResourceType").as_deref(), Some("BUCKET"));

    // The store's own CORS headers never reach the client; ours do.
    let get = send(
        gateway.addr(),
        "GET",
        "/a/k",
        &[("origin", "https://a.example")],
    )
    .await;
    assert_eq!(get.body, "object a/k");
    assert_eq!(
        get.header("access-control-allow-origin"),
        Some("https://a.example")
    );
    gateway.shutdown().await;
}

#[tokio::test]
async fn virtual_hosted_buckets_come_from_the_host() {
    let s3 = FakeS3::start().await;
    s3.put_bucket("photos", Some(ALLOW_A));
    let gateway = start(config(vec![endpoint_route(&s3, Addressing::Virtual)])).await;
    let host = format!("photos.localhost:{}", gateway.addr().port());
    let answer = send(
        gateway.addr(),
        "OPTIONS",
        "/k",
        &[
            ("host", &host),
            ("origin", "https://a.example"),
            ("access-control-request-method", "GET"),
        ],
    )
    .await;
    assert_eq!(answer.status, StatusCode::OK);
    let get = send(gateway.addr(), "GET", "/k", &[("host", &host)]).await;
    assert_eq!(get.body, "object photos/k", "the Host reached the store");
    gateway.shutdown().await;
}

#[tokio::test]
async fn concurrent_first_requests_for_a_bucket_share_one_fetch() {
    let s3 = FakeS3::start().await;
    s3.put_bucket("photos", Some(ALLOW_A));
    s3.set_delay(Duration::from_millis(300));
    let gateway = start(config(vec![endpoint_route(&s3, Addressing::Path)])).await;
    let addr = gateway.addr();
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..20 {
        tasks.spawn(async move {
            preflight(addr, "/photos/k", "https://a.example")
                .await
                .status
        });
    }
    while let Some(status) = tasks.join_next().await {
        assert_eq!(status.expect("task"), StatusCode::OK);
    }
    assert_eq!(s3.cors_gets(), 1);
    gateway.shutdown().await;
}

#[tokio::test]
async fn a_bucket_whose_rules_cannot_be_read_answers_preflights_503_until_they_can() {
    let s3 = FakeS3::start().await;
    s3.put_bucket("photos", Some(ALLOW_A));
    s3.set_failing(true);
    let gateway = start(config(vec![endpoint_route(&s3, Addressing::Path)])).await;

    let down = preflight(gateway.addr(), "/photos/k", "https://a.example").await;
    assert_eq!(down.status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(down.xml("Code").as_deref(), Some("ServiceUnavailable"));
    assert_eq!(down.header("retry-after"), Some("1"));
    // Not a guess either way on forwarded requests: through, without CORS headers.
    let get = send(
        gateway.addr(),
        "GET",
        "/photos/k",
        &[("origin", "https://a.example")],
    )
    .await;
    assert_eq!(get.status, StatusCode::OK);
    assert_eq!(get.cors_headers(), []);
    // A burst of requests to a failing origin is not a burst of fetches.
    let fetches = s3.cors_gets();
    for _ in 0..10 {
        preflight(gateway.addr(), "/photos/k", "https://a.example").await;
    }
    assert!(s3.cors_gets() <= fetches + 1, "{} fetches", s3.cors_gets());

    s3.set_failing(false);
    let recovered = eventually(Duration::from_secs(5), || async {
        preflight(gateway.addr(), "/photos/k", "https://a.example")
            .await
            .status
            == StatusCode::OK
    })
    .await;
    assert!(recovered);
    gateway.shutdown().await;
}

#[tokio::test]
async fn origin_errors_keep_the_last_good_rules_and_are_shown() {
    let s3 = FakeS3::start().await;
    s3.put_bucket("photos", Some(ALLOW_A));
    let gateway = start(config_with_admin(vec![bucket_route(
        &s3,
        "photos",
        Duration::from_secs(1),
    )]))
    .await;
    let admin_addr = gateway.admin.expect("admin listener");
    let (_, before) = admin(admin_addr, "GET", "/-/rules").await;
    let generation = before["routes"][0]["rules"]["generation"].clone();

    s3.set_failing(true);
    let reported = eventually(Duration::from_secs(5), || async {
        let (_, view) = admin(admin_addr, "GET", "/-/rules").await;
        view["routes"][0]["rules"]["last_error"]["origin"]["code"] == "SlowDown"
    })
    .await;
    assert!(reported, "the origin's error is shown");
    assert_eq!(
        preflight(gateway.addr(), "/k", "https://a.example")
            .await
            .status,
        StatusCode::OK
    );
    let (_, after) = admin(admin_addr, "GET", "/-/rules").await;
    assert_eq!(after["routes"][0]["rules"]["generation"], generation);
    assert_eq!(after["routes"][0]["rules"]["state"], "enabled");
    gateway.shutdown().await;
}

#[tokio::test]
async fn a_cors_write_through_the_gateway_is_in_force_for_the_very_next_request() {
    let s3 = FakeS3::start().await;
    s3.put_bucket("photos", Some(ALLOW_A));
    let gateway = start(config(vec![endpoint_route(&s3, Addressing::Path)])).await;
    let addr = gateway.addr();
    assert_eq!(
        preflight(addr, "/photos/k", "https://a.example")
            .await
            .status,
        StatusCode::OK
    );

    assert_eq!(put(addr, "/photos?cors", ALLOW_B).await, StatusCode::OK);
    assert_eq!(
        preflight(addr, "/photos/k", "https://b.example")
            .await
            .status,
        StatusCode::OK
    );
    assert_eq!(
        preflight(addr, "/photos/k", "https://a.example")
            .await
            .status,
        StatusCode::FORBIDDEN
    );

    // A document the origin refuses changes nothing.
    let invalid = ALLOW_A.replace("<AllowedMethod>GET", "<AllowedMethod>get");
    assert_eq!(
        put(addr, "/photos?cors", &invalid).await,
        StatusCode::BAD_REQUEST
    );
    assert_eq!(
        preflight(addr, "/photos/k", "https://b.example")
            .await
            .status,
        StatusCode::OK
    );

    let deleted = send(addr, "DELETE", "/photos?cors", &[]).await;
    assert_eq!(deleted.status, StatusCode::NO_CONTENT);
    let off = preflight(addr, "/photos/k", "https://b.example").await;
    assert_eq!(
        off.xml("Message").as_deref(),
        Some("CORSResponse: CORS is not enabled for this bucket.")
    );
    gateway.shutdown().await;
}

#[tokio::test]
async fn a_bucket_created_through_the_gateway_is_known_at_once() {
    let s3 = FakeS3::start().await;
    let gateway = start(config(vec![endpoint_route(&s3, Addressing::Path)])).await;
    let addr = gateway.addr();
    // The creating request itself is judged first: the bucket does not exist yet.
    assert_eq!(put(addr, "/fresh/", "").await, StatusCode::OK);
    let created = preflight(addr, "/fresh/k", "https://a.example").await;
    assert_eq!(
        created.xml("Message").as_deref(),
        Some("CORSResponse: CORS is not enabled for this bucket.")
    );
    // Writes to objects do not refetch the bucket's rules.
    let fetches = s3.cors_gets();
    assert_eq!(put(addr, "/fresh/k", "data").await, StatusCode::OK);
    assert_eq!(s3.cors_gets(), fetches);
    gateway.shutdown().await;
}

#[tokio::test]
async fn unset_default_credentials_mean_unsigned_fetches_and_named_ones_must_exist() {
    let s3 = FakeS3::start().await;
    s3.put_bucket("photos", Some(ALLOW_A));
    let mut named = bucket_route(&s3, "photos", Duration::from_secs(60));
    if let RulesSource::Bucket(source) = &mut named.rules {
        source.signing.access_key_env = "CORSGATE_TEST_UNSET_KEY".into();
        source.signing.explicit = true;
    }
    let Err(err) = corsgate::gateway::spawn(config(vec![named])).await else {
        panic!("started without the named credentials");
    };
    assert!(err.to_string().contains("CORSGATE_TEST_UNSET_KEY"), "{err}");
}

#[test]
fn fetches_are_signed_with_sigv4_from_the_environment() {
    let runtime = tokio::runtime::Runtime::new().expect("runtime");
    let s3 = runtime.block_on(FakeS3::start());
    s3.put_bucket("photos", Some(ALLOW_A));
    let url = s3.url();
    let (_binary, addr) = Binary::serve(
        &url,
        &["--rules-bucket", "photos", "--region", "eu-west-3"],
        &[
            ("AWS_ACCESS_KEY_ID", "AKIDCORSGATETEST"),
            ("AWS_SECRET_ACCESS_KEY", "secret"),
        ],
    );
    let answer = runtime.block_on(preflight(addr, "/k", "https://a.example"));
    assert_eq!(answer.status, StatusCode::OK);
    let auth = s3.authorizations();
    let first = auth
        .first()
        .cloned()
        .flatten()
        .expect("the fetch was signed");
    assert!(
        first.starts_with("AWS4-HMAC-SHA256 Credential=AKIDCORSGATETEST/")
            && first.contains("/eu-west-3/s3/aws4_request"),
        "{first}"
    );
}
