use super::*;

const TEMPLATE: &str = r#"{
  "http_listen_address": "127.0.0.1", /* [optional]. Default is "0.0.0.0" */
  "http_listen_port": 8000, /* [optional]. Default is "8094" */
  "thread_count": 2, /* [optional]. Default is "2" */
  "tcp_nodelay": false, /* [optional]. Default is "false" */
  "listen_backlog": 1, /* [optional]. The maximum length to which the queue of pending may grow. Default is "10" */

  "modules": [ /* Python handlers */

    {
      "path": "/echo", /* handlers for http://url:port/echo */
      "module": "main", /* name of python module */
      "class": "Api", /* class name */
      "handler": "echo_request" /* handler method name */
    },

    {
      "path": "/*",
      "module": "main",
      "class": "Api",
      "handler": "default_request"
    }

  ]
}
"#;

pub(super) const ONE_MODULE: &str = r#"
    "modules": [{"path": "/", "module": "main", "class": "Api", "handler": "h"}]"#;

fn load(text: &str) -> Result<Config, ConfigError> {
    Config::from_str(text, Path::new("project.pyrs"))
}

fn error(text: &str) -> String {
    match load(text) {
        Ok(config) => panic!("expected an error, loaded {config:?}"),
        Err(err) => err.to_string(),
    }
}

pub(super) fn at(line: usize, column: usize) -> Location {
    Location { line, column }
}

/// (module, class, handler) of a handler entry.
fn handler_of(entry: &ModuleEntry) -> (&str, &str, &str) {
    match &entry.target {
        Target::Handler {
            module,
            class,
            handler,
            ..
        } => (module, class, handler),
        Target::App(app) => panic!("an app entry: {app:?}"),
    }
}

#[test]
fn loads_readme_template_unchanged() {
    let config = load(TEMPLATE).expect("template loads");
    assert_eq!(config.http_listen_address, "127.0.0.1");
    assert_eq!(config.http_listen_port, 8000);
    assert_eq!(config.thread_count, 2);
    assert!(!config.tcp_nodelay);
    assert_eq!(config.listen_backlog, 1);
    assert_eq!(config.max_body_size, DEFAULT_MAX_BODY_SIZE);
    assert_eq!(config.max_head_size, DEFAULT_MAX_HEAD_SIZE);
    assert_eq!(config.shutdown_timeout, 30.0);
    assert_eq!(config.modules.len(), 2);
    let echo = &config.modules[0];
    assert_eq!(echo.path, "/echo");
    assert_eq!(handler_of(echo), ("main", "Api", "echo_request"));
    assert_eq!(echo.location, at(10, 5));
    assert_eq!(config.modules[1].path, "/*");
    assert_eq!(handler_of(&config.modules[1]).2, "default_request");
    assert_eq!(config.modules[1].location, at(17, 5));
    assert_eq!(config.file, PathBuf::from("project.pyrs"));
    assert!(config.project_dir.is_absolute());
}

#[test]
fn applies_defaults_for_missing_keys() {
    let config = load(&format!("{{{ONE_MODULE}}}")).expect("loads");
    assert_eq!(config.http_listen_address, "0.0.0.0");
    assert_eq!(config.http_listen_port, 8094);
    assert_eq!(config.thread_count, 2);
    assert!(!config.tcp_nodelay);
    assert_eq!(config.listen_backlog, 10);
    assert_eq!(config.max_body_size, 16 * 1024 * 1024);
    assert_eq!(config.max_head_size, 16 * 1024);
    assert_eq!(config.shutdown_timeout, 30.0);
}

#[test]
fn reads_new_keys() {
    let text = format!(
        "{{\"max_body_size\": 1024, \"max_head_size\": 2048, \
         \"shutdown_timeout\": 2.5, \"tcp_nodelay\": true,{ONE_MODULE}}}"
    );
    let config = load(&text).expect("loads");
    assert_eq!(config.max_body_size, 1024);
    assert_eq!(config.max_head_size, 2048);
    assert_eq!(config.shutdown_timeout, 2.5);
    assert!(config.tcp_nodelay);
}

