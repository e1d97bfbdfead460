//! `assignUserCredits` and `unassignUserCredits` (contract §10).

use serde::Deserialize;
use serde_json::{Value, json};

use super::{Ctx, auth::require};
use crate::wire::{AgolError, Reply};
use crate::world::{AllocationCall, World};

/// At most this many entries per call.
pub const MAX_ASSIGNMENTS: usize = 100;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Assignment {
    username: String,
    credits: Value,
}

fn budgeting_required(w: &World) -> Result<(), AgolError> {
    if w.budgeting() {
        Ok(())
    } else {
        // Unverified error shape (contract §10.1); a clear envelope is the conservative reading.
        Err(AgolError::new(
            400,
            "Credit budgeting is not enabled for this organization. Enable it before allocating credits.",
        ))
    }
}

/// `POST assignUserCredits`: `userAssignments` is JSON text; each entry SETS the member's
/// allocation. Unknown users and users of other orgs come back in `notAssignedUsers` with
/// `success: true` (contract §13.13). Validation happens before any change.
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
    let mut parsed = Vec::with_capacity(entries.len());
    for e in &entries {
        let credits = match &e.credits {
            Value::Number(n) => n.as_f64(),
            Value::String(s) => s.trim().parse::<f64>().ok(),
            _ => None,
        }
        .filter(|c| c.is_finite() && *c >= 0.0)
        .ok_or_else(|| {
            AgolError::bad_param(
                "userAssignments",
                format!("credits for '{}' must be a number >= 0", e.username),
            )
        })?;
        parsed.push((e.username.clone(), credits));
    }
    let mut not_assigned = Vec::new();
    for (u, c) in &parsed {
        match w.by_username.get(u) {
            Some(&i) => w.org.members[i].allocation = Some(*c),
            None => not_assigned.push(u.clone()),
        }
    }
    w.allocation_calls.push(AllocationCall {
        seq: ctx.seq,
        kind: "assign".into(),
        entries: parsed.into_iter().map(|(u, c)| (u, Some(c))).collect(),
        not_assigned: not_assigned.clone(),
    });
    Ok(json!({"success": true, "notAssignedUsers": not_assigned}).into())
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
    let mut not_unassigned = Vec::new();
    for u in &names {
        match w.by_username.get(u) {
            Some(&i) => w.org.members[i].allocation = None,
            None => not_unassigned.push(u.clone()),
        }
    }
    w.allocation_calls.push(AllocationCall {
        seq: ctx.seq,
        kind: "unassign".into(),
        entries: names.into_iter().map(|u| (u, None)).collect(),
        not_assigned: not_unassigned.clone(),
    });
    Ok(json!({"success": true, "notUnAssignedUsers": not_unassigned}).into())
}
