//! ASGI 3.0 applications served by pyrs: the `http` scope, `receive()` and
//! `send()` with `more_body`, lifespan (state, an app without it, a failed
//! startup), errors before and after the response, WebSocket upgrades refused.
//! Uses `tests/fixtures/asgi`; FastAPI is in tests/frameworks.rs.

mod common;

use common::{fixture, run_pyrs, Server};

fn apps() -> Server {
    Server::start(&fixture("asgi/asgi.pyrs"))
}

#[test]
fn the_http_scope_and_a_response_sent_in_parts() {
    let s = apps();
    let r = s.request(
        b"POST /a%20b/c?x=1 HTTP/1.1\r\nHost: h:1\r\nX-Multi: 1\r\nX-Multi: 2\r\nContent-Length: 2\r\n\r\nhi",
    );
    // Sent in parts (`more_body`), it streams: chunked, as no length was given.
    assert_eq!(r.status, 200);
    assert_eq!(r.header("transfer-encoding"), Some("chunked"));
    assert_eq!(r.content_length(), None);
    assert_eq!(r.header("content-type"), Some("application/json"));
    assert_eq!(r.header_all("x-two"), vec!["1", "2"]);
    let t = r.text();
    for expected in [
        r#""type": "http""#,
        r#""asgi": {"spec_version": "2.4", "version": "3.0"}"#,
        r#""http_version": "1.1""#,
        r#""method": "POST""#,
        r#""scheme": "http""#,
        r#""path": "/a b/c""#,
        r#""raw_path": "/a%20b/c""#,
        r#""query_string": "x=1""#,
        r#""root_path": """#,
        r#"["host", "h:1"], ["x-multi", "1"], ["x-multi", "2"], ["content-length", "2"]"#,
        r#""client": ["127.0.0.1", "#,
        r#""server": ["127.0.0.1", "#,
        r#""message": {"body": "hi", "more_body": false, "type": "http.request"}"#,
        r#""state": {}"#,
    ] {
        assert!(t.contains(expected), "{expected} not in {t}");
    }
}

