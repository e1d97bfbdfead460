//! `assignUserCredits` and `unassignUserCredits` (see docs/arcgis.md, "Setting allocations
//! (`assignUserCredits`)").

use serde::Deserialize;
use serde_json::json;
use serde_json::value::RawValue;

use super::{Ctx, auth::require};
use crate::wire::{AgolError, Reply};
use crate::world::{AllocationCall, AllocationEntry, World};

/// At most this many entries per call.
pub const MAX_ASSIGNMENTS: usize = 100;

/// At most this many decimal places in a `credits` value as written.
pub const MAX_CREDIT_DECIMALS: usize = 6;

/// One `userAssignments` entry. `credits` stays raw JSON text so that the number can be
/// checked as the client *wrote* it: a parsed `f64` no longer tells `0.3` from
/// `0.30000000000000004`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Assignment {
    username: String,
    credits: Box<RawValue>,
}

fn budgeting_required(w: &World) -> Result<(), AgolError> {
    if w.budgeting() {
        Ok(())
    } else {
        // Unverified error shape (docs/arcgis.md, "Setting allocations"); a clear envelope is
        // the conservative reading.
        Err(AgolError::new(
            400,
            "Credit budgeting is not enabled for this organization. Enable it before allocating credits.",
        ))
    }
}

/// `POST assignUserCredits`: `userAssignments` is JSON text; each entry SETS the member's
/// allocation. Unknown users and users of other orgs come back in `notAssignedUsers` with
/// `success: true` (see docs/arcgis.md, "Setting allocations (`assignUserCredits`)").
/// Validation happens before any change.
pub fn assign(w: &mut World, ctx: &Ctx) -> Result<Reply, AgolError> {
    require(&ctx.caller, &["portal:admin:manageCredits"])?;
    budgeting_required(w)?;
    let raw = ctx.params.required("userAssignments")?;
    let entries: Vec<Assignment> = serde_json::from_str(raw).map_err(|e| {
        AgolError::bad_param(
            "userAssignments",
            format!("must be a JSON array of {{\"username\",\"credits\"}} objects ({e})"),
        )
    })?;
    if entries.is_empty() {
        return Err(AgolError::bad_param("userAssignments", "must not be empty"));
    }
    if entries.len() > MAX_ASSIGNMENTS {
        return Err(AgolError::bad_param(
            "userAssignments",
            format!("{} entries; at most {MAX_ASSIGNMENTS} per request", entries.len()),
        ));
    }
    let parsed = entries
        .iter()
        .map(|e| Ok((e.username.clone(), credits_of(e)?)))
        .collect::<Result<Vec<_>, AgolError>>()?;
    let entries: Vec<AllocationEntry> = parsed.into_iter().map(|(u, c)| apply(w, u, Some(c))).collect();
    let not_assigned = record(w, ctx, "assign", entries);
    Ok(json!({"success": true, "notAssignedUsers": not_assigned}).into())
}

/// The credits of one entry: a JSON number or a numeric string, finite, `>= 0`, and written
/// with at most [`MAX_CREDIT_DECIMALS`] decimal places.
///
/// The decimal limit is a simulator strictness choice, not known ArcGIS behaviour (ArcGIS
/// may well accept and round `250.10000000000002`): credit-steward must never send float
/// noise (an allocation computed as `250.1 + 1e-14` and printed with `{}`), and the simulator
/// is where a test can catch it. Trailing zeros are not counted (`250.1000000` is `250.1`).
fn credits_of(e: &Assignment) -> Result<f64, AgolError> {
    let bad = |why: &str| AgolError::bad_param("userAssignments", format!("credits for '{}' {why}", e.username));
    let raw = e.credits.get().trim();
    // A numeric string's text is its content; anything else that is not a JSON number
    // (`true`, `null`, an array) does not parse as `f64` below.
    let text = serde_json::from_str::<String>(raw).map_or_else(|_| raw.to_string(), |s| s.trim().to_string());
    let credits = text
        .parse::<f64>()
        .ok()
        .filter(|c| c.is_finite() && *c >= 0.0)
        .ok_or_else(|| bad("must be a number >= 0"))?;
    if decimal_places(&text) > MAX_CREDIT_DECIMALS {
        return Err(bad(&format!(
            "has more than {MAX_CREDIT_DECIMALS} decimal places ({text}): float noise, not an amount"
        )));
    }
    Ok(credits)
}

/// Decimal places a number is written with, exponent included (`1.5e-7` has 8) and trailing
/// zeros of the fraction excluded (`250.10` has 1).
fn decimal_places(text: &str) -> usize {
    let (mantissa, exponent) = match text.find(['e', 'E']) {
        Some(i) => (&text[..i], text[i + 1..].parse::<i64>().unwrap_or(0)),
        None => (text, 0),
    };
    let fraction = mantissa.split_once('.').map_or("", |(_, f)| f.trim_end_matches('0'));
    let places = i64::try_from(fraction.len())
        .unwrap_or(i64::MAX)
        .saturating_sub(exponent);
    usize::try_from(places).unwrap_or(0)
}

/// Sets one member's allocation (`None` = unlimited) and says what it was.
fn apply(w: &mut World, username: String, after: Option<f64>) -> AllocationEntry {
    let member = w.by_username.get(&username).copied();
    let before = member.and_then(|i| w.org.members[i].allocation);
    if let Some(i) = member {
        w.org.members[i].allocation = after;
    }
    AllocationEntry {
        username,
        applied: member.is_some(),
        before,
        after,
    }
}

/// Appends the call to the write log and returns the usernames it did not change.
fn record(w: &mut World, ctx: &Ctx, kind: &str, entries: Vec<AllocationEntry>) -> Vec<String> {
    let not_assigned: Vec<String> = entries
        .iter()
        .filter(|e| !e.applied)
        .map(|e| e.username.clone())
        .collect();
    let order = w.allocation_calls.len() as u64 + 1;
    w.allocation_calls.push(AllocationCall {
        seq: ctx.seq,
        order,
        kind: kind.into(),
        entries,
        not_assigned: not_assigned.clone(),
    });
    not_assigned
}

/// `POST unassignUserCredits`: `usernames` is a JSON array; members become unlimited (-1).
pub fn unassign(w: &mut World, ctx: &Ctx) -> Result<Reply, AgolError> {
    require(&ctx.caller, &["portal:admin:manageCredits"])?;
    budgeting_required(w)?;
    let raw = ctx.params.required("usernames")?;
    let names: Vec<String> = serde_json::from_str(raw)
        .map_err(|_| AgolError::bad_param("usernames", "must be a JSON array of usernames"))?;
    if names.len() > MAX_ASSIGNMENTS {
        return Err(AgolError::bad_param(
            "usernames",
            format!("{} entries; at most {MAX_ASSIGNMENTS} per request", names.len()),
        ));
    }
    let entries: Vec<AllocationEntry> = names.into_iter().map(|u| apply(w, u, None)).collect();
    let not_unassigned = record(w, ctx, "unassign", entries);
    Ok(json!({"success": true, "notUnAssignedUsers": not_unassigned}).into())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decimal_places_count_what_is_written() {
        let cases = [
            ("250", 0),
            ("250.5", 1),
            ("250.10", 1),
            ("250.1000000", 1),
            ("0.000001", 6),
            ("0.30000000000000004", 17),
            ("250.10000000000002", 14),
            ("1.5e-7", 8),
            ("1e-7", 7),
            ("2.5E2", 0),
            ("1.2345678e3", 4),
        ];
        for (text, places) in cases {
            assert_eq!(decimal_places(text), places, "{text}");
        }
    }
}
