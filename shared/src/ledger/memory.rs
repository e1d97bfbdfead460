//! The in-process ledger: a mutex'd ordered map with the DynamoDB table's keys and semantics
//! (conditional claims, expiry counted as absence, audit entries in sort-key order), so unit
//! tests exercise the same protocol the table enforces.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Mutex, MutexGuard};

use chrono::{DateTime, NaiveDate, Utc};
use serde_json::Value;

use super::alerts::{self, AlertState, OutboxEntry, StagedAlerts, StoredShard};
use super::requests::{Claim, REQUEST_RETENTION, grant_sort_key, page_sort_key, window_start_key};
use super::{
    ALERT_PK, Appended, AuditEntry, AuditIntent, BUDGET_PK, COMMIT_RETENTION, HEAD_SK, HeadUpdate, JOB_SK, LOCK_PK,
    LOCK_SK, LedgerError, LockAttempt, LockHolder, MEMBERS_SK, ORG_PK, PENDING_SK, RUN_RETENTION, RequestClaim,
    RequestHead, RequestStatus, RunClaim, RunStatus, Scope, StoredRequest, request_pk, run_pk,
};
use crate::arcgis::ListingHint;
use crate::credits::amount::Credits;

/// The table name errors show for the memory ledger.
const TABLE: &str = "(memory)";

/// One stored item.
#[derive(Debug, Clone)]
enum Record {
    Shard(StoredShard),
    Commit {
        expires_at: DateTime<Utc>,
    },
    Outbox {
        entry: OutboxEntry,
        expires_at: DateTime<Utc>,
    },
    Run {
        status: RunStatus,
        claimed_at: DateTime<Utc>,
        summary: Option<Value>,
        expires_at: DateTime<Utc>,
    },
    Head {
        head: RequestHead,
        expires_at: Option<DateTime<Utc>>,
    },
    Page(Value),
    Job(Value),
    Lock(LockHolder),
    Pending(std::collections::BTreeSet<String>),
    Grant(Credits),
    Audit(AuditEntry),
    Intent(AuditIntent),
    Listing(ListingHint),
}

/// In-process ledger state, keyed `(pk, sk)` like the table.
#[derive(Debug, Default)]
pub struct MemoryLedger {
    items: Mutex<BTreeMap<(String, String), Record>>,
    /// Fault tests: the next alert commit stops after its marker, as a crash there would.
    crash_after_commit_marker: AtomicBool,
}

fn missing(operation: &'static str, pk: &str, sk: &str) -> LedgerError {
    LedgerError::Missing {
        table: TABLE.to_owned(),
        operation,
        key: format!("{pk}/{sk}"),
    }
}

impl MemoryLedger {
    fn lock(&self) -> MutexGuard<'_, BTreeMap<(String, String), Record>> {
        // A panicking test thread must not poison every later test's ledger.
        self.items.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Makes the next [`crate::ledger::Ledger::commit_alerts`] stop right after writing its
    /// marker, as a crash of the invocation there would, and report it (fault tests).
    pub fn crash_next_commit_after_its_marker(&self) {
        self.crash_after_commit_marker.store(true, Ordering::SeqCst);
    }

    pub(super) fn alert_state(&self) -> Result<AlertState, LedgerError> {
        let now = Utc::now();
        let items = self.lock();
        let mut shards = BTreeMap::new();
        let mut committed = HashSet::new();
        let mut outbox = Vec::new();
        for ((pk, sk), record) in items.range((ALERT_PK.to_owned(), String::new())..) {
            if pk != ALERT_PK {
                break;
            }
            match record {
                Record::Shard(shard) => {
                    if let Some(n) = alerts::shard_number(sk) {
                        shards.insert(n, shard.clone());
                    }
                }
                Record::Commit { expires_at } if *expires_at > now => {
                    if let Some(run) = sk.strip_prefix(alerts::COMMIT_PREFIX) {
                        committed.insert(run.to_owned());
                    }
                }
                Record::Outbox { entry, expires_at } if *expires_at > now => outbox.push(entry.clone()),
                _ => {}
            }
        }
        Ok(AlertState::resolve(shards, &committed, HashMap::new()).with_outbox(outbox, &committed))
    }

    pub(super) fn stage_outbox(&self, entries: &[OutboxEntry]) -> Result<(), LedgerError> {
        let mut items = self.lock();
        for entry in entries {
            items.insert(
                (ALERT_PK.to_owned(), alerts::outbox_sk(&entry.channel, &entry.run_key)),
                Record::Outbox {
                    entry: entry.clone(),
                    expires_at: entry.created_at + COMMIT_RETENTION,
                },
            );
        }
        Ok(())
    }

    pub(super) fn settle_outbox(&self, channel: &str, run_key: &str) -> Result<(), LedgerError> {
        self.lock()
            .remove(&(ALERT_PK.to_owned(), alerts::outbox_sk(channel, run_key)));
        Ok(())
    }

