//! Configuration from the environment, on the real binary: `PYRS_<KEY>`
//! overrides the project file and a flag overrides the variable; a bad value
//! exits non-zero naming the variable; `--print-config` prints each key's
//! value and origin and exits 0 without listening. Each child gets only the
//! `PYRS_` variables a test gives it (the runner's are removed), its time is
//! bounded and it is killed when the test ends.

mod common;

use std::io::{BufRead, BufReader};
use std::net::TcpListener;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::thread;
use std::time::Instant;

use common::{
    get, pyrs_bin, run_to_exit, Conn, Finished, Launch, Project, Server, STARTUP_TIMEOUT,
};

const HANDLER_PY: &str = "class C:\n    def h(self, request):\n        return 'ok'\n";

/// A project on `port` with one route, `/`, and `extra` top-level keys
/// (each followed by a comma).
fn project(port: u16, extra: &str) -> Project {
    let config = format!(
        "{{\n  \"http_listen_address\": \"127.0.0.1\",\n  \"http_listen_port\": {port},\n{extra}  \
         \"modules\": [{{ \"path\": \"/\", \"module\": \"m\", \"class\": \"C\", \"handler\": \"h\" }}]\n}}\n"
    );
    Project::new(&config, &[("m.py", HANDLER_PY)])
}

/// `pyrs args...` in `dir` with exactly the `PYRS_` variables in `env`.
fn pyrs(dir: &Path, args: &[&str], env: &[(&str, &str)]) -> Command {
    let mut cmd = Command::new(pyrs_bin());
    for (name, _) in std::env::vars_os() {
        if name.to_string_lossy().starts_with("PYRS_") {
            cmd.env_remove(name);
        }
    }
    cmd.args(args)
        .current_dir(dir)
        .stdin(Stdio::null())
        .env("PYTHONDONTWRITEBYTECODE", "1")
        .envs(env.iter().copied());
    cmd
}

/// Runs `pyrs args...` to its exit (bounded by the helper).
fn finish(dir: &Path, args: &[&str], env: &[(&str, &str)]) -> Finished {
    run_to_exit(pyrs(dir, args, env))
}

/// A port something else listens on: binding it again fails.
fn taken_port() -> (TcpListener, u16) {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind a port");
    let port = listener.local_addr().expect("its address").port();
    (listener, port)
}

/// A server started without `-p` (so the port comes from the file or the
/// environment); killed on drop.
struct Started {
    child: Child,
    port: u16,
}

impl Started {
    fn new(mut cmd: Command) -> Started {
        let mut child = cmd
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn pyrs");
        let (tx, rx) = mpsc::channel();
        let stdout = child.stdout.take().expect("piped stdout");
        let stderr = child.stderr.take().expect("piped stderr");
        for stream in [
            Box::new(stdout) as Box<dyn std::io::Read + Send>,
            Box::new(stderr),
        ] {
            let tx = tx.clone();
            thread::spawn(move || {
                for line in BufReader::new(stream).lines().map_while(Result::ok) {
                    let _ = tx.send(line);
                }
            });
        }
        let mut started = Started { child, port: 0 };
        let deadline = Instant::now() + STARTUP_TIMEOUT;
        let mut seen = String::new();
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let Ok(line) = rx.recv_timeout(left) else {
                panic!("pyrs did not print Listening...; output:\n{seen}");
            };
            seen.push_str(&line);
            seen.push('\n');
            if let Some(port) = line.strip_prefix("Port: ") {
                started.port = port.trim().parse().expect("a numeric Port: line");
            }
            if line == "Listening..." {
                return started;
            }
        }
    }

    fn get(&self, path: &str) -> common::Response {
        let mut conn = Conn::connect(([127, 0, 0, 1], self.port).into());
        conn.request(&get(path))
    }
}

