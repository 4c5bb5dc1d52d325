//! Prometheus metrics (`metrics_address`): the counters, where they live, and the
//! `pyrs-metrics` thread that serves `GET /metrics` (no Python involved).
//!
//! The counters live in one [`Region`], an anonymous `MAP_SHARED` mapping made
//! before worker processes are forked (by the supervisor, or by `server::run` for
//! a single process), so every process sees every counter and one scrape of any
//! worker shows the whole server. The region has one slot per process × reactor,
//! written only by that reactor thread (plain relaxed loads and stores: nothing
//! shared is written per request), one slot per process written by its metrics
//! thread (Python queue depth, dropped access log lines, published every
//! `PUBLISH_EVERY`), and a header the supervisor writes (worker restarts).
//! A scrape sums the slots. Counters outlive a worker's restart (they only grow);
//! a restarted worker resets its gauges.

use std::io::{self, Read, Write};
use std::mem::size_of;
use std::net::{SocketAddr, ToSocketAddrs};
use std::os::fd::{FromRawFd, IntoRawFd};
use std::ptr::NonNull;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};
use std::thread;
use std::time::Duration;

use mio::{Events, Interest, Poll, Token};

use crate::access_log::Dropped;
use crate::listener;

/// Status codes counted one by one: 100 to 999 (a handler may send any 3 digits).
const STATUS_FIRST: u16 = 100;
const STATUSES: usize = 900;
/// Upper bounds of the duration histogram's buckets, in seconds (`+Inf` follows).
pub const BUCKETS: [f64; 14] = [
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];
/// How often each process publishes its queue depth and dropped lines.
const PUBLISH_EVERY: Duration = Duration::from_millis(100);
/// A scrape's request must arrive within this.
const SCRAPE_TIMEOUT: Duration = Duration::from_secs(2);
/// The longest scrape request read.
const MAX_SCRAPE_REQUEST: usize = 8 * 1024;

/// One reactor's counters. Aligned so that two reactors never share a cache line.
#[repr(C, align(128))]
struct ReactorSlot {
    requests: [AtomicU64; STATUSES],
    /// Non-cumulative: `buckets[i]` counts durations in `(BUCKETS[i-1], BUCKETS[i]]`.
    buckets: [AtomicU64; BUCKETS.len() + 1],
    duration_ns: AtomicU64,
    connections: AtomicU64,
}

#[repr(C, align(128))]
struct ProcessSlot {
    queued: AtomicU64,
    dropped: AtomicU64,
}

#[repr(C, align(128))]
struct Header {
    restarts: AtomicU64,
}

/// The shared counters of every process (see the module note).
pub struct Region {
    base: NonNull<u8>,
    workers: usize,
    reactors: usize,
}

// SAFETY: the region is plain memory holding only atomics, mapped for the whole
// life of the process; every access goes through `&AtomicU64`.
unsafe impl Send for Region {}
// SAFETY: as above.
unsafe impl Sync for Region {}

static REGION: OnceLock<Region> = OnceLock::new();

impl Region {
    fn len(workers: usize, reactors: usize) -> usize {
        size_of::<Header>()
            + workers * size_of::<ProcessSlot>()
            + workers * reactors * size_of::<ReactorSlot>()
    }

