//! WSGI applications (PEP 3333) served by pyrs: the environ, mounts
//! (`SCRIPT_NAME`/`PATH_INFO`), `wsgi.input`, `start_response` with `exc_info`
//! and `write()`, `close()` always called, `wsgi.file_wrapper`, headers pyrs owns,
//! errors (500 with a traceback, the server keeps serving), `wsgiref.validate`,
//! factories, a pyrs handler beside the apps, pipelining, the app form of the
//! command line and its errors. Uses `tests/fixtures/wsgi`.

mod common;

use common::{fixture, get, post, run_pyrs, Launch, Server};

fn apps() -> Server {
    Server::start(&fixture("wsgi/wsgi.pyrs"))
}

/// Runs `pyrs args...` in `dir` and checks it refuses to start: exit status 1
/// and stderr starting with `expected`.
fn expect_refusal(args: &[&str], dir: &std::path::Path, expected: &str) {
    let out = run_pyrs(args, Some(dir));
    assert_eq!(out.status.code(), Some(1), "{args:?}: {}", out.stderr);
    assert!(
        out.stderr.starts_with(expected),
        "{args:?}: stderr {:?} should start with {expected:?}",
        out.stderr
    );
}

/// The JSON text of `key` in an environ dump (json.dumps, sorted keys).
fn field<'a>(dump: &'a str, key: &str) -> &'a str {
    let needle = format!("\"{key}\": ");
    let start = dump
        .find(&needle)
        .unwrap_or_else(|| panic!("{key} not in {dump}"))
        + needle.len();
    let rest = &dump[start..];
    let end = if let Some(text) = rest.strip_prefix('"') {
        1 + text.find('"').expect("closing quote") + 1
    } else {
        rest.find([',', '}']).expect("end of value")
    };
    &rest[..end]
}

#[test]
fn environ_has_the_cgi_and_wsgi_keys() {
    let s = apps();
    let r = s.request(
        b"POST /mnt/a%20b/c?x=1&y=%20 HTTP/1.1\r\nHost: example.org:8443\r\nContent-Type: text/csv\r\n\
          Content-Length: 5\r\nX-Multi: 1\r\nX-Multi: 2\r\nX_Spoof: no\r\nUser-Agent: t\r\n\r\nhello",
    );
    r.assert_basics(200);
    assert_eq!(r.header("content-type"), Some("application/json"));
    let t = r.text();
    assert_eq!(field(&t, "REQUEST_METHOD"), "\"POST\"");
    assert_eq!(field(&t, "SCRIPT_NAME"), "\"/mnt\"");
    assert_eq!(field(&t, "PATH_INFO"), "\"/a b/c\"");
    assert_eq!(field(&t, "QUERY_STRING"), "\"x=1&y=%20\"");
    assert_eq!(field(&t, "CONTENT_TYPE"), "\"text/csv\"");
    assert_eq!(field(&t, "CONTENT_LENGTH"), "\"5\"");
    assert_eq!(field(&t, "SERVER_NAME"), "\"example.org\"");
    assert_eq!(field(&t, "SERVER_PORT"), "\"8443\"");
    assert_eq!(field(&t, "SERVER_PROTOCOL"), "\"HTTP/1.1\"");
    assert_eq!(field(&t, "REMOTE_ADDR"), "\"127.0.0.1\"");
    assert!(field(&t, "REMOTE_PORT")
        .trim_matches('"')
        .parse::<u16>()
        .is_ok());
    assert_eq!(field(&t, "HTTP_HOST"), "\"example.org:8443\"");
    assert_eq!(field(&t, "HTTP_X_MULTI"), "\"1,2\"");
    assert_eq!(field(&t, "HTTP_USER_AGENT"), "\"t\"");
    assert!(
        !t.contains("HTTP_X_SPOOF"),
        "a name with '_' is dropped: {t}"
    );
    assert!(!t.contains("HTTP_CONTENT_TYPE") && !t.contains("HTTP_CONTENT_LENGTH"));
    assert_eq!(field(&t, "body"), "\"hello\"");
    assert_eq!(field(&t, "wsgi.version"), "[1");
    assert_eq!(field(&t, "wsgi.url_scheme"), "\"http\"");
    assert_eq!(field(&t, "wsgi.multithread"), "false");
    assert_eq!(field(&t, "wsgi.multiprocess"), "false");
    assert_eq!(field(&t, "wsgi.run_once"), "false");
    assert_eq!(field(&t, "wsgi.input_terminated"), "true");
    assert_eq!(field(&t, "wsgi.errors"), "true");
}

