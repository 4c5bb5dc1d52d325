//! WebSockets with real clients: the `websockets` library (pinned, in a venv
//! of its own) against a pyrs handler entry and a raw ASGI app, and raw frames
//! over a socket for what a well-behaved client never sends (unmasked frames,
//! bad UTF-8, oversized control frames, a message past the limit) and for a
//! client that vanishes.

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use common::{framework_venv, run_to_exit, Server, TempDir};

const WEBSOCKETS: &[&str] = &["websockets==15.0.1"];

const APP: &str = r#"
import asyncio, os

EVENTS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "events.txt")

def note(line):
    with open(EVENTS, "a") as f:
        f.write(line + "\n")

class Chat:
    async def echo(self, ws):
        await ws.accept(subprotocol="chat" if "chat" in ws.subprotocols else None)
        while (msg := await ws.receive()) is not None:
            if msg == "bye":
                await ws.close(4000, "see you")
                return
            await ws.send(msg)
        note(f"echo gone {ws.close_code}")

    async def flood(self, ws):
        # Sends until the client stops reading, then waits (backpressure).
        await ws.accept()
        sent = 0
        chunk = b"x" * 65536
        try:
            while sent < 256 * 1024 * 1024:
                await ws.send(chunk)
                sent += len(chunk)
        except OSError:
            pass
        note(f"flood sent {sent}")

    async def lazy(self, ws):
        # Does not read for a while, then takes everything.
        await ws.accept()
        await asyncio.sleep(1.5)
        n = 0
        while (msg := await ws.receive()) is not None:
            n += 1
            if msg == "last":
                break
        note(f"lazy got {n}")

    async def tasks(self, ws):
        # receive() under wait_for, in gather, cancelled before it ran, and
        # in a task of its own beside a ticker that sleeps between sends.
        await ws.accept()
        try:
            await asyncio.wait_for(ws.receive(), 0.2)
        except asyncio.TimeoutError:
            await ws.send("timed out")
        a, b = await asyncio.gather(ws.receive(), ws.receive())
        await ws.send(f"{a}+{b}")
        echoed = []
        async def reader():
            while (msg := await ws.receive()) is not None:
                if msg == "stop":
                    return
                echoed.append(msg)
                await ws.send("echo " + msg)
        task = asyncio.create_task(reader())
        for i in range(3):
            await asyncio.sleep(0.05)
            await ws.send(f"tick {i}")
        await task
        never = asyncio.ensure_future(ws.receive())
        never.cancel()
        await ws.send(f"read {len(echoed)}")
        await ws.send("got " + await ws.receive())
        try:
            await never
        except asyncio.CancelledError:
            note("never cancelled")
        async def leftover():
            note(f"leftover got {await ws.receive()!r}")
        asyncio.create_task(leftover())
        await asyncio.sleep(0)

    def plain(self, request):
        return "plain http still works"

async def asgi(scope, receive, send):
    if scope["type"] == "http":
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"asgi http"})
        return
    assert scope["type"] == "websocket"
    assert (await receive())["type"] == "websocket.connect"
    if scope["path"].endswith("/refuse"):
        await send({"type": "websocket.close"})
        return
    await send({"type": "websocket.accept", "headers": [(b"x-hello", b"there")]})
    while True:
        m = await receive()
        if m["type"] == "websocket.disconnect":
            note(f"asgi disconnect {m['code']}")
            return
        if m.get("text") == "path":
            await send({"type": "websocket.send", "text": scope["path"] + "?" + scope["query_string"].decode()})
        elif m.get("text") is not None:
            await send({"type": "websocket.send", "text": m["text"].upper()})
        else:
            await send({"type": "websocket.send", "bytes": m["bytes"][::-1]})
"#;

