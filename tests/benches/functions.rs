//! Benchmark (not a test): cold start of each function, one scan of a 10,000-member org with
//! 50 ms simulated latency per ArcGIS request, and the release binary sizes.
//!
//! `cargo bench -p e2e --bench functions` (options: `-- --members N --latency-ms L --runs R
//! --scan-runs S`: R cold starts per function, S scans per scenario).
//!
//! Cold start is measured the way Lambda experiences it: from process start to the first
//! `GET /2018-06-01/runtime/invocation/next` on a Runtime API listener (configuration parsed,
//! Secrets Manager and DynamoDB clients built — none of which may touch the network).

#[path = "../e2e/support.rs"]
#[allow(dead_code, unused_imports)]
mod support;

use std::io::Read;
use std::net::TcpListener;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use portal_sim::{Faults, GenParams, generate};
use serde_json::json;
use testkit::lambda::{FUNCTIONS, FunctionProcess, Profile, binaries};

fn arg(name: &str, default: u64) -> u64 {
    let args: Vec<String> = std::env::args().collect();
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// Time from spawn to the first Runtime API poll.
fn cold_start(bin: &std::path::Path, name: &str) -> Duration {
    let listener = TcpListener::bind("127.0.0.1:0").expect("loopback listener");
    let port = listener.local_addr().expect("addr").port();
    let started = Instant::now();
    let mut child = Command::new(bin)
        .env_clear()
        .envs(testkit::env::aws_local("http://127.0.0.1:9"))
        .env("AWS_LAMBDA_RUNTIME_API", format!("127.0.0.1:{port}"))
        .env("AWS_LAMBDA_FUNCTION_NAME", name)
        .env("AWS_LAMBDA_FUNCTION_VERSION", "1")
        .env("AWS_LAMBDA_FUNCTION_MEMORY_SIZE", "256")
        .env("ARCGIS_SECRET_ID", "bench/arcgis")
        .env("LEDGER_TABLE", "bench-ledger")
        .env("REPORT_BUCKET", "bench-reports")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("function starts");
    let (mut conn, _) = listener.accept().expect("the function polls the Runtime API");
    let mut buf = [0u8; 64];
    let n = conn.read(&mut buf).expect("request line");
    let elapsed = started.elapsed();
    assert!(String::from_utf8_lossy(&buf[..n]).starts_with("GET /2018-06-01/runtime/invocation/next"));
    let _ = child.kill();
    let _ = child.wait();
    elapsed
}

/// One invocation of scan-credits in a fresh process under a fresh emulator: the function
/// pays its cold start and the sign-in, as the daily schedule does.
async fn cold_scan(
    world: &support::World,
    dir: &std::path::Path,
    input: &serde_json::Value,
) -> (Duration, testkit::lambda::Invocation, String) {
    let emulator = testkit::lambda::RuntimeEmulator::start().await;
    let function = FunctionProcess::spawn_from(dir, &emulator, "scan-credits", &world.env(&[]));
    let started = Instant::now();
    let out = emulator.invoke("scan-credits", input).await;
    (started.elapsed(), out, function.output())
}

/// `runs` dry-run scans at `latency`, each cold; prints the median and the spread.
async fn scans(world: &support::World, dir: &std::path::Path, label: &str, latency: u64, runs: usize) {
    world.sim.set_faults(Faults {
        latency_ms: latency,
        ..Default::default()
    });
    let mut walls = Vec::new();
    let mut cores = Vec::new();
    let mut reads = Vec::new();
    let mut requests = Vec::new();
    let mut pages = Vec::new();
    for _ in 0..runs {
        let before = world.sim.request_count("portals/self/users");
        let (wall, out, log) = cold_scan(world, dir, &json!({"dry_run": true})).await;
        let summary = &out.payload;
        assert!(out.function_error.is_none(), "scan failed: {summary}\n{log}");
        walls.push(wall);
        cores.push(Duration::from_millis(summary["duration_ms"].as_u64().unwrap_or(0)));
        reads.push(Duration::from_millis(summary["arcgis_read_ms"].as_u64().unwrap_or(0)));
        requests.push(summary["arcgis_requests"].as_u64().unwrap_or(0));
        pages.push(world.sim.request_count("portals/self/users") - before);
    }
    println!("\n### {label}, {runs} runs");
    for (what, mut times) in [
        ("ArcGIS reads (sign-in, org, listing, usage; arcgis_read_ms)", reads),
        ("the scan (+ ledger reads; the function's duration_ms)", cores),
        ("invoke wall time (+ secret read, emulator)", walls),
    ] {
        times.sort();
        let ms = |d: Duration| d.as_secs_f64() * 1e3;
        println!(
            "{what:<62} median {:>5.0} ms   min {:>5.0}   max {:>5.0}",
            ms(percentile(&times, 0.5)),
            ms(times[0]),
            ms(times[times.len() - 1])
        );
    }
    println!("ArcGIS requests per scan {requests:?}; listing pages per scan {pages:?}");
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    sorted[((sorted.len() - 1) as f64 * p).round() as usize]
}

#[tokio::main]
async fn main() {
    let members = arg("--members", 10_000) as usize;
    let latency = arg("--latency-ms", 50);
    let runs = arg("--runs", 15) as usize;
    let scan_runs = arg("--scan-runs", 5) as usize;
    let dir = binaries(Profile::Release);

    println!("## Cold start (release, x86_64; process start → first Runtime API poll; {runs} runs)");
    for f in FUNCTIONS {
        let mut times: Vec<Duration> = (0..runs).map(|_| cold_start(&dir.join(f), f)).collect();
        times.sort();
        println!(
            "{f:<16} median {:>6.1} ms   p90 {:>6.1} ms   max {:>6.1} ms   (target ≤ 30 ms)",
            percentile(&times, 0.5).as_secs_f64() * 1e3,
            percentile(&times, 0.9).as_secs_f64() * 1e3,
            times[times.len() - 1].as_secs_f64() * 1e3
        );
    }

    println!("\n## One scan: {members} members, {latency} ms per ArcGIS request (release scan-credits, dry run)");
    let world = support::World::new(generate(&GenParams::new(members, 7, chrono::Utc::now().date_naive()))).await;
    let pages = members.div_ceil(100);
    let concurrency = 8;
    let floor_ms = (pages as f64 / concurrency as f64).ceil() * latency as f64;
    println!(
        "paging floor {floor_ms:.0} ms (ceil({pages} pages / {concurrency}) × {latency} ms); target ≤ 1.3 × = {:.0} ms",
        floor_ms * 1.3
    );
    println!("each run is a fresh function process (a daily run never finds a warm container: it signs in)");

    scans(
        &world,
        dir,
        "first scan ever (no member count recorded)",
        latency,
        scan_runs,
    )
    .await;
    // Yesterday's real run (no latency, it is not measured): alerts sent and recorded, and
    // the member count kept for today's listing.
    world.sim.set_faults(Faults::default());
    let day_one = cold_scan(&world, dir, &json!({})).await;
    assert!(
        day_one.1.function_error.is_none(),
        "the setup run failed: {}",
        day_one.1.payload
    );
    scans(
        &world,
        dir,
        "daily scan (the previous run's member count recorded)",
        latency,
        scan_runs,
    )
    .await;

    println!("\n## Release binary sizes");
    for f in FUNCTIONS {
        let x86 = std::fs::metadata(dir.join(f)).map(|m| m.len()).unwrap_or(0);
        let arm = testkit::lambda::workspace_root()
            .join("target/lambda")
            .join(f)
            .join("bootstrap");
        let arm = std::fs::metadata(&arm)
            .map(|m| format!("{:.1} MB", m.len() as f64 / 1e6))
            .unwrap_or_else(|_| "not built (cargo lambda build --release --arm64)".into());
        println!(
            "{f:<16} x86_64 (cargo --release, unstripped) {:.1} MB   arm64 bootstrap {arm}",
            x86 as f64 / 1e6
        );
    }
}
