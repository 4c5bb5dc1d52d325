//! Real frameworks on pyrs, unmodified: Flask and Django apps (WSGI) and a
//! FastAPI app (ASGI), pinned with all their dependencies and installed by the test itself
//! into venvs made from the Python pyrs runs on, for routing, path and query
//! parameters, JSON in and out, form posts, a 2 MB multipart upload, cookies,
//! redirects, the framework's own 404 and 500 (traceback on stderr, the server
//! keeps serving), HEAD, pipelining, a prefix mount whose generated URLs carry the
//! prefix, Django templates and reverse(), and for FastAPI lifespan state and 100
//! concurrent awaits, a Flask generator (`stream_with_context`) and a Starlette
//! `StreamingResponse` of server-sent events streamed part by part. Uses
//! `tests/fixtures/flask`, `tests/fixtures/django` and `tests/fixtures/fastapi`.

mod common;

use std::process::Command;

use common::{
    embedded_python, fixture, framework_venv, get, post, run_to_exit, Launch, Server, FASTAPI,
    FLASK,
};

/// Starts `project` with the framework venv `name` (built from `requirements`).
fn framework(project: &str, name: &str, requirements: &[&str]) -> Server {
    let venv = framework_venv(name, requirements);
    Server::start_with(
        &fixture(project),
        Launch {
            env: vec![("VIRTUAL_ENV".into(), venv.into_os_string())],
            ..Launch::default()
        },
    )
}

fn flask() -> Server {
    framework("flask/flask.pyrs", "flask-3.1.3", FLASK)
}

fn fastapi() -> Server {
    framework("fastapi/fastapi.pyrs", "fastapi-0.165.0", FASTAPI)
}

/// A 2 MB multipart upload of a file `data.bin`, and what the apps answer for
/// it: name, length and SHA-256 (computed by the same Python here).
fn upload_request() -> (Vec<u8>, String) {
    let data: Vec<u8> = (0..2_000_000u32).map(|i| (i % 251) as u8).collect();
    let boundary = "pyrsboundary7MA4YWxkTrZu0gW";
    let mut body = format!(
        "--{boundary}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"data.bin\"\r\n\
         Content-Type: application/octet-stream\r\n\r\n"
    )
    .into_bytes();
    body.extend_from_slice(&data);
    body.extend_from_slice(format!("\r\n--{boundary}--\r\n").as_bytes());
    let mut raw = format!(
        "POST /upload HTTP/1.1\r\nHost: t\r\nContent-Type: multipart/form-data; boundary={boundary}\r\n\
         Content-Length: {}\r\n\r\n",
        body.len()
    )
    .into_bytes();
    raw.extend_from_slice(&body);
    let mut cmd = Command::new(embedded_python().program);
    cmd.args([
        "-c",
        "import hashlib; print(hashlib.sha256(bytes(i % 251 for i in range(2_000_000))).hexdigest())",
    ]);
    let expected = format!("data.bin 2000000 {}", run_to_exit(cmd).stdout.trim());
    (raw, expected)
}

#[test]
fn routes_params_and_json() {
    let s = flask();
    s.get("/")
        .assert_ok_body(200, "text/html; charset=utf-8", b"hello flask");
    let r = s.get("/items/42?q=x%20y&t=a&t=b");
    r.assert_ok_body(
        200,
        "application/json",
        b"{\"id\":42,\"q\":\"x y\",\"tags\":[\"a\",\"b\"]}\n",
    );
    let r = s.request(
        b"POST /json HTTP/1.1\r\nHost: t\r\nContent-Type: application/json\r\nContent-Length: 23\r\n\r\n{\"name\": \"py\", \"n\": 41}",
    );
    r.assert_ok_body(200, "application/json", b"{\"n\":42,\"name\":\"py\"}\n");
    // The framework's own 404, not pyrs's.
    let r = s.get("/items/not-a-number");
    r.assert_basics(404);
    assert!(r.text().contains("<h1>Not Found</h1>"), "{}", r.text());
}

#[test]
fn forms_uploads_and_cookies() {
    let s = flask();
    let r = s.request(
        b"POST /form HTTP/1.1\r\nHost: t\r\nContent-Type: application/x-www-form-urlencoded\r\nContent-Length: 11\r\n\r\na=1&b=two+2",
    );
    r.assert_ok_body(200, "text/html; charset=utf-8", b"1+two 2");

    // 2 MB multipart upload, hashed by the view and by the same Python here.
    let (raw, expected) = upload_request();
    let r = s.request(&raw);
    r.assert_ok_body(200, "text/html; charset=utf-8", expected.as_bytes());

    let r = s.get("/cookies");
    r.assert_basics(200);
    assert_eq!(
        r.header_all("set-cookie"),
        vec!["a=1; Path=/", "b=2; HttpOnly; Path=/"]
    );
    let r = s.request(b"GET /seen-cookies HTTP/1.1\r\nHost: t\r\nCookie: a=1; b=2\r\n\r\n");
    r.assert_ok_body(200, "text/html; charset=utf-8", b"a=1,b=2");
}

