//! PEP 3333 applications, on the Python thread that calls them (the worker, or
//! a pool thread with `python_threads` > 1): a [`Job`] becomes an environ dict
//! (built from a per-app copy of its constant entries, with interned keys and a
//! cache of `HTTP_*` names), the app is called with it and a `start_response`,
//! and the status, headers and body it produces are encoded. A list or tuple
//! (what most apps return) is sent whole, with an exact `Content-Length`, into
//! the reactor's outbox. Any other iterable (a generator, a framework's
//! iterator) is iterated here: when it yields no non-empty item, or its first
//! one completes the declared `Content-Length`, the response is sent whole too;
//! otherwise it streams (`stream.rs`), each item sent as it is produced —
//! chunked, or as is under a declared length, close-delimited for HTTP/1.0.
//! The iteration waits while the connection holds more than
//! `max_write_buffer` unwritten bytes, and stops when the client leaves. A pool
//! thread iterates to the end (waiting without the GIL); the worker, which has
//! other requests to serve, hands the rest to its serve loop as a
//! [`WsgiStream`], stepped between rounds. The iterable's `close()` is always
//! called, at the end or when the client goes.
//!
//! A body past the upload threshold arrives as the app reads it: `wsgi.input`
//! is then an [`Input`] (`body.rs`) rather than a `BytesIO` over the whole
//! body, and what the app left unread is dropped once it has answered.

use std::collections::HashMap;
use std::ffi::CStr;
use std::sync::{Arc, Mutex};

use bytes::BytesMut;
use pyo3::exceptions::{PyAssertionError, PyTypeError, PyValueError};
use pyo3::intern;
use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyDict, PyIterator, PyList, PyString, PyTuple};
use pyrs_parser::{BodyKind, Field};

