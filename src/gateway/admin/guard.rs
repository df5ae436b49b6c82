//! Who may talk to the admin listener. A loopback address is not enough on its own: any web page
//! the operator's browser opens can send requests to `127.0.0.1`. Three checks, as Caddy's admin
//! API makes them:
//!
//! - `Host` must be the listener's own address, `localhost` or a loopback IP: a DNS-rebinding
//!   page reaches the port under its own host name, which is refused. An IP literal cannot be
//!   rebound, so the only IP literals refused are those of other machines.
//! - `Origin`, when present, must be the listener's own (`http://` and the Host as requested):
//!   another page cannot drive the API, its own pages can. Clients without `Origin` (curl,
//!   probes, scripts) are not browsers and pass.
//! - With `admin.token_env`, `Authorization: Bearer <token>`, compared in constant time. The
//!   health checks and the panel's static pages are exempt (see [`Guard::requires_token`]).
//!
//! Nothing here answers a request: it says whether to, and renders the refusal.

use std::net::{IpAddr, SocketAddr};
use std::sync::OnceLock;

use http::header::{AUTHORIZATION, CONTENT_TYPE, HOST, HeaderValue, ORIGIN, WWW_AUTHENTICATE};
use http::uri::Authority;
use http::{Request, Response, StatusCode};
use subtle::ConstantTimeEq;

use crate::config::AdminConfig;
use crate::gateway::{Body, full};

/// The checks of one admin listener.
#[derive(Debug)]
pub struct Guard {
    /// The configured address: enough to judge a `Host` until the bound one is known.
    configured: Option<SocketAddr>,
    /// The bound address (port 0 resolved), set once the listener is bound.
    bound: OnceLock<SocketAddr>,
    token: Option<Token>,
}

/// Why the admin token cannot be used: each stops the start, since an admin listener the
/// operator meant to protect must not come up unprotected.
#[derive(Debug, thiserror::Error)]
pub enum TokenError {
    #[error(
        "admin.token_env: the environment variable {var} is not set; it must hold the bearer \
         token admin requests send as `Authorization: Bearer <token>`"
    )]
    Unset { var: String },
    #[error(
        "admin.token_env: the environment variable {var} is empty; it must hold the bearer token \
         admin requests send as `Authorization: Bearer <token>`"
    )]
    Empty { var: String },
    #[error(
        "admin.token_env: the environment variable {var} holds characters an HTTP header cannot \
         carry; use visible ASCII without spaces (e.g. `openssl rand -hex 32`)"
    )]
    Unsendable { var: String },
}

/// Why a request is refused before it is answered.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    #[error("the request names no host")]
    NoHost,
    #[error("the Host is neither this listener's address, localhost nor a loopback IP")]
    ForeignHost,
    #[error("the Origin is not this listener's own")]
    ForeignOrigin,
    #[error("an admin token is required: send Authorization: Bearer <token>")]
    MissingToken,
    #[error("the admin token is wrong")]
    WrongToken,
}

/// The expected token.
struct Token(Vec<u8>);

impl std::fmt::Debug for Token {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Token(..)")
    }
}

impl Guard {
    /// The checks `config` asks for; reads the token variable, if one is named, now (when the
    /// admin listener is off there is nothing to protect, and nothing is read).
    pub fn new(config: &AdminConfig) -> Result<Guard, TokenError> {
        let token = match (&config.listen, &config.token_env) {
            (Some(_), Some(var)) => Some(read_token(var, std::env::var_os(var))?),
            _ => None,
        };
        Ok(Guard {
            configured: config.listen,
            bound: OnceLock::new(),
            token,
        })
    }

    /// Records where the listener is bound; only the first call counts.
    pub fn bound(&self, addr: SocketAddr) {
        let _ = self.bound.set(addr);
    }

    /// The liveness and readiness checks answer without the token: container probes and load
    /// balancers call them without headers (putting the token in a probe definition would spread
    /// the secret to every place that reads pod specs), and they change nothing and show only
    /// whether the process serves. So do the panel's static pages (`/`, `/ui/…`): they hold no
    /// data, and a browser cannot send a bearer token with a page it navigates to; their script
    /// sends it with every API call. The Host and Origin checks still apply to them.
    pub(crate) fn requires_token(&self, path: &str) -> bool {
        self.token.is_some()
            && !matches!(path, "/healthz" | "/readyz" | "/")
            && !path.starts_with("/ui/")
    }

