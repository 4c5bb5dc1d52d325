//! The `pyrs` Python module, provided by the binary: `Request` (what a handler
//! receives), `Headers`, `Response` and `HTTPError`. Lives on the Python worker
//! thread only. A `Request` wraps the bytes the reactor received (shared, not
//! copied) plus the parser's offsets; each attribute is turned into a Python object
//! the first time a handler reads it, so a handler that only looks at `path` pays
//! for nothing else.

use std::net::SocketAddr;

use bytes::Bytes;
use pyo3::exceptions::{PyKeyError, PyValueError};
use pyo3::prelude::*;
use pyo3::sync::PyOnceLock;
use pyo3::types::{PyBytes, PyDict, PyList, PyString, PyTuple};
use pyrs_parser::{Head, MAX_HEADERS};

/// Python source for the parts of the module that are simplest in Python.
const PY_PARTS: &std::ffi::CStr = c"
import os as _os


def _new_event_loop(kind):
    \"\"\"pyrs internals: the event loop for async handlers, and its name.\"\"\"
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


class _AsyncBridge:
    \"\"\"pyrs internals: collects finished handler tasks for the worker thread and
    stops the event loop when there is something for it to do.\"\"\"

    def __init__(self, loop, wake_fd):
        self.loop = loop
        self.wake_fd = wake_fd
        self.completed = []
        loop.add_reader(wake_fd, self._wake)

    def done(self, task):
        self.completed.append(task)
        if len(self.completed) == 1:
            self.loop.stop()

    def _wake(self):
        try:
            _os.read(self.wake_fd, 8)
        except BlockingIOError:
            pass
        self.loop.stop()

    def take(self):
        done, self.completed = self.completed, []
        return done

    def close(self):
        \"\"\"Stops watching the wake fd, so that shutdown hooks run undisturbed.\"\"\"
        self.loop.remove_reader(self.wake_fd)


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

/// A request as a handler sees it. Immutable; attributes are computed on first use.
#[pyclass(frozen, module = "pyrs", name = "Request")]
pub struct Request {
    data: Bytes,
    head: Head,
    body: Bytes,
    remote: SocketAddr,
    headers: PyOnceLock<Py<Headers>>,
    query: PyOnceLock<Py<PyDict>>,
    body_obj: PyOnceLock<Py<PyBytes>>,
}

impl Request {
    pub fn new(data: Bytes, head: Head, body: Bytes, remote: SocketAddr) -> Request {
        Request {
            data,
            head,
            body,
            remote,
            headers: PyOnceLock::new(),
            query: PyOnceLock::new(),
            body_obj: PyOnceLock::new(),
        }
    }

    /// The body the handler sees (decoded if it was chunked).
    pub fn body_bytes(&self) -> &[u8] {
        &self.body
    }

    /// `METHOD target`, for log lines.
    pub fn describe(&self) -> String {
        format!(
            "{} {}",
            self.text_of(self.head.method.get(&self.data)),
            self.text_of(self.head.target.get(&self.data))
        )
    }

    fn text_of(&self, bytes: &[u8]) -> String {
        String::from_utf8_lossy(bytes).into_owned()
    }
}

static PARSE_QS: PyOnceLock<Py<PyAny>> = PyOnceLock::new();
static JSON_LOADS: PyOnceLock<Py<PyAny>> = PyOnceLock::new();

