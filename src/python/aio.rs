//! The event loop for coroutines, on the Python worker thread: created by the
//! worker's `run` when a handler is `async def`, a class has startup/shutdown
//! hooks or an entry is an ASGI app. Handler coroutines become tasks; a small Python bridge collects the
//! finished ones and stops the loop when there is something for the worker to do
//! (a task finished, or a reactor wrote the wake eventfd after sending a batch).
//! The worker runs the loop only while tasks are in flight.

use std::collections::HashMap;
use std::ffi::CStr;
use std::os::fd::RawFd;

use pyo3::prelude::*;
use pyo3::types::{PyDict, PyList};

use super::errors;
use super::outbox::Pending;
use crate::config::EventLoop;

/// The bridge between the loop and the worker, simplest in Python.
const BRIDGE: &CStr = c"
import os


def new_event_loop(kind):
    \"\"\"The event loop for async handlers, and its name.\"\"\"
    import asyncio
    if kind in ('auto', 'uvloop'):
        try:
            import uvloop
        except ImportError:
            if kind == 'uvloop':
                raise
        else:
            loop = uvloop.new_event_loop()
            asyncio.set_event_loop(loop)
            return loop, 'uvloop'
    loop = asyncio.new_event_loop()
    asyncio.set_event_loop(loop)
    return loop, 'asyncio'


class AsyncBridge:
    \"\"\"Collects the outcomes of handler tasks for the worker thread and stops
    the event loop when there is something for it to do.\"\"\"

    def __init__(self, loop, wake_fd):
        self.loop = loop
        self.wake_fd = wake_fd
        self.completed = []
        loop.add_reader(wake_fd, self._wake)

    async def run(self, coro, key):
        \"\"\"A handler task's body: its outcome, (key, True, value) or
        (key, False, exception), is recorded as it ends, in the task's last
        step (a done callback would cost a loop round and a call more).\"\"\"
        try:
            value = await coro
        except BaseException as e:
            self._finished((key, False, e))
            if isinstance(e, (KeyboardInterrupt, SystemExit)):
                raise
        else:
            self._finished((key, True, value))

    def _finished(self, outcome):
        self.completed.append(outcome)
        if len(self.completed) == 1:
            self.loop.stop()

    def _wake(self):
        try:
            os.read(self.wake_fd, 8)
        except BlockingIOError:
            pass
        self.loop.stop()

    def take(self):
        done, self.completed = self.completed, []
        return done

    def close(self):
        \"\"\"Stops watching the wake fd, so that shutdown hooks run undisturbed.\"\"\"
        self.loop.remove_reader(self.wake_fd)
";

/// The `event_loop` key's value as written in the project file.
pub fn kind_name(kind: EventLoop) -> &'static str {
    match kind {
        EventLoop::Auto => "auto",
        EventLoop::Asyncio => "asyncio",
        EventLoop::Uvloop => "uvloop",
    }
}

/// The event loop and the handler tasks in flight on it.
pub struct Runtime {
    event_loop: Py<PyAny>,
    bridge: Py<PyAny>,
    create_task: Py<PyAny>,
    /// `AsyncBridge.run`: wraps a handler's coroutine to record its outcome.
    run: Py<PyAny>,
    /// Handler tasks in flight, by the key their outcome comes back with.
    tasks: HashMap<u64, (Py<PyAny>, Pending)>,
    next_key: u64,
}

impl Runtime {
    /// Creates the loop `kind` asks for, watching `wake_fd`; returns it with the
    /// loop's name (`asyncio` or `uvloop`).
    pub fn start(py: Python<'_>, kind: EventLoop, wake_fd: RawFd) -> PyResult<(Runtime, String)> {
        let kind = kind_name(kind);
        let namespace = PyDict::new(py);
        py.run(BRIDGE, Some(&namespace), None)?;
        let get = |name: &str| -> PyResult<Bound<'_, PyAny>> {
            namespace
                .get_item(name)?
                .ok_or_else(|| pyo3::exceptions::PyKeyError::new_err(name.to_owned()))
        };
        let (event_loop, name): (Bound<'_, PyAny>, String) =
            get("new_event_loop")?.call1((kind,))?.extract()?;
        let bridge = get("AsyncBridge")?.call1((&event_loop, wake_fd))?;
        let create_task = event_loop.getattr("create_task")?;
        let run = bridge.getattr("run")?;
        let runtime = Runtime {
            event_loop: event_loop.unbind(),
            bridge: bridge.unbind(),
            create_task: create_task.unbind(),
            run: run.unbind(),
            tasks: HashMap::new(),
            next_key: 0,
        };
        Ok((runtime, name))
    }

