//! PEP 3333 applications, on the Python worker thread: a [`Job`] becomes an
//! environ dict (built from a per-app copy of its constant entries, with interned
//! keys and a cache of `HTTP_*` names), the app is called with it and a
//! `start_response`, and the status, headers and body it produces are encoded into
//! the reactor's outbox. The iterable's `close()` is always called. The response
//! is complete before it is sent: the body is collected from the iterable (and
//! `write()`) first, so `Content-Length` is always exact.

use std::collections::HashMap;
use std::ffi::CStr;
use std::sync::{Arc, Mutex};

use bytes::BytesMut;
use pyo3::exceptions::{PyAssertionError, PyTypeError, PyValueError};
use pyo3::intern;
use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyDict, PyList, PyString, PyTuple};
use pyrs_parser::{BodyKind, Field};

use super::apps::{percent_decode, AppSetting};
use super::encode::{self, header_value};
use super::errors::{self, type_name};
use super::outbox::{Outboxes, ReplyTo};
use crate::dispatch::Job;
use crate::response::{self, Builder, Persist};

/// `wsgi.file_wrapper`: iterates a file-like object in blocks and closes it.
const FILE_WRAPPER: &CStr = c"
class FileWrapper:
    \"\"\"wsgi.file_wrapper: yields blocks of `filelike`; closes it when done.\"\"\"

    def __init__(self, filelike, blksize=65536):
        self.filelike = filelike
        self.blksize = blksize
        if hasattr(filelike, 'close'):
            self.close = filelike.close

    def __iter__(self):
        return self

    def __next__(self):
        data = self.filelike.read(self.blksize)
        if data:
            return data
        raise StopIteration
";

/// Most distinct header names whose environ key is kept; others are built per
/// request (a client sending random names cannot grow the cache).
const MAX_CACHED_KEYS: usize = 512;

/// A WSGI application of one `modules` entry.
pub struct WsgiApp {
    app: Py<PyAny>,
    /// `module:attr`, for error messages.
    name: String,
    /// The mount point (`/p` for `/p/*`, empty for `/*` and exact routes): the
    /// environ's `SCRIPT_NAME`, taken off the front of `PATH_INFO`.
    script_name: String,
    /// The entries every request's environ starts with.
    base: Py<PyDict>,
    bytes_io: Py<PyAny>,
    /// Environ keys by header name as sent (`User-Agent` → `HTTP_USER_AGENT`);
    /// shared by the Python threads (`python_threads`).
    keys: Mutex<HashMap<Box<[u8]>, Py<PyString>>>,
}

impl WsgiApp {
    pub fn new(
        py: Python<'_>,
        app: Bound<'_, PyAny>,
        name: String,
        setting: &AppSetting<'_>,
    ) -> PyResult<WsgiApp> {
        let script_name = setting.mount_prefix().to_owned();
        let namespace = PyDict::new(py);
        py.run(FILE_WRAPPER, Some(&namespace), None)?;
        let file_wrapper = namespace
            .get_item("FileWrapper")?
            .ok_or_else(|| PyValueError::new_err("FileWrapper missing"))?;
        let sys = py.import("sys")?;
        let base = PyDict::new(py);
        base.set_item("SCRIPT_NAME", latin1_str(py, script_name.as_bytes()))?;
        base.set_item("SERVER_NAME", setting.server_name)?;
        base.set_item("SERVER_PORT", setting.server_port.to_string())?;
        base.set_item("wsgi.version", PyTuple::new(py, [1, 0])?)?;
        base.set_item("wsgi.url_scheme", "http")?;
        base.set_item("wsgi.errors", sys.getattr("stderr")?)?;
        base.set_item("wsgi.multithread", setting.multithread)?;
        base.set_item("wsgi.multiprocess", setting.multiprocess)?;
        base.set_item("wsgi.run_once", false)?;
        // The whole body is in wsgi.input, which ends where the body does:
        // Werkzeug then reads chunked bodies too.
        base.set_item("wsgi.input_terminated", true)?;
        base.set_item("wsgi.file_wrapper", file_wrapper)?;
        Ok(WsgiApp {
            app: app.unbind(),
            name,
            script_name,
            base: base.unbind(),
            bytes_io: py.import("io")?.getattr("BytesIO")?.unbind(),
            keys: Mutex::new(HashMap::new()),
        })
    }

