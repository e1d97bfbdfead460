//! The credits report item (see docs/arcgis.md, "Report items"): create → `processing` →
//! `completed` (or `failed`) → download the CSV (possibly through a redirect to another host)
//! → delete.

use std::collections::BTreeMap;

use chrono::{DateTime, Datelike, Months, NaiveDate, Utc, Weekday};
use serde_json::{Value, json};

use super::{Ctx, auth::require};
use crate::org::{SERVICE_TYPES, from_micros, micros};
use crate::wire::{AgolError, Reply};
use crate::world::{Caller, ReportItem, World};

/// The item type Python's poll asks `itemsstatus` for.
pub const REPORT_ITEM_TYPE: &str = "Administrative Report";

/// Status of a report item at `now_ms`.
pub fn status(w: &World, item: &ReportItem, now_ms: i64) -> &'static str {
    let b = &w.behaviour;
    if b.report_stuck || now_ms < item.created + b.report_processing_ms as i64 {
        "processing"
    } else if b.report_fail {
        "failed"
    } else {
        "completed"
    }
}

fn date_of(ms: i64) -> Option<NaiveDate> {
    DateTime::<Utc>::from_timestamp_millis(ms).map(|d| d.date_naive())
}

fn midnight_ms(d: NaiveDate) -> i64 {
    d.and_hms_opt(0, 0, 0)
        .map(|t| t.and_utc().timestamp_millis())
        .unwrap_or(0)
}

/// `community/users/<me>/report`: validates like the Python client documents (monthly starts
/// on the 1st, weekly on a Sunday or Monday, quarterly on a quarter's first day, in UTC) and
/// creates the item in the caller's content. `startTime` may be any instant of that first UTC
/// day (Esri's own examples pass 16:00; Python sends the time of day it was called at): the
/// period starts at that day's UTC midnight (unverified; see docs/arcgis.md, "Report items").
pub fn create(w: &mut World, ctx: &Ctx, path_user: &str) -> Result<Reply, AgolError> {
    require(&ctx.caller, &["portal:admin:createReports"])?;
    let me = match &ctx.caller {
        Caller::User { username, .. } => username.clone(),
        _ => return Err(AgolError::forbidden()),
    };
    if me != path_user {
        return Err(AgolError::forbidden());
    }
    let p = ctx.params;
    if p.required("reportType")? != "org" {
        return Err(AgolError::bad_param("reportType", "only 'org' is supported"));
    }
    let sub = p.required("reportSubType")?.to_string();
    if sub != "credits" {
        return Err(AgolError::bad_param(
            "reportSubType",
            format!("'{sub}' is not simulated; only 'credits'"),
        ));
    }
    let duration = p.required("timeDuration")?.to_string();
    let start_ms = p.int_or("startTime", i64::MIN)?;
    if start_ms == i64::MIN {
        return Err(AgolError::bad_param(
            "startTime",
            "is required (epoch milliseconds, UTC)",
        ));
    }
    let start = date_of(start_ms).ok_or_else(|| AgolError::bad_param("startTime", "is out of range"))?;
    let end = match duration.as_str() {
        "monthly" if start.day() == 1 => start.checked_add_months(Months::new(1)),
        "quarterly" if start.day() == 1 && start.month0() % 3 == 0 => start.checked_add_months(Months::new(3)),
        "weekly" if matches!(start.weekday(), Weekday::Sun | Weekday::Mon) => Some(start + chrono::Duration::days(7)),
        "monthly" | "quarterly" | "weekly" => {
            return Err(AgolError::bad_param(
                "startTime",
                format!("does not start a {duration} period (UTC)"),
            ));
        }
        other => {
            return Err(AgolError::bad_param(
                "timeDuration",
                format!("'{other}' is not weekly, monthly or quarterly for credits"),
            ));
        }
    }
    .ok_or_else(|| AgolError::bad_param("startTime", "is out of range"))?;
    let id = w.new_id();
    let item = ReportItem {
        title: format!("Credits report {} ({duration})", start.format("%Y-%m-%d")),
        id: id.clone(),
        owner: me,
        sub_type: sub,
        duration,
        start_time: midnight_ms(start),
        end_time: midnight_ms(end),
        created: ctx.now_ms,
        deleted: false,
        downloads: 0,
    };
    w.reports.push(item);
    Ok(json!({"itemId": id}).into())
}

/// Whether a report item is visible yet: new items answer "not found" for
/// `report_item_visible_after_ms` after their creation, as ArcGIS's content index lags.
fn visible(w: &World, item: &ReportItem, now_ms: i64) -> bool {
    !item.deleted
        && now_ms
            >= item
                .created
                .saturating_add(w.behaviour.report_item_visible_after_ms as i64)
}

