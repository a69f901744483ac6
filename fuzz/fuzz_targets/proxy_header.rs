//! The PROXY protocol header decoder: never a panic; a header it accepts is no longer than its input, every shorter
//! prefix of it asks for more bytes (it never decides on bytes it has not seen), and the addresses it reads encode
//! back (as v1 and v2) into headers that decode to the same addresses (IPv4-mapped IPv6 ones may come back as
//! IPv4: the encoder writes them in the family they belong to).
#![no_main]

use lb::fuzzing::{proxy_header, proxy_header_for, ProxyHeader, ProxyVersion};
use std::net::SocketAddr;

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(Some((header, len))) = proxy_header(data) else {
        return;
    };
    assert!(len <= data.len());
    assert_eq!(proxy_header(&data[..len]), Ok(Some((header, len))));
    for cut in 0..len {
        assert_eq!(proxy_header(&data[..cut]), Ok(None), "cut at {cut}");
    }
    if let ProxyHeader::Proxied {
        source,
        destination,
    } = header
    {
        for version in [ProxyVersion::V1, ProxyVersion::V2] {
            let encoded = proxy_header_for(version, source, destination);
            let Ok(Some((ProxyHeader::Proxied { source: s, destination: d }, n))) =
                proxy_header(&encoded)
            else {
                panic!("{version:?}: {encoded:?} does not decode");
            };
            assert_eq!(n, encoded.len());
            assert_eq!((canonical(s), canonical(d)), (canonical(source), canonical(destination)));
        }
    }
});

/// The address with an IPv4-mapped IPv6 address as IPv4.
fn canonical(addr: SocketAddr) -> SocketAddr {
    SocketAddr::new(addr.ip().to_canonical(), addr.port())
}
