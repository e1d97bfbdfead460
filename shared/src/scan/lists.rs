//! A scan's complete member lists, written to the reports bucket
//! (`scans/YYYY-MM-DD/<run>/members.{json,csv}`), and the small result the function returns.
//!
//! Lambda refuses a result over 6 MiB (`Function.ResponseSizeTooLarge`): at 100,000 members
//! the full summary is several megabytes, and a scheduled run's result is discarded anyway.
//! So the function returns the counts and the [`RESULT_MEMBERS_PER_LIST`] most urgent members
//! of each list, and the complete lists go to S3 beside the monthly reports, where they stay
//! readable after the run. Keys depend on the run only, so a retried delivery overwrites its
//! own objects.

use chrono::{DateTime, Utc};
use serde::Serialize;

use crate::monthly::store::{CSV_CONTENT_TYPE, JSON_CONTENT_TYPE, ReportStore};

use super::summary::{FlaggedMember, NotificationOutcome, ScanSummary, Skipped, TopUp};

/// Members (and other names) kept per list in the function's result; the counts stay
/// complete and the complete lists are in S3.
pub const RESULT_MEMBERS_PER_LIST: usize = 25;

/// Where one run's lists go.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListKeys {
    /// `scans/YYYY-MM-DD/<run>/members.json`: every list, with every figure.
    pub json: String,
    /// `scans/YYYY-MM-DD/<run>/members.csv`: the flagged members, one per line.
    pub csv: String,
}

impl ListKeys {
    /// The keys of the run `run_key` for the day of `as_of` (UTC). The run key is kept to
    /// letters, digits, `-`, `_` and `.`, so it reads the same in a console and a URL.
    pub fn for_run(as_of: DateTime<Utc>, run_key: &str) -> ListKeys {
        let run: String = run_key
            .chars()
            .map(|c| match c {
                'a'..='z' | 'A'..='Z' | '0'..='9' | '-' | '_' | '.' => c,
                _ => '-',
            })
            .collect();
        let prefix = format!("scans/{}/{run}", as_of.format("%Y-%m-%d"));
        ListKeys {
            json: format!("{prefix}/members.json"),
            csv: format!("{prefix}/members.csv"),
        }
    }
}

/// What became of the complete lists.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "status", rename_all = "snake_case")]
pub enum Lists {
    /// Written: the result's lists are cut, these objects are not.
    Written {
        /// The bucket.
        bucket: String,
        /// Every list, as JSON.
        json_key: String,
        /// The flagged members, as CSV.
        csv_key: String,
    },
    /// `REPORT_BUCKET` is not set for this function: only the result's cut lists exist.
    NotConfigured,
    /// Dry runs write nothing.
    DryRun,
    /// The write failed; the run itself is unaffected (see `problems`).
    Failed {
        /// Why, naming the bucket, key and IAM action.
        reason: String,
    },
}

/// The complete lists' JSON document.
#[derive(Serialize)]
struct Document<'a> {
    run_key: &'a str,
    as_of: DateTime<Utc>,
    members_scanned: usize,
    critical: &'a [FlaggedMember],
    warning: &'a [FlaggedMember],
    skipped: &'a Skipped,
    member_errors: &'a [String],
}

/// One CSV line.
#[derive(Serialize)]
struct CsvRow<'a> {
    level: &'static str,
    username: &'a str,
    assigned: String,
    available: String,
    percent_left: Option<f64>,
    credits_per_day: Option<f64>,
    days_until_empty: Option<f64>,
    newly_reported: bool,
}

/// Writes the complete lists of `summary` (a real run's) and says where they are. A failure
/// is returned as [`Lists::Failed`] and added to the summary's problems: the lists are a
/// copy of what the run found, not a record the next run depends on.
pub async fn publish(store: &ReportStore, summary: &mut ScanSummary, as_of: DateTime<Utc>) -> Lists {
    let keys = ListKeys::for_run(as_of, &summary.run_key);
    let written = async {
        // Both sent at once: one round trip. Together they are a few megabytes at 100,000
        // members, written after the listing's memory was given back.
        let csv = csv_lines(summary).map_err(|e| format!("the member lists could not be written as CSV: {e}"))?;
        let json = serde_json::to_vec(&Document {
            run_key: &summary.run_key,
            as_of,
            members_scanned: summary.members_scanned,
            critical: &summary.critical,
            warning: &summary.warning,
            skipped: &summary.skipped,
            member_errors: &summary.member_errors,
        })
        .map_err(|e| format!("the member lists could not be serialized: {e}"))?;
        tokio::try_join!(
            store.put(&keys.csv, csv, CSV_CONTENT_TYPE),
            store.put(&keys.json, json, JSON_CONTENT_TYPE)
        )
        .map_err(|e| e.to_string())
    }
    .await;
    match written {
        Ok(((), ())) => Lists::Written {
            bucket: store.bucket().to_owned(),
            json_key: keys.json,
            csv_key: keys.csv,
        },
        Err(reason) => {
            tracing::warn!(run_key = %summary.run_key, reason = %reason, "the complete member lists were not written");
            summary.problems.push(format!(
                "the complete member lists were not written, so only the first {RESULT_MEMBERS_PER_LIST} of each \
                 list are in this result: {reason}"
            ));
            Lists::Failed { reason }
        }
    }
}

