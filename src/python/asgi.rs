//! ASGI 3.0 applications, on the Python worker thread's event loop: a [`Job`]
//! becomes an `http` scope and a task running `app(scope, receive, send)`;
//! `receive()` yields the whole body in one `http.request` message (a body
//! past the upload threshold as it arrives instead, in `more_body` parts taken
//! from its upload, `body.rs`), then `http.disconnect` once the client has left. A response sent in one
//! `http.response.body` (no `more_body`) is collected and encoded into the
//! reactor's outbox when the task finishes, with an exact `Content-Length`.
//! One whose body has `more_body: True` streams (`stream.rs`): each part goes to
//! the client as it is sent, chunked unless the app gave a `Content-Length`
//! (close-delimited for HTTP/1.0); `send()` does not return while the
//! connection holds more than `max_write_buffer` unwritten bytes, and raises
//! `OSError` once the client is gone (spec 2.4). The `lifespan` protocol runs
//! at startup (before the server listens) and at stop.

use std::ffi::CStr;
use std::sync::Arc;

use bytes::BytesMut;
use pyo3::exceptions::{PyOSError, PyValueError};
use pyo3::intern;
use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyDict, PyList, PyString, PyTuple};
use pyrs_parser::{Field, Head};

use super::aio::Runtime;
use super::apps::{percent_decode, AppSetting};
use super::body::AsgiBody;
use super::encode;
use super::errors::{self, format_exception};
use super::outbox::{Outboxes, Pending, ReplyTo, TaskKind};
use super::stream::{Link, Stream};
use crate::dispatch::Job;
use crate::response::{self, Builder, Persist};

/// The protocol objects, simplest in Python: one `HttpCycle` per request (its
/// `receive` and `send`) and one `Lifespan` per app.
const PROTOCOL: &CStr = c"
import asyncio


class HttpCycle:
    \"\"\"receive() and send() of one http scope. A response sent in one body
    message is collected; one with more_body streams through `opener`.\"\"\"

    __slots__ = ('body', 'received', 'status', 'headers', 'chunks', 'done', 'disconnect',
                 'opener', 'stream', 'waiter', 'gone', 'upload', 'body_waiters')

    def __init__(self, body, opener, upload=None):
        self.body = body
        self.upload = upload
        self.body_waiters = []
        self.received = False
        self.status = None
        self.headers = None
        self.chunks = []
        self.done = False
        self.disconnect = None
        self.opener = opener
        self.stream = None
        self.waiter = None
        self.gone = False

    async def receive(self):
        if not self.received:
            if self.upload is not None:
                return await self._receive_part()
            self.received = True
            return {'type': 'http.request', 'body': self.body, 'more_body': False}
        if self.gone:
            return {'type': 'http.disconnect'}
        # The body has been read; the next event is the client leaving.
        if self.disconnect is None:
            self.disconnect = asyncio.get_running_loop().create_future()
        return await self.disconnect

    async def send(self, message):
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
            more = message.get('more_body', False)
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


class Lifespan:
    \"\"\"The lifespan protocol of one app: startup() before serving, shutdown() after.\"\"\"

    def __init__(self, app, state):
        self.app = app
        self.state = state
        self.queue = asyncio.Queue()
        self.started = asyncio.Event()
        self.stopped = asyncio.Event()
        self.failure = None
        self.unsupported = False
        self.task = None

    async def _main(self):
        scope = {'type': 'lifespan', 'asgi': {'version': '3.0', 'spec_version': '2.0'},
                 'state': self.state}
        try:
            await self.app(scope, self._receive, self._send)
        except BaseException as e:
            if not self.started.is_set():
                # An app without lifespan support raises on the scope type.
                self.unsupported = True
                self.error = e
        finally:
            self.started.set()
            self.stopped.set()

    async def _receive(self):
        return await self.queue.get()

    async def _send(self, message):
        kind = message['type']
        if kind == 'lifespan.startup.complete':
            self.started.set()
        elif kind == 'lifespan.startup.failed':
            self.failure = message.get('message', '') or 'lifespan.startup.failed'
            self.started.set()
        elif kind in ('lifespan.shutdown.complete', 'lifespan.shutdown.failed'):
            if kind == 'lifespan.shutdown.failed':
                self.failure = message.get('message', '') or 'lifespan.shutdown.failed'
            self.stopped.set()
        else:
            raise ValueError(f'unexpected ASGI message type {kind!r} for a lifespan scope')

    async def startup(self):
        self.task = asyncio.get_running_loop().create_task(self._main())
        await self.queue.put({'type': 'lifespan.startup'})
        await self.started.wait()
        return self.failure

    async def shutdown(self):
        if self.task is None or self.task.done():
            return None
        self.failure = None
        await self.queue.put({'type': 'lifespan.shutdown'})
        await self.stopped.wait()
        return self.failure
