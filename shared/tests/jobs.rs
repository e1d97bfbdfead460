//! Allocations in the background: `POST /allocations` answered 202 with a job, the worker
//! (`allocate::jobs::work`, what the `allocation-jobs` function runs per SQS message) applying
//! it exactly once however often the message is delivered, and `GET /allocations/{job_id}`
//! telling the caller, and only the caller, where it stands.

use std::time::Duration;

use chrono::{TimeDelta, Utc};
use portal_sim::SimHandle;
use serde_json::Value;
use shared::allocate::jobs::{self, Worked};
use shared::allocate::{self, AllocateSettings, Incoming, JobQueue, Reply};
use shared::apply::Deadline;
use shared::arcgis::Client;
use shared::ledger::{Caller, Ledger};

use crate::support::{admin_client, alice, allocate_settings, bob, moto_aws, sim};

/// Settings where requests naming more than two members go to the queue.
fn settings(vars: &[(&str, &str)]) -> AllocateSettings {
    allocate_settings(vars, &[("ASYNC_ABOVE_MEMBERS", "2")])
}

const THREE: &str = r#"{"allocations":[{"username":"jdoe","add":10},{"username":"jdoe2","add":20},
    {"username":"edge_10pct","set":350}],"reason":"quarter end"}"#;

/// One API call.
struct Call<'a> {
    method: &'a str,
    path: String,
    key: Option<&'a str>,
    caller: Caller,
    body: &'a str,
    respond_async: bool,
    budget: Duration,
}

fn post<'a>(body: &'a str, key: &'a str) -> Call<'a> {
    Call {
        method: "POST",
        path: "/allocations".into(),
        key: Some(key),
        caller: alice(),
        body,
        respond_async: false,
        budget: Duration::from_secs(30),
    }
}

fn get(id: &str, caller: Caller) -> Call<'static> {
    Call {
        method: "GET",
        path: jobs::status_path(id),
        key: None,
        caller,
        body: "",
        respond_async: false,
        budget: Duration::from_secs(30),
    }
}

async fn send(
    settings: &AllocateSettings,
    ledger: &Ledger,
    queue: &JobQueue,
    sim: &SimHandle,
    call: &Call<'_>,
) -> Reply {
    let incoming = Incoming {
        method: call.method,
        path: &call.path,
        content_type: Some("application/json"),
        idempotency_key: call.key,
        caller: Some(call.caller.clone()),
        request_id: "api-req-1",
        body: call.body.as_bytes(),
        respond_async: call.respond_async,
        deadline: Deadline::after(call.budget, Utc::now()),
    };
    let client = admin_client(sim);
    allocate::handle(settings, ledger, Some(queue), &incoming, async {
        Ok::<_, String>(client)
    })
    .await
}

/// What the worker does with the `n`th message the queue was sent.
async fn deliver(settings: &AllocateSettings, ledger: &Ledger, queue: &JobQueue, sim: &SimHandle, n: usize) -> Worked {
    let message = queue.sent()[n].clone();
    let client = admin_client(sim);
    let owner = format!("worker-{n}-{}", Utc::now().timestamp_nanos_opt().unwrap_or_default());
    let deadline = Deadline::after(Duration::from_secs(60), Utc::now());
    let (worked, _) = jobs::work(settings, ledger, &message, &owner, deadline, async {
        Ok::<Client, String>(client)
    })
    .await;
    worked
}

fn allocation(sim: &SimHandle, username: &str) -> Option<f64> {
    sim.member(username).and_then(|m| m.allocation)
}

fn job_id(reply: &Reply) -> String {
    reply.body["job_id"]
        .as_str()
        .unwrap_or_else(|| panic!("no job_id: {}", reply.body))
        .to_owned()
}

fn header<'a>(reply: &'a Reply, name: &str) -> Option<&'a str> {
    reply.headers.iter().find(|(n, _)| *n == name).map(|(_, v)| v.as_str())
}

