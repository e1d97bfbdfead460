//! Reading members back, and what their balance says about a planned change.
//!
//! `assignUserCredits` answers per batch, and an answer can be lost (a timeout, a 503 from a
//! gateway after ArcGIS applied the batch) or be wrong about what happened; what ArcGIS does
//! when an allocation is changed is not fully documented either. So the outcome of a change
//! is never taken from the write's answer alone: the member is read back and compared with
//! the balance the plan was made from and with the target.

use std::collections::{HashMap, HashSet};

use super::journal::EntryState;
use crate::arcgis::{self, Client};
use crate::credits::amount::Credits;
use crate::credits::member::{Balance, Member};

/// Up to this many members are read back one by one (one request each); above it the full
/// listing (one request per 100 members) is cheaper.
pub const LOOKUP_LIMIT: usize = 50;

/// What a balance read back says about a change from `before` to `target`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reading {
    /// The allocation is the target: applied.
    AtTarget,
    /// The allocation is what it was: not applied.
    Unchanged,
    /// Neither: changed by someone else (or by ArcGIS differently than asked).
    Elsewhere,
}

/// Compares an observed balance with a planned change.
pub fn read(observed: &Balance, before: &Balance, target: Credits) -> Reading {
    let assigned = |b: &Balance| match b {
        Balance::Unlimited => None,
        Balance::Limited { assigned, .. } => Some(*assigned),
    };
    if assigned(observed) == Some(target) {
        Reading::AtTarget
    } else if assigned(observed) == assigned(before) {
        Reading::Unchanged
    } else {
        Reading::Elsewhere
    }
}

/// The state a change settles to from a balance read back: applied at the target, a
/// conflict anywhere else; `None` while the member is still at the balance before, which each
/// caller settles by why it read (left for a retry, failed, or superseded).
pub fn settled(observed: &Balance, before: &Balance, target: Credits) -> Option<EntryState> {
    match read(observed, before, target) {
        Reading::AtTarget => Some(EntryState::Applied { observed: *observed }),
        Reading::Elsewhere => Some(EntryState::Conflict { observed: *observed }),
        Reading::Unchanged => None,
    }
}

/// The current balance of each of `names`, or why it could not be read (`no longer in the
/// organization` for members not found).
pub async fn balances(
    client: &Client,
    names: &[String],
    concurrency: usize,
) -> HashMap<String, Result<Balance, String>> {
    if names.len() > LOOKUP_LIMIT {
        return from_listing(client, names).await;
    }
    client
        .members(names.to_vec(), concurrency)
        .await
        .into_iter()
        .map(|(name, result)| {
            let balance = match result {
                Ok(m) => Ok(m.balance),
                Err(arcgis::Error::NotFound { .. }) => Err(gone()),
                Err(e) => Err(e.to_string()),
            };
            (name, balance)
        })
        .collect()
}

async fn from_listing(client: &Client, names: &[String]) -> HashMap<String, Result<Balance, String>> {
    let wanted: HashSet<&str> = names.iter().map(String::as_str).collect();
    match client.list_members().await {
        Ok(list) => {
            let mut found: HashMap<String, Result<Balance, String>> = list
                .members
                .into_iter()
                .filter(|m: &Member| wanted.contains(m.username.as_str()))
                .map(|m| (m.username, Ok(m.balance)))
                .collect();
            let complete = list.problems.is_empty();
            for name in names {
                found.entry(name.clone()).or_insert_with(|| {
                    if complete {
                        Err(gone())
                    } else {
                        Err("the member listing was incomplete and did not include this member".to_owned())
                    }
                });
            }
            found
        }
        Err(e) => {
            let why = e.to_string();
            names.iter().map(|n| (n.clone(), Err(why.clone()))).collect()
        }
    }
}

fn gone() -> String {
    "no longer in the organization".to_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limited(assigned: i64) -> Balance {
        Balance::Limited {
            assigned: Credits::whole(assigned),
            available: Credits::ZERO,
        }
    }

    #[test]
    fn readings() {
        let before = limited(1000);
        assert_eq!(read(&limited(1100), &before, Credits::whole(1100)), Reading::AtTarget);
        assert_eq!(read(&limited(1000), &before, Credits::whole(1100)), Reading::Unchanged);
        assert_eq!(read(&limited(1200), &before, Credits::whole(1100)), Reading::Elsewhere);
        assert_eq!(
            read(&Balance::Unlimited, &before, Credits::whole(1100)),
            Reading::Elsewhere
        );
        assert_eq!(
            read(&Balance::Unlimited, &Balance::Unlimited, Credits::whole(5)),
            Reading::Unchanged
        );
    }
}
