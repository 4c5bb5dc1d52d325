//! A reactor thread: one mio `Poll`, one `SO_REUSEPORT` listener, and the
//! connections it accepted. It reads, frames and answers what needs no Python (404,
//! framing errors, 408, 503, `100 Continue`, static files) itself, collects the requests for Python
//! of one loop round into a single [`Batch`] for the worker, and writes the worker's
//! [`Reply`] when its `Waker` fires: one `write()` per connection per round.
//!
//! A connection whose WebSocket upgrade the app accepted becomes a WebSocket
//! here: the reactor unframes what the client sends (`ws.rs`), passes whole
//! messages to the worker in its batch, frames what the worker sends, answers
//! pings, pings a silent client, and tells the worker when a client stops
//! reading (so that the app's sends wait).
//!
//! A request body streaming to its app (`upload.rs`) is read only while the app
//! keeps up: past the in-flight bound the connection is left unread until the
//! app reports what it took ([`ItemKind::BodyConsumed`]), as for WebSockets.
//!
//! It also enforces the per-connection limits and timers. Timers cost nothing per
//! request: each connection records when it last made progress (the loop's clock,
//! read once per round), and a sweep every [`SWEEP_INTERVAL`] closes what is overdue.

use std::io::{self, IoSlice, Write};
use std::net::Shutdown;
use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, Sender};
use mio::{Events, Interest, Poll, Token, Waker};
use pyrs_parser::Limits;
use slab::Slab;

use crate::buffers::{BufPool, ReadOutcome};
use crate::conn::{ConnState, Phase, Rules};
use crate::date;
use crate::dispatch::{
    Batch, ConnRef, Handle, ItemKind, Part, Reply, WorkerWakeup, WsEvent, WsKind,
};
use crate::handoff::Bell;
use crate::listener::{Listener, Stream};
use crate::log;
use crate::output::{FileFront, MAX_SLICES};
use crate::router::Router;
use crate::server::Served;
use crate::statics::Mount;
use crate::tap::Tap;
use crate::tls::{self, Acceptor, TlsConn};
use crate::upload::Uploads;
use crate::ws::{Event, WsConn};

const LISTENER: Token = Token(0);
const WAKER: Token = Token(1);
const FIRST_CONN: usize = 2;

/// Reads per connection per loop round before other connections get their turn.
const READS_PER_ROUND: usize = 8;
/// How long a connection we are closing may keep sending before we close it hard.
/// Reading (and discarding) until the client's FIN keeps the kernel from answering
/// unread bytes with a reset that could destroy our last response in flight.
const LINGER: Duration = Duration::from_secs(2);
/// Lingering allowed once a graceful stop has begun: enough for responses in
/// flight to be delivered, short enough not to hold up the exit.
const LINGER_WHILE_STOPPING: Duration = Duration::from_millis(250);
/// A client that takes none of its responses for this long is disconnected.
const SEND_TIMEOUT: Duration = Duration::from_secs(60);
/// How often timers are checked; timeouts fire up to this much late.
const SWEEP_INTERVAL: Duration = Duration::from_millis(250);
/// A WebSocket's client messages the app has not taken yet, past which the
/// reactor stops reading it (with `max_websocket_message` bytes: so a client
/// that floods an app that does not read fills nobody's memory).
const WS_UNCONSUMED_MESSAGES: usize = 32;

/// While retiring, a keep-alive connection idle this long is closed: its client
/// is not sending, so it will not be caught mid-request.
const RETIRE_IDLE: Duration = Duration::from_secs(1);
/// Poll timeout while a graceful stop is in progress.
const TICK: Duration = Duration::from_millis(100);
/// Poll timeout while connections wait for the Python queue to shrink.
const STALL_RECHECK: Duration = Duration::from_millis(5);
/// Wait before accepting again after the process ran out of file descriptors.
const ACCEPT_RETRY: Duration = Duration::from_millis(100);
/// Response bytes written to one connection per loop round. A client reading a
/// large file as fast as loopback allows would otherwise keep the reactor in
/// one `flush` until the whole file is out; past this it waits for the next
/// round, after every other ready connection had its turn.
const WRITE_PER_ROUND: usize = 1024 * 1024;

