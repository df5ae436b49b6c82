//! Decorating forwarded responses (docs/cors-semantics.md#actual): remove every `Access-Control-*` header the origin
//! sent (corsgate is the single CORS authority: two layers produce duplicate headers that
//! browsers reject), add the ones the request earned, and merge `Vary` into one de-duplicated
//! value, never overwriting the origin's tokens.
//!
//! The decoration is computed from the request before it is forwarded, so the rules snapshot is
//! not held across the origin round trip; its values are prebuilt `HeaderValue`s (cheap clones).
//!
//! A route may add two headers S3 never sends ([`RouteHeaders`]): `Timing-Allow-Origin` for the
//! origins the rules grant, and `Cross-Origin-Resource-Policy` on every answer. Both replace the
//! origin's own.

use arrayvec::ArrayVec;
use http::header::{Entry, HeaderName, VARY};
use http::{HeaderMap, HeaderValue};

use super::snapshot::Snapshot;
use crate::cors::CorsRequest;

const VARY_ORIGIN: HeaderValue = HeaderValue::from_static("Origin");
const TIMING_ALLOW_ORIGIN: HeaderName = HeaderName::from_static("timing-allow-origin");
const CROSS_ORIGIN_RESOURCE_POLICY: HeaderName =
    HeaderName::from_static("cross-origin-resource-policy");

/// What a route's answers carry besides CORS; nothing by default (S3 sends neither).
#[derive(Clone, Debug, Default)]
pub struct RouteHeaders {
    /// `Timing-Allow-Origin: <origin>` whenever the rules grant the request's origin: without
    /// it a cross-origin page's Resource Timing entries hide every phase of the fetch
    /// (`responseStart` is 0), which is what a page measuring its assets needs.
    pub timing_allow_origin: bool,
    /// `Cross-Origin-Resource-Policy`: what a page under `Cross-Origin-Embedder-Policy:
    /// require-corp` needs to embed a resource fetched without CORS (an `<img>`, a `<video>`).
    pub(crate) resource_policy: Option<HeaderValue>,
}

/// The CORS headers one forwarded request earned.
#[derive(Clone, Debug, Default)]
pub struct Decoration {
    /// The `Access-Control-*` headers of the grant (`Vary` excluded), then the route's
    /// [`RouteHeaders`].
    headers: ArrayVec<(HeaderName, HeaderValue), 7>,
    /// Our `Vary` tokens: all three with a grant, `Origin` alone under `vary_origin_always`.
    vary: Option<HeaderValue>,
    /// The rule that granted, 1-based.
    pub rule: Option<usize>,
    /// The route sends `Timing-Allow-Origin` itself: the origin's is removed, granted or not.
    own_timing: bool,
}

impl Decoration {
    /// docs/cors-semantics.md#actual-decoration for a non-preflight request under `snapshot`.
    pub(crate) fn for_actual(
        snapshot: &Snapshot,
        req: &CorsRequest<'_>,
        vary_origin_always: bool,
    ) -> Decoration {
        let mut decoration = Decoration::default();
        match snapshot.cors.actual(req) {
            Some(grant) => {
                decoration.rule = Some(grant.rule.index);
                for (name, value) in grant.headers() {
                    if name == VARY {
                        decoration.vary = Some(value);
                    } else {
                        // A grant has at most six Access-Control-* headers, and on an actual
                        // response never Allow-Headers; ignore overflow rather than panic.
                        let _ = decoration.headers.try_push((name, value));
                    }
                }
            }
            // [deviation] docs/cors-semantics.md#deviation-vary: without this a cache stores an undecorated copy and serves it
            // to a cross-origin request later.
            None if vary_origin_always && snapshot.has_rules() => {
                decoration.vary = Some(VARY_ORIGIN);
            }
            None => {}
        }
        decoration
    }

    /// Adds the route's own headers: `Timing-Allow-Origin` if this decoration grants `origin`
    /// (and none, not even the origin's, if it does not), `Cross-Origin-Resource-Policy` in any
    /// case.
    pub(crate) fn with_route_headers(
        mut self,
        route: &RouteHeaders,
        origin: Option<&HeaderValue>,
    ) -> Decoration {
        self.own_timing = route.timing_allow_origin;
        if route.timing_allow_origin
            && self.rule.is_some()
            && let Some(origin) = origin
        {
            // At most five grant headers before these two: there is room.
            let _ = self.headers.try_push((TIMING_ALLOW_ORIGIN, origin.clone()));
        }
        if let Some(policy) = &route.resource_policy {
            let _ = self
                .headers
                .try_push((CROSS_ORIGIN_RESOURCE_POLICY, policy.clone()));
        }
        self
    }

    /// Rewrites an origin's (or corsgate's own error) response headers.
    pub fn apply(&self, headers: &mut HeaderMap) {
        strip_access_control(headers);
        if self.own_timing {
            headers.remove(TIMING_ALLOW_ORIGIN);
        }
        for (name, value) in &self.headers {
            headers.insert(name.clone(), value.clone());
        }
        if let Some(vary) = &self.vary {
            merge_vary(headers, vary);
        }
    }
}

