//! The Python worker: the only thread that touches Python. It starts the
//! interpreter, imports the project's modules and creates one handler instance per
//! `modules` entry (reporting any failure as a [`ConfigError`] before the server
//! listens), then serves: it waits for batches without holding the GIL, takes the
//! GIL once per round, drains every queued batch under that one hold, calls the
//! handlers, encodes each result into a complete HTTP response, and sends each
//! reactor one [`Reply`] per round before waking it.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use bytes::BytesMut;
use crossbeam_channel::{Receiver, Sender};
use pyo3::exceptions::PyTypeError;
use pyo3::prelude::*;
use pyo3::sync::PyOnceLock;
use pyo3::types::{PyByteArray, PyBytes, PyDict, PyList, PyMemoryView, PyString, PyTuple};
use pyrs_parser::{Head, Method};

use crate::config::{Config, ConfigError};
use crate::date;
use crate::dispatch::{Batch, Job, Reply, ReplyItem};
use crate::reactor::Handle;
use crate::request::{pyrs_module, valid_status, Request, Response};
use crate::response::{self, Persist};

/// Most requests handled under one GIL hold before replies go out; bounds the
/// latency a long pipeline adds to other connections' responses.
const MAX_BATCH: usize = 4096;

/// A resolved handler: the bound method of this entry's instance.
struct Route {
    handler: Py<PyAny>,
    /// `module.Class.handler`, for error messages.
    name: String,
}

/// The worker thread's body. Reports startup success or failure on `ready`, then
/// waits for the reactors' handles on `wiring` and serves `jobs` until every
/// reactor has hung up.
pub fn run(
    config: Arc<Config>,
    ready: Sender<Result<(), ConfigError>>,
    wiring: Receiver<Vec<Handle>>,
    jobs: Receiver<Batch>,
    queued: Arc<AtomicUsize>,
) {
    pyo3::append_to_inittab!(pyrs_module);
    Python::initialize();
    let routes = match Python::attach(|py| load(py, &config)) {
        Ok(routes) => {
            let _ = ready.send(Ok(()));
            routes
        }
        Err(e) => {
            let _ = ready.send(Err(e));
            return;
        }
    };
    let Ok(handles) = wiring.recv() else {
        return;
    };
    Python::attach(|py| serve(py, &routes, &handles, &jobs, &queued));
}

/// Prepares `sys` and resolves every handler, in `modules` order.
fn load(py: Python<'_>, config: &Config) -> Result<Vec<Route>, ConfigError> {
    prepare_sys(py, config).map_err(|e| ConfigError::Invalid {
        file: config.file.clone(),
        location: None,
        key: "modules".to_owned(),
        message: format!("cannot prepare Python: {}", format_exception(py, &e)),
    })?;
    let import = py
        .import("importlib")
        .and_then(|m| m.getattr("import_module"))
        .map_err(|e| ConfigError::at(config, 0, "module", format_exception(py, &e)))?;
    let mut routes = Vec::with_capacity(config.modules.len());
    for (i, entry) in config.modules.iter().enumerate() {
        let module = import.call1((entry.module.as_str(),)).map_err(|e| {
            ConfigError::at(
                config,
                i,
                "module",
                format!(
                    "cannot import module {:?}:\n{}",
                    entry.module,
                    format_exception(py, &e)
                ),
            )
        })?;
        let class = module.getattr(entry.class.as_str()).map_err(|_| {
            ConfigError::at(
                config,
                i,
                "class",
                format!("module {:?} has no class {:?}", entry.module, entry.class),
            )
        })?;
        let instance = class.call0().map_err(|e| {
            ConfigError::at(
                config,
                i,
                "class",
                format!(
                    "creating {}.{}() failed:\n{}",
                    entry.module,
                    entry.class,
                    format_exception(py, &e)
                ),
            )
        })?;
        let handler = instance.getattr(entry.handler.as_str()).map_err(|_| {
            ConfigError::at(
                config,
                i,
                "handler",
                format!("class {:?} has no method {:?}", entry.class, entry.handler),
            )
        })?;
        if !handler.is_callable() {
            return Err(ConfigError::at(
                config,
                i,
                "handler",
                format!(
                    "{}.{}.{} is not callable",
                    entry.module, entry.class, entry.handler
                ),
            ));
        }
        routes.push(Route {
            handler: handler.unbind(),
            name: format!("{}.{}.{}", entry.module, entry.class, entry.handler),
        });
        println!("Added route {}", entry.path);
    }
    Ok(routes)
}

