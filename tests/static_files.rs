//! Static mounts served by the reactors: bytes and headers (type, length,
//! validators, caching), HEAD, 304/412 preconditions, ranges (206/416,
//! `If-Range`), 405 with `Allow`, folder indexes, precompressed siblings,
//! pipelined mixes with Python routes and 404s, every path trick that could
//! reach outside the folder (including a file swapped for a symlink while the
//! server runs), a 64 MiB download beside quick answers on the same reactor, a
//! client that reads none of a big file, and the startup errors. Real server on
//! port 0, raw sockets and curl; Linux only, like the server.

mod common;

use std::os::unix::fs::symlink;
use std::process::Command;
use std::thread;
use std::time::{Duration, Instant};

use common::{get, rss_kib, run_pyrs, Conn, Project, Response, Server};

const PY: &str = "import time\n\nclass Api:\n    def hello(self, request):\n        return 'hello ' + request.path\n\n    def slow(self, request):\n        time.sleep(0.05)\n        return 'slow'\n";

const SECRET: &str = "TOP-SECRET-outside-the-folder";
const APP_JS: &str = "console.log('pyrs');\n";
const BIG: usize = 100 * 1024;

/// A project with mounts `/static/*` (public, max_age 3600), `/docs/*`
/// (public/docs, index.html), `/pre/*` (public, precompressed), Python routes
/// `/py` and `/slow`, and `secret.txt` beside (outside) the folders.
fn project() -> Project {
    let config = r#"{
  "thread_count": 1,
  "modules": [
    { "path": "/py",   "module": "main", "class": "Api", "handler": "hello" },
    { "path": "/slow", "module": "main", "class": "Api", "handler": "slow" }
  ],
  "static": [
    { "path": "/static/*", "dir": "public", "max_age": 3600 },
    { "path": "/docs/*", "dir": "public/docs", "index": "index.html" },
    { "path": "/pre/*", "dir": "public", "precompressed": true }
  ]
}"#;
    let p = Project::new(
        config,
        &[
            ("main.py", PY),
            ("secret.txt", SECRET),
            ("public/app.js", APP_JS),
            ("public/app.js.br", "BROTLI-BYTES"),
            ("public/app.js.gz", "GZIP-BYTES"),
            ("public/notes.txt", "héllo\n"),
            ("public/data", "\x00\x01binary"),
            ("public/swap.txt", "swap me"),
            ("public/sub/inner.css", "body{}"),
            ("public/docs/index.html", "<h1>docs</h1>"),
            ("public/docs/guide/index.html", "<h1>guide</h1>"),
            ("public/docs/empty/.keep", ""),
            ("outside/secret.txt", SECRET),
        ],
    );
    let big: Vec<u8> = (0..BIG).map(|i| (i * 7 % 251) as u8).collect();
    std::fs::write(p.dir.join("public/big.bin"), big).expect("write big");
    let public = p.dir.join("public");
    symlink(p.dir.join("secret.txt"), public.join("abs-link")).expect("symlink");
    symlink("../secret.txt", public.join("rel-link")).expect("symlink");
    symlink("../outside", public.join("out-dir")).expect("symlink");
    symlink("/etc/passwd", public.join("passwd")).expect("symlink");
    p
}

fn start(p: &Project) -> Server {
    Server::start(&p.file)
}

fn request(s: &Server, raw: &str) -> Response {
    s.connect().request(raw.as_bytes())
}

fn with_header(path: &str, header: &str) -> String {
    format!("GET {path} HTTP/1.1\r\nHost: t\r\n{header}\r\n\r\n")
}

