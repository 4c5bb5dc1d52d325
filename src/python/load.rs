//! Startup on the Python worker thread: prepares `sys` (project folder on the
//! path, an active virtualenv's site-packages, line-buffered output), imports each
//! `modules` entry's module, creates one instance of its class and resolves its
//! handler to a bound method. Every failure is a [`ConfigError`] naming the entry
//! and key, reported before the server listens.

use pyo3::prelude::*;
use pyo3::types::{PyDict, PyList};

use super::errors::format_exception;
use super::native::Route;
use crate::config::{Config, ConfigError};

/// Everything resolved at startup.
pub struct Loaded {
    /// One per `modules` entry, in order (the router's route index).
    pub routes: Vec<Route>,
    /// One instance per `modules` entry, for the startup and shutdown hooks.
    pub instances: Vec<Py<PyAny>>,
    /// A handler is `async def` or a class has a hook: an event loop is needed.
    pub needs_loop: bool,
}

/// Prepares `sys` and resolves every handler in `modules` order. `announce`
/// prints `Added route ...` per route.
pub fn load(py: Python<'_>, config: &Config, announce: bool) -> Result<Loaded, ConfigError> {
    prepare_sys(py, config).map_err(|e| ConfigError::Invalid {
        file: config.file.clone(),
        location: None,
        key: "modules".to_owned(),
        message: format!("cannot prepare Python: {}", format_exception(py, &e)),
    })?;
    let stdlib = |module: &str, attr: &str| {
        py.import(module)
            .and_then(|m| m.getattr(attr))
            .map_err(|e| ConfigError::at(config, 0, "module", format_exception(py, &e)))
    };
    let import = stdlib("importlib", "import_module")?;
    let is_coroutine_function = stdlib("inspect", "iscoroutinefunction")?;
    let mut loaded = Loaded {
        routes: Vec::with_capacity(config.modules.len()),
        instances: Vec::with_capacity(config.modules.len()),
        needs_loop: false,
    };
    for (i, entry) in config.modules.iter().enumerate() {
        let fail = |key: &str, message: String| ConfigError::at(config, i, key, message);
        let module = import.call1((entry.module.as_str(),)).map_err(|e| {
            fail(
                "module",
                format!(
                    "cannot import module {:?}:\n{}",
                    entry.module,
                    format_exception(py, &e)
                ),
            )
        })?;
        let class = module.getattr(entry.class.as_str()).map_err(|_| {
            fail(
                "class",
                format!("module {:?} has no class {:?}", entry.module, entry.class),
            )
        })?;
        let instance = class.call0().map_err(|e| {
            fail(
                "class",
                format!(
                    "creating {}.{}() failed:\n{}",
                    entry.module,
                    entry.class,
                    format_exception(py, &e)
                ),
            )
        })?;
        let handler = instance.getattr(entry.handler.as_str()).map_err(|_| {
            fail(
                "handler",
                format!("class {:?} has no method {:?}", entry.class, entry.handler),
            )
        })?;
        if !handler.is_callable() {
            return Err(fail(
                "handler",
                format!(
                    "{}.{}.{} is not callable",
                    entry.module, entry.class, entry.handler
                ),
            ));
        }
        let is_async = is_coroutine_function
            .call1((&handler,))
            .and_then(|r| r.is_truthy())
            .unwrap_or(false);
        loaded.needs_loop |= is_async
            || instance.hasattr("startup").unwrap_or(false)
            || instance.hasattr("shutdown").unwrap_or(false);
        loaded.routes.push(Route {
            handler: handler.unbind(),
            name: format!("{}.{}.{}", entry.module, entry.class, entry.handler),
            is_async,
        });
        loaded.instances.push(instance.unbind());
        if announce {
            println!("Added route {}", entry.path);
        }
    }
    Ok(loaded)
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

/// Adds the site-packages folders of the virtualenv at `prefix`, as `sysconfig`
/// lays them out for this interpreter (its `venv` scheme, or `posix_prefix` on
/// Pythons before 3.11), so the embedded Python sees what that venv's pip installed.
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
    let site = py.import("site")?;
    let mut added: Vec<String> = Vec::with_capacity(2);
    for kind in ["purelib", "platlib"] {
        let dir: String = sysconfig
            .call_method1("get_path", (kind, scheme, &vars))?
            .extract()?;
        if !added.contains(&dir) {
            site.call_method1("addsitedir", (dir.as_str(),))?;
            added.push(dir);
        }
    }
    Ok(())
}
