//! Request bodies too large to hold: past 1 MiB a body reaches its WSGI or
//! ASGI app as it arrives, the reactor reading no further ahead of the app than
//! a few MiB. A 1 GiB upload (`Content-Length` and chunked) hashed by a Flask
//! and by a FastAPI route with `max_body_size` 2 GiB, the server's peak memory
//! (`VmHWM`) staying under [`RSS_BOUND`]; raw WSGI (`read(n)`, `readline`,
//! iteration) and ASGI (`more_body` events) apps reading in parts; a client
//! leaving mid-upload (`OSError` in WSGI, `http.disconnect` in ASGI; others
//! are served meanwhile); an app that answers without reading, followed by a
//! pipelined request (the unread body is skipped, never parsed as requests);
//! bodies over `max_body_size` answered 413; a stalled upload timed out (408,
//! the app hears of it); `Expect: 100-continue` before a streamed body; a
//! client held back while its app reads nothing. Bodies are made on the fly from a
//! repeated 1 MiB block, never stored. Uses `tests/fixtures/uploads`.

mod common;

use std::io::{self, Write};
use std::net::TcpStream;
use std::process::Command;
use std::sync::OnceLock;
use std::thread;
use std::time::{Duration, Instant};

use common::{
    embedded_python, fixture, framework_venv, get, run_to_exit, Conn, Launch, Project, Response,
    Server, FASTAPI, FLASK, MIB,
};

/// Size of the block bodies repeat.
const BLOCK: usize = 1 << 20;
/// One GiB.
const GIB: u64 = 1 << 30;
/// The server's peak resident memory after a 1 GiB upload, in KiB. Python
/// with Flask or FastAPI imported takes about 40 to 60 MiB; buffering the
/// body whole would take more than 1 GiB.
const RSS_BOUND: u64 = 200 * MIB;
/// A 1 GiB upload must be hashed within this, in a debug build on a loaded
/// 2-core machine (about 5 s for WSGI and 15 s for ASGI when quiet).
const GIB_DEADLINE: Duration = Duration::from_secs(50);

/// The block: a fast deterministic pattern (Knuth's multiplicative hash of
/// each byte's index), the same as [`PATTERN_PY`] makes.
fn block() -> &'static [u8] {
    static BLOCK_BYTES: OnceLock<Vec<u8>> = OnceLock::new();
    BLOCK_BYTES.get_or_init(|| {
        (0..BLOCK as u32)
            .map(|i| (i.wrapping_mul(2_654_435_761) >> 24) as u8)
            .collect()
    })
}

/// The same block, in Python.
const PATTERN_PY: &str = "bytes(((i * 2654435761) & 0xffffffff) >> 24 for i in range(1 << 20))";

/// `"<size> <sha256>"` of a body of `size` bytes, as the embedded Python's
/// hashlib computes it: what the apps must answer.
fn expected(size: u64) -> String {
    let program = format!(
        "import hashlib\nb = {PATTERN_PY}\nh = hashlib.sha256()\nn = {size}\n\
         while n >= len(b):\n    h.update(b)\n    n -= len(b)\nh.update(b[:n])\n\
         print({size}, h.hexdigest())"
    );
    let mut cmd = Command::new(&python().program);
    cmd.args(["-c", &program]);
    let out = run_to_exit(cmd);
    assert!(out.status.success(), "{}", out.stderr);
    out.stdout.trim().to_owned()
}

fn python() -> &'static common::EmbeddedPython {
    static PYTHON: OnceLock<common::EmbeddedPython> = OnceLock::new();
    PYTHON.get_or_init(embedded_python)
}

/// Sends `size` bytes of the pattern as a body, chunked (1 MiB chunks) or as is.
fn send_body(stream: &mut TcpStream, size: u64, chunked: bool) -> io::Result<()> {
    let block = block();
    let mut left = size;
    while left > 0 {
        let n = left.min(BLOCK as u64) as usize;
        if chunked {
            stream.write_all(format!("{n:x}\r\n").as_bytes())?;
            stream.write_all(&block[..n])?;
            stream.write_all(b"\r\n")?;
        } else {
            stream.write_all(&block[..n])?;
        }
        left -= n as u64;
    }
    if chunked {
        stream.write_all(b"0\r\n\r\n")?;
    }
    Ok(())
}