#[pymethods]
impl Request {
    /// The method, e.g. `"GET"`.
    #[getter]
    fn method<'py>(&self, py: Python<'py>) -> Bound<'py, PyString> {
        let m = self.head.method.get(&self.data);
        match m {
            b"GET" => pyo3::intern!(py, "GET").clone(),
            b"POST" => pyo3::intern!(py, "POST").clone(),
            _ => PyString::new(py, &self.text_of(m)),
        }
    }

    /// The path without the query string, as sent (not percent-decoded).
    #[getter]
    fn path<'py>(&self, py: Python<'py>) -> Bound<'py, PyString> {
        let p = self.head.path_bytes(&self.data);
        match std::str::from_utf8(p) {
            Ok(s) => PyString::new(py, s),
            Err(_) => PyString::new(py, &self.text_of(p)),
        }
    }

    /// The query string without the `?` (empty when there is none).
    #[getter]
    fn query_string<'py>(&self, py: Python<'py>) -> Bound<'py, PyString> {
        PyString::new(py, &self.text_of(self.head.query.get(&self.data)))
    }

    /// The request-target exactly as sent.
    #[getter]
    fn target<'py>(&self, py: Python<'py>) -> Bound<'py, PyString> {
        PyString::new(py, &self.text_of(self.head.target.get(&self.data)))
    }

    /// The query parsed into `{name: [value, ...]}` (blank values kept).
    #[getter]
    fn query<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
        let dict = self.query.get_or_try_init(py, || -> PyResult<Py<PyDict>> {
            let parse_qs = PARSE_QS.import(py, "urllib.parse", "parse_qs")?;
            let kwargs = PyDict::new(py);
            kwargs.set_item("keep_blank_values", true)?;
            let qs = self.query_string(py);
            Ok(parse_qs
                .call((qs,), Some(&kwargs))?
                .cast_into::<PyDict>()?
                .unbind())
        })?;
        Ok(dict.bind(py).clone())
    }

    /// The header fields: case-insensitive, multi-valued.
    #[getter]
    fn headers<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, Headers>> {
        let h = self
            .headers
            .get_or_try_init(py, || -> PyResult<Py<Headers>> {
                Py::new(py, Headers::parse(py, &self.data[..self.head.len]))
            })?;
        Ok(h.bind(py).clone())
    }

    /// The body as bytes (chunked bodies already decoded).
    #[getter]
    fn body<'py>(&self, py: Python<'py>) -> Bound<'py, PyBytes> {
        self.body_obj
            .get_or_init(py, || PyBytes::new(py, &self.body).unbind())
            .bind(py)
            .clone()
    }

    /// The body decoded as UTF-8 (invalid bytes replaced).
    #[getter]
    fn text(&self) -> String {
        self.text_of(&self.body)
    }

    /// The body parsed as JSON; an invalid body answers 400 unless caught.
    fn json<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        let loads = JSON_LOADS.import(py, "json", "loads")?;
        match loads.call1((self.body(py),)) {
            Ok(v) => Ok(v),
            Err(e) if e.is_instance_of::<PyValueError>(py) => {
                let http_error = py.import("pyrs")?.getattr("HTTPError")?;
                let msg = format!("invalid JSON body: {}", e.value(py));
                Err(PyErr::from_value(http_error.call1((400, msg))?))
            }
            Err(e) => Err(e),
        }
    }

    /// `"HTTP/1.1"` or `"HTTP/1.0"`.
    #[getter]
    fn http_version(&self) -> &'static str {
        if self.head.minor_version == 0 {
            "HTTP/1.0"
        } else {
            "HTTP/1.1"
        }
    }

    /// The client's IP address as a string.
    #[getter]
    fn remote_addr(&self) -> String {
        self.remote.ip().to_string()
    }

    /// The client's TCP port.
    #[getter]
    fn remote_port(&self) -> u16 {
        self.remote.port()
    }

    fn __repr__(&self, py: Python<'_>) -> String {
        format!("<pyrs.Request {} {}>", self.method(py), self.path(py))
    }
}

/// Header fields in arrival order. Lookups ignore case; `headers[name]` gives the
/// first value, `getall(name)` every value.
#[pyclass(frozen, module = "pyrs", name = "Headers", mapping)]
pub struct Headers {
    /// (lower-cased name, name as sent, value)
    items: Vec<(String, Py<PyString>, Py<PyString>)>,
}

