//! What a handler returns, turned into response bytes, on the Python worker
//! thread. This file reads Python values (str, bytes, dict, `pyrs.Response`,
//! `pyrs.HTTPError`, header dicts and lists) and hands plain bytes to
//! `response.rs`, which lays out and checks every byte that goes on the wire.
//! A body that is a generator or an async generator is not encoded here: it
//! comes back as a [`Streamed`] for `produce.rs`.

use bytes::BytesMut;
use pyo3::exceptions::PyTypeError;
use pyo3::prelude::*;
use pyo3::sync::PyOnceLock;
use pyo3::types::{
    PyByteArray, PyBytes, PyDict, PyInt, PyIterator, PyList, PyMemoryView, PyString, PyTuple,
};
use pyrs_parser::Head;

use super::errors::type_name;
use super::module::{valid_status, Response};
use super::request::Request;
use crate::response::{self, Builder, HeaderError, Persist};

/// The 500 a failed handler gets (its traceback goes to stderr).
pub fn internal_error(out: &mut BytesMut, head: &Head) {
    simple(
        out,
        500,
        response::TEXT_PLAIN,
        b"Internal Server Error",
        head,
    );
}

fn simple(out: &mut BytesMut, status: u16, content_type: &[u8], body: &[u8], head: &Head) {
    response::simple(
        out,
        status,
        content_type,
        body,
        Persist::of(head),
        response::head_only(head),
    );
}

impl From<HeaderError> for PyErr {
    fn from(e: HeaderError) -> PyErr {
        PyTypeError::new_err(e.to_string())
    }
}

/// A response whose body a generator produces: what its head will say, and
/// the producer. Nothing of it has been encoded.
pub struct Streamed<'py> {
    pub status: u16,
    /// `None`, a dict or a list of `(name, value)` pairs.
    pub headers: Bound<'py, PyAny>,
    pub content_type: Option<String>,
    pub producer: Producer<'py>,
}

/// What produces a streamed body.
pub enum Producer<'py> {
    /// A generator (or any iterator): `next()` per part, `close()` at the end.
    Sync(Bound<'py, PyIterator>),
    /// An async generator (or async iterator): awaited part by part on the
    /// event loop, `aclose()` at the end.
    Async(Bound<'py, PyAny>),
}

/// The producer `value` is, if it is one: an iterator (a generator), or an
/// object with `__anext__` (an async generator). Asked only of values that are
/// no other kind of body, so plain returns never pay for it.
fn producer<'py>(value: &Bound<'py, PyAny>) -> Option<Producer<'py>> {
    if let Ok(items) = value.cast::<PyIterator>() {
        return Some(Producer::Sync(items.clone()));
    }
    match value.hasattr(pyo3::intern!(value.py(), "__anext__")) {
        Ok(true) => Some(Producer::Async(value.clone())),
        _ => None,
    }
}

/// Encodes what a handler returned; a streamed body comes back unencoded.
pub fn result<'py>(
    py: Python<'py>,
    result: &Bound<'py, PyAny>,
    request: &Bound<'py, Request>,
    head: &Head,
    out: &mut BytesMut,
) -> PyResult<Option<Streamed<'py>>> {
    // Fast path: a str.
    if let Ok(s) = result.cast::<PyString>() {
        simple(out, 200, response::TEXT_HTML, s.to_str()?.as_bytes(), head);
        return Ok(None);
    }
    if result.is(request) {
        // `return request` echoes the body (the original pyrs echo example).
        let body = request.get().body_bytes();
        simple(out, 200, response::OCTET_STREAM, body, head);
        return Ok(None);
    }
    if let Ok(resp) = result.cast::<Response>() {
        let r = resp.get();
        return full(
            py,
            r.status,
            r.body.bind(py),
            r.headers.bind(py),
            r.content_type.as_deref(),
            head,
            out,
        );
    }
    if result.is_none() {
        simple(out, 204, response::TEXT_PLAIN, b"", head);
        return Ok(None);
    }
    match body_value(py, result)? {
        Some((body, ct)) => {
            simple(out, 200, ct, body.bytes()?, head);
            Ok(None)
        }
        None => match producer(result) {
            Some(producer) => Ok(Some(Streamed {
                status: 200,
                headers: py.None().into_bound(py),
                content_type: None,
                producer,
            })),
            None => Err(PyTypeError::new_err(format!(
                "handler returned {}, expected str, bytes, bytearray, memoryview, dict, list, \
                 None, the request, pyrs.Response, a generator or an async generator",
                type_name(result)
            ))),
        },
    }
}

