//! The plain-HTTP listener of an HTTPS site: every request gets a 308 to the same host and
//! target over HTTPS, except the health checks `/healthz` and `/readyz`, answered 200 here so a
//! load balancer probing the plain port sees the instance alive.
//!
//! 308, not 301: the client must repeat the same method with the same body (RFC 9110 §15.4.9),
//! so a `PUT` that was sent to `http://` by mistake is not turned into a `GET`. Nothing is
//! forwarded from here, and no CORS headers are added: the HTTPS answer carries them.

use http::header::{CONTENT_TYPE, HeaderValue, LOCATION};
use http::{Request, Response, StatusCode};

use super::route::request_authority;
use super::{Body, empty, full};

/// Paths answered 200 instead of redirected.
const HEALTH_CHECKS: [&str; 2] = ["/healthz", "/readyz"];

/// Where the redirect listener sends clients.
#[derive(Clone, Copy, Debug)]
pub struct Redirect {
    /// `None` for 443, which the URL leaves out.
    port: Option<u16>,
}

impl Redirect {
    pub fn new(https_port: u16) -> Redirect {
        Redirect {
            port: (https_port != 443).then_some(https_port),
        }
    }

    pub fn answer<B>(&self, req: &Request<B>) -> Response<Body> {
        let path = req.uri().path();
        if HEALTH_CHECKS.contains(&path) {
            return text(StatusCode::OK, "ok\n");
        }
        match self.location(req) {
            Some(location) => {
                let mut response = Response::new(empty());
                *response.status_mut() = StatusCode::PERMANENT_REDIRECT;
                response.headers_mut().insert(LOCATION, location);
                response
            }
            None => text(
                StatusCode::BAD_REQUEST,
                "a redirect to HTTPS needs a valid Host\n",
            ),
        }
    }

    /// `https://host[:port]/path?query`: the request's host without its port (the plain port
    /// means nothing on HTTPS), the target byte for byte.
    fn location<B>(&self, req: &Request<B>) -> Option<HeaderValue> {
        let authority = request_authority(req).ok()??;
        let target = req
            .uri()
            .path_and_query()
            .map(|pq| pq.as_str())
            .filter(|t| t.starts_with('/'))
            .unwrap_or("/");
        let host = authority.host();
        let location = match self.port {
            Some(port) => format!("https://{host}:{port}{target}"),
            None => format!("https://{host}{target}"),
        };
        HeaderValue::try_from(location).ok()
    }
}

fn text(status: StatusCode, body: &'static str) -> Response<Body> {
    let mut response = Response::new(full(body));
    *response.status_mut() = status;
    response
        .headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static("text/plain"));
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    fn location(redirect: Redirect, uri: &str, host: Option<&str>) -> Response<Body> {
        let mut req = Request::builder().uri(uri);
        if let Some(host) = host {
            req = req.header("host", host);
        }
        redirect.answer(&req.body(()).expect("request"))
    }

    #[test]
    fn redirects_keep_host_path_and_query_and_drop_the_plain_port() {
        let cases = [
            (
                443,
                "/a/b?x=1&y",
                "cdn.example.com:80",
                "https://cdn.example.com/a/b?x=1&y",
            ),
            (
                8443,
                "/",
                "cdn.example.com",
                "https://cdn.example.com:8443/",
            ),
            (443, "/%20x", "[::1]:8080", "https://[::1]/%20x"),
        ];
        for (port, uri, host, expected) in cases {
            let r = location(Redirect::new(port), uri, Some(host));
            assert_eq!(r.status(), StatusCode::PERMANENT_REDIRECT, "{uri}");
            assert_eq!(r.headers()[LOCATION], expected);
        }
    }

    #[test]
    fn health_checks_are_answered_not_redirected() {
        for path in HEALTH_CHECKS {
            let r = location(Redirect::new(443), path, Some("cdn.example.com"));
            assert_eq!(r.status(), StatusCode::OK, "{path}");
            assert!(!r.headers().contains_key(LOCATION));
        }
    }

    #[test]
    fn a_request_without_a_usable_host_is_400() {
        let r = location(Redirect::new(443), "/x", None);
        assert_eq!(r.status(), StatusCode::BAD_REQUEST);
        let r = location(Redirect::new(443), "/x", Some("a b"));
        assert_eq!(r.status(), StatusCode::BAD_REQUEST);
    }
}