";

/// An ASGI application of one `modules` entry.
pub struct AsgiApp {
    app: Py<PyAny>,
    /// `module:attr`, for messages.
    name: String,
    /// The mount point (`/p` for `/p/*`), the scope's `root_path`.
    root_path: Py<PyString>,
    /// `scope["asgi"]`, shared by every scope.
    asgi: Py<PyDict>,
    /// `scope["server"]`.
    server: Py<PyTuple>,
    http_cycle: Py<PyAny>,
    lifespan: Py<PyAny>,
    /// What lifespan startup stored; each scope gets a shallow copy.
    state: Py<PyDict>,
}

impl AsgiApp {
    pub fn new(
        py: Python<'_>,
        app: Bound<'_, PyAny>,
        name: String,
        setting: &AppSetting<'_>,
    ) -> PyResult<AsgiApp> {
        let namespace = PyDict::new(py);
        py.run(PROTOCOL, Some(&namespace), None)?;
        let get = |name: &str| -> PyResult<Py<PyAny>> {
            namespace
                .get_item(name)?
                .map(Bound::unbind)
                .ok_or_else(|| PyValueError::new_err(format!("{name} missing")))
        };
        let asgi = PyDict::new(py);
        asgi.set_item("version", "3.0")?;
        // 2.4: once the client is gone send() raises OSError (Starlette relies
        // on it when it sees 2.4, instead of listening for http.disconnect).
        asgi.set_item("spec_version", "2.4")?;
        let root_path = setting.mount_prefix();
        // A Unix socket is `(path, None)`, as the spec has it.
        let server = match setting.server_name.strip_prefix("unix:") {
            Some(path) => PyTuple::new(
                py,
                [path.into_pyobject(py)?.into_any(), py.None().into_bound(py)],
            )?,
            None => PyTuple::new(
                py,
                [
                    setting.server_name.into_pyobject(py)?.into_any(),
                    setting.server_port.into_pyobject(py)?.into_any(),
                ],
            )?,
        };
        let lifespan = get("Lifespan")?;
        let state = PyDict::new(py);
        let lifespan = lifespan.bind(py).call1((&app, &state))?.unbind();
        Ok(AsgiApp {
            app: app.unbind(),
            name,
            root_path: PyString::new(py, root_path).unbind(),
            asgi: asgi.unbind(),
            server: server.unbind(),
            http_cycle: get("HttpCycle")?,
            lifespan,
            state: state.unbind(),
        })
    }

    /// Runs lifespan startup to its end; `Err` is the app's failure message. An
    /// app that does not speak lifespan (it raises on the scope) is served anyway.
    pub fn startup(&self, py: Python<'_>, rt: &Runtime) -> Result<(), String> {
        let outcome = self
            .lifespan
            .bind(py)
            .call_method0("startup")
            .and_then(|coro| rt.run_until_complete_value(py, coro));
        match outcome {
            Ok(failure) if failure.is_none() => {
                // Its task now waits for shutdown, which is no work of its own.
                if let Ok(task) = self.lifespan.bind(py).getattr("task") {
                    rt.park(py, &task);
                }
                if self
                    .lifespan
                    .bind(py)
                    .getattr("unsupported")
                    .and_then(|u| u.is_truthy())
                    .unwrap_or(false)
                {
                    eprintln!(
                        "pyrs: {}: the app does not support the ASGI lifespan protocol; \
                         serving without it",
                        self.name
                    );
                }
                Ok(())
            }
            Ok(failure) => Err(format!("lifespan startup failed: {failure}")),
            Err(e) => Err(format!(
                "lifespan startup failed:\n{}",
                format_exception(py, &e)
            )),
        }
    }

