//! The ledger: the little durable state the functions keep between invocations, in one
//! DynamoDB table (`LEDGER_TABLE`).
//!
//! Lambda containers come and go and EventBridge delivers at least once, so whatever must
//! survive a cold start or a retry lives here:
//! - **alert state** (`pk="ALERT"`, `sk=<username>`): the level last reported per member, so
//!   scan-credits alerts once per crossing, not once per day;
//! - **run records** (`pk="RUN#<job>"`, `sk=<run key>`): claimed with a conditional put
//!   *before* any side effect, so a redelivered schedule does not email or top up twice;
//! - **idempotency records** (`pk="IDEM"`, `sk=<Idempotency-Key>`): allocate's key → response,
//!   so a retried POST replays the first answer instead of writing again;
//! - **audit trail** (`pk="AUDIT#<YYYY-MM-DD>"`): one item per changed member, who, when, why,
//!   before and after;
//! - **org size** (`pk="ORG"`, `sk="MEMBERS"`): the member count of the last complete listing,
//!   so the next scan requests every page at once instead of waiting for the first page's
//!   `total` (one round trip less; a hint, never trusted for completeness).
//!
//! [`Ledger`] is a concrete enum, not a trait object: async fns in traits are not
//! dyn-compatible, and two implementations do not need generics everywhere. The
//! [`memory`] implementation has the same semantics as [`dynamo`] (including conditional
//! claims and expiry) and backs unit tests and local runs.
//!
//! Expired records (`expires_at` in the past) count as absent even before DynamoDB's TTL
//! sweeper deletes them (which can take days), so a key can be claimed again once it expired.

#![warn(missing_docs)]

pub mod dynamo;
pub mod memory;

use std::collections::HashMap;
use std::fmt;

use chrono::{DateTime, NaiveDate, SecondsFormat, TimeDelta, Utc};
use serde::{Deserialize, Serialize};

use crate::credits::classify::Level;

/// How long a run record is kept: long enough that a yearly re-delivery is still caught and a
/// month's report can be looked up a year later.
pub const RUN_RETENTION: TimeDelta = TimeDelta::days(400);

/// How long an idempotency key is remembered: clients retry within minutes; a day covers an
/// operator re-running a script the next morning, as common practice (Stripe) does.
pub const IDEMPOTENCY_RETENTION: TimeDelta = TimeDelta::hours(24);

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

/// The outcome of [`Ledger::begin_idempotent`].
#[derive(Debug, Clone, PartialEq)]
pub enum IdempotencyClaim {
    /// First use of the key: it is now recorded as in progress; do the work, then
    /// [`Ledger::complete_idempotent`] (or [`Ledger::abandon_idempotent`] if nothing was written).
    Fresh,
    /// The key was used with the same body and finished: answer with this, write nothing.
    Replay {
        /// The first response's HTTP status.
        status_code: u16,
        /// The first response's JSON body.
        response: serde_json::Value,
    },
    /// The key is being processed right now (or its processor died mid-way): retry later.
    InProgress,
    /// The key was used with a different body: a client bug, refuse.
    Mismatch,
}

/// One changed member, as kept in the audit trail.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AuditEntry {
    /// When the change was applied.
    pub at: DateTime<Utc>,
    /// The invocation that applied it (Lambda / API Gateway request id).
    pub request_id: String,
    /// Who asked (IAM ARN, JWT subject, or the scheduled job).
    pub caller: String,
    /// Why, as the caller put it.
    pub reason: Option<String>,
    /// Which path made the change (`allocate`, `scan-credits auto top-up`).
    pub source: String,
    /// The member changed.
    pub username: String,
    /// The member's state before (allocation, available, …).
    pub before: serde_json::Value,
    /// What was set.
    pub after: serde_json::Value,
}

impl AuditEntry {
    /// The partition key: one partition per UTC day, so a day's changes are one query.
    pub fn partition_key(day: NaiveDate) -> String {
        format!("AUDIT#{}", day.format("%Y-%m-%d"))
    }

