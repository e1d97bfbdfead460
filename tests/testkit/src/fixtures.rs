//! The AWS-shaped event fixtures in `tests/fixtures/`.

use serde_json::Value;

/// Parses `tests/fixtures/<name>`; a missing or invalid fixture fails loudly, naming the path.
pub fn fixture(name: &str) -> Value {
    let path = crate::lambda::workspace_root().join("tests/fixtures").join(name);
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}
