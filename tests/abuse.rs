//! pyrs under abuse, overload and faults: slowloris heads and stalled uploads get
//! 408, idle keep-alive connections close, a client that never reads its responses
//! cannot grow server memory, the connection, pipeline and queue limits push back
//! (or shed with 503), handlers that block, raise, exit or return garbage never stop
//! the reactors, SIGTERM answers every request already received, and clients
//! vanishing in any phase leak nothing. Many connections and running out of
//! descriptors are in `scale.rs`. Uses `tests/fixtures/abuse` (`short.pyrs` has
//! one-second timers). Every wait is bounded; memory and descriptors are read from
//! `/proc/<pid>/`, so this file is Linux-only like the server.

mod common;

use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::os::fd::AsRawFd;
use std::thread;
use std::time::{Duration, Instant};

use common::{
    fixture, get, nothing_received, open_fds, post, rss_kib, wait_fds_at_most, Conn, Server, MIB,
};

fn start(name: &str) -> Server {
    Server::start(&fixture(&format!("abuse/{name}.pyrs")))
}

/// Makes closing `stream` send a reset instead of a FIN (SO_LINGER 0).
fn reset_on_close(stream: &TcpStream) {
    let linger = libc::linger {
        l_onoff: 1,
        l_linger: 0,
    };
    // SAFETY: setsockopt(2) on an open socket with a correctly sized `linger`.
    let rc = unsafe {
        libc::setsockopt(
            stream.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_LINGER,
            (&linger as *const libc::linger).cast(),
            std::mem::size_of::<libc::linger>() as libc::socklen_t,
        )
    };
    assert_eq!(rc, 0, "SO_LINGER: {}", io::Error::last_os_error());
}

/// Writes as much of `bytes` as the peer takes within `window` (all of it when
/// the peer keeps reading); returns how many bytes the kernel accepted.
fn write_for(stream: &TcpStream, bytes: &[u8], window: Duration) -> usize {
    stream.set_nonblocking(true).expect("nonblocking");
    let deadline = Instant::now() + window;
    let mut off = 0;
    while off < bytes.len() && Instant::now() < deadline {
        match (&*stream).write(&bytes[off..]) {
            Ok(0) => break,
            Ok(n) => off += n,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                thread::sleep(Duration::from_millis(5))
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => panic!("writing to pyrs: {e}"),
        }
    }
    stream.set_nonblocking(false).expect("blocking");
    off
}

/// Sends `bytes` on a clone of `stream` from a new thread (while the caller reads).
fn send_in_background(stream: &TcpStream, bytes: Vec<u8>) -> thread::JoinHandle<io::Result<()>> {
    let stream = stream.try_clone().expect("clone");
    thread::spawn(move || (&stream).write_all(&bytes))
}

fn assert_between(took: Duration, low: Duration, high: Duration, what: &str) {
    assert!(
        took >= low && took < high,
        "{what} after {took:?}; expected between {low:?} and {high:?}"
    );
}

/// Waits until `pid` has at least `min` descriptors open; panics after `timeout`.
/// A reactor reads a connection in the same round it accepts it, so once the
/// descriptors are there, requests already sent on them have been read.
fn wait_fds_at_least(pid: i32, min: usize, timeout: Duration) {
    let deadline = Instant::now() + timeout;
    loop {
        let n = open_fds(pid).len();
        if n >= min {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "pyrs has {n} descriptors open after {timeout:?}, expected at least {min}"
        );
        thread::sleep(Duration::from_millis(10));
    }
}

// ------------------------------------------------------------------ timeouts

