//! pyrs-parser: zero-copy framing of pipelined HTTP/1.1 requests (RFC 9112).
//!
//! This crate knows nothing about sockets, threads or Python. A connection owns one
//! [`Framer`] and calls [`Framer::poll`] with the unconsumed bytes it has buffered;
//! the answer is [`Progress::Partial`] (read more), a complete [`Frame`] (request
//! head summary plus where its body lies in those bytes), or a [`ParseError`] whose
//! [`ParseError::status`] is the HTTP status to answer before closing. Incomplete
//! input is a status, not an error; the framer remembers how far it scanned so a
//! head or chunked body arriving in many reads is not rescanned from byte 0.

mod body;
mod chunked;
mod error;
mod head;
mod line;
mod syntax;

pub use body::{BodyStream, Decoded};
pub use chunked::{decode as decode_chunked, ChunkedScanner, MAX_CHUNK_LINE};
pub use error::ParseError;
pub use head::{parse_head, BodyKind, Field, Head, Method, Span};
pub use syntax::is_tchar;

/// Most header fields accepted in one request head; more is a 431.
pub const MAX_HEADERS: usize = 100;
/// Longest method token accepted; a longer one is a 501 (RFC 9110 §9.1: a
/// method the server does not recognise). The longest method in IANA's HTTP Method
/// Registry, `UPDATEREDIRECTREF`, is 17 bytes; 32 leaves room for unregistered
/// methods a handler may serve (any token up to this length reaches the router)
/// while a client cannot make the method itself a place to park kilobytes.
pub const MAX_METHOD_LEN: usize = 32;
/// Default bound on request line plus header fields (the `max_head_size` key).
pub const DEFAULT_MAX_HEAD: usize = 16 * 1024;
/// Default bound on the request line alone; longer is a 414.
pub const DEFAULT_MAX_REQUEST_LINE: usize = 8 * 1024;
/// Default bound on a request body (the `max_body_size` key); larger is a 413.
pub const DEFAULT_MAX_BODY: u64 = 16 * 1024 * 1024;
/// Chunked framing may add this much beyond `max_body` on the wire (chunk lines,
/// extensions, trailers) before the body is refused as too large.
pub const CHUNKED_OVERHEAD_ALLOWANCE: u64 = 64 * 1024;

/// Size limits applied while framing; see the `DEFAULT_*` constants.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    pub max_head: usize,
    pub max_request_line: usize,
    pub max_body: u64,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_head: DEFAULT_MAX_HEAD,
            max_request_line: DEFAULT_MAX_REQUEST_LINE,
            max_body: DEFAULT_MAX_BODY,
        }
    }
}

/// Where a request's body lies in the buffer given to [`Framer::poll`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Body {
    None,
    /// `Content-Length` body: exactly `buf[start..end]`.
    Fixed {
        start: usize,
        end: usize,
    },
    /// Chunked body: the wire bytes `buf[start..end]`, which [`decode_chunked`]
    /// turns into `decoded_len` bytes of data.
    Chunked {
        start: usize,
        end: usize,
        decoded_len: u64,
    },
}

/// One complete request: its head, its body, and how many bytes of the buffer it
/// occupies (`len`); the next request starts at `buf[len..]`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Frame {
    pub head: Head,
    pub body: Body,
    pub len: usize,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Progress {
    /// More bytes are needed.
    Partial,
    Complete(Frame),
}

#[derive(Debug, Clone)]
enum Stage {
    /// Looking for the end of a head; `scanned` bytes were already searched.
    Head { scanned: usize, line_checked: bool },
    /// Head parsed, waiting for `Content-Length` bytes.
    Fixed { head: Head, end: usize },
    /// Head parsed, scanning a chunked body.
    Chunked { head: Head, scanner: ChunkedScanner },
}

