//! A private bucket behind a signing route, against moto's S3 server with signature checking
//! on: moto lets the first few requests through unauthenticated (`INITIAL_NO_AUTH_ACTION_COUNT`),
//! which create an IAM user and its key; every request after that must carry a valid SigV4
//! signature of a key whose policy allows it.
//!
//! The real binary runs the gateway (its keys come from its environment, and its log is read).
//! Needs `.venv/bin/moto_server` (`scripts/test.sh` installs it) or `CORSGATE_MOTO_SERVER`.
use std::net::SocketAddr;
use std::time::{Duration, SystemTime};

use crate::common::*;
use bytes::Bytes;
use corsgate::s3::{Credentials, OriginSigner};
use http::{HeaderMap, HeaderValue, Method, Request, StatusCode};
use http_body_util::{BodyExt, Full};

const BUCKET: &str = "private";
const KEY: &str = "media/clip.bin";
const APP: &str = "https://app.example";
const RULES: &str = "<CORSConfiguration><CORSRule>\
    <AllowedOrigin>https://app.example</AllowedOrigin>\
    <AllowedMethod>GET</AllowedMethod><AllowedMethod>PUT</AllowedMethod>\
    <ExposeHeader>ETag</ExposeHeader>\
    </CORSRule></CORSConfiguration>";

/// The object: bytes that differ at every offset, so a wrong range shows.
fn object() -> Vec<u8> {
    (0..100_000u32).map(|i| (i % 251) as u8).collect()
}

/// moto with IAM authentication on, its user and key made, the bucket and object uploaded.
struct PrivateS3 {
    moto: Moto,
    access_key: String,
    secret_key: String,
}

impl PrivateS3 {
    async fn start() -> PrivateS3 {
        // CreateUser, PutUserPolicy, CreateAccessKey: then every request is checked.
        let moto = Moto::start_with_env(&[("INITIAL_NO_AUTH_ACTION_COUNT", "3")]);
        let mut s3 = PrivateS3 {
            moto,
            access_key: String::new(),
            secret_key: String::new(),
        };
        s3.iam("Action=CreateUser&UserName=gateway").await;
        let policy = "%7B%22Version%22%3A%222012-10-17%22%2C%22Statement%22%3A%5B%7B%22Effect\
                      %22%3A%22Allow%22%2C%22Action%22%3A%22s3%3A*%22%2C%22Resource%22%3A%22*%22%7D%5D%7D";
        s3.iam(&format!(
            "Action=PutUserPolicy&UserName=gateway&PolicyName=all-s3&PolicyDocument={policy}"
        ))
        .await;
        let created = s3.iam("Action=CreateAccessKey&UserName=gateway").await;
        s3.access_key = element(&created, "AccessKeyId");
        s3.secret_key = element(&created, "SecretAccessKey");

        let made = s3
            .signed(Method::PUT, &format!("/{BUCKET}"), Bytes::new())
            .await;
        assert_eq!(made.status, StatusCode::OK, "CreateBucket: {made:?}");
        let put = s3
            .signed(Method::PUT, &format!("/{BUCKET}/{KEY}"), object().into())
            .await;
        assert_eq!(put.status, StatusCode::OK, "PutObject: {put:?}");
        s3
    }

    fn url(&self) -> String {
        format!("http://{}/{BUCKET}", self.moto.addr)
    }

    /// One of the unauthenticated IAM calls; its XML answer. The Authorization header only
    /// tells moto which service is meant: nothing is checked yet.
    async fn iam(&self, form: &str) -> String {
        let req = Request::post(format!("http://{}/", self.moto.addr))
            .header("content-type", "application/x-www-form-urlencoded")
            .header(
                "authorization",
                "AWS4-HMAC-SHA256 Credential=setup/20240101/us-east-1/iam/aws4_request, \
                 SignedHeaders=host, Signature=0",
            )
            .body(Full::new(Bytes::from(format!("{form}&Version=2010-05-08"))))
            .expect("request");
        let answer = request(req).await;
        let text = String::from_utf8_lossy(&answer.body).into_owned();
        assert_eq!(answer.status, StatusCode::OK, "{form}: {text}");
        text
    }

    /// A request signed with the user's key, straight to moto.
    async fn signed(&self, method: Method, path: &str, body: Bytes) -> Answer {
        let signer = OriginSigner::new(
            Credentials::new(self.access_key.clone(), self.secret_key.clone(), None),
            "us-east-1".into(),
            "s3".into(),
            vec![method.clone()],
            "the test's".into(),
        );
        let uri: http::Uri = path.parse().expect("path");
        let mut headers = HeaderMap::new();
        headers.insert(
            "host",
            HeaderValue::from_str(&self.moto.addr.to_string()).expect("host"),
        );
        signer
            .sign(&method, &uri, &mut headers, SystemTime::now())
            .expect("signs");
        let mut req = Request::builder()
            .method(method)
            .uri(format!("http://{}{path}", self.moto.addr));
        for (name, value) in &headers {
            req = req.header(name, value);
        }
        request(req.body(Full::new(body)).expect("request")).await
    }
}

