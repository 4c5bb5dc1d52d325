//! The request line (RFC 9112 §3): `method SP request-target SP HTTP-version`,
//! read by pyrs itself, strictly and left to right. httparse is not used for it:
//! it knows only HTTP/1.0 and 1.1 (RFC 9110 §2.5 has a later HTTP/1.x processed
//! as 1.1), and it lets through bytes no request-target may carry (`#`, `"`,
//! non-ASCII). Only the field section after the line goes to httparse.
//!
//! Every verdict is decided at the first byte that makes it certain, and no byte
//! past the line limit is looked at, so a line cut anywhere gets the answer it
//! gets whole: that is what lets the framer check a line before its head is
//! complete, and resume.

use crate::head::{Method, Span};
use crate::syntax::{is_authority, is_hex, is_target_char, is_tchar};
use crate::{ParseError, MAX_METHOD_LEN};

/// A complete, valid request line; offsets index the buffer it was read from.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Line {
    pub method: Span,
    pub method_kind: Method,
    pub target: Span,
    pub path: Span,
    pub query: Span,
    /// 0 for HTTP/1.0, 1 for HTTP/1.1 and every later HTTP/1.x.
    pub minor_version: u8,
    /// Just past the line's LF: where the field section starts.
    pub end: usize,
}

/// The bound on a request line, and what exceeding it is: the request-line limit
/// (414), or the head limit (431) when that is the smaller one, so that a line is
/// never read further than its head may reach.
#[derive(Debug, Clone, Copy)]
pub(crate) struct LineLimit {
    pub max: usize,
    pub too_long: ParseError,
}

impl LineLimit {
    pub fn of(limits: &crate::Limits) -> LineLimit {
        if limits.max_request_line <= limits.max_head {
            LineLimit {
                max: limits.max_request_line,
                too_long: ParseError::RequestLineTooLong,
            }
        } else {
            LineLimit {
                max: limits.max_head,
                too_long: ParseError::HeadTooLarge,
            }
        }
    }
}

