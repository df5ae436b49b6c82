//! One whole request through the gateway's handler, in process: a hyper HTTP/1.1 client and
//! server over an in-memory pipe, the gateway built from a configuration like an operator's.
//! Whatever the request, the gateway answers, with a valid status and valid headers, and keeps
//! the CORS promises a client can check on the wire alone.
//!
//! Input (text, so that the vectors' cases are seeds as written and findings read plainly):
//!
//! ```text
//! <rules>\0<METHOD> <target>
//! <Name>: <value>
//! ...
//! ```
//!
//! `<rules>` is a rules document (XML or JSON; one that does not compile leaves the route without
//! CORS configuration), `@<name>` for a document of the vectors, `@none` for no configuration or
//! `@nobucket` for a bucket that does not exist. Header lines that are not a valid name and value
//! are skipped, as are the framing headers: framing is the client's business, and a declared body
//! that never comes would only stall the exchange.
//!
//! Three routes: `*` with the fuzzed rules, `nocors.test` without rules, and `s3.test`, an S3
//! endpoint whose bucket rules are fetched per bucket. They all forward to one stand-in origin on
//! 127.0.0.1, served by the harness itself on a port it holds for the whole run: it reads the
//! request head and answers at once, with CORS headers of its own for the gateway to replace and
//! a `Vary` to merge (a `?cors` fetch gets a rules document). Nothing leaves the machine.
//!
//! `CORSGATE_FUZZ_SHOW=1` prints every exchange, to read what a saved input does.

#![no_main]

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::{Arc, LazyLock};
use std::time::Duration;

use bytes::Bytes;
use corsgate::config::Config;
use corsgate::cors::{BucketCors, Policy};
use corsgate::gateway::Gateway;
use corsgate::gateway::handler::handle;
use corsgate::gateway::proxy::Peer;
use corsgate::rules::{Loaded, RouteRules};
use corsgate_fuzz::vectors;
use http::header::{
    ACCESS_CONTROL_ALLOW_CREDENTIALS, ACCESS_CONTROL_ALLOW_HEADERS, ACCESS_CONTROL_ALLOW_METHODS,
    ACCESS_CONTROL_ALLOW_ORIGIN, ACCESS_CONTROL_EXPOSE_HEADERS, ACCESS_CONTROL_MAX_AGE, CONNECTION,
    CONTENT_LENGTH, EXPECT, HeaderName, TE, TRANSFER_ENCODING, UPGRADE, VARY,
};
use http::{HeaderValue, Method, Request, Uri};
use http_body_util::{BodyExt, Empty};
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use libfuzzer_sys::fuzz_target;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;
use tokio::runtime::Runtime;

/// Far beyond any answer the gateway or the stand-in origin gives: reaching it is a hang.
const ANSWER_DEADLINE: Duration = Duration::from_secs(10);

static SHOW: LazyLock<bool> = LazyLock::new(|| std::env::var_os("CORSGATE_FUZZ_SHOW").is_some());

struct Harness {
    runtime: Runtime,
    gateway: Arc<Gateway>,
}

static HARNESS: LazyLock<Harness> = LazyLock::new(|| {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a current-thread runtime builds");
    let gateway = runtime.block_on(async {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("a loopback port for the stand-in origin");
        let origin = listener
            .local_addr()
            .expect("a bound listener has an address");
        tokio::spawn(stand_in_origin(listener));
        Arc::new(gateway(origin))
    });
    Harness { runtime, gateway }
});

/// The rules every bucket of the stand-in origin holds, and the `*` route's until the first input
/// installs its own.
const BUCKET_RULES: &str = "<CORSConfiguration><CORSRule><AllowedOrigin>https://*.example.com</AllowedOrigin><AllowedMethod>GET</AllowedMethod><AllowedMethod>PUT</AllowedMethod><AllowedHeader>x-amz-*</AllowedHeader><ExposeHeader>ETag</ExposeHeader></CORSRule></CORSConfiguration>";

/// The stand-in origin's answer to anything but a `?cors` fetch.
const ORIGIN_ANSWER: &[u8] = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nAccess-Control-Allow-Origin: https://origin.test\r\nAccess-Control-Allow-Credentials: true\r\nAccess-Control-Expose-Headers: x-origin\r\nVary: Accept-Encoding, origin\r\nConnection: close\r\n\r\nok";

