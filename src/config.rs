//! Project file loading. This module owns `project.pyrs`: its format (JSON
//! with `//` and `/* */` comments and trailing commas), the default and the
//! limits of every key, and the source positions that let every error name
//! `file:line:column` and the key at fault. Errors found after loading (a
//! Python module that fails to import, a missing class or handler) point back
//! into the file through [`Config::locate`] and [`ConfigError::at`]. It runs
//! once, on the main thread, before any socket is opened; it sends nothing and
//! receives nothing, and no part of it is on the request path.

use std::collections::HashMap;
use std::fmt;
use std::marker::PhantomData;
use std::net::IpAddr;
use std::path::{Path, PathBuf};

use serde::de::value::MapAccessDeserializer;
use serde::de::{MapAccess, Visitor};
use serde::Deserialize;
use thiserror::Error;

/// Largest request body accepted unless `max_body_size` says otherwise; a
/// bigger body is refused with 413 rather than buffered.
pub const DEFAULT_MAX_BODY_SIZE: u64 = 16 * 1024 * 1024;
/// Largest request head (request line plus headers) accepted unless
/// `max_head_size` says otherwise; a bigger head is answered with 431.
pub const DEFAULT_MAX_HEAD_SIZE: usize = 16 * 1024;
/// Smallest allowed `max_head_size`: below this, ordinary browser requests
/// would be refused.
pub const MIN_HEAD_SIZE: usize = 1024;
/// Largest allowed `max_head_size`: each connection may buffer this much
/// before a request is complete, so it bounds memory per connection.
pub const MAX_HEAD_SIZE: usize = 1024 * 1024;
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

/// Keys allowed at the top level of the file, in documentation order.
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
    "modules",
];

/// Keys allowed in each entry of `modules`.
pub const MODULE_KEYS: &[&str] = &["path", "module", "class", "handler"];

/// Deepest nesting the source scanner follows; serde_jsonrc refuses deeper
/// input anyway, and the bound keeps the scanner's recursion off the stack
/// limit.
const MAX_SCAN_DEPTH: usize = 128;

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
    /// Routes in file order; never empty.
    pub modules: Vec<ModuleEntry>,
    /// The project file as given on the command line.
    pub file: PathBuf,
    /// Absolute folder holding the file; Python imports resolve from here.
    pub project_dir: PathBuf,
}

/// One route of `modules`: requests whose path matches `path` go to
/// `module.class().handler(request)`.
#[derive(Debug, Clone, PartialEq)]
pub struct ModuleEntry {
    /// Exact route (`"/echo"`), prefix wildcard (`"/api/*"`) or catch-all
    /// (`"/*"`); always starts with `/`, and `*` only appears as a final `/*`.
    pub path: String,
    /// Python module name, dotted identifiers (`"main"`, `"app.handlers"`).
    pub module: String,
    /// Class name inside the module.
    pub class: String,
    /// Method name on an instance of the class.
    pub handler: String,
    /// Where this entry's `{` is in the file.
    pub location: Location,
    /// Where each key's value is in the file, when it could be found.
    pub value_locations: EntryLocations,
}

/// Source positions of one entry's values, used by [`Config::locate`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct EntryLocations {
    pub path: Option<Location>,
    pub module: Option<Location>,
    pub class: Option<Location>,
    pub handler: Option<Location>,
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
        ConfigError::Python {
            file: config.file.clone(),
            location: Some(config.locate(index, key)),
            key: path,
            message: message.into(),
        }
    }

    /// The project file this error is about.
    pub fn file(&self) -> &Path {
        match self {
            ConfigError::Read { file, .. }
            | ConfigError::Syntax { file, .. }
            | ConfigError::UnknownKey { file, .. }
            | ConfigError::Invalid { file, .. }
            | ConfigError::Python { file, .. } => file,
        }
    }

    /// Where in the file the error is, when that is known.
    pub fn location(&self) -> Option<Location> {
        match self {
            ConfigError::Read { .. } => None,
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
    /// Reads, parses and validates the project file at `path`.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|error| ConfigError::Read {
            file: path.to_path_buf(),
            error,
        })?;
        Config::from_str(&text, path)
    }

    /// Parses and validates `text` as the contents of `file`. `project_dir`
    /// is `file`'s folder, canonicalized when it exists, else made absolute.
    pub fn from_str(text: &str, file: &Path) -> Result<Config, ConfigError> {
        // Editors may save a byte order mark; it is invisible, so columns are
        // counted without it.
        let text = text.strip_prefix('\u{feff}').unwrap_or(text);
        let source = SourceMap::scan(text);
        let raw = parse(text, file, &source)?;
        build(raw, file, &source)
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
            _ => None,
        };
        value.unwrap_or(entry.location)
    }
}

impl ModuleEntry {
    /// An entry built in code rather than read from a file; its locations
    /// all point at line 1, column 1.
    pub fn new(path: &str, module: &str, class: &str, handler: &str) -> Self {
        ModuleEntry {
            path: path.to_owned(),
            module: module.to_owned(),
            class: class.to_owned(),
            handler: handler.to_owned(),
            location: Location { line: 1, column: 1 },
            value_locations: EntryLocations::default(),
        }
    }
}

/// Checks a listen address: an IP address, or something shaped like a host
/// name for the listener to resolve.
pub(crate) fn check_address(address: &str) -> Result<(), &'static str> {
    if address.parse::<IpAddr>().is_ok() {
        return Ok(());
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
        Err("must be an IP address such as \"0.0.0.0\" or \"::1\", or a host name")
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

/// Checks a route: `/exact`, `/prefix/*` or `/*`.
fn check_route(route: &str) -> Result<(), String> {
    const SHAPES: &str = "use \"/echo\" (exact), \"/api/*\" (prefix) or \"/*\" (everything)";
    if !route.starts_with('/') {
        return Err(format!("route {route:?} must start with \"/\"; {SHAPES}"));
    }
    if route.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err(format!(
            "route {route:?} must not contain spaces or control characters"
        ));
    }
    if route.contains(['?', '#']) {
        return Err(format!(
            "route {route:?} must not contain a query (\"?\") or a fragment (\"#\")"
        ));
    }
    let stars = route.matches('*').count();
    if stars > 1 || (stars == 1 && !route.ends_with("/*")) {
        return Err(format!(
            "route {route:?}: \"*\" is only allowed as a final \"/*\"; {SHAPES}"
        ));
    }
    Ok(())
}

/// True for a Python identifier: a letter or `_`, then letters, digits, `_`.
fn is_identifier(name: &str) -> bool {
    let mut chars = name.chars();
    match chars.next() {
        Some(first) if first == '_' || first.is_alphabetic() => {
            chars.all(|c| c == '_' || c.is_alphanumeric())
        }
        _ => false,
    }
}

