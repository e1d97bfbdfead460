//! Which members are running out of credits.
//!
//! The notebook put members with `available < 10 % of assigned` in one list and those under
//! 50 % in another, but applied the rule to unlimited members (`-1/-1` looks like "almost
//! nothing left"), divided by zero on empty allocations, listed disabled members and viewers,
//! and could flag a member with exactly 10 % left through floating-point rounding. The rules
//! here, applied in this order, fix each of those:
//!
//! 1. disabled members → skipped (`disabled`): they cannot sign in, alerts about them are noise;
//! 2. viewers (`viewerUT`) → skipped (`viewer: cannot consume credits`);
//! 3. unlimited members → skipped (`unlimited`): no allocation, nothing to run out of;
//! 4. a balance that is NaN or infinite → skipped (`invalid balance`), never guessed;
//! 5. a negative `available` → [`Level::Critical`], whatever the thresholds: the member has
//!    overspent and ArcGIS has suspended their credit-consuming tools;
//! 6. `assigned == 0` (and `available >= 0`) → skipped (`zero allocation`): a zero allocation
//!    is an administrator's decision to block credit use (or the org's default for new
//!    members), not a member running low, and a top-up policy must not undo it. The
//!    percentage is undefined there, and no division happens;
//! 7. the critical rule, then the warning rule, then [`Level::Ok`].
//!
//! Thresholds are strict: "critical below 10 %" means exactly 10 % left is *not* critical.

use std::cmp::Ordering;
use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use super::member::{Balance, Member};
use super::tolerance::definitely_less;

/// How urgently a member needs attention. Ordered: `Ok < Warning < Critical`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Level {
    /// Enough credits left.
    Ok,
    /// Below the warning threshold: worth a mention in the admins' summary.
    Warning,
    /// Below the critical threshold or overspent: candidates for a top-up.
    Critical,
}

/// One threshold: a member is below it when `available` is strictly less than the limit.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Limit {
    /// A share of the member's allocation, in percent, in `(0, 100]`.
    Percent(f64),
    /// An absolute number of credits, `> 0`: useful when allocations differ widely and what
    /// matters is whether the next job still fits (e.g. notebooks need 30 credits).
    Credits(f64),
}

impl Limit {
    /// Whether `available` is strictly below this limit for an allocation of `assigned`.
    /// The percentage is compared as `available × 100 < percent × assigned`, so no division
    /// happens, and with [`definitely_less`], so exactly-on-the-line values stay above it.
    fn is_below(self, assigned: f64, available: f64) -> bool {
        match self {
            Limit::Percent(p) => definitely_less(available * 100.0, p * assigned),
            Limit::Credits(c) => definitely_less(available, c),
        }
    }

    fn validate(self, rule: Rule) -> Result<Self, ThresholdError> {
        match self {
            Limit::Percent(p) if !(p.is_finite() && p > 0.0 && p <= 100.0) => {
                Err(ThresholdError::PercentOutOfRange { rule, value: p })
            }
            Limit::Credits(c) if !(c.is_finite() && c > 0.0) => {
                Err(ThresholdError::CreditsOutOfRange { rule, value: c })
            }
            limit => Ok(limit),
        }
    }
}

impl fmt::Display for Limit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Limit::Percent(p) => write!(f, "{p}%"),
            Limit::Credits(c) => write!(f, "{c} credits"),
        }
    }
}

/// Parses `"10%"` (a percentage) or `"20 credits"` / `"20cr"` (absolute credits), so that
/// configuration can say which one it means; a bare number is rejected as ambiguous.
impl FromStr for Limit {
    type Err = ThresholdError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let s = s.trim();
        let unparsable = || ThresholdError::Unparsable(s.to_owned());
        let (number, make): (&str, fn(f64) -> Limit) = if let Some(n) = s.strip_suffix('%') {
            (n, Limit::Percent)
        } else if let Some(n) = s.strip_suffix("credits").or_else(|| s.strip_suffix("cr")) {
            (n, Limit::Credits)
        } else {
            return Err(unparsable());
        };
        number.trim().parse::<f64>().map(make).map_err(|_| unparsable())
    }
}

/// Which of the two rules a threshold error is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Rule {
    /// The rule for [`Level::Critical`].
    Critical,
    /// The rule for [`Level::Warning`].
    Warning,
}

impl fmt::Display for Rule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Rule::Critical => "critical",
            Rule::Warning => "warning",
        })
    }
}