fn project(dir: &TempDir, extra: &str) -> PathBuf {
    dir.write("app.py", APP);
    dir.write(
        "project.pyrs",
        &format!(
            r#"{{ "listen_backlog": 2048, "max_connections": 4000, {extra}
  "modules": [
    {{ "path": "/echo", "module": "app", "class": "Chat", "handler": "echo", "websocket": true }},
    {{ "path": "/flood", "module": "app", "class": "Chat", "handler": "flood", "websocket": true }},
    {{ "path": "/lazy", "module": "app", "class": "Chat", "handler": "lazy", "websocket": true }},
    {{ "path": "/tasks", "module": "app", "class": "Chat", "handler": "tasks", "websocket": true }},
    {{ "path": "/plain", "module": "app", "class": "Chat", "handler": "plain" }},
    {{ "path": "/asgi/*", "app": "app:asgi", "interface": "asgi" }}
  ] }}"#
        ),
    )
}

/// Runs `script` with the websockets venv's Python, `PORT` set; returns stdout.
fn client(server: &Server, script: &str) -> String {
    let venv = framework_venv("websockets-15.0.1", WEBSOCKETS);
    let mut cmd = std::process::Command::new(venv.join("bin/python"));
    cmd.args(["-c", script])
        .env("PORT", server.port.to_string());
    let out = run_to_exit(cmd);
    assert!(
        out.status.success(),
        "client failed:\n{}{}\nserver stderr:\n{}",
        out.stdout,
        out.stderr,
        server.stderr()
    );
    out.stdout
}

fn events(dir: &TempDir) -> String {
    std::fs::read_to_string(dir.join("events.txt")).unwrap_or_default()
}

fn wait_event(dir: &TempDir, needle: &str) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while !events(dir).contains(needle) {
        assert!(
            Instant::now() < deadline,
            "no {needle:?} in {:?}",
            events(dir)
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn the_websockets_library_talks_to_a_handler_and_an_asgi_app() {
    let dir = TempDir::new("ws");
    let server = Server::start(&project(&dir, ""));
    let out = client(
        &server,
        r#"
import asyncio, os, websockets
from websockets.frames import Frame, Opcode
base = f"ws://127.0.0.1:{os.environ['PORT']}"
async def main():
    async with websockets.connect(base + "/echo", subprotocols=["chat"]) as ws:
        print("subprotocol", ws.subprotocol)
        await ws.send("hello"); print(await ws.recv())
        await ws.send(b"\x00\xff"); print(await ws.recv())
        await ws.send("é" * 300000); print(len(await ws.recv()))
        await ws.send(["frag", "mented", " message"]); print(await ws.recv())
        pong = await ws.ping(b"p"); await asyncio.wait_for(pong, 5); print("pong")
        await ws.send("bye")
        try:
            await ws.recv()
        except websockets.ConnectionClosed as e:
            print("closed", e.rcvd.code, e.rcvd.reason)
    async with websockets.connect(base + "/asgi/room?x=1") as ws:
        print("header", ws.response.headers["x-hello"])
        await ws.send("path"); print(await ws.recv())
        await ws.send("shout"); print(await ws.recv())
        await ws.send(b"abc"); print(await ws.recv())
    try:
        async with websockets.connect(base + "/asgi/refuse"):
            pass
    except websockets.InvalidStatus as e:
        print("refused", e.response.status_code)
    async with websockets.connect(base + "/echo") as ws:
        await ws.close(1001, "leaving")
asyncio.run(main())
"#,
    );
    let expected = [
        "subprotocol chat",
        "hello",
        "b'\\x00\\xff'",
        "300000",
        "fragmented message",
        "pong",
        "closed 4000 see you",
        "header there",
        "/asgi/room?x=1",
        "SHOUT",
        "b'cba'",
        "refused 403",
    ];
    assert_eq!(
        out.lines().collect::<Vec<_>>(),
        expected,
        "{}",
        server.stderr()
    );
    wait_event(&dir, "asgi disconnect 1000");
    wait_event(&dir, "echo gone 1001");
    // Plain HTTP beside the sockets.
    server.get("/plain").assert_basics(200);
    assert_eq!(server.get("/asgi/x").text(), "asgi http");
    let r = server.get("/echo");
    assert_eq!(r.status, 426, "plain HTTP to a WebSocket entry");
}

#[test]
fn receive_works_under_wait_for_gather_cancel_and_tasks_of_its_own() {
    let dir = TempDir::new("ws-tasks");
    let server = Server::start(&project(&dir, ""));
    let out = client(
        &server,
        r#"
import asyncio, os, websockets
async def main():
    async with websockets.connect(f"ws://127.0.0.1:{os.environ['PORT']}/tasks") as ws:
        print(await ws.recv())
        await ws.send("a"); await ws.send("b"); print(await ws.recv())
        await ws.send("x")
        print(sorted([await ws.recv() for _ in range(4)]))
        await ws.send("stop"); print(await ws.recv())
        await ws.send("after"); print(await ws.recv())
        await ws.wait_closed(); print("closed", ws.close_code)
asyncio.run(main())
"#,
    );
    let expected = [
        "timed out",
        "a+b",
        "['echo x', 'tick 0', 'tick 1', 'tick 2']",
        "read 1",
        "got after",
        "closed 1000",
    ];
    assert_eq!(
        out.lines().collect::<Vec<_>>(),
        expected,
        "{}",
        server.stderr()
    );
    wait_event(&dir, "never cancelled");
    // A reader the handler left behind hears that the socket is over.
    wait_event(&dir, "leftover got None");
    assert!(
        !server.stderr().contains("Traceback"),
        "{}",
        server.stderr()
    );
}

/// Opens a WebSocket by hand; returns the stream after the 101.
fn upgrade(server: &Server, path: &str) -> TcpStream {
    let mut s = TcpStream::connect(server.addr()).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(10)))
        .expect("timeout");
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
    )
    .expect("send");
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        s.read_exact(&mut byte).expect("101 head");
        head.push(byte[0]);
    }
    let head = String::from_utf8_lossy(&head);
    assert!(head.starts_with("HTTP/1.1 101 "), "{head}");
    assert!(
        head.contains("Sec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n"),
        "{head}"
    );
    s
}