/// The file as serde sees it. Every key but `modules`' fields has a default;
/// `null` is refused rather than read as "default".
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    #[serde(default = "default_address")]
    http_listen_address: String,
    #[serde(default = "default_port")]
    http_listen_port: u16,
    #[serde(default = "default_thread_count")]
    thread_count: usize,
    #[serde(default)]
    tcp_nodelay: bool,
    #[serde(default = "default_listen_backlog")]
    listen_backlog: i32,
    #[serde(default = "default_max_body_size")]
    max_body_size: u64,
    #[serde(default = "default_max_head_size")]
    max_head_size: usize,
    #[serde(default = "default_shutdown_timeout")]
    shutdown_timeout: f64,
    #[serde(default = "default_header_timeout")]
    header_timeout: f64,
    #[serde(default = "default_keepalive_timeout")]
    keepalive_timeout: f64,
    #[serde(default = "default_body_timeout")]
    body_timeout: f64,
    #[serde(default = "default_max_connections")]
    max_connections: usize,
    #[serde(default = "default_max_pipelined")]
    max_pipelined: usize,
    #[serde(default = "default_max_write_buffer")]
    max_write_buffer: usize,
    #[serde(default = "default_max_queued_requests")]
    max_queued_requests: usize,
    #[serde(default)]
    shed_queued_requests: usize,
    #[serde(default = "default_event_loop")]
    event_loop: String,
    #[serde(default)]
    workers: Option<serde_jsonrc::Value>,
    #[serde(default)]
    modules: Vec<Object<RawModule>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawModule {
    path: String,
    module: String,
    class: String,
    handler: String,
}

/// Deserializes `T` only from a JSON object. serde's derived structs also
/// accept an array of values in field order, which would let
/// `["/", "main", "Api", "echo"]` through without naming a single key.
struct Object<T>(T);

impl<'de, T: Deserialize<'de>> Deserialize<'de> for Object<T> {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct ObjectVisitor<T>(PhantomData<T>);

        impl<'de, T: Deserialize<'de>> Visitor<'de> for ObjectVisitor<T> {
            type Value = Object<T>;

            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("an object")
            }

            fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<Object<T>, A::Error> {
                T::deserialize(MapAccessDeserializer::new(map)).map(Object)
            }
        }

        deserializer.deserialize_map(ObjectVisitor(PhantomData))
    }
}

fn default_address() -> String {
    DEFAULT_HTTP_LISTEN_ADDRESS.to_owned()
}
fn default_port() -> u16 {
    DEFAULT_HTTP_LISTEN_PORT
}
fn default_thread_count() -> usize {
    DEFAULT_THREAD_COUNT
}
fn default_listen_backlog() -> i32 {
    DEFAULT_LISTEN_BACKLOG
}
fn default_max_body_size() -> u64 {
    DEFAULT_MAX_BODY_SIZE
}
fn default_max_head_size() -> usize {
    DEFAULT_MAX_HEAD_SIZE
}
fn default_shutdown_timeout() -> f64 {
    DEFAULT_SHUTDOWN_TIMEOUT
}
fn default_header_timeout() -> f64 {
    DEFAULT_HEADER_TIMEOUT
}
fn default_keepalive_timeout() -> f64 {
    DEFAULT_KEEPALIVE_TIMEOUT
}
fn default_body_timeout() -> f64 {
    DEFAULT_BODY_TIMEOUT
}
fn default_max_connections() -> usize {
    DEFAULT_MAX_CONNECTIONS
}
fn default_max_pipelined() -> usize {
    DEFAULT_MAX_PIPELINED
}
fn default_max_write_buffer() -> usize {
    DEFAULT_MAX_WRITE_BUFFER
}
fn default_max_queued_requests() -> usize {
    DEFAULT_MAX_QUEUED_REQUESTS
}
fn default_event_loop() -> String {
    "auto".to_owned()
}

/// Deserializes `text`, turning serde's errors into [`ConfigError`]s that
/// point at the key's position found by `source`.
fn parse(text: &str, file: &Path, source: &SourceMap) -> Result<RawConfig, ConfigError> {
    let mut de = serde_jsonrc::Deserializer::from_str(text);
    let Object(raw) =
        serde_path_to_error::deserialize(&mut de).map_err(|err| decode_error(err, file, source))?;
    de.end().map_err(|err| syntax_error(&err, file))?;
    Ok(raw)
}

/// serde_jsonrc's message without its " at line L column C" suffix.
fn bare_message(err: &serde_jsonrc::Error) -> String {
    let message = err.to_string();
    let suffix = format!(" at line {} column {}", err.line(), err.column());
    match message.strip_suffix(&suffix) {
        Some(bare) => bare.to_owned(),
        None => message,
    }
}

fn serde_location(err: &serde_jsonrc::Error) -> Location {
    Location {
        line: err.line().max(1),
        column: err.column().max(1),
    }
}

fn syntax_error(err: &serde_jsonrc::Error, file: &Path) -> ConfigError {
    ConfigError::Syntax {
        file: file.to_path_buf(),
        location: serde_location(err),
        message: bare_message(err),
    }
}

/// The name between the first pair of backticks in a serde message
/// (``unknown field `x`, expected ...`` gives `x`).
fn quoted_name(message: &str) -> Option<&str> {
    let (_, rest) = message.split_once('`')?;
    let (name, _) = rest.split_once('`')?;
    Some(name)
}

fn decode_error(
    err: serde_path_to_error::Error<serde_jsonrc::Error>,
    file: &Path,
    source: &SourceMap,
) -> ConfigError {
    let mut path = KeyPath::from_serde(err.path());
    let err = err.into_inner();
    if !err.is_data() {
        return syntax_error(&err, file);
    }
    let message = bare_message(&err);
    let file = file.to_path_buf();
    let fallback = serde_location(&err);

    if let Some(rest) = message.strip_prefix("unknown field ") {
        let key = quoted_name(rest).unwrap_or_default().to_owned();
        if matches!(path.0.last(), Some(Seg::Key(last)) if *last == key) {
            path.0.pop();
        }
        let candidates = if path.0.is_empty() {
            TOP_LEVEL_KEYS
        } else {
            MODULE_KEYS
        };
        return ConfigError::UnknownKey {
            location: source.key_at(&path.0, &key, 0).or(Some(fallback)),
            parent: (!path.0.is_empty()).then(|| path.to_string()),
            suggestion: suggest(&key, candidates).map(str::to_owned),
            key,
            file,
        };
    }
    if let Some(rest) = message.strip_prefix("missing field ") {
        let key = quoted_name(rest).unwrap_or_default();
        return ConfigError::Invalid {
            location: source.at(&path.0).or(Some(fallback)),
            key: path.to_string(),
            message: format!("missing key {key:?}"),
            file,
        };
    }
    if let Some(rest) = message.strip_prefix("duplicate field ") {
        let key = quoted_name(rest).unwrap_or_default().to_owned();
        if matches!(path.0.last(), Some(Seg::Key(last)) if *last == key) {
            path.0.pop();
        }
        let location = source.key_at(&path.0, &key, 1).or(Some(fallback));
        path.0.push(Seg::Key(key));
        return ConfigError::Invalid {
            location,
            key: path.to_string(),
            message: "is given more than once".to_owned(),
            file,
        };
    }

    let node = source.node(&path.0);
    let location = node.map(|node| node.at).or(Some(fallback));
    if path.0.is_empty() {
        let found = node.map_or("something else".to_owned(), Node::describe);
        return ConfigError::Syntax {
            file,
            location: location.unwrap_or(fallback),
            message: format!("the file must hold one JSON object {{ ... }}, found {found}"),
        };
    }
    let spec = KeySpec::of(&path);
    // An integer too large for u64 reaches serde as a float, so it is an
    // "invalid type" although the text holds an integer out of range.
    let out_of_range = message.starts_with("invalid value:")
        || (message.starts_with("invalid type:") && node.is_some_and(Node::is_integer));
    let message = match (node, spec) {
        (
            Some(node),
            Some(KeySpec {
                range: Some(range), ..
            }),
        ) if out_of_range => {
            format!("{range}, found {}", node.raw())
        }
        (Some(node), Some(spec)) if message.starts_with("invalid type:") => {
            format!("expected {}, found {}", spec.expected, node.describe())
        }
        _ => message,
    };
    ConfigError::Invalid {
        location,
        key: path.to_string(),
        message,
        file,
    }
}

