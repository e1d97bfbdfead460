//! The alert state in the table (see [`crate::ledger::alerts`] for the protocol): one
//! partition read, a staging transaction, a marker and a promotion transaction.
//!
//! Each shard item holds `version` (N), `levels` (M: username → `warning`|`critical`) once
//! promoted, and `pending_levels` (M) with `pending_run` (S) while staged.

use std::collections::{BTreeMap, HashMap, HashSet};

use aws_sdk_dynamodb::error::SdkError;
use aws_sdk_dynamodb::operation::transact_write_items::TransactWriteItemsError;
use aws_sdk_dynamodb::types::{AttributeValue, TransactWriteItem, Update};
use chrono::{DateTime, Utc};
use futures_util::{StreamExt, TryStreamExt, stream};

use super::{DynamoLedger, Item, n, rfc3339, s};
use crate::credits::classify::Level;
use crate::ledger::alerts::{self, AlertState, OutboxEntry, StagedAlerts, StoredShard};
use crate::ledger::{ALERT_PK, COMMIT_RETENTION, LedgerError, level_str, parse_level};

/// Deletions of per-member items from before shards in flight at once (done once per org).
const LEGACY_DELETES: usize = 16;

fn levels_value(levels: &BTreeMap<String, Level>) -> AttributeValue {
    AttributeValue::M(levels.iter().map(|(k, l)| (k.clone(), s(level_str(*l)))).collect())
}

impl DynamoLedger {
    pub(in crate::ledger) async fn alert_state(&self) -> Result<AlertState, LedgerError> {
        let operation = "alert_levels";
        let items = self.partition(ALERT_PK, operation).await?;
        let now = Utc::now();
        let mut shards = BTreeMap::new();
        let mut committed = HashSet::new();
        let mut legacy = HashMap::new();
        let mut outbox = Vec::new();
        for item in &items {
            let r = self.reader(item, operation);
            let sk = r.string("sk")?;
            if let Some(run) = sk.strip_prefix(alerts::COMMIT_PREFIX) {
                if !r.expired(now)? {
                    committed.insert(run.to_owned());
                }
            } else if sk.starts_with(alerts::OUTBOX_PREFIX) {
                if !r.expired(now)? {
                    outbox.push(OutboxEntry {
                        channel: r.string("channel")?.to_owned(),
                        run_key: r.string("run_key")?.to_owned(),
                        created_at: r.time("created_at")?,
                        message: r.string("message")?.to_owned(),
                    });
                }
            } else if sk.starts_with(alerts::SHARD_PREFIX) {
                let n = alerts::shard_number(sk).ok_or_else(|| r.malformed("not a shard of this version".into()))?;
                shards.insert(n, self.read_shard(item, operation)?);
            } else {
                // A per-member item from before shards: the username and its level.
                let level = r.string("level")?;
                let level = parse_level(level)
                    .ok_or_else(|| r.malformed(format!("level '{level}' is not warning or critical")))?;
                legacy.insert(sk.to_owned(), level);
            }
        }
        Ok(AlertState::resolve(shards, &committed, legacy).with_outbox(outbox, &committed))
    }

    pub(in crate::ledger) async fn stage_outbox(&self, entries: &[OutboxEntry]) -> Result<(), LedgerError> {
        // A handful of items (one per channel): one put each, all at once.
        futures_util::future::try_join_all(entries.iter().map(|entry| async move {
            self.client
                .put_item()
                .table_name(&self.table)
                .item("pk", s(ALERT_PK))
                .item("sk", s(alerts::outbox_sk(&entry.channel, &entry.run_key)))
                .item("channel", s(&entry.channel))
                .item("run_key", s(&entry.run_key))
                .item("created_at", rfc3339(entry.created_at))
                .item("message", s(&entry.message))
                .item("expires_at", n((entry.created_at + COMMIT_RETENTION).timestamp()))
                .send()
                .await
                .map(|_| ())
                .map_err(|e| self.sdk_error("stage_outbox", &e))
        }))
        .await
        .map(|_| ())
    }

    pub(in crate::ledger) async fn settle_outbox(&self, channel: &str, run_key: &str) -> Result<(), LedgerError> {
        self.client
            .delete_item()
            .table_name(&self.table)
            .key("pk", s(ALERT_PK))
            .key("sk", s(alerts::outbox_sk(channel, run_key)))
            .send()
            .await
            .map(|_| ())
            .map_err(|e| self.sdk_error("settle_outbox", &e))
    }

    fn read_shard(&self, item: &Item, operation: &'static str) -> Result<StoredShard, LedgerError> {
        let r = self.reader(item, operation);
        let map = |name: &str| -> Result<Option<BTreeMap<String, Level>>, LedgerError> {
            let Some(value) = item.get(name) else {
                return Ok(None);
            };
            let AttributeValue::M(entries) = value else {
                return Err(r.malformed(format!("{name} is not a map")));
            };
            entries
                .iter()
                .map(|(k, v)| {
                    let level = v.as_s().ok().and_then(|l| parse_level(l)).filter(|l| *l != Level::Ok);
                    level
                        .map(|l| (k.clone(), l))
                        .ok_or_else(|| r.malformed(format!("{name}.{k} is not warning or critical")))
                })
                .collect::<Result<_, _>>()
                .map(Some)
        };
        let version = match r.number("version")? {
            Some(v) if v >= 0.0 && v.fract() == 0.0 => v as u64,
            _ => return Err(r.malformed("no version".into())),
        };
        let pending = match (r.opt_string("pending_run")?, map("pending_levels")?) {
            (Some(run), Some(levels)) => Some((run.to_owned(), levels)),
            (None, None) => None,
            _ => return Err(r.malformed("pending_run and pending_levels go together".into())),
        };
        Ok(StoredShard {
            version,
            levels: map("levels")?,
            pending,
        })
    }

