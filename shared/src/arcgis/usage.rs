//! Credit usage time series (`portals/self/usage`; see docs/arcgis.md, "Usage buckets"):
//! synchronous JSON with no item left behind, grouped by service type or by member. The series
//! are read by the domain's parser ([`crate::credits::usage::UsageSeries`]), which accepts
//! values as strings with exponents (`"2.0E-4"`) or as numbers and rejects anything else
//! instead of counting it as 0.
//!
//! A query names the window whose buckets it wants and how labels are read ([`Buckets`]);
//! the request spans one bucket more on each side, so the buckets at the window's edges come
//! back whichever end of its bucket a label names, and only the buckets inside the window are
//! returned.

pub use crate::credits::usage::{BucketLabel, Buckets, UsagePeriod};
use crate::credits::usage::{TimeWindow, UsageSeries};

use super::client::Client;
use super::endpoint::USAGE;
use super::error::Error;

/// What to ask `portals/self/usage` for.
#[derive(Debug, Clone, PartialEq)]
pub struct UsageQuery {
    /// The buckets wanted: those wholly inside this half-open window (epoch ms).
    pub window: TimeWindow,
    /// Bucket size and label convention.
    pub buckets: Buckets,
    /// `groupby` dimensions, e.g. `["stype", "etype"]` or `["username", "userorgid"]`.
    pub group_by: Vec<String>,
    /// `vars`; must include `credits`, which every series is read for.
    pub vars: Vec<String>,
}

impl UsageQuery {
    /// Credits and counts per service and event type (the credits dashboard's view).
    pub fn by_service(window: TimeWindow, buckets: Buckets) -> Self {
        UsageQuery {
            window,
            buckets,
            group_by: vec!["stype".into(), "etype".into()],
            vars: vec!["credits".into(), "num".into()],
        }
    }

    /// Credits per member (may include users from outside the org; see docs/arcgis.md,
    /// "Usage buckets").
    pub fn by_member(window: TimeWindow, buckets: Buckets) -> Self {
        UsageQuery {
            window,
            buckets,
            group_by: vec!["username".into(), "userorgid".into()],
            vars: vec!["credits".into()],
        }
    }
}

impl Client {
    /// Reads credit usage: one series per group, holding the buckets inside the query's
    /// window (its labels read per `query.buckets`).
    pub async fn usage(&self, query: &UsageQuery) -> Result<Vec<UsageSeries>, Error> {
        let what = format!(
            "portals/self/usage ({}..{} ms, {}, labels at the bucket {}, by {})",
            query.window.start_ms(),
            query.window.end_ms(),
            query.buckets.period.as_str(),
            query.buckets.label.as_str(),
            query.group_by.join(",")
        );
        if !query.vars.iter().any(|v| v == "credits") {
            return Err(Error::InvalidInput {
                what,
                reason: "vars must include credits".into(),
            });
        }
        let sent = query
            .buckets
            .request_window(&query.window)
            .and_then(|w| {
                // Never ask about the future (unverified whether ArcGIS accepts it): the padding
                // past the window's end stops at now, unless the window itself reaches further.
                let now = chrono::Utc::now().timestamp_millis();
                TimeWindow::new(w.start_ms(), w.end_ms().min(now.max(query.window.end_ms())))
            })
            .map_err(|e| Error::InvalidInput {
                what: what.clone(),
                reason: e.to_string(),
            })?;
        let url = self.url(&["portals", "self", "usage"]);
        let params = [
            ("startTime", sent.start_ms().to_string()),
            ("endTime", sent.end_ms().to_string()),
            ("period", query.buckets.period.as_str().to_owned()),
            ("groupby", query.group_by.join(",")),
            ("vars", query.vars.join(",")),
        ];
        let body = self.call(USAGE, &url, &params, &what).await?;
        let mut series = UsageSeries::from_response(&body, query.buckets).map_err(|e| Error::Unexpected {
            what,
            reason: e.to_string(),
        })?;
        for s in &mut series {
            s.points.retain(|p| query.window.covers(&p.bucket));
        }
        Ok(series)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn presets() {
        let w = TimeWindow::new(1_672_099_200_000, 1_672_704_000_000).unwrap();
        let q = UsageQuery::by_service(w, Buckets::daily(BucketLabel::Start));
        assert_eq!(
            (q.group_by.join(","), q.vars.join(",")),
            ("stype,etype".into(), "credits,num".into())
        );
        let q = UsageQuery::by_member(
            w,
            Buckets {
                period: UsagePeriod::Month,
                label: BucketLabel::End,
            },
        );
        assert_eq!(
            (q.group_by.join(","), q.buckets.period.as_str()),
            ("username,userorgid".into(), "1m")
        );
    }
}
