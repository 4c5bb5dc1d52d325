//! What each `modules` entry serves, on the Python worker thread: a pyrs handler
//! (`native.rs`), a WebSocket handler or an ASGI app's `websocket` scope
//! (`websocket.rs`), a WSGI application (`wsgi.rs`) or an ASGI one (`asgi.rs`).
//! [`Routes`] takes each job to its entry's route by the index the reactor's
//! router found, and each WebSocket event to its socket.

use std::sync::Arc;

use pyo3::prelude::*;
use pyrs_parser::Field;

use super::aio::Runtime;
use super::asgi::AsgiApp;
use super::encode;
use super::errors;
use super::native::{Handler, Native};
use super::outbox::{Outboxes, Pending, ReplyTo, TaskKind};
use super::produce;
use super::request::Request;
use super::wait::Hub;
use super::websocket::{Api, WebSockets};
use super::wsgi::WsgiApp;
use crate::dispatch::{Job, WsEvent};
use crate::response::{self, Persist};

/// What one entry serves.
pub enum Endpoint {
    Handler(Handler),
    /// A `"websocket": true` handler: `async def handler(self, ws)`.
    Socket(Handler),
    Wsgi(WsgiApp),
    Asgi(AsgiApp),
}

/// What serves a WebSocket upgrade: an ASGI app's `websocket` scope, or a
/// `"websocket": true` handler.
#[derive(Clone, Copy)]
enum SocketApp<'a> {
    Asgi(&'a AsgiApp),
    Handler(&'a Handler),
}

/// Every entry's endpoint, in `modules` order (the router's indexes).
pub struct Routes {
    routes: Vec<Endpoint>,
    native: Native,
    websockets: WebSockets,
}

impl Routes {
    /// `ws_budget`: bytes a WebSocket may send ahead of its client;
    /// `ws_max_message`: the largest message a client may send.
    pub fn new(
        py: Python<'_>,
        routes: Vec<Endpoint>,
        ws_budget: usize,
        ws_max_message: usize,
        hub: Option<Arc<Hub>>,
    ) -> PyResult<Routes> {
        Ok(Routes {
            routes,
            native: Native::new(py),
            websockets: WebSockets::new(py, hub, ws_budget, ws_max_message)?,
        })
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
            Some(Endpoint::Asgi(app)) if job.websocket => self.open_socket(
                py,
                index,
                SocketApp::Asgi(app),
                job,
                fields,
                target,
                outboxes,
                runtime,
            ),
            Some(Endpoint::Socket(handler)) if job.websocket => self.open_socket(
                py,
                index,
                SocketApp::Handler(handler),
                job,
                fields,
                target,
                outboxes,
                runtime,
            ),
            Some(Endpoint::Socket(_)) => {
                // Plain HTTP to a WebSocket endpoint.
                outboxes.answer(target, |out| {
                    response::simple(
                        out,
                        426,
                        response::TEXT_PLAIN,
                        b"Upgrade Required: this path speaks WebSocket",
                        Persist::of(&job.head),
                        response::head_only(&job.head),
                    )
                });
            }
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
        runtime: &mut Runtime,
    ) {
        if pending.kind == TaskKind::Stream {
            produce::finish_task(py, &pending, outcome, outboxes);
            return;
        }
        if pending.kind == TaskKind::WebSocket {
            if let Err(e) = &outcome {
                let what = match self.routes.get(pending.route) {
                    Some(Endpoint::Asgi(app)) => format!("error in ASGI app {}", app.name()),
                    Some(Endpoint::Socket(h) | Endpoint::Handler(h)) => {
                        format!("error in WebSocket handler {}", h.name)
                    }
                    _ => "error in a WebSocket task".to_owned(),
                };
                errors::log(py, &what, e);
            }
            self.websockets
                .finish(py, pending.context.bind(py), outcome.is_err());
            self.websockets.flush(outboxes);
            return;
        }
        match self.routes.get(pending.route) {
            Some(Endpoint::Handler(handler)) => self
                .native
                .finish_task(py, handler, pending, outcome, outboxes, runtime),
            Some(Endpoint::Asgi(app)) => app.finish(py, pending, outcome, outboxes),
            Some(Endpoint::Wsgi(_) | Endpoint::Socket(_)) | None => {
                let head = pending.head;
                outboxes.answer(pending.target, |out| encode::internal_error(out, &head));
            }
        }
    }

    /// Per entry, whether it takes a large request body as it arrives (WSGI
    /// and ASGI apps); pyrs handlers get theirs whole.
    pub fn streamed_bodies(&self) -> Vec<bool> {
        self.routes
            .iter()
            .map(|r| matches!(r, Endpoint::Wsgi(_) | Endpoint::Asgi(_)))
            .collect()
    }

    /// Whether route `index` is called synchronously and may block (a plain pyrs
    /// handler or a WSGI app): what the Python threads of `python_threads` take.
    pub fn is_blocking(&self, index: u32) -> bool {
        match self.routes.get(index as usize) {
            // An async generator function's parts are awaited on the loop.
            Some(Endpoint::Handler(handler)) => !handler.is_async && !handler.yields_async,
            Some(Endpoint::Wsgi(_)) => true,
            Some(Endpoint::Asgi(_) | Endpoint::Socket(_)) | None => false,
        }
    }

    /// Hands a WebSocket client's message (or its leaving) to its socket.
    pub fn websocket_event(&self, py: Python<'_>, reactor: usize, event: WsEvent) {
        self.websockets.event(py, reactor, event);
    }

    /// Moves what WebSocket apps did since the last call into the outboxes.
    pub fn flush_websockets(&self, outboxes: &mut Outboxes) {
        self.websockets.flush(outboxes);
    }

    /// Starts the task serving WebSocket upgrade `job` with `app`.
    #[allow(clippy::too_many_arguments)]
    fn open_socket(
        &self,
        py: Python<'_>,
        index: usize,
        app: SocketApp<'_>,
        job: Job,
        fields: &Arc<[Field]>,
        target: ReplyTo,
        outboxes: &mut Outboxes,
        runtime: Option<&mut Runtime>,
    ) {
        let head = job.head;
        let job_fields = job.fields_in(fields).to_vec();
        let started = (|| {
            let rt = runtime
                .ok_or_else(|| pyo3::exceptions::PyRuntimeError::new_err("no event loop"))?;
            let api = match app {
                SocketApp::Asgi(_) => Api::Asgi,
                // A handler's `pyrs.WebSocket` wraps the upgrade request.
                SocketApp::Handler(_) => {
                    let request = Request::new(
                        job.data.clone(),
                        head,
                        fields.clone(),
                        job.fields.clone(),
                        job.body.clone(),
                        job.remote,
                        job.tls.clone(),
                    );
                    Api::Handler(Bound::new(py, request)?.into_any())
                }
            };
            let (socket, args) = self.websockets.open(py, target, &job, &job_fields, api)?;
            let coro = match app {
                SocketApp::Asgi(asgi) => asgi.websocket_coro(py, &job, &job_fields, args)?,
                SocketApp::Handler(handler) => {
                    handler.handler.bind(py).call1((args.into_iter().next(),))?
                }
            };
            let pending = Pending {
                target,
                context: socket.unbind(),
                head,
                route: index,
                kind: TaskKind::WebSocket,
            };
            rt.spawn(py, &coro, pending)
        })();
        if let Err(e) = started {
            let name = match app {
                SocketApp::Asgi(asgi) => asgi.name(),
                SocketApp::Handler(handler) => &handler.name,
            };
            errors::log(py, &format!("error in {name} for {}", job.describe()), &e);
            outboxes.answer(target, |out| encode::internal_error(out, &head));
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
