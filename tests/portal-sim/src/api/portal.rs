//! `portals/self` and `portals/self/update`: the org's properties, as seen by the caller.

use serde_json::{Value, json};

use super::{Ctx, auth::require};
use crate::wire::{AgolError, Reply, jnum};
use crate::world::{Caller, World};

/// `portals/self` (see docs/arcgis.md, "Org properties (`portals/self`)"): anonymous callers
/// get the public view (no `user`, no credits, no contacts); app tokens and API keys get
/// `appInfo` and no `user`; members see credits only with an admin privilege.
pub fn portal_self(w: &World, ctx: &Ctx) -> Reply {
    let o = &w.org;
    let mut v = json!({
        "id": o.id,
        "name": o.name,
        "urlKey": o.url_key,
        "customBaseUrl": "maps.arcgis.com",
        "portalHostname": format!("{}.maps.arcgis.com", o.url_key),
        "portalName": "ArcGIS Online",
        "portalMode": "multitenant",
        "isPortal": false,
        "allSSL": true,
        "currentVersion": super::info::CURRENT_VERSION,
        "culture": "en",
        "region": "WO",
        "access": "private",
        "maxTokenExpirationMinutes": o.max_token_expiration_minutes,
    });
    let admin = ctx.caller.has("portal:admin:viewUsers") || ctx.caller.has("portal:admin:manageCredits");
    match &ctx.caller {
        Caller::Anonymous => return v.into(),
        Caller::User { username, .. } => {
            if let Some(m) = w.member(username) {
                v["user"] = w.user_json(m, true, true);
            }
        }
        Caller::App { client_id, privileges } => {
            v["appInfo"] =
                json!({"appId": client_id, "appOwner": "steward_admin", "orgId": o.id, "privileges": privileges});
        }
    }
    if admin {
        v["availableCredits"] = jnum(o.available_credits);
        // An empty object here, as Esri's own mock of this answer shows; the subscription's
        // figures belong to `portals/self/subscriptionInfo`, which credit-steward does not read.
        v["subscriptionInfo"] = json!({});
        v["contacts"] = json!(o.contacts);
        v["defaultUserCreditAssignment"] = jnum(o.default_user_credit_assignment);
        if let Some(enabled) = o.credit_assignments {
            v["creditAssignments"] = json!(if enabled { "enabled" } else { "disabled" });
        }
    }
    v.into()
}

/// `POST portals/self/update`: `creditAssignments`, `defaultUserCreditAssignment`, `contacts`
/// (JSON array of usernames). Budgeting cannot be enabled with a balance ≤ 0 (see
/// docs/arcgis.md, "Org properties (`portals/self`)").
pub fn update(w: &mut World, ctx: &Ctx) -> Result<Reply, AgolError> {
    let p = ctx.params;
    require(&ctx.caller, &["portal:admin:manageCredits"])?;
    // Validate everything before changing anything.
    let assignments = match p.get("creditAssignments").map(str::trim) {
        None => None,
        Some("enabled") => Some(true),
        Some("disabled") => Some(false),
        Some(other) => {
            return Err(AgolError::bad_param(
                "creditAssignments",
                format!("'{other}' is not enabled or disabled"),
            ));
        }
    };
    if assignments == Some(true) && w.org.available_credits <= 0.0 {
        return Err(AgolError::new(
            400,
            "Credit budgeting cannot be enabled: the organization has no credits left. Purchase additional credits first.",
        ));
    }
    let default = match p.get("defaultUserCreditAssignment") {
        None => None,
        Some(v) => match v.trim().parse::<f64>() {
            Ok(x) if x == -1.0 || (x >= 0.0 && x.is_finite()) => Some(x),
            _ => {
                return Err(AgolError::bad_param(
                    "defaultUserCreditAssignment",
                    "must be -1 or a number >= 0",
                ));
            }
        },
    };
    let contacts = match p.get("contacts") {
        None => None,
        Some(v) => {
            let list: Vec<String> = serde_json::from_str::<Value>(v)
                .ok()
                .and_then(|j| serde_json::from_value(j).ok())
                .ok_or_else(|| AgolError::bad_param("contacts", "must be a JSON array of usernames"))?;
            if !ctx.caller.has("portal:admin:manageWebsite") {
                return Err(AgolError::forbidden());
            }
            if let Some(u) = list.iter().find(|u| w.member(u).is_none()) {
                return Err(AgolError::bad_param(
                    "contacts",
                    format!("'{u}' is not a member of this organization"),
                ));
            }
            Some(list)
        }
    };
    if let Some(a) = assignments {
        w.org.credit_assignments = Some(a);
    }
    if let Some(d) = default {
        w.org.default_user_credit_assignment = d;
    }
    if let Some(c) = contacts {
        w.org.contacts = c;
    }
    Ok(json!({"success": true, "id": w.org.id}).into())
}