/// The head of a `POST path` with a body of `size` bytes.
fn post_head(path: &str, size: u64, chunked: bool) -> String {
    let framing = if chunked {
        "Transfer-Encoding: chunked".to_owned()
    } else {
        format!("Content-Length: {size}")
    };
    format!("POST {path} HTTP/1.1\r\nHost: t\r\nContent-Type: application/octet-stream\r\n{framing}\r\n\r\n")
}

/// A connection that has sent the head of a `size`-byte upload to `path`.
fn start_upload(s: &Server, path: &str, size: u64, chunked: bool) -> Conn {
    let mut c = s.connect();
    // Generous: the app may take a while to read each part on a loaded machine.
    c.stream
        .set_write_timeout(Some(Duration::from_secs(30)))
        .expect("timeout");
    c.send(post_head(path, size, chunked).as_bytes());
    c
}

/// Uploads `size` bytes to `path` and reads the answer; returns it with the
/// time the whole exchange took.
fn upload(s: &Server, path: &str, size: u64, chunked: bool) -> (Response, Duration) {
    let started = Instant::now();
    let mut c = start_upload(s, path, size, chunked);
    send_body(&mut c.stream, size, chunked).expect("send the body");
    let r = c.read_response();
    (r, started.elapsed())
}

/// `VmHWM` (peak resident set) of `pid` in KiB.
fn peak_rss_kib(pid: i32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("read status");
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("a VmHWM line")
}

/// Uploads 1 GiB with `Content-Length` and 1 GiB chunked to `/hash` of a
/// framework app; checks each hash and time, and the server's peak memory.
fn hashes_a_gib_both_ways(s: &Server, name: &str) {
    let want = expected(GIB);
    for chunked in [false, true] {
        let (r, took) = upload(s, "/hash", GIB, chunked);
        r.assert_basics(200);
        assert_eq!(r.text(), want, "{name}, chunked: {chunked}");
        let mib_s = GIB as f64 / (1 << 20) as f64 / took.as_secs_f64();
        eprintln!(
            "{name}: 1 GiB {} in {took:.1?} ({mib_s:.0} MiB/s), peak RSS {} MiB",
            if chunked {
                "chunked"
            } else {
                "with Content-Length"
            },
            peak_rss_kib(s.pid()) / MIB
        );
        assert!(took < GIB_DEADLINE, "{name}: 1 GiB took {took:?}");
    }
    let peak = peak_rss_kib(s.pid());
    assert!(
        peak < RSS_BOUND,
        "{name}: the server's peak RSS was {} MiB after 2 GiB of uploads",
        peak / MIB
    );
}

fn framework(project: &str, venv: &str, requirements: &[&str]) -> Server {
    let venv = framework_venv(venv, requirements);
    Server::start_with(
        &fixture(project),
        Launch {
            env: vec![("VIRTUAL_ENV".into(), venv.into_os_string())],
            ..Launch::default()
        },
    )
}

#[test]
fn flask_hashes_1_gib_uploads_in_bounded_memory() {
    let s = framework("uploads/flask.pyrs", "flask-3.1.3", FLASK);
    hashes_a_gib_both_ways(&s, "Flask");
}

#[test]
fn fastapi_hashes_1_gib_uploads_in_bounded_memory() {
    let s = framework("uploads/fastapi.pyrs", "fastapi-0.165.0", FASTAPI);
    hashes_a_gib_both_ways(&s, "FastAPI");
}

fn raw() -> Server {
    Server::start(&fixture("uploads/raw.pyrs"))
}

#[test]
fn raw_wsgi_reads_a_large_body_in_parts() {
    let s = raw();
    let size = 48 * (1 << 20) + 12_345;
    let want = expected(size);
    for chunked in [false, true] {
        let (r, _) = upload(&s, "/wsgi/hash", size, chunked);
        r.assert_basics(200);
        let text = r.text();
        // read(7), readline(), then read(1 MiB) to the end.
        assert!(
            text.starts_with(&want) && text.contains(" reads="),
            "chunked {chunked}: {text} (want {want})"
        );
    }
    // Iterating wsgi.input yields its lines (the pattern has a '\n' now and then).
    let (r, _) = upload(&s, "/wsgi/lines", 3 << 20, true);
    let text = r.text();
    assert!(text.starts_with(&expected(3 << 20)), "{text}");
    let lines: usize = text
        .rsplit("lines=")
        .next()
        .and_then(|n| n.parse().ok())
        .expect("a line count");
    assert!(lines > 1000, "{text}");
}

