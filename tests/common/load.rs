//! Load for the zero-loss tests: clients that keep requests flowing (keep-alive
//! ones and ones opening a connection per request) and count every response
//! that is not a 200, or never came, as a failure; bounded by socket timeouts.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

/// One response the load saw: when it arrived and its body.
pub struct Seen {
    pub at: Instant,
    pub body: String,
}

/// What one load thread saw.
#[derive(Default)]
pub struct Tally {
    pub seen: Vec<Seen>,
    pub latencies: Vec<Duration>,
    pub failures: Vec<String>,
}

/// Clients that keep requests flowing until stopped.
pub struct Load {
    stop: Arc<AtomicBool>,
    threads: Vec<thread::JoinHandle<Tally>>,
}

impl Load {
    /// `keepalive` clients reusing their connection (reconnecting when told
    /// `Connection: close`) and `fresh` clients opening one per request.
    pub fn start(addr: SocketAddr, keepalive: usize, fresh: usize) -> Load {
        let stop = Arc::new(AtomicBool::new(false));
        let threads = (0..keepalive + fresh)
            .map(|i| {
                let stop = stop.clone();
                thread::spawn(move || client(addr, i < keepalive, &stop))
            })
            .collect();
        Load { stop, threads }
    }

    pub fn finish(self) -> Tally {
        self.stop.store(true, Ordering::Release);
        let mut all = Tally::default();
        for t in self.threads {
            let mut tally = t.join().expect("load thread");
            all.seen.append(&mut tally.seen);
            all.latencies.append(&mut tally.latencies);
            all.failures.append(&mut tally.failures);
        }
        all.latencies.sort();
        all.seen.sort_by_key(|s| s.at);
        all
    }
}

impl Tally {
    pub fn assert_no_failures(&self, what: &str) {
        assert!(
            self.failures.is_empty(),
            "{what}: {} of {} requests failed; first: {:?}",
            self.failures.len(),
            self.seen.len() + self.failures.len(),
            &self.failures[..self.failures.len().min(5)]
        );
    }

    pub fn percentile(&self, p: f64) -> Duration {
        if self.latencies.is_empty() {
            return Duration::ZERO;
        }
        let i = ((self.latencies.len() as f64 - 1.0) * p).round() as usize;
        self.latencies[i]
    }

    /// Stops the load, logs its figures and fails on any failed request.
    pub fn expect_clean(load: Load, what: &str) -> Tally {
        let tally = load.finish();
        tally.report(what);
        tally.assert_no_failures(what);
        tally
    }

    /// One line for the test log (and `bench/RESULTS.md`).
    pub fn report(&self, what: &str) {
        eprintln!(
            "{what}: {} requests, {} failed, p50 {:.2} ms, p99.9 {:.1} ms, max {:.1} ms",
            self.seen.len(),
            self.failures.len(),
            self.percentile(0.5).as_secs_f64() * 1e3,
            self.percentile(0.999).as_secs_f64() * 1e3,
            self.latencies
                .last()
                .copied()
                .unwrap_or_default()
                .as_secs_f64()
                * 1e3,
        );
    }
}

/// Reads one response (Content-Length framed); returns (status, body, close).
pub fn read_response(
    stream: &mut TcpStream,
    buf: &mut Vec<u8>,
) -> Result<(u16, String, bool), String> {
    let mut chunk = [0u8; 4096];
    let head_end = loop {
        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break i;
        }
        match stream.read(&mut chunk) {
            Ok(0) if buf.is_empty() => return Err("connection closed before a response".into()),
            Ok(0) => return Err("connection closed inside a response".into()),
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
            Err(e) => return Err(format!("reading: {e}")),
        }
    };
    let head = String::from_utf8_lossy(&buf[..head_end]).to_string();
    let status: u16 = head
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| format!("bad status line in {head:?}"))?;
    let mut length = 0;
    let mut close = false;
    for line in head.split("\r\n").skip(1) {
        let (name, value) = line.split_once(':').unwrap_or((line, ""));
        if name.eq_ignore_ascii_case("content-length") {
            length = value
                .trim()
                .parse()
                .map_err(|_| format!("bad length in {head:?}"))?;
        }
        if name.eq_ignore_ascii_case("connection") && value.trim().eq_ignore_ascii_case("close") {
            close = true;
        }
    }
    let total = head_end + 4 + length;
    while buf.len() < total {
        match stream.read(&mut chunk) {
            Ok(0) => return Err("connection closed inside a body".into()),
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
            Err(e) => return Err(format!("reading a body: {e}")),
        }
    }
    let body = String::from_utf8_lossy(&buf[head_end + 4..total]).to_string();
    buf.drain(..total);
    Ok((status, body, close))
}

