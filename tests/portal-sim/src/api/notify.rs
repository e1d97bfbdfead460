//! `createNotification` (see docs/arcgis.md, "Notifications (`createNotification`)"): at most
//! 25 usernames, comma-separated (a JSON array is accepted too, as clients differ).

use serde_json::json;

use super::{Ctx, auth::require};
use crate::wire::{AgolError, Reply};
use crate::world::{Notification, World};

/// At most this many users per call.
pub const MAX_USERS: usize = 25;

/// `POST createNotification`: records who was reached and who could not be (disabled, no
/// email, not a member).
pub fn create(w: &mut World, ctx: &Ctx) -> Result<Reply, AgolError> {
    require(&ctx.caller, &["portal:admin:viewUsers"])?;
    let p = ctx.params;
    let channel = p.required("notificationChannelType")?.to_string();
    if !matches!(channel.as_str(), "email" | "builtin" | "push") {
        return Err(AgolError::bad_param(
            "notificationChannelType",
            format!("'{channel}' is not email, builtin or push"),
        ));
    }
    let subject = p.required("subject")?.to_string();
    let message = p.required("message")?.to_string();
    let raw = p.required("users")?.trim();
    let users: Vec<String> = if raw.starts_with('[') {
        serde_json::from_str(raw)
            .map_err(|_| AgolError::bad_param("users", "is neither comma-separated nor a JSON array"))?
    } else {
        raw.split(',')
            .map(|u| u.trim().to_string())
            .filter(|u| !u.is_empty())
            .collect()
    };
    if users.is_empty() {
        return Err(AgolError::bad_param("users", "must name at least one user"));
    }
    if users.len() > MAX_USERS {
        return Err(AgolError {
            message_code: Some("ORG_9001"),
            ..AgolError::bad_param(
                "users",
                format!("{} users; at most {MAX_USERS} per notification", users.len()),
            )
        });
    }
    let mut delivered = Vec::new();
    let mut undeliverable = Vec::new();
    for u in &users {
        match w.member(u) {
            None => undeliverable.push((u.clone(), "not a member".to_string())),
            Some(m) if m.disabled => undeliverable.push((u.clone(), "disabled".into())),
            Some(m) if channel == "email" => match m.email.as_deref().filter(|e| !e.is_empty()) {
                Some(e) => delivered.push(e.to_string()),
                None => undeliverable.push((u.clone(), "no email address".into())),
            },
            Some(m) => delivered.push(m.username.clone()),
        }
    }
    w.notifications.push(Notification {
        seq: ctx.seq,
        channel,
        subject,
        message,
        users,
        delivered_to: delivered,
        undeliverable,
    });
    Ok(json!({"success": true}).into())
}
