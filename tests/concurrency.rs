//! `async def` handlers, startup/shutdown hooks, worker processes, and the
//! translator example against a local stand-in upstream.

mod common;

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};

use common::*;

const ASYNC_APP: &str = r#"
import asyncio, os

class Api:
    def __init__(self):
        self.started = False

    async def startup(self):
        await asyncio.sleep(0)
        self.started = True
        print("startup ran", flush=True)

    async def shutdown(self):
        await asyncio.sleep(0)
        print("shutdown ran", flush=True)

    async def sleep(self, request):
        delay = float(request.query.get("d", ["0.5"])[0])
        await asyncio.sleep(delay)
        return f"slept {delay}"

    def sync(self, request):
        return "sync"

    def runs_asyncio(self, request):
        # A synchronous handler may run an event loop of its own, also right
        # after coroutines took their first steps in the same round.
        async def inner():
            await asyncio.sleep(0)
            return "own loop"
        return asyncio.run(inner())

    async def fail(self, request):
        await asyncio.sleep(0.01)
        raise ValueError("async boom")

    async def not_found(self, request):
        await asyncio.sleep(0.01)
        import pyrs
        raise pyrs.HTTPError(404, "async nope")

    async def started_flag(self, request):
        return {"started": self.started}
"#;

fn async_project(extra: &str) -> Project {
    let config = format!(
        r#"{{ {extra}
  "modules": [
    {{ "path": "/sleep", "module": "app", "class": "Api", "handler": "sleep" }},
    {{ "path": "/sync", "module": "app", "class": "Api", "handler": "sync" }},
    {{ "path": "/own-loop", "module": "app", "class": "Api", "handler": "runs_asyncio" }},
    {{ "path": "/fail", "module": "app", "class": "Api", "handler": "fail" }},
    {{ "path": "/missing", "module": "app", "class": "Api", "handler": "not_found" }},
    {{ "path": "/started", "module": "app", "class": "Api", "handler": "started_flag" }}
  ]
}}"#
    );
    Project::new(&config, &[("app.py", ASYNC_APP)])
}

fn get_on(server: &Server, path: &str) -> Response {
    server.get(path)
}

#[test]
fn hundred_sleeping_async_requests_run_concurrently_while_sync_answers() {
    let p = async_project("");
    let server = Server::start(&p.file);
    let addr = server.addr();
    let started = Instant::now();
    let (tx, rx) = mpsc::channel();
    let mut clients = Vec::new();
    for _ in 0..100 {
        let tx = tx.clone();
        clients.push(thread::spawn(move || {
            let mut c = Conn::connect(addr);
            let r = c.request(b"GET /sleep?d=0.5 HTTP/1.1\r\nHost: t\r\n\r\n");
            tx.send((r.status, r.text())).expect("send result");
        }));
    }
    drop(tx);
    // While the coroutines sleep, the synchronous route answers at once.
    thread::sleep(Duration::from_millis(150));
    let sync_started = Instant::now();
    let r = get_on(&server, "/sync");
    let sync_took = sync_started.elapsed();
    assert_eq!(r.status, 200);
    assert_eq!(r.text(), "sync");
    assert!(
        sync_took < Duration::from_millis(400),
        "sync took {sync_took:?}"
    );
    let results: Vec<(u16, String)> = rx.iter().collect();
    for c in clients {
        c.join().expect("client thread");
    }
    let took = started.elapsed();
    assert_eq!(results.len(), 100);
    assert!(results.iter().all(|(s, t)| *s == 200 && t == "slept 0.5"));
    // Sequentially this would take 50 s.
    assert!(took < Duration::from_secs(5), "100 requests took {took:?}");
}

