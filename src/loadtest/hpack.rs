//! HPACK (RFC 7541) for the load generator's h2 client: request header blocks encoded before
//! the run up to what only a connection's table decides, answer header blocks decoded as they
//! arrive.
//!
//! Requests: a server decodes a field it has in its table far more cheaply than a literal, so the
//! fields that more than one pooled request carries (the authority, `:method OPTIONS`, the
//! origin, a repeated path...) get an id before the run ([`pool_blocks`]), most frequent first,
//! with both literal forms encoded. Each connection's [`Encoder`] inserts an id's field the first
//! time it sends it, as long as the table the server allows has room, and sends it by index
//! afterwards; nothing is ever evicted by an insertion, so an entry's index is known from the
//! insertions made since, without a table of names and values. Fields in the static table
//! (`:method GET`, `:scheme`, `:path /`) are indexed there; the other fields are literals without
//! indexing, their names by static index where the table has them, their strings plain rather
//! than Huffman-coded: per request, encoding copies bytes and writes a few indexes.

//! Answers: [`Decoder`] keeps the connection's dynamic table and hands each field to a callback
//! as byte slices, borrowed from the block, the table or a scratch buffer. Huffman-coded strings
//! go through `httlib-huffman`'s table-driven decoder: `loona-hpack` builds a hash map of the
//! whole code for every Huffman string it decodes, which made the generator's CPU per request
//! against a server that Huffman-codes fresh values (a `date`, a request id) many times the
//! server's own. The table's entries are reused as they are evicted, so a steady run allocates
//! nothing here.

use std::collections::{HashMap, VecDeque};

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
#[cfg(test)]
const METHOD_GET: u8 = 0x80 | 2;
#[cfg(test)]
const SCHEME_HTTP: u8 = 0x80 | 6;

/// At most this many repeated fields get an id: no more entries of 32 bytes or more fit in the
/// default table, and the per-connection state stays a few hundred bytes.
const MAX_REPEATED: usize = TABLE_SIZE / ENTRY_OVERHEAD;
/// An id's slot in [`Encoder`] while the field is not in the table.
const NOT_INSERTED: u64 = u64::MAX;

/// A field that more than one pooled request carries, in both of the forms a connection may
/// send it in before it is in the table.
struct Repeat {
    /// Literal with incremental indexing (§6.2.1).
    indexing: Vec<u8>,
    /// Literal without indexing (§6.2.2), for when the table has no room for it.
    plain: Vec<u8>,
    /// Its size in the dynamic table (§4.1).
    size: usize,
}

/// The repeated fields of a pool, by id, most frequent first; shared by every connection.
pub(crate) struct Repeated {
    fields: Vec<Repeat>,
}

/// A run of a block: bytes sent as they are, or a repeated field.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Part {
    Bytes { start: u32, end: u32 },
    Repeat(u16),
}

/// One pooled request's header block, encoded before the run up to the choices only a
/// connection's table can make.
pub(crate) struct Block {
    /// The forms of the fields that need no table: fully indexed in the static table, or
    /// literals without indexing.
    bytes: Vec<u8>,
    parts: Vec<Part>,
}

/// The fields of a request without body, in the order they are sent. `headers` are lower-case
/// names (h2 forbids upper case) other than the pseudo-headers.
pub(crate) fn request_fields<'a>(
    method: &'a [u8],
    https: bool,
    authority: &'a [u8],
    path: &'a [u8],
    headers: impl IntoIterator<Item = (&'a [u8], &'a [u8])>,
) -> Vec<(Vec<u8>, Vec<u8>)> {
    let scheme: &[u8] = if https { b"https" } else { b"http" };
    let pseudo = [
        (&b":method"[..], method),
        (b":scheme", scheme),
        (b":authority", authority),
        (b":path", path),
    ];
    pseudo
        .into_iter()
        .chain(headers)
        .map(|(n, v)| (n.to_vec(), v.to_vec()))
        .collect()
}

