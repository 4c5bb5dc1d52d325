//! What a Python handler sees and what its return value becomes: every return
//! type with its status and headers, `pyrs.Response`, `pyrs.HTTPError`, the
//! request attributes, exceptions (500 with a traceback on stderr, and the next
//! request served normally), and print() output. Uses `tests/fixtures/app`.

mod common;

use std::time::Duration;

use common::{fixture, get, post, Conn, Server};

fn app() -> Server {
    Server::start(&fixture("app/app.pyrs"))
}

const HTML: &str = "text/html; charset=utf-8";
const PLAIN: &str = "text/plain; charset=utf-8";
const OCTET: &str = "application/octet-stream";
const JSON: &str = "application/json";

#[test]
fn str_is_utf8_html() {
    let s = app();
    s.get("/text")
        .assert_ok_body(200, HTML, "h\u{e9}llo".as_bytes());
}

#[test]
fn empty_str_has_zero_length() {
    let s = app();
    s.get("/empty").assert_ok_body(200, HTML, b"");
}

#[test]
fn bytes_bytearray_memoryview_are_octet_stream() {
    let s = app();
    let mut c = s.connect();
    c.request(&get("/bytes"))
        .assert_ok_body(200, OCTET, b"\x00\xffbin");
    c.request(&get("/bytearray"))
        .assert_ok_body(200, OCTET, b"bytearray!");
    c.request(&get("/memoryview"))
        .assert_ok_body(200, OCTET, b"memoryview");
}

#[test]
fn dict_and_list_are_compact_utf8_json() {
    let s = app();
    let mut c = s.connect();
    c.request(&get("/dict")).assert_ok_body(
        200,
        JSON,
        "{\"a\":1,\"b\":[true,null],\"u\":\"\u{e9}\u{20ac}\"}".as_bytes(),
    );
    c.request(&get("/list"))
        .assert_ok_body(200, JSON, b"[1,\"two\",{\"three\":3.5}]");
}

#[test]
fn none_is_204_without_length_or_body() {
    let s = app();
    let mut c = s.connect();
    let r = c.request(&get("/none"));
    r.assert_basics(204);
    assert_eq!(r.header("content-length"), None);
    expect_nothing_after_204(&mut c, "/none");
}

/// After a 204 just read on `c`: no byte arrives, and with `path` (answered 204)
/// pipelined before `GET /text`, the second response starts right after the
/// first head.
fn expect_nothing_after_204(c: &mut Conn, path: &str) {
    c.expect_silence(Duration::from_millis(200));
    let mut raw = get(path);
    raw.extend(get("/text"));
    c.send(&raw);
    c.read_response().assert_basics(204);
    c.read_response()
        .assert_ok_body(200, HTML, "h\u{e9}llo".as_bytes());
}

#[test]
fn returning_the_request_echoes_its_body() {
    let s = app();
    let body = b"echo \x00\x01 me";
    s.request(&post("/echo", body))
        .assert_ok_body(200, OCTET, body);
    s.request(&post("/echo", b""))
        .assert_ok_body(200, OCTET, b"");
}

#[test]
fn response_with_status() {
    let s = app();
    let r = s.get("/response?kind=status");
    r.assert_ok_body(201, HTML, b"created");
    assert_eq!(r.reason, "Created");
}

#[test]
fn response_headers_dict_skips_framing_headers() {
    let s = app();
    let mut c = s.connect();
    let r = c.request(&get("/response?kind=headers_dict"));
    r.assert_ok_body(200, HTML, b"with headers");
    assert_eq!(r.header("x-one"), Some("1"));
    assert_eq!(r.header("x-int"), Some("42"));
    assert_eq!(r.header("transfer-encoding"), None);
    assert_eq!(r.header("connection"), None);
    assert_eq!(r.header_all("date").len(), 1);
    assert_ne!(r.header("date"), Some("yesterday"));
    // The connection stays usable: the user's "Connection: close" was ignored.
    c.request(&get("/text")).assert_basics(200);
}

#[test]
fn response_headers_list_keeps_repeats() {
    let s = app();
    let r = s.get("/response?kind=headers_list");
    r.assert_ok_body(200, HTML, b"cookies");
    assert_eq!(r.header_all("set-cookie"), vec!["a=1", "b=2"]);
}

#[test]
fn response_content_type_argument_and_header() {
    let s = app();
    let mut c = s.connect();
    c.request(&get("/response?kind=content_type"))
        .assert_ok_body(200, "text/csv", b"a,b\n");
    let r = c.request(&get("/response?kind=ct_header_wins"));
    r.assert_ok_body(200, "text/x-header", b"x");
    assert_eq!(r.header_all("content-type").len(), 1);
}

