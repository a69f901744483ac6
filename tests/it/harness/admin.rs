//! Talking to lb's admin plane in tests: start lb with `--admin 127.0.0.1:0` ([`super::LbBuilder::admin`]), find
//! the port it took from its startup line ([`TestLb::admin`]), and send requests with or without a token.

use std::net::SocketAddr;

use serde_json::Value;

use super::{client, LbBuilder, TestLb, PATIENCE};

impl LbBuilder {
    /// Turns the admin plane on at 127.0.0.1 with any free port.
    pub fn admin(self) -> Self {
        self.arg("--admin").arg("127.0.0.1:0")
    }
}

impl TestLb {
    /// Starts `lb` on a config file called `name` with exactly `contents`, and these extra arguments.
    pub async fn from_file_with(name: &str, contents: &str, args: &[&str]) -> TestLb {
        let (dir, path) = super::config_file(name, contents);
        let args: Vec<String> = args.iter().map(|a| a.to_string()).collect();
        TestLb::spawn(dir, std::path::Path::new(&path), &args).await
    }

    /// The config file lb was started with.
    pub fn config_path(&self) -> &str {
        self.config.to_str().expect("a UTF-8 temp path")
    }

    /// The admin plane of this lb (started with an admin address): waits for the line that names its address.
    pub async fn admin(&self) -> Admin {
        let line = self.wait_log("admin plane on http://", PATIENCE).await;
        let rest = &line[line.find("http://").unwrap() + "http://".len()..];
        let addr = rest
            .split('/')
            .next()
            .unwrap()
            .parse()
            .expect("the admin address");
        Admin {
            addr,
            token: None,
            client: client(),
        }
    }
}

/// lb's admin plane, as a client sees it.
pub struct Admin {
    pub addr: SocketAddr,
    /// Sent as `Authorization: Bearer <token>` when set.
    pub token: Option<String>,
    client: reqwest::Client,
}

impl Admin {
    pub fn with_token(mut self, token: &str) -> Self {
        self.token = Some(token.to_owned());
        self
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    async fn send(&self, request: reqwest::RequestBuilder) -> (u16, String) {
        let request = match &self.token {
            Some(token) => request.bearer_auth(token),
            None => request,
        };
        let response = request
            .send()
            .await
            .expect("an answer from the admin plane");
        let status = response.status().as_u16();
        (
            status,
            response.text().await.expect("the admin answer's body"),
        )
    }

    /// GETs `path`: the status and the body.
    pub async fn get(&self, path: &str) -> (u16, String) {
        self.send(self.client.get(self.url(path))).await
    }

    /// POSTs to `path` (no body): the status and the body.
    pub async fn post(&self, path: &str) -> (u16, String) {
        self.send(self.client.post(self.url(path))).await
    }

    /// GETs `path`, expecting 200 and JSON.
    pub async fn json(&self, path: &str) -> Value {
        let (status, body) = self.get(path).await;
        assert_eq!(status, 200, "GET {path}: {body}");
        serde_json::from_str(&body).unwrap_or_else(|e| panic!("GET {path}: not JSON ({e}): {body}"))
    }

    /// Sends `method path` (no body): the status and the body as JSON (`Value::Null` if it is not).
    pub async fn call(&self, method: &str, path: &str) -> (u16, Value) {
        let method = reqwest::Method::from_bytes(method.as_bytes()).expect("a method");
        let (status, body) = self.send(self.client.request(method, self.url(path))).await;
        (status, serde_json::from_str(&body).unwrap_or(Value::Null))
    }

    /// `GET /api/status`.
    pub async fn status(&self) -> Value {
        self.json("/api/status").await
    }

    /// Backend `id`'s entry in `GET /api/status`.
    pub async fn backend(&self, id: u64) -> Value {
        let status = self.status().await;
        let backends = status["backends"].as_array().expect("backends");
        let found = backends.iter().find(|b| b["id"] == id);
        found
            .unwrap_or_else(|| panic!("no backend {id} in {status}"))
            .clone()
    }
}