/// What a key's value should look like, for type and range errors.
struct KeySpec {
    expected: &'static str,
    range: Option<&'static str>,
}

impl KeySpec {
    fn of(path: &KeyPath) -> Option<KeySpec> {
        let spec = |expected, range| Some(KeySpec { expected, range });
        match path.0.as_slice() {
            [Seg::Key(key)] => match key.as_str() {
                "http_listen_address" => spec("a string", None),
                "http_listen_port" => spec("an integer", Some("port must be 0..=65535")),
                "thread_count" => spec("an integer", Some("must be between 1 and 1024")),
                "tcp_nodelay" => spec("a boolean", None),
                "listen_backlog" => spec("an integer", Some("must be between 1 and 2147483647")),
                "max_body_size" => spec(
                    "an integer (bytes)",
                    Some("must be between 0 and 18446744073709551615 bytes"),
                ),
                "max_head_size" => spec(
                    "an integer (bytes)",
                    Some("must be between 1024 and 1048576 bytes"),
                ),
                "shutdown_timeout" | "header_timeout" | "keepalive_timeout" | "body_timeout" => {
                    spec("a number of seconds", None)
                }
                "max_connections"
                | "max_pipelined"
                | "max_queued_requests"
                | "shed_queued_requests" => spec("an integer", Some("must be 0 or more")),
                "max_write_buffer" => spec("an integer (bytes)", Some("must be 0 or more")),
                "event_loop" => spec("a string: \"auto\", \"asyncio\" or \"uvloop\"", None),
                "modules" => spec("an array of module entries", None),
                _ => None,
            },
            [Seg::Key(key), Seg::Index(_)] if key == "modules" => spec(
                "an object with \"path\", \"module\", \"class\" and \"handler\"",
                None,
            ),
            [Seg::Key(key), Seg::Index(_), Seg::Key(_)] if key == "modules" => {
                spec("a string", None)
            }
            _ => None,
        }
    }
}

/// Builds the [`Config`] from what serde read, checking what types cannot.
fn build(raw: RawConfig, file: &Path, source: &SourceMap) -> Result<Config, ConfigError> {
    let invalid = |path: &[Seg], message: String| ConfigError::Invalid {
        file: file.to_path_buf(),
        location: source.at(path),
        key: KeyPath(path.to_vec()).to_string(),
        message,
    };
    let top = |key: &str| vec![Seg::Key(key.to_owned())];

    check_address(&raw.http_listen_address)
        .map_err(|message| invalid(&top("http_listen_address"), message.to_owned()))?;
    check_thread_count(raw.thread_count)
        .map_err(|message| invalid(&top("thread_count"), message))?;
    if raw.listen_backlog < 1 {
        return Err(invalid(
            &top("listen_backlog"),
            "must be at least 1".to_owned(),
        ));
    }
    if raw.max_head_size < MIN_HEAD_SIZE {
        return Err(invalid(
            &top("max_head_size"),
            format!("must be at least {MIN_HEAD_SIZE} bytes"),
        ));
    }
    if raw.max_head_size > MAX_HEAD_SIZE {
        return Err(invalid(
            &top("max_head_size"),
            format!("must be at most {MAX_HEAD_SIZE} bytes (1 MiB)"),
        ));
    }
    if !raw.shutdown_timeout.is_finite() || raw.shutdown_timeout < 0.0 {
        return Err(invalid(
            &top("shutdown_timeout"),
            "must be a finite number of seconds, 0 or more".to_owned(),
        ));
    }
    for (key, seconds) in [
        ("header_timeout", raw.header_timeout),
        ("keepalive_timeout", raw.keepalive_timeout),
        ("body_timeout", raw.body_timeout),
    ] {
        if !seconds.is_finite() || seconds <= 0.0 {
            return Err(invalid(
                &top(key),
                "must be a finite number of seconds, more than 0".to_owned(),
            ));
        }
    }
    for (key, value, min) in [
        ("max_connections", raw.max_connections, raw.thread_count),
        ("max_pipelined", raw.max_pipelined, 1),
        ("max_write_buffer", raw.max_write_buffer, 4096),
        ("max_queued_requests", raw.max_queued_requests, 1),
    ] {
        if value < min {
            let what = if key == "max_connections" {
                format!("must be at least thread_count ({min})")
            } else {
                format!("must be at least {min}")
            };
            return Err(invalid(&top(key), what));
        }
    }
    let event_loop = match raw.event_loop.as_str() {
        "auto" => EventLoop::Auto,
        "asyncio" => EventLoop::Asyncio,
        "uvloop" => EventLoop::Uvloop,
        other => {
            return Err(invalid(
                &top("event_loop"),
                format!("must be \"auto\", \"asyncio\" or \"uvloop\", found {other:?}"),
            ))
        }
    };
    let workers = match &raw.workers {
        None => Workers::Count(1),
        Some(serde_jsonrc::Value::String(s)) if s == "auto" => Workers::Auto,
        Some(serde_jsonrc::Value::Number(n)) => match n.as_u64() {
            Some(n) if (1..=MAX_WORKERS as u64).contains(&n) => Workers::Count(n as usize),
            _ => {
                return Err(invalid(
                    &top("workers"),
                    format!("must be between 1 and {MAX_WORKERS}, or \"auto\", found {n}"),
                ))
            }
        },
        Some(other) => {
            return Err(invalid(
                &top("workers"),
                format!("expected an integer or \"auto\", found {other}"),
            ))
        }
    };
    if raw.modules.is_empty() {
        return Err(invalid(
            &top("modules"),
            "must list at least one module".to_owned(),
        ));
    }

    let mut modules = Vec::with_capacity(raw.modules.len());
    let mut routes: HashMap<String, Location> = HashMap::new();
    for (index, Object(entry)) in raw.modules.into_iter().enumerate() {
        let entry_path = vec![Seg::Key("modules".to_owned()), Seg::Index(index)];
        let key = |name: &str| {
            let mut path = entry_path.clone();
            path.push(Seg::Key(name.to_owned()));
            path
        };
        check_route(&entry.path).map_err(|message| invalid(&key("path"), message))?;
        if !entry.module.split('.').all(is_identifier) {
            return Err(invalid(
                &key("module"),
                format!(
                    "{:?} is not a Python module name such as \"main\" or \"app.handlers\"",
                    entry.module
                ),
            ));
        }
        for (name, value) in [("class", &entry.class), ("handler", &entry.handler)] {
            if !is_identifier(value) {
                return Err(invalid(
                    &key(name),
                    format!("{value:?} is not a Python identifier such as \"Api\" or \"echo\""),
                ));
            }
        }

        let location = source
            .at(&entry_path)
            .unwrap_or(Location { line: 1, column: 1 });
        let value_locations = EntryLocations {
            path: source.at(&key("path")),
            module: source.at(&key("module")),
            class: source.at(&key("class")),
            handler: source.at(&key("handler")),
        };
        let route_at = value_locations.path.unwrap_or(location);
        if let Some(first) = routes.get(&entry.path) {
            return Err(invalid(
                &key("path"),
                format!(
                    "duplicate route {:?} (first defined at line {})",
                    entry.path, first.line
                ),
            ));
        }
        routes.insert(entry.path.clone(), route_at);
        modules.push(ModuleEntry {
            path: entry.path,
            module: entry.module,
            class: entry.class,
            handler: entry.handler,
            location,
            value_locations,
        });
    }

    let folder = match file.parent() {
        Some(parent) if !parent.as_os_str().is_empty() => parent,
        _ => Path::new("."),
    };
    let project_dir = folder
        .canonicalize()
        .or_else(|_| std::path::absolute(folder))
        .unwrap_or_else(|_| folder.to_path_buf());

    Ok(Config {
        http_listen_address: raw.http_listen_address,
        http_listen_port: raw.http_listen_port,
        thread_count: raw.thread_count,
        tcp_nodelay: raw.tcp_nodelay,
        listen_backlog: raw.listen_backlog,
        max_body_size: raw.max_body_size,
        max_head_size: raw.max_head_size,
        shutdown_timeout: raw.shutdown_timeout,
        header_timeout: raw.header_timeout,
        keepalive_timeout: raw.keepalive_timeout,
        body_timeout: raw.body_timeout,
        max_connections: raw.max_connections,
        max_pipelined: raw.max_pipelined,
        max_write_buffer: raw.max_write_buffer,
        max_queued_requests: raw.max_queued_requests,
        shed_queued_requests: raw.shed_queued_requests,
        event_loop,
        workers,
        modules,
        file: file.to_path_buf(),
        project_dir,
    })
}

