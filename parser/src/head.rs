//! The request head: the request line (read by `line.rs`) and the header fields
//! (parsed by httparse), summed up in a `Copy` set of byte offsets ([`Head`]) that
//! borrows nothing, so the bytes can move to another thread and be re-read there.
//! Applies the RFC 9112 rules on the fields (§3.2 Host, §6 framing) that decide
//! how long the body is and whether the connection persists.

use crate::line::{parse_line, Line, LineLimit};
use crate::syntax::is_authority;
use crate::{Limits, ParseError, MAX_HEADERS};

/// A byte range inside the buffer a request was parsed from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Hash)]
pub struct Span {
    pub start: u32,
    pub end: u32,
}

impl Span {
    /// The bytes this span covers in `buf` (the buffer it was parsed from).
    #[inline]
    pub fn get<'a>(&self, buf: &'a [u8]) -> &'a [u8] {
        &buf[self.start as usize..self.end as usize]
    }

    #[inline]
    pub fn is_empty(&self) -> bool {
        self.start == self.end
    }

    fn of(buf: &[u8], part: &[u8]) -> Span {
        // `part` is a subslice of `buf` handed back by httparse.
        let start = part.as_ptr() as usize - buf.as_ptr() as usize;
        Span {
            start: start as u32,
            end: (start + part.len()) as u32,
        }
    }
}

/// One header field of a request head, as spans into the buffer it was parsed
/// from: the name as sent, and the value without surrounding whitespace. The
/// framer keeps them beside the [`Head`] (see `Framer::fields`), so the server can
/// hand them on with the request bytes instead of parsing the head again.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Hash)]
pub struct Field {
    pub name: Span,
    pub value: Span,
}

/// The methods the framing layer treats specially; everything else is `Other`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Method {
    Get,
    Head,
    Post,
    Put,
    Delete,
    Options,
    Patch,
    Other,
}

/// How the body of a request is delimited (RFC 9112 §6.3).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum BodyKind {
    /// No `Content-Length` and no `Transfer-Encoding`: no body.
    None,
    /// `Content-Length: n`.
    Length(u64),
    /// `Transfer-Encoding: chunked`.
    Chunked,
}

/// What the server needs to know about one request head; all offsets index the
/// buffer passed to [`parse_head`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Head {
    /// Bytes from the start of the buffer up to and including the empty line that
    /// ends the head (so including any skipped leading empty lines).
    pub len: usize,
    pub method: Span,
    pub method_kind: Method,
    /// The request-target as sent.
    pub target: Span,
    /// The path part of the target, without query. Empty for `*` and for an
    /// absolute-form target without a path (both mean `/` for routing, see
    /// [`Head::path_bytes`]).
    pub path: Span,
    /// The query string without the `?`; empty when there is none.
    pub query: Span,
    /// 0 for HTTP/1.0; 1 for HTTP/1.1 and for any later HTTP/1.x, which RFC 9110
    /// §2.5 has a server process as the highest minor version it implements.
    pub minor_version: u8,
    pub body: BodyKind,
    /// Whether the connection stays open after this request's response.
    pub keep_alive: bool,
    /// `Expect: 100-continue` was sent.
    pub expect_continue: bool,
}

impl Head {
    /// The path used for routing: the path span, or `/` when it is empty.
    #[inline]
    pub fn path_bytes<'a>(&self, buf: &'a [u8]) -> &'a [u8] {
        if self.path.is_empty() {
            b"/"
        } else {
            self.path.get(buf)
        }
    }
}

/// Parses one complete request head at the start of `buf`. The caller has found the
/// empty line that ends it at `buf[..end]`; anything after `end` is not looked at.
/// The head's fields are appended to `fields` (which the caller has emptied).
pub fn parse_head(
    buf: &[u8],
    end: usize,
    limits: &Limits,
    fields: &mut Vec<Field>,
) -> Result<Head, ParseError> {
    let head_bytes = &buf[..end];
    let lead = match skip_empty_lines(head_bytes, limits)? {
        Some(lead) => lead,
        None => return Err(ParseError::InvalidRequestLine),
    };
    // The caller saw the line's end and the empty line, so both parsers must see
    // them too; if one does not, the bytes before them are not a valid head.
    let line = parse_line(head_bytes, lead, LineLimit::of(limits))?
        .ok_or(ParseError::InvalidRequestLine)?;
    with_fields(&head_bytes[line.end..], |parsed| match parsed {
        Ok(httparse::Status::Complete((n, headers))) => {
            summarize(buf, &line, headers, line.end + n, limits, fields)
        }
        Ok(httparse::Status::Partial) => Err(ParseError::InvalidHeader),
        Err(e) => Err(map_httparse(e)),
    })
}

