//! Deploying without dropping a request: graceful reloads (SIGHUP), worker
//! recycling (`max_requests`, `max_worker_memory_mb`) and the same behind real
//! nginx, each under continuous load from keep-alive and new connections that
//! counts every response that is not a 200 (or never came) as a failure.

mod common;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use common::{Launch, Server, TempDir};

/// The app every test reloads: answers `VERSION PID`, where VERSION is read
/// from `version.txt` when the module is imported.
const APP: &str = r#"
import os
HERE = os.path.dirname(os.path.abspath(__file__))
with open(os.path.join(HERE, "version.txt")) as f:
    VERSION = f.read().strip()
HOARD = []

class App:
    def get(self, request):
        return f"{VERSION} {os.getpid()}"

    def grow(self, request):
        HOARD.append(bytearray(256 * 1024 * 1024))
        return "grown"
"#;

fn project(dir: &TempDir, extra: &str) -> PathBuf {
    dir.write("app.py", APP);
    dir.write("version.txt", "v1");
    dir.write(
        "project.pyrs",
        &format!(
            r#"{{
  "listen_backlog": 1024,
  "shutdown_timeout": 5,
  {extra}
  "modules": [
    {{ "path": "/", "module": "app", "class": "App", "handler": "get" }},
    {{ "path": "/grow", "module": "app", "class": "App", "handler": "grow" }}
  ]
}}"#
        ),
    )
}

fn start(project: &Path, args: &[&str]) -> Server {
    Server::start_with(
        project,
        Launch {
            args: args.iter().map(|s| s.to_string()).collect(),
            ..Launch::default()
        },
    )
}

/// The supervisor's live children, from `/proc`.
fn children(pid: i32) -> Vec<i32> {
    std::fs::read_to_string(format!("/proc/{pid}/task/{pid}/children"))
        .unwrap_or_default()
        .split_whitespace()
        .filter_map(|p| p.parse().ok())
        .collect()
}

