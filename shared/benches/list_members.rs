//! Benchmark: list every member of a 25,000-member org from portal-sim with 50 ms of simulated
//! latency per request; print requests made, wall time and the client's peak RSS.
//!
//! ```text
//! cargo bench -p shared --bench list_members
//! cargo bench -p shared --bench list_members -- --members 25000 --latency-ms 50 --concurrency 8
//! ```
//!
//! The simulator runs in a child process (this binary re-executed), so `VmHWM` measures the
//! client alone, not the simulated org. Targets: requests ≤ pages + 3 (plus two per partition
//! for an org at the listing cap), wall ≤ 1.3 × (pages / concurrency × latency), peak RSS ≤
//! 40 MB.

// A tool run by hand or by the tests: a failure may end it with a panic.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::io::{BufRead, BufReader, Read, Write};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use portal_sim::{Faults, GenParams, generate, start};
use shared::arcgis::{Client, ClientConfig};

const SIM_ROLE: &str = "CREDIT_STEWARD_BENCH_SIM";

struct Args {
    members: usize,
    latency_ms: u64,
    concurrency: usize,
}

fn args() -> Args {
    // `cargo bench` passes `--bench`; anything else (`cargo test --all-targets`) gets a quick
    // smoke run instead of the full measurement.
    let full = std::env::args().any(|a| a == "--bench");
    let mut a = Args {
        members: if full { 25_000 } else { 500 },
        latency_ms: if full { 50 } else { 5 },
        concurrency: 8,
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let mut value = || it.next().and_then(|v| v.parse::<u64>().ok());
        match flag.as_str() {
            "--members" => a.members = value().map_or(a.members, |v| v as usize),
            "--latency-ms" => a.latency_ms = value().unwrap_or(a.latency_ms),
            "--concurrency" => a.concurrency = value().map_or(a.concurrency, |v| v as usize),
            // cargo bench passes `--bench`; ignore it and anything unknown.
            _ => {}
        }
    }
    a
}

fn runtime(workers: usize) -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(workers)
        .enable_all()
        .build()
        .expect("a tokio runtime")
}

/// Child role: serve the org until stdin closes, then print the simulator's request count.
fn serve_sim(a: &Args) {
    runtime(2).block_on(async {
        let org = generate(&GenParams::new(
            a.members,
            7,
            chrono::NaiveDate::from_ymd_opt(2026, 11, 26).unwrap(),
        ));
        let sim = start(org).await.expect("portal-sim starts");
        sim.set_faults(Faults {
            latency_ms: a.latency_ms,
            ..Faults::default()
        });
        println!("{}", sim.rest_url());
        let _ = std::io::stdout().flush();
        let _ = tokio::task::spawn_blocking(|| std::io::stdin().read_to_end(&mut Vec::new())).await;
        println!("sim_requests={}", sim.total_requests());
    });
}

fn peak_rss_kib() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

/// User + system CPU time of this process, from /proc/self/stat (clock ticks of 10 ms).
fn cpu_time() -> Option<Duration> {
    let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
    // Fields after the parenthesised command name; utime and stime are fields 14 and 15.
    let rest = &stat[stat.rfind(')')? + 2..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks: u64 = fields.get(11)?.parse::<u64>().ok()? + fields.get(12)?.parse::<u64>().ok()?;
    Some(Duration::from_millis(ticks * 10))
}

fn main() {
    let a = args();
    if std::env::var_os(SIM_ROLE).is_some() {
        return serve_sim(&a);
    }
    let mut child = Command::new(std::env::current_exe().expect("own path"))
        .args(std::env::args().skip(1))
        .env(SIM_ROLE, "1")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("simulator child starts");
    let mut out = BufReader::new(child.stdout.take().expect("piped"));
    let mut rest_url = String::new();
    out.read_line(&mut rest_url).expect("the simulator's URL");

    let mut config = ClientConfig::new(rest_url.trim(), testkit::arcgis::admin());
    config.referer = "credit-steward-bench".into();
    config.list_concurrency = a.concurrency;
    config.http_timeout = Duration::from_secs(30);
    let client = Client::new(config).expect("client");

    let (result, wall) = runtime(2).block_on(async {
        let started = Instant::now();
        let result = client.list_members().await;
        (result, started.elapsed())
    });
    let list = result.expect("listing succeeds");

    drop(child.stdin.take());
    let mut tail = String::new();
    let _ = out.read_to_string(&mut tail);
    let _ = child.wait();

    let pages = (a.members as u64).div_ceil(100);
    let ideal = Duration::from_millis(pages * a.latency_ms).div_f64(a.concurrency as f64);
    let rss_mib = peak_rss_kib().map(|k| k as f64 / 1024.0);
    println!(
        "members listed:   {} (reported {}, complete: {})",
        list.members.len(),
        list.reported_total,
        list.is_complete()
    );
    // From the listing cap on, each part costs at most one page more than its share of the
    // floor, and a role split by user type its own first page.
    let parts = list.partitions.len() as u64;
    println!(
        "requests made:    {} (target ≤ {}; simulator saw {}; {parts} partitions)",
        client.requests_made(),
        pages + 3 + 2 * parts,
        tail.trim()
    );
    println!(
        "wall time:        {:.0} ms (target ≤ {:.0} ms = 1.3 × {pages} pages / {} × {} ms)",
        wall.as_secs_f64() * 1e3,
        ideal.as_secs_f64() * 1e3 * 1.3,
        a.concurrency,
        a.latency_ms
    );
    if let Some(cpu) = cpu_time() {
        println!("client CPU time:  {:.0} ms (user + system)", cpu.as_secs_f64() * 1e3);
    }
    match rss_mib {
        Some(m) => println!("peak RSS (VmHWM): {m:.1} MiB (target ≤ 40 MB)"),
        None => println!("peak RSS (VmHWM): unavailable (no /proc/self/status)"),
    }
}
