//! Test harness shared by the integration tests: starts the real `pyrs` binary
//! on port 0, waits for its `Listening...` line, collects its stdout and stderr
//! in background threads, talks raw HTTP/1.1 over real sockets ([`client`]), and writes
//! throwaway project folders; a server's memory and descriptors are read from
//! `/proc/<pid>/`. Every wait here is bounded; the child is killed when its
//! [`Server`] guard is dropped.

// Each test crate uses a different part of this module.
#![allow(dead_code)]

mod client;
mod load;
mod python;
mod raw;

pub use client::*;
#[allow(unused_imports)]
pub use load::*;
#[allow(unused_imports)]
pub use python::*;
#[allow(unused_imports)]
pub use raw::*;

use std::ffi::OsString;
use std::io::{BufRead, BufReader, Read};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// How long a server may take to print `Listening...`.
pub const STARTUP_TIMEOUT: Duration = Duration::from_secs(20);
/// Read and write timeout of every test socket.
pub const IO_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a process that should fail (or exit) may take to do so.
pub const EXIT_TIMEOUT: Duration = Duration::from_secs(20);

/// The `pyrs` command under test: `$PYRS_BIN` when set (CI points it at the
/// Python package's `pyrs` script in a fresh virtualenv), else the binary cargo
/// built.
pub fn pyrs_bin() -> &'static str {
    static BIN: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    BIN.get_or_init(|| {
        std::env::var("PYRS_BIN").unwrap_or_else(|_| env!("CARGO_BIN_EXE_pyrs").to_owned())
    })
}

/// The repository root.
pub fn repo_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// `tests/fixtures/<rel>`.
pub fn fixture(rel: &str) -> PathBuf {
    repo_root().join("tests").join("fixtures").join(rel)
}

/// `examples/<name>/project.pyrs`.
pub fn example(name: &str) -> PathBuf {
    repo_root().join("examples").join(name).join("project.pyrs")
}

/// Output a background thread keeps appending to.
type Shared = Arc<Mutex<String>>;

fn pump(
    stream: impl Read + Send + 'static,
    into: Shared,
    lines: Option<mpsc::Sender<String>>,
) -> thread::JoinHandle<()> {
    thread::spawn(move || {
        let mut reader = BufReader::new(stream);
        let mut line = Vec::new();
        loop {
            line.clear();
            match reader.read_until(b'\n', &mut line) {
                Ok(0) | Err(_) => break,
                Ok(_) => {
                    let text = String::from_utf8_lossy(&line).into_owned();
                    into.lock().expect("output lock").push_str(&text);
                    if let Some(tx) = &lines {
                        let _ = tx.send(text.trim_end().to_owned());
                    }
                }
            }
        }
    })
}

/// A running `pyrs` process. Killed on drop.
pub struct Server {
    child: Child,
    /// The port printed on the `Port:` line.
    pub port: u16,
    stdout: Shared,
    stderr: Shared,
    exit: Option<ExitStatus>,
    pumps: Vec<thread::JoinHandle<()>>,
}

/// How to start a server beyond the project file.
#[derive(Default)]
pub struct Launch {
    /// Arguments after `project -a 127.0.0.1 -p PORT`.
    pub args: Vec<String>,
    /// Extra environment variables.
    pub env: Vec<(String, OsString)>,
    /// Working directory of the server, when not the test's.
    pub cwd: Option<PathBuf>,
    /// The `-p` value; 0 (let the OS pick) when `None`.
    pub port: Option<u16>,
    /// The `-a` value; `127.0.0.1` when `None` (`unix:PATH` for a Unix socket:
    /// then there is no `Port:` line, and `port` is 0).
    pub address: Option<String>,
}

impl Server {
    /// Starts `pyrs <project> -a 127.0.0.1 -p 0` and waits for `Listening...`.
    pub fn start(project: &Path) -> Server {
        Server::start_with(project, Launch::default())
    }

    /// Like [`Server::start`] with extra arguments.
    pub fn start_args(project: &Path, args: &[&str]) -> Server {
        Server::start_with(
            project,
            Launch {
                args: args.iter().map(|s| s.to_string()).collect(),
                ..Launch::default()
            },
        )
    }

