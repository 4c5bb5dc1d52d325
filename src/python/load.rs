//! Startup on the Python worker thread: prepares `sys` (project folder on the
//! path, an active virtualenv's site-packages, line-buffered output), then
//! resolves each `modules` entry: a handler entry's module is imported, one
//! instance of its class created and its handler bound; an app entry's module is
//! imported and its application found (called once if it is a factory) and
//! checked for its interface. Every failure is a [`ConfigError`] naming the entry
//! and key, reported before the server listens.

use pyo3::prelude::*;
use pyo3::types::{PyDict, PyList};

use super::apps::AppSetting;
use super::asgi::AsgiApp;
use super::errors::format_exception;
use super::native::Handler;
use super::routes::Endpoint;
use super::wsgi::WsgiApp;
use crate::config::{AppSpec, Config, ConfigError, Interface, Target, Workers};

/// Everything resolved at startup.
pub struct Loaded {
    /// One per `modules` entry, in order (the router's route index).
    pub routes: Vec<Endpoint>,
    /// Each handler entry's instance with its entry index, for the startup and
    /// shutdown hooks.
    pub instances: Vec<(usize, Py<PyAny>)>,
    /// A handler is `async def` or a class has a hook: an event loop is needed.
    pub needs_loop: bool,
}

/// Prepares `sys` and resolves every entry in `modules` order. `announce`
/// prints `Added route ...` per route.
pub fn load(py: Python<'_>, config: &Config, announce: bool) -> Result<Loaded, ConfigError> {
    prepare_sys(py, config).map_err(|e| {
        let message = format!("cannot prepare Python: {}", format_exception(py, &e));
        config.key_error("modules", "modules", None, message)
    })?;
    let mut loaded = Loaded {
        routes: Vec::with_capacity(config.modules.len()),
        instances: Vec::new(),
        needs_loop: false,
    };
    for (i, entry) in config.modules.iter().enumerate() {
        let fail = |key: &str, message: String| ConfigError::at(config, i, key, message);
        let route = match &entry.target {
            Target::Handler {
                module,
                class,
                handler,
                websocket,
            } => {
                let (handler, instance) = load_handler(py, module, class, handler, &fail)?;
                if *websocket && !handler.is_async {
                    return Err(fail(
                        "handler",
                        format!(
                            "{} serves a WebSocket (\"websocket\": true) and must be an \
                             `async def` method taking a pyrs.WebSocket",
                            handler.name
                        ),
                    ));
                }
                loaded.needs_loop |= handler.is_async
                    || handler.yields_async
                    || instance.bind(py).hasattr("startup").unwrap_or(false)
                    || instance.bind(py).hasattr("shutdown").unwrap_or(false);
                loaded.instances.push((i, instance));
                if *websocket {
                    Endpoint::Socket(handler)
                } else {
                    Endpoint::Handler(handler)
                }
            }
            Target::App(spec) => {
                let setting = AppSetting {
                    route: &entry.path,
                    server_name: &config.http_listen_address,
                    server_port: config.http_listen_port,
                    multiprocess: config.workers != Workers::Count(1),
                    multithread: config.python_threads > 1,
                };
                let route = load_app(py, spec, &setting, &fail)?;
                loaded.needs_loop |= matches!(route, Endpoint::Asgi(_));
                route
            }
        };
        loaded.routes.push(route);
        if announce {
            println!("Added route {}", entry.path);
        }
    }
    Ok(loaded)
}

/// Imports `module`, the failure naming the entry's `key`.
fn import<'py>(
    py: Python<'py>,
    module: &str,
    key: &str,
    fail: &dyn Fn(&str, String) -> ConfigError,
) -> Result<Bound<'py, PyModule>, ConfigError> {
    py.import(module).map_err(|e| {
        fail(
            key,
            format!(
                "cannot import module {module:?}:\n{}",
                format_exception(py, &e)
            ),
        )
    })
}

