//! The process around the server: graceful stop on SIGTERM/SIGINT (requests
//! already received are answered, then exit 0), `--version`, `--help`, the
//! command-line overrides, and where Python finds modules (the project folder
//! first on `sys.path`, packages on `PYTHONPATH`).

mod common;

use std::ffi::OsString;
use std::net::TcpStream;
use std::process::Command;
use std::time::{Duration, Instant};

use common::{
    fixture, get, make_venv, project_config, run_ok, run_pyrs, run_to_exit, Launch, Project,
    Server, TempDir,
};

fn app() -> Server {
    Server::start(&fixture("app/app.pyrs"))
}

/// `stop.pyrs`: keepalive_timeout 60 s and shutdown_timeout 30 s, both far past
/// the bounds the stop tests assert, so an idle close cannot pass for a graceful one.
fn stop_app() -> Server {
    Server::start(&fixture("app/stop.pyrs"))
}

/// How soon a graceful stop closes a connection with nothing left to answer.
const PROMPT_CLOSE: Duration = Duration::from_secs(5);

/// Waits for a clean exit and checks the stop line.
fn expect_clean_exit(s: &mut Server, within: Duration) {
    let status = s.wait_exit(within).unwrap_or_else(|| {
        panic!(
            "pyrs did not exit within {within:?}; stdout:\n{}\nstderr:\n{}",
            s.stdout(),
            s.stderr()
        )
    });
    assert_eq!(status.code(), Some(0), "stderr:\n{}", s.stderr());
    assert!(
        s.stdout().contains("Stopping pyrs server..."),
        "stdout:\n{}",
        s.stdout()
    );
}

#[test]
fn sigterm_answers_the_request_in_flight_then_exits_0() {
    let mut s = app();
    let mut c = s.connect();
    c.send(&get("/sleep?s=1"));
    s.expect_stdout("sleeping 1.0");
    s.signal(libc::SIGTERM);
    let r = c.read_response();
    r.assert_basics(200);
    assert_eq!(r.text(), "slept 1.0");
    drop(c);
    expect_clean_exit(&mut s, Duration::from_secs(10));
}

#[test]
fn sigterm_closes_a_keep_alive_connection_after_its_last_answer() {
    // The client keeps its connection open after the answer; the server must
    // still close it and exit promptly, not wait for shutdown_timeout (30 s) or
    // keepalive_timeout (60 s).
    let mut s = stop_app();
    let mut c = s.connect();
    c.send(&get("/sleep?s=0.5"));
    s.expect_stdout("sleeping 0.5");
    s.signal(libc::SIGTERM);
    let r = c.read_response();
    r.assert_basics(200);
    assert_eq!(r.text(), "slept 0.5");
    let started = Instant::now();
    c.expect_eof_within(PROMPT_CLOSE);
    let exited = s.wait_exit(Duration::from_secs(8));
    assert!(
        exited.is_some(),
        "pyrs still running {:?} after answering the last request of an open \
         keep-alive connection (response had Connection: {:?})",
        started.elapsed(),
        r.header("connection")
    );
    expect_clean_exit(&mut s, Duration::from_secs(1));
}

#[test]
fn sigterm_answers_every_pipelined_request_received() {
    let mut s = app();
    let mut c = s.connect();
    let mut raw = Vec::new();
    for _ in 0..3 {
        raw.extend(get("/sleep?s=0.3"));
    }
    raw.extend(get("/nope"));
    c.send(&raw);
    s.expect_stdout("sleeping 0.3");
    s.signal(libc::SIGTERM);
    for _ in 0..3 {
        let r = c.read_response();
        r.assert_basics(200);
        assert_eq!(r.text(), "slept 0.3");
    }
    c.read_response().assert_basics(404);
    drop(c);
    expect_clean_exit(&mut s, Duration::from_secs(10));
}

