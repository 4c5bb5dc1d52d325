//! Streamed bodies of pyrs handlers, on the Python thread that produces them: a
//! handler that returns a generator, an async generator, or a `pyrs.Response`
//! whose body is one (`encode.rs` hands back an [`encode::Streamed`]). Each
//! part goes to the client as it is produced, through `stream.rs`: chunked on
//! HTTP/1.1, close-delimited on HTTP/1.0, as is under a declared
//! `Content-Length` (a producer that yields more or fewer bytes than it
//! declared has its response cut short and the connection closed, with a
//! message on stderr). Parts are `bytes` or `str` (UTF-8); the head waits for
//! the first non-empty part, whose type gives the default `Content-Type`, so
//! a failure before it is still a 500. After it, a failure closes the
//! connection and is logged with its traceback.
//!
//! Who drives the producer:
//! - a generator on the worker (`python_threads` 1) is a [`SyncPump`] the
//!   serve loop steps between rounds, like a WSGI generator, so that a paused
//!   stream does not hold up other requests;
//! - a generator on a pool thread is iterated there to its end, waiting for
//!   room without the GIL;
//! - an async generator on the worker becomes a task on its event loop
//!   (`AsyncPump` below), [`Link::watch`]ed like an ASGI stream, and cancelled
//!   when the client leaves;
//! - an async generator where no event loop runs (a plain handler on a pool
//!   thread, or a project with no async code) is iterated through a private
//!   event loop, like a generator.
//!
//! Whatever ends the response (its end, a failure, the client leaving, HEAD,
//! server stop), the producer's `close()` or `aclose()` is called, so its
//! `finally` blocks run.

use std::ffi::CStr;
use std::sync::Arc;

use bytes::BytesMut;
use pyo3::exceptions::{PyTypeError, PyValueError};
use pyo3::intern;
use pyo3::prelude::*;
use pyo3::sync::PyOnceLock;
use pyo3::types::{PyBytes, PyDict, PyIterator, PyString};
use pyrs_parser::Head;

use super::aio::Runtime;
use super::encode::{self, Producer, Streamed};
use super::errors::{self, type_name};
use super::outbox::{Outboxes, Pending, ReplyTo, Stepped, TaskKind};
use super::stream::{Link, Stream};
use crate::dispatch::Flow;
use crate::response::{self, Builder, Framing, Persist};

/// The Python side of async producers, simplest in Python.
const PUMPS: &CStr = c"
import asyncio


class AsyncPump:
    \"\"\"Awaits an async generator part by part and hands each part to `body`
    (a pyrs AsyncBody); waits while the client is behind; stops when it left.\"\"\"

    __slots__ = ('agen', 'body', 'waiter', 'task', 'gone', 'closing')

    def __init__(self, agen, body):
        self.agen = agen
        self.body = body
        self.waiter = None
        self.task = None
        self.gone = False
        self.closing = False

    async def run(self):
        self.task = asyncio.current_task()
        agen, body = self.agen, self.body
        try:
            while True:
                try:
                    part = await agen.__anext__()
                except StopAsyncIteration:
                    body.end()
                    return
                step = body.send(part)
                if step == 1:
                    self.waiter = asyncio.get_running_loop().create_future()
                    try:
                        await self.waiter
                    finally:
                        self.waiter = None
                    if self.gone:
                        return
                elif step == 2:
                    return
        except asyncio.CancelledError:
            if not self.gone:
                raise
        except Exception as e:
            body.fail(e)
        finally:
            self.closing = True
            await agen.aclose()

    def _wake(self, gone):
        \"\"\"Called by the worker: room to send again, or (gone) the client left.\"\"\"
        if gone:
            self.gone = True
        if self.waiter is not None:
            if not self.waiter.done():
                self.waiter.set_result(None)
        elif gone and not self.closing and self.task is not None and not self.task.done():
            # Waiting inside the generator (between events): stop it there.
            self.task.cancel()


