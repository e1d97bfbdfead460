//! Step 1 of a scan: everything that only reads (ArcGIS and the ledger), all at once.
//!
//! Every read needs only a token, so they all start together: `portals/self`, the member
//! listing (every page the last run's member count implies, requested up front), the usage
//! series for the forecasts (decoded on its own task) and the alert state. A run costs the
//! sign-in and the paging floor, not a chain of round trips. Nothing here writes; a failed
//! read fails the invocation before the run is claimed, so a retry starts over. What was read
//! is then assessed ([`assess`], computation that cannot fail) while the claim is in flight.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::time::{Duration, Instant};

use chrono::{DateTime, NaiveTime, Utc};
use futures_util::future::{Aborted, abortable};

use super::alerts::{Crossings, ORG_ALERT_KEY, ORG_FORECAST_KEY, forecast_key, forecast_member, is_forecast_key};
use super::error::ScanError;
use super::lists::Lists;
use super::notices::{notice_key, notice_member};
use super::settings::ScanSettings;
use super::summary::{
    Budgeting, FlaggedMember, ForecastStatus, MemberNoticesOutcome, NotificationOutcome, OrgFloor, OrgRunningOut,
    RunningOut, ScanSummary, Skipped, ThresholdsUsed, TopUp,
};
use super::top_up::{self, TopUpDecision};
use super::{BURN_RATE_WINDOW_DAYS, ScanDeps, ScanRequest};
use crate::arcgis::{self, Capability, Client, ListingHint, OrgProperties, UsageQuery};
use crate::config::MemberNotices;
use crate::credits::amount::Credits;
use crate::credits::classify::{Classification, ClassifiedOrg, Level, Limit, RatedMember, Thresholds, classify};
use crate::credits::forecast::{Runway, Spent};
use crate::credits::member::Member;
use crate::credits::usage::{BucketLabel, Buckets, TimeWindow};
use crate::ledger::AlertState;

/// What the read phase found: the summary so far, the crossings, the top-up decision and who
/// to tell.
pub(super) struct Observed {
    pub(super) summary: ScanSummary,
    pub(super) alerts: Crossings,
    /// The members' own notices to send (and notice records to delete).
    pub(super) notices: Crossings,
    /// The alert state the crossings were computed against: the run stages its changes on it.
    pub(super) alert_state: AlertState,
    pub(super) top_up: TopUpDecision,
    /// The thresholds of this run (the configured ones, or its Input's): the top-up selects
    /// critical members by them too.
    pub(super) thresholds: Thresholds,
    pub(super) contacts: Vec<String>,
    /// What the listing found (the org's size, its parts'), when it was complete: the next
    /// run plans its requests by it.
    pub(super) listing_hint: Option<ListingHint>,
    /// What the ledger held of the last listing when this run read it: an unchanged org's
    /// hint is not written again.
    pub(super) recorded_hint: Option<ListingHint>,
    /// The org's home, for links to members' pages in the email.
    pub(super) org_home: Option<String>,
}

/// What the reads found, each failure already a [`ScanError`]: what is left to do with it is
/// computation that cannot fail ([`assess`]), so a real run is claimed while it is done.
pub(super) struct Reads {
    thresholds: Thresholds,
    thresholds_used: ThresholdsUsed,
    org: OrgProperties,
    alert_state: AlertState,
    granted: Option<Credits>,
    usage: Result<(TimeWindow, Spent), String>,
    members: Vec<Member>,
    member_errors: Vec<String>,
    listing_complete: bool,
    listing_hint: Option<ListingHint>,
    recorded_hint: Option<ListingHint>,
    notes: Vec<String>,
    problems: Vec<String>,
    arcgis_read: Duration,
}

