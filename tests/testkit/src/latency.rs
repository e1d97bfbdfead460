//! A forwarding proxy that adds a fixed delay to every request and counts them.
//!
//! Benchmarks put it in front of moto's DynamoDB (`AWS_ENDPOINT_URL_DYNAMODB`) so that what a
//! run pays for its ledger work is explicit: a stated per-call latency times the calls it
//! makes, counted outside the function. The time moto itself takes is summed apart
//! ([`LatencyProxy::upstream_time`]), so a report can show it rather than pass it off as the
//! run's.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

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
    /// Each wait for the upstream server: when it started and ended.
    upstream_intervals: Mutex<Vec<(Instant, Instant)>>,
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
            upstream_intervals: Mutex::new(Vec::new()),
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

    /// Every wait for the upstream server so far (start, end), in the order they ended: with
    /// the other servers' busy times, what tells the emulator's time the run waited on from
    /// the time it hid behind other requests.
    pub fn upstream_intervals(&self) -> Vec<(Instant, Instant)> {
        self.shared
            .upstream_intervals
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }
}

impl Drop for LatencyProxy {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn forward(State(shared): State<Arc<Shared>>, request: Request) -> Response {
    shared.requests.fetch_add(1, Ordering::SeqCst);
    portal_sim::delay::until(Instant::now() + shared.latency).await;
    let (parts, body) = match crate::forward::read(request, "latency proxy").await {
        Ok(read) => read,
        Err(refused) => return refused,
    };
    let started = Instant::now();
    let answer = crate::forward::send(
        &shared.http,
        &shared.upstream,
        &parts,
        body,
        "latency proxy",
        "upstream",
    )
    .await;
    let ended = Instant::now();
    let spent = u64::try_from((ended - started).as_micros()).unwrap_or(u64::MAX);
    shared.upstream_us.fetch_add(spent, Ordering::SeqCst);
    shared
        .upstream_intervals
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .push((started, ended));
    answer.map_or_else(|failed| failed, crate::forward::respond)
}

/// The time within `window` covered by some interval of `waits` but by none of `hidden`:
/// how long a run waited on the emulator alone, not behind its other requests (each list
/// may overlap itself; intervals are (start, end)).
pub fn exclusive_time(
    waits: &[(Instant, Instant)],
    hidden: &[(Instant, Instant)],
    window: (Instant, Instant),
) -> Duration {
    let clip = |list: &[(Instant, Instant)]| -> Vec<(Instant, Instant)> {
        let mut clipped: Vec<_> = list
            .iter()
            .map(|&(s, e)| (s.max(window.0), e.min(window.1)))
            .filter(|(s, e)| s < e)
            .collect();
        clipped.sort();
        // Merged, so that overlapping intervals count once.
        let mut merged: Vec<(Instant, Instant)> = Vec::with_capacity(clipped.len());
        for (s, e) in clipped {
            match merged.last_mut() {
                Some(last) if s <= last.1 => last.1 = last.1.max(e),
                _ => merged.push((s, e)),
            }
        }
        merged
    };
    let hidden = clip(hidden);
    clip(waits)
        .into_iter()
        .map(|(s, e)| {
            let covered: Duration = hidden
                .iter()
                .map(|&(hs, he)| e.min(he).saturating_duration_since(s.max(hs)))
                .sum();
            (e - s).saturating_sub(covered)
        })
        .sum()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exclusive_time_counts_overlaps_once_and_only_what_nothing_else_covered() {
        let t0 = Instant::now();
        let at = |ms: u64| t0 + Duration::from_millis(ms);
        // Waits 0-100 and 50-150 (one span, 0-150) and 300-400; others busy 20-60 and 350-500.
        let waits = [(at(0), at(100)), (at(50), at(150)), (at(300), at(400))];
        let hidden = [(at(20), at(60)), (at(350), at(500))];
        // 0-150 less 20-60 is 110 ms; 300-400 less 350-400 is 50 ms.
        assert_eq!(
            exclusive_time(&waits, &hidden, (at(0), at(1000))),
            Duration::from_millis(160)
        );
        // The window clips both lists: 100-150 alone, 300-350 alone.
        assert_eq!(
            exclusive_time(&waits, &hidden, (at(100), at(350))),
            Duration::from_millis(100)
        );
        assert_eq!(
            exclusive_time(&waits, &[], (at(0), at(1000))),
            Duration::from_millis(250)
        );
        assert_eq!(exclusive_time(&[], &hidden, (at(0), at(1000))), Duration::ZERO);
    }
}