    pub(super) fn stage_alerts(&self, staged: &StagedAlerts) -> Result<(), LedgerError> {
        let mut items = self.lock();
        // All or nothing, like the table's transaction: check every condition first.
        for shard in &staged.shards {
            let sk = alerts::shard_sk(shard.shard);
            let version = match items.get(&(ALERT_PK.to_owned(), sk.clone())) {
                Some(Record::Shard(s)) => Some(s.version),
                _ => None,
            };
            if version != shard.expected_version {
                return Err(LedgerError::Conflict {
                    table: TABLE.to_owned(),
                    operation: "stage_alerts",
                    key: format!("{ALERT_PK}/{sk}"),
                });
            }
        }
        for shard in &staged.shards {
            let key = (ALERT_PK.to_owned(), alerts::shard_sk(shard.shard));
            let previous = match items.get(&key) {
                Some(Record::Shard(s)) => s.clone(),
                _ => StoredShard::default(),
            };
            items.insert(
                key,
                Record::Shard(StoredShard {
                    version: previous.version + 1,
                    levels: shard.promote.clone().or(previous.levels),
                    pending: Some((staged.run_key.clone(), shard.levels.clone())),
                }),
            );
        }
        Ok(())
    }

    pub(super) fn commit_alerts(&self, staged: &StagedAlerts, now: DateTime<Utc>) -> Result<(), LedgerError> {
        let mut items = self.lock();
        items.insert(
            (ALERT_PK.to_owned(), alerts::commit_sk(&staged.run_key)),
            Record::Commit {
                expires_at: now + COMMIT_RETENTION,
            },
        );
        if self.crash_after_commit_marker.swap(false, Ordering::SeqCst) {
            return Err(LedgerError::Sdk {
                table: TABLE.to_owned(),
                operation: "commit_alerts(promote)",
                action: "UpdateItem",
                detail: "the invocation stopped after the commit marker (simulated crash)".into(),
            });
        }
        let mut promoted = Vec::new();
        for shard in &staged.shards {
            let key = (ALERT_PK.to_owned(), alerts::shard_sk(shard.shard));
            match items.get(&key) {
                Some(Record::Shard(s)) if s.pending.as_ref().is_some_and(|(run, _)| *run == staged.run_key) => {
                    promoted.push(key);
                }
                _ => {
                    return Err(LedgerError::Conflict {
                        table: TABLE.to_owned(),
                        operation: "commit_alerts",
                        key: format!("{}/{}", key.0, key.1),
                    });
                }
            }
        }
        for key in promoted {
            if let Some(Record::Shard(s)) = items.get_mut(&key) {
                s.levels = s.pending.take().map(|(_, levels)| levels);
            }
        }
        Ok(())
    }

    pub(super) fn listing_hint(&self) -> Result<Option<ListingHint>, LedgerError> {
        Ok(match self.lock().get(&(ORG_PK.to_owned(), MEMBERS_SK.to_owned())) {
            Some(Record::Listing(hint)) => Some(hint.clone()),
            _ => None,
        })
    }

    pub(super) fn set_listing_hint(&self, hint: &ListingHint) -> Result<(), LedgerError> {
        self.lock().insert(
            (ORG_PK.to_owned(), MEMBERS_SK.to_owned()),
            Record::Listing(hint.clone()),
        );
        Ok(())
    }

    pub(super) fn claim_run(&self, job: &str, key: &str, now: DateTime<Utc>) -> Result<RunClaim, LedgerError> {
        let k = (run_pk(job), key.to_owned());
        let mut items = self.lock();
        if let Some(Record::Run {
            status,
            claimed_at,
            summary,
            expires_at,
        }) = items.get(&k)
            && expires_at.timestamp() > now.timestamp()
        {
            return Ok(RunClaim::AlreadyClaimed {
                status: *status,
                claimed_at: *claimed_at,
                summary: summary.clone(),
            });
        }
        items.insert(
            k,
            Record::Run {
                status: RunStatus::Claimed,
                claimed_at: now,
                summary: None,
                expires_at: now + RUN_RETENTION,
            },
        );
        Ok(RunClaim::Claimed)
    }

    pub(super) fn finish_run(
        &self,
        job: &str,
        key: &str,
        new_status: RunStatus,
        new_summary: &Value,
    ) -> Result<(), LedgerError> {
        let pk = run_pk(job);
        match self.lock().get_mut(&(pk.clone(), key.to_owned())) {
            Some(Record::Run { status, summary, .. }) => {
                *status = new_status;
                *summary = Some(new_summary.clone());
                Ok(())
            }
            _ => Err(missing("finish_run", &pk, key)),
        }
    }

