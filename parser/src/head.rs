//! The request head: request line and header fields, parsed by httparse into a
//! `Copy` summary of byte offsets ([`Head`]) that borrows nothing, so the bytes can
//! move to another thread and be re-read there. Applies the RFC 9112 framing rules
//! (§3, §6) that decide how long the body is and whether the connection persists.

use std::mem::MaybeUninit;

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
    /// 0 for HTTP/1.0, 1 for HTTP/1.1.
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
    let mut headers = header_slots();
    let mut req = httparse::Request::new(&mut []);
    let len = match req.parse_with_uninit_headers(head_bytes, &mut headers) {
        Ok(httparse::Status::Complete(n)) => n,
        // The caller saw an empty line, so httparse must see one too; if it does not,
        // the bytes before it are not a valid head.
        Ok(httparse::Status::Partial) => return Err(ParseError::InvalidRequestLine),
        Err(e) => return Err(map_httparse(e, buf)),
    };
    if request_line_len(&req).is_some_and(|n| n > limits.max_request_line) {
        return Err(ParseError::RequestLineTooLong);
    }
    summarize(buf, &req, len, limits, fields)
}

/// The common case of a whole head arriving in one read, without first searching
/// for its end: httparse finds the end itself, within the head limit. `None` when
/// the head is incomplete, starts with empty lines, is invalid to httparse or has
/// an over-long request line; the framer then takes its careful path, which gives
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
    let mut headers = header_slots();
    let mut req = httparse::Request::new(&mut []);
    let Ok(httparse::Status::Complete(len)) = req.parse_with_uninit_headers(window, &mut headers)
    else {
        return None;
    };
    if request_line_len(&req)? > limits.max_request_line {
        return None;
    }
    Some(summarize(buf, &req, len, limits, fields))
}

/// Room for [`MAX_HEADERS`] fields that httparse fills in; left uninitialised
/// because zeroing 100 slots per request cost as much as a fifth of framing a
/// typical GET (see bench/RESULTS.md).
fn header_slots<'b>() -> [MaybeUninit<httparse::Header<'b>>; MAX_HEADERS] {
    [MaybeUninit::uninit(); MAX_HEADERS]
}

/// The request line without its CRLF: httparse accepted exactly
/// `method SP target SP HTTP/1.x`, so it spans from the method to 9 bytes past the
/// end of the target.
fn request_line_len(req: &httparse::Request<'_, '_>) -> Option<usize> {
    let (method, target) = (req.method?, req.path?);
    Some(target.as_ptr() as usize + target.len() - method.as_ptr() as usize + b" HTTP/1.1".len())
}