#[test]
fn serves_bytes_with_type_length_validators_and_caching() {
    let p = project();
    let s = start(&p);
    let r = s.get("/static/app.js");
    r.assert_ok_body(200, "text/javascript; charset=utf-8", APP_JS.as_bytes());
    assert_eq!(r.header("cache-control"), Some("max-age=3600"));
    assert_eq!(r.header("accept-ranges"), Some("bytes"));
    assert_eq!(r.header("vary"), None, "no precompressed files on /static");
    let etag = r.header("etag").expect("an ETag");
    assert!(etag.starts_with('"') && etag.ends_with('"'), "{etag}");
    let modified = std::fs::metadata(p.dir.join("public/app.js"))
        .and_then(|m| m.modified())
        .expect("mtime");
    let last_modified = r.header("last-modified").expect("Last-Modified");
    let parsed = httpdate::parse_http_date(last_modified).expect("an HTTP-date");
    let off = modified
        .duration_since(parsed)
        .unwrap_or_else(|e| e.duration());
    assert!(
        off < Duration::from_secs(1),
        "{last_modified} vs {modified:?}"
    );

    s.get("/static/notes.txt").assert_ok_body(
        200,
        "text/plain; charset=utf-8",
        "héllo\n".as_bytes(),
    );
    s.get("/static/data")
        .assert_ok_body(200, "application/octet-stream", b"\x00\x01binary");
    s.get("/static/sub/inner.css")
        .assert_ok_body(200, "text/css; charset=utf-8", b"body{}");
    let big = s.get("/static/big.bin");
    big.assert_basics(200);
    assert_eq!(big.body.len(), BIG);
    assert!(big
        .body
        .iter()
        .enumerate()
        .all(|(i, &b)| b == (i * 7 % 251) as u8));
    // The query is not part of the file name.
    s.get("/static/app.js?v=2").assert_basics(200);
    s.get("/static/missing.js").assert_basics(404);
    assert_eq!(s.stderr(), "", "no Python involvement");
}

#[test]
fn head_gets_the_headers_alone() {
    let p = project();
    let s = start(&p);
    let mut c = s.connect();
    for path in ["/static/app.js", "/static/big.bin"] {
        let r = c.request(format!("HEAD {path} HTTP/1.1\r\nHost: t\r\n\r\n").as_bytes());
        r.assert_basics(200);
        assert!(r.body.is_empty());
        let len = std::fs::metadata(p.dir.join(&format!("public{}", &path[7..])))
            .expect("stat")
            .len();
        assert_eq!(r.content_length(), Some(len as usize), "{path}");
        assert!(r.header("etag").is_some() && r.header("last-modified").is_some());
    }
    // Nothing was sent after the heads: the next answer is the next request's.
    c.request(&get("/static/app.js")).assert_ok_body(
        200,
        "text/javascript; charset=utf-8",
        APP_JS.as_bytes(),
    );
}

#[test]
fn preconditions_give_304_and_412_in_rfc_order() {
    let p = project();
    let s = start(&p);
    let first = s.get("/static/app.js");
    let etag = first.header("etag").expect("etag").to_owned();
    let modified = first.header("last-modified").expect("lm").to_owned();
    let mut c = s.connect();
    let mut ask = |header: String| c.request(with_header("/static/app.js", &header).as_bytes());

    let r = ask(format!("If-None-Match: {etag}"));
    r.assert_basics(304);
    assert!(r.body.is_empty());
    assert_eq!(r.header("etag"), Some(etag.as_str()));
    assert_eq!(r.header("cache-control"), Some("max-age=3600"));
    assert_eq!(r.header("content-type"), None);
    ask(format!("If-None-Match: \"nope\", W/{etag}")).assert_basics(304);
    ask("If-None-Match: *".to_owned()).assert_basics(304);
    ask(format!("If-Modified-Since: {modified}")).assert_basics(304);
    ask("If-Modified-Since: Sat, 01 Jan 2000 00:00:00 GMT".to_owned()).assert_basics(200);
    // If-None-Match that fails wins over an If-Modified-Since that would pass.
    let r = ask(format!(
        "If-None-Match: \"other\"\r\nIf-Modified-Since: {modified}"
    ));
    r.assert_ok_body(200, "text/javascript; charset=utf-8", APP_JS.as_bytes());
    ask("If-Match: \"other\"".to_owned()).assert_basics(412);
    ask(format!("If-Match: {etag}")).assert_basics(200);
    ask("If-Unmodified-Since: Sat, 01 Jan 2000 00:00:00 GMT".to_owned()).assert_basics(412);
    // A HEAD is conditional too.
    let head = format!("HEAD /static/app.js HTTP/1.1\r\nHost: t\r\nIf-None-Match: {etag}\r\n\r\n");
    let r = c.request(head.as_bytes());
    r.assert_basics(304);
}

