//! The Python interpreter the server under test runs on, asked of the server
//! itself (the cargo-built binary embeds one; the Python package's `pyrs` runs in
//! its venv's), and running that interpreter's programs.

use std::process::Command;

use super::{project_config, run_to_exit, Project, Server};

/// The Python interpreter pyrs embeds, asked of the binary itself.
pub struct EmbeddedPython {
    /// `sys.version` as the embedded interpreter reports it.
    pub version: String,
    /// An interpreter program of that same build (its `sys.version` is equal).
    pub program: std::path::PathBuf,
}

const PYTHON_INFO_MODULE: &str = r#"
import sys


class Info:
    def python(self, request):
        x, y = sys.version_info[:2]
        return "\n".join([sys.version, sys.base_prefix, sys.executable, f"{x}.{y}"])
"#;

/// Starts pyrs with a handler that reports `sys.version`, `sys.base_prefix` and
/// `sys.executable`, then finds the program of that interpreter: the
/// `bin/pythonX.Y` (or `bin/python3`) under its base prefix, or its
/// `sys.executable` (which an embedded interpreter takes from `PATH`), whichever
/// reports the same `sys.version`. The `python3` on `PATH` may be another build
/// (a pyenv shim over a distribution's Python, for example).
pub fn embedded_python() -> EmbeddedPython {
    let p = Project::new(
        &project_config(&[("/python", "pyinfo", "Info", "python")]),
        &[("pyinfo.py", PYTHON_INFO_MODULE)],
    );
    let text = Server::start(&p.file).get("/python").text();
    let lines: Vec<&str> = text.lines().collect();
    let [version, base_prefix, executable, x_y] = lines[..] else {
        panic!("unexpected answer from the info handler: {text:?}");
    };
    let base = std::path::Path::new(base_prefix).join("bin");
    let candidates = [
        base.join(format!("python{x_y}")),
        base.join("python3"),
        std::path::PathBuf::from(executable),
    ];
    let program = candidates
        .iter()
        .find(|program| {
            program.exists() && {
                let mut cmd = Command::new(program);
                cmd.args(["-c", "import sys; print(sys.version)"]);
                run_to_exit(cmd).stdout.trim_end() == version
            }
        })
        .unwrap_or_else(|| {
            panic!(
                "no interpreter program for the embedded Python {version:?} among {candidates:?}"
            )
        });
    EmbeddedPython {
        version: version.to_owned(),
        program: program.clone(),
    }
}

/// Runs `program args...`, panicking with its output unless it succeeds.
pub fn run_ok(program: &std::path::Path, args: &[&std::ffi::OsStr]) -> String {
    let mut cmd = Command::new(program);
    cmd.args(args);
    let out = run_to_exit(cmd);
    assert!(
        out.status.success(),
        "{} {args:?} failed:\n{}{}",
        program.display(),
        out.stdout,
        out.stderr
    );
    out.stdout
}

/// Flask and every package it pulls in, pinned.
pub const FLASK: &[&str] = &[
    "flask==3.1.3",
    "werkzeug==3.1.9",
    "jinja2==3.1.6",
    "markupsafe==3.0.4",
    "itsdangerous==2.2.0",
    "click==8.5.1",
    "blinker==1.9.0",
];

/// FastAPI and every package it pulls in (python-multipart for forms), pinned.
pub const FASTAPI: &[&str] = &[
    "fastapi==0.165.0",
    "starlette==1.10.0",
    "pydantic==2.14.4",
    "pydantic_core==2.50.5",
    "annotated-types==0.8.0",
    "annotated-doc==0.0.7",
    "typing-inspection==0.4.5",
    "typing_extensions==4.16.0",
    "anyio==4.16.0",
    "idna==3.20",
    "opentelemetry-api==1.45.2",
    "python-multipart==0.0.34",
];

/// A virtualenv made by the embedded Python with `requirements` installed by
/// pip (pinned versions), kept under the target folder between runs and
/// rebuilt when the requirements change. Several test threads or processes may
/// ask at once: one builds while the others wait on a lock folder.
pub fn framework_venv(name: &str, requirements: &[&str]) -> std::path::PathBuf {
    use std::time::{Duration, Instant};
    static BUILT: std::sync::Mutex<()> = std::sync::Mutex::new(());
    let _guard = BUILT.lock().unwrap_or_else(|e| e.into_inner());
    let root = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("venvs");
    std::fs::create_dir_all(&root).expect("create the venvs folder");
    let venv = root.join(name);
    let stamp = venv.join("pyrs-requirements.txt");
    let wanted = requirements.join("\n");
    if std::fs::read_to_string(&stamp).is_ok_and(|have| have == wanted) {
        return venv;
    }
    let lock = root.join(format!("{name}.lock"));
    let deadline = Instant::now() + Duration::from_secs(300);
    while std::fs::create_dir(&lock).is_err() {
        assert!(Instant::now() < deadline, "{} stays locked", lock.display());
        std::thread::sleep(Duration::from_millis(200));
        if std::fs::read_to_string(&stamp).is_ok_and(|have| have == wanted) {
            return venv;
        }
    }
    let built = std::panic::catch_unwind(|| {
        let _ = std::fs::remove_dir_all(&venv);
        make_venv(&venv, true);
        let pip = venv.join("bin").join("pip");
        let mut args: Vec<&std::ffi::OsStr> = vec![
            "install".as_ref(),
            "-q".as_ref(),
            "--disable-pip-version-check".as_ref(),
        ];
        args.extend(requirements.iter().map(|r| std::ffi::OsStr::new(*r)));
        run_ok(&pip, &args);
        std::fs::write(&stamp, &wanted).expect("write the stamp");
    });
    let _ = std::fs::remove_dir(&lock);
    if let Err(e) = built {
        std::panic::resume_unwind(e);
    }
    venv
}

/// Makes a virtualenv at `dir` with the embedded Python (`-m venv`, without pip
/// unless `with_pip`); returns that interpreter.
pub fn make_venv(dir: &std::path::Path, with_pip: bool) -> EmbeddedPython {
    let python = embedded_python();
    let mut args: Vec<&std::ffi::OsStr> = vec!["-m".as_ref(), "venv".as_ref()];
    if !with_pip {
        args.push("--without-pip".as_ref());
    }
    args.push(dir.as_os_str());
    run_ok(&python.program, &args);
    python
}
