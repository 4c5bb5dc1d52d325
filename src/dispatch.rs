//! The messages between reactor threads and the Python worker thread. A reactor
//! sends one [`Batch`] per loop round holding every request that needs Python; the
//! worker answers with one [`Reply`] per reactor per round holding every encoded
//! response in one buffer, through that reactor's [`Handle`]. WebSocket traffic
//! rides the same messages: whole messages and closes from clients as
//! [`WsEvent`]s in a batch, messages to send as reply items of their own
//! [`ItemKind`]. A request body too large to wait for comes after its job,
//! through the job's [`Upload`]. Only plain bytes and offsets cross threads: no Python object
//! ever reaches a reactor.

use std::io;
use std::net::SocketAddr;
use std::ops::Range;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::sync::atomic::{fence, AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex, OnceLock};
use std::thread::Thread;
use std::time::{Duration, Instant};

use bytes::Bytes;
use crossbeam_channel::Sender;
use pyrs_parser::{Field, Head};

use crate::handoff::Bell;
use crate::tls::TlsInfo;
use crate::upload::Upload;

/// What the worker (and the signal thread) hold of one reactor: where its replies
/// go, and the bell that makes it look.
#[derive(Clone)]
pub struct Handle {
    pub bell: Arc<Bell>,
    pub replies: Sender<Reply>,
}

impl Handle {
    /// Sends `reply` and wakes the reactor if it sleeps; `Err` once the
    /// reactor is gone.
    pub fn send(&self, reply: Reply) -> Result<(), Gone> {
        self.replies.send(reply).map_err(|_| Gone)?;
        self.bell.ring();
        Ok(())
    }
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
    /// A WebSocket upgrade request (`GET` with `Upgrade: websocket`): the
    /// connection waits for the app to accept or refuse it.
    pub websocket: bool,
    /// Over HTTPS, the connection's TLS facts (scheme `https`, client
    /// certificate); `None` over plain HTTP.
    pub tls: Option<Arc<TlsInfo>>,
    /// A body too large to wait for, arriving as the app reads it (`body` is
    /// then empty); `None` when the body is in `body`.
    pub upload: Option<Arc<Upload>>,
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
    /// What WebSocket clients did this round.
    pub ws: Vec<WsEvent>,
}

/// Something a WebSocket client did (or that happened to its connection).
#[derive(Debug, Clone)]
pub struct WsEvent {
    pub conn: ConnRef,
    pub kind: WsKind,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WsKind {
    /// A whole text message (valid UTF-8).
    Text(Bytes),
    /// A whole binary message.
    Binary(Bytes),
    /// The connection is over: the client's close code (1005 without one,
    /// 1006 when it vanished without a close).
    Closed { code: u16, reason: String },
    /// This many bytes of the messages the app sent have left for the client
    /// (it may send that much more: the app's sends wait past a budget).
    Written(usize),
}

impl Batch {
    /// Appends `fields` for a job about to be pushed; returns the job's range.
    pub fn add_fields(&mut self, fields: &[Field]) -> Range<u32> {
        let start = self.fields.len() as u32;
        self.fields.extend_from_slice(fields);
        start..self.fields.len() as u32
    }

    pub fn is_empty(&self) -> bool {
        self.jobs.is_empty() && self.ws.is_empty()
    }
}

/// Responses for one reactor: item `i` is `out[items[i-1].end..items[i].end]`.
#[derive(Debug)]
pub struct Reply {
    pub out: Bytes,
    pub items: Vec<ReplyItem>,
    /// The flow control of the streamed response these items belong to (a
    /// streaming producer sends one reply per part); `None` for whole responses.
    pub flow: Option<Arc<Flow>>,
}

#[derive(Debug, Clone, Copy)]
pub struct ReplyItem {
    pub conn: ConnRef,
    pub seq: u64,
    pub end: usize,
    pub kind: ItemKind,
    /// For a response: which piece of it this is.
    pub part: Part,
}

/// What a reply item's bytes are.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ItemKind {
    /// The response to request `seq`.
    Response,
    /// The `101 Switching Protocols` response to WebSocket upgrade `seq`: once
    /// written, the connection speaks WebSocket.
    Upgrade,
    /// A text message to send on the WebSocket (the bytes are UTF-8).
    WsText,
    /// A binary message to send on the WebSocket.
    WsBinary,
    /// Close the WebSocket with this code (the bytes are the reason).
    WsClose(u16),
    /// The app took this many of the client's messages (the payload is empty):
    /// the reactor may read that much more from the client.
    WsConsumed(u32),
    /// The app took enough of request `seq`'s streamed body (the payload is
    /// empty): the reactor may read more of it from the client.
    BodyConsumed,
}