/// One step of a key path: an object key or an array index.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Seg {
    Key(String),
    Index(usize),
}

/// A key path such as `modules[1].path`.
#[derive(Debug, Clone, PartialEq, Eq)]
struct KeyPath(Vec<Seg>);

impl KeyPath {
    fn from_serde(path: &serde_path_to_error::Path) -> KeyPath {
        let segs = path
            .iter()
            .filter_map(|seg| match seg {
                serde_path_to_error::Segment::Seq { index } => Some(Seg::Index(*index)),
                serde_path_to_error::Segment::Map { key } => Some(Seg::Key(key.clone())),
                _ => None,
            })
            .collect();
        KeyPath(segs)
    }
}

impl fmt::Display for KeyPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, seg) in self.0.iter().enumerate() {
            match seg {
                Seg::Key(key) if i == 0 => f.write_str(key)?,
                Seg::Key(key) => write!(f, ".{key}")?,
                Seg::Index(index) => write!(f, "[{index}]")?,
            }
        }
        Ok(())
    }
}

/// Positions of every value and key in the file, found by [`Scanner`].
struct SourceMap {
    root: Option<Node>,
}

/// A scanned value: where it starts and what it is.
#[derive(Debug)]
struct Node {
    at: Location,
    kind: Kind,
}

#[derive(Debug)]
enum Kind {
    Object(Vec<Member>),
    Array(Vec<Node>),
    String,
    Bool,
    Null,
    Number { raw: String, integer: bool },
    Other(String),
}

#[derive(Debug)]
struct Member {
    key: String,
    key_at: Location,
    value: Node,
}

impl Node {
    /// What this value is, for "expected X, found Y".
    fn describe(&self) -> String {
        match &self.kind {
            Kind::Object(_) => "an object".to_owned(),
            Kind::Array(_) => "an array".to_owned(),
            Kind::String => "a string".to_owned(),
            Kind::Bool => "a boolean".to_owned(),
            Kind::Null => "null".to_owned(),
            Kind::Number { raw, integer: true } => format!("the integer {raw}"),
            Kind::Number {
                raw,
                integer: false,
            } => format!("the number {raw}"),
            Kind::Other(raw) => format!("{raw:?}"),
        }
    }

    fn is_integer(&self) -> bool {
        matches!(self.kind, Kind::Number { integer: true, .. })
    }

    /// The value as written, for scalars; a description otherwise.
    fn raw(&self) -> String {
        match &self.kind {
            Kind::Number { raw, .. } | Kind::Other(raw) => raw.clone(),
            _ => self.describe(),
        }
    }
}

impl SourceMap {
    fn scan(text: &str) -> SourceMap {
        let mut scanner = Scanner::new(text);
        scanner.skip_trivia();
        let root = scanner.peek().map(|_| scanner.value(0));
        SourceMap { root }
    }

    /// The value at `path`, following the first occurrence of each key.
    fn node(&self, path: &[Seg]) -> Option<&Node> {
        let mut node = self.root.as_ref()?;
        for seg in path {
            node = match (seg, &node.kind) {
                (Seg::Key(key), Kind::Object(members)) => {
                    &members.iter().find(|member| member.key == *key)?.value
                }
                (Seg::Index(index), Kind::Array(items)) => items.get(*index)?,
                _ => return None,
            };
        }
        Some(node)
    }

    fn at(&self, path: &[Seg]) -> Option<Location> {
        self.node(path).map(|node| node.at)
    }

    /// Where the `nth` (0-based) occurrence of `key` is written in the object
    /// at `object`.
    fn key_at(&self, object: &[Seg], key: &str, nth: usize) -> Option<Location> {
        match &self.node(object)?.kind {
            Kind::Object(members) => members
                .iter()
                .filter(|member| member.key == key)
                .nth(nth)
                .map(|member| member.key_at),
            _ => None,
        }
    }
}

/// A lenient walk over JSON with comments that records where things are. It
/// never fails: on text it does not understand it stops and keeps what it
/// has, since serde_jsonrc reports syntax errors itself.
struct Scanner {
    chars: Vec<char>,
    pos: usize,
    line: usize,
    column: usize,
    stopped: bool,
}

impl Scanner {
    fn new(text: &str) -> Scanner {
        Scanner {
            chars: text.chars().collect(),
            pos: 0,
            line: 1,
            column: 1,
            stopped: false,
        }
    }

    fn peek(&self) -> Option<char> {
        self.chars.get(self.pos).copied()
    }

    fn peek_second(&self) -> Option<char> {
        self.chars.get(self.pos + 1).copied()
    }

    fn here(&self) -> Location {
        Location {
            line: self.line,
            column: self.column,
        }
    }

