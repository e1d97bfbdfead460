//! The `POST /allocations` answer, rendered from a request's [`Record`]: the same function
//! renders a dry run, a request applied now and a replay, so a replay answers exactly what the
//! first invocation answered.
//!
//! Every member named (or selected by the policy) is listed with a status:
//! - `assigned`: read back at the planned allocation;
//! - `not_assigned`: ArcGIS refused the member (`notAssignedUsers`);
//! - `failed`: the write failed and the member was read back unchanged;
//! - `conflict`: read back at neither the old nor the planned allocation (changed elsewhere);
//!   never re-sent;
//! - `unknown`: could not be read back; a retry with the same key finds out;
//! - `pending`: not applied yet (time ran out, or a transient failure); a retry with the same
//!   key sends it;
//! - `skipped` (disabled, viewer, or `no_change`), `unknown_user`, and `would_assign` in a dry
//!   run.
//!
//! Status: **503** (with `Retry-After`) while something is pending or unknown: retry with the
//! same key to finish; otherwise **200** when nothing failed, **502** when changes were
//! attempted and none went through, **207** for a mix.

use serde::Serialize;
use serde_json::{Value, json};

use crate::apply::{EntryState, JournalEntry, Record, Unfinished};
use crate::credits::amount::Credits;
use crate::credits::member::{Allocation, Balance};
use crate::credits::plan::{Outcome, Request};

/// What happened to one member.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum MemberStatus {
    /// Read back at the planned allocation.
    Assigned,
    /// ArcGIS refused this member inside a successful call (`notAssignedUsers`).
    NotAssigned,
    /// The write failed and the member is unchanged.
    Failed,
    /// Changed by someone else: not re-sent.
    Conflict,
    /// Could not be read back after the write.
    Unknown,
    /// Not applied yet; a retry with the same key applies it.
    Pending,
    /// Deliberately left alone (see `reason`).
    Skipped,
    /// No member has this exact username.
    UnknownUser,
    /// Dry run: would be set.
    WouldAssign,
}

/// `{"allocation", "available"}` as people read a balance; `available` is `null` when unknown.
fn figures(allocation: Option<Credits>, available: Option<Credits>) -> Value {
    json!({ "allocation": allocation, "available": available })
}

fn balance_figures(b: &Balance) -> Value {
    match b {
        Balance::Unlimited => json!({ "allocation": Value::Null, "available": Value::Null, "unlimited": true }),
        Balance::Limited { assigned, available } => figures(Some(*assigned), Some(*available)),
    }
}

fn requested(request: &Request) -> Value {
    json!({ (request.action()): request.credits() })
}

/// One member's line.
fn member_line(entry: &JournalEntry, dry_run: bool) -> (MemberStatus, Value) {
    let mut line = json!({
        "username": entry.username,
        "requested": requested(&entry.request),
        "before": Value::Null,
        "after": Value::Null,
    });
    let status = match &entry.plan {
        Outcome::UnknownUser => MemberStatus::UnknownUser,
        Outcome::NoChange { before } => {
            line["before"] = json!(before);
            line["reason"] = json!("no_change: the allocation already satisfies the request");
            MemberStatus::Skipped
        }
        Outcome::Skipped { before, reason } => {
            line["before"] = json!(before);
            line["reason"] = json!(reason.to_string());
            MemberStatus::Skipped
        }
        Outcome::Change {
            before,
            after,
            available_after,
            below_consumed,
            ..
        } => {
            line["before"] = json!(before);
            let planned = figures(Allocation::credits(after), *available_after);
            if *below_consumed {
                line["below_consumed"] = json!(true);
            }
            change_line(&mut line, entry.state.as_ref(), planned, dry_run)
        }
    };
    line["status"] = json!(status);
    (status, line)
}

