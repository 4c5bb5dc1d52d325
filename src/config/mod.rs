//! Project file loading. This module owns `project.pyrs`: its format (JSON
//! with `//` and `/* */` comments and trailing commas), the default and the
//! limits of every key, and the source positions that let every error name
//! `file:line:column` and the key at fault. The file is read once, by
//! `json.rs` (positions come with every token) and checked key by key as it
//! is read by `keys.rs`. Errors found after loading (a Python module that
//! fails to import, a missing class or handler) point back into the file
//! through [`Config::locate`] and [`ConfigError::at`]. Every key can also be
//! set from the environment (`env.rs`, `PYRS_THREAD_COUNT`) and some from
//! flags (`cli.rs`); [`Config::origins`] records where each value came from,
//! checks across keys ([`Config::check`]) run once all of them are applied,
//! and `show.rs` prints the result for `--print-config`. It runs once, on
//! the main thread, before any socket is opened; it sends nothing and
//! receives nothing, and no part of it is on the request path.

mod env;
#[cfg(test)]
mod env_tests;
mod json;
mod keys;
mod show;
#[cfg(test)]
mod static_tests;
#[cfg(test)]
mod tests;

use std::fmt;
use std::net::IpAddr;
use std::path::{Path, PathBuf};

use thiserror::Error;

pub use env::{env_variable, ENV_PREFIX};

/// Largest request body accepted unless `max_body_size` says otherwise; a
/// bigger body is refused with 413 rather than buffered. The parser owns the
/// number.
pub const DEFAULT_MAX_BODY_SIZE: u64 = pyrs_parser::DEFAULT_MAX_BODY;
/// Largest request head (request line plus headers) accepted unless
/// `max_head_size` says otherwise; a bigger head is answered with 431. The
/// parser owns the number.
pub const DEFAULT_MAX_HEAD_SIZE: usize = pyrs_parser::DEFAULT_MAX_HEAD;
/// Smallest allowed `max_head_size`: below this, ordinary browser requests
/// would be refused.
pub const MIN_HEAD_SIZE: usize = 1024;
/// Largest allowed `max_head_size`: each connection may buffer this much
/// before a request is complete, so it bounds memory per connection.
pub const MAX_HEAD_SIZE: usize = 1024 * 1024;
/// Longest Unix socket path (`sun_path` holds 108 bytes with the final NUL).
pub const MAX_UNIX_PATH: usize = 107;
/// Listen on every IPv4 interface unless told otherwise.
pub const DEFAULT_HTTP_LISTEN_ADDRESS: &str = "0.0.0.0";
/// The port the original pyrs used.
pub const DEFAULT_HTTP_LISTEN_PORT: u16 = 8094;
/// Reactor threads unless `thread_count` says otherwise.
pub const DEFAULT_THREAD_COUNT: usize = 2;
/// Upper bound on `thread_count`: each reactor owns a socket and a poll
/// instance, and more threads than this only adds contention.
pub const MAX_THREAD_COUNT: usize = 1024;
/// Pending-connection queue length passed to `listen(2)` by default.
pub const DEFAULT_LISTEN_BACKLOG: i32 = 10;
/// Seconds to let in-flight requests finish after a shutdown signal.
pub const DEFAULT_SHUTDOWN_TIMEOUT: f64 = 30.0;
/// Seconds a client may take to send a complete request head (slowloris).
pub const DEFAULT_HEADER_TIMEOUT: f64 = 10.0;
/// Seconds an idle keep-alive connection is kept open.
pub const DEFAULT_KEEPALIVE_TIMEOUT: f64 = 5.0;
/// Seconds a request body upload may stall between two reads.
pub const DEFAULT_BODY_TIMEOUT: f64 = 10.0;
/// Open connections accepted at once, over all reactors; more wait in the backlog.
pub const DEFAULT_MAX_CONNECTIONS: usize = 10_000;
/// Seconds of silence before a WebSocket is pinged.
pub const DEFAULT_WEBSOCKET_PING_INTERVAL: f64 = 20.0;
/// Requests parsed ahead of their responses per connection.
pub const DEFAULT_MAX_PIPELINED: usize = 64;
/// Response bytes buffered per connection before it stops reading requests.
pub const DEFAULT_MAX_WRITE_BUFFER: usize = 1024 * 1024;
/// Requests queued to the Python worker before reactors stop reading.
pub const DEFAULT_MAX_QUEUED_REQUESTS: usize = 10_000;
/// Most worker processes `workers` may ask for.
pub const MAX_WORKERS: usize = 1024;

/// Which asyncio event loop runs `async def` handlers (`event_loop` key).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EventLoop {
    /// uvloop when it can be imported, the standard loop otherwise (default).
    Auto,
    /// The standard library's loop.
    Asyncio,
    /// uvloop; startup fails if it cannot be imported.
    Uvloop,
}