#[test]
fn pipelined_async_responses_keep_request_order() {
    let p = async_project("");
    let server = Server::start(&p.file);
    let mut c = server.connect();
    // The first coroutine finishes last; a 404 and a sync answer sit between.
    c.send(
        b"GET /sleep?d=0.4 HTTP/1.1\r\nHost: t\r\n\r\n\
          GET /sleep?d=0.05 HTTP/1.1\r\nHost: t\r\n\r\n\
          GET /nowhere HTTP/1.1\r\nHost: t\r\n\r\n\
          GET /sync HTTP/1.1\r\nHost: t\r\n\r\n\
          GET /sleep?d=0.2 HTTP/1.1\r\nHost: t\r\n\r\n\
          GET /fail HTTP/1.1\r\nHost: t\r\n\r\n\
          GET /missing HTTP/1.1\r\nHost: t\r\n\r\n",
    );
    let got: Vec<(u16, String)> = (0..7)
        .map(|_| {
            let r = c.read_response();
            (r.status, r.text())
        })
        .collect();
    let want = [
        (200, "slept 0.4"),
        (200, "slept 0.05"),
        (404, "Not Found"),
        (200, "sync"),
        (200, "slept 0.2"),
        (500, "Internal Server Error"),
        (404, "async nope"),
    ];
    for (g, w) in got.iter().zip(want) {
        assert_eq!((g.0, g.1.as_str()), w);
    }
    server.expect_stderr("ValueError: async boom");
    server.expect_stderr("pyrs: error in handler app.Api.fail for GET /fail:");
}

#[test]
fn a_synchronous_handler_after_first_steps_sees_no_running_loop() {
    let p = async_project("");
    let server = Server::start(&p.file);
    let mut c = server.connect();
    // One write: the coroutines' first steps and the synchronous handler
    // come in one batch.
    c.send(
        b"GET /sleep?d=0 HTTP/1.1\r\nHost: t\r\n\r\nGET /own-loop HTTP/1.1\r\nHost: t\r\n\r\n\
          GET /started HTTP/1.1\r\nHost: t\r\n\r\nGET /own-loop HTTP/1.1\r\nHost: t\r\n\r\n",
    );
    for want in ["slept 0.0", "own loop", "{\"started\":true}", "own loop"] {
        let r = c.read_response();
        assert_eq!((r.status, r.text().as_str()), (200, want));
    }
}

#[test]
fn startup_and_shutdown_hooks_run_once_per_instance() {
    let p = async_project("\"shutdown_timeout\": 5,");
    let mut server = Server::start(&p.file);
    assert_eq!(server.stdout().matches("startup ran").count(), 6);
    let r = get_on(&server, "/started");
    assert_eq!(r.text(), "{\"started\":true}");
    server.signal(libc::SIGTERM);
    let status = server.wait_exit(EXIT_TIMEOUT).expect("exits");
    assert!(status.success(), "{status:?}");
    assert!(server.wait_stdout("shutdown ran", Duration::from_secs(2)));
    assert_eq!(server.stdout().matches("shutdown ran").count(), 6);
}

#[test]
fn event_loop_key_selects_the_loop() {
    let p = async_project("\"event_loop\": \"asyncio\",");
    let server = Server::start(&p.file);
    server.expect_stdout("Event loop: asyncio");
    assert_eq!(get_on(&server, "/sleep?d=0.01").text(), "slept 0.01");
}

#[test]
fn uvloop_key_uses_uvloop_or_refuses_to_start_without_it() {
    let has_uvloop = Command::new("python3")
        .args(["-c", "import uvloop"])
        .stderr(Stdio::null())
        .status()
        .map(|s| s.success())
        .unwrap_or(false);
    let p = async_project("\"event_loop\": \"uvloop\",");
    if has_uvloop {
        let server = Server::start(&p.file);
        server.expect_stdout("Event loop: uvloop");
        assert_eq!(get_on(&server, "/sleep?d=0.01").text(), "slept 0.01");
        return;
    }
    let file = p.file.to_string_lossy().into_owned();
    let out = run_pyrs(&[&file, "-a", "127.0.0.1", "-p", "0"], None);
    assert!(!out.status.success());
    assert!(
        out.stderr
            .contains("key \"event_loop\": cannot start the uvloop event loop"),
        "{}",
        out.stderr
    );
    assert!(
        out.stderr.contains("No module named 'uvloop'"),
        "{}",
        out.stderr
    );
}

const PID_APP: &str = r#"
import os

class Api:
    def __init__(self):
        print("instance in", os.getpid(), flush=True)

    def pid(self, request):
        return str(os.getpid())

    def crash(self, request):
        os._exit(3)
"#;

