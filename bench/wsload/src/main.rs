//! WebSocket echo load for bench/run:
//! `wsload [-t THREADS] -c CONNS -d SECS [-s SIZE] ws://HOST:PORT/PATH`
//! opens CONNS connections, spread over THREADS threads (default 1), and on
//! each sends a SIZE-byte text message and waits for its echo, back to back,
//! for SECS seconds. It prints its figures in wrk's format (messages count as
//! requests), so that the harness reads them as it reads wrk's; an echo that
//! differs from what was sent, or a connection that fails, is printed as a
//! socket error.
//!
//! It is event-driven, as wrk is: each thread runs one edge-triggered mio
//! (epoll) loop over its connections. It used to run one blocking thread per
//! connection, which cost the client ~13 µs of CPU a message (on the one core
//! the harness pins it to, the client became the bottleneck), and made every
//! echo wake a separate sleeping thread, a wake-up the *server* paid for in
//! the kernel (sock_def_readable → try_to_wake_up: 13.5 % of pyrs's samples;
//! about 1 µs a message less with this client, measured). Now the
//! echoes of all of a thread's connections wake its one poller, at most once
//! per batch of events (~5 messages a wake-up at 32 connections).
//!
//! The upgrade handshake is done blocking (std TcpStream, by hand, checked
//! with tungstenite's derive_accept_key); then the socket goes non-blocking
//! into mio. Frames are built and parsed by hand: the text frame is built
//! once per connection, and a server frame is checked to be a single unmasked
//! text frame whose payload is what was sent; a ping is answered with a pong,
//! a pong skipped, anything else (close included) ends the connection with an
//! error. At the end each connection is sent a close frame (1000), after the
//! echo in flight if any, and shut down; the server's answers are waited for
//! a second at most, and that second is not counted in the run's duration.

use std::io::{self, Read, Write};
use std::net::{Shutdown, TcpStream as StdStream};
use std::time::{Duration, Instant};

use mio::net::TcpStream;
use mio::{event::Event, Events, Interest, Poll, Registry, Token};

struct Args {
    conns: usize,
    threads: usize,
    secs: f64,
    size: usize,
    url: String,
}

const USAGE: &str = "usage: wsload [-t THREADS] -c CONNS -d SECS [-s SIZE] ws://HOST:PORT/PATH";

fn parse() -> Result<Args, String> {
    let mut args = Args {
        conns: 32,
        threads: 1,
        secs: 5.0,
        size: 32,
        url: String::new(),
    };
    let mut it = std::env::args().skip(1);
    while let Some(a) = it.next() {
        let mut value = |name: &str| it.next().ok_or(format!("{name} needs a value"));
        match a.as_str() {
            "-c" => args.conns = value("-c")?.parse().map_err(|e| format!("-c: {e}"))?,
            "-t" => args.threads = value("-t")?.parse().map_err(|e| format!("-t: {e}"))?,
            "-d" => {
                let v = value("-d")?;
                args.secs = v
                    .trim_end_matches('s')
                    .parse()
                    .map_err(|e| format!("-d: {e}"))?
            }
            "-s" => args.size = value("-s")?.parse().map_err(|e| format!("-s: {e}"))?,
            url if !url.starts_with('-') => args.url = url.to_owned(),
            other => return Err(format!("unknown flag {other}")),
        }
    }
    if args.url.is_empty() {
        return Err(USAGE.into());
    }
    if args.threads == 0 {
        return Err("-t: needs at least 1 thread".into());
    }
    Ok(args)
}

/// `ws://HOST:PORT/PATH` → ("HOST:PORT", "/PATH").
fn split_url(url: &str) -> Result<(String, String), String> {
    let rest = url
        .strip_prefix("ws://")
        .ok_or_else(|| format!("not a ws:// URL: {url}"))?;
    let (hostport, path) = match rest.find('/') {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, "/"),
    };
    if hostport.is_empty() {
        return Err(format!("no host in {url}"));
    }
    Ok((hostport.to_owned(), path.to_owned()))
}

/// What one thread's connections did.
#[derive(Default)]
struct Tally {
    messages: u64,
    errors: u64,
    latencies_us: Vec<u32>,
}

// ---- frames ----

