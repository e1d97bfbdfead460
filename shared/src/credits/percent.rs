//! Threshold percentages, exact to the hundredth of a percent.
//!
//! "Critical below 10 %" must treat a member with exactly 10 % left as not critical, however
//! the amounts were written. A [`Percent`] is a whole number of basis points (0.01 %), and
//! [`Percent::is_above_share`] compares by integer cross-multiplication
//! (`part × 10 000 < basis points × whole`), so no division and no rounding happen. Shares
//! shown to people (`percent_left`, report shares) stay `f64`: they are for reading only.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

use super::amount::{Credits, InvalidCredits};

/// Basis points per percent.
const BP_PER_PERCENT: u32 = 100;
/// 100 %.
const MAX_BP: u32 = 100 * BP_PER_PERCENT;

/// A percentage between 0 and 100 inclusive, exact to 0.01.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Percent(u32);

/// Why a value is not a usable percentage.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum InvalidPercent {
    /// Not a plain decimal number.
    #[error("{0:?} is not a percentage; write a number between 0 and 100 such as 10 or 7.5")]
    NotANumber(String),
    /// Outside 0–100.
    #[error("{0} is not between 0 and 100")]
    OutOfRange(String),
    /// More than two decimals.
    #[error("{0} has more than 2 decimal places; percentages are kept to the hundredth")]
    TooPrecise(String),
}

impl Percent {
    /// 100 %.
    pub const HUNDRED: Percent = Percent(MAX_BP);

    /// A whole percentage; `None` above 100.
    pub const fn whole(percent: u32) -> Option<Percent> {
        if percent <= 100 {
            Some(Percent(percent * BP_PER_PERCENT))
        } else {
            None
        }
    }

    /// The value in basis points (hundredths of a percent).
    pub const fn basis_points(self) -> u32 {
        self.0
    }

    /// Whether the percentage is zero.
    pub const fn is_zero(self) -> bool {
        self.0 == 0
    }

    /// For display and arithmetic that may be approximate (charts, sorting).
    pub fn to_f64(self) -> f64 {
        f64::from(self.0) / f64::from(BP_PER_PERCENT)
    }

    /// Reads `10`, `7.5`, `12.25`: at most two decimals, between 0 and 100.
    pub fn parse(text: &str) -> Result<Percent, InvalidPercent> {
        let text = text.trim();
        let shown = || text.chars().take(40).collect::<String>();
        // The same decimal reader as amounts, then whole basis points.
        let value = Credits::parse_exact(text).map_err(|e| match e {
            InvalidCredits::TooPrecise(_) => InvalidPercent::TooPrecise(shown()),
            InvalidCredits::TooLarge(_) => InvalidPercent::OutOfRange(shown()),
            _ => InvalidPercent::NotANumber(shown()),
        })?;
        if value.is_negative() || value > Credits::whole(100) {
            return Err(InvalidPercent::OutOfRange(shown()));
        }
        let micros = value.micros();
        let per_bp = 1_000_000 / i128::from(BP_PER_PERCENT);
        if micros % per_bp != 0 {
            return Err(InvalidPercent::TooPrecise(shown()));
        }
        Ok(Percent((micros / per_bp) as u32))
    }

    /// Whether `part` is strictly below this share of `whole` (exact).
    pub fn is_above_share(self, part: Credits, whole: Credits) -> bool {
        part.micros() * i128::from(MAX_BP) < i128::from(self.0) * whole.micros()
    }
}

impl FromStr for Percent {
    type Err = InvalidPercent;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Percent::parse(s)
    }
}

impl fmt::Display for Percent {
    /// `10`, `7.5`, `12.25` (no `%`: callers add it where it reads well).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (whole, frac) = (self.0 / BP_PER_PERCENT, self.0 % BP_PER_PERCENT);
        if frac == 0 {
            write!(f, "{whole}")
        } else if frac % 10 == 0 {
            write!(f, "{whole}.{}", frac / 10)
        } else {
            write!(f, "{whole}.{frac:02}")
        }
    }
}

impl fmt::Debug for Percent {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{self}%")
    }
}

impl Serialize for Percent {
    /// A JSON number, exact.
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let raw = serde_json::value::RawValue::from_string(self.to_string()).map_err(serde::ser::Error::custom)?;
        raw.serialize(serializer)
    }
}

impl<'de> Deserialize<'de> for Percent {
    /// A JSON number (or numeric string) with at most two decimals, between 0 and 100.
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let amount = Credits::deserialize(deserializer)?;
        Percent::parse(&amount.to_string()).map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(text: &str) -> Percent {
        Percent::parse(text).unwrap()
    }

    fn c(text: &str) -> Credits {
        Credits::parse_exact(text).unwrap()
    }

    #[test]
    fn parses_and_prints_exactly() {
        for text in ["0", "10", "7.5", "12.25", "100", "0.01"] {
            assert_eq!(p(text).to_string(), text);
        }
        assert_eq!(p("50.0").basis_points(), 5000);
        assert!(matches!(Percent::parse("7.125"), Err(InvalidPercent::TooPrecise(_))));
        assert!(matches!(Percent::parse("100.01"), Err(InvalidPercent::OutOfRange(_))));
        assert!(matches!(Percent::parse("-1"), Err(InvalidPercent::OutOfRange(_))));
        for bad in ["inf", "NaN", "", "ten"] {
            assert!(
                matches!(Percent::parse(bad), Err(InvalidPercent::NotANumber(_))),
                "{bad}"
            );
        }
    }

    #[test]
    fn exactly_on_the_line_is_not_below() {
        // 0.7 of 7 is exactly 10 %: not below (a float division says it is: 0.7 / 7.0 < 0.1).
        assert!(!p("10").is_above_share(c("0.7"), c("7")));
        assert!(p("10").is_above_share(c("0.699999"), c("7")));
        assert!(!p("50").is_above_share(c("500"), c("1000")));
        assert!(p("7.5").is_above_share(c("74.999999"), c("1000")));
        assert!(!p("7.5").is_above_share(c("75"), c("1000")));
        assert!(p("10").is_above_share(c("-1"), c("1000")));
    }

    #[test]
    fn serde_round_trip() {
        let json = serde_json::to_string(&[p("7.5"), p("10")]).unwrap();
        assert_eq!(json, "[7.5,10]");
        let back: Vec<Percent> = serde_json::from_str(&json).unwrap();
        assert_eq!(back, [p("7.5"), p("10")]);
        assert!(serde_json::from_str::<Percent>("101").is_err());
    }
}
