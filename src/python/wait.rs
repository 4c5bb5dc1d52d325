//! Futures the worker completes itself, on the Python worker thread. A task
//! waiting for what only a reactor's batch brings (a WebSocket message, room
//! to send) awaits a [`Wait`]: as much of asyncio's Future as a Task needs to
//! wait on one (`_asyncio_future_blocking`, `get_loop`, `add_done_callback`,
//! `result`, `cancel`). When the batch brings it, the waiting task's wake-up
//! runs right after the batch's events ([`Hub::run`]), not through
//! `loop.call_soon` and a loop iteration. On a loop the worker cannot enter
//! (uvloop, Python before 3.11) the wake-up is scheduled with `call_soon`, as
//! a Future's would be; so is every cancel. [`Hub::blocked`] counts the
//! tasks waiting on one: they need no loop iteration to go on, so while all
//! in flight do, the worker waits for its next batch on the job channel.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Mutex;

use pyo3::exceptions::PyRuntimeError;
use pyo3::intern;
use pyo3::prelude::*;
use pyo3::types::PyDict;
use pyo3::{PyTraverseError, PyVisit};

use super::errors;

/// A wake-up to run: the callback a task gave `add_done_callback`, its
/// context, and the wait it was given for.
type Woken = (Py<PyAny>, Option<Py<PyAny>>, Py<Wait>);

/// What every [`Wait`] of the worker shares: its loop, the wake-ups due, and
/// the count of tasks waiting.
pub struct Hub {
    event_loop: Py<PyAny>,
    /// Wake-ups run by the worker ([`Hub::run`]) rather than the loop.
    direct: bool,
    woken: Mutex<Vec<Woken>>,
    /// Waits not done that have a callback: the tasks waiting on one.
    blocked: AtomicUsize,
    /// The worker is inside the loop's `run_forever` (see [`Hub::looping`]).
    looping: AtomicBool,
    cancelled_error: Py<PyAny>,
    invalid_state: Py<PyAny>,
}

impl Hub {
    /// `direct`: whether the worker may run wake-ups itself, with the loop
    /// entered as for a first step (asyncio's own loop, Python 3.11+).
    pub fn new(py: Python<'_>, event_loop: Py<PyAny>, direct: bool) -> PyResult<Hub> {
        let asyncio = py.import("asyncio")?;
        Ok(Hub {
            event_loop,
            direct,
            woken: Mutex::new(Vec::new()),
            blocked: AtomicUsize::new(0),
            looping: AtomicBool::new(false),
            cancelled_error: asyncio.getattr("CancelledError")?.unbind(),
            invalid_state: asyncio.getattr("InvalidStateError")?.unbind(),
        })
    }

    /// Tasks waiting on a [`Wait`].
    pub fn blocked(&self) -> usize {
        self.blocked.load(Ordering::Relaxed)
    }

    /// Whether wake-ups are due for [`Hub::run`].
    pub fn has_woken(&self) -> bool {
        self.woken.lock().is_ok_and(|w| !w.is_empty())
    }

    /// Runs the wake-ups due, each in its task's context (what the loop's
    /// `Handle` would do). The worker has entered the loop, as for a first
    /// step. What a wake-up raises is logged (a task's never does).
    pub fn run(&self, py: Python<'_>) {
        loop {
            let due = match self.woken.lock() {
                Ok(mut woken) => std::mem::take(&mut *woken),
                Err(_) => return,
            };
            if due.is_empty() {
                return;
            }
            for (callback, context, wait) in due {
                let ran = match context {
                    Some(context) => context
                        .bind(py)
                        .call_method1(intern!(py, "run"), (callback, wait)),
                    None => callback.bind(py).call1((wait,)),
                };
                if let Err(e) = ran {
                    errors::log(py, "a task's wake-up failed", &e);
                }
            }
        }
    }

    /// Runs `f` with the worker inside the loop's `run_forever`: what a task
    /// the loop runs hands the worker must stop the loop ([`Hub::stop_loop`]).
    pub fn looping<R>(&self, f: impl FnOnce() -> R) -> R {
        let before = self.looping.swap(true, Ordering::Relaxed);
        let out = f();
        self.looping.store(before, Ordering::Relaxed);
        out
    }

    /// Stops the loop if the worker is running it, so that what a task just
    /// handed over leaves at once; outside `run_forever` the worker takes it
    /// at the round's end anyway.
    pub fn stop_loop(&self, py: Python<'_>) {
        if self.looping.load(Ordering::Relaxed) {
            if let Err(e) = self.event_loop.bind(py).call_method0(intern!(py, "stop")) {
                errors::log(py, "cannot stop the event loop", &e);
            }
        }
    }

