//! The ledger: one scenario run against the in-memory ledger and against DynamoDB (a real
//! moto_server on loopback), so both implementations keep the same semantics; then what only
//! the table can do wrong (a missing table, a malformed item, a partition over 1 MB).

use std::collections::HashMap;

use aws_sdk_dynamodb::config::{BehaviorVersion, Credentials as AwsCredentials, Region};
use aws_sdk_dynamodb::types::{
    AttributeDefinition, AttributeValue, BillingMode, KeySchemaElement, KeyType, ScalarAttributeType,
};
use chrono::{DateTime, Duration, NaiveDate, TimeZone, Utc};
use credit_core::credits::classify::Level;
use credit_core::ledger::{AuditEntry, IdempotencyClaim, Ledger, LedgerError, RunClaim, RunStatus};
use credit_core::secrets::ring_http_client;
use serde_json::json;

use crate::moto::moto;

/// A DynamoDB client for the emulator, configured explicitly (no environment, no IMDS).
pub fn dynamodb() -> aws_sdk_dynamodb::Client {
    let config = aws_sdk_dynamodb::Config::builder()
        .behavior_version(BehaviorVersion::latest())
        .region(Region::new("us-east-1"))
        .credentials_provider(AwsCredentials::new("testing", "testing", None, None, "tests"))
        .endpoint_url(&moto().endpoint)
        .http_client(ring_http_client())
        .build();
    aws_sdk_dynamodb::Client::from_conf(config)
}

/// Creates a ledger table (pk/sk strings, as the SAM template declares it) unique to this
/// process and `name`, and returns its name.
pub async fn create_table(client: &aws_sdk_dynamodb::Client, name: &str) -> String {
    let table = format!("ledger-{}-{name}", std::process::id());
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

fn at(h: u32, m: u32, s: u32, ms: u32) -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 11, 26, h, m, s).single().expect("a time") + Duration::milliseconds(ms.into())
}

fn entry(at: DateTime<Utc>, request_id: &str, username: &str) -> AuditEntry {
    AuditEntry {
        at,
        request_id: request_id.into(),
        caller: "arn:aws:iam::111122223333:user/alice".into(),
        reason: Some("ticket CS-42".into()),
        source: "allocate".into(),
        username: username.into(),
        before: json!({"kind": "limited", "assigned": 1000.0, "available": 50.0}),
        after: json!({"allocation": 1150.0, "available": 200.0}),
    }
}

