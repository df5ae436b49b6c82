//! The h2 client of the load generator: one connection, many concurrent streams, driven by the
//! one task that owns it. Requests go out as header blocks encoded before the run and finished
//! in the write buffer by the connection's HPACK table ([`super::hpack::Encoder`]), several
//! HEADERS frames to a write; answers are read frame by frame, their header blocks decoded
//! ([`super::hpack::Decoder`]) into a per-stream buffer that the checker reads as byte slices.
//!
//! The `h2` crate's client costs a task, a `Request`, a `HeaderMap` clone and a parsed
//! `HeaderMap` per request, and keeps streams behind locks; the generator must cost less per
//! request than the servers it loads, so it speaks the little of HTTP/2 a client without request
//! bodies needs (RFC 9113), itself.
//!
//! Everything the server sends is checked before it is used: a frame that breaks the protocol is
//! an error of the connection ([`H2Error`]), never a panic. This module does no timing of its own
//! beyond the deadlines it is given, and knows nothing of tickets: a stream carries an opaque tag.

use std::collections::VecDeque;
use std::time::Instant;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

use super::hpack::{self, HpackError};

const PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
const FRAME_HEAD: usize = 9;
/// Largest frame payload accepted: the protocol's default, which the client does not raise
/// (answers are small, and a larger frame would only grow the read buffer).
const MAX_FRAME: usize = 16_384;
/// Receive windows advertised, per stream and for the connection: large enough that a server is
/// never held back by the client, so that WINDOW_UPDATEs are rare.
const STREAM_WINDOW: u32 = (1 << 30) - 1;
const CONNECTION_WINDOW: u32 = (1 << 30) - 1;
/// Every window's size before SETTINGS or WINDOW_UPDATE change it (RFC 9113 §6.9.2).
const DEFAULT_WINDOW: u32 = 65_535;
const MAX_WINDOW: u32 = (1 << 31) - 1;
/// Largest header block, and largest total of an answer's decoded fields, accepted.
const MAX_HEADER_BLOCK: usize = 64 * 1024;
/// Read buffer: a whole largest frame always fits after compaction, with room for a few more.
const READ_BUF: usize = 64 * 1024;
const LARGEST_STREAM_ID: u32 = (1 << 31) - 1;

mod frame {
    pub(super) const DATA: u8 = 0x0;
    pub(super) const HEADERS: u8 = 0x1;
    pub(super) const PRIORITY: u8 = 0x2;
    pub(super) const RST_STREAM: u8 = 0x3;
    pub(super) const SETTINGS: u8 = 0x4;
    pub(super) const PUSH_PROMISE: u8 = 0x5;
    pub(super) const PING: u8 = 0x6;
    pub(super) const GOAWAY: u8 = 0x7;
    pub(super) const WINDOW_UPDATE: u8 = 0x8;
    pub(super) const CONTINUATION: u8 = 0x9;
}

mod flag {
    pub(super) const END_STREAM: u8 = 0x1;
    pub(super) const ACK: u8 = 0x1;
    pub(super) const END_HEADERS: u8 = 0x4;
    pub(super) const PADDED: u8 = 0x8;
    pub(super) const PRIORITY: u8 = 0x20;
}

mod setting {
    pub(super) const HEADER_TABLE_SIZE: u16 = 0x1;
    pub(super) const ENABLE_PUSH: u16 = 0x2;
    pub(super) const MAX_CONCURRENT_STREAMS: u16 = 0x3;
    pub(super) const INITIAL_WINDOW_SIZE: u16 = 0x4;
    pub(super) const MAX_FRAME_SIZE: u16 = 0x5;
}

/// RST_STREAM and GOAWAY error codes the client reads or sends (RFC 9113 §7).
const REFUSED_STREAM: u32 = 0x7;
const CANCEL: u32 = 0x8;

/// Why a connection failed; every stream still open on it failed with it.
#[derive(Debug, thiserror::Error)]
pub(crate) enum H2Error {
    #[error("the server closed the connection")]
    Closed,
    #[error("the server broke the HTTP/2 protocol: {0}")]
    Protocol(&'static str),
    #[error("the server sent a {0}-byte frame, over the {MAX_FRAME} bytes the client accepts")]
    FrameSize(usize),
    #[error("the server sent more DATA than the flow-control window allowed")]
    FlowControl,
    #[error("the server's header block does not decode: {0}")]
    Hpack(#[from] HpackError),
    #[error("i/o error: {0}")]
    Io(std::io::Error),
}

impl From<std::io::Error> for H2Error {
    fn from(e: std::io::Error) -> H2Error {
        use std::io::ErrorKind::{BrokenPipe, ConnectionAborted, ConnectionReset, UnexpectedEof};
        match e.kind() {
            BrokenPipe | ConnectionReset | ConnectionAborted | UnexpectedEof => H2Error::Closed,
            _ => H2Error::Io(e),
        }
    }
}

/// Why one stream got no answer, its connection being fine.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum StreamError {
    /// The server did not process the request (REFUSED_STREAM, or a stream above GOAWAY's last
    /// stream id): it may be sent again.
    Refused,
    /// The server reset the stream with this error code.
    Reset(u32),
    /// No complete answer before the stream's deadline; the client cancelled it.
    TimedOut,
}

/// A complete answer, borrowed from its stream until the next call that opens a stream.
pub(crate) struct Reply<'a> {
    pub(crate) status: u16,
    /// Body bytes received (all of them, not only those kept).
    pub(crate) received: u64,
    /// The first body bytes, up to the connection's `keep`.
    pub(crate) body: &'a [u8],
    fields: &'a [u8],
    spans: &'a [[u32; 3]],
}

