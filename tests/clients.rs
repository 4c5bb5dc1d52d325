//! Real HTTP clients against pyrs: curl (keep-alive reuse, POST, HEAD,
//! chunked upload, `Expect: 100-continue`, HTTP/1.0) and Python's
//! `http.client` and `urllib`.

mod common;

use std::path::PathBuf;
use std::process::Command;

use common::{fixture, run_to_exit, Finished, Server};

fn app() -> Server {
    Server::start(&fixture("app/app.pyrs"))
}

/// `curl` as found on `PATH`.
fn curl_program() -> PathBuf {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .map(|dir| dir.join("curl"))
        .find(|candidate| candidate.is_file())
        .unwrap_or_else(|| panic!("these tests need curl on PATH ({path:?})"))
}

fn curl(args: &[&str]) -> Finished {
    let mut cmd = Command::new(curl_program());
    cmd.args(["--silent", "--show-error", "--max-time", "10"])
        .args(args);
    let out = run_to_exit(cmd);
    assert!(
        out.status.success(),
        "curl {args:?} failed:\n{}",
        out.stderr
    );
    out
}

fn url(s: &Server, path: &str) -> String {
    format!("http://127.0.0.1:{}{path}", s.port)
}

#[test]
fn curl_get_and_status() {
    let s = app();
    let out = curl(&[
        "--write-out",
        "\n%{http_code} %{content_type}",
        &url(&s, "/text"),
    ]);
    assert_eq!(out.stdout, "h\u{e9}llo\n200 text/html; charset=utf-8");
    let out = curl(&[
        "--write-out",
        "%{http_code}",
        "--output",
        "/dev/null",
        &url(&s, "/nope"),
    ]);
    assert_eq!(out.stdout, "404");
}

#[test]
fn curl_reuses_one_connection_for_several_urls() {
    let s = app();
    let (a, b, c) = (url(&s, "/text"), url(&s, "/dict"), url(&s, "/nope"));
    // After each transfer: how many new connections it made, and its status.
    let out = curl(&[
        "--write-out",
        "\n[connects %{num_connects}, status %{http_code}]\n",
        &a,
        &b,
        &c,
    ]);
    assert_eq!(
        out.stdout,
        "h\u{e9}llo\n[connects 1, status 200]\n\
         {\"a\":1,\"b\":[true,null],\"u\":\"\u{e9}\u{20ac}\"}\n[connects 0, status 200]\n\
         Not Found\n[connects 0, status 404]\n"
    );
}

#[test]
fn curl_post_echo_and_json() {
    let s = app();
    let out = curl(&["--data-binary", "posted by curl", &url(&s, "/echo")]);
    assert_eq!(out.stdout, "posted by curl");
    let out = curl(&[
        "--header",
        "Content-Type: application/json",
        "--data",
        "{\"n\": [1, 2]}",
        &url(&s, "/json"),
    ]);
    assert_eq!(out.stdout, "{\"got\":{\"n\":[1,2]}}");
}

#[test]
fn curl_head() {
    let s = app();
    let out = curl(&["--head", &url(&s, "/dict")]);
    let head = out.stdout.to_ascii_lowercase();
    assert!(head.starts_with("http/1.1 200 ok\r\n"), "{}", out.stdout);
    assert!(
        head.contains("\r\ncontent-type: application/json\r\n"),
        "{}",
        out.stdout
    );
    assert!(
        head.contains("\r\ncontent-length: 35\r\n"),
        "{}",
        out.stdout
    );
    assert!(head.contains("\r\nserver: pyrs\r\n"), "{}", out.stdout);
}

#[test]
fn curl_chunked_upload() {
    let s = app();
    let dir = common::TempDir::new("curl");
    let body: String = (0..20_000)
        .map(|i| char::from(b'a' + (i % 26) as u8))
        .collect();
    let file = dir.write("body.txt", &body);
    let file = format!("@{}", file.display());
    let out = curl(&[
        "--header",
        "Transfer-Encoding: chunked",
        "--data-binary",
        &file,
        &url(&s, "/echo"),
    ]);
    assert_eq!(out.stdout.len(), body.len());
    assert!(out.stdout == body, "chunked upload echoed differently");
}

#[test]
fn curl_expect_100_continue() {
    let s = app();
    let out = curl(&[
        "--verbose",
        "--header",
        "Expect: 100-continue",
        "--data-binary",
        "after continue",
        &url(&s, "/echo"),
    ]);
    assert!(
        out.stderr.contains("HTTP/1.1 100 Continue"),
        "{}",
        out.stderr
    );
    assert_eq!(out.stdout, "after continue");
}