/// Why a pair of thresholds was rejected.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ThresholdError {
    /// A percentage outside `(0, 100]` would flag nobody or everybody.
    #[error("the {rule} threshold must be a percentage above 0 and at most 100, got {value}")]
    PercentOutOfRange {
        /// The offending rule.
        rule: Rule,
        /// The rejected value.
        value: f64,
    },
    /// An absolute threshold of zero or less only repeats the overspent rule.
    #[error("the {rule} threshold must be a finite number of credits above 0, got {value}")]
    CreditsOutOfRange {
        /// The offending rule.
        rule: Rule,
        /// The rejected value.
        value: f64,
    },
    /// With the same unit, the critical threshold must flag fewer members than the warning one.
    #[error(
        "the critical threshold ({critical}) must be stricter (lower) than the warning \
         threshold ({warning})"
    )]
    NotStricter {
        /// The critical limit.
        critical: Limit,
        /// The warning limit.
        warning: Limit,
    },
    /// Text that is neither `"<n>%"` nor `"<n> credits"`.
    #[error("cannot read threshold {0:?}: write a percentage like \"10%\" or credits like \"20 credits\"")]
    Unparsable(String),
}

/// The two ordered rules: critical is checked first, then warning.
///
/// The two limits may use different units (e.g. critical below 20 credits, warning below
/// 50 %); a member who meets both is critical because critical is checked first. When both
/// use the same unit, critical must be strictly lower than warning.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(try_from = "ThresholdsSpec")]
pub struct Thresholds {
    critical: Limit,
    warning: Limit,
}

#[derive(Deserialize)]
struct ThresholdsSpec {
    critical: Limit,
    warning: Limit,
}

impl TryFrom<ThresholdsSpec> for Thresholds {
    type Error = ThresholdError;

    fn try_from(spec: ThresholdsSpec) -> Result<Self, Self::Error> {
        Thresholds::new(spec.critical, spec.warning)
    }
}

impl Default for Thresholds {
    /// The notebook's rule: critical below 10 % of the allocation, warning below 50 %.
    fn default() -> Self {
        Thresholds {
            critical: Limit::Percent(10.0),
            warning: Limit::Percent(50.0),
        }
    }
}

impl Thresholds {
    /// Validates each limit and, when both use the same unit, that critical < warning.
    pub fn new(critical: Limit, warning: Limit) -> Result<Self, ThresholdError> {
        let critical = critical.validate(Rule::Critical)?;
        let warning = warning.validate(Rule::Warning)?;
        let stricter = match (critical, warning) {
            (Limit::Percent(c), Limit::Percent(w)) | (Limit::Credits(c), Limit::Credits(w)) => c < w,
            _ => true,
        };
        if stricter {
            Ok(Thresholds { critical, warning })
        } else {
            Err(ThresholdError::NotStricter { critical, warning })
        }
    }

    /// The rule for [`Level::Critical`].
    pub fn critical(&self) -> Limit {
        self.critical
    }

    /// The rule for [`Level::Warning`].
    pub fn warning(&self) -> Limit {
        self.warning
    }
}

/// Why a member was left out of the ranking.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SkipReason {
    /// Disabled members cannot sign in or spend.
    Disabled,
    /// Viewers cannot use credit-consuming tools.
    Viewer,
    /// No allocation: nothing to run out of, and a top-up would impose a limit.
    Unlimited,
    /// Allocation of 0: credit use blocked on purpose.
    ZeroAllocation,
    /// NaN or infinite figures: refuse to guess.
    InvalidBalance,
}

impl fmt::Display for SkipReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            SkipReason::Disabled => "disabled",
            SkipReason::Viewer => "viewer: cannot consume credits",
            SkipReason::Unlimited => "unlimited",
            SkipReason::ZeroAllocation => "zero allocation: credit use blocked on purpose",
            SkipReason::InvalidBalance => "invalid balance: not a finite number",
        })
    }
}

/// The numbers behind a rating, as shown to administrators.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Figures {
    /// The allocation.
    pub assigned: f64,
    /// What is left; negative when overspent.
    pub available: f64,
    /// `assigned − available`.
    pub consumed: f64,
    /// `available / assigned × 100`; `None` when nothing is assigned.
    pub percent_left: Option<f64>,
}

/// The outcome for one member.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(tag = "outcome", rename_all = "snake_case")]
pub enum Classification {
    /// The member was rated.
    Rated {
        /// How urgent.
        level: Level,
        /// The numbers behind it.
        figures: Figures,
    },
    /// The member was deliberately not rated.
    Skipped {
        /// Why.
        reason: SkipReason,
    },
}

impl Classification {
    /// The level, when the member was rated.
    pub fn level(&self) -> Option<Level> {
        match self {
            Classification::Rated { level, .. } => Some(*level),
            Classification::Skipped { .. } => None,
        }
    }
}

