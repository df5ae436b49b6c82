//! What a request is, and what S3 answers it: a grant of CORS headers or a refusal with S3's
//! status, error code and XML body (docs/cors-semantics.md#preflight-answer, #preflight-errors, #actual-decoration).

use std::borrow::Cow;
use std::fmt::Write as _;

use http::header::{self, HeaderName, ValueIter};
use http::{HeaderMap, HeaderValue, Method, StatusCode};

use super::echo::Echo;
use super::rule::Rule;

/// The `Vary` value S3 sends with every CORS answer.
pub(crate) const CORS_VARY: HeaderValue = HeaderValue::from_static(
    "Origin, Access-Control-Request-Headers, Access-Control-Request-Method",
);

/// What a request names, as S3's error bodies call it (`<ResourceType>`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Resource {
    Bucket,
    Object,
}

impl Resource {
    /// The bucket root is `/` (or empty); anything longer names an object key.
    pub fn of_key(key: &str) -> Resource {
        if key.trim_start_matches('/').is_empty() {
            Resource::Bucket
        } else {
            Resource::Object
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Resource::Bucket => "BUCKET",
            Resource::Object => "OBJECT",
        }
    }
}

/// The parts of an HTTP request that CORS looks at, borrowed from it.
#[derive(Debug)]
pub struct CorsRequest<'a> {
    pub method: &'a Method,
    pub origin: Option<&'a HeaderValue>,
    /// `Access-Control-Request-Method`.
    pub acrm: Option<&'a HeaderValue>,
    /// Every `Access-Control-Request-Headers` line.
    pub acrh: RequestLines<'a>,
    pub resource: Resource,
    /// How a grant echoes the request's values.
    pub echo: Echo,
}

impl<'a> CorsRequest<'a> {
    /// Takes the first `Origin` and ACRM and every ACRH line, as `HeaderMap::get` and
    /// `get_all` would, in one walk over the headers: a lookup hashes its name and probes the
    /// map, which costs more than comparing a request's dozen names three times.
    pub fn new(method: &'a Method, headers: &'a HeaderMap, resource: Resource) -> Self {
        let mut req = CorsRequest {
            method,
            origin: None,
            acrm: None,
            acrh: RequestLines {
                headers,
                first: None,
                more: false,
            },
            resource,
            echo: Echo::Shared,
        };
        for (name, value) in headers {
            if *name == header::ORIGIN {
                req.origin.get_or_insert(value);
            } else if *name == header::ACCESS_CONTROL_REQUEST_METHOD {
                req.acrm.get_or_insert(value);
            } else if *name == header::ACCESS_CONTROL_REQUEST_HEADERS {
                let lines = &mut req.acrh;
                lines.more |= lines.first.is_some();
                lines.first.get_or_insert(value);
            }
        }
        req
    }

    pub(crate) fn is_preflight(&self) -> bool {
        self.method == Method::OPTIONS
    }
}

/// A request's `Access-Control-Request-Headers` lines, in order.
#[derive(Clone, Copy, Debug)]
pub struct RequestLines<'a> {
    headers: &'a HeaderMap,
    first: Option<&'a HeaderValue>,
    /// More than one line: they are looked up again when walked (browsers send one).
    more: bool,
}

impl<'a> RequestLines<'a> {
    pub fn iter(&self) -> LinesIter<'a> {
        LinesIter {
            first: self.first,
            all: self.more.then(|| {
                self.headers
                    .get_all(header::ACCESS_CONTROL_REQUEST_HEADERS)
                    .into_iter()
            }),
        }
    }
}

/// The lines of [`RequestLines::iter`]: the only one, or all of them looked up again.
#[derive(Debug)]
pub struct LinesIter<'a> {
    first: Option<&'a HeaderValue>,
    all: Option<ValueIter<'a, HeaderValue>>,
}

impl<'a> Iterator for LinesIter<'a> {
    type Item = &'a HeaderValue;

    fn next(&mut self) -> Option<&'a HeaderValue> {
        match &mut self.all {
            Some(all) => all.next(),
            None => self.first.take(),
        }
    }
}

/// A rule matched: the CORS headers to send.
#[derive(Clone, Debug)]
pub struct Grant<'p> {
    pub rule: &'p Rule,
    pub allow_origin: HeaderValue,
    /// Only on preflights, and only when ACRH named something.
    pub(crate) allow_headers: Option<HeaderValue>,
}

