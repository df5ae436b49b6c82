//! The admin listener: the operator's side door, on its own address (default `127.0.0.1:9901`)
//! so it is never reachable through the gateway's public listeners.
//!
//! - `GET /healthz`: 200 while the process serves.
//! - `GET /readyz`: 200 once every route has rules to judge by (a bucket route whose bucket has
//!   never answered is not ready), 503 otherwise and from the moment the gateway is told to stop
//!   (SIGTERM), while it still serves: load balancers take it out before it stops accepting.
//! - `POST /-/reload`: reads the configuration file again (when the gateway runs from one) and
//!   puts it in force, then reads every rules file and fetches every bucket again, now; 200 when
//!   all loaded, 422 when one failed (its old rules keep serving) or when the configuration has
//!   problems (then nothing changes, and the answer lists them), with the outcome as JSON.
//! - `GET /-/rules`: each route's (and each bucket's) rules in force as JSON: the document,
//!   generation, source, last load time, last load error (`line`/`col`/S3 `code`) and the
//!   document's lint warnings (`warnings`: `code`/`message`/`line`/`col`).
//! - `GET /-/shadow`: each route's candidate rules (`shadow_rules`): their source and state,
//!   disagreement counts, and the last sampled disagreements.
//! - `/`, `/ui/…` and `/-/api/…`: the rules control panel and its JSON API ([`panel`]).
//! - `GET /metrics`: Prometheus metrics (see `crate::metrics`), as OpenMetrics text when the
//!   scraper accepts it, else the classic text format.
//!
//! Every request first passes [`Guard`]: `Host` and `Origin` checks (403), then the bearer token
//! when `admin.token_env` names one (401).
//!
//! It must never answer CORS requests or forward anything: it reads, reloads and (through the
//! panel) replaces rules, and shows metrics.

mod guard;

pub use guard::{Guard, Refusal, TokenError};

use std::sync::Arc;

use http::header::{ALLOW, CONTENT_TYPE, HeaderValue};
use http::{Method, Request, Response, StatusCode};
use hyper::body::Incoming;
use serde_json::{Value, json};

use super::{Body, BodyError, Gateway, Instance, full, panel};

/// The admin listener's answer to `req`; its connections are accepted and served by
/// `server::accept_loop` like every listener's.
pub(crate) async fn respond(
    instance: Arc<Instance>,
    mut req: Request<Incoming>,
    peer: std::net::SocketAddr,
) -> Response<Body> {
    // The panel logs who applied a change.
    req.extensions_mut().insert(panel::Peer(peer));
    answer(&instance, req).await
}

/// Answers one admin request, once the guard let it through.
pub async fn answer<B>(instance: &Instance, req: Request<B>) -> Response<Body>
where
    B: hyper::body::Body<Data = bytes::Bytes>,
    B::Error: Into<BodyError>,
{
    let current = instance.gateway();
    let gateway: &Gateway = &current;
    let stopping = instance.is_draining();
    if let Err(refusal) = gateway.admin.check(&req) {
        tracing::debug!(path = req.uri().path(), "admin request refused: {refusal}");
        return refusal.response();
    }
    if panel::serves(req.uri().path()) {
        return panel::answer(gateway, req).await;
    }
    let method = req.method();
    match req.uri().path() {
        "/healthz" if is_read(method) => text(StatusCode::OK, "ok\n"),
        "/readyz" if is_read(method) => {
            let waiting: Vec<String> = gateway
                .routes
                .all()
                .iter()
                .filter(|r| !r.rules.is_ready())
                .map(|r| format!("route[{}]: rules not loaded", r.index))
                .collect();
            if stopping {
                text(StatusCode::SERVICE_UNAVAILABLE, "shutting down\n")
            } else if waiting.is_empty() {
                text(StatusCode::OK, "ready\n")
            } else {
                text(
                    StatusCode::SERVICE_UNAVAILABLE,
                    &(waiting.join("\n") + "\n"),
                )
            }
        }
        "/-/rules" if is_read(method) => json_response(StatusCode::OK, &rules_view(gateway)),
        "/metrics" if !gateway.counting.wants() => text(
            StatusCode::NOT_FOUND,
            "metrics are off (admin.metrics = false)\n",
        ),
        "/metrics" if is_read(method) => super::metrics::exposition(gateway, &req),
        "/-/shadow" if is_read(method) => json_response(StatusCode::OK, &shadow_view(gateway)),
        "/-/reload" if method == Method::POST => {
            let (ok, outcome) = super::reload::reload_all(instance, "POST /-/reload").await;
            let status = if ok {
                StatusCode::OK
            } else {
                StatusCode::UNPROCESSABLE_ENTITY
            };
            json_response(status, &outcome)
        }
        "/healthz" | "/readyz" | "/-/rules" | "/-/shadow" | "/metrics" => not_allowed("GET, HEAD"),
        "/-/reload" => not_allowed("POST"),
        _ => text(StatusCode::NOT_FOUND, "not found\n"),
    }
}

