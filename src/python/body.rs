//! Request bodies that reach the app as they arrive (`upload.rs`), on the
//! Python thread serving the request: [`Input`] is a WSGI app's `wsgi.input`
//! (its `read`, `readline` and iteration block, without the GIL, until the
//! next part comes), [`AsgiBody`] what an ASGI `HttpCycle` takes its
//! `http.request` events from (never blocking: the task waits on the event
//! loop, which the reactor wakes). A client that leaves before the end is an
//! `OSError` from `wsgi.input` (gunicorn raises its `NoMoreData`, an `OSError`,
//! and mod_wsgi an `OSError`; returning `b""` would hand the app a truncated
//! body that looks complete, since `wsgi.input_terminated` says the stream
//! ends with the body) and `http.disconnect` from `receive()`.

use std::sync::Arc;

use bytes::Bytes;
use pyo3::exceptions::PyOSError;
use pyo3::prelude::*;
use pyo3::types::{PyBool, PyBytes, PyList};

use crate::upload::{Taken, Upload};

/// Most bytes one `read()` without a size (or one line) gathers per piece
/// taken from the upload.
const READ_PIECE: usize = 1024 * 1024;
/// Most bytes of one ASGI `http.request` event.
const ASGI_PIECE: usize = 1024 * 1024;

fn gone() -> PyErr {
    PyOSError::new_err("the client disconnected before the end of the request body")
}

/// `wsgi.input` of a request whose body arrives as the app reads it.
#[pyclass(module = "pyrs", name = "Input", frozen)]
pub struct Input {
    upload: Arc<Upload>,
}

impl Input {
    pub fn new(upload: Arc<Upload>) -> Input {
        Input { upload }
    }

    /// The next piece of at most `max` bytes (up to a newline when `line`),
    /// waiting for it without the GIL; `None` at the end of the body.
    fn piece(&self, py: Python<'_>, max: usize, line: bool) -> PyResult<Option<Bytes>> {
        loop {
            match self.upload.take(max, line) {
                Taken::Data(b) => return Ok(Some(b)),
                Taken::End => return Ok(None),
                Taken::Gone => return Err(gone()),
                Taken::Empty => py.detach(|| self.upload.wait()),
            }
        }
    }

    /// Up to `limit` bytes (all that is left when `None`), or one line.
    fn gather<'py>(
        &self,
        py: Python<'py>,
        limit: Option<usize>,
        line: bool,
    ) -> PyResult<Bound<'py, PyBytes>> {
        let mut pieces: Vec<Bytes> = Vec::new();
        let mut total = 0;
        loop {
            let want = limit.map_or(READ_PIECE, |l| (l - total).min(READ_PIECE));
            if want == 0 {
                break;
            }
            let Some(piece) = self.piece(py, want, line)? else {
                break;
            };
            total += piece.len();
            let ends_line = line && piece.last() == Some(&b'\n');
            pieces.push(piece);
            if ends_line {
                break;
            }
        }
        join(py, &pieces, total)
    }
}

/// `pieces` (`total` bytes) as one `bytes`, copied once.
fn join<'py>(py: Python<'py>, pieces: &[Bytes], total: usize) -> PyResult<Bound<'py, PyBytes>> {
    match pieces {
        [] => Ok(PyBytes::new(py, b"")),
        [one] => Ok(PyBytes::new(py, one)),
        _ => PyBytes::new_with(py, total, |buf| {
            let mut at = 0;
            for p in pieces {
                buf[at..at + p.len()].copy_from_slice(p);
                at += p.len();
            }
            Ok(())
        }),
    }
}

/// A size argument: `None` or negative is "no limit".
fn limit(size: Option<isize>) -> Option<usize> {
    size.and_then(|s| usize::try_from(s).ok())
}

