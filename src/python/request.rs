//! `pyrs.Request` and `pyrs.Headers`, what a handler receives, on the Python
//! worker thread only. A `Request` wraps the bytes the reactor received (shared,
//! not copied), the parser's offsets and its header field spans; `headers`,
//! `query` and `body` become Python objects the first time a handler reads them,
//! and the other attributes are made on each read from those bytes, so a handler
//! that only looks at `path` pays for nothing else.

use std::net::SocketAddr;
use std::ops::Range;
use std::sync::Arc;

use bytes::Bytes;
use pyo3::exceptions::{PyKeyError, PyValueError};
use pyo3::prelude::*;
use pyo3::sync::PyOnceLock;
use pyo3::types::{PyBytes, PyDict, PyList, PyString, PyTuple};
use pyrs_parser::{Field, Head};

use crate::tls::TlsInfo;

/// A request as a handler sees it. Immutable; attributes are computed on first use.
#[pyclass(frozen, module = "pyrs", name = "Request")]
pub struct Request {
    data: Bytes,
    head: Head,
    /// The batch's field spans; this request's are `fields[field_range]`.
    fields: Arc<[Field]>,
    field_range: Range<u32>,
    body: Bytes,
    remote: Option<SocketAddr>,
    /// Over HTTPS, the connection's TLS facts.
    tls: Option<Arc<TlsInfo>>,
    headers: PyOnceLock<Py<Headers>>,
    query: PyOnceLock<Py<PyDict>>,
    body_obj: PyOnceLock<Py<PyBytes>>,
}

impl Request {
    pub fn new(
        data: Bytes,
        head: Head,
        fields: Arc<[Field]>,
        field_range: Range<u32>,
        body: Bytes,
        remote: Option<SocketAddr>,
        tls: Option<Arc<TlsInfo>>,
    ) -> Request {
        Request {
            data,
            head,
            fields,
            field_range,
            body,
            remote,
            tls,
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
                let range = self.field_range.start as usize..self.field_range.end as usize;
                let fields = self.fields.get(range).unwrap_or(&[]);
                Py::new(py, Headers::new(py, &self.data, fields))
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

    /// The client's IP address as a string; empty over a Unix socket.
    #[getter]
    fn remote_addr(&self) -> String {
        self.remote.map(|r| r.ip().to_string()).unwrap_or_default()
    }

    /// The client's TCP port; 0 over a Unix socket.
    #[getter]
    fn remote_port(&self) -> u16 {
        self.remote.map_or(0, |r| r.port())
    }

    /// `"https"` over TLS, `"http"` otherwise.
    #[getter]
    fn scheme(&self) -> &'static str {
        if self.tls.is_some() {
            "https"
        } else {
            "http"
        }
    }

    /// The subject of the client's TLS certificate as an RFC 4514 string
    /// (`"CN=alice,O=Example"`), or `None` (plain HTTP, or no certificate).
    #[getter]
    fn client_cert(&self) -> Option<&str> {
        self.tls.as_ref()?.client_cert.as_deref()
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
    /// The fields the parser found, as spans into `data`. Names are tokens
    /// (ASCII), checked by the parser.
    fn new(py: Python<'_>, data: &[u8], fields: &[Field]) -> Headers {
        let items = fields
            .iter()
            .map(|f| {
                let name = latin1(f.name.get(data));
                (
                    name.to_ascii_lowercase(),
                    PyString::new(py, &name).unbind(),
                    PyString::new(py, &latin1(f.value.get(data))).unbind(),
                )
            })
            .collect();
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
