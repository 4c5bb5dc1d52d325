//! HTTPS: the rustls setup and each TLS connection's state.
//!
//! [`Acceptor::from_config`] runs on the main thread at startup (in
//! `server::run`): it reads the `tls_cert`, `tls_key` and `tls_client_ca`
//! files, checks that the key matches the certificate and that the
//! certificate is within its validity period, and builds one rustls
//! `ServerConfig` (ring provider, ALPN `http/1.1`, session tickets) shared by
//! every reactor. A SIGHUP reload forks workers that call `server::run` again,
//! so renewed certificate files are picked up by a reload.
//!
//! [`TlsConn`] is one connection's rustls `ServerConnection`, owned and driven
//! by its reactor thread. rustls is sans-I/O, so it fits the reactor's loop
//! as it is: [`TlsConn::read`] takes records from the socket and puts the
//! plaintext into the connection's read buffer, where the framer finds it as
//! it would a plain socket's bytes; [`TlsConn::flush`] encrypts the queued
//! output (every pipelined response of a round) and writes the records with
//! one `writev`. Files are read and encrypted here: `sendfile` is for plain
//! connections only. A first byte that is not a TLS handshake record is
//! plain HTTP: it gets a plain-text 400 and the connection closes. A bad
//! record closes its connection and nothing else.

use std::io::{self, IoSlice, Read, Write};
use std::os::fd::AsRawFd;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use rustls::crypto::ring;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::{ServerSessionMemoryCache, WebPkiClientVerifier};
use rustls::{
    Error as RustlsError, InconsistentKeys, RootCertStore, ServerConfig, ServerConnection,
};
use thiserror::Error;
use x509_parser::prelude::{FromDer, X509Certificate, X509Name};

use crate::buffers::{BufPool, ReadOutcome, BUF_SIZE};
use crate::config::{ClientAuth, Config, ConfigError, TlsVersion};
use crate::conn::ConnState;
use crate::listener::Stream;
use crate::output::MAX_SLICES;

/// The first byte of a TLS handshake record (ClientHello). Anything else on
/// a fresh connection is not TLS.
const HANDSHAKE_RECORD: u8 = 0x16;
/// The answer to plain HTTP on the TLS port, written unencrypted.
const PLAIN_HTTP_ANSWER: &[u8] = b"HTTP/1.1 400 Bad Request\r\n\
Content-Type: text/plain; charset=utf-8\r\n\
Content-Length: 23\r\n\
Connection: close\r\n\r\n\
this port speaks HTTPS\n";
/// TLS 1.2 sessions remembered for resumption by session ID (TLS 1.3 uses
/// tickets, which need no server memory).
const SESSION_CACHE: usize = 4096;
/// Encrypted bytes rustls holds for a connection before it takes no more
/// plaintext: bounds a slow reader's memory past `max_write_buffer`.
const TLS_BUFFER_LIMIT: usize = 64 * 1024;
/// Plaintext bytes of a file read per step (a few TLS records).
const FILE_CHUNK: usize = 32 * 1024;
/// Most plaintext taken from rustls per read call (its records hold 16 KiB).
const PLAIN_READ: usize = 64 * 1024;
/// The read buffer grows when it has less than this free.
const READ_MIN_SPARE: usize = 2 * 1024;

/// What a Python handler learns about a TLS connection (`Job::tls`); one per
/// connection, shared by its requests.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsInfo {
    /// The client certificate's subject as an RFC 4514 string
    /// (`CN=alice,O=Example`), when the client presented one.
    pub client_cert: Option<String>,
    /// The client's certificate chain as PEM, its own certificate first (the
    /// ASGI TLS extension's `client_cert_chain`); empty without one.
    pub client_chain: Vec<String>,
    /// The negotiated version as on the wire (0x0303 = TLS 1.2, 0x0304 = 1.3).
    pub version: u16,
    /// The negotiated cipher suite's IANA number.
    pub cipher_suite: u16,
}

/// The TLS setup every reactor of a process shares.
#[derive(Debug)]
pub struct Acceptor {
    config: Arc<ServerConfig>,
}

