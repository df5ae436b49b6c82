//! One request, start to finish: route it by host, answer a preflight here or forward anything
//! else and decorate what comes back, turn failures into S3-style answers, log one line.

use std::future::{Future, Ready};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Instant;

use http::header::HeaderName;
use http::uri::Authority;
use http::{Method, Request, Response};
use http_body_util::BodyExt;
use hyper::body::{Body as _, Incoming};

use super::Body;
use super::Gateway;
use super::access_log::{AccessEntry, LoggedBody, OriginTiming, Outcome, PendingLine};
use super::decorate::Decoration;
use super::error::{Fault, GatewayError};
use super::proxy::{self, Peer};
use super::route::{Route, request_authority};
use crate::cors::CorsRequest;
use crate::rules::Resolved;

/// How a request is answered: here and now, or once the origin has answered.
pub enum Handled {
    Now(Ready<Response<Body>>),
    Later(Pin<Box<dyn Future<Output = Response<Body>> + Send>>),
}

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
    let started = gateway.access_log.is_some().then(Instant::now);
    let authority = match request_authority(&req) {
        Ok(authority) => authority,
        Err(miss) => {
            let answer = refuse(gateway, miss.into()).into();
            return now(gateway, answer, &req, Some("(invalid)"), peer, started);
        }
    };
    let host = authority.as_ref().map(Authority::as_str);
    let route = match gateway.routes.find(authority.as_ref()) {
        Ok(route) => route,
        Err(miss) => {
            let answer = refuse(gateway, miss.into()).into();
            return now(gateway, answer, &req, host, peer, started);
        }
    };
    // Spec §3: every OPTIONS is a preflight, answered here and never forwarded.
    if req.method() == Method::OPTIONS
        && let Ok(resolved) = route.rules.resolve_now(req.uri().path())
    {
        let answer = preflight(gateway, route, &req, resolved);
        return now(gateway, answer, &req, host, peer, started);
    }
    let gateway = Arc::clone(gateway);
    let route = Arc::clone(route);
    Handled::Later(Box::pin(async move {
        let (Some(started), Some(log)) = (started, gateway.access_log.clone()) else {
            return later(&gateway, &route, peer, authority.as_ref(), req)
                .await
                .response;
        };
        // Cheap clones (refcounted bytes), kept for the log line after `req` has moved on.
        let method = req.method().clone();
        let uri = req.uri().clone();
        let answered = later(&gateway, &route, peer, authority.as_ref(), req).await;
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

/// `x-amz-request-id`, which every answer carries (corsgate's own, or the origin's).
const REQUEST_ID: HeaderName = HeaderName::from_static("x-amz-request-id");

/// An answer given at once, logged if the access log is on.
fn now(
    gateway: &Gateway,
    answered: Answered,
    req: &Request<Incoming>,
    host: Option<&str>,
    peer: Peer,
    started: Option<Instant>,
) -> Handled {
    let response = answered.response;
    if let (Some(started), Some(log)) = (started, &gateway.access_log) {
        log.write(&AccessEntry {
            client: peer.addr,
            method: req.method(),
            host,
            path: req.uri().path(),
            status: response.status(),
            bytes: response.body().size_hint().exact(),
            elapsed: started.elapsed(),
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

/// Spec §3: a preflight's answer under the rules `resolved` found.
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
    let cors = CorsRequest::new(req.method(), req.headers(), resolved.resource);
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

    // Spec §4: decide the CORS headers now, so no snapshot is held across the round trip.
    let decoration = match resolved.rules {
        Ok(snapshot) => {
            let cors = CorsRequest::new(req.method(), req.headers(), resolved.resource);
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
    };
    // A `PUT`/`DELETE ?cors` is forwarded untouched (the origin checks its signature); if the
    // origin takes it, the bucket's rules are fetched again before the client hears back, so
    // its very next request is judged by them.
    let write_through =
        route
            .rules
            .write_through(req.method(), host, req.uri().path(), req.uri().query());
    let outcome = match decoration.rule {
        Some(rule) => Outcome::ActualDecorated { rule },
        None => Outcome::ActualUndecorated,
    };
    let asked = Instant::now();
    let forwarded = proxy::forward(route, req, peer, authority, &gateway.timeouts).await;
    let origin = OriginTiming {
        status: forwarded.as_ref().ok().map(Response::status),
        elapsed: asked.elapsed(),
    };
    let response = match forwarded {
        Ok(response) => {
            if let Some(write_through) = write_through.filter(|_| response.status().is_success()) {
                write_through.refresh().await;
            }
            let mut response = response.map(|b| b.boxed());
            decoration.apply(response.headers_mut());
            response
        }
        Err(err) => {
            let id = gateway.ids.next();
            match err.fault() {
                Fault::Client => tracing::debug!(route = route.index, request_id = %id, "{err}"),
                Fault::Origin => tracing::warn!(route = route.index, request_id = %id, "{err}"),
            }
            err.response(id, Some(&decoration))
        }
    };
    Answered {
        response,
        outcome,
        origin: Some(origin),
    }
}

fn refuse(gateway: &Gateway, err: GatewayError) -> (Response<Body>, Outcome) {
    let id = gateway.ids.next();
    match err.fault() {
        Fault::Client => tracing::debug!(request_id = %id, "{err}"),
        Fault::Origin => tracing::warn!(request_id = %id, "{err}"),
    }
    (err.response(id, None), Outcome::Refused)
}
