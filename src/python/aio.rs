//! The event loop for coroutines, on the Python worker thread: created by the
//! worker's `run` when a handler is `async def`, a class has startup/shutdown
//! hooks or an entry is an ASGI app. A handler's coroutine becomes a task that
//! takes its first step on the worker at once (`AsyncBridge.start`, an eager
//! start as Python 3.12 has it): one that ends there costs no loop round, one
//! that waits goes on as the loop runs. A small Python bridge collects
//! the finished tasks and stops the loop when there is something for the
//! worker to do (a task finished, or a reactor wrote the wake eventfd after
//! sending a batch). The worker runs the loop while tasks are in flight or the
//! app's own work needs it ([`Runtime::busy`]).

use std::collections::HashMap;
use std::ffi::CStr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use crossbeam_channel::{Receiver, Sender};

use pyo3::intern;
use pyo3::prelude::*;
use pyo3::types::{PyDict, PyList, PyTuple};

use super::errors;
use super::outbox::Pending;
use super::wait::Hub;
use crate::config::EventLoop;
use crate::dispatch::WorkerWakeup;

/// The bridge between the loop and the worker, simplest in Python.
const BRIDGE: &CStr = c"
import os
import sys
import threading


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


# What asyncio.all_tasks() and task reprs call a handler's task.
TASK_NAME = 'pyrs handler'


