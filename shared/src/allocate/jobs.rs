//! Allocations that run in the background: `POST /allocations` answers `202 Accepted` with a
//! job id, the `allocation-jobs` function applies the request from an SQS queue through the
//! same apply path, and `GET /allocations/{job_id}` tells where it stands and, once finished,
//! answers exactly what the synchronous call would have.
//!
//! API Gateway gives up on its integration after 30 seconds. An allocation of hundreds or
//! thousands of members (each batch written, then read back), or any allocation in an org so
//! large that reading it takes most of that time, may need longer: the caller would get a 503
//! while the work went on unseen.
//!
//! # Accepting
//! A request goes to the queue when the caller asks for it (`Prefer: respond-async`), when it
//! names more members than `ASYNC_ABOVE_MEMBERS`, or when a synchronous attempt runs out of
//! time or stops with work left. Accepting writes, in order:
//! 1. the request's claim under its key (status `claimed`, its lease already over, so the first
//!    worker, or a retry of the same call, takes it over);
//! 2. the job record (who asked, what, when) next to it in the ledger;
//! 3. the message, which carries the job id only: the body stays in the ledger, never in the
//!    queue.
//!
//! A queue that refuses the message leaves the job `refused` with that reason; nothing was
//! changed and the same call can be sent again.
//!
//! # The job id
//! The request's scope: a SHA-256 of the caller's identity and their Idempotency-Key. Sending
//! the same request again gives the same job, and a job is found only by the caller who
//! queued it (the record names them; anyone else is told there is no such job).
//!
//! # Working
//! The worker claims the request as any retry does: a request nobody started is applied, one
//! left unfinished is resumed from its journal, a finished one is replayed. What cannot be
//! finished now (time ran out, another allocation holds the lock, ArcGIS or the ledger is
//! unavailable) is left on the queue: SQS delivers it again after its visibility timeout, up to
//! the queue's redrive limit, then to its dead-letter queue. A refusal no retry can cure (a
//! guardrail, budgeting off, a missing privilege) is recorded on the job and the message is
//! deleted.

use std::fmt;
use std::sync::{Arc, Mutex};

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use super::body::{self, Problem};
use super::{AUDIT_SOURCE, AllocateError, AllocateSettings, ROUTE, Reply, reply};
use crate::apply::{Applied, ApplyError, Deadline, Job, Record, Who};
use crate::arcgis::Client;
use crate::ledger::{Caller, Ledger, LedgerError, RequestStatus, Scope, StoredRequest};

/// Characters in a job id (a hex SHA-256).
pub const JOB_ID_CHARS: usize = 64;

/// The `Prefer` token (RFC 7240) that asks for a 202 whatever the request's size.
pub const RESPOND_ASYNC: &str = "respond-async";

/// What the caller is told to wait before polling, in seconds.
const POLL_AFTER_SECS: u64 = 5;

/// Where a queued job stands, as recorded by whoever touched it last.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum JobState {
    /// Waiting for the worker.
    Queued,
    /// A worker tried and stopped for a reason a retry can cure; the queue delivers it again.
    Retrying,
    /// Refused for a reason no retry cures; nothing (more) will be done.
    Refused,
}

/// A queued request as the ledger keeps it: what the worker applies, and what the caller is
/// told besides the request's own state.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct JobRecord {
    /// Who queued it: the only caller who may read it, and the one the audit trail names.
    pub caller: Caller,
    /// The API request that queued it.
    pub request_id: String,
    /// The request body, as sent (the worker validates it again with the settings of the day).
    pub body: String,
    /// SHA-256 of the body: the claim's check that the key is used with one body only.
    pub body_hash: String,
    /// When it was accepted.
    pub queued_at: DateTime<Utc>,
    /// When it was last touched.
    pub updated_at: DateTime<Utc>,
    /// Worker attempts so far.
    pub attempts: u32,
    /// Where it stands.
    pub state: JobState,
    /// The last refusal or reason for a retry: `status`, `code`, `error`, `problems`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_error: Option<Value>,
}

