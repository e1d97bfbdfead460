//! The ledger: the little durable state the functions keep between invocations, in one
//! DynamoDB table (`LEDGER_TABLE`, keys `pk` + `sk`, TTL attribute `expires_at`).
//!
//! Lambda containers come and go and EventBridge delivers at least once, so whatever must
//! survive a cold start or a retry lives here. Item kinds, by partition key, with the function
//! that writes them (the IAM policy of each function allows exactly its kinds):
//!
//! | `pk` | `sk` | what | written by |
//! |---|---|---|---|
//! | `ALERT` | `SHARD#nn`, `COMMIT#<run>` | the level last reported per member, in 64 shards, so scan-credits alerts once per crossing ([`alerts`]) | scan-credits |
//! | `ALERT` | `OUTBOX#<channel>#<run>` | a run's message an alert channel (SNS, Slack, Teams, webhook) still owes ([`alerts`], "The channels' outbox") | scan-credits |
//! | `ORG` | `MEMBERS` | the member count of the last complete listing (a speed hint, never trusted for completeness) | scan-credits |
//! | `RUN#<job>` | run key | run claims, taken *before* any side effect, so a redelivered schedule does nothing twice | scan-credits, monthly-report |
//! | `REQ#<scope>` | `HEAD`, `PAGE#n` | an allocation request: claim, lease, write-ahead journal, reply ([`requests`]) | allocate, scan-credits |
//! | `LOCK` | `ALLOCATIONS` | the org-wide allocation lease: one allocation at a time | allocate, scan-credits |
//! | `LOCK` | `PENDING` | the requests that may be unsettled, settled by the next lock holder | allocate, scan-credits |
//! | `BUDGET` | time#scope | one item per grant, summed over 24 hours for `MAX_CREDITS_PER_DAY` | allocate, scan-credits |
//! | `AUDIT#<day>` | time#scope#… | the append-only audit trail ([`audit`]) | allocate, scan-credits |
//!
//! [`Ledger`] is a concrete enum, not a trait object: async fns in traits are not
//! dyn-compatible, and two implementations do not need generics everywhere. The
//! [`memory`] implementation has the same semantics as [`dynamo`] (including conditional
//! claims, leases and expiry) and backs unit tests and local runs.
//!
//! Expired records (`expires_at` in the past) count as absent even before DynamoDB's TTL
//! sweeper deletes them (which can take days), so a run key can be claimed again once it
//! expired. Unfinished allocation requests carry no `expires_at`: they never silently turn
//! into a fresh request.

#![warn(missing_docs)]

pub mod alerts;
pub mod audit;
pub mod dynamo;
pub mod memory;
pub mod requests;

use std::collections::HashMap;
use std::fmt;

use chrono::{DateTime, NaiveDate, TimeDelta, Utc};
use serde::{Deserialize, Serialize};
use serde_json::Value;

pub use alerts::{AlertState, OutboxEntry, StagedAlerts};
pub use audit::{Appended, AuditEntry, AuditIntent, Caller, CallerKind, IntendedChange};
pub use requests::{
    Claim, HeadUpdate, LockAttempt, LockHolder, RequestClaim, RequestHead, RequestStatus, Scope, StoredRequest,
};

use crate::arcgis::ListingHint;
use crate::credits::amount::Credits;
use crate::credits::classify::Level;

/// How long a commit marker of the alert state is kept: far longer than any run takes to
/// promote what it staged.
pub const COMMIT_RETENTION: TimeDelta = TimeDelta::days(30);

/// How long a run record is kept: long enough that a yearly re-delivery is still caught and a
/// month's report can be looked up a year later.
pub const RUN_RETENTION: TimeDelta = TimeDelta::days(400);

/// The durable state shared by the functions; see the module docs for the item kinds.
#[derive(Debug)]
pub enum Ledger {
    /// The DynamoDB table (production, and tests against moto).
    Dynamo(dynamo::DynamoLedger),
    /// In-process state with the same semantics (unit tests, local runs).
    Memory(memory::MemoryLedger),
}

/// The outcome of [`Ledger::claim_run`].
#[derive(Debug, Clone, PartialEq)]
pub enum RunClaim {
    /// This invocation owns the run: go ahead with the side effects.
    Claimed,
    /// Another invocation claimed the run first: do not repeat its side effects.
    AlreadyClaimed {
        /// What the first claimant reported (`Claimed` while it is still running or crashed).
        status: RunStatus,
        /// When it was claimed.
        claimed_at: DateTime<Utc>,
        /// The first claimant's summary, once it finished.
        summary: Option<serde_json::Value>,
    },
}

