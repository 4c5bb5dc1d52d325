//! Checks shared by the cargo-fuzz targets and the stable test suite. The fuzz
//! targets under `fuzz/fuzz_targets/` include this file with `#[path]`, and
//! `parser/tests/corpus.rs` replays every committed corpus file through the same
//! functions, so a corpus entry that once found a bug keeps guarding against it in
//! plain `cargo test`. Every check panics (with a message) when a property fails.
//!
//! Fuzz inputs share one layout so a corpus file means the same thing everywhere:
//! byte 0 selects the [`Limits`] ([`limits_from`]); targets that cut their input take
//! byte 1 as a cut count and then two bytes per cut ([`split_input`]); the rest is
//! the byte stream a client would send.

use pyrs_parser::{
    decode_chunked, is_tchar, Body, ChunkedScanner, Field, Frame, Framer, Limits, ParseError,
    Progress, MAX_CHUNK_LINE, MAX_HEADERS, MAX_METHOD_LEN,
};

/// Inputs fed byte by byte as well as in the given pieces when no longer than this;
/// byte-by-byte costs one `poll` per byte, so it is kept for short inputs.
pub const BYTEWISE_MAX: usize = 160;

/// Limits for one input. Selectors below 0x80 give the defaults; the others give
/// tiny limits so that 414, 431 and 413 are reachable within libFuzzer's default
/// 4 KiB inputs: bits 0-2 the request line (8..=64), bits 3-4 the head, bits 5-6 the
/// body (0, 7, 300 or unlimited, the last so chunk sizes near `u64::MAX` are not
/// hidden behind the body limit).
pub fn limits_from(sel: u8) -> Limits {
    if sel & 0x80 == 0 {
        return Limits::default();
    }
    let max_request_line = 8 + usize::from(sel & 0x07) * 8;
    let max_head = max_request_line + 16 + usize::from((sel >> 3) & 0x03) * 48;
    let max_body = match (sel >> 5) & 0x03 {
        0 => 0,
        1 => 7,
        2 => 300,
        _ => u64::MAX,
    };
    Limits {
        max_head,
        max_request_line,
        max_body,
    }
}

/// Splits a fuzz input into its limits, its cut points (offsets into the stream,
/// sorted, each within `0..=stream.len()`, duplicates kept) and the stream itself.
/// Short inputs are read with defaults for the missing parts.
pub fn split_input(input: &[u8]) -> (Limits, Vec<usize>, &[u8]) {
    let sel = input.first().copied().unwrap_or(0);
    let ncuts = input.get(1).map_or(0, |&b| usize::from(b & 0x0f));
    let header = (2 + 2 * ncuts).min(input.len());
    let stream = &input[header..];
    let raw = &input[2.min(input.len())..header];
    let mut cuts: Vec<usize> = raw
        .chunks_exact(2)
        .map(|c| usize::from(u16::from_le_bytes([c[0], c[1]])) % (stream.len() + 1))
        .collect();
    cuts.sort_unstable();
    (limits_from(sel), cuts, stream)
}

/// One request as the handler would see it, independent of where in a buffer it
/// was framed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Request {
    pub method: Vec<u8>,
    pub target: Vec<u8>,
    pub path: Vec<u8>,
    pub query: Vec<u8>,
    pub minor: u8,
    pub headers: Vec<(Vec<u8>, Vec<u8>)>,
    pub body: Vec<u8>,
    pub keep_alive: bool,
    pub expect_continue: bool,
    /// Bytes the request occupied on the wire.
    pub wire_len: usize,
}

/// Requests framed from a stream, and the error that ended it (if any).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Outcome {
    pub requests: Vec<Request>,
    pub error: Option<ParseError>,
}