class AsyncAsSync:
    \"\"\"An async generator iterated where no event loop runs: each part is
    awaited on a private loop.\"\"\"

    def __init__(self, agen):
        self.agen = agen
        self.loop = asyncio.new_event_loop()

    def __iter__(self):
        return self

    def __next__(self):
        try:
            return self.loop.run_until_complete(self.agen.__anext__())
        except StopAsyncIteration:
            raise StopIteration from None

    def close(self):
        try:
            self.loop.run_until_complete(self.agen.aclose())
        finally:
            self.loop.close()
";

/// The classes of [`PUMPS`]: `(AsyncPump, AsyncAsSync)`.
static CLASSES: PyOnceLock<(Py<PyAny>, Py<PyAny>)> = PyOnceLock::new();

fn classes(py: Python<'_>) -> PyResult<&(Py<PyAny>, Py<PyAny>)> {
    CLASSES.get_or_try_init(py, || {
        let namespace = PyDict::new(py);
        py.run(PUMPS, Some(&namespace), None)?;
        let get = |name: &str| -> PyResult<Py<PyAny>> {
            namespace
                .get_item(name)?
                .map(Bound::unbind)
                .ok_or_else(|| PyValueError::new_err(format!("{name} missing")))
        };
        Ok((get("AsyncPump")?, get("AsyncAsSync")?))
    })
}

/// Parts a [`SyncPump`] sends per step at most, so that one fast generator
/// does not keep the worker from its other requests.
const PARTS_PER_STEP: usize = 16;

/// What sending one part left the producer to do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Step {
    /// Produce the next part.
    Go,
    /// Wait for the client to take what was sent.
    Wait,
    /// The response has ended (HEAD, the client left, too many bytes): close
    /// the producer.
    Stop,
}

impl Step {
    /// As `AsyncBody.send` returns it to the pump.
    fn code(self) -> u8 {
        match self {
            Step::Go => 0,
            Step::Wait => 1,
            Step::Stop => 2,
        }
    }
}

/// The head a streamed response will have, until its first part lays it out.
struct Start {
    status: u16,
    headers: Py<PyAny>,
    content_type: Option<String>,
}

/// One streamed handler response: its head until the first part, then its
/// [`Stream`], with the byte count a declared `Content-Length` allows.
pub struct Body {
    link: Arc<Link>,
    target: ReplyTo,
    request: Head,
    flow: Arc<Flow>,
    start: Option<Start>,
    stream: Option<Stream>,
    /// Bytes a declared `Content-Length` still allows.
    left: Option<usize>,
    /// `error in handler ... for ...`, for messages.
    what: String,
}

impl Body {
    fn new(
        streamed: &Streamed<'_>,
        link: Arc<Link>,
        target: ReplyTo,
        request: Head,
        flow: Arc<Flow>,
        what: String,
    ) -> Body {
        let start = Start {
            status: streamed.status,
            headers: streamed.headers.clone().unbind(),
            content_type: streamed.content_type.clone(),
        };
        Body {
            link,
            target,
            request,
            flow,
            start: Some(start),
            stream: None,
            left: None,
            what,
        }
    }

