//! Exact amounts of credits.
//!
//! Every amount in credit-steward (allocations, balances, usage, guardrails, budgets, audit
//! entries) is a [`Credits`]: a whole number of **micro-credits** (10⁻⁶ credit) in an `i128`.
//! Binary floating point cannot hold decimal amounts: `0.1 + 0.2` is `0.30000000000000004`, a
//! top-up of 200 on 1000 assigned and 949.9 available came out as `250.10000000000002`, and
//! the noise reached ArcGIS and the audit trail. Integers in minor units do not drift, compare
//! exactly and print exactly, which is what payment libraries do with cents.
//!
//! Why micro-credits: ArcGIS reports usage down to 10⁻⁴ credit (`"2.0E-4"`) and balances with
//! a few decimals; six decimals hold every value we have seen with room to spare, and an
//! amount sent to ArcGIS or written to the audit never has more than six. Why `i128`: sums
//! over every member of a large org can never overflow (inputs are bounded by
//! [`Credits::MAX_ABS`], 10¹⁵ credits, and an `i128` holds 10³² credits), so plain `+`/`-`
//! are safe and no call site needs an overflow branch.
//!
//! Where amounts come from:
//! - **ArcGIS JSON** ([`Credits::from_json`]): numbers, or numbers as strings, possibly with an
//!   exponent (`5.0018196E7`). ArcGIS computes in Java doubles and writes them with Java's
//!   shortest round-trip text, so the decimal it means is the shortest text that reads back as
//!   the same double; serde_json hands us that double and Rust's `Display` gives us exactly
//!   that text, which is then read as a decimal. Values with more than six decimals (ArcGIS's
//!   own double noise, `949.9000000000001`) are rounded half-to-even to the micro-credit.
//! - **People** ([`Credits::parse_exact`]): request bodies and settings; more than six
//!   decimals is an error, never silently rounded.
//! - **Our own storage** ([`Credits::from_micros`]).
//!
//! Amounts leave as exact decimal text: [`fmt::Display`] (`"250.1"`, `"-750"`), and JSON
//! numbers written from that same text (serde).

use std::fmt;
use std::iter::Sum;
use std::ops::{Add, AddAssign, Neg, Sub, SubAssign};
use std::str::FromStr;

use serde::de::{self, Visitor};
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use serde_json::Value;

/// Micro-credits per credit.
const MICROS: i128 = 1_000_000;
/// Decimal places kept.
const SCALE: u32 = 6;

/// An exact, signed amount of credits (a whole number of micro-credits).
///
/// Signed because balances may be negative (a member who overspent their allocation); where
/// an amount must not be negative (an allocation, a guardrail) the constructor of that type
/// refuses it.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Credits(i128);

/// Why a text or number is not an amount of credits.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, thiserror::Error)]
#[serde(tag = "kind", content = "value", rename_all = "snake_case")]
pub enum InvalidCredits {
    /// Not a plain decimal number (NaN, infinity, words, an empty string).
    #[error("{0:?} is not a number of credits; send a plain decimal number such as 250 or 12.5")]
    NotANumber(String),
    /// More than six decimal places: it cannot be sent to ArcGIS exactly.
    #[error("{0} has more than 6 decimal places; credits are kept to the millionth, round it")]
    TooPrecise(String),
    /// Larger than any real amount (10¹⁵ credits): a typo or garbage.
    #[error("{0} is larger than any real amount of credits; check for extra digits")]
    TooLarge(String),
    /// Negative where only zero or more makes sense.
    #[error(
        "credits must be zero or more, got {0}; to remove a member's limit, unassign their \
         credits instead of sending a negative number"
    )]
    Negative(Credits),
}

impl Credits {
    /// Zero credits.
    pub const ZERO: Credits = Credits(0);

    /// The largest magnitude accepted from any source: 10¹⁵ credits. Real orgs hold millions;
    /// anything near this is garbage, and the bound is what keeps sums far from overflow.
    pub const MAX_ABS: Credits = Credits(1_000_000_000_000_000 * MICROS);

    /// An amount in micro-credits (our own storage).
    pub const fn from_micros(micros: i128) -> Credits {
        Credits(micros)
    }

