//! Allocation requests, the allocation lock and the budget in DynamoDB (item shapes in
//! [`crate::ledger::requests`]).
//!
//! Every state change is a conditional write: the claim (`attribute_not_exists`, or an
//! expired finished record), the takeover of an abandoned request (conditioned on the head
//! being exactly what was read, so two resumers cannot both win), every later head update
//! (conditioned on `owner`, so an invocation whose lease was taken over is fenced off), the
//! lock (free, expired or already ours) and its release (still ours).

use aws_sdk_dynamodb::operation::put_item::PutItemError;
use aws_sdk_dynamodb::operation::update_item::UpdateItemError;
use aws_sdk_dynamodb::types::{AttributeValue, ReturnValuesOnConditionCheckFailure};
use chrono::{DateTime, TimeZone, Utc};
use futures_util::{StreamExt, TryStreamExt, stream};

use super::{CLAIM_ATTEMPTS, DynamoLedger, Item, condition_failed, n, rfc3339, s};
use crate::credits::amount::Credits;
use crate::ledger::requests::{
    GRANT_RETENTION, JOURNAL_RETENTION, REQUEST_RETENTION, grant_sort_key, page_sort_key, window_start_key,
};
use crate::ledger::{
    BUDGET_PK, Claim, HEAD_SK, HeadUpdate, JOB_SK, LOCK_PK, LOCK_SK, LedgerError, LockAttempt, LockHolder, PENDING_SK,
    RequestClaim, RequestHead, RequestStatus, Scope, StoredRequest, request_pk,
};

/// Pages written at once.
const PAGE_WRITES: usize = 8;

fn ms(t: DateTime<Utc>) -> AttributeValue {
    n(t.timestamp_millis())
}

fn from_ms(v: i64) -> Option<DateTime<Utc>> {
    Utc.timestamp_millis_opt(v).single()
}

impl DynamoLedger {
    /// Reads a head item, naming it in every error.
    fn head(&self, item: &Item, operation: &'static str) -> Result<RequestHead, LedgerError> {
        let r = self.reader(item, operation);
        let status = r.string("status")?;
        let status = RequestStatus::parse(status)
            .ok_or_else(|| r.malformed(format!("status '{status}' is not a request status")))?;
        let lease = r
            .number("lease_until")?
            .and_then(|v| from_ms(v as i64))
            .ok_or_else(|| r.malformed("lease_until is missing or not epoch milliseconds".into()))?;
        Ok(RequestHead {
            body_hash: r.string("body_hash")?.to_owned(),
            status,
            owner: r.string("owner")?.to_owned(),
            lease_until: lease,
            created_at: r.time("created_at")?,
            reply: r.json("reply")?,
        })
    }