#[test]
fn reads_workers_and_event_loop() {
    let config = load(&format!(
        "{{\"workers\": 3, \"event_loop\": \"asyncio\",{ONE_MODULE}}}"
    ))
    .expect("loads");
    assert_eq!(config.workers, Workers::Count(3));
    assert_eq!(config.event_loop, EventLoop::Asyncio);
    let config = load(&format!("{{\"workers\": \"auto\",{ONE_MODULE}}}")).expect("loads");
    assert_eq!(config.workers, Workers::Auto);
    let config = load(&format!("{{{ONE_MODULE}}}")).expect("loads");
    assert_eq!(config.workers, Workers::Count(1));
    assert_eq!(config.event_loop, EventLoop::Auto);
}

#[test]
fn rejects_bad_workers() {
    for (value, message) in [
        ("0", "must be between 1 and 1024, or \"auto\", found 0"),
        (
            "\"many\"",
            "expected an integer or \"auto\", found \"many\"",
        ),
    ] {
        let text = format!("{{\"workers\": {value},{ONE_MODULE}}}");
        let err = load(&text).expect_err("refused").to_string();
        assert_eq!(
            err,
            format!("project.pyrs:1:13: key \"workers\": {message}")
        );
    }
}

#[test]
fn rejects_unknown_event_loop() {
    let text = format!("{{\"event_loop\": \"trio\",{ONE_MODULE}}}");
    let err = load(&text).expect_err("refused").to_string();
    assert!(err.contains("key \"event_loop\": must be"), "{err}");
}

#[test]
fn accepts_integer_shutdown_timeout() {
    let config = load(&format!("{{\"shutdown_timeout\": 0,{ONE_MODULE}}}")).expect("loads");
    assert_eq!(config.shutdown_timeout, 0.0);
}

#[test]
fn accepts_line_comments_and_trailing_commas() {
    let text = "// project\n{\n  \"thread_count\": 4, // four\n  \"modules\": [\n    \
                {\"path\": \"/api/*\", \"module\": \"app.handlers\", \"class\": \"_Api\", \
                \"handler\": \"go\",},\n  ],\n}\n// end";
    let config = load(text).expect("loads");
    assert_eq!(config.thread_count, 4);
    assert_eq!(config.modules[0].path, "/api/*");
    assert_eq!(handler_of(&config.modules[0]).0, "app.handlers");
}

#[test]
fn rejects_unknown_key_with_suggestion() {
    let text = format!("{{\n  \"tcp_nodelay\": true,\n  \"thread_cout\": 4,{ONE_MODULE}}}");
    assert_eq!(
        error(&text),
        "project.pyrs:3:3: unknown key \"thread_cout\" (did you mean \"thread_count\"?)"
    );
}

#[test]
fn suggests_full_key_for_one_word() {
    let text = format!("{{\"port\": 1,{ONE_MODULE}}}");
    assert_eq!(
        error(&text),
        "project.pyrs:1:2: unknown key \"port\" (did you mean \"http_listen_port\"?)"
    );
}

#[test]
fn rejects_unknown_key_without_suggestion() {
    let text = format!("{{\"colour\": 1,{ONE_MODULE}}}");
    assert_eq!(error(&text), "project.pyrs:1:2: unknown key \"colour\"");
}

#[test]
fn rejects_unknown_module_key_with_suggestion() {
    let text = "{\"modules\": [\n  {\"path\": \"/\", \"module\": \"m\", \"class\": \"C\",\n   \
                \"hndler\": \"h\"}]}";
    assert_eq!(
        error(text),
        "project.pyrs:3:4: key \"modules[0]\": unknown key \"hndler\" \
         (did you mean \"handler\"?)"
    );
}

#[test]
fn rejects_port_out_of_range() {
    let text = format!("{{\n\n\n  \"http_listen_port\": 70000,{ONE_MODULE}}}");
    assert_eq!(
        error(&text),
        "project.pyrs:4:23: key \"http_listen_port\": port must be 0..=65535, found 70000"
    );
}