#[test]
fn lifespan_state_reaches_every_scope_and_mounts_set_root_path() {
    let s = apps();
    let t = s.get("/life/x").text();
    assert!(t.contains(r#""state": {"ready": "yes"}"#), "{t}");
    assert!(t.contains(r#""root_path": "/life""#), "{t}");
    assert!(t.contains(r#""path": "/life/x""#), "{t}");
    // The apps without lifespan support were served anyway, and said so.
    s.expect_stderr("asgi_apps:scope_dump: the app does not support the ASGI lifespan protocol");
}

#[test]
fn a_failed_lifespan_startup_stops_the_server_with_the_apps_message() {
    let dir = fixture("asgi");
    let out = run_pyrs(&["asgi_apps:failing_startup"], Some(&dir));
    assert_eq!(out.status.code(), Some(1), "{}", out.stderr);
    assert!(
        out.stderr
            .starts_with("pyrs: asgi_apps:failing_startup: lifespan startup failed: no database"),
        "{}",
        out.stderr
    );
    assert!(!out.stdout.contains("Listening"), "{}", out.stdout);
}

#[test]
fn errors_are_500s_unless_the_response_was_complete() {
    let s = apps();
    let r = s.get("/raises");
    r.assert_ok_body(500, "text/plain; charset=utf-8", b"Internal Server Error");
    s.expect_stderr("ValueError: asgi app failed on purpose");
    let r = s.get("/silent");
    r.assert_basics(500);
    s.expect_stderr("the application returned without sending http.response.start");
    let r = s.get("/late");
    r.assert_basics(201);
    assert_eq!(r.text(), "sent");
    s.expect_stderr("RuntimeError: failed after the response");
    assert_eq!(s.get("/x").status, 200, "the server goes on");
}

#[test]
fn an_app_that_does_not_accept_a_websocket_refuses_it_with_403() {
    // The fixture app reads every scope as http, and fails on a websocket one
    // (no body in websocket.connect): an upgrade never accepted is refused.
    let s = apps();
    let r = s.request(
        b"GET /ws HTTP/1.1\r\nHost: t\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\
          Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n",
    );
    r.assert_ok_body(403, "text/plain; charset=utf-8", b"Forbidden");
    assert_eq!(r.header("connection"), Some("close"));
    s.expect_stderr("error in ASGI app asgi_apps:scope_dump");
    assert_eq!(s.get("/x").status, 200, "the server goes on");
}

#[test]
fn background_work_started_at_lifespan_goes_on_while_no_request_is_in_flight() {
    // Tasks, timers, thread results, socket reads and callbacks handed over
    // by a thread, all started at startup, need the event loop to run while
    // the server is idle, not only while a request's task is in flight.
    let s = apps();
    // An app alone on its loop, with only a thread handing it callbacks:
    // nothing on the loop itself says there is work.
    let handed = Server::start_with(
        std::path::Path::new("asgi_apps:handed"),
        common::Launch {
            cwd: Some(fixture("asgi")),
            ..Default::default()
        },
    );
    let counts = |path: &str, keys: &[&str]| -> Vec<(String, u64)> {
        let server = if path == "/handed" { &handed } else { &s };
        let r = server.get(path);
        assert_eq!(r.status, 200, "{}", r.text());
        let text = r.text();
        keys.iter()
            .map(|k| {
                let at = text.find(&format!("\"{k}\": ")).expect("key") + k.len() + 4;
                let n: String = text[at..]
                    .chars()
                    .take_while(char::is_ascii_digit)
                    .collect();
                (k.to_string(), n.parse().expect("a count"))
            })
            .collect()
    };
    let apps = [
        ("/background", &["socket", "task", "thread", "timer"][..]),
        ("/handed", &["handed"][..]),
    ];
    let before: Vec<_> = apps.iter().map(|(p, k)| counts(p, k)).collect();
    std::thread::sleep(std::time::Duration::from_millis(600));
    let after: Vec<_> = apps.iter().map(|(p, k)| counts(p, k)).collect();
    for (before, after) in before.iter().zip(&after) {
        for ((k, b), (_, a)) in before.iter().zip(after) {
            // Every 20 ms: some 30 rounds in 600 ms; 10 leaves room for a slow machine.
            assert!(
                a - b >= 10,
                "{k} went from {b} to {a} in 600 ms idle: {after:?}"
            );
        }
    }
}

#[test]
fn a_request_runs_as_a_task_of_its_own_in_a_context_of_its_own() {
    // The first step of a request's coroutine runs on the worker at once; what
    // it sees must be what a task's step sees, whether it ends there or waits.
    let s = apps();
    for (path, query) in [("/task/a", ""), ("/task/b", "?wait"), ("/task/c", "")] {
        let r = s.get(&format!("{path}{query}"));
        assert_eq!(r.status, 200, "{}", r.text());
        assert_eq!(
            r.text(),
            format!(
                r#"{{"loop": true, "same_task": true, "seen_after": "{path}", "seen_before": "unset", "task": true}}"#
            )
        );
    }
    // Pipelined: several first steps in one batch, none sees another's context.
    let mut raw = Vec::new();
    for path in ["/task/d", "/task/e?wait", "/task/f"] {
        raw.extend_from_slice(format!("GET {path} HTTP/1.1\r\nHost: t\r\n\r\n").as_bytes());
    }
    let mut conn = s.connect();
    conn.send(&raw);
    for path in ["/task/d", "/task/e", "/task/f"] {
        let answer = conn.read_response();
        assert!(
            answer.text().contains(&format!(
                r#""seen_after": "{path}", "seen_before": "unset""#
            )),
            "{}",
            answer.text()
        );
    }
}

#[test]
fn receive_and_send_work_as_coroutines_with_messages_that_are_not_plain() {
    // The common messages are answered without a coroutine of their own; what
    // receive() and send() return must still be what tasks, wait_for and
    // gather take, and messages that are not plain dicts must work the same.
    let s = apps();
    for query in ["", "?gather"] {
        let r = s.request(
            format!("POST /await{query} HTTP/1.1\r\nHost: t\r\nContent-Length: 2\r\n\r\nhi")
                .as_bytes(),
        );
        assert_eq!(r.status, 200, "{}", r.text());
        assert_eq!(r.header("x-kinds"), Some("[True, True, 'hi']"));
        assert_eq!(r.header("transfer-encoding"), Some("chunked"));
        assert_eq!(r.text(), "part one, part two");
    }
    // A body after the last part is the app's mistake, raised where it awaits.
    s.expect_stdout("awaitables: http.response.body sent after the response ended");
    // They act when first stepped, as coroutines do: a receive() never awaited
    // or cancelled first leaves the body; a cancelled send() sent nothing.
    let r = s.request(b"POST /await?lazy HTTP/1.1\r\nHost: t\r\nContent-Length: 2\r\n\r\nhi");
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(
        r.text(),
        "hi cancelled cancelled boom None cancelled 0 warnings"
    );
}

#[test]
fn the_first_step_is_a_whole_task_for_cancellation_introspection_and_finalizers() {
    let s = apps();
    let text = |path: &str| {
        let r = s.get(path);
        assert_eq!(r.status, 200, "{path}: {}", r.text());
        r.text()
    };
    // A cancel that lands before the task's second step still reaches the
    // coroutine (asyncio.timeout(0), a task cancelling itself).
    assert_eq!(text("/task/t?timeout0"), "timed out");
    assert_eq!(text("/task/c?selfcancel"), "cancelled");
    // The current task answers what anyio and loggers ask of it.
    assert_eq!(text("/task/i?introspect"), "coroutine True False True True");
    // Finished tasks leave asyncio's registry of live tasks.
    let before = text("/task/r?registry");
    for i in 0..20 {
        let query = if i % 2 == 0 { "?wait" } else { "" };
        assert_eq!(s.get(&format!("/task/n{i}{query}")).status, 200);
    }
    assert_eq!(text("/task/r?registry"), before);
    // An async generator left open in the first step is closed by the loop's
    // finalizer, awaiting in its finally.
    assert_eq!(text("/task/g?agen"), "left");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    while !text("/task/x?cleaned").contains("/task/g") {
        assert!(
            std::time::Instant::now() < deadline,
            "the generator was not closed"
        );
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    assert_eq!(s.get("/x").status, 200, "the server goes on");
}

#[test]
fn system_exit_is_a_500_and_handlers_waiting_at_stop_unwind() {
    let mut s = apps();
    // SystemExit from a handler, in its first step or after waiting, is that
    // handler's 500 (a traceback on stderr); the answer comes at once.
    for query in ["exit", "exitlater"] {
        let r = s.get(&format!("/task/e?{query}"));
        assert_eq!(r.status, 500, "{query}: {}", r.text());
    }
    s.expect_stderr("SystemExit: 3");
    assert_eq!(s.get("/x").status, 200, "the server goes on");
    // A handler still waiting at stop is cancelled and its cleanup, which
    // awaits, runs to its end (within shutdown_timeout, 1 s here).
    let mut c = s.connect();
    c.send(b"GET /task/h?hang HTTP/1.1\r\nHost: t\r\n\r\n");
    assert!(s.wait_stdout("hanging", std::time::Duration::from_secs(5)));
    s.signal(libc::SIGTERM);
    s.wait_exit(std::time::Duration::from_secs(15))
        .expect("exits");
    assert!(
        s.wait_stdout("unwound", std::time::Duration::from_secs(1)),
        "{}",
        s.stdout()
    );
}
