//! Maps a request path (without query) to a [`Route`]: a Python module entry or a
//! static mount. Built once at startup from the project's `modules` and `static`
//! (one table, so the rules below hold across both) and shared read-only by every
//! reactor thread; a path that matches no route is answered 404 by the reactor
//! without touching Python.
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

/// What a path routes to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Route {
    /// `modules[i]`: a job for the Python worker.
    Module(u32),
    /// `static[i]`: a file answered by the reactor.
    Static(u32),
}

#[derive(Debug, Default)]
pub struct Router {
    exact: Vec<(Box<[u8]>, Route)>,
    exact_map: HashMap<Box<[u8]>, Route>,
    /// Longest prefix first.
    prefixes: Vec<(Box<[u8]>, Route)>,
}

impl Router {
    /// Builds a router of modules only; path `i` yields `Route::Module(i)`.
    pub fn new<'a>(paths: impl IntoIterator<Item = &'a str>) -> Router {
        Router::with_static(paths, [])
    }

    /// Builds a router: `modules[i]` yields `Route::Module(i)`, `statics[i]`
    /// `Route::Static(i)`. The project file guarantees no path is in both.
    pub fn with_static<'a>(
        modules: impl IntoIterator<Item = &'a str>,
        statics: impl IntoIterator<Item = &'a str>,
    ) -> Router {
        let mut r = Router::default();
        let modules = modules
            .into_iter()
            .enumerate()
            .map(|(i, p)| (p, Route::Module(i as u32)));
        let statics = statics
            .into_iter()
            .enumerate()
            .map(|(i, p)| (p, Route::Static(i as u32)));
        for (path, i) in modules.chain(statics) {
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

    /// The route for `path` and the prefix it matched (empty for an exact
    /// route), or `None` for a 404.
    #[inline]
    pub fn find(&self, path: &[u8]) -> Option<Route> {
        self.find_with_prefix(path).map(|(route, _)| route)
    }

    /// Like [`Router::find`], also giving the length of the matched prefix
    /// (0 for an exact route): what a static mount strips from the path.
    #[inline]
    pub fn find_with_prefix(&self, path: &[u8]) -> Option<(Route, usize)> {
        if self.exact_map.is_empty() {
            for (p, i) in &self.exact {
                if p.as_ref() == path {
                    return Some((*i, 0));
                }
            }
        } else if let Some(i) = self.exact_map.get(path) {
            return Some((*i, 0));
        }
        for (prefix, i) in &self.prefixes {
            if path.starts_with(prefix) {
                return Some((*i, prefix.len()));
            }
            if path == &prefix[..prefix.len() - 1] {
                return Some((*i, path.len()));
            }
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const fn m(i: u32) -> Option<Route> {
        Some(Route::Module(i))
    }

    #[test]
    fn modules_and_mounts_share_the_rules() {
        let r = Router::with_static(["/static/app.js", "/*"], ["/static/*", "/static/big/*"]);
        assert_eq!(r.find(b"/static/app.js"), m(0));
        assert_eq!(
            r.find_with_prefix(b"/static/x.css"),
            Some((Route::Static(0), 8))
        );
        assert_eq!(
            r.find_with_prefix(b"/static/big/f"),
            Some((Route::Static(1), 12))
        );
        assert_eq!(r.find_with_prefix(b"/static"), Some((Route::Static(0), 7)));
        assert_eq!(r.find(b"/staticx"), m(1));
    }

    #[test]
    fn exact_beats_wildcard() {
        let r = Router::new(["/*", "/echo"]);
        assert_eq!(r.find(b"/echo"), m(1));
        assert_eq!(r.find(b"/other"), m(0));
        assert_eq!(r.find(b"/"), m(0));
    }

    #[test]
    fn longer_prefix_beats_shorter() {
        let r = Router::new(["/api/*", "/api/v2/*", "/*"]);
        assert_eq!(r.find(b"/api/v2/x"), m(1));
        assert_eq!(r.find(b"/api/v1/x"), m(0));
        assert_eq!(r.find(b"/api"), m(0));
        assert_eq!(r.find(b"/apiary"), m(2));
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
        assert_eq!(r.find(b"/r33"), m(33));
        assert_eq!(r.find(b"/r40"), None);
    }
}
