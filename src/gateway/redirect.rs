//! The plain-HTTP listener of an HTTPS site: a request for a host some route serves gets a 308
//! to the same host and target over HTTPS, except the health checks `/healthz` and `/readyz`,
//! answered 200 here so a load balancer probing the plain port sees the instance alive.
//!
//! 308, not 301: the client must repeat the same method with the same body (RFC 9110 §15.4.9),
//! so a `PUT` that was sent to `http://` by mistake is not turned into a `GET`. Nothing is
//! forwarded from here, and no CORS headers are added: the HTTPS answer carries them.
//!
//! A host no route serves gets `421 Misdirected Request` and no `Location`: reflecting any `Host`
//! would make this an open redirect to any site. A `"*"` route means the operator serves every
//! host, so then every host is redirected.

use http::header::{CONTENT_TYPE, HeaderValue, LOCATION};
use http::{Request, Response, StatusCode};

use super::route::request_authority;
use super::{Body, empty, full};
use crate::config::HostPattern;

/// Paths answered 200 instead of redirected.
const HEALTH_CHECKS: [&str; 2] = ["/healthz", "/readyz"];

/// Where the redirect listener sends clients.
#[derive(Clone, Debug)]
pub struct Redirect {
    /// `None` for 443, which the URL leaves out.
    port: Option<u16>,
    /// Every route's host patterns: a redirect goes only where a route will answer.
    hosts: Vec<HostPattern>,
}

impl Redirect {
    pub fn new(https_port: u16, hosts: Vec<HostPattern>) -> Redirect {
        Redirect {
            port: (https_port != 443).then_some(https_port),
            hosts,
        }
    }

    pub fn answer<B>(&self, req: &Request<B>) -> Response<Body> {
        let path = req.uri().path();
        if HEALTH_CHECKS.contains(&path) {
            return text(StatusCode::OK, "ok\n");
        }
        let Some(host) = request_authority(req)
            .ok()
            .flatten()
            .map(|a| a.host().to_string())
        else {
            return text(
                StatusCode::BAD_REQUEST,
                "a redirect to HTTPS needs a valid Host\n",
            );
        };
        if !self.serves(&host) {
            return text(
                StatusCode::MISDIRECTED_REQUEST,
                "no route serves this host: nothing to redirect to\n",
            );
        }
        match self.location(&host, req) {
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

    /// Whether the redirected request (to `host`, on the HTTPS port) finds a route, by the rules
    /// of [`super::route::Routes::find`]: a pattern with a port matches only a `Host` that names
    /// that port, which the redirect writes only when it is not 443.
    fn serves(&self, host: &str) -> bool {
        self.hosts.iter().any(|pattern| match pattern {
            HostPattern::Any => true,
            HostPattern::Exact { host: h, port } => {
                h.eq_ignore_ascii_case(host) && (port.is_none() || *port == self.port)
            }
        })
    }

    /// `https://host[:port]/path?query`: the request's host without its port (the plain port
    /// means nothing on HTTPS), the target byte for byte.
    fn location<B>(&self, host: &str, req: &Request<B>) -> Option<HeaderValue> {
        let target = req
            .uri()
            .path_and_query()
            .map(|pq| pq.as_str())
            .filter(|t| t.starts_with('/'))
            .unwrap_or("/");
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

    fn any() -> Vec<HostPattern> {
        vec![HostPattern::Any]
    }

    fn hosts(patterns: &[&str]) -> Vec<HostPattern> {
        patterns
            .iter()
            .map(|p| HostPattern::parse(p).expect("pattern"))
            .collect()
    }

    fn location(redirect: &Redirect, uri: &str, host: Option<&str>) -> Response<Body> {
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
            let r = location(&Redirect::new(port, any()), uri, Some(host));
            assert_eq!(r.status(), StatusCode::PERMANENT_REDIRECT, "{uri}");
            assert_eq!(r.headers()[LOCATION], expected);
        }
    }

    #[test]
    fn health_checks_are_answered_not_redirected() {
        for path in HEALTH_CHECKS {
            let r = location(
                &Redirect::new(443, hosts(&["cdn.example.com"])),
                path,
                Some("evil.example"),
            );
            assert_eq!(r.status(), StatusCode::OK, "{path}");
            assert!(!r.headers().contains_key(LOCATION));
        }
    }

    #[test]
    fn a_request_without_a_usable_host_is_400() {
        let r = location(&Redirect::new(443, any()), "/x", None);
        assert_eq!(r.status(), StatusCode::BAD_REQUEST);
        let r = location(&Redirect::new(443, any()), "/x", Some("a b"));
        assert_eq!(r.status(), StatusCode::BAD_REQUEST);
    }

    #[test]
    fn only_hosts_a_route_serves_are_redirected() {
        let cases = [
            (443, "cdn.example.com:80", true),
            (443, "CDN.Example.COM", true),
            (443, "evil.example", false),
            (443, "api.example.com", false),
            (8443, "api.example.com", true),
            (443, "cdn.example.com.evil.example", false),
        ];
        let patterns = hosts(&["cdn.example.com", "api.example.com:8443"]);
        for (port, host, served) in cases {
            let r = location(&Redirect::new(port, patterns.clone()), "/k", Some(host));
            if served {
                assert_eq!(r.status(), StatusCode::PERMANENT_REDIRECT, "{host}");
            } else {
                assert_eq!(r.status(), StatusCode::MISDIRECTED_REQUEST, "{host}");
                assert!(!r.headers().contains_key(LOCATION), "{host}");
            }
        }
    }

    #[test]
    fn a_route_for_any_host_redirects_every_host() {
        let patterns = [hosts(&["cdn.example.com"]), any()].concat();
        let r = location(&Redirect::new(443, patterns), "/", Some("other.example"));
        assert_eq!(r.status(), StatusCode::PERMANENT_REDIRECT);
        assert_eq!(r.headers()[LOCATION], "https://other.example/");
    }
}
