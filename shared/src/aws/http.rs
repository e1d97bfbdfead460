//! The AWS SDK's HTTP client, on reqwest.
//!
//! The ArcGIS client, S3 and the alert channels already send their requests with reqwest.
//! The SDK's own client (`aws-smithy-http-client`) is a second stack on the same hyper: its
//! connector, pool and TLS set-up, and a second copy of hyper's and h2's generic code
//! instantiated for its connection type, in every function. Handing the SDK the stack the
//! function already has made scan-credits 313 KB smaller on x86_64 (docs/aws.md, "Release
//! build").
//!
//! What the SDK expects of a client, and how it is kept:
//! - **Timeouts**: the connect and read timeouts the SDK asks for become the reqwest client's
//!   (one client per distinct pair, built once, as the SDK's own client caches its
//!   connectors); operation and attempt timeouts stay with the SDK.
//! - **Retries**: the SDK retries only what the connector classifies as transient. An error
//!   with an I/O error or a closed or incomplete connection in its chain is `io`, a timeout is
//!   `timeout`, an invalid request is `user`: the same classes as the SDK's client.
//! - **The body as built**: the request body goes to reqwest as the SDK hands it over (its
//!   stalled-stream protection watches it being sent), not copied: a 2.5 MB alert-state
//!   transaction is not held twice.
//! - **Connection poisoning**: after an answer it classifies as transient (500, 502, 503,
//!   504) the SDK asks the connector to close the connection before it retries. The
//!   connector reports one whose closing does nothing (reqwest keeps a connection that
//!   answered in its pool, and drops one that failed); without it the SDK logs an ERROR at
//!   each such retry.
//! - **No redirect followed** and no default headers: the SDK signs every header it sends.

use std::collections::HashMap;
use std::error::Error as StdError;
use std::sync::RwLock;
use std::time::Duration;

use aws_smithy_runtime_api::client::connection::{CaptureSmithyConnection, ConnectionMetadata};
use aws_smithy_runtime_api::client::http::{
    HttpClient, HttpConnector, HttpConnectorFuture, HttpConnectorSettings, SharedHttpClient, SharedHttpConnector,
};
use aws_smithy_runtime_api::client::orchestrator::{HttpRequest, HttpResponse};
use aws_smithy_runtime_api::client::result::ConnectorError;
use aws_smithy_runtime_api::client::runtime_components::RuntimeComponents;
use aws_smithy_types::body::SdkBody;
use aws_smithy_types::retry::ErrorKind;

/// The SDK's connect timeout when none is configured (the SDK's own default).
const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_millis(3_100);

/// An HTTP client for the AWS SDK that sends its requests with reqwest, on rustls with the
/// ring provider (see the module documentation).
pub fn http_client() -> SharedHttpClient {
    SharedHttpClient::new(ReqwestClient::default())
}

/// The timeouts a connector is built for: the SDK asks for a connector per request attempt.
type Timeouts = (Option<Duration>, Option<Duration>);

#[derive(Debug, Default)]
struct ReqwestClient {
    connectors: RwLock<HashMap<Timeouts, SharedHttpConnector>>,
}

impl HttpClient for ReqwestClient {
    fn http_connector(&self, settings: &HttpConnectorSettings, _: &RuntimeComponents) -> SharedHttpConnector {
        let key = (settings.connect_timeout(), settings.read_timeout());
        // A poisoned lock only means another thread panicked while inserting: the map is
        // still a valid cache.
        if let Some(connector) = self.connectors.read().unwrap_or_else(|e| e.into_inner()).get(&key) {
            return connector.clone();
        }
        let mut connectors = self.connectors.write().unwrap_or_else(|e| e.into_inner());
        connectors
            .entry(key)
            .or_insert_with(|| SharedHttpConnector::new(Connector::new(key)))
            .clone()
    }
}

#[derive(Debug)]
struct Connector {
    /// `Err`: TLS could not start; every request then fails with why.
    http: Result<reqwest::Client, String>,
}

