//! A reactor thread: one mio `Poll`, one `SO_REUSEPORT` listener, and the
//! connections it accepted. It reads, frames and answers what needs no Python (404,
//! framing errors, `100 Continue`) itself, collects the requests for Python of one
//! loop round into a single [`Batch`] for the worker, and writes the worker's
//! [`Reply`] when its `Waker` fires: one `write()` per connection per round.

use std::io::{self, Write};
use std::net::Shutdown;
use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::{Buf, BytesMut};
use crossbeam_channel::{Receiver, Sender};
use mio::net::{TcpListener, TcpStream};
use mio::{Events, Interest, Poll, Token, Waker};
use pyrs_parser::Limits;
use slab::Slab;

use crate::conn::{ConnState, Ctx};
use crate::date;
use crate::dispatch::{Batch, ConnRef, Job, Reply};
use crate::router::Router;

const LISTENER: Token = Token(0);
const WAKER: Token = Token(1);
const FIRST_CONN: usize = 2;

/// Bytes requested from the kernel per `read()`; the read buffer grows by this much
/// when it has less than [`READ_MIN_SPARE`] free.
const READ_CHUNK: usize = 64 * 1024;
const READ_MIN_SPARE: usize = 4 * 1024;
/// Reads per connection per loop round before other connections get their turn.
const READS_PER_ROUND: usize = 8;
/// Buffers that grew past this (a large body, a long pipeline) are released once
/// empty instead of being kept for the connection's lifetime.
const KEEP_BUFFER_CAPACITY: usize = 256 * 1024;
/// How long a connection we are closing may keep sending before we close it hard.
/// Reading (and discarding) until the client's FIN keeps the kernel from answering
/// unread bytes with a reset that could destroy our last response in flight.
const LINGER: Duration = Duration::from_secs(2);
/// Lingering allowed once a graceful stop has begun: enough for responses in
/// flight to be delivered, short enough not to hold up the exit.
const LINGER_WHILE_STOPPING: Duration = Duration::from_millis(250);
/// Poll timeout while timers (linger, shutdown) are pending.
const TICK: Duration = Duration::from_millis(100);

/// What a reactor shares with the worker and the signal thread.
#[derive(Clone)]
pub struct Handle {
    pub waker: Arc<Waker>,
    pub replies: Sender<Reply>,
}

pub struct Settings {
    pub id: usize,
    pub router: Arc<Router>,
    pub limits: Limits,
    pub tcp_nodelay: bool,
    pub shutdown_timeout: Duration,
}

struct Connection {
    stream: TcpStream,
    state: ConnState,
    generation: u32,
    /// The socket may have unread bytes (edge-triggered: we read until WouldBlock).
    readable: bool,
    /// Queued for service at the end of this round.
    dirty: bool,
    /// The peer sent its FIN.
    eof: bool,
    /// Our side is shut down; read and discard until EOF or this deadline.
    linger_until: Option<Instant>,
}

pub struct Reactor {
    settings: Settings,
    poll: Poll,
    listener: Option<TcpListener>,
    conns: Slab<Connection>,
    next_generation: u32,
    jobs: Sender<Batch>,
    replies: Receiver<Reply>,
    batch: Vec<Job>,
    dirty: Vec<usize>,
    stop: Arc<AtomicBool>,
    drain_deadline: Option<Instant>,
    /// How long closing connections linger ([`LINGER`], shorter while stopping).
    linger: Duration,
    accept_error_logged: bool,
}

impl Reactor {
    /// Creates the reactor and the handle the worker uses to answer it.
    pub fn new(
        settings: Settings,
        mut listener: TcpListener,
        jobs: Sender<Batch>,
        stop: Arc<AtomicBool>,
    ) -> io::Result<(Reactor, Handle)> {
        let poll = Poll::new()?;
        let waker = Arc::new(Waker::new(poll.registry(), WAKER)?);
        poll.registry()
            .register(&mut listener, LISTENER, Interest::READABLE)?;
        let (tx, rx) = crossbeam_channel::unbounded();
        let reactor = Reactor {
            settings,
            poll,
            listener: Some(listener),
            conns: Slab::with_capacity(1024),
            next_generation: 0,
            jobs,
            replies: rx,
            batch: Vec::new(),
            dirty: Vec::new(),
            stop,
            drain_deadline: None,
            linger: LINGER,
            accept_error_logged: false,
        };
        Ok((reactor, Handle { waker, replies: tx }))
    }