impl Acceptor {
    /// The setup the `tls_*` keys describe, or `None` when `tls_cert` is not
    /// set. A file that cannot be read or used is an error naming its key.
    pub fn from_config(config: &Config) -> Result<Option<Arc<Acceptor>>, ConfigError> {
        let (Some(cert_path), Some(key_path)) = (&config.tls_cert, &config.tls_key) else {
            return Ok(None);
        };
        let fail = |key: &str, message: String| config.key_error(key, key, None, message);
        let provider = Arc::new(ring::default_provider());
        let certs = read_certs(cert_path).map_err(|m| fail("tls_cert", m))?;
        check_validity(cert_path, &certs[0], SystemTime::now()).map_err(|m| fail("tls_cert", m))?;
        let key = PrivateKeyDer::from_pem_file(key_path).map_err(|e| {
            let message = match e {
                rustls::pki_types::pem::Error::NoItemsFound => format!(
                    "no private key (PKCS#8, RSA or EC) in {}",
                    key_path.display()
                ),
                e => format!("cannot read {}: {e}", key_path.display()),
            };
            fail("tls_key", message)
        })?;
        let versions: &[&rustls::SupportedProtocolVersion] = match config.tls_min_version {
            TlsVersion::V1_2 => &[&rustls::version::TLS13, &rustls::version::TLS12],
            TlsVersion::V1_3 => &[&rustls::version::TLS13],
        };
        let builder = ServerConfig::builder_with_provider(provider.clone())
            .with_protocol_versions(versions)
            .map_err(|e| fail("tls_min_version", e.to_string()))?;
        let builder = match &config.tls_client_ca {
            None => builder.with_no_client_auth(),
            Some(ca_path) => {
                let mut roots = RootCertStore::empty();
                for cert in read_certs(ca_path).map_err(|m| fail("tls_client_ca", m))? {
                    roots.add(cert).map_err(|e| {
                        let message =
                            format!("cannot use a certificate of {}: {e}", ca_path.display());
                        fail("tls_client_ca", message)
                    })?;
                }
                let verifier =
                    WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider.clone());
                let verifier = match config.tls_client_auth {
                    ClientAuth::Required => verifier,
                    ClientAuth::Optional => verifier.allow_unauthenticated(),
                };
                let verifier = verifier
                    .build()
                    .map_err(|e| fail("tls_client_ca", e.to_string()))?;
                builder.with_client_cert_verifier(verifier)
            }
        };
        let mut server = builder.with_single_cert(certs, key).map_err(|e| {
            let message = match e {
                RustlsError::InconsistentKeys(InconsistentKeys::KeyMismatch) => format!(
                    "the key in {} does not match the certificate in {}",
                    key_path.display(),
                    cert_path.display()
                ),
                e => format!("cannot use the key in {}: {e}", key_path.display()),
            };
            fail("tls_key", message)
        })?;
        server.alpn_protocols = vec![b"http/1.1".to_vec()];
        server.ticketer = ring::Ticketer::new().map_err(|e| fail("tls_cert", e.to_string()))?;
        server.session_storage = ServerSessionMemoryCache::new(SESSION_CACHE);
        Ok(Some(Arc::new(Acceptor {
            config: Arc::new(server),
        })))
    }

    /// The TLS state of a connection accepted at `now`.
    pub fn accept(&self, now: Instant) -> Result<Box<TlsConn>, RustlsError> {
        let mut conn = ServerConnection::new(self.config.clone())?;
        conn.set_buffer_limit(Some(TLS_BUFFER_LIMIT));
        Ok(Box::new(TlsConn {
            conn,
            started: now,
            sniffed: false,
            info_given: false,
            close_sent: false,
        }))
    }
}

/// Every certificate in the PEM file at `path`; at least one.
fn read_certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, String> {
    let cannot = |e: rustls::pki_types::pem::Error| format!("cannot read {}: {e}", path.display());
    let certs = CertificateDer::pem_file_iter(path)
        .map_err(cannot)?
        .collect::<Result<Vec<_>, _>>()
        .map_err(cannot)?;
    if certs.is_empty() {
        return Err(format!("no PEM certificate in {}", path.display()));
    }
    Ok(certs)
}

/// The leaf certificate must be valid at `now`: an expired one is a startup
/// error, not a handshake every client refuses.
fn check_validity(path: &Path, der: &CertificateDer<'_>, now: SystemTime) -> Result<(), String> {
    let (_, cert) = X509Certificate::from_der(der)
        .map_err(|e| format!("cannot parse the certificate in {}: {e}", path.display()))?;
    let now = now
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX));
    let validity = cert.validity();
    if validity.not_after.timestamp() < now {
        return Err(format!(
            "the certificate in {} expired on {}",
            path.display(),
            validity.not_after
        ));
    }
    if validity.not_before.timestamp() > now {
        return Err(format!(
            "the certificate in {} is not valid before {}",
            path.display(),
            validity.not_before
        ));
    }
    Ok(())
}

