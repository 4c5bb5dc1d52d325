//! `PYRS_*` variables: each key's variable read by the file's reader, the
//! origins they leave, the errors naming the variable, the warnings for near
//! misses, checks across keys after overrides, and `--print-config`'s lines.
//! The variables are handed in as a list; the process environment is not
//! touched.

use super::tests::{at, ONE_MODULE};
use super::*;

fn project() -> Config {
    Config::parse(
        &format!("{{\"thread_count\": 4,{ONE_MODULE}}}"),
        Path::new("project.pyrs"),
    )
    .expect("test project loads")
}

/// `project()` under `vars`; the warnings.
fn apply(config: &mut Config, vars: &[(&str, &str)]) -> Result<Vec<String>, ConfigError> {
    config.apply_env(vars.iter().copied())
}

fn env_error(vars: &[(&str, &str)]) -> String {
    let mut config = project();
    let before = config.clone();
    let err = apply(&mut config, vars).expect_err("refused");
    assert_eq!(config, before, "unchanged on error");
    err.to_string()
}

#[test]
fn names_each_key_with_its_variable() {
    assert_eq!(env_variable("http_listen_port"), "PYRS_HTTP_LISTEN_PORT");
    assert_eq!(env_variable("static"), "PYRS_STATIC");
}

#[test]
fn environment_overrides_the_file_and_records_its_origin() {
    let mut config = project();
    let warnings = apply(
        &mut config,
        &[
            ("PYRS_HTTP_LISTEN_PORT", "0"),
            ("PYRS_THREAD_COUNT", "8"),
            ("PYRS_HTTP_LISTEN_ADDRESS", "127.0.0.1"),
            ("PYRS_WORKERS", "auto"),
            ("PYRS_TCP_NODELAY", "true"),
            ("PYRS_SHUTDOWN_TIMEOUT", "2.5"),
            ("PYRS_METRICS_ADDRESS", "127.0.0.1:9100"),
            ("PYRS_ACCESS_LOG_FORMAT", "$status $path"),
            ("PYRS_MAX_REQUESTS", "1000"),
            ("HOME", "/root"),
        ],
    )
    .expect("applies");
    assert!(warnings.is_empty(), "{warnings:?}");
    assert_eq!(config.http_listen_port, 0);
    assert_eq!(config.thread_count, 8);
    assert_eq!(config.http_listen_address, "127.0.0.1");
    assert_eq!(config.workers, Workers::Auto);
    assert!(config.tcp_nodelay);
    assert_eq!(config.shutdown_timeout, 2.5);
    assert_eq!(config.metrics_address.as_deref(), Some("127.0.0.1:9100"));
    assert_eq!(config.access_log_format.as_deref(), Some("$status $path"));
    assert_eq!(config.max_requests, 1000);
    let origin = |key| config.origins.get(key).clone();
    assert_eq!(
        origin("thread_count"),
        Origin::Env("PYRS_THREAD_COUNT".into())
    );
    assert_eq!(origin("workers"), Origin::Env("PYRS_WORKERS".into()));
    assert_eq!(origin("modules"), Origin::File(at(2, 16)));
    assert_eq!(origin("listen_backlog"), Origin::Default);
}

#[test]
fn a_json_string_is_read_as_its_text() {
    let mut config = project();
    apply(
        &mut config,
        &[
            ("PYRS_HTTP_LISTEN_ADDRESS", "\"::1\""),
            ("PYRS_WORKERS", " 3 "),
        ],
    )
    .expect("applies");
    assert_eq!(config.http_listen_address, "::1");
    assert_eq!(config.workers, Workers::Count(3));
}

#[test]
fn relative_access_log_resolves_against_the_project_folder() {
    let mut config = project();
    apply(&mut config, &[("PYRS_ACCESS_LOG", "logs/access.log")]).expect("applies");
    let expected = config.project_dir.join("logs/access.log");
    assert_eq!(config.access_log, AccessLog::File(expected));
    for (text, log) in [
        ("-", AccessLog::Stdout),
        ("true", AccessLog::Stdout),
        ("false", AccessLog::Off),
    ] {
        apply(&mut config, &[("PYRS_ACCESS_LOG", text)]).expect("applies");
        assert_eq!(config.access_log, log, "{text}");
    }
}