impl<'p> Grant<'p> {
    /// Every CORS header of the answer, `Vary` included, in S3's order.
    pub fn headers(&self) -> impl Iterator<Item = (HeaderName, HeaderValue)> + '_ {
        // Produced one at a time: building all seven up front (an array of options) costs more
        // than the values themselves.
        (0..7).filter_map(move |i| match i {
            0 => Some((
                header::ACCESS_CONTROL_ALLOW_ORIGIN,
                self.allow_origin.clone(),
            )),
            3 => self
                .allow_headers
                .clone()
                .map(|v| (header::ACCESS_CONTROL_ALLOW_HEADERS, v)),
            _ => rule_header(self.rule, i),
        })
    }

    /// [`Grant::headers`], moving this grant's own values into the answer: an
    /// `Access-Control-Allow-Headers` built for the request is owned by the grant alone, and
    /// its first clone costs an allocation (its `Bytes` turns shared) and a second free.
    pub fn into_headers(self) -> impl Iterator<Item = (HeaderName, HeaderValue)> + 'p {
        let Grant {
            rule,
            allow_origin,
            mut allow_headers,
        } = self;
        let mut allow_origin = Some(allow_origin);
        (0..7).filter_map(move |i| match i {
            0 => allow_origin
                .take()
                .map(|v| (header::ACCESS_CONTROL_ALLOW_ORIGIN, v)),
            3 => allow_headers
                .take()
                .map(|v| (header::ACCESS_CONTROL_ALLOW_HEADERS, v)),
            _ => rule_header(rule, i),
        })
    }
}

/// The `i`th header of a grant in S3's order, for those that are the rule's alone (0, the
/// origin, and 3, the requested headers, are the grant's). Inlined into both iterators: a call
/// per header is a cost every grant would pay.
#[inline(always)]
fn rule_header(rule: &Rule, i: u8) -> Option<(HeaderName, HeaderValue)> {
    match i {
        1 => (!rule.allows_any_origin()).then(|| {
            (
                header::ACCESS_CONTROL_ALLOW_CREDENTIALS,
                HeaderValue::from_static("true"),
            )
        }),
        2 => Some((
            header::ACCESS_CONTROL_ALLOW_METHODS,
            rule.allow_methods_value().clone(),
        )),
        4 => rule
            .expose_headers_value()
            .cloned()
            .map(|v| (header::ACCESS_CONTROL_EXPOSE_HEADERS, v)),
        5 => rule
            .max_age_value()
            .cloned()
            .map(|v| (header::ACCESS_CONTROL_MAX_AGE, v)),
        6 => Some((header::VARY, CORS_VARY)),
        _ => None,
    }
}

/// A preflight S3 refuses: status, error code and message, as S3 words them.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Denial {
    pub status: StatusCode,
    pub reason: DenialReason,
    /// `<Method>` of the 403 bodies: the ACRM value, or `OPTIONS` when there is none.
    pub method: Option<Cow<'static, str>>,
    /// `<ResourceType>` of the 403 bodies.
    pub resource: Option<Resource>,
}

/// Why a preflight is refused, in the order S3 checks (docs/cors-semantics.md#preflight-checks).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum DenialReason {
    MissingOrigin,
    NoSuchBucket,
    CorsNotEnabled,
    /// ACRM missing (`None`) or not one of the five methods.
    InvalidMethod(Option<String>),
    NotAllowed,
}

const NOT_ALLOWED: &str = "CORSResponse: This CORS request is not allowed. This is usually because the evalution of Origin, request method / Access-Control-Request-Method or Access-Control-Request-Headers are not whitelisted by the resource's CORS spec.";

impl Denial {
    pub fn code(&self) -> &'static str {
        match self.reason {
            DenialReason::MissingOrigin | DenialReason::InvalidMethod(_) => "BadRequest",
            _ => "AccessForbidden",
        }
    }

    pub fn message(&self) -> Cow<'static, str> {
        match &self.reason {
            DenialReason::MissingOrigin => {
                "Insufficient information. Origin request header needed.".into()
            }
            DenialReason::NoSuchBucket => "CORSResponse: Bucket not found".into(),
            DenialReason::CorsNotEnabled => {
                "CORSResponse: CORS is not enabled for this bucket.".into()
            }
            DenialReason::InvalidMethod(m) => format!(
                "Invalid Access-Control-Request-Method: {}",
                m.as_deref().unwrap_or("null")
            )
            .into(),
            DenialReason::NotAllowed => NOT_ALLOWED.into(),
        }
    }

    /// S3's XML error body.
    pub fn to_xml(&self, request_id: &str) -> String {
        error_xml(
            self.code(),
            &self.message(),
            self.method.as_deref(),
            self.resource,
            request_id,
        )
    }
}

