//! One request, start to finish: route it by host, answer a preflight here or forward anything
//! else and decorate what comes back, turn failures into S3-style answers, log one line.
//!
//! Before forwarding, a route may refuse: a cross-origin write its rules do not grant under
//! `enforce = "strict"`, a method its `sign` does not cover. Neither reaches the origin.

use std::future::{Future, Ready};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Instant;

use http::header::{CONTENT_TYPE, HeaderName, ORIGIN};
use http::uri::Authority;
use http::{HeaderValue, Method, Request, Response, StatusCode, Version};
use http_body_util::BodyExt;
use hyper::body::{Body as _, Incoming};

use super::access_log::{AccessEntry, LoggedBody, OriginTiming, Outcome, PendingLine};
use super::decorate::Decoration;
use super::error::{Fault, GatewayError};
use super::metrics;
use super::proxy::{self, Peer};
use super::route::{RequestHost, Route, RouteMiss, default_port, request_host};
use super::snapshot::Snapshot;
use super::{Body, Gateway, full};
use crate::config::Enforce;
use crate::cors::decision::{Denial, DenialReason, Resource};
use crate::cors::{CorsRequest, Echo};
use crate::metrics::RouteMetrics;
use crate::rules::Resolved;

const SEC_FETCH_SITE: HeaderName = HeaderName::from_static("sec-fetch-site");

/// How a request is answered: here and now, or once the origin has answered.
pub enum Handled {
    Now(Ready<Response<Body>>),
    Later(Pin<Box<dyn Future<Output = Response<Body>> + Send>>),
}

/// For callers that simply await the answer (an embedder, `fuzz/fuzz_targets/request.rs`); the
/// server matches on [`Handled::Now`] instead, to hand hyper the answer without a future.
impl Future for Handled {
    type Output = Response<Body>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Response<Body>> {
        match self.get_mut() {
            Handled::Now(ready) => Pin::new(ready).poll(cx),
            Handled::Later(later) => later.as_mut().poll(cx),
        }
    }
}

/// Serves one request; never fails: every error becomes an answer.
///
/// Preflights and refusals are answered in the call itself: no state machine is built, moved
/// or (on HTTP/2, where every stream's future is spawned) copied into a task for them. Only a
/// request that goes to the origin, or must wait for its bucket's rules, gets a future, boxed
/// once (the round trip's state is kilobytes).
pub fn handle(gateway: &Arc<Gateway>, peer: Peer, req: Request<Incoming>) -> Handled {
    // One clock read for the metrics and the access log both.
    let started = Instant::now();
    let named = match request_host(&req) {
        Ok(named) => named,
        Err(miss) => return bad_host(gateway, miss, &req, peer, started),
    };
    let host = named.as_ref().map(RequestHost::as_str);
    let route = match gateway.routes.find(named.as_ref()) {
        Ok(route) => route,
        Err(miss) => {
            let answer = refuse(gateway, miss.into()).into();
            let unrouted = RouteMetrics::unrouted();
            return now(gateway, answer, &req, host, peer, unrouted, started);
        }
    };
    // docs/cors-semantics.md#preflight: every OPTIONS is a preflight, answered here and never forwarded.
    if req.method() == Method::OPTIONS
        && let Ok(resolved) = route.rules.resolve_now(req.uri().path())
    {
        let answer = preflight(gateway, route, &req, resolved);
        return now(gateway, answer, &req, host, peer, &route.metrics, started);
    }
    // The request outlives this call: its host becomes a value of its own.
    let authority = match named.map(RequestHost::into_authority).transpose() {
        Ok(authority) => authority,
        Err(miss) => return bad_host(gateway, miss, &req, peer, started),
    };
    let gateway = Arc::clone(gateway);
    let route = Arc::clone(route);
    Handled::Later(Box::pin(async move {
        let kind = metrics::kind(req.method());
        let Some(log) = gateway.access_log.clone() else {
            let answered = later(&gateway, &route, peer, authority.as_ref(), req).await;
            let answer = metrics::answer(answered.outcome, &answered.response, kind);
            route.metrics.answered(answer, started.elapsed());
            return answered.response;
        };
        // Cheap clones (refcounted bytes), kept for the log line after `req` has moved on.
        let method = req.method().clone();
        let uri = req.uri().clone();
        let answered = later(&gateway, &route, peer, authority.as_ref(), req).await;
        let answer = metrics::answer(answered.outcome, &answered.response, kind);
        route.metrics.answered(answer, started.elapsed());
        let line = PendingLine {
            log,
            client: peer.addr,
            method,
            host: authority,
            uri,
            status: answered.response.status(),
            outcome: answered.outcome,
            origin: answered.origin,
            request_id: answered.response.headers().get(REQUEST_ID).cloned(),
            started,
        };
        // Logged once the body is sent (or abandoned): its size and the time to its end.
        answered
            .response
            .map(|body| LoggedBody::new(body, line).boxed())
    }))
}