/// `module.class().handler`, bound.
fn load_handler(
    py: Python<'_>,
    module_name: &str,
    class_name: &str,
    handler_name: &str,
    fail: &dyn Fn(&str, String) -> ConfigError,
) -> Result<(Handler, Py<PyAny>), ConfigError> {
    let module = import(py, module_name, "module", fail)?;
    let class = module.getattr(class_name).map_err(|_| {
        fail(
            "class",
            format!("module {module_name:?} has no class {class_name:?}"),
        )
    })?;
    let instance = class.call0().map_err(|e| {
        fail(
            "class",
            format!(
                "creating {module_name}.{class_name}() failed:\n{}",
                format_exception(py, &e)
            ),
        )
    })?;
    let handler = instance.getattr(handler_name).map_err(|_| {
        fail(
            "handler",
            format!("class {class_name:?} has no method {handler_name:?}"),
        )
    })?;
    if !handler.is_callable() {
        return Err(fail(
            "handler",
            format!("{module_name}.{class_name}.{handler_name} is not callable"),
        ));
    }
    let is_async = inspect(py, "iscoroutinefunction", &handler);
    let yields_async = inspect(py, "isasyncgenfunction", &handler);
    let handler = Handler {
        handler: handler.unbind(),
        name: format!("{module_name}.{class_name}.{handler_name}"),
        is_async,
        yields_async,
    };
    Ok((handler, instance.unbind()))
}

/// `inspect.<check>(f)`, false when it cannot be asked.
fn inspect(py: Python<'_>, check: &str, f: &Bound<'_, PyAny>) -> bool {
    py.import("inspect")
        .and_then(|m| m.getattr(check))
        .and_then(|check| check.call1((f,)))
        .and_then(|r| r.is_truthy())
        .unwrap_or(false)
}

/// The application `spec` names, checked for its interface.
fn load_app(
    py: Python<'_>,
    spec: &AppSpec,
    setting: &AppSetting<'_>,
    fail: &dyn Fn(&str, String) -> ConfigError,
) -> Result<Endpoint, ConfigError> {
    let name = format!("{}:{}", spec.module, spec.attr);
    let mut app = import(py, &spec.module, "app", fail)?.into_any();
    for part in spec.attr.split('.') {
        app = app.getattr(part).map_err(|_| {
            fail(
                "app",
                format!("module {:?} has no attribute {:?}", spec.module, spec.attr),
            )
        })?;
    }
    if spec.factory {
        app = app.call0().map_err(|e| {
            fail(
                "factory",
                format!(
                    "calling the factory {name}() failed:\n{}",
                    format_exception(py, &e)
                ),
            )
        })?;
    }
    if !app.is_callable() {
        let kind = super::errors::type_name(&app);
        return Err(fail(
            "app",
            format!("{name} is a {kind}, not a callable application"),
        ));
    }
    // An ASGI app is a coroutine function, or an object whose __call__ is one.
    let is_asgi = inspect(py, "iscoroutinefunction", &app)
        || app
            .getattr("__call__")
            .is_ok_and(|call| inspect(py, "iscoroutinefunction", &call));
    match (spec.interface, is_asgi) {
        (Interface::Wsgi, true) => Err(fail(
            "interface",
            format!("{name} is an ASGI application (a coroutine function), not WSGI"),
        )),
        (Interface::Asgi, false) => Err(fail(
            "interface",
            format!("{name} is not an ASGI application (not a coroutine function)"),
        )),
        (Interface::Asgi, true) | (Interface::Auto, true) => {
            let app = AsgiApp::new(py, app, name, setting).map_err(|e| {
                fail(
                    "app",
                    format!("cannot prepare the ASGI app:\n{}", format_exception(py, &e)),
                )
            })?;
            Ok(Endpoint::Asgi(app))
        }
        (Interface::Wsgi, false) | (Interface::Auto, false) => {
            let app = WsgiApp::new(py, app, name, setting).map_err(|e| {
                fail(
                    "app",
                    format!("cannot prepare the WSGI app:\n{}", format_exception(py, &e)),
                )
            })?;
            Ok(Endpoint::Wsgi(app))
        }
    }
}