impl<'a> Reply<'a> {
    /// The answer's header fields, pseudo-headers left out.
    pub(crate) fn fields(&self) -> impl Iterator<Item = (&'a [u8], &'a [u8])> + 'a {
        let (fields, spans) = (self.fields, self.spans);
        spans.iter().map(move |&[n, v, end]| {
            (
                &fields[n as usize..v as usize],
                &fields[v as usize..end as usize],
            )
        })
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum State {
    Free,
    Open,
    Ended(Result<(), StreamError>),
}

/// One stream and the buffers its answer is gathered in; reused by the streams that follow.
struct Slot<T> {
    id: u32,
    state: State,
    tag: Option<T>,
    deadline: Instant,
    /// The final status; 0 until the answer's (non-1xx) HEADERS.
    status: u16,
    /// Names and values of the answer's fields, back to back, and where each starts and ends.
    fields: Vec<u8>,
    spans: Vec<[u32; 3]>,
    body: Vec<u8>,
    received: u64,
    /// What the server may still send on the stream, and what was read but not yet given back.
    window: i64,
    unacked: u32,
}

/// Where a stream id stands, from the client's side.
enum Lookup {
    /// Open, in this slot.
    Live(usize),
    /// Opened once, now over (answered, reset or cancelled): late frames are dropped.
    Closed,
    /// Never opened by the client: nothing may arrive on it.
    Idle,
}

/// The protocol state of a connection, apart from its I/O.
struct Proto<T> {
    slots: Vec<Slot<T>>,
    free: Vec<usize>,
    ended: VecDeque<usize>,
    open: usize,
    /// Concurrent streams wanted, and the most the server allows.
    limit: usize,
    peer_max_streams: u32,
    peer_max_frame: usize,
    next_id: u32,
    /// The last stream id of a GOAWAY received.
    goaway: Option<u32>,
    decoder: hpack::Decoder,
    /// The requests' side of HPACK: which repeated fields the server's table holds.
    encoder: hpack::Encoder,
    /// A block too large for one frame, while it is cut into frames.
    oversized: Vec<u8>,
    /// A header block spread over HEADERS and CONTINUATION frames, and its stream (0 for none).
    block: Vec<u8>,
    block_stream: u32,
    block_end_stream: bool,
    /// Connection receive window left, and what was read but not yet given back.
    window: i64,
    unacked: u32,
    stream_window: u32,
    keep: usize,
    /// Frames to send at the next flush.
    out: Vec<u8>,
}

/// One h2 connection over `S`, whose streams carry tags `T`.
pub(crate) struct H2<S, T> {
    io: S,
    buf: Vec<u8>,
    start: usize,
    end: usize,
    proto: Proto<T>,
}

impl<S: AsyncRead + AsyncWrite + Unpin, T> H2<S, T> {
    /// A connection keeping up to `streams` streams open, each answer's body kept up to `keep`
    /// bytes. The preface and SETTINGS go out with the first flush, ahead of the first requests.
    pub(crate) fn new(io: S, streams: usize, keep: usize) -> H2<S, T> {
        H2::with_windows(io, streams, keep, STREAM_WINDOW, CONNECTION_WINDOW)
    }

    fn with_windows(
        io: S,
        streams: usize,
        keep: usize,
        stream_window: u32,
        connection_window: u32,
    ) -> H2<S, T> {
        let mut proto = Proto {
            slots: Vec::with_capacity(streams),
            free: Vec::with_capacity(streams),
            ended: VecDeque::with_capacity(streams),
            open: 0,
            limit: streams.max(1),
            // Unlimited until the server's SETTINGS say otherwise (RFC 9113 §6.5.2); a stream
            // over its limit comes back refused and is sent again.
            peer_max_streams: u32::MAX,
            peer_max_frame: MAX_FRAME,
            next_id: 1,
            goaway: None,
            decoder: hpack::Decoder::new(hpack::TABLE_SIZE),
            encoder: hpack::Encoder::new(),
            oversized: Vec::new(),
            block: Vec::new(),
            block_stream: 0,
            block_end_stream: false,
            window: i64::from(connection_window.max(DEFAULT_WINDOW)),
            unacked: 0,
            stream_window,
            keep,
            out: Vec::with_capacity(4096),
        };
        proto.out.extend_from_slice(PREFACE);
        let settings = [
            (setting::ENABLE_PUSH, 0),
            (setting::INITIAL_WINDOW_SIZE, stream_window),
        ];
        proto.frame_head(settings.len() * 6, frame::SETTINGS, 0, 0);
        for (id, value) in settings {
            proto.out.extend_from_slice(&id.to_be_bytes());
            proto.out.extend_from_slice(&value.to_be_bytes());
        }
        if connection_window > DEFAULT_WINDOW {
            proto.window_update(0, connection_window - DEFAULT_WINDOW);
        }
        H2 {
            io,
            buf: vec![0; READ_BUF],
            start: 0,
            end: 0,
            proto,
        }
    }

    /// Whether a stream may be opened now: under both limits, and no GOAWAY received.
    pub(crate) fn can_open(&self) -> bool {
        let p = &self.proto;
        p.open < p.limit
            && (p.open as u64) < u64::from(p.peer_max_streams)
            && p.goaway.is_none()
            && p.next_id <= LARGEST_STREAM_ID
    }

    /// Streams open (sent and not yet ended).
    pub(crate) fn in_flight(&self) -> usize {
        self.proto.open
    }

    /// The server sent GOAWAY (or the stream ids ran out): no stream will be opened any more.
    pub(crate) fn going_away(&self) -> bool {
        self.proto.goaway.is_some() || self.proto.next_id > LARGEST_STREAM_ID
    }

    /// Queues a request without body as a new stream, its header block encoded with this
    /// connection's table (every block of a connection must come from the same `repeated`);
    /// sent at the next flush. Call only when [`H2::can_open`].
    pub(crate) fn open(
        &mut self,
        repeated: &hpack::Repeated,
        block: &hpack::Block,
        tag: T,
        deadline: Instant,
    ) {
        self.proto.open_stream(repeated, block, tag, deadline);
    }

    /// Writes every frame queued.
    pub(crate) async fn flush(&mut self) -> Result<(), H2Error> {
        if self.proto.out.is_empty() {
            return Ok(());
        }
        self.io.write_all(&self.proto.out).await?;
        self.io.flush().await?;
        self.proto.out.clear();
        Ok(())
    }

