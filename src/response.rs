//! Every response byte is laid out here: status line, the headers pyrs owns,
//! content-type rules, validation of the header fields a handler supplies, and the
//! body. Used by the reactors (404, 4xx errors, 100 Continue) and by the Python
//! worker (handler results); both append to a `BytesMut` that is later written
//! with one syscall. Knows no Python: the worker turns Python values into bytes
//! and calls [`simple`] or [`Builder`]. Every response carries `Server`, `Date`
//! and, where RFC 9110 allows it, `Content-Length`; the body is omitted for HEAD.

use std::cell::RefCell;

use bytes::{BufMut, BytesMut};
use pyrs_parser::{is_tchar, Head, Method};
use thiserror::Error;

use crate::date;

/// A header field supplied by a handler that cannot go on the wire.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum HeaderError {
    /// Empty, or not an RFC 9110 token.
    #[error("invalid header name {0:?}")]
    Name(String),
    /// CR, LF, NUL or another control character (TAB is allowed).
    #[error("header value {0:?} contains control characters")]
    Value(String),
}

/// Checks a field value: visible characters, SP, HTAB and obs-text only.
pub fn check_value(value: &[u8]) -> Result<(), HeaderError> {
    if value
        .iter()
        .all(|&b| b == b'\t' || (b >= 0x20 && b != 0x7f))
    {
        Ok(())
    } else {
        Err(HeaderError::Value(
            String::from_utf8_lossy(value).into_owned(),
        ))
    }
}

/// Checks a field name: an RFC 9110 token.
pub fn check_name(name: &[u8]) -> Result<(), HeaderError> {
    if !name.is_empty() && name.iter().all(|&b| is_tchar(b)) {
        Ok(())
    } else {
        Err(HeaderError::Name(
            String::from_utf8_lossy(name).into_owned(),
        ))
    }
}

/// A response whose header fields come from a handler, written straight into the
/// output buffer: [`Builder::new`] writes the status line and pyrs's own headers,
/// [`Builder::header`] checks and appends each field, [`Builder::finish`] adds
/// the content type (unless a field set one), the framing and the body. After an
/// error the caller truncates `out` to where it started.
pub struct Builder<'a> {
    out: &'a mut BytesMut,
    status: u16,
    has_content_type: bool,
    /// The `Content-Length` the handler declared: used only for a HEAD answer
    /// whose handler produced no body (frameworks answer HEAD with the length a
    /// GET would have, RFC 9110 §9.3.2); otherwise pyrs counts the body.
    declared_length: Option<usize>,
}

impl<'a> Builder<'a> {
    pub fn new(out: &'a mut BytesMut, status: u16) -> Builder<'a> {
        start(out, status);
        Builder {
            out,
            status,
            has_content_type: false,
            declared_length: None,
        }
    }

    /// Appends a field after checking it. `Content-Length`, `Transfer-Encoding`,
    /// `Connection`, `Date` and `Server` are pyrs's to write and are dropped; the
    /// first `Content-Type` is kept (none on a response without a body).
    pub fn header(&mut self, name: &[u8], value: &[u8]) -> Result<(), HeaderError> {
        check_name(name)?;
        check_value(value)?;
        let owned = |n: &[u8]| name.eq_ignore_ascii_case(n);
        if owned(b"content-length") {
            self.declared_length = std::str::from_utf8(value)
                .ok()
                .and_then(|v| v.trim().parse().ok());
            return Ok(());
        }
        if owned(b"transfer-encoding") || owned(b"connection") || owned(b"date") || owned(b"server")
        {
            return Ok(());
        }
        if owned(b"content-type") {
            if self.has_content_type || !status_has_body(self.status) {
                return Ok(());
            }
            self.has_content_type = true;
        }
        header(self.out, name, value);
        Ok(())
    }

    /// Ends the response. `content_type` (checked here) applies when no field set
    /// one and the status has a body; `None` adds none.
    pub fn finish(
        self,
        content_type: Option<&[u8]>,
        body: &[u8],
        persist: Persist,
        head_only: bool,
    ) -> Result<(), HeaderError> {
        if let (Some(ct), false, true) = (
            content_type,
            self.has_content_type,
            status_has_body(self.status),
        ) {
            check_value(ct)?;
            header(self.out, b"Content-Type", ct);
        }
        let length = match self.declared_length {
            Some(declared) if head_only && body.is_empty() => declared,
            _ => body.len(),
        };
        finish_with_length(self.out, self.status, length, body, persist, head_only);
        Ok(())
    }
}

/// How a streamed body is delimited on the wire (see [`Builder::finish_streamed`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Framing {
    /// The handler declared a `Content-Length`: this many bytes still to send,
    /// as they are.
    Length(usize),
    /// HTTP/1.1 without a declared length: `Transfer-Encoding: chunked`.
    Chunked,
    /// HTTP/1.0 without a declared length: the body ends with the connection.
    Close,
    /// No body goes on the wire (HEAD, 204, 304): the head is the response.
    Empty,
}