/// Puts the project folder first on `sys.path`, adds an active virtualenv's
/// site-packages, and makes `print()` line-buffered so handler output shows up
/// promptly even when stdout is a pipe.
fn prepare_sys(py: Python<'_>, config: &Config) -> PyResult<()> {
    let sys = py.import("sys")?;
    let path = sys.getattr("path")?.cast_into::<PyList>()?;
    path.insert(0, config.project_dir.to_string_lossy().as_ref())?;
    sys.setattr(
        "argv",
        PyList::new(py, [config.file.to_string_lossy().as_ref()])?,
    )?;
    if let Some(venv) = std::env::var_os("VIRTUAL_ENV") {
        add_virtualenv(py, &venv.to_string_lossy())?;
    }
    for stream in ["stdout", "stderr"] {
        let s = sys.getattr(stream)?;
        if !s.is_none() {
            let kwargs = PyDict::new(py);
            kwargs.set_item("line_buffering", true)?;
            // Streams that cannot be reconfigured (replaced by the user) stay as
            // they are.
            let _ = s.call_method("reconfigure", (), Some(&kwargs));
        }
    }
    Ok(())
}

/// Makes the virtualenv at `prefix` what this interpreter imports from, as that
/// venv's own `python` would: its site-packages folders (as `sysconfig` lays them
/// out for this interpreter: the `venv` scheme, or `posix_prefix` before 3.11)
/// come right after the project folder, ahead of everything else, and the base
/// interpreter's site-packages (and the user's) are dropped unless the venv's
/// `pyvenv.cfg` says `include-system-site-packages = true` (or there is no
/// `pyvenv.cfg`: not a venv made by `python -m venv`).
fn add_virtualenv(py: Python<'_>, prefix: &str) -> PyResult<()> {
    let sysconfig = py.import("sysconfig")?;
    let schemes: Vec<String> = sysconfig.call_method0("get_scheme_names")?.extract()?;
    let scheme = if schemes.iter().any(|s| s == "venv") {
        "venv"
    } else {
        "posix_prefix"
    };
    let vars = PyDict::new(py);
    for key in ["base", "platbase", "installed_base", "installed_platbase"] {
        vars.set_item(key, prefix)?;
    }
    let mut dirs: Vec<String> = Vec::with_capacity(2);
    for kind in ["purelib", "platlib"] {
        let dir: String = sysconfig
            .call_method1("get_path", (kind, scheme, &vars))?
            .extract()?;
        if !dirs.contains(&dir) {
            dirs.push(dir);
        }
    }
    // Only a real venv (one with a pyvenv.cfg) hides the base site-packages: a
    // stale or hand-made VIRTUAL_ENV just adds its folders.
    let config = std::fs::read_to_string(std::path::Path::new(prefix).join("pyvenv.cfg"));
    let include_system = config.as_deref().map_or(true, |config| {
        config.lines().any(|line| {
            let mut kv = line.splitn(2, '=').map(str::trim);
            kv.next() == Some("include-system-site-packages")
                && kv.next().is_some_and(|v| v.eq_ignore_ascii_case("true"))
        })
    });
    let site = py.import("site")?;
    let sys = py.import("sys")?;
    let path = sys.getattr("path")?.cast_into::<PyList>()?;
    if !include_system {
        let mut base: Vec<String> = site.call_method0("getsitepackages")?.extract()?;
        if let Ok(user) = site
            .call_method0("getusersitepackages")?
            .extract::<String>()
        {
            base.push(user);
        }
        let kept: Vec<Bound<'_, PyAny>> = path
            .iter()
            .filter(|entry| {
                entry.extract::<String>().map_or(true, |entry| {
                    !base.contains(&entry) || dirs.contains(&entry)
                })
            })
            .collect();
        path.del_slice(0, path.len())?;
        for entry in kept {
            path.append(entry)?;
        }
    }
    // addsitedir appends (with what the venv's .pth files add); move that block
    // right after the project folder.
    let before = path.len();
    for dir in &dirs {
        site.call_method1("addsitedir", (dir.as_str(),))?;
    }
    let added = path.get_slice(before, path.len());
    path.del_slice(before, path.len())?;
    for (offset, entry) in added.iter().enumerate() {
        path.insert(1 + offset, entry)?;
    }
    Ok(())
}
