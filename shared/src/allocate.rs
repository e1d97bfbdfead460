//! `POST /allocations`: validated, guard-railed, idempotent and audited credit allocation,
//! HTTP-agnostic so it is tested without API Gateway (the `allocate` function only translates).
//!
//! One request goes through, in order (each step answers on its own when it fails, and nothing
//! is written to ArcGIS before the last one):
//! 1. route (404), method (405), caller identity (401), body size (413), content type (415);
//! 2. the `Idempotency-Key` header and the body ([`body`]): 400 naming every problem;
//! 3. dry runs skip the ledger entirely; otherwise the key is claimed in the ledger
//!    *before* anything else ([`Ledger::begin_idempotent`]): a finished key with the same body
//!    replays its first response (header `Idempotent-Replayed: true`), a different body is 409,
//!    a key still in progress is 409 "retry later";
//! 4. ArcGIS: `portals/self` (403 when the account lacks `manageCredits`/`viewUsers`, 422 when
//!    budgeting is off), then current balances: exact `member(u)` lookups for up to
//!    [`LOOKUP_LIMIT`] named members (bounded concurrency), the full listing above that or for
//!    the policy; read failures are 502;
//! 5. the plan ([`crate::credits::plan::plan`]) against the configured guardrails: 422 listing
//!    every breach. Steps 4–5 failing release the idempotency key (nothing was written);
//! 6. dry run: 200 with the plan. Otherwise [`apply_plan`]: `assignUserCredits` in batches of
//!    100, an audit entry and a log line per changed member, and the key completed with the
//!    response. Status: **200** when no change failed, **502** when changes were attempted
//!    and none went through because every failure was a batch failure, **207** otherwise
//!    (some members `not_assigned` or `failed`). A batch that failed in transit may still have
//!    been applied by ArcGIS, so 502 and 207 are stored under the key like 200: a retry with
//!    the same key replays them instead of sending blind writes again.
//!
//! Every member named (or selected by the policy) is listed with a status: `assigned`,
//! `not_assigned` (ArcGIS's `notAssignedUsers`), `skipped` (disabled, viewer, invalid
//! balance, or `no_change`), `unknown_user`, `failed` (its batch failed) or, in a dry run,
//! `would_assign`; `before` is the balance the plan was made from and `after` what was set.

#![warn(missing_docs)]

pub mod body;

use std::collections::{HashMap, HashSet};
use std::fmt;

use chrono::{DateTime, Utc};
use futures_util::{StreamExt, stream};
use serde::Serialize;
use serde_json::{Value, json};

use crate::arcgis::{self, Capability, Client, CreditAssignment};
use crate::config::Config;
use crate::credits::classify::{Limit, ThresholdError, Thresholds};
use crate::credits::member::{Allocation, Balance, Credits, InvalidCredits, Member};
use crate::credits::plan::{self, Breach, Guardrails, Outcome, Plan, PlanError, PlanSkip, Request};
use crate::ledger::{AuditEntry, IdempotencyClaim, Ledger, LedgerError};

pub use body::{AllocationBody, Ask, Problem};

/// The one route this function serves.
pub const ROUTE: &str = "/allocations";
/// Up to this many named members are looked up one by one (one request each); above it the
/// full listing (one request per 100 members) is cheaper for most orgs and is what the daily
/// scan already exercises.
pub const LOOKUP_LIMIT: usize = 50;
/// The audit trail's `source` for changes made here.
pub const AUDIT_SOURCE: &str = "allocate";
/// The caller recorded when `ALLOW_UNAUTHENTICATED` lets a call without identity through.
pub const UNAUTHENTICATED_CALLER: &str = "unauthenticated-local";
/// Header marking a replayed response.
pub const REPLAY_HEADER: &str = "idempotent-replayed";

/// One HTTP request, reduced to what allocate needs (the edge fills it from API Gateway).
#[derive(Debug, Clone)]
pub struct Incoming<'a> {
    /// HTTP method.
    pub method: &'a str,
    /// Request path (without stage prefix).
    pub path: &'a str,
    /// The `Content-Type` header.
    pub content_type: Option<&'a str>,
    /// The `Idempotency-Key` header.
    pub idempotency_key: Option<&'a str>,
    /// The authenticated caller from the request context (IAM ARN, JWT subject), if any.
    pub caller: Option<&'a str>,
    /// The API Gateway / Lambda request id, for logs, audit and the response.
    pub request_id: &'a str,
    /// The raw body.
    pub body: &'a [u8],
    /// When the request arrived.
    pub now: DateTime<Utc>,
}

