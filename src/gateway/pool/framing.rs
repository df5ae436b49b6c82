//! Where an origin's response body ends (RFC 9112 §6): which framing a response head chooses,
//! and a decoder that takes the body out of the connection's read buffer as it arrives, as
//! `Bytes` split off that buffer, never copied.
//!
//! No I/O here: the caller reads into the buffer and feeds it; every input, however it is cut
//! into reads, decodes the same. Everything the origin sends is checked and refused with a
//! [`FramingError`], never trusted to be well formed.

use bytes::{Buf, Bytes, BytesMut};
use http::header::{HeaderMap, HeaderName, HeaderValue};

/// Longest chunk-size line, extensions included. Nothing legitimate comes near it; a longer one
/// is an origin that never ends the line.
pub(super) const MAX_SIZE_LINE: usize = 4096;
/// Largest trailer section after the last chunk (hyper's client accepts 16 KiB).
pub(super) const MAX_TRAILERS: usize = 16 * 1024;
/// Most trailer fields accepted.
const MAX_TRAILER_FIELDS: usize = 100;

/// How a response's body is delimited, decided from its head.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Framing {
    /// No body, whatever the head says (HEAD, 1xx, 204, 304; RFC 9112 §6.3 rule 1).
    Empty,
    /// `Content-Length` bytes.
    Length(u64),
    /// `Transfer-Encoding` ending in `chunked`.
    Chunked,
    /// Until the origin closes the connection.
    UntilClose,
}

/// What the origin sent that no valid body looks like.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum FramingError {
    #[error("the origin sent a chunk-size line that is not a hexadecimal size")]
    BadChunkSize,
    #[error("the origin sent a chunk-size line longer than {MAX_SIZE_LINE} bytes")]
    ChunkSizeLineTooLong,
    #[error("the origin did not end a chunk with CRLF right after its declared size")]
    BadChunkEnd,
    #[error("the origin sent malformed trailer fields after its last chunk")]
    BadTrailers,
    #[error("the origin sent more than {MAX_TRAILERS} bytes of trailer fields")]
    TrailersTooLarge,
}

/// One step of decoding.
#[derive(Debug, PartialEq)]
pub(super) enum Decoded {
    /// Body data, split off the front of the buffer.
    Data(Bytes),
    /// The trailer fields of a chunked body; the body is then complete.
    Trailers(HeaderMap),
    /// The body is complete.
    End,
    /// More input is needed.
    More,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum State {
    /// Body bytes left of a `Content-Length` body.
    Length(u64),
    /// At a chunk-size line.
    Size,
    /// Bytes left of the current chunk.
    Data(u64),
    /// At the CRLF after a chunk's data.
    DataEnd,
    /// After the last chunk: trailer fields up to an empty line.
    Trailers,
    UntilClose,
    Done,
}

/// Takes one response body out of a read buffer.
#[derive(Debug)]
pub(super) struct Decoder {
    state: State,
}

impl Decoder {
    pub(super) fn new(framing: Framing) -> Decoder {
        let state = match framing {
            Framing::Empty | Framing::Length(0) => State::Done,
            Framing::Length(n) => State::Length(n),
            Framing::Chunked => State::Size,
            Framing::UntilClose => State::UntilClose,
        };
        Decoder { state }
    }

    pub(super) fn is_done(&self) -> bool {
        self.state == State::Done
    }

    /// Body bytes still to come, when the framing tells.
    pub(super) fn remaining(&self) -> Option<u64> {
        match self.state {
            State::Length(n) => Some(n),
            State::Done => Some(0),
            _ => None,
        }
    }

