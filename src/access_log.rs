//! The access log: the line layout ([`Format`], `access_log_format`), each
//! reactor's line buffer ([`Sink`]), and the `pyrs-access-log` thread that
//! writes full buffers to standard output or a file ([`AccessLog`]).
//!
//! A reactor renders each line into its own reused buffer, the request's part
//! when the request is framed (its bytes are about to be reused) and the rest
//! when its response enters the output, and hands the buffer to the log thread
//! through a bounded channel once it holds [`HANDOFF_BYTES`] or its oldest line
//! is [`HANDOFF_AFTER`] old, taking an empty one back from the thread. A log
//! that cannot keep up (a stalled disk) fills the channel: the reactor then drops
//! its buffer's lines and counts them ([`AccessLog::dropped`], the
//! `pyrs_access_log_dropped_total` metric) instead of waiting. A file log is
//! reopened on SIGUSR1 ([`AccessLog::reopener`]), after logrotate renamed it.

use std::collections::VecDeque;
use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use bytes::{Buf, BufMut, BytesMut};
use crossbeam_channel::{Receiver, RecvTimeoutError, Sender, TrySendError};

use crate::config::AccessLog as Destination;
use crate::date;
use crate::tap::{RequestView, Sent};

/// The Combined Log Format plus the request's duration in seconds.
pub const DEFAULT_FORMAT: &str = "$remote_addr - - [$time_local] \"$request\" $status \
                                  $body_bytes_sent \"$http_referer\" \"$http_user_agent\" \
                                  $request_time";
/// A reactor hands its buffer on once it holds this much.
pub const HANDOFF_BYTES: usize = 32 * 1024;
/// ... or once its oldest line waited this long (so lines reach the log well
/// within a second of their response).
pub const HANDOFF_AFTER: Duration = Duration::from_millis(200);
/// Buffers queued for the log thread (all reactors of a process) before lines
/// are dropped: about 8 MiB of lines.
const QUEUE: usize = 256;

/// One `$name` of [`Format`]; see the README's "Access log" section.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Var {
    RemoteAddr,
    RemotePort,
    TimeLocal,
    Request,
    Method,
    Target,
    Uri,
    Args,
    Protocol,
    Status,
    BodyBytesSent,
    RequestBodyLength,
    RequestTime,
    /// A request header, by lower-case name with `-` for `_`.
    Header(Box<[u8]>),
    Worker,
    Pid,
}

impl Var {
    /// Known only once the response is there.
    fn at_response(&self) -> bool {
        matches!(
            self,
            Var::TimeLocal
                | Var::Status
                | Var::BodyBytesSent
                | Var::RequestTime
                // A streamed body is still arriving when its request begins.
                | Var::RequestBodyLength
        )
    }
}

const NAMES: &[(&str, Var)] = &[
    ("remote_addr", Var::RemoteAddr),
    ("remote_port", Var::RemotePort),
    ("time_local", Var::TimeLocal),
    ("request", Var::Request),
    ("request_method", Var::Method),
    ("request_uri", Var::Target),
    ("uri", Var::Uri),
    ("args", Var::Args),
    ("query_string", Var::Args),
    ("server_protocol", Var::Protocol),
    ("status", Var::Status),
    ("body_bytes_sent", Var::BodyBytesSent),
    ("request_body_length", Var::RequestBodyLength),
    ("request_time", Var::RequestTime),
    ("worker", Var::Worker),
    ("pid", Var::Pid),
];

#[derive(Debug, Clone, PartialEq, Eq)]
enum Piece {
    Text(Box<[u8]>),
    Var(Var),
}

/// A compiled `access_log_format`: text and `$variables`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Format {
    pieces: Vec<Piece>,
    /// Response-side variables: each splits the request side into one more piece.
    gaps: usize,
}