#[test]
fn slowloris_gets_408_and_is_closed_while_others_are_served() {
    let s = start("short");
    // Sends a header line every 150 ms and never ends the head: header_timeout (1 s)
    // bounds the whole head, not the pause between reads.
    let mut slow = s.connect();
    slow.send(b"GET /text HTTP/1.1\r\nHost: slow\r\n");
    let started = Instant::now();
    let trickle = slow.stream.try_clone().expect("clone");
    let trickler = thread::spawn(move || {
        let deadline = Instant::now() + Duration::from_secs(5);
        let mut lines = 0;
        while Instant::now() < deadline {
            thread::sleep(Duration::from_millis(150));
            if (&trickle).write_all(b"X-Slow: 1\r\n").is_err() {
                break;
            }
            lines += 1;
        }
        lines
    });
    // Two bytes and then nothing.
    let mut stalled = s.connect();
    stalled.send(b"GE");
    let stalled_at = Instant::now();

    // Meanwhile other clients are served, on a kept connection and on new ones.
    let mut normal = s.connect();
    for i in 0..5 {
        let r = normal.request(&get(&format!("/text?{i}")));
        r.assert_basics(200);
        assert_eq!(r.text(), format!("ok {i}"));
        s.get("/nope").assert_basics(404);
        thread::sleep(Duration::from_millis(100));
    }

    let r = slow.read_response();
    let took = started.elapsed();
    r.assert_basics(408);
    assert_eq!(r.header("connection"), Some("close"), "{r:#?}");
    assert_between(
        took,
        Duration::from_millis(900),
        Duration::from_secs(4),
        "slowloris answered 408",
    );
    slow.expect_eof();
    let _ = slow.stream.shutdown(std::net::Shutdown::Both);
    let lines = trickler.join().expect("trickler");
    assert!(lines >= 4, "the slow client kept sending ({lines} lines)");

    let r = stalled.read_response();
    let took = stalled_at.elapsed();
    r.assert_basics(408);
    assert_between(
        took,
        Duration::from_millis(900),
        Duration::from_secs(4),
        "partial head answered 408",
    );
    stalled.expect_eof();
    normal.request(&get("/text")).assert_basics(200);
}

#[test]
fn idle_keep_alive_connection_is_closed_after_keepalive_timeout() {
    let s = start("short");
    // Answered, then idle: closed after keepalive_timeout (1 s), without a 408.
    let mut idle = s.connect();
    idle.request(&get("/text")).assert_basics(200);
    let idle_closer = thread::spawn(move || {
        let since = Instant::now();
        idle.expect_eof();
        since.elapsed()
    });
    // Connected, never sends a byte: also closed, silently.
    let mut silent = s.connect();
    let silent_closer = thread::spawn(move || {
        let since = Instant::now();
        silent.expect_eof();
        since.elapsed()
    });
    // A connection in use outlives the timeout: it is idle-based, not absolute.
    let mut busy = s.connect();
    let busy_since = Instant::now();
    while busy_since.elapsed() < Duration::from_millis(2200) {
        busy.request(&get("/nope")).assert_basics(404);
        thread::sleep(Duration::from_millis(300));
    }
    busy.request(&get("/text")).assert_basics(200);

    let (low, high) = (Duration::from_millis(900), Duration::from_secs(4));
    let took = idle_closer.join().expect("idle closer");
    assert_between(took, low, high, "idle keep-alive connection closed");
    let took = silent_closer.join().expect("silent closer");
    assert_between(took, low, high, "connection without a request closed");
}

#[test]
fn stalled_body_upload_gets_408_but_a_slow_steady_one_is_served() {
    let s = start("short");
    let addr = s.addr();
    // Pauses of 400 ms, 2.4 s in all: body_timeout (1 s) is per pause.
    let steady = thread::spawn(move || {
        let mut c = Conn::connect(addr);
        c.send(b"POST /count HTTP/1.1\r\nHost: t\r\nContent-Length: 6\r\n\r\n");
        for b in b"abcdef" {
            thread::sleep(Duration::from_millis(400));
            c.send(&[*b]);
        }
        c.read_response()
    });
    let mut fixed = s.connect();
    fixed.send(b"POST /count HTTP/1.1\r\nHost: t\r\nContent-Length: 100\r\n\r\n0123456789");
    let mut chunked = s.connect();
    chunked.send(
        b"POST /count HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n",
    );
    let started = Instant::now();
    for (name, c) in [("Content-Length", &mut fixed), ("chunked", &mut chunked)] {
        let r = c.read_response();
        r.assert_basics(408);
        assert_eq!(r.header("connection"), Some("close"), "{r:#?}");
        assert_between(
            started.elapsed(),
            Duration::from_millis(900),
            Duration::from_secs(4),
            &format!("stalled {name} body answered 408"),
        );
        c.expect_eof();
    }
    let r = steady.join().expect("steady uploader");
    r.assert_basics(200);
    assert_eq!(r.text(), "6");
}

