//! Python threads for blocking calls (`python_threads` > 1): the serve loop hands
//! each request for a synchronous pyrs handler or a WSGI app to one of N threads,
//! which takes the GIL to call it (a view waiting on a database or a sleep
//! releases the GIL, so the others run meanwhile), encodes the response and
//! sends it to its reactor itself; a WSGI response that streams is iterated to
//! its end by that thread, which waits (without the GIL) while the client is
//! behind; one reading a streamed request body (`wsgi.input`) waits for it
//! the same way, and only that thread waits. Responses still leave each
//! connection in request order: every reply carries its request's sequence
//! number and the reactor orders them. With
//! `python_threads` 1 there is no pool and the serve loop calls everything
//! itself, batch by batch.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::thread::{self, JoinHandle};

use crossbeam_channel::{Receiver, Sender};
use pyo3::prelude::*;
use pyrs_parser::Field;

use super::outbox::Outboxes;
use super::routes::Routes;
use super::stream::Link;
use crate::date;
use crate::dispatch::Job;

/// One request for a pool thread.
struct Work {
    job: Job,
    fields: Arc<[Field]>,
    reactor: usize,
}

pub struct Pool {
    work: Option<Sender<Work>>,
    threads: Vec<JoinHandle<()>>,
}

impl Pool {
    /// Starts `count` threads calling `routes` and answering through `link`;
    /// each decrements `queued` when it has answered a request.
    pub fn start(
        count: usize,
        routes: Arc<Routes>,
        link: &Arc<Link>,
        queued: Arc<AtomicUsize>,
    ) -> std::io::Result<Pool> {
        let (tx, rx) = crossbeam_channel::unbounded::<Work>();
        let mut threads = Vec::with_capacity(count);
        for _ in 0..count {
            let (rx, routes, link, queued) =
                (rx.clone(), routes.clone(), link.clone(), queued.clone());
            threads.push(
                thread::Builder::new()
                    .name("pyrs-python".into())
                    .spawn(move || serve(&rx, &routes, link, &queued))?,
            );
        }
        Ok(Pool {
            work: Some(tx),
            threads,
        })
    }

    /// Hands one request to the next free thread.
    pub fn submit(&self, job: Job, fields: &Arc<[Field]>, reactor: usize) {
        if let Some(tx) = &self.work {
            let _ = tx.send(Work {
                job,
                fields: fields.clone(),
                reactor,
            });
        }
    }

    /// Lets the threads finish what they were given, then joins them. Must be
    /// called without the GIL held (they need it to finish).
    pub fn finish(mut self) {
        self.work = None;
        for t in self.threads.drain(..) {
            if t.join().is_err() {
                eprintln!("pyrs: a Python thread panicked");
            }
        }
    }
}

/// A pool thread: waits without the GIL, serves one request with it.
fn serve(work: &Receiver<Work>, routes: &Routes, link: Arc<Link>, queued: &AtomicUsize) {
    let mut outboxes = Outboxes::new(link);
    while let Ok(Work {
        job,
        fields,
        reactor,
    }) = work.recv()
    {
        date::refresh();
        Python::attach(|py| routes.call(py, job, &fields, reactor, &mut outboxes, None));
        queued.fetch_sub(1, Ordering::Relaxed);
        outboxes.send();
    }
}