/// The queue message: the job id only, so no member names or amounts sit in the queue.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct JobMessage {
    /// The job to work on.
    pub job_id: String,
}

/// Where accepted jobs are sent.
#[derive(Clone)]
pub enum JobQueue {
    /// The SQS queue feeding `allocation-jobs` (`ALLOCATION_QUEUE_URL`).
    Sqs {
        /// The SQS client.
        client: aws_sdk_sqs::Client,
        /// The queue's URL.
        url: String,
    },
    /// In process, for tests: the messages sent, in order.
    Memory(Arc<Mutex<Vec<String>>>),
}

impl fmt::Debug for JobQueue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            JobQueue::Sqs { url, .. } => f.debug_struct("JobQueue::Sqs").field("url", url).finish(),
            JobQueue::Memory(_) => f.write_str("JobQueue::Memory"),
        }
    }
}

impl JobQueue {
    /// The queue at `url`, with the AWS configuration of the environment (an
    /// `AWS_ENDPOINT_URL_SQS` or `AWS_ENDPOINT_URL` points it at an emulator).
    pub fn sqs_from_env(url: String) -> JobQueue {
        let config = crate::aws::lambda_config();
        JobQueue::Sqs {
            client: aws_sdk_sqs::Client::new(&config),
            url,
        }
    }

    /// An in-process queue.
    pub fn memory() -> JobQueue {
        JobQueue::Memory(Arc::default())
    }

    /// The messages an in-process queue was sent (empty for SQS).
    pub fn sent(&self) -> Vec<String> {
        match self {
            JobQueue::Memory(sent) => sent.lock().unwrap_or_else(|e| e.into_inner()).clone(),
            JobQueue::Sqs { .. } => Vec::new(),
        }
    }

    /// Sends the message for `job_id`.
    pub async fn send(&self, job_id: &str) -> Result<(), String> {
        let message = serde_json::to_string(&JobMessage {
            job_id: job_id.to_owned(),
        })
        .map_err(|e| e.to_string())?;
        match self {
            JobQueue::Sqs { client, url } => client
                .send_message()
                .queue_url(url)
                .message_body(message)
                .send()
                .await
                .map(|_| ())
                .map_err(|e| format!("{}", aws_sdk_sqs::error::DisplayErrorContext(&e))),
            JobQueue::Memory(sent) => {
                sent.lock().unwrap_or_else(|e| e.into_inner()).push(message);
                Ok(())
            }
        }
    }
}

/// Whether `id` has the shape of a job id.
pub fn is_job_id(id: &str) -> bool {
    id.len() == JOB_ID_CHARS && id.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

/// The status URL of job `id`, relative to the API's root.
pub fn status_path(id: &str) -> String {
    format!("{ROUTE}/{id}")
}

/// What [`accept`] needs of the request.
pub(super) struct Accepted<'a> {
    pub scope: Scope,
    pub caller: Caller,
    pub request_id: &'a str,
    pub body: &'a [u8],
    pub body_hash: String,
    /// Why it went to the queue, for the caller.
    pub why: &'static str,
    /// What a synchronous attempt already did, when it handed the rest over.
    pub partial: Option<&'a Record>,
}

