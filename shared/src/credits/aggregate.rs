//! Credits per service type and per member, for reports.
//!
//! A per-service total alone hides who spent what, and dropping what cannot be attributed
//! makes the per-member list disagree with the total. Here usage without a member (series
//! not grouped by username, report rows with an empty username) is kept in an explicit
//! [`Attribution::Unattributed`] bucket, so the per-member list always adds up to the total.
//! Services are bucketed by readable label ([`service_types::canonical`]), so usage-API codes
//! and report headers merge.

use std::cmp::Ordering;
use std::collections::BTreeMap;
use std::fmt;

use serde::{Deserialize, Serialize};

use super::amount::Credits;
use super::report_csv::CreditsReport;
use super::service_types;
use super::usage::{TimeWindow, UsageSeries, UsageTotal};

/// Who credits are charged to.
///
/// Ordered members first (by username), then `Unattributed`, which gives ties a
/// deterministic order.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(tag = "attribution", content = "username", rename_all = "snake_case")]
pub enum Attribution {
    /// A named member (exact username).
    Member(String),
    /// Usage the source did not attribute to anyone.
    Unattributed,
}

impl Attribution {
    /// `None`, empty or blank usernames are unattributed; others are kept verbatim (trimmed).
    pub fn from_username(username: Option<&str>) -> Self {
        match username.map(str::trim) {
            Some(u) if !u.is_empty() => Attribution::Member(u.to_owned()),
            _ => Attribution::Unattributed,
        }
    }

    /// The username, when attributed.
    pub fn username(&self) -> Option<&str> {
        match self {
            Attribution::Member(u) => Some(u),
            Attribution::Unattributed => None,
        }
    }
}

impl fmt::Display for Attribution {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Attribution::Member(u) => f.write_str(u),
            Attribution::Unattributed => f.write_str("(unattributed)"),
        }
    }
}

/// Credits of one service type.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ServiceCredits {
    /// Readable label (or the unknown code / header).
    pub service: String,
    /// Credits consumed.
    pub credits: Credits,
}

/// Credits of one member (or the unattributed bucket).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct MemberCredits {
    /// Who.
    #[serde(flatten)]
    pub member: Attribution,
    /// Credits consumed.
    pub credits: Credits,
}

/// The aggregated report. Every list is sorted by credits descending, ties by name.
#[derive(Debug, Clone, PartialEq, Default, Serialize)]
pub struct CreditSummary {
    /// All credits counted.
    pub total: Credits,
    /// Per service type; every service seen appears, even at 0.
    pub by_service: Vec<ServiceCredits>,
    /// Per member; every member seen appears, even at 0.
    pub by_member: Vec<MemberCredits>,
}

/// Accumulates credits from one or more sources; [`CreditTally::summary`] sorts them. No
/// member × service pairs: no report shows them, and at 100,000 members they cost more memory
/// than the members themselves.
#[derive(Debug, Clone, Default)]
pub struct CreditTally {
    by_service: BTreeMap<String, Credits>,
    by_member: BTreeMap<Attribution, Credits>,
}

impl CreditTally {
    /// Counts `credits` for `member` and `service` (a code or a label).
    pub fn add(&mut self, member: Attribution, service: &str, credits: Credits) {
        self.add_service(service, credits);
        *self.by_member.entry(member).or_default() += credits;
    }

    /// Counts `credits` for `service` (a code or a label); a service's name is allocated once,
    /// not once per member.
    fn add_service(&mut self, service: &str, credits: Credits) {
        let service = service_types::canonical(service);
        match self.by_service.get_mut(service) {
            Some(sum) => *sum += credits,
            None => {
                self.by_service.insert(service.to_owned(), credits);
            }
        }
    }

    /// Counts a series' total (already summed over the window wanted).
    pub fn add_total(&mut self, total: &UsageTotal) {
        let member = Attribution::from_username(total.username.as_deref());
        self.add(member, &total.stype, total.credits);
    }

    /// Counts the points of `series` inside `window`.
    pub fn add_series(&mut self, series: &UsageSeries, window: &TimeWindow) {
        let member = Attribution::from_username(series.username.as_deref());
        self.add(member, &series.stype, series.credits_in(window));
    }

