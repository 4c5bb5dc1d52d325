//! The messages between reactor threads and the Python worker thread. A reactor
//! sends one [`Batch`] per loop round holding every request that needs Python; the
//! worker answers with one [`Reply`] per reactor per round holding every encoded
//! response in one buffer, through that reactor's [`Handle`]. Only plain bytes and
//! offsets cross threads: no Python object ever reaches a reactor.

use std::io;
use std::net::SocketAddr;
use std::ops::Range;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use bytes::Bytes;
use crossbeam_channel::Sender;
use mio::Waker;
use pyrs_parser::{Field, Head};

use crate::tls::TlsInfo;

/// What the worker (and the signal thread) hold of one reactor: where its replies
/// go, and the waker that makes it look.
#[derive(Clone)]
pub struct Handle {
    pub waker: Arc<Waker>,
    pub replies: Sender<Reply>,
}

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
    /// This request's header fields: `fields[range]` of its [`Batch`], spans into
    /// `data` found by the parser (so the worker never parses the head again).
    pub fields: Range<u32>,
    /// The request as received (head and raw body).
    pub data: Bytes,
    /// The body as the handler sees it: a slice of `data`, or the decoded chunked
    /// body.
    pub body: Bytes,
    /// The client's address; none over a Unix socket.
    pub remote: Option<SocketAddr>,
    /// Over HTTPS, the connection's TLS facts (scheme `https`, client
    /// certificate); `None` over plain HTTP.
    pub tls: Option<Arc<TlsInfo>>,
}

impl Job {
    /// This job's header fields among its batch's `fields`.
    pub fn fields_in<'a>(&self, fields: &'a [Field]) -> &'a [Field] {
        fields
            .get(self.fields.start as usize..self.fields.end as usize)
            .unwrap_or(&[])
    }

    /// `METHOD target`, for log lines.
    pub fn describe(&self) -> String {
        format!(
            "{} {}",
            String::from_utf8_lossy(self.head.method.get(&self.data)),
            String::from_utf8_lossy(self.head.target.get(&self.data))
        )
    }
}

/// Every job a reactor collected in one round, with their header field spans in
/// one vector (one allocation per batch, not per request).
#[derive(Debug, Default)]
pub struct Batch {
    pub reactor: usize,
    pub jobs: Vec<Job>,
    pub fields: Vec<Field>,
}

impl Batch {
    /// Appends `fields` for a job about to be pushed; returns the job's range.
    pub fn add_fields(&mut self, fields: &[Field]) -> Range<u32> {
        let start = self.fields.len() as u32;
        self.fields.extend_from_slice(fields);
        start..self.fields.len() as u32
    }

    pub fn is_empty(&self) -> bool {
        self.jobs.is_empty()
    }
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

/// Wakes the Python worker while it runs its asyncio event loop (only then: with
/// no coroutine in flight the worker sleeps on the job channel instead). An eventfd
/// the loop watches; reactors write it after sending a batch, which costs a syscall
/// only while coroutines are pending.
#[derive(Debug)]
pub struct WorkerWakeup {
    fd: OwnedFd,
    waiting: AtomicBool,
}

impl WorkerWakeup {
    pub fn new() -> io::Result<WorkerWakeup> {
        // SAFETY: eventfd(2) takes no pointers; a non-negative result is a new fd
        // that we own from here on.
        let fd = unsafe { libc::eventfd(0, libc::EFD_NONBLOCK | libc::EFD_CLOEXEC) };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: `fd` is a fresh descriptor nobody else owns.
        let fd = unsafe { OwnedFd::from_raw_fd(fd) };
        Ok(WorkerWakeup {
            fd,
            waiting: AtomicBool::new(false),
        })
    }

    /// The descriptor the event loop watches.
    pub fn fd(&self) -> RawFd {
        self.fd.as_raw_fd()
    }

    /// Called by the worker around running its event loop.
    pub fn set_waiting(&self, waiting: bool) {
        // SeqCst pairs with `notify_if_waiting`: either the worker's next
        // `try_recv` sees the batch, or the reactor sees the flag and writes.
        self.waiting.store(waiting, Ordering::SeqCst);
    }

    /// Called by a reactor after it sent a batch.
    pub fn notify_if_waiting(&self) {
        if self.waiting.load(Ordering::SeqCst) {
            self.notify();
        }
    }

    /// Makes the event loop return (used at shutdown too).
    pub fn notify(&self) {
        let one: u64 = 1;
        // SAFETY: writes 8 bytes from a valid u64 to our eventfd; a full counter
        // (EAGAIN) already means "wake up".
        unsafe {
            libc::write(self.fd.as_raw_fd(), (&one as *const u64).cast(), 8);
        }
    }
}
