//! The headers of every allowed preflight, prebuilt per rule when a snapshot is installed
//! (pure data, like a rule's `allow_methods` value): the grant's headers in the core's order,
//! with slots for the values that differ per request (`Access-Control-Allow-Origin` when echoed,
//! `Access-Control-Allow-Headers`, `x-amz-request-id`). The gateway fills the slots per request.

use http::HeaderMap;
use http::header::{
    ACCESS_CONTROL_ALLOW_HEADERS, ACCESS_CONTROL_ALLOW_ORIGIN, HeaderName, HeaderValue,
};

use crate::cors::{BucketCors, Grant, Rule};

/// S3's request ID header, on every answer.
const REQUEST_ID: HeaderName = HeaderName::from_static("x-amz-request-id");
/// What a slot holds until the request's own value replaces it.
const SLOT: HeaderValue = HeaderValue::from_static("");

/// The headers of every allowed preflight under one snapshot, built once per rule.
#[derive(Debug, Default)]
pub struct PreflightTemplates {
    /// By rule (index - 1): without and with `Access-Control-Allow-Headers`.
    rules: Vec<[Template; 2]>,
    /// Wildcard origins the core may scan per evaluation.
    wildcard_origins: usize,
}

impl PreflightTemplates {
    pub fn new(cors: &BucketCors) -> PreflightTemplates {
        let Some(policy) = cors.policy() else {
            return PreflightTemplates::default();
        };
        PreflightTemplates {
            rules: policy
                .rules()
                .iter()
                .map(|rule| [Template::new(rule, false), Template::new(rule, true)])
                .collect(),
            wildcard_origins: policy.wildcard_origins(),
        }
    }

    /// Wildcard origins the core may scan per evaluation: what decides whether caching the
    /// answers pays.
    pub(crate) fn wildcard_origins(&self) -> usize {
        self.wildcard_origins
    }

    /// The complete headers of this grant's answer, its request ID filled in if given (else
    /// left as an empty slot at the end). Takes the grant: its values are moved in, not cloned
    /// (a clone of Allow-Headers would allocate, see [`Grant::into_headers`]).
    pub fn headers(&self, grant: Grant<'_>, id: Option<HeaderValue>) -> HeaderMap {
        let Some(pair) = self.rules.get(grant.rule.index.wrapping_sub(1)) else {
            // Templates come from the same snapshot as the grant; stay total anyway.
            let mut headers: HeaderMap = grant.into_headers().collect();
            headers.insert(REQUEST_ID, id.unwrap_or(SLOT));
            return headers;
        };
        pair[usize::from(grant.allow_headers.is_some())].fill(grant, id)
    }
}

/// One answer's headers, in the core's order, with the positions of the values that differ per
/// request: filled by position in one pass over a copy, with no hashing (three `insert`s cost
/// more than the copy itself).
#[derive(Debug)]
struct Template {
    headers: HeaderMap,
    /// Entry positions of `Access-Control-Allow-Origin` (when echoed rather than `*`), of
    /// `Access-Control-Allow-Headers` and of `x-amz-request-id`.
    allow_origin: Option<usize>,
    allow_headers: Option<usize>,
    request_id: Option<usize>,
}

impl Template {
    /// The grant headers of `rule`, per-request values as empty slots, the request ID last.
    fn new(rule: &Rule, with_allow_headers: bool) -> Template {
        let grant = Grant {
            rule,
            allow_origin: if rule.allows_any_origin() {
                HeaderValue::from_static("*")
            } else {
                SLOT
            },
            allow_headers: with_allow_headers.then_some(SLOT),
        };
        let mut headers: HeaderMap = grant.headers().collect();
        headers.insert(REQUEST_ID, SLOT);
        let position = |name: &HeaderName| headers.iter().position(|(n, _)| n == name);
        Template {
            allow_origin: if rule.allows_any_origin() {
                None
            } else {
                position(&ACCESS_CONTROL_ALLOW_ORIGIN)
            },
            allow_headers: position(&ACCESS_CONTROL_ALLOW_HEADERS),
            request_id: position(&REQUEST_ID),
            headers,
        }
    }

    fn fill(&self, grant: Grant<'_>, id: Option<HeaderValue>) -> HeaderMap {
        let mut headers = self.headers.clone();
        let (mut allow_origin, mut allow_headers, mut id) =
            (Some(grant.allow_origin), grant.allow_headers, id);
        for (i, (_, value)) in headers.iter_mut().enumerate() {
            let slot = Some(i);
            if slot == self.allow_origin {
                if let Some(origin) = allow_origin.take() {
                    *value = origin;
                }
            } else if slot == self.allow_headers {
                if let Some(allow) = allow_headers.take() {
                    *value = allow;
                }
            } else if slot == self.request_id
                && let Some(id) = id.take()
            {
                *value = id;
            }
        }
        headers
    }
}
