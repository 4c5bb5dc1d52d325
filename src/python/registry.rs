//! asyncio's registry of live tasks on Python 3.11, kept without Python frames,
//! on the Python worker thread. Every 3.11 Task registers itself in a
//! `weakref.WeakSet` (`asyncio.tasks._all_tasks`, what `all_tasks()` reads)
//! by calling its `add`, a Python method, and leaves it through the weak
//! reference's callback, a Python closure: together 7 % of the worker's
//! instructions per raw ASGI request. [`install`] gives that set an `add` of
//! its own ([`Add`]) that does what `WeakSet.add` does, with a callback
//! ([`Forget`]) that does what its `_remove` does, on the same containers, so
//! the set reads, iterates and counts as before. Python 3.12 and later keep
//! eager tasks that end in their first step out of that set already.

use pyo3::prelude::*;
use pyo3::types::{PyList, PySet, PyWeakrefReference};

/// What the set's `_remove` does when a task dies: drops its weak reference,
/// or, while the set is being iterated, leaves that to `_commit_removals`.
#[pyclass(frozen, module = "pyrs")]
struct Forget {
    data: Py<PySet>,
    pending: Py<PyList>,
    iterating: Py<PySet>,
}

#[pymethods]
impl Forget {
    fn __call__(&self, py: Python<'_>, item: &Bound<'_, PyAny>) -> PyResult<()> {
        if self.iterating.bind(py).is_empty() {
            self.data.bind(py).discard(item)?;
            Ok(())
        } else {
            self.pending.bind(py).append(item)
        }
    }
}

/// What `WeakSet.add` does: commits pending removals, then adds a weak
/// reference to `item` that [`Forget`] removes.
#[pyclass(frozen, module = "pyrs")]
struct Add {
    data: Py<PySet>,
    pending: Py<PyList>,
    commit: Py<PyAny>,
    forget: Py<Forget>,
}

#[pymethods]
impl Add {
    fn __call__(&self, py: Python<'_>, item: &Bound<'_, PyAny>) -> PyResult<()> {
        if !self.pending.bind(py).is_empty() {
            self.commit.bind(py).call0()?;
        }
        let reference = PyWeakrefReference::new_with(item, self.forget.bind(py))?;
        self.data.bind(py).add(reference)
    }
}

/// Gives `asyncio.tasks._all_tasks` the [`Add`] above, where it is the plain
/// `WeakSet` of Python 3.11 (anything else is left alone); `Ok(false)` when
/// it was left alone.
pub fn install(py: Python<'_>) -> PyResult<bool> {
    let tasks = py.import("asyncio.tasks")?;
    let Ok(registry) = tasks.getattr("_all_tasks") else {
        return Ok(false);
    };
    let weak_set = py.import("weakref")?.getattr("WeakSet")?;
    if !registry.get_type().is(&weak_set) {
        return Ok(false);
    }
    let (Ok(data), Ok(pending), Ok(iterating)) = (
        registry.getattr("data")?.cast_into::<PySet>(),
        registry.getattr("_pending_removals")?.cast_into::<PyList>(),
        registry.getattr("_iterating")?.cast_into::<PySet>(),
    ) else {
        return Ok(false);
    };
    let forget = Py::new(
        py,
        Forget {
            data: data.clone().unbind(),
            pending: pending.clone().unbind(),
            iterating: iterating.unbind(),
        },
    )?;
    let add = Add {
        data: data.unbind(),
        pending: pending.unbind(),
        commit: registry.getattr("_commit_removals")?.unbind(),
        forget,
    };
    registry.setattr("add", add)?;
    Ok(true)
}
