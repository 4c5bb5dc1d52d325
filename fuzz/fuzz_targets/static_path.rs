//! The static file resolver: arbitrary bytes as the path after a mount's prefix,
//! resolved against a temp folder beside a secret and full of symlinks that lead
//! out (absolute, relative, to a folder outside, through `/proc/self`) and one
//! that stays in. Whatever the input, a file that opens must be one of the
//! folder's own (compared by device and inode, symlinks not followed).

#![no_main]

use std::collections::HashSet;
use std::os::unix::fs::{symlink, MetadataExt};
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use pyrs::config::{Location, StaticEntry};
use pyrs::statics::Mount;

struct Tree {
    mount: Mount,
    /// (dev, inode) of everything beneath the folder.
    inside: HashSet<(u64, u64)>,
}

fn collect(path: &Path, into: &mut HashSet<(u64, u64)>) {
    let meta = std::fs::symlink_metadata(path).expect("lstat");
    into.insert((meta.dev(), meta.ino()));
    if meta.is_dir() {
        for entry in std::fs::read_dir(path).expect("read_dir") {
            collect(&entry.expect("entry").path(), into);
        }
    }
}

fn tree() -> &'static Tree {
    static TREE: OnceLock<Tree> = OnceLock::new();
    TREE.get_or_init(|| {
        let base: PathBuf =
            std::env::temp_dir().join(format!("pyrs-fuzz-static-{}", std::process::id()));
        let root = base.join("root");
        let outside = base.join("outside");
        for dir in [root.join("sub/deeper"), outside.clone()] {
            std::fs::create_dir_all(dir).expect("mkdir");
        }
        std::fs::write(outside.join("secret"), "secret").expect("write");
        std::fs::write(root.join("index.html"), "index").expect("write");
        std::fs::write(root.join("a.txt"), "a").expect("write");
        std::fs::write(root.join("sub/index.html"), "b").expect("write");
        std::fs::write(root.join("sub/deeper/c"), "c").expect("write");
        symlink(outside.join("secret"), root.join("abs")).expect("symlink");
        symlink("../outside/secret", root.join("rel")).expect("symlink");
        symlink("../outside", root.join("outdir")).expect("symlink");
        symlink("../../outside", root.join("sub/up")).expect("symlink");
        symlink("/proc/self/root/etc/passwd", root.join("magic")).expect("symlink");
        symlink("a.txt", root.join("sub/inside")).expect("symlink");
        let mut inside = HashSet::new();
        collect(&root, &mut inside);
        let at = Location { line: 1, column: 1 };
        let entry = StaticEntry {
            path: "/*".into(),
            dir: root,
            max_age: None,
            index: Some("index.html".into()),
            precompressed: false,
            location: at,
            path_at: at,
        };
        let mount = Mount::open(&entry).expect("open the mount");
        Tree { mount, inside }
    })
}

fuzz_target!(|data: &[u8]| {
    let tree = tree();
    if let Ok(file) = tree.mount.open_path(data) {
        let meta = file.metadata().expect("fstat");
        assert!(
            tree.inside.contains(&(meta.dev(), meta.ino())),
            "{:?} opened a file outside the folder",
            String::from_utf8_lossy(data)
        );
    }
});