    /// Reads once from the server and handles every complete frame read. Cancel-safe: nothing
    /// is lost when the future is dropped before it completes.
    pub(crate) async fn read(&mut self) -> Result<(), H2Error> {
        if self.buf.len() - self.end < MAX_FRAME {
            self.buf.copy_within(self.start..self.end, 0);
            self.end -= self.start;
            self.start = 0;
        }
        let n = self.io.read(&mut self.buf[self.end..]).await?;
        if n == 0 {
            return Err(H2Error::Closed);
        }
        self.end += n;
        self.frames()
    }

    /// Handles the complete frames in the buffer.
    fn frames(&mut self) -> Result<(), H2Error> {
        loop {
            if self.end - self.start < FRAME_HEAD {
                break;
            }
            let head = &self.buf[self.start..self.start + FRAME_HEAD];
            let len = usize::from(head[0]) << 16 | usize::from(head[1]) << 8 | usize::from(head[2]);
            if len > MAX_FRAME {
                return Err(H2Error::FrameSize(len));
            }
            let (kind, flags) = (head[3], head[4]);
            let stream = u32::from_be_bytes([head[5], head[6], head[7], head[8]]) & 0x7fff_ffff;
            let body = self.start + FRAME_HEAD;
            if self.end - body < len {
                break;
            }
            self.proto
                .on_frame(kind, flags, stream, &self.buf[body..body + len])?;
            self.start = body + len;
        }
        if self.start == self.end {
            self.start = 0;
            self.end = 0;
        }
        Ok(())
    }

    /// The next stream that ended, answered or not, and its tag. Its slot is reused by a later
    /// [`H2::open`], which the borrow prevents while the answer is read.
    pub(crate) fn next_ended(&mut self) -> Option<(T, Result<Reply<'_>, StreamError>)> {
        let p = &mut self.proto;
        let i = p.ended.pop_front()?;
        let slot = &mut p.slots[i];
        let State::Ended(result) = std::mem::replace(&mut slot.state, State::Free) else {
            unreachable!("only ended streams are queued as ended")
        };
        p.free.push(i);
        let tag = slot
            .tag
            .take()
            .expect("a stream holds its tag until it is handed back");
        let result = result.map(|()| Reply {
            status: slot.status,
            received: slot.received,
            body: &slot.body,
            fields: &slot.fields,
            spans: &slot.spans,
        });
        Some((tag, result))
    }

    /// After a connection error: the tag of a stream still open, which will never end.
    pub(crate) fn abandon(&mut self) -> Option<T> {
        let p = &mut self.proto;
        let i = p.slots.iter().position(|s| s.state == State::Open)?;
        p.slots[i].state = State::Free;
        p.open -= 1;
        p.free.push(i);
        p.slots[i].tag.take()
    }

    /// Ends every stream whose deadline is past, and cancels it at the server.
    pub(crate) fn expire(&mut self, now: Instant) {
        let p = &mut self.proto;
        for i in 0..p.slots.len() {
            if p.slots[i].state == State::Open && p.slots[i].deadline <= now {
                let id = p.slots[i].id;
                p.end(i, Err(StreamError::TimedOut));
                p.rst_stream(id, CANCEL);
            }
        }
    }

    /// The earliest deadline of the open streams.
    pub(crate) fn earliest_deadline(&self) -> Option<Instant> {
        self.proto
            .slots
            .iter()
            .filter(|s| s.state == State::Open)
            .map(|s| s.deadline)
            .min()
    }
}

impl<T> Proto<T> {
    fn frame_head(&mut self, len: usize, kind: u8, flags: u8, stream: u32) {
        let len = len.to_be_bytes();
        let n = len.len();
        self.out.extend_from_slice(&len[n - 3..]);
        self.out.push(kind);
        self.out.push(flags);
        self.out.extend_from_slice(&stream.to_be_bytes());
    }

    fn window_update(&mut self, stream: u32, increment: u32) {
        self.frame_head(4, frame::WINDOW_UPDATE, 0, stream);
        self.out.extend_from_slice(&increment.to_be_bytes());
    }

    fn rst_stream(&mut self, stream: u32, code: u32) {
        self.frame_head(4, frame::RST_STREAM, 0, stream);
        self.out.extend_from_slice(&code.to_be_bytes());
    }

    fn open_stream(
        &mut self,
        repeated: &hpack::Repeated,
        block: &hpack::Block,
        tag: T,
        deadline: Instant,
    ) {
        let id = self.next_id;
        self.next_id += 2;
        let i = match self.free.pop() {
            Some(i) => i,
            None => {
                self.slots.push(Slot {
                    id,
                    state: State::Free,
                    tag: None,
                    deadline,
                    status: 0,
                    fields: Vec::with_capacity(512),
                    spans: Vec::with_capacity(16),
                    body: Vec::new(),
                    received: 0,
                    window: 0,
                    unacked: 0,
                });
                self.slots.len() - 1
            }
        };
        let slot = &mut self.slots[i];
        slot.id = id;
        slot.state = State::Open;
        slot.tag = Some(tag);
        slot.deadline = deadline;
        slot.status = 0;
        slot.fields.clear();
        slot.spans.clear();
        slot.body.clear();
        slot.received = 0;
        slot.window = i64::from(self.stream_window);
        slot.unacked = 0;
        self.open += 1;
        // The block is encoded in place after a frame head whose length is filled in after it.
        let head = self.out.len();
        self.frame_head(0, frame::HEADERS, flag::END_STREAM | flag::END_HEADERS, id);
        let start = self.out.len();
        self.encoder.encode(repeated, block, &mut self.out);
        let len = self.out.len() - start;
        if len <= self.peer_max_frame {
            self.out[head..head + 3].copy_from_slice(&(len as u32).to_be_bytes()[1..]);
            return;
        }
        // Larger than the server's frame size: cut into HEADERS and CONTINUATION frames.
        let mut block = std::mem::take(&mut self.oversized);
        block.clear();
        block.extend_from_slice(&self.out[start..]);
        self.out.truncate(head);
        let mut chunks = block.chunks(self.peer_max_frame.max(1));
        let first = chunks.next().unwrap_or_default();
        let rest = chunks.len();
        self.frame_head(first.len(), frame::HEADERS, flag::END_STREAM, id);
        self.out.extend_from_slice(first);
        for (k, chunk) in chunks.enumerate() {
            let end_headers = if k + 1 == rest { flag::END_HEADERS } else { 0 };
            self.frame_head(chunk.len(), frame::CONTINUATION, end_headers, id);
            self.out.extend_from_slice(chunk);
        }
        self.oversized = block;
    }