    pub(super) fn claim_request(&self, scope: &Scope, claim: Claim<'_>) -> Result<RequestClaim, LedgerError> {
        let (body_hash, owner, now, lease_until) = (claim.body_hash, claim.owner, claim.now, claim.lease_until);
        let pk = request_pk(scope);
        let key = (pk.clone(), HEAD_SK.to_owned());
        let mut items = self.lock();
        let existing = match items.get(&key) {
            Some(Record::Head { head, expires_at }) if expires_at.is_none_or(|e| e.timestamp() > now.timestamp()) => {
                Some(head.clone())
            }
            _ => None,
        };
        let Some(head) = existing else {
            items.retain(|(p, sk), _| !(p == &pk && sk.starts_with("PAGE#")));
            items.insert(
                key,
                Record::Head {
                    head: RequestHead {
                        body_hash: body_hash.to_owned(),
                        status: RequestStatus::Claimed,
                        owner: owner.to_owned(),
                        lease_until,
                        created_at: now,
                        reply: None,
                    },
                    expires_at: None,
                },
            );
            return Ok(RequestClaim::Fresh);
        };
        if head.body_hash != body_hash {
            return Ok(RequestClaim::Mismatch);
        }
        let live = head.lease_until > now;
        match head.status {
            RequestStatus::Done => Ok(RequestClaim::Replay(Box::new(self.stored(&items, &pk, head)))),
            RequestStatus::Claimed | RequestStatus::Applying | RequestStatus::Incomplete if live => {
                Ok(RequestClaim::InProgress {
                    lease_until: head.lease_until,
                })
            }
            _ => {
                let mut taken = head;
                taken.owner = owner.to_owned();
                taken.lease_until = lease_until;
                items.insert(
                    key,
                    Record::Head {
                        head: taken.clone(),
                        expires_at: None,
                    },
                );
                Ok(RequestClaim::Resume(Box::new(self.stored(&items, &pk, taken))))
            }
        }
    }

    fn stored(&self, items: &BTreeMap<(String, String), Record>, pk: &str, head: RequestHead) -> StoredRequest {
        let pages = items
            .range((pk.to_owned(), String::new())..)
            .take_while(|((p, _), _)| p == pk)
            .filter_map(|((_, sk), r)| match r {
                Record::Page(v) => sk.strip_prefix("PAGE#")?.parse::<u32>().ok().map(|n| (n, v.clone())),
                _ => None,
            })
            .collect();
        StoredRequest { head, pages }
    }

    pub(super) fn update_request(&self, scope: &Scope, owner: &str, update: &HeadUpdate) -> Result<(), LedgerError> {
        let pk = request_pk(scope);
        match self.lock().get_mut(&(pk.clone(), HEAD_SK.to_owned())) {
            Some(Record::Head { head, expires_at }) if head.owner == owner => {
                head.status = update.status;
                head.lease_until = update.lease_until;
                if update.reply.is_some() {
                    head.reply = update.reply.clone();
                }
                if update.status == RequestStatus::Done {
                    *expires_at = Some(update.at + REQUEST_RETENTION);
                }
                Ok(())
            }
            Some(Record::Head { .. }) => Err(LedgerError::Fenced {
                table: TABLE.to_owned(),
                operation: "update_request",
                key: format!("{pk}/{HEAD_SK}"),
            }),
            _ => Err(missing("update_request", &pk, HEAD_SK)),
        }
    }

    pub(super) fn abandon_request(&self, scope: &Scope, owner: &str) -> Result<(), LedgerError> {
        let key = (request_pk(scope), HEAD_SK.to_owned());
        let mut items = self.lock();
        if let Some(Record::Head { head, .. }) = items.get(&key)
            && head.owner == owner
            && head.status == RequestStatus::Claimed
        {
            items.remove(&key);
        }
        Ok(())
    }

    pub(super) fn put_pages(&self, scope: &Scope, pages: &[(u32, Value)]) -> Result<(), LedgerError> {
        let pk = request_pk(scope);
        let mut items = self.lock();
        for (index, page) in pages {
            items.insert((pk.clone(), page_sort_key(*index)), Record::Page(page.clone()));
        }
        Ok(())
    }

    pub(super) fn put_job(&self, scope: &Scope, job: &Value) -> Result<(), LedgerError> {
        self.lock()
            .insert((request_pk(scope), JOB_SK.to_owned()), Record::Job(job.clone()));
        Ok(())
    }

    pub(super) fn job(&self, scope: &Scope) -> Result<Option<Value>, LedgerError> {
        Ok(match self.lock().get(&(request_pk(scope), JOB_SK.to_owned())) {
            Some(Record::Job(job)) => Some(job.clone()),
            _ => None,
        })
    }