    /// Serves one request; the answer (or a logged 500) goes to `outboxes`.
    pub fn call(
        &self,
        py: Python<'_>,
        job: Job,
        fields: &Arc<[Field]>,
        target: ReplyTo,
        outboxes: &mut Outboxes,
    ) {
        let head = job.head;
        let fields = job.fields_in(fields);
        outboxes.answer(target, |out| {
            let mark = out.len();
            if let Err(e) = self.respond(py, &job, fields, out) {
                out.truncate(mark);
                let what = format!("error in WSGI app {} for {}", self.name, job.describe());
                errors::log(py, &what, &e);
                encode::internal_error(out, &head);
            }
        });
    }

    fn respond(
        &self,
        py: Python<'_>,
        job: &Job,
        fields: &[Field],
        out: &mut BytesMut,
    ) -> PyResult<()> {
        let environ = self.environ(py, job, fields)?;
        let start = Bound::new(py, StartResponse::default())?;
        let iterable = self.app.bind(py).call1((environ, &start))?;
        let collected = collect(&iterable);
        // PEP 3333: close() is called whatever happened while iterating. A list
        // or tuple (what most apps return) has none; asking would raise and
        // catch an AttributeError per request.
        let plain =
            iterable.is_exact_instance_of::<PyList>() || iterable.is_exact_instance_of::<PyTuple>();
        let closed = match plain {
            true => Ok(()),
            false => match iterable.getattr_opt(intern!(py, "close"))? {
                Some(close) => close.call0().map(|_| ()),
                None => Ok(()),
            },
        };
        let body = collected?;
        closed?;
        let start = start.borrow();
        let (Some(status), Some(headers)) = (&start.status, &start.headers) else {
            return Err(PyAssertionError::new_err(
                "the application returned without calling start_response()",
            ));
        };
        let code = status_code(status.bind(py).to_str()?)?;
        let mut builder = Builder::new(out, code);
        let mut scratch = Vec::new();
        for pair in headers.bind(py).iter() {
            let pair = pair.cast_into::<PyTuple>().map_err(|_| {
                PyTypeError::new_err("response headers must be a list of (name, value) tuples")
            })?;
            let (name, value): (Bound<'_, PyString>, Bound<'_, PyAny>) = pair.extract()?;
            let value = header_value(&value, &mut scratch)?;
            builder.header(name.to_str()?.as_bytes(), &value)?;
        }
        let mut whole = start.written.clone();
        let body: &[u8] = match (&body, whole.is_empty()) {
            (Collected::One(bytes), true) => bytes.as_bytes(),
            (body, _) => {
                body.append_to(&mut whole);
                &whole
            }
        };
        builder.finish(
            None,
            body,
            Persist::of(&job.head),
            response::head_only(&job.head),
        )?;
        Ok(())
    }