    /// Sends one part the producer yielded; `Err` when it is neither `bytes`
    /// nor `str` (or its head cannot be laid out).
    fn send(&mut self, py: Python<'_>, part: &Bound<'_, PyAny>) -> PyResult<Step> {
        let (data, default_ct): (&[u8], &[u8]) = if let Ok(b) = part.cast::<PyBytes>() {
            (b.as_bytes(), response::OCTET_STREAM)
        } else if let Ok(s) = part.cast::<PyString>() {
            (s.to_str()?.as_bytes(), response::TEXT_HTML)
        } else {
            return Err(PyTypeError::new_err(format!(
                "a streamed response must yield str or bytes, not {}",
                type_name(part)
            )));
        };
        if self.stream.is_none() {
            // The head waits for the first non-empty part.
            if data.is_empty() {
                return Ok(Step::Go);
            }
            if !self.open(py, default_ct)? {
                return Ok(Step::Stop);
            }
        }
        let Some(stream) = self.stream.as_mut() else {
            return Ok(Step::Stop);
        };
        let mut data = data;
        let mut over = false;
        if let Some(left) = &mut self.left {
            if data.len() > *left {
                data = &data[..*left];
                over = true;
            }
            *left -= data.len();
        }
        if stream.send(data, false).is_err() || stream.ended() {
            return Ok(Step::Stop);
        }
        if over {
            eprintln!(
                "pyrs: {}: the body is longer than its Content-Length; \
                 the connection is closed",
                self.what
            );
            stream.abort();
            return Ok(Step::Stop);
        }
        Ok(if self.flow.has_room() {
            Step::Go
        } else {
            Step::Wait
        })
    }

    /// Lays out the head (with `default_ct` unless the handler chose one) and
    /// opens the stream; `false` when its reactor is unknown.
    fn open(&mut self, py: Python<'_>, default_ct: &[u8]) -> PyResult<bool> {
        let Some(start) = self.start.take() else {
            return Ok(false);
        };
        let head = &self.request;
        let mut out = BytesMut::new();
        let mut builder = Builder::new(&mut out, start.status);
        encode::add_headers(&mut builder, start.headers.bind(py))?;
        let ct = start
            .content_type
            .as_deref()
            .map_or(default_ct, str::as_bytes);
        let framing = builder.finish_streamed(
            Some(ct),
            Persist::of(head),
            response::head_only(head),
            head.minor_version == 0,
        )?;
        if let Framing::Length(n) = framing {
            self.left = Some(n);
        }
        self.stream = Stream::new(&self.link, self.target, out, framing, self.flow.clone());
        Ok(self.stream.is_some())
    }

    /// The producer is exhausted: ends the response (a whole empty one when
    /// it yielded nothing).
    fn end(&mut self, py: Python<'_>) {
        if let Some(start) = self.start.take() {
            // Nothing was yielded: a whole empty response.
            let head = &self.request;
            let mut out = BytesMut::new();
            let mut builder = Builder::new(&mut out, start.status);
            let laid_out =
                encode::add_headers(&mut builder, start.headers.bind(py)).and_then(|()| {
                    let ct = start.content_type.as_deref().map(str::as_bytes);
                    let ct = ct.unwrap_or(response::TEXT_PLAIN);
                    let persist = Persist::of(head);
                    Ok(builder.finish(Some(ct), b"", persist, response::head_only(head))?)
                });
            match laid_out {
                Ok(()) => self.whole(out),
                Err(e) => self.fail(py, &e),
            }
            return;
        }
        if let Some(stream) = &mut self.stream {
            if self.left.is_some_and(|left| left > 0) && !stream.ended() {
                eprintln!(
                    "pyrs: {}: the body is shorter than its Content-Length; \
                     the connection is closed",
                    self.what
                );
            }
            // Under a length not reached, this closes the connection.
            let _ = stream.send(b"", true);
        }
    }

    /// The producer failed: a 500 if nothing was sent, else the response is
    /// cut short (the connection closes). Logged either way.
    fn fail(&mut self, py: Python<'_>, e: &PyErr) {
        errors::log(py, &self.what, e);
        self.abort();
    }

    /// Sends `out`, a whole response laid out, in place of the stream.
    fn whole(&mut self, out: BytesMut) {
        let framing = Framing::Empty;
        if let Some(mut stream) =
            Stream::new(&self.link, self.target, out, framing, self.flow.clone())
        {
            let _ = stream.send(b"", true);
            self.stream = Some(stream);
        }
    }

