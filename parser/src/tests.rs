//! Unit tests for the framer's mechanics: what a frame reports (path and query
//! spans, keep-alive, `Expect`), pipelining, partial input, the limits at their
//! edges, and the cases the fuzz targets found; each fixture is also fed split
//! at every byte. The RFC rules themselves are rows of `tests/rfc9112.rs`.

use super::*;

/// What a frame means, independent of where in a buffer it was found.
#[derive(Debug, PartialEq, Eq)]
struct Parsed {
    method: Vec<u8>,
    target: Vec<u8>,
    path: Vec<u8>,
    query: Vec<u8>,
    minor: u8,
    keep_alive: bool,
    body: Vec<u8>,
}

fn limits() -> Limits {
    Limits::default()
}

fn to_parsed(buf: &[u8], f: &Frame) -> Parsed {
    let body = match f.body {
        Body::None => Vec::new(),
        Body::Fixed { start, end } => buf[start..end].to_vec(),
        Body::Chunked { start, end, .. } => {
            let mut out = Vec::new();
            decode_chunked(&buf[start..end], u64::MAX, 1 << 20, &mut out)
                .expect("scanned body decodes");
            out
        }
    };
    Parsed {
        method: f.head.method.get(buf).to_vec(),
        target: f.head.target.get(buf).to_vec(),
        path: f.head.path_bytes(buf).to_vec(),
        query: f.head.query.get(buf).to_vec(),
        minor: f.head.minor_version,
        keep_alive: f.head.keep_alive,
        body,
    }
}

/// Parses `input` as a stream fed in pieces cut at `cuts`; returns the requests
/// and the error (if any) that ended the stream.
fn feed(input: &[u8], cuts: &[usize], limits: &Limits) -> (Vec<Parsed>, Option<ParseError>) {
    let mut framer = Framer::new();
    let mut buf: Vec<u8> = Vec::new();
    let mut out = Vec::new();
    let mut fed = 0;
    let mut points: Vec<usize> = cuts.iter().copied().filter(|&c| c < input.len()).collect();
    points.sort_unstable();
    points.push(input.len());
    for p in points {
        if p < fed {
            continue;
        }
        buf.extend_from_slice(&input[fed..p]);
        fed = p;
        loop {
            match framer.poll(&buf, limits) {
                Ok(Progress::Partial) => break,
                Ok(Progress::Complete(f)) => {
                    out.push(to_parsed(&buf, &f));
                    buf.drain(..f.len);
                }
                Err(e) => return (out, Some(e)),
            }
        }
    }
    (out, None)
}

fn whole(input: &[u8]) -> (Vec<Parsed>, Option<ParseError>) {
    feed(input, &[], &limits())
}

/// Whole, every single split point, and byte by byte must agree.
fn check_split_invariant(input: &[u8]) -> (Vec<Parsed>, Option<ParseError>) {
    let reference = whole(input);
    for cut in 1..input.len() {
        assert_eq!(feed(input, &[cut], &limits()), reference, "split at {cut}");
    }
    let every: Vec<usize> = (1..input.len()).collect();
    assert_eq!(feed(input, &every, &limits()), reference, "byte by byte");
    reference
}

fn one_ok(input: &[u8]) -> Parsed {
    let (mut reqs, err) = check_split_invariant(input);
    assert_eq!(err, None);
    assert_eq!(reqs.len(), 1);
    reqs.remove(0)
}

#[test]
fn parses_simple_get() {
    let p = one_ok(b"GET /a/b?x=1&y=2 HTTP/1.1\r\nHost: h\r\n\r\n");
    assert_eq!(p.method, b"GET");
    assert_eq!(p.path, b"/a/b");
    assert_eq!(p.query, b"x=1&y=2");
    assert_eq!(p.minor, 1);
    assert!(p.keep_alive);
}

#[test]
fn incomplete_head_is_partial() {
    let mut f = Framer::new();
    assert_eq!(
        f.poll(b"GET / HTTP/1.1\r\nHost: h\r\n", &limits()),
        Ok(Progress::Partial)
    );
}