    /// Counts every cell of a parsed credits report (total rows are already excluded). Every
    /// member row and every credit column is counted, at zero when it has no credits.
    pub fn add_report(&mut self, report: &CreditsReport) {
        for column in &report.columns {
            self.by_service
                .entry(service_types::canonical(&column.service).to_owned())
                .or_default();
        }
        for row in &report.rows {
            let member = Attribution::from_username(row.username.as_deref());
            let mut row_credits = Credits::ZERO;
            for &(k, credits) in &row.cells {
                self.add_service(&report.columns[k].service, credits);
                row_credits += credits;
            }
            *self.by_member.entry(member).or_default() += row_credits;
        }
    }

    /// The sorted summary.
    pub fn summary(&self) -> CreditSummary {
        let mut by_service: Vec<ServiceCredits> = self
            .by_service
            .iter()
            .map(|(service, &credits)| ServiceCredits {
                service: service.clone(),
                credits,
            })
            .collect();
        by_service.sort_by(|a, b| descending(a.credits, b.credits).then_with(|| a.service.cmp(&b.service)));

        let mut by_member: Vec<MemberCredits> = self
            .by_member
            .iter()
            .map(|(member, &credits)| MemberCredits {
                member: member.clone(),
                credits,
            })
            .collect();
        by_member.sort_by(|a, b| descending(a.credits, b.credits).then_with(|| a.member.cmp(&b.member)));

        CreditSummary {
            total: self.by_service.values().sum(),
            by_service,
            by_member,
        }
    }
}

fn descending(a: Credits, b: Credits) -> Ordering {
    b.cmp(&a)
}

/// Aggregates usage series over `window`.
///
/// Pass series from *one* `groupby` (e.g. `username,stype`): a per-user and a per-service
/// query over the same period describe the same credits twice.
pub fn summarize_usage(series: &[UsageSeries], window: &TimeWindow) -> CreditSummary {
    let mut tally = CreditTally::default();
    for s in series {
        tally.add_series(s, window);
    }
    tally.summary()
}

/// Aggregates usage totals (each series already summed over the window wanted).
///
/// Pass totals from *one* `groupby`, as for [`summarize_usage`].
pub fn summarize_totals(totals: &[UsageTotal]) -> CreditSummary {
    let mut tally = CreditTally::default();
    for t in totals {
        tally.add_total(t);
    }
    tally.summary()
}