/// Why a TLS connection is being closed (the error inside an `io::Error`).
#[derive(Debug, Error)]
pub enum TlsError {
    /// The client spoke plain HTTP (or anything but TLS); it was answered 400.
    #[error("plain HTTP on the TLS port")]
    NotTls,
    /// A record or handshake message rustls refused (an alert was sent).
    #[error("TLS: {0}")]
    Protocol(#[from] RustlsError),
}

/// Whether `e` is the [`TlsError::NotTls`] of [`TlsConn::read`]: its 400 is
/// written, and the connection should linger as after any last response.
pub fn is_plain_http(e: &io::Error) -> bool {
    e.get_ref()
        .and_then(|inner| inner.downcast_ref::<TlsError>())
        .is_some_and(|e| matches!(e, TlsError::NotTls))
}

/// How much a [`TlsConn::flush`] wrote.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Flushed {
    /// Encrypted bytes the socket took.
    pub wrote: usize,
    /// The write budget ran out with output left.
    pub more: bool,
}

/// One connection's TLS state.
pub struct TlsConn {
    conn: ServerConnection,
    /// When the connection was accepted: the handshake must finish within
    /// `header_timeout` of it.
    started: Instant,
    /// The first byte was looked at (a handshake record).
    sniffed: bool,
    /// The handshake's [`TlsInfo`] went to the connection state.
    info_given: bool,
    /// Our close_notify is queued.
    close_sent: bool,
}

impl std::fmt::Debug for TlsConn {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TlsConn")
            .field("handshaking", &self.conn.is_handshaking())
            .field("close_sent", &self.close_sent)
            .finish_non_exhaustive()
    }
}

impl TlsConn {
    /// Whether the handshake is still going on.
    pub fn handshaking(&self) -> bool {
        self.conn.is_handshaking()
    }

    /// The handshake started at least `timeout` ago and has not finished.
    pub fn handshake_overdue(&self, now: Instant, timeout: Duration) -> bool {
        self.conn.is_handshaking() && now.saturating_duration_since(self.started) >= timeout
    }

    /// Encrypted bytes wait for the socket.
    pub fn wants_write(&self) -> bool {
        self.conn.wants_write()
    }