/// Turns a frame into a [`Request`], checking every offset it carries against `buf`
/// and that its body decodes to the advertised length. `fields` are the framer's
/// header spans for this frame: they must say exactly what httparse finds again.
pub fn to_request(buf: &[u8], f: &Frame, fields: &[Field], limits: &Limits) -> Request {
    let h = &f.head;
    assert!(f.len > 0, "empty frame");
    assert!(f.len <= buf.len(), "frame {} > buffer {}", f.len, buf.len());
    assert!(h.len <= f.len, "head {} > frame {}", h.len, f.len);
    for s in [h.method, h.target, h.path, h.query] {
        assert!(
            s.start <= s.end && (s.end as usize) <= h.len,
            "span {s:?} outside head"
        );
    }
    assert!(fields.len() <= MAX_HEADERS);
    let head_bytes = &buf[..h.len];
    // The request line as an independent reader finds it: after the empty lines
    // (CRLF or LF), up to the first LF; it ends in `HTTP/1.` and a digit.
    let mut lead = 0;
    while head_bytes[lead..].starts_with(b"\r\n") || head_bytes[lead..].starts_with(b"\n") {
        lead += if head_bytes[lead] == b'\r' { 2 } else { 1 };
    }
    let nl = lead
        + head_bytes[lead..]
            .iter()
            .position(|&b| b == b'\n')
            .expect("a framed head has a request line");
    let line = head_bytes[lead..nl]
        .strip_suffix(b"\r")
        .unwrap_or(&head_bytes[lead..nl]);
    let minor_at = lead + line.len() - 1;
    assert!(
        line.len() > 8 && &line[line.len() - 8..line.len() - 1] == b"HTTP/1.",
        "framed line {line:?} is not HTTP/1.x"
    );
    let minor_digit = head_bytes[minor_at];
    assert!(minor_digit.is_ascii_digit());
    // RFC 9110 §2.5: a later HTTP/1.x is processed as HTTP/1.1.
    assert_eq!(h.minor_version, u8::from(minor_digit != b'0'), "{line:?}");
    let method = h.method.get(buf);
    assert!(!method.is_empty() && method.len() <= MAX_METHOD_LEN);
    assert!(method.iter().all(|&b| is_tchar(b)), "method {method:?}");
    let target = h.target.get(buf);
    assert!(
        target
            .iter()
            .all(|&b| b.is_ascii_graphic() && !b"#\"<>\\^`{|}".contains(&b)),
        "target {target:?} has a byte no URI has"
    );
    // httparse knows only HTTP/1.0 and 1.1: it re-parses a copy of the head whose
    // version says what the framer processed it as.
    let mut copy = head_bytes.to_vec();
    copy[minor_at] = b'0' + h.minor_version;
    let mut slots = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut req = httparse::Request::new(&mut slots);
    let n = match req.parse(&copy) {
        Ok(httparse::Status::Complete(n)) => n,
        other => panic!("framed head does not re-parse: {other:?}"),
    };
    assert_eq!(n, h.len, "httparse disagrees on the head length");
    assert_eq!(req.method.map(str::as_bytes), Some(method));
    assert_eq!(req.path.map(str::as_bytes), Some(target));
    assert_eq!(req.version, Some(h.minor_version));
    let headers: Vec<(Vec<u8>, Vec<u8>)> = req
        .headers
        .iter()
        .map(|x| (x.name.as_bytes().to_vec(), x.value.to_vec()))
        .collect();
    for (name, value) in &headers {
        if name.eq_ignore_ascii_case(b"host") {
            assert!(
                !value
                    .iter()
                    .any(|&b| b == b'@' || b == b' ' || b == b'\t' || b == b'/'),
                "Host {value:?} is no authority"
            );
        }
    }
    let spans: Vec<(Vec<u8>, Vec<u8>)> = fields
        .iter()
        .map(|x| {
            (
                x.name.get(head_bytes).to_vec(),
                x.value.get(head_bytes).to_vec(),
            )
        })
        .collect();
    assert_eq!(
        spans, headers,
        "the framer's field spans differ from the head"
    );
    let body = match f.body {
        Body::None => {
            assert_eq!(f.len, h.len, "bodiless frame longer than its head");
            Vec::new()
        }
        Body::Fixed { start, end } => {
            assert!(start == h.len && start <= end && end == f.len, "{f:?}");
            assert_eq!(pyrs_parser::BodyKind::Length((end - start) as u64), h.body);
            buf[start..end].to_vec()
        }
        Body::Chunked {
            start,
            end,
            decoded_len,
        } => {
            assert!(start == h.len && start <= end && end == f.len, "{f:?}");
            assert!(decoded_len <= limits.max_body);
            let mut out = Vec::new();
            let n = decode_chunked(&buf[start..end], limits.max_body, limits.max_head, &mut out)
                .expect("a scanned chunked body decodes");
            assert_eq!(n, end - start, "decoder and scanner disagree on the end");
            assert_eq!(out.len() as u64, decoded_len);
            out
        }
    };
    Request {
        method: h.method.get(buf).to_vec(),
        target: h.target.get(buf).to_vec(),
        path: h.path_bytes(buf).to_vec(),
        query: h.query.get(buf).to_vec(),
        minor: h.minor_version,
        headers,
        body,
        keep_alive: h.keep_alive,
        expect_continue: h.expect_continue,
        wire_len: f.len,
    }
}

