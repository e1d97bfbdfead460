//! The ledger: every scenario runs against the in-memory ledger and against DynamoDB (a real
//! moto_server on loopback), as two tests `<scenario>::memory` and `<scenario>::dynamodb`, so
//! both implementations keep the same semantics; then what only the table can do wrong (a
//! missing table, a malformed item, a partition over 1 MB), and the places where the two must
//! agree to the millisecond.

use std::collections::HashMap;

use aws_sdk_dynamodb::types::{
    AttributeDefinition, AttributeValue, BillingMode, KeySchemaElement, KeyType, ScalarAttributeType,
};
use chrono::{DateTime, NaiveDate, TimeDelta, TimeZone, Utc};
use serde_json::{Value, json};
use shared::arcgis::{ListingHint, Partition};
use shared::credits::amount::Credits;
use shared::credits::classify::Level;
use shared::credits::member::Balance;
use shared::ledger::requests::REQUEST_RETENTION;
use shared::ledger::{
    Appended, AuditEntry, AuditIntent, Caller, CallerKind, Claim, HeadUpdate, IntendedChange, Ledger, LedgerError,
    LockAttempt, LockHolder, RUN_RETENTION, RequestClaim, RequestHead, RequestStatus, RunClaim, RunStatus, Scope,
    StagedAlerts, StoredRequest,
};

use crate::support::c;

/// A DynamoDB client for this binary's moto.
pub fn dynamodb() -> aws_sdk_dynamodb::Client {
    aws_sdk_dynamodb::Client::new(&crate::support::moto_aws())
}

/// Creates a ledger table (pk/sk strings, as the SAM template declares it) unique to this
/// process and `name`, and returns its name.
pub async fn create_table(client: &aws_sdk_dynamodb::Client, name: &str) -> String {
    static N: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
    let n = N.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let table = format!("ledger-{}-{name}-{n}", std::process::id());
    let key = |name: &str, kind| {
        KeySchemaElement::builder()
            .attribute_name(name)
            .key_type(kind)
            .build()
            .expect("key schema")
    };
    let attribute = |name: &str| {
        AttributeDefinition::builder()
            .attribute_name(name)
            .attribute_type(ScalarAttributeType::S)
            .build()
            .expect("attribute definition")
    };
    client
        .create_table()
        .table_name(&table)
        .key_schema(key("pk", KeyType::Hash))
        .key_schema(key("sk", KeyType::Range))
        .attribute_definitions(attribute("pk"))
        .attribute_definitions(attribute("sk"))
        .billing_mode(BillingMode::PayPerRequest)
        .send()
        .await
        .expect("create_table on moto");
    table
}

/// A DynamoDB ledger over a fresh table.
pub async fn dynamo_ledger(name: &str) -> Ledger {
    let client = dynamodb();
    let table = create_table(&client, name).await;
    Ledger::dynamo(client, table)
}

/// Runs each named scenario `async fn <name>(&Ledger)` as two tests, `<name>::memory` and
/// `<name>::dynamodb` (over a table of its own), so a divergence names the implementation.
macro_rules! on_both_ledgers {
    ($($name:ident),* $(,)?) => {$(
        mod $name {
            #[tokio::test]
            async fn memory() {
                super::$name(&super::Ledger::memory()).await;
            }

            #[tokio::test]
            async fn dynamodb() {
                super::$name(&super::dynamo_ledger(stringify!($name)).await).await;
            }
        }
    )*};
}

on_both_ledgers!(
    alert_levels_are_set_overwritten_and_cleared,
    staged_alert_levels_count_only_once_committed_and_a_racing_run_conflicts,
    recording_alerts_costs_the_shards_that_change_not_the_members,
    a_run_is_claimed_once_until_it_expires,
    what_the_last_listing_found_is_remembered,
    claim_request_fresh_in_progress_mismatch_and_replay,
    claim_request_resumes_unfinished_requests,
    an_in_progress_request_never_silently_expires_into_a_fresh_request,
    a_done_request_is_replayed_for_its_retention_then_fresh,
    concurrent_claims_of_a_fresh_request_have_one_winner,
    concurrent_resumers_of_an_expired_request_have_one_winner,
    concurrent_resumers_of_an_incomplete_request_have_one_winner,
    a_request_claimed_again_after_its_retention_starts_with_an_empty_journal,
    update_request_is_fenced_by_owner_and_needs_a_head,
    put_pages_replaces_pages_and_load_request_reads_them_in_order,
    abandon_request_deletes_only_its_owners_untouched_claim,
    the_allocation_lock_is_a_reentrant_lease,
    concurrent_lock_acquires_have_one_winner,
    the_pending_set_holds_each_unsettled_request_once,
    the_budget_sums_exactly_the_last_24_hours,
    audit_changes_are_appended_once_and_round_trip_exactly,
    audit_intents_are_appended_once_and_round_trip_exactly,
    changes_and_intents_share_a_day_but_are_read_apart,
    audit_entries_are_read_per_plan_day_in_plan_order,
    requests_made_counts_what_the_ledger_sent,
);

// ---------------------------------------------------------------------------------------
// Helpers.

/// 2026-11-26 at `h:m:s.ms` UTC (every time in these tests has millisecond precision, what
/// the table stores).
fn at(h: u32, m: u32, s: u32, ms: u32) -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 11, 26, h, m, s).single().expect("a time") + TimeDelta::milliseconds(ms.into())
}

fn day() -> NaiveDate {
    NaiveDate::from_ymd_opt(2026, 11, 26).expect("a date")
}

fn minutes(m: i64) -> TimeDelta {
    TimeDelta::minutes(m)
}

/// A request scope of alice's key `key`.
fn scope(key: &str) -> Scope {
    Scope::of_key(Some("111122223333"), "AROAEXAMPLEID:alice", key)
}

fn update(status: RequestStatus, lease_until: DateTime<Utc>, reply: Option<Value>, at: DateTime<Utc>) -> HeadUpdate {
    HeadUpdate {
        status,
        lease_until,
        reply,
        at,
    }
}

fn page(n: u32, members: &[&str]) -> (u32, Value) {
    (
        n,
        json!(
            members
                .iter()
                .map(|m| json!({"username": m, "before": Credits::whole(10), "target": c("200.5")}))
                .collect::<Vec<_>>()
        ),
    )
}

async fn load(ledger: &Ledger, scope: &Scope) -> Option<StoredRequest> {
    ledger.load_request(scope).await.expect("load_request")
}

/// Claims `scope` for `owner` with body `body` at `now`, lease until `lease`.
async fn claim(
    ledger: &Ledger,
    scope: &Scope,
    body: &str,
    owner: &str,
    now: DateTime<Utc>,
    lease: DateTime<Utc>,
) -> RequestClaim {
    ledger
        .claim_request(scope, Claim::new(body, owner, now, lease))
        .await
        .expect("claim_request")
}

fn unwrap_resume(claim: RequestClaim) -> StoredRequest {
    match claim {
        RequestClaim::Resume(stored) => *stored,
        other => panic!("expected Resume, got {other:?}"),
    }
}

fn unwrap_replay(claim: RequestClaim) -> StoredRequest {
    match claim {
        RequestClaim::Replay(stored) => *stored,
        other => panic!("expected Replay, got {other:?}"),
    }
}

/// What a claim was, without its payload (to compare outcomes of races).
fn kind(claim: &Result<RequestClaim, LedgerError>) -> &'static str {
    match claim {
        Ok(RequestClaim::Fresh) => "fresh",
        Ok(RequestClaim::Replay(_)) => "replay",
        Ok(RequestClaim::InProgress { .. }) => "in_progress",
        Ok(RequestClaim::Resume(_)) => "resume",
        Ok(RequestClaim::Mismatch) => "mismatch",
        Err(_) => "error",
    }
}

fn alice() -> Caller {
    Caller {
        kind: CallerKind::Iam,
        principal_id: "AROAEXAMPLEID:alice".into(),
        account: Some("111122223333".into()),
        arn: Some("arn:aws:sts::111122223333:assumed-role/CreditAdmins/alice".into()),
        issuer: None,
    }
}

fn limited(assigned: &str, available: &str) -> Balance {
    Balance::Limited {
        assigned: c(assigned),
        available: c(available),
    }
}

/// A change `username` observed 3 s after the plan made at `planned_at` for request `scope`.
fn change(planned_at: DateTime<Utc>, scope: &Scope, username: &str) -> AuditEntry {
    AuditEntry {
        at: planned_at + TimeDelta::seconds(3),
        planned_at,
        scope: scope.as_str().to_owned(),
        request_id: "8a1c0f3e-req-1".into(),
        caller: alice(),
        reason: Some("ticket CS-42".into()),
        source: "allocate".into(),
        username: username.into(),
        before: limited("1000", "50.25"),
        planned: c("1150.5"),
        observed: limited("1150.5", "200.75"),
        matches_plan: true,
    }
}

/// Batch `batch` of request `scope`, planned at `planned_at`, about to be sent.
fn intent(planned_at: DateTime<Utc>, scope: &Scope, request_id: &str, batch: u32) -> AuditIntent {
    AuditIntent {
        at: planned_at + TimeDelta::seconds(1),
        planned_at,
        scope: scope.as_str().to_owned(),
        batch,
        request_id: request_id.into(),
        caller: alice(),
        reason: Some("ticket CS-42".into()),
        source: "allocate".into(),
        members: vec![
            IntendedChange {
                username: "jdoe".into(),
                before: limited("1000", "50.25"),
                target: c("1150.5"),
            },
            IntendedChange {
                username: "amy".into(),
                before: Balance::Unlimited,
                target: c("0.000001"),
            },
        ],
    }
}

// ---------------------------------------------------------------------------------------
// Alerts, runs, member count (unchanged API).

