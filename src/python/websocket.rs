//! WebSockets on the Python worker thread: the `websocket` scope of ASGI apps
//! and `pyrs.WebSocket` for `"websocket": true` handler entries, over the
//! framing the reactor does (`ws.rs`).
//!
//! An upgrade request becomes a task running the app (or the handler) with a
//! [`Socket`]: what the client sends arrives in batches as [`WsEvent`]s and is
//! queued on it; what the app does (accept, send, close) is queued on the
//! [`Wire`] until the worker moves it into the reactors' outboxes. `receive()`
//! and `send()` return a [`Call`], an awaitable that acts when first stepped,
//! as a coroutine would: a message already queued, or a send with room, ends
//! in that step. Otherwise the task waits on a [`Wait`], which the worker
//! completes when the batch bringing the message (or the room) comes, running
//! the task's wake-up itself (`wait.rs`): an echo costs no loop iteration.
//! Accepting writes the `101` response (the `Sec-WebSocket-Accept` computed
//! here); closing before accepting, or returning without accepting, answers 403.
//! Sends are paced: a socket may have `max_write_buffer` bytes sent and not yet
//! written to the client; past that its sends wait for the reactor's
//! [`WsKind::Written`] report, so a client that does not read holds the app
//! back instead of filling the server's memory. A client that left makes sends
//! raise `OSError`.

use std::collections::{HashMap, VecDeque};
use std::ffi::CStr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use pyo3::exceptions::{PyOSError, PyRuntimeError, PyTypeError, PyValueError};
use pyo3::intern;
use pyo3::prelude::*;
use pyo3::types::{PyByteArray, PyBytes, PyDict, PyInt, PyMemoryView, PyModule, PyString, PyTuple};
use pyo3::{PyTraverseError, PyVisit};
use pyrs_parser::Field;

use super::cycle::{throw_unstarted, Step};
use super::errors;
use super::outbox::{Outboxes, ReplyTo};
use super::wait::{Hub, Wait};
use crate::dispatch::{ConnRef, ItemKind, Job, WsEvent, WsKind};
use crate::response::{self, Persist};

/// The handler API's `pyrs.WebSocket`, simplest in Python, over a [`Socket`].
const PROTOCOL: &CStr = c"
class WebSocket:
    \"\"\"The WebSocket a `\\\"websocket\\\": true` handler gets.\"\"\"

    def __init__(self, socket, request):
        self._socket = socket
        self._request = request
        # The socket's own awaitables, without a coroutine frame per message:
        # receive() gives the next message, str or bytes, or None once the
        # connection is closed; send(message) sends one.
        self.receive = socket.receive
        self.send = socket.send

    @property
    def path(self):
        return self._request.path

    @property
    def headers(self):
        return self._request.headers

    @property
    def query(self):
        return self._request.query

    @property
    def subprotocols(self):
        return list(self._socket.subprotocols)

    @property
    def close_code(self):
        \"\"\"The client's close code once it is gone (1006: it vanished).\"\"\"
        return self._socket.code

    async def accept(self, subprotocol=None):
        self._socket.accept(subprotocol)

    async def close(self, code=1000, reason=''):
        self._socket.close(code, reason)

    def __repr__(self):
        return f'<pyrs.WebSocket {self._request.path}>'
";

/// Messages taken by the app before the reactor is told (it stops reading a
/// client 32 messages, or `max_websocket_message` bytes, ahead of its app).
const REPORT_EVERY: u32 = 8;

/// What an app did with a socket, waiting to go to the reactor.
struct Outgoing {
    target: ReplyTo,
    kind: ItemKind,
    bytes: Vec<u8>,
}

/// What the apps did, for the worker to move into the outboxes.
struct Wire {
    out: Mutex<Vec<Outgoing>>,
    hub: Arc<Hub>,
    /// The first item since the last flush was queued: the loop is to stop
    /// if it runs ([`Wire::settle`]).
    stop_due: AtomicBool,
}

impl Wire {
    /// Queues `kind` for `target`. Runs no Python code: it is called with a
    /// socket borrowed.
    fn queue(&self, target: ReplyTo, kind: ItemKind, bytes: Vec<u8>) {
        if let Ok(mut out) = self.out.lock() {
            out.push(Outgoing {
                target,
                kind,
                bytes,
            });
            if out.len() == 1 {
                self.stop_due.store(true, Ordering::Relaxed);
            }
        }
    }

