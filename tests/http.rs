//! HTTP/1.1 behaviour over raw sockets: routing and 404s, keep-alive and
//! `Connection: close`, HTTP/1.0, HEAD, pipelining, requests split at every
//! byte, chunked bodies, `100 Continue`, and the framing errors (400, 413,
//! 414, 431, 505), each answered with `Connection: close` and a close, without
//! disturbing other connections.

mod common;

use std::time::Duration;

use common::{fixture, get, post, Response, Server};

fn app() -> Server {
    Server::start(&fixture("app/app.pyrs"))
}

const PLAIN: &str = "text/plain; charset=utf-8";
const HTML: &str = "text/html; charset=utf-8";
const OCTET: &str = "application/octet-stream";

fn assert_not_found(r: &Response) {
    r.assert_ok_body(404, PLAIN, b"Not Found");
}

#[test]
fn unknown_path_is_404_without_python() {
    let s = app();
    // The one Python worker is held by a sleeping handler: a 404 that needed
    // Python would wait behind it.
    let mut held = s.connect();
    held.send(&get("/sleep?s=2"));
    s.expect_stdout("sleeping 2.0");
    let mut c = s.connect();
    assert_not_found(&c.request(&get("/nope")));
    // Exact routes do not match longer paths or a trailing slash.
    assert_not_found(&c.request(&get("/text/")));
    assert_not_found(&c.request(&get("/textx")));
    assert_not_found(&c.request(&post("/missing", b"body")));
    assert!(
        common::nothing_received(&held.stream),
        "the sleeping handler answered before the 404s"
    );
    held.read_response().assert_ok_body(200, HTML, b"slept 2.0");
    c.request(&get("/text")).assert_basics(200);
    assert_eq!(s.stderr(), "", "no Python involvement in a 404");
}

#[test]
fn route_precedence_exact_then_longest_prefix_then_catch_all() {
    let s = Server::start(&fixture("app/routes.pyrs"));
    let mut c = s.connect();
    let cases = [
        ("/api/exact", "exact /api/exact"),
        ("/api/exact/more", "api /api/exact/more"),
        ("/api", "api /api"),
        ("/api/", "api /api/"),
        ("/api/x/y", "api /api/x/y"),
        ("/api/v2", "api_v2 /api/v2"),
        ("/api/v2/thing", "api_v2 /api/v2/thing"),
        ("/api/v3", "api /api/v3"),
        ("/apiary", "catch_all /apiary"),
        ("/", "catch_all /"),
        ("/anything/else?q=1", "catch_all /anything/else"),
    ];
    for (path, expected) in cases {
        let r = c.request(&get(path));
        r.assert_ok_body(200, HTML, expected.as_bytes());
    }
}

#[test]
fn prefix_route_without_catch_all_404s_elsewhere() {
    let s = Server::start(&fixture("app/prefix.pyrs"));
    let mut c = s.connect();
    c.request(&get("/api"))
        .assert_ok_body(200, HTML, b"api /api");
    c.request(&get("/api/deep/er?x"))
        .assert_ok_body(200, HTML, b"api /api/deep/er");
    assert_not_found(&c.request(&get("/apiary")));
    assert_not_found(&c.request(&get("/")));
    assert_not_found(&c.request(&get("/exact/sub")));
    c.request(&get("/exact"))
        .assert_ok_body(200, HTML, b"exact /exact");
}

#[test]
fn keep_alive_is_the_default_for_http11() {
    let s = app();
    let mut c = s.connect();
    for _ in 0..5 {
        let r = c.request(&get("/text"));
        r.assert_basics(200);
        assert_eq!(r.header("connection"), None);
    }
    c.expect_silence(Duration::from_millis(200));
}

#[test]
fn connection_close_is_honoured() {
    let s = app();
    let mut c = s.connect();
    let r = c.request(b"GET /text HTTP/1.1\r\nHost: test\r\nConnection: close\r\n\r\n");
    r.assert_basics(200);
    assert_eq!(r.header("connection"), Some("close"));
    c.expect_eof();
}

#[test]
fn connection_close_on_404_closes_too() {
    let s = app();
    let mut c = s.connect();
    let r = c.request(b"GET /nope HTTP/1.1\r\nHost: test\r\nConnection: close\r\n\r\n");
    assert_not_found(&r);
    assert_eq!(r.header("connection"), Some("close"));
    c.expect_eof();
}

