//! The ledger in DynamoDB: one table, `pk` (S) + `sk` (S), TTL attribute `expires_at` (N).
//!
//! Claims are conditional puts (`attribute_not_exists(pk)`, or an expired record), so two
//! concurrent invocations cannot both win; the loser reads what the winner recorded (from the
//! `ConditionalCheckFailedException`'s item when DynamoDB returns it, else a consistent read).
//! Every other SDK error becomes a [`LedgerError::Sdk`] naming table, operation and the IAM
//! action; reads of many items paginate. Allocation requests, the lock and the budget are in
//! [`requests`].

mod alerts;
mod requests;

use std::collections::HashMap;
use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use aws_sdk_dynamodb::Client;
use aws_sdk_dynamodb::error::{DisplayErrorContext, SdkError};
use aws_sdk_dynamodb::operation::put_item::PutItemError;
use aws_sdk_dynamodb::types::{AttributeValue, ReturnValuesOnConditionCheckFailure};
use chrono::{DateTime, NaiveDate, SecondsFormat, Utc};
use serde_json::Value;

use super::{
    Appended, AuditEntry, AuditIntent, LedgerError, MEMBERS_SK, ORG_PK, RUN_RETENTION, RunClaim, RunStatus, run_pk,
};

use crate::arcgis::{ListingHint, Partition};

type Item = HashMap<String, AttributeValue>;

/// How often a claim is retried when the conflicting record vanished between the failed put
/// and the read (expired and swept, or abandoned): more than once in a row means a bug.
const CLAIM_ATTEMPTS: usize = 3;

/// The condition every claim is made under: no live record with this key.
const CLAIM_CONDITION: &str = "attribute_not_exists(pk) OR expires_at <= :now";

/// The DynamoDB-backed ledger.
#[derive(Clone)]
pub struct DynamoLedger {
    client: Client,
    table: String,
    requests: Arc<AtomicU64>,
}

/// Counts every HTTP request the DynamoDB client sends (retries and pages included), so a
/// run can report what its ledger work cost.
#[derive(Debug)]
struct RequestCounter(Arc<AtomicU64>);

impl aws_sdk_dynamodb::config::Intercept for RequestCounter {
    fn name(&self) -> &'static str {
        "credit-steward ledger request counter"
    }

    fn read_before_transmit(
        &self,
        _context: &aws_sdk_dynamodb::config::interceptors::BeforeTransmitInterceptorContextRef<'_>,
        _runtime_components: &aws_sdk_dynamodb::config::RuntimeComponents,
        _cfg: &mut aws_sdk_dynamodb::config::ConfigBag,
    ) -> Result<(), aws_sdk_dynamodb::error::BoxError> {
        self.0.fetch_add(1, Ordering::Relaxed);
        Ok(())
    }
}

impl fmt::Debug for DynamoLedger {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DynamoLedger")
            .field("table", &self.table)
            .finish_non_exhaustive()
    }
}

fn s(v: impl Into<String>) -> AttributeValue {
    AttributeValue::S(v.into())
}

fn n(v: impl fmt::Display) -> AttributeValue {
    AttributeValue::N(v.to_string())
}

fn rfc3339(t: DateTime<Utc>) -> AttributeValue {
    s(t.to_rfc3339_opts(SecondsFormat::Millis, true))
}

/// Reads typed attributes out of one item, naming the item in every error.
struct Reader<'a> {
    item: &'a Item,
    table: &'a str,
    operation: &'static str,
}