/// Puts the project folder first on `sys.path`, adds an active virtualenv's
/// site-packages, and makes `print()` line-buffered so handler output shows up
/// promptly even when stdout is a pipe.
fn prepare_sys(py: Python<'_>, config: &Config) -> PyResult<()> {
    let sys = py.import("sys")?;
    let path = sys.getattr("path")?.cast_into::<PyList>()?;
    path.insert(0, config.project_dir.to_string_lossy().as_ref())?;
    sys.setattr(
        "argv",
        PyList::new(py, [config.file.to_string_lossy().as_ref()])?,
    )?;
    if let Some(venv) = std::env::var_os("VIRTUAL_ENV") {
        let version = py.version_info();
        let site_packages = std::path::Path::new(&venv)
            .join("lib")
            .join(format!("python{}.{}", version.major, version.minor))
            .join("site-packages");
        py.import("site")?
            .call_method1("addsitedir", (site_packages.to_string_lossy().as_ref(),))?;
    }
    for stream in ["stdout", "stderr"] {
        let s = sys.getattr(stream)?;
        if !s.is_none() {
            let kwargs = PyDict::new(py);
            kwargs.set_item("line_buffering", true)?;
            // Streams that cannot be reconfigured (replaced by the user) stay as
            // they are.
            let _ = s.call_method("reconfigure", (), Some(&kwargs));
        }
    }
    Ok(())
}

/// `traceback.format_exception(e)` joined, or the exception's str if that fails.
fn format_exception(py: Python<'_>, e: &PyErr) -> String {
    let formatted = py
        .import("traceback")
        .and_then(|tb| tb.call_method1("format_exception", (e.value(py),)))
        .and_then(|lines| {
            PyString::new(py, "")
                .call_method1("join", (lines,))?
                .extract::<String>()
        });
    match formatted {
        Ok(s) => s.trim_end().to_owned(),
        Err(_) => e.to_string(),
    }
}

/// One reply under construction per reactor.
struct Outbox {
    out: BytesMut,
    items: Vec<ReplyItem>,
}

fn serve(
    py: Python<'_>,
    routes: &[Route],
    handles: &[Handle],
    jobs: &Receiver<Batch>,
    queued: &AtomicUsize,
) {
    let mut outboxes: Vec<Outbox> = handles
        .iter()
        .map(|_| Outbox {
            out: BytesMut::with_capacity(64 * 1024),
            items: Vec::new(),
        })
        .collect();
    let http_error = py
        .import("pyrs")
        .and_then(|m| m.getattr("HTTPError"))
        .map(Bound::unbind)
        .ok();
    let ctx = Ctx {
        routes,
        http_error: http_error.as_ref().map(|e| e.bind(py).clone()),
    };
    while let Ok(first) = py.detach(|| jobs.recv()) {
        date::refresh();
        let mut handled = handle_batch(py, &ctx, first, &mut outboxes);
        while handled < MAX_BATCH {
            match jobs.try_recv() {
                Ok(batch) => handled += handle_batch(py, &ctx, batch, &mut outboxes),
                Err(_) => break,
            }
        }
        queued.fetch_sub(handled, Ordering::Relaxed);
        for (outbox, handle) in outboxes.iter_mut().zip(handles) {
            if outbox.items.is_empty() {
                continue;
            }
            let reply = Reply {
                out: outbox.out.split().freeze(),
                items: std::mem::take(&mut outbox.items),
            };
            if outbox.out.capacity() < 16 * 1024 {
                outbox.out.reserve(64 * 1024);
            }
            // A reactor that is gone has no connections left to answer.
            if handle.replies.send(reply).is_ok() {
                let _ = handle.waker.wake();
            }
        }
    }
    // Handlers' buffered output must not be lost at exit.
    let _ = py
        .import("sys")
        .and_then(|s| s.getattr("stdout"))
        .and_then(|o| o.call_method0("flush"));
}