fn owned_item<'a>(w: &'a World, ctx: &Ctx, owner: Option<&str>, id: &str) -> Result<&'a ReportItem, AgolError> {
    require(&ctx.caller, &[])?;
    let item = w
        .reports
        .iter()
        .find(|r| r.id == id && visible(w, r, ctx.now_ms))
        .ok_or_else(AgolError::item_not_found)?;
    let mine = matches!(&ctx.caller, Caller::User { username, .. } if *username == item.owner);
    if owner.is_some_and(|o| o != item.owner) || !(mine || ctx.caller.has("portal:admin:viewItems")) {
        return Err(AgolError::item_not_found());
    }
    Ok(item)
}

/// `content/users/<owner>/items/<id>/status` (documented poll).
pub fn item_status(w: &World, ctx: &Ctx, owner: &str, id: &str) -> Result<Reply, AgolError> {
    let item = owned_item(w, ctx, Some(owner), id)?;
    let s = status(w, item, ctx.now_ms);
    let mut v = json!({"itemId": item.id, "status": s});
    if s == "failed" {
        v["statusMessage"] = json!("Report generation failed.");
    }
    Ok(v.into())
}

/// `portals/self/itemsstatus` (undocumented; Python polls it once per status value).
pub fn items_status(w: &World, ctx: &Ctx) -> Result<Reply, AgolError> {
    require(&ctx.caller, &[])?;
    let p = ctx.params;
    let want = p.get("status").map(str::to_string);
    let me = match &ctx.caller {
        Caller::User { username, .. } => Some(username.clone()),
        _ => None,
    };
    let mut items: Vec<&ReportItem> = w
        .reports
        .iter()
        .filter(|r| visible(w, r, ctx.now_ms) && Some(&r.owner) == me.as_ref())
        .filter(|r| want.as_deref().is_none_or(|s| s == status(w, r, ctx.now_ms)))
        .collect();
    items.sort_by(|a, b| b.created.cmp(&a.created).then_with(|| b.id.cmp(&a.id)));
    let results: Vec<Value> = items
        .iter()
        .map(|r| json!({"itemId": r.id, "id": r.id, "status": status(w, r, ctx.now_ms), "type": REPORT_ITEM_TYPE, "title": r.title, "owner": r.owner, "created": r.created}))
        .collect();
    Ok(json!({"total": results.len(), "start": 1, "num": results.len(), "nextStart": -1, "results": results}).into())
}

/// `content/items/<id>/data`: an error until completed; then the CSV, directly or through a
/// 302 to the storage host (another host name, so clients must not forward tokens there).
pub fn data(w: &mut World, ctx: &Ctx, id: &str) -> Result<Reply, AgolError> {
    let item = owned_item(w, ctx, None, id)?.clone();
    match status(w, &item, ctx.now_ms) {
        "completed" => {}
        "failed" => return Err(AgolError::new(400, "Report generation failed; the item has no data.")),
        _ => {
            return Err(AgolError::new(
                404,
                "Item data is not available yet: the report is still processing.",
            ));
        }
    }
    if w.behaviour.report_redirect {
        Ok(Reply::Redirect(format!(
            "{}://{}:{}/_storage/{}?sig={}",
            ctx.scheme,
            storage_host(&ctx.host),
            ctx.port,
            item.id,
            storage_sig(&item.id)
        )))
    } else {
        Ok(download(w, &item.id))
    }
}

/// The storage host's name: another name for this machine than the one the client used
/// (`localhost` ⇄ `127.0.0.1`), so the download crosses hosts as a storage redirect does, and
/// both names are covered by the simulator's certificate.
pub fn storage_host(client_host: &str) -> &'static str {
    let name = match client_host.rsplit_once(':') {
        Some((name, port)) if port.chars().all(|c| c.is_ascii_digit()) => name,
        _ => client_host,
    };
    if name.eq_ignore_ascii_case("localhost") {
        "127.0.0.1"
    } else {
        "localhost"
    }
}

/// `content/items/<id>` (GET or POST, as Esri's client hydrates items): the report item's
/// properties, for its owner or a member who may view every item.
pub fn item(w: &World, ctx: &Ctx, id: &str) -> Result<Reply, AgolError> {
    let item = owned_item(w, ctx, None, id)?;
    Ok(json!({
        "id": item.id,
        "owner": item.owner,
        "orgId": w.org.id,
        "created": item.created,
        "modified": item.created,
        "guid": null,
        "name": format!("credits_{}.csv", item.id),
        "title": item.title,
        "type": REPORT_ITEM_TYPE,
        "typeKeywords": [REPORT_ITEM_TYPE, "CSV", "Credits"],
        "description": null,
        "tags": [],
        "snippet": null,
        "thumbnail": null,
        "documentation": null,
        "extent": [],
        "categories": [],
        "spatialReference": null,
        "accessInformation": null,
        "licenseInfo": null,
        "culture": "en-us",
        "properties": null,
        "url": null,
        "proxyFilter": null,
        "access": "private",
        "size": if status(w, item, ctx.now_ms) == "completed" { credits_csv(w, item).len() as i64 } else { -1 },
        "protected": false,
        "ownerFolder": null,
        "numViews": item.downloads,
    })
    .into())
}

