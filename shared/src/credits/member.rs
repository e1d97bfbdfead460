//! A member's credit position, as the domain sees it.
//!
//! ArcGIS encodes "no allocation" as `-1` in both `assignedCredits` and `availableCredits`;
//! the notebook treated that sentinel as a number and topped up unlimited members. Here it is
//! a variant, so no arithmetic can touch it by accident.

use serde::{Deserialize, Serialize};

/// What a member may still spend: unlimited, or a finite allocation and what is left of it.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Balance {
    /// No allocation: the member draws on the org's credits without a per-member limit.
    Unlimited,
    /// A finite allocation. `available` = `assigned` − consumed and may be negative.
    Limited {
        /// The allocation set by `assignUserCredits`.
        assigned: f64,
        /// What is left of it; negative when the member overspent.
        available: f64,
    },
}

impl Balance {
    /// Interprets the wire pair. A negative `assignedCredits` (the `-1` sentinel) means
    /// unlimited; `availableCredits` alone may legitimately be negative (overspent).
    pub fn from_wire(assigned: f64, available: f64) -> Self {
        if assigned < 0.0 {
            Balance::Unlimited
        } else {
            Balance::Limited { assigned, available }
        }
    }

    /// Credits consumed against the allocation, when there is one.
    pub fn consumed(&self) -> Option<f64> {
        match *self {
            Balance::Unlimited => None,
            Balance::Limited { assigned, available } => Some(assigned - available),
        }
    }
}

/// One organization member with the fields credit decisions depend on.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Member {
    /// Exact ArcGIS username (case-sensitive).
    pub username: String,
    /// Display name, for messages.
    pub full_name: Option<String>,
    /// Email address, when the caller may see it and the member has one.
    pub email: Option<String>,
    /// Disabled members cannot sign in; alerts and top-ups about them are noise.
    pub disabled: bool,
    /// `userLicenseTypeId`, e.g. `creatorUT` or `viewerUT` (viewers cannot spend credits).
    pub user_type: Option<String>,
    /// Base role (`org_admin`, `org_publisher`, `org_user`).
    pub role: Option<String>,
    /// The credit position.
    pub balance: Balance,
}

impl Balance {
    /// Share of the allocation still available, in percent, for display and sorting.
    /// `None` when unlimited or when nothing is assigned (the ratio is undefined; the
    /// notebook divided by zero there).
    pub fn percent_left(&self) -> Option<f64> {
        match *self {
            Balance::Limited { assigned, available } if assigned > 0.0 => Some(available / assigned * 100.0),
            _ => None,
        }
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

/// Why a number cannot be used as an amount of credits.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, thiserror::Error)]
#[serde(tag = "kind", content = "value", rename_all = "snake_case")]
pub enum InvalidCredits {
    /// NaN or infinite: no allocation, threshold or guardrail can be computed from it.
    #[error("credits must be a finite number, got {0}; send a plain decimal number")]
    NotFinite(f64),
    /// Negative: ArcGIS would read a negative allocation as the `-1` "unlimited" sentinel.
    #[error(
        "credits must be zero or more, got {0}; to remove a member's limit, unassign \
         their credits instead of sending a negative number"
    )]
    Negative(f64),
}

/// A finite, non-negative amount of credits.
///
/// Validated once at the boundary so that allocations, top-up targets and guardrails can
/// never hold NaN, infinity or a negative value (which ArcGIS would read as "unlimited").
#[derive(Debug, Clone, Copy, PartialEq, PartialOrd, Serialize, Deserialize)]
#[serde(try_from = "f64", into = "f64")]
pub struct Credits(f64);

impl Credits {
    /// Zero credits: blocks all credit use for a member when set as an allocation.
    pub const ZERO: Credits = Credits(0.0);

    /// Accepts `value` if it is finite and `>= 0`. `-0.0` is normalised to `0.0`.
    pub fn new(value: f64) -> Result<Self, InvalidCredits> {
        if !value.is_finite() {
            Err(InvalidCredits::NotFinite(value))
        } else if value < 0.0 {
            Err(InvalidCredits::Negative(value))
        } else {
            Ok(Credits(value + 0.0))
        }
    }

    /// The amount as a plain number, for arithmetic and the wire.
    pub fn get(self) -> f64 {
        self.0
    }
}

impl TryFrom<f64> for Credits {
    type Error = InvalidCredits;

    fn try_from(value: f64) -> Result<Self, Self::Error> {
        Credits::new(value)
    }
}