    /// One read from the socket: records in, plaintext out into `state`'s
    /// read buffer. `Short(0)` is the end of the peer's data (close_notify or
    /// EOF); `Full` means there may be more. Errors: `WouldBlock`, the
    /// socket's, [`TlsError::NotTls`] (already answered) and
    /// [`TlsError::Protocol`] (the alert is sent best effort).
    pub fn read(
        &mut self,
        stream: &Stream,
        state: &mut ConnState,
        pool: &mut BufPool,
    ) -> io::Result<ReadOutcome> {
        if !self.sniffed {
            let mut first = 0u8;
            // SAFETY: recv(2) writes at most 1 byte into a valid local; MSG_PEEK
            // leaves it in the socket for rustls.
            let n = unsafe {
                libc::recv(
                    stream.as_raw_fd(),
                    (&mut first as *mut u8).cast(),
                    1,
                    libc::MSG_PEEK,
                )
            };
            if n < 0 {
                return Err(io::Error::last_os_error());
            }
            if n == 0 {
                return Ok(ReadOutcome::Short(0));
            }
            if first != HANDSHAKE_RECORD {
                // Best effort: a fresh socket's buffer takes 120 bytes.
                let _ = (&*stream).write(PLAIN_HTTP_ANSWER);
                return Err(io::Error::new(io::ErrorKind::InvalidData, TlsError::NotTls));
            }
            self.sniffed = true;
        }
        let got = self.conn.read_tls(&mut &*stream)?;
        if let Err(e) = self.conn.process_new_packets() {
            // rustls queued an alert saying why; the connection is done either way.
            let _ = self.conn.write_tls(&mut &*stream);
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                TlsError::from(e),
            ));
        }
        if !self.info_given && !self.conn.is_handshaking() {
            self.info_given = true;
            state.set_tls(Arc::new(self.info()));
        }
        let buf = state.input_buf(pool);
        let mut plain = 0;
        loop {
            let len = buf.len();
            if buf.capacity() - len < READ_MIN_SPARE {
                buf.reserve(BUF_SIZE.max(len));
            }
            // rustls reads into initialized memory: zero a bounded window, not
            // all the spare room of a buffer grown for a large body.
            let room = (buf.capacity() - len).min(PLAIN_READ);
            buf.resize(len + room, 0);
            match self.conn.reader().read(&mut buf[len..]) {
                Ok(0) => {
                    // close_notify: the peer sends nothing more.
                    buf.truncate(len);
                    return Ok(if plain == 0 {
                        ReadOutcome::Short(0)
                    } else {
                        ReadOutcome::Full
                    });
                }
                Ok(n) => {
                    buf.truncate(len + n);
                    plain += n;
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    buf.truncate(len);
                    break;
                }
                Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => {
                    // The TCP stream ended without close_notify, as many clients
                    // end it: the end of the peer's data, like a plain FIN.
                    buf.truncate(len);
                    return Ok(if plain == 0 {
                        ReadOutcome::Short(0)
                    } else {
                        ReadOutcome::Full
                    });
                }
                Err(e) => {
                    buf.truncate(len);
                    return Err(e);
                }
            }
        }
        if got == 0 && plain == 0 {
            return Ok(ReadOutcome::Short(0));
        }
        // The socket may hold more records: read again until WouldBlock.
        Ok(ReadOutcome::Full)
    }

    /// What a handler learns of this connection, once the handshake is done.
    fn info(&self) -> TlsInfo {
        let chain = self.conn.peer_certificates().unwrap_or(&[]);
        TlsInfo {
            client_cert: chain
                .first()
                .and_then(|der| X509Certificate::from_der(der).ok())
                .map(|(_, cert)| rfc4514(cert.subject())),
            client_chain: chain.iter().map(|der| pem_certificate(der)).collect(),
            version: self.conn.protocol_version().map_or(0, u16::from),
            cipher_suite: self
                .conn
                .negotiated_cipher_suite()
                .map_or(0, |s| u16::from(s.suite())),
        }
    }

    /// Encrypts `state`'s output and writes the records, up to `budget`
    /// plaintext bytes: every response queued this round goes into rustls
    /// first, then out in one `writev` (more only when rustls's buffer
    /// limit is reached). Stops at `WouldBlock` (the writable event follows).
    /// A file that ends early is an `UnexpectedEof` error.
    pub fn flush(
        &mut self,
        stream: &Stream,
        state: &mut ConnState,
        budget: usize,
    ) -> io::Result<Flushed> {
        let mut budget = budget;
        let mut wrote = 0;
        loop {
            if !self.conn.is_handshaking() {
                while state.has_output() && budget > 0 {
                    let taken = self.encrypt(state, budget)?;
                    if taken == 0 {
                        break; // rustls's buffer is full: write it first.
                    }
                    state.written(taken);
                    budget = budget.saturating_sub(taken);
                }
            }
            if !self.conn.wants_write() {
                let more = state.has_output() && !self.conn.is_handshaking();
                return Ok(Flushed { wrote, more });
            }
            match self.conn.write_tls(&mut &*stream) {
                Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                Ok(n) => wrote += n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    return Ok(Flushed { wrote, more: false })
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
            if budget == 0 && state.has_output() {
                return Ok(Flushed { wrote, more: true });
            }
        }
    }

    /// Hands the front of the output to rustls; how many plaintext bytes it
    /// took (0: its buffer is full).
    fn encrypt(&mut self, state: &ConnState, budget: usize) -> io::Result<usize> {
        let out = state.output();
        if let Some(file) = out.front_file() {
            let want = usize::try_from(file.len)
                .unwrap_or(usize::MAX)
                .min(FILE_CHUNK)
                .min(budget);
            let mut chunk = [0u8; FILE_CHUNK];
            let Ok(offset) = libc::off_t::try_from(file.offset) else {
                return Err(io::ErrorKind::UnexpectedEof.into());
            };
            // SAFETY: reads at most `want` (<= FILE_CHUNK) bytes into a local
            // buffer from a descriptor the output holds open.
            let n = unsafe { libc::pread(file.fd, chunk.as_mut_ptr().cast(), want, offset) };
            if n < 0 {
                return Err(io::Error::last_os_error());
            }
            if n == 0 {
                // The file shrank after it was opened.
                return Err(io::ErrorKind::UnexpectedEof.into());
            }
            return self.conn.writer().write(&chunk[..n as usize]);
        }
        if out.is_split() {
            let mut slices = [IoSlice::new(&[]); MAX_SLICES];
            let n = out.slices(&mut slices);
            self.conn.writer().write_vectored(&slices[..n])
        } else {
            let first = out.first();
            self.conn.writer().write(&first[..first.len().min(budget)])
        }
    }

    /// The last response is written: queues close_notify (once) and writes
    /// what rustls holds. `true` once nothing is left for the socket (or it
    /// is broken), so the connection may shut down its side.
    pub fn finish(&mut self, stream: &Stream) -> bool {
        if !self.close_sent {
            self.close_sent = true;
            self.conn.send_close_notify();
        }
        while self.conn.wants_write() {
            match self.conn.write_tls(&mut &*stream) {
                Ok(0) => return true,
                Ok(_) => {}
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return false,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(_) => return true,
            }
        }
        true
    }

    /// Before a connection is closed: a close_notify, best effort (one
    /// non-blocking write), unless one was sent or the handshake never ended.
    pub fn goodbye(&mut self, stream: &Stream) {
        if self.close_sent || self.conn.is_handshaking() {
            return;
        }
        self.close_sent = true;
        self.conn.send_close_notify();
        let _ = self.conn.write_tls(&mut &*stream);
    }
}

