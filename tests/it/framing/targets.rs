//! The paths an HTTP/1.1 client's bytes can take through `lb`, and how to start `lb` for each and connect to it:
//! every framing test runs on all of them (see [`on_every_path!`]).

use rustls::pki_types::ServerName;
use serde_json::json;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio_rustls::TlsConnector;

use super::*;
use crate::harness::tls::TestCa;
use crate::harness::LbBuilder;

/// How a client's bytes reach the code that reads them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Path {
    /// Plain TCP, read by `lb`'s own HTTP/1.1 engine (the fast path).
    Tcp,
    /// TLS, then the fast path.
    Tls,
    /// Plain TCP with a backend that is not plain HTTP/1.1 in the config (an `h2c` one, down): the connection is
    /// handed to hyper (`h2::serve_h1`). Its first head is still read, and vetted, by our engine first.
    Generic,
    /// As [`Path::Generic`], but each case comes second on its connection, behind a clean request: by then the
    /// connection is hyper's, so hyper alone reads the case.
    GenericSecond,
}

/// The clean request [`Path::GenericSecond`] puts in front of each case, in the same write. The backend answers
/// it and records nothing (it is the health check's target).
const LEADER: &str = "GET /health HTTP/1.1\r\nHost: shop.example\r\n\r\n";

/// The name lb's certificate is for, and the SNI the TLS client sends.
const TLS_NAME: &str = "shop.example";

/// A client connection to `lb`, whatever the transport.
pub(super) trait Io: AsyncRead + AsyncWrite + Unpin + Send {}

impl<T: AsyncRead + AsyncWrite + Unpin + Send> Io for T {}

/// `lb` in front of one backend, reached by one [`Path`].
pub(super) struct Lb {
    pub(super) lb: TestLb,
    pub(super) path: Path,
    tls: Option<(TlsConnector, TestCa)>,
}

impl Lb {
    /// `lb` in front of `backend` (id 1), reached by `path`.
    pub(super) async fn start(path: Path, backend: SocketAddr) -> Lb {
        Lb::start_with(path, backend, |builder| builder).await
    }

    /// As [`Lb::start`], with more settings.
    pub(super) async fn start_with(
        path: Path,
        backend: SocketAddr,
        more: impl FnOnce(LbBuilder) -> LbBuilder,
    ) -> Lb {
        let mut builder = more(TestLb::builder().backend_at(1, backend));
        let mut tls = None;
        match path {
            Path::Tcp => {}
            Path::Tls => {
                let ca = TestCa::new();
                let issued = ca.issue("lb", &[TLS_NAME]);
                builder = builder.set("tls", json!({"cert": issued.cert, "key": issued.key}));
                tls = Some((ca.client(&[b"http/1.1"]), ca));
            }
            Path::Generic | Path::GenericSecond => {
                // Nothing listens there: the backend is down from its first check, before lb serves, so every
                // request goes to `backend`; but the config is no longer all plain HTTP/1.1.
                let gone = TcpListener::bind("127.0.0.1:0").await.unwrap();
                let gone = gone.local_addr().unwrap();
                builder = builder.set(
                    "backends",
                    json!([
                        {"id": 1, "host": "127.0.0.1", "port": backend.port()},
                        {"id": 2, "host": "127.0.0.1", "port": gone.port(), "protocol": "h2c"},
                    ]),
                );
            }
        }
        let lb = builder.start().await;
        if matches!(path, Path::Generic | Path::GenericSecond) {
            lb.wait_log("down at its first check", CLOSE_WITHIN).await;
        }
        Lb { lb, path, tls }
    }

    /// A new connection to `lb` (the TLS handshake done, for [`Path::Tls`]).
    pub(super) async fn connect(&self) -> Box<dyn Io> {
        let tcp = TcpStream::connect(self.lb.addr())
            .await
            .expect("connect to lb");
        match &self.tls {
            None => Box::new(tcp),
            Some((connector, _)) => {
                let name = ServerName::try_from(TLS_NAME).unwrap();
                Box::new(connector.connect(name, tcp).await.expect("TLS handshake"))
            }
        }
    }

    /// A [`RawConn`] to `lb`; for [`Path::GenericSecond`], one that has had a clean request answered already, so
    /// that hyper reads everything sent on it.
    pub(super) async fn raw(&self) -> RawConn {
        let mut conn = RawConn::from_stream(self.connect().await);
        if self.path == Path::GenericSecond {
            conn.send(LEADER.as_bytes()).await;
            let leader = conn.response().await;
            assert_eq!(leader.status, 200, "the leading request: {leader:?}");
        }
        conn
    }

    /// What to write for `request`: itself, behind [`LEADER`] on [`Path::GenericSecond`].
    pub(super) fn bytes(&self, request: &[u8]) -> Vec<u8> {
        match self.path {
            Path::GenericSecond => [LEADER.as_bytes(), request].concat(),
            _ => request.to_vec(),
        }
    }

    /// What came back for a request sent as [`Lb::bytes`] made it: on [`Path::GenericSecond`], without the
    /// leader's 200 (and if the leader got anything else, all of it behind a `HTTP/1.1 000` no expectation allows).
    pub(super) fn own_answers(&self, received: String) -> String {
        if self.path != Path::GenericSecond {
            return received;
        }
        let mut lines = status_lines(&received);
        match (lines.next(), lines.next()) {
            (Some((0, 200)), Some((second, _))) => received[second..].to_owned(),
            (Some((0, 200)), None) => String::new(),
            _ => format!("HTTP/1.1 000 the leader got no 200\r\n\r\n{received}"),
        }
    }

    pub(super) fn logs(&self) -> Vec<String> {
        self.lb.logs()
    }
}

/// Generates, for each test `async fn name(path: Path)` listed, one `#[tokio::test]` per [`Path`]:
/// `tcp::name`, `tls::name`, `generic::name` and `generic_second::name`.
macro_rules! on_every_path {
    ($($test:ident),* $(,)?) => {
        on_every_path!(@path tcp, Tcp, $($test),*);
        on_every_path!(@path tls, Tls, $($test),*);
        on_every_path!(@path generic, Generic, $($test),*);
        on_every_path!(@path generic_second, GenericSecond, $($test),*);
    };
    (@path $module:ident, $path:ident, $($test:ident),*) => {
        mod $module {
            $(
                #[tokio::test]
                async fn $test() {
                    super::$test(super::Path::$path).await
                }
            )*
        }
    };
}
pub(super) use on_every_path;