#[test]
fn requests_after_connection_close_are_ignored() {
    let s = app();
    let mut c = s.connect();
    let mut raw = b"GET /text HTTP/1.1\r\nHost: test\r\nConnection: close\r\n\r\n".to_vec();
    raw.extend_from_slice(&get("/dict"));
    c.send(&raw);
    let r = c.read_response();
    r.assert_basics(200);
    assert_eq!(r.header("connection"), Some("close"));
    c.expect_eof();
}

#[test]
fn http10_closes_by_default() {
    let s = app();
    let mut c = s.connect();
    let r = c.request(b"GET /text HTTP/1.0\r\n\r\n");
    r.assert_ok_body(200, HTML, "h\u{e9}llo".as_bytes());
    assert_eq!(r.version, "HTTP/1.1");
    assert_eq!(r.header("connection"), Some("close"));
    c.expect_eof();
}

#[test]
fn http10_keep_alive_on_request() {
    let s = app();
    let mut c = s.connect();
    let dict = "{\"a\":1,\"b\":[true,null],\"u\":\"\u{e9}\u{20ac}\"}";
    for (path, status, content_type, body) in [
        ("/text", 200, HTML, "h\u{e9}llo"),
        ("/nope", 404, PLAIN, "Not Found"),
        ("/dict", 200, "application/json", dict),
    ] {
        let raw = format!("GET {path} HTTP/1.0\r\nConnection: keep-alive\r\n\r\n");
        let r = c.request(raw.as_bytes());
        r.assert_ok_body(status, content_type, body.as_bytes());
        assert_eq!(r.header("connection"), Some("keep-alive"), "{r:#?}");
    }
    let r = c.request(b"GET /text HTTP/1.0\r\n\r\n");
    r.assert_ok_body(200, HTML, "h\u{e9}llo".as_bytes());
    assert_eq!(r.header("connection"), Some("close"));
    c.expect_eof();
}

#[test]
fn head_has_get_headers_and_no_body() {
    let s = app();
    let mut c = s.connect();
    let g = c.request(&get("/text"));
    let h = c.request(b"HEAD /text HTTP/1.1\r\nHost: test\r\n\r\n");
    h.assert_basics(200);
    assert_eq!(h.content_length(), g.content_length());
    assert_eq!(h.header("content-type"), Some(HTML));
    // Nothing follows the head: no byte arrives (`assert_basics` also checked
    // what came with it).
    c.expect_silence(Duration::from_millis(200));
    // HEAD of a 404 keeps its length but has no body either.
    let h = c.request(b"HEAD /nope HTTP/1.1\r\nHost: test\r\n\r\n");
    h.assert_basics(404);
    assert_eq!(h.content_length(), Some(9));
    c.expect_silence(Duration::from_millis(200));
    // Pipelined behind a HEAD, the next response starts right after its head.
    let mut raw = b"HEAD /text HTTP/1.1\r\nHost: test\r\n\r\n".to_vec();
    raw.extend(get("/text"));
    c.send(&raw);
    c.read_response_to(true).assert_basics(200);
    c.read_response()
        .assert_ok_body(200, HTML, "h\u{e9}llo".as_bytes());
    c.expect_silence(Duration::from_millis(200));
}

/// Request `i` of the pipelining test and what its response must be.
fn pipelined(i: usize) -> (Vec<u8>, u16, Vec<u8>) {
    match i % 4 {
        0 => (get(&format!("/missing/{i}")), 404, b"Not Found".to_vec()),
        1 => {
            let body = format!("body number {i}");
            (post("/echo", body.as_bytes()), 200, body.into_bytes())
        }
        2 => (get(&format!("/x{i}")), 404, b"Not Found".to_vec()),
        _ => (get("/list"), 200, b"[1,\"two\",{\"three\":3.5}]".to_vec()),
    }
}

#[test]
fn pipelines_100_requests_in_one_write_in_order() {
    let s = app();
    let mut c = s.connect();
    let mut all = Vec::new();
    for i in 0..100 {
        all.extend(pipelined(i).0);
    }
    c.send(&all);
    for i in 0..100 {
        let (_, status, body) = pipelined(i);
        let r = c.read_response();
        r.assert_basics(status);
        assert_eq!(r.body, body, "response {i}: {}", r.text());
    }
    c.expect_silence(Duration::from_millis(100));
    c.request(&get("/text")).assert_basics(200);
}