/// Where a run stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RunStatus {
    /// Claimed, not finished (still running, or the claimant died).
    Claimed,
    /// Finished; its side effects happened.
    Done,
    /// Finished with a failure the claimant recorded.
    Failed,
}

impl RunStatus {
    /// The stored spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            RunStatus::Claimed => "claimed",
            RunStatus::Done => "done",
            RunStatus::Failed => "failed",
        }
    }

    fn parse(s: &str) -> Option<RunStatus> {
        match s {
            "claimed" => Some(RunStatus::Claimed),
            "done" => Some(RunStatus::Done),
            "failed" => Some(RunStatus::Failed),
            _ => None,
        }
    }
}

impl fmt::Display for RunStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Why a ledger operation failed. Every variant names the table and the operation; none is
/// ever swallowed (a ledger that silently fails would re-send alerts or re-apply top-ups).
#[derive(Debug, thiserror::Error)]
pub enum LedgerError {
    /// DynamoDB refused or could not be reached.
    #[error(
        "ledger {operation} on DynamoDB table '{table}' failed: {detail}. Check LEDGER_TABLE, the \
        table's existence in this region and the function's IAM policy for dynamodb:{action}"
    )]
    Sdk {
        /// The table.
        table: String,
        /// The ledger operation (`claim_run`, …).
        operation: &'static str,
        /// The DynamoDB action the IAM policy needs.
        action: &'static str,
        /// The SDK's error chain.
        detail: String,
    },
    /// A stored item does not have the expected shape (hand-edited, or written by another
    /// version).
    #[error(
        "ledger {operation}: item {key} in table '{table}' is malformed ({problem}); fix or \
        delete the item"
    )]
    Malformed {
        /// The table.
        table: String,
        /// The ledger operation.
        operation: &'static str,
        /// `pk/sk` of the item.
        key: String,
        /// What is wrong.
        problem: String,
    },
    /// Another invocation took the request over (its lease had expired): this one must stop
    /// writing for it.
    #[error(
        "ledger {operation}: request {key} in table '{table}' is now owned by another invocation \
        (this one's lease expired); stop and let the other finish"
    )]
    Fenced {
        /// The table.
        table: String,
        /// The ledger operation.
        operation: &'static str,
        /// `pk/sk` of the item.
        key: String,
    },
    /// Another run changed the alert state between this run's read and its write. At staging
    /// (before the email) this run sends and records nothing and the next run reports the
    /// crossings; at the commit (after it) the email went out and the next run may report
    /// them again.
    #[error(
        "ledger {operation}: alert state {key} in table '{table}' was changed by another run \
        meanwhile; {}",
        conflict_outcome(operation)
    )]
    Conflict {
        /// The table.
        table: String,
        /// The ledger operation.
        operation: &'static str,
        /// `pk/sk` of the item (the first shard that conflicted).
        key: String,
    },
    /// An operation that updates a record found none (finishing a run that was never claimed,
    /// updating a request that was never claimed, or whose record expired).
    #[error(
        "ledger {operation}: no record {key} in table '{table}': it must be claimed/begun first \
        (or it expired)"
    )]
    Missing {
        /// The table.
        table: String,
        /// The ledger operation.
        operation: &'static str,
        /// `pk/sk` of the item.
        key: String,
    },
}

/// What a [`LedgerError::Conflict`] means for the run, by the step that met it.
fn conflict_outcome(operation: &str) -> &'static str {
    if operation.starts_with("stage") {
        "this run sent and recorded nothing, the next run will report the crossings"
    } else {
        "this run's email went out but its record was overtaken, so the next run may report \
        those crossings again"
    }
}

/// The stored spelling of an alert level (`ok` is never stored: absent means ok).
fn level_str(level: Level) -> &'static str {
    match level {
        Level::Ok => "ok",
        Level::Warning => "warning",
        Level::Critical => "critical",
    }
}

fn parse_level(s: &str) -> Option<Level> {
    match s {
        "warning" => Some(Level::Warning),
        "critical" => Some(Level::Critical),
        "ok" => Some(Level::Ok),
        _ => None,
    }
}

