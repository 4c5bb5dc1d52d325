//! A request body decoded as it arrives, for bodies too large to wait for: the
//! connection hands the awaited body over ([`crate::Framer::stream_body`]) and
//! feeds each read's bytes to a [`BodyStream`], which says which ranges are body
//! data and where the body ends. The bytes after that end are the next request.

use std::ops::Range;

use crate::chunked::ChunkedScanner;
use crate::{Limits, ParseError};

/// The rest of one request body.
#[derive(Debug, Clone)]
pub enum BodyStream {
    /// A `Content-Length` body: this many bytes still to come.
    Fixed { left: u64 },
    /// A chunked body, decoded one piece at a time.
    Chunked(ChunkedScanner),
}

/// What one [`BodyStream::decode`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Decoded {
    /// Bytes from the front of the buffer that are done with (the caller drops
    /// them; data ranges lie within them).
    pub consumed: usize,
    /// The body has ended: what follows in the buffer is the next request.
    pub done: bool,
}

impl BodyStream {
    /// Decodes the front of `buf` (the body bytes not consumed yet): `data` gets
    /// each range of `buf` that is body data, in order. A chunked body's
    /// decoded size is bounded by `limits.max_body` ([`ParseError::BodyTooLarge`]
    /// past it) and its trailers by `limits.max_head`.
    pub fn decode<F: FnMut(Range<usize>)>(
        &mut self,
        buf: &[u8],
        limits: &Limits,
        data: &mut F,
    ) -> Result<Decoded, ParseError> {
        match self {
            BodyStream::Fixed { left } => {
                let take = usize::try_from(*left).map_or(buf.len(), |l| l.min(buf.len()));
                if take > 0 {
                    data(0..take);
                }
                *left -= take as u64;
                Ok(Decoded {
                    consumed: take,
                    done: *left == 0,
                })
            }
            BodyStream::Chunked(scanner) => {
                let (consumed, done) =
                    scanner.decode_part(buf, limits.max_body, limits.max_head, data)?;
                Ok(Decoded { consumed, done })
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::decode_chunked;

    const CHUNKED: &[u8] =
        b"5\r\nhello\r\n1;ext=1\r\n \r\n10\r\n0123456789abcdef\r\n0\r\nT: x\r\n\r\nNEXT";

    /// Feeds `wire` in pieces of `step` bytes the way a connection does (keeping
    /// what was not consumed); returns the data and what followed the body.
    fn stream(wire: &[u8], step: usize) -> (Vec<u8>, Vec<u8>) {
        let limits = Limits::default();
        let mut body = BodyStream::Chunked(ChunkedScanner::new());
        let mut buf = Vec::new();
        let mut out = Vec::new();
        let mut fed = 0;
        loop {
            let more = (fed + step).min(wire.len());
            buf.extend_from_slice(&wire[fed..more]);
            fed = more;
            let d = body
                .decode(&buf, &limits, &mut |r| out.extend_from_slice(&buf[r]))
                .expect("valid");
            buf.drain(..d.consumed);
            if d.done {
                return (out, buf);
            }
            assert!(fed < wire.len(), "ran out of input");
        }
    }

    #[test]
    fn chunked_decodes_the_same_split_at_every_byte() {
        let mut whole = Vec::new();
        let end = CHUNKED.len() - 4;
        decode_chunked(&CHUNKED[..end], u64::MAX, 1024, &mut whole).expect("valid");
        for step in 1..=CHUNKED.len() {
            let (data, rest) = stream(CHUNKED, step);
            assert_eq!(data, whole, "step {step}");
            // Only whole pieces are fed, so the rest starts with the next request.
            assert!(
                b"NEXT".starts_with(&rest) || rest.starts_with(b"NEXT"),
                "step {step}"
            );
        }
    }

    #[test]
    fn fixed_stops_at_its_length() {
        let limits = Limits::default();
        let mut body = BodyStream::Fixed { left: 5 };
        let mut got = Vec::new();
        let d = body
            .decode(b"abc", &limits, &mut |r| got.push(r))
            .expect("fixed");
        assert_eq!((d.consumed, d.done), (3, false));
        let d = body
            .decode(b"deGET /", &limits, &mut |r| got.push(r))
            .expect("fixed");
        assert_eq!((d.consumed, d.done), (2, true));
        assert_eq!(got, vec![0..3, 0..2]);
    }

    #[test]
    fn chunked_past_max_body_is_too_large() {
        let limits = Limits {
            max_body: 4,
            ..Limits::default()
        };
        let mut body = BodyStream::Chunked(ChunkedScanner::new());
        let err = body.decode(b"5\r\nhello\r\n", &limits, &mut |_| {});
        assert_eq!(err, Err(ParseError::BodyTooLarge));
    }

    #[test]
    fn a_smuggled_request_in_the_data_stays_data() {
        let limits = Limits::default();
        let wire = b"17\r\nGET /admin HTTP/1.1\r\n\r\n\r\n0\r\n\r\n";
        let mut body = BodyStream::Chunked(ChunkedScanner::new());
        let mut data = Vec::new();
        let d = body
            .decode(wire, &limits, &mut |r| data.extend_from_slice(&wire[r]))
            .expect("valid");
        assert!(d.done);
        assert_eq!(d.consumed, wire.len());
        assert_eq!(data, b"GET /admin HTTP/1.1\r\n\r\n");
    }
}
