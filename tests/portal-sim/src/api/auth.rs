//! Sign-in: `generateToken`, `oauth2/token`, and checking the token on every call.

use std::collections::HashMap;

use axum::{
    body::Body,
    http::{HeaderValue, header},
    response::Response,
};
use serde_json::{Value, json};

use super::Ctx;
use crate::wire::{AgolError, Format, Reply, render};
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
    let caller = match check_password(w, &username, &password) {
        Ok(c) => c,
        Err(why) => {
            return AgolError {
                details: vec![why.into()],
                ..AgolError::new(400, "Unable to generate token.")
            }
            .into();
        }
    };
    let (token, expires) = issue(w, caller, minutes, referer, ctx);
    json!({"token": token, "expires": expires, "ssl": true}).into()
}

/// Checks a username and password the way every sign-in does (lockout after repeated
/// failures, disabled accounts refused): the caller, or the message ArcGIS shows.
fn check_password(w: &mut World, username: &str, password: &str) -> Result<Caller, &'static str> {
    if let Some(limit) = w.behaviour.lockout_after
        && w.failed_logins.get(username).copied().unwrap_or(0) >= limit
    {
        return Err("Too many invalid attempts. Please try again later.");
    }
    let ok = w
        .org
        .credentials
        .iter()
        .any(|c| c.username == username && c.password == password);
    let member = w.member(username).cloned();
    let (Some(m), true) = (member, ok) else {
        *w.failed_logins.entry(username.to_string()).or_default() += 1;
        return Err("Invalid username or password.");
    };
    if m.disabled {
        return Err("This account has been disabled.");
    }
    w.failed_logins.remove(username);
    Ok(Caller::User {
        username: m.username.clone(),
        privileges: w.role(&m).privileges.clone(),
    })
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
        Some("authorization_code") => return redeem_code(w, ctx),
        Some(_) => {
            return invalid(
                "unsupported_grant_type",
                "Unsupported grant type; only client_credentials and authorization_code are simulated.",
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

/// Esri's own registered apps, valid on every ArcGIS Online org: what Esri's Python client
/// (`pythonapi`, falling back to `arcgisonline`) and ArcGIS Pro sign in as.
const BUILT_IN_CLIENTS: &[(&str, &str)] = &[
    ("pythonapi", "ArcGIS API for Python"),
    ("arcgisonline", "ArcGIS Online"),
    ("arcgispro", "ArcGIS Pro"),
];

/// The out-of-band redirect: the code is shown on a page instead of sent anywhere.
const OOB: &str = "urn:ietf:wg:oauth:2.0:oob";

/// How long an `oauth_state` or an authorization code stays usable.
const OAUTH_STATE_MS: i64 = 10 * 60_000;

/// Browser sign-ins in progress and authorization codes not yet redeemed.
#[derive(Debug, Clone, Default)]
pub struct OAuthSessions {
    /// `oauth_state` → what `oauth2/authorize` was asked.
    pending: HashMap<String, Authorization>,
    /// Authorization code → who signed in, until `oauth2/token` redeems it (once).
    codes: HashMap<String, CodeGrant>,
}

/// One `oauth2/authorize` request, waiting for the sign-in form.
#[derive(Debug, Clone)]
struct Authorization {
    client_id: String,
    app_title: String,
    /// `token` (implicit: the token comes back in the redirect's fragment) or `code`.
    response_type: String,
    redirect_uri: String,
    /// The client's `state`, echoed back so it can match the answer to its request.
    state: Option<String>,
    /// Token lifetime asked for, minutes (already clamped).
    minutes: i64,
    created: i64,
}

/// An authorization code issued by a sign-in.
#[derive(Debug, Clone)]
struct CodeGrant {
    caller: Caller,
    client_id: String,
    redirect_uri: String,
    minutes: i64,
    created: i64,
}

/// Whether `redirect_uri` may receive a sign-in's answer: the out-of-band URN, or an HTTPS
/// URL on the portal's own host (the one the client used) or on www.arcgis.com (unverified;
/// see docs/arcgis.md, "Unverified behaviour and the switches that cover it").
fn redirect_allowed(uri: &str, host: &str) -> bool {
    if uri == OOB {
        return true;
    }
    let Some(rest) = uri.strip_prefix("https://") else {
        return false;
    };
    let authority = rest.split(['/', '?', '#']).next().unwrap_or("");
    authority.eq_ignore_ascii_case(host) || authority.eq_ignore_ascii_case("www.arcgis.com")
}

/// `GET oauth2/authorize` (`client_id`, `response_type` = `token`|`code`, `redirect_uri`,
/// optional `state` and `expiration` in minutes): the sign-in page, whose `var oAuthInfo`
/// carries the `oauth_state` the form posts back to `/sharing/oauth2/signin`.
pub fn authorize(w: &mut World, ctx: &Ctx) -> Result<Reply, AgolError> {
    let p = ctx.params;
    let client_id = p.get("client_id").unwrap_or("");
    let app_title = match BUILT_IN_CLIENTS.iter().find(|(id, _)| *id == client_id) {
        Some((_, title)) => title.to_string(),
        None if w.org.apps.iter().any(|a| a.client_id == client_id) => client_id.to_string(),
        None => return Err(AgolError::new(400, "Invalid client_id")),
    };
    let response_type = match p.get("response_type").unwrap_or("") {
        t @ ("token" | "code") => t.to_string(),
        other => {
            return Err(AgolError::bad_param(
                "response_type",
                format!("'{other}' is not token or code"),
            ));
        }
    };
    let redirect_uri = p.get("redirect_uri").unwrap_or("").to_string();
    if !redirect_allowed(&redirect_uri, &ctx.host) {
        return Err(AgolError::new(400, "Invalid redirect_uri"));
    }
    let minutes = lifetime(w, p.int_or("expiration", 120)?);
    let oauth_state = format!("simstate.{}", w.new_id());
    // Abandoned sign-ins (Esri's client opens the page twice) must not pile up.
    w.oauth.pending.retain(|_, a| ctx.now_ms - a.created < OAUTH_STATE_MS);
    let auth = Authorization {
        client_id: client_id.to_string(),
        app_title,
        response_type,
        redirect_uri,
        state: p.get("state").map(str::to_string),
        minutes,
        created: ctx.now_ms,
    };
    let info = oauth_info(w, &oauth_state, &auth, &[]);
    w.oauth.pending.insert(oauth_state, auth);
    Ok(info.into())
}

/// What the sign-in page's `var oAuthInfo` holds; `messages` explain a failed attempt.
fn oauth_info(w: &World, oauth_state: &str, a: &Authorization, messages: &[&str]) -> Value {
    let mut v = json!({
        "oauth_state": oauth_state,
        "client_id": a.client_id,
        "appTitle": a.app_title,
        "expiration": a.minutes,
        "locale": "en-us",
        "style": "dark",
        "orgName": w.org.name,
        "orgUrlKey": w.org.url_key,
    });
    if !messages.is_empty() {
        v["messages"] = json!(messages);
    }
    v
}

/// `POST /sharing/oauth2/signin` (`oauth_state`, `username`, `password`): signs in for a
/// pending `oauth2/authorize`. `token`: a 302 to the redirect URI whose fragment carries
/// `access_token`, `expires_in`, `username` and the client's `state`. `code`: a 302 with
/// `?code=` (and `state`), or for the out-of-band URN a page titled `SUCCESS code=<code>`.
/// A wrong password answers the sign-in page again with `messages`.
pub fn signin(w: &mut World, ctx: &Ctx) -> Result<Reply, AgolError> {
    let p = ctx.params;
    let oauth_state = p.required("oauth_state")?.to_string();
    let auth = w
        .oauth
        .pending
        .get(&oauth_state)
        .filter(|a| ctx.now_ms - a.created < OAUTH_STATE_MS)
        .cloned()
        .ok_or_else(|| AgolError::new(400, "Invalid or expired oauth_state"))?;
    let username = p.get("username").unwrap_or("");
    let password = p.get("password").unwrap_or("");
    let caller = match check_password(w, username, password) {
        Ok(c) => c,
        Err(why) => return Ok(oauth_info(w, &oauth_state, &auth, &[why]).into()),
    };
    w.oauth.pending.remove(&oauth_state);
    let username = match &caller {
        Caller::User { username, .. } => username.clone(),
        _ => String::new(),
    };
    let enc = |s: &str| form_urlencoded::byte_serialize(s.as_bytes()).collect::<String>();
    let state = auth
        .state
        .as_deref()
        .map(|s| format!("&state={}", enc(s)))
        .unwrap_or_default();
    if auth.response_type == "token" {
        let (token, _) = issue(w, caller, auth.minutes, None, ctx);
        return Ok(Reply::Redirect(format!(
            "{}#access_token={}&expires_in={}&username={}&ssl=true&persist=false{state}",
            auth.redirect_uri,
            enc(&token),
            auth.minutes * 60,
            enc(&username)
        )));
    }
    let code = format!("simcode.{}", w.new_id());
    w.oauth.codes.retain(|_, g| ctx.now_ms - g.created < OAUTH_STATE_MS);
    w.oauth.codes.insert(
        code.clone(),
        CodeGrant {
            caller,
            client_id: auth.client_id.clone(),
            redirect_uri: auth.redirect_uri.clone(),
            minutes: auth.minutes,
            created: ctx.now_ms,
        },
    );
    if auth.redirect_uri == OOB {
        return Ok(json!({"code": code}).into());
    }
    Ok(Reply::Redirect(format!(
        "{}?code={}{state}",
        auth.redirect_uri,
        enc(&code)
    )))
}

/// `oauth2/token` with `grant_type=authorization_code`: redeems a code once, for the client
/// and redirect URI it was issued to.
fn redeem_code(w: &mut World, ctx: &Ctx) -> Reply {
    let p = ctx.params;
    let invalid = |msg: &str| -> Reply {
        json!({"error": {"code": 400, "error": "invalid_request", "error_description": msg, "message": msg, "details": []}}).into()
    };
    let code = p.get("code").unwrap_or("");
    let Some(grant) = w.oauth.codes.remove(code) else {
        return invalid("Invalid authorization code");
    };
    if ctx.now_ms - grant.created >= OAUTH_STATE_MS {
        return invalid("Authorization code expired");
    }
    if p.get("client_id") != Some(grant.client_id.as_str()) {
        return invalid("Invalid client_id");
    }
    // Required and identical when the authorization carried one (RFC 6749, 4.1.3).
    if p.get("redirect_uri") != Some(grant.redirect_uri.as_str()) {
        return invalid("Invalid redirect_uri");
    }
    let username = match &grant.caller {
        Caller::User { username, .. } => username.clone(),
        _ => String::new(),
    };
    let (token, _) = issue(w, grant.caller, grant.minutes, None, ctx);
    json!({"access_token": token, "expires_in": grant.minutes * 60, "username": username, "ssl": true}).into()
}

/// The HTML the OAuth endpoints answer without `f=json`: the sign-in page (its
/// `var oAuthInfo = {...};` on one line, as Esri's client scrapes it), the out-of-band
/// `SUCCESS code=` page, or an error page (`Error: <message>`, the text clients look for).
pub fn oauth_page(reply: Reply) -> Response {
    let esc = |s: &str| s.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;");
    let (title, body) = match reply {
        Reply::Json(v) if v.get("oauth_state").is_some() => {
            // `</` would end the script element early.
            let info = serde_json::to_string(&v).unwrap_or_default().replace("</", "<\\/");
            let messages = v["messages"]
                .as_array()
                .map(|m| {
                    m.iter()
                        .filter_map(Value::as_str)
                        .map(esc)
                        .collect::<Vec<_>>()
                        .join("<br>")
                })
                .unwrap_or_default();
            (
                "Sign In".to_string(),
                format!(
                    "<script>\nvar oAuthInfo = {info};\n</script>\n<p class=\"messages\">{messages}</p>\n\
                     <form method=\"post\" action=\"../../oauth2/signin\"><input name=\"username\"><input name=\"password\" type=\"password\"></form>"
                ),
            )
        }
        Reply::Json(v) if v.get("code").and_then(Value::as_str).is_some() => {
            let code = esc(v["code"].as_str().unwrap_or(""));
            (format!("SUCCESS code={code}"), format!("<p>Copy this code: {code}</p>"))
        }
        Reply::Error(e) => (
            format!("Error: {}", e.message),
            format!("<p>Error: {}</p>", esc(&e.message)),
        ),
        other => return render(other, Format::Html, "oauth2"),
    };
    let page = format!(
        "<!DOCTYPE html>\n<html>\n<head>\n<meta charset=\"utf-8\">\n<title>{}</title>\n</head>\n<body>\n{body}\n</body>\n</html>\n",
        esc(&title)
    );
    let mut r = Response::new(Body::from(page));
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/html; charset=utf-8"),
    );
    r
}
