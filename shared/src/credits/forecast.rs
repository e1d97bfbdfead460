//! How fast credits are being spent, and how long what is left will last.
//!
//! Balances alone miss how fast credits go: an org with plenty left today but heavy
//! Scheduled Notebooks can run dry between two runs. The burn rate here is the mean
//! credits per day over a window: the credits of every usage bucket inside the window,
//! divided by the window's length in days. Days without usage count as zero simply because
//! they add nothing to the sum. The runway is `available / rate`:
//! - `Some(0.0)` when nothing is left (`available <= 0`), whatever the rate;
//! - `None` ("not running out") when the rate is zero or negative (net refunds), or when the
//!   member is unlimited (nothing to run out of).
//!
//! Balances are exact [`Credits`]; rates and days are `f64`, being estimates.
//!
//! Use a window that ends at the start of today (UTC): today's usage is still incomplete
//! and would lower the rate.

use std::collections::HashMap;

use serde::Serialize;

use super::amount::Credits;
use super::member::{Balance, Member};
use super::usage::{TimeWindow, UsageTotal};

/// A burn rate applied to a balance.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Runway {
    /// Credits left; `None` when unlimited.
    pub available: Option<Credits>,
    /// Mean credits spent per day over the window.
    pub credits_per_day: f64,
    /// Days until `available` reaches 0 at that rate (see the module rules).
    pub days_until_empty: Option<f64>,
}

impl Runway {
    /// Applies `credits_per_day` to `available` (`None` = unlimited).
    pub fn new(available: Option<Credits>, credits_per_day: f64) -> Self {
        Runway {
            available,
            credits_per_day,
            days_until_empty: available.and_then(|a| days_until_empty(a, credits_per_day)),
        }
    }
}

/// One member's runway.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct MemberRunway {
    /// Exact username.
    pub username: String,
    /// The figures.
    #[serde(flatten)]
    pub runway: Runway,
}

/// The org's and every member's runway over one window.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Forecast {
    /// The window the rates were measured over.
    pub window: TimeWindow,
    /// Its length in days.
    pub window_days: f64,
    /// The whole org: every series counts, attributed or not.
    pub org: Runway,
    /// Every member given, soonest empty first (`None` last), then by username.
    pub members: Vec<MemberRunway>,
}

/// Mean credits per day: `credits` spread over the whole window.
pub fn burn_rate(credits: Credits, window: &TimeWindow) -> f64 {
    credits.to_f64() / window.days()
}

/// Days until `available` runs out at `credits_per_day` (rules in the module documentation).
pub fn days_until_empty(available: Credits, credits_per_day: f64) -> Option<f64> {
    if !available.is_positive() {
        Some(0.0)
    } else if !credits_per_day.is_finite() || credits_per_day <= 0.0 {
        None
    } else {
        Some(available.to_f64() / credits_per_day)
    }
}

