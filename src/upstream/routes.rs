//! Which pool a request goes to: the `[[routes]]` of the config, matched by host and path prefix.
//!
//! The most specific route wins, whatever the order in the file: an exact host before a wildcard one
//! (`*.example.com`), a wildcard before none, and among those the longest `path_prefix`. A request no route takes
//! goes to the default pool (the top-level `backends`), or gets 404 when there is none. The host is the request's
//! `Host` (or `:authority`), compared without its port and case-insensitively; the path is compared as bytes.
//!
//! With no routes (the common case) nothing is looked at: every request goes to the default pool.

use crate::config::{HostMatch, RouteConfig};

/// The routes of a snapshot, most specific first.
#[derive(Debug, Default)]
pub struct Routes {
    ordered: Vec<RouteConfig>,
}

/// The cluster a request goes to when there are no routes, or no route takes it.
pub const DEFAULT_CLUSTER: usize = 0;

impl Routes {
    pub fn new(routes: &[RouteConfig]) -> Self {
        let mut ordered = routes.to_vec();
        // Stable: among equally specific routes, the file's order decides.
        ordered.sort_by_key(|route| std::cmp::Reverse(specificity(route)));
        Routes { ordered }
    }

    pub fn is_empty(&self) -> bool {
        self.ordered.is_empty()
    }

    /// The cluster for a request to `host` (as sent: any case, maybe with a port) and `path`; `None` when no route
    /// takes it (the caller then uses the default pool, if it has backends).
    pub fn find(&self, host: Option<&[u8]>, path: &[u8]) -> Option<usize> {
        let host = host.map(without_port);
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
