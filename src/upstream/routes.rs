//! Which pool a request goes to: the `[[routes]]` of the config, matched by host and path prefix.
//!
//! The most specific route wins, whatever the order in the file: an exact host before a wildcard one
//! (`*.example.com`), a wildcard before none, and among those the longest `path_prefix`. A request no route takes
//! goes to the default pool (the top-level `backends`), or gets 404 when there is none. The host is the request's
//! `Host` (or `:authority`), compared without its port and case-insensitively; the path is compared as bytes.
//!
//! The path is matched as nginx matches a location, not as sent: unreserved characters written as `%XX` decoded,
//! repeated slashes merged and dot segments removed (RFC 3986 §5.2.4), so that `/static/../private`,
//! `/static//private` or `/static/%70rivate` cannot reach what a `/private` or `/static/private` route guards through
//! another pool (found by the review). The backend still gets the path as the client sent it.
//!
//! With no routes (the common case) nothing is looked at: every request goes to the default pool.

use std::borrow::Cow;

use crate::config::{HostMatch, RouteConfig};

/// The routes of a snapshot, most specific first.
#[derive(Debug, Default)]
pub struct Routes {
    ordered: Vec<RouteConfig>,
    /// Some route has a `path_prefix`: only then is the path normalized.
    by_path: bool,
}

/// The cluster a request goes to when there are no routes, or no route takes it.
pub const DEFAULT_CLUSTER: usize = 0;

impl Routes {
    pub fn new(routes: &[RouteConfig]) -> Self {
        let mut ordered = routes.to_vec();
        // Stable: among equally specific routes, the file's order decides.
        ordered.sort_by_key(|route| std::cmp::Reverse(specificity(route)));
        let by_path = ordered.iter().any(|route| route.path_prefix.is_some());
        Routes { ordered, by_path }
    }

    pub fn is_empty(&self) -> bool {
        self.ordered.is_empty()
    }

    /// The cluster for a request to `host` (as sent: any case, maybe with a port) and `path`; `None` when no route
    /// takes it (the caller then uses the default pool, if it has backends).
    pub fn find(&self, host: Option<&[u8]>, path: &[u8]) -> Option<usize> {
        let host = host.map(without_port);
        let normalized = match self.by_path {
            true => normalized(path),
            false => Cow::Borrowed(path),
        };
        let path = &*normalized;
        self.ordered
            .iter()
            .find(|route| {
                let host_ok = match (&route.host, host) {
                    (None, _) => true,
                    (Some(_), None) => false,
                    (Some(HostMatch::Exact(name)), Some(host)) => {
                        host.eq_ignore_ascii_case(name.as_bytes())
                    }
                    (Some(HostMatch::Suffix(suffix)), Some(host)) => {
                        host.len() > suffix.len()
                            && host[host.len() - suffix.len()..]
                                .eq_ignore_ascii_case(suffix.as_bytes())
                    }
                };
                host_ok
                    && route
                        .path_prefix
                        .as_ref()
                        .is_none_or(|prefix| path.starts_with(prefix.as_bytes()))
            })
            .map(|route| route.cluster)
    }
}

/// How specific a route is: host kind first (exact 2, wildcard 1, none 0), then the length of its path prefix.
fn specificity(route: &RouteConfig) -> (u8, usize, usize) {
    let host = match &route.host {
        Some(HostMatch::Exact(_)) => (2, 0),
        Some(HostMatch::Suffix(suffix)) => (1, suffix.len()),
        None => (0, 0),
    };
    let prefix = route.path_prefix.as_ref().map_or(0, String::len);
    (host.0, prefix, host.1)
}

/// `path` as routes compare it: unreserved `%XX` decoded, repeated slashes merged, `.` and `..` segments removed (a
/// `..` above the root stays at the root). Borrowed when there is nothing to do (the common case).
fn normalized(path: &[u8]) -> Cow<'_, [u8]> {
    let plain = !path.contains(&b'%') && !path.windows(2).any(|w| w == b"//" || w == b"/.");
    if plain {
        return Cow::Borrowed(path);
    }
    let mut decoded = Vec::with_capacity(path.len());
    let mut i = 0;
    while i < path.len() {
        let byte = path[i];
        let escaped = (byte == b'%')
            .then(|| path.get(i + 1..i + 3))
            .flatten()
            .and_then(|hex| u8::from_str_radix(std::str::from_utf8(hex).ok()?, 16).ok())
            .filter(|b| b.is_ascii_alphanumeric() || b"-._~".contains(b));
        match escaped {
            Some(unreserved) => {
                decoded.push(unreserved);
                i += 3;
            }
            None => {
                decoded.push(byte);
                i += 1;
            }
        }
    }
    let mut segments: Vec<&[u8]> = Vec::new();
    let trailing = decoded.ends_with(b"/")
        || decoded.ends_with(b"/.")
        || decoded.ends_with(b"/..")
        || decoded == b"."
        || decoded == b"..";
    for segment in decoded.split(|&b| b == b'/') {
        match segment {
            b"" | b"." => {}
            b".." => {
                segments.pop();
            }
            segment => segments.push(segment),
        }
    }
    let mut out = Vec::with_capacity(decoded.len());
    for segment in &segments {
        out.push(b'/');
        out.extend_from_slice(segment);
    }
    if trailing || out.is_empty() {
        out.push(b'/');
    }
    Cow::Owned(out)
}

