//! Header names: `AllowedHeader` patterns and the request's `Access-Control-Request-Headers`.
//!
//! ACRH is attacker-controlled, so it is validated once, linearly, without allocating, and
//! refused outright past fixed bounds (docs/cors-semantics.md#matching-headers).

use arrayvec::ArrayVec;
use std::ops::ControlFlow;

use bytes::Bytes;
use http::HeaderValue;

use super::echo::{Echo, LAST_ALLOW_HEADERS, MAX_REMEMBERED, remembered};
use super::origin::wildcard_split;

/// Most names one ACRH may list. Browsers list only the non-safelisted headers a script set,
/// a handful in practice; a longer list is refused, so that the work per request stays bounded.
pub const MAX_REQUESTED_HEADERS: usize = 128;

/// Most bytes all ACRH lines of one request may hold together.
pub const MAX_REQUESTED_HEADERS_BYTES: usize = 8 * 1024;

/// A compiled `AllowedHeader` entry, lower-cased: header names compare case-insensitively.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum HeaderPattern {
    Any,
    Exact(Box<[u8]>),
    Wildcard {
        prefix: Box<[u8]>,
        suffix: Box<[u8]>,
    },
}

impl HeaderPattern {
    /// Compiles one entry; `None` when it has more than one `*`.
    pub fn parse(text: &str) -> Option<HeaderPattern> {
        let lower = text.to_ascii_lowercase();
        Some(match wildcard_split(&lower)? {
            None => HeaderPattern::Exact(lower.as_bytes().into()),
            Some(("", "")) => HeaderPattern::Any,
            Some((prefix, suffix)) => HeaderPattern::Wildcard {
                prefix: prefix.as_bytes().into(),
                suffix: suffix.as_bytes().into(),
            },
        })
    }

    /// Compares case-insensitively; the pattern itself is stored lower-case.
    pub fn matches(&self, name: &[u8]) -> bool {
        match self {
            HeaderPattern::Any => true,
            HeaderPattern::Exact(exact) => exact.eq_ignore_ascii_case(name),
            HeaderPattern::Wildcard { prefix, suffix } => {
                name.len() >= prefix.len() + suffix.len()
                    && name[..prefix.len()].eq_ignore_ascii_case(prefix)
                    && name[name.len() - suffix.len()..].eq_ignore_ascii_case(suffix)
            }
        }
    }

    /// True when every name `other` matches, this pattern matches too.
    pub fn covers(&self, other: &HeaderPattern) -> bool {
        match (self, other) {
            (HeaderPattern::Any, _) => true,
            (_, HeaderPattern::Any) => false,
            (_, HeaderPattern::Exact(e)) => self.matches(e),
            (HeaderPattern::Exact(_), HeaderPattern::Wildcard { .. }) => false,
            (
                HeaderPattern::Wildcard { prefix, suffix },
                HeaderPattern::Wildcard {
                    prefix: p2,
                    suffix: s2,
                },
            ) => p2.starts_with(prefix) && s2.ends_with(suffix),
        }
    }
}

/// Why a request's ACRH can never be allowed, whatever the rules say.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RequestedHeadersError {
    /// More than [`MAX_REQUESTED_HEADERS`] names, [`MAX_REQUESTED_HEADERS_BYTES`] bytes or
    /// [`MAX_REQUESTED_HEADERS_LINES`] header lines.
    TooLarge,
    /// A name that is not an HTTP token (RFC 9110 §5.6.2): no rule may allow it.
    NotAToken,
}

/// Most ACRH header lines one request may carry (browsers send one).
pub const MAX_REQUESTED_HEADERS_LINES: usize = 8;

/// The names an ACRH lists: split on `,`, trimmed, empty items dropped, in request order.
/// Names keep the request's case; patterns compare case-insensitively.
///
/// Parsing validates the whole list once; the names are then re-split from the borrowed lines
/// whenever they are walked, which costs about what storing them would (a split is a byte scan)
/// and keeps this value small enough to pass around freely.
#[derive(Clone, Debug, Default)]
pub struct RequestedHeaders<'a> {
    lines: ArrayVec<&'a HeaderValue, MAX_REQUESTED_HEADERS_LINES>,
    count: usize,
    /// Bytes of all names together, without separators or white space.
    name_bytes: usize,
    /// Every line is in browser form, `a,b,c`: no white space, no empty item.
    browser_form: bool,
    /// Some name has an upper-case letter.
    upper_case: bool,
}

