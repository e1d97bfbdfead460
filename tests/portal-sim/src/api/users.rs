//! Members: the org listing, the two fuzzy searches and the exact lookup (see docs/arcgis.md,
//! "Members: listing and exact lookup" and "Endpoints").

use std::cmp::Ordering;

use serde_json::{Value, json};

use super::{Ctx, auth::require};
use crate::faults::{CappedTotal, PastCap, RoleFilter};
use crate::org::MemberRecord;
use crate::wire::{AgolError, Params, Reply, to_wire_text};
use crate::world::{Caller, WireUser, World};

/// Search indexes count accurately up to this many results and serve no more (see
/// docs/arcgis.md, "Endpoints").
pub const SEARCH_CAP: usize = 10_000;
/// `num` is capped at this (see docs/arcgis.md, "Members: listing and exact lookup").
pub const MAX_NUM: i64 = 100;

/// `start` (1-based) and `num` (default 10, capped at 100).
fn paging(p: &Params) -> Result<(usize, usize), AgolError> {
    let start = p.int_or("start", 1)?;
    if start < 1 {
        return Err(AgolError::bad_param("start", "is 1-based and must be >= 1"));
    }
    let num = p.int_or("num", 10)?;
    if num < 0 {
        return Err(AgolError::bad_param("num", "must be >= 0"));
    }
    Ok((start as usize, num.min(MAX_NUM) as usize))
}

fn sort_members(list: &mut [&MemberRecord], p: &Params) -> Result<(), AgolError> {
    let field = p.get("sortField").unwrap_or("username").to_ascii_lowercase();
    let desc = match p.get("sortOrder").map(str::to_ascii_lowercase).as_deref() {
        None | Some("") | Some("asc") => false,
        Some("desc") => true,
        Some(o) => return Err(AgolError::bad_param("sortOrder", format!("'{o}' is not asc or desc"))),
    };
    let key: fn(&MemberRecord, &MemberRecord) -> Ordering = match field.as_str() {
        "username" | "" => |a, b| a.username.cmp(&b.username),
        "fullname" => |a, b| a.full_name.to_lowercase().cmp(&b.full_name.to_lowercase()),
        "created" => |a, b| a.created.cmp(&b.created),
        "modified" => |a, b| a.modified.cmp(&b.modified),
        "lastlogin" => |a, b| a.last_login.cmp(&b.last_login),
        "level" => |a, b| a.level.cmp(&b.level),
        "role" => |a, b| a.role_id.cmp(&b.role_id),
        // Nobody has multi-factor authentication here: the username decides.
        "mfaenabled" => |_, _| Ordering::Equal,
        other => {
            return Err(AgolError::bad_param(
                "sortField",
                format!("'{other}' is not a sortable field"),
            ));
        }
    };
    list.sort_by(|a, b| {
        let o = key(a, b).then_with(|| a.username.cmp(&b.username));
        if desc { o.reverse() } else { o }
    });
    Ok(())
}

fn caller_sees_private(w: &World, caller: &Caller, m: &MemberRecord) -> bool {
    match caller {
        Caller::User { username, .. } if *username == m.username => true,
        _ => caller.is_org_admin_viewer() && m.org_id == w.org.id,
    }
}

