//! Comparing a response with the [`Answer`] it must be: status, every `Access-Control-*` header
//! byte for byte, `Vary` tokens, and the S3 error code of refused preflights.
//!
//! Runs on every response of a load test, so it allocates nothing unless something is wrong.

use std::fmt;

use http::header::HeaderName;
use http::{HeaderMap, StatusCode};

use super::expect::Answer;

/// One way a response differs from the expected one. A response may have several.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Mismatch {
    /// Wrong status (for forwarded requests: a 5xx, since the origin's status is its own).
    Status,
    /// This `Access-Control-*` header is missing, extra, repeated or has another value.
    Header(HeaderName),
    /// `Vary` lacks a token it needs, or has one it must not.
    Vary,
    /// A refused preflight's body does not carry S3's error code.
    Body,
}

impl Mismatch {
    /// Sort key: status first, then headers by name, then Vary and body, as reports list them.
    fn order(&self) -> (u8, &str) {
        match self {
            Mismatch::Status => (0, ""),
            Mismatch::Header(name) => (1, name.as_str()),
            Mismatch::Vary => (2, ""),
            Mismatch::Body => (3, ""),
        }
    }
}

impl Ord for Mismatch {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        self.order().cmp(&other.order())
    }
}

impl PartialOrd for Mismatch {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

impl fmt::Display for Mismatch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Mismatch::Status => f.write_str("status"),
            Mismatch::Header(name) => write!(f, "header:{name}"),
            Mismatch::Vary => f.write_str("vary"),
            Mismatch::Body => f.write_str("body:code"),
        }
    }
}

/// How strict the comparison is.
#[derive(Clone, Copy, Debug, Default)]
pub struct Checker {
    /// Accept 204 where S3 answers 200 (nginx configurations usually answer preflights 204; the
    /// browser accepts any 2xx). Everything else stays exact.
    pub lenient_status: bool,
}

/// The `Vary` tokens CORS cares about, counted case-insensitively.
#[derive(Default)]
struct VaryTokens {
    origin: u32,
    acrh: u32,
    acrm: u32,
    other: u32,
    lines: u32,
}

impl VaryTokens {
    fn add_line(&mut self, line: &[u8]) {
        self.lines += 1;
        for token in line.split(|&b| b == b',') {
            let token = token.trim_ascii();
            if token.is_empty() {
                continue;
            }
            let slot = if token.eq_ignore_ascii_case(b"origin") {
                &mut self.origin
            } else if token.eq_ignore_ascii_case(b"access-control-request-headers") {
                &mut self.acrh
            } else if token.eq_ignore_ascii_case(b"access-control-request-method") {
                &mut self.acrm
            } else {
                &mut self.other
            };
            *slot += 1;
        }
    }

    fn has_all_three_once(&self) -> bool {
        self.origin == 1 && self.acrh == 1 && self.acrm == 1
    }
}

/// Most `Access-Control-*` headers an answer can expect: the bit masks below have one bit each.
const MAX_EXPECTED: usize = 64;

impl Checker {
    /// Appends to `out` every way the response differs from `answer`; nothing when it is right.
    pub fn check(
        &self,
        answer: &Answer,
        status: StatusCode,
        headers: &HeaderMap,
        body: &[u8],
        out: &mut Vec<Mismatch>,
    ) {
        let lines = headers
            .iter()
            .map(|(n, v)| (n.as_str().as_bytes(), v.as_bytes()));
        self.check_lines(answer, status.as_u16(), lines, body, out);
    }