#[test]
fn the_catch_all_mount_has_an_empty_script_name() {
    let s = apps();
    let t = s.get("/some/where").text();
    assert_eq!(field(&t, "SCRIPT_NAME"), "\"\"");
    assert_eq!(field(&t, "PATH_INFO"), "\"/some/where\"");
    // The mount point itself: PATH_INFO is empty.
    let t = s.get("/mnt").text();
    assert_eq!(field(&t, "SCRIPT_NAME"), "\"/mnt\"");
    assert_eq!(field(&t, "PATH_INFO"), "\"\"");
    // HTTP/1.0 without Host: the configured address.
    let r = s.request(b"GET /x HTTP/1.0\r\n\r\n");
    let t = r.text();
    assert_eq!(field(&t, "SERVER_PROTOCOL"), "\"HTTP/1.0\"");
    assert_eq!(field(&t, "SERVER_NAME"), "\"127.0.0.1\"");
}

#[test]
fn chunked_bodies_arrive_decoded_with_their_length() {
    let s = apps();
    let r = s.request(
        b"POST /x HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n2\r\nde\r\n0\r\n\r\n",
    );
    r.assert_basics(200);
    let t = r.text();
    assert_eq!(field(&t, "body"), "\"abcde\"");
    assert_eq!(field(&t, "CONTENT_LENGTH"), "\"5\"");
}

#[test]
fn a_validated_app_reads_its_input_line_by_line() {
    let s = apps();
    let r = s.request(&post("/lines", b"one\ntwo\nthree"));
    // wsgiref.validate wraps the body in an iterator: it streams.
    r.assert_chunked_body(201, "text/plain", b"first=one\nrest=two\nrest=three");
    assert_eq!(r.header("x-lines"), Some("3"));
    // HEAD: the same headers, no body.
    let r = s.request(b"HEAD /lines HTTP/1.1\r\nHost: t\r\n\r\n");
    r.assert_basics(201);
    assert!(r.body.is_empty());
    assert_eq!(r.content_length(), Some("first=".len()));
    assert_eq!(
        s.stderr(),
        "",
        "wsgiref.validate found nothing to complain about"
    );
}

#[test]
fn close_is_called_also_when_iterating_fails() {
    let s = apps();
    s.get("/closing")
        .assert_chunked_body(200, "text/plain", b"one,two");
    assert_eq!(s.get("/events").text(), "closed");
    // The first item streamed before the failure: the response is cut short
    // (no last chunk) and the connection closed.
    let mut c = s.connect();
    c.send(&get("/closing?fail"));
    assert!(c.try_read_response(false).is_err(), "an unfinished body");
    assert_eq!(s.get("/events").text(), "closed,closed");
    s.expect_stderr("RuntimeError: broke while iterating");
}

#[test]
fn an_exception_is_a_500_with_its_traceback_and_the_server_goes_on() {
    let s = apps();
    let r = s.get("/raises");
    r.assert_ok_body(500, "text/plain; charset=utf-8", b"Internal Server Error");
    s.expect_stderr("error in WSGI app apps:raises for GET /raises");
    s.expect_stderr("ValueError: wsgi app failed on purpose");
    s.get("/fast")
        .assert_ok_body(200, "text/html; charset=utf-8", b"pyrs handler");
}

#[test]
fn exc_info_replaces_the_response_and_a_second_call_without_it_fails() {
    let s = apps();
    let r = s.get("/error-page");
    r.assert_ok_body(503, "text/plain", b"try later");
    assert_eq!(r.header("retry-after"), Some("1"));
    let r = s.get("/twice");
    r.assert_basics(500);
    s.expect_stderr("start_response() called a second time without exc_info");
    s.get("/no-start").assert_basics(500);
    s.expect_stderr("without calling start_response()");
    s.get("/not-bytes").assert_basics(500);
    s.expect_stderr("a WSGI application must yield bytes, not str");
}