    /// A whole number of credits.
    pub const fn whole(credits: i64) -> Credits {
        Credits(credits as i128 * MICROS)
    }

    /// The amount as a whole number; `None` when it has a fraction or does not fit an `i64`.
    /// ArcGIS writes counts and timestamps in the same spellings as amounts, so they are read
    /// through the same exact decimal reader and then checked whole.
    pub fn whole_units(self) -> Option<i64> {
        (self.0 % MICROS == 0)
            .then(|| i64::try_from(self.0 / MICROS).ok())
            .flatten()
    }

    /// The amount in micro-credits.
    pub const fn micros(self) -> i128 {
        self.0
    }

    /// Whether the amount is below zero.
    pub const fn is_negative(self) -> bool {
        self.0 < 0
    }

    /// Whether the amount is zero.
    pub const fn is_zero(self) -> bool {
        self.0 == 0
    }

    /// Whether the amount is above zero.
    pub const fn is_positive(self) -> bool {
        self.0 > 0
    }

    /// `self`, or zero when negative (what is left of an overspent balance).
    pub fn at_least_zero(self) -> Credits {
        self.max(Credits::ZERO)
    }

    /// The amount, refused when negative (allocations, guardrails, targets).
    pub fn non_negative(self) -> Result<Credits, InvalidCredits> {
        if self.is_negative() {
            Err(InvalidCredits::Negative(self))
        } else {
            Ok(self)
        }
    }

    /// The nearest `f64`, for rates, percentages and charts only: never for money.
    pub fn to_f64(self) -> f64 {
        self.0 as f64 / MICROS as f64
    }

    /// Reads decimal text written by a person: digits with an optional sign, decimal point
    /// and exponent (`250`, `12.5`, `-3`, `2.5E2`). More than six decimals is an error.
    pub fn parse_exact(text: &str) -> Result<Credits, InvalidCredits> {
        parse(text, Rounding::Refuse)
    }

    /// Reads decimal text from ArcGIS, rounding anything past the sixth decimal half-to-even
    /// (ArcGIS's own double noise, `949.9000000000001`).
    pub fn parse_rounded(text: &str) -> Result<Credits, InvalidCredits> {
        parse(text, Rounding::HalfEven)
    }

    /// Reads an amount from an ArcGIS JSON value: a number, or a number written as a string
    /// (ArcGIS does both, with exponents). `None` for anything else (null, booleans, NaN).
    pub fn from_json(value: &Value) -> Option<Credits> {
        match value {
            // Whole numbers (timestamps, most balances) need no decimal text.
            Value::Number(n) => match n.as_i64() {
                Some(whole) => Some(Credits::whole(whole)).filter(|c| c.0.abs() <= Credits::MAX_ABS.0),
                None => Credits::parse_rounded(&n.to_string()).ok(),
            },
            Value::String(s) => Credits::parse_rounded(s).ok(),
            _ => None,
        }
    }

    /// An `f64` from a JSON parser read as the decimal it was written as (see the module
    /// documentation), rounded to the micro-credit.
    pub fn from_f64(value: f64) -> Result<Credits, InvalidCredits> {
        if !value.is_finite() {
            return Err(InvalidCredits::NotANumber(value.to_string()));
        }
        Credits::parse_rounded(&value.to_string())
    }

    /// For people: rounded half away from zero to `decimals` places (at most six) with
    /// thousands grouped by commas: `1234567.891` → `1,234,567.89`.
    pub fn grouped(self, decimals: u32) -> String {
        let decimals = decimals.min(SCALE);
        let step = 10i128.pow(SCALE - decimals);
        let abs = self.0.abs();
        let rounded = (abs + step / 2) / step;
        let unit = 10i128.pow(decimals);
        let (whole, frac) = (rounded / unit, rounded % unit);
        let digits = whole.to_string();
        let mut text = String::with_capacity(digits.len() + digits.len() / 3 + 8);
        if self.0 < 0 && rounded != 0 {
            text.push('-');
        }
        for (i, c) in digits.chars().enumerate() {
            if i > 0 && (digits.len() - i) % 3 == 0 {
                text.push(',');
            }
            text.push(c);
        }
        if decimals > 0 {
            text.push('.');
            text.push_str(&format!("{frac:0width$}", width = decimals as usize));
        }
        text
    }
}