fn csv_lines(summary: &ScanSummary) -> Result<Vec<u8>, csv::Error> {
    let mut w = csv::Writer::from_writer(Vec::new());
    let levels = [("critical", &summary.critical), ("warning", &summary.warning)];
    for (level, members) in levels {
        for m in members.iter() {
            w.serialize(CsvRow {
                level,
                username: &m.username,
                assigned: m.assigned.to_string(),
                available: m.available.to_string(),
                percent_left: m.percent_left,
                credits_per_day: m.credits_per_day,
                days_until_empty: m.days_until_empty,
                newly_reported: m.newly_reported,
            })?;
        }
    }
    w.into_inner().map_err(|e| e.into_error().into())
}

/// Complete counts of the lists the result cuts.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Counts {
    /// Critical members.
    pub critical: usize,
    /// Warning members.
    pub warning: usize,
    /// Members running out within `FORECAST_DAYS` above the thresholds.
    pub running_out: usize,
    /// Members not rated.
    pub skipped: usize,
    /// Per-member listing problems.
    pub member_errors: usize,
    /// Allocations the top-up changed.
    pub allocations_applied: usize,
}

/// The function's result: the summary with every list cut to [`RESULT_MEMBERS_PER_LIST`],
/// the complete counts and where the complete lists are. A few kilobytes whatever the org.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ScanResult {
    /// The summary, lists cut.
    #[serde(flatten)]
    pub summary: ScanSummary,
    /// The lists' complete lengths.
    pub counts: Counts,
    /// The complete lists.
    pub lists: Lists,
}

impl ScanSummary {
    /// The function's result (see [`ScanResult`]): the summary itself, its lists cut in place,
    /// and where the complete ones went.
    pub fn into_result(mut self) -> ScanResult {
        let lists = std::mem::replace(&mut self.lists, Lists::NotConfigured);
        let n = RESULT_MEMBERS_PER_LIST;
        let counts = Counts {
            critical: self.critical.len(),
            warning: self.warning.len(),
            running_out: self.running_out.members.len(),
            skipped: self.skipped.total,
            member_errors: self.member_errors.len(),
            allocations_applied: self.allocations_applied.len(),
        };
        self.critical.truncate(n);
        self.warning.truncate(n);
        self.running_out.members.truncate(n);
        for group in self.skipped.by_reason.values_mut() {
            group.usernames.truncate(n);
        }
        self.member_errors.truncate(n);
        self.recipients_notified.truncate(n);
        self.member_notices.sent.truncate(n);
        self.member_notices.not_sent.truncate(n);
        self.allocations_applied.truncate(n);
        if let NotificationOutcome::Sent { recipients, .. } = &mut self.notification {
            recipients.truncate(n);
        }
        if let TopUp::Applied { not_applied, .. } = &mut self.top_up {
            not_applied.truncate(n);
        }
        ScanResult {
            summary: self,
            counts,
            lists,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_name_the_day_and_the_run() {
        let as_of: DateTime<Utc> = "2026-11-30T06:00:00Z".parse().unwrap();
        let keys = ListKeys::for_run(as_of, "2026-11-30T06:00:00Z");
        assert_eq!(keys.json, "scans/2026-11-30/2026-11-30T06-00-00Z/members.json");
        assert_eq!(keys.csv, "scans/2026-11-30/2026-11-30T06-00-00Z/members.csv");
        let odd = ListKeys::for_run(as_of, "manual/../run 1");
        assert_eq!(odd.json, "scans/2026-11-30/manual-..-run-1/members.json");
    }
}
