//! What can go wrong talking to ArcGIS Online, as values.
//!
//! ArcGIS reports most application errors inside an HTTP 200 body, in several shapes.
//! [`ApiError::from_body`] reads all of them into one type; [`Error`] adds what the client was
//! doing (operation and target) and what the operator should do about it.

use std::fmt;
use std::time::Duration;

use serde_json::Value;

/// An application error reported by ArcGIS in a response body.
///
/// Every field but `message` is optional because the shapes vary (missing `code`, `details` as an
/// array, a string or null, OAuth's `error`/`error_description`, top-level billing errors).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ApiError {
    /// The numeric code (`498` invalid token, `403` permission, `400` validation…), when present.
    pub code: Option<i64>,
    /// Esri's stable message code such as `GWM_0003` or `CONT_0001`, when present.
    pub message_code: Option<String>,
    /// The human message (empty when ArcGIS sent none).
    pub message: String,
    /// Extra detail lines, normalised from array, string or null.
    pub details: Vec<String>,
    /// An optional longer `description`.
    pub description: Option<String>,
    /// OAuth's machine-readable `error` (e.g. `invalid_client`), when present.
    pub oauth_error: Option<String>,
}

impl ApiError {
    /// Reads an error envelope out of a JSON body, or `None` when the body reports no error.
    ///
    /// Recognised: `{"error":{...}}` (any subset of code/messageCode/message/details/description/
    /// error/error_description), `{"error":"invalid_client","error_description":...}` and the
    /// top-level `{"code":500,"message":...,"status":"failure"}`.
    pub fn from_body(body: &Value) -> Option<ApiError> {
        let obj = body.as_object()?;
        match obj.get("error") {
            Some(Value::Object(inner)) => Some(Self::from_fields(inner)),
            Some(Value::String(oauth)) => Some(ApiError {
                code: obj.get("code").and_then(as_code),
                message: text(obj.get("error_description")).unwrap_or_else(|| oauth.clone()),
                oauth_error: Some(oauth.clone()),
                ..ApiError::default()
            }),
            _ if obj.get("status").and_then(Value::as_str) == Some("failure") => Some(Self::from_fields(obj)),
            _ => None,
        }
    }

    fn from_fields(inner: &serde_json::Map<String, Value>) -> ApiError {
        let oauth_error = text(inner.get("error"));
        let message = text(inner.get("message"))
            .or_else(|| text(inner.get("error_description")))
            .or_else(|| text(inner.get("statusMessage")))
            .unwrap_or_default();
        ApiError {
            code: inner.get("code").and_then(as_code),
            message_code: text(inner.get("messageCode")),
            message,
            details: details(inner.get("details")),
            description: text(inner.get("description")),
            oauth_error,
        }
    }

    /// True for the codes that mean "your token is not (or no longer) accepted": 498 and 499.
    pub fn is_invalid_token(&self) -> bool {
        matches!(self.code, Some(498 | 499))
    }

    /// True for "Item does not exist or is inaccessible" (`CONT_0001`, or a 400/404 without a
    /// message code saying so): what a report item answers until it becomes visible.
    pub fn is_item_not_found(&self) -> bool {
        match self.message_code.as_deref() {
            Some(code) => code.eq_ignore_ascii_case("CONT_0001"),
            None => {
                matches!(self.code, Some(400 | 404))
                    && self.message.to_ascii_lowercase().contains("item does not exist")
            }
        }
    }

    /// What an operator should do about this error, by code.
    pub fn hint(&self) -> &'static str {
        match self.code {
            Some(498 | 499) => {
                "ArcGIS rejected the token (expired, revoked, or bound to another Referer) and one \
                 fresh sign-in did not help (an API key cannot be renewed): check the credentials \
                 and that the Referer (ARCGIS_REFERER or the secret's referer) is stable."
            }
            Some(401 | 403) => {
                "The signed-in account lacks the privilege for this: use an org administrator or a \
                 role with portal:admin:viewUsers and portal:admin:manageCredits."
            }
            Some(429 | 500..=599) => "ArcGIS is throttling or unavailable: try again later.",
            Some(400 | 404) => {
                "ArcGIS rejected the request or the target does not exist: check the names and \
                 values sent."
            }
            _ => "See ArcGIS's message above.",
        }
    }

    /// Replaces every occurrence of the given secret values in the texts ArcGIS sent back, so
    /// an echoed token or password never reaches a log through an error.
    pub(crate) fn scrub(mut self, secrets: &[&str]) -> ApiError {
        self.message = scrub(&self.message, secrets);
        for d in &mut self.details {
            *d = scrub(d, secrets);
        }
        self.description = self.description.map(|d| scrub(&d, secrets));
        self
    }
}