impl Connector {
    fn new((connect, read): Timeouts) -> Connector {
        crate::arcgis::client::install_ring_provider();
        let mut builder = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .connect_timeout(connect.unwrap_or(DEFAULT_CONNECT_TIMEOUT));
        if let Some(read) = read {
            builder = builder.read_timeout(read);
        }
        let http = builder
            .build()
            .map_err(|e| format!("the HTTP client for AWS could not start ({e})"));
        Connector { http }
    }
}

impl HttpConnector for Connector {
    fn call(&self, request: HttpRequest) -> HttpConnectorFuture {
        let http = match &self.http {
            Ok(http) => http.clone(),
            Err(why) => return HttpConnectorFuture::ready(Err(ConnectorError::other(why.clone().into(), None))),
        };
        let request = match request.try_into_http1x() {
            Ok(request) => request,
            Err(e) => return HttpConnectorFuture::ready(Err(ConnectorError::user(e.into()))),
        };
        if let Some(capture) = request.extensions().get::<CaptureSmithyConnection>() {
            capture.set_connection_retriever(|| {
                Some(ConnectionMetadata::builder().proxied(false).poison_fn(|| {}).build())
            });
        }
        // The SDK's body as it is (see the module documentation).
        let request = match reqwest::Request::try_from(request.map(reqwest::Body::wrap)) {
            Ok(request) => request,
            Err(e) => return HttpConnectorFuture::ready(Err(ConnectorError::user(e.into()))),
        };
        HttpConnectorFuture::new(async move {
            let response = http.execute(request).await.map_err(classify)?;
            let response = http::Response::from(response).map(SdkBody::from_body_1_x);
            HttpResponse::try_from(response).map_err(|e| ConnectorError::other(e.into(), None))
        })
    }
}

/// The SDK's class of a failed exchange, which decides whether it retries.
fn classify(error: reqwest::Error) -> ConnectorError {
    if error.is_timeout() {
        return ConnectorError::timeout(error.into());
    }
    if error.is_builder() {
        return ConnectorError::user(error.into());
    }
    if error.is_connect() || chain(&error).any(|e| e.is::<std::io::Error>()) {
        return ConnectorError::io(error.into());
    }
    let hyper = chain(&error).find_map(|e| e.downcast_ref::<hyper::Error>());
    let closed = hyper.is_some_and(|h| h.is_closed() || h.is_canceled());
    // A connection closed mid-answer: AWS endpoints do this under load; worth a retry.
    let incomplete = hyper.is_some_and(|h| h.is_incomplete_message());
    if closed {
        ConnectorError::io(error.into())
    } else if incomplete {
        ConnectorError::other(error.into(), Some(ErrorKind::TransientError))
    } else {
        ConnectorError::other(error.into(), None)
    }
}