    /// The environ for one request (PEP 3333 and CGI's names).
    fn environ<'py>(
        &self,
        py: Python<'py>,
        job: &Job,
        fields: &[Field],
    ) -> PyResult<Bound<'py, PyDict>> {
        let env = self.base.bind(py).copy()?;
        let data = &job.data;
        let head = &job.head;
        env.set_item(
            intern!(py, "REQUEST_METHOD"),
            method(py, head.method.get(data)),
        )?;
        let path = head.path_bytes(data);
        let rest = path.get(self.script_name.len()..).unwrap_or(b"");
        env.set_item(
            intern!(py, "PATH_INFO"),
            latin1_str(py, &percent_decode(rest)),
        )?;
        env.set_item(
            intern!(py, "QUERY_STRING"),
            latin1_str(py, head.query.get(data)),
        )?;
        env.set_item(
            intern!(py, "SERVER_PROTOCOL"),
            if head.minor_version == 0 {
                intern!(py, "HTTP/1.0")
            } else {
                intern!(py, "HTTP/1.1")
            },
        )?;
        // Over a Unix socket there is no client address: both are empty.
        let (addr, port) = job.remote.map_or((String::new(), String::new()), |r| {
            (r.ip().to_string(), r.port().to_string())
        });
        env.set_item(intern!(py, "REMOTE_ADDR"), addr)?;
        env.set_item(intern!(py, "REMOTE_PORT"), port)?;
        if let Some(tls) = &job.tls {
            // The base says "http"; HTTPS=on as CGI servers set it.
            env.set_item(intern!(py, "wsgi.url_scheme"), intern!(py, "https"))?;
            env.set_item(intern!(py, "HTTPS"), intern!(py, "on"))?;
            if let Some(subject) = &tls.client_cert {
                env.set_item(intern!(py, "SSL_CLIENT_S_DN"), subject)?;
            }
        }
        for field in fields {
            let name = field.name.get(data);
            // `X_Forwarded_For` would share `X-Forwarded-For`'s key: such names are
            // dropped rather than let one spoof the other (as nginx does).
            if name.contains(&b'_') {
                continue;
            }
            let value = field.value.get(data);
            if name.eq_ignore_ascii_case(b"host") {
                set_server(py, &env, value)?;
            }
            let key = self.key(py, name);
            let key = key.bind(py);
            match env.get_item(key)? {
                // Repeated fields: one value, joined with commas (RFC 9110 §5.3).
                Some(previous) => {
                    let joined = format!(
                        "{},{}",
                        previous.cast::<PyString>()?.to_str()?,
                        latin1(value)
                    );
                    env.set_item(key, joined)?;
                }
                None => env.set_item(key, latin1_str(py, value))?,
            }
        }
        if head.body == BodyKind::Chunked {
            // The chunked body was decoded whole: its length is known.
            env.set_item(intern!(py, "CONTENT_LENGTH"), job.body.len().to_string())?;
        }
        let input = self
            .bytes_io
            .bind(py)
            .call1((PyBytes::new(py, &job.body),))?;
        env.set_item(intern!(py, "wsgi.input"), input)?;
        Ok(env)
    }

    /// The environ key for a header name: `CONTENT_TYPE`, `CONTENT_LENGTH`, or
    /// `HTTP_` and the name upper-cased with `-` as `_`.
    fn key(&self, py: Python<'_>, name: &[u8]) -> Py<PyString> {
        let mut keys = self.keys.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(key) = keys.get(name) {
            return key.clone_ref(py);
        }
        let mut key = String::with_capacity(name.len() + 5);
        if !name.eq_ignore_ascii_case(b"content-type")
            && !name.eq_ignore_ascii_case(b"content-length")
        {
            key.push_str("HTTP_");
        }
        key.extend(name.iter().map(|&b| match b {
            b'-' => '_',
            b => char::from(b.to_ascii_uppercase()),
        }));
        let key = PyString::intern(py, &key).unbind();
        if keys.len() < MAX_CACHED_KEYS {
            keys.insert(name.into(), key.clone_ref(py));
        }
        key
    }
}

/// `SERVER_NAME` and `SERVER_PORT` from the request's `Host` (host, `[v6]`,
/// optional port), which says where the client sent it.
fn set_server(py: Python<'_>, env: &Bound<'_, PyDict>, host: &[u8]) -> PyResult<()> {
    if host.is_empty() {
        return Ok(());
    }
    let (name, port) = match host.iter().rposition(|&b| b == b':') {
        Some(colon) if !host[colon + 1..].contains(&b']') => (&host[..colon], &host[colon + 1..]),
        _ => (host, &b"80"[..]),
    };
    env.set_item(intern!(py, "SERVER_NAME"), latin1_str(py, name))?;
    env.set_item(intern!(py, "SERVER_PORT"), latin1_str(py, port))?;
    Ok(())
}

fn method<'py>(py: Python<'py>, m: &[u8]) -> Bound<'py, PyString> {
    match m {
        b"GET" => intern!(py, "GET").clone(),
        b"POST" => intern!(py, "POST").clone(),
        b"HEAD" => intern!(py, "HEAD").clone(),
        _ => latin1_str(py, m),
    }
}

/// Bytes as a native string: each byte one code point (PEP 3333, ISO-8859-1).
fn latin1_str<'py>(py: Python<'py>, bytes: &[u8]) -> Bound<'py, PyString> {
    match std::str::from_utf8(bytes) {
        Ok(s) if s.is_ascii() => PyString::new(py, s),
        _ => PyString::new(py, &latin1(bytes)),
    }
}

fn latin1(bytes: &[u8]) -> String {
    bytes.iter().map(|&b| char::from(b)).collect()
}

/// The status code of a WSGI status string (`"200 OK"`): three digits, then a
/// space and the reason (or nothing). Only a final status (200 to 599) can be an
/// application's answer.
fn status_code(status: &str) -> PyResult<u16> {
    let bytes = status.as_bytes();
    let code = bytes
        .get(..3)
        .filter(|d| d.iter().all(u8::is_ascii_digit))
        .filter(|_| matches!(bytes.get(3), None | Some(b' ')))
        .and_then(|d| std::str::from_utf8(d).ok())
        .and_then(|d| d.parse::<u16>().ok())
        .filter(|c| (200..=599).contains(c));
    code.ok_or_else(|| {
        PyValueError::new_err(format!(
            "WSGI status {status:?} is not a final status line such as \"200 OK\""
        ))
    })
}