use super::apps::{percent_decode, AppSetting, IpText};
use super::body::Input;
use super::encode::{self, header_value};
use super::errors::{self, type_name};
use super::outbox::{Outboxes, ReplyTo, Stepped};
use super::stream::Stream;
use crate::dispatch::Job;
use crate::response::{self, Builder, Persist};
use crate::upload::Upload;

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

    /// Serves one request; the answer (or a logged 500) goes to `outboxes`, or
    /// streams from here.
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
        let mut iterated = None;
        outboxes.answer_unless_streamed(target, |out| {
            let mark = out.len();
            match self.respond(py, &job, fields, out) {
                Ok(None) => true,
                Ok(Some(iterable)) => {
                    iterated = Some(iterable);
                    false
                }
                Err(e) => {
                    out.truncate(mark);
                    self.log_failure(py, &job, &e);
                    encode::internal_error(out, &head);
                    true
                }
            }
        });
        if let Some((iterable, start)) = iterated {
            self.serve_iterable(py, &job, iterable, &start, target, outboxes);
        }
        // The app is done with the request (a stream the worker steps holds
        // the upload until it ends): what it did not read of a streamed body
        // is dropped.
        if let Some(upload) = &job.upload {
            if !outboxes.holds_upload(upload) {
                upload.abandon();
            }
        }
    }

    fn log_failure(&self, py: Python<'_>, job: &Job, e: &PyErr) {
        let what = format!("error in WSGI app {} for {}", self.name, job.describe());
        errors::log(py, &what, e);
    }

    /// Calls the app; encodes its answer into `out` when it is a list or tuple,
    /// else returns the iterable (and its `start_response`) untouched.
    #[allow(clippy::type_complexity)]
    fn respond<'py>(
        &self,
        py: Python<'py>,
        job: &Job,
        fields: &[Field],
        out: &mut BytesMut,
    ) -> PyResult<Option<(Bound<'py, PyAny>, Bound<'py, StartResponse>)>> {
        let environ = self.environ(py, job, fields)?;
        let start = Bound::new(py, StartResponse::default())?;
        let iterable = self.app.bind(py).call1((environ, &start))?;
        // A list or tuple has no close() (PEP 3333 calls it only where there is
        // one; asking would raise and catch an AttributeError per request).
        let plain =
            iterable.is_exact_instance_of::<PyList>() || iterable.is_exact_instance_of::<PyTuple>();
        if !plain {
            return Ok(Some((iterable, start)));
        }
        let body = collect(&iterable)?;
        let builder = head_of(py, &start, out)?;
        let start = start.borrow();
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
        Ok(None)
    }

    /// Serves an iterable that is not a list or tuple, then calls its
    /// `close()`. An error before anything was sent is a 500; after, the
    /// response is cut short (the connection closes). Either is logged.
    fn serve_iterable(
        &self,
        py: Python<'_>,
        job: &Job,
        iterable: Bound<'_, PyAny>,
        start: &Bound<'_, StartResponse>,
        target: ReplyTo,
        outboxes: &mut Outboxes,
    ) {
        let mut stream = None;
        let mut answered = false;
        let iterated = self.iterate(
            py,
            job,
            &iterable,
            start,
            target,
            outboxes,
            &mut stream,
            &mut answered,
        );
        let outcome = match (iterated, stream.take()) {
            // The worker steps the rest between rounds (and closes it).
            (Ok(Some(items)), Some(stream)) => {
                let what = format!("error in WSGI app {} for {}", self.name, job.describe());
                outboxes.defer(WsgiStream {
                    items: items.unbind(),
                    iterable: iterable.unbind(),
                    start: start.clone().unbind(),
                    stream,
                    what,
                    upload: job.upload.clone(),
                });
                return;
            }
            (iterated, taken) => {
                stream = taken;
                iterated.map(|_| ())
            }
        };
        if let Err(e) = outcome.and(close(&iterable)) {
            self.log_failure(py, job, &e);
            match &mut stream {
                Some(stream) => stream.abort(),
                None if !answered => {
                    let head = job.head;
                    outboxes.answer(target, |out| encode::internal_error(out, &head));
                }
                None => {}
            }
        }
    }

    /// Iterates `iterable`: the whole response into `outboxes` when it fits
    /// its first item (`answered`), else a [`Stream`] (left in `stream`). On a
    /// thread whose outboxes step streams (the worker) it stops after the
    /// first part and returns the iterator, for a [`WsgiStream`].
    #[allow(clippy::too_many_arguments)]
    fn iterate<'py>(
        &self,
        py: Python<'py>,
        job: &Job,
        iterable: &Bound<'py, PyAny>,
        start: &Bound<'py, StartResponse>,
        target: ReplyTo,
        outboxes: &mut Outboxes,
        stream: &mut Option<Stream>,
        answered: &mut bool,
    ) -> PyResult<Option<Bound<'py, PyIterator>>> {
        let head = &job.head;
        let mut items = iterable.try_iter()?;
        // PEP 3333: the head waits for the first non-empty item.
        let mut first = None;
        for item in &mut items {
            let bytes = bytes_item(item?)?;
            if !bytes.as_bytes().is_empty() {
                first = Some(bytes);
                break;
            }
        }
        let mut part = std::mem::take(&mut start.borrow_mut().written);
        if let Some(first) = &first {
            part.extend_from_slice(first.as_bytes());
        }
        let mut failed = Ok(());
        let mut whole = first.is_none();
        if !whole && response::head_only(head) {
            // HEAD: no body goes out, but its head says the GET's length when
            // the rest comes within `max_write_buffer` bytes.
            let limit = outboxes.link().limit;
            whole = true;
            for item in &mut items {
                part.extend_from_slice(bytes_item(item?)?.as_bytes());
                if part.len() > limit {
                    whole = false;
                    break;
                }
            }
        }
        if !whole {
            // A framework's iterator over a complete body declares its length:
            // with it all here, the response goes out whole.
            whole = declared_length(py, start)? == Some(part.len());
        }
        if whole {
            outboxes.answer(target, |out| {
                let mark = out.len();
                failed = head_of(py, start, out).and_then(|b| {
                    Ok(b.finish(None, &part, Persist::of(head), response::head_only(head))?)
                });
                if failed.is_err() {
                    out.truncate(mark);
                    encode::internal_error(out, head);
                }
            });
            *answered = true;
            return failed.map(|_| None);
        }
        let mut out = BytesMut::new();
        let framing = head_of(py, start, &mut out)?.finish_streamed(
            None,
            Persist::of(head),
            response::head_only(head),
            head.minor_version == 0,
        )?;
        let link = outboxes.link().clone();
        // A stream the worker steps is woken through the event loop's wakeup.
        let flow = link.flow(outboxes.steps_streams());
        let Some(s) = Stream::new(&link, target, out, framing, flow.clone()) else {
            return Ok(None);
        };
        let s = stream.insert(s);
        // Gone: the client left; stop iterating (close() follows).
        if s.send(&part, false).is_err() || s.ended() {
            return Ok(None);
        }
        if outboxes.steps_streams() {
            return Ok(Some(items));
        }
        for item in items {
            if !flow.has_room() && py.detach(|| flow.wait_for_room()).is_err() {
                return Ok(None);
            }
            let bytes = bytes_item(item?)?;
            let written = std::mem::take(&mut start.borrow_mut().written);
            if s.send(&written, false).is_err() || s.send(bytes.as_bytes(), false).is_err() {
                return Ok(None);
            }
        }
        let written = std::mem::take(&mut start.borrow_mut().written);
        let _ = s.send(&written, true);
        Ok(None)
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
        let addr = job.remote.map(|r| IpText::new(r.ip()));
        env.set_item(
            intern!(py, "REMOTE_ADDR"),
            addr.as_ref().map_or("", IpText::as_str),
        )?;
        let port = job.remote.map_or(String::new(), |r| r.port().to_string());
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
        if let Some(upload) = &job.upload {
            // A large body, read as it arrives (its length is known only from
            // a Content-Length; a chunked one ends where wsgi.input does).
            let input = Bound::new(py, Input::new(upload.clone()))?;
            env.set_item(intern!(py, "wsgi.input"), input)?;
            return Ok(env);
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

/// The status line and headers `start_response` was given, laid out.
fn head_of<'a>(
    py: Python<'_>,
    start: &Bound<'_, StartResponse>,
    out: &'a mut BytesMut,
) -> PyResult<Builder<'a>> {
    let (status, headers) = {
        let start = start.borrow();
        let (Some(status), Some(headers)) = (&start.status, &start.headers) else {
            return Err(PyAssertionError::new_err(
                "the application returned without calling start_response()",
            ));
        };
        (status.clone_ref(py), headers.clone_ref(py))
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
    Ok(builder)
}

