//! `pyrs project.pyrs`: parses the command line (argh), loads the project file,
//! applies flag overrides and runs the server; any error is printed once as
//! `pyrs: {error}` with a non-zero exit code.

use std::process::ExitCode;

use pyrs::cli::Cli;
use pyrs::config::{Config, Workers};
use pyrs::server::Role;

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
    let workers = match config.workers {
        Workers::Count(n) => n,
        Workers::Auto => std::thread::available_parallelism().map_or(1, |n| n.get()),
    };
    if workers > 1 {
        pyrs::supervisor::run(config, workers)?;
    } else {
        pyrs::server::run(config, Role::Single)?;
    }
    Ok(())
}
