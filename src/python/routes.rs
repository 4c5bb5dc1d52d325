//! What each `modules` entry serves, on the Python worker thread: a pyrs handler
//! (`native.rs`), a WSGI application (`wsgi.rs`) or an ASGI one (`asgi.rs`). [`Routes`] takes each job to
//! its entry's route by the index the reactor's router found.

use std::sync::Arc;

use pyo3::prelude::*;
use pyrs_parser::Field;

use super::aio::Runtime;
use super::asgi::AsgiApp;
use super::encode;
use super::native::{Handler, Native};
use super::outbox::{Outboxes, Pending, ReplyTo};
use super::wsgi::WsgiApp;
use crate::dispatch::Job;

/// What one entry serves.
pub enum Endpoint {
    Handler(Handler),
    Wsgi(WsgiApp),
    Asgi(AsgiApp),
}

/// Every entry's endpoint, in `modules` order (the router's indexes).
pub struct Routes {
    routes: Vec<Endpoint>,
    native: Native,
}

impl Routes {
    pub fn new(py: Python<'_>, routes: Vec<Endpoint>) -> Routes {
        Routes {
            routes,
            native: Native::new(py),
        }
    }

    /// Serves one request from `reactor`'s batch whose header spans are `fields`.
    pub fn call(
        &self,
        py: Python<'_>,
        job: Job,
        fields: &Arc<[Field]>,
        reactor: usize,
        outboxes: &mut Outboxes,
        runtime: Option<&mut Runtime>,
    ) {
        let target = ReplyTo {
            reactor,
            conn: job.conn,
            seq: job.seq,
        };
        let index = job.route as usize;
        match self.routes.get(index) {
            Some(Endpoint::Handler(handler)) => self
                .native
                .call(py, handler, index, job, fields, target, outboxes, runtime),
            Some(Endpoint::Wsgi(app)) => app.call(py, job, fields, target, outboxes),
            Some(Endpoint::Asgi(app)) => {
                app.call(py, index, job, fields, target, outboxes, runtime)
            }
            None => {
                let head = job.head;
                outboxes.answer(target, |out| encode::internal_error(out, &head));
            }
        }
    }

    /// Encodes the outcome of a task that finished (an `async def` handler's or
    /// an ASGI app's).
    pub fn finish_task(
        &self,
        py: Python<'_>,
        pending: Pending,
        outcome: PyResult<Bound<'_, PyAny>>,
        outboxes: &mut Outboxes,
    ) {
        match self.routes.get(pending.route) {
            Some(Endpoint::Handler(handler)) => self
                .native
                .finish_task(py, handler, pending, outcome, outboxes),
            Some(Endpoint::Asgi(app)) => app.finish(py, pending, outcome, outboxes),
            Some(Endpoint::Wsgi(_)) | None => {
                let head = pending.head;
                outboxes.answer(pending.target, |out| encode::internal_error(out, &head));
            }
        }
    }

    /// Whether route `index` is called synchronously and may block (a plain pyrs
    /// handler or a WSGI app): what the Python threads of `python_threads` take.
    pub fn is_blocking(&self, index: u32) -> bool {
        match self.routes.get(index as usize) {
            Some(Endpoint::Handler(handler)) => !handler.is_async,
            Some(Endpoint::Wsgi(_)) => true,
            Some(Endpoint::Asgi(_)) | None => false,
        }
    }

    /// The ASGI apps with their entry index (for lifespan).
    pub fn asgi_apps(&self) -> impl Iterator<Item = (usize, &AsgiApp)> {
        self.routes.iter().enumerate().filter_map(|(i, r)| match r {
            Endpoint::Asgi(app) => Some((i, app)),
            _ => None,
        })
    }
}
