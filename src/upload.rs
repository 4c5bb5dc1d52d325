//! A request body handed to its app as it arrives: bodies past
//! [`STREAM_THRESHOLD`] for WSGI and ASGI apps, so that an upload of gigabytes
//! never sits in memory whole. One [`Upload`] per such request, shared by the
//! connection's reactor thread (which pushes each decoded piece as it is read,
//! zero-copy slices of its read buffer) and the Python thread serving the
//! request (which takes them: a WSGI app's `wsgi.input.read`, blocking without
//! the GIL, or an ASGI app's `receive()`, woken on the event loop).
//!
//! Flow control: the reactor stops reading the socket while more than
//! [`IN_FLIGHT`] bytes are pushed and not taken (TCP then pushes back on the
//! client), and the consumer tells it when it has taken enough, the way a
//! WebSocket app's consumption is reported: a [`ReplyItem`] of kind
//! [`ItemKind::BodyConsumed`] through the reactor's [`Handle`]. When the app
//! is done with the request (answered, or failed) without reading all of the
//! body, the upload is abandoned: the reactor reads and drops the rest, so
//! that the next request on the connection is found where it starts.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::Duration;

use bytes::Bytes;

use crate::dispatch::{ConnRef, Handle, ItemKind, Part, Reply, ReplyItem, WorkerWakeup};

/// A body larger than this (its `Content-Length`, or what a chunked body has
/// announced or sent so far) is handed to a WSGI or ASGI app as it arrives
/// instead of being buffered whole first. Smaller bodies keep the zero-copy
/// path: the whole request in one shared buffer.
pub const STREAM_THRESHOLD: u64 = 1024 * 1024;
/// Body bytes read and not yet taken by the app, past which the reactor stops
/// reading the client: what one upload can hold in memory (plus one read).
pub const IN_FLIGHT: usize = 2 * 1024 * 1024;
/// What one piece held for the app costs beyond its bytes (its `Bytes` and
/// its queue slot), counted in [`IN_FLIGHT`]: a client sending its body a
/// byte per segment fills the bound with 32 768 pieces, not 2 million.
const PIECE_COST: usize = 64;
/// The consumer reports what it took once no more than this is left (so one
/// report lets the reactor read a good part of [`IN_FLIGHT`] again).
const RESUME_AT: usize = IN_FLIGHT / 2;
/// How long a blocked reader sleeps before it looks again by itself (a wake is
/// never lost; this only bounds the cost of a bug).
const RECHECK: Duration = Duration::from_millis(200);

/// What the reactors give every upload: where its consumption reports go, and
/// which routes take their bodies as they arrive.
#[derive(Clone)]
pub struct Uploads {
    /// The reactor's own handle.
    pub handle: Handle,
    /// Wakes the worker's event loop (for ASGI apps waiting in `receive()`).
    pub wakeup: Arc<WorkerWakeup>,
    /// Per `modules` entry: whether it is a WSGI or ASGI app (pyrs handlers get
    /// their body whole, bounded by `max_body_size`).
    pub streamed: Arc<[bool]>,
}

impl Uploads {
    /// Whether route `index` takes large bodies as they arrive.
    pub fn streams(&self, index: u32) -> bool {
        self.streamed.get(index as usize).copied().unwrap_or(false)
    }
}

/// How an upload ended, as far as the reactor is concerned.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum End {
    /// The whole body arrived.
    Complete,
    /// It never will: the client left, timed out, or broke the framing.
    Gone,
}

/// What a consumer got from [`Upload::take`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Taken {
    /// The next bytes of the body.
    Data(Bytes),
    /// Nothing yet: more is coming.
    Empty,
    /// The body has ended; everything was taken.
    End,
    /// The body will not be complete: the client is gone.
    Gone,
}

/// The body of one request on its way from the reactor to the app.
pub struct Upload {
    state: Mutex<State>,
    /// A blocked reader waits for data or the end.
    arrived: Condvar,
    /// Bytes pushed and not taken.
    buffered: AtomicUsize,
    /// The reactor stopped reading for lack of room and waits for a report.
    paused: AtomicBool,
    /// The app is done with the request: what still comes is dropped.
    abandoned: AtomicBool,
    /// A consumer on the event loop asked to be woken ([`Upload::want_data`]).
    loop_waiting: AtomicBool,
    uploads: Uploads,
    conn: ConnRef,
    seq: u64,
}

#[derive(Default)]
struct State {
    chunks: VecDeque<Bytes>,
    end: Option<End>,
}

impl std::fmt::Debug for Upload {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Upload")
            .field("conn", &self.conn)
            .field("seq", &self.seq)
            .field("buffered", &self.buffered.load(Ordering::Relaxed))
            .finish_non_exhaustive()
    }
}

