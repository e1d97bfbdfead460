//! A member's credit position, as the domain sees it.
//!
//! ArcGIS encodes "no allocation" as `-1` in `assignedCredits` (`availableCredits` then holds
//! `-1` or the org's remaining credits; see docs/arcgis.md, "Credit fields and the unlimited
//! sentinel"). Read as a number, the sentinel looks like "almost nothing left", and unlimited
//! members get flagged and "topped up" into a limit. Here it is a variant, so no arithmetic can
//! touch it by accident.

use std::ops::Deref;
use std::sync::Arc;

use serde::{Deserialize, Serialize};

pub use super::amount::{Credits, InvalidCredits};

/// What a member may still spend: unlimited, or a finite allocation and what is left of it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Balance {
    /// No allocation: the member draws on the org's credits without a per-member limit.
    Unlimited,
    /// A finite allocation. `available` = `assigned` − consumed and may be negative.
    Limited {
        /// The allocation set by `assignUserCredits`.
        assigned: Credits,
        /// What is left of it; negative when the member overspent.
        available: Credits,
    },
}

impl Balance {
    /// Interprets the wire pair. A negative `assignedCredits` (the `-1` sentinel) means
    /// unlimited, whatever `availableCredits` says (ArcGIS reports the org's remaining credits
    /// there for unlimited members); `availableCredits` alone may legitimately be negative
    /// (overspent).
    pub fn from_wire(assigned: Credits, available: Credits) -> Self {
        if assigned.is_negative() {
            Balance::Unlimited
        } else {
            Balance::Limited { assigned, available }
        }
    }

    /// Credits consumed against the allocation, when there is one.
    pub fn consumed(&self) -> Option<Credits> {
        match *self {
            Balance::Unlimited => None,
            Balance::Limited { assigned, available } => Some(assigned - available),
        }
    }

    /// What the member may still spend before ArcGIS stops them: `available` when positive,
    /// zero when overspent, `None` when unlimited. The org promised this much and may have to
    /// pay it; guardrails count it.
    pub fn headroom(&self) -> Option<Credits> {
        match *self {
            Balance::Unlimited => None,
            Balance::Limited { available, .. } => Some(available.at_least_zero()),
        }
    }
}

/// One organization member with the fields credit decisions depend on, and no others: a scan
/// holds every member of the org at once, so each field kept costs memory per member (the
/// listing's email and role are read by nothing and not kept).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Member {
    /// Exact ArcGIS username (case-sensitive).
    pub username: String,
    /// Display name, for messages.
    pub full_name: Option<String>,
    /// Disabled members cannot sign in; alerts and top-ups about them are noise.
    pub disabled: bool,
    /// `userLicenseTypeId`, e.g. `creatorUT` or `viewerUT` (viewers cannot spend credits).
    pub user_type: Option<UserType>,
    /// The credit position.
    pub balance: Balance,
}

impl Balance {
    /// Share of the allocation still available, in percent, for display and sorting.
    /// `None` when unlimited or when nothing is assigned (the ratio is undefined: a division
    /// by a zero allocation).
    pub fn percent_left(&self) -> Option<f64> {
        match *self {
            Balance::Limited { assigned, available } if assigned.is_positive() => {
                Some(available.to_f64() / assigned.to_f64() * 100.0)
            }
            _ => None,
        }
    }
}

/// A member's `userLicenseTypeId`. An org has a handful of user types for all its members,
/// so members read together share one copy of each ([`UserTypes`]): at 100,000 members that
/// is about 4 MB less than a string per member.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(from = "String", into = "String")]
pub struct UserType(Arc<str>);

impl Deref for UserType {
    type Target = str;

    fn deref(&self) -> &str {
        &self.0
    }
}

impl From<&str> for UserType {
    fn from(s: &str) -> UserType {
        UserType(Arc::from(s))
    }
}

impl From<String> for UserType {
    fn from(s: String) -> UserType {
        UserType(Arc::from(s))
    }
}

impl From<UserType> for String {
    fn from(t: UserType) -> String {
        t.0.as_ref().to_owned()
    }
}

/// The user types met so far while reading members, each kept once.
#[derive(Debug, Default)]
pub struct UserTypes(Vec<UserType>);

impl UserTypes {
    /// `name` as a [`UserType`], shared with the members read before that have it.
    pub fn get(&mut self, name: &str) -> UserType {
        if let Some(known) = self.0.iter().find(|t| &***t == name) {
            return known.clone();
        }
        let new = UserType::from(name);
        // An org has a few types; a bound keeps odd data from making this a slow search.
        if self.0.len() < 64 {
            self.0.push(new.clone());
        }
        new
    }
}

/// The `userLicenseTypeId` of viewers, who cannot use credit-consuming tools.
pub const VIEWER_USER_TYPE: &str = "viewerUT";

impl Member {
    /// Viewers cannot consume credits, so alerting on or allocating to them is noise.
    pub fn is_viewer(&self) -> bool {
        self.user_type
            .as_deref()
            .is_some_and(|t| t.eq_ignore_ascii_case(VIEWER_USER_TYPE))
    }
}

