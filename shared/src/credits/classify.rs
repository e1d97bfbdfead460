//! Which members are running out of credits.
//!
//! The rule is simple: `available < 10 % of assigned` is critical, `< 50 %` a warning. Applied
//! naively it flags unlimited members (`-1/-1` looks like "almost nothing left"), divides by
//! zero on empty allocations, lists disabled members and viewers, and can flag a member with
//! exactly 10 % left through floating-point rounding. The rules here, applied in this order,
//! avoid each of those:
//!
//! 1. disabled members → skipped (`disabled`): they cannot sign in, alerts about them are noise;
//! 2. viewers (`viewerUT`) → skipped (`viewer: cannot consume credits`);
//! 3. unlimited members → skipped (`unlimited`): no allocation, nothing to run out of;
//! 4. a negative `available` → [`Level::Critical`], whatever the thresholds: the member has
//!    overspent and ArcGIS has suspended their credit-consuming tools;
//! 5. `assigned == 0` (and `available >= 0`) → skipped (`zero allocation`): a zero allocation
//!    is an administrator's decision to block credit use (or the org's default for new
//!    members), not a member running low, and a top-up policy must not undo it. The
//!    percentage is undefined there, and no division happens;
//! 6. the critical rule, then the warning rule, then [`Level::Ok`].
//!
//! Thresholds are strict: "critical below 10 %" means exactly 10 % left is *not* critical.
//! Amounts are exact ([`Credits`]) and percentages are compared by integer
//! cross-multiplication ([`Percent::is_above_share`]), so "exactly 10 %" is exact whatever
//! the numbers (a float division flags 0.7 of 7 as below 10 %: `0.7 / 7.0 < 0.1` is true).

use std::cmp::Ordering;
use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use super::amount::Credits;
use super::member::{Balance, Member};
use super::percent::Percent;

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
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Limit {
    /// A share of the member's allocation, in percent, in `(0, 100]`.
    Percent(Percent),
    /// An absolute number of credits, `> 0`: useful when allocations differ widely and what
    /// matters is whether the next job still fits (e.g. ArcGIS Notebooks need 30 credits).
    Credits(Credits),
}

impl Limit {
    /// Whether `available` is strictly below this limit for an allocation of `assigned`,
    /// exactly (no division, no floating point).
    fn is_below(self, assigned: Credits, available: Credits) -> bool {
        match self {
            Limit::Percent(p) => p.is_above_share(available, assigned),
            Limit::Credits(c) => available < c,
        }
    }