/// Which piece of its request's response an item is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Part {
    /// The whole response (the common case).
    Whole,
    /// The start or the middle of a streamed response: more follows.
    More,
    /// The end of a streamed response.
    Last,
    /// The end of a streamed response after which the connection closes: a
    /// close-delimited body (HTTP/1.0), or a stream that failed half-way.
    Close,
}

/// Flow control of one streamed response, shared by its producer (a Python
/// thread, or a task on the event loop) and the reactor writing it. The producer
/// counts the bytes it sent, the reactor the bytes the socket took; the producer
/// pauses while more than `limit` are between the two, and stops when the
/// reactor hangs up (the client left, or the connection was closed).
#[derive(Debug)]
pub struct Flow {
    sent: AtomicUsize,
    written: AtomicUsize,
    gone: AtomicBool,
    /// The producer waits for `written` to move (or for `gone`).
    waiting: AtomicBool,
    limit: usize,
    lock: Mutex<()>,
    moved: Condvar,
    /// Wakes the worker's event loop, for a producer that is a task on it.
    wakeup: Option<Arc<WorkerWakeup>>,
}

/// The client of a streamed response is gone: the producer should stop.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("the client disconnected")]
pub struct Gone;

/// How long a blocked producer sleeps before it looks again by itself (a wake
/// is never lost; this only bounds the cost of a bug).
const FLOW_RECHECK: Duration = Duration::from_millis(200);

impl Flow {
    /// Flow control pausing the producer past `limit` unwritten bytes; `wakeup`
    /// when the producer is a task on the worker's event loop.
    pub fn new(limit: usize, wakeup: Option<Arc<WorkerWakeup>>) -> Flow {
        Flow {
            sent: AtomicUsize::new(0),
            written: AtomicUsize::new(0),
            gone: AtomicBool::new(false),
            waiting: AtomicBool::new(false),
            limit: limit.max(1),
            lock: Mutex::new(()),
            moved: Condvar::new(),
            wakeup,
        }
    }

    /// Producer: `n` more bytes were sent.
    pub fn sent(&self, n: usize) {
        self.sent.fetch_add(n, Ordering::SeqCst);
    }

    /// Whether the reactor has hung up.
    pub fn is_gone(&self) -> bool {
        self.gone.load(Ordering::SeqCst)
    }

    /// Producer: whether it may send more now (the bytes not yet written are
    /// within the limit).
    pub fn has_room(&self) -> bool {
        let sent = self.sent.load(Ordering::SeqCst);
        let written = self.written.load(Ordering::SeqCst);
        sent.saturating_sub(written) <= self.limit
    }

    /// Producer on the event loop: asks to be woken (through the worker's
    /// wakeup) when there is room or the client is gone; `false` when there is
    /// room already.
    pub fn want_room(&self) -> bool {
        self.waiting.store(true, Ordering::SeqCst);
        if self.has_room() || self.is_gone() {
            self.waiting.store(false, Ordering::SeqCst);
            return false;
        }
        true
    }

    /// Worker: whether a producer that asked with [`Flow::want_room`] may go on
    /// (room, or gone); clears the request when so.
    pub fn take_wake(&self) -> bool {
        if self.waiting.load(Ordering::SeqCst) && (self.has_room() || self.is_gone()) {
            self.waiting.store(false, Ordering::SeqCst);
            return true;
        }
        false
    }

    /// Producer on a thread: blocks until there is room or the client is gone.
    pub fn wait_for_room(&self) -> Result<(), Gone> {
        let mut guard = self.lock.lock().unwrap_or_else(|e| e.into_inner());
        loop {
            self.waiting.store(true, Ordering::SeqCst);
            if self.is_gone() {
                self.waiting.store(false, Ordering::SeqCst);
                return Err(Gone);
            }
            if self.has_room() {
                self.waiting.store(false, Ordering::SeqCst);
                return Ok(());
            }
            guard = match self.moved.wait_timeout(guard, FLOW_RECHECK) {
                Ok((g, _)) => g,
                Err(e) => e.into_inner().0,
            };
        }
    }

