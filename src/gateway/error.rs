//! What can go wrong while serving one request, whose fault it is, and how it is answered: a
//! status and an S3-style XML error body, so S3 clients and browser code read it like S3's own.
//!
//! Messages sent to clients never name the origin or the cause (that is for the log).

use std::time::Duration;

use http::header::{CONTENT_TYPE, HeaderValue};
use http::{Response, StatusCode};

use super::decorate::Decoration;
use super::request_id::RequestId;
use super::route::RouteMiss;
use super::{Body, full};
use crate::cors::decision::error_xml;
use crate::rules::Unavailable;
use crate::s3::SigningError;

type Cause = Box<dyn std::error::Error + Send + Sync>;

/// A request corsgate answers itself with an error.
#[derive(Debug, thiserror::Error)]
pub enum GatewayError {
    #[error(transparent)]
    Misrouted(#[from] RouteMiss),
    /// A request target without a path (authority form, as `CONNECT` uses): nothing to forward.
    #[error("the request target {0:?} has no path")]
    NoPath(String),
    /// The client sent nothing of its request body for `timeouts.body_read`; the origin request
    /// was aborted.
    #[error("the client sent none of its request body for {timeout:?} (timeouts.body_read)")]
    ClientBodyTimeout { timeout: Duration },
    /// All `limits.origin_connections` connections to the origin stayed busy while the request
    /// waited for one.
    #[error(
        "origin {origin}: all {limit} connections (limits.origin_connections) stayed busy for \
         {waited:?}"
    )]
    OriginBusy {
        origin: String,
        limit: usize,
        waited: Duration,
    },
    #[error("origin {origin} unreachable: {cause}")]
    OriginUnreachable { origin: String, cause: Cause },
    #[error("origin {origin} did not accept a connection within {timeout:?}")]
    OriginConnectTimeout { origin: String, timeout: Duration },
    #[error("origin {origin} did not answer within {timeout:?} of the request being sent")]
    OriginTimeout { origin: String, timeout: Duration },
    /// The connection broke or the origin answered something that is not HTTP.
    #[error("origin {origin} failed: {cause}")]
    OriginFailed { origin: String, cause: Cause },
    /// The request's bucket has no rules loaded yet and fetching them failed: a preflight
    /// answered now would be a guess.
    #[error(transparent)]
    RulesUnavailable(#[from] Unavailable),
    /// A route that signs forwards only its `sign.methods`: corsgate's keys must not write
    /// for a client.
    #[error("{method} is not one of route[{route}].sign.methods: refused")]
    MethodNotSigned { route: usize, method: http::Method },
    /// The origin refused corsgate's own signature: the keys, the region or the service of the
    /// route's `sign` are wrong, and no client can do anything about it.
    #[error("route[{route}]: origin {origin} refused the signed request ({code}): check {keys}")]
    SignatureRefused {
        route: usize,
        origin: String,
        code: String,
        keys: String,
    },
    #[error("route[{route}]: {error}")]
    Signing { route: usize, error: SigningError },
}

/// Whose fault an error is: decides the log level, and whether retrying elsewhere could help.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Fault {
    Client,
    Origin,
}