/// The answer: status, extra headers and a JSON body.
#[derive(Debug, Clone, PartialEq)]
pub struct Reply {
    /// HTTP status.
    pub status: u16,
    /// Headers besides `Content-Type: application/json`.
    pub headers: Vec<(&'static str, String)>,
    /// The JSON body.
    pub body: Value,
    /// ArcGIS refused the stored credentials: the edge should drop its cached secret so a
    /// rotated one is read on the next call.
    pub credentials_rejected: bool,
}

impl Reply {
    fn json(status: u16, body: Value) -> Reply {
        Reply {
            status,
            headers: Vec::new(),
            body,
            credentials_rejected: false,
        }
    }
}

/// Why the allocator could not be built from the configuration (fail fast at cold start).
#[derive(Debug, thiserror::Error)]
pub enum SetupError {
    /// A guardrail is not a valid amount of credits.
    #[error("{variable}: {reason}")]
    Guardrail {
        /// The environment variable.
        variable: &'static str,
        /// Why.
        reason: InvalidCredits,
    },
    /// The classification thresholds the policy uses are invalid.
    #[error("CRITICAL_PERCENT / WARNING_PERCENT: {0}")]
    Thresholds(#[from] ThresholdError),
}

/// Why a request was answered without applying anything. Each maps to one status code.
#[derive(Debug, thiserror::Error)]
pub enum AllocateError {
    /// Another path than [`ROUTE`].
    #[error("no such resource: {path}; the API is POST {ROUTE}")]
    NotFound {
        /// The path asked for (truncated).
        path: String,
    },
    /// Another method than POST.
    #[error("method {method} is not allowed on {ROUTE}; use POST")]
    MethodNotAllowed {
        /// The method used.
        method: String,
    },
    /// No caller identity in the request context.
    #[error(
        "no authenticated caller: call {ROUTE} through the API with IAM (SigV4) or JWT \
        authorization; anonymous calls are refused"
    )]
    Unauthenticated,
    /// The body is larger than [`body::MAX_BODY_BYTES`].
    #[error(
        "the body is {bytes} bytes, above the {} byte limit; split the request",
        body::MAX_BODY_BYTES
    )]
    PayloadTooLarge {
        /// Its size.
        bytes: usize,
    },
    /// Not `application/json`.
    #[error("Content-Type must be application/json, got {}", content_type.as_deref().unwrap_or("none"))]
    UnsupportedMediaType {
        /// What was sent.
        content_type: Option<String>,
    },
    /// The body or a header is invalid.
    #[error("invalid request: {} problem(s)", problems.len())]
    Invalid {
        /// Every problem.
        problems: Vec<Problem>,
    },
    /// The same key was used with a different body.
    #[error(
        "Idempotency-Key was already used with a different body: use a new key for a new \
        request, or resend the original body exactly"
    )]
    IdempotencyMismatch,
    /// The same key is being processed right now.
    #[error(
        "a request with this Idempotency-Key is still in progress: retry later with the same \
        key and body to get its response"
    )]
    IdempotencyInProgress,
    /// The ArcGIS credentials could not be had (Secrets Manager, client setup).
    #[error("the ArcGIS connection could not be set up: {0}")]
    Connect(String),
    /// The signed-in ArcGIS account may not manage credits.
    #[error("credit-steward's ArcGIS account cannot do this: {0}")]
    MissingPrivileges(arcgis::Error),
    /// The org has credit budgeting switched off: there is nothing to allocate against.
    #[error(
        "credit budgeting is off in this ArcGIS organization, so allocations cannot be set; an \
        administrator must enable it (Organization > Settings > Credits) first"
    )]
    BudgetingDisabled,
    /// Reading from ArcGIS failed; nothing was written.
    #[error("reading from ArcGIS failed, nothing was changed: {0}")]
    Arcgis(arcgis::Error),
    /// The plan breaks guardrails; nothing was written.
    #[error("the allocation breaks {} guardrail(s); nothing was changed", .0.len())]
    Guardrails(Vec<Breach>),
    /// The planner refused the requests or the org's credits (after validation: rare).
    #[error("the allocation cannot be planned: {0}")]
    Plan(PlanError),
    /// The ledger could not record the idempotency key; nothing was written.
    #[error("the idempotency ledger is unavailable, nothing was changed: {0}")]
    Ledger(LedgerError),
}

