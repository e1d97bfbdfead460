//! The audit trail: who changed which allocation, when, why, from what to what.
//!
//! Append-only by construction: every item is written with `attribute_not_exists(pk)` under a
//! sort key derived from the plan (plan time, request scope, member), never from the time of
//! writing, so a resumed request that writes the same entry again finds it already there and
//! leaves it; no code path updates or deletes an audit item, and the IAM policies deny
//! `UpdateItem`/`DeleteItem` on these keys to every role.
//!
//! Two kinds of items share the day's partition (`AUDIT#<YYYY-MM-DD>`, the plan's UTC day):
//! - an [`AuditIntent`] per batch, written *before* the batch is sent: what is about to be
//!   set, so a write whose outcome is never learned (the function killed mid-call) is still
//!   on record as possibly applied;
//! - an [`AuditEntry`] per member whose allocation was observed changed, written after the
//!   members were read back: the balance before, the allocation planned, the allocation
//!   observed, and whether they agree.

use chrono::{DateTime, NaiveDate, SecondsFormat, Utc};
use serde::{Deserialize, Serialize};

use crate::credits::amount::Credits;
use crate::credits::member::Balance;

/// How a caller proved who they are.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CallerKind {
    /// SigV4 through API Gateway's IAM authorizer.
    Iam,
    /// A JWT authorizer.
    Jwt,
    /// A scheduled job of credit-steward itself (the automatic top-up).
    Job,
    /// A local run that allowed calls without identity (`ALLOW_UNAUTHENTICATED`).
    Local,
}

/// Who asked for a change, as API Gateway's authorizer established it (never what the caller
/// chose to call themselves: an assumed role's session name alone proves nothing, so the
/// principal id and the account are kept beside the ARN).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Caller {
    /// How they authenticated.
    pub kind: CallerKind,
    /// The stable principal id: IAM `userId` (`AIDA…`, or `AROA…:session` for a role), the
    /// JWT `sub`, or the job's name.
    pub principal_id: String,
    /// The AWS account, for IAM callers.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub account: Option<String>,
    /// The IAM ARN, for IAM callers.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub arn: Option<String>,
    /// The token's issuer, for JWT callers.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub issuer: Option<String>,
}

impl Caller {
    /// A scheduled job of credit-steward (its runs are keyed by schedule time).
    pub fn job(name: &str) -> Caller {
        Caller {
            kind: CallerKind::Job,
            principal_id: name.to_owned(),
            account: None,
            arn: None,
            issuer: None,
        }
    }

    /// Who vouches for the principal id: the AWS account for an IAM caller, the token's
    /// issuer for a JWT caller. Principal ids are unique only within it (two identity
    /// providers may both have a subject `alice`), so idempotency keys are scoped by both.
    pub fn authority(&self) -> Option<&str> {
        match self.kind {
            CallerKind::Iam => self.account.as_deref(),
            CallerKind::Jwt => self.issuer.as_deref(),
            CallerKind::Job | CallerKind::Local => None,
        }
    }

    /// What people read: an IAM caller's ARN, anyone else's principal id (a JWT's subject,
    /// a job's name); never the issuer, which every user of an identity pool shares.
    pub fn display(&self) -> &str {
        match self.kind {
            CallerKind::Iam => self.arn.as_deref().unwrap_or(&self.principal_id),
            CallerKind::Jwt | CallerKind::Job | CallerKind::Local => &self.principal_id,
        }
    }
}

/// One changed member, as kept in the audit trail.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AuditEntry {
    /// When the change was observed (read back from ArcGIS).
    pub at: DateTime<Utc>,
    /// When the plan was made: with `scope` and `username`, the entry's identity.
    pub planned_at: DateTime<Utc>,
    /// The request's scope (a hash of caller and Idempotency-Key, or of the scheduled run).
    pub scope: String,
    /// The invocation that recorded it (API Gateway / Lambda request id).
    pub request_id: String,
    /// Who asked.
    pub caller: Caller,
    /// Why, as the caller put it.
    pub reason: Option<String>,
    /// Which path made the change (`allocate`, `scan-credits auto top-up`).
    pub source: String,
    /// The member changed.
    pub username: String,
    /// The member's balance the plan was made from.
    pub before: Balance,
    /// The allocation the plan set.
    pub planned: Credits,
    /// The member's balance read back after the write.
    pub observed: Balance,
    /// Whether the observed allocation is the planned one (ArcGIS's behaviour on reallocation
    /// is not fully documented, so it is checked, never assumed).
    pub matches_plan: bool,
}

impl AuditEntry {
    /// The partition key: one partition per UTC day of the plan, so a day's changes are one
    /// query.
    pub fn partition_key(day: NaiveDate) -> String {
        format!("AUDIT#{}", day.format("%Y-%m-%d"))
    }

    /// The sort key: plan time first (so a day reads in order), then the request scope and the
    /// member, so the same change always lands on the same key and is written at most once.
    pub fn sort_key(&self) -> String {
        format!(
            "{}#{}#change#{}",
            stamp(self.planned_at),
            short(&self.scope),
            self.username
        )
    }
}

/// What one batch was about to set, written before the batch is sent.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AuditIntent {
    /// When the batch was about to be sent.
    pub at: DateTime<Utc>,
    /// When the plan was made.
    pub planned_at: DateTime<Utc>,
    /// The request's scope.
    pub scope: String,
    /// The batch's number within this invocation's sending (0-based).
    pub batch: u32,
    /// The invocation sending it (a resumed request sends from another invocation, under
    /// another key).
    pub request_id: String,
    /// Who asked.
    pub caller: Caller,
    /// Why.
    pub reason: Option<String>,
    /// Which path.
    pub source: String,
    /// `(username, assigned before, allocation to set)` for every member of the batch.
    pub members: Vec<IntendedChange>,
}

/// One member of an [`AuditIntent`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct IntendedChange {
    /// The member.
    pub username: String,
    /// The balance the plan was made from.
    pub before: Balance,
    /// The allocation to set.
    pub target: Credits,
}

impl AuditIntent {
    /// The sort key: sorts with the request's change entries, unique per invocation and batch.
    pub fn sort_key(&self) -> String {
        format!(
            "{}#{}#intent#{}#{:04}",
            stamp(self.planned_at),
            short(&self.scope),
            self.request_id,
            self.batch
        )
    }
}

/// Whether an append-only write added the item or found it already there.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Appended {
    /// Written now.
    Recorded,
    /// The same key was already written (a resumed request recording an entry again).
    AlreadyRecorded,
}

fn stamp(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Millis, true)
}

/// The first 16 hex digits of a scope: unique enough within one millisecond of one day.
fn short(scope: &str) -> &str {
    scope.get(..16).unwrap_or(scope)
}