/// Calls the iterable's `close()`, if it has one.
fn close(iterable: &Bound<'_, PyAny>) -> PyResult<()> {
    iterable
        .getattr_opt(intern!(iterable.py(), "close"))
        .and_then(|close| close.map_or(Ok(()), |c| c.call0().map(|_| ())))
}

/// Items sent per [`WsgiStream::step`] at most, so that one fast generator
/// does not keep the worker from its other requests.
const ITEMS_PER_STEP: usize = 16;

/// A WSGI response streaming from the worker thread (`python_threads` 1): the
/// serve loop steps it between rounds, a few items at a time while the client
/// takes them, so that a slow reader pauses only its own response. (A
/// generator that blocks inside `next()` still blocks the worker.)
pub struct WsgiStream {
    items: Py<PyIterator>,
    iterable: Py<PyAny>,
    start: Py<StartResponse>,
    stream: Stream,
    /// The log line for a failure.
    what: String,
    /// The request's streamed body, which the iterable may still read;
    /// abandoned when the response ends.
    upload: Option<Arc<Upload>>,
}

impl WsgiStream {
    /// Whether a step would do something now: room to send, or the client left.
    pub fn ready(&self) -> bool {
        let flow = self.stream.flow();
        flow.has_room() || flow.is_gone()
    }

