//! Test harness shared by the integration tests: starts the real `pyrs` binary
//! on port 0, waits for its `Listening...` line, collects its stdout and stderr
//! in background threads, talks raw HTTP/1.1 over real sockets, and writes
//! throwaway project folders. Every wait here is bounded; the child is killed
//! when its [`Server`] guard is dropped.

// Each test crate uses a different part of this module.
#![allow(dead_code)]

use std::ffi::OsString;
use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpStream};
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

/// The `pyrs` binary under test.
pub fn pyrs_bin() -> &'static str {
    env!("CARGO_BIN_EXE_pyrs")
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
        cmd.arg(project)
            .args(["-a", "127.0.0.1", "-p", &port])
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

    /// One request on a fresh connection; returns its response.
    pub fn request(&self, raw: &[u8]) -> Response {
        let mut conn = self.connect();
        conn.send(raw);
        conn.read_response_for(raw)
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

/// A parsed HTTP response.
#[derive(Clone)]
pub struct Response {
    pub version: String,
    pub status: u16,
    pub reason: String,
    /// Header fields in order, as sent.
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl std::fmt::Debug for Response {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Response")
            .field("status", &self.status)
            .field("reason", &self.reason)
            .field("headers", &self.headers)
            .field("body", &String::from_utf8_lossy(&self.body))
            .finish()
    }
}

impl Response {
    /// The first value of header `name` (case-insensitive).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// Every value of header `name`, in order.
    pub fn header_all(&self, name: &str) -> Vec<&str> {
        self.headers
            .iter()
            .filter(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
            .collect()
    }

    /// The body as (lossy) UTF-8.
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    /// `Content-Length` as a number.
    pub fn content_length(&self) -> Option<usize> {
        self.header("content-length")
            .map(|v| v.trim().parse().expect("numeric Content-Length"))
    }

    /// Asserts status, `Server: pyrs`, an IMF-fixdate `Date` and, for statuses
    /// that have one, a `Content-Length` matching the body.
    pub fn assert_basics(&self, status: u16) {
        assert_eq!(self.status, status, "status of {self:#?}");
        assert_eq!(self.version, "HTTP/1.1", "{self:#?}");
        assert_eq!(self.header_all("server"), vec!["pyrs"], "{self:#?}");
        let date = self.header("date").unwrap_or_default();
        assert!(is_imf_fixdate(date), "Date {date:?} is not an IMF-fixdate");
        assert_eq!(self.header_all("date").len(), 1, "{self:#?}");
        if status == 204 || status < 200 {
            assert_eq!(self.header("content-length"), None, "{self:#?}");
        } else {
            assert_eq!(
                self.header_all("content-length").len(),
                1,
                "one Content-Length: {self:#?}"
            );
        }
    }

    /// Like [`Response::assert_basics`], also checking the body length.
    pub fn assert_ok_body(&self, status: u16, content_type: &str, body: &[u8]) {
        self.assert_basics(status);
        assert_eq!(self.header("content-type"), Some(content_type), "{self:#?}");
        assert_eq!(
            self.body,
            body,
            "body {:?} != {:?}",
            self.text(),
            String::from_utf8_lossy(body)
        );
        assert_eq!(self.content_length(), Some(body.len()), "{self:#?}");
    }
}

/// Whether `s` is an IMF-fixdate such as `Sun, 06 Nov 1994 08:49:37 GMT`.
pub fn is_imf_fixdate(s: &str) -> bool {
    const DAYS: [&str; 7] = ["Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun"];
    const MONTHS: [&str; 12] = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ];
    let b = s.as_bytes();
    if b.len() != 29 || !s.is_ascii() {
        return false;
    }
    let digits = |r: std::ops::Range<usize>| b[r].iter().all(u8::is_ascii_digit);
    DAYS.contains(&&s[0..3])
        && &s[3..5] == ", "
        && digits(5..7)
        && b[7] == b' '
        && MONTHS.contains(&&s[8..11])
        && b[11] == b' '
        && digits(12..16)
        && b[16] == b' '
        && digits(17..19)
        && b[19] == b':'
        && digits(20..22)
        && b[22] == b':'
        && digits(23..25)
        && &s[25..] == " GMT"
}

/// A client connection with a read buffer, so that pipelined responses can
/// be read one at a time.
pub struct Conn {
    pub stream: TcpStream,
    buf: Vec<u8>,
}

impl Conn {
    pub fn connect(addr: SocketAddr) -> Conn {
        let stream = TcpStream::connect_timeout(&addr, IO_TIMEOUT).expect("connect to pyrs");
        stream.set_read_timeout(Some(IO_TIMEOUT)).expect("timeout");
        stream.set_write_timeout(Some(IO_TIMEOUT)).expect("timeout");
        Conn {
            stream,
            buf: Vec::new(),
        }
    }

    /// The local port of this connection.
    pub fn local_port(&self) -> u16 {
        self.stream.local_addr().expect("local addr").port()
    }

    pub fn send(&mut self, bytes: &[u8]) {
        self.stream.write_all(bytes).expect("send to pyrs");
    }

    /// Sends one byte per write with TCP_NODELAY and a short pause, so the
    /// server sees the request in many reads.
    pub fn send_byte_by_byte(&mut self, bytes: &[u8]) {
        self.stream.set_nodelay(true).expect("nodelay");
        for (i, b) in bytes.iter().enumerate() {
            self.stream.write_all(&[*b]).expect("send a byte");
            if i % 4 == 0 {
                thread::sleep(Duration::from_millis(1));
            }
        }
    }

    /// Reads once more into the buffer; `Ok(0)` at EOF.
    fn fill(&mut self) -> io::Result<usize> {
        let mut chunk = [0u8; 16 * 1024];
        let n = self.stream.read(&mut chunk)?;
        self.buf.extend_from_slice(&chunk[..n]);
        Ok(n)
    }

    /// Reads until `n` bytes are buffered; false at EOF first.
    fn fill_to(&mut self, n: usize) -> io::Result<bool> {
        while self.buf.len() < n {
            if self.fill()? == 0 {
                return Ok(false);
            }
        }
        Ok(true)
    }

    /// Exactly `n` raw bytes (used for `100 Continue`).
    pub fn read_exact_bytes(&mut self, n: usize) -> Vec<u8> {
        assert!(
            self.fill_to(n).expect("read from pyrs"),
            "EOF after {:?}",
            String::from_utf8_lossy(&self.buf)
        );
        self.buf.drain(..n).collect()
    }

    /// Reads one response to a non-HEAD request.
    pub fn read_response(&mut self) -> Response {
        self.read_response_to(false)
    }

    /// Reads one response; `head` for the response to a HEAD request.
    pub fn read_response_to(&mut self, head: bool) -> Response {
        match self.try_read_response(head) {
            Ok(Some(r)) => r,
            Ok(None) => panic!("connection closed before a response"),
            Err(e) => panic!(
                "reading a response: {e} (buffered: {:?})",
                String::from_utf8_lossy(&self.buf)
            ),
        }
    }

    /// Reads the response to `raw`, a request whose method tells whether the
    /// response has a body.
    pub fn read_response_for(&mut self, raw: &[u8]) -> Response {
        self.read_response_to(raw.starts_with(b"HEAD "))
    }

    /// One response, `None` on EOF before its first byte.
    pub fn try_read_response(&mut self, head: bool) -> io::Result<Option<Response>> {
        let end = loop {
            if let Some(i) = find(&self.buf, b"\r\n\r\n") {
                break i;
            }
            if self.fill()? == 0 {
                if self.buf.is_empty() {
                    return Ok(None);
                }
                return Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "EOF inside a response head",
                ));
            }
        };
        let head_text = String::from_utf8(self.buf[..end].to_vec())
            .map_err(|_| io::Error::new(io::ErrorKind::InvalidData, "non-UTF-8 head"))?;
        self.buf.drain(..end + 4);
        let mut lines = head_text.split("\r\n");
        let status_line = lines.next().unwrap_or_default();
        let mut parts = status_line.splitn(3, ' ');
        let version = parts.next().unwrap_or_default().to_owned();
        let status = parts
            .next()
            .and_then(|s| s.parse::<u16>().ok())
            .ok_or_else(|| {
                io::Error::new(
                    io::ErrorKind::InvalidData,
                    format!("bad status line {status_line:?}"),
                )
            })?;
        let reason = parts.next().unwrap_or_default().to_owned();
        let mut headers = Vec::new();
        for line in lines {
            let (name, value) = line.split_once(':').ok_or_else(|| {
                io::Error::new(io::ErrorKind::InvalidData, format!("bad header {line:?}"))
            })?;
            headers.push((name.to_owned(), value.trim().to_owned()));
        }
        let mut response = Response {
            version,
            status,
            reason,
            headers,
            body: Vec::new(),
        };
        if head || status < 200 || status == 204 || status == 304 {
            return Ok(Some(response));
        }
        let chunked = response
            .header("transfer-encoding")
            .is_some_and(|te| te.to_ascii_lowercase().contains("chunked"));
        if chunked {
            response.body = self.read_chunked()?;
        } else if let Some(len) = response.content_length() {
            if !self.fill_to(len)? {
                return Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "EOF inside a response body",
                ));
            }
            response.body = self.buf.drain(..len).collect();
        } else {
            while self.fill()? > 0 {}
            response.body = std::mem::take(&mut self.buf);
        }
        Ok(Some(response))
    }

    fn read_chunked(&mut self) -> io::Result<Vec<u8>> {
        let mut body = Vec::new();
        loop {
            let line_end = loop {
                if let Some(i) = find(&self.buf, b"\r\n") {
                    break i;
                }
                if self.fill()? == 0 {
                    return Err(io::ErrorKind::UnexpectedEof.into());
                }
            };
            let line = String::from_utf8_lossy(&self.buf[..line_end]).into_owned();
            let size = usize::from_str_radix(line.split(';').next().unwrap_or("").trim(), 16)
                .map_err(|_| io::Error::new(io::ErrorKind::InvalidData, "chunk size"))?;
            self.buf.drain(..line_end + 2);
            if size == 0 {
                // Trailers end with an empty line.
                loop {
                    let end = loop {
                        if let Some(i) = find(&self.buf, b"\r\n") {
                            break i;
                        }
                        if self.fill()? == 0 {
                            return Err(io::ErrorKind::UnexpectedEof.into());
                        }
                    };
                    self.buf.drain(..end + 2);
                    if end == 0 {
                        return Ok(body);
                    }
                }
            }
            if !self.fill_to(size + 2)? {
                return Err(io::ErrorKind::UnexpectedEof.into());
            }
            body.extend(self.buf.drain(..size));
            self.buf.drain(..2);
        }
    }

    /// Asserts the server closes the connection with nothing more to send.
    pub fn expect_eof(&mut self) {
        loop {
            match self.fill() {
                Ok(0) => break,
                Ok(_) => {}
                // A reset after the last response also means closed.
                Err(e) if e.kind() == io::ErrorKind::ConnectionReset => break,
                Err(e) => panic!("expected the server to close the connection: {e}"),
            }
        }
        assert!(
            self.buf.is_empty(),
            "unexpected bytes before EOF: {:?}",
            String::from_utf8_lossy(&self.buf)
        );
    }

    /// Asserts that nothing arrives within `wait` and the connection is still open.
    pub fn expect_silence(&mut self, wait: Duration) {
        self.stream.set_read_timeout(Some(wait)).expect("timeout");
        let mut byte = [0u8; 1];
        match self.stream.read(&mut byte) {
            Ok(0) => panic!("connection closed"),
            Ok(_) => panic!("unexpected byte {byte:?}"),
            Err(e) => assert!(
                matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                ),
                "{e}"
            ),
        }
        self.stream
            .set_read_timeout(Some(IO_TIMEOUT))
            .expect("timeout");
    }

    /// Closes our sending side.
    pub fn shutdown_write(&self) {
        self.stream.shutdown(Shutdown::Write).expect("shutdown");
    }

    /// Sends `raw` and reads its response.
    pub fn request(&mut self, raw: &[u8]) -> Response {
        self.send(raw);
        self.read_response_for(raw)
    }
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

/// The resident set size of process `pid` in KiB (`VmRSS` in `/proc/<pid>/status`).
pub fn rss_kib(pid: i32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("read status");
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("a VmRSS line")
}

/// `GET path HTTP/1.1` with a Host header.
pub fn get(path: &str) -> Vec<u8> {
    format!("GET {path} HTTP/1.1\r\nHost: test\r\n\r\n").into_bytes()
}

/// `POST path HTTP/1.1` with a Content-Length body.
pub fn post(path: &str, body: &[u8]) -> Vec<u8> {
    let mut raw = format!(
        "POST {path} HTTP/1.1\r\nHost: test\r\nContent-Length: {}\r\n\r\n",
        body.len()
    )
    .into_bytes();
    raw.extend_from_slice(body);
    raw
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