/// Removes every `Access-Control-*` header. Allocates only when there are more to remove than
/// an origin sends (S3 answers a request with `Origin` with up to five).
pub(crate) fn strip_access_control(headers: &mut HeaderMap) {
    let mut names: ArrayVec<HeaderName, 8> = ArrayVec::new();
    let mut more: Vec<HeaderName> = Vec::new();
    for name in headers.keys() {
        if name.as_str().starts_with("access-control-")
            && let Err(full) = names.try_push(name.clone())
        {
            more.push(full.element());
        }
    }
    for name in names.into_iter().chain(more) {
        headers.remove(name);
    }
}

/// Merges `ours` into the `Vary` header lines already there, as one line whose tokens are
/// de-duplicated case-insensitively, the existing ones first.
pub(crate) fn merge_vary(headers: &mut HeaderMap, ours: &HeaderValue) {
    // One lookup whether there is a `Vary` or not: most answers have none.
    let mut existing = match headers.entry(VARY) {
        Entry::Vacant(vacant) => {
            vacant.insert(ours.clone());
            return;
        }
        Entry::Occupied(existing) => existing,
    };
    let mut tokens: Vec<&[u8]> = Vec::new();
    for line in existing.iter().chain(std::iter::once(ours)) {
        for token in line.as_bytes().split(|&b| b == b',') {
            let token = token.trim_ascii();
            if !token.is_empty() && !tokens.iter().any(|t| t.eq_ignore_ascii_case(token)) {
                tokens.push(token);
            }
        }
    }
    let merged = tokens.join(&b", "[..]);
    // Every token came from a valid header value, and ", " is valid: this cannot fail, but an
    // origin's bytes are not ours to panic over.
    if let Ok(value) = HeaderValue::from_bytes(&merged) {
        existing.insert(value);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cors::decision::CORS_VARY;

    fn vary_of(lines: &[&str], ours: HeaderValue) -> Vec<String> {
        let mut headers = HeaderMap::new();
        for l in lines {
            headers.append(VARY, HeaderValue::from_str(l).expect("test value"));
        }
        merge_vary(&mut headers, &ours);
        headers
            .get_all(VARY)
            .iter()
            .map(|v| v.to_str().expect("ascii").to_string())
            .collect()
    }

    #[test]
    fn vary_is_merged_into_one_deduplicated_line() {
        assert_eq!(
            vary_of(&["Accept-Encoding, origin", "X-Foo"], CORS_VARY),
            [
                "Accept-Encoding, origin, X-Foo, Access-Control-Request-Headers, Access-Control-Request-Method"
            ]
        );
        assert_eq!(vary_of(&[], VARY_ORIGIN), ["Origin"]);
        assert_eq!(vary_of(&["Origin"], VARY_ORIGIN), ["Origin"]);
        assert_eq!(vary_of(&[" , "], VARY_ORIGIN), ["Origin"]);
    }

    #[test]
    fn upstream_access_control_headers_are_all_removed() {
        let mut headers = HeaderMap::new();
        headers.insert("access-control-allow-origin", HeaderValue::from_static("*"));
        headers.append("access-control-allow-origin", HeaderValue::from_static("x"));
        headers.insert("access-control-x-anything", HeaderValue::from_static("1"));
        headers.insert("etag", HeaderValue::from_static("\"1\""));
        strip_access_control(&mut headers);
        assert_eq!(headers.len(), 1);
    }

    #[test]
    fn more_access_control_headers_than_an_origin_usually_sends_are_all_removed() {
        let mut headers = HeaderMap::new();
        for i in 0..12 {
            let name = format!("access-control-x-{i}");
            headers.insert(
                HeaderName::from_bytes(name.as_bytes()).expect("test name"),
                HeaderValue::from_static("1"),
            );
        }
        headers.insert("etag", HeaderValue::from_static("\"1\""));
        strip_access_control(&mut headers);
        assert_eq!(headers.keys().collect::<Vec<_>>(), ["etag"]);
    }

    #[test]
    fn timing_allow_origin_follows_the_grant_and_the_resource_policy_is_always_set() {
        let route = RouteHeaders {
            timing_allow_origin: true,
            resource_policy: Some(HeaderValue::from_static("cross-origin")),
        };
        let origin = HeaderValue::from_static("https://app.example");
        let granted = Decoration {
            rule: Some(1),
            ..Decoration::default()
        }
        .with_route_headers(&route, Some(&origin));
        let mut headers = HeaderMap::new();
        headers.insert("timing-allow-origin", HeaderValue::from_static("*"));
        headers.insert(
            "cross-origin-resource-policy",
            HeaderValue::from_static("same-origin"),
        );
        granted.apply(&mut headers);
        assert_eq!(headers["timing-allow-origin"], "https://app.example");
        assert_eq!(headers["cross-origin-resource-policy"], "cross-origin");
        assert_eq!(headers.len(), 2, "replaced, not added: {headers:?}");

        let refused = Decoration::default().with_route_headers(&route, Some(&origin));
        let mut headers = HeaderMap::new();
        headers.insert("timing-allow-origin", HeaderValue::from_static("*"));
        refused.apply(&mut headers);
        assert!(
            headers.get("timing-allow-origin").is_none(),
            "the origin's is gone too"
        );
        assert_eq!(headers["cross-origin-resource-policy"], "cross-origin");

        let plain = Decoration {
            rule: Some(1),
            ..Decoration::default()
        }
        .with_route_headers(&RouteHeaders::default(), Some(&origin));
        let mut headers = HeaderMap::new();
        plain.apply(&mut headers);
        assert!(headers.is_empty(), "exact S3 by default: {headers:?}");
    }
}