/// The text of the first `<name>` element.
fn element(xml: &str, name: &str) -> String {
    let open = format!("<{name}>");
    let start = xml
        .find(&open)
        .unwrap_or_else(|| panic!("no {name} in {xml}"))
        + open.len();
    let end = start + xml[start..].find('<').expect("closed element");
    xml[start..end].to_string()
}

async fn request(req: Request<Full<Bytes>>) -> Answer {
    let response = tokio::time::timeout(Duration::from_secs(30), client().request(req))
        .await
        .expect("an answer within 30 s")
        .expect("an answer");
    let (parts, body) = response.into_parts();
    let body = body.collect().await.expect("whole body").to_bytes();
    Answer {
        status: parts.status,
        headers: parts.headers,
        body,
    }
}

/// Sends a request with a body to the gateway.
async fn send_body(gateway: SocketAddr, method: &str, path: &str, body: &'static [u8]) -> Answer {
    let req = Request::builder()
        .method(method)
        .uri(format!("http://{gateway}{path}"))
        .header("origin", APP)
        .body(Full::new(Bytes::from_static(body)))
        .expect("request");
    request(req).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_private_object_is_served_signed_and_never_written_through_the_gateway() {
    let s3 = PrivateS3::start().await;
    let direct = request(
        Request::get(format!("{}/{KEY}", s3.url()))
            .body(Full::new(Bytes::new()))
            .expect("request"),
    )
    .await;
    assert_eq!(
        direct.status,
        StatusCode::FORBIDDEN,
        "moto checks signatures: {direct:?}"
    );

    let rules = rules_file(RULES);
    let rules = rules.to_string_lossy();
    let (_gateway, addr) = Binary::serve(
        &s3.url(),
        &["--sign-region", "us-east-1", "--rules", &rules],
        &[
            ("AWS_ACCESS_KEY_ID", &s3.access_key),
            ("AWS_SECRET_ACCESS_KEY", &s3.secret_key),
        ],
    );
    let path = format!("/{KEY}");
    let whole = object();

    let get = send(addr, "GET", &path, &[("origin", APP)]).await;
    assert_eq!(get.status, StatusCode::OK, "{get:?}");
    assert_eq!(get.body.as_ref(), whole.as_slice());
    assert_eq!(get.header("access-control-allow-origin"), Some(APP));
    let etag = get.header("etag").expect("an ETag").to_string();

    let head = send(addr, "HEAD", &path, &[]).await;
    assert_eq!(head.status, StatusCode::OK);
    assert_eq!(
        head.header("content-length"),
        Some(whole.len().to_string().as_str())
    );
    assert!(head.body.is_empty());

    let range = send(addr, "GET", &path, &[("range", "bytes=1000-1999")]).await;
    assert_eq!(range.status, StatusCode::PARTIAL_CONTENT, "{range:?}");
    assert_eq!(range.body.as_ref(), &whole[1000..2000]);
    assert_eq!(
        range.header("content-range"),
        Some(format!("bytes 1000-1999/{}", whole.len()).as_str())
    );

    let cached = send(addr, "GET", &path, &[("if-none-match", &etag)]).await;
    assert_eq!(cached.status, StatusCode::NOT_MODIFIED, "{cached:?}");

    // The query reaches the origin (signing parameters aside): moto honours the override.
    let typed = send(
        addr,
        "GET",
        &format!("{path}?response-content-type=text%2Fplain&X-Amz-Signature=forged"),
        &[],
    )
    .await;
    assert_eq!(typed.status, StatusCode::OK, "{typed:?}");
    assert_eq!(typed.header("content-type"), Some("text/plain"));

    // A client's own credentials are replaced, not passed on: a forged set changes nothing.
    let forged = send(
        addr,
        "GET",
        &format!(
            "{path}?X-Amz-Algorithm=AWS4-HMAC-SHA256&X-Amz-Credential=AKIAFORGED%2F20200101%2Fus-east-1%2Fs3%2Faws4_request\
             &X-Amz-Date=20200101T000000Z&X-Amz-Expires=60&X-Amz-SignedHeaders=host"
        ),
        &[
            (
                "authorization",
                "AWS4-HMAC-SHA256 Credential=AKIAFORGED/20200101/us-east-1/s3/aws4_request, \
                 SignedHeaders=host, Signature=deadbeef",
            ),
            ("x-amz-date", "20200101T000000Z"),
            ("x-amz-content-sha256", "UNSIGNED-PAYLOAD"),
            ("x-amz-security-token", "forged"),
        ],
    )
    .await;
    assert_eq!(forged.status, StatusCode::OK, "{forged:?}");
    assert_eq!(forged.body.as_ref(), whole.as_slice());

    // Writing is not in sign.methods: refused here, decorated like any answer.
    let put = send_body(addr, "PUT", &path, b"overwritten").await;
    assert_eq!(put.status, StatusCode::FORBIDDEN, "{put:?}");
    assert_eq!(put.xml("Code").as_deref(), Some("AccessDenied"));
    assert_eq!(put.header("access-control-allow-origin"), Some(APP));
    let delete = send(addr, "DELETE", &path, &[]).await;
    assert_eq!(delete.status, StatusCode::FORBIDDEN);
    let still = s3
        .signed(Method::GET, &format!("/{BUCKET}{path}"), Bytes::new())
        .await;
    assert_eq!(still.status, StatusCode::OK);
    assert_eq!(
        still.body.as_ref(),
        whole.as_slice(),
        "the object is unchanged"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_keys_give_a_502_and_a_log_line_naming_the_variables_never_the_secret() {
    let s3 = PrivateS3::start().await;
    let rules = rules_file(RULES);
    let file = config_file(&format!(
        "[server]\nlisten = [\"127.0.0.1:0\"]\n\
         [[route]]\nhosts = [\"*\"]\norigin = \"{}\"\nrules = {{ file = \"{}\" }}\n\
         sign = {{ region = \"us-east-1\", access_key_env = \"PRIVATE_BUCKET_KEY\", \
         secret_key_env = \"PRIVATE_BUCKET_SECRET\" }}\n",
        s3.url(),
        rules.display()
    ));
    let path = file.to_string_lossy().into_owned();
    let wrong_secret = "not-the-secret-at-all";
    let (gateway, addr) = Binary::start_with_env(
        &["serve", "--config", &path],
        env!("CARGO_MANIFEST_DIR"),
        &[
            ("PRIVATE_BUCKET_KEY", &s3.access_key),
            ("PRIVATE_BUCKET_SECRET", wrong_secret),
        ],
    );
    let answer = send(addr, "GET", &format!("/{KEY}"), &[("origin", APP)]).await;
    assert_eq!(answer.status, StatusCode::BAD_GATEWAY, "{answer:?}");
    assert_eq!(answer.xml("Code").as_deref(), Some("BadGateway"));
    assert_eq!(answer.header("access-control-allow-origin"), Some(APP));
    let logged = eventually(Duration::from_secs(10), || async {
        !gateway.log_lines("SignatureDoesNotMatch").is_empty()
    })
    .await;
    let lines = gateway.log_lines("SignatureDoesNotMatch");
    assert!(logged, "no log line: {:?}", gateway.log_lines(""));
    assert!(
        lines[0].contains("route[1]")
            && lines[0].contains("PRIVATE_BUCKET_KEY and PRIVATE_BUCKET_SECRET"),
        "{lines:?}"
    );
    assert!(
        gateway.log_lines(wrong_secret).is_empty(),
        "the secret is never logged"
    );

    // An unknown key is the same kind of mistake.
    let (unknown, addr) = Binary::start_with_env(
        &["serve", "--config", &path],
        env!("CARGO_MANIFEST_DIR"),
        &[
            ("PRIVATE_BUCKET_KEY", "AKIAUNKNOWN"),
            ("PRIVATE_BUCKET_SECRET", &s3.secret_key),
        ],
    );
    let answer = send(addr, "GET", &format!("/{KEY}"), &[]).await;
    assert_eq!(answer.status, StatusCode::BAD_GATEWAY, "{answer:?}");
    let logged = eventually(Duration::from_secs(10), || async {
        !unknown.log_lines("InvalidAccessKeyId").is_empty()
    })
    .await;
    assert!(logged, "{:?}", unknown.log_lines(""));
}

#[test]
fn a_signing_route_without_its_keys_does_not_start() {
    let file = config_file(
        "[server]\nlisten = [\"127.0.0.1:0\"]\n[admin]\nlisten = \"off\"\n\
         [[route]]\nhosts = [\"*\"]\norigin = \"http://127.0.0.1:1/b\"\n\
         sign = { access_key_env = \"CORSGATE_TEST_UNSET_KEY\" }\n",
    );
    let path = file.to_string_lossy().into_owned();
    let exited = run_to_exit(
        &["serve", "--config", &path],
        &[],
        &["CORSGATE_TEST_UNSET_KEY"],
        Duration::from_secs(20),
    )
    .expect("exits");
    assert_eq!(exited.code, Some(1), "{exited:?}");
    assert!(
        exited
            .stderr
            .contains("route[1].sign: environment variable CORSGATE_TEST_UNSET_KEY is not set"),
        "{}",
        exited.stderr
    );
}