#[test]
fn redirects_and_prefix_mounts_make_correct_urls() {
    let s = flask();
    let r = s.get("/redirect");
    r.assert_basics(302);
    assert_eq!(r.header("location"), Some("/items/7"));
    let r = s.get("/p/redirect");
    r.assert_basics(302);
    assert_eq!(r.header("location"), Some("/p/items/7"));
    s.get("/p/link")
        .assert_ok_body(200, "text/html; charset=utf-8", b"/p/items/3");
    s.get("/link")
        .assert_ok_body(200, "text/html; charset=utf-8", b"/items/3");
}

#[test]
fn a_failing_view_is_flasks_500_and_the_server_goes_on() {
    let s = flask();
    let r = s.get("/boom");
    r.assert_basics(500);
    assert!(r.text().contains("Internal Server Error"), "{}", r.text());
    s.expect_stderr("RuntimeError: flask view failed");
    s.get("/")
        .assert_ok_body(200, "text/html; charset=utf-8", b"hello flask");
}

#[test]
fn head_and_pipelined_requests() {
    let s = flask();
    let r = s.request(b"HEAD / HTTP/1.1\r\nHost: t\r\n\r\n");
    r.assert_basics(200);
    assert!(r.body.is_empty());
    assert_eq!(r.content_length(), Some("hello flask".len()));
    let mut c = s.connect();
    let mut raw = Vec::new();
    for path in ["/items/1", "/", "/items/2", "/nope/x"] {
        raw.extend_from_slice(&get(path));
    }
    raw.extend_from_slice(&post("/form", b"a=x&b=y"));
    c.send(&raw);
    let statuses: Vec<(u16, String)> = (0..5)
        .map(|_| {
            let r = c.read_response();
            (r.status, r.text())
        })
        .collect();
    assert_eq!(statuses[0].0, 200);
    assert!(statuses[0].1.starts_with("{\"id\":1,"));
    assert_eq!(statuses[1], (200, "hello flask".to_owned()));
    assert!(statuses[2].1.starts_with("{\"id\":2,"));
    assert_eq!(statuses[3].0, 404);
    // The form needs its content type; without it Flask answers 400.
    assert_eq!(statuses[4].0, 400);
}

#[test]
fn a_flask_generator_streams_with_its_request_context() {
    let s = flask();
    let r = s.get("/stream?n=3");
    r.assert_chunked_body(
        200,
        "text/plain; charset=utf-8",
        b"part 0 of /stream\npart 1 of /stream\npart 2 of /stream\n",
    );
    // The connection goes on behind it, and plain views keep their length.
    let mut c = s.connect();
    let mut raw = get("/stream?n=1");
    raw.extend_from_slice(&get("/"));
    c.send(&raw);
    assert_eq!(c.read_response().text(), "part 0 of /stream\n");
    let r = c.read_response();
    r.assert_ok_body(200, "text/html; charset=utf-8", b"hello flask");
}

#[test]
fn a_starlette_streaming_response_sends_each_event_as_it_comes() {
    let s = fastapi();
    let mut c = s.connect();
    c.send(&get("/events"));
    let mut events = Events::new(&c);
    assert!(events.until("data: one\n\n").contains("text/event-stream"));
    // The second event waits for /release, on another connection.
    assert_eq!(s.get("/release").text(), "released");
    assert_eq!(events.until("data: two\n\n"), "\r\nb\r\ndata: two\n\n");
    assert_eq!(events.until("0\r\n\r\n"), "\r\n0\r\n\r\n");
}

/// Reads a response's raw bytes as they come.
struct Events {
    stream: std::net::TcpStream,
    got: String,
}

impl Events {
    fn new(c: &common::Conn) -> Events {
        Events {
            stream: c.stream.try_clone().expect("clone"),
            got: String::new(),
        }
    }

    /// Everything up to and including `needle`, read within 10 s.
    fn until(&mut self, needle: &str) -> String {
        use std::io::Read;
        let mut buf = [0u8; 4096];
        while !self.got.contains(needle) {
            let n = self.stream.read(&mut buf).expect("read within the timeout");
            assert!(n > 0, "closed before {needle:?}: {:?}", self.got);
            self.got.push_str(&String::from_utf8_lossy(&buf[..n]));
        }
        let end = self.got.find(needle).expect("found") + needle.len();
        self.got.drain(..end).collect()
    }
}