/// Limits and timers from the project file (see `config.rs` for the defaults).
pub struct Settings {
    pub id: usize,
    pub router: Arc<Router>,
    /// The static mounts the router's `Route::Static` indexes.
    pub mounts: Arc<[Mount]>,
    pub limits: Limits,
    pub tcp_nodelay: bool,
    pub shutdown_timeout: Duration,
    pub header_timeout: Duration,
    pub keepalive_timeout: Duration,
    pub body_timeout: Duration,
    /// Largest WebSocket message.
    pub max_websocket_message: usize,
    /// A WebSocket silent this long is pinged; twice as long, closed.
    pub websocket_ping: Duration,
    /// Connections this reactor holds at once.
    pub max_connections: usize,
    pub max_pipelined: usize,
    pub max_write_buffer: usize,
    /// Requests queued to Python (all reactors) past which reading stops.
    pub max_queued: usize,
    /// Requests queued to Python past which requests for Python get 503; 0 is off.
    pub shed_queued: usize,
    /// Requests sent to the worker and not yet handled, over all reactors.
    pub queued: Arc<AtomicUsize>,
    /// Wakes the worker when it waits on its event loop rather than on the channel.
    pub wakeup: Arc<WorkerWakeup>,
    /// Set (before `stop`) when this worker hands over to a successor: drain
    /// gently (see [`ConnState::drain_gently`]).
    pub retiring: Arc<AtomicBool>,
    /// Requests framed, per reactor (this one writes `served[id]`).
    pub served: Arc<[Served]>,
    /// Notes each request for the access log and the metrics.
    pub tap: Tap,
    /// HTTPS: every accepted connection speaks TLS (see `tls.rs`).
    pub tls: Option<Arc<Acceptor>>,
    /// Per `modules` entry: whether it takes large bodies as they arrive (a
    /// WSGI or ASGI app; see `upload.rs`).
    pub streamed: Arc<[bool]>,
}

struct Connection {
    stream: Stream,
    /// Over HTTPS, the TLS state between the socket and `state`.
    tls: Option<Box<TlsConn>>,
    state: ConnState,
    generation: u32,
    /// The socket may have unread bytes (edge-triggered: we read until WouldBlock).
    readable: bool,
    /// Queued for service at the end of this round.
    dirty: bool,
    /// Waiting for the Python queue to shrink before reading again.
    stalled: bool,
    /// The peer sent its FIN.
    eof: bool,
    /// epoll reported the peer's FIN (or an error): reads must go on to EOF.
    read_closed: bool,
    /// `TCP_NODELAY` is set on this socket.
    nodelay: bool,
    /// Our side is shut down; read and discard until EOF or this deadline.
    linger_until: Option<Instant>,
    /// Last time bytes came in or went out.
    last_active: Instant,
    /// Last time the socket took response bytes (or the write buffer was empty).
    last_write: Instant,
    /// Since when a partial head has been waiting, and for which request.
    head_since: Option<(u64, Instant)>,
    /// Once upgraded: the WebSocket's protocol state.
    ws: Option<Box<WsConn>>,
    /// Bytes of messages from the worker queued since the last
    /// [`WsKind::Written`] report.
    ws_unreported: usize,
    /// The sizes of the messages passed to the app and not yet taken by it.
    ws_unconsumed: std::collections::VecDeque<usize>,
    /// Their sum.
    ws_unconsumed_bytes: usize,
    /// When this WebSocket was last pinged.
    ws_pinged: Option<Instant>,
    /// When this WebSocket's client last sent anything (writes do not count).
    ws_heard: Instant,
}

pub struct Reactor {
    settings: Settings,
    poll: Poll,
    listener: Option<Listener>,
    /// The listener is deregistered because `max_connections` was reached.
    accept_paused: bool,
    /// Try accepting at the end of this round (a slot became free).
    accept_now: bool,
    /// Accepting failed for lack of descriptors; try again then.
    accept_retry_at: Option<Instant>,
    accept_error_logged: bool,
    conns: Slab<Connection>,
    next_generation: u32,
    jobs: Sender<Batch>,
    replies: Receiver<Reply>,
    /// Rung by the worker after it sent replies, while this reactor sleeps.
    bell: Arc<Bell>,
    batch: Batch,
    dirty: Vec<usize>,
    stalled: Vec<usize>,
    pool: BufPool,
    stop: Arc<AtomicBool>,
    drain_deadline: Option<Instant>,
    /// How long closing connections linger ([`LINGER`], shorter while stopping).
    linger: Duration,
    /// The loop's clock, read once per round.
    now: Instant,
    next_sweep: Instant,
    /// Requests framed this round, added to `served` at its end.
    round_frames: u64,
    /// Draining for a successor rather than stopping.
    gentle: bool,
    /// What streamed request bodies need: this reactor's handle (for the
    /// app's consumption reports) and the worker's wakeup.
    uploads: Arc<Uploads>,
}