    /// Runs until a graceful stop has finished (or its deadline passed).
    pub fn run(mut self) {
        let mut events = Events::with_capacity(1024);
        loop {
            let timeout = if self.drain_deadline.is_some() || self.any_lingering() {
                Some(TICK)
            } else if self.dirty.is_empty() {
                None
            } else {
                Some(Duration::ZERO)
            };
            if let Err(e) = self.poll.poll(&mut events, timeout) {
                if e.kind() == io::ErrorKind::Interrupted {
                    continue;
                }
                eprintln!("pyrs: reactor {}: poll failed: {e}", self.settings.id);
                return;
            }
            date::refresh();
            for event in events.iter() {
                match event.token() {
                    LISTENER => self.accept(),
                    WAKER => self.take_replies(),
                    Token(t) => {
                        let key = t - FIRST_CONN;
                        if let Some(c) = self.conns.get_mut(key) {
                            if event.is_readable() || event.is_read_closed() || event.is_error() {
                                c.readable = true;
                            }
                            mark(&mut self.dirty, key, c);
                        }
                    }
                }
            }
            self.service_dirty();
            self.send_batch();
            if self.stop.load(Ordering::Acquire) && self.drain_deadline.is_none() {
                self.start_drain();
            }
            if let Some(deadline) = self.drain_deadline {
                if self.conns.is_empty() || Instant::now() >= deadline {
                    return;
                }
            }
            self.expire_lingering();
        }
    }

    fn ctx(&self) -> (Arc<Router>, Limits) {
        (self.settings.router.clone(), self.settings.limits)
    }