fn run_pk(job: &str) -> String {
    format!("RUN#{job}")
}

const ALERT_PK: &str = "ALERT";
const ORG_PK: &str = "ORG";
const MEMBERS_SK: &str = "MEMBERS";
const LOCK_PK: &str = "LOCK";
const LOCK_SK: &str = "ALLOCATIONS";
const PENDING_SK: &str = "PENDING";
const BUDGET_PK: &str = "BUDGET";
const HEAD_SK: &str = "HEAD";
const JOB_SK: &str = "JOB";

fn request_pk(scope: &Scope) -> String {
    format!("REQ#{}", scope.as_str())
}

impl Ledger {
    /// An empty in-process ledger (unit tests, local runs).
    pub fn memory() -> Ledger {
        Ledger::Memory(memory::MemoryLedger::default())
    }

    /// A ledger over `table` through an existing client.
    pub fn dynamo(client: aws_sdk_dynamodb::Client, table: impl Into<String>) -> Ledger {
        Ledger::Dynamo(dynamo::DynamoLedger::new(client, table))
    }

    /// A ledger over `table` with the AWS config from the environment, on the shared HTTP
    /// client; `AWS_ENDPOINT_URL_DYNAMODB` / `AWS_ENDPOINT_URL` point it at an emulator.
    pub fn dynamo_from_env(table: impl Into<String>) -> Ledger {
        let config = crate::aws::lambda_config();
        Ledger::dynamo(aws_sdk_dynamodb::Client::new(&config), table)
    }

    /// Requests sent to DynamoDB so far (0 for the memory ledger), so a run or a request can
    /// report what its ledger work cost.
    pub fn requests_made(&self) -> u64 {
        match self {
            Ledger::Dynamo(d) => d.requests_made(),
            Ledger::Memory(_) => 0,
        }
    }

    /// The alert state: the level last reported per member (members absent were not reported,
    /// or are back to ok), and what a run needs to stage its changes against it.
    pub async fn alert_state(&self) -> Result<AlertState, LedgerError> {
        match self {
            Ledger::Dynamo(d) => d.alert_state().await,
            Ledger::Memory(m) => m.alert_state(),
        }
    }

    /// The level last reported per member ([`Ledger::alert_state`]'s levels).
    pub async fn alert_levels(&self) -> Result<HashMap<String, Level>, LedgerError> {
        Ok(self.alert_state().await?.into_levels())
    }

    /// Stages a run's alert-state changes (before its email): each changed shard gets the new
    /// content as pending, in one transaction conditioned on the versions read, so a run that
    /// raced another fails with [`LedgerError::Conflict`] and sends nothing.
    pub async fn stage_alerts(&self, staged: &StagedAlerts) -> Result<(), LedgerError> {
        if staged.shards.is_empty() {
            return Ok(());
        }
        match self {
            Ledger::Dynamo(d) => d.stage_alerts(staged).await,
            Ledger::Memory(m) => m.stage_alerts(staged),
        }
    }

    /// Commits staged changes (once the email went out): the run's marker, from which on they
    /// count, then the promotion of every staged shard, then the deletion of per-member items
    /// from before shards. See [`alerts`] for why this order neither re-sends nor loses.
    pub async fn commit_alerts(&self, staged: &StagedAlerts, now: DateTime<Utc>) -> Result<(), LedgerError> {
        if staged.is_empty() {
            return Ok(());
        }
        match self {
            Ledger::Dynamo(d) => d.commit_alerts(staged, now).await,
            Ledger::Memory(m) => m.commit_alerts(staged, now),
        }
    }

    /// Writes the messages the alert channels will owe for a run, with its staging (before
    /// anything is sent): they count once the run's commit marker exists, and are read back
    /// with the alert state ([`AlertState::owed`]).
    pub async fn stage_outbox(&self, entries: &[OutboxEntry]) -> Result<(), LedgerError> {
        if entries.is_empty() {
            return Ok(());
        }
        match self {
            Ledger::Dynamo(d) => d.stage_outbox(entries).await,
            Ledger::Memory(m) => m.stage_outbox(entries),
        }
    }

    /// Deletes a message a channel delivered (or gave up on), so no run sends it again.
    pub async fn settle_outbox(&self, channel: &str, run_key: &str) -> Result<(), LedgerError> {
        match self {
            Ledger::Dynamo(d) => d.settle_outbox(channel, run_key).await,
            Ledger::Memory(m) => m.settle_outbox(channel, run_key),
        }
    }

