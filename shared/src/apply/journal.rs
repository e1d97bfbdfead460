//! The write-ahead journal of one allocation request: every plan entry with what was asked,
//! what the plan decided (the balance before and the absolute target), and what was observed
//! afterwards. Written to the ledger (100 entries per page) before anything is sent, and again
//! once the members were read back; a resumed request works from it, and a replay rebuilds
//! its reply from it.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::credits::amount::Credits;
use crate::credits::member::Balance;
use crate::credits::plan::{Guardrails, OrgPosition, Outcome, Request};
use crate::ledger::{Caller, StoredRequest};

/// Entries per journal page.
pub const PAGE_ENTRIES: usize = 100;

/// What became of one change, as far as is known.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "state", rename_all = "snake_case")]
pub enum EntryState {
    /// Planned; sent or not, the outcome is not known yet.
    Planned,
    /// Read back at the target allocation.
    Applied {
        /// The balance read back.
        observed: Balance,
    },
    /// ArcGIS refused the member inside a successful call (`notAssignedUsers`).
    NotAssigned,
    /// The write failed and the member was read back unchanged: nothing was applied.
    NotApplied {
        /// Why the write failed.
        error: String,
        /// The balance read back.
        observed: Balance,
    },
    /// Read back neither at its balance before nor at the target: someone else changed it
    /// meanwhile (in ArcGIS Online directly). Never re-sent: that would undo their change.
    Conflict {
        /// The balance read back.
        observed: Balance,
    },
    /// The member could not be read back: the write may or may not have been applied.
    Unknown {
        /// Why.
        error: String,
    },
}

impl EntryState {
    /// Whether nothing more will be learned or done for this entry.
    pub fn is_final(&self) -> bool {
        !matches!(self, EntryState::Planned | EntryState::Unknown { .. })
    }
}

/// One request entry in the journal.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct JournalEntry {
    /// Its position in the request (0-based).
    pub index: u32,
    /// The member named.
    pub username: String,
    /// What was asked.
    pub request: Request,
    /// What the plan decided.
    pub plan: Outcome,
    /// For changes: what became of it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub state: Option<EntryState>,
}

impl JournalEntry {
    /// `(balance before, absolute target, increase)` when the plan changes this member.
    pub fn change(&self) -> Option<(Balance, Credits, Credits)> {
        match &self.plan {
            Outcome::Change {
                before,
                after,
                increase,
                ..
            } => after.credits().map(|target| (*before, target, *increase)),
            _ => None,
        }
    }

    /// Whether this change still waits for its outcome.
    pub fn pending(&self) -> bool {
        self.change().is_some() && !self.state.as_ref().is_some_and(EntryState::is_final)
    }
}

/// Why an applied request stopped before every change was settled.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "reason", rename_all = "snake_case")]
pub enum Unfinished {
    /// The invocation's time ran out with changes still to send or to read back.
    OutOfTime,
    /// Some members could not be applied or read back yet (a transient failure).
    Unobserved,
    /// A batch's audit intent could not be recorded, so the batch was not sent: no write
    /// goes out unaudited.
    AuditUnavailable,
}

/// Everything about a request but its entries: stored in the request's head, so that a
/// replay answers exactly what the first invocation answered.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RecordMeta {
    /// The invocation that made the plan (API Gateway / Lambda request id).
    pub request_id: String,
    /// Who asked.
    pub caller: Caller,
    /// Why.
    pub reason: Option<String>,
    /// Which path (`allocate`, `scan-credits auto top-up`).
    pub source: String,
    /// The critical policy's target, when the request was the policy.
    pub policy_top_up_to: Option<Credits>,
    /// When the plan was made.
    pub planned_at: DateTime<Utc>,
    /// The org-wide figures the plan was checked against.
    pub org: OrgPosition,
    /// The plan's increases.
    pub total_increase: Credits,
    /// The plan's decreases.
    pub total_decrease: Credits,
    /// The guardrails it was checked against.
    pub guardrails: Guardrails,
    /// Things the caller should know (an incomplete listing…).
    pub warnings: Vec<String>,
    /// Audit or journal writes that failed (the changes themselves happened): reported,
    /// never hidden.
    pub record_problems: Vec<String>,
    /// Set when the request stopped with work left; a retry with the same key resumes it.
    pub unfinished: Option<Unfinished>,
    /// How many invocations worked on it.
    pub invocations: u32,
    /// How many entries the journal has. Pages beyond them are left over from an earlier
    /// attempt under the same key (a plan that was never sent, or a request that expired)
    /// and are never read: a resume must not find someone else's targets in its journal.
    pub entry_count: u32,
}