#[derive(Clone, Copy, PartialEq)]
enum Rounding {
    Refuse,
    HalfEven,
}

/// Parses `[+-]digits[.digits][(e|E)[+-]digits]` into micro-credits, without allocating: a
/// usage answer holds a value per member and day, and a scan reads them all.
fn parse(text: &str, rounding: Rounding) -> Result<Credits, InvalidCredits> {
    let shown = || text.chars().take(40).collect::<String>();
    let not_a_number = || InvalidCredits::NotANumber(shown());
    let trimmed = text.trim().as_bytes();
    let (negative, rest) = match trimmed.split_first() {
        Some((b'-', rest)) => (true, rest),
        Some((b'+', rest)) => (false, rest),
        _ => (false, trimmed),
    };
    let (mantissa, exponent) = match rest.iter().position(|b| matches!(b, b'e' | b'E')) {
        Some(i) => {
            let exp = std::str::from_utf8(&rest[i + 1..])
                .ok()
                .and_then(|e| e.parse::<i32>().ok());
            (&rest[..i], exp.ok_or_else(not_a_number)?)
        }
        None => (rest, 0),
    };
    let (int_part, frac_part) = match mantissa.iter().position(|&b| b == b'.') {
        Some(i) => (&mantissa[..i], &mantissa[i + 1..]),
        None => (mantissa, &[][..]),
    };
    if int_part.is_empty() && frac_part.is_empty()
        || !int_part.iter().all(u8::is_ascii_digit)
        || !frac_part.iter().all(u8::is_ascii_digit)
    {
        return Err(not_a_number());
    }
    // The significant digits (the digits of both parts, without leading or trailing zeros:
    // "250.000000000" is exact) and the power of ten they are scaled by.
    let all = Digits(int_part, frac_part);
    let Some(first) = (0..all.len()).find(|&i| all.at(i) != 0) else {
        return Ok(Credits::ZERO);
    };
    let last = (first..all.len()).rev().find(|&i| all.at(i) != 0).unwrap_or(first);
    let len = (last + 1 - first) as i64;
    let scale = i64::from(exponent) - frac_part.len() as i64 + (all.len() - 1 - last) as i64;
    // Magnitude check before any arithmetic: digits × 10^scale ≤ 10^15.
    if len + scale > 16 {
        return Err(InvalidCredits::TooLarge(shown()));
    }
    // Micro-credits = digits × 10^(scale + 6); at most 22 digits are ever summed, which an
    // i128 holds.
    let shift = scale + i64::from(SCALE);
    let value_of = |count: i64| (first..first + count as usize).fold(0i128, |v, i| v * 10 + i128::from(all.at(i)));
    let micros = if shift >= 0 {
        value_of(len) * 10i128.pow(shift as u32)
    } else if rounding == Rounding::Refuse {
        return Err(InvalidCredits::TooPrecise(shown()));
    } else if -shift > len {
        // Below half a micro-credit: the first digit cut is a leading zero.
        0
    } else {
        // Half to even on the digits cut: the last significant digit is never 0, so a cut of
        // more than one digit is above half when it starts with 5.
        let keep = len + shift;
        let head = value_of(keep);
        let cut_first = all.at(first + keep as usize);
        let up = match cut_first.cmp(&5) {
            std::cmp::Ordering::Greater => true,
            std::cmp::Ordering::Less => false,
            std::cmp::Ordering::Equal => -shift > 1 || head % 2 == 1,
        };
        head + i128::from(up)
    };
    let credits = Credits(if negative { -micros } else { micros });
    if credits.0.abs() > Credits::MAX_ABS.0 {
        return Err(InvalidCredits::TooLarge(shown()));
    }
    Ok(credits)
}

/// The digits of a number's integer and fraction parts, read as one sequence.
struct Digits<'a>(&'a [u8], &'a [u8]);