impl fmt::Display for ApiError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.code {
            Some(code) => write!(f, "code {code}")?,
            None => f.write_str("no code")?,
        }
        if let Some(mc) = &self.message_code {
            write!(f, " ({mc})")?;
        }
        if let Some(oe) = &self.oauth_error {
            write!(f, " [{oe}]")?;
        }
        let message = if self.message.is_empty() {
            "no message"
        } else {
            &self.message
        };
        write!(f, ": {message}")?;
        if !self.details.is_empty() {
            write!(f, " — details: {}", self.details.join("; "))?;
        }
        if let Some(d) = &self.description {
            write!(f, " — {d}")?;
        }
        Ok(())
    }
}

/// Why a request did not produce a usable answer at the transport level.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TransportKind {
    /// No connection could be made (refused, DNS, TLS): the request was never sent.
    Connect,
    /// The request or response took longer than the configured HTTP timeout.
    Timeout,
    /// The connection dropped while sending the request or reading the response.
    Interrupted,
}

impl fmt::Display for TransportKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            TransportKind::Connect => "could not connect",
            TransportKind::Timeout => "timed out",
            TransportKind::Interrupted => "connection interrupted",
        })
    }
}

/// Every failure of the ArcGIS client. `what` fields name the operation and its target
/// ("assignUserCredits for 3 members"); each message ends with what to do about it.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// ArcGIS answered with an error envelope (usually inside HTTP 200).
    #[error("{what} failed: ArcGIS error {api}. {}", api.hint())]
    Api {
        /// Operation and target.
        what: String,
        /// The HTTP status the envelope came with (mostly 200).
        http_status: u16,
        /// The parsed envelope.
        api: Box<ApiError>,
    },
    /// A non-success HTTP status without a JSON error body (gateway pages, throttling).
    #[error("{what} failed: HTTP {status}{}, body starts {excerpt:?}. {}",
        retry_after.map(|d| format!(" (Retry-After {}s)", d.as_secs())).unwrap_or_default(),
        http_hint(*status))]
    Http {
        /// Operation and target.
        what: String,
        /// The HTTP status.
        status: u16,
        /// The first characters of the body, secrets scrubbed.
        excerpt: String,
        /// The server's `Retry-After`, when it sent one.
        retry_after: Option<Duration>,
    },
    /// A success status whose body is not the JSON the operation needs.
    #[error(
        "{what} failed: the HTTP {status} response is not valid JSON ({reason}); body starts \
        {excerpt:?}. The portal or a proxy in front of it sent something else: check the portal URL."
    )]
    Decode {
        /// Operation and target.
        what: String,
        /// The HTTP status.
        status: u16,
        /// The JSON parser's complaint (position only, no content).
        reason: String,
        /// The first characters of the body, secrets scrubbed (empty for token endpoints).
        excerpt: String,
    },
    /// The request did not complete at the network level.
    #[error(
        "{what} failed: {kind} ({detail}). Check that the portal is reachable; transient \
        failures of repeatable calls are retried."
    )]
    Transport {
        /// Operation and target.
        what: String,
        /// Which kind of network failure.
        kind: TransportKind,
        /// The HTTP library's description (no request bodies, no tokens).
        detail: String,
    },
    /// Transient failures persisted past the retry policy's attempts or deadline.
    #[error("gave up after {attempts} attempts over {:.1}s: {last}", elapsed.as_secs_f64())]
    GaveUp {
        /// Attempts made.
        attempts: u32,
        /// Time spent including waits.
        elapsed: Duration,
        /// The last failure.
        last: Box<Error>,
    },
    /// Signing in was refused (bad password, disabled account, wrong client secret).
    #[error(
        "signing in to ArcGIS as {account} failed: {api}. Check the credentials in the \
        ARCGIS_SECRET_ID secret; generateToken only accepts built-in (non-SAML, non-MFA) accounts."
    )]
    SignIn {
        /// Who tried to sign in (never the secret).
        account: String,
        /// ArcGIS's answer.
        api: Box<ApiError>,
    },
    /// `portals/self` came back without the fields only an administrator sees: the token is
    /// anonymous or not an admin's, so credits cannot be read (never silently 0).
    #[error("portals/self returned no {} for this token{}: it is not an org administrator's \
        token. Sign in with an administrator account.", missing.join(" or "),
        if *app_token { " (an app/API-key token)" } else { "" })]
    NotAdminView {
        /// The missing fields (`availableCredits`, `user`).
        missing: Vec<&'static str>,
        /// Whether `appInfo` was present (an app or API-key token).
        app_token: bool,
    },
    /// The signed-in account is not allowed to do what was asked.
    #[error("{account} ({}) may not {needed_for}: missing privileges {}. {}",
        describe_role(role.base.as_deref(), role.custom_id.as_deref()), missing.join(", "),
        privileges_hint(role.base.as_deref(), role.custom_id.as_deref()))]
    MissingPrivileges {
        /// The signed-in username or app.
        account: String,
        /// Its role, when it has one (boxed: errors travel in every `Result`).
        role: Box<AccountRole>,
        /// The activity that needs the privileges.
        needed_for: &'static str,
        /// The privileges it lacks.
        missing: Vec<String>,
    },
    /// An exact member lookup found nobody with that username.
    #[error("member '{username}' not found in the organization{}. Check the exact, case-sensitive \
        username.", detail.as_ref().map(|a| format!(" (ArcGIS: {a})")).unwrap_or_default())]
    NotFound {
        /// The username looked up.
        username: String,
        /// ArcGIS's error, when it sent one.
        detail: Option<Box<ApiError>>,
    },
    /// A wait (report generation) exceeded its deadline.
    #[error("{what}: still '{last_status}' after {:.0}s; gave up waiting. ArcGIS may be slow: \
        try again later or raise the deadline.", waited.as_secs_f64())]
    Timeout {
        /// What was awaited.
        what: String,
        /// How long the client waited.
        waited: Duration,
        /// The last status seen.
        last_status: String,
    },
    /// An asynchronous ArcGIS job reported failure.
    #[error(
        "{what}: ArcGIS reports the job failed: {message}. Try again; if it persists, check \
        the report parameters."
    )]
    JobFailed {
        /// The job.
        what: String,
        /// ArcGIS's status message.
        message: String,
    },
    /// A response that parsed but lacks what the operation needs.
    #[error(
        "{what}: unexpected response: {reason}. The API may have changed or the token cannot \
        see this data."
    )]
    Unexpected {
        /// Operation and target.
        what: String,
        /// What was missing or wrong.
        reason: String,
    },
    /// The caller passed something ArcGIS would reject; nothing was sent.
    #[error("{what}: invalid input: {reason}")]
    InvalidInput {
        /// Operation.
        what: String,
        /// What is wrong with the input.
        reason: String,
    },
    /// The portal URL cannot be used.
    #[error(
        "invalid portal URL ({url}): {reason}. Set portal_url in the ARCGIS_SECRET_ID secret to the \
        org's https URL, without user name, password or token"
    )]
    InvalidUrl {
        /// The URL's scheme and host only ([`redact_url`]): the rest may hold a password or a
        /// token.
        url: String,
        /// Why it was refused.
        reason: String,
    },
    /// The HTTP client could not be built (TLS setup, bad root certificate).
    #[error("could not build the HTTP client: {0}")]
    Build(String),
    /// The call began after the client's absolute deadline ([`Client::until`]): nothing was
    /// sent, so the invocation can end cleanly instead of being killed mid-request.
    ///
    /// [`Client::until`]: super::Client::until
    #[error("{what}: not sent: the invocation's time is up; retry the request")]
    DeadlineReached {
        /// Operation and target.
        what: String,
    },
}