/// `name` as RFC 4514 writes a distinguished name: the last RDN first,
/// `,` between RDNs, `+` inside one, short attribute names where known
/// (`CN`, `O`), the dotted OID otherwise, special characters escaped.
fn rfc4514(name: &X509Name<'_>) -> String {
    let registry = x509_parser::objects::oid_registry();
    let mut out = String::new();
    for (i, rdn) in name
        .iter_rdn()
        .collect::<Vec<_>>()
        .into_iter()
        .rev()
        .enumerate()
    {
        if i > 0 {
            out.push(',');
        }
        for (j, attr) in rdn.iter().enumerate() {
            if j > 0 {
                out.push('+');
            }
            let oid = attr.attr_type();
            match x509_parser::objects::oid2abbrev(oid, registry) {
                Ok(short) => out.push_str(short),
                Err(_) => out.push_str(&oid.to_id_string()),
            }
            out.push('=');
            escape_value(attr.as_str().unwrap_or(""), &mut out);
        }
    }
    out
}

/// `der` as a PEM `CERTIFICATE` block: base64 in lines of 64, `\n` endings.
fn pem_certificate(der: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut base64 = Vec::with_capacity(der.len().div_ceil(3) * 4);
    for group in der.chunks(3) {
        let byte = |i: usize| u32::from(group.get(i).copied().unwrap_or(0));
        let bits = byte(0) << 16 | byte(1) << 8 | byte(2);
        for i in 0..4 {
            base64.push(if i <= group.len() {
                ALPHABET[(bits >> (18 - 6 * i)) as usize & 63]
            } else {
                b'='
            });
        }
    }
    let mut out = String::from("-----BEGIN CERTIFICATE-----\n");
    for line in base64.chunks(64) {
        out.push_str(std::str::from_utf8(line).expect("base64 is ASCII"));
        out.push('\n');
    }
    out.push_str("-----END CERTIFICATE-----\n");
    out
}

/// Escapes an attribute value as RFC 4514 section 2.4 asks.
fn escape_value(value: &str, out: &mut String) {
    let last = value.chars().count().saturating_sub(1);
    for (i, c) in value.chars().enumerate() {
        let special = matches!(c, ',' | '+' | '"' | '\\' | '<' | '>' | ';')
            || (i == 0 && (c == '#' || c == ' '))
            || (i == last && c == ' ');
        if special {
            out.push('\\');
        }
        if c == '\0' {
            out.push_str("\\00");
        } else {
            out.push(c);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escapes_rfc4514_specials() {
        let mut out = String::new();
        escape_value(" a,b+c\\ ", &mut out);
        assert_eq!(out, "\\ a\\,b\\+c\\\\\\ ");
    }

    #[test]
    fn writes_pem_in_lines_of_64() {
        assert_eq!(
            pem_certificate(b"hello"),
            "-----BEGIN CERTIFICATE-----\naGVsbG8=\n-----END CERTIFICATE-----\n"
        );
        let pem = pem_certificate(&[0xFF; 48]);
        let lines: Vec<&str> = pem.lines().collect();
        assert_eq!(lines[1], "/".repeat(64));
        assert_eq!(lines.len(), 3);
        assert_eq!(pem_certificate(b"ab").lines().nth(1), Some("YWI="));
    }

    #[test]
    fn recognises_the_plain_http_error() {
        let e = io::Error::new(io::ErrorKind::InvalidData, TlsError::NotTls);
        assert!(is_plain_http(&e));
        assert!(!is_plain_http(&io::Error::from(io::ErrorKind::InvalidData)));
    }
}
