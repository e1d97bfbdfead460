//! `POST /allocations`: validated, guard-railed, idempotent and audited credit allocation,
//! HTTP-agnostic so it is tested without API Gateway (the `allocate` function only translates).
//!
//! One request goes through, in order (each step answers on its own when it fails, and nothing
//! is written to ArcGIS before the last one):
//! 1. route (404), method (405), caller identity (401), body size (413), content type (415);
//! 2. the body ([`body`]) and the `Idempotency-Key` header (required for anything but a dry
//!    run): 400 naming every problem;
//! 3. a dry run reads and plans, writes nothing, and answers the plan;
//! 4. everything else goes through the one apply path ([`crate::apply`]), under a key scoped to
//!    the caller (another caller's key never meets this one): claimed, locked, read, planned
//!    against every guardrail, journaled, sent, read back, audited; replayed or resumed on a
//!    retry with the same key. Its refusals map to 403, 409, 422, 502, 503 here.
//!
//! 5. a request too large to finish inside API Gateway's 30 seconds (more members than
//!    `ASYNC_ABOVE_MEMBERS`, `Prefer: respond-async`, or a synchronous attempt that ran out of
//!    time) is answered 202 with a job id and applied in the background ([`jobs`]);
//!    `GET /allocations/{job_id}` answers where it stands.
//!
//! The reply's members and statuses are described in [`reply`].

#![warn(missing_docs)]

pub mod body;
pub mod jobs;
pub mod reply;
pub mod settings;

use std::fmt;

use serde_json::{Value, json};

use crate::apply::Unfinished;
use crate::apply::{self, Applied, ApplyError, Deadline, Job, Who};
use crate::arcgis::{self, Client};
use crate::credits::plan::Breach;
use crate::ledger::{Caller, Ledger, Scope};

pub use body::{AllocationBody, Problem};
pub use jobs::JobQueue;
pub use settings::{AllocateSettings, Anonymous};

/// The one route this function serves.
pub const ROUTE: &str = "/allocations";
/// The audit trail's `source` for changes made here.
pub const AUDIT_SOURCE: &str = "allocate";
/// The principal recorded when `ALLOW_UNAUTHENTICATED` lets a call without identity through
/// (local runs only).
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
    /// The authenticated caller from the request context (IAM or JWT authorizer), if any.
    pub caller: Option<Caller>,
    /// The API Gateway / Lambda request id, for logs, audit and the response.
    pub request_id: &'a str,
    /// The raw body.
    pub body: &'a [u8],
    /// `Prefer: respond-async`: answer 202 and apply in the background whatever the size.
    pub respond_async: bool,
    /// When the invocation must be done.
    pub deadline: Deadline,
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

/// Why a request was answered without applying anything. Each maps to one status code.
#[derive(Debug, thiserror::Error)]
pub enum AllocateError {
    /// Another path than [`ROUTE`] or a job's.
    #[error("no such resource: {path}; the API is POST {ROUTE} and GET {ROUTE}/{{job_id}}")]
    NotFound {
        /// The path asked for (truncated).
        path: String,
    },
    /// Another method than the resource's.
    #[error("method {method} is not allowed here; use {allow}")]
    MethodNotAllowed {
        /// The method used.
        method: String,
        /// The method the resource takes.
        allow: &'static str,
    },
    /// No job with this id for this caller.
    #[error(
        "no allocation job {id} for this caller: use the job_id of a 202 answer, with the identity \
         that sent the request (jobs are kept for 35 days)"
    )]
    NoSuchJob {
        /// The id asked for (truncated).
        id: String,
    },
    /// The queue refused the job.
    #[error(
        "the allocation could not be queued ({0}); nothing was changed: send the same request again with \
         the same Idempotency-Key"
    )]
    Queue(String),
    /// A job record cannot be read.
    #[error("the allocation job's record cannot be read ({0}); check the ledger item REQ#<job_id>/JOB")]
    JobUnreadable(String),
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
    /// The ArcGIS credentials could not be had (Secrets Manager, client setup).
    #[error("the ArcGIS connection could not be set up: {0}")]
    Connect(String),
    /// The apply path refused or could not start.
    #[error(transparent)]
    Apply(#[from] ApplyError),
}

