//! The request fields a static answer depends on, read from the parser's spans:
//! preconditions in RFC 9110 §13.2.2 order (`If-Match`, `If-Unmodified-Since`,
//! `If-None-Match`, `If-Modified-Since`), one `Range` (§14.2) with `If-Range`
//! (§13.1.5), and `Accept-Encoding` (§12.5.3). Pure functions on bytes, run on the
//! reactor thread; nothing here allocates.

use std::time::UNIX_EPOCH;

use pyrs_parser::Field;

/// The fields of one request that static answers look at (first of each;
/// the `If-Match` / `If-None-Match` lists are read in full when present).
#[derive(Debug, Default, Clone, Copy)]
pub struct Conditions<'a> {
    fields: &'a [Field],
    buf: &'a [u8],
    if_match: bool,
    if_none_match: bool,
    if_modified_since: Option<&'a [u8]>,
    if_unmodified_since: Option<&'a [u8]>,
    pub range: Option<&'a [u8]>,
    if_range: Option<&'a [u8]>,
    pub accept_encoding: Option<&'a [u8]>,
}

impl<'a> Conditions<'a> {
    /// One pass over the request's fields.
    pub fn read(fields: &'a [Field], buf: &'a [u8]) -> Conditions<'a> {
        let mut c = Conditions {
            fields,
            buf,
            ..Conditions::default()
        };
        for f in fields {
            let name = f.name.get(buf);
            let value = f.value.get(buf);
            let first = |slot: &mut Option<&'a [u8]>| {
                if slot.is_none() {
                    *slot = Some(value);
                }
            };
            match name.len() {
                5 if name.eq_ignore_ascii_case(b"range") => first(&mut c.range),
                8 if name.eq_ignore_ascii_case(b"if-match") => c.if_match = true,
                8 if name.eq_ignore_ascii_case(b"if-range") => first(&mut c.if_range),
                13 if name.eq_ignore_ascii_case(b"if-none-match") => c.if_none_match = true,
                15 if name.eq_ignore_ascii_case(b"accept-encoding") => {
                    first(&mut c.accept_encoding)
                }
                17 if name.eq_ignore_ascii_case(b"if-modified-since") => {
                    first(&mut c.if_modified_since)
                }
                19 if name.eq_ignore_ascii_case(b"if-unmodified-since") => {
                    first(&mut c.if_unmodified_since)
                }
                _ => {}
            }
        }
        c
    }

    /// Every value of field `name` (a list field sent on several lines).
    fn all(&self, name: &'static [u8]) -> impl Iterator<Item = &'a [u8]> + '_ {
        self.fields
            .iter()
            .filter(move |f| f.name.get(self.buf).eq_ignore_ascii_case(name))
            .map(|f| f.value.get(self.buf))
    }

    /// RFC 9110 §13.2.2 for a GET or HEAD of a representation with strong
    /// `etag` and modification time `modified` (seconds since the epoch).
    pub fn evaluate(&self, etag: &[u8], modified: u64) -> Precondition {
        if self.if_match {
            if !self.all(b"if-match").any(|v| list_matches(v, etag, false)) {
                return Precondition::Failed;
            }
        } else if let Some(since) = self.if_unmodified_since.and_then(http_date) {
            if modified > since {
                return Precondition::Failed;
            }
        }
        if self.if_none_match {
            if self
                .all(b"if-none-match")
                .any(|v| list_matches(v, etag, true))
            {
                return Precondition::NotModified;
            }
        } else if let Some(since) = self.if_modified_since.and_then(http_date) {
            if modified <= since {
                return Precondition::NotModified;
            }
        }
        Precondition::Proceed
    }

    /// Whether a `Range` may be honoured: no `If-Range`, or one naming this
    /// exact representation (strong comparison, or its exact `Last-Modified`).
    pub fn range_allowed(&self, etag: &[u8], modified: u64) -> bool {
        match self.if_range {
            None => true,
            Some(v) if v.starts_with(b"\"") || v.starts_with(b"W/") => v == etag,
            Some(v) => http_date(v) == Some(modified),
        }
    }
}

