//! The client side of the harness: a [`Conn`] that writes raw requests and reads
//! responses one at a time (pipelined or not), checking each against the bytes on
//! the wire, and the [`Response`] it parses, with the assertions every test shares.
//! Runs on the test's threads; every read is bounded by [`IO_TIMEOUT`] unless a
//! test asks for less.

use std::io::{self, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpStream};
use std::os::fd::AsRawFd;
use std::thread;
use std::time::{Duration, Instant};

use super::IO_TIMEOUT;

/// A parsed HTTP response.
#[derive(Clone)]
pub struct Response {
    pub version: String,
    pub status: u16,
    pub reason: String,
    /// Header fields in order, as sent.
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
    /// Whether this answers a HEAD request (its head has no body after it).
    pub to_head: bool,
    /// Bytes that followed the framed message on the wire and are not the start of
    /// the next response: what a server sends beyond its own framing (a body after a
    /// HEAD or 204 head, more bytes than its Content-Length). Seen in what had
    /// arrived when the message was read; they stay in the connection's buffer, so
    /// a later read on it fails as well ([`Server::request`] reads to EOF).
    pub stray: Vec<u8>,
}

impl std::fmt::Debug for Response {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Response")
            .field("status", &self.status)
            .field("reason", &self.reason)
            .field("headers", &self.headers)
            .field("body", &String::from_utf8_lossy(&self.body))
            .field("stray", &String::from_utf8_lossy(&self.stray))
            .finish()
    }
}

impl Response {
    /// The first value of header `name` (case-insensitive).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// Every value of header `name`, in order.
    pub fn header_all(&self, name: &str) -> Vec<&str> {
        self.headers
            .iter()
            .filter(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
            .collect()
    }

    /// The body as (lossy) UTF-8.
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    /// `Content-Length` as a number.
    pub fn content_length(&self) -> Option<usize> {
        self.header("content-length")
            .map(|v| v.trim().parse().expect("numeric Content-Length"))
    }

    /// Asserts status, `Server: pyrs`, an IMF-fixdate `Date`, for statuses that
    /// have one a `Content-Length` matching the body bytes on the wire, and no
    /// bytes after a head that has no body.
    pub fn assert_basics(&self, status: u16) {
        assert_eq!(self.status, status, "status of {self:#?}");
        assert_eq!(self.version, "HTTP/1.1", "{self:#?}");
        assert_eq!(self.header_all("server"), vec!["pyrs"], "{self:#?}");
        let date = self.header("date").unwrap_or_default();
        assert!(is_imf_fixdate(date), "Date {date:?} is not an IMF-fixdate");
        assert_eq!(self.header_all("date").len(), 1, "{self:#?}");
        if status == 204 || status < 200 {
            assert_eq!(self.header("content-length"), None, "{self:#?}");
        } else {
            assert_eq!(
                self.header_all("content-length").len(),
                1,
                "one Content-Length: {self:#?}"
            );
        }
        if self.to_head || status == 204 || status == 304 || status < 200 {
            assert!(
                self.stray.is_empty(),
                "bytes after a head without a body: {self:#?}"
            );
        } else if let Some(len) = self.content_length() {
            // The harness reads `len` bytes as the body; `stray` holds what the
            // server sent beyond them.
            assert_eq!(
                self.body.len() + self.stray.len(),
                len,
                "Content-Length against the body bytes on the wire: {self:#?}"
            );
        } else {
            assert!(self.stray.is_empty(), "bytes after the body: {self:#?}");
        }
    }

    /// Like [`Response::assert_basics`], also checking the body length.
    pub fn assert_ok_body(&self, status: u16, content_type: &str, body: &[u8]) {
        self.assert_basics(status);
        assert_eq!(self.header("content-type"), Some(content_type), "{self:#?}");
        assert_eq!(
            self.body,
            body,
            "body {:?} != {:?}",
            self.text(),
            String::from_utf8_lossy(body)
        );
        assert_eq!(
            self.content_length(),
            Some(self.body.len() + self.stray.len()),
            "Content-Length against the body bytes on the wire: {self:#?}"
        );
    }
}

impl Response {
    /// Like [`Response::assert_ok_body`] for a streamed response: chunked, no
    /// `Content-Length`, nothing after the last chunk.
    pub fn assert_chunked_body(&self, status: u16, content_type: &str, body: &[u8]) {
        assert_eq!(self.status, status, "status of {self:#?}");
        assert_eq!(self.version, "HTTP/1.1", "{self:#?}");
        assert_eq!(self.header_all("server"), vec!["pyrs"], "{self:#?}");
        assert!(is_imf_fixdate(self.header("date").unwrap_or_default()));
        assert_eq!(
            self.header("transfer-encoding"),
            Some("chunked"),
            "{self:#?}"
        );
        assert_eq!(self.header("content-length"), None, "{self:#?}");
        assert_eq!(self.header("content-type"), Some(content_type), "{self:#?}");
        assert_eq!(
            self.body,
            body,
            "body {:?} != {:?}",
            self.text(),
            String::from_utf8_lossy(body)
        );
        assert!(self.stray.is_empty(), "bytes after the body: {self:#?}");
    }
}

/// Whether `s` is an IMF-fixdate such as `Sun, 06 Nov 1994 08:49:37 GMT`.
pub fn is_imf_fixdate(s: &str) -> bool {
    const DAYS: [&str; 7] = ["Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun"];
    const MONTHS: [&str; 12] = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ];
    let b = s.as_bytes();
    if b.len() != 29 || !s.is_ascii() {
        return false;
    }
    let digits = |r: std::ops::Range<usize>| b[r].iter().all(u8::is_ascii_digit);
    DAYS.contains(&&s[0..3])
        && &s[3..5] == ", "
        && digits(5..7)
        && b[7] == b' '
        && MONTHS.contains(&&s[8..11])
        && b[11] == b' '
        && digits(12..16)
        && b[16] == b' '
        && digits(17..19)
        && b[19] == b':'
        && digits(20..22)
        && b[22] == b':'
        && digits(23..25)
        && &s[25..] == " GMT"
}

