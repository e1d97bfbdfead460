//! `audit [--since DATE] [--member U]`: the ledger's audit trail of allocation changes,
//! read day by day (one query per UTC day, as the trail is partitioned).

use anyhow::{anyhow, bail};
use chrono::{Days, NaiveDate, Utc};
use shared::credits::member::Balance;
use shared::i18n::Lang;
use shared::ledger::Ledger;
use shared::ledger::audit::AuditEntry;

use crate::args::AuditArgs;
use crate::context::Context;
use crate::table::Table;

/// The furthest back `--since` may go: the trail is read one day at a time.
const MAX_DAYS: u64 = 366;

/// `audit`.
pub async fn audit(ctx: &Context, args: &AuditArgs, json: bool) -> anyhow::Result<()> {
    let table = ctx
        .table()
        .await?
        .ok_or_else(|| anyhow!("the audit trail is in the ledger table: give --table or --stack"))?;
    let ledger = Ledger::dynamo(aws_sdk_dynamodb::Client::new(ctx.aws().await), table);
    let today = Utc::now().date_naive();
    let since = args.since.unwrap_or_else(|| today - Days::new(7));
    let days = days_between(since, today)?;
    let mut entries: Vec<AuditEntry> = Vec::new();
    for day in days {
        let mut on_day = ledger.changes_on(day).await.map_err(|e| anyhow!("{e}"))?;
        on_day.retain(|e| args.member.as_ref().is_none_or(|m| &e.username == m));
        entries.extend(on_day);
    }
    entries.sort_by(|a, b| a.at.cmp(&b.at).then_with(|| a.username.cmp(&b.username)));
    if json {
        println!("{}", serde_json::to_string_pretty(&entries)?);
        return Ok(());
    }
    let lang = ctx.lang();
    let col = |c: &str| lang.t(&format!("cli.col.{c}"));
    let mut out = Table::new(&[
        col("when"),
        col("member"),
        col("before"),
        col("after"),
        col("by"),
        col("reason"),
    ]);
    for e in &entries {
        let after = if e.matches_plan {
            balance(lang, &e.observed)
        } else {
            let observed = balance(lang, &e.observed);
            lang.f(
                "cli.audit.planned",
                &[("observed", &observed), ("planned", &lang.credits_short(e.planned))],
            )
        };
        out.row(vec![
            e.at.format("%Y-%m-%d %H:%M").to_string(),
            e.username.clone(),
            balance(lang, &e.before),
            after,
            e.caller.display().to_owned(),
            e.reason.clone().unwrap_or_else(|| e.source.clone()),
        ]);
    }
    print!("{}", out.render());
    let total = lang.f(
        "cli.audit.total",
        &[("n", &entries.len().to_string()), ("since", &lang.date(since))],
    );
    println!("{total}");
    Ok(())
}

/// Every day from `since` to `today`, refusing a future or too distant start.
fn days_between(since: NaiveDate, today: NaiveDate) -> anyhow::Result<Vec<NaiveDate>> {
    if since > today {
        bail!("--since {since} is in the future (today is {today} UTC)");
    }
    let span = u64::try_from((today - since).num_days()).unwrap_or(u64::MAX);
    if span > MAX_DAYS {
        bail!("--since {since} is more than {MAX_DAYS} days ago: choose a later date");
    }
    Ok(since.iter_days().take_while(|d| *d <= today).collect())
}

/// An allocation and what was left of it.
fn balance(lang: Lang, b: &Balance) -> String {
    match b {
        Balance::Unlimited => "unlimited".to_owned(),
        Balance::Limited { assigned, available } => {
            format!(
                "{} ({} left)",
                lang.credits_short(*assigned),
                lang.credits_short(*available)
            )
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_span_is_inclusive_and_bounded() {
        let d = |s: &str| s.parse::<NaiveDate>().unwrap();
        assert_eq!(days_between(d("2026-11-28"), d("2026-11-30")).unwrap().len(), 3);
        assert!(days_between(d("2026-12-01"), d("2026-11-30")).is_err());
        assert!(days_between(d("2025-11-01"), d("2026-11-30")).is_err());
    }
}
