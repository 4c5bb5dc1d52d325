//! Every key of the project file: its type, its limits and the message when
//! a value is outside them. [`read`] walks the file once with [`Json`],
//! checking each key and value as it is met and writing it into a
//! [`Config`] that starts from the defaults, with where each value is
//! ([`Origin::File`]). Checks that need two keys wait for [`Config::check`],
//! after the environment (`env.rs`) and the flags, which reuse the readers
//! here for their values.
//!
//! Adding a key: a field in [`Config`] and its default, its name in
//! [`TOP_LEVEL_KEYS`], one line in [`read_setting`] (which also reads its
//! `PYRS_` variable), one line in `show.rs` and a row in README.md.

use std::fmt::Display;
use std::path::{Path, PathBuf};

use super::json::{is_integer, Json, Spanned, Value};
use super::{
    check_address, check_thread_count, suggest, AccessLog, AppSpec, ClientAuth, Config,
    ConfigError, EntryLocations, EventLoop, Interface, Location, ModuleEntry, Origin, StaticEntry,
    Target, TlsVersion, Workers, MAX_HEAD_SIZE, MAX_MAX_AGE, MAX_PYTHON_THREADS, MAX_WORKERS,
    MIN_HEAD_SIZE, MODULE_KEYS, STATIC_KEYS, TOP_LEVEL_KEYS,
};