/// Records `changes` as run `run` would: staged against the state read, then committed.
async fn record(ledger: &Ledger, changes: &[(&str, Option<Level>)], run: &str) -> usize {
    let state = ledger.alert_state().await.unwrap();
    let changes: Vec<(String, Option<Level>)> = changes.iter().map(|(k, l)| (k.to_string(), *l)).collect();
    let staged = state.stage(&changes, run);
    ledger.stage_alerts(&staged).await.unwrap();
    ledger.commit_alerts(&staged, at(6, 0, 0, 0)).await.unwrap();
    staged.shards.len()
}

async fn alert_levels_are_set_overwritten_and_cleared(ledger: &Ledger) {
    assert!(ledger.alert_levels().await.unwrap().is_empty());
    record(
        ledger,
        &[
            ("jdoe", Some(Level::Warning)),
            ("amy", Some(Level::Critical)),
            ("zed", Some(Level::Critical)),
        ],
        "run-1",
    )
    .await;
    // None and Some(Ok) both mean "back to ok": the record goes.
    record(
        ledger,
        &[
            ("jdoe", Some(Level::Critical)),
            ("zed", None),
            ("amy", Some(Level::Ok)),
            ("never-set", None),
        ],
        "run-2",
    )
    .await;
    assert_eq!(
        ledger.alert_levels().await.unwrap(),
        HashMap::from([("jdoe".to_owned(), Level::Critical)])
    );
}

async fn staged_alert_levels_count_only_once_committed_and_a_racing_run_conflicts(ledger: &Ledger) {
    let state = ledger.alert_state().await.unwrap();
    let staged = state.stage(&[("jdoe".into(), Some(Level::Critical))], "run-1");
    ledger.stage_alerts(&staged).await.unwrap();
    assert!(ledger.alert_levels().await.unwrap().is_empty(), "staged, not committed");
    // Another run that read the same state cannot stage over it: it must send nothing.
    let rival = state.stage(&[("jdoe".into(), Some(Level::Warning))], "run-2");
    let err = ledger.stage_alerts(&rival).await.unwrap_err();
    assert!(matches!(err, LedgerError::Conflict { .. }), "{err}");
    assert!(err.to_string().contains("the next run will report"), "{err}");
    ledger.commit_alerts(&staged, at(6, 0, 0, 0)).await.unwrap();
    assert_eq!(
        ledger.alert_levels().await.unwrap(),
        HashMap::from([("jdoe".to_owned(), Level::Critical)])
    );
    // A run that never commits (its email failed) leaves the state as it was.
    let state = ledger.alert_state().await.unwrap();
    let failed = state.stage(&[("jdoe".into(), None), ("amy".into(), Some(Level::Warning))], "run-3");
    ledger.stage_alerts(&failed).await.unwrap();
    let state = ledger.alert_state().await.unwrap();
    assert_eq!(state.levels().len(), 1);
    // And the next run stages over it from what it read.
    let next = state.stage(&[("amy".into(), Some(Level::Warning))], "run-4");
    ledger.stage_alerts(&next).await.unwrap();
    ledger.commit_alerts(&next, at(6, 0, 0, 0)).await.unwrap();
    assert_eq!(
        ledger.alert_levels().await.unwrap(),
        HashMap::from([("jdoe".to_owned(), Level::Critical), ("amy".to_owned(), Level::Warning)])
    );
    // A run that stages over another's uncommitted content (read while that one was still
    // sending) leaves the other's commit without its record: said as such, not as "nothing sent".
    let state = ledger.alert_state().await.unwrap();
    let sending = state.stage(&[("zoe".into(), Some(Level::Warning))], "run-5");
    ledger.stage_alerts(&sending).await.unwrap();
    let overtaking = ledger
        .alert_state()
        .await
        .unwrap()
        .stage(&[("zoe".into(), Some(Level::Critical))], "run-6");
    ledger.stage_alerts(&overtaking).await.unwrap();
    let err = ledger.commit_alerts(&sending, at(6, 0, 0, 0)).await.unwrap_err();
    assert!(matches!(err, LedgerError::Conflict { .. }), "{err}");
    assert!(err.to_string().contains("email went out"), "{err}");
    ledger.commit_alerts(&overtaking, at(6, 0, 0, 0)).await.unwrap();
    assert_eq!(ledger.alert_levels().await.unwrap().get("zoe"), Some(&Level::Critical));
}

async fn recording_alerts_costs_the_shards_that_change_not_the_members(ledger: &Ledger) {
    let is_memory = matches!(ledger, Ledger::Memory(_));
    // A first run flagging 3,000 members: at most every shard, in two transactions.
    let first: Vec<(String, Option<Level>)> = (0..3_000)
        .map(|i| (format!("member_{i:04}"), Some(Level::Warning)))
        .collect();
    let before = ledger.requests_made();
    let state = ledger.alert_state().await.unwrap();
    let staged = state.stage(&first, "run-1");
    assert_eq!(staged.shards.len(), usize::from(shared::ledger::alerts::SHARDS));
    ledger.stage_alerts(&staged).await.unwrap();
    ledger.commit_alerts(&staged, at(6, 0, 0, 0)).await.unwrap();
    let read_back = ledger.alert_levels().await.unwrap();
    assert_eq!(read_back.len(), 3_000);
    if !is_memory {
        // One read, one staging, one marker, one promotion, one read back (a page or two).
        let sent = ledger.requests_made() - before;
        assert!(sent <= 6, "{sent} requests for 3,000 members");
    }
    // A day where one member changes writes one shard.
    let changed = record(ledger, &[("member_0042", Some(Level::Critical))], "run-2").await;
    assert_eq!(changed, 1);
}

async fn a_run_is_claimed_once_until_it_expires(ledger: &Ledger) {
    let now = at(10, 0, 0, 0);
    let key = "2026-11-26T06:00:00Z";
    assert_eq!(
        ledger.claim_run("scan-credits", key, now).await.unwrap(),
        RunClaim::Claimed
    );
    assert_eq!(
        ledger.claim_run("scan-credits", key, now + minutes(1)).await.unwrap(),
        RunClaim::AlreadyClaimed {
            status: RunStatus::Claimed,
            claimed_at: now,
            summary: None
        }
    );
    // The same key under another job is another run.
    assert_eq!(
        ledger.claim_run("monthly-report", key, now).await.unwrap(),
        RunClaim::Claimed
    );
    let summary = json!({"critical": 3, "emails": 2, "granted": Credits::parse_exact("0.3").unwrap()});
    ledger
        .finish_run("scan-credits", key, RunStatus::Done, &summary)
        .await
        .unwrap();
    assert_eq!(
        ledger.claim_run("scan-credits", key, now + minutes(2)).await.unwrap(),
        RunClaim::AlreadyClaimed {
            status: RunStatus::Done,
            claimed_at: now,
            summary: Some(summary.clone())
        }
    );
    ledger
        .finish_run("monthly-report", key, RunStatus::Failed, &json!({"error": "x"}))
        .await
        .unwrap();
    assert!(matches!(
        ledger.claim_run("monthly-report", key, now).await.unwrap(),
        RunClaim::AlreadyClaimed {
            status: RunStatus::Failed,
            ..
        }
    ));
    // Finishing a run nobody claimed is a bug, reported.
    let err = ledger
        .finish_run("scan-credits", "never-claimed", RunStatus::Done, &summary)
        .await
        .unwrap_err();
    assert!(matches!(err, LedgerError::Missing { .. }), "{err}");
    assert!(err.to_string().contains("finish_run"), "{err}");
    // A claim is kept a day short of its retention, and counts as absent after it even
    // before TTL sweeps it.
    assert!(matches!(
        ledger
            .claim_run("scan-credits", key, now + RUN_RETENTION - TimeDelta::days(1))
            .await
            .unwrap(),
        RunClaim::AlreadyClaimed { .. }
    ));
    assert_eq!(
        ledger
            .claim_run("scan-credits", key, now + RUN_RETENTION + TimeDelta::days(1))
            .await
            .unwrap(),
        RunClaim::Claimed
    );
}

async fn what_the_last_listing_found_is_remembered(ledger: &Ledger) {
    let size = |members: u64| ListingHint {
        members,
        parts: Vec::new(),
    };
    let part = |role: &str, user_type: Option<&str>, n: u64| {
        let partition = Partition {
            role: Some(role.into()),
            user_type: user_type.map(Into::into),
        };
        (partition, n)
    };
    assert_eq!(ledger.listing_hint().await.unwrap(), None);
    for hint in [
        size(2000),
        size(0),
        // Listed by partition: each part's size too, a role split by user type included,
        // whatever characters a role id holds.
        ListingHint {
            members: 25_001,
            parts: vec![
                part("org_admin", None, 12),
                part("org_user", Some("creatorUT"), 14_989),
                part("org_user", Some("viewerUT"), 10_000),
                part("r0Le-Id_9", None, 0),
            ],
        },
        // Listed whole again: no part sizes left over from before.
        size(9_999),
    ] {
        ledger.set_listing_hint(&hint, "run").await.unwrap();
        assert_eq!(ledger.listing_hint().await.unwrap(), Some(hint));
    }
}

// ---------------------------------------------------------------------------------------
// Requests.