/// Every ledger method, including each conditional path, with the semantics both
/// implementations must share.
async fn every_method(ledger: &Ledger) {
    let now = at(10, 0, 0, 0);

    // Alert state: set, overwrite, delete (None and Ok both mean "back to ok").
    assert!(ledger.alert_levels().await.unwrap().is_empty());
    ledger
        .set_alert_level("jdoe", Some(Level::Warning), "run-1")
        .await
        .unwrap();
    ledger
        .set_alert_level("amy", Some(Level::Critical), "run-1")
        .await
        .unwrap();
    ledger
        .set_alert_level("zed", Some(Level::Critical), "run-1")
        .await
        .unwrap();
    ledger
        .set_alert_level("jdoe", Some(Level::Critical), "run-2")
        .await
        .unwrap();
    ledger.set_alert_level("zed", None, "run-2").await.unwrap();
    ledger.set_alert_level("amy", Some(Level::Ok), "run-2").await.unwrap();
    ledger.set_alert_level("never-set", None, "run-2").await.unwrap();
    assert_eq!(
        ledger.alert_levels().await.unwrap(),
        HashMap::from([("jdoe".to_owned(), Level::Critical)])
    );

    // Runs: the first claim wins; later claims see what it did, running and finished.
    assert_eq!(
        ledger
            .claim_run("scan-credits", "2026-11-26T06:00:00Z", now)
            .await
            .unwrap(),
        RunClaim::Claimed
    );
    assert_eq!(
        ledger
            .claim_run("scan-credits", "2026-11-26T06:00:00Z", now + Duration::minutes(1))
            .await
            .unwrap(),
        RunClaim::AlreadyClaimed {
            status: RunStatus::Claimed,
            claimed_at: now,
            summary: None
        }
    );
    // The same key under another job is another run.
    assert_eq!(
        ledger
            .claim_run("monthly-report", "2026-11-26T06:00:00Z", now)
            .await
            .unwrap(),
        RunClaim::Claimed
    );
    let summary = json!({"critical": 3, "emails": 2});
    ledger
        .finish_run("scan-credits", "2026-11-26T06:00:00Z", RunStatus::Done, &summary)
        .await
        .unwrap();
    assert_eq!(
        ledger
            .claim_run("scan-credits", "2026-11-26T06:00:00Z", now)
            .await
            .unwrap(),
        RunClaim::AlreadyClaimed {
            status: RunStatus::Done,
            claimed_at: now,
            summary: Some(summary.clone())
        }
    );
    ledger
        .finish_run(
            "monthly-report",
            "2026-11-26T06:00:00Z",
            RunStatus::Failed,
            &json!({"error": "x"}),
        )
        .await
        .unwrap();
    assert!(matches!(
        ledger
            .claim_run("monthly-report", "2026-11-26T06:00:00Z", now)
            .await
            .unwrap(),
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
    // An expired claim (past its ~400 days) counts as absent even before TTL sweeps it.
    assert_eq!(
        ledger
            .claim_run("scan-credits", "2026-11-26T06:00:00Z", now + Duration::days(401))
            .await
            .unwrap(),
        RunClaim::Claimed
    );

    // Idempotency keys.
    assert_eq!(
        ledger.begin_idempotent("key-1", "hash-a", now).await.unwrap(),
        IdempotencyClaim::Fresh
    );
    assert_eq!(
        ledger.begin_idempotent("key-1", "hash-a", now).await.unwrap(),
        IdempotencyClaim::InProgress
    );
    assert_eq!(
        ledger.begin_idempotent("key-1", "hash-b", now).await.unwrap(),
        IdempotencyClaim::Mismatch
    );
    let response = json!({"members": [{"username": "jdoe", "status": "assigned"}]});
    ledger.complete_idempotent("key-1", 207, &response).await.unwrap();
    assert_eq!(
        ledger.begin_idempotent("key-1", "hash-a", now).await.unwrap(),
        IdempotencyClaim::Replay {
            status_code: 207,
            response: response.clone()
        }
    );
    assert_eq!(
        ledger.begin_idempotent("key-1", "hash-b", now).await.unwrap(),
        IdempotencyClaim::Mismatch
    );
    // A completed key is never abandoned (it must keep replaying).
    ledger.abandon_idempotent("key-1").await.unwrap();
    assert!(matches!(
        ledger.begin_idempotent("key-1", "hash-a", now).await.unwrap(),
        IdempotencyClaim::Replay { .. }
    ));
    // An abandoned in-progress key is free again, for any body.
    assert_eq!(
        ledger.begin_idempotent("key-2", "hash-a", now).await.unwrap(),
        IdempotencyClaim::Fresh
    );
    ledger.abandon_idempotent("key-2").await.unwrap();
    assert_eq!(
        ledger.begin_idempotent("key-2", "hash-b", now).await.unwrap(),
        IdempotencyClaim::Fresh
    );
    ledger.abandon_idempotent("never-begun").await.unwrap();
    let err = ledger
        .complete_idempotent("never-begun", 200, &response)
        .await
        .unwrap_err();
    assert!(matches!(err, LedgerError::Missing { .. }), "{err}");
    // Keys expire after 24 h.
    assert_eq!(
        ledger
            .begin_idempotent("key-1", "hash-b", now + Duration::hours(25))
            .await
            .unwrap(),
        IdempotencyClaim::Fresh
    );

    // Audit trail: per UTC day, in time order, members of one request kept apart.
    let day = NaiveDate::from_ymd_opt(2026, 11, 26).unwrap();
    let later = entry(at(11, 0, 0, 5), "req-2", "amy");
    let first = entry(at(9, 30, 0, 250), "req-1", "jdoe");
    let same_ms = AuditEntry {
        reason: None,
        ..entry(at(9, 30, 0, 250), "req-1", "jdoe2")
    };
    let next_day = entry(at(23, 59, 59, 999) + Duration::milliseconds(1), "req-3", "zed");
    for e in [&later, &first, &same_ms, &next_day] {
        ledger.record_change(e).await.unwrap();
    }
    assert_eq!(
        ledger.changes_on(day).await.unwrap(),
        vec![first.clone(), same_ms.clone(), later.clone()]
    );
    assert_eq!(
        ledger.changes_on(day.succ_opt().unwrap()).await.unwrap(),
        vec![next_day]
    );
    assert!(ledger.changes_on(day.pred_opt().unwrap()).await.unwrap().is_empty());
}

#[tokio::test]
async fn the_memory_ledger_follows_the_protocol() {
    every_method(&Ledger::memory()).await;
}

#[tokio::test]
async fn the_dynamodb_ledger_follows_the_same_protocol() {
    every_method(&dynamo_ledger("protocol").await).await;
}

#[tokio::test]
async fn concurrent_claims_have_exactly_one_winner() {
    let ledger = dynamo_ledger("race").await;
    let now = at(6, 0, 0, 0);
    let claims = futures_util::future::join_all((0..8).map(|_| ledger.claim_run("scan-credits", "race", now))).await;
    let winners = claims.iter().filter(|c| matches!(c, Ok(RunClaim::Claimed))).count();
    assert_eq!(winners, 1, "{claims:?}");
    let keys = futures_util::future::join_all((0..8).map(|_| ledger.begin_idempotent("race-key", "h", now))).await;
    let fresh = keys.iter().filter(|c| matches!(c, Ok(IdempotencyClaim::Fresh))).count();
    assert_eq!(fresh, 1, "{keys:?}");
}

#[tokio::test]
async fn a_missing_table_is_an_error_naming_table_operation_and_permission() {
    let ledger = Ledger::dynamo(dynamodb(), "no-such-ledger-table");
    let err = ledger.claim_run("scan-credits", "k", at(6, 0, 0, 0)).await.unwrap_err();
    let text = err.to_string();
    assert!(matches!(err, LedgerError::Sdk { .. }), "{text}");
    assert!(text.contains("no-such-ledger-table"), "{text}");
    assert!(text.contains("claim_run"), "{text}");
    assert!(text.contains("dynamodb:PutItem"), "{text}");
    assert!(text.contains("ResourceNotFound"), "{text}");
    let text = ledger.alert_levels().await.unwrap_err().to_string();
    assert!(
        text.contains("alert_levels") && text.contains("dynamodb:Query"),
        "{text}"
    );
}

#[tokio::test]
async fn a_malformed_item_is_reported_not_guessed() {
    let client = dynamodb();
    let table = create_table(&client, "malformed").await;
    client
        .put_item()
        .table_name(&table)
        .item("pk", AttributeValue::S("ALERT".into()))
        .item("sk", AttributeValue::S("jdoe".into()))
        .item("level", AttributeValue::S("purple".into()))
        .send()
        .await
        .unwrap();
    let ledger = Ledger::dynamo(client, table.clone());
    let err = ledger.alert_levels().await.unwrap_err();
    let text = err.to_string();
    assert!(matches!(err, LedgerError::Malformed { .. }), "{text}");
    assert!(
        text.contains("ALERT/jdoe") && text.contains("purple") && text.contains(&table),
        "{text}"
    );
}

#[tokio::test]
async fn a_partition_over_one_megabyte_is_read_across_pages() {
    let ledger = dynamo_ledger("pages").await;
    let padding = "x".repeat(2_000);
    let day = NaiveDate::from_ymd_opt(2026, 11, 26).unwrap();
    let entries: Vec<AuditEntry> = (0..600)
        .map(|i| AuditEntry {
            before: json!({"note": padding}),
            ..entry(at(8, 0, 0, 0) + Duration::milliseconds(i), &format!("req-{i}"), "jdoe")
        })
        .collect();
    for chunk in entries.chunks(50) {
        futures_util::future::try_join_all(chunk.iter().map(|e| ledger.record_change(e)))
            .await
            .unwrap();
    }
    let read = ledger.changes_on(day).await.unwrap();
    assert_eq!(read.len(), 600);
    assert_eq!(read, entries);
}
