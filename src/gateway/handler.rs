//! One request, start to finish: route it by host, answer a preflight here or forward anything
//! else and decorate what comes back, turn failures into S3-style answers, log one line.

use std::sync::Arc;
use std::time::Instant;

use http::uri::Authority;
use http::{Method, Request, Response};
use http_body_util::BodyExt;
use hyper::body::Incoming;

use super::Body;
use super::Gateway;
use super::access_log::{self, AccessEntry, Outcome};
use super::decorate::Decoration;
use super::error::{Fault, GatewayError};
use super::proxy::{self, Peer};
use super::route::{RouteMiss, request_authority};
use crate::cors::CorsRequest;

/// Serves one request; never fails: every error becomes an answer.
pub async fn handle(gateway: Arc<Gateway>, peer: Peer, req: Request<Incoming>) -> Response<Body> {
    let authority = request_authority(&req);
    if !access_log::enabled() {
        return serve(&gateway, peer, &authority, req).await.0;
    }
    let started = Instant::now();
    // Cheap clones (refcounted bytes), kept for the log line after `req` has moved on.
    let method = req.method().clone();
    let uri = req.uri().clone();
    let (response, outcome) = serve(&gateway, peer, &authority, req).await;
    let host = match &authority {
        Ok(Some(a)) => a.as_str(),
        Ok(None) => "-",
        Err(_) => "(invalid)",
    };
    AccessEntry {
        method: &method,
        host,
        path: uri.path(),
        status: response.status(),
        outcome,
        elapsed: started.elapsed(),
    }
    .log();
    response
}

async fn serve(
    gateway: &Gateway,
    peer: Peer,
    authority: &Result<Option<Authority>, RouteMiss>,
    req: Request<Incoming>,
) -> (Response<Body>, Outcome) {
    let authority = match authority {
        Ok(a) => a,
        Err(miss) => return refuse(gateway, GatewayError::from(miss.clone())),
    };
    let route = match gateway.routes.find(authority.as_ref()) {
        Ok(route) => route,
        Err(miss) => return refuse(gateway, GatewayError::from(miss)),
    };
    // The rules are loaded once and judge the whole request, however a reload races it.
    let host = authority.as_ref().map_or("", |a| a.as_str());
    let resolved = route.rules.resolve(host, req.uri().path()).await;

    // Spec §3: every OPTIONS is a preflight, answered here and never forwarded.
    if req.method() == Method::OPTIONS {
        let snapshot = match resolved.rules {
            Ok(snapshot) => snapshot,
            Err(unavailable) => return refuse(gateway, unavailable.into()),
        };
        let cors = CorsRequest::new(req.method(), req.headers(), resolved.resource);
        return gateway
            .preflight_cache
            .respond(&snapshot, &cors, gateway.ids.next());
    }

    // Spec §4: decide the CORS headers now, so no snapshot is held across the round trip.
    let decoration = match resolved.rules {
        Ok(snapshot) => {
            let cors = CorsRequest::new(req.method(), req.headers(), resolved.resource);
            Decoration::for_actual(&snapshot, &cors, route.vary_origin_always)
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
    // Boxed: the round trip's state machine is kilobytes, and inline it would make every
    // request's future that big, preflights included, to be moved on every spawn and call
    // (measured: the h2 per-stream spawn cost tripled).
    let forwarded = Box::pin(proxy::forward(
        &gateway.client,
        route,
        req,
        peer,
        authority.as_ref(),
        &gateway.timeouts,
    ))
    .await;
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
            tracing::warn!(route = route.index, request_id = %id, "{err}");
            err.response(id, Some(&decoration))
        }
    };
    (response, outcome)
}

fn refuse(gateway: &Gateway, err: GatewayError) -> (Response<Body>, Outcome) {
    let id = gateway.ids.next();
    match err.fault() {
        Fault::Client => tracing::debug!(request_id = %id, "{err}"),
        Fault::Origin => tracing::warn!(request_id = %id, "{err}"),
    }
    (err.response(id, None), Outcome::Refused)
}