class AsyncBridge:
    \"\"\"Collects the outcomes of handler tasks for the worker thread and stops
    the event loop when there is something for it to do.\"\"\"

    def __init__(self, loop, wake_fd, nudge):
        import asyncio
        import weakref
        self.loop = loop
        self.wake_fd = wake_fd
        self.completed = []
        self.all_tasks = asyncio.all_tasks
        # The sets asyncio registers live tasks in (3.11: one; 3.12 and 3.13:
        # scheduled and eager), to count them without a scan.
        self.registries = [getattr(asyncio.tasks, name) for name in
                           ('_all_tasks', '_scheduled_tasks', '_eager_tasks')
                           if hasattr(asyncio.tasks, name)] or None
        # Tasks known to wait for the worker itself (lifespan): not work of
        # their own that needs the loop to run.
        self.parked = weakref.WeakSet()
        self.set_running_loop = asyncio.events._set_running_loop
        self.thread_id = threading.get_ident()
        self.create_task = loop.create_task
        self.Task = asyncio.Task
        # Stopping the loop on the first outcome; not while the worker lets
        # cancelled tasks unwind at exit (cancel_all).
        self.stop_on_outcome = True
        # The eager first step (Runtime::start_task) on asyncio's own loops: Python
        # 3.12's eager tasks, or on 3.11 the task's first step taken from
        # call_soon.
        if not isinstance(loop, asyncio.BaseEventLoop) or sys.version_info < (3, 11):
            self.eager = None
        else:
            self.eager = 'native' if sys.version_info >= (3, 12) else 'taken'
        # Async generators first iterated outside run_forever (in a first step,
        # or in run_ready) get the loop's finalizer too; run_forever restores
        # these hooks when it returns.
        hooks = (getattr(loop, '_asyncgen_firstiter_hook', None),
                 getattr(loop, '_asyncgen_finalizer_hook', None))
        if None not in hooks:
            sys.set_asyncgen_hooks(firstiter=hooks[0], finalizer=hooks[1])
        loop.add_reader(wake_fd, self._wake)
        try:
            self.fds = len(loop._selector.get_map())
        except AttributeError:
            self.fds = None
        else:
            # Another thread handing the loop work (call_soon_threadsafe,
            # run_coroutine_threadsafe, an executor's result) writes its
            # self-pipe, which the worker does not watch while it waits for
            # a batch: the nudge wakes it there too.
            write_to_self = loop._write_to_self

            def write_and_nudge():
                write_to_self()
                nudge()

            loop._write_to_self = write_and_nudge

    def busy(self, blocked=0):
        \"\"\"Whether the loop has work of its own while no handler task is in
        flight but the `blocked` ones waiting for the worker (on a pyrs Wait):
        a task the app started (on a timer, a socket, a thread), a timer or a
        callback due, or a file it watches. The worker then waits in the loop
        rather than on its job channel. A loop it cannot look into (uvloop)
        counts as busy.\"\"\"
        loop = self.loop
        if self.fds is None:
            return True
        if loop._ready or len(loop._selector.get_map()) > self.fds:
            return True
        for timer in loop._scheduled:
            # A cancelled timer stays in the heap until it would have been due.
            if not timer._cancelled:
                return True
        parked = self.parked
        registries = self.registries
        if registries is not None and sum(map(len, registries)) <= len(parked) + blocked:
            # Every live task waits for the worker (asyncio.all_tasks() costs
            # some microseconds: it is asked only when there are others).
            return False
        if blocked:
            # Others live beside tasks waiting for the worker: the loop runs
            # (a scan of every task each round would cost more than that).
            return True
        for task in self.all_tasks(loop):
            if task not in parked:
                return True
        return False

    def park(self, task):
        self.parked.add(task)

    def run_ready(self):
        \"\"\"Runs the callbacks that are ready (tasks a message or a reply
        woke), as one loop iteration would, but without polling files and
        timers: that costs a system call and more than the callbacks do. The
        worker does a whole iteration every few of these. False when there was
        nothing ready, or the loop is not asyncio's own (uvloop).\"\"\"
        loop = self.loop
        ready = getattr(loop, '_ready', None)
        if not ready:
            return False
        self.enter()
        try:
            for _ in range(len(ready)):
                handle = ready.popleft()
                if not handle._cancelled:
                    handle._run()
        finally:
            self.leave()
        return True

    def start(self, coro, key):
        \"\"\"Runs the handler coroutine `coro` as a task whose outcome comes
        back with `key` (run()), scheduled as usual: where the loop allows a
        first step at once, the worker takes it instead (Runtime::start_task).\"\"\"
        # Named: a name of its own per task costs 3.11 a formatted string.
        return self.create_task(self.run(coro, key), name=TASK_NAME)

    def enter(self):
        \"\"\"The loop counts as running on this thread (what a task's step
        sees) until leave(): the worker enters at a round's first eager start
        and leaves before it runs anything else (a synchronous handler, the
        loop itself, a wait).\"\"\"
        self.set_running_loop(self.loop)
        self.loop._thread_id = self.thread_id

    def leave(self):
        loop = self.loop
        # A loop.stop() in a first step or a ready callback (the first
        # outcome, a WebSocket's first message) asked for what leaving does.
        loop._stopping = False
        loop._thread_id = None
        self.set_running_loop(None)

    async def run(self, coro, key):
        \"\"\"A handler task's body: its outcome, (key, True, value) or
        (key, False, exception), is recorded as it ends, in the task's last
        step (a done callback would cost a loop round and a call more).\"\"\"
        # Everything a handler raises is its outcome (a 500 and a traceback),
        # SystemExit and KeyboardInterrupt too: this is not the main thread,
        # and re-raised they would end the step, not the server.
        try:
            value = await coro
        except BaseException as e:
            self._finished((key, False, e))
        else:
            self._finished((key, True, value))

    def _finished(self, outcome):
        self.completed.append(outcome)
        if len(self.completed) == 1 and self.stop_on_outcome:
            self.loop.stop()

    def unwinding(self):
        \"\"\"At exit: cancelled tasks finish without stopping the loop, which
        runs until they all have (or the time is up).\"\"\"
        self.stop_on_outcome = False

    def _wake(self):
        try:
            os.read(self.wake_fd, 8)
        except BlockingIOError:
            pass
        self.loop.stop()

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

/// Rounds of ready callbacks alone ([`Runtime::run_ready`]) before the loop
/// polls its files and timers again.
const QUICK_ROUNDS: u32 = 8;

/// What wakes the worker from its wait for a batch when another thread hands
/// the event loop work (the bridge calls it from the loop's `_write_to_self`).
#[pyclass(frozen, module = "pyrs")]
struct Nudge {
    tx: Sender<()>,
    wakeup: Arc<WorkerWakeup>,
}

#[pymethods]
impl Nudge {
    fn __call__(&self) {
        // One pending nudge is enough: the worker looks at the whole loop.
        let _ = self.tx.try_send(());
        self.wakeup.unpark();
    }
}

/// Where a task's first step is caught on Python 3.11: the loop's `call_soon`
/// while the task is created. The first call is the new task's own (checked
/// in [`Runtime::start_task`]); any other is scheduled as it asked, in order.
#[pyclass(frozen, module = "pyrs")]
struct Capture {
    /// The loop's `_call_soon(callback, args, context)`.
    call_soon: Py<PyAny>,
    /// The step caught (locked only to look and store: what a scheduled
    /// callback runs may call `call_soon` again).
    step: Mutex<Option<Step>>,
}

/// A callback `call_soon` was asked to schedule, with its arguments and context.
type Step = (Py<PyAny>, Py<PyTuple>, Py<PyAny>);