    /// Maps the region for `workers` processes of `reactors` reactors each (once
    /// per process; forked workers inherit it). Later calls return the first one.
    pub fn install(workers: usize, reactors: usize) -> io::Result<&'static Region> {
        if let Some(r) = REGION.get() {
            return Ok(r);
        }
        let (workers, reactors) = (workers.max(1), reactors.max(1));
        let len = Region::len(workers, reactors);
        // SAFETY: an anonymous shared mapping with no address hint; the result is
        // checked. Zeroed memory is a valid `AtomicU64`.
        let ptr = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_SHARED | libc::MAP_ANONYMOUS,
                -1,
                0,
            )
        };
        if ptr == libc::MAP_FAILED {
            return Err(io::Error::last_os_error());
        }
        let base = NonNull::new(ptr.cast::<u8>()).ok_or_else(|| io::Error::other("mmap"))?;
        let _ = REGION.set(Region {
            base,
            workers,
            reactors,
        });
        Ok(REGION.get().expect("just set"))
    }

    /// The region, if one was installed in this process (or before its fork).
    pub fn get() -> Option<&'static Region> {
        REGION.get()
    }

    fn header(&self) -> &Header {
        // SAFETY: the header is at offset 0 of a live mapping long enough for it.
        unsafe { &*self.base.as_ptr().cast::<Header>() }
    }

    fn process(&self, worker: usize) -> &ProcessSlot {
        let i = worker.min(self.workers - 1);
        // SAFETY: in bounds by the clamp above; offsets keep the alignment (every
        // slot type is a multiple of 128 bytes and the mapping is page-aligned).
        unsafe {
            &*self
                .base
                .as_ptr()
                .add(size_of::<Header>() + i * size_of::<ProcessSlot>())
                .cast::<ProcessSlot>()
        }
    }

    fn reactor(&self, worker: usize, reactor: usize) -> &ReactorSlot {
        let i = worker.min(self.workers - 1) * self.reactors + reactor.min(self.reactors - 1);
        // SAFETY: as in `process`.
        unsafe {
            &*self
                .base
                .as_ptr()
                .add(
                    size_of::<Header>()
                        + self.workers * size_of::<ProcessSlot>()
                        + i * size_of::<ReactorSlot>(),
                )
                .cast::<ReactorSlot>()
        }
    }

    /// A worker process was restarted (the supervisor).
    pub fn count_restart(&self) {
        self.header().restarts.fetch_add(1, Ordering::Relaxed);
    }

    /// The counters reactor `reactor` of worker `worker` writes; resets its gauge.
    pub fn counters(&'static self, worker: usize, reactor: usize) -> Counters {
        let slot = self.reactor(worker, reactor);
        slot.connections.store(0, Ordering::Relaxed);
        Counters { slot }
    }

    /// Everything, summed, in the Prometheus text format (version 0.0.4).
    pub fn render(&self, out: &mut String) {
        use std::fmt::Write as _;
        let mut requests = [0u64; STATUSES];
        let mut buckets = [0u64; BUCKETS.len() + 1];
        let (mut duration_ns, mut connections, mut queued, mut dropped) = (0u64, 0, 0, 0);
        for w in 0..self.workers {
            let p = self.process(w);
            queued += p.queued.load(Ordering::Relaxed);
            dropped += p.dropped.load(Ordering::Relaxed);
            for r in 0..self.reactors {
                let s = self.reactor(w, r);
                for (sum, c) in requests.iter_mut().zip(&s.requests) {
                    *sum += c.load(Ordering::Relaxed);
                }
                for (sum, c) in buckets.iter_mut().zip(&s.buckets) {
                    *sum += c.load(Ordering::Relaxed);
                }
                duration_ns += s.duration_ns.load(Ordering::Relaxed);
                connections += s.connections.load(Ordering::Relaxed);
            }
        }
        out.push_str(
            "# HELP pyrs_requests_total Requests answered, by status (scrapes not counted).\n\
             # TYPE pyrs_requests_total counter\n",
        );
        for (i, n) in requests.iter().enumerate().filter(|(_, n)| **n > 0) {
            let status = STATUS_FIRST as usize + i;
            let _ = writeln!(out, "pyrs_requests_total{{status=\"{status}\"}} {n}");
        }
        out.push_str(
            "# HELP pyrs_request_duration_seconds From a request's last byte to its \
             response in the output.\n\
             # TYPE pyrs_request_duration_seconds histogram\n",
        );
        let mut cumulative = 0;
        for (i, n) in buckets.iter().enumerate() {
            cumulative += n;
            match BUCKETS.get(i) {
                Some(le) => {
                    let _ = writeln!(
                        out,
                        "pyrs_request_duration_seconds_bucket{{le=\"{le}\"}} {cumulative}"
                    );
                }
                None => {
                    let _ = writeln!(
                        out,
                        "pyrs_request_duration_seconds_bucket{{le=\"+Inf\"}} {cumulative}"
                    );
                }
            }
        }
        let _ = writeln!(
            out,
            "pyrs_request_duration_seconds_sum {}\npyrs_request_duration_seconds_count {cumulative}",
            duration_ns as f64 / 1e9
        );
        let _ = write!(
            out,
            "# HELP pyrs_connections_open Client connections open.\n\
             # TYPE pyrs_connections_open gauge\n\
             pyrs_connections_open {connections}\n\
             # HELP pyrs_python_queue_depth Requests sent to Python and not yet answered.\n\
             # TYPE pyrs_python_queue_depth gauge\n\
             pyrs_python_queue_depth {queued}\n\
             # HELP pyrs_worker_restarts_total Worker processes restarted after dying.\n\
             # TYPE pyrs_worker_restarts_total counter\n\
             pyrs_worker_restarts_total {}\n\
             # HELP pyrs_access_log_dropped_total Access log lines dropped because the log \
             could not keep up.\n\
             # TYPE pyrs_access_log_dropped_total counter\n\
             pyrs_access_log_dropped_total {dropped}\n",
            self.header().restarts.load(Ordering::Relaxed)
        );
    }
}

/// One reactor's counters, written only by that reactor.
pub struct Counters {
    slot: &'static ReactorSlot,
}

/// Adds one to a counter only this thread writes: no read-modify-write needed.
#[inline]
fn bump(c: &AtomicU64, by: u64) {
    c.store(
        c.load(Ordering::Relaxed).wrapping_add(by),
        Ordering::Relaxed,
    );
}

impl Counters {
    pub fn record(&mut self, status: u16, took: Duration) {
        let i = usize::from(status.saturating_sub(STATUS_FIRST)).min(STATUSES - 1);
        bump(&self.slot.requests[i], 1);
        let secs = took.as_secs_f64();
        let b = BUCKETS
            .iter()
            .position(|&le| secs <= le)
            .unwrap_or(BUCKETS.len());
        bump(&self.slot.buckets[b], 1);
        bump(
            &self.slot.duration_ns,
            u64::try_from(took.as_nanos()).unwrap_or(u64::MAX),
        );
    }