    fn lookup(&self, stream: u32) -> Lookup {
        match self
            .slots
            .iter()
            .position(|s| s.id == stream && s.state == State::Open)
        {
            Some(i) => Lookup::Live(i),
            None if stream % 2 == 1 && stream < self.next_id => Lookup::Closed,
            None => Lookup::Idle,
        }
    }

    fn end(&mut self, i: usize, result: Result<(), StreamError>) {
        self.slots[i].state = State::Ended(result);
        self.open -= 1;
        self.ended.push_back(i);
    }

    fn on_frame(
        &mut self,
        kind: u8,
        flags: u8,
        stream: u32,
        payload: &[u8],
    ) -> Result<(), H2Error> {
        // RFC 9113 §6.10: a header block is contiguous on the connection.
        if self.block_stream != 0 && kind != frame::CONTINUATION {
            return Err(H2Error::Protocol(
                "a header block interrupted by another frame",
            ));
        }
        match kind {
            frame::DATA => self.on_data(flags, stream, payload),
            frame::HEADERS => self.on_headers(flags, stream, payload),
            frame::CONTINUATION => self.on_continuation(flags, stream, payload),
            frame::PRIORITY => {
                if stream == 0 {
                    return Err(H2Error::Protocol("PRIORITY on stream 0"));
                }
                if payload.len() != 5 {
                    return Err(H2Error::Protocol("a PRIORITY frame not 5 bytes long"));
                }
                Ok(())
            }
            frame::RST_STREAM => {
                let code = word(payload)
                    .ok_or(H2Error::Protocol("an RST_STREAM frame not 4 bytes long"))?;
                match self.lookup(stream) {
                    Lookup::Live(i) => {
                        let error = if code == REFUSED_STREAM {
                            StreamError::Refused
                        } else {
                            StreamError::Reset(code)
                        };
                        self.end(i, Err(error));
                        Ok(())
                    }
                    Lookup::Closed => Ok(()),
                    Lookup::Idle => Err(H2Error::Protocol("RST_STREAM on a stream never opened")),
                }
            }
            frame::SETTINGS => self.on_settings(flags, stream, payload),
            frame::PUSH_PROMISE => Err(H2Error::Protocol("PUSH_PROMISE, with push disabled")),
            frame::PING => {
                if stream != 0 {
                    return Err(H2Error::Protocol("PING on a stream"));
                }
                if payload.len() != 8 {
                    return Err(H2Error::Protocol("a PING frame not 8 bytes long"));
                }
                if flags & flag::ACK == 0 {
                    self.frame_head(8, frame::PING, flag::ACK, 0);
                    self.out.extend_from_slice(payload);
                }
                Ok(())
            }
            frame::GOAWAY => {
                if stream != 0 {
                    return Err(H2Error::Protocol("GOAWAY on a stream"));
                }
                let last = payload
                    .get(..4)
                    .and_then(word)
                    .filter(|_| payload.len() >= 8)
                    .ok_or(H2Error::Protocol("a GOAWAY frame under 8 bytes"))?
                    & 0x7fff_ffff;
                let last = self.goaway.map_or(last, |before| before.min(last));
                self.goaway = Some(last);
                // Streams above the last one were never processed: they may go elsewhere.
                for i in 0..self.slots.len() {
                    if self.slots[i].state == State::Open && self.slots[i].id > last {
                        self.end(i, Err(StreamError::Refused));
                    }
                }
                Ok(())
            }
            frame::WINDOW_UPDATE => {
                let increment = word(payload)
                    .ok_or(H2Error::Protocol("a WINDOW_UPDATE frame not 4 bytes long"))?
                    & 0x7fff_ffff;
                if increment == 0 {
                    return Err(H2Error::Protocol("a WINDOW_UPDATE of 0"));
                }
                // The client sends no DATA: the server's windows never bind it.
                match self.lookup(stream) {
                    Lookup::Idle if stream != 0 => {
                        Err(H2Error::Protocol("WINDOW_UPDATE on a stream never opened"))
                    }
                    _ => Ok(()),
                }
            }
            // Unknown frame types are ignored (RFC 9113 §4.1).
            _ => Ok(()),
        }
    }

    fn on_settings(&mut self, flags: u8, stream: u32, payload: &[u8]) -> Result<(), H2Error> {
        if stream != 0 {
            return Err(H2Error::Protocol("SETTINGS on a stream"));
        }
        if flags & flag::ACK != 0 {
            return if payload.is_empty() {
                Ok(())
            } else {
                Err(H2Error::Protocol("a SETTINGS ACK with a payload"))
            };
        }
        if !payload.len().is_multiple_of(6) {
            return Err(H2Error::Protocol(
                "a SETTINGS frame not a multiple of 6 bytes",
            ));
        }
        for entry in payload.chunks_exact(6) {
            let id = u16::from_be_bytes([entry[0], entry[1]]);
            let value = u32::from_be_bytes([entry[2], entry[3], entry[4], entry[5]]);
            match id {
                setting::ENABLE_PUSH if value > 1 => {
                    return Err(H2Error::Protocol("SETTINGS_ENABLE_PUSH neither 0 nor 1"));
                }
                setting::MAX_CONCURRENT_STREAMS => self.peer_max_streams = value,
                setting::INITIAL_WINDOW_SIZE if value > MAX_WINDOW => {
                    return Err(H2Error::FlowControl);
                }
                setting::MAX_FRAME_SIZE => {
                    if !(16_384..=16_777_215).contains(&value) {
                        return Err(H2Error::Protocol("SETTINGS_MAX_FRAME_SIZE out of range"));
                    }
                    self.peer_max_frame = value as usize;
                }
                setting::HEADER_TABLE_SIZE => self.encoder.table_size(value),
                // The server's windows: the client sends no DATA. Unknown settings: ignored.
                _ => {}
            }
        }
        self.encoder.settings_received();
        self.frame_head(0, frame::SETTINGS, flag::ACK, 0);
        Ok(())
    }

