//! Byte classes and small grammars shared by the request line, the header checks
//! and the chunked coding: tokens (RFC 9110 §5.6.2), the characters a
//! request-target may carry (RFC 3986 §3.3-3.4), and `uri-host [ ":" port ]`, the
//! authority of an absolute-form target and the value of `Host` (RFC 9112 §3.2,
//! RFC 3986 §3.2.2-3.2.3). Pure functions over bytes; no state.

/// One bit per byte class, looked up in [`CLASS`].
const TCHAR: u8 = 1;
/// `unreserved / sub-delims / ":" / "@" / "/"`: what a request-target may carry
/// as itself (`%` starts a pct-encoding, `?` the query, and `[`, `]` belong only
/// to an IP-literal, so those are handled apart).
const TARGET: u8 = 2;
/// `unreserved / sub-delims`: a reg-name's bytes besides pct-encodings.
const REG_NAME: u8 = 4;

const fn classes() -> [u8; 256] {
    let mut t = [0u8; 256];
    let mut b = 0;
    while b < 256 {
        let c = b as u8;
        let alnum = c.is_ascii_alphanumeric();
        let unreserved = alnum || matches!(c, b'-' | b'.' | b'_' | b'~');
        let sub_delim = matches!(
            c,
            b'!' | b'$' | b'&' | b'\'' | b'(' | b')' | b'*' | b'+' | b',' | b';' | b'='
        );
        let tchar = alnum
            || matches!(
                c,
                b'!' | b'#'
                    | b'$'
                    | b'%'
                    | b'&'
                    | b'\''
                    | b'*'
                    | b'+'
                    | b'-'
                    | b'.'
                    | b'^'
                    | b'_'
                    | b'`'
                    | b'|'
                    | b'~'
            );
        if tchar {
            t[b] |= TCHAR;
        }
        if unreserved || sub_delim || matches!(c, b':' | b'@' | b'/') {
            t[b] |= TARGET;
        }
        if unreserved || sub_delim {
            t[b] |= REG_NAME;
        }
        b += 1;
    }
    t
}

static CLASS: [u8; 256] = classes();

/// Whether `b` may appear in a token (RFC 9110 §5.6.2).
#[inline]
pub fn is_tchar(b: u8) -> bool {
    CLASS[usize::from(b)] & TCHAR != 0
}

/// Whether `b` stands for itself in a request-target (see [`TARGET`]).
#[inline]
pub(crate) fn is_target_char(b: u8) -> bool {
    CLASS[usize::from(b)] & TARGET != 0
}

#[inline]
pub(crate) fn is_hex(b: u8) -> bool {
    b.is_ascii_hexdigit()
}

/// `uri-host [ ":" port ]` (RFC 3986 §3.2.2-3.2.3): the `Host` field value
/// (`empty_host` true: RFC 9112 §3.2 has a client send an empty one when the
/// target URI has no authority) or an absolute-form authority (`empty_host` false:
/// RFC 9110 §4.2.1 has a recipient reject an `http` URI with an empty host). There
/// is no userinfo: `@` is not a reg-name byte (RFC 9110 §4.2.4 asks a recipient to
/// treat userinfo as an error).
pub(crate) fn is_authority(v: &[u8], empty_host: bool) -> bool {
    let (host_ok, rest) = match v.first() {
        Some(b'[') => match v.iter().position(|&b| b == b']') {
            Some(close) => (is_ip_literal(&v[1..close]), &v[close + 1..]),
            None => return false,
        },
        // A reg-name, read in one pass up to the first byte that is not part of
        // one: what follows must be the port (this runs for every request).
        _ => {
            let end = reg_name_len(v);
            (empty_host || end > 0, &v[end..])
        }
    };
    host_ok
        && match rest.split_first() {
            None => true,
            // port = *DIGIT: `host:` is valid, if unusual.
            Some((b':', port)) => port.iter().all(u8::is_ascii_digit),
            Some(_) => false,
        }
}

/// The length of the `*( unreserved / pct-encoded / sub-delims )` at the start
/// of `v` (IPv4 addresses are reg-names too).
fn reg_name_len(v: &[u8]) -> usize {
    let mut i = 0;
    loop {
        while i < v.len() && CLASS[usize::from(v[i])] & REG_NAME != 0 {
            i += 1;
        }
        match v.get(i..i + 3) {
            Some([b'%', h, l]) if is_hex(*h) && is_hex(*l) => i += 3,
            _ => return i,
        }
    }
}

/// The inside of `[...]`: an IPv6 address (std's parser follows RFC 4291 §2.2,
/// the text form RFC 3986 §3.2.2 names), or `IPvFuture = "v" 1*HEXDIG "."
/// 1*( unreserved / sub-delims / ":" )`.
fn is_ip_literal(v: &[u8]) -> bool {
    if let Some(rest) = v.strip_prefix(b"v").or_else(|| v.strip_prefix(b"V")) {
        let digits = rest.iter().take_while(|&&b| is_hex(b)).count();
        return match rest[digits..].split_first() {
            Some((b'.', tail)) if digits > 0 && !tail.is_empty() => tail
                .iter()
                .all(|&b| b == b':' || CLASS[usize::from(b)] & REG_NAME != 0),
            _ => false,
        };
    }
    std::str::from_utf8(v).is_ok_and(|s| s.parse::<std::net::Ipv6Addr>().is_ok())
}