struct Ctx<'a, 'py> {
    routes: &'a [Route],
    http_error: Option<Bound<'py, PyAny>>,
}

fn handle_batch(py: Python<'_>, ctx: &Ctx<'_, '_>, batch: Batch, outboxes: &mut [Outbox]) -> usize {
    let n = batch.jobs.len();
    let Some(outbox) = outboxes.get_mut(batch.reactor) else {
        return n;
    };
    for job in batch.jobs {
        let (conn, seq) = (job.conn, job.seq);
        handle_job(py, ctx, job, &mut outbox.out);
        outbox.items.push(ReplyItem {
            conn,
            seq,
            end: outbox.out.len(),
        });
    }
    n
}

/// Calls the handler for one request and appends its encoded response to `out`.
fn handle_job(py: Python<'_>, ctx: &Ctx<'_, '_>, job: Job, out: &mut BytesMut) {
    let head = job.head;
    let Some(route) = ctx.routes.get(job.route as usize) else {
        error_500(out, &head);
        return;
    };
    let request = match Bound::new(py, Request::new(job.data, job.head, job.body, job.remote)) {
        Ok(r) => r,
        Err(e) => {
            eprintln!("pyrs: cannot create a request for {}:", route.name);
            e.display(py);
            error_500(out, &head);
            return;
        }
    };
    let mark = out.len();
    let outcome = match route.handler.bind(py).call1((&request,)) {
        Ok(result) => encode_result(py, &result, &request, &head, out),
        Err(e) => match &ctx.http_error {
            Some(cls) if e.is_instance(py, cls) => encode_http_error(py, &e, &head, out),
            _ => Err(e),
        },
    };
    if let Err(e) = outcome {
        out.truncate(mark);
        report(py, route, &head, &e);
        error_500(out, &head);
    }
}

/// Logs a handler failure with its traceback on stderr.
fn report(py: Python<'_>, route: &Route, head: &Head, e: &PyErr) {
    eprintln!(
        "pyrs: error in handler {} ({} {}):",
        route.name,
        method_name(head),
        if head.minor_version == 0 {
            "HTTP/1.0"
        } else {
            "HTTP/1.1"
        }
    );
    e.display(py);
}

fn method_name(head: &Head) -> &'static str {
    match head.method_kind {
        Method::Get => "GET",
        Method::Head => "HEAD",
        Method::Post => "POST",
        Method::Put => "PUT",
        Method::Delete => "DELETE",
        Method::Options => "OPTIONS",
        Method::Patch => "PATCH",
        Method::Other => "request",
    }
}

fn persist(head: &Head) -> Persist {
    Persist::new(head.keep_alive, head.minor_version)
}

fn head_only(head: &Head) -> bool {
    head.method_kind == Method::Head
}

fn error_500(out: &mut BytesMut, head: &Head) {
    response::simple(
        out,
        500,
        response::TEXT_PLAIN,
        b"Internal Server Error",
        persist(head),
        head_only(head),
    );
}

static JSON_DUMPS: PyOnceLock<Py<PyAny>> = PyOnceLock::new();

/// `json.dumps` with compact separators and UTF-8 output.
fn json_dumps<'py>(py: Python<'py>, obj: &Bound<'py, PyAny>) -> PyResult<Bound<'py, PyAny>> {
    let dumps = JSON_DUMPS.get_or_try_init(py, || -> PyResult<Py<PyAny>> {
        let kwargs = PyDict::new(py);
        kwargs.set_item("ensure_ascii", false)?;
        kwargs.set_item("separators", PyTuple::new(py, [",", ":"])?)?;
        let partial = py.import("functools")?.getattr("partial")?;
        let dumps = py.import("json")?.getattr("dumps")?;
        Ok(partial.call((dumps,), Some(&kwargs))?.unbind())
    })?;
    dumps.bind(py).call1((obj,))
}