impl Digits<'_> {
    fn len(&self) -> usize {
        self.0.len() + self.1.len()
    }

    /// The value of digit `i` (0–9).
    fn at(&self, i: usize) -> u8 {
        match self.0.get(i) {
            Some(d) => d - b'0',
            None => self.1[i - self.0.len()] - b'0',
        }
    }
}

impl FromStr for Credits {
    type Err = InvalidCredits;

    /// Exact: see [`Credits::parse_exact`].
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Credits::parse_exact(s)
    }
}

impl fmt::Display for Credits {
    /// Exact decimal text without trailing zeros: `250.1`, `-750`, `0.0002`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let sign = if self.0 < 0 { "-" } else { "" };
        let abs = self.0.unsigned_abs();
        let whole = abs / MICROS as u128;
        let frac = abs % MICROS as u128;
        if frac == 0 {
            write!(f, "{sign}{whole}")
        } else {
            let frac = format!("{frac:06}");
            write!(f, "{sign}{whole}.{}", frac.trim_end_matches('0'))
        }
    }
}

impl fmt::Debug for Credits {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Credits({self})")
    }
}

impl Add for Credits {
    type Output = Credits;
    fn add(self, rhs: Credits) -> Credits {
        Credits(self.0 + rhs.0)
    }
}

impl AddAssign for Credits {
    fn add_assign(&mut self, rhs: Credits) {
        self.0 += rhs.0;
    }
}

impl Sub for Credits {
    type Output = Credits;
    fn sub(self, rhs: Credits) -> Credits {
        Credits(self.0 - rhs.0)
    }
}

impl SubAssign for Credits {
    fn sub_assign(&mut self, rhs: Credits) {
        self.0 -= rhs.0;
    }
}

impl Neg for Credits {
    type Output = Credits;
    fn neg(self) -> Credits {
        Credits(-self.0)
    }
}

impl Sum for Credits {
    fn sum<I: Iterator<Item = Credits>>(iter: I) -> Credits {
        iter.fold(Credits::ZERO, Add::add)
    }
}

impl<'a> Sum<&'a Credits> for Credits {
    fn sum<I: Iterator<Item = &'a Credits>>(iter: I) -> Credits {
        iter.copied().sum()
    }
}

impl Serialize for Credits {
    /// A JSON number written from the exact decimal text (never through `f64`).
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let raw = serde_json::value::RawValue::from_string(self.to_string()).map_err(serde::ser::Error::custom)?;
        raw.serialize(serializer)
    }
}

impl<'de> Deserialize<'de> for Credits {
    /// A JSON number or numeric string, read like ArcGIS's values ([`Credits::from_json`]).
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_any(CreditsVisitor)
    }
}

struct CreditsVisitor;