impl Capture {
    fn take(&self) -> Option<Step> {
        self.step.lock().unwrap_or_else(|e| e.into_inner()).take()
    }
}

#[pymethods]
impl Capture {
    #[pyo3(signature = (callback, *args, context=None))]
    fn __call__(
        &self,
        py: Python<'_>,
        callback: Py<PyAny>,
        args: Py<PyTuple>,
        context: Option<Py<PyAny>>,
    ) -> PyResult<Py<PyAny>> {
        let context = context.unwrap_or_else(|| py.None());
        {
            let mut step = self.step.lock().unwrap_or_else(|e| e.into_inner());
            if step.is_none() {
                *step = Some((callback, args, context));
                return Ok(py.None());
            }
        }
        self.call_soon
            .bind(py)
            .call1((callback, args, context))
            .map(Bound::unbind)
    }
}

/// How a handler task takes its first step (`AsyncBridge.eager`).
enum FirstStep {
    /// Scheduled as usual (`AsyncBridge.start`: uvloop, Python < 3.11).
    Scheduled,
    /// Python 3.12+: `Task(..., eager_start=True)`.
    Native,
    /// Python 3.11: taken from `call_soon` ([`Capture`]) and run at once.
    Taken(Py<Capture>),
}

/// The event loop and the handler tasks in flight on it.
pub struct Runtime {
    /// Nudges from other threads (see [`Nudge`]).
    nudges: Receiver<()>,
    event_loop: Py<PyAny>,
    bridge: Py<PyAny>,
    /// `AsyncBridge.start`: runs a handler's coroutine as a task.
    start: Py<PyAny>,
    /// `AsyncBridge.run`: a task's body, which records its outcome.
    run: Py<PyAny>,
    /// `asyncio.Task`, and the keywords a handler's task is made with.
    task_type: Py<PyAny>,
    task_keywords: Py<PyDict>,
    first_step: FirstStep,
    /// A first step since the last [`Runtime::leave`]: the loop counts as
    /// running on this thread (`AsyncBridge.enter`).
    entered: AtomicBool,
    /// Handler tasks in flight, by the key their outcome comes back with.
    tasks: HashMap<u64, (Py<PyAny>, Pending)>,
    /// `AsyncBridge.completed`: the outcomes recorded since the worker last
    /// took them, `(key, ok, value)` each (emptied in place, never replaced).
    completed: Py<PyList>,
    /// [`Runtime::run_ready`] rounds since the loop last polled.
    quick_rounds: u32,
    /// The waits the worker completes itself (`wait.rs`).
    hub: Arc<Hub>,
    next_key: u64,
}

impl Runtime {
    /// Creates the loop `kind` asks for, watching the wakeup's fd; returns it with the
    /// loop's name (`asyncio` or `uvloop`).
    pub fn start(
        py: Python<'_>,
        kind: EventLoop,
        wakeup: &Arc<WorkerWakeup>,
    ) -> PyResult<(Runtime, String)> {
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
        let (tx, nudges) = crossbeam_channel::bounded(1);
        let bridge = get("AsyncBridge")?.call1((
            &event_loop,
            wakeup.fd(),
            Nudge {
                tx,
                wakeup: wakeup.clone(),
            },
        ))?;
        let task_keywords = PyDict::new(py);
        task_keywords.set_item("loop", &event_loop)?;
        task_keywords.set_item("name", get("TASK_NAME")?)?;
        let eager = bridge.getattr("eager")?;
        let first_step = if eager.is_none() {
            FirstStep::Scheduled
        } else if eager.eq("native")? {
            task_keywords.set_item("eager_start", true)?;
            FirstStep::Native
        } else {
            let capture = Capture {
                call_soon: event_loop.getattr("_call_soon")?.unbind(),
                step: Mutex::new(None),
            };
            // Python 3.11 registers every task in a WeakSet with Python code.
            super::registry::install(py)?;
            FirstStep::Taken(Py::new(py, capture)?)
        };
        let direct = !matches!(first_step, FirstStep::Scheduled);
        let hub = Arc::new(Hub::new(py, event_loop.clone().unbind(), direct)?);
        let runtime = Runtime {
            hub,
            completed: bridge.getattr("completed")?.cast_into::<PyList>()?.unbind(),
            nudges,
            start: bridge.getattr("start")?.unbind(),
            run: bridge.getattr("run")?.unbind(),
            task_type: bridge.getattr("Task")?.unbind(),
            task_keywords: task_keywords.unbind(),
            first_step,
            entered: AtomicBool::new(false),
            event_loop: event_loop.unbind(),
            bridge: bridge.unbind(),
            tasks: HashMap::new(),
            quick_rounds: 0,
            next_key: 0,
        };
        Ok((runtime, name))
    }

