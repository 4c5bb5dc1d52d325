//! The `pyrs` Python module, registered before the interpreter starts so that
//! handler modules can `import pyrs`: `Request` and `Headers` (request.rs),
//! `Response` and `HTTPError` (here). Used on the Python worker thread only.

use pyo3::exceptions::PyValueError;
use pyo3::prelude::*;

use super::request::{Headers, Request};

/// `HTTPError` is simplest in Python.
const PY_PARTS: &std::ffi::CStr = c"
class HTTPError(Exception):
    \"\"\"Raise in a handler to answer with an HTTP status instead of a 500:

        raise pyrs.HTTPError(404, 'no such user')

    `body` may be anything a handler may return (str, bytes, dict, list, None);
    None answers with the status's reason phrase.
    \"\"\"

    def __init__(self, status, body=None, headers=None, content_type=None):
        super().__init__(status, body)
        self.status = status
        self.body = body
        self.headers = headers
        self.content_type = content_type
";

/// Full control over a response:
/// `Response(body, status=200, headers=None, content_type=None)`; a `body`
/// that is a generator or an async generator streams (`produce.rs`).
#[pyclass(frozen, module = "pyrs", name = "Response")]
pub struct Response {
    #[pyo3(get)]
    pub body: Py<PyAny>,
    #[pyo3(get)]
    pub status: u16,
    #[pyo3(get)]
    pub headers: Py<PyAny>,
    #[pyo3(get)]
    pub content_type: Option<String>,
}

#[pymethods]
impl Response {
    #[new]
    #[pyo3(signature = (body = None, status = 200, headers = None, content_type = None))]
    fn new(
        py: Python<'_>,
        body: Option<Py<PyAny>>,
        status: i64,
        headers: Option<Py<PyAny>>,
        content_type: Option<String>,
    ) -> PyResult<Response> {
        let status = valid_status(status)?;
        Ok(Response {
            body: body.unwrap_or_else(|| py.None()),
            status,
            headers: headers.unwrap_or_else(|| py.None()),
            content_type,
        })
    }

    fn __repr__(&self) -> String {
        format!("<pyrs.Response {}>", self.status)
    }
}

/// A final status a handler may answer with: 200..=599.
pub fn valid_status(status: i64) -> PyResult<u16> {
    if (200..=599).contains(&status) {
        Ok(status as u16)
    } else {
        Err(PyValueError::new_err(format!(
            "status must be between 200 and 599, got {status}"
        )))
    }
}

/// The `pyrs` module the binary builds in, registered before the interpreter
/// starts so that handler modules can `import pyrs`.
#[pymodule]
#[pyo3(name = "pyrs")]
pub fn pyrs_module(m: &Bound<'_, PyModule>) -> PyResult<()> {
    fill(m)
}

/// Adds the classes and `__version__` to `m`: the binary's built-in `pyrs`, or
/// the Python package's extension module `pyrs._pyrs`, which `pyrs/__init__.py`
/// re-exports (the same classes either way).
pub fn fill(m: &Bound<'_, PyModule>) -> PyResult<()> {
    let py = m.py();
    m.add_class::<Request>()?;
    m.add_class::<Headers>()?;
    m.add_class::<Response>()?;
    m.add("__version__", env!("CARGO_PKG_VERSION"))?;
    let globals = m.dict();
    py.run(PY_PARTS, Some(&globals), None)?;
    Ok(())
}