fn masked(fin: bool, opcode: u8, payload: &[u8]) -> Vec<u8> {
    let mask = [1u8, 2, 3, 4];
    let mut out = vec![(u8::from(fin) << 7) | opcode];
    match payload.len() {
        n if n < 126 => out.push(0x80 | n as u8),
        n if n < 65536 => {
            out.push(0x80 | 126);
            out.extend_from_slice(&(n as u16).to_be_bytes());
        }
        n => {
            out.push(0x80 | 127);
            out.extend_from_slice(&(n as u64).to_be_bytes());
        }
    }
    out.extend_from_slice(&mask);
    out.extend(payload.iter().enumerate().map(|(i, b)| b ^ mask[i % 4]));
    out
}

/// Reads server frames until a close frame; returns its code.
fn close_code(s: &mut TcpStream) -> u16 {
    loop {
        let mut h = [0u8; 2];
        s.read_exact(&mut h).expect("frame head");
        let len = match h[1] & 0x7f {
            126 => {
                let mut b = [0u8; 2];
                s.read_exact(&mut b).expect("len");
                u16::from_be_bytes(b) as usize
            }
            127 => {
                let mut b = [0u8; 8];
                s.read_exact(&mut b).expect("len");
                u64::from_be_bytes(b) as usize
            }
            n => n as usize,
        };
        let mut payload = vec![0u8; len];
        s.read_exact(&mut payload).expect("payload");
        if h[0] & 0x0f == 8 {
            return u16::from_be_bytes([payload[0], payload[1]]);
        }
    }
}

#[test]
fn protocol_errors_close_with_the_rfc_codes() {
    let dir = TempDir::new("ws-errors");
    let server = Server::start(&project(&dir, "\"max_websocket_message\": 1000,"));
    let unmasked = [0x81u8, 2, b'h', b'i'];
    let cases: [(&[u8], u16); 4] = [
        (&unmasked, 1002),
        (&masked(true, 1, &[0xff, 0xfe]), 1007),
        (&masked(true, 9, &[0u8; 126]), 1002),
        (&masked(true, 2, &[0u8; 1001]), 1009),
    ];
    for (frame, code) in cases {
        let mut s = upgrade(&server, "/echo");
        s.write_all(frame).expect("frame");
        assert_eq!(close_code(&mut s), code, "{frame:?}");
        // Then the server ends the connection.
        let mut rest = Vec::new();
        let _ = s.read_to_end(&mut rest);
    }
    // The server is unharmed.
    let mut s = upgrade(&server, "/echo");
    s.write_all(&masked(true, 1, b"still here")).expect("frame");
    let mut reply = [0u8; 12];
    s.read_exact(&mut reply).expect("echo");
    assert_eq!(&reply[2..], b"still here");
}

