//! The optional `startup()` and `shutdown()` methods of handler classes, run once
//! per instance on the Python worker thread: before the server listens and after
//! it stopped serving. A coroutine hook is awaited on the event loop.

use pyo3::prelude::*;

use super::aio::Runtime;
use super::errors::format_exception;

/// Which hook to run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Hook {
    /// The first failure stops the start (no further hooks run).
    Startup,
    /// Every instance's hook runs; failures are logged.
    Shutdown,
}

impl Hook {
    fn name(self) -> &'static str {
        match self {
            Hook::Startup => "startup",
            Hook::Shutdown => "shutdown",
        }
    }
}

/// Calls `hook` on every instance that has one, awaiting it on `runtime` when it
/// returns an awaitable (bounded by `timeout` seconds, when finite). `instances`
/// pairs each instance with its `modules` entry's index. Returns the first
/// failure as (entry index, message).
pub fn run(
    py: Python<'_>,
    instances: &[(usize, Py<PyAny>)],
    runtime: Option<&Runtime>,
    hook: Hook,
    timeout: f64,
) -> Option<(usize, String)> {
    let mut first_error = None;
    for (index, instance) in instances {
        let index = *index;
        let Ok(method) = instance.bind(py).getattr(hook.name()) else {
            continue;
        };
        let outcome = method.call0().and_then(|result| {
            let awaitable = py
                .import("inspect")?
                .getattr("isawaitable")?
                .call1((&result,))?
                .is_truthy()?;
            match (runtime, awaitable) {
                (Some(rt), true) => {
                    let waited = if timeout.is_finite() {
                        py.import("asyncio")?
                            .getattr("wait_for")?
                            .call1((result, timeout))?
                    } else {
                        result
                    };
                    rt.run_until_complete(py, waited)
                }
                _ => Ok(()),
            }
        });
        if let Err(e) = outcome {
            let message = format!("{}() failed:\n{}", hook.name(), format_exception(py, &e));
            if hook == Hook::Startup {
                return Some((index, message));
            }
            eprintln!("pyrs: {message}");
            first_error.get_or_insert((index, message));
        }
    }
    first_error
}
