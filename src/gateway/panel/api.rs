//! The panel's JSON API (`/-/api/…`; every endpoint is described in `docs/admin-api.md`):
//!
//! - `GET /-/api/routes`: every route with its hosts, origin, rules source and rules in force.
//! - `GET /-/api/routes/{n}/rules[?bucket=NAME]`: one route's (or bucket's) rules to edit, with
//!   the generation an apply must name.
//! - `POST /-/api/validate`: a draft's problems and lints, and the draft in both forms.
//! - `POST /-/api/explain`: one request judged by the draft and by the rules in force.
//! - `POST /-/api/routes/{n}/apply[?bucket=NAME]`: puts a draft in force.
//!
//! Parsing a request into an endpoint, answering it, and rendering errors as status + JSON are
//! kept apart; every judgement of rules is the core's (see [`super::draft`]).

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use http::header::{ALLOW, CONTENT_TYPE, HeaderValue};
use http::{Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, LengthLimitError, Limited};
use serde::Deserialize;
use serde::de::DeserializeOwned;
use serde_json::{Value, json};

use super::Peer;
use super::apply::{self, ApplyError, Target};
use super::draft::{self, Draft, DraftError, Judgement};
use super::verdicts::{self, RequestError, TryRequest};
use crate::gateway::admin::json_response;
use crate::gateway::route::Route;
use crate::gateway::{Body, BodyError, Gateway};
use crate::rules::{LiveRules, RouteRules};

/// Largest request body: the largest document S3 accepts, escaped into JSON, with room to spare.
const MAX_BODY: usize = 256 * 1024;

