//! Deploying without dropping a request: graceful reloads (SIGHUP), worker
//! recycling (`max_requests`, `max_worker_memory_mb`) and the same behind real
//! nginx, each under continuous load from keep-alive and new connections that
//! counts every response that is not a 200 (or never came) as a failure.

mod common;

use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use common::{
    children_of as children, expect_children, version_of, wait_for_version, wait_until, Launch,
    Load, Server, Tally, TempDir,
};

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

/// One of these tests at a time: each runs two or three worker processes, nginx
/// and a load, and starting workers must not wait for another test's CPU (the
/// reload timings are part of what is checked).
fn serial() -> std::sync::MutexGuard<'static, ()> {
    static SERIAL: std::sync::Mutex<()> = std::sync::Mutex::new(());
    SERIAL.lock().unwrap_or_else(|e| e.into_inner())
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

/// Reloads `server` with `version` and checks the timing the issue sets: new
/// code within 2 s, no old worker answering after 3 s, `workers` children again
/// within 5 s. Returns the SIGHUP's time.
fn reload_to(
    server: &Server,
    addr: SocketAddr,
    dir: &TempDir,
    version: &str,
    workers: usize,
    recycling: bool,
) -> Instant {
    let before = children(server.pid());
    dir.write("version.txt", version);
    let sent = Instant::now();
    server.signal(libc::SIGHUP);
    let took = wait_for_version(addr, version, Duration::from_secs(2));
    eprintln!("{version} answered {} ms after SIGHUP", took.as_millis());
    let within = Duration::from_secs(5).saturating_sub(sent.elapsed());
    if recycling {
        // Workers recycled by `max_requests` come and go all along, so the
        // count may be one or two above `workers` at any moment: what must
        // hold is that every worker from before the reload is gone. A
        // successor that was still starting when the reload came is retired
        // too, but only exits once it is up and has drained: its start-up is
        // added to the 5 s, so it gets 10 (CI saw 4.7 s not enough).
        wait_until(
            Duration::from_secs(10).saturating_sub(sent.elapsed()),
            || format!("before {before:?}, now {:?}", children(server.pid())),
            || {
                let now = children(server.pid());
                now.len() >= workers && now.iter().all(|p| !before.contains(p))
            },
        );
    } else {
        let now = expect_children(server.pid(), workers, within);
        assert!(
            now.iter().all(|p| !before.contains(p)),
            "every worker was replaced: before {before:?}, after {now:?}"
        );
    }
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
    let _serial = serial();
    let dir = TempDir::new("reload");
    let project = project(&dir, r#""workers": 2,"#);
    let server = start(&project, &[]);
    let addr = server.addr();
    expect_children(server.pid(), 2, Duration::from_secs(5));
    let load = Load::start(addr, 6, 2);
    thread::sleep(Duration::from_millis(500));
    let mut reloads = Vec::new();
    for version in ["v2", "v3", "v4"] {
        reloads.push((reload_to(&server, addr, &dir, version, 2, false), version));
        thread::sleep(
            Duration::from_millis(3200)
                .saturating_sub(reloads.last().map_or(Duration::ZERO, |r| r.0.elapsed())),
        );
    }
    thread::sleep(Duration::from_millis(300));
    let tally = Tally::expect_clean(load, "three reloads");
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
    let _serial = serial();
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
    reload_to(&server, addr, &dir, "v2", 2, false);
    Tally::expect_clean(load, "failed reloads");
}

#[test]
fn workers_past_max_requests_are_replaced_without_a_failed_request() {
    let _serial = serial();
    let dir = TempDir::new("recycle");
    let project = project(
        &dir,
        r#""workers": 2, "max_requests": 300, "max_requests_jitter": 50,"#,
    );
    let server = start(&project, &[]);
    let addr = server.addr();
    let first = expect_children(server.pid(), 2, Duration::from_secs(5));
    let load = Load::start(addr, 4, 2);
    wait_until(
        Duration::from_secs(20),
        || server.stderr(),
        || server.stderr().matches("served its max_requests").count() >= 3,
    );
    let tally = Tally::expect_clean(load, "recycling");
    let now = expect_children(server.pid(), 2, Duration::from_secs(5));
    assert_ne!(now, first);
    let pids: std::collections::BTreeSet<_> = tally.seen.iter().map(|s| s.body.clone()).collect();
    assert!(
        pids.len() >= 3,
        "answers came from successive workers: {pids:?}"
    );
}

#[test]
fn a_worker_past_max_worker_memory_mb_is_replaced() {
    let _serial = serial();
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
    // The big worker is replaced; the other stays.
    wait_until(
        Duration::from_secs(10),
        || server.stderr(),
        || {
            children(server.pid())
                .iter()
                .filter(|p| first.contains(p))
                .count()
                == 1
        },
    );
    thread::sleep(Duration::from_millis(300));
    Tally::expect_clean(load, "memory recycling");
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
    /// SIGTERM, so the master stops its workers (SIGKILL would orphan them,
    /// still holding the port); SIGKILL only if it has not gone within 5 s.
    fn drop(&mut self) {
        // SAFETY: kill(2) on our own child's pid; no memory is involved.
        unsafe { libc::kill(self.child.id() as i32, libc::SIGTERM) };
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            thread::sleep(Duration::from_millis(20));
        }
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
        reloads.push((reload_to(server, addr, dir, version, 2, true), version));
        thread::sleep(
            Duration::from_millis(3200)
                .saturating_sub(reloads.last().map_or(Duration::ZERO, |r| r.0.elapsed())),
        );
    }
    // max_requests recycles workers all along; wait for one more.
    let recycled = server.stderr().matches("served its max_requests").count();
    wait_until(
        Duration::from_secs(20),
        || server.stderr(),
        || server.stderr().matches("served its max_requests").count() > recycled,
    );
    thread::sleep(Duration::from_millis(500));
    let tally = Tally::expect_clean(load, "behind nginx");
    // With the load gone recycling stops, and the count settles at `workers`.
    expect_children(server.pid(), 2, Duration::from_secs(5));
    for (at, version) in &reloads {
        assert_no_old_answers(&tally, *at, version);
    }
    assert_eq!(version_of(&tally.seen.last().expect("answers").body), "v3");
}

#[test]
fn behind_nginx_reloads_and_recycling_cause_no_502() {
    let _serial = serial();
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
    let _serial = serial();
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

#[test]
fn a_reload_may_change_the_number_of_workers() {
    let _serial = serial();
    let dir = TempDir::new("reload-shape");
    let project = project(&dir, r#""workers": 2,"#);
    let server = start(&project, &[]);
    let addr = server.addr();
    expect_children(server.pid(), 2, Duration::from_secs(5));
    let text = std::fs::read_to_string(&project).expect("project");
    std::fs::write(&project, text.replace("\"workers\": 2,", "\"workers\": 3,")).expect("write");
    reload_to(&server, addr, &dir, "v2", 3, false);
    std::fs::write(
        &project,
        text.replace("\"workers\": 2,", "\"workers\": 1, \"thread_count\": 1,"),
    )
    .expect("write");
    reload_to(&server, addr, &dir, "v3", 1, false);
    assert!(
        server.stderr().contains("new sockets"),
        "{}",
        server.stderr()
    );
    // The port stayed the same (it was 0 in the file: the one picked at startup).
    wait_for_version(addr, "v3", Duration::from_secs(2));
}