#[test]
fn a_vanished_client_is_noticed_and_a_slow_reader_holds_the_sender() {
    let dir = TempDir::new("ws-gone");
    let server = Server::start(&project(&dir, ""));
    // Vanishes without a close frame.
    let s = upgrade(&server, "/echo");
    drop(s);
    wait_event(&dir, "echo gone 1006");

    // A client that does not read: the app's sends wait instead of buffering
    // 256 MiB in the server.
    let s = upgrade(&server, "/flood");
    std::thread::sleep(Duration::from_millis(1500));
    let rss = common::rss_kib(server.pid());
    assert!(rss < 200 * 1024, "the server buffered the flood: {rss} KiB");
    assert!(
        !events(&dir).contains("flood sent"),
        "the sender was held back"
    );
    drop(s);
    wait_event(&dir, "flood sent");
}

#[test]
fn a_client_flooding_an_app_that_does_not_read_is_held_back() {
    let dir = TempDir::new("ws-lazy");
    let server = Server::start(&project(&dir, ""));
    let before = common::rss_kib(server.pid());
    let mut s = upgrade(&server, "/lazy");
    // 1 000 messages of 64 KiB (62.5 MiB), then "last": the writes block once the
    // reactor stops reading, until the app takes messages.
    let writer = std::thread::spawn(move || {
        let chunk = masked(true, 2, &[7u8; 65536]);
        for _ in 0..1000 {
            s.write_all(&chunk).expect("write");
        }
        s.write_all(&masked(true, 1, b"last")).expect("write");
        s
    });
    std::thread::sleep(Duration::from_millis(1000));
    let during = common::rss_kib(server.pid());
    assert!(
        during < before + 16 * 1024 + 8 * 1024,
        "the server buffered the flood: {before} KiB before, {during} KiB while the app slept"
    );
    wait_event(&dir, "lazy got 1001");
    drop(writer.join().expect("writer"));
}

#[test]
fn a_thousand_sockets_while_http_is_served() {
    let dir = TempDir::new("ws-many");
    let server = Server::start(&project(&dir, ""));
    let out = client(
        &server,
        r#"
import asyncio, os, websockets
base = f"ws://127.0.0.1:{os.environ['PORT']}"
async def one(i):
    async with websockets.connect(base + "/echo", open_timeout=30) as ws:
        await ws.send(f"m{i}")
        assert await ws.recv() == f"m{i}"
        await asyncio.sleep(0.5)
        await ws.send("again")
        assert await ws.recv() == "again"
async def main():
    await asyncio.gather(*(one(i) for i in range(1000)))
    print("ok")
asyncio.run(main())
"#,
    );
    assert_eq!(out.trim(), "ok");
    server.get("/plain").assert_basics(200);
}

#[test]
fn a_silent_client_is_pinged_and_one_that_never_answers_is_closed() {
    let dir = TempDir::new("ws-ping");
    let server = Server::start(&project(&dir, "\"websocket_ping_interval\": 0.5,"));
    let mut s = upgrade(&server, "/echo");
    // A ping arrives after half a second of silence.
    let mut h = [0u8; 2];
    s.read_exact(&mut h).expect("ping");
    assert_eq!(h[0] & 0x0f, 9, "a ping frame");
    // Not answering it: closed after twice the interval.
    let started = Instant::now();
    let mut rest = Vec::new();
    let _ = s.read_to_end(&mut rest);
    assert!(started.elapsed() < Duration::from_secs(5));
    wait_event(&dir, "echo gone 1006");
}

