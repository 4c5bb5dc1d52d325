//! Project files that must be refused: each error exits non-zero before
//! listening, with one `pyrs: <file>:<line>:<col>: ...` message naming the key
//! at fault. Also checks that the original template project loads unchanged.

mod common;

use common::{example, run_pyrs, Finished, Project, Server};

const HANDLER_PY: &str = "class C:\n    x = 1\n\n    def h(self, request):\n        return 'ok'\n";

/// One valid module entry, for configs that break something else.
const ENTRY: &str = r#"{ "path": "/", "module": "m", "class": "C", "handler": "h" }"#;

/// Runs pyrs on a temp project (from inside its folder, so the file is
/// `project.pyrs` in messages) and expects it to fail without listening.
fn refused(config: &str, files: &[(&str, &str)]) -> Finished {
    let mut all = vec![("m.py", HANDLER_PY)];
    all.extend_from_slice(files);
    let p = Project::new(config, &all);
    let out = run_pyrs(
        &["project.pyrs", "-a", "127.0.0.1", "-p", "0"],
        Some(&p.dir.path),
    );
    assert!(
        !out.status.success(),
        "pyrs accepted:\n{config}\nstdout:\n{}",
        out.stdout
    );
    assert!(!out.stdout.contains("Listening..."), "{}", out.stdout);
    assert!(!out.stdout.contains("Port:"), "{}", out.stdout);
    let messages = out
        .stderr
        .lines()
        .filter(|l| l.starts_with("pyrs:"))
        .count();
    assert_eq!(messages, 1, "one message:\n{}", out.stderr);
    out
}

/// Asserts stderr begins with `pyrs: project.pyrs:{at}: {message}`.
fn assert_message(out: &Finished, at: &str, message: &str) {
    let expected = format!("pyrs: project.pyrs:{at}: {message}");
    assert!(
        out.stderr.starts_with(&expected),
        "expected stderr to start with\n{expected}\ngot\n{}",
        out.stderr
    );
}

#[test]
fn unknown_key_suggests_the_right_one() {
    let config = format!("{{\n  \"thread_cout\": 2,\n  \"modules\": [{ENTRY}]\n}}\n");
    let out = refused(&config, &[]);
    assert_message(
        &out,
        "2:3",
        "unknown key \"thread_cout\" (did you mean \"thread_count\"?)",
    );
}

#[test]
fn unknown_key_inside_a_module_entry() {
    let config = "{\n  \"modules\": [\n    { \"path\": \"/\", \"module\": \"m\", \"class\": \"C\", \"hanlder\": \"h\" }\n  ]\n}\n";
    let out = refused(config, &[]);
    assert_message(
        &out,
        "3:49",
        "key \"modules[0]\": unknown key \"hanlder\" (did you mean \"handler\"?)",
    );
}

#[test]
fn missing_key_inside_a_module_entry() {
    let config = "{\n  \"modules\": [\n    { \"path\": \"/\", \"module\": \"m\", \"class\": \"C\" }\n  ]\n}\n";
    let out = refused(config, &[]);
    assert_message(&out, "3:5", "key \"modules[0]\": missing key \"handler\"");
}

#[test]
fn port_out_of_range() {
    let config = format!("{{\n  \"http_listen_port\": 70000,\n  \"modules\": [{ENTRY}]\n}}\n");
    let out = refused(&config, &[]);
    assert_message(
        &out,
        "2:23",
        "key \"http_listen_port\": port must be 0..=65535, found 70000",
    );
}

#[test]
fn thread_count_zero() {
    let config = format!("{{\n  \"thread_count\": 0,\n  \"modules\": [{ENTRY}]\n}}\n");
    let out = refused(&config, &[]);
    assert_message(&out, "2:19", "key \"thread_count\": must be at least 1");
}

