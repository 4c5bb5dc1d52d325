//! The Python worker: the only thread that touches Python. It starts the
//! interpreter, imports the project's modules and creates one handler instance per
//! `modules` entry (reporting any failure as a [`ConfigError`] before the server
//! listens), then serves: it waits for batches without holding the GIL, takes the
//! GIL once per round, drains every queued batch under that one hold, calls the
//! handlers, encodes each result into a complete HTTP response, and sends each
//! reactor one [`Reply`] per round before waking it.

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use bytes::BytesMut;
use crossbeam_channel::{Receiver, Sender, TryRecvError};
use pyo3::exceptions::PyTypeError;
use pyo3::prelude::*;
use pyo3::sync::PyOnceLock;
use pyo3::types::{PyByteArray, PyBytes, PyDict, PyList, PyMemoryView, PyString, PyTuple};
use pyrs_parser::Head;

use crate::config::{Config, ConfigError, EventLoop};
use crate::date;
use crate::dispatch::{Batch, ConnRef, Job, Reply, ReplyItem, WorkerWakeup};
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
    /// Declared `async def`: runs as a task on the event loop.
    is_async: bool,
}

/// Everything resolved at startup.
struct Loaded {
    routes: Vec<Route>,
    /// One instance per `modules` entry, for the shutdown hooks.
    instances: Vec<Py<PyAny>>,
    runtime: Option<Runtime>,
}

/// How the worker thread talks to the main thread and the reactors.
pub struct Channels {
    /// Startup success, or the reason it failed.
    pub ready: Sender<Result<(), ConfigError>>,
    /// The reactors' handles, once they exist.
    pub wiring: Receiver<Vec<Handle>>,
    pub jobs: Receiver<Batch>,
}

/// The worker thread's body. Reports startup success or failure on `ready`, then
/// waits for the reactors' handles on `wiring` and serves `jobs` until every
/// reactor has hung up. `announce_routes` prints `Added route ...` per route.
pub fn run(
    config: Arc<Config>,
    channels: Channels,
    queued: Arc<AtomicUsize>,
    wakeup: Arc<WorkerWakeup>,
    announce_routes: bool,
) {
    let Channels {
        ready,
        wiring,
        jobs,
    } = channels;
    pyo3::append_to_inittab!(pyrs_module);
    Python::initialize();
    let mut loaded = match Python::attach(|py| load(py, &config, &wakeup, announce_routes)) {
        Ok(loaded) => {
            let _ = ready.send(Ok(()));
            loaded
        }
        Err(e) => {
            let _ = ready.send(Err(e));
            return;
        }
    };
    let Ok(handles) = wiring.recv() else {
        return;
    };
    Python::attach(|py| {
        serve(py, &mut loaded, &handles, &jobs, &queued, &wakeup);
        if let Some(rt) = &loaded.runtime {
            let _ = rt.bridge.bind(py).call_method0("close");
        }
        run_hooks(py, &loaded, "shutdown", config.shutdown_timeout);
        // Handlers' buffered output must not be lost at exit.
        let _ = py
            .import("sys")
            .and_then(|s| s.getattr("stdout"))
            .and_then(|o| o.call_method0("flush"));
    });
}

/// Prepares `sys`, resolves every handler in `modules` order, starts the event
/// loop if anything needs one, and runs the classes' `startup` hooks.
fn load(
    py: Python<'_>,
    config: &Config,
    wakeup: &WorkerWakeup,
    announce_routes: bool,
) -> Result<Loaded, ConfigError> {
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
    let is_coroutine_function = py
        .import("inspect")
        .and_then(|m| m.getattr("iscoroutinefunction"))
        .map_err(|e| ConfigError::at(config, 0, "module", format_exception(py, &e)))?;
    let mut routes = Vec::with_capacity(config.modules.len());
    let mut instances = Vec::with_capacity(config.modules.len());
    let mut needs_loop = false;
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
        let is_async = is_coroutine_function
            .call1((&handler,))
            .and_then(|r| r.is_truthy())
            .unwrap_or(false);
        needs_loop |= is_async
            || instance.hasattr("startup").unwrap_or(false)
            || instance.hasattr("shutdown").unwrap_or(false);
        routes.push(Route {
            handler: handler.unbind(),
            name: format!("{}.{}.{}", entry.module, entry.class, entry.handler),
            is_async,
        });
        instances.push(instance.unbind());
        if announce_routes {
            println!("Added route {}", entry.path);
        }
    }
    let runtime = if needs_loop {
        Some(start_runtime(py, config, wakeup, announce_routes)?)
    } else {
        None
    };
    let loaded = Loaded {
        routes,
        instances,
        runtime,
    };
    if let Some((index, message)) = run_hooks(py, &loaded, "startup", f64::INFINITY) {
        return Err(ConfigError::at(config, index, "class", message));
    }
    Ok(loaded)
}

