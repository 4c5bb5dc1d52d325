//! HTTPS (issue 16): TLS 1.2 and 1.3 with ALPN `http/1.1`, pipelined
//! requests in order, a 10 MiB echo, a static file, mutual TLS accepted and
//! refused, plain HTTP on the TLS port (400 and close), a stalled handshake
//! closed by `header_timeout`, garbage records closing only their
//! connection, 1000 TLS connections at once, the scheme and the client
//! certificate as handlers, WSGI and ASGI see them, close_notify on a
//! graceful stop, a SIGHUP reload serving a renewed certificate, sessions
//! resumed (TLS 1.3 tickets, TLS 1.2), and the startup errors (missing file,
//! mismatched key, expired certificate). Certificates are made here with
//! rcgen (none is committed); clients are a rustls client, curl, `openssl
//! s_client` and Python's `ssl`. Real server on port 0, every
//! wait bounded, servers killed on drop.

mod common;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::{Command, Output, Stdio};
use std::sync::{Arc, Barrier};
use std::thread;
use std::time::{Duration, Instant};

use common::{run_pyrs, Launch, Project, Server, TempDir, IO_TIMEOUT};
use rcgen::{
    date_time_ymd, BasicConstraints, CertificateParams, CertifiedIssuer, DnType, IsCa, KeyPair,
};
use rustls::crypto::ring;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use rustls::{ClientConfig, ClientConnection, RootCertStore, StreamOwned};

const PY: &str = r#"
import zlib


class Api:
    def echo(self, request):
        return request

    def scheme(self, request):
        return f"{request.scheme} {request.client_cert}"

    async def ws(self, ws):
        await ws.accept()
        while (msg := await ws.receive()) is not None:
            await ws.send(f"secure {msg}")


def wsgi_app(environ, start_response):
    start_response("200 OK", [("Content-Type", "text/plain")])
    text = f"{environ['wsgi.url_scheme']} {environ.get('HTTPS')} {environ.get('SSL_CLIENT_S_DN')}"
    return [text.encode()]


def wsgi_upload(environ, start_response):
    # A large body read in parts: its adler32, length and number of reads.
    stream, check, length, reads = environ["wsgi.input"], 1, 0, 0
    while part := stream.read(1 << 20):
        check, length, reads = zlib.adler32(part, check), length + len(part), reads + 1
    start_response("200 OK", [("Content-Type", "text/plain")])
    return [f"{check} {length} {reads}".encode()]


async def asgi_upload(scope, receive, send):
    assert scope["type"] == "http", "no lifespan here"
    check, length, events, more = 1, 0, 0, True
    while more:
        message = await receive()
        part, more = message.get("body", b""), message.get("more_body", False)
        check, length, events = zlib.adler32(part, check), length + len(part), events + 1
    await send({"type": "http.response.start", "status": 200,
                "headers": [(b"content-type", b"text/plain")]})
    await send({"type": "http.response.body", "body": f"{check} {length} {events}".encode()})


async def asgi_app(scope, receive, send):
    assert scope["type"] == "http", "no lifespan here"
    tls = scope.get("extensions", {}).get("tls", {})
    text = f"{scope['scheme']} {tls.get('client_cert_name')} {tls.get('tls_version')}"
    if scope["path"].endswith("/chain"):
        text = "".join(tls["client_cert_chain"]) or "no chain"
    await send({"type": "http.response.start", "status": 200,
                "headers": [(b"content-type", b"text/plain")]})
    await send({"type": "http.response.body", "body": text.encode()})
"#;

/// A static file big enough to take many TLS records (and several rounds).
const STATIC_LEN: usize = 3 * 1024 * 1024 + 17;

/// The certificates of one test: a CA, the server's chain, a client's.
struct Pki {
    dir: TempDir,
    ca: CertifiedIssuer<'static, KeyPair>,
}

impl Pki {
    fn new() -> Pki {
        let dir = TempDir::new("tls-pki");
        let ca = ca("pyrs test CA");
        std::fs::write(dir.path.join("ca.pem"), ca.pem()).expect("write ca");
        let pki = Pki { dir, ca };
        pki.server_cert("cert.pem", "key.pem", "localhost", None);
        pki.client_cert("client", "alice");
        pki
    }

    /// Writes a server certificate for `localhost` and 127.0.0.1 (chain: leaf
    /// then CA) and its key; `not_after` in the past makes an expired one.
    fn server_cert(&self, cert: &str, key: &str, cn: &str, not_after: Option<(i32, u8, u8)>) {
        let mut params =
            CertificateParams::new(vec!["localhost".to_owned(), "127.0.0.1".to_owned()])
                .expect("params");
        params.distinguished_name.push(DnType::CommonName, cn);
        if let Some((y, m, d)) = not_after {
            params.not_before = date_time_ymd(y - 1, m, d);
            params.not_after = date_time_ymd(y, m, d);
        }
        let pair = KeyPair::generate().expect("key");
        let leaf = params.signed_by(&pair, &self.ca).expect("sign");
        let chain = format!("{}{}", leaf.pem(), self.ca.pem());
        std::fs::write(self.dir.path.join(cert), chain).expect("write cert");
        std::fs::write(self.dir.path.join(key), pair.serialize_pem()).expect("write key");
    }

