//! Streamed responses, on the Python thread that produces them: the worker (an
//! ASGI task on its event loop, or a WSGI generator with `python_threads` 1) or
//! a pool thread (a WSGI generator). A [`Stream`] frames each part as its head
//! said (chunked, `Content-Length` as is, or close-delimited), sends it to the
//! reactor at once as its own [`Reply`] (one wake per part; whole responses keep
//! going through the outboxes, one reply per round), and keeps count in the
//! response's [`Flow`]: the producer pauses while the connection has more than
//! `max_write_buffer` bytes of it unwritten, and stops when the reactor hangs
//! up (the client left). ASGI tasks waiting for room are [`Watch`]ed: the
//! reactor wakes the event loop and [`Link::poll_watches`] resumes them; so are
//! ASGI tasks waiting in `receive()` for more of a streamed request body.

use std::sync::{Arc, Mutex};

use bytes::BytesMut;
use pyo3::prelude::*;

use super::outbox::ReplyTo;
use crate::dispatch::{Flow, Gone, Handle, ItemKind, Part, Reply, ReplyItem, WorkerWakeup};
use crate::response::{self, Framing};
use crate::upload::Upload;

/// What every producer of streamed responses shares: the reactors' handles, the
/// worker's wakeup, the byte limit, and the ASGI streams open on the loop.
pub struct Link {
    pub handles: Vec<Handle>,
    pub wakeup: Arc<WorkerWakeup>,
    /// `max_write_buffer`: unwritten bytes past which a producer pauses.
    pub limit: usize,
    watches: Mutex<Vec<Watch>>,
    /// ASGI requests whose streamed bodies their tasks take (`body.rs`).
    uploads: Mutex<Vec<UploadWatch>>,
}

/// An ASGI request body arriving as its task takes it: the `HttpCycle` to wake
/// (`_body_wake()`) when more has come.
struct UploadWatch {
    upload: Arc<Upload>,
    cycle: Py<PyAny>,
}

/// An ASGI response streaming from a task on the event loop: its flow, and the
/// `HttpCycle` to wake (`_wake(gone)`) when it may go on or the client left.
struct Watch {
    flow: Arc<Flow>,
    cycle: Py<PyAny>,
}

impl Link {
    pub fn new(handles: Vec<Handle>, wakeup: Arc<WorkerWakeup>, limit: usize) -> Link {
        Link {
            handles,
            wakeup,
            limit,
            watches: Mutex::new(Vec::new()),
            uploads: Mutex::new(Vec::new()),
        }
    }

    /// Flow control for a response produced by a task on the event loop (its
    /// wakes go through the worker's wakeup) or by a thread (`on_loop` false).
    pub fn flow(&self, on_loop: bool) -> Arc<Flow> {
        Arc::new(Flow::new(self.limit, on_loop.then(|| self.wakeup.clone())))
    }

    /// Starts watching an ASGI stream.
    pub fn watch(&self, flow: Arc<Flow>, cycle: Py<PyAny>) {
        self.lock().push(Watch { flow, cycle });
    }

    /// Stops watching the stream of `cycle` (its task finished).
    pub fn unwatch(&self, cycle: &Bound<'_, PyAny>) {
        self.lock().retain(|w| w.cycle.as_ptr() != cycle.as_ptr());
    }

    /// Starts watching the streamed request body `cycle` takes.
    pub fn watch_upload(&self, upload: Arc<Upload>, cycle: Py<PyAny>) {
        lock(&self.uploads).push(UploadWatch { upload, cycle });
    }

    /// Stops watching the request body of `cycle` (its task finished).
    pub fn unwatch_upload(&self, cycle: &Bound<'_, PyAny>) {
        lock(&self.uploads).retain(|w| w.cycle.as_ptr() != cycle.as_ptr());
    }

    /// On the worker, after the event loop was woken: resumes each task whose
    /// request body has more for it.
    fn poll_uploads(&self, py: Python<'_>) {
        let ready: Vec<Py<PyAny>> = {
            let uploads = lock(&self.uploads);
            uploads
                .iter()
                .filter(|w| w.upload.take_wake())
                .map(|w| w.cycle.clone_ref(py))
                .collect()
        };
        for cycle in ready {
            if let Err(e) = cycle.bind(py).call_method0("_body_wake") {
                super::errors::log(py, "cannot resume an ASGI request body", &e);
            }
        }
    }