impl Reader<'_> {
    fn key(&self) -> String {
        let part = |k: &str| self.item.get(k).and_then(|v| v.as_s().ok()).map_or("?", String::as_str);
        format!("{}/{}", part("pk"), part("sk"))
    }

    fn malformed(&self, problem: String) -> LedgerError {
        LedgerError::Malformed {
            table: self.table.to_owned(),
            operation: self.operation,
            key: self.key(),
            problem,
        }
    }

    fn opt_string(&self, name: &str) -> Result<Option<&str>, LedgerError> {
        match self.item.get(name) {
            None | Some(AttributeValue::Null(_)) => Ok(None),
            Some(AttributeValue::S(v)) => Ok(Some(v)),
            Some(_) => Err(self.malformed(format!("attribute {name} is not a string"))),
        }
    }

    fn string(&self, name: &str) -> Result<&str, LedgerError> {
        self.opt_string(name)?
            .ok_or_else(|| self.malformed(format!("attribute {name} is missing")))
    }

    fn number(&self, name: &str) -> Result<Option<f64>, LedgerError> {
        match self.item.get(name) {
            None => Ok(None),
            Some(AttributeValue::N(v)) => v
                .parse()
                .map(Some)
                .map_err(|_| self.malformed(format!("attribute {name} is not a number"))),
            Some(_) => Err(self.malformed(format!("attribute {name} is not a number"))),
        }
    }

    fn time(&self, name: &str) -> Result<DateTime<Utc>, LedgerError> {
        DateTime::parse_from_rfc3339(self.string(name)?)
            .map(|t| t.with_timezone(&Utc))
            .map_err(|_| self.malformed(format!("attribute {name} is not an RFC 3339 time")))
    }

    fn json(&self, name: &str) -> Result<Option<serde_json::Value>, LedgerError> {
        self.opt_string(name)?
            .map(|text| {
                serde_json::from_str(text).map_err(|e| self.malformed(format!("attribute {name} is not JSON ({e})")))
            })
            .transpose()
    }

    /// Whether the record has expired at `now` (DynamoDB's TTL sweep lags by up to days).
    fn expired(&self, now: DateTime<Utc>) -> Result<bool, LedgerError> {
        Ok(self.number("expires_at")?.is_some_and(|e| e <= now.timestamp() as f64))
    }
}

/// The IAM action each ledger operation needs, for error messages.
fn action_of(operation: &str) -> &'static str {
    match operation {
        "alert_levels" | "changes_on" | "intents_on" | "load_request" | "granted_since" => "Query",
        "commit_alerts(legacy)" | "abandon_request" | "release_lock" | "settle_outbox" => "DeleteItem",
        "finish_run"
        | "update_request"
        | "claim_request(takeover)"
        | "mark_pending"
        | "clear_pending"
        | "stage_alerts"
        | "commit_alerts(promote)" => "UpdateItem",
        "claim_run(read)" | "claim_request(read)" | "acquire_lock(read)" | "listing_hint" | "pending_requests" => {
            "GetItem"
        }
        _ => "PutItem",
    }
}

/// Whether a put/update/delete failed only on its condition.
fn condition_failed<E>(e: &SdkError<E>) -> bool
where
    E: aws_sdk_dynamodb::error::ProvideErrorMetadata,
{
    e.as_service_error()
        .and_then(|s| s.code())
        .is_some_and(|c| c == "ConditionalCheckFailedException")
}

impl DynamoLedger {
    /// A ledger over `table` through `client` (with a request counter added).
    pub fn new(client: Client, table: impl Into<String>) -> Self {
        let requests = Arc::new(AtomicU64::new(0));
        let config = client
            .config()
            .to_builder()
            .interceptor(RequestCounter(requests.clone()))
            .build();
        DynamoLedger {
            client: Client::from_conf(config),
            table: table.into(),
            requests,
        }
    }

    /// HTTP requests sent to DynamoDB so far.
    pub fn requests_made(&self) -> u64 {
        self.requests.load(Ordering::Relaxed)
    }

    /// The table this ledger writes to.
    pub fn table(&self) -> &str {
        &self.table
    }