#[test]
fn wrong_value_type() {
    let config = format!("{{\n  \"thread_count\": \"2\",\n  \"modules\": [{ENTRY}]\n}}\n");
    let out = refused(&config, &[]);
    assert_message(
        &out,
        "2:19",
        "key \"thread_count\": expected an integer, found a string",
    );
}

#[test]
fn empty_modules() {
    let out = refused("{\n  \"modules\": []\n}\n", &[]);
    assert_message(
        &out,
        "2:14",
        "key \"modules\": must list at least one module",
    );
}

#[test]
fn missing_modules() {
    let out = refused("{\n  \"thread_count\": 1\n}\n", &[]);
    assert!(
        out.stderr.starts_with("pyrs: project.pyrs"),
        "{}",
        out.stderr
    );
    assert!(
        out.stderr
            .contains("key \"modules\": must list at least one module"),
        "{}",
        out.stderr
    );
}

#[test]
fn duplicate_route() {
    let config = format!("{{\n  \"modules\": [\n    {ENTRY},\n    {ENTRY}\n  ]\n}}\n");
    let out = refused(&config, &[]);
    assert_message(
        &out,
        "4:15",
        "key \"modules[1].path\": duplicate route \"/\" (first defined at line 3)",
    );
}

#[test]
fn badly_shaped_route() {
    let config = "{\n  \"modules\": [\n    { \"path\": \"echo\", \"module\": \"m\", \"class\": \"C\", \"handler\": \"h\" }\n  ]\n}\n";
    let out = refused(config, &[]);
    assert_message(
        &out,
        "3:15",
        "key \"modules[0].path\": route \"echo\" must start with \"/\"",
    );
    let config = config.replace("\"echo\"", "\"/a*b\"");
    let out = refused(&config, &[]);
    assert!(
        out.stderr
            .contains("\"*\" is only allowed as a final \"/*\""),
        "{}",
        out.stderr
    );
}

#[test]
fn json_syntax_error_has_a_position() {
    // The file ends inside the entry's object: the error points at the end
    // (line 4 is the empty line after the final line break).
    let out = refused("{\n  \"modules\": [\n    { \"path\": \"/\" \n", &[]);
    assert_eq!(out.status.code(), Some(1), "{}", out.stderr);
    assert_eq!(
        out.stderr,
        "pyrs: project.pyrs:4:1: EOF while parsing an object\n"
    );
}

#[test]
fn unreadable_file() {
    let out = run_pyrs(&["/nonexistent/project.pyrs", "-p", "0"], None);
    assert_eq!(out.status.code(), Some(1), "{}", out.stderr);
    assert!(!out.stdout.contains("Listening"), "{}", out.stdout);
    assert!(
        out.stderr
            .starts_with("pyrs: cannot read /nonexistent/project.pyrs"),
        "{}",
        out.stderr
    );
}

/// The config for one entry naming `module`, `class` and `handler`, all on
/// line 3 (see [`column_of`]).
fn one_entry(module: &str, class: &str, handler: &str) -> String {
    format!(
        "{{\n  \"modules\": [\n    {{ \"path\": \"/\", \"module\": \"{module}\", \"class\": \"{class}\", \"handler\": \"{handler}\" }}\n  ]\n}}\n"
    )
}

/// Column of the value of `key` on line 3 of [`one_entry`]'s text.
fn column_of(config: &str, key: &str) -> usize {
    let line = config.lines().nth(2).expect("line 3");
    let at = line.find(&format!("\"{key}\": ")).expect("key") + key.len() + 4;
    line[..at].chars().count() + 1
}

/// Asserts the Python error message (wherever the `pyrs:` prefix puts it).
fn assert_python_error(out: &Finished, config: &str, key: &str, message: &str) {
    let at = format!(
        "project.pyrs:3:{}: key \"modules[0].{key}\": {message}",
        column_of(config, key)
    );
    assert!(
        out.stderr.contains(&at),
        "expected\n{at}\nin\n{}",
        out.stderr
    );
}

