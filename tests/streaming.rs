//! Streamed responses over real sockets: ASGI `more_body` parts and WSGI
//! generators framed chunked, as is under a declared `Content-Length`, or
//! close-delimited for HTTP/1.0; parts reaching the client while the app keeps
//! the response open (server-sent events); a pipelined request answered after
//! the stream it waits behind; HEAD; a client that leaves mid-stream (`OSError`
//! in `send`, the generator's `close()`); and a client that reads slowly from
//! a 64 MiB stream, which must not grow the server's memory past its write
//! buffer. Uses `tests/fixtures/streaming`.

mod common;

use std::io::Read;
use std::thread;
use std::time::{Duration, Instant};

use common::{fixture, get, rss_kib, text, Raw, Server, IO_TIMEOUT, MIB};

fn servers() -> Server {
    Server::start(&fixture("streaming/streaming.pyrs"))
}

/// Polls `path` (a JSON state endpoint) until it contains `needle`.
fn wait_state(s: &Server, path: &str, needle: &str) -> String {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let t = s.get(path).text();
        if t.contains(needle) {
            return t;
        }
        assert!(Instant::now() < deadline, "{needle} never in {path}: {t}");
        thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn asgi_parts_are_chunked_and_the_connection_stays_usable() {
    let s = servers();
    let mut c = Raw::open(&s);
    c.send(&get("/a/chunks"));
    let head = text(&c.until(b"\r\n\r\n", IO_TIMEOUT));
    assert!(head.starts_with("HTTP/1.1 200 OK\r\n"), "{head}");
    assert!(
        head.contains("\r\nTransfer-Encoding: chunked\r\n"),
        "{head}"
    );
    assert!(
        !head.to_ascii_lowercase().contains("content-length"),
        "{head}"
    );
    let body = text(&c.until(b"0\r\n\r\n", IO_TIMEOUT));
    assert_eq!(body, "5\r\nhello\r\n1\r\n \r\n5\r\nworld\r\n0\r\n\r\n");
    // Keep-alive: the next request on the same connection is answered.
    c.send(&get("/a/length"));
    let head = text(&c.until(b"\r\n\r\n", IO_TIMEOUT));
    assert!(head.contains("\r\nContent-Length: 10\r\n"), "{head}");
    assert!(!head.contains("chunked"), "{head}");
    assert_eq!(text(&c.until(b"helloworld", IO_TIMEOUT)), "helloworld");
    c.silent(Duration::from_millis(200));
}

#[test]
fn http10_streams_end_with_the_connection() {
    let s = servers();
    for path in ["/a/chunks", "/w/gen"] {
        let mut c = Raw::open(&s);
        c.send(format!("GET {path} HTTP/1.0\r\nConnection: keep-alive\r\n\r\n").as_bytes());
        let all = text(&c.read_to_eof(IO_TIMEOUT));
        let (head, body) = all.split_once("\r\n\r\n").expect("a head");
        assert!(head.starts_with("HTTP/1.1 200 OK\r\n"), "{head}");
        assert!(head.contains("\r\nConnection: close"), "{head}");
        assert!(!head.contains("chunked"), "{head}");
        let expected = if path == "/w/gen" {
            "onetwothree"
        } else {
            "hello world"
        };
        assert_eq!(body, expected, "{path}");
    }
}

#[test]
fn server_sent_events_arrive_while_the_app_holds_the_response_open() {
    let s = servers();
    let mut c = Raw::open(&s);
    c.send(&get("/a/events"));
    let head = text(&c.until(b"\r\n\r\n", IO_TIMEOUT));
    assert!(head.contains("text/event-stream"), "{head}");
    // The first event is here before the app has been told to send the second.
    assert_eq!(
        text(&c.until(b"data: 1\n\n\r\n", IO_TIMEOUT)),
        "9\r\ndata: 1\n\n\r\n"
    );
    c.silent(Duration::from_millis(300));
    assert_eq!(s.get("/a/release").text(), "released");
    assert_eq!(
        text(&c.until(b"0\r\n\r\n", IO_TIMEOUT)),
        "9\r\ndata: 2\n\n\r\n0\r\n\r\n"
    );
}

#[test]
fn a_pipelined_request_is_answered_after_the_stream_it_waits_behind() {
    let s = servers();
    let mut c = Raw::open(&s);
    let mut both = get("/a/events");
    both.extend(get("/a/chunks"));
    both.extend(get("/w/release?x"));
    c.send(&both);
    c.until(b"data: 1\n\n\r\n", IO_TIMEOUT);
    // The later responses are ready, but wait behind the open stream.
    c.silent(Duration::from_millis(300));
    assert_eq!(s.get("/a/release").text(), "released");
    let rest = text(&c.until(b"released", IO_TIMEOUT));
    let first_end = rest.find("0\r\n\r\n").expect("the stream's end");
    assert!(rest[..first_end].contains("data: 2"), "{rest}");
    let second = rest.find("hello").expect("the second response");
    let third = rest.find("released").expect("the third response");
    assert!(first_end < second && second < third, "{rest}");
}

#[test]
fn a_failing_asgi_stream_is_cut_short_and_the_connection_closed() {
    let s = servers();
    let mut c = Raw::open(&s);
    c.send(&get("/a/fails"));
    let all = text(&c.read_to_eof(IO_TIMEOUT));
    assert!(all.contains("7\r\npartial\r\n"), "{all}");
    assert!(!all.ends_with("0\r\n\r\n"), "{all}");
    s.expect_stderr("failed mid-stream");
    s.get("/a/state").assert_basics(200);
}

#[test]
fn wsgi_generators_stream_part_by_part() {
    let s = servers();
    let mut c = Raw::open(&s);
    c.send(&get("/w/gen"));
    let head = text(&c.until(b"\r\n\r\n", IO_TIMEOUT));
    assert!(
        head.contains("\r\nTransfer-Encoding: chunked\r\n"),
        "{head}"
    );
    // The empty item is no chunk (it would end the body).
    assert_eq!(
        text(&c.until(b"0\r\n\r\n", IO_TIMEOUT)),
        "3\r\none\r\n3\r\ntwo\r\n5\r\nthree\r\n0\r\n\r\n"
    );
    // A declared length: the items as they are.
    c.send(&get("/w/length"));
    let head = text(&c.until(b"\r\n\r\n", IO_TIMEOUT));
    assert!(
        head.contains("\r\nContent-Length: 6\r\n") && !head.contains("chunked"),
        "{head}"
    );
    assert_eq!(text(&c.until(b"abcdef", IO_TIMEOUT)), "abcdef");
    // The first item is on the wire while the generator waits for the second.
    c.send(&get("/w/slow"));
    c.until(b"5\r\nfirst\r\n", IO_TIMEOUT);
    c.silent(Duration::from_millis(300));
    assert_eq!(s.get("/w/release").text(), "released");
    assert_eq!(
        text(&c.until(b"0\r\n\r\n", IO_TIMEOUT)),
        "6\r\nsecond\r\n0\r\n\r\n"
    );
}

#[test]
fn wsgi_generators_stream_from_the_worker_thread_too() {
    let s = Server::start(&fixture("streaming/single.pyrs"));
    let r = s.get("/w/gen");
    assert_eq!(r.status, 200);
    assert_eq!(r.header("transfer-encoding"), Some("chunked"));
    assert_eq!(r.text(), "onetwothree");
    let mut c = Raw::open(&s);
    c.send(&get("/w/forever"));
    for _ in 0..3 {
        c.until(&[b'y'; 1000], IO_TIMEOUT);
    }
    drop(c);
    wait_state(&s, "/w/state", r#""w_closed": true"#);
}

#[test]
fn a_slow_reader_does_not_hold_up_the_single_worker() {
    let s = Server::start(&fixture("streaming/single.pyrs"));
    let mut slow = Raw::open(&s);
    slow.send(&get("/w/big?mib=64"));
    slow.until(b"\r\n\r\n", IO_TIMEOUT);
    // The stream fills the socket and the write buffer, then pauses.
    thread::sleep(Duration::from_millis(300));
    let started = Instant::now();
    let t = s.get("/w/state").text();
    let took = started.elapsed();
    assert!(
        took < Duration::from_secs(2),
        "a request waited {took:?} behind a paused WSGI stream"
    );
    let parts: u64 = t
        .split("\"w_big_parts\": ")
        .nth(1)
        .and_then(|rest| rest.split(|c: char| !c.is_ascii_digit()).next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no w_big_parts in {t}"));
    assert!(
        parts < 400,
        "{parts} parts of 64 KiB produced for a client that reads none"
    );
    drop(slow);
    s.get("/w/gen")
        .assert_chunked_body(200, "text/plain", b"onetwothree");
}

#[test]
fn worker_stepped_wsgi_streams_go_on_while_asgi_tasks_are_in_flight() {
    let s = Server::start(&fixture("streaming/single.pyrs"));
    // An open event stream keeps a task in flight: the worker runs its loop.
    let mut events = Raw::open(&s);
    events.send(&get("/a/events"));
    events.until(b"data: 1\n\n\r\n", IO_TIMEOUT);
    // 8 MiB through a 1 MiB write buffer: the stream pauses and is woken
    // through the event loop many times.
    let r = s.get("/w/big?mib=8");
    assert_eq!(r.body.len(), 8 << 20);
    assert_eq!(s.get("/a/release").text(), "released");
    events.until(b"0\r\n\r\n", IO_TIMEOUT);
}

#[test]
fn head_on_streaming_endpoints_sends_the_head_only() {
    let s = servers();
    for path in ["/a/chunks", "/w/gen"] {
        let mut c = Raw::open(&s);
        c.send(format!("HEAD {path} HTTP/1.1\r\nHost: t\r\n\r\n").as_bytes());
        let head = text(&c.until(b"\r\n\r\n", IO_TIMEOUT));
        assert!(head.starts_with("HTTP/1.1 200 OK\r\n"), "{path}: {head}");
        c.silent(Duration::from_millis(200));
        // The connection goes on.
        c.send(&get("/w/state"));
        let next = text(&c.until(b"\r\n\r\n", IO_TIMEOUT));
        assert!(next.starts_with("HTTP/1.1 200 OK\r\n"), "{path}: {next}");
    }
}

#[test]
fn a_client_leaving_mid_stream_stops_the_app() {
    let s = servers();
    for (path, byte) in [("/a/forever", b'x'), ("/w/forever", b'y')] {
        let mut c = Raw::open(&s);
        c.send(&get(path));
        for _ in 0..3 {
            c.until(&[byte; 1000], IO_TIMEOUT);
        }
        drop(c);
    }
    // ASGI: the next send raised OSError and receive() said http.disconnect.
    let t = wait_state(&s, "/a/state", r#""a_disconnected": "OSError""#);
    assert!(t.contains(r#""a_receive": "http.disconnect""#), "{t}");
    // WSGI: iteration stopped and close() ran the generator's finally.
    wait_state(&s, "/w/state", r#""w_closed": true"#);
    // Neither counts as the app's error.
    assert!(!s.stderr().contains("OSError"), "{}", s.stderr());
}

/// Reads a 64 MiB stream slowly; the server's RSS must stay within a few MiB
/// of its 1 MiB write buffer meanwhile, and the whole body must arrive.
fn slow_reader_keeps_memory_bounded(path: &str) {
    const STREAM: usize = 64 << 20;
    let s = servers();
    let pid = s.pid();
    // Warm up the path (interpreter caches, buffers), then measure.
    let small = s.get(&format!("{path}?mib=1"));
    assert_eq!(small.body.len(), 1 << 20);
    thread::sleep(Duration::from_millis(200));
    let before = rss_kib(pid);
    let mut c = Raw::open(&s);
    c.stream.set_nonblocking(false).expect("blocking socket");
    c.send(&get(&format!("{path}?mib=64")));
    c.until(b"\r\n\r\n", IO_TIMEOUT);
    // Read 256 KiB every 20 ms (about 12 MiB/s) for 1.5 s, watching the RSS.
    let mut read = c.got.len();
    c.got.clear();
    let mut peak = before;
    let mut buf = vec![0u8; 256 * 1024];
    let slow_until = Instant::now() + Duration::from_millis(1500);
    while Instant::now() < slow_until {
        let n = c.stream.read(&mut buf).expect("read");
        assert!(n > 0, "closed early");
        read += n;
        peak = peak.max(rss_kib(pid));
        thread::sleep(Duration::from_millis(20));
    }
    let grown = peak.saturating_sub(before);
    eprintln!(
        "{path}: read {} KiB slowly; VmRSS {before} KiB before, peak +{grown} KiB",
        read >> 10
    );
    assert!(
        grown < 8 * MIB,
        "{path}: server RSS grew {grown} KiB while a client read a stream slowly"
    );
    assert!(
        read < STREAM / 2,
        "{path}: the stream was read too fast to tell"
    );
    // Now read the rest as fast as possible: every byte arrives, then the end.
    c.stream
        .set_read_timeout(Some(Duration::from_secs(20)))
        .expect("timeout");
    let mut tail = Vec::new();
    loop {
        let n = c.stream.read(&mut buf).expect("read the rest");
        assert!(n > 0, "closed before the end");
        read += n;
        tail.extend_from_slice(&buf[..n]);
        if tail.len() > 16 {
            tail.drain(..tail.len() - 16);
        }
        if tail.ends_with(b"\r\n0\r\n\r\n") {
            break;
        }
    }
    // Chunk framing adds 10 bytes per 64 KiB part ("10000\r\n...\r\n") and the end.
    assert_eq!(read, STREAM + (STREAM / 65536) * 9 + 5, "{path}");
}

#[test]
fn a_slow_reader_of_a_large_asgi_stream_keeps_memory_bounded() {
    slow_reader_keeps_memory_bounded("/a/big");
}

#[test]
fn a_slow_reader_of_a_large_wsgi_stream_keeps_memory_bounded() {
    slow_reader_keeps_memory_bounded("/w/big");
}
