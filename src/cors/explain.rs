//! Why a request got the answer it got: each rule's verdict, in document order.
//!
//! This walks the rules one by one, the plain way, independently of the compiled indexes that
//! [`Policy::find`](super::Policy::find) uses, so it doubles as the reference the fast path is
//! tested against.

use std::fmt;

use serde_json::{Map, Value, json};

use super::decision::{CorsRequest, Decision, Grant};
use super::header::{RequestedHeaders, RequestedHeadersError};
use super::method::CorsMethod;
use super::policy::{BucketCors, Policy};
use super::rule::Rule;

/// One rule's verdict on a request.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Verdict {
    Matched,
    OriginMismatch,
    MethodNotAllowed,
    HeaderNotAllowed(String),
    /// An earlier rule already won.
    NotReached,
}

impl fmt::Display for Verdict {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Verdict::Matched => f.write_str("matches"),
            Verdict::OriginMismatch => f.write_str("origin does not match"),
            Verdict::MethodNotAllowed => f.write_str("method not allowed"),
            Verdict::HeaderNotAllowed(h) => write!(f, "requested header \"{h}\" not allowed"),
            Verdict::NotReached => f.write_str("not evaluated (an earlier rule matched)"),
        }
    }
}

/// Why no rule could be considered at all, before looking at any of them.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Precondition {
    NoOrigin,
    /// The method (ACRM, or the request's own) is not one S3 rules can allow.
    UnsupportedMethod(String),
    RequestedHeaders(RequestedHeadersError),
}

impl fmt::Display for Precondition {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Precondition::NoOrigin => f.write_str("the request has no Origin header"),
            Precondition::UnsupportedMethod(m) => write!(
                f,
                "method \"{m}\" is not one a CORS rule can allow (GET, PUT, POST, DELETE, HEAD)"
            ),
            Precondition::RequestedHeaders(RequestedHeadersError::TooLarge) => {
                f.write_str("Access-Control-Request-Headers is longer than corsgate accepts")
            }
            Precondition::RequestedHeaders(RequestedHeadersError::NotAToken) => f.write_str(
                "Access-Control-Request-Headers names something that is not a header name",
            ),
        }
    }
}

/// Every rule's verdict on `req`, or why none was looked at.
pub fn verdicts(policy: &Policy, req: &CorsRequest<'_>) -> Result<Vec<Verdict>, Precondition> {
    let origin = req.origin.ok_or(Precondition::NoOrigin)?.as_bytes();
    let method_name = match req.acrm {
        Some(m) => m.as_bytes(),
        None => req.method.as_str().as_bytes(),
    };
    let method = CorsMethod::parse(method_name).ok_or_else(|| {
        Precondition::UnsupportedMethod(String::from_utf8_lossy(method_name).into_owned())
    })?;
    let headers =
        RequestedHeaders::parse(req.acrh.iter()).map_err(Precondition::RequestedHeaders)?;
    let mut matched = false;
    Ok(policy
        .rules()
        .iter()
        .map(|rule| {
            if matched {
                return Verdict::NotReached;
            }
            let verdict = verdict(rule, origin, method, &headers);
            matched = verdict == Verdict::Matched;
            verdict
        })
        .collect())
}

fn verdict(
    rule: &Rule,
    origin: &[u8],
    method: CorsMethod,
    headers: &RequestedHeaders<'_>,
) -> Verdict {
    if !rule.origins.iter().any(|p| p.matches(origin)) {
        Verdict::OriginMismatch
    } else if !rule.methods.contains(&method) {
        Verdict::MethodNotAllowed
    } else if let Some(name) = headers.first_refused(&rule.headers) {
        Verdict::HeaderNotAllowed(String::from_utf8_lossy(name).to_ascii_lowercase())
    } else {
        Verdict::Matched
    }
}

fn headers_of(grant: Option<&Grant<'_>>) -> Vec<(String, String)> {
    grant
        .map(|g| {
            g.headers()
                .map(|(n, v)| {
                    let v = String::from_utf8_lossy(v.as_bytes()).into_owned();
                    (n.as_str().to_string(), v)
                })
                .collect()
        })
        .unwrap_or_default()
}

/// `corsgate explain --json`: the decision's kind, status, winning rule, headers and error.
pub fn to_json(decision: &Decision<'_>) -> String {
    let (kind, status, grant, denial) = match decision {
        Decision::Preflight(Ok(g)) => ("preflight", json!(200), Some(g), None),
        Decision::Preflight(Err(d)) => ("preflight", json!(d.status.as_u16()), None, Some(d)),
        Decision::Actual(g) => ("actual", Value::Null, g.as_ref(), None),
    };
    let headers: Map<String, Value> = headers_of(grant)
        .into_iter()
        .map(|(n, v)| (n, Value::String(v)))
        .collect();
    json!({
        "kind": kind,
        "status": status,
        "matched_rule": grant.map(|g| g.rule.index),
        "headers": headers,
        "error": denial.map(|d| json!({"code": d.code(), "message": d.message()})),
    })
    .to_string()
}