    /// Handler tasks not finished yet.
    pub fn in_flight(&self) -> usize {
        self.tasks.len()
    }

    /// Runs `coro` as a task; `pending` comes back from [`Runtime::take_done`]
    /// when it finishes.
    pub fn spawn(
        &mut self,
        py: Python<'_>,
        coro: &Bound<'_, PyAny>,
        pending: Pending,
    ) -> PyResult<()> {
        let key = self.next_key;
        self.next_key += 1;
        let wrapped = self.run.bind(py).call1((coro, key))?;
        let task = self.create_task.bind(py).call1((wrapped,))?;
        self.tasks.insert(key, (task.unbind(), pending));
        Ok(())
    }

    /// Runs the loop until a task finishes or a reactor wakes it.
    pub fn run_until_woken(&self, py: Python<'_>) {
        if let Err(e) = self.event_loop.bind(py).call_method0("run_forever") {
            errors::log(py, "the event loop stopped with an error", &e);
        }
    }

    /// Runs one iteration of the loop: what is ready, without waiting.
    pub fn run_once(&self, py: Python<'_>) {
        let event_loop = self.event_loop.bind(py);
        let ran = event_loop
            .getattr("stop")
            .and_then(|stop| event_loop.call_method1("call_soon", (stop,)))
            .and_then(|_| event_loop.call_method0("run_forever"));
        if let Err(e) = ran {
            errors::log(py, "the event loop stopped with an error", &e);
        }
    }

    /// Runs `awaitable` to completion on the loop (startup and shutdown hooks).
    pub fn run_until_complete(&self, py: Python<'_>, awaitable: Bound<'_, PyAny>) -> PyResult<()> {
        self.run_until_complete_value(py, awaitable).map(|_| ())
    }

    /// Runs `awaitable` to completion on the loop; returns its result.
    pub fn run_until_complete_value<'py>(
        &self,
        py: Python<'py>,
        awaitable: Bound<'py, PyAny>,
    ) -> PyResult<Bound<'py, PyAny>> {
        self.event_loop
            .bind(py)
            .call_method1("run_until_complete", (awaitable,))
    }

    /// The tasks that finished since the last call, each with its outcome: the
    /// handler's return value or its exception.
    pub fn take_done<'py>(
        &mut self,
        py: Python<'py>,
    ) -> Vec<(Pending, PyResult<Bound<'py, PyAny>>)> {
        let done = match self.bridge.bind(py).call_method0("take") {
            Ok(done) => done,
            Err(e) => {
                errors::log(py, "cannot collect finished handlers", &e);
                return Vec::new();
            }
        };
        let Ok(iter) = done.try_iter() else {
            return Vec::new();
        };
        iter.flatten()
            .filter_map(|outcome| {
                let (key, ok, value): (u64, bool, Bound<'py, PyAny>) = outcome.extract().ok()?;
                let (_, pending) = self.tasks.remove(&key)?;
                let result = match ok {
                    true => Ok(value),
                    false => Err(PyErr::from_value(value)),
                };
                Some((pending, result))
            })
            .collect()
    }

    /// Stops watching the wake fd, so that shutdown hooks run undisturbed.
    pub fn close(&self, py: Python<'_>) {
        let _ = self.bridge.bind(py).call_method0("close");
    }

    /// At exit: cancels handler tasks nobody waits for any more and lets them
    /// unwind (for at most a second).
    pub fn cancel_all(&mut self, py: Python<'_>) {
        if self.tasks.is_empty() {
            return;
        }
        let tasks: Vec<Py<PyAny>> = self
            .tasks
            .values()
            .map(|(task, _)| task.clone_ref(py))
            .collect();
        for task in &tasks {
            let _ = task.bind(py).call_method0("cancel");
        }
        let waiting = py
            .import("asyncio")
            .and_then(|a| a.getattr("wait"))
            .and_then(|wait| {
                let kwargs = PyDict::new(py);
                kwargs.set_item("timeout", 1.0)?;
                wait.call((PyList::new(py, tasks)?,), Some(&kwargs))
            });
        if let Ok(waiting) = waiting {
            let _ = self.run_until_complete(py, waiting);
        }
        self.tasks.clear();
    }
}
