//! Maps a request path (without query) to a route index. Built once at startup from
//! the project's `modules` and shared read-only by every reactor thread; a path that
//! matches no route is answered 404 by the reactor without touching Python.
//!
//! Rules: an exact path beats any wildcard; among wildcards (`/api/*`) the longest
//! prefix wins; `/*` is the catch-all. `/api/*` matches `/api` and everything under
//! `/api/`, but not `/apiary`.

use std::collections::HashMap;

/// Above this many exact routes a hash map beats a linear scan.
const LINEAR_EXACT_ROUTES: usize = 16;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Pattern {
    Exact(String),
    /// The prefix without the trailing `*` (it ends in `/`).
    Prefix(String),
}

impl Pattern {
    /// Reads a route as written in project.pyrs (`/echo`, `/api/*`, `/*`).
    pub fn parse(path: &str) -> Pattern {
        match path.strip_suffix('*') {
            Some(prefix) => Pattern::Prefix(prefix.to_owned()),
            None => Pattern::Exact(path.to_owned()),
        }
    }
}

#[derive(Debug, Default)]
pub struct Router {
    exact: Vec<(Box<[u8]>, u32)>,
    exact_map: HashMap<Box<[u8]>, u32>,
    /// Longest prefix first.
    prefixes: Vec<(Box<[u8]>, u32)>,
}

impl Router {
    /// Builds a router; route `i` of `paths` yields index `i`.
    pub fn new<'a>(paths: impl IntoIterator<Item = &'a str>) -> Router {
        let mut r = Router::default();
        for (i, path) in paths.into_iter().enumerate() {
            let i = i as u32;
            match Pattern::parse(path) {
                Pattern::Exact(p) => r.exact.push((p.into_bytes().into(), i)),
                Pattern::Prefix(p) => r.prefixes.push((p.into_bytes().into(), i)),
            }
        }
        r.prefixes.sort_by_key(|p| std::cmp::Reverse(p.0.len()));
        if r.exact.len() > LINEAR_EXACT_ROUTES {
            r.exact_map = r.exact.drain(..).collect();
        }
        r
    }

    /// The route index for `path`, or `None` for a 404.
    #[inline]
    pub fn find(&self, path: &[u8]) -> Option<u32> {
        if self.exact_map.is_empty() {
            for (p, i) in &self.exact {
                if p.as_ref() == path {
                    return Some(*i);
                }
            }
        } else if let Some(i) = self.exact_map.get(path) {
            return Some(*i);
        }
        for (prefix, i) in &self.prefixes {
            if path.starts_with(prefix) || path == &prefix[..prefix.len() - 1] {
                return Some(*i);
            }
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exact_beats_wildcard() {
        let r = Router::new(["/*", "/echo"]);
        assert_eq!(r.find(b"/echo"), Some(1));
        assert_eq!(r.find(b"/other"), Some(0));
        assert_eq!(r.find(b"/"), Some(0));
    }

    #[test]
    fn longer_prefix_beats_shorter() {
        let r = Router::new(["/api/*", "/api/v2/*", "/*"]);
        assert_eq!(r.find(b"/api/v2/x"), Some(1));
        assert_eq!(r.find(b"/api/v1/x"), Some(0));
        assert_eq!(r.find(b"/api"), Some(0));
        assert_eq!(r.find(b"/apiary"), Some(2));
    }

    #[test]
    fn no_match_is_none() {
        let r = Router::new(["/echo", "/api/*"]);
        assert_eq!(r.find(b"/"), None);
        assert_eq!(r.find(b"/echo/"), None);
        assert_eq!(r.find(b"/ap"), None);
    }

    #[test]
    fn many_exact_routes_use_the_map() {
        let paths: Vec<String> = (0..40).map(|i| format!("/r{i}")).collect();
        let r = Router::new(paths.iter().map(String::as_str));
        assert_eq!(r.find(b"/r33"), Some(33));
        assert_eq!(r.find(b"/r40"), None);
    }
}
