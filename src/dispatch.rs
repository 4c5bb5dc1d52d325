//! The messages between reactor threads and the Python worker thread. A reactor
//! sends one [`Batch`] per loop round holding every request that needs Python; the
//! worker answers with one [`Reply`] per reactor per round holding every encoded
//! response in one buffer. Only plain bytes and offsets cross threads: no Python
//! object ever reaches a reactor.

use std::net::SocketAddr;

use bytes::Bytes;
use pyrs_parser::Head;

/// Identifies a connection on its reactor: the slab key plus a generation that
/// changes whenever the key is reused, so a late reply for a closed connection is
/// dropped instead of reaching a new one.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ConnRef {
    pub key: u32,
    pub generation: u32,
}

/// One request for a Python handler.
#[derive(Debug, Clone)]
pub struct Job {
    pub conn: ConnRef,
    /// The request's position on its connection, echoed in the reply so responses
    /// finishing out of order still leave in request order.
    pub seq: u64,
    /// Index of the route (and handler) in the project's `modules`.
    pub route: u32,
    /// Offsets into `data`.
    pub head: Head,
    /// The request as received (head and raw body).
    pub data: Bytes,
    /// The body as the handler sees it: a slice of `data`, or the decoded chunked
    /// body.
    pub body: Bytes,
    pub remote: SocketAddr,
}

/// Every job a reactor collected in one round.
#[derive(Debug)]
pub struct Batch {
    pub reactor: usize,
    pub jobs: Vec<Job>,
}

/// Responses for one reactor: item `i` is `out[items[i-1].end..items[i].end]`.
#[derive(Debug)]
pub struct Reply {
    pub out: Bytes,
    pub items: Vec<ReplyItem>,
}

#[derive(Debug, Clone, Copy)]
pub struct ReplyItem {
    pub conn: ConnRef,
    pub seq: u64,
    pub end: usize,
}