/// Step 1, its reads: everything that only reads (ArcGIS and the ledger), all at once.
pub(super) async fn read(deps: &ScanDeps<'_>, req: &ScanRequest) -> Result<Reads, ScanError> {
    let settings = deps.settings;
    let (thresholds, thresholds_used) = thresholds(settings, &req.input)?;
    let started = Instant::now();

    // Every read needs only a token, so they all start at once: a run costs the sign-in and
    // the paging floor, not a chain of round trips. The listing is abandoned (at most its
    // first page read) when portals/self says it is not needed.
    let (hint_read, hint_done) = tokio::sync::oneshot::channel::<()>();
    let (listing, abandon_listing) = abortable(async {
        let hint = deps.ledger.listing_hint().await.unwrap_or_else(|e| {
            // Only a speed-up is lost: the listing finds the sizes itself.
            tracing::warn!(error = %e, "nothing recorded of the last listing; listing without it");
            None
        });
        drop(hint_read);
        let listed = deps.client.list_members_hinted(hint.as_ref()).await;
        (hint, listed)
    });
    let org = async {
        let org = deps.client.org_properties().await;
        if !org.as_ref().is_ok_and(listing_needed) {
            abandon_listing.abort();
        }
        org
    };
    // The usage answer is one large document: decoded on this task it would stall the
    // listing; on its own task it decodes on another core while the pages arrive.
    let usage = Background(tokio::spawn(usage_for_forecast(
        deps.client.clone(),
        req.as_of,
        settings.bucket_label,
    )));
    let arcgis = async {
        let read = tokio::join!(org, listing, usage.join());
        (read, started.elapsed())
    };
    // The day's grants only matter to a top-up's plan (and cost one ledger read).
    let granted = async {
        match settings.top_up {
            Some(_) => deps.ledger.granted_since(req.now).await.map(Some),
            None => Ok(None),
        }
    };
    // The listing's first requests wait for the hint; the alert state is needed only once the
    // listing is in, so it is read after the hint (the channel closes when the hint was read
    // or the listing abandoned), not competing with it.
    let recorded = async {
        let _closed = hint_done.await;
        deps.ledger.alert_state().await
    };
    let (((org, listing, usage), arcgis_read), recorded, granted) = tokio::join!(arcgis, recorded, granted);
    let usage = usage.unwrap_or_else(|stopped| Err(format!("the usage read stopped: {stopped}")));

    let org = org.map_err(|source| ScanError::Arcgis {
        step: "read the org's properties (portals/self)",
        source,
    })?;
    org.ensure(Capability::ManageCredits)
        .map_err(|source| ScanError::Arcgis {
            step: "check the signed-in account's privileges",
            source,
        })?;
    let alert_state = recorded.map_err(|source| ScanError::Ledger {
        step: "read the alert state",
        source,
    })?;
    let granted = granted.map_err(|source| ScanError::Ledger {
        step: "read the day's allocation budget",
        source,
    })?;

    let mut notes = Vec::new();
    let mut problems = Vec::new();
    let (members, member_errors, listing_complete, listing_hint, recorded_hint) = if listing_needed(&org) {
        let (recorded_hint, list) = listing
            .map_err(|Aborted| arcgis::Error::Unexpected {
                what: "the member listing".into(),
                reason: "it was abandoned although budgeting is on".into(),
            })
            .and_then(|(recorded, listed)| listed.map(|list| (recorded, list)))
            .map_err(|source| ScanError::Arcgis {
                step: "list the org's members",
                source,
            })?;
        let errors: Vec<String> = list.problems.iter().map(ToString::to_string).collect();
        let complete = list.is_complete();
        let hint = list.hint();
        (list.members, errors, complete, hint, recorded_hint)
    } else {
        notes.push(format!(
            "credit budgeting is off: members have no allocations to check; the org has {} credits left",
            org.available_credits.grouped(2)
        ));
        (Vec::new(), Vec::new(), false, None, None)
    };
    if !member_errors.is_empty() {
        problems.push(format!(
            "{} member(s) could not be read and were not classified (see member_errors)",
            member_errors.len()
        ));
    }
    Ok(Reads {
        thresholds,
        thresholds_used,
        org,
        alert_state,
        granted,
        usage,
        members,
        member_errors,
        listing_complete,
        listing_hint,
        recorded_hint,
        notes,
        problems,
        arcgis_read,
    })
}

