//! `--reload`: watches the project folder for changes to `.py` and `.pyrs`
//! files (the notify crate: inotify on Linux) and tells the supervisor, which
//! waits for saves to settle ([`SETTLE`]) and then reloads as on SIGHUP — new
//! workers first, the old ones drained — so an edit never refuses a connection,
//! and an edit that does not import leaves the last good code serving.
//!
//! Folders are watched one by one, skipping hidden ones (`.git`, `.venv`),
//! `__pycache__`, `node_modules` and virtualenvs (a folder with `pyvenv.cfg`):
//! a project's own code, not the thousands of files of its dependencies. A
//! folder created after startup is not watched. notify's own thread runs the
//! callback, which only filters the path and sends on a channel: it prints
//! nothing and takes no lock the supervisor's forks could inherit.

use std::path::{Path, PathBuf};
use std::sync::mpsc::{self, Receiver};
use std::time::Duration;

use notify::{EventKind, RecommendedWatcher, RecursiveMode, Watcher};
use thiserror::Error;

/// Quiet time after the last change before the reload starts: an editor's
/// save (write a temporary file, rename it) or `git checkout` comes as a burst.
pub const SETTLE: Duration = Duration::from_millis(200);
/// Folders deeper than this under the project folder are not watched.
const MAX_DEPTH: usize = 8;

#[derive(Debug, Error)]
pub enum WatchError {
    #[error("--reload cannot watch {dir}: {source}")]
    Watch { dir: PathBuf, source: notify::Error },
}

/// Watches `dir`; the receiver gets one message per relevant change. Keep the
/// watcher alive as long as changes should be seen.
pub fn watch(dir: &Path) -> Result<(RecommendedWatcher, Receiver<()>), WatchError> {
    let (tx, rx) = mpsc::channel();
    let err = |dir: &Path| {
        let dir = dir.to_path_buf();
        move |source| WatchError::Watch { dir, source }
    };
    let mut watcher = notify::recommended_watcher(move |event: notify::Result<notify::Event>| {
        let Ok(event) = event else {
            return;
        };
        let relevant = matches!(
            event.kind,
            EventKind::Create(_) | EventKind::Modify(_) | EventKind::Remove(_)
        ) && event.paths.iter().any(|p| is_code(p));
        if relevant {
            let _ = tx.send(());
        }
    })
    .map_err(err(dir))?;
    let mut folders = vec![(dir.to_path_buf(), 0)];
    while let Some((folder, depth)) = folders.pop() {
        watcher
            .watch(&folder, RecursiveMode::NonRecursive)
            .map_err(err(&folder))?;
        if depth == MAX_DEPTH {
            continue;
        }
        let Ok(entries) = std::fs::read_dir(&folder) else {
            continue;
        };
        for entry in entries.flatten() {
            let path = entry.path();
            let is_dir = entry.file_type().is_ok_and(|t| t.is_dir());
            if is_dir && !skipped(&path) {
                folders.push((path, depth + 1));
            }
        }
    }
    Ok((watcher, rx))
}

/// A file whose change means new code: Python sources and project files.
fn is_code(path: &Path) -> bool {
    let in_cache = path.components().any(|c| c.as_os_str() == "__pycache__");
    !in_cache && path.extension().is_some_and(|e| e == "py" || e == "pyrs")
}

/// Folders whose files are not the project's code.
fn skipped(dir: &Path) -> bool {
    let name = dir.file_name().and_then(|n| n.to_str()).unwrap_or("");
    name.starts_with('.')
        || name == "__pycache__"
        || name == "node_modules"
        || name == "site-packages"
        || dir.join("pyvenv.cfg").exists()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_code_counts() {
        assert!(is_code(Path::new("/p/app.py")));
        assert!(is_code(Path::new("/p/project.pyrs")));
        assert!(!is_code(Path::new("/p/app.pyc")));
        assert!(!is_code(Path::new("/p/__pycache__/app.cpython-311.py")));
        assert!(!is_code(Path::new("/p/notes.txt")));
        assert!(!is_code(Path::new("/p/.app.py.swp")));
    }

    #[test]
    fn a_save_is_seen_and_dependencies_are_not_watched() {
        let dir = std::env::temp_dir().join(format!("pyrs-watch-{}", std::process::id()));
        let venv = dir.join("venv");
        std::fs::create_dir_all(venv.join("lib")).expect("dirs");
        std::fs::write(venv.join("pyvenv.cfg"), "home = /usr\n").expect("venv");
        std::fs::create_dir_all(dir.join("pkg")).expect("pkg");
        let (_watcher, rx) = watch(&dir).expect("watch");
        std::fs::write(venv.join("lib/dep.py"), "x = 1\n").expect("dep");
        std::fs::write(dir.join("notes.txt"), "x").expect("notes");
        assert!(rx.recv_timeout(Duration::from_millis(300)).is_err());
        std::fs::write(dir.join("pkg/mod.py"), "x = 2\n").expect("save");
        assert!(rx.recv_timeout(Duration::from_secs(5)).is_ok());
        let _ = std::fs::remove_dir_all(&dir);
    }
}