/// An S3 `<Error>` document.
pub(crate) fn error_xml(
    code: &str,
    message: &str,
    method: Option<&str>,
    resource: Option<Resource>,
    request_id: &str,
) -> String {
    // Only `<`, `>` and `&` are escaped, as S3 does: its messages carry a literal apostrophe.
    use quick_xml::escape::partial_escape as escape;
    let mut out = String::with_capacity(512);
    out.push_str(r#"<?xml version="1.0" encoding="UTF-8"?>"#);
    let _ = write!(
        out,
        "<Error><Code>{}</Code><Message>{}</Message>",
        escape(code),
        escape(message)
    );
    if let Some(method) = method {
        let _ = write!(out, "<Method>{}</Method>", escape(method));
    }
    if let Some(resource) = resource {
        let _ = write!(out, "<ResourceType>{}</ResourceType>", resource.as_str());
    }
    let _ = write!(out, "<RequestId>{}</RequestId></Error>", escape(request_id));
    out
}

/// The answer to one request.
#[derive(Debug)]
pub enum Decision<'p> {
    /// An `OPTIONS` request, answered by corsgate itself.
    Preflight(Result<Grant<'p>, Denial>),
    /// Any other request: forwarded, with these CORS headers added (none when `None`).
    Actual(Option<Grant<'p>>),
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_request_reads_the_first_origin_and_method_and_every_acrh_line_in_order() {
        let mut headers = HeaderMap::new();
        for (name, value) in [
            ("access-control-request-headers", "a"),
            ("origin", "https://one.example"),
            ("accept", "*/*"),
            ("access-control-request-method", "PUT"),
            ("origin", "https://two.example"),
            ("access-control-request-headers", "b, c"),
            ("access-control-request-method", "GET"),
            ("access-control-request-headers", "d"),
        ] {
            headers.append(
                HeaderName::from_static(name),
                HeaderValue::from_static(value),
            );
        }
        let req = CorsRequest::new(&Method::OPTIONS, &headers, Resource::Object);
        assert_eq!(req.origin, headers.get(header::ORIGIN));
        assert_eq!(req.acrm, headers.get(header::ACCESS_CONTROL_REQUEST_METHOD));
        let lines: Vec<&HeaderValue> = req.acrh.iter().collect();
        assert_eq!(lines, ["a", "b, c", "d"]);

        let mut one = HeaderMap::new();
        one.insert(
            header::ACCESS_CONTROL_REQUEST_HEADERS,
            HeaderValue::from_static("x-one"),
        );
        let req = CorsRequest::new(&Method::OPTIONS, &one, Resource::Object);
        assert_eq!(req.acrh.iter().collect::<Vec<_>>(), ["x-one"]);
        assert_eq!((req.origin, req.acrm), (None, None));
        let none = HeaderMap::new();
        let req = CorsRequest::new(&Method::OPTIONS, &none, Resource::Object);
        assert_eq!(req.acrh.iter().count(), 0);
    }

    #[test]
    fn error_body_has_s3_shape() {
        let d = Denial {
            status: StatusCode::FORBIDDEN,
            reason: DenialReason::CorsNotEnabled,
            method: Some("GET".into()),
            resource: Some(Resource::Bucket),
        };
        assert_eq!(
            d.to_xml("R1"),
            "<?xml version=\"1.0\" encoding=\"UTF-8\"?><Error><Code>AccessForbidden</Code><Message>CORSResponse: CORS is not enabled for this bucket.</Message><Method>GET</Method><ResourceType>BUCKET</ResourceType><RequestId>R1</RequestId></Error>"
        );
    }

    #[test]
    fn resource_type_follows_the_key() {
        assert_eq!(Resource::of_key("/"), Resource::Bucket);
        assert_eq!(Resource::of_key(""), Resource::Bucket);
        assert_eq!(Resource::of_key("/a"), Resource::Object);
    }
}
