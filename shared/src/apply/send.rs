//! Steps 5 and 6 of the apply path: sending the batches, each after its audit intent and only
//! while the deadline allows, then reading the members back and settling each change.

use std::collections::{HashMap, HashSet};

use chrono::Utc;

use super::journal::{EntryState, Record, Unfinished};
use super::observe;
use super::{Applier, BATCH_TIME, Job};
use crate::arcgis::{self, Client, CreditAssignment};
use crate::credits::member::Balance;
use crate::ledger::{AuditIntent, IntendedChange};

impl Applier {
    /// Step 5: sends the entries at `indices` in batches of 100, each after its audit intent,
    /// while the deadline allows. Returns what happened per entry index that was sent.
    pub(super) async fn send(&self, job: &Job<'_>, client: &Client, record: &mut Record, indices: &[u32]) -> Sent {
        let mut sent = Sent::default();
        let wanted: HashSet<u32> = indices.iter().copied().collect();
        let batches: Vec<Vec<(u32, IntendedChange)>> = record
            .entries
            .iter()
            .filter(|e| wanted.contains(&e.index))
            .filter_map(|e| {
                e.change().map(|(before, target, _)| {
                    (
                        e.index,
                        IntendedChange {
                            username: e.username.clone(),
                            before,
                            target,
                        },
                    )
                })
            })
            .collect::<Vec<_>>()
            .chunks(arcgis::allocation::ALLOCATION_BATCH)
            .map(<[_]>::to_vec)
            .collect();
        for (number, batch) in batches.into_iter().enumerate() {
            if !job.deadline.allows(BATCH_TIME) {
                sent.stopped = Some(Unfinished::OutOfTime);
                break;
            }
            let intent = AuditIntent {
                at: Utc::now(),
                planned_at: record.meta.planned_at,
                scope: job.scope.as_str().to_owned(),
                batch: number as u32,
                request_id: job.who.request_id.clone(),
                caller: job.who.caller.clone(),
                reason: job.who.reason.clone(),
                source: job.who.source.to_owned(),
                members: batch.iter().map(|(_, c)| c.clone()).collect(),
            };
            // No write goes out unless its intent is on record.
            if let Err(e) = job.ledger.record_intent(&intent).await {
                let problem = format!("the audit intent of a batch could not be recorded, so it was not sent: {e}");
                tracing::error!(error = %e, "batch not sent: its audit intent was not recorded");
                record.meta.record_problems.push(problem);
                sent.stopped = Some(Unfinished::AuditUnavailable);
                break;
            }
            let assignments: Vec<CreditAssignment> = batch
                .iter()
                .map(|(_, c)| CreditAssignment {
                    username: c.username.clone(),
                    credits: c.target,
                })
                .collect();
            let result = client.assign_credits(&assignments).await;
            for (index, change) in &batch {
                let outcome = match &result {
                    Ok(o) if o.rejected.contains(&change.username) => SendOutcome::Rejected,
                    Ok(o) => match o.failed.iter().find(|f| f.usernames.contains(&change.username)) {
                        Some(f) => SendOutcome::Failed {
                            error: f.error.to_string(),
                            transient: transient(&f.error),
                        },
                        None => SendOutcome::Accepted,
                    },
                    Err(e) => SendOutcome::Failed {
                        error: e.to_string(),
                        transient: transient(e),
                    },
                };
                sent.outcomes.insert(*index, outcome);
            }
        }
        sent
    }

    /// Step 6's first half: reads back what was sent and settles each entry.
    pub(super) async fn settle(&self, job: &Job<'_>, client: &Client, record: &mut Record, sent: &Sent) {
        let to_read: Vec<u32> = sent
            .outcomes
            .iter()
            .filter(|(_, o)| !matches!(o, SendOutcome::Rejected))
            .map(|(i, _)| *i)
            .collect();
        let readings = if to_read.is_empty() || job.deadline.remaining().is_zero() {
            HashMap::new()
        } else {
            self.read_back(client, record, &to_read).await
        };
        for entry in &mut record.entries {
            let Some(outcome) = sent.outcomes.get(&entry.index) else {
                continue;
            };
            let Some((before, target, _)) = entry.change() else {
                continue;
            };
            entry.state = Some(match (outcome, readings.get(&entry.username)) {
                (SendOutcome::Rejected, _) => EntryState::NotAssigned,
                (_, Some(Ok(observed))) => {
                    observe::settled(observed, &before, target).unwrap_or_else(|| match outcome {
                        // Not applied after a transient failure: left for a retry with the same key.
                        SendOutcome::Failed { transient: true, .. } => EntryState::Planned,
                        SendOutcome::Failed { error, .. } => EntryState::NotApplied {
                            error: error.clone(),
                            observed: *observed,
                        },
                        _ => EntryState::NotApplied {
                            error: "ArcGIS accepted the call but the allocation did not change".into(),
                            observed: *observed,
                        },
                    })
                }
                (_, Some(Err(error))) => EntryState::Unknown { error: error.clone() },
                (_, None) => EntryState::Planned,
            });
        }
        if let Some(why) = &sent.stopped {
            record.meta.unfinished = Some(why.clone());
        }
    }

    /// Reads back the members of the entries at `indices`.
    pub(super) async fn read_back(
        &self,
        client: &Client,
        record: &Record,
        indices: &[u32],
    ) -> HashMap<String, Result<Balance, String>> {
        let wanted: HashSet<u32> = indices.iter().copied().collect();
        let names: Vec<String> = record
            .entries
            .iter()
            .filter(|e| wanted.contains(&e.index))
            .map(|e| e.username.clone())
            .collect();
        observe::balances(client, &names, self.lookup_concurrency).await
    }
}

/// Per-entry results of sending.
#[derive(Debug, Default)]
pub(super) struct Sent {
    outcomes: HashMap<u32, SendOutcome>,
    stopped: Option<Unfinished>,
}

#[derive(Debug)]
enum SendOutcome {
    Accepted,
    Rejected,
    Failed { error: String, transient: bool },
}

/// Whether a failed write is worth sending again once the member is read back unchanged.
fn transient(e: &arcgis::Error) -> bool {
    match e.root() {
        arcgis::Error::Http { status, .. } => matches!(status, 429 | 500..=599),
        arcgis::Error::Api { api, .. } => matches!(api.code, Some(429 | 500..=599)),
        arcgis::Error::Transport { .. } | arcgis::Error::Decode { .. } | arcgis::Error::DeadlineReached { .. } => true,
        _ => false,
    }
}
