//! Benchmark (not a test) of what production runs: cold start of each function, dry scans of
//! a 10,000-member org with 50 ms simulated latency per ArcGIS request, real scans (first,
//! daily, a day where 5 % change), monthly-report on both sources, `allocate` applying 100 and
//! 2,000 members, and the release binary sizes.
//!
//! `cargo bench -p tests --bench functions` (options: `-- --members N --latency-ms L --runs R
//! --scan-runs S --allocate-runs K --allocate-members M --allocate-size A
//! --ledger-latency-ms D --only LIST`: R cold starts per function, S dry scans, K allocate
//! requests of A members (100 and 2,000 when not given) on an org of M; `--only` picks
//! sections, comma-separated, from `cold,scan,real,monthly,allocate,queued,sizes`; `queued`
//! sends one 2,000-member request through the 202 path: the API's answer, then the
//! `allocation-jobs` worker applying it from an SQS queue). Real scans,
//! monthly reports and allocations reach DynamoDB through a counting proxy that adds D ms
//! (default 10) to every call and times moto apart; a real scan's wall time is also shown
//! without the moto time the run waited on (not hidden behind an ArcGIS request in flight),
//! so moto's own speed is not what is judged.
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

use chrono::Datelike;
use portal_sim::{Faults, GenParams, generate};
use serde_json::json;
use testkit::lambda::{FUNCTIONS, FunctionProcess, Profile, binaries};

fn arg_text(name: &str) -> Option<String> {
    let args: Vec<String> = std::env::args().collect();
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1))
        .cloned()
}

fn arg(name: &str, default: u64) -> u64 {
    arg_text(name).and_then(|v| v.parse().ok()).unwrap_or(default)
}