    pub fn set_connections(&mut self, n: usize) {
        self.slot.connections.store(n as u64, Ordering::Relaxed);
    }
}

/// Binds `address` (`host:port`) for the metrics thread.
pub fn bind(address: &str) -> io::Result<(mio::net::TcpListener, SocketAddr)> {
    let addr = address
        .to_socket_addrs()?
        .next()
        .ok_or_else(|| io::Error::other(format!("{address} has no address")))?;
    let l = listener::tcp_listener(addr, 128)?;
    let bound = l.local_addr()?;
    Ok((l, bound))
}

/// Starts the `pyrs-metrics` thread of worker `worker`: publishes this process's
/// gauges and answers scrapes on `listener`.
pub fn serve(
    region: &'static Region,
    worker: usize,
    mut listener: mio::net::TcpListener,
    queued: Arc<AtomicUsize>,
    dropped: Option<Dropped>,
) -> io::Result<()> {
    let mut poll = Poll::new()?;
    poll.registry()
        .register(&mut listener, Token(0), Interest::READABLE)?;
    let slot = region.process(worker);
    slot.queued.store(0, Ordering::Relaxed);
    thread::Builder::new()
        .name("pyrs-metrics".into())
        .spawn(move || {
            let mut events = Events::with_capacity(8);
            let mut page = String::new();
            loop {
                slot.queued
                    .store(queued.load(Ordering::Relaxed) as u64, Ordering::Relaxed);
                if let Some(d) = &dropped {
                    slot.dropped.store(d.get(), Ordering::Relaxed);
                }
                if let Err(e) = poll.poll(&mut events, Some(PUBLISH_EVERY)) {
                    if e.kind() != io::ErrorKind::Interrupted {
                        crate::log::error(format!("metrics: poll failed: {e}"));
                        return;
                    }
                }
                loop {
                    match listener.accept() {
                        Ok((stream, _)) => {
                            page.clear();
                            // A scrape that fails only fails itself.
                            let _ = answer(region, stream, &mut page);
                        }
                        Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                        Err(_) => break,
                    }
                }
            }
        })?;
    Ok(())
}

/// Reads one request and answers it: the metrics for `GET /metrics`, else 404.
fn answer(region: &Region, stream: mio::net::TcpStream, page: &mut String) -> io::Result<()> {
    // SAFETY: the descriptor is moved from the mio stream into the std one.
    let mut stream = unsafe { std::net::TcpStream::from_raw_fd(stream.into_raw_fd()) };
    stream.set_nonblocking(false)?;
    stream.set_read_timeout(Some(SCRAPE_TIMEOUT))?;
    stream.set_write_timeout(Some(SCRAPE_TIMEOUT))?;
    let mut req = Vec::with_capacity(1024);
    let mut chunk = [0u8; 1024];
    while !req.windows(4).any(|w| w == b"\r\n\r\n") && req.len() < MAX_SCRAPE_REQUEST {
        let n = stream.read(&mut chunk)?;
        if n == 0 {
            break;
        }
        req.extend_from_slice(&chunk[..n]);
    }
    let line = req.split(|&b| b == b'\n').next().unwrap_or_default();
    let mut parts = line.split(|&b| b == b' ');
    let method = parts.next().unwrap_or_default();
    let target = parts.next().unwrap_or_default();
    let path = target.split(|&b| b == b'?').next().unwrap_or_default();
    let head_only = method == b"HEAD";
    let (status, ctype) = if (method == b"GET" || head_only) && path == b"/metrics" {
        region.render(page);
        ("200 OK", "text/plain; version=0.0.4; charset=utf-8")
    } else {
        page.push_str("Not Found\n");
        ("404 Not Found", "text/plain; charset=utf-8")
    };
    let head = format!(
        "HTTP/1.1 {status}\r\nContent-Type: {ctype}\r\nContent-Length: {}\r\n\
         Connection: close\r\n\r\n",
        page.len()
    );
    stream.write_all(head.as_bytes())?;
    if !head_only {
        stream.write_all(page.as_bytes())?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slots_do_not_overlap_and_sum_on_render() {
        let region = Region::install(2, 2).expect("mmap");
        let mut a = region.counters(0, 1);
        let mut b = region.counters(1, 0);
        a.record(200, Duration::from_millis(3));
        b.record(200, Duration::from_millis(30));
        b.record(404, Duration::from_secs(20));
        a.set_connections(2);
        b.set_connections(1);
        let mut page = String::new();
        region.render(&mut page);
        assert!(
            page.contains("pyrs_requests_total{status=\"200\"} 2\n"),
            "{page}"
        );
        assert!(
            page.contains("pyrs_requests_total{status=\"404\"} 1\n"),
            "{page}"
        );
        assert!(page.contains("_bucket{le=\"0.005\"} 1\n"), "{page}");
        assert!(page.contains("_bucket{le=\"0.05\"} 2\n"), "{page}");
        assert!(page.contains("_bucket{le=\"+Inf\"} 3\n"), "{page}");
        assert!(page.contains("pyrs_connections_open 3\n"), "{page}");
    }
}