    fn bump(&mut self) -> Option<char> {
        let c = self.peek()?;
        self.pos += 1;
        if c == '\n' {
            self.line += 1;
            self.column = 1;
        } else {
            self.column += 1;
        }
        Some(c)
    }

    /// Skips whitespace, `// line` and `/* block */` comments.
    fn skip_trivia(&mut self) {
        loop {
            match (self.peek(), self.peek_second()) {
                (Some(c), _) if c.is_whitespace() => {
                    self.bump();
                }
                (Some('/'), Some('/')) => {
                    while let Some(c) = self.bump() {
                        if c == '\n' {
                            break;
                        }
                    }
                }
                (Some('/'), Some('*')) => {
                    self.bump();
                    self.bump();
                    loop {
                        match self.bump() {
                            None => {
                                self.stopped = true;
                                return;
                            }
                            Some('*') if self.peek() == Some('/') => {
                                self.bump();
                                break;
                            }
                            Some(_) => {}
                        }
                    }
                }
                _ => return,
            }
        }
    }

    fn value(&mut self, depth: usize) -> Node {
        let at = self.here();
        let kind = match self.peek() {
            _ if depth > MAX_SCAN_DEPTH => {
                self.stopped = true;
                Kind::Other(String::new())
            }
            Some('{') => self.object(depth),
            Some('[') => self.array(depth),
            Some('"') => {
                self.string();
                Kind::String
            }
            Some(c) if c == '-' || c.is_ascii_digit() => {
                let raw = self.take_while(|c| c.is_ascii_digit() || "+-.eE".contains(c));
                let integer = !raw.contains(['.', 'e', 'E']);
                Kind::Number { raw, integer }
            }
            Some(c) if c.is_alphabetic() => {
                let word = self.take_while(|c| c.is_alphanumeric() || c == '_');
                match word.as_str() {
                    "true" | "false" => Kind::Bool,
                    "null" => Kind::Null,
                    _ => Kind::Other(word),
                }
            }
            _ => {
                self.stopped = true;
                Kind::Other(String::new())
            }
        };
        Node { at, kind }
    }

    fn take_while(&mut self, keep: impl Fn(char) -> bool) -> String {
        let mut out = String::new();
        while let Some(c) = self.peek().filter(|c| keep(*c)) {
            out.push(c);
            self.bump();
        }
        out
    }

    fn object(&mut self, depth: usize) -> Kind {
        self.bump();
        let mut members = Vec::new();
        loop {
            self.skip_trivia();
            if self.stopped {
                break;
            }
            match self.peek() {
                Some('}') => {
                    self.bump();
                    break;
                }
                Some(',') => {
                    self.bump();
                }
                Some('"') => {
                    let key_at = self.here();
                    let key = self.string();
                    self.skip_trivia();
                    if self.peek() != Some(':') {
                        // Keep the key: serde may still report it as unknown.
                        let value = Node {
                            at: self.here(),
                            kind: Kind::Other(String::new()),
                        };
                        members.push(Member { key, key_at, value });
                        self.stopped = true;
                        break;
                    }
                    self.bump();
                    self.skip_trivia();
                    let value = self.value(depth + 1);
                    members.push(Member { key, key_at, value });
                }
                _ => {
                    self.stopped = true;
                    break;
                }
            }
        }
        Kind::Object(members)
    }

    fn array(&mut self, depth: usize) -> Kind {
        self.bump();
        let mut items = Vec::new();
        loop {
            self.skip_trivia();
            if self.stopped {
                break;
            }
            match self.peek() {
                Some(']') => {
                    self.bump();
                    break;
                }
                Some(',') => {
                    self.bump();
                }
                Some(_) => items.push(self.value(depth + 1)),
                None => {
                    self.stopped = true;
                    break;
                }
            }
        }
        Kind::Array(items)
    }

    /// Reads a string starting at its opening quote and returns its decoded
    /// contents, so keys compare equal to what serde saw.
    fn string(&mut self) -> String {
        self.bump();
        let mut out = String::new();
        loop {
            match self.bump() {
                None => {
                    self.stopped = true;
                    break;
                }
                Some('"') => break,
                Some('\\') => match self.bump() {
                    Some('n') => out.push('\n'),
                    Some('t') => out.push('\t'),
                    Some('r') => out.push('\r'),
                    Some('b') => out.push('\u{8}'),
                    Some('f') => out.push('\u{c}'),
                    Some('u') => {
                        let decoded = self.unicode_escape();
                        out.push(decoded);
                    }
                    Some(c) => out.push(c),
                    None => {
                        self.stopped = true;
                        break;
                    }
                },
                Some(c) => out.push(c),
            }
        }
        out
    }

    /// Decodes the digits of a `\u` escape, joining a surrogate pair.
    fn unicode_escape(&mut self) -> char {
        let high = self.hex4();
        if (0xD800..0xDC00).contains(&high)
            && self.peek() == Some('\\')
            && self.peek_second() == Some('u')
        {
            self.bump();
            self.bump();
            let low = self.hex4();
            let joined = 0x10000 + ((high - 0xD800) << 10) + (low.wrapping_sub(0xDC00) & 0x3FF);
            return char::from_u32(joined).unwrap_or(char::REPLACEMENT_CHARACTER);
        }
        char::from_u32(high).unwrap_or(char::REPLACEMENT_CHARACTER)
    }

    fn hex4(&mut self) -> u32 {
        let mut value = 0;
        for _ in 0..4 {
            match self.peek().and_then(|c| c.to_digit(16)) {
                Some(digit) => {
                    value = value * 16 + digit;
                    self.bump();
                }
                None => return u32::MAX,
            }
        }
        value
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const TEMPLATE: &str = r#"{
  "http_listen_address": "127.0.0.1", /* [optional]. Default is "0.0.0.0" */
  "http_listen_port": 8000, /* [optional]. Default is "8094" */
  "thread_count": 2, /* [optional]. Default is "2" */
  "tcp_nodelay": false, /* [optional]. Default is "false" */
  "listen_backlog": 1, /* [optional]. The maximum length to which the queue of pending may grow. Default is "10" */

  "modules": [ /* Python handlers */

    {
      "path": "/echo", /* handlers for http://url:port/echo */
      "module": "main", /* name of python module */
      "class": "Api", /* class name */
      "handler": "echo_request" /* handler method name */
    },

    {
      "path": "/*",
      "module": "main",
      "class": "Api",
      "handler": "default_request"
    }

  ]
}
"#;

    const ONE_MODULE: &str = r#"
    "modules": [{"path": "/", "module": "main", "class": "Api", "handler": "h"}]"#;

    fn load(text: &str) -> Result<Config, ConfigError> {
        Config::from_str(text, Path::new("project.pyrs"))
    }

    fn error(text: &str) -> String {
        match load(text) {
            Ok(config) => panic!("expected an error, loaded {config:?}"),
            Err(err) => err.to_string(),
        }
    }

    fn at(line: usize, column: usize) -> Location {
        Location { line, column }
    }