impl<'a> RequestedHeaders<'a> {
    /// Reads every ACRH line of a request (several lines are joined with `,`).
    pub fn parse<I>(lines: I) -> Result<RequestedHeaders<'a>, RequestedHeadersError>
    where
        I: IntoIterator<Item = &'a HeaderValue>,
    {
        let mut out = RequestedHeaders {
            browser_form: true,
            ..RequestedHeaders::default()
        };
        let mut total = 0usize;
        for line in lines {
            total += line.len();
            if total > MAX_REQUESTED_HEADERS_BYTES {
                return Err(RequestedHeadersError::TooLarge);
            }
            out.lines
                .try_push(line)
                .map_err(|_| RequestedHeadersError::TooLarge)?;
        }
        for line in &out.lines {
            let shape = LineShape::of(line.as_bytes())?;
            out.count += shape.names;
            out.name_bytes += shape.name_bytes;
            out.browser_form &= shape.browser_form;
            out.upper_case |= shape.upper_case;
        }
        if out.count > MAX_REQUESTED_HEADERS {
            return Err(RequestedHeadersError::TooLarge);
        }
        Ok(out)
    }

    pub fn is_empty(&self) -> bool {
        self.count == 0
    }

    pub fn len(&self) -> usize {
        self.count
    }

    /// The names as sent.
    pub fn names(&self) -> Vec<&'a [u8]> {
        let mut out = Vec::with_capacity(self.count);
        self.each_name(|name| {
            out.push(name);
            ControlFlow::<()>::Continue(())
        });
        out
    }

    /// Calls `f` with every name, as sent, in request order.
    pub(crate) fn for_each_name(&self, mut f: impl FnMut(&'a [u8])) {
        self.each_name(|name| {
            f(name);
            ControlFlow::<()>::Continue(())
        });
    }

    /// Walks the names in request order until `f` breaks. Plain loops, not iterator adapters:
    /// this is the preflight hot path and `flat_map` costs twice as much here.
    fn each_name<B>(&self, mut f: impl FnMut(&'a [u8]) -> ControlFlow<B>) -> Option<B> {
        for line in &self.lines {
            for name in line_names(line.as_bytes()) {
                if let ControlFlow::Break(b) = f(name) {
                    return Some(b);
                }
            }
        }
        None
    }

    /// The first name no pattern allows, if any. A rule without patterns allows no name at all:
    /// S3 has no safelist exception, not even for `content-type`.
    pub fn first_refused(&self, patterns: &[HeaderPattern]) -> Option<&'a [u8]> {
        if self.count == 0 || patterns.contains(&HeaderPattern::Any) {
            return None;
        }
        self.each_name(|name| {
            if patterns.iter().any(|p| p.matches(name)) {
                ControlFlow::Continue(())
            } else {
                ControlFlow::Break(name)
            }
        })
    }

    pub fn allowed_by(&self, patterns: &[HeaderPattern]) -> bool {
        self.first_refused(patterns).is_none()
    }

    /// The `Access-Control-Allow-Headers` value S3 answers with: the requested names,
    /// lower-cased, in request order, joined by `, `. When the request's only ACRH line is
    /// already exactly that (a browser asking for one header sends it so), it is the answer:
    /// shared, or copied as `echo` says. A value built from the names is shared with the last
    /// answer made alike on this thread when the two are equal (see [`crate::cors::echo`]).
    pub fn allow_headers_value(&self, echo: Echo) -> Option<HeaderValue> {
        if self.count == 0 {
            return None;
        }
        if let &[line] = self.lines.as_slice() {
            let reusable = if self.browser_form {
                // One name in browser form is its own answer once it is lower-case.
                self.count == 1 && !self.upper_case
            } else {
                is_canonical(line.as_bytes())
            };
            if reusable {
                return Some(echo.of(line, &LAST_ALLOW_HEADERS));
            }
        }
        if self.joined_len() <= MAX_REMEMBERED {
            let mut out = ArrayVec::<u8, MAX_REMEMBERED>::new();
            let mut fits = true;
            self.join(|bytes| fits &= out.try_extend_from_slice(bytes).is_ok());
            if fits {
                if self.upper_case {
                    out.make_ascii_lowercase();
                }
                return remembered(&LAST_ALLOW_HEADERS, &out).or_else(|| self.joined_lower_case());
            }
        }
        self.joined_lower_case()
    }

    /// The length of the names joined by `, `.
    fn joined_len(&self) -> usize {
        self.name_bytes + 2 * self.count.saturating_sub(1)
    }

    /// The requested names, lower-cased, joined by `, `, in a new value.
    fn joined_lower_case(&self) -> Option<HeaderValue> {
        if self.count == 0 {
            return None;
        }
        // Exactly the final length: a `Vec` whose capacity is its length becomes `Bytes`
        // without a second allocation.
        let mut out = Vec::with_capacity(self.joined_len());
        self.join(|bytes| out.extend_from_slice(bytes));
        // Browsers send lower-case names: most answers need no second pass.
        if self.upper_case {
            out.make_ascii_lowercase();
        }
        // Every byte is a token character or ", ", so this cannot fail; stay total anyway.
        HeaderValue::from_maybe_shared(Bytes::from(out)).ok()
    }

    /// Writes the requested names as sent, joined by `, `, piece by piece.
    fn join(&self, mut write: impl FnMut(&[u8])) {
        let mut first = true;
        let mut name = |name: &[u8]| {
            if !first {
                write(b", ");
            }
            first = false;
            write(name);
        };
        if self.browser_form {
            // Browsers send `a,b,c`: every item is a name, nothing to trim.
            for line in &self.lines {
                line.as_bytes().split(|&b| b == b',').for_each(&mut name);
            }
        } else {
            self.for_each_name(name);
        }
    }
}