async fn claim_request_fresh_in_progress_mismatch_and_replay(ledger: &Ledger) {
    let s = scope("k-replay");
    let now = at(10, 0, 0, 0);
    let lease = now + minutes(15);
    assert_eq!(
        claim(ledger, &s, "body-a", "inv-1", now, lease).await,
        RequestClaim::Fresh
    );
    assert_eq!(
        load(ledger, &s).await,
        Some(StoredRequest {
            head: RequestHead {
                body_hash: "body-a".into(),
                status: RequestStatus::Claimed,
                owner: "inv-1".into(),
                lease_until: lease,
                created_at: now,
                reply: None,
            },
            pages: vec![],
        })
    );

    // Same body while the lease is live: someone is on it. Other body: refused.
    assert_eq!(
        claim(ledger, &s, "body-a", "inv-2", now + minutes(1), now + minutes(16)).await,
        RequestClaim::InProgress { lease_until: lease }
    );
    assert_eq!(
        claim(ledger, &s, "body-b", "inv-2", now + minutes(1), now + minutes(16)).await,
        RequestClaim::Mismatch
    );
    // Neither changed the head.
    assert_eq!(load(ledger, &s).await.unwrap().head.owner, "inv-1");

    // Written ahead, applied, finished: pages stored out of order read back in page order.
    let (p0, p1, p2) = (page(0, &["amy", "bob"]), page(1, &["carl"]), page(2, &["dee"]));
    ledger
        .put_pages(&s, &[p2.clone(), p0.clone()], now + minutes(2))
        .await
        .unwrap();
    ledger
        .update_request(
            &s,
            "inv-1",
            &update(
                RequestStatus::Applying,
                lease,
                Some(json!({"planned": 3})),
                now + minutes(2),
            ),
        )
        .await
        .unwrap();
    ledger
        .put_pages(&s, std::slice::from_ref(&p1), now + minutes(3))
        .await
        .unwrap();
    let reply = json!({"status": 200, "summary": {"assigned": 4, "granted": c("601.5")}, "request_id": "inv-1"});
    let done_at = now + minutes(4);
    ledger
        .update_request(
            &s,
            "inv-1",
            &update(RequestStatus::Done, done_at, Some(reply.clone()), done_at),
        )
        .await
        .unwrap();

    let expected = StoredRequest {
        head: RequestHead {
            body_hash: "body-a".into(),
            status: RequestStatus::Done,
            owner: "inv-1".into(),
            lease_until: done_at,
            created_at: now,
            reply: Some(reply.clone()),
        },
        pages: vec![p0, p1, p2],
    };
    let replay = unwrap_replay(claim(ledger, &s, "body-a", "inv-3", now + minutes(5), now + minutes(20)).await);
    assert_eq!(replay, expected);
    // A replay writes nothing: the head still names its finisher.
    assert_eq!(load(ledger, &s).await, Some(expected.clone()));
    // Still refused with another body, and replayed again later.
    assert_eq!(
        claim(ledger, &s, "body-b", "inv-4", now + minutes(6), now + minutes(21)).await,
        RequestClaim::Mismatch
    );
    assert_eq!(
        unwrap_replay(
            claim(
                ledger,
                &s,
                "body-a",
                "inv-5",
                now + TimeDelta::days(1),
                now + TimeDelta::days(2)
            )
            .await
        ),
        expected
    );

    // A reply-less update keeps the stored reply.
    let other = scope("k-keep-reply");
    assert_eq!(
        claim(ledger, &other, "b", "inv-1", now, lease).await,
        RequestClaim::Fresh
    );
    ledger
        .update_request(
            &other,
            "inv-1",
            &update(RequestStatus::Applying, lease, Some(json!({"plan": 1})), now),
        )
        .await
        .unwrap();
    ledger
        .update_request(&other, "inv-1", &update(RequestStatus::Incomplete, now, None, now))
        .await
        .unwrap();
    let head = load(ledger, &other).await.unwrap().head;
    assert_eq!(head.status, RequestStatus::Incomplete);
    assert_eq!(head.reply, Some(json!({"plan": 1})));
}

async fn claim_request_resumes_unfinished_requests(ledger: &Ledger) {
    let now = at(10, 0, 0, 0);
    let lease = now + minutes(15);

    // Incomplete (the owner stopped and let go: lease ended at the stop) → the next retry
    // resumes it, with its journal.
    let s = scope("k-incomplete");
    assert_eq!(
        claim(ledger, &s, "body", "inv-1", now, lease).await,
        RequestClaim::Fresh
    );
    let pages = vec![page(0, &["amy"]), page(1, &["bob"])];
    ledger.put_pages(&s, &pages, now).await.unwrap();
    ledger
        .update_request(
            &s,
            "inv-1",
            &update(RequestStatus::Applying, lease, Some(json!({"plan": 2})), now),
        )
        .await
        .unwrap();
    let stopped = now + minutes(5);
    let reply = json!({"status": 503, "incomplete": {"pending": ["bob"]}});
    ledger
        .update_request(
            &s,
            "inv-1",
            &update(RequestStatus::Incomplete, stopped, Some(reply.clone()), stopped),
        )
        .await
        .unwrap();
    let new_lease = now + minutes(21);
    let resumed = unwrap_resume(claim(ledger, &s, "body", "inv-2", now + minutes(6), new_lease).await);
    let expected = StoredRequest {
        head: RequestHead {
            body_hash: "body".into(),
            status: RequestStatus::Incomplete,
            owner: "inv-2".into(),
            lease_until: new_lease,
            created_at: now,
            reply: Some(reply),
        },
        pages,
    };
    assert_eq!(resumed, expected);
    // The takeover is stored: the new owner may write, the old one is fenced off.
    assert_eq!(load(ledger, &s).await, Some(expected));
    let err = ledger
        .update_request(
            &s,
            "inv-1",
            &update(RequestStatus::Done, now + minutes(7), None, now + minutes(7)),
        )
        .await
        .unwrap_err();
    assert!(matches!(err, LedgerError::Fenced { .. }), "{err}");
    ledger
        .update_request(
            &s,
            "inv-2",
            &update(RequestStatus::Applying, new_lease, None, now + minutes(7)),
        )
        .await
        .unwrap();
    // Another body is still refused, whatever the state.
    assert_eq!(
        claim(ledger, &s, "other", "inv-3", now + minutes(8), now + minutes(23)).await,
        RequestClaim::Mismatch
    );

    // Applying, owner still within its lease → in progress; lease over → resumed.
    let s = scope("k-applying");
    assert_eq!(
        claim(ledger, &s, "body", "inv-1", now, lease).await,
        RequestClaim::Fresh
    );
    ledger.put_pages(&s, &[page(0, &["carl"])], now).await.unwrap();
    ledger
        .update_request(
            &s,
            "inv-1",
            &update(RequestStatus::Applying, lease, Some(json!({"plan": 1})), now),
        )
        .await
        .unwrap();
    assert_eq!(
        claim(ledger, &s, "body", "inv-2", now + minutes(10), now + minutes(25)).await,
        RequestClaim::InProgress { lease_until: lease }
    );
    let new_lease = now + minutes(31);
    let resumed = unwrap_resume(claim(ledger, &s, "body", "inv-2", lease + minutes(1), new_lease).await);
    assert_eq!(resumed.head.status, RequestStatus::Applying);
    assert_eq!(resumed.head.owner, "inv-2");
    assert_eq!(resumed.head.lease_until, new_lease);
    assert_eq!(resumed.head.reply, Some(json!({"plan": 1})));
    assert_eq!(resumed.pages, vec![page(0, &["carl"])]);
    // The resumer's lease is live now: a third invocation waits for it.
    assert_eq!(
        claim(ledger, &s, "body", "inv-3", lease + minutes(2), lease + minutes(20)).await,
        RequestClaim::InProgress { lease_until: new_lease }
    );

    // Claimed (crashed before writing anything), lease over → resumed as Claimed, no pages.
    let s = scope("k-claimed");
    assert_eq!(
        claim(ledger, &s, "body", "inv-1", now, lease).await,
        RequestClaim::Fresh
    );
    let new_lease = lease + minutes(16);
    let resumed = unwrap_resume(claim(ledger, &s, "body", "inv-2", lease + minutes(1), new_lease).await);
    assert_eq!(
        resumed,
        StoredRequest {
            head: RequestHead {
                body_hash: "body".into(),
                status: RequestStatus::Claimed,
                owner: "inv-2".into(),
                lease_until: new_lease,
                created_at: now,
                reply: None,
            },
            pages: vec![],
        }
    );
}

async fn an_in_progress_request_never_silently_expires_into_a_fresh_request(ledger: &Ledger) {
    let now = at(10, 0, 0, 0);
    let lease = now + minutes(15);
    let s = scope("k-stale");
    assert_eq!(
        claim(ledger, &s, "body", "inv-1", now, lease).await,
        RequestClaim::Fresh
    );
    ledger.put_pages(&s, &[page(0, &["amy"])], now).await.unwrap();
    ledger
        .update_request(
            &s,
            "inv-1",
            &update(RequestStatus::Applying, lease, Some(json!({"plan": 1})), now),
        )
        .await
        .unwrap();
    // Its invocation died; nobody retried for two days, then far longer than any retention.
    let later = lease + TimeDelta::days(2);
    let resumed = unwrap_resume(claim(ledger, &s, "body", "inv-2", later, later + minutes(15)).await);
    assert_eq!(resumed.head.status, RequestStatus::Applying);
    assert_eq!(resumed.head.created_at, now);
    assert_eq!(resumed.pages, vec![page(0, &["amy"])]);
    // Unfinished requests keep refusing other bodies too, however old.
    let much_later = now + RUN_RETENTION;
    assert_eq!(
        claim(ledger, &s, "other", "inv-3", much_later, much_later + minutes(15)).await,
        RequestClaim::Mismatch
    );
    let resumed = unwrap_resume(claim(ledger, &s, "body", "inv-3", much_later, much_later + minutes(15)).await);
    assert_eq!(resumed.head.owner, "inv-3");

    // Same for an Incomplete head and a Claimed one.
    let s = scope("k-stale-incomplete");
    assert_eq!(
        claim(ledger, &s, "body", "inv-1", now, lease).await,
        RequestClaim::Fresh
    );
    ledger
        .update_request(
            &s,
            "inv-1",
            &update(RequestStatus::Incomplete, now, Some(json!({"plan": 1})), now),
        )
        .await
        .unwrap();
    assert!(matches!(
        claim(ledger, &s, "body", "inv-2", much_later, much_later + minutes(15)).await,
        RequestClaim::Resume(_)
    ));
    let s = scope("k-stale-claimed");
    assert_eq!(
        claim(ledger, &s, "body", "inv-1", now, lease).await,
        RequestClaim::Fresh
    );
    assert!(matches!(
        claim(ledger, &s, "body", "inv-2", much_later, much_later + minutes(15)).await,
        RequestClaim::Resume(_)
    ));
}