/// The sections to run (`--only cold,scan,allocate,sizes`; all by default).
fn sections() -> Vec<String> {
    const ALL: [&str; 7] = ["cold", "scan", "real", "monthly", "allocate", "queued", "sizes"];
    let chosen: Vec<String> = match arg_text("--only") {
        Some(list) => list.split(',').map(|s| s.trim().to_owned()).collect(),
        None => ALL.iter().map(|s| (*s).to_owned()).collect(),
    };
    for s in &chosen {
        assert!(
            ALL.contains(&s.as_str()),
            "--only: unknown section '{s}' (one of {ALL:?})"
        );
    }
    chosen
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

/// What one fresh `allocate` request costs in DynamoDB requests, for `entries` members named
/// of which `changes` are changed (and read back changed), when no earlier request is left to
/// settle.
///
/// The apply path (`shared::apply`) makes, per request, in order:
/// - 1 claim of the key (`REQ#<scope>`/`HEAD`, a conditional put);
/// - 1 org-wide lock (`LOCK`/`ALLOCATIONS`, a conditional put);
/// - 1 read of the requests other invocations left pending (`LOCK`/`PENDING`, a consistent
///   get; each one found would add its own settling);
/// - 1 read of the rolling day's grants (`BUDGET`, one query page), beside the ArcGIS reads;
/// - P journal pages written ahead (`REQ#<scope>`/`PAGE#n`, 100 entries each, in parallel);
/// - 1 grant against the daily budget (`BUDGET`), before anything is sent;
/// - 1 mark of the request as pending (`LOCK`/`PENDING`, a set `ADD`);
/// - 1 head update to `applying`;
/// - B audit intents, one per batch of 100, each written before its batch is sent;
/// - C audit change entries, one conditional put per member read back changed, one after the
///   other (conditional puts cannot go in a `BatchWriteItem`);
/// - 1 grant corrected to what was applied;
/// - P journal pages rewritten with each entry's outcome;
/// - 1 head update to `done`, with the reply a replay answers;
/// - 1 clear of the pending mark (a set `DELETE`);
/// - 1 lock release (a conditional delete).
///
/// That is `11 + 2P + B + C`: 114 for 100 members (P = 1, B = 1, C = 100), nearly all of it
/// the per-member audit entries, which are also the only part that grows with the request.
fn expected_ledger_requests(entries: usize, changes: usize) -> usize {
    let pages = entries.div_ceil(100);
    let batches = changes.div_ceil(100);
    11 + 2 * pages + batches + changes
}

/// Removes ANSI colour sequences (`ESC [ … m`) from log text.
fn strip_ansi(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut chars = text.chars();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            for c in chars.by_ref() {
                if c.is_ascii_alphabetic() {
                    break;
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}

/// `ledger_requests=N` of every `allocation request answered` line the function logged, in
/// order.
fn ledger_requests(output: &str) -> Vec<u64> {
    strip_ansi(output)
        .lines()
        .filter(|l| l.contains("allocation request answered"))
        .filter_map(|l| {
            let rest = &l[l.find("ledger_requests=")? + "ledger_requests=".len()..];
            rest.split(|c: char| !c.is_ascii_digit()).next()?.parse().ok()
        })
        .collect()
}

/// The members an `add` can go to (limited with a positive allocation, enabled, not
/// viewers), sorted by username.
fn allocatable(world: &support::World) -> Vec<String> {
    let mut chosen: Vec<String> = world
        .sim
        .members()
        .into_iter()
        .filter(|m| m.allocation.is_some_and(|a| a > 0.0) && !m.disabled && m.user_type != "viewerUT")
        .map(|m| m.username)
        .collect();
    chosen.sort();
    chosen
}

/// `runs` real allocate requests of `size` members each (`add: 1`, a fresh Idempotency-Key
/// each) against an org of `members`, every ArcGIS request delayed by `latency` ms, through
/// one warm function process (the first request also pays the secret read and the sign-in).
async fn allocations(
    dir: &std::path::Path,
    members: usize,
    size: usize,
    latency: u64,
    ledger_latency: u64,
    runs: usize,
) {
    println!(
        "\n## allocate: {size} members per request, org of {members}, {latency} ms per ArcGIS request, \
         {ledger_latency} ms per DynamoDB call (release allocate, real requests with an Idempotency-Key)"
    );
    assert!(
        (1..=2_000).contains(&size),
        "--allocate-size is 1..=2000 (MAX_MEMBERS_PER_REQUEST's range)"
    );
    let world = support::World::new(generate(&GenParams::new(members, 11, chrono::Utc::now().date_naive()))).await;
    let mut chosen = allocatable(&world);
    assert!(
        chosen.len() >= size,
        "the org has {} limited members, fewer than {size}",
        chosen.len()
    );
    chosen.truncate(size);
    // Guardrails wide enough for any number of runs (`add: 1` per member per run); the
    // defaults apply otherwise.
    let cap = size.to_string();
    let ledger =
        testkit::latency::LatencyProxy::start(&testkit::moto::moto().endpoint, Duration::from_millis(ledger_latency));
    let env = world.env(&[
        ("AWS_ENDPOINT_URL_DYNAMODB", &ledger.url()),
        ("MAX_MEMBERS_PER_REQUEST", cap.as_str()),
        ("MAX_CREDITS_PER_PLAN", "1000000"),
        ("MAX_CREDITS_PER_DAY", "1000000"),
    ]);
    let function = FunctionProcess::spawn_from(dir, &world.emulator, "allocate", &env);
    world.sim.set_faults(Faults {
        latency_ms: latency,
        ..Default::default()
    });
    let expected = expected_ledger_requests(size, size);
    println!("floor = ArcGIS requests × {latency} ms (as if sent one after the other); target wall ≤ 1.5 × floor");
    println!(
        "DynamoDB requests expected {expected} = 11 + 2 × journal pages + intents + audit entries (claim, lock, \
         pending read, budget read, grant, pending mark, 2 head updates, grant correction, pending clear, \
         release; see expected_ledger_requests)"
    );
    let mut walls = Vec::new();
    for run in 0..runs {
        let body = json!({
            "allocations": chosen.iter().map(|u| json!({"username": u, "add": 1})).collect::<Vec<_>>(),
            "reason": format!("bench run {run}"),
        });
        let key = format!("bench-{}-{run}", std::process::id());
        let event = support::allocation_event(&body.to_string(), Some(&key), &format!("bench-request-{run}"));
        // The log is in completion order (concurrent pages overtake each other): take the
        // highest sequence number, not the last record.
        let seq_before = world.sim.requests().iter().map(|r| r.seq).max().unwrap_or(0);
        let started = Instant::now();
        let out = world.emulator.invoke("allocate", &event).await;
        let wall = started.elapsed();
        let moto_alone = testkit::latency::exclusive_time(
            &ledger.upstream_intervals(),
            &world.sim.busy_intervals(),
            (started, started + wall),
        );
        let (status, reply) = support::http_reply(&out).unwrap_or((0, out.payload.clone()));
        assert!(
            status == 200 && reply["summary"]["assigned"] == size,
            "allocate run {run} failed: HTTP {status} {reply}\n{}",
            function.output()
        );
        let mut by_endpoint = std::collections::BTreeMap::<String, u64>::new();
        for r in world.sim.requests().into_iter().filter(|r| r.seq > seq_before) {
            *by_endpoint.entry(r.endpoint).or_default() += 1;
        }
        let arcgis: u64 = by_endpoint.values().sum();
        let floor = Duration::from_millis(arcgis * latency);
        let ledger_calls = match ledger_requests(&function.output()).get(run) {
            Some(&n) if n as usize == expected => n.to_string(),
            Some(n) => format!("{n} (expected {expected}: the journal changed, update expected_ledger_requests)"),
            None => "? (no `allocation request answered` line with ledger_requests)".to_owned(),
        };
        let ms = |d: Duration| d.as_secs_f64() * 1e3;
        let ratio = |wall: Duration| {
            if floor.is_zero() {
                "—".to_owned()
            } else {
                format!("{:.2}", wall.as_secs_f64() / floor.as_secs_f64())
            }
        };
        println!(
            "run {run}{}: wall {:>5.0} ms (without moto's time {:>5.0} ms)   ArcGIS requests {arcgis:>3} \
             {by_endpoint:?}   floor {:>5.0} ms   ratio {} ({})   DynamoDB requests {ledger_calls}   peak RSS {:.0} MB",
            if run == 0 { " (first: secret + sign-in)" } else { "" },
            ms(wall),
            ms(wall - moto_alone),
            ms(floor),
            ratio(wall),
            ratio(wall - moto_alone),
            function.peak_rss_bytes().unwrap_or(0) as f64 / 1e6,
        );
        walls.push(wall);
    }
    world.sim.set_faults(Faults::default());
    if walls.len() > 1 {
        let mut warm = walls[1..].to_vec();
        warm.sort();
        println!(
            "warm requests: median {:.0} ms, min {:.0}, max {:.0}",
            percentile(&warm, 0.5).as_secs_f64() * 1e3,
            warm[0].as_secs_f64() * 1e3,
            warm[warm.len() - 1].as_secs_f64() * 1e3
        );
    }
}

/// One request of `size` members through the 202 path, as production runs it: `allocate`
/// answers 202 and queues the job, the `allocation-jobs` worker applies it from the SQS queue
/// (the bench plays Lambda's event source mapping), `GET /allocations/{job_id}` reads it back.
async fn queued_allocation(dir: &std::path::Path, members: usize, size: usize, latency: u64, ledger_latency: u64) {
    println!(
        "\n## allocate through the queue: {size} members, org of {members}, {latency} ms per ArcGIS request, \
         {ledger_latency} ms per DynamoDB call (release allocate + allocation-jobs)"
    );
    let world = support::World::new(generate(&GenParams::new(members, 11, chrono::Utc::now().date_naive()))).await;
    let queue = support::Queue::create().await;
    let mut chosen = allocatable(&world);
    chosen.truncate(size);
    assert_eq!(chosen.len(), size, "the org has too few limited members");
    let cap = size.to_string();
    let proxy =
        testkit::latency::LatencyProxy::start(&testkit::moto::moto().endpoint, Duration::from_millis(ledger_latency));
    let common = [
        ("AWS_ENDPOINT_URL_DYNAMODB", proxy.url()),
        ("MAX_MEMBERS_PER_REQUEST", cap.clone()),
        ("MAX_CREDITS_PER_PLAN", "1000000".to_owned()),
        ("MAX_CREDITS_PER_DAY", "1000000".to_owned()),
        ("ALLOCATION_QUEUE_URL", queue.url.clone()),
    ];
    let common: Vec<(&str, &str)> = common.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let api = FunctionProcess::spawn_from(dir, &world.emulator, "allocate", &world.env(&common));
    let worker = FunctionProcess::spawn_from(dir, &world.emulator, "allocation-jobs", &world.env(&common));
    world.sim.set_faults(Faults {
        latency_ms: latency,
        ..Default::default()
    });
    let body = json!({
        "allocations": chosen.iter().map(|u| json!({"username": u, "add": 1})).collect::<Vec<_>>(),
        "reason": "bench queued",
    });
    let event = support::allocation_event(
        &body.to_string(),
        Some(&format!("bench-queued-{}", std::process::id())),
        "bench-queued",
    );
    let ms = |d: Duration| d.as_secs_f64() * 1e3;
    let (ledger_before, arcgis_before) = (proxy.requests(), world.sim.requests().len());
    let started = Instant::now();
    let out = world.emulator.invoke("allocate", &event).await;
    let accept = started.elapsed();
    let (status, reply) = support::http_reply(&out).unwrap_or((0, out.payload.clone()));
    assert_eq!(status, 202, "not accepted: {reply}\n{}", api.output());
    let job_id = reply["job_id"].as_str().unwrap_or_default().to_owned();
    println!(
        "202 answer: wall {:>5.0} ms   ArcGIS requests {}   DynamoDB requests {}   peak RSS {:.0} MB",
        ms(accept),
        world.sim.requests().len() - arcgis_before,
        proxy.requests() - ledger_before,
        api.peak_rss_bytes().unwrap_or(0) as f64 / 1e6
    );
    let messages = queue.receive().await;
    let (ledger_before, arcgis_before) = (proxy.requests(), world.sim.requests().len());
    let started = Instant::now();
    let out = world.emulator.invoke("allocation-jobs", &queue.event(&messages)).await;
    let work = started.elapsed();
    let failed = queue.settle(&messages, &out).await;
    assert!(
        failed.is_empty(),
        "the worker left the job: {}\n{}",
        out.payload,
        worker.output()
    );
    let arcgis = (world.sim.requests().len() - arcgis_before) as u64;
    println!(
        "worker: wall {:>5.0} ms   floor {:>5.0} ms (ArcGIS requests one after the other)   ArcGIS requests {arcgis}   \
         DynamoDB requests {}   peak RSS {:.0} MB",
        ms(work),
        (arcgis * latency) as f64,
        proxy.requests() - ledger_before,
        worker.peak_rss_bytes().unwrap_or(0) as f64 / 1e6
    );
    let out = world
        .emulator
        .invoke("allocate", &support::job_status_event(&job_id, "bench-queued-get"))
        .await;
    let (_, status) = support::http_reply(&out).unwrap_or((0, out.payload.clone()));
    assert_eq!(status["status"], "done", "{status}");
    assert_eq!(
        status["result"]["summary"]["assigned"], size,
        "{}",
        status["result"]["summary"]
    );
    world.sim.set_faults(Faults::default());
}

#[tokio::main]
async fn main() {
    let members = arg("--members", 10_000) as usize;
    let latency = arg("--latency-ms", 50);
    let runs = arg("--runs", 15) as usize;
    let scan_runs = arg("--scan-runs", 5) as usize;
    let allocate_runs = arg("--allocate-runs", 3) as usize;
    let allocate_members = arg("--allocate-members", 2_000) as usize;
    let allocate_size = arg("--allocate-size", 100) as usize;
    let ledger_latency = arg("--ledger-latency-ms", 10);
    let sections = sections();
    let run = |name: &str| sections.iter().any(|s| s == name);
    let dir = binaries(Profile::Release);

    if run("cold") {
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
    }

    if run("scan") {
        scan_section(dir, members, latency, scan_runs).await;
    }

    if run("real") {
        real_scans(dir, members, latency, ledger_latency).await;
    }

    if run("monthly") {
        monthly_reports(dir, members, latency, ledger_latency).await;
    }

    if run("allocate") && allocate_runs > 0 {
        // Both sizes production sees (a team's top-up, the largest request allowed), unless
        // one is asked for.
        let sizes = match arg_text("--allocate-size") {
            Some(_) => vec![allocate_size],
            None => vec![100, 2_000],
        };
        for size in sizes {
            allocations(
                dir,
                allocate_members.max(size * 2),
                size,
                latency,
                ledger_latency,
                allocate_runs,
            )
            .await;
        }
    }

    if run("queued") {
        queued_allocation(dir, allocate_members.max(4_000), 2_000, latency, ledger_latency).await;
    }

    if run("sizes") {
        /// `bytes` in MB, and whether it is within `limit`.
        fn against(bytes: u64, limit: u64) -> String {
            let verdict = if bytes <= limit { "ok" } else { "OVER" };
            format!("{:.2} MB ({bytes} B, {verdict})", bytes as f64 / 1e6)
        }
        /// The size of a zip holding `bootstrap` deflated at level 9, as `zip -9` makes it
        /// (python3 is on every machine of this project, zip is not).
        fn zipped_len(bootstrap: &std::path::Path) -> Option<u64> {
            const SCRIPT: &str = "import io, sys, zipfile; b = io.BytesIO(); \
                z = zipfile.ZipFile(b, 'w', zipfile.ZIP_DEFLATED, compresslevel=9); \
                z.write(sys.argv[1], 'bootstrap'); z.close(); print(len(b.getvalue()))";
            let out = Command::new("python3")
                .args(["-c", SCRIPT])
                .arg(bootstrap)
                .output()
                .ok()?;
            String::from_utf8(out.stdout).ok()?.trim().parse().ok()
        }
        // What Lambda limits and loads is the arm64 bootstrap and its zip; the x86_64 binary
        // is the one the cold starts above ran.
        println!("\n## Release binary sizes (targets: arm64 bootstrap ≤ 6 MB, its zip ≤ 2.5 MB)");
        for f in FUNCTIONS {
            let x86 = std::fs::metadata(dir.join(f)).map(|m| m.len()).unwrap_or(0);
            let arm = testkit::lambda::workspace_root()
                .join("target/lambda")
                .join(f)
                .join("bootstrap");
            let arm = match std::fs::metadata(&arm) {
                Ok(m) => format!(
                    "{}   zip {}",
                    against(m.len(), 6_000_000),
                    zipped_len(&arm).map_or_else(|| "? (python3 failed)".into(), |z| against(z, 2_500_000))
                ),
                Err(_) => format!("not built (cargo lambda build --release --arm64 --bin {f})"),
            };
            println!("{f:<16} x86_64 {:.2} MB   arm64 bootstrap {arm}", x86 as f64 / 1e6);
        }
    }
}

/// What production runs for the monthly report, on each source: the last complete month
/// reported (S3 objects written, the email sent, the run recorded), a fresh release
/// `monthly-report` process per source, ArcGIS at `latency` ms per request and the ledger at
/// `ledger_latency` ms per call through the counting proxy.
///
/// The floor is the ArcGIS round trips no run can overlap, × `latency`: sign-in, the org's
/// properties, the usage reads (both at once) and the email for the usage source; for the
/// report item, sign-in, the org's properties, creating the item, its status, the download,
/// the delete and the email, plus the simulator's processing time.
async fn monthly_reports(dir: &std::path::Path, members: usize, latency: u64, ledger_latency: u64) {
    let world = support::World::new(generate(&GenParams::new(members, 7, chrono::Utc::now().date_naive()))).await;
    let ledger =
        testkit::latency::LatencyProxy::start(&testkit::moto::moto().endpoint, Duration::from_millis(ledger_latency));
    let bucket = support::Bucket::create().await;
    world.sim.set_faults(Faults {
        latency_ms: latency,
        ..Default::default()
    });
    let mut processing_ms = 0;
    world.sim.update_behaviour(|b| processing_ms = b.report_processing_ms);
    println!(
        "\n## monthly-report: {members} members, {latency} ms per ArcGIS request, {ledger_latency} ms per DynamoDB \
         call (release monthly-report)\n\n\
         | source | month | wall | floor | ArcGIS requests | DynamoDB requests | S3 objects | peak RSS | function CPU |\n\
         |---|---|---|---|---|---|---|---|---|"
    );
    let today = chrono::Utc::now().date_naive();
    let last_month = today.with_day(1).unwrap() - chrono::Days::new(1);
    let month_before = last_month.with_day(1).unwrap() - chrono::Days::new(1);
    for (source, month, round_trips, extra_ms) in [
        ("usage", last_month, 4, 0),
        ("report-item", month_before, 7, processing_ms),
    ] {
        let env = world.env(&[
            ("AWS_ENDPOINT_URL_DYNAMODB", &ledger.url()),
            ("REPORT_BUCKET", &bucket.name),
            ("REPORT_SOURCE", source),
        ]);
        let emulator = testkit::lambda::RuntimeEmulator::start().await;
        let function = FunctionProcess::spawn_from(dir, &emulator, "monthly-report", &env);
        let (arcgis_before, dynamo_before) = (world.sim.total_requests(), ledger.requests());
        let key = month.format("%Y-%m").to_string();
        let started = Instant::now();
        let out = emulator.invoke("monthly-report", &json!({ "month": key })).await;
        let wall = started.elapsed();
        let rss = function.peak_rss_bytes().unwrap_or(0);
        let cpu = function.cpu_time().unwrap_or_default();
        assert!(
            out.function_error.is_none(),
            "monthly-report ({source}) failed: {}\n{}",
            out.payload,
            function.output()
        );
        println!(
            "| {source} | {key} | {:.0} ms | {} ms | {} | {} | {} | {:.0} MB | {:.0} ms |",
            wall.as_secs_f64() * 1e3,
            round_trips * latency + extra_ms,
            world.sim.total_requests() - arcgis_before,
            ledger.requests() - dynamo_before,
            out.payload["objects"].as_array().map_or(0, Vec::len),
            rss as f64 / 1e6,
            cpu.as_secs_f64() * 1e3
        );
    }
    println!("\n{CPU_NOTE}");
    world.sim.set_faults(Faults::default());
}

/// How to read the "function CPU" column: the process's user + system time, cold start
/// included, which this machine's load does not change.
const CPU_NOTE: &str = "function CPU: the function process's CPU time (all threads, cold start included). Lambda gives \
     a function one vCPU per 1,769 MB of memory, so at 256 MB (0.145 vCPU) a run needs at least CPU / 0.145 of \
     wall time, at 512 MB CPU / 0.289.";

/// What production runs: real scans (alerts recorded, emails sent), each a fresh function
/// process, every ArcGIS request delayed `latency` ms and every DynamoDB call `ledger_latency`
/// ms (through a counting proxy, so moto's own speed is not what is measured): the first scan
/// (every flagged member newly reported), a daily scan (no change), and a day where 5 % of the
/// members cross into warning.
async fn real_scans(dir: &std::path::Path, members: usize, latency: u64, ledger_latency: u64) {
    let world = support::World::new(generate(&GenParams::new(members, 7, chrono::Utc::now().date_naive()))).await;
    let ledger =
        testkit::latency::LatencyProxy::start(&testkit::moto::moto().endpoint, Duration::from_millis(ledger_latency));
    // The complete member lists go to S3 as in production (straight to moto: not timed as
    // ledger calls).
    let bucket = support::Bucket::create().await;
    let env = world.env(&[
        ("AWS_ENDPOINT_URL_DYNAMODB", &ledger.url()),
        ("REPORT_BUCKET", &bucket.name),
    ]);
    world.sim.set_faults(Faults {
        latency_ms: latency,
        ..Default::default()
    });
    let pages = members.div_ceil(100);
    let concurrency = 8;
    let floor_ms = (pages as f64 / concurrency as f64).ceil() * latency as f64;
    println!(
        "\n## Real scans: {members} members, {latency} ms per ArcGIS request, {ledger_latency} ms per DynamoDB call \
         (release scan-credits)"
    );
    println!(
        "paging floor {floor_ms:.0} ms (ceil({pages} pages / {concurrency}) × {latency} ms)\n\n\
         | run | wall | without moto's time | floor | ArcGIS reads | scan | moto's own time (run waited) | ArcGIS requests | DynamoDB requests | flagged (new) | result | peak RSS | function CPU |\n\
         |---|---|---|---|---|---|---|---|---|---|---|---|---|"
    );
    let mut endpoints = Vec::new();
    // How long ArcGIS took to answer each request, as the simulator timed it: the floor
    // assumes exactly `latency`.
    let mut answer_times = Vec::new();
    for run in [
        "first real scan",
        "daily real scan, no change",
        "a day where 5 % of members change",
        "the next day, throttled",
    ] {
        if run.ends_with("throttled") {
            // ArcGIS throttles: every 25th listing request answers 429 with Retry-After 1 s.
            // The adaptive limit backs off and the listing still completes.
            world.sim.set_faults(Faults {
                latency_ms: latency,
                http_error: Some(portal_sim::HttpErrorFault {
                    status: 429,
                    retry_after_secs: Some(1),
                    when: portal_sim::Trigger {
                        endpoint: Some("portals/self/users".into()),
                        every_nth: Some(25),
                        ..Default::default()
                    },
                }),
                ..Default::default()
            });
        }
        if run.starts_with("a day") {
            // 5 % of the members, healthy until now, cross into warning.
            let healthy: Vec<_> = world
                .sim
                .members()
                .into_iter()
                .filter(|m| {
                    m.allocation.is_some_and(|a| a > 0.0)
                        && !m.disabled
                        && m.user_type != "viewerUT"
                        && m.available_credits >= 0.6 * m.assigned_credits
                })
                .take(members / 20)
                .collect();
            for m in &healthy {
                world
                    .sim
                    .consume(portal_sim::UsageRecord {
                        day: chrono::Utc::now()
                            .date_naive()
                            .and_hms_opt(0, 0, 0)
                            .unwrap()
                            .and_utc()
                            .timestamp_millis(),
                        username: Some(m.username.clone()),
                        stype: "geocode".into(),
                        etype: "geocodecnt".into(),
                        credits: m.available_credits - 0.3 * m.assigned_credits,
                        num: 1,
                    })
                    .expect("usage recorded");
            }
        }
        let emulator = testkit::lambda::RuntimeEmulator::start().await;
        let function = FunctionProcess::spawn_from(dir, &emulator, "scan-credits", &env);
        let (arcgis_before, dynamo_before, moto_before) =
            (world.sim.total_requests(), ledger.requests(), ledger.upstream_time());
        let counts_before = world.sim.counts();
        let throttled = || {
            world
                .sim
                .requests()
                .iter()
                .filter(|r| r.outcome == "fault:http_429")
                .count()
        };
        let throttled_before = throttled();
        let started = Instant::now();
        let out = emulator.invoke("scan-credits", &json!({})).await;
        let wall = started.elapsed();
        // moto's time the run waited on: not hidden behind an ArcGIS request in flight.
        let moto_alone = testkit::latency::exclusive_time(
            &ledger.upstream_intervals(),
            &world.sim.busy_intervals(),
            (started, started + wall),
        );
        let rss = function.peak_rss_bytes().unwrap_or(0);
        let cpu = function.cpu_time().unwrap_or_default();
        let summary = &out.payload;
        assert!(
            out.function_error.is_none(),
            "{run} failed: {summary}\n{}",
            function.output()
        );
        let flagged =
            summary["counts"]["critical"].as_u64().unwrap_or(0) + summary["counts"]["warning"].as_u64().unwrap_or(0);
        println!(
            "| {run} | {:.0} ms | {:.0} ms | {floor_ms:.0} ms | {} ms | {} ms | {:.0} ms ({:.0} ms) | {} | {} | {flagged} ({}) | {:.1} KB | {:.0} MB | {:.0} ms |",
            wall.as_secs_f64() * 1e3,
            (wall - moto_alone).as_secs_f64() * 1e3,
            summary["arcgis_read_ms"],
            summary["duration_ms"],
            (ledger.upstream_time() - moto_before).as_secs_f64() * 1e3,
            moto_alone.as_secs_f64() * 1e3,
            world.sim.total_requests() - arcgis_before,
            ledger.requests() - dynamo_before,
            summary["newly_reported"],
            summary.to_string().len() as f64 / 1e3,
            rss as f64 / 1e6,
            cpu.as_secs_f64() * 1e3
        );
        let mut by_endpoint = world.sim.counts();
        for (endpoint, n) in &mut by_endpoint {
            *n -= counts_before.get(endpoint).copied().unwrap_or(0);
        }
        by_endpoint.retain(|_, n| *n > 0);
        let answered_429 = throttled() - throttled_before;
        endpoints.push(format!("{run}: {by_endpoint:?}, of which answered 429: {answered_429}"));
        answer_times.extend(
            world
                .sim
                .busy_intervals()
                .iter()
                .filter(|(arrived, _)| *arrived >= started)
                .map(|(arrived, answered)| *answered - *arrived),
        );
    }
    answer_times.sort();
    let at = |q: f64| answer_times[((answer_times.len() - 1) as f64 * q) as usize].as_secs_f64() * 1e3;
    println!(
        "\nArcGIS answered in {:.2} ms (median), {:.2} ms (90th percentile) over {} requests; the floor counts {latency} ms.",
        at(0.5),
        at(0.9),
        answer_times.len()
    );
    println!("\n{CPU_NOTE}");
    println!("\nArcGIS requests by endpoint:");
    for line in endpoints {
        println!("- {line}");
    }
}

/// The 10,000-member scan, first ever and daily.
async fn scan_section(dir: &std::path::Path, members: usize, latency: u64, scan_runs: usize) {
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
}
