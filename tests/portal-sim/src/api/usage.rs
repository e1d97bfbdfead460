//! `portals/self/usage` (see docs/arcgis.md, "Usage buckets"): credit and operation series,
//! grouped, in buckets of one period, every value a `[timestamp-string, value-string]` pair in
//! Java number format. The labels are the UTC bucket boundaries inside `(startTime, endTime]`,
//! as in Esri's docstring run; each names the bucket it starts or the one it ends, as the
//! behaviour switch `usage_bucket_label` says (which one ArcGIS uses is unverified). A record
//! of day `d` belongs to the bucket covering `[d, d + 1 day)`. `userOrgId` is the org of the
//! user charged, and absent (not null) when the user belongs to no org the simulator knows,
//! as Esri's docstring shows for public accounts.

use std::collections::{BTreeMap, HashMap};
use std::fmt::Write as _;
use std::sync::Arc;

use chrono::{DateTime, Datelike, Months, Utc};
use serde_json::Value;

use super::{Ctx, auth::require};
use crate::faults::BucketLabel;
use crate::org::{UsageRecord, from_micros, micros};
use crate::wire::{AgolError, Reply, java_double};
use crate::world::World;

/// Refuse absurd series (the real limits are unknown; this keeps the simulator responsive).
const MAX_BUCKETS: usize = 20_000;
const GROUP_FIELDS: &[&str] = &["stype", "etype", "username", "userorgid"];

/// One step of `period` from `t`, or `None` past the end of time.
fn next_boundary(t: i64, period: &str) -> Option<i64> {
    match period {
        "1h" => t.checked_add(3_600_000),
        "1d" => t.checked_add(86_400_000),
        "1w" => t.checked_add(7 * 86_400_000),
        _ => DateTime::<Utc>::from_timestamp_millis(t)
            .and_then(|d| d.checked_add_months(Months::new(1)))
            .map(|d| d.timestamp_millis()),
    }
}

/// The bucket boundary at or before `t`: the hour for `1h`, UTC midnight for `1d`, Monday's
/// for `1w` (ISO weeks; unverified, nothing here asks for weeks), the 1st's for `1m`.
fn floor_boundary(t: i64, period: &str) -> Option<i64> {
    match period {
        "1h" => Some(t - t.rem_euclid(3_600_000)),
        "1d" => Some(t - t.rem_euclid(86_400_000)),
        "1w" => {
            let midnight = t - t.rem_euclid(86_400_000);
            let d = DateTime::<Utc>::from_timestamp_millis(midnight)?;
            Some(midnight - i64::from(d.weekday().num_days_from_monday()) * 86_400_000)
        }
        _ => {
            let d = DateTime::<Utc>::from_timestamp_millis(t)?.date_naive();
            Some(d.with_day(1)?.and_hms_opt(0, 0, 0)?.and_utc().timestamp_millis())
        }
    }
}

/// The labels of an answer for `(start, end]`: the UTC bucket boundaries inside it, as in
/// Esri's docstring run (asked from 08:00 to 08:00, labelled with the seven midnights
/// between). Which bucket a label names, the one it starts or the one it ends, is the
/// behaviour switch `usage_bucket_label`.
fn labels(start: i64, end: i64, period: &str) -> Result<Vec<i64>, AgolError> {
    if !matches!(period, "1h" | "1d" | "1w" | "1m") {
        return Err(AgolError::bad_param(
            "period",
            format!("'{period}' is not 1h, 1d, 1w or 1m"),
        ));
    }
    let out_of_range = || AgolError::bad_param("endTime", "is out of range");
    let mut out = Vec::new();
    let mut t = floor_boundary(start, period)
        .and_then(|b| next_boundary(b, period))
        .ok_or_else(out_of_range)?;
    while t <= end {
        if out.len() >= MAX_BUCKETS {
            return Err(AgolError::bad_param(
                "period",
                "too many buckets for this time span; use a longer period",
            ));
        }
        out.push(t);
        t = next_boundary(t, period).ok_or_else(out_of_range)?;
    }
    Ok(out)
}

/// The bucket `[from, to)` a label names.
fn bucket_of(label: i64, period: &str, convention: BucketLabel) -> Option<(i64, i64)> {
    match convention {
        BucketLabel::Start => Some((label, next_boundary(label, period)?)),
        BucketLabel::End => {
            // The boundary before `label`: one step back from the floor of the instant before.
            let before = floor_boundary(label - 1, period)?;
            Some((before, label))
        }
    }
}