/// Encodes `raise pyrs.HTTPError(status, body, headers, content_type)`.
pub fn http_error<'py>(
    py: Python<'py>,
    e: &PyErr,
    head: &Head,
    out: &mut BytesMut,
) -> PyResult<Option<Streamed<'py>>> {
    let v = e.value(py);
    let status = valid_status(v.getattr("status")?.extract::<i64>()?)?;
    let body = v.getattr("body")?;
    let headers = v.getattr("headers")?;
    let content_type: Option<String> = v.getattr("content_type")?.extract()?;
    if body.is_none() {
        let reason = response::reason(status);
        let text = PyString::new(py, if reason.is_empty() { "Error" } else { reason });
        let ct = content_type
            .as_deref()
            .or(Some("text/plain; charset=utf-8"));
        return full(py, status, text.as_any(), &headers, ct, head, out);
    }
    full(
        py,
        status,
        &body,
        &headers,
        content_type.as_deref(),
        head,
        out,
    )
}

/// Encodes a response with explicit status, body, headers and content type;
/// a body that is a generator comes back unencoded.
fn full<'py>(
    py: Python<'py>,
    status: u16,
    body: &Bound<'py, PyAny>,
    headers: &Bound<'py, PyAny>,
    content_type: Option<&str>,
    head: &Head,
    out: &mut BytesMut,
) -> PyResult<Option<Streamed<'py>>> {
    let Some((value, default_ct)) = body_value(py, body)? else {
        if let Some(producer) = producer(body) {
            return Ok(Some(Streamed {
                status,
                headers: headers.clone(),
                content_type: content_type.map(str::to_owned),
                producer,
            }));
        }
        return Err(PyTypeError::new_err(format!(
            "response body is {}, expected str, bytes, bytearray, memoryview, dict, list, \
             None, a generator or an async generator",
            type_name(body)
        )));
    };
    let body_bytes = value.bytes()?;
    let mut builder = Builder::new(out, status);
    add_headers(&mut builder, headers)?;
    let ct = content_type.map_or(default_ct, str::as_bytes);
    builder.finish(
        Some(ct),
        body_bytes,
        Persist::of(head),
        response::head_only(head),
    )?;
    Ok(None)
}

/// Adds a handler's headers (`None`, a dict, or `(name, value)` pairs).
pub(super) fn add_headers(builder: &mut Builder<'_>, headers: &Bound<'_, PyAny>) -> PyResult<()> {
    if headers.is_none() {
        return Ok(());
    }
    let pairs = if let Ok(d) = headers.cast::<PyDict>() {
        d.items().into_any()
    } else {
        headers.clone()
    };
    let mut latin1 = Vec::new();
    for pair in pairs.try_iter()? {
        let pair = pair?;
        let (name, value): (Bound<'_, PyString>, Bound<'_, PyAny>) =
            pair.extract().map_err(|_| {
                PyTypeError::new_err("headers must be a dict or a list of (name, value) pairs")
            })?;
        let value = header_value(&value, &mut latin1)?;
        builder.header(name.to_str()?.as_bytes(), &value)?;
    }
    Ok(())
}