impl Error {
    /// The ArcGIS envelope behind this error, looking through retries.
    pub fn api(&self) -> Option<&ApiError> {
        match self {
            Error::Api { api, .. } | Error::SignIn { api, .. } => Some(api),
            Error::NotFound { detail, .. } => detail.as_deref(),
            Error::GaveUp { last, .. } => last.api(),
            _ => None,
        }
    }

    /// Whether the error says the token was rejected (498/499).
    pub fn is_invalid_token(&self) -> bool {
        self.api().is_some_and(ApiError::is_invalid_token)
    }

    /// The HTTP status behind the error, when there was one (looking through retries).
    pub fn http_status(&self) -> Option<u16> {
        match self {
            Error::Http { status, .. } | Error::Decode { status, .. } => Some(*status),
            Error::Api { http_status, .. } => Some(*http_status),
            Error::GaveUp { last, .. } => last.http_status(),
            _ => None,
        }
    }

    /// The failure under any retry wrapper: the one to classify.
    pub fn root(&self) -> &Error {
        match self {
            Error::GaveUp { last, .. } => last.root(),
            other => other,
        }
    }

    /// Errors that will fail every further call of the same session too (bad credentials,
    /// missing privileges, the invocation's deadline passed), so batch operations stop
    /// instead of repeating them.
    pub fn affects_every_call(&self) -> bool {
        match self.root() {
            Error::SignIn { .. }
            | Error::MissingPrivileges { .. }
            | Error::NotAdminView { .. }
            | Error::DeadlineReached { .. } => true,
            Error::Api { api, .. } => matches!(api.code, Some(401 | 403 | 498 | 499)),
            _ => false,
        }
    }
}

