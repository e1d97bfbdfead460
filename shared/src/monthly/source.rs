//! Reading a month's consumption from ArcGIS Online, from either source (`REPORT_SOURCE`).
//!
//! - **usage** (default): `portals/self/usage` for the daily buckets (`1d`, what Esri's client
//!   asks for a span of a month) inside `[month start, next month start)`, once grouped by
//!   service type (`stype,etype`) and once by member (`username,userorgid`). The per-type
//!   query spans the previous month too when its usage is still kept, so the month-over-month
//!   figure costs no extra request. Each label is read as the start or the end of its day
//!   (`USAGE_BUCKET_LABEL`) and a month sums the days inside it, so consecutive months split
//!   exactly. The two groupings must agree on the total; a difference is reported in the notes.
//! - **report-item**: ArcGIS's own monthly credits report item, read safely: create it for
//!   the 1st at 00:00 UTC (a naive local start time picks the wrong month on a host off UTC),
//!   poll its status with a deadline (an unbounded poll hangs on a stuck item), download the CSV
//!   (redirects followed without the token), parse it by header with `credits::report_csv`,
//!   and delete the item unless `KEEP_REPORT_ITEMS`. The item is also deleted when waiting or
//!   parsing fails, so failures do not pile items up in the admin's content (a retried run
//!   creates, and deletes, an item of its own: creating one is never retried). The previous
//!   month's total comes from the usage API (one cheap query instead of a second report
//!   item); if that query fails the comparison is left out with a note, since the month's own
//!   figures are complete.

use serde::Serialize;

use super::MonthlyError;
use super::month::Month;
use crate::arcgis::{Client, ReportItem, UsageQuery};
use crate::credits::aggregate::{CreditSummary, summarize_report, summarize_totals, summarize_usage};
use crate::credits::amount::Credits;
use crate::credits::report_csv::{self, ReportWarning};
use crate::credits::usage::{BucketLabel, Buckets, TimeWindow};

/// Largest difference tolerated between the two usage groupings' totals before it is noted:
/// 100 micro-credits covers rounding in ArcGIS's own sums.
const GROUPING_TOLERANCE: Credits = Credits::from_micros(100);

/// A month's consumption as read from one source.
#[derive(Debug, Clone)]
pub struct MonthFigures {
    /// Per operation type (and the total).
    pub by_service: CreditSummary,
    /// Per member, from a separate query (the usage source); `None` when `by_service` holds
    /// it too (the report item's CSV gives both, and a copy would double the largest part of
    /// the report's memory).
    pub by_member: Option<CreditSummary>,
    /// The previous month's total, when it was read.
    pub previous_total: Option<Credits>,
    /// Caveats for the report's notes.
    pub notes: Vec<String>,
    /// What happened to the report item, for the `report-item` source.
    pub report_item: Option<ReportItemOutcome>,
}

/// What became of the report item.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ReportItemOutcome {
    /// The item's id.
    pub item_id: String,
    /// Its owner (the signed-in admin).
    pub owner: String,
    /// Whether it was deleted.
    pub deleted: bool,
    /// Why not, when it was not: `KEEP_REPORT_ITEMS`, or the delete's error.
    pub kept_because: Option<String>,
}

/// Reads `month` (and the previous month's total, when `previous` is given) from the usage
/// API, its daily labels read per `label`.
pub async fn from_usage(
    client: &Client,
    month: Month,
    previous: Option<Month>,
    label: BucketLabel,
) -> Result<MonthFigures, MonthlyError> {
    let days = Buckets::daily(label);
    let current = month.window();
    let span = match previous {
        Some(p) => TimeWindow::new(p.window().start_ms(), current.end_ms()).unwrap_or(current),
        None => current,
    };
    // Both groupings at once: one round trip.
    let (per_type, per_member) = tokio::try_join!(
        async {
            client
                .usage(&UsageQuery::by_service(span, days))
                .await
                .map_err(MonthlyError::arcgis("reading usage per operation type"))
        },
        async {
            client
                .usage_totals(&UsageQuery::by_member(current, days))
                .await
                .map_err(MonthlyError::arcgis("reading usage per member"))
        },
    )?;
    let by_service = summarize_usage(&per_type, &current);
    let by_member = summarize_totals(&per_member);
    let previous_total = previous.map(|p| {
        let w = p.window();
        per_type.iter().map(|s| s.credits_in(&w)).sum::<Credits>()
    });
    let mut notes = Vec::new();
    let gap = by_service.total - by_member.total;
    if gap > GROUPING_TOLERANCE || -gap > GROUPING_TOLERANCE {
        tracing::warn!(
            per_type = %by_service.total,
            per_member = %by_member.total,
            "usage totals disagree between groupings"
        );
        notes.push(format!(
            "The usage API's total per operation type ({}) differs from its total per member \
             ({}); the report's total is the per-operation-type one.",
            by_service.total, by_member.total
        ));
    }
    Ok(MonthFigures {
        by_service,
        by_member: Some(by_member),
        previous_total,
        notes,
        report_item: None,
    })
}