/// The signature that stands in for a pre-signed storage URL.
pub fn storage_sig(id: &str) -> String {
    format!("sim-{}", id.chars().rev().collect::<String>())
}

/// Serves the CSV and counts the download.
pub fn download(w: &mut World, id: &str) -> Reply {
    let Some(i) = w.reports.iter().position(|r| r.id == id && !r.deleted) else {
        return AgolError::item_not_found().into();
    };
    w.reports[i].downloads += 1;
    let item = w.reports[i].clone();
    Reply::File {
        content_type: "text/csv",
        filename: format!("credits_{}.csv", item.id),
        body: credits_csv(w, &item).into_bytes(),
    }
}

/// `POST content/users/<owner>/items/<id>/delete`.
pub fn delete(w: &mut World, ctx: &Ctx, owner: &str, id: &str) -> Result<Reply, AgolError> {
    owned_item(w, ctx, Some(owner), id)?;
    if let Some(r) = w.reports.iter_mut().find(|r| r.id == id) {
        r.deleted = true;
    }
    Ok(json!({"success": true, "itemId": id}).into())
}

fn cell(m: i64) -> String {
    if m == 0 {
        String::new()
    } else {
        format!("{}", from_micros(m))
    }
}

/// The report CSV (layout unverified; see docs/arcgis.md, "Report items"): 3 preamble lines,
/// a header `Username,<service labels…>` (`Username,Full Name,…` with
/// `report_full_name_column`), one row per member (blank = 0), a row with an empty username
/// for usage not attributed to a member, and optionally a `Total` row.
pub fn credits_csv(w: &World, item: &ReportItem) -> String {
    let mut per_member: BTreeMap<&str, BTreeMap<&str, i64>> = BTreeMap::new();
    let mut unattributed: BTreeMap<&str, i64> = BTreeMap::new();
    let lo = w.org.usage.partition_point(|r| r.day < item.start_time);
    let hi = w.org.usage.partition_point(|r| r.day < item.end_time);
    for r in &w.org.usage[lo..hi] {
        let bucket = match &r.username {
            Some(u) if w.member(u).is_some() => per_member.entry(u.as_str()).or_default(),
            _ => &mut unattributed,
        };
        *bucket.entry(r.stype.as_str()).or_default() += micros(r.credits);
    }
    let used: Vec<_> = SERVICE_TYPES
        .iter()
        .filter(|s| unattributed.contains_key(s.code) || per_member.values().any(|m| m.contains_key(s.code)))
        .collect();
    let start = date_of(item.start_time).unwrap_or_default();
    let end = date_of(item.end_time - 1).unwrap_or_default();
    let mut out = String::new();
    out.push_str("Credits Report\n");
    out.push_str(&format!("\"Organization: {} ({})\"\n", w.org.name, w.org.id));
    out.push_str(&format!(
        "Period: {} to {} (UTC)\n",
        start.format("%Y-%m-%d"),
        end.format("%Y-%m-%d")
    ));
    let full_name = w.behaviour.report_full_name_column;
    out.push_str(if full_name { "Username,Full Name" } else { "Username" });
    for s in &used {
        out.push(',');
        out.push_str(s.label);
    }
    out.push('\n');
    let mut totals = vec![0i64; used.len()];
    let mut row = |out: &mut String, user: &str, name: &str, values: Option<&BTreeMap<&str, i64>>| {
        out.push_str(user);
        if full_name {
            out.push_str(",\"");
            out.push_str(&name.replace('"', "\"\""));
            out.push('"');
        }
        for (i, s) in used.iter().enumerate() {
            let m = values.and_then(|v| v.get(s.code)).copied().unwrap_or(0);
            totals[i] += m;
            out.push(',');
            out.push_str(&cell(m));
        }
        out.push('\n');
    };
    for m in &w.org.members {
        row(&mut out, &m.username, &m.full_name, per_member.get(m.username.as_str()));
    }
    if !unattributed.is_empty() {
        row(
            &mut out,
            "",
            "Organization (not attributed to a member)",
            Some(&unattributed),
        );
    }
    if w.behaviour.report_total_row {
        out.push_str(if full_name { "Total," } else { "Total" });
        for t in &totals {
            out.push(',');
            out.push_str(&cell(*t));
        }
        out.push('\n');
    }
    out
}
