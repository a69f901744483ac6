//! Talking to `lb`'s admin plane: its address (from the startup line, so `--admin 127.0.0.1:0` works), and JSON
//! requests to it.

use std::net::SocketAddr;

use serde_json::Value;

use super::{TestLb, PATIENCE};

impl TestLb {
    /// The admin plane's address, read from the line `admin plane on http://ADDR/ …` (waited for).
    pub async fn admin_addr(&self) -> SocketAddr {
        let needle = "admin plane on http://";
        let line = self.wait_log(needle, PATIENCE).await;
        let rest = &line[line.find(needle).unwrap() + needle.len()..];
        let addr = rest.split('/').next().unwrap_or_default();
        addr.parse()
            .unwrap_or_else(|_| panic!("no admin address in {line:?}"))
    }

    /// `http://ADMIN_ADDR{path}`.
    pub async fn admin_url(&self, path: &str) -> String {
        format!("http://{}{path}", self.admin_addr().await)
    }

    /// Sends `method path` to the admin plane; answers the status and the body as JSON (`Value::Null` if it is not).
    pub async fn admin(&self, method: &str, path: &str) -> (u16, Value) {
        let url = self.admin_url(path).await;
        let method = reqwest::Method::from_bytes(method.as_bytes()).expect("a method");
        let response = self.client.request(method.clone(), &url).send().await;
        let response = response.unwrap_or_else(|e| panic!("{method} {path}: {e:?}"));
        let status = response.status().as_u16();
        let body = response.text().await.expect("an admin answer's body");
        (status, serde_json::from_str(&body).unwrap_or(Value::Null))
    }

    /// `GET /api/status`, which must answer 200.
    pub async fn status(&self) -> Value {
        let (status, body) = self.admin("GET", "/api/status").await;
        assert_eq!(status, 200, "{body}");
        body
    }

    /// Backend `id`'s entry in `GET /api/status`.
    pub async fn backend_status(&self, id: u64) -> Value {
        let status = self.status().await;
        let backends = status["backends"].as_array().expect("backends");
        let found = backends.iter().find(|b| b["id"] == id);
        found
            .unwrap_or_else(|| panic!("no backend {id} in {status}"))
            .clone()
    }
}
