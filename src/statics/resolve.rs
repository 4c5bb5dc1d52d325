//! From the path a client sent to an open file beneath a mount's folder, on the
//! reactor thread. The path is percent-decoded once, checked (no NUL, no `\`, no
//! `.` or `..` segment, no empty segment, valid UTF-8, so no overlong forms), then
//! opened relative to the folder's descriptor by the kernel with
//! `openat2(RESOLVE_BENEATH | RESOLVE_NO_MAGICLINKS)`: every component, symlinks
//! included, is resolved at request time and must stay beneath the folder, so a
//! file swapped for a symlink after startup cannot lead outside. Where `openat2`
//! is missing (Linux before 5.6, or a sandbox that refuses it), the path is
//! walked one component at a time with `O_NOFOLLOW`: no symlink is followed at
//! all. The descriptor opened here is the one the bytes are served from; nothing
//! is checked by name and opened again.

use std::ffi::CStr;
use std::fs::File;
use std::io;
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};

/// Longest decoded path, terminating NUL included (Linux's `PATH_MAX`); a
/// longer one could name no file.
pub const MAX_PATH: usize = 4096;

/// Why a path is refused before anything is opened.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refused {
    /// Malformed percent-encoding or a NUL: 400.
    BadRequest,
    /// A name no file beneath the folder can have: 404.
    NotFound,
}

/// A checked path, relative to the mount's folder, NUL-terminated in its buffer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Decoded {
    /// Bytes before the NUL; the folder itself is `.`.
    pub len: usize,
    /// The client's path ended in `/`: only a folder (its index) may answer.
    pub folder: bool,
}

/// How names are resolved beneath a folder.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Resolver {
    /// `openat2` with `RESOLVE_BENEATH | RESOLVE_NO_MAGICLINKS`.
    Beneath,
    /// `openat` one component at a time with `O_NOFOLLOW`.
    Walk,
}

fn hex(b: u8) -> Option<u8> {
    char::from(b).to_digit(16).map(|d| d as u8)
}

/// Decodes `raw` (the request path after the mount's prefix) into `out` and
/// checks it; `out[..len]` is then the relative path and `out[len]` a NUL.
pub fn decode(raw: &[u8], out: &mut [u8; MAX_PATH]) -> Result<Decoded, Refused> {
    let mut len = 0;
    let mut i = 0;
    while i < raw.len() {
        let b = match raw[i] {
            b'%' => {
                let hi = raw.get(i + 1).copied().and_then(hex);
                let lo = raw.get(i + 2).copied().and_then(hex);
                let (Some(hi), Some(lo)) = (hi, lo) else {
                    return Err(Refused::BadRequest);
                };
                i += 3;
                hi << 4 | lo
            }
            b => {
                i += 1;
                b
            }
        };
        match b {
            0 => return Err(Refused::BadRequest),
            b'\\' => return Err(Refused::NotFound),
            _ => {}
        }
        // Keep room for the NUL (the caller's buffer has room for suffixes).
        if len + 1 >= MAX_PATH {
            return Err(Refused::NotFound);
        }
        out[len] = b;
        len += 1;
    }
    let path = &out[..len];
    if std::str::from_utf8(path).is_err() {
        return Err(Refused::NotFound);
    }
    let folder = path.is_empty() || path.ends_with(b"/");
    let body = path.strip_suffix(b"/").unwrap_or(path);
    if !body.is_empty()
        && body
            .split(|&b| b == b'/')
            .any(|segment| matches!(segment, b"" | b"." | b".."))
    {
        return Err(Refused::NotFound);
    }
    if body.is_empty() {
        if !path.is_empty() && path != b"/" {
            return Err(Refused::NotFound);
        }
        out[0] = b'.';
        out[1] = 0;
        return Ok(Decoded { len: 1, folder });
    }
    let len = body.len();
    out[len] = 0;
    Ok(Decoded { len, folder })
}

/// Opens `path` (a checked, relative path) beneath `root` for reading.
pub fn open(root: BorrowedFd<'_>, path: &CStr, how: Resolver) -> io::Result<File> {
    match how {
        Resolver::Beneath => openat2(root.as_raw_fd(), path),
        Resolver::Walk => walk(root, path),
    }
}

/// Flags of every open: never blocks the reactor on a FIFO or a device (the
/// caller serves regular files only), never becomes a controlling terminal.
const OPEN_FLAGS: libc::c_int =
    libc::O_RDONLY | libc::O_CLOEXEC | libc::O_NONBLOCK | libc::O_NOCTTY;

fn openat2(root: RawFd, path: &CStr) -> io::Result<File> {
    // SAFETY: open_how is plain data; all-zero is its documented default.
    let mut how: libc::open_how = unsafe { std::mem::zeroed() };
    how.flags = OPEN_FLAGS as u64;
    how.resolve = libc::RESOLVE_BENEATH | libc::RESOLVE_NO_MAGICLINKS;
    // SAFETY: `path` is NUL-terminated and `how` lives across the call; the
    // kernel reads `size_of::<open_how>()` bytes of it.
    let fd = unsafe {
        libc::syscall(
            libc::SYS_openat2,
            root,
            path.as_ptr(),
            &how as *const libc::open_how,
            std::mem::size_of::<libc::open_how>(),
        )
    };
    owned(fd as libc::c_int)
}