fn pid_project(workers: &str) -> Project {
    let config = format!(
        r#"{{ "workers": {workers}, "thread_count": 1, "modules": [
    {{ "path": "/pid", "module": "app", "class": "Api", "handler": "pid" }},
    {{ "path": "/crash", "module": "app", "class": "Api", "handler": "crash" }} ] }}"#
    );
    Project::new(&config, &[("app.py", PID_APP)])
}

/// The worker pids seen over `n` fresh connections.
fn pids(server: &Server, n: usize) -> std::collections::BTreeSet<i32> {
    (0..n)
        .map(|_| {
            let r = get_on(server, "/pid");
            assert_eq!(r.status, 200);
            r.text().parse().expect("a pid")
        })
        .collect()
}

fn alive(pid: i32) -> bool {
    // SAFETY: signal 0 only checks that the process exists.
    unsafe { libc::kill(pid, 0) == 0 }
}

/// The processes whose command line names `needle` (a project's folder).
fn processes_naming(needle: &str) -> Vec<i32> {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<i32>().ok())
        .filter(|pid| {
            std::fs::read(format!("/proc/{pid}/cmdline"))
                .is_ok_and(|c| String::from_utf8_lossy(&c).contains(needle))
        })
        .collect()
}

#[test]
fn workers_still_starting_when_the_supervisor_dies_stop_once_started() {
    // The supervisor is killed outright while its workers import a slow app:
    // their parent-death SIGTERM comes before they handle signals, and must
    // not be lost (they would serve on as orphans, holding the port).
    let app = format!("import time\ntime.sleep(1.5)\n{PID_APP}");
    let config = r#"{ "workers": 2, "thread_count": 1, "shutdown_timeout": 2, "modules": [
    { "path": "/pid", "module": "app", "class": "Api", "handler": "pid" } ] }"#;
    let p = Project::new(config, &[("app.py", &app)]);
    let mut supervisor = Command::new(pyrs_bin())
        .arg(&p.file)
        .args(["-a", "127.0.0.1", "-p", "0"])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn pyrs");
    let folder = p.dir.path.to_string_lossy().into_owned();
    let deadline = Instant::now() + Duration::from_secs(10);
    while processes_naming(&folder).len() < 3 {
        assert!(Instant::now() < deadline, "the workers did not start");
        thread::sleep(Duration::from_millis(20));
    }
    // Well inside the workers' 1.5 s import.
    thread::sleep(Duration::from_millis(300));
    supervisor.kill().expect("kill the supervisor");
    supervisor.wait().expect("reap it");
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let left = processes_naming(&folder);
        if left.is_empty() {
            break;
        }
        if Instant::now() >= deadline {
            for pid in &left {
                // SAFETY: ending this test's own strays.
                unsafe { libc::kill(*pid, libc::SIGKILL) };
            }
            panic!("workers {left:?} outlived their supervisor");
        }
        thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn workers_share_the_port_and_print_startup_lines_once() {
    let p = pid_project("3");
    let server = Server::start(&p.file);
    let seen = pids(&server, 60);
    assert!(seen.len() >= 2, "requests reached only {seen:?}");
    assert!(!seen.contains(&server.pid()));
    let out = server.stdout();
    for line in [
        "Starting pyrs server...",
        "Added route /pid",
        "Listening...",
        "Workers: 3",
    ] {
        assert_eq!(out.matches(line).count(), 1, "{line:?} in\n{out}");
    }
    assert_eq!(out.matches("instance in").count(), 6, "{out}");
}

#[test]
fn crashed_worker_is_replaced_and_sigterm_stops_all() {
    let p = pid_project("2");
    let mut server = Server::start_args(&p.file, &["--workers", "2"]);
    let before = pids(&server, 40);
    let mut c = server.connect();
    c.send(b"GET /crash HTTP/1.1\r\nHost: t\r\n\r\n");
    c.expect_eof();
    assert!(server.wait_stderr(
        "exited with status 3; restarting it",
        Duration::from_secs(5)
    ));
    // The service keeps answering, and a new worker takes the dead one's place.
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut after = pids(&server, 40);
    while after.len() < 2 && Instant::now() < deadline {
        thread::sleep(Duration::from_millis(100));
        after = pids(&server, 40);
    }
    assert_eq!(after.len(), 2, "{after:?}");
    assert!(
        after.difference(&before).count() >= 1,
        "{before:?} {after:?}"
    );
    server.signal(libc::SIGTERM);
    let status = server.wait_exit(EXIT_TIMEOUT).expect("exits");
    assert!(status.success(), "{status:?}");
    thread::sleep(Duration::from_millis(200));
    for pid in after {
        assert!(!alive(pid), "worker {pid} outlived the supervisor");
    }
}

