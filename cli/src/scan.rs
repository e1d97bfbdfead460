//! `scan --dry-run` and `members`: the daily scan's reading and rating, run here.
//!
//! Both are the scan job itself ([`shared::scan::scan`]) with `dry_run` set: nothing is
//! sent, allocated or recorded, whatever the ledger. With a ledger table the scan also knows
//! what was already reported, so "new" means what the next scheduled run would send.

use std::time::Duration;

use anyhow::anyhow;
use chrono::Utc;
use serde::Serialize;
use shared::apply::Deadline;
use shared::channels::Channels;
use shared::credits::amount::Credits;
use shared::credits::classify::Level;
use shared::i18n::Lang;
use shared::ledger::Ledger;
use shared::scan::summary::{FlaggedMember, NotificationOutcome};
use shared::scan::{self, ScanDeps, ScanRequest, ScanSettings, ScanSummary};
use shared::schedule::ScanInput;

use crate::args::{LevelFilter, MembersArgs, ScanArgs, SortBy};
use crate::context::Context;
use crate::progress::Spinner;
use crate::table::Table;

/// The ledger table name used when none is given: the scan's settings need one, and the
/// dry run reads an empty in-memory ledger instead.
const NO_TABLE: &str = "(none: in memory)";

/// A dry-run scan of the org, with the deployment's settings from the environment.
pub async fn dry_scan(ctx: &Context, json: bool) -> anyhow::Result<(ScanSummary, Lang)> {
    let (client, config) = ctx.client().await?;
    let table = ctx.table().await?;
    let config = shared::config::Config {
        ledger_table: Some(table.clone().unwrap_or_else(|| NO_TABLE.to_owned())),
        ..config
    };
    let settings = ScanSettings::from_config(&config).map_err(|e| anyhow!("{e}"))?;
    let ledger = match &table {
        Some(table) => Ledger::dynamo(aws_sdk_dynamodb::Client::new(ctx.aws().await), table.clone()),
        None => Ledger::memory(),
    };
    let now = Utc::now();
    let request = ScanRequest {
        run_key: format!("cli:{}", now.to_rfc3339()),
        request_id: "credit-steward-cli".to_owned(),
        input: ScanInput {
            dry_run: true,
            ..ScanInput::default()
        },
        as_of: now,
        now,
        deadline: Deadline::after(Duration::from_secs(900), now),
    };
    let deps = ScanDeps {
        client: &client,
        ledger: &ledger,
        settings: &settings,
        lists: None,
        // A dry run sends nothing, on any channel.
        channels: &Channels::none(),
    };
    let spinner = Spinner::start(!json, "Reading the org's members and usage");
    let summary = scan::scan(&deps, &request).await;
    spinner.finish();
    Ok((summary?, settings.language))
}

/// `scan --dry-run`.
pub async fn scan(ctx: &Context, args: &ScanArgs, json: bool) -> anyhow::Result<()> {
    if !args.dry_run {
        anyhow::bail!(
            "a real scan sends alerts and records them; that is the deployed function's job \
             (aws lambda invoke --function-name <ScanCreditsFunctionName> ...). Run `credit-steward scan \
             --dry-run` to see what it would do."
        );
    }
    let (summary, lang) = dry_scan(ctx, json).await?;
    if json {
        println!("{}", serde_json::to_string_pretty(&summary)?);
        return Ok(());
    }
    println!(
        "{}",
        lang.f(
            "cli.scan.scanned",
            &[
                ("members", &lang.count(summary.members_scanned)),
                ("credits", &lang.credits_short(summary.org_available_credits)),
            ]
        )
    );
    println!(
        "{}",
        lang.f(
            "cli.scan.levels",
            &[
                ("critical", &lang.count(summary.critical.len())),
                ("warning", &lang.count(summary.warning.len())),
                ("new", &lang.count(summary.newly_reported)),
                ("old", &lang.count(summary.already_reported)),
            ]
        )
    );
    if !summary.running_out.members.is_empty() {
        let days = summary.running_out.within_days.unwrap_or_default().to_string();
        let n = lang.count(summary.running_out.members.len());
        println!("{}", lang.f("cli.scan.running_out", &[("n", &n), ("days", &days)]));
    }
    if let NotificationOutcome::DryRun {
        would_send,
        recipients,
        subject,
        message,
    } = &summary.notification
    {
        match (would_send, subject) {
            (true, Some(subject)) => {
                let args = [("recipients", recipients.join(", ")), ("subject", subject.clone())];
                let args: Vec<(&str, &str)> = args.iter().map(|(k, v)| (*k, v.as_str())).collect();
                println!("{}", lang.f("cli.scan.would_email", &args));
            }
            (false, Some(_)) => println!("{}", lang.t("cli.scan.nobody")),
            _ => println!("{}", lang.t("cli.scan.nothing_new")),
        }
        if let (true, Some(message)) = (args.show_email, message) {
            println!("\n{message}");
        }
    }
    for problem in &summary.problems {
        println!("{}", lang.f("cli.scan.problem", &[("problem", problem)]));
    }
    println!("{}", lang.t("cli.scan.dry_run"));
    Ok(())
}