/// A response body taken from a Python value, with its default content type.
enum BodyValue<'py> {
    Text(Bound<'py, PyString>),
    Bytes(Bound<'py, PyBytes>),
    Owned(Vec<u8>),
    Empty,
}

impl BodyValue<'_> {
    fn bytes(&self) -> PyResult<&[u8]> {
        Ok(match self {
            BodyValue::Text(s) => s.to_str()?.as_bytes(),
            BodyValue::Bytes(b) => b.as_bytes(),
            BodyValue::Owned(v) => v,
            BodyValue::Empty => b"",
        })
    }
}

/// Converts a body value; `None` when its type is not one a body can be.
fn body_value<'py>(
    py: Python<'py>,
    value: &Bound<'py, PyAny>,
) -> PyResult<Option<(BodyValue<'py>, &'static [u8])>> {
    if let Ok(s) = value.cast::<PyString>() {
        return Ok(Some((BodyValue::Text(s.clone()), response::TEXT_HTML)));
    }
    if let Ok(b) = value.cast::<PyBytes>() {
        return Ok(Some((BodyValue::Bytes(b.clone()), response::OCTET_STREAM)));
    }
    if let Ok(b) = value.cast::<PyByteArray>() {
        return Ok(Some((BodyValue::Owned(b.to_vec()), response::OCTET_STREAM)));
    }
    if value.is_instance_of::<PyMemoryView>() {
        let bytes = py
            .get_type::<PyBytes>()
            .call1((value,))?
            .cast_into::<PyBytes>()?;
        return Ok(Some((BodyValue::Bytes(bytes), response::OCTET_STREAM)));
    }
    if value.is_instance_of::<PyDict>() || value.is_instance_of::<PyList>() {
        let text = json_dumps(py, value)?.cast_into::<PyString>()?;
        return Ok(Some((BodyValue::Text(text), response::JSON)));
    }
    if value.is_none() {
        return Ok(Some((BodyValue::Empty, response::TEXT_PLAIN)));
    }
    Ok(None)
}

/// Encodes what a handler returned.
fn encode_result(
    py: Python<'_>,
    result: &Bound<'_, PyAny>,
    request: &Bound<'_, Request>,
    head: &Head,
    out: &mut BytesMut,
) -> PyResult<()> {
    // Fast path: a str.
    if let Ok(s) = result.cast::<PyString>() {
        let body = s.to_str()?.as_bytes();
        response::simple(
            out,
            200,
            response::TEXT_HTML,
            body,
            persist(head),
            head_only(head),
        );
        return Ok(());
    }
    if result.is(request) {
        // `return request` echoes the body (the original pyrs echo example).
        let body = request.get().body_bytes();
        response::simple(
            out,
            200,
            response::OCTET_STREAM,
            body,
            persist(head),
            head_only(head),
        );
        return Ok(());
    }
    if let Ok(resp) = result.cast::<Response>() {
        let r = resp.get();
        return encode_full(
            py,
            r.status,
            r.body.bind(py),
            r.headers.bind(py),
            r.content_type.as_deref(),
            head,
            out,
        );
    }
    if result.is_none() {
        response::simple(
            out,
            204,
            response::TEXT_PLAIN,
            b"",
            persist(head),
            head_only(head),
        );
        return Ok(());
    }
    match body_value(py, result)? {
        Some((body, ct)) => {
            response::simple(out, 200, ct, body.bytes()?, persist(head), head_only(head));
            Ok(())
        }
        None => Err(PyTypeError::new_err(format!(
            "handler returned {}, expected str, bytes, bytearray, memoryview, dict, list, \
             None, the request, or pyrs.Response",
            type_name(result)
        ))),
    }
}

fn type_name(v: &Bound<'_, PyAny>) -> String {
    v.get_type()
        .name()
        .map(|n| n.to_string())
        .unwrap_or_else(|_| "an object".to_owned())
}