/// How many worker processes to run (`workers` key).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Workers {
    /// This many processes (1 = no supervisor: the server runs in this process).
    Count(usize),
    /// One per CPU this process may run on.
    Auto,
}

/// Where the access log goes (`access_log` key, `--access-log` flag).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AccessLog {
    /// No access log (default).
    Off,
    /// One line per request on standard output (`true`, or `"-"`).
    Stdout,
    /// Appended to this file (a path relative to the project file's folder).
    File(PathBuf),
}

/// Whether a client must present a certificate (`tls_client_auth` key), when
/// `tls_client_ca` names the authorities that sign them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClientAuth {
    /// A client without a certificate signed by `tls_client_ca` is refused in
    /// the handshake (default).
    Required,
    /// A client may present one; one that does must present a valid one.
    Optional,
}

/// The oldest TLS version accepted (`tls_min_version` key).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TlsVersion {
    /// TLS 1.2 and 1.3 (default).
    V1_2,
    /// TLS 1.3 only.
    V1_3,
}

impl TlsVersion {
    /// The value as written in the project file.
    pub fn name(self) -> &'static str {
        match self {
            TlsVersion::V1_2 => "1.2",
            TlsVersion::V1_3 => "1.3",
        }
    }
}

/// Keys allowed at the top level of the file, in documentation order. Each
/// is read by `keys::read_setting`, but `modules`.
pub const TOP_LEVEL_KEYS: &[&str] = &[
    "http_listen_address",
    "http_listen_port",
    "thread_count",
    "tcp_nodelay",
    "listen_backlog",
    "max_body_size",
    "max_head_size",
    "shutdown_timeout",
    "header_timeout",
    "keepalive_timeout",
    "body_timeout",
    "max_connections",
    "max_pipelined",
    "max_write_buffer",
    "max_queued_requests",
    "shed_queued_requests",
    "event_loop",
    "workers",
    "python_threads",
    "max_websocket_message",
    "websocket_ping_interval",
    "access_log",
    "access_log_format",
    "metrics_address",
    "max_requests",
    "max_requests_jitter",
    "max_worker_memory_mb",
    "tls_cert",
    "tls_key",
    "tls_client_ca",
    "tls_client_auth",
    "tls_min_version",
    "modules",
    "static",
];

/// Most `python_threads`.
pub const MAX_PYTHON_THREADS: usize = 256;

/// Keys allowed in each entry of `modules`.
pub const MODULE_KEYS: &[&str] = &["path", "module", "class", "handler", "websocket"];

/// `listen_backlog` of the app form of the command line (the project file's
/// default stays the original pyrs's 10; uvicorn uses 2048).
pub const APP_LISTEN_BACKLOG: i32 = 1024;

/// The keys of a `modules` entry that names an application instead.
pub const APP_KEYS: &[&str] = &["path", "app", "interface", "factory"];

/// Keys allowed in each entry of `static`.
pub const STATIC_KEYS: &[&str] = &["path", "dir", "max_age", "index", "precompressed"];

/// Largest `max_age`: a year, the most RFC 9111 caches are asked to keep.
pub const MAX_MAX_AGE: u64 = 365 * 24 * 60 * 60;

