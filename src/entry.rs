//! The program as a function, from command-line arguments to an exit status,
//! on the main thread: parses the flags (argh), loads the project file, applies
//! the overrides and runs the server (or the supervisor of several worker
//! processes). Shared by the `pyrs` binary (`main.rs`, which embeds Python) and
//! the Python package's `pyrs` command (the extension module, running inside the
//! user's interpreter); any error is printed once as `pyrs: {error}`.

use argh::FromArgs;

use crate::cli::{Cli, Source};
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
    let config = load(cli)?;
    // Server errors already name the file, key or address they are about.
    if crate::supervisor::worker_count(&config) > 1 {
        // A reload reads everything again: the file, then the flags.
        let mut reload = || load(cli).map_err(|e| format!("{e:#}"));
        crate::supervisor::run(config, &mut reload, None)?;
    } else {
        server::run(config, Role::Single)?;
    }
    Ok(())
}

/// The configuration the command line asks for: the project file (or the app
/// form's defaults), then the flags.
fn load(cli: &Cli) -> anyhow::Result<Config> {
    let mut config = match cli.source()? {
        Source::Project(file) => Config::load(&file)?,
        Source::App { app, dir } => {
            let mut config = Config::for_app(app, &dir);
            for flag in &cli.statics {
                config.add_static_flag(flag)?;
            }
            config
        }
    };
    cli.apply(&mut config)?;
    Ok(config)
}