impl Builder<'_> {
    /// Ends the head of a response whose body follows in parts: with the
    /// declared `Content-Length`, else chunked (HTTP/1.1) or close-delimited
    /// (HTTP/1.0, which then says `Connection: close`). Returns how the parts
    /// are to be framed ([`Framing::Empty`] for HEAD and bodiless statuses).
    pub fn finish_streamed(
        self,
        content_type: Option<&[u8]>,
        persist: Persist,
        head_only: bool,
        http10: bool,
    ) -> Result<Framing, HeaderError> {
        let has_body = status_has_body(self.status);
        if let (Some(ct), false, true) = (content_type, self.has_content_type, has_body) {
            check_value(ct)?;
            header(self.out, b"Content-Type", ct);
        }
        if !has_body {
            end_head(self.out, persist);
            return Ok(Framing::Empty);
        }
        let (framing, persist) = match self.declared_length {
            Some(n) => {
                self.out.put_slice(b"Content-Length: ");
                let mut len = itoa::Buffer::new();
                self.out.put_slice(len.format(n).as_bytes());
                self.out.put_slice(b"\r\n");
                (Framing::Length(n), persist)
            }
            None if !http10 => {
                self.out.put_slice(b"Transfer-Encoding: chunked\r\n");
                (Framing::Chunked, persist)
            }
            None if head_only => (Framing::Empty, persist),
            None => (Framing::Close, Persist::Close),
        };
        end_head(self.out, persist);
        Ok(if head_only { Framing::Empty } else { framing })
    }
}

/// Appends `data` as one chunk of a chunked body; nothing for empty data (an
/// empty chunk would end the body).
pub fn chunk(out: &mut BytesMut, data: &[u8]) {
    if data.is_empty() {
        return;
    }
    let mut size = [0u8; 16];
    let mut at = size.len();
    let mut n = data.len();
    while n > 0 || at == size.len() {
        at -= 1;
        size[at] = b"0123456789abcdef"[n % 16];
        n /= 16;
    }
    out.reserve(data.len() + 20);
    out.put_slice(&size[at..]);
    out.put_slice(b"\r\n");
    out.put_slice(data);
    out.put_slice(b"\r\n");
}

/// The end of a chunked body: the last chunk, no trailers.
pub const LAST_CHUNK: &[u8] = b"0\r\n\r\n";

/// What the `Connection` header of a response says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Persist {
    /// HTTP/1.1 keep-alive: the default, no header needed.
    KeepAlive,
    /// HTTP/1.0 client that asked for keep-alive: `Connection: keep-alive`.
    KeepAlive10,
    /// The connection closes after this response: `Connection: close`.
    Close,
}

impl Persist {
    /// What the response to this request says about the connection.
    pub fn of(head: &Head) -> Persist {
        match (head.keep_alive, head.minor_version) {
            (false, _) => Persist::Close,
            (true, 0) => Persist::KeepAlive10,
            (true, _) => Persist::KeepAlive,
        }
    }
}

/// Whether the response to this request carries no body (a HEAD request).
pub fn head_only(head: &Head) -> bool {
    head.method_kind == Method::Head
}