#[test]
fn rejects_wrong_type_boolean() {
    let text = format!("{{\n  \"tcp_nodelay\": \"yes\",{ONE_MODULE}}}");
    assert_eq!(
        error(&text),
        "project.pyrs:2:18: key \"tcp_nodelay\": expected a boolean, found a string"
    );
}

#[test]
fn rejects_fractional_thread_count() {
    let text = format!("{{\"thread_count\": 2.5,{ONE_MODULE}}}");
    assert_eq!(
        error(&text),
        "project.pyrs:1:18: key \"thread_count\": expected an integer, found the number 2.5"
    );
}

#[test]
fn rejects_null_value() {
    let text = format!("{{\"http_listen_address\": null,{ONE_MODULE}}}");
    assert_eq!(
        error(&text),
        "project.pyrs:1:25: key \"http_listen_address\": expected a string, found null"
    );
}

#[test]
fn rejects_zero_thread_count() {
    let text = format!("{{\n\n\n\n  \"thread_count\": 0,{ONE_MODULE}}}");
    assert_eq!(
        error(&text),
        "project.pyrs:5:19: key \"thread_count\": must be at least 1"
    );
}

#[test]
fn rejects_too_many_threads() {
    let text = format!("{{\"thread_count\": 1025,{ONE_MODULE}}}");
    assert_eq!(
        error(&text),
        "project.pyrs:1:18: key \"thread_count\": must be at most 1024"
    );
}

#[test]
fn rejects_negative_thread_count() {
    let text = format!("{{\"thread_count\": -1,{ONE_MODULE}}}");
    assert_eq!(
        error(&text),
        "project.pyrs:1:18: key \"thread_count\": must be between 1 and 1024, found -1"
    );
}

#[test]
fn rejects_zero_listen_backlog() {
    let text = format!("{{\"listen_backlog\": 0,{ONE_MODULE}}}");
    assert_eq!(
        error(&text),
        "project.pyrs:1:20: key \"listen_backlog\": must be at least 1"
    );
}

#[test]
fn rejects_small_max_head_size() {
    let text = format!("{{\"max_head_size\": 100,{ONE_MODULE}}}");
    assert_eq!(
        error(&text),
        "project.pyrs:1:19: key \"max_head_size\": must be at least 1024 bytes"
    );
}

#[test]
fn rejects_large_max_head_size() {
    let text = format!("{{\"max_head_size\": 1048577,{ONE_MODULE}}}");
    assert_eq!(
        error(&text),
        "project.pyrs:1:19: key \"max_head_size\": must be at most 1048576 bytes (1 MiB)"
    );
}

#[test]
fn rejects_negative_max_body_size() {
    let text = format!("{{\"max_body_size\": -5,{ONE_MODULE}}}");
    assert_eq!(
        error(&text),
        "project.pyrs:1:19: key \"max_body_size\": \
         must be between 0 and 18446744073709551615 bytes, found -5"
    );
}

#[test]
fn rejects_negative_shutdown_timeout() {
    let text = format!("{{\"shutdown_timeout\": -1.5,{ONE_MODULE}}}");
    assert_eq!(
        error(&text),
        "project.pyrs:1:22: key \"shutdown_timeout\": \
         must be a finite number of seconds, 0 or more"
    );
}

#[test]
fn rejects_bad_listen_address() {
    let text = format!("{{\"http_listen_address\": \"0.0.0.0 \",{ONE_MODULE}}}");
    assert_eq!(
        error(&text),
        "project.pyrs:1:25: key \"http_listen_address\": must be an IP address \
         such as \"0.0.0.0\" or \"::1\", a host name, or \"unix:PATH\""
    );
}

#[test]
fn accepts_host_name_and_ipv6_address() {
    for address in ["localhost", "::1", "example.com"] {
        let text = format!("{{\"http_listen_address\": \"{address}\",{ONE_MODULE}}}");
        assert_eq!(load(&text).expect("loads").http_listen_address, address);
    }
}