/// Header bytes are ISO-8859-1 (RFC 9110 §5.5): every byte is one code point.
fn latin1(bytes: &[u8]) -> String {
    bytes.iter().map(|&b| b as char).collect()
}

impl Headers {
    fn parse(py: Python<'_>, head: &[u8]) -> Headers {
        let mut raw = [httparse::EMPTY_HEADER; MAX_HEADERS];
        let mut req = httparse::Request::new(&mut raw);
        // The reactor parsed these exact bytes already; a failure here is impossible,
        // and would only mean no headers.
        let items = match req.parse(head) {
            Ok(_) => req
                .headers
                .iter()
                .map(|h| {
                    (
                        h.name.to_ascii_lowercase(),
                        PyString::new(py, h.name).unbind(),
                        PyString::new(py, &latin1(h.value)).unbind(),
                    )
                })
                .collect(),
            Err(_) => Vec::new(),
        };
        Headers { items }
    }

    fn values_of<'a>(&'a self, name: &str) -> impl Iterator<Item = &'a Py<PyString>> + 'a {
        let lower = name.to_ascii_lowercase();
        self.items
            .iter()
            .filter(move |(n, _, _)| *n == lower)
            .map(|(_, _, v)| v)
    }
}

#[pymethods]
impl Headers {
    fn __getitem__(&self, py: Python<'_>, name: &str) -> PyResult<Py<PyString>> {
        self.values_of(name)
            .next()
            .map(|v| v.clone_ref(py))
            .ok_or_else(|| PyKeyError::new_err(name.to_owned()))
    }

    /// The first value of `name`, or `default`.
    #[pyo3(signature = (name, default = None))]
    fn get(&self, py: Python<'_>, name: &str, default: Option<Py<PyAny>>) -> Option<Py<PyAny>> {
        match self.values_of(name).next() {
            Some(v) => Some(v.clone_ref(py).into_any()),
            None => default,
        }
    }

    /// Every value of `name`, in order (empty list when absent).
    fn getall<'py>(&self, py: Python<'py>, name: &str) -> PyResult<Bound<'py, PyList>> {
        PyList::new(py, self.values_of(name).map(|v| v.clone_ref(py)))
    }

    fn __contains__(&self, name: &str) -> bool {
        self.values_of(name).next().is_some()
    }

    fn __len__(&self) -> usize {
        self.items.len()
    }

    fn __iter__<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        self.keys(py)?.try_iter().map(Bound::into_any)
    }

    /// Names as sent, one per field (repeated names repeat).
    fn keys<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyList>> {
        PyList::new(py, self.items.iter().map(|(_, n, _)| n.clone_ref(py)))
    }

    fn values<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyList>> {
        PyList::new(py, self.items.iter().map(|(_, _, v)| v.clone_ref(py)))
    }

    /// `(name, value)` pairs in arrival order.
    fn items<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyList>> {
        let pairs = self
            .items
            .iter()
            .map(|(_, n, v)| PyTuple::new(py, [n.clone_ref(py), v.clone_ref(py)]))
            .collect::<PyResult<Vec<_>>>()?;
        PyList::new(py, pairs)
    }

    fn __repr__(&self, py: Python<'_>) -> PyResult<String> {
        Ok(format!("pyrs.Headers({})", self.items(py)?.repr()?))
    }
}

/// Full control over a response:
/// `Response(body, status=200, headers=None, content_type=None)`.
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

/// The `pyrs` module, registered before the interpreter starts so that handler
/// modules can `import pyrs`.
#[pymodule]
#[pyo3(name = "pyrs")]
pub fn pyrs_module(m: &Bound<'_, PyModule>) -> PyResult<()> {
    let py = m.py();
    m.add_class::<Request>()?;
    m.add_class::<Headers>()?;
    m.add_class::<Response>()?;
    m.add("__version__", env!("CARGO_PKG_VERSION"))?;
    let globals = m.dict();
    py.run(PY_PARTS, Some(&globals), None)?;
    Ok(())
}