impl AllocateError {
    /// The HTTP status this error answers with.
    pub fn status(&self) -> u16 {
        match self {
            AllocateError::NotFound { .. } => 404,
            AllocateError::MethodNotAllowed { .. } => 405,
            AllocateError::Unauthenticated => 401,
            AllocateError::PayloadTooLarge { .. } => 413,
            AllocateError::UnsupportedMediaType { .. } => 415,
            AllocateError::Invalid { .. } => 400,
            AllocateError::IdempotencyMismatch | AllocateError::IdempotencyInProgress => 409,
            AllocateError::MissingPrivileges(_) => 403,
            // ArcGIS reported a NaN or infinite org balance: its answer is unusable.
            AllocateError::Plan(PlanError::InvalidOrgCredits(_)) => 502,
            AllocateError::BudgetingDisabled | AllocateError::Guardrails(_) | AllocateError::Plan(_) => 422,
            AllocateError::Connect(_) => 500,
            AllocateError::Arcgis(_) => 502,
            AllocateError::Ledger(_) => 503,
        }
    }

    /// A stable machine-readable code.
    pub fn code(&self) -> &'static str {
        match self {
            AllocateError::NotFound { .. } => "not_found",
            AllocateError::MethodNotAllowed { .. } => "method_not_allowed",
            AllocateError::Unauthenticated => "unauthenticated",
            AllocateError::PayloadTooLarge { .. } => "payload_too_large",
            AllocateError::UnsupportedMediaType { .. } => "unsupported_media_type",
            AllocateError::Invalid { .. } => "invalid_request",
            AllocateError::IdempotencyMismatch => "idempotency_key_reused",
            AllocateError::IdempotencyInProgress => "idempotency_key_in_progress",
            AllocateError::Connect(_) => "arcgis_connection_unavailable",
            AllocateError::MissingPrivileges(_) => "arcgis_missing_privileges",
            AllocateError::BudgetingDisabled => "budgeting_disabled",
            AllocateError::Arcgis(_) => "arcgis_unavailable",
            AllocateError::Guardrails(_) => "guardrail_breach",
            AllocateError::Plan(_) => "unplannable",
            AllocateError::Ledger(_) => "ledger_unavailable",
        }
    }

    fn problems(&self) -> Vec<Problem> {
        match self {
            AllocateError::Invalid { problems } => problems.clone(),
            AllocateError::Guardrails(breaches) => breaches.iter().map(breach_problem).collect(),
            other => vec![Problem::general(other.to_string())],
        }
    }

    fn reply(&self, request_id: &str) -> Reply {
        let mut reply = Reply::json(
            self.status(),
            json!({
                "error": self.to_string(),
                "code": self.code(),
                "problems": self.problems(),
                "request_id": request_id,
            }),
        );
        match self {
            AllocateError::MethodNotAllowed { .. } => reply.headers.push(("allow", "POST".into())),
            AllocateError::IdempotencyInProgress => reply.headers.push(("retry-after", "5".into())),
            AllocateError::Arcgis(e) => reply.credentials_rejected = is_sign_in(e),
            _ => {}
        }
        reply
    }
}

fn breach_problem(breach: &Breach) -> Problem {
    let (guardrail, username) = match breach {
        Breach::MaxPerMember { username, .. } => ("max_per_member", Some(username.clone())),
        Breach::MaxTotal { .. } => ("max_total", None),
        Breach::OrgReserveFloor { .. } => ("org_reserve_floor", None),
        Breach::UnlimitedChange { username } => ("unlimited_change", Some(username.clone())),
    };
    Problem {
        field: None,
        username,
        guardrail: Some(guardrail.to_owned()),
        problem: breach.to_string(),
    }
}

fn is_sign_in(e: &arcgis::Error) -> bool {
    matches!(e.root(), arcgis::Error::SignIn { .. })
}

