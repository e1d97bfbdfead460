//! A Runtime API proxy that gives invocations a real deadline.
//!
//! The emulator (`cargo lambda watch --only-lambda-apis`) answers every
//! `GET .../runtime/invocation/next` with `lambda-runtime-deadline-ms: 600000`, a placeholder
//! rather than an instant, so the functions fall back to their template timeout and nothing
//! about deadlines can be tested through it. Real Lambda sends the epoch milliseconds at which
//! the invocation is stopped. This proxy sits between one function process and the emulator,
//! forwards the Runtime API both ways unchanged, and rewrites that header on `/next` to
//! `now + timeout`, as Lambda does. It also notes which invocations it handed to its process,
//! so a test can tell which process (which "container") served which request.
//!
//! It binds `127.0.0.1:0`, lives as long as its handle, and forwards each request on its own
//! upstream request: when the function process dies, its connection closes, the proxy drops
//! the forwarded request, and the emulator sees the poller go away, as it would without the
//! proxy.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use axum::Router;
use axum::extract::{Request, State};
use axum::http::{HeaderValue, Method, StatusCode};
use axum::response::Response;

/// The header carrying an invocation's deadline (epoch milliseconds).
pub const DEADLINE_HEADER: &str = "lambda-runtime-deadline-ms";
/// The header carrying an invocation's request id.
pub const REQUEST_ID_HEADER: &str = "lambda-runtime-aws-request-id";

/// One invocation the proxy handed to its process.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Delivered {
    /// The Lambda request id of the invocation.
    pub request_id: String,
    /// The deadline sent with it (epoch milliseconds).
    pub deadline_ms: u64,
}

struct Shared {
    upstream: String,
    timeout: Duration,
    http: reqwest::Client,
    delivered: Mutex<Vec<Delivered>>,
    /// `/next` requests forwarded and not answered yet: the process is idle, waiting for work.
    polling: AtomicUsize,
}

/// Counts a `/next` poll in flight for as long as it lives (answered or dropped).
struct Poll<'a>(&'a AtomicUsize);

impl<'a> Poll<'a> {
    fn start(count: &'a AtomicUsize) -> Poll<'a> {
        count.fetch_add(1, Ordering::SeqCst);
        Poll(count)
    }
}

impl Drop for Poll<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

/// A running proxy. Stops listening when dropped.
pub struct RuntimeProxy {
    port: u16,
    shared: Arc<Shared>,
    task: tokio::task::JoinHandle<()>,
}

impl std::fmt::Debug for RuntimeProxy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RuntimeProxy")
            .field("port", &self.port)
            .field("upstream", &self.shared.upstream)
            .field("timeout", &self.shared.timeout)
            .finish()
    }
}

impl RuntimeProxy {
    /// Starts a proxy to `upstream` (the emulator's base URL, `http://127.0.0.1:<port>`) that
    /// gives every invocation `timeout` from the moment it is handed out. Must be called
    /// inside a Tokio runtime.
    pub fn start(upstream: &str, timeout: Duration) -> RuntimeProxy {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("the proxy binds a loopback port");
        listener.set_nonblocking(true).expect("a non-blocking listener");
        let port = listener.local_addr().expect("a bound address").port();
        let http = reqwest::Client::builder().no_proxy().build().expect("an HTTP client");
        let shared = Arc::new(Shared {
            upstream: upstream.trim_end_matches('/').to_owned(),
            timeout,
            http,
            delivered: Mutex::new(Vec::new()),
            polling: AtomicUsize::new(0),
        });
        let app = Router::new().fallback(forward).with_state(shared.clone());
        let task = tokio::spawn(async move {
            let listener = tokio::net::TcpListener::from_std(listener).expect("a Tokio listener");
            let _ = axum::serve(listener, app).await;
        });
        RuntimeProxy { port, shared, task }
    }

    /// `AWS_LAMBDA_RUNTIME_API` for `function` through this proxy.
    pub fn runtime_api(&self, function: &str) -> String {
        format!("http://127.0.0.1:{}/.rt/{function}", self.port)
    }

    /// Whether the process is waiting for an invocation (a `/next` poll is in flight): idle,
    /// so the next invocation can go to it.
    pub fn polling(&self) -> bool {
        self.shared.polling.load(Ordering::SeqCst) > 0
    }

    /// The invocations handed out so far, in order.
    pub fn delivered(&self) -> Vec<Delivered> {
        self.shared.delivered.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }
}

impl Drop for RuntimeProxy {
    fn drop(&mut self) {
        self.task.abort();
    }
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

async fn forward(State(shared): State<Arc<Shared>>, request: Request) -> Response {
    let (parts, body) = match crate::forward::read(request, "proxy").await {
        Ok(read) => read,
        Err(refused) => return refused,
    };
    let next = parts.method == Method::GET && parts.uri.path().ends_with("/runtime/invocation/next");
    let _poll = next.then(|| Poll::start(&shared.polling));
    let mut answer =
        match crate::forward::send(&shared.http, &shared.upstream, &parts, body, "proxy", "the emulator").await {
            Ok(answer) => answer,
            Err(failed) => return failed,
        };
    if next && answer.status == StatusCode::OK {
        let deadline_ms = now_ms() + shared.timeout.as_millis() as u64;
        answer.headers.insert(DEADLINE_HEADER, HeaderValue::from(deadline_ms));
        let request_id = answer
            .headers
            .get(REQUEST_ID_HEADER)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_owned();
        shared
            .delivered
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(Delivered {
                request_id,
                deadline_ms,
            });
    }
    crate::forward::respond(answer)
}
