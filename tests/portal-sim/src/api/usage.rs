//! `portals/self/usage` (contract §9): credit and operation series, grouped, in buckets of
//! one period, every value a `[timestamp-string, value-string]` pair in Java number format.

use std::collections::BTreeMap;

use chrono::{DateTime, Months, Utc};
use serde_json::{Value, json};

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

    // group key → (group fields, per-bucket milli-credits, per-bucket counts)
    type Series = (Vec<(String, Value)>, Vec<i64>, Vec<u64>);
    let mut groups: BTreeMap<Vec<String>, Series> = BTreeMap::new();
    let lo = w.org.usage.partition_point(|r| r.day < start);
    let hi = w.org.usage.partition_point(|r| r.day < end);
    for r in &w.org.usage[lo..hi] {
        if f_stype.is_some_and(|s| s != r.stype)
            || f_etype.is_some_and(|e| e != r.etype)
            || f_user.is_some_and(|u| Some(u) != r.username.as_deref())
        {
            continue;
        }
        let user_org = r.username.as_ref().map(|_| w.org.id.clone());
        let fields: Vec<(String, Value)> = groupby
            .iter()
            .map(|g| {
                let v = match g.as_str() {
                    "stype" => json!(r.stype),
                    "etype" => json!(r.etype),
                    "username" => json!(r.username),
                    _ => json!(user_org),
                };
                (
                    if g == "userorgid" {
                        "userOrgId".to_string()
                    } else {
                        g.clone()
                    },
                    v,
                )
            })
            .collect();
        let key: Vec<String> = fields.iter().map(|(_, v)| v.to_string()).collect();
        let entry = groups
            .entry(key)
            .or_insert_with(|| (fields, vec![0; buckets.len()], vec![0; buckets.len()]));
        let b = buckets.partition_point(|&t| t <= r.day).saturating_sub(1);
        entry.1[b] += micros(r.credits);
        entry.2[b] += r.num;
    }
    let data: Vec<Value> = groups
        .into_values()
        .map(|(fields, credits, nums)| {
            let mut g = serde_json::Map::new();
            for (k, v) in fields {
                g.insert(k, v);
            }
            if vars.iter().any(|v| v == "credits") {
                let series: Vec<Value> = buckets
                    .iter()
                    .zip(&credits)
                    .map(|(t, m)| json!([t.to_string(), java_double(from_micros(*m))]))
                    .collect();
                g.insert("credits".into(), Value::Array(series));
            }
            if vars.iter().any(|v| v == "num") {
                let series: Vec<Value> = buckets
                    .iter()
                    .zip(&nums)
                    .map(|(t, n)| json!([t.to_string(), n.to_string()]))
                    .collect();
                g.insert("num".into(), Value::Array(series));
            }
            Value::Object(g)
        })
        .collect();
    Ok(json!({"startTime": start, "endTime": end, "period": period, "data": data}).into())
}