const OP_TEXT: u8 = 0x1;
const OP_CLOSE: u8 = 0x8;
const OP_PING: u8 = 0x9;
const OP_PONG: u8 = 0xA;

/// A client frame (FIN set, masked with `mask`). wsload uses one fixed mask
/// per connection: masking exists to keep attacker-chosen browser payloads
/// from looking like requests to intermediaries, which is no concern for a
/// load generator, and the server unmasks it as it would a random one.
fn masked_frame(opcode: u8, payload: &[u8], mask: [u8; 4]) -> Vec<u8> {
    let mut f = Vec::with_capacity(payload.len() + 14);
    f.push(0x80 | opcode);
    match payload.len() {
        n if n < 126 => f.push(0x80 | n as u8),
        n if n <= 0xffff => {
            f.push(0x80 | 126);
            f.extend_from_slice(&(n as u16).to_be_bytes());
        }
        n => {
            f.push(0x80 | 127);
            f.extend_from_slice(&(n as u64).to_be_bytes());
        }
    }
    f.extend_from_slice(&mask);
    f.extend(payload.iter().enumerate().map(|(i, b)| b ^ mask[i % 4]));
    f
}

/// One whole server frame at the start of a buffer.
#[derive(Debug, PartialEq)]
struct Frame<'a> {
    fin: bool,
    opcode: u8,
    payload: &'a [u8],
    /// Bytes of the buffer it takes, header included.
    len: usize,
}

#[derive(Debug, PartialEq)]
enum FrameError {
    /// A server must not mask its frames (RFC 6455 §5.1).
    Masked,
    /// RSV bits set: no extension was negotiated.
    Reserved,
    /// A control frame that is fragmented or longer than 125 bytes.
    BadControl,
    /// Longer than anything the server may send us.
    TooLong(u64),
}

/// Parses the server frame at the start of `buf`: `Ok(None)` while it is
/// incomplete. A payload over `max_payload` is refused as soon as its header
/// is in, so that a bad length never makes us buffer without bound.
fn parse_frame(buf: &[u8], max_payload: usize) -> Result<Option<Frame<'_>>, FrameError> {
    if buf.len() < 2 {
        return Ok(None);
    }
    let (b0, b1) = (buf[0], buf[1]);
    if b1 & 0x80 != 0 {
        return Err(FrameError::Masked);
    }
    if b0 & 0x70 != 0 {
        return Err(FrameError::Reserved);
    }
    let (fin, opcode) = (b0 & 0x80 != 0, b0 & 0x0f);
    let (len, at) = match b1 & 0x7f {
        126 if buf.len() < 4 => return Ok(None),
        126 => (u16::from_be_bytes([buf[2], buf[3]]) as u64, 4),
        127 if buf.len() < 10 => return Ok(None),
        127 => (u64::from_be_bytes(buf[2..10].try_into().unwrap()), 10),
        n => (n as u64, 2),
    };
    if opcode >= 8 && (!fin || len > 125) {
        return Err(FrameError::BadControl);
    }
    if len > max_payload as u64 {
        return Err(FrameError::TooLong(len));
    }
    let end = at + len as usize;
    if buf.len() < end {
        return Ok(None);
    }
    Ok(Some(Frame {
        fin,
        opcode,
        payload: &buf[at..end],
        len: end,
    }))
}

// ---- connections ----