    /// Starts the server with `launch`'s extra arguments and environment.
    pub fn start_with(project: &Path, launch: Launch) -> Server {
        let mut cmd = Command::new(pyrs_bin());
        let port = launch.port.unwrap_or(0).to_string();
        let address = launch.address.as_deref().unwrap_or("127.0.0.1");
        cmd.arg(project)
            .args(["-a", address, "-p", &port])
            .args(&launch.args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .env("PYTHONDONTWRITEBYTECODE", "1");
        for (k, v) in &launch.env {
            cmd.env(k, v);
        }
        if let Some(dir) = &launch.cwd {
            cmd.current_dir(dir);
        }
        let mut child = cmd.spawn().expect("spawn pyrs");
        let stdout: Shared = Arc::default();
        let stderr: Shared = Arc::default();
        let (tx, rx) = mpsc::channel();
        let pumps = vec![
            pump(
                child.stdout.take().expect("piped stdout"),
                stdout.clone(),
                Some(tx),
            ),
            pump(
                child.stderr.take().expect("piped stderr"),
                stderr.clone(),
                None,
            ),
        ];
        let mut server = Server {
            child,
            port: 0,
            stdout,
            stderr,
            exit: None,
            pumps,
        };
        let deadline = Instant::now() + STARTUP_TIMEOUT;
        let mut port = None;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match rx.recv_timeout(left) {
                Ok(line) => {
                    if let Some(p) = line.strip_prefix("Port: ") {
                        port = Some(p.trim().parse::<u16>().expect("numeric Port: line"));
                    }
                    if line == "Listening..." {
                        break;
                    }
                }
                Err(_) => {
                    // Give stderr's pump a moment to collect the reason.
                    thread::sleep(Duration::from_millis(200));
                    panic!(
                        "pyrs did not print Listening... (exit: {:?})\nstdout:\n{}\nstderr:\n{}",
                        server.child.try_wait(),
                        server.stdout(),
                        server.stderr()
                    );
                }
            }
        }
        if address.starts_with("unix:") {
            assert!(port.is_none(), "no Port: line for a Unix socket");
            return server;
        }
        server.port = port.expect("a Port: line before Listening...");
        assert_ne!(server.port, 0, "the Port: line shows the bound port");
        server
    }

