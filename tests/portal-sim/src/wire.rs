//! The sharing API's wire conventions: parameters from query and form body, the `f` output
//! format, the HTTP-200 error envelope and ArcGIS's Java-style number formatting.

use axum::{
    body::Body,
    http::{HeaderMap, HeaderValue, Method, StatusCode, header},
    response::Response,
};
use serde_json::{Value, json};

/// An application error, sent as `{"error":{...}}` inside HTTP 200 (see docs/arcgis.md,
/// "Errors").
#[derive(Debug, Clone, PartialEq)]
pub struct AgolError {
    /// `code`, usually an HTTP-like status (400, 403, 498, 499…).
    pub code: u16,
    /// Optional `messageCode` such as `GWM_0003`.
    pub message_code: Option<&'static str>,
    /// `message`.
    pub message: String,
    /// `details`.
    pub details: Vec<String>,
}

impl AgolError {
    /// An error with code and message, no `messageCode`, empty details.
    pub fn new(code: u16, message: impl Into<String>) -> Self {
        AgolError {
            code,
            message_code: None,
            message: message.into(),
            details: Vec::new(),
        }
    }

    /// 400 for a bad parameter, naming it.
    pub fn bad_param(name: &str, why: impl std::fmt::Display) -> Self {
        let message = format!("Invalid parameter '{name}': {why}");
        AgolError {
            details: vec![message.clone()],
            ..AgolError::new(400, message)
        }
    }

    /// 498: expired, revoked or bound to another referer.
    pub fn invalid_token() -> Self {
        AgolError::new(498, "Invalid token.")
    }

    /// 499: a protected resource without a token.
    pub fn token_required() -> Self {
        AgolError {
            message_code: Some("GWM_0003"),
            details: vec!["Token Required".into()],
            ..AgolError::new(499, "Token Required")
        }
    }

    /// 403: signed in, but the privilege is missing.
    pub fn forbidden() -> Self {
        AgolError {
            message_code: Some("GWM_0003"),
            ..AgolError::new(
                403,
                "You do not have permissions to access this resource or perform this operation.",
            )
        }
    }

    /// An item that does not exist (or is not the caller's).
    pub fn item_not_found() -> Self {
        AgolError {
            message_code: Some("CONT_0001"),
            ..AgolError::new(400, "Item does not exist or is inaccessible.")
        }
    }

    /// The envelope as JSON.
    pub fn to_json(&self) -> Value {
        let mut e = json!({"code": self.code, "message": self.message, "details": self.details});
        if let Some(mc) = self.message_code {
            e["messageCode"] = json!(mc);
        }
        json!({ "error": e })
    }
}

/// The parameters of one call: query string and form body merged (body wins), names
/// matched case-insensitively as ArcGIS does.
#[derive(Debug, Clone, Default)]
pub struct Params(pub Vec<(String, String)>);

impl Params {
    /// Parses query and body. A body that is not UTF-8 form data is a 400.
    pub fn parse(query: Option<&str>, headers: &HeaderMap, body: &[u8]) -> Result<Params, AgolError> {
        let mut out: Vec<(String, String)> = Vec::new();
        if let Some(q) = query {
            out.extend(form_urlencoded::parse(q.as_bytes()).into_owned());
        }
        if !body.is_empty() {
            let ctype = headers
                .get(header::CONTENT_TYPE)
                .and_then(|v| v.to_str().ok())
                .unwrap_or("");
            let is_form = ctype.is_empty() || ctype.starts_with("application/x-www-form-urlencoded");
            if !is_form {
                return Err(AgolError::new(
                    400,
                    format!("Unsupported request body content type '{ctype}'; send application/x-www-form-urlencoded."),
                ));
            }
            if std::str::from_utf8(body).is_err() {
                return Err(AgolError::new(400, "Request body is not valid UTF-8 form data."));
            }
            // Body values override query values of the same name.
            for (k, v) in form_urlencoded::parse(body).into_owned() {
                out.retain(|(ok, _)| !ok.eq_ignore_ascii_case(&k));
                out.push((k, v));
            }
        }
        Ok(Params(out))
    }