    /// After a call that queued the first item: stops the loop if it runs,
    /// so that what was queued leaves at once. Called with no socket
    /// borrowed (stopping the loop is Python code).
    fn settle(&self, py: Python<'_>) {
        if self.stop_due.swap(false, Ordering::Relaxed) {
            self.hub.stop_loop(py);
        }
    }
}

/// Where a socket stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    /// The upgrade waits for the app's accept (or refusal).
    Connecting,
    Open,
    /// The app closed it.
    Closing,
    /// The client is gone (or it was refused).
    Closed,
}

/// One WebSocket between the reactor and the app: the state both APIs share,
/// and their `receive`/`send`.
#[pyclass(module = "pyrs", name = "Socket")]
pub struct Socket {
    wire: Arc<Wire>,
    target: ReplyTo,
    /// `Sec-WebSocket-Accept` for the 101 response.
    accept_key: String,
    phase: Phase,
    /// Messages not taken yet (str or bytes), with their size in bytes.
    queue: VecDeque<(Py<PyAny>, usize)>,
    /// Each `receive()` waiting has a wait of its own (a shared one would be
    /// cancelled for all with one of them); the next message wakes all.
    readers: Vec<Py<Wait>>,
    /// `send()`s waiting for room.
    writers: Vec<Py<Wait>>,
    /// Whether sends may go on (room in the budget, or the client gone).
    writable: bool,
    /// Bytes the app may still send before the client has taken them.
    budget: i64,
    subprotocols: Vec<String>,
    /// The client's close code and reason once it is gone.
    #[pyo3(get)]
    code: Option<u16>,
    #[pyo3(get)]
    reason: String,
    /// Messages (and their bytes) taken since the reactor was last told; told
    /// past [`REPORT_EVERY`] or `report_bytes`, so that a reactor never waits
    /// for a report while the app waits for it.
    taken: u32,
    taken_bytes: usize,
    report_bytes: usize,
    /// The ASGI `websocket.connect` event has been received.
    connected: bool,
}

#[pymethods]
impl Socket {
    /// The upgrade's answer: `101 Switching Protocols`, with the chosen
    /// subprotocol and extra headers (name and value pairs of bytes).
    #[pyo3(signature = (subprotocol=None, headers=None))]
    fn accept(
        slf: &Bound<'_, Self>,
        subprotocol: Option<String>,
        headers: Option<&Bound<'_, PyAny>>,
    ) -> PyResult<()> {
        let headers = match headers {
            Some(h) => header_pairs(h)?,
            None => Vec::new(),
        };
        let wire = {
            let mut this = slf.try_borrow_mut()?;
            this.accept_now(subprotocol.as_deref(), &headers)?;
            this.wire.clone()
        };
        wire.settle(slf.py());
        Ok(())
    }

    /// Before accepting: refuses the upgrade (403). Open: starts the close
    /// handshake with `code` and `reason`. After: nothing.
    #[pyo3(signature = (code=None, reason=None))]
    fn close(
        slf: &Bound<'_, Self>,
        code: Option<&Bound<'_, PyAny>>,
        reason: Option<&Bound<'_, PyAny>>,
    ) -> PyResult<()> {
        let py = slf.py();
        let code: u16 = match code {
            Some(code) => py.get_type::<PyInt>().call1((code,))?.extract()?,
            None => 1000,
        };
        let reason = match reason {
            Some(r) => r.str()?.to_str()?.to_owned(),
            None => String::new(),
        };
        let wire = {
            let mut this = slf.try_borrow_mut()?;
            match this.phase {
                Phase::Connecting => this.refuse(),
                Phase::Open => this.close_with(code, &reason),
                Phase::Closing | Phase::Closed => {}
            }
            this.wire.clone()
        };
        wire.settle(py);
        Ok(())
    }

    /// The next message (str or bytes), or `None` once the client is gone; an
    /// awaitable ([`Call`]).
    fn receive(slf: &Bound<'_, Self>) -> PyResult<Call> {
        Call::new(slf, Op::Receive { asgi: false })
    }

    /// Sends `message` (str: a text message, bytes-like: a binary one); an
    /// awaitable ([`Call`]) that waits while the client is behind.
    fn send(slf: &Bound<'_, Self>, message: Py<PyAny>) -> PyResult<Call> {
        Call::new(slf, Op::Send(message))
    }

    /// ASGI's `receive()`: `websocket.connect`, then `websocket.receive` per
    /// message, then `websocket.disconnect`.
    fn asgi_receive(slf: &Bound<'_, Self>) -> PyResult<Call> {
        Call::new(slf, Op::Receive { asgi: true })
    }