    /// Runs lifespan shutdown, bounded by `timeout` seconds; failures are logged.
    pub fn shutdown(&self, py: Python<'_>, rt: &Runtime, timeout: f64) {
        let outcome = self
            .lifespan
            .bind(py)
            .call_method0("shutdown")
            .and_then(|coro| {
                py.import("asyncio")?
                    .getattr("wait_for")?
                    .call1((coro, timeout))
            })
            .and_then(|waited| rt.run_until_complete_value(py, waited));
        match outcome {
            Ok(failure) if failure.is_none() => {}
            Ok(failure) => eprintln!("pyrs: {}: lifespan shutdown failed: {failure}", self.name),
            Err(e) => errors::log(py, &format!("{}: lifespan shutdown failed", self.name), &e),
        }
    }

    /// Starts the app's task for one request; it is answered by
    /// [`AsgiApp::finish`] when the task ends.
    #[allow(clippy::too_many_arguments)]
    pub fn call(
        &self,
        py: Python<'_>,
        route_index: usize,
        job: Job,
        fields: &Arc<[Field]>,
        target: ReplyTo,
        outboxes: &mut Outboxes,
        runtime: Option<&mut Runtime>,
    ) {
        let head = job.head;
        let fields = job.fields_in(fields);
        let started = runtime
            .ok_or_else(|| PyValueError::new_err("no event loop"))
            .and_then(|rt| {
                let scope = self.scope(py, &job, fields)?;
                let opener = Opener {
                    target,
                    head,
                    link: outboxes.link().clone(),
                };
                let upload = match &job.upload {
                    Some(u) => Bound::new(py, AsgiBody::new(u.clone()))?.into_any(),
                    None => py.None().into_bound(py),
                };
                let cycle = self.http_cycle.bind(py).call1((
                    PyBytes::new(py, &job.body),
                    opener,
                    upload,
                ))?;
                let coro = self.app.bind(py).call1((
                    scope,
                    cycle.getattr(intern!(py, "receive"))?,
                    cycle.getattr(intern!(py, "send"))?,
                ))?;
                let pending = Pending {
                    target,
                    context: cycle.clone().unbind(),
                    head,
                    route: route_index,
                    kind: TaskKind::Answer,
                };
                rt.spawn(py, &coro, pending)?;
                // Watched only once its task exists: a failure above leaves
                // nothing behind.
                if let Some(u) = &job.upload {
                    outboxes.link().watch_upload(u.clone(), cycle.unbind());
                }
                Ok(())
            });
        if let Err(e) = started {
            // Nobody will read the body: the reactor drains it (or closes).
            if let Some(u) = &job.upload {
                u.abandon();
            }
            self.log_failure(py, &job, &e);
            outboxes.answer(target, |out| encode::internal_error(out, &head));
        }
    }

    /// Encodes the response the finished task sent (a logged 500 when it sent
    /// none, or failed before finishing it).
    pub fn finish(
        &self,
        py: Python<'_>,
        pending: Pending,
        outcome: PyResult<Bound<'_, PyAny>>,
        outboxes: &mut Outboxes,
    ) {
        let cycle = pending.context.bind(py);
        let head = pending.head;
        let done = cycle
            .getattr(intern!(py, "done"))
            .and_then(|d| d.is_truthy())
            .unwrap_or(false);
        let what = || format!("error in ASGI app {}", self.name);
        // What the app did not read of a streamed body is dropped.
        if let Ok(upload) = cycle.getattr(intern!(py, "upload")) {
            if !upload.is_none() {
                outboxes.link().unwatch_upload(cycle);
                if let Err(e) = upload.call_method0(intern!(py, "close")) {
                    errors::log(py, &what(), &e);
                }
            }
        }
        let stream = cycle
            .getattr(intern!(py, "stream"))
            .ok()
            .filter(|s| !s.is_none());
        if let Some(stream) = stream {
            outboxes.link().unwatch(cycle);
            let gone = cycle
                .getattr(intern!(py, "gone"))
                .and_then(|g| g.is_truthy())
                .unwrap_or(false);
            match &outcome {
                // A client that left mid-stream is not the app's error.
                Err(_) if gone && !done => {}
                Err(e) => errors::log(py, &what(), e),
                Ok(_) if !done => eprintln!(
                    "pyrs: ASGI app {} returned before the end of its streamed response; \
                     the connection is closed",
                    self.name
                ),
                Ok(_) => {}
            }
            // Ends a response the app left unfinished (a no-op otherwise).
            if let Err(e) = stream.call_method0(intern!(py, "abort")) {
                errors::log(py, &what(), &e);
            }
            return;
        }
        if let Err(e) = &outcome {
            errors::log(py, &what(), e);
            if !done {
                outboxes.answer(pending.target, |out| encode::internal_error(out, &head));
                return;
            }
        }
        outboxes.answer(pending.target, |out| {
            let mark = out.len();
            if let Err(e) = encode_cycle(py, cycle, &head, out) {
                out.truncate(mark);
                errors::log(py, &what(), &e);
                encode::internal_error(out, &head);
            }
        });
    }