#[test]
fn sigterm_stops_accepting_new_connections() {
    let mut s = app();
    let mut busy = s.connect();
    busy.send(&get("/sleep?s=1.5"));
    s.expect_stdout("sleeping 1.5");
    s.signal(libc::SIGTERM);
    s.expect_stdout("Stopping pyrs server...");
    std::thread::sleep(Duration::from_millis(200));
    // A new connection is refused, or accepted by the kernel but never served.
    if let Ok(mut late) = TcpStream::connect_timeout(&s.addr(), Duration::from_secs(2)) {
        use std::io::{Read, Write};
        late.set_read_timeout(Some(Duration::from_secs(5)))
            .expect("timeout");
        let _ = late.write_all(&get("/text"));
        let mut buf = Vec::new();
        let _ = late.read_to_end(&mut buf);
        assert!(
            !String::from_utf8_lossy(&buf).contains("200 OK"),
            "served a connection made after SIGTERM: {:?}",
            String::from_utf8_lossy(&buf)
        );
    }
    let r = busy.read_response();
    assert_eq!(r.text(), "slept 1.5");
    drop(busy);
    expect_clean_exit(&mut s, Duration::from_secs(10));
}

#[test]
fn sigint_on_idle_server_exits_0() {
    let mut s = app();
    s.get("/text").assert_basics(200);
    s.signal(libc::SIGINT);
    expect_clean_exit(&mut s, Duration::from_secs(10));
}

#[test]
fn sigterm_closes_idle_keep_alive_connections() {
    let mut s = stop_app();
    let mut c = s.connect();
    c.request(&get("/text")).assert_basics(200);
    s.signal(libc::SIGTERM);
    c.expect_eof_within(PROMPT_CLOSE);
    expect_clean_exit(&mut s, Duration::from_secs(8));
}

#[test]
fn shutdown_timeout_bounds_the_stop_even_if_a_handler_hangs() {
    // drain.pyrs: shutdown_timeout 0.5 s (keepalive_timeout 60 s). A handler
    // still running when it passes must not keep the process alive.
    let mut s = Server::start(&fixture("app/drain.pyrs"));
    let mut c = s.connect();
    c.send(&get("/sleep?s=8"));
    s.expect_stdout("sleeping 8.0");
    let signalled = Instant::now();
    s.signal(libc::SIGTERM);
    // The connection is given up on at the deadline, long before the handler
    // would answer.
    c.expect_eof_within(Duration::from_secs(4));
    let exited = s.wait_exit(Duration::from_secs(3));
    assert!(
        exited.is_some(),
        "pyrs still running {:?} after SIGTERM with shutdown_timeout 0.5 s \
         (a handler is sleeping 8 s)",
        signalled.elapsed()
    );
}

#[test]
fn second_signal_exits_at_once() {
    let mut s = app();
    let mut c = s.connect();
    c.send(&get("/sleep?s=8"));
    s.expect_stdout("sleeping 8.0");
    s.signal(libc::SIGTERM);
    s.expect_stdout("Stopping pyrs server...");
    s.signal(libc::SIGINT);
    let status = s
        .wait_exit(Duration::from_secs(3))
        .expect("exit right after a second signal");
    assert_eq!(status.code(), Some(130), "stderr:\n{}", s.stderr());
    assert!(s.stderr().contains("second signal"), "{}", s.stderr());
}

#[test]
fn version_flag() {
    for flag in ["--version", "-V"] {
        let out = run_pyrs(&[flag], None);
        assert!(out.status.success(), "{flag}: {}", out.stderr);
        assert_eq!(out.stdout.lines().count(), 1, "{}", out.stdout);
        // "pyrs 0.1.0", possibly followed by build details.
        assert!(
            out.stdout == "pyrs 0.1.0\n" || out.stdout.starts_with("pyrs 0.1.0 "),
            "{}",
            out.stdout
        );
    }
}

#[test]
fn help_flag() {
    for flag in ["--help", "-h"] {
        let out = run_pyrs(&[flag], None);
        assert!(out.status.success(), "{flag}: {}", out.stderr);
        assert!(out.stdout.starts_with("Usage: pyrs"), "{}", out.stdout);
        for word in ["--address", "--port", "--threads", "--version", "project"] {
            assert!(out.stdout.contains(word), "{word} in {}", out.stdout);
        }
    }
}