async fn a_done_request_is_replayed_for_its_retention_then_fresh(ledger: &Ledger) {
    let now = at(10, 0, 0, 0);
    let s = scope("k-retention");
    assert_eq!(
        claim(ledger, &s, "body", "inv-1", now, now + minutes(15)).await,
        RequestClaim::Fresh
    );
    // Retention runs from the update's `now`, not from the claim.
    let done_at = now + TimeDelta::hours(1);
    ledger
        .update_request(
            &s,
            "inv-1",
            &update(RequestStatus::Done, done_at, Some(json!({"status": 200})), done_at),
        )
        .await
        .unwrap();
    let just_before = done_at + REQUEST_RETENTION - TimeDelta::seconds(1);
    assert!(matches!(
        claim(ledger, &s, "body", "inv-2", just_before, just_before + minutes(15)).await,
        RequestClaim::Replay(_)
    ));
    assert_eq!(
        claim(ledger, &s, "other", "inv-2", just_before, just_before + minutes(15)).await,
        RequestClaim::Mismatch
    );
    // After its retention the key is a new request, whatever the body.
    let after = done_at + REQUEST_RETENTION + TimeDelta::seconds(1);
    assert_eq!(
        claim(ledger, &s, "other", "inv-3", after, after + minutes(15)).await,
        RequestClaim::Fresh
    );
    let head = load(ledger, &s).await.unwrap().head;
    assert_eq!(
        head,
        RequestHead {
            body_hash: "other".into(),
            status: RequestStatus::Claimed,
            owner: "inv-3".into(),
            lease_until: after + minutes(15),
            created_at: after,
            reply: None,
        }
    );
    // And the new claim has no expiry of its own: it is in progress, then resumable.
    assert_eq!(
        claim(ledger, &s, "other", "inv-4", after + minutes(1), after + minutes(16)).await,
        RequestClaim::InProgress {
            lease_until: after + minutes(15)
        }
    );
    let far = after + REQUEST_RETENTION * 2;
    assert!(matches!(
        claim(ledger, &s, "other", "inv-4", far, far + minutes(15)).await,
        RequestClaim::Resume(_)
    ));
}

async fn concurrent_claims_of_a_fresh_request_have_one_winner(ledger: &Ledger) {
    let now = at(10, 0, 0, 0);
    let lease = now + minutes(15);
    let s = scope("k-race");
    let (a, b) = tokio::join!(
        ledger.claim_request(&s, Claim::new("body", "inv-a", now, lease)),
        ledger.claim_request(&s, Claim::new("body", "inv-b", now, lease)),
    );
    let mut kinds = [kind(&a), kind(&b)];
    kinds.sort_unstable();
    assert_eq!(kinds, ["fresh", "in_progress"], "{a:?} {b:?}");
    let winner = if matches!(a, Ok(RequestClaim::Fresh)) {
        "inv-a"
    } else {
        "inv-b"
    };
    assert_eq!(load(ledger, &s).await.unwrap().head.owner, winner);

    // Many at once: still one.
    let s = scope("k-race-8");
    let claims = futures_util::future::join_all((0..8).map(|i| {
        let s = s.clone();
        async move {
            ledger
                .claim_request(&s, Claim::new("body", &format!("inv-{i}"), now, lease))
                .await
        }
    }))
    .await;
    let fresh = claims.iter().filter(|c| kind(c) == "fresh").count();
    let waiting = claims.iter().filter(|c| kind(c) == "in_progress").count();
    assert_eq!((fresh, waiting), (1, 7), "{claims:?}");

    // And the run claims, as before.
    let runs = futures_util::future::join_all((0..8).map(|_| ledger.claim_run("scan-credits", "race", now))).await;
    let winners = runs.iter().filter(|c| matches!(c, Ok(RunClaim::Claimed))).count();
    assert_eq!(winners, 1, "{runs:?}");
}

async fn concurrent_resumers_of_an_expired_request_have_one_winner(ledger: &Ledger) {
    let now = at(10, 0, 0, 0);
    let lease = now + minutes(15);
    let s = scope("k-resume-race");
    assert_eq!(
        claim(ledger, &s, "body", "inv-1", now, lease).await,
        RequestClaim::Fresh
    );
    ledger.put_pages(&s, &[page(0, &["amy"])], now).await.unwrap();
    ledger
        .update_request(
            &s,
            "inv-1",
            &update(RequestStatus::Applying, lease, Some(json!({"plan": 1})), now),
        )
        .await
        .unwrap();
    let later = lease + minutes(1);
    let new_lease = later + minutes(15);
    let (a, b) = tokio::join!(
        ledger.claim_request(&s, Claim::new("body", "inv-a", later, new_lease)),
        ledger.claim_request(&s, Claim::new("body", "inv-b", later, new_lease)),
    );
    let mut kinds = [kind(&a), kind(&b)];
    kinds.sort_unstable();
    assert_eq!(kinds, ["in_progress", "resume"], "{a:?} {b:?}");
    let winner = if kind(&a) == "resume" { "inv-a" } else { "inv-b" };
    assert_eq!(load(ledger, &s).await.unwrap().head.owner, winner);
    for c in [&a, &b] {
        if let Ok(RequestClaim::InProgress { lease_until }) = c {
            assert_eq!(*lease_until, new_lease);
        }
    }
}

/// A request that stopped `Incomplete` is resumed by the next retry; while that retry works
/// on it (its lease live), a concurrent retry must wait, exactly as for `Applying`.
async fn concurrent_resumers_of_an_incomplete_request_have_one_winner(ledger: &Ledger) {
    let now = at(10, 0, 0, 0);
    let lease = now + minutes(15);
    let s = scope("k-incomplete-race");
    assert_eq!(
        claim(ledger, &s, "body", "inv-1", now, lease).await,
        RequestClaim::Fresh
    );
    ledger.put_pages(&s, &[page(0, &["amy"])], now).await.unwrap();
    let stopped = now + minutes(5);
    ledger
        .update_request(
            &s,
            "inv-1",
            &update(RequestStatus::Incomplete, stopped, Some(json!({"plan": 1})), stopped),
        )
        .await
        .unwrap();
    let later = stopped + minutes(1);
    let new_lease = later + minutes(15);
    let (a, b) = tokio::join!(
        ledger.claim_request(&s, Claim::new("body", "inv-a", later, new_lease)),
        ledger.claim_request(&s, Claim::new("body", "inv-b", later, new_lease)),
    );
    let mut kinds = [kind(&a), kind(&b)];
    kinds.sort_unstable();
    assert_eq!(kinds, ["in_progress", "resume"], "{a:?} {b:?}");

    // The same, one after the other: the first resumer's live lease holds off the second.
    let s = scope("k-incomplete-seq");
    assert_eq!(
        claim(ledger, &s, "body", "inv-1", now, lease).await,
        RequestClaim::Fresh
    );
    ledger
        .update_request(
            &s,
            "inv-1",
            &update(RequestStatus::Incomplete, stopped, Some(json!({"plan": 1})), stopped),
        )
        .await
        .unwrap();
    assert!(matches!(
        claim(ledger, &s, "body", "inv-a", later, new_lease).await,
        RequestClaim::Resume(_)
    ));
    assert_eq!(
        claim(ledger, &s, "body", "inv-b", later + minutes(1), new_lease + minutes(1)).await,
        RequestClaim::InProgress { lease_until: new_lease }
    );
    assert_eq!(load(ledger, &s).await.unwrap().head.owner, "inv-a");
}

/// A key reused after its request's retention is a new request: it must not inherit the
/// old request's journal (a resume or replay would read the old members' entries as its own).
async fn a_request_claimed_again_after_its_retention_starts_with_an_empty_journal(ledger: &Ledger) {
    let now = at(10, 0, 0, 0);
    let s = scope("k-reused");
    assert_eq!(
        claim(ledger, &s, "body-1", "inv-1", now, now + minutes(15)).await,
        RequestClaim::Fresh
    );
    ledger
        .put_pages(&s, &[page(0, &["amy"]), page(1, &["bob"]), page(2, &["carl"])], now)
        .await
        .unwrap();
    ledger
        .update_request(
            &s,
            "inv-1",
            &update(RequestStatus::Done, now, Some(json!({"status": 200})), now),
        )
        .await
        .unwrap();
    let after = now + REQUEST_RETENTION + TimeDelta::days(1);
    assert_eq!(
        claim(ledger, &s, "body-2", "inv-2", after, after + minutes(15)).await,
        RequestClaim::Fresh
    );
    let stored = load(ledger, &s).await.unwrap();
    assert_eq!(stored.head.body_hash, "body-2");
    assert_eq!(
        stored.pages,
        vec![],
        "the new request inherited the old request's journal"
    );
}