pub const TEXT_HTML: &[u8] = b"text/html; charset=utf-8";
pub const TEXT_PLAIN: &[u8] = b"text/plain; charset=utf-8";
pub const OCTET_STREAM: &[u8] = b"application/octet-stream";
pub const JSON: &[u8] = b"application/json";

/// The reason phrase for a status code (RFC 9110 §15), empty for unknown codes.
pub fn reason(status: u16) -> &'static str {
    match status {
        100 => "Continue",
        101 => "Switching Protocols",
        200 => "OK",
        201 => "Created",
        202 => "Accepted",
        203 => "Non-Authoritative Information",
        204 => "No Content",
        205 => "Reset Content",
        206 => "Partial Content",
        300 => "Multiple Choices",
        301 => "Moved Permanently",
        302 => "Found",
        303 => "See Other",
        304 => "Not Modified",
        307 => "Temporary Redirect",
        308 => "Permanent Redirect",
        400 => "Bad Request",
        401 => "Unauthorized",
        402 => "Payment Required",
        403 => "Forbidden",
        404 => "Not Found",
        405 => "Method Not Allowed",
        406 => "Not Acceptable",
        407 => "Proxy Authentication Required",
        408 => "Request Timeout",
        409 => "Conflict",
        410 => "Gone",
        411 => "Length Required",
        412 => "Precondition Failed",
        413 => "Content Too Large",
        414 => "URI Too Long",
        415 => "Unsupported Media Type",
        416 => "Range Not Satisfiable",
        417 => "Expectation Failed",
        418 => "I'm a teapot",
        421 => "Misdirected Request",
        422 => "Unprocessable Content",
        423 => "Locked",
        424 => "Failed Dependency",
        425 => "Too Early",
        426 => "Upgrade Required",
        428 => "Precondition Required",
        429 => "Too Many Requests",
        431 => "Request Header Fields Too Large",
        451 => "Unavailable For Legal Reasons",
        500 => "Internal Server Error",
        501 => "Not Implemented",
        502 => "Bad Gateway",
        503 => "Service Unavailable",
        504 => "Gateway Timeout",
        505 => "HTTP Version Not Supported",
        507 => "Insufficient Storage",
        508 => "Loop Detected",
        511 => "Network Authentication Required",
        _ => "",
    }
}

/// Whether a response with this status may carry a body and `Content-Length`
/// (RFC 9110 §8.6, §15.3.5: never for 1xx and 204; 304 has no body).
pub fn status_has_body(status: u16) -> bool {
    !(status < 200 || status == 204 || status == 304)
}

/// Writes the status line and the headers every response carries. The caller adds
/// its own headers, then calls [`finish`].
#[inline]
pub fn start(out: &mut BytesMut, status: u16) {
    out.reserve(160);
    if status == 200 {
        out.put_slice(b"HTTP/1.1 200 OK\r\nServer: pyrs\r\nDate: ");
    } else {
        out.put_slice(b"HTTP/1.1 ");
        let mut code = itoa::Buffer::new();
        out.put_slice(code.format(status).as_bytes());
        out.put_u8(b' ');
        out.put_slice(reason(status).as_bytes());
        out.put_slice(b"\r\nServer: pyrs\r\nDate: ");
    }
    out.put_slice(&date::get());
    out.put_slice(b"\r\n");
}

/// Appends one header line. Name and value must already be validated.
#[inline]
pub fn header(out: &mut BytesMut, name: &[u8], value: &[u8]) {
    out.put_slice(name);
    out.put_slice(b": ");
    out.put_slice(value);
    out.put_slice(b"\r\n");
}

/// Ends the head with `Content-Length` (where allowed) and `Connection`, then the
/// body unless `head_only` (a HEAD request) or the status forbids one.
#[inline]
pub fn finish(out: &mut BytesMut, status: u16, body: &[u8], persist: Persist, head_only: bool) {
    finish_with_length(out, status, body.len(), body, persist, head_only);
}

