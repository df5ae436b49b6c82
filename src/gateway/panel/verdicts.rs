//! "Try a request": what the draft and the rules in force each answer one request, rule by rule,
//! as `corsgate explain` reports it, and what the difference means in one sentence.

use http::{HeaderMap, HeaderName, HeaderValue, Method};
use serde::Deserialize;
use serde_json::{Value, json};

use crate::cors::explain::{Verdict, to_json, to_text, verdicts};
use crate::cors::{BucketCors, CorsRequest, Decision, Resource};

/// A request to judge, as the editor sends it.
#[derive(Clone, Debug, Deserialize)]
pub(crate) struct TryRequest {
    pub method: String,
    #[serde(default = "default_path")]
    pub path: String,
    /// `[name, value]` pairs, in order (a name may repeat).
    #[serde(default)]
    pub headers: Vec<(String, String)>,
}

fn default_path() -> String {
    "/object".to_string()
}

/// Why a request cannot be judged.
#[derive(Debug, thiserror::Error)]
pub(crate) enum RequestError {
    #[error("{0:?} is not an HTTP method")]
    Method(String),
    #[error("{0:?} is not a header name")]
    HeaderName(String),
    #[error("the value of {0} cannot be sent in an HTTP header")]
    HeaderValue(String),
    #[error("the path must start with \"/\"")]
    Path,
}

/// A request, ready to be judged.
pub(crate) struct Parsed {
    method: Method,
    headers: HeaderMap,
    path: String,
}

impl TryRequest {
    pub fn parse(&self) -> Result<Parsed, RequestError> {
        let method = Method::from_bytes(self.method.trim().as_bytes())
            .map_err(|_| RequestError::Method(self.method.clone()))?;
        if !self.path.starts_with('/') {
            return Err(RequestError::Path);
        }
        let mut headers = HeaderMap::new();
        for (name, value) in &self.headers {
            let header = HeaderName::from_bytes(name.trim().as_bytes())
                .map_err(|_| RequestError::HeaderName(name.clone()))?;
            let value = HeaderValue::from_str(value.trim())
                .map_err(|_| RequestError::HeaderValue(header.to_string()))?;
            headers.append(header, value);
        }
        Ok(Parsed {
            method,
            headers,
            path: self.path.clone(),
        })
    }
}

/// Every rule's verdict, the answer (as `corsgate explain --json` gives it) and the report
/// `corsgate explain` prints.
pub fn report(cors: &BucketCors, request: &Parsed) -> Value {
    let req = CorsRequest::new(
        &request.method,
        &request.headers,
        Resource::of_key(&request.path),
    );
    let each = match cors.policy() {
        Some(policy) => verdicts(policy, &req),
        None => Ok(Vec::new()),
    };
    let decision = cors.evaluate(&req);
    let mut out: Value = serde_json::from_str(&to_json(&decision)).unwrap_or_else(|_| json!({}));
    out["allowed"] = json!(match &decision {
        Decision::Preflight(answer) => answer.is_ok(),
        Decision::Actual(grant) => grant.is_some(),
    });
    let rules = cors.policy().map(|p| p.rules()).unwrap_or_default();
    out["verdicts"] = match &each {
        Ok(each) => rules
            .iter()
            .zip(each)
            .map(|(rule, verdict)| {
                json!({
                    "rule": rule.index,
                    "id": rule.id,
                    "verdict": verdict_name(verdict),
                    "message": verdict.to_string(),
                })
            })
            .collect(),
        Err(_) => json!([]),
    };
    out["precondition"] = match &each {
        Err(why) => json!(why.to_string()),
        Ok(_) => Value::Null,
    };
    out["text"] = json!(to_text(cors, &req, &each, &decision, &request.path));
    out
}

fn verdict_name(verdict: &Verdict) -> &'static str {
    match verdict {
        Verdict::Matched => "matched",
        Verdict::OriginMismatch => "origin-mismatch",
        Verdict::MethodNotAllowed => "method-not-allowed",
        Verdict::HeaderNotAllowed(_) => "header-not-allowed",
        Verdict::NotReached => "not-reached",
    }
}

