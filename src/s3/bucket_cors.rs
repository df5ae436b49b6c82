//! What a `GET /<bucket>?cors` answer means for the bucket's CORS state.

use http::StatusCode;

use super::error_body::S3ErrorBody;
use crate::cors::{BucketCors, ConfigError, Document, Policy};

/// Why a fetched answer gives no new CORS state: the last good rules stay in force.
#[derive(Debug, thiserror::Error)]
pub enum FetchError {
    #[error("the bucket's CORS document is invalid:\n{0}")]
    InvalidDocument(ConfigError),
    #[error("the origin answered {status} {code}: {message}")]
    Origin {
        status: StatusCode,
        code: String,
        message: String,
    },
    #[error("cannot reach the origin: {0}")]
    Unreachable(String),
    #[error("cannot sign the request: {0}")]
    Signing(String),
}

impl FetchError {
    /// Worth retrying soon: the origin or the network may get better by themselves.
    pub(crate) fn is_transient(&self) -> bool {
        match self {
            FetchError::Unreachable(_) => true,
            FetchError::Origin { status, .. } => {
                status.is_server_error() || *status == StatusCode::TOO_MANY_REQUESTS
            }
            FetchError::InvalidDocument(_) | FetchError::Signing(_) => false,
        }
    }
}

/// Interprets a `GetBucketCors` answer: 200 carries the rules, S3's `NoSuchCORSConfiguration`
/// means CORS is off for the bucket (docs/cors-semantics.md#bucket-state), `NoSuchBucket` that there is no bucket
/// (case 2). Anything else is an error that must not change what is in force.
#[cfg(test)]
pub(crate) fn interpret(status: StatusCode, body: &[u8]) -> Result<BucketCors, FetchError> {
    interpret_document(status, body).map(|(cors, _)| cors)
}

/// Like [`interpret`], also returning the document as stored when there is one (to show it, and
/// to tell a changed document from the same one fetched again).
pub(crate) fn interpret_document(
    status: StatusCode,
    body: &[u8],
) -> Result<(BucketCors, Option<Document>), FetchError> {
    if status == StatusCode::OK {
        return Policy::parse_document(body)
            .map(|(document, policy)| (BucketCors::Enabled(policy), Some(document)))
            .map_err(FetchError::InvalidDocument);
    }
    let error = S3ErrorBody::parse(body);
    match (status, error.code.as_str()) {
        (StatusCode::NOT_FOUND, "NoSuchCORSConfiguration") => Ok((BucketCors::NotConfigured, None)),
        (StatusCode::NOT_FOUND, "NoSuchBucket") => Ok((BucketCors::NoSuchBucket, None)),
        _ => Err(FetchError::Origin {
            status,
            code: error.code,
            message: error.message,
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn err(code: &str) -> Vec<u8> {
        format!("<Error><Code>{code}</Code><Message>m</Message></Error>").into_bytes()
    }

    #[test]
    fn answers_map_to_bucket_states() {
        let rules = include_bytes!("../../benches/fixtures/cors.xml");
        assert!(matches!(
            interpret(StatusCode::OK, rules),
            Ok(BucketCors::Enabled(_))
        ));
        assert!(matches!(
            interpret(StatusCode::NOT_FOUND, &err("NoSuchCORSConfiguration")),
            Ok(BucketCors::NotConfigured)
        ));
        assert!(matches!(
            interpret(StatusCode::NOT_FOUND, &err("NoSuchBucket")),
            Ok(BucketCors::NoSuchBucket)
        ));
    }

    #[test]
    fn other_answers_keep_the_rules_in_force() {
        let denied = interpret(StatusCode::FORBIDDEN, &err("AccessDenied")).expect_err("error");
        assert!(!denied.is_transient());
        assert!(denied.to_string().contains("AccessDenied"));
        let busy = interpret(StatusCode::SERVICE_UNAVAILABLE, b"").expect_err("error");
        assert!(busy.is_transient());
        let bad = interpret(StatusCode::OK, b"<CORSConfiguration/>").expect_err("no rules");
        assert!(matches!(bad, FetchError::InvalidDocument(_)));
    }
}
