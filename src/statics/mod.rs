//! Static files, answered by the reactor that parsed the request, with no Python
//! and no GIL. A [`Mount`] is one `static` entry of the project file, opened at
//! startup (its folder's descriptor) and shared read-only by every reactor.
//! [`answer`] turns one GET or HEAD into a complete response: the path is checked
//! and opened beneath the folder (`resolve.rs`), the preconditions and `Range`
//! are applied (`conditional.rs`), the head is laid out by `response.rs`, and the
//! body is either read into the output (small files, so pipelined answers still
//! leave in one write) or returned as a [`FileSlice`] for the reactor to
//! `sendfile` in bounded slices.

mod conditional;
mod resolve;

use std::ffi::CStr;
use std::fs::{File, Metadata};
use std::io::{self, Write as _};
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::fs::{FileExt, MetadataExt, OpenOptionsExt};
use std::time::{Duration, UNIX_EPOCH};

use bytes::{BufMut, BytesMut};
use pyrs_parser::{Field, Method};

use crate::config::StaticEntry;
use crate::date;
use crate::output::FileSlice;
use crate::response::{self, FileHead, Persist};
use conditional::{Conditions, Precondition, RangeAnswer};
pub use resolve::Refused;
use resolve::{Decoded, Resolver, MAX_PATH};

/// Files up to this size are read into the output buffer: one `pread` and no
/// extra segment, so a pipeline of small files leaves in one `write`. Larger
/// ones go out with `sendfile`.
pub const INLINE_MAX: u64 = 32 * 1024;

/// The longest name appended to a decoded path: `/` + the index file name
/// (checked at startup to fit) + `.br`.
const SUFFIX_ROOM: usize = 256;

/// One `static` entry, ready to serve.
#[derive(Debug)]
pub struct Mount {
    /// The folder, opened once (`O_PATH`); every file is opened beneath it.
    root: OwnedFd,
    resolver: Resolver,
    /// `max-age=N`.
    cache_control: Option<Box<[u8]>>,
    index: Option<Box<[u8]>>,
    precompressed: bool,
}

impl Mount {
    /// Opens the entry's folder (checked to exist when the file was read).
    pub fn open(entry: &StaticEntry) -> io::Result<Mount> {
        let index = entry.index.as_deref().map(|i| i.as_bytes());
        if index.is_some_and(|i| i.len() + 4 > SUFFIX_ROOM) {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "the index file name is too long",
            ));
        }
        // A handle to resolve names beneath, not a readable file.
        let dir = std::fs::OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_PATH | libc::O_DIRECTORY)
            .open(&entry.dir)?;
        let root = OwnedFd::from(dir);
        let resolver = resolve::probe(root.as_fd());
        Ok(Mount {
            root,
            resolver,
            cache_control: entry
                .max_age
                .map(|age| format!("max-age={age}").into_bytes().into()),
            index: index.map(Into::into),
            precompressed: entry.precompressed,
        })
    }
}

impl Mount {
    /// The file a GET for `rel` (the path after the mount's prefix) would be
    /// served from, index included: what the `static_path` fuzz target checks
    /// never lies outside the folder.
    pub fn open_path(&self, rel: &[u8]) -> Result<File, Refused> {
        let mut name = [0u8; MAX_PATH + SUFFIX_ROOM];
        match open_file(self, rel, rel.ends_with(b"/"), &mut name)? {
            Opened::File(found) => Ok(found.file),
            Opened::Folder => Err(Refused::NotFound),
        }
    }
}

/// One request for a static mount.
#[derive(Debug, Clone, Copy)]
pub struct FileRequest<'a> {
    pub method: Method,
    pub persist: Persist,
    /// The request path, as sent (no query).
    pub path: &'a [u8],
    /// The query, without `?`.
    pub query: &'a [u8],
    /// `path` after the mount's prefix.
    pub rel: &'a [u8],
    pub fields: &'a [Field],
    /// The bytes the field spans index.
    pub buf: &'a [u8],
}