#[tokio::test]
async fn a_request_too_large_for_one_call_is_accepted_then_applied_once_by_the_worker() {
    let sim = sim(30).await;
    let (ledger, queue, settings) = (Ledger::memory(), JobQueue::memory(), settings(&[]));
    let before = (allocation(&sim, "jdoe"), allocation(&sim, "jdoe2"));

    let accepted = send(&settings, &ledger, &queue, &sim, &post(THREE, "big-1")).await;
    assert_eq!(accepted.status, 202, "{}", accepted.body);
    let id = job_id(&accepted);
    assert_eq!(accepted.body["status"], "queued");
    assert_eq!(header(&accepted, "location"), Some(jobs::status_path(&id).as_str()));
    assert!(header(&accepted, "retry-after").is_some());
    assert!(sim.writes().is_empty(), "nothing is written before the worker runs");
    assert_eq!(queue.sent().len(), 1);
    assert!(
        !queue.sent()[0].contains("jdoe"),
        "the message carries no member: {}",
        queue.sent()[0]
    );

    let queued = send(&settings, &ledger, &queue, &sim, &get(&id, alice())).await;
    assert_eq!(
        (queued.status, queued.body["status"].as_str()),
        (200, Some("queued")),
        "{}",
        queued.body
    );
    assert!(queued.body.get("result").is_none_or(Value::is_null));

    let worked = deliver(&settings, &ledger, &queue, &sim, 0).await;
    assert!(
        matches!(&worked, Worked::Finished { outcome: "done", .. }),
        "{worked:?}"
    );
    assert_eq!(allocation(&sim, "jdoe"), before.0.map(|a| a + 10.0));
    assert_eq!(allocation(&sim, "jdoe2"), before.1.map(|a| a + 20.0));
    assert_eq!(allocation(&sim, "edge_10pct"), Some(350.0));
    let writes = sim.writes().len();

    // SQS delivers at least once: a second delivery replays, it never adds again.
    let again = deliver(&settings, &ledger, &queue, &sim, 0).await;
    assert!(matches!(&again, Worked::Finished { outcome: "done", .. }), "{again:?}");
    assert_eq!(sim.writes().len(), writes);
    assert_eq!(allocation(&sim, "jdoe"), before.0.map(|a| a + 10.0));

    let done = send(&settings, &ledger, &queue, &sim, &get(&id, alice())).await;
    assert_eq!(done.body["status"], "done", "{}", done.body);
    assert_eq!(done.body["result_status"], 200, "{}", done.body);
    assert_eq!(done.body["result"]["summary"]["assigned"], 3, "{}", done.body);
    assert_eq!(done.body["result"]["reason"], "quarter end");
    assert_eq!(done.body["result"]["caller"], alice().display());

    // The same request sent again (a client retry) answers what was done, not a new job.
    let replay = send(&settings, &ledger, &queue, &sim, &post(THREE, "big-1")).await;
    assert_eq!(replay.status, 200, "{}", replay.body);
    assert_eq!(header(&replay, allocate::REPLAY_HEADER), Some("true"));
    assert_eq!(sim.writes().len(), writes);
}

#[tokio::test]
async fn a_job_is_found_by_its_caller_only() {
    let sim = sim(30).await;
    let (ledger, queue, settings) = (Ledger::memory(), JobQueue::memory(), settings(&[]));
    let accepted = send(&settings, &ledger, &queue, &sim, &post(THREE, "mine")).await;
    let id = job_id(&accepted);

    let other = send(&settings, &ledger, &queue, &sim, &get(&id, bob())).await;
    assert_eq!(
        (other.status, other.body["code"].as_str()),
        (404, Some("no_such_job")),
        "{}",
        other.body
    );
    for wrong in ["not-a-job", &id.to_uppercase(), &id[..10]] {
        let reply = send(&settings, &ledger, &queue, &sim, &get(wrong, alice())).await;
        assert_eq!(reply.status, 404, "{wrong}: {}", reply.body);
    }
    let mut post_to_job = get(&id, alice());
    post_to_job.method = "POST";
    let reply = send(&settings, &ledger, &queue, &sim, &post_to_job).await;
    assert_eq!(reply.status, 405, "{}", reply.body);
    assert_eq!(header(&reply, "allow"), Some("GET"));
    // Bob's own request with Alice's key is another job.
    let mut bobs = post(THREE, "mine");
    bobs.caller = bob();
    let his = send(&settings, &ledger, &queue, &sim, &bobs).await;
    assert_eq!(his.status, 202, "{}", his.body);
    assert_ne!(job_id(&his), id);
}

#[tokio::test]
async fn prefer_respond_async_queues_a_small_request_and_a_retry_keeps_its_job() {
    let sim = sim(30).await;
    let (ledger, queue, settings) = (Ledger::memory(), JobQueue::memory(), settings(&[]));
    let body = r#"{"allocations":[{"username":"jdoe","add":5}]}"#;
    let mut call = post(body, "small-async");
    call.respond_async = true;
    let first = send(&settings, &ledger, &queue, &sim, &call).await;
    assert_eq!(first.status, 202, "{}", first.body);
    let retry = send(&settings, &ledger, &queue, &sim, &call).await;
    assert_eq!(retry.status, 202, "{}", retry.body);
    assert_eq!(job_id(&retry), job_id(&first), "the same key is the same job");
    let before = allocation(&sim, "jdoe");

    // Both messages are delivered: the change is made once.
    for n in 0..2 {
        let worked = deliver(&settings, &ledger, &queue, &sim, n).await;
        assert!(
            matches!(&worked, Worked::Finished { outcome: "done", .. }),
            "{worked:?}"
        );
    }
    assert_eq!(allocation(&sim, "jdoe"), before.map(|a| a + 5.0));
    assert_eq!(sim.writes().len(), 1, "one assignUserCredits call");

    // Without the header, a small request is answered in the call.
    let sync = send(&settings, &ledger, &queue, &sim, &post(body, "small-sync")).await;
    assert_eq!(sync.status, 200, "{}", sync.body);
    assert_eq!(queue.sent().len(), 2);
}