#[test]
fn pipeline_with_head_and_204_in_between() {
    let s = app();
    let mut c = s.connect();
    let mut all = Vec::new();
    all.extend_from_slice(b"HEAD /dict HTTP/1.1\r\nHost: t\r\n\r\n");
    all.extend(get("/none"));
    all.extend(get("/nope"));
    all.extend_from_slice(b"HEAD /nope HTTP/1.1\r\nHost: t\r\n\r\n");
    all.extend(post("/echo", b"last"));
    c.send(&all);
    let r = c.read_response_to(true);
    r.assert_basics(200);
    assert!(r.content_length().unwrap_or(0) > 0);
    c.read_response().assert_basics(204);
    assert_not_found(&c.read_response());
    c.read_response_to(true).assert_basics(404);
    c.read_response().assert_ok_body(200, OCTET, b"last");
}

#[test]
fn request_split_at_every_byte() {
    let s = app();
    let mut c = s.connect();
    let raw = b"POST /echo?split=1 HTTP/1.1\r\nHost: test\r\nX-Long-Header: some value here\r\n\
Content-Length: 11\r\n\r\nhello world";
    c.send_byte_by_byte(raw);
    c.read_response().assert_ok_body(200, OCTET, b"hello world");
    let chunked = b"POST /echo HTTP/1.1\r\nHost: test\r\nTransfer-Encoding: chunked\r\n\r\n\
5;ext=1\r\nhello\r\n6\r\n world\r\n0\r\nTrailer: x\r\n\r\n";
    c.send_byte_by_byte(chunked);
    c.read_response().assert_ok_body(200, OCTET, b"hello world");
}

#[test]
fn chunked_body_is_decoded() {
    let s = app();
    let mut c = s.connect();
    let raw = b"POST /echo HTTP/1.1\r\nHost: test\r\nTransfer-Encoding: chunked\r\n\r\n\
4\r\nWiki\r\n5;name=value;other\r\npedia\r\nE\r\n in\r\n\r\nchunks.\r\n0\r\n\r\n";
    c.request(raw)
        .assert_ok_body(200, OCTET, b"Wikipedia in\r\n\r\nchunks.");
    // With trailers, then a pipelined request right behind.
    let mut raw = b"POST /echo HTTP/1.1\r\nHost: test\r\nTransfer-Encoding: chunked\r\n\r\n\
3\r\nabc\r\n0\r\nX-Trailer: 1\r\nX-Other: 2\r\n\r\n"
        .to_vec();
    raw.extend(get("/text"));
    c.send(&raw);
    c.read_response().assert_ok_body(200, OCTET, b"abc");
    c.read_response().assert_basics(200);
    // Empty chunked body.
    c.request(b"POST /echo HTTP/1.1\r\nHost: test\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n")
        .assert_ok_body(200, OCTET, b"");
}

#[test]
fn large_body_arrives_whole() {
    let s = app();
    let mut c = s.connect();
    let body: Vec<u8> = (0..3_000_000u32).map(|i| (i % 251) as u8).collect();
    c.send(&post("/echo", &body));
    let r = c.read_response();
    r.assert_basics(200);
    assert_eq!(r.body.len(), body.len());
    assert!(r.body == body, "echoed body differs");
}

#[test]
fn expect_100_continue_before_body() {
    let s = app();
    let mut c = s.connect();
    c.send(
        b"POST /echo HTTP/1.1\r\nHost: test\r\nExpect: 100-continue\r\nContent-Length: 5\r\n\r\n",
    );
    let interim = c.read_exact_bytes(b"HTTP/1.1 100 Continue\r\n\r\n".len());
    assert_eq!(
        String::from_utf8_lossy(&interim),
        "HTTP/1.1 100 Continue\r\n\r\n"
    );
    c.send(b"hello");
    c.read_response().assert_ok_body(200, OCTET, b"hello");
    // Chunked with Expect works as well.
    c.send(
        b"POST /echo HTTP/1.1\r\nHost: test\r\nExpect: 100-continue\r\nTransfer-Encoding: chunked\r\n\r\n",
    );
    let interim = c.read_exact_bytes(25);
    assert_eq!(&interim[..], b"HTTP/1.1 100 Continue\r\n\r\n");
    c.send(b"2\r\nok\r\n0\r\n\r\n");
    c.read_response().assert_ok_body(200, OCTET, b"ok");
}