    /// ASGI's `send(message)`: `websocket.accept`, `websocket.send` or
    /// `websocket.close`.
    fn asgi_send(slf: &Bound<'_, Self>, message: Py<PyAny>) -> PyResult<Call> {
        Call::new(slf, Op::AsgiSend(message))
    }

    #[getter]
    fn subprotocols(&self) -> Vec<String> {
        self.subprotocols.clone()
    }

    /// `connecting`, `open`, `closing` (the app closed it) or `closed`.
    #[getter]
    fn state(&self) -> &'static str {
        match self.phase {
            Phase::Connecting => "connecting",
            Phase::Open => "open",
            Phase::Closing => "closing",
            Phase::Closed => "closed",
        }
    }

    fn __traverse__(&self, visit: PyVisit<'_>) -> Result<(), PyTraverseError> {
        for (message, _) in &self.queue {
            visit.call(message)?;
        }
        for wait in self.readers.iter().chain(&self.writers) {
            visit.call(wait)?;
        }
        Ok(())
    }

    fn __clear__(&mut self) {
        self.readers.clear();
        self.writers.clear();
    }
}

impl Socket {
    /// The 101 response, queued; errors for a socket not waiting for it and
    /// for headers that would break the head.
    fn accept_now(
        &mut self,
        subprotocol: Option<&str>,
        headers: &[(Vec<u8>, Vec<u8>)],
    ) -> PyResult<()> {
        if self.phase != Phase::Connecting {
            return Err(PyRuntimeError::new_err(
                "the WebSocket is already accepted or closed",
            ));
        }
        let mut out = Vec::with_capacity(160);
        out.extend_from_slice(b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n");
        out.extend_from_slice(b"Connection: Upgrade\r\nSec-WebSocket-Accept: ");
        out.extend_from_slice(self.accept_key.as_bytes());
        out.extend_from_slice(b"\r\n");
        if let Some(protocol) = subprotocol {
            header(&mut out, b"Sec-WebSocket-Protocol", protocol.as_bytes())?;
        }
        for (name, value) in headers {
            header(&mut out, name, value)?;
        }
        out.extend_from_slice(b"\r\n");
        self.phase = Phase::Open;
        self.wire.queue(self.target, ItemKind::Upgrade, out);
        Ok(())
    }

    /// Refuses the upgrade: 403, and the connection closes.
    fn refuse(&mut self) {
        self.phase = Phase::Closed;
        let mut out = bytes::BytesMut::new();
        response::simple(
            &mut out,
            403,
            response::TEXT_PLAIN,
            b"Forbidden",
            Persist::Close,
            false,
        );
        self.wire
            .queue(self.target, ItemKind::Response, out.to_vec());
    }

    fn close_with(&mut self, code: u16, reason: &str) {
        self.phase = Phase::Closing;
        // A close frame holds at most 123 bytes of reason.
        let mut reason = reason.as_bytes().to_vec();
        reason.truncate(123);
        while std::str::from_utf8(&reason).is_err() {
            reason.pop();
        }
        self.wire
            .queue(self.target, ItemKind::WsClose(code), reason);
    }

    /// The next message, counted as taken; `None` if none is queued.
    fn take(&mut self) -> Option<Py<PyAny>> {
        let (message, size) = self.queue.pop_front()?;
        self.taken += 1;
        self.taken_bytes += size;
        if self.taken >= REPORT_EVERY || self.taken_bytes >= self.report_bytes {
            let taken = std::mem::take(&mut self.taken);
            self.taken_bytes = 0;
            self.wire
                .queue(self.target, ItemKind::WsConsumed(taken), Vec::new());
        }
        Some(message)
    }

    /// What the client did (a message comes made: no Python object is made
    /// while the socket is borrowed); returns the waits it ends, woken by
    /// the caller once the socket is no longer borrowed.
    fn event(&mut self, kind: Event) -> Vec<Py<Wait>> {
        match kind {
            Event::Message(message, size) => {
                self.queue.push_back((message, size));
                std::mem::take(&mut self.readers)
            }
            Event::Closed { code, reason } => {
                self.phase = Phase::Closed;
                self.code = Some(code);
                self.reason = reason;
                self.ended()
            }
            Event::Written(n) => {
                self.budget += i64::try_from(n).unwrap_or(i64::MAX);
                if self.budget > 0 {
                    self.writable = true;
                    std::mem::take(&mut self.writers)
                } else {
                    Vec::new()
                }
            }
        }
    }

    /// Every wait, for a socket that is over: readers get `None`, writers
    /// `OSError`.
    fn ended(&mut self) -> Vec<Py<Wait>> {
        self.writable = true;
        let mut ended = std::mem::take(&mut self.readers);
        ended.append(&mut self.writers);
        ended
    }

    /// Keeps `wait` in `readers` or `writers`.
    fn keep_wait(&mut self, py: Python<'_>, wait: &Py<Wait>, reader: bool) {
        let list = if reader {
            &mut self.readers
        } else {
            &mut self.writers
        };
        // Waits given up (a receive() under wait_for that timed out) leave:
        // a loop of those must not grow the list until a message comes.
        list.retain(|w| w.bind(py).try_borrow().is_ok_and(|w| w.is_pending()));
        list.push(wait.clone_ref(py));
    }
}

/// A client's doing, as a [`Socket`] takes it.
enum Event {
    /// A message (str or bytes) and its size in bytes.
    Message(Py<PyAny>, usize),
    Closed {
        code: u16,
        reason: String,
    },
    Written(usize),
}

/// What a [`Call`] does.
enum Op {
    Receive {
        asgi: bool,
    },
    /// A message to send, not looked at yet.
    Send(Py<PyAny>),
    /// An ASGI message, not looked at yet.
    AsgiSend(Py<PyAny>),
    /// A send that waited for room before it went: it goes now.
    SendAfterWait(Py<PyAny>),
    /// A send that went and waits for room for the next.
    Sent,
}

/// What a look at the socket decided, acted on once it is no longer
/// borrowed (what makes Python objects runs then).
enum Seen {
    Return(Py<PyAny>),
    /// ASGI's `websocket.connect`.
    Connect,
    /// A message, to be made a `websocket.receive` event.
    Message(Py<PyAny>),
    /// The client is gone: `None`, or `websocket.disconnect`.
    Gone(Option<u16>, String),
    /// Nothing yet: wait (as a reader or a writer), then `Op`.
    Wait(bool, Op),
}

/// What `receive()` or `send()` returned: an awaitable that does its work
/// when it is first stepped, as a coroutine would (nothing happens if it is
/// never awaited, or cancelled first), and ends in that step unless it must
/// wait. It has `send`, `throw` and `close`, so that a task can be made of it.
#[pyclass(module = "pyrs", name = "WebSocketCall")]
pub struct Call {
    socket: Py<Socket>,
    wire: Arc<Wire>,
    /// `None` once it has ended.
    op: Option<Op>,
    /// What it waits on.
    wait: Option<Py<Wait>>,
}

impl Call {
    fn new(socket: &Bound<'_, Socket>, op: Op) -> PyResult<Call> {
        let wire = socket.try_borrow()?.wire.clone();
        Ok(Call {
            socket: socket.clone().unbind(),
            wire,
            op: Some(op),
            wait: None,
        })
    }

