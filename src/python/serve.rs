//! The serve loop of the Python worker thread: waits for batches without holding
//! the GIL, takes the GIL once per round, drains every queued batch under that one
//! hold, has the handlers answer them into the outboxes, and sends each reactor
//! one reply per round. Coroutines take their first step at once, and most end
//! there (`aio.rs`). While some wait, or the app's own tasks, timers or files
//! need the loop, it runs the event loop instead, which a reactor wakes after
//! sending a batch (or when a streamed response it waits on has room, or lost
//! its client). Without a pool it also
//! steps the WSGI streams it started between rounds (`WsgiStream`).

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, TryRecvError};
use pyo3::prelude::*;
use pyrs_parser::Field;

use super::aio::Runtime;
use super::outbox::Outboxes;
use super::pool::Pool;
use super::routes::Routes;
use super::stream::Link;
use crate::date;
use crate::dispatch::{Batch, WorkerWakeup};

/// Most requests handled under one GIL hold before replies go out; bounds the
/// latency a long pipeline adds to other connections' responses.
const MAX_BATCH: usize = 4096;
/// How often WSGI streams paused for their clients are looked at while no batch
/// comes (their wakes reach the event loop, not the job channel).
const STREAM_POLL: Duration = Duration::from_millis(5);

/// The worker's side of the reactors: where batches come from and replies go.
pub struct Wiring<'a> {
    pub link: &'a Arc<Link>,
    /// Threads for blocking calls, when `python_threads` > 1.
    pub pool: Option<&'a Pool>,
    pub jobs: &'a Receiver<Batch>,
    /// Requests sent by reactors and not yet handled (they stop reading past
    /// `max_queued_requests`).
    pub queued: &'a AtomicUsize,
    pub wakeup: &'a WorkerWakeup,
}

/// Serves until every reactor has hung up, then cancels the tasks left.
pub fn serve(py: Python<'_>, routes: &Routes, runtime: &mut Option<Runtime>, wiring: &Wiring<'_>) {
    wiring.wakeup.register_worker();
    let mut outboxes = Outboxes::new(wiring.link.clone());
    if wiring.pool.is_none() {
        // No pool to iterate WSGI streams: the worker steps them between rounds.
        outboxes = outboxes.stepping_streams();
    }
    loop {
        if !needs_loop(py, runtime.as_ref()) {
            let wait = if outboxes.has_streams() {
                // WSGI streams are open: step them, and wait for a batch only
                // as long as none of them can go on.
                outboxes.step_streams(py);
                outboxes.send();
                Some(match outboxes.streams_ready() {
                    true => Duration::ZERO,
                    false => STREAM_POLL,
                })
            } else {
                // The fast path: sleep without the GIL until a batch comes.
                None
            };
            let first = match wait_for_batch(py, wiring, runtime.as_ref(), wait) {
                Waited::Batch(first) => first,
                Waited::Other => continue,
                Waited::Closed => break,
            };
            date::refresh();
            let mut handled = handle_batch(py, routes, first, &mut outboxes, runtime, wiring.pool);
            while handled < MAX_BATCH {
                match wiring.jobs.try_recv() {
                    Ok(batch) => {
                        handled +=
                            handle_batch(py, routes, batch, &mut outboxes, runtime, wiring.pool)
                    }
                    Err(_) => break,
                }
            }
            wiring.queued.fetch_sub(handled, Ordering::Relaxed);
            finish_done(py, routes, runtime, &mut outboxes);
            routes.flush_websockets(&mut outboxes);
            outboxes.send();
            continue;
        }
        // Coroutines are in flight: run the event loop, and let reactors wake it
        // through the eventfd when a batch arrives.
        wiring.wakeup.set_waiting(true);
        let mut handled = 0;
        let mut disconnected = false;
        while handled < MAX_BATCH {
            match wiring.jobs.try_recv() {
                Ok(batch) => {
                    date::refresh();
                    handled += handle_batch(py, routes, batch, &mut outboxes, runtime, wiring.pool);
                }
                Err(TryRecvError::Empty) => break,
                Err(TryRecvError::Disconnected) => {
                    disconnected = true;
                    break;
                }
            }
        }
        if handled > 0 {
            wiring.queued.fetch_sub(handled, Ordering::Relaxed);
        }
        finish_done(py, routes, runtime, &mut outboxes);
        routes.flush_websockets(&mut outboxes);
        outboxes.send();
        if disconnected {
            wiring.wakeup.set_waiting(false);
            break;
        }
        let Some(rt) = runtime.as_mut() else {
            break;
        };
        if !outboxes.has_streams() && !needs_loop(py, Some(rt)) {
            // What came ended in its first step, or waits for the worker:
            // back to the channel.
            wiring.wakeup.set_waiting(false);
            continue;
        }
        outboxes.step_streams(py);
        outboxes.send();
        if rt.run_ready(py) {
            // Tasks that a batch woke have taken their steps.
        } else if outboxes.streams_ready() {
            rt.run_once(py);
        } else {
            rt.run_until_woken(py);
        }
        wiring.wakeup.set_waiting(false);
        date::refresh();
        // Streamed ASGI responses the reactors made room for (or hung up).
        wiring.link.poll_watches(py);
        finish_done(py, routes, runtime, &mut outboxes);
        routes.flush_websockets(&mut outboxes);
        outboxes.send();
    }
    outboxes.end_streams(py);
    if let Some(rt) = runtime.as_mut() {
        rt.cancel_all(py);
    }
}