impl Format {
    /// Compiles `spec`: `$name` or `${name}` for a variable, `$$` for `$`.
    pub fn parse(spec: &str) -> Result<Format, String> {
        let mut pieces = Vec::new();
        let mut text = Vec::new();
        let bytes = spec.as_bytes();
        let mut i = 0;
        while i < bytes.len() {
            if bytes[i] != b'$' {
                text.push(bytes[i]);
                i += 1;
                continue;
            }
            let (name, next) = match bytes.get(i + 1) {
                Some(b'$') => {
                    text.push(b'$');
                    i += 2;
                    continue;
                }
                Some(b'{') => {
                    let close = spec[i + 2..]
                        .find('}')
                        .ok_or_else(|| format!("unclosed ${{ at byte {i}"))?;
                    (&spec[i + 2..i + 2 + close], i + 3 + close)
                }
                _ => {
                    let len = bytes[i + 1..]
                        .iter()
                        .take_while(|b| b.is_ascii_alphanumeric() || **b == b'_')
                        .count();
                    (&spec[i + 1..i + 1 + len], i + 1 + len)
                }
            };
            let var = if let Some(header) = name.strip_prefix("http_").filter(|h| !h.is_empty()) {
                Var::Header(
                    header
                        .to_ascii_lowercase()
                        .replace('_', "-")
                        .into_bytes()
                        .into(),
                )
            } else if let Some((_, v)) = NAMES.iter().find(|(n, _)| *n == name) {
                v.clone()
            } else {
                let known: Vec<String> = NAMES.iter().map(|(n, _)| format!("${n}")).collect();
                return Err(format!(
                    "unknown variable ${name} (known: {}, $http_<header>)",
                    known.join(", ")
                ));
            };
            if !text.is_empty() {
                pieces.push(Piece::Text(std::mem::take(&mut text).into()));
            }
            pieces.push(Piece::Var(var));
            i = next;
        }
        if !text.is_empty() {
            pieces.push(Piece::Text(text.into()));
        }
        let gaps = pieces
            .iter()
            .filter(|p| matches!(p, Piece::Var(v) if v.at_response()))
            .count();
        Ok(Format { pieces, gaps })
    }
}

/// How often the log thread looks for a reopen request while idle.
const REOPEN_CHECK: Duration = Duration::from_millis(100);

/// Shared by a process's reactors and its log thread.
struct Shared {
    /// Buffers of whole lines.
    tx: Sender<Vec<u8>>,
    free: Receiver<Vec<u8>>,
}

/// The running access log of one process.
pub struct AccessLog {
    shared: Arc<Shared>,
    dropped: Arc<AtomicU64>,
    reopen: Arc<AtomicBool>,
    format: Arc<Format>,
    worker: usize,
    done: Receiver<()>,
}

impl AccessLog {
    /// Opens the destination and starts the log thread; `None` when the log is
    /// off. `worker` is the worker process index (`$worker`).
    pub fn start(
        dest: &Destination,
        format: Format,
        worker: usize,
    ) -> io::Result<Option<AccessLog>> {
        let out = match dest {
            Destination::Off => return Ok(None),
            Destination::Stdout => Out::Stdout,
            Destination::File(path) => Out::File(open(path)?, path.clone()),
        };
        let (tx, rx) = crossbeam_channel::bounded(QUEUE);
        let (free_tx, free_rx) = crossbeam_channel::bounded(QUEUE);
        let (done_tx, done_rx) = crossbeam_channel::bounded(1);
        let reopen = Arc::new(AtomicBool::new(false));
        let flag = reopen.clone();
        thread::Builder::new()
            .name("pyrs-access-log".into())
            .spawn(move || {
                write_loop(out, rx, free_tx, &flag);
                let _ = done_tx.send(());
            })?;
        Ok(Some(AccessLog {
            shared: Arc::new(Shared { tx, free: free_rx }),
            dropped: Arc::default(),
            reopen,
            format: Arc::new(format),
            worker,
            done: done_rx,
        }))
    }

    /// A line buffer for one reactor.
    pub fn sink(&self) -> Sink {
        Sink {
            shared: self.shared.clone(),
            dropped: self.dropped.clone(),
            format: self.format.clone(),
            worker: self.worker,
            pid: std::process::id(),
            buf: Vec::with_capacity(HANDOFF_BYTES * 2),
            lines: 0,
            oldest: None,
            second: u64::MAX,
            time: [0; TIME_LEN],
            dropping: false,
        }
    }