fn change_line(line: &mut Value, state: Option<&EntryState>, planned: Value, dry_run: bool) -> MemberStatus {
    match state {
        None if dry_run => {
            line["after"] = planned;
            MemberStatus::WouldAssign
        }
        Some(EntryState::Applied { observed }) => {
            line["after"] = balance_figures(observed);
            MemberStatus::Assigned
        }
        Some(EntryState::NotAssigned) => {
            line["planned"] = planned;
            line["reason"] = json!(
                "ArcGIS refused this member (notAssignedUsers): the member may have left the org or changed; \
                 re-read it and retry"
            );
            MemberStatus::NotAssigned
        }
        Some(EntryState::NotApplied { error, observed }) => {
            line["planned"] = planned;
            line["after"] = balance_figures(observed);
            line["error"] = json!(error);
            MemberStatus::Failed
        }
        Some(EntryState::Conflict { observed }) => {
            line["planned"] = planned;
            line["after"] = balance_figures(observed);
            line["reason"] = json!(
                "the allocation read back is neither the one before nor the one planned: it was changed \
                 elsewhere (or ArcGIS applied something else). Not sent again; check the member"
            );
            MemberStatus::Conflict
        }
        Some(EntryState::Unknown { error }) => {
            line["planned"] = planned;
            line["error"] = json!(format!(
                "could not be read back after the write ({error}); retry with the same Idempotency-Key to find out"
            ));
            MemberStatus::Unknown
        }
        Some(EntryState::Planned) | None => {
            line["planned"] = planned;
            line["reason"] = json!("not applied yet: retry with the same Idempotency-Key to apply it");
            MemberStatus::Pending
        }
    }
}

/// The HTTP status and the body for a record (see the module documentation).
pub fn render(record: &Record, dry_run: bool) -> (u16, Value) {
    let meta = &record.meta;
    let lines: Vec<(MemberStatus, Value)> = record.entries.iter().map(|e| member_line(e, dry_run)).collect();
    let count = |s: MemberStatus| lines.iter().filter(|(st, _)| *st == s).count();
    let failed = count(MemberStatus::NotAssigned)
        + count(MemberStatus::Failed)
        + count(MemberStatus::Conflict)
        + count(MemberStatus::Unknown)
        + count(MemberStatus::Pending);
    let status = if dry_run {
        200
    } else if meta.unfinished.is_some() {
        503
    } else {
        match (count(MemberStatus::Assigned), failed) {
            (_, 0) => 200,
            (0, _) => 502,
            _ => 207,
        }
    };
    let applied_increase: Credits = record
        .entries
        .iter()
        .filter(|e| matches!(e.state, Some(EntryState::Applied { .. })))
        .filter_map(|e| e.change().map(|(_, _, increase)| increase))
        .sum();
    let increase = if dry_run { meta.total_increase } else { applied_increase };
    let incomplete = meta.unfinished.as_ref().map(|u| {
        json!({
            "reason": match u {
                Unfinished::OutOfTime => "the invocation ran out of time with changes left to apply or read back",
                Unfinished::Unobserved => "some changes could not be applied or read back yet",
                Unfinished::AuditUnavailable => "the audit trail could not be written, so the remaining changes were not sent",
            },
            "what_to_do": "retry with the same Idempotency-Key and body: the request resumes where it stopped \
                           and never applies a change twice",
        })
    });
    let body = json!({
        "request_id": meta.request_id,
        "dry_run": dry_run,
        "caller": meta.caller.display(),
        "caller_identity": meta.caller,
        "reason": meta.reason,
        "policy": meta.policy_top_up_to.map(|t| json!({"name": "critical", "top_up_to": t})),
        "org": {
            "available_before": meta.org.available,
            // Worst case: every newly allocated credit spent (allocations are limits).
            "available_after": meta.org.available - increase,
            "promised_to_members": meta.org.promised,
            "granted_last_24h": meta.org.granted_last_24h,
            "unpromised_after": meta.org.available - meta.org.promised - increase,
        },
        "summary": {
            "members": lines.len(),
            "would_assign": count(MemberStatus::WouldAssign),
            "assigned": count(MemberStatus::Assigned),
            "not_assigned": count(MemberStatus::NotAssigned),
            "failed": count(MemberStatus::Failed),
            "conflict": count(MemberStatus::Conflict),
            "unknown": count(MemberStatus::Unknown),
            "pending": count(MemberStatus::Pending),
            "skipped": count(MemberStatus::Skipped),
            "unknown_user": count(MemberStatus::UnknownUser),
            "total_increase": increase,
            "total_decrease": meta.total_decrease,
        },
        "members": lines.into_iter().map(|(_, l)| l).collect::<Vec<_>>(),
        "incomplete": incomplete,
        "warnings": meta.warnings,
        "audit_errors": meta.record_problems,
    });
    (status, body)
}