    /// Every check of a request to `path`.
    pub fn check<B>(&self, req: &Request<B>) -> Result<(), Refusal> {
        let requested = self.check_host(req)?;
        check_origin(req, &requested)?;
        if self.requires_token(req.uri().path()) {
            self.check_token(req)?;
        }
        Ok(())
    }

    /// Returns the authority the request names (its URI's, else its `Host`), once every one it
    /// names is allowed.
    fn check_host<B>(&self, req: &Request<B>) -> Result<Authority, Refusal> {
        let mut named = None;
        if let Some(authority) = req.uri().authority() {
            self.allow(authority)?;
            named = Some(authority.clone());
        }
        let mut hosts = req.headers().get_all(HOST).iter();
        if let Some(value) = hosts.next() {
            if hosts.next().is_some() {
                return Err(Refusal::ForeignHost);
            }
            let authority =
                Authority::try_from(value.as_bytes()).map_err(|_| Refusal::ForeignHost)?;
            self.allow(&authority)?;
            named.get_or_insert(authority);
        }
        named.ok_or(Refusal::NoHost)
    }

    fn allow(&self, authority: &Authority) -> Result<(), Refusal> {
        if authority.as_str().contains('@') {
            return Err(Refusal::ForeignHost);
        }
        let host = authority.host();
        if host.eq_ignore_ascii_case("localhost") {
            return Ok(());
        }
        let Some(ip) = ip_literal(host) else {
            return Err(Refusal::ForeignHost);
        };
        if ip.to_canonical().is_loopback() || self.is_own(ip, authority.port_u16().unwrap_or(80)) {
            Ok(())
        } else {
            Err(Refusal::ForeignHost)
        }
    }

    /// Whether `ip:port` is where this listener can be reached. Bound to every address (`0.0.0.0`
    /// or `::`), any of the machine's addresses is; a container probe names the pod's.
    fn is_own(&self, ip: IpAddr, port: u16) -> bool {
        let Some(own) = self.bound.get().copied().or(self.configured) else {
            return false;
        };
        let ip_matches = own.ip().is_unspecified() || own.ip().to_canonical() == ip.to_canonical();
        // Port 0 before the bound port is known: the configured address is all there is.
        ip_matches && (own.port() == port || own.port() == 0)
    }

    fn check_token<B>(&self, req: &Request<B>) -> Result<(), Refusal> {
        let Some(expected) = &self.token else {
            return Ok(());
        };
        let Some(presented) = req
            .headers()
            .get(AUTHORIZATION)
            .and_then(|v| bearer(v.as_bytes()))
        else {
            return Err(Refusal::MissingToken);
        };
        // Lengths may differ in time, contents may not: the length of a random token tells an
        // attacker nothing worth having.
        if bool::from(presented.ct_eq(&expected.0)) {
            Ok(())
        } else {
            Err(Refusal::WrongToken)
        }
    }
}

impl Refusal {
    /// 403 for a request from the wrong place, 401 with a `WWW-Authenticate` challenge (RFC 6750
    /// §3) for a missing or wrong token; the body says which, in plain text.
    pub fn response(self) -> Response<Body> {
        let status = match self {
            Refusal::MissingToken | Refusal::WrongToken => StatusCode::UNAUTHORIZED,
            _ => StatusCode::FORBIDDEN,
        };
        let mut response = Response::new(full(format!("{self}\n")));
        *response.status_mut() = status;
        let headers = response.headers_mut();
        headers.insert(
            CONTENT_TYPE,
            HeaderValue::from_static("text/plain; charset=utf-8"),
        );
        match self {
            Refusal::MissingToken => {
                headers.insert(
                    WWW_AUTHENTICATE,
                    HeaderValue::from_static("Bearer realm=\"corsgate admin\""),
                );
            }
            Refusal::WrongToken => {
                headers.insert(
                    WWW_AUTHENTICATE,
                    HeaderValue::from_static(
                        "Bearer realm=\"corsgate admin\", error=\"invalid_token\"",
                    ),
                );
            }
            _ => {}
        }
        response
    }
}

fn read_token(var: &str, value: Option<std::ffi::OsString>) -> Result<Token, TokenError> {
    let var = var.to_string();
    let Some(value) = value else {
        return Err(TokenError::Unset { var });
    };
    let Some(value) = value.to_str() else {
        return Err(TokenError::Unsendable { var });
    };
    // A token written to a file and read with `$(cat …)` or an env file often ends in a newline,
    // which no header can carry.
    let value = value.trim_ascii();
    if value.is_empty() {
        return Err(TokenError::Empty { var });
    }
    if !value.bytes().all(|b| b.is_ascii_graphic()) {
        return Err(TokenError::Unsendable { var });
    }
    Ok(Token(value.as_bytes().to_vec()))
}