/// The usage series for `[startTime, endTime)`.
pub fn usage(w: &World, ctx: &Ctx) -> Result<Reply, AgolError> {
    require(&ctx.caller, &["portal:admin:viewUsers"])?;
    let p = ctx.params;
    let start = p.int_or("startTime", i64::MIN)?;
    let end = p.int_or("endTime", i64::MIN)?;
    if start == i64::MIN || end == i64::MIN {
        return Err(AgolError::bad_param(
            if start == i64::MIN { "startTime" } else { "endTime" },
            "is required (epoch milliseconds)",
        ));
    }
    if end <= start {
        return Err(AgolError::bad_param("endTime", "must be after startTime"));
    }
    let period = p.get("period").unwrap_or("1d").to_string();
    let labels = labels(start, end, &period)?;
    // Each label's bucket; consecutive, so their starts sort the records into them.
    let buckets: Vec<(i64, i64)> = labels
        .iter()
        .map(|&l| bucket_of(l, &period, w.behaviour.usage_bucket_label))
        .collect::<Option<_>>()
        .ok_or_else(|| AgolError::bad_param("startTime", "is out of range"))?;
    let (covered_from, covered_to) = match (buckets.first(), buckets.last()) {
        (Some(first), Some(last)) => (first.0, last.1),
        _ => (start, start),
    };
    let groupby: Vec<String> = p
        .get("groupby")
        .unwrap_or("")
        .split(',')
        .map(|s| s.trim().to_ascii_lowercase())
        .filter(|s| !s.is_empty())
        .collect();
    if let Some(bad) = groupby.iter().find(|g| !GROUP_FIELDS.contains(&g.as_str())) {
        return Err(AgolError::bad_param(
            "groupby",
            format!("'{bad}' is not one of {}", GROUP_FIELDS.join(", ")),
        ));
    }
    let vars: Vec<String> = p
        .get("vars")
        .unwrap_or("credits")
        .split(',')
        .map(|s| s.trim().to_string())
        .collect();
    if let Some(bad) = vars.iter().find(|v| *v != "credits" && *v != "num") {
        return Err(AgolError::bad_param("vars", format!("'{bad}' is not credits or num")));
    }
    // A field named twice groups once, so at most the four fields remain.
    let groupby: Vec<String> = groupby
        .iter()
        .enumerate()
        .filter(|(i, g)| !groupby[..*i].contains(g))
        .map(|(_, g)| g.clone())
        .collect();
    let query = Query {
        covered: (covered_from, covered_to),
        starts: buckets.iter().map(|b| b.0).collect(),
        stype: p.get("stype").map(str::to_owned),
        etype: p.get("etype").map(str::to_owned),
        username: p.get("username").map(str::to_owned),
    };
    // Aggregated after the world lock is released, over a snapshot of the records and of who
    // belongs to which org: a large org's month is hundreds of thousands of records, and
    // aggregating them under the lock held up every other request meanwhile (at 100,000
    // members, a scan's first listing pages answered in 210 ms instead of 50).
    let records = Arc::clone(&w.org.usage);
    let orgs = Orgs {
        members: Arc::clone(&w.by_username),
        org_id: w.org.id.clone(),
        external: w
            .org
            .external_users
            .iter()
            .map(|u| (u.username.clone(), u.org_id.clone()))
            .collect(),
    };
    Ok(Reply::Deferred(Box::new(move || {
        let groups = aggregate(&records, &query, &groupby, &orgs);
        series_json(start, end, &period, &groupby, &vars, &labels, groups)
    })))
}

/// Which records an answer sums, and into which buckets.
struct Query {
    /// `[from, to)`: the buckets' span.
    covered: (i64, i64),
    /// Each bucket's start, ascending.
    starts: Vec<i64>,
    stype: Option<String>,
    etype: Option<String>,
    username: Option<String>,
}

/// Who belongs to which org, as `userOrgId` reports it.
struct Orgs {
    members: Arc<HashMap<String, usize>>,
    org_id: String,
    /// Users of other orgs: username and org id.
    external: Vec<(String, String)>,
}