impl Reactor {
    /// Creates the reactor and the handle the worker uses to answer it.
    pub fn new(
        settings: Settings,
        mut listener: Listener,
        jobs: Sender<Batch>,
        stop: Arc<AtomicBool>,
    ) -> io::Result<(Reactor, Handle)> {
        let poll = Poll::new()?;
        let bell = Arc::new(Bell::new(Waker::new(poll.registry(), WAKER)?));
        poll.registry()
            .register(&mut listener, LISTENER, Interest::READABLE)?;
        let (tx, rx) = crossbeam_channel::unbounded();
        let handle = Handle {
            bell: bell.clone(),
            replies: tx,
        };
        let uploads = Arc::new(Uploads {
            handle: handle.clone(),
            wakeup: settings.wakeup.clone(),
            streamed: settings.streamed.clone(),
        });
        let now = Instant::now();
        let reactor = Reactor {
            settings,
            poll,
            listener: Some(listener),
            accept_paused: false,
            accept_now: false,
            accept_retry_at: None,
            accept_error_logged: false,
            conns: Slab::with_capacity(1024),
            next_generation: 0,
            jobs,
            replies: rx,
            bell: bell.clone(),
            batch: Batch::default(),
            dirty: Vec::new(),
            stalled: Vec::new(),
            pool: BufPool::default(),
            stop,
            drain_deadline: None,
            linger: LINGER,
            now,
            next_sweep: now + SWEEP_INTERVAL,
            round_frames: 0,
            gentle: false,
            uploads,
        };
        Ok((reactor, handle))
    }

    /// Runs until a graceful stop has finished (or its deadline passed).
    pub fn run(mut self) {
        let mut events = Events::with_capacity(1024);
        loop {
            let timeout = self.wait_timeout();
            if let Err(e) = self.poll.poll(&mut events, timeout) {
                if e.kind() != io::ErrorKind::Interrupted {
                    log::error(format!("reactor {}: poll failed: {e}", self.settings.id));
                    return;
                }
            }
            self.bell.unpark();
            self.now = Instant::now();
            date::refresh();
            self.settings.tap.set_now(self.now);
            // Replies come with a ring only while this reactor sleeps: look
            // every round.
            self.take_replies();
            for event in events.iter() {
                match event.token() {
                    LISTENER => self.accept(),
                    WAKER => {}
                    Token(t) => {
                        let key = t - FIRST_CONN;
                        if let Some(c) = self.conns.get_mut(key) {
                            if event.is_readable() || event.is_read_closed() || event.is_error() {
                                c.readable = true;
                            }
                            if event.is_read_closed() || event.is_error() {
                                c.read_closed = true;
                            }
                            mark(&mut self.dirty, key, c);
                        }
                    }
                }
            }
            if self.accept_now || self.accept_retry_at.is_some_and(|t| self.now >= t) {
                self.accept_now = false;
                self.accept_retry_at = None;
                self.accept();
            }
            if !self.stalled.is_empty() && !self.overloaded() {
                for key in std::mem::take(&mut self.stalled) {
                    if let Some(c) = self.conns.get_mut(key) {
                        c.stalled = false;
                        mark(&mut self.dirty, key, c);
                    }
                }
            }
            self.service_dirty();
            self.send_batch();
            if self.round_frames > 0 {
                let served = &self.settings.served[self.settings.id];
                served.0.fetch_add(self.round_frames, Ordering::Relaxed);
                self.round_frames = 0;
            }
            if self.stop.load(Ordering::Acquire) && self.drain_deadline.is_none() {
                self.start_drain();
            }
            if let Some(deadline) = self.drain_deadline {
                if self.conns.is_empty() || self.now >= deadline {
                    return;
                }
            }
            if self.now >= self.next_sweep {
                self.sweep();
                self.next_sweep = self.now + SWEEP_INTERVAL;
                // A WebSocket the sweep closed: its app hears of it now.
                self.send_batch();
            }
            self.settings.tap.round_end(self.conns.len());
        }
    }

    /// How long this round's `epoll_wait` may sleep: not at all when there is
    /// work or a reply waiting. A sleep parks the bell, so that replies ring
    /// (see `handoff.rs`).
    fn wait_timeout(&self) -> Option<Duration> {
        let timeout = self.poll_timeout();
        if timeout == Some(Duration::ZERO) {
            return timeout;
        }
        self.bell.park();
        if !self.replies.is_empty() {
            return Some(Duration::ZERO);
        }
        timeout
    }

    fn poll_timeout(&self) -> Option<Duration> {
        if !self.dirty.is_empty() {
            return Some(Duration::ZERO);
        }
        let mut timeout: Option<Duration> = None;
        let mut consider = |d: Duration| {
            timeout = Some(timeout.map_or(d, |t| t.min(d)));
        };
        if !self.conns.is_empty() {
            consider(self.next_sweep.saturating_duration_since(self.now));
        }
        if self.drain_deadline.is_some() {
            consider(TICK);
        }
        if !self.stalled.is_empty() {
            consider(STALL_RECHECK);
        }
        if let Some(t) = self.accept_retry_at {
            consider(t.saturating_duration_since(self.now));
        }
        if let Some(d) = self.settings.tap.wake_in() {
            consider(d);
        }
        timeout
    }

    fn overloaded(&self) -> bool {
        self.settings.queued.load(Ordering::Relaxed) >= self.settings.max_queued
    }