    /// On the worker, after the event loop was woken: resumes each watched task
    /// that waits for room and has it, tells those whose client left; and
    /// each one waiting for more of its request body that has it.
    pub fn poll_watches(&self, py: Python<'_>) {
        self.poll_uploads(py);
        let ready: Vec<(Py<PyAny>, bool)> = {
            let mut watches = self.lock();
            if watches.is_empty() {
                return;
            }
            let mut ready = Vec::new();
            watches.retain(|w| {
                let gone = w.flow.is_gone();
                if gone || w.flow.take_wake() {
                    ready.push((w.cycle.clone_ref(py), gone));
                }
                !gone
            });
            ready
        };
        for (cycle, gone) in ready {
            if let Err(e) = cycle.bind(py).call_method1("_wake", (gone,)) {
                super::errors::log(py, "cannot resume a streaming ASGI response", &e);
            }
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<Watch>> {
        lock(&self.watches)
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// One streamed response on its way out.
pub struct Stream {
    target: ReplyTo,
    handle: Handle,
    flow: Arc<Flow>,
    framing: Framing,
    /// The response head, sent with the first part.
    head: Option<BytesMut>,
    /// The last part was sent (or the stream was cut short).
    ended: bool,
}

impl Stream {
    /// A stream for `target` whose `head` (laid out by
    /// [`response::Builder::finish_streamed`]) says `framing`; nothing is sent
    /// before the first [`Stream::send`]. `None` when the reactor is unknown.
    pub fn new(
        link: &Link,
        target: ReplyTo,
        head: BytesMut,
        framing: Framing,
        flow: Arc<Flow>,
    ) -> Option<Stream> {
        Some(Stream {
            target,
            handle: link.handles.get(target.reactor)?.clone(),
            flow,
            framing,
            head: Some(head),
            ended: false,
        })
    }

    pub fn flow(&self) -> &Arc<Flow> {
        &self.flow
    }

    /// Whether the response has ended (its head was the whole of it, its last
    /// part went out, or it was cut short).
    pub fn ended(&self) -> bool {
        self.ended
    }

    /// Sends `data` as the next part (the last one when `last`). A response
    /// without a body on the wire (HEAD, 204, 304) ends with its head; what
    /// follows is dropped. `Err(Gone)` once the client has left.
    pub fn send(&mut self, data: &[u8], last: bool) -> Result<(), Gone> {
        if self.ended {
            return Ok(());
        }
        if self.flow.is_gone() {
            self.ended = true;
            return Err(Gone);
        }
        let mut out = self.head.take().unwrap_or_default();
        let part = match &mut self.framing {
            Framing::Empty => {
                self.ended = true;
                return self.emit(out, Part::Whole);
            }
            Framing::Chunked => {
                response::chunk(&mut out, data);
                if last {
                    out.extend_from_slice(response::LAST_CHUNK);
                }
                Part::Last
            }
            Framing::Length(left) => {
                // Bytes past the declared length cannot go on the wire.
                let take = data.len().min(*left);
                out.extend_from_slice(&data[..take]);
                *left -= take;
                // Fewer bytes than declared: only closing tells the client.
                if *left > 0 {
                    Part::Close
                } else {
                    Part::Last
                }
            }
            Framing::Close => {
                out.extend_from_slice(data);
                Part::Close
            }
        };
        if !last {
            if out.is_empty() {
                return Ok(());
            }
            return self.emit(out, Part::More);
        }
        self.ended = true;
        self.emit(out, part)
    }

    /// Ends the response early (the producer failed): what was sent stays, the
    /// connection closes after it.
    pub fn abort(&mut self) {
        if !self.ended {
            self.ended = true;
            let head = self.head.take().unwrap_or_default();
            let _ = self.emit(head, Part::Close);
        }
    }

    fn emit(&self, out: BytesMut, part: Part) -> Result<(), Gone> {
        let end = out.len();
        self.flow.sent(end);
        let reply = Reply {
            out: out.freeze(),
            items: vec![ReplyItem {
                conn: self.target.conn,
                seq: self.target.seq,
                end,
                kind: ItemKind::Response,
                part,
            }],
            flow: Some(self.flow.clone()),
        };
        self.handle.send(reply)
    }
}

impl Drop for Stream {
    fn drop(&mut self) {
        // A producer that stopped without ending its response (an error, a
        // task cancelled): the client must not wait for the rest.
        self.abort();
    }
}
