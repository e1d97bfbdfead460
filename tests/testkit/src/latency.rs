//! A forwarding proxy that adds a fixed delay to every request and counts them.
//!
//! Benchmarks put it in front of moto's DynamoDB (`AWS_ENDPOINT_URL_DYNAMODB`) so that what a
//! run pays for its ledger work is explicit: a stated per-call latency times the calls it
//! makes, counted outside the function. The time moto itself takes is summed apart
//! ([`LatencyProxy::upstream_time`]), so a report can show it rather than pass it off as the
//! run's.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use axum::Router;
use axum::extract::{Request, State};
use axum::response::Response;

struct Shared {
    upstream: String,
    latency: Duration,
    http: reqwest::Client,
    requests: AtomicU64,
    /// Microseconds spent waiting for the upstream server (moto's own time, not the delay).
    upstream_us: AtomicU64,
}

/// A running latency proxy. Stops listening when dropped.
pub struct LatencyProxy {
    port: u16,
    shared: Arc<Shared>,
    task: tokio::task::JoinHandle<()>,
}

impl LatencyProxy {
    /// Starts a proxy to `upstream` (`http://127.0.0.1:<port>`) that waits `latency` before
    /// forwarding each request. Must be called inside a Tokio runtime.
    pub fn start(upstream: &str, latency: Duration) -> LatencyProxy {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("the proxy binds a loopback port");
        listener.set_nonblocking(true).expect("a non-blocking listener");
        let port = listener.local_addr().expect("a bound address").port();
        let shared = Arc::new(Shared {
            upstream: upstream.trim_end_matches('/').to_owned(),
            latency,
            http: reqwest::Client::builder().no_proxy().build().expect("an HTTP client"),
            requests: AtomicU64::new(0),
            upstream_us: AtomicU64::new(0),
        });
        let app = Router::new().fallback(forward).with_state(shared.clone());
        let task = tokio::spawn(async move {
            let listener = tokio::net::TcpListener::from_std(listener).expect("a Tokio listener");
            let _ = axum::serve(listener, app).await;
        });
        LatencyProxy { port, shared, task }
    }

    /// The proxy's base URL.
    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// Requests forwarded so far.
    pub fn requests(&self) -> u64 {
        self.shared.requests.load(Ordering::SeqCst)
    }

    /// Time the upstream server took to answer, summed over every request so far: what a
    /// benchmark subtracts to show the run without the emulator's own cost.
    pub fn upstream_time(&self) -> Duration {
        Duration::from_micros(self.shared.upstream_us.load(Ordering::SeqCst))
    }
}

impl Drop for LatencyProxy {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn forward(State(shared): State<Arc<Shared>>, request: Request) -> Response {
    shared.requests.fetch_add(1, Ordering::SeqCst);
    tokio::time::sleep(shared.latency).await;
    let (parts, body) = match crate::forward::read(request, "latency proxy").await {
        Ok(read) => read,
        Err(refused) => return refused,
    };
    let started = std::time::Instant::now();
    let answer = crate::forward::send(
        &shared.http,
        &shared.upstream,
        &parts,
        body,
        "latency proxy",
        "upstream",
    )
    .await;
    let spent = u64::try_from(started.elapsed().as_micros()).unwrap_or(u64::MAX);
    shared.upstream_us.fetch_add(spent, Ordering::SeqCst);
    answer.map_or_else(|failed| failed, crate::forward::respond)
}