#[test]
fn one_range_gets_206_and_a_bad_one_416() {
    let p = project();
    let s = start(&p);
    let whole: Vec<u8> = (0..BIG).map(|i| (i * 7 % 251) as u8).collect();
    let etag = s
        .get("/static/big.bin")
        .header("etag")
        .expect("etag")
        .to_owned();
    let mut c = s.connect();
    let cases = [
        ("bytes=0-9", 0, 9),
        ("bytes=100000-", 100_000, BIG - 1),
        ("bytes=-10", BIG - 10, BIG - 1),
        ("bytes=50000-60000", 50_000, 60_000),
        ("bytes=10-99999999", 10, BIG - 1),
    ];
    for (range, first, last) in cases {
        let r = c.request(with_header("/static/big.bin", &format!("Range: {range}")).as_bytes());
        r.assert_basics(206);
        assert_eq!(
            r.header("content-range"),
            Some(format!("bytes {first}-{last}/{BIG}").as_str()),
            "{range}"
        );
        assert_eq!(r.body, whole[first..=last], "{range}");
    }
    // Small files take the in-memory path.
    let r = c.request(with_header("/static/app.js", "Range: bytes=1-3").as_bytes());
    r.assert_basics(206);
    assert_eq!(r.body, &APP_JS.as_bytes()[1..=3]);

    for range in ["bytes=200000-", "bytes=-0", "bytes=102400-102401"] {
        let r = c.request(with_header("/static/big.bin", &format!("Range: {range}")).as_bytes());
        r.assert_basics(416);
        assert_eq!(
            r.header("content-range"),
            Some(format!("bytes */{BIG}").as_str())
        );
    }
    // Several ranges, a malformed one or another unit: the whole file.
    for range in ["bytes=0-1,5-6", "bytes=9-2", "lines=1-2"] {
        let r = c.request(with_header("/static/big.bin", &format!("Range: {range}")).as_bytes());
        r.assert_basics(200);
        assert_eq!(r.body.len(), BIG, "{range}");
    }
    // If-Range: the range only for the same representation.
    let r = c.request(
        with_header(
            "/static/big.bin",
            &format!("Range: bytes=0-0\r\nIf-Range: {etag}"),
        )
        .as_bytes(),
    );
    r.assert_basics(206);
    let r = c.request(
        with_header("/static/big.bin", "Range: bytes=0-0\r\nIf-Range: \"stale\"").as_bytes(),
    );
    r.assert_basics(200);
    assert_eq!(r.body.len(), BIG);
    // HEAD ignores Range.
    let r = c.request(b"HEAD /static/big.bin HTTP/1.1\r\nHost: t\r\nRange: bytes=0-0\r\n\r\n");
    r.assert_basics(200);
    assert_eq!(r.content_length(), Some(BIG));
}

#[test]
fn other_methods_get_405_with_allow() {
    let p = project();
    let s = start(&p);
    let mut c = s.connect();
    for method in ["POST", "PUT", "DELETE", "OPTIONS", "PATCH"] {
        let raw =
            format!("{method} /static/app.js HTTP/1.1\r\nHost: t\r\nContent-Length: 3\r\n\r\nabc");
        let r = c.request(raw.as_bytes());
        r.assert_basics(405);
        assert_eq!(r.header("allow"), Some("GET, HEAD"), "{method}");
    }
    c.request(&get("/static/app.js")).assert_basics(200);
}