    /// What the last complete listing found (the org's member count, and each part's when it
    /// was listed by partition), if one was recorded.
    pub async fn listing_hint(&self) -> Result<Option<ListingHint>, LedgerError> {
        match self {
            Ledger::Dynamo(d) => d.listing_hint().await,
            Ledger::Memory(m) => m.listing_hint(),
        }
    }

    /// Records what a complete listing in run `run_key` found. A scan calls it only when the
    /// sizes changed, so `run_key` and `updated_at` say when they last did.
    pub async fn set_listing_hint(&self, hint: &ListingHint, run_key: &str) -> Result<(), LedgerError> {
        match self {
            Ledger::Dynamo(d) => d.set_listing_hint(hint, run_key).await,
            Ledger::Memory(m) => m.set_listing_hint(hint),
        }
    }

    /// Claims run `key` of `job` before any side effect (conditional put): `Claimed` for the
    /// first caller, `AlreadyClaimed` with what the first did for every later one.
    pub async fn claim_run(&self, job: &str, key: &str, now: DateTime<Utc>) -> Result<RunClaim, LedgerError> {
        match self {
            Ledger::Dynamo(d) => d.claim_run(job, key, now).await,
            Ledger::Memory(m) => m.claim_run(job, key, now),
        }
    }

    /// Records how a claimed run ended, with a record of it later claimants are shown.
    pub async fn finish_run(&self, job: &str, key: &str, status: RunStatus, record: &Value) -> Result<(), LedgerError> {
        match self {
            Ledger::Dynamo(d) => d.finish_run(job, key, status, record).await,
            Ledger::Memory(m) => m.finish_run(job, key, status, record),
        }
    }

    /// Claims request `scope` for the claim's owner until its lease ends (conditional put), or
    /// says why it must be replayed, resumed or refused; see [`RequestClaim`].
    pub async fn claim_request(&self, scope: &Scope, claim: Claim<'_>) -> Result<RequestClaim, LedgerError> {
        match self {
            Ledger::Dynamo(d) => d.claim_request(scope, claim).await,
            Ledger::Memory(m) => m.claim_request(scope, claim),
        }
    }

    /// Changes the head of a request `owner` holds; [`LedgerError::Fenced`] when another
    /// invocation took it over. A `Done` head gets its retention (`expires_at`).
    pub async fn update_request(&self, scope: &Scope, owner: &str, update: &HeadUpdate) -> Result<(), LedgerError> {
        match self {
            Ledger::Dynamo(d) => d.update_request(scope, owner, update).await,
            Ledger::Memory(m) => m.update_request(scope, owner, update),
        }
    }

    /// Deletes the claim of a request that sent nothing, so the caller may fix the request and
    /// retry with the same key. Only a `Claimed` head owned by `owner` is deleted.
    pub async fn abandon_request(&self, scope: &Scope, owner: &str) -> Result<(), LedgerError> {
        match self {
            Ledger::Dynamo(d) => d.abandon_request(scope, owner).await,
            Ledger::Memory(m) => m.abandon_request(scope, owner),
        }
    }

    /// Writes journal pages (whole: each page replaces what was stored under its number).
    pub async fn put_pages(
        &self,
        scope: &Scope,
        pages: &[(u32, serde_json::Value)],
        now: DateTime<Utc>,
    ) -> Result<(), LedgerError> {
        match self {
            Ledger::Dynamo(d) => d.put_pages(scope, pages, now).await,
            Ledger::Memory(m) => m.put_pages(scope, pages),
        }
    }

    /// Records what a queued request's job is (who queued it, its last attempt): the state an
    /// asynchronous caller polls for, next to the request's head in its partition. Kept for
    /// as long as the journal.
    pub async fn put_job(&self, scope: &Scope, job: &serde_json::Value, now: DateTime<Utc>) -> Result<(), LedgerError> {
        match self {
            Ledger::Dynamo(d) => d.put_job(scope, job, now).await,
            Ledger::Memory(m) => m.put_job(scope, job),
        }
    }

    /// The job record of request `scope`, if it was ever queued (consistent read).
    pub async fn job(&self, scope: &Scope) -> Result<Option<serde_json::Value>, LedgerError> {
        match self {
            Ledger::Dynamo(d) => d.job(scope).await,
            Ledger::Memory(m) => m.job(scope),
        }
    }