/// `example.com` of `example.com:8080`, `[::1]` of `[::1]:8080`; a trailing dot is dropped too (`example.com.`).
fn without_port(host: &[u8]) -> &[u8] {
    let host = match host.iter().rposition(|&b| b == b':') {
        // An IPv6 literal's colons are inside its brackets.
        Some(colon) if !host[colon..].contains(&b']') => &host[..colon],
        _ => host,
    };
    host.strip_suffix(b".").unwrap_or(host)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn route(host: Option<&str>, prefix: Option<&str>, cluster: usize) -> RouteConfig {
        RouteConfig {
            host: host.map(|h| match h.strip_prefix('*') {
                Some(suffix) => HostMatch::Suffix(suffix.to_owned()),
                None => HostMatch::Exact(h.to_owned()),
            }),
            path_prefix: prefix.map(str::to_owned),
            cluster,
        }
    }

    #[test]
    fn the_most_specific_route_wins_whatever_the_order() {
        let routes = Routes::new(&[
            route(None, Some("/api"), 1),
            route(Some("*.example.com"), None, 2),
            route(Some("api.example.com"), None, 3),
            route(None, Some("/api/v2"), 4),
            route(Some("api.example.com"), Some("/admin"), 5),
        ]);
        let find = |host: &str, path: &str| routes.find(Some(host.as_bytes()), path.as_bytes());
        assert_eq!(find("api.example.com", "/"), Some(3));
        assert_eq!(find("API.Example.COM:8080", "/x"), Some(3));
        assert_eq!(find("api.example.com", "/admin/x"), Some(5));
        assert_eq!(find("www.example.com", "/api"), Some(2));
        assert_eq!(find("example.com", "/api/v2/users"), Some(4));
        assert_eq!(find("other.org", "/api/v1"), Some(1));
        assert_eq!(find("other.org", "/"), None);
        assert_eq!(routes.find(None, b"/api"), Some(1));
    }

    #[test]
    fn paths_are_matched_normalized() {
        let n = |path: &str| String::from_utf8(normalized(path.as_bytes()).into_owned()).unwrap();
        assert_eq!(n("/static/x/../private/secret"), "/static/private/secret");
        assert_eq!(n("/static//private/secret"), "/static/private/secret");
        assert_eq!(n("/static/%70rivate/secret"), "/static/private/secret");
        assert_eq!(n("/static/../private"), "/private");
        assert_eq!(n("/../../etc"), "/etc");
        assert_eq!(n("/a/./b/."), "/a/b/");
        assert_eq!(
            n("/a/%2F/b"),
            "/a/%2F/b",
            "an encoded slash is not a separator"
        );
        assert_eq!(n("/a%2"), "/a%2");
        assert_eq!(n("/plain/path.html"), "/plain/path.html");
        assert!(matches!(normalized(b"/plain/x.y"), Cow::Borrowed(_)));

        let routes = Routes::new(&[
            route(None, Some("/static/"), 1),
            route(None, Some("/static/private/"), 0),
        ]);
        for sneaky in [
            "/static/x/../private/secret",
            "/static//private/secret",
            "/static/%70rivate/secret",
        ] {
            assert_eq!(routes.find(None, sneaky.as_bytes()), Some(0), "{sneaky}");
        }
        assert_eq!(routes.find(None, b"/static/../private"), None);
        assert_eq!(routes.find(None, b"/static/img.png"), Some(1));
    }

    #[test]
    fn a_wildcard_needs_a_label_before_its_suffix() {
        let routes = Routes::new(&[route(Some("*.example.com"), None, 1)]);
        assert_eq!(routes.find(Some(b"example.com"), b"/"), None);
        assert_eq!(routes.find(Some(b"a.b.example.com"), b"/"), Some(1));
        assert_eq!(routes.find(Some(b"badexample.com"), b"/"), None);
    }

    #[test]
    fn ports_and_a_trailing_dot_are_not_part_of_the_host() {
        assert_eq!(without_port(b"example.com:80"), b"example.com");
        assert_eq!(without_port(b"example.com."), b"example.com");
        assert_eq!(without_port(b"[::1]:8080"), b"[::1]");
        assert_eq!(without_port(b"[::1]"), b"[::1]");
    }
}