/// The common case of a whole head arriving in one read, without first searching
/// for its end: the field parser finds the end itself, within the head limit.
/// `None` when the head is incomplete, starts with empty lines, or is invalid or
/// over a limit anywhere; the framer then takes its careful path, which gives
/// every input the same answer however it is cut. Where this returns `Some`, the
/// careful path would find the same end and return the same result.
pub(crate) fn parse_whole_head(
    buf: &[u8],
    limits: &Limits,
    fields: &mut Vec<Field>,
) -> Option<Result<Head, ParseError>> {
    if matches!(buf.first(), None | Some(b'\r' | b'\n')) {
        return None;
    }
    let window = &buf[..buf.len().min(limits.max_head)];
    let line = parse_line(window, 0, LineLimit::of(limits)).ok()??;
    with_fields(&window[line.end..], |parsed| match parsed {
        Ok(httparse::Status::Complete((n, headers))) => {
            Some(summarize(buf, &line, headers, line.end + n, limits, fields))
        }
        _ => None,
    })
}

/// Header slots tried first: enough for the fields of nearly every request. A
/// head with more is parsed again with [`MAX_HEADERS`] slots. httparse's
/// field-only parser needs initialised slots, and filling all of them for every
/// request cost as much as a fifth of framing a typical GET (see bench/RESULTS.md).
const FEW_HEADERS: usize = 16;

type Fields<'h, 'b> = httparse::Result<(usize, &'h [httparse::Header<'b>])>;

/// Runs httparse's field-section parser over `section` (the bytes after the
/// request line) and hands its answer to `k`.
fn with_fields<'b, R>(section: &'b [u8], k: impl FnOnce(Fields<'_, 'b>) -> R) -> R {
    let mut few = [httparse::EMPTY_HEADER; FEW_HEADERS];
    match httparse::parse_headers(section, &mut few) {
        Err(httparse::Error::TooManyHeaders) => {
            let mut all = [httparse::EMPTY_HEADER; MAX_HEADERS];
            k(httparse::parse_headers(section, &mut all))
        }
        parsed => k(parsed),
    }
}

/// How many bytes of empty lines (CRLF or LF, RFC 9112 §2.2) precede the request
/// line; `None` while that is not known yet. A bare CR there is invalid, and so
/// is more than a head's worth of empty lines.
pub(crate) fn skip_empty_lines(buf: &[u8], limits: &Limits) -> Result<Option<usize>, ParseError> {
    let mut i = 0;
    loop {
        if i > limits.max_head {
            return Err(ParseError::HeadTooLarge);
        }
        match buf.get(i) {
            Some(b'\n') => i += 1,
            Some(b'\r') => match buf.get(i + 1) {
                Some(b'\n') => i += 2,
                Some(_) => return Err(ParseError::InvalidRequestLine),
                None => return Ok(None),
            },
            Some(_) => return Ok(Some(i)),
            None => return Ok(None),
        }
    }
}