// ------------------------------------------------------------- back-pressure

#[test]
fn client_that_never_reads_cannot_grow_server_memory() {
    const SIZE: usize = 64 * 1024;
    let s = start("defaults");
    let pid = s.pid();
    let big = format!("/big?n={SIZE}");
    let mut warm = s.connect();
    for _ in 0..20 {
        assert_eq!(warm.request(&get(&big)).body.len(), SIZE);
    }
    drop(warm);
    thread::sleep(Duration::from_millis(200));
    let before = rss_kib(pid);

    // 4000 requests of 12 KB for 64 KiB each (256 MiB of responses); the client
    // reads none of them. With max_write_buffer (1 MiB) the server stops reading
    // its requests, so TCP stops the client after a few MB.
    let pad = "p".repeat(12_000);
    let one = format!("GET {big} HTTP/1.1\r\nHost: t\r\nX-Pad: {pad}\r\n\r\n").into_bytes();
    let offered = 4000;
    let all = one.repeat(offered);
    let mut greedy = s.connect();
    let accepted = write_for(&greedy.stream, &all, Duration::from_millis(1500));
    let mut sent = accepted / one.len();
    assert!(
        accepted < all.len() / 2,
        "the server read {sent} of {offered} requests of a client that takes no responses"
    );
    let during = rss_kib(pid);
    let grown = during.saturating_sub(before);
    eprintln!(
        "slow reader: {sent} of {offered} requests sent ({} MiB of responses owed); \
         server VmRSS {before} KiB before, {during} KiB while stalled (+{grown} KiB)",
        (sent * SIZE) >> 20
    );
    assert!(
        grown < 32 * MIB,
        "server RSS grew {grown} KiB for a client that does not read"
    );

    // Other clients are served meanwhile.
    let mut other = s.connect();
    other.request(&get("/text")).assert_basics(200);
    s.get("/nope").assert_basics(404);

    // The client reads again: reading resumes and every request is answered.
    let partial = accepted % one.len();
    let mut rest = one[partial..].to_vec();
    if partial > 0 {
        sent += 1;
    }
    rest.extend(get("/text?last"));
    let writer = send_in_background(&greedy.stream, rest);
    // Each response is due at once: a pause means the server stopped reading.
    greedy
        .stream
        .set_read_timeout(Some(Duration::from_secs(3)))
        .expect("timeout");
    for i in 0..=sent {
        let r = match greedy.try_read_response(false) {
            Ok(Some(r)) => r,
            Ok(None) => panic!("connection closed after {i} of {sent} responses"),
            Err(e) => panic!(
                "no response {i} of {sent} within 3 s ({e}): the server did not resume \
                 reading requests after the client drained its responses"
            ),
        };
        let (status, len) = if i < sent { (200, SIZE) } else { (200, 7) };
        assert_eq!(
            (r.status, r.body.len()),
            (status, len),
            "response {i} of {sent}: {}",
            String::from_utf8_lossy(&r.body[..r.body.len().min(40)])
        );
    }
    writer.join().expect("writer").expect("send to pyrs");
}