/// Whether a valid ACRH line is already in answer form: lower-case names joined by `, `.
fn is_canonical(line: &[u8]) -> bool {
    line.split(|&b| b == b',').enumerate().all(|(i, item)| {
        let name = if i == 0 {
            item
        } else {
            match item.strip_prefix(b" ") {
                Some(name) => name,
                None => return false,
            }
        };
        !name.is_empty()
            && !name
                .iter()
                .any(|&b| b == b' ' || b == b'\t' || b.is_ascii_uppercase())
    })
}

/// The names one ACRH line lists, as sent: split on `,`, trimmed, empty items dropped. Nothing
/// is validated: the line is one [`RequestedHeaders::parse`] accepted, or one the caller knows
/// it would.
pub(crate) fn line_names(line: &[u8]) -> impl Iterator<Item = &[u8]> {
    line.split(|&b| b == b',')
        .map(trim_ows)
        .filter(|name| !name.is_empty())
}

/// Whether a comma-separated field value (RFC 9110 §5.6.1: `Connection`, `Transfer-Encoding`)
/// lists `token`, compared without case.
pub(crate) fn list_contains(value: &[u8], token: &[u8]) -> bool {
    value
        .split(|&b| b == b',')
        .any(|t| trim_ows(t).eq_ignore_ascii_case(token))
}

/// Whether `token` is the last item of a comma-separated field value, compared without case:
/// a `Transfer-Encoding` is chunked when chunked is its last coding (RFC 9112 §6.3 rule 4).
pub(crate) fn list_ends_with(value: &[u8], token: &[u8]) -> bool {
    value
        .rsplit(|&b| b == b',')
        .next()
        .is_some_and(|t| trim_ows(t).eq_ignore_ascii_case(token))
}

fn trim_ows(mut s: &[u8]) -> &[u8] {
    while let [b' ' | b'\t', rest @ ..] = s {
        s = rest;
    }
    while let [rest @ .., b' ' | b'\t'] = s {
        s = rest;
    }
    s
}

/// What one valid ACRH line holds.
#[derive(Debug, PartialEq, Eq)]
struct LineShape {
    names: usize,
    /// Bytes of the names together, without separators or white space.
    name_bytes: usize,
    /// Names separated by single commas, nothing else: `a,b,c`.
    browser_form: bool,
    upper_case: bool,
}

