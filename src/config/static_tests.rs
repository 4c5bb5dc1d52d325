//! The `static` array: mounts read with their positions, and every way an
//! entry is refused (unknown key, missing folder, route clash, bad values).

use std::path::PathBuf;

use super::tests::{at, ONE_MODULE};
use super::*;

/// A throwaway project folder holding `public/`, removed on drop.
struct StaticProject(PathBuf);

impl StaticProject {
    fn new(tag: &str) -> StaticProject {
        let dir = std::env::temp_dir().join(format!("pyrs-config-{tag}-{}", std::process::id()));
        std::fs::create_dir_all(dir.join("public")).expect("create public");
        StaticProject(dir)
    }

    fn load(&self, text: &str) -> Result<Config, ConfigError> {
        Config::from_str(text, &self.0.join("project.pyrs"))
    }

    fn error(&self, text: &str) -> String {
        match self.load(text) {
            Ok(config) => panic!("expected an error, loaded {config:?}"),
            Err(err) => err.to_string().replace(&self.0.display().to_string(), "P"),
        }
    }
}

impl Drop for StaticProject {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

#[test]
fn reads_static_mounts() {
    let project = StaticProject::new("reads");
    let text = format!(
        "{{{ONE_MODULE},\n  \"static\": [\n    {{\"path\": \"/static/*\", \"dir\": \"public\", \
         \"max_age\": 3600, \"index\": \"index.html\", \"precompressed\": true}},\n    \
         {{\"path\": \"/docs/*\", \"dir\": \"./public/\"}}\n  ]\n}}"
    );
    let config = project.load(&text).expect("loads");
    assert_eq!(config.statics.len(), 2);
    let first = &config.statics[0];
    assert_eq!(first.path, "/static/*");
    let public = project.0.join("public").canonicalize().expect("exists");
    assert_eq!(first.dir, public);
    assert_eq!(first.max_age, Some(3600));
    assert_eq!(first.index.as_deref(), Some("index.html"));
    assert!(first.precompressed);
    assert_eq!(first.location, at(4, 5));
    assert_eq!(first.path_at, at(4, 14));
    let second = &config.statics[1];
    assert_eq!((second.max_age, second.index.as_ref()), (None, None));
    assert!(!second.precompressed);
    assert_eq!(second.dir, public);
}

#[test]
fn static_mounts_alone_make_a_project() {
    let project = StaticProject::new("alone");
    let config = project
        .load("{\"static\": [{\"path\": \"/*\", \"dir\": \"public\"}]}")
        .expect("loads");
    assert!(config.modules.is_empty());
    assert_eq!(config.statics.len(), 1);
    assert_eq!(
        project.error("{\"static\": []}"),
        "P/project.pyrs: key \"modules\": must list at least one module"
    );
}

#[test]
fn rejects_unknown_static_key() {
    let project = StaticProject::new("unknown");
    let text = format!(
        "{{{ONE_MODULE},\n\"static\": [{{\"path\": \"/s/*\", \"dir\": \"public\", \"maxage\": 1}}]}}"
    );
    assert_eq!(
        project.error(&text),
        "P/project.pyrs:3:46: key \"static[0]\": unknown key \"maxage\" (did you mean \"max_age\"?)"
    );
}

#[test]
fn rejects_missing_static_folder() {
    let project = StaticProject::new("missing");
    let text =
        format!("{{{ONE_MODULE},\n\"static\": [{{\"path\": \"/s/*\", \"dir\": \"nope\"}}]}}");
    let message = project.error(&text);
    assert!(
        message.starts_with(
            "P/project.pyrs:3:36: key \"static[0].dir\": folder P/nope cannot be used: "
        ),
        "{message}"
    );
    std::fs::write(project.0.join("file"), "x").expect("write");
    let text =
        format!("{{{ONE_MODULE},\n\"static\": [{{\"path\": \"/s/*\", \"dir\": \"file\"}}]}}");
    assert_eq!(
        project.error(&text),
        "P/project.pyrs:3:36: key \"static[0].dir\": P/file is not a folder"
    );
}

#[test]
fn rejects_static_route_shared_with_a_module() {
    let project = StaticProject::new("clash");
    let text = "{\"static\": [{\"path\": \"/*\", \"dir\": \"public\"}],\n\"modules\": [\
                {\"path\": \"/*\", \"module\": \"m\", \"class\": \"C\", \"handler\": \"h\"}]}";
    assert_eq!(
        project.error(text),
        "P/project.pyrs:1:22: key \"static[0].path\": route \"/*\" is also a module's (line 2); \
         a route is served by one or the other"
    );
    let text = format!(
        "{{{ONE_MODULE},\n\"static\": [{{\"path\": \"/s/*\", \"dir\": \"public\"}},\n\
         {{\"path\": \"/s/*\", \"dir\": \"public\"}}]}}"
    );
    assert_eq!(
        project.error(&text),
        "P/project.pyrs:4:10: key \"static[1].path\": duplicate route \"/s/*\" (first defined at line 3)"
    );
}

#[test]
fn rejects_bad_static_values() {
    let project = StaticProject::new("values");
    let cases = [
        (
            "\"path\": \"/s\", \"dir\": \"public\"",
            "key \"static[0].path\": static route \"/s\" must be a prefix such as \"/static/*\" (or \"/*\")",
        ),
        (
            "\"path\": \"/s/*\", \"dir\": \"public\", \"index\": \"../x\"",
            "key \"static[0].index\": \"../x\" is not a plain file name such as \"index.html\"",
        ),
        (
            "\"path\": \"/s/*\", \"dir\": \"public\", \"max_age\": -1",
            "key \"static[0].max_age\": must be between 0 and 31536000 seconds (a year), found -1",
        ),
        (
            "\"path\": \"/s/*\", \"dir\": \"public\", \"max_age\": 31536001",
            "key \"static[0].max_age\": must be at most 31536000 seconds (a year)",
        ),
        ("\"path\": \"/s/*\"", "key \"static[0]\": missing key \"dir\""),
    ];
    for (entry, expected) in cases {
        let text = format!("{{{ONE_MODULE},\n\"static\": [{{{entry}}}]}}");
        let message = project.error(&text);
        assert!(message.ends_with(expected), "{message}");
    }
}