/// Sends `raw` on a fresh connection and expects `status` with
/// `Connection: close`, then the connection closed.
fn expect_error(s: &Server, raw: &[u8], status: u16) -> Response {
    let mut c = s.connect();
    c.send(raw);
    let r = c.read_response();
    r.assert_basics(status);
    assert_eq!(r.header("connection"), Some("close"), "{r:#?}");
    assert_eq!(r.header("content-type"), Some(PLAIN), "{r:#?}");
    c.expect_eof();
    r
}

#[test]
fn malformed_request_line_is_400() {
    let s = app();
    expect_error(&s, b"GET /text HTTP/1.1 extra\r\nHost: t\r\n\r\n", 400);
    expect_error(&s, b"GET\r\nHost: t\r\n\r\n", 400);
    expect_error(&s, b"G(T /text HTTP/1.1\r\nHost: t\r\n\r\n", 400);
    expect_error(&s, b"GET /text\r\n\r\n", 400);
}

#[test]
fn space_inside_target_is_400_not_505() {
    // "GET /te xt HTTP/1.1" is an invalid request line (RFC 9112 §3: 400), not
    // a request for an unsupported HTTP version.
    let s = app();
    expect_error(&s, b"GET /te xt HTTP/1.1\r\nHost: t\r\n\r\n", 400);
}

#[test]
fn malformed_header_is_400() {
    let s = app();
    expect_error(
        &s,
        b"GET /text HTTP/1.1\r\nHost: t\r\nNo colon here\r\n\r\n",
        400,
    );
    expect_error(
        &s,
        b"GET /text HTTP/1.1\r\nHost: t\r\nBad : space\r\n\r\n",
        400,
    );
    expect_error(
        &s,
        b"GET /text HTTP/1.1\r\nHost: t\r\nX: a\r\n folded\r\n\r\n",
        400,
    );
}

#[test]
fn garbage_is_400() {
    let s = app();
    expect_error(&s, b"\x00\x01\x02\xff\xfe garbage\r\n\r\n", 400);
    expect_error(
        &s,
        b"\x16\x03\x01\x00\xa5\x01\x00\x00\xa1\x03\x03\r\n\r\n",
        400,
    );
}

#[test]
fn missing_host_in_http11_is_400() {
    let s = app();
    expect_error(&s, b"GET /text HTTP/1.1\r\n\r\n", 400);
    expect_error(&s, b"GET /text HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n", 400);
}

#[test]
fn other_major_versions_are_505() {
    let s = app();
    expect_error(&s, b"GET /text HTTP/2.0\r\nHost: t\r\n\r\n", 505);
    expect_error(&s, b"GET /text HTTP/3.1\r\nHost: t\r\n\r\n", 505);
    expect_error(&s, b"GET /text HTTP/0.9\r\nHost: t\r\n\r\n", 505);
}

#[test]
fn content_length_and_transfer_encoding_is_400() {
    let s = app();
    expect_error(
        &s,
        b"POST /echo HTTP/1.1\r\nHost: t\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n",
        400,
    );
}

#[test]
fn differing_content_lengths_are_400() {
    let s = app();
    expect_error(
        &s,
        b"POST /echo HTTP/1.1\r\nHost: t\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\nhello!",
        400,
    );
    expect_error(
        &s,
        b"POST /echo HTTP/1.1\r\nHost: t\r\nContent-Length: 5, 6\r\n\r\nhello!",
        400,
    );
    expect_error(
        &s,
        b"POST /echo HTTP/1.1\r\nHost: t\r\nContent-Length: -5\r\n\r\nhello",
        400,
    );
}

#[test]
fn invalid_chunk_size_is_400() {
    let s = app();
    expect_error(
        &s,
        b"POST /echo HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\nabc\r\n0\r\n\r\n",
        400,
    );
    expect_error(
        &s,
        b"POST /echo HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabcX\r\n0\r\n\r\n",
        400,
    );
}

