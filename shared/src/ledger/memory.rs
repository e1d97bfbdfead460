//! The in-process ledger: a mutex'd ordered map with the DynamoDB table's keys and semantics
//! (conditional claims, expiry counted as absence, audit entries in sort-key order), so unit
//! tests exercise the same protocol the table enforces.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Mutex, MutexGuard};

use chrono::{DateTime, NaiveDate, Utc};

use super::{
    ALERT_PK, AuditEntry, IDEM_PK, IDEMPOTENCY_RETENTION, IdempotencyClaim, LedgerError, MEMBERS_SK, ORG_PK,
    RUN_RETENTION, RunClaim, RunStatus, run_pk,
};
use crate::credits::classify::Level;

/// The table name errors show for the memory ledger.
const TABLE: &str = "(memory)";

/// One stored item.
#[derive(Debug, Clone)]
enum Record {
    Alert {
        level: Level,
    },
    Run {
        status: RunStatus,
        claimed_at: DateTime<Utc>,
        summary: Option<serde_json::Value>,
        expires_at: DateTime<Utc>,
    },
    Idem {
        body_hash: String,
        done: Option<(u16, serde_json::Value)>,
        expires_at: DateTime<Utc>,
    },
    Audit(AuditEntry),
    MemberCount(u64),
}

/// In-process ledger state, keyed `(pk, sk)` like the table.
#[derive(Debug, Default)]
pub struct MemoryLedger {
    items: Mutex<BTreeMap<(String, String), Record>>,
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

    pub(super) fn alert_levels(&self) -> Result<HashMap<String, Level>, LedgerError> {
        Ok(self
            .lock()
            .iter()
            .filter_map(|((pk, sk), r)| match r {
                Record::Alert { level } if pk == ALERT_PK => Some((sk.clone(), *level)),
                _ => None,
            })
            .collect())
    }

    pub(super) fn member_count(&self) -> Result<Option<u64>, LedgerError> {
        Ok(match self.lock().get(&(ORG_PK.to_owned(), MEMBERS_SK.to_owned())) {
            Some(Record::MemberCount(n)) => Some(*n),
            _ => None,
        })
    }

    pub(super) fn set_member_count(&self, count: u64) -> Result<(), LedgerError> {
        self.lock()
            .insert((ORG_PK.to_owned(), MEMBERS_SK.to_owned()), Record::MemberCount(count));
        Ok(())
    }

    pub(super) fn set_alert_level(
        &self,
        username: &str,
        level: Option<Level>,
        // Stored by the table for operators; nothing reads it back.
        _run_key: &str,
    ) -> Result<(), LedgerError> {
        let key = (ALERT_PK.to_owned(), username.to_owned());
        let mut items = self.lock();
        match level {
            Some(level) => items.insert(key, Record::Alert { level }),
            None => items.remove(&key),
        };
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
            && *expires_at > now
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
        new_summary: &serde_json::Value,
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

    pub(super) fn begin_idempotent(
        &self,
        key: &str,
        body_hash: &str,
        now: DateTime<Utc>,
    ) -> Result<IdempotencyClaim, LedgerError> {
        let k = (IDEM_PK.to_owned(), key.to_owned());
        let mut items = self.lock();
        if let Some(Record::Idem {
            body_hash: stored,
            done,
            expires_at,
        }) = items.get(&k)
            && *expires_at > now
        {
            return Ok(if stored != body_hash {
                IdempotencyClaim::Mismatch
            } else if let Some((status_code, response)) = done {
                IdempotencyClaim::Replay {
                    status_code: *status_code,
                    response: response.clone(),
                }
            } else {
                IdempotencyClaim::InProgress
            });
        }
        items.insert(
            k,
            Record::Idem {
                body_hash: body_hash.to_owned(),
                done: None,
                expires_at: now + IDEMPOTENCY_RETENTION,
            },
        );
        Ok(IdempotencyClaim::Fresh)
    }

    pub(super) fn complete_idempotent(
        &self,
        key: &str,
        status_code: u16,
        response: &serde_json::Value,
    ) -> Result<(), LedgerError> {
        match self.lock().get_mut(&(IDEM_PK.to_owned(), key.to_owned())) {
            Some(Record::Idem { done, .. }) => {
                *done = Some((status_code, response.clone()));
                Ok(())
            }
            _ => Err(missing("complete_idempotent", IDEM_PK, key)),
        }
    }

    pub(super) fn abandon_idempotent(&self, key: &str) -> Result<(), LedgerError> {
        let k = (IDEM_PK.to_owned(), key.to_owned());
        let mut items = self.lock();
        if let Some(Record::Idem { done: None, .. }) = items.get(&k) {
            items.remove(&k);
        }
        Ok(())
    }

    pub(super) fn record_change(&self, entry: &AuditEntry) -> Result<(), LedgerError> {
        let k = (AuditEntry::partition_key(entry.at.date_naive()), entry.sort_key());
        self.lock().insert(k, Record::Audit(entry.clone()));
        Ok(())
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
}