/// The token of `Bearer <token>` (the scheme is case-insensitive, RFC 9110 §11.1).
fn bearer(value: &[u8]) -> Option<&[u8]> {
    let (scheme, token) = value.split_at_checked(7)?;
    if !scheme.eq_ignore_ascii_case(b"bearer ") {
        return None;
    }
    let token = token.trim_ascii();
    (!token.is_empty()).then_some(token)
}

/// The IP of a `Host` that is an IP literal (`127.0.0.1`, `[::1]`).
fn ip_literal(host: &str) -> Option<IpAddr> {
    let bare = host
        .strip_prefix('[')
        .and_then(|h| h.strip_suffix(']'))
        .unwrap_or(host);
    bare.parse().ok()
}

/// A browser's request carries `Origin` on every POST and on cross-origin GETs; it must be
/// `http://` and the very authority the request was sent to (default port 80 on either side,
/// host names case-insensitive). `null` (a sandboxed or file page) is another origin.
fn check_origin<B>(req: &Request<B>, requested: &Authority) -> Result<(), Refusal> {
    for origin in req.headers().get_all(ORIGIN) {
        if !is_same_origin(origin.as_bytes(), requested) {
            return Err(Refusal::ForeignOrigin);
        }
    }
    Ok(())
}

fn is_same_origin(origin: &[u8], requested: &Authority) -> bool {
    let Some((scheme, rest)) = origin.split_at_checked(7) else {
        return false;
    };
    if !scheme.eq_ignore_ascii_case(b"http://") {
        return false;
    }
    let Ok(authority) = Authority::try_from(rest) else {
        return false;
    };
    // An origin is scheme, host and port: nothing else (no path, no credentials).
    if authority.as_str().len() != rest.len() || authority.as_str().contains('@') {
        return false;
    }
    authority.host().eq_ignore_ascii_case(requested.host())
        && authority.port_u16().unwrap_or(80) == requested.port_u16().unwrap_or(80)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn guard(listen: &str, token: Option<&str>) -> Guard {
        Guard {
            configured: Some(listen.parse().expect("address")),
            bound: OnceLock::new(),
            token: token.map(|t| Token(t.as_bytes().to_vec())),
        }
    }

    fn request(path: &str, headers: &[(&str, &str)]) -> Request<()> {
        let mut req = Request::builder().method("POST").uri(path);
        for (name, value) in headers {
            req = req.header(*name, *value);
        }
        req.body(()).expect("request")
    }

    #[test]
    fn hosts_of_loopback_localhost_and_the_own_address_are_allowed() {
        let g = guard("10.0.0.5:9901", Some("t"));
        for host in [
            "localhost",
            "LOCALHOST:1234",
            "127.0.0.1",
            "127.0.0.1:9901",
            "127.3.4.5:80",
            "[::1]",
            "[::1]:9901",
            "10.0.0.5:9901",
        ] {
            let req = request("/healthz", &[("host", host)]);
            assert_eq!(g.check(&req), Ok(()), "{host}");
        }
    }

    #[test]
    fn other_hosts_are_refused() {
        let g = guard("10.0.0.5:9901", None);
        for host in [
            "evil.example",
            "evil.example:9901",
            "localhost.evil.example",
            "10.0.0.5",
            "10.0.0.5:9902",
            "10.0.0.6:9901",
            "user@127.0.0.1",
            "2130706433",
        ] {
            let req = request("/healthz", &[("host", host)]);
            assert_eq!(g.check(&req), Err(Refusal::ForeignHost), "{host}");
        }
        let req = request("/healthz", &[]);
        assert_eq!(g.check(&req), Err(Refusal::NoHost));
        let two = request(
            "/healthz",
            &[("host", "127.0.0.1"), ("host", "evil.example")],
        );
        assert_eq!(g.check(&two), Err(Refusal::ForeignHost));
    }

    #[test]
    fn an_absolute_target_is_judged_too() {
        let g = guard("127.0.0.1:9901", None);
        let req = request(
            "http://evil.example/-/reload",
            &[("host", "127.0.0.1:9901")],
        );
        assert_eq!(g.check(&req), Err(Refusal::ForeignHost));
    }

    #[test]
    fn bound_to_every_address_any_ip_literal_on_its_port_is_its_own() {
        let g = guard("0.0.0.0:0", None);
        g.bound("0.0.0.0:9901".parse().expect("address"));
        let ok = request("/readyz", &[("host", "10.1.2.3:9901")]);
        assert_eq!(g.check(&ok), Ok(()));
        let other_port = request("/readyz", &[("host", "10.1.2.3:9902")]);
        assert_eq!(g.check(&other_port), Err(Refusal::ForeignHost));
        let name = request("/readyz", &[("host", "pod.example:9901")]);
        assert_eq!(g.check(&name), Err(Refusal::ForeignHost));
    }

    #[test]
    fn only_the_listeners_own_origin_may_send() {
        let g = guard("127.0.0.1:9901", None);
        let host = ("host", "localhost:9901");
        let cases = [
            ("http://localhost:9901", true),
            ("HTTP://LocalHost:9901", true),
            ("https://localhost:9901", false),
            ("http://localhost:9902", false),
            ("http://127.0.0.1:9901", false),
            ("https://evil.example", false),
            ("http://localhost:9901/x", false),
            ("null", false),
        ];
        for (origin, allowed) in cases {
            let req = request("/-/reload", &[host, ("origin", origin)]);
            let expected = if allowed {
                Ok(())
            } else {
                Err(Refusal::ForeignOrigin)
            };
            assert_eq!(g.check(&req), expected, "{origin}");
        }
        let default_port = request(
            "/-/reload",
            &[("host", "localhost:80"), ("origin", "http://localhost")],
        );
        assert_eq!(g.check(&default_port), Ok(()));
    }

    #[test]
    fn the_token_is_required_except_by_health_checks() {
        let g = guard("127.0.0.1:9901", Some("s3cret"));
        let host = ("host", "127.0.0.1:9901");
        let cases = [
            (None, Err(Refusal::MissingToken)),
            (Some("Bearer s3cret"), Ok(())),
            (Some("bearer s3cret"), Ok(())),
            (Some("Bearer s3cre"), Err(Refusal::WrongToken)),
            (Some("Bearer s3cretx"), Err(Refusal::WrongToken)),
            (Some("Basic s3cret"), Err(Refusal::MissingToken)),
            (Some("Bearers3cret"), Err(Refusal::MissingToken)),
            (Some("Bearer "), Err(Refusal::MissingToken)),
        ];
        for (authorization, expected) in cases {
            let mut headers = vec![host];
            if let Some(a) = authorization {
                headers.push(("authorization", a));
            }
            assert_eq!(
                g.check(&request("/-/rules", &headers)),
                expected,
                "{authorization:?}"
            );
        }
        for path in ["/healthz", "/readyz", "/", "/ui/app.js"] {
            assert_eq!(g.check(&request(path, &[host])), Ok(()), "{path}");
        }
        for path in ["/-/api/routes", "/uix", "/-/rules"] {
            assert_eq!(
                g.check(&request(path, &[host])),
                Err(Refusal::MissingToken),
                "{path}"
            );
        }
    }

    #[test]
    fn refusals_are_403_and_token_refusals_401_with_a_challenge() {
        assert_eq!(
            Refusal::ForeignHost.response().status(),
            StatusCode::FORBIDDEN
        );
        let missing = Refusal::MissingToken.response();
        assert_eq!(missing.status(), StatusCode::UNAUTHORIZED);
        assert!(
            missing.headers()[WWW_AUTHENTICATE]
                .to_str()
                .is_ok_and(|v| v.starts_with("Bearer "))
        );
        let wrong = Refusal::WrongToken.response();
        assert!(
            wrong.headers()[WWW_AUTHENTICATE]
                .to_str()
                .is_ok_and(|v| v.contains("invalid_token"))
        );
    }

    #[test]
    fn token_variables_that_cannot_work_are_start_errors_naming_the_variable() {
        let unset = read_token("ADMIN_T", None).expect_err("unset");
        assert!(matches!(unset, TokenError::Unset { .. }));
        let empty = read_token("ADMIN_T", Some(" \n".into())).expect_err("empty");
        assert!(matches!(empty, TokenError::Empty { .. }));
        let spaced = read_token("ADMIN_T", Some("a b".into())).expect_err("space");
        assert!(matches!(spaced, TokenError::Unsendable { .. }));
        for error in [unset, empty, spaced] {
            let message = error.to_string();
            assert!(message.contains("ADMIN_T"), "{message}");
            assert!(message.contains("admin.token_env"), "{message}");
        }
        let token = read_token("ADMIN_T", Some("abc\n".into())).expect("trimmed");
        assert_eq!(token.0, b"abc");
    }
}
