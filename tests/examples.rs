//! Every project under `examples/` started as shipped (with `-a 127.0.0.1 -p 0`
//! overriding its address and port) and exercised through its routes.

mod common;

use common::{example, get, post, Server};

#[test]
fn hello() {
    let s = Server::start(&example("hello"));
    let mut c = s.connect();
    let r = c.request(&get("/"));
    r.assert_ok_body(200, "text/html; charset=utf-8", b"Hello, World!");
    assert_eq!(c.request(&get("/other")).status, 404);
    assert_eq!(c.request(&get("/?q=1")).text(), "Hello, World!");
    assert!(s.stdout().contains("Added route /\n"), "{}", s.stdout());
}

#[test]
fn echo() {
    let s = Server::start(&example("echo"));
    s.expect_stdout("Echo module is initialized");
    let mut c = s.connect();
    let body = b"anything \x00 at all";
    c.request(&post("/echo", body))
        .assert_ok_body(200, "application/octet-stream", body);
    let chunked = b"POST /echo HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n";
    assert_eq!(c.request(chunked).body, b"abc");
    assert_eq!(c.request(&get("/")).status, 404);
    let out = s.stdout();
    let init = out.find("Echo module is initialized").expect("init line");
    assert!(
        init < out.find("Added route /echo").expect("route line"),
        "{out}"
    );
}

#[test]
fn template() {
    let s = Server::start(&example("template"));
    let mut c = s.connect();
    c.request(&post("/echo", b"template echo")).assert_ok_body(
        200,
        "application/octet-stream",
        b"template echo",
    );
    s.expect_stdout("'echo' module called");
    c.request(&get("/some/where"))
        .assert_ok_body(200, "text/html; charset=utf-8", b"");
    s.expect_stdout("'default' module called");
    // /hello is not routed in project.pyrs: the catch-all answers it.
    c.request(&get("/hello"))
        .assert_ok_body(200, "text/html; charset=utf-8", b"");
    assert_eq!(s.stdout().matches("Api module is initialized").count(), 2);
    assert!(!s.stdout().contains("'hello' module called"));
}

#[test]
fn api_info_reports_the_request() {
    let s = Server::start(&example("api"));
    let mut c = s.connect();
    let raw = b"POST /info?a=1&a=2&b= HTTP/1.1\r\nHost: example\r\nX-Custom: yes\r\nContent-Length: 4\r\n\r\nbody";
    let r = c.request(raw);
    r.assert_basics(200);
    assert_eq!(r.header("content-type"), Some("application/json"));
    let t = r.text();
    for part in [
        "\"method\":\"POST\"",
        "\"path\":\"/info\"",
        "\"query_string\":\"a=1&a=2&b=\"",
        "\"query\":{\"a\":[\"1\",\"2\"],\"b\":[\"\"]}",
        "\"Host\":\"example\"",
        "\"X-Custom\":\"yes\"",
        "\"http_version\":\"HTTP/1.1\"",
        "\"remote_addr\":\"127.0.0.1\"",
        "\"body_length\":4",
    ] {
        assert!(t.contains(part), "{part} in {t}");
    }
}

#[test]
fn api_items_crud() {
    let s = Server::start(&example("api"));
    let mut c = s.connect();
    assert_eq!(c.request(&get("/items")).text(), "[]");

    let r = c.request(&post("/items", b"{\"name\": \"apple\", \"price\": 3}"));
    r.assert_ok_body(201, "application/json", b"{\"name\":\"apple\",\"price\":3}");
    assert_eq!(r.header("location"), Some("/items/apple"));
    c.request(&post("/items", b"{\"name\": \"pear\"}"))
        .assert_basics(201);
    assert_eq!(c.request(&get("/items")).text(), "[\"apple\",\"pear\"]");

    let r = c.request(&get("/items/apple"));
    r.assert_ok_body(200, "application/json", b"{\"name\":\"apple\",\"price\":3}");

    // Invalid JSON: 400 from request.json().
    let r = c.request(&post("/items", b"{broken"));
    r.assert_basics(400);
    assert!(r.text().contains("invalid JSON"), "{}", r.text());
    // Valid JSON, wrong shape: 422.
    let r = c.request(&post("/items", b"[1, 2]"));
    r.assert_basics(422);
    assert_eq!(r.header("content-type"), Some("application/json"));
    // Method not allowed.
    let r = c.request(b"PATCH /items HTTP/1.1\r\nHost: t\r\nContent-Length: 0\r\n\r\n");
    r.assert_ok_body(405, "text/plain; charset=utf-8", b"Method Not Allowed");
    assert_eq!(r.header("allow"), Some("GET, POST"));

    let r = c.request(b"DELETE /items/apple HTTP/1.1\r\nHost: t\r\n\r\n");
    r.assert_basics(204);
    let r = c.request(&get("/items/apple"));
    r.assert_ok_body(404, "application/json", b"{\"error\":\"no item 'apple'\"}");
    let r = c.request(b"DELETE /items/apple HTTP/1.1\r\nHost: t\r\n\r\n");
    assert_eq!(r.status, 404);
    assert_eq!(c.request(&get("/items")).text(), "[\"pear\"]");
    // The prefix route also answers /items/ with an empty name.
    assert_eq!(c.request(&get("/items/")).status, 404);
}

#[test]
fn api_status_fail_and_bytes() {
    let s = Server::start(&example("api"));
    let mut c = s.connect();
    let r = c.request(&get("/status?code=418"));
    r.assert_ok_body(418, "text/plain; charset=utf-8", b"status 418\n");
    assert_eq!(r.header("x-example"), Some("status"));
    c.request(&get("/status"))
        .assert_ok_body(200, "text/plain; charset=utf-8", b"status 200\n");
    // Out-of-range status from the handler: a 500.
    assert_eq!(c.request(&get("/status?code=99")).status, 500);

    c.request(&get("/fail")).assert_ok_body(
        500,
        "text/plain; charset=utf-8",
        b"Internal Server Error",
    );
    s.expect_stderr("RuntimeError: this handler always fails");
    assert!(s.stderr().contains("api.Api.fail"), "{}", s.stderr());

    c.request(&get("/bytes"))
        .assert_ok_body(200, "application/octet-stream", b"\x00\x01\x02");
    assert_eq!(c.request(&get("/nothing")).status, 404);
}

#[test]
fn events_stream_from_generators() {
    let s = Server::start(&example("events"));
    let r = s.get("/clock?n=2");
    assert_eq!(r.status, 200);
    assert_eq!(r.header("transfer-encoding"), Some("chunked"));
    assert_eq!(r.text().matches("data: ").count(), 2, "{}", r.text());
    let r = s.get("/stream?n=1");
    assert_eq!(r.header("content-type"), Some("text/event-stream"));
    assert_eq!(r.header("cache-control"), Some("no-cache"));
    assert!(r.text().starts_with("data: "), "{}", r.text());
    let r = s.get("/download?mib=1");
    assert_eq!(r.content_length(), Some(1 << 20));
    assert_eq!(r.body.len(), 1 << 20);
}