/// A request whose host cannot be routed (userinfo, a `Host` that is no authority, one that
/// disagrees with `:authority`): refused before any route is chosen, logged as `(invalid)`.
fn bad_host(
    gateway: &Gateway,
    miss: RouteMiss,
    req: &Request<Incoming>,
    peer: Peer,
    started: Instant,
) -> Handled {
    let answer = refuse(gateway, miss.into()).into();
    let unrouted = RouteMetrics::unrouted();
    now(
        gateway,
        answer,
        req,
        Some("(invalid)"),
        peer,
        unrouted,
        started,
    )
}

/// `x-amz-request-id`, which every answer carries (corsgate's own, or the origin's).
const REQUEST_ID: HeaderName = HeaderName::from_static("x-amz-request-id");

/// An answer given at once: counted, and logged if the access log is on.
fn now(
    gateway: &Gateway,
    answered: Answered,
    req: &Request<Incoming>,
    host: Option<&str>,
    peer: Peer,
    counted: &RouteMetrics,
    started: Instant,
) -> Handled {
    let response = answered.response;
    let elapsed = started.elapsed();
    let kind = metrics::kind(req.method());
    counted.answered(metrics::answer(answered.outcome, &response, kind), elapsed);
    if let Some(log) = &gateway.access_log {
        log.write(&AccessEntry {
            client: peer.addr,
            method: req.method(),
            host,
            path: req.uri().path(),
            status: response.status(),
            bytes: response.body().size_hint().exact(),
            elapsed,
            outcome: answered.outcome,
            origin: None,
            request_id: response.headers().get(REQUEST_ID),
        });
    }
    Handled::Now(std::future::ready(response))
}

/// A request's answer, with what its log line says of it.
struct Answered {
    response: Response<Body>,
    outcome: Outcome,
    /// Forwarded requests only.
    origin: Option<OriginTiming>,
}

impl From<(Response<Body>, Outcome)> for Answered {
    fn from((response, outcome): (Response<Body>, Outcome)) -> Answered {
        Answered {
            response,
            outcome,
            origin: None,
        }
    }
}

/// docs/cors-semantics.md#preflight: a preflight's answer under the rules `resolved` found.
fn preflight(
    gateway: &Gateway,
    route: &Route,
    req: &Request<Incoming>,
    resolved: Resolved,
) -> Answered {
    let snapshot = match resolved.rules {
        Ok(snapshot) => snapshot,
        Err(unavailable) => return refuse(gateway, unavailable.into()).into(),
    };
    let mut cors = CorsRequest::new(req.method(), req.headers(), resolved.resource);
    // hyper's HTTP/1 request values are slices of the connection's read buffer, which an
    // answer must not hold (see `cors::echo`).
    if req.version() <= Version::HTTP_11 {
        cors.echo = Echo::Copied;
    }
    let (response, outcome) = gateway
        .preflight_cache
        .respond(&snapshot, &cors, gateway.ids.next());
    if let Some(shadow) = gateway.shadow(route) {
        shadow.judge_preflight(
            &snapshot,
            &outcome,
            response.status(),
            response.headers(),
            &cors,
            req.uri().path(),
        );
    }
    (response, outcome).into()
}

/// What cannot be answered at once: a request for the origin, or a preflight on an S3 endpoint
/// route whose bucket's rules may have to be fetched first.
async fn later(
    gateway: &Gateway,
    route: &Route,
    peer: Peer,
    authority: Option<&Authority>,
    req: Request<Incoming>,
) -> Answered {
    // The rules are loaded once and judge the whole request, however a reload races it.
    let host = authority.map_or("", |a| a.as_str());
    let resolved = route.rules.resolve(host, req.uri().path()).await;
    if req.method() == Method::OPTIONS {
        return preflight(gateway, route, &req, resolved);
    }

    // docs/cors-semantics.md#actual-decoration: decide the CORS headers now, so no snapshot is
    // held across the round trip.
    let resource = resolved.resource;
    let cross_origin_write = is_cross_origin_write(route, peer, authority, &req);
    let mut write_granted = false;
    let decoration = match resolved.rules {
        Ok(snapshot) => {
            if cross_origin_write {
                write_granted = grants_own_method(&snapshot, &req, resource);
            }
            let cors = CorsRequest::new(req.method(), req.headers(), resource);
            let decoration = Decoration::for_actual(&snapshot, &cors, route.vary_origin_always);
            if let Some(shadow) = gateway.shadow(route) {
                shadow.judge_actual(&snapshot, decoration.rule, &cors, req.uri().path());
            }
            decoration
        }
        // Refused to spare the origin: the request must not reach it either.
        Err(unavailable) if unavailable.is_slow_down() => {
            return refuse(gateway, unavailable.into()).into();
        }
        // Rules not loaded: nothing can be granted; the request itself still goes through.
        Err(_) => Decoration::default(),
    }
    .with_route_headers(&route.headers, req.headers().get(ORIGIN));
    if cross_origin_write && !write_granted {
        return refuse_cross_origin(gateway, &req, resource, &decoration).into();
    }
    let outcome = match decoration.rule {
        Some(rule) => Outcome::ActualDecorated { rule },
        None => Outcome::ActualUndecorated,
    };
    if let Some(signer) = &route.signer
        && !signer.allows(req.method())
    {
        let err = GatewayError::MethodNotSigned {
            route: route.index,
            method: req.method().clone(),
        };
        return (failed(gateway, route, &err, &decoration), outcome).into();
    }
    // A `PUT`/`DELETE ?cors` is forwarded untouched (the origin checks its signature); if the
    // origin takes it, the bucket's rules are fetched again before the client hears back, so
    // its very next request is judged by them.
    let write_through =
        route
            .rules
            .write_through(req.method(), host, req.uri().path(), req.uri().query());
    let asked = Instant::now();
    let forwarded = proxy::forward(route, req, peer, authority, &gateway.timeouts).await;
    let origin = OriginTiming {
        status: forwarded.as_ref().ok().map(Response::status),
        elapsed: asked.elapsed(),
    };
    let response = match forwarded {
        Ok(mut response) => {
            if let Some(write_through) = write_through.filter(|_| response.status().is_success()) {
                write_through.refresh().await;
            }
            decoration.apply(response.headers_mut());
            response
        }
        Err(err) => {
            if let Some(reason) = metrics::origin_error(&err) {
                route.metrics.origin_error(reason);
            }
            failed(gateway, route, &err, &decoration)
        }
    };
    Answered {
        response,
        outcome,
        origin: Some(origin),
    }
}

