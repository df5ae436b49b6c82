//! Routing by `Host`: which [`Route`] serves a request, and the route itself (origin, options and
//! current rules).
//!
//! Host names compare case-insensitively (RFC 9110 §4.2.3). A configured host without a port
//! matches that host on any port; with a port, only on that port. `"*"` matches any host and
//! requests that name none. A host no route serves is never forwarded: corsgate is not an open
//! proxy. Nor is a target carrying userinfo, or an HTTP/2 request whose `Host` contradicts its
//! `:authority`: both are refused before routing.

use std::borrow::Cow;
use std::collections::HashMap;
use std::sync::Arc;

use http::header::HOST;
use http::uri::{Authority, Scheme};
use http::{HeaderValue, Request, Version};

use super::decorate::RouteHeaders;
use super::pool::{OriginPool, OriginSlots};
use super::proxy::{self, OriginClient, TrustedProxies};
use crate::config::{Enforce, HostPattern, OriginSigning, OriginUrl, RouteConfig, ServerConfig};
use crate::rules::RouteRules;
use crate::s3::{Credentials, OriginSigner, SigningError};

/// One `[[route]]` at run time.
pub struct Route {
    /// 1-based position in the configuration, for logs.
    pub index: usize,
    pub origin: OriginUrl,
    /// `Host` for the origin, unless `preserve_host`: the origin's authority.
    pub(crate) origin_host: HeaderValue,
    /// How requests reach the origin, at most `limits.origin_connections` connections at once.
    pub link: OriginLink,
    pub preserve_host: bool,
    pub vary_origin_always: bool,
    /// Peers whose forwarding headers are kept (`server.trusted_proxies`).
    pub trusted_proxies: TrustedProxies,
    /// Where the route's rules come from, and the ones in force (see [`RouteRules::resolve`]).
    pub rules: RouteRules,
    /// Signs what is forwarded (`sign`); `None`: the client's request goes as it came.
    pub signer: Option<OriginSigner>,
    pub enforce: Enforce,
    /// The hosts of the route's exact patterns (`"*"` names none), for [`Route::is_own_origin`].
    own_hosts: Vec<(String, Option<u16>)>,
    /// What answers carry besides CORS (`timing_allow_origin`, `cross_origin_resource_policy`).
    pub headers: RouteHeaders,
    /// `index`: appended to `GET`/`HEAD` paths ending in `/`.
    pub(crate) index_file: Option<String>,
    /// Its requests' counters and timings, resolved once here.
    pub metrics: crate::metrics::RouteMetrics,
}

/// A route's way to its origin. Each route has its own, and so its own cap on connections,
/// even when two routes name the same origin.
pub enum OriginLink {
    /// A plain-HTTP origin: the route's own pool of HTTP/1.1 connections.
    Plain(Arc<OriginPool>),
    /// An HTTPS origin: hyper-util's client (TLS, HTTP/2 where the origin offers it).
    Https(Box<OriginClient>),
}

impl Route {
    /// `origin_tls` verifies the origin if it is an `https://` one. Fails when the route signs
    /// and its keys are not in the environment.
    pub fn new(
        index: usize,
        config: &RouteConfig,
        rules: RouteRules,
        server: &ServerConfig,
        origin_tls: &rustls::ClientConfig,
    ) -> Result<Route, SigningError> {
        let signer = config.sign.as_ref().map(origin_signer).transpose()?;
        let timeouts = &server.timeouts;
        let slots = OriginSlots::new(server.limits.origin_connections, timeouts.connect);
        let origin = &config.origin.authority;
        let link = if config.origin.scheme == Scheme::HTTP {
            OriginLink::Plain(Arc::new(OriginPool::new(
                origin.host(),
                origin.port_u16().unwrap_or(80),
                timeouts,
                slots,
            )))
        } else {
            OriginLink::Https(Box::new(proxy::origin_client(
                timeouts,
                origin_tls.clone(),
                slots,
            )))
        };
        let own_hosts = config
            .hosts
            .iter()
            .filter_map(|pattern| match pattern {
                HostPattern::Exact { host, port } => Some((host.clone(), *port)),
                HostPattern::Any => None,
            })
            .collect();
        Ok(Route {
            link,
            index,
            origin: config.origin.clone(),
            origin_host: HeaderValue::from_str(config.origin.authority.as_str())
                .expect("an authority is visible ASCII, so a valid header value"),
            preserve_host: config.preserve_host,
            vary_origin_always: config.vary_origin_always,
            trusted_proxies: TrustedProxies::new(&server.trusted_proxies),
            rules,
            signer,
            enforce: config.enforce,
            own_hosts,
            headers: RouteHeaders {
                timing_allow_origin: config.timing_allow_origin,
                resource_policy: config
                    .cross_origin_resource_policy
                    .map(|p| p.header_value()),
            },
            index_file: config.index.clone(),
            metrics: crate::metrics::RouteMetrics::new(index),
        })
    }