impl LineShape {
    /// Reads one ACRH line, refusing anything that is not a comma-separated list of tokens with
    /// optional white space around them.
    fn of(line: &[u8]) -> Result<LineShape, RequestedHeadersError> {
        // Browsers send `a,b,c`, lower-case. One branch-free pass classifies every byte and
        // counts the commas; that settles the browser form, and only anything else takes the
        // general walk below, instead of three scans over the line.
        // `adjacent` collects the classes two neighbouring bytes share: its comma bit means
        // `,,` (an empty item), as does a comma first (`prev` starts as one) or last.
        let (mut seen, mut adjacent, mut commas, mut prev) = (0u8, 0u8, 0usize, COMMA);
        for &b in line {
            let class = BYTE_CLASS[usize::from(b)];
            seen |= class;
            adjacent |= class & prev;
            commas += usize::from(class == COMMA);
            prev = class;
        }
        let upper_case = seen & UPPER != 0;
        if seen & (OWS | OTHER) == 0 && adjacent & COMMA == 0 && prev != COMMA {
            return Ok(LineShape {
                names: commas + 1,
                name_bytes: line.len() - commas,
                browser_form: true,
                upper_case,
            });
        }
        if seen & OTHER != 0 {
            return Err(RequestedHeadersError::NotAToken);
        }
        let (mut names, mut name_bytes, mut in_name, mut space_after_name) = (0, 0, false, false);
        for &b in line {
            match b {
                b',' => {
                    names += usize::from(in_name);
                    (in_name, space_after_name) = (false, false);
                }
                b' ' | b'\t' => space_after_name = in_name,
                _ if !space_after_name => {
                    in_name = true;
                    name_bytes += 1;
                }
                _ => return Err(RequestedHeadersError::NotAToken),
            }
        }
        Ok(LineShape {
            names: names + usize::from(in_name),
            name_bytes,
            browser_form: false,
            upper_case,
        })
    }
}

/// Byte classes of ACRH, one bit each so that a line's classes OR together.
const TOKEN: u8 = 1;
/// An upper-case letter (also a token character).
const UPPER: u8 = 2;
const COMMA: u8 = 4;
/// Optional white space: space or tab.
const OWS: u8 = 8;
const OTHER: u8 = 16;

const BYTE_CLASS: [u8; 256] = {
    let mut table = [OTHER; 256];
    let mut i = 0;
    while i < 256 {
        let b = i as u8;
        table[i] = if b.is_ascii_uppercase() {
            UPPER
        } else if TCHAR[i] {
            TOKEN
        } else if b == b',' {
            COMMA
        } else if b == b' ' || b == b'\t' {
            OWS
        } else {
            OTHER
        };
        i += 1;
    }
    table
};