#[test]
fn rejects_missing_modules() {
    assert_eq!(
        error("{\"thread_count\": 2}"),
        "project.pyrs: key \"modules\": must list at least one module"
    );
}

#[test]
fn rejects_empty_modules() {
    assert_eq!(
        error("{\n  \"modules\": [ ]\n}"),
        "project.pyrs:2:14: key \"modules\": must list at least one module"
    );
}

#[test]
fn rejects_modules_of_wrong_type() {
    assert_eq!(
        error("{\"modules\": {}}"),
        "project.pyrs:1:13: key \"modules\": expected an array of module entries, \
         found an object"
    );
}

#[test]
fn rejects_module_entry_of_wrong_type() {
    assert_eq!(
        error("{\"modules\": [\"main.Api\"]}"),
        "project.pyrs:1:14: key \"modules[0]\": expected an object with \"path\", \
         \"module\", \"class\" and \"handler\", found a string"
    );
}

#[test]
fn rejects_module_value_of_wrong_type() {
    let text = "{\"modules\": [{\"path\": \"/\", \"module\": 3, \"class\": \"C\", \
                \"handler\": \"h\"}]}";
    assert_eq!(
        error(text),
        "project.pyrs:1:38: key \"modules[0].module\": expected a string, found the integer 3"
    );
}

#[test]
fn rejects_duplicate_route() {
    let text = "{\n  \"modules\": [\n    {\n      \"path\": \"/echo\",\n      \
                \"module\": \"m\", \"class\": \"C\", \"handler\": \"a\"\n    },\n    \
                {\"path\": \"/echo\", \"module\": \"m\", \"class\": \"C\", \"handler\": \"b\"}\n  \
                ]\n}";
    assert_eq!(
        error(text),
        "project.pyrs:7:14: key \"modules[1].path\": duplicate route \"/echo\" \
         (first defined at line 4)"
    );
}

#[test]
fn rejects_missing_handler() {
    let text =
        "{\n  \"modules\": [\n    {\"path\": \"/\", \"module\": \"m\", \"class\": \"C\"}\n]}";
    assert_eq!(
        error(text),
        "project.pyrs:3:5: key \"modules[0]\": missing key \"handler\""
    );
}

#[test]
fn rejects_duplicate_key() {
    let text = format!("{{\"thread_count\": 2,\n \"thread_count\": 3,{ONE_MODULE}}}");
    assert_eq!(
        error(&text),
        "project.pyrs:2:2: key \"thread_count\": is given more than once"
    );
}

#[test]
fn rejects_route_without_leading_slash() {
    let text = "{\"modules\": [{\"path\": \"echo\", \"module\": \"m\", \"class\": \"C\", \
                \"handler\": \"h\"}]}";
    assert_eq!(
        error(text),
        "project.pyrs:1:23: key \"modules[0].path\": route \"echo\" must start with \"/\"; \
         use \"/echo\" (exact), \"/api/*\" (prefix) or \"/*\" (everything)"
    );
}

#[test]
fn rejects_star_inside_route() {
    let text = "{\"modules\": [{\"path\": \"/a*\", \"module\": \"m\", \"class\": \"C\", \
                \"handler\": \"h\"}]}";
    assert_eq!(
        error(text),
        "project.pyrs:1:23: key \"modules[0].path\": route \"/a*\": \"*\" is only allowed \
         as a final \"/*\"; use \"/echo\" (exact), \"/api/*\" (prefix) or \"/*\" (everything)"
    );
}

#[test]
fn rejects_route_with_query() {
    let text = "{\"modules\": [{\"path\": \"/a?b\", \"module\": \"m\", \"class\": \"C\", \
                \"handler\": \"h\"}]}";
    assert!(error(text).contains("must not contain a query"));
}

#[test]
fn rejects_bad_module_name() {
    let text = "{\"modules\": [{\"path\": \"/\", \"module\": \"main.\", \"class\": \"C\", \
                \"handler\": \"h\"}]}";
    assert_eq!(
        error(text),
        "project.pyrs:1:38: key \"modules[0].module\": \"main.\" is not a Python module \
         name such as \"main\" or \"app.handlers\""
    );
}

