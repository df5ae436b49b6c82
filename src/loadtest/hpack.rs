//! HPACK (RFC 7541) for the load generator's h2 client: request header blocks encoded once per
//! pooled request before the run, answer header blocks decoded as they arrive.
//!
//! Requests: every field is either fully indexed in the static table (`:method` GET or POST,
//! `:scheme`) or a literal without indexing (§6.2.2), its name by static index where the table
//! has the name, its strings plain rather than Huffman-coded. Nothing touches the dynamic table,
//! so one block is valid on every connection, in any order, as often as it is sent; the price is
//! a few bytes per request that a stateful encoder would save, and the saving is what costs CPU
//! per request.
//!
//! Answers: [`Decoder`] keeps the connection's dynamic table and hands each field to a callback
//! as byte slices, borrowed from the block, the table or a scratch buffer. Huffman-coded strings
//! go through `httlib-huffman`'s table-driven decoder: `loona-hpack` builds a hash map of the
//! whole code for every Huffman string it decodes, which made the generator's CPU per request
//! against a server that Huffman-codes fresh values (a `date`, a request id) many times the
//! server's own. The table's entries are reused as they are evicted, so a steady run allocates
//! nothing here.

use std::collections::VecDeque;

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

/// The values of the static table's entries that have one, by index; the others are empty.
fn static_value(index: usize) -> &'static [u8] {
    match index {
        2 => b"GET",
        3 => b"POST",
        4 => b"/",
        5 => b"/index.html",
        6 => b"http",
        7 => b"https",
        8 => b"200",
        9 => b"204",
        10 => b"206",
        11 => b"304",
        12 => b"400",
        13 => b"404",
        14 => b"500",
        16 => b"gzip, deflate",
        _ => b"",
    }
}

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

/// The dynamic table size a decoder allows, SETTINGS_HEADER_TABLE_SIZE being left at its default.
pub(crate) const TABLE_SIZE: usize = 4096;
/// Every entry's size counts this on top of its name and value (RFC 7541 §4.1).
const ENTRY_OVERHEAD: usize = 32;
/// Integers past this are refused: no length or index in a sane block comes near it.
const MAX_INTEGER: usize = 1 << 24;

/// Why a header block does not decode; the connection cannot go on after one (RFC 9113 §4.3).
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub(crate) enum HpackError {
    #[error("a field ends past the end of its block")]
    Truncated,
    #[error("an integer too large")]
    Integer,
    #[error("index {0} is in neither table")]
    Index(usize),
    #[error("a Huffman-coded string is not valid")]
    Huffman,
    #[error("a dynamic table size update to {0}, over the {TABLE_SIZE} allowed, or not first")]
    SizeUpdate(usize),
}

#[derive(Default)]
struct Entry {
    name: Vec<u8>,
    value: Vec<u8>,
}

impl Entry {
    fn size(&self) -> usize {
        self.name.len() + self.value.len() + ENTRY_OVERHEAD
    }
}

/// The decoding side of one connection's HPACK context.
pub(crate) struct Decoder {
    /// Newest first: dynamic index 62 is `table[0]`.
    table: VecDeque<Entry>,
    size: usize,
    max: usize,
    allowed: usize,
    /// Evicted entries, kept for their buffers.
    spare: Vec<Entry>,
    name: Vec<u8>,
    value: Vec<u8>,
}

impl Decoder {
    /// A decoder whose table may hold up to `allowed` bytes (the SETTINGS_HEADER_TABLE_SIZE
    /// advertised).
    pub(crate) fn new(allowed: usize) -> Decoder {
        Decoder {
            table: VecDeque::new(),
            size: 0,
            max: allowed,
            allowed,
            spare: Vec::new(),
            name: Vec::new(),
            value: Vec::new(),
        }
    }

    /// Decodes a whole header block, handing each field to `field` in order.
    pub(crate) fn decode(
        &mut self,
        block: &[u8],
        mut field: impl FnMut(&[u8], &[u8]),
    ) -> Result<(), HpackError> {
        let mut at = 0;
        let mut first = true;
        while let Some(&b) = block.get(at) {
            if b & 0x80 != 0 {
                // §6.1: indexed field.
                let index = decode_integer(block, &mut at, 7)?;
                let (name, value) = self.get(index)?;
                field(name, value);
            } else if b & 0xe0 == 0x20 {
                // §6.3: dynamic table size update, only at the start of a block (§4.2).
                let size = decode_integer(block, &mut at, 5)?;
                if size > self.allowed || !first {
                    return Err(HpackError::SizeUpdate(size));
                }
                self.max = size;
                self.evict(0);
            } else {
                // §6.2: a literal, with incremental indexing (01), without (0000) or never
                // indexed (0001).
                let indexing = b & 0xc0 == 0x40;
                let index = decode_integer(block, &mut at, if indexing { 6 } else { 4 })?;
                let Decoder {
                    table,
                    name: name_buf,
                    value: value_buf,
                    spare,
                    ..
                } = self;
                let name = if index == 0 {
                    decode_string(block, &mut at, name_buf)?
                } else {
                    lookup(table, index)?.0
                };
                let value = decode_string(block, &mut at, value_buf)?;
                field(name, value);
                if indexing {
                    let mut entry = spare.pop().unwrap_or_default();
                    entry.name.clear();
                    entry.name.extend_from_slice(name);
                    entry.value.clear();
                    entry.value.extend_from_slice(value);
                    self.insert(entry);
                }
            }
            // Only size updates may come before the first field.
            first = b & 0xe0 == 0x20 && first;
        }
        Ok(())
    }