/// What the preconditions decided.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Precondition {
    Proceed,
    /// 304 Not Modified.
    NotModified,
    /// 412 Precondition Failed.
    Failed,
}

/// An HTTP-date as seconds since the epoch; `None` if it is not one.
fn http_date(value: &[u8]) -> Option<u64> {
    let text = std::str::from_utf8(value).ok()?;
    let time = httpdate::parse_http_date(text).ok()?;
    time.duration_since(UNIX_EPOCH).ok().map(|d| d.as_secs())
}

/// Whether the `#entity-tag` list (or `*`) in `value` names `etag`; `weak`
/// compares ignoring `W/` (If-None-Match), otherwise a weak tag never matches.
fn list_matches(value: &[u8], etag: &[u8], weak: bool) -> bool {
    let mut rest = value;
    loop {
        rest = trim_start(rest, b", \t");
        if rest.is_empty() {
            return false;
        }
        if rest[0] == b'*' {
            return true;
        }
        let (is_weak, tagged) = match rest.strip_prefix(b"W/") {
            Some(after) => (true, after),
            None => (false, rest),
        };
        if tagged.first() != Some(&b'"') {
            return false;
        }
        let Some(close) = tagged[1..].iter().position(|&b| b == b'"') else {
            return false;
        };
        let tag = &tagged[..close + 2];
        if tag == etag && (weak || !is_weak) {
            return true;
        }
        rest = &tagged[close + 2..];
    }
}

fn trim_start<'a>(mut bytes: &'a [u8], set: &[u8]) -> &'a [u8] {
    while let Some((first, rest)) = bytes.split_first() {
        if !set.contains(first) {
            break;
        }
        bytes = rest;
    }
    bytes
}

fn trim(bytes: &[u8]) -> &[u8] {
    let start = trim_start(bytes, b" \t");
    let end = start
        .iter()
        .rposition(|b| !b" \t".contains(b))
        .map_or(0, |i| i + 1);
    &start[..end]
}

/// How a `Range` field applies to a representation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RangeAnswer {
    /// No usable range (malformed, another unit, several ranges): 200, all of it.
    Whole,
    /// 206 with bytes `first..=last`.
    Part { first: u64, last: u64 },
    /// 416.
    Unsatisfiable,
}

/// Reads `bytes=a-b`, `bytes=a-` or `bytes=-n` against a length of `len`.
pub fn range(value: &[u8], len: u64) -> RangeAnswer {
    let value = trim(value);
    let Some(eq) = value.iter().position(|&b| b == b'=') else {
        return RangeAnswer::Whole;
    };
    if !trim(&value[..eq]).eq_ignore_ascii_case(b"bytes") {
        return RangeAnswer::Whole;
    }
    let spec = trim(&value[eq + 1..]);
    if spec.contains(&b',') {
        // Several ranges: answering with the whole file is allowed (§14.2).
        return RangeAnswer::Whole;
    }
    let Some(dash) = spec.iter().position(|&b| b == b'-') else {
        return RangeAnswer::Whole;
    };
    let (a, b) = (trim(&spec[..dash]), trim(&spec[dash + 1..]));
    match (number(a), number(b)) {
        // -n: the last n bytes.
        (None, Some(n)) if a.is_empty() => {
            if n == 0 || len == 0 {
                RangeAnswer::Unsatisfiable
            } else {
                RangeAnswer::Part {
                    first: len - n.min(len),
                    last: len - 1,
                }
            }
        }
        (Some(first), None) if b.is_empty() => satisfiable(first, len.saturating_sub(1), len),
        (Some(first), Some(last)) if first <= last => satisfiable(first, last, len),
        _ => RangeAnswer::Whole,
    }
}