#[test]
fn max_pipelined_stops_reading_a_connection_until_responses_drain() {
    // pipelined.pyrs: max_pipelined 4. While the worker is blocked, a client
    // pipelining 64 MiB of uploads is read only 4 requests ahead: past what the
    // kernel buffers, TCP stops it.
    const COUNT: usize = 4096;
    const BODY: usize = 16 * 1024;
    let s = start("pipelined");
    let mut blocked = s.connect();
    blocked.send(&get("/block?s=2.5"));
    s.expect_stdout("blocking 2.5");
    let started = Instant::now();
    let one = post("/count", &vec![b'b'; BODY]);
    let all = one.repeat(COUNT);
    let mut piper = s.connect();
    let accepted = write_for(&piper.stream, &all, Duration::from_millis(1200));
    eprintln!(
        "max_pipelined 4: {} of {COUNT} requests taken while the worker was blocked",
        accepted / one.len()
    );
    assert!(
        nothing_received(&blocked.stream),
        "the blocked handler finished within {:?}",
        started.elapsed()
    );
    assert!(
        accepted < all.len() / 4,
        "the server read {} of {COUNT} pipelined requests while none could be answered",
        accepted / one.len()
    );
    // The reactor itself still answers other connections.
    s.get("/nope").assert_basics(404);

    // Once the worker is free, everything drains in order.
    let writer = send_in_background(&piper.stream, all[accepted..].to_vec());
    let r = blocked.read_response();
    assert_eq!(r.text(), "blocked 2.5");
    for i in 0..COUNT {
        let r = piper.read_response();
        assert_eq!(r.status, 200, "response {i}");
        assert_eq!(r.text(), BODY.to_string(), "response {i}");
    }
    writer.join().expect("writer").expect("send to pyrs");
}

#[test]
fn max_queued_requests_stops_every_reactor_reading_until_python_catches_up() {
    // queued.pyrs: max_queued_requests 8, two reactors. The kernel spreads
    // connections over the reactors' SO_REUSEPORT listeners by address hash, so
    // of LATE connections all land on one reactor with probability 2^(1-LATE).
    const WAITING: usize = 12;
    const LATE: usize = 16;
    let s = start("queued");
    let pid = s.pid();
    let mut blocked = s.connect();
    blocked.send(&get("/block?s=3"));
    s.expect_stdout("blocking 3");
    let before = open_fds(pid).len();
    let waiting: Vec<Conn> = (0..WAITING)
        .map(|i| {
            let mut c = s.connect();
            c.send(&get(&format!("/text?{i}")));
            c
        })
        .collect();
    wait_fds_at_least(pid, before + WAITING, Duration::from_secs(5));
    // Overloaded: even requests a reactor could answer alone stay unread, on
    // every reactor.
    let mut late: Vec<Conn> = (0..LATE)
        .map(|_| {
            let mut c = s.connect();
            c.send(&get("/nope"));
            c
        })
        .collect();
    wait_fds_at_least(pid, before + WAITING + LATE, Duration::from_secs(5));
    late[0].expect_silence(Duration::from_millis(600));
    assert!(
        nothing_received(&blocked.stream),
        "the blocking handler finished before the check (a slow machine?)"
    );
    let answered = late.iter().filter(|c| !nothing_received(&c.stream)).count();
    assert_eq!(
        answered, 0,
        "{answered} of {LATE} late connections were answered while the queue was full"
    );
    // The worker catches up: everything is answered, nothing is lost.
    assert_eq!(blocked.read_response().text(), "blocked 3.0");
    for c in &mut late {
        c.read_response().assert_basics(404);
    }
    for (i, mut c) in waiting.into_iter().enumerate() {
        let r = c.read_response();
        r.assert_basics(200);
        assert_eq!(r.text(), format!("ok {i}"));
    }
}