/// Whether the event loop must run for the tasks in flight: not when every
/// one waits for the worker itself (a WebSocket's `receive()`, whose wake-up
/// the worker runs: `wait.rs`) and the loop has no work of its own
/// ([`Runtime::busy`]).
fn needs_loop(py: Python<'_>, runtime: Option<&Runtime>) -> bool {
    runtime.is_some_and(|rt| rt.in_flight() > rt.blocked() || rt.busy(py))
}

/// How a wait for a batch ended.
enum Waited {
    Batch(Batch),
    /// The time was up, or another thread handed the event loop work.
    Other,
    /// Every reactor has hung up.
    Closed,
}

/// Waits without the GIL for a batch, for at most `timeout` (`None`: as long
/// as it takes), or until another thread nudges the event loop. The worker
/// parks (`WorkerWakeup::park`) rather than block on the channel.
fn wait_for_batch(
    py: Python<'_>,
    wiring: &Wiring<'_>,
    runtime: Option<&Runtime>,
    timeout: Option<Duration>,
) -> Waited {
    let jobs = wiring.jobs;
    let nudges = runtime.map(Runtime::nudges);
    py.detach(|| {
        let deadline = timeout.map(|t| Instant::now() + t);
        loop {
            match jobs.try_recv() {
                Ok(batch) => return Waited::Batch(batch),
                Err(TryRecvError::Disconnected) => return Waited::Closed,
                Err(TryRecvError::Empty) => {}
            }
            if nudges.is_some_and(|n| n.try_recv().is_ok()) {
                return Waited::Other;
            }
            if deadline.is_some_and(|d| Instant::now() >= d) {
                return Waited::Other;
            }
            wiring.wakeup.park(deadline, || {
                !jobs.is_empty() || nudges.is_some_and(|n| !n.is_empty())
            });
        }
    })
}

/// Answers for the handlers that finished (tasks the loop ran to their end,
/// and coroutines that ended in their eager first step), then leaves the loop.
fn finish_done(
    py: Python<'_>,
    routes: &Routes,
    runtime: &mut Option<Runtime>,
    outboxes: &mut Outboxes,
) {
    let Some(rt) = runtime.as_mut() else {
        return;
    };
    finish_ready(py, routes, rt, outboxes);
    rt.leave(py);
}

/// Answers for the handlers that have finished; finishing one may start
/// another (a streamed body's pump), which may end at once too, or wake
/// tasks it left waiting (a WebSocket's reader), which go on now.
fn finish_ready(py: Python<'_>, routes: &Routes, rt: &mut Runtime, outboxes: &mut Outboxes) {
    loop {
        let done = rt.take_done(py);
        if done.is_empty() {
            if rt.wake_waiting(py) {
                continue;
            }
            break;
        }
        for (pending, outcome) in done {
            routes.finish_task(py, pending, outcome, outboxes, rt);
        }
    }
}

/// Calls the handler of every job in `batch`, or hands blocking ones to the
/// pool; returns how many it answered itself (the pool counts its own).
fn handle_batch(
    py: Python<'_>,
    routes: &Routes,
    batch: Batch,
    outboxes: &mut Outboxes,
    runtime: &mut Option<Runtime>,
    pool: Option<&Pool>,
) -> usize {
    let mut handled = 0;
    // One allocation per batch: each request keeps a share of its fields' spans.
    let fields: Arc<[Field]> = batch.fields.into();
    for event in batch.ws {
        routes.websocket_event(py, batch.reactor, event);
    }
    if let Some(rt) = runtime.as_mut() {
        // The tasks those events woke go on now, without a loop iteration.
        finish_ready(py, routes, rt, outboxes);
    }
    for job in batch.jobs {
        match pool {
            Some(pool) if routes.is_blocking(job.route) => pool.submit(job, &fields, batch.reactor),
            _ => {
                if let (Some(rt), true) = (runtime.as_ref(), routes.is_blocking(job.route)) {
                    // Synchronous code must not see the loop running.
                    rt.leave(py);
                }
                routes.call(py, job, &fields, batch.reactor, outboxes, runtime.as_mut());
                handled += 1;
                // A coroutine that ended in its first step is answered now, not
                // at the round's end: what it made dies young, so a long batch
                // keeps few objects alive (the cyclic collector ran in
                // proportion to them) and the response leaves sooner.
                if let Some(rt) = runtime.as_mut().filter(|rt| rt.has_done(py)) {
                    finish_ready(py, routes, rt, outboxes);
                }
            }
        }
    }
    if let Some(rt) = runtime.as_ref() {
        rt.leave(py);
    }
    handled
}
