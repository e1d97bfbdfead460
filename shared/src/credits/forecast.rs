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
    let spent = Spent::of_totals(totals);
    let mut runways: Vec<MemberRunway> = members
        .into_iter()
        .map(|m| MemberRunway {
            username: m.username.clone(),
            runway: spent.runway(m, window),
        })
        .collect();
    runways.sort_by(|a, b| {
        let days = |r: &MemberRunway| r.runway.days_until_empty.unwrap_or(f64::INFINITY);
        days(a).total_cmp(&days(b)).then_with(|| a.username.cmp(&b.username))
    });
    Forecast {
        window: *window,
        window_days: window.days(),
        org: spent.org_runway(org_available, window),
        members: runways,
    }
}

/// Credits spent over a window by each member and by the whole org: all a forecast reads of
/// the usage answer, a few dozen bytes a member. A scan keeps this while the member listing
/// runs, then rates only the members it reports, instead of a runway for every member.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Spent {
    /// Every series, attributed or not.
    pub org: Credits,
    per_member: HashMap<Box<str>, Credits>,
}

impl Spent {
    /// Adds one series' credits: to the org, and to `username`'s sum when the series is
    /// attributed. Series from one `groupby` that includes `username` (as for [`forecast`]).
    pub fn add(&mut self, username: Option<String>, credits: Credits) {
        self.org += credits;
        if let Some(username) = username {
            *self.per_member.entry(username.into_boxed_str()).or_default() += credits;
        }
    }

    /// The sums of `totals`.
    pub fn of_totals(totals: &[UsageTotal]) -> Spent {
        let mut spent = Spent::default();
        for t in totals {
            spent.add(t.username.clone(), t.credits);
        }
        spent
    }

    /// What `username` (exact) spent; zero when no series names them.
    pub fn by(&self, username: &str) -> Credits {
        self.per_member.get(username).copied().unwrap_or_default()
    }

    /// `member`'s runway at the rate they spent over `window`.
    pub fn runway(&self, member: &Member, window: &TimeWindow) -> Runway {
        let available = match member.balance {
            Balance::Unlimited => None,
            Balance::Limited { available, .. } => Some(available),
        };
        Runway::new(available, burn_rate(self.by(&member.username), window))
    }

    /// The org's runway: `available` at the rate the whole org spent over `window`.
    pub fn org_runway(&self, available: Credits, window: &TimeWindow) -> Runway {
        Runway::new(Some(available), burn_rate(self.org, window))
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