fn owned(fd: libc::c_int) -> io::Result<File> {
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: the kernel just returned this descriptor; nothing else owns it.
    Ok(File::from(unsafe { OwnedFd::from_raw_fd(fd) }))
}

fn openat(dir: RawFd, name: &CStr, flags: libc::c_int) -> io::Result<File> {
    // SAFETY: `name` is NUL-terminated; openat does not keep the pointer.
    owned(unsafe { libc::openat(dir, name.as_ptr(), flags) })
}

/// Opens each component with `O_NOFOLLOW`: a symlink anywhere fails to open
/// (`ELOOP`, or `ENOTDIR` for a folder), and a checked path has no `..`.
fn walk(root: BorrowedFd<'_>, path: &CStr) -> io::Result<File> {
    let bytes = path.to_bytes();
    let mut name = [0u8; MAX_PATH];
    let mut dir: Option<File> = None;
    let mut parts = bytes.split(|&b| b == b'/').peekable();
    while let Some(part) = parts.next() {
        name[..part.len()].copy_from_slice(part);
        name[part.len()] = 0;
        let part = CStr::from_bytes_with_nul(&name[..=part.len()])
            .map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))?;
        let at = dir.as_ref().map_or(root.as_raw_fd(), |d| d.as_raw_fd());
        let last = parts.peek().is_none();
        let flags = if last {
            OPEN_FLAGS | libc::O_NOFOLLOW
        } else {
            libc::O_PATH | libc::O_DIRECTORY | libc::O_NOFOLLOW | libc::O_CLOEXEC
        };
        let next = openat(at, part, flags)?;
        if last {
            return Ok(next);
        }
        dir = Some(next);
    }
    Err(io::Error::from(io::ErrorKind::NotFound))
}