/// Frames `stream` delivered in pieces ending at `cuts` (sorted offsets; the end
/// of the stream is always a cut), dropping each request from the buffer as a
/// connection does. Stops at the first error.
pub fn feed(stream: &[u8], cuts: &[usize], limits: &Limits) -> Outcome {
    let mut framer = Framer::new();
    let mut buf: Vec<u8> = Vec::with_capacity(stream.len());
    let mut requests = Vec::new();
    let mut fed = 0;
    for p in cuts.iter().copied().chain(std::iter::once(stream.len())) {
        if p <= fed {
            continue;
        }
        buf.extend_from_slice(&stream[fed..p]);
        fed = p;
        loop {
            if buf.is_empty() {
                break;
            }
            match framer.poll(&buf, limits) {
                Ok(Progress::Partial) => break,
                Ok(Progress::Complete(f)) => {
                    requests.push(to_request(&buf, &f, framer.fields(), limits));
                    buf.drain(..f.len);
                }
                Err(error) => {
                    check_error(error);
                    return Outcome {
                        requests,
                        error: Some(error),
                    };
                }
            }
        }
    }
    Outcome {
        requests,
        error: None,
    }
}

fn check_error(e: ParseError) {
    assert!(
        matches!(e.status(), 400 | 413 | 414 | 431 | 501 | 505),
        "{e:?} maps to {}",
        e.status()
    );
    assert!(!e.message().is_empty());
}

/// `parse_request`: arbitrary bytes never panic the framer; `consumed` stays within
/// the input; a complete request re-parses identically from exactly its consumed
/// bytes (and from those bytes plus anything after them). Walks the whole pipeline.
pub fn check_parse_request(input: &[u8]) {
    let limits = limits_from(input.first().copied().unwrap_or(0));
    let stream = input.get(1..).unwrap_or(&[]);
    let mut off = 0;
    while off < stream.len() {
        let rest = &stream[off..];
        let mut framer = Framer::new();
        let frame = match framer.poll(rest, &limits) {
            Ok(Progress::Partial) => return,
            Ok(Progress::Complete(f)) => f,
            Err(e) => {
                check_error(e);
                return;
            }
        };
        assert!(frame.len > 0 && frame.len <= rest.len());
        let req = to_request(rest, &frame, framer.fields(), &limits);
        let exact = &rest[..frame.len];
        let mut again_framer = Framer::new();
        let again = again_framer.poll(exact, &limits);
        assert_eq!(
            again,
            Ok(Progress::Complete(frame)),
            "re-parse of its own bytes"
        );
        assert_eq!(
            to_request(exact, &frame, again_framer.fields(), &limits),
            req
        );
        // A strict prefix of a complete request is incomplete: never an error and
        // never a different request.
        for cut in [frame.head.len - 1, frame.len - 1] {
            if cut > 0 {
                match Framer::new().poll(&rest[..cut], &limits) {
                    Ok(Progress::Partial) => {}
                    other => panic!("prefix of {cut} bytes gave {other:?}"),
                }
            }
        }
        off += frame.len;
    }
}