/// A validated project file.
#[derive(Debug, Clone, PartialEq)]
pub struct Config {
    /// Address to bind; an IP address or a host name. Default `"0.0.0.0"`.
    pub http_listen_address: String,
    /// Port to bind; 0 lets the OS pick one. Default 8094.
    pub http_listen_port: u16,
    /// Reactor threads, 1 to [`MAX_THREAD_COUNT`]. Default 2.
    pub thread_count: usize,
    /// Set `TCP_NODELAY` on accepted sockets. Default false.
    pub tcp_nodelay: bool,
    /// `listen(2)` backlog, at least 1. Default 10.
    pub listen_backlog: i32,
    /// Largest request body in bytes. Default [`DEFAULT_MAX_BODY_SIZE`].
    pub max_body_size: u64,
    /// Largest request head in bytes, [`MIN_HEAD_SIZE`] to [`MAX_HEAD_SIZE`].
    /// Default [`DEFAULT_MAX_HEAD_SIZE`].
    pub max_head_size: usize,
    /// Seconds to drain in-flight requests on shutdown; finite, not negative.
    /// Default 30.
    pub shutdown_timeout: f64,
    /// Seconds to receive a complete request head; then 408 and close.
    pub header_timeout: f64,
    /// Seconds an idle keep-alive connection stays open.
    pub keepalive_timeout: f64,
    /// Seconds a body upload may stall; then 408 and close.
    pub body_timeout: f64,
    /// Connections open at once over all reactors; at least `thread_count`.
    pub max_connections: usize,
    /// Requests per connection parsed ahead of their responses; at least 1.
    pub max_pipelined: usize,
    /// Response bytes buffered per connection before it stops reading.
    pub max_write_buffer: usize,
    /// Requests waiting for Python before the reactors stop reading.
    pub max_queued_requests: usize,
    /// Requests waiting for Python past which new ones are answered 503;
    /// 0 turns this off.
    pub shed_queued_requests: usize,
    /// The event loop for `async def` handlers. Default [`EventLoop::Auto`].
    pub event_loop: EventLoop,
    /// Worker processes. Default 1.
    pub workers: Workers,
    /// Python threads for synchronous handlers and WSGI apps, 1 to
    /// [`MAX_PYTHON_THREADS`]. Default 1: the one worker thread calls them.
    pub python_threads: usize,
    /// Largest WebSocket message, in bytes; a bigger one closes with 1009.
    pub max_websocket_message: usize,
    /// Seconds a WebSocket may be silent before the server pings it; silent
    /// for twice as long, it is closed.
    pub websocket_ping_interval: f64,
    /// Where each request's line goes. Default [`AccessLog::Off`].
    pub access_log: AccessLog,
    /// The access log's line layout; `None` is the Combined Log Format plus
    /// the duration.
    pub access_log_format: Option<String>,
    /// `host:port` serving `GET /metrics` (Prometheus text); `None` is off.
    pub metrics_address: Option<String>,
    /// Requests a worker process serves before it is replaced; 0 is never.
    pub max_requests: u64,
    /// Up to this many more requests, drawn per worker, so that workers are
    /// not replaced together.
    pub max_requests_jitter: u64,
    /// Resident memory (MiB) past which a worker process is replaced; 0 is
    /// never.
    pub max_worker_memory_mb: u64,
    /// PEM certificate chain (leaf first): with `tls_key`, the server speaks
    /// HTTPS only. Relative to the project file's folder.
    pub tls_cert: Option<PathBuf>,
    /// PEM private key of `tls_cert` (PKCS#8, RSA or EC).
    pub tls_key: Option<PathBuf>,
    /// PEM bundle of the authorities that sign client certificates (mutual TLS).
    pub tls_client_ca: Option<PathBuf>,
    /// Whether clients must present a certificate. Default required.
    pub tls_client_auth: ClientAuth,
    /// The oldest TLS version accepted. Default 1.2.
    pub tls_min_version: TlsVersion,
    /// Routes in file order; empty only when `statics` is not.
    pub modules: Vec<ModuleEntry>,
    /// Folders served by the reactors, in file order; no route is also a module's.
    pub statics: Vec<StaticEntry>,
    /// The project file as given on the command line (for the app form of the
    /// command line, the application as given: `main:app`).
    pub file: PathBuf,
    /// Absolute folder holding the file; Python imports resolve from here.
    pub project_dir: PathBuf,
    /// Made from the command line's app form (`pyrs main:app`), not read from a
    /// file: errors name the argument or flag instead of a file position.
    pub from_command_line: bool,
    /// Where each top-level key's value came from: the file, the environment
    /// or a flag (`--print-config` shows it; errors found later name it).
    pub origins: Origins,
    /// `--reload` was given (a flag only: no key, no variable).
    pub reload: bool,
}

impl Default for Config {
    /// Every key's default, no modules and no file: what a project file
    /// changes, not a project by itself.
    fn default() -> Self {
        Config {
            http_listen_address: DEFAULT_HTTP_LISTEN_ADDRESS.to_owned(),
            http_listen_port: DEFAULT_HTTP_LISTEN_PORT,
            thread_count: DEFAULT_THREAD_COUNT,
            tcp_nodelay: false,
            listen_backlog: DEFAULT_LISTEN_BACKLOG,
            max_body_size: DEFAULT_MAX_BODY_SIZE,
            max_head_size: DEFAULT_MAX_HEAD_SIZE,
            shutdown_timeout: DEFAULT_SHUTDOWN_TIMEOUT,
            header_timeout: DEFAULT_HEADER_TIMEOUT,
            keepalive_timeout: DEFAULT_KEEPALIVE_TIMEOUT,
            body_timeout: DEFAULT_BODY_TIMEOUT,
            max_connections: DEFAULT_MAX_CONNECTIONS,
            max_pipelined: DEFAULT_MAX_PIPELINED,
            max_write_buffer: DEFAULT_MAX_WRITE_BUFFER,
            max_queued_requests: DEFAULT_MAX_QUEUED_REQUESTS,
            shed_queued_requests: 0,
            event_loop: EventLoop::Auto,
            workers: Workers::Count(1),
            python_threads: 1,
            max_websocket_message: crate::ws::DEFAULT_MAX_MESSAGE,
            websocket_ping_interval: DEFAULT_WEBSOCKET_PING_INTERVAL,
            access_log: AccessLog::Off,
            access_log_format: None,
            metrics_address: None,
            max_requests: 0,
            max_requests_jitter: 0,
            max_worker_memory_mb: 0,
            tls_cert: None,
            tls_key: None,
            tls_client_ca: None,
            tls_client_auth: ClientAuth::Required,
            tls_min_version: TlsVersion::V1_2,
            modules: Vec::new(),
            statics: Vec::new(),
            file: PathBuf::new(),
            project_dir: PathBuf::new(),
            from_command_line: false,
            origins: Origins::default(),
            reload: false,
        }
    }
}