impl AllocateError {
    /// The HTTP status this error answers with.
    pub fn status(&self) -> u16 {
        match self {
            AllocateError::NotFound { .. } | AllocateError::NoSuchJob { .. } => 404,
            AllocateError::Queue(_) => 503,
            AllocateError::JobUnreadable(_) => 500,
            AllocateError::MethodNotAllowed { .. } => 405,
            AllocateError::Unauthenticated => 401,
            AllocateError::PayloadTooLarge { .. } => 413,
            AllocateError::UnsupportedMediaType { .. } => 415,
            AllocateError::Invalid { .. } => 400,
            AllocateError::Connect(_) => 500,
            AllocateError::Apply(e) => match e {
                ApplyError::KeyReused | ApplyError::InProgress { .. } | ApplyError::Busy { .. } => 409,
                ApplyError::MissingPrivileges(_) => 403,
                ApplyError::BudgetingDisabled
                | ApplyError::Guardrails(_)
                | ApplyError::Plan(_)
                | ApplyError::TooManyMembers { .. } => 422,
                ApplyError::Arcgis(_) => 502,
                ApplyError::OutOfTime | ApplyError::Ledger(_) | ApplyError::Unsettled(_) => 503,
                ApplyError::JournalUnreadable(_) => 500,
            },
        }
    }

    /// A stable machine-readable code.
    pub fn code(&self) -> &'static str {
        match self {
            AllocateError::NotFound { .. } => "not_found",
            AllocateError::NoSuchJob { .. } => "no_such_job",
            AllocateError::Queue(_) => "allocation_queue_unavailable",
            AllocateError::JobUnreadable(_) => "job_unreadable",
            AllocateError::MethodNotAllowed { .. } => "method_not_allowed",
            AllocateError::Unauthenticated => "unauthenticated",
            AllocateError::PayloadTooLarge { .. } => "payload_too_large",
            AllocateError::UnsupportedMediaType { .. } => "unsupported_media_type",
            AllocateError::Invalid { .. } => "invalid_request",
            AllocateError::Connect(_) => "arcgis_connection_unavailable",
            AllocateError::Apply(e) => match e {
                ApplyError::KeyReused => "idempotency_key_reused",
                ApplyError::InProgress { .. } => "idempotency_key_in_progress",
                ApplyError::Busy { .. } => "allocation_in_progress",
                ApplyError::MissingPrivileges(_) => "arcgis_missing_privileges",
                ApplyError::BudgetingDisabled => "budgeting_disabled",
                ApplyError::Arcgis(_) => "arcgis_unavailable",
                ApplyError::Guardrails(_) => "guardrail_breach",
                ApplyError::Plan(_) => "unplannable",
                ApplyError::TooManyMembers { .. } => "too_many_members",
                ApplyError::OutOfTime => "out_of_time",
                ApplyError::Unsettled(_) => "earlier_allocation_unsettled",
                ApplyError::Ledger(_) => "ledger_unavailable",
                ApplyError::JournalUnreadable(_) => "journal_unreadable",
            },
        }
    }

    fn problems(&self) -> Vec<Problem> {
        match self {
            AllocateError::Invalid { problems } => problems.clone(),
            AllocateError::Apply(ApplyError::Guardrails(breaches)) => breaches.iter().map(breach_problem).collect(),
            other => vec![Problem::general(other.to_string())],
        }
    }

    /// Seconds a client should wait before retrying, for the refusals a retry can cure.
    fn retry_after(&self) -> Option<u64> {
        let until = match self {
            AllocateError::Apply(ApplyError::InProgress { lease_until }) => *lease_until,
            AllocateError::Apply(ApplyError::Busy { until }) => *until,
            AllocateError::Queue(_)
            | AllocateError::Apply(ApplyError::OutOfTime | ApplyError::Ledger(_) | ApplyError::Unsettled(_)) => {
                return Some(1);
            }
            _ => return None,
        };
        let secs = (until - chrono::Utc::now()).num_seconds();
        Some(secs.clamp(1, 60) as u64)
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
        if let AllocateError::MethodNotAllowed { allow, .. } = self {
            reply.headers.push(("allow", (*allow).into()));
        }
        if let Some(secs) = self.retry_after() {
            reply.headers.push(("retry-after", secs.to_string()));
        }
        if let AllocateError::Apply(ApplyError::Arcgis(e)) = self {
            reply.credentials_rejected = is_sign_in(e);
        }
        reply
    }
}

