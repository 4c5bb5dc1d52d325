//! Prometheus metrics on `metrics_address`: after a known number of requests
//! (200s from Python, 404s from the reactor), a scrape parsed by the real
//! `prometheus_client` parser (pinned, in a cached venv) shows them by status,
//! in the duration histogram, with the gauges; scrapes are not counted; other
//! paths are 404. With `workers: 2`, any scrape shows the sum over both worker
//! processes, and a killed worker counts as a restart. Real server on port 0.

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::{fixture, framework_venv, Conn, Project, Server};

/// The `prometheus_client` the test parses with.
const PROMETHEUS_CLIENT: &str = "prometheus_client==0.21.1";

/// Prints every sample as `name{k="v",...} value`, one a line, via the parser.
const PARSE: &str = r#"
import sys
from prometheus_client.parser import text_string_to_metric_families
for family in text_string_to_metric_families(sys.stdin.read()):
    for s in family.samples:
        labels = ",".join(f'{k}="{v}"' for k, v in sorted(s.labels.items()))
        print(f"{family.type} {s.name}{{{labels}}} {s.value}")
"#;

fn project(extra: &str) -> Project {
    let app = std::fs::read_to_string(fixture("observe/app.py")).expect("fixture app.py");
    let config = format!(
        r#"{{
  "thread_count": 2,
  "metrics_address": "127.0.0.1:0",
  {extra}
  "modules": [
    {{ "path": "/hello", "module": "app", "class": "App", "handler": "hello" }}
  ]
}}"#
    );
    Project::new(&config, &[("app.py", &app)])
}

/// The metrics address from the `Metrics: http://host:port/metrics` line.
fn metrics_addr(server: &Server) -> String {
    let out = server.stdout();
    let line = out
        .lines()
        .find_map(|l| l.strip_prefix("Metrics: http://"))
        .unwrap_or_else(|| panic!("no Metrics: line in\n{out}"));
    line.trim_end_matches("/metrics").to_owned()
}

/// One request on a new connection; the whole answer.
fn fetch(addr: &str, path: &str) -> String {
    try_fetch(addr, path).expect("a metrics answer")
}

fn try_fetch(addr: &str, path: &str) -> std::io::Result<String> {
    let mut s = TcpStream::connect(addr)?;
    s.set_read_timeout(Some(Duration::from_secs(10)))?;
    write!(s, "GET {path} HTTP/1.1\r\nHost: m\r\n\r\n")?;
    let mut answer = String::new();
    s.read_to_string(&mut answer)?;
    Ok(answer)
}

/// Scrapes `/metrics` and parses it with `prometheus_client`: one
/// `type name{labels} value` per sample.
fn scrape(addr: &str) -> Vec<String> {
    parse(&fetch(addr, "/metrics"))
}