    /// `loop.call_soon(callback, wait, context=context)`.
    fn call_soon(
        &self,
        py: Python<'_>,
        callback: &Py<PyAny>,
        context: &Option<Py<PyAny>>,
        wait: &Bound<'_, Wait>,
    ) {
        let scheduled = (|| {
            let kwargs = PyDict::new(py);
            if let Some(context) = context {
                kwargs.set_item(intern!(py, "context"), context)?;
            }
            self.event_loop.bind(py).call_method(
                intern!(py, "call_soon"),
                (callback, wait),
                Some(&kwargs),
            )
        })();
        if let Err(e) = scheduled {
            errors::log(py, "cannot schedule a task's wake-up", &e);
        }
    }
}

/// Where a [`Wait`] stands.
enum Outcome {
    Pending,
    Done,
    /// Cancelled, with the message `cancel()` was given.
    Cancelled(Option<Py<PyAny>>),
}

/// A future the worker completes: see the module note. Its result is always
/// `None`; the awaitable that waits on it looks again at what it waits for.
#[pyclass(module = "pyrs", name = "Wait")]
pub struct Wait {
    hub: std::sync::Arc<Hub>,
    outcome: Outcome,
    callbacks: Vec<(Py<PyAny>, Option<Py<PyAny>>)>,
    /// Yielded by its own `__next__` (awaited directly).
    yielded: bool,
    /// asyncio's mark of a future a task is to wait on.
    #[pyo3(get, set, name = "_asyncio_future_blocking")]
    blocking: bool,
}

impl Drop for Wait {
    fn drop(&mut self) {
        if self.is_pending() && !self.callbacks.is_empty() {
            self.hub.blocked.fetch_sub(1, Ordering::Relaxed);
        }
    }
}

impl Wait {
    pub fn new(py: Python<'_>, hub: &std::sync::Arc<Hub>) -> PyResult<Py<Wait>> {
        Py::new(
            py,
            Wait {
                hub: hub.clone(),
                outcome: Outcome::Pending,
                callbacks: Vec::new(),
                yielded: false,
                // What an awaitable yielding it to a task sets, as
                // Future.__await__ does.
                blocking: true,
            },
        )
    }

    pub fn is_pending(&self) -> bool {
        matches!(self.outcome, Outcome::Pending)
    }

    /// Ends the wait: takes its callbacks and no longer counts it.
    fn end(&mut self, outcome: Outcome) -> Vec<(Py<PyAny>, Option<Py<PyAny>>)> {
        self.outcome = outcome;
        let callbacks = std::mem::take(&mut self.callbacks);
        if !callbacks.is_empty() {
            self.hub.blocked.fetch_sub(1, Ordering::Relaxed);
        }
        callbacks
    }

    /// What was waited for has come: the waiting tasks wake (at the worker's
    /// [`Hub::run`], or through the loop). Nothing if it is done already.
    pub fn wake(wait: &Bound<'_, Wait>) {
        let py = wait.py();
        let (callbacks, hub) = {
            let Ok(mut this) = wait.try_borrow_mut() else {
                return;
            };
            if !this.is_pending() {
                return;
            }
            (this.end(Outcome::Done), this.hub.clone())
        };
        if callbacks.is_empty() {
            return;
        }
        if hub.direct {
            if let Ok(mut woken) = hub.woken.lock() {
                for (callback, context) in callbacks {
                    woken.push((callback, context, wait.clone().unbind()));
                }
            }
        } else {
            for (callback, context) in &callbacks {
                hub.call_soon(py, callback, context, wait);
            }
        }
    }

    /// Given up by its awaitable (thrown into, closed, or stepped before it
    /// was done): it ends without waking anyone.
    pub fn abandon(wait: &Bound<'_, Wait>) {
        if let Ok(mut this) = wait.try_borrow_mut() {
            if this.is_pending() {
                this.end(Outcome::Done);
            }
        }
    }

    fn not_ready(&self, py: Python<'_>, what: &str) -> PyErr {
        match self.hub.invalid_state.bind(py).call1((what,)) {
            Ok(e) => PyErr::from_value(e),
            Err(e) => e,
        }
    }

    fn cancelled_error(&self, py: Python<'_>) -> PyErr {
        let made = match &self.outcome {
            Outcome::Cancelled(Some(msg)) => self.hub.cancelled_error.bind(py).call1((msg,)),
            _ => self.hub.cancelled_error.bind(py).call0(),
        };
        match made {
            Ok(e) => PyErr::from_value(e),
            Err(e) => e,
        }
    }
}