/// Answers `req` into `out`; a large body comes back as a file slice to queue
/// right after `out`'s bytes.
pub fn answer(mount: &Mount, req: &FileRequest<'_>, out: &mut BytesMut) -> Option<FileSlice> {
    let head_only = req.method == Method::Head;
    let persist = req.persist;
    let plain = |out: &mut BytesMut, status: u16| {
        let body = response::reason(status).as_bytes();
        response::simple(out, status, response::TEXT_PLAIN, body, persist, head_only);
    };
    if !matches!(req.method, Method::Get | Method::Head) {
        let allow: &[(&[u8], &[u8])] = &[(b"Allow", b"GET, HEAD")];
        let body = response::reason(405).as_bytes();
        response::simple_with(out, 405, allow, body, persist, false);
        return None;
    }
    let mut name = [0u8; MAX_PATH + SUFFIX_ROOM];
    let found = match open_file(mount, req.rel, req.path.ends_with(b"/"), &mut name) {
        Ok(Opened::File(found)) => found,
        Ok(Opened::Folder) => {
            // The path as sent (the parser admits no CR, LF or controls in it).
            let mut location = BytesMut::with_capacity(req.path.len() + req.query.len() + 2);
            location.put_slice(req.path);
            location.put_u8(b'/');
            if !req.query.is_empty() {
                location.put_u8(b'?');
                location.put_slice(req.query);
            }
            let fields: &[(&[u8], &[u8])] = &[(b"Location", &location)];
            let body = response::reason(301).as_bytes();
            response::simple_with(out, 301, fields, body, persist, head_only);
            return None;
        }
        Err(Refused::BadRequest) => {
            plain(out, 400);
            return None;
        }
        Err(Refused::NotFound) => {
            plain(out, 404);
            return None;
        }
    };
    let Found {
        mut file,
        mut meta,
        len,
    } = found;
    let content_type = content_type(&name[..len]);
    let conditions = Conditions::read(req.fields, req.buf);
    let mut encoding = None;
    if mount.precompressed {
        if let Some((coding, f, m)) = precompressed(mount, &conditions, &mut name, len) {
            (file, meta, encoding) = (f, m, Some(coding));
        }
    }
    // Never later than the Date header (RFC 9110 §8.8.2.1).
    let modified = (meta.mtime().max(0) as u64).min(date::second());
    let mut etag_buf = [0u8; 64];
    let etag = etag(&meta, encoding, &mut etag_buf);
    let mut date_buf = [0u8; 40];
    let last_modified = http_date(modified, &mut date_buf);
    let size = meta.size();
    let mut head = FileHead {
        status: 200,
        content_type,
        charset: is_text(content_type),
        encoding,
        length: size,
        range: None,
        etag,
        last_modified,
        cache_control: mount.cache_control.as_deref(),
        vary: mount.precompressed,
    };
    match conditions.evaluate(etag, modified) {
        Precondition::Proceed => {}
        Precondition::NotModified => {
            head.status = 304;
            response::file_head(out, &head, persist);
            return None;
        }
        Precondition::Failed => {
            plain(out, 412);
            return None;
        }
    }
    let mut offset = 0;
    if let Some(range) = conditions.range {
        if req.method == Method::Get && conditions.range_allowed(etag, modified) {
            match conditional::range(range, size) {
                RangeAnswer::Whole => {}
                RangeAnswer::Part { first, last } => {
                    head.status = 206;
                    head.length = last - first + 1;
                    head.range = Some((first, last, size));
                    offset = first;
                }
                RangeAnswer::Unsatisfiable => {
                    let mut value = BytesMut::with_capacity(32);
                    value.put_slice(b"bytes */");
                    value.put_slice(itoa::Buffer::new().format(size).as_bytes());
                    let fields: &[(&[u8], &[u8])] = &[(b"Content-Range", &value)];
                    let body = response::reason(416).as_bytes();
                    response::simple_with(out, 416, fields, body, persist, false);
                    return None;
                }
            }
        }
    }
    let start = out.len();
    response::file_head(out, &head, persist);
    if head_only || head.length == 0 {
        return None;
    }
    if head.length > INLINE_MAX {
        return Some(FileSlice::new(file, offset, head.length));
    }
    let body_at = out.len();
    // At most INLINE_MAX, so the cast holds.
    out.resize(body_at + head.length as usize, 0);
    if file.read_exact_at(&mut out[body_at..], offset).is_err() {
        // The file shrank (or failed) after fstat: say so instead of sending
        // fewer bytes than the head promised.
        out.truncate(start);
        plain(out, 500);
    }
    None
}

/// The opened file, its metadata, and its name's length in the name buffer.
struct Found {
    file: File,
    meta: Metadata,
    len: usize,
}

/// What a path opened.
enum Opened {
    File(Found),
    /// A folder with an index, asked for without the final `/`: redirect, so
    /// that the index page's relative links resolve inside the folder.
    Folder,
}