    /// Whether `origin` (an `Origin` header) is one of the route's own origins: the `scheme`
    /// the client reached corsgate with, a host one of the route's exact patterns names, and
    /// that pattern's port or, for a pattern without one, `served_port` (the port the request
    /// came to). HTML's origin is scheme, host and port: a page on another port is another
    /// site, and a `"*"` route has no origin of its own. An opaque origin (`null`) is never own.
    pub(crate) fn is_own_origin(
        &self,
        origin: &HeaderValue,
        scheme: &str,
        served_port: u16,
    ) -> bool {
        let Some((origin_scheme, rest)) =
            origin.to_str().ok().and_then(|text| text.split_once("://"))
        else {
            return false;
        };
        if !origin_scheme.eq_ignore_ascii_case(scheme) {
            return false;
        }
        let Ok(authority) = Authority::try_from(rest) else {
            return false;
        };
        if rest.contains(['@', '/']) {
            return false;
        }
        let port = authority.port_u16().or(default_port(scheme));
        self.own_hosts.iter().any(|(host, pattern_port)| {
            host.eq_ignore_ascii_case(authority.host())
                && port.is_some()
                && port == pattern_port.or(Some(served_port))
        })
    }
}

/// The port a URL of `scheme` means when it names none.
pub(crate) fn default_port(scheme: &str) -> Option<u16> {
    match scheme {
        "http" => Some(80),
        "https" => Some(443),
        _ => None,
    }
}

/// The signer of a route's `sign`, its keys read from the environment now.
fn origin_signer(sign: &OriginSigning) -> Result<OriginSigner, SigningError> {
    let keys = &sign.keys;
    let credentials = Credentials::from_env(
        &keys.access_key_env,
        &keys.secret_key_env,
        &keys.session_token_env,
    )?;
    let mut variables = format!("{} and {}", keys.access_key_env, keys.secret_key_env);
    if credentials.has_session_token() {
        variables.push_str(&format!(" (session token: {})", keys.session_token_env));
    }
    Ok(OriginSigner::new(
        credentials,
        keys.region.clone(),
        sign.service.clone(),
        sign.methods.clone(),
        variables,
    ))
}

impl std::fmt::Debug for Route {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Route")
            .field("index", &self.index)
            .field("origin", &self.origin)
            .finish_non_exhaustive()
    }
}

/// Why no route serves a request.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum RouteMiss {
    /// HTTP/1.1 requires `Host` (RFC 9112 §3.2); only a `"*"` route accepts a request without.
    #[error("the request names no host")]
    NoHost,
    #[error("the Host header is not a valid host")]
    BadHost,
    /// RFC 9110 §4.2.4: `user:password@` in a target is an error, never a credential to pass on
    /// (nor to log: the target is left out of the message).
    #[error("the request target carries userinfo (user:password@)")]
    Userinfo,
    /// RFC 9113 §8.3.1: an HTTP/2 request whose `Host` names another host than `:authority` is
    /// malformed; routing by one and forwarding the other would confuse the origin.
    #[error("the Host header {host:?} names another host than :authority {authority:?}")]
    HostMismatch { authority: String, host: String },
    #[error("no route serves host {0:?}")]
    UnknownHost(String),
}

/// Every route, indexed by host.
#[derive(Debug, Default)]
pub struct Routes {
    routes: Vec<Arc<Route>>,
    /// `host:port` entries.
    with_port: HashMap<(String, u16), usize>,
    /// Port-less entries.
    any_port: HashMap<String, usize>,
    any_host: Option<usize>,
}