    pub(in crate::ledger) async fn stage_alerts(&self, staged: &StagedAlerts) -> Result<(), LedgerError> {
        let operation = "stage_alerts";
        let writes = staged
            .shards
            .iter()
            .map(|shard| {
                let update = Update::builder()
                    .table_name(&self.table)
                    .key("pk", s(ALERT_PK))
                    .key("sk", s(alerts::shard_sk(shard.shard)))
                    .expression_attribute_values(":next", n(shard.expected_version.map_or(1, |v| v + 1)))
                    .expression_attribute_values(":levels", levels_value(&shard.levels))
                    .expression_attribute_values(":run", s(&staged.run_key));
                let update = match &shard.promote {
                    Some(committed) => update
                        .update_expression(
                            "SET version = :next, pending_levels = :levels, pending_run = :run, #levels = :committed",
                        )
                        .expression_attribute_names("#levels", "levels")
                        .expression_attribute_values(":committed", levels_value(committed)),
                    None => {
                        update.update_expression("SET version = :next, pending_levels = :levels, pending_run = :run")
                    }
                };
                let update = match shard.expected_version {
                    Some(v) => update
                        .condition_expression("version = :read")
                        .expression_attribute_values(":read", n(v)),
                    None => update.condition_expression("attribute_not_exists(pk)"),
                };
                update
                    .build()
                    .map(|u| TransactWriteItem::builder().update(u).build())
                    .map_err(|e| self.build_error(operation, &e))
            })
            .collect::<Result<Vec<_>, _>>()?;
        self.transact(writes, operation, staged).await
    }

    pub(in crate::ledger) async fn commit_alerts(
        &self,
        staged: &StagedAlerts,
        now: DateTime<Utc>,
    ) -> Result<(), LedgerError> {
        // The marker first: from here on the staged content counts, promoted or not.
        self.client
            .put_item()
            .table_name(&self.table)
            .item("pk", s(ALERT_PK))
            .item("sk", s(alerts::commit_sk(&staged.run_key)))
            .item("run_key", s(&staged.run_key))
            .item("committed_at", rfc3339(now))
            .item("expires_at", n((now + COMMIT_RETENTION).timestamp()))
            .send()
            .await
            .map_err(|e| self.sdk_error("commit_alerts", &e))?;
        let operation = "commit_alerts(promote)";
        let writes = staged
            .shards
            .iter()
            .map(|shard| {
                Update::builder()
                    .table_name(&self.table)
                    .key("pk", s(ALERT_PK))
                    .key("sk", s(alerts::shard_sk(shard.shard)))
                    .update_expression("SET #levels = pending_levels REMOVE pending_levels, pending_run")
                    .expression_attribute_names("#levels", "levels")
                    .condition_expression("pending_run = :run")
                    .expression_attribute_values(":run", s(&staged.run_key))
                    .build()
                    .map(|u| TransactWriteItem::builder().update(u).build())
                    .map_err(|e| self.build_error(operation, &e))
            })
            .collect::<Result<Vec<_>, _>>()?;
        if !writes.is_empty() {
            self.transact(writes, operation, staged).await?;
        }
        // Per-member items from before shards no longer count once a shard is promoted.
        stream::iter(&staged.legacy)
            .map(|username| async move {
                self.client
                    .delete_item()
                    .table_name(&self.table)
                    .key("pk", s(ALERT_PK))
                    .key("sk", s(username))
                    .send()
                    .await
                    .map(|_| ())
                    .map_err(|e| self.sdk_error("commit_alerts(legacy)", &e))
            })
            .buffer_unordered(LEGACY_DELETES)
            .try_collect::<()>()
            .await
    }

    /// One transaction; a failed condition is a [`LedgerError::Conflict`] naming the shard.
    async fn transact(
        &self,
        writes: Vec<TransactWriteItem>,
        operation: &'static str,
        staged: &StagedAlerts,
    ) -> Result<(), LedgerError> {
        match self
            .client
            .transact_write_items()
            .set_transact_items(Some(writes))
            .send()
            .await
        {
            Ok(_) => Ok(()),
            Err(e) => Err(match conflicting_shard(&e, staged) {
                Some(shard) => LedgerError::Conflict {
                    table: self.table.clone(),
                    operation,
                    key: format!("{ALERT_PK}/{}", alerts::shard_sk(shard)),
                },
                None => self.sdk_error(operation, &e),
            }),
        }
    }

    fn build_error(&self, operation: &'static str, e: &dyn std::error::Error) -> LedgerError {
        LedgerError::Sdk {
            table: self.table.clone(),
            operation,
            action: "UpdateItem",
            detail: e.to_string(),
        }
    }
}

/// The first shard whose condition failed in a cancelled transaction, if that is why it was
/// cancelled (the reasons come in the order of the writes).
fn conflicting_shard(e: &SdkError<TransactWriteItemsError>, staged: &StagedAlerts) -> Option<u16> {
    let TransactWriteItemsError::TransactionCanceledException(cancelled) = e.as_service_error()? else {
        return None;
    };
    let index = cancelled
        .cancellation_reasons()
        .iter()
        .position(|r| r.code() == Some("ConditionalCheckFailed"))?;
    staged.shards.get(index).map(|s| s.shard)
}