#[test]
fn folders_are_404_unless_an_index_names_a_file() {
    let p = project();
    let s = start(&p);
    s.get("/docs/")
        .assert_ok_body(200, "text/html; charset=utf-8", b"<h1>docs</h1>");
    // A folder asked for without its final slash is redirected to it, so the
    // index's relative links resolve inside it; the query goes along.
    for (path, to) in [
        ("/docs", "/docs/"),
        ("/docs/guide", "/docs/guide/"),
        ("/docs/guide?lang=en", "/docs/guide/?lang=en"),
    ] {
        let r = s.get(path);
        r.assert_basics(301);
        assert_eq!(r.header("location"), Some(to), "{path}");
    }
    s.get("/docs/guide/")
        .assert_ok_body(200, "text/html; charset=utf-8", b"<h1>guide</h1>");
    s.get("/docs/index.html").assert_basics(200);
    s.get("/docs/empty/").assert_basics(404);
    for path in ["/static/", "/static", "/static/sub/", "/static/sub"] {
        s.get(path).assert_basics(404);
    }
    // A file is not a folder.
    s.get("/static/app.js/").assert_basics(404);
}

#[test]
fn precompressed_siblings_follow_accept_encoding() {
    let p = project();
    let s = start(&p);
    let ask = |ae: &str| request(&s, &with_header("/pre/app.js", ae));
    let br = ask("Accept-Encoding: gzip, br");
    br.assert_ok_body(200, "text/javascript; charset=utf-8", b"BROTLI-BYTES");
    assert_eq!(br.header("content-encoding"), Some("br"));
    assert_eq!(br.header("vary"), Some("Accept-Encoding"));
    let gz = ask("Accept-Encoding: gzip, br;q=0");
    gz.assert_ok_body(200, "text/javascript; charset=utf-8", b"GZIP-BYTES");
    assert_eq!(gz.header("content-encoding"), Some("gzip"));
    let plain = ask("Accept-Encoding: identity");
    plain.assert_ok_body(200, "text/javascript; charset=utf-8", APP_JS.as_bytes());
    assert_eq!(plain.header("content-encoding"), None);
    assert_eq!(plain.header("vary"), Some("Accept-Encoding"));
    let tags = [&br, &gz, &plain].map(|r| r.header("etag").expect("etag").to_owned());
    assert!(
        tags[0] != tags[1] && tags[1] != tags[2] && tags[0] != tags[2],
        "{tags:?}"
    );
    // Only where a sibling exists.
    let r = ask("Accept-Encoding: br")
        .header("content-encoding")
        .map(str::to_owned);
    assert_eq!(r.as_deref(), Some("br"));
    let css = request(
        &s,
        &with_header("/pre/sub/inner.css", "Accept-Encoding: br"),
    );
    css.assert_ok_body(200, "text/css; charset=utf-8", b"body{}");
}

/// Sends `raw` on a fresh connection; answers what came back, or `None` if the
/// server closed without answering.
fn attempt(s: &Server, raw: &[u8]) -> Option<Response> {
    let mut c = s.connect();
    c.send(raw);
    c.try_read_response(false).ok().flatten()
}