impl GatewayError {
    pub fn status(&self) -> StatusCode {
        match self {
            GatewayError::Misrouted(RouteMiss::UnknownHost(_)) => StatusCode::MISDIRECTED_REQUEST,
            GatewayError::Misrouted(_) | GatewayError::NoPath(_) => StatusCode::BAD_REQUEST,
            GatewayError::ClientBodyTimeout { .. } => StatusCode::REQUEST_TIMEOUT,
            GatewayError::OriginBusy { .. } => StatusCode::SERVICE_UNAVAILABLE,
            GatewayError::OriginUnreachable { .. } | GatewayError::OriginFailed { .. } => {
                StatusCode::BAD_GATEWAY
            }
            GatewayError::OriginConnectTimeout { .. } | GatewayError::OriginTimeout { .. } => {
                StatusCode::GATEWAY_TIMEOUT
            }
            GatewayError::RulesUnavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
            GatewayError::MethodNotSigned { .. } => StatusCode::FORBIDDEN,
            GatewayError::SignatureRefused { .. } => StatusCode::BAD_GATEWAY,
            GatewayError::Signing { .. } => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    /// The `<Code>` of the error body: S3's own where S3 has one for the case.
    pub fn code(&self) -> &'static str {
        match self {
            GatewayError::Misrouted(RouteMiss::UnknownHost(_)) => "MisdirectedRequest",
            GatewayError::Misrouted(RouteMiss::Userinfo) => "InvalidURI",
            GatewayError::Misrouted(RouteMiss::HostMismatch { .. }) => "InvalidArgument",
            GatewayError::Misrouted(_) | GatewayError::NoPath(_) => "BadRequest",
            GatewayError::ClientBodyTimeout { .. } => "RequestTimeout",
            GatewayError::OriginBusy { .. }
            | GatewayError::RulesUnavailable(Unavailable::SlowDown { .. }) => "SlowDown",
            GatewayError::OriginConnectTimeout { .. } | GatewayError::OriginTimeout { .. } => {
                "GatewayTimeout"
            }
            GatewayError::OriginUnreachable { .. }
            | GatewayError::OriginFailed { .. }
            | GatewayError::SignatureRefused { .. } => "BadGateway",
            // S3's own code for "try again".
            GatewayError::RulesUnavailable(_) => "ServiceUnavailable",
            GatewayError::MethodNotSigned { .. } => "AccessDenied",
            GatewayError::Signing { .. } => "InternalError",
        }
    }

    /// The `<Message>` of the error body: what a client may know.
    pub fn message(&self) -> &'static str {
        match self {
            GatewayError::Misrouted(RouteMiss::UnknownHost(_)) => {
                "This gateway does not serve the requested host."
            }
            GatewayError::Misrouted(RouteMiss::NoHost) => "The request names no host.",
            GatewayError::Misrouted(RouteMiss::BadHost) => "The Host header is not valid.",
            // S3's wording for InvalidURI.
            GatewayError::Misrouted(RouteMiss::Userinfo) => "Couldn't parse the specified URI.",
            GatewayError::Misrouted(RouteMiss::HostMismatch { .. }) => {
                "The Host header names another host than the request's :authority."
            }
            GatewayError::NoPath(_) => "The request target has no path.",
            // S3's wording for RequestTimeout and SlowDown.
            GatewayError::ClientBodyTimeout { .. } => {
                "Your socket connection to the server was not read from or written to within \
                 the timeout period."
            }
            GatewayError::OriginBusy { .. } => "Please reduce your request rate.",
            GatewayError::OriginUnreachable { .. } => "The origin could not be reached.",
            GatewayError::OriginFailed { .. } => "The origin failed to answer.",
            GatewayError::OriginConnectTimeout { .. } => {
                "The origin did not accept a connection in time."
            }
            GatewayError::OriginTimeout { .. } => "The origin did not answer in time.",
            // S3's own words for its `SlowDown`.
            GatewayError::RulesUnavailable(Unavailable::SlowDown { .. }) => {
                "Please reduce your request rate."
            }
            GatewayError::RulesUnavailable(_) => {
                "The bucket's CORS configuration could not be read. Please try again."
            }
            // S3's wording.
            GatewayError::MethodNotSigned { .. } => "Access Denied",
            GatewayError::SignatureRefused { .. } => {
                "The origin refused the gateway's credentials."
            }
            GatewayError::Signing { .. } => "We encountered an internal error. Please try again.",
        }
    }

    pub(crate) fn fault(&self) -> Fault {
        match self {
            // A flood of new bucket names is the clients' doing, and must not flood the log.
            GatewayError::Misrouted(_)
            | GatewayError::NoPath(_)
            | GatewayError::ClientBodyTimeout { .. }
            | GatewayError::MethodNotSigned { .. }
            | GatewayError::RulesUnavailable(Unavailable::SlowDown { .. }) => Fault::Client,
            _ => Fault::Origin,
        }
    }

    /// The answer: status, S3 XML body, `x-amz-request-id`, and (docs/cors-semantics.md#actual-errors: error responses are
    /// decorated too, so browser code can read the real status) the CORS headers the request
    /// earned. Its extensions carry the [`Fault`], for the metrics to count it by.
    pub fn response(&self, id: RequestId, decoration: Option<&Decoration>) -> Response<Body> {
        let body = error_xml(self.code(), self.message(), None, None, &id.to_string());
        let mut response = Response::new(full(body));
        *response.status_mut() = self.status();
        response.extensions_mut().insert(self.fault());
        let headers = response.headers_mut();
        headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/xml"));
        if matches!(self, GatewayError::RulesUnavailable(_)) {
            // The next attempt to load the rules is at most this far away.
            headers.insert(http::header::RETRY_AFTER, HeaderValue::from_static("1"));
        }
        headers.insert("x-amz-request-id", id.header_value());
        if let Some(decoration) = decoration {
            decoration.apply(headers);
        }
        response
    }
}