/// Reads the request line starting at `buf[start]`: `Ok(None)` while the bytes so
/// far may still become a valid line. A line whose content (without CRLF or LF)
/// is longer than `limit.max` is `limit.too_long` as soon as its first byte past
/// the limit arrives; the bytes up to the limit are checked first.
pub(crate) fn parse_line(
    buf: &[u8],
    start: usize,
    limit: LineLimit,
) -> Result<Option<Line>, ParseError> {
    let line = &buf[start..];
    let bound = line.len().min(limit.max);
    // The byte at `i` where a scan of content bytes stopped, `None` when no byte
    // has arrived there yet; past the limit only a line end may follow.
    let at = |i: usize| -> Result<Option<u8>, ParseError> {
        match line.get(i) {
            None => Ok(None),
            Some(&b) if i >= limit.max && b != b'\r' && b != b'\n' => Err(limit.too_long),
            Some(&b) => Ok(Some(b)),
        }
    };
    macro_rules! next {
        ($i:expr) => {
            match at($i)? {
                Some(b) => b,
                None => return Ok(None),
            }
        };
    }

    // method = token, at most MAX_METHOD_LEN bytes.
    let method_bound = bound.min(MAX_METHOD_LEN + 1);
    let mut i = 0;
    while i < method_bound && is_tchar(line[i]) {
        i += 1;
    }
    if i > MAX_METHOD_LEN {
        return Err(ParseError::MethodTooLong);
    }
    if next!(i) != b' ' || i == 0 {
        return Err(ParseError::InvalidMethod);
    }
    let method = &line[..i];

    // request-target: URI characters, pct-encodings checked, no whitespace.
    let target_start = i + 1;
    let mut j = target_start;
    let mut brackets = false;
    // The first `?`: where the query starts, in every form that has one.
    let mut query_at = None;
    loop {
        while j < bound && is_target_char(line[j]) {
            j += 1;
        }
        match next!(j) {
            b' ' => break,
            b'?' => {
                query_at = query_at.or(Some(j - target_start));
                j += 1;
            }
            b'%' => {
                if !is_hex(next!(j + 1)) || !is_hex(next!(j + 2)) {
                    return Err(ParseError::InvalidTarget);
                }
                j += 3;
            }
            b'[' | b']' => {
                brackets = true;
                j += 1;
            }
            // A line that ends without a version (HTTP/0.9's form).
            b'\n' => return Err(ParseError::InvalidRequestLine),
            b'\r' if line.get(j + 1) == Some(&b'\n') => return Err(ParseError::InvalidRequestLine),
            b'\r' if line.get(j + 1).is_none() => return Ok(None),
            _ => return Err(ParseError::InvalidTarget),
        }
    }
    if j == target_start {
        return Err(ParseError::InvalidRequestLine);
    }

    // HTTP-version = "HTTP/" DIGIT "." DIGIT, then CRLF or LF (RFC 9112 §2.2).
    let v = j + 1;
    let (major, minor) = if v + 8 <= bound && &line[v..v + 8] == b"HTTP/1.1" {
        (b'1', b'1')
    } else {
        for (k, &want) in b"HTTP/".iter().enumerate() {
            if next!(v + k) != want {
                return Err(ParseError::InvalidRequestLine);
            }
        }
        let major = next!(v + 5);
        let dot = next!(v + 6);
        let minor = next!(v + 7);
        if !major.is_ascii_digit() || dot != b'.' || !minor.is_ascii_digit() {
            return Err(ParseError::InvalidRequestLine);
        }
        (major, minor)
    };
    let end = match next!(v + 8) {
        b'\n' => v + 9,
        // The LF after a final CR may lie just past the limit.
        b'\r' => match line.get(v + 9) {
            None => return Ok(None),
            Some(b'\n') => v + 10,
            Some(_) => return Err(ParseError::InvalidRequestLine),
        },
        _ => return Err(ParseError::InvalidRequestLine),
    };

    // The line is complete and well-formed; now what it says.
    if major != b'1' {
        // RFC 9110 §15.6.6: the major version is not supported.
        return Err(ParseError::UnsupportedVersion);
    }
    let minor_version = u8::from(minor != b'0');
    if method == b"CONNECT" {
        return Err(ParseError::MethodNotImplemented);
    }
    let method_kind = method_kind(method);
    let span = |a: usize, b: usize| Span {
        start: (start + a) as u32,
        end: (start + b) as u32,
    };
    let (path, query) = split_target(&line[target_start..j], query_at, brackets, method_kind)?;
    let shift = |(a, b): (usize, usize)| span(target_start + a, target_start + b);
    Ok(Some(Line {
        method: span(0, i),
        method_kind,
        target: span(target_start, j),
        path: shift(path),
        query: shift(query),
        minor_version,
        end: start + end,
    }))
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

/// `start..end` offsets into a request-target.
type Range = (usize, usize);

/// The path and query of a request-target, as ranges into it (RFC 9112 §3.2):
/// origin-form `/p?q`, absolute-form `scheme://authority/p?q`, asterisk-form `*`
/// (OPTIONS only). Authority-form is CONNECT's, refused before this. `query_at`:
/// the first `?` (no scheme or authority has one, so it starts the query);
/// `brackets`: the target has `[` or `]`, which only an absolute-form authority
/// may hold.
fn split_target(
    target: &[u8],
    query_at: Option<usize>,
    brackets: bool,
    method: Method,
) -> Result<(Range, Range), ParseError> {
    let path_start = if target[0] == b'/' {
        0
    } else if target == b"*" {
        if method != Method::Options {
            return Err(ParseError::InvalidTarget);
        }
        let end = target.len();
        return Ok(((end, end), (end, end)));
    } else {
        absolute_form_path(target)?
    };
    let rest = &target[path_start..];
    if brackets && rest.iter().any(|&b| b == b'[' || b == b']') {
        return Err(ParseError::InvalidTarget);
    }
    Ok(match query_at {
        Some(q) => ((path_start, q), (q + 1, target.len())),
        None => ((path_start, target.len()), (target.len(), target.len())),
    })
}

/// Where the path of `scheme://authority/path?q` starts (the target's length when
/// it has neither path nor query). The authority must be `host [ ":" port ]` with
/// a host and no userinfo.
fn absolute_form_path(target: &[u8]) -> Result<usize, ParseError> {
    let colon = target
        .iter()
        .position(|&b| b == b':')
        .ok_or(ParseError::InvalidTarget)?;
    let scheme = &target[..colon];
    let scheme_ok = scheme.first().is_some_and(u8::is_ascii_alphabetic)
        && scheme
            .iter()
            .all(|&b| b.is_ascii_alphanumeric() || b == b'+' || b == b'-' || b == b'.');
    let authority_start = colon + 3;
    if !scheme_ok || target.get(colon + 1..authority_start) != Some(b"//") {
        return Err(ParseError::InvalidTarget);
    }
    let authority_len = target[authority_start..]
        .iter()
        .position(|&b| b == b'/' || b == b'?')
        .unwrap_or(target.len() - authority_start);
    let authority = &target[authority_start..authority_start + authority_len];
    if !is_authority(authority, false) {
        return Err(ParseError::InvalidTarget);
    }
    Ok(authority_start + authority_len)
}