#[test]
fn write_and_file_wrapper_and_repeated_headers() {
    let s = apps();
    s.get("/writer")
        .assert_ok_body(200, "text/plain", b"written then returned");
    let r = s.get("/file");
    r.assert_chunked_body(200, "application/octet-stream", &[b'x'; 100_000]);
    let r = s.get("/cookies");
    r.assert_basics(302);
    assert_eq!(r.header("location"), Some("/elsewhere"));
    assert_eq!(
        r.header_all("set-cookie"),
        vec!["a=1; Path=/", "b=2; Path=/; HttpOnly"]
    );
    // The app's wrong Content-Length is pyrs's to write, from the real body.
    assert_eq!(r.header_all("content-length"), vec!["5"]);
    assert_eq!(r.text(), "moved");
    assert_eq!(
        r.header("content-type"),
        None,
        "no type the app did not set"
    );
}

#[test]
fn a_factory_is_called_once() {
    let s = apps();
    s.get("/made")
        .assert_ok_body(200, "text/plain", b"made by the factory");
}

#[test]
fn pipelined_requests_to_apps_handlers_and_404s_stay_in_order() {
    let s = apps();
    let mut c = s.connect();
    let mut raw = Vec::new();
    for path in ["/writer", "/fast", "/made", "/writer"] {
        raw.extend_from_slice(&get(path));
    }
    c.send(&raw);
    let bodies: Vec<String> = (0..4).map(|_| c.read_response().text()).collect();
    assert_eq!(
        bodies,
        [
            "written then returned",
            "pyrs handler",
            "made by the factory",
            "written then returned"
        ]
    );
}

#[test]
fn the_app_form_of_the_command_line_serves_one_app() {
    let dir = fixture("wsgi");
    let s = Server::start_with(
        std::path::Path::new("apps:environ_dump"),
        Launch {
            args: vec!["--app-dir".into(), dir.to_string_lossy().into_owned()],
            ..Launch::default()
        },
    );
    let t = s.get("/any/path").text();
    assert_eq!(field(&t, "SCRIPT_NAME"), "\"\"");
    assert_eq!(field(&t, "PATH_INFO"), "\"/any/path\"");
    s.expect_stdout("Added route /*");
    let s = Server::start_with(
        std::path::Path::new("apps:make_app"),
        Launch {
            args: vec!["--factory".into()],
            cwd: Some(dir.clone()),
            ..Launch::default()
        },
    );
    s.get("/")
        .assert_ok_body(200, "text/plain", b"made by the factory");
}

#[test]
fn app_form_errors_name_the_app_and_the_flag() {
    let dir = fixture("wsgi");
    let cases: [(&[&str], &str); 5] = [
        (
            &["nosuchmodule:app"],
            "pyrs: nosuchmodule:app: cannot import module \"nosuchmodule\":",
        ),
        (
            &["apps:missing"],
            "pyrs: apps:missing: module \"apps\" has no attribute \"missing\"",
        ),
        (
            &["apps:EVENTS"],
            "pyrs: apps:EVENTS: apps:EVENTS is a list, not a callable application",
        ),
        (
            &["--interface", "asgi", "apps:closing"],
            "pyrs: apps:closing (--interface asgi): apps:closing is not an ASGI application",
        ),
        (
            &["--factory", "wsgi.pyrs"],
            "pyrs: --factory applies to an application",
        ),
    ];
    for (args, expected) in cases {
        expect_refusal(args, &dir, expected);
    }
}