/// [`finish`] with the `Content-Length` given (which is `body.len()` unless a
/// HEAD answer declares what its GET would send).
#[inline]
fn finish_with_length(
    out: &mut BytesMut,
    status: u16,
    length: usize,
    body: &[u8],
    persist: Persist,
    head_only: bool,
) {
    let has_body = status_has_body(status);
    if has_body || status == 304 {
        out.put_slice(b"Content-Length: ");
        let mut len = itoa::Buffer::new();
        out.put_slice(len.format(length).as_bytes());
        out.put_slice(b"\r\n");
    }
    end_head(out, persist);
    if has_body && !head_only {
        out.put_slice(body);
    }
}

/// `Connection` as `persist` says, then the empty line that ends the head.
#[inline]
fn end_head(out: &mut BytesMut, persist: Persist) {
    match persist {
        Persist::KeepAlive => {}
        Persist::KeepAlive10 => out.put_slice(b"Connection: keep-alive\r\n"),
        Persist::Close => out.put_slice(b"Connection: close\r\n"),
    }
    out.put_slice(b"\r\n");
}

/// Like [`simple`] (a `text/plain` body), with `fields` (already valid) after
/// pyrs's own: a 405's `Allow`, a 416's `Content-Range`.
pub fn simple_with(
    out: &mut BytesMut,
    status: u16,
    fields: &[(&[u8], &[u8])],
    body: &[u8],
    persist: Persist,
    head_only: bool,
) {
    start(out, status);
    for (name, value) in fields {
        header(out, name, value);
    }
    if status_has_body(status) {
        header(out, b"Content-Type", TEXT_PLAIN);
    }
    finish(out, status, body, persist, head_only);
}

/// The head of a static file answer: 200, 206 or 304. The body (the file's
/// bytes) follows, sent by the caller.
#[derive(Debug, Clone, Copy)]
pub struct FileHead<'a> {
    pub status: u16,
    /// From the file name's extension.
    pub content_type: &'a str,
    /// Add `; charset=utf-8` (text types).
    pub charset: bool,
    /// `Content-Encoding` of a precompressed sibling (`br`, `gzip`).
    pub encoding: Option<&'a [u8]>,
    /// `Content-Length`: the bytes of this answer (a 206's range; a 304 gives
    /// the length a 200 would have, as RFC 9110 §8.6 allows).
    pub length: u64,
    /// A 206's `Content-Range`: first and last byte, and the file's length.
    pub range: Option<(u64, u64, u64)>,
    pub etag: &'a [u8],
    pub last_modified: &'a [u8],
    /// `Cache-Control` value (`max-age=N`).
    pub cache_control: Option<&'a [u8]>,
    /// Add `Vary: Accept-Encoding` (the mount serves precompressed files).
    pub vary: bool,
}

/// Writes a file answer's head. A 304 carries the validators and caching fields
/// a 200 would (RFC 9110 §15.4.5), not the content's type or encoding.
pub fn file_head(out: &mut BytesMut, h: &FileHead<'_>, persist: Persist) {
    start(out, h.status);
    let mut number = itoa::Buffer::new();
    if h.status != 304 {
        out.put_slice(b"Content-Type: ");
        out.put_slice(h.content_type.as_bytes());
        if h.charset {
            out.put_slice(b"; charset=utf-8");
        }
        out.put_slice(b"\r\n");
        if let Some(encoding) = h.encoding {
            header(out, b"Content-Encoding", encoding);
        }
        out.put_slice(b"Accept-Ranges: bytes\r\n");
    }
    header(out, b"Content-Length", number.format(h.length).as_bytes());
    if let Some((first, last, complete)) = h.range {
        out.put_slice(b"Content-Range: bytes ");
        out.put_slice(number.format(first).as_bytes());
        out.put_u8(b'-');
        out.put_slice(number.format(last).as_bytes());
        out.put_u8(b'/');
        out.put_slice(number.format(complete).as_bytes());
        out.put_slice(b"\r\n");
    }
    header(out, b"ETag", h.etag);
    header(out, b"Last-Modified", h.last_modified);
    if let Some(cache_control) = h.cache_control {
        header(out, b"Cache-Control", cache_control);
    }
    if h.vary {
        out.put_slice(b"Vary: Accept-Encoding\r\n");
    }
    end_head(out, persist);
}

/// Content types with a cached `200 OK` head (see [`simple`]).
const CACHED_TYPES: [&[u8]; 4] = [TEXT_HTML, OCTET_STREAM, JSON, TEXT_PLAIN];

