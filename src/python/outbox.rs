//! Where encoded responses collect on the Python worker thread before they go
//! back: one buffer per reactor per round, sent as one [`Reply`] with one wake.
//! Also [`Pending`], what a task on the event loop needs to be answered when it
//! finishes, and (on the worker without a pool) the streams it steps between
//! rounds (WSGI generators, pyrs handlers' generators: [`Stepped`]). Streamed parts bypass the buffers: they go out through the
//! [`Link`]. Both the serve loop and the event loop use these; neither owns them.

use std::sync::Arc;

use bytes::BytesMut;
use pyo3::prelude::*;
use pyrs_parser::Head;

use super::stream::Link;
use crate::dispatch::{ConnRef, Handle, ItemKind, Part, Reply, ReplyItem};
use crate::upload::Upload;

/// Initial (and minimum spare) size of a reactor's reply buffer.
const REPLY_BUF: usize = 64 * 1024;
/// Below this much spare capacity the buffer is grown again before encoding.
const REPLY_BUF_MIN_SPARE: usize = 16 * 1024;

/// Which request a response answers.
#[derive(Debug, Clone, Copy)]
pub struct ReplyTo {
    pub reactor: usize,
    pub conn: ConnRef,
    pub seq: u64,
}

/// A request whose answer a task on the event loop computes (an `async def`
/// handler's, or an ASGI app's), waiting for that task.
pub struct Pending {
    pub target: ReplyTo,
    /// What the route needs to answer: the `pyrs.Request` of a handler, the
    /// response an ASGI app sent.
    pub context: Py<PyAny>,
    pub head: Head,
    /// Index into the loaded routes.
    pub route: usize,
    pub kind: TaskKind,
}

/// What a task on the event loop does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TaskKind {
    /// Computes a response: an `async def` handler, an ASGI app's `http` scope.
    Answer,
    /// Serves a WebSocket: `context` is its `Socket`.
    WebSocket,
    /// Awaits a handler's async generator into its streamed response:
    /// `context` is its `AsyncPump` (`produce.rs`).
    Stream,
}

/// A streamed response whose producer the worker steps between rounds.
pub trait Stepped {
    /// Whether a step would do something now: room to send, or the client left.
    fn ready(&self) -> bool;
    /// Sends what there is room for; `false` once the response has ended (its
    /// producer then closed).
    fn step(&mut self, py: Python<'_>) -> bool;
    /// Ends the response where it is (the server is stopping).
    fn end(&mut self, py: Python<'_>);
    /// Whether its producer may still read the streamed request body `upload`
    /// (a WSGI iterable can). A pyrs handler's body is always whole.
    fn holds(&self, _upload: &Arc<Upload>) -> bool {
        false
    }
}

struct Outbox {
    out: BytesMut,
    items: Vec<ReplyItem>,
}

/// One reply under construction per reactor, and the [`Link`] streamed
/// responses go out through.
pub struct Outboxes {
    boxes: Vec<Outbox>,
    link: Arc<Link>,
    /// Streams this thread steps between rounds (the worker's, with
    /// `python_threads` 1); `None` where streams are iterated where they start
    /// (a pool thread).
    streams: Option<Vec<Box<dyn Stepped>>>,
}

impl Outboxes {
    pub fn new(link: Arc<Link>) -> Outboxes {
        let boxes = (0..link.handles.len())
            .map(|_| Outbox {
                out: BytesMut::with_capacity(REPLY_BUF),
                items: Vec::new(),
            })
            .collect();
        Outboxes {
            boxes,
            link,
            streams: None,
        }
    }

    /// These outboxes' thread steps its WSGI streams between rounds.
    pub fn stepping_streams(mut self) -> Outboxes {
        self.streams = Some(Vec::new());
        self
    }

    /// Whether WSGI streams are handed to [`Outboxes::defer`].
    pub fn steps_streams(&self) -> bool {
        self.streams.is_some()
    }

    /// Keeps a stream to be stepped between rounds.
    pub fn defer(&mut self, stream: impl Stepped + 'static) {
        if let Some(streams) = &mut self.streams {
            streams.push(Box::new(stream));
        }
    }

    /// Whether a WSGI stream stepped here holds `upload` (its iterable may
    /// still read the request body).
    pub fn holds_upload(&self, upload: &Arc<Upload>) -> bool {
        self.streams
            .as_ref()
            .is_some_and(|s| s.iter().any(|s| s.holds(upload)))
    }

    /// Whether WSGI streams are open.
    pub fn has_streams(&self) -> bool {
        self.streams.as_ref().is_some_and(|s| !s.is_empty())
    }

    /// Whether one of them can go on now (room, or its client left).
    pub fn streams_ready(&self) -> bool {
        self.streams
            .as_ref()
            .is_some_and(|s| s.iter().any(|s| s.ready()))
    }

    /// At exit: ends every WSGI stream still open (closing its iterable).
    pub fn end_streams(&mut self, py: Python<'_>) {
        if let Some(streams) = &mut self.streams {
            for mut stream in streams.drain(..) {
                stream.end(py);
            }
        }
    }

    /// Steps every WSGI stream once, dropping those that ended.
    pub fn step_streams(&mut self, py: Python<'_>) {
        if let Some(streams) = &mut self.streams {
            streams.retain_mut(|s| s.step(py));
        }
    }

    /// Where streamed responses go (they bypass the outboxes).
    pub fn link(&self) -> &Arc<Link> {
        &self.link
    }

    /// Encodes one response for `target` with `encode` (which appends to the
    /// buffer it is given). A target whose reactor does not exist is dropped.
    pub fn answer(&mut self, target: ReplyTo, encode: impl FnOnce(&mut BytesMut)) {
        self.push(target, ItemKind::Response, encode);
    }

    /// Like [`Outboxes::answer`], for an item of another kind (a WebSocket
    /// upgrade, message or close).
    pub fn push(&mut self, target: ReplyTo, kind: ItemKind, encode: impl FnOnce(&mut BytesMut)) {
        let Some(outbox) = self.boxes.get_mut(target.reactor) else {
            return;
        };
        encode(&mut outbox.out);
        outbox.items.push(ReplyItem {
            conn: target.conn,
            seq: target.seq,
            end: outbox.out.len(),
            kind,
            part: Part::Whole,
        });
    }

    /// Like [`Outboxes::answer`], when `encode` may decide not to answer here
    /// (it returns `false`, having written nothing: the response streams).
    pub fn answer_unless_streamed(
        &mut self,
        target: ReplyTo,
        encode: impl FnOnce(&mut BytesMut) -> bool,
    ) {
        let Some(outbox) = self.boxes.get_mut(target.reactor) else {
            return;
        };
        if encode(&mut outbox.out) {
            outbox.items.push(ReplyItem {
                conn: target.conn,
                seq: target.seq,
                end: outbox.out.len(),
                kind: ItemKind::Response,
                part: Part::Whole,
            });
        }
    }

    /// Sends each reactor the replies collected for it this round, waking it once.
    pub fn send(&mut self) {
        let handles: &[Handle] = &self.link.handles;
        for (outbox, handle) in self.boxes.iter_mut().zip(handles) {
            if outbox.items.is_empty() {
                continue;
            }
            let reply = Reply {
                out: outbox.out.split().freeze(),
                items: std::mem::take(&mut outbox.items),
                flow: None,
            };
            if outbox.out.capacity() < REPLY_BUF_MIN_SPARE {
                outbox.out.reserve(REPLY_BUF);
            }
            // A reactor that is gone has no connections left to answer.
            let _ = handle.send(reply);
        }
    }
}