/// What the draft changes for this request: `kind` and a sentence.
pub fn change(request: &Parsed, draft: &Value, live: &Value) -> Value {
    let origin = request
        .headers
        .get(http::header::ORIGIN)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("a request without Origin");
    let method = request
        .headers
        .get(http::header::ACCESS_CONTROL_REQUEST_METHOD)
        .and_then(|v| v.to_str().ok())
        .unwrap_or(request.method.as_str());
    let (before, after) = (live["allowed"] == true, draft["allowed"] == true);
    let (kind, summary) = match (before, after) {
        (true, false) => (
            "newly-denied",
            format!("This change would newly deny {origin} {method}."),
        ),
        (false, true) => (
            "newly-allowed",
            format!("This change would newly allow {origin} {method}."),
        ),
        (true, true) if draft["headers"] != live["headers"] => (
            "different-headers",
            format!("Both allow {origin} {method}, with different headers."),
        ),
        (true, true) => (
            "same",
            format!("The draft allows {origin} {method} as the rules in force do."),
        ),
        (false, false) => (
            "same",
            format!("The draft denies {origin} {method} as the rules in force do."),
        ),
    };
    json!({ "kind": kind, "summary": summary })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cors::Policy;

    fn request(method: &str, headers: &[(&str, &str)]) -> Parsed {
        TryRequest {
            method: method.into(),
            path: "/cat.jpg".into(),
            headers: headers
                .iter()
                .map(|(n, v)| (n.to_string(), v.to_string()))
                .collect(),
        }
        .parse()
        .expect("a valid request")
    }

    fn enabled(xml: &str) -> BucketCors {
        BucketCors::Enabled(Policy::parse(xml.as_bytes()).expect("valid"))
    }

    #[test]
    fn the_report_names_each_rules_verdict_and_the_exact_answer() {
        let cors = enabled(
            "<CORSConfiguration><CORSRule><AllowedOrigin>https://a.example</AllowedOrigin><AllowedMethod>GET</AllowedMethod></CORSRule><CORSRule><AllowedOrigin>https://app.example.com</AllowedOrigin><AllowedMethod>PUT</AllowedMethod></CORSRule></CORSConfiguration>",
        );
        let req = request(
            "OPTIONS",
            &[
                ("Origin", "https://app.example.com"),
                ("Access-Control-Request-Method", "PUT"),
            ],
        );
        let out = report(&cors, &req);
        assert_eq!(out["status"], 200);
        assert_eq!(out["matched_rule"], 2);
        assert_eq!(out["verdicts"][0]["verdict"], "origin-mismatch");
        assert_eq!(out["verdicts"][1]["verdict"], "matched");
        assert_eq!(out["headers"]["access-control-allow-methods"], "PUT");
        assert!(
            out["text"]
                .as_str()
                .is_some_and(|t| t.contains("=> 200 OK (CORSRule #2 matched)"))
        );
    }

    #[test]
    fn without_rules_the_answer_is_s3s_cors_not_enabled() {
        let req = request(
            "OPTIONS",
            &[
                ("Origin", "https://a.example"),
                ("Access-Control-Request-Method", "GET"),
            ],
        );
        let out = report(&BucketCors::NotConfigured, &req);
        assert_eq!(out["status"], 403);
        assert_eq!(out["allowed"], false);
        assert_eq!(out["verdicts"], json!([]));
    }

    #[test]
    fn the_change_is_said_in_one_sentence() {
        let req = request(
            "OPTIONS",
            &[
                ("Origin", "https://app.example.com"),
                ("Access-Control-Request-Method", "PUT"),
            ],
        );
        let allows = json!({ "allowed": true, "headers": {} });
        let denies = json!({ "allowed": false, "headers": {} });
        let said = change(&req, &denies, &allows);
        assert_eq!(said["kind"], "newly-denied");
        assert_eq!(
            said["summary"],
            "This change would newly deny https://app.example.com PUT."
        );
        assert_eq!(change(&req, &allows, &denies)["kind"], "newly-allowed");
        assert_eq!(change(&req, &allows, &allows)["kind"], "same");
    }

    #[test]
    fn bad_requests_say_what_is_wrong() {
        let bad = TryRequest {
            method: "GE T".into(),
            path: "/x".into(),
            headers: Vec::new(),
        };
        assert!(matches!(bad.parse(), Err(RequestError::Method(_))));
        let bad = TryRequest {
            method: "GET".into(),
            path: "/x".into(),
            headers: vec![("Bad Name".into(), "v".into())],
        };
        assert!(matches!(bad.parse(), Err(RequestError::HeaderName(_))));
    }
}