/// Applies the rules in the module documentation to one member.
pub fn classify(member: &Member, thresholds: &Thresholds) -> Classification {
    let skip = |reason| Classification::Skipped { reason };
    if member.disabled {
        return skip(SkipReason::Disabled);
    }
    if member.is_viewer() {
        return skip(SkipReason::Viewer);
    }
    let (assigned, available) = match member.balance {
        Balance::Unlimited => return skip(SkipReason::Unlimited),
        Balance::Limited { assigned, available } => (assigned, available),
    };
    if !(assigned.is_finite() && available.is_finite()) {
        return skip(SkipReason::InvalidBalance);
    }
    let level = if available < 0.0 {
        Level::Critical
    } else if assigned <= 0.0 {
        return skip(SkipReason::ZeroAllocation);
    } else if thresholds.critical.is_below(assigned, available) {
        Level::Critical
    } else if thresholds.warning.is_below(assigned, available) {
        Level::Warning
    } else {
        Level::Ok
    };
    let figures = Figures {
        assigned,
        available,
        consumed: assigned - available,
        percent_left: member.balance.percent_left(),
    };
    Classification::Rated { level, figures }
}

/// A rated member, as listed in a summary.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct RatedMember {
    /// Exact username.
    pub username: String,
    /// Display name, for the admins' email.
    pub full_name: Option<String>,
    /// The numbers behind the rating.
    pub figures: Figures,
}

/// A member left out of the ranking, with the reason, so admins can see nobody was lost.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct SkippedMember {
    /// Exact username.
    pub username: String,
    /// Why the member was not rated.
    pub reason: SkipReason,
}

/// Every member of an org, split by level, in a deterministic order.
///
/// Rated lists are sorted by percent left ascending (most urgent first; members with no
/// percentage, i.e. overspent with a zero allocation, come first), then by username.
/// Skipped members are sorted by username.
#[derive(Debug, Clone, PartialEq, Default, Serialize)]
pub struct ClassifiedOrg {
    /// [`Level::Critical`] members.
    pub critical: Vec<RatedMember>,
    /// [`Level::Warning`] members.
    pub warning: Vec<RatedMember>,
    /// [`Level::Ok`] members.
    pub ok: Vec<RatedMember>,
    /// Members not rated.
    pub skipped: Vec<SkippedMember>,
}

impl ClassifiedOrg {
    /// Classifies every member and sorts each list.
    pub fn from_members(members: &[Member], thresholds: &Thresholds) -> Self {
        let mut org = ClassifiedOrg::default();
        for member in members {
            match classify(member, thresholds) {
                Classification::Skipped { reason } => org.skipped.push(SkippedMember {
                    username: member.username.clone(),
                    reason,
                }),
                Classification::Rated { level, figures } => {
                    let rated = RatedMember {
                        username: member.username.clone(),
                        full_name: member.full_name.clone(),
                        figures,
                    };
                    match level {
                        Level::Critical => org.critical.push(rated),
                        Level::Warning => org.warning.push(rated),
                        Level::Ok => org.ok.push(rated),
                    }
                }
            }
        }
        for list in [&mut org.critical, &mut org.warning, &mut org.ok] {
            list.sort_by(by_urgency);
        }
        org.skipped.sort_by(|a, b| a.username.cmp(&b.username));
        org
    }
}