    /// Reads the count of lines dropped because the log could not keep up.
    pub fn dropped(&self) -> Dropped {
        Dropped(self.dropped.clone())
    }

    /// What the signal thread uses to have a file log reopened (SIGUSR1).
    pub fn reopener(&self) -> Reopener {
        Reopener(self.reopen.clone())
    }

    /// Waits (at most `wait`) until the thread wrote every line handed to it;
    /// every [`Sink`] must be gone (their reactors finished).
    pub fn finish(self, wait: Duration) {
        let AccessLog { shared, done, .. } = self;
        drop(shared);
        let _ = done.recv_timeout(wait);
    }
}

/// Asks the log thread to reopen its file (within `REOPEN_CHECK`, 100 ms).
pub struct Reopener(Arc<AtomicBool>);

impl Reopener {
    pub fn reopen(&self) {
        self.0.store(true, Ordering::Release);
    }
}

/// Reads the dropped-lines count (for the metrics).
pub struct Dropped(Arc<AtomicU64>);

impl Dropped {
    pub fn get(&self) -> u64 {
        self.0.load(Ordering::Relaxed)
    }
}

enum Out {
    Stdout,
    File(File, PathBuf),
}

fn open(path: &PathBuf) -> io::Result<File> {
    OpenOptions::new().create(true).append(true).open(path)
}

fn write_loop(mut out: Out, rx: Receiver<Vec<u8>>, free: Sender<Vec<u8>>, reopen: &AtomicBool) {
    loop {
        if reopen.swap(false, Ordering::AcqRel) {
            if let Out::File(f, path) = &mut out {
                match open(path) {
                    Ok(new) => *f = new,
                    Err(e) => crate::log::error(format!(
                        "cannot reopen the access log {}: {e}",
                        path.display()
                    )),
                }
            }
        }
        match rx.recv_timeout(REOPEN_CHECK) {
            Ok(mut buf) => {
                // One write per buffer of whole lines: with O_APPEND, worker
                // processes sharing the file never split each other's lines.
                let _ = match &mut out {
                    Out::Stdout => {
                        let mut s = io::stdout().lock();
                        s.write_all(&buf).and_then(|()| s.flush())
                    }
                    Out::File(f, _) => f.write_all(&buf),
                };
                buf.clear();
                let _ = free.try_send(buf);
            }
            Err(RecvTimeoutError::Timeout) => {}
            Err(RecvTimeoutError::Disconnected) => return,
        }
    }
}

/// `01/Dec/2026:07:00:00 +0000`
const TIME_LEN: usize = 26;

/// One reactor's access log buffer.
pub struct Sink {
    shared: Arc<Shared>,
    dropped: Arc<AtomicU64>,
    format: Arc<Format>,
    worker: usize,
    pid: u32,
    /// Whole lines not yet handed on.
    buf: Vec<u8>,
    lines: u64,
    /// When the oldest line in `buf` was written.
    oldest: Option<Instant>,
    /// The second `time` shows.
    second: u64,
    time: [u8; TIME_LEN],
    /// Lines are being dropped (reported once per episode).
    dropping: bool,
}

impl Sink {
    /// Renders the request side of a line into `text`, one piece per gap.
    pub(crate) fn begin(
        &mut self,
        text: &mut BytesMut,
        lens: &mut VecDeque<u32>,
        req: Option<RequestView<'_>>,
        remote: Option<SocketAddr>,
    ) {
        let mut start = text.len();
        for piece in &self.format.pieces {
            match piece {
                Piece::Text(t) => text.put_slice(t),
                Piece::Var(v) if v.at_response() => {
                    lens.push_back((text.len() - start) as u32);
                    start = text.len();
                }
                Piece::Var(v) => self.request_var(text, v, req, remote),
            }
        }
        lens.push_back((text.len() - start) as u32);
    }