/// What happened to one member.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum MemberStatus {
    /// The new allocation was set.
    Assigned,
    /// ArcGIS refused this member inside a successful call (`notAssignedUsers`).
    NotAssigned,
    /// Deliberately left alone (see `reason`).
    Skipped,
    /// No member has this exact username.
    UnknownUser,
    /// Its batch failed (see `error`); ArcGIS may or may not have applied it if it was sent.
    Failed,
    /// Dry run: would be set.
    WouldAssign,
}

/// One member's line in the response.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct MemberResult {
    /// Exact username.
    pub username: String,
    /// What happened.
    pub status: MemberStatus,
    /// What was asked, e.g. `{"top_up_to": 200}`.
    pub requested: Value,
    /// The balance the plan was made from (`null` for unknown users).
    pub before: Option<Balance>,
    /// What was set (or, in a dry run, would be): `{"allocation", "available"}` where
    /// `available` is expected (allocation − consumed) and `null` if unknown.
    pub after: Option<Value>,
    /// For `not_assigned` / `failed`: the allocation that was to be set.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub planned: Option<Value>,
    /// Why it was skipped or not assigned.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// For `failed`: the batch's error, and whether it was sent.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// The new allocation is below what the member already consumed (a `set` did it).
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub below_consumed: bool,
}

fn requested(request: &Request) -> Value {
    match request {
        Request::Set { credits, .. } => json!({ "set": credits }),
        Request::Add { credits, .. } => json!({ "add": credits }),
        Request::TopUpTo { credits, .. } => json!({ "top_up_to": credits }),
    }
}

fn after_json(after: &Allocation, available_after: Option<f64>) -> Value {
    json!({ "allocation": after.credits(), "available": available_after })
}

fn skip_reason(reason: PlanSkip) -> &'static str {
    match reason {
        PlanSkip::Disabled => "disabled",
        PlanSkip::Viewer => "viewer: cannot consume credits",
        PlanSkip::InvalidBalance => "invalid balance: not a finite number",
    }
}

/// Each plan entry as a response line, before anything is applied.
fn planned_results(plan: &Plan, dry_run: bool) -> Vec<MemberResult> {
    plan.entries
        .iter()
        .map(|e| {
            let mut r = MemberResult {
                username: e.username.clone(),
                status: MemberStatus::Skipped,
                requested: requested(&e.request),
                before: None,
                after: None,
                planned: None,
                reason: None,
                error: None,
                below_consumed: false,
            };
            match &e.outcome {
                Outcome::Change {
                    before,
                    after,
                    available_after,
                    below_consumed,
                    ..
                } => {
                    r.before = Some(*before);
                    r.below_consumed = *below_consumed;
                    let target = after_json(after, *available_after);
                    if dry_run {
                        r.status = MemberStatus::WouldAssign;
                        r.after = Some(target);
                    } else {
                        // Filled in by `apply_plan` from ArcGIS's answer.
                        r.planned = Some(target);
                    }
                }
                Outcome::NoChange { before } => {
                    r.before = Some(*before);
                    r.reason = Some("no_change: the allocation already satisfies the request".into());
                }
                Outcome::Skipped { before, reason } => {
                    r.before = Some(*before);
                    r.reason = Some(skip_reason(*reason).into());
                }
                Outcome::UnknownUser => r.status = MemberStatus::UnknownUser,
            }
            r
        })
        .collect()
}

/// Who applies a plan and why, for the audit trail.
#[derive(Debug, Clone)]
pub struct AuditContext<'a> {
    /// The caller (IAM ARN, JWT subject, or a scheduled job's name).
    pub caller: &'a str,
    /// The request / invocation id.
    pub request_id: &'a str,
    /// The caller's reason.
    pub reason: Option<&'a str>,
    /// `allocate` or `scan-credits auto top-up`.
    pub source: &'a str,
    /// When.
    pub at: DateTime<Utc>,
}

/// The result of [`apply_plan`].
#[derive(Debug, Clone)]
pub struct Applied {
    /// One line per plan entry, in plan order.
    pub members: Vec<MemberResult>,
    /// Audit entries that could not be recorded (the change itself happened): reported,
    /// never hidden.
    pub audit_errors: Vec<String>,
    /// Sum of increases actually applied.
    pub increase_applied: f64,
    /// A batch failed because ArcGIS refused the credentials.
    pub credentials_rejected: bool,
}

