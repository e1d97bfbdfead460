//! `portals/self/usage` (see docs/arcgis.md, "Usage buckets"): credit and operation series,
//! grouped, in buckets of one period, every value a `[timestamp-string, value-string]` pair in
//! Java number format. Buckets are labelled by their start (whether ArcGIS labels the start or
//! the end is unverified).

use std::collections::BTreeMap;
use std::fmt::Write as _;

use chrono::{DateTime, Months, Utc};
use serde_json::Value;

use super::{Ctx, auth::require};
use crate::org::{from_micros, micros};
use crate::wire::{AgolError, Reply, java_double};
use crate::world::World;

/// Refuse absurd series (the real limits are unknown; this keeps the simulator responsive).
const MAX_BUCKETS: usize = 20_000;
const GROUP_FIELDS: &[&str] = &["stype", "etype", "username", "userorgid"];

fn bucket_starts(start: i64, end: i64, period: &str) -> Result<Vec<i64>, AgolError> {
    let step = match period {
        "1h" => Some(3_600_000),
        "1d" => Some(86_400_000),
        "1w" => Some(7 * 86_400_000),
        "1m" => None,
        other => {
            return Err(AgolError::bad_param(
                "period",
                format!("'{other}' is not 1h, 1d, 1w or 1m"),
            ));
        }
    };
    let mut out = Vec::new();
    let mut t = start;
    while t < end {
        out.push(t);
        if out.len() > MAX_BUCKETS {
            return Err(AgolError::bad_param(
                "period",
                "too many buckets for this time span; use a longer period",
            ));
        }
        t = match step {
            Some(s) => t + s,
            None => DateTime::<Utc>::from_timestamp_millis(t)
                .and_then(|d| d.checked_add_months(Months::new(1)))
                .map(|d| d.timestamp_millis())
                .ok_or_else(|| AgolError::bad_param("endTime", "is out of range"))?,
        };
    }
    Ok(out)
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
    let buckets = bucket_starts(start, end, &period)?;
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
    let (f_stype, f_etype, f_user) = (p.get("stype"), p.get("etype"), p.get("username"));

    // Aggregate under the world lock with borrowed keys (no allocation per record); the JSON,
    // the large part, is built after the lock is released.
    // A field named twice groups once, so at most the four fields remain.
    let groupby: Vec<String> = groupby
        .iter()
        .enumerate()
        .filter(|(i, g)| !groupby[..*i].contains(g))
        .map(|(_, g)| g.clone())
        .collect();
    let mut sums: BTreeMap<[GroupValue<'_>; 4], (Vec<i64>, Vec<u64>)> = BTreeMap::new();
    let lo = w.org.usage.partition_point(|r| r.day < start);
    let hi = w.org.usage.partition_point(|r| r.day < end);
    for r in &w.org.usage[lo..hi] {
        if f_stype.is_some_and(|s| s != r.stype)
            || f_etype.is_some_and(|e| e != r.etype)
            || f_user.is_some_and(|u| Some(u) != r.username.as_deref())
        {
            continue;
        }
        let mut key = [GroupValue::Unused; 4];
        for (slot, g) in key.iter_mut().zip(&groupby) {
            *slot = GroupValue::of(match g.as_str() {
                "stype" => Some(r.stype.as_str()),
                "etype" => Some(r.etype.as_str()),
                "username" => r.username.as_deref(),
                _ => r.username.as_ref().map(|_| w.org.id.as_str()),
            });
        }
        let entry = sums
            .entry(key)
            .or_insert_with(|| (vec![0; buckets.len()], vec![0; buckets.len()]));
        let b = buckets.partition_point(|&t| t <= r.day).saturating_sub(1);
        entry.0[b] += micros(r.credits);
        entry.1[b] += r.num;
    }
    let groups: Vec<Group> = sums
        .into_iter()
        .map(|(key, (credits, nums))| {
            let values = key.iter().take(groupby.len()).map(GroupValue::owned).collect();
            (values, credits, nums)
        })
        .collect();
    Ok(Reply::Deferred(Box::new(move || {
        series_json(start, end, &period, &groupby, &vars, &buckets, groups)
    })))
}

/// One series group: its `groupby` values (`None` = null), micro-credits and counts per bucket.
type Group = (Vec<Option<String>>, Vec<i64>, Vec<u64>);

/// One group's value for one `groupby` field. `None` sorts after every name, as `null` did
/// after the quoted names when groups were keyed by their JSON text.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum GroupValue<'a> {
    Named(&'a str),
    Null,
    Unused,
}

impl<'a> GroupValue<'a> {
    fn of(value: Option<&'a str>) -> Self {
        value.map_or(GroupValue::Null, GroupValue::Named)
    }

    fn owned(&self) -> Option<String> {
        match self {
            GroupValue::Named(s) => Some((*s).to_owned()),
            GroupValue::Null | GroupValue::Unused => None,
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
    buckets: &[i64],
    groups: Vec<Group>,
) -> Reply {
    let text = |s: &str| Value::from(s).to_string();
    let credits = vars.iter().any(|v| v == "credits");
    let num = vars.iter().any(|v| v == "num");
    let mut out = String::with_capacity(64 + groups.len() * (64 + buckets.len() * 32));
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
            key(&mut out, if field == "userorgid" { "userOrgId" } else { field });
            out.push_str(&value.as_deref().map_or_else(|| "null".to_owned(), text));
        }
        let mut series = |out: &mut String, name: &str, value: &dyn Fn(usize) -> String| {
            key(out, name);
            out.push('[');
            for (b, t) in buckets.iter().enumerate() {
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