    fn request_var(
        &self,
        out: &mut BytesMut,
        v: &Var,
        req: Option<RequestView<'_>>,
        remote: Option<SocketAddr>,
    ) {
        let mut n = itoa::Buffer::new();
        match v {
            // Over a Unix socket there is no client address (nginx writes the same).
            Var::RemoteAddr => match remote.map(|r| r.ip()) {
                // Over a Unix socket there is no client address (nginx writes the same).
                None => out.put_slice(b"unix:"),
                // The common case without the formatting machinery.
                Some(std::net::IpAddr::V4(ip)) => {
                    let [a, b, c, d] = ip.octets();
                    for (i, octet) in [a, b, c, d].into_iter().enumerate() {
                        if i > 0 {
                            out.put_u8(b'.');
                        }
                        out.put_slice(n.format(octet).as_bytes());
                    }
                }
                Some(ip) => {
                    let _ = write!(Writer(out), "{ip}");
                }
            },
            Var::RemotePort => match remote {
                Some(r) => out.put_slice(n.format(r.port()).as_bytes()),
                None => out.put_u8(b'-'),
            },
            Var::Worker => out.put_slice(n.format(self.worker).as_bytes()),
            Var::Pid => out.put_slice(n.format(self.pid).as_bytes()),
            _ => {
                let Some(r) = req else {
                    out.put_u8(b'-');
                    return;
                };
                let h = r.head;
                match v {
                    Var::Request => {
                        escape(out, h.method.get(r.buf));
                        out.put_u8(b' ');
                        escape(out, h.target.get(r.buf));
                        out.put_u8(b' ');
                        out.put_slice(protocol(h));
                    }
                    Var::Method => escape(out, h.method.get(r.buf)),
                    Var::Target => escape(out, h.target.get(r.buf)),
                    Var::Uri => escape(out, h.path_bytes(r.buf)),
                    Var::Args => value(out, h.query.get(r.buf)),
                    Var::Protocol => out.put_slice(protocol(h)),
                    Var::Header(name) => {
                        let found = r
                            .fields
                            .iter()
                            .find(|f| f.name.get(r.buf).eq_ignore_ascii_case(name));
                        value(out, found.map_or(&[][..], |f| f.value.get(r.buf)));
                    }
                    _ => out.put_u8(b'-'),
                }
            }
        }
    }

    /// Completes the oldest pending line with the response's fields.
    pub(crate) fn end(
        &mut self,
        text: &mut BytesMut,
        lens: &mut VecDeque<u32>,
        sent: Sent,
        body: u64,
        took: Duration,
        now: Instant,
    ) {
        if self.oldest.is_none() {
            self.oldest = Some(now);
        }
        let mut n = itoa::Buffer::new();
        let pieces = &self.format.pieces;
        let mut take = |buf: &mut Vec<u8>, text: &mut BytesMut| {
            let len = lens.pop_front().unwrap_or(0) as usize;
            let len = len.min(text.len());
            buf.extend_from_slice(&text[..len]);
            text.advance(len);
        };
        take(&mut self.buf, text);
        for piece in pieces {
            let Piece::Var(v) = piece else { continue };
            if !v.at_response() {
                continue;
            }
            match v {
                Var::Status => self.buf.extend_from_slice(n.format(sent.status).as_bytes()),
                Var::BodyBytesSent => self.buf.extend_from_slice(n.format(sent.body).as_bytes()),
                Var::RequestBodyLength => self.buf.extend_from_slice(n.format(body).as_bytes()),
                Var::RequestTime => {
                    let ms = took.as_millis();
                    self.buf.extend_from_slice(n.format(ms / 1000).as_bytes());
                    let frac = (ms % 1000) as u16;
                    self.buf.extend_from_slice(&[
                        b'.',
                        b'0' + (frac / 100) as u8,
                        b'0' + (frac / 10 % 10) as u8,
                        b'0' + (frac % 10) as u8,
                    ]);
                }
                Var::TimeLocal => {
                    let second = date::second();
                    if second != self.second {
                        self.second = second;
                        clf_time(second, &mut self.time);
                    }
                    self.buf.extend_from_slice(&self.time);
                }
                _ => {}
            }
            take(&mut self.buf, text);
        }
        self.buf.push(b'\n');
        self.lines += 1;
    }