#[test]
fn project_file_app_errors_point_at_the_entry() {
    let dir = common::TempDir::new("wsgi-errors");
    dir.write(
        "apps.py",
        "async def asgi(scope, receive, send):\n    pass\n\ndef wsgi(environ, start_response):\n    pass\n",
    );
    // (file, the value the error points at, the error after its position)
    let cases = [
        (
            r#"{"modules": [{"path": "/*", "app": "apps:asgi", "interface": "wsgi"}]}"#,
            r#""wsgi""#,
            r#"key "modules[0].interface": apps:asgi is an ASGI application (a coroutine function), not WSGI"#,
        ),
        (
            r#"{"modules": [{"path": "/*", "app": "apps"}]}"#,
            r#""apps""#,
            r#"key "modules[0].app": "apps" is not an application such as"#,
        ),
        (
            r#"{"modules": [{"path": "/*", "app": "apps:wsgi", "class": "X"}]}"#,
            r#""X""#,
            r#"key "modules[0].class": an entry names either an "app" or"#,
        ),
        (
            r#"{"modules": [{"path": "/*", "module": "apps", "class": "X", "handler": "h", "factory": true}]}"#,
            "true",
            r#"key "modules[0].factory": applies only to an entry with "app""#,
        ),
        (
            r#"{"modules": [{"path": "/*", "app": "apps:wsgi", "interface": "rsgi"}]}"#,
            r#""rsgi""#,
            r#"key "modules[0].interface": "rsgi" is not an interface"#,
        ),
    ];
    for (config, value, expected) in cases {
        dir.write("project.pyrs", config);
        let column = config.find(value).expect("the value is in the file") + 1;
        let expected = format!("pyrs: project.pyrs:1:{column}: {expected}");
        expect_refusal(&["project.pyrs"], &dir.path, &expected);
    }
}

#[test]
fn python_threads_serve_blocking_views_side_by_side_in_order() {
    let s = Server::start(&fixture("wsgi/threads.pyrs"));
    let started = std::time::Instant::now();
    let conns: Vec<_> = (0..40)
        .map(|i| {
            let mut c = s.connect();
            c.send(&get(&format!("/r{i}")));
            c
        })
        .collect();
    for (i, mut c) in conns.into_iter().enumerate() {
        let r = c.read_response();
        r.assert_basics(200);
        assert!(
            r.text().starts_with(&format!("/r{i} multithread=True ")),
            "{}",
            r.text()
        );
    }
    let took = started.elapsed();
    // 40 sleeps of 0.2 s: 8 s one at a time, about 1 s on 8 threads.
    assert!(took < std::time::Duration::from_secs(3), "took {took:?}");
    // One connection's pipeline still answers in request order.
    let mut c = s.connect();
    let mut raw = Vec::new();
    for path in ["/a", "/fast", "/b", "/fast"] {
        raw.extend_from_slice(&get(path));
    }
    c.send(&raw);
    let bodies: Vec<String> = (0..4).map(|_| c.read_response().text()).collect();
    assert!(bodies[0].starts_with("/a "), "{bodies:?}");
    assert_eq!(bodies[1], "pyrs handler");
    assert!(bodies[2].starts_with("/b "), "{bodies:?}");
    assert_eq!(bodies[3], "pyrs handler");
}

#[test]
fn static_flags_mount_folders_beside_the_app() {
    let assets = common::TempDir::new("wsgi-static");
    assets.write("site.css", "body { color: red }");
    let s = Server::start_with(
        std::path::Path::new("apps:environ_dump"),
        Launch {
            args: vec![
                "--app-dir".into(),
                fixture("wsgi").to_string_lossy().into_owned(),
                "--static".into(),
                format!("/assets={}", assets.path.display()),
            ],
            ..Launch::default()
        },
    );
    s.get("/assets/site.css").assert_ok_body(
        200,
        "text/css; charset=utf-8",
        b"body { color: red }",
    );
    s.get("/assets/missing.css").assert_basics(404);
    let t = s.get("/elsewhere").text();
    assert_eq!(
        field(&t, "PATH_INFO"),
        "\"/elsewhere\"",
        "the app serves the rest"
    );
    let dir = fixture("wsgi");
    let cases: [(&[&str], &str); 3] = [
        (
            &["--static", "public", "apps:closing"],
            "pyrs: --static public: use URL=FOLDER",
        ),
        (
            &["--static", "/a=no-such-folder", "apps:closing"],
            "pyrs: --static /a=no-such-folder: folder",
        ),
        (
            &["--static", "/=.", "apps:closing"],
            "pyrs: --static /=.: route \"/*\" is already in use",
        ),
    ];
    for (args, expected) in cases {
        expect_refusal(args, &dir, expected);
    }
}