#[pymethods]
impl Input {
    /// `read(size=-1)`: `size` bytes, fewer only at the end of the body.
    #[pyo3(signature = (size = None))]
    fn read<'py>(&self, py: Python<'py>, size: Option<isize>) -> PyResult<Bound<'py, PyBytes>> {
        self.gather(py, limit(size), false)
    }

    /// `read1(size=-1)`: what one piece holds, at most `size` bytes.
    #[pyo3(signature = (size = None))]
    fn read1<'py>(&self, py: Python<'py>, size: Option<isize>) -> PyResult<Bound<'py, PyBytes>> {
        let max = limit(size).unwrap_or(READ_PIECE);
        if max == 0 {
            return Ok(PyBytes::new(py, b""));
        }
        let piece = self.piece(py, max, false)?;
        Ok(PyBytes::new(py, piece.as_deref().unwrap_or_default()))
    }

    /// `readline(size=-1)`: up to and including the next `\n`.
    #[pyo3(signature = (size = None))]
    fn readline<'py>(&self, py: Python<'py>, size: Option<isize>) -> PyResult<Bound<'py, PyBytes>> {
        self.gather(py, limit(size), true)
    }

    /// `readlines(hint=-1)`: lines until their total passes `hint`.
    #[pyo3(signature = (hint = None))]
    fn readlines<'py>(&self, py: Python<'py>, hint: Option<isize>) -> PyResult<Bound<'py, PyList>> {
        let hint = limit(hint).filter(|&h| h > 0);
        let lines = PyList::empty(py);
        let mut total = 0;
        loop {
            let line = self.gather(py, None, true)?;
            if line.as_bytes().is_empty() {
                break;
            }
            total += line.as_bytes().len();
            lines.append(line)?;
            if hint.is_some_and(|h| total >= h) {
                break;
            }
        }
        Ok(lines)
    }

    fn readable(&self) -> bool {
        true
    }

    fn close(&self) {}

    fn __iter__(slf: PyRef<'_, Self>) -> PyRef<'_, Self> {
        slf
    }

    fn __next__<'py>(&self, py: Python<'py>) -> PyResult<Option<Bound<'py, PyBytes>>> {
        let line = self.gather(py, None, true)?;
        Ok((!line.as_bytes().is_empty()).then_some(line))
    }
}

/// The upload an ASGI `HttpCycle` takes its `http.request` events from.
#[pyclass(module = "pyrs", name = "AsgiBody", frozen)]
pub struct AsgiBody {
    upload: Arc<Upload>,
}

impl AsgiBody {
    pub fn new(upload: Arc<Upload>) -> AsgiBody {
        AsgiBody { upload }
    }
}

#[pymethods]
impl AsgiBody {
    /// The next event's `(body, more_body)`; `None` when the task must wait
    /// (the cycle's `_body_wake` is called when it may look again); `False`
    /// when the client is gone.
    fn take<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        // What has arrived, up to ASGI_PIECE, in one event.
        let mut pieces: Vec<Bytes> = Vec::new();
        let mut total = 0;
        let more = loop {
            match self.upload.take(ASGI_PIECE - total, false) {
                Taken::Data(b) => {
                    total += b.len();
                    pieces.push(b);
                    if total >= ASGI_PIECE {
                        break true;
                    }
                }
                Taken::End if pieces.is_empty() => break false,
                Taken::Gone if pieces.is_empty() => {
                    return Ok(PyBool::new(py, false).to_owned().into_any())
                }
                // The end (or the client leaving) is told by the next call.
                Taken::End | Taken::Gone => break true,
                Taken::Empty if !pieces.is_empty() => break true,
                Taken::Empty if self.upload.want_data() => return Ok(py.None().into_bound(py)),
                // It came meanwhile.
                Taken::Empty => {}
            }
        };
        Ok((join(py, &pieces, total)?, more)
            .into_pyobject(py)?
            .into_any())
    }

    /// The app is done with the request: the rest of the body is dropped.
    fn close(&self) {
        self.upload.abandon();
    }
}