    /// Where other threads' hand-overs to the loop wake the worker's wait.
    pub fn nudges(&self) -> &Receiver<()> {
        &self.nudges
    }

    /// Handler tasks not finished yet.
    pub fn in_flight(&self) -> usize {
        self.tasks.len()
    }

    /// The waits the worker completes itself, shared with what makes them.
    pub fn hub(&self) -> &Arc<Hub> {
        &self.hub
    }

    /// Tasks waiting for the worker to complete a wait: they need no loop
    /// iteration (a WebSocket's `receive()` waiting for a message, say).
    pub fn blocked(&self) -> usize {
        self.hub.blocked()
    }

    /// Runs the wake-ups of the tasks whose waits a batch completed, with
    /// the loop entered as for a first step; false if none was due.
    pub fn wake_waiting(&self, py: Python<'_>) -> bool {
        if !self.hub.has_woken() {
            return false;
        }
        if let Err(e) = self.enter(py) {
            errors::log(py, "cannot enter the event loop", &e);
        }
        self.hub.run(py);
        true
    }

    /// The loop counts as running on this thread until [`Runtime::leave`]
    /// (`AsyncBridge.enter`).
    fn enter(&self, py: Python<'_>) -> PyResult<()> {
        if !self.entered.swap(true, Ordering::Relaxed) {
            self.bridge.bind(py).call_method0(intern!(py, "enter"))?;
        }
        Ok(())
    }

    /// Runs `coro` as a task, its first step at once where the loop allows
    /// (`AsyncBridge.start`); `pending` comes back from
    /// [`Runtime::take_done`] when it has finished, which may be at once.
    pub fn spawn(
        &mut self,
        py: Python<'_>,
        coro: &Bound<'_, PyAny>,
        pending: Pending,
    ) -> PyResult<()> {
        let key = self.next_key;
        self.next_key += 1;
        let task = self.start_task(py, coro, key)?;
        self.tasks.insert(key, (task.unbind(), pending));
        Ok(())
    }