#[tokio::test]
async fn a_job_refused_by_a_guardrail_is_recorded_and_not_retried() {
    let sim = sim(30).await;
    let (ledger, queue) = (Ledger::memory(), JobQueue::memory());
    let strict = settings(&[("MAX_CREDITS_PER_MEMBER", "15")]);
    let accepted = send(&strict, &ledger, &queue, &sim, &post(THREE, "too-much")).await;
    assert_eq!(accepted.status, 202, "{}", accepted.body);
    let worked = deliver(&strict, &ledger, &queue, &sim, 0).await;
    assert!(
        matches!(&worked, Worked::Finished { outcome: "refused", .. }),
        "{worked:?}"
    );
    assert!(sim.writes().is_empty());

    let status = send(&strict, &ledger, &queue, &sim, &get(&job_id(&accepted), alice())).await;
    assert_eq!(status.body["status"], "refused", "{}", status.body);
    assert_eq!(status.body["last_error"]["code"], "guardrail_breach");
    assert_eq!(status.body["last_error"]["status"], 422);
    assert!(
        status.body["last_error"]["problems"].to_string().contains("jdoe2"),
        "the refusal names the member: {}",
        status.body
    );
}

#[tokio::test]
async fn a_job_blocked_by_another_allocation_is_left_for_another_delivery() {
    let sim = sim(30).await;
    let (ledger, queue, settings) = (Ledger::memory(), JobQueue::memory(), settings(&[]));
    let accepted = send(&settings, &ledger, &queue, &sim, &post(THREE, "blocked")).await;
    let now = Utc::now();
    ledger
        .acquire_lock("someone-else", now, now + TimeDelta::seconds(120))
        .await
        .unwrap();

    let worked = deliver(&settings, &ledger, &queue, &sim, 0).await;
    assert!(matches!(&worked, Worked::Retry { .. }), "{worked:?}");
    assert!(sim.writes().is_empty());
    let status = send(&settings, &ledger, &queue, &sim, &get(&job_id(&accepted), alice())).await;
    assert_eq!(status.body["status"], "retrying", "{}", status.body);
    assert_eq!(status.body["last_error"]["code"], "allocation_in_progress");
    assert_eq!(status.body["attempts"], 1);

    ledger.release_lock("someone-else").await.unwrap();
    let worked = deliver(&settings, &ledger, &queue, &sim, 0).await;
    assert!(
        matches!(&worked, Worked::Finished { outcome: "done", .. }),
        "{worked:?}"
    );
    let status = send(&settings, &ledger, &queue, &sim, &get(&job_id(&accepted), alice())).await;
    assert_eq!(status.body["status"], "done", "{}", status.body);
    assert_eq!(status.body["attempts"], 2);
}

#[tokio::test]
async fn a_call_without_time_to_finish_hands_the_request_to_the_queue() {
    let sim = sim(30).await;
    let (ledger, queue, settings) = (Ledger::memory(), JobQueue::memory(), settings(&[]));
    let mut call = post(r#"{"allocations":[{"username":"jdoe","add":7}]}"#, "late");
    // Less than the reads need: the synchronous attempt stops before changing anything.
    call.budget = Duration::from_millis(500);
    let before = allocation(&sim, "jdoe");
    let reply = send(&settings, &ledger, &queue, &sim, &call).await;
    assert_eq!(reply.status, 202, "{}", reply.body);
    assert!(
        reply.body["message"].as_str().unwrap().contains("ran out of time"),
        "{}",
        reply.body
    );
    assert!(sim.writes().is_empty());
    let worked = deliver(&settings, &ledger, &queue, &sim, 0).await;
    assert!(
        matches!(&worked, Worked::Finished { outcome: "done", .. }),
        "{worked:?}"
    );
    assert_eq!(allocation(&sim, "jdoe"), before.map(|a| a + 7.0));
}

#[tokio::test]
async fn a_queue_that_refuses_the_job_is_a_503_that_changes_nothing() {
    let sim = sim(30).await;
    let (ledger, settings) = (Ledger::memory(), settings(&[]));
    // SQS on a port nobody listens on.
    let closed = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.local_addr().unwrap().port()
    };
    let config = aws_sdk_sqs::config::Builder::from(&moto_aws())
        .endpoint_url(format!("http://127.0.0.1:{closed}"))
        .retry_config(aws_sdk_sqs::config::retry::RetryConfig::disabled())
        .build();
    let down = JobQueue::Sqs {
        client: aws_sdk_sqs::Client::from_conf(config),
        url: format!("http://127.0.0.1:{closed}/111122223333/jobs"),
    };
    let reply = send(&settings, &ledger, &down, &sim, &post(THREE, "no-queue")).await;
    assert_eq!(reply.status, 503, "{}", reply.body);
    assert_eq!(reply.body["code"], "allocation_queue_unavailable");
    assert!(reply.body["error"].as_str().unwrap().contains("nothing was changed"));
    assert!(sim.writes().is_empty());

    // Sent again once the queue works: queued and applied.
    let queue = JobQueue::memory();
    let reply = send(&settings, &ledger, &queue, &sim, &post(THREE, "no-queue")).await;
    assert_eq!(reply.status, 202, "{}", reply.body);
    let worked = deliver(&settings, &ledger, &queue, &sim, 0).await;
    assert!(
        matches!(&worked, Worked::Finished { outcome: "done", .. }),
        "{worked:?}"
    );
}