    fn sdk_error<E>(&self, operation: &'static str, e: &SdkError<E>) -> LedgerError
    where
        E: std::error::Error + 'static,
    {
        LedgerError::Sdk {
            table: self.table.clone(),
            operation,
            action: action_of(operation),
            detail: DisplayErrorContext(e).to_string(),
        }
    }

    fn reader<'a>(&'a self, item: &'a Item, operation: &'static str) -> Reader<'a> {
        Reader {
            item,
            table: &self.table,
            operation,
        }
    }

    /// Every item in partition `pk`, consistently read, all pages.
    async fn partition(&self, pk: &str, operation: &'static str) -> Result<Vec<Item>, LedgerError> {
        self.partition_from(pk, None, operation).await
    }

    /// The items of partition `pk` whose sort key is at least `sk_from` (all of them without
    /// it), consistently read, all pages.
    async fn partition_from(
        &self,
        pk: &str,
        sk_from: Option<String>,
        operation: &'static str,
    ) -> Result<Vec<Item>, LedgerError> {
        let query = self
            .client
            .query()
            .table_name(&self.table)
            .expression_attribute_values(":pk", s(pk))
            .consistent_read(true);
        let query = match sk_from {
            Some(from) => query
                .key_condition_expression("pk = :pk AND sk >= :from")
                .expression_attribute_values(":from", s(from)),
            None => query.key_condition_expression("pk = :pk"),
        };
        query
            .into_paginator()
            .items()
            .send()
            .try_collect()
            .await
            .map_err(|e| self.sdk_error(operation, &e))
    }

    /// A conditional put of a fresh record. `Ok(None)` when it was written; `Ok(Some(item))`
    /// with the live conflicting record otherwise (`None` inside when it vanished meanwhile).
    async fn claim(
        &self,
        item: Item,
        now: DateTime<Utc>,
        operation: &'static str,
        read_operation: &'static str,
    ) -> Result<Option<Option<Item>>, LedgerError> {
        self.claim_replacing(item, now, operation, read_operation)
            .await
            .map(|r| r.err())
    }

    /// Like [`Self::claim`]: `Ok(Ok(replaced))` when written (with the expired record it
    /// replaced, if any), `Ok(Err(conflict))` otherwise.
    pub(super) async fn claim_replacing(
        &self,
        item: Item,
        now: DateTime<Utc>,
        operation: &'static str,
        read_operation: &'static str,
    ) -> Result<Result<Option<Item>, Option<Item>>, LedgerError> {
        let pk = item.get("pk").cloned().unwrap_or_else(|| s(""));
        let sk = item.get("sk").cloned().unwrap_or_else(|| s(""));
        let result = self
            .client
            .put_item()
            .table_name(&self.table)
            .set_item(Some(item))
            .condition_expression(CLAIM_CONDITION)
            .expression_attribute_values(":now", n(now.timestamp()))
            .return_values_on_condition_check_failure(ReturnValuesOnConditionCheckFailure::AllOld)
            .return_values(aws_sdk_dynamodb::types::ReturnValue::AllOld)
            .send()
            .await;
        let err = match result {
            Ok(out) => return Ok(Ok(out.attributes)),
            Err(e) if condition_failed(&e) => e,
            Err(e) => return Err(self.sdk_error(operation, &e)),
        };
        if let Some(PutItemError::ConditionalCheckFailedException(c)) = err.as_service_error()
            && let Some(old) = c.item()
        {
            return Ok(Err(Some(old.clone())));
        }
        // Not every DynamoDB-compatible server returns the old item: read it.
        let got = self
            .client
            .get_item()
            .table_name(&self.table)
            .key("pk", pk)
            .key("sk", sk)
            .consistent_read(true)
            .send()
            .await
            .map_err(|e| self.sdk_error(read_operation, &e))?;
        Ok(Err(got.item))
    }

    pub(super) async fn listing_hint(&self) -> Result<Option<ListingHint>, LedgerError> {
        let operation = "listing_hint";
        let got = self
            .client
            .get_item()
            .table_name(&self.table)
            .key("pk", s(ORG_PK))
            .key("sk", s(MEMBERS_SK))
            .send()
            .await
            .map_err(|e| self.sdk_error(operation, &e))?;
        let Some(item) = got.item else {
            return Ok(None);
        };
        let r = self.reader(&item, operation);
        let count = |n: &AttributeValue, what: &str| -> Result<u64, LedgerError> {
            n.as_n()
                .ok()
                .and_then(|n| n.parse::<u64>().ok())
                .ok_or_else(|| r.malformed(format!("{what} is not a count")))
        };
        let members = match item.get("members") {
            Some(n) => count(n, "members")?,
            None => return Err(r.malformed("no members count".into())),
        };
        // Written since listings are planned by part; absent from older items.
        let parts = match item.get("parts") {
            None => Vec::new(),
            Some(AttributeValue::L(parts)) => parts
                .iter()
                .map(|part| {
                    let field = |name: &str| match part {
                        AttributeValue::M(m) => m.get(name),
                        _ => None,
                    };
                    let text = |name: &str| field(name).and_then(|v| v.as_s().ok()).cloned();
                    let role = text("role").ok_or_else(|| r.malformed("a part without a role".into()))?;
                    let members = field("members")
                        .ok_or_else(|| r.malformed(format!("part {role} without a member count")))
                        .and_then(|n| count(n, "a part's members"))?;
                    let partition = Partition {
                        role: Some(role),
                        user_type: text("user_type"),
                    };
                    Ok((partition, members))
                })
                .collect::<Result<Vec<_>, LedgerError>>()?,
            Some(_) => return Err(r.malformed("parts is not a list".into())),
        };
        Ok(Some(ListingHint { members, parts }))
    }

    pub(super) async fn set_listing_hint(&self, hint: &ListingHint, run_key: &str) -> Result<(), LedgerError> {
        let mut put = self
            .client
            .put_item()
            .table_name(&self.table)
            .item("pk", s(ORG_PK))
            .item("sk", s(MEMBERS_SK))
            .item("members", n(hint.members))
            .item("run_key", s(run_key))
            .item("updated_at", rfc3339(Utc::now()));
        // Only parts a listing can filter by: a role, and a user type within it.
        let parts: Vec<AttributeValue> = hint
            .parts
            .iter()
            .filter_map(|(part, size)| {
                let mut item = HashMap::from([
                    ("role".to_owned(), s(part.role.as_ref()?)),
                    ("members".to_owned(), n(*size)),
                ]);
                if let Some(t) = &part.user_type {
                    item.insert("user_type".to_owned(), s(t));
                }
                Some(AttributeValue::M(item))
            })
            .collect();
        if !parts.is_empty() {
            put = put.item("parts", AttributeValue::L(parts));
        }
        put.send().await.map_err(|e| self.sdk_error("set_listing_hint", &e))?;
        Ok(())
    }

    pub(super) async fn claim_run(&self, job: &str, key: &str, now: DateTime<Utc>) -> Result<RunClaim, LedgerError> {
        for _ in 0..CLAIM_ATTEMPTS {
            let item: Item = [
                ("pk".to_owned(), s(run_pk(job))),
                ("sk".to_owned(), s(key)),
                ("status".to_owned(), s(RunStatus::Claimed.as_str())),
                ("claimed_at".to_owned(), rfc3339(now)),
                ("expires_at".to_owned(), n((now + RUN_RETENTION).timestamp())),
            ]
            .into_iter()
            .collect();
            match self.claim(item, now, "claim_run", "claim_run(read)").await? {
                None => return Ok(RunClaim::Claimed),
                Some(Some(old)) => {
                    let r = self.reader(&old, "claim_run");
                    if r.expired(now)? {
                        continue;
                    }
                    let status = r.string("status")?;
                    let status = RunStatus::parse(status)
                        .ok_or_else(|| r.malformed(format!("status '{status}' is not claimed, done or failed")))?;
                    return Ok(RunClaim::AlreadyClaimed {
                        status,
                        claimed_at: r.time("claimed_at")?,
                        summary: r.json("summary")?,
                    });
                }
                Some(None) => continue,
            }
        }
        Err(LedgerError::Malformed {
            table: self.table.clone(),
            operation: "claim_run",
            key: format!("{}/{key}", run_pk(job)),
            problem: format!("the record kept changing under {CLAIM_ATTEMPTS} claim attempts"),
        })
    }

    /// Updates attributes of an existing record; `Missing` when there is none.
    async fn update_existing(
        &self,
        pk: &str,
        sk: &str,
        operation: &'static str,
        expression: &str,
        // `(":attribute", value)`: the placeholder names the attribute it sets.
        values: Vec<(&str, AttributeValue)>,
    ) -> Result<(), LedgerError> {
        let mut request = self
            .client
            .update_item()
            .table_name(&self.table)
            .key("pk", s(pk))
            .key("sk", s(sk))
            .update_expression(expression)
            .condition_expression("attribute_exists(pk)");
        // Every attribute goes through a `#name` alias: `status` and `response` are DynamoDB
        // reserved words, and aliasing all of them keeps the next one from biting.
        for (placeholder, value) in values {
            let attribute = placeholder.trim_start_matches(':');
            request = request
                .expression_attribute_names(format!("#{attribute}"), attribute)
                .expression_attribute_values(placeholder, value);
        }
        match request.send().await {
            Ok(_) => Ok(()),
            Err(e) if condition_failed(&e) => Err(LedgerError::Missing {
                table: self.table.clone(),
                operation,
                key: format!("{pk}/{sk}"),
            }),
            Err(e) => Err(self.sdk_error(operation, &e)),
        }
    }

    pub(super) async fn finish_run(
        &self,
        job: &str,
        key: &str,
        status: RunStatus,
        summary: &Value,
    ) -> Result<(), LedgerError> {
        self.update_existing(
            &run_pk(job),
            key,
            "finish_run",
            "SET #status = :status, #summary = :summary",
            vec![(":status", s(status.as_str())), (":summary", s(summary.to_string()))],
        )
        .await
    }

    /// An append-only put: written once, `AlreadyRecorded` when the key exists.
    async fn append(&self, item: Item, operation: &'static str) -> Result<Appended, LedgerError> {
        let result = self
            .client
            .put_item()
            .table_name(&self.table)
            .set_item(Some(item))
            .condition_expression("attribute_not_exists(pk)")
            .send()
            .await;
        match result {
            Ok(_) => Ok(Appended::Recorded),
            Err(e) if condition_failed(&e) => Ok(Appended::AlreadyRecorded),
            Err(e) => Err(self.sdk_error(operation, &e)),
        }
    }

    fn audit_item(&self, pk: String, sk: String, kind: &str, record: String, fields: &[(&str, &str)]) -> Item {
        let mut item: Item = [
            ("pk".to_owned(), s(pk)),
            ("sk".to_owned(), s(sk)),
            ("kind".to_owned(), s(kind)),
            ("record".to_owned(), s(record)),
        ]
        .into_iter()
        .collect();
        // A few plain attributes, so people reading the table need not parse JSON.
        for (name, value) in fields {
            item.insert((*name).to_owned(), s(*value));
        }
        item
    }

    pub(super) async fn record_change(&self, entry: &AuditEntry) -> Result<Appended, LedgerError> {
        let record = serde_json::to_string(entry).map_err(|e| self.unserializable("record_change", e))?;
        let item = self.audit_item(
            AuditEntry::partition_key(entry.planned_at.date_naive()),
            entry.sort_key(),
            "change",
            record,
            &[
                ("username", &entry.username),
                ("caller", entry.caller.display()),
                ("source", &entry.source),
                ("request_id", &entry.request_id),
            ],
        );
        self.append(item, "record_change").await
    }

    pub(super) async fn record_intent(&self, intent: &AuditIntent) -> Result<Appended, LedgerError> {
        let record = serde_json::to_string(intent).map_err(|e| self.unserializable("record_intent", e))?;
        let item = self.audit_item(
            AuditEntry::partition_key(intent.planned_at.date_naive()),
            intent.sort_key(),
            "intent",
            record,
            &[
                ("caller", intent.caller.display()),
                ("source", &intent.source),
                ("request_id", &intent.request_id),
            ],
        );
        self.append(item, "record_intent").await
    }

    fn unserializable(&self, operation: &'static str, e: serde_json::Error) -> LedgerError {
        LedgerError::Malformed {
            table: self.table.clone(),
            operation,
            key: "(new item)".into(),
            problem: format!("cannot be serialized: {e}"),
        }
    }

    /// The audit items of one kind in `day`'s partition, in key order.
    async fn audit_records<T: serde::de::DeserializeOwned>(
        &self,
        day: NaiveDate,
        kind: &str,
        operation: &'static str,
    ) -> Result<Vec<T>, LedgerError> {
        let items = self.partition(&AuditEntry::partition_key(day), operation).await?;
        items
            .iter()
            .filter(|item| item.get("kind").and_then(|v| v.as_s().ok()).map(String::as_str) == Some(kind))
            .map(|item| {
                let r = self.reader(item, operation);
                let text = r.string("record")?;
                serde_json::from_str(text).map_err(|e| r.malformed(format!("record is not an audit {kind} ({e})")))
            })
            .collect()
    }

    pub(super) async fn changes_on(&self, day: NaiveDate) -> Result<Vec<AuditEntry>, LedgerError> {
        self.audit_records(day, "change", "changes_on").await
    }

    pub(super) async fn intents_on(&self, day: NaiveDate) -> Result<Vec<AuditIntent>, LedgerError> {
        self.audit_records(day, "intent", "intents_on").await
    }
}