fn satisfiable(first: u64, last: u64, len: u64) -> RangeAnswer {
    if first >= len {
        RangeAnswer::Unsatisfiable
    } else {
        RangeAnswer::Part {
            first,
            last: last.min(len - 1),
        }
    }
}

/// Digits only, no sign, no overflow.
fn number(digits: &[u8]) -> Option<u64> {
    if digits.is_empty() || !digits.iter().all(u8::is_ascii_digit) {
        return None;
    }
    std::str::from_utf8(digits).ok()?.parse().ok()
}

/// Whether `Accept-Encoding: value` allows `coding` (RFC 9110 §12.5.3): named
/// with a non-zero weight, or covered by a non-zero `*` and not refused by name.
pub fn accepts(value: &[u8], coding: &[u8]) -> bool {
    let mut star = false;
    for item in value.split(|&b| b == b',') {
        let mut parts = item.split(|&b| b == b';');
        let name = trim(parts.next().unwrap_or_default());
        let zero = parts.any(|p| {
            let p = trim(p);
            (p.starts_with(b"q=") || p.starts_with(b"Q="))
                && trim(&p[2..]).iter().all(|&b| b == b'0' || b == b'.')
        });
        if name.eq_ignore_ascii_case(coding) {
            return !zero;
        }
        if name == b"*" {
            star = !zero;
        }
    }
    star
}

#[cfg(test)]
mod tests {
    use super::*;
    use pyrs_parser::Span;

    const TAG: &[u8] = b"\"5f.0-10\"";
    /// Sun, 06 Nov 1994 08:49:37 GMT
    const T: u64 = 784_111_777;