/// Encodes a pool's requests (each its fields, as [`request_fields`] gives them): the fields
/// that more than one request carries get an id, and each request a [`Block`] to send with
/// a connection's [`Encoder`].
pub(crate) fn pool_blocks(requests: &[Vec<(Vec<u8>, Vec<u8>)>]) -> (Repeated, Vec<Block>) {
    /// A field as counted over the pool.
    struct Seen {
        /// Requests carrying it.
        requests: usize,
        /// Fields seen before it: ties go to the first seen, so that ids do not depend on a
        /// hash map's order.
        first: usize,
        /// The last request counted, so that a request carrying it twice counts once.
        last: usize,
    }
    let mut seen: HashMap<(&[u8], &[u8]), Seen> = HashMap::new();
    for (r, fields) in requests.iter().enumerate() {
        for (name, value) in fields {
            if static_index(name, value).is_some() {
                continue;
            }
            let first = seen.len();
            let e = seen.entry((&name[..], &value[..])).or_insert(Seen {
                requests: 0,
                first,
                last: usize::MAX,
            });
            if e.last != r {
                e.requests += 1;
                e.last = r;
            }
        }
    }
    let mut candidates: Vec<_> = seen
        .into_iter()
        .filter(|((n, v), seen)| {
            seen.requests > 1 && n.len() + v.len() + ENTRY_OVERHEAD <= TABLE_SIZE
        })
        .collect();
    candidates.sort_by_key(|(_, seen)| (std::cmp::Reverse(seen.requests), seen.first));
    candidates.truncate(MAX_REPEATED);
    let mut ids = HashMap::new();
    let mut fields = Vec::with_capacity(candidates.len());
    for (id, ((name, value), _)) in candidates.into_iter().enumerate() {
        let mut indexing = Vec::new();
        literal(&mut indexing, Indexing::Incremental, name, value);
        let mut plain = Vec::new();
        literal(&mut plain, Indexing::Without, name, value);
        fields.push(Repeat {
            indexing,
            plain,
            size: name.len() + value.len() + ENTRY_OVERHEAD,
        });
        ids.insert((name, value), id as u16);
    }
    let blocks = requests
        .iter()
        .map(|request| {
            let mut block = Block {
                bytes: Vec::with_capacity(128),
                parts: Vec::new(),
            };
            for (name, value) in request {
                if let Some(&id) = ids.get(&(&name[..], &value[..])) {
                    block.parts.push(Part::Repeat(id));
                    continue;
                }
                let start = block.bytes.len() as u32;
                match static_index(name, value) {
                    Some(i) => integer(&mut block.bytes, 0x80, 7, i),
                    None => literal(&mut block.bytes, Indexing::Without, name, value),
                }
                let end = block.bytes.len() as u32;
                // Consecutive fields that need no table go out as one copy.
                match block.parts.last_mut() {
                    Some(Part::Bytes { end: last, .. }) if *last == start => *last = end,
                    _ => block.parts.push(Part::Bytes { start, end }),
                }
            }
            block
        })
        .collect();
    (Repeated { fields }, blocks)
}

/// The encoding side of one connection's HPACK context. Entries are only ever added while they
/// fit, so none is evicted by an insertion and an entry's index follows from the insertions
/// made after it; only a lower table size from the server evicts, and then the oldest first,
/// as the decoder does.
pub(crate) struct Encoder {
    /// Per id, the number of its insertion, or [`NOT_INSERTED`].
    inserted: Vec<u64>,
    /// The ids in the table, oldest first, with their sizes.
    order: VecDeque<(u16, usize)>,
    /// Insertions made so far: a server that lowers and raises the table size again and again
    /// has fields inserted again, so this is not bounded by the number of ids.
    insertions: u64,
    used: usize,
    /// The table size the server's decoder knows, as last signalled (or its default).
    max: usize,
    /// The server's SETTINGS arrived: until they do, its table size is unknown.
    ready: bool,
    /// A dynamic table size update owed at the start of the next block: the lowest size since
    /// the last block, and the last (§4.2).
    update: Option<(usize, usize)>,
}

impl Default for Encoder {
    fn default() -> Self {
        Encoder::new()
    }
}

impl Encoder {
    pub(crate) fn new() -> Encoder {
        Encoder {
            inserted: Vec::new(),
            order: VecDeque::new(),
            insertions: 0,
            used: 0,
            max: TABLE_SIZE,
            ready: false,
            update: None,
        }
    }