    fn on_headers(&mut self, flags: u8, stream: u32, payload: &[u8]) -> Result<(), H2Error> {
        if stream == 0 {
            return Err(H2Error::Protocol("HEADERS on stream 0"));
        }
        let mut fragment = unpad(flags, payload)?;
        if flags & flag::PRIORITY != 0 {
            fragment = fragment
                .get(5..)
                .ok_or(H2Error::Protocol("HEADERS too short for its priority"))?;
        }
        let end_stream = flags & flag::END_STREAM != 0;
        if flags & flag::END_HEADERS != 0 {
            return self.on_block(stream, fragment, end_stream);
        }
        if fragment.len() > MAX_HEADER_BLOCK {
            return Err(H2Error::Protocol("a header block over 64 KiB"));
        }
        self.block.clear();
        self.block.extend_from_slice(fragment);
        self.block_stream = stream;
        self.block_end_stream = end_stream;
        Ok(())
    }

    fn on_continuation(&mut self, flags: u8, stream: u32, payload: &[u8]) -> Result<(), H2Error> {
        if self.block_stream == 0 || stream != self.block_stream {
            return Err(H2Error::Protocol("CONTINUATION outside a header block"));
        }
        if self.block.len() + payload.len() > MAX_HEADER_BLOCK {
            return Err(H2Error::Protocol("a header block over 64 KiB"));
        }
        self.block.extend_from_slice(payload);
        if flags & flag::END_HEADERS == 0 {
            return Ok(());
        }
        self.block_stream = 0;
        let block = std::mem::take(&mut self.block);
        let result = self.on_block(stream, &block, self.block_end_stream);
        self.block = block;
        result
    }

    /// A complete header block on `stream`: the answer's head, an interim 1xx, or trailers.
    fn on_block(&mut self, stream: u32, block: &[u8], end_stream: bool) -> Result<(), H2Error> {
        let live = match self.lookup(stream) {
            Lookup::Live(i) if self.slots[i].status == 0 => Some(i),
            // Trailers, or an answer to a cancelled stream: decoded all the same, since the
            // decoder's table must follow the server's encoder.
            Lookup::Live(_) | Lookup::Closed => None,
            Lookup::Idle => return Err(H2Error::Protocol("HEADERS on a stream never opened")),
        };
        let Some(i) = live else {
            self.decoder.decode(block, |_, _| {})?;
            if let Lookup::Live(i) = self.lookup(stream) {
                if !end_stream {
                    return Err(H2Error::Protocol("trailers without END_STREAM"));
                }
                self.end(i, Ok(()));
            }
            return Ok(());
        };
        let slot = &mut self.slots[i];
        slot.fields.clear();
        slot.spans.clear();
        let mut status = None;
        let mut bad = None;
        self.decoder.decode(block, |name, value| {
            if name.first() == Some(&b':') {
                if name == b":status" && status.is_none() {
                    status = parse_status(value);
                    if status.is_none() {
                        bad = Some("a :status not three digits");
                    }
                } else {
                    bad = Some("a pseudo-header other than one :status in an answer");
                }
                return;
            }
            push_field(slot, name, value, &mut bad);
        })?;
        if let Some(bad) = bad {
            return Err(H2Error::Protocol(bad));
        }
        let status = status.ok_or(H2Error::Protocol("an answer without :status"))?;
        if (100..200).contains(&status) {
            // Interim: the real answer's HEADERS follow.
            if end_stream {
                return Err(H2Error::Protocol("a 1xx answer ending its stream"));
            }
            return Ok(());
        }
        slot.status = status;
        if end_stream {
            self.end(i, Ok(()));
        }
        Ok(())
    }

