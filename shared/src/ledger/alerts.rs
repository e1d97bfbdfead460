//! The alert state: the level last reported per member (and the org floor), kept in
//! [`SHARDS`] items so that a run's ledger work grows with what changed, not with the org.
//!
//! One item per member made a first scan of 10,000 members write 3,118 items and read them
//! all back every day. Here a member's level lives in the shard its username hashes to
//! (`ALERT`/`SHARD#nn`, a map of username → level), and a run writes only the shards whose
//! content changes, in two transactions whatever their number:
//!
//! 1. **Stage** (before the email): every changed shard gets the run's new content as
//!    `pending`, conditioned on the version read, so two overlapping runs cannot both win.
//!    Staged content counts for nothing yet.
//! 2. **Commit** (once the email went out): a marker `ALERT`/`COMMIT#<run>`, then one
//!    transaction promoting each staged shard (`levels = pending`).
//!
//! Reading resolves each shard: its `pending` content if its run committed, else its
//! promoted `levels`. So a run that dies after its marker, whether before or halfway
//! through the promotion, has its alerts counted by the next run, which also promotes them
//! (markers expire after a month): nothing is sent twice and nothing is lost. A run that dies before its marker (the email may or may not have gone)
//! counts for nothing, and the next run sends the crossings again: a repeated alert is
//! better than a lost one. The window is the one marker write after the email.
//!
//! Items written before shards existed (one per member, `ALERT`/username) are read until the
//! first commit writes every shard, and deleted after it.
//!
//! # The channels' outbox
//!
//! Alert channels beside the ArcGIS notification (SNS, Slack, Teams, a webhook) each owe a
//! run's message once its crossings are committed. Each owed message is one item
//! `ALERT`/`OUTBOX#<channel>#<run>`, written with the staging (before anything is sent) and
//! counting, like a staged shard, only once its run's marker exists. After the commit a
//! channel sends what it owes, oldest first, and deletes each item it delivered; an item
//! whose delivery failed stays, and the next run delivers it. So:
//!
//! - a run with crossings writes one item per configured channel and deletes it once sent:
//!   the ledger work grows with channels and failures, never with members (a channel's
//!   message is one per run, whatever the number of crossings), and a run with no crossing
//!   writes nothing;
//! - the items live in the partition the run reads anyway, so finding what is owed costs
//!   no request;
//! - a run that dies after its marker but before sending leaves its items owed: the next run
//!   sends them; a run that dies after sending but before deleting leaves them too, and the
//!   next run sends that message again (the same window as the marker after the email);
//! - a run that never commits (its ArcGIS alert failed) leaves items that never count: the
//!   next run reports the crossings again, on every channel, once;
//! - an owed item expires with the markers ([`crate::ledger::COMMIT_RETENTION`]): a channel
//!   down for a month loses that month's messages, not the next ones.
//!
//! Per-channel alert state (a level per member per channel) was the alternative: it makes
//! every channel a copy of the shards, written on every crossing even when every channel
//! works. The outbox is written only for runs that report something.

use std::collections::{BTreeMap, HashMap, HashSet};

use crate::credits::classify::Level;

/// Shard items. At the 100,000-member design point, with every member flagged, a shard holds
/// about 1,600 entries (≈ 40 KB, a tenth of DynamoDB's 400 KB item limit) and a first run's
/// staging about 2.5 MB, within one transaction's 4 MB; a transaction takes up to 100 items.
pub const SHARDS: u16 = 64;

/// Sort-key prefix of the shard items.
pub(super) const SHARD_PREFIX: &str = "SHARD#";
/// Sort-key prefix of the commit markers.
pub(super) const COMMIT_PREFIX: &str = "COMMIT#";
/// Sort-key prefix of the channels' owed messages.
pub(super) const OUTBOX_PREFIX: &str = "OUTBOX#";

/// The sort key of the message `channel` owes for run `run_key`.
pub(super) fn outbox_sk(channel: &str, run_key: &str) -> String {
    format!("{OUTBOX_PREFIX}{channel}#{run_key}")
}

