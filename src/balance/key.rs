//! What a request is hashed by for `consistent_hash` (`hash_key`): the client's address, a header, a cookie, or the
//! path. The same bytes give the same hash in every `lb` process ([`super::key_hash`], no per-process seed), so
//! several balancers in front of the same backends send a key to the same one.

use std::net::IpAddr;

use crate::config::HashKey;

/// The hash of `key` for a request from `client` to `path` (without its query), whose header `name` (lowercase) is
/// `header(name)`. A missing header or cookie hashes as empty: such requests all go to one backend, as nginx's
/// `hash` does.
pub fn request_hash<'a>(
    key: &HashKey,
    client: IpAddr,
    path: &[u8],
    header: impl Fn(&str) -> Option<&'a [u8]>,
) -> u64 {
    match key {
        HashKey::ClientIp => match client {
            IpAddr::V4(v4) => super::key_hash(&v4.octets()),
            IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
                Some(v4) => super::key_hash(&v4.octets()),
                None => super::key_hash(&v6.octets()),
            },
        },
        HashKey::Header(name) => super::key_hash(header(name).unwrap_or_default()),
        HashKey::Cookie(name) => super::key_hash(
            header("cookie")
                .and_then(|c| cookie(c, name))
                .unwrap_or_default(),
        ),
        HashKey::Path => super::key_hash(path),
    }
}

/// The value of cookie `name` in a `Cookie` header (`a=1; b=2`), quotes left as sent.
fn cookie<'a>(header: &'a [u8], name: &str) -> Option<&'a [u8]> {
    header.split(|&b| b == b';').find_map(|pair| {
        let pair = pair.trim_ascii();
        let eq = pair.iter().position(|&b| b == b'=')?;
        (pair[..eq].trim_ascii() == name.as_bytes()).then(|| pair[eq + 1..].trim_ascii())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cookies_are_found_by_exact_name() {
        assert_eq!(
            cookie(b"a=1; session=xyz; b=2", "session"),
            Some(&b"xyz"[..])
        );
        assert_eq!(
            cookie(b"sessionx=1;session = 2", "session"),
            Some(&b"2"[..])
        );
        assert_eq!(cookie(b"a=1", "session"), None);
    }

    #[test]
    fn the_same_key_hashes_the_same_whatever_the_source() {
        let v4: IpAddr = "10.1.2.3".parse().unwrap();
        let mapped: IpAddr = "::ffff:10.1.2.3".parse().unwrap();
        let none = |_: &str| None;
        let by_ip = |ip| request_hash(&HashKey::ClientIp, ip, b"/", none);
        assert_eq!(by_ip(v4), by_ip(mapped));
        let user = HashKey::Header("x-user".into());
        let with = |v: &'static [u8]| move |n: &str| (n == "x-user").then_some(v);
        assert_eq!(
            request_hash(&user, v4, b"/a", with(b"alice")),
            request_hash(&user, mapped, b"/b", with(b"alice"))
        );
        assert_ne!(
            request_hash(&user, v4, b"/", with(b"alice")),
            request_hash(&user, v4, b"/", with(b"bob"))
        );
    }
}