#[pymethods]
impl Wait {
    fn get_loop(&self, py: Python<'_>) -> Py<PyAny> {
        self.hub.event_loop.clone_ref(py)
    }

    fn done(&self) -> bool {
        !self.is_pending()
    }

    fn cancelled(&self) -> bool {
        matches!(self.outcome, Outcome::Cancelled(_))
    }

    fn result(&self, py: Python<'_>) -> PyResult<()> {
        match self.outcome {
            Outcome::Done => Ok(()),
            Outcome::Cancelled(_) => Err(self.cancelled_error(py)),
            Outcome::Pending => Err(self.not_ready(py, "Result is not ready.")),
        }
    }

    fn exception(&self, py: Python<'_>) -> PyResult<Option<Py<PyAny>>> {
        match self.outcome {
            Outcome::Done => Ok(None),
            Outcome::Cancelled(_) => Err(self.cancelled_error(py)),
            Outcome::Pending => Err(self.not_ready(py, "Exception is not set.")),
        }
    }

    /// As a Future's: run (soon) when the wait ends, at once if it has.
    #[pyo3(signature = (callback, *, context=None))]
    fn add_done_callback(
        slf: &Bound<'_, Self>,
        callback: Py<PyAny>,
        context: Option<Py<PyAny>>,
    ) -> PyResult<()> {
        let py = slf.py();
        let context = context.filter(|c| !c.is_none(py));
        let hub = {
            let mut this = slf.try_borrow_mut()?;
            if this.is_pending() {
                if this.callbacks.is_empty() {
                    this.hub.blocked.fetch_add(1, Ordering::Relaxed);
                }
                this.callbacks.push((callback, context));
                return Ok(());
            }
            this.hub.clone()
        };
        hub.call_soon(py, &callback, &context, slf);
        Ok(())
    }

    fn remove_done_callback(&mut self, py: Python<'_>, callback: &Bound<'_, PyAny>) -> usize {
        let before = self.callbacks.len();
        self.callbacks
            .retain(|(cb, _)| !cb.bind(py).eq(callback).unwrap_or(false));
        let removed = before - self.callbacks.len();
        if removed > 0 && self.callbacks.is_empty() && self.is_pending() {
            self.hub.blocked.fetch_sub(1, Ordering::Relaxed);
        }
        removed
    }

    /// As a Future's: the waiting tasks wake (through the loop) to a
    /// `CancelledError`. False if it has ended.
    #[pyo3(signature = (msg=None))]
    fn cancel(slf: &Bound<'_, Self>, msg: Option<Py<PyAny>>) -> bool {
        let py = slf.py();
        let (callbacks, hub) = {
            let Ok(mut this) = slf.try_borrow_mut() else {
                return false;
            };
            if !this.is_pending() {
                return false;
            }
            let msg = msg.filter(|m| !m.is_none(py));
            (this.end(Outcome::Cancelled(msg)), this.hub.clone())
        };
        for (callback, context) in &callbacks {
            hub.call_soon(py, callback, context, slf);
        }
        true
    }

    fn __await__(slf: PyRef<'_, Self>) -> PyRef<'_, Self> {
        slf
    }

    fn __iter__(slf: PyRef<'_, Self>) -> PyRef<'_, Self> {
        slf
    }

    /// Awaited directly: yields itself until it ends, as `Future.__await__`.
    fn __next__(slf: &Bound<'_, Self>) -> PyResult<Option<Py<PyAny>>> {
        let py = slf.py();
        let mut this = slf.try_borrow_mut()?;
        if this.is_pending() {
            if this.yielded {
                return Err(PyRuntimeError::new_err("await wasn't used with future"));
            }
            this.yielded = true;
            this.blocking = true;
            return Ok(Some(slf.clone().into_any().unbind()));
        }
        this.result(py)?;
        Ok(None)
    }

    fn __repr__(&self) -> &'static str {
        match self.outcome {
            Outcome::Pending => "<pyrs.Wait pending>",
            Outcome::Done => "<pyrs.Wait finished>",
            Outcome::Cancelled(_) => "<pyrs.Wait cancelled>",
        }
    }

    fn __traverse__(&self, visit: PyVisit<'_>) -> Result<(), PyTraverseError> {
        for (callback, context) in &self.callbacks {
            visit.call(callback)?;
            if let Some(context) = context {
                visit.call(context)?;
            }
        }
        if let Outcome::Cancelled(Some(msg)) = &self.outcome {
            visit.call(msg)?;
        }
        Ok(())
    }

    fn __clear__(&mut self) {
        if !self.callbacks.is_empty() && self.is_pending() {
            self.hub.blocked.fetch_sub(1, Ordering::Relaxed);
        }
        self.callbacks.clear();
    }
}
