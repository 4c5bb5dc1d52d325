//! One ASGI `http` scope's `receive()` and `send()`, on the Python worker
//! thread. [`Cycle`] holds what the app has read and sent. Both return an
//! awaitable ([`Call`]) that does its work when first stepped, as a
//! coroutine would. The common cases end in that step, with no coroutine
//! frame: the whole body on the first `receive()`, `http.response.start`,
//! and a body sent in one message. The rest is handed to the Python subclass
//! `HttpCycle` ([`PROTOCOL`]): a body taken as it arrives, the wait for the
//! client to leave, streamed responses (through [`Opener`] and
//! [`AsgiStream`]) and the app's mistakes, which it raises.
//! A finished cycle's response is encoded by [`encode_cycle`].

use std::ffi::CStr;
use std::sync::Arc;

use bytes::BytesMut;
use pyo3::exceptions::{PyOSError, PyRuntimeError, PyStopIteration, PyValueError};
use pyo3::intern;
use pyo3::prelude::*;
use pyo3::types::{PyBool, PyBytes, PyDict, PyList, PyString, PyTuple};
use pyo3::{PyTraverseError, PyVisit};
use pyrs_parser::Head;

use super::outbox::ReplyTo;
use super::stream::{Link, Stream};
use crate::response::{self, Builder, Persist};

/// The slow paths of `receive()` and `send()`, simplest in Python; run with
/// `HttpCycleBase` ([`Cycle`]) in its namespace.
pub const PROTOCOL: &CStr = c"
import asyncio


class HttpCycle(HttpCycleBase):
    \"\"\"receive() and send() of one http scope. The base answers the common
    cases; what it hands on (_receive, _send) comes here. A response sent in
    one body message is collected; one with more_body streams through `opener`.\"\"\"

    __slots__ = ()

    async def _receive(self):
        if not self.received:
            if self.upload is None:
                # What the base answers itself, unless the cycle was busy.
                self.received = True
                return {'type': 'http.request', 'body': self.body, 'more_body': False}
            return await self._receive_part()
        if self.gone:
            return {'type': 'http.disconnect'}
        # The body has been read; the next event is the client leaving.
        if self.disconnect is None:
            self.disconnect = asyncio.get_running_loop().create_future()
        return await self.disconnect

    async def _send(self, message):
        if self.gone:
            raise OSError('the client disconnected')
        kind = message['type']
        if kind == 'http.response.start':
            if self.status is not None:
                raise RuntimeError('http.response.start sent twice')
            self.status = message['status']
            self.headers = message.get('headers') or []
        elif kind == 'http.response.body':
            if self.status is None:
                raise RuntimeError('http.response.body sent before http.response.start')
            if self.done:
                raise RuntimeError('http.response.body sent after the response ended')
            body = message.get('body', b'')
            more = bool(message.get('more_body', False))
            if self.stream is None:
                if not more:
                    if body:
                        self.chunks.append(body)
                    self.done = True
                    return
                self.stream = self.opener.open(self)
            if not more:
                self.done = True
            if self.stream.send(body, more):
                # The client has not taken enough of what was sent: wait for it.
                self.waiter = asyncio.get_running_loop().create_future()
                try:
                    await self.waiter
                finally:
                    self.waiter = None
                if self.gone and more:
                    raise OSError('the client disconnected')
        else:
            raise ValueError(f'unexpected ASGI message type {kind!r} for an http scope')

    async def _receive_part(self):
        # A large body, taken as it arrives: more_body until its end.
        while True:
            got = self.upload.take()
            if got is None:
                # Each reader waits on its own future (a second one must not
                # replace the first's, nor a cancel of one reach the other).
                waiter = asyncio.get_running_loop().create_future()
                self.body_waiters.append(waiter)
                await waiter
                continue
            if got is False:
                self.received = True
                self.gone = True
                return {'type': 'http.disconnect'}
            body, more = got
            if not more:
                self.received = True
            return {'type': 'http.request', 'body': body, 'more_body': more}

    def _body_wake(self):
        \"\"\"Called by the worker: more of the body arrived (or its end).\"\"\"
        for waiter in self.body_waiters:
            if not waiter.done():
                waiter.set_result(None)
        self.body_waiters.clear()

    def _wake(self, gone):
        \"\"\"Called by the worker: room to send again, or (gone) the client left.\"\"\"
        if gone:
            self.gone = True
            if self.disconnect is not None and not self.disconnect.done():
                self.disconnect.set_result({'type': 'http.disconnect'})
        if self.waiter is not None and not self.waiter.done():
            self.waiter.set_result(None)
";