    /// [`Checker::check`] over header lines as they came off the wire, names in any case: one
    /// pass over the lines, no allocation unless something is wrong.
    pub fn check_lines<'h>(
        &self,
        answer: &Answer,
        status: u16,
        lines: impl Iterator<Item = (&'h [u8], &'h [u8])>,
        body: &[u8],
        out: &mut Vec<Mismatch>,
    ) {
        let status_ok = match answer {
            Answer::PreflightGrant { .. } => {
                status == StatusCode::OK.as_u16()
                    || (self.lenient_status && status == StatusCode::NO_CONTENT.as_u16())
            }
            Answer::PreflightDenial { status: want, .. } => status == want.as_u16(),
            // The origin decides the status of a forwarded request; only a server error (the
            // gateway's own 502/504 among them) means the request was not served.
            Answer::Actual { .. } => !(500..600).contains(&status),
        };
        if !status_ok {
            out.push(Mismatch::Status);
        }

        // Every expected header present exactly once with its exact value, and no other
        // `Access-Control-*` header (two CORS layers produce duplicates that browsers reject).
        let expected = answer.cors_headers();
        debug_assert!(expected.len() <= MAX_EXPECTED);
        let (mut seen, mut bad) = (0u64, 0u64);
        let extras_from = out.len();
        let mut vary = VaryTokens::default();
        for (name, value) in lines {
            // Most lines (Date, Content-Length, ...) are told apart by their first letter.
            match name.first().map(u8::to_ascii_lowercase) {
                Some(b'v') if name.eq_ignore_ascii_case(b"vary") => {
                    vary.add_line(value);
                    continue;
                }
                Some(b'a')
                    if name.len() > ACCESS_CONTROL.len()
                        && name[..ACCESS_CONTROL.len()].eq_ignore_ascii_case(ACCESS_CONTROL) => {}
                _ => continue,
            }
            // Servers mostly send the lower-case names expected: an exact match comes first.
            match expected
                .iter()
                .take(MAX_EXPECTED)
                .position(|(n, _)| n.as_str().as_bytes() == name)
                .or_else(|| {
                    expected
                        .iter()
                        .take(MAX_EXPECTED)
                        .position(|(n, _)| n.as_str().as_bytes().eq_ignore_ascii_case(name))
                }) {
                Some(j) => {
                    let bit = 1u64 << j;
                    if seen & bit != 0 || expected[j].1.as_bytes() != value {
                        bad |= bit;
                    }
                    seen |= bit;
                }
                None => {
                    if let Ok(name) = HeaderName::from_bytes(name) {
                        out.push(Mismatch::Header(name));
                    }
                }
            }
        }
        let all = if expected.len() >= MAX_EXPECTED {
            u64::MAX
        } else {
            (1u64 << expected.len()) - 1
        };
        let wrong = bad | (all & !seen);
        if wrong != 0 {
            // Missing or wrong expected headers are listed before unexpected ones.
            let extras = out.split_off(extras_from);
            for (j, (name, _)) in expected.iter().enumerate().take(MAX_EXPECTED) {
                if wrong & (1u64 << j) != 0 {
                    out.push(Mismatch::Header(name.clone()));
                }
            }
            out.extend(extras);
        }

        let vary_ok = match answer {
            Answer::PreflightGrant { .. } => vary.has_all_three_once() && vary.other == 0,
            // docs/cors-semantics.md#preflight-errors: no Vary on any preflight error.
            Answer::PreflightDenial { .. } => vary.lines == 0,
            // docs/cors-semantics.md#vary: the three tokens, merged once with whatever the origin varies on.
            Answer::Actual { cors: Some(_) } => vary.has_all_three_once(),
            // Not decorated: corsgate may add `Vary: Origin` (cache safety), nothing else of CORS.
            Answer::Actual { cors: None } => vary.origin <= 1 && vary.acrh == 0 && vary.acrm == 0,
        };
        if !vary_ok {
            out.push(Mismatch::Vary);
        }

        if let Answer::PreflightDenial { code, .. } = answer
            && !has_error_code(body, code)
        {
            out.push(Mismatch::Body);
        }
    }
}

const ACCESS_CONTROL: &[u8] = b"access-control-";