impl Routes {
    pub fn new(routes: Vec<(Arc<Route>, Vec<HostPattern>)>) -> Routes {
        let mut table = Routes::default();
        for (i, (route, hosts)) in routes.into_iter().enumerate() {
            for host in hosts {
                // Config validation refuses duplicates; keep the first anyway.
                match host {
                    HostPattern::Any => {
                        table.any_host.get_or_insert(i);
                    }
                    HostPattern::Exact { host, port: None } => {
                        table.any_port.entry(host).or_insert(i);
                    }
                    HostPattern::Exact {
                        host,
                        port: Some(port),
                    } => {
                        table.with_port.entry((host, port)).or_insert(i);
                    }
                }
            }
            table.routes.push(route);
        }
        table
    }

    pub fn all(&self) -> &[Arc<Route>] {
        &self.routes
    }

    /// The hosts the `position`th route (0-based) serves, as configured (`*`, `host`,
    /// `host:port`), sorted.
    pub(crate) fn hosts_of(&self, position: usize) -> Vec<String> {
        let mut hosts: Vec<String> = self
            .any_port
            .iter()
            .filter(|&(_, &i)| i == position)
            .map(|(host, _)| host.clone())
            .chain(
                self.with_port
                    .iter()
                    .filter(|&(_, &i)| i == position)
                    .map(|((host, port), _)| format!("{host}:{port}")),
            )
            .collect();
        hosts.sort();
        if self.any_host == Some(position) {
            hosts.push("*".to_string());
        }
        hosts
    }

    /// The route serving `host` (from the request URI, else its `Host`).
    pub(crate) fn find(&self, host: Option<&RequestHost<'_>>) -> Result<&Arc<Route>, RouteMiss> {
        let Some(named) = host else {
            return self
                .any_host
                .map(|i| &self.routes[i])
                .ok_or(RouteMiss::NoHost);
        };
        // Only a `"*"` route: nothing to look up (the host need not even be split).
        if self.with_port.is_empty()
            && self.any_port.is_empty()
            && let Some(i) = self.any_host
        {
            return Ok(&self.routes[i]);
        }
        let host = named.host();
        let host: Cow<'_, str> = if host.bytes().any(|b| b.is_ascii_uppercase()) {
            Cow::Owned(host.to_ascii_lowercase())
        } else {
            Cow::Borrowed(host)
        };
        let exact = named
            .port_u16()
            .and_then(|port| {
                if self.with_port.is_empty() {
                    None
                } else {
                    self.with_port.get(&(host.to_string(), port))
                }
            })
            .or_else(|| self.any_port.get(host.as_ref()));
        exact
            .or(self.any_host.as_ref())
            .map(|&i| &self.routes[i])
            .ok_or_else(|| RouteMiss::UnknownHost(named.as_str().to_string()))
    }
}

/// The host a request names, borrowed from it where that is enough: routing and the log line
/// need only its text, and copying a `Host` header into an [`Authority`] costs an allocation
/// per request. A request forwarded to its origin turns it into one
/// ([`RequestHost::into_authority`]).
#[derive(Clone, Debug)]
pub(crate) enum RequestHost<'a> {
    /// The request URI's authority (HTTP/2 `:authority`, an HTTP/1.1 absolute-form target).
    Uri(&'a Authority),
    /// A `Host` header that is a name or an IPv4 address, with or without a port (letters,
    /// digits, `-`, `.`, `_`, then `:` and digits): a valid authority without userinfo, whose
    /// host is the text before `host_end`.
    Header { text: &'a str, host_end: usize },
    /// Any other `Host` header (an IP literal, say), parsed.
    Parsed(Authority),
}

impl RequestHost<'_> {
    /// The authority as the request wrote it.
    pub(crate) fn as_str(&self) -> &str {
        match self {
            RequestHost::Uri(authority) => authority.as_str(),
            RequestHost::Header { text, .. } => text,
            RequestHost::Parsed(authority) => authority.as_str(),
        }
    }

    /// As [`Authority::host`].
    pub(crate) fn host(&self) -> &str {
        match self {
            RequestHost::Uri(authority) => authority.host(),
            RequestHost::Header { text, host_end } => &text[..*host_end],
            RequestHost::Parsed(authority) => authority.host(),
        }
    }

    /// As [`Authority::port_u16`]: `None` without a port or with one past `u16`.
    pub(crate) fn port_u16(&self) -> Option<u16> {
        match self {
            RequestHost::Uri(authority) => authority.port_u16(),
            RequestHost::Header { text, host_end } => {
                text.get(host_end + 1..).and_then(|port| port.parse().ok())
            }
            RequestHost::Parsed(authority) => authority.port_u16(),
        }
    }

    /// The host as an [`Authority`] of its own. Fails only if a `Host` header taken for a
    /// plain name is not an authority after all, which [`plain_host_end`] rules out.
    pub(crate) fn into_authority(self) -> Result<Authority, RouteMiss> {
        match self {
            RequestHost::Uri(authority) => Ok(authority.clone()),
            RequestHost::Header { text, .. } => {
                Authority::try_from(text).map_err(|_| RouteMiss::BadHost)
            }
            RequestHost::Parsed(authority) => Ok(authority),
        }
    }
}