/// Checks the head of a `/metrics` answer and parses its body.
fn parse(answer: &str) -> Vec<String> {
    let (head, body) = answer.split_once("\r\n\r\n").expect("a head");
    assert!(head.starts_with("HTTP/1.1 200 OK\r\n"), "{head}");
    assert!(
        head.contains("Content-Type: text/plain; version=0.0.4"),
        "{head}"
    );
    let python: PathBuf = framework_venv("prometheus", &[PROMETHEUS_CLIENT])
        .join("bin")
        .join("python");
    let mut child = Command::new(python)
        .args(["-c", PARSE])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run the parser");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(body.as_bytes())
        .expect("write the page");
    let out = child.wait_with_output().expect("parser output");
    assert!(
        out.status.success(),
        "the parser refused the page:\n{body}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(str::to_owned)
        .collect()
}

/// The value of the sample `type name{labels}`.
fn value(samples: &[String], key: &str) -> f64 {
    let prefix = format!("{key} ");
    samples
        .iter()
        .find_map(|s| s.strip_prefix(&prefix))
        .unwrap_or_else(|| panic!("no {key} in {samples:#?}"))
        .parse()
        .expect("a number")
}

/// `ok` GET /hello (200) and `missing` GET /nope (404), each on a new connection.
fn send(server: &Server, ok: usize, missing: usize) {
    for _ in 0..ok {
        assert_eq!(server.get("/hello").status, 200);
    }
    for _ in 0..missing {
        assert_eq!(server.get("/nope").status, 404);
    }
}

/// Scrapes until `done` holds for the samples (reactors publish as they
/// answer and as connections close, which may lag the client by a moment).
fn scrape_until(addr: &str, done: impl Fn(&[String]) -> bool) -> Vec<String> {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let samples = scrape(addr);
        if done(&samples) || Instant::now() >= deadline {
            return samples;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

const COUNT: &str = "histogram pyrs_request_duration_seconds_count{}";
const OPEN: &str = "gauge pyrs_connections_open{}";
const QUEUED: &str = "gauge pyrs_python_queue_depth{}";

#[test]
fn counts_requests_by_status_with_durations_and_gauges() {
    let p = project("");
    let server = Server::start(&p.file);
    let addr = metrics_addr(&server);
    send(&server, 5, 3);
    // A connection left open shows in the gauge.
    let mut open = Conn::connect(server.addr());
    assert_eq!(
        open.request(b"GET /hello HTTP/1.1\r\nHost: h\r\n\r\n")
            .status,
        200
    );
    let samples = scrape_until(&addr, |s| {
        value(s, COUNT) == 9.0 && value(s, OPEN) == 1.0 && value(s, QUEUED) == 0.0
    });
    // The queue gauge is published every 100 ms: on a loaded machine it may
    // trail the counters.
    let samples = if value(&samples, QUEUED) == 0.0 {
        samples
    } else {
        scrape_until(&addr, |s| value(s, QUEUED) == 0.0)
    };
    assert_eq!(
        value(&samples, r#"counter pyrs_requests_total{status="200"}"#),
        6.0
    );
    assert_eq!(
        value(&samples, r#"counter pyrs_requests_total{status="404"}"#),
        3.0
    );
    assert_eq!(value(&samples, COUNT), 9.0);
    assert_eq!(
        value(
            &samples,
            r#"histogram pyrs_request_duration_seconds_bucket{le="+Inf"}"#
        ),
        9.0
    );
    // Local answers take far less than 10 s each.
    assert_eq!(
        value(
            &samples,
            r#"histogram pyrs_request_duration_seconds_bucket{le="10"}"#
        ),
        9.0
    );
    assert!(value(&samples, "histogram pyrs_request_duration_seconds_sum{}") < 90.0);
    assert_eq!(value(&samples, OPEN), 1.0);
    assert_eq!(value(&samples, QUEUED), 0.0);
    assert_eq!(value(&samples, "counter pyrs_worker_restarts_total{}"), 0.0);
    assert_eq!(
        value(&samples, "counter pyrs_access_log_dropped_total{}"),
        0.0
    );
    // Scraping again counts nothing more.
    let again = scrape(&addr);
    assert_eq!(
        value(&again, r#"counter pyrs_requests_total{status="200"}"#),
        6.0
    );
    let other = fetch(&addr, "/other");
    assert!(other.starts_with("HTTP/1.1 404 Not Found\r\n"), "{other}");
    drop(open);
}

/// The worker processes of supervisor `pid`.
fn children(pid: i32) -> Vec<i32> {
    std::fs::read_to_string(format!("/proc/{pid}/task/{pid}/children"))
        .unwrap_or_default()
        .split_whitespace()
        .filter_map(|p| p.parse().ok())
        .collect()
}

#[test]
fn one_scrape_sums_every_worker_process() {
    let p = project(r#""workers": 2,"#);
    let server = Server::start(&p.file);
    let addr = metrics_addr(&server);
    // Many connections: SO_REUSEPORT spreads them over both workers.
    send(&server, 20, 10);
    // Every scrape (each on its own connection, so either worker answers) shows
    // the sum.
    for _ in 0..4 {
        let samples = scrape_until(&addr, |s| value(s, COUNT) == 30.0);
        assert_eq!(
            value(&samples, r#"counter pyrs_requests_total{status="200"}"#),
            20.0
        );
        assert_eq!(
            value(&samples, r#"counter pyrs_requests_total{status="404"}"#),
            10.0
        );
    }
    let workers = children(server.pid());
    assert_eq!(workers.len(), 2, "{workers:?}");
    // SAFETY: kill(2) on a worker of the server under test.
    unsafe {
        libc::kill(workers[0], libc::SIGKILL);
    }
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        assert!(Instant::now() < deadline, "no restart counted");
        // A connection that reached the dying worker's queue is reset: try again.
        let Ok(answer) = try_fetch(&addr, "/metrics") else {
            std::thread::sleep(Duration::from_millis(100));
            continue;
        };
        let samples = parse(&answer);
        if value(&samples, "counter pyrs_worker_restarts_total{}") == 1.0 {
            // The dead worker's counts are kept.
            assert_eq!(
                value(&samples, r#"counter pyrs_requests_total{status="200"}"#),
                20.0
            );
            break;
        }
        assert!(
            Instant::now() < deadline,
            "no restart counted: {samples:#?}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}