    /// Ends the response where it is (the server is stopping, or the
    /// producer ended without finishing it): cut short once begun; a 500 when
    /// nothing was sent yet, so the request is never left unanswered (and the
    /// answers pipelined behind it never held up).
    fn abort(&mut self) {
        match &mut self.stream {
            Some(stream) => stream.abort(),
            None => {
                if self.start.take().is_some() {
                    let mut out = BytesMut::new();
                    encode::internal_error(&mut out, &self.request);
                    self.whole(out);
                }
            }
        }
    }
}

/// Starts streaming what handler `route_index` returned for `target`.
#[allow(clippy::too_many_arguments)]
pub fn start(
    py: Python<'_>,
    streamed: Streamed<'_>,
    target: ReplyTo,
    request: Head,
    route_index: usize,
    what: String,
    outboxes: &mut Outboxes,
    runtime: Option<&mut Runtime>,
) {
    let link = outboxes.link().clone();
    let items = match (&streamed.producer, runtime) {
        (Producer::Async(agen), Some(rt)) => {
            let flow = link.flow(true);
            let body = || {
                let (link, flow) = (link.clone(), flow.clone());
                Body::new(&streamed, link, target, request, flow, what.clone())
            };
            let pending = Pending {
                target,
                context: py.None(),
                head: request,
                route: route_index,
                kind: TaskKind::Stream,
            };
            match spawn_pump(py, agen, body(), pending, rt) {
                Ok(pump) => link.watch(flow, pump),
                // Not started: the generator has run no code to clean up.
                Err(e) => body().fail(py, &e),
            }
            return;
        }
        (Producer::Async(agen), None) => classes(py)
            .and_then(|(_, as_sync)| as_sync.bind(py).call1((agen,)))
            .and_then(|wrapper| wrapper.try_iter()),
        (Producer::Sync(items), _) => Ok(items.clone()),
    };
    let flow = link.flow(outboxes.steps_streams());
    let mut body = Body::new(&streamed, link, target, request, flow, what);
    let items = match items {
        Ok(items) => items,
        Err(e) => {
            body.fail(py, &e);
            return;
        }
    };
    let mut pump = SyncPump {
        items: items.unbind(),
        body,
    };
    if !outboxes.steps_streams() {
        // A pool thread: this thread is the producer's until the end.
        pump.run(py);
        return;
    }
    // The first parts go out now; the serve loop steps the rest.
    if pump.step(py) {
        outboxes.defer(pump);
    }
}

/// Spawns the task awaiting `agen` into `body`; returns its `AsyncPump`.
fn spawn_pump(
    py: Python<'_>,
    agen: &Bound<'_, PyAny>,
    body: Body,
    pending: Pending,
    rt: &mut Runtime,
) -> PyResult<Py<PyAny>> {
    let (pump_class, _) = classes(py)?;
    let body = Bound::new(py, AsyncBody { body: Some(body) })?;
    let pump = pump_class.bind(py).call1((agen, &body))?;
    let coro = pump.call_method0(intern!(py, "run"))?;
    let pending = Pending {
        context: pump.clone().unbind(),
        ..pending
    };
    rt.spawn(py, &coro, pending)?;
    Ok(pump.unbind())
}

/// The task finished that awaited an async producer (`AsyncPump.run`): stops
/// watching its stream, logs what it raised past the pump (an `aclose()` that
/// failed, a cancellation at stop).
pub fn finish_task(
    py: Python<'_>,
    pending: &Pending,
    outcome: PyResult<Bound<'_, PyAny>>,
    outboxes: &Outboxes,
) {
    let pump = pending.context.bind(py);
    outboxes.link().unwatch(pump);
    if let Err(e) = outcome {
        if !e.is_instance_of::<pyo3::exceptions::asyncio::CancelledError>(py) {
            errors::log(py, "error closing a streamed response", &e);
        }
    }
    // Ends a response the pump left open (the task was cancelled).
    if let Ok(body) = pump.getattr(intern!(py, "body")) {
        if let Ok(body) = body.cast::<AsyncBody>() {
            if let Some(body) = body.borrow_mut().body.as_mut() {
                body.abort();
            }
        }
    }
}