/// A header value's bytes: `str` (Latin-1 only, RFC 9110 §5.5), `bytes`, or an
/// `int` in decimal. `scratch` holds the bytes of a non-ASCII str.
pub(super) fn header_value<'a>(
    v: &'a Bound<'_, PyAny>,
    scratch: &'a mut Vec<u8>,
) -> PyResult<std::borrow::Cow<'a, [u8]>> {
    use std::borrow::Cow;
    if let Ok(s) = v.cast::<PyString>() {
        let text = s.to_str()?;
        if text.is_ascii() {
            return Ok(Cow::Borrowed(text.as_bytes()));
        }
        scratch.clear();
        for c in text.chars() {
            let byte = u8::try_from(u32::from(c)).map_err(|_| {
                PyTypeError::new_err(format!("header value {text:?} is not Latin-1"))
            })?;
            scratch.push(byte);
        }
        return Ok(Cow::Borrowed(scratch.as_slice()));
    }
    if let Ok(b) = v.cast::<PyBytes>() {
        return Ok(Cow::Borrowed(b.as_bytes()));
    }
    if v.is_instance_of::<PyInt>() {
        return Ok(Cow::Owned(v.str()?.to_str()?.as_bytes().to_vec()));
    }
    Err(PyTypeError::new_err(format!(
        "header value must be str, bytes or int, not {}",
        type_name(v)
    )))
}

static JSON_DUMPS: PyOnceLock<Py<PyAny>> = PyOnceLock::new();

/// `json.dumps` with compact separators and UTF-8 output.
fn json_dumps<'py>(py: Python<'py>, obj: &Bound<'py, PyAny>) -> PyResult<Bound<'py, PyAny>> {
    let dumps = JSON_DUMPS.get_or_try_init(py, || -> PyResult<Py<PyAny>> {
        let kwargs = PyDict::new(py);
        kwargs.set_item("ensure_ascii", false)?;
        kwargs.set_item("separators", PyTuple::new(py, [",", ":"])?)?;
        let partial = py.import("functools")?.getattr("partial")?;
        let dumps = py.import("json")?.getattr("dumps")?;
        Ok(partial.call((dumps,), Some(&kwargs))?.unbind())
    })?;
    dumps.bind(py).call1((obj,))
}

/// A response body taken from a Python value.
enum BodyValue<'py> {
    Text(Bound<'py, PyString>),
    Bytes(Bound<'py, PyBytes>),
    Owned(Vec<u8>),
    Empty,
}

impl BodyValue<'_> {
    fn bytes(&self) -> PyResult<&[u8]> {
        Ok(match self {
            BodyValue::Text(s) => s.to_str()?.as_bytes(),
            BodyValue::Bytes(b) => b.as_bytes(),
            BodyValue::Owned(v) => v,
            BodyValue::Empty => b"",
        })
    }
}

/// Converts a body value, with its default content type; `None` when its type is
/// not one a body can be.
fn body_value<'py>(
    py: Python<'py>,
    value: &Bound<'py, PyAny>,
) -> PyResult<Option<(BodyValue<'py>, &'static [u8])>> {
    if let Ok(s) = value.cast::<PyString>() {
        return Ok(Some((BodyValue::Text(s.clone()), response::TEXT_HTML)));
    }
    if let Ok(b) = value.cast::<PyBytes>() {
        return Ok(Some((BodyValue::Bytes(b.clone()), response::OCTET_STREAM)));
    }
    if let Ok(b) = value.cast::<PyByteArray>() {
        return Ok(Some((BodyValue::Owned(b.to_vec()), response::OCTET_STREAM)));
    }
    if value.is_instance_of::<PyMemoryView>() {
        let bytes = py
            .get_type::<PyBytes>()
            .call1((value,))?
            .cast_into::<PyBytes>()?;
        return Ok(Some((BodyValue::Bytes(bytes), response::OCTET_STREAM)));
    }
    if value.is_instance_of::<PyDict>() || value.is_instance_of::<PyList>() {
        let text = json_dumps(py, value)?.cast_into::<PyString>()?;
        return Ok(Some((BodyValue::Text(text), response::JSON)));
    }
    if value.is_none() {
        return Ok(Some((BodyValue::Empty, response::TEXT_PLAIN)));
    }
    Ok(None)
}