    fn accept(&mut self) {
        loop {
            let Some(listener) = &self.listener else {
                return;
            };
            match listener.accept() {
                Ok((mut stream, remote)) => {
                    if self.settings.tcp_nodelay {
                        // Best effort: a socket that refuses it still works.
                        let _ = stream.set_nodelay(true);
                    }
                    let entry = self.conns.vacant_entry();
                    let key = entry.key();
                    if let Err(e) = self.poll.registry().register(
                        &mut stream,
                        Token(key + FIRST_CONN),
                        Interest::READABLE | Interest::WRITABLE,
                    ) {
                        eprintln!("pyrs: cannot register connection: {e}");
                        continue;
                    }
                    self.next_generation = self.next_generation.wrapping_add(1);
                    entry.insert(Connection {
                        stream,
                        state: ConnState::new(remote),
                        generation: self.next_generation,
                        readable: true,
                        dirty: false,
                        eof: false,
                        linger_until: None,
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
                    // EMFILE/ENFILE/ENOBUFS: leave the rest in the backlog and try
                    // again on the next readiness event; log once per episode.
                    if !self.accept_error_logged {
                        eprintln!("pyrs: accept failed: {e}");
                        self.accept_error_logged = true;
                    }
                    return;
                }
            }
        }
    }

    fn take_replies(&mut self) {
        while let Ok(reply) = self.replies.try_recv() {
            let mut start = 0;
            for item in &reply.items {
                let bytes = &reply.out[start..item.end];
                start = item.end;
                let key = item.conn.key as usize;
                if let Some(c) = self.conns.get_mut(key) {
                    if c.generation == item.conn.generation {
                        c.state.on_reply(bytes);
                        mark(&mut self.dirty, key, c);
                    }
                }
            }
        }
    }

    fn service_dirty(&mut self) {
        let dirty = std::mem::take(&mut self.dirty);
        let (router, limits) = self.ctx();
        let ctx = Ctx {
            router: &router,
            limits: &limits,
        };
        for &key in &dirty {
            if let Some(c) = self.conns.get_mut(key) {
                c.dirty = false;
            }
        }
        for key in dirty {
            self.service(key, &ctx);
        }
    }

    /// Reads what is available, frames it, writes what is ready, and closes the
    /// connection when it is done.
    fn service(&mut self, key: usize, ctx: &Ctx<'_>) {
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
        let mut alive = true;
        c.state.process(ctx, me, &mut self.batch);
        let mut reads = 0;
        while c.readable && !c.state.read_blocked() {
            if reads == READS_PER_ROUND {
                // Fairness: come back next round without waiting for an event.
                mark(&mut self.dirty, key, c);
                break;
            }
            reads += 1;
            match read_into(&c.stream, &mut c.state.read_buf) {
                Ok(0) => {
                    c.readable = false;
                    c.eof = true;
                    c.state.peer_closed();
                }
                Ok(_) => c.state.process(ctx, me, &mut self.batch),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => c.readable = false,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(_) => {
                    alive = false;
                    break;
                }
            }
        }
        if alive {
            alive = flush(c);
        }
        if !alive {
            self.close(key);
            return;
        }
        if c.state.read_buf.is_empty() && c.state.read_buf.capacity() > KEEP_BUFFER_CAPACITY {
            c.state.read_buf = BytesMut::new();
        }
        if c.state.finished() {
            if c.eof {
                self.close(key);
            } else {
                // Our last response is out: stop sending, then wait for the peer's
                // FIN while discarding anything it still sends.
                let _ = c.stream.shutdown(Shutdown::Write);
                c.linger_until = Some(Instant::now() + self.linger);
                if discard_input(c) {
                    self.close(key);
                }
            }
        }
    }

    fn close(&mut self, key: usize) {
        if self.conns.contains(key) {
            let mut c = self.conns.remove(key);
            let _ = self.poll.registry().deregister(&mut c.stream);
        }
    }

    fn send_batch(&mut self) {
        if self.batch.is_empty() {
            return;
        }
        let jobs = std::mem::take(&mut self.batch);
        if self
            .jobs
            .send(Batch {
                reactor: self.settings.id,
                jobs,
            })
            .is_err()
        {
            eprintln!("pyrs: Python worker is gone; stopping");
            self.stop.store(true, Ordering::Release);
        }
    }

    fn start_drain(&mut self) {
        if let Some(mut l) = self.listener.take() {
            let _ = self.poll.registry().deregister(&mut l);
        }
        let now = Instant::now();
        self.drain_deadline = Some(now + self.settings.shutdown_timeout);
        self.linger = LINGER_WHILE_STOPPING;
        for (_, c) in self.conns.iter_mut() {
            if let Some(t) = &mut c.linger_until {
                *t = (*t).min(now + LINGER_WHILE_STOPPING);
            }
        }
        let keys: Vec<usize> = self.conns.iter().map(|(k, _)| k).collect();
        for key in keys {
            if let Some(c) = self.conns.get_mut(key) {
                c.state.drain();
                mark(&mut self.dirty, key, c);
            }
        }
        let (router, limits) = self.ctx();
        let ctx = Ctx {
            router: &router,
            limits: &limits,
        };
        let dirty = std::mem::take(&mut self.dirty);
        for key in dirty {
            if let Some(c) = self.conns.get_mut(key) {
                c.dirty = false;
                if c.state.finished() && c.state.read_buf.is_empty() {
                    // Idle keep-alive connection: nothing to finish.
                    self.close(key);
                    continue;
                }
            }
            self.service(key, &ctx);
        }
        self.send_batch();
    }

    fn any_lingering(&self) -> bool {
        // Cheap enough: only consulted to pick the poll timeout.
        self.conns.iter().any(|(_, c)| c.linger_until.is_some())
    }

    fn expire_lingering(&mut self) {
        if !self.any_lingering() {
            return;
        }
        let now = Instant::now();
        let expired: Vec<usize> = self
            .conns
            .iter()
            .filter(|(_, c)| c.linger_until.is_some_and(|t| now >= t))
            .map(|(k, _)| k)
            .collect();
        for key in expired {
            self.close(key);
        }
    }
}

fn mark(dirty: &mut Vec<usize>, key: usize, c: &mut Connection) {
    if !c.dirty {
        c.dirty = true;
        dirty.push(key);
    }
}

/// Reads into the spare capacity of `buf`, growing it first if needed.
fn read_into(stream: &TcpStream, buf: &mut BytesMut) -> io::Result<usize> {
    if buf.capacity() - buf.len() < READ_MIN_SPARE {
        buf.reserve(READ_CHUNK);
    }
    let spare = buf.spare_capacity_mut();
    // SAFETY: read(2) writes at most `spare.len()` bytes into the spare capacity and
    // returns how many; only those are then marked initialized.
    let n = unsafe { libc::read(stream.as_raw_fd(), spare.as_mut_ptr().cast(), spare.len()) };
    if n < 0 {
        return Err(io::Error::last_os_error());
    }
    let n = n as usize;
    // SAFETY: the kernel initialized `n` bytes past the old length.
    unsafe { buf.set_len(buf.len() + n) };
    Ok(n)
}

/// Writes as much of the write buffer as the socket takes. `false` when the
/// connection is broken.
fn flush(c: &mut Connection) -> bool {
    while !c.state.write_buf.is_empty() {
        match (&c.stream).write(&c.state.write_buf) {
            Ok(0) => return false,
            Ok(n) => c.state.write_buf.advance(n),
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return true,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(_) => return false,
        }
    }
    if c.state.write_buf.capacity() > KEEP_BUFFER_CAPACITY {
        c.state.write_buf = BytesMut::new();
    }
    true
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
