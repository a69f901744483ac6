//! What the access log and the failure lines see of a request on the generic path.
//!
//! Both were written for our HTTP/1.1 engine, over a parsed head and the bytes it was parsed from. A request that
//! came through hyper (HTTP/2, or HTTP/1.1 on the generic path) is shown to them the same way: a short head made of
//! its request line (`GET /a HTTP/2.0`) and the two headers a line may show (`Referer`, `User-Agent`), so that its
//! line has the same form and fields as any other.

use http::header::{REFERER, USER_AGENT};
use http::{Request, Version};

use crate::h1::request::RequestHead;
use crate::h1::{BodyLength, Header};

/// A request as the access log reads it.
pub struct Logged {
    pub head: RequestHead,
    pub raw: Vec<u8>,
}

impl Logged {
    pub fn of<B>(request: &Request<B>) -> Self {
        let mut raw = Vec::with_capacity(128);
        raw.extend_from_slice(request.method().as_str().as_bytes());
        raw.push(b' ');
        let start = raw.len();
        let uri = request.uri();
        match uri.path_and_query() {
            Some(path) => raw.extend_from_slice(path.as_str().as_bytes()),
            None => raw.extend_from_slice(uri.to_string().as_bytes()),
        }
        let target = start..raw.len();
        let version: &[u8] = match request.version() {
            Version::HTTP_2 => b" HTTP/2.0\r\n",
            Version::HTTP_10 => b" HTTP/1.0\r\n",
            _ => b" HTTP/1.1\r\n",
        };
        raw.extend_from_slice(version);
        let mut headers = Vec::new();
        for name in [REFERER, USER_AGENT] {
            if let Some(value) = request.headers().get(&name) {
                let name_start = raw.len();
                raw.extend_from_slice(name.as_str().as_bytes());
                let name_range = name_start..raw.len();
                raw.extend_from_slice(b": ");
                let value_start = raw.len();
                raw.extend_from_slice(value.as_bytes());
                headers.push(Header {
                    name: name_range,
                    value: value_start..raw.len(),
                });
                raw.extend_from_slice(b"\r\n");
            }
        }
        raw.extend_from_slice(b"\r\n");
        let head = RequestHead {
            method: request.method().clone(),
            target,
            minor: 1,
            headers,
            host: None,
            body: BodyLength::Empty,
            declared_length: false,
            keep_alive: false,
            connection_names: false,
            upgrade: None,
        };
        Logged { head, raw }
    }
}