    /// The next step from what `buf` holds; what it consumes is removed from `buf`.
    pub(super) fn decode(&mut self, buf: &mut BytesMut) -> Result<Decoded, FramingError> {
        loop {
            match self.state {
                State::Done => return Ok(Decoded::End),
                _ if buf.is_empty() => return Ok(Decoded::More),
                State::Length(n) => {
                    let (data, rest) = take_up_to(buf, n);
                    self.state = if rest == 0 {
                        State::Done
                    } else {
                        State::Length(rest)
                    };
                    return Ok(Decoded::Data(data));
                }
                State::UntilClose => return Ok(Decoded::Data(buf.split().freeze())),
                State::Size => {
                    let Some(line) =
                        line(buf, MAX_SIZE_LINE).map_err(|_| FramingError::ChunkSizeLineTooLong)?
                    else {
                        return Ok(Decoded::More);
                    };
                    let size = chunk_size(&line)?;
                    self.state = if size == 0 {
                        State::Trailers
                    } else {
                        State::Data(size)
                    };
                }
                State::Data(n) => {
                    let (data, rest) = take_up_to(buf, n);
                    self.state = if rest == 0 {
                        State::DataEnd
                    } else {
                        State::Data(rest)
                    };
                    return Ok(Decoded::Data(data));
                }
                State::DataEnd => {
                    // RFC 9112 §7.1: chunk-data is followed by exactly CRLF.
                    if buf.len() < 2 {
                        if buf[0] != b'\r' {
                            return Err(FramingError::BadChunkEnd);
                        }
                        return Ok(Decoded::More);
                    }
                    if &buf[..2] != b"\r\n" {
                        return Err(FramingError::BadChunkEnd);
                    }
                    buf.advance(2);
                    self.state = State::Size;
                }
                State::Trailers => return self.trailers(buf),
            }
        }
    }

    /// The connection closed: the end of a body delimited by it, an error for any other.
    pub(super) fn closed(&mut self) -> Result<(), Incomplete> {
        match self.state {
            State::UntilClose | State::Done => {
                self.state = State::Done;
                Ok(())
            }
            _ => Err(Incomplete),
        }
    }