#[test]
fn fastapi_routes_json_forms_and_uploads() {
    let s = fastapi();
    s.get("/")
        .assert_ok_body(200, "application/json", b"{\"hello\":\"fastapi\"}");
    s.get("/items/5?q=x%20y")
        .assert_ok_body(200, "application/json", b"{\"id\":5,\"q\":\"x y\"}");
    // Validation errors are FastAPI's 422.
    let r = s.get("/items/five");
    r.assert_basics(422);
    assert!(r.text().contains("int_parsing"), "{}", r.text());
    let r = s.request(
        b"POST /json HTTP/1.1\r\nHost: t\r\nContent-Type: application/json\r\nContent-Length: 23\r\n\r\n{\"name\": \"py\", \"n\": 41}",
    );
    r.assert_ok_body(200, "application/json", b"{\"name\":\"py\",\"n\":42}");
    let r = s.request(
        b"POST /form HTTP/1.1\r\nHost: t\r\nContent-Type: application/x-www-form-urlencoded\r\nContent-Length: 11\r\n\r\na=1&b=two+2",
    );
    r.assert_ok_body(200, "text/plain; charset=utf-8", b"1+two 2");
    let (raw, expected) = upload_request();
    s.request(&raw)
        .assert_ok_body(200, "text/plain; charset=utf-8", expected.as_bytes());
    let r = s.get("/nope");
    r.assert_ok_body(404, "application/json", b"{\"detail\":\"Not Found\"}");
}

#[test]
fn fastapi_lifespan_state_cookies_mounts_and_errors() {
    let mut s = fastapi();
    s.expect_stdout("lifespan startup");
    s.get("/state").assert_ok_body(
        200,
        "application/json",
        b"{\"greeting\":\"hello from lifespan\"}",
    );
    let r = s.get("/cookies");
    r.assert_basics(200);
    assert_eq!(
        r.header_all("set-cookie"),
        vec![
            "a=1; Path=/; SameSite=lax",
            "b=2; HttpOnly; Path=/; SameSite=lax"
        ]
    );
    s.get("/p/link")
        .assert_ok_body(200, "text/plain; charset=utf-8", b"/p/items/3");
    s.get("/link")
        .assert_ok_body(200, "text/plain; charset=utf-8", b"/items/3");
    let r = s.get("/p/redirect");
    r.assert_basics(307);
    assert_eq!(r.header("location"), Some("/p/items/7"));
    let r = s.get("/boom");
    r.assert_ok_body(500, "text/plain; charset=utf-8", b"Internal Server Error");
    s.expect_stderr("RuntimeError: fastapi view failed");
    s.get("/").assert_basics(200);
    // HEAD and pipelined order.
    let r = s.request(b"HEAD /items/1 HTTP/1.1\r\nHost: t\r\n\r\n");
    assert!(matches!(r.status, 200 | 405), "{r:#?}");
    let mut c = s.connect();
    let mut raw = Vec::new();
    for path in ["/sleep", "/items/1", "/items/2"] {
        raw.extend_from_slice(&get(path));
    }
    c.send(&raw);
    let bodies: Vec<String> = (0..3).map(|_| c.read_response().text()).collect();
    assert_eq!(bodies[0], "slept");
    assert!(bodies[1].starts_with("{\"id\":1,") && bodies[2].starts_with("{\"id\":2,"));
    // Lifespan shutdown runs at stop.
    s.signal(libc::SIGTERM);
    assert!(s
        .wait_exit(std::time::Duration::from_secs(15))
        .is_some_and(|st| st.success()));
    assert!(s.stdout().contains("lifespan shutdown"), "{}", s.stdout());
}

#[test]
fn fastapi_websockets_work_unmodified() {
    let s = fastapi();
    let venv = framework_venv("websockets-15.0.1", &["websockets==15.0.1"]);
    let script = r#"
import asyncio, json, os, websockets
async def main():
    async with websockets.connect(f"ws://127.0.0.1:{os.environ['PORT']}/ws/lobby?q=1") as ws:
        await ws.send("hi"); print(await ws.recv())
        await ws.send("json"); print(json.dumps(json.loads(await ws.recv()), sort_keys=True))
        await ws.close(1000)
asyncio.run(main())
"#;
    let mut cmd = Command::new(venv.join("bin/python"));
    cmd.args(["-c", script]).env("PORT", s.port.to_string());
    let out = run_to_exit(cmd);
    assert!(
        out.status.success(),
        "{}{}\n{}",
        out.stdout,
        out.stderr,
        s.stderr()
    );
    assert_eq!(
        out.stdout.lines().collect::<Vec<_>>(),
        ["lobby: hi", "{\"q\": \"1\", \"room\": \"lobby\"}"]
    );
    assert!(
        s.wait_stdout("ws disconnect 1000", std::time::Duration::from_secs(5)),
        "{}",
        s.stdout()
    );
}