    #[test]
    fn loads_readme_template_unchanged() {
        let config = load(TEMPLATE).expect("template loads");
        assert_eq!(config.http_listen_address, "127.0.0.1");
        assert_eq!(config.http_listen_port, 8000);
        assert_eq!(config.thread_count, 2);
        assert!(!config.tcp_nodelay);
        assert_eq!(config.listen_backlog, 1);
        assert_eq!(config.max_body_size, DEFAULT_MAX_BODY_SIZE);
        assert_eq!(config.max_head_size, DEFAULT_MAX_HEAD_SIZE);
        assert_eq!(config.shutdown_timeout, 30.0);
        assert_eq!(config.modules.len(), 2);
        let echo = &config.modules[0];
        assert_eq!(
            (
                echo.path.as_str(),
                echo.module.as_str(),
                echo.class.as_str()
            ),
            ("/echo", "main", "Api")
        );
        assert_eq!(echo.handler, "echo_request");
        assert_eq!(echo.location, at(10, 5));
        assert_eq!(config.modules[1].path, "/*");
        assert_eq!(config.modules[1].handler, "default_request");
        assert_eq!(config.modules[1].location, at(17, 5));
        assert_eq!(config.file, PathBuf::from("project.pyrs"));
        assert!(config.project_dir.is_absolute());
    }

    #[test]
    fn applies_defaults_for_missing_keys() {
        let config = load(&format!("{{{ONE_MODULE}}}")).expect("loads");
        assert_eq!(config.http_listen_address, "0.0.0.0");
        assert_eq!(config.http_listen_port, 8094);
        assert_eq!(config.thread_count, 2);
        assert!(!config.tcp_nodelay);
        assert_eq!(config.listen_backlog, 10);
        assert_eq!(config.max_body_size, 16 * 1024 * 1024);
        assert_eq!(config.max_head_size, 16 * 1024);
        assert_eq!(config.shutdown_timeout, 30.0);
    }

    #[test]
    fn reads_new_keys() {
        let text = format!(
            "{{\"max_body_size\": 1024, \"max_head_size\": 2048, \
             \"shutdown_timeout\": 2.5, \"tcp_nodelay\": true,{ONE_MODULE}}}"
        );
        let config = load(&text).expect("loads");
        assert_eq!(config.max_body_size, 1024);
        assert_eq!(config.max_head_size, 2048);
        assert_eq!(config.shutdown_timeout, 2.5);
        assert!(config.tcp_nodelay);
    }

    #[test]
    fn reads_workers_and_event_loop() {
        let config = load(&format!(
            "{{\"workers\": 3, \"event_loop\": \"asyncio\",{ONE_MODULE}}}"
        ))
        .expect("loads");
        assert_eq!(config.workers, Workers::Count(3));
        assert_eq!(config.event_loop, EventLoop::Asyncio);
        let config = load(&format!("{{\"workers\": \"auto\",{ONE_MODULE}}}")).expect("loads");
        assert_eq!(config.workers, Workers::Auto);
        let config = load(&format!("{{{ONE_MODULE}}}")).expect("loads");
        assert_eq!(config.workers, Workers::Count(1));
        assert_eq!(config.event_loop, EventLoop::Auto);
    }

    #[test]
    fn rejects_bad_workers() {
        for (value, message) in [
            ("0", "must be between 1 and 1024, or \"auto\", found 0"),
            (
                "\"many\"",
                "expected an integer or \"auto\", found \"many\"",
            ),
        ] {
            let text = format!("{{\"workers\": {value},{ONE_MODULE}}}");
            let err = load(&text).expect_err("refused").to_string();
            assert_eq!(
                err,
                format!("project.pyrs:1:13: key \"workers\": {message}")
            );
        }
    }

    #[test]
    fn rejects_unknown_event_loop() {
        let text = format!("{{\"event_loop\": \"trio\",{ONE_MODULE}}}");
        let err = load(&text).expect_err("refused").to_string();
        assert!(err.contains("key \"event_loop\": must be"), "{err}");
    }

    #[test]
    fn accepts_integer_shutdown_timeout() {
        let config = load(&format!("{{\"shutdown_timeout\": 0,{ONE_MODULE}}}")).expect("loads");
        assert_eq!(config.shutdown_timeout, 0.0);
    }

    #[test]
    fn accepts_line_comments_and_trailing_commas() {
        let text = "// project\n{\n  \"thread_count\": 4, // four\n  \"modules\": [\n    \
                    {\"path\": \"/api/*\", \"module\": \"app.handlers\", \"class\": \"_Api\", \
                    \"handler\": \"go\",},\n  ],\n}\n// end";
        let config = load(text).expect("loads");
        assert_eq!(config.thread_count, 4);
        assert_eq!(config.modules[0].path, "/api/*");
        assert_eq!(config.modules[0].module, "app.handlers");
    }

    #[test]
    fn rejects_unknown_key_with_suggestion() {
        let text = format!("{{\n  \"tcp_nodelay\": true,\n  \"thread_cout\": 4,{ONE_MODULE}}}");
        assert_eq!(
            error(&text),
            "project.pyrs:3:3: unknown key \"thread_cout\" (did you mean \"thread_count\"?)"
        );
    }

    #[test]
    fn suggests_full_key_for_one_word() {
        let text = format!("{{\"port\": 1,{ONE_MODULE}}}");
        assert_eq!(
            error(&text),
            "project.pyrs:1:2: unknown key \"port\" (did you mean \"http_listen_port\"?)"
        );
    }

    #[test]
    fn rejects_unknown_key_without_suggestion() {
        let text = format!("{{\"colour\": 1,{ONE_MODULE}}}");
        assert_eq!(error(&text), "project.pyrs:1:2: unknown key \"colour\"");
    }

    #[test]
    fn rejects_unknown_module_key_with_suggestion() {
        let text = "{\"modules\": [\n  {\"path\": \"/\", \"module\": \"m\", \"class\": \"C\",\n   \
                    \"hndler\": \"h\"}]}";
        assert_eq!(
            error(text),
            "project.pyrs:3:4: key \"modules[0]\": unknown key \"hndler\" \
             (did you mean \"handler\"?)"
        );
    }

    #[test]
    fn rejects_port_out_of_range() {
        let text = format!("{{\n\n\n  \"http_listen_port\": 70000,{ONE_MODULE}}}");
        assert_eq!(
            error(&text),
            "project.pyrs:4:23: key \"http_listen_port\": port must be 0..=65535, found 70000"
        );
    }

    #[test]
    fn rejects_wrong_type_boolean() {
        let text = format!("{{\n  \"tcp_nodelay\": \"yes\",{ONE_MODULE}}}");
        assert_eq!(
            error(&text),
            "project.pyrs:2:18: key \"tcp_nodelay\": expected a boolean, found a string"
        );
    }

    #[test]
    fn rejects_fractional_thread_count() {
        let text = format!("{{\"thread_count\": 2.5,{ONE_MODULE}}}");
        assert_eq!(
            error(&text),
            "project.pyrs:1:18: key \"thread_count\": expected an integer, found the number 2.5"
        );
    }

    #[test]
    fn rejects_null_value() {
        let text = format!("{{\"http_listen_address\": null,{ONE_MODULE}}}");
        assert_eq!(
            error(&text),
            "project.pyrs:1:25: key \"http_listen_address\": expected a string, found null"
        );
    }

