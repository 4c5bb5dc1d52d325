//! Parse errors: one small `Copy` enum for everything a client can get wrong in the
//! framing of a request. Each maps to the HTTP status the server answers with; every
//! error response also closes the connection, because after a framing error the
//! position of the next request in the byte stream is unknown (RFC 9112 §6.3).

use std::fmt;

/// Why a request could not be framed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ParseError {
    /// The request line is not `method SP request-target SP HTTP-version`.
    InvalidRequestLine,
    /// The method is not a token.
    InvalidMethod,
    /// The request-target has bytes a target may not have, or a form the method may
    /// not use (`*` other than with OPTIONS, authority-form at all).
    InvalidTarget,
    /// A header line is malformed: no colon, whitespace before the colon, obs-fold,
    /// or a NUL/CTL byte in a name or value.
    InvalidHeader,
    /// `HTTP/x.y` other than 1.0 and 1.1 (including HTTP/0.9's missing version).
    UnsupportedVersion,
    /// The request line alone is longer than the configured limit.
    RequestLineTooLong,
    /// The head (request line + headers) is longer than the configured limit.
    HeadTooLarge,
    /// More header fields than [`crate::MAX_HEADERS`].
    TooManyHeaders,
    /// HTTP/1.1 without exactly one `Host` header, or with more than one.
    InvalidHost,
    /// A `Host` value that is not `uri-host [ ":" port ]` (RFC 9112 §3.2).
    InvalidHostValue,
    /// `Content-Length` is not a decimal number.
    InvalidContentLength,
    /// Several `Content-Length` values that disagree.
    DifferingContentLengths,
    /// Both `Content-Length` and `Transfer-Encoding`.
    LengthAndTransferEncoding,
    /// `Transfer-Encoding` whose final coding is not `chunked`, or an HTTP/1.0
    /// request that carries one.
    InvalidTransferEncoding,
    /// A transfer coding other than `chunked` before a final `chunked`
    /// (`gzip, chunked`): valid HTTP, but not supported.
    UnsupportedTransferCoding,
    /// A chunk-size line that is not hex digits (plus extensions) ended by CRLF.
    InvalidChunkSize,
    /// A chunk size that does not fit in 64 bits.
    ChunkSizeOverflow,
    /// Chunk data not followed by CRLF, or a malformed trailer section.
    InvalidChunk,
    /// The body (decoded, for chunked) is larger than the configured limit.
    BodyTooLarge,
    /// `CONNECT`: pyrs is not a proxy.
    MethodNotImplemented,
    /// A method longer than [`crate::MAX_METHOD_LEN`]: no handler can serve it.
    MethodTooLong,
}

impl ParseError {
    /// The HTTP status code the server answers this error with.
    pub fn status(self) -> u16 {
        use ParseError::*;
        match self {
            RequestLineTooLong => 414,
            HeadTooLarge | TooManyHeaders => 431,
            BodyTooLarge => 413,
            UnsupportedVersion => 505,
            UnsupportedTransferCoding | MethodNotImplemented | MethodTooLong => 501,
            _ => 400,
        }
    }

    /// A short, human-readable reason, sent as the body of the error response.
    pub fn message(self) -> &'static str {
        use ParseError::*;
        match self {
            InvalidRequestLine => "malformed request line",
            InvalidMethod => "invalid method",
            InvalidTarget => "invalid request target",
            InvalidHeader => "malformed header field",
            UnsupportedVersion => "HTTP version not supported",
            RequestLineTooLong => "request line too long",
            HeadTooLarge => "request header section too large",
            TooManyHeaders => "too many header fields",
            InvalidHost => "missing or duplicate Host header",
            InvalidHostValue => "invalid Host header",
            InvalidContentLength => "invalid Content-Length",
            DifferingContentLengths => "conflicting Content-Length values",
            LengthAndTransferEncoding => "both Content-Length and Transfer-Encoding",
            InvalidTransferEncoding => "invalid Transfer-Encoding",
            UnsupportedTransferCoding => "transfer coding not implemented",
            InvalidChunkSize => "invalid chunk size",
            ChunkSizeOverflow => "chunk size too large",
            InvalidChunk => "malformed chunked body",
            BodyTooLarge => "request body too large",
            MethodNotImplemented => "method not implemented",
            MethodTooLong => "method not implemented (too long)",
        }
    }
}

impl fmt::Display for ParseError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} ({})", self.message(), self.status())
    }
}

impl std::error::Error for ParseError {}