    pub(in crate::ledger) async fn claim_request(
        &self,
        scope: &Scope,
        claim: Claim<'_>,
    ) -> Result<RequestClaim, LedgerError> {
        let Claim {
            body_hash,
            owner,
            now,
            lease_until,
        } = claim;
        let pk = request_pk(scope);
        for _ in 0..CLAIM_ATTEMPTS {
            let item: Item = [
                ("pk".to_owned(), s(&pk)),
                ("sk".to_owned(), s(HEAD_SK)),
                ("body_hash".to_owned(), s(body_hash)),
                ("status".to_owned(), s(RequestStatus::Claimed.as_str())),
                ("owner".to_owned(), s(owner)),
                ("lease_until".to_owned(), ms(lease_until)),
                ("created_at".to_owned(), rfc3339(now)),
            ]
            .into_iter()
            .collect();
            let old = match self
                .claim_replacing(item, now, "claim_request", "claim_request(read)")
                .await?
            {
                Ok(None) => return Ok(RequestClaim::Fresh),
                Ok(Some(_expired)) => {
                    // A new request under a reused key: the old journal is not its journal.
                    let items = self.partition(&pk, "claim_request").await?;
                    for item in items {
                        let Some(sk) = item.get("sk").cloned() else { continue };
                        if sk.as_s().is_ok_and(|v| v.starts_with("PAGE#")) {
                            self.client
                                .delete_item()
                                .table_name(&self.table)
                                .key("pk", s(&pk))
                                .key("sk", sk)
                                .send()
                                .await
                                .map_err(|e| self.sdk_error("claim_request", &e))?;
                        }
                    }
                    return Ok(RequestClaim::Fresh);
                }
                Err(None) => continue,
                Err(Some(old)) => old,
            };
            let r = self.reader(&old, "claim_request");
            if r.expired(now)? {
                continue;
            }
            let head = self.head(&old, "claim_request")?;
            if head.body_hash != body_hash {
                return Ok(RequestClaim::Mismatch);
            }
            let live = head.lease_until > now;
            match head.status {
                RequestStatus::Done => {
                    let stored = self.load_request(scope).await?;
                    return Ok(RequestClaim::Replay(Box::new(stored.unwrap_or(StoredRequest {
                        head,
                        pages: Vec::new(),
                    }))));
                }
                RequestStatus::Claimed | RequestStatus::Applying | RequestStatus::Incomplete if live => {
                    return Ok(RequestClaim::InProgress {
                        lease_until: head.lease_until,
                    });
                }
                _ => {}
            }
            // Unfinished and nobody on it: take it over, only if it is still what was read.
            let takeover = self
                .client
                .update_item()
                .table_name(&self.table)
                .key("pk", s(&pk))
                .key("sk", s(HEAD_SK))
                .update_expression("SET #owner = :owner, #lease_until = :lease")
                .condition_expression("#owner = :old_owner AND #lease_until = :old_lease AND #status = :old_status")
                .expression_attribute_names("#owner", "owner")
                .expression_attribute_names("#lease_until", "lease_until")
                .expression_attribute_names("#status", "status")
                .expression_attribute_values(":owner", s(owner))
                .expression_attribute_values(":lease", ms(lease_until))
                .expression_attribute_values(":old_owner", s(&head.owner))
                .expression_attribute_values(":old_lease", ms(head.lease_until))
                .expression_attribute_values(":old_status", s(head.status.as_str()))
                .send()
                .await;
            match takeover {
                Ok(_) => {
                    let mut stored = self.load_request(scope).await?.unwrap_or(StoredRequest {
                        head: head.clone(),
                        pages: Vec::new(),
                    });
                    stored.head.owner = owner.to_owned();
                    stored.head.lease_until = lease_until;
                    return Ok(RequestClaim::Resume(Box::new(stored)));
                }
                // Someone else changed it meanwhile: look again.
                Err(e) if condition_failed(&e) => continue,
                Err(e) => return Err(self.sdk_error("claim_request(takeover)", &e)),
            }
        }
        Err(LedgerError::Malformed {
            table: self.table.clone(),
            operation: "claim_request",
            key: format!("{pk}/{HEAD_SK}"),
            problem: format!("the record kept changing under {CLAIM_ATTEMPTS} claim attempts"),
        })
    }