#[test]
fn response_json_bytes_and_no_content() {
    let s = app();
    let mut c = s.connect();
    c.request(&get("/response?kind=json"))
        .assert_ok_body(202, JSON, b"{\"k\":[1,2]}");
    c.request(&get("/response?kind=bytes"))
        .assert_ok_body(203, OCTET, b"\x01\x02");
    let r = c.request(&get("/response?kind=no_content"));
    r.assert_basics(204);
    expect_nothing_after_204(&mut c, "/response?kind=no_content");
}

#[test]
fn response_with_invalid_status_is_500() {
    let s = app();
    let r = s.get("/response?kind=bad_status");
    r.assert_ok_body(500, PLAIN, b"Internal Server Error");
    s.expect_stderr("status must be between 200 and 599");
}

#[test]
fn http_error_without_body_sends_reason_phrase() {
    let s = app();
    s.get("/http_error?kind=plain")
        .assert_ok_body(404, PLAIN, b"Not Found");
}

#[test]
fn http_error_with_body_and_content_type() {
    let s = app();
    let mut c = s.connect();
    let r = c.request(&get("/http_error?kind=teapot"));
    r.assert_ok_body(418, "text/x-teapot", b"short and stout");
    assert_eq!(r.reason, "I'm a teapot");
    c.request(&get("/http_error?kind=json"))
        .assert_ok_body(422, JSON, b"{\"error\":\"bad name\"}");
    let r = c.request(&get("/http_error?kind=headers"));
    r.assert_ok_body(405, PLAIN, b"Method Not Allowed");
    assert_eq!(r.header("allow"), Some("GET, POST"));
    c.request(&get("/http_error?kind=x"))
        .assert_ok_body(409, HTML, b"conflict x");
    // Nothing of this is a handler error.
    assert!(!s.stderr().contains("error in handler"), "{}", s.stderr());
}

#[test]
fn exception_is_500_with_traceback_then_next_request_works() {
    let s = app();
    let mut c = s.connect();
    let r = c.request(&get("/fail?x=1"));
    r.assert_ok_body(500, PLAIN, b"Internal Server Error");
    assert_eq!(r.header("connection"), None, "a 500 keeps the connection");
    c.request(&get("/text"))
        .assert_ok_body(200, HTML, "h\u{e9}llo".as_bytes());
    s.expect_stderr("ValueError: boom from fail");
    let err = s.stderr();
    assert!(err.contains("Traceback (most recent call last)"), "{err}");
    assert!(err.contains("app.py"), "{err}");
    assert!(
        err.contains("pyrs: error in handler app.App.fail for GET /fail"),
        "stderr names handler, method and path: {err}"
    );
}

#[test]
fn unsupported_return_types_are_500_naming_handler_and_type() {
    let s = app();
    let mut c = s.connect();
    c.request(&get("/bad_int"))
        .assert_ok_body(500, PLAIN, b"Internal Server Error");
    c.request(&get("/bad_object"))
        .assert_ok_body(500, PLAIN, b"Internal Server Error");
    c.request(&get("/text")).assert_basics(200);
    s.expect_stderr("handler returned int, expected");
    s.expect_stderr("handler returned object, expected");
    let err = s.stderr();
    assert!(err.contains("app.App.bad_int"), "{err}");
    assert!(err.contains("app.App.bad_object"), "{err}");
}

#[test]
fn print_output_reaches_stdout_promptly() {
    let s = app();
    s.expect_stdout("App constructed");
    let r = s.get("/print?marker=42");
    r.assert_ok_body(200, HTML, b"printed");
    assert!(
        s.wait_stdout("handler says marker=42\n", Duration::from_secs(5)),
        "stdout: {}",
        s.stdout()
    );
}

#[test]
fn constructor_runs_once_per_module_entry() {
    let s = app();
    s.expect_stdout("Listening...");
    let out = s.stdout();
    // app.pyrs has 21 entries of class App.
    assert_eq!(out.matches("App constructed").count(), 21, "{out}");
    let first_route = out.find("Added route /text").expect("route line");
    let first_ctor = out.find("App constructed").expect("ctor line");
    assert!(first_ctor < first_route, "{out}");
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines.first(), Some(&"Starting pyrs server..."));
    let n = lines.len();
    assert_eq!(lines[n - 3], "Address: 127.0.0.1", "{out}");
    assert_eq!(lines[n - 2], format!("Port: {}", s.port), "{out}");
    assert_eq!(lines[n - 1], "Listening...", "{out}");
}

