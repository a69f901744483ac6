//! A real browser for the dashboard's tests: Debian's `chromium`, headless, driven over the DevTools protocol.
//!
//! [`Browser::launch`] starts it with a throwaway profile and `--remote-debugging-port=0`, and reads the
//! `DevTools listening on ws://127.0.0.1:PORT/...` line it writes to stderr. [`Browser::open`] asks its HTTP
//! endpoint for a new tab (`PUT /json/new`) and connects to that tab's WebSocket; a [`Page`] then sends commands
//! (`Page.navigate`, `Runtime.evaluate`, …) and waits for each answer by id, ignoring the events in between, except
//! the two it answers when asked to log in ([`Page::log_in_with`]).
//!
//! Chromium runs in a process group of its own, killed whole when the [`Browser`] is dropped (its renderer and
//! helper processes with it), so a failed test leaves nothing running. A test that needs it and does not find it
//! fails, saying how to install it, unless `LB_SKIP_BROWSER=1` is set.

use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures_util::{SinkExt, StreamExt};
use serde_json::{json, Value};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::net::TcpStream;
use tokio::process::{Child, Command};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::WebSocketStream;

use super::PATIENCE;

/// The names Debian (and others) give the browser, tried in order.
const NAMES: [&str; 2] = ["chromium", "chromium-browser"];

/// A headless Chromium; killed (with every process it started) when dropped.
pub struct Browser {
    child: Child,
    pid: u32,
    /// `127.0.0.1:PORT` of its DevTools endpoint.
    devtools: String,
    stderr: Arc<Mutex<Vec<String>>>,
    _profile: tempfile::TempDir,
}

impl Browser {
    /// Starts Chromium. `None` (the test should return) only when it is not installed and `LB_SKIP_BROWSER=1`;
    /// when it is not installed otherwise, panics saying how to install it.
    pub async fn launch() -> Option<Browser> {
        let profile = tempfile::tempdir().expect("a temp dir for the browser profile");
        let mut spawned = None;
        for name in NAMES {
            let mut command = Command::new(name);
            command
                .args([
                    "--headless",
                    "--no-sandbox",
                    "--disable-gpu",
                    "--disable-background-networking",
                    "--disable-extensions",
                    "--no-first-run",
                    "--no-default-browser-check",
                    "--remote-debugging-address=127.0.0.1",
                    "--remote-debugging-port=0",
                ])
                .arg(format!("--user-data-dir={}", profile.path().display()))
                .arg("about:blank")
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::piped())
                .process_group(0)
                .kill_on_drop(true);
            match command.spawn() {
                Ok(child) => {
                    spawned = Some(child);
                    break;
                }
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
                Err(e) => panic!("cannot start {name}: {e}"),
            }
        }
        let Some(mut child) = spawned else {
            if std::env::var("LB_SKIP_BROWSER").as_deref() == Ok("1") {
                eprintln!("skipped: no chromium installed and LB_SKIP_BROWSER=1");
                return None;
            }
            panic!(
                "this test drives the dashboard in a headless browser and found none (tried {NAMES:?}): \
                 install Chromium (Debian/Ubuntu: apt-get install chromium), or set LB_SKIP_BROWSER=1 to skip it"
            );
        };
        let pid = child.id().expect("chromium's pid");
        let stderr = Arc::new(Mutex::new(Vec::new()));
        let mut lines = BufReader::new(child.stderr.take().unwrap()).lines();
        let sink = stderr.clone();
        // Read to the end (a full pipe would stall it), keeping the lines for a failure's message.
        tokio::spawn(async move {
            while let Ok(Some(line)) = lines.next_line().await {
                sink.lock().unwrap().push(line);
            }
        });
        let mut browser = Browser {
            child,
            pid,
            devtools: String::new(),
            stderr,
            _profile: profile,
        };
        let deadline = Instant::now() + PATIENCE;
        browser.devtools = loop {
            let found = browser.stderr.lock().unwrap().iter().find_map(|line| {
                let url = line.split("DevTools listening on ws://").nth(1)?;
                Some(url.split('/').next()?.to_owned())
            });
            if let Some(devtools) = found {
                break devtools;
            }
            let exited = browser.child.try_wait().expect("poll chromium");
            assert!(
                exited.is_none() && Instant::now() < deadline,
                "chromium did not say where DevTools listen (exit: {exited:?}):\n{}",
                browser.stderr()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        };
        Some(browser)
    }

    /// A new tab, blank.
    pub async fn open(&self) -> Page {
        let url = format!("http://{}/json/new?about:blank", self.devtools);
        let target = super::client()
            .put(&url)
            .send()
            .await
            .and_then(|r| r.error_for_status())
            .unwrap_or_else(|e| panic!("PUT {url}: {e}\n{}", self.stderr()))
            .text()
            .await
            .expect("a target");
        let target: Value = serde_json::from_str(&target).expect("a target as JSON");
        let ws_url = target["webSocketDebuggerUrl"]
            .as_str()
            .unwrap_or_else(|| panic!("no webSocketDebuggerUrl in {target}"));
        let stream = TcpStream::connect(&self.devtools)
            .await
            .expect("connect to DevTools");
        let connected =
            tokio::time::timeout(PATIENCE, tokio_tungstenite::client_async(ws_url, stream));
        let (ws, _) = connected
            .await
            .expect("a DevTools handshake within the patience")
            .unwrap_or_else(|e| panic!("DevTools WebSocket {ws_url}: {e}"));
        Page {
            ws,
            next_id: 0,
            credentials: None,
        }
    }