/// A signed-in account's role as `portals/self` reports it, for messages: the base role, and
/// the custom role's id when the role is custom.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AccountRole {
    /// `org_admin`, `org_publisher` or `org_user` (custom roles report their base here).
    pub base: Option<String>,
    /// The custom role's id (`roleId`), when the role is custom.
    pub custom_id: Option<String>,
}

fn describe_role(role: Option<&str>, role_id: Option<&str>) -> String {
    match (role, role_id) {
        (Some(role), Some(id)) => format!("custom role {id}, reported as {role}"),
        (Some(role), None) => format!("role {role}"),
        (None, _) => "role unknown".to_owned(),
    }
}

/// What to do about missing privileges. A custom role reporting `org_admin` looks like an
/// administrator and is not one, which deserves saying.
fn privileges_hint(role: Option<&str>, role_id: Option<&str>) -> &'static str {
    match (role, role_id) {
        (Some("org_admin"), Some(_)) => {
            "A custom role reported as org_admin has only the privileges it lists: add these to \
            the role in the organization's member roles, or use an account with the built-in \
            Administrator role."
        }
        (Some("org_admin"), None) => {
            "The built-in Administrator role should list every privilege and ArcGIS listed \
            fewer: check the account's role on the organization's Members page."
        }
        _ => "Grant them to its role, or use an account with the built-in Administrator role.",
    }
}

fn http_hint(status: u16) -> &'static str {
    match status {
        429 => "ArcGIS is throttling requests: lower LIST_CONCURRENCY or try again later.",
        500..=599 => "ArcGIS or a gateway in front of it is unavailable: try again later.",
        401 | 403 => "Access was refused: check the credentials and the account's privileges.",
        404 => "The endpoint does not exist: check the portal URL.",
        300..=399 => "An unexpected redirect: check the portal URL (https, org URL).",
        _ => "Check the portal URL and ArcGIS's status.",
    }
}

/// What an error message or a log line may say about a URL: its scheme, host and explicit
/// port (`https://org.example.com`, `http://127.0.0.1:8080`), never the user name, password,
/// path, query or fragment, which may hold credentials or a token. Something that does not
/// parse as a URL is "an unparsable URL", never the input.
pub fn redact_url(url: &str) -> String {
    let Ok(parsed) = reqwest::Url::parse(url.trim()) else {
        return "an unparsable URL".to_owned();
    };
    let Some(host) = parsed.host_str().filter(|h| !h.is_empty()) else {
        return "a URL without a host".to_owned();
    };
    // Only schemes the parser knows are printed: `secret:…` parses with `secret` as its scheme.
    let scheme = parsed.scheme();
    if !matches!(scheme, "https" | "http" | "wss" | "ws" | "ftp" | "file") {
        return format!("a URL with an unsupported scheme for host {host}");
    }
    match parsed.port() {
        Some(port) => format!("{scheme}://{host}:{port}"),
        None => format!("{scheme}://{host}"),
    }
}