/// A *target* allocation: what we want a member's allocation to become.
///
/// Distinct from [`Balance`] (what a member has now) and never a bare `-1`: "no limit" is
/// its own variant, which maps to `unassignUserCredits`, while a limit maps to
/// `assignUserCredits`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(
    tag = "kind",
    content = "credits",
    rename_all = "snake_case",
    try_from = "AllocationSpec"
)]
pub enum Allocation {
    /// No per-member limit.
    Unlimited,
    /// A finite allocation of zero or more, built by [`Allocation::limited`].
    Limited(Credits),
}

/// [`Allocation`] as stored, before the non-negative check.
#[derive(Deserialize)]
#[serde(tag = "kind", content = "credits", rename_all = "snake_case")]
enum AllocationSpec {
    Unlimited,
    Limited(Credits),
}

impl TryFrom<AllocationSpec> for Allocation {
    type Error = InvalidCredits;

    fn try_from(spec: AllocationSpec) -> Result<Self, Self::Error> {
        match spec {
            AllocationSpec::Unlimited => Ok(Allocation::Unlimited),
            AllocationSpec::Limited(c) => Allocation::limited(c),
        }
    }
}

impl Allocation {
    /// A finite allocation of `credits`, refusing a negative amount (ArcGIS would read it as
    /// the `-1` "unlimited" sentinel).
    pub fn limited(credits: Credits) -> Result<Self, InvalidCredits> {
        credits.non_negative().map(Allocation::Limited)
    }

    /// The allocated amount, or `None` for no limit.
    pub fn credits(&self) -> Option<Credits> {
        match self {
            Allocation::Unlimited => None,
            Allocation::Limited(c) => Some(*c),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn c(text: &str) -> Credits {
        Credits::parse_exact(text).unwrap()
    }

    #[test]
    fn members_read_together_share_one_copy_of_each_user_type() {
        let mut types = UserTypes::default();
        let (a, b, viewer) = (types.get("creatorUT"), types.get("creatorUT"), types.get("viewerUT"));
        assert!(Arc::ptr_eq(&a.0, &b.0), "one allocation for every creator");
        assert!(!Arc::ptr_eq(&a.0, &viewer.0));
        assert_eq!((&*a, &*viewer), ("creatorUT", "viewerUT"));
        // Stored and read back as the plain string ArcGIS sends.
        let json = serde_json::to_string(&member(Some("viewerUT"))).unwrap();
        assert!(json.contains(r#""user_type":"viewerUT""#), "{json}");
        let back: Member = serde_json::from_str(&json).unwrap();
        assert!(back.is_viewer());
    }

    fn member(user_type: Option<&str>) -> Member {
        Member {
            username: "jdoe".into(),
            full_name: None,
            disabled: false,
            user_type: user_type.map(Into::into),
            balance: Balance::Unlimited,
        }
    }

    #[test]
    fn wire_sentinel_is_unlimited_but_negative_available_is_overspent() {
        assert_eq!(Balance::from_wire(c("-1"), c("-1")), Balance::Unlimited);
        // Unlimited members carry the org's remaining credits in availableCredits.
        assert_eq!(Balance::from_wire(c("-1"), c("50018196")), Balance::Unlimited);
        let overspent = Balance::from_wire(c("1000"), c("-750"));
        assert_eq!(
            overspent,
            Balance::Limited {
                assigned: c("1000"),
                available: c("-750")
            }
        );
        assert_eq!(overspent.consumed(), Some(c("1750")));
        assert_eq!(overspent.headroom(), Some(Credits::ZERO));
        assert_eq!(Balance::Unlimited.consumed(), None);
        assert_eq!(Balance::Unlimited.headroom(), None);
    }

    #[test]
    fn percent_left_is_undefined_without_an_allocation() {
        assert_eq!(Balance::Unlimited.percent_left(), None);
        let limited = |a: &str, v: &str| Balance::Limited {
            assigned: c(a),
            available: c(v),
        };
        assert_eq!(limited("0", "0").percent_left(), None);
        assert_eq!(limited("200", "50").percent_left(), Some(25.0));
    }

    #[test]
    fn viewer_detection_uses_the_license_type() {
        assert!(member(Some("viewerUT")).is_viewer());
        assert!(member(Some("VIEWERut")).is_viewer());
        assert!(!member(Some("creatorUT")).is_viewer());
        assert!(!member(None).is_viewer());
    }

    #[test]
    fn allocation_constructor_refuses_negatives() {
        assert_eq!(Allocation::limited(c("200")).unwrap().credits(), Some(c("200")));
        assert_eq!(Allocation::Unlimited.credits(), None);
        assert!(matches!(Allocation::limited(c("-1")), Err(InvalidCredits::Negative(_))));
    }

    #[test]
    fn allocation_serde_round_trip() {
        let a = Allocation::limited(c("200.5")).unwrap();
        let json = serde_json::to_string(&a).unwrap();
        assert_eq!(json, r#"{"kind":"limited","credits":200.5}"#);
        assert_eq!(serde_json::from_str::<Allocation>(&json).unwrap(), a);
        assert_eq!(
            serde_json::to_value(Allocation::Unlimited).unwrap(),
            serde_json::json!({"kind": "unlimited"})
        );
        assert!(serde_json::from_str::<Allocation>(r#"{"kind":"limited","credits":-1}"#).is_err());
    }
}
