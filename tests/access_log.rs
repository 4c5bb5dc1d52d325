//! The access log: exact lines (time and duration normalized) for a known
//! sequence of requests — keep-alive, pipelined in order, the reactor's own
//! 404/400/413 answers, a Python handler's 200 with its body size, HEAD, a
//! static file — written to a file, reopened on SIGUSR1 after a rename, written
//! to standard output, a custom `access_log_format` with a header field, and the
//! startup error for an unknown variable. Real server on port 0, raw sockets.

mod common;

use std::path::{Path, PathBuf};
use std::thread;
use std::time::{Duration, Instant};

use common::{fixture, run_pyrs, Conn, Project, Server};

/// A project with `/hello` and `/size` (tests/fixtures/observe/app.py), the
/// static mount `/static/*`, and `extra` top-level keys.
fn project(extra: &str) -> Project {
    let app = std::fs::read_to_string(fixture("observe/app.py")).expect("fixture app.py");
    let public = fixture("observe/public");
    let config = format!(
        r#"{{
  "thread_count": 1,
  "max_body_size": 1024,
  {extra}
  "modules": [
    {{ "path": "/hello", "module": "app", "class": "App", "handler": "hello" }},
    {{ "path": "/size",  "module": "app", "class": "App", "handler": "size" }}
  ],
  "static": [ {{ "path": "/static/*", "dir": "{}" }} ]
}}"#,
        public.display()
    );
    Project::new(&config, &[("app.py", &app)])
}

/// Waits (bounded) until `path` has at least `n` lines; returns them.
fn wait_lines(path: &Path, n: usize) -> Vec<String> {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let text = std::fs::read_to_string(path).unwrap_or_default();
        let lines: Vec<String> = text.lines().map(str::to_owned).collect();
        if lines.len() >= n || Instant::now() >= deadline {
            return lines;
        }
        thread::sleep(Duration::from_millis(20));
    }
}

/// Replaces the `[time]` with `[T]` and the final duration with `D`, after
/// checking their shapes (`01/Dec/2026:07:00:00 +0000`, `0.123`).
fn normalize(line: &str) -> String {
    let open = line.find('[').expect("a [time]");
    let close = line.find(']').expect("a [time]");
    let time = &line[open + 1..close];
    assert_eq!(time.len(), 26, "{line}");
    assert!(time.ends_with(" +0000") && &time[2..3] == "/", "{line}");
    let (rest, duration) = line.rsplit_once(' ').expect("a duration");
    let (secs, ms) = duration.split_once('.').expect("s.mmm");
    assert!(secs.parse::<u64>().is_ok() && ms.len() == 3, "{line}");
    assert!(ms.bytes().all(|b| b.is_ascii_digit()), "{line}");
    format!("{}[T]{} D", &rest[..open], &rest[close + 1..])
}

const HELLO: &[u8] =
    b"GET /hello?b=1 HTTP/1.1\r\nHost: h\r\nUser-Agent: curl/8.0\r\nReferer: http://r/\r\n\r\n";

