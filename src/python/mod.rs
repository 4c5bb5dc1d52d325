//! Everything that touches Python, on the Python worker thread (and, with
//! `python_threads` > 1, the threads of its pool, `pool.rs`). `run` starts
//! the interpreter with the `pyrs` module (`module.rs`), loads the project's
//! handlers and apps (`load.rs`), starts the event loop if anything needs one
//! (`aio.rs`), runs the startup hooks (`hooks.rs`) and ASGI lifespan startup,
//! reports readiness, then serves batches from the reactors (`serve.rs`) until
//! they hang up, and runs lifespan shutdown and the shutdown hooks. Each entry's
//! route (`routes.rs`) is a pyrs handler turning requests (`request.rs`) into
//! responses (`native.rs`, `encode.rs`), a WSGI app (`wsgi.rs`) or an ASGI app
//! (`asgi.rs`); answers are collected per reactor (`outbox.rs`), and responses
//! that stream go out part by part (`stream.rs`). No Python object leaves these
//! threads.

mod aio;
mod apps;
mod asgi;
mod body;
mod cycle;
mod encode;
mod errors;
mod hooks;
mod load;
mod module;
mod native;
mod outbox;
mod pool;
mod produce;
mod registry;
mod request;
mod routes;
mod serve;
mod stream;
mod wait;
mod websocket;
mod wsgi;

use std::sync::atomic::AtomicUsize;
use std::sync::Arc;

use crossbeam_channel::{Receiver, Sender};
use pyo3::prelude::*;

use crate::config::{Config, ConfigError};
use crate::dispatch::{Batch, Handle, WorkerWakeup};
use aio::Runtime;
use errors::format_exception;
use hooks::Hook;
pub use module::fill as fill_module;
use module::pyrs_module;
use pool::Pool;
use routes::Routes;

/// How the worker thread talks to the main thread and the reactors.
pub struct Channels {
    /// Startup success (saying which `modules` entries take large request
    /// bodies as they arrive: the WSGI and ASGI apps), or why it failed.
    pub ready: Sender<Result<Vec<bool>, ConfigError>>,
    /// The reactors' handles, once they exist.
    pub wiring: Receiver<Vec<Handle>>,
    pub jobs: Receiver<Batch>,
}

/// The worker thread's body. Reports startup success or failure on `ready`, then
/// waits for the reactors' handles on `wiring` and serves `jobs` until every
/// reactor has hung up. `announce` prints the route and event loop lines.
pub fn run(
    config: Arc<Config>,
    channels: Channels,
    queued: Arc<AtomicUsize>,
    wakeup: Arc<WorkerWakeup>,
    announce: bool,
) {
    let Channels {
        ready,
        wiring,
        jobs,
    } = channels;
    if !interpreter_running() {
        // The binary: start the interpreter it embeds, with `pyrs` built in. Under
        // the Python package the interpreter runs already and `pyrs` is imported.
        pyo3::append_to_inittab!(pyrs_module);
        Python::initialize();
    }
    // One attach for the thread's whole life: under the Python package this
    // thread's Python state (asyncio's loop and asyncgen hooks, thread-locals)
    // would not outlive an attach, and startup sets what serving uses.
    Python::attach(|py| {
        let (routes, instances, mut runtime) = match start(py, &config, &wakeup, announce) {
            Ok(started) => {
                let _ = ready.send(Ok(started.0.streamed_bodies()));
                started
            }
            Err(e) => {
                let _ = ready.send(Err(e));
                return;
            }
        };
        let Ok(handles) = py.detach(|| wiring.recv()) else {
            return;
        };
        let routes = Arc::new(routes);
        let link = Arc::new(stream::Link::new(
            handles,
            wakeup.clone(),
            config.max_write_buffer,
        ));
        let pool = py.detach(|| match config.python_threads {
            1 => None,
            n => match Pool::start(n, routes.clone(), &link, queued.clone()) {
                Ok(pool) => Some(pool),
                Err(e) => {
                    eprintln!("pyrs: cannot start {n} Python threads ({e}); serving with one");
                    None
                }
            },
        });
        let wiring = serve::Wiring {
            link: &link,
            pool: pool.as_ref(),
            jobs: &jobs,
            queued: &queued,
            wakeup: &wakeup,
        };
        serve::serve(py, &routes, &mut runtime, &wiring);
        if let Some(pool) = pool {
            // The pool's threads need the GIL to finish their requests.
            py.detach(|| pool.finish());
        }
        if let Some(rt) = &runtime {
            rt.close(py);
            for (_, app) in routes.asgi_apps() {
                app.shutdown(py, rt, config.shutdown_timeout);
            }
        }
        hooks::run(
            py,
            &instances,
            runtime.as_ref(),
            Hook::Shutdown,
            config.shutdown_timeout,
        );
        // Handlers' buffered output must not be lost at exit.
        let _ = py
            .import("sys")
            .and_then(|s| s.getattr("stdout"))
            .and_then(|o| o.call_method0("flush"));
    });
}