    fn accept(&mut self) {
        loop {
            let Some(listener) = &self.listener else {
                return;
            };
            if self.accept_paused {
                return;
            }
            if self.conns.len() >= self.settings.max_connections {
                self.pause_accept();
                return;
            }
            match listener.accept() {
                Ok((mut stream, remote)) => {
                    if self.settings.tcp_nodelay {
                        // Best effort: a socket that refuses it still works.
                        let _ = stream.set_nodelay(true);
                    }
                    let tls = match self.settings.tls.as_ref().map(|a| a.accept(self.now)) {
                        None => None,
                        Some(Ok(tls)) => Some(tls),
                        Some(Err(e)) => {
                            log::error(format!("cannot start TLS on a connection: {e}"));
                            continue;
                        }
                    };
                    let entry = self.conns.vacant_entry();
                    let key = entry.key();
                    if let Err(e) = self.poll.registry().register(
                        &mut stream,
                        Token(key + FIRST_CONN),
                        Interest::READABLE | Interest::WRITABLE,
                    ) {
                        log::error(format!("cannot register a connection: {e}"));
                        continue;
                    }
                    self.next_generation = self.next_generation.wrapping_add(1);
                    entry.insert(Connection {
                        stream,
                        tls,
                        state: ConnState::new(remote),
                        generation: self.next_generation,
                        readable: true,
                        dirty: false,
                        stalled: false,
                        eof: false,
                        read_closed: false,
                        nodelay: self.settings.tcp_nodelay,
                        linger_until: None,
                        last_active: self.now,
                        last_write: self.now,
                        head_since: None,
                        ws: None,
                        ws_unreported: 0,
                        ws_unconsumed: std::collections::VecDeque::new(),
                        ws_unconsumed_bytes: 0,
                        ws_pinged: None,
                        ws_heard: self.now,
                    });
                    if let Some(c) = self.conns.get_mut(key) {
                        mark(&mut self.dirty, key, c);
                    }
                    self.accept_error_logged = false;
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) if e.kind() == io::ErrorKind::ConnectionAborted => continue,
                Err(e) => {
                    // EMFILE/ENFILE/ENOBUFS/ENOMEM: the connection stays in the
                    // backlog; try again shortly. Logged once per episode.
                    if !self.accept_error_logged {
                        log::error(format!(
                            "accept failed: {e}; new connections wait in the backlog"
                        ));
                        self.accept_error_logged = true;
                    }
                    self.accept_retry_at = Some(self.now + ACCEPT_RETRY);
                    return;
                }
            }
        }
    }

    /// Stops taking connections until one closes (`max_connections`).
    fn pause_accept(&mut self) {
        if let Some(l) = &mut self.listener {
            if self.poll.registry().deregister(l).is_ok() {
                self.accept_paused = true;
                if !self.accept_error_logged {
                    log::error(format!(
                        "reactor {}: {} connections open (max_connections); new connections \
                         wait in the backlog",
                        self.settings.id,
                        self.conns.len()
                    ));
                    self.accept_error_logged = true;
                }
            }
        }
    }

    fn resume_accept(&mut self) {
        if let Some(l) = &mut self.listener {
            if self
                .poll
                .registry()
                .register(l, LISTENER, Interest::READABLE)
                .is_ok()
            {
                self.accept_paused = false;
                self.accept_now = true;
            }
        }
    }

    fn take_replies(&mut self) {
        if self.replies.is_empty() {
            return;
        }
        while let Ok(reply) = self.replies.try_recv() {
            let mut start = 0;
            for item in &reply.items {
                let range = start..item.end;
                start = item.end;
                let key = item.conn.key as usize;
                match self.conns.get_mut(key) {
                    Some(c) if c.generation == item.conn.generation => {
                        c.state.lend_buffers(&mut self.pool);
                        match item.kind {
                            ItemKind::Response => {
                                if c.state.is_upgrading() {
                                    c.state.refuse_upgrade();
                                }
                                let tap = &mut self.settings.tap;
                                if item.part == Part::Whole {
                                    c.state.on_reply(item.seq, &reply.out, range, tap);
                                } else {
                                    let flow = reply.flow.as_ref();
                                    c.state
                                        .on_part(item.seq, &reply.out, range, item.part, flow, tap);
                                }
                            }
                            // The app took part of a streamed body: read on
                            // (the connection is serviced below), the body's
                            // idle clock starting again now.
                            ItemKind::BodyConsumed => c.last_active = self.now,
                            ItemKind::Upgrade => {
                                c.state.on_reply(
                                    item.seq,
                                    &reply.out,
                                    range,
                                    &mut self.settings.tap,
                                );
                                let first = c.state.take_input();
                                let max = self.settings.max_websocket_message;
                                c.ws = Some(Box::new(WsConn::new(max, &first)));
                                c.ws_heard = self.now;
                            }
                            kind => ws_send(c, kind, &reply.out, range),
                        }
                        mark(&mut self.dirty, key, c);
                    }
                    // The connection is gone: a streaming producer must stop.
                    _ => {
                        if let Some(flow) = &reply.flow {
                            flow.hang_up();
                        }
                    }
                }
            }
        }
    }

