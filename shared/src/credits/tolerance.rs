//! How two credit amounts are compared.
//!
//! Credit figures arrive as decimal text (`"479.50998"`, `"2.0E-4"`) and are stored as binary
//! floating point, so a member who has exactly 10 % left in decimal can land a few ulps under
//! the line after one multiplication (`0.7 / 7.0 < 0.1` is true). The notebook flagged such
//! members as "< 10 %". Every threshold and guardrail comparison therefore goes through these
//! two functions, which treat values within a relative [`RELATIVE_TOLERANCE`] as equal.
//! The tolerance is far below anything a person would see in a report (credits are shown
//! with at most a few decimals) and far above the rounding error of a handful of operations.

/// Two amounts closer than this fraction of the larger magnitude are considered equal.
pub(crate) const RELATIVE_TOLERANCE: f64 = 1e-9;

/// `a < b`, but not when the gap is only floating-point noise.
pub(crate) fn definitely_less(a: f64, b: f64) -> bool {
    a < b && (b - a) > RELATIVE_TOLERANCE * a.abs().max(b.abs())
}

/// `a == b` up to floating-point noise.
pub(crate) fn approx_eq(a: f64, b: f64) -> bool {
    (a - b).abs() <= RELATIVE_TOLERANCE * a.abs().max(b.abs())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rounding_noise_is_not_less() {
        // 0.1 + 0.2 = 0.30000000000000004 in binary floating point.
        let sum = std::hint::black_box(0.1) + 0.2;
        assert!(0.3 < sum);
        assert!(!definitely_less(0.3, sum));
        assert!(approx_eq(0.3, sum));
    }

    #[test]
    fn real_differences_are_less() {
        assert!(definitely_less(29.99, 30.0));
        assert!(definitely_less(-0.000_1, 0.0));
        assert!(definitely_less(-1e-300, 0.0));
        assert!(!definitely_less(30.0, 29.99));
        assert!(!definitely_less(0.0, 0.0));
        assert!(!approx_eq(29.99, 30.0));
    }
}