    fn step(&mut self, py: Python<'_>) -> PyResult<Step> {
        if let Some(wait) = &self.wait {
            if wait.bind(py).try_borrow().is_ok_and(|w| w.is_pending()) {
                // Stepped again before its wait ended: awaited twice at once.
                return Err(PyRuntimeError::new_err(
                    "this WebSocket call is already being awaited",
                ));
            }
            self.wait = None;
        }
        let op = self
            .op
            .take()
            .ok_or_else(|| PyRuntimeError::new_err("cannot reuse already awaited coroutine"))?;
        let stepped = self.act(py, op);
        self.wire.settle(py);
        let (step, next) = stepped?;
        if let Step::Yield(wait) = &step {
            self.wait = Some(wait.bind(py).cast::<Wait>()?.clone().unbind());
            self.op = next;
        }
        Ok(step)
    }

    /// One step of `op`; a yield comes with the op to resume with.
    fn act(&self, py: Python<'_>, op: Op) -> PyResult<(Step, Option<Op>)> {
        let socket = self.socket.bind(py);
        let seen = match op {
            Op::Receive { asgi } => {
                let mut this = socket.try_borrow_mut()?;
                if asgi && !this.connected {
                    this.connected = true;
                    Seen::Connect
                } else if let Some(message) = this.take() {
                    match asgi {
                        false => Seen::Return(message),
                        true => Seen::Message(message),
                    }
                } else if this.phase == Phase::Closed {
                    match asgi {
                        false => Seen::Return(py.None()),
                        true => Seen::Gone(this.code, this.reason.clone()),
                    }
                } else {
                    Seen::Wait(true, Op::Receive { asgi })
                }
            }
            Op::Send(message) => {
                let this = socket.try_borrow()?;
                if this.phase == Phase::Connecting {
                    return Err(PyRuntimeError::new_err("send before accept"));
                }
                if this.phase == Phase::Open && !this.writable {
                    Seen::Wait(false, Op::SendAfterWait(message))
                } else {
                    drop(this);
                    return self.send_now(py, message.bind(py));
                }
            }
            Op::SendAfterWait(message) => return self.send_now(py, message.bind(py)),
            Op::Sent => Seen::Return(py.None()),
            Op::AsgiSend(message) => return self.asgi_send(py, message.bind(py)),
        };
        let value = match seen {
            Seen::Return(value) => value,
            Seen::Connect => {
                let event = PyDict::new(py);
                event.set_item(intern!(py, "type"), intern!(py, "websocket.connect"))?;
                event.into_any().unbind()
            }
            Seen::Message(message) => received(py, message.bind(py))?,
            Seen::Gone(code, reason) => disconnected(py, code, &reason)?,
            Seen::Wait(reader, next) => {
                let wait = Wait::new(py, &self.wire.hub)?;
                socket.try_borrow_mut()?.keep_wait(py, &wait, reader);
                return Ok((Step::Yield(wait.into_any()), Some(next)));
            }
        };
        Ok((Step::Return(value), None))
    }