    /// The sort key: time first (so a day reads in order), then request and member (so two
    /// members changed in the same millisecond do not overwrite each other).
    pub fn sort_key(&self) -> String {
        format!(
            "{}#{}#{}",
            self.at.to_rfc3339_opts(SecondsFormat::Millis, true),
            self.request_id,
            self.username
        )
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
    /// An operation that updates a record found none (finishing a run that was never claimed,
    /// completing a key that was never begun, or whose record expired).
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
const IDEM_PK: &str = "IDEM";

impl Ledger {
    /// An empty in-process ledger (unit tests, local runs).
    pub fn memory() -> Ledger {
        Ledger::Memory(memory::MemoryLedger::default())
    }

    /// A ledger over `table` through an existing client.
    pub fn dynamo(client: aws_sdk_dynamodb::Client, table: impl Into<String>) -> Ledger {
        Ledger::Dynamo(dynamo::DynamoLedger::new(client, table))
    }

    /// A ledger over `table` with the AWS config from the environment, on the ring-only HTTP
    /// client; `AWS_ENDPOINT_URL_DYNAMODB` / `AWS_ENDPOINT_URL` point it at an emulator.
    pub async fn dynamo_from_env(table: impl Into<String>) -> Ledger {
        let config = crate::secrets::load_aws_config().await;
        Ledger::dynamo(aws_sdk_dynamodb::Client::new(&config), table)
    }

    /// The level last reported per member; members absent were not reported (or are back to
    /// ok).
    pub async fn alert_levels(&self) -> Result<HashMap<String, Level>, LedgerError> {
        match self {
            Ledger::Dynamo(d) => d.alert_levels().await,
            Ledger::Memory(m) => m.alert_levels(),
        }
    }

    /// Records the level reported for `username` in run `run_key`; `None` (or `Some(Ok)`)
    /// deletes the record.
    pub async fn set_alert_level(
        &self,
        username: &str,
        level: Option<Level>,
        run_key: &str,
    ) -> Result<(), LedgerError> {
        let level = level.filter(|l| *l != Level::Ok);
        match self {
            Ledger::Dynamo(d) => d.set_alert_level(username, level, run_key).await,
            Ledger::Memory(m) => m.set_alert_level(username, level, run_key),
        }
    }

    /// The org's member count as of the last complete listing, if one was recorded.
    pub async fn member_count(&self) -> Result<Option<u64>, LedgerError> {
        match self {
            Ledger::Dynamo(d) => d.member_count().await,
            Ledger::Memory(m) => m.member_count(),
        }
    }

    /// Records the org's member count after a complete listing in run `run_key`.
    pub async fn set_member_count(&self, count: u64, run_key: &str) -> Result<(), LedgerError> {
        match self {
            Ledger::Dynamo(d) => d.set_member_count(count, run_key).await,
            Ledger::Memory(m) => m.set_member_count(count),
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

    /// Records how a claimed run ended, with a summary later claimants are shown.
    pub async fn finish_run(
        &self,
        job: &str,
        key: &str,
        status: RunStatus,
        summary: &serde_json::Value,
    ) -> Result<(), LedgerError> {
        match self {
            Ledger::Dynamo(d) => d.finish_run(job, key, status, summary).await,
            Ledger::Memory(m) => m.finish_run(job, key, status, summary),
        }
    }

    /// Records `key` as in progress for a body hashing to `body_hash` (conditional put), or
    /// says why the request must not be processed again.
    pub async fn begin_idempotent(
        &self,
        key: &str,
        body_hash: &str,
        now: DateTime<Utc>,
    ) -> Result<IdempotencyClaim, LedgerError> {
        match self {
            Ledger::Dynamo(d) => d.begin_idempotent(key, body_hash, now).await,
            Ledger::Memory(m) => m.begin_idempotent(key, body_hash, now),
        }
    }

    /// Stores the response for `key`, so retries replay it.
    pub async fn complete_idempotent(
        &self,
        key: &str,
        status_code: u16,
        response: &serde_json::Value,
    ) -> Result<(), LedgerError> {
        match self {
            Ledger::Dynamo(d) => d.complete_idempotent(key, status_code, response).await,
            Ledger::Memory(m) => m.complete_idempotent(key, status_code, response),
        }
    }

    /// Deletes an in-progress record when nothing was written (validation failure), so the
    /// client may fix the request and retry with the same key. A completed record is kept.
    pub async fn abandon_idempotent(&self, key: &str) -> Result<(), LedgerError> {
        match self {
            Ledger::Dynamo(d) => d.abandon_idempotent(key).await,
            Ledger::Memory(m) => m.abandon_idempotent(key),
        }
    }

    /// Appends one change to the audit trail.
    pub async fn record_change(&self, entry: &AuditEntry) -> Result<(), LedgerError> {
        match self {
            Ledger::Dynamo(d) => d.record_change(entry).await,
            Ledger::Memory(m) => m.record_change(entry),
        }
    }

    /// Every change recorded on `day` (UTC), oldest first.
    pub async fn changes_on(&self, day: NaiveDate) -> Result<Vec<AuditEntry>, LedgerError> {
        match self {
            Ledger::Dynamo(d) => d.changes_on(day).await,
            Ledger::Memory(m) => m.changes_on(day),
        }
    }
}