    pub(super) fn load_request(&self, scope: &Scope) -> Result<Option<StoredRequest>, LedgerError> {
        let pk = request_pk(scope);
        let items = self.lock();
        Ok(match items.get(&(pk.clone(), HEAD_SK.to_owned())) {
            Some(Record::Head { head, .. }) => Some(self.stored(&items, &pk, head.clone())),
            _ => None,
        })
    }

    pub(super) fn acquire_lock(
        &self,
        owner: &str,
        now: DateTime<Utc>,
        until: DateTime<Utc>,
    ) -> Result<LockAttempt, LedgerError> {
        let key = (LOCK_PK.to_owned(), LOCK_SK.to_owned());
        let mut items = self.lock();
        if let Some(Record::Lock(holder)) = items.get(&key)
            && holder.until > now
            && holder.owner != owner
        {
            return Ok(LockAttempt::Held(holder.clone()));
        }
        items.insert(
            key,
            Record::Lock(LockHolder {
                owner: owner.to_owned(),
                until,
            }),
        );
        Ok(LockAttempt::Acquired)
    }

    pub(super) fn mark_pending(&self, scope: &Scope) -> Result<(), LedgerError> {
        let mut items = self.lock();
        let entry = items
            .entry((LOCK_PK.to_owned(), PENDING_SK.to_owned()))
            .or_insert_with(|| Record::Pending(Default::default()));
        if let Record::Pending(set) = entry {
            set.insert(scope.as_str().to_owned());
        }
        Ok(())
    }

    pub(super) fn clear_pending(&self, scope: &Scope) -> Result<(), LedgerError> {
        if let Some(Record::Pending(set)) = self.lock().get_mut(&(LOCK_PK.to_owned(), PENDING_SK.to_owned())) {
            set.remove(scope.as_str());
        }
        Ok(())
    }

    pub(super) fn pending_requests(&self) -> Result<Vec<Scope>, LedgerError> {
        Ok(match self.lock().get(&(LOCK_PK.to_owned(), PENDING_SK.to_owned())) {
            Some(Record::Pending(set)) => set.iter().cloned().map(Scope::from_stored).collect(),
            _ => Vec::new(),
        })
    }

    pub(super) fn release_lock(&self, owner: &str) -> Result<(), LedgerError> {
        let key = (LOCK_PK.to_owned(), LOCK_SK.to_owned());
        let mut items = self.lock();
        if let Some(Record::Lock(holder)) = items.get(&key)
            && holder.owner == owner
        {
            items.remove(&key);
        }
        Ok(())
    }

    pub(super) fn granted_since(&self, now: DateTime<Utc>) -> Result<Credits, LedgerError> {
        let from = (BUDGET_PK.to_owned(), window_start_key(now));
        Ok(self
            .lock()
            .range(from..)
            .take_while(|((pk, _), _)| pk == BUDGET_PK)
            .filter_map(|(_, r)| match r {
                Record::Grant(c) => Some(*c),
                _ => None,
            })
            .sum())
    }

    pub(super) fn record_grant(&self, scope: &Scope, at: DateTime<Utc>, credits: Credits) -> Result<(), LedgerError> {
        self.lock().insert(
            (BUDGET_PK.to_owned(), grant_sort_key(at, scope)),
            Record::Grant(credits),
        );
        Ok(())
    }

    pub(super) fn record_change(&self, entry: &AuditEntry) -> Result<Appended, LedgerError> {
        let k = (
            AuditEntry::partition_key(entry.planned_at.date_naive()),
            entry.sort_key(),
        );
        Ok(self.append(k, Record::Audit(entry.clone())))
    }

    pub(super) fn record_intent(&self, intent: &AuditIntent) -> Result<Appended, LedgerError> {
        let k = (
            AuditEntry::partition_key(intent.planned_at.date_naive()),
            intent.sort_key(),
        );
        Ok(self.append(k, Record::Intent(intent.clone())))
    }

    fn append(&self, key: (String, String), record: Record) -> Appended {
        let mut items = self.lock();
        if items.contains_key(&key) {
            return Appended::AlreadyRecorded;
        }
        items.insert(key, record);
        Appended::Recorded
    }

    pub(super) fn changes_on(&self, day: NaiveDate) -> Result<Vec<AuditEntry>, LedgerError> {
        let pk = AuditEntry::partition_key(day);
        Ok(self
            .lock()
            .iter()
            .filter_map(|((p, _), r)| match r {
                Record::Audit(e) if *p == pk => Some(e.clone()),
                _ => None,
            })
            .collect())
    }

    pub(super) fn intents_on(&self, day: NaiveDate) -> Result<Vec<AuditIntent>, LedgerError> {
        let pk = AuditEntry::partition_key(day);
        Ok(self
            .lock()
            .iter()
            .filter_map(|((p, _), r)| match r {
                Record::Intent(e) if *p == pk => Some(e.clone()),
                _ => None,
            })
            .collect())
    }
}