/// `split_invariance`: the stream fed in the pieces the input names (and byte by
/// byte, when short) frames exactly the same requests and error as fed whole.
pub fn check_split_invariance(input: &[u8]) {
    let (limits, cuts, stream) = split_input(input);
    let whole = feed(stream, &[], &limits);
    let split = feed(stream, &cuts, &limits);
    assert_eq!(split, whole, "cut at {cuts:?}");
    if stream.len() <= BYTEWISE_MAX {
        let every: Vec<usize> = (1..stream.len()).collect();
        assert_eq!(feed(stream, &every, &limits), whole, "byte by byte");
    }
}

/// Limits for the chunked target: the body limit from [`limits_from`] and a trailer
/// bound of 0..=381 bytes from the same selector.
fn chunked_limits(sel: u8) -> (u64, usize) {
    let l = limits_from(sel);
    let max_trailer = if sel & 0x80 == 0 {
        l.max_head
    } else {
        usize::from(sel & 0x1f) * 12 + 9
    };
    (l.max_body, max_trailer)
}

/// `chunked_body`: the scanner fed in pieces agrees with the scanner fed whole,
/// with [`decode_chunked`], and with an independent reference decoder
/// ([`reference_chunked`]).
pub fn check_chunked(input: &[u8]) {
    let sel = input.first().copied().unwrap_or(0);
    let (max_body, max_trailer) = chunked_limits(sel);
    let (_, cuts, body) = split_input(input);

    let mut whole_scanner = ChunkedScanner::new();
    let whole = whole_scanner.scan(body, max_body, max_trailer);
    if let Err(e) = whole {
        check_error(e);
    }

    // Fed in pieces: every answer before the last piece is `None` unless the body
    // (or an error) is already decided, and then it must be the whole answer.
    let mut scanner = ChunkedScanner::new();
    for p in cuts.iter().copied().chain(std::iter::once(body.len())) {
        let got = scanner.scan(&body[..p], max_body, max_trailer);
        match got {
            Ok(None) if p < body.len() => continue,
            Ok(Some(n)) => assert!(n <= p, "end {n} beyond the {p} bytes given"),
            _ => {}
        }
        assert_eq!(got, whole, "pieces ending at {p} (cuts {cuts:?})");
        break;
    }

    let mut out = Vec::new();
    let decoded = decode_chunked(body, max_body, max_trailer, &mut out);
    match whole {
        Ok(Some(n)) => {
            assert_eq!(decoded, Ok(n));
            assert_eq!(out.len() as u64, whole_scanner.decoded_len());
            let mut exact = Vec::new();
            assert_eq!(
                decode_chunked(&body[..n], max_body, max_trailer, &mut exact),
                Ok(n)
            );
            assert_eq!(exact, out);
        }
        Ok(None) => assert_eq!(decoded, Err(ParseError::InvalidChunk)),
        Err(e) => assert_eq!(decoded, Err(e)),
    }

    let reference = reference_chunked(body, max_body, max_trailer);
    match (&whole, &reference) {
        (Ok(Some(n)), Ok(Some((m, data)))) => {
            assert_eq!(n, m, "reference ends elsewhere");
            assert_eq!(&out, data, "reference decodes differently");
        }
        (Ok(None), Ok(None)) | (Err(_), Err(())) => {}
        _ => panic!("scanner {whole:?} but reference {reference:?}"),
    }
}