#[test]
fn missing_project_and_bad_flags_fail() {
    let out = run_pyrs(&[], None);
    assert!(!out.status.success());
    assert!(
        out.stderr.contains("pyrs: missing project file"),
        "{}",
        out.stderr
    );
    let out = run_pyrs(&["--bogus", "x.pyrs"], None);
    assert!(!out.status.success());
    assert!(out.stderr.contains("--bogus"), "{}", out.stderr);
    let project = fixture("app/app.pyrs");
    let project = project.to_str().expect("utf-8 path");
    let out = run_pyrs(&[project, "-p", "0", "-t", "0"], None);
    assert!(!out.status.success());
    assert!(
        out.stderr.contains("--threads 0: must be at least 1"),
        "{}",
        out.stderr
    );
    assert!(!out.stdout.contains("Listening"), "{}", out.stdout);
    let out = run_pyrs(&[project, "--port", "70000"], None);
    assert!(!out.status.success());
    assert!(out.stderr.contains("--port"), "{}", out.stderr);
    assert!(out.stderr.contains("70000"), "{}", out.stderr);
    let out = run_pyrs(&[project, "-p", "0", "-a", "not an address"], None);
    assert!(!out.status.success());
    assert!(out.stderr.contains("--address"), "{}", out.stderr);
}

/// How many of `pid`'s threads are reactors (named `pyrs-reactor`).
fn reactor_threads(pid: i32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/task"))
        .expect("read /proc/<pid>/task")
        .filter_map(|t| std::fs::read_to_string(t.ok()?.path().join("comm")).ok())
        .filter(|comm| comm.trim_end() == "pyrs-reactor")
        .count()
}

/// Waits (bounded) until `pid` has `want` reactor threads; panics with the
/// count seen last. A new thread names itself once it runs, so the names can
/// lag the `Listening...` line a little.
fn expect_reactor_threads(pid: i32, want: usize, what: &str) {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let n = reactor_threads(pid);
        if n == want {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{what}: {n} pyrs-reactor threads, expected {want}"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
}

#[test]
fn thread_count_flag_serves_with_one_and_many_threads() {
    // app.pyrs says thread_count 2; -t overrides it.
    for (threads, reactors) in [("1", 1), ("4", 4)] {
        let s = Server::start_args(&fixture("app/app.pyrs"), &["-t", threads]);
        expect_reactor_threads(s.pid(), reactors, &format!("-t {threads}"));
        let addr = s.addr();
        let clients: Vec<_> = (0..8)
            .map(|_| {
                std::thread::spawn(move || {
                    let mut c = common::Conn::connect(addr);
                    for _ in 0..10 {
                        c.request(&get("/text")).assert_basics(200);
                    }
                })
            })
            .collect();
        for t in clients {
            t.join().expect("client");
        }
    }
}

#[test]
fn port_flag_binds_the_given_port() {
    // A port that stays ours for the whole test: bound (not listening) with
    // SO_REUSEPORT, which pyrs's listeners join, as its own reservation does. No
    // other program can take it in between, and a socket that does not listen
    // is handed no connections.
    let holder =
        socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).expect("socket");
    holder.set_reuse_port(true).expect("SO_REUSEPORT");
    holder
        .bind(&std::net::SocketAddr::from(([127, 0, 0, 1], 0)).into())
        .expect("bind");
    let port = holder
        .local_addr()
        .ok()
        .and_then(|a| a.as_socket())
        .expect("bound address")
        .port();
    let s = Server::start_with(
        &fixture("app/app.pyrs"),
        Launch {
            port: Some(port),
            ..Launch::default()
        },
    );
    assert_eq!(s.port, port);
    s.get("/text").assert_basics(200);
    drop(holder);
}

const SYS_PATH_MODULE: &str = r#"
import sys
import colorsys  # shadowed by colorsys.py in the project folder


class Paths:
    def first(self, request):
        return sys.path[0]

    def shadow(self, request):
        return colorsys.MARKER
"#;

#[test]
fn project_folder_is_first_on_sys_path() {
    let config = project_config(&[
        ("/first", "paths", "Paths", "first"),
        ("/shadow", "paths", "Paths", "shadow"),
        ("/nested", "pkg.sub.handlers", "Nested", "hello"),
    ]);
    let p = Project::new(
        &config,
        &[
            ("paths.py", SYS_PATH_MODULE),
            ("colorsys.py", "MARKER = 'project colorsys'\n"),
            ("pkg/__init__.py", ""),
            ("pkg/sub/__init__.py", ""),
            (
                "pkg/sub/handlers.py",
                "class Nested:\n    def hello(self, request):\n        return 'nested ' + __name__\n",
            ),
        ],
    );
    // Started from another working directory, with a relative project path.
    let parent = p.dir.path.parent().expect("temp parent").to_path_buf();
    let name = p.dir.path.file_name().expect("dir name").to_owned();
    let relative = std::path::Path::new(&name).join("project.pyrs");
    let s = Server::start_with(
        &relative,
        Launch {
            cwd: Some(parent),
            ..Launch::default()
        },
    );
    let dir = p.dir.path.canonicalize().expect("canonical");
    assert_eq!(s.get("/first").text(), dir.to_string_lossy());
    assert_eq!(s.get("/shadow").text(), "project colorsys");
    assert_eq!(s.get("/nested").text(), "nested pkg.sub.handlers");
}