    /// The coroutine serving WebSocket upgrade `job`: `app(scope, receive,
    /// send)` with the `websocket` scope and the socket's `receive`/`send`.
    pub fn websocket_coro<'py>(
        &self,
        py: Python<'py>,
        job: &Job,
        fields: &[Field],
        receive_send: Vec<Bound<'py, PyAny>>,
    ) -> PyResult<Bound<'py, PyAny>> {
        let scope = self.scope(py, job, fields)?;
        scope.set_item(intern!(py, "type"), intern!(py, "websocket"))?;
        let scheme = if job.tls.is_some() {
            intern!(py, "wss")
        } else {
            intern!(py, "ws")
        };
        scope.set_item(intern!(py, "scheme"), scheme)?;
        scope.del_item(intern!(py, "method"))?;
        let subprotocols = PyList::empty(py);
        for f in fields {
            if f.name
                .get(&job.data)
                .eq_ignore_ascii_case(b"sec-websocket-protocol")
            {
                for p in f.value.get(&job.data).split(|&b| b == b',') {
                    let p = String::from_utf8_lossy(p.trim_ascii()).into_owned();
                    if !p.is_empty() {
                        subprotocols.append(p)?;
                    }
                }
            }
        }
        scope.set_item(intern!(py, "subprotocols"), subprotocols)?;
        let mut args = receive_send.into_iter();
        let (Some(receive), Some(send)) = (args.next(), args.next()) else {
            return Err(PyValueError::new_err(
                "a websocket cycle without receive/send",
            ));
        };
        self.app.bind(py).call1((scope, receive, send))
    }

    /// `module:attr`, for messages.
    pub fn name(&self) -> &str {
        &self.name
    }

    fn log_failure(&self, py: Python<'_>, job: &Job, e: &PyErr) {
        let what = format!("error in ASGI app {} for {}", self.name, job.describe());
        errors::log(py, &what, e);
    }

    /// The `http` scope of one request (ASGI 3.0, HTTP spec 2.4).
    fn scope<'py>(
        &self,
        py: Python<'py>,
        job: &Job,
        fields: &[Field],
    ) -> PyResult<Bound<'py, PyDict>> {
        let data = &job.data;
        let head = &job.head;
        let scope = PyDict::new(py);
        scope.set_item(intern!(py, "type"), intern!(py, "http"))?;
        scope.set_item(intern!(py, "asgi"), self.asgi.bind(py))?;
        scope.set_item(
            intern!(py, "http_version"),
            if head.minor_version == 0 {
                intern!(py, "1.0")
            } else {
                intern!(py, "1.1")
            },
        )?;
        let method = head.method.get(data);
        scope.set_item(intern!(py, "method"), String::from_utf8_lossy(method))?;
        let scheme = if job.tls.is_some() {
            intern!(py, "https")
        } else {
            intern!(py, "http")
        };
        scope.set_item(intern!(py, "scheme"), scheme)?;
        let path = head.path_bytes(data);
        scope.set_item(
            intern!(py, "path"),
            String::from_utf8_lossy(&percent_decode(path)),
        )?;
        scope.set_item(intern!(py, "raw_path"), PyBytes::new(py, path))?;
        scope.set_item(
            intern!(py, "query_string"),
            PyBytes::new(py, head.query.get(data)),
        )?;
        scope.set_item(intern!(py, "root_path"), self.root_path.bind(py))?;
        let headers = PyList::empty(py);
        for field in fields {
            let name = field.name.get(data).to_ascii_lowercase();
            let pair = PyTuple::new(
                py,
                [
                    PyBytes::new(py, &name),
                    PyBytes::new(py, field.value.get(data)),
                ],
            )?;
            headers.append(pair)?;
        }
        scope.set_item(intern!(py, "headers"), headers)?;
        // Over a Unix socket there is no client address: `None`, as the spec allows.
        match job.remote {
            Some(remote) => {
                let client = PyTuple::new(
                    py,
                    [
                        remote.ip().to_string().into_pyobject(py)?.into_any(),
                        remote.port().into_pyobject(py)?.into_any(),
                    ],
                )?;
                scope.set_item(intern!(py, "client"), client)?;
            }
            None => scope.set_item(intern!(py, "client"), py.None())?,
        }
        scope.set_item(intern!(py, "server"), self.server.bind(py))?;
        if let Some(tls) = &job.tls {
            // The ASGI TLS extension (the server's certificate is not offered).
            let info = PyDict::new(py);
            info.set_item(intern!(py, "server_cert"), py.None())?;
            info.set_item(
                intern!(py, "client_cert_chain"),
                PyList::new(py, &tls.client_chain)?,
            )?;
            info.set_item(intern!(py, "client_cert_name"), tls.client_cert.as_deref())?;
            info.set_item(intern!(py, "client_cert_error"), py.None())?;
            info.set_item(intern!(py, "tls_version"), tls.version)?;
            info.set_item(intern!(py, "cipher_suite"), tls.cipher_suite)?;
            let extensions = PyDict::new(py);
            extensions.set_item(intern!(py, "tls"), info)?;
            scope.set_item(intern!(py, "extensions"), extensions)?;
        }
        scope.set_item(intern!(py, "state"), self.state.bind(py).copy()?)?;
        Ok(scope)
    }
}