/// Whether this process already runs a Python interpreter (the `pyrs` command of
/// the Python package runs the server inside the user's interpreter).
fn interpreter_running() -> bool {
    // SAFETY: Py_IsInitialized may be called at any time, from any thread.
    unsafe { pyo3::ffi::Py_IsInitialized() != 0 }
}

/// fork(2) for the supervisor, safe also when an interpreter already runs in this
/// process: then CPython's own before- and after-fork hooks run around it with the
/// GIL held, as `os.fork()` does (locks reset, the child's thread state made
/// current). The caller must be the only thread of the process. In the binary
/// Python has not started when the supervisor forks, and this is a plain fork.
pub fn fork() -> libc::pid_t {
    if !interpreter_running() {
        // SAFETY: the caller guarantees no other thread runs.
        return unsafe { libc::fork() };
    }
    Python::attach(|_py| {
        // SAFETY: the GIL is held, as these hooks require; the caller guarantees no
        // other thread runs, so the child may go on after fork.
        unsafe {
            pyo3::ffi::PyOS_BeforeFork();
            let pid = libc::fork();
            if pid == 0 {
                pyo3::ffi::PyOS_AfterFork_Child();
            } else {
                pyo3::ffi::PyOS_AfterFork_Parent();
            }
            pid
        }
    })
}

type Started = (Routes, Vec<(usize, Py<PyAny>)>, Option<Runtime>);

/// Loads the handlers, starts the event loop if needed, runs the startup hooks.
fn start(
    py: Python<'_>,
    config: &Config,
    wakeup: &Arc<WorkerWakeup>,
    announce: bool,
) -> Result<Started, ConfigError> {
    let loaded = load::load(py, config, announce)?;
    let runtime = if loaded.needs_loop {
        let (runtime, name) = Runtime::start(py, config.event_loop, wakeup).map_err(|e| {
            let message = format!(
                "cannot start the {} event loop:\n{}",
                aio::kind_name(config.event_loop),
                format_exception(py, &e)
            );
            config.key_error("event_loop", "event_loop", None, message)
        })?;
        if announce {
            println!("Event loop: {name}");
        }
        Some(runtime)
    } else {
        None
    };
    let failed = hooks::run(
        py,
        &loaded.instances,
        runtime.as_ref(),
        Hook::Startup,
        f64::INFINITY,
    );
    if let Some((index, message)) = failed {
        return Err(ConfigError::at(config, index, "class", message));
    }
    let routes = Routes::new(
        py,
        loaded.routes,
        config.max_write_buffer,
        config.max_websocket_message,
        runtime.as_ref().map(|rt| rt.hub().clone()),
    )
    .map_err(|e| {
        let message = format!("cannot set up WebSockets:\n{}", format_exception(py, &e));
        config.key_error("modules", "modules", None, message)
    })?;
    if let Some(rt) = &runtime {
        for (index, app) in routes.asgi_apps() {
            app.startup(py, rt)
                .map_err(|message| ConfigError::at(config, index, "app", message))?;
        }
    }
    freeze_startup_objects(py);
    Ok((routes, loaded.instances, runtime))
}

/// Moves every object alive after startup (modules, the app, its routes and
/// templates) out of the cyclic collector's generations (`gc.freeze()`): they
/// live as long as the worker, and scanning them in every full collection was
/// a sixth of the worker's time under pipelined ASGI traffic. Objects created
/// from here on are collected as usual.
fn freeze_startup_objects(py: Python<'_>) {
    let frozen = py.import("gc").and_then(|gc| {
        gc.call_method0("collect")?;
        gc.call_method0("freeze")
    });
    if let Err(e) = frozen {
        errors::log(py, "gc.freeze() failed", &e);
    }
}
