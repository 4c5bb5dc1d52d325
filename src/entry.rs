//! The program as a function, from command-line arguments to an exit status,
//! on the main thread: parses the flags (argh), loads the project file, applies
//! the `PYRS_*` environment variables and then the flags over it, checks the
//! result and runs the server (or the supervisor of several worker processes),
//! or prints it for `--print-config`. Shared by the `pyrs` binary (`main.rs`,
//! which embeds Python) and the Python package's `pyrs` command (the extension
//! module, running inside the user's interpreter); any error is printed once as
//! `pyrs: {error}`.

use std::io::Write;

use anyhow::Context;
use argh::FromArgs;

use crate::cli::{Cli, CliError, Source};
use crate::config::Config;
use crate::server::{self, Role};

/// Runs `pyrs` with `args` (the arguments after the program name). `python`
/// describes the interpreter for `--version` (e.g. `Python 3.11.7, /usr/bin/python3`).
/// Returns the process exit status.
pub fn main(args: &[String], python: &str) -> i32 {
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let cli = match Cli::from_args(&["pyrs"], &args) {
        Ok(cli) => cli,
        Err(exit) => {
            // --help (status Ok) goes to stdout, a usage error to stderr.
            return match exit.status {
                Ok(()) => {
                    println!("{}", exit.output);
                    0
                }
                Err(()) => {
                    eprintln!("{}\nRun pyrs --help for more information.", exit.output);
                    1
                }
            };
        }
    };
    if cli.version {
        println!("{}", Cli::version_line(python));
        return 0;
    }
    match run(&cli) {
        Ok(()) => 0,
        Err(e) => {
            eprintln!("pyrs: {e:#}");
            1
        }
    }
}

fn run(cli: &Cli) -> anyhow::Result<()> {
    let config = configure(cli)?;
    if cli.print_config {
        // Not print!: a closed pipe (`pyrs --print-config | head`) is an error, not a panic.
        let mut out = std::io::stdout().lock();
        out.write_all(config.show().as_bytes())
            .and_then(|()| out.flush())
            .context("writing the configuration")?;
        return Ok(());
    }
    // Server errors already name the file, key or address they are about.
    if config.reload || crate::supervisor::worker_count(&config) > 1 {
        // Watches the project folder until the supervisor returns.
        let watched = if config.reload {
            let (watcher, changes) = crate::watch::watch(&config.project_dir)?;
            eprintln!(
                "pyrs: --reload: watching {} for .py and .pyrs changes (for development, not \
                 production)",
                config.project_dir.display()
            );
            Some((watcher, changes))
        } else {
            None
        };
        let (_watcher, changes) = watched.unzip();
        // A reload reads everything again: the file, the environment, the flags,
        // and the TLS files (checked here too, so that a bad certificate is said
        // once, not once per worker).
        let mut reload = || {
            configure(cli)
                .and_then(|c| Ok(crate::tls::Acceptor::from_config(&c).map(|_| c)?))
                .map_err(|e| format!("{e:#}"))
        };
        crate::tls::Acceptor::from_config(&config)?;
        crate::supervisor::run(config, &mut reload, changes)?;
    } else {
        server::run(config, Role::Single)?;
    }
    Ok(())
}

/// The configuration to run: the file (or the app form's defaults), then the
/// environment, then the flags (command line > environment > file >
/// default), checked across keys once all are applied. `--print-config`
/// without a project shows the defaults under the environment and the flags.
fn configure(cli: &Cli) -> anyhow::Result<Config> {
    let mut config = match cli.source() {
        Ok(Source::Project(file)) => Config::read(&file)?,
        Ok(Source::App { app, dir }) => Config::for_app(app, &dir),
        Err(CliError::MissingProject) if cli.print_config => Config::bare(),
        Err(e) => return Err(e.into()),
    };
    for warning in config.apply_env(std::env::vars_os())? {
        eprintln!("pyrs: warning: {warning}");
    }
    for flag in &cli.statics {
        config.add_static_flag(flag)?;
    }
    cli.apply(&mut config)?;
    config.check()?;
    Ok(config)
}