    fn get(&self, index: usize) -> Result<(&[u8], &[u8]), HpackError> {
        lookup(&self.table, index)
    }

    /// §4.4: evicts the oldest entries until the new one fits; one larger than the whole table
    /// empties it and is not added.
    fn insert(&mut self, entry: Entry) {
        let size = entry.size();
        self.evict(size);
        if size <= self.max {
            self.size += size;
            self.table.push_front(entry);
        } else {
            self.spare.push(entry);
        }
    }

    /// Evicts until `room` more bytes fit within the table's size.
    fn evict(&mut self, room: usize) {
        while self.size + room > self.max {
            let Some(old) = self.table.pop_back() else {
                break;
            };
            self.size -= old.size();
            self.spare.push(old);
        }
    }
}

/// Entry `index` of the static table (1 to 61) or of the dynamic one (62 on).
fn lookup(table: &VecDeque<Entry>, index: usize) -> Result<(&[u8], &[u8]), HpackError> {
    match index {
        1..=61 => Ok((STATIC_NAMES[index - 1], static_value(index))),
        _ => index
            .checked_sub(62)
            .and_then(|i| table.get(i))
            .map(|e| (&e.name[..], &e.value[..]))
            .ok_or(HpackError::Index(index)),
    }
}

/// §5.1: an integer on a `prefix`-bit prefix at `block[*at]`, moving `at` past it.
fn decode_integer(block: &[u8], at: &mut usize, prefix: u32) -> Result<usize, HpackError> {
    let max = (1usize << prefix) - 1;
    let first = *block.get(*at).ok_or(HpackError::Truncated)?;
    *at += 1;
    let mut value = usize::from(first) & max;
    if value < max {
        return Ok(value);
    }
    let mut shift = 0;
    loop {
        let b = *block.get(*at).ok_or(HpackError::Truncated)?;
        *at += 1;
        value += usize::from(b & 0x7f) << shift;
        if value > MAX_INTEGER {
            return Err(HpackError::Integer);
        }
        if b & 0x80 == 0 {
            return Ok(value);
        }
        shift += 7;
        if shift > 28 {
            return Err(HpackError::Integer);
        }
    }
}

/// §5.2: a string literal, borrowed from the block when plain, decoded into `buf` when
/// Huffman-coded.
fn decode_string<'a>(
    block: &'a [u8],
    at: &mut usize,
    buf: &'a mut Vec<u8>,
) -> Result<&'a [u8], HpackError> {
    let huffman = block.get(*at).ok_or(HpackError::Truncated)? & 0x80 != 0;
    let len = decode_integer(block, at, 7)?;
    let raw = block.get(*at..*at + len).ok_or(HpackError::Truncated)?;
    *at += len;
    if !huffman {
        return Ok(raw);
    }
    buf.clear();
    httlib_huffman::decode(raw, buf, httlib_huffman::DecoderSpeed::FiveBits)
        .map_err(|_| HpackError::Huffman)?;
    Ok(buf)
}

#[cfg(test)]
mod tests {
    use super::*;

    type Fields = Vec<(Vec<u8>, Vec<u8>)>;

    fn decoded(decoder: &mut loona_hpack::Decoder<'_>, block: &[u8]) -> Fields {
        decoder.decode(block).expect("a block we encoded decodes")
    }

