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

use pyo3::exceptions::PyValueError;
use pyo3::intern;
use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyDict, PyList, PyString, PyTuple};
use pyrs_parser::Field;

use super::aio::Runtime;
use super::apps::{percent_decode, AppSetting, IpText};
use super::body::AsgiBody;
use super::cycle::{self, encode_cycle, Cycle, Opener};
use super::encode;
use super::errors::{self, format_exception};
use super::outbox::{Outboxes, Pending, ReplyTo, TaskKind};
use crate::dispatch::Job;

/// The lifespan protocol, simplest in Python: one `Lifespan` per app (the
/// `receive` and `send` of a request are `cycle.rs`).
const PROTOCOL: &CStr = c"
import asyncio


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
    http_cycle: Py<PyAny>,
    lifespan: Py<PyAny>,
    /// What lifespan startup stored; each scope gets a shallow copy.
    state: Py<PyDict>,
    /// An `http` scope with every key and the entries all requests share:
    /// copied (a copy of the key table) and filled in per request.
    template: Py<PyDict>,
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
        namespace.set_item("HttpCycleBase", py.get_type::<Cycle>())?;
        py.run(cycle::PROTOCOL, Some(&namespace), None)?;
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
        let root_path = PyString::new(py, root_path);
        let template = PyDict::new(py);
        for (key, value) in [
            ("type", PyString::new(py, "http").into_any()),
            ("asgi", asgi.clone().into_any()),
            ("http_version", py.None().into_bound(py)),
            ("method", py.None().into_bound(py)),
            ("scheme", PyString::new(py, "http").into_any()),
            ("path", py.None().into_bound(py)),
            ("raw_path", py.None().into_bound(py)),
            ("query_string", py.None().into_bound(py)),
            ("root_path", root_path.clone().into_any()),
            ("headers", py.None().into_bound(py)),
            ("client", py.None().into_bound(py)),
            ("server", server.clone().into_any()),
            ("state", py.None().into_bound(py)),
        ] {
            template.set_item(PyString::intern(py, key), value)?;
        }
        let lifespan = get("Lifespan")?;
        let state = PyDict::new(py);
        let lifespan = lifespan.bind(py).call1((&app, &state))?.unbind();
        Ok(AsgiApp {
            app: app.unbind(),
            name,
            template: template.unbind(),
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
                let opener = Opener::new(target, head, outboxes.link().clone());
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
        let head = pending.head;
        let what = || format!("error in ASGI app {}", self.name);
        let cycle = match pending.context.bind(py).cast::<Cycle>() {
            Ok(cycle) => cycle.clone(),
            Err(e) => {
                errors::log(py, &what(), &e.into());
                outboxes.answer(pending.target, |out| encode::internal_error(out, &head));
                return;
            }
        };
        let (done, gone, upload, stream) = {
            let c = cycle.borrow();
            (c.is_done(), c.is_gone(), c.upload(py), c.stream(py))
        };
        // What the app did not read of a streamed body is dropped.
        if let Some(upload) = upload {
            outboxes.link().unwatch_upload(cycle.as_any());
            if let Err(e) = upload.call_method0(intern!(py, "close")) {
                errors::log(py, &what(), &e);
            }
        }
        if let Some(stream) = stream {
            outboxes.link().unwatch(cycle.as_any());
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
            if let Err(e) = encode_cycle(py, &cycle.borrow(), &head, out) {
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
        // The constant entries (type, asgi, scheme, root_path, server) come
        // with the copy; the rest replace its placeholders.
        let scope = self.template.bind(py).copy()?;
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
        if job.tls.is_some() {
            scope.set_item(intern!(py, "scheme"), intern!(py, "https"))?;
        }
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
        let headers = PyList::empty(py);
        for field in fields {
            let name = field.name.get(data);
            let name = PyBytes::new_with(py, name.len(), |buf| {
                for (lower, b) in buf.iter_mut().zip(name) {
                    *lower = b.to_ascii_lowercase();
                }
                Ok(())
            })?;
            let pair = PyTuple::new(py, [name, PyBytes::new(py, field.value.get(data))])?;
            headers.append(pair)?;
        }
        scope.set_item(intern!(py, "headers"), headers)?;
        // Over a Unix socket there is no client address: `None`, as the spec
        // allows (the template's placeholder).
        if let Some(remote) = job.remote {
            let client = PyTuple::new(
                py,
                [
                    PyString::new(py, IpText::new(remote.ip()).as_str()).into_any(),
                    remote.port().into_pyobject(py)?.into_any(),
                ],
            )?;
            scope.set_item(intern!(py, "client"), client)?;
        }
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