/// The authority a request names: its URI's (HTTP/2 `:authority`, HTTP/1.1 absolute form,
/// which RFC 9112 §3.2.2 says wins over `Host`), else its `Host` header.
pub(crate) fn request_authority<B>(req: &Request<B>) -> Result<Option<Authority>, RouteMiss> {
    request_host(req)?
        .map(RequestHost::into_authority)
        .transpose()
}

/// What [`request_authority`] names, borrowed from the request where it can be. Refuses what it
/// refuses.
pub(crate) fn request_host<B>(req: &Request<B>) -> Result<Option<RequestHost<'_>>, RouteMiss> {
    if let Some(authority) = req.uri().authority() {
        if authority.as_str().contains('@') {
            return Err(RouteMiss::Userinfo);
        }
        if req.version() == Version::HTTP_2
            && let Some(host) = req.headers().get(HOST)
            && !same_host(authority, host, req.uri().scheme())
        {
            return Err(RouteMiss::HostMismatch {
                authority: authority.as_str().to_string(),
                host: String::from_utf8_lossy(host.as_bytes()).into_owned(),
            });
        }
        return Ok(Some(RequestHost::Uri(authority)));
    }
    let Some(host) = req.headers().get(HOST) else {
        return Ok(None);
    };
    if let Ok(text) = host.to_str()
        && let Some(host_end) = plain_host_end(text.as_bytes())
    {
        return Ok(Some(RequestHost::Header { text, host_end }));
    }
    let authority = Authority::try_from(host.as_bytes()).map_err(|_| RouteMiss::BadHost)?;
    // No userinfo, and a host before any port. (Looking at the text directly: `host()` would
    // search it again.)
    let text = authority.as_str();
    if text.contains('@') || text.starts_with(':') {
        return Err(RouteMiss::BadHost);
    }
    Ok(Some(RequestHost::Parsed(authority)))
}

/// Where the host ends in a `Host` value made of letters, digits, `-`, `.` and `_`, then
/// optionally `:` and digits: every such value is an authority (all its bytes are URI
/// characters, one colon at most, no `@`, no brackets, no `%`) whose host comes first. `None`
/// for any other value, left to [`Authority`]'s parser.
fn plain_host_end(value: &[u8]) -> Option<usize> {
    let mut port_at = None;
    for (i, &b) in value.iter().enumerate() {
        match b {
            b'0'..=b'9' => {}
            b'a'..=b'z' | b'A'..=b'Z' | b'-' | b'.' | b'_' if port_at.is_none() => {}
            b':' if port_at.is_none() && i > 0 => port_at = Some(i),
            _ => return None,
        }
    }
    if value.is_empty() {
        return None;
    }
    Some(port_at.unwrap_or(value.len()))
}