/// Decodes and opens `rel`, or the folder's index file; only regular files.
/// `slash`: the request path ends in `/`.
fn open_file(
    mount: &Mount,
    rel: &[u8],
    slash: bool,
    name: &mut [u8; MAX_PATH + SUFFIX_ROOM],
) -> Result<Opened, Refused> {
    let decoded_buf: &mut [u8; MAX_PATH] = (&mut name[..MAX_PATH])
        .try_into()
        .expect("the buffer is longer than MAX_PATH");
    let Decoded { mut len, folder } = resolve::decode(rel, decoded_buf)?;
    let (file, meta) = open_at(mount, &name[..=len]).ok_or(Refused::NotFound)?;
    if meta.is_file() && !folder {
        return Ok(Opened::File(Found { file, meta, len }));
    }
    let Some(index) = mount.index.as_deref().filter(|_| meta.is_dir()) else {
        return Err(Refused::NotFound);
    };
    if !slash {
        return Ok(Opened::Folder);
    }
    if &name[..len] == b"." {
        len = 0;
    } else {
        name[len] = b'/';
        len += 1;
    }
    name[len..len + index.len()].copy_from_slice(index);
    len += index.len();
    name[len] = 0;
    match open_at(mount, &name[..=len]) {
        Some((file, meta)) if meta.is_file() => Ok(Opened::File(Found { file, meta, len })),
        _ => Err(Refused::NotFound),
    }
}

/// Opens the NUL-terminated `name` beneath the mount's folder, with its metadata.
fn open_at(mount: &Mount, name: &[u8]) -> Option<(File, Metadata)> {
    let name = CStr::from_bytes_with_nul(name).ok()?;
    let file = resolve::open(mount.root.as_fd(), name, mount.resolver).ok()?;
    let meta = file.metadata().ok()?;
    Some((file, meta))
}

/// A `.br` or `.gz` file beside `name[..len]` that the client accepts.
fn precompressed(
    mount: &Mount,
    conditions: &Conditions<'_>,
    name: &mut [u8; MAX_PATH + SUFFIX_ROOM],
    len: usize,
) -> Option<(&'static [u8], File, Metadata)> {
    let accept = conditions.accept_encoding?;
    for (coding, suffix) in [(&b"br"[..], &b".br\0"[..]), (b"gzip", b".gz\0")] {
        if !conditional::accepts(accept, coding) {
            continue;
        }
        name[len..len + suffix.len()].copy_from_slice(suffix);
        let found = open_at(mount, &name[..len + suffix.len()]);
        name[len] = 0;
        if let Some((file, meta)) = found.filter(|(_, meta)| meta.is_file()) {
            return Some((coding, file, meta));
        }
    }
    None
}

/// The type for a file name's extension (`application/octet-stream` if none).
fn content_type(name: &[u8]) -> &'static str {
    let last = name.rsplit(|&b| b == b'/').next().unwrap_or(name);
    last.iter()
        .rposition(|&b| b == b'.')
        .and_then(|dot| std::str::from_utf8(&last[dot + 1..]).ok())
        .and_then(|ext| mime_guess::from_ext(ext).first_raw())
        .unwrap_or("application/octet-stream")
}

/// Types that get `; charset=utf-8`: without it browsers read text as
/// windows-1252, and pyrs writes UTF-8 text everywhere else too.
fn is_text(content_type: &str) -> bool {
    content_type.starts_with("text/")
        || content_type == "application/javascript"
        || content_type == "application/json"
}

/// A strong entity tag from modification time (to the nanosecond) and size,
/// marked with the content coding for a precompressed sibling.
fn etag<'a>(meta: &Metadata, coding: Option<&[u8]>, buf: &'a mut [u8; 64]) -> &'a [u8] {
    let mut w = &mut buf[..];
    let secs = meta.mtime().max(0) as u64;
    let nanos = meta.mtime_nsec().max(0) as u64;
    // 64 bytes hold two quotes, three u64s in hex, separators and a coding.
    let _ = write!(w, "\"{secs:x}.{nanos:x}-{:x}", meta.size());
    if let Some(coding) = coding {
        let _ = w.write_all(b"-");
        let _ = w.write_all(coding);
    }
    let _ = w.write_all(b"\"");
    let left = w.len();
    &buf[..64 - left]
}

/// `secs` as an IMF-fixdate.
fn http_date(secs: u64, buf: &mut [u8; 40]) -> &[u8] {
    let time = UNIX_EPOCH + Duration::from_secs(secs);
    let mut w = &mut buf[..];
    let _ = write!(w, "{}", httpdate::HttpDate::from(time));
    let left = w.len();
    &buf[..40 - left]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn types_come_from_the_extension() {
        assert_eq!(content_type(b"app.js"), "text/javascript");
        assert_eq!(content_type(b"css/site.CSS"), "text/css");
        assert_eq!(content_type(b"a.b/README"), "application/octet-stream");
        assert_eq!(content_type(b"img/logo.png"), "image/png");
        assert!(is_text("text/html") && is_text("application/json"));
        assert!(!is_text("image/svg+xml"));
    }

    #[test]
    fn validators_are_formatted() {
        let mut buf = [0u8; 40];
        assert_eq!(
            http_date(784_111_777, &mut buf),
            b"Sun, 06 Nov 1994 08:49:37 GMT"
        );
    }
}
