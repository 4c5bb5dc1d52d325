//! Python exceptions as text: tracebacks for stderr and for startup errors, and
//! type names for messages. Runs on the Python worker thread, with the GIL held.

use pyo3::prelude::*;
use pyo3::types::PyString;

/// `traceback.format_exception(e)` joined, or the exception's str if that fails.
pub fn format_exception(py: Python<'_>, e: &PyErr) -> String {
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

/// Prints `pyrs: {what}:` and the exception with its traceback to stderr.
pub fn log(py: Python<'_>, what: &str, e: &PyErr) {
    eprintln!("pyrs: {what}:");
    e.display(py);
}

/// The name of a value's type, for messages.
pub fn type_name(v: &Bound<'_, PyAny>) -> String {
    v.get_type()
        .name()
        .map(|n| n.to_string())
        .unwrap_or_else(|_| "an object".to_owned())
}