/// Where the value of one top-level key came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Origin {
    /// The key's default (in the app form, that form's default).
    Default,
    /// The project file, where the value starts.
    File(Location),
    /// An environment variable, by name (`PYRS_WORKERS`); for `modules` and
    /// `static`, locations in the entries are in its text.
    Env(String),
    /// A command-line flag, by its long name (`--port`).
    Flag(&'static str),
    /// The app form's positional argument (`pyrs main:app`).
    Argument,
}

impl Origin {
    /// As `--print-config` shows it: `default`, `project.pyrs:3:5`,
    /// `env PYRS_WORKERS`, `flag --port`, `argument main:app`. `file` is
    /// [`Config::file`].
    pub fn describe(&self, file: &Path) -> String {
        match self {
            Origin::Default => "default".to_owned(),
            Origin::File(at) => format!("{}:{at}", file.display()),
            Origin::Env(variable) => format!("env {variable}"),
            Origin::Flag(flag) => format!("flag {flag}"),
            Origin::Argument => format!("argument {}", file.display()),
        }
    }
}

/// The [`Origin`] of each top-level key; a key not in it has its default.
/// A handful of entries, so a list, not a map.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Origins(Vec<(&'static str, Origin)>);

impl Origins {
    /// Where `key`'s value came from.
    pub fn get(&self, key: &str) -> &Origin {
        self.0
            .iter()
            .find(|(name, _)| *name == key)
            .map_or(&Origin::Default, |(_, origin)| origin)
    }

    /// Records that `key`'s value now comes from `origin`. `key` is one of
    /// [`TOP_LEVEL_KEYS`].
    pub fn set(&mut self, key: &'static str, origin: Origin) {
        debug_assert!(TOP_LEVEL_KEYS.contains(&key), "{key} is no key");
        match self.0.iter_mut().find(|(name, _)| *name == key) {
            Some((_, slot)) => *slot = origin,
            None => self.0.push((key, origin)),
        }
    }

    /// Where `key`'s value is in the project file, when it came from there.
    pub fn location(&self, key: &str) -> Option<Location> {
        match self.get(key) {
            Origin::File(at) => Some(*at),
            _ => None,
        }
    }
}

/// `file`'s folder, canonicalized when it exists, else made absolute.
fn project_dir(file: &Path) -> PathBuf {
    let folder = match file.parent() {
        Some(parent) if !parent.as_os_str().is_empty() => parent,
        _ => Path::new("."),
    };
    folder
        .canonicalize()
        .or_else(|_| std::path::absolute(folder))
        .unwrap_or_else(|_| folder.to_path_buf())
}

/// One route of `modules`: requests whose path matches `path` go to what
/// `target` names.
#[derive(Debug, Clone, PartialEq)]
pub struct ModuleEntry {
    /// Exact route (`"/echo"`), prefix wildcard (`"/api/*"`) or catch-all
    /// (`"/*"`); always starts with `/`, and `*` only appears as a final `/*`.
    pub path: String,
    pub target: Target,
    /// Where this entry's `{` is in the file.
    pub location: Location,
    /// Where each key's value is in the file (always known for entries read
    /// from a file).
    pub value_locations: EntryLocations,
}

/// What a `modules` entry serves.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    /// A pyrs handler: `module.class().handler(request)`.
    Handler {
        /// Python module name, dotted identifiers (`"main"`, `"app.handlers"`).
        module: String,
        /// Class name inside the module.
        class: String,
        /// Method name on an instance of the class.
        handler: String,
        /// `"websocket": true`: an `async def` handler taking a `pyrs.WebSocket`.
        websocket: bool,
    },
    /// An application object (`"app": "mysite.wsgi:application"`).
    App(AppSpec),
}

/// A WSGI or ASGI application: where it is and how to call it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AppSpec {
    /// The module to import (dotted identifiers).
    pub module: String,
    /// The attribute of the module holding the app (dotted identifiers).
    pub attr: String,
    pub interface: Interface,
    /// `attr` is a factory: call it once, without arguments, to get the app.
    pub factory: bool,
}