    fn service_dirty(&mut self) {
        if self.dirty.is_empty() {
            return;
        }
        let dirty = std::mem::take(&mut self.dirty);
        let router = self.settings.router.clone();
        let mounts = self.settings.mounts.clone();
        let limits = self.settings.limits;
        let queued = self.settings.queued.load(Ordering::Relaxed);
        let uploads = self.uploads.clone();
        let rules = Rules {
            router: &router,
            mounts: &mounts,
            limits: &limits,
            max_pipelined: self.settings.max_pipelined,
            max_write_buffer: self.settings.max_write_buffer,
            shed: self.settings.shed_queued > 0 && queued >= self.settings.shed_queued,
            uploads: Some(&uploads),
        };
        let overloaded = queued >= self.settings.max_queued;
        for &key in &dirty {
            if let Some(c) = self.conns.get_mut(key) {
                c.dirty = false;
            }
        }
        for key in dirty {
            self.service(key, &rules, overloaded);
        }
    }

    /// Reads what is available, frames it, writes what is ready, and closes the
    /// connection when it is done.
    fn service(&mut self, key: usize, rules: &Rules<'_>, overloaded: bool) {
        let now = self.now;
        let Some(c) = self.conns.get_mut(key) else {
            return;
        };
        let me = ConnRef {
            key: key as u32,
            generation: c.generation,
        };
        if c.linger_until.is_some() {
            if discard_input(c) {
                self.close(key);
            }
            return;
        }
        if c.ws.is_some() {
            self.service_ws(key, me);
            return;
        }
        let mut alive = true;
        let frames_before = c.state.frames();
        if overloaded && !c.state.is_closing() && !c.state.is_uploading() {
            // The worker is behind: leave requests in the socket (TCP pushes back
            // on the client) until the queue shrinks. (Not a body its app is
            // reading: that app would wait for it, holding the queue up.)
            if !c.stalled {
                c.stalled = true;
                self.stalled.push(key);
            }
        } else {
            c.state.lend_buffers(&mut self.pool);
            c.state
                .process(rules, me, &mut self.batch, &mut self.settings.tap);
            let mut reads = 0;
            while c.readable && !c.state.read_blocked(rules) {
                if reads == READS_PER_ROUND {
                    // Fairness: come back next round without waiting for an event.
                    mark(&mut self.dirty, key, c);
                    break;
                }
                reads += 1;
                match read_once(c, &mut self.pool) {
                    Ok(ReadOutcome::Short(0)) => {
                        c.readable = false;
                        c.eof = true;
                        c.state.peer_closed();
                    }
                    Ok(ReadOutcome::Short(_)) => {
                        // The socket is drained: epoll (edge-triggered) reports any
                        // byte that arrives from now on, so skip the read that would
                        // only say EAGAIN (one syscall per request on keep-alive).
                        // Not when the peer's FIN came with this data: its event is
                        // already consumed, so read on until the read returns 0.
                        c.readable = c.read_closed;
                        c.last_active = now;
                        c.state
                            .process(rules, me, &mut self.batch, &mut self.settings.tap);
                    }
                    Ok(ReadOutcome::Full) => {
                        c.last_active = now;
                        c.state
                            .process(rules, me, &mut self.batch, &mut self.settings.tap);
                    }
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => c.readable = false,
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                    Err(e) if tls::is_plain_http(&e) => {
                        // Answered 400 in plain text: linger as after a last response.
                        let _ = c.stream.shutdown(Shutdown::Write);
                        c.linger_until = Some(now + self.linger);
                        if discard_input(c) {
                            self.close(key);
                        }
                        return;
                    }
                    Err(_) => {
                        alive = false;
                        break;
                    }
                }
            }
        }
        if c.eof && c.state.streaming() {
            // The client left while a response streams to it: close, which
            // stops the producer (see `FlowLink`).
            alive = false;
        }
        if !self.settings.tcp_nodelay
            && !c.nodelay
            && c.state.inflight() > 0
            && c.state.has_output()
        {
            // Part of this client's pipeline is answered now and the rest will follow
            // from Python: with Nagle on, that second write would wait for the
            // client's delayed ACK (~40 ms). Once per connection.
            c.nodelay = c.stream.set_nodelay(true).is_ok();
        }
        self.round_frames += c.state.frames() - frames_before;
        let was_blocked = c.state.read_blocked(rules);
        let flushed = if alive {
            flush(c, now)
        } else {
            Flushed::Broken
        };
        match flushed {
            Flushed::Broken => {
                self.close(key);
                return;
            }
            // The socket would take more: come back next round, without an event.
            Flushed::More => mark(&mut self.dirty, key, c),
            Flushed::Done => {}
        }
        c.state.report_flow();
        if was_blocked && c.readable && !c.state.read_blocked(rules) {
            // Writing made room (the client took its responses): read what it sent
            // meanwhile. Edge-triggered, so no new event will say so.
            mark(&mut self.dirty, key, c);
        }
        c.head_since = match (c.state.phase(), c.head_since) {
            (Phase::Head, Some((frames, since))) if frames == c.state.frames() => {
                Some((frames, since))
            }
            (Phase::Head, _) => Some((c.state.frames(), now)),
            _ => None,
        };
        c.state.recycle_buffers(&mut self.pool);
        // Over TLS, close_notify and every record must be out first.
        if c.state.finished() && c.tls.as_mut().is_none_or(|t| t.finish(&c.stream)) {
            if c.eof {
                self.close(key);
            } else {
                // Our last response is out: stop sending, then wait for the peer's
                // FIN while discarding anything it still sends.
                let _ = c.stream.shutdown(Shutdown::Write);
                c.linger_until = Some(now + self.linger);
                if discard_input(c) {
                    self.close(key);
                }
            }
        }
    }