/// `portals/self/users`: every member, paged, with no 10,000 cap unless the behaviour switch
/// `org_users_cap` sets one (none is documented for the listing; see docs/arcgis.md, "Members:
/// listing and exact lookup"). Filters `role` and `userLicenseType` (both exact; what `role`
/// selects follows `org_users_role_filter`), sorted by `sortField`/`sortOrder`; `total` counts
/// the members the filters select.
pub fn list(w: &World, ctx: &Ctx) -> Result<Reply, AgolError> {
    require(&ctx.caller, &[])?;
    let p = ctx.params;
    let (start, num) = paging(p)?;
    p.bool_or("excludeSystemUsers", false)?;
    let role = p.get("role").filter(|r| !r.is_empty());
    let user_type = p.get("userLicenseType").filter(|t| !t.is_empty());
    let selected =
        |m: &MemberRecord| role.is_none_or(|r| role_selects(w, m, r)) && user_type.is_none_or(|t| m.user_type == t);
    let default_order = p.get("sortField").is_none_or(|f| f.eq_ignore_ascii_case("username"))
        && p.get("sortOrder").is_none_or(|o| o.eq_ignore_ascii_case("asc"));
    let window = start - 1..start - 1 + num;
    // Members are kept sorted by username, so the common listing needs no copy and no sort (a
    // 25,000-member listing stays at the paging floor instead of O(N log N) per page), and a
    // filtered one the selection its filters made the first time (`World::listing`).
    let (mut page, matched): (Vec<&MemberRecord>, usize) = if !default_order {
        let mut list: Vec<&MemberRecord> = w.org.members.iter().filter(|m| selected(m)).collect();
        sort_members(&mut list, p)?;
        let end = window.end.min(list.len());
        (list.get(window.start..end).unwrap_or(&[]).to_vec(), list.len())
    } else if role.is_none() && user_type.is_none() {
        let members = &w.org.members;
        let end = window.end.min(members.len());
        (
            members.get(window.start..end).unwrap_or(&[]).iter().collect(),
            members.len(),
        )
    } else {
        let selection = w.listing((role, user_type), selected);
        let end = window.end.min(selection.len());
        let page = selection.get(window.start..end).unwrap_or(&[]);
        (page.iter().map(|&i| &w.org.members[i]).collect(), selection.len())
    };
    // A cap serves the first `at` matches only (see `ListingCap`).
    let (served, total) = match w.behaviour.org_users_cap {
        None => (matched, matched),
        Some(cap) => {
            if start > cap.at && cap.past == PastCap::Error {
                return Err(AgolError::bad_param(
                    "start",
                    format!("results past the first {} cannot be retrieved", cap.at),
                ));
            }
            let served = matched.min(cap.at);
            let total = match cap.total {
                CappedTotal::Cap => served,
                CappedTotal::True => matched,
            };
            (served, total)
        }
    };
    page.truncate(served.saturating_sub(window.start));
    let next = if window.end < served && num > 0 {
        (start + num) as i64
    } else {
        -1
    };
    Ok(page_json(w, ctx, &page, start, num, total, next))
}

/// Whether `role=<r>` selects `m`: its role exactly (a built-in name, or a custom role's id),
/// or with [`RoleFilter::Base`] also the base role a custom role is built on.
fn role_selects(w: &World, m: &MemberRecord, r: &str) -> bool {
    m.role_id == r || (w.behaviour.org_users_role_filter == RoleFilter::Base && w.role(m).base == r)
}

/// One page of the listing: `num` echoes the request, `nextStart` is -1 on the last page. The
/// users are copied out under the world lock and rendered after it is released.
fn page_json(w: &World, ctx: &Ctx, page: &[&MemberRecord], start: usize, num: usize, total: usize, next: i64) -> Reply {
    let users = w.users_view(
        page,
        |m| caller_sees_private(w, &ctx.caller, m),
        w.behaviour.list_includes_credits,
    );
    Reply::Deferred(Box::new(move || {
        #[derive(serde::Serialize)]
        #[serde(rename_all = "camelCase")]
        struct WirePage<'a> {
            total: usize,
            start: usize,
            num: usize,
            next_start: i64,
            users: Vec<WireUser<'a>>,
        }
        Reply::JsonText(to_wire_text(&WirePage {
            total,
            start,
            num,
            next_start: next,
            users: users.wire(),
        }))
    }))
}

/// One parsed search query: `field:value` qualifiers and free terms, all required (AND).
struct Query {
    account: Option<String>,
    fields: Vec<(String, String)>,
    terms: Vec<String>,
}

fn parse_query(q: &str) -> Query {
    let mut query = Query {
        account: None,
        fields: Vec::new(),
        terms: Vec::new(),
    };
    for tok in q.split_whitespace() {
        // `*` matches everything, as in the real index's query syntax.
        if tok.eq_ignore_ascii_case("AND") || tok == "*" {
            continue;
        }
        match tok.split_once(':') {
            Some((k, v)) if k.eq_ignore_ascii_case("accountid") || k.eq_ignore_ascii_case("orgid") => {
                query.account = Some(v.trim_matches('"').to_string());
            }
            Some((k, v)) => query
                .fields
                .push((k.to_ascii_lowercase(), v.trim_matches('"').to_lowercase())),
            None => query.terms.push(tok.trim_matches('"').to_lowercase()),
        }
    }
    query
}

fn field_value(m: &MemberRecord, field: &str) -> Option<String> {
    Some(match field {
        "username" => m.username.to_lowercase(),
        "fullname" => m.full_name.to_lowercase(),
        "firstname" => m.first_name.to_lowercase(),
        "lastname" => m.last_name.to_lowercase(),
        "email" => m.email.clone().unwrap_or_default().to_lowercase(),
        "role" => m.role_id.to_lowercase(),
        "usertype" | "userlicensetype" => m.user_type.to_lowercase(),
        _ => return None,
    })
}

