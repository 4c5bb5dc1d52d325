//! WebSockets on the Python worker thread: the `websocket` scope of ASGI apps
//! and `pyrs.WebSocket` for `"websocket": true` handler entries, over the
//! framing the reactor does (`ws.rs`).
//!
//! An upgrade request becomes a task running the app (or the handler) with a
//! Python `Socket`: what the client sends arrives in batches as
//! [`WsEvent`]s and is queued on the socket; what the app does (accept, send,
//! close) goes through the [`Wire`], a Rust object the socket calls, which
//! collects it until the worker moves it into the reactors' outboxes (the
//! socket stops the event loop on the first item, so that it leaves at once).
//! Accepting writes the `101` response (the `Sec-WebSocket-Accept` computed
//! here); closing before accepting, or returning without accepting, answers 403.
//! Sends are paced: a socket may have `max_write_buffer` bytes sent and not yet
//! written to the client; past that its sends wait for the reactor's
//! [`WsKind::Written`] report, so a client that does not read holds the app
//! back instead of filling the server's memory. A client that left makes sends
//! raise `OSError`.

use std::collections::HashMap;
use std::ffi::CStr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;

use pyo3::exceptions::PyValueError;
use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyModule, PyString};
use pyrs_parser::Field;

use super::errors;
use super::outbox::{Outboxes, ReplyTo};
use crate::dispatch::{ConnRef, ItemKind, Job, WsEvent, WsKind};
use crate::response::{self, Persist};

/// The Python side of one connection, simplest in Python.
const PROTOCOL: &CStr = c"
import asyncio
from collections import deque

# Messages taken by the app before the reactor is told (it stops reading a
# client 32 messages, or max_websocket_message bytes, ahead of its app).
REPORT_EVERY = 8