/// Creates the event loop (uvloop or asyncio, per `event_loop`) and the bridge
/// that lets the worker wait on it.
fn start_runtime(
    py: Python<'_>,
    config: &Config,
    wakeup: &WorkerWakeup,
    announce: bool,
) -> Result<Runtime, ConfigError> {
    let kind = match config.event_loop {
        EventLoop::Auto => "auto",
        EventLoop::Asyncio => "asyncio",
        EventLoop::Uvloop => "uvloop",
    };
    let fail = |e: PyErr| ConfigError::Invalid {
        file: config.file.clone(),
        location: None,
        key: "event_loop".to_owned(),
        message: format!(
            "cannot start the {kind} event loop:\n{}",
            format_exception(py, &e)
        ),
    };
    let pyrs = py.import("pyrs").map_err(fail)?;
    let made = pyrs
        .getattr("_new_event_loop")
        .and_then(|f| f.call1((kind,)))
        .map_err(fail)?;
    let (event_loop, name): (Bound<'_, PyAny>, String) = made.extract().map_err(fail)?;
    let bridge = pyrs
        .getattr("_AsyncBridge")
        .and_then(|c| c.call1((&event_loop, wakeup.fd())))
        .map_err(fail)?;
    let create_task = event_loop.getattr("create_task").map_err(fail)?;
    let done_callback = bridge.getattr("done").map_err(fail)?;
    if announce {
        println!("Event loop: {name}");
    }
    Ok(Runtime {
        event_loop: event_loop.unbind(),
        bridge: bridge.unbind(),
        create_task: create_task.unbind(),
        done_callback: done_callback.unbind(),
        tasks: HashMap::new(),
    })
}

/// Calls `hook` (`startup` or `shutdown`) on every instance that has one, awaiting
/// it on the event loop when it is a coroutine (bounded by `timeout` seconds).
/// Returns the first failure as (entry index, message); later hooks still run for
/// `shutdown`, not for `startup`.
fn run_hooks(py: Python<'_>, loaded: &Loaded, hook: &str, timeout: f64) -> Option<(usize, String)> {
    let mut first_error = None;
    for (index, instance) in loaded.instances.iter().enumerate() {
        let instance = instance.bind(py);
        let Ok(method) = instance.getattr(hook) else {
            continue;
        };
        let outcome = method.call0().and_then(|result| {
            let awaitable = py
                .import("inspect")?
                .getattr("isawaitable")?
                .call1((&result,))?
                .is_truthy()?;
            match (&loaded.runtime, awaitable) {
                (Some(rt), true) => {
                    let waited = if timeout.is_finite() {
                        py.import("asyncio")?
                            .getattr("wait_for")?
                            .call1((result, timeout))?
                    } else {
                        result
                    };
                    rt.event_loop
                        .bind(py)
                        .call_method1("run_until_complete", (waited,))
                        .map(|_| ())
                }
                _ => Ok(()),
            }
        });
        if let Err(e) = outcome {
            let message = format!("{hook}() failed:\n{}", format_exception(py, &e));
            if hook == "startup" {
                return Some((index, message));
            }
            eprintln!("pyrs: {message}");
            first_error.get_or_insert((index, message));
        }
    }
    first_error
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

/// The asyncio side of the worker, present when a handler is `async def` or a
/// class has startup/shutdown hooks.
struct Runtime {
    event_loop: Py<PyAny>,
    /// `pyrs._AsyncBridge`: collects finished tasks and stops the loop.
    bridge: Py<PyAny>,
    create_task: Py<PyAny>,
    done_callback: Py<PyAny>,
    /// Handler tasks in flight, by task object address.
    tasks: HashMap<usize, PendingTask>,
}

/// What is needed to answer a request once its coroutine finishes.
struct PendingTask {
    /// Keeps the task (and so its address, the map key) alive.
    _task: Py<PyAny>,
    request: Py<Request>,
    reactor: usize,
    conn: ConnRef,
    seq: u64,
    head: Head,
    route: usize,
}

struct Ctx<'a, 'py> {
    routes: &'a [Route],
    http_error: Option<Bound<'py, PyAny>>,
}

fn serve(
    py: Python<'_>,
    loaded: &mut Loaded,
    handles: &[Handle],
    jobs: &Receiver<Batch>,
    queued: &AtomicUsize,
    wakeup: &WorkerWakeup,
) {
    let mut outboxes: Vec<Outbox> = handles
        .iter()
        .map(|_| Outbox {
            out: BytesMut::with_capacity(64 * 1024),
            items: Vec::new(),
        })
        .collect();
    let http_error = py.import("pyrs").and_then(|m| m.getattr("HTTPError")).ok();
    let ctx = Ctx {
        routes: &loaded.routes,
        http_error,
    };
    let runtime = &mut loaded.runtime;
    loop {
        let in_flight = runtime.as_ref().map_or(0, |rt| rt.tasks.len());
        if in_flight == 0 {
            // The synchronous fast path: sleep without the GIL until a batch comes.
            let Ok(first) = py.detach(|| jobs.recv()) else {
                break;
            };
            date::refresh();
            let mut rt = runtime.as_mut();
            let mut handled = handle_batch(py, &ctx, first, &mut outboxes, &mut rt);
            while handled < MAX_BATCH {
                match jobs.try_recv() {
                    Ok(batch) => handled += handle_batch(py, &ctx, batch, &mut outboxes, &mut rt),
                    Err(_) => break,
                }
            }
            queued.fetch_sub(handled, Ordering::Relaxed);
            send_replies(&mut outboxes, handles);
            continue;
        }
        // Coroutines are in flight: run the event loop, and let reactors wake it
        // through the eventfd when a batch arrives.
        let Some(rt) = runtime.as_mut() else {
            break;
        };
        wakeup.set_waiting(true);
        let mut handled = 0;
        let mut disconnected = false;
        while handled < MAX_BATCH {
            match jobs.try_recv() {
                Ok(batch) => {
                    date::refresh();
                    handled += handle_batch(py, &ctx, batch, &mut outboxes, &mut Some(rt));
                }
                Err(TryRecvError::Empty) => break,
                Err(TryRecvError::Disconnected) => {
                    disconnected = true;
                    break;
                }
            }
        }
        if handled > 0 {
            queued.fetch_sub(handled, Ordering::Relaxed);
            send_replies(&mut outboxes, handles);
        }
        if disconnected {
            wakeup.set_waiting(false);
            break;
        }
        if let Err(e) = rt.event_loop.bind(py).call_method0("run_forever") {
            log_python_error(py, "the event loop stopped with an error", &e);
        }
        wakeup.set_waiting(false);
        date::refresh();
        complete_tasks(py, &ctx, rt, &mut outboxes);
        send_replies(&mut outboxes, handles);
    }
    if let Some(rt) = runtime.as_mut() {
        cancel_tasks(py, rt);
    }
}

/// Sends each reactor the replies collected for it this round, waking it once.
fn send_replies(outboxes: &mut [Outbox], handles: &[Handle]) {
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

fn log_python_error(py: Python<'_>, what: &str, e: &PyErr) {
    eprintln!("pyrs: {what}:");
    e.display(py);
}

fn handle_batch(
    py: Python<'_>,
    ctx: &Ctx<'_, '_>,
    batch: Batch,
    outboxes: &mut [Outbox],
    runtime: &mut Option<&mut Runtime>,
) -> usize {
    let n = batch.jobs.len();
    let reactor = batch.reactor;
    let Some(outbox) = outboxes.get_mut(reactor) else {
        return n;
    };
    for job in batch.jobs {
        let (conn, seq) = (job.conn, job.seq);
        if handle_job(py, ctx, job, reactor, &mut outbox.out, runtime) {
            outbox.items.push(ReplyItem {
                conn,
                seq,
                end: outbox.out.len(),
            });
        }
    }
    n
}

/// Calls the handler for one request. A synchronous handler's response is appended
/// to `out` at once (returns `true`); an `async def` handler becomes a task whose
/// response is encoded when it finishes (returns `false`).
fn handle_job(
    py: Python<'_>,
    ctx: &Ctx<'_, '_>,
    job: Job,
    reactor: usize,
    out: &mut BytesMut,
    runtime: &mut Option<&mut Runtime>,
) -> bool {
    let head = job.head;
    let route_index = job.route as usize;
    let Some(route) = ctx.routes.get(route_index) else {
        error_500(out, &head);
        return true;
    };
    let request = match Bound::new(py, Request::new(job.data, job.head, job.body, job.remote)) {
        Ok(r) => r,
        Err(e) => {
            log_python_error(
                py,
                &format!("cannot create a request for {}", route.name),
                &e,
            );
            error_500(out, &head);
            return true;
        }
    };
    let called = route.handler.bind(py).call1((&request,));
    if let (true, Some(rt), Ok(coro)) = (route.is_async, runtime.as_deref_mut(), &called) {
        let started = rt.create_task.bind(py).call1((coro,)).and_then(|task| {
            task.call_method1("add_done_callback", (rt.done_callback.bind(py),))?;
            Ok(task)
        });
        match started {
            Ok(task) => {
                rt.tasks.insert(
                    task.as_ptr() as usize,
                    PendingTask {
                        _task: task.unbind(),
                        request: request.unbind(),
                        reactor,
                        conn: job.conn,
                        seq: job.seq,
                        head,
                        route: route_index,
                    },
                );
                return false;
            }
            Err(e) => {
                finish(py, ctx, route, &request, &head, Err(e), out);
                return true;
            }
        }
    }
    finish(py, ctx, route, &request, &head, called, out);
    true
}

/// Encodes what a handler produced (its return value or its exception) into
/// `out`; anything that cannot be encoded becomes a logged 500.
fn finish(
    py: Python<'_>,
    ctx: &Ctx<'_, '_>,
    route: &Route,
    request: &Bound<'_, Request>,
    head: &Head,
    outcome: PyResult<Bound<'_, PyAny>>,
    out: &mut BytesMut,
) {
    let mark = out.len();
    let encoded = match outcome {
        Ok(result) => encode_result(py, &result, request, head, out),
        Err(e) => match &ctx.http_error {
            Some(cls) if e.is_instance(py, cls) => encode_http_error(py, &e, head, out),
            _ => Err(e),
        },
    };
    if let Err(e) = encoded {
        out.truncate(mark);
        let what = format!(
            "error in handler {} for {}",
            route.name,
            request.get().describe()
        );
        log_python_error(py, &what, &e);
        error_500(out, head);
    }
}

/// Encodes the responses of every handler task that finished.
fn complete_tasks(py: Python<'_>, ctx: &Ctx<'_, '_>, rt: &mut Runtime, outboxes: &mut [Outbox]) {
    let done = match rt.bridge.bind(py).call_method0("take") {
        Ok(done) => done,
        Err(e) => {
            log_python_error(py, "cannot collect finished handlers", &e);
            return;
        }
    };
    let Ok(iter) = done.try_iter() else {
        return;
    };
    for task in iter.flatten() {
        let Some(p) = rt.tasks.remove(&(task.as_ptr() as usize)) else {
            continue;
        };
        let (Some(route), Some(outbox)) = (ctx.routes.get(p.route), outboxes.get_mut(p.reactor))
        else {
            continue;
        };
        let outcome = task.call_method0("result");
        finish(
            py,
            ctx,
            route,
            p.request.bind(py),
            &p.head,
            outcome,
            &mut outbox.out,
        );
        outbox.items.push(ReplyItem {
            conn: p.conn,
            seq: p.seq,
            end: outbox.out.len(),
        });
    }
}

/// At exit: cancels handler tasks nobody waits for any more and lets them unwind.
fn cancel_tasks(py: Python<'_>, rt: &mut Runtime) {
    if rt.tasks.is_empty() {
        return;
    }
    for p in rt.tasks.values() {
        let _ = p._task.bind(py).call_method0("cancel");
    }
    let event_loop = rt.event_loop.bind(py);
    let tasks: Vec<Py<PyAny>> = rt.tasks.values().map(|p| p._task.clone_ref(py)).collect();
    let gathered = py
        .import("asyncio")
        .and_then(|a| a.getattr("wait"))
        .and_then(|wait| {
            let kwargs = PyDict::new(py);
            kwargs.set_item("timeout", 1.0)?;
            wait.call((PyList::new(py, tasks)?,), Some(&kwargs))
        });
    if let Ok(waiting) = gathered {
        let _ = event_loop.call_method1("run_until_complete", (waiting,));
    }
    rt.tasks.clear();
}

fn error_500(out: &mut BytesMut, head: &Head) {
    response::simple(
        out,
        500,
        response::TEXT_PLAIN,
        b"Internal Server Error",
        Persist::of(head),
        response::head_only(head),
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
            Persist::of(head),
            response::head_only(head),
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
            Persist::of(head),
            response::head_only(head),
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
            Persist::of(head),
            response::head_only(head),
        );
        return Ok(());
    }
    match body_value(py, result)? {
        Some((body, ct)) => {
            response::simple(
                out,
                200,
                ct,
                body.bytes()?,
                Persist::of(head),
                response::head_only(head),
            );
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
    response::finish(
        out,
        status,
        body_bytes,
        Persist::of(head),
        response::head_only(head),
    );
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