#[test]
fn request_line_over_8k_is_414() {
    let s = app();
    let raw = format!(
        "GET /text?{} HTTP/1.1\r\nHost: t\r\n\r\n",
        "a".repeat(9 * 1024)
    );
    expect_error(&s, raw.as_bytes(), 414);
}

#[test]
fn head_over_16k_is_431() {
    let s = app();
    let raw = format!(
        "GET /text HTTP/1.1\r\nHost: t\r\nX-Big: {}\r\n\r\n",
        "b".repeat(17 * 1024)
    );
    expect_error(&s, raw.as_bytes(), 431);
    // Many moderate headers adding up past the limit.
    let mut raw = String::from("GET /text HTTP/1.1\r\nHost: t\r\n");
    for i in 0..40 {
        raw.push_str(&format!("X-H{i}: {}\r\n", "c".repeat(500)));
    }
    raw.push_str("\r\n");
    expect_error(&s, raw.as_bytes(), 431);
}

#[test]
fn head_just_under_16k_is_accepted() {
    let s = app();
    let raw = format!(
        "GET /text HTTP/1.1\r\nHost: t\r\nX-Big: {}\r\n\r\n",
        "b".repeat(15 * 1024)
    );
    s.request(raw.as_bytes()).assert_basics(200);
}

#[test]
fn body_over_max_body_size_is_413() {
    let s = Server::start(&fixture("app/limits.pyrs"));
    // At the limit: fine.
    let body = vec![b'x'; 1024];
    s.request(&post("/echo", &body))
        .assert_ok_body(200, OCTET, &body);
    // Over it: refused from the head alone, body sent or not.
    expect_error(
        &s,
        b"POST /echo HTTP/1.1\r\nHost: t\r\nContent-Length: 1025\r\n\r\n",
        413,
    );
    expect_error(&s, &post("/echo", &vec![b'y'; 4096]), 413);
    // Chunked bodies count their decoded size.
    let mut raw = b"POST /echo HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n".to_vec();
    for _ in 0..3 {
        raw.extend_from_slice(b"200\r\n");
        raw.extend_from_slice(&[b'z'; 0x200]);
        raw.extend_from_slice(b"\r\n");
    }
    raw.extend_from_slice(b"0\r\n\r\n");
    expect_error(&s, &raw, 413);
    // 404 path: the limit applies before routing too.
    expect_error(
        &s,
        b"POST /nope HTTP/1.1\r\nHost: t\r\nContent-Length: 99999\r\n\r\n",
        413,
    );
}

#[test]
fn error_after_good_requests_in_a_pipeline() {
    let s = app();
    let mut c = s.connect();
    let mut raw = get("/text");
    raw.extend(get("/nope"));
    raw.extend_from_slice(b"BROKEN\r\n\r\n");
    raw.extend(get("/text"));
    c.send(&raw);
    c.read_response().assert_basics(200);
    assert_not_found(&c.read_response());
    let r = c.read_response();
    r.assert_basics(400);
    assert_eq!(r.header("connection"), Some("close"));
    c.expect_eof();
}

#[test]
fn a_bad_connection_does_not_disturb_others() {
    let s = app();
    let mut good = s.connect();
    good.request(&get("/text")).assert_basics(200);
    // Each refused with its own status and the parser's message as the body.
    for (bad, status, reason, body) in [
        (
            &b"\xff\xfe\xfd\r\n\r\n"[..],
            400,
            "Bad Request",
            "invalid method",
        ),
        (
            b"GET / HTTP/9.9\r\n\r\n",
            505,
            "HTTP Version Not Supported",
            "HTTP version not supported",
        ),
        (
            b"GET /text HTTP/1.1\r\n\r\n",
            400,
            "Bad Request",
            "missing or duplicate Host header",
        ),
    ] {
        let r = expect_error(&s, bad, status);
        assert_eq!(r.reason, reason, "{r:#?}");
        assert_eq!(r.text(), body, "{r:#?}");
        good.request(&get("/text")).assert_basics(200);
        s.get("/dict").assert_basics(200);
    }
    // A client that vanishes mid-request does not hurt either.
    {
        let mut c = s.connect();
        c.send(b"POST /echo HTTP/1.1\r\nHost: t\r\nContent-Length: 100\r\n\r\nshort");
    }
    good.request(&get("/text")).assert_basics(200);
}