fn by_urgency(a: &RatedMember, b: &RatedMember) -> Ordering {
    let pct = |m: &RatedMember| m.figures.percent_left.unwrap_or(f64::NEG_INFINITY);
    pct(a).total_cmp(&pct(b)).then_with(|| a.username.cmp(&b.username))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limited(username: &str, assigned: f64, available: f64) -> Member {
        Member {
            username: username.into(),
            full_name: None,
            email: None,
            disabled: false,
            user_type: Some("creatorUT".into()),
            role: Some("org_user".into()),
            balance: Balance::Limited { assigned, available },
        }
    }

    fn level(assigned: f64, available: f64, thresholds: &Thresholds) -> Option<Level> {
        classify(&limited("u", assigned, available), thresholds).level()
    }

    fn skip_reason(member: &Member) -> Option<SkipReason> {
        match classify(member, &Thresholds::default()) {
            Classification::Skipped { reason } => Some(reason),
            Classification::Rated { .. } => None,
        }
    }

    #[test]
    fn levels_are_ordered_by_urgency() {
        assert!(Level::Ok < Level::Warning && Level::Warning < Level::Critical);
        assert_eq!([Level::Critical, Level::Ok].iter().max(), Some(&Level::Critical));
    }

    #[test]
    fn exactly_ten_percent_left_is_not_critical() {
        let t = Thresholds::default();
        let cases = [
            (300.0, 30.0),
            (1000.0, 100.0),
            (7.0, 0.7),
            (0.3, 0.03),
            (479.51, 47.951),
            (123.45, 12.345),
            (1e9, 1e8),
            (0.7, 0.07),
        ];
        for (assigned, available) in cases {
            assert_eq!(
                level(assigned, available, &t),
                Some(Level::Warning),
                "{assigned}/{available}"
            );
        }
        // The notebook's division misfires on some of them: the test data can tell the difference.
        assert!(cases.iter().any(|(a, v)| v / a < 0.1));
    }

    #[test]
    fn just_below_ten_percent_is_critical() {
        let t = Thresholds::default();
        for (assigned, available) in [(300.0, 29.99), (1000.0, 99.999), (0.3, 0.0299), (7.0, 0.0)] {
            assert_eq!(
                level(assigned, available, &t),
                Some(Level::Critical),
                "{assigned}/{available}"
            );
        }
    }

    #[test]
    fn exactly_fifty_percent_left_is_ok() {
        let t = Thresholds::default();
        for (assigned, available) in [(300.0, 150.0), (0.3, 0.15), (479.51, 239.755), (1.1, 0.55), (1e9, 5e8)] {
            assert_eq!(
                level(assigned, available, &t),
                Some(Level::Ok),
                "{assigned}/{available}"
            );
        }
        for (assigned, available) in [(300.0, 149.99), (1.1, 0.5499)] {
            assert_eq!(
                level(assigned, available, &t),
                Some(Level::Warning),
                "{assigned}/{available}"
            );
        }
    }

    #[test]
    fn absolute_thresholds_compare_credits() {
        let t = Thresholds::new(Limit::Credits(20.0), Limit::Credits(100.0)).unwrap();
        assert_eq!(level(1000.0, 19.99, &t), Some(Level::Critical));
        assert_eq!(level(1000.0, 20.0, &t), Some(Level::Warning));
        assert_eq!(level(1000.0, 100.0, &t), Some(Level::Ok));
        // 30 of 30 left is 100 %, yet critical by an absolute rule of 50 credits.
        let t = Thresholds::new(Limit::Credits(50.0), Limit::Percent(50.0)).unwrap();
        assert_eq!(level(30.0, 30.0, &t), Some(Level::Critical));
        assert_eq!(level(1000.0, 400.0, &t), Some(Level::Warning));
    }

    #[test]
    fn negative_balances_are_critical_whatever_the_thresholds() {
        let t = Thresholds::new(Limit::Credits(1.0), Limit::Credits(2.0)).unwrap();
        assert_eq!(level(1000.0, -750.0, &t), Some(Level::Critical));
        assert_eq!(level(0.0, -5.0, &Thresholds::default()), Some(Level::Critical));
        let Classification::Rated { figures, .. } = classify(&limited("u", 0.0, -5.0), &t) else {
            panic!("an overspent zero allocation must be rated");
        };
        assert_eq!(figures.percent_left, None);
        assert_eq!(figures.consumed, 5.0);
    }

    #[test]
    fn zero_allocation_is_skipped_without_dividing() {
        assert_eq!(skip_reason(&limited("u", 0.0, 0.0)), Some(SkipReason::ZeroAllocation));
        let absolute = Thresholds::new(Limit::Credits(20.0), Limit::Credits(50.0)).unwrap();
        assert_eq!(level(0.0, 0.0, &absolute), None);
    }

    #[test]
    fn unlimited_disabled_viewer_and_invalid_members_are_skipped() {
        let mut unlimited = limited("u", 0.0, 0.0);
        unlimited.balance = Balance::Unlimited;
        assert_eq!(skip_reason(&unlimited), Some(SkipReason::Unlimited));

        let mut disabled = limited("u", 1000.0, 1.0);
        disabled.disabled = true;
        assert_eq!(skip_reason(&disabled), Some(SkipReason::Disabled));

        let mut viewer = limited("u", 1000.0, 1.0);
        viewer.user_type = Some("viewerUT".into());
        assert_eq!(skip_reason(&viewer), Some(SkipReason::Viewer));
        assert_eq!(SkipReason::Viewer.to_string(), "viewer: cannot consume credits");

        assert_eq!(
            skip_reason(&limited("u", f64::NAN, 1.0)),
            Some(SkipReason::InvalidBalance)
        );
        assert_eq!(
            skip_reason(&limited("u", 10.0, f64::INFINITY)),
            Some(SkipReason::InvalidBalance)
        );
    }

    #[test]
    fn figures_report_consumption_and_percent() {
        let Classification::Rated { level, figures } = classify(&limited("u", 200.0, 50.0), &Thresholds::default())
        else {
            panic!("a limited creator must be rated");
        };
        assert_eq!(level, Level::Warning);
        assert_eq!(
            figures,
            Figures {
                assigned: 200.0,
                available: 50.0,
                consumed: 150.0,
                percent_left: Some(25.0)
            }
        );
    }

    #[test]
    fn threshold_validation() {
        assert!(matches!(
            Thresholds::new(Limit::Percent(50.0), Limit::Percent(10.0)),
            Err(ThresholdError::NotStricter { .. })
        ));
        assert!(matches!(
            Thresholds::new(Limit::Percent(10.0), Limit::Percent(10.0)),
            Err(ThresholdError::NotStricter { .. })
        ));
        assert!(matches!(
            Thresholds::new(Limit::Credits(50.0), Limit::Credits(20.0)),
            Err(ThresholdError::NotStricter { .. })
        ));
        for bad in [0.0, -5.0, 100.5, f64::NAN, f64::INFINITY] {
            assert!(matches!(
                Thresholds::new(Limit::Percent(bad), Limit::Percent(100.0)),
                Err(ThresholdError::PercentOutOfRange {
                    rule: Rule::Critical,
                    ..
                })
            ));
        }
        assert!(matches!(
            Thresholds::new(Limit::Percent(10.0), Limit::Credits(0.0)),
            Err(ThresholdError::CreditsOutOfRange {
                rule: Rule::Warning,
                ..
            })
        ));
        assert!(Thresholds::new(Limit::Percent(99.0), Limit::Percent(100.0)).is_ok());
        assert!(Thresholds::new(Limit::Credits(500.0), Limit::Percent(10.0)).is_ok());
    }

    #[test]
    fn limits_parse_with_an_explicit_unit() {
        assert_eq!("10%".parse::<Limit>(), Ok(Limit::Percent(10.0)));
        assert_eq!(" 12.5 % ".parse::<Limit>(), Ok(Limit::Percent(12.5)));
        assert_eq!("20 credits".parse::<Limit>(), Ok(Limit::Credits(20.0)));
        assert_eq!("20cr".parse::<Limit>(), Ok(Limit::Credits(20.0)));
        assert!(matches!("20".parse::<Limit>(), Err(ThresholdError::Unparsable(_))));
        assert!(matches!("ten%".parse::<Limit>(), Err(ThresholdError::Unparsable(_))));
    }

    #[test]
    fn thresholds_deserialize_with_validation() {
        let ok: Thresholds = serde_json::from_str(r#"{"critical":{"credits":20},"warning":{"percent":50}}"#).unwrap();
        assert_eq!(ok.critical(), Limit::Credits(20.0));
        assert_eq!(ok.warning(), Limit::Percent(50.0));
        let bad = serde_json::from_str::<Thresholds>(r#"{"critical":{"percent":60},"warning":{"percent":50}}"#);
        assert!(bad.unwrap_err().to_string().contains("stricter"));
    }

    #[test]
    fn org_summary_splits_and_sorts_deterministically() {
        let mut members = vec![
            limited("zoe", 100.0, 5.0),
            limited("amy", 100.0, 5.0),
            limited("bob", 100.0, 1.0),
            limited("neg", 0.0, -3.0),
            limited("carl", 100.0, 40.0),
            limited("dan", 100.0, 90.0),
            limited("eve", 100.0, 60.0),
        ];
        let mut unlimited = limited("uma", 0.0, 0.0);
        unlimited.balance = Balance::Unlimited;
        members.push(unlimited);
        let mut disabled = limited("abe", 100.0, 0.0);
        disabled.disabled = true;
        members.push(disabled);

        let org = ClassifiedOrg::from_members(&members, &Thresholds::default());
        let names = |list: &[RatedMember]| list.iter().map(|m| m.username.clone()).collect::<Vec<_>>();
        assert_eq!(names(&org.critical), ["neg", "bob", "amy", "zoe"]);
        assert_eq!(names(&org.warning), ["carl"]);
        assert_eq!(names(&org.ok), ["eve", "dan"]);
        assert_eq!(
            org.skipped,
            [
                SkippedMember {
                    username: "abe".into(),
                    reason: SkipReason::Disabled
                },
                SkippedMember {
                    username: "uma".into(),
                    reason: SkipReason::Unlimited
                },
            ]
        );
        let json = serde_json::to_value(&org).unwrap();
        assert_eq!(json["skipped"][0]["reason"], "disabled");
        assert_eq!(json["critical"][1]["figures"]["percent_left"], 1.0);
    }
}