/// A short, single-line excerpt of a body for error messages: at most 160 characters,
/// control characters flattened, known secrets removed.
pub(crate) fn excerpt(body: &[u8], secrets: &[&str]) -> String {
    let text = String::from_utf8_lossy(&body[..body.len().min(4096)]);
    let flat: String = text.chars().map(|c| if c.is_control() { ' ' } else { c }).collect();
    let scrubbed = scrub(flat.trim(), secrets);
    let mut out: String = scrubbed.chars().take(160).collect();
    if scrubbed.chars().count() > 160 {
        out.push('…');
    }
    out
}

/// Replaces each (non-trivial) secret value with a marker.
pub(crate) fn scrub(text: &str, secrets: &[&str]) -> String {
    let mut out = text.to_owned();
    for s in secrets.iter().filter(|s| s.len() >= 4) {
        if out.contains(*s) {
            out = out.replace(*s, "[REDACTED]");
        }
    }
    out
}

fn text(v: Option<&Value>) -> Option<String> {
    match v? {
        Value::String(s) => Some(s.clone()),
        Value::Null => None,
        other => Some(other.to_string()),
    }
}

fn as_code(v: &Value) -> Option<i64> {
    match v {
        Value::Number(n) => n.as_i64().or_else(|| n.as_f64().map(|f| f as i64)),
        Value::String(s) => s.trim().parse().ok(),
        _ => None,
    }
}

