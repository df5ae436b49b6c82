//! Request header blocks in a stateless HPACK form (RFC 7541), encoded once per pooled request
//! before the run.
//!
//! Every field is either fully indexed in the static table (`:method` GET or POST, `:scheme`) or
//! a literal without indexing (§6.2.2), its name by static index where the table has the name, its
//! strings plain rather than Huffman-coded. Nothing touches the dynamic table, so one block is
//! valid on every connection, in any order, as often as it is sent; the price is a few bytes per
//! request that a stateful encoder would save, and the saving is what costs CPU per request.

/// The names of RFC 7541 Appendix A's static table, index 1 first.
const STATIC_NAMES: [&[u8]; 61] = [
    b":authority",
    b":method",
    b":method",
    b":path",
    b":path",
    b":scheme",
    b":scheme",
    b":status",
    b":status",
    b":status",
    b":status",
    b":status",
    b":status",
    b":status",
    b"accept-charset",
    b"accept-encoding",
    b"accept-language",
    b"accept-ranges",
    b"accept",
    b"access-control-allow-origin",
    b"age",
    b"allow",
    b"authorization",
    b"cache-control",
    b"content-disposition",
    b"content-encoding",
    b"content-language",
    b"content-length",
    b"content-location",
    b"content-range",
    b"content-type",
    b"cookie",
    b"date",
    b"etag",
    b"expect",
    b"expires",
    b"from",
    b"host",
    b"if-match",
    b"if-modified-since",
    b"if-none-match",
    b"if-range",
    b"if-unmodified-since",
    b"last-modified",
    b"link",
    b"location",
    b"max-forwards",
    b"proxy-authenticate",
    b"proxy-authorization",
    b"range",
    b"referer",
    b"refresh",
    b"retry-after",
    b"server",
    b"set-cookie",
    b"strict-transport-security",
    b"transfer-encoding",
    b"user-agent",
    b"vary",
    b"via",
    b"www-authenticate",
];

/// Indexed field `:method: GET` (static index 2), `POST` (3), `:scheme: http` (6), `https` (7).
const METHOD_GET: u8 = 0x80 | 2;
const METHOD_POST: u8 = 0x80 | 3;
const SCHEME_HTTP: u8 = 0x80 | 6;
const SCHEME_HTTPS: u8 = 0x80 | 7;

/// The header block of a request without body. `headers` are lower-case names (h2 forbids
/// upper case) other than the pseudo-headers, which come from the other arguments.
pub(crate) fn request_block<'a>(
    method: &[u8],
    https: bool,
    authority: &[u8],
    path: &[u8],
    headers: impl IntoIterator<Item = (&'a [u8], &'a [u8])>,
) -> Vec<u8> {
    let mut out = Vec::with_capacity(128);
    match method {
        b"GET" => out.push(METHOD_GET),
        b"POST" => out.push(METHOD_POST),
        other => literal(&mut out, b":method", other),
    }
    out.push(if https { SCHEME_HTTPS } else { SCHEME_HTTP });
    literal(&mut out, b":authority", authority);
    literal(&mut out, b":path", path);
    for (name, value) in headers {
        literal(&mut out, name, value);
    }
    out
}

/// A literal field without indexing (RFC 7541 §6.2.2).
fn literal(out: &mut Vec<u8>, name: &[u8], value: &[u8]) {
    match STATIC_NAMES.iter().position(|n| *n == name) {
        // Pattern 0000, then the name's index on a 4-bit prefix.
        Some(i) => integer(out, 0x00, 4, i + 1),
        None => {
            out.push(0x00);
            string(out, name);
        }
    }
    string(out, value);
}

/// A string literal, not Huffman-coded: H bit clear, the length on a 7-bit prefix.
fn string(out: &mut Vec<u8>, s: &[u8]) {
    integer(out, 0x00, 7, s.len());
    out.extend_from_slice(s);
}

/// RFC 7541 §5.1: `value` on a `prefix`-bit prefix whose other bits are `flags`.
fn integer(out: &mut Vec<u8>, flags: u8, prefix: u32, value: usize) {
    let max = (1usize << prefix) - 1;
    if value < max {
        out.push(flags | value as u8);
        return;
    }
    out.push(flags | max as u8);
    let mut rest = value - max;
    while rest >= 0x80 {
        out.push((rest & 0x7f) as u8 | 0x80);
        rest >>= 7;
    }
    out.push(rest as u8);
}

#[cfg(test)]
mod tests {
    use super::*;

    type Fields = Vec<(Vec<u8>, Vec<u8>)>;

    fn decoded(decoder: &mut loona_hpack::Decoder<'_>, block: &[u8]) -> Fields {
        decoder.decode(block).expect("a block we encoded decodes")
    }

    fn fields(pairs: &[(&str, &str)]) -> Fields {
        pairs
            .iter()
            .map(|(n, v)| (n.as_bytes().to_vec(), v.as_bytes().to_vec()))
            .collect()
    }

    #[test]
    fn a_preflight_block_decodes_to_the_same_fields() {
        let long = "x".repeat(300);
        let headers = [
            (&b"origin"[..], &b"https://app.example.com"[..]),
            (b"access-control-request-method", b"PUT"),
            (b"access-control-request-headers", long.as_bytes()),
            (b"user-agent", b"corsgate"),
        ];
        let block = request_block(
            b"OPTIONS",
            true,
            b"bucket.example.com:8443",
            b"/bucket/key?x=1",
            headers,
        );
        let want = fields(&[
            (":method", "OPTIONS"),
            (":scheme", "https"),
            (":authority", "bucket.example.com:8443"),
            (":path", "/bucket/key?x=1"),
            ("origin", "https://app.example.com"),
            ("access-control-request-method", "PUT"),
            ("access-control-request-headers", &long),
            ("user-agent", "corsgate"),
        ]);
        assert_eq!(decoded(&mut loona_hpack::Decoder::new(), &block), want);
    }

    #[test]
    fn get_and_post_are_indexed_and_blocks_stay_valid_in_any_order() {
        let get = request_block(b"GET", false, b"127.0.0.1:80", b"/a", []);
        let post = request_block(b"POST", false, b"127.0.0.1:80", b"/b", []);
        assert_eq!(get[..2], [METHOD_GET, SCHEME_HTTP]);
        assert_eq!(post[..2], [METHOD_POST, SCHEME_HTTP]);
        // One decoder, as one connection has: no block depends on what came before it.
        let mut decoder = loona_hpack::Decoder::new();
        for block in [&get, &post, &get, &get, &post] {
            let method = if block == &get { "GET" } else { "POST" };
            let path = if block == &get { "/a" } else { "/b" };
            assert_eq!(
                decoded(&mut decoder, block),
                fields(&[
                    (":method", method),
                    (":scheme", "http"),
                    (":authority", "127.0.0.1:80"),
                    (":path", path),
                ])
            );
        }
    }

    #[test]
    fn integers_past_the_prefix_continue_in_seven_bit_groups() {
        // RFC 7541 §C.1.2: 1337 on a 5-bit prefix.
        let mut out = Vec::new();
        integer(&mut out, 0, 5, 1337);
        assert_eq!(out, [31, 154, 10]);
        out.clear();
        integer(&mut out, 0x00, 4, 15);
        assert_eq!(out, [15, 0]);
    }
}
