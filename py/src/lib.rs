//! `pyrs._pyrs`, the extension module of the Python package, loaded into the
//! user's interpreter by `import pyrs`. It holds the same classes as the binary's
//! built-in `pyrs` module (`Request`, `Headers`, `Response`, `HTTPError`) and
//! `_run(argv)`, which the `pyrs` console script calls: it releases the GIL and
//! runs the whole server (reactors, the Python worker thread, worker processes)
//! in this process, with this interpreter and its virtualenv.

use pyo3::prelude::*;

/// Runs `pyrs` with `args` (without the program name); returns the exit status.
#[pyfunction]
fn _run(py: Python<'_>, args: Vec<String>) -> PyResult<i32> {
    let sys = py.import("sys")?;
    let version: String = sys
        .getattr("version")?
        .extract::<String>()?
        .split_whitespace()
        .next()
        .unwrap_or("")
        .to_owned();
    let executable: String = sys.getattr("executable")?.extract()?;
    let python = format!("Python {version}, {executable}");
    // The server handles SIGINT itself (first = graceful stop, second = exit now).
    // Python's own handler would be chained behind it and raise KeyboardInterrupt
    // once `_run` returns, so it steps aside while the server runs. signal.signal
    // works only on the main thread; elsewhere the handler stays as it is.
    let signal = py.import("signal")?;
    let sigint = signal.getattr("SIGINT")?;
    let previous = signal
        .call_method1("signal", (&sigint, signal.getattr("SIG_DFL")?))
        .ok();
    // `threading` takes the thread that first imports it for the main thread.
    // That must be this one, not the server's Python worker, whose thread state
    // lives as long as it serves: the interpreter's exit would wait for it.
    py.import("threading")?;
    // The server's own threads take the GIL when they need it.
    let status = py.detach(|| pyrs::entry::main(&args, &python));
    if let Some(previous) = previous {
        signal.call_method1("signal", (&sigint, previous))?;
    }
    Ok(status)
}

#[pymodule]
fn _pyrs(m: &Bound<'_, PyModule>) -> PyResult<()> {
    pyrs::python::fill_module(m)?;
    m.add_function(wrap_pyfunction!(_run, m)?)?;
    Ok(())
}
