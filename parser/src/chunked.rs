//! The chunked transfer coding (RFC 9112 §7.1): a resumable scanner that finds where
//! a chunked body ends without copying it, and a decoder that copies the chunk data
//! of a complete body into one contiguous buffer. Both are strict: every line ends
//! in CRLF, sizes are hex without sign or whitespace, and a size that overflows 64
//! bits is an error rather than a wrap.

use std::ops::Range;

use crate::syntax::is_tchar;
use crate::ParseError;

/// Longest chunk-size line we accept, extensions included. Extensions carry nothing
/// pyrs uses; the bound keeps a client from making us buffer them without limit.
pub const MAX_CHUNK_LINE: usize = 4096;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ChunkStage {
    /// At the start of a chunk-size line.
    Size,
    /// Inside the data of a chunk, this many bytes left.
    Data(u64),
    /// After chunk data, expecting CRLF.
    DataEnd,
    /// In the trailer section, at the start of a line.
    Trailer,
    Done,
}

/// Incremental state for one chunked body. Feed it the body bytes seen so far (always
/// from the body's first byte; it remembers how far it got) until it reports the end.
#[derive(Debug, Clone)]
pub struct ChunkedScanner {
    state: ChunkStage,
    /// Offset into the body bytes of the first unscanned byte.
    pos: usize,
    /// Sum of chunk sizes so far.
    decoded: u64,
    /// Bytes of trailer section seen, bounded like a head.
    trailer_bytes: usize,
}

impl Default for ChunkedScanner {
    fn default() -> Self {
        Self::new()
    }
}

impl ChunkedScanner {
    pub fn new() -> Self {
        ChunkedScanner {
            state: ChunkStage::Size,
            pos: 0,
            decoded: 0,
            trailer_bytes: 0,
        }
    }

    /// Decoded length so far (the final body length once [`Self::scan`] returns `Some`).
    pub fn decoded_len(&self) -> u64 {
        self.decoded
    }

    /// Advances over `body` (all body bytes received so far). Returns `Some(n)` when
    /// the chunked body, trailers included, ends after `n` bytes; `None` when more
    /// input is needed. `max_body` bounds the decoded size and `max_trailer` the
    /// trailer section.
    pub fn scan(
        &mut self,
        body: &[u8],
        max_body: u64,
        max_trailer: usize,
    ) -> Result<Option<usize>, ParseError> {
        self.walk(body, max_body, max_trailer, &mut |_| {})
    }

    /// Decodes what `buf` holds of the body, from where the last call stopped
    /// (`buf` starts at the first byte not yet consumed, unlike [`Self::scan`]):
    /// `data` gets each range of `buf` that is chunk data, in order. Returns how
    /// many bytes of `buf` are consumed (the caller drops them) and whether the
    /// body, trailers included, has ended. Bytes of a line that has not fully
    /// arrived are left unconsumed.
    pub fn decode_part<F: FnMut(Range<usize>)>(
        &mut self,
        buf: &[u8],
        max_body: u64,
        max_trailer: usize,
        data: &mut F,
    ) -> Result<(usize, bool), ParseError> {
        let end = self.walk(buf, max_body, max_trailer, data)?;
        let consumed = self.pos;
        self.pos = 0;
        Ok((consumed, end.is_some()))
    }