#[test]
fn curl_http10() {
    let s = app();
    let out = curl(&["--http1.0", "--include", &url(&s, "/text")]);
    assert!(
        out.stdout.starts_with("HTTP/1.1 200 OK\r\n"),
        "{}",
        out.stdout
    );
    assert!(
        out.stdout.contains("\r\nConnection: close\r\n"),
        "{}",
        out.stdout
    );
    assert!(out.stdout.ends_with("\r\n\r\nh\u{e9}llo"), "{}", out.stdout);
}

const HTTP_CLIENT_SCRIPT: &str = r#"
import http.client, json, sys

port = int(sys.argv[1])
conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
results = []
ports = []
for method, path, body, headers in [
    ("GET", "/text", None, {}),
    ("POST", "/echo", b"from http.client", {}),
    ("GET", "/nope", None, {}),
    ("PUT", "/attrs?x=1&x=2", b"abc", {"X-Test": "yes"}),
    ("HEAD", "/dict", None, {}),
    ("GET", "/none", None, {}),
    ("POST", "/json", b'{"k": "v"}', {"Content-Type": "application/json"}),
    ("GET", "/fail", None, {}),
    ("GET", "/text", None, {}),
]:
    conn.request(method, path, body=body, headers=headers)
    r = conn.getresponse()
    data = r.read()
    # http.client reconnects silently after a close: the socket's local port shows
    # whether this request went over the first connection.
    ports.append(conn.sock.getsockname()[1] if conn.sock else None)
    results.append({
        "status": r.status,
        "type": r.getheader("Content-Type"),
        "length": r.getheader("Content-Length"),
        "server": r.getheader("Server"),
        "body": data.decode("utf-8", "replace"),
    })
# Every request went over the one connection.
results.append({"local_ports": len(ports), "distinct": len(set(ports)), "open": None not in ports})
print(json.dumps(results))
"#;

#[test]
fn python_http_client_on_one_connection() {
    let s = app();
    let mut cmd = Command::new("python3");
    cmd.arg("-c")
        .arg(HTTP_CLIENT_SCRIPT)
        .arg(s.port.to_string());
    let out = run_to_exit(cmd);
    assert!(out.status.success(), "{}", out.stderr);
    let o = out.stdout.trim();
    let expected = [
        r#"{"status": 200, "type": "text/html; charset=utf-8", "length": "6", "server": "pyrs", "body": "h\u00e9llo"}"#,
        r#"{"status": 200, "type": "application/octet-stream", "length": "16", "server": "pyrs", "body": "from http.client"}"#,
        r#"{"status": 404, "type": "text/plain; charset=utf-8", "length": "9", "server": "pyrs", "body": "Not Found"}"#,
        r#"{"status": 200, "type": "application/json", "length": "35", "server": "pyrs", "body": ""}"#,
        r#"{"status": 204, "type": null, "length": null, "server": "pyrs", "body": ""}"#,
        r#"{"status": 200, "type": "application/json", "length": "17", "server": "pyrs", "body": "{\"got\":{\"k\":\"v\"}}"}"#,
        r#"{"status": 500, "type": "text/plain; charset=utf-8", "length": "21", "server": "pyrs", "body": "Internal Server Error"}"#,
        r#"{"local_ports": 9, "distinct": 1, "open": true}"#,
    ];
    for e in expected {
        assert!(o.contains(e), "missing {e}\nin {o}");
    }
    assert!(
        o.contains(r#""body": "{\"method\":\"PUT\",\"path\":\"/attrs\""#),
        "{o}"
    );
    assert!(o.contains(r#"\"query\":{\"x\":[\"1\",\"2\"]}"#), "{o}");
    assert!(o.contains(r#"\"body_len\":3"#), "{o}");
}

const URLLIB_SCRIPT: &str = r#"
import sys, urllib.request, urllib.error

base = "http://127.0.0.1:%s" % sys.argv[1]
with urllib.request.urlopen(base + "/list", timeout=10) as r:
    print(r.status, r.headers["Content-Type"], r.read().decode())
req = urllib.request.Request(base + "/echo", data=b"urllib body", method="POST")
with urllib.request.urlopen(req, timeout=10) as r:
    print(r.status, r.read().decode())
try:
    urllib.request.urlopen(base + "/http_error?kind=teapot", timeout=10)
except urllib.error.HTTPError as e:
    print(e.code, e.headers["Content-Type"], e.read().decode())
"#;

#[test]
fn python_urllib() {
    let s = app();
    let mut cmd = Command::new("python3");
    cmd.arg("-c").arg(URLLIB_SCRIPT).arg(s.port.to_string());
    let out = run_to_exit(cmd);
    assert!(out.status.success(), "{}", out.stderr);
    assert_eq!(
        out.stdout,
        "200 application/json [1,\"two\",{\"three\":3.5}]\n200 urllib body\n\
418 text/x-teapot short and stout\n"
    );
}