#[test]
fn raw_asgi_gets_the_body_in_more_body_events() {
    let s = raw();
    let size = 24 * (1 << 20) + 7;
    let want = expected(size);
    for chunked in [false, true] {
        let (r, _) = upload(&s, "/asgi/hash", size, chunked);
        r.assert_basics(200);
        let text = r.text();
        assert!(text.starts_with(&want), "chunked {chunked}: {text}");
        let events: usize = text
            .rsplit("events=")
            .next()
            .and_then(|n| n.parse().ok())
            .expect("an event count");
        // At most 1 MiB per event: the body came in parts, not whole.
        assert!(events >= 25, "chunked {chunked}: {text}");
    }
    // A small body is still one event, whole.
    let (r, _) = upload(&s, "/asgi/hash", 1000, false);
    assert!(r.text().ends_with(" events=1"), "{}", r.text());
}

/// Starts an upload of 256 MiB to `path`, sends 8 MiB of it and leaves.
/// Meanwhile (the app blocked reading the next part) another request is
/// answered at once.
fn leave_mid_upload(s: &Server, path: &str) {
    let mut c = s.connect();
    c.send(post_head(path, 256 << 20, false).as_bytes());
    send_body(&mut c.stream, 8 << 20, false).expect("send part of the body");
    let started = Instant::now();
    let r = s.get("/wsgi/seen");
    r.assert_basics(200);
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "another request waited {:?} behind a paused upload",
        started.elapsed()
    );
    drop(c);
}

/// Polls `/wsgi/seen` until it mentions `needle`.
fn wait_seen(s: &Server, needle: &str) -> String {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let text = s.get("/wsgi/seen").text();
        if text.contains(needle) || Instant::now() >= deadline {
            return text;
        }
        thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn a_client_leaving_mid_upload_is_an_oserror_in_wsgi_and_a_disconnect_in_asgi() {
    let s = raw();
    leave_mid_upload(&s, "/wsgi/hash");
    let seen = wait_seen(&s, "OSError after");
    assert!(seen.contains("'wsgi', 'OSError after"), "{seen}");
    leave_mid_upload(&s, "/asgi/hash");
    let seen = wait_seen(&s, "disconnect after");
    assert!(seen.contains("'asgi', 'disconnect after"), "{seen}");
    // The server goes on serving uploads.
    let (r, _) = upload(&s, "/wsgi/hash", 2 << 20, false);
    assert!(r.text().starts_with(&expected(2 << 20)), "{}", r.text());
}

/// A 3 MiB body made of requests, which must never be parsed as such.
fn smuggling_body() -> Vec<u8> {
    let smuggled = b"GET /wsgi/ignore/smuggled HTTP/1.1\r\nHost: t\r\n\r\n";
    smuggled.repeat((3 << 20) / smuggled.len() + 1)
}

#[test]
fn an_unread_body_is_skipped_and_the_pipelined_request_answered() {
    let s = raw();
    let body = smuggling_body();
    for app in ["wsgi", "asgi"] {
        for chunked in [false, true] {
            let mut c = s.connect();
            let mut raw =
                post_head(&format!("/{app}/ignore/first"), body.len() as u64, chunked).into_bytes();
            if chunked {
                raw.extend_from_slice(format!("{:x}\r\n", body.len()).as_bytes());
                raw.extend_from_slice(&body);
                raw.extend_from_slice(b"\r\n0\r\n\r\n");
            } else {
                raw.extend_from_slice(&body);
            }
            raw.extend_from_slice(&get(&format!("/{app}/ignore/second")));
            // Sent from a thread: the answer to the first may come before the
            // server has read the whole of its body.
            let mut writer = c.stream.try_clone().expect("clone");
            let sending = thread::spawn(move || writer.write_all(&raw));
            let first = c.read_response();
            first.assert_basics(200);
            // (ASGI's scope path is the whole path, WSGI's PATH_INFO the rest.)
            assert!(first.text().ends_with("/first"), "{app} chunked {chunked}");
            let second = c.read_response();
            second.assert_basics(200);
            assert!(
                second.text().ends_with("/second"),
                "{app} chunked {chunked}"
            );
            sending.join().expect("sender").expect("send");
            // Nothing more: the requests inside the body were not answered.
            c.expect_silence(Duration::from_millis(300));
        }
    }
}

#[test]
fn bodies_over_max_body_size_are_413() {
    let config = r#"{
  "max_body_size": 4194304,
  "modules": [
    { "path": "/wsgi/hash", "app": "raw_apps:wsgi_hash", "interface": "wsgi" },
    { "path": "/asgi/hash", "app": "raw_apps:asgi_hash", "interface": "asgi" }
  ]
}"#;
    let p = Project::new(
        config,
        &[("raw_apps.py", include_str!("fixtures/uploads/raw_apps.py"))],
    );
    let s = Server::start(&p.file);
    for path in ["/wsgi/hash", "/asgi/hash"] {
        // A Content-Length over the limit is refused before any body is read.
        let mut c = s.connect();
        c.send(post_head(path, 5 << 20, false).as_bytes());
        let r = c.read_response();
        r.assert_basics(413);
        assert_eq!(r.header("connection"), Some("close"));
        // A chunked body is refused once it passes the limit, whatever its
        // app was doing with it.
        let mut c = s.connect();
        c.send(post_head(path, 0, true).as_bytes());
        let sent = send_body(&mut c.stream, 5 << 20, true);
        let r = c.read_response();
        r.assert_basics(413);
        assert_eq!(r.header("connection"), Some("close"), "{path}");
        c.expect_eof();
        // (The server may have closed before all of it was sent.)
        let _ = sent;
        // Below the limit all is well.
        let (r, _) = upload(&s, path, 3 << 20, true);
        assert!(r.text().starts_with(&expected(3 << 20)), "{}", r.text());
    }
}

