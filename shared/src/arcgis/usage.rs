//! Credit usage time series (`portals/self/usage`; see docs/arcgis.md, "Usage buckets"):
//! synchronous JSON with no item left behind, grouped by service type or by member. The series
//! are read by the domain's parser ([`crate::credits::usage::UsageSeries`]), which accepts
//! values as strings with exponents (`"2.0E-4"`) or as numbers and rejects anything else
//! instead of counting it as 0.

use crate::credits::usage::{TimeWindow, UsageSeries};

use super::client::Client;
use super::endpoint::USAGE;
use super::error::Error;

/// Bucket size of the series.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UsagePeriod {
    /// `1h`
    Hour,
    /// `1d`
    Day,
    /// `1w`
    Week,
    /// `1m`
    Month,
}

impl UsagePeriod {
    /// The wire value.
    pub fn as_str(self) -> &'static str {
        match self {
            UsagePeriod::Hour => "1h",
            UsagePeriod::Day => "1d",
            UsagePeriod::Week => "1w",
            UsagePeriod::Month => "1m",
        }
    }
}

/// What to ask `portals/self/usage` for.
#[derive(Debug, Clone, PartialEq)]
pub struct UsageQuery {
    /// The window, half-open, epoch ms.
    pub window: TimeWindow,
    /// Bucket size.
    pub period: UsagePeriod,
    /// `groupby` dimensions, e.g. `["stype", "etype"]` or `["username", "userorgid"]`.
    pub group_by: Vec<String>,
    /// `vars`; must include `credits`, which every series is read for.
    pub vars: Vec<String>,
}

impl UsageQuery {
    /// Credits and counts per service and event type (the credits dashboard's view).
    pub fn by_service(window: TimeWindow, period: UsagePeriod) -> Self {
        UsageQuery {
            window,
            period,
            group_by: vec!["stype".into(), "etype".into()],
            vars: vec!["credits".into(), "num".into()],
        }
    }

    /// Credits per member (may include users from outside the org; see docs/arcgis.md,
    /// "Usage buckets").
    pub fn by_member(window: TimeWindow, period: UsagePeriod) -> Self {
        UsageQuery {
            window,
            period,
            group_by: vec!["username".into(), "userorgid".into()],
            vars: vec!["credits".into()],
        }
    }
}

impl Client {
    /// Reads credit usage for a window, one series per group.
    pub async fn usage(&self, query: &UsageQuery) -> Result<Vec<UsageSeries>, Error> {
        let what = format!(
            "portals/self/usage ({}..{} ms, {}, by {})",
            query.window.start_ms(),
            query.window.end_ms(),
            query.period.as_str(),
            query.group_by.join(",")
        );
        if !query.vars.iter().any(|v| v == "credits") {
            return Err(Error::InvalidInput {
                what,
                reason: "vars must include credits".into(),
            });
        }
        let url = self.url(&["portals", "self", "usage"]);
        let params = [
            ("startTime", query.window.start_ms().to_string()),
            ("endTime", query.window.end_ms().to_string()),
            ("period", query.period.as_str().to_owned()),
            ("groupby", query.group_by.join(",")),
            ("vars", query.vars.join(",")),
        ];
        let body = self.call(USAGE, &url, &params, &what).await?;
        UsageSeries::from_response(&body).map_err(|e| Error::Unexpected {
            what,
            reason: e.to_string(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn presets() {
        let w = TimeWindow::new(1_672_099_200_000, 1_672_704_000_000).unwrap();
        let q = UsageQuery::by_service(w, UsagePeriod::Day);
        assert_eq!(
            (q.group_by.join(","), q.vars.join(",")),
            ("stype,etype".into(), "credits,num".into())
        );
        let q = UsageQuery::by_member(w, UsagePeriod::Month);
        assert_eq!(
            (q.group_by.join(","), q.period.as_str()),
            ("username,userorgid".into(), "1m")
        );
    }
}
