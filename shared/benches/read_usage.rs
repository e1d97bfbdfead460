//! Benchmark: decode a per-member usage answer the way a scan reads it (`read_usage` over a
//! byte stream, each series summed into a [`Spent`] as it is decoded); print the answer's
//! size, wall and CPU time, and throughput.
//!
//! ```text
//! cargo bench -p shared --bench read_usage
//! cargo bench -p shared --bench read_usage -- --members 100000 --days 32 --runs 5
//! ```
//!
//! The answer has ArcGIS's shape (`[string ms, string value]` points, values in Java number
//! format, `userOrgId` on every series); 32 days is what a scan's 30-day window asks for, one
//! bucket more on each side. On Lambda this decoding is most of a large org's scan CPU, and
//! at 256 MB a function has 0.145 vCPU.

// A tool run by hand or by the tests: a failure may end it with a panic.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::fmt::Write as _;
use std::time::Instant;

use shared::arcgis::usage::{BucketLabel, Buckets, read_usage};
use shared::credits::forecast::Spent;

struct Args {
    members: usize,
    days: usize,
    runs: usize,
}

fn args() -> Args {
    // `cargo bench` passes `--bench`; anything else (`cargo test --all-targets`) gets a quick
    // smoke run instead of the full measurement.
    let full = std::env::args().any(|a| a == "--bench");
    let mut a = Args {
        members: if full { 100_000 } else { 200 },
        days: 32,
        runs: if full { 5 } else { 1 },
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let mut value = || it.next().and_then(|v| v.parse::<usize>().ok());
        match flag.as_str() {
            "--members" => a.members = value().unwrap_or(a.members),
            "--days" => a.days = value().unwrap_or(a.days),
            "--runs" => a.runs = value().unwrap_or(a.runs).max(1),
            _ => {}
        }
    }
    a
}

/// A usage answer for `members` members over `days` daily buckets from 2026-10-01, values
/// spread the way ArcGIS writes them: mostly zero, some with exponents.
fn answer(members: usize, days: usize) -> Vec<u8> {
    const DAY_MS: i64 = 86_400_000;
    let first = 1_790_812_800_000_i64; // 2026-10-01T00:00Z
    let mut seed = 0x2545_f491_4f6c_dd1d_u64;
    let mut next = move || {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed
    };
    let mut out = String::with_capacity(members * days * 32);
    write!(
        out,
        r#"{{"startTime":{},"endTime":{},"period":"1d","data":["#,
        first - DAY_MS,
        first + days as i64 * DAY_MS
    )
    .unwrap();
    for m in 0..members {
        if m > 0 {
            out.push(',');
        }
        write!(
            out,
            r#"{{"username":"member{m:06}","userOrgId":"JXrNeAy8ce1q2b4l","credits":["#
        )
        .unwrap();
        for d in 0..days {
            if d > 0 {
                out.push(',');
            }
            let value = match next() % 10 {
                0..=5 => "0.0".to_owned(),
                6 => format!("{}.0E-4", next() % 9 + 1),
                _ => format!("{}.{}", next() % 40, next() % 10_000),
            };
            write!(out, r#"["{}","{value}"]"#, first + d as i64 * DAY_MS).unwrap();
        }
        out.push_str("]}");
    }
    out.push_str("]}");
    out.into_bytes()
}

/// This process's CPU time so far, in ms (user + system).
fn cpu_ms() -> f64 {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    let fields: Vec<&str> = stat.rsplit(')').next().unwrap_or("").split_whitespace().collect();
    let ticks: f64 = fields
        .get(11..13)
        .map_or(0.0, |f| f.iter().filter_map(|t| t.parse::<f64>().ok()).sum());
    ticks * 10.0
}

fn main() {
    let a = args();
    let body = answer(a.members, a.days);
    let buckets = Buckets::daily(BucketLabel::Start);
    println!(
        "read_usage: {} members × {} days, {:.1} MB of JSON",
        a.members,
        a.days,
        body.len() as f64 / 1e6
    );
    let mut walls = Vec::new();
    for run in 1..=a.runs {
        let (cpu0, t0) = (cpu_ms(), Instant::now());
        let mut spent = Spent::default();
        let mut series = 0usize;
        read_usage(body.as_slice(), buckets, |s| {
            series += 1;
            spent.add(s.username, s.points.iter().map(|p| p.credits).sum());
        })
        .unwrap();
        let wall = t0.elapsed().as_secs_f64() * 1e3;
        let cpu = cpu_ms() - cpu0;
        assert_eq!(series, a.members, "every series decoded");
        println!(
            "run {run}: {wall:.0} ms wall, {cpu:.0} ms CPU, {:.0} MB/s, org total {}",
            body.len() as f64 / 1e3 / wall,
            spent.org
        );
        walls.push(wall);
    }
    walls.sort_by(f64::total_cmp);
    println!("median {:.0} ms", walls[walls.len() / 2]);
}