/// Queues a request (see the module documentation) and answers 202, or replays it when it
/// finished already.
pub(super) async fn accept(ledger: &Ledger, queue: &JobQueue, a: Accepted<'_>) -> Result<Reply, AllocateError> {
    let now = Utc::now();
    let claim = crate::ledger::Claim::new(&a.body_hash, a.request_id, now, now);
    match ledger
        .claim_request(&a.scope, claim)
        .await
        .map_err(|e| AllocateError::Apply(ApplyError::Ledger(e)))?
    {
        crate::ledger::RequestClaim::Replay(stored) => {
            let record =
                Record::from_stored(&stored).map_err(|e| AllocateError::Apply(ApplyError::JournalUnreadable(e)))?;
            let (status, body) = reply::render(&record, false);
            let mut reply = Reply::json(status, body);
            reply.headers.push((super::REPLAY_HEADER, "true".into()));
            return Ok(reply);
        }
        crate::ledger::RequestClaim::Mismatch => return Err(AllocateError::Apply(ApplyError::KeyReused)),
        // Someone works on it now; the message still goes, so the work is resumed should that
        // invocation stop.
        crate::ledger::RequestClaim::InProgress { .. }
        | crate::ledger::RequestClaim::Fresh
        | crate::ledger::RequestClaim::Resume(_) => {}
    }
    let job_id = a.scope.as_str().to_owned();
    let mut record = JobRecord {
        caller: a.caller,
        request_id: a.request_id.to_owned(),
        body: String::from_utf8_lossy(a.body).into_owned(),
        body_hash: a.body_hash,
        queued_at: now,
        updated_at: now,
        attempts: 0,
        state: JobState::Queued,
        last_error: None,
    };
    put(ledger, &a.scope, &record)
        .await
        .map_err(|e| AllocateError::Apply(ApplyError::Ledger(e)))?;
    if let Err(e) = queue.send(&job_id).await {
        tracing::error!(job_id, error = %e, "the allocation job could not be queued");
        let err = AllocateError::Queue(e);
        record.state = JobState::Refused;
        record.last_error = Some(error_json(&err));
        record.updated_at = Utc::now();
        if let Err(e) = put(ledger, &a.scope, &record).await {
            tracing::error!(job_id, error = %e, "the job's refusal was not recorded");
        }
        return Err(err);
    }
    tracing::info!(job_id, why = a.why, "allocation queued");
    let mut body = json!({
        "job_id": job_id,
        "status": "queued",
        "status_url": status_path(&job_id),
        "request_id": a.request_id,
        "message": format!(
            "accepted: {}. The allocation is applied in the background; GET status_url for its progress \
             and, once done, its result",
            a.why
        ),
    });
    if let Some(partial) = a.partial {
        body["partial"] = reply::render(partial, false).1;
    }
    let mut reply = Reply::json(202, body);
    reply.headers.push(("location", status_path(&job_id)));
    reply.headers.push(("retry-after", POLL_AFTER_SECS.to_string()));
    Ok(reply)
}

async fn put(ledger: &Ledger, scope: &Scope, record: &JobRecord) -> Result<(), LedgerError> {
    // Strings, numbers and dates only: serializing cannot fail.
    let value = serde_json::to_value(record).unwrap_or(Value::Null);
    ledger.put_job(scope, &value, record.updated_at).await
}

async fn load(ledger: &Ledger, scope: &Scope) -> Result<Option<JobRecord>, AllocateError> {
    let value = ledger
        .job(scope)
        .await
        .map_err(|e| AllocateError::Apply(ApplyError::Ledger(e)))?;
    value
        .map(serde_json::from_value)
        .transpose()
        .map_err(|e| AllocateError::JobUnreadable(e.to_string()))
}

/// The error as a caller reads it: status, code, message, problems.
fn error_json(e: &AllocateError) -> Value {
    json!({
        "status": e.status(),
        "code": e.code(),
        "error": e.to_string(),
        "problems": e.problems(),
    })
}

/// `GET /allocations/{id}`: where job `id` stands, for the caller who queued it.
pub(super) async fn status(ledger: &Ledger, caller: &Caller, id: &str) -> Result<Reply, AllocateError> {
    let not_found = || AllocateError::NoSuchJob {
        id: id.chars().take(JOB_ID_CHARS + 4).collect(),
    };
    if !is_job_id(id) {
        return Err(not_found());
    }
    let scope = Scope::from_stored(id.to_owned());
    let job = load(ledger, &scope).await?;
    let Some(job) = job.filter(|j| same_caller(&j.caller, caller)) else {
        return Err(not_found());
    };
    let stored = ledger
        .load_request(&scope)
        .await
        .map_err(|e| AllocateError::Apply(ApplyError::Ledger(e)))?;
    Ok(Reply::json(200, describe(id, &job, stored.as_ref(), Utc::now())))
}