    pub fn addr(&self) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], self.port))
    }

    pub fn pid(&self) -> i32 {
        self.child.id() as i32
    }

    /// A new connection with [`IO_TIMEOUT`] on reads and writes.
    pub fn connect(&self) -> Conn {
        Conn::connect(self.addr())
    }

    /// Everything the server printed on stdout so far.
    pub fn stdout(&self) -> String {
        self.stdout.lock().expect("stdout lock").clone()
    }

    /// Everything the server printed on stderr so far.
    pub fn stderr(&self) -> String {
        self.stderr.lock().expect("stderr lock").clone()
    }

    /// Waits until stdout contains `needle`; false after `timeout`.
    pub fn wait_stdout(&self, needle: &str, timeout: Duration) -> bool {
        wait_for(&self.stdout, needle, timeout)
    }

    /// Waits until stderr contains `needle`; false after `timeout`.
    pub fn wait_stderr(&self, needle: &str, timeout: Duration) -> bool {
        wait_for(&self.stderr, needle, timeout)
    }

    /// Like [`Server::wait_stderr`], panicking with the output on timeout.
    pub fn expect_stderr(&self, needle: &str) {
        assert!(
            self.wait_stderr(needle, IO_TIMEOUT),
            "stderr never contained {needle:?}; stderr:\n{}",
            self.stderr()
        );
    }

    /// Waits until stderr contains `needle` at least `count` times; panics
    /// with the output after [`IO_TIMEOUT`].
    pub fn expect_stderr_count(&self, needle: &str, count: usize) {
        let deadline = Instant::now() + IO_TIMEOUT;
        while self.stderr().matches(needle).count() < count {
            assert!(
                Instant::now() < deadline,
                "stderr never had {count} x {needle:?}; stderr:\n{}",
                self.stderr()
            );
            thread::sleep(Duration::from_millis(10));
        }
    }

    /// Like [`Server::wait_stdout`], panicking with the output on timeout.
    pub fn expect_stdout(&self, needle: &str) {
        assert!(
            self.wait_stdout(needle, IO_TIMEOUT),
            "stdout never contained {needle:?}; stdout:\n{}",
            self.stdout()
        );
    }

    /// Sends `signal` (`libc::SIGTERM`, ...) to the server.
    pub fn signal(&self, signal: i32) {
        // SAFETY: kill(2) on our own child's pid; it has not been reaped yet
        // (`exit` is only set by `wait_exit`).
        let rc = unsafe { libc::kill(self.pid(), signal) };
        assert_eq!(rc, 0, "kill({}, {signal})", self.pid());
    }

    /// Waits for the process to exit; `None` after `timeout`.
    pub fn wait_exit(&mut self, timeout: Duration) -> Option<ExitStatus> {
        if self.exit.is_some() {
            return self.exit;
        }
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = self.child.try_wait().expect("try_wait") {
                self.exit = Some(status);
                // Let the pumps read the pipes to EOF (bounded: a grandchild
                // could keep them open).
                let deadline = Instant::now() + Duration::from_secs(5);
                while self.pumps.iter().any(|p| !p.is_finished()) && Instant::now() < deadline {
                    thread::sleep(Duration::from_millis(5));
                }
                return self.exit;
            }
            if Instant::now() >= deadline {
                return None;
            }
            thread::sleep(Duration::from_millis(20));
        }
    }

    /// Panics unless the process is still running.
    pub fn assert_running(&mut self) {
        let status = self.child.try_wait().expect("try_wait");
        assert!(
            status.is_none(),
            "pyrs exited ({status:?}); stderr:\n{}",
            self.stderr()
        );
    }

    /// One request on a fresh connection; returns its response. The connection is
    /// then half-closed and read to its end, so the response is checked against every
    /// byte the server sent: nothing may follow it (see [`Response::stray`]).
    pub fn request(&self, raw: &[u8]) -> Response {
        let mut conn = self.connect();
        conn.send(raw);
        let response = conn.read_response_for(raw);
        conn.shutdown_write();
        conn.expect_eof();
        response
    }

    /// `GET path` on a fresh connection.
    pub fn get(&self, path: &str) -> Response {
        self.request(&get(path))
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if self.exit.is_none() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

fn wait_for(buffer: &Shared, needle: &str, timeout: Duration) -> bool {
    let deadline = Instant::now() + timeout;
    loop {
        if buffer.lock().expect("output lock").contains(needle) {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        thread::sleep(Duration::from_millis(10));
    }
}

/// A process run to completion.
pub struct Finished {
    pub status: ExitStatus,
    pub stdout: String,
    pub stderr: String,
}

/// Runs `pyrs args...` in `dir` (the current directory when `None`) and waits
/// for it to exit; panics (after killing it) if it runs past [`EXIT_TIMEOUT`].
pub fn run_pyrs(args: &[&str], dir: Option<&Path>) -> Finished {
    let mut cmd = Command::new(pyrs_bin());
    cmd.args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .env("PYTHONDONTWRITEBYTECODE", "1");
    if let Some(dir) = dir {
        cmd.current_dir(dir);
    }
    run_to_exit(cmd)
}

/// Runs `cmd` with piped output and waits at most [`EXIT_TIMEOUT`] for it.
pub fn run_to_exit(mut cmd: Command) -> Finished {
    let mut child = cmd
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn");
    let stdout: Shared = Arc::default();
    let stderr: Shared = Arc::default();
    let (out_done, err_done) = (Arc::new(()), Arc::new(()));
    {
        let out = child.stdout.take().expect("piped stdout");
        let err = child.stderr.take().expect("piped stderr");
        let (so, se) = (stdout.clone(), stderr.clone());
        let (d1, d2) = (out_done.clone(), err_done.clone());
        thread::spawn(move || {
            let mut s = String::new();
            let _ = BufReader::new(out).read_to_string(&mut s);
            so.lock().expect("lock").push_str(&s);
            drop(d1);
        });
        thread::spawn(move || {
            let mut s = String::new();
            let _ = BufReader::new(err).read_to_string(&mut s);
            se.lock().expect("lock").push_str(&s);
            drop(d2);
        });
    }
    let deadline = Instant::now() + EXIT_TIMEOUT;
    let status = loop {
        if let Some(status) = child.try_wait().expect("try_wait") {
            break status;
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!(
                "process did not exit within {EXIT_TIMEOUT:?}; stdout:\n{}\nstderr:\n{}",
                stdout.lock().expect("lock"),
                stderr.lock().expect("lock")
            );
        }
        thread::sleep(Duration::from_millis(10));
    };
    // The pumps finish once the pipes close (a grandchild could hold them:
    // bound the wait).
    let deadline = Instant::now() + Duration::from_secs(5);
    while (Arc::strong_count(&out_done) > 1 || Arc::strong_count(&err_done) > 1)
        && Instant::now() < deadline
    {
        thread::sleep(Duration::from_millis(5));
    }
    let stdout = stdout.lock().expect("lock").clone();
    let stderr = stderr.lock().expect("lock").clone();
    Finished {
        status,
        stdout,
        stderr,
    }
}

/// A throwaway folder under the system temp dir, removed on drop.
pub struct TempDir {
    pub path: PathBuf,
}

impl TempDir {
    pub fn new(tag: &str) -> TempDir {
        static COUNTER: AtomicUsize = AtomicUsize::new(0);
        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.subsec_nanos())
            .unwrap_or(0);
        let path = std::env::temp_dir().join(format!(
            "pyrs-test-{tag}-{}-{}-{nanos}",
            std::process::id(),
            COUNTER.fetch_add(1, Ordering::Relaxed)
        ));
        std::fs::create_dir_all(&path).expect("create temp dir");
        TempDir { path }
    }

    /// Writes `rel` (creating folders) and returns its path.
    pub fn write(&self, rel: &str, contents: &str) -> PathBuf {
        let file = self.path.join(rel);
        if let Some(parent) = file.parent() {
            std::fs::create_dir_all(parent).expect("create folder");
        }
        std::fs::write(&file, contents).expect("write file");
        file
    }

    pub fn join(&self, rel: &str) -> PathBuf {
        self.path.join(rel)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.path);
    }
}