/// Step 1, what the reads mean: who is flagged, who crossed a level since the last run, who
/// runs out soon, whether to top up, and the summary so far.
pub(super) fn assess(settings: &ScanSettings, req: &ScanRequest, reads: Reads) -> Observed {
    let Reads {
        thresholds,
        thresholds_used,
        org,
        alert_state,
        granted,
        usage,
        members,
        member_errors,
        listing_complete,
        listing_hint,
        recorded_hint,
        notes,
        mut problems,
        arcgis_read,
    } = reads;
    let recorded = alert_state.levels();
    let budgeting = org.budgeting_enabled;
    let classified = ClassifiedOrg::from_members(&members, &thresholds);

    let within = settings.forecast_alert_days;
    let (forecast, runways, org_runway) = forecast_members(usage, &members, &classified, org.available_credits, within);
    if let ForecastStatus::Unavailable { reason } = &forecast {
        problems.push(format!("days-until-empty forecasts are unavailable: {reason}"));
    }
    // Members above the thresholds who run out within FORECAST_DAYS at the recent rate.
    let soon = |days: Option<f64>| matches!((days, within), (Some(d), Some(w)) if d < f64::from(w));
    let running_out: Vec<RatedMember> = match &runways {
        Some(runways) if within.is_some() => {
            let days = |username: &str| runways.get(username).and_then(|r| r.days_until_empty);
            // Members above the thresholds are counted, not listed: only the few the forecast
            // says run out soon are rated again here.
            let mut found: Vec<RatedMember> = members
                .iter()
                .filter(|m| soon(days(&m.username)))
                .filter_map(|m| match classify(m, &thresholds) {
                    Classification::Rated {
                        level: Level::Ok,
                        figures,
                    } => Some(RatedMember {
                        username: m.username.clone(),
                        full_name: m.full_name.clone(),
                        figures,
                    }),
                    _ => None,
                })
                .collect();
            found.sort_by(|a, b| {
                days(&a.username)
                    .unwrap_or(f64::INFINITY)
                    .total_cmp(&days(&b.username).unwrap_or(f64::INFINITY))
                    .then_with(|| a.username.cmp(&b.username))
            });
            found
        }
        _ => Vec::new(),
    };
    let org_running_out = org_runway.filter(|r| soon(r.days_until_empty));

    let below_floor = settings.org_min_credits.filter(|min| org.available_credits < *min);
    let mut current: BTreeMap<String, Level> = BTreeMap::new();
    for m in &classified.critical {
        current.insert(m.username.clone(), Level::Critical);
    }
    for m in &classified.warning {
        current.insert(m.username.clone(), Level::Warning);
    }
    if below_floor.is_some() {
        current.insert(ORG_ALERT_KEY.to_owned(), Level::Critical);
    }
    // A forecast alert is recorded under its own key; its level only says "reported".
    for m in &running_out {
        current.insert(forecast_key(&m.username), Level::Warning);
    }
    if org_running_out.is_some() {
        current.insert(ORG_FORECAST_KEY.to_owned(), Level::Warning);
    }

    // The listing is sorted by username: no set of every username beside it.
    let listed = |key: &str| members.binary_search_by(|m| m.username.as_str().cmp(key)).is_ok();
    let member_known = |key: &str| budgeting && (listed(key) || listing_complete);
    // Without a forecast this run cannot tell whether a forecast alert still holds: its record
    // stays (unless the alerts are off, when every record of them goes).
    let forecast_known = runways.is_some() || within.is_none();
    let alerts = Crossings::new(&current, recorded, |key| {
        if notice_member(key).is_some() {
            // The members' own notices are recorded by their own phase.
            false
        } else if key == ORG_ALERT_KEY {
            true
        } else if key == ORG_FORECAST_KEY {
            forecast_known
        } else if let Some(username) = forecast_member(key) {
            forecast_known && (within.is_none() || member_known(username))
        } else {
            member_known(key)
        }
    });

    // The members' own notices: the level each flagged member is to be told about, against
    // the level they were last told about; a notice record goes with the member's level.
    let told = settings.member_notices;
    let mut to_tell: BTreeMap<String, Level> = BTreeMap::new();
    for (list, level) in [
        (&classified.critical, Level::Critical),
        (&classified.warning, Level::Warning),
    ] {
        if told.tells(level) {
            to_tell.extend(list.iter().map(|m| (notice_key(&m.username), level)));
        }
    }
    let notices = Crossings::new(&to_tell, recorded, |key| {
        notice_member(key).is_some_and(|u| told == MemberNotices::Off || member_known(u))
    });

    let top_up = top_up::decide(
        settings.top_up.as_ref(),
        budgeting,
        &members,
        &thresholds,
        org.available_credits,
        granted,
    );

    let flagged = |list: &[RatedMember]| -> Vec<FlaggedMember> {
        list.iter()
            .map(|m| flagged_member(m, recorded, &alerts, runways.as_ref()))
            .collect()
    };
    let running_out = RunningOut {
        within_days: within,
        members: running_out
            .iter()
            .map(|m| {
                let key = forecast_key(&m.username);
                FlaggedMember {
                    previously_reported: None,
                    newly_reported: alerts.reports(&key),
                    ..flagged_member(m, recorded, &alerts, runways.as_ref())
                }
            })
            .collect(),
        org: org_running_out.and_then(|r| {
            Some(OrgRunningOut {
                credits_per_day: r.credits_per_day,
                days_until_empty: r.days_until_empty?,
                newly_reported: alerts.reports(ORG_FORECAST_KEY),
            })
        }),
        newly_reported: alerts
            .report
            .iter()
            .filter(|(k, _)| forecast_member(k).is_some())
            .count(),
    };
    let summary = ScanSummary {
        run_key: req.run_key.clone(),
        dry_run: req.input.dry_run,
        duplicate_of: None,
        org_available_credits: org.available_credits,
        budgeting: if budgeting {
            Budgeting::Enabled
        } else {
            Budgeting::Disabled
        },
        thresholds: thresholds_used,
        members_scanned: members.len(),
        critical: flagged(&classified.critical),
        warning: flagged(&classified.warning),
        skipped: skipped(&classified),
        member_errors,
        forecast,
        org_floor: match (settings.org_min_credits, below_floor) {
            (None, _) => OrgFloor::NotConfigured,
            (Some(min_credits), None) => OrgFloor::Ok { min_credits },
            (Some(min_credits), Some(_)) => OrgFloor::Below {
                min_credits,
                newly_reported: alerts.reports(ORG_ALERT_KEY),
            },
        },
        running_out,
        newly_reported: alerts
            .report
            .iter()
            .filter(|(k, _)| k != ORG_ALERT_KEY && !is_forecast_key(k))
            .count(),
        already_reported: alerts
            .already_reported
            .iter()
            .filter(|k| k.as_str() != ORG_ALERT_KEY && !is_forecast_key(k))
            .count(),
        cleared: 0,
        recipients_notified: Vec::new(),
        notification: NotificationOutcome::NothingNew,
        channels: Vec::new(),
        member_notices: MemberNoticesOutcome {
            notify: told,
            due: notices.report.len(),
            ..MemberNoticesOutcome::default()
        },
        top_up: TopUp::Off,
        allocations_applied: Vec::new(),
        notes,
        problems,
        arcgis_requests: 0,
        duration_ms: 0,
        arcgis_read_ms: u64::try_from(arcgis_read.as_millis()).unwrap_or(u64::MAX),
        lists: Lists::NotConfigured,
    };
    Observed {
        summary,
        alerts,
        notices,
        alert_state,
        top_up,
        thresholds,
        contacts: org.admin_contacts,
        listing_hint,
        recorded_hint,
        org_home: org.home_url,
    }
}