#[test]
fn pipelined_requests_in_order() {
    let mut input = Vec::new();
    for i in 0..20 {
        input.extend_from_slice(format!("GET /{i} HTTP/1.1\r\nHost: h\r\n\r\n").as_bytes());
    }
    let (reqs, err) = whole(&input);
    assert_eq!(err, None);
    assert_eq!(reqs.len(), 20);
    for (i, r) in reqs.iter().enumerate() {
        assert_eq!(r.path, format!("/{i}").as_bytes());
    }
}

#[test]
fn content_length_body() {
    let p = one_ok(b"POST /e HTTP/1.1\r\nHost: h\r\nContent-Length: 5\r\n\r\nhello");
    assert_eq!(p.body, b"hello");
}

#[test]
fn chunked_body_with_extensions_and_trailers() {
    let p = one_ok(
        b"POST /e HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n\
          5;a=b;c=\"d e\"\r\nhello\r\n6\r\n world\r\n0\r\nX-T: 1\r\n\r\n",
    );
    assert_eq!(p.body, b"hello world");
}

#[test]
fn accepts_absolute_form_target() {
    let p = one_ok(b"GET http://example.com/x/y?z=1 HTTP/1.1\r\nHost: example.com\r\n\r\n");
    assert_eq!(p.path, b"/x/y");
    assert_eq!(p.query, b"z=1");
    let p = one_ok(b"GET http://example.com HTTP/1.1\r\nHost: example.com\r\n\r\n");
    assert_eq!(p.path, b"/");
}

#[test]
fn asterisk_form_target_routes_as_root() {
    let p = one_ok(b"OPTIONS * HTTP/1.1\r\nHost: h\r\n\r\n");
    assert_eq!(p.target, b"*");
    assert_eq!(p.path, b"/");
    assert_eq!(p.query, b"");
}

/// A 414 does not wait for the line to end (the table has the complete line).
#[test]
fn oversize_request_line_is_414_before_it_ends() {
    let mut req = b"GET /".to_vec();
    req.extend(std::iter::repeat_n(b'a', DEFAULT_MAX_REQUEST_LINE + 10));
    let (_, e) = whole(&req);
    assert_eq!(e, Some(ParseError::RequestLineTooLong));
}

/// A 431 does not wait for the head to end (the table has the complete head).
#[test]
fn oversize_head_is_431_before_it_ends() {
    let mut req = b"GET / HTTP/1.1\r\nHost: h\r\n".to_vec();
    while req.len() <= DEFAULT_MAX_HEAD {
        req.extend_from_slice(b"X-Filler: aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa\r\n");
    }
    let (_, e) = whole(&req);
    assert_eq!(e, Some(ParseError::HeadTooLarge));
}

#[test]
fn garbage_is_rejected_before_a_newline() {
    let mut f = Framer::new();
    assert!(f.poll(b"\x16\x03\x01\x02\x00", &limits()).is_err());
}

#[test]
fn connection_semantics() {
    assert!(!one_ok(b"GET / HTTP/1.1\r\nHost: h\r\nConnection: close\r\n\r\n").keep_alive);
    assert!(!one_ok(b"GET / HTTP/1.0\r\n\r\n").keep_alive);
    assert!(one_ok(b"GET / HTTP/1.0\r\nConnection: Keep-Alive\r\n\r\n").keep_alive);
    assert!(!one_ok(b"GET / HTTP/1.1\r\nHost: h\r\nConnection: upgrade, close\r\n\r\n").keep_alive);
}

#[test]
fn expect_continue_is_reported_while_body_is_missing() {
    let mut f = Framer::new();
    let head = b"POST / HTTP/1.1\r\nHost: h\r\nExpect: 100-continue\r\nContent-Length: 3\r\n\r\n";
    assert_eq!(f.poll(head, &limits()), Ok(Progress::Partial));
    assert!(f.awaiting_body().is_some_and(|h| h.expect_continue));
}

#[test]
fn mixed_pipeline_split_everywhere() {
    let input: &[u8] = b"GET /a HTTP/1.1\r\nHost: h\r\n\r\n\
        POST /b HTTP/1.1\r\nHost: h\r\nContent-Length: 3\r\n\r\nxyz\
        POST /c HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nab\r\n0\r\n\r\n\
        GET /d HTTP/1.0\r\n\r\n";
    let (reqs, err) = check_split_invariant(input);
    assert_eq!(err, None);
    let paths: Vec<&[u8]> = reqs.iter().map(|r| r.path.as_slice()).collect();
    assert_eq!(paths, vec![&b"/a"[..], b"/b", b"/c", b"/d"]);
    assert_eq!(reqs[2].body, b"ab");
}