impl AppSpec {
    /// Parses `module:attr`; the message says what is wrong.
    pub fn parse(spec: &str, interface: Interface, factory: bool) -> Result<AppSpec, String> {
        let bad = || {
            format!(
                "{spec:?} is not an application such as \"main:app\" or \
                 \"mysite.wsgi:application\" (module:attribute)"
            )
        };
        let (module, attr) = spec.split_once(':').ok_or_else(bad)?;
        if !module.split('.').all(keys::is_identifier) || !attr.split('.').all(keys::is_identifier)
        {
            return Err(bad());
        }
        Ok(AppSpec {
            module: module.to_owned(),
            attr: attr.to_owned(),
            interface,
            factory,
        })
    }
}

/// Which calling convention an application uses (`interface` key).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Interface {
    /// ASGI when the app is a coroutine function or has an `async def
    /// __call__`, WSGI otherwise (default).
    Auto,
    /// PEP 3333.
    Wsgi,
    /// ASGI 3.0.
    Asgi,
}

impl Interface {
    /// The value as written in the project file and on the command line.
    pub fn name(self) -> &'static str {
        match self {
            Interface::Auto => "auto",
            Interface::Wsgi => "wsgi",
            Interface::Asgi => "asgi",
        }
    }

    /// Parses `auto`, `wsgi` or `asgi`.
    pub fn parse(value: &str) -> Result<Interface, String> {
        match value {
            "auto" => Ok(Interface::Auto),
            "wsgi" => Ok(Interface::Wsgi),
            "asgi" => Ok(Interface::Asgi),
            other => Err(format!(
                "{other:?} is not an interface: use \"wsgi\", \"asgi\" or \"auto\""
            )),
        }
    }
}

/// One entry of `static`: requests under `path` are answered by the reactors
/// with files from `dir`, without Python.
#[derive(Debug, Clone, PartialEq)]
pub struct StaticEntry {
    /// A prefix route (`"/static/*"`, or `"/*"` for everything).
    pub path: String,
    /// The folder, absolute and canonical (symlinks in the configured path
    /// resolved once, at startup); it existed when the file was read.
    pub dir: PathBuf,
    /// `Cache-Control: max-age=N` on every answer when set.
    pub max_age: Option<u64>,
    /// File served for a request naming a folder; a plain file name.
    pub index: Option<String>,
    /// Serve `name.br` / `name.gz` beside `name` to clients that accept them.
    pub precompressed: bool,
    /// Where this entry's `{` is in the file.
    pub location: Location,
    /// Where its `path` value is in the file.
    pub path_at: Location,
}

/// Source positions of one entry's values, used by [`Config::locate`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct EntryLocations {
    pub path: Option<Location>,
    pub module: Option<Location>,
    pub class: Option<Location>,
    pub handler: Option<Location>,
    pub app: Option<Location>,
    pub interface: Option<Location>,
    pub factory: Option<Location>,
    pub websocket: Option<Location>,
}

/// A position in the project file, both 1-based; columns count characters.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Location {
    pub line: usize,
    pub column: usize,
}

impl fmt::Display for Location {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.line, self.column)
    }
}

/// Why a project file was refused. Each renders as one line naming the file,
/// the position where one applies and the key at fault.
#[derive(Debug, Error)]
pub enum ConfigError {
    /// The file could not be read. The I/O error is part of the message, not
    /// a `source`, so that `{:#}` chains do not print it twice.
    #[error("cannot read {}: {error}", .file.display())]
    Read {
        file: PathBuf,
        error: std::io::Error,
    },

    /// The text is not JSON-with-comments.
    #[error("{}: {message}", At(.file, Some(*.location)))]
    Syntax {
        file: PathBuf,
        location: Location,
        message: String,
    },

    /// A key the format does not have. `parent` is the enclosing key for
    /// keys inside a module entry (`"modules[0]"`).
    #[error(
        "{}: {}unknown key {key:?}{}",
        At(.file, *.location),
        Parent(.parent),
        Hint(.suggestion)
    )]
    UnknownKey {
        file: PathBuf,
        location: Option<Location>,
        parent: Option<String>,
        key: String,
        suggestion: Option<String>,
    },

    /// A key is missing, has the wrong type or a value out of its limits.
    #[error("{}: key {key:?}: {message}", At(.file, *.location))]
    Invalid {
        file: PathBuf,
        location: Option<Location>,
        key: String,
        message: String,
    },

    /// The application named on the command line (`pyrs main:app`) cannot be
    /// used; `what` is the argument and the flag at fault.
    #[error("{what}: {message}")]
    CommandLine { what: String, message: String },

    /// An environment variable (`PYRS_THREAD_COUNT`) holds a value its key
    /// does not take. `location` is a position in the variable's text, for
    /// the entries of `PYRS_MODULES` and `PYRS_STATIC`.
    #[error(
        "environment variable {}: {message}",
        At(Path::new(.variable), *.location)
    )]
    Environment {
        variable: String,
        location: Option<Location>,
        message: String,
    },

    /// A module entry names Python code that cannot be used: the module fails
    /// to import (the message carries the traceback), the class is missing,
    /// or the handler is missing or not callable. Build it with
    /// [`ConfigError::at`].
    #[error("{}: key {key:?}: {message}", At(.file, *.location))]
    Python {
        file: PathBuf,
        location: Option<Location>,
        key: String,
        message: String,
    },
}