    #[test]
    fn rejects_zero_thread_count() {
        let text = format!("{{\n\n\n\n  \"thread_count\": 0,{ONE_MODULE}}}");
        assert_eq!(
            error(&text),
            "project.pyrs:5:19: key \"thread_count\": must be at least 1"
        );
    }

    #[test]
    fn rejects_too_many_threads() {
        let text = format!("{{\"thread_count\": 1025,{ONE_MODULE}}}");
        assert_eq!(
            error(&text),
            "project.pyrs:1:18: key \"thread_count\": must be at most 1024"
        );
    }

    #[test]
    fn rejects_negative_thread_count() {
        let text = format!("{{\"thread_count\": -1,{ONE_MODULE}}}");
        assert_eq!(
            error(&text),
            "project.pyrs:1:18: key \"thread_count\": must be between 1 and 1024, found -1"
        );
    }

    #[test]
    fn rejects_zero_listen_backlog() {
        let text = format!("{{\"listen_backlog\": 0,{ONE_MODULE}}}");
        assert_eq!(
            error(&text),
            "project.pyrs:1:20: key \"listen_backlog\": must be at least 1"
        );
    }

    #[test]
    fn rejects_small_max_head_size() {
        let text = format!("{{\"max_head_size\": 100,{ONE_MODULE}}}");
        assert_eq!(
            error(&text),
            "project.pyrs:1:19: key \"max_head_size\": must be at least 1024 bytes"
        );
    }

    #[test]
    fn rejects_large_max_head_size() {
        let text = format!("{{\"max_head_size\": 1048577,{ONE_MODULE}}}");
        assert_eq!(
            error(&text),
            "project.pyrs:1:19: key \"max_head_size\": must be at most 1048576 bytes (1 MiB)"
        );
    }

    #[test]
    fn rejects_negative_max_body_size() {
        let text = format!("{{\"max_body_size\": -5,{ONE_MODULE}}}");
        assert_eq!(
            error(&text),
            "project.pyrs:1:19: key \"max_body_size\": \
             must be between 0 and 18446744073709551615 bytes, found -5"
        );
    }

    #[test]
    fn rejects_negative_shutdown_timeout() {
        let text = format!("{{\"shutdown_timeout\": -1.5,{ONE_MODULE}}}");
        assert_eq!(
            error(&text),
            "project.pyrs:1:22: key \"shutdown_timeout\": \
             must be a finite number of seconds, 0 or more"
        );
    }

    #[test]
    fn rejects_bad_listen_address() {
        let text = format!("{{\"http_listen_address\": \"0.0.0.0 \",{ONE_MODULE}}}");
        assert_eq!(
            error(&text),
            "project.pyrs:1:25: key \"http_listen_address\": must be an IP address \
             such as \"0.0.0.0\" or \"::1\", or a host name"
        );
    }

    #[test]
    fn accepts_host_name_and_ipv6_address() {
        for address in ["localhost", "::1", "example.com"] {
            let text = format!("{{\"http_listen_address\": \"{address}\",{ONE_MODULE}}}");
            assert_eq!(load(&text).expect("loads").http_listen_address, address);
        }
    }

    #[test]
    fn rejects_missing_modules() {
        assert_eq!(
            error("{\"thread_count\": 2}"),
            "project.pyrs: key \"modules\": must list at least one module"
        );
    }

    #[test]
    fn rejects_empty_modules() {
        assert_eq!(
            error("{\n  \"modules\": [ ]\n}"),
            "project.pyrs:2:14: key \"modules\": must list at least one module"
        );
    }

    #[test]
    fn rejects_modules_of_wrong_type() {
        assert_eq!(
            error("{\"modules\": {}}"),
            "project.pyrs:1:13: key \"modules\": expected an array of module entries, \
             found an object"
        );
    }

    #[test]
    fn rejects_module_entry_of_wrong_type() {
        assert_eq!(
            error("{\"modules\": [\"main.Api\"]}"),
            "project.pyrs:1:14: key \"modules[0]\": expected an object with \"path\", \
             \"module\", \"class\" and \"handler\", found a string"
        );
    }

    #[test]
    fn rejects_module_value_of_wrong_type() {
        let text = "{\"modules\": [{\"path\": \"/\", \"module\": 3, \"class\": \"C\", \
                    \"handler\": \"h\"}]}";
        assert_eq!(
            error(text),
            "project.pyrs:1:38: key \"modules[0].module\": expected a string, found the integer 3"
        );
    }

    #[test]
    fn rejects_duplicate_route() {
        let text = "{\n  \"modules\": [\n    {\n      \"path\": \"/echo\",\n      \
                    \"module\": \"m\", \"class\": \"C\", \"handler\": \"a\"\n    },\n    \
                    {\"path\": \"/echo\", \"module\": \"m\", \"class\": \"C\", \"handler\": \"b\"}\n  \
                    ]\n}";
        assert_eq!(
            error(text),
            "project.pyrs:7:14: key \"modules[1].path\": duplicate route \"/echo\" \
             (first defined at line 4)"
        );
    }

    #[test]
    fn rejects_missing_handler() {
        let text =
            "{\n  \"modules\": [\n    {\"path\": \"/\", \"module\": \"m\", \"class\": \"C\"}\n]}";
        assert_eq!(
            error(text),
            "project.pyrs:3:5: key \"modules[0]\": missing key \"handler\""
        );
    }

    #[test]
    fn rejects_duplicate_key() {
        let text = format!("{{\"thread_count\": 2,\n \"thread_count\": 3,{ONE_MODULE}}}");
        assert_eq!(
            error(&text),
            "project.pyrs:2:2: key \"thread_count\": is given more than once"
        );
    }

    #[test]
    fn rejects_route_without_leading_slash() {
        let text = "{\"modules\": [{\"path\": \"echo\", \"module\": \"m\", \"class\": \"C\", \
                    \"handler\": \"h\"}]}";
        assert_eq!(
            error(text),
            "project.pyrs:1:23: key \"modules[0].path\": route \"echo\" must start with \"/\"; \
             use \"/echo\" (exact), \"/api/*\" (prefix) or \"/*\" (everything)"
        );
    }

    #[test]
    fn rejects_star_inside_route() {
        let text = "{\"modules\": [{\"path\": \"/a*\", \"module\": \"m\", \"class\": \"C\", \
                    \"handler\": \"h\"}]}";
        assert_eq!(
            error(text),
            "project.pyrs:1:23: key \"modules[0].path\": route \"/a*\": \"*\" is only allowed \
             as a final \"/*\"; use \"/echo\" (exact), \"/api/*\" (prefix) or \"/*\" (everything)"
        );
    }

    #[test]
    fn rejects_route_with_query() {
        let text = "{\"modules\": [{\"path\": \"/a?b\", \"module\": \"m\", \"class\": \"C\", \
                    \"handler\": \"h\"}]}";
        assert!(error(text).contains("must not contain a query"));
    }

