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

/// An IP address as text, formatted on the stack (`IpAddr`'s `Display` goes
/// through the formatter and a `String`: a tenth of a microsecond per request).
pub struct IpText {
    buf: [u8; 46],
    len: usize,
}

impl IpText {
    pub fn new(ip: std::net::IpAddr) -> IpText {
        let mut text = IpText {
            buf: [0; 46],
            len: 0,
        };
        match ip {
            std::net::IpAddr::V4(v4) => {
                for (i, octet) in v4.octets().into_iter().enumerate() {
                    if i > 0 {
                        text.push(b'.');
                    }
                    if octet >= 100 {
                        text.push(b'0' + octet / 100);
                    }
                    if octet >= 10 {
                        text.push(b'0' + octet / 10 % 10);
                    }
                    text.push(b'0' + octet % 10);
                }
            }
            std::net::IpAddr::V6(v6) => {
                use std::fmt::Write;
                // At most 45 characters (an IPv4-mapped address).
                let _ = write!(text, "{v6}");
            }
        }
        text
    }

    fn push(&mut self, b: u8) {
        if let Some(slot) = self.buf.get_mut(self.len) {
            *slot = b;
            self.len += 1;
        }
    }

    pub fn as_str(&self) -> &str {
        // Only ASCII is ever pushed.
        std::str::from_utf8(&self.buf[..self.len]).unwrap_or_default()
    }
}

impl std::fmt::Write for IpText {
    fn write_str(&mut self, s: &str) -> std::fmt::Result {
        for &b in s.as_bytes() {
            self.push(b);
        }
        Ok(())
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
    fn ip_text_matches_display() {
        for ip in [
            "127.0.0.1",
            "0.0.0.0",
            "255.255.255.255",
            "10.200.3.45",
            "::1",
            "::ffff:255.255.255.255",
            "2001:db8:85a3:8d3:1319:8a2e:370:7348",
            "ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff",
        ] {
            let ip: std::net::IpAddr = ip.parse().unwrap();
            assert_eq!(IpText::new(ip).as_str(), ip.to_string());
        }
    }

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