/// The state of one `http` scope, and the fast paths of its `receive()` and
/// `send()`; subclassed in Python (`HttpCycle`) for the rest.
#[pyclass(module = "pyrs", name = "HttpCycleBase", subclass)]
pub struct Cycle {
    /// The whole body (`b""` when it is taken as it arrives instead).
    #[pyo3(get)]
    body: Py<PyAny>,
    /// The body's `AsgiBody`, when it is taken as it arrives; else `None`.
    #[pyo3(get)]
    upload: Py<PyAny>,
    /// Futures of the `receive()` calls waiting for more of the body.
    #[pyo3(get)]
    body_waiters: Py<PyList>,
    #[pyo3(get, set)]
    received: bool,
    /// `http.response.start`'s status, `None` before it.
    #[pyo3(get, set)]
    status: Py<PyAny>,
    #[pyo3(get, set)]
    headers: Py<PyAny>,
    /// The collected body parts of a response that does not stream.
    #[pyo3(get)]
    chunks: Py<PyList>,
    /// The response's last part has been sent.
    #[pyo3(get, set)]
    done: bool,
    /// The future a `receive()` after the body waits on for `http.disconnect`.
    #[pyo3(get, set)]
    disconnect: Py<PyAny>,
    #[pyo3(get)]
    opener: Py<PyAny>,
    /// The `AsgiStream` of a streamed response, `None` until it starts.
    #[pyo3(get, set)]
    stream: Py<PyAny>,
    /// The future a `send()` waits on for room.
    #[pyo3(get, set)]
    waiter: Py<PyAny>,
    /// The client has left.
    #[pyo3(get, set)]
    gone: bool,
}

#[pymethods]
impl Cycle {
    #[new]
    #[pyo3(signature = (body, opener, upload=None))]
    fn new(py: Python<'_>, body: Py<PyAny>, opener: Py<PyAny>, upload: Option<Py<PyAny>>) -> Self {
        Cycle {
            body,
            upload: upload.unwrap_or_else(|| py.None()),
            body_waiters: PyList::empty(py).unbind(),
            received: false,
            status: py.None(),
            headers: py.None(),
            chunks: PyList::empty(py).unbind(),
            done: false,
            disconnect: py.None(),
            opener,
            stream: py.None(),
            waiter: py.None(),
            gone: false,
        }
    }

    /// The next event, as an awaitable ([`Call`]): the whole body at once
    /// when it was read before the app ran; anything else through `_receive`.
    fn receive(slf: &Bound<'_, Self>) -> Call {
        Call {
            state: State::Receive(slf.clone().unbind()),
        }
    }

    /// Takes one message, as an awaitable ([`Call`]): the start and a body in
    /// one message are kept here; anything else (a streamed part, a mistake)
    /// goes through `_send`.
    fn send(slf: &Bound<'_, Self>, message: Py<PyAny>) -> Call {
        Call {
            state: State::Send(slf.clone().unbind(), message),
        }
    }

    fn __traverse__(&self, visit: PyVisit<'_>) -> Result<(), PyTraverseError> {
        for field in [
            &self.body,
            &self.upload,
            &self.status,
            &self.headers,
            &self.disconnect,
            &self.opener,
            &self.stream,
            &self.waiter,
        ] {
            visit.call(field)?;
        }
        visit.call(&self.body_waiters)?;
        visit.call(&self.chunks)
    }

    fn __clear__(&mut self, py: Python<'_>) {
        // What can hold a cycle back to this one: the futures and the stream.
        self.disconnect = py.None();
        self.waiter = py.None();
        self.stream = py.None();
        self.upload = py.None();
        self.headers = py.None();
        self.status = py.None();
    }
}

impl Cycle {
    /// The whole body's `http.request` event, if it was read before the app
    /// ran and has not been received yet; `None` leaves it to `_receive`.
    fn take_body(slf: &Bound<'_, Self>) -> PyResult<Option<Py<PyAny>>> {
        let py = slf.py();
        let Ok(mut this) = slf.try_borrow_mut() else {
            return Ok(None);
        };
        if this.received || !this.upload.is_none(py) {
            return Ok(None);
        }
        this.received = true;
        let event = PyDict::new(py);
        event.set_item(intern!(py, "type"), intern!(py, "http.request"))?;
        event.set_item(intern!(py, "body"), this.body.bind(py))?;
        event.set_item(intern!(py, "more_body"), false)?;
        Ok(Some(event.into_any().unbind()))
    }

