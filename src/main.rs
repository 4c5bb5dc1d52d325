//! `pyrs project.pyrs`: parses the command line (argh), loads the project file,
//! applies flag overrides and runs the server; any error is printed once as
//! `pyrs: {error}` with a non-zero exit code.

use std::process::ExitCode;

use pyrs::cli::Cli;
use pyrs::config::Config;

fn main() -> ExitCode {
    let cli: Cli = argh::from_env();
    if cli.version {
        println!("{}", Cli::version_line());
        return ExitCode::SUCCESS;
    }
    match run(&cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("pyrs: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn run(cli: &Cli) -> anyhow::Result<()> {
    let file = cli.project_file()?;
    let mut config = Config::load(file)?;
    cli.apply(&mut config)?;
    // Server errors already name the file, key or address they are about.
    pyrs::server::run(config)?;
    Ok(())
}