/// Sums `records` into one group per distinct `groupby` values, micro-credits and counts per
/// bucket, with borrowed keys (no allocation per record).
fn aggregate(records: &[UsageRecord], q: &Query, groupby: &[String], orgs: &Orgs) -> Vec<Group> {
    let mut sums: BTreeMap<[GroupValue<'_>; 4], (Vec<i64>, Vec<u64>)> = BTreeMap::new();
    let lo = records.partition_point(|r| r.day < q.covered.0);
    let hi = records.partition_point(|r| r.day < q.covered.1);
    for r in &records[lo..hi] {
        if q.stype.as_ref().is_some_and(|s| *s != r.stype)
            || q.etype.as_ref().is_some_and(|e| *e != r.etype)
            || q.username.as_ref().is_some_and(|u| Some(u) != r.username.as_ref())
        {
            continue;
        }
        let mut key = [GroupValue::Unused; 4];
        for (slot, g) in key.iter_mut().zip(groupby) {
            *slot = match g.as_str() {
                "stype" => GroupValue::Named(r.stype.as_str()),
                "etype" => GroupValue::Named(r.etype.as_str()),
                "username" => GroupValue::of(r.username.as_deref()),
                _ => user_org_id(orgs, r.username.as_deref()),
            };
        }
        let entry = sums
            .entry(key)
            .or_insert_with(|| (vec![0; q.starts.len()], vec![0; q.starts.len()]));
        let b = q.starts.partition_point(|&t| t <= r.day).saturating_sub(1);
        entry.0[b] += micros(r.credits);
        entry.1[b] += r.num;
    }
    sums.into_iter()
        .map(|(key, (credits, nums))| {
            let values = key.iter().take(groupby.len()).map(GroupValue::owned).collect();
            (values, credits, nums)
        })
        .collect()
}

/// The `userOrgId` of usage charged to `username`: the org's id for a member, the other
/// org's for a known outside user, absent otherwise (public accounts, unattributed usage).
fn user_org_id<'a>(orgs: &'a Orgs, username: Option<&str>) -> GroupValue<'a> {
    let Some(username) = username else {
        return GroupValue::Absent;
    };
    if orgs.members.contains_key(username) {
        return GroupValue::Named(orgs.org_id.as_str());
    }
    orgs.external
        .iter()
        .find(|(u, _)| u == username)
        .map_or(GroupValue::Absent, |(_, org)| GroupValue::Named(org.as_str()))
}

/// One series group: its `groupby` values, micro-credits and counts per bucket.
type Group = (Vec<FieldValue>, Vec<i64>, Vec<u64>);

/// A group's value for one `groupby` field, owned for rendering after the lock.
enum FieldValue {
    Named(String),
    Null,
    /// The key is left out of the series.
    Absent,
}

/// One group's value for one `groupby` field. `Null` sorts after every name, as `null` did
/// after the quoted names when groups were keyed by their JSON text.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum GroupValue<'a> {
    Named(&'a str),
    Null,
    Absent,
    Unused,
}

impl<'a> GroupValue<'a> {
    fn of(value: Option<&'a str>) -> Self {
        value.map_or(GroupValue::Null, GroupValue::Named)
    }

    fn owned(&self) -> FieldValue {
        match self {
            GroupValue::Named(s) => FieldValue::Named((*s).to_owned()),
            GroupValue::Null | GroupValue::Unused => FieldValue::Null,
            GroupValue::Absent => FieldValue::Absent,
        }
    }
}

/// The usage answer: one object per group with its fields and one `[time, value]` series per
/// requested variable. Written as text directly: for a large org it is a few megabytes, and a
/// `Value` per point made the simulator, not the client, the slow side of a benchmark.
fn series_json(
    start: i64,
    end: i64,
    period: &str,
    groupby: &[String],
    vars: &[String],
    labels: &[i64],
    groups: Vec<Group>,
) -> Reply {
    let text = |s: &str| Value::from(s).to_string();
    let credits = vars.iter().any(|v| v == "credits");
    let num = vars.iter().any(|v| v == "num");
    let mut out = String::with_capacity(64 + groups.len() * (64 + labels.len() * 32));
    let _ = write!(
        out,
        r#"{{"startTime":{start},"endTime":{end},"period":{},"data":["#,
        text(period)
    );
    for (i, (values, sums, counts)) in groups.into_iter().enumerate() {
        out.push_str(if i == 0 { "{" } else { ",{" });
        let mut first = true;
        let mut key = |out: &mut String, name: &str| {
            let _ = write!(out, "{}{}:", if first { "" } else { "," }, text(name));
            first = false;
        };
        for (field, value) in groupby.iter().zip(values) {
            let rendered = match value {
                FieldValue::Named(name) => text(&name),
                FieldValue::Null => "null".to_owned(),
                FieldValue::Absent => continue,
            };
            key(&mut out, if field == "userorgid" { "userOrgId" } else { field });
            out.push_str(&rendered);
        }
        let mut series = |out: &mut String, name: &str, value: &dyn Fn(usize) -> String| {
            key(out, name);
            out.push('[');
            for (b, t) in labels.iter().enumerate() {
                let _ = write!(out, r#"{}["{t}","{}"]"#, if b == 0 { "" } else { "," }, value(b));
            }
            out.push(']');
        };
        if credits {
            series(&mut out, "credits", &|b| java_double(from_micros(sums[b])));
        }
        if num {
            series(&mut out, "num", &|b| counts[b].to_string());
        }
        out.push('}');
    }
    out.push_str("]}");
    Reply::JsonText(out)
}
