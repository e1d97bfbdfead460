//! Setting and removing members' credit allocations (`portals/self/assignUserCredits` and
//! `unassignUserCredits`; see `docs/arcgis.md`).
//!
//! `assignUserCredits` **sets** the allocation (it does not add), at most 100 members per call,
//! and may refuse some members inside a successful answer (`notAssignedUsers`): those are
//! surfaced per member, never dropped.

use std::collections::HashSet;

use serde::Serialize;
use serde_json::Value;

use crate::credits::member::Credits;

use super::batch::{self, BatchOutcome};
use super::client::Client;
use super::endpoint::{ASSIGN_CREDITS, UNASSIGN_CREDITS};
use super::error::Error;

/// Most members per `assignUserCredits` / `unassignUserCredits` call.
pub const ALLOCATION_BATCH: usize = 100;

/// One `userAssignments` entry: a member's new allocation, the total they may spend, not an
/// increment. [`Credits`] is finite and ≥ 0 by construction (a negative number would read as
/// the `-1` "unlimited" sentinel; removing a limit is [`Client::unassign_credits`]).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct CreditAssignment {
    /// Exact username.
    pub username: String,
    /// The allocation to set.
    pub credits: Credits,
}

impl Client {
    /// Sets allocations in batches of 100. `Err` only for invalid input (nothing sent);
    /// per-member and per-batch results are in the [`BatchOutcome`].
    pub async fn assign_credits(&self, assignments: &[CreditAssignment]) -> Result<BatchOutcome, Error> {
        let what = format!("assignUserCredits for {} members", assignments.len());
        validate_usernames(&what, assignments.iter().map(|a| a.username.as_str()))?;
        let url = &self.url(&["portals", "self", "assignUserCredits"]);
        Ok(batch::run(
            assignments,
            ALLOCATION_BATCH,
            |a| &a.username,
            |chunk| async move {
                let what = format!("assignUserCredits for {} members", chunk.len());
                let assignments = serde_json::to_string(chunk).map_err(|e| Error::InvalidInput {
                    what: what.clone(),
                    reason: e.to_string(),
                })?;
                let body = self
                    .call(ASSIGN_CREDITS, url, &[("userAssignments", assignments)], &what)
                    .await?;
                refused(&body, "notAssignedUsers", &what)
            },
        )
        .await)
    }

    /// Removes allocations (the members become unlimited) in batches of 100.
    pub async fn unassign_credits(&self, usernames: &[String]) -> Result<BatchOutcome, Error> {
        let what = format!("unassignUserCredits for {} members", usernames.len());
        validate_usernames(&what, usernames.iter().map(String::as_str))?;
        let url = &self.url(&["portals", "self", "unassignUserCredits"]);
        Ok(batch::run(
            usernames,
            ALLOCATION_BATCH,
            |u| u,
            |chunk: &[String]| async move {
                let what = format!("unassignUserCredits for {} members", chunk.len());
                let list = serde_json::to_string(chunk).map_err(|e| Error::InvalidInput {
                    what: what.clone(),
                    reason: e.to_string(),
                })?;
                let body = self.call(UNASSIGN_CREDITS, url, &[("usernames", list)], &what).await?;
                refused(&body, "notUnAssignedUsers", &what)
            },
        )
        .await)
    }
}

/// Non-empty, unique usernames: a duplicate in one request makes the outcome ambiguous.
pub(crate) fn validate_usernames<'a>(what: &str, names: impl Iterator<Item = &'a str>) -> Result<(), Error> {
    let mut seen = HashSet::new();
    for name in names {
        if name.trim().is_empty() {
            return Err(Error::InvalidInput {
                what: what.to_owned(),
                reason: "empty username".into(),
            });
        }
        if !seen.insert(name) {
            return Err(Error::InvalidInput {
                what: what.to_owned(),
                reason: format!("'{name}' is listed twice"),
            });
        }
    }
    Ok(())
}

/// The members refused inside a successful answer; `success: false` fails the whole batch.
pub(crate) fn refused(body: &Value, field: &str, what: &str) -> Result<Vec<String>, Error> {
    if body.get("success").and_then(Value::as_bool) == Some(false) {
        return Err(Error::Unexpected {
            what: what.to_owned(),
            reason: "ArcGIS answered success: false".into(),
        });
    }
    Ok(match body.get(field) {
        Some(Value::Array(items)) => items
            .iter()
            .filter_map(|i| match i {
                Value::String(s) => Some(s.clone()),
                Value::Object(o) => o.get("username").and_then(Value::as_str).map(str::to_owned),
                _ => None,
            })
            .collect(),
        _ => Vec::new(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn user_assignments_are_json_text() {
        let one = CreditAssignment {
            username: "u1".into(),
            credits: Credits::parse_exact("250.1").unwrap(),
        };
        let text = serde_json::to_string(&[one]).unwrap();
        assert_eq!(text, r#"[{"username":"u1","credits":250.1}]"#);
    }

    #[test]
    fn refused_members_are_read_in_any_shape() {
        let body = json!({"success": true, "notAssignedUsers": ["user3", {"username": "user6"}]});
        assert_eq!(refused(&body, "notAssignedUsers", "x").unwrap(), vec!["user3", "user6"]);
        assert!(
            refused(&json!({"success": true}), "notAssignedUsers", "x")
                .unwrap()
                .is_empty()
        );
        assert!(refused(&json!({"success": false}), "notAssignedUsers", "x").is_err());
    }

    #[test]
    fn duplicate_or_empty_usernames_are_refused_before_sending() {
        assert!(validate_usernames("x", ["a", "b"].into_iter()).is_ok());
        assert!(validate_usernames("x", ["a", "a"].into_iter()).is_err());
        assert!(validate_usernames("x", [" "].into_iter()).is_err());
    }
}