    /// Conditions from `name: value` lines.
    fn with(lines: &[(&str, &str)], check: impl FnOnce(Conditions<'_>)) {
        let mut buf = Vec::new();
        let mut fields = Vec::new();
        for (name, value) in lines {
            let n = buf.len() as u32;
            buf.extend_from_slice(name.as_bytes());
            let v = buf.len() as u32;
            buf.extend_from_slice(value.as_bytes());
            fields.push(Field {
                name: Span { start: n, end: v },
                value: Span {
                    start: v,
                    end: buf.len() as u32,
                },
            });
        }
        check(Conditions::read(&fields, &buf));
    }

    fn decide(lines: &[(&str, &str)]) -> Precondition {
        let mut out = Precondition::Proceed;
        with(lines, |c| out = c.evaluate(TAG, T));
        out
    }

    use Precondition::*;

    #[test]
    fn if_none_match_gives_not_modified() {
        assert_eq!(decide(&[("If-None-Match", "\"5f.0-10\"")]), NotModified);
        assert_eq!(decide(&[("if-none-match", "W/\"5f.0-10\"")]), NotModified);
        assert_eq!(
            decide(&[("If-None-Match", "\"a\", \"5f.0-10\"")]),
            NotModified
        );
        assert_eq!(
            decide(&[("If-None-Match", "\"a\""), ("If-None-Match", "*")]),
            NotModified
        );
        assert_eq!(decide(&[("If-None-Match", "\"other\"")]), Proceed);
        assert_eq!(decide(&[("If-None-Match", "garbage")]), Proceed);
    }

    #[test]
    fn if_none_match_outranks_if_modified_since() {
        let later = "Mon, 07 Nov 1994 08:49:37 GMT";
        assert_eq!(decide(&[("If-Modified-Since", later)]), NotModified);
        assert_eq!(
            decide(&[("If-Modified-Since", "Sun, 06 Nov 1994 08:49:37 GMT")]),
            NotModified
        );
        assert_eq!(
            decide(&[("If-Modified-Since", "Sun, 06 Nov 1994 08:49:36 GMT")]),
            Proceed
        );
        // A failing If-None-Match means If-Modified-Since is not looked at.
        assert_eq!(
            decide(&[("If-None-Match", "\"x\""), ("If-Modified-Since", later)]),
            Proceed
        );
        assert_eq!(decide(&[("If-Modified-Since", "yesterday")]), Proceed);
    }

    #[test]
    fn if_match_and_if_unmodified_since_fail_first() {
        assert_eq!(decide(&[("If-Match", "\"x\"")]), Failed);
        assert_eq!(
            decide(&[("If-Match", "W/\"5f.0-10\"")]),
            Failed,
            "weak never matches"
        );
        assert_eq!(decide(&[("If-Match", "*")]), Proceed);
        assert_eq!(
            decide(&[("If-Match", "\"5f.0-10\""), ("If-None-Match", "*")]),
            NotModified
        );
        assert_eq!(
            decide(&[("If-Unmodified-Since", "Sun, 06 Nov 1994 08:49:36 GMT")]),
            Failed
        );
        // If-Match present: If-Unmodified-Since is ignored.
        assert_eq!(
            decide(&[
                ("If-Match", "*"),
                ("If-Unmodified-Since", "Sun, 06 Nov 1994 08:49:36 GMT")
            ]),
            Proceed
        );
    }

    #[test]
    fn if_range_needs_the_same_representation() {
        let allowed = |lines: &[(&str, &str)]| {
            let mut out = false;
            with(lines, |c| out = c.range_allowed(TAG, T));
            out
        };
        assert!(allowed(&[]));
        assert!(allowed(&[("If-Range", "\"5f.0-10\"")]));
        assert!(!allowed(&[("If-Range", "W/\"5f.0-10\"")]));
        assert!(!allowed(&[("If-Range", "\"old\"")]));
        assert!(allowed(&[("If-Range", "Sun, 06 Nov 1994 08:49:37 GMT")]));
        assert!(!allowed(&[("If-Range", "Mon, 07 Nov 1994 08:49:37 GMT")]));
        assert!(!allowed(&[("If-Range", "nonsense")]));
    }

    #[test]
    fn reads_single_ranges() {
        use RangeAnswer::*;
        let part = |first, last| Part { first, last };
        assert_eq!(range(b"bytes=0-9", 100), part(0, 9));
        assert_eq!(range(b"bytes=90-", 100), part(90, 99));
        assert_eq!(range(b"bytes=-10", 100), part(90, 99));
        assert_eq!(range(b"bytes=-500", 100), part(0, 99));
        assert_eq!(range(b"bytes=50-5000", 100), part(50, 99));
        assert_eq!(range(b"Bytes = 1 - 2", 100), part(1, 2));
        assert_eq!(range(b"bytes=100-", 100), Unsatisfiable);
        assert_eq!(range(b"bytes=200-300", 100), Unsatisfiable);
        assert_eq!(range(b"bytes=-0", 100), Unsatisfiable);
        assert_eq!(range(b"bytes=0-", 0), Unsatisfiable);
        assert_eq!(range(b"bytes=0-1,5-6", 100), Whole);
        assert_eq!(range(b"bytes=5-1", 100), Whole);
        assert_eq!(range(b"items=0-1", 100), Whole);
        assert_eq!(range(b"bytes=a-b", 100), Whole);
        assert_eq!(range(b"bytes=+1-2", 100), Whole);
        assert_eq!(range(b"bytes=-", 100), Whole);
        assert_eq!(range(b"bytes=99999999999999999999-", 100), Whole);
    }

    #[test]
    fn reads_accept_encoding() {
        assert!(accepts(b"gzip, deflate, br", b"br"));
        assert!(accepts(b"BR;q=0.5", b"br"));
        assert!(!accepts(b"br;q=0", b"br"));
        assert!(!accepts(b"gzip;q=1.0, br; q=0.000", b"br"));
        assert!(accepts(b"*", b"gzip"));
        assert!(!accepts(b"*, gzip;q=0", b"gzip"));
        assert!(!accepts(b"identity", b"gzip"));
        assert!(!accepts(b"", b"gzip"));
    }
}