impl Visitor<'_> for CreditsVisitor {
    type Value = Credits;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("an amount of credits (a number, or a number as a string)")
    }

    fn visit_i64<E: de::Error>(self, v: i64) -> Result<Credits, E> {
        Credits::parse_rounded(&v.to_string()).map_err(E::custom)
    }

    fn visit_u64<E: de::Error>(self, v: u64) -> Result<Credits, E> {
        Credits::parse_rounded(&v.to_string()).map_err(E::custom)
    }

    fn visit_f64<E: de::Error>(self, v: f64) -> Result<Credits, E> {
        Credits::from_f64(v).map_err(E::custom)
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<Credits, E> {
        Credits::parse_rounded(v).map_err(E::custom)
    }

    // A `RawValue`-serialized amount read back through `serde_json::Value` arrives as a map
    // with serde_json's private raw-value key; `Value` itself never does that, so only
    // numbers and strings are accepted here.
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn c(text: &str) -> Credits {
        Credits::parse_exact(text).unwrap()
    }

    #[test]
    fn exact_text_round_trips() {
        for text in [
            "0",
            "250.1",
            "-750",
            "0.0002",
            "43945.364",
            "1000000000",
            "0.000001",
            "-0.5",
        ] {
            assert_eq!(c(text).to_string(), text);
        }
        assert_eq!(c("250.100").to_string(), "250.1");
        assert_eq!(c("+3").to_string(), "3");
        assert_eq!(c(".5").to_string(), "0.5");
        assert_eq!(c("5.").to_string(), "5");
        assert_eq!(c("-0").to_string(), "0");
    }

    #[test]
    fn exponents_as_arcgis_writes_them() {
        assert_eq!(c("5.0018196E7"), Credits::whole(50_018_196));
        assert_eq!(c("2.0E-4").micros(), 200);
        assert_eq!(c("1e2"), Credits::whole(100));
        assert_eq!(c("1.5E+1").to_string(), "15");
    }

    #[test]
    fn decimal_arithmetic_has_no_float_noise() {
        // 0.1 + 0.2, and a top-up of 1000 assigned and 949.9 available to 200 available.
        assert_eq!((c("0.1") + c("0.2")).to_string(), "0.3");
        // 1000 − 949.9 is 50.10000000000002 in f64; 50.1 exactly here.
        let consumed = c("1000") - c("949.9");
        assert_eq!((consumed + c("200")).to_string(), "250.1");
        let total: Credits = ["43945.364", "0.000001", "-0.000001"].iter().map(|t| c(t)).sum();
        assert_eq!(total.to_string(), "43945.364");
    }

    #[test]
    fn people_get_an_error_past_six_decimals_arcgis_values_are_rounded() {
        assert!(matches!(
            Credits::parse_exact("0.30000000000000004"),
            Err(InvalidCredits::TooPrecise(_))
        ));
        assert!(matches!(
            Credits::parse_exact("1e-7"),
            Err(InvalidCredits::TooPrecise(_))
        ));
        assert_eq!(
            Credits::parse_rounded("949.9000000000001").unwrap().to_string(),
            "949.9"
        );
        assert_eq!(
            Credits::parse_rounded("0.30000000000000004").unwrap().to_string(),
            "0.3"
        );
        // Half to even at the micro-credit.
        assert_eq!(Credits::parse_rounded("0.0000005").unwrap().micros(), 0);
        assert_eq!(Credits::parse_rounded("0.0000015").unwrap().micros(), 2);
        assert_eq!(Credits::parse_rounded("0.00000151").unwrap().micros(), 2);
        assert_eq!(Credits::parse_rounded("-0.0000025").unwrap().micros(), -2);
        assert_eq!(Credits::parse_rounded("1e-30").unwrap(), Credits::ZERO);
    }

    /// Every spelling of `mantissa × 10^exponent` reads as that value rounded half to even at
    /// the micro-credit, computed here by integer division (an independent oracle).
    #[test]
    fn every_spelling_rounds_half_to_even_like_integer_division() {
        let pow = |e: u32| 10i128.pow(e);
        let expected = |mantissa: i128, exponent: i32| -> i128 {
            let shift = exponent + 6;
            if shift >= 0 {
                return mantissa * pow(shift as u32);
            }
            let divisor = pow((-shift) as u32);
            let (q, r) = (mantissa / divisor, mantissa % divisor);
            match (2 * r).cmp(&divisor) {
                std::cmp::Ordering::Greater => q + 1,
                std::cmp::Ordering::Less => q,
                std::cmp::Ordering::Equal => q + q % 2,
            }
        };
        let mantissas = [
            0i128,
            1,
            5,
            15,
            25,
            105,
            995,
            1_000,
            123_456_789,
            9_999_995,
            50_018_196,
            2_500_000,
        ];
        for mantissa in mantissas {
            for exponent in -14..=6 {
                let want = expected(mantissa, exponent);
                let digits = mantissa.to_string();
                // The same value written with an exponent, as a plain decimal, with padding
                // zeros on both sides, and negated.
                let mut spellings = vec![format!("{digits}e{exponent}"), format!("{digits}.000E{exponent:+}")];
                if exponent < 0 {
                    let point = (-exponent) as usize;
                    let padded = format!("{digits:0>width$}", width = point + 1);
                    let (int, frac) = padded.split_at(padded.len() - point);
                    spellings.push(format!("{int}.{frac}"));
                    spellings.push(format!("00{int}.{frac}00"));
                } else {
                    spellings.push(format!("{digits}{}", "0".repeat(exponent as usize)));
                }
                for text in spellings {
                    assert_eq!(Credits::parse_rounded(&text).map(Credits::micros), Ok(want), "{text}");
                    assert_eq!(
                        Credits::parse_rounded(&format!("-{text}")).map(Credits::micros),
                        Ok(-want),
                        "-{text}"
                    );
                    // People's amounts: exact, or refused as too precise.
                    let exact = exponent >= -6 || mantissa % pow((-6 - exponent) as u32) == 0;
                    match Credits::parse_exact(&text) {
                        Ok(c) => assert!(exact && c.micros() == want, "{text}"),
                        Err(e) => assert!(!exact && matches!(e, InvalidCredits::TooPrecise(_)), "{text}: {e}"),
                    }
                }
            }
        }
    }

    #[test]
    fn garbage_and_huge_values_are_refused() {
        for text in ["", "NaN", "inf", "-", "1.2.3", "12a", "e5", "1e", "0x10", "1 000"] {
            assert!(
                matches!(Credits::parse_rounded(text), Err(InvalidCredits::NotANumber(_))),
                "{text}"
            );
        }
        for text in ["1e300", "1e16", "10000000000000000", "-2e15"] {
            assert!(
                matches!(Credits::parse_rounded(text), Err(InvalidCredits::TooLarge(_))),
                "{text}"
            );
        }
        assert_eq!(Credits::parse_exact("1e15").unwrap(), Credits::MAX_ABS);
        assert!(Credits::from_f64(f64::NAN).is_err());
    }

    #[test]
    fn json_numbers_and_numeric_strings() {
        assert_eq!(
            Credits::from_json(&json!(5.0018196E7)),
            Some(Credits::whole(50_018_196))
        );
        assert_eq!(Credits::from_json(&json!("2.0E-4")).map(Credits::micros), Some(200));
        assert_eq!(Credits::from_json(&json!(" 12 ")), Some(Credits::whole(12)));
        assert_eq!(Credits::from_json(&json!(-1)), Some(Credits::whole(-1)));
        assert_eq!(
            Credits::from_json(&json!(949.9000000000001)).map(|c| c.to_string()),
            Some("949.9".into())
        );
        for v in [json!("NaN"), json!(null), json!(true), json!([1])] {
            assert_eq!(Credits::from_json(&v), None, "{v}");
        }
    }

    #[test]
    fn serde_writes_exact_numbers() {
        let v = json!({"a": c("250.1"), "b": c("-750"), "c": c("0.0002")});
        assert_eq!(v.to_string(), r#"{"a":250.1,"b":-750,"c":0.0002}"#);
        let text = serde_json::to_string(&vec![c("43945.364"), c("999999999999.999999")]).unwrap();
        assert_eq!(text, "[43945.364,999999999999.999999]");
        // Read back through a JSON parser's f64: exact up to 15 significant digits, which is
        // every amount below a billion credits with all six decimals.
        let text = serde_json::to_string(&vec![c("43945.364"), c("999999999.999999")]).unwrap();
        let back: Vec<Credits> = serde_json::from_str(&text).unwrap();
        assert_eq!(back, [c("43945.364"), c("999999999.999999")]);
        let s: Credits = serde_json::from_str(r#""2.5E2""#).unwrap();
        assert_eq!(s, Credits::whole(250));
    }

    #[test]
    fn grouped_for_reading() {
        assert_eq!(c("1234567.891").grouped(2), "1,234,567.89");
        assert_eq!(c("4000487.77").grouped(0), "4,000,488");
        assert_eq!(c("999.995").grouped(2), "1,000.00");
        assert_eq!(c("-750").grouped(2), "-750.00");
        assert_eq!(c("-0.001").grouped(2), "0.00");
        assert_eq!(c("0.0002").grouped(4), "0.0002");
        assert_eq!(c("12").grouped(9), "12.000000");
    }

    #[test]
    fn negatives_are_refused_where_they_have_no_meaning() {
        assert_eq!(c("-1").non_negative(), Err(InvalidCredits::Negative(c("-1"))));
        assert_eq!(c("0").non_negative(), Ok(Credits::ZERO));
        assert_eq!(c("-5").at_least_zero(), Credits::ZERO);
    }
}
