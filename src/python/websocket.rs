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
use std::sync::{Arc, Mutex};

use pyo3::exceptions::{PyOSError, PyRuntimeError, PyStopIteration, PyTypeError, PyValueError};
use pyo3::intern;
use pyo3::prelude::*;
use pyo3::types::{PyByteArray, PyBytes, PyDict, PyMemoryView, PyModule, PyString, PyTuple};
use pyo3::{PyTraverseError, PyVisit};
use pyrs_parser::Field;

use super::errors;
use super::outbox::{Outboxes, ReplyTo};
use super::wait::{Hub, Wait};
use crate::dispatch::{ConnRef, ItemKind, Job, WsEvent, WsKind};
use crate::response::{self, Persist};

/// The handler API's `pyrs.WebSocket`, simplest in Python, over a [`Socket`].
const PROTOCOL: &CStr = c"
async def _unstarted():
    pass


def _throw(*args):
    # What throw() into a coroutine that never ran raises: the exception as
    # given (CPython's own handling of the arguments).
    return _unstarted().throw(*args)


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
}

impl Wire {
    /// Queues `kind` for `target`; the first item since the last flush stops
    /// the loop if it runs, so that it leaves at once.
    fn queue(&self, py: Python<'_>, target: ReplyTo, kind: ItemKind, bytes: Vec<u8>) {
        let first = match self.out.lock() {
            Ok(mut out) => {
                out.push(Outgoing {
                    target,
                    kind,
                    bytes,
                });
                out.len() == 1
            }
            Err(_) => return,
        };
        if first {
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
    #[pyo3(signature = (subprotocol=None, headers=Vec::new()))]
    fn accept(
        &mut self,
        py: Python<'_>,
        subprotocol: Option<&str>,
        headers: Vec<(Vec<u8>, Vec<u8>)>,
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
        for (name, value) in &headers {
            header(&mut out, name, value)?;
        }
        out.extend_from_slice(b"\r\n");
        self.phase = Phase::Open;
        self.wire.queue(py, self.target, ItemKind::Upgrade, out);
        Ok(())
    }

    /// Before accepting: refuses the upgrade (403). Open: starts the close
    /// handshake with `code` and `reason`. After: nothing.
    #[pyo3(signature = (code=1000, reason=None))]
    fn close(
        &mut self,
        py: Python<'_>,
        code: u16,
        reason: Option<&Bound<'_, PyAny>>,
    ) -> PyResult<()> {
        match self.phase {
            Phase::Connecting => self.refuse(py),
            Phase::Open => {
                let reason = match reason {
                    Some(r) => r.str()?.to_str()?.to_owned(),
                    None => String::new(),
                };
                self.close_with(py, code, &reason);
            }
            Phase::Closing | Phase::Closed => {}
        }
        Ok(())
    }

    /// The next message (str or bytes), or `None` once the client is gone; an
    /// awaitable ([`Call`]).
    fn receive(slf: &Bound<'_, Self>) -> Call {
        Call::new(slf, Op::Receive { asgi: false })
    }

    /// Sends `message` (str: a text message, bytes-like: a binary one); an
    /// awaitable ([`Call`]) that waits while the client is behind.
    fn send(slf: &Bound<'_, Self>, message: Py<PyAny>) -> Call {
        Call::new(slf, Op::Send(message))
    }

    /// ASGI's `receive()`: `websocket.connect`, then `websocket.receive` per
    /// message, then `websocket.disconnect`.
    fn asgi_receive(slf: &Bound<'_, Self>) -> Call {
        Call::new(slf, Op::Receive { asgi: true })
    }

    /// ASGI's `send(message)`: `websocket.accept`, `websocket.send` or
    /// `websocket.close`.
    fn asgi_send(slf: &Bound<'_, Self>, message: Py<PyAny>) -> Call {
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
    /// Refuses the upgrade: 403, and the connection closes.
    fn refuse(&mut self, py: Python<'_>) {
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
            .queue(py, self.target, ItemKind::Response, out.to_vec());
    }

    fn close_with(&mut self, py: Python<'_>, code: u16, reason: &str) {
        self.phase = Phase::Closing;
        // A close frame holds at most 123 bytes of reason.
        let mut reason = reason.as_bytes().to_vec();
        reason.truncate(123);
        while std::str::from_utf8(&reason).is_err() {
            reason.pop();
        }
        self.wire
            .queue(py, self.target, ItemKind::WsClose(code), reason);
    }

    /// The next message, counted as taken; `None` if none is queued.
    fn take(&mut self, py: Python<'_>) -> Option<Py<PyAny>> {
        let (message, size) = self.queue.pop_front()?;
        self.taken += 1;
        self.taken_bytes += size;
        if self.taken >= REPORT_EVERY || self.taken_bytes >= self.report_bytes {
            let taken = std::mem::take(&mut self.taken);
            self.taken_bytes = 0;
            self.wire
                .queue(py, self.target, ItemKind::WsConsumed(taken), Vec::new());
        }
        Some(message)
    }

    /// What the client did; returns the waits it ends (woken by the caller,
    /// once the socket is no longer borrowed).
    fn event(&mut self, py: Python<'_>, kind: WsKind) -> Vec<Py<Wait>> {
        match kind {
            WsKind::Text(text) => {
                let size = text.len();
                let text = match std::str::from_utf8(&text) {
                    Ok(text) => PyString::new(py, text),
                    // The reactor validated it; never lose a message anyway.
                    Err(_) => PyString::new(py, &String::from_utf8_lossy(&text)),
                };
                self.queue.push_back((text.into_any().unbind(), size));
                std::mem::take(&mut self.readers)
            }
            WsKind::Binary(data) => {
                let size = data.len();
                let data = PyBytes::new(py, &data);
                self.queue.push_back((data.into_any().unbind(), size));
                std::mem::take(&mut self.readers)
            }
            WsKind::Closed { code, reason } => {
                self.phase = Phase::Closed;
                self.code = Some(code);
                self.reason = reason;
                self.writable = true;
                let mut ended = std::mem::take(&mut self.readers);
                ended.append(&mut self.writers);
                ended
            }
            WsKind::Written(n) => {
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

    /// A wait for this socket, kept in `readers` or `writers`.
    fn wait(&mut self, py: Python<'_>, reader: bool) -> PyResult<Py<Wait>> {
        let wait = Wait::new(py, &self.wire.hub)?;
        let list = if reader {
            &mut self.readers
        } else {
            &mut self.writers
        };
        // Waits given up (a receive() under wait_for that timed out) leave:
        // a loop of those must not grow the list until a message comes.
        list.retain(|w| w.bind(py).try_borrow().is_ok_and(|w| w.is_pending()));
        list.push(wait.clone_ref(py));
        Ok(wait)
    }
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

/// How one step of a [`Call`] ended.
enum Step {
    Yield(Py<Wait>),
    Return(Py<PyAny>),
}

/// What `receive()` or `send()` returned: an awaitable that does its work
/// when it is first stepped, as a coroutine would (nothing happens if it is
/// never awaited, or cancelled first), and ends in that step unless it must
/// wait. It has `send`, `throw` and `close`, so that a task can be made of it.
#[pyclass(module = "pyrs", name = "WebSocketCall")]
pub struct Call {
    socket: Py<Socket>,
    /// `None` once it has ended.
    op: Option<Op>,
    /// What it waits on.
    wait: Option<Py<Wait>>,
}

impl Call {
    fn new(socket: &Bound<'_, Socket>, op: Op) -> Call {
        Call {
            socket: socket.clone().unbind(),
            op: Some(op),
            wait: None,
        }
    }

    fn step(&mut self, py: Python<'_>) -> PyResult<Step> {
        if let Some(wait) = self.wait.take() {
            // Woken, or stepped before that (then it looks again).
            Wait::abandon(wait.bind(py));
        }
        let op = self
            .op
            .take()
            .ok_or_else(|| PyRuntimeError::new_err("cannot reuse already awaited coroutine"))?;
        let (step, next) = self.act(py, op)?;
        if let Step::Yield(wait) = &step {
            self.wait = Some(wait.clone_ref(py));
            self.op = next;
        }
        Ok(step)
    }

    /// One step of `op`; a yield comes with the op to resume with.
    fn act(&self, py: Python<'_>, op: Op) -> PyResult<(Step, Option<Op>)> {
        let socket = self.socket.bind(py);
        match op {
            Op::Receive { asgi } => {
                let mut this = socket.try_borrow_mut()?;
                if asgi && !this.connected {
                    this.connected = true;
                    let event = PyDict::new(py);
                    event.set_item(intern!(py, "type"), intern!(py, "websocket.connect"))?;
                    return Ok((Step::Return(event.into_any().unbind()), None));
                }
                if let Some(message) = this.take(py) {
                    let value = match asgi {
                        false => message,
                        true => received(py, message.bind(py))?,
                    };
                    return Ok((Step::Return(value), None));
                }
                if this.phase == Phase::Closed {
                    let value = match asgi {
                        false => py.None(),
                        true => disconnected(py, &this)?,
                    };
                    return Ok((Step::Return(value), None));
                }
                let wait = this.wait(py, true)?;
                Ok((Step::Yield(wait), Some(Op::Receive { asgi })))
            }
            Op::Send(message) => {
                let mut this = socket.try_borrow_mut()?;
                if this.phase == Phase::Connecting {
                    return Err(PyRuntimeError::new_err("send before accept"));
                }
                if this.phase == Phase::Open && !this.writable {
                    let wait = this.wait(py, false)?;
                    return Ok((Step::Yield(wait), Some(Op::SendAfterWait(message))));
                }
                drop(this);
                self.send_now(py, message)
            }
            Op::SendAfterWait(message) => self.send_now(py, message),
            Op::Sent => Ok((Step::Return(py.None()), None)),
            Op::AsgiSend(message) => self.asgi_send(py, message.bind(py)),
        }
    }

    /// Sends `message` unless the socket is closed; waits for room after it
    /// when the budget is spent.
    fn send_now(&self, py: Python<'_>, message: Py<PyAny>) -> PyResult<(Step, Option<Op>)> {
        let message = message.bind(py);
        let mut this = self.socket.bind(py).try_borrow_mut()?;
        if this.phase != Phase::Open {
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
        this.budget -= i64::try_from(bytes.len()).unwrap_or(i64::MAX);
        let target = this.target;
        this.wire.queue(py, target, kind, bytes);
        if this.budget <= 0 {
            this.writable = false;
            let wait = this.wait(py, false)?;
            return Ok((Step::Yield(wait), Some(Op::Sent)));
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
        let kind: String = kind.extract()?;
        let none = || Ok((Step::Return(py.None()), None));
        match kind.as_str() {
            "websocket.accept" => {
                let subprotocol = get(message, intern!(py, "subprotocol"))?;
                let subprotocol: Option<String> = match subprotocol {
                    Some(s) => Some(s.extract()?),
                    None => None,
                };
                let headers: Vec<(Vec<u8>, Vec<u8>)> = match get(message, intern!(py, "headers"))? {
                    Some(h) if h.is_truthy()? => h.extract()?,
                    _ => Vec::new(),
                };
                let mut this = self.socket.bind(py).try_borrow_mut()?;
                this.accept(py, subprotocol.as_deref(), headers)?;
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
                let code: u16 = match get(message, intern!(py, "code"))? {
                    Some(code) => code.extract()?,
                    None => 1000,
                };
                let reason = match get(message, intern!(py, "reason"))? {
                    Some(r) if r.is_truthy()? => Some(r),
                    _ => None,
                };
                let mut this = self.socket.bind(py).try_borrow_mut()?;
                this.close(py, code, reason.as_ref())?;
                none()
            }
            other => Err(PyValueError::new_err(format!(
                "unexpected ASGI message type {other:?} for a websocket scope"
            ))),
        }
    }

    /// What a step gives Python: a value yielded, or the end's value raised
    /// as StopIteration (`None` for a plain `__next__` end).
    fn yielded(step: Step) -> PyResult<Py<PyAny>> {
        match step {
            Step::Yield(wait) => Ok(wait.into_any()),
            Step::Return(value) => Err(PyStopIteration::new_err((value,))),
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
fn disconnected(py: Python<'_>, socket: &Socket) -> PyResult<Py<PyAny>> {
    let event = PyDict::new(py);
    event.set_item(intern!(py, "type"), intern!(py, "websocket.disconnect"))?;
    event.set_item(intern!(py, "code"), socket.code.unwrap_or(1005))?;
    event.set_item(intern!(py, "reason"), &socket.reason)?;
    Ok(event.into_any().unbind())
}

#[pymethods]
impl Call {
    fn __await__(slf: PyRef<'_, Self>) -> PyRef<'_, Self> {
        slf
    }

    fn __next__(&mut self, py: Python<'_>) -> PyResult<Option<Py<PyAny>>> {
        match self.step(py)? {
            Step::Yield(wait) => Ok(Some(wait.into_any())),
            // Ended with None: no exception needed.
            Step::Return(value) if value.is_none(py) => Ok(None),
            Step::Return(value) => Err(PyStopIteration::new_err((value,))),
        }
    }

    /// Steps on; what is sent in is not used (a wait's result is `None`).
    fn send(&mut self, py: Python<'_>, _value: &Bound<'_, PyAny>) -> PyResult<Py<PyAny>> {
        let step = self.step(py)?;
        Call::yielded(step)
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
        let module = protocol(py)?;
        module
            .getattr(intern!(py, "_throw"))?
            .call1(args)
            .map(Bound::unbind)
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
        let ended = match socket.bind(py).try_borrow_mut() {
            Ok(mut this) => this.event(py, event.kind),
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
        let target = match socket.try_borrow_mut() {
            Ok(mut this) => {
                match this.phase {
                    Phase::Connecting => this.refuse(py),
                    Phase::Open => this.close_with(py, if failed { 1011 } else { 1000 }, ""),
                    Phase::Closing | Phase::Closed => {}
                }
                this.target
            }
            Err(_) => return,
        };
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