/// One line of `members`.
#[derive(Debug, Serialize)]
struct MemberLine<'a> {
    level: Level,
    #[serde(flatten)]
    member: &'a FlaggedMember,
}

/// `members`.
pub async fn members(ctx: &Context, args: &MembersArgs, json: bool) -> anyhow::Result<()> {
    let (summary, lang) = dry_scan(ctx, json).await?;
    let mut lines: Vec<MemberLine<'_>> = summary
        .critical
        .iter()
        .map(|member| MemberLine {
            level: Level::Critical,
            member,
        })
        .collect();
    if args.level == LevelFilter::Warning {
        lines.extend(summary.warning.iter().map(|member| MemberLine {
            level: Level::Warning,
            member,
        }));
    }
    sort(&mut lines, args.sort);
    let total = lines.len();
    if args.limit > 0 {
        lines.truncate(args.limit);
    }
    if json {
        println!("{}", serde_json::to_string_pretty(&lines)?);
        return Ok(());
    }
    let headers =
        ["member", "level", "left", "allocation", "percent_left", "days_left"].map(|c| lang.t(&format!("cli.col.{c}")));
    let mut table = Table::new(&headers);
    for line in &lines {
        let m = line.member;
        table.row(vec![
            m.username.clone(),
            level_name(line.level, lang).to_owned(),
            lang.credits_short(m.available),
            lang.credits_short(m.assigned),
            m.percent_left.map_or_else(|| "–".to_owned(), |p| lang.percent(p)),
            if m.available.is_negative() || m.available == Credits::ZERO {
                lang.t("cli.empty").to_owned()
            } else {
                m.days_until_empty.map_or_else(|| "–".to_owned(), |d| lang.number(d, 0))
            },
        ]);
    }
    print!("{}", table.render());
    let shown = if lines.len() < total {
        format!(" {}", lang.f("cli.members.shown", &[("n", &lines.len().to_string())]))
    } else {
        String::new()
    };
    let line = lang.f(
        "cli.members.total",
        &[
            ("n", &lang.count(total)),
            ("members", &lang.count(summary.members_scanned)),
            ("shown", &shown),
            ("credits", &lang.credits_short(summary.org_available_credits)),
        ],
    );
    println!("{line}");
    Ok(())
}

fn sort(lines: &mut [MemberLine<'_>], by: SortBy) {
    match by {
        // The scan's own order within each level: most urgent first.
        SortBy::PercentLeft => lines.sort_by(|a, b| {
            let key = |l: &MemberLine<'_>| l.member.percent_left.unwrap_or(f64::INFINITY);
            key(a).total_cmp(&key(b))
        }),
        SortBy::DaysLeft => lines.sort_by(|a, b| {
            let key = |l: &MemberLine<'_>| l.member.days_until_empty.unwrap_or(f64::INFINITY);
            key(a).total_cmp(&key(b))
        }),
        SortBy::Name => lines.sort_by(|a, b| a.member.username.cmp(&b.member.username)),
    }
}

fn level_name(level: Level, lang: Lang) -> &'static str {
    lang.t(match level {
        Level::Critical => "cli.level.critical",
        Level::Warning => "cli.level.warning",
        Level::Ok => "cli.level.ok",
    })
}