    /// The value of `name` (case-insensitive), if present.
    pub fn get(&self, name: &str) -> Option<&str> {
        self.0
            .iter()
            .rev()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// A non-empty value of `name`, or a 400 naming it.
    pub fn required(&self, name: &str) -> Result<&str, AgolError> {
        match self.get(name) {
            Some(v) if !v.trim().is_empty() => Ok(v),
            _ => Err(AgolError::bad_param(name, "is required")),
        }
    }

    /// An integer parameter with a default; garbage is a 400.
    pub fn int_or(&self, name: &str, default: i64) -> Result<i64, AgolError> {
        match self.get(name) {
            None => Ok(default),
            Some(v) if v.trim().is_empty() => Ok(default),
            Some(v) => v
                .trim()
                .parse::<i64>()
                .map_err(|_| AgolError::bad_param(name, format!("'{}' is not an integer", excerpt(v)))),
        }
    }

    /// A boolean sent as `true`/`false` text (Python JSON-encodes booleans).
    pub fn bool_or(&self, name: &str, default: bool) -> Result<bool, AgolError> {
        match self.get(name).map(str::trim) {
            None | Some("") => Ok(default),
            Some(v) if v.eq_ignore_ascii_case("true") => Ok(true),
            Some(v) if v.eq_ignore_ascii_case("false") => Ok(false),
            Some(v) => Err(AgolError::bad_param(
                name,
                format!("'{}' is not true or false", excerpt(v)),
            )),
        }
    }

    /// The parameters with every secret replaced, for the request log.
    pub fn redacted(&self) -> Vec<(String, String)> {
        // An authorization code and a sign-in's `oauth_state` are credentials until used.
        const SECRET: &[&str] = &[
            "token",
            "password",
            "client_secret",
            "access_token",
            "refresh_token",
            "code",
            "oauth_state",
        ];
        self.0
            .iter()
            .map(|(k, v)| {
                let hidden = SECRET.iter().any(|s| k.eq_ignore_ascii_case(s));
                (k.clone(), if hidden { "[redacted]".into() } else { v.clone() })
            })
            .collect()
    }
}

/// A value cut for error messages, so no message echoes a whole body.
pub fn excerpt(s: &str) -> String {
    let mut e: String = s.chars().take(60).collect();
    if e.len() < s.len() {
        e.push('…');
    }
    e
}

/// The output format chosen by `f`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// `f=json`.
    Json,
    /// `f=pjson`: pretty-printed, served as text.
    Pjson,
    /// No `f`, or `f=html`: the documented default is HTML (see docs/arcgis.md, "Base URL and
    /// request conventions").
    Html,
}

impl Format {
    /// Reads `f`; an unknown value is a 400.
    pub fn from_params(p: &Params) -> Result<Format, AgolError> {
        match p.get("f").map(|f| f.trim().to_ascii_lowercase()).as_deref() {
            None | Some("") | Some("html") => Ok(Format::Html),
            Some("json") => Ok(Format::Json),
            Some("pjson") => Ok(Format::Pjson),
            Some(_) => Err(AgolError::new(400, "Specified output format not supported.")),
        }
    }
}

/// Marks a number that must be written the way ArcGIS's Java back end writes doubles
/// (`5.0018196E7`, `479.50998`, `-1.0`): serde_json would write `50018196.0`.
pub fn jnum(x: f64) -> Value {
    Value::String(format!("{JNUM_MARK}{}", java_double(x)))
}

/// A number written the way [`jnum`] marks it, for typed (`Serialize`) replies.
pub struct JavaNumber(pub f64);

impl serde::Serialize for JavaNumber {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&format!("{JNUM_MARK}{}", java_double(self.0)))
    }
}

const JNUM_MARK: &str = "\u{1}jnum:";
const JNUM_MARK_ESCAPED: &str = "\"\\u0001jnum:";

/// Java's `Double.toString`: plain decimals in [1e-3, 1e7), scientific with `E` outside.
pub fn java_double(x: f64) -> String {
    if !x.is_finite() {
        return "0.0".into();
    }
    if x == 0.0 {
        return "0.0".into();
    }
    let a = x.abs();
    if (1e-3..1e7).contains(&a) {
        let s = format!("{x}");
        if s.contains('.') { s } else { format!("{s}.0") }
    } else {
        let s = format!("{x:e}");
        let (m, e) = s.split_once('e').unwrap_or((&s, "0"));
        let m = if m.contains('.') {
            m.to_string()
        } else {
            format!("{m}.0")
        };
        format!("{m}E{e}")
    }
}

/// Serializes a JSON value, writing [`jnum`] markers as raw numbers.
pub fn to_wire(v: &Value, pretty: bool) -> String {
    let s = if pretty {
        serde_json::to_string_pretty(v)
    } else {
        serde_json::to_string(v)
    }
    .unwrap_or_default();
    unmark(s)
}

/// Serializes a typed reply the way [`to_wire`] writes a `Value`, without building one.
pub fn to_wire_text<T: serde::Serialize>(v: &T) -> String {
    unmark(serde_json::to_string(v).unwrap_or_default())
}

/// Rewrites the [`jnum`] markers of serialized JSON as raw numbers.
fn unmark(s: String) -> String {
    if !s.contains(JNUM_MARK_ESCAPED) {
        return s;
    }
    let mut out = String::with_capacity(s.len());
    let mut rest = s.as_str();
    while let Some(i) = rest.find(JNUM_MARK_ESCAPED) {
        out.push_str(&rest[..i]);
        let after = &rest[i + JNUM_MARK_ESCAPED.len()..];
        let end = after.find('"').unwrap_or(after.len());
        out.push_str(&after[..end]);
        rest = after.get(end + 1..).unwrap_or("");
    }
    out.push_str(rest);
    out
}

