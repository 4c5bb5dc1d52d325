//! `pyrs project.pyrs`, the binary that embeds the Python it was built against:
//! hands its arguments to [`pyrs::entry::main`] and exits with its status.

use std::process::ExitCode;

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let python = format!(
        "Python {}{}",
        env!("PYRS_PYTHON_VERSION"),
        option_env!("PYRS_PYTHON_EXECUTABLE")
            .map(|exe| format!(", {exe}"))
            .unwrap_or_default()
    );
    let status = pyrs::entry::main(&args, &python);
    ExitCode::from(u8::try_from(status).unwrap_or(1))
}