/// Whether `host` names the same host and port as `authority`: host names compare without
/// case, and a missing port is the scheme's default (`a.test` is `a.test:443` over https).
fn same_host(authority: &Authority, host: &HeaderValue, scheme: Option<&Scheme>) -> bool {
    let Ok(host) = Authority::try_from(host.as_bytes()) else {
        return false;
    };
    let default_port = match scheme.map(Scheme::as_str) {
        Some("https") => Some(443),
        Some("http") => Some(80),
        _ => None,
    };
    !host.as_str().contains('@')
        && host.host().eq_ignore_ascii_case(authority.host())
        && host.port_u16().or(default_port) == authority.port_u16().or(default_port)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::OriginUrl;
    use crate::rules::RulesSource;

    fn table(hosts: &[&[&str]]) -> Routes {
        let origin = OriginUrl::parse("http://127.0.0.1:1").expect("valid");
        Routes::new(
            hosts
                .iter()
                .enumerate()
                .map(|(i, hs)| {
                    let patterns: Vec<HostPattern> = hs
                        .iter()
                        .map(|h| HostPattern::parse(h).expect("valid host"))
                        .collect();
                    let config =
                        RouteConfig::new(patterns.clone(), origin.clone(), RulesSource::None);
                    let rules = RouteRules::build(
                        "route",
                        &RulesSource::None,
                        &origin,
                        &crate::rules::bucket::fetch_client(
                            std::time::Duration::from_secs(1),
                            crate::tls::client_config(crate::tls::OriginRoots::Webpki, None)
                                .expect("built-in roots"),
                        ),
                    )
                    .expect("no rules to read");
                    let tls = crate::tls::client_config(crate::tls::OriginRoots::Webpki, None)
                        .expect("built-in roots");
                    let server = ServerConfig::default();
                    (
                        Arc::new(
                            Route::new(i + 1, &config, rules, &server, &tls)
                                .expect("an unsigned route needs no keys"),
                        ),
                        patterns,
                    )
                })
                .collect(),
        )
    }

    fn find(routes: &Routes, host: &str) -> Result<usize, RouteMiss> {
        let authority: Authority = host.parse().expect("valid authority");
        routes
            .find(Some(&RequestHost::Parsed(authority)))
            .map(|r| r.index)
    }

    #[test]
    fn host_match_ignores_case_and_port_unless_the_route_names_one() {
        let routes = table(&[&["Assets.example.com"], &["api.example.com:8443"]]);
        assert_eq!(find(&routes, "assets.EXAMPLE.com:8080"), Ok(1));
        assert_eq!(find(&routes, "assets.example.com"), Ok(1));
        assert_eq!(find(&routes, "api.example.com:8443"), Ok(2));
        assert!(matches!(
            find(&routes, "api.example.com:8080"),
            Err(RouteMiss::UnknownHost(_))
        ));
    }

    #[test]
    fn each_route_lists_the_hosts_it_serves() {
        let routes = table(&[&["b.example", "a.example:8443"], &["*"]]);
        assert_eq!(routes.hosts_of(0), ["a.example:8443", "b.example"]);
        assert_eq!(routes.hosts_of(1), ["*"]);
        assert!(routes.hosts_of(2).is_empty());
    }

    #[test]
    fn unknown_host_falls_to_the_wildcard_route_only_if_there_is_one() {
        let routes = table(&[&["a.example.com"], &["*"]]);
        assert_eq!(find(&routes, "other.example.com"), Ok(2));
        assert_eq!(routes.find(None).map(|r| r.index), Ok(2));
        let strict = table(&[&["a.example.com"]]);
        assert_eq!(strict.find(None).map(|r| r.index), Err(RouteMiss::NoHost));
    }

    #[test]
    fn a_host_header_without_a_host_or_with_userinfo_is_refused() {
        let authority = |host: &str| {
            let req = Request::builder()
                .header(HOST, host)
                .body(())
                .expect("valid request");
            request_authority(&req).map(|a| a.map(|a| a.as_str().to_string()))
        };
        assert_eq!(
            authority("example.com:8080"),
            Ok(Some("example.com:8080".into()))
        );
        assert_eq!(authority("[::1]:80"), Ok(Some("[::1]:80".into())));
        assert_eq!(authority(":8080"), Err(RouteMiss::BadHost));
        assert_eq!(authority("user@example.com"), Err(RouteMiss::BadHost));
        assert_eq!(authority("exa mple.com"), Err(RouteMiss::BadHost));
    }

    /// What a `Host` header named before hosts were borrowed: every header parsed into an
    /// [`Authority`].
    fn parsed_host(value: &[u8]) -> Result<(String, String, Option<u16>), RouteMiss> {
        let authority = Authority::try_from(value).map_err(|_| RouteMiss::BadHost)?;
        let text = authority.as_str();
        if text.contains('@') || text.starts_with(':') {
            return Err(RouteMiss::BadHost);
        }
        Ok((
            text.to_string(),
            authority.host().to_string(),
            authority.port_u16(),
        ))
    }

    fn borrowed_host(value: &[u8]) -> Result<(String, String, Option<u16>), RouteMiss> {
        let req = Request::builder()
            .header(HOST, value)
            .body(())
            .expect("valid request");
        let host = request_host(&req)?.ok_or(RouteMiss::NoHost)?;
        Ok((
            host.as_str().to_string(),
            host.host().to_string(),
            host.port_u16(),
        ))
    }

    #[test]
    fn a_borrowed_host_header_names_what_its_parsed_authority_names() {
        for value in [
            "example.com",
            "Example.COM:8080",
            "a_b.example:",
            "127.0.0.1:080",
            "a.example:99999",
            "a.example:1:2",
            "[::1]:443",
            "[::1",
            "u@a.example",
            ":80",
            "a.example:8o",
            "a%41.example",
            "-",
        ] {
            assert_eq!(
                borrowed_host(value.as_bytes()),
                parsed_host(value.as_bytes()),
                "{value}"
            );
        }
    }

    proptest::proptest! {
        #[test]
        fn any_host_header_is_named_or_refused_as_its_parsed_authority_is(
            value in "[a-zA-Z0-9._:@%\\[\\]/-]{1,12}"
        ) {
            proptest::prop_assert_eq!(
                borrowed_host(value.as_bytes()),
                parsed_host(value.as_bytes())
            );
        }
    }

    #[test]
    fn a_target_with_userinfo_is_refused() {
        let req = Request::builder()
            .uri("http://user:pass@example.com/k")
            .header(HOST, "example.com")
            .body(())
            .expect("valid request");
        assert_eq!(request_authority(&req), Err(RouteMiss::Userinfo));
    }

    #[test]
    fn an_http2_host_header_must_name_the_authority_host() {
        let authority = |uri: &str, host: Option<&str>| {
            let mut req = Request::builder().version(Version::HTTP_2).uri(uri);
            if let Some(host) = host {
                req = req.header(HOST, host);
            }
            let req = req.body(()).expect("valid request");
            request_authority(&req).map(|a| a.map(|a| a.as_str().to_string()))
        };
        let ok = |a: &str| Ok(Some(a.to_string()));
        assert_eq!(authority("https://a.test/k", None), ok("a.test"));
        assert_eq!(authority("https://a.test/k", Some("A.Test")), ok("a.test"));
        assert_eq!(
            authority("https://a.test/k", Some("a.test:443")),
            ok("a.test")
        );
        assert_eq!(
            authority("http://a.test:8080/k", Some("a.test:8080")),
            ok("a.test:8080")
        );
        for host in ["b.test", "a.test:8443", "u@a.test", ":443", "a b"] {
            assert!(
                matches!(
                    authority("https://a.test/k", Some(host)),
                    Err(RouteMiss::HostMismatch { .. })
                ),
                "{host}"
            );
        }
    }

    #[test]
    fn own_origins_are_the_exact_hosts_with_the_scheme_and_port_served() {
        let routes = table(&[&["App.example", "cdn.example:8443", "[::1]"], &["*"]]);
        let route = &routes.all()[0];
        let own = |origin: &str, scheme: &str, port: u16| {
            route.is_own_origin(&HeaderValue::from_str(origin).expect("value"), scheme, port)
        };
        assert!(own("https://app.example", "https", 443));
        assert!(own("https://APP.example:443", "https", 443));
        assert!(own("http://app.example:8080", "http", 8080));
        assert!(
            own("https://cdn.example:8443", "https", 443),
            "the pattern's port"
        );
        assert!(own("http://[::1]:8080", "http", 8080));
        assert!(!own("http://app.example", "https", 443), "another scheme");
        assert!(
            !own("https://app.example:8443", "https", 443),
            "another port"
        );
        assert!(
            !own("https://cdn.example", "https", 443),
            "not the pattern's port"
        );
        assert!(!own("https://evil.example", "https", 443));
        assert!(!own("https://app.example.evil", "https", 443));
        assert!(!own("https://u@app.example", "https", 443));
        assert!(!own("https://app.example/", "https", 443));
        assert!(!own("null", "https", 443));
        assert!(!own("app.example", "https", 443));
        let any = &routes.all()[1];
        let origin = HeaderValue::from_static("https://anything.example");
        assert!(
            !any.is_own_origin(&origin, "https", 443),
            "\"*\" owns no origin"
        );
    }
}