/// Whole, every single split point and byte by byte must agree, under `limits`.
fn check_split_invariant_with(input: &[u8], limits: &Limits) -> (Vec<Parsed>, Option<ParseError>) {
    let reference = feed(input, &[], limits);
    for cut in 1..input.len() {
        assert_eq!(feed(input, &[cut], limits), reference, "split at {cut}");
    }
    let every: Vec<usize> = (1..input.len()).collect();
    assert_eq!(feed(input, &every, limits), reference, "byte by byte");
    reference
}

fn small_limits() -> Limits {
    Limits {
        max_request_line: 32,
        max_head: 128,
        max_body: 300,
    }
}

/// Found by the `split_invariance` fuzz target: a complete head measured its request
/// line up to the end of the target, a partial one up to the end of the version, so
/// a line of exactly the limit was accepted whole and refused (414) when cut.
#[test]
fn request_line_limit_is_the_same_whole_or_split() {
    let limits = small_limits();
    // Line content (without CRLF) of exactly 32 bytes: accepted.
    for (lead, eol) in [("", "\r\n"), ("", "\n"), ("\r\n\r\n", "\r\n")] {
        let line = format!("GET /{} HTTP/1.1", "a".repeat(18));
        assert_eq!(line.len(), 32);
        let req = format!("{lead}{line}{eol}Host: h{eol}{eol}");
        let (reqs, err) = check_split_invariant_with(req.as_bytes(), &limits);
        assert_eq!((reqs.len(), err), (1, None), "{req:?}");
        // One byte more: 414, whole or split.
        let line = format!("GET /{} HTTP/1.1", "a".repeat(19));
        let req = format!("{lead}{line}{eol}Host: h{eol}{eol}");
        let (reqs, err) = check_split_invariant_with(req.as_bytes(), &limits);
        assert_eq!((reqs.len(), err), (0, Some(ParseError::RequestLineTooLong)));
    }
}

/// A request line over the limit is a 414 even when a byte past the limit is also
/// invalid: cut at the limit, the framer cannot have seen that byte yet.
#[test]
fn request_line_error_past_the_limit_is_414_whole_or_split() {
    let limits = small_limits();
    for tail in [
        "\x7fb HTTP/1.1\r\nHost: h\r\n\r\n",
        "\x7fb HTTP/1.1\r\nHost",
    ] {
        let req = format!("GET /{}{tail}", "a".repeat(40));
        let (reqs, err) = check_split_invariant_with(req.as_bytes(), &limits);
        assert_eq!((reqs.len(), err), (0, Some(ParseError::RequestLineTooLong)));
    }
}

/// Header fields are validated when the head is complete; a head that outgrows its
/// limit first is a 431 however it was cut, even with a bad field inside.
#[test]
fn bad_field_in_oversize_head_is_431_whole_or_split() {
    let limits = small_limits();
    let req = format!(
        "GET / HTTP/1.1\r\nX\x01: a\r\nX-Filler: {}",
        "a".repeat(150)
    );
    let (reqs, err) = check_split_invariant_with(req.as_bytes(), &limits);
    assert_eq!((reqs.len(), err), (0, Some(ParseError::HeadTooLarge)));
}

/// A chunked body whose wire bytes outgrow twice `max_body` plus the allowance is a
/// 413 even when an invalid chunk lies further on: cut at the cap, the framer cannot
/// have seen it.
#[test]
fn chunked_wire_cap_is_the_same_whole_or_split() {
    let limits = Limits {
        max_body: 100,
        ..Limits::default()
    };
    let mut req = b"POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n".to_vec();
    let head = req.len();
    for _ in 0..100 {
        req.extend_from_slice(b"1;a=");
        req.resize(req.len() + 2000, b'b');
        req.extend_from_slice(b"\r\nx\r\n");
    }
    req.extend_from_slice(b"zz\r\n");
    let cap = 2 * (limits.max_body + CHUNKED_OVERHEAD_ALLOWANCE) as usize;
    assert!(req.len() > head + cap);
    let whole = feed(&req, &[], &limits);
    assert_eq!(whole, (vec![], Some(ParseError::BodyTooLarge)));
    for cut in [head + cap - 1, head + cap, head + cap + 1, head + cap + 2] {
        assert_eq!(feed(&req, &[cut], &limits), whole, "cut at {cut}");
    }
}