/// Connects and upgrades, blocking; returns the socket and whatever the
/// server sent after its 101 head.
fn handshake(hostport: &str, path: &str) -> Result<(StdStream, Vec<u8>), String> {
    let mut s = StdStream::connect(hostport).map_err(|e| format!("connect: {e}"))?;
    let hs = |e: io::Error| format!("handshake: {e}");
    s.set_nodelay(true).map_err(hs)?;
    s.set_read_timeout(Some(Duration::from_secs(5)))
        .map_err(hs)?;
    s.set_write_timeout(Some(Duration::from_secs(5)))
        .map_err(hs)?;
    let key = tungstenite::handshake::client::generate_key();
    let request = format!(
        "GET {path} HTTP/1.1\r\nHost: {hostport}\r\nConnection: Upgrade\r\n\
         Upgrade: websocket\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: {key}\r\n\r\n"
    );
    s.write_all(request.as_bytes()).map_err(hs)?;
    let mut head = Vec::new();
    let mut buf = [0u8; 1024];
    let end = loop {
        let n = s.read(&mut buf).map_err(hs)?;
        if n == 0 {
            return Err("handshake: connection closed".into());
        }
        head.extend_from_slice(&buf[..n]);
        if let Some(i) = head.windows(4).position(|w| w == b"\r\n\r\n") {
            break i + 4;
        }
        if head.len() > 16 * 1024 {
            return Err("handshake: response head too long".into());
        }
    };
    let rest = head.split_off(end);
    let head = String::from_utf8_lossy(&head);
    let mut lines = head.split("\r\n");
    let status = lines.next().unwrap_or("");
    if status.split(' ').nth(1) != Some("101") {
        return Err(format!("handshake: {status}"));
    }
    let accept = tungstenite::handshake::derive_accept_key(key.as_bytes());
    let accepted = lines
        .filter_map(|l| l.split_once(':'))
        .any(|(name, value)| {
            name.trim().eq_ignore_ascii_case("sec-websocket-accept") && value.trim() == accept
        });
    if !accepted {
        return Err("handshake: bad or missing Sec-WebSocket-Accept".into());
    }
    Ok((s, rest))
}

/// Bytes a write left unwritten; while there are some, more are queued
/// behind them.
#[derive(Default)]
struct Outbox {
    buf: Vec<u8>,
    at: usize,
}

impl Outbox {
    fn pending(&self) -> bool {
        self.at < self.buf.len()
    }