/// The thresholds: the configured ones, each overridable by the run's Input.
fn thresholds(
    settings: &ScanSettings,
    input: &crate::schedule::ScanInput,
) -> Result<(Thresholds, ThresholdsUsed), ScanError> {
    let configured = |limit: Limit| match limit {
        Limit::Percent(p) => Some(p),
        Limit::Credits(_) => None,
    };
    let used = ThresholdsUsed {
        critical_percent: input
            .critical_percent
            .or_else(|| configured(settings.thresholds.critical()))
            .unwrap_or(crate::credits::percent::Percent::HUNDRED),
        warning_percent: input
            .warning_percent
            .or_else(|| configured(settings.thresholds.warning()))
            .unwrap_or(crate::credits::percent::Percent::HUNDRED),
    };
    if input.critical_percent.is_none() && input.warning_percent.is_none() {
        return Ok((settings.thresholds, used));
    }
    Thresholds::new(
        Limit::Percent(used.critical_percent),
        Limit::Percent(used.warning_percent),
    )
    .map(|t| (t, used))
    .map_err(ScanError::InvalidInput)
}

/// A spawned task that is aborted when dropped, so an early return leaves nothing running.
struct Background<T>(tokio::task::JoinHandle<T>);

impl<T> Background<T> {
    async fn join(mut self) -> Result<T, tokio::task::JoinError> {
        (&mut self.0).await
    }
}