    pub(in crate::ledger) async fn update_request(
        &self,
        scope: &Scope,
        owner: &str,
        update: &HeadUpdate,
    ) -> Result<(), LedgerError> {
        let pk = request_pk(scope);
        let mut expression = String::from("SET #status = :status, #lease_until = :lease");
        let mut request = self
            .client
            .update_item()
            .table_name(&self.table)
            .key("pk", s(&pk))
            .key("sk", s(HEAD_SK))
            .condition_expression("attribute_exists(pk) AND #owner = :owner")
            .expression_attribute_names("#owner", "owner")
            .expression_attribute_names("#status", "status")
            .expression_attribute_names("#lease_until", "lease_until")
            .expression_attribute_values(":owner", s(owner))
            .expression_attribute_values(":status", s(update.status.as_str()))
            .expression_attribute_values(":lease", ms(update.lease_until))
            .return_values_on_condition_check_failure(ReturnValuesOnConditionCheckFailure::AllOld);
        if let Some(reply) = &update.reply {
            expression.push_str(", #reply = :reply");
            request = request
                .expression_attribute_names("#reply", "reply")
                .expression_attribute_values(":reply", s(reply.to_string()));
        }
        if update.status == RequestStatus::Done {
            expression.push_str(", #expires_at = :expires");
            request = request
                .expression_attribute_names("#expires_at", "expires_at")
                .expression_attribute_values(":expires", n((update.at + REQUEST_RETENTION).timestamp()));
        }
        match request.update_expression(expression).send().await {
            Ok(_) => Ok(()),
            Err(e) if condition_failed(&e) => {
                let exists = matches!(
                    e.as_service_error(),
                    Some(UpdateItemError::ConditionalCheckFailedException(c)) if c.item().is_some()
                );
                let key = format!("{pk}/{HEAD_SK}");
                let table = self.table.clone();
                Err(if exists {
                    LedgerError::Fenced {
                        table,
                        operation: "update_request",
                        key,
                    }
                } else {
                    LedgerError::Missing {
                        table,
                        operation: "update_request",
                        key,
                    }
                })
            }
            Err(e) => Err(self.sdk_error("update_request", &e)),
        }
    }

    pub(in crate::ledger) async fn abandon_request(&self, scope: &Scope, owner: &str) -> Result<(), LedgerError> {
        let result = self
            .client
            .delete_item()
            .table_name(&self.table)
            .key("pk", s(request_pk(scope)))
            .key("sk", s(HEAD_SK))
            // Only a claim that sent nothing, and only by its owner.
            .condition_expression("#owner = :owner AND #status = :claimed")
            .expression_attribute_names("#owner", "owner")
            .expression_attribute_names("#status", "status")
            .expression_attribute_values(":owner", s(owner))
            .expression_attribute_values(":claimed", s(RequestStatus::Claimed.as_str()))
            .send()
            .await;
        match result {
            Ok(_) => Ok(()),
            Err(e) if condition_failed(&e) => Ok(()),
            Err(e) => Err(self.sdk_error("abandon_request", &e)),
        }
    }

    pub(in crate::ledger) async fn put_pages(
        &self,
        scope: &Scope,
        pages: &[(u32, serde_json::Value)],
        now: DateTime<Utc>,
    ) -> Result<(), LedgerError> {
        let pk = request_pk(scope);
        let expires = (now + JOURNAL_RETENTION).timestamp();
        // Owned items: a closure over borrowed pages makes the future not `Send` for every
        // lifetime, which the Lambda runtime requires.
        let items: Vec<(String, String)> = pages.iter().map(|(i, p)| (page_sort_key(*i), p.to_string())).collect();
        stream::iter(items)
            .map(|(sk, page)| {
                self.client
                    .put_item()
                    .table_name(&self.table)
                    .item("pk", s(&pk))
                    .item("sk", s(sk))
                    .item("page", s(page))
                    .item("expires_at", n(expires))
                    .send()
            })
            .buffer_unordered(PAGE_WRITES)
            .map(|r| r.map(|_| ()).map_err(|e| self.sdk_error("put_pages", &e)))
            .try_collect::<Vec<()>>()
            .await?;
        Ok(())
    }

    pub(in crate::ledger) async fn put_job(
        &self,
        scope: &Scope,
        job: &serde_json::Value,
        now: DateTime<Utc>,
    ) -> Result<(), LedgerError> {
        self.client
            .put_item()
            .table_name(&self.table)
            .item("pk", s(request_pk(scope)))
            .item("sk", s(JOB_SK))
            .item("job", s(job.to_string()))
            .item("expires_at", n((now + JOURNAL_RETENTION).timestamp()))
            .send()
            .await
            .map_err(|e| self.sdk_error("put_job", &e))?;
        Ok(())
    }