/// Fuzzy match: every free term is a substring of the username, full name or email, and every
/// qualifier a substring of its field — so `jdoe` also finds `jdoe2` and `jdoe_admin`.
fn fuzzy_match(m: &MemberRecord, q: &Query) -> bool {
    let hay = [
        m.username.to_lowercase(),
        m.full_name.to_lowercase(),
        m.email.clone().unwrap_or_default().to_lowercase(),
    ];
    q.terms.iter().all(|t| hay.iter().any(|h| h.contains(t.as_str())))
        && q.fields
            .iter()
            .all(|(f, v)| field_value(m, f).is_some_and(|fv| fv.contains(v.as_str())))
}

/// `filter=username:"jdoe"`: exact keyword match, unlike the fuzzy `q` (see docs/arcgis.md,
/// "Endpoints").
fn exact_filter(m: &MemberRecord, filter: &str) -> Result<bool, AgolError> {
    for clause in filter.split(" AND ").map(str::trim).filter(|c| !c.is_empty()) {
        let (k, v) = clause
            .split_once(':')
            .ok_or_else(|| AgolError::bad_param("filter", format!("'{clause}' is not field:\"value\"")))?;
        let v = v.trim().trim_matches('"').to_lowercase();
        let fv = field_value(m, &k.trim().to_ascii_lowercase())
            .ok_or_else(|| AgolError::bad_param("filter", format!("'{k}' is not a filterable field")))?;
        if fv != v {
            return Ok(false);
        }
    }
    Ok(true)
}

/// The two searches: `community/users` (any org unless `accountid:` narrows it; `q` required)
/// and `portals/self/users/search` (own org; `q` optional, `filter` exact). Both cap `total` at
/// 10,000 and serve nothing past it; hidden usernames model index lag.
pub fn search(w: &World, ctx: &Ctx, org_scoped: bool) -> Result<Reply, AgolError> {
    let p = ctx.params;
    if org_scoped {
        require(&ctx.caller, &[])?;
    }
    let q = p.get("q").unwrap_or("").trim();
    if !org_scoped && q.is_empty() {
        return Err(AgolError::bad_param("q", "is required"));
    }
    let (start, num) = paging(p)?;
    let query = parse_query(q);
    let filter = p.get("filter").unwrap_or("").trim();
    let external = if org_scoped {
        &w.org.external_users[..0]
    } else {
        &w.org.external_users[..]
    };
    let pool = w.org.members.iter().chain(external.iter());
    let mut hits = Vec::new();
    for m in pool {
        // Index lag, and profiles the caller may not see (private, or another org's org-only).
        if w.behaviour.search_hidden.contains(&m.username)
            || !(caller_sees_private(w, &ctx.caller, m) || visible_to(w, &ctx.caller, m))
        {
            continue;
        }
        if query.account.as_ref().is_some_and(|a| *a != m.org_id) || !fuzzy_match(m, &query) {
            continue;
        }
        if !filter.is_empty() && !exact_filter(m, filter)? {
            continue;
        }
        hits.push(m);
    }
    sort_members(&mut hits, p)?;
    let total = hits.len().min(SEARCH_CAP);
    let from = (start - 1).min(total);
    let end = (start - 1 + num).min(total);
    let results: Vec<Value> = hits[from..end]
        .iter()
        .map(|m| w.user_json(m, caller_sees_private(w, &ctx.caller, m), true))
        .collect();
    let next = if end < total && num > 0 { (end + 1) as i64 } else { -1 };
    Ok(json!({"query": q, "total": total, "start": start, "num": num, "nextStart": next, "results": results}).into())
}

/// `community/users/<username|id>`: exact, by username or id (see docs/arcgis.md, "Members:
/// listing and exact lookup"). Who may not see a profile (a private one, or an org-only one
/// from outside that org) gets the same answer as for a name nobody has; everyone else sees
/// the public view, and the user and the org's administrators the private one.
pub fn user(w: &World, ctx: &Ctx, key: &str) -> Result<Reply, AgolError> {
    let inaccessible = || AgolError {
        details: vec![],
        ..AgolError::new(400, "User does not exist or is inaccessible.")
    };
    let m = w
        .member_by_name_or_id(key)
        .or_else(|| w.org.external_users.iter().find(|u| u.username == key || u.id == key))
        .ok_or_else(inaccessible)?;
    let private = caller_sees_private(w, &ctx.caller, m);
    if !private && !visible_to(w, &ctx.caller, m) {
        return Err(inaccessible());
    }
    Ok(w.user_json(m, private, true).into())
}

/// Whether `caller` may see `m`'s public profile: `public` profiles to anyone, `org` ones to
/// members of the same org (apps and keys act for this org), `private` ones to nobody else.
fn visible_to(w: &World, caller: &Caller, m: &MemberRecord) -> bool {
    match m.access.as_str() {
        "public" => true,
        "org" => !matches!(caller, Caller::Anonymous) && m.org_id == w.org.id,
        _ => false,
    }
}