impl ConfigError {
    /// A [`ConfigError::Python`] for `modules[index].<key>`, pointing at that
    /// value in the file (or at the entry when the key is empty or unknown).
    pub fn at(config: &Config, index: usize, key: &str, message: impl Into<String>) -> Self {
        let path = if key.is_empty() {
            format!("modules[{index}]")
        } else {
            format!("modules[{index}].{key}")
        };
        if let Origin::Env(variable) = config.origins.get("modules") {
            return ConfigError::Environment {
                variable: variable.clone(),
                location: Some(config.locate(index, key)),
                message: format!("key {path:?}: {}", message.into()),
            };
        }
        if config.from_command_line {
            let app = config.file.display();
            let flag = match (key, config.modules.get(index).map(|m| &m.target)) {
                ("interface", Some(Target::App(spec))) => {
                    format!("{app} (--interface {})", spec.interface.name())
                }
                ("factory", _) => format!("{app} (--factory)"),
                _ => app.to_string(),
            };
            return ConfigError::CommandLine {
                what: flag,
                message: message.into(),
            };
        }
        ConfigError::Python {
            file: config.file.clone(),
            location: Some(config.locate(index, key)),
            key: path,
            message: message.into(),
        }
    }

    /// Where in the file the error is, when that is known.
    pub fn location(&self) -> Option<Location> {
        match self {
            // An environment variable's positions are in its text, not the file's.
            ConfigError::Read { .. }
            | ConfigError::CommandLine { .. }
            | ConfigError::Environment { .. } => None,
            ConfigError::Syntax { location, .. } => Some(*location),
            ConfigError::UnknownKey { location, .. }
            | ConfigError::Invalid { location, .. }
            | ConfigError::Python { location, .. } => *location,
        }
    }
}

/// Renders `file:line:column`, or just `file` without a location.
struct At<'a>(&'a Path, Option<Location>);

impl fmt::Display for At<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.1 {
            Some(at) => write!(f, "{}:{}", self.0.display(), at),
            None => write!(f, "{}", self.0.display()),
        }
    }
}

/// Renders `key "modules[0]": ` before an unknown key inside an entry.
struct Parent<'a>(&'a Option<String>);

impl fmt::Display for Parent<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0 {
            Some(parent) => write!(f, "key {parent:?}: "),
            None => Ok(()),
        }
    }
}

/// Renders ` (did you mean "x"?)` when there is a suggestion.
struct Hint<'a>(&'a Option<String>);

impl fmt::Display for Hint<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0 {
            Some(hint) => write!(f, " (did you mean {hint:?}?)"),
            None => Ok(()),
        }
    }
}

/// The candidate closest to `unknown` by edit distance (case-insensitive),
/// when it is close enough to be a typo; otherwise a candidate that has
/// `unknown` as one of its `_`-separated words (`"port"` gives
/// `"http_listen_port"`).
pub fn suggest<'a>(unknown: &str, candidates: &[&'a str]) -> Option<&'a str> {
    let unknown = unknown.to_lowercase();
    let length = unknown.chars().count();
    let allowed = if length <= 3 { 1 } else { (length / 3).max(2) };
    let closest = candidates
        .iter()
        .map(|candidate| (strsim::damerau_levenshtein(&unknown, candidate), *candidate))
        .filter(|(distance, _)| *distance <= allowed)
        .min_by_key(|(distance, _)| *distance)
        .map(|(_, candidate)| candidate);
    closest.or_else(|| {
        candidates
            .iter()
            .find(|candidate| length >= 4 && candidate.split('_').any(|word| word == unknown))
            .copied()
    })
}