/// Per thread: for each of [`CACHED_TYPES`], the whole head of a `200 OK` up to
/// the `Content-Length` value, rebuilt when the Date second changes.
struct HeadCache {
    second: u64,
    heads: [Vec<u8>; 4],
}

thread_local! {
    static HEADS: RefCell<HeadCache> = const {
        RefCell::new(HeadCache { second: u64::MAX, heads: [Vec::new(), Vec::new(), Vec::new(), Vec::new()] })
    };
}

/// Appends the cached head of a `200 OK` with content type `CACHED_TYPES[i]`.
fn cached_ok_head(out: &mut BytesMut, i: usize) {
    let second = date::second();
    HEADS.with(|cache| {
        let mut cache = cache.borrow_mut();
        if cache.second != second {
            let date = date::get();
            for (head, ct) in cache.heads.iter_mut().zip(CACHED_TYPES) {
                head.clear();
                head.extend_from_slice(b"HTTP/1.1 200 OK\r\nServer: pyrs\r\nDate: ");
                head.extend_from_slice(&date);
                head.extend_from_slice(b"\r\nContent-Type: ");
                head.extend_from_slice(ct);
                head.extend_from_slice(b"\r\nContent-Length: ");
            }
            cache.second = second;
        }
        out.put_slice(&cache.heads[i]);
    });
}

/// A complete response with a `Content-Type`: what the reactors send for errors,
/// and the worker for plain handler results. A `200 OK` of a common type is the
/// hot path: its head comes from a per-thread cache in one copy.
pub fn simple(
    out: &mut BytesMut,
    status: u16,
    content_type: &[u8],
    body: &[u8],
    persist: Persist,
    head_only: bool,
) {
    if status == 200 {
        if let Some(i) = CACHED_TYPES
            .iter()
            .position(|&t| std::ptr::eq(t, content_type) || t == content_type)
        {
            out.reserve(body.len() + 200);
            cached_ok_head(out, i);
            let mut len = itoa::Buffer::new();
            out.put_slice(len.format(body.len()).as_bytes());
            out.put_slice(match persist {
                Persist::KeepAlive => b"\r\n\r\n",
                Persist::KeepAlive10 => b"\r\nConnection: keep-alive\r\n\r\n",
                Persist::Close => b"\r\nConnection: close\r\n\r\n",
            });
            if !head_only {
                out.put_slice(body);
            }
            return;
        }
    }
    start(out, status);
    if status_has_body(status) {
        header(out, b"Content-Type", content_type);
    }
    finish(out, status, body, persist, head_only);
}

/// The interim response sent for `Expect: 100-continue`.
pub const CONTINUE: &[u8] = b"HTTP/1.1 100 Continue\r\n\r\n";

#[cfg(test)]
mod tests {
    use super::*;

    fn text(out: &BytesMut) -> String {
        String::from_utf8_lossy(out).into_owned()
    }

    #[test]
    fn encodes_ok_with_length_and_date() {
        let mut out = BytesMut::new();
        simple(&mut out, 200, TEXT_HTML, b"hi", Persist::KeepAlive, false);
        let s = text(&out);
        assert!(
            s.starts_with("HTTP/1.1 200 OK\r\nServer: pyrs\r\nDate: "),
            "{s}"
        );
        assert!(s.contains("\r\nContent-Type: text/html; charset=utf-8\r\n"));
        assert!(s.ends_with("\r\nContent-Length: 2\r\n\r\nhi"), "{s}");
        assert!(!s.contains("Connection"));
    }

    #[test]
    fn cached_and_built_heads_are_identical() {
        for ct in [
            TEXT_HTML,
            OCTET_STREAM,
            JSON,
            TEXT_PLAIN,
            b"text/csv".as_slice(),
        ] {
            for persist in [Persist::KeepAlive, Persist::KeepAlive10, Persist::Close] {
                for head_only in [false, true] {
                    let mut fast = BytesMut::new();
                    simple(&mut fast, 200, ct, b"body", persist, head_only);
                    let mut slow = BytesMut::new();
                    start(&mut slow, 200);
                    header(&mut slow, b"Content-Type", ct);
                    finish(&mut slow, 200, b"body", persist, head_only);
                    assert_eq!(fast, slow);
                }
            }
        }
    }