#[test]
fn shed_queued_requests_answers_503_at_once() {
    // shed.pyrs: shed_queued_requests 4, one reactor.
    let s = start("shed");
    let mut blocked = s.connect();
    blocked.send(&get("/block?s=2"));
    s.expect_stdout("blocking 2");
    let mut clients: Vec<Conn> = Vec::new();
    for i in 0..10 {
        let mut c = s.connect();
        c.send(&get(&format!("/text?{i}")));
        clients.push(c);
        thread::sleep(Duration::from_millis(40));
    }
    // Shed answers come from the reactor while the worker is still blocked.
    let started = Instant::now();
    let mut shed = 0;
    let mut kept = Vec::new();
    for (i, mut c) in clients.into_iter().enumerate() {
        if nothing_received(&c.stream) {
            kept.push((i, c));
            continue;
        }
        let r = c.read_response();
        r.assert_basics(503);
        shed += 1;
        // A shed connection stays usable for what needs no Python.
        c.request(&get("/nope")).assert_basics(404);
    }
    assert!(
        nothing_received(&blocked.stream),
        "the blocked handler answered before the shed check ({:?})",
        started.elapsed()
    );
    assert!(
        shed >= 6,
        "{shed} of 10 requests shed with 4 queued allowed"
    );
    assert_eq!(blocked.read_response().text(), "blocked 2.0");
    for (i, mut c) in kept {
        let r = c.read_response();
        r.assert_basics(200);
        assert_eq!(r.text(), format!("ok {i}"));
    }
}

#[test]
fn max_connections_leaves_further_connections_in_the_backlog() {
    // maxconn.pyrs: max_connections 4, one reactor, listen_backlog 64.
    let s = start("maxconn");
    let mut open: Vec<Conn> = (0..4)
        .map(|i| {
            let mut c = s.connect();
            let r = c.request(&get(&format!("/text?{i}")));
            r.assert_basics(200);
            c
        })
        .collect();
    // The kernel completes the handshake, but pyrs does not take the connection.
    let mut fifth = s.connect();
    fifth.send(&get("/text?5"));
    fifth.expect_silence(Duration::from_millis(700));
    s.expect_stderr("max_connections");
    // One closes: the waiting one is accepted and served.
    drop(open.remove(0));
    let r = fifth.read_response();
    r.assert_basics(200);
    assert_eq!(r.text(), "ok 5");
    for c in &mut open {
        c.request(&get("/nope")).assert_basics(404);
    }
}

// ------------------------------------------------------------------ handlers

#[test]
fn blocking_handler_does_not_stop_reactor_answers_or_lose_requests() {
    let s = start("defaults");
    let mut blocked = s.connect();
    blocked.send(&get("/block?s=2"));
    s.expect_stdout("blocking 2");
    let started = Instant::now();
    // Python requests from other clients wait behind it, in the queue.
    let mut queued: Vec<Conn> = (0..5)
        .map(|i| {
            let mut c = s.connect();
            c.send(&get(&format!("/text?q{i}")));
            c
        })
        .collect();
    // The reactors keep answering what needs no Python: 404s and 400s.
    let mut c = s.connect();
    for _ in 0..50 {
        c.request(&get("/nope")).assert_basics(404);
    }
    for _ in 0..10 {
        let mut bad = s.connect();
        bad.request(b"BAD\x01 / HTTP/1.1\r\n\r\n")
            .assert_basics(400);
        bad.expect_eof();
    }
    let took = started.elapsed();
    assert!(
        nothing_received(&blocked.stream),
        "the blocking handler finished within {took:?}"
    );
    assert!(
        took < Duration::from_millis(1500),
        "404s and 400s took {took:?}"
    );
    assert_eq!(blocked.read_response().text(), "blocked 2.0");
    for (i, c) in queued.iter_mut().enumerate() {
        let r = c.read_response();
        r.assert_basics(200);
        assert_eq!(r.text(), format!("ok q{i}"));
    }
}

#[test]
fn sys_exit_and_keyboard_interrupt_in_a_handler_are_500_not_shutdown() {
    const PLAIN: &str = "text/plain; charset=utf-8";
    let mut s = start("defaults");
    let mut c = s.connect();
    c.request(&get("/exit"))
        .assert_ok_body(500, PLAIN, b"Internal Server Error");
    c.request(&get("/interrupt"))
        .assert_ok_body(500, PLAIN, b"Internal Server Error");
    s.expect_stderr("SystemExit");
    s.expect_stderr("KeyboardInterrupt");
    thread::sleep(Duration::from_millis(300));
    s.assert_running();
    // Served on the same connection and on a new one.
    let r = c.request(&get("/text?after"));
    r.assert_basics(200);
    assert_eq!(r.text(), "ok after");
    let r = s.get("/text?new");
    r.assert_basics(200);
    assert_eq!(r.text(), "ok new");
}

