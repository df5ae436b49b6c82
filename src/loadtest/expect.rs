//! The answer a request must get, computed once per pooled request from corsgate's own evaluation
//! of the rules (docs/cors-semantics.md#preflight, #actual), so that the hot loop only compares.

use http::header::{self, HeaderName};
use http::{HeaderValue, StatusCode};

use crate::cors::Decision;

/// What a correct CORS server answers.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Answer {
    /// An allowed preflight: 200, exactly these `Access-Control-*` headers, and `Vary` listing
    /// exactly Origin, Access-Control-Request-Headers and Access-Control-Request-Method.
    PreflightGrant {
        cors: Vec<(HeaderName, HeaderValue)>,
    },
    /// A refused preflight: this status, this S3 error code in the XML body, and no
    /// `Access-Control-*` header and no `Vary` at all.
    PreflightDenial {
        status: StatusCode,
        code: &'static str,
    },
    /// A forwarded request: whatever status the origin gives, decorated with exactly these
    /// headers (`None`: no `Access-Control-*` header at all). The origin's own `Vary` tokens may
    /// be merged in, and corsgate's cache-safety `Vary: Origin` may appear on an undecorated
    /// response (docs/cors-semantics.md#deviation-vary).
    Actual {
        cors: Option<Vec<(HeaderName, HeaderValue)>>,
    },
}

impl Answer {
    pub fn of(decision: &Decision<'_>) -> Answer {
        match decision {
            Decision::Preflight(Ok(grant)) => Answer::PreflightGrant {
                cors: grant.headers().filter(|(n, _)| n != header::VARY).collect(),
            },
            Decision::Preflight(Err(denial)) => Answer::PreflightDenial {
                status: denial.status,
                code: denial.code(),
            },
            // docs/cors-semantics.md#actual-decoration: never Allow-Headers on an actual response.
            Decision::Actual(grant) => Answer::Actual {
                cors: grant.as_ref().map(|g| {
                    g.headers()
                        .filter(|(n, _)| {
                            n != header::VARY && n != header::ACCESS_CONTROL_ALLOW_HEADERS
                        })
                        .collect()
                }),
            },
        }
    }

    /// The `Access-Control-*` headers the answer must carry, and no others.
    pub fn cors_headers(&self) -> &[(HeaderName, HeaderValue)] {
        match self {
            Answer::PreflightGrant { cors } | Answer::Actual { cors: Some(cors) } => cors,
            _ => &[],
        }
    }
}

#[cfg(test)]
mod tests {
    use http::{HeaderMap, Method};

    use super::*;
    use crate::cors::{BucketCors, CorsRequest, Policy, Resource};

    const RULES: &str = r#"<CORSConfiguration><CORSRule>
        <AllowedOrigin>https://*.example.com</AllowedOrigin>
        <AllowedMethod>GET</AllowedMethod><AllowedMethod>PUT</AllowedMethod>
        <AllowedHeader>*</AllowedHeader><ExposeHeader>ETag</ExposeHeader>
        </CORSRule></CORSConfiguration>"#;

    fn answer(method: Method, headers: &[(&str, &str)]) -> Answer {
        let cors = BucketCors::Enabled(Policy::parse(RULES.as_bytes()).unwrap());
        let mut map = HeaderMap::new();
        for (n, v) in headers {
            map.append(
                HeaderName::from_bytes(n.as_bytes()).unwrap(),
                HeaderValue::from_str(v).unwrap(),
            );
        }
        Answer::of(&cors.evaluate(&CorsRequest::new(&method, &map, Resource::Object)))
    }

    #[test]
    fn allowed_preflight_expects_the_grant_without_vary() {
        let a = answer(
            Method::OPTIONS,
            &[
                ("origin", "https://a.example.com"),
                ("access-control-request-method", "PUT"),
                ("access-control-request-headers", "x-b,x-a"),
            ],
        );
        let Answer::PreflightGrant { cors } = a else {
            panic!("{a:?}")
        };
        let names: Vec<&str> = cors.iter().map(|(n, _)| n.as_str()).collect();
        assert_eq!(
            names,
            [
                "access-control-allow-origin",
                "access-control-allow-credentials",
                "access-control-allow-methods",
                "access-control-allow-headers",
                "access-control-expose-headers",
            ]
        );
        assert_eq!(cors[3].1, "x-b, x-a");
    }

    #[test]
    fn refused_preflight_expects_status_and_code() {
        let a = answer(
            Method::OPTIONS,
            &[
                ("origin", "https://evil.test"),
                ("access-control-request-method", "PUT"),
            ],
        );
        assert_eq!(
            a,
            Answer::PreflightDenial {
                status: StatusCode::FORBIDDEN,
                code: "AccessForbidden"
            }
        );
    }

    #[test]
    fn actual_request_never_expects_allow_headers() {
        let a = answer(
            Method::GET,
            &[
                ("origin", "https://a.example.com"),
                ("access-control-request-headers", "x-a"),
            ],
        );
        assert!(
            a.cors_headers()
                .iter()
                .all(|(n, _)| n != header::ACCESS_CONTROL_ALLOW_HEADERS)
        );
        assert_eq!(a.cors_headers().len(), 4);
        let none = answer(Method::GET, &[("origin", "https://evil.test")]);
        assert_eq!(none, Answer::Actual { cors: None });
    }
}