impl Applied {
    /// The HTTP status for this outcome (see the module docs).
    pub fn status(&self) -> u16 {
        let count = |s| self.members.iter().filter(|m| m.status == s).count();
        let (assigned, not_assigned, failed) = (
            count(MemberStatus::Assigned),
            count(MemberStatus::NotAssigned),
            count(MemberStatus::Failed),
        );
        match (assigned, not_assigned, failed) {
            (_, 0, 0) => 200,
            (0, 0, _) => 502,
            _ => 207,
        }
    }
}

/// Sends a plan's changes to ArcGIS (batches of 100), then records an audit entry and logs a
/// line for each member whose allocation was set. Public so scan-credits' auto top-up applies
/// plans exactly the same way.
pub async fn apply_plan(client: &Client, ledger: &Ledger, plan: &Plan, audit: &AuditContext<'_>) -> Applied {
    let mut members = planned_results(plan, false);
    let assignments: Vec<CreditAssignment> = plan
        .assignments()
        .map(|a| CreditAssignment {
            username: a.username.to_owned(),
            credits: a.credits,
        })
        .collect();
    let mut applied = Applied {
        members: Vec::new(),
        audit_errors: Vec::new(),
        increase_applied: 0.0,
        credentials_rejected: false,
    };
    if assignments.is_empty() {
        applied.members = members;
        return applied;
    }
    let (succeeded, rejected, failed): (HashSet<String>, HashSet<String>, HashMap<String, String>) =
        match client.assign_credits(&assignments).await {
            Ok(outcome) => {
                applied.credentials_rejected = outcome.failed.iter().any(|f| is_sign_in(&f.error));
                let failed = outcome
                    .failed
                    .iter()
                    .flat_map(|f| {
                        let why = if f.attempted {
                            format!(
                                "{} (ArcGIS may or may not have applied it: re-read the member before retrying)",
                                f.error
                            )
                        } else {
                            format!("not sent after an earlier batch failed: {}", f.error)
                        };
                        f.usernames.iter().map(move |u| (u.clone(), why.clone()))
                    })
                    .collect();
                (
                    outcome.succeeded.into_iter().collect(),
                    outcome.rejected.into_iter().collect(),
                    failed,
                )
            }
            Err(e) => (
                HashSet::new(),
                HashSet::new(),
                assignments
                    .iter()
                    .map(|a| (a.username.clone(), format!("not sent: {e}")))
                    .collect(),
            ),
        };

    for (result, entry) in members.iter_mut().zip(&plan.entries) {
        let Outcome::Change { increase, .. } = entry.outcome else {
            continue;
        };
        let name = &result.username;
        if succeeded.contains(name) {
            result.status = MemberStatus::Assigned;
            result.after = result.planned.take();
            applied.increase_applied += increase;
            let entry = AuditEntry {
                at: audit.at,
                request_id: audit.request_id.to_owned(),
                caller: audit.caller.to_owned(),
                reason: audit.reason.map(str::to_owned),
                source: audit.source.to_owned(),
                username: name.clone(),
                before: serde_json::to_value(result.before).unwrap_or(Value::Null),
                after: result.after.clone().unwrap_or(Value::Null),
            };
            tracing::info!(
                caller = %entry.caller,
                at = %entry.at.to_rfc3339(),
                request_id = %entry.request_id,
                reason = entry.reason.as_deref().unwrap_or(""),
                source = %entry.source,
                username = %entry.username,
                before = %entry.before,
                after = %entry.after,
                "credit allocation changed"
            );
            if let Err(e) = ledger.record_change(&entry).await {
                tracing::error!(username = %name, error = %e, "audit entry not recorded");
                applied.audit_errors.push(format!("{name}: {e}"));
            }
        } else if rejected.contains(name) {
            result.status = MemberStatus::NotAssigned;
            result.reason = Some(
                "ArcGIS refused this member (notAssignedUsers): the member may have left the org \
                 or changed; re-read it and retry"
                    .into(),
            );
        } else {
            result.status = MemberStatus::Failed;
            result.error = Some(
                failed
                    .get(name)
                    .cloned()
                    .unwrap_or_else(|| "ArcGIS did not report this member".into()),
            );
        }
    }
    applied.members = members;
    applied
}