/// Measures burn rates over `window` and applies them to `members` and `org_available`.
///
/// `totals` are the usage series summed over `window`, matched to members by exact username.
/// Pass series from one `groupby` that includes `username` (e.g. `username,stype`); the org
/// rate sums every series, so mixing groupings would count the same credits twice.
pub fn forecast<'a>(
    members: impl IntoIterator<Item = &'a Member>,
    org_available: Credits,
    totals: &[UsageTotal],
    window: &TimeWindow,
) -> Forecast {
    let mut per_member: HashMap<&str, Credits> = HashMap::new();
    let mut org_credits = Credits::ZERO;
    for t in totals {
        org_credits += t.credits;
        if let Some(username) = t.username.as_deref() {
            *per_member.entry(username).or_default() += t.credits;
        }
    }
    let mut runways: Vec<MemberRunway> = members
        .into_iter()
        .map(|m| {
            let rate = burn_rate(per_member.get(m.username.as_str()).copied().unwrap_or_default(), window);
            let available = match m.balance {
                Balance::Unlimited => None,
                Balance::Limited { available, .. } => Some(available),
            };
            MemberRunway {
                username: m.username.clone(),
                runway: Runway::new(available, rate),
            }
        })
        .collect();
    runways.sort_by(|a, b| {
        let days = |r: &MemberRunway| r.runway.days_until_empty.unwrap_or(f64::INFINITY);
        days(a).total_cmp(&days(b)).then_with(|| a.username.cmp(&b.username))
    });
    Forecast {
        window: *window,
        window_days: window.days(),
        org: Runway::new(Some(org_available), burn_rate(org_credits, window)),
        members: runways,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::credits::usage::{MS_PER_DAY, UsagePoint, UsageSeries};

    fn member(username: &str, balance: Balance) -> Member {
        Member {
            username: username.into(),
            full_name: None,
            disabled: false,
            user_type: None,
            balance,
        }
    }

    fn c(credits: i64) -> Credits {
        Credits::whole(credits)
    }

    fn limited(assigned: i64, available: i64) -> Balance {
        Balance::Limited {
            assigned: c(assigned),
            available: c(available),
        }
    }

    fn daily(username: Option<&str>, credits_by_day: &[(i64, i64)]) -> UsageSeries {
        UsageSeries {
            stype: "geocode".into(),
            etype: None,
            username: username.map(Into::into),
            points: credits_by_day
                .iter()
                .map(|&(day, x)| UsagePoint {
                    bucket: TimeWindow::new(day * MS_PER_DAY, (day + 1) * MS_PER_DAY).unwrap(),
                    credits: c(x),
                })
                .collect(),
        }
    }

    #[test]
    fn days_until_empty_rules() {
        assert_eq!(days_until_empty(c(100), 10.0), Some(10.0));
        assert_eq!(days_until_empty(c(0), 10.0), Some(0.0));
        assert_eq!(days_until_empty(c(-5), 0.0), Some(0.0));
        assert_eq!(days_until_empty(c(100), 0.0), None);
        assert_eq!(days_until_empty(c(100), -1.0), None);
        assert_eq!(days_until_empty(c(100), f64::NAN), None);
        assert_eq!(days_until_empty(c(100), f64::INFINITY), None);
    }

    #[test]
    fn days_without_usage_count_as_zero() {
        // 30 credits on 3 days of a 30-day window: 1 credit/day, not 10.
        let window = TimeWindow::new(0, 30 * MS_PER_DAY).unwrap();
        let s = daily(Some("amy"), &[(0, 10), (5, 10), (29, 10), (30, 500), (-1, 500)]);
        assert_eq!(burn_rate(s.credits_in(&window), &window), 1.0);
        // Partial days are honoured: 12 credits in half a day = 24/day.
        assert_eq!(burn_rate(c(12), &TimeWindow::new(0, MS_PER_DAY / 2).unwrap()), 24.0);
    }

    #[test]
    fn forecast_for_members_and_org() {
        let window = TimeWindow::new(0, 10 * MS_PER_DAY).unwrap();
        let members = [
            member("amy", limited(100, 50)),
            member("bob", limited(100, 50)),
            member("cat", Balance::Unlimited),
            member("dan", limited(100, -1)),
        ];
        let series = [
            daily(Some("amy"), &[(1, 20), (2, 30)]),
            daily(Some("bob"), &[(1, 5)]),
            daily(Some("cat"), &[(3, 100)]),
            daily(None, &[(4, 45)]),
            daily(Some("stranger"), &[(4, 0)]),
        ];
        let totals: Vec<UsageTotal> = series.iter().map(|s| UsageTotal::of(s, &window)).collect();
        let f = forecast(&members, c(1000), &totals, &window);
        assert_eq!(f.window_days, 10.0);
        assert_eq!(
            f.org,
            Runway {
                available: Some(c(1000)),
                credits_per_day: 20.0,
                days_until_empty: Some(50.0)
            }
        );
        let order: Vec<(&str, Option<f64>)> = f
            .members
            .iter()
            .map(|m| (m.username.as_str(), m.runway.days_until_empty))
            .collect();
        assert_eq!(
            order,
            [
                ("dan", Some(0.0)),
                ("amy", Some(10.0)),
                ("bob", Some(100.0)),
                ("cat", None)
            ]
        );
        let cat = &f.members[3].runway;
        assert_eq!((cat.available, cat.credits_per_day), (None, 10.0));
        let json = serde_json::to_value(&f).unwrap();
        assert_eq!(
            json["members"][1],
            serde_json::json!({"username": "amy", "available": 50, "credits_per_day": 5.0, "days_until_empty": 10.0})
        );
    }

    #[test]
    fn members_without_usage_never_run_out() {
        let window = TimeWindow::new(0, MS_PER_DAY).unwrap();
        let members = [member("idle", limited(10, 10))];
        let f = forecast(&members, Credits::ZERO, &[], &window);
        assert_eq!(f.members[0].runway.days_until_empty, None);
        assert_eq!(f.org.days_until_empty, Some(0.0));
    }
}