/// Waits up to `within` for the supervisor to have exactly `n` children.
fn expect_children(pid: i32, n: usize, within: Duration) -> Vec<i32> {
    let deadline = Instant::now() + within;
    loop {
        let now = children(pid);
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

/// One response the load saw: when it arrived and its body.
struct Seen {
    at: Instant,
    body: String,
}

/// What one load thread saw.
#[derive(Default)]
struct Tally {
    seen: Vec<Seen>,
    latencies: Vec<Duration>,
    failures: Vec<String>,
}

/// Clients that keep requests flowing until stopped.
struct Load {
    stop: Arc<AtomicBool>,
    threads: Vec<thread::JoinHandle<Tally>>,
}

impl Load {
    /// `keepalive` clients reusing their connection (reconnecting when told
    /// `Connection: close`) and `fresh` clients opening one per request.
    fn start(addr: SocketAddr, keepalive: usize, fresh: usize) -> Load {
        let stop = Arc::new(AtomicBool::new(false));
        let threads = (0..keepalive + fresh)
            .map(|i| {
                let stop = stop.clone();
                thread::spawn(move || client(addr, i < keepalive, &stop))
            })
            .collect();
        Load { stop, threads }
    }

    fn finish(self) -> Tally {
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
    fn assert_no_failures(&self, what: &str) {
        assert!(
            self.failures.is_empty(),
            "{what}: {} of {} requests failed; first: {:?}",
            self.failures.len(),
            self.seen.len() + self.failures.len(),
            &self.failures[..self.failures.len().min(5)]
        );
    }

    fn percentile(&self, p: f64) -> Duration {
        if self.latencies.is_empty() {
            return Duration::ZERO;
        }
        let i = ((self.latencies.len() as f64 - 1.0) * p).round() as usize;
        self.latencies[i]
    }

    /// One line for the test log (and `bench/RESULTS.md`).
    fn report(&self, what: &str) {
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
fn read_response(stream: &mut TcpStream, buf: &mut Vec<u8>) -> Result<(u16, String, bool), String> {
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

fn connect(addr: SocketAddr) -> Result<TcpStream, String> {
    let stream = TcpStream::connect_timeout(&addr, Duration::from_secs(5))
        .map_err(|e| format!("connect: {e}"))?;
    let _ = stream.set_nodelay(true);
    stream
        .set_read_timeout(Some(Duration::from_secs(5)))
        .map_err(|e| e.to_string())?;
    Ok(stream)
}

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

fn version_of(body: &str) -> &str {
    body.split(' ').next().unwrap_or_default()
}

/// Waits up to `within` for `addr` to answer `version` (on a new connection).
fn wait_for_version(addr: SocketAddr, version: &str, within: Duration) -> Duration {
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

/// Reloads `server` with `version` and checks the timing the issue sets: new
/// code within 2 s, no old worker answering after 3 s, `workers` children again
/// within 5 s. Returns the SIGHUP's time.
fn reload_to(
    server: &Server,
    addr: SocketAddr,
    dir: &TempDir,
    version: &str,
    workers: usize,
) -> Instant {
    let before = children(server.pid());
    dir.write("version.txt", version);
    let sent = Instant::now();
    server.signal(libc::SIGHUP);
    let took = wait_for_version(addr, version, Duration::from_secs(2));
    eprintln!("{version} answered {} ms after SIGHUP", took.as_millis());
    let now = expect_children(
        server.pid(),
        workers,
        Duration::from_secs(5).saturating_sub(sent.elapsed()),
    );
    assert!(
        now.iter().all(|p| !before.contains(p)),
        "every worker was replaced: before {before:?}, after {now:?}"
    );
    sent
}

/// Checks that nothing answered with an older version than the one reloaded
/// to at `at`, from 3 s after it on.
fn assert_no_old_answers(tally: &Tally, at: Instant, version: &str) {
    let late = at + Duration::from_secs(3);
    let stale: Vec<_> = tally
        .seen
        .iter()
        .filter(|s| s.at >= late && version_of(&s.body) < version)
        .map(|s| s.body.as_str())
        .collect();
    assert!(
        stale.is_empty(),
        "old workers answered 3 s after the reload to {version}: {:?}",
        &stale[..stale.len().min(3)]
    );
}

#[test]
fn three_reloads_in_a_row_lose_no_request() {
    let dir = TempDir::new("reload");
    let project = project(&dir, r#""workers": 2,"#);
    let server = start(&project, &[]);
    let addr = server.addr();
    expect_children(server.pid(), 2, Duration::from_secs(5));
    let load = Load::start(addr, 6, 2);
    thread::sleep(Duration::from_millis(500));
    let mut reloads = Vec::new();
    for version in ["v2", "v3", "v4"] {
        reloads.push((reload_to(&server, addr, &dir, version, 2), version));
        thread::sleep(
            Duration::from_millis(3200)
                .saturating_sub(reloads.last().map_or(Duration::ZERO, |r| r.0.elapsed())),
        );
    }
    thread::sleep(Duration::from_millis(300));
    let tally = load.finish();
    tally.report("three reloads");
    tally.assert_no_failures("three reloads");
    for (at, version) in &reloads {
        assert_no_old_answers(&tally, *at, version);
    }
    assert!(
        tally.seen.len() > 200,
        "the load kept going: {}",
        tally.seen.len()
    );
    assert!(
        server.stderr().matches("pyrs: reloaded in").count() == 3,
        "{}",
        server.stderr()
    );
}

#[test]
fn a_reload_that_fails_keeps_the_old_workers_serving() {
    let dir = TempDir::new("reload-fail");
    let project = project(&dir, r#""workers": 2,"#);
    let server = start(&project, &[]);
    let addr = server.addr();
    let first = expect_children(server.pid(), 2, Duration::from_secs(5));
    let load = Load::start(addr, 2, 1);

    // New code that does not import.
    dir.write("app.py", "def broken(:\n");
    server.signal(libc::SIGHUP);
    assert!(
        server.wait_stderr("the running workers keep serving", Duration::from_secs(10)),
        "{}",
        server.stderr()
    );
    assert!(
        server.stderr().contains("SyntaxError"),
        "the traceback is shown: {}",
        server.stderr()
    );
    expect_children(server.pid(), 2, Duration::from_secs(5));
    assert_eq!(children(server.pid()), first, "the old workers stay");

    // A project file that does not load.
    dir.write("app.py", APP);
    let good = std::fs::read_to_string(&project).expect("project");
    std::fs::write(
        &project,
        good.replace("\"workers\": 2,", "\"workers\": 2, \"thread_count\": 0,"),
    )
    .expect("write");
    server.signal(libc::SIGHUP);
    assert!(
        server.wait_stderr("thread_count", Duration::from_secs(5)),
        "{}",
        server.stderr()
    );
    assert!(
        server.stderr().contains("project.pyrs:"),
        "names the file: {}",
        server.stderr()
    );
    assert_eq!(children(server.pid()), first, "the old workers stay");

    // Fixed: the next reload takes over.
    std::fs::write(&project, good).expect("write");
    reload_to(&server, addr, &dir, "v2", 2);
    let tally = load.finish();
    tally.report("failed reloads");
    tally.assert_no_failures("failed reloads");
}

#[test]
fn workers_past_max_requests_are_replaced_without_a_failed_request() {
    let dir = TempDir::new("recycle");
    let project = project(
        &dir,
        r#""workers": 2, "max_requests": 300, "max_requests_jitter": 50,"#,
    );
    let server = start(&project, &[]);
    let addr = server.addr();
    let first = expect_children(server.pid(), 2, Duration::from_secs(5));
    let load = Load::start(addr, 4, 2);
    let deadline = Instant::now() + Duration::from_secs(20);
    while server.stderr().matches("served its max_requests").count() < 3 {
        assert!(
            Instant::now() < deadline,
            "no recycling: {}",
            server.stderr()
        );
        thread::sleep(Duration::from_millis(50));
    }
    let tally = load.finish();
    tally.report("recycling");
    tally.assert_no_failures("recycling");
    let now = expect_children(server.pid(), 2, Duration::from_secs(5));
    assert_ne!(now, first);
    let pids: std::collections::BTreeSet<_> = tally.seen.iter().map(|s| s.body.clone()).collect();
    assert!(
        pids.len() >= 4,
        "answers came from successive workers: {pids:?}"
    );
}

#[test]
fn a_worker_past_max_worker_memory_mb_is_replaced() {
    let dir = TempDir::new("memory");
    let project = project(&dir, r#""workers": 2, "max_worker_memory_mb": 200,"#);
    let server = start(&project, &[]);
    let addr = server.addr();
    let first = expect_children(server.pid(), 2, Duration::from_secs(5));
    let load = Load::start(addr, 2, 1);
    thread::sleep(Duration::from_millis(300));
    // 256 MiB in whichever worker gets it.
    server.get("/grow").assert_basics(200);
    assert!(
        server.wait_stderr("over max_worker_memory_mb", Duration::from_secs(10)),
        "{}",
        server.stderr()
    );
    let deadline = Instant::now() + Duration::from_secs(10);
    while children(server.pid())
        .iter()
        .filter(|p| first.contains(p))
        .count()
        > 1
    {
        assert!(
            Instant::now() < deadline,
            "the big worker was not replaced: {}",
            server.stderr()
        );
        thread::sleep(Duration::from_millis(50));
    }
    thread::sleep(Duration::from_millis(300));
    let tally = load.finish();
    tally.report("memory recycling");
    tally.assert_no_failures("memory recycling");
    expect_children(server.pid(), 2, Duration::from_secs(5));
}

/// A free TCP port on 127.0.0.1 (for nginx, which cannot print the one it got).
fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

fn nginx_binary() -> PathBuf {
    [
        "/usr/sbin/nginx",
        "/usr/local/sbin/nginx",
        "/usr/local/nginx/sbin/nginx",
    ]
    .iter()
    .map(PathBuf::from)
    .find(|p| p.exists())
    .or_else(|| {
        let out = Command::new("sh")
            .args(["-c", "command -v nginx"])
            .output()
            .ok()?;
        let path = String::from_utf8(out.stdout).ok()?;
        (!path.trim().is_empty()).then(|| PathBuf::from(path.trim()))
    })
    .expect("nginx is needed for this test: apt-get install nginx (.ci/run installs it)")
}

/// nginx in front of `upstream`, from `examples/deploy/nginx.conf`'s settings.
struct Nginx {
    child: Child,
    port: u16,
}

impl Nginx {
    fn start(dir: &TempDir, upstream: &str) -> Nginx {
        let port = free_port();
        let root = dir.join("nginx");
        std::fs::create_dir_all(root.join("tmp")).expect("nginx dir");
        // Root's nginx workers would run as nobody, who may not open the socket.
        let user = if unsafe { libc::geteuid() } == 0 {
            "user root;"
        } else {
            ""
        };
        let site = std::fs::read_to_string(common::repo_root().join("examples/deploy/nginx.conf"))
            .expect("examples/deploy/nginx.conf");
        // The example's upstream and listen lines, pointed at this test's.
        let site = site
            .replace("server 127.0.0.1:8000;", &format!("server {upstream};"))
            .replace("listen 80;", &format!("listen 127.0.0.1:{port};"))
            .replace("server_name example.com;", "server_name _;");
        let tmp = root.join("tmp");
        let tmp = tmp.display();
        let conf = format!(
            "{user}\nworker_processes 1;\ndaemon off;\npid {root}/nginx.pid;\nerror_log {root}/error.log;\n\
             events {{ worker_connections 1024; }}\n\
             http {{\n  access_log off;\n  client_body_temp_path {tmp};\n  proxy_temp_path {tmp};\n  \
             fastcgi_temp_path {tmp};\n  uwsgi_temp_path {tmp};\n  scgi_temp_path {tmp};\n{site}\n}}\n",
            root = root.display()
        );
        let conf_path = root.join("nginx.conf");
        std::fs::write(&conf_path, conf).expect("nginx.conf");
        let child = Command::new(nginx_binary())
            .arg("-c")
            .arg(&conf_path)
            .arg("-p")
            .arg(&root)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("start nginx");
        let deadline = Instant::now() + Duration::from_secs(10);
        while TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(Instant::now() < deadline, "nginx did not listen on {port}");
            thread::sleep(Duration::from_millis(20));
        }
        Nginx { child, port }
    }

    fn addr(&self) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], self.port))
    }
}

impl Drop for Nginx {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Two reloads and a recycled worker behind nginx: no 502, no failure.
fn behind_nginx(server: &Server, nginx: &Nginx, dir: &TempDir) {
    let addr = nginx.addr();
    wait_for_version(addr, "v1", Duration::from_secs(5));
    let load = Load::start(addr, 6, 2);
    thread::sleep(Duration::from_millis(500));
    let mut reloads = Vec::new();
    for version in ["v2", "v3"] {
        reloads.push((reload_to(server, addr, dir, version, 2), version));
        thread::sleep(
            Duration::from_millis(3200)
                .saturating_sub(reloads.last().map_or(Duration::ZERO, |r| r.0.elapsed())),
        );
    }
    // max_requests recycles workers all along; wait for one more.
    let recycled = server.stderr().matches("served its max_requests").count();
    let deadline = Instant::now() + Duration::from_secs(20);
    while server.stderr().matches("served its max_requests").count() == recycled {
        assert!(
            Instant::now() < deadline,
            "no worker was recycled: {}",
            server.stderr()
        );
        thread::sleep(Duration::from_millis(50));
    }
    thread::sleep(Duration::from_millis(500));
    let tally = load.finish();
    tally.report("behind nginx");
    tally.assert_no_failures("behind nginx");
    for (at, version) in &reloads {
        assert_no_old_answers(&tally, *at, version);
    }
    assert_eq!(version_of(&tally.seen.last().expect("answers").body), "v3");
}

#[test]
fn behind_nginx_reloads_and_recycling_cause_no_502() {
    let dir = TempDir::new("nginx");
    let project = project(
        &dir,
        r#""workers": 2, "max_requests": 2000, "max_requests_jitter": 200,"#,
    );
    let server = start(&project, &[]);
    let nginx = Nginx::start(&dir, &format!("127.0.0.1:{}", server.port));
    behind_nginx(&server, &nginx, &dir);
}

#[test]
fn behind_nginx_over_a_unix_socket() {
    let dir = TempDir::new("nginx-unix");
    let socket = dir.join("pyrs.sock");
    let project = project(
        &dir,
        r#""workers": 2, "max_requests": 2000, "max_requests_jitter": 200,"#,
    );
    let address = format!("unix:{}", socket.display());
    let server = Server::start_with(
        &project,
        Launch {
            address: Some(address),
            ..Launch::default()
        },
    );
    assert!(socket.exists(), "the socket file is there");
    let nginx = Nginx::start(&dir, &format!("unix:{}", socket.display()));
    behind_nginx(&server, &nginx, &dir);
    drop(nginx);
    let mut server = server;
    server.signal(libc::SIGTERM);
    assert!(server
        .wait_exit(Duration::from_secs(15))
        .is_some_and(|s| s.success()));
    assert!(!socket.exists(), "the socket file is removed at exit");
}
