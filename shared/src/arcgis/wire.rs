//! How ArcGIS encodes scalar values: numbers sometimes as strings, with exponents
//! (`"2.0E-4"`, `5.0018196E7`), booleans sometimes as `"true"`. Amounts of credits are read by
//! [`Credits::from_json`]; counts by [`count`], through the same decimal reader.

use serde_json::Value;

use crate::credits::amount::Credits;

/// A whole number (a count, an offset) from a JSON number or numeric string, exponents
/// included (`"1.0E2"`); `None` for fractions and anything else.
pub(crate) fn count(v: &Value) -> Option<i64> {
    Credits::from_json(v)?.whole_units()
}

/// A non-empty string.
pub(crate) fn string(v: Option<&Value>) -> Option<String> {
    non_blank(v).map(str::to_owned)
}

/// [`string`], borrowed: for a value kept in another form than a `String`.
pub(crate) fn non_blank(v: Option<&Value>) -> Option<&str> {
    match v? {
        Value::String(s) if !s.trim().is_empty() => Some(s),
        _ => None,
    }
}

/// A boolean from `true`/`false` or their string forms.
pub(crate) fn boolean(v: Option<&Value>) -> Option<bool> {
    match v? {
        Value::Bool(b) => Some(*b),
        Value::String(s) if s.eq_ignore_ascii_case("true") => Some(true),
        Value::String(s) if s.eq_ignore_ascii_case("false") => Some(false),
        _ => None,
    }
}

/// The strings of a JSON array (other entries skipped); empty when absent.
pub(crate) fn strings(v: Option<&Value>) -> Vec<String> {
    match v {
        Some(Value::Array(items)) => items.iter().filter_map(|i| string(Some(i))).collect(),
        _ => Vec::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn counts_in_every_spelling() {
        assert_eq!(count(&json!(5.0018196E7)), Some(50_018_196));
        assert_eq!(count(&json!("1.0E2")), Some(100));
        assert_eq!(count(&json!(" 12 ")), Some(12));
        assert_eq!(count(&json!(-1)), Some(-1));
        assert_eq!(count(&json!("2.0E-4")), None);
        assert_eq!(count(&json!("NaN")), None);
        assert_eq!(count(&json!("inf")), None);
        assert_eq!(count(&json!(null)), None);
        assert_eq!(count(&json!(true)), None);
    }

    #[test]
    fn booleans_and_strings() {
        assert_eq!(boolean(Some(&json!("TRUE"))), Some(true));
        assert_eq!(boolean(Some(&json!(false))), Some(false));
        assert_eq!(boolean(Some(&json!(1))), None);
        assert_eq!(string(Some(&json!("  "))), None);
        assert_eq!(strings(Some(&json!(["a", 1, "", "b"]))), vec!["a", "b"]);
    }
}