impl Config {
    /// Reads, parses and validates the project file at `path`, checks across
    /// keys included: the file alone, without environment or flags.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let config = Config::read(path)?;
        config.check()?;
        Ok(config)
    }

    /// Reads the project file at `path`, checking each key as [`Config::load`]
    /// does; the checks across keys wait for [`Config::check`], once the
    /// environment and the flags have overridden what they override.
    pub fn read(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|error| ConfigError::Read {
            file: path.to_path_buf(),
            error,
        })?;
        Config::parse(&text, path)
    }

    /// Every key's default, the current folder as the project folder and no
    /// routes: what `pyrs --print-config` shows without a project, under the
    /// environment and the flags.
    pub fn bare() -> Config {
        Config {
            project_dir: project_dir(Path::new("")),
            ..Config::default()
        }
    }

    /// The configuration of the app form of the command line (`pyrs main:app`):
    /// every key's default except `listen_backlog` ([`APP_LISTEN_BACKLOG`]), and
    /// one route, `/*`, to `app`, imported from `app_dir`.
    pub fn for_app(app: AppSpec, app_dir: &Path) -> Config {
        let name = format!("{}:{}", app.module, app.attr);
        let project_dir = app_dir
            .canonicalize()
            .or_else(|_| std::path::absolute(app_dir))
            .unwrap_or_else(|_| app_dir.to_path_buf());
        Config {
            listen_backlog: APP_LISTEN_BACKLOG,
            modules: vec![ModuleEntry {
                path: "/*".to_owned(),
                target: Target::App(app),
                location: Location { line: 1, column: 1 },
                value_locations: EntryLocations::default(),
            }],
            file: PathBuf::from(name),
            project_dir,
            from_command_line: true,
            origins: Origins(vec![("modules", Origin::Argument)]),
            ..Config::default()
        }
    }

    /// Adds a static mount given on the command line as `/url=folder`
    /// (`--static /static=public`): served under `/url/*` from `folder`,
    /// relative to the current folder. The error names the flag.
    pub fn add_static_flag(&mut self, flag: &str) -> Result<(), ConfigError> {
        let fail = |message: String| ConfigError::CommandLine {
            what: format!("--static {flag}"),
            message,
        };
        let (url, dir) = flag
            .split_once('=')
            .ok_or_else(|| fail("use URL=FOLDER, such as /static=public".to_owned()))?;
        let route = match url.trim_end_matches('/') {
            "" => "/*".to_owned(),
            url => format!("{url}/*"),
        };
        let route = keys::static_route(route).map_err(fail)?;
        if self.statics.iter().any(|m| m.path == route)
            || self.modules.iter().any(|m| m.path == route)
        {
            return Err(fail(format!("route {route:?} is already in use")));
        }
        let dir = keys::static_dir(Path::new("."), dir).map_err(fail)?;
        let at = Location { line: 1, column: 1 };
        self.statics.push(StaticEntry {
            path: route,
            dir,
            max_age: None,
            index: None,
            precompressed: false,
            location: at,
            path_at: at,
        });
        self.origins.set("static", Origin::Flag("--static"));
        Ok(())
    }

    /// Parses and validates `text` as the contents of `file`, checks across
    /// keys included. `project_dir` is `file`'s folder, canonicalized when it
    /// exists, else made absolute.
    pub fn from_str(text: &str, file: &Path) -> Result<Config, ConfigError> {
        let config = Config::parse(text, file)?;
        config.check()?;
        Ok(config)
    }

    /// [`Config::from_str`] without the checks across keys (see [`Config::read`]).
    pub fn parse(text: &str, file: &Path) -> Result<Config, ConfigError> {
        // Editors may save a byte order mark; it is invisible, so columns are
        // counted without it.
        let text = text.strip_prefix('\u{feff}').unwrap_or(text);
        let mut config = Config {
            file: file.to_path_buf(),
            project_dir: project_dir(file),
            ..Config::default()
        };
        keys::read(&mut json::Json::new(text, file), &mut config)?;
        Ok(config)
    }

    /// The checks that need more than one key, run once the file, the
    /// environment and the flags have all been applied, so that an override
    /// cannot get around them: `max_connections` is at least `thread_count`;
    /// something is served (unless there is no project: [`Config::bare`]); no
    /// route is both a module's and a static mount's.
    pub fn check(&self) -> Result<(), ConfigError> {
        if self.max_connections < self.thread_count {
            let mut message = format!("must be at least thread_count ({}", self.thread_count);
            match self.origins.get("thread_count") {
                Origin::Default | Origin::File(_) => {}
                other => {
                    message.push_str(", from ");
                    message.push_str(&other.describe(&self.file));
                }
            }
            message.push(')');
            return Err(self.key_error("max_connections", "max_connections", None, message));
        }
        self.check_tls()?;
        let bare = self.file.as_os_str().is_empty();
        if self.modules.is_empty() && self.statics.is_empty() && !bare {
            // A project serves something: Python routes, static files, or both.
            let message = "must list at least one module";
            return Err(self.key_error("modules", "modules", None, message));
        }
        // Static mounts and modules share one routing table: a route is one or the other.
        for (index, mount) in self.statics.iter().enumerate() {
            if let Some(module) = self.modules.iter().find(|m| m.path == mount.path) {
                let line = module.value_locations.path.unwrap_or(module.location).line;
                let message = format!(
                    "route {:?} is also a module's (line {line}); a route is served by one or the other",
                    mount.path
                );
                let key = format!("static[{index}].path");
                return Err(self.key_error("static", &key, Some(mount.path_at), message));
            }
        }
        Ok(())
    }

    /// The TLS keys go together: a certificate needs its key and the other way
    /// round, and the client settings need both. (Whether the files can be
    /// used is checked when the server builds its TLS setup: `tls.rs`.)
    fn check_tls(&self) -> Result<(), ConfigError> {
        let needs = |key: &str, other: &str| {
            let message = format!("needs {other} too");
            Err(self.key_error(key, key, None, message))
        };
        match (&self.tls_cert, &self.tls_key) {
            (Some(_), None) => return needs("tls_cert", "tls_key"),
            (None, Some(_)) => return needs("tls_key", "tls_cert"),
            _ => {}
        }
        if self.tls_cert.is_none() {
            for key in ["tls_client_ca", "tls_client_auth", "tls_min_version"] {
                if !matches!(self.origins.get(key), Origin::Default) {
                    return needs(key, "tls_cert and tls_key");
                }
            }
        }
        if self.tls_client_ca.is_none()
            && !matches!(self.origins.get("tls_client_auth"), Origin::Default)
        {
            return needs("tls_client_auth", "tls_client_ca");
        }
        Ok(())
    }

    /// An error about top-level key `top`, or about `key` inside it
    /// (`static[0].path`), naming where the value came from: the file's
    /// position (`at`, else where `top`'s value is), the environment variable
    /// or the flag. `at` is a position in the text `top` came from.
    pub fn key_error(
        &self,
        top: &str,
        key: &str,
        at: Option<Location>,
        message: impl Into<String>,
    ) -> ConfigError {
        let message = message.into();
        match self.origins.get(top) {
            Origin::Env(variable) => ConfigError::Environment {
                variable: variable.clone(),
                location: at,
                message: if key == top {
                    message
                } else {
                    format!("key {key:?}: {message}")
                },
            },
            Origin::Flag(flag) => ConfigError::CommandLine {
                what: (*flag).to_owned(),
                message,
            },
            origin if self.from_command_line => ConfigError::CommandLine {
                what: match origin {
                    Origin::Argument => self.file.display().to_string(),
                    _ => format!("{} (key {key:?})", self.file.display()),
                },
                message,
            },
            origin => ConfigError::Invalid {
                file: self.file.clone(),
                location: at.or(match origin {
                    Origin::File(at) => Some(*at),
                    _ => None,
                }),
                key: key.to_owned(),
                message,
            },
        }
    }

    /// Where the value of `modules[index].<key>` is in the file, for errors
    /// reported after loading. Falls back to the entry's `{` for other keys,
    /// and to line 1, column 1 for an index past the end.
    pub fn locate(&self, index: usize, key: &str) -> Location {
        let Some(entry) = self.modules.get(index) else {
            return Location { line: 1, column: 1 };
        };
        let value = match key {
            "path" => entry.value_locations.path,
            "module" => entry.value_locations.module,
            "class" => entry.value_locations.class,
            "handler" => entry.value_locations.handler,
            "app" => entry.value_locations.app,
            "interface" => entry.value_locations.interface,
            "factory" => entry.value_locations.factory,
            "websocket" => entry.value_locations.websocket,
            _ => None,
        };
        value.unwrap_or(entry.location)
    }
}