/// Encodes `raise pyrs.HTTPError(status, body, headers, content_type)`.
fn encode_http_error(py: Python<'_>, e: &PyErr, head: &Head, out: &mut BytesMut) -> PyResult<()> {
    let v = e.value(py);
    let status = valid_status(v.getattr("status")?.extract::<i64>()?)?;
    let body = v.getattr("body")?;
    let headers = v.getattr("headers")?;
    let content_type: Option<String> = v.getattr("content_type")?.extract()?;
    if body.is_none() {
        let reason = response::reason(status);
        let text = PyString::new(py, if reason.is_empty() { "Error" } else { reason });
        let ct = content_type
            .as_deref()
            .or(Some("text/plain; charset=utf-8"));
        return encode_full(py, status, text.as_any(), &headers, ct, head, out);
    }
    encode_full(
        py,
        status,
        &body,
        &headers,
        content_type.as_deref(),
        head,
        out,
    )
}

/// Encodes a response with explicit status, body, headers and content type.
fn encode_full(
    py: Python<'_>,
    status: u16,
    body: &Bound<'_, PyAny>,
    headers: &Bound<'_, PyAny>,
    content_type: Option<&str>,
    head: &Head,
    out: &mut BytesMut,
) -> PyResult<()> {
    let Some((value, default_ct)) = body_value(py, body)? else {
        return Err(PyTypeError::new_err(format!(
            "response body is {}, expected str, bytes, bytearray, memoryview, dict, list or None",
            type_name(body)
        )));
    };
    let body_bytes = value.bytes()?;
    let mut fields: Vec<(Vec<u8>, Vec<u8>)> = Vec::new();
    let mut user_ct: Option<Vec<u8>> = None;
    if !headers.is_none() {
        let pairs = if let Ok(d) = headers.cast::<PyDict>() {
            d.items().into_any()
        } else {
            headers.clone()
        };
        for pair in pairs.try_iter()? {
            let pair = pair?;
            let (name, value): (String, Bound<'_, PyAny>) = pair.extract().map_err(|_| {
                PyTypeError::new_err("headers must be a dict or a list of (name, value) pairs")
            })?;
            let value = header_value(&value)?;
            if name.is_empty() || !name.bytes().all(pyrs_parser::is_tchar) {
                return Err(PyTypeError::new_err(format!(
                    "invalid header name {name:?}"
                )));
            }
            match name.to_ascii_lowercase().as_str() {
                // Framing and these are pyrs's to write.
                "content-length" | "transfer-encoding" | "connection" | "date" | "server" => {}
                "content-type" => user_ct = Some(value),
                _ => fields.push((name.into_bytes(), value)),
            }
        }
    }
    response::start(out, status);
    if response::status_has_body(status) {
        let ct: &[u8] = match (&user_ct, content_type) {
            (Some(v), _) => v,
            (None, Some(ct)) => {
                check_value(ct.as_bytes())?;
                ct.as_bytes()
            }
            (None, None) => default_ct,
        };
        response::header(out, b"Content-Type", ct);
    }
    for (name, value) in &fields {
        response::header(out, name, value);
    }
    response::finish(out, status, body_bytes, persist(head), head_only(head));
    Ok(())
}

/// A header value as bytes: `str` (Latin-1 only) or `bytes`, no CR, LF or NUL.
fn header_value(v: &Bound<'_, PyAny>) -> PyResult<Vec<u8>> {
    let bytes = if let Ok(s) = v.cast::<PyString>() {
        let s = s.to_str()?;
        s.chars()
            .map(|c| {
                u8::try_from(u32::from(c))
                    .map_err(|_| PyTypeError::new_err(format!("header value {s:?} is not Latin-1")))
            })
            .collect::<PyResult<Vec<u8>>>()?
    } else if let Ok(b) = v.cast::<PyBytes>() {
        b.as_bytes().to_vec()
    } else if v.is_instance_of::<pyo3::types::PyInt>() {
        v.str()?.to_str()?.as_bytes().to_vec()
    } else {
        return Err(PyTypeError::new_err(format!(
            "header value must be str, bytes or int, not {}",
            type_name(v)
        )));
    };
    check_value(&bytes)?;
    Ok(bytes)
}

fn check_value(v: &[u8]) -> PyResult<()> {
    if v.iter().all(|&b| b == b'\t' || (b >= 0x20 && b != 0x7f)) {
        Ok(())
    } else {
        Err(PyTypeError::new_err(format!(
            "header value {:?} contains control characters",
            String::from_utf8_lossy(v)
        )))
    }
}