#[test]
fn logs_one_exact_line_per_request_in_order() {
    let p = project(r#""access_log": "access.log","#);
    let log = p.dir.join("access.log");
    let server = Server::start(&p.file);
    let mut c = server.connect();
    // Keep-alive: two requests one after the other.
    assert_eq!(c.request(HELLO).status, 200);
    assert_eq!(
        c.request(b"HEAD /hello HTTP/1.1\r\nHost: h\r\n\r\n").status,
        200
    );
    // Pipelined: Python, the reactor's 404, a static file, Python, in one write.
    c.send(
        b"GET /hello HTTP/1.1\r\nHost: h\r\n\r\nGET /nope HTTP/1.1\r\nHost: h\r\nUser-Agent: a \"q\"\r\n\r\n\
          GET /static/file.txt HTTP/1.1\r\nHost: h\r\n\r\nPOST /size HTTP/1.1\r\nHost: h\r\nContent-Length: 5\r\n\r\nabcde",
    );
    let statuses: Vec<u16> = (0..4).map(|_| c.read_response().status).collect();
    assert_eq!(statuses, [200, 404, 200, 200]);
    // A body over max_body_size, and garbage: answered by the reactor, then closed.
    let mut big = server.connect();
    let too_large = big.request(b"POST /size HTTP/1.1\r\nHost: h\r\nContent-Length: 5000\r\n\r\n");
    assert_eq!(too_large.status, 413);
    let mut bad = server.connect();
    let garbage = bad.request(b"BAD\x01 / HTTP/1.1\r\n\r\n");
    assert_eq!(garbage.status, 400);
    let lines: Vec<String> = wait_lines(&log, 8).iter().map(|l| normalize(l)).collect();
    let expected = [
        r#"127.0.0.1 - - [T] "GET /hello?b=1 HTTP/1.1" 200 13 "http://r/" "curl/8.0" D"#.to_owned(),
        r#"127.0.0.1 - - [T] "HEAD /hello HTTP/1.1" 200 0 "-" "-" D"#.to_owned(),
        r#"127.0.0.1 - - [T] "GET /hello HTTP/1.1" 200 13 "-" "-" D"#.to_owned(),
        r#"127.0.0.1 - - [T] "GET /nope HTTP/1.1" 404 9 "-" "a \x22q\x22" D"#.to_owned(),
        r#"127.0.0.1 - - [T] "GET /static/file.txt HTTP/1.1" 200 17 "-" "-" D"#.to_owned(),
        r#"127.0.0.1 - - [T] "POST /size HTTP/1.1" 200 5 "-" "-" D"#.to_owned(),
        format!(
            r#"127.0.0.1 - - [T] "-" 413 {} "-" "-" D"#,
            too_large.body.len()
        ),
        format!(
            r#"127.0.0.1 - - [T] "-" 400 {} "-" "-" D"#,
            garbage.body.len()
        ),
    ];
    assert_eq!(lines, expected);
}

#[test]
fn file_log_is_reopened_on_sigusr1() {
    let p = project(r#""access_log": "access.log","#);
    let log = p.dir.join("access.log");
    let rotated: PathBuf = p.dir.join("access.log.1");
    let server = Server::start(&p.file);
    assert_eq!(server.get("/hello").status, 200);
    assert_eq!(wait_lines(&log, 1).len(), 1);
    std::fs::rename(&log, &rotated).expect("rename the log");
    server.signal(libc::SIGUSR1);
    let deadline = Instant::now() + Duration::from_secs(5);
    while !log.exists() {
        assert!(Instant::now() < deadline, "the log was not reopened");
        thread::sleep(Duration::from_millis(20));
    }
    assert_eq!(server.get("/nope").status, 404);
    let new = wait_lines(&log, 1);
    assert_eq!(new.len(), 1);
    assert!(new[0].contains("\"GET /nope HTTP/1.1\" 404 9"), "{new:?}");
    let old = wait_lines(&rotated, 1);
    assert_eq!(old.len(), 1);
    assert!(old[0].contains("\"GET /hello HTTP/1.1\" 200 13"), "{old:?}");
}

#[test]
fn stdout_log() {
    let p = project(r#""access_log": true,"#);
    let server = Server::start(&p.file);
    assert_eq!(server.get("/hello").status, 200);
    assert!(
        server.wait_stdout(
            "\"GET /hello HTTP/1.1\" 200 13 \"-\" \"-\" ",
            Duration::from_secs(5)
        ),
        "stdout:\n{}",
        server.stdout()
    );
}

#[test]
fn custom_format_with_a_header_field() {
    let format = "$request_method $uri $args $server_protocol $status $body_bytes_sent \
                  $request_body_length [$http_x_request_id] $worker $remote_addr:$remote_port $$";
    let p = project(&format!(
        r#""access_log": "access.log", "access_log_format": "{format}","#
    ));
    let log = p.dir.join("access.log");
    let server = Server::start(&p.file);
    let mut c = Conn::connect(server.addr());
    let port = c.local_port();
    let r = c.request(
        b"POST /size?a=b HTTP/1.1\r\nHost: h\r\nX-Request-Id: abc-123\r\nContent-Length: 3\r\n\r\nxyz",
    );
    assert_eq!(r.status, 200);
    assert_eq!(
        c.request(b"GET /hello HTTP/1.1\r\nHost: h\r\n\r\n").status,
        200
    );
    let lines = wait_lines(&log, 2);
    assert_eq!(
        lines,
        [
            format!("POST /size a=b HTTP/1.1 200 3 3 [abc-123] 0 127.0.0.1:{port} $"),
            format!("GET /hello - HTTP/1.1 200 13 0 [-] 0 127.0.0.1:{port} $"),
        ]
    );
}

#[test]
fn unknown_format_variable_is_a_startup_error() {
    let p = project(r#""access_log": true, "access_log_format": "$status $nope","#);
    let out = run_pyrs(&[p.file.to_str().expect("utf-8 path")], None);
    assert!(!out.status.success());
    assert!(out.stderr.contains("access_log_format"), "{}", out.stderr);
    assert!(
        out.stderr.contains("unknown variable $nope"),
        "{}",
        out.stderr
    );
}

#[test]
fn worker_processes_share_the_file_and_reopen_on_sigusr1() {
    let p = project(
        r#""access_log": "access.log", "workers": 2, "access_log_format": "$worker $status","#,
    );
    let log = p.dir.join("access.log");
    let server = Server::start(&p.file);
    for _ in 0..10 {
        assert_eq!(server.get("/nope").status, 404);
    }
    let lines = wait_lines(&log, 10);
    assert_eq!(lines.len(), 10, "{lines:?}");
    assert!(
        lines.iter().all(|l| l == "0 404" || l == "1 404"),
        "{lines:?}"
    );
    std::fs::rename(&log, p.dir.join("access.log.1")).expect("rename the log");
    // The supervisor passes SIGUSR1 on to every worker.
    server.signal(libc::SIGUSR1);
    let deadline = Instant::now() + Duration::from_secs(5);
    while !log.exists() {
        assert!(Instant::now() < deadline, "the log was not reopened");
        thread::sleep(Duration::from_millis(20));
    }
    // Let the second worker reopen too.
    thread::sleep(Duration::from_millis(300));
    for _ in 0..10 {
        assert_eq!(server.get("/hello").status, 200);
    }
    let lines = wait_lines(&log, 10);
    assert_eq!(lines.len(), 10, "{lines:?}");
    assert!(lines.iter().all(|l| l.ends_with(" 200")), "{lines:?}");
}