fn breach_problem(breach: &Breach) -> Problem {
    Problem {
        field: None,
        username: breach.username().map(str::to_owned),
        guardrail: Some(breach.guardrail().to_owned()),
        problem: breach.to_string(),
    }
}

fn is_sign_in(e: &arcgis::Error) -> bool {
    matches!(e.root(), arcgis::Error::SignIn { .. })
}

/// Answers one request. `connect` yields the ArcGIS client; futures are lazy, so it only runs
/// once the request passed validation (a malformed request never costs a Secrets Manager
/// read). A future rather than an async closure keeps the handler's future `Send` for the
/// Lambda runtime.
pub async fn handle<F, E>(
    settings: &AllocateSettings,
    ledger: &Ledger,
    queue: Option<&JobQueue>,
    incoming: &Incoming<'_>,
    connect: F,
) -> Reply
where
    F: Future<Output = Result<Client, E>>,
    E: fmt::Display,
{
    let ledger_before = ledger.requests_made();
    let reply = match run(settings, ledger, queue, incoming, connect).await {
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
        caller = incoming.caller.as_ref().map_or("-", Caller::display),
        status = reply.status,
        ledger_requests = ledger.requests_made().saturating_sub(ledger_before),
        "allocation request answered"
    );
    reply
}

/// The caller, or why the request is refused.
fn caller(settings: &AllocateSettings, incoming: &Incoming<'_>) -> Result<Caller, AllocateError> {
    match incoming.caller.clone().filter(|c| !c.principal_id.trim().is_empty()) {
        Some(caller) => Ok(caller),
        None if settings.anonymous == Anonymous::AllowedLocally => Ok(Caller {
            kind: crate::ledger::CallerKind::Local,
            principal_id: UNAUTHENTICATED_CALLER.to_owned(),
            account: None,
            arn: None,
            issuer: None,
        }),
        None => Err(AllocateError::Unauthenticated),
    }
}