#[test]
fn a_paused_upload_holds_the_client_back_without_buffering() {
    // An app that reads nothing for a while: the client can send only about
    // what the socket buffers and the in-flight bound hold, not the body.
    let config = r#"{
  "max_body_size": 2147483648,
  "python_threads": 2,
  "modules": [
    { "path": "/slow", "app": "slow:app", "interface": "wsgi" }
  ]
}"#;
    let slow = r#"
import hashlib, time


def app(environ, start_response):
    time.sleep(1.5)
    h = hashlib.sha256()
    n = 0
    while True:
        part = environ["wsgi.input"].read(1 << 20)
        if not part:
            break
        h.update(part)
        n += len(part)
    start_response("200 OK", [("Content-Type", "text/plain")])
    return [f"{n} {h.hexdigest()}".encode()]
"#;
    let p = Project::new(config, &[("slow.py", slow)]);
    let s = Server::start(&p.file);
    let size: u64 = 512 << 20;
    let mut c = start_upload(&s, "/slow", size, false);
    let mut writer = c.stream.try_clone().expect("clone");
    let sent = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(0));
    let counter = sent.clone();
    let sending = thread::spawn(move || {
        let block = block();
        let mut left = size;
        while left > 0 {
            // 64 KiB writes, so that the count tells how far the client got.
            let at = ((size - left) % BLOCK as u64) as usize;
            let n = left.min(64 * 1024).min((BLOCK - at) as u64) as usize;
            writer.write_all(&block[at..at + n])?;
            counter.fetch_add(n as u64, std::sync::atomic::Ordering::Relaxed);
            left -= n as u64;
        }
        io::Result::Ok(())
    });
    thread::sleep(Duration::from_millis(1000));
    let before = sent.load(std::sync::atomic::Ordering::Relaxed);
    // Loopback socket buffers take a few MiB at most; the rest waits for the app.
    assert!(
        before < 64 << 20,
        "{} MiB went in while the app read nothing",
        before >> 20
    );
    let r = c.read_response();
    sending.join().expect("sender").expect("send");
    assert_eq!(r.text(), expected(size));
    let peak = peak_rss_kib(s.pid());
    assert!(peak < RSS_BOUND, "peak RSS {} MiB", peak / MIB);
}

#[test]
fn a_stalled_upload_times_out_with_408_and_its_app_hears_of_it() {
    let config = r#"{
  "body_timeout": 1,
  "python_threads": 2,
  "modules": [
    { "path": "/wsgi/hash", "app": "raw_apps:wsgi_hash", "interface": "wsgi" },
    { "path": "/wsgi/seen", "app": "raw_apps:wsgi_seen", "interface": "wsgi" }
  ]
}"#;
    let p = Project::new(
        config,
        &[("raw_apps.py", include_str!("fixtures/uploads/raw_apps.py"))],
    );
    let s = Server::start(&p.file);
    let mut c = s.connect();
    c.send(post_head("/wsgi/hash", 8 << 20, false).as_bytes());
    send_body(&mut c.stream, 2 << 20, false).expect("send part of the body");
    // The client stalls: past body_timeout (swept every 250 ms) it gets 408
    // in place of the app's answer, and the connection closes.
    let started = Instant::now();
    let r = c.read_response();
    r.assert_basics(408);
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "{:?}",
        started.elapsed()
    );
    c.expect_eof();
    let seen = wait_seen(&s, "OSError after");
    assert!(seen.contains("'wsgi', 'OSError after"), "{seen}");
}