/// A deliberately naive chunked decoder written from RFC 9112 §7.1, used only to
/// cross-check [`ChunkedScanner`]: `Ok(Some((wire_len, data)))`, `Ok(None)` for
/// incomplete input, `Err(())` for anything invalid or over a limit.
#[allow(clippy::result_unit_err)]
pub fn reference_chunked(
    body: &[u8],
    max_body: u64,
    max_trailer: usize,
) -> Result<Option<(usize, Vec<u8>)>, ()> {
    // Returns the line at `at` without its CRLF and the offset after it.
    fn line(body: &[u8], at: usize, max: usize) -> Result<Option<(&[u8], usize)>, ()> {
        let mut i = at;
        while i < body.len() {
            if body[i] == b'\n' {
                if i == at || body[i - 1] != b'\r' {
                    return Err(());
                }
                if i - 1 - at > max {
                    return Err(());
                }
                return Ok(Some((&body[at..i - 1], i + 1)));
            }
            i += 1;
        }
        // No LF yet: too long already once more than `max` + CR bytes are here.
        if body.len() - at > max + 1 {
            return Err(());
        }
        Ok(None)
    }
    fn tchar(b: u8) -> bool {
        matches!(b, b'0'..=b'9' | b'a'..=b'z' | b'A'..=b'Z') || b"!#$%&'*+-.^_`|~".contains(&b)
    }
    fn text(b: u8) -> bool {
        b == b'\t' || (b >= 0x20 && b != 0x7f)
    }
    // chunk-ext = *( BWS ";" BWS name [ BWS "=" BWS ( token / quoted-string ) ] )
    // (RFC 9112 §7.1.1)
    fn extensions(s: &[u8]) -> bool {
        #[derive(Clone, Copy, PartialEq)]
        enum St {
            BeforeSemi,
            BeforeName,
            Name,
            AfterName,
            BeforeValue,
            Token,
            Quoted,
            Escape,
            /// Just after a quoted-string's closing quote.
            Closed,
            AfterValue,
        }
        let mut st = St::BeforeSemi;
        for &b in s {
            let ws = b == b' ' || b == b'\t';
            st = match (st, b) {
                (
                    St::BeforeSemi
                    | St::AfterName
                    | St::AfterValue
                    | St::Name
                    | St::Token
                    | St::Closed,
                    b';',
                ) => St::BeforeName,
                (St::BeforeSemi, _) if ws => St::BeforeSemi,
                (St::BeforeName, _) if ws => St::BeforeName,
                (St::BeforeName | St::Name, _) if tchar(b) => St::Name,
                (St::Name | St::AfterName, _) if ws => St::AfterName,
                (St::Name | St::AfterName, b'=') => St::BeforeValue,
                (St::BeforeValue, _) if ws => St::BeforeValue,
                (St::BeforeValue, b'"') => St::Quoted,
                (St::BeforeValue | St::Token, _) if tchar(b) => St::Token,
                (St::Quoted, b'"') => St::Closed,
                (St::Quoted, b'\\') => St::Escape,
                (St::Quoted | St::Escape, _) if text(b) => St::Quoted,
                (St::Token | St::Closed | St::AfterValue, _) if ws => St::AfterValue,
                _ => return false,
            };
        }
        // BWS only before ";" and around "=": never before the CRLF.
        matches!(st, St::Name | St::Token | St::Closed)
    }

    let mut at = 0;
    let mut data = Vec::new();
    let mut total: u64 = 0;
    loop {
        let Some((size_line, next)) = line(body, at, MAX_CHUNK_LINE)? else {
            return Ok(None);
        };
        let digits = size_line
            .iter()
            .take_while(|b| b.is_ascii_hexdigit())
            .count();
        if digits == 0 || !(digits == size_line.len() || extensions(&size_line[digits..])) {
            return Err(());
        }
        let hex = std::str::from_utf8(&size_line[..digits]).expect("hex digits are ASCII");
        let size = u64::from_str_radix(hex, 16).map_err(|_| ())?;
        at = next;
        if size == 0 {
            break;
        }
        total = total.checked_add(size).ok_or(())?;
        if total > max_body {
            return Err(());
        }
        let avail = (body.len() - at) as u64;
        if avail < size {
            return Ok(None);
        }
        let end = at + size as usize;
        data.extend_from_slice(&body[at..end]);
        at = end;
        match body.get(at..at + 2) {
            Some(b"\r\n") => at += 2,
            Some(_) => return Err(()),
            None if body.get(at).is_some_and(|&b| b != b'\r') => return Err(()),
            None => return Ok(None),
        }
    }
    let mut used = 0usize;
    loop {
        let Some((l, next)) = line(body, at, max_trailer.saturating_sub(used))? else {
            return Ok(None);
        };
        used += l.len() + 2;
        at = next;
        if l.is_empty() {
            return Ok(Some((at, data)));
        }
        let Some(colon) = l.iter().position(|&b| b == b':') else {
            return Err(());
        };
        if colon == 0
            || !l[..colon].iter().all(|&b| tchar(b))
            || !l[colon + 1..].iter().all(|&b| text(b))
        {
            return Err(());
        }
    }
}