/// What an endpoint answers, before the output format is applied.
pub enum Reply {
    /// A JSON document.
    Json(Value),
    /// A large JSON document built once the world lock is released, from data the endpoint
    /// copied out under it, so one big answer (a usage series of every member) does not stall
    /// every other request the way it would never stall the real service.
    Deferred(Box<dyn FnOnce() -> Reply + Send>),
    /// A JSON document already serialized (the largest answers are written directly).
    JsonText(String),
    /// An application error (HTTP 200 envelope).
    Error(AgolError),
    /// A file download.
    File {
        /// `Content-Type`.
        content_type: &'static str,
        /// Name in `Content-Disposition: attachment`.
        filename: String,
        /// The bytes.
        body: Vec<u8>,
    },
    /// A 302 to another location.
    Redirect(String),
}

impl From<AgolError> for Reply {
    fn from(e: AgolError) -> Self {
        Reply::Error(e)
    }
}

impl From<Value> for Reply {
    fn from(v: Value) -> Self {
        Reply::Json(v)
    }
}

fn html_page(title: &str, body: &str) -> String {
    let esc = |s: &str| s.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;");
    format!(
        "<!DOCTYPE html><html><head><title>{}</title></head><body><h2>ArcGIS REST API: {}</h2><pre>{}</pre></body></html>",
        esc(title),
        esc(title),
        esc(body)
    )
}

/// Renders a reply: status 200 for envelopes (the sharing API's way), HTML without `f=json`.
pub fn render(reply: Reply, format: Format, title: &str) -> Response {
    let (value, status) = match reply {
        Reply::Json(v) => (v, StatusCode::OK),
        Reply::Deferred(build) => return render(build(), format, title),
        Reply::JsonText(text) => match format {
            Format::Json => return json_response(text, "application/json; charset=utf-8"),
            // Pretty forms are rare: read the text back to lay it out.
            Format::Pjson | Format::Html => (serde_json::from_str(&text).unwrap_or(Value::Null), StatusCode::OK),
        },
        Reply::Error(e) => (e.to_json(), StatusCode::OK),
        Reply::File {
            content_type,
            filename,
            body,
        } => {
            let mut r = Response::new(Body::from(body));
            let h = r.headers_mut();
            h.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
            if let Ok(v) = HeaderValue::from_str(&format!("attachment; filename=\"{filename}\"")) {
                h.insert(header::CONTENT_DISPOSITION, v);
            }
            return r;
        }
        Reply::Redirect(location) => {
            let mut r = Response::new(Body::empty());
            *r.status_mut() = StatusCode::FOUND;
            if let Ok(v) = HeaderValue::from_str(&location) {
                r.headers_mut().insert(header::LOCATION, v);
            }
            return r;
        }
    };
    let (body, ctype) = match format {
        Format::Json => (to_wire(&value, false), "application/json; charset=utf-8"),
        Format::Pjson => (to_wire(&value, true), "text/plain; charset=utf-8"),
        Format::Html => (html_page(title, &to_wire(&value, true)), "text/html; charset=utf-8"),
    };
    let mut r = json_response(body, ctype);
    *r.status_mut() = status;
    r
}

fn json_response(body: String, ctype: &'static str) -> Response {
    let mut r = Response::new(Body::from(body));
    r.headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static(ctype));
    r
}

/// Whether an operation only accepts POST (see docs/arcgis.md, "Base URL and request
/// conventions"; the 405 answer is this simulator's choice).
pub fn post_only_refusal(method: &Method) -> Option<AgolError> {
    (method != Method::POST).then(|| AgolError {
        details: vec!["This operation is only supported via POST.".into()],
        ..AgolError::new(405, "Method not supported.")
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn java_double_matches_javas_formatting() {
        assert_eq!(java_double(5.0018196e7), "5.0018196E7");
        assert_eq!(java_double(2.0e-4), "2.0E-4");
        assert_eq!(java_double(479.50998), "479.50998");
        assert_eq!(java_double(100.0), "100.0");
        assert_eq!(java_double(-1.0), "-1.0");
        assert_eq!(java_double(0.0), "0.0");
        assert_eq!(java_double(1e7), "1.0E7");
    }

    #[test]
    fn jnum_markers_become_raw_numbers() {
        let v = json!({"a": jnum(5.0018196e7), "b": [jnum(-1.0)], "c": "text"});
        let s = to_wire(&v, false);
        assert_eq!(s, r#"{"a":5.0018196E7,"b":[-1.0],"c":"text"}"#);
        let back: Value = serde_json::from_str(&s).unwrap();
        assert_eq!(back["a"].as_f64(), Some(5.0018196e7));
        let pretty: Value = serde_json::from_str(&to_wire(&v, true)).unwrap();
        assert_eq!(pretty["b"][0].as_f64(), Some(-1.0));
    }
}