    /// Reads a WebSocket's frames, passes whole messages on, writes what is
    /// queued, and closes it once its close handshake is done.
    fn service_ws(&mut self, key: usize, me: ConnRef) {
        let now = self.now;
        let max_write = self.settings.max_write_buffer;
        let Some(c) = self.conns.get_mut(key) else {
            return;
        };
        let mut alive = true;
        let mut reads = 0;
        let max_message = self.settings.max_websocket_message;
        let app_behind = |c: &Connection| {
            c.ws_unconsumed.len() >= WS_UNCONSUMED_MESSAGES || c.ws_unconsumed_bytes >= max_message
        };
        while c.readable && !app_behind(c) {
            if reads == READS_PER_ROUND {
                mark(&mut self.dirty, key, c);
                break;
            }
            reads += 1;
            match read_once(c, &mut self.pool) {
                Ok(ReadOutcome::Short(0)) => {
                    c.readable = false;
                    c.eof = true;
                }
                Ok(ReadOutcome::Short(_)) => {
                    c.readable = c.read_closed;
                    c.last_active = now;
                    c.ws_heard = now;
                }
                Ok(ReadOutcome::Full) => {
                    c.last_active = now;
                    c.ws_heard = now;
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => c.readable = false,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(_) => {
                    alive = false;
                    break;
                }
            }
            if let Some(ws) = &mut c.ws {
                ws.feed(&c.state.take_input());
            }
        }
        let Some(ws) = &mut c.ws else {
            return;
        };
        while let Some(event) = ws.poll() {
            let kind = match event {
                Event::Text(text) => {
                    c.ws_unconsumed.push_back(text.len());
                    c.ws_unconsumed_bytes += text.len();
                    WsKind::Text(text)
                }
                Event::Binary(data) => {
                    c.ws_unconsumed.push_back(data.len());
                    c.ws_unconsumed_bytes += data.len();
                    WsKind::Binary(data)
                }
                Event::Closed { code, reason } => WsKind::Closed { code, reason },
            };
            self.batch.ws.push(WsEvent { conn: me, kind });
        }
        move_frames(ws, &mut c.state);
        let flushed = if alive && !c.eof {
            flush(c, now)
        } else {
            Flushed::Broken
        };
        // Backpressure: the app may only send so much ahead of what left; a
        // client that does not read gets no report, and the app's sends wait.
        if c.ws_unreported > 0 && c.state.output_len() < max_write / 2 {
            let kind = WsKind::Written(std::mem::take(&mut c.ws_unreported));
            self.batch.ws.push(WsEvent { conn: me, kind });
        }
        c.state.recycle_buffers(&mut self.pool);
        let closed = c.ws.as_ref().is_some_and(|ws| ws.is_closed());
        match flushed {
            Flushed::Broken => self.close(key),
            Flushed::More => mark(&mut self.dirty, key, c),
            Flushed::Done if closed && !c.state.has_output() => {
                // Our close frame is out: the server ends the TCP connection
                // (RFC 6455 section 7.1.1), then drains what the client still sends.
                let _ = c.stream.shutdown(Shutdown::Write);
                c.linger_until = Some(now + self.linger);
                if discard_input(c) {
                    self.close(key);
                }
            }
            Flushed::Done => {}
        }
    }

    fn close(&mut self, key: usize) {
        if self.conns.contains(key) {
            let mut c = self.conns.remove(key);
            if c.ws.as_ref().is_some_and(|ws| !ws.is_closed()) {
                // Gone without a close handshake (or closed by a timer).
                let conn = ConnRef {
                    key: key as u32,
                    generation: c.generation,
                };
                let kind = WsKind::Closed {
                    code: 1006,
                    reason: String::new(),
                };
                self.batch.ws.push(WsEvent { conn, kind });
            }
            if let Some(tls) = &mut c.tls {
                tls.goodbye(&c.stream);
            }
            let _ = self.poll.registry().deregister(&mut c.stream);
            c.state.recycle_buffers(&mut self.pool);
        }
        if self.accept_paused && self.conns.len() < self.settings.max_connections {
            self.resume_accept();
        }
    }

    fn send_batch(&mut self) {
        if self.batch.is_empty() {
            return;
        }
        let mut batch = std::mem::take(&mut self.batch);
        batch.reactor = self.settings.id;
        let n = batch.jobs.len();
        self.settings.queued.fetch_add(n, Ordering::Relaxed);
        if self.jobs.send(batch).is_err() {
            self.settings.queued.fetch_sub(n, Ordering::Relaxed);
            log::error("the Python worker is gone; stopping".to_owned());
            self.stop.store(true, Ordering::Release);
        } else {
            self.settings.wakeup.notify_if_waiting();
        }
    }

    /// Checks every connection's timers; runs every [`SWEEP_INTERVAL`].
    fn sweep(&mut self) {
        let now = self.now;
        let s = &self.settings;
        let mut expired = Vec::new();
        let mut timed_out = Vec::new();
        let mut pings = Vec::new();
        for (key, c) in self.conns.iter() {
            if let Some(t) = c.linger_until {
                if now >= t {
                    expired.push(key);
                }
                continue;
            }
            if let Some(tls) = c.tls.as_ref().filter(|t| t.handshaking()) {
                // The handshake counts against header_timeout, from the accept.
                if tls.handshake_overdue(now, s.header_timeout) {
                    expired.push(key);
                }
                continue;
            }
            if c.ws.is_some() {
                let idle = now.saturating_duration_since(c.ws_heard);
                let ping = s.websocket_ping;
                if idle >= ping.saturating_mul(2) {
                    expired.push(key);
                } else if idle >= ping
                    && c.ws_pinged
                        .is_none_or(|t| now.saturating_duration_since(t) >= ping)
                {
                    pings.push(key);
                }
                continue;
            }
            let idle = now.saturating_duration_since(c.last_active);
            let unsent = c.state.has_output() || c.tls.as_ref().is_some_and(|t| t.wants_write());
            let stuck_writing =
                unsent && now.saturating_duration_since(c.last_write) >= SEND_TIMEOUT;
            match c.state.phase() {
                Phase::Idle if idle >= s.keepalive_timeout => expired.push(key),
                Phase::Idle if self.gentle && idle >= RETIRE_IDLE => expired.push(key),
                Phase::Head if !c.stalled => {
                    if let Some((_, since)) = c.head_since {
                        if now.saturating_duration_since(since) >= s.header_timeout {
                            timed_out.push(key);
                        }
                    }
                }
                Phase::Body if !c.stalled && idle >= s.body_timeout => timed_out.push(key),
                Phase::Busy | Phase::Closing if stuck_writing => expired.push(key),
                _ => {}
            }
        }
        for key in expired {
            self.close(key);
        }
        for key in pings {
            if let Some(c) = self.conns.get_mut(key) {
                if let Some(ws) = &mut c.ws {
                    ws.ping();
                    c.ws_pinged = Some(now);
                    mark(&mut self.dirty, key, c);
                }
            }
        }
        for key in timed_out {
            if let Some(c) = self.conns.get_mut(key) {
                c.state.time_out(&mut self.settings.tap);
                mark(&mut self.dirty, key, c);
            }
        }
    }

    fn start_drain(&mut self) {
        if let Some(mut l) = self.listener.take() {
            if !self.accept_paused {
                let _ = self.poll.registry().deregister(&mut l);
            }
        }
        self.drain_deadline = Some(self.now + self.settings.shutdown_timeout);
        self.linger = LINGER_WHILE_STOPPING;
        self.gentle = self.settings.retiring.load(Ordering::Acquire);
        let now = self.now;
        let keys: Vec<usize> = self.conns.iter().map(|(k, _)| k).collect();
        for key in keys {
            let Some(c) = self.conns.get_mut(key) else {
                continue;
            };
            if let Some(t) = &mut c.linger_until {
                *t = (*t).min(now + LINGER_WHILE_STOPPING);
                continue;
            }
            if let Some(ws) = &mut c.ws {
                ws.close(1001, "the server is going away");
                mark(&mut self.dirty, key, c);
                continue;
            }
            if self.gentle {
                c.state.drain_gently();
                continue;
            }
            c.state.drain();
            if c.state.finished() {
                // Idle keep-alive connection: nothing to finish.
                self.close(key);
            } else {
                mark(&mut self.dirty, key, c);
            }
        }
        self.service_dirty();
        self.send_batch();
    }
}

fn mark(dirty: &mut Vec<usize>, key: usize, c: &mut Connection) {
    if !c.dirty {
        c.dirty = true;
        dirty.push(key);
    }
}

/// One read from the socket into the connection's buffer; over TLS (HTTPS,
/// wss://) the records are decrypted on the way.
fn read_once(c: &mut Connection, pool: &mut BufPool) -> io::Result<ReadOutcome> {
    match &mut c.tls {
        Some(tls) => tls.read(&c.stream, &mut c.state, pool),
        None => c.state.read_from(c.stream.as_raw_fd(), pool),
    }
}

/// Frames one message (or the close) the worker sent for a WebSocket into its
/// output. A connection that is not (or no longer) a WebSocket drops it.
fn ws_send(c: &mut Connection, kind: ItemKind, out: &bytes::Bytes, range: std::ops::Range<usize>) {
    let Some(ws) = &mut c.ws else {
        return;
    };
    let payload = out.slice(range);
    if let ItemKind::WsConsumed(messages) = kind {
        for _ in 0..messages {
            match c.ws_unconsumed.pop_front() {
                Some(size) => c.ws_unconsumed_bytes -= size,
                None => break,
            }
        }
        return;
    }
    c.ws_unreported += payload.len();
    match kind {
        ItemKind::WsText => {
            if let Ok(text) = std::str::from_utf8(&payload) {
                ws.send_text(text);
            }
        }
        ItemKind::WsBinary => {
            ws.send_binary(payload);
        }
        ItemKind::WsClose(code) => ws.close(code, &String::from_utf8_lossy(&payload)),
        ItemKind::Response
        | ItemKind::Upgrade
        | ItemKind::WsConsumed(_)
        | ItemKind::BodyConsumed => {}
    }
    move_frames(ws, &mut c.state);
}

/// Moves the frames a WebSocket queued into its connection's output.
fn move_frames(ws: &mut WsConn, state: &mut ConnState) {
    let frames = ws.output();
    if !frames.is_empty() {
        state.push_output(frames);
        frames.clear();
    }
}

/// How a [`flush`] ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Flushed {
    /// Everything is written, or the socket is full (its writable event follows).
    Done,
    /// [`WRITE_PER_ROUND`] was reached with output left.
    More,
    /// The connection is broken, or a file ended before its promised length.
    Broken,
}