#[test]
fn a_synchronous_websocket_handler_is_a_startup_error() {
    let dir = TempDir::new("ws-sync");
    dir.write("app.py", "class C:\n    def h(self, ws):\n        pass\n");
    let project = dir.write(
        "project.pyrs",
        r#"{ "modules": [ { "path": "/ws", "module": "app", "class": "C", "handler": "h", "websocket": true } ] }"#,
    );
    let out = common::run_pyrs(&[project.to_str().expect("path"), "-p", "0"], None);
    assert!(!out.status.success());
    assert!(out.stderr.contains("modules[0].handler"), "{}", out.stderr);
    assert!(out.stderr.contains("async def"), "{}", out.stderr);
}

const PAGE: &str = r#"<!doctype html>
<title>echo</title>
<script>
const ws = new WebSocket(`ws://${location.host}/echo`, ["chat"]);
ws.binaryType = "arraybuffer";
const got = [];
ws.onopen = () => { ws.send("from chromium"); ws.send(new Uint8Array([1, 2, 3])); };
ws.onmessage = (e) => {
  got.push(typeof e.data === "string" ? e.data : Array.from(new Uint8Array(e.data)).join(","));
  if (got.length === 2) {
    fetch(`/report?protocol=${ws.protocol}&got=${encodeURIComponent(got.join("|"))}`)
      .then(() => ws.close(1000, "done"));
  }
};
</script>
"#;

/// A handler serving the page, one taking the page's report, and the echo.
const BROWSER_APP: &str = r#"
import os
import pyrs
HERE = os.path.dirname(os.path.abspath(__file__))

class Page:
    def page(self, request):
        with open(os.path.join(HERE, "page.html"), "rb") as f:
            return pyrs.Response(f.read(), content_type="text/html; charset=utf-8")

    def report(self, request):
        with open(os.path.join(HERE, "report.txt"), "w") as f:
            f.write(f"{request.query['protocol'][0]} {request.query['got'][0]}")
        return "thanks"
"#;

fn chromium() -> PathBuf {
    [
        "/usr/bin/chromium",
        "/usr/bin/chromium-browser",
        "/usr/bin/google-chrome",
    ]
    .iter()
    .map(PathBuf::from)
    .find(|p| p.exists())
    .expect(
        "headless Chromium is needed for this test: apt-get install chromium (.ci/run installs it)",
    )
}

#[test]
fn headless_chromium_echoes_through_a_handler() {
    let dir = TempDir::new("ws-browser");
    project(&dir, "");
    dir.write("browser.py", BROWSER_APP);
    dir.write("page.html", PAGE);
    let text = std::fs::read_to_string(dir.join("project.pyrs")).expect("project");
    let text = text.replace(
        "\"modules\": [",
        "\"modules\": [\n    { \"path\": \"/\", \"module\": \"browser\", \"class\": \"Page\", \"handler\": \"page\" },\n    { \"path\": \"/report\", \"module\": \"browser\", \"class\": \"Page\", \"handler\": \"report\" },",
    );
    let project = dir.write("project.pyrs", &text);
    let server = Server::start(&project);
    let profile = dir.join("chromium-profile");
    /// Stops Chromium however the test ends.
    struct Browser(std::process::Child);
    impl Drop for Browser {
        fn drop(&mut self) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
    let browser = std::process::Command::new(chromium())
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--no-first-run",
            "--disable-dev-shm-usage",
        ])
        .arg(format!("--user-data-dir={}", profile.display()))
        .arg(format!("http://127.0.0.1:{}/", server.port))
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("start chromium");
    let _browser = Browser(browser);
    let report = dir.join("report.txt");
    let deadline = Instant::now() + Duration::from_secs(30);
    let seen = loop {
        // The handler opens the file before it writes: wait for the words.
        match std::fs::read_to_string(&report) {
            Ok(text) if !text.is_empty() => break Some(text),
            _ => {}
        }
        if Instant::now() >= deadline {
            break None;
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    assert_eq!(
        seen.as_deref(),
        Some("chat from chromium|1,2,3"),
        "{}",
        server.stderr()
    );
    // The page closes its socket once its report is answered: the browser
    // must still be running then (killed earlier, it never sends the close).
    wait_event(&dir, "echo gone 1000");
}
