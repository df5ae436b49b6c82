//! The HTTP/1.1 client of the load generator: one request at a time on a keep-alive connection,
//! written from bytes rendered before the run, the answer's head parsed once by `httparse` and
//! its body framed by hand (Content-Length, chunked, or until close).
//!
//! hyper's client would build a `Request`, clone a `HeaderMap` and parse every answer into
//! another one, per request; the generator must be cheaper per request than the servers it
//! loads, so it keeps the answer's header lines where they were read and hands them to the
//! checker as byte slices.

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

use crate::cors::header::{list_contains, list_ends_with};

/// Most header lines an answer may have (S3 sends about fifteen).
const MAX_HEADERS: usize = 96;
/// Largest answer head accepted; a longer one is a protocol error, not a reason to grow forever.
const MAX_HEAD: usize = 64 * 1024;
/// Bytes asked of the socket per read.
const READ_CHUNK: usize = 16 * 1024;

/// Why an exchange failed; the runner counts these by [`super::tally::ErrorKind`].
#[derive(Debug, thiserror::Error)]
pub(crate) enum WireError {
    #[error("the server closed the connection before a complete answer")]
    Closed,
    /// Closed before any byte of the answer: on a reused connection, the server ended its
    /// keep-alive as the request went out, and the request may be sent again.
    #[error("the server closed the connection before answering")]
    ClosedIdle,
    #[error("no complete answer within the timeout")]
    TimedOut,
    #[error("the answer is not valid HTTP/1.1: {0}")]
    Protocol(&'static str),
    #[error("i/o error: {0}")]
    Io(#[from] std::io::Error),
}

/// The answer just read: its status, and where its header lines lie in the connection's buffer.
#[derive(Debug)]
pub(crate) struct Head {
    pub(crate) status: u16,
    /// The server said it closes the connection after this answer.
    pub(crate) close: bool,
    /// Body bytes received (all of them, not only those kept).
    pub(crate) body_len: u64,
}

/// How the body of an answer ends.
#[derive(Clone, Copy, Debug)]
enum Framing {
    Length(u64),
    Chunked,
    UntilClose,
}

/// One HTTP/1.1 connection and its read buffer.
pub(crate) struct H1<S> {
    stream: S,
    buf: Vec<u8>,
    /// Bytes of `buf` holding data read and not yet used.
    filled: usize,
    /// Name and value of every header line of the last answer, as offsets into `buf`.
    lines: Vec<[u32; 4]>,
    head_len: usize,
}

impl<S: AsyncRead + AsyncWrite + Unpin> H1<S> {
    pub(crate) fn new(stream: S) -> H1<S> {
        H1 {
            stream,
            buf: vec![0; READ_CHUNK * 2],
            filled: 0,
            lines: Vec::with_capacity(32),
            head_len: 0,
        }
    }

    /// The header lines of the last answer, names as the server spelt them.
    pub(crate) fn lines(&self) -> impl Iterator<Item = (&[u8], &[u8])> + '_ {
        self.lines.iter().map(|&[n0, n1, v0, v1]| {
            (
                &self.buf[n0 as usize..n1 as usize],
                &self.buf[v0 as usize..v1 as usize],
            )
        })
    }

    /// Writes `request` (a complete request without body) and reads the whole answer; up to
    /// `keep` bytes of its body are appended to `body`.
    pub(crate) async fn exchange(
        &mut self,
        request: &[u8],
        body: &mut Vec<u8>,
        keep: usize,
    ) -> Result<Head, WireError> {
        self.discard_last();
        if let Err(e) = self.stream.write_all(request).await {
            return Err(if self.filled == 0 && is_reset(&e) {
                WireError::ClosedIdle
            } else {
                WireError::Io(e)
            });
        }
        loop {
            let (status, framing, close) = self.read_head().await?;
            // 1xx are interim: the real answer follows.
            if (100..200).contains(&status) {
                self.discard_last();
                continue;
            }
            let framing = if status == 204 || status == 304 {
                Framing::Length(0)
            } else {
                framing
            };
            let body_len = self.read_body(framing, body, keep).await?;
            let close = close || matches!(framing, Framing::UntilClose);
            return Ok(Head {
                status,
                close,
                body_len,
            });
        }
    }

    /// Drops the previous answer's head, keeping whatever was read after it.
    fn discard_last(&mut self) {
        if self.head_len > 0 {
            self.buf.copy_within(self.head_len..self.filled, 0);
            self.filled -= self.head_len;
            self.head_len = 0;
        }
        self.lines.clear();
    }

    async fn fill(&mut self) -> Result<(), WireError> {
        if self.buf.len() - self.filled < READ_CHUNK {
            self.buf.resize(self.filled + READ_CHUNK, 0);
        }
        let idle = self.filled == 0;
        let n = match self.stream.read(&mut self.buf[self.filled..]).await {
            Ok(n) => n,
            Err(e) if idle && is_reset(&e) => return Err(WireError::ClosedIdle),
            Err(e) => return Err(e.into()),
        };
        if n == 0 {
            return Err(if idle {
                WireError::ClosedIdle
            } else {
                WireError::Closed
            });
        }
        self.filled += n;
        Ok(())
    }

    /// Reads until a whole head is in the buffer; records its lines and length.
    async fn read_head(&mut self) -> Result<(u16, Framing, bool), WireError> {
        loop {
            if self.filled > 0 {
                let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
                let mut response = httparse::Response::new(&mut headers);
                match response.parse(&self.buf[..self.filled]) {
                    Ok(httparse::Status::Complete(len)) => {
                        let status = response.code.ok_or(WireError::Protocol("no status code"))?;
                        let base = self.buf.as_ptr() as usize;
                        let mut framing = Framing::UntilClose;
                        let mut close = response.version == Some(0);
                        for h in response.headers.iter() {
                            let name = h.name.as_bytes();
                            if name.eq_ignore_ascii_case(b"content-length") {
                                let n = parse_decimal(h.value)
                                    .ok_or(WireError::Protocol("bad Content-Length"))?;
                                if !matches!(framing, Framing::Chunked) {
                                    framing = Framing::Length(n);
                                }
                            } else if name.eq_ignore_ascii_case(b"transfer-encoding") {
                                if list_ends_with(h.value, b"chunked") {
                                    framing = Framing::Chunked;
                                }
                            } else if name.eq_ignore_ascii_case(b"connection") {
                                close |= list_contains(h.value, b"close");
                            }
                            let n0 = h.name.as_ptr() as usize - base;
                            let v0 = h.value.as_ptr() as usize - base;
                            self.lines.push([
                                n0 as u32,
                                (n0 + name.len()) as u32,
                                v0 as u32,
                                (v0 + h.value.len()) as u32,
                            ]);
                        }
                        self.head_len = len;
                        return Ok((status, framing, close));
                    }
                    Ok(httparse::Status::Partial) => {
                        if self.filled >= MAX_HEAD {
                            return Err(WireError::Protocol("answer head too long"));
                        }
                    }
                    Err(httparse::Error::TooManyHeaders) => {
                        return Err(WireError::Protocol("too many header lines"));
                    }
                    Err(_) => return Err(WireError::Protocol("malformed answer head")),
                }
            }
            self.fill().await?;
        }
    }

    /// Reads the body that follows the head, leaving the head in place (the checker reads its
    /// lines afterwards) and any bytes past the body for the next answer.
    async fn read_body(
        &mut self,
        framing: Framing,
        body: &mut Vec<u8>,
        keep: usize,
    ) -> Result<u64, WireError> {
        let mut decoder = Decoder::new(framing);
        let mut total = 0u64;
        loop {
            let start = self.head_len;
            let (used, done) = decoder.feed(&self.buf[start..self.filled], |data| {
                total += data.len() as u64;
                let room = keep.saturating_sub(body.len());
                body.extend_from_slice(&data[..data.len().min(room)]);
            })?;
            // Body bytes are consumed in place: whatever follows moves up behind the head.
            self.buf.copy_within(start + used..self.filled, start);
            self.filled -= used;
            if done {
                return Ok(total);
            }
            match self.fill().await {
                Err(WireError::Closed) if matches!(framing, Framing::UntilClose) => {
                    return Ok(total);
                }
                other => other?,
            }
        }
    }
}

/// Body framing, fed the bytes as they arrive.
enum Decoder {
    /// Body bytes still to come.
    Length(u64),
    /// Reading a chunk-size line.
    ChunkSize,
    ChunkData(u64),
    /// The CRLF after a chunk's data.
    ChunkEnd,
    /// Trailer lines after the last chunk, up to the empty line.
    Trailer,
    UntilClose,
}

impl Decoder {
    fn new(framing: Framing) -> Decoder {
        match framing {
            Framing::Length(n) => Decoder::Length(n),
            Framing::Chunked => Decoder::ChunkSize,
            Framing::UntilClose => Decoder::UntilClose,
        }
    }