    /// The request's head and journal, if it exists (consistent read).
    pub async fn load_request(&self, scope: &Scope) -> Result<Option<StoredRequest>, LedgerError> {
        match self {
            Ledger::Dynamo(d) => d.load_request(scope).await,
            Ledger::Memory(m) => m.load_request(scope),
        }
    }

    /// Takes the org-wide allocation lock for `owner` until `until`, if it is free, expired, or
    /// already `owner`'s.
    pub async fn acquire_lock(
        &self,
        owner: &str,
        now: DateTime<Utc>,
        until: DateTime<Utc>,
    ) -> Result<LockAttempt, LedgerError> {
        match self {
            Ledger::Dynamo(d) => d.acquire_lock(owner, now, until).await,
            Ledger::Memory(m) => m.acquire_lock(owner, now, until),
        }
    }

    /// Notes that request `scope` may have writes in flight or unsettled (before its first batch
    /// is sent), so whoever takes the lock next settles it first if it is left unfinished.
    pub async fn mark_pending(&self, scope: &Scope) -> Result<(), LedgerError> {
        match self {
            Ledger::Dynamo(d) => d.mark_pending(scope).await,
            Ledger::Memory(m) => m.mark_pending(scope),
        }
    }

    /// Removes `scope` from the unsettled requests (it finished, or was settled).
    pub async fn clear_pending(&self, scope: &Scope) -> Result<(), LedgerError> {
        match self {
            Ledger::Dynamo(d) => d.clear_pending(scope).await,
            Ledger::Memory(m) => m.clear_pending(scope),
        }
    }

    /// The requests that may be unsettled (consistent read).
    pub async fn pending_requests(&self) -> Result<Vec<Scope>, LedgerError> {
        match self {
            Ledger::Dynamo(d) => d.pending_requests().await,
            Ledger::Memory(m) => m.pending_requests(),
        }
    }

    /// Releases the lock if `owner` still holds it (a lock already taken over is left alone).
    pub async fn release_lock(&self, owner: &str) -> Result<(), LedgerError> {
        match self {
            Ledger::Dynamo(d) => d.release_lock(owner).await,
            Ledger::Memory(m) => m.release_lock(owner),
        }
    }

    /// What was granted in the budget window ending at `now` (the last 24 hours).
    pub async fn granted_since(&self, now: DateTime<Utc>) -> Result<Credits, LedgerError> {
        match self {
            Ledger::Dynamo(d) => d.granted_since(now).await,
            Ledger::Memory(m) => m.granted_since(now),
        }
    }

    /// Records (or corrects) what request `scope`, planned at `at`, grants.
    pub async fn record_grant(&self, scope: &Scope, at: DateTime<Utc>, credits: Credits) -> Result<(), LedgerError> {
        match self {
            Ledger::Dynamo(d) => d.record_grant(scope, at, credits).await,
            Ledger::Memory(m) => m.record_grant(scope, at, credits),
        }
    }

    /// Appends one change to the audit trail (at most once per key).
    pub async fn record_change(&self, entry: &AuditEntry) -> Result<Appended, LedgerError> {
        match self {
            Ledger::Dynamo(d) => d.record_change(entry).await,
            Ledger::Memory(m) => m.record_change(entry),
        }
    }

    /// Appends one batch's intent to the audit trail, before the batch is sent.
    pub async fn record_intent(&self, intent: &AuditIntent) -> Result<Appended, LedgerError> {
        match self {
            Ledger::Dynamo(d) => d.record_intent(intent).await,
            Ledger::Memory(m) => m.record_intent(intent),
        }
    }

    /// Every batch intent recorded for plans made on `day` (UTC), oldest first.
    pub async fn intents_on(&self, day: NaiveDate) -> Result<Vec<AuditIntent>, LedgerError> {
        match self {
            Ledger::Dynamo(d) => d.intents_on(day).await,
            Ledger::Memory(m) => m.intents_on(day),
        }
    }

    /// Every change recorded for plans made on `day` (UTC), oldest first.
    pub async fn changes_on(&self, day: NaiveDate) -> Result<Vec<AuditEntry>, LedgerError> {
        match self {
            Ledger::Dynamo(d) => d.changes_on(day).await,
            Ledger::Memory(m) => m.changes_on(day),
        }
    }
}