fn details(v: Option<&Value>) -> Vec<String> {
    match v {
        None | Some(Value::Null) => Vec::new(),
        Some(Value::Array(items)) => items
            .iter()
            .filter_map(|i| text(Some(i)))
            .filter(|s| !s.is_empty())
            .collect(),
        Some(Value::String(s)) if s.is_empty() => Vec::new(),
        Some(other) => text(Some(other)).into_iter().collect(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn parse(v: Value) -> ApiError {
        ApiError::from_body(&v).expect("an error envelope")
    }

    #[test]
    fn full_envelope() {
        let e = parse(json!({"error":{"code":403,"messageCode":"GWM_0003",
            "message":"You do not have permissions to access this resource or perform this operation.",
            "details":[]}}));
        assert_eq!(e.code, Some(403));
        assert_eq!(e.message_code.as_deref(), Some("GWM_0003"));
        assert!(e.details.is_empty());
        assert!(e.to_string().starts_with("code 403 (GWM_0003): You do not have"));
    }

    #[test]
    fn missing_code() {
        let e = parse(json!({"error":{"message":"Item does not exist or is inaccessible.","details":null}}));
        assert_eq!(e.code, None);
        assert!(e.details.is_empty());
        assert!(e.to_string().starts_with("no code: Item does not exist"));
    }

    #[test]
    fn details_as_array_string_or_null() {
        let arr = parse(json!({"error":{"code":400,"message":"Unable to generate token.",
            "details":["Invalid username or password."]}}));
        assert_eq!(arr.details, vec!["Invalid username or password."]);
        let s = parse(json!({"error":{"code":400,"message":"m","details":"one line"}}));
        assert_eq!(s.details, vec!["one line"]);
        let n = parse(json!({"error":{"code":400,"message":"m","details":null}}));
        assert!(n.details.is_empty());
        let mixed = parse(json!({"error":{"code":400,"message":"m","details":["a", 3, null]}}));
        assert_eq!(mixed.details, vec!["a", "3"]);
    }

    #[test]
    fn description_and_string_code() {
        let e = parse(json!({"error":{"code":"498","message":"Invalid token.","description":"long"}}));
        assert_eq!(e.code, Some(498));
        assert!(e.is_invalid_token());
        assert_eq!(e.description.as_deref(), Some("long"));
    }

    #[test]
    fn oauth_inside_error() {
        let e = parse(json!({"error":{"code":498,"error":"invalid_request",
            "error_description":"refresh_token expired","message":"refresh_token expired","details":[]}}));
        assert_eq!(e.oauth_error.as_deref(), Some("invalid_request"));
        assert_eq!(e.message, "refresh_token expired");
        let no_message = parse(json!({"error":{"code":400,"error":"invalid_client",
            "error_description":"Invalid client_id"}}));
        assert_eq!(no_message.message, "Invalid client_id");
    }

    #[test]
    fn oauth_top_level_string() {
        let e = parse(json!({"error":"invalid_client","error_description":"Invalid client_secret"}));
        assert_eq!(e.oauth_error.as_deref(), Some("invalid_client"));
        assert_eq!(e.message, "Invalid client_secret");
        assert_eq!(e.code, None);
    }

    #[test]
    fn top_level_billing_failure() {
        let e = parse(json!({"code":500,"message":"Billing error","status":"failure"}));
        assert_eq!(e.code, Some(500));
        assert_eq!(e.message, "Billing error");
    }

    #[test]
    fn no_error_in_normal_bodies() {
        assert!(ApiError::from_body(&json!({"success":true,"notAssignedUsers":[]})).is_none());
        assert!(ApiError::from_body(&json!({"status":"processing"})).is_none());
        assert!(ApiError::from_body(&json!([1, 2])).is_none());
        assert!(ApiError::from_body(&json!({"error": null})).is_none());
    }

    #[test]
    fn empty_error_object_is_still_an_error() {
        let e = parse(json!({"error":{}}));
        assert_eq!(e.to_string(), "no code: no message");
    }

    #[test]
    fn scrub_and_excerpt_remove_secrets() {
        let e = ApiError {
            message: "bad token abcd1234".into(),
            details: vec!["abcd1234".into()],
            ..Default::default()
        }
        .scrub(&["abcd1234"]);
        assert!(!e.to_string().contains("abcd1234"));
        let ex = excerpt(b"<html>\n<body>token=abcd1234</body></html>", &["abcd1234"]);
        assert_eq!(ex, "<html> <body>token=[REDACTED]</body></html>");
        let long = excerpt(&[b'x'; 1000], &[]);
        assert_eq!(long.chars().count(), 161);
    }

    #[test]
    fn redact_url_keeps_scheme_host_and_port_only() {
        for (input, want) in [
            (
                "https://user:pa55word@org.example.com/sharing/rest?token=SECRET123#frag",
                "https://org.example.com",
            ),
            ("http://127.0.0.1:8080/secret/path", "http://127.0.0.1:8080"),
            ("https://org.example.com:443/x", "https://org.example.com"),
            ("  https://ORG.example.com/  ", "https://org.example.com"),
            ("http://[::1]:9/a?b", "http://[::1]:9"),
            ("not a url pa55word", "an unparsable URL"),
            ("", "an unparsable URL"),
            ("https://pa55word@/x", "an unparsable URL"),
            ("pa55word:SECRET123", "a URL without a host"),
            ("pa55word://h/SECRET123", "a URL with an unsupported scheme for host h"),
            ("ftp://x/SECRET123", "ftp://x"),
        ] {
            assert_eq!(redact_url(input), want, "{input}");
        }
    }

    #[test]
    fn a_deadline_reached_error_says_nothing_was_sent_and_stops_batches() {
        let e = Error::DeadlineReached {
            what: "assignUserCredits for 3 members".into(),
        };
        assert_eq!(
            e.to_string(),
            "assignUserCredits for 3 members: not sent: the invocation's time is up; retry the request"
        );
        assert!(e.affects_every_call());
    }

    #[test]
    fn error_messages_say_what_and_what_to_do() {
        let e = Error::Api {
            what: "assignUserCredits for 3 members".into(),
            http_status: 200,
            api: Box::new(parse(
                json!({"error":{"code":403,"messageCode":"GWM_0003","message":"No."}}),
            )),
        };
        let s = e.to_string();
        assert!(
            s.starts_with("assignUserCredits for 3 members failed: ArcGIS error code 403 (GWM_0003): No."),
            "{s}"
        );
        assert!(s.contains("org administrator"), "{s}");
        assert!(e.affects_every_call());
    }
}
