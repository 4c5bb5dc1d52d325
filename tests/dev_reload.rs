//! `--reload`: saving a `.py` file swaps in the new code within 2 s without a
//! failed request; a save that does not import keeps the last good code
//! serving (with the traceback on stderr) until the next good save. Both
//! command-line forms: a project file and `pyrs --reload main:app`.

mod common;

use std::path::Path;
use std::time::Duration;

use common::{version_of, wait_for_version, Launch, Load, Server, Tally, TempDir};

fn handler(version: &str) -> String {
    format!(
        "import os\n\nclass App:\n    def get(self, request):\n        return f\"{version} {{os.getpid()}}\"\n"
    )
}

fn wsgi(version: &str) -> String {
    format!(
        "def app(environ, start_response):\n    start_response(\"200 OK\", [(\"Content-Type\", \"text/plain\")])\n    return [b\"{version} wsgi\"]\n"
    )
}

fn start(project: &Path, cwd: Option<&Path>) -> Server {
    Server::start_with(
        project,
        Launch {
            args: vec!["--reload".into()],
            cwd: cwd.map(Path::to_path_buf),
            ..Launch::default()
        },
    )
}

/// Saves good code, broken code, then good code again, under load.
fn edit_cycle(server: &Server, dir: &TempDir, file: &str, code: fn(&str) -> String) {
    let addr = server.addr();
    assert!(
        server.wait_stderr("watching", Duration::from_secs(5)),
        "{}",
        server.stderr()
    );
    let load = Load::start(addr, 2, 1);
    std::thread::sleep(Duration::from_millis(300));

    dir.write(file, &code("v2"));
    let took = wait_for_version(addr, "v2", Duration::from_secs(2));
    eprintln!("v2 answered {} ms after the save", took.as_millis());

    dir.write(file, "def broken(:\n");
    assert!(
        server.wait_stderr("the running workers keep serving", Duration::from_secs(5)),
        "{}",
        server.stderr()
    );
    assert!(
        server.stderr().contains("SyntaxError"),
        "{}",
        server.stderr()
    );
    std::thread::sleep(Duration::from_millis(300));

    dir.write(file, &code("v3"));
    wait_for_version(addr, "v3", Duration::from_secs(2));
    std::thread::sleep(Duration::from_millis(300));
    let tally = Tally::expect_clean(load, "--reload");
    // The old worker hands its keep-alive connections over at their next
    // response: a moment after the switch, only new code answers.
    let last = tally.seen.last().expect("answers");
    assert_eq!(version_of(&last.body), "v3");
}

#[test]
fn a_project_reloads_on_save_and_survives_a_broken_save() {
    let dir = TempDir::new("dev-reload");
    dir.write("app.py", &handler("v1"));
    let project = dir.write(
        "project.pyrs",
        r#"{ "listen_backlog": 1024, "shutdown_timeout": 5,
  "modules": [ { "path": "/", "module": "app", "class": "App", "handler": "get" } ] }"#,
    );
    let server = start(&project, None);
    edit_cycle(&server, &dir, "app.py", handler);
    // Other files do not reload.
    let reloads = server.stderr().matches("pyrs: reloading").count();
    dir.write("notes.txt", "not code");
    std::thread::sleep(Duration::from_millis(800));
    assert_eq!(server.stderr().matches("pyrs: reloading").count(), reloads);
}

#[test]
fn the_app_form_reloads_on_save() {
    let dir = TempDir::new("dev-reload-app");
    dir.write("main.py", &wsgi("v1"));
    let server = start(Path::new("main:app"), Some(&dir.path));
    edit_cycle(&server, &dir, "main.py", wsgi);
}