#[test]
fn no_path_trick_reaches_outside_the_folder() {
    let p = project();
    let s = start(&p);
    let tricks = [
        "/static/../secret.txt",
        "/static/%2e%2e/secret.txt",
        "/static/%2E%2E/secret.txt",
        "/static/..%2fsecret.txt",
        "/static/%2e%2e%2fsecret.txt",
        "/static/sub/..%2f..%2fsecret.txt",
        "/static/..%5csecret.txt",
        "/static/%5c..%5csecret.txt",
        "/static/%252e%252e/secret.txt",
        "/static/%252e%252e%252fsecret.txt",
        "/static//secret.txt",
        "/static/%2f..%2fsecret.txt",
        &format!("/static/{}", p.dir.join("secret.txt").display()),
        &format!("/static/%2f{}", p.dir.join("secret.txt").display()),
        "/static//etc/passwd",
        "/static/%2fetc%2fpasswd",
        "/static/secret.txt%00",
        "/static/%00../secret.txt",
        "/static/%c0%ae%c0%ae/secret.txt",
        "/static/%c0%ae%c0%ae%c0%afsecret.txt",
        "/static/%e0%80%ae%e0%80%ae/secret.txt",
        "/static/abs-link",
        "/static/rel-link",
        "/static/out-dir/secret.txt",
        "/static/passwd",
        "/docs/../../secret.txt",
        "/docs/%2e%2e/%2e%2e/secret.txt",
        "/static/./app.js",
        "/static/sub/./../app.js",
    ];
    for trick in tricks {
        for raw in [
            format!("GET {trick} HTTP/1.1\r\nHost: t\r\n\r\n"),
            format!("GET http://t{trick} HTTP/1.1\r\nHost: t\r\n\r\n"),
        ] {
            let Some(r) = attempt(&s, raw.as_bytes()) else {
                continue;
            };
            assert!(
                r.status == 404 || r.status == 400,
                "{trick}: {} {:?}",
                r.status,
                r.text()
            );
            assert!(
                !r.text().contains(SECRET) && !r.text().contains("root:"),
                "{trick}"
            );
        }
    }
    // Raw bytes a browser would never send.
    for raw in [
        &b"GET /static/..\\secret.txt HTTP/1.1\r\nHost: t\r\n\r\n"[..],
        b"GET /static/\\..\\secret.txt HTTP/1.1\r\nHost: t\r\n\r\n",
        b"GET /static/\xc0\xae\xc0\xae/secret.txt HTTP/1.1\r\nHost: t\r\n\r\n",
    ] {
        if let Some(r) = attempt(&s, raw) {
            assert!(r.status == 404 || r.status == 400, "{r:?}");
            assert!(!r.text().contains(SECRET));
        }
    }
    // curl with the path as given (no client-side dot removal).
    for trick in [
        "/static/../secret.txt",
        "/static/%2e%2e/secret.txt",
        "/static/..%2fsecret.txt",
    ] {
        let (status, body) = curl(&s, &["--path-as-is"], trick);
        assert!(status == "404" || status == "400", "{trick}: {status}");
        assert!(!body.contains(SECRET));
    }
    // A symlink that stays inside the folder is followed.
    symlink("app.js", p.dir.join("public/inside-link")).expect("symlink");
    s.get("/static/inside-link").assert_basics(200);
}

/// `curl -s [args] http://addr/path`: the status and the body.
fn curl(s: &Server, args: &[&str], path: &str) -> (String, String) {
    let out = Command::new("curl")
        .args(["-s", "-o", "-", "-w", "\n%{http_code}", "--max-time", "10"])
        .args(args)
        .arg(format!("http://{}{path}", s.addr()))
        .output()
        .expect("run curl");
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let (body, status) = text.rsplit_once('\n').unwrap_or(("", &text));
    (status.to_owned(), body.to_owned())
}

#[test]
fn a_file_swapped_for_a_symlink_after_startup_does_not_escape() {
    let p = project();
    let s = start(&p);
    let public = p.dir.join("public");
    s.get("/static/swap.txt")
        .assert_ok_body(200, "text/plain; charset=utf-8", b"swap me");
    s.get("/static/sub/inner.css").assert_basics(200);
    std::fs::remove_file(public.join("swap.txt")).expect("rm");
    symlink(p.dir.join("secret.txt"), public.join("swap.txt")).expect("symlink");
    std::fs::rename(public.join("sub"), p.dir.join("sub-moved")).expect("mv");
    symlink(p.dir.join("outside"), public.join("sub")).expect("symlink");
    std::fs::write(p.dir.join("outside/inner.css"), SECRET).expect("write");
    for path in [
        "/static/swap.txt",
        "/static/sub/inner.css",
        "/static/sub/secret.txt",
    ] {
        let r = s.get(path);
        r.assert_basics(404);
        assert!(!r.text().contains(SECRET), "{path}");
    }
    let (status, body) = curl(&s, &[], "/static/swap.txt");
    assert_eq!(status, "404");
    assert!(!body.contains(SECRET));
}