/// Writes a wheel of the tiny package `tinypkg` into `dir` with Python's
/// zipfile (no setuptools or wheel package needed); returns its path.
fn build_wheel(dir: &std::path::Path) -> Option<std::path::PathBuf> {
    const SCRIPT: &str = r#"
import base64, hashlib, sys, zipfile
out = sys.argv[1]
files = {
    "tinypkg/__init__.py": "def greet(name):\n    return 'hello ' + name + ' from tinypkg'\n",
    "tinypkg-0.1.dist-info/METADATA": "Metadata-Version: 2.1\nName: tinypkg\nVersion: 0.1\n",
    "tinypkg-0.1.dist-info/WHEEL": "Wheel-Version: 1.0\nGenerator: pyrs-tests\nRoot-Is-Purelib: true\nTag: py3-none-any\n",
}
record = []
with zipfile.ZipFile(out, "w") as z:
    for name, text in files.items():
        data = text.encode()
        z.writestr(name, data)
        digest = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()
        record.append(f"{name},sha256={digest},{len(data)}")
    record.append("tinypkg-0.1.dist-info/RECORD,,")
    z.writestr("tinypkg-0.1.dist-info/RECORD", "\n".join(record) + "\n")
"#;
    let wheel = dir.join("tinypkg-0.1-py3-none-any.whl");
    let mut cmd = Command::new("python3");
    cmd.arg("-c").arg(SCRIPT).arg(&wheel);
    let out = run_to_exit(cmd);
    out.status.success().then_some(wheel)
}

/// Installs `tinypkg` into `target` with `pip install --target`; false when
/// pip is unavailable or fails (offline machines without pip, for example).
fn pip_install(wheel: &std::path::Path, target: &std::path::Path) -> bool {
    let mut cmd = Command::new("python3");
    cmd.args(["-m", "pip", "install", "--no-index", "--no-deps", "--quiet"])
        .args(["--disable-pip-version-check", "--no-warn-script-location"])
        .arg("--target")
        .arg(target)
        .arg(wheel);
    let out = run_to_exit(cmd);
    if !out.status.success() {
        eprintln!(
            "pip install failed, falling back to a plain folder:\n{}",
            out.stderr
        );
    }
    out.status.success() && target.join("tinypkg").join("__init__.py").exists()
}

#[test]
fn package_on_pythonpath_imports_in_handlers() {
    let work = TempDir::new("site");
    let site = work.join("site-packages");
    let installed = build_wheel(&work.path).is_some_and(|wheel| pip_install(&wheel, &site));
    if !installed {
        // Fallback: the package as a plain folder.
        std::fs::create_dir_all(site.join("tinypkg")).expect("mkdir");
        std::fs::write(
            site.join("tinypkg").join("__init__.py"),
            "def greet(name):\n    return 'hello ' + name + ' from tinypkg'\n",
        )
        .expect("write");
    }
    eprintln!("tinypkg installed with pip --target: {installed}");
    let p = Project::new(
        &project_config(&[("/greet", "uses", "Uses", "greet")]),
        &[(
            "uses.py",
            "import tinypkg\n\nclass Uses:\n    def greet(self, request):\n        return tinypkg.greet(request.query_string)\n",
        )],
    );
    let s = Server::start_with(
        &p.file,
        Launch {
            env: vec![("PYTHONPATH".to_owned(), OsString::from(&site))],
            ..Launch::default()
        },
    );
    let r = s.get("/greet?pyrs");
    r.assert_basics(200);
    assert_eq!(r.text(), "hello pyrs from tinypkg");
}