impl<T> Drop for Background<T> {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Whether the member listing is worth reading: members have allocations only with budgeting
/// on, and without the privileges the run fails anyway.
fn listing_needed(org: &OrgProperties) -> bool {
    org.budgeting_enabled && org.ensure(Capability::ManageCredits).is_ok()
}

/// One usage series per member over the [`BURN_RATE_WINDOW_DAYS`] whole UTC days before `as_of`'s
/// day (its labels read per `label`), or why not. Read concurrently with the member listing,
/// so it costs no extra round trip.
async fn usage_for_forecast(
    client: Client,
    as_of: DateTime<Utc>,
    label: BucketLabel,
) -> Result<(TimeWindow, Spent), String> {
    let day_start = as_of.date_naive().and_time(NaiveTime::MIN).and_utc();
    let window = TimeWindow::last_days(day_start, BURN_RATE_WINDOW_DAYS)
        .map_err(|e| format!("no forecast window before {day_start}: {e}"))?;
    match client
        .usage_spent(&UsageQuery::by_member(window, Buckets::daily(label)))
        .await
    {
        Ok(spent) => Ok((window, spent)),
        Err(e) => {
            tracing::warn!(error = %e, "usage unavailable: no forecasts this run");
            Err(e.to_string())
        }
    }
}

/// Applies the usage rates to every member and the org. Keeps the runways of the flagged
/// members and of those running out within `within` days (the only ones reported), and the
/// org's; the others are computed one at a time and dropped, never held for every member.
/// A failed usage read is reported, never fatal.
fn forecast_members(
    usage: Result<(TimeWindow, Spent), String>,
    members: &[Member],
    classified: &ClassifiedOrg,
    org_available: Credits,
    within: Option<u32>,
) -> (ForecastStatus, Option<HashMap<String, Runway>>, Option<Runway>) {
    let (window, spent) = match usage {
        Ok(found) => found,
        Err(reason) => return (ForecastStatus::Unavailable { reason }, None, None),
    };
    let flagged: HashSet<&str> = classified
        .critical
        .iter()
        .chain(&classified.warning)
        .map(|m| m.username.as_str())
        .collect();
    let kept = |username: &str, runway: &Runway| {
        flagged.contains(username)
            || matches!((runway.days_until_empty, within), (Some(d), Some(w)) if d < f64::from(w))
    };
    let runways = members
        .iter()
        .filter_map(|m| {
            let runway = spent.runway(m, &window);
            kept(&m.username, &runway).then(|| (m.username.clone(), runway))
        })
        .collect();
    let org = spent.org_runway(org_available, &window);
    (
        ForecastStatus::Available {
            window_days: window.days(),
            org_credits_per_day: org.credits_per_day,
            org_days_until_empty: org.days_until_empty,
        },
        Some(runways),
        Some(org),
    )
}

fn flagged_member(
    m: &RatedMember,
    recorded: &HashMap<String, Level>,
    alerts: &Crossings,
    runways: Option<&HashMap<String, Runway>>,
) -> FlaggedMember {
    let runway = runways.and_then(|r| r.get(&m.username));
    FlaggedMember {
        username: m.username.clone(),
        full_name: m.full_name.clone(),
        assigned: m.figures.assigned,
        available: m.figures.available,
        consumed: m.figures.consumed,
        percent_left: m.figures.percent_left,
        credits_per_day: runway.map(|r| r.credits_per_day),
        days_until_empty: runway.and_then(|r| r.days_until_empty),
        previously_reported: recorded.get(&m.username).copied(),
        newly_reported: alerts.reports(&m.username),
    }
}

fn skipped(classified: &ClassifiedOrg) -> Skipped {
    let mut s = Skipped {
        total: classified.skipped.len(),
        by_reason: BTreeMap::new(),
    };
    for m in &classified.skipped {
        let group = s.by_reason.entry(m.reason).or_default();
        group.count += 1;
        group.usernames.push(m.username.clone());
    }
    s
}