/// Found by the `split_invariance` fuzz target: a complete but oversize head was
/// refused (431) before its request line was looked at, while the same head cut
/// after its request line got that line's 400.
#[test]
fn bad_request_line_in_oversize_head_is_400_whole_or_split() {
    let limits = small_limits();
    let req = format!("12d\r\nX-Filler: {}\r\n\r\n", "x".repeat(150));
    let (reqs, err) = check_split_invariant_with(req.as_bytes(), &limits);
    assert_eq!((reqs.len(), err), (0, Some(ParseError::InvalidMethod)));
}

/// Found by the `split_invariance` fuzz target: whether a version error is a 505
/// looked at the whole third field, which a cut inside it hides (`HTTP/111 x` was a
/// 400 whole and a 505 cut after `HTTP/111`). The request line is now read to the
/// grammar (`HTTP/` DIGIT `.` DIGIT, RFC 9112 §2.3), and a well-formed version
/// with a major other than 1 is a 505 once the line ends; anything else is a 400,
/// decided at its first wrong byte, whole or cut.
#[test]
fn version_error_is_the_same_whole_or_split() {
    for line in ["GET / HTTP/2.0", "GET / HTTP/0.9", "GET / HTTP/3.1"] {
        let req = format!("{line}\r\nHost: h\r\n\r\n");
        let (_, err) = check_split_invariant_with(req.as_bytes(), &limits());
        assert_eq!(err, Some(ParseError::UnsupportedVersion), "{line:?}");
    }
    for line in [
        "GET / HTTP/111 x",
        "GET example.com:80 HTTP/111\0x y",
        "GET / HTTP/2.0 x",
        "GET /te xt HTTP/1.1",
        "GET / HTX/1.1",
        "GET / HT",
    ] {
        let req = format!("{line}\r\nHost: h\r\n\r\n");
        let (_, err) = check_split_invariant_with(req.as_bytes(), &limits());
        assert_eq!(err, Some(ParseError::InvalidRequestLine), "{line:?}");
    }
}

/// The one-pass reading of plain size lines (digits and CRLF) must agree with the
/// general one at its edges: leading zeros, the line-length limit, 64 bits.
#[test]
fn plain_chunk_size_lines_agree_with_the_general_parser() {
    let scan = |body: &[u8]| ChunkedScanner::new().scan(body, u64::MAX, 1024);
    let body = |size: &str| format!("{size}\r\nx\r\n0\r\n\r\n").into_bytes();
    let at_limit = format!("{}1", "0".repeat(MAX_CHUNK_LINE - 1));
    assert_eq!(scan(&body(&at_limit)), Ok(Some(at_limit.len() + 10)));
    let over = format!("0{at_limit}");
    assert_eq!(scan(&body(&over)), Err(ParseError::InvalidChunkSize));
    assert_eq!(scan(&body("00000000000000000000001")), Ok(Some(33)));
    assert_eq!(
        scan(b"ffffffffffffffff\r\n"),
        Ok(None),
        "u64::MAX fits; its data has not arrived"
    );
    assert_eq!(
        scan(b"10000000000000000\r\n"),
        Err(ParseError::ChunkSizeOverflow)
    );
    assert_eq!(scan(b"1;x\r\nx\r\n0\r\n\r\n"), Ok(Some(13)));
}

/// With a head limit below the request-line limit (both are configurable), the
/// line is read no further than the head may reach: a bad byte past the head
/// limit used to be a 400 whole and a 431 when cut before it.
#[test]
fn line_past_a_smaller_head_limit_is_431_whole_or_split() {
    let limits = Limits {
        max_request_line: 64,
        max_head: 32,
        max_body: 300,
    };
    for line in [
        format!("GET /{} HTTP/1.1", "a".repeat(40)),
        format!("GET /{}\x7f HTTP/1.1", "a".repeat(40)),
    ] {
        let req = format!("{line}\r\nHost: h\r\n\r\n");
        let (reqs, err) = check_split_invariant_with(req.as_bytes(), &limits);
        assert_eq!((reqs.len(), err), (0, Some(ParseError::HeadTooLarge)));
    }
}
