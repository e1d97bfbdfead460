//! Writes a realistic `credits.html` (and `credits.csv` / `credits.json` beside it) without AWS:
//! a generated org in an in-process portal-sim, its October 2026 read through the usage API
//! exactly as monthly-report reads it, rendered by `shared::monthly::render`.
//! `scripts/render-report.sh` screenshots the HTML in headless Chromium to check the chart.
//!
//! ```sh
//! cargo run -p shared --example render-report -- target/render-report/credits.html [MEMBERS] [en|fr]
//! ```

// A tool run by hand or by the tests: a failure may end it with a panic.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::PathBuf;
use std::process::ExitCode;

use chrono::{TimeZone, Utc};
use shared::credits::usage::BucketLabel;
use shared::i18n::Lang;
use shared::monthly::{BalanceSnapshot, Month, MonthlyReport, ReportInputs, SourceKind, render, source};

#[tokio::main]
async fn main() -> ExitCode {
    let mut args = std::env::args().skip(1);
    let Some(out) = args.next().map(PathBuf::from) else {
        eprintln!("usage: render-report <out.html> [members] [en|fr]");
        return ExitCode::from(2);
    };
    let members = match args.next().map(|m| m.parse::<usize>()) {
        None => 300,
        Some(Ok(n)) if n > 0 => n,
        Some(_) => {
            eprintln!("members must be a positive number");
            return ExitCode::from(2);
        }
    };
    let lang = match args.next().map(|l| l.parse::<Lang>()) {
        None => Lang::En,
        Some(Ok(lang)) => lang,
        Some(Err(e)) => {
            eprintln!("language: {e}");
            return ExitCode::from(2);
        }
    };
    match render(&out, members, lang).await {
        Ok(()) => {
            println!("{}", out.display());
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("render-report: {e}");
            ExitCode::FAILURE
        }
    }
}

async fn render(out: &std::path::Path, members: usize, lang: Lang) -> Result<(), Box<dyn std::error::Error>> {
    let sim = testkit::arcgis::sim_with(members, 7).await;
    let client = testkit::arcgis::admin_client(&sim);
    let month: Month = "2026-10".parse()?;
    let props = client.org_properties().await?;
    // The simulator labels buckets by their start unless told otherwise.
    let figures = source::from_usage(&client, month, Some(month.previous()), BucketLabel::Start).await?;
    let as_of = Utc.with_ymd_and_hms(2026, 11, 1, 6, 0, 0).single().ok_or("bad time")?;
    let report = MonthlyReport::build(ReportInputs {
        month,
        source: SourceKind::Usage,
        org_name: props.name.clone(),
        by_service: &figures.by_service,
        by_member: figures.by_member.as_ref().unwrap_or(&figures.by_service),
        previous_total: figures.previous_total.map(|t| (t, SourceKind::Usage)),
        balance: BalanceSnapshot {
            available_credits: props.available_credits,
            as_of,
        },
        top_n: 10,
        notes: figures.notes,
    });
    if let Some(dir) = out.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir)?;
    }
    std::fs::write(out, render::html(&report, lang))?;
    std::fs::write(out.with_extension("csv"), render::csv(&report, lang)?)?;
    std::fs::write(out.with_extension("json"), render::json(&report)?)?;
    Ok(())
}