async fn update_request_is_fenced_by_owner_and_needs_a_head(ledger: &Ledger) {
    let now = at(10, 0, 0, 0);
    let lease = now + minutes(15);
    let s = scope("k-fenced");
    assert_eq!(
        claim(ledger, &s, "body", "inv-1", now, lease).await,
        RequestClaim::Fresh
    );
    let before = load(ledger, &s).await;
    for status in [RequestStatus::Applying, RequestStatus::Incomplete, RequestStatus::Done] {
        let err = ledger
            .update_request(&s, "intruder", &update(status, lease, Some(json!({"x": 1})), now))
            .await
            .unwrap_err();
        assert!(matches!(err, LedgerError::Fenced { .. }), "{err}");
        let text = err.to_string();
        assert!(text.contains("update_request") && text.contains(s.as_str()), "{text}");
    }
    // Nothing changed.
    assert_eq!(load(ledger, &s).await, before);
    // The owner may.
    ledger
        .update_request(&s, "inv-1", &update(RequestStatus::Applying, lease, None, now))
        .await
        .unwrap();
    assert_eq!(load(ledger, &s).await.unwrap().head.status, RequestStatus::Applying);

    // Never claimed (or abandoned): Missing, and nothing is created.
    let never = scope("k-never-claimed");
    let err = ledger
        .update_request(&never, "inv-1", &update(RequestStatus::Done, now, Some(json!({})), now))
        .await
        .unwrap_err();
    assert!(matches!(err, LedgerError::Missing { .. }), "{err}");
    assert!(err.to_string().contains("update_request"), "{err}");
    assert_eq!(load(ledger, &never).await, None);
    assert_eq!(
        claim(ledger, &never, "body", "inv-2", now, lease).await,
        RequestClaim::Fresh
    );
}

async fn put_pages_replaces_pages_and_load_request_reads_them_in_order(ledger: &Ledger) {
    let now = at(10, 0, 0, 0);
    let s = scope("k-pages");
    assert_eq!(load(ledger, &s).await, None);
    assert_eq!(
        claim(ledger, &s, "body", "inv-1", now, now + minutes(15)).await,
        RequestClaim::Fresh
    );
    // Twelve pages (past PAGE#0009 and the eight written at once), written backwards.
    let pages: Vec<(u32, Value)> = (0..12).map(|n| page(n, &[&format!("member-{n}")])).collect();
    let backwards: Vec<(u32, Value)> = pages.iter().rev().cloned().collect();
    ledger.put_pages(&s, &backwards, now).await.unwrap();
    assert_eq!(load(ledger, &s).await.unwrap().pages, pages);
    // A page rewritten replaces what was under its number; the others stay.
    let rewritten = (
        3,
        json!([{"username": "member-3", "state": {"applied": {"observed": c("200.5")}}}]),
    );
    ledger
        .put_pages(&s, std::slice::from_ref(&rewritten), now)
        .await
        .unwrap();
    let mut expected = pages.clone();
    expected[3] = rewritten;
    assert_eq!(load(ledger, &s).await.unwrap().pages, expected);
    ledger.put_pages(&s, &[], now).await.unwrap();
    assert_eq!(load(ledger, &s).await.unwrap().pages, expected);
    // Another request's pages are its own.
    assert_eq!(
        claim(ledger, &scope("k-pages-2"), "body", "inv-1", now, now).await,
        RequestClaim::Fresh
    );
    assert_eq!(load(ledger, &scope("k-pages-2")).await.unwrap().pages, vec![]);
}

async fn abandon_request_deletes_only_its_owners_untouched_claim(ledger: &Ledger) {
    let now = at(10, 0, 0, 0);
    let lease = now + minutes(15);

    // A Claimed head: another invocation cannot abandon it; its owner can, and the key is
    // free again for any body.
    let s = scope("k-abandon");
    assert_eq!(
        claim(ledger, &s, "body-a", "inv-1", now, lease).await,
        RequestClaim::Fresh
    );
    ledger.abandon_request(&s, "inv-2").await.unwrap();
    assert_eq!(load(ledger, &s).await.unwrap().head.owner, "inv-1");
    ledger.abandon_request(&s, "inv-1").await.unwrap();
    assert_eq!(load(ledger, &s).await, None);
    assert_eq!(
        claim(ledger, &s, "body-b", "inv-3", now, lease).await,
        RequestClaim::Fresh
    );

    // Applying and Incomplete heads (something may have been sent) stay, even for the owner.
    for (key, status) in [
        ("k-abandon-applying", RequestStatus::Applying),
        ("k-abandon-incomplete", RequestStatus::Incomplete),
    ] {
        let s = scope(key);
        assert_eq!(
            claim(ledger, &s, "body", "inv-1", now, lease).await,
            RequestClaim::Fresh
        );
        ledger
            .update_request(&s, "inv-1", &update(status, lease, Some(json!({"plan": 1})), now))
            .await
            .unwrap();
        ledger.abandon_request(&s, "inv-1").await.unwrap();
        assert_eq!(load(ledger, &s).await.unwrap().head.status, status, "{key}");
    }

    // A Done head stays and keeps replaying.
    let s = scope("k-abandon-done");
    assert_eq!(
        claim(ledger, &s, "body", "inv-1", now, lease).await,
        RequestClaim::Fresh
    );
    ledger
        .update_request(
            &s,
            "inv-1",
            &update(RequestStatus::Done, now, Some(json!({"status": 200})), now),
        )
        .await
        .unwrap();
    ledger.abandon_request(&s, "inv-1").await.unwrap();
    assert!(matches!(
        claim(ledger, &s, "body", "inv-2", now + minutes(1), lease).await,
        RequestClaim::Replay(_)
    ));

    // A Claimed head resumed by another invocation is no longer the first owner's to abandon.
    let s = scope("k-abandon-taken");
    assert_eq!(
        claim(ledger, &s, "body", "inv-1", now, lease).await,
        RequestClaim::Fresh
    );
    assert!(matches!(
        claim(ledger, &s, "body", "inv-2", lease + minutes(1), lease + minutes(16)).await,
        RequestClaim::Resume(_)
    ));
    ledger.abandon_request(&s, "inv-1").await.unwrap();
    assert_eq!(load(ledger, &s).await.unwrap().head.owner, "inv-2");
    ledger.abandon_request(&s, "inv-2").await.unwrap();
    assert_eq!(load(ledger, &s).await, None);

    // Nothing to abandon: fine.
    ledger.abandon_request(&scope("k-never"), "inv-1").await.unwrap();
}

// ---------------------------------------------------------------------------------------
// The allocation lock.

async fn the_allocation_lock_is_a_reentrant_lease(ledger: &Ledger) {
    let now = at(10, 0, 0, 0);
    let secs = TimeDelta::seconds;
    let held = |owner: &str, until| {
        LockAttempt::Held(LockHolder {
            owner: owner.into(),
            until,
        })
    };

    assert_eq!(
        ledger.acquire_lock("a", now, now + secs(30)).await.unwrap(),
        LockAttempt::Acquired
    );
    assert_eq!(
        ledger.acquire_lock("b", now + secs(1), now + secs(31)).await.unwrap(),
        held("a", now + secs(30))
    );
    // Re-entrant: the holder takes it again, and may extend it.
    assert_eq!(
        ledger.acquire_lock("a", now + secs(2), now + secs(40)).await.unwrap(),
        LockAttempt::Acquired
    );
    assert_eq!(
        ledger.acquire_lock("b", now + secs(35), now + secs(65)).await.unwrap(),
        held("a", now + secs(40))
    );
    // Once the lease is over, anyone takes it.
    assert_eq!(
        ledger.acquire_lock("b", now + secs(41), now + secs(71)).await.unwrap(),
        LockAttempt::Acquired
    );
    // The old holder's release leaves the new holder's lock alone.
    ledger.release_lock("a").await.unwrap();
    assert_eq!(
        ledger.acquire_lock("c", now + secs(42), now + secs(72)).await.unwrap(),
        held("b", now + secs(71))
    );
    // The holder's release frees it at once.
    ledger.release_lock("b").await.unwrap();
    assert_eq!(
        ledger.acquire_lock("c", now + secs(43), now + secs(73)).await.unwrap(),
        LockAttempt::Acquired
    );
    ledger.release_lock("c").await.unwrap();
    // Releasing a free lock is fine.
    ledger.release_lock("c").await.unwrap();
    assert_eq!(
        ledger.acquire_lock("d", now + secs(44), now + secs(74)).await.unwrap(),
        LockAttempt::Acquired
    );
}

async fn the_pending_set_holds_each_unsettled_request_once(ledger: &Ledger) {
    let sorted = |mut scopes: Vec<Scope>| {
        scopes.sort_by(|a, b| a.as_str().cmp(b.as_str()));
        scopes.into_iter().map(|s| s.as_str().to_owned()).collect::<Vec<_>>()
    };
    assert!(ledger.pending_requests().await.unwrap().is_empty(), "empty at first");
    // Clearing what is not there is fine (a request finished by someone else).
    ledger.clear_pending(&scope("never")).await.unwrap();

    let (a, b) = (scope("a"), scope("b"));
    ledger.mark_pending(&a).await.unwrap();
    ledger.mark_pending(&b).await.unwrap();
    // Marked again by a resumed attempt: still once.
    ledger.mark_pending(&a).await.unwrap();
    let mut both = vec![a.as_str().to_owned(), b.as_str().to_owned()];
    both.sort();
    assert_eq!(sorted(ledger.pending_requests().await.unwrap()), both);
    // Each scope read back is the one marked (the settler loads its request by it).
    for s in ledger.pending_requests().await.unwrap() {
        assert!(s == a || s == b, "{}", s.as_str());
    }

    ledger.clear_pending(&a).await.unwrap();
    assert_eq!(
        sorted(ledger.pending_requests().await.unwrap()),
        vec![b.as_str().to_owned()]
    );
    ledger.clear_pending(&b).await.unwrap();
    assert!(ledger.pending_requests().await.unwrap().is_empty());
}