    /// Keeps `message` if it is a well-formed start, or a body in one message
    /// of a response that does not stream: what the Python `_send` would do
    /// with it, without a coroutine. `false` leaves the message to `_send`
    /// (it raises what a mistake deserves, when awaited). Only plain values
    /// are looked at here, so that no Python code runs while the cycle is
    /// borrowed.
    fn keep<'py>(slf: &Bound<'py, Self>, message: &Bound<'py, PyAny>) -> bool {
        let py = slf.py();
        let Ok(message) = message.cast_exact::<PyDict>() else {
            return false;
        };
        let Ok(mut this) = slf.try_borrow_mut() else {
            return false;
        };
        if this.gone {
            return false;
        }
        let get = |key: &Bound<'py, PyString>| message.get_item(key).ok().flatten();
        let Some(kind) = get(intern!(py, "type")) else {
            return false;
        };
        let Ok(kind) = kind.cast_exact::<PyString>() else {
            return false;
        };
        match kind.to_str() {
            Ok("http.response.start") if this.status.is_none(py) => {
                let Some(status) = get(intern!(py, "status")) else {
                    return false;
                };
                let headers = match get(intern!(py, "headers")) {
                    None => PyList::empty(py).into_any(),
                    Some(h) if h.is_none() => PyList::empty(py).into_any(),
                    Some(h) if h.is_exact_instance_of::<PyList>() => h,
                    Some(_) => return false,
                };
                this.status = status.unbind();
                this.headers = headers.unbind();
                true
            }
            Ok("http.response.body")
                if !this.status.is_none(py) && !this.done && this.stream.is_none(py) =>
            {
                match get(intern!(py, "more_body")) {
                    None => {}
                    Some(more) => match more.cast_exact::<PyBool>() {
                        Ok(more) if !more.is_true() => {}
                        _ => return false,
                    },
                }
                match get(intern!(py, "body")) {
                    None => {}
                    Some(body) => match body.cast_exact::<PyBytes>() {
                        Ok(bytes) if bytes.as_bytes().is_empty() => {}
                        Ok(bytes) => {
                            if this.chunks.bind(py).append(bytes).is_err() {
                                return false;
                            }
                        }
                        Err(_) => return false,
                    },
                }
                this.done = true;
                true
            }
            _ => false,
        }
    }

    /// Whether the response's last part was sent.
    pub fn is_done(&self) -> bool {
        self.done
    }

    /// Whether the client left (`_wake(True)`).
    pub fn is_gone(&self) -> bool {
        self.gone
    }

    /// The body's `AsgiBody`, if it was taken as it arrived.
    pub fn upload<'py>(&self, py: Python<'py>) -> Option<Bound<'py, PyAny>> {
        Some(self.upload.bind(py).clone()).filter(|u| !u.is_none())
    }

    /// The `AsgiStream` of a streamed response, once it started.
    pub fn stream<'py>(&self, py: Python<'py>) -> Option<Bound<'py, PyAny>> {
        Some(self.stream.bind(py).clone()).filter(|s| !s.is_none())
    }
}

/// What `receive()` or `send()` returned: an awaitable that does its work
/// when it is first stepped (awaited, or run as a task), as a coroutine
/// would; nothing happens if it is never awaited, or cancelled first. The
/// common cases end in that first step; the others step the Python
/// coroutine (`_receive`, `_send`) it hands them to. It has `send`, `throw`
/// and `close`, so that `asyncio.iscoroutine()` takes it and a task can be
/// made of it.
#[pyclass(module = "pyrs", name = "CycleCall")]
pub struct Call {
    state: State,
}

enum State {
    Receive(Py<Cycle>),
    Send(Py<Cycle>, Py<PyAny>),
    /// Handed to the Python coroutine.
    Inner(Py<PyAny>),
    Done,
}

/// How one step of an awaitable made in Rust ended (this file's [`Call`],
/// and a WebSocket's).
pub enum Step {
    Yield(Py<PyAny>),
    Return(Py<PyAny>),
}

impl Step {
    /// What `__next__` gives: the value yielded, or the end's value raised
    /// as StopIteration (an end with `None` needs no exception).
    pub fn next(self, py: Python<'_>) -> PyResult<Option<Py<PyAny>>> {
        match self {
            Step::Yield(yielded) => Ok(Some(yielded)),
            Step::Return(value) if value.is_none(py) => Ok(None),
            Step::Return(value) => Err(PyStopIteration::new_err((value,))),
        }
    }

    /// What `send()` and `throw()` give: the value yielded, or the end's
    /// value raised as StopIteration.
    pub fn sent(self) -> PyResult<Py<PyAny>> {
        match self {
            Step::Yield(yielded) => Ok(yielded),
            Step::Return(value) => Err(PyStopIteration::new_err((value,))),
        }
    }
}