fn same_caller(a: &Caller, b: &Caller) -> bool {
    a.principal_id == b.principal_id && a.authority() == b.authority()
}

/// The body of a status answer: the job's state, and the request's answer once there is one.
fn describe(id: &str, job: &JobRecord, stored: Option<&StoredRequest>, now: DateTime<Utc>) -> Value {
    let head = stored.map(|s| &s.head);
    let status = match (head.map(|h| (h.status, h.lease_until > now)), job.state) {
        (Some((RequestStatus::Done, _)), _) => "done",
        (Some((RequestStatus::Incomplete, _)), _) => "incomplete",
        (Some((RequestStatus::Applying, _)), _) | (Some((RequestStatus::Claimed, true)), _) => "running",
        (_, JobState::Refused) => "refused",
        (_, JobState::Retrying) => "retrying",
        (_, JobState::Queued) => "queued",
    };
    let mut body = json!({
        "job_id": id,
        "status": status,
        "status_url": status_path(id),
        "queued_at": job.queued_at,
        "updated_at": job.updated_at,
        "attempts": job.attempts,
        "request_id": job.request_id,
        "last_error": job.last_error,
    });
    let with_reply = stored.filter(|s| s.head.reply.is_some() && matches!(status, "done" | "incomplete"));
    if let Some(stored) = with_reply {
        match Record::from_stored(stored) {
            Ok(record) => {
                let (result_status, result) = reply::render(&record, false);
                body["result_status"] = json!(result_status);
                body["result"] = result;
            }
            Err(e) => body["result_error"] = json!(format!("the request's journal cannot be read: {e}")),
        }
    }
    body
}

/// What the worker did with one message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Worked {
    /// Finished (applied, replayed, or refused for good): delete the message.
    Finished {
        /// The job.
        job_id: String,
        /// `done`, `refused`, …
        outcome: &'static str,
    },
    /// Not finished: leave the message for another delivery.
    Retry {
        /// The job, when the message named one.
        job_id: Option<String>,
        /// Why, for the logs.
        reason: String,
    },
}

/// Applies the job a queue message names; see the module documentation. `owner` identifies
/// this attempt (a worker invocation and the message), unique so two deliveries of one
/// message never pass for each other.
pub async fn work<F, E>(
    settings: &AllocateSettings,
    ledger: &Ledger,
    message: &str,
    owner: &str,
    deadline: Deadline,
    connect: F,
) -> (Worked, bool)
where
    F: Future<Output = Result<Client, E>>,
    E: fmt::Display,
{
    let retry = |job_id: Option<&str>, reason: String| Worked::Retry {
        job_id: job_id.map(str::to_owned),
        reason,
    };
    let job_id = match serde_json::from_str::<JobMessage>(message) {
        Ok(m) if is_job_id(&m.job_id) => m.job_id,
        Ok(m) => return (retry(None, format!("the message names no job: {:?}", m.job_id)), false),
        Err(e) => return (retry(None, format!("the message is not a job message: {e}")), false),
    };
    let scope = Scope::from_stored(job_id.clone());
    let mut job = match load(ledger, &scope).await {
        Ok(Some(job)) => job,
        Ok(None) => {
            // Nothing to do can be had: the record expired or was never written.
            tracing::error!(job_id, "no job record for this message; it is dropped");
            return (
                Worked::Finished {
                    job_id,
                    outcome: "unknown_job",
                },
                false,
            );
        }
        Err(e) => return (retry(Some(&job_id), e.to_string()), false),
    };
    job.attempts += 1;
    let outcome = attempt(settings, ledger, &scope, &job, owner, deadline, connect).await;
    let credentials_rejected =
        matches!(&outcome, Err(AllocateError::Apply(ApplyError::Arcgis(e))) if super::is_sign_in(e));
    let worked = match outcome {
        Ok(record) if record.meta.unfinished.is_none() => Worked::Finished {
            job_id: job_id.clone(),
            outcome: "done",
        },
        Ok(_) => {
            job.state = JobState::Retrying;
            job.last_error = Some(json!({
                "code": "incomplete",
                "error": "the allocation stopped with changes left to apply or read back; it resumes on the next attempt",
            }));
            retry(Some(&job_id), "stopped with work left".into())
        }
        Err(e) if curable(&e) => {
            job.state = JobState::Retrying;
            job.last_error = Some(error_json(&e));
            retry(Some(&job_id), e.to_string())
        }
        Err(e) => {
            job.state = JobState::Refused;
            job.last_error = Some(error_json(&e));
            Worked::Finished {
                job_id: job_id.clone(),
                outcome: "refused",
            }
        }
    };
    job.updated_at = Utc::now();
    if let Err(e) = put(ledger, &scope, &job).await {
        tracing::error!(job_id, error = %e, "the job's state was not recorded");
    }
    (worked, credentials_rejected)
}