/// A client connection with a read buffer, so that pipelined responses can
/// be read one at a time.
pub struct Conn {
    pub stream: TcpStream,
    buf: Vec<u8>,
}

impl Conn {
    pub fn connect(addr: SocketAddr) -> Conn {
        let stream = TcpStream::connect_timeout(&addr, IO_TIMEOUT).expect("connect to pyrs");
        stream.set_read_timeout(Some(IO_TIMEOUT)).expect("timeout");
        stream.set_write_timeout(Some(IO_TIMEOUT)).expect("timeout");
        Conn {
            stream,
            buf: Vec::new(),
        }
    }

    /// The local port of this connection.
    pub fn local_port(&self) -> u16 {
        self.stream.local_addr().expect("local addr").port()
    }

    pub fn send(&mut self, bytes: &[u8]) {
        self.stream.write_all(bytes).expect("send to pyrs");
    }

    /// Sends one byte per write with TCP_NODELAY and a short pause, so the
    /// server sees the request in many reads.
    pub fn send_byte_by_byte(&mut self, bytes: &[u8]) {
        self.stream.set_nodelay(true).expect("nodelay");
        for (i, b) in bytes.iter().enumerate() {
            self.stream.write_all(&[*b]).expect("send a byte");
            if i % 4 == 0 {
                thread::sleep(Duration::from_millis(1));
            }
        }
    }

    /// Reads once more into the buffer; `Ok(0)` at EOF.
    fn fill(&mut self) -> io::Result<usize> {
        let mut chunk = [0u8; 16 * 1024];
        let n = self.stream.read(&mut chunk)?;
        self.buf.extend_from_slice(&chunk[..n]);
        Ok(n)
    }

    /// Like [`Conn::fill`] without waiting: `WouldBlock` when nothing has arrived.
    /// (`MSG_DONTWAIT` rather than `set_nonblocking`, which would also switch the
    /// clones that other threads write through.)
    fn fill_now(&mut self) -> io::Result<usize> {
        let mut chunk = [0u8; 16 * 1024];
        // SAFETY: recv(2) into a buffer of the length passed, on our open socket.
        let n = unsafe {
            libc::recv(
                self.stream.as_raw_fd(),
                chunk.as_mut_ptr().cast(),
                chunk.len(),
                libc::MSG_DONTWAIT,
            )
        };
        if n < 0 {
            return Err(io::Error::last_os_error());
        }
        let n = n as usize;
        self.buf.extend_from_slice(&chunk[..n]);
        Ok(n)
    }

    /// Reads until `n` bytes are buffered; false at EOF first.
    fn fill_to(&mut self, n: usize) -> io::Result<bool> {
        while self.buf.len() < n {
            if self.fill()? == 0 {
                return Ok(false);
            }
        }
        Ok(true)
    }

    /// Exactly `n` raw bytes (used for `100 Continue`).
    pub fn read_exact_bytes(&mut self, n: usize) -> Vec<u8> {
        assert!(
            self.fill_to(n).expect("read from pyrs"),
            "EOF after {:?}",
            String::from_utf8_lossy(&self.buf)
        );
        self.buf.drain(..n).collect()
    }

    /// Reads one response to a non-HEAD request.
    pub fn read_response(&mut self) -> Response {
        self.read_response_to(false)
    }

