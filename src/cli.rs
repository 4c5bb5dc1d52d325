//! Command line. This module owns the flags `pyrs` accepts, their help text,
//! and how they override the project file and the environment: `entry.rs`
//! parses them on the main thread at startup, loads the [`Config`] named by
//! the positional argument, applies the `PYRS_*` variables, then calls
//! [`Cli::apply`] (which records each flag as its key's [`Origin`]) and
//! [`Config::check`] before any socket or thread exists. Overrides are
//! checked against the same limits as the file's keys, so a bad flag is
//! refused with the flag's name instead of failing later in the listener.

use std::path::{Path, PathBuf};

use argh::FromArgs;
use thiserror::Error;

use crate::config::{
    check_address, check_thread_count, AccessLog, AppSpec, Config, Interface, Origin, Workers,
    MAX_PYTHON_THREADS, MAX_WORKERS,
};

/// pyrs: serve Python handlers and WSGI applications over HTTP/1.1. A Rust
/// core accepts connections, parses requests and routes each path to the Python
/// method or application named in the project file (JSON with comments: listen
/// address and port, thread count, and a "modules" list), or serves one WSGI
/// application named as module:attribute.
#[derive(FromArgs, Debug, PartialEq)]
#[argh(
    help_triggers("-h", "--help", "help"),
    example = "pyrs project.pyrs\npyrs -a 127.0.0.1 -p 0 -t 4 examples/template/project.pyrs\npyrs main:app\npyrs --interface wsgi mysite.wsgi:application -p 8000 -w 4\nPYRS_WORKERS=4 pyrs --print-config project.pyrs",
    note = "Flags override the matching keys of the project file, and so do environment \
            variables named PYRS_ and the key in upper case (PYRS_WORKERS=4); a flag beats \
            the variable. Python modules are imported from the folder holding the project \
            file. With --port 0 the OS picks a free port; the bound port is printed on the \
            `Port:` line."
)]
pub struct Cli {
    /// project file (project.pyrs), or an application as module:attribute
    #[argh(positional)]
    pub project: Option<PathBuf>,

    /// listen address, overrides http_listen_address
    #[argh(option, short = 'a')]
    pub address: Option<String>,

    /// listen port (0 = pick a free one), overrides http_listen_port
    #[argh(option, short = 'p')]
    pub port: Option<u16>,

    /// reactor thread count, overrides thread_count
    #[argh(option, short = 't')]
    pub threads: Option<usize>,

    /// worker processes: a number or "auto" (one per CPU), overrides workers
    #[argh(option, short = 'w')]
    pub workers: Option<String>,

    /// threads calling blocking handlers and WSGI apps, overrides
    /// python_threads
    #[argh(option)]
    pub python_threads: Option<usize>,

    /// application interface: wsgi, asgi or auto (default: detected)
    #[argh(option)]
    pub interface: Option<String>,

    /// the application attribute is a factory: call it once to get the app
    #[argh(switch)]
    pub factory: bool,

    /// folder to import the application from (default: the current folder)
    #[argh(option)]
    pub app_dir: Option<PathBuf>,

    /// serve a folder from the reactors as URL=FOLDER, e.g. /static=public
    /// (repeatable; with an application)
    #[argh(option, long = "static")]
    pub statics: Vec<String>,

    /// append one line per request to PATH ("-" = standard output),
    /// overrides access_log
    #[argh(option)]
    pub access_log: Option<String>,

    /// PEM certificate chain: serve HTTPS (with --tls-key), overrides
    /// tls_cert
    #[argh(option)]
    pub tls_cert: Option<PathBuf>,

    /// PEM private key of --tls-cert, overrides tls_key
    #[argh(option)]
    pub tls_key: Option<PathBuf>,

    /// reload when a .py or .pyrs file of the project changes (for
    /// development)
    #[argh(switch)]
    pub reload: bool,

    /// print the effective configuration, with where each value came from,
    /// and exit
    #[argh(switch)]
    pub print_config: bool,

    /// print version and exit
    #[argh(switch, short = 'V')]
    pub version: bool,
}