/// A temp project: `project.pyrs` with `config` plus the given Python files.
pub struct Project {
    pub dir: TempDir,
    pub file: PathBuf,
}

impl Project {
    pub fn new(config: &str, files: &[(&str, &str)]) -> Project {
        let dir = TempDir::new("project");
        for (name, text) in files {
            dir.write(name, text);
        }
        let file = dir.write("project.pyrs", config);
        Project { dir, file }
    }
}

/// A project file with one module entry per `(path, module, class, handler)`.
pub fn project_config(routes: &[(&str, &str, &str, &str)]) -> String {
    let entries: Vec<String> = routes
        .iter()
        .map(|(path, module, class, handler)| {
            format!(
                "    {{ \"path\": \"{path}\", \"module\": \"{module}\", \"class\": \"{class}\", \"handler\": \"{handler}\" }}"
            )
        })
        .collect();
    format!("{{\n  \"modules\": [\n{}\n  ]\n}}\n", entries.join(",\n"))
}

// ------------------------------------------------------------------ /proc

/// One MiB in the KiB that `/proc/<pid>/status` reports.
pub const MIB: u64 = 1024;

/// The resident set size of `pid` in KiB (`VmRSS` in `/proc/<pid>/status`).
pub fn rss_kib(pid: i32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("read status");
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("a VmRSS line")
}

/// The descriptors `pid` has open, by number.
pub fn open_fds(pid: i32) -> Vec<u64> {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .expect("read /proc/<pid>/fd")
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse().ok())
        .collect()
}

/// Waits (bounded) until `pid` has at most `max` descriptors open; returns the count.
pub fn wait_fds_at_most(pid: i32, max: usize, timeout: Duration) -> usize {
    let deadline = Instant::now() + timeout;
    loop {
        let n = open_fds(pid).len();
        if n <= max || Instant::now() >= deadline {
            return n;
        }
        thread::sleep(Duration::from_millis(50));
    }
}