    /// Consumes what it can of `input`, passing body data to `data`: (bytes used, body done).
    fn feed(
        &mut self,
        input: &[u8],
        mut data: impl FnMut(&[u8]),
    ) -> Result<(usize, bool), WireError> {
        let mut at = 0;
        loop {
            let rest = &input[at..];
            match self {
                Decoder::Length(0) => return Ok((at, true)),
                Decoder::Length(n) => {
                    let take = rest.len().min(usize::try_from(*n).unwrap_or(usize::MAX));
                    data(&rest[..take]);
                    *n -= take as u64;
                    at += take;
                    return Ok((at, *n == 0));
                }
                Decoder::UntilClose => {
                    data(rest);
                    return Ok((input.len(), false));
                }
                Decoder::ChunkSize => {
                    let Some(eol) = rest.iter().position(|&b| b == b'\n') else {
                        return Ok((at, false));
                    };
                    let line = rest[..eol].trim_ascii();
                    // Chunk extensions follow a `;`.
                    let size = line
                        .split(|&b| b == b';')
                        .next()
                        .unwrap_or(line)
                        .trim_ascii();
                    let n = parse_hex(size).ok_or(WireError::Protocol("bad chunk size"))?;
                    at += eol + 1;
                    *self = if n == 0 {
                        Decoder::Trailer
                    } else {
                        Decoder::ChunkData(n)
                    };
                }
                Decoder::ChunkData(n) => {
                    let take = rest.len().min(usize::try_from(*n).unwrap_or(usize::MAX));
                    data(&rest[..take]);
                    *n -= take as u64;
                    at += take;
                    if *n > 0 {
                        return Ok((at, false));
                    }
                    *self = Decoder::ChunkEnd;
                }
                Decoder::ChunkEnd | Decoder::Trailer => {
                    let Some(eol) = rest.iter().position(|&b| b == b'\n') else {
                        return Ok((at, false));
                    };
                    let empty = rest[..eol].trim_ascii().is_empty();
                    at += eol + 1;
                    match self {
                        Decoder::ChunkEnd if empty => *self = Decoder::ChunkSize,
                        Decoder::ChunkEnd => {
                            return Err(WireError::Protocol("chunk data longer than its size"));
                        }
                        _ if empty => return Ok((at, true)),
                        // A trailer field: skipped.
                        _ => {}
                    }
                }
            }
        }
    }
}

fn is_reset(e: &std::io::Error) -> bool {
    use std::io::ErrorKind::{BrokenPipe, ConnectionAborted, ConnectionReset};
    matches!(e.kind(), BrokenPipe | ConnectionReset | ConnectionAborted)
}

fn parse_decimal(text: &[u8]) -> Option<u64> {
    let text = text.trim_ascii();
    if text.is_empty() || text.len() > 19 {
        return None;
    }
    text.iter().try_fold(0u64, |n, &b| {
        b.is_ascii_digit().then(|| n * 10 + u64::from(b - b'0'))
    })
}

fn parse_hex(text: &[u8]) -> Option<u64> {
    if text.is_empty() || text.len() > 15 {
        return None;
    }
    text.iter().try_fold(0u64, |n, &b| {
        let d = (b as char).to_digit(16)?;
        Some(n * 16 + u64::from(d))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Reads one answer from `wire` (given whole to an in-memory stream) after sending `GET /`.
    async fn answer(
        wire: &'static [u8],
    ) -> (Result<Head, WireError>, Vec<u8>, Vec<(String, String)>) {
        let (client, mut server) = tokio::io::duplex(1 << 16);
        server.write_all(wire).await.expect("in-memory write");
        // End of the answer stream; the server half stays open to take the request.
        server.shutdown().await.expect("in-memory shutdown");
        let mut conn = H1::new(client);
        let mut body = Vec::new();
        let head = conn.exchange(b"GET / HTTP/1.1\r\n\r\n", &mut body, 8).await;
        let lines = conn
            .lines()
            .map(|(n, v)| {
                (
                    String::from_utf8_lossy(n).into_owned(),
                    String::from_utf8_lossy(v).into_owned(),
                )
            })
            .collect();
        drop(server);
        (head, body, lines)
    }

    #[tokio::test]
    async fn a_sized_body_is_read_and_kept_up_to_the_limit() {
        let (head, body, lines) = answer(
            b"HTTP/1.1 403 Forbidden\r\nVary: Origin\r\nContent-Length: 12\r\n\r\nhello, world",
        )
        .await;
        let head = head.expect("complete answer");
        assert_eq!((head.status, head.body_len, head.close), (403, 12, false));
        assert_eq!(body, b"hello, w");
        assert_eq!(lines[0], ("Vary".to_string(), "Origin".to_string()));
    }

    #[tokio::test]
    async fn chunked_bodies_with_extensions_and_trailers_are_decoded() {
        let (head, body, _) = answer(
            b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n5;x=y\r\nhello\r\n3\r\nabc\r\n0\r\nx-t: 1\r\n\r\n",
        )
        .await;
        assert_eq!(head.expect("complete answer").body_len, 8);
        assert_eq!(body, b"helloabc");
    }

    #[tokio::test]
    async fn interim_answers_are_skipped_and_close_is_noticed() {
        let (head, _, lines) = answer(
            b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 204 No Content\r\nConnection: close\r\n\r\n",
        )
        .await;
        let head = head.expect("complete answer");
        assert_eq!((head.status, head.close), (204, true));
        assert_eq!(lines.len(), 1);
    }

    #[tokio::test]
    async fn a_body_until_close_ends_with_the_connection() {
        let (head, body, _) = answer(b"HTTP/1.1 200 OK\r\n\r\nabc").await;
        let head = head.expect("complete answer");
        assert_eq!((head.body_len, head.close), (3, true));
        assert_eq!(body, b"abc");
    }

    #[tokio::test]
    async fn truncated_and_malformed_answers_are_errors() {
        let (head, _, _) = answer(b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nabc").await;
        assert!(matches!(head, Err(WireError::Closed)), "{head:?}");
        let (head, _, _) = answer(b"HTTP/1.1 200 OK\r\nContent-Length: x\r\n\r\n").await;
        assert!(matches!(head, Err(WireError::Protocol(_))), "{head:?}");
        let (head, _, _) = answer(b"SMTP ready\r\n\r\n").await;
        assert!(matches!(head, Err(WireError::Protocol(_))), "{head:?}");
    }
}