/// Reads the whole file into `config`, which holds the defaults; checks
/// across keys are left to [`Config::check`].
pub(super) fn read(json: &mut Json<'_>, config: &mut Config) -> Result<(), ConfigError> {
    let root = json.value()?;
    if root.value != Value::Object {
        let found = root.value.describe();
        let message = format!("the file must hold one JSON object {{ ... }}, found {found}");
        return Err(json.syntax(root.at, &message));
    }
    // Where each key's value is, in file order; also finds keys given twice.
    let mut seen: Vec<(&'static str, Location)> = Vec::new();
    while let Some((key, key_at)) = json.key()? {
        let Some(name) = TOP_LEVEL_KEYS.iter().copied().find(|name| *name == key) else {
            return Err(unknown_key(config, None, key, key_at, TOP_LEVEL_KEYS));
        };
        if seen.iter().any(|(seen, _)| *seen == name) {
            return Err(invalid(
                config,
                name,
                Some(key_at),
                "is given more than once",
            ));
        }
        json.colon()?;
        let value = json.value()?;
        seen.push((name, value.at));
        if name == "modules" {
            read_modules(json, config, value)?;
        } else if name == "static" {
            read_statics(json, config, value)?;
        } else {
            read_setting(config, name, &value.value)
                .map_err(|message| invalid(config, name, Some(value.at), message))?;
        }
    }
    json.finish()?;
    for (name, at) in seen {
        config.origins.set(name, Origin::File(at));
    }
    Ok(())
}

/// Reads the value of top-level key `name` (any key but `modules` and `static`) into
/// `config`; the error is the message for that key.
pub(super) fn read_setting(
    config: &mut Config,
    name: &str,
    value: &Value<'_>,
) -> Result<(), String> {
    const BYTES: &str = "an integer (bytes)";
    const ZERO_OR_MORE: &str = "must be 0 or more";
    let c = config;
    match name {
        "http_listen_address" => string(value)
            .and_then(|address| checked(address, |address| check_address(address)))
            .map(|address| c.http_listen_address = address),
        "http_listen_port" => integer(value, "an integer", "port must be 0..=65535")
            .map(|port| c.http_listen_port = port),
        "thread_count" => integer(value, "an integer", "must be between 1 and 1024")
            .and_then(|count| checked(count, |count| check_thread_count(*count)))
            .map(|count| c.thread_count = count),
        "tcp_nodelay" => boolean(value).map(|on| c.tcp_nodelay = on),
        "listen_backlog" => integer(value, "an integer", "must be between 1 and 2147483647")
            .and_then(|backlog| at_least(backlog, 1, ""))
            .map(|backlog| c.listen_backlog = backlog),
        "max_body_size" => integer(
            value,
            BYTES,
            "must be between 0 and 18446744073709551615 bytes",
        )
        .map(|size| c.max_body_size = size),
        "max_head_size" => integer(value, BYTES, "must be between 1024 and 1048576 bytes")
            .and_then(|size| at_least(size, MIN_HEAD_SIZE, " bytes"))
            .and_then(|size| at_most(size, MAX_HEAD_SIZE, " bytes (1 MiB)"))
            .map(|size| c.max_head_size = size),
        "shutdown_timeout" => seconds(value, true).map(|s| c.shutdown_timeout = s),
        "header_timeout" => seconds(value, false).map(|s| c.header_timeout = s),
        "keepalive_timeout" => seconds(value, false).map(|s| c.keepalive_timeout = s),
        "body_timeout" => seconds(value, false).map(|s| c.body_timeout = s),
        // At least thread_count; checked once the whole file is read.
        "max_connections" => {
            integer(value, "an integer", ZERO_OR_MORE).map(|count| c.max_connections = count)
        }
        "max_pipelined" => integer(value, "an integer", ZERO_OR_MORE)
            .and_then(|count| at_least(count, 1, ""))
            .map(|count| c.max_pipelined = count),
        "max_write_buffer" => integer(value, BYTES, ZERO_OR_MORE)
            .and_then(|size| at_least(size, 4096, ""))
            .map(|size| c.max_write_buffer = size),
        "max_queued_requests" => integer(value, "an integer", ZERO_OR_MORE)
            .and_then(|count| at_least(count, 1, ""))
            .map(|count| c.max_queued_requests = count),
        "shed_queued_requests" => {
            integer(value, "an integer", ZERO_OR_MORE).map(|count| c.shed_queued_requests = count)
        }
        "event_loop" => event_loop(value).map(|event_loop| c.event_loop = event_loop),
        "workers" => workers(value).map(|workers| c.workers = workers),
        "python_threads" => integer(value, "an integer", ZERO_OR_MORE)
            .and_then(|count| at_least(count, 1, ""))
            .and_then(|count| at_most(count, MAX_PYTHON_THREADS, ""))
            .map(|count| c.python_threads = count),
        "max_websocket_message" => integer(value, BYTES, ZERO_OR_MORE)
            .and_then(|size| at_least(size, 125, " bytes"))
            .map(|size| c.max_websocket_message = size),
        "websocket_ping_interval" => seconds(value, false).map(|s| c.websocket_ping_interval = s),
        "access_log" => access_log(value, &c.project_dir).map(|log| c.access_log = log),
        "access_log_format" => string(value)
            .and_then(|format| checked(format, |f| not_empty(f)))
            .map(|format| c.access_log_format = Some(format)),
        "metrics_address" => string(value)
            .and_then(|address| checked(address, |a| check_host_port(a)))
            .map(|address| c.metrics_address = Some(address)),
        "max_requests" => {
            integer(value, "an integer", ZERO_OR_MORE).map(|count| c.max_requests = count)
        }
        "max_requests_jitter" => {
            integer(value, "an integer", ZERO_OR_MORE).map(|count| c.max_requests_jitter = count)
        }
        "max_worker_memory_mb" => integer(value, "an integer (MiB)", ZERO_OR_MORE)
            .map(|size| c.max_worker_memory_mb = size),
        "tls_cert" => file_path(value, &c.project_dir).map(|path| c.tls_cert = Some(path)),
        "tls_key" => file_path(value, &c.project_dir).map(|path| c.tls_key = Some(path)),
        "tls_client_ca" => {
            file_path(value, &c.project_dir).map(|path| c.tls_client_ca = Some(path))
        }
        "tls_client_auth" => client_auth(value).map(|auth| c.tls_client_auth = auth),
        "tls_min_version" => tls_version(value).map(|version| c.tls_min_version = version),
        other => unreachable!("{other:?} is in TOP_LEVEL_KEYS but has no reader"),
    }
}

/// A file path, relative to `dir` (the project file's folder). Whether the
/// file can be read is checked when it is used.
pub(super) fn file_path(value: &Value<'_>, dir: &Path) -> Result<PathBuf, String> {
    let path = string(value)?;
    if path.is_empty() {
        return Err("must name a file, found an empty string".to_owned());
    }
    Ok(dir.join(path))
}

fn client_auth(value: &Value<'_>) -> Result<ClientAuth, String> {
    match value {
        Value::String(name) if name == "required" => Ok(ClientAuth::Required),
        Value::String(name) if name == "optional" => Ok(ClientAuth::Optional),
        Value::String(other) => Err(format!(
            "must be \"required\" or \"optional\", found {other:?}"
        )),
        other => Err(expected("\"required\" or \"optional\"", other)),
    }
}

fn tls_version(value: &Value<'_>) -> Result<TlsVersion, String> {
    match value {
        // A number too: `PYRS_TLS_MIN_VERSION=1.3` reads as one.
        Value::String(name) if name == "1.2" => Ok(TlsVersion::V1_2),
        Value::String(name) if name == "1.3" => Ok(TlsVersion::V1_3),
        Value::Number("1.2") => Ok(TlsVersion::V1_2),
        Value::Number("1.3") => Ok(TlsVersion::V1_3),
        Value::String(other) => Err(format!("must be \"1.2\" or \"1.3\", found {other:?}")),
        other => Err(expected("\"1.2\" or \"1.3\" (a string)", other)),
    }
}

/// Reads the array of `modules`, checking each entry and that no route is
/// given twice.
pub(super) fn read_modules(
    json: &mut Json<'_>,
    config: &mut Config,
    modules: Spanned<'_>,
) -> Result<(), ConfigError> {
    if modules.value != Value::Array {
        let message = expected("an array of module entries", &modules.value);
        return Err(invalid(config, "modules", Some(modules.at), message));
    }
    while let Some(entry) = json.element()? {
        let index = config.modules.len();
        let entry = read_entry(json, config, index, entry)?;
        let route_at = |entry: &ModuleEntry| entry.value_locations.path.unwrap_or(entry.location);
        if let Some(first) = config.modules.iter().find(|first| first.path == entry.path) {
            let key = format!("modules[{index}].path");
            let first = route_at(first).line;
            return Err(duplicate(
                config,
                &key,
                &entry.path,
                first,
                route_at(&entry),
            ));
        }
        config.modules.push(entry);
    }
    Ok(())
}

/// Every key an entry may have: a handler entry's ([`MODULE_KEYS`]) and an
/// application entry's ([`APP_KEYS`]).
const ENTRY_KEYS: &[&str] = &[
    "path",
    "module",
    "class",
    "handler",
    "app",
    "interface",
    "factory",
    "websocket",
];

/// Reads the array of `static` mounts, checking each entry and that no route
/// is given twice.
pub(super) fn read_statics(
    json: &mut Json<'_>,
    config: &mut Config,
    mounts: Spanned<'_>,
) -> Result<(), ConfigError> {
    if mounts.value != Value::Array {
        let message = expected("an array of static mounts", &mounts.value);
        return Err(invalid(config, "static", Some(mounts.at), message));
    }
    while let Some(entry) = json.element()? {
        let index = config.statics.len();
        let mount = read_static(json, config, index, entry)?;
        if let Some(first) = config.statics.iter().find(|first| first.path == mount.path) {
            let key = format!("static[{index}].path");
            let first = first.path_at.line;
            return Err(duplicate(config, &key, &mount.path, first, mount.path_at));
        }
        config.statics.push(mount);
    }
    Ok(())
}

/// `route`, at `at`, was already given at line `first` of the same list.
fn duplicate(config: &Config, key: &str, route: &str, first: usize, at: Location) -> ConfigError {
    let message = format!("duplicate route {route:?} (first defined at line {first})");
    invalid(config, key, Some(at), message)
}

/// Reads `static[index]`, whose first token is `entry`.
fn read_static(
    json: &mut Json<'_>,
    config: &Config,
    index: usize,
    entry: Spanned<'_>,
) -> Result<StaticEntry, ConfigError> {
    let parent = format!("static[{index}]");
    if entry.value != Value::Object {
        let message = expected("an object with \"path\" and \"dir\"", &entry.value);
        return Err(invalid(config, &parent, Some(entry.at), message));
    }
    let mut mount = StaticEntry {
        path: String::new(),
        dir: PathBuf::new(),
        max_age: None,
        index: None,
        precompressed: false,
        location: entry.at,
        path_at: entry.at,
    };
    let mut seen: Vec<&str> = Vec::new();
    while let Some((key, key_at)) = json.key()? {
        let Some(name) = STATIC_KEYS.iter().copied().find(|name| *name == key) else {
            return Err(unknown_key(config, Some(parent), key, key_at, STATIC_KEYS));
        };
        let path = format!("{parent}.{name}");
        if seen.contains(&name) {
            return Err(invalid(
                config,
                &path,
                Some(key_at),
                "is given more than once",
            ));
        }
        seen.push(name);
        json.colon()?;
        let value = json.value()?;
        read_static_value(config, &mut mount, name, &value.value)
            .map_err(|message| invalid(config, &path, Some(value.at), message))?;
        if name == "path" {
            mount.path_at = value.at;
        }
    }
    for required in ["path", "dir"] {
        if !seen.contains(&required) {
            let message = format!("missing key {required:?}");
            return Err(invalid(config, &parent, Some(entry.at), message));
        }
    }
    Ok(mount)
}

/// Reads the value of key `name` of a static mount into `mount`.
fn read_static_value(
    config: &Config,
    mount: &mut StaticEntry,
    name: &str,
    value: &Value<'_>,
) -> Result<(), String> {
    match name {
        "path" => mount.path = static_route(string(value)?)?,
        "dir" => mount.dir = static_dir(&config.project_dir, &string(value)?)?,
        "max_age" => {
            let range = format!("must be between 0 and {MAX_MAX_AGE} seconds (a year)");
            let seconds = integer(value, "an integer (seconds)", &range)?;
            mount.max_age = Some(at_most(seconds, MAX_MAX_AGE, " seconds (a year)")?);
        }
        "index" => {
            let file = string(value)?;
            let plain = !file.is_empty()
                && file != "."
                && file != ".."
                && !file.contains(['/', '\\', '\0']);
            if !plain {
                return Err(format!(
                    "{file:?} is not a plain file name such as \"index.html\""
                ));
            }
            mount.index = Some(file);
        }
        "precompressed" => mount.precompressed = boolean(value)?,
        other => unreachable!("{other:?} is in STATIC_KEYS but has no reader"),
    }
    Ok(())
}

/// A static mount's route: a valid prefix route (`/static/*`, `/*`).
pub(super) fn static_route(route: String) -> Result<String, String> {
    check_route(&route)?;
    if !route.ends_with("/*") {
        return Err(format!(
            "static route {route:?} must be a prefix such as \"/static/*\" (or \"/*\")"
        ));
    }
    Ok(route)
}

/// The folder `dir` names, relative to the project file's folder: it must
/// exist and be a folder. Canonical, so that what is served does not change
/// if a symlink in the configured path is changed later.
pub(super) fn static_dir(project_dir: &Path, dir: &str) -> Result<PathBuf, String> {
    if dir.is_empty() {
        return Err("must name a folder, such as \"public\"".to_owned());
    }
    let joined = project_dir.join(dir);
    match joined.canonicalize() {
        Ok(folder) if folder.is_dir() => Ok(folder),
        Ok(_) => Err(format!("{} is not a folder", joined.display())),
        Err(e) => Err(format!("folder {} cannot be used: {e}", joined.display())),
    }
}

/// Reads `modules[index]`, whose first token is `entry`.
fn read_entry(
    json: &mut Json<'_>,
    config: &Config,
    index: usize,
    entry: Spanned<'_>,
) -> Result<ModuleEntry, ConfigError> {
    let parent = format!("modules[{index}]");
    if entry.value != Value::Object {
        let expected_object = "an object with \"path\", \"module\", \"class\" and \"handler\"";
        let message = expected(expected_object, &entry.value);
        return Err(invalid(config, &parent, Some(entry.at), message));
    }
    // Each of ENTRY_KEYS, in that order: its value (as text) and where it is.
    let mut values: [Option<(String, Location)>; 8] = Default::default();
    let mut factory = false;
    let mut websocket = false;
    while let Some((key, key_at)) = json.key()? {
        let Some(slot) = ENTRY_KEYS.iter().position(|name| *name == key) else {
            return Err(unknown_key(config, Some(parent), key, key_at, ENTRY_KEYS));
        };
        let path = format!("{parent}.{key}");
        if values[slot].is_some() {
            return Err(invalid(
                config,
                &path,
                Some(key_at),
                "is given more than once",
            ));
        }
        json.colon()?;
        let value = json.value()?;
        let text = if ENTRY_KEYS[slot] == "factory" {
            boolean(&value.value).map(|flag| {
                factory = flag;
                flag.to_string()
            })
        } else if ENTRY_KEYS[slot] == "websocket" {
            boolean(&value.value).map(|flag| {
                websocket = flag;
                flag.to_string()
            })
        } else {
            string(&value.value).and_then(|text| check_entry_value(ENTRY_KEYS[slot], text))
        }
        .map_err(|message| invalid(config, &path, Some(value.at), message))?;
        values[slot] = Some((text, value.at));
    }
    let [path, module, class, handler, app, interface, factory_at, websocket_at] = values;
    let at = |value: &Option<(String, Location)>| value.as_ref().map(|(_, at)| *at);
    let value_locations = EntryLocations {
        path: at(&path),
        module: at(&module),
        class: at(&class),
        handler: at(&handler),
        app: at(&app),
        interface: at(&interface),
        factory: at(&factory_at),
        websocket: at(&websocket_at),
    };
    let target = match app {
        Some((app, app_at)) => {
            // An app entry: no handler keys, `path` required.
            let handler_keys = [
                ("module", &module),
                ("class", &class),
                ("handler", &handler),
                ("websocket", &websocket_at),
            ];
            if let Some((key, Some((_, key_at)))) =
                handler_keys.iter().find(|(_, value)| value.is_some())
            {
                let message = "an entry names either an \"app\" or a \"module\", \"class\" \
                               and \"handler\", not both";
                return Err(invalid(
                    config,
                    &format!("{parent}.{key}"),
                    Some(*key_at),
                    message,
                ));
            }
            let interface = match &interface {
                Some((name, _)) => Interface::parse(name).expect("checked when read"),
                None => Interface::Auto,
            };
            let spec = AppSpec::parse(&app, interface, factory).map_err(|message| {
                invalid(config, &format!("{parent}.app"), Some(app_at), message)
            })?;
            Target::App(spec)
        }
        None => {
            if let Some((key, (_, key_at))) = [("interface", &interface), ("factory", &factory_at)]
                .into_iter()
                .find_map(|(key, value)| value.as_ref().map(|v| (key, v)))
            {
                let message = "applies only to an entry with \"app\"";
                return Err(invalid(
                    config,
                    &format!("{parent}.{key}"),
                    Some(*key_at),
                    message,
                ));
            }
            let required = [&path, &module, &class, &handler];
            if let Some(slot) = required.iter().position(|value| value.is_none()) {
                let message = format!("missing key {:?}", MODULE_KEYS[slot]);
                return Err(invalid(config, &parent, Some(entry.at), message));
            }
            let text =
                |value: Option<(String, Location)>| value.map(|(text, _)| text).unwrap_or_default();
            Target::Handler {
                module: text(module),
                class: text(class),
                handler: text(handler),
                websocket,
            }
        }
    };
    let Some((path, _)) = path else {
        let message = format!("missing key {:?}", "path");
        return Err(invalid(config, &parent, Some(entry.at), message));
    };
    Ok(ModuleEntry {
        location: entry.at,
        value_locations,
        path,
        target,
    })
}

/// Checks the value of one key of a module entry.
fn check_entry_value(key: &str, value: String) -> Result<String, String> {
    match key {
        "path" => check_route(&value).map(|()| value),
        "module" if !value.split('.').all(is_identifier) => Err(format!(
            "{value:?} is not a Python module name such as \"main\" or \"app.handlers\""
        )),
        "class" | "handler" if !is_identifier(&value) => Err(format!(
            "{value:?} is not a Python identifier such as \"Api\" or \"echo\""
        )),
        "app" => AppSpec::parse(&value, Interface::Auto, false).map(|_| value),
        "interface" => Interface::parse(&value).map(|_| value),
        _ => Ok(value),
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
pub(super) fn is_identifier(name: &str) -> bool {
    let mut chars = name.chars();
    match chars.next() {
        Some(first) if first == '_' || first.is_alphabetic() => {
            chars.all(|c| c == '_' || c.is_alphanumeric())
        }
        _ => false,
    }
}

/// "expected X, found Y".
fn expected(what: &str, found: &Value<'_>) -> String {
    format!("expected {what}, found {}", found.describe())
}

fn string(value: &Value<'_>) -> Result<String, String> {
    match value {
        Value::String(text) => Ok(text.clone().into_owned()),
        other => Err(expected("a string", other)),
    }
}

fn boolean(value: &Value<'_>) -> Result<bool, String> {
    match value {
        Value::Bool(flag) => Ok(*flag),
        other => Err(expected("a boolean", other)),
    }
}

/// An integer that fits `T`. `what` names the type for a value that is no
/// integer; `range` is the message for one that does not fit.
fn integer<T: TryFrom<i128>>(value: &Value<'_>, what: &str, range: &str) -> Result<T, String> {
    match value {
        Value::Number(raw) if is_integer(raw) => raw
            .parse::<i128>()
            .ok()
            .and_then(|n| T::try_from(n).ok())
            .ok_or_else(|| format!("{range}, found {raw}")),
        other => Err(expected(what, other)),
    }
}

/// A finite number of seconds, more than 0, or 0 too when `zero` allows it.
fn seconds(value: &Value<'_>, zero: bool) -> Result<f64, String> {
    let seconds = match value {
        // `+ 0.0` reads `-0` as 0.
        Value::Number(raw) => raw.parse::<f64>().map_or(f64::NAN, |n| n + 0.0),
        other => return Err(expected("a number of seconds", other)),
    };
    if seconds.is_finite() && (seconds > 0.0 || zero && seconds == 0.0) {
        Ok(seconds)
    } else if zero {
        Err("must be a finite number of seconds, 0 or more".to_owned())
    } else {
        Err("must be a finite number of seconds, more than 0".to_owned())
    }
}

/// `value` when `check` passes.
fn checked<T, E: Into<String>>(
    value: T,
    check: impl FnOnce(&T) -> Result<(), E>,
) -> Result<T, String> {
    check(&value).map(|()| value).map_err(Into::into)
}

/// `value` unless it is below `min`; `unit` follows the number in the message.
fn at_least<T: PartialOrd + Display>(value: T, min: T, unit: &str) -> Result<T, String> {
    if value < min {
        Err(format!("must be at least {min}{unit}"))
    } else {
        Ok(value)
    }
}

/// `value` unless it is above `max`; `unit` follows the number in the message.
fn at_most<T: PartialOrd + Display>(value: T, max: T, unit: &str) -> Result<T, String> {
    if value > max {
        Err(format!("must be at most {max}{unit}"))
    } else {
        Ok(value)
    }
}

fn event_loop(value: &Value<'_>) -> Result<EventLoop, String> {
    match value {
        Value::String(name) => match name.as_ref() {
            "auto" => Ok(EventLoop::Auto),
            "asyncio" => Ok(EventLoop::Asyncio),
            "uvloop" => Ok(EventLoop::Uvloop),
            other => Err(format!(
                "must be \"auto\", \"asyncio\" or \"uvloop\", found {other:?}"
            )),
        },
        other => Err(expected(
            "a string: \"auto\", \"asyncio\" or \"uvloop\"",
            other,
        )),
    }
}

fn workers(value: &Value<'_>) -> Result<Workers, String> {
    match value {
        Value::String(name) if name == "auto" => Ok(Workers::Auto),
        Value::Number(raw) => match raw.parse::<usize>() {
            Ok(count) if (1..=MAX_WORKERS).contains(&count) => Ok(Workers::Count(count)),
            _ => Err(format!(
                "must be between 1 and {MAX_WORKERS}, or \"auto\", found {raw}"
            )),
        },
        Value::String(other) => Err(format!("expected an integer or \"auto\", found {other:?}")),
        Value::Bool(flag) => Err(format!("expected an integer or \"auto\", found {flag}")),
        other => Err(expected("an integer or \"auto\"", other)),
    }
}

/// `false`, `true` (standard output) or a file path (`"-"` is standard
/// output too), relative to `dir`.
pub(super) fn access_log(value: &Value<'_>, dir: &Path) -> Result<AccessLog, String> {
    match value {
        Value::Bool(false) => Ok(AccessLog::Off),
        Value::Bool(true) => Ok(AccessLog::Stdout),
        Value::String(path) if path == "-" => Ok(AccessLog::Stdout),
        Value::String(path) if path.is_empty() => {
            Err("expected a file path, true or false, found an empty string".to_owned())
        }
        Value::String(path) => Ok(AccessLog::File(dir.join(path.as_ref()))),
        other => Err(expected("true, false or a file path", other)),
    }
}

fn not_empty(text: &str) -> Result<(), &'static str> {
    if text.is_empty() {
        Err("must not be empty")
    } else {
        Ok(())
    }
}

/// `host:port` with a port number: an IP address (`[::1]:9100` for IPv6) or
/// a host name.
fn check_host_port(address: &str) -> Result<(), String> {
    let bad = || format!("expected \"host:port\" (e.g. \"127.0.0.1:9100\"), found {address:?}");
    let (host, port) = address.rsplit_once(':').ok_or_else(bad)?;
    if host.is_empty() || port.parse::<u16>().is_err() {
        return Err(bad());
    }
    Ok(())
}

fn invalid(
    config: &Config,
    key: &str,
    location: Option<Location>,
    message: impl Into<String>,
) -> ConfigError {
    ConfigError::Invalid {
        file: config.file.clone(),
        location,
        key: key.to_owned(),
        message: message.into(),
    }
}

fn unknown_key(
    config: &Config,
    parent: Option<String>,
    key: String,
    at: Location,
    candidates: &[&str],
) -> ConfigError {
    ConfigError::UnknownKey {
        file: config.file.clone(),
        location: Some(at),
        parent,
        suggestion: suggest(&key, candidates).map(str::to_owned),
        key,
    }
}