    /// The server's SETTINGS frame arrived (after its SETTINGS_HEADER_TABLE_SIZE, if any, went
    /// to [`Encoder::table_size`]).
    pub(crate) fn settings_received(&mut self) {
        self.ready = true;
    }

    /// The server's SETTINGS_HEADER_TABLE_SIZE. A larger table than the default is not used;
    /// a smaller one is signalled at the start of the next block, evicting what no longer fits.
    pub(crate) fn table_size(&mut self, allowed: u32) {
        let target = usize::try_from(allowed).map_or(TABLE_SIZE, |a| a.min(TABLE_SIZE));
        if target == self.max && self.update.is_none() {
            return;
        }
        let low = self.update.map_or(target, |(low, _)| low.min(target));
        self.update = Some((low, target));
        self.max = target;
        while self.used > low {
            let Some((id, size)) = self.order.pop_front() else {
                break;
            };
            self.inserted[usize::from(id)] = NOT_INSERTED;
            self.used -= size;
        }
    }

    /// Appends `block`'s header block to `out`: a repeated field in the table by its index, one
    /// not yet there inserted if it fits, else as a literal without indexing.
    pub(crate) fn encode(&mut self, repeated: &Repeated, block: &Block, out: &mut Vec<u8>) {
        if let Some((low, last)) = self.update.take() {
            integer(out, 0x20, 5, low);
            if last != low {
                integer(out, 0x20, 5, last);
            }
        }
        if self.inserted.len() < repeated.fields.len() {
            self.inserted.resize(repeated.fields.len(), NOT_INSERTED);
        }
        for &part in &block.parts {
            let id = match part {
                Part::Bytes { start, end } => {
                    out.extend_from_slice(&block.bytes[start as usize..end as usize]);
                    continue;
                }
                Part::Repeat(id) => usize::from(id),
            };
            let field = &repeated.fields[id];
            let at = self.inserted[id];
            if at != NOT_INSERTED {
                // §6.1: the newest entry is dynamic index 62.
                integer(out, 0x80, 7, 62 + (self.insertions - 1 - at) as usize);
            } else if self.ready && self.used + field.size <= self.max {
                out.extend_from_slice(&field.indexing);
                self.inserted[id] = self.insertions;
                self.insertions += 1;
                self.used += field.size;
                self.order.push_back((id as u16, field.size));
            } else {
                out.extend_from_slice(&field.plain);
            }
        }
    }
}

/// Whether a literal adds its field to the dynamic table.
#[derive(Clone, Copy)]
enum Indexing {
    /// §6.2.1: pattern 01, the name's index on a 6-bit prefix.
    Incremental,
    /// §6.2.2: pattern 0000, the name's index on a 4-bit prefix.
    Without,
}

/// The static table's index of the whole field, for the fields it has with a value (entries 2
/// to 16 are the only ones with one).
fn static_index(name: &[u8], value: &[u8]) -> Option<usize> {
    if value.is_empty() {
        return None;
    }
    (2..=16).find(|&i| STATIC_NAMES[i - 1] == name && static_value(i) == value)
}

