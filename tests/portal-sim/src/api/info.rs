//! What a client asks before and right after signing in: the API version (`sharing/rest`),
//! how the portal signs callers in (`info`), and the org's roles (`portals/self/roles`). See
//! docs/arcgis.md, "What the simulator also answers, for Esri's own client".

use serde_json::{Value, json};

use super::{Ctx, auth::require};
use crate::wire::{AgolError, Reply};
use crate::world::World;

/// The sharing API version the simulator reports, here and as `portals/self.currentVersion`
/// (ArcGIS Online numbers its releases `<year>.<n>`; Esri's client refuses `send_notification`
/// below 6.4).
pub const CURRENT_VERSION: &str = "2026.2";

/// `GET sharing/rest?f=json`: the version, answered with or without a token.
pub fn root() -> Reply {
    json!({"currentVersion": CURRENT_VERSION}).into()
}

/// `GET sharing/rest/info?f=json`: token-based security and where tokens come from, answered
/// with or without a token. URLs name the host the client used.
pub fn info(ctx: &Ctx) -> Reply {
    let base = format!("{}://{}", ctx.scheme, ctx.host);
    json!({
        "owningSystemUrl": base,
        "authInfo": {
            "tokenServicesUrl": format!("{base}/sharing/rest/generateToken"),
            "isTokenBasedSecurity": true,
        },
    })
    .into()
}

/// `portals/self/roles` (`start` 1-based, `num` ≤ 100, default 10): the roles that carry a
/// `roleId` (custom roles and the named built-in ones such as Viewer), as members of the org
/// see them. Privileges are not listed here: a user's own object carries them.
pub fn roles(w: &World, ctx: &Ctx) -> Result<Reply, AgolError> {
    require(&ctx.caller, &[])?;
    let p = ctx.params;
    let start = p.int_or("start", 1)?;
    if start < 1 {
        return Err(AgolError::bad_param("start", "must be 1 or more"));
    }
    let num = p.int_or("num", 10)?.clamp(0, 100);
    let all: Vec<Value> = w
        .org
        .roles
        .iter()
        .filter(|r| r.has_role_id)
        .map(|r| {
            json!({
                "id": r.id,
                "name": r.name,
                "description": r.name,
                "created": w.org.budget_period_start,
                "modified": w.org.budget_period_start,
            })
        })
        .collect();
    let from = (start as usize - 1).min(all.len());
    let to = (from + num as usize).min(all.len());
    let next = if to < all.len() { to as i64 + 1 } else { -1 };
    Ok(json!({
        "total": all.len(),
        "start": start,
        "num": to - from,
        "nextStart": next,
        "roles": all[from..to],
    })
    .into())
}