    /// Sends `message` unless the socket is closed; waits for room after it
    /// when the budget is spent.
    fn send_now(&self, py: Python<'_>, message: &Bound<'_, PyAny>) -> PyResult<(Step, Option<Op>)> {
        let socket = self.socket.bind(py);
        if socket.try_borrow()?.phase != Phase::Open {
            return Err(PyOSError::new_err("the WebSocket is closed"));
        }
        let (kind, bytes) = if let Ok(text) = message.cast::<PyString>() {
            (ItemKind::WsText, text.to_str()?.as_bytes().to_vec())
        } else if let Ok(data) = message.cast::<PyBytes>() {
            (ItemKind::WsBinary, data.as_bytes().to_vec())
        } else if message.is_instance_of::<PyByteArray>()
            || message.is_instance_of::<PyMemoryView>()
        {
            let data = py.get_type::<PyBytes>().call1((message,))?;
            let data = data.cast_into::<PyBytes>()?;
            (ItemKind::WsBinary, data.as_bytes().to_vec())
        } else {
            return Err(PyTypeError::new_err(format!(
                "a WebSocket sends str or bytes, not {}",
                errors::type_name(message)
            )));
        };
        let spent = {
            let mut this = socket.try_borrow_mut()?;
            if this.phase != Phase::Open {
                return Err(PyOSError::new_err("the WebSocket is closed"));
            }
            this.budget -= i64::try_from(bytes.len()).unwrap_or(i64::MAX);
            let target = this.target;
            this.wire.queue(target, kind, bytes);
            if this.budget <= 0 {
                this.writable = false;
            }
            this.budget <= 0
        };
        if spent {
            let wait = Wait::new(py, &self.wire.hub)?;
            socket.try_borrow_mut()?.keep_wait(py, &wait, false);
            return Ok((Step::Yield(wait.into_any()), Some(Op::Sent)));
        }
        Ok((Step::Return(py.None()), None))
    }

    /// An ASGI message: looked at before the socket is borrowed (a mapping
    /// other than a dict runs Python code).
    fn asgi_send(
        &self,
        py: Python<'_>,
        message: &Bound<'_, PyAny>,
    ) -> PyResult<(Step, Option<Op>)> {
        let kind = message.get_item(intern!(py, "type"))?;
        let socket = self.socket.bind(py);
        let none = || Ok((Step::Return(py.None()), None));
        let unexpected = || {
            let kind = kind.repr().map(|r| r.to_string()).unwrap_or_default();
            Err(PyValueError::new_err(format!(
                "unexpected ASGI message type {kind} for a websocket scope"
            )))
        };
        let Ok(name) = kind.cast::<PyString>() else {
            return unexpected();
        };
        match name.to_str()? {
            "websocket.accept" => {
                let subprotocol = get(message, intern!(py, "subprotocol"))?;
                let headers = get(message, intern!(py, "headers"))?;
                Socket::accept(
                    socket,
                    subprotocol.map(|s| s.extract()).transpose()?,
                    headers.as_ref(),
                )?;
                none()
            }
            "websocket.send" => {
                let payload = match get(message, intern!(py, "text"))? {
                    Some(text) => text,
                    None => get(message, intern!(py, "bytes"))?.ok_or_else(|| {
                        PyValueError::new_err("websocket.send needs text or bytes")
                    })?,
                };
                self.act(py, Op::Send(payload.unbind()))
            }
            "websocket.close" => {
                let code = get(message, intern!(py, "code"))?;
                let reason = get(message, intern!(py, "reason"))?;
                Socket::close(socket, code.as_ref(), reason.as_ref())?;
                none()
            }
            _ => unexpected(),
        }
    }

