//! How ArcGIS encodes scalar values: numbers sometimes as strings, with exponents
//! (`"2.0E-4"`, `5.0018196E7`), booleans sometimes as `"true"` (contract §13.16).

use serde_json::Value;

/// A finite number from a JSON number or numeric string; `None` for anything else.
pub(crate) fn number(v: &Value) -> Option<f64> {
    let n = match v {
        Value::Number(n) => n.as_f64()?,
        Value::String(s) => s.trim().parse::<f64>().ok()?,
        _ => return None,
    };
    n.is_finite().then_some(n)
}

/// A non-empty string.
pub(crate) fn string(v: Option<&Value>) -> Option<String> {
    match v? {
        Value::String(s) if !s.trim().is_empty() => Some(s.clone()),
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
    fn numbers_in_every_spelling() {
        assert_eq!(number(&json!(5.0018196E7)), Some(50_018_196.0));
        assert_eq!(number(&json!("2.0E-4")), Some(0.0002));
        assert_eq!(number(&json!(" 12 ")), Some(12.0));
        assert_eq!(number(&json!(-1)), Some(-1.0));
        assert_eq!(number(&json!("NaN")), None);
        assert_eq!(number(&json!("inf")), None);
        assert_eq!(number(&json!(null)), None);
        assert_eq!(number(&json!(true)), None);
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
