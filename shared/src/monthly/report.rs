//! The monthly report as data: what the CSV, JSON, HTML and email are rendered from.
//!
//! Built from the month's [`CreditSummary`] (either source), the previous month's total and a
//! balance snapshot. Amounts are exact [`Credits`] (so `12.3` never prints as
//! `12.299999999999999` and members plus unattributed add up to the total exactly); shares
//! and rates are `f64`, rounded for reading.

use chrono::{DateTime, NaiveDate, TimeDelta, Utc};
use serde::{Deserialize, Serialize};

use super::month::Month;
use crate::config::ReportSource;
use crate::credits::aggregate::{Attribution, CreditSummary};
use crate::credits::amount::Credits;
use crate::credits::forecast::days_until_empty;
use crate::credits::service_types;

/// Where the figures came from, as written in the report.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum SourceKind {
    /// `portals/self/usage`.
    #[serde(rename = "usage")]
    Usage,
    /// The credits report item's CSV.
    #[serde(rename = "report-item")]
    ReportItem,
}

impl From<ReportSource> for SourceKind {
    fn from(s: ReportSource) -> Self {
        match s {
            ReportSource::Usage => SourceKind::Usage,
            ReportSource::ReportItem => SourceKind::ReportItem,
        }
    }
}

impl SourceKind {
    /// The `REPORT_SOURCE` spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            SourceKind::Usage => "usage",
            SourceKind::ReportItem => "report-item",
        }
    }

    /// How the report describes it to people.
    pub fn describe(self) -> &'static str {
        match self {
            SourceKind::Usage => "ArcGIS Online usage API (portals/self/usage)",
            SourceKind::ReportItem => "ArcGIS Online credits report item (CSV)",
        }
    }
}

/// Credits of one operation (service) type: the per-type totals admins read first, with
/// readable labels.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct OperationTypeCredits {
    /// Readable label ("Geocoding"), or the unknown code / header verbatim.
    pub label: String,
    /// The usage API's code ("geocode"), when the label is a known one.
    pub code: Option<String>,
    /// Credits consumed in the month.
    pub credits: Credits,
    /// Share of the month's total, in percent; `None` when the total is 0.
    pub share_percent: Option<f64>,
}

/// Credits of one member.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MemberLine {
    /// Exact username.
    pub username: String,
    /// Credits consumed in the month.
    pub credits: Credits,
    /// Share of the month's total, in percent; `None` when the total is 0.
    pub share_percent: Option<f64>,
}

/// The previous month, for the month-over-month change.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PreviousMonth {
    /// Which month.
    pub month: Month,
    /// Its total.
    pub total_credits: Credits,
    /// Where that total came from (the usage API even for a `report-item` report, so that no
    /// second report item is created).
    pub source: SourceKind,
    /// This month's total minus the previous one.
    pub change_credits: Credits,
    /// The change in percent of the previous total; `None` when that was 0.
    pub change_percent: Option<f64>,
}

/// The org's remaining credits when the report was first made.
///
/// Kept apart from the month's figures because it is a point-in-time reading: a retried run
/// reuses the first run's snapshot (read back from the stored `credits.json`), so that the
/// objects it rewrites are byte-for-byte the same.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct BalanceSnapshot {
    /// `portals/self.availableCredits`.
    pub available_credits: Credits,
    /// When it was read.
    pub as_of: DateTime<Utc>,
}

/// The org's remaining credits and how long they last at this month's burn rate.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct OrgRunway {
    /// The org's remaining credits.
    pub available_credits: Credits,
    /// When they were read.
    pub as_of: DateTime<Utc>,
    /// This month's total divided by its number of days.
    pub credits_per_day: f64,
    /// `available / credits_per_day`: `Some(0)` when nothing is left, `None` when nothing was
    /// spent (rules in `credits::forecast`).
    pub days_until_empty: Option<f64>,
    /// The day the credits run out at that rate, counted from `as_of`.
    pub empty_on: Option<NaiveDate>,
}

impl OrgRunway {
    /// Applies this month's burn rate to `snapshot`.
    pub fn new(snapshot: BalanceSnapshot, month_total: Credits, month: Month) -> OrgRunway {
        let credits_per_day = round6(month_total.to_f64() / f64::from(month.days()));
        let days = days_until_empty(snapshot.available_credits, credits_per_day).map(|d| (d * 10.0).round() / 10.0);
        let empty_on = days
            .and_then(|d| TimeDelta::try_seconds((d * 86_400.0) as i64))
            .and_then(|d| snapshot.as_of.checked_add_signed(d))
            .map(|t| t.date_naive());
        OrgRunway {
            available_credits: snapshot.available_credits,
            as_of: snapshot.as_of,
            credits_per_day,
            days_until_empty: days,
            empty_on,
        }
    }