/// A message a channel owes: written with a run's staging, counting once the run committed,
/// deleted once delivered (see the module documentation).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OutboxEntry {
    /// The channel's name (`sns`, `slack`, `teams`, `webhook`).
    pub channel: String,
    /// The run whose message it is.
    pub run_key: String,
    /// When the run staged it: delivery goes oldest first.
    pub created_at: chrono::DateTime<chrono::Utc>,
    /// The message, as the channel module serialized it.
    pub message: String,
}

/// The shard `key` belongs to: FNV-1a over its bytes, stable across versions and platforms
/// (the standard library's hasher is neither).
pub fn shard_of(key: &str) -> u16 {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for byte in key.as_bytes() {
        hash ^= u64::from(*byte);
        hash = hash.wrapping_mul(0x0100_0000_01b3);
    }
    (hash % u64::from(SHARDS)) as u16
}

/// The sort key of shard `n`.
pub(super) fn shard_sk(n: u16) -> String {
    format!("{SHARD_PREFIX}{n:02}")
}

/// The sort key of run `run_key`'s commit marker.
pub(super) fn commit_sk(run_key: &str) -> String {
    format!("{COMMIT_PREFIX}{run_key}")
}

/// The shard number in a shard's sort key.
pub(super) fn shard_number(sk: &str) -> Option<u16> {
    sk.strip_prefix(SHARD_PREFIX)?.parse().ok().filter(|n| *n < SHARDS)
}

/// One shard item as stored.
#[derive(Debug, Clone, Default, PartialEq)]
pub(super) struct StoredShard {
    /// Bumped by every staging; a staging expects the version it read.
    pub version: u64,
    /// The promoted content; `None` until the shard's first promotion.
    pub levels: Option<BTreeMap<String, Level>>,
    /// Content staged by a run, and that run.
    pub pending: Option<(String, BTreeMap<String, Level>)>,
}

/// A shard as read: the version a staging must expect. Its content is the keys of
/// [`AlertState::levels`] that hash to it: held once, not once per shard and once per key.
#[derive(Debug, Clone, PartialEq)]
struct ShardRead {
    /// `None`: no item yet.
    version: Option<u64>,
    /// Its content comes from a committed run that did not get to promote it (it died
    /// after its marker): the next run promotes it, before the marker expires.
    unpromoted: bool,
}

/// The alert state as read, resolved: the level per key, and what a run needs to stage its
/// changes against exactly this state.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct AlertState {
    levels: HashMap<String, Level>,
    shards: BTreeMap<u16, ShardRead>,
    /// Keys of the per-member items written before shards, while they still count.
    legacy: Vec<String>,
    /// The channels' owed messages whose run committed, oldest first.
    owed: Vec<OutboxEntry>,
}

impl AlertState {
    /// Resolves stored shards against the committed runs. `legacy` (the per-member items) is
    /// used only while no shard has committed content: the first commit writes every shard,
    /// legacy entries included.
    pub(super) fn resolve(
        stored: BTreeMap<u16, StoredShard>,
        committed: &HashSet<String>,
        legacy: HashMap<String, Level>,
    ) -> AlertState {
        let mut shards = BTreeMap::new();
        let mut levels = HashMap::new();
        let mut sharded = false;
        for (n, shard) in stored {
            let (content, unpromoted) = match shard.pending {
                Some((run, pending)) if committed.contains(&run) => (Some(pending), true),
                _ => (shard.levels, false),
            };
            sharded |= content.is_some();
            // Moved, not copied: a shard's keys live in `levels` only.
            levels.extend(content.unwrap_or_default());
            shards.insert(
                n,
                ShardRead {
                    version: Some(shard.version),
                    unpromoted,
                },
            );
        }
        let mut legacy_keys = Vec::new();
        if !sharded {
            legacy_keys = legacy.keys().cloned().collect();
            legacy_keys.sort();
            levels.extend(legacy);
        }
        AlertState {
            levels,
            shards,
            legacy: legacy_keys,
            owed: Vec::new(),
        }
    }

    /// Adds the outbox items read with the shards: those whose run committed count (owed),
    /// the others were staged by a run that never sent its alert and are ignored until they
    /// expire.
    pub(super) fn with_outbox(mut self, outbox: Vec<OutboxEntry>, committed: &HashSet<String>) -> AlertState {
        self.owed = outbox.into_iter().filter(|e| committed.contains(&e.run_key)).collect();
        self.owed
            .sort_by(|a, b| (a.created_at, &a.run_key).cmp(&(b.created_at, &b.run_key)));
        self
    }