class Socket:
    \"\"\"One WebSocket between the reactor and the app (the state both APIs share).\"\"\"

    __slots__ = ('wire', 'id', 'state', 'queue', 'waiters', 'writable', 'budget', 'subprotocols',
                 'code', 'reason', 'taken', 'taken_bytes', 'report_bytes', 'loop')

    def __init__(self, wire, id, subprotocols, budget, max_message):
        # The worker's loop (set as its thread's loop; not running yet while
        # the worker opens the socket): looked up once, not per message.
        self.loop = asyncio.get_event_loop()
        self.wire = wire
        self.id = id
        self.budget = budget
        # 'connecting', 'open', 'closing' (we closed), 'closed' (the client is gone)
        self.state = 'connecting'
        # Messages not taken yet (None: the client is gone), and the futures
        # next() waits on while there are none: lighter than an asyncio.Queue.
        self.queue = deque()
        self.waiters = []
        self.writable = asyncio.Event()
        self.writable.set()
        self.subprotocols = subprotocols
        self.code = None
        self.reason = ''
        # Messages (and at least their bytes) taken by the app since the
        # reactor was last told; told past REPORT_EVERY or report_bytes, so
        # that a reactor never waits for a report while the app waits for it.
        self.taken = 0
        self.taken_bytes = 0
        self.report_bytes = max(1, max_message // 2)

    def _put(self, item):
        self.queue.append(item)
        if self.waiters:
            for waiter in self.waiters:
                if not waiter.done():
                    waiter.set_result(None)
            self.waiters.clear()

    def _event(self, kind, data, code, reason):
        if kind == 'message':
            self._put(data)
        elif kind == 'closed':
            self.state = 'closed'
            self.code = code
            self.reason = reason
            self._put(None)
            self.writable.set()
        elif kind == 'written':
            self.budget += code
            if self.budget > 0:
                self.writable.set()

    def _sent(self, first):
        if first:
            # The worker moves it to the reactor as soon as the loop yields.
            self.loop.stop()

    def accept(self, subprotocol=None, headers=()):
        if self.state != 'connecting':
            raise RuntimeError('the WebSocket is already accepted or closed')
        self.state = 'open'
        self._sent(self.wire.accept(self.id, subprotocol, list(headers)))

    async def send(self, message):
        if self.state == 'connecting':
            raise RuntimeError('send before accept')
        if self.state == 'open' and not self.writable.is_set():
            await self.writable.wait()
        if self.state != 'open':
            raise OSError('the WebSocket is closed')
        if isinstance(message, str):
            first = self.wire.text(self.id, message)
        elif isinstance(message, (bytes, bytearray, memoryview)):
            message = bytes(message)
            first = self.wire.binary(self.id, message)
        else:
            raise TypeError(f'a WebSocket sends str or bytes, not {type(message).__name__}')
        if first:
            self.loop.stop()
        self.budget -= len(message)
        if self.budget <= 0:
            self.writable.clear()
            await self.writable.wait()

    def close(self, code=1000, reason=''):
        if self.state == 'connecting':
            self.state = 'closed'
            self._sent(self.wire.refuse(self.id))
        elif self.state == 'open':
            self.state = 'closing'
            self._sent(self.wire.close(self.id, int(code), str(reason)))

    async def next(self):
        \"\"\"The next message (str or bytes), or None once the client is gone.\"\"\"
        queue = self.queue
        while not queue:
            if self.state == 'closed':
                return None
            # Each reader waits on its own future (a shared one would be
            # cancelled for all with one of them); the next item wakes all.
            waiter = self.loop.create_future()
            self.waiters.append(waiter)
            await waiter
        message = queue.popleft()
        if message is None:
            # Later calls see the closed state.
            return None
        self.taken += 1
        # A str's bytes are at most 4 per character: never under-count.
        self.taken_bytes += len(message) if isinstance(message, bytes) else 4 * len(message)
        if self.taken >= REPORT_EVERY or self.taken_bytes >= self.report_bytes:
            first = self.wire.consumed(self.id, self.taken)
            self.taken = 0
            self.taken_bytes = 0
            self._sent(first)
        return message


class WsCycle:
    \"\"\"receive() and send() of one ASGI websocket scope.\"\"\"

    __slots__ = ('socket', 'connected')

    def __init__(self, socket):
        self.socket = socket
        self.connected = False

    async def receive(self):
        if not self.connected:
            self.connected = True
            return {'type': 'websocket.connect'}
        message = await self.socket.next()
        if message is None:
            return {'type': 'websocket.disconnect', 'code': self.socket.code or 1005,
                    'reason': self.socket.reason}
        if isinstance(message, str):
            return {'type': 'websocket.receive', 'text': message}
        return {'type': 'websocket.receive', 'bytes': message}

    async def send(self, message):
        kind = message['type']
        if kind == 'websocket.accept':
            self.socket.accept(message.get('subprotocol'), message.get('headers') or [])
        elif kind == 'websocket.send':
            text, data = message.get('text'), message.get('bytes')
            if text is not None:
                await self.socket.send(text)
            elif data is not None:
                await self.socket.send(data)
            else:
                raise ValueError('websocket.send needs text or bytes')
        elif kind == 'websocket.close':
            self.socket.close(message.get('code', 1000), message.get('reason') or '')
        else:
            raise ValueError(f'unexpected ASGI message type {kind!r} for a websocket scope')


class WebSocket:
    \"\"\"The WebSocket a `\\\"websocket\\\": true` handler gets.\"\"\"

    def __init__(self, socket, request):
        self._socket = socket
        self._request = request
        # The socket's own coroutines, without one more frame per message
        # (the methods below say what they do).
        self.receive = socket.next
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

    async def receive(self):
        \"\"\"The next message, str or bytes; None once the connection is closed.\"\"\"
        return await self._socket.next()

    async def send(self, message):
        await self._socket.send(message)

    async def close(self, code=1000, reason=''):
        self._socket.close(code, reason)

    def __repr__(self):
        return f'<pyrs.WebSocket {self._request.path}>'
";

/// What an app did with a socket, waiting to go to the reactor.
struct Outgoing {
    target: ReplyTo,
    kind: ItemKind,
    bytes: Vec<u8>,
}

/// A socket's connection and its upgrade request's key.
struct Peer {
    target: ReplyTo,
    /// `Sec-WebSocket-Accept` for the 101 response.
    accept: String,
}

/// The Rust object sockets call to act; see the module note.
#[pyclass(frozen, module = "pyrs")]
pub struct Wire {
    peers: Mutex<HashMap<u64, Peer>>,
    out: Mutex<Vec<Outgoing>>,
}

impl Wire {
    /// Queues `kind` for socket `id`; true if it is the first item queued.
    fn queue(&self, id: u64, kind: ItemKind, bytes: Vec<u8>) -> bool {
        let target = match self.peers.lock() {
            Ok(peers) => match peers.get(&id) {
                Some(peer) => peer.target,
                None => return false,
            },
            Err(_) => return false,
        };
        let Ok(mut out) = self.out.lock() else {
            return false;
        };
        out.push(Outgoing {
            target,
            kind,
            bytes,
        });
        out.len() == 1
    }
}

#[pymethods]
impl Wire {
    /// The `101 Switching Protocols` response, with the chosen subprotocol and
    /// the app's extra headers.
    #[pyo3(signature = (id, subprotocol, headers))]
    fn accept(
        &self,
        id: u64,
        subprotocol: Option<&str>,
        headers: Vec<(Vec<u8>, Vec<u8>)>,
    ) -> PyResult<bool> {
        let accept = match self.peers.lock() {
            Ok(peers) => peers.get(&id).map(|p| p.accept.clone()),
            Err(_) => None,
        };
        let Some(accept) = accept else {
            return Ok(false);
        };
        let mut out = Vec::with_capacity(160);
        out.extend_from_slice(b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n");
        out.extend_from_slice(b"Connection: Upgrade\r\nSec-WebSocket-Accept: ");
        out.extend_from_slice(accept.as_bytes());
        out.extend_from_slice(b"\r\n");
        if let Some(protocol) = subprotocol {
            header(&mut out, b"Sec-WebSocket-Protocol", protocol.as_bytes())?;
        }
        for (name, value) in &headers {
            header(&mut out, name, value)?;
        }
        out.extend_from_slice(b"\r\n");
        Ok(self.queue(id, ItemKind::Upgrade, out))
    }

    /// Refuses the upgrade: 403, and the connection closes.
    fn refuse(&self, id: u64) -> bool {
        let mut out = bytes::BytesMut::new();
        response::simple(
            &mut out,
            403,
            response::TEXT_PLAIN,
            b"Forbidden",
            Persist::Close,
            false,
        );
        self.queue(id, ItemKind::Response, out.to_vec())
    }

    fn text(&self, id: u64, text: &str) -> bool {
        self.queue(id, ItemKind::WsText, text.as_bytes().to_vec())
    }

    fn binary(&self, id: u64, data: &[u8]) -> bool {
        self.queue(id, ItemKind::WsBinary, data.to_vec())
    }

    fn consumed(&self, id: u64, messages: u32) -> bool {
        self.queue(id, ItemKind::WsConsumed(messages), Vec::new())
    }

    fn close(&self, id: u64, code: u16, reason: &str) -> bool {
        // A close frame holds at most 123 bytes of reason.
        let mut reason = reason.as_bytes().to_vec();
        reason.truncate(123);
        while std::str::from_utf8(&reason).is_err() {
            reason.pop();
        }
        self.queue(id, ItemKind::WsClose(code), reason)
    }
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
    wire: Py<Wire>,
    socket_class: Py<PyAny>,
    cycle_class: Py<PyAny>,
    websocket_class: Py<PyAny>,
    /// (reactor, connection) → (id, the Python `Socket`).
    sockets: Mutex<HashMap<ConnOn, (u64, Py<PyAny>)>>,
    next_id: AtomicU64,
    /// Bytes a socket may send ahead of the client (`max_write_buffer`).
    budget: usize,
    /// `max_websocket_message`: how far ahead of its app the reactor reads.
    max_message: usize,
}

/// Which API a socket is for.
pub enum Api<'py> {
    /// An ASGI app: the task gets `(receive, send)` of a `WsCycle`.
    Asgi,
    /// A handler: the task gets a `pyrs.WebSocket` around this request.
    Handler(Bound<'py, PyAny>),
}

impl WebSockets {
    pub fn new(py: Python<'_>, budget: usize, max_message: usize) -> PyResult<WebSockets> {
        let module = PyModule::from_code(py, PROTOCOL, c"pyrs_websocket.py", c"pyrs_websocket")?;
        let wire = Py::new(
            py,
            Wire {
                peers: Mutex::new(HashMap::new()),
                out: Mutex::new(Vec::new()),
            },
        )?;
        Ok(WebSockets {
            wire,
            socket_class: module.getattr("Socket")?.unbind(),
            cycle_class: module.getattr("WsCycle")?.unbind(),
            websocket_class: module.getattr("WebSocket")?.unbind(),
            sockets: Mutex::new(HashMap::new()),
            next_id: AtomicU64::new(1),
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
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        if let Ok(mut peers) = self.wire.get().peers.lock() {
            let accept = crate::ws::accept_key(key);
            peers.insert(id, Peer { target, accept });
        }
        let socket = self.socket_class.bind(py).call1((
            self.wire.bind(py),
            id,
            subprotocols,
            self.budget,
            self.max_message,
        ))?;
        if let Ok(mut sockets) = self.sockets.lock() {
            sockets.insert((target.reactor, target.conn), (id, socket.clone().unbind()));
        }
        let args = match api {
            Api::Asgi => {
                let cycle = self.cycle_class.bind(py).call1((&socket,))?;
                vec![cycle.getattr("receive")?, cycle.getattr("send")?]
            }
            Api::Handler(request) => {
                vec![self.websocket_class.bind(py).call1((&socket, request))?]
            }
        };
        Ok((socket, args))
    }

    /// Hands what a client did to its socket.
    pub fn event(&self, py: Python<'_>, reactor: usize, event: WsEvent) {
        let socket = match self.sockets.lock() {
            Ok(mut sockets) => match &event.kind {
                WsKind::Closed { .. } => sockets.remove(&(reactor, event.conn)),
                _ => sockets
                    .get(&(reactor, event.conn))
                    .map(|(id, s)| (*id, s.clone_ref(py))),
            },
            Err(_) => None,
        };
        let Some((_, socket)) = socket else {
            return;
        };
        let socket = socket.bind(py);
        let none = || py.None().into_bound(py);
        let outcome = match event.kind {
            WsKind::Text(text) => {
                let text = PyString::new(py, &String::from_utf8_lossy(&text)).into_any();
                socket.call_method1("_event", ("message", text, 0, ""))
            }
            WsKind::Binary(data) => {
                let data = PyBytes::new(py, &data).into_any();
                socket.call_method1("_event", ("message", data, 0, ""))
            }
            WsKind::Closed { code, reason } => {
                socket.call_method1("_event", ("closed", none(), code, reason))
            }
            WsKind::Written(n) => socket.call_method1("_event", ("written", none(), n, "")),
        };
        if let Err(e) = outcome {
            errors::log(py, "a WebSocket event", &e);
        }
    }

    /// The socket's task ended: an upgrade never accepted is refused (403), an
    /// open socket is closed (1000, or 1011 when the app failed).
    pub fn finish(&self, py: Python<'_>, socket: &Bound<'_, PyAny>, failed: bool) {
        let state: String = socket
            .getattr("state")
            .and_then(|s| s.extract())
            .unwrap_or_default();
        let id: u64 = socket.getattr("id").and_then(|i| i.extract()).unwrap_or(0);
        let wire = self.wire.get();
        match state.as_str() {
            "connecting" => {
                wire.refuse(id);
            }
            "open" => {
                let code = if failed { 1011 } else { 1000 };
                wire.close(id, code, "");
            }
            _ => {}
        }
        if let Ok(mut peers) = wire.peers.lock() {
            if let Some(peer) = peers.remove(&id) {
                if let Ok(mut sockets) = self.sockets.lock() {
                    sockets.remove(&(peer.target.reactor, peer.target.conn));
                }
            }
        }
        let _ = py;
    }

    /// Moves what the apps did into the reactors' outboxes.
    pub fn flush(&self, outboxes: &mut Outboxes) {
        let items = match self.wire.get().out.lock() {
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
