//! `Access-Control-Request-Headers`, checked against the plain reading of the spec (§2): the
//! lines joined with `,`, split on `,`, each item trimmed of spaces and tabs, empty items dropped,
//! every name an HTTP token, within the fixed bounds; names match `AllowedHeader` patterns
//! case-insensitively with at most one `*`.
//!
//! Input: the ACRH lines, one per `\n`, then a NUL, then `AllowedHeader` patterns, one per `\n`.
//! A line that cannot be a header value is dropped, as no client could send it.

#![no_main]

use corsgate::cors::Echo;
use corsgate::cors::header::{
    HeaderPattern, MAX_REQUESTED_HEADERS, MAX_REQUESTED_HEADERS_BYTES, MAX_REQUESTED_HEADERS_LINES,
    RequestedHeaders, RequestedHeadersError,
};
use http::HeaderValue;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let (acrh, patterns) = match data.iter().position(|&b| b == 0) {
        Some(nul) => (&data[..nul], &data[nul + 1..]),
        None => (data, &[][..]),
    };
    let lines: Vec<HeaderValue> = acrh
        .split(|&b| b == b'\n')
        .filter_map(|line| HeaderValue::from_bytes(line).ok())
        .collect();
    let (parsed, names) = match (RequestedHeaders::parse(lines.iter()), naive_parse(&lines)) {
        (Ok(parsed), Ok(names)) => (parsed, names),
        (Err(got), Err(expected)) => {
            assert_eq!(got, expected, "refusal of {lines:?}");
            return;
        }
        (got, expected) => panic!("{lines:?}: parsed as {got:?}, the spec says {expected:?}"),
    };
    assert_eq!(parsed.names(), names, "names of {lines:?}");
    assert_eq!(parsed.len(), names.len());
    assert_eq!(parsed.is_empty(), names.is_empty());
    let answer = (!names.is_empty()).then(|| {
        let joined: Vec<String> = names
            .iter()
            .map(|n| String::from_utf8_lossy(n).to_ascii_lowercase())
            .collect();
        joined.join(", ")
    });
    // An answer's own copy (HTTP/1.1) and the request's shared value (h2) must read the same.
    for echo in [Echo::Shared, Echo::Copied] {
        assert_eq!(
            parsed
                .allow_headers_value(echo)
                .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned()),
            answer,
            "Access-Control-Allow-Headers ({echo:?}) for {lines:?}"
        );
    }

    // No patterns at all is a rule without AllowedHeader: it refuses every requested name.
    let texts: Vec<String> = if patterns.is_empty() {
        Vec::new()
    } else {
        String::from_utf8_lossy(patterns)
            .split('\n')
            .map(str::to_string)
            .collect()
    };
    let compiled: Vec<HeaderPattern> = texts
        .iter()
        .filter_map(|t| HeaderPattern::parse(t))
        .collect();
    let accepted: Vec<&String> = texts
        .iter()
        .filter(|t| t.matches('*').count() <= 1)
        .collect();
    assert_eq!(
        compiled.len(),
        accepted.len(),
        "patterns with one `*` at most compile"
    );
    let refused = names
        .iter()
        .copied()
        .find(|name| !accepted.iter().any(|p| naive_match(p, name)));
    assert_eq!(
        parsed.first_refused(&compiled),
        refused,
        "{lines:?} against {accepted:?}"
    );
    assert_eq!(parsed.allowed_by(&compiled), refused.is_none());
});

/// The spec's sentence, read literally.
fn naive_parse(lines: &[HeaderValue]) -> Result<Vec<&[u8]>, RequestedHeadersError> {
    let bytes: usize = lines.iter().map(HeaderValue::len).sum();
    if lines.len() > MAX_REQUESTED_HEADERS_LINES || bytes > MAX_REQUESTED_HEADERS_BYTES {
        return Err(RequestedHeadersError::TooLarge);
    }
    let mut names = Vec::new();
    for line in lines {
        for item in line.as_bytes().split(|&b| b == b',') {
            let name = trim_ows(item);
            if !name.is_empty() {
                names.push(name);
            }
        }
    }
    if names.iter().any(|n| !n.iter().all(|&b| is_token_char(b))) {
        return Err(RequestedHeadersError::NotAToken);
    }
    if names.len() > MAX_REQUESTED_HEADERS {
        return Err(RequestedHeadersError::TooLarge);
    }
    Ok(names)
}

/// Trims spaces and tabs (RFC 9110 OWS).
fn trim_ows(item: &[u8]) -> &[u8] {
    let start = item.iter().position(|&b| b != b' ' && b != b'\t');
    let end = item.iter().rposition(|&b| b != b' ' && b != b'\t');
    match (start, end) {
        (Some(s), Some(e)) => &item[s..=e],
        _ => &[],
    }
}

/// RFC 9110 §5.6.2 `tchar`.
fn is_token_char(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}

/// `name` against one pattern, ASCII case ignored: no `*` is the name itself; `prefix*suffix`
/// is any name that starts with the prefix and ends with the suffix without the two sharing a
/// byte.
fn naive_match(pattern: &str, name: &[u8]) -> bool {
    let pattern = pattern.to_ascii_lowercase();
    let name = name.to_ascii_lowercase();
    match pattern.split_once('*') {
        None => pattern.as_bytes() == name.as_slice(),
        Some((prefix, suffix)) => name
            .strip_prefix(prefix.as_bytes())
            .is_some_and(|rest| rest.ends_with(suffix.as_bytes())),
    }
}