pub fn connect(addr: SocketAddr) -> Result<TcpStream, String> {
    let stream = TcpStream::connect_timeout(&addr, Duration::from_secs(5))
        .map_err(|e| format!("connect: {e}"))?;
    let _ = stream.set_nodelay(true);
    stream
        .set_read_timeout(Some(Duration::from_secs(5)))
        .map_err(|e| e.to_string())?;
    Ok(stream)
}

/// A client's pause between two requests: load that never stops, without
/// taking the CPU that the workers being started need (a 2-core CI machine).
const PACE: Duration = Duration::from_micros(500);

fn client(addr: SocketAddr, keepalive: bool, stop: &AtomicBool) -> Tally {
    let mut tally = Tally::default();
    let mut conn: Option<(TcpStream, Vec<u8>)> = None;
    let request: &[u8] = if keepalive {
        b"GET / HTTP/1.1\r\nHost: t\r\n\r\n"
    } else {
        b"GET / HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n"
    };
    while !stop.load(Ordering::Acquire) {
        let started = Instant::now();
        if conn.is_none() {
            match connect(addr) {
                Ok(s) => conn = Some((s, Vec::new())),
                Err(e) => {
                    tally.failures.push(e);
                    thread::sleep(Duration::from_millis(10));
                    continue;
                }
            }
        }
        let Some((stream, buf)) = &mut conn else {
            continue;
        };
        let result = stream
            .write_all(request)
            .map_err(|e| format!("writing: {e}"))
            .and_then(|()| read_response(stream, buf));
        match result {
            Ok((200, body, close)) => {
                tally.latencies.push(started.elapsed());
                thread::sleep(PACE);
                tally.seen.push(Seen {
                    at: Instant::now(),
                    body,
                });
                if close || !keepalive {
                    conn = None;
                }
            }
            Ok((status, body, _)) => {
                tally.failures.push(format!("status {status}: {body}"));
                conn = None;
            }
            Err(e) => {
                tally.failures.push(e);
                conn = None;
            }
        }
    }
    tally
}

pub fn version_of(body: &str) -> &str {
    body.split(' ').next().unwrap_or_default()
}

/// Waits up to `within` for `addr` to answer `version` (on a new connection).
pub fn wait_for_version(addr: SocketAddr, version: &str, within: Duration) -> Duration {
    let started = Instant::now();
    loop {
        if let Ok(mut s) = connect(addr) {
            let _ = s.write_all(b"GET / HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n");
            if let Ok((200, body, _)) = read_response(&mut s, &mut Vec::new()) {
                if version_of(&body) == version {
                    return started.elapsed();
                }
            }
        }
        assert!(
            started.elapsed() < within,
            "{version} did not answer within {within:?}"
        );
        thread::sleep(Duration::from_millis(20));
    }
}

/// The supervisor's live children, from `/proc`.
pub fn children_of(pid: i32) -> Vec<i32> {
    std::fs::read_to_string(format!("/proc/{pid}/task/{pid}/children"))
        .unwrap_or_default()
        .split_whitespace()
        .filter_map(|p| p.parse().ok())
        .collect()
}

/// Waits up to `within` for the supervisor to have exactly `n` children.
pub fn expect_children(pid: i32, n: usize, within: Duration) -> Vec<i32> {
    let deadline = Instant::now() + within;
    loop {
        let now = children_of(pid);
        if now.len() == n {
            return now;
        }
        assert!(
            Instant::now() < deadline,
            "expected {n} workers within {within:?}, have {now:?}"
        );
        thread::sleep(Duration::from_millis(20));
    }
}

/// Polls `done` every 20 ms until it holds; fails after `within` with `why()`.
pub fn wait_until(within: Duration, why: impl Fn() -> String, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + within;
    while !done() {
        assert!(Instant::now() < deadline, "after {within:?}: {}", why());
        thread::sleep(Duration::from_millis(20));
    }
}
