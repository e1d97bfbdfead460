//! Sign-in: `generateToken`, `oauth2/token`, and checking the token on every call.

use serde_json::json;

use super::Ctx;
use crate::wire::{AgolError, Reply};
use crate::world::{Caller, TokenInfo, World};

/// The server maximum token lifetime when the org says `-1` (two weeks).
const MAX_TOKEN_MINUTES: i64 = 20_160;

/// Resolves the token sent with a call (form/query `token`, or `X-Esri-Authorization: Bearer`)
/// into a caller: 498 when it is unknown, expired, or bound to another referer.
pub fn authenticate(w: &World, token: Option<&str>, referer: Option<&str>, now_ms: i64) -> Result<Caller, AgolError> {
    let Some(token) = token.filter(|t| !t.is_empty()) else {
        return Ok(Caller::Anonymous);
    };
    let info = w.tokens.get(token).ok_or_else(AgolError::invalid_token)?;
    let expired = info.expires.is_some_and(|e| e <= now_ms)
        || (info.expires.is_some() && info.issued_seq < w.tokens_invalid_before);
    if expired {
        return Err(AgolError::invalid_token());
    }
    if let Some(bound) = &info.referer
        && referer != Some(bound.as_str())
    {
        return Err(AgolError::invalid_token());
    }
    Ok(info.caller.clone())
}

/// Demands a signed-in caller holding every privilege in `needed`: 499 without a token, 403
/// without the privilege.
pub fn require(caller: &Caller, needed: &[&str]) -> Result<(), AgolError> {
    if *caller == Caller::Anonymous {
        return Err(AgolError::token_required());
    }
    if needed.iter().all(|p| caller.has(p)) {
        Ok(())
    } else {
        Err(AgolError::forbidden())
    }
}

fn issue(w: &mut World, caller: Caller, minutes: i64, referer: Option<String>, ctx: &Ctx) -> (String, i64) {
    let token = format!("simtok.{}.{}", ctx.seq, w.new_id());
    let expires = ctx.now_ms + minutes * 60_000;
    w.tokens.insert(
        token.clone(),
        TokenInfo {
            caller,
            expires: Some(expires),
            referer,
            issued_seq: ctx.seq,
        },
    );
    (token, expires)
}

fn lifetime(w: &World, requested: i64) -> i64 {
    let max = match w.org.max_token_expiration_minutes {
        m if m <= 0 => MAX_TOKEN_MINUTES,
        m => m,
    };
    requested.clamp(1, max)
}

/// `POST generateToken` (see docs/arcgis.md, "Signing in"): username/password → `{token,
/// expires (epoch ms), ssl}`.
pub fn generate_token(w: &mut World, ctx: &Ctx) -> Reply {
    if w.behaviour.require_https_for_token && !ctx.tls {
        return AgolError {
            message_code: Some("GWM_0005"),
            ..AgolError::new(403, "SSL Required")
        }
        .into();
    }
    let p = ctx.params;
    let (username, password) = match (p.get("username"), p.get("password")) {
        (Some(u), Some(pw)) if !u.is_empty() && !pw.is_empty() => (u.to_string(), pw.to_string()),
        _ => {
            return AgolError {
                details: vec!["Invalid username or password.".into()],
                ..AgolError::new(400, "Unable to generate token.")
            }
            .into();
        }
    };
    let referer = match p.get("client").unwrap_or("referer") {
        "referer" => match p.get("referer").filter(|r| !r.is_empty()) {
            Some(r) => Some(r.to_string()),
            None => return AgolError::bad_param("referer", "is required when client=referer").into(),
        },
        "requestip" | "ip" => None,
        other => return AgolError::bad_param("client", format!("'{other}' is not referer, ip or requestip")).into(),
    };
    let minutes = match p.int_or("expiration", 60) {
        Ok(m) => lifetime(w, m),
        Err(e) => return e.into(),
    };
    if let Some(limit) = w.behaviour.lockout_after
        && w.failed_logins.get(&username).copied().unwrap_or(0) >= limit
    {
        return AgolError {
            details: vec!["Too many invalid attempts. Please try again later.".into()],
            ..AgolError::new(400, "Unable to generate token.")
        }
        .into();
    }
    let ok = w
        .org
        .credentials
        .iter()
        .any(|c| c.username == username && c.password == password);
    let member = w.member(&username).cloned();
    let (Some(m), true) = (member, ok) else {
        *w.failed_logins.entry(username).or_default() += 1;
        return AgolError {
            details: vec!["Invalid username or password.".into()],
            ..AgolError::new(400, "Unable to generate token.")
        }
        .into();
    };
    if m.disabled {
        return AgolError {
            details: vec!["This account has been disabled.".into()],
            ..AgolError::new(400, "Unable to generate token.")
        }
        .into();
    }
    w.failed_logins.remove(&username);
    let caller = Caller::User {
        username: m.username.clone(),
        privileges: w.role(&m).privileges.clone(),
    };
    let (token, expires) = issue(w, caller, minutes, referer, ctx);
    json!({"token": token, "expires": expires, "ssl": true}).into()
}

/// `oauth2/token` with `grant_type=client_credentials` (see docs/arcgis.md, "Signing in"):
/// `{access_token, expires_in (seconds)}`, app privileges only, never a `user`.
pub fn oauth_token(w: &mut World, ctx: &Ctx) -> Reply {
    let p = ctx.params;
    let invalid = |code: &str, msg: &str| -> Reply {
        json!({"error": {"code": 400, "error": code, "error_description": msg, "message": msg, "details": []}}).into()
    };
    match p.get("grant_type") {
        Some("client_credentials") => {}
        Some(_) => {
            return invalid(
                "unsupported_grant_type",
                "Unsupported grant type; only client_credentials is simulated.",
            );
        }
        None => return invalid("invalid_request", "grant_type is required"),
    }
    let id = p.get("client_id").unwrap_or("");
    let Some(app) = w.org.apps.iter().find(|a| a.client_id == id).cloned() else {
        return json!({"error": {"code": 400, "messageCode": "GWM_0007", "error": "invalid_client", "error_description": "Invalid client_id", "message": "Invalid client_id", "details": []}}).into();
    };
    if p.get("client_secret") != Some(app.client_secret.as_str()) {
        return invalid("invalid_client", "Invalid client_secret");
    }
    let minutes = match p.int_or("expiration", 120) {
        Ok(m) => lifetime(w, m),
        Err(e) => return e.into(),
    };
    let caller = Caller::App {
        client_id: app.client_id.clone(),
        privileges: app.privileges.clone(),
    };
    let (token, _) = issue(w, caller, minutes, None, ctx);
    json!({"access_token": token, "expires_in": minutes * 60}).into()
}