/// The [`Head`] of a request httparse has parsed from `buf` (`len` bytes of head),
/// with the RFC 9112 checks on its target and framing fields. Appends the fields'
/// spans to `fields`.
fn summarize(
    buf: &[u8],
    req: &httparse::Request<'_, '_>,
    len: usize,
    limits: &Limits,
    fields: &mut Vec<Field>,
) -> Result<Head, ParseError> {
    let method = req.method.ok_or(ParseError::InvalidRequestLine)?;
    let target = req.path.ok_or(ParseError::InvalidRequestLine)?;
    let minor_version = req.version.ok_or(ParseError::InvalidRequestLine)?;
    let method_kind = method_kind(method.as_bytes());
    if method == "CONNECT" {
        return Err(ParseError::MethodNotImplemented);
    }

    let (path, query) = split_target(buf, target.as_bytes(), method_kind)?;

    let mut content_length: Option<u64> = None;
    let mut chunked = false;
    let mut has_te = false;
    let mut host_count = 0u32;
    let mut close = false;
    let mut keep_alive_token = false;
    let mut expect_continue = false;
    fields.reserve(req.headers.len());
    for h in req.headers.iter() {
        let name = h.name.as_bytes();
        fields.push(Field {
            name: Span::of(buf, name),
            value: Span::of(buf, h.value),
        });
        // Length and first letter (lowercased by `| 0x20`) rule out most fields
        // before a full comparison: this loop runs for every field of every request.
        match (name.len(), name.first().map_or(0, |&b| b | 0x20)) {
            (4, b'h') if name.eq_ignore_ascii_case(b"host") => host_count += 1,
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
        if !only_chunked(req.headers) {
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
        method: Span::of(buf, method.as_bytes()),
        method_kind,
        target: Span::of(buf, target.as_bytes()),
        path,
        query,
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

/// Validates a request line that may not be followed by a complete head yet, so a
/// client sending garbage gets its 400 without the server waiting for more bytes.
/// Returns `Ok(())` when the bytes so far can still become a valid request.
pub fn check_partial(buf: &[u8]) -> Result<(), ParseError> {
    let mut headers = header_slots();
    let mut req = httparse::Request::new(&mut []);
    match req.parse_with_uninit_headers(buf, &mut headers) {
        Ok(_) => Ok(()),
        // The header array can only be too small once the head is complete.
        Err(httparse::Error::TooManyHeaders) => Ok(()),
        Err(e) => Err(map_httparse(e, buf)),
    }
}

fn map_httparse(e: httparse::Error, buf: &[u8]) -> ParseError {
    match e {
        httparse::Error::HeaderName | httparse::Error::HeaderValue => ParseError::InvalidHeader,
        httparse::Error::NewLine => ParseError::InvalidHeader,
        httparse::Error::Status => ParseError::InvalidRequestLine,
        httparse::Error::Token => ParseError::InvalidMethod,
        httparse::Error::TooManyHeaders => ParseError::TooManyHeaders,
        httparse::Error::Version => version_error(buf),
    }
}

/// httparse reports any trouble after the target as a version error. Only a third
/// field that really is `HTTP/...` means an unsupported version (505); anything
/// else, such as a space inside the target, is a malformed request line (400).
/// httparse stops at the first byte that cannot be `HTTP/1.0` or `HTTP/1.1`, so only
/// the field's first five bytes may decide: what follows them may not have arrived
/// yet, and the answer must not depend on how the request was cut.
fn version_error(buf: &[u8]) -> ParseError {
    let start = buf
        .iter()
        .position(|&b| b != b'\r' && b != b'\n')
        .unwrap_or(buf.len());
    let line = &buf[start..];
    let line = &line[..line
        .iter()
        .position(|&b| b == b'\r' || b == b'\n')
        .unwrap_or(line.len())];
    let mut fields = line.splitn(3, |&b| b == b' ');
    match (fields.next(), fields.next(), fields.next()) {
        (Some(_), Some(_), Some(version)) if version.starts_with(b"HTTP/") => {
            ParseError::UnsupportedVersion
        }
        _ => ParseError::InvalidRequestLine,
    }
}

fn method_kind(m: &[u8]) -> Method {
    match m {
        b"GET" => Method::Get,
        b"HEAD" => Method::Head,
        b"POST" => Method::Post,
        b"PUT" => Method::Put,
        b"DELETE" => Method::Delete,
        b"OPTIONS" => Method::Options,
        b"PATCH" => Method::Patch,
        _ => Method::Other,
    }
}

/// Splits the request-target into path and query (RFC 9112 §3.2): origin-form
/// `/p?q`, absolute-form `http://host/p?q`, asterisk-form `*` (OPTIONS only).
fn split_target(buf: &[u8], target: &[u8], method: Method) -> Result<(Span, Span), ParseError> {
    let whole = Span::of(buf, target);
    let path_start = if target.first() == Some(&b'/') {
        0
    } else if target == b"*" {
        if method != Method::Options {
            return Err(ParseError::InvalidTarget);
        }
        let empty = Span {
            start: whole.end,
            end: whole.end,
        };
        return Ok((empty, empty));
    } else if let Some(rest) = absolute_form_rest(target) {
        target.len() - rest.len()
    } else {
        return Err(ParseError::InvalidTarget);
    };
    let path_and_query = &target[path_start..];
    let (path_len, query) = match path_and_query.iter().position(|&b| b == b'?') {
        Some(q) => (q, &path_and_query[q + 1..]),
        None => (
            path_and_query.len(),
            &path_and_query[path_and_query.len()..],
        ),
    };
    let path = Span {
        start: whole.start + path_start as u32,
        end: whole.start + (path_start + path_len) as u32,
    };
    Ok((path, Span::of(buf, query)))
}

/// For `http://authority/path?q` returns `/path?q` (possibly empty); `None` when the
/// target is not absolute-form.
fn absolute_form_rest(target: &[u8]) -> Option<&[u8]> {
    let colon = target.iter().position(|&b| b == b':')?;
    let scheme = &target[..colon];
    if scheme.is_empty()
        || !scheme[0].is_ascii_alphabetic()
        || !scheme
            .iter()
            .all(|&b| b.is_ascii_alphanumeric() || b == b'+' || b == b'-' || b == b'.')
    {
        return None;
    }
    let rest = target[colon + 1..].strip_prefix(b"//")?;
    let authority_end = rest
        .iter()
        .position(|&b| b == b'/' || b == b'?')
        .unwrap_or(rest.len());
    if authority_end == 0 {
        return None;
    }
    Some(&rest[authority_end..])
}

fn parse_content_length(v: &[u8]) -> Result<u64, ParseError> {
    if v.is_empty() || v.len() > 19 {
        return Err(ParseError::InvalidContentLength);
    }
    let mut n: u64 = 0;
    for &b in v {
        if !b.is_ascii_digit() {
            return Err(ParseError::InvalidContentLength);
        }
        n = n * 10 + u64::from(b - b'0');
    }
    Ok(n)
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