    #[test]
    fn rejects_bad_module_name() {
        let text = "{\"modules\": [{\"path\": \"/\", \"module\": \"main.\", \"class\": \"C\", \
                    \"handler\": \"h\"}]}";
        assert_eq!(
            error(text),
            "project.pyrs:1:38: key \"modules[0].module\": \"main.\" is not a Python module \
             name such as \"main\" or \"app.handlers\""
        );
    }

    #[test]
    fn rejects_empty_class() {
        let text = "{\"modules\": [{\"path\": \"/\", \"module\": \"m\", \"class\": \"\", \
                    \"handler\": \"h\"}]}";
        assert_eq!(
            error(text),
            "project.pyrs:1:52: key \"modules[0].class\": \"\" is not a Python identifier \
             such as \"Api\" or \"echo\""
        );
    }

    #[test]
    fn rejects_handler_with_dash() {
        let text = "{\"modules\": [{\"path\": \"/\", \"module\": \"m\", \"class\": \"C\", \
                    \"handler\": \"echo-request\"}]}";
        assert_eq!(
            error(text),
            "project.pyrs:1:68: key \"modules[0].handler\": \"echo-request\" is not a Python \
             identifier such as \"Api\" or \"echo\""
        );
    }

    #[test]
    fn reports_syntax_error_position() {
        let text = "{\n  \"thread_count\": 2\n  \"modules\": []\n}";
        assert_eq!(error(text), "project.pyrs:3:3: expected `,` or `}`");
    }

    #[test]
    fn reports_unterminated_block_comment() {
        let text = format!("{{{ONE_MODULE} /* open");
        assert!(error(&text).contains("EOF while parsing a block comment"));
    }

    #[test]
    fn reports_trailing_characters() {
        let text = format!("{{{ONE_MODULE}}} x");
        assert!(error(&text).ends_with(": trailing characters"));
    }

    #[test]
    fn rejects_top_level_array() {
        assert_eq!(
            error("  []"),
            "project.pyrs:1:3: the file must hold one JSON object { ... }, found an array"
        );
    }

    #[test]
    fn rejects_module_entry_as_array() {
        assert_eq!(
            error("{\"modules\": [[\"/\", \"m\", \"C\", \"h\"]]}"),
            "project.pyrs:1:14: key \"modules[0]\": expected an object with \"path\", \
             \"module\", \"class\" and \"handler\", found an array"
        );
    }

    #[test]
    fn rejects_huge_max_body_size() {
        let text = format!("{{\"max_body_size\": 99999999999999999999999,{ONE_MODULE}}}");
        assert_eq!(
            error(&text),
            "project.pyrs:1:19: key \"max_body_size\": must be between 0 and \
             18446744073709551615 bytes, found 99999999999999999999999"
        );
    }

    #[test]
    fn points_at_unknown_key_missing_its_colon() {
        assert_eq!(
            error("{\n  \"a\" 1}"),
            "project.pyrs:2:3: unknown key \"a\""
        );
    }

    #[test]
    fn reports_empty_file() {
        assert_eq!(error(""), "project.pyrs:1:1: EOF while parsing a value");
    }

    #[test]
    fn reports_missing_file() {
        let err = Config::load(Path::new("/nonexistent/project.pyrs")).expect_err("missing");
        assert_eq!(
            err.to_string(),
            "cannot read /nonexistent/project.pyrs: No such file or directory (os error 2)"
        );
        assert_eq!(err.location(), None);
    }

    #[test]
    fn error_position_ignores_comments_and_strings() {
        let text = "{ /* \"thread_count\": 0, { [ */ \"modules\": [{\"path\": \"/a\\\"//b/*\", \
                    \"module\": \"m\", \"class\": \"C\", \"handler\": \"h\"}],\n  \
                    // \"thread_count\": 9\n  \"thread_count\": 0,\n}";
        assert_eq!(
            error(text),
            "project.pyrs:3:19: key \"thread_count\": must be at least 1"
        );
    }

    #[test]
    fn unknown_key_position_survives_later_syntax_error() {
        assert_eq!(
            error("{\"thread_cout\": 1, \"x\": [,,"),
            "project.pyrs:1:2: unknown key \"thread_cout\" (did you mean \"thread_count\"?)"
        );
    }

    #[test]
    fn matches_escaped_unknown_key() {
        assert_eq!(
            error("{\n \"t\\u0068read_cout\": 1}"),
            "project.pyrs:2:2: unknown key \"thread_cout\" (did you mean \"thread_count\"?)"
        );
    }

    #[test]
    fn survives_deep_nesting() {
        let text = format!("{{\"modules\": {}", "[".repeat(100_000));
        assert!(error(&text).starts_with("project.pyrs:"));
    }

    #[test]
    fn locates_module_values() {
        let config = load(TEMPLATE).expect("template loads");
        assert_eq!(config.locate(0, "path"), at(11, 15));
        assert_eq!(config.locate(0, "module"), at(12, 17));
        assert_eq!(config.locate(1, "class"), at(20, 16));
        assert_eq!(config.locate(1, "handler"), at(21, 18));
        assert_eq!(config.locate(1, "other"), at(17, 5));
        assert_eq!(config.locate(9, "path"), at(1, 1));
    }

    #[test]
    fn builds_python_error_at_key() {
        let config = load(TEMPLATE).expect("template loads");
        let err = ConfigError::at(&config, 1, "class", "module \"main\" has no class \"Api\"");
        assert_eq!(
            err.to_string(),
            "project.pyrs:20:16: key \"modules[1].class\": module \"main\" has no class \"Api\""
        );
        let err = ConfigError::at(&config, 0, "", "failed");
        assert_eq!(
            err.to_string(),
            "project.pyrs:10:5: key \"modules[0]\": failed"
        );
    }

    #[test]
    fn suggests_only_close_keys() {
        assert_eq!(suggest("thread_cout", TOP_LEVEL_KEYS), Some("thread_count"));
        assert_eq!(
            suggest("THREAD_COUNT", TOP_LEVEL_KEYS),
            Some("thread_count")
        );
        assert_eq!(suggest("hadnler", MODULE_KEYS), Some("handler"));
        assert_eq!(suggest("zzz", MODULE_KEYS), None);
        assert_eq!(suggest("completely_different", TOP_LEVEL_KEYS), None);
    }

    #[test]
    fn project_dir_is_absolute_parent() {
        let file = std::env::temp_dir().join("project.pyrs");
        let config = Config::from_str(&format!("{{{ONE_MODULE}}}"), &file).expect("loads");
        let expected = std::env::temp_dir()
            .canonicalize()
            .expect("temp dir exists");
        assert_eq!(config.project_dir, expected);
        assert_eq!(config.file, file);
    }

    #[test]
    fn loads_file_from_disk() {
        let dir = std::env::temp_dir().join(format!("pyrs-config-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("temp dir");
        let file = dir.join("project.pyrs");
        std::fs::write(&file, TEMPLATE).expect("write");
        let expected = dir.canonicalize().expect("temp dir exists");
        let loaded = Config::load(&file);
        std::fs::remove_dir_all(&dir).expect("clean up");
        let config = loaded.expect("loads");
        assert_eq!(config.modules.len(), 2);
        assert_eq!(config.project_dir, expected);
    }
}
