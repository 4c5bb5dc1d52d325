//! Streamed responses of pyrs handlers over real sockets: a handler returning
//! a generator, an async generator (an `async def` with `yield`, or returned
//! by a plain or an `async def` handler) or a `pyrs.Response` over one. Parts
//! are chunked on HTTP/1.1, close-delimited on HTTP/1.0, as is under a
//! declared `Content-Length` (too many or too few bytes close the connection);
//! the first part arrives before the generator finishes; a client that leaves
//! runs the generator's `finally`; pipelined requests wait behind a stream; a
//! failure mid-stream closes the connection and is logged; HEAD closes the
//! generator after the head; a client that reads nothing pauses the generator
//! without holding up other requests. Each runs on the worker thread (`single.pyrs`)
//! and, for synchronous handlers, on a pool of Python threads
//! (`pooled.pyrs`). Uses `tests/fixtures/handler_stream`.

mod common;

use std::io::Read;
use std::thread;
use std::time::{Duration, Instant};

use common::{fixture, get, text, Raw, Server, IO_TIMEOUT};

fn single() -> Server {
    Server::start(&fixture("handler_stream/single.pyrs"))
}

fn pooled() -> Server {
    Server::start(&fixture("handler_stream/pooled.pyrs"))
}

/// Polls `/state` until it contains `needle`.
fn wait_state(s: &Server, needle: &str) -> String {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let t = s.get("/state").text();
        if t.contains(needle) {
            return t;
        }
        assert!(Instant::now() < deadline, "{needle} never in /state: {t}");
        thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn a_generator_streams_chunked_and_the_connection_stays_usable() {
    for s in [single(), pooled()] {
        let mut c = Raw::open(&s);
        c.send(&get("/gen"));
        let head = text(&c.until(b"\r\n\r\n", IO_TIMEOUT));
        assert!(head.starts_with("HTTP/1.1 200 OK\r\n"), "{head}");
        assert!(
            head.contains("\r\nTransfer-Encoding: chunked\r\n"),
            "{head}"
        );
        // The first part is a str: the default content type of a str.
        assert!(
            head.contains("\r\nContent-Type: text/html; charset=utf-8\r\n"),
            "{head}"
        );
        assert!(
            !head.to_ascii_lowercase().contains("content-length"),
            "{head}"
        );
        // str and bytes parts; the empty one is no chunk.
        assert_eq!(
            text(&c.until(b"0\r\n\r\n", IO_TIMEOUT)),
            "3\r\none\r\n3\r\ntwo\r\n5\r\nthree\r\n0\r\n\r\n"
        );
        c.send(&get("/plain"));
        let next = text(&c.until(b"plain", IO_TIMEOUT));
        assert!(next.contains("\r\nContent-Length: 5\r\n"), "{next}");
        c.silent(Duration::from_millis(100));
    }
}

#[test]
fn async_generators_stream_from_every_kind_of_handler() {
    for s in [single(), pooled()] {
        // `async def` with `yield`; a plain handler returning one (awaited on
        // the worker's loop, or on a private one on a pool thread).
        for path in ["/agen", "/agen_from_sync"] {
            s.get(path)
                .assert_chunked_body(200, "text/html; charset=utf-8", b"a1a2a3");
        }
        // An `async def` handler returning a Response over one.
        let r = s.get("/agen_from_async");
        r.assert_chunked_body(201, "text/plain", b"a1a2a3");
        assert_eq!(r.header("x-kind"), Some("async"));
    }
}

#[test]
fn a_response_over_a_generator_keeps_its_status_and_headers() {
    for s in [single(), pooled()] {
        let r = s.get("/response");
        r.assert_chunked_body(202, "text/event-stream", b"onetwothree");
        assert_eq!(r.header("x-stream"), Some("yes"));
        // A generator that yields nothing: a whole empty response.
        let r = s.get("/empty");
        assert_eq!(r.status, 200);
        assert_eq!(r.content_length(), Some(0), "{r:#?}");
    }
}

#[test]
fn the_first_event_arrives_long_before_the_generator_ends() {
    for s in [single(), pooled()] {
        for path in ["/slow", "/aslow"] {
            let mut c = Raw::open(&s);
            let started = Instant::now();
            c.send(&get(path));
            c.until(b"data: first\n\n\r\n", IO_TIMEOUT);
            let first = started.elapsed();
            c.until(b"0\r\n\r\n", IO_TIMEOUT);
            let total = started.elapsed();
            // The generator sleeps 0.4 s twice after its first part.
            assert!(total >= Duration::from_millis(800), "{path}: {total:?}");
            assert!(
                first + Duration::from_millis(500) < total,
                "{path}: first part after {first:?}, all after {total:?}"
            );
        }
    }
}

#[test]
fn http10_streams_end_with_the_connection() {
    for s in [single(), pooled()] {
        for (path, body) in [("/gen", "onetwothree"), ("/agen", "a1a2a3")] {
            let mut c = Raw::open(&s);
            c.send(format!("GET {path} HTTP/1.0\r\nConnection: keep-alive\r\n\r\n").as_bytes());
            let all = text(&c.read_to_eof(IO_TIMEOUT));
            let (head, got) = all.split_once("\r\n\r\n").expect("a head");
            assert!(head.contains("\r\nConnection: close"), "{head}");
            assert!(!head.contains("chunked"), "{head}");
            assert_eq!(got, body, "{path}");
        }
    }
}

#[test]
fn a_declared_content_length_is_honoured() {
    for s in [single(), pooled()] {
        let mut c = Raw::open(&s);
        c.send(&get("/length"));
        let head = text(&c.until(b"\r\n\r\n", IO_TIMEOUT));
        assert!(head.contains("\r\nContent-Length: 6\r\n"), "{head}");
        assert!(!head.contains("chunked"), "{head}");
        assert_eq!(text(&c.until(b"abcdef", IO_TIMEOUT)), "abcdef");
        // Exactly the declared length: the connection goes on.
        c.send(&get("/plain"));
        c.until(b"plain", IO_TIMEOUT);

        // More than declared: the declared bytes, then the connection closes.
        let mut c = Raw::open(&s);
        c.send(&get("/too_long"));
        let all = text(&c.read_to_eof(IO_TIMEOUT));
        let (head, body) = all.split_once("\r\n\r\n").expect("a head");
        assert!(head.ends_with("\r\nContent-Length: 4"), "{head}");
        assert_eq!(body, "abcd");
        s.expect_stderr("longer than its Content-Length");

        // Fewer than declared: only closing tells the client.
        let mut c = Raw::open(&s);
        c.send(&get("/too_short"));
        let all = text(&c.read_to_eof(IO_TIMEOUT));
        let (head, body) = all.split_once("\r\n\r\n").expect("a head");
        assert!(head.ends_with("\r\nContent-Length: 10"), "{head}");
        assert_eq!(body, "abc");
        s.expect_stderr("shorter than its Content-Length");
    }
}

#[test]
fn a_client_leaving_runs_the_generators_finally() {
    for s in [single(), pooled()] {
        for (path, byte) in [("/forever", b'y'), ("/aforever", b'x')] {
            let mut c = Raw::open(&s);
            c.send(&get(path));
            for _ in 0..3 {
                c.until(&[byte; 1000], IO_TIMEOUT);
            }
            drop(c);
        }
        wait_state(&s, r#""sync_closed":true"#);
        wait_state(&s, r#""async_closed":true"#);
        // An async generator waiting between events is stopped in its wait.
        let mut c = Raw::open(&s);
        c.send(&get("/idle"));
        c.until(b"data: hello\n\n\r\n", IO_TIMEOUT);
        drop(c);
        wait_state(&s, r#""idle_closed":true"#);
        // Leaving is not the handler's error.
        assert!(!s.stderr().contains("Traceback"), "{}", s.stderr());
        s.get("/plain")
            .assert_ok_body(200, "text/html; charset=utf-8", b"plain");
    }
}

#[test]
fn pipelined_requests_are_answered_in_order_behind_a_stream() {
    for s in [single(), pooled()] {
        let mut c = Raw::open(&s);
        let mut all = get("/slow");
        all.extend(get("/plain"));
        all.extend(get("/agen"));
        all.extend(get("/plain"));
        c.send(&all);
        let first = text(&c.until(b"data: first\n\n\r\n", IO_TIMEOUT));
        assert!(first.starts_with("HTTP/1.1 200 OK\r\n"), "{first}");
        // The next answers are ready, but wait behind the open stream.
        c.silent(Duration::from_millis(200));
        let rest = text(&c.until(b"plain", IO_TIMEOUT));
        let end = rest
            .find("data: 1\n\n\r\n0\r\n\r\n")
            .expect("the stream's end");
        let second = rest.find("HTTP/1.1").expect("the second response");
        assert!(end < second, "{rest}");
        let rest = text(&c.until(b"0\r\n\r\n", IO_TIMEOUT));
        assert!(rest.contains("a1") && rest.contains("a3"), "{rest}");
        let last = text(&c.until(b"plain", IO_TIMEOUT));
        assert!(last.starts_with("HTTP/1.1 200 OK\r\n"), "{last}");
    }
}

#[test]
fn a_failure_mid_stream_closes_the_connection_and_is_logged() {
    for s in [single(), pooled()] {
        for (path, message) in [
            ("/fails", "RuntimeError: failed mid-stream"),
            ("/afails", "RuntimeError: async failed mid-stream"),
        ] {
            let mut c = Raw::open(&s);
            c.send(&get(path));
            let all = text(&c.read_to_eof(IO_TIMEOUT));
            assert!(all.contains("7\r\npartial\r\n"), "{all}");
            assert!(!all.ends_with("0\r\n\r\n"), "{all}");
            s.expect_stderr(message);
        }
        assert!(s.stderr().contains("Traceback"), "{}", s.stderr());
        // Before the first part: a 500, and the connection goes on.
        for path in ["/fails_first", "/bad_item", "/acancelled_first"] {
            let mut c = Raw::open(&s);
            c.send(&get(path));
            let head = text(&c.until(b"Internal Server Error", IO_TIMEOUT));
            assert!(head.starts_with("HTTP/1.1 500 "), "{head}");
            c.send(&get("/plain"));
            c.until(b"plain", IO_TIMEOUT);
        }
        s.expect_stderr("must yield str or bytes, not int");
        // The server keeps serving.
        s.get("/gen")
            .assert_chunked_body(200, "text/html; charset=utf-8", b"onetwothree");
    }
}

#[test]
fn head_sends_the_head_only_and_closes_the_generator() {
    for s in [single(), pooled()] {
        for path in ["/headed", "/agen"] {
            let mut c = Raw::open(&s);
            c.send(format!("HEAD {path} HTTP/1.1\r\nHost: t\r\n\r\n").as_bytes());
            let head = text(&c.until(b"\r\n\r\n", IO_TIMEOUT));
            assert!(head.starts_with("HTTP/1.1 200 OK\r\n"), "{path}: {head}");
            c.silent(Duration::from_millis(200));
            // The connection goes on.
            c.send(&get("/plain"));
            let next = text(&c.until(b"plain", IO_TIMEOUT));
            assert!(next.starts_with("HTTP/1.1 200 OK\r\n"), "{path}: {next}");
        }
        wait_state(&s, r#""head_closed":true"#);
    }
}

#[test]
fn a_slow_reader_pauses_the_generator_without_holding_up_the_worker() {
    for s in [single(), pooled()] {
        for (path, key) in [("/big", "big_parts"), ("/abig", "abig_parts")] {
            let mut slow = Raw::open(&s);
            slow.send(&get(path));
            slow.until(b"\r\n\r\n", IO_TIMEOUT);
            // The stream fills the socket and the write buffer, then pauses.
            thread::sleep(Duration::from_millis(300));
            let started = Instant::now();
            let t = s.get("/state").text();
            let took = started.elapsed();
            assert!(
                took < Duration::from_secs(2),
                "{path}: a request waited {took:?} behind a paused stream"
            );
            let parts: u64 = t
                .split(&format!("\"{key}\":"))
                .nth(1)
                .and_then(|rest| rest.split(|c: char| !c.is_ascii_digit()).next())
                .and_then(|n| n.parse().ok())
                .unwrap_or_else(|| panic!("no {key} in {t}"));
            assert!(
                parts < 400,
                "{path}: {parts} parts of 64 KiB produced for a client that reads none"
            );
            // Read now: the generator goes on to its end.
            slow.stream
                .set_read_timeout(Some(Duration::from_secs(30)))
                .expect("timeout");
            let mut read = slow.got.len();
            let mut tail = std::mem::take(&mut slow.got);
            let mut buf = vec![0u8; 256 * 1024];
            while !tail.ends_with(b"\r\n0\r\n\r\n") {
                let n = slow.stream.read(&mut buf).expect("read the rest");
                assert!(n > 0, "{path}: closed before the end");
                read += n;
                tail.extend_from_slice(&buf[..n]);
                tail.drain(..tail.len().saturating_sub(16));
            }
            // 1024 parts of 64 KiB, 9 bytes of chunk framing each, and the end.
            assert_eq!(read, 1024 * (65536 + 9) + 5, "{path}");
        }
        s.get("/plain")
            .assert_ok_body(200, "text/html; charset=utf-8", b"plain");
    }
}