    pub(in crate::ledger) async fn job(&self, scope: &Scope) -> Result<Option<serde_json::Value>, LedgerError> {
        let got = self
            .client
            .get_item()
            .table_name(&self.table)
            .key("pk", s(request_pk(scope)))
            .key("sk", s(JOB_SK))
            .consistent_read(true)
            .send()
            .await
            .map_err(|e| self.sdk_error("job", &e))?;
        let Some(item) = got.item else {
            return Ok(None);
        };
        let r = self.reader(&item, "job");
        r.json("job")?
            .map(Some)
            .ok_or_else(|| r.malformed("attribute job is missing".into()))
    }

    pub(in crate::ledger) async fn load_request(&self, scope: &Scope) -> Result<Option<StoredRequest>, LedgerError> {
        let items = self.partition(&request_pk(scope), "load_request").await?;
        let mut head = None;
        let mut pages = Vec::new();
        for item in &items {
            let r = self.reader(item, "load_request");
            let sk = r.string("sk")?;
            if sk == HEAD_SK {
                head = Some(self.head(item, "load_request")?);
            } else if let Some(number) = sk.strip_prefix("PAGE#") {
                let index = number
                    .parse::<u32>()
                    .map_err(|_| r.malformed("page number is not a number".into()))?;
                let page = r
                    .json("page")?
                    .ok_or_else(|| r.malformed("attribute page is missing".into()))?;
                pages.push((index, page));
            }
        }
        pages.sort_by_key(|(i, _)| *i);
        Ok(head.map(|head| StoredRequest { head, pages }))
    }

    pub(in crate::ledger) async fn acquire_lock(
        &self,
        owner: &str,
        now: DateTime<Utc>,
        until: DateTime<Utc>,
    ) -> Result<LockAttempt, LedgerError> {
        let result = self
            .client
            .put_item()
            .table_name(&self.table)
            .item("pk", s(LOCK_PK))
            .item("sk", s(LOCK_SK))
            .item("owner", s(owner))
            .item("until", ms(until))
            .item("acquired_at", rfc3339(now))
            .condition_expression("attribute_not_exists(pk) OR #until <= :now OR #owner = :owner")
            .expression_attribute_names("#until", "until")
            .expression_attribute_names("#owner", "owner")
            .expression_attribute_values(":now", ms(now))
            .expression_attribute_values(":owner", s(owner))
            .return_values_on_condition_check_failure(ReturnValuesOnConditionCheckFailure::AllOld)
            .send()
            .await;
        let err = match result {
            Ok(_) => return Ok(LockAttempt::Acquired),
            Err(e) if condition_failed(&e) => e,
            Err(e) => return Err(self.sdk_error("acquire_lock", &e)),
        };
        let held = match err.as_service_error() {
            Some(PutItemError::ConditionalCheckFailedException(c)) => c.item().cloned(),
            _ => None,
        };
        let item = match held {
            Some(item) => item,
            None => {
                // Not every DynamoDB-compatible server returns the old item: read it.
                let got = self
                    .client
                    .get_item()
                    .table_name(&self.table)
                    .key("pk", s(LOCK_PK))
                    .key("sk", s(LOCK_SK))
                    .consistent_read(true)
                    .send()
                    .await
                    .map_err(|e| self.sdk_error("acquire_lock(read)", &e))?;
                match got.item {
                    Some(item) => item,
                    // Released meanwhile: report it as held for no time, the caller retries.
                    None => {
                        return Ok(LockAttempt::Held(LockHolder {
                            owner: String::new(),
                            until: now,
                        }));
                    }
                }
            }
        };
        let r = self.reader(&item, "acquire_lock");
        let until = r
            .number("until")?
            .and_then(|v| from_ms(v as i64))
            .ok_or_else(|| r.malformed("until is missing or not epoch milliseconds".into()))?;
        Ok(LockAttempt::Held(LockHolder {
            owner: r.string("owner")?.to_owned(),
            until,
        }))
    }