#[test]
fn fastapi_serves_100_concurrent_awaits_at_once() {
    let s = fastapi();
    let started = std::time::Instant::now();
    let conns: Vec<_> = (0..100)
        .map(|_| {
            let mut c = s.connect();
            c.send(&get("/sleep"));
            c
        })
        .collect();
    for mut c in conns {
        c.read_response()
            .assert_ok_body(200, "text/plain; charset=utf-8", b"slept");
    }
    let took = started.elapsed();
    // Each sleeps 0.2 s; one after another they would take 20 s.
    assert!(took < std::time::Duration::from_secs(5), "took {took:?}");
}

/// Django and what it pulls in, pinned.
const DJANGO: &[&str] = &["django==5.2.19", "asgiref==3.13.0", "sqlparse==0.6.1"];

fn django() -> Server {
    framework("django/django.pyrs", "django-5.2.19", DJANGO)
}

#[test]
fn django_templates_posts_errors_and_reverse_under_a_mount() {
    let s = django();
    s.get("/")
        .assert_ok_body(200, "text/html; charset=utf-8", b"hello django");
    s.get("/hello/pyrs/?i=a&i=%3Cb%3E").assert_ok_body(
        200,
        "text/html; charset=utf-8",
        b"<p>Hello, pyrs!</p><ul><li>a</li><li>&lt;b&gt;</li></ul>\n",
    );
    let r = s.request(
        b"POST /post/ HTTP/1.1\r\nHost: t\r\nContent-Type: application/x-www-form-urlencoded\r\nContent-Length: 5\r\n\r\na=1+2",
    );
    r.assert_ok_body(
        200,
        "application/json",
        b"{\"a\": \"1 2\", \"method\": \"POST\"}",
    );
    // CommonMiddleware's APPEND_SLASH redirect, and Django's own 404 and 500.
    let r = s.get("/hello/pyrs");
    r.assert_basics(301);
    assert_eq!(r.header("location"), Some("/hello/pyrs/"));
    s.get("/nothing/here/").assert_basics(404);
    let r = s.get("/boom/");
    r.assert_basics(500);
    s.expect_stderr("RuntimeError: django view failed");
    // reverse() under the mount carries its prefix (SCRIPT_NAME).
    s.get("/d/link/")
        .assert_ok_body(200, "text/html; charset=utf-8", b"/d/hello/x/");
    s.get("/link/")
        .assert_ok_body(200, "text/html; charset=utf-8", b"/hello/x/");
}

/// Starts an `examples/NAME` app the way its README line says, with the
/// framework venv `venv` active.
fn example_app(name: &str, venv: std::path::PathBuf) -> Server {
    Server::start_with(
        std::path::Path::new("app:app"),
        Launch {
            args: vec![
                "--app-dir".into(),
                common::repo_root()
                    .join("examples")
                    .join(name)
                    .to_string_lossy()
                    .into_owned(),
            ],
            env: vec![("VIRTUAL_ENV".into(), venv.into_os_string())],
            ..Launch::default()
        },
    )
}

#[test]
fn the_flask_django_and_fastapi_examples_run_as_documented() {
    let s = example_app("flask", framework_venv("flask-3.1.3", FLASK));
    s.get("/").assert_ok_body(
        200,
        "text/html; charset=utf-8",
        b"Hello from Flask on pyrs!",
    );
    s.request(&post("/echo", b"round trip")).assert_ok_body(
        200,
        "text/html; charset=utf-8",
        b"round trip",
    );
    let s = example_app("django", framework_venv("django-5.2.19", DJANGO));
    s.get("/").assert_ok_body(
        200,
        "text/html; charset=utf-8",
        b"Hello from Django on pyrs!",
    );
    s.get("/hello/pyrs").assert_ok_body(
        200,
        "application/json",
        b"{\"hello\": \"pyrs\", \"agent\": null}",
    );
    // Django's CSRF middleware is not on in the example: a POST echoes.
    s.request(&post("/echo", b"round trip")).assert_ok_body(
        200,
        "application/octet-stream",
        b"round trip",
    );
    let s = example_app("fastapi", framework_venv("fastapi-0.165.0", FASTAPI));
    s.get("/items/9?q=z")
        .assert_ok_body(200, "application/json", b"{\"id\":9,\"q\":\"z\"}");
    s.get("/slow").assert_ok_body(
        200,
        "application/json",
        b"{\"waited\":0.1,\"state\":\"at startup, by lifespan\"}",
    );
}