#[test]
fn many_concurrent_connections() {
    let s = app();
    let addr = s.addr();
    let threads: Vec<_> = (0..16)
        .map(|t| {
            std::thread::spawn(move || {
                let mut c = common::Conn::connect(addr);
                for i in 0..20 {
                    let body = format!("t{t} i{i}");
                    let r = c.request(&post("/echo", body.as_bytes()));
                    assert_eq!(r.text(), body);
                }
            })
        })
        .collect();
    for t in threads {
        t.join().expect("client thread");
    }
}

#[test]
fn every_response_has_server_date_and_length() {
    let s = app();
    let mut c = s.connect();
    for (raw, status) in [
        (get("/text"), 200),
        (get("/nope"), 404),
        (get("/fail"), 500),
        (get("/http_error?kind=plain"), 404),
        (get("/none"), 204),
        (post("/echo", b"x"), 200),
    ] {
        c.request(&raw).assert_basics(status);
    }
}

#[test]
fn half_closed_client_still_gets_its_answers() {
    let s = app();
    let mut c = s.connect();
    let mut raw = post("/echo", b"before FIN");
    raw.extend(get("/nope"));
    c.send(&raw);
    c.shutdown_write();
    c.read_response().assert_ok_body(200, OCTET, b"before FIN");
    assert_not_found(&c.read_response());
    c.expect_eof();
}

#[test]
fn large_pipelined_responses_to_a_slow_reader() {
    // 20 responses of 256 KiB each: far more than the socket buffers hold, so
    // the server must keep writing as the client drains.
    let s = app();
    let mut c = s.connect();
    let body: Vec<u8> = (0..256 * 1024u32).map(|i| (i % 253) as u8).collect();
    let one = post("/echo", &body);
    let mut all = Vec::with_capacity(one.len() * 20);
    for _ in 0..20 {
        all.extend_from_slice(&one);
    }
    let writer = {
        let mut stream = c.stream.try_clone().expect("clone");
        std::thread::spawn(move || {
            use std::io::Write;
            stream.write_all(&all).expect("write pipeline");
        })
    };
    std::thread::sleep(Duration::from_millis(300));
    for i in 0..20 {
        let r = c.read_response();
        r.assert_basics(200);
        assert!(r.body == body, "response {i} differs");
    }
    writer.join().expect("writer");
    c.request(&get("/text")).assert_basics(200);
}

#[test]
fn body_sent_after_a_pause_is_awaited() {
    let s = app();
    let mut c = s.connect();
    c.send(b"POST /echo HTTP/1.1\r\nHost: t\r\nContent-Length: 10\r\n\r\nfirst");
    c.expect_silence(Duration::from_millis(300));
    c.send(b"-last");
    c.read_response().assert_ok_body(200, OCTET, b"first-last");
}

#[test]
fn more_than_100_header_fields_is_431() {
    let s = app();
    let mut raw = String::from("GET /text HTTP/1.1\r\nHost: t\r\n");
    for i in 0..120 {
        raw.push_str(&format!("X-{i}: v\r\n"));
    }
    raw.push_str("\r\n");
    expect_error(&s, raw.as_bytes(), 431);
}

#[test]
fn reactor_answers_before_a_python_answer_are_not_held_by_nagle() {
    // 404s answered at once, then a Python response for the same flight of
    // requests: without care the second write waits for the client's delayed ACK
    // (about 40 ms a round with Nagle's algorithm on, the default).
    let s = app();
    let mut c = s.connect();
    let mut flight = Vec::new();
    for _ in 0..31 {
        flight.extend_from_slice(b"GET /nope HTTP/1.1\r\nHost: t\r\n\r\n");
    }
    flight.extend_from_slice(b"GET /text HTTP/1.1\r\nHost: t\r\n\r\n");
    let rounds = 20;
    let started = std::time::Instant::now();
    for _ in 0..rounds {
        c.send(&flight);
        for _ in 0..31 {
            assert_not_found(&c.read_response());
        }
        assert_eq!(c.read_response().status, 200);
    }
    let took = started.elapsed();
    assert!(
        took < Duration::from_millis(400),
        "{rounds} rounds took {took:?}: writes are waiting for ACKs"
    );
}