/// Per-connection framing state. Feed it the same buffer (with more bytes appended)
/// until it returns a frame, then drop `frame.len` bytes from the front of the
/// buffer; the framer is then ready for the next request.
#[derive(Debug, Clone)]
pub struct Framer {
    state: Stage,
    /// The header fields of the head in `state` (or of the frame just returned).
    fields: Vec<Field>,
}

impl Default for Framer {
    fn default() -> Self {
        Self::new()
    }
}

impl Framer {
    pub fn new() -> Self {
        Framer {
            state: Stage::Head {
                scanned: 0,
                line_checked: false,
            },
            fields: Vec::new(),
        }
    }

    /// The header fields of the request whose frame [`Framer::poll`] just returned
    /// (or whose head is complete and body awaited), as spans into the same buffer
    /// as the frame's [`Head`]. Valid until the next `poll` starts a new head.
    pub fn fields(&self) -> &[Field] {
        &self.fields
    }

    /// The head of a request whose body has not fully arrived (for
    /// `Expect: 100-continue`), `None` while no head is complete.
    pub fn awaiting_body(&self) -> Option<&Head> {
        match &self.state {
            Stage::Head { .. } => None,
            Stage::Fixed { head, .. } | Stage::Chunked { head, .. } => Some(head),
        }
    }

    /// For a request whose head is complete and whose body is awaited: how
    /// large the body is known to be so far, `buf_len` bytes (from the head's
    /// start) having arrived. A `Content-Length` body's length; for a chunked
    /// body, the sizes its chunk lines announced or the wire bytes received,
    /// whichever is more. `None` while no head is complete.
    pub fn body_size_hint(&self, buf_len: usize) -> Option<u64> {
        match &self.state {
            Stage::Head { .. } => None,
            Stage::Fixed { head, end } => Some((end - head.len) as u64),
            Stage::Chunked { head, scanner } => {
                let wire = buf_len.saturating_sub(head.len) as u64;
                Some(scanner.decoded_len().max(wire))
            }
        }
    }

    /// Hands over the body of the request whose head is complete (see
    /// [`Framer::awaiting_body`]): its head, and a [`BodyStream`] to decode the
    /// body as it arrives, starting at `buf[head.len]`. The framer is then ready
    /// for the request after that body. `None` while no head is complete.
    pub fn stream_body(&mut self) -> Option<(Head, BodyStream)> {
        let taken = match &self.state {
            Stage::Head { .. } => return None,
            Stage::Fixed { head, end } => (
                *head,
                BodyStream::Fixed {
                    left: (end - head.len) as u64,
                },
            ),
            // Scanned again from the body's first byte, this time for its data.
            Stage::Chunked { head, .. } => (*head, BodyStream::Chunked(ChunkedScanner::new())),
        };
        self.state = Stage::Head {
            scanned: 0,
            line_checked: false,
        };
        Some(taken)
    }