    fn give_up(&mut self, py: Python<'_>) {
        self.op = None;
        if let Some(wait) = self.wait.take() {
            Wait::abandon(wait.bind(py));
        }
    }
}

/// `key` of an ASGI message, `None` when missing or `None`.
fn get<'py>(
    message: &Bound<'py, PyAny>,
    key: &Bound<'py, PyString>,
) -> PyResult<Option<Bound<'py, PyAny>>> {
    let value = match message.cast::<PyDict>() {
        Ok(dict) => dict.get_item(key)?,
        Err(_) => Some(message.call_method1(intern!(message.py(), "get"), (key,))?),
    };
    Ok(value.filter(|v| !v.is_none()))
}

/// The `(name, value)` pairs of extra response headers: any iterable of
/// two-item iterables of bytes (ASGI's headers).
fn header_pairs(headers: &Bound<'_, PyAny>) -> PyResult<Vec<(Vec<u8>, Vec<u8>)>> {
    let mut pairs = Vec::new();
    for pair in headers.try_iter()? {
        let pair = pair?;
        let mut items = pair.try_iter()?;
        let (Some(name), Some(value), None) = (items.next(), items.next(), items.next()) else {
            return Err(PyValueError::new_err(
                "a header is a (name, value) pair of bytes",
            ));
        };
        let bytes = |item: PyResult<Bound<'_, PyAny>>| -> PyResult<Vec<u8>> {
            let item = item?;
            item.cast::<PyBytes>()
                .map(|b| b.as_bytes().to_vec())
                .map_err(|_| PyTypeError::new_err("header names and values are bytes"))
        };
        pairs.push((bytes(name)?, bytes(value)?));
    }
    Ok(pairs)
}

/// The `websocket.receive` event of a message.
fn received(py: Python<'_>, message: &Bound<'_, PyAny>) -> PyResult<Py<PyAny>> {
    let event = PyDict::new(py);
    event.set_item(intern!(py, "type"), intern!(py, "websocket.receive"))?;
    if message.is_exact_instance_of::<PyString>() {
        event.set_item(intern!(py, "text"), message)?;
    } else {
        event.set_item(intern!(py, "bytes"), message)?;
    }
    Ok(event.into_any().unbind())
}

/// The `websocket.disconnect` event of a socket whose client is gone.
fn disconnected(py: Python<'_>, code: Option<u16>, reason: &str) -> PyResult<Py<PyAny>> {
    let event = PyDict::new(py);
    event.set_item(intern!(py, "type"), intern!(py, "websocket.disconnect"))?;
    // 1005: the client sent no code (0 never comes from a reactor).
    let code = code.filter(|&c| c != 0).unwrap_or(1005);
    event.set_item(intern!(py, "code"), code)?;
    event.set_item(intern!(py, "reason"), reason)?;
    Ok(event.into_any().unbind())
}