    /// The reading it was computed from.
    pub fn snapshot(&self) -> BalanceSnapshot {
        BalanceSnapshot {
            available_credits: self.available_credits,
            as_of: self.as_of,
        }
    }
}

/// Everything the monthly report says. Serialized as `credits.json`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MonthlyReport {
    /// The month (`YYYY-MM`).
    pub month: Month,
    /// First instant covered (the 1st, 00:00 UTC).
    pub period_start: DateTime<Utc>,
    /// End of the period (exclusive: the next month's 1st, 00:00 UTC).
    pub period_end: DateTime<Utc>,
    /// Where the figures came from.
    pub source: SourceKind,
    /// The org's name, when ArcGIS gave it.
    pub org_name: Option<String>,
    /// Credits consumed in the month, all of them (attributed or not).
    pub total_credits: Credits,
    /// The previous month, when its usage is still kept and could be read.
    pub previous: Option<PreviousMonth>,
    /// Credits per operation type, descending (ties by label).
    pub operation_types: Vec<OperationTypeCredits>,
    /// The `REPORT_TOP_N` members who spent most (a prefix of `members`).
    pub top_members: Vec<MemberLine>,
    /// Every member with non-zero credits in the month, descending (ties by username).
    pub members: Vec<MemberLine>,
    /// Credits charged to no member (org-level storage and the like): shown as such, never
    /// dropped, so that members plus this add up to the total.
    pub unattributed_credits: Credits,
    /// Remaining credits and the runway at this month's rate.
    pub balance: OrgRunway,
    /// Caveats about the figures (source warnings, cross-checks), for the reader.
    pub notes: Vec<String>,
}

/// What a report is built from.
#[derive(Debug, Clone)]
pub struct ReportInputs<'a> {
    /// The month.
    pub month: Month,
    /// Where the month's figures came from.
    pub source: SourceKind,
    /// The org's name.
    pub org_name: Option<String>,
    /// Per operation type; its total is the month's total.
    pub by_service: &'a CreditSummary,
    /// Per member (may be the same summary as `by_service`).
    pub by_member: &'a CreditSummary,
    /// The previous month's total and its source, when known.
    pub previous_total: Option<(Credits, SourceKind)>,
    /// The balance reading.
    pub balance: BalanceSnapshot,
    /// How many members go in `top_members`.
    pub top_n: usize,
    /// Notes gathered while reading the sources.
    pub notes: Vec<String>,
}

impl MonthlyReport {
    /// Assembles the report; pure, so the same inputs give the same report.
    pub fn build(inputs: ReportInputs<'_>) -> MonthlyReport {
        let total = inputs.by_service.total;
        let operation_types = inputs
            .by_service
            .by_service
            .iter()
            .map(|s| OperationTypeCredits {
                label: s.service.clone(),
                code: service_types::code(&s.service).map(str::to_owned),
                credits: s.credits,
                share_percent: percent_of(s.credits, total),
            })
            .collect();
        let mut unattributed = Credits::ZERO;
        let mut members = Vec::new();
        for m in &inputs.by_member.by_member {
            match &m.member {
                Attribution::Member(username) if !m.credits.is_zero() => members.push(MemberLine {
                    username: username.clone(),
                    credits: m.credits,
                    share_percent: percent_of(m.credits, total),
                }),
                Attribution::Member(_) => {}
                Attribution::Unattributed => unattributed += m.credits,
            }
        }
        let top_members = members.iter().take(inputs.top_n).cloned().collect();
        let previous = inputs.previous_total.map(|(prev, source)| PreviousMonth {
            month: inputs.month.previous(),
            total_credits: prev,
            source,
            change_credits: total - prev,
            change_percent: percent_of(total - prev, prev),
        });
        MonthlyReport {
            month: inputs.month,
            period_start: inputs.month.start(),
            period_end: inputs.month.end(),
            source: inputs.source,
            org_name: inputs.org_name,
            total_credits: total,
            previous,
            operation_types,
            top_members,
            members,
            unattributed_credits: unattributed,
            balance: OrgRunway::new(inputs.balance, total, inputs.month),
            notes: inputs.notes,
        }
    }
}

impl MonthlyReport {
    /// The unattributed credits' share of the total, in percent (two decimals); `None` when
    /// nothing was used.
    pub fn unattributed_share_percent(&self) -> Option<f64> {
        percent_of(self.unattributed_credits, self.total_credits)
    }
}

/// Rounds a rate to six decimals for reading.
fn round6(x: f64) -> f64 {
    let r = (x * 1e6).round() / 1e6;
    // -0.0 would print as "-0".
    if r == 0.0 { 0.0 } else { r }
}

/// `part` as a percentage of `whole`, two decimals; `None` when `whole` is zero.
fn percent_of(part: Credits, whole: Credits) -> Option<f64> {
    (!whole.is_zero()).then(|| round2(part.to_f64() / whole.to_f64() * 100.0))
}