    /// Hands the buffer on if it is full enough or old enough.
    pub(crate) fn maybe_hand_off(&mut self, now: Instant) {
        let due = self
            .oldest
            .is_some_and(|t| now.saturating_duration_since(t) >= HANDOFF_AFTER);
        if self.buf.len() >= HANDOFF_BYTES || due {
            self.hand_off();
        }
    }

    /// How long until the oldest line must be handed on.
    pub(crate) fn due_in(&self, now: Instant) -> Option<Duration> {
        self.oldest
            .map(|t| (t + HANDOFF_AFTER).saturating_duration_since(now))
    }

    fn hand_off(&mut self) {
        self.oldest = None;
        if self.buf.is_empty() {
            return;
        }
        let next = self
            .shared
            .free
            .try_recv()
            .unwrap_or_else(|_| Vec::with_capacity(HANDOFF_BYTES * 2));
        let full = std::mem::replace(&mut self.buf, next);
        match self.shared.tx.try_send(full) {
            Ok(()) => self.dropping = false,
            Err(TrySendError::Full(mut back)) | Err(TrySendError::Disconnected(mut back)) => {
                if !self.dropping {
                    self.dropping = true;
                    crate::log::error(
                        "the access log cannot keep up: dropping lines \
                         (counted in pyrs_access_log_dropped_total)"
                            .to_owned(),
                    );
                }
                self.dropped.fetch_add(self.lines, Ordering::Relaxed);
                back.clear();
                self.buf = back;
            }
        }
        self.lines = 0;
    }
}

impl Drop for Sink {
    fn drop(&mut self) {
        self.hand_off();
    }
}

/// `io::Write` into a `BytesMut`, for `write!` without a `String`.
struct Writer<'a>(&'a mut BytesMut);

impl Write for Writer<'_> {
    fn write(&mut self, b: &[u8]) -> io::Result<usize> {
        self.0.put_slice(b);
        Ok(b.len())
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

fn protocol(h: &pyrs_parser::Head) -> &'static [u8] {
    if h.minor_version == 0 {
        b"HTTP/1.0"
    } else {
        b"HTTP/1.1"
    }
}

/// A value, or `-` when it is empty.
fn value(out: &mut BytesMut, v: &[u8]) {
    if v.is_empty() {
        out.put_u8(b'-');
    } else {
        escape(out, v);
    }
}

/// Copies `v`, writing `"`, `\`, control and non-ASCII bytes as `\xHH` (as
/// nginx does), so a client cannot forge lines or fields.
fn escape(out: &mut BytesMut, v: &[u8]) {
    const HEX: &[u8; 16] = b"0123456789ABCDEF";
    let plain = |b: u8| b != b'"' && b != b'\\' && (0x20..0x7f).contains(&b);
    let mut rest = v;
    while !rest.is_empty() {
        // Runs of plain bytes are copied at once.
        let run = rest.iter().position(|&b| !plain(b)).unwrap_or(rest.len());
        out.put_slice(&rest[..run]);
        if let Some(&b) = rest.get(run) {
            out.put_slice(&[b'\\', b'x', HEX[(b >> 4) as usize], HEX[(b & 15) as usize]]);
            rest = &rest[run + 1..];
        } else {
            rest = &[];
        }
    }
}