    /// Reactor: the socket has taken `written` bytes of this response so far.
    pub fn written(&self, written: usize) {
        if self.written.fetch_max(written, Ordering::SeqCst) < written
            && self.waiting.load(Ordering::SeqCst)
        {
            self.wake();
        }
    }

    /// Reactor: the response will not be written (the client left, the
    /// connection closed, or the response ended).
    pub fn hang_up(&self) {
        if !self.gone.swap(true, Ordering::SeqCst) {
            self.wake();
        }
    }

    fn wake(&self) {
        {
            let _guard = self.lock.lock().unwrap_or_else(|e| e.into_inner());
            self.moved.notify_all();
        }
        if let Some(w) = &self.wakeup {
            w.notify();
        }
    }
}

/// Wakes the Python worker. While it runs its asyncio event loop: an eventfd
/// the loop watches, which reactors write after sending a batch (a syscall
/// only while coroutines are pending). While it waits for a batch: it parks
/// its thread, and whoever hands it something (a reactor's batch, another
/// thread's call into the loop, the stop) unparks it. Waiting this way takes no
/// lock: a blocking `recv` on the channel registers the worker under the
/// channel's mutex, which a reactor sending on the same core held when the
/// worker woke (measured: a tenth of the worker's time under keep-alive ASGI,
/// in spinning and futex waits on that mutex).
#[derive(Debug)]
pub struct WorkerWakeup {
    fd: OwnedFd,
    waiting: AtomicBool,
    /// The worker is parked, or about to park (see [`WorkerWakeup::park`]).
    parked: AtomicBool,
    /// The worker's thread, known from its first wait.
    worker: OnceLock<Thread>,
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
            parked: AtomicBool::new(false),
            worker: OnceLock::new(),
        })
    }

    /// Called by the worker when it has found nothing to do: parks it until
    /// something is handed over or `deadline` passes, unless `ready` (asked
    /// after announcing the park, so that nothing handed over in between is
    /// missed) says there is something already. May return early: the caller
    /// looks again.
    pub fn park(&self, deadline: Option<Instant>, ready: impl Fn() -> bool) {
        self.register_worker();
        self.parked.store(true, Ordering::SeqCst);
        // Pairs with the fence in `unpark`: either the worker sees what was
        // sent, or the sender sees the flag and unparks it.
        fence(Ordering::SeqCst);
        if !ready() {
            match deadline {
                None => std::thread::park(),
                Some(d) => {
                    let now = Instant::now();
                    if d > now {
                        std::thread::park_timeout(d - now);
                    }
                }
            }
        }
        self.parked.store(false, Ordering::Relaxed);
    }

    /// Unparks the worker if it waits for a batch (an unpark that comes as
    /// it wakes is kept by the thread: its next park returns at once).
    pub fn unpark(&self) {
        fence(Ordering::SeqCst);
        if self.parked.load(Ordering::SeqCst) {
            if let Some(worker) = self.worker.get() {
                worker.unpark();
            }
        }
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
        self.unpark();
        if self.waiting.load(Ordering::SeqCst) {
            self.write_fd();
        }
    }

    /// Makes the event loop return, and a wait for a batch.
    pub fn notify(&self) {
        self.unpark();
        self.write_fd();
    }

    /// At stop, once every reactor has dropped its job sender: wakes the
    /// worker wherever it waits, to see the channel closed.
    pub fn hang_up(&self) {
        if let Some(worker) = self.worker.get() {
            // Kept as a token if it is not parked yet: its park returns.
            worker.unpark();
        }
        self.write_fd();
    }

    /// Called by the worker's thread before it first waits, so that
    /// [`WorkerWakeup::hang_up`] can always reach it.
    pub fn register_worker(&self) {
        self.worker.get_or_init(std::thread::current);
    }

    fn write_fd(&self) {
        let one: u64 = 1;
        // SAFETY: writes 8 bytes from a valid u64 to our eventfd; a full counter
        // (EAGAIN) already means "wake up".
        unsafe {
            libc::write(self.fd.as_raw_fd(), (&one as *const u64).cast(), 8);
        }
    }
}