fn round2(x: f64) -> f64 {
    let r = (x * 100.0).round() / 100.0;
    if r == 0.0 { 0.0 } else { r }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::credits::aggregate::CreditTally;

    fn c(x: f64) -> Credits {
        Credits::from_f64(x).unwrap()
    }

    fn at(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
    }

    fn summary() -> CreditSummary {
        let mut t = CreditTally::default();
        t.add(Attribution::Member("amy".into()), "geocode", c(30.0));
        t.add(Attribution::Member("bob".into()), "spanalysis", c(10.1));
        t.add(Attribution::Member("bob".into()), "geocode", c(0.2));
        t.add(Attribution::Member("idle".into()), "geocode", c(0.0));
        t.add(Attribution::Unattributed, "featurestg", c(21.7));
        t.summary()
    }

    fn build(previous_total: Option<f64>, available: f64) -> MonthlyReport {
        let s = summary();
        MonthlyReport::build(ReportInputs {
            month: "2026-10".parse().unwrap(),
            source: SourceKind::Usage,
            org_name: Some("Org".into()),
            by_service: &s,
            by_member: &s,
            previous_total: previous_total.map(|p| (c(p), SourceKind::Usage)),
            balance: BalanceSnapshot {
                available_credits: c(available),
                as_of: at("2026-11-01T06:00:00Z"),
            },
            top_n: 1,
            notes: vec![],
        })
    }

    #[test]
    fn figures_shares_and_attribution() {
        let r = build(Some(50.0), 620.0);
        assert_eq!(r.total_credits, c(62.0));
        let ops: Vec<(&str, Option<&str>, f64)> = r
            .operation_types
            .iter()
            .map(|o| (o.label.as_str(), o.code.as_deref(), o.credits.to_f64()))
            .collect();
        assert_eq!(
            ops,
            [
                ("Geocoding", Some("geocode"), 30.2),
                ("Feature Storage", Some("featurestg"), 21.7),
                ("Spatial Analysis", Some("spanalysis"), 10.1)
            ]
        );
        assert_eq!(r.operation_types[0].share_percent, Some(48.71));
        let members: Vec<(&str, f64)> = r
            .members
            .iter()
            .map(|m| (m.username.as_str(), m.credits.to_f64()))
            .collect();
        assert_eq!(members, [("amy", 30.0), ("bob", 10.3)], "zero members are left out");
        assert_eq!(r.top_members.len(), 1);
        assert_eq!(r.unattributed_credits, c(21.7));
        let members_sum: Credits = r.members.iter().map(|m| m.credits).sum::<Credits>() + r.unattributed_credits;
        assert_eq!(members_sum, r.total_credits, "members and unattributed add up exactly");
        let prev = r.previous.unwrap();
        assert_eq!((prev.change_credits, prev.change_percent), (c(12.0), Some(24.0)));
        assert_eq!(prev.month.to_string(), "2026-09");
        // 62 credits over 31 days = 2/day; 620 left = 310 days from 1 November.
        assert_eq!(r.balance.credits_per_day, 2.0);
        assert_eq!(r.balance.days_until_empty, Some(310.0));
        assert_eq!(r.balance.empty_on, NaiveDate::from_ymd_opt(2027, 9, 7));
    }

    #[test]
    fn edge_cases_of_change_and_runway() {
        let r = build(Some(0.0), -5.0);
        assert_eq!(r.previous.unwrap().change_percent, None);
        assert_eq!(r.balance.days_until_empty, Some(0.0));
        let r = build(None, 100.0);
        assert!(r.previous.is_none());
        let empty = CreditSummary::default();
        let r = MonthlyReport::build(ReportInputs {
            month: "2026-10".parse().unwrap(),
            source: SourceKind::ReportItem,
            org_name: None,
            by_service: &empty,
            by_member: &empty,
            previous_total: None,
            balance: BalanceSnapshot {
                available_credits: c(10.0),
                as_of: at("2026-11-01T06:00:00Z"),
            },
            top_n: 10,
            notes: vec![],
        });
        assert_eq!((r.total_credits, r.balance.days_until_empty), (Credits::ZERO, None));
        let json = serde_json::to_value(&r).unwrap();
        assert_eq!(json["source"], "report-item");
        assert_eq!(json["month"], "2026-10");
        let back: MonthlyReport = serde_json::from_value(json).unwrap();
        assert_eq!(back, r);
    }

    #[test]
    fn rates_are_rounded_for_reading() {
        assert_eq!(round6(0.1 + 0.2), 0.3);
        assert_eq!(round6(-1e-9).to_string(), "0");
        assert_eq!(round6(2.0e-4), 0.0002);
    }
}