/// Reads `month` from a credits report item created in `owner`'s content; the previous
/// month's total (best effort) from the usage API, its daily labels read per `label`.
pub async fn from_report_item(
    client: &Client,
    owner: &str,
    month: Month,
    previous: Option<Month>,
    keep: bool,
    label: BucketLabel,
) -> Result<MonthFigures, MonthlyError> {
    let item = client
        .create_credits_report(owner, month.year(), month.month())
        .await
        .map_err(MonthlyError::arcgis("creating the credits report item"))?;
    let fetched = fetch_report(client, &item).await;
    let outcome = if keep {
        ReportItemOutcome {
            item_id: item.id.clone(),
            owner: item.owner.clone(),
            deleted: false,
            kept_because: Some("KEEP_REPORT_ITEMS is true".into()),
        }
    } else {
        match client.delete_item(&item).await {
            Ok(()) => ReportItemOutcome {
                item_id: item.id.clone(),
                owner: item.owner.clone(),
                deleted: true,
                kept_because: None,
            },
            Err(e) => {
                tracing::warn!(item = %item.id, error = %e, "could not delete the report item");
                ReportItemOutcome {
                    item_id: item.id.clone(),
                    owner: item.owner.clone(),
                    deleted: false,
                    kept_because: Some(format!("delete failed: {e}")),
                }
            }
        }
    };
    let report = fetched?;
    let mut notes: Vec<String> = report.warnings.iter().map(describe_warning).collect();
    let summary = summarize_report(&report);
    // Its rows are counted: what remains to do (a usage read, the report) needs none of them.
    drop(report);
    let previous_total = match previous {
        None => None,
        Some(p) => match client
            .usage(&UsageQuery::by_service(p.window(), Buckets::daily(label)))
            .await
        {
            Ok(series) => Some(series.iter().map(|s| s.credits_in(&p.window())).sum()),
            Err(e) => {
                tracing::warn!(error = %e, "previous month's total unavailable");
                notes.push(format!(
                    "The previous month's total could not be read from the usage API, so there is \
                     no month-over-month change: {e}"
                ));
                None
            }
        },
    };
    Ok(MonthFigures {
        by_member: None,
        by_service: summary,
        previous_total,
        notes,
        report_item: Some(outcome),
    })
}

/// A CSV oddity in words, for the report's notes.
fn describe_warning(w: &ReportWarning) -> String {
    match w {
        ReportWarning::HeaderAssumed { line } => format!(
            "The credits report CSV has no Username column; line {line} was taken as the header and \
             its first column as the member."
        ),
        ReportWarning::TotalRowMismatch {
            line,
            service,
            stated,
            summed,
        } => format!(
            "The credits report CSV's Total row (line {line}) says {stated} credits for {service}, \
             but its member rows add up to {summed}; the report uses the member rows."
        ),
        ReportWarning::TotalColumnMismatch {
            line,
            username,
            stated,
            summed,
        } => format!(
            "The credits report CSV's Total column on line {line} ({}) says {stated} credits, but \
             the row's cells add up to {summed}; the report uses the cells.",
            username.as_deref().unwrap_or("unattributed")
        ),
    }
}

/// Waits for, downloads and parses the item's CSV.
async fn fetch_report(client: &Client, item: &ReportItem) -> Result<report_csv::CreditsReport, MonthlyError> {
    let item_err = |step: &'static str| {
        let id = item.id.clone();
        move |source| MonthlyError::ReportItem {
            step,
            item_id: id,
            source: Box::new(source),
        }
    };
    client
        .wait_for_report(item)
        .await
        .map_err(item_err("waiting for the credits report item"))?;
    client
        .read_report(item)
        .await
        .map_err(item_err("downloading the credits report item"))?
        .map_err(|source| MonthlyError::ReportCsv {
            item_id: item.id.clone(),
            source,
        })
}
