//! A small S3-compatible origin for tests that must not depend on outside programs: buckets with
//! a stored CORS document (`GET`/`PUT`/`DELETE /<bucket>?cors`, path-style or virtual-hosted),
//! S3's error answers, objects that come back with the store's own CORS headers, and switches to
//! make it slow or failing. It validates documents as S3's PutBucketCors does (with corsgate's
//! own validator) and records what corsgate's fetches looked like.

use std::collections::HashMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderValue, Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use tokio::net::TcpListener;

#[derive(Default)]
struct State {
    /// Bucket -> stored CORS document (`None`: no configuration).
    buckets: Mutex<HashMap<String, Option<String>>>,
    cors_gets: AtomicUsize,
    /// Bucket -> `GET ?cors` received for it.
    cors_gets_by_bucket: Mutex<HashMap<String, usize>>,
    /// The `Authorization` header of every `GET ?cors`.
    authorizations: Mutex<Vec<Option<String>>>,
    /// Answer every `GET ?cors` with 503 SlowDown.
    failing: AtomicBool,
    /// Wait this long before answering a `GET ?cors`.
    delay: Mutex<Duration>,
}

/// The fake store, on an ephemeral loopback port.
#[derive(Clone)]
pub struct FakeS3 {
    pub addr: SocketAddr,
    state: Arc<State>,
}

impl FakeS3 {
    pub async fn start() -> FakeS3 {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind fake S3");
        let addr = listener.local_addr().expect("fake S3 addr");
        let state = Arc::new(State::default());
        let shared = Arc::clone(&state);
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let state = Arc::clone(&shared);
                tokio::spawn(async move {
                    let service = service_fn(move |req: Request<Incoming>| {
                        let state = Arc::clone(&state);
                        async move { Ok::<_, Infallible>(answer(&state, req).await) }
                    });
                    let _ = auto::Builder::new(TokioExecutor::new())
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                });
            }
        });
        FakeS3 { addr, state }
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Creates `bucket` with this CORS document (`None`: no configuration).
    pub fn put_bucket(&self, bucket: &str, cors: Option<&str>) {
        self.state
            .buckets
            .lock()
            .expect("buckets")
            .insert(bucket.into(), cors.map(String::from));
    }

    pub fn cors_gets(&self) -> usize {
        self.state.cors_gets.load(Ordering::SeqCst)
    }

    pub fn authorizations(&self) -> Vec<Option<String>> {
        self.state.authorizations.lock().expect("auth").clone()
    }

    pub fn set_failing(&self, failing: bool) {
        self.state.failing.store(failing, Ordering::SeqCst);
    }

    pub fn set_delay(&self, delay: Duration) {
        *self.state.delay.lock().expect("delay") = delay;
    }
}

fn error(status: StatusCode, code: &str) -> Response<Full<Bytes>> {
    let body = format!(
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?><Error><Code>{code}</Code><Message>{code}</Message></Error>"
    );
    let mut response = Response::new(Full::new(Bytes::from(body)));
    *response.status_mut() = status;
    response
}

async fn answer(state: &State, req: Request<Incoming>) -> Response<Full<Bytes>> {
    let (parts, body) = req.into_parts();
    let body = body
        .collect()
        .await
        .map(|b| b.to_bytes())
        .unwrap_or_default();
    let host = parts
        .headers
        .get("host")
        .and_then(|h| h.to_str().ok())
        .unwrap_or("")
        .to_string();
    let path = parts.uri.path().trim_start_matches('/');
    // Virtual-hosted when the Host's first label is a known bucket, else path-style.
    let first_label = host.split('.').next().unwrap_or("");
    let known = |b: &str| state.buckets.lock().expect("buckets").contains_key(b);
    let (bucket, key) = if host.contains('.') && known(first_label) {
        (first_label.to_string(), path.to_string())
    } else {
        let (b, k) = path.split_once('/').unwrap_or((path, ""));
        (b.to_string(), k.to_string())
    };
    let cors = parts
        .uri
        .query()
        .is_some_and(|q| q.split('&').any(|p| p.split('=').next() == Some("cors")));

    if !cors && key.is_empty() && parts.method == Method::PUT {
        // CreateBucket.
        state
            .buckets
            .lock()
            .expect("buckets")
            .entry(bucket)
            .or_insert(None);
        return Response::new(Full::new(Bytes::new()));
    }
    if cors && key.is_empty() {
        match parts.method {
            Method::GET => {
                state.cors_gets.fetch_add(1, Ordering::SeqCst);
                *state
                    .cors_gets_by_bucket
                    .lock()
                    .expect("counts")
                    .entry(bucket.clone())
                    .or_default() += 1;
                state.authorizations.lock().expect("auth").push(
                    parts
                        .headers
                        .get("authorization")
                        .and_then(|v| v.to_str().ok())
                        .map(String::from),
                );
                let delay = *state.delay.lock().expect("delay");
                tokio::time::sleep(delay).await;
                if state.failing.load(Ordering::SeqCst) {
                    return error(StatusCode::SERVICE_UNAVAILABLE, "SlowDown");
                }
                match state.buckets.lock().expect("buckets").get(&bucket) {
                    None => error(StatusCode::NOT_FOUND, "NoSuchBucket"),
                    Some(None) => error(StatusCode::NOT_FOUND, "NoSuchCORSConfiguration"),
                    Some(Some(doc)) => Response::new(Full::new(Bytes::from(doc.clone()))),
                }
            }
            Method::PUT => {
                if !known(&bucket) {
                    return error(StatusCode::NOT_FOUND, "NoSuchBucket");
                }
                match corsgate::cors::Policy::parse(&body) {
                    Err(e) => error(StatusCode::BAD_REQUEST, e.problems[0].code().as_str()),
                    Ok(_) => {
                        let doc = String::from_utf8_lossy(&body).into_owned();
                        state
                            .buckets
                            .lock()
                            .expect("buckets")
                            .insert(bucket, Some(doc));
                        Response::new(Full::new(Bytes::new()))
                    }
                }
            }
            Method::DELETE => {
                if !known(&bucket) {
                    return error(StatusCode::NOT_FOUND, "NoSuchBucket");
                }
                state.buckets.lock().expect("buckets").insert(bucket, None);
                let mut response = Response::new(Full::new(Bytes::new()));
                *response.status_mut() = StatusCode::NO_CONTENT;
                response
            }
            _ => error(StatusCode::METHOD_NOT_ALLOWED, "MethodNotAllowed"),
        }
    } else {
        let mut response = Response::new(Full::new(Bytes::from(format!("object {bucket}/{key}"))));
        // Like moto and many stores: its own CORS headers, which corsgate must strip.
        response
            .headers_mut()
            .insert("access-control-allow-origin", HeaderValue::from_static("*"));
        response
    }
}

impl FakeS3 {
    /// `GET ?cors` received for `bucket`.
    pub fn cors_gets_of(&self, bucket: &str) -> usize {
        self.cors_gets_by_bucket().get(bucket).copied().unwrap_or(0)
    }

    /// `GET ?cors` received, per bucket.
    pub fn cors_gets_by_bucket(&self) -> HashMap<String, usize> {
        self.state
            .cors_gets_by_bucket
            .lock()
            .expect("counts")
            .clone()
    }
}
