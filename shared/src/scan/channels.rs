//! The run's alert on the other channels (SNS, Slack, Teams, webhook), once per channel.
//!
//! The protocol is the ledger's outbox ([`crate::ledger::alerts`], "The channels' outbox"):
//! [`stage`] writes what each channel will owe with the alert state's staging, before the
//! ArcGIS alert goes out; once the run committed, [`deliver`] sends each channel what it owes
//! (earlier runs' messages first, marked late), and settles each message delivered. A
//! channel's failure is that channel's alone: the others and the ArcGIS alert are not held
//! up, and what it still owes stays for the next run.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use serde::Serialize;

use super::summary::ScanSummary;
use super::{ScanDeps, ScanRequest};
use crate::channels::{AlertMessage, ChannelKind, DeliveryError};
use crate::ledger::{LedgerError, OutboxEntry};

/// What became of one channel in a run.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ChannelOutcome {
    /// The channel.
    pub channel: ChannelKind,
    /// The runs whose message it delivered (this run's and earlier ones it owed).
    pub delivered: Vec<String>,
    /// The runs whose message it still owes: the next run sends them.
    pub owed: Vec<String>,
    /// The runs whose message the receiver refused (not sent again).
    pub dropped: Vec<String>,
    /// Why it failed, when it did.
    pub failure: Option<String>,
}

/// The outbox entries of this run's message, one per configured channel.
pub(super) fn entries(
    deps: &ScanDeps<'_>,
    message: &AlertMessage,
    now: DateTime<Utc>,
) -> Result<Vec<OutboxEntry>, String> {
    let text = serde_json::to_string(message)
        .map_err(|e| format!("the alert channels' message could not be written as JSON ({e}), so none was sent"))?;
    Ok(deps
        .channels
        .configured()
        .into_iter()
        .map(|kind| OutboxEntry {
            channel: kind.as_str().to_owned(),
            run_key: message.run_key.clone(),
            created_at: now,
            message: text.clone(),
        })
        .collect())
}

/// Writes this run's outbox entries (before anything is sent).
pub(super) async fn stage(deps: &ScanDeps<'_>, entries: &[OutboxEntry]) -> Result<(), LedgerError> {
    deps.ledger.stage_outbox(entries).await
}

/// Delivers what every channel owes: `owed` (earlier runs' messages, read with the alert
/// state) then `current` (this run's). Returns the problems to report; the outcome per
/// channel goes to `summary.channels`.
pub(super) async fn deliver(
    deps: &ScanDeps<'_>,
    req: &ScanRequest,
    owed: &[OutboxEntry],
    current: &[OutboxEntry],
    summary: &mut ScanSummary,
) -> Vec<String> {
    let mut problems = Vec::new();
    let configured = deps.channels.configured();
    let mut queues: BTreeMap<ChannelKind, Vec<&OutboxEntry>> = BTreeMap::new();
    for entry in owed.iter().filter(|e| e.run_key != req.run_key).chain(current) {
        match ChannelKind::parse(&entry.channel).filter(|k| configured.contains(k)) {
            Some(kind) => queues.entry(kind).or_default().push(entry),
            None => {
                // The channel was removed from the deployment: nobody is left to tell.
                if let Err(e) = deps.ledger.settle_outbox(&entry.channel, &entry.run_key).await {
                    problems.push(format!(
                        "the message channel '{}' owed for run {} could not be dropped: {e}",
                        entry.channel, entry.run_key
                    ));
                } else {
                    summary.notes.push(format!(
                        "channel '{}' is no longer configured: its message for run {} was dropped",
                        entry.channel, entry.run_key
                    ));
                }
            }
        }
    }
    let outcomes = futures_util::future::join_all(
        queues
            .into_iter()
            .map(|(kind, queue)| deliver_one(deps, req, kind, queue)),
    )
    .await;
    for (outcome, mut channel_problems) in outcomes {
        if let Some(failure) = &outcome.failure {
            tracing::error!(
                run_key = %req.run_key,
                channel = %outcome.channel,
                owed = outcome.owed.len(),
                failure = %failure,
                "alert channel failed"
            );
        } else {
            tracing::info!(
                run_key = %req.run_key,
                channel = %outcome.channel,
                delivered = outcome.delivered.len(),
                "alert channel delivered"
            );
        }
        problems.append(&mut channel_problems);
        summary.channels.push(outcome);
    }
    problems
}

/// One channel's queue, oldest first, stopping at its first failure to retry.
async fn deliver_one(
    deps: &ScanDeps<'_>,
    req: &ScanRequest,
    kind: ChannelKind,
    queue: Vec<&OutboxEntry>,
) -> (ChannelOutcome, Vec<String>) {
    let mut outcome = ChannelOutcome {
        channel: kind,
        delivered: Vec::new(),
        owed: Vec::new(),
        dropped: Vec::new(),
        failure: None,
    };
    let mut problems = Vec::new();
    let mut entries = queue.into_iter();
    for entry in entries.by_ref() {
        let message: AlertMessage = match serde_json::from_str(&entry.message) {
            Ok(m) => m,
            Err(e) => {
                // Written by another version, or by hand: unusable, so dropped, and said.
                problems.push(format!(
                    "channel {kind}: the message owed for run {} is unreadable ({e}); dropped",
                    entry.run_key
                ));
                settle(deps, kind, entry, &mut problems).await;
                outcome.dropped.push(entry.run_key.clone());
                continue;
            }
        };
        let late = entry.run_key != req.run_key;
        match deps.channels.send(kind, &message, late).await {
            Ok(()) => {
                settle(deps, kind, entry, &mut problems).await;
                outcome.delivered.push(entry.run_key.clone());
            }
            Err(e) if !e.retried() => {
                problems.push(format!("channel {e} (run {})", entry.run_key));
                settle(deps, kind, entry, &mut problems).await;
                outcome.dropped.push(entry.run_key.clone());
                outcome.failure = Some(e.detail().to_owned());
            }
            Err(e) => {
                outcome.owed.push(entry.run_key.clone());
                outcome.failure = Some(e.detail().to_owned());
                problems.push(owed_problem(&e, entry));
                break;
            }
        }
    }
    // Not tried after a failure: still owed, in order.
    outcome.owed.extend(entries.map(|e| e.run_key.clone()));
    (outcome, problems)
}

fn owed_problem(e: &DeliveryError, entry: &OutboxEntry) -> String {
    format!(
        "channel {e}; its message for run {} (and any later one) is kept and sent by the next run",
        entry.run_key
    )
}

async fn settle(deps: &ScanDeps<'_>, kind: ChannelKind, entry: &OutboxEntry, problems: &mut Vec<String>) {
    if let Err(e) = deps.ledger.settle_outbox(kind.as_str(), &entry.run_key).await {
        problems.push(format!(
            "channel {kind}: the message of run {} went out but was not recorded, so the next run \
             may send it again: {e}",
            entry.run_key
        ));
    }
}