/// Settings from [`Config`], validated once at cold start.
#[derive(Debug, Clone)]
pub struct Allocator {
    guardrails: Guardrails,
    thresholds: Thresholds,
    max_members: usize,
    allow_unauthenticated: bool,
    lookup_concurrency: usize,
}

/// A plan ready to answer or apply.
struct Prepared {
    plan: Plan,
    warnings: Vec<String>,
}

impl Allocator {
    /// Builds the allocator from the validated configuration.
    pub fn from_config(config: &Config) -> Result<Allocator, SetupError> {
        let g = &config.guardrails;
        let credits = |variable: &'static str, x: f64| {
            Credits::new(x).map_err(|reason| SetupError::Guardrail { variable, reason })
        };
        Ok(Allocator {
            guardrails: Guardrails {
                max_per_member: credits("MAX_CREDITS_PER_MEMBER", g.max_per_member)?,
                max_total: credits("MAX_CREDITS_PER_PLAN", g.max_total)?,
                org_reserve_floor: credits("ORG_RESERVE_CREDITS", g.org_reserve)?,
                // Turning an unlimited member into a limited one is a policy change, not a
                // top-up: the API refuses it (422) rather than offer a flag to do it.
                allow_unlimited_change: false,
            },
            thresholds: Thresholds::new(
                Limit::Percent(config.critical_percent),
                Limit::Percent(config.warning_percent),
            )?,
            max_members: config.max_members_per_request,
            allow_unauthenticated: config.allow_unauthenticated,
            lookup_concurrency: config.list_concurrency.max(1),
        })
    }

    /// Answers one request. `connect` yields the ArcGIS client; futures are lazy, so it only
    /// runs once the request passed validation (a malformed request never costs a Secrets
    /// Manager read). A future rather than an async closure keeps the handler's future `Send`
    /// for the Lambda runtime.
    pub async fn handle<F, E>(&self, ledger: &Ledger, incoming: &Incoming<'_>, connect: F) -> Reply
    where
        F: Future<Output = Result<Client, E>>,
        E: fmt::Display,
    {
        let reply = match self.run(ledger, incoming, connect).await {
            Ok(reply) => reply,
            Err(e) => {
                tracing::warn!(
                    request_id = incoming.request_id,
                    status = e.status(),
                    code = e.code(),
                    error = %e,
                    "allocation request refused"
                );
                e.reply(incoming.request_id)
            }
        };
        tracing::info!(
            request_id = incoming.request_id,
            caller = incoming.caller.unwrap_or("-"),
            status = reply.status,
            "allocation request answered"
        );
        reply
    }

    async fn run<F, E>(&self, ledger: &Ledger, incoming: &Incoming<'_>, connect: F) -> Result<Reply, AllocateError>
    where
        F: Future<Output = Result<Client, E>>,
        E: fmt::Display,
    {
        let path = incoming.path.strip_suffix('/').unwrap_or(incoming.path);
        if path != ROUTE {
            return Err(AllocateError::NotFound {
                path: incoming.path.chars().take(100).collect(),
            });
        }
        if !incoming.method.eq_ignore_ascii_case("POST") {
            return Err(AllocateError::MethodNotAllowed {
                method: incoming.method.chars().take(20).collect(),
            });
        }
        let caller = match incoming.caller.map(str::trim).filter(|c| !c.is_empty()) {
            Some(caller) => caller,
            None if self.allow_unauthenticated => UNAUTHENTICATED_CALLER,
            None => return Err(AllocateError::Unauthenticated),
        };
        if incoming.body.len() > body::MAX_BODY_BYTES {
            return Err(AllocateError::PayloadTooLarge {
                bytes: incoming.body.len(),
            });
        }
        let is_json = incoming.content_type.is_some_and(|ct| {
            ct.split(';')
                .next()
                .is_some_and(|media| media.trim().eq_ignore_ascii_case("application/json"))
        });
        if !is_json {
            return Err(AllocateError::UnsupportedMediaType {
                content_type: incoming.content_type.map(|c| c.chars().take(100).collect()),
            });
        }
        let mut problems = Vec::new();
        if let Some(key) = incoming.idempotency_key
            && let Err(p) = body::check_idempotency_key(key)
        {
            problems.push(p);
        }
        let parsed = body::parse(incoming.body, self.max_members);
        let request = match parsed {
            Ok(request) if problems.is_empty() => request,
            Ok(_) => return Err(AllocateError::Invalid { problems }),
            Err(more) => {
                problems.extend(more);
                return Err(AllocateError::Invalid { problems });
            }
        };

        // A dry run writes nothing, so repeating it is harmless: it neither reads nor records
        // the key, which stays free for the real request (whose body differs by `dry_run`).
        if request.dry_run {
            let client = connect.await.map_err(|e| AllocateError::Connect(e.to_string()))?;
            let prepared = self.prepare(&client, &request).await?;
            let members = planned_results(&prepared.plan, true);
            return Ok(Reply::json(
                200,
                response_json(
                    incoming,
                    caller,
                    &request,
                    &prepared,
                    &members,
                    prepared.plan.org_available_after,
                    &[],
                ),
            ));
        }

        let key = incoming.idempotency_key;
        if let Some(key) = key {
            let hash = body::body_hash(incoming.body);
            match ledger
                .begin_idempotent(key, &hash, incoming.now)
                .await
                .map_err(AllocateError::Ledger)?
            {
                IdempotencyClaim::Fresh => {}
                IdempotencyClaim::Replay { status_code, response } => {
                    tracing::info!(request_id = incoming.request_id, status_code, "idempotent replay");
                    let mut reply = Reply::json(status_code, response);
                    reply.headers.push((REPLAY_HEADER, "true".into()));
                    return Ok(reply);
                }
                IdempotencyClaim::InProgress => return Err(AllocateError::IdempotencyInProgress),
                IdempotencyClaim::Mismatch => return Err(AllocateError::IdempotencyMismatch),
            }
        }

        let prepared = match connect.await {
            Ok(client) => self.prepare(&client, &request).await.map(|p| (client, p)),
            Err(e) => Err(AllocateError::Connect(e.to_string())),
        };
        let (client, prepared) = match prepared {
            Ok(ok) => ok,
            Err(e) => {
                // Nothing was written: let the client fix the request and retry with the key.
                if let Some(key) = key
                    && let Err(le) = ledger.abandon_idempotent(key).await
                {
                    tracing::error!(
                        request_id = incoming.request_id,
                        error = %le,
                        "idempotency key not released; retries with it answer 409 until it expires"
                    );
                }
                return Err(e);
            }
        };

        let audit = AuditContext {
            caller,
            request_id: incoming.request_id,
            reason: request.reason.as_deref(),
            source: AUDIT_SOURCE,
            at: incoming.now,
        };
        let applied = apply_plan(&client, ledger, &prepared.plan, &audit).await;
        let status = applied.status();
        let org_after = prepared.plan.org_available_before - applied.increase_applied;
        let body = response_json(
            incoming,
            caller,
            &request,
            &prepared,
            &applied.members,
            org_after,
            &applied.audit_errors,
        );
        let mut reply = Reply::json(status, body);
        reply.credentials_rejected = applied.credentials_rejected;
        if let Some(key) = key
            && let Err(e) = ledger.complete_idempotent(key, status, &reply.body).await
        {
            // The writes happened; answering an error would invite a blind retry. Say it.
            tracing::error!(request_id = incoming.request_id, error = %e, "idempotent response not stored");
            if let Some(warnings) = reply.body.get_mut("warnings").and_then(Value::as_array_mut) {
                warnings.push(Value::String(format!(
                    "the response could not be stored under the Idempotency-Key ({e}); a retry with \
                     this key answers 409 until the key expires"
                )));
            }
        }
        Ok(reply)
    }

    /// Reads what the plan needs from ArcGIS and makes it; writes nothing.
    async fn prepare(&self, client: &Client, request: &AllocationBody) -> Result<Prepared, AllocateError> {
        let org = client.org_properties().await.map_err(AllocateError::Arcgis)?;
        org.ensure(Capability::ManageCredits)
            .map_err(AllocateError::MissingPrivileges)?;
        if !org.budgeting_enabled {
            return Err(AllocateError::BudgetingDisabled);
        }
        let mut warnings = Vec::new();
        let (requests, members) =
            match &request.ask {
                Ask::Explicit(requests) => {
                    let names: Vec<&str> = requests.iter().map(Request::username).collect();
                    let members = self.current_members(client, &names, &mut warnings).await?;
                    (requests.clone(), members)
                }
                Ask::CriticalPolicy { top_up_to } => {
                    let list = client.list_members().await.map_err(AllocateError::Arcgis)?;
                    warnings.extend(list.problems.iter().map(|p| {
                        format!("the member listing is incomplete, some critical members may be missing: {p}")
                    }));
                    let requests = plan::critical_top_up(&list.members, &self.thresholds, *top_up_to);
                    (requests, list.members)
                }
            };
        let plan = plan::plan(&requests, &members, org.available_credits, &self.guardrails).map_err(|e| match e {
            PlanError::GuardrailBreaches(b) => AllocateError::Guardrails(b),
            other => AllocateError::Plan(other),
        })?;
        Ok(Prepared { plan, warnings })
    }

    /// The named members as ArcGIS has them now; unknown names are simply absent.
    async fn current_members(
        &self,
        client: &Client,
        names: &[&str],
        warnings: &mut Vec<String>,
    ) -> Result<Vec<Member>, AllocateError> {
        if names.len() <= LOOKUP_LIMIT {
            return self.look_up(client, names).await;
        }
        let list = client.list_members().await.map_err(AllocateError::Arcgis)?;
        let mut members = list.members;
        if !list.problems.is_empty() {
            // An incomplete listing must not make a real member look unknown: check the
            // missing names one by one.
            let listed: HashSet<&str> = members.iter().map(|m| m.username.as_str()).collect();
            let missing: Vec<&str> = names.iter().copied().filter(|n| !listed.contains(n)).collect();
            warnings.push(format!(
                "the member listing was incomplete ({} problem(s)); {} named member(s) missing from it were looked up one by one",
                list.problems.len(),
                missing.len()
            ));
            let found = self.look_up(client, &missing).await?;
            members.extend(found);
        }
        Ok(members)
    }

    /// Exact lookups, `lookup_concurrency` at a time. Not found → absent; any other failure
    /// fails the request (a plan from a guessed balance could overspend).
    async fn look_up(&self, client: &Client, names: &[&str]) -> Result<Vec<Member>, AllocateError> {
        // Owned names: a closure over `&str` makes the future not `Send` for every lifetime,
        // which the Lambda runtime requires.
        let owned: Vec<String> = names.iter().map(|n| (*n).to_owned()).collect();
        let mut lookups = stream::iter(owned)
            .map(|name| async move { client.member(&name).await })
            .buffer_unordered(self.lookup_concurrency);
        let mut members = Vec::with_capacity(names.len());
        while let Some(result) = lookups.next().await {
            match result {
                Ok(member) => members.push(member),
                Err(arcgis::Error::NotFound { .. }) => {}
                Err(e) => return Err(AllocateError::Arcgis(e)),
            }
        }
        Ok(members)
    }
}

/// The success body, for dry runs and applied requests alike.
fn response_json(
    incoming: &Incoming<'_>,
    caller: &str,
    request: &AllocationBody,
    prepared: &Prepared,
    members: &[MemberResult],
    org_available_after: f64,
    audit_errors: &[String],
) -> Value {
    let count = |s: MemberStatus| members.iter().filter(|m| m.status == s).count();
    let plan = &prepared.plan;
    json!({
        "request_id": incoming.request_id,
        "dry_run": request.dry_run,
        "caller": caller,
        "reason": request.reason,
        "policy": match request.ask {
            Ask::CriticalPolicy { top_up_to } => json!({"name": "critical", "top_up_to": top_up_to.get()}),
            Ask::Explicit(_) => Value::Null,
        },
        "org": {
            "available_before": plan.org_available_before,
            // Worst case: every newly allocated credit spent (allocations are limits).
            "available_after": org_available_after,
        },
        "summary": {
            "members": members.len(),
            "would_assign": count(MemberStatus::WouldAssign),
            "assigned": count(MemberStatus::Assigned),
            "not_assigned": count(MemberStatus::NotAssigned),
            "skipped": count(MemberStatus::Skipped),
            "unknown_user": count(MemberStatus::UnknownUser),
            "failed": count(MemberStatus::Failed),
            "total_increase": plan.total_increase,
            "total_decrease": plan.total_decrease,
        },
        "members": members,
        "warnings": prepared.warnings,
        "audit_errors": audit_errors,
    })
}
