//! Listening on a Unix domain socket (`unix:PATH`): requests over it, what the
//! app sees as the client, the socket file's mode, a stale file from a crash
//! replaced, a live server's socket left alone, and the file removed at exit.

mod common;

use std::io::{Read, Write};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::time::Duration;

use common::{run_to_exit, Launch, Server, TempDir};

const APP: &str = r#"
class App:
    def who(self, request):
        return f"[{request.remote_addr}] {request.remote_port}"

def wsgi(environ, start_response):
    start_response("200 OK", [("Content-Type", "text/plain")])
    return [f"[{environ['REMOTE_ADDR']}] {environ['SERVER_NAME']}".encode()]

async def asgi(scope, receive, send):
    if scope["type"] != "http":
        return
    body = f"{scope['client']} {scope['server']}".encode()
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await send({"type": "http.response.body", "body": body})
"#;

fn project(dir: &TempDir) -> std::path::PathBuf {
    dir.write("app.py", APP);
    dir.write(
        "project.pyrs",
        r#"{
  "modules": [
    { "path": "/who", "module": "app", "class": "App", "handler": "who" },
    { "path": "/wsgi/*", "app": "app:wsgi", "interface": "wsgi" },
    { "path": "/asgi/*", "app": "app:asgi", "interface": "asgi" }
  ]
}"#,
    )
}

fn start(project: &Path, socket: &Path, args: &[&str]) -> Server {
    Server::start_with(
        project,
        Launch {
            address: Some(format!("unix:{}", socket.display())),
            args: args.iter().map(|s| s.to_string()).collect(),
            ..Launch::default()
        },
    )
}

/// GET `path` over the socket; the whole response (the server closes).
fn get(socket: &Path, path: &str) -> String {
    let mut s = UnixStream::connect(socket).expect("connect to the socket");
    s.set_read_timeout(Some(Duration::from_secs(10)))
        .expect("timeout");
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
    )
    .expect("send");
    let mut out = String::new();
    s.read_to_string(&mut out).expect("read");
    out
}

fn body(response: &str) -> &str {
    response.split_once("\r\n\r\n").map_or("", |(_, b)| b)
}

#[test]
fn serves_over_a_unix_socket_and_removes_it_at_exit() {
    let dir = TempDir::new("unix");
    let socket = dir.join("pyrs.sock");
    let mut server = start(&project(&dir), &socket, &[]);
    server.expect_stdout(&format!("Address: unix:{}", socket.display()));
    let mode = std::fs::metadata(&socket)
        .expect("socket file")
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o660, "documented mode");

    let r = get(&socket, "/who");
    assert!(r.starts_with("HTTP/1.1 200 OK\r\n"), "{r}");
    assert_eq!(body(&r), "[] 0", "no client address over a Unix socket");
    let r = get(&socket, "/wsgi/x");
    // SERVER_NAME comes from the Host header.
    assert_eq!(body(&r), "[] x");
    let r = get(&socket, "/asgi/x");
    assert_eq!(body(&r), format!("None ('{}', None)", socket.display()));
    // The reactors answer here too.
    assert!(get(&socket, "/nothing").starts_with("HTTP/1.1 404 "));

    // Keep-alive and pipelining over the socket.
    let mut s = UnixStream::connect(&socket).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(10)))
        .expect("timeout");
    s.write_all(b"GET /who HTTP/1.1\r\nHost: x\r\n\r\nGET /who HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .expect("send");
    let mut out = String::new();
    s.read_to_string(&mut out).expect("read");
    assert_eq!(out.matches("HTTP/1.1 200 OK").count(), 2, "{out}");

    server.signal(libc::SIGTERM);
    assert!(server
        .wait_exit(Duration::from_secs(15))
        .is_some_and(|st| st.success()));
    assert!(!socket.exists(), "the socket file is removed at exit");
}

#[test]
fn replaces_a_stale_socket_but_not_a_live_one() {
    let dir = TempDir::new("unix-stale");
    let socket = dir.join("pyrs.sock");
    let project = project(&dir);
    // What a crashed server leaves: a socket file nobody listens on.
    drop(std::os::unix::net::UnixListener::bind(&socket).expect("stale socket"));
    let server = start(&project, &socket, &["-w", "2"]);
    assert!(body(&get(&socket, "/who")).starts_with("[]"));

    // A second server must not take the live one's socket.
    let mut cmd = std::process::Command::new(common::pyrs_bin());
    cmd.arg(&project)
        .args(["-a", &format!("unix:{}", socket.display())]);
    let second = run_to_exit(cmd);
    assert!(!second.status.success());
    assert!(
        second.stderr.contains("another server is listening there"),
        "{}",
        second.stderr
    );
    // The first one is unharmed.
    assert!(body(&get(&socket, "/who")).starts_with("[]"));

    // A path that is not a socket is refused, not deleted.
    let file = dir.write("not-a-socket", "data");
    let mut cmd = std::process::Command::new(common::pyrs_bin());
    cmd.arg(&project)
        .args(["-a", &format!("unix:{}", file.display())]);
    let third = run_to_exit(cmd);
    assert!(third.stderr.contains("is not a socket"), "{}", third.stderr);
    assert!(file.exists());
    drop(server);
}