impl Drop for Started {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn environment_port_overrides_the_file() {
    // The file names a port that is taken: only the variable lets it start.
    let (_taken, port) = taken_port();
    let p = project(port, "");
    let cmd = pyrs(
        &p.dir.path,
        &["project.pyrs"],
        &[("PYRS_HTTP_LISTEN_PORT", "0"), ("PYRS_THREAD_COUNT", "1")],
    );
    let server = Started::new(cmd);
    assert_ne!(server.port, port);
    let response = server.get("/");
    assert_eq!(response.status, 200);
    assert_eq!(response.text(), "ok");
}

#[test]
fn port_flag_beats_the_environment() {
    let (_taken, port) = taken_port();
    let p = project(port, "");
    let taken = port.to_string();
    // The helper passes `-p 0`; the variable names the taken port.
    let server = Server::start_with(
        &p.file,
        Launch {
            env: vec![("PYRS_HTTP_LISTEN_PORT".into(), taken.into())],
            ..Launch::default()
        },
    );
    assert_ne!(server.port, port);
    assert_eq!(server.get("/").status, 200);
}

#[test]
fn bad_value_exits_naming_the_variable() {
    let p = project(0, "");
    let out = finish(
        &p.dir.path,
        &["project.pyrs"],
        &[("PYRS_THREAD_COUNT", "0")],
    );
    assert!(!out.status.success(), "accepted; stdout:\n{}", out.stdout);
    assert!(!out.stdout.contains("Listening..."), "{}", out.stdout);
    assert_eq!(
        out.stderr,
        "pyrs: environment variable PYRS_THREAD_COUNT: must be at least 1\n"
    );
    let out = finish(&p.dir.path, &["project.pyrs"], &[("PYRS_WORKERS", "many")]);
    assert!(!out.status.success());
    assert_eq!(
        out.stderr,
        "pyrs: environment variable PYRS_WORKERS: expected an integer or \"auto\", found \"many\"\n"
    );
}

#[test]
fn checks_across_keys_hold_after_the_environment() {
    let p = project(0, "  \"max_connections\": 2,\n");
    let out = finish(
        &p.dir.path,
        &["--print-config", "project.pyrs"],
        &[("PYRS_THREAD_COUNT", "4")],
    );
    assert!(!out.status.success(), "accepted; stdout:\n{}", out.stdout);
    assert_eq!(
        out.stderr,
        "pyrs: project.pyrs:4:22: key \"max_connections\": must be at least thread_count \
         (4, from env PYRS_THREAD_COUNT)\n"
    );
}

#[test]
fn print_config_shows_values_and_origins() {
    let p = project(8000, "  \"thread_count\": 3,\n");
    let out = finish(
        &p.dir.path,
        &["--print-config", "project.pyrs", "-a", "::1"],
        &[
            ("PYRS_WORKERS", "4"),
            ("PYRS_ACCESS_LOG", "logs/access.log"),
            ("PYRS_HTTP_LISTEN_ADDRESS", "0.0.0.0"),
            ("PYRS_BIN", "/usr/local/bin/pyrs"),
        ],
    );
    assert!(out.status.success(), "stderr:\n{}", out.stderr);
    assert_eq!(out.stderr, "", "no warning, not even for PYRS_BIN");
    assert!(!out.stdout.contains("Listening"), "{}", out.stdout);
    let line = |key: &str| -> String {
        let line = out
            .stdout
            .lines()
            .find(|line| line.split(' ').next() == Some(key))
            .unwrap_or_else(|| panic!("no {key} line in\n{}", out.stdout));
        line.split_whitespace().collect::<Vec<_>>().join(" ")
    };
    assert_eq!(
        line("http_listen_address"),
        "http_listen_address = \"::1\" # flag --address"
    );
    assert_eq!(
        line("http_listen_port"),
        "http_listen_port = 8000 # project.pyrs:3:23"
    );
    assert_eq!(line("thread_count"), "thread_count = 3 # project.pyrs:4:19");
    assert_eq!(line("workers"), "workers = 4 # env PYRS_WORKERS");
    assert_eq!(line("listen_backlog"), "listen_backlog = 10 # default");
    let project_dir = p.dir.path.canonicalize().expect("canonical folder");
    let log = project_dir.join("logs/access.log");
    assert_eq!(
        line("access_log"),
        format!("access_log = \"{}\" # env PYRS_ACCESS_LOG", log.display())
    );
    // One `key = value  # origin` line per key, and nothing else.
    for line in out.stdout.lines() {
        let (key, rest) = line.split_once(" = ").expect("key = value");
        assert!(!key.trim().contains(' '), "{line}");
        assert!(rest.contains("  # "), "{line}");
    }
}

#[test]
fn print_config_takes_the_app_form_and_warns_about_near_misses() {
    let p = project(0, "");
    let out = finish(
        &p.dir.path,
        &["--print-config", "m:app", "--access-log", "-"],
        &[("PYRS_THREADS_COUNT", "2"), ("PYRS_LISTEN_BACKLOG", "64")],
    );
    assert!(out.status.success(), "stderr:\n{}", out.stderr);
    assert_eq!(
        out.stderr,
        "pyrs: warning: PYRS_THREADS_COUNT is not a setting; did you mean PYRS_THREAD_COUNT?\n"
    );
    let lines: Vec<String> = out
        .stdout
        .lines()
        .map(|line| line.split_whitespace().collect::<Vec<_>>().join(" "))
        .collect();
    for expected in [
        "thread_count = 2 # default",
        "listen_backlog = 64 # env PYRS_LISTEN_BACKLOG",
        "access_log = true # flag --access-log",
        "modules = [{\"path\": \"/*\", \"app\": \"m:app\", \"interface\": \"auto\", \"factory\": \
         false}] # argument m:app",
    ] {
        assert!(
            lines.iter().any(|l| l == expected),
            "{expected}\nnot in\n{}",
            out.stdout
        );
    }
}

#[test]
fn modules_from_the_environment_name_the_variable_in_python_errors() {
    let p = project(0, "");
    let modules = r#"[{"path": "/", "module": "nothere", "class": "C", "handler": "h"}]"#;
    let out = finish(
        &p.dir.path,
        &["project.pyrs", "-p", "0"],
        &[("PYRS_MODULES", modules)],
    );
    assert!(!out.status.success(), "accepted; stdout:\n{}", out.stdout);
    assert!(
        out.stderr.starts_with(
            "pyrs: environment variable PYRS_MODULES:1:26: key \"modules[0].module\": "
        ),
        "{}",
        out.stderr
    );
}