async fn concurrent_lock_acquires_have_one_winner(ledger: &Ledger) {
    let now = at(10, 0, 0, 0);
    let until = now + TimeDelta::seconds(30);
    let owners: Vec<String> = (0..5).map(|i| format!("scope-{i}")).collect();
    let attempts = futures_util::future::join_all(owners.iter().map(|o| ledger.acquire_lock(o, now, until))).await;
    let winners: Vec<&String> = owners
        .iter()
        .zip(&attempts)
        .filter(|(_, a)| matches!(a, Ok(LockAttempt::Acquired)))
        .map(|(o, _)| o)
        .collect();
    assert_eq!(winners.len(), 1, "{attempts:?}");
    for a in &attempts {
        match a {
            Ok(LockAttempt::Acquired) => {}
            Ok(LockAttempt::Held(h)) => assert_eq!(
                h,
                &LockHolder {
                    owner: winners[0].clone(),
                    until
                }
            ),
            Err(e) => panic!("{e}"),
        }
    }
}

// ---------------------------------------------------------------------------------------
// The budget.

async fn the_budget_sums_exactly_the_last_24_hours(ledger: &Ledger) {
    let now = at(12, 0, 0, 0);
    let hours = TimeDelta::hours;
    assert_eq!(ledger.granted_since(now).await.unwrap(), Credits::ZERO);

    ledger
        .record_grant(&scope("g-old"), now - hours(25), Credits::whole(1000))
        .await
        .unwrap();
    ledger
        .record_grant(
            &scope("g-edge-out"),
            now - hours(24) - TimeDelta::milliseconds(1),
            Credits::whole(500),
        )
        .await
        .unwrap();
    ledger
        .record_grant(&scope("g-23h"), now - hours(23), c("0.1"))
        .await
        .unwrap();
    ledger
        .record_grant(&scope("g-1h"), now - hours(1), c("0.2"))
        .await
        .unwrap();
    assert_eq!(ledger.granted_since(now).await.unwrap(), c("0.3"));
    ledger
        .record_grant(
            &scope("g-edge-in"),
            now - hours(24) + TimeDelta::milliseconds(1),
            c("250.000001"),
        )
        .await
        .unwrap();
    assert_eq!(ledger.granted_since(now).await.unwrap(), c("250.300001"));

    // Two requests planned in the same millisecond are two grants.
    ledger
        .record_grant(&scope("g-twin"), now - hours(1), c("0.7"))
        .await
        .unwrap();
    assert_eq!(ledger.granted_since(now).await.unwrap(), c("251.000001"));

    // The request corrects its grant to what was applied: replaced, not added.
    ledger
        .record_grant(&scope("g-1h"), now - hours(1), c("0.05"))
        .await
        .unwrap();
    assert_eq!(ledger.granted_since(now).await.unwrap(), c("250.850001"));
    ledger
        .record_grant(&scope("g-1h"), now - hours(1), Credits::ZERO)
        .await
        .unwrap();
    assert_eq!(ledger.granted_since(now).await.unwrap(), c("250.800001"));

    // The window moves with `now`: two hours later the 23-hour-old grant and the edge one are
    // out.
    assert_eq!(ledger.granted_since(now + hours(2)).await.unwrap(), c("0.7"));
}

// ---------------------------------------------------------------------------------------
// The audit trail.

async fn audit_changes_are_appended_once_and_round_trip_exactly(ledger: &Ledger) {
    let planned = at(9, 30, 0, 250);
    let s = scope("k-audit");
    let entry = change(planned, &s, "jdoe");
    assert_eq!(ledger.record_change(&entry).await.unwrap(), Appended::Recorded);
    assert_eq!(ledger.record_change(&entry).await.unwrap(), Appended::AlreadyRecorded);
    // Same identity (plan time, request, member), other content: the first stays.
    let rewritten = AuditEntry {
        at: entry.at + minutes(5),
        request_id: "resumer".into(),
        observed: limited("1", "1"),
        matches_plan: false,
        ..entry.clone()
    };
    assert_eq!(
        ledger.record_change(&rewritten).await.unwrap(),
        Appended::AlreadyRecorded
    );
    assert_eq!(ledger.changes_on(day()).await.unwrap(), vec![entry.clone()]);

    // Every shape round-trips exactly: callers without account or ARN, unlimited balances,
    // micro-credits, negative balances, no reason, a plan that did not hold.
    let odd = [
        AuditEntry {
            caller: Caller {
                kind: CallerKind::Jwt,
                principal_id: "00u1abcd".into(),
                account: None,
                arn: None,
                issuer: Some("https://idp.example.com/oauth2/default".into()),
            },
            reason: None,
            before: Balance::Unlimited,
            planned: c("43945.364"),
            observed: limited("43945.364", "-0.000001"),
            ..change(planned + TimeDelta::milliseconds(1), &s, "amy")
        },
        AuditEntry {
            caller: Caller::job("scan-credits"),
            source: "scan-credits auto top-up".into(),
            before: limited("0", "-750.5"),
            planned: c("12345678.123456"),
            observed: Balance::Unlimited,
            matches_plan: false,
            ..change(
                planned + TimeDelta::milliseconds(2),
                &scope("k-audit-2"),
                "zoë_admin@example",
            )
        },
        AuditEntry {
            caller: Caller {
                kind: CallerKind::Local,
                principal_id: "local".into(),
                account: Some("000000000000".into()),
                arn: None,
                issuer: None,
            },
            reason: Some("quotes \" and \\ and\nnewlines, émoji 🎉".into()),
            planned: c("0.3"),
            observed: limited("0.3", "0.3"),
            ..change(planned + TimeDelta::milliseconds(3), &s, "bob")
        },
    ];
    for e in &odd {
        assert_eq!(ledger.record_change(e).await.unwrap(), Appended::Recorded);
    }
    let mut expected = vec![entry];
    expected.extend(odd);
    assert_eq!(ledger.changes_on(day()).await.unwrap(), expected);
    assert!(ledger.intents_on(day()).await.unwrap().is_empty());
}

async fn audit_intents_are_appended_once_and_round_trip_exactly(ledger: &Ledger) {
    let planned = at(9, 30, 0, 250);
    let s = scope("k-intent");
    let first = intent(planned, &s, "inv-1", 0);
    assert_eq!(ledger.record_intent(&first).await.unwrap(), Appended::Recorded);
    assert_eq!(ledger.record_intent(&first).await.unwrap(), Appended::AlreadyRecorded);
    // Same key, other content: the first stays.
    let changed = AuditIntent {
        members: vec![],
        ..first.clone()
    };
    assert_eq!(ledger.record_intent(&changed).await.unwrap(), Appended::AlreadyRecorded);
    // Another batch, and the same batch number sent again by a resuming invocation, are new.
    let second = intent(planned, &s, "inv-1", 1);
    let resumed = AuditIntent {
        caller: Caller::job("scan-credits"),
        reason: None,
        members: vec![IntendedChange {
            username: "carl".into(),
            before: limited("5", "-2.5"),
            target: c("99999.999999"),
        }],
        ..intent(planned, &s, "inv-2", 0)
    };
    for i in [&second, &resumed] {
        assert_eq!(ledger.record_intent(i).await.unwrap(), Appended::Recorded);
    }
    assert_eq!(ledger.intents_on(day()).await.unwrap(), vec![first, second, resumed]);
    assert!(ledger.changes_on(day()).await.unwrap().is_empty());
}

async fn changes_and_intents_share_a_day_but_are_read_apart(ledger: &Ledger) {
    let planned = at(11, 0, 0, 0);
    let s = scope("k-apart");
    let i0 = intent(planned, &s, "inv-1", 0);
    let e0 = change(planned, &s, "amy");
    let e1 = change(planned, &s, "jdoe");
    assert_eq!(ledger.record_intent(&i0).await.unwrap(), Appended::Recorded);
    assert_eq!(ledger.record_change(&e0).await.unwrap(), Appended::Recorded);
    assert_eq!(ledger.record_change(&e1).await.unwrap(), Appended::Recorded);
    assert_eq!(ledger.changes_on(day()).await.unwrap(), vec![e0, e1]);
    assert_eq!(ledger.intents_on(day()).await.unwrap(), vec![i0]);
    // Nothing else in the ledger is read as audit (grants, requests, the lock).
    ledger.record_grant(&s, planned, Credits::whole(5)).await.unwrap();
    assert_eq!(
        claim(ledger, &s, "b", "inv-1", planned, planned + minutes(1)).await,
        RequestClaim::Fresh
    );
    ledger.acquire_lock("x", planned, planned + minutes(1)).await.unwrap();
    assert_eq!(ledger.changes_on(day()).await.unwrap().len(), 2);
    assert_eq!(ledger.intents_on(day()).await.unwrap().len(), 1);
}