/// Which resolver works here: `openat2` when the kernel has it.
pub fn probe(root: BorrowedFd<'_>) -> Resolver {
    match openat2(root.as_raw_fd(), c".") {
        Ok(_) => Resolver::Beneath,
        Err(_) => Resolver::Walk,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashSet;
    use std::os::unix::fs::{symlink, MetadataExt};
    use std::path::{Path, PathBuf};

    use proptest::prelude::*;

    fn decoded(raw: &str) -> Result<String, Refused> {
        let mut out = [0u8; MAX_PATH];
        let d = decode(raw.as_bytes(), &mut out)?;
        assert_eq!(out[d.len], 0);
        Ok(String::from_utf8_lossy(&out[..d.len]).into_owned() + if d.folder { "/" } else { "" })
    }

    #[test]
    fn decodes_once_and_keeps_plain_names() {
        assert_eq!(decoded("app.js"), Ok("app.js".into()));
        assert_eq!(
            decoded("css/site%20main.css"),
            Ok("css/site main.css".into())
        );
        assert_eq!(decoded("docs/"), Ok("docs/".into()));
        assert_eq!(decoded(""), Ok("./".into()));
        assert_eq!(decoded("/"), Ok("./".into()));
        // Double encoding is decoded once: a name with a literal `%2e`.
        assert_eq!(decoded("%252e%252e/x"), Ok("%2e%2e/x".into()));
        assert_eq!(decoded("caf%C3%A9"), Ok("café".into()));
        assert_eq!(decoded(".well-known/a"), Ok(".well-known/a".into()));
    }

    #[test]
    fn refuses_every_traversal_trick() {
        for raw in [
            "..",
            "../x",
            "a/../../x",
            "%2e%2e/x",
            "%2E%2E%2Fx",
            "..%2fx",
            "a/..%2f..%2fx",
            "%2e%2e%5cx",
            "..%5cx",
            "a\\b",
            "//etc/passwd",
            "/etc/passwd",
            "a//b",
            "./a",
            "a/./b",
            "a/.",
            "%c0%ae%c0%ae/x",
            "%e0%80%ae",
            "%ff",
        ] {
            assert_eq!(decoded(raw), Err(Refused::NotFound), "{raw}");
        }
        for raw in ["a%00b", "%00", "%", "%2", "%zz", "a%g1"] {
            assert_eq!(decoded(raw), Err(Refused::BadRequest), "{raw}");
        }
    }

    #[test]
    fn refuses_paths_past_path_max() {
        let long = "a/".repeat(MAX_PATH);
        assert_eq!(decoded(&long), Err(Refused::NotFound));
    }

    /// A folder `root` with files, a subfolder and symlinks, beside a folder
    /// `outside` that must never be opened.
    struct Tree {
        base: PathBuf,
        root: File,
        /// (dev, inode) of everything beneath root, symlinks not followed.
        inside: HashSet<(u64, u64)>,
    }

    impl Tree {
        fn new(tag: &str) -> Tree {
            static COUNTER: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
            let n = COUNTER.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            let base =
                std::env::temp_dir().join(format!("pyrs-resolve-{tag}-{}-{n}", std::process::id()));
            let _ = std::fs::remove_dir_all(&base);
            let root = base.join("root");
            let outside = base.join("outside");
            for dir in [root.join("sub/deeper"), outside.clone()] {
                std::fs::create_dir_all(dir).expect("mkdir");
            }
            std::fs::write(outside.join("secret"), "secret").expect("write");
            std::fs::write(root.join("a.txt"), "a").expect("write");
            std::fs::write(root.join("sub/b.txt"), "b").expect("write");
            std::fs::write(root.join("sub/deeper/c"), "c").expect("write");
            symlink(outside.join("secret"), root.join("abs")).expect("symlink");
            symlink("../outside/secret", root.join("rel")).expect("symlink");
            symlink("../outside", root.join("outdir")).expect("symlink");
            symlink("../../outside/secret", root.join("sub/up")).expect("symlink");
            symlink("b.txt", root.join("sub/inside")).expect("symlink");
            symlink("/proc/self/root/etc/passwd", root.join("magic")).expect("symlink");
            let mut inside = HashSet::new();
            collect(&root, &mut inside);
            let dir = File::open(&root).expect("open root");
            Tree {
                base,
                root: dir,
                inside,
            }
        }

        /// Resolves `raw` as a request would; checks anything opened is inside.
        fn check(&self, raw: &[u8], how: Resolver) -> Option<u64> {
            let mut out = [0u8; MAX_PATH];
            let d = decode(raw, &mut out).ok()?;
            let path = CStr::from_bytes_with_nul(&out[..=d.len]).expect("one NUL");
            let file = open(self.root_fd(), path, how).ok()?;
            let meta = file.metadata().expect("fstat");
            assert!(
                self.inside.contains(&(meta.dev(), meta.ino())),
                "{:?} opened something outside the folder",
                String::from_utf8_lossy(raw)
            );
            Some(meta.ino())
        }

        fn root_fd(&self) -> BorrowedFd<'_> {
            std::os::fd::AsFd::as_fd(&self.root)
        }
    }

    impl Drop for Tree {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.base);
        }
    }

    fn collect(dir: &Path, into: &mut HashSet<(u64, u64)>) {
        let meta = std::fs::symlink_metadata(dir).expect("lstat");
        into.insert((meta.dev(), meta.ino()));
        if meta.is_dir() {
            for entry in std::fs::read_dir(dir).expect("read_dir") {
                collect(&entry.expect("entry").path(), into);
            }
        }
    }

    #[test]
    fn symlinks_outside_are_never_followed() {
        let tree = Tree::new("links");
        let resolvers = [probe(tree.root_fd()), Resolver::Walk];
        assert_eq!(resolvers[0], Resolver::Beneath, "openat2 on this kernel");
        for how in resolvers {
            assert!(tree.check(b"a.txt", how).is_some());
            assert!(tree.check(b"sub/deeper/c", how).is_some());
            for raw in ["abs", "rel", "outdir/secret", "sub/up", "magic"] {
                assert_eq!(tree.check(raw.as_bytes(), how), None, "{raw} {how:?}");
            }
        }
        // A symlink that stays inside is followed by openat2 only.
        assert!(tree.check(b"sub/inside", Resolver::Beneath).is_some());
        assert_eq!(tree.check(b"sub/inside", Resolver::Walk), None);
    }

    /// Bytes a hostile path is made of: separators, dots, escapes and names
    /// that exist in the tree.
    fn piece() -> impl Strategy<Value = &'static str> {
        prop::sample::select(vec![
            "/", "..", ".", "%2e", "%2E", "%2f", "%2F", "%5c", "\\", "%00", "%25", "%c0%ae", "%",
            "a.txt", "sub", "deeper", "c", "abs", "rel", "outdir", "secret", "up", "inside",
            "magic", "outside", "root", "b.txt", "x",
        ])
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 2000, ..ProptestConfig::default() })]

        #[test]
        fn random_paths_open_nothing_outside(pieces in prop::collection::vec(piece(), 0..12)) {
            let tree = TREE.with(|t| t.clone());
            let raw = pieces.concat();
            for how in [Resolver::Beneath, Resolver::Walk] {
                tree.check(raw.as_bytes(), how);
            }
        }

        #[test]
        fn random_bytes_open_nothing_outside(raw in prop::collection::vec(any::<u8>(), 0..64)) {
            let tree = TREE.with(|t| t.clone());
            for how in [Resolver::Beneath, Resolver::Walk] {
                tree.check(&raw, how);
            }
        }
    }

    thread_local! {
        static TREE: std::rc::Rc<Tree> = std::rc::Rc::new(Tree::new("prop"));
    }
}