#[test]
fn a_bad_value_names_the_variable() {
    assert_eq!(
        env_error(&[("PYRS_THREAD_COUNT", "0")]),
        "environment variable PYRS_THREAD_COUNT: must be at least 1"
    );
    assert_eq!(
        env_error(&[("PYRS_THREAD_COUNT", "two")]),
        "environment variable PYRS_THREAD_COUNT: expected an integer, found a string"
    );
    assert_eq!(
        env_error(&[("PYRS_HTTP_LISTEN_PORT", "70000")]),
        "environment variable PYRS_HTTP_LISTEN_PORT: port must be 0..=65535, found 70000"
    );
    assert_eq!(
        env_error(&[("PYRS_WORKERS", "0")]),
        "environment variable PYRS_WORKERS: must be between 1 and 1024, or \"auto\", found 0"
    );
    assert_eq!(
        env_error(&[("PYRS_ACCESS_LOG", "")]),
        "environment variable PYRS_ACCESS_LOG: expected a file path, true or false, found an \
         empty string"
    );
}

#[test]
fn a_value_that_is_not_utf8_is_refused() {
    use std::os::unix::ffi::OsStrExt;
    let mut config = project();
    let bad = std::ffi::OsStr::from_bytes(b"\xff");
    let err = config
        .apply_env([(std::ffi::OsStr::new("PYRS_ACCESS_LOG"), bad)])
        .expect_err("refused");
    assert_eq!(
        err.to_string(),
        "environment variable PYRS_ACCESS_LOG: is not valid UTF-8"
    );
}

#[test]
fn warns_about_near_misses_only() {
    let mut config = project();
    let warnings = apply(
        &mut config,
        &[
            ("PYRS_THREADS_COUNT", "2"),
            ("PYRS_PORT", "1"),
            ("PYRS_thread_count", "3"),
            ("PYRS_BIN", "/usr/bin/pyrs"),
            ("PYRS_BENCH_BUILD_FAILED", "1"),
            ("PYRS_PYTHON_VERSION", "3.12"),
            ("PYRS_PYTHON_EXECUTABLE", "/usr/bin/python3"),
            ("THREAD_COUNT", "5"),
        ],
    )
    .expect("no key is set");
    assert_eq!(
        warnings,
        [
            "PYRS_PORT is not a setting; did you mean PYRS_HTTP_LISTEN_PORT?",
            "PYRS_THREADS_COUNT is not a setting; did you mean PYRS_THREAD_COUNT?",
            "PYRS_thread_count is not a setting; did you mean PYRS_THREAD_COUNT?",
        ]
    );
    assert_eq!(config.thread_count, 4, "nothing applied");
}

#[test]
fn cross_key_checks_see_the_overrides() {
    // The file's max_connections is below the environment's thread_count.
    let text = format!("{{\"max_connections\": 4,{ONE_MODULE}}}");
    let mut config = Config::parse(&text, Path::new("project.pyrs")).expect("parses");
    config.check().expect("4 >= the default 2 threads");
    apply(&mut config, &[("PYRS_THREAD_COUNT", "8")]).expect("applies");
    assert_eq!(
        config.check().expect_err("refused").to_string(),
        "project.pyrs:1:21: key \"max_connections\": must be at least thread_count \
         (8, from env PYRS_THREAD_COUNT)"
    );
    // A max_connections from the environment is named as such.
    apply(&mut config, &[("PYRS_MAX_CONNECTIONS", "2")]).expect("applies");
    assert_eq!(
        config.check().expect_err("refused").to_string(),
        "environment variable PYRS_MAX_CONNECTIONS: must be at least thread_count \
         (8, from env PYRS_THREAD_COUNT)"
    );
}

#[test]
fn the_environment_can_fix_what_the_file_alone_gets_wrong() {
    let text = format!("{{\"thread_count\": 8, \"max_connections\": 4,{ONE_MODULE}}}");
    assert!(Config::from_str(&text, Path::new("project.pyrs")).is_err());
    let mut config = Config::parse(&text, Path::new("project.pyrs")).expect("parses");
    apply(&mut config, &[("PYRS_MAX_CONNECTIONS", "100")]).expect("applies");
    config.check().expect("100 >= 8");
}