/// `corsgate explain`'s text: each rule's verdict, then the answer, as the panel shows it too.
pub(crate) fn to_text(
    cors: &BucketCors,
    req: &CorsRequest<'_>,
    report: &Result<Vec<Verdict>, Precondition>,
    decision: &Decision<'_>,
    path: &str,
) -> String {
    let mut out = String::new();
    let kind = if req.is_preflight() {
        "preflight, answered by corsgate"
    } else {
        "actual request, forwarded to the origin"
    };
    out += &format!("{} {path} ({kind})\n", req.method);
    match report {
        Err(why) => out += &format!("no rule considered: {why}\n"),
        Ok(verdicts) => {
            let rules = cors.policy().map(Policy::rules).unwrap_or_default();
            for (rule, verdict) in rules.iter().zip(verdicts) {
                out += &format!("  {}: {verdict}\n", rule.rule_ref());
            }
        }
    }
    match decision {
        Decision::Preflight(Ok(grant)) => {
            out += &format!("=> 200 OK ({} matched)\n", grant.rule.rule_ref());
            for (n, v) in headers_of(Some(grant)) {
                out += &format!("{n}: {v}\n");
            }
        }
        Decision::Preflight(Err(denial)) => {
            out += &format!("=> {}\n{}\n", denial.status, denial.to_xml("EXPLAIN"));
        }
        Decision::Actual(Some(grant)) => {
            out += &format!(
                "=> origin's response, with these headers ({} matched):\n",
                grant.rule.rule_ref()
            );
            for (n, v) in headers_of(Some(grant)) {
                out += &format!("{n}: {v}\n");
            }
        }
        Decision::Actual(None) => out += "=> origin's response, with no Access-Control-* headers\n",
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cors::{Resource, policy::MAX_RULES};
    use http::{HeaderMap, HeaderValue, Method};
    use proptest::prelude::*;

    /// Small alphabets so that random origins and headers actually hit random patterns.
    fn origin_pattern() -> impl Strategy<Value = String> {
        prop_oneof![
            Just("*".to_string()),
            "https?://[ab]{0,2}\\.(x|y)",
            "https?://\\*\\.(x|y)",
            "https?://\\*",
            "\\*[ab]?\\.(x|y)",
        ]
    }

    fn rule_xml() -> impl Strategy<Value = String> {
        (
            proptest::collection::vec(origin_pattern(), 1..3),
            proptest::sample::subsequence(vec!["GET", "PUT", "POST", "DELETE", "HEAD"], 1..5),
            proptest::collection::vec(prop_oneof![Just("*".to_string()), "x-[ab]{0,2}\\*?"], 0..3),
        )
            .prop_map(|(origins, methods, headers)| {
                let mut s = String::from("<CORSRule>");
                for o in origins {
                    s += &format!("<AllowedOrigin>{o}</AllowedOrigin>");
                }
                for m in methods {
                    s += &format!("<AllowedMethod>{m}</AllowedMethod>");
                }
                for h in headers {
                    s += &format!("<AllowedHeader>{h}</AllowedHeader>");
                }
                s + "</CORSRule>"
            })
    }

    proptest! {
        #[test]
        fn indexed_matcher_agrees_with_the_plain_walk(
            rules in proptest::collection::vec(rule_xml(), 1..12),
            origin in "https?://[ab]{0,2}\\.(x|y)",
            method in proptest::sample::select(vec!["GET", "PUT", "POST", "DELETE", "HEAD"]),
            acrh in "(X-[ab]{0,3},){0,3}",
        ) {
            prop_assume!(rules.len() <= MAX_RULES);
            let xml = format!("<CORSConfiguration>{}</CORSConfiguration>", rules.concat());
            let policy = Policy::parse(xml.as_bytes()).expect("generated rules are valid");
            let mut headers = HeaderMap::new();
            headers.insert(http::header::ORIGIN, HeaderValue::from_str(&origin).expect("ascii"));
            headers.insert(http::header::ACCESS_CONTROL_REQUEST_METHOD, HeaderValue::from_static(method));
            headers.insert(http::header::ACCESS_CONTROL_REQUEST_HEADERS, HeaderValue::from_str(&acrh).expect("ascii"));
            let options = Method::OPTIONS;
            let req = CorsRequest::new(&options, &headers, Resource::Object);
            let plain = verdicts(&policy, &req).expect("valid request")
                .iter()
                .position(|v| *v == Verdict::Matched)
                .map(|i| i + 1);
            let fast = policy
                .preflight(&req, headers.get(http::header::ORIGIN).expect("set above"))
                .ok()
                .map(|g| g.rule.index);
            prop_assert_eq!(fast, plain);
        }
    }
}