/// Formats `second` (since the epoch, UTC) as `01/Dec/2026:07:00:00 +0000`.
fn clf_time(second: u64, out: &mut [u8; TIME_LEN]) {
    const MONTHS: [&[u8; 3]; 12] = [
        b"Jan", b"Feb", b"Mar", b"Apr", b"May", b"Jun", b"Jul", b"Aug", b"Sep", b"Oct", b"Nov",
        b"Dec",
    ];
    let days = (second / 86_400) as i64;
    let rem = second % 86_400;
    let (y, m, d) = civil_from_days(days);
    let two = |v: u64| [b'0' + (v / 10 % 10) as u8, b'0' + (v % 10) as u8];
    let mut w = 0;
    let mut put = |b: &[u8]| {
        out[w..w + b.len()].copy_from_slice(b);
        w += b.len();
    };
    put(&two(d as u64));
    put(b"/");
    put(MONTHS[(m - 1) as usize]);
    put(b"/");
    let y = y.clamp(0, 9999) as u64;
    put(&[
        b'0' + (y / 1000) as u8,
        b'0' + (y / 100 % 10) as u8,
        b'0' + (y / 10 % 10) as u8,
        b'0' + (y % 10) as u8,
    ]);
    put(b":");
    put(&two(rem / 3600));
    put(b":");
    put(&two(rem / 60 % 60));
    put(b":");
    put(&two(rem % 60));
    put(b" +0000");
}

/// Days since 1970-01-01 to (year, month, day); Howard Hinnant's algorithm.
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (if m <= 2 { y + 1 } else { y }, m, d)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_clf_time() {
        let mut t = [0; TIME_LEN];
        // 2026-12-01T07:00:00Z
        clf_time(1_796_108_400, &mut t);
        assert_eq!(&t, b"01/Dec/2026:07:00:00 +0000");
        clf_time(951_782_400, &mut t); // 2000-02-29
        assert_eq!(&t, b"29/Feb/2000:00:00:00 +0000");
    }

    #[test]
    fn parses_variables_and_dollars() {
        let f = Format::parse("$status ${request_time}s $$ $http_x_request_id").expect("ok");
        assert_eq!(f.gaps, 2);
        assert_eq!(
            f.pieces[4],
            Piece::Var(Var::Header(b"x-request-id".to_vec().into()))
        );
        assert_eq!(f.pieces[3], Piece::Text(b"s $ ".to_vec().into()));
        assert!(Format::parse(DEFAULT_FORMAT).is_ok());
    }

    #[test]
    fn rejects_unknown_variables() {
        let e = Format::parse("$nope").expect_err("unknown");
        assert!(e.contains("unknown variable $nope"), "{e}");
        assert!(Format::parse("${status").is_err());
    }

    #[test]
    fn a_stalled_log_drops_and_counts_lines_instead_of_waiting() {
        // A pipe nobody reads: the log thread's writes block once it is full.
        let mut fds = [0; 2];
        // SAFETY: pipe(2) with a valid two-int array.
        assert_eq!(unsafe { libc::pipe(fds.as_mut_ptr()) }, 0);
        let dest = Destination::File(format!("/proc/self/fd/{}", fds[1]).into());
        let format = Format::parse(&format!("$status {}", "x".repeat(100))).expect("format");
        let log = AccessLog::start(&dest, format, 0)
            .expect("open the pipe")
            .expect("a log");
        let mut sink = log.sink();
        let (mut text, mut lens) = (BytesMut::new(), VecDeque::new());
        let remote: SocketAddr = "127.0.0.1:1".parse().expect("address");
        let sent = Sent {
            status: 200,
            body: 0,
        };
        let started = Instant::now();
        // About 60 MB of lines: far more than the queue and the pipe hold.
        for _ in 0..600_000 {
            sink.begin(&mut text, &mut lens, None, Some(remote));
            sink.end(
                &mut text,
                &mut lens,
                sent,
                0,
                Duration::ZERO,
                Instant::now(),
            );
            sink.maybe_hand_off(Instant::now());
        }
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "the sink waited"
        );
        let dropped = log.dropped().get();
        assert!(dropped > 300_000, "{dropped} lines dropped");
        // Unblock the log thread (its writes now fail) before the test ends.
        // SAFETY: closing descriptors this test opened.
        unsafe {
            libc::close(fds[0]);
            libc::close(fds[1]);
        }
    }

    #[test]
    fn escapes_quotes_and_controls() {
        let mut out = BytesMut::new();
        escape(&mut out, b"a\"b\\c\n\xff");
        assert_eq!(&out[..], b"a\\x22b\\x5Cc\\x0A\\xFF");
    }
}