#[test]
fn modules_from_the_environment_replace_the_file_s() {
    let mut config = project();
    let list = r#"[{"path": "/*", "app": "main:app", "interface": "wsgi"}]"#;
    apply(&mut config, &[("PYRS_MODULES", list)]).expect("applies");
    assert_eq!(config.modules.len(), 1);
    assert!(
        matches!(&config.modules[0].target, Target::App(app) if app.interface == Interface::Wsgi)
    );
    // A Python error found later names the variable and the position in it.
    assert_eq!(
        ConfigError::at(&config, 0, "app", "cannot import module \"main\"").to_string(),
        "environment variable PYRS_MODULES:1:24: key \"modules[0].app\": cannot import module \
         \"main\""
    );
    assert_eq!(
        env_error(&[(
            "PYRS_MODULES",
            r#"[{"path": "/", "module": "m", "clas": "C"}]"#
        )]),
        "environment variable PYRS_MODULES:1:31: key \"modules[0]\": unknown key \"clas\" \
         (did you mean \"class\"?)"
    );
    assert_eq!(
        env_error(&[("PYRS_MODULES", "[")]),
        "environment variable PYRS_MODULES:1:1: EOF while parsing a list"
    );
    assert_eq!(
        env_error(&[("PYRS_STATIC", "{}")]),
        "environment variable PYRS_STATIC:1:1: key \"static\": expected an array of static \
         mounts, found an object"
    );
    let mut config = project();
    apply(&mut config, &[("PYRS_MODULES", "[]")]).expect("applies");
    assert_eq!(
        config.check().expect_err("refused").to_string(),
        "environment variable PYRS_MODULES: must list at least one module"
    );
}

#[test]
fn the_app_form_takes_the_environment_too() {
    let app = AppSpec::parse("main:app", Interface::Auto, false).expect("an app");
    let mut config = Config::for_app(app, Path::new("."));
    apply(
        &mut config,
        &[("PYRS_LISTEN_BACKLOG", "5"), ("PYRS_MAX_CONNECTIONS", "1")],
    )
    .expect("applies");
    assert_eq!(config.listen_backlog, 5);
    assert_eq!(
        config.check().expect_err("refused").to_string(),
        "environment variable PYRS_MAX_CONNECTIONS: must be at least thread_count (2)"
    );
}

#[test]
fn shows_each_key_with_its_value_and_origin() {
    let mut config = project();
    apply(
        &mut config,
        &[
            ("PYRS_WORKERS", "auto"),
            ("PYRS_METRICS_ADDRESS", "[::1]:9100"),
        ],
    )
    .expect("applies");
    config
        .origins
        .set("http_listen_port", Origin::Flag("--port"));
    let shown = config.show();
    let lines: Vec<&str> = shown.lines().collect();
    assert_eq!(lines.len(), TOP_LEVEL_KEYS.len());
    for (line, key) in lines.iter().zip(TOP_LEVEL_KEYS) {
        assert!(line.starts_with(&format!("{key} ")), "{line}");
    }
    let line = |key: &str| {
        let line = lines
            .iter()
            .find(|line| line.split(' ').next() == Some(key))
            .expect("a line per key");
        // `key = value  # origin`, without the padding.
        line.split_whitespace().collect::<Vec<_>>().join(" ")
    };
    assert_eq!(line("thread_count"), "thread_count = 4 # project.pyrs:1:18");
    assert_eq!(line("workers"), "workers = \"auto\" # env PYRS_WORKERS");
    assert_eq!(
        line("metrics_address"),
        "metrics_address = \"[::1]:9100\" # env PYRS_METRICS_ADDRESS"
    );
    assert_eq!(
        line("http_listen_port"),
        "http_listen_port = 8094 # flag --port"
    );
    assert_eq!(
        line("access_log_format"),
        "access_log_format = null # default"
    );
    assert_eq!(line("shutdown_timeout"), "shutdown_timeout = 30 # default");
    assert_eq!(
        line("modules"),
        "modules = [{\"path\": \"/\", \"module\": \"main\", \"class\": \"Api\", \"handler\": \
         \"h\"}] # project.pyrs:2:16"
    );
}

#[test]
fn shown_strings_are_json() {
    assert_eq!(
        show::json_string("a\"b\\c\n\u{1}"),
        "\"a\\\"b\\\\c\\n\\u0001\""
    );
}

#[test]
fn tls_settings_come_from_the_environment() {
    let mut config = project();
    let vars = [
        ("PYRS_TLS_CERT", "site.pem"),
        ("PYRS_TLS_KEY", "/keys/site.key"),
        ("PYRS_TLS_MIN_VERSION", "1.3"),
    ];
    apply(&mut config, &vars).expect("applies");
    assert_eq!(config.tls_cert, Some(config.project_dir.join("site.pem")));
    assert_eq!(config.tls_key, Some(PathBuf::from("/keys/site.key")));
    assert_eq!(config.tls_min_version, TlsVersion::V1_3);
    config.check().expect("cert and key together");
}