    /// Reads one response; `head` for the response to a HEAD request.
    pub fn read_response_to(&mut self, head: bool) -> Response {
        match self.try_read_response(head) {
            Ok(Some(r)) => r,
            Ok(None) => panic!("connection closed before a response"),
            Err(e) => panic!(
                "reading a response: {e} (buffered: {:?})",
                String::from_utf8_lossy(&self.buf)
            ),
        }
    }

    /// Reads the response to `raw`, a request whose method tells whether the
    /// response has a body.
    pub fn read_response_for(&mut self, raw: &[u8]) -> Response {
        self.read_response_to(raw.starts_with(b"HEAD "))
    }

    /// One response, `None` on EOF before its first byte.
    pub fn try_read_response(&mut self, head: bool) -> io::Result<Option<Response>> {
        let end = loop {
            if let Some(i) = find(&self.buf, b"\r\n\r\n") {
                break i;
            }
            if self.fill()? == 0 {
                if self.buf.is_empty() {
                    return Ok(None);
                }
                return Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "EOF inside a response head",
                ));
            }
        };
        if !self.buf.starts_with(b"HTTP/") {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                "the bytes before this response are not the start of one",
            ));
        }
        let head_text = String::from_utf8(self.buf[..end].to_vec())
            .map_err(|_| io::Error::new(io::ErrorKind::InvalidData, "non-UTF-8 head"))?;
        self.buf.drain(..end + 4);
        let mut lines = head_text.split("\r\n");
        let status_line = lines.next().unwrap_or_default();
        let mut parts = status_line.splitn(3, ' ');
        let version = parts.next().unwrap_or_default().to_owned();
        let status = parts
            .next()
            .and_then(|s| s.parse::<u16>().ok())
            .ok_or_else(|| {
                io::Error::new(
                    io::ErrorKind::InvalidData,
                    format!("bad status line {status_line:?}"),
                )
            })?;
        let reason = parts.next().unwrap_or_default().to_owned();
        let mut headers = Vec::new();
        for line in lines {
            let (name, value) = line.split_once(':').ok_or_else(|| {
                io::Error::new(io::ErrorKind::InvalidData, format!("bad header {line:?}"))
            })?;
            headers.push((name.to_owned(), value.trim().to_owned()));
        }
        let mut response = Response {
            version,
            status,
            reason,
            headers,
            body: Vec::new(),
            to_head: head,
            stray: Vec::new(),
        };
        if head || status < 200 || status == 204 || status == 304 {
            response.stray = self.peek_stray()?;
            return Ok(Some(response));
        }
        let chunked = response
            .header("transfer-encoding")
            .is_some_and(|te| te.to_ascii_lowercase().contains("chunked"));
        if chunked {
            response.body = self.read_chunked()?;
        } else if let Some(len) = response.content_length() {
            if !self.fill_to(len)? {
                return Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "EOF inside a response body",
                ));
            }
            response.body = self.buf.drain(..len).collect();
        } else {
            while self.fill()? > 0 {}
            response.body = std::mem::take(&mut self.buf);
        }
        response.stray = self.peek_stray()?;
        Ok(Some(response))
    }

    /// After a framed message: looks at the bytes right behind it (reading what has
    /// already arrived, without waiting, when fewer than a status line's start are
    /// buffered) and returns a copy of those before the next response, if any: bytes
    /// the server sent beyond the message's framing. They stay buffered, so reading
    /// another response or [`Conn::expect_eof`] fails on them too.
    fn peek_stray(&mut self) -> io::Result<Vec<u8>> {
        const NEXT: &[u8] = b"HTTP/1.1 ";
        let mut eof = false;
        while self.buf.len() < NEXT.len() {
            match self.fill_now() {
                Ok(0) => {
                    eof = true;
                    break;
                }
                Ok(_) => {}
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                // A reset ends the connection; the next read sees its end.
                Err(e) if e.kind() == io::ErrorKind::ConnectionReset => break,
                Err(e) => return Err(e),
            }
        }
        let keep = (0..self.buf.len())
            .find(|&i| {
                let rest = &self.buf[i..];
                rest.starts_with(NEXT) || (!eof && NEXT.starts_with(rest))
            })
            .unwrap_or(self.buf.len());
        Ok(self.buf[..keep].to_vec())
    }

    /// Where the first buffered line ends (its CRLF), reading until one is there.
    fn line_end(&mut self) -> io::Result<usize> {
        loop {
            if let Some(i) = find(&self.buf, b"\r\n") {
                return Ok(i);
            }
            if self.fill()? == 0 {
                return Err(io::ErrorKind::UnexpectedEof.into());
            }
        }
    }

    fn read_chunked(&mut self) -> io::Result<Vec<u8>> {
        let mut body = Vec::new();
        loop {
            let line_end = self.line_end()?;
            let line = String::from_utf8_lossy(&self.buf[..line_end]).into_owned();
            let size = usize::from_str_radix(line.split(';').next().unwrap_or("").trim(), 16)
                .map_err(|_| io::Error::new(io::ErrorKind::InvalidData, "chunk size"))?;
            self.buf.drain(..line_end + 2);
            if size == 0 {
                // Trailers end with an empty line.
                loop {
                    let end = self.line_end()?;
                    self.buf.drain(..end + 2);
                    if end == 0 {
                        return Ok(body);
                    }
                }
            }
            if !self.fill_to(size + 2)? {
                return Err(io::ErrorKind::UnexpectedEof.into());
            }
            body.extend(self.buf.drain(..size));
            self.buf.drain(..2);
        }
    }

    /// Asserts the server closes the connection with nothing more to send.
    pub fn expect_eof(&mut self) {
        self.await_eof(None);
    }

    /// Like [`Conn::expect_eof`], failing unless the close comes within `bound`
    /// (counted from now).
    pub fn expect_eof_within(&mut self, bound: Duration) {
        self.await_eof(Some(bound));
    }

    fn await_eof(&mut self, bound: Option<Duration>) {
        let started = Instant::now();
        let before = self.stream.read_timeout().expect("read timeout");
        if bound.is_some() {
            self.stream.set_read_timeout(bound).expect("timeout");
        }
        let read = loop {
            match self.fill() {
                Ok(0) => break Ok(()),
                Ok(_) => {}
                // A reset after the last response also means closed.
                Err(e) if e.kind() == io::ErrorKind::ConnectionReset => break Ok(()),
                Err(e) => break Err(e),
            }
        };
        self.stream.set_read_timeout(before).expect("timeout");
        match read {
            Ok(()) => {}
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                ) =>
            {
                panic!(
                    "the server did not close the connection within {:?}",
                    started.elapsed()
                )
            }
            Err(e) => panic!("expected the server to close the connection: {e}"),
        }
        if let Some(bound) = bound {
            let took = started.elapsed();
            assert!(
                took < bound,
                "the server closed after {took:?}, not within {bound:?}"
            );
        }
        assert!(
            self.buf.is_empty(),
            "unexpected bytes before EOF: {:?}",
            String::from_utf8_lossy(&self.buf)
        );
    }

    /// Asserts that nothing arrives within `wait` (nor is left over from earlier
    /// reads) and the connection is still open.
    pub fn expect_silence(&mut self, wait: Duration) {
        assert!(
            self.buf.is_empty(),
            "unexpected bytes: {:?}",
            String::from_utf8_lossy(&self.buf)
        );
        self.stream.set_read_timeout(Some(wait)).expect("timeout");
        let mut byte = [0u8; 1];
        match self.stream.read(&mut byte) {
            Ok(0) => panic!("connection closed"),
            Ok(_) => panic!("unexpected byte {byte:?}"),
            Err(e) => assert!(
                matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                ),
                "{e}"
            ),
        }
        self.stream
            .set_read_timeout(Some(IO_TIMEOUT))
            .expect("timeout");
    }

    /// Closes our sending side.
    pub fn shutdown_write(&self) {
        self.stream.shutdown(Shutdown::Write).expect("shutdown");
    }

    /// Sends `raw` and reads its response.
    pub fn request(&mut self, raw: &[u8]) -> Response {
        self.send(raw);
        self.read_response_for(raw)
    }
}

/// Whether `stream` has neither bytes nor an EOF waiting, without blocking (and
/// without switching the socket, which its clones share, to non-blocking).
pub fn nothing_received(stream: &TcpStream) -> bool {
    let mut byte = [0u8; 1];
    // SAFETY: recv(2) peeking one byte into a one-byte buffer, on an open socket.
    let n = unsafe {
        libc::recv(
            stream.as_raw_fd(),
            byte.as_mut_ptr().cast(),
            1,
            libc::MSG_PEEK | libc::MSG_DONTWAIT,
        )
    };
    n < 0 && io::Error::last_os_error().kind() == io::ErrorKind::WouldBlock
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

/// `GET path HTTP/1.1` with a Host header.
pub fn get(path: &str) -> Vec<u8> {
    format!("GET {path} HTTP/1.1\r\nHost: test\r\n\r\n").into_bytes()
}

/// `POST path HTTP/1.1` with a Content-Length body.
pub fn post(path: &str, body: &[u8]) -> Vec<u8> {
    let mut raw = format!(
        "POST {path} HTTP/1.1\r\nHost: test\r\nContent-Length: {}\r\n\r\n",
        body.len()
    )
    .into_bytes();
    raw.extend_from_slice(body);
    raw
}