#[test]
fn module_that_does_not_exist() {
    let config = one_entry("nope", "C", "h");
    let out = refused(&config, &[]);
    // `pyrs: project.pyrs:3:29: key ...`, like every other config error, not
    // `pyrs: serving project.pyrs: project.pyrs:3:29: key ...`.
    assert_message(
        &out,
        &format!("3:{}", column_of(&config, "module")),
        "key \"modules[0].module\": cannot import module \"nope\":",
    );
    assert!(out.stderr.contains("Traceback"), "{}", out.stderr);
    assert!(
        out.stderr
            .contains("ModuleNotFoundError: No module named 'nope'"),
        "{}",
        out.stderr
    );
}

#[test]
fn module_that_fails_to_import() {
    let config = one_entry("broken", "C", "h");
    let out = refused(
        &config,
        &[(
            "broken.py",
            "import sys\nraise RuntimeError('import-time failure')\n",
        )],
    );
    assert_python_error(&out, &config, "module", "cannot import module \"broken\":");
    assert!(
        out.stderr.contains("RuntimeError: import-time failure"),
        "{}",
        out.stderr
    );
    assert!(out.stderr.contains("broken.py"), "{}", out.stderr);
}

#[test]
fn module_with_syntax_error() {
    let config = one_entry("bad_syntax", "C", "h");
    let out = refused(&config, &[("bad_syntax.py", "class C(:\n    pass\n")]);
    assert_python_error(
        &out,
        &config,
        "module",
        "cannot import module \"bad_syntax\":",
    );
    assert!(out.stderr.contains("SyntaxError"), "{}", out.stderr);
}

#[test]
fn class_that_does_not_exist() {
    let config = one_entry("m", "X", "h");
    let out = refused(&config, &[]);
    assert_python_error(&out, &config, "class", "module \"m\" has no class \"X\"");
}

#[test]
fn constructor_that_raises() {
    let config = one_entry("ctor", "C", "h");
    let out = refused(
        &config,
        &[(
            "ctor.py",
            "class C:\n    def __init__(self):\n        raise ValueError('no instance')\n\n    def h(self, r):\n        return ''\n",
        )],
    );
    assert_python_error(&out, &config, "class", "creating ctor.C() failed:");
    assert!(
        out.stderr.contains("ValueError: no instance"),
        "{}",
        out.stderr
    );
}

#[test]
fn handler_that_does_not_exist() {
    let config = one_entry("m", "C", "nothere");
    let out = refused(&config, &[]);
    assert_python_error(
        &out,
        &config,
        "handler",
        "class \"C\" has no method \"nothere\"",
    );
}

#[test]
fn handler_that_is_not_callable() {
    let config = one_entry("m", "C", "x");
    let out = refused(&config, &[]);
    assert_python_error(&out, &config, "handler", "m.C.x is not callable");
}

#[test]
fn error_in_a_later_entry_names_its_index() {
    let config = format!(
        "{{\n  \"modules\": [\n    {ENTRY},\n    {{ \"path\": \"/b\", \"module\": \"m\", \"class\": \"C\", \"handler\": \"missing\" }}\n  ]\n}}\n"
    );
    let out = refused(&config, &[]);
    assert!(
        out.stderr.contains(
            "project.pyrs:4:61: key \"modules[1].handler\": class \"C\" has no method \"missing\""
        ),
        "{}",
        out.stderr
    );
}

#[test]
fn template_example_loads_unchanged() {
    let s = Server::start(&example("template"));
    s.expect_stdout("Listening...");
    let expected = format!(
        "Starting pyrs server...\nApi module is initialized\nAdded route /echo\n\
Api module is initialized\nAdded route /*\nAddress: 127.0.0.1\nPort: {}\nListening...\n",
        s.port
    );
    assert_eq!(s.stdout(), expected);
    assert_eq!(s.stderr(), "");
    assert_eq!(s.get("/anything").status, 200);
}