#[test]
fn rejects_empty_class() {
    let text = "{\"modules\": [{\"path\": \"/\", \"module\": \"m\", \"class\": \"\", \
                \"handler\": \"h\"}]}";
    assert_eq!(
        error(text),
        "project.pyrs:1:52: key \"modules[0].class\": \"\" is not a Python identifier \
         such as \"Api\" or \"echo\""
    );
}

#[test]
fn rejects_handler_with_dash() {
    let text = "{\"modules\": [{\"path\": \"/\", \"module\": \"m\", \"class\": \"C\", \
                \"handler\": \"echo-request\"}]}";
    assert_eq!(
        error(text),
        "project.pyrs:1:68: key \"modules[0].handler\": \"echo-request\" is not a Python \
         identifier such as \"Api\" or \"echo\""
    );
}

#[test]
fn reports_syntax_error_position() {
    let text = "{\n  \"thread_count\": 2\n  \"modules\": []\n}";
    assert_eq!(error(text), "project.pyrs:3:3: expected `,` or `}`");
}

#[test]
fn reports_unterminated_block_comment() {
    let text = format!("{{{ONE_MODULE} /* open");
    assert!(error(&text).contains("EOF while parsing a block comment"));
}

#[test]
fn reports_trailing_characters() {
    let text = format!("{{{ONE_MODULE}}} x");
    assert!(error(&text).ends_with(": trailing characters"));
}

#[test]
fn rejects_top_level_array() {
    assert_eq!(
        error("  []"),
        "project.pyrs:1:3: the file must hold one JSON object { ... }, found an array"
    );
}

#[test]
fn rejects_module_entry_as_array() {
    assert_eq!(
        error("{\"modules\": [[\"/\", \"m\", \"C\", \"h\"]]}"),
        "project.pyrs:1:14: key \"modules[0]\": expected an object with \"path\", \
         \"module\", \"class\" and \"handler\", found an array"
    );
}

#[test]
fn rejects_huge_max_body_size() {
    let text = format!("{{\"max_body_size\": 99999999999999999999999,{ONE_MODULE}}}");
    assert_eq!(
        error(&text),
        "project.pyrs:1:19: key \"max_body_size\": must be between 0 and \
         18446744073709551615 bytes, found 99999999999999999999999"
    );
}

#[test]
fn points_at_unknown_key_missing_its_colon() {
    assert_eq!(
        error("{\n  \"a\" 1}"),
        "project.pyrs:2:3: unknown key \"a\""
    );
}

#[test]
fn reports_empty_file() {
    assert_eq!(error(""), "project.pyrs:1:1: EOF while parsing a value");
}

#[test]
fn reports_missing_file() {
    let err = Config::load(Path::new("/nonexistent/project.pyrs")).expect_err("missing");
    assert_eq!(
        err.to_string(),
        "cannot read /nonexistent/project.pyrs: No such file or directory (os error 2)"
    );
    assert_eq!(err.location(), None);
}

#[test]
fn error_position_ignores_comments_and_strings() {
    let text = "{ /* \"thread_count\": 0, { [ */ \"modules\": [{\"path\": \"/a\\\"//b/*\", \
                \"module\": \"m\", \"class\": \"C\", \"handler\": \"h\"}],\n  \
                // \"thread_count\": 9\n  \"thread_count\": 0,\n}";
    assert_eq!(
        error(text),
        "project.pyrs:3:19: key \"thread_count\": must be at least 1"
    );
}

#[test]
fn unknown_key_position_survives_later_syntax_error() {
    assert_eq!(
        error("{\"thread_cout\": 1, \"x\": [,,"),
        "project.pyrs:1:2: unknown key \"thread_cout\" (did you mean \"thread_count\"?)"
    );
}

#[test]
fn matches_escaped_unknown_key() {
    assert_eq!(
        error("{\n \"t\\u0068read_cout\": 1}"),
        "project.pyrs:2:2: unknown key \"thread_cout\" (did you mean \"thread_count\"?)"
    );
}