    /// Sends the next items while there is room; `false` once the response
    /// has ended (its iterable then closed).
    pub fn step(&mut self, py: Python<'_>) -> bool {
        // A wake asked for last time has come (or is not needed any more).
        self.stream.flow().take_wake();
        for _ in 0..ITEMS_PER_STEP {
            if self.stream.flow().is_gone() {
                return self.finish(py, Ok(()));
            }
            // No room: the reactor wakes the event loop when there is.
            if !self.stream.flow().has_room() && self.stream.flow().want_room() {
                return true;
            }
            let mut items = self.items.bind(py).clone();
            let start = self.start.bind(py);
            match items.next() {
                None => {
                    let written = std::mem::take(&mut start.borrow_mut().written);
                    let _ = self.stream.send(&written, true);
                    return self.finish(py, Ok(()));
                }
                Some(Err(e)) => return self.finish(py, Err(e)),
                Some(Ok(item)) => {
                    let bytes = match bytes_item(item) {
                        Ok(bytes) => bytes,
                        Err(e) => return self.finish(py, Err(e)),
                    };
                    let written = std::mem::take(&mut start.borrow_mut().written);
                    if self.stream.send(&written, false).is_err()
                        || self.stream.send(bytes.as_bytes(), false).is_err()
                    {
                        return self.finish(py, Ok(()));
                    }
                }
            }
        }
        // This step's share is sent: without room now, ask for a wake.
        if !self.stream.flow().has_room() {
            self.stream.flow().want_room();
        }
        true
    }

    /// Ends the response where it is (the server is stopping).
    pub fn end(&mut self, py: Python<'_>) {
        self.stream.abort();
        self.finish(py, Ok(()));
    }

    /// Closes the iterable; a failure cuts the response short and is logged.
    fn finish(&mut self, py: Python<'_>, outcome: PyResult<()>) -> bool {
        if let Err(e) = outcome.and(close(self.iterable.bind(py))) {
            errors::log(py, &self.what, &e);
            self.stream.abort();
        }
        if let Some(upload) = self.upload.take() {
            upload.abandon();
        }
        false
    }
}

impl Stepped for WsgiStream {
    fn holds(&self, upload: &Arc<Upload>) -> bool {
        self.upload.as_ref().is_some_and(|u| Arc::ptr_eq(u, upload))
    }

    fn ready(&self) -> bool {
        WsgiStream::ready(self)
    }

    fn step(&mut self, py: Python<'_>) -> bool {
        WsgiStream::step(self, py)
    }

    fn end(&mut self, py: Python<'_>) {
        WsgiStream::end(self, py)
    }
}

/// The `Content-Length` the app's headers declare, if any (not validated:
/// the head itself is laid out by [`head_of`]).
fn declared_length(py: Python<'_>, start: &Bound<'_, StartResponse>) -> PyResult<Option<usize>> {
    let headers = match &start.borrow().headers {
        Some(headers) => headers.clone_ref(py),
        None => return Ok(None),
    };
    for pair in headers.bind(py).iter() {
        let Ok((name, value)) = pair.extract::<(Bound<'_, PyString>, Bound<'_, PyAny>)>() else {
            continue;
        };
        if name.to_str()?.eq_ignore_ascii_case("content-length") {
            let mut scratch = Vec::new();
            let value = header_value(&value, &mut scratch)?;
            return Ok(std::str::from_utf8(&value)
                .ok()
                .and_then(|v| v.trim().parse().ok()));
        }
    }
    Ok(None)
}

/// One item of an app's iterable, which must be `bytes`.
fn bytes_item(value: Bound<'_, PyAny>) -> PyResult<Bound<'_, PyBytes>> {
    value.cast_into::<PyBytes>().map_err(|e| {
        PyTypeError::new_err(format!(
            "a WSGI application must yield bytes, not {}",
            type_name(&e.into_inner())
        ))
    })
}

/// Iterates the app's result; every item must be `bytes`.
fn collect<'py>(iterable: &Bound<'py, PyAny>) -> PyResult<Collected<'py>> {
    let item = bytes_item;
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
            // Nothing is sent before the app returns (a streamed body's head
            // waits for its first item), so a call with exc_info (an error
            // page after a failure) may always replace the first.
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