/// A literal field, its name by static index where the table has the name, its strings plain
/// rather than Huffman-coded.
fn literal(out: &mut Vec<u8>, indexing: Indexing, name: &[u8], value: &[u8]) {
    let (flags, prefix) = match indexing {
        Indexing::Incremental => (0x40, 6),
        Indexing::Without => (0x00, 4),
    };
    match STATIC_NAMES.iter().position(|n| *n == name) {
        Some(i) => integer(out, flags, prefix, i + 1),
        None => {
            out.push(flags);
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

    type Pool = Vec<Fields>;

    /// A preflight for `path` from `origin`, with the fields every one of them shares.
    fn preflight(path: &str, origin: &str, headers: &str) -> Fields {
        let headers = [
            (&b"origin"[..], origin.as_bytes()),
            (b"access-control-request-method", b"PUT"),
            (b"access-control-request-headers", headers.as_bytes()),
            (b"user-agent", b"corsgate"),
        ];
        request_fields(
            b"OPTIONS",
            true,
            b"bucket.example.com:8443",
            path.as_bytes(),
            headers,
        )
    }

    /// One connection over the blocks of `pool`: our encoder, and the server's decoder twice
    /// (loona-hpack's, and [`Decoder`]), allowing a table of `server_table` bytes.
    struct Link {
        encoder: Encoder,
        loona: loona_hpack::Decoder<'static>,
        ours: Decoder,
        repeated: Repeated,
        blocks: Vec<Block>,
        pool: Pool,
    }

    impl Link {
        fn new(pool: Pool, server_table: usize) -> Link {
            let (repeated, blocks) = pool_blocks(&pool);
            let mut loona = loona_hpack::Decoder::new();
            loona.set_max_allowed_table_size(server_table);
            Link {
                encoder: Encoder::new(),
                loona,
                ours: Decoder::new(server_table),
                repeated,
                blocks,
                pool,
            }
        }

        /// Encodes `order` (indexes into the pool), each block decoded by both decoders as one
        /// server connection would and checked against the request's fields. Returns the blocks.
        fn send(&mut self, order: impl IntoIterator<Item = usize>) -> Vec<Vec<u8>> {
            order
                .into_iter()
                .map(|i| {
                    let mut out = vec![0xff];
                    self.encoder
                        .encode(&self.repeated, &self.blocks[i], &mut out);
                    // Appended after what the buffer held, which stays as it was.
                    assert_eq!(out[0], 0xff);
                    let block = out.split_off(1);
                    assert_eq!(
                        decoded(&mut self.loona, &block),
                        self.pool[i],
                        "request {i}"
                    );
                    assert_eq!(ours(&mut self.ours, &block).as_ref(), Ok(&self.pool[i]));
                    assert!(self.encoder.used <= self.encoder.max);
                    block
                })
                .collect()
        }
    }

    #[test]
    fn repeated_fields_get_ids_most_frequent_first() {
        let pool = vec![
            preflight("/a", "https://one.example", "x-a"),
            preflight("/b", "https://two.example", "x-a"),
            preflight("/a", "https://one.example", "x-b"),
            request_fields(b"GET", false, b"bucket.example.com:8443", b"/", []),
        ];
        let (repeated, blocks) = pool_blocks(&pool);
        // The authority is in four; then, in the order first seen, OPTIONS, PUT and the
        // user-agent in three; `/a`, the first origin and `x-a` in two.
        assert_eq!(repeated.fields.len(), 7);
        let ids = |b: &Block| -> Vec<Option<u16>> {
            b.parts
                .iter()
                .map(|p| match p {
                    Part::Repeat(id) => Some(*id),
                    Part::Bytes { .. } => None,
                })
                .collect()
        };
        // :method OPTIONS, :scheme https (static), :authority, :path, origin, method, headers,
        // user-agent.
        let first = ids(&blocks[0]);
        assert_eq!(
            first,
            [
                Some(1),
                None,
                Some(0),
                Some(4),
                Some(5),
                Some(2),
                Some(6),
                Some(3)
            ]
        );
        // `:path /b` and the second origin are not repeated: one run of bytes.
        assert_eq!(ids(&blocks[1])[3], None);
        assert_eq!(ids(&blocks[1]).len(), 7);
        // GET, http and `/` are in the static table: only the authority is left.
        assert_eq!(ids(&blocks[3]), [None, Some(0), None]);
        assert_eq!(blocks[3].bytes, [METHOD_GET, SCHEME_HTTP, 0x80 | 4]);
    }

    #[test]
    fn a_connection_indexes_what_repeats_and_every_block_decodes() {
        let long = "x".repeat(300);
        let pool: Pool = (0..6)
            .map(|i| {
                preflight(
                    &format!("/bucket/key{}", i % 3),
                    "https://app.example.com",
                    &long,
                )
            })
            .collect();
        let mut link = Link::new(pool, TABLE_SIZE);
        // Before the server's SETTINGS: nothing is inserted, so every block stands alone.
        let early = link.send([0, 1]);
        for (block, i) in early.iter().zip([0, 1]) {
            assert_eq!(
                decoded(&mut loona_hpack::Decoder::new(), block),
                link.pool[i]
            );
        }
        assert_eq!(link.encoder.used, 0);
        link.encoder.settings_received();
        let first = link.send(0..6);
        let again = link.send((0..6).rev());
        // Once in the table, every field but `:scheme` (static) is one byte.
        assert!(first[0].len() > long.len());
        for block in &again {
            assert_eq!(block.len(), 8, "{block:x?}");
        }
    }

    #[test]
    fn fields_past_a_full_table_go_without_indexing() {
        // `:authority a` (43 bytes in the table's terms) in every request, then 60 fields of
        // 137, each in two requests.
        let value = "v".repeat(100);
        let pool: Pool = (0..120)
            .map(|i| {
                let name = format!("x-f{:02}", i % 60);
                request_fields(
                    b"GET",
                    false,
                    b"a",
                    b"/",
                    [(name.as_bytes(), value.as_bytes())],
                )
            })
            .collect();
        for allowed in [TABLE_SIZE, 1000, 43 + 137, 43 + 136, 42] {
            let mut link = Link::new(pool.clone(), allowed);
            link.encoder.table_size(allowed as u32);
            link.encoder.settings_received();
            let sent = link.send((0..120).chain(0..120));
            let encoder = &link.encoder;
            // The authority, inserted first, and as many of the others as fit after it.
            let fit = if allowed >= 43 {
                1 + (allowed - 43) / 137
            } else {
                0
            };
            assert_eq!(encoder.order.len(), fit, "table of {allowed}");
            assert!(encoder.used + 137 > allowed, "table of {allowed} not full");
            // The first request again: GET, http and `/` static; the authority and `x-f00`
            // indexed where they were inserted, a 3- and a 108-byte literal where not.
            let want = match fit {
                0 => 3 + 3 + 108,
                1 => 3 + 1 + 108,
                _ => 3 + 1 + 1,
            };
            assert_eq!(sent[120].len(), want, "table of {allowed}");
        }
    }

    #[test]
    fn a_table_size_of_zero_inserts_nothing() {
        let pool: Pool = (0..4)
            .map(|i| preflight(&format!("/k{}", i % 2), "https://app.example.com", "x-a"))
            .collect();
        let mut link = Link::new(pool.clone(), 0);
        link.encoder.table_size(0);
        link.encoder.settings_received();
        let sent = link.send((0..4).cycle().take(12));
        // The first block tells the server the table is now empty (§4.2), the others stand
        // alone.
        assert_eq!(sent[0][0], 0x20);
        for (k, block) in sent.iter().enumerate().skip(1) {
            assert_ne!(block[0] & 0xe0, 0x20);
            assert_eq!(
                decoded(&mut loona_hpack::Decoder::new(), block),
                pool[k % 4]
            );
        }
        assert_eq!(link.encoder.used, 0);
    }

    #[test]
    fn a_lower_table_size_is_signalled_and_evicts_the_oldest() {
        let pool: Pool = (0..4)
            .map(|i| preflight(&format!("/k{}", i % 2), "https://app.example.com", "x-a"))
            .collect();
        let mut link = Link::new(pool, TABLE_SIZE);
        link.encoder.settings_received();
        link.send(0..4);
        let full = link.encoder.used;
        // Lower than what is used: one update, the oldest entries gone, the rest still used.
        link.encoder.table_size(100);
        assert!(link.encoder.used <= 100 && link.encoder.used > 0);
        let sent = link.send(0..4);
        assert_eq!(sent[0][..2], [0x3f, 100 - 31]);
        assert_ne!(sent[1][0] & 0xe0, 0x20);
        // Lowered then raised before the next block: the lowest, then the last (§4.2).
        link.encoder.table_size(50);
        link.encoder.table_size(8192);
        let sent = link.send(0..4);
        assert_eq!(sent[0][..5], [0x3f, 50 - 31, 0x3f, 0xe1, 0x1f]);
        assert_eq!(link.encoder.used, full);
        // A size equal to the one in use needs no update.
        link.encoder.table_size(TABLE_SIZE as u32);
        assert_ne!(link.send(0..4)[0][0] & 0xe0, 0x20);
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