/// Why an API request gets no answer but an error.
#[derive(Debug, thiserror::Error)]
enum ApiError {
    #[error("no such API endpoint; see docs/admin-api.md")]
    NotFound,
    #[error("method not allowed; this endpoint takes {0}")]
    Method(&'static str),
    #[error("there is no route {0:?}: routes are numbered from 1, in configuration order")]
    NoRoute(String),
    #[error("route {0} has one rules source and no buckets: leave out ?bucket=")]
    NoBuckets(usize),
    #[error("route {0} is an S3 endpoint with rules per bucket: name one with ?bucket=NAME")]
    NeedBucket(usize),
    #[error("{0:?} is not a bucket name")]
    BadBucket(String),
    #[error("route {route} serves bucket {serves}, not {asked}")]
    OtherBucket {
        route: usize,
        serves: String,
        asked: String,
    },
    #[error(
        "route {0} has no rules file or bucket to write to: give it `rules = ...` in the \
         configuration first"
    )]
    NotEditable(usize),
    #[error("the request body must be JSON, sent with Content-Type: application/json")]
    NotJson,
    #[error("the request body is larger than {MAX_BODY} bytes")]
    TooLarge,
    #[error("the request body did not arrive within {0:?}")]
    SlowBody(Duration),
    #[error("cannot read the request body: {0}")]
    Body(String),
    #[error("the request body is not what this endpoint takes: {0}")]
    BadJson(serde_json::Error),
    #[error(transparent)]
    Draft(#[from] DraftError),
    #[error("request: {0}")]
    Request(#[from] RequestError),
    #[error(transparent)]
    Apply(ApplyError),
}

impl ApiError {
    fn status(&self) -> StatusCode {
        match self {
            ApiError::NotFound | ApiError::NoRoute(_) => StatusCode::NOT_FOUND,
            ApiError::Method(_) => StatusCode::METHOD_NOT_ALLOWED,
            ApiError::NotEditable(_) => StatusCode::CONFLICT,
            ApiError::NotJson => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            ApiError::TooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            ApiError::SlowBody(_) => StatusCode::REQUEST_TIMEOUT,
            ApiError::Apply(error) => error.status(),
            _ => StatusCode::BAD_REQUEST,
        }
    }
}

/// An answer: status, JSON body, and the methods allowed when the method was not.
struct Answer {
    status: StatusCode,
    body: Value,
    allow: Option<&'static str>,
}

fn ok(body: Value) -> Answer {
    Answer {
        status: StatusCode::OK,
        body,
        allow: None,
    }
}

fn fail(error: impl Into<ApiError>) -> Answer {
    fail_with(error.into(), json!({}))
}

/// `{"error": message}` and whatever else the client needs to act on it.
fn fail_with(error: ApiError, mut body: Value) -> Answer {
    body["error"] = json!(error.to_string());
    Answer {
        status: error.status(),
        body,
        allow: match error {
            ApiError::Method(allow) => Some(allow),
            _ => None,
        },
    }
}

pub async fn answer<B>(gateway: &Gateway, req: Request<B>) -> Response<Body>
where
    B: hyper::body::Body<Data = bytes::Bytes>,
    B::Error: Into<BodyError>,
{
    let path = req.uri().path().trim_start_matches("/-/api/").to_string();
    let bucket = query_param(req.uri().query(), "bucket");
    let segments: Vec<&str> = path.split('/').collect();
    let method = req.method().clone();
    let read = method == Method::GET || method == Method::HEAD;
    let post = method == Method::POST;
    let answer = match segments.as_slice() {
        ["routes"] if read => ok(routes(gateway)),
        ["routes", n, "rules"] if read => rules(gateway, n, bucket).await,
        ["validate"] if post => match read_json(gateway, req).await {
            Ok(body) => validate(gateway, body).await,
            Err(error) => fail(error),
        },
        ["explain"] if post => match read_json(gateway, req).await {
            Ok(body) => explain(gateway, body).await,
            Err(error) => fail(error),
        },
        ["routes", n, "apply"] if post => {
            let peer = req.extensions().get::<Peer>().map(|p| p.0);
            match read_json(gateway, req).await {
                Ok(body) => apply(gateway, n, bucket, body, peer).await,
                Err(error) => fail(error),
            }
        }
        ["routes"] | ["routes", _, "rules"] => fail(ApiError::Method("GET, HEAD")),
        ["validate"] | ["explain"] | ["routes", _, "apply"] => fail(ApiError::Method("POST")),
        _ => fail(ApiError::NotFound),
    };
    let mut response = json_response(answer.status, &answer.body);
    if let Some(allow) = answer.allow {
        response
            .headers_mut()
            .insert(ALLOW, HeaderValue::from_static(allow));
    }
    response
}

/// The decoded value of `name` in a query string.
fn query_param(query: Option<&str>, name: &str) -> Option<String> {
    query?.split('&').find_map(|pair| {
        let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
        (key == name).then(|| percent_decode(value))
    })
}

fn percent_decode(text: &str) -> String {
    let bytes = text.as_bytes();
    let hex = |b: u8| (b as char).to_digit(16);
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let escaped = match bytes.get(i..i + 3) {
            Some([b'%', h, l]) => hex(*h).zip(hex(*l)),
            _ => None,
        };
        match escaped {
            Some((h, l)) => {
                out.push((h * 16 + l) as u8);
                i += 3;
            }
            None => {
                out.push(if bytes[i] == b'+' { b' ' } else { bytes[i] });
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// The JSON body of a POST: only JSON (a cross-site form cannot send it without a preflight the
/// admin listener never grants), at most [`MAX_BODY`] bytes, within `timeouts.body_read`.
async fn read_json<B, T>(gateway: &Gateway, req: Request<B>) -> Result<T, ApiError>
where
    B: hyper::body::Body<Data = bytes::Bytes>,
    B::Error: Into<BodyError>,
    T: DeserializeOwned,
{
    let is_json = req
        .headers()
        .get(CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .is_some_and(|v| v.trim().eq_ignore_ascii_case("application/json"));
    if !is_json {
        return Err(ApiError::NotJson);
    }
    let limit = gateway.timeouts.body_read;
    let collected = tokio::time::timeout(limit, Limited::new(req.into_body(), MAX_BODY).collect())
        .await
        .map_err(|_| ApiError::SlowBody(limit))?
        .map_err(|error| {
            if error.downcast_ref::<LengthLimitError>().is_some() {
                ApiError::TooLarge
            } else {
                ApiError::Body(error.to_string())
            }
        })?;
    serde_json::from_slice(&collected.to_bytes()).map_err(ApiError::BadJson)
}

/// A route's rules as chosen by the request: the route's own, or one bucket's.
struct Selected<'g> {
    route: &'g Route,
    /// 0-based, for [`crate::gateway::route::Routes::hosts_of`].
    position: usize,
    rules: Source<'g>,
}

enum Source<'g> {
    /// No CORS configuration, and nothing to write one to.
    Fixed(&'g LiveRules),
    /// A file or a bucket.
    Editable {
        target: Target,
        /// Set on an S3 endpoint route.
        endpoint_bucket: Option<String>,
    },
}

impl Selected<'_> {
    fn live(&self) -> &LiveRules {
        match &self.rules {
            Source::Fixed(live) => live,
            Source::Editable { target, .. } => target.live(),
        }
    }

    /// The rules to edit, and everything about them the editor shows.
    fn view(&self, gateway: &Gateway) -> Value {
        let view = self.live().view();
        let document = draft::document_of(&view["document"]);
        let (source, bucket) = match &self.rules {
            Source::Fixed(_) => (json!({ "kind": "none" }), None),
            Source::Editable {
                target: Target::File(file),
                ..
            } => (
                json!({ "kind": "file", "file": file.path().display().to_string() }),
                None,
            ),
            Source::Editable {
                target: Target::Bucket(bucket),
                endpoint_bucket,
            } => {
                let kind = if endpoint_bucket.is_some() {
                    "s3"
                } else {
                    "bucket"
                };
                (
                    json!({ "kind": kind, "bucket": bucket.name() }),
                    Some(bucket.name().to_string()),
                )
            }
        };
        json!({
            "route": self.route.index,
            "bucket": bucket,
            "hosts": gateway.routes.hosts_of(self.position),
            "origin": self.route.origin.to_string(),
            "source": source,
            "editable": matches!(self.rules, Source::Editable { .. }),
            "writes_to": match &self.rules {
                Source::Fixed(_) => Value::Null,
                Source::Editable { target, .. } => json!(target.describe()),
            },
            "state": view["state"],
            // The generation of this very document: `view` reads both under one lock.
            "generation": view["generation"].as_u64().unwrap_or(0),
            "loaded_at": view["loaded_at"],
            "changed_at": view["changed_at"],
            "last_error": view["last_error"],
            "rules": document.as_ref().map_or_else(|| json!([]), draft::rules_of),
            "xml": document.as_ref().map(|d| d.to_xml()),
            "lints": draft::lints_of(&view["document"]),
        })
    }
}

/// The route numbered `n` and, on an S3 endpoint route, the bucket `bucket`.
async fn select<'g>(
    gateway: &'g Gateway,
    n: &str,
    bucket: Option<String>,
) -> Result<Selected<'g>, ApiError> {
    let (position, route) = n
        .parse::<usize>()
        .ok()
        .and_then(|n| {
            gateway
                .routes
                .all()
                .iter()
                .enumerate()
                .find(|(_, r)| r.index == n)
        })
        .ok_or_else(|| ApiError::NoRoute(n.to_string()))?;
    let editable = |target| Source::Editable {
        target,
        endpoint_bucket: None,
    };
    let rules = match (&route.rules, bucket) {
        (RouteRules::Fixed(_) | RouteRules::File(_), Some(_)) => {
            return Err(ApiError::NoBuckets(route.index));
        }
        (RouteRules::Fixed(live), None) => Source::Fixed(live),
        (RouteRules::File(file), None) => editable(Target::File(Arc::clone(file))),
        (RouteRules::Bucket(rules), asked) => match asked {
            Some(asked) if asked != rules.name() => {
                return Err(ApiError::OtherBucket {
                    route: route.index,
                    serves: rules.name().to_string(),
                    asked,
                });
            }
            _ => editable(Target::Bucket(Arc::clone(rules))),
        },
        (RouteRules::Endpoint(_), None) => return Err(ApiError::NeedBucket(route.index)),
        (RouteRules::Endpoint(endpoint), Some(name)) => {
            let rules = endpoint
                .bucket(&name)
                .await
                .ok_or_else(|| ApiError::BadBucket(name.clone()))?;
            Source::Editable {
                target: Target::Bucket(rules),
                endpoint_bucket: Some(name),
            }
        }
    };
    Ok(Selected {
        route,
        position,
        rules,
    })
}

/// Makes sure a bucket opened by name has been asked for its rules once.
async fn loaded(selected: &Selected<'_>) {
    if let Source::Editable {
        target: Target::Bucket(bucket),
        ..
    } = &selected.rules
        && bucket.current().is_err()
    {
        let _ = bucket.refresh("opened in the admin panel").await;
    }
}

/// `GET /-/api/routes`: `GET /-/rules`' view of every route, with hosts, lints and the kind of
/// source.
fn routes(gateway: &Gateway) -> Value {
    let routes: Vec<Value> = gateway
        .routes
        .all()
        .iter()
        .enumerate()
        .map(|(position, route)| {
            let mut view = route.rules.view();
            let kind = match &route.rules {
                RouteRules::Fixed(_) => "none",
                RouteRules::File(_) => "file",
                RouteRules::Bucket(_) => "bucket",
                RouteRules::Endpoint(_) => "s3",
            };
            if view["rules"].is_object() {
                view["rules"]["lints"] = draft::lints_of(&view["rules"]["document"]);
            }
            if let Some(buckets) = view["buckets"].as_array_mut() {
                for bucket in buckets {
                    bucket["rules"]["lints"] = draft::lints_of(&bucket["rules"]["document"]);
                }
            }
            view["route"] = json!(route.index);
            view["kind"] = json!(kind);
            view["hosts"] = json!(gateway.routes.hosts_of(position));
            view["origin"] = json!(route.origin.to_string());
            view["editable"] = json!(kind != "none");
            view
        })
        .collect();
    json!({ "routes": routes })
}

/// `GET /-/api/routes/{n}/rules[?bucket=]`.
async fn rules(gateway: &Gateway, n: &str, bucket: Option<String>) -> Answer {
    let selected = match select(gateway, n, bucket).await {
        Ok(selected) => selected,
        Err(error) => return fail(error),
    };
    loaded(&selected).await;
    ok(selected.view(gateway))
}

#[derive(Deserialize)]
struct ValidateBody {
    draft: Draft,
    #[serde(default)]
    route: Option<usize>,
    #[serde(default)]
    bucket: Option<String>,
}

/// `POST /-/api/validate`: the draft judged, and, given a route, what it changes there.
async fn validate(gateway: &Gateway, body: ValidateBody) -> Answer {
    let bytes = match body.draft.bytes() {
        Ok(bytes) => bytes,
        Err(error) => return fail(error),
    };
    let judgement = Judgement::of(&bytes);
    let mut out = judgement.to_json();
    if let Some(n) = body.route {
        let selected = match select(gateway, &n.to_string(), body.bucket).await {
            Ok(selected) => selected,
            Err(error) => return fail(error),
        };
        loaded(&selected).await;
        out["impact"] = match (
            &judgement.policy,
            &judgement.document,
            selected.live().current(),
        ) {
            (Some(policy), Some(document), Some(current)) => {
                let live_doc = draft::document_of(&selected.live().view()["document"]);
                json!(draft::impact(
                    &current.cors,
                    live_doc.as_ref(),
                    policy,
                    document
                ))
            }
            _ => Value::Null,
        };
    }
    ok(out)
}

#[derive(Deserialize)]
struct ExplainBody {
    #[serde(default)]
    draft: Option<Draft>,
    #[serde(default)]
    route: Option<usize>,
    #[serde(default)]
    bucket: Option<String>,
    request: TryRequest,
}

/// `POST /-/api/explain`: the request judged by the draft and by the rules in force.
async fn explain(gateway: &Gateway, body: ExplainBody) -> Answer {
    let request = match body.request.parse() {
        Ok(request) => request,
        Err(error) => return fail(error),
    };
    let draft = match &body.draft {
        None => Value::Null,
        Some(draft) => {
            let bytes = match draft.bytes() {
                Ok(bytes) => bytes,
                Err(error) => return fail(error),
            };
            let judgement = Judgement::of(&bytes);
            let mut out = judgement.to_json();
            out["report"] = match judgement.policy {
                Some(policy) => {
                    verdicts::report(&crate::cors::BucketCors::Enabled(policy), &request)
                }
                None => Value::Null,
            };
            out
        }
    };
    let live = match body.route {
        None => Value::Null,
        Some(n) => {
            let selected = match select(gateway, &n.to_string(), body.bucket).await {
                Ok(selected) => selected,
                Err(error) => return fail(error),
            };
            loaded(&selected).await;
            let live = selected.live();
            let view = live.view();
            json!({
                "state": view["state"],
                "generation": view["generation"],
                "report": live.current().map(|current| verdicts::report(&current.cors, &request)),
            })
        }
    };
    let change = if draft["report"].is_object() && live["report"].is_object() {
        verdicts::change(&request, &draft["report"], &live["report"])
    } else {
        Value::Null
    };
    ok(json!({ "draft": draft, "live": live, "change": change }))
}

#[derive(Deserialize)]
struct ApplyBody {
    draft: Draft,
    /// The generation the draft was edited from.
    generation: u64,
}

/// `POST /-/api/routes/{n}/apply[?bucket=]`.
async fn apply(
    gateway: &Gateway,
    n: &str,
    bucket: Option<String>,
    body: ApplyBody,
    peer: Option<SocketAddr>,
) -> Answer {
    let selected = match select(gateway, n, bucket).await {
        Ok(selected) => selected,
        Err(error) => return fail(error),
    };
    let Source::Editable { target, .. } = &selected.rules else {
        return fail(ApiError::NotEditable(selected.route.index));
    };
    loaded(&selected).await;
    let label = format!("route[{}]", selected.route.index);
    match apply::apply(target, &label, &body.draft, body.generation, peer).await {
        Ok(applied) => ok(json!({
            "changed": applied.changed,
            "in_force": applied.in_force,
            "previous_generation": body.generation,
            "generation": applied.generation,
            "target": target.describe(),
            "rules": selected.view(gateway),
        })),
        Err(error) => {
            let extra = match &error {
                // The editor shows each problem next to its field.
                ApplyError::Invalid(_) => match body.draft.bytes() {
                    Ok(bytes) => Judgement::of(&bytes).to_json(),
                    Err(_) => json!({}),
                },
                // The editor shows the rules in force now.
                ApplyError::Stale { .. } => json!({ "rules": selected.view(gateway) }),
                _ => json!({}),
            };
            fail_with(ApiError::Apply(error), extra)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn query_parameters_are_decoded() {
        assert_eq!(
            query_param(Some("bucket=a%2Eb"), "bucket").as_deref(),
            Some("a.b")
        );
        assert_eq!(
            query_param(Some("x=1&bucket=photos"), "bucket").as_deref(),
            Some("photos")
        );
        assert_eq!(query_param(Some("bucket"), "bucket").as_deref(), Some(""));
        assert_eq!(
            query_param(Some("bucket=%zz%"), "bucket").as_deref(),
            Some("%zz%")
        );
        assert_eq!(query_param(None, "bucket"), None);
    }

    #[test]
    fn each_error_has_the_status_a_client_can_act_on() {
        assert_eq!(
            ApiError::NotJson.status(),
            StatusCode::UNSUPPORTED_MEDIA_TYPE
        );
        assert_eq!(
            ApiError::NoRoute("9".into()).status(),
            StatusCode::NOT_FOUND
        );
        let stale = ApiError::Apply(ApplyError::Stale {
            edited: 1,
            current: 2,
        });
        assert_eq!(stale.status(), StatusCode::CONFLICT);
        assert!(stale.to_string().contains("generation 2 is in force"));
    }
}
