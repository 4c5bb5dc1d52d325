//! The `Date` header value, cached per thread. Each reactor and the Python worker
//! call [`refresh`] once per loop round (one clock read per round, not per response)
//! and [`get`] whenever they encode a response; formatting happens at most once a
//! second per thread.

use std::cell::RefCell;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// Length of an IMF-fixdate: `Sun, 06 Nov 1994 08:49:37 GMT`.
pub const DATE_LEN: usize = 29;

struct Cached {
    second: u64,
    value: [u8; DATE_LEN],
}

thread_local! {
    static CACHE: RefCell<Cached> = const { RefCell::new(Cached { second: u64::MAX, value: [b' '; DATE_LEN] }) };
}

/// Re-reads the clock and reformats the cached value if the second changed.
pub fn refresh() {
    let now = SystemTime::now();
    let second = now
        .duration_since(UNIX_EPOCH)
        .unwrap_or(Duration::ZERO)
        .as_secs();
    CACHE.with(|c| {
        let mut c = c.borrow_mut();
        if c.second != second {
            let text = httpdate::fmt_http_date(UNIX_EPOCH + Duration::from_secs(second));
            if text.len() == DATE_LEN {
                c.value.copy_from_slice(text.as_bytes());
            }
            c.second = second;
        }
    });
}

/// The second (since the epoch) of this thread's cached value; changes at most
/// once a second, so caches built from [`get`] can key on it.
pub fn second() -> u64 {
    let second = CACHE.with(|c| c.borrow().second);
    if second == u64::MAX {
        refresh();
        return CACHE.with(|c| c.borrow().second);
    }
    second
}

/// The cached value, as of this thread's last [`refresh`] (refreshing first if this
/// thread never did).
pub fn get() -> [u8; DATE_LEN] {
    let value = CACHE.with(|c| {
        let c = c.borrow();
        (c.second != u64::MAX).then_some(c.value)
    });
    match value {
        Some(v) => v,
        None => {
            refresh();
            CACHE.with(|c| c.borrow().value)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_imf_fixdate() {
        refresh();
        let d = get();
        let s = std::str::from_utf8(&d).expect("ascii");
        assert!(s.ends_with(" GMT"), "{s}");
        assert!(httpdate::parse_http_date(s).is_ok(), "{s}");
    }
}