/// What `throw(*args)` into a coroutine that never ran raises: CPython's own
/// handling of the arguments, from a coroutine made for it.
pub fn throw_unstarted(py: Python<'_>, args: &Bound<'_, PyTuple>) -> PyResult<Py<PyAny>> {
    static UNSTARTED: pyo3::sync::PyOnceLock<Py<PyAny>> = pyo3::sync::PyOnceLock::new();
    let unstarted = UNSTARTED.get_or_try_init(py, || {
        let module = pyo3::types::PyModule::from_code(
            py,
            c"async def unstarted():\n    pass\n",
            c"pyrs_unstarted.py",
            c"pyrs_unstarted",
        )?;
        module.getattr("unstarted").map(Bound::unbind)
    })?;
    unstarted
        .bind(py)
        .call0()?
        .call_method1(intern!(py, "throw"), args)
        .map(Bound::unbind)
}

impl Call {
    /// One step: the first does the call's work, or hands it to the Python
    /// coroutine; later ones step that coroutine with `value`.
    fn step(&mut self, py: Python<'_>, value: Option<&Bound<'_, PyAny>>) -> PyResult<Step> {
        let inner = match std::mem::replace(&mut self.state, State::Done) {
            State::Receive(cycle) => {
                let cycle = cycle.bind(py);
                if let Some(event) = Cycle::take_body(cycle)? {
                    return Ok(Step::Return(event));
                }
                cycle.call_method0(intern!(py, "_receive"))?
            }
            State::Send(cycle, message) => {
                let cycle = cycle.bind(py);
                let message = message.bind(py);
                if Cycle::keep(cycle, message) {
                    return Ok(Step::Return(py.None()));
                }
                cycle.call_method1(intern!(py, "_send"), (message,))?
            }
            State::Inner(inner) => inner.into_bound(py),
            State::Done => {
                return Err(PyRuntimeError::new_err(
                    "cannot reuse already awaited coroutine",
                ))
            }
        };
        let value = value.map_or_else(|| py.None().into_bound(py), Bound::clone);
        let stepped = inner.call_method1(intern!(py, "send"), (value,));
        self.resume(py, inner, stepped)
    }

    /// What the Python coroutine's step gave: a value it yields (it goes
    /// on), or its end.
    fn resume(
        &mut self,
        py: Python<'_>,
        inner: Bound<'_, PyAny>,
        stepped: PyResult<Bound<'_, PyAny>>,
    ) -> PyResult<Step> {
        match stepped {
            Ok(yielded) => {
                self.state = State::Inner(inner.unbind());
                Ok(Step::Yield(yielded.unbind()))
            }
            Err(e) if e.is_instance_of::<PyStopIteration>(py) => {
                let value = e.value(py).getattr(intern!(py, "value"))?;
                Ok(Step::Return(value.unbind()))
            }
            Err(e) => Err(e),
        }
    }
}