    /// Frames the request at the start of `buf`.
    pub fn poll(&mut self, buf: &[u8], limits: &Limits) -> Result<Progress, ParseError> {
        loop {
            match &mut self.state {
                Stage::Head {
                    scanned,
                    line_checked,
                } => {
                    // On the first look at a request, try the whole head in one
                    // pass; otherwise (or if that is not conclusive) find its end
                    // first, resuming where the last read stopped.
                    let first_look = *scanned == 0 && !*line_checked;
                    let fields = &mut self.fields;
                    fields.clear();
                    let head = match first_look.then(|| head::parse_whole_head(buf, limits, fields))
                    {
                        Some(Some(head)) => head?,
                        _ => {
                            let Some(end) = find_head_end(buf, scanned, line_checked, limits)?
                            else {
                                return Ok(Progress::Partial);
                            };
                            fields.clear();
                            parse_head(buf, end, limits, fields)?
                        }
                    };
                    self.state = match head.body {
                        BodyKind::None => {
                            return Ok(self.complete(head, Body::None, head.len));
                        }
                        BodyKind::Length(n) => Stage::Fixed {
                            head,
                            // n <= max_body was checked by parse_head.
                            end: head.len + n as usize,
                        },
                        BodyKind::Chunked => Stage::Chunked {
                            head,
                            scanner: ChunkedScanner::new(),
                        },
                    };
                }
                Stage::Fixed { head, end } => {
                    if buf.len() < *end {
                        return Ok(Progress::Partial);
                    }
                    let (head, end) = (*head, *end);
                    let body = Body::Fixed {
                        start: head.len,
                        end,
                    };
                    return Ok(self.complete(head, body, end));
                }
                Stage::Chunked { head, scanner } => {
                    let body_bytes = &buf[head.len..];
                    // The scanner sees no more than the wire cap, so an error beyond
                    // it is not found in one read and missed in another: a body
                    // still unfinished past the cap is a 413 however it arrived.
                    let wire_cap = limits
                        .max_body
                        .saturating_add(CHUNKED_OVERHEAD_ALLOWANCE)
                        .saturating_mul(2);
                    let seen = usize::try_from(wire_cap)
                        .map_or(body_bytes.len(), |cap| body_bytes.len().min(cap));
                    match scanner.scan(&body_bytes[..seen], limits.max_body, limits.max_head)? {
                        Some(n) => {
                            let head = *head;
                            let body = Body::Chunked {
                                start: head.len,
                                end: head.len + n,
                                decoded_len: scanner.decoded_len(),
                            };
                            return Ok(self.complete(head, body, head.len + n));
                        }
                        None => {
                            if body_bytes.len() as u64 > wire_cap {
                                return Err(ParseError::BodyTooLarge);
                            }
                            return Ok(Progress::Partial);
                        }
                    }
                }
            }
        }
    }

    fn complete(&mut self, head: Head, body: Body, len: usize) -> Progress {
        self.state = Stage::Head {
            scanned: 0,
            line_checked: false,
        };
        Progress::Complete(Frame { head, body, len })
    }
}

/// Finds the end of the head (just past the empty line) in `buf`, resuming the
/// search at `*scanned`. Checks the request line as soon as it is complete (and
/// what has arrived of it before), and the head limit while waiting.
///
/// Every verdict depends only on a prefix of `buf` fixed by the bytes themselves
/// (the request line up to its limit, the head up to its limit), never on how much
/// happened to arrive in one read, so a request cut anywhere frames the same way.
fn find_head_end(
    buf: &[u8],
    scanned: &mut usize,
    line_checked: &mut bool,
    limits: &Limits,
) -> Result<Option<usize>, ParseError> {
    let Some(lead) = head::skip_empty_lines(buf, limits)? else {
        return Ok(None);
    };
    if !*line_checked {
        // Garbage is refused at once rather than after a timeout.
        match line::parse_line(buf, lead, line::LineLimit::of(limits))? {
            Some(_) => *line_checked = true,
            None if buf.len() - lead > limits.max_head => return Err(ParseError::HeadTooLarge),
            None => return Ok(None),
        }
    }
    let mut i = (*scanned).max(lead);
    while let Some(off) = buf[i..].iter().position(|&b| b == b'\n') {
        let nl = i + off;
        match (buf.get(nl + 1), buf.get(nl + 2)) {
            (Some(b'\n'), _) => {
                return within_head_limit(nl + 2 - lead, limits).map(|()| Some(nl + 2))
            }
            (Some(b'\r'), Some(b'\n')) => {
                return within_head_limit(nl + 3 - lead, limits).map(|()| Some(nl + 3))
            }
            (Some(b'\r'), None) | (None, _) => break,
            _ => i = nl + 1,
        }
    }
    if buf.len() - lead > limits.max_head {
        return Err(ParseError::HeadTooLarge);
    }
    *scanned = buf.len().saturating_sub(2);
    Ok(None)
}

fn within_head_limit(len: usize, limits: &Limits) -> Result<(), ParseError> {
    if len > limits.max_head {
        Err(ParseError::HeadTooLarge)
    } else {
        Ok(())
    }
}

#[cfg(test)]
mod tests;