/// Reads each request head and answers it; the gateway's connection is closed after every answer.
async fn stand_in_origin(listener: TcpListener) {
    loop {
        let Ok((mut stream, _)) = listener.accept().await else {
            continue;
        };
        tokio::spawn(async move {
            let mut head = Vec::new();
            let mut buf = [0u8; 4096];
            while !head.windows(4).any(|w| w == b"\r\n\r\n") {
                match tokio::time::timeout(ANSWER_DEADLINE, stream.read(&mut buf)).await {
                    Ok(Ok(n)) if n > 0 => head.extend_from_slice(&buf[..n]),
                    _ => return,
                }
            }
            let first_line = head.split(|&b| b == b'\n').next().unwrap_or_default();
            let answer = if first_line.windows(5).any(|w| w == b"?cors") {
                format!(
                    "HTTP/1.1 200 OK\r\nContent-Type: application/xml\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{BUCKET_RULES}",
                    BUCKET_RULES.len()
                )
                .into_bytes()
            } else {
                ORIGIN_ANSWER.to_vec()
            };
            let _ = stream.write_all(&answer).await;
            let _ = stream.shutdown().await;
        });
    }
}

fn gateway(origin: SocketAddr) -> Gateway {
    let origin = origin.port();
    let dir = std::env::temp_dir().join(format!("corsgate-fuzz-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("a temporary directory");
    let rules = dir.join("rules.xml");
    std::fs::write(&rules, BUCKET_RULES).expect("the rules file is written");
    let toml = format!(
        r#"
[server]
listen = ["127.0.0.1:0"]

[server.timeouts]
connect = "1s"
origin_response = "2s"

[admin]
listen = "off"

[[route]]
hosts = ["nocors.test"]
origin = "http://127.0.0.1:{origin}"

[[route]]
hosts = ["s3.test"]
origin = "http://127.0.0.1:{origin}"
s3 = {{ addressing = "path" }}

[[route]]
hosts = ["*"]
origin = "http://127.0.0.1:{origin}/prefix"
rules = {{ file = "{}" }}
"#,
        rules.display()
    );
    let config = Config::parse(&toml).unwrap_or_else(|e| panic!("harness configuration: {e}"));
    let gateway = Gateway::new(&config).unwrap_or_else(|e| panic!("harness gateway: {e}"));
    // Read once at the start; the fuzzed rules are installed in memory from here on.
    let _ = std::fs::remove_dir_all(&dir);
    gateway
}

/// What the input's first part installs on the `*` route.
fn loaded(rules: &[u8]) -> Loaded {
    let named = |name: &[u8]| {
        vectors()
            .configs
            .iter()
            .find(|(n, _)| n.as_bytes() == name)
            .map(|(_, doc)| doc.as_bytes())
    };
    let document = match rules.strip_prefix(b"@") {
        Some(b"none") => return Loaded::without_document(BucketCors::NotConfigured),
        Some(b"nobucket") => return Loaded::without_document(BucketCors::NoSuchBucket),
        Some(name) => named(name).unwrap_or(rules),
        None => rules,
    };
    match Policy::parse_document(document) {
        Ok((document, policy)) => Loaded {
            cors: BucketCors::Enabled(policy),
            document: Some(document),
        },
        Err(_) => Loaded::without_document(BucketCors::NotConfigured),
    }
}

/// The request the input's second part describes, or `None` when its first line names no method
/// and target a client could send.
fn request(text: &[u8]) -> Option<Request<Empty<Bytes>>> {
    let mut lines = text
        .split(|&b| b == b'\n')
        .map(|l| l.strip_suffix(b"\r").unwrap_or(l));
    let first = lines.next()?;
    let (method, target) = match first.iter().position(|&b| b == b' ') {
        Some(sp) => (&first[..sp], &first[sp + 1..]),
        None => (first, &b"/"[..]),
    };
    let method = Method::from_bytes(method).ok()?;
    // CONNECT turns the connection into a tunnel: nothing of the gateway's left to see.
    if method == Method::CONNECT {
        return None;
    }
    let uri = Uri::try_from(target).ok()?;
    let mut req = Request::builder()
        .method(method)
        .uri(uri)
        .body(Empty::new())
        .ok()?;
    for line in lines {
        let Some(colon) = line.iter().position(|&b| b == b':') else {
            continue;
        };
        let value = line[colon + 1..].trim_ascii_start();
        let (Ok(name), Ok(value)) = (
            HeaderName::from_bytes(&line[..colon]),
            HeaderValue::from_bytes(value),
        ) else {
            continue;
        };
        if [
            CONTENT_LENGTH,
            TRANSFER_ENCODING,
            CONNECTION,
            UPGRADE,
            EXPECT,
            TE,
        ]
        .contains(&name)
            || name.as_str() == "keep-alive"
        {
            continue;
        }
        req.headers_mut().append(name, value);
    }
    Some(req)
}

fuzz_target!(|data: &[u8]| {
    let (rules, text) = match data.iter().position(|&b| b == 0) {
        Some(nul) => (&data[..nul], &data[nul + 1..]),
        None => (&b"@none"[..], data),
    };
    let Some(req) = request(text) else {
        return;
    };
    let harness = &*HARNESS;
    let route = harness
        .gateway
        .routes
        .all()
        .iter()
        .find_map(|r| match &r.rules {
            RouteRules::File(file) => Some(file),
            _ => None,
        });
    route
        .expect("the harness has one file route")
        .live()
        .offer(loaded(rules));
    harness.runtime.block_on(async {
        tokio::time::timeout(ANSWER_DEADLINE, exchange(&harness.gateway, req))
            .await
            .unwrap_or_else(|_| panic!("no answer within {ANSWER_DEADLINE:?}"))
    });
});

/// Sends `req` over one fresh HTTP/1.1 connection to the gateway and checks the answer.
async fn exchange(gateway: &Arc<Gateway>, req: Request<Empty<Bytes>>) {
    let (client_io, server_io) = tokio::io::duplex(64 * 1024);
    let peer = Peer {
        addr: SocketAddr::from(([127, 0, 0, 1], 40000)),
        scheme: "http",
    };
    let server = hyper::server::conn::http1::Builder::new().serve_connection(
        TokioIo::new(server_io),
        service_fn(|req| {
            let answer = handle(gateway, peer, req);
            async move { Ok::<_, Infallible>(answer.await) }
        }),
    );
    let is_options = req.method() == Method::OPTIONS;
    let shown = SHOW.then(|| format!("{} {} {:?}", req.method(), req.uri(), req.headers()));
    let client = async move {
        let (mut sender, connection) =
            hyper::client::conn::http1::handshake(TokioIo::new(client_io))
                .await
                .expect("an in-memory handshake cannot fail");
        let ask = async move {
            let response = match sender.send_request(req).await {
                Ok(response) => response,
                // The client refused to send it: nothing reached the gateway.
                Err(e) if e.is_user() => return,
                Err(e) => panic!("no valid answer: {e:?}"),
            };
            let (head, body) = response.into_parts();
            let body = body
                .collect()
                .await
                .unwrap_or_else(|e| panic!("the answer's body breaks off: {e:?}"))
                .to_bytes();
            if let Some(shown) = shown {
                eprintln!("{shown}\n  -> {} {:?} {body:?}", head.status, head.headers);
            }
            check(&head, &body, is_options);
        };
        // The connection ends once the sender is gone and the answer is read.
        let (connection, ()) = tokio::join!(connection, ask);
        let _ = connection;
    };
    let (served, ()) = tokio::join!(server, client);
    let _ = served;
}

fn check(head: &http::response::Parts, body: &Bytes, is_options: bool) {
    let status = head.status.as_u16();
    assert!((100..=599).contains(&status), "status {status}");
    for (name, value) in &head.headers {
        assert!(
            value
                .as_bytes()
                .iter()
                .all(|&b| b == b'\t' || (b >= 0x20 && b != 0x7f)),
            "{name}: {value:?}"
        );
    }
    // corsgate is the single authority on CORS headers: each at most once.
    for name in [
        ACCESS_CONTROL_ALLOW_ORIGIN,
        ACCESS_CONTROL_ALLOW_CREDENTIALS,
        ACCESS_CONTROL_ALLOW_METHODS,
        ACCESS_CONTROL_ALLOW_HEADERS,
        ACCESS_CONTROL_EXPOSE_HEADERS,
        ACCESS_CONTROL_MAX_AGE,
    ] {
        assert!(
            head.headers.get_all(&name).iter().count() <= 1,
            "{name} twice: {:?}",
            head.headers
        );
    }
    // Spec §4: the origin's `Vary` and ours are one line, each token once.
    let vary: Vec<_> = head.headers.get_all(VARY).iter().collect();
    assert!(vary.len() <= 1, "Vary twice: {:?}", head.headers);
    if let Some(vary) = vary.first() {
        let mut tokens: Vec<String> = String::from_utf8_lossy(vary.as_bytes())
            .split(',')
            .map(|t| t.trim().to_ascii_lowercase())
            .collect();
        let count = tokens.len();
        tokens.sort();
        tokens.dedup();
        assert_eq!(tokens.len(), count, "a Vary token twice: {vary:?}");
    }
    let allow_origin = head.headers.get(ACCESS_CONTROL_ALLOW_ORIGIN);
    if allow_origin.is_some_and(|v| v == "*") {
        assert!(
            !head.headers.contains_key(ACCESS_CONTROL_ALLOW_CREDENTIALS),
            "credentials with `*`: {:?}",
            head.headers
        );
    }
    let cors_headers = head
        .headers
        .keys()
        .any(|n| n.as_str().starts_with("access-control-"));
    if cors_headers {
        assert!(
            allow_origin.is_some(),
            "CORS headers without an allowed origin: {:?}",
            head.headers
        );
    }
    if is_options {
        // Spec §3: a refused preflight carries no CORS header; an allowed one has no body.
        if status != 200 {
            assert!(
                !cors_headers,
                "a refused preflight ({status}) with CORS headers: {:?}",
                head.headers
            );
        } else {
            assert!(body.is_empty(), "a preflight answer with a body");
        }
    }
}
