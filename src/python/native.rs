//! pyrs handlers, on the Python worker thread: a [`Job`] becomes a
//! `pyrs.Request`, the entry's bound method is called with it, and what it returns
//! (or raises) is encoded into the reactor's outbox. An `async def` handler's
//! coroutine becomes a task on the event loop instead, answered when it finishes.
//! A generator or async generator returned (or a `pyrs.Response` over one)
//! streams through `produce.rs`. (`routes.rs` picks the route; `wsgi.rs`
//! serves application entries.)

use std::sync::Arc;

use pyo3::prelude::*;
use pyrs_parser::{Field, Head};

use super::aio::Runtime;
use super::encode::{self, Streamed};
use super::errors;
use super::outbox::{Outboxes, Pending, ReplyTo, TaskKind};
use super::produce;
use super::request::Request;
use crate::dispatch::Job;

/// A resolved handler: the bound method of its entry's instance.
pub struct Handler {
    pub handler: Py<PyAny>,
    /// `module.Class.handler`, for error messages.
    pub name: String,
    /// Declared `async def`: runs as a task on the event loop.
    pub is_async: bool,
    /// An async generator function (`async def` with `yield`): called on the
    /// worker, its parts awaited on the event loop.
    pub yields_async: bool,
}

/// What every handler call shares: how its outcome is encoded.
pub struct Native {
    /// `pyrs.HTTPError`: raising it answers with its status instead of a 500.
    http_error: Option<Py<PyAny>>,
}

impl Native {
    pub fn new(py: Python<'_>) -> Native {
        let http_error = py
            .import("pyrs")
            .and_then(|m| m.getattr("HTTPError"))
            .ok()
            .map(Bound::unbind);
        Native { http_error }
    }

    /// Calls `route` (route number `route_index`) for one request. A synchronous
    /// handler's response is encoded into `outboxes` at once; an `async def`
    /// handler's coroutine is spawned on `runtime` and answered by
    /// [`Native::finish_task`].
    #[allow(clippy::too_many_arguments)]
    pub fn call(
        &self,
        py: Python<'_>,
        route: &Handler,
        route_index: usize,
        job: Job,
        fields: &Arc<[Field]>,
        target: ReplyTo,
        outboxes: &mut Outboxes,
        runtime: Option<&mut Runtime>,
    ) {
        let head = job.head;
        let request = Request::new(
            job.data,
            head,
            fields.clone(),
            job.fields,
            job.body,
            job.remote,
            job.tls,
        );
        let request = match Bound::new(py, request) {
            Ok(r) => r,
            Err(e) => {
                let what = format!("cannot create a request for {}", route.name);
                errors::log(py, &what, &e);
                outboxes.answer(target, |out| encode::internal_error(out, &head));
                return;
            }
        };
        let mut runtime = runtime;
        let called = route.handler.bind(py).call1((&request,));
        let called = match (route.is_async, runtime.as_deref_mut(), called) {
            (true, Some(rt), Ok(coro)) => {
                let pending = Pending {
                    target,
                    context: request.clone().into_any().unbind(),
                    head,
                    route: route_index,
                    kind: TaskKind::Answer,
                };
                match rt.spawn(py, &coro, pending) {
                    Ok(()) => return,
                    Err(e) => Err(e),
                }
            }
            (_, _, called) => called,
        };
        let mut streamed = None;
        outboxes.answer_unless_streamed(target, |out| {
            streamed = self.finish(py, route, &request, &head, called, out);
            streamed.is_none()
        });
        if let Some(streamed) = streamed {
            let at = (target, head, route_index);
            Self::stream(py, route, at, &request, streamed, outboxes, runtime);
        }
    }

    /// Streams the body `route`'s handler returned a generator for; `at` is
    /// the request's target, head and route index.
    fn stream(
        py: Python<'_>,
        route: &Handler,
        at: (ReplyTo, Head, usize),
        request: &Bound<'_, Request>,
        streamed: Streamed<'_>,
        outboxes: &mut Outboxes,
        runtime: Option<&mut Runtime>,
    ) {
        let (target, head, route_index) = at;
        let what = format!(
            "error in handler {} for {}",
            route.name,
            request.get().describe()
        );
        produce::start(
            py,
            streamed,
            target,
            head,
            route_index,
            what,
            outboxes,
            runtime,
        );
    }

    /// Encodes the outcome of `route`'s task that finished.
    pub fn finish_task(
        &self,
        py: Python<'_>,
        route: &Handler,
        pending: Pending,
        outcome: PyResult<Bound<'_, PyAny>>,
        outboxes: &mut Outboxes,
        runtime: &mut Runtime,
    ) {
        let Ok(request) = pending.context.bind(py).cast::<Request>() else {
            return;
        };
        let mut streamed = None;
        outboxes.answer_unless_streamed(pending.target, |out| {
            streamed = self.finish(py, route, request, &pending.head, outcome, out);
            streamed.is_none()
        });
        if let Some(streamed) = streamed {
            let at = (pending.target, pending.head, pending.route);
            Self::stream(py, route, at, request, streamed, outboxes, Some(runtime));
        }
    }

    /// Encodes what a handler produced (its return value or its exception) into
    /// `out`; anything that cannot be encoded becomes a logged 500. A body to
    /// stream comes back unencoded (nothing is written to `out`).
    fn finish<'py>(
        &self,
        py: Python<'py>,
        route: &Handler,
        request: &Bound<'py, Request>,
        head: &Head,
        outcome: PyResult<Bound<'py, PyAny>>,
        out: &mut bytes::BytesMut,
    ) -> Option<Streamed<'py>> {
        let mark = out.len();
        let encoded = match outcome {
            Ok(result) => encode::result(py, &result, request, head, out),
            Err(e) => match &self.http_error {
                Some(cls) if e.is_instance(py, cls.bind(py)) => {
                    encode::http_error(py, &e, head, out)
                }
                _ => Err(e),
            },
        };
        match encoded {
            Ok(streamed) => streamed,
            Err(e) => {
                out.truncate(mark);
                let what = format!(
                    "error in handler {} for {}",
                    route.name,
                    request.get().describe()
                );
                errors::log(py, &what, &e);
                encode::internal_error(out, head);
                None
            }
        }
    }
}