    /// A task for `coro` whose outcome comes back with `key`; its first step
    /// is taken now where the loop allows (what Python 3.12's eager tasks do,
    /// done so that it works from outside the running loop and on 3.11): a
    /// coroutine that ends there costs no loop round. The task is a whole
    /// asyncio Task throughout, so current_task(), cancellation and context
    /// variables are as in any. Not re-entrant: the worker calls it between
    /// loop runs, never from a task's step.
    fn start_task<'py>(
        &self,
        py: Python<'py>,
        coro: &Bound<'py, PyAny>,
        key: u64,
    ) -> PyResult<Bound<'py, PyAny>> {
        let event_loop = self.event_loop.bind(py);
        let factory = event_loop.getattr(intern!(py, "_task_factory")).ok();
        let capture = match &self.first_step {
            // A factory set by the app (loop.set_task_factory) gets every
            // handler task.
            _ if factory.is_some_and(|f| !f.is_none()) => None,
            FirstStep::Scheduled => None,
            FirstStep::Native => Some(None),
            FirstStep::Taken(capture) => Some(Some(capture)),
        };
        let Some(capture) = capture else {
            return self.start.bind(py).call1((coro, key));
        };
        self.enter(py)?;
        let body = self.run.bind(py).call1((coro, key))?;
        let task_type = self.task_type.bind(py);
        let keywords = self.task_keywords.bind(py);
        let Some(capture) = capture else {
            return task_type.call((body,), Some(keywords));
        };
        // The task schedules its first step with loop.call_soon: taken here
        // instead and run at once.
        let call_soon = intern!(py, "call_soon");
        event_loop.setattr(call_soon, capture)?;
        let task = task_type.call((body,), Some(keywords));
        let restored = event_loop.delattr(call_soon);
        let step = capture.get().take();
        let task = task?;
        restored?;
        if let Some((callback, args, context)) = step {
            let own = callback
                .bind(py)
                .getattr(intern!(py, "__self__"))
                .is_ok_and(|owner| owner.is(&task));
            if own && args.bind(py).is_empty() {
                context
                    .bind(py)
                    .call_method1(intern!(py, "run"), (callback,))?;
            } else {
                // Something else called first (a __del__ during the task's
                // creation, say): the task starts as usual.
                let call_soon = event_loop.getattr(intern!(py, "_call_soon"))?;
                call_soon.call1((callback, args, context))?;
            }
        }
        Ok(task)
    }

    /// Ends what the round's first steps entered (`AsyncBridge.leave`): due
    /// before anything but a first step runs on this thread (a synchronous
    /// handler, the loop itself) and before the worker waits.
    pub fn leave(&self, py: Python<'_>) {
        if self.entered.swap(false, Ordering::Relaxed) {
            if let Err(e) = self.bridge.bind(py).call_method0(intern!(py, "leave")) {
                errors::log(py, "cannot leave the event loop", &e);
            }
        }
    }

    /// Whether the loop must run although no handler task is in flight but
    /// those [`Runtime::blocked`]: the app's own tasks, timers, callbacks or
    /// watched files (`AsyncBridge.busy`).
    pub fn busy(&self, py: Python<'_>) -> bool {
        let blocked = self.hub.blocked();
        match self
            .bridge
            .bind(py)
            .call_method1(intern!(py, "busy"), (blocked,))
        {
            Ok(busy) => busy.is_truthy().unwrap_or(true),
            Err(e) => {
                errors::log(py, "cannot tell whether the event loop has work", &e);
                true
            }
        }
    }

    /// Marks `task` as waiting for the worker (a lifespan task between startup
    /// and shutdown): it alone does not make the loop [`Runtime::busy`].
    pub fn park(&self, py: Python<'_>, task: &Bound<'_, PyAny>) {
        if let Err(e) = self.bridge.bind(py).call_method1("park", (task,)) {
            errors::log(py, "cannot mark the lifespan task", &e);
        }
    }

    /// Runs the loop's ready callbacks without polling (`AsyncBridge.run_ready`),
    /// unless [`QUICK_ROUNDS`] such rounds came in a row: then `false`, as
    /// when nothing was ready, and the worker runs a whole iteration.
    pub fn run_ready(&mut self, py: Python<'_>) -> bool {
        self.leave(py);
        if self.quick_rounds >= QUICK_ROUNDS {
            self.quick_rounds = 0;
            return false;
        }
        let ran = match self.bridge.bind(py).call_method0(intern!(py, "run_ready")) {
            Ok(ran) => ran.is_truthy().unwrap_or(false),
            Err(e) => {
                errors::log(py, "the event loop's callbacks failed", &e);
                false
            }
        };
        if ran {
            self.quick_rounds += 1;
        } else {
            self.quick_rounds = 0;
        }
        ran
    }

    /// Runs the loop until a task finishes or a reactor wakes it.
    pub fn run_until_woken(&mut self, py: Python<'_>) {
        self.leave(py);
        let ran = self
            .hub
            .looping(|| self.event_loop.bind(py).call_method0("run_forever"));
        if let Err(e) = ran {
            errors::log(py, "the event loop stopped with an error", &e);
        }
    }

    /// Runs one iteration of the loop: what is ready, without waiting.
    pub fn run_once(&mut self, py: Python<'_>) {
        self.leave(py);
        let event_loop = self.event_loop.bind(py);
        let ran = self.hub.looping(|| {
            event_loop
                .getattr("stop")
                .and_then(|stop| event_loop.call_method1("call_soon", (stop,)))
                .and_then(|_| event_loop.call_method0("run_forever"))
        });
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
        self.leave(py);
        // Not `looping`: a stop would end run_until_complete with an error.
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
        let completed = self.completed.bind(py);
        let count = completed.len();
        if count == 0 {
            return Vec::new();
        }
        let mut done = Vec::with_capacity(count);
        for outcome in completed.iter() {
            let Ok((key, ok, value)) = outcome.extract::<(u64, bool, Bound<'py, PyAny>)>() else {
                continue;
            };
            let Some((_, pending)) = self.tasks.remove(&key) else {
                continue;
            };
            let result = match ok {
                true => Ok(value),
                false => Err(PyErr::from_value(value)),
            };
            done.push((pending, result));
        }
        if let Err(e) = completed.del_slice(0, count) {
            errors::log(py, "cannot collect finished handlers", &e);
        }
        done
    }

    /// Whether a handler task has finished since [`Runtime::take_done`] was
    /// last called (one that ended in its first step, say).
    pub fn has_done(&self, py: Python<'_>) -> bool {
        !self.completed.bind(py).is_empty()
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
        let _ = self.bridge.bind(py).call_method0("unwinding");
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