    /// The messages channels still owe from earlier runs, oldest first.
    pub fn owed(&self) -> &[OutboxEntry] {
        &self.owed
    }

    /// The level last reported per key; keys absent were not reported (or are back to ok).
    pub fn levels(&self) -> &HashMap<String, Level> {
        &self.levels
    }

    /// [`AlertState::levels`], owned.
    pub fn into_levels(self) -> HashMap<String, Level> {
        self.levels
    }

    /// The writes that record `changes` (a level, or `None`/`Ok` to clear) for run `run_key`:
    /// the new content of every shard that changes, or of every shard while per-member items
    /// from before shards still count (so the first commit makes the shards complete).
    pub fn stage(&self, changes: &[(String, Option<Level>)], run_key: &str) -> StagedAlerts {
        let migrating = !self.legacy.is_empty();
        // The shards whose content this staging needs: those a change falls in, and those
        // carried whole (all while migrating, and any a committed run left unpromoted).
        let carried = |n: u16| migrating || self.shards.get(&n).is_some_and(|s| s.unpromoted);
        let mut wanted = [false; SHARDS as usize];
        for (key, _) in changes {
            wanted[usize::from(shard_of(key))] = true;
        }
        for n in 0..SHARDS {
            wanted[usize::from(n)] |= carried(n);
        }
        // Their current content, in one pass over the levels.
        let mut before: BTreeMap<u16, BTreeMap<String, Level>> = BTreeMap::new();
        for (key, level) in &self.levels {
            let n = shard_of(key);
            if wanted[usize::from(n)] {
                before.entry(n).or_default().insert(key.clone(), *level);
            }
        }
        let mut next: BTreeMap<u16, BTreeMap<String, Level>> = BTreeMap::new();
        for (key, level) in changes {
            let n = shard_of(key);
            let content = next
                .entry(n)
                .or_insert_with(|| before.get(&n).cloned().unwrap_or_default());
            match level.filter(|l| *l != Level::Ok) {
                Some(level) => content.insert(key.clone(), level),
                None => content.remove(key),
            };
        }
        let shards = (0..SHARDS)
            .filter_map(|n| {
                let read = self.shards.get(&n);
                let current = before.remove(&n).unwrap_or_default();
                let carry = carried(n);
                let after = next.remove(&n).or_else(|| carry.then(|| current.clone()))?;
                let changed = carry || current != after;
                changed.then(|| StagedShard {
                    shard: n,
                    expected_version: read.and_then(|s| s.version),
                    levels: after,
                    // The committed content this staging replaces as pending becomes the
                    // promoted one, so it survives even if this run never commits.
                    promote: read.filter(|s| s.unpromoted).map(|_| current),
                })
            })
            .collect();
        StagedAlerts {
            run_key: run_key.to_owned(),
            shards,
            legacy: self.legacy.clone(),
        }
    }
}

/// One shard's staged content.
#[derive(Debug, Clone, PartialEq)]
pub struct StagedShard {
    /// The shard.
    pub shard: u16,
    /// The version read (`None`: the item must not exist yet).
    pub expected_version: Option<u64>,
    /// The shard's whole new content.
    pub levels: BTreeMap<String, Level>,
    /// A committed run's content not yet promoted (its run died after its marker): promoted
    /// by this staging.
    pub promote: Option<BTreeMap<String, Level>>,
}

/// A run's alert-state writes, from [`AlertState::stage`] to [`crate::ledger::Ledger::commit_alerts`].
#[derive(Debug, Clone, PartialEq)]
pub struct StagedAlerts {
    /// The run.
    pub run_key: String,
    /// The shards it changes.
    pub shards: Vec<StagedShard>,
    /// Per-member items from before shards, deleted once this commit makes them redundant.
    pub legacy: Vec<String>,
}