/// True when the XML body holds `<Code>code</Code>` (S3's error document, docs/cors-semantics.md#preflight-errors).
fn has_error_code(body: &[u8], code: &str) -> bool {
    const OPEN: &[u8] = b"<Code>";
    body.windows(OPEN.len())
        .enumerate()
        .filter(|(_, w)| *w == OPEN)
        .any(|(i, _)| {
            let rest = &body[i + OPEN.len()..];
            rest.starts_with(code.as_bytes()) && rest[code.len()..].starts_with(b"</Code>")
        })
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::{HeaderValue, header};

    fn grant() -> Answer {
        Answer::PreflightGrant {
            cors: vec![
                (
                    header::ACCESS_CONTROL_ALLOW_ORIGIN,
                    HeaderValue::from_static("*"),
                ),
                (
                    header::ACCESS_CONTROL_ALLOW_METHODS,
                    HeaderValue::from_static("PUT, POST"),
                ),
            ],
        }
    }

    fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (n, v) in pairs {
            map.append(
                HeaderName::from_bytes(n.as_bytes()).unwrap(),
                HeaderValue::from_str(v).unwrap(),
            );
        }
        map
    }

    const VARY3: (&str, &str) = (
        "vary",
        "Origin, Access-Control-Request-Headers, Access-Control-Request-Method",
    );

    fn check(
        c: Checker,
        answer: &Answer,
        status: u16,
        h: &[(&str, &str)],
        body: &str,
    ) -> Vec<String> {
        let mut out = Vec::new();
        c.check(
            answer,
            StatusCode::from_u16(status).unwrap(),
            &headers(h),
            body.as_bytes(),
            &mut out,
        );
        out.iter().map(ToString::to_string).collect()
    }

    const RIGHT: &[(&str, &str)] = &[
        ("access-control-allow-origin", "*"),
        ("access-control-allow-methods", "PUT, POST"),
        VARY3,
    ];

    #[test]
    fn a_correct_grant_passes() {
        assert!(check(Checker::default(), &grant(), 200, RIGHT, "").is_empty());
    }

    #[test]
    fn status_204_is_a_mismatch_unless_lenient() {
        assert_eq!(
            check(Checker::default(), &grant(), 204, RIGHT, ""),
            ["status"]
        );
        let lenient = Checker {
            lenient_status: true,
        };
        assert!(check(lenient, &grant(), 204, RIGHT, "").is_empty());
    }

    #[test]
    fn wrong_missing_extra_and_repeated_headers_are_named() {
        let wrong = &[
            ("access-control-allow-origin", "*"),
            ("access-control-allow-origin", "*"),
            ("access-control-allow-methods", "PUT"),
            ("access-control-max-age", "5"),
            VARY3,
        ];
        assert_eq!(
            check(Checker::default(), &grant(), 200, wrong, ""),
            [
                "header:access-control-allow-origin",
                "header:access-control-allow-methods",
                "header:access-control-max-age"
            ]
        );
        let missing = &[("access-control-allow-origin", "*"), VARY3];
        assert_eq!(
            check(Checker::default(), &grant(), 200, missing, ""),
            ["header:access-control-allow-methods"]
        );
    }

    #[test]
    fn grant_vary_needs_exactly_the_three_tokens_in_any_case_and_order() {
        let mut h = RIGHT[..2].to_vec();
        h.push((
            "vary",
            "access-control-request-method,origin , ACCESS-CONTROL-REQUEST-HEADERS",
        ));
        assert!(check(Checker::default(), &grant(), 200, &h, "").is_empty());
        h.pop();
        h.push(("vary", "Origin"));
        assert_eq!(check(Checker::default(), &grant(), 200, &h, ""), ["vary"]);
        h.push((
            "vary",
            "Access-Control-Request-Headers, Access-Control-Request-Method, Accept",
        ));
        assert_eq!(check(Checker::default(), &grant(), 200, &h, ""), ["vary"]);
    }

    #[test]
    fn denial_needs_status_code_and_no_cors_at_all() {
        let denial = Answer::PreflightDenial {
            status: StatusCode::FORBIDDEN,
            code: "AccessForbidden",
        };
        let body = "<?xml version=\"1.0\"?><Error><Code>AccessForbidden</Code></Error>";
        assert!(check(Checker::default(), &denial, 403, &[], body).is_empty());
        assert_eq!(
            check(
                Checker::default(),
                &denial,
                400,
                &[("vary", "Origin"), ("access-control-allow-origin", "*")],
                "<Error><Code>BadRequest</Code></Error>"
            ),
            [
                "status",
                "header:access-control-allow-origin",
                "vary",
                "body:code"
            ]
        );
    }

    #[test]
    fn actual_responses_may_vary_on_origin_and_the_origins_own_tokens() {
        let plain = Answer::Actual { cors: None };
        assert!(check(Checker::default(), &plain, 404, &[], "").is_empty());
        assert!(
            check(
                Checker::default(),
                &plain,
                200,
                &[("vary", "Origin, Accept-Encoding")],
                ""
            )
            .is_empty()
        );
        assert_eq!(
            check(Checker::default(), &plain, 200, &[VARY3], ""),
            ["vary"]
        );
        assert_eq!(check(Checker::default(), &plain, 502, &[], ""), ["status"]);

        let decorated = Answer::Actual {
            cors: Some(vec![(
                header::ACCESS_CONTROL_ALLOW_ORIGIN,
                HeaderValue::from_static("*"),
            )]),
        };
        let h = &[
            ("access-control-allow-origin", "*"),
            ("vary", "Accept-Encoding"),
            VARY3,
        ];
        assert!(check(Checker::default(), &decorated, 200, h, "").is_empty());
        assert_eq!(
            check(Checker::default(), &decorated, 200, &h[..1], ""),
            ["vary"]
        );
    }
}