/// `error` and its sources.
fn chain<'a>(error: &'a (dyn StdError + 'static)) -> impl Iterator<Item = &'a (dyn StdError + 'static)> {
    std::iter::successors(Some(error), |&e: &&'a (dyn StdError + 'static)| e.source())
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::TcpListener;

    fn components() -> RuntimeComponents {
        aws_smithy_runtime_api::client::runtime_components::RuntimeComponentsBuilder::for_tests()
            .build()
            .expect("test components")
    }

    fn connector(settings: HttpConnectorSettings) -> SharedHttpConnector {
        http_client().http_connector(&settings, &components())
    }

    fn request(url: &str, body: &'static [u8]) -> HttpRequest {
        let request = http::Request::builder()
            .method("POST")
            .uri(url)
            .header("x-amz-target", "DynamoDB_20120810.GetItem")
            .body(SdkBody::from(body))
            .unwrap();
        HttpRequest::try_from(request).unwrap()
    }

    #[tokio::test]
    async fn a_request_goes_out_with_its_headers_and_body_and_the_answer_comes_back() {
        let (url, requests) = server(vec![Reply::After(Duration::ZERO, 400, r#"{"__type":"Bad"}"#)]).await;
        let response = connector(HttpConnectorSettings::builder().build())
            .call(request(&url, b"{}"))
            .await
            .unwrap();
        assert_eq!(response.status().as_u16(), 400);
        assert_eq!(
            response.headers().get("content-type"),
            Some("application/x-amz-json-1.0")
        );
        let body = aws_smithy_types::byte_stream::ByteStream::new(response.into_body())
            .collect()
            .await
            .unwrap()
            .into_bytes();
        assert_eq!(&body[..], b"{\"__type\":\"Bad\"}");
        let sent = requests.lock().unwrap()[0].clone();
        assert!(sent.starts_with("post / http/1.1\r\n"), "{sent}");
        assert!(sent.contains("x-amz-target: dynamodb_20120810.getitem\r\n"), "{sent}");
        assert!(sent.contains("content-length: 2\r\n"), "{sent}");
        assert!(sent.ends_with("\r\n\r\n{}"), "{sent}");
    }

    #[tokio::test]
    async fn a_read_timeout_is_a_timeout_the_sdk_retries() {
        // An answer long after the client gave up.
        let (url, _) = server(vec![Reply::After(Duration::from_secs(30), 200, "{}")]).await;
        let settings = HttpConnectorSettings::builder()
            .read_timeout(Duration::from_millis(200))
            .build();
        let error = connector(settings).call(request(&url, b"{}")).await.unwrap_err();
        assert!(error.is_timeout(), "{error:?}");
    }

    #[tokio::test]
    async fn a_refused_connection_is_an_io_error_the_sdk_retries() {
        // Bound then dropped: nothing listens on the port any more.
        let port = TcpListener::bind("127.0.0.1:0")
            .await
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let error = connector(HttpConnectorSettings::builder().build())
            .call(request(&format!("http://127.0.0.1:{port}/"), b"{}"))
            .await
            .unwrap_err();
        assert!(error.is_io(), "{error:?}");
    }

    #[tokio::test]
    async fn a_connection_closed_before_the_answer_is_retried() {
        // The server reads the request, writes nothing and drops the connection.
        let (url, _) = server(vec![Reply::Close]).await;
        let error = connector(HttpConnectorSettings::builder().build())
            .call(request(&url, b"{}"))
            .await
            .unwrap_err();
        assert!(
            error.is_io() || error.as_other() == Some(ErrorKind::TransientError),
            "{error:?}"
        );
    }

    /// What the test server does with a connection once it has read a request.
    #[derive(Clone, Copy)]
    enum Reply {
        /// Closes the connection without answering.
        Close,
        /// Waits, then answers this status with this JSON body.
        After(Duration, u16, &'static str),
    }

    /// Serves connections in turn, the nth with `script[n]` (past the script: 200 `{}` at
    /// once). Returns the URL and every request read so far, as lowercase text.
    async fn server(script: Vec<Reply>) -> (String, std::sync::Arc<std::sync::Mutex<Vec<String>>>) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let requests = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let seen = requests.clone();
        tokio::spawn(async move {
            for n in 0.. {
                let (mut socket, _) = listener.accept().await.unwrap();
                let seen = seen.clone();
                let reply = script
                    .get(n)
                    .copied()
                    .unwrap_or(Reply::After(Duration::ZERO, 200, "{}"));
                tokio::spawn(async move {
                    let mut read = Vec::new();
                    let mut buf = [0u8; 4096];
                    // Headers, then the body its content-length announces.
                    let text = loop {
                        let n = socket.read(&mut buf).await.unwrap_or(0);
                        if n == 0 {
                            return;
                        }
                        read.extend_from_slice(&buf[..n]);
                        let text = String::from_utf8_lossy(&read).to_ascii_lowercase();
                        if let Some(end) = text.find("\r\n\r\n") {
                            let length: usize = text
                                .lines()
                                .find_map(|l| l.strip_prefix("content-length:"))
                                .and_then(|v| v.trim().parse().ok())
                                .unwrap_or(0);
                            if read.len() >= end + 4 + length {
                                break text;
                            }
                        }
                    };
                    seen.lock().unwrap().push(text);
                    let Reply::After(delay, status, body) = reply else {
                        return;
                    };
                    // A slow server, on purpose: what the tests are about.
                    tokio::time::sleep(delay).await;
                    let answer = format!(
                        "HTTP/1.1 {status} X\r\ncontent-type: application/x-amz-json-1.0\r\ncontent-length: {}\r\n\r\n{body}",
                        body.len()
                    );
                    let _ = socket.write_all(answer.as_bytes()).await;
                });
            }
        });
        (url, requests)
    }

    /// A DynamoDB client on this HTTP client, for `url`, with the SDK's stalled-stream check
    /// given a grace period of 300 ms.
    fn dynamodb(url: String) -> aws_sdk_dynamodb::Client {
        use aws_sdk_dynamodb::config::{
            BehaviorVersion, Credentials, Region, SharedCredentialsProvider, StalledStreamProtectionConfig,
        };
        let config = aws_sdk_dynamodb::Config::builder()
            .behavior_version(BehaviorVersion::latest())
            .region(Region::new("eu-west-3"))
            .credentials_provider(SharedCredentialsProvider::new(Credentials::for_tests()))
            .endpoint_url(url)
            .http_client(http_client())
            // The SDK's check, with a grace period shorter than the server's delay.
            .stalled_stream_protection(
                StalledStreamProtectionConfig::enabled()
                    .grace_period(Duration::from_millis(300))
                    .build(),
            )
            .build();
        aws_sdk_dynamodb::Client::from_conf(config)
    }

    async fn get_item(client: &aws_sdk_dynamodb::Client) -> Result<(), String> {
        client
            .get_item()
            .table_name("ledger")
            .key("pk", aws_sdk_dynamodb::types::AttributeValue::S("ORG".into()))
            .send()
            .await
            .map(|_| ())
            .map_err(|e| format!("{}", aws_sdk_dynamodb::error::DisplayErrorContext(e)))
    }

    #[tokio::test]
    async fn an_answer_slower_than_the_sdks_stall_grace_period_is_awaited_and_sent_once() {
        // The SDK watches the request body's upload: it is streamed as the SDK hands it over,
        // fully sent long before the answer.
        let (url, requests) = server(vec![Reply::After(Duration::from_millis(1_200), 200, "{}")]).await;
        let got = get_item(&dynamodb(url)).await;
        assert!(got.is_ok(), "{got:?}");
        assert_eq!(requests.lock().unwrap().len(), 1, "sent once, not retried");
    }

    #[tokio::test(flavor = "current_thread")]
    async fn transient_failures_are_retried_without_an_error_logged() {
        // A connection closed without an answer, then a 503: both retried.
        let (logs, _guard) = capture_logs();
        let (url, requests) = server(vec![Reply::Close, Reply::After(Duration::ZERO, 503, "{}")]).await;
        let got = get_item(&dynamodb(url)).await;
        assert!(got.is_ok(), "{got:?}");
        assert_eq!(requests.lock().unwrap().len(), 3, "retried twice");
        let logged = String::from_utf8(logs.lock().unwrap().clone()).unwrap();
        // After a transient answer the SDK asks for the connection to be closed; one is
        // always reported, or the SDK logs an error at each retry.
        assert!(!logged.contains("ERROR"), "{logged}");
    }

    /// Everything logged on this thread, at every level, while the guard lives.
    fn capture_logs() -> (
        std::sync::Arc<std::sync::Mutex<Vec<u8>>>,
        tracing::subscriber::DefaultGuard,
    ) {
        let logs = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let writer = logs.clone();
        let subscriber = tracing_subscriber::fmt()
            .with_max_level(tracing::Level::TRACE)
            .with_ansi(false)
            .with_writer(move || Writer(writer.clone()))
            .finish();
        (logs, tracing::subscriber::set_default(subscriber))
    }

    struct Writer(std::sync::Arc<std::sync::Mutex<Vec<u8>>>);

    impl std::io::Write for Writer {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn one_connector_per_distinct_timeouts() {
        let client = ReqwestClient::default();
        let settings = HttpConnectorSettings::builder().build();
        let short = HttpConnectorSettings::builder()
            .connect_timeout(Duration::from_secs(1))
            .build();
        let components = components();
        client.http_connector(&settings, &components);
        client.http_connector(&settings, &components);
        client.http_connector(&short, &components);
        assert_eq!(client.connectors.read().unwrap().len(), 2);
    }
}