/// The most warnings or record problems kept in a request's head: the head is one ledger item
/// (400 KB at most), so a failure repeated for every member is kept as a sample and a count.
pub const MAX_LISTED_PROBLEMS: usize = 50;

impl RecordMeta {
    /// Cuts `warnings` and `record_problems` to [`MAX_LISTED_PROBLEMS`] each, saying how many
    /// more there were, so the head always fits its item.
    pub fn bound_lists(&mut self) {
        for list in [&mut self.warnings, &mut self.record_problems] {
            if list.len() > MAX_LISTED_PROBLEMS {
                let more = list.len() - (MAX_LISTED_PROBLEMS - 1);
                list.truncate(MAX_LISTED_PROBLEMS - 1);
                list.push(format!("… and {more} more of the same kind (see the function's log)"));
            }
        }
    }
}

/// A request's whole record: what a reply (or a scan summary) is rendered from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record {
    /// The request-level facts.
    pub meta: RecordMeta,
    /// One entry per requested member, in request order.
    pub entries: Vec<JournalEntry>,
}

impl Record {
    /// Increases actually granted so far: applied changes, and changes whose outcome is not
    /// known (they may have been applied, so they count against the budget).
    pub fn granted(&self) -> Credits {
        self.entries
            .iter()
            .filter(|e| {
                matches!(
                    e.state,
                    Some(EntryState::Applied { .. } | EntryState::Unknown { .. } | EntryState::Planned)
                )
            })
            .filter_map(|e| e.change().map(|(_, _, increase)| increase))
            .sum()
    }

    /// The journal pages for the ledger, `(page number, page)`.
    pub fn pages(&self) -> Vec<(u32, Value)> {
        self.entries
            .chunks(PAGE_ENTRIES)
            .enumerate()
            .map(|(i, chunk)| (i as u32, serde_json::to_value(chunk).unwrap_or(Value::Null)))
            .collect()
    }

    /// The pages holding entries at `indices` (after those entries changed).
    pub fn pages_of(&self, indices: &[u32]) -> Vec<(u32, Value)> {
        let wanted: std::collections::BTreeSet<u32> = indices.iter().map(|i| *i / PAGE_ENTRIES as u32).collect();
        self.pages().into_iter().filter(|(n, _)| wanted.contains(n)).collect()
    }