    /// Writes `<name>.pem` and `<name>.key`: a client certificate for
    /// `CN=<cn>,O=Example` signed by the CA.
    fn client_cert(&self, name: &str, cn: &str) {
        let mut params = CertificateParams::new(Vec::<String>::new()).expect("params");
        params
            .distinguished_name
            .push(DnType::OrganizationName, "Example");
        params.distinguished_name.push(DnType::CommonName, cn);
        let pair = KeyPair::generate().expect("key");
        let cert = params.signed_by(&pair, &self.ca).expect("sign");
        let path = |ext: &str| self.dir.path.join(format!("{name}.{ext}"));
        std::fs::write(path("pem"), cert.pem()).expect("write");
        std::fs::write(path("key"), pair.serialize_pem()).expect("write");
    }

    fn path(&self, name: &str) -> String {
        self.dir.path.join(name).display().to_string()
    }
}

fn ca(name: &str) -> CertifiedIssuer<'static, KeyPair> {
    let mut params = CertificateParams::new(Vec::<String>::new()).expect("params");
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.distinguished_name.push(DnType::CommonName, name);
    CertifiedIssuer::self_signed(params, KeyPair::generate().expect("key")).expect("ca")
}

/// A project serving `/echo`, `/scheme`, a WSGI app under `/wsgi/*`, an ASGI
/// app under `/asgi/*` and static files under `/static/*`, over TLS with
/// `pki`'s certificate; `extra` is more keys (ending in a comma).
fn project(pki: &Pki, extra: &str) -> Project {
    let config = format!(
        r#"{{
  "tls_cert": "{cert}", "tls_key": "{key}",
  "thread_count": 2, "listen_backlog": 1024,
  {extra}
  "modules": [
    {{ "path": "/echo", "module": "main", "class": "Api", "handler": "echo" }},
    {{ "path": "/scheme", "module": "main", "class": "Api", "handler": "scheme" }},
    {{ "path": "/ws", "module": "main", "class": "Api", "handler": "ws", "websocket": true }},
    {{ "path": "/wsgi/*", "app": "main:wsgi_app", "interface": "wsgi" }},
    {{ "path": "/asgi/*", "app": "main:asgi_app", "interface": "asgi" }},
    {{ "path": "/upload/wsgi", "app": "main:wsgi_upload", "interface": "wsgi" }},
    {{ "path": "/upload/asgi", "app": "main:asgi_upload", "interface": "asgi" }}
  ],
  "static": [{{ "path": "/static/*", "dir": "public" }}]
}}"#,
        cert = pki.path("cert.pem"),
        key = pki.path("key.pem"),
    );
    let p = Project::new(&config, &[("main.py", PY), ("public/.keep", "")]);
    let data: Vec<u8> = (0..STATIC_LEN).map(|i| (i * 31 % 253) as u8).collect();
    std::fs::write(p.dir.path.join("public/big.bin"), data).expect("write static");
    p
}

fn start(project: &Project) -> Server {
    Server::start(&project.file)
}

// ------------------------------------------------------------ rustls client

type Tls = StreamOwned<ClientConnection, TcpStream>;