/// RFC 9110 §5.6.2 `tchar`, as a table: it is checked for every ACRH byte.
pub(crate) const TCHAR: [bool; 256] = {
    let mut table = [false; 256];
    let mut i = 0;
    while i < 256 {
        let b = i as u8;
        table[i] = b.is_ascii_alphanumeric()
            || matches!(
                b,
                b'!' | b'#'
                    | b'$'
                    | b'%'
                    | b'&'
                    | b'\''
                    | b'*'
                    | b'+'
                    | b'-'
                    | b'.'
                    | b'^'
                    | b'_'
                    | b'`'
                    | b'|'
                    | b'~'
            );
        i += 1;
    }
    table
};

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn list_tokens_compare_without_case_around_white_space() {
        assert!(list_contains(b"keep-alive, Close", b"close"));
        assert!(list_contains(b"close", b"close"));
        assert!(!list_contains(b"closed, keep-alive", b"close"));
        assert!(list_ends_with(b"gzip,\tChunked ", b"chunked"));
        assert!(!list_ends_with(b"chunked, gzip", b"chunked"));
        assert!(!list_ends_with(b"", b"chunked"));
    }

    fn parse(lines: &[&str]) -> Result<Vec<String>, RequestedHeadersError> {
        let values: Vec<HeaderValue> = lines
            .iter()
            .map(|l| HeaderValue::from_str(l).expect("test header value"))
            .collect();
        let parsed = RequestedHeaders::parse(values.iter())?;
        Ok(parsed
            .names()
            .into_iter()
            .map(|n| String::from_utf8_lossy(n).into_owned())
            .collect())
    }

    #[test]
    fn splits_trims_and_drops_empty_items() {
        assert_eq!(
            parse(&[" Content-Type ,, x-amz-meta-a,\t"]),
            Ok(vec!["Content-Type".to_string(), "x-amz-meta-a".to_string()])
        );
        assert_eq!(
            parse(&["a", "b,c"]),
            Ok(vec!["a".into(), "b".into(), "c".into()])
        );
        assert_eq!(parse(&[""]), Ok(vec![]));
    }

    #[test]
    fn the_answer_joins_every_line_lower_cased() {
        let cases: &[(&[&str], Option<&str>)] = &[
            (&["A,b", "c"], Some("a, b, c")),
            (&["a, B", "c"], Some("a, b, c")),
            (&["a,,b"], Some("a, b")),
            (&[",a,"], Some("a")),
            (&["x-one"], Some("x-one")),
            (&["X-One"], Some("x-one")),
            (&["a, b"], Some("a, b")),
            (&["", "a"], Some("a")),
            (&["", " "], None),
        ];
        for (lines, answer) in cases {
            let values: Vec<HeaderValue> = lines
                .iter()
                .map(|l| HeaderValue::from_str(l).expect("test header value"))
                .collect();
            let parsed = RequestedHeaders::parse(values.iter()).expect("valid");
            assert_eq!(
                parsed.allow_headers_value(Echo::Shared),
                answer.map(HeaderValue::from_static),
                "{lines:?}"
            );
        }
    }

    #[test]
    fn non_tokens_and_oversize_lists_are_refused() {
        assert_eq!(parse(&["x y"]), Err(RequestedHeadersError::NotAToken));
        assert_eq!(parse(&["a:b"]), Err(RequestedHeadersError::NotAToken));
        let many = vec!["h"; MAX_REQUESTED_HEADERS + 1].join(",");
        assert_eq!(parse(&[&many]), Err(RequestedHeadersError::TooLarge));
        let long = "h".repeat(MAX_REQUESTED_HEADERS_BYTES + 1);
        assert_eq!(parse(&[&long]), Err(RequestedHeadersError::TooLarge));
    }

    #[test]
    fn matching_ignores_case_and_allow_value_is_lower_case() {
        let v = [HeaderValue::from_static("X-Amz-Meta-Color,content-type")];
        let req = RequestedHeaders::parse(v.iter()).expect("valid");
        let patterns = [
            HeaderPattern::parse("x-amz-meta-*").expect("valid"),
            HeaderPattern::parse("Content-Type").expect("valid"),
        ];
        assert!(req.allowed_by(&patterns));
        assert!(!req.allowed_by(&patterns[..1]));
        assert!(!req.allowed_by(&[]));
        assert_eq!(
            req.allow_headers_value(Echo::Shared),
            Some(HeaderValue::from_static("x-amz-meta-color, content-type"))
        );
    }

    proptest! {
        #[test]
        fn parsing_agrees_with_a_naive_split(items in proptest::collection::vec("[ \t]{0,2}[A-Za-z-]{0,5}[ \t]{0,2}", 0..20)) {
            let line = items.join(",");
            let expected: Vec<String> = line
                .split(',')
                .map(|s| s.trim_matches([' ', '\t']).to_string())
                .filter(|s| !s.is_empty())
                .collect();
            prop_assert_eq!(parse(&[&line]), Ok(expected.clone()));
            let value = HeaderValue::from_str(&line).expect("ascii");
            let parsed = RequestedHeaders::parse(std::iter::once(&value)).expect("valid");
            prop_assert_eq!(parsed.len(), expected.len(), "counted names of {:?}", line);
            let answer = (!expected.is_empty()).then(|| expected.join(", ").to_ascii_lowercase());
            prop_assert_eq!(
                parsed.allow_headers_value(Echo::Shared).map(|v| v.to_str().expect("ascii").to_string()),
                answer,
                "answer to {:?}", line
            );
        }

        #[test]
        fn any_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..300)) {
            if let Ok(v) = HeaderValue::from_bytes(&bytes)
                && let Ok(r) = RequestedHeaders::parse(std::iter::once(&v))
            {
                let _ = (r.allow_headers_value(Echo::Shared), r.allow_headers_value(Echo::Copied));
            }
        }

        #[test]
        fn a_reused_or_remembered_acrh_line_is_exactly_the_built_value(items in proptest::collection::vec("[ ,]{0,2}[a-zA-Z-]{0,4}", 1..6)) {
            let v = HeaderValue::from_str(&items.concat()).expect("printable");
            if let Ok(req) = RequestedHeaders::parse(std::iter::once(&v)) {
                prop_assert_eq!(req.allow_headers_value(Echo::Shared), req.joined_lower_case());
                prop_assert_eq!(req.allow_headers_value(Echo::Copied), req.joined_lower_case());
            }
        }
    }
}
