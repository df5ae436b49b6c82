//! The rules control panel: a small web UI on the admin listener (`/`, `/ui/…`) and the JSON API
//! behind it (`/-/api/…`, documented in `docs/admin-api.md`).
//!
//! The pages are static files embedded in the binary (HTML, CSS and a little plain JavaScript, no
//! build step, nothing loaded from elsewhere), sent with a `Content-Security-Policy` that allows
//! only this listener's own scripts and styles. Every judgement of rules — validation, lints,
//! which rule answers a request — is the CORS core's, reached through the API: the script only
//! collects fields and shows answers, so the panel can never disagree with the gateway.
//!
//! Requests reach this module only once the admin guard (Host, Origin, token) let them through.
//! Rules change only through [`apply`]: a valid document, over the generation the editor started
//! from, written atomically to the rules file or stored in the bucket with a signed `PUT ?cors`.

mod api;
mod apply;
mod assets;
mod draft;
mod verdicts;

use std::net::SocketAddr;

use http::header::{CACHE_CONTROL, HeaderMap, HeaderName, HeaderValue, X_FRAME_OPTIONS};
use http::{Request, Response};

use super::{Body, BodyError, Gateway};

/// The admin client's address, which the admin listener attaches to each request: every apply is
/// logged with it.
#[derive(Clone, Copy, Debug)]
pub struct Peer(pub SocketAddr);

/// Whether `path` is the panel's.
pub fn serves(path: &str) -> bool {
    path == "/" || path.starts_with("/ui/") || path.starts_with("/-/api/")
}

/// Answers a panel request the guard has let through.
pub async fn answer<B>(gateway: &Gateway, req: Request<B>) -> Response<Body>
where
    B: hyper::body::Body<Data = bytes::Bytes>,
    B::Error: Into<BodyError>,
{
    let api = req.uri().path().starts_with("/-/api/");
    let mut response = if api {
        api::answer(gateway, req).await
    } else {
        assets::answer(&req)
    };
    protect(response.headers_mut(), api);
    response
}

/// Only this listener's own scripts, styles and images; never inside a frame (clickjacking an
/// Apply button); never sniffed into another type; nothing kept by caches: an API answer is the
/// state of the moment, and the pages change with the binary.
fn protect(headers: &mut HeaderMap, api: bool) {
    const CSP: HeaderName = HeaderName::from_static("content-security-policy");
    const NOSNIFF: HeaderName = HeaderName::from_static("x-content-type-options");
    const REFERRER: HeaderName = HeaderName::from_static("referrer-policy");
    headers.insert(
        CSP,
        HeaderValue::from_static(
            "default-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'",
        ),
    );
    headers.insert(X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    headers.insert(NOSNIFF, HeaderValue::from_static("nosniff"));
    headers.insert(REFERRER, HeaderValue::from_static("no-referrer"));
    headers.insert(
        CACHE_CONTROL,
        HeaderValue::from_static(if api { "no-store" } else { "no-cache" }),
    );
}