/// A client trusting `pki`'s CA, offering `versions`, presenting `client`
/// (`<name>.pem`/`<name>.key`) when given.
fn client_config(
    pki: &Pki,
    versions: &[&'static rustls::SupportedProtocolVersion],
    client: Option<&str>,
) -> Arc<ClientConfig> {
    let mut roots = RootCertStore::empty();
    roots
        .add(CertificateDer::from_pem_file(pki.dir.path.join("ca.pem")).expect("ca"))
        .expect("root");
    let builder = ClientConfig::builder_with_provider(Arc::new(ring::default_provider()))
        .with_protocol_versions(versions)
        .expect("versions")
        .with_root_certificates(roots);
    let mut config = match client {
        None => builder.with_no_client_auth(),
        Some(name) => {
            let certs = CertificateDer::pem_file_iter(pki.dir.path.join(format!("{name}.pem")))
                .expect("client cert")
                .collect::<Result<Vec<_>, _>>()
                .expect("certs");
            let key = PrivateKeyDer::from_pem_file(pki.dir.path.join(format!("{name}.key")))
                .expect("client key");
            builder
                .with_client_auth_cert(certs, key)
                .expect("client auth")
        }
    };
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Arc::new(config)
}

fn default_client(pki: &Pki) -> Arc<ClientConfig> {
    client_config(pki, rustls::ALL_VERSIONS, None)
}

/// Connects and completes the handshake.
fn tls_connect(addr: SocketAddr, config: &Arc<ClientConfig>) -> Tls {
    try_tls_connect(addr, config).expect("handshake")
}

fn try_tls_connect(addr: SocketAddr, config: &Arc<ClientConfig>) -> std::io::Result<Tls> {
    let sock = TcpStream::connect_timeout(&addr, IO_TIMEOUT)?;
    sock.set_read_timeout(Some(IO_TIMEOUT))?;
    sock.set_write_timeout(Some(IO_TIMEOUT))?;
    let name = ServerName::try_from("localhost").expect("name");
    let conn = ClientConnection::new(config.clone(), name).map_err(std::io::Error::other)?;
    let mut tls = StreamOwned::new(conn, sock);
    while tls.conn.is_handshaking() {
        tls.conn.complete_io(&mut tls.sock)?;
    }
    Ok(tls)
}

/// One response: status, head text, body (Content-Length framing).
struct Reply {
    status: u16,
    head: String,
    body: Vec<u8>,
}

impl Reply {
    fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

fn read_reply(r: &mut impl BufRead) -> Reply {
    let mut head = String::new();
    loop {
        let mut line = String::new();
        let n = r.read_line(&mut line).expect("read head");
        assert!(n > 0, "connection closed mid-head: {head:?}");
        head.push_str(&line);
        if line == "\r\n" {
            break;
        }
    }
    let status = head
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .expect("status");
    let len: usize = head
        .lines()
        .find_map(|l| {
            let (name, value) = l.split_once(':')?;
            name.eq_ignore_ascii_case("content-length")
                .then(|| value.trim().parse().ok())?
        })
        .unwrap_or(0);
    let mut body = vec![0; len];
    r.read_exact(&mut body).expect("read body");
    Reply { status, head, body }
}

fn get(path: &str) -> Vec<u8> {
    format!("GET {path} HTTP/1.1\r\nHost: localhost\r\n\r\n").into_bytes()
}

fn post(path: &str, body: &[u8]) -> Vec<u8> {
    let mut req = format!(
        "POST {path} HTTP/1.1\r\nHost: localhost\r\nContent-Length: {}\r\n\r\n",
        body.len()
    )
    .into_bytes();
    req.extend_from_slice(body);
    req
}

/// One request on a fresh TLS connection.
fn tls_request(addr: SocketAddr, config: &Arc<ClientConfig>, raw: &[u8]) -> Reply {
    let mut tls = BufReader::new(tls_connect(addr, config));
    tls.get_mut().write_all(raw).expect("send");
    read_reply(&mut tls)
}

// ------------------------------------------------------------- tools

fn curl(args: &[&str]) -> Output {
    Command::new("curl")
        .args(["-sS", "--max-time", "20", "--http1.1"])
        .args(args)
        .stdin(Stdio::null())
        .output()
        .expect("run curl")
}

fn s_client(addr: SocketAddr, args: &[&str]) -> String {
    let out = Command::new("openssl")
        .arg("s_client")
        .args(["-connect", &addr.to_string(), "-servername", "localhost"])
        .args(args)
        .stdin(Stdio::null())
        .output()
        .expect("run openssl");
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// Reads from `sock` until EOF (or a reset); panics if that takes past `bound`.
fn expect_closed_within(sock: &mut TcpStream, bound: Duration) -> Vec<u8> {
    let start = Instant::now();
    sock.set_read_timeout(Some(bound)).expect("timeout");
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        match sock.read(&mut buf) {
            Ok(0) => return got,
            Ok(n) => got.extend_from_slice(&buf[..n]),
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => return got,
            Err(e) => panic!("not closed after {:?}: {e}", start.elapsed()),
        }
        assert!(start.elapsed() < bound, "still open after {bound:?}");
    }
}

// ------------------------------------------------------------- tests

#[test]
fn tls_12_and_13_negotiate_http11_over_alpn() {
    let pki = Pki::new();
    let p = project(&pki, "");
    let server = start(&p);
    let addr = server.addr();
    for (version, wire) in [
        (&rustls::version::TLS12, rustls::ProtocolVersion::TLSv1_2),
        (&rustls::version::TLS13, rustls::ProtocolVersion::TLSv1_3),
    ] {
        let config = client_config(&pki, &[version], None);
        let mut tls = BufReader::new(tls_connect(addr, &config));
        assert_eq!(tls.get_ref().conn.protocol_version(), Some(wire));
        assert_eq!(tls.get_ref().conn.alpn_protocol(), Some(&b"http/1.1"[..]));
        tls.get_mut()
            .write_all(&post("/echo", b"hi"))
            .expect("send");
        let reply = read_reply(&mut tls);
        assert_eq!((reply.status, reply.text().as_str()), (200, "hi"));
    }
    let url = format!("https://127.0.0.1:{}/echo", server.port);
    let ca = pki.path("ca.pem");
    for flags in [&["--tlsv1.2", "--tls-max", "1.2"][..], &["--tlsv1.3"][..]] {
        let mut args = vec!["--cacert", &ca, "-d", "curl", &url];
        args.extend_from_slice(flags);
        let out = curl(&args);
        assert!(out.status.success(), "curl {flags:?}: {out:?}");
        assert_eq!(out.stdout, b"curl");
    }
    let text = s_client(addr, &["-tls1_2", "-alpn", "http/1.1", "-CAfile", &ca]);
    assert!(text.contains("Protocol  : TLSv1.2"), "{text}");
    assert!(text.contains("ALPN protocol: http/1.1"), "{text}");
    assert!(text.contains("Verify return code: 0 (ok)"), "{text}");
    // The chain as configured: the leaf, then the CA.
    assert!(text.contains("0 s:CN = localhost"), "{text}");
    assert!(text.contains("1 s:CN = pyrs test CA"), "{text}");
    let text = s_client(addr, &["-tls1_3", "-CAfile", &ca]);
    assert!(text.contains("New, TLSv1.3"), "{text}");
}

#[test]
fn tls_min_version_13_refuses_12() {
    let pki = Pki::new();
    let p = project(&pki, r#""tls_min_version": "1.3","#);
    let server = start(&p);
    let only_12 = client_config(&pki, &[&rustls::version::TLS12], None);
    assert!(try_tls_connect(server.addr(), &only_12).is_err());
    let reply = tls_request(server.addr(), &default_client(&pki), &get("/scheme"));
    assert_eq!(reply.text(), "https None");
}

#[test]
fn pipelined_requests_over_tls_answer_in_order() {
    let pki = Pki::new();
    let p = project(&pki, "");
    let server = start(&p);
    let mut tls = BufReader::new(tls_connect(server.addr(), &default_client(&pki)));
    // Python, reactor 404s and WSGI answers, all sent in one write.
    let mut batch = Vec::new();
    for i in 0..30 {
        match i % 3 {
            0 => batch.extend(post("/echo", format!("body-{i}").as_bytes())),
            1 => batch.extend(get(&format!("/missing-{i}"))),
            _ => batch.extend(get("/wsgi/x")),
        }
    }
    tls.get_mut().write_all(&batch).expect("send");
    for i in 0..30 {
        let reply = read_reply(&mut tls);
        match i % 3 {
            0 => assert_eq!(reply.text(), format!("body-{i}")),
            1 => assert_eq!(reply.status, 404, "{}", reply.head),
            _ => assert_eq!(reply.text(), "https on None"),
        }
    }
}

#[test]
fn a_10_mib_post_is_echoed_and_a_static_file_sent_over_tls() {
    let pki = Pki::new();
    let p = project(&pki, "");
    let server = start(&p);
    let body: Vec<u8> = (0..10 * 1024 * 1024).map(|i| (i % 251) as u8).collect();
    let mut tls = BufReader::new(tls_connect(server.addr(), &default_client(&pki)));
    tls.get_mut()
        .write_all(&post("/echo", &body))
        .expect("send");
    let reply = read_reply(&mut tls);
    assert_eq!(reply.status, 200);
    assert!(reply.body == body, "the echo matches");
    // A static file on the same connection: read and encrypted, not sendfile.
    tls.get_mut()
        .write_all(&get("/static/big.bin"))
        .expect("send");
    let reply = read_reply(&mut tls);
    assert_eq!(reply.status, 200, "{}", reply.head);
    let want = std::fs::read(p.dir.path.join("public/big.bin")).expect("read");
    assert!(reply.body == want, "the file's bytes");
    // curl agrees, and a range works too.
    let url = format!("https://127.0.0.1:{}/static/big.bin", server.port);
    let ca = pki.path("ca.pem");
    let out = curl(&["--cacert", &ca, &url]);
    assert!(out.status.success() && out.stdout == want, "curl static");
    let out = curl(&["--cacert", &ca, "-r", "100-199", &url]);
    assert_eq!(out.stdout, &want[100..200]);
}

#[test]
fn mutual_tls_accepts_signed_clients_and_refuses_others() {
    let pki = Pki::new();
    let other = ca("someone else");
    let mut params = CertificateParams::new(Vec::<String>::new()).expect("params");
    params
        .distinguished_name
        .push(DnType::CommonName, "mallory");
    let pair = KeyPair::generate().expect("key");
    let cert = params.signed_by(&pair, &other).expect("sign");
    std::fs::write(pki.dir.path.join("stranger.pem"), cert.pem()).expect("write");
    std::fs::write(pki.dir.path.join("stranger.key"), pair.serialize_pem()).expect("write");
    let extra = format!(r#""tls_client_ca": "{}","#, pki.path("ca.pem"));
    let p = project(&pki, &extra);
    let server = start(&p);
    let addr = server.addr();

    // The subject as OpenSSL writes it in RFC 2253 (= 4514) form.
    let subject = Command::new("openssl")
        .args(["x509", "-noout", "-subject", "-nameopt", "RFC2253", "-in"])
        .arg(pki.dir.path.join("client.pem"))
        .output()
        .expect("openssl x509");
    let subject = String::from_utf8_lossy(&subject.stdout);
    let subject = subject.trim().trim_start_matches("subject=").to_owned();
    assert!(
        subject.contains("CN=alice") && subject.contains("O=Example"),
        "{subject}"
    );
    let alice = client_config(&pki, rustls::ALL_VERSIONS, Some("client"));
    let reply = tls_request(addr, &alice, &get("/scheme"));
    assert_eq!(reply.text(), format!("https {subject}"));
    let reply = tls_request(addr, &alice, &get("/wsgi/"));
    assert_eq!(reply.text(), format!("https on {subject}"));
    let reply = tls_request(addr, &alice, &get("/asgi/"));
    assert_eq!(reply.text(), format!("https {subject} 772"));
    // client_cert_chain: the PEM the client presented.
    let reply = tls_request(addr, &alice, &get("/asgi/chain"));
    let presented = std::fs::read_to_string(pki.dir.path.join("client.pem")).expect("pem");
    let squash = |s: &str| s.split_whitespace().collect::<String>();
    assert_eq!(squash(&reply.text()), squash(&presented));
    let url = format!("https://127.0.0.1:{}/scheme", server.port);
    let (ca, cert, key) = (
        pki.path("ca.pem"),
        pki.path("client.pem"),
        pki.path("client.key"),
    );
    let out = curl(&["--cacert", &ca, "--cert", &cert, "--key", &key, &url]);
    assert!(out.status.success(), "{out:?}");
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        format!("https {subject}")
    );

    // No certificate, or one from another CA: refused in the handshake (TLS 1.3
    // reports it on the first read).
    let out = curl(&["--cacert", &ca, &url]);
    assert!(!out.status.success(), "no certificate: {out:?}");
    let (s_cert, s_key) = (pki.path("stranger.pem"), pki.path("stranger.key"));
    let out = curl(&["--cacert", &ca, "--cert", &s_cert, "--key", &s_key, &url]);
    assert!(!out.status.success(), "a stranger's certificate: {out:?}");
    let stranger = client_config(&pki, rustls::ALL_VERSIONS, Some("stranger"));
    let refused = try_tls_connect(addr, &stranger).and_then(|mut tls| {
        tls.write_all(&get("/scheme"))?;
        let mut buf = [0u8; 64];
        tls.read(&mut buf)
    });
    assert!(refused.is_err(), "{refused:?}");
    // The server goes on.
    assert_eq!(tls_request(addr, &alice, &get("/scheme")).status, 200);
    drop(server);

    // Optional: a client without a certificate comes in as anonymous.
    let extra = format!(
        r#""tls_client_ca": "{}", "tls_client_auth": "optional","#,
        pki.path("ca.pem")
    );
    let p = project(&pki, &extra);
    let server = start(&p);
    let reply = tls_request(server.addr(), &default_client(&pki), &get("/scheme"));
    assert_eq!(reply.text(), "https None");
    let reply = tls_request(server.addr(), &default_client(&pki), &get("/asgi/chain"));
    assert_eq!(reply.text(), "no chain");
    let reply = tls_request(server.addr(), &alice, &get("/scheme"));
    assert_eq!(reply.text(), format!("https {subject}"));
}

#[test]
fn handlers_wsgi_and_asgi_see_https() {
    let pki = Pki::new();
    let p = project(&pki, "");
    let server = start(&p);
    let config = client_config(&pki, &[&rustls::version::TLS12], None);
    let addr = server.addr();
    assert_eq!(
        tls_request(addr, &config, &get("/scheme")).text(),
        "https None"
    );
    assert_eq!(
        tls_request(addr, &config, &get("/wsgi/")).text(),
        "https on None"
    );
    // 771 = 0x0303, TLS 1.2.
    assert_eq!(
        tls_request(addr, &config, &get("/asgi/")).text(),
        "https None 771"
    );
}

/// zlib's adler32 of `data` (what the upload apps answer with).
fn adler32(data: &[u8]) -> u32 {
    let (mut a, mut b) = (1u32, 0u32);
    for chunk in data.chunks(5552) {
        for &byte in chunk {
            a += u32::from(byte);
            b += a;
        }
        a %= 65521;
        b %= 65521;
    }
    (b << 16) | a
}

#[test]
fn large_uploads_over_tls_stream_to_wsgi_and_asgi_apps() {
    // Past 1 MiB a body reaches the app as it arrives, also when it comes
    // in TLS records: with a Content-Length and chunked, to both interfaces.
    let pki = Pki::new();
    let p = project(&pki, r#""max_body_size": 67108864,"#);
    let server = start(&p);
    let config = default_client(&pki);
    let size = 12 * (1 << 20) + 5;
    let body: Vec<u8> = (0..size).map(|i| (i * 7 % 251) as u8).collect();
    let want = format!("{} {size}", adler32(&body));
    for path in ["/upload/wsgi", "/upload/asgi"] {
        for chunked in [false, true] {
            let mut tls = BufReader::new(tls_connect(server.addr(), &config));
            let framing = match chunked {
                true => "Transfer-Encoding: chunked".to_string(),
                false => format!("Content-Length: {size}"),
            };
            let head = format!("POST {path} HTTP/1.1\r\nHost: t\r\n{framing}\r\n\r\n");
            tls.get_mut().write_all(head.as_bytes()).expect("head");
            for part in body.chunks(256 * 1024) {
                if chunked {
                    let line = format!("{:x}\r\n", part.len());
                    tls.get_mut()
                        .write_all(line.as_bytes())
                        .expect("chunk size");
                    tls.get_mut().write_all(part).expect("chunk");
                    tls.get_mut().write_all(b"\r\n").expect("chunk end");
                } else {
                    tls.get_mut().write_all(part).expect("body");
                }
            }
            if chunked {
                tls.get_mut().write_all(b"0\r\n\r\n").expect("last chunk");
            }
            let reply = read_reply(&mut tls);
            let text = reply.text();
            assert!(
                text.starts_with(&want),
                "{path} chunked {chunked}: {text} (want {want})"
            );
            // ASGI: more than one http.request event, so the body streamed
            // (a buffered one is one event); WSGI: read in parts.
            let parts: usize = text
                .rsplit(' ')
                .next()
                .and_then(|n| n.parse().ok())
                .expect("parts");
            assert!(parts > 2, "{path} chunked {chunked}: {text}");
        }
    }
}

#[test]
fn plain_http_on_the_tls_port_gets_400_and_close() {
    let pki = Pki::new();
    let p = project(&pki, "");
    let server = start(&p);
    let mut sock = TcpStream::connect(server.addr()).expect("connect");
    sock.write_all(b"GET /echo HTTP/1.1\r\nHost: x\r\n\r\n")
        .expect("send");
    let got = expect_closed_within(&mut sock, Duration::from_secs(5));
    let text = String::from_utf8_lossy(&got);
    assert!(text.starts_with("HTTP/1.1 400 Bad Request\r\n"), "{text}");
    assert!(text.contains("Connection: close"), "{text}");
    assert!(text.ends_with("this port speaks HTTPS\n"), "{text}");
    let out = curl(&[&format!("http://127.0.0.1:{}/echo", server.port)]);
    assert_eq!(out.stdout, b"this port speaks HTTPS\n", "{out:?}");
}

#[test]
fn a_stalled_handshake_is_closed_by_header_timeout() {
    let pki = Pki::new();
    let p = project(&pki, r#""header_timeout": 1, "keepalive_timeout": 30,"#);
    let server = start(&p);
    // Silent after connecting, and stalled halfway through a ClientHello.
    let mut silent = TcpStream::connect(server.addr()).expect("connect");
    let mut partial = TcpStream::connect(server.addr()).expect("connect");
    partial
        .write_all(&[0x16, 0x03, 0x01, 0x02, 0x00, 0x01, 0x00])
        .expect("send");
    let start = Instant::now();
    expect_closed_within(&mut silent, Duration::from_secs(4));
    expect_closed_within(&mut partial, Duration::from_secs(4));
    assert!(
        start.elapsed() >= Duration::from_millis(700),
        "not before the timeout"
    );
    // A finished handshake then idles under keepalive_timeout instead.
    let mut tls = BufReader::new(tls_connect(server.addr(), &default_client(&pki)));
    thread::sleep(Duration::from_millis(1600));
    tls.get_mut().write_all(&get("/scheme")).expect("send");
    assert_eq!(read_reply(&mut tls).text(), "https None");
}

#[test]
fn garbage_records_close_only_their_connection() {
    let pki = Pki::new();
    let p = project(&pki, "");
    let mut server = start(&p);
    let config = default_client(&pki);
    let mut good = BufReader::new(tls_connect(server.addr(), &config));
    good.get_mut().write_all(&get("/scheme")).expect("send");
    assert_eq!(read_reply(&mut good).status, 200);

    // A handshake record holding a ClientHello of nonsense.
    let mut raw = TcpStream::connect(server.addr()).expect("connect");
    raw.write_all(&[
        0x16, 0x03, 0x01, 0x00, 0x08, 1, 0, 0, 4, 0xDE, 0xAD, 0xBE, 0xEF,
    ])
    .expect("send");
    let alert = expect_closed_within(&mut raw, Duration::from_secs(5));
    assert_eq!(alert.first(), Some(&0x15), "an alert record: {alert:?}");

    // Garbage application data after a good handshake: bad_record_mac.
    let mut broken = tls_connect(server.addr(), &config);
    let mut record = vec![0x17, 0x03, 0x03, 0x00, 0x20];
    record.extend_from_slice(&[0xAB; 32]);
    broken.sock.write_all(&record).expect("send garbage");
    let mut buf = [0u8; 16];
    assert!(broken.read(&mut buf).is_err(), "the server says why");

    // The first connection and new ones carry on.
    good.get_mut()
        .write_all(&post("/echo", b"still here"))
        .expect("send");
    assert_eq!(read_reply(&mut good).text(), "still here");
    assert_eq!(
        tls_request(server.addr(), &config, &get("/scheme")).status,
        200
    );
    server.assert_running();
}

#[test]
fn a_thousand_tls_connections_at_once() {
    const THREADS: usize = 8;
    const PER_THREAD: usize = 125;
    let pki = Pki::new();
    // Idle connections wait for every handshake: keep them past the default 5 s.
    let p = project(&pki, r#""keepalive_timeout": 120,"#);
    let server = start(&p);
    let addr = server.addr();
    let config = default_client(&pki);
    let barrier = Arc::new(Barrier::new(THREADS));
    let started = Instant::now();
    let workers: Vec<_> = (0..THREADS)
        .map(|t| {
            let config = config.clone();
            let barrier = barrier.clone();
            thread::spawn(move || {
                let mut conns: Vec<_> = (0..PER_THREAD)
                    .map(|_| BufReader::new(tls_connect(addr, &config)))
                    .collect();
                // Every connection is open before any of them asks.
                barrier.wait();
                for (i, c) in conns.iter_mut().enumerate() {
                    let body = format!("{t}-{i}");
                    c.get_mut()
                        .write_all(&post("/echo", body.as_bytes()))
                        .expect("send");
                }
                for (i, c) in conns.iter_mut().enumerate() {
                    assert_eq!(read_reply(c).text(), format!("{t}-{i}"));
                }
                conns.len()
            })
        })
        .collect();
    let total: usize = workers
        .into_iter()
        .map(|w| w.join().expect("client thread"))
        .sum();
    assert_eq!(total, THREADS * PER_THREAD);
    eprintln!(
        "{total} TLS connections, handshakes and echoes in {:?}",
        started.elapsed()
    );
}

#[test]
fn a_graceful_stop_sends_close_notify() {
    let pki = Pki::new();
    let p = project(&pki, "");
    let mut server = start(&p);
    let mut tls = tls_connect(server.addr(), &default_client(&pki));
    tls.write_all(&get("/scheme")).expect("send");
    let mut reader = BufReader::new(tls);
    assert_eq!(read_reply(&mut reader).status, 200);
    server.signal(libc::SIGTERM);
    // rustls reads a close_notify as a clean end (Ok(0)); a bare FIN would be
    // an UnexpectedEof error.
    let mut rest = Vec::new();
    let end = reader.read_to_end(&mut rest);
    assert!(matches!(end, Ok(0)), "{end:?}");
    assert!(server.wait_exit(Duration::from_secs(10)).is_some());
}

#[test]
fn a_sighup_reload_serves_a_renewed_certificate() {
    let pki = Pki::new();
    let p = project(&pki, r#""workers": 2,"#);
    let server = Server::start_with(&p.file, Launch::default());
    let config = default_client(&pki);
    let leaf = |tls: &Tls| {
        tls.conn.peer_certificates().expect("certificates")[0]
            .as_ref()
            .to_vec()
    };
    let old = leaf(&tls_connect(server.addr(), &config));
    // Renewed in place (as certbot does), then SIGHUP.
    pki.server_cert("cert.pem", "key.pem", "localhost", None);
    let renewed = CertificateDer::pem_file_iter(pki.dir.path.join("cert.pem"))
        .expect("read")
        .next()
        .expect("one")
        .expect("pem")
        .as_ref()
        .to_vec();
    assert_ne!(old, renewed);
    server.signal(libc::SIGHUP);
    assert!(
        server.wait_stderr("pyrs: reloaded in", Duration::from_secs(10)),
        "{}",
        server.stderr()
    );
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        if leaf(&tls_connect(server.addr(), &config)) == renewed {
            break;
        }
        assert!(Instant::now() < deadline, "still the old certificate");
        thread::sleep(Duration::from_millis(50));
    }
    // A reload with a broken key changes nothing.
    std::fs::write(pki.dir.path.join("key.pem"), "not a key").expect("write");
    server.signal(libc::SIGHUP);
    assert!(
        server.wait_stderr("the running workers keep serving", Duration::from_secs(10)),
        "{}",
        server.stderr()
    );
    assert!(server.stderr().contains("tls_key"), "{}", server.stderr());
    assert_eq!(leaf(&tls_connect(server.addr(), &config)), renewed);
}

#[test]
fn unusable_tls_files_are_startup_errors_naming_the_key() {
    let pki = Pki::new();
    pki.server_cert(
        "expired.pem",
        "expired.key",
        "localhost",
        Some((2020, 1, 1)),
    );
    pki.server_cert("other.pem", "other.key", "localhost", None);
    let dir = &pki.dir.path;
    let fail = |config: &str, args: &[&str], env: &[(&str, &str)]| -> String {
        let file = dir.join("project.pyrs");
        std::fs::write(&file, config).expect("write");
        std::fs::write(dir.join("main.py"), PY).expect("write");
        let mut cmd = Command::new(common::pyrs_bin());
        cmd.arg(&file)
            .args(["-a", "127.0.0.1", "-p", "0"])
            .args(args);
        for (k, v) in env {
            cmd.env(k, v);
        }
        let done = common::run_to_exit(cmd);
        assert!(!done.status.success(), "started: {}", done.stdout);
        done.stderr
    };
    let config = |cert: &str, key: &str| {
        format!(
            "{{\n  \"tls_cert\": \"{cert}\",\n  \"tls_key\": \"{key}\",\n  \
             \"modules\": [{{\"path\": \"/\", \"module\": \"main\", \"class\": \"Api\", \"handler\": \"echo\"}}]\n}}\n"
        )
    };
    // Relative to the project file's folder.
    let err = fail(&config("missing.pem", "key.pem"), &[], &[]);
    assert!(
        err.contains("project.pyrs:2:15: key \"tls_cert\": cannot read")
            && err.contains("missing.pem"),
        "{err}"
    );
    let err = fail(&config("cert.pem", "other.key"), &[], &[]);
    assert!(
        err.contains("project.pyrs:3:14: key \"tls_key\": the key in")
            && err.contains("does not match the certificate"),
        "{err}"
    );
    let err = fail(&config("expired.pem", "expired.key"), &[], &[]);
    assert!(
        err.contains("project.pyrs:2:15: key \"tls_cert\": the certificate in")
            && err.contains("expired on"),
        "{err}"
    );
    let err = fail(&config("cert.pem", "cert.pem"), &[], &[]);
    assert!(err.contains("no private key"), "{err}");
    // From the environment and from a flag, the error names them.
    let err = fail(
        &config("cert.pem", "key.pem"),
        &[],
        &[("PYRS_TLS_CERT", "nowhere.pem")],
    );
    assert!(
        err.contains("environment variable PYRS_TLS_CERT: cannot read"),
        "{err}"
    );
    let err = fail(
        &config("cert.pem", "key.pem"),
        &["--tls-key", "/nonexistent/key.pem"],
        &[],
    );
    assert!(err.contains("--tls-key: cannot read"), "{err}");
    let ok = run_pyrs(
        &[
            "--print-config",
            &dir.join("project.pyrs").display().to_string(),
        ],
        None,
    );
    assert!(ok.stdout.contains("tls_key"), "{}", ok.stdout);
}

/// Python's `ssl` (OpenSSL) as the client: http.client over TLS, and a second
/// connection resuming the first one's session, with TLS 1.3 (tickets) and
/// TLS 1.2 (session IDs or tickets).
const PY_CLIENT: &str = r#"
import http.client, socket, ssl, sys

port, cafile = int(sys.argv[1]), sys.argv[2]
conn = http.client.HTTPSConnection("127.0.0.1", port, context=ssl.create_default_context(cafile=cafile))
conn.request("GET", "/scheme")
reply = conn.getresponse()
print("http.client", reply.status, reply.read().decode())
conn.close()

for version in (ssl.TLSVersion.TLSv1_3, ssl.TLSVersion.TLSv1_2):
    ctx = ssl.create_default_context(cafile=cafile)
    ctx.minimum_version = ctx.maximum_version = version
    def fetch(session=None):
        raw = socket.create_connection(("127.0.0.1", port))
        s = ctx.wrap_socket(raw, server_hostname="localhost", session=session)
        s.sendall(b"GET /scheme HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
        data = b""
        while True:
            chunk = s.recv(65536)
            if not chunk:
                break
            data += chunk
        out = (s.session, s.session_reused, s.version(), data)
        s.close()
        return out
    session, _, name, _ = fetch()
    _, reused, _, data = fetch(session)
    print(name, "reused" if reused else "full", data.split(b"\r\n\r\n", 1)[1].decode())
"#;

#[test]
fn python_ssl_clients_resume_their_sessions() {
    let pki = Pki::new();
    let p = project(&pki, "");
    let server = start(&p);
    let script = pki.dir.path.join("client.py");
    std::fs::write(&script, PY_CLIENT).expect("write script");
    let mut cmd = Command::new("python3");
    cmd.arg(&script)
        .arg(server.port.to_string())
        .arg(pki.path("ca.pem"));
    let done = common::run_to_exit(cmd);
    assert!(done.status.success(), "{}{}", done.stdout, done.stderr);
    assert_eq!(
        done.stdout,
        "http.client 200 https None\nTLSv1.3 reused https None\nTLSv1.2 reused https None\n"
    );
}

#[test]
fn websockets_work_over_tls() {
    let pki = Pki::new();
    let p = project(&pki, "");
    let server = start(&p);
    let venv = common::framework_venv("websockets-15.0.1", &["websockets==15.0.1"]);
    let script = r#"
import asyncio, ssl, sys, websockets
async def main():
    ctx = ssl.create_default_context(cafile=sys.argv[2])
    async with websockets.connect(f"wss://localhost:{sys.argv[1]}/ws", ssl=ctx) as ws:
        for text in ("hello", "x" * 100000):
            await ws.send(text)
            reply = await ws.recv()
            print(reply[:12], len(reply))
asyncio.run(main())
"#;
    let mut cmd = Command::new(venv.join("bin/python"));
    cmd.args(["-c", script])
        .arg(server.port.to_string())
        .arg(pki.path("ca.pem"));
    let done = common::run_to_exit(cmd);
    assert!(
        done.status.success(),
        "{}{}\n{}",
        done.stdout,
        done.stderr,
        server.stderr()
    );
    assert_eq!(done.stdout, "secure hello 12\nsecure xxxxx 100007\n");
}

#[test]
fn plain_http_handlers_see_http() {
    let config = r#"{ "modules": [
        { "path": "/scheme", "module": "main", "class": "Api", "handler": "scheme" },
        { "path": "/asgi/*", "app": "main:asgi_app", "interface": "asgi" } ] }"#;
    let p = Project::new(config, &[("main.py", PY)]);
    let server = start(&p);
    assert_eq!(server.get("/scheme").text(), "http None");
    assert_eq!(server.get("/asgi/").text(), "http None None");
}