/// The body an application produced.
enum Collected<'py> {
    /// One `bytes` object (the common case: a list of one item): used as is.
    One(Bound<'py, PyBytes>),
    Many(Vec<u8>),
}

impl Collected<'_> {
    fn append_to(&self, out: &mut Vec<u8>) {
        match self {
            Collected::One(b) => out.extend_from_slice(b.as_bytes()),
            Collected::Many(v) => out.extend_from_slice(v),
        }
    }
}

/// Iterates the app's result; every item must be `bytes`.
fn collect<'py>(iterable: &Bound<'py, PyAny>) -> PyResult<Collected<'py>> {
    let item = |value: Bound<'py, PyAny>| -> PyResult<Bound<'py, PyBytes>> {
        value.cast_into::<PyBytes>().map_err(|e| {
            PyTypeError::new_err(format!(
                "a WSGI application must yield bytes, not {}",
                type_name(&e.into_inner())
            ))
        })
    };
    if let Ok(list) = iterable.cast::<PyList>() {
        if list.len() == 1 {
            return Ok(Collected::One(item(list.get_item(0)?)?));
        }
    }
    let mut first: Option<Bound<'py, PyBytes>> = None;
    let mut rest: Option<Vec<u8>> = None;
    for value in iterable.try_iter()? {
        let bytes = item(value?)?;
        match (&first, &mut rest) {
            (None, _) => first = Some(bytes),
            (Some(f), None) => {
                let mut all = f.as_bytes().to_vec();
                all.extend_from_slice(bytes.as_bytes());
                rest = Some(all);
            }
            (Some(_), Some(all)) => all.extend_from_slice(bytes.as_bytes()),
        }
    }
    Ok(match (first, rest) {
        (_, Some(all)) => Collected::Many(all),
        (Some(one), None) => Collected::One(one),
        (None, None) => Collected::Many(Vec::new()),
    })
}

/// The `start_response` callable of one request.
#[pyclass(module = "pyrs", name = "StartResponse")]
#[derive(Default)]
struct StartResponse {
    status: Option<Py<PyString>>,
    headers: Option<Py<PyList>>,
    /// What the app passed to `write()`, before its iterable's items.
    written: Vec<u8>,
}

#[pymethods]
impl StartResponse {
    /// `start_response(status, response_headers, exc_info=None)`; returns `write`.
    #[pyo3(signature = (status, headers, exc_info = None))]
    fn __call__<'py>(
        slf: &Bound<'py, Self>,
        status: Bound<'py, PyAny>,
        headers: Bound<'py, PyAny>,
        exc_info: Option<Bound<'py, PyAny>>,
    ) -> PyResult<Bound<'py, PyAny>> {
        let status = status
            .cast_into::<PyString>()
            .map_err(|_| PyTypeError::new_err("the WSGI status must be a str"))?;
        let headers = headers
            .cast_into::<PyList>()
            .map_err(|_| PyTypeError::new_err("the WSGI response headers must be a list"))?;
        {
            let mut me = slf.borrow_mut();
            // Nothing is sent before the app returns, so a call with exc_info
            // (an error page after a failure) may always replace the first.
            if me.status.is_some() && exc_info.as_ref().is_none_or(|e| e.is_none()) {
                return Err(PyAssertionError::new_err(
                    "start_response() called a second time without exc_info",
                ));
            }
            me.status = Some(status.unbind());
            me.headers = Some(headers.unbind());
        }
        slf.getattr(intern!(slf.py(), "write"))
    }

    /// The `write()` callable start_response returns (for old applications).
    fn write(&mut self, data: &Bound<'_, PyAny>) -> PyResult<()> {
        if self.status.is_none() {
            return Err(PyAssertionError::new_err(
                "write() called before start_response()",
            ));
        }
        let bytes = data
            .cast::<PyBytes>()
            .map_err(|_| PyTypeError::new_err("write() takes bytes"))?;
        self.written.extend_from_slice(bytes.as_bytes());
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_status_codes() {
        assert_eq!(status_code("200 OK").ok(), Some(200));
        assert_eq!(status_code("404").ok(), Some(404));
        assert_eq!(status_code("599 Custom reason").ok(), Some(599));
        for bad in [
            "OK",
            "20 OK",
            "2000 OK",
            "200OK",
            "101 Switching",
            "600 x",
            "",
        ] {
            assert!(status_code(bad).is_err(), "{bad:?}");
        }
    }
}