async fn run<F, E>(
    settings: &AllocateSettings,
    ledger: &Ledger,
    queue: Option<&JobQueue>,
    incoming: &Incoming<'_>,
    connect: F,
) -> Result<Reply, AllocateError>
where
    F: Future<Output = Result<Client, E>>,
    E: fmt::Display,
{
    let path = incoming.path.strip_suffix('/').unwrap_or(incoming.path);
    let not_allowed = |allow| AllocateError::MethodNotAllowed {
        method: incoming.method.chars().take(20).collect(),
        allow,
    };
    if let Some(id) = path.strip_prefix(ROUTE).and_then(|rest| rest.strip_prefix('/')) {
        if !incoming.method.eq_ignore_ascii_case("GET") {
            return Err(not_allowed("GET"));
        }
        let caller = caller(settings, incoming)?;
        return jobs::status(ledger, &caller, id).await;
    }
    if path != ROUTE {
        return Err(AllocateError::NotFound {
            path: incoming.path.chars().take(100).collect(),
        });
    }
    if !incoming.method.eq_ignore_ascii_case("POST") {
        return Err(not_allowed("POST"));
    }
    let caller = caller(settings, incoming)?;
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
    let parsed = body::parse(incoming.body, settings.applier.max_members, settings.thresholds);
    let mut problems = match incoming.idempotency_key {
        Some(key) => body::check_idempotency_key(key).err().into_iter().collect(),
        None => Vec::new(),
    };
    let request = match parsed {
        Ok(request) => request,
        Err(more) => {
            problems.extend(more);
            return Err(AllocateError::Invalid { problems });
        }
    };
    if !request.dry_run && incoming.idempotency_key.is_none() {
        problems.push(Problem::field(
            "Idempotency-Key",
            "required for a request that changes allocations: send a unique key (a UUID) and resend it \
             unchanged when you retry, so a retry after a timeout can never apply the change twice",
        ));
    }
    if !problems.is_empty() {
        return Err(AllocateError::Invalid { problems });
    }
    let key = incoming.idempotency_key.unwrap_or_default();
    let scope = Scope::of_key(caller.authority(), &caller.principal_id, key);
    let body_hash = apply::body_hash(incoming.body);
    let named = match &request.ask {
        apply::Ask::Explicit(requests) => requests.len(),
        apply::Ask::CriticalPolicy { .. } => 0,
    };
    let why = if incoming.respond_async {
        Some("asked for with Prefer: respond-async")
    } else if named > settings.async_above {
        Some("more members than one call can be sure to finish in time")
    } else {
        None
    };
    let hand_over = |why, partial| jobs::Accepted {
        scope: scope.clone(),
        caller: caller.clone(),
        request_id: incoming.request_id,
        body: incoming.body,
        body_hash: body_hash.clone(),
        why,
        partial,
    };
    if let (Some(queue), Some(why), false) = (queue, why, request.dry_run) {
        // Nothing is read from ArcGIS here: the worker does all of it.
        return jobs::accept(ledger, queue, hand_over(why, None)).await;
    }
    let who = Who {
        caller: caller.clone(),
        request_id: incoming.request_id.to_owned(),
        reason: request.reason.clone(),
        source: AUDIT_SOURCE,
    };
    let client = connect.await.map_err(|e| AllocateError::Connect(e.to_string()))?;

    // A dry run writes nothing, so repeating it is harmless: it neither reads nor records the
    // key, which stays free for the real request (whose body differs by `dry_run`).
    if request.dry_run {
        let client = client.until(incoming.deadline.work_until());
        let planned = settings.applier.preview(&client, ledger, &request.ask).await?;
        let record = apply::preview_record(&who, &request.ask, planned);
        let (status, body) = reply::render(&record, true);
        return Ok(Reply::json(status, body));
    }

    let job = Job {
        client: &client,
        ledger,
        scope: scope.clone(),
        body_hash: body_hash.clone(),
        ask: &request.ask,
        who,
        deadline: incoming.deadline,
    };
    let (record, replayed) = match (settings.applier.apply(&job).await, queue) {
        (Ok(Applied::Replayed(record)), _) => (record, true),
        // What this call could not finish in time goes on in the background.
        (Ok(Applied::Applied(record)), Some(queue))
            if matches!(
                record.meta.unfinished,
                Some(Unfinished::OutOfTime | Unfinished::Unobserved)
            ) =>
        {
            let why = "this call ran out of time with changes left; what it applied is under partial";
            return jobs::accept(ledger, queue, hand_over(why, Some(&record))).await;
        }
        (Ok(Applied::Applied(record)), _) => (record, false),
        (Err(ApplyError::OutOfTime), Some(queue)) => {
            let why = "this call ran out of time before changing anything";
            return jobs::accept(ledger, queue, hand_over(why, None)).await;
        }
        (Err(e), _) => return Err(e.into()),
    };
    let (status, body) = reply::render(&record, false);
    let mut reply = Reply::json(status, body);
    if replayed {
        tracing::info!(request_id = incoming.request_id, "idempotent replay");
        reply.headers.push((REPLAY_HEADER, "true".into()));
    }
    if record.meta.unfinished.is_some() {
        reply.headers.push(("retry-after", "1".into()));
    }
    Ok(reply)
}