async fn audit_entries_are_read_per_plan_day_in_plan_order(ledger: &Ledger) {
    let s = scope("k-order");
    let later = change(at(11, 0, 0, 5), &s, "amy");
    let first = change(at(9, 30, 0, 250), &s, "jdoe");
    let same_ms = AuditEntry {
        reason: None,
        ..change(at(9, 30, 0, 250), &s, "jdoe2")
    };
    // Planned at the day's last millisecond, observed the next day: filed under the plan day.
    let last_ms = change(at(23, 59, 59, 999), &s, "night");
    assert_eq!(last_ms.at.date_naive(), day().succ_opt().unwrap());
    let next_day = change(
        at(23, 59, 59, 999) + TimeDelta::milliseconds(1),
        &scope("k-order-2"),
        "zed",
    );
    for e in [&later, &next_day, &last_ms, &first, &same_ms] {
        assert_eq!(ledger.record_change(e).await.unwrap(), Appended::Recorded);
    }
    assert_eq!(
        ledger.changes_on(day()).await.unwrap(),
        vec![first.clone(), same_ms, later.clone(), last_ms]
    );
    assert_eq!(
        ledger.changes_on(day().succ_opt().unwrap()).await.unwrap(),
        vec![next_day]
    );
    assert!(ledger.changes_on(day().pred_opt().unwrap()).await.unwrap().is_empty());

    // Intents too, with plan order ahead of batch order.
    let i_late = intent(at(11, 0, 0, 5), &s, "inv-1", 0);
    let i_early_1 = intent(at(8, 0, 0, 0), &s, "inv-1", 1);
    let i_early_0 = intent(at(8, 0, 0, 0), &s, "inv-1", 0);
    for i in [&i_late, &i_early_1, &i_early_0] {
        ledger.record_intent(i).await.unwrap();
    }
    assert_eq!(
        ledger.intents_on(day()).await.unwrap(),
        vec![i_early_0, i_early_1, i_late]
    );
}

// ---------------------------------------------------------------------------------------
// Cost.

async fn requests_made_counts_what_the_ledger_sent(ledger: &Ledger) {
    let now = at(10, 0, 0, 0);
    let is_memory = matches!(ledger, Ledger::Memory(_));
    let s = scope("k-cost");
    let before = ledger.requests_made();
    let mut expected = before;
    // One conditional put each, when they succeed.
    assert_eq!(
        claim(ledger, &s, "body", "inv-1", now, now + minutes(1)).await,
        RequestClaim::Fresh
    );
    expected += 1;
    assert_eq!(ledger.requests_made(), if is_memory { 0 } else { expected });
    assert_eq!(
        ledger.acquire_lock("inv-1", now, now + minutes(1)).await.unwrap(),
        LockAttempt::Acquired
    );
    expected += 1;
    assert_eq!(ledger.requests_made(), if is_memory { 0 } else { expected });
    ledger
        .update_request(&s, "inv-1", &update(RequestStatus::Done, now, Some(json!({})), now))
        .await
        .unwrap();
    ledger.release_lock("inv-1").await.unwrap();
    ledger.record_grant(&s, now, Credits::whole(1)).await.unwrap();
    expected += 3;
    assert_eq!(ledger.requests_made(), if is_memory { 0 } else { expected });
    // Reads count too: a replay costs at least the failed put and the journal query.
    assert!(matches!(
        claim(ledger, &s, "body", "inv-2", now, now + minutes(1)).await,
        RequestClaim::Replay(_)
    ));
    if is_memory {
        assert_eq!(ledger.requests_made(), 0);
    } else {
        assert!(ledger.requests_made() >= expected + 2, "{}", ledger.requests_made());
    }
    // Never decreasing.
    let seen = ledger.requests_made();
    ledger.granted_since(now).await.unwrap();
    assert_eq!(ledger.requests_made(), if is_memory { 0 } else { seen + 1 });
}

// ---------------------------------------------------------------------------------------
// Where the two implementations must agree to the instant.

/// What each ledger says exactly at the end of a retention or lease, as text.
async fn at_the_boundaries(ledger: &Ledger) -> Vec<String> {
    let now = at(10, 0, 0, 0);
    let mut seen = Vec::new();

    let s = scope("k-boundary");
    claim(ledger, &s, "body", "inv-1", now, now + minutes(1)).await;
    ledger
        .update_request(&s, "inv-1", &update(RequestStatus::Done, now, Some(json!({})), now))
        .await
        .unwrap();
    let end = now + REQUEST_RETENTION;
    let claimed = claim(ledger, &s, "body", "inv-2", end, end + minutes(1)).await;
    seen.push(format!(
        "done request at the end of its retention: {}",
        kind(&Ok(claimed))
    ));

    // The table keeps `expires_at` in whole seconds; a request finished mid-second expires at
    // the same instant in both.
    for (key, offset) in [("k-boundary-early", -300), ("k-boundary-late", 300)] {
        let s = scope(key);
        let done_at = now + TimeDelta::milliseconds(500);
        claim(ledger, &s, "body", "inv-1", now, now + minutes(1)).await;
        ledger
            .update_request(
                &s,
                "inv-1",
                &update(RequestStatus::Done, done_at, Some(json!({})), done_at),
            )
            .await
            .unwrap();
        let then = done_at + REQUEST_RETENTION + TimeDelta::milliseconds(offset);
        let claimed = claim(ledger, &s, "body", "inv-2", then, then + minutes(1)).await;
        seen.push(format!(
            "done request {offset} ms from the end of its retention: {}",
            kind(&Ok(claimed))
        ));
    }

    ledger.claim_run("scan-credits", "boundary", now).await.unwrap();
    let r = ledger
        .claim_run("scan-credits", "boundary", now + RUN_RETENTION)
        .await
        .unwrap();
    seen.push(format!(
        "run at the end of its retention: {}",
        if r == RunClaim::Claimed {
            "claimed"
        } else {
            "already_claimed"
        }
    ));

    let until = now + TimeDelta::seconds(30);
    ledger.acquire_lock("a", now, until).await.unwrap();
    let l = ledger
        .acquire_lock("b", until, until + TimeDelta::seconds(30))
        .await
        .unwrap();
    seen.push(format!(
        "lock at the end of its lease: {}",
        if l == LockAttempt::Acquired { "acquired" } else { "held" }
    ));

    let s = scope("k-boundary-lease");
    claim(ledger, &s, "body", "inv-1", now, now + minutes(1)).await;
    let claimed = claim(ledger, &s, "body", "inv-2", now + minutes(1), now + minutes(2)).await;
    seen.push(format!("request at the end of its lease: {}", kind(&Ok(claimed))));
    seen
}

#[tokio::test]
async fn both_ledgers_agree_at_the_end_of_every_retention_and_lease() {
    let memory = at_the_boundaries(&Ledger::memory()).await;
    let dynamo = at_the_boundaries(&dynamo_ledger("boundaries").await).await;
    assert_eq!(memory, dynamo, "memory (left) and DynamoDB (right) disagree");
}

// ---------------------------------------------------------------------------------------
// What only the table can do wrong.

#[tokio::test]
async fn a_missing_table_is_an_error_naming_table_operation_and_permission() {
    let ledger = Ledger::dynamo(dynamodb(), "no-such-ledger-table");
    let now = at(6, 0, 0, 0);
    let err = ledger.claim_run("scan-credits", "k", now).await.unwrap_err();
    let text = err.to_string();
    assert!(matches!(err, LedgerError::Sdk { .. }), "{text}");
    assert!(text.contains("no-such-ledger-table"), "{text}");
    assert!(text.contains("claim_run"), "{text}");
    assert!(text.contains("dynamodb:PutItem"), "{text}");
    assert!(text.contains("ResourceNotFound"), "{text}");
    let checks: Vec<(String, &str, &str)> = vec![
        (
            ledger.alert_levels().await.unwrap_err().to_string(),
            "alert_levels",
            "Query",
        ),
        (
            ledger
                .claim_request(&scope("k"), Claim::new("b", "inv", now, now))
                .await
                .unwrap_err()
                .to_string(),
            "claim_request",
            "PutItem",
        ),
        (
            ledger.acquire_lock("inv", now, now).await.unwrap_err().to_string(),
            "acquire_lock",
            "PutItem",
        ),
        (
            ledger.release_lock("inv").await.unwrap_err().to_string(),
            "release_lock",
            "DeleteItem",
        ),
        (
            ledger.granted_since(now).await.unwrap_err().to_string(),
            "granted_since",
            "Query",
        ),
        (
            ledger.load_request(&scope("k")).await.unwrap_err().to_string(),
            "load_request",
            "Query",
        ),
        (
            ledger.changes_on(day()).await.unwrap_err().to_string(),
            "changes_on",
            "Query",
        ),
    ];
    for (text, operation, action) in checks {
        assert!(
            text.contains(operation)
                && text.contains(&format!("dynamodb:{action}"))
                && text.contains("no-such-ledger-table"),
            "{text}"
        );
    }
}

/// A run that dies after its commit marker (before promoting) keeps its alerts through a
/// later run that stages over them and then never commits (its email failed).
async fn committed_but_unpromoted_alerts_survive_a_later_run_that_never_commits(
    ledger: &Ledger,
    marker_only: impl AsyncFnOnce(&StagedAlerts),
) {
    let state = ledger.alert_state().await.unwrap();
    let first = state.stage(&[("jdoe".into(), Some(Level::Critical))], "run-1");
    ledger.stage_alerts(&first).await.unwrap();
    marker_only(&first).await;
    assert_eq!(
        ledger.alert_levels().await.unwrap().get("jdoe"),
        Some(&Level::Critical),
        "committed: counts"
    );
    // The next run stages jdoe back to ok, and its email fails: nothing of it counts.
    let state = ledger.alert_state().await.unwrap();
    let second = state.stage(&[("jdoe".into(), None)], "run-2");
    ledger.stage_alerts(&second).await.unwrap();
    assert_eq!(
        ledger.alert_levels().await.unwrap().get("jdoe"),
        Some(&Level::Critical),
        "run-1's committed level still stands"
    );
}

#[tokio::test]
async fn committed_but_unpromoted_alerts_survive_on_the_memory_ledger() {
    let ledger = Ledger::memory();
    let crash = async |staged: &StagedAlerts| {
        let Ledger::Memory(m) = &ledger else { unreachable!() };
        m.crash_next_commit_after_its_marker();
        assert!(ledger.commit_alerts(staged, Utc::now()).await.is_err());
    };
    committed_but_unpromoted_alerts_survive_a_later_run_that_never_commits(&ledger, crash).await;
}