#[test]
fn survives_deep_nesting() {
    let text = format!("{{\"modules\": {}", "[".repeat(100_000));
    assert!(error(&text).starts_with("project.pyrs:"));
}

#[test]
fn locates_module_values() {
    let config = load(TEMPLATE).expect("template loads");
    assert_eq!(config.locate(0, "path"), at(11, 15));
    assert_eq!(config.locate(0, "module"), at(12, 17));
    assert_eq!(config.locate(1, "class"), at(20, 16));
    assert_eq!(config.locate(1, "handler"), at(21, 18));
    assert_eq!(config.locate(1, "other"), at(17, 5));
    assert_eq!(config.locate(9, "path"), at(1, 1));
}

#[test]
fn builds_python_error_at_key() {
    let config = load(TEMPLATE).expect("template loads");
    let err = ConfigError::at(&config, 1, "class", "module \"main\" has no class \"Api\"");
    assert_eq!(
        err.to_string(),
        "project.pyrs:20:16: key \"modules[1].class\": module \"main\" has no class \"Api\""
    );
    let err = ConfigError::at(&config, 0, "", "failed");
    assert_eq!(
        err.to_string(),
        "project.pyrs:10:5: key \"modules[0]\": failed"
    );
}

#[test]
fn suggests_only_close_keys() {
    assert_eq!(suggest("thread_cout", TOP_LEVEL_KEYS), Some("thread_count"));
    assert_eq!(
        suggest("THREAD_COUNT", TOP_LEVEL_KEYS),
        Some("thread_count")
    );
    assert_eq!(suggest("hadnler", MODULE_KEYS), Some("handler"));
    assert_eq!(suggest("zzz", MODULE_KEYS), None);
    assert_eq!(suggest("completely_different", TOP_LEVEL_KEYS), None);
}

#[test]
fn project_dir_is_absolute_parent() {
    let file = std::env::temp_dir().join("project.pyrs");
    let config = Config::from_str(&format!("{{{ONE_MODULE}}}"), &file).expect("loads");
    let expected = std::env::temp_dir()
        .canonicalize()
        .expect("temp dir exists");
    assert_eq!(config.project_dir, expected);
    assert_eq!(config.file, file);
}

