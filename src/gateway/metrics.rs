//! The gateway's side of [`crate::metrics`]: what its answers, errors, listeners and
//! certificates count as, and the admin listener's `GET /metrics`.
//!
//! The request path only maps values it already has (an [`Outcome`], the [`Fault`] an error
//! response carries) to a counter it already holds; everything that costs more (reading the
//! preflight cache's size, the rules' generations, the exposition itself) waits for a scrape.

mod certificate;

use http::header::{ACCEPT, CONTENT_TYPE, HeaderValue};
use http::{Method, Request, Response, StatusCode};
use rustls::pki_types::CertificateDer;

use super::access_log::Outcome;
use super::error::{Fault, GatewayError};
use super::server::{Role, Transport};
use super::{Body, Gateway, full, proxy};
use crate::metrics::{self, Answer, Format, Kind, Listener, OriginError};

/// docs/cors-semantics.md#preflight: every `OPTIONS` is a preflight.
pub fn kind(method: &Method) -> Kind {
    if method == Method::OPTIONS {
        Kind::Preflight
    } else {
        Kind::Actual
    }
}

/// What a request's answer counts as. `response` is the answer itself: an error corsgate
/// answered carries its [`Fault`] (see [`GatewayError::response`]), which decides between
/// `refused` (the client's doing) and `error` (the origin's, or ours).
pub fn answer(outcome: Outcome, response: &Response<Body>, kind: Kind) -> Answer {
    match response.extensions().get::<Fault>() {
        Some(Fault::Client) => return Answer::Refused(kind),
        Some(Fault::Origin) => return Answer::Error(kind),
        None => {}
    }
    match outcome {
        Outcome::PreflightAllowed { .. } => Answer::Allowed,
        Outcome::PreflightDenied { .. } => Answer::Denied,
        Outcome::ActualDecorated { .. } => Answer::Decorated,
        Outcome::ActualUndecorated => Answer::Undecorated,
        Outcome::ActualRefused | Outcome::Refused => Answer::Refused(kind),
    }
}

/// Why the origin failed a forwarded request, if it did (a client's slow body, a target
/// without a path, unloadable rules are not the origin's failures).
pub(crate) fn origin_error(err: &GatewayError) -> Option<OriginError> {
    Some(match err {
        GatewayError::OriginUnreachable { .. } if proxy::is_tls_failure(err) => OriginError::Tls,
        GatewayError::OriginUnreachable { .. } => OriginError::Connect,
        GatewayError::OriginConnectTimeout { .. } | GatewayError::OriginTimeout { .. } => {
            OriginError::Timeout
        }
        GatewayError::OriginFailed { .. } => OriginError::Reset,
        // No free origin connection, or the origin refused corsgate's signature.
        GatewayError::OriginBusy { .. } | GatewayError::SignatureRefused { .. } => {
            OriginError::Refused
        }
        GatewayError::MethodNotSigned { .. } | GatewayError::Signing { .. } => return None,
        GatewayError::Misrouted(_)
        | GatewayError::NoPath(_)
        | GatewayError::ClientBodyTimeout { .. }
        | GatewayError::RulesUnavailable(_) => return None,
    })
}

/// The `listener` label of a listener's connections.
pub fn listener(role: &Role, transport: &Transport) -> Listener {
    match (role, transport) {
        (Role::Gateway, Transport::Plain) => Listener::Gateway,
        (Role::Gateway, Transport::Tls(_)) => Listener::Tls,
        (Role::Redirect(_), _) => Listener::Redirect,
        (Role::Admin, _) => Listener::Admin,
        (Role::Demo(_), _) => Listener::Demo,
    }
}

/// Shows the TLS certificates now in use, each listener's in configuration order: each by its
/// first DNS name, or as `tls[N].certs[M]` when it has none.
pub(crate) fn certificates_in_use(
    listeners: impl IntoIterator<Item = (usize, Vec<CertificateDer<'static>>)>,
) {
    let mut shown = Vec::new();
    for (listener, leaves) in listeners {
        for (i, leaf) in leaves.iter().enumerate() {
            match certificate::describe(leaf) {
                Some(described) => shown.push((
                    described
                        .dns_name
                        .unwrap_or_else(|| format!("tls[{listener}].certs[{}]", i + 1)),
                    described.not_after,
                )),
                None => tracing::debug!(
                    "server.tls[{listener}]: certificate {} not understood: no expiry metric",
                    i + 1
                ),
            }
        }
    }
    metrics::certificates_in_use(shown);
}

/// `GET /metrics`: every metric, in the format the scraper's `Accept` prefers (OpenMetrics for
/// Prometheus, the classic text format otherwise). What only a scrape needs is read now.
pub fn exposition<B>(gateway: &Gateway, req: &Request<B>) -> Response<Body> {
    metrics::set_preflight_cache_entries(gateway.preflight_cache.entry_count());
    for route in gateway.routes.all() {
        if let Some(generation) = route.rules.generation() {
            metrics::set_rules_generation(route.index, generation);
        }
    }
    let accept = req.headers().get(ACCEPT).and_then(|v| v.to_str().ok());
    let format = Format::negotiate(accept);
    let mut response = Response::new(full(metrics::render(format)));
    *response.status_mut() = StatusCode::OK;
    response.headers_mut().insert(
        CONTENT_TYPE,
        HeaderValue::from_static(format.content_type()),
    );
    response
}