#[tokio::test]
async fn committed_but_unpromoted_alerts_survive_on_dynamodb() {
    let client = dynamodb();
    let table = create_table(&client, "unpromoted-alerts").await;
    let ledger = Ledger::dynamo(client.clone(), table.clone());
    // Only the marker, as an invocation that died right after writing it leaves the table.
    let marker_only = async |staged: &StagedAlerts| {
        client
            .put_item()
            .table_name(&table)
            .item("pk", AttributeValue::S("ALERT".into()))
            .item("sk", AttributeValue::S(format!("COMMIT#{}", staged.run_key)))
            .item("run_key", AttributeValue::S(staged.run_key.clone()))
            .item(
                "expires_at",
                AttributeValue::N((Utc::now().timestamp() + 86_400).to_string()),
            )
            .send()
            .await
            .unwrap();
    };
    committed_but_unpromoted_alerts_survive_a_later_run_that_never_commits(&ledger, marker_only).await;
}

/// Alert state written one item per member (before shards) still counts, and the first
/// commit moves it into the shards and deletes the old items.
#[tokio::test]
async fn per_member_alert_items_are_read_then_moved_into_the_shards() {
    let client = dynamodb();
    let table = create_table(&client, "legacy-alerts").await;
    for (username, level) in [
        ("old_warning", "warning"),
        ("old_critical", "critical"),
        ("#org-floor", "critical"),
    ] {
        client
            .put_item()
            .table_name(&table)
            .item("pk", AttributeValue::S("ALERT".into()))
            .item("sk", AttributeValue::S(username.into()))
            .item("level", AttributeValue::S(level.into()))
            .send()
            .await
            .unwrap();
    }
    let ledger = Ledger::dynamo(client.clone(), table.clone());
    let before = ledger.alert_levels().await.unwrap();
    assert_eq!(before.len(), 3);
    assert_eq!(before.get("old_warning"), Some(&Level::Warning));
    record(
        &ledger,
        &[("old_warning", None), ("new", Some(Level::Warning))],
        "run-1",
    )
    .await;
    assert_eq!(
        ledger.alert_levels().await.unwrap(),
        HashMap::from([
            ("old_critical".to_owned(), Level::Critical),
            ("#org-floor".to_owned(), Level::Critical),
            ("new".to_owned(), Level::Warning)
        ])
    );
    let items = client
        .query()
        .table_name(&table)
        .key_condition_expression("pk = :pk")
        .expression_attribute_values(":pk", AttributeValue::S("ALERT".into()))
        .send()
        .await
        .unwrap();
    let sort_keys: Vec<&str> = items
        .items()
        .iter()
        .filter_map(|i| i.get("sk")?.as_s().ok())
        .map(String::as_str)
        .collect();
    assert!(
        sort_keys
            .iter()
            .all(|k| k.starts_with("SHARD#") || k.starts_with("COMMIT#")),
        "the per-member items are gone: {sort_keys:?}"
    );
}

#[tokio::test]
async fn a_malformed_item_is_reported_not_guessed() {
    let client = dynamodb();
    let table = create_table(&client, "malformed").await;
    let put = |pk: String, sk: &str, attributes: Vec<(&str, &str)>| {
        let mut request = client
            .put_item()
            .table_name(&table)
            .item("pk", AttributeValue::S(pk))
            .item("sk", AttributeValue::S(sk.into()));
        for (name, value) in attributes {
            request = request.item(name, AttributeValue::S(value.into()));
        }
        request.send()
    };
    put("ALERT".into(), "jdoe", vec![("level", "purple")]).await.unwrap();
    let s = scope("k-malformed");
    put(
        format!("REQ#{}", s.as_str()),
        "HEAD",
        vec![
            ("body_hash", "b"),
            ("status", "paused"),
            ("owner", "inv-1"),
            ("created_at", "2026-11-26T10:00:00.000Z"),
        ],
    )
    .await
    .unwrap();
    put(
        "AUDIT#2026-11-26".into(),
        "2026-11-26T10:00:00.000Z#0000000000000000#change#jdoe",
        vec![("kind", "change"), ("record", "{\"not\": \"an entry\"}")],
    )
    .await
    .unwrap();
    let ledger = Ledger::dynamo(client.clone(), table.clone());

    let err = ledger.alert_levels().await.unwrap_err();
    let text = err.to_string();
    assert!(matches!(err, LedgerError::Malformed { .. }), "{text}");
    assert!(
        text.contains("ALERT/jdoe") && text.contains("purple") && text.contains(&table),
        "{text}"
    );

    let now = at(10, 0, 0, 0);
    let err = ledger
        .claim_request(&s, Claim::new("b", "inv-2", now, now + minutes(1)))
        .await
        .unwrap_err();
    let text = err.to_string();
    assert!(matches!(err, LedgerError::Malformed { .. }), "{text}");
    assert!(text.contains(s.as_str()) && text.contains("paused"), "{text}");
    let err = ledger.load_request(&s).await.unwrap_err();
    assert!(matches!(err, LedgerError::Malformed { .. }), "{err}");

    let err = ledger.changes_on(day()).await.unwrap_err();
    let text = err.to_string();
    assert!(matches!(err, LedgerError::Malformed { .. }), "{text}");
    assert!(
        text.contains("AUDIT#2026-11-26") && text.contains("change#jdoe"),
        "{text}"
    );
}

#[tokio::test]
async fn the_audit_trail_is_stored_readably_for_people() {
    let client = dynamodb();
    let table = create_table(&client, "readable").await;
    let ledger = Ledger::dynamo(client.clone(), table.clone());
    let s = scope("k-readable");
    let entry = change(at(9, 30, 0, 250), &s, "jdoe");
    let batch = intent(at(9, 30, 0, 250), &s, "inv-1", 3);
    // A JWT caller is shown by subject: every user of an identity pool shares the issuer.
    let by_jwt = AuditEntry {
        caller: Caller {
            kind: CallerKind::Jwt,
            principal_id: "00u1abcd".into(),
            account: None,
            arn: None,
            issuer: Some("https://idp.example.com/oauth2/default".into()),
        },
        ..change(at(9, 30, 0, 250), &s, "amy")
    };
    ledger.record_change(&entry).await.unwrap();
    ledger.record_change(&by_jwt).await.unwrap();
    ledger.record_intent(&batch).await.unwrap();
    let items = client
        .query()
        .table_name(&table)
        .key_condition_expression("pk = :pk")
        .expression_attribute_values(":pk", AttributeValue::S("AUDIT#2026-11-26".into()))
        .send()
        .await
        .unwrap()
        .items
        .unwrap_or_default();
    assert_eq!(items.len(), 3);
    let text = |item: &HashMap<String, AttributeValue>, name: &str| item.get(name).and_then(|v| v.as_s().ok()).cloned();
    let change_item = items
        .iter()
        .find(|i| text(i, "username").as_deref() == Some("jdoe"))
        .unwrap();
    assert_eq!(text(change_item, "kind").as_deref(), Some("change"));
    assert_eq!(text(change_item, "sk"), Some(entry.sort_key()));
    assert_eq!(text(change_item, "username").as_deref(), Some("jdoe"));
    assert_eq!(
        text(change_item, "caller").as_deref(),
        Some(alice().arn.unwrap().as_str())
    );
    assert_eq!(text(change_item, "source").as_deref(), Some("allocate"));
    assert_eq!(text(change_item, "request_id"), Some(entry.request_id.clone()));
    let record: AuditEntry = serde_json::from_str(&text(change_item, "record").unwrap()).unwrap();
    assert_eq!(record, entry);
    let jwt_item = items
        .iter()
        .find(|i| text(i, "username").as_deref() == Some("amy"))
        .unwrap();
    assert_eq!(text(jwt_item, "caller").as_deref(), Some("00u1abcd"));
    let record: AuditEntry = serde_json::from_str(&text(jwt_item, "record").unwrap()).unwrap();
    assert_eq!(record, by_jwt);
    let intent_item = items
        .iter()
        .find(|i| text(i, "kind").as_deref() == Some("intent"))
        .unwrap();
    assert_eq!(text(intent_item, "sk"), Some(batch.sort_key()));
    assert_eq!(text(intent_item, "request_id").as_deref(), Some("inv-1"));
    // Audit items never expire.
    assert!(items.iter().all(|i| !i.contains_key("expires_at")));
}

#[tokio::test]
async fn a_partition_over_one_megabyte_is_read_across_pages() {
    let ledger = dynamo_ledger("pages").await;
    let padding = "x".repeat(2_000);
    let s = scope("k-large");
    let entries: Vec<AuditEntry> = (0..600)
        .map(|i| AuditEntry {
            reason: Some(format!("{i} {padding}")),
            ..change(at(8, 0, 0, 0) + TimeDelta::milliseconds(i), &s, "jdoe")
        })
        .collect();
    // Intents interleaved with the changes, so the kind filter works across pages too.
    let intents: Vec<AuditIntent> = (0..20)
        .map(|i| AuditIntent {
            reason: Some(padding.clone()),
            ..intent(at(8, 0, 0, 0) + TimeDelta::milliseconds(i * 30), &s, "inv-1", 0)
        })
        .collect();
    for chunk in entries.chunks(50) {
        futures_util::future::try_join_all(chunk.iter().map(|e| ledger.record_change(e)))
            .await
            .unwrap();
    }
    futures_util::future::try_join_all(intents.iter().map(|i| ledger.record_intent(i)))
        .await
        .unwrap();
    let read = ledger.changes_on(day()).await.unwrap();
    assert_eq!(read.len(), 600);
    assert_eq!(read, entries);
    assert_eq!(ledger.intents_on(day()).await.unwrap(), intents);
}