    fn validate(self, rule: Rule) -> Result<Self, ThresholdError> {
        match self {
            Limit::Percent(p) if p.is_zero() => Err(ThresholdError::PercentOutOfRange {
                rule,
                value: p.to_string(),
            }),
            Limit::Credits(c) if !c.is_positive() => Err(ThresholdError::CreditsOutOfRange {
                rule,
                value: c.to_string(),
            }),
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
        let unparsable = || ThresholdError::Unparsable(s.chars().take(40).collect());
        if let Some(n) = s.strip_suffix('%') {
            Percent::parse(n).map(Limit::Percent).map_err(|_| unparsable())
        } else if let Some(n) = s.strip_suffix("credits").or_else(|| s.strip_suffix("cr")) {
            Credits::parse_exact(n.trim())
                .map(Limit::Credits)
                .map_err(|_| unparsable())
        } else {
            Err(unparsable())
        }
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
        value: String,
    },
    /// An absolute threshold of zero or less only repeats the overspent rule.
    #[error("the {rule} threshold must be a number of credits above 0, got {value}")]
    CreditsOutOfRange {
        /// The offending rule.
        rule: Rule,
        /// The rejected value.
        value: String,
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
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
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

/// 10 % and 50 %, checked when compiled: a constant that is not a percentage does not build.
const DEFAULT_CRITICAL: Percent = Percent::whole(10).expect("10 is a percentage");
const DEFAULT_WARNING: Percent = Percent::whole(50).expect("50 is a percentage");

impl Default for Thresholds {
    /// Critical below 10 % of the allocation, warning below 50 % (the template's defaults).
    fn default() -> Self {
        Thresholds {
            critical: Limit::Percent(DEFAULT_CRITICAL),
            warning: Limit::Percent(DEFAULT_WARNING),
        }
    }
}

impl Thresholds {
    /// Validates each limit and, when both use the same unit, that critical < warning.
    pub fn new(critical: Limit, warning: Limit) -> Result<Self, ThresholdError> {
        let critical = critical.validate(Rule::Critical)?;
        let warning = warning.validate(Rule::Warning)?;
        let stricter = match (critical, warning) {
            (Limit::Percent(c), Limit::Percent(w)) => c < w,
            (Limit::Credits(c), Limit::Credits(w)) => c < w,
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
}

impl fmt::Display for SkipReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            SkipReason::Disabled => "disabled",
            SkipReason::Viewer => "viewer: cannot consume credits",
            SkipReason::Unlimited => "unlimited",
            SkipReason::ZeroAllocation => "zero allocation: credit use blocked on purpose",
        })
    }
}

/// The numbers behind a rating, as shown to administrators.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Figures {
    /// The allocation.
    pub assigned: Credits,
    /// What is left; negative when overspent.
    pub available: Credits,
    /// `assigned − available`.
    pub consumed: Credits,
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
    let level = if available.is_negative() {
        Level::Critical
    } else if assigned.is_zero() {
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
    /// How many members are at [`Level::Ok`]: counted, not listed, since no report names
    /// them and a list would copy most of the org (at 100,000 members, megabytes).
    pub ok: usize,
    /// Members not rated.
    pub skipped: Vec<SkippedMember>,
}

impl ClassifiedOrg {
    /// Classifies every member and sorts each list (members at [`Level::Ok`] are counted).
    pub fn from_members(members: &[Member], thresholds: &Thresholds) -> Self {
        let mut org = ClassifiedOrg::default();
        for member in members {
            match classify(member, thresholds) {
                Classification::Skipped { reason } => org.skipped.push(SkippedMember {
                    username: member.username.clone(),
                    reason,
                }),
                Classification::Rated { level, figures } => {
                    let list = match level {
                        Level::Critical => &mut org.critical,
                        Level::Warning => &mut org.warning,
                        Level::Ok => {
                            org.ok += 1;
                            continue;
                        }
                    };
                    list.push(RatedMember {
                        username: member.username.clone(),
                        full_name: member.full_name.clone(),
                        figures,
                    });
                }
            }
        }
        for list in [&mut org.critical, &mut org.warning] {
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

    fn c(text: &str) -> Credits {
        Credits::parse_exact(text).unwrap()
    }

    fn p(text: &str) -> Percent {
        Percent::parse(text).unwrap()
    }

    fn limited(username: &str, assigned: &str, available: &str) -> Member {
        Member {
            username: username.into(),
            full_name: None,
            disabled: false,
            user_type: Some("creatorUT".into()),
            balance: Balance::Limited {
                assigned: c(assigned),
                available: c(available),
            },
        }
    }

    fn level(assigned: &str, available: &str, thresholds: &Thresholds) -> Option<Level> {
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
            ("300", "30"),
            ("1000", "100"),
            ("7", "0.7"),
            ("0.3", "0.03"),
            ("479.51", "47.951"),
            ("123.45", "12.345"),
            ("1000000000", "100000000"),
            ("0.7", "0.07"),
        ];
        for (assigned, available) in cases {
            assert_eq!(
                level(assigned, available, &t),
                Some(Level::Warning),
                "{assigned}/{available}"
            );
        }
        // A float division misfires on some of them: the data can tell the difference.
        assert!(
            cases
                .iter()
                .any(|(a, v)| v.parse::<f64>().unwrap() / a.parse::<f64>().unwrap() < 0.1)
        );
    }

    #[test]
    fn just_below_ten_percent_is_critical() {
        let t = Thresholds::default();
        for (assigned, available) in [("300", "29.99"), ("1000", "99.999"), ("0.3", "0.0299"), ("7", "0")] {
            assert_eq!(
                level(assigned, available, &t),
                Some(Level::Critical),
                "{assigned}/{available}"
            );
        }
        // One micro-credit below the line is below it.
        assert_eq!(level("1000", "99.999999", &t), Some(Level::Critical));
    }

    #[test]
    fn exactly_fifty_percent_left_is_ok() {
        let t = Thresholds::default();
        for (assigned, available) in [
            ("300", "150"),
            ("0.3", "0.15"),
            ("479.51", "239.755"),
            ("1.1", "0.55"),
            ("1000000000", "500000000"),
        ] {
            assert_eq!(
                level(assigned, available, &t),
                Some(Level::Ok),
                "{assigned}/{available}"
            );
        }
        for (assigned, available) in [("300", "149.99"), ("1.1", "0.5499")] {
            assert_eq!(
                level(assigned, available, &t),
                Some(Level::Warning),
                "{assigned}/{available}"
            );
        }
    }

    #[test]
    fn fractional_percentages_are_exact() {
        let t = Thresholds::new(Limit::Percent(p("7.5")), Limit::Percent(p("12.25"))).unwrap();
        assert_eq!(level("1000", "75", &t), Some(Level::Warning));
        assert_eq!(level("1000", "74.999999", &t), Some(Level::Critical));
        assert_eq!(level("1000", "122.5", &t), Some(Level::Ok));
        assert_eq!(level("1000", "122.499999", &t), Some(Level::Warning));
    }

    #[test]
    fn absolute_thresholds_compare_credits() {
        let t = Thresholds::new(Limit::Credits(c("20")), Limit::Credits(c("100"))).unwrap();
        assert_eq!(level("1000", "19.99", &t), Some(Level::Critical));
        assert_eq!(level("1000", "20", &t), Some(Level::Warning));
        assert_eq!(level("1000", "100", &t), Some(Level::Ok));
        // 30 of 30 left is 100 %, yet critical by an absolute rule of 50 credits.
        let t = Thresholds::new(Limit::Credits(c("50")), Limit::Percent(p("50"))).unwrap();
        assert_eq!(level("30", "30", &t), Some(Level::Critical));
        assert_eq!(level("1000", "400", &t), Some(Level::Warning));
    }

    #[test]
    fn negative_balances_are_critical_whatever_the_thresholds() {
        let t = Thresholds::new(Limit::Credits(c("1")), Limit::Credits(c("2"))).unwrap();
        assert_eq!(level("1000", "-750", &t), Some(Level::Critical));
        assert_eq!(level("0", "-5", &Thresholds::default()), Some(Level::Critical));
        let Classification::Rated { figures, .. } = classify(&limited("u", "0", "-5"), &t) else {
            panic!("an overspent zero allocation must be rated");
        };
        assert_eq!(figures.percent_left, None);
        assert_eq!(figures.consumed, c("5"));
    }

    #[test]
    fn zero_allocation_is_skipped_without_dividing() {
        assert_eq!(skip_reason(&limited("u", "0", "0")), Some(SkipReason::ZeroAllocation));
        let absolute = Thresholds::new(Limit::Credits(c("20")), Limit::Credits(c("50"))).unwrap();
        assert_eq!(level("0", "0", &absolute), None);
    }

    #[test]
    fn unlimited_disabled_and_viewer_members_are_skipped() {
        let mut unlimited = limited("u", "0", "0");
        unlimited.balance = Balance::Unlimited;
        assert_eq!(skip_reason(&unlimited), Some(SkipReason::Unlimited));

        let mut disabled = limited("u", "1000", "1");
        disabled.disabled = true;
        assert_eq!(skip_reason(&disabled), Some(SkipReason::Disabled));

        let mut viewer = limited("u", "1000", "1");
        viewer.user_type = Some("viewerUT".into());
        assert_eq!(skip_reason(&viewer), Some(SkipReason::Viewer));
        assert_eq!(SkipReason::Viewer.to_string(), "viewer: cannot consume credits");
    }

    #[test]
    fn figures_report_consumption_and_percent() {
        let Classification::Rated { level, figures } = classify(&limited("u", "200", "50"), &Thresholds::default())
        else {
            panic!("a limited creator must be rated");
        };
        assert_eq!(level, Level::Warning);
        assert_eq!(
            figures,
            Figures {
                assigned: c("200"),
                available: c("50"),
                consumed: c("150"),
                percent_left: Some(25.0)
            }
        );
    }

    #[test]
    fn threshold_validation() {
        let pct = |x: &str| Limit::Percent(p(x));
        assert!(matches!(
            Thresholds::new(pct("50"), pct("10")),
            Err(ThresholdError::NotStricter { .. })
        ));
        assert!(matches!(
            Thresholds::new(pct("10"), pct("10")),
            Err(ThresholdError::NotStricter { .. })
        ));
        assert!(matches!(
            Thresholds::new(Limit::Credits(c("50")), Limit::Credits(c("20"))),
            Err(ThresholdError::NotStricter { .. })
        ));
        assert!(matches!(
            Thresholds::new(pct("0"), pct("100")),
            Err(ThresholdError::PercentOutOfRange {
                rule: Rule::Critical,
                ..
            })
        ));
        for bad in ["0", "-5"] {
            assert!(matches!(
                Thresholds::new(pct("10"), Limit::Credits(c(bad))),
                Err(ThresholdError::CreditsOutOfRange {
                    rule: Rule::Warning,
                    ..
                })
            ));
        }
        assert!(Thresholds::new(pct("99"), pct("100")).is_ok());
        assert!(Thresholds::new(Limit::Credits(c("500")), pct("10")).is_ok());
    }

    #[test]
    fn limits_parse_with_an_explicit_unit() {
        assert_eq!("10%".parse::<Limit>(), Ok(Limit::Percent(p("10"))));
        assert_eq!(" 12.5 % ".parse::<Limit>(), Ok(Limit::Percent(p("12.5"))));
        assert_eq!("20 credits".parse::<Limit>(), Ok(Limit::Credits(c("20"))));
        assert_eq!("20cr".parse::<Limit>(), Ok(Limit::Credits(c("20"))));
        for bad in ["20", "ten%", "inf%", "NaN credits", "101%"] {
            assert!(
                matches!(bad.parse::<Limit>(), Err(ThresholdError::Unparsable(_))),
                "{bad}"
            );
        }
    }

    #[test]
    fn thresholds_deserialize_with_validation() {
        let ok: Thresholds = serde_json::from_str(r#"{"critical":{"credits":20},"warning":{"percent":50}}"#).unwrap();
        assert_eq!(ok.critical(), Limit::Credits(c("20")));
        assert_eq!(ok.warning(), Limit::Percent(p("50")));
        let bad = serde_json::from_str::<Thresholds>(r#"{"critical":{"percent":60},"warning":{"percent":50}}"#);
        assert!(bad.unwrap_err().to_string().contains("stricter"));
    }

    #[test]
    fn org_summary_splits_and_sorts_deterministically() {
        let mut members = vec![
            limited("zoe", "100", "5"),
            limited("amy", "100", "5"),
            limited("bob", "100", "1"),
            limited("neg", "0", "-3"),
            limited("carl", "100", "40"),
            limited("dan", "100", "90"),
            limited("eve", "100", "60"),
        ];
        let mut unlimited = limited("uma", "0", "0");
        unlimited.balance = Balance::Unlimited;
        members.push(unlimited);
        let mut disabled = limited("abe", "100", "0");
        disabled.disabled = true;
        members.push(disabled);

        let org = ClassifiedOrg::from_members(&members, &Thresholds::default());
        let names = |list: &[RatedMember]| list.iter().map(|m| m.username.clone()).collect::<Vec<_>>();
        assert_eq!(names(&org.critical), ["neg", "bob", "amy", "zoe"]);
        assert_eq!(names(&org.warning), ["carl"]);
        assert_eq!(org.ok, 2, "eve and dan");
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
        assert_eq!(json["critical"][1]["figures"]["available"], 1);
    }
}