/// A request corsgate answers with an error after routing: logged, then decorated like the
/// origin's answer would have been.
fn failed(
    gateway: &Gateway,
    route: &Route,
    err: &GatewayError,
    decoration: &Decoration,
) -> Response<Body> {
    let id = gateway.ids.next();
    match err.fault() {
        Fault::Client => tracing::debug!(route = route.index, request_id = %id, "{err}"),
        Fault::Origin => tracing::warn!(route = route.index, request_id = %id, "{err}"),
    }
    err.response(id, Some(decoration))
}

/// `enforce = "strict"`: whether this is a write from another site, which only a rule granting
/// its origin its method lets through. A browser sends `Origin` with every `POST`, `PUT`,
/// `DELETE` (Fetch's "append a request `Origin` header", for a form or a `no-cors` fetch too),
/// so a write from a page of another origin names it; one without `Origin` is believed
/// cross-site only when `Sec-Fetch-Site` says so. `GET` and `HEAD` are never refused here:
/// reading is what CORS protects on its own, in the browser.
fn is_cross_origin_write(
    route: &Route,
    peer: Peer,
    authority: Option<&Authority>,
    req: &Request<Incoming>,
) -> bool {
    if route.enforce != Enforce::Strict || matches!(*req.method(), Method::GET | Method::HEAD) {
        return false;
    }
    let headers = req.headers();
    let Some(origin) = headers.get(ORIGIN) else {
        return headers
            .get(SEC_FETCH_SITE)
            .is_some_and(|site| site.as_bytes().eq_ignore_ascii_case(b"cross-site"));
    };
    let scheme = proxy::client_scheme(headers, peer, &route.trusted_proxies);
    let port = authority
        .and_then(Authority::port_u16)
        .or_else(|| default_port(scheme));
    !port.is_some_and(|port| route.is_own_origin(origin, scheme, port))
}

/// Whether a rule grants the request's origin its own method. S3 would judge a request carrying
/// `Access-Control-Request-Method` by that header instead: a write must not pass by naming
/// another method than its own.
fn grants_own_method(snapshot: &Snapshot, req: &Request<Incoming>, resource: Resource) -> bool {
    let mut cors = CorsRequest::new(req.method(), req.headers(), resource);
    cors.acrm = None;
    snapshot.cors.actual(&cors).is_some()
}

/// A cross-origin write no rule grants: 403 with the body S3 gives a preflight it refuses, and
/// the origin never hears of it.
fn refuse_cross_origin(
    gateway: &Gateway,
    req: &Request<Incoming>,
    resource: Resource,
    decoration: &Decoration,
) -> (Response<Body>, Outcome) {
    let id = gateway.ids.next();
    tracing::debug!(
        request_id = %id,
        method = %req.method(),
        origin = ?req.headers().get(ORIGIN),
        "cross-origin write refused: no rule grants it (enforce = \"strict\")"
    );
    let denial = Denial {
        status: StatusCode::FORBIDDEN,
        reason: DenialReason::NotAllowed,
        method: Some(req.method().as_str().to_owned().into()),
        resource: Some(resource),
    };
    let mut response = Response::new(full(denial.to_xml(&id.to_string())));
    *response.status_mut() = denial.status;
    let headers = response.headers_mut();
    headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/xml"));
    headers.insert("x-amz-request-id", id.header_value());
    decoration.apply(headers);
    (response, Outcome::ActualRefused)
}

fn refuse(gateway: &Gateway, err: GatewayError) -> (Response<Body>, Outcome) {
    let id = gateway.ids.next();
    match err.fault() {
        Fault::Client => tracing::debug!(request_id = %id, "{err}"),
        Fault::Origin => tracing::warn!(request_id = %id, "{err}"),
    }
    (err.response(id, None), Outcome::Refused)
}