/// What the positional argument names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Source {
    /// A project file.
    Project(PathBuf),
    /// An application (`main:app`) and the folder to import it from.
    App { app: AppSpec, dir: PathBuf },
}

/// A command line that parsed but cannot be used.
#[derive(Debug, Error, PartialEq, Eq)]
pub enum CliError {
    /// No project file was given (and `--version` was not asked for).
    #[error("missing project file: run `pyrs project.pyrs` (see `pyrs --help`)")]
    MissingProject,

    /// `--address` is neither an IP address nor a host name.
    #[error("--address {address:?}: {message}")]
    Address { address: String, message: String },

    /// `--threads` is outside `1..=MAX_THREAD_COUNT`.
    #[error("--threads {threads}: {message}")]
    Threads { threads: usize, message: String },

    /// `--python-threads` is outside `1..=MAX_PYTHON_THREADS`.
    #[error("--python-threads {threads}: must be between 1 and {max}", max = MAX_PYTHON_THREADS)]
    PythonThreads { threads: usize },

    /// `--interface` is not `wsgi`, `asgi` or `auto`.
    #[error("--interface {interface:?}: {message}")]
    Interface { interface: String, message: String },

    /// `--interface`, `--factory` or `--app-dir` with a project file.
    #[error("{flag} applies to an application (pyrs module:app), not to a project file")]
    AppFlag { flag: &'static str },

    /// `--workers` is neither a count in `1..=MAX_WORKERS` nor `auto`.
    #[error("--workers {workers:?}: must be between 1 and {max}, or \"auto\"", max = MAX_WORKERS)]
    Workers { workers: String },

    /// `--access-log` names no file.
    #[error("--access-log {path:?}: {message}")]
    AccessLog { path: String, message: String },
}

impl Cli {
    /// The project file to load.
    pub fn project_file(&self) -> Result<&Path, CliError> {
        self.project.as_deref().ok_or(CliError::MissingProject)
    }

    /// What to serve: the positional argument is an application when it reads
    /// as `module:attribute` and no file has that name, a project file otherwise.
    pub fn source(&self) -> Result<Source, CliError> {
        let given = self.project_file()?;
        let interface = match self.interface.as_deref() {
            Some(name) => Interface::parse(name).map_err(|message| CliError::Interface {
                interface: name.to_owned(),
                message,
            })?,
            None => Interface::Auto,
        };
        let app = given
            .to_str()
            .filter(|_| !given.exists())
            .and_then(|text| AppSpec::parse(text, interface, self.factory).ok());
        match app {
            Some(app) => Ok(Source::App {
                app,
                dir: self.app_dir.clone().unwrap_or_else(|| PathBuf::from(".")),
            }),
            None => {
                let flag = if self.interface.is_some() {
                    Some("--interface")
                } else if self.factory {
                    Some("--factory")
                } else if self.app_dir.is_some() {
                    Some("--app-dir")
                } else if !self.statics.is_empty() {
                    Some("--static")
                } else {
                    None
                };
                match flag {
                    Some(flag) => Err(CliError::AppFlag { flag }),
                    None => Ok(Source::Project(given.to_path_buf())),
                }
            }
        }
    }

    /// The line `--version` prints.
    /// What `--version` prints: pyrs's version and the Python it runs on.
    pub fn version_line(python: &str) -> String {
        format!("pyrs {} ({python})", env!("CARGO_PKG_VERSION"))
    }