#[test]
fn active_virtualenv_site_packages_import() {
    // A real virtualenv, made by the interpreter pyrs embeds; its site-packages
    // as that virtualenv's own sysconfig names it, not as pyrs computes it.
    let work = TempDir::new("venv");
    let venv = work.join("venv");
    let python = make_venv(&venv, false);
    eprintln!(
        "embedded Python {:?}: {}",
        python.version,
        python.program.display()
    );
    let venv_python = venv.join("bin").join("python");
    let version = run_ok(
        &venv_python,
        &["-c".as_ref(), "import sys; print(sys.version)".as_ref()],
    );
    assert_eq!(
        version.trim_end(),
        python.version,
        "the virtualenv's Python"
    );
    let purelib = run_ok(
        &venv_python,
        &[
            "-c".as_ref(),
            "import sysconfig; print(sysconfig.get_path('purelib'))".as_ref(),
        ],
    );
    let purelib = std::path::PathBuf::from(purelib.trim_end());
    assert!(
        purelib.starts_with(&venv),
        "{purelib:?} is outside {venv:?}"
    );
    // A tiny package, installed the way pip lays out a pure-Python one.
    std::fs::create_dir_all(purelib.join("venvpkg")).expect("mkdir");
    std::fs::write(
        purelib.join("venvpkg").join("__init__.py"),
        "WHERE = 'from the virtualenv'\n",
    )
    .expect("write");
    let p = Project::new(
        &project_config(&[
            ("/where", "uses_venv", "Uses", "where"),
            ("/file", "uses_venv", "Uses", "file"),
        ]),
        &[(
            "uses_venv.py",
            "import venvpkg\n\nclass Uses:\n    def where(self, request):\n        return venvpkg.WHERE\n\n    def file(self, request):\n        return venvpkg.__file__\n",
        )],
    );
    let s = Server::start_with(
        &p.file,
        Launch {
            env: vec![("VIRTUAL_ENV".to_owned(), OsString::from(&venv))],
            ..Launch::default()
        },
    );
    let r = s.get("/where");
    r.assert_basics(200);
    assert_eq!(r.text(), "from the virtualenv");
    let imported = std::path::PathBuf::from(s.get("/file").text());
    assert_eq!(
        imported.canonicalize().expect("imported file"),
        purelib
            .join("venvpkg")
            .join("__init__.py")
            .canonicalize()
            .expect("installed file"),
        "venvpkg imported from elsewhere"
    );
}

#[test]
fn a_virtualenv_hides_the_base_site_packages_and_a_plain_folder_does_not() {
    // What the embedded Python's own site-packages are, without any venv.
    const SITE: &str = "import site, sys\n\nclass Site:\n    def base(self, request):\n        return '\\n'.join(site.getsitepackages())\n\n    def path(self, request):\n        return '\\n'.join(sys.path)\n";
    let p = Project::new(
        &project_config(&[
            ("/base", "sitecheck", "Site", "base"),
            ("/path", "sitecheck", "Site", "path"),
        ]),
        &[("sitecheck.py", SITE)],
    );
    let base: Vec<String> = Server::start(&p.file)
        .get("/base")
        .text()
        .lines()
        .map(str::to_owned)
        .collect();
    let work = TempDir::new("venv-hides");
    let venv = work.join("venv");
    make_venv(&venv, false);
    let path_with = |virtual_env: &std::path::Path| -> Vec<String> {
        let s = Server::start_with(
            &p.file,
            Launch {
                env: vec![("VIRTUAL_ENV".to_owned(), OsString::from(virtual_env))],
                ..Launch::default()
            },
        );
        s.get("/path").text().lines().map(str::to_owned).collect()
    };
    // A real venv (pyvenv.cfg, no system site-packages): only its own.
    let path = path_with(&venv);
    for dir in &base {
        assert!(!path.contains(dir), "{dir} still on sys.path {path:?}");
    }
    assert!(
        path.iter()
            .skip(1)
            .take(1)
            .all(|p| p.starts_with(&*venv.to_string_lossy())),
        "the venv's site-packages come right after the project folder: {path:?}"
    );
    // A folder that is no venv (no pyvenv.cfg): the base stays.
    let plain = work.join("not-a-venv");
    std::fs::create_dir_all(&plain).expect("mkdir");
    let path = path_with(&plain);
    for dir in base.iter().filter(|d| std::path::Path::new(d).exists()) {
        assert!(path.contains(dir), "{dir} dropped from sys.path {path:?}");
    }
}