#[test]
fn pipelined_static_python_and_404_answers_stay_in_order() {
    let p = project();
    let s = start(&p);
    let mut c = s.connect();
    let raw = [
        get("/static/app.js"),
        get("/slow"),
        get("/static/big.bin"),
        get("/nope"),
        get("/py"),
        b"HEAD /static/big.bin HTTP/1.1\r\nHost: t\r\n\r\n".to_vec(),
        get("/static/notes.txt"),
        get("/slow"),
        with_header("/static/big.bin", "Range: bytes=0-4").into_bytes(),
        get("/static/app.js"),
    ]
    .concat();
    c.send(&raw);
    let mut next = |head: bool| c.read_response_to(head);
    assert_eq!(next(false).body, APP_JS.as_bytes());
    assert_eq!(next(false).text(), "slow");
    assert_eq!(next(false).body.len(), BIG);
    next(false).assert_basics(404);
    assert_eq!(next(false).text(), "hello /py");
    let head = next(true);
    assert_eq!((head.status, head.content_length()), (200, Some(BIG)));
    assert_eq!(next(false).text(), "héllo\n");
    assert_eq!(next(false).text(), "slow");
    let part = next(false);
    assert_eq!((part.status, part.body.len()), (206, 5));
    assert_eq!(next(false).body, APP_JS.as_bytes());
}

/// A project with one reactor serving `size` pseudo-random bytes as `/f/big`.
fn big_file_project(size: usize) -> (Project, Vec<u8>) {
    let config = r#"{
  "thread_count": 1,
  "modules": [{ "path": "/py", "module": "main", "class": "Api", "handler": "hello" }],
  "static": [{ "path": "/f/*", "dir": "files" }]
}"#;
    let p = Project::new(config, &[("main.py", PY), ("files/small.txt", "small")]);
    let mut state = 0x9e37_79b9_7f4a_7c15u64;
    let data: Vec<u8> = (0..size)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state as u8
        })
        .collect();
    std::fs::write(p.dir.join("files/big"), &data).expect("write big file");
    (p, data)
}

const MIB: usize = 1024 * 1024;

#[test]
fn a_64_mib_download_is_intact_while_the_same_reactor_answers_others() {
    let (p, data) = big_file_project(64 * MIB);
    let s = start(&p);
    let addr = s.addr();
    // A raw-socket client checks every byte; curl, reading as fast as loopback
    // allows, fetches the file four times over one connection.
    let checker = thread::spawn(move || {
        let mut c = Conn::connect(addr);
        let r = c.request(&get("/f/big"));
        r.assert_basics(200);
        assert!(r.body == data, "the download is not the file");
    });
    let url = format!("http://{addr}/f/big");
    let fast = thread::spawn(move || {
        let started = Instant::now();
        let out = Command::new("curl")
            .args([
                "-s",
                "--max-time",
                "60",
                "-o",
                "/dev/null",
                "-o",
                "/dev/null",
            ])
            .args([
                "-o",
                "/dev/null",
                "-o",
                "/dev/null",
                "-w",
                "%{size_download} ",
            ])
            .args([&url, &url, &url, &url])
            .output()
            .expect("run curl");
        (
            String::from_utf8_lossy(&out.stdout).into_owned(),
            started.elapsed(),
        )
    });
    // Meanwhile, on the same (only) reactor: quick answers, one after another.
    let mut other = s.connect();
    let mut slowest = Duration::ZERO;
    let mut answered = 0;
    while !checker.is_finished() || !fast.is_finished() {
        let t = Instant::now();
        other.request(&get("/f/small.txt")).assert_basics(200);
        other.request(&get("/nope")).assert_basics(404);
        slowest = slowest.max(t.elapsed());
        answered += 1;
    }
    checker.join().expect("checker");
    let (sizes, took) = fast.join().expect("curl");
    let size = (64 * MIB).to_string();
    assert_eq!(
        sizes.split_whitespace().collect::<Vec<_>>(),
        vec![size.as_str(); 4]
    );
    eprintln!(
        "curl: 4 x 64 MiB in {took:?} ({:.2} GB/s); {answered} pairs of other answers \
         meanwhile, slowest pair {slowest:?}",
        (4 * 64 * MIB) as f64 / took.as_secs_f64() / 1e9
    );
    assert!(answered >= 1);
    assert!(
        slowest < Duration::from_secs(2),
        "another connection waited {slowest:?} behind a download"
    );
}