    /// Writes `bytes` (after anything pending), keeping what the socket
    /// does not take.
    fn send(&mut self, sock: &mut TcpStream, bytes: &[u8]) -> io::Result<()> {
        if self.pending() {
            self.buf.extend_from_slice(bytes);
            return Ok(());
        }
        let mut at = 0;
        while at < bytes.len() {
            match sock.write(&bytes[at..]) {
                Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                Ok(n) => at += n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        self.buf.clear();
        self.at = 0;
        self.buf.extend_from_slice(&bytes[at..]);
        Ok(())
    }

    /// Writes what is pending until done or WouldBlock.
    fn flush(&mut self, sock: &mut TcpStream) -> io::Result<()> {
        while self.pending() {
            match sock.write(&self.buf[self.at..]) {
                Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                Ok(n) => self.at += n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(()),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        self.buf.clear();
        self.at = 0;
        Ok(())
    }
}

/// What a thread's connections share.
struct Ctx<'a> {
    /// The text every message carries, and every echo must.
    text: &'a [u8],
    /// No message is sent from then on.
    deadline: Instant,
}

struct Conn {
    sock: TcpStream,
    token: Token,
    mask: [u8; 4],
    /// The masked text frame, built once, sent as is each time.
    message: Vec<u8>,
    out: Outbox,
    /// An incomplete frame carried over to the next read.
    partial: Vec<u8>,
    sent_at: Instant,
    /// A message is in flight.
    waiting: bool,
    /// WRITABLE interest is registered (only while `out` is pending).
    writable: bool,
    /// The run is over: no message is sent, the one in flight is waited for.
    stopping: bool,
    /// The close frame is queued; what comes is discarded.
    closing: bool,
    /// The write side is shut down.
    shut: bool,
}

/// A connection's mask, from its number (splitmix64).
fn mask_for(id: usize) -> [u8; 4] {
    let mut z = (id as u64)
        .wrapping_add(1)
        .wrapping_mul(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    ((z ^ (z >> 31)) as u32).to_be_bytes()
}

fn io_err(e: io::Error) -> String {
    e.to_string()
}

impl Conn {
    fn new(sock: TcpStream, token: Token, id: usize, text: &[u8], partial: Vec<u8>) -> Conn {
        let mask = mask_for(id);
        Conn {
            sock,
            token,
            mask,
            message: masked_frame(OP_TEXT, text, mask),
            out: Outbox::default(),
            partial,
            sent_at: Instant::now(),
            waiting: false,
            writable: false,
            stopping: false,
            closing: false,
            shut: false,
        }
    }

    fn send_message(&mut self, now: Instant) -> Result<(), String> {
        self.sent_at = now;
        self.waiting = true;
        self.out.send(&mut self.sock, &self.message).map_err(io_err)
    }

    /// At the end of the run: closes now if no message is in flight, else
    /// once its echo is in (so that the server never has an echo to send on a
    /// closed connection).
    fn stop(&mut self, registry: &Registry) -> Result<(), String> {
        self.stopping = true;
        if !self.waiting {
            self.queue_close()?;
        }
        self.sync(registry)
    }

    /// Queues the close frame (code 1000); `sync` shuts the write side down
    /// once it is out.
    fn queue_close(&mut self) -> Result<(), String> {
        self.closing = true;
        let close = masked_frame(OP_CLOSE, &1000u16.to_be_bytes(), self.mask);
        self.out.send(&mut self.sock, &close).map_err(io_err)
    }

    /// WRITABLE interest while something is pending, not otherwise; and the
    /// write side shut once a close is out.
    fn sync(&mut self, registry: &Registry) -> Result<(), String> {
        let pending = self.out.pending();
        if pending != self.writable {
            let interest = if pending {
                Interest::READABLE | Interest::WRITABLE
            } else {
                Interest::READABLE
            };
            registry
                .reregister(&mut self.sock, self.token, interest)
                .map_err(io_err)?;
            self.writable = pending;
        }
        if self.closing && !pending && !self.shut {
            self.shut = true;
            self.sock.shutdown(Shutdown::Write).map_err(io_err)?;
        }
        Ok(())
    }

    /// Handles one readiness event; an Err ends the connection (an error
    /// unless closing, where it is how it ends).
    fn on_event(
        &mut self,
        ev: &Event,
        registry: &Registry,
        scratch: &mut [u8],
        ctx: &Ctx,
        tally: &mut Tally,
    ) -> Result<(), String> {
        if ev.is_writable() {
            self.out.flush(&mut self.sock).map_err(io_err)?;
        }
        if ev.is_readable() || ev.is_read_closed() || ev.is_error() {
            self.read_all(scratch, ctx, tally)?;
        }
        self.sync(registry)
    }

    /// Reads until WouldBlock (edge-triggered), handling each read's bytes.
    fn read_all(&mut self, scratch: &mut [u8], ctx: &Ctx, tally: &mut Tally) -> Result<(), String> {
        loop {
            match self.sock.read(scratch) {
                Ok(0) => return Err("server closed the connection".into()),
                Ok(n) => self.on_bytes(&scratch[..n], ctx, tally)?,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(()),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e.to_string()),
            }
        }
    }

    /// Handles the whole frames in what was read (after any carried-over
    /// partial frame), and keeps the incomplete rest.
    fn on_bytes(&mut self, data: &[u8], ctx: &Ctx, tally: &mut Tally) -> Result<(), String> {
        if self.closing {
            return Ok(());
        }
        if self.partial.is_empty() {
            let used = self.on_frames(data, ctx, tally)?;
            self.partial.extend_from_slice(&data[used..]);
        } else {
            let mut buf = std::mem::take(&mut self.partial);
            buf.extend_from_slice(data);
            let used = self.on_frames(&buf, ctx, tally)?;
            buf.drain(..used);
            self.partial = buf;
        }
        Ok(())
    }

    /// Handles the whole frames at the start of `buf`; returns the bytes they
    /// took.
    fn on_frames(&mut self, buf: &[u8], ctx: &Ctx, tally: &mut Tally) -> Result<usize, String> {
        let max = ctx.text.len().max(125);
        let mut at = 0;
        while let Some(f) = parse_frame(&buf[at..], max).map_err(|e| format!("bad frame: {e:?}"))? {
            at += f.len;
            match f.opcode {
                OP_TEXT if f.fin && self.waiting && f.payload == ctx.text && self.stopping => {
                    // The last echo, after the run: not counted.
                    self.waiting = false;
                    self.queue_close()?;
                    break;
                }
                OP_TEXT if f.fin && self.waiting && f.payload == ctx.text => {
                    let now = Instant::now();
                    let us = (now - self.sent_at).as_micros().min(u32::MAX as u128) as u32;
                    tally.latencies_us.push(us);
                    tally.messages += 1;
                    self.waiting = false;
                    if now < ctx.deadline {
                        self.send_message(now)?;
                    }
                }
                OP_TEXT => return Err("echo differs from the message sent".into()),
                OP_PING => {
                    let pong = masked_frame(OP_PONG, f.payload, self.mask);
                    self.out.send(&mut self.sock, &pong).map_err(io_err)?;
                }
                OP_PONG => {}
                OP_CLOSE => return Err("server sent a close frame".into()),
                op => return Err(format!("unexpected opcode {op}")),
            }
        }
        Ok(at)
    }
}

/// Drops a connection that failed (an error unless it was closing).
fn fail(slot: &mut Option<Conn>, e: String, poll: &Poll, tally: &mut Tally, live: &mut usize) {
    if let Some(mut c) = slot.take() {
        if !c.closing {
            eprintln!("wsload: {e}");
            tally.errors += 1;
        }
        let _ = poll.registry().deregister(&mut c.sock);
        *live -= 1;
    }
}

/// One thread: connects `ids`, runs their echo loops until `deadline`, closes
/// them. Returns its tally and when it stopped sending.
fn worker(
    hostport: &str,
    path: &str,
    ids: &[usize],
    size: usize,
    deadline: Instant,
) -> (Tally, Instant) {
    let mut tally = Tally::default();
    let mut poll = match Poll::new() {
        Ok(p) => p,
        Err(e) => {
            eprintln!("wsload: poll: {e}");
            tally.errors += ids.len() as u64;
            return (tally, Instant::now());
        }
    };
    let text = vec![b'x'; size];
    let ctx = Ctx {
        text: &text,
        deadline,
    };
    let mut conns: Vec<Option<Conn>> = Vec::with_capacity(ids.len());
    for &id in ids {
        let r = handshake(hostport, path).and_then(|(s, rest)| {
            s.set_nonblocking(true).map_err(io_err)?;
            let mut sock = TcpStream::from_std(s);
            let token = Token(conns.len());
            poll.registry()
                .register(&mut sock, token, Interest::READABLE)
                .map_err(io_err)?;
            Ok(Conn::new(sock, token, id, &text, rest))
        });
        match r {
            Ok(c) => conns.push(Some(c)),
            Err(e) => {
                eprintln!("wsload: {e}");
                tally.errors += 1;
            }
        }
    }

    let mut scratch = vec![0u8; 64 * 1024];
    let mut live = conns.len();

    let now = Instant::now();
    for slot in conns.iter_mut() {
        if now >= deadline {
            break;
        }
        let c = slot.as_mut().unwrap();
        // Then whatever came after the 101 head, should anything have.
        let r = c
            .send_message(now)
            .and_then(|()| c.on_bytes(&[], &ctx, &mut tally))
            .and_then(|()| c.sync(poll.registry()));
        if let Err(e) = r {
            fail(slot, e, &poll, &mut tally, &mut live);
        }
    }

    let mut events = Events::with_capacity(1024);
    let stopped = loop {
        let now = Instant::now();
        if now >= deadline || live == 0 {
            break now;
        }
        if let Err(e) = poll.poll(&mut events, Some(deadline - now)) {
            if e.kind() == io::ErrorKind::Interrupted {
                continue;
            }
            eprintln!("wsload: poll: {e}");
            tally.errors += live as u64;
            return (tally, Instant::now());
        }
        for ev in events.iter() {
            let slot = &mut conns[ev.token().0];
            if let Some(c) = slot.as_mut() {
                if let Err(e) = c.on_event(ev, poll.registry(), &mut scratch, &ctx, &mut tally) {
                    fail(slot, e, &poll, &mut tally, &mut live);
                }
            }
        }
    };

    // Close politely (after the echo in flight, if any), waiting for the
    // server's answers a second at most.
    for slot in conns.iter_mut() {
        if let Some(c) = slot.as_mut() {
            if let Err(e) = c.stop(poll.registry()) {
                fail(slot, e, &poll, &mut tally, &mut live);
            }
        }
    }
    let until = Instant::now() + Duration::from_secs(1);
    while live > 0 {
        let now = Instant::now();
        if now >= until {
            break;
        }
        if let Err(e) = poll.poll(&mut events, Some(until - now)) {
            if e.kind() == io::ErrorKind::Interrupted {
                continue;
            }
            break;
        }
        for ev in events.iter() {
            let slot = &mut conns[ev.token().0];
            if let Some(c) = slot.as_mut() {
                if let Err(e) = c.on_event(ev, poll.registry(), &mut scratch, &ctx, &mut tally) {
                    fail(slot, e, &poll, &mut tally, &mut live);
                }
            }
        }
    }
    (tally, stopped)
}

fn ms(us: u32) -> String {
    format!("{:.2}ms", us as f64 / 1000.0)
}

fn main() {
    let args = match parse() {
        Ok(a) => a,
        Err(e) => {
            eprintln!("wsload: {e}");
            std::process::exit(2);
        }
    };
    let (hostport, path) = match split_url(&args.url) {
        Ok(t) => t,
        Err(e) => {
            eprintln!("wsload: {e}");
            std::process::exit(2);
        }
    };
    let started = Instant::now();
    let deadline = started + Duration::from_secs_f64(args.secs);
    let threads: Vec<_> = (0..args.threads)
        .map(|t| {
            let ids: Vec<usize> = (t..args.conns).step_by(args.threads).collect();
            let (hostport, path, size) = (hostport.clone(), path.clone(), args.size);
            std::thread::spawn(move || worker(&hostport, &path, &ids, size, deadline))
        })
        .collect();
    let mut all = Tally::default();
    let mut stopped = started;
    for t in threads {
        if let Ok((mut t, at)) = t.join() {
            all.messages += t.messages;
            all.errors += t.errors;
            all.latencies_us.append(&mut t.latencies_us);
            stopped = stopped.max(at);
        }
    }
    // Up to when sending stopped: the closing second is not the run's. Should
    // every connection have failed early, the run still lasts SECS, as wrk's.
    if let Some(rest) = deadline.checked_duration_since(Instant::now()) {
        std::thread::sleep(rest);
    }
    let secs = (stopped.max(deadline) - started).as_secs_f64();
    all.latencies_us.sort_unstable();
    let at = |p: f64| {
        let n = all.latencies_us.len();
        if n == 0 {
            0
        } else {
            all.latencies_us[((n - 1) as f64 * p).round() as usize]
        }
    };
    println!("Running {:.0}s test @ {}", args.secs, args.url);
    println!(
        "  {} connections, {}-byte text messages echoed",
        args.conns, args.size
    );
    println!("  Latency Distribution");
    println!("     50%   {}", ms(at(0.5)));
    println!("     99%   {}", ms(at(0.99)));
    println!("  {} requests in {:.2}s, 0.00MB read", all.messages, secs);
    if all.errors > 0 {
        println!(
            "  Socket errors: connect 0, read {}, write 0, timeout 0",
            all.errors
        );
    }
    println!("Requests/sec: {:.2}", all.messages as f64 / secs);
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::TcpListener;

    /// An unmasked server frame, as pyrs sends.
    fn server_frame(opcode: u8, payload: &[u8]) -> Vec<u8> {
        let mut f = masked_frame(opcode, payload, [0; 4]);
        let n = f.len() - payload.len() - 4;
        f[1] &= 0x7f;
        f.drain(n..n + 4);
        f
    }

    fn unmask(frame: &[u8]) -> (u8, Vec<u8>) {
        let mut f = frame.to_vec();
        f[1] &= 0x7f; // parse it as if unmasked, then unmask the payload
        let hdr = match f[1] {
            126 => 4,
            127 => 10,
            _ => 2,
        };
        let mask: [u8; 4] = f[hdr..hdr + 4].try_into().unwrap();
        f.drain(hdr..hdr + 4);
        let fr = parse_frame(&f, usize::MAX).unwrap().unwrap();
        assert_eq!(fr.len, f.len());
        let payload = fr
            .payload
            .iter()
            .enumerate()
            .map(|(i, b)| b ^ mask[i % 4])
            .collect();
        (fr.opcode, payload)
    }

    #[test]
    fn partial_frame_waits_for_the_rest() {
        let f = server_frame(OP_TEXT, &[b'x'; 300]);
        for n in 0..f.len() {
            assert_eq!(parse_frame(&f[..n], 1000), Ok(None), "prefix {n}");
        }
        let fr = parse_frame(&f, 1000).unwrap().unwrap();
        assert_eq!((fr.fin, fr.opcode, fr.len), (true, OP_TEXT, f.len()));
        assert_eq!(fr.payload, &[b'x'; 300][..]);
    }

    #[test]
    fn two_frames_in_one_buffer() {
        let mut buf = server_frame(OP_PING, b"hi");
        buf.extend(server_frame(OP_TEXT, b"hello"));
        buf.extend(&server_frame(OP_TEXT, b"rest")[..3]);
        let a = parse_frame(&buf, 125).unwrap().unwrap();
        assert_eq!((a.opcode, a.payload, a.len), (OP_PING, &b"hi"[..], 4));
        let b = parse_frame(&buf[a.len..], 125).unwrap().unwrap();
        assert_eq!((b.opcode, b.payload, b.len), (OP_TEXT, &b"hello"[..], 7));
        assert_eq!(parse_frame(&buf[a.len + b.len..], 125), Ok(None));
    }

    #[test]
    fn extended_lengths() {
        let f = server_frame(OP_TEXT, &[7; 300]);
        assert_eq!(&f[..4], &[0x81, 126, 0x01, 0x2c]);
        let fr = parse_frame(&f, 300).unwrap().unwrap();
        assert_eq!((fr.payload.len(), fr.len), (300, 304));
        assert_eq!(parse_frame(&f, 299), Err(FrameError::TooLong(300)));
        let f = server_frame(OP_TEXT, &[7; 70000]);
        assert_eq!(&f[..2], &[0x81, 127]);
        let fr = parse_frame(&f, 70000).unwrap().unwrap();
        assert_eq!((fr.payload.len(), fr.len), (70000, 70010));
    }

    #[test]
    fn masked_server_frame_is_refused() {
        let f = masked_frame(OP_TEXT, b"hi", [1, 2, 3, 4]);
        assert_eq!(parse_frame(&f, 125), Err(FrameError::Masked));
        assert_eq!(parse_frame(&f[..2], 125), Err(FrameError::Masked));
        // and the other protocol errors
        assert_eq!(parse_frame(&[0xC1, 0], 125), Err(FrameError::Reserved));
        assert_eq!(parse_frame(&[0x09, 0], 125), Err(FrameError::BadControl));
        assert_eq!(
            parse_frame(&[0x89, 126, 0, 126], 1000),
            Err(FrameError::BadControl)
        );
    }

    #[test]
    fn client_frames_round_trip() {
        for n in [0, 1, 125, 126, 65535, 65536, 70000] {
            let payload: Vec<u8> = (0..n).map(|i| i as u8).collect();
            let f = masked_frame(OP_TEXT, &payload, mask_for(n));
            assert_eq!(f[0], 0x81);
            assert_ne!(f[1] & 0x80, 0, "masked");
            assert_eq!(unmask(&f), (OP_TEXT, payload));
        }
    }

    /// A raw server on one connection: answers the handshake, then runs
    /// `serve` on the socket; join the handle to see its asserts pass.
    fn server(serve: fn(StdStream)) -> (String, std::thread::JoinHandle<()>) {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = l.local_addr().unwrap().to_string();
        let h = std::thread::spawn(move || {
            let (s, _) = l.accept().unwrap();
            let ws = tungstenite::accept(s).unwrap();
            serve(ws.get_ref().try_clone().unwrap());
        });
        (addr, h)
    }

    /// Reads one client frame (its opcode and unmasked payload).
    fn read_client_frame(s: &mut StdStream) -> (u8, Vec<u8>) {
        let mut f = vec![0; 2];
        s.read_exact(&mut f).unwrap();
        let ext = match f[1] & 0x7f {
            126 => 2,
            127 => 8,
            _ => 0,
        };
        f.resize(2 + ext + 4, 0);
        s.read_exact(&mut f[2..]).unwrap();
        let len = match ext {
            0 => (f[1] & 0x7f) as usize,
            2 => u16::from_be_bytes([f[2], f[3]]) as usize,
            _ => u64::from_be_bytes(f[2..10].try_into().unwrap()) as usize,
        };
        let at = f.len();
        f.resize(at + len, 0);
        s.read_exact(&mut f[at..]).unwrap();
        unmask(&f)
    }

    fn run(addr: &str, size: usize, ms: u64) -> Tally {
        let deadline = Instant::now() + Duration::from_millis(ms);
        worker(addr, "/ws", &[0], size, deadline).0
    }

    #[test]
    fn echoes_split_and_pinged() {
        // Each echo comes after a ping, in three writes, the ping and the
        // echo's head together.
        let (addr, server) = server(|mut s| {
            s.set_nodelay(true).unwrap();
            for _ in 0..5 {
                let (op, payload) = read_client_frame(&mut s);
                assert_eq!((op, payload.len()), (OP_TEXT, 200));
                let mut out = server_frame(OP_PING, b"p!");
                out.extend(server_frame(OP_TEXT, &payload));
                for part in [&out[..3], &out[3..60], &out[60..]] {
                    s.write_all(part).unwrap();
                    std::thread::sleep(Duration::from_millis(5));
                }
                assert_eq!(read_client_frame(&mut s), (OP_PONG, b"p!".to_vec()));
            }
        });
        let t = run(&addr, 200, 300);
        server.join().expect("the server saw what it should");
        assert_eq!(
            t.errors, 1,
            "the server's going away after 5 counts as one error"
        );
        assert_eq!(t.messages, 5);
    }

    #[test]
    fn echoes_until_the_deadline_then_closes() {
        let (addr, server) = server(|mut s| loop {
            let (op, payload) = read_client_frame(&mut s);
            if op == OP_CLOSE {
                assert_eq!(payload, 1000u16.to_be_bytes());
                s.write_all(&server_frame(OP_CLOSE, &payload)).unwrap();
                let mut rest = Vec::new();
                s.read_to_end(&mut rest).unwrap();
                assert!(rest.is_empty(), "the client shut its side down");
                return;
            }
            s.write_all(&server_frame(OP_TEXT, &payload)).unwrap();
        });
        let t = run(&addr, 32, 200);
        server.join().expect("the server saw what it should");
        assert_eq!(t.errors, 0);
        assert!(t.messages > 10, "{}", t.messages);
        assert_eq!(t.latencies_us.len() as u64, t.messages);
    }

    #[test]
    fn the_echo_in_flight_at_the_end_comes_before_the_close() {
        let (addr, server) = server(|mut s| {
            let (op, payload) = read_client_frame(&mut s);
            assert_eq!(op, OP_TEXT);
            std::thread::sleep(Duration::from_millis(150));
            s.write_all(&server_frame(OP_TEXT, &payload)).unwrap();
            let (op, payload) = read_client_frame(&mut s);
            assert_eq!((op, payload), (OP_CLOSE, 1000u16.to_be_bytes().to_vec()));
            s.write_all(&server_frame(OP_CLOSE, &1000u16.to_be_bytes()))
                .unwrap();
            let mut rest = Vec::new();
            s.read_to_end(&mut rest).unwrap();
            assert!(rest.is_empty());
        });
        let started = Instant::now();
        let t = run(&addr, 32, 50);
        server.join().expect("the server saw what it should");
        assert_eq!(
            (t.errors, t.messages),
            (0, 0),
            "the late echo is not counted"
        );
        assert!(started.elapsed() < Duration::from_millis(900));
    }

    #[test]
    fn a_wrong_echo_is_an_error() {
        let (addr, server) = server(|mut s| {
            let (_, payload) = read_client_frame(&mut s);
            s.write_all(&server_frame(OP_TEXT, &vec![b'y'; payload.len()]))
                .unwrap();
            let _ = s.read_to_end(&mut Vec::new());
        });
        let t = run(&addr, 32, 300);
        server.join().expect("the server saw what it should");
        assert_eq!((t.errors, t.messages), (1, 0));
    }

    #[test]
    fn a_refused_connection_is_an_error() {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = l.local_addr().unwrap().to_string();
        drop(l);
        let t = run(&addr, 32, 100);
        assert_eq!((t.errors, t.messages), (1, 0));
    }
}