#[test]
fn loads_file_from_disk() {
    let dir = std::env::temp_dir().join(format!("pyrs-config-test-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let file = dir.join("project.pyrs");
    std::fs::write(&file, TEMPLATE).expect("write");
    let expected = dir.canonicalize().expect("temp dir exists");
    let loaded = Config::load(&file);
    std::fs::remove_dir_all(&dir).expect("clean up");
    let config = loaded.expect("loads");
    assert_eq!(config.modules.len(), 2);
    assert_eq!(config.project_dir, expected);
}

#[test]
fn reports_key_that_is_not_a_string() {
    assert_eq!(error("{'a': 1}"), "project.pyrs:1:2: key must be a string");
}

#[test]
fn reports_missing_colon() {
    let text = format!("{{\"thread_count\" 1,{ONE_MODULE}}}");
    assert_eq!(error(&text), "project.pyrs:1:17: expected `:`");
}

#[test]
fn reports_missing_commas() {
    assert_eq!(
        error("{\"thread_count\": 2 \"modules\": []}"),
        "project.pyrs:1:20: expected `,` or `}`"
    );
    let entry = r#"{"path": "/", "module": "main", "class": "Api", "handler": "h"}"#;
    assert_eq!(
        error(&format!("{{\"modules\": [{entry} 1]}}")),
        "project.pyrs:1:78: expected `,` or `]`"
    );
}

#[test]
fn reports_unterminated_list() {
    let text = r#"{"modules": [{"path": "/", "module": "main", "class": "Api", "handler": "h"}"#;
    assert_eq!(error(text), "project.pyrs:1:76: EOF while parsing a list");
}

#[test]
fn rejects_raw_control_characters_in_strings() {
    let text = format!("{{\"http_listen_address\": \"a\tb\",{ONE_MODULE}}}");
    assert_eq!(
        error(&text),
        "project.pyrs:1:27: control character (\\u0000-\\u001F) found while parsing a string"
    );
    // A string missing its closing quote stops at the line's end.
    let text = format!("{{\"http_listen_address\": \"0.0.0.0\n,{ONE_MODULE}}}");
    assert_eq!(
        error(&text),
        "project.pyrs:2:1: control character (\\u0000-\\u001F) found while parsing a string"
    );
}

#[test]
fn reports_words_that_are_not_values() {
    let text = format!("{{\"tcp_nodelay\": yes,{ONE_MODULE}}}");
    assert_eq!(error(&text), "project.pyrs:1:17: expected value");
    let text = format!("{{\"tcp_nodelay\": ture,{ONE_MODULE}}}");
    assert_eq!(error(&text), "project.pyrs:1:18: expected ident");
}

#[test]
fn reports_bad_numbers() {
    let text = format!("{{\"thread_count\": 01,{ONE_MODULE}}}");
    assert_eq!(error(&text), "project.pyrs:1:19: invalid number");
    let text = format!("{{\"shutdown_timeout\": 1e999,{ONE_MODULE}}}");
    assert_eq!(error(&text), "project.pyrs:1:26: number out of range");
}

#[test]
fn reports_slash_that_starts_no_comment() {
    assert_eq!(
        error("{\"thread_count\": 2} /x"),
        "project.pyrs:1:22: expected `/` or `*` after `/`"
    );
}

#[test]
fn rejects_null_workers() {
    let text = format!("{{\"workers\": null,{ONE_MODULE}}}");
    assert_eq!(
        error(&text),
        "project.pyrs:1:13: key \"workers\": expected an integer or \"auto\", found null"
    );
}

#[test]
fn reads_every_top_level_key() {
    // An object is no key's value, so each key's reader runs and refuses it.
    for key in TOP_LEVEL_KEYS {
        let text = format!("{{\"{key}\": {{}},{ONE_MODULE}}}");
        match load(&text) {
            Err(ConfigError::Invalid {
                key: at_fault,
                message,
                location,
                ..
            }) => {
                assert_eq!(at_fault, *key);
                assert!(message.ends_with(", found an object"), "{key}: {message}");
                assert_eq!(location, Some(at(1, key.len() + 6)), "{key}");
            }
            other => panic!("{key}: {other:?}"),
        }
    }
}

#[test]
fn readme_documents_every_key() {
    let readme = include_str!("../../README.md");
    for key in TOP_LEVEL_KEYS.iter().chain(MODULE_KEYS).chain(STATIC_KEYS) {
        assert!(readme.contains(&format!("`{key}`")), "README lacks {key}");
    }
}

#[test]
fn default_limits_are_the_parser_defaults() {
    let config = Config::default();
    let limits = pyrs_parser::Limits::default();
    assert_eq!(config.max_body_size, limits.max_body);
    assert_eq!(config.max_head_size, limits.max_head);
}

#[test]
fn reads_operator_keys() {
    let config = load(&format!(
        "{{\"access_log\": \"logs/access.log\", \"access_log_format\": \"$status\", \
         \"metrics_address\": \"127.0.0.1:9100\", \"max_requests\": 1000, \
         \"max_requests_jitter\": 50, \"max_worker_memory_mb\": 512,{ONE_MODULE}}}"
    ))
    .expect("loads");
    let dir = config.project_dir.clone();
    assert_eq!(
        config.access_log,
        AccessLog::File(dir.join("logs/access.log"))
    );
    assert_eq!(config.access_log_format.as_deref(), Some("$status"));
    assert_eq!(config.metrics_address.as_deref(), Some("127.0.0.1:9100"));
    assert_eq!(
        (
            config.max_requests,
            config.max_requests_jitter,
            config.max_worker_memory_mb
        ),
        (1000, 50, 512)
    );
    for (value, log) in [
        ("true", AccessLog::Stdout),
        ("\"-\"", AccessLog::Stdout),
        ("false", AccessLog::Off),
    ] {
        let config = load(&format!("{{\"access_log\": {value},{ONE_MODULE}}}")).expect("loads");
        assert_eq!(config.access_log, log, "{value}");
    }
    let config = load(&format!("{{{ONE_MODULE}}}")).expect("loads");
    assert_eq!(config.access_log, AccessLog::Off);
    assert_eq!(config.metrics_address, None);
    assert_eq!(config.max_requests, 0);
}

#[test]
fn rejects_bad_operator_keys() {
    for (key, value, message) in [
        (
            "access_log",
            "1",
            "expected true, false or a file path, found",
        ),
        (
            "access_log",
            "\"\"",
            "expected a file path, true or false, found an empty string",
        ),
        ("access_log_format", "\"\"", "must not be empty"),
        ("metrics_address", "\"9100\"", "expected \"host:port\""),
        ("metrics_address", "\"host:http\"", "expected \"host:port\""),
        ("max_requests", "-1", "must be 0 or more"),
        (
            "max_worker_memory_mb",
            "\"1G\"",
            "expected an integer (MiB)",
        ),
    ] {
        let err = error(&format!("{{\"{key}\": {value},{ONE_MODULE}}}"));
        assert!(err.contains(&format!("key \"{key}\": {message}")), "{err}");
    }
}

#[test]
fn tls_paths_are_relative_to_the_project_folder() {
    let text = format!(
        "{{\"tls_cert\": \"certs/site.pem\", \"tls_key\": \"certs/site.key\", \
         \"tls_client_ca\": \"/etc/ca.pem\", \"tls_client_auth\": \"optional\", \
         \"tls_min_version\": \"1.3\",{ONE_MODULE}}}"
    );
    let config = load(&text).expect("loads");
    let dir = &config.project_dir;
    assert_eq!(config.tls_cert, Some(dir.join("certs/site.pem")));
    assert_eq!(config.tls_key, Some(dir.join("certs/site.key")));
    assert_eq!(config.tls_client_ca, Some(PathBuf::from("/etc/ca.pem")));
    assert_eq!(config.tls_client_auth, ClientAuth::Optional);
    assert_eq!(config.tls_min_version, TlsVersion::V1_3);
    let defaults = load(&format!("{{{ONE_MODULE}}}")).expect("loads");
    assert_eq!(defaults.tls_cert, None);
    assert_eq!(defaults.tls_client_auth, ClientAuth::Required);
    assert_eq!(defaults.tls_min_version, TlsVersion::V1_2);
}

#[test]
fn tls_cert_and_key_go_together() {
    let text = format!("{{\"tls_cert\": \"c.pem\",{ONE_MODULE}}}");
    assert_eq!(
        error(&text),
        "project.pyrs:1:14: key \"tls_cert\": needs tls_key too"
    );
    let text = format!("{{\"tls_client_ca\": \"ca.pem\",{ONE_MODULE}}}");
    assert_eq!(
        error(&text),
        "project.pyrs:1:19: key \"tls_client_ca\": needs tls_cert and tls_key too"
    );
    let text = format!(
        "{{\"tls_cert\": \"c\", \"tls_key\": \"k\", \"tls_client_auth\": \"optional\",{ONE_MODULE}}}"
    );
    assert!(error(&text).contains("key \"tls_client_auth\": needs tls_client_ca too"));
}

#[test]
fn rejects_unknown_tls_settings() {
    let text = format!("{{\"tls_min_version\": \"1.1\",{ONE_MODULE}}}");
    assert_eq!(
        error(&text),
        "project.pyrs:1:21: key \"tls_min_version\": must be \"1.2\" or \"1.3\", found \"1.1\""
    );
    let text = format!("{{\"tls_client_auth\": \"maybe\",{ONE_MODULE}}}");
    assert!(error(&text).contains("must be \"required\" or \"optional\""));
    let text = format!("{{\"tls_cert\": \"\",{ONE_MODULE}}}");
    assert!(error(&text).contains("must name a file"));
}