#[test]
fn a_client_that_reads_none_of_a_big_file_does_not_grow_memory() {
    let (p, data) = big_file_project(64 * MIB);
    let s = start(&p);
    s.get("/f/small.txt").assert_basics(200);
    let before = rss_kib(s.pid());
    let mut lazy = s.connect();
    lazy.send(&[get("/f/big"), get("/f/big"), get("/f/big")].concat());
    thread::sleep(Duration::from_millis(500));
    let during = rss_kib(s.pid());
    let grown = during.saturating_sub(before);
    eprintln!("3 x 64 MiB owed to a client that reads nothing: VmRSS {before} -> {during} KiB");
    assert!(grown < 16 * 1024, "server RSS grew {grown} KiB");
    // Others are served meanwhile.
    s.get("/f/small.txt")
        .assert_ok_body(200, "text/plain; charset=utf-8", b"small");
    s.get("/py").assert_basics(200);
    // The client reads again and gets every byte.
    let first = lazy.read_response();
    assert!(first.body == data, "the first download is not the file");
    let second = lazy.read_response();
    assert_eq!(second.body.len(), data.len());
    let third = lazy.read_response();
    assert!(third.body == data);
}

#[test]
fn a_project_of_static_files_alone_serves_them() {
    let p = Project::new(
        r#"{ "thread_count": 1, "static": [{ "path": "/*", "dir": "site", "index": "index.html" }] }"#,
        &[("site/index.html", "<p>home</p>"), ("site/a.css", "a{}")],
    );
    let s = start(&p);
    s.get("/")
        .assert_ok_body(200, "text/html; charset=utf-8", b"<p>home</p>");
    s.get("/a.css")
        .assert_ok_body(200, "text/css; charset=utf-8", b"a{}");
    s.get("/missing").assert_basics(404);
    s.expect_stdout("Added static route /* from ");
}

/// Runs pyrs on a project whose third line is `static_line`; expects it to
/// fail before listening and returns its stderr.
fn refused(static_line: &str) -> String {
    let config = format!(
        "{{\n  \"modules\": [{{\"path\": \"/\", \"module\": \"main\", \"class\": \"Api\", \
         \"handler\": \"hello\"}}],\n{static_line}\n}}\n"
    );
    let p = Project::new(&config, &[("main.py", PY), ("public/a", "a")]);
    let out = run_pyrs(
        &["project.pyrs", "-a", "127.0.0.1", "-p", "0"],
        Some(&p.dir.path),
    );
    assert!(!out.status.success(), "{}", out.stdout);
    assert!(!out.stdout.contains("Listening..."), "{}", out.stdout);
    out.stderr
}

#[test]
fn static_mount_errors_stop_startup_with_their_position() {
    let missing = refused(r#"  "static": [{"path": "/s/*", "dir": "nowhere"}]"#);
    let at = "pyrs: project.pyrs:3:38: key \"static[0].dir\": folder ";
    assert!(missing.contains(at), "{missing}");
    let unknown = refused(r#"  "static": [{"path": "/s/*", "dir": "public", "idx": "i"}]"#);
    let at = "pyrs: project.pyrs:3:48: key \"static[0]\": unknown key \"idx\"";
    assert!(unknown.contains(at), "{unknown}");
    let twice = refused(
        r#"  "static": [{"path": "/s/*", "dir": "public"}, {"path": "/s/*", "dir": "public"}]"#,
    );
    let at = "project.pyrs:3:58: key \"static[1].path\": duplicate route \"/s/*\" \
              (first defined at line 3)";
    assert!(twice.contains(at), "{twice}");
}