    /// Reads a stored request back: its head and the pages of its own entries. An error when
    /// it has no recorded plan, a page is unreadable or an entry is missing.
    pub fn from_stored(stored: &StoredRequest) -> Result<Record, String> {
        let meta = stored
            .head
            .reply
            .clone()
            .ok_or_else(|| "the request has no recorded plan".to_owned())
            .and_then(|v| serde_json::from_value::<RecordMeta>(v).map_err(|e| format!("unreadable head: {e}")))?;
        let pages = meta.entry_count.div_ceil(PAGE_ENTRIES as u32);
        let mut entries = Vec::new();
        for (n, page) in stored.pages.iter().filter(|(n, _)| *n < pages) {
            let mut chunk: Vec<JournalEntry> =
                serde_json::from_value(page.clone()).map_err(|e| format!("unreadable journal page {n}: {e}"))?;
            entries.append(&mut chunk);
        }
        entries.sort_by_key(|e| e.index);
        if entries.len() != meta.entry_count as usize {
            return Err(format!(
                "the journal holds {} of its {} entries",
                entries.len(),
                meta.entry_count
            ));
        }
        Ok(Record { meta, entries })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::credits::member::Allocation;
    use crate::ledger::{Caller, RequestHead, RequestStatus};

    fn c(x: i64) -> Credits {
        Credits::whole(x)
    }

    fn change(index: u32, state: Option<EntryState>) -> JournalEntry {
        let before = Balance::Limited {
            assigned: c(100),
            available: c(10),
        };
        JournalEntry {
            index,
            username: format!("u{index}"),
            request: Request::Add {
                username: format!("u{index}"),
                credits: c(50),
            },
            plan: Outcome::Change {
                before,
                after: Allocation::limited(c(150)).unwrap(),
                delta: Some(c(50)),
                increase: c(50),
                available_after: Some(c(60)),
                below_consumed: false,
            },
            state,
        }
    }

    fn meta() -> RecordMeta {
        RecordMeta {
            request_id: "r".into(),
            caller: Caller::job("scan-credits"),
            reason: None,
            source: "allocate".into(),
            policy_top_up_to: None,
            planned_at: Utc::now(),
            org: OrgPosition {
                available: c(1000),
                promised: c(0),
                granted_last_24h: c(0),
            },
            total_increase: c(150),
            total_decrease: c(0),
            guardrails: Guardrails {
                max_per_member: c(100),
                max_per_plan: c(1000),
                max_per_day: c(1000),
                org_reserve: c(0),
                allow_unlimited_change: false,
            },
            warnings: Vec::new(),
            record_problems: Vec::new(),
            unfinished: None,
            invocations: 1,
            entry_count: 0,
        }
    }

    /// A stored request holding `record`, with `extra` pages besides its own.
    fn stored(record: &Record, extra: Vec<(u32, Value)>) -> StoredRequest {
        StoredRequest {
            head: RequestHead {
                body_hash: "h".into(),
                status: RequestStatus::Done,
                owner: "r".into(),
                lease_until: Utc::now(),
                created_at: Utc::now(),
                reply: Some(serde_json::to_value(&record.meta).unwrap()),
            },
            pages: record.pages().into_iter().rev().chain(extra).collect(),
        }
    }

    #[test]
    fn pages_round_trip_in_request_order_whatever_their_size() {
        let entries: Vec<JournalEntry> = (0..250).map(|i| change(i, Some(EntryState::Planned))).collect();
        let record = Record {
            meta: RecordMeta {
                entry_count: 250,
                ..meta()
            },
            entries,
        };
        let pages = record.pages();
        assert_eq!(pages.len(), 3);
        assert_eq!(
            record
                .pages_of(&[5, 7, 249])
                .iter()
                .map(|(n, _)| *n)
                .collect::<Vec<_>>(),
            [0, 2]
        );
        assert_eq!(Record::from_stored(&stored(&record, Vec::new())).unwrap(), record);
    }

    #[test]
    fn pages_left_by_an_earlier_attempt_are_never_read_and_a_missing_one_is_an_error() {
        // A plan of 250 entries was written, never sent, and replaced by a plan of 150 under
        // the same key: its third page stayed, and a resume read its targets as its own.
        let earlier = Record {
            meta: meta(),
            entries: (0..250).map(|i| change(i, Some(EntryState::Planned))).collect(),
        };
        let record = Record {
            meta: RecordMeta {
                entry_count: 150,
                ..meta()
            },
            entries: (0..150).map(|i| change(i, None)).collect(),
        };
        let left_over = earlier.pages().into_iter().skip(2).collect();
        assert_eq!(Record::from_stored(&stored(&record, left_over)).unwrap(), record);

        let mut missing = stored(&record, Vec::new());
        missing.pages.retain(|(n, _)| *n != 0);
        let err = Record::from_stored(&missing).unwrap_err();
        assert!(err.contains("50 of its 150 entries"), "{err}");
    }

    #[test]
    fn what_may_have_been_applied_counts_against_the_budget() {
        let observed = Balance::Limited {
            assigned: c(150),
            available: c(60),
        };
        let record = Record {
            meta: meta(),
            entries: vec![
                change(0, Some(EntryState::Applied { observed })),
                change(
                    1,
                    Some(EntryState::Unknown {
                        error: "timeout".into(),
                    }),
                ),
                change(2, Some(EntryState::NotAssigned)),
                change(3, Some(EntryState::Conflict { observed })),
            ],
        };
        assert_eq!(record.granted(), c(100));
        assert!(record.entries[1].pending() && !record.entries[0].pending());
    }

    #[test]
    fn a_problem_repeated_for_every_member_is_kept_as_a_sample_and_a_count() {
        let mut m = meta();
        m.record_problems = (0..2000).map(|i| format!("u{i}: not audited")).collect();
        m.bound_lists();
        assert_eq!(m.record_problems.len(), MAX_LISTED_PROBLEMS);
        assert!(m.record_problems.last().unwrap().starts_with("… and 1951 more"));
    }
}