fn json_field<'a>(body: &'a str, field: &str) -> &'a str {
    // The handler returns compact JSON; take the raw text of one value.
    let key = format!("\"{field}\":");
    let start = body
        .find(&key)
        .unwrap_or_else(|| panic!("{field} in {body}"))
        + key.len();
    let rest = &body[start..];
    let mut depth = 0i32;
    let mut in_str = false;
    let mut escaped = false;
    for (i, ch) in rest.char_indices() {
        if in_str {
            match ch {
                _ if escaped => escaped = false,
                '\\' => escaped = true,
                '"' => in_str = false,
                _ => {}
            }
            continue;
        }
        match ch {
            '"' => in_str = true,
            '[' | '{' => depth += 1,
            ']' | '}' if depth == 0 => return &rest[..i],
            ']' | '}' => depth -= 1,
            ',' if depth == 0 => return &rest[..i],
            _ => {}
        }
    }
    rest
}

#[test]
fn request_attributes() {
    let s = app();
    let mut c = s.connect();
    let port = c.local_port();
    let body = "caf\u{e9} body";
    let raw = format!(
        "PUT /attrs?a=1&b=&a=two%20x&c HTTP/1.1\r\nHost: test\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    );
    let r = c.request(raw.as_bytes());
    r.assert_basics(200);
    let t = r.text();
    assert_eq!(json_field(&t, "method"), "\"PUT\"");
    assert_eq!(json_field(&t, "path"), "\"/attrs\"");
    assert_eq!(json_field(&t, "query_string"), "\"a=1&b=&a=two%20x&c\"");
    assert_eq!(
        json_field(&t, "query"),
        "{\"a\":[\"1\",\"two x\"],\"b\":[\"\"],\"c\":[\"\"]}"
    );
    assert_eq!(json_field(&t, "target"), "\"/attrs?a=1&b=&a=two%20x&c\"");
    assert_eq!(json_field(&t, "http_version"), "\"HTTP/1.1\"");
    assert_eq!(json_field(&t, "remote_addr"), "\"127.0.0.1\"");
    assert_eq!(json_field(&t, "remote_port"), port.to_string());
    assert_eq!(json_field(&t, "body_len"), body.len().to_string());
    assert_eq!(json_field(&t, "body_type"), "\"bytes\"");
    assert_eq!(json_field(&t, "text"), format!("\"{body}\""));

    // No query at all; HTTP/1.0.
    let r = c.request(b"GET /attrs HTTP/1.0\r\nConnection: keep-alive\r\n\r\n");
    let t = r.text();
    assert_eq!(json_field(&t, "query_string"), "\"\"");
    assert_eq!(json_field(&t, "query"), "{}");
    assert_eq!(json_field(&t, "http_version"), "\"HTTP/1.0\"");
    assert_eq!(json_field(&t, "method"), "\"GET\"");
    assert_eq!(json_field(&t, "body_len"), "0");
}

#[test]
fn a_later_http1_minor_version_is_served_as_http11() {
    // RFC 9110 §2.5: a server answers a higher minor version as the highest it
    // supports, so HTTP/1.2 gets an HTTP/1.1 response, keep-alive included, and the
    // handler sees HTTP/1.1 with every header.
    let s = app();
    let mut c = s.connect();
    let r = c.request(b"GET /attrs HTTP/1.2\r\nHost: test\r\n\r\n");
    r.assert_basics(200);
    assert_eq!(json_field(&r.text(), "http_version"), "\"HTTP/1.1\"");
    let r = c.request(
        b"GET /headers HTTP/1.9\r\nHost: test\r\nContent-Type: text/x\r\nX-Multi: 1\r\n\r\n",
    );
    r.assert_basics(200);
    let t = r.text();
    assert_eq!(json_field(&t, "lower"), "\"text/x\"");
    assert_eq!(json_field(&t, "len"), "3");
}

#[test]
fn headers_are_case_insensitive_multi_valued_and_ordered() {
    let s = app();
    let raw = b"POST /headers HTTP/1.1\r\nHost: test\r\nContent-Type: text/x-test\r\n\
X-Multi: one\r\nx-multi: two\r\nContent-Length: 0\r\n\r\n";
    let r = s.request(raw);
    r.assert_basics(200);
    let t = r.text();
    assert_eq!(json_field(&t, "lower"), "\"text/x-test\"");
    assert_eq!(json_field(&t, "upper"), "\"text/x-test\"");
    assert_eq!(json_field(&t, "get_default"), "\"dflt\"");
    assert_eq!(json_field(&t, "get_none"), "null");
    assert_eq!(json_field(&t, "get_present"), "\"one\"");
    assert_eq!(json_field(&t, "getall"), "[\"one\",\"two\"]");
    assert_eq!(json_field(&t, "getall_absent"), "[]");
    assert_eq!(json_field(&t, "in"), "true");
    assert_eq!(json_field(&t, "not_in"), "false");
    assert_eq!(json_field(&t, "len"), "5");
    assert_eq!(
        json_field(&t, "keys"),
        "[\"Host\",\"Content-Type\",\"X-Multi\",\"x-multi\",\"Content-Length\"]"
    );
    assert_eq!(
        json_field(&t, "values"),
        "[\"test\",\"text/x-test\",\"one\",\"two\",\"0\"]"
    );
    assert_eq!(
        json_field(&t, "items"),
        "[[\"Host\",\"test\"],[\"Content-Type\",\"text/x-test\"],[\"X-Multi\",\"one\"],\
[\"x-multi\",\"two\"],[\"Content-Length\",\"0\"]]"
    );
    assert_eq!(json_field(&t, "iter"), json_field(&t, "keys"));
    assert_eq!(json_field(&t, "missing"), "\"KeyError\"");
}

#[test]
fn json_body_parses_and_invalid_json_is_400() {
    let s = app();
    let mut c = s.connect();
    let r = c.request(&post("/json", b"{\"x\": [1, \"\\u00e9\"]}"));
    r.assert_ok_body(200, JSON, "{\"got\":{\"x\":[1,\"\u{e9}\"]}}".as_bytes());
    let r = c.request(&post("/json", b"{not json"));
    r.assert_basics(400);
    assert!(r.text().contains("invalid JSON"), "{}", r.text());
    // A handler's 400 is not a framing error: the connection stays open.
    assert_eq!(r.header("connection"), None);
    c.request(&get("/text")).assert_basics(200);
    assert!(!s.stderr().contains("error in handler"), "{}", s.stderr());
}

#[test]
fn head_request_to_python_route_has_get_length() {
    let s = app();
    let mut c = s.connect();
    let get_len = c.request(&get("/dict")).content_length();
    let r = c.request(b"HEAD /dict HTTP/1.1\r\nHost: test\r\n\r\n");
    r.assert_basics(200);
    assert_eq!(r.content_length(), get_len);
    assert_eq!(r.header("content-type"), Some(JSON));
    // No body bytes follow the HEAD response.
    c.request(&get("/text"))
        .assert_ok_body(200, HTML, "h\u{e9}llo".as_bytes());
}

#[test]
fn not_modified_has_no_body() {
    let s = app();
    let mut c = s.connect();
    let r = c.request(&get("/response?kind=not_modified"));
    r.assert_basics(304);
    assert_eq!(r.header("etag"), Some("\"v1\""));
    // No body bytes may follow a 304: the next response must parse.
    c.request(&get("/text"))
        .assert_ok_body(200, HTML, "h\u{e9}llo".as_bytes());
}

#[test]
fn invalid_response_headers_are_500_not_sent() {
    let s = app();
    let mut c = s.connect();
    for kind in ["injection", "bad_header_name", "not_latin1", "bad_body"] {
        let r = c.request(&get(&format!("/response?kind={kind}")));
        r.assert_ok_body(500, PLAIN, b"Internal Server Error");
        assert_eq!(r.header("injected"), None, "{r:?}");
        assert_eq!(r.header("x-bad"), None, "{r:?}");
    }
    c.request(&get("/text")).assert_basics(200);
    s.expect_stderr_count("error in handler app.App.response", 4);
}

#[test]
fn unserializable_json_is_500() {
    let s = app();
    let mut c = s.connect();
    c.request(&get("/bad_json"))
        .assert_ok_body(500, PLAIN, b"Internal Server Error");
    c.request(&get("/dict")).assert_basics(200);
    s.expect_stderr("TypeError");
    assert!(s.stderr().contains("app.App.bad_json"), "{}", s.stderr());
}

#[test]
fn header_values_are_latin1() {
    let s = app();
    let r = s.request(b"GET /headers HTTP/1.1\r\nHost: t\r\nContent-Type: caf\xe9\r\n\r\n");
    r.assert_basics(200);
    assert_eq!(json_field(&r.text(), "lower"), "\"caf\u{e9}\"");
}

#[test]
fn post_without_content_length_has_empty_body() {
    let s = app();
    let mut c = s.connect();
    c.request(b"POST /echo HTTP/1.1\r\nHost: t\r\n\r\n")
        .assert_ok_body(200, OCTET, b"");
    c.request(&get("/text")).assert_basics(200);
}

#[test]
fn client_leaving_during_a_handler_does_not_hurt() {
    let s = app();
    {
        let mut c = s.connect();
        c.send(&get("/sleep?s=0.3"));
    }
    s.expect_stdout("sleeping 0.3");
    let mut c = s.connect();
    c.request(&get("/text")).assert_basics(200);
    c.request(&get("/text")).assert_basics(200);
    assert!(!s.stderr().contains("panick"), "{}", s.stderr());
}