/// Writes as much of the output as the socket takes, up to [`WRITE_PER_ROUND`].
fn flush(c: &mut Connection, now: Instant) -> Flushed {
    if let Some(tls) = &mut c.tls {
        // Encrypted through rustls: no sendfile (see `tls.rs`).
        let flushed = tls.flush(&c.stream, &mut c.state, WRITE_PER_ROUND);
        return match flushed {
            Ok(f) => {
                if f.wrote > 0 || (!c.state.has_output() && !tls.wants_write()) {
                    c.last_write = now;
                }
                if f.wrote > 0 {
                    c.last_active = now;
                }
                if f.more {
                    Flushed::More
                } else {
                    Flushed::Done
                }
            }
            Err(_) => Flushed::Broken,
        };
    }
    if !c.state.has_output() {
        c.last_write = now;
        return Flushed::Done;
    }
    let mut budget = WRITE_PER_ROUND;
    while c.state.has_output() {
        if budget == 0 {
            return Flushed::More;
        }
        let out = c.state.output();
        let wrote = if let Some(file) = out.front_file() {
            send_file(&c.stream, file, budget)
        } else if out.is_split() {
            let mut slices = [IoSlice::new(&[]); MAX_SLICES];
            let n = out.slices(&mut slices);
            (&c.stream).write_vectored(&slices[..n])
        } else {
            (&c.stream).write(out.first())
        };
        match wrote {
            Ok(0) => return Flushed::Broken,
            Ok(n) => {
                c.state.written(n);
                budget = budget.saturating_sub(n);
                c.last_write = now;
                c.last_active = now;
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Flushed::Done,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(_) => return Flushed::Broken,
        }
    }
    Flushed::Done
}

/// One `sendfile` of at most `max` bytes from the front file segment: the bytes
/// go from the page cache to the socket without passing through user space.
/// `Ok(0)` means the file ended early (it shrank after it was opened).
fn send_file(stream: &Stream, file: FileFront, max: usize) -> io::Result<usize> {
    let count = usize::try_from(file.len).unwrap_or(usize::MAX).min(max);
    let Ok(mut offset) = libc::off_t::try_from(file.offset) else {
        return Ok(0);
    };
    // SAFETY: both descriptors are open for the duration of the call (the file
    // belongs to the connection's output); `offset` is a valid local.
    let n = unsafe { libc::sendfile(stream.as_raw_fd(), file.fd, &mut offset, count) };
    if n < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(n as usize)
}

/// Reads and drops input of a lingering connection. `true` when it should close now
/// (EOF, error).
fn discard_input(c: &mut Connection) -> bool {
    let mut scratch = [0u8; 4096];
    loop {
        match io::Read::read(&mut &c.stream, &mut scratch) {
            Ok(0) => return true,
            Ok(_) => {}
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                c.readable = false;
                return false;
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(_) => return true,
        }
    }
}