    /// Generic over `sink` (given each range of `body` that is chunk data) so
    /// that scanning, whose sink does nothing, compiles to a loop without a call
    /// per chunk.
    fn walk<F: FnMut(Range<usize>)>(
        &mut self,
        body: &[u8],
        max_body: u64,
        max_trailer: usize,
        sink: &mut F,
    ) -> Result<Option<usize>, ParseError> {
        loop {
            let rest = &body[self.pos..];
            match self.state {
                ChunkStage::Done => return Ok(Some(self.pos)),
                ChunkStage::Size => {
                    let (size, line_len) = match plain_size_line(rest) {
                        Some(parsed) => parsed?,
                        None => {
                            let Some(line_len) = find_line(
                                rest,
                                MAX_CHUNK_LINE,
                                ParseError::InvalidChunkSize,
                                ParseError::InvalidChunkSize,
                            )?
                            else {
                                return Ok(None);
                            };
                            (parse_size_line(&rest[..line_len])?, line_len)
                        }
                    };
                    self.pos += line_len + 2;
                    if size == 0 {
                        self.state = ChunkStage::Trailer;
                    } else {
                        self.decoded = self
                            .decoded
                            .checked_add(size)
                            .ok_or(ParseError::BodyTooLarge)?;
                        if self.decoded > max_body {
                            return Err(ParseError::BodyTooLarge);
                        }
                        self.state = ChunkStage::Data(size);
                    }
                }
                ChunkStage::Data(left) => {
                    if rest.is_empty() {
                        return Ok(None);
                    }
                    let take = rest.len().min(usize::try_from(left).unwrap_or(usize::MAX));
                    sink(self.pos..self.pos + take);
                    self.pos += take;
                    let left = left - take as u64;
                    self.state = if left == 0 {
                        ChunkStage::DataEnd
                    } else {
                        ChunkStage::Data(left)
                    };
                }
                ChunkStage::DataEnd => {
                    if rest.len() < 2 {
                        if rest.first().is_some_and(|&b| b != b'\r') {
                            return Err(ParseError::InvalidChunk);
                        }
                        return Ok(None);
                    }
                    if &rest[..2] != b"\r\n" {
                        return Err(ParseError::InvalidChunk);
                    }
                    self.pos += 2;
                    self.state = ChunkStage::Size;
                }
                ChunkStage::Trailer => {
                    let budget = max_trailer.saturating_sub(self.trailer_bytes);
                    let Some(line_len) = find_line(
                        rest,
                        budget,
                        ParseError::InvalidChunk,
                        ParseError::HeadTooLarge,
                    )?
                    else {
                        return Ok(None);
                    };
                    let line = &rest[..line_len];
                    self.pos += line_len + 2;
                    self.trailer_bytes += line_len + 2;
                    if line.is_empty() {
                        self.state = ChunkStage::Done;
                    } else if !valid_trailer_line(line) {
                        return Err(ParseError::InvalidChunk);
                    }
                }
            }
        }
    }
}

/// Copies the data of a complete chunked body (as validated by [`ChunkedScanner`])
/// into `out`, which is cleared first.
pub fn decode(
    body: &[u8],
    max_body: u64,
    max_trailer: usize,
    out: &mut Vec<u8>,
) -> Result<usize, ParseError> {
    out.clear();
    let mut scanner = ChunkedScanner::new();
    match scanner.walk(body, max_body, max_trailer, &mut |data| {
        out.extend_from_slice(&body[data])
    })? {
        Some(n) => Ok(n),
        None => Err(ParseError::InvalidChunk),
    }
}

/// Length of the line at the start of `buf` (without its CRLF), `None` when no CRLF
/// has arrived yet. A bare LF is `bad`; a line longer than `max` is `too_long`.
fn find_line(
    buf: &[u8],
    max: usize,
    bad: ParseError,
    too_long: ParseError,
) -> Result<Option<usize>, ParseError> {
    let window = &buf[..buf.len().min(max.saturating_add(2))];
    match window.iter().position(|&b| b == b'\n') {
        Some(nl) if nl > 0 && window[nl - 1] == b'\r' => Ok(Some(nl - 1)),
        Some(_) => Err(bad),
        None if buf.len() >= max.saturating_add(2) => Err(too_long),
        None => Ok(None),
    }
}