    #[test]
    fn head_response_keeps_length_but_drops_body() {
        let mut out = BytesMut::new();
        simple(&mut out, 404, TEXT_PLAIN, b"nope", Persist::Close, true);
        let s = text(&out);
        assert!(s.starts_with("HTTP/1.1 404 Not Found\r\n"));
        assert!(
            s.ends_with("Content-Length: 4\r\nConnection: close\r\n\r\n"),
            "{s}"
        );
    }

    #[test]
    fn no_content_has_no_length_or_body() {
        let mut out = BytesMut::new();
        simple(
            &mut out,
            204,
            TEXT_PLAIN,
            b"ignored",
            Persist::KeepAlive10,
            false,
        );
        let s = text(&out);
        assert!(s.starts_with("HTTP/1.1 204 No Content\r\n"));
        assert!(!s.contains("Content-Length"));
        assert!(!s.contains("Content-Type"));
        assert!(s.ends_with("Connection: keep-alive\r\n\r\n"));
    }

    #[test]
    fn builder_owns_framing_and_checks_fields() {
        let mut out = BytesMut::new();
        let mut b = Builder::new(&mut out, 201);
        b.header(b"X-One", b"1").expect("valid");
        b.header(b"content-length", b"99")
            .expect("dropped, not refused");
        b.header(b"Content-Type", b"text/csv").expect("valid");
        b.header(b"Content-Type", b"text/other")
            .expect("second one dropped");
        assert_eq!(
            b.header(b"Bad Name", b"v"),
            Err(HeaderError::Name("Bad Name".into()))
        );
        assert_eq!(
            b.header(b"X-Evil", b"a\r\nSet-Cookie: x"),
            Err(HeaderError::Value("a\r\nSet-Cookie: x".into()))
        );
        b.finish(Some(TEXT_PLAIN), b"a,b", Persist::KeepAlive, false)
            .expect("valid");
        let s = text(&out);
        assert!(s.starts_with("HTTP/1.1 201 Created\r\nServer: pyrs\r\nDate: "));
        assert!(
            s.ends_with("\r\nX-One: 1\r\nContent-Type: text/csv\r\nContent-Length: 3\r\n\r\na,b")
        );
        assert_eq!(s.matches("Content-Type").count(), 1);
    }

    #[test]
    fn head_answers_keep_a_declared_length_when_they_have_no_body() {
        for (head_only, body, expected) in [
            (true, &b""[..], "Content-Length: 11\r\n"),
            (true, &b"abc"[..], "Content-Length: 3\r\n"),
            (false, &b""[..], "Content-Length: 0\r\n"),
        ] {
            let mut out = BytesMut::new();
            let mut b = Builder::new(&mut out, 200);
            b.header(b"Content-Length", b"11").expect("valid");
            b.finish(None, body, Persist::KeepAlive, head_only)
                .expect("valid");
            assert!(text(&out).contains(expected), "{}", text(&out));
            assert_eq!(text(&out).matches("Content-Length").count(), 1);
        }
    }

    #[test]
    fn builder_adds_default_type_only_with_a_body() {
        let mut out = BytesMut::new();
        let b = Builder::new(&mut out, 200);
        b.finish(Some(JSON), b"{}", Persist::Close, false)
            .expect("valid");
        assert!(text(&out).contains("\r\nContent-Type: application/json\r\n"));
        let mut out = BytesMut::new();
        let mut b = Builder::new(&mut out, 204);
        b.header(b"Content-Type", b"text/csv").expect("valid");
        b.finish(Some(JSON), b"", Persist::KeepAlive, false)
            .expect("valid");
        assert!(!text(&out).contains("Content-Type"));
        let mut out = BytesMut::new();
        let b = Builder::new(&mut out, 200);
        assert!(b
            .finish(Some(b"text/x\n"), b"", Persist::KeepAlive, false)
            .is_err());
    }