#[pymethods]
impl Call {
    fn __await__(slf: PyRef<'_, Self>) -> PyRef<'_, Self> {
        slf
    }

    fn __next__(&mut self, py: Python<'_>) -> PyResult<Option<Py<PyAny>>> {
        self.step(py, None)?.next(py)
    }

    fn send(&mut self, py: Python<'_>, value: &Bound<'_, PyAny>) -> PyResult<Py<PyAny>> {
        self.step(py, Some(value))?.sent()
    }

    /// Raises what is thrown in where the call stands: into the Python
    /// coroutine it was handed to, or, not started yet, as into a coroutine
    /// that never ran ([`throw_unstarted`]).
    #[pyo3(signature = (*args))]
    fn throw(&mut self, py: Python<'_>, args: &Bound<'_, PyTuple>) -> PyResult<Py<PyAny>> {
        let (inner, stepped) = match std::mem::replace(&mut self.state, State::Done) {
            State::Inner(inner) => {
                let inner = inner.into_bound(py);
                // Only the arguments given: 3.12 warns of the three-argument form.
                let stepped = inner.call_method1(intern!(py, "throw"), args);
                (inner, stepped)
            }
            State::Receive(_) | State::Send(..) => return throw_unstarted(py, args),
            State::Done => {
                return Err(PyRuntimeError::new_err(
                    "cannot reuse already awaited coroutine",
                ))
            }
        };
        self.resume(py, inner, stepped)?.sent()
    }

    fn close(&mut self, py: Python<'_>) -> PyResult<()> {
        if let State::Inner(inner) = std::mem::replace(&mut self.state, State::Done) {
            inner.bind(py).call_method0(intern!(py, "close"))?;
        }
        Ok(())
    }

    fn __traverse__(&self, visit: PyVisit<'_>) -> Result<(), PyTraverseError> {
        match &self.state {
            State::Receive(cycle) => visit.call(cycle),
            State::Send(cycle, message) => {
                visit.call(cycle)?;
                visit.call(message)
            }
            State::Inner(inner) => visit.call(inner),
            State::Done => Ok(()),
        }
    }

    fn __clear__(&mut self) {
        self.state = State::Done;
    }
}

/// The status line and headers a cycle was sent, laid out.
fn cycle_head<'a>(py: Python<'_>, cycle: &Cycle, out: &'a mut BytesMut) -> PyResult<Builder<'a>> {
    let status = cycle.status.bind(py);
    if status.is_none() {
        return Err(PyValueError::new_err(
            "the application returned without sending http.response.start",
        ));
    }
    let status: i64 = status.extract()?;
    let status = super::module::valid_status(status)?;
    let mut builder = Builder::new(out, status);
    for pair in cycle.headers.bind(py).try_iter()? {
        let pair = pair?;
        let (name, value): (Vec<u8>, Vec<u8>) = pair.extract().map_err(|_| {
            PyValueError::new_err("ASGI response headers must be (bytes, bytes) pairs")
        })?;
        builder.header(&name, &value)?;
    }
    Ok(builder)
}

/// The response a cycle collected, encoded.
pub fn encode_cycle(
    py: Python<'_>,
    cycle: &Cycle,
    head: &Head,
    out: &mut BytesMut,
) -> PyResult<()> {
    let builder = cycle_head(py, cycle, out)?;
    let chunks = cycle.chunks.bind(py);
    let single;
    let mut joined = Vec::new();
    let body: &[u8] = match chunks.len() {
        0 => b"",
        1 => {
            single = chunks.get_item(0)?;
            single.cast::<PyBytes>()?.as_bytes()
        }
        _ => {
            for chunk in chunks.iter() {
                joined.extend_from_slice(chunk.cast::<PyBytes>()?.as_bytes());
            }
            &joined
        }
    };
    builder.finish(None, body, Persist::of(head), response::head_only(head))?;
    Ok(())
}

/// What a cycle needs to start streaming its response (`open`): where the
/// response goes, and the request's head (framing, HEAD, keep-alive).
#[pyclass(module = "pyrs", name = "AsgiStreamOpener", frozen)]
pub struct Opener {
    target: ReplyTo,
    head: Head,
    link: Arc<Link>,
}

impl Opener {
    pub fn new(target: ReplyTo, head: Head, link: Arc<Link>) -> Opener {
        Opener { target, head, link }
    }
}

#[pymethods]
impl Opener {
    /// Lays out the head `cycle` was sent and returns the response's stream;
    /// the head goes out with the first part.
    fn open(&self, cycle: &Bound<'_, Cycle>) -> PyResult<AsgiStream> {
        let py = cycle.py();
        let head = &self.head;
        let mut out = BytesMut::new();
        let framing = cycle_head(py, &cycle.borrow(), &mut out)?.finish_streamed(
            None,
            Persist::of(head),
            response::head_only(head),
            head.minor_version == 0,
        )?;
        let flow = self.link.flow(true);
        let stream = Stream::new(&self.link, self.target, out, framing, flow.clone())
            .ok_or_else(|| PyOSError::new_err("the client disconnected"))?;
        self.link.watch(flow, cycle.clone().into_any().unbind());
        Ok(AsgiStream { stream })
    }
}

/// The streamed response of one cycle.
#[pyclass(module = "pyrs", name = "AsgiStream")]
struct AsgiStream {
    stream: Stream,
}

#[pymethods]
impl AsgiStream {
    /// Sends one body part (the last unless `more`); returns whether the task
    /// should wait (for `_wake`) before sending more. `OSError` once the client
    /// is gone.
    fn send(&mut self, body: &Bound<'_, PyAny>, more: bool) -> PyResult<bool> {
        let sent = match body.cast::<PyBytes>() {
            Ok(bytes) => self.stream.send(bytes.as_bytes(), !more),
            Err(_) => {
                let bytes: Vec<u8> = body.extract().map_err(|_| {
                    PyValueError::new_err("an http.response.body's body must be bytes")
                })?;
                self.stream.send(&bytes, !more)
            }
        };
        sent.map_err(|e| PyOSError::new_err(e.to_string()))?;
        Ok(more && !self.stream.ended() && self.stream.flow().want_room())
    }

    /// Ends the response where it is, if it has not ended.
    fn abort(&mut self) {
        self.stream.abort();
    }
}