/// The [`Body`] an `AsyncPump` sends its parts to.
#[pyclass(module = "pyrs", name = "AsyncBody")]
struct AsyncBody {
    body: Option<Body>,
}

#[pymethods]
impl AsyncBody {
    /// Sends one part: 0 to go on, 1 to wait for room (`_wake`), 2 to stop.
    fn send(&mut self, part: &Bound<'_, PyAny>) -> PyResult<u8> {
        let Some(body) = &mut self.body else {
            return Ok(Step::Stop.code());
        };
        let step = match body.send(part.py(), part)? {
            // The reactor wakes the pump (through `Link::poll_watches`) once
            // there is room, unless there is already.
            Step::Wait if !body.flow.want_room() => Step::Go,
            step => step,
        };
        Ok(step.code())
    }

    /// The generator is exhausted.
    fn end(&mut self, py: Python<'_>) {
        if let Some(body) = &mut self.body {
            body.end(py);
        }
    }

    /// The generator raised `error`.
    fn fail(&mut self, error: &Bound<'_, PyAny>) {
        if let Some(body) = &mut self.body {
            body.fail(error.py(), &PyErr::from_value(error.clone()));
        }
    }
}

/// A generator streaming from the worker (or, run to its end, from a pool
/// thread).
pub struct SyncPump {
    items: Py<PyIterator>,
    body: Body,
}

impl SyncPump {
    /// Sends the next part: what to do next, or `None` once the response has
    /// ended (the producer is then closed).
    fn next(&mut self, py: Python<'_>) -> Option<Step> {
        let mut items = self.items.bind(py).clone();
        let step = match items.next() {
            None => {
                self.body.end(py);
                Step::Stop
            }
            Some(Err(e)) => {
                self.body.fail(py, &e);
                Step::Stop
            }
            Some(Ok(part)) => match self.body.send(py, &part) {
                Ok(step) => step,
                Err(e) => {
                    self.body.fail(py, &e);
                    Step::Stop
                }
            },
        };
        if step == Step::Stop {
            self.close(py);
            return None;
        }
        Some(step)
    }

    /// On a pool thread: iterates to the end, waiting without the GIL.
    fn run(&mut self, py: Python<'_>) {
        loop {
            if self.body.flow.is_gone() {
                self.close(py);
                return;
            }
            if !self.body.flow.has_room() && py.detach(|| self.body.flow.wait_for_room()).is_err() {
                self.close(py);
                return;
            }
            if self.next(py).is_none() {
                return;
            }
        }
    }

    /// Calls the producer's `close()` (its `finally` blocks run); a failure
    /// is logged and cuts the response short.
    fn close(&mut self, py: Python<'_>) {
        let items = self.items.bind(py);
        let closed = items
            .getattr_opt(intern!(py, "close"))
            .and_then(|close| close.map_or(Ok(()), |c| c.call0().map(|_| ())));
        if let Err(e) = closed {
            errors::log(py, &self.body.what, &e);
            self.body.abort();
        }
    }
}

impl Stepped for SyncPump {
    fn ready(&self) -> bool {
        self.body.flow.has_room() || self.body.flow.is_gone()
    }

    fn step(&mut self, py: Python<'_>) -> bool {
        let flow = self.body.flow.clone();
        // A wake asked for last time has come (or is not needed any more).
        flow.take_wake();
        for _ in 0..PARTS_PER_STEP {
            if flow.is_gone() {
                self.close(py);
                return false;
            }
            // No room: the reactor wakes the worker when there is.
            if !flow.has_room() && flow.want_room() {
                return true;
            }
            if self.next(py).is_none() {
                return false;
            }
        }
        if !flow.has_room() {
            flow.want_room();
        }
        true
    }

    fn end(&mut self, py: Python<'_>) {
        self.body.abort();
        self.close(py);
    }
}