/// The common size line, hex digits and CRLF with no extension, read in one pass:
/// `Some((size, line length))` (or the overflow error) exactly where
/// [`find_line`] and [`parse_size_line`] would give the same; `None` for anything
/// else (extensions, an incomplete line, a bad byte), which they then decide.
fn plain_size_line(buf: &[u8]) -> Option<Result<(u64, usize), ParseError>> {
    let mut size: u64 = 0;
    let mut overflow = false;
    let mut digits = 0;
    while let Some(d) = buf.get(digits).and_then(|&b| hex_value(b)) {
        if digits == MAX_CHUNK_LINE {
            return None;
        }
        overflow |= size >> 60 != 0;
        size = size << 4 | u64::from(d);
        digits += 1;
    }
    if digits == 0 || buf.get(digits..digits + 2) != Some(b"\r\n") {
        return None;
    }
    Some(if overflow {
        Err(ParseError::ChunkSizeOverflow)
    } else {
        Ok((size, digits))
    })
}

fn hex_value(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    }
}

/// `chunk-size [ chunk-ext ]`: hex digits, then optionally `;name[=value]` pairs
/// with optional whitespace (BWS) around the separators; nothing else.
fn parse_size_line(line: &[u8]) -> Result<u64, ParseError> {
    // One pass over the digits: this runs once per chunk.
    let mut size: u64 = 0;
    let mut digits = 0;
    for &b in line {
        let Some(d) = hex_value(b) else { break };
        // Another digit would shift out a set bit: more than 64 bits.
        if size >> 60 != 0 {
            return Err(ParseError::ChunkSizeOverflow);
        }
        size = size << 4 | u64::from(d);
        digits += 1;
    }
    if digits == 0 {
        return Err(ParseError::InvalidChunkSize);
    }
    let ext = &line[digits..];
    if !ext.is_empty() && !valid_extensions(ext) {
        return Err(ParseError::InvalidChunkSize);
    }
    Ok(size)
}

/// `*( BWS ";" BWS ext-name [ BWS "=" BWS ext-val ] )`, ext-val a token or a
/// quoted-string. Bytes are checked, never interpreted. Whitespace is allowed
/// only where the grammar has BWS: before `;` and around `=`, so not between the
/// last extension and the CRLF.
fn valid_extensions(mut s: &[u8]) -> bool {
    fn skip_ws(s: &[u8]) -> &[u8] {
        let n = s.iter().take_while(|&&b| b == b' ' || b == b'\t').count();
        &s[n..]
    }
    fn token(s: &[u8]) -> usize {
        s.iter().take_while(|&&b| is_tchar(b)).count()
    }
    while !s.is_empty() {
        s = skip_ws(s);
        let Some(rest) = s.strip_prefix(b";") else {
            return false;
        };
        s = skip_ws(rest);
        let n = token(s);
        if n == 0 {
            return false;
        }
        s = &s[n..];
        if let Some(rest) = skip_ws(s).strip_prefix(b"=") {
            s = skip_ws(rest);
            if let Some(rest) = s.strip_prefix(b"\"") {
                let mut i = 0;
                loop {
                    match rest.get(i) {
                        None => return false,
                        Some(b'"') => break,
                        Some(b'\\') => {
                            match rest.get(i + 1) {
                                Some(&c) if c == b'\t' || (c >= 0x20 && c != 0x7f) => {}
                                _ => return false,
                            }
                            i += 2;
                        }
                        Some(&c) if c == b'\t' || (c >= 0x20 && c != 0x7f) => i += 1,
                        Some(_) => return false,
                    }
                }
                s = &rest[i + 1..];
            } else {
                let n = token(s);
                if n == 0 {
                    return false;
                }
                s = &s[n..];
            }
        }
    }
    true
}

fn valid_trailer_line(line: &[u8]) -> bool {
    let Some(colon) = line.iter().position(|&b| b == b':') else {
        return false;
    };
    colon > 0
        && line[..colon].iter().all(|&b| is_tchar(b))
        && line[colon + 1..]
            .iter()
            .all(|&b| b == b'\t' || (b >= 0x20 && b != 0x7f))
}