impl From<Credits> for f64 {
    fn from(credits: Credits) -> f64 {
        credits.0
    }
}

/// A *target* allocation: what we want a member's allocation to become.
///
/// Distinct from [`Balance`] (what a member has now) and never a bare `-1`: "no limit" is
/// its own variant, which maps to `unassignUserCredits`, while a limit maps to
/// `assignUserCredits`.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", content = "credits", rename_all = "snake_case")]
pub enum Allocation {
    /// No per-member limit.
    Unlimited,
    /// A finite allocation, validated by [`Credits::new`].
    Limited(Credits),
}

impl Allocation {
    /// A finite allocation of `credits`, rejecting NaN, infinity and negative numbers.
    pub fn limited(credits: f64) -> Result<Self, InvalidCredits> {
        Credits::new(credits).map(Allocation::Limited)
    }

    /// The allocated amount, or `None` for no limit.
    pub fn credits(&self) -> Option<f64> {
        match self {
            Allocation::Unlimited => None,
            Allocation::Limited(c) => Some(c.get()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn member(user_type: Option<&str>) -> Member {
        Member {
            username: "jdoe".into(),
            full_name: None,
            email: None,
            disabled: false,
            user_type: user_type.map(Into::into),
            role: None,
            balance: Balance::Unlimited,
        }
    }

    #[test]
    fn wire_sentinel_is_unlimited_but_negative_available_is_overspent() {
        assert_eq!(Balance::from_wire(-1.0, -1.0), Balance::Unlimited);
        let overspent = Balance::from_wire(1000.0, -750.0);
        assert_eq!(
            overspent,
            Balance::Limited {
                assigned: 1000.0,
                available: -750.0
            }
        );
        assert_eq!(overspent.consumed(), Some(1750.0));
        assert_eq!(Balance::Unlimited.consumed(), None);
    }

    #[test]
    fn percent_left_is_undefined_without_an_allocation() {
        assert_eq!(Balance::Unlimited.percent_left(), None);
        assert_eq!(
            Balance::Limited {
                assigned: 0.0,
                available: 0.0
            }
            .percent_left(),
            None
        );
        assert_eq!(
            Balance::Limited {
                assigned: 200.0,
                available: 50.0
            }
            .percent_left(),
            Some(25.0)
        );
    }

    #[test]
    fn viewer_detection_uses_the_license_type() {
        assert!(member(Some("viewerUT")).is_viewer());
        assert!(member(Some("VIEWERut")).is_viewer());
        assert!(!member(Some("creatorUT")).is_viewer());
        assert!(!member(None).is_viewer());
    }

    #[test]
    fn credits_reject_nan_infinity_and_negatives() {
        assert!(matches!(Credits::new(f64::NAN), Err(InvalidCredits::NotFinite(_))));
        assert!(matches!(Credits::new(f64::INFINITY), Err(InvalidCredits::NotFinite(_))));
        assert_eq!(Credits::new(-1.0), Err(InvalidCredits::Negative(-1.0)));
        assert_eq!(Credits::new(0.0).map(Credits::get), Ok(0.0));
        assert!(Credits::new(-0.0).unwrap().get().is_sign_positive());
        assert_eq!(Credits::new(250.5).map(Credits::get), Ok(250.5));
    }

    #[test]
    fn allocation_constructor_validates() {
        assert_eq!(Allocation::limited(200.0).unwrap().credits(), Some(200.0));
        assert_eq!(Allocation::Unlimited.credits(), None);
        assert!(matches!(Allocation::limited(-1.0), Err(InvalidCredits::Negative(_))));
        assert!(matches!(
            Allocation::limited(f64::NAN),
            Err(InvalidCredits::NotFinite(_))
        ));
    }

    #[test]
    fn allocation_serde_round_trip_and_validation() {
        let a = Allocation::limited(200.0).unwrap();
        let json = serde_json::to_value(a).unwrap();
        assert_eq!(json, serde_json::json!({"kind": "limited", "credits": 200.0}));
        assert_eq!(serde_json::from_value::<Allocation>(json).unwrap(), a);
        assert_eq!(
            serde_json::to_value(Allocation::Unlimited).unwrap(),
            serde_json::json!({"kind": "unlimited"})
        );
        let negative = serde_json::json!({"kind": "limited", "credits": -1.0});
        assert!(serde_json::from_value::<Allocation>(negative).is_err());
    }
}
