//! What WSGI and ASGI applications share, on the Python worker thread: where an
//! app is mounted and served ([`AppSetting`]), and the path decoding both
//! interfaces apply (PATH_INFO, `scope["path"]`).

/// What a WSGI or ASGI app is told about where it runs.
pub struct AppSetting<'a> {
    /// The entry's route (`/p/*`, `/*`, `/exact`).
    pub route: &'a str,
    pub server_name: &'a str,
    pub server_port: u16,
    /// More than one worker process serves the app.
    pub multiprocess: bool,
    /// Several Python threads call it (`python_threads` > 1).
    pub multithread: bool,
}

impl AppSetting<'_> {
    /// The mount point: `/p` for `/p/*`, empty for `/*` and exact routes (WSGI's
    /// `SCRIPT_NAME`, ASGI's `root_path`).
    pub fn mount_prefix(&self) -> &str {
        self.route.strip_suffix("/*").unwrap_or_default()
    }
}

/// `%XX` sequences decoded (PATH_INFO is the decoded path); anything else as is.
pub fn percent_decode(path: &[u8]) -> std::borrow::Cow<'_, [u8]> {
    if !path.contains(&b'%') {
        return std::borrow::Cow::Borrowed(path);
    }
    let hex = |b: u8| char::from(b).to_digit(16);
    let mut out = Vec::with_capacity(path.len());
    let mut i = 0;
    while i < path.len() {
        match (
            path[i],
            path.get(i + 1).copied().and_then(hex),
            path.get(i + 2).copied().and_then(hex),
        ) {
            (b'%', Some(h), Some(l)) => {
                out.push((h * 16 + l) as u8);
                i += 3;
            }
            (b, _, _) => {
                out.push(b);
                i += 1;
            }
        }
    }
    std::borrow::Cow::Owned(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decodes_percent_escapes_only_when_well_formed() {
        assert_eq!(&*percent_decode(b"/a%20b/%E2%82%AC"), b"/a b/\xe2\x82\xac");
        assert_eq!(&*percent_decode(b"/100%"), b"/100%");
        assert_eq!(&*percent_decode(b"/%zz"), b"/%zz");
        assert!(matches!(
            percent_decode(b"/plain"),
            std::borrow::Cow::Borrowed(_)
        ));
    }
}
