//! `report --month YYYY-MM [--out DIR]`: the monthly report's figures, computed here from
//! the same source and settings as monthly-report; files are written only into `--out`,
//! nothing goes to S3 and nobody is mailed.

use std::path::{Path, PathBuf};

use anyhow::{Context as _, anyhow};
use chrono::Utc;
use serde::Serialize;
use serde_json::json;
use shared::monthly::{self, MonthlyReport, ReportSettings, render};

use crate::args::ReportArgs;
use crate::context::Context;
use crate::progress::Spinner;
use crate::table::Table;

/// What `--json` prints.
#[derive(Serialize)]
struct Printed<'a> {
    report: &'a MonthlyReport,
    files: Vec<String>,
}

/// `report`.
pub async fn report(ctx: &Context, args: &ReportArgs, json: bool) -> anyhow::Result<()> {
    let now = Utc::now();
    let event = match &args.month {
        Some(month) => json!({ "month": month }),
        None => json!({}),
    };
    let resolved = monthly::resolve_month(event, now).map_err(|e| anyhow!("{e}"))?;
    let (client, config) = ctx.client().await?;
    let settings = ReportSettings::for_compute_only(&config);
    let lang = settings.language;
    let spinner = Spinner::start(!json, &format!("Reading {}'s usage", resolved.month));
    let computed = monthly::compute(&client, &settings, resolved.month, None, now).await;
    spinner.finish();
    let report = computed.map_err(|e| anyhow!("{e}"))?.report;

    let files = match &args.out {
        Some(dir) => write(dir, &report, lang)?,
        None => Vec::new(),
    };
    if json {
        let files = files.iter().map(|p| p.display().to_string()).collect();
        println!("{}", serde_json::to_string_pretty(&Printed { report: &report, files })?);
        return Ok(());
    }
    let month = lang.month_year(report.month.year(), report.month.month());
    let headline = lang.f(
        "cli.report.headline",
        &[
            ("month", &month),
            ("total", &lang.credits(report.total_credits, 2)),
            ("left", &lang.credits_short(report.balance.available_credits)),
        ],
    );
    println!("{headline}");
    let col = |c: &str| lang.t(&format!("cli.col.{c}"));
    let mut types = Table::new(&[col("operation_type"), col("credits"), col("share")]);
    for t in &report.operation_types {
        types.row(vec![
            t.label.clone(),
            lang.credits(t.credits, 2),
            t.share_percent.map_or_else(|| "–".to_owned(), |p| lang.percent(p)),
        ]);
    }
    print!("\n{}", types.render());
    if !report.top_members.is_empty() {
        let mut top = Table::new(&[col("member"), col("credits"), col("share")]);
        for m in &report.top_members {
            top.row(vec![
                m.username.clone(),
                lang.credits(m.credits, 2),
                m.share_percent.map_or_else(|| "–".to_owned(), |p| lang.percent(p)),
            ]);
        }
        print!("\n{}", top.render());
    }
    for note in &report.notes {
        println!("{}", lang.f("cli.report.note", &[("note", note)]));
    }
    match files.as_slice() {
        [] => println!("\n{}", lang.t("cli.report.nothing_written")),
        written => {
            println!();
            for path in written {
                println!(
                    "{}",
                    lang.f("cli.report.wrote", &[("path", &path.display().to_string())])
                );
            }
        }
    }
    Ok(())
}

/// Writes the three renderings into `dir` (created if needed).
fn write(dir: &Path, report: &MonthlyReport, lang: shared::i18n::Lang) -> anyhow::Result<Vec<PathBuf>> {
    std::fs::create_dir_all(dir).with_context(|| format!("could not create {}", dir.display()))?;
    let csv = render::csv(report, lang).map_err(|e| anyhow!("could not render the CSV: {e}"))?;
    let json = render::json(report).map_err(|e| anyhow!("could not render the JSON: {e}"))?;
    let html = render::html(report, lang).into_bytes();
    let mut written = Vec::new();
    for (name, bytes) in [("credits.csv", csv), ("credits.html", html), ("credits.json", json)] {
        let path = dir.join(name);
        std::fs::write(&path, bytes).with_context(|| format!("could not write {}", path.display()))?;
        written.push(path);
    }
    Ok(written)
}