    /// `ADD`/`DELETE` of one scope in the pending set (a string set: no read-modify-write).
    async fn change_pending(&self, scope: &Scope, verb: &str, operation: &'static str) -> Result<(), LedgerError> {
        self.client
            .update_item()
            .table_name(&self.table)
            .key("pk", s(LOCK_PK))
            .key("sk", s(PENDING_SK))
            .update_expression(format!("{verb} #scopes :scope"))
            .expression_attribute_names("#scopes", "scopes")
            .expression_attribute_values(":scope", AttributeValue::Ss(vec![scope.as_str().to_owned()]))
            .send()
            .await
            .map_err(|e| self.sdk_error(operation, &e))?;
        Ok(())
    }

    pub(in crate::ledger) async fn mark_pending(&self, scope: &Scope) -> Result<(), LedgerError> {
        self.change_pending(scope, "ADD", "mark_pending").await
    }

    pub(in crate::ledger) async fn clear_pending(&self, scope: &Scope) -> Result<(), LedgerError> {
        self.change_pending(scope, "DELETE", "clear_pending").await
    }

    pub(in crate::ledger) async fn pending_requests(&self) -> Result<Vec<Scope>, LedgerError> {
        let got = self
            .client
            .get_item()
            .table_name(&self.table)
            .key("pk", s(LOCK_PK))
            .key("sk", s(PENDING_SK))
            .consistent_read(true)
            .send()
            .await
            .map_err(|e| self.sdk_error("pending_requests", &e))?;
        Ok(match got.item.as_ref().and_then(|i| i.get("scopes")) {
            Some(AttributeValue::Ss(scopes)) => scopes.iter().cloned().map(Scope::from_stored).collect(),
            _ => Vec::new(),
        })
    }

    pub(in crate::ledger) async fn release_lock(&self, owner: &str) -> Result<(), LedgerError> {
        let result = self
            .client
            .delete_item()
            .table_name(&self.table)
            .key("pk", s(LOCK_PK))
            .key("sk", s(LOCK_SK))
            .condition_expression("#owner = :owner")
            .expression_attribute_names("#owner", "owner")
            .expression_attribute_values(":owner", s(owner))
            .send()
            .await;
        match result {
            Ok(_) => Ok(()),
            // Taken over after our lease expired: it is not ours to release.
            Err(e) if condition_failed(&e) => Ok(()),
            Err(e) => Err(self.sdk_error("release_lock", &e)),
        }
    }

    pub(in crate::ledger) async fn granted_since(&self, now: DateTime<Utc>) -> Result<Credits, LedgerError> {
        let items = self
            .partition_from(BUDGET_PK, Some(window_start_key(now)), "granted_since")
            .await?;
        items
            .iter()
            .map(|item| {
                let r = self.reader(item, "granted_since");
                let micros = match item.get("micro_credits") {
                    Some(AttributeValue::N(v)) => v.parse::<i128>().ok(),
                    _ => None,
                };
                micros
                    .map(Credits::from_micros)
                    .ok_or_else(|| r.malformed("micro_credits is missing or not a whole number".into()))
            })
            .sum()
    }

    pub(in crate::ledger) async fn record_grant(
        &self,
        scope: &Scope,
        at: DateTime<Utc>,
        credits: Credits,
    ) -> Result<(), LedgerError> {
        // The sort key holds the scope: only the request a grant belongs to can overwrite
        // (correct) it, without a condition.
        self.client
            .put_item()
            .table_name(&self.table)
            .item("pk", s(BUDGET_PK))
            .item("sk", s(grant_sort_key(at, scope)))
            .item("scope", s(scope.as_str()))
            .item("micro_credits", n(credits.micros()))
            .item("credits", s(credits.to_string()))
            .item("expires_at", n((at + GRANT_RETENTION).timestamp()))
            .send()
            .await
            .map(|_| ())
            .map_err(|e| self.sdk_error("record_grant", &e))
    }
}