#[test]
fn worker_that_cannot_import_fails_the_start() {
    let config = r#"{ "workers": 2, "modules": [
    { "path": "/", "module": "missing_module", "class": "Api", "handler": "h" } ] }"#;
    let p = Project::new(config, &[]);
    let file = p.file.to_string_lossy().into_owned();
    let started = Instant::now();
    let out = run_pyrs(&[&file, "-a", "127.0.0.1", "-p", "0"], None);
    assert!(!out.status.success());
    assert!(started.elapsed() < Duration::from_secs(15));
    assert!(
        out.stderr
            .contains("cannot import module \"missing_module\""),
        "{}",
        out.stderr
    );
    assert!(out.stderr.contains("failed to start"), "{}", out.stderr);
}

/// A stand-in translation service: answers after `delay` seconds.
struct Upstream {
    child: Child,
    port: u16,
}

impl Drop for Upstream {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

const UPSTREAM: &str = r#"
import http.server, json, sys, time, urllib.parse
delay = float(sys.argv[1])
class H(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    def do_GET(self):
        q = urllib.parse.parse_qs(urllib.parse.urlsplit(self.path).query)
        time.sleep(delay)
        body = json.dumps({"text": ["[fr] " + q["text"][0]]}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)
    def log_message(self, *a):
        pass
s = http.server.ThreadingHTTPServer(("127.0.0.1", 0), H)
print(s.server_address[1], flush=True)
s.serve_forever()
"#;

fn upstream(delay: f64) -> Upstream {
    let mut child = Command::new("python3")
        .args(["-c", UPSTREAM, &delay.to_string()])
        .stdout(Stdio::piped())
        .stdin(Stdio::null())
        .spawn()
        .expect("python3 runs");
    let mut line = String::new();
    BufReader::new(child.stdout.take().expect("stdout"))
        .read_line(&mut line)
        .expect("upstream prints its port");
    let port = line.trim().parse().expect("a port");
    Upstream { child, port }
}

#[test]
fn translator_example_awaits_a_slow_upstream_without_blocking() {
    let up = upstream(0.5);
    let mut server = Server::start_with(
        &example("translator"),
        Launch {
            env: vec![(
                "TRANSLATOR_UPSTREAM".into(),
                format!("http://127.0.0.1:{}", up.port).into(),
            )],
            ..Launch::default()
        },
    );
    let addr = server.addr();
    let started = Instant::now();
    let workers: Vec<_> = (0..10)
        .map(|i| {
            thread::spawn(move || {
                let mut c = Conn::connect(addr);
                let req = format!("GET /translate?text=hello{i} HTTP/1.1\r\nHost: t\r\n\r\n");
                c.request(req.as_bytes())
            })
        })
        .collect();
    thread::sleep(Duration::from_millis(100));
    let quick = Instant::now();
    assert_eq!(server.get("/health").text(), "ok");
    assert!(quick.elapsed() < Duration::from_millis(300));
    for (i, w) in workers.into_iter().enumerate() {
        let r = w.join().expect("client");
        assert_eq!(r.status, 200);
        assert_eq!(
            r.text(),
            format!("{{\"text\":\"hello{i}\",\"translation\":\"[fr] hello{i}\"}}")
        );
    }
    // Ten 0.5 s upstream calls one after another would take 5 s.
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "{:?}",
        started.elapsed()
    );
    assert_eq!(server.get("/translate").status, 400);
    drop(up);
    assert_eq!(server.get("/translate?text=x").status, 502);
    server.signal(libc::SIGTERM);
    assert!(server.wait_exit(EXIT_TIMEOUT).is_some_and(|s| s.success()));
}