    #[test]
    fn file_heads_carry_validators_and_ranges() {
        let mut h = FileHead {
            status: 206,
            content_type: "text/css",
            charset: true,
            encoding: Some(b"br"),
            length: 10,
            range: Some((5, 14, 100)),
            etag: b"\"1-2\"",
            last_modified: b"Sun, 06 Nov 1994 08:49:37 GMT",
            cache_control: Some(b"max-age=60"),
            vary: true,
        };
        let mut out = BytesMut::new();
        file_head(&mut out, &h, Persist::Close);
        let s = text(&out);
        assert!(s.starts_with("HTTP/1.1 206 Partial Content\r\nServer: pyrs\r\nDate: "));
        assert!(s.ends_with(
            "\r\nContent-Type: text/css; charset=utf-8\r\nContent-Encoding: br\r\n\
             Accept-Ranges: bytes\r\nContent-Length: 10\r\nContent-Range: bytes 5-14/100\r\n\
             ETag: \"1-2\"\r\nLast-Modified: Sun, 06 Nov 1994 08:49:37 GMT\r\n\
             Cache-Control: max-age=60\r\nVary: Accept-Encoding\r\nConnection: close\r\n\r\n"
        ));
        h.status = 304;
        h.range = None;
        let mut out = BytesMut::new();
        file_head(&mut out, &h, Persist::KeepAlive);
        let s = text(&out);
        assert!(
            !s.contains("Content-Type") && !s.contains("Content-Encoding"),
            "{s}"
        );
        assert!(s.contains("\r\nETag: \"1-2\"\r\n") && s.ends_with("Accept-Encoding\r\n\r\n"));
    }

    #[test]
    fn simple_with_adds_fields() {
        let mut out = BytesMut::new();
        let allow: &[(&[u8], &[u8])] = &[(b"Allow", b"GET, HEAD")];
        simple_with(&mut out, 405, allow, b"no", Persist::KeepAlive, false);
        let s = text(&out);
        assert!(s.starts_with("HTTP/1.1 405 Method Not Allowed\r\n"));
        assert!(s.ends_with("\r\nAllow: GET, HEAD\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Length: 2\r\n\r\nno"));
    }

    #[test]
    fn unknown_status_has_empty_reason() {
        let mut out = BytesMut::new();
        simple(&mut out, 599, TEXT_PLAIN, b"", Persist::KeepAlive, false);
        assert!(text(&out).starts_with("HTTP/1.1 599 \r\n"));
    }

    #[test]
    fn chunks_are_hex_sized_and_empty_data_is_no_chunk() {
        let mut out = BytesMut::new();
        chunk(&mut out, b"");
        chunk(&mut out, &[b'x'; 26]);
        chunk(&mut out, b"a");
        assert_eq!(
            text(&out),
            format!("1a\r\n{}\r\n1\r\na\r\n", "x".repeat(26))
        );
    }

    #[test]
    fn streamed_heads_say_how_the_body_is_framed() {
        let head = |declared: Option<&[u8]>, head_only: bool, http10: bool| {
            let mut out = BytesMut::new();
            let mut b = Builder::new(&mut out, 200);
            if let Some(n) = declared {
                b.header(b"Content-Length", n).expect("valid");
            }
            let framing = b
                .finish_streamed(Some(TEXT_PLAIN), Persist::KeepAlive, head_only, http10)
                .expect("valid");
            (framing, text(&out))
        };
        let (f, s) = head(None, false, false);
        assert_eq!(f, Framing::Chunked);
        assert!(s.ends_with("Transfer-Encoding: chunked\r\n\r\n"), "{s}");
        let (f, s) = head(Some(b"10"), false, false);
        assert_eq!(f, Framing::Length(10));
        assert!(s.ends_with("Content-Length: 10\r\n\r\n"), "{s}");
        let (f, s) = head(None, false, true);
        assert_eq!(f, Framing::Close);
        assert!(s.ends_with("Connection: close\r\n\r\n"), "{s}");
        let (f, s) = head(None, true, false);
        assert_eq!(f, Framing::Empty);
        assert!(s.contains("Transfer-Encoding: chunked\r\n"), "{s}");
    }
}