#[test]
fn expect_100_continue_is_answered_before_a_streamed_body() {
    let s = raw();
    let size: u64 = 4 << 20;
    let mut c = s.connect();
    let head = post_head("/asgi/hash", size, false)
        .replace("\r\n\r\n", "\r\nExpect: 100-continue\r\n\r\n");
    c.send(head.as_bytes());
    assert_eq!(c.read_exact_bytes(25), b"HTTP/1.1 100 Continue\r\n\r\n");
    send_body(&mut c.stream, size, false).expect("send the body");
    let r = c.read_response();
    r.assert_basics(200);
    assert!(r.text().starts_with(&expected(size)), "{}", r.text());
    // The connection stays usable.
    c.send(&get("/wsgi/seen"));
    c.read_response().assert_basics(200);
}

#[test]
fn an_app_reading_slowly_is_never_taken_for_a_stalled_client() {
    // The app, not the client, holds the body up: first reading nothing, then
    // taking 64 KiB every 100 ms (1 MiB in 1.6 s, past body_timeout, while
    // the reactor waits for room to read again). No 408 may come of it.
    let config = r#"{
  "body_timeout": 1,
  "python_threads": 2,
  "modules": [
    { "path": "/slow", "app": "slow:app", "interface": "wsgi" }
  ]
}"#;
    let slow = r#"
import hashlib, time


def app(environ, start_response):
    time.sleep(1.5)
    h = hashlib.sha256()
    n = 0
    body = environ["wsgi.input"]
    for _ in range(24):
        part = body.read(64 << 10)
        h.update(part)
        n += len(part)
        time.sleep(0.1)
    while True:
        part = body.read(1 << 20)
        if not part:
            break
        h.update(part)
        n += len(part)
    start_response("200 OK", [("Content-Type", "text/plain")])
    return [f"{n} {h.hexdigest()}".encode()]
"#;
    let p = Project::new(config, &[("slow.py", slow)]);
    let s = Server::start(&p.file);
    let size: u64 = 8 << 20;
    let mut c = start_upload(&s, "/slow", size, false);
    let mut writer = c.stream.try_clone().expect("clone");
    let sending = thread::spawn(move || send_body(&mut writer, size, false));
    let r = c.read_response();
    sending.join().expect("sender").expect("send");
    r.assert_basics(200);
    assert_eq!(r.text(), expected(size));
}

#[test]
fn the_access_log_counts_a_streamed_body_as_it_arrived() {
    // The log line of a request whose body streamed to the app (past 1 MiB)
    // gives the body's length, Content-Length or chunked, as for small bodies.
    let dir = common::TempDir::new("upload-log");
    let log = dir.join("access.log");
    let s = Server::start_with(
        &fixture("uploads/raw.pyrs"),
        common::Launch {
            env: vec![
                ("PYRS_ACCESS_LOG".into(), log.clone().into_os_string()),
                (
                    "PYRS_ACCESS_LOG_FORMAT".into(),
                    "$request_method $uri $status $request_body_length".into(),
                ),
            ],
            ..Default::default()
        },
    );
    let size = 5 * (1 << 20) + 3;
    for chunked in [false, true] {
        upload(&s, "/asgi/hash", size, chunked).0.assert_basics(200);
        upload(&s, "/wsgi/hash", size, chunked).0.assert_basics(200);
    }
    upload(&s, "/asgi/hash", 1000, false).0.assert_basics(200);
    // Each upload came on a connection of its own, maybe to another reactor:
    // their lines may reach the file in any order.
    let mut want = vec![
        format!("POST /asgi/hash 200 {size}"),
        format!("POST /wsgi/hash 200 {size}"),
        format!("POST /asgi/hash 200 {size}"),
        format!("POST /wsgi/hash 200 {size}"),
        "POST /asgi/hash 200 1000".to_string(),
    ];
    want.sort();
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let text = std::fs::read_to_string(&log).unwrap_or_default();
        let mut lines: Vec<&str> = text.lines().collect();
        lines.sort();
        if lines == want {
            break;
        }
        assert!(Instant::now() < deadline, "{lines:?} (want {want:?})");
        std::thread::sleep(Duration::from_millis(100));
    }
}