/// Checks a listen address: an IP address, or something shaped like a host
/// name for the listener to resolve.
pub(crate) fn check_address(address: &str) -> Result<(), &'static str> {
    if address.parse::<IpAddr>().is_ok() {
        return Ok(());
    }
    if let Some(path) = address.strip_prefix("unix:") {
        // The socket path: absolute or relative to the current folder, and
        // short enough for `sun_path`.
        return if path.is_empty() || path.contains('\0') {
            Err("a Unix socket address must name a path, as in \"unix:/run/app/pyrs.sock\"")
        } else if path.len() > MAX_UNIX_PATH {
            Err("a Unix socket path must be at most 107 bytes long")
        } else {
            Ok(())
        };
    }
    let host_like = !address.is_empty()
        && address.len() <= 253
        && !address.starts_with(['-', '.'])
        && address
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '.');
    if host_like {
        Ok(())
    } else {
        Err("must be an IP address such as \"0.0.0.0\" or \"::1\", a host name, or \"unix:PATH\"")
    }
}

/// Checks a reactor thread count against `1..=MAX_THREAD_COUNT`.
pub(crate) fn check_thread_count(count: usize) -> Result<(), String> {
    if count == 0 {
        Err("must be at least 1".to_owned())
    } else if count > MAX_THREAD_COUNT {
        Err(format!("must be at most {MAX_THREAD_COUNT}"))
    } else {
        Ok(())
    }
}