    /// Writes the flags given into `config`. Every override is checked
    /// before any is applied, so on error `config` is unchanged.
    pub fn apply(&self, config: &mut Config) -> Result<(), CliError> {
        if let Some(address) = &self.address {
            check_address(address).map_err(|message| CliError::Address {
                address: address.clone(),
                message: message.to_owned(),
            })?;
        }
        if let Some(threads) = self.threads {
            check_thread_count(threads)
                .map_err(|message| CliError::Threads { threads, message })?;
        }
        let workers = match self.workers.as_deref() {
            None => None,
            Some("auto") => Some(Workers::Auto),
            Some(n) => match n.parse::<usize>() {
                Ok(n) if (1..=MAX_WORKERS).contains(&n) => Some(Workers::Count(n)),
                _ => {
                    return Err(CliError::Workers {
                        workers: n.to_owned(),
                    })
                }
            },
        };
        if let Some(threads) = self.python_threads {
            if !(1..=MAX_PYTHON_THREADS).contains(&threads) {
                return Err(CliError::PythonThreads { threads });
            }
        }
        let access_log = self.access_log.as_deref().map(access_log).transpose()?;

        let origins = &mut config.origins;
        if let Some(address) = &self.address {
            config.http_listen_address.clone_from(address);
            origins.set("http_listen_address", Origin::Flag("--address"));
        }
        if let Some(port) = self.port {
            config.http_listen_port = port;
            origins.set("http_listen_port", Origin::Flag("--port"));
        }
        if let Some(threads) = self.threads {
            config.thread_count = threads;
            origins.set("thread_count", Origin::Flag("--threads"));
        }
        if let Some(workers) = workers {
            config.workers = workers;
            origins.set("workers", Origin::Flag("--workers"));
        }
        if let Some(threads) = self.python_threads {
            config.python_threads = threads;
            origins.set("python_threads", Origin::Flag("--python-threads"));
        }
        if let Some(log) = access_log {
            config.access_log = log;
            origins.set("access_log", Origin::Flag("--access-log"));
        }
        // Relative to the current folder, as a shell user expects.
        if let Some(path) = &self.tls_cert {
            config.tls_cert = Some(std::path::absolute(path).unwrap_or_else(|_| path.clone()));
            origins.set("tls_cert", Origin::Flag("--tls-cert"));
        }
        if let Some(path) = &self.tls_key {
            config.tls_key = Some(std::path::absolute(path).unwrap_or_else(|_| path.clone()));
            origins.set("tls_key", Origin::Flag("--tls-key"));
        }
        if self.reload {
            config.reload = true;
        }
        Ok(())
    }
}

/// `--access-log PATH`: `-` is standard output; a file is relative to the
/// current folder (the file's and the environment's are relative to the
/// project folder).
fn access_log(path: &str) -> Result<AccessLog, CliError> {
    let fail = |message: String| CliError::AccessLog {
        path: path.to_owned(),
        message,
    };
    match path {
        "-" => Ok(AccessLog::Stdout),
        "" => Err(fail(
            "must name a file, or \"-\" for standard output".to_owned(),
        )),
        path => std::path::absolute(path)
            .map(AccessLog::File)
            .map_err(|e| fail(e.to_string())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(args: &[&str]) -> Result<Cli, argh::EarlyExit> {
        Cli::from_args(&["pyrs"], args)
    }

    fn config() -> Config {
        let text = r#"{"modules": [{"path": "/", "module": "m", "class": "C", "handler": "h"}]}"#;
        Config::from_str(text, Path::new("project.pyrs")).expect("test config loads")
    }

    fn cli() -> Cli {
        Cli {
            project: Some(PathBuf::from("project.pyrs")),
            address: None,
            port: None,
            threads: None,
            workers: None,
            python_threads: None,
            interface: None,
            factory: false,
            app_dir: None,
            statics: Vec::new(),
            access_log: None,
            tls_cert: None,
            tls_key: None,
            reload: false,
            print_config: false,
            version: false,
        }
    }

    #[test]
    fn an_app_spec_is_the_app_form_and_a_file_the_project_form() {
        let cli = parse(&["--interface", "wsgi", "--factory", "main:create"]).expect("parses");
        let Ok(Source::App { app, dir }) = cli.source() else {
            panic!("{:?}", cli.source());
        };
        assert_eq!((app.module.as_str(), app.attr.as_str()), ("main", "create"));
        assert_eq!((app.interface, app.factory), (Interface::Wsgi, true));
        assert_eq!(dir, PathBuf::from("."));
        let cli = parse(&["--app-dir", "/srv", "mysite.wsgi:application"]).expect("parses");
        assert!(matches!(cli.source(), Ok(Source::App { dir, .. }) if dir == Path::new("/srv")));
        // Not module:attr (or an existing file): a project file.
        let cli = parse(&["site.pyrs"]).expect("parses");
        assert_eq!(
            cli.source(),
            Ok(Source::Project(PathBuf::from("site.pyrs")))
        );
        let cli = parse(&["--factory", "site.pyrs"]).expect("parses");
        assert_eq!(cli.source(), Err(CliError::AppFlag { flag: "--factory" }));
        let cli = parse(&["--interface", "rsgi", "main:app"]).expect("parses");
        assert!(matches!(cli.source(), Err(CliError::Interface { .. })));
    }

    #[test]
    fn python_threads_flag_overrides_the_file_within_its_range() {
        let mut c = config();
        let cli = parse(&["--python-threads", "8", "x.pyrs"]).expect("parses");
        cli.apply(&mut c).expect("applies");
        assert_eq!(c.python_threads, 8);
        let cli = parse(&["--python-threads", "0", "x.pyrs"]).expect("parses");
        assert_eq!(
            cli.apply(&mut c),
            Err(CliError::PythonThreads { threads: 0 })
        );
        assert_eq!(c.python_threads, 8, "unchanged on error");
    }

    #[test]
    fn workers_flag_overrides_the_file() {
        let mut c = config();
        let cli = parse(&["--workers", "auto", "x.pyrs"]).expect("parses");
        cli.apply(&mut c).expect("applies");
        assert_eq!(c.workers, Workers::Auto);
        let cli = parse(&["-w", "3", "x.pyrs"]).expect("parses");
        cli.apply(&mut c).expect("applies");
        assert_eq!(c.workers, Workers::Count(3));
        let cli = parse(&["-w", "0", "x.pyrs"]).expect("parses");
        assert!(matches!(cli.apply(&mut c), Err(CliError::Workers { .. })));
        assert_eq!(c.workers, Workers::Count(3));
    }

    #[test]
    fn flags_record_their_origin_and_beat_the_environment() {
        let mut c = config();
        c.apply_env([
            ("PYRS_HTTP_LISTEN_PORT", "9000"),
            ("PYRS_THREAD_COUNT", "3"),
        ])
        .expect("applies");
        let cli = parse(&["-p", "0", "x.pyrs"]).expect("parses");
        cli.apply(&mut c).expect("applies");
        assert_eq!((c.http_listen_port, c.thread_count), (0, 3));
        assert_eq!(c.origins.get("http_listen_port"), &Origin::Flag("--port"));
        assert_eq!(
            c.origins.get("thread_count"),
            &Origin::Env("PYRS_THREAD_COUNT".to_owned())
        );
    }

    #[test]
    fn access_log_flag_is_relative_to_the_current_folder() {
        let mut c = config();
        let cli = parse(&["--access-log", "logs/a.log", "x.pyrs"]).expect("parses");
        cli.apply(&mut c).expect("applies");
        let here = std::env::current_dir().expect("a current folder");
        assert_eq!(c.access_log, AccessLog::File(here.join("logs/a.log")));
        assert_eq!(c.origins.get("access_log"), &Origin::Flag("--access-log"));
        let cli = parse(&["--access-log", "-", "x.pyrs"]).expect("parses");
        cli.apply(&mut c).expect("applies");
        assert_eq!(c.access_log, AccessLog::Stdout);
        let cli = parse(&["--access-log", "", "x.pyrs"]).expect("parses");
        assert!(matches!(cli.apply(&mut c), Err(CliError::AccessLog { .. })));
        assert_eq!(c.access_log, AccessLog::Stdout, "unchanged on error");
    }

    #[test]
    fn reload_and_print_config_are_switches() {
        let mut c = config();
        let cli = parse(&["--reload", "--print-config", "x.pyrs"]).expect("parses");
        assert!(cli.print_config);
        cli.apply(&mut c).expect("applies");
        assert!(c.reload);
        let cli = parse(&["--print-config"]).expect("parses without a project");
        assert_eq!(cli.project_file(), Err(CliError::MissingProject));
        let mut c = config();
        cli.apply(&mut c).expect("applies");
        assert!(!c.reload);
    }

    #[test]
    fn parses_port_and_project() {
        let cli = parse(&["--port", "0", "x.pyrs"]).expect("parses");
        assert_eq!(cli.port, Some(0));
        assert_eq!(cli.project, Some(PathBuf::from("x.pyrs")));
        assert_eq!(cli.address, None);
        assert_eq!(cli.threads, None);
        assert!(!cli.version);
    }

    #[test]
    fn parses_short_flags() {
        let cli = parse(&["-a", "127.0.0.1", "-p", "9000", "-t", "4", "p.pyrs"]).expect("parses");
        assert_eq!(cli.address.as_deref(), Some("127.0.0.1"));
        assert_eq!(cli.port, Some(9000));
        assert_eq!(cli.threads, Some(4));
        assert_eq!(cli.project_file(), Ok(Path::new("p.pyrs")));
    }

    #[test]
    fn parses_version_without_project() {
        let cli = parse(&["-V"]).expect("parses");
        assert!(cli.version);
        assert_eq!(cli.project_file(), Err(CliError::MissingProject));
        assert_eq!(
            Cli::version_line("Python 3.x, /p"),
            format!("pyrs {} (Python 3.x, /p)", env!("CARGO_PKG_VERSION"))
        );
    }

    #[test]
    fn rejects_port_out_of_range() {
        let exit = parse(&["--port", "70000", "x.pyrs"]).expect_err("refused");
        assert!(exit.status.is_err());
        assert!(exit.output.contains("--port"), "{}", exit.output);
    }

    #[test]
    fn rejects_unknown_flag() {
        let exit = parse(&["--bogus", "x.pyrs"]).expect_err("refused");
        assert!(exit.status.is_err());
        assert!(exit.output.contains("--bogus"), "{}", exit.output);
    }

    #[test]
    fn prints_help_for_short_h() {
        let exit = parse(&["-h"]).expect_err("help exits early");
        assert!(exit.status.is_ok());
        for flag in ["--threads", "--access-log", "--reload", "--print-config"] {
            assert!(exit.output.contains(flag), "{flag}: {}", exit.output);
        }
        assert!(
            exit.output.contains("serve Python handlers"),
            "{}",
            exit.output
        );
    }

    #[test]
    fn applies_overrides() {
        let mut config = config();
        let cli = Cli {
            address: Some("127.0.0.1".to_owned()),
            port: Some(0),
            threads: Some(8),
            ..cli()
        };
        cli.apply(&mut config).expect("valid overrides");
        assert_eq!(config.http_listen_address, "127.0.0.1");
        assert_eq!(config.http_listen_port, 0);
        assert_eq!(config.thread_count, 8);
    }

    #[test]
    fn keeps_config_without_overrides() {
        let mut config = config();
        let before = config.clone();
        cli().apply(&mut config).expect("nothing to apply");
        assert_eq!(config, before);
    }

    #[test]
    fn rejects_zero_threads_naming_flag() {
        let mut config = config();
        let before = config.clone();
        let cli = Cli {
            threads: Some(0),
            port: Some(1),
            ..cli()
        };
        let err = cli.apply(&mut config).expect_err("refused");
        assert_eq!(err.to_string(), "--threads 0: must be at least 1");
        assert_eq!(config, before);
    }

    #[test]
    fn rejects_too_many_threads_naming_flag() {
        let cli = Cli {
            threads: Some(5000),
            ..cli()
        };
        let err = cli.apply(&mut config()).expect_err("refused");
        assert_eq!(err.to_string(), "--threads 5000: must be at most 1024");
    }

    #[test]
    fn rejects_bad_address_naming_flag() {
        let cli = Cli {
            address: Some("not an address".to_owned()),
            ..cli()
        };
        let err = cli.apply(&mut config()).expect_err("refused");
        assert_eq!(
            err.to_string(),
            "--address \"not an address\": must be an IP address such as \"0.0.0.0\" or \
             \"::1\", a host name, or \"unix:PATH\""
        );
    }
}