impl StagedAlerts {
    /// Whether there is nothing to write.
    pub fn is_empty(&self) -> bool {
        self.shards.is_empty() && self.legacy.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn map(pairs: &[(&str, Level)]) -> BTreeMap<String, Level> {
        pairs.iter().map(|(k, l)| (k.to_string(), *l)).collect()
    }

    #[test]
    fn shards_are_stable_and_spread() {
        assert_eq!(shard_of("jdoe"), shard_of("jdoe"));
        // The hash is part of the stored format: a change would scatter every org's state.
        assert_eq!(shard_of(""), (0xcbf2_9ce4_8422_2325u64 % 64) as u16);
        let mut counts = [0u32; SHARDS as usize];
        for i in 0..64_000 {
            counts[shard_of(&format!("member_{i}")) as usize] += 1;
        }
        assert!(counts.iter().all(|c| (800..1200).contains(c)), "{counts:?}");
        assert_eq!(shard_number(&shard_sk(7)), Some(7));
        assert_eq!(shard_number("SHARD#64"), None);
    }

    #[test]
    fn staged_content_counts_only_once_its_run_committed() {
        let key = "jdoe";
        let n = shard_of(key);
        let stored = BTreeMap::from([(
            n,
            StoredShard {
                version: 3,
                levels: Some(map(&[(key, Level::Warning)])),
                pending: Some(("run-2".into(), map(&[(key, Level::Critical)]))),
            },
        )]);
        let uncommitted = AlertState::resolve(stored.clone(), &HashSet::new(), HashMap::new());
        assert_eq!(uncommitted.levels().get(key), Some(&Level::Warning));
        let committed = AlertState::resolve(stored, &HashSet::from(["run-2".to_owned()]), HashMap::new());
        assert_eq!(committed.levels().get(key), Some(&Level::Critical));
        // The next run promotes it, whatever it changes itself, and already with its staging:
        // should that run never commit, the committed content still stands.
        let staged = committed.stage(&[(key.into(), None)], "run-3");
        assert_eq!(staged.shards.len(), 1);
        assert!(staged.shards[0].levels.is_empty());
        assert_eq!(staged.shards[0].promote, Some(map(&[(key, Level::Critical)])));
    }

    #[test]
    fn a_run_stages_only_the_shards_it_changes() {
        let stored: BTreeMap<u16, StoredShard> = (0..SHARDS)
            .map(|n| {
                (
                    n,
                    StoredShard {
                        version: 1,
                        levels: Some(BTreeMap::new()),
                        pending: None,
                    },
                )
            })
            .collect();
        let state = AlertState::resolve(stored, &HashSet::new(), HashMap::new());
        let staged = state.stage(
            &[("amy".into(), Some(Level::Critical)), ("bob".into(), Some(Level::Ok))],
            "run-1",
        );
        // "bob" was not recorded: clearing it changes nothing.
        assert_eq!(staged.shards.len(), 1);
        assert_eq!(staged.shards[0].shard, shard_of("amy"));
        assert_eq!(staged.shards[0].expected_version, Some(1));
        assert_eq!(staged.shards[0].levels, map(&[("amy", Level::Critical)]));
        assert!(state.stage(&[], "run-2").is_empty());
    }

    #[test]
    fn per_member_items_count_until_the_first_commit_writes_every_shard() {
        let legacy = HashMap::from([("old".to_owned(), Level::Warning)]);
        let state = AlertState::resolve(BTreeMap::new(), &HashSet::new(), legacy.clone());
        assert_eq!(state.levels().get("old"), Some(&Level::Warning));
        let staged = state.stage(&[("new".into(), Some(Level::Critical))], "run-1");
        assert_eq!(
            staged.shards.len(),
            SHARDS as usize,
            "every shard, so the shards are complete"
        );
        assert_eq!(staged.legacy, vec!["old".to_owned()]);
        let with_old = staged.shards.iter().find(|s| s.shard == shard_of("old")).unwrap();
        assert_eq!(with_old.levels.get("old"), Some(&Level::Warning));
        // Once a shard has committed content, per-member items no longer count.
        let stored = BTreeMap::from([(
            0,
            StoredShard {
                version: 1,
                levels: Some(BTreeMap::new()),
                pending: None,
            },
        )]);
        let state = AlertState::resolve(stored, &HashSet::new(), legacy);
        assert!(state.levels().is_empty());
    }
}