impl Upload {
    /// The upload of request `seq` on `conn`.
    pub fn new(uploads: &Uploads, conn: ConnRef, seq: u64) -> Upload {
        Upload {
            state: Mutex::new(State::default()),
            arrived: Condvar::new(),
            buffered: AtomicUsize::new(0),
            paused: AtomicBool::new(false),
            abandoned: AtomicBool::new(false),
            loop_waiting: AtomicBool::new(false),
            uploads: uploads.clone(),
            conn,
            seq,
        }
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    // The reactor's side.

    /// Reactor: the next piece of the body (dropped once abandoned).
    pub fn push(&self, data: Bytes) {
        if data.is_empty() || self.is_abandoned() {
            return;
        }
        let cost = data.len() + PIECE_COST;
        {
            let mut state = self.lock();
            state.chunks.push_back(data);
            self.buffered.fetch_add(cost, Ordering::SeqCst);
        }
        self.arrived.notify_all();
        self.wake_loop();
    }

    /// Reactor: the body is over (a second end is ignored).
    pub fn end(&self, end: End) {
        {
            let mut state = self.lock();
            if state.end.is_some() {
                return;
            }
            state.end = Some(end);
        }
        self.arrived.notify_all();
        self.wake_loop();
    }

    /// Whether more than [`IN_FLIGHT`] bytes wait for the app.
    pub fn is_full(&self) -> bool {
        !self.is_abandoned() && self.buffered.load(Ordering::SeqCst) >= IN_FLIGHT
    }

    /// Reactor: whether to stop reading now. When so, the consumer reports
    /// (with [`ItemKind::BodyConsumed`]) once it has taken enough.
    pub fn stop_reading(&self) -> bool {
        if !self.is_full() {
            return false;
        }
        self.paused.store(true, Ordering::SeqCst);
        // The consumer may have taken bytes between the check and the flag.
        if !self.is_full() {
            self.paused.store(false, Ordering::SeqCst);
            return false;
        }
        true
    }

    /// Whether the app is done with the request.
    pub fn is_abandoned(&self) -> bool {
        self.abandoned.load(Ordering::SeqCst)
    }

    // The consumer's side.

    /// Takes up to `max` bytes (0 is taken as 1), or up to and including the
    /// first `\n` when `line`, without waiting.
    pub fn take(&self, max: usize, line: bool) -> Taken {
        let max = max.max(1);
        let taken = {
            let mut state = self.lock();
            let Some(front) = state.chunks.front_mut() else {
                return match state.end {
                    None => Taken::Empty,
                    Some(End::Complete) => Taken::End,
                    Some(End::Gone) => Taken::Gone,
                };
            };
            let mut n = front.len().min(max);
            if line {
                if let Some(nl) = memchr::memchr(b'\n', &front[..n]) {
                    n = nl + 1;
                }
            }
            let (taken, cost) = if n == front.len() {
                let whole = state.chunks.pop_front().unwrap_or_default();
                let cost = whole.len() + PIECE_COST;
                (whole, cost)
            } else {
                let part = front.split_to(n);
                let cost = part.len();
                (part, cost)
            };
            self.buffered.fetch_sub(cost, Ordering::SeqCst);
            taken
        };
        self.report();
        Taken::Data(taken)
    }

    /// Consumer on a thread: blocks (call it without the GIL) until data or
    /// the end has arrived.
    pub fn wait(&self) {
        let mut state = self.lock();
        while state.chunks.is_empty() && state.end.is_none() {
            state = match self.arrived.wait_timeout(state, RECHECK) {
                Ok((s, _)) => s,
                Err(e) => e.into_inner().0,
            };
        }
    }

    /// Consumer on the event loop: asks to be woken (through the worker's
    /// wakeup) when data or the end arrives; `false` when there is some now.
    pub fn want_data(&self) -> bool {
        self.loop_waiting.store(true, Ordering::SeqCst);
        if self.has_news() {
            self.loop_waiting.store(false, Ordering::SeqCst);
            return false;
        }
        true
    }

    /// Worker: whether a consumer that asked with [`Upload::want_data`] may go
    /// on now; clears the request when so.
    pub fn take_wake(&self) -> bool {
        if self.loop_waiting.load(Ordering::SeqCst) && self.has_news() {
            self.loop_waiting.store(false, Ordering::SeqCst);
            return true;
        }
        false
    }

    /// The app is done with the request: the rest of the body is dropped (the
    /// reactor reads it, to find the next request).
    pub fn abandon(&self) {
        if self.abandoned.swap(true, Ordering::SeqCst) {
            return;
        }
        let dropped = std::mem::take(&mut self.lock().chunks);
        let cost: usize = dropped.iter().map(|c| c.len() + PIECE_COST).sum();
        self.buffered.fetch_sub(cost, Ordering::SeqCst);
        self.report();
    }

    fn has_news(&self) -> bool {
        let state = self.lock();
        !state.chunks.is_empty() || state.end.is_some()
    }

    fn wake_loop(&self) {
        if self.loop_waiting.load(Ordering::SeqCst) {
            self.uploads.wakeup.notify();
        }
    }

    /// Tells a paused reactor that it may read again.
    fn report(&self) {
        let room = self.is_abandoned() || self.buffered.load(Ordering::SeqCst) <= RESUME_AT;
        if room && self.paused.swap(false, Ordering::SeqCst) {
            let reply = Reply {
                out: Bytes::new(),
                items: vec![ReplyItem {
                    conn: self.conn,
                    seq: self.seq,
                    end: 0,
                    kind: ItemKind::BodyConsumed,
                    part: Part::Whole,
                }],
                flow: None,
            };
            // A reactor that is gone has no connection left to read.
            let _ = self.uploads.handle.send(reply);
        }
    }
}

/// The connection's hold on an upload: dropped before the body ended (the
/// client left, the connection closed), it tells the app.
#[derive(Debug)]
pub struct UploadLink(pub Arc<Upload>);

impl Drop for UploadLink {
    fn drop(&mut self) {
        self.0.end(End::Gone);
    }
}

/// Uploads for route 0, as a reactor polled by `poll` would give them, and the
/// channel its replies (consumption reports) arrive on.
#[cfg(test)]
pub(crate) fn test_uploads(poll: &mio::Poll) -> (Uploads, crossbeam_channel::Receiver<Reply>) {
    let waker = mio::Waker::new(poll.registry(), mio::Token(1)).expect("waker");
    let (tx, rx) = crossbeam_channel::unbounded();
    let uploads = Uploads {
        handle: Handle {
            bell: Arc::new(crate::handoff::Bell::new(waker)),
            replies: tx,
        },
        wakeup: Arc::new(WorkerWakeup::new().expect("eventfd")),
        streamed: Arc::from(vec![true]),
    };
    (uploads, rx)
}

#[cfg(test)]
mod tests {
    use super::test_uploads as uploads;
    use super::*;