/// One attempt: validate the body again, connect, apply (or resume, or replay).
async fn attempt<F, E>(
    settings: &AllocateSettings,
    ledger: &Ledger,
    scope: &Scope,
    job: &JobRecord,
    owner: &str,
    deadline: Deadline,
    connect: F,
) -> Result<Record, AllocateError>
where
    F: Future<Output = Result<Client, E>>,
    E: fmt::Display,
{
    let request = body::parse(job.body.as_bytes(), settings.applier.max_members, settings.thresholds)
        .map_err(|problems: Vec<Problem>| AllocateError::Invalid { problems })?;
    let client = connect.await.map_err(|e| AllocateError::Connect(e.to_string()))?;
    let who = Who {
        caller: job.caller.clone(),
        request_id: owner.to_owned(),
        reason: request.reason.clone(),
        source: AUDIT_SOURCE,
    };
    let apply_job = Job {
        client: &client,
        ledger,
        scope: scope.clone(),
        body_hash: job.body_hash.clone(),
        ask: &request.ask,
        who,
        deadline,
    };
    match settings.applier.apply(&apply_job).await? {
        Applied::Replayed(record) | Applied::Applied(record) => Ok(record),
    }
}

/// Whether another delivery may succeed where this one failed.
fn curable(e: &AllocateError) -> bool {
    match e {
        AllocateError::Connect(_) | AllocateError::Queue(_) => true,
        AllocateError::Apply(e) => matches!(
            e,
            ApplyError::InProgress { .. }
                | ApplyError::Busy { .. }
                | ApplyError::OutOfTime
                | ApplyError::Ledger(_)
                | ApplyError::Unsettled(_)
                | ApplyError::Arcgis(_)
        ),
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn job_ids_are_hex_sha256_only() {
        let id = Scope::of_key(Some("1"), "p", "k");
        assert!(is_job_id(id.as_str()));
        assert!(!is_job_id(&id.as_str().to_uppercase()));
        assert!(!is_job_id(&id.as_str()[1..]));
        assert!(!is_job_id("../allocations"));
    }

    #[test]
    fn the_message_carries_the_job_id_only() {
        let queue = JobQueue::memory();
        let id = Scope::of_key(None, "p", "k");
        futures_util::FutureExt::now_or_never(queue.send(id.as_str()))
            .expect("an in-process send is immediate")
            .unwrap();
        let sent: Value = serde_json::from_str(&queue.sent()[0]).unwrap();
        assert_eq!(sent, json!({ "job_id": id.as_str() }));
    }
}