    fn stderr(&self) -> String {
        self.stderr.lock().unwrap().join("\n")
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        // The whole group: the browser, its zygote, renderers and utility processes.
        let _ = std::process::Command::new("kill")
            .args(["-KILL", "--", &format!("-{}", self.pid)])
            .stderr(Stdio::null())
            .status();
        let _ = self.child.start_kill();
        let deadline = Instant::now() + Duration::from_secs(5);
        while matches!(self.child.try_wait(), Ok(None)) && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(10));
        }
    }
}

/// One tab, driven over its DevTools WebSocket.
pub struct Page {
    ws: WebSocketStream<TcpStream>,
    next_id: u64,
    /// Answered when the page is asked to log in (`Fetch.authRequired`), as a person would in the browser's dialog.
    credentials: Option<(String, String)>,
}

impl Page {
    /// Sends a command and answers its `result`; panics on an error or when no answer comes within the patience.
    pub async fn call(&mut self, method: &str, params: Value) -> Value {
        let id = self.send(method, params).await;
        let deadline = tokio::time::Instant::now() + PATIENCE;
        loop {
            let message = tokio::time::timeout_at(deadline, self.ws.next())
                .await
                .unwrap_or_else(|_| panic!("no answer to {method} within {PATIENCE:?}"));
            let text = match message {
                Some(Ok(Message::Text(text))) => text,
                Some(Ok(_)) => continue,
                Some(Err(e)) => panic!("DevTools WebSocket failed during {method}: {e}"),
                None => panic!("DevTools WebSocket closed during {method}"),
            };
            let message: Value = serde_json::from_str(&text).expect("DevTools speaks JSON");
            if message["id"] == id {
                if let Some(error) = message.get("error") {
                    panic!("{method} failed: {error}");
                }
                return message["result"].clone();
            }
            self.on_event(&message).await;
        }
    }

    async fn send(&mut self, method: &str, params: Value) -> u64 {
        self.next_id += 1;
        let id = self.next_id;
        let command = json!({"id": id, "method": method, "params": params}).to_string();
        self.ws
            .send(Message::text(command))
            .await
            .unwrap_or_else(|e| panic!("send {method}: {e}"));
        id
    }

    /// Answers the events the page waits on: requests paused to be let through, and a login to give.
    async fn on_event(&mut self, event: &Value) {
        let request_id = event["params"]["requestId"].clone();
        match event["method"].as_str() {
            Some("Fetch.requestPaused") => {
                self.send("Fetch.continueRequest", json!({"requestId": request_id}))
                    .await;
            }
            Some("Fetch.authRequired") => {
                let (username, password) = self.credentials.clone().unwrap_or_default();
                let response = json!({
                    "response": "ProvideCredentials", "username": username, "password": password
                });
                let params = json!({"requestId": request_id, "authChallengeResponse": response});
                self.send("Fetch.continueWithAuth", params).await;
            }
            _ => {}
        }
    }

    /// From now on, a login asked by a server (a 401 with `WWW-Authenticate`) is answered with these.
    pub async fn log_in_with(&mut self, username: &str, password: &str) {
        self.credentials = Some((username.to_owned(), password.to_owned()));
        self.call("Fetch.enable", json!({"handleAuthRequests": true}))
            .await;
    }

    pub async fn navigate(&mut self, url: &str) {
        let result = self.call("Page.navigate", json!({"url": url})).await;
        if let Some(error) = result.get("errorText") {
            panic!("navigating to {url}: {error}");
        }
    }

    /// The value of a JavaScript expression (awaited if a promise); panics if it throws.
    pub async fn eval(&mut self, expression: &str) -> Value {
        let params = json!({"expression": expression, "returnByValue": true, "awaitPromise": true});
        let result = self.call("Runtime.evaluate", params).await;
        if let Some(thrown) = result.get("exceptionDetails") {
            panic!("{expression} threw: {thrown}");
        }
        result["result"]["value"].clone()
    }

    /// Evaluates `expression` every 50 ms until `accept` takes its value, and answers that value; panics naming
    /// `what` and the last value after `timeout`.
    pub async fn wait_for(
        &mut self,
        what: &str,
        timeout: Duration,
        expression: &str,
        accept: impl Fn(&Value) -> bool,
    ) -> Value {
        let deadline = Instant::now() + timeout;
        loop {
            let value = self.eval(expression).await;
            if accept(&value) {
                return value;
            }
            assert!(
                Instant::now() < deadline,
                "timed out after {timeout:?} waiting until {what}; last: {value}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}