#[test]
fn failing_handlers_never_stop_the_server_or_disturb_other_requests() {
    const KINDS: [(&str, u16); 8] = [
        ("/fail", 500),
        ("/garbage", 500),
        ("/bad_status", 500),
        ("/exit", 500),
        ("/interrupt", 500),
        ("/text?x", 200),
        ("/nope", 404),
        ("/block?s=0.01", 200),
    ];
    let mut s = start("defaults");
    let addr = s.addr();
    let threads: Vec<_> = (0..3)
        .map(|t| {
            thread::spawn(move || {
                let mut c = Conn::connect(addr);
                for i in 0..40 {
                    let (path, status) = KINDS[(i + t) % KINDS.len()];
                    let r = c.request(&get(path));
                    assert_eq!(r.status, status, "{path}: {r:#?}");
                    if i % 8 == 0 {
                        // A bad request on its own connection: 400 from the reactor.
                        let mut bad = Conn::connect(addr);
                        bad.request(b"GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n")
                            .assert_basics(400);
                        bad.expect_eof();
                    }
                    if i % 10 == 0 {
                        // Every kind pipelined at once: answered in order.
                        let raw: Vec<u8> = KINDS.iter().flat_map(|(p, _)| get(p)).collect();
                        c.send(&raw);
                        for (path, status) in KINDS {
                            assert_eq!(c.read_response().status, status, "pipelined {path}");
                        }
                    }
                }
            })
        })
        .collect();
    for t in threads {
        t.join().expect("client");
    }
    thread::sleep(Duration::from_millis(200));
    s.assert_running();
    let r = s.get("/text?still");
    r.assert_basics(200);
    assert_eq!(r.text(), "ok still");
}

// ------------------------------------------------------------------ shutdown

#[test]
fn sigterm_answers_all_100_requests_in_flight() {
    let mut s = start("defaults");
    let pid = s.pid();
    let mut blocked = s.connect();
    blocked.send(&get("/block?s=1.5"));
    s.expect_stdout("blocking 1.5");
    let before = open_fds(pid).len();
    // 80 connections with one request each and 4 with 5 pipelined: all read by
    // the reactors and queued behind the blocked handler.
    let mut singles: Vec<Conn> = (0..80)
        .map(|i| {
            let mut c = s.connect();
            c.send(&get(&format!("/text?{i}")));
            c
        })
        .collect();
    let mut pipes: Vec<Conn> = (0..4)
        .map(|p| {
            let mut c = s.connect();
            let raw: Vec<u8> = (0..5)
                .flat_map(|k| get(&format!("/text?p{p}-{k}")))
                .collect();
            c.send(&raw);
            c
        })
        .collect();
    // Every connection accepted, so its requests read, before the signal.
    wait_fds_at_least(
        pid,
        before + singles.len() + pipes.len(),
        Duration::from_secs(5),
    );
    s.signal(libc::SIGTERM);
    s.expect_stdout("Stopping pyrs server...");
    assert_eq!(blocked.read_response().text(), "blocked 1.5");
    for (i, c) in singles.iter_mut().enumerate() {
        let r = c.read_response();
        r.assert_basics(200);
        assert_eq!(r.text(), format!("ok {i}"));
    }
    for (p, c) in pipes.iter_mut().enumerate() {
        for k in 0..5 {
            let r = c.read_response();
            r.assert_basics(200);
            assert_eq!(r.text(), format!("ok p{p}-{k}"));
        }
    }
    drop((singles, pipes, blocked));
    let status = s
        .wait_exit(Duration::from_secs(10))
        .unwrap_or_else(|| panic!("pyrs did not exit; stderr:\n{}", s.stderr()));
    assert_eq!(status.code(), Some(0), "stderr:\n{}", s.stderr());
}