    /// What our own decoder makes of `block`.
    fn ours(decoder: &mut Decoder, block: &[u8]) -> Result<Fields, HpackError> {
        let mut out = Vec::new();
        decoder.decode(block, |n, v| out.push((n.to_vec(), v.to_vec())))?;
        Ok(out)
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
        assert_eq!(ours(&mut Decoder::new(TABLE_SIZE), &block), Ok(want));
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
    /// RFC 7541 §C.6: three answers, Huffman-coded, through a 256-byte table that evicts.
    #[test]
    fn the_rfc_answer_sequence_decodes_with_huffman_and_eviction() {
        let mut decoder = Decoder::new(256);
        let first = [
            0x48, 0x82, 0x64, 0x02, 0x58, 0x85, 0xae, 0xc3, 0x77, 0x1a, 0x4b, 0x61, 0x96, 0xd0,
            0x7a, 0xbe, 0x94, 0x10, 0x54, 0xd4, 0x44, 0xa8, 0x20, 0x05, 0x95, 0x04, 0x0b, 0x81,
            0x66, 0xe0, 0x82, 0xa6, 0x2d, 0x1b, 0xff, 0x6e, 0x91, 0x9d, 0x29, 0xad, 0x17, 0x18,
            0x63, 0xc7, 0x8f, 0x0b, 0x97, 0xc8, 0xe9, 0xae, 0x82, 0xae, 0x43, 0xd3,
        ];
        let second = [0x48, 0x83, 0x64, 0x0e, 0xff, 0xc1, 0xc0, 0xbf];
        let third = [
            0x88, 0xc1, 0x61, 0x96, 0xd0, 0x7a, 0xbe, 0x94, 0x10, 0x54, 0xd4, 0x44, 0xa8, 0x20,
            0x05, 0x95, 0x04, 0x0b, 0x81, 0x66, 0xe0, 0x84, 0xa6, 0x2d, 0x1b, 0xff, 0xc0, 0x5a,
            0x83, 0x9b, 0xd9, 0xab, 0x77, 0xad, 0x94, 0xe7, 0x82, 0x1d, 0xd7, 0xf2, 0xe6, 0xc7,
            0xb3, 0x35, 0xdf, 0xdf, 0xcd, 0x5b, 0x39, 0x60, 0xd5, 0xaf, 0x27, 0x08, 0x7f, 0x36,
            0x72, 0xc1, 0xab, 0x27, 0x0f, 0xb5, 0x29, 0x1f, 0x95, 0x87, 0x31, 0x60, 0x65, 0xc0,
            0x03, 0xed, 0x4e, 0xe5, 0xb1, 0x06, 0x3d, 0x50, 0x07,
        ];
        let date = "Mon, 21 Oct 2013 20:13:21 GMT";
        let location = ("location", "https://www.example.com");
        assert_eq!(
            ours(&mut decoder, &first),
            Ok(fields(&[
                (":status", "302"),
                ("cache-control", "private"),
                ("date", date),
                location,
            ]))
        );
        assert_eq!(
            ours(&mut decoder, &second),
            Ok(fields(&[
                (":status", "307"),
                ("cache-control", "private"),
                ("date", date),
                location,
            ]))
        );
        assert_eq!(
            ours(&mut decoder, &third),
            Ok(fields(&[
                (":status", "200"),
                ("cache-control", "private"),
                ("date", "Mon, 21 Oct 2013 20:13:22 GMT"),
                location,
                ("content-encoding", "gzip"),
                (
                    "set-cookie",
                    "foo=ASDJKHQKBZXOQWEOPIUAXQWEOIU; max-age=3600; version=1"
                ),
            ]))
        );
        // What §C.6.3 leaves in the table, newest first.
        let table: Vec<_> = decoder.table.iter().map(|e| e.name.clone()).collect();
        assert_eq!(table, [&b"set-cookie"[..], b"content-encoding", b"date"]);
        assert_eq!(decoder.size, 215);
    }

    #[test]
    fn blocks_from_another_encoder_decode_across_a_connection() {
        let mut encoder = loona_hpack::Encoder::new();
        let mut decoder = Decoder::new(TABLE_SIZE);
        for i in 0..200 {
            let id = format!("request-{i}");
            let block = encoder.encode([
                (&b":status"[..], &b"200"[..]),
                (b"x-amz-request-id", id.as_bytes()),
                (b"vary", b"Origin"),
            ]);
            assert_eq!(
                ours(&mut decoder, &block),
                Ok(fields(&[
                    (":status", "200"),
                    ("x-amz-request-id", &id),
                    ("vary", "Origin")
                ])),
                "answer {i}"
            );
            assert!(decoder.size <= TABLE_SIZE);
        }
    }

    #[test]
    fn malformed_blocks_are_errors() {
        let cases: [(&[u8], HpackError); 7] = [
            (&[0x80], HpackError::Index(0)),
            (&[0xbe], HpackError::Index(62)),
            (&[0x00, 0x03, b'a'], HpackError::Truncated),
            (&[0x0f], HpackError::Truncated),
            (&[0x0f, 0xff, 0xff, 0xff, 0xff, 0xff], HpackError::Integer),
            // A Huffman string of all ones: EOS, which no string may hold (§5.2).
            (&[0x04, 0x84, 0xff, 0xff, 0xff, 0xff], HpackError::Huffman),
            (&[0x82, 0x3f, 0xe1, 0x1f], HpackError::SizeUpdate(4096)),
        ];
        for (block, error) in cases {
            assert_eq!(
                ours(&mut Decoder::new(TABLE_SIZE), block),
                Err(error),
                "{block:x?}"
            );
        }
        let mut small = Decoder::new(100);
        assert_eq!(
            ours(&mut small, &[0x3f, 0x46]),
            Err(HpackError::SizeUpdate(101))
        );
        // Two updates may open a block (§4.2), not follow a field.
        assert_eq!(
            ours(&mut small, &[0x20, 0x3f, 0x45, 0x82]),
            Ok(fields(&[(":method", "GET")]))
        );
    }
}