/// Aggregates a parsed credits report.
pub fn summarize_report(report: &CreditsReport) -> CreditSummary {
    let mut tally = CreditTally::default();
    tally.add_report(report);
    tally.summary()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::credits::report_csv;
    use crate::credits::usage::UsagePoint;

    fn series(stype: &str, username: Option<&str>, points: &[(i64, f64)]) -> UsageSeries {
        UsageSeries {
            stype: stype.into(),
            etype: None,
            username: username.map(Into::into),
            // One-millisecond buckets: each point lies inside a window exactly when its
            // timestamp does.
            points: points
                .iter()
                .map(|&(ts, x)| UsagePoint {
                    bucket: TimeWindow::new(ts, ts + 1).unwrap(),
                    credits: c(x),
                })
                .collect(),
        }
    }

    fn c(x: f64) -> Credits {
        Credits::from_f64(x).unwrap()
    }

    fn member(u: &str) -> Attribution {
        Attribution::Member(u.into())
    }

    #[test]
    fn usage_is_summed_per_service_member_and_pair() {
        let window = TimeWindow::new(0, 100).unwrap();
        let data = [
            series("geocode", Some("amy"), &[(0, 1.0), (50, 2.0), (100, 1000.0)]),
            series("spanalysis", Some("amy"), &[(10, 4.0)]),
            series("geocode", Some("bob"), &[(10, 3.0)]),
            series("tiles", None, &[(10, 5.0)]),
            series("newthing", Some(""), &[(10, 0.5)]),
            series("geocode", Some("carl"), &[(10, 0.0)]),
        ];
        let s = summarize_usage(&data, &window);
        assert_eq!(s.total, c(15.5));
        let services: Vec<(&str, f64)> = s
            .by_service
            .iter()
            .map(|x| (x.service.as_str(), x.credits.to_f64()))
            .collect();
        assert_eq!(
            services,
            [
                ("Geocoding", 6.0),
                ("Tile Generation", 5.0),
                ("Spatial Analysis", 4.0),
                ("newthing", 0.5)
            ]
        );
        let members: Vec<(Attribution, f64)> = s
            .by_member
            .iter()
            .map(|x| (x.member.clone(), x.credits.to_f64()))
            .collect();
        assert_eq!(
            members,
            [
                (member("amy"), 7.0),
                (Attribution::Unattributed, 5.5),
                (member("bob"), 3.0),
                (member("carl"), 0.0)
            ]
        );
        let member_sum: Credits = s.by_member.iter().map(|m| m.credits).sum();
        assert_eq!(member_sum, s.total);
    }

    #[test]
    fn ties_are_broken_by_name_with_unattributed_last() {
        let mut t = CreditTally::default();
        t.add(Attribution::Unattributed, "tiles", c(2.0));
        t.add(member("zed"), "geocode", c(2.0));
        t.add(member("abe"), "geocode", c(2.0));
        let s = t.summary();
        let order: Vec<String> = s.by_member.iter().map(|m| m.member.to_string()).collect();
        assert_eq!(order, ["abe", "zed", "(unattributed)"]);
        assert_eq!(s.by_service[0].service, "Geocoding");
    }

    #[test]
    fn codes_and_labels_merge_across_sources() {
        let report = report_csv::parse(b"p\np\np\nUsername,Geocoding,Full Name\namy,2,Amy A\n,1,\nTotal,3,\n").unwrap();
        let mut t = CreditTally::default();
        t.add_report(&report);
        t.add_series(
            &series("geocode", Some("amy"), &[(5, 0.5)]),
            &TimeWindow::new(0, 10).unwrap(),
        );
        let s = t.summary();
        assert_eq!(s.total, c(3.5));
        assert_eq!(
            s.by_service,
            [ServiceCredits {
                service: "Geocoding".into(),
                credits: c(3.5)
            }]
        );
        assert_eq!(
            s.by_member[0],
            MemberCredits {
                member: member("amy"),
                credits: c(2.5)
            }
        );
        assert_eq!(
            s.by_member[1],
            MemberCredits {
                member: Attribution::Unattributed,
                credits: c(1.0)
            }
        );
        assert_eq!(summarize_report(&report).total, c(3.0));
    }

    #[test]
    fn simulator_report_layout_end_to_end() {
        // The layout tests/portal-sim serves: preamble, `Username,Full Name,<labels>`,
        // an unattributed row and a `Total` row with an empty Full Name cell.
        let csv = "Credits Report\n\"Organization: Example (abc)\"\nPeriod: 2024-03-01 to 2024-03-31 (UTC)\n\
                   Username,Full Name,Geocoding,Notebooks,Feature Storage\n\
                   jdoe,\"John \"\"JD\"\" Doe\",1.5,0.25,\n\
                   vera,\"Vera Viewer\",,,\n\
                   ,\"Organization (not attributed to a member)\",3,,7.125\n\
                   Total,,4.5,0.25,7.125\n";
        let report = report_csv::parse(csv.as_bytes()).unwrap();
        assert!(report.warnings.is_empty(), "{:?}", report.warnings);
        assert_eq!(report.label_columns, ["Full Name"]);
        let s = summarize_report(&report);
        assert_eq!(s.total, c(11.875));
        let services: Vec<(&str, f64)> = s
            .by_service
            .iter()
            .map(|x| (x.service.as_str(), x.credits.to_f64()))
            .collect();
        assert_eq!(
            services,
            [("Feature Storage", 7.125), ("Geocoding", 4.5), ("Notebooks", 0.25)]
        );
        let members: Vec<(Attribution, f64)> = s
            .by_member
            .iter()
            .map(|x| (x.member.clone(), x.credits.to_f64()))
            .collect();
        assert_eq!(
            members,
            [
                (Attribution::Unattributed, 10.125),
                (member("jdoe"), 1.75),
                (member("vera"), 0.0)
            ]
        );
    }

    #[test]
    fn attribution_from_usernames_and_json_shape() {
        assert_eq!(Attribution::from_username(None), Attribution::Unattributed);
        assert_eq!(Attribution::from_username(Some("  ")), Attribution::Unattributed);
        assert_eq!(Attribution::from_username(Some("jdoe")).username(), Some("jdoe"));
        let json = serde_json::to_value(MemberCredits {
            member: member("jdoe"),
            credits: c(1.0),
        })
        .unwrap();
        assert_eq!(
            json,
            serde_json::json!({"attribution": "member", "username": "jdoe", "credits": 1})
        );
        let json = serde_json::to_value(MemberCredits {
            member: Attribution::Unattributed,
            credits: c(1.0),
        })
        .unwrap();
        assert_eq!(json, serde_json::json!({"attribution": "unattributed", "credits": 1}));
    }

    #[test]
    fn empty_input_gives_an_empty_summary() {
        let s = summarize_usage(&[], &TimeWindow::new(0, 1).unwrap());
        assert_eq!(s, CreditSummary::default());
    }
}