#[pymethods]
impl Call {
    fn __await__(slf: PyRef<'_, Self>) -> PyRef<'_, Self> {
        slf
    }

    fn __next__(&mut self, py: Python<'_>) -> PyResult<Option<Py<PyAny>>> {
        self.step(py)?.next(py)
    }

    /// Steps on; what is sent in is not used (a wait's result is `None`).
    fn send(&mut self, py: Python<'_>, _value: &Bound<'_, PyAny>) -> PyResult<Py<PyAny>> {
        self.step(py)?.sent()
    }

    /// Raises what is thrown in (a cancel, say), ending the call and its wait.
    #[pyo3(signature = (*args))]
    fn throw(&mut self, py: Python<'_>, args: &Bound<'_, PyTuple>) -> PyResult<Py<PyAny>> {
        if self.op.is_none() {
            return Err(PyRuntimeError::new_err(
                "cannot reuse already awaited coroutine",
            ));
        }
        self.give_up(py);
        throw_unstarted(py, args)
    }

    fn close(&mut self, py: Python<'_>) {
        self.give_up(py);
    }

    fn __traverse__(&self, visit: PyVisit<'_>) -> Result<(), PyTraverseError> {
        visit.call(&self.socket)?;
        if let Some(wait) = &self.wait {
            visit.call(wait)?;
        }
        match &self.op {
            Some(Op::Send(m) | Op::AsgiSend(m) | Op::SendAfterWait(m)) => visit.call(m),
            _ => Ok(()),
        }
    }

    fn __clear__(&mut self) {
        self.op = None;
        self.wait = None;
    }
}

/// The module [`PROTOCOL`] makes, made once.
fn protocol(py: Python<'_>) -> PyResult<&Bound<'_, PyModule>> {
    static MODULE: pyo3::sync::PyOnceLock<Py<PyModule>> = pyo3::sync::PyOnceLock::new();
    MODULE
        .get_or_try_init(py, || {
            PyModule::from_code(py, PROTOCOL, c"pyrs_websocket.py", c"pyrs_websocket")
                .map(Bound::unbind)
        })
        .map(|m| m.bind(py))
}

/// Appends `name: value` after checking neither can break the head.
fn header(out: &mut Vec<u8>, name: &[u8], value: &[u8]) -> PyResult<()> {
    response::check_name(name)
        .and_then(|()| response::check_value(value))
        .map_err(|e| PyValueError::new_err(e.to_string()))?;
    out.extend_from_slice(name);
    out.extend_from_slice(b": ");
    out.extend_from_slice(value);
    out.extend_from_slice(b"\r\n");
    Ok(())
}

/// A WebSocket's connection: its reactor and its key there.
type ConnOn = (usize, ConnRef);

/// Every open socket of this worker.
pub struct WebSockets {
    /// `None` without an event loop (no socket can open then).
    wire: Option<Arc<Wire>>,
    websocket_class: Py<PyAny>,
    /// (reactor, connection) → its socket.
    sockets: Mutex<HashMap<ConnOn, Py<Socket>>>,
    /// Bytes a socket may send ahead of the client (`max_write_buffer`).
    budget: usize,
    /// `max_websocket_message`: how far ahead of its app the reactor reads.
    max_message: usize,
}

/// Which API a socket is for.
pub enum Api<'py> {
    /// An ASGI app: the task gets the socket's `asgi_receive` and `asgi_send`.
    Asgi,
    /// A handler: the task gets a `pyrs.WebSocket` around this request.
    Handler(Bound<'py, PyAny>),
}

impl WebSockets {
    /// `hub`: the event loop's (`None` without one).
    pub fn new(
        py: Python<'_>,
        hub: Option<Arc<Hub>>,
        budget: usize,
        max_message: usize,
    ) -> PyResult<WebSockets> {
        let module = protocol(py)?;
        Ok(WebSockets {
            wire: hub.map(|hub| {
                Arc::new(Wire {
                    out: Mutex::new(Vec::new()),
                    hub,
                    stop_due: AtomicBool::new(false),
                })
            }),
            websocket_class: module.getattr("WebSocket")?.unbind(),
            sockets: Mutex::new(HashMap::new()),
            budget,
            max_message,
        })
    }

    /// Registers the socket of upgrade request `job` and returns what the
    /// task runs with: the socket, and `(receive, send)` for ASGI or the
    /// `pyrs.WebSocket` for a handler.
    pub fn open<'py>(
        &self,
        py: Python<'py>,
        target: ReplyTo,
        job: &Job,
        fields: &[Field],
        api: Api<'py>,
    ) -> PyResult<(Bound<'py, PyAny>, Vec<Bound<'py, PyAny>>)> {
        let wire = self
            .wire
            .as_ref()
            .ok_or_else(|| PyRuntimeError::new_err("no event loop"))?;
        let data = &job.data;
        let mut key = None;
        let mut subprotocols = Vec::new();
        for f in fields {
            let name = f.name.get(data);
            if name.eq_ignore_ascii_case(b"sec-websocket-key") {
                key = Some(f.value.get(data));
            } else if name.eq_ignore_ascii_case(b"sec-websocket-protocol") {
                for p in f.value.get(data).split(|&b| b == b',') {
                    let p = String::from_utf8_lossy(p.trim_ascii()).into_owned();
                    if !p.is_empty() {
                        subprotocols.push(p);
                    }
                }
            }
        }
        let key = key.ok_or_else(|| PyValueError::new_err("no Sec-WebSocket-Key"))?;
        let socket = Bound::new(
            py,
            Socket {
                wire: wire.clone(),
                target,
                accept_key: crate::ws::accept_key(key),
                phase: Phase::Connecting,
                queue: VecDeque::new(),
                readers: Vec::new(),
                writers: Vec::new(),
                writable: true,
                budget: i64::try_from(self.budget).unwrap_or(i64::MAX),
                subprotocols,
                code: None,
                reason: String::new(),
                taken: 0,
                taken_bytes: 0,
                report_bytes: (self.max_message / 2).max(1),
                connected: false,
            },
        )?;
        if let Ok(mut sockets) = self.sockets.lock() {
            sockets.insert((target.reactor, target.conn), socket.clone().unbind());
        }
        let args = match api {
            Api::Asgi => vec![
                socket.getattr(intern!(py, "asgi_receive"))?,
                socket.getattr(intern!(py, "asgi_send"))?,
            ],
            Api::Handler(request) => {
                vec![self.websocket_class.bind(py).call1((&socket, request))?]
            }
        };
        Ok((socket.into_any(), args))
    }

    /// Hands what a client did to its socket; the tasks it wakes run at the
    /// worker's next [`Hub::run`].
    pub fn event(&self, py: Python<'_>, reactor: usize, event: WsEvent) {
        let socket = match self.sockets.lock() {
            Ok(mut sockets) => match &event.kind {
                WsKind::Closed { .. } => sockets.remove(&(reactor, event.conn)),
                _ => sockets.get(&(reactor, event.conn)).map(|s| s.clone_ref(py)),
            },
            Err(_) => None,
        };
        let Some(socket) = socket else {
            return;
        };
        // Python objects are made before the socket is borrowed.
        let kind = match event.kind {
            WsKind::Text(text) => {
                let size = text.len();
                let text = match std::str::from_utf8(&text) {
                    Ok(text) => PyString::new(py, text),
                    // The reactor validated it; never lose a message anyway.
                    Err(_) => PyString::new(py, &String::from_utf8_lossy(&text)),
                };
                Event::Message(text.into_any().unbind(), size)
            }
            WsKind::Binary(data) => {
                let size = data.len();
                Event::Message(PyBytes::new(py, &data).into_any().unbind(), size)
            }
            WsKind::Closed { code, reason } => Event::Closed { code, reason },
            WsKind::Written(n) => Event::Written(n),
        };
        let ended = match socket.bind(py).try_borrow_mut() {
            Ok(mut this) => this.event(kind),
            Err(e) => {
                errors::log(py, "a WebSocket event", &e.into());
                return;
            }
        };
        for wait in ended {
            Wait::wake(wait.bind(py));
        }
    }

    /// The socket's task ended: an upgrade never accepted is refused (403), an
    /// open socket is closed (1000, or 1011 when the app failed).
    pub fn finish(&self, py: Python<'_>, socket: &Bound<'_, PyAny>, failed: bool) {
        let Ok(socket) = socket.cast::<Socket>() else {
            return;
        };
        let (target, ended, wire) = match socket.try_borrow_mut() {
            Ok(mut this) => {
                match this.phase {
                    Phase::Connecting => this.refuse(),
                    Phase::Open => this.close_with(if failed { 1011 } else { 1000 }, ""),
                    Phase::Closing | Phase::Closed => {}
                }
                // Tasks the handler left waiting on the socket (a reader it
                // started, say) are told it is over: None, or OSError.
                this.phase = Phase::Closed;
                (this.target, this.ended(), this.wire.clone())
            }
            Err(_) => return,
        };
        wire.settle(py);
        for wait in ended {
            Wait::wake(wait.bind(py));
        }
        if let Ok(mut sockets) = self.sockets.lock() {
            let key = (target.reactor, target.conn);
            if sockets.get(&key).is_some_and(|s| s.is(socket)) {
                sockets.remove(&key);
            }
        }
    }

    /// Moves what the apps did into the reactors' outboxes.
    pub fn flush(&self, outboxes: &mut Outboxes) {
        let Some(wire) = &self.wire else {
            return;
        };
        let items = match wire.out.lock() {
            Ok(mut out) => std::mem::take(&mut *out),
            Err(_) => return,
        };
        for item in items {
            outboxes.push(item.target, item.kind, |out| {
                out.extend_from_slice(&item.bytes)
            });
        }
    }
}