    /// The trailer section, once it is all in `buf` (RFC 9112 §7.1.2).
    fn trailers(&mut self, buf: &mut BytesMut) -> Result<Decoded, FramingError> {
        // The usual case: no trailer fields, only the final CRLF.
        if buf.starts_with(b"\r\n") {
            buf.advance(2);
            self.state = State::Done;
            return Ok(Decoded::End);
        }
        if buf.len() < 2 && buf[0] == b'\r' {
            return Ok(Decoded::More);
        }
        let Some(end) = find(buf, b"\r\n\r\n") else {
            if buf.len() > MAX_TRAILERS {
                return Err(FramingError::TrailersTooLarge);
            }
            return Ok(Decoded::More);
        };
        let len = end + 4;
        if len > MAX_TRAILERS {
            return Err(FramingError::TrailersTooLarge);
        }
        let section = buf.split_to(len).freeze();
        let mut fields = [httparse::EMPTY_HEADER; MAX_TRAILER_FIELDS];
        let parsed = match httparse::parse_headers(&section, &mut fields) {
            Ok(httparse::Status::Complete((_, parsed))) => parsed,
            _ => return Err(FramingError::BadTrailers),
        };
        let mut trailers = HeaderMap::with_capacity(parsed.len());
        for field in parsed {
            let name = HeaderName::from_bytes(field.name.as_bytes())
                .map_err(|_| FramingError::BadTrailers)?;
            let value = HeaderValue::from_maybe_shared(section.slice_ref(field.value))
                .map_err(|_| FramingError::BadTrailers)?;
            trailers.append(name, value);
        }
        self.state = State::Done;
        Ok(Decoded::Trailers(trailers))
    }
}

/// The connection closed before the body was complete.
#[derive(Debug, PartialEq, Eq)]
pub(super) struct Incomplete;

/// Up to `left` body bytes split off the front of `buf`, and how many are still to come.
fn take_up_to(buf: &mut BytesMut, left: u64) -> (Bytes, u64) {
    let take = usize::try_from(left).map_or(buf.len(), |left| left.min(buf.len()));
    (buf.split_to(take).freeze(), left - take as u64)
}

/// The line at the front of `buf` without its CRLF, removed from `buf`; `Ok(None)` while it is
/// not complete; `Err` once it is longer than `max`.
fn line(buf: &mut BytesMut, max: usize) -> Result<Option<BytesMut>, ()> {
    let window = &buf[..buf.len().min(max)];
    match window.iter().position(|&b| b == b'\n') {
        Some(eol) => {
            let mut line = buf.split_to(eol + 1);
            line.truncate(eol);
            // A bare LF ends a line too (RFC 9112 §2.2 lets a recipient accept it).
            if line.last() == Some(&b'\r') {
                line.truncate(eol - 1);
            }
            Ok(Some(line))
        }
        None if buf.len() >= max => Err(()),
        None => Ok(None),
    }
}

/// `chunk-size [ chunk-ext ]` (RFC 9112 §7.1, §7.1.1): extensions are ignored.
fn chunk_size(line: &[u8]) -> Result<u64, FramingError> {
    let size = match line.iter().position(|&b| b == b';') {
        Some(semi) => &line[..semi],
        None => line,
    };
    // BWS before the `;` of an extension.
    let size = size.trim_ascii_end();
    if size.is_empty() || size.len() > 15 {
        return Err(FramingError::BadChunkSize);
    }
    size.iter().try_fold(0u64, |n, &b| {
        let digit = (b as char).to_digit(16).ok_or(FramingError::BadChunkSize)?;
        Ok(n << 4 | u64::from(digit))
    })
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// Feeds `input` in pieces of `step` bytes; returns the body, the trailers, and whether it
    /// ended, or the first error.
    fn feed(
        framing: Framing,
        input: &[u8],
        step: usize,
    ) -> Result<(Vec<u8>, Option<HeaderMap>, bool, usize), FramingError> {
        let mut decoder = Decoder::new(framing);
        let mut buf = BytesMut::new();
        let mut body = Vec::new();
        let mut trailers = None;
        let mut fed = 0;
        loop {
            match decoder.decode(&mut buf)? {
                Decoded::Data(data) => body.extend_from_slice(&data),
                Decoded::Trailers(t) => trailers = Some(t),
                Decoded::End => return Ok((body, trailers, true, buf.len() + input.len() - fed)),
                Decoded::More if fed == input.len() => {
                    return Ok((body, trailers, false, buf.len()));
                }
                Decoded::More => {
                    let next = (fed + step).min(input.len());
                    buf.extend_from_slice(&input[fed..next]);
                    fed = next;
                }
            }
        }
    }

    proptest! {
        /// Whatever an origin sends, and however the reads cut it, decoding never panics and
        /// comes to the same body, trailers and end, or the same refusal.
        #[test]
        fn any_input_decodes_the_same_whatever_the_reads(
            input in proptest::collection::vec(
                proptest::sample::select(b"0123456789abcdefAF;=\"\r\n:x \t".to_vec()),
                0..300,
            ),
            framing in prop_oneof![
                Just(Framing::Chunked),
                (0u64..64).prop_map(Framing::Length),
                Just(Framing::UntilClose),
            ],
            step in 1usize..16,
        ) {
            let whole = feed(framing, &input, input.len().max(1));
            let pieces = feed(framing, &input, step);
            prop_assert_eq!(
                whole.map(|(body, trailers, ended, _)| (body, trailers, ended)),
                pieces.map(|(body, trailers, ended, _)| (body, trailers, ended))
            );
        }
    }

    const CHUNKED: &[u8] =
        b"5;name=value;q=\"x\"\r\nhello\r\n1a\r\nabcdefghijklmnopqrstuvwxyz\r\n0\r\nx-checksum: abc\r\nx-more: 1\r\n\r\nNEXT";

    #[test]
    fn chunked_decodes_the_same_whatever_the_reads() {
        for step in 1..=CHUNKED.len() {
            let (body, trailers, ended, left) =
                feed(Framing::Chunked, CHUNKED, step).expect("valid chunked body");
            assert_eq!(body, b"helloabcdefghijklmnopqrstuvwxyz", "step {step}");
            assert!(ended, "step {step}");
            let trailers = trailers.expect("trailers");
            assert_eq!(trailers["x-checksum"], "abc");
            assert_eq!(trailers["x-more"], "1");
            // What follows the body stays in the buffer (or unread).
            assert_eq!(left, 4, "step {step}");
        }
    }

    #[test]
    fn chunked_without_trailers_ends_without_a_trailers_frame() {
        for step in 1..=12 {
            let (body, trailers, ended, left) =
                feed(Framing::Chunked, b"3\r\nabc\r\n0\r\n\r\n", step).expect("valid");
            assert_eq!(
                (body.as_slice(), trailers, ended, left),
                (&b"abc"[..], None, true, 0)
            );
        }
    }

    #[test]
    fn a_chunk_not_followed_by_crlf_is_refused() {
        for input in [
            &b"3\r\nabcd\r\n0\r\n\r\n"[..],
            b"3\r\nabc\n\n0\r\n\r\n",
            b"3\r\nabc\rx",
        ] {
            for step in 1..=input.len() {
                assert_eq!(
                    feed(Framing::Chunked, input, step).map(|_| ()),
                    Err(FramingError::BadChunkEnd),
                    "{input:?} step {step}"
                );
            }
        }
    }

    #[test]
    fn bad_and_oversized_size_lines_are_refused() {
        for input in [
            &b"xyz\r\n"[..],
            b"\r\n",
            b"-1\r\n",
            b"10000000000000000\r\n",
        ] {
            assert_eq!(
                feed(Framing::Chunked, input, 1).map(|_| ()),
                Err(FramingError::BadChunkSize),
                "{input:?}"
            );
        }
        let mut long = b"5;".to_vec();
        long.resize(MAX_SIZE_LINE + 10, b'a');
        for step in [1, 100, long.len()] {
            assert_eq!(
                feed(Framing::Chunked, &long, step).map(|_| ()),
                Err(FramingError::ChunkSizeLineTooLong)
            );
        }
    }

    #[test]
    fn oversized_or_malformed_trailers_are_refused() {
        let mut big = b"0\r\nx-big: ".to_vec();
        big.resize(MAX_TRAILERS + 10, b'a');
        assert_eq!(
            feed(Framing::Chunked, &big, 512).map(|_| ()),
            Err(FramingError::TrailersTooLarge)
        );
        assert_eq!(
            feed(Framing::Chunked, b"0\r\nno colon here\r\n\r\n", 3).map(|_| ()),
            Err(FramingError::BadTrailers)
        );
    }

    #[test]
    fn a_length_body_takes_exactly_its_length() {
        for step in 1..=8 {
            let (body, _, ended, left) =
                feed(Framing::Length(5), b"hello, next", step).expect("valid");
            assert_eq!((body.as_slice(), ended), (&b"hello"[..], true));
            assert_eq!(left, 6);
        }
        let (body, _, ended, _) = feed(Framing::Length(10), b"abc", 1).expect("valid so far");
        assert_eq!((body.as_slice(), ended), (&b"abc"[..], false));
    }

    #[test]
    fn only_a_close_delimited_body_may_end_with_the_connection() {
        let mut decoder = Decoder::new(Framing::UntilClose);
        let mut buf = BytesMut::from(&b"all of it"[..]);
        assert_eq!(
            decoder.decode(&mut buf),
            Ok(Decoded::Data(Bytes::from_static(b"all of it")))
        );
        assert_eq!(decoder.decode(&mut buf), Ok(Decoded::More));
        assert_eq!(decoder.closed(), Ok(()));
        assert!(decoder.is_done());
        assert_eq!(Decoder::new(Framing::Length(3)).closed(), Err(Incomplete));
        assert_eq!(Decoder::new(Framing::Chunked).closed(), Err(Incomplete));
    }

    #[test]
    fn an_empty_body_is_done_at_once() {
        for framing in [Framing::Empty, Framing::Length(0)] {
            let decoder = Decoder::new(framing);
            assert!(decoder.is_done());
            assert_eq!(decoder.remaining(), Some(0));
        }
    }
}