fn is_read(method: &Method) -> bool {
    method == Method::GET || method == Method::HEAD
}

/// Every route's rules in force.
pub fn rules_view(gateway: &Gateway) -> Value {
    let routes: Vec<Value> = gateway
        .routes
        .all()
        .iter()
        .map(|route| {
            let mut view = route.rules.view();
            view["route"] = json!(route.index);
            view["origin"] = json!(route.origin.to_string());
            view
        })
        .collect();
    json!({ "routes": routes })
}

/// Every route's candidate rules; routes without are left out.
pub(crate) fn shadow_view(gateway: &Gateway) -> Value {
    let routes: Vec<Value> = gateway.shadows.iter().flatten().map(|s| s.view()).collect();
    json!({ "routes": routes })
}

/// Reloads every route's rules; `true` when every source loaded.
pub async fn reload(gateway: &Gateway) -> (bool, Value) {
    let mut ok = true;
    let mut routes = Vec::new();
    for route in gateway.routes.all() {
        let results = reload_results(route.rules.reload("POST /-/reload").await, &mut ok);
        let mut entry = json!({
            "route": route.index,
            "results": results,
            "generation": route.rules.generation(),
        });
        if let Some(shadow) = gateway.shadow(route) {
            let shadow_results = shadow.reload("POST /-/reload").await;
            entry["shadow_results"] = reload_results(shadow_results, &mut ok);
        }
        routes.push(entry);
    }
    (ok, json!({ "routes": routes }))
}

/// One source's reload outcomes (one per bucket on an S3 endpoint route); clears `ok` on an
/// error.
fn reload_results(
    results: Vec<(Option<String>, Result<bool, crate::rules::RulesError>)>,
    ok: &mut bool,
) -> Value {
    let entries: Vec<Value> = results
        .into_iter()
        .map(|(bucket, result)| {
            let mut entry = match result {
                Ok(changed) => json!({ "changed": changed }),
                Err(error) => {
                    *ok = false;
                    json!({ "error": error.to_string() })
                }
            };
            if let Some(bucket) = bucket {
                entry["bucket"] = json!(bucket);
            }
            entry
        })
        .collect();
    Value::Array(entries)
}

fn text(status: StatusCode, body: &str) -> Response<Body> {
    let mut response = Response::new(full(body.to_string()));
    *response.status_mut() = status;
    response.headers_mut().insert(
        CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    response
}

/// A JSON answer, pretty-printed for people reading it with curl; the panel's API answers too.
pub(super) fn json_response(status: StatusCode, value: &Value) -> Response<Body> {
    let body = serde_json::to_vec_pretty(value).unwrap_or_default();
    let mut response = Response::new(full(body));
    *response.status_mut() = status;
    response
        .headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    response
}

fn not_allowed(allow: &'static str) -> Response<Body> {
    let mut response = text(StatusCode::METHOD_NOT_ALLOWED, "method not allowed\n");
    response
        .headers_mut()
        .insert(ALLOW, HeaderValue::from_static(allow));
    response
}