/// The [`Head`] of a request whose line is `line` and whose field section,
/// `headers`, ends the head at `buf[..len]`, with the RFC 9112 checks on its
/// framing fields. Appends the fields' spans to `fields`.
fn summarize(
    buf: &[u8],
    line: &Line,
    headers: &[httparse::Header<'_>],
    len: usize,
    limits: &Limits,
    fields: &mut Vec<Field>,
) -> Result<Head, ParseError> {
    let minor_version = line.minor_version;
    let mut content_length: Option<u64> = None;
    let mut chunked = false;
    let mut has_te = false;
    let mut host_count = 0u32;
    let mut close = false;
    let mut keep_alive_token = false;
    let mut expect_continue = false;
    fields.reserve(headers.len());
    for h in headers {
        let name = h.name.as_bytes();
        fields.push(Field {
            name: Span::of(buf, name),
            value: Span::of(buf, h.value),
        });
        // Length and first letter (lowercased by `| 0x20`) rule out most fields
        // before a full comparison: this loop runs for every field of every request.
        match (name.len(), name.first().map_or(0, |&b| b | 0x20)) {
            (4, b'h') if name.eq_ignore_ascii_case(b"host") => {
                host_count += 1;
                // RFC 9112 §3.2: "A server MUST respond with a 400 (Bad Request)
                // status code to any HTTP/1.1 request message that lacks a Host
                // header field and to any request message that contains more than
                // one Host header field line or a Host header field with an
                // invalid field value." An empty value is valid: "If the authority
                // component is missing or undefined for the target URI, then a
                // client MUST send a Host header field with an empty field value."
                // For absolute-form the value is checked, then ignored (§3.2.2).
                if !is_authority(trim(h.value), true) {
                    return Err(ParseError::InvalidHostValue);
                }
            }
            (6, b'e')
                if name.eq_ignore_ascii_case(b"expect")
                    && trim(h.value).eq_ignore_ascii_case(b"100-continue") =>
            {
                expect_continue = true;
            }
            (10, b'c') if name.eq_ignore_ascii_case(b"connection") => {
                for token in h.value.split(|&b| b == b',') {
                    let token = trim(token);
                    if token.eq_ignore_ascii_case(b"close") {
                        close = true;
                    } else if token.eq_ignore_ascii_case(b"keep-alive") {
                        keep_alive_token = true;
                    }
                }
            }
            (14, b'c') if name.eq_ignore_ascii_case(b"content-length") => {
                // A list ("5, 5") or repeated fields are accepted only when every
                // value is the same (RFC 9112 §6.3 item 5).
                for part in h.value.split(|&b| b == b',') {
                    let value = parse_content_length(trim(part))?;
                    match content_length {
                        Some(prev) if prev != value => {
                            return Err(ParseError::DifferingContentLengths)
                        }
                        _ => content_length = Some(value),
                    }
                }
            }
            (17, b't') if name.eq_ignore_ascii_case(b"transfer-encoding") => {
                has_te = true;
                // Codings accumulate across repeated fields; `chunked` must be the
                // last one and appear only once.
                for coding in h.value.split(|&b| b == b',') {
                    let coding = trim(coding);
                    if coding.is_empty() {
                        continue;
                    }
                    if chunked {
                        // Something after `chunked`: the final coding is not chunked.
                        return Err(ParseError::InvalidTransferEncoding);
                    }
                    if coding.eq_ignore_ascii_case(b"chunked") {
                        chunked = true;
                    } else if !is_token(coding) {
                        return Err(ParseError::InvalidTransferEncoding);
                    }
                    // Another coding (gzip, ...) is valid syntax: if chunked follows
                    // it we would have to decode it (501), if not the framing is
                    // invalid for a request (400); both decided below.
                }
            }
            _ => {}
        }
    }

    let body = if has_te {
        if minor_version == 0 {
            // RFC 9112 §6.1: a server MUST treat TE in HTTP/1.0 as faulty framing.
            return Err(ParseError::InvalidTransferEncoding);
        }
        if content_length.is_some() {
            return Err(ParseError::LengthAndTransferEncoding);
        }
        if !chunked {
            return Err(ParseError::InvalidTransferEncoding);
        }
        if !only_chunked(headers) {
            return Err(ParseError::UnsupportedTransferCoding);
        }
        BodyKind::Chunked
    } else {
        match content_length {
            Some(0) | None => BodyKind::None,
            Some(n) => BodyKind::Length(n),
        }
    };
    if let BodyKind::Length(n) = body {
        if n > limits.max_body {
            return Err(ParseError::BodyTooLarge);
        }
    }
    if minor_version == 1 && host_count != 1 {
        return Err(ParseError::InvalidHost);
    }
    if host_count > 1 {
        return Err(ParseError::InvalidHost);
    }
    let keep_alive = if minor_version == 1 {
        !close
    } else {
        keep_alive_token && !close
    };

    Ok(Head {
        len,
        method: line.method,
        method_kind: line.method_kind,
        target: line.target,
        path: line.path,
        query: line.query,
        minor_version,
        body,
        keep_alive,
        expect_continue: expect_continue && minor_version == 1,
    })
}

/// Whether every Transfer-Encoding coding in `headers` is `chunked`.
fn only_chunked(headers: &[httparse::Header<'_>]) -> bool {
    headers
        .iter()
        .filter(|h| h.name.eq_ignore_ascii_case("transfer-encoding"))
        .flat_map(|h| h.value.split(|&b| b == b','))
        .map(trim)
        .filter(|c| !c.is_empty())
        .all(|c| c.eq_ignore_ascii_case(b"chunked"))
}

fn map_httparse(e: httparse::Error) -> ParseError {
    match e {
        httparse::Error::TooManyHeaders => ParseError::TooManyHeaders,
        // Only the field section goes to httparse, so every other error is in a
        // field line (a name, a value, or a line end).
        _ => ParseError::InvalidHeader,
    }
}

/// `Content-Length = 1*DIGIT` (RFC 9110 §8.6); leading zeros are allowed and do
/// not count towards the 19 digits that always fit in 64 bits.
fn parse_content_length(v: &[u8]) -> Result<u64, ParseError> {
    if v.is_empty() || !v.iter().all(u8::is_ascii_digit) {
        return Err(ParseError::InvalidContentLength);
    }
    let zeros = v.iter().take_while(|&&b| b == b'0').count();
    let digits = &v[zeros..];
    if digits.len() > 19 {
        return Err(ParseError::InvalidContentLength);
    }
    Ok(digits.iter().fold(0, |n, &b| n * 10 + u64::from(b - b'0')))
}

fn trim(v: &[u8]) -> &[u8] {
    let start = v
        .iter()
        .position(|&b| b != b' ' && b != b'\t')
        .unwrap_or(v.len());
    let end = v
        .iter()
        .rposition(|&b| b != b' ' && b != b'\t')
        .map_or(start, |p| p + 1);
    &v[start..end]
}

fn is_token(v: &[u8]) -> bool {
    !v.is_empty() && v.iter().all(|&b| crate::is_tchar(b))
}
