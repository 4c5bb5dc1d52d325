//! What a reactor notes about each request for the access log ([`access_log`])
//! and the metrics ([`metrics`]): one [`Tap`] per reactor thread, handed to the
//! connection code ([`crate::conn`]), which calls [`Tap::begin`] when a request
//! is framed and [`Tap::end`] when its response enters the output, in request
//! order. What `begin` needs to keep past the read buffer's reuse (the request's
//! part of the log line, its start time) waits in the connection's [`Pending`],
//! whose buffers are reused: no allocation per request once a connection has
//! served its first one. A disabled tap costs one branch per request.
//!
//! [`access_log`]: crate::access_log
//! [`metrics`]: crate::metrics

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use bytes::BytesMut;
use pyrs_parser::{Field, Head};

use crate::access_log::Sink;
use crate::metrics::Counters;

/// A response as the access log and the metrics see it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Sent {
    pub status: u16,
    /// Bytes after the head (what `$body_bytes_sent` reports).
    pub body: u64,
}

impl Sent {
    /// Reads status and body size from an encoded response (`HTTP/1.1 200 ...`,
    /// head, body), plus `file` bytes that follow it from a file.
    pub fn of_encoded(bytes: &[u8], file: u64) -> Sent {
        let status = bytes
            .get(9..12)
            .and_then(|d| std::str::from_utf8(d).ok())
            .and_then(|d| d.parse().ok())
            .unwrap_or(0);
        // memchr's SIMD search: a byte-by-byte scan of the head cost more than
        // the rest of what the metrics note per request.
        let head = memchr::memmem::find(bytes, b"\r\n\r\n").map_or(bytes.len(), |i| i + 4);
        Sent {
            status,
            body: (bytes.len() - head) as u64 + file,
        }
    }
}

/// The parts of a framed request the log may name; spans into `buf`.
#[derive(Clone, Copy)]
pub struct RequestView<'a> {
    pub head: &'a Head,
    pub fields: &'a [Field],
    pub buf: &'a [u8],
    /// Body bytes (decoded, for chunked).
    pub body_len: u64,
}

/// One connection's requests between [`Tap::begin`] and [`Tap::end`], in order.
#[derive(Debug, Default)]
pub struct Pending {
    starts: VecDeque<Instant>,
    /// The request side of each pending log line, in pieces (see
    /// [`crate::access_log::Format`]); `lens` has `Format::gaps() + 1` lengths
    /// per request.
    text: BytesMut,
    lens: VecDeque<u32>,
    /// Each pending request's body bytes so far (a streamed body grows
    /// after its request began: [`Tap::add_body`]).
    bodies: VecDeque<u64>,
}

impl Pending {
    /// No request is pending.
    pub fn is_empty(&self) -> bool {
        self.starts.is_empty()
    }

    /// It holds buffers from earlier requests (worth pooling).
    pub fn has_memory(&self) -> bool {
        self.starts.capacity() > 0
    }

    /// Bytes its log text buffer holds.
    pub fn text_capacity(&self) -> usize {
        self.text.capacity()
    }
}

/// A reactor's view of its requests: the loop clock, its access log buffer and
/// its metrics counters (each optional).
pub struct Tap {
    now: Instant,
    log: Option<Sink>,
    counters: Option<Counters>,
}

impl Tap {
    pub fn new(log: Option<Sink>, counters: Option<Counters>) -> Tap {
        Tap {
            now: Instant::now(),
            log,
            counters,
        }
    }

    /// Notes nothing (tests, benchmarks, fuzzing).
    pub fn off() -> Tap {
        Tap::new(None, None)
    }

    pub fn is_on(&self) -> bool {
        self.log.is_some() || self.counters.is_some()
    }

    /// The loop's clock for this round (durations are measured with it).
    pub fn set_now(&mut self, now: Instant) {
        self.now = now;
    }

    /// A request was framed (`None`: bytes that could not be parsed, or a request
    /// that timed out before its head was complete).
    pub fn begin(
        &mut self,
        p: &mut Pending,
        req: Option<RequestView<'_>>,
        remote: Option<SocketAddr>,
    ) {
        if !self.is_on() {
            return;
        }
        p.starts.push_back(self.now);
        if let Some(log) = &mut self.log {
            p.bodies.push_back(req.map_or(0, |r| r.body_len));
            log.begin(&mut p.text, &mut p.lens, req, remote);
        }
    }

    /// The response to the oldest pending request entered the output.
    pub fn end(&mut self, p: &mut Pending, sent: Sent) {
        if !self.is_on() {
            return;
        }
        let Some(start) = p.starts.pop_front() else {
            return;
        };
        let took = self.now.saturating_duration_since(start);
        if let Some(log) = &mut self.log {
            let body = p.bodies.pop_front().unwrap_or(0);
            log.end(&mut p.text, &mut p.lens, sent, body, took, self.now);
        }
        if let Some(c) = &mut self.counters {
            c.record(sent.status, took);
        }
    }

    /// `n` more bytes of a streamed request body arrived. Nothing is parsed
    /// behind such a request until its body has ended, so it is the newest
    /// pending one, if its line is not complete yet.
    pub fn add_body(&mut self, p: &mut Pending, n: u64) {
        if let Some(body) = p.bodies.back_mut() {
            *body += n;
        }
    }

    /// Once per loop round: hands finished log lines on when it is time.
    pub fn round_end(&mut self, connections: usize) {
        if let Some(log) = &mut self.log {
            log.maybe_hand_off(self.now);
        }
        if let Some(c) = &mut self.counters {
            c.set_connections(connections);
        }
    }

    /// How long the loop may sleep before log lines must be handed on.
    pub fn wake_in(&self) -> Option<Duration> {
        self.log.as_ref().and_then(|l| l.due_in(self.now))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_status_and_body_size_of_an_encoded_response() {
        let r = b"HTTP/1.1 404 Not Found\r\nContent-Length: 9\r\n\r\nNot Found";
        assert_eq!(
            Sent::of_encoded(r, 0),
            Sent {
                status: 404,
                body: 9
            }
        );
        let head_only = b"HTTP/1.1 200 OK\r\nContent-Length: 5000\r\n\r\n";
        assert_eq!(Sent::of_encoded(head_only, 5000).body, 5000);
    }
}