    const ME: ConnRef = ConnRef {
        key: 1,
        generation: 1,
    };

    #[test]
    fn tiny_pieces_count_what_holding_them_costs() {
        let poll = mio::Poll::new().expect("poll");
        let (u, _rx) = uploads(&poll);
        let up = Upload::new(&u, ME, 0);
        let per_piece = 1 + PIECE_COST;
        for _ in 0..IN_FLIGHT / per_piece {
            assert!(!up.is_full());
            up.push(Bytes::from_static(b"x"));
        }
        up.push(Bytes::from_static(b"x"));
        assert!(up.is_full(), "full long before 2 MiB of one-byte pieces");
        // Taking them (whole, or a piece in parts) gives the room back.
        up.push(Bytes::from_static(b"abc"));
        while let Taken::Data(_) = up.take(2, false) {}
        assert_eq!(up.buffered.load(Ordering::SeqCst), 0);
    }

    #[test]
    fn takes_in_pieces_and_lines() {
        let poll = mio::Poll::new().expect("poll");
        let (u, _rx) = uploads(&poll);
        let up = Upload::new(&u, ME, 0);
        up.push(Bytes::from_static(b"ab\ncd"));
        up.push(Bytes::from_static(b"ef"));
        assert_eq!(up.take(10, true), Taken::Data(Bytes::from_static(b"ab\n")));
        assert_eq!(up.take(1, false), Taken::Data(Bytes::from_static(b"c")));
        assert_eq!(up.take(10, false), Taken::Data(Bytes::from_static(b"d")));
        assert_eq!(up.take(10, true), Taken::Data(Bytes::from_static(b"ef")));
        assert_eq!(up.take(10, false), Taken::Empty);
        up.end(End::Complete);
        up.end(End::Gone);
        assert_eq!(up.take(10, false), Taken::End);
    }

    #[test]
    fn a_paused_reactor_hears_when_the_app_took_enough() {
        let poll = mio::Poll::new().expect("poll");
        let (u, rx) = uploads(&poll);
        let up = Upload::new(&u, ME, 7);
        up.push(Bytes::from(vec![0u8; IN_FLIGHT]));
        assert!(up.stop_reading());
        assert!(matches!(up.take(IN_FLIGHT / 4, false), Taken::Data(_)));
        assert!(rx.try_recv().is_err(), "still more than half full");
        assert!(matches!(up.take(IN_FLIGHT, false), Taken::Data(_)));
        let reply = rx.try_recv().expect("a report");
        assert_eq!(reply.items[0].kind, ItemKind::BodyConsumed);
        assert_eq!((reply.items[0].conn, reply.items[0].seq), (ME, 7));
        assert!(!up.stop_reading());
    }

    #[test]
    fn abandoned_drops_what_comes_and_frees_the_reactor() {
        let poll = mio::Poll::new().expect("poll");
        let (u, rx) = uploads(&poll);
        let up = Upload::new(&u, ME, 0);
        up.push(Bytes::from(vec![0u8; IN_FLIGHT]));
        assert!(up.stop_reading());
        up.abandon();
        assert!(rx.try_recv().is_ok());
        up.push(Bytes::from(vec![0u8; IN_FLIGHT]));
        assert!(!up.is_full());
        assert_eq!(up.take(1, false), Taken::Empty);
    }

    #[test]
    fn a_dropped_link_means_the_client_is_gone() {
        let poll = mio::Poll::new().expect("poll");
        let (u, _rx) = uploads(&poll);
        let up = Arc::new(Upload::new(&u, ME, 0));
        drop(UploadLink(up.clone()));
        assert_eq!(up.take(1, false), Taken::Gone);
        assert!(!up.want_data());
    }
}