// -------------------------------------------------------------- disconnects

/// One client that leaves in the middle of `phase`.
fn disconnect_in_phase(addr: SocketAddr, phase: usize, i: usize) {
    let mut c = Conn::connect(addr);
    match phase {
        // Mid-head.
        0 => c.send(b"GET /text HTTP/1.1\r\nHost: t\r\nX-Half: "),
        // Mid-body, Content-Length and chunked.
        1 => {
            c.send(b"POST /count HTTP/1.1\r\nHost: t\r\nContent-Length: 100000\r\n\r\n");
            c.send(&[b'x'; 3000]);
        }
        2 => c.send(
            b"POST /count HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n400\r\nabc",
        ),
        // Mid-response: a 1 MiB answer, a few bytes of it read.
        3 => {
            c.send(&get("/big?n=1048576"));
            let mut some = [0u8; 1024];
            let _ = c.stream.read(&mut some);
        }
        // Requests in flight to Python, none read.
        _ => {
            let raw: Vec<u8> = (0..5).flat_map(|_| get("/text")).collect();
            c.send(&raw);
        }
    }
    if i % 2 == 1 {
        reset_on_close(&c.stream);
    }
}

#[test]
fn disconnects_in_every_phase_leak_nothing_and_disturb_no_one() {
    const THREADS: usize = 4;
    const ROUNDS: usize = 500;
    const PHASES: usize = 5;
    const WARM_UP_RUNS: usize = 4;
    const MEASURED_RUNS: usize = 3;
    let s = start("defaults");
    let pid = s.pid();
    let addr = s.addr();
    let run = |rounds: usize| {
        let threads: Vec<_> = (0..THREADS)
            .map(|t| {
                thread::spawn(move || {
                    for i in 0..rounds {
                        disconnect_in_phase(addr, (i + t) % PHASES, i / PHASES);
                    }
                })
            })
            .collect();
        // Meanwhile a well-behaved client is served.
        let mut good = Conn::connect(addr);
        let mut served = 0;
        while threads.iter().any(|t| !t.is_finished()) {
            let r = good.request(&get(&format!("/text?{served}")));
            r.assert_basics(200);
            assert_eq!(r.text(), format!("ok {served}"));
            good.request(&get("/nope")).assert_basics(404);
            served += 1;
        }
        for t in threads {
            t.join().expect("disconnecting client");
        }
        served
    };
    // Warm-up: pools, the allocator's high-water mark (it climbs for a few
    // thousand disconnects with concurrent 1 MiB responses, then stays), the body.
    for _ in 0..WARM_UP_RUNS {
        run(ROUNDS);
    }
    let baseline_fds = wait_fds_at_most(pid, 32, Duration::from_secs(5));
    let before = rss_kib(pid);
    let started = Instant::now();
    let mut rss = Vec::new();
    let mut served = 0;
    for _ in 0..MEASURED_RUNS {
        served += run(ROUNDS);
        rss.push(rss_kib(pid));
    }
    let took = started.elapsed();
    // Closed connections linger at most 2 s; then every descriptor is back.
    let fds = wait_fds_at_most(pid, baseline_fds, Duration::from_secs(6));
    let disconnects = MEASURED_RUNS * THREADS * ROUNDS;
    eprintln!(
        "disconnects: {disconnects} in {took:?} ({served} good requests meanwhile); \
         server fds {baseline_fds} before, {fds} after; VmRSS {before} KiB after warm-up, \
         then {rss:?} KiB"
    );
    assert!(
        fds <= baseline_fds,
        "{fds} descriptors open after the disconnects, {baseline_fds} before"
    );
    // Judged once every closed connection is gone (descriptors back to the
    // baseline), so buffers of connections still lingering do not count as leaks.
    let after = rss_kib(pid);
    assert!(
        after <= before + 12 * MIB,
        "server RSS grew from {before} KiB to {after} KiB over {disconnects} disconnects \
         (samples during the runs: {rss:?} KiB)"
    );
    s.get("/text").assert_basics(200);
}
