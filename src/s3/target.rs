//! The request target of a request corsgate signs for S3: the path and query the origin will
//! receive and the signature covers, spelled the way S3 itself rebuilds them.
//!
//! S3 checks a signature against its own canonical form of the target: the object key's bytes,
//! every one but the unreserved characters and `/` percent-encoded with upper-case hex, and the
//! query parameters decoded and encoded the same way (SigV4's `UriEncode`). A client's path may
//! spell a key otherwise (`%7e` for `~`, a raw `(`, a lower-case escape); forwarding it as sent
//! would make the signature cover one spelling while S3 checks another. So a signed request is
//! sent in the canonical spelling itself: both sides then agree byte for byte, and the key named
//! is the same.
//!
//! The query also loses a presigned URL's parameters (`X-Amz-Signature` and its kin): the
//! request is signed with corsgate's keys, in headers, and a second signature in the query would
//! make S3 refuse it.

/// The query parameters of a presigned URL (SigV4 in the query string).
pub(crate) const PRESIGN_PARAMS: [&str; 7] = [
    "X-Amz-Algorithm",
    "X-Amz-Credential",
    "X-Amz-Date",
    "X-Amz-Expires",
    "X-Amz-SignedHeaders",
    "X-Amz-Signature",
    "X-Amz-Security-Token",
];

/// `path` (already prefixed with the origin's own path) and `query` as a signed request sends
/// them: `path` canonical, `query` canonical without [`PRESIGN_PARAMS`] (compared without case:
/// S3 would take `x-amz-signature` as one too). Parameters keep their order; one written
/// without `=` (`?cors`) stays so.
pub(crate) fn signed_target(path: &str, query: Option<&str>) -> String {
    let mut out = String::with_capacity(path.len() + query.map_or(0, str::len) + 16);
    uri_encode(&mut out, &percent_decode(path.as_bytes(), false), true);
    let mut first = true;
    for pair in query.unwrap_or("").split('&').filter(|p| !p.is_empty()) {
        let (name, value) = match pair.split_once('=') {
            Some((name, value)) => (name, Some(value)),
            None => (pair, None),
        };
        let name = percent_decode(name.as_bytes(), true);
        if PRESIGN_PARAMS
            .iter()
            .any(|p| p.as_bytes().eq_ignore_ascii_case(&name))
        {
            continue;
        }
        out.push(if first { '?' } else { '&' });
        first = false;
        uri_encode(&mut out, &name, false);
        if let Some(value) = value {
            out.push('=');
            uri_encode(&mut out, &percent_decode(value.as_bytes(), true), false);
        }
    }
    out
}

/// Percent-escapes decoded (`%zz`, not an escape, stays as it is); in a query, `+` is a space
/// (HTML form encoding, as S3 reads queries).
fn percent_decode(text: &[u8], plus_is_space: bool) -> Vec<u8> {
    let hex = |b: u8| (b as char).to_digit(16).map(|d| d as u8);
    let mut out = Vec::with_capacity(text.len());
    let mut i = 0;
    while i < text.len() {
        match text[i] {
            b'%' if i + 2 < text.len() => match (hex(text[i + 1]), hex(text[i + 2])) {
                (Some(hi), Some(lo)) => {
                    out.push(hi << 4 | lo);
                    i += 3;
                    continue;
                }
                _ => out.push(b'%'),
            },
            b'+' if plus_is_space => out.push(b' '),
            b => out.push(b),
        }
        i += 1;
    }
    out
}

/// SigV4's `UriEncode`: every byte but `A-Z a-z 0-9 - . _ ~` (and `/` in a path) as `%XX`.
fn uri_encode(out: &mut String, bytes: &[u8], path: bool) {
    const HEX: &[u8; 16] = b"0123456789ABCDEF";
    for &b in bytes {
        if b.is_ascii_alphanumeric() || b"-._~".contains(&b) || (path && b == b'/') {
            out.push(b as char);
        } else {
            out.push('%');
            out.push(HEX[usize::from(b >> 4)] as char);
            out.push(HEX[usize::from(b & 15)] as char);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_are_sent_in_the_spelling_s3_signs() {
        let cases = [
            ("/photos/cat.jpg", "/photos/cat.jpg"),
            ("/a%7eb/%41", "/a~b/A"),
            ("/a b(1)+!.txt", "/a%20b%281%29%2B%21.txt"),
            ("/caf%c3%a9", "/caf%C3%A9"),
            ("/x%2Fy", "/x/y"),
            ("/bad%zz%4", "/bad%25zz%254"),
            ("/", "/"),
        ];
        for (path, sent) in cases {
            assert_eq!(signed_target(path, None), sent, "{path}");
        }
    }

    #[test]
    fn queries_lose_presigning_parameters_and_keep_the_rest_in_order() {
        let query = "X-Amz-Algorithm=AWS4-HMAC-SHA256&versionId=3&X-Amz-Credential=AK%2F1\
                     &x-amz-signature=ab&response-content-disposition=attachment%3B+filename%3Da.txt\
                     &X-Amz-Date=1&X-Amz-Expires=60&X-Amz-SignedHeaders=host\
                     &X-Amz-Security-Token=t&cors&&partNumber=2";
        assert_eq!(
            signed_target("/k", Some(query)),
            "/k?versionId=3&response-content-disposition=attachment%3B%20filename%3Da.txt\
             &cors&partNumber=2"
        );
        assert_eq!(
            signed_target("/k", Some("X-Amz-Signature=1")),
            "/k",
            "nothing left: no '?'"
        );
        assert_eq!(signed_target("/k", Some("")), "/k");
    }
}