/// The status line and headers an `HttpCycle` was sent, laid out.
fn cycle_head<'a>(
    py: Python<'_>,
    cycle: &Bound<'_, PyAny>,
    out: &'a mut BytesMut,
) -> PyResult<Builder<'a>> {
    let status = cycle.getattr(intern!(py, "status"))?;
    if status.is_none() {
        return Err(PyValueError::new_err(
            "the application returned without sending http.response.start",
        ));
    }
    let status: i64 = status.extract()?;
    let status = super::module::valid_status(status)?;
    let mut builder = Builder::new(out, status);
    let headers = cycle.getattr(intern!(py, "headers"))?;
    for pair in headers.try_iter()? {
        let pair = pair?;
        let (name, value): (Vec<u8>, Vec<u8>) = pair.extract().map_err(|_| {
            PyValueError::new_err("ASGI response headers must be (bytes, bytes) pairs")
        })?;
        builder.header(&name, &value)?;
    }
    Ok(builder)
}

/// The response an `HttpCycle` collected, encoded.
fn encode_cycle(
    py: Python<'_>,
    cycle: &Bound<'_, PyAny>,
    head: &Head,
    out: &mut BytesMut,
) -> PyResult<()> {
    let builder = cycle_head(py, cycle, out)?;
    let chunks = cycle.getattr(intern!(py, "chunks"))?;
    let chunks = chunks.cast::<PyList>()?;
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

/// What an `HttpCycle` needs to start streaming its response (`open`): where
/// the response goes, and the request's head (framing, HEAD, keep-alive).
#[pyclass(module = "pyrs", name = "AsgiStreamOpener", frozen)]
struct Opener {
    target: ReplyTo,
    head: Head,
    link: Arc<Link>,
}

#[pymethods]
impl Opener {
    /// Lays out the head `cycle` was sent and returns the response's stream;
    /// the head goes out with the first part.
    fn open(&self, cycle: &Bound<'_, PyAny>) -> PyResult<AsgiStream> {
        let py = cycle.py();
        let head = &self.head;
        let mut out = BytesMut::new();
        let framing = cycle_head(py, cycle, &mut out)?.finish_streamed(
            None,
            Persist::of(head),
            response::head_only(head),
            head.minor_version == 0,
        )?;
        let flow = self.link.flow(true);
        let stream = Stream::new(&self.link, self.target, out, framing, flow.clone())
            .ok_or_else(|| PyOSError::new_err("the client disconnected"))?;
        self.link.watch(flow, cycle.clone().unbind());
        Ok(AsgiStream { stream })
    }
}

/// The streamed response of one `HttpCycle`.
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