    fn on_data(&mut self, flags: u8, stream: u32, payload: &[u8]) -> Result<(), H2Error> {
        if stream == 0 {
            return Err(H2Error::Protocol("DATA on stream 0"));
        }
        // Flow control counts the whole payload, padding included (RFC 9113 §6.9.1).
        let len = payload.len() as u32;
        self.window -= i64::from(len);
        if self.window < 0 {
            return Err(H2Error::FlowControl);
        }
        self.unacked += len;
        // Given back in halves of the window: one WINDOW_UPDATE per many frames.
        if self.unacked >= CONNECTION_WINDOW / 2 {
            let n = std::mem::take(&mut self.unacked);
            self.window += i64::from(n);
            self.window_update(0, n);
        }
        let data = unpad(flags, payload)?;
        let end_stream = flags & flag::END_STREAM != 0;
        let i = match self.lookup(stream) {
            Lookup::Live(i) => i,
            Lookup::Closed => return Ok(()),
            Lookup::Idle => return Err(H2Error::Protocol("DATA on a stream never opened")),
        };
        let (keep, stream_window) = (self.keep, self.stream_window);
        let slot = &mut self.slots[i];
        if slot.status == 0 {
            return Err(H2Error::Protocol("DATA before the answer's HEADERS"));
        }
        slot.window -= i64::from(len);
        if slot.window < 0 {
            return Err(H2Error::FlowControl);
        }
        slot.received += data.len() as u64;
        let room = keep.saturating_sub(slot.body.len());
        slot.body.extend_from_slice(&data[..data.len().min(room)]);
        if end_stream {
            self.end(i, Ok(()));
            return Ok(());
        }
        slot.unacked += len;
        if slot.unacked >= stream_window / 2 {
            let n = std::mem::take(&mut slot.unacked);
            slot.window += i64::from(n);
            self.window_update(stream, n);
        }
        Ok(())
    }
}

/// Appends one decoded field to the stream's buffer.
fn push_field<T>(slot: &mut Slot<T>, name: &[u8], value: &[u8], bad: &mut Option<&str>) {
    if slot.fields.len() + name.len() + value.len() > MAX_HEADER_BLOCK {
        *bad = Some("an answer's header fields over 64 KiB");
        return;
    }
    let n = slot.fields.len() as u32;
    slot.fields.extend_from_slice(name);
    let v = slot.fields.len() as u32;
    slot.fields.extend_from_slice(value);
    slot.spans.push([n, v, slot.fields.len() as u32]);
}

/// The frame's content without its padding (RFC 9113 §6.1, §6.2).
fn unpad(flags: u8, payload: &[u8]) -> Result<&[u8], H2Error> {
    if flags & flag::PADDED == 0 {
        return Ok(payload);
    }
    let (&pad, rest) = payload
        .split_first()
        .ok_or(H2Error::Protocol("a padded frame without its pad length"))?;
    rest.len()
        .checked_sub(usize::from(pad))
        .map(|n| &rest[..n])
        .ok_or(H2Error::Protocol("padding longer than its frame"))
}

/// A 4-byte payload as a big-endian word.
fn word(payload: &[u8]) -> Option<u32> {
    <[u8; 4]>::try_from(payload).ok().map(u32::from_be_bytes)
}

fn parse_status(value: &[u8]) -> Option<u16> {
    match value {
        [a, b, c] if value.iter().all(u8::is_ascii_digit) && *a != b'0' => {
            Some(u16::from(a - b'0') * 100 + u16::from(b - b'0') * 10 + u16::from(c - b'0'))
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use tokio::io::DuplexStream;

    use super::*;

    /// A pool of one request, `GET /` on `a`: nothing repeats, so no block touches the table.
    fn get() -> (hpack::Repeated, hpack::Block) {
        let fields = hpack::request_fields(b"GET", false, b"a", b"/", []);
        let (repeated, mut blocks) = hpack::pool_blocks(&[fields]);
        (repeated, blocks.remove(0))
    }

    fn frame(kind: u8, flags: u8, stream: u32, payload: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        out.extend_from_slice(&(payload.len() as u32).to_be_bytes()[1..]);
        out.push(kind);
        out.push(flags);
        out.extend_from_slice(&stream.to_be_bytes());
        out.extend_from_slice(payload);
        out
    }

    fn headers(fields: &[(&[u8], &[u8])]) -> Vec<u8> {
        loona_hpack::Encoder::new().encode(fields.iter().copied())
    }

    fn settings() -> Vec<u8> {
        frame(frame::SETTINGS, 0, 0, &[])
    }

    /// A connection with `streams` streams open (tags 0, 1, ...) and a 100-byte stream window,
    /// fed `answer` whole and then the end of the server's stream; reads until the connection
    /// fails, which it always does at the end. The server half is left to read what was sent.
    async fn feed(streams: u32, answer: &[u8]) -> (H2<DuplexStream, u32>, H2Error, DuplexStream) {
        let (client, mut server) = tokio::io::duplex(1 << 16);
        let mut conn = H2::with_windows(client, 8, 16, 100, CONNECTION_WINDOW);
        let far = Instant::now() + Duration::from_secs(60);
        let (repeated, block) = get();
        for tag in 0..streams {
            assert!(conn.can_open());
            conn.open(&repeated, &block, tag, far);
        }
        conn.flush().await.expect("in-memory write");
        server.write_all(answer).await.expect("in-memory write");
        server.shutdown().await.expect("in-memory shutdown");
        let error = loop {
            if let Err(e) = conn.read().await {
                break e;
            }
        };
        (conn, error, server)
    }

    fn ended(conn: &mut H2<DuplexStream, u32>) -> Vec<(u32, Result<String, StreamError>)> {
        std::iter::from_fn(|| {
            conn.next_ended().map(|(tag, reply)| {
                let reply = reply.map(|r| {
                    let fields: Vec<String> = r
                        .fields()
                        .map(|(n, v)| {
                            format!(
                                "{}: {}",
                                String::from_utf8_lossy(n),
                                String::from_utf8_lossy(v)
                            )
                        })
                        .collect();
                    format!(
                        "{} [{}] {}/{}",
                        r.status,
                        fields.join("; "),
                        String::from_utf8_lossy(r.body),
                        r.received
                    )
                });
                (tag, reply)
            })
        })
        .collect()
    }

    #[tokio::test]
    async fn answers_are_gathered_per_stream_from_interleaved_frames() {
        let mut encoder = loona_hpack::Encoder::new();
        let mut answer = settings();
        // Stream 3's head comes first; the encoder's dynamic table carries over between blocks.
        let head3 = encoder.encode([(&b":status"[..], &b"403"[..]), (b"vary", b"Origin")]);
        answer.extend(frame(frame::HEADERS, flag::END_HEADERS, 3, &head3));
        // Stream 1's head spread over HEADERS and CONTINUATION, after an interim 100.
        let interim = encoder.encode([(&b":status"[..], &b"100"[..])]);
        answer.extend(frame(frame::HEADERS, flag::END_HEADERS, 1, &interim));
        let head1 = encoder.encode([
            (&b":status"[..], &b"200"[..]),
            (b"access-control-allow-origin", b"*"),
            (b"vary", b"Origin"),
        ]);
        let (a, b) = head1.split_at(4);
        answer.extend(frame(frame::HEADERS, flag::END_STREAM, 1, a));
        answer.extend(frame(frame::CONTINUATION, flag::END_HEADERS, 1, b));
        // Stream 3's body: padded, over the 16 bytes kept, then trailers.
        let mut padded = vec![3];
        padded.extend_from_slice(b"<Code>AccessForbidden</Code>");
        padded.extend_from_slice(&[0; 3]);
        answer.extend(frame(frame::DATA, flag::PADDED, 3, &padded));
        let trailers = encoder.encode([(&b"x-trailer"[..], &b"1"[..])]);
        answer.extend(frame(
            frame::HEADERS,
            flag::END_HEADERS | flag::END_STREAM,
            3,
            &trailers,
        ));
        answer.extend(frame(frame::PING, 0, 0, b"12345678"));
        let (mut conn, error, mut server) = feed(2, &answer).await;
        assert!(matches!(error, H2Error::Closed), "{error}");
        assert_eq!(
            ended(&mut conn),
            [
                (
                    0,
                    Ok("200 [access-control-allow-origin: *; vary: Origin] /0".to_string())
                ),
                (1, Ok("403 [vary: Origin] <Code>AccessForb/28".to_string())),
            ]
        );
        assert_eq!(conn.in_flight(), 0);
        // The SETTINGS are acknowledged and the PING answered, at the next flush.
        conn.flush().await.expect("in-memory write");
        drop(conn);
        let mut sent = Vec::new();
        server.read_to_end(&mut sent).await.expect("in-memory read");
        assert!(sent.starts_with(PREFACE));
        let tail = [
            frame(frame::SETTINGS, flag::ACK, 0, &[]),
            frame(frame::PING, flag::ACK, 0, b"12345678"),
        ]
        .concat();
        assert!(sent.ends_with(&tail), "{sent:?}");
    }

    #[tokio::test]
    async fn goaway_refuses_the_streams_above_its_last_id_and_ends_opening() {
        let mut answer = frame(frame::GOAWAY, 0, 0, &[0, 0, 0, 1, 0, 0, 0, 0]);
        answer.extend(frame(
            frame::HEADERS,
            flag::END_HEADERS | flag::END_STREAM,
            1,
            &headers(&[(b":status", b"204")]),
        ));
        // REFUSED_STREAM on a stream already refused by the GOAWAY: a late frame, dropped.
        answer.extend(frame(
            frame::RST_STREAM,
            0,
            5,
            &REFUSED_STREAM.to_be_bytes(),
        ));
        let (mut conn, error, _server) = feed(3, &answer).await;
        assert!(matches!(error, H2Error::Closed), "{error}");
        assert!(conn.going_away() && !conn.can_open());
        assert_eq!(
            ended(&mut conn),
            [
                (1, Err(StreamError::Refused)),
                (2, Err(StreamError::Refused)),
                (0, Ok("204 [] /0".to_string())),
            ]
        );
    }

    #[tokio::test]
    async fn a_reset_ends_its_stream_and_a_deadline_cancels_one() {
        let answer = frame(frame::RST_STREAM, 0, 3, &0x2u32.to_be_bytes());
        let (mut conn, error, _server) = feed(2, &answer).await;
        assert!(matches!(error, H2Error::Closed), "{error}");
        assert_eq!(ended(&mut conn), [(1, Err(StreamError::Reset(2)))]);
        assert!(conn.earliest_deadline().is_some());
        conn.expire(Instant::now() + Duration::from_secs(61));
        assert_eq!(ended(&mut conn), [(0, Err(StreamError::TimedOut))]);
        assert_eq!(conn.abandon(), None);
    }

    #[tokio::test]
    async fn the_server_max_concurrent_streams_caps_the_streams_opened() {
        let limit = frame(frame::SETTINGS, 0, 0, &[0, 3, 0, 0, 0, 2]);
        let (conn, _, _server) = feed(2, &limit).await;
        assert!(!conn.can_open());
    }

    /// Each malformed answer fails the connection with the error given, and no stream is
    /// answered: the open ones are abandoned.
    /// The server's side of a connection: reads until its SETTINGS are acknowledged.
    async fn settle(conn: &mut H2<DuplexStream, u32>, server: &mut DuplexStream, settings: &[u8]) {
        server.write_all(settings).await.expect("in-memory write");
        let ack = frame(frame::SETTINGS, flag::ACK, 0, &[]);
        while !conn.proto.out.ends_with(&ack) {
            conn.read().await.expect("a valid SETTINGS frame");
        }
    }

    #[tokio::test]
    async fn blocks_use_the_table_the_servers_settings_allow() {
        let pool: Vec<_> = ["/a", "/b"]
            .iter()
            .map(|path| {
                hpack::request_fields(
                    b"OPTIONS",
                    false,
                    b"bucket.example.com",
                    path.as_bytes(),
                    [(&b"origin"[..], &b"https://app.example.com"[..])],
                )
            })
            .collect();
        let (repeated, blocks) = hpack::pool_blocks(&pool);
        let (client, mut server) = tokio::io::duplex(1 << 16);
        let mut conn: H2<DuplexStream, u32> = H2::new(client, 8, 16);
        let far = Instant::now() + Duration::from_secs(60);
        let mut tag = 0;
        let mut send = |conn: &mut H2<DuplexStream, u32>| {
            for block in &blocks {
                assert!(conn.can_open());
                conn.open(&repeated, block, tag, far);
                tag += 1;
            }
        };
        // Before the server's SETTINGS, with its default table, then with none.
        send(&mut conn);
        conn.flush().await.expect("in-memory write");
        settle(&mut conn, &mut server, &settings()).await;
        send(&mut conn);
        conn.flush().await.expect("in-memory write");
        let none = frame(frame::SETTINGS, 0, 0, &[0, 1, 0, 0, 0, 0]);
        settle(&mut conn, &mut server, &none).await;
        send(&mut conn);
        conn.flush().await.expect("in-memory write");
        drop(conn);
        let mut sent = Vec::new();
        server.read_to_end(&mut sent).await.expect("in-memory read");
        let mut rest = sent.strip_prefix(PREFACE).expect("the preface first");
        let mut heads = Vec::new();
        while rest.len() >= FRAME_HEAD {
            let len = usize::from(rest[0]) << 16 | usize::from(rest[1]) << 8 | usize::from(rest[2]);
            let (frame, tail) = rest.split_at(FRAME_HEAD + len);
            if frame[3] == frame::HEADERS {
                assert_eq!(frame[4], flag::END_STREAM | flag::END_HEADERS);
                heads.push(frame[FRAME_HEAD..].to_vec());
            }
            rest = tail;
        }
        // One decoder, as the server's connection has: every block decodes to its request.
        let mut decoder = loona_hpack::Decoder::new();
        let decoded: Vec<_> = heads
            .iter()
            .map(|h| decoder.decode(h).expect("a block we encoded decodes"))
            .collect();
        let want: Vec<_> = (0..3).flat_map(|_| pool.iter().cloned()).collect();
        assert_eq!(decoded, want);
        // `OPTIONS`, the authority and the origin: literals, inserted, then indexed; after a
        // table size of 0, signalled first, literals again.
        let [early_a, early_b, inserted, indexed, emptied, after] = &heads[..] else {
            panic!("six requests sent, {} HEADERS", heads.len());
        };
        assert_eq!(inserted.len(), early_a.len());
        assert_eq!(indexed[..3], [0x80 | 64, 0x86, 0x80 | 63]);
        assert_eq!(indexed.last(), Some(&(0x80 | 62)));
        // Literals of 9, 20 and 32 bytes down to an index each.
        assert_eq!(indexed.len(), early_b.len() - (9 - 1) - (20 - 1) - (32 - 1));
        assert_eq!(emptied[0], 0x20);
        assert_eq!(emptied.len(), early_a.len() + 1);
        assert_eq!(after, early_b);
    }

    #[tokio::test]
    async fn a_block_over_the_frame_size_continues_in_continuation_frames() {
        let value = "x".repeat(MAX_FRAME + 100);
        let pool = [hpack::request_fields(
            b"GET",
            false,
            b"a",
            b"/",
            [(&b"x-large"[..], value.as_bytes())],
        )];
        let (repeated, blocks) = hpack::pool_blocks(&pool);
        let (client, mut server) = tokio::io::duplex(1 << 17);
        let mut conn: H2<DuplexStream, u32> = H2::new(client, 8, 16);
        let far = Instant::now() + Duration::from_secs(60);
        for tag in 0..2 {
            conn.open(&repeated, &blocks[0], tag, far);
        }
        conn.flush().await.expect("in-memory write");
        drop(conn);
        let mut sent = Vec::new();
        server.read_to_end(&mut sent).await.expect("in-memory read");
        let mut rest = sent.strip_prefix(PREFACE).expect("the preface first");
        // Per stream: its frames' types and flags, and its block put back together.
        type Sent = (u32, Vec<(u8, u8)>, Vec<u8>);
        let mut streams: Vec<Sent> = Vec::new();
        while rest.len() >= FRAME_HEAD {
            let len = usize::from(rest[0]) << 16 | usize::from(rest[1]) << 8 | usize::from(rest[2]);
            let (frame, tail) = rest.split_at(FRAME_HEAD + len);
            let id = u32::from_be_bytes([frame[5], frame[6], frame[7], frame[8]]);
            if id != 0 {
                if streams.last().is_none_or(|s| s.0 != id) {
                    streams.push((id, Vec::new(), Vec::new()));
                }
                let stream = streams.last_mut().expect("pushed above");
                stream.1.push((frame[3], frame[4]));
                stream.2.extend_from_slice(&frame[FRAME_HEAD..]);
            }
            rest = tail;
        }
        let mut decoder = loona_hpack::Decoder::new();
        assert_eq!(streams.len(), 2);
        for (id, frames, block) in streams {
            assert_eq!(
                frames,
                [
                    (frame::HEADERS, flag::END_STREAM),
                    (frame::CONTINUATION, flag::END_HEADERS)
                ],
                "stream {id}"
            );
            assert_eq!(
                decoder.decode(&block).expect("a block we encoded decodes"),
                pool[0]
            );
        }
    }

    #[tokio::test]
    async fn malformed_frames_are_connection_errors() {
        let ok_head = headers(&[(b":status", b"200")]);
        type Case = (&'static str, Vec<u8>, fn(&H2Error) -> bool);
        let cases: Vec<Case> = vec![
            (
                "truncated frame",
                frame(frame::HEADERS, flag::END_HEADERS, 1, &ok_head)[..6].to_vec(),
                |e| matches!(e, H2Error::Closed),
            ),
            (
                "oversize frame",
                frame(frame::DATA, 0, 1, &vec![0; MAX_FRAME + 1]),
                |e| matches!(e, H2Error::FrameSize(16_385)),
            ),
            (
                "HEADERS on stream 0",
                frame(frame::HEADERS, flag::END_HEADERS, 0, &ok_head),
                |e| matches!(e, H2Error::Protocol(_)),
            ),
            (
                "DATA beyond the stream window",
                [
                    frame(frame::HEADERS, flag::END_HEADERS, 1, &ok_head),
                    frame(frame::DATA, 0, 1, &[0; 101]),
                ]
                .concat(),
                |e| matches!(e, H2Error::FlowControl),
            ),
            ("DATA before HEADERS", frame(frame::DATA, 0, 1, b"x"), |e| {
                matches!(e, H2Error::Protocol(_))
            }),
            (
                "HEADERS on a stream never opened",
                frame(frame::HEADERS, flag::END_HEADERS, 7, &ok_head),
                |e| matches!(e, H2Error::Protocol(_)),
            ),
            (
                "padding longer than the frame",
                frame(frame::DATA, flag::PADDED, 1, &[9, 0]),
                |e| matches!(e, H2Error::Protocol(_)),
            ),
            (
                "a header block interrupted",
                [
                    frame(frame::HEADERS, 0, 1, &ok_head),
                    frame(frame::PING, 0, 0, b"12345678"),
                ]
                .concat(),
                |e| matches!(e, H2Error::Protocol(_)),
            ),
            (
                "an HPACK index out of the table",
                frame(frame::HEADERS, flag::END_HEADERS, 1, &[0xff, 0x7f]),
                |e| matches!(e, H2Error::Hpack(_)),
            ),
            (
                "no :status",
                frame(
                    frame::HEADERS,
                    flag::END_HEADERS,
                    1,
                    &headers(&[(b"vary", b"x")]),
                ),
                |e| matches!(e, H2Error::Protocol(_)),
            ),
            (
                "a short SETTINGS",
                frame(frame::SETTINGS, 0, 0, &[0, 3, 0]),
                |e| matches!(e, H2Error::Protocol(_)),
            ),
            (
                "PUSH_PROMISE",
                frame(frame::PUSH_PROMISE, flag::END_HEADERS, 1, &[0, 0, 0, 2]),
                |e| matches!(e, H2Error::Protocol(_)),
            ),
        ];
        for (what, answer, expected) in cases {
            let (mut conn, error, _server) = feed(1, &[settings(), answer].concat()).await;
            assert!(expected(&error), "{what}: {error:?}");
            assert!(ended(&mut conn).is_empty(), "{what}");
            assert_eq!(conn.abandon(), Some(0), "{what}");
        }
    }
}
