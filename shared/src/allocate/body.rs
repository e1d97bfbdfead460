//! The `POST /allocations` body: parsed strictly, every problem named.
//!
//! Two stages, each listing *all* of its problems so a caller fixes a request in one round:
//! the shape (a walk over the JSON naming each unknown field, wrong type and `null`, then
//! serde with `deny_unknown_fields`), then the meaning (usernames, credit amounts, duplicates,
//! request size, reason). The walk comes first because serde is lenient where money is not:
//! it reads a JSON array as a struct by position (`["user", 100]` would become an entry) and
//! `null` as "absent" (`"dry_run": null` would apply for real). Amounts are read as exact
//! decimals ([`Credits::parse_exact`]): more than six decimals is refused, never rounded.
//! Nothing here does I/O.

use std::collections::HashMap;

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::apply::Ask;
use crate::credits::amount::Credits;
use crate::credits::classify::Thresholds;
use crate::credits::plan::Request;

/// Largest body accepted (413 above): 500 members at ~100 bytes each fit ten times over,
/// while a runaway client cannot make the function parse megabytes.
pub const MAX_BODY_BYTES: usize = 256 * 1024;
/// Largest number of credits one entry may name: far above any real allocation (orgs buy
/// credits in thousands), so anything larger is a typo (an extra zero run) or an attack.
pub const MAX_CREDITS: Credits = Credits::whole(1_000_000_000);
/// Longest username accepted; ArcGIS usernames are far shorter, so longer is garbage.
pub const MAX_USERNAME_CHARS: usize = 128;
/// Longest `reason`: a sentence or a ticket reference, kept whole in the audit trail.
pub const MAX_REASON_CHARS: usize = 500;
/// Longest `Idempotency-Key` header (UUIDs are 36; room for prefixed client keys).
pub const MAX_IDEMPOTENCY_KEY_CHARS: usize = 200;

/// The policies a request may name instead of an explicit list.
pub const POLICIES: &[&str] = &["critical"];

const TOP_LEVEL_FIELDS: &[&str] = &["allocations", "policy", "top_up_to", "dry_run", "reason"];
const ENTRY_FIELDS: &[&str] = &["username", "set", "add", "top_up_to"];
const ACTIONS: &[&str] = &["set", "add", "top_up_to"];

/// One thing wrong with a request, naming where (field path, username or guardrail).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Problem {
    /// JSON path of the offending value (`allocations[2].set`), or a header name.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub field: Option<String>,
    /// The member concerned, when there is one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub username: Option<String>,
    /// The guardrail breached (422 only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub guardrail: Option<String>,
    /// What is wrong and what to send instead.
    pub problem: String,
}

impl Problem {
    /// A problem with the value at `field`.
    pub fn field(field: impl Into<String>, problem: impl Into<String>) -> Problem {
        Problem {
            field: Some(field.into()),
            username: None,
            guardrail: None,
            problem: problem.into(),
        }
    }

    /// A problem about the request as a whole.
    pub fn general(problem: impl Into<String>) -> Problem {
        Problem {
            field: None,
            username: None,
            guardrail: None,
            problem: problem.into(),
        }
    }

    fn with_username(mut self, username: &str) -> Problem {
        self.username = Some(shown(username));
        self
    }
}

/// A validated `POST /allocations` body.
#[derive(Debug, Clone, PartialEq)]
pub struct AllocationBody {
    /// What to allocate.
    pub ask: Ask,
    /// Plan only; write nothing.
    pub dry_run: bool,
    /// Why, for the audit trail.
    pub reason: Option<String>,
}

/// The body's shape. `Option` everywhere so that missing and conflicting fields are named by
/// the meaning stage rather than as serde's first error.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawBody {
    #[serde(default)]
    allocations: Option<Vec<RawEntry>>,
    #[serde(default)]
    policy: Option<String>,
    #[serde(default)]
    top_up_to: Option<serde_json::Number>,
    #[serde(default)]
    dry_run: Option<bool>,
    #[serde(default)]
    reason: Option<String>,
}

/// One `allocations` entry: a username and exactly one of the three actions.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawEntry {
    #[serde(default)]
    username: Option<String>,
    #[serde(default)]
    set: Option<serde_json::Number>,
    #[serde(default)]
    add: Option<serde_json::Number>,
    #[serde(default)]
    top_up_to: Option<serde_json::Number>,
}

/// Parses and validates `body`; every problem found is returned together.
/// `thresholds` say who the critical policy selects.
pub fn parse(body: &[u8], max_members: usize, thresholds: Thresholds) -> Result<AllocationBody, Vec<Problem>> {
    let value: Value = serde_json::from_slice(body).map_err(|e| {
        // serde_json's syntax messages give a position, never the text.
        vec![Problem::general(format!("the body is not valid JSON: {e}"))]
    })?;
    // serde accepts a JSON array for a struct (by position): `[]` would read as "nothing".
    if !value.is_object() {
        return Err(vec![Problem::general(
            "the body must be a JSON object: {\"allocations\": [...]} or {\"policy\": \"critical\", \"top_up_to\": ...}",
        )]);
    }
    let problems = shape_problems(&value);
    if !problems.is_empty() {
        return Err(problems);
    }
    let raw: RawBody = RawBody::deserialize(&value).map_err(|e| {
        vec![Problem::general(format!(
            "the body does not have the expected shape: {e}"
        ))]
    })?;
    meaning(raw, max_members, thresholds)
}

/// Checks an `Idempotency-Key` header value: 1–200 printable ASCII characters.
pub fn check_idempotency_key(key: &str) -> Result<(), Problem> {
    let field = |p: String| Problem::field("Idempotency-Key", p);
    if key.trim().is_empty() {
        return Err(field(
            "the header is empty; send a unique key (a UUID) or omit the header".into(),
        ));
    }
    let chars = key.chars().count();
    if chars > MAX_IDEMPOTENCY_KEY_CHARS {
        return Err(field(format!(
            "{chars} characters, above {MAX_IDEMPOTENCY_KEY_CHARS}; use a shorter key (a UUID)"
        )));
    }
    if !key.chars().all(|c| c == ' ' || c.is_ascii_graphic()) {
        return Err(field("only printable ASCII characters are allowed".into()));
    }
    Ok(())
}

/// Every unknown field and wrong type in a body serde refused.
fn shape_problems(value: &Value) -> Vec<Problem> {
    let Value::Object(top) = value else {
        return vec![Problem::general(format!(
            "the body must be a JSON object, not {}",
            kind(value)
        ))];
    };
    let mut problems = unknown_fields(top, TOP_LEVEL_FIELDS, "");
    for (name, expected) in [
        ("policy", Expected::String),
        ("top_up_to", Expected::Number),
        ("dry_run", Expected::Bool),
        ("reason", Expected::String),
    ] {
        if let Some(v) = top.get(name) {
            problems.extend(expected.check(v, name));
        }
    }
    match top.get("allocations") {
        None => {}
        Some(Value::Null) => problems.push(Problem::field(
            "allocations",
            "is null, which means nothing here: send a list of entries or leave the field out",
        )),
        Some(Value::Array(entries)) => {
            for (i, entry) in entries.iter().enumerate() {
                let path = format!("allocations[{i}]");
                let Value::Object(entry) = entry else {
                    problems.push(Problem::field(
                        &path,
                        format!(
                            "must be an object like {{\"username\": \"u\", \"set\": 500}}, not {}",
                            kind(entry)
                        ),
                    ));
                    continue;
                };
                let username = entry.get("username").and_then(Value::as_str);
                let named = |p: Problem| match username {
                    Some(u) => p.with_username(u),
                    None => p,
                };
                problems.extend(unknown_fields(entry, ENTRY_FIELDS, &path).into_iter().map(named));
                if let Some(v) = entry.get("username") {
                    problems.extend(Expected::String.check(v, &format!("{path}.username")));
                }
                for action in ACTIONS {
                    if let Some(v) = entry.get(*action) {
                        problems.extend(Expected::Number.check(v, &format!("{path}.{action}")).map(named));
                    }
                }
            }
        }
        Some(other) => problems.push(Problem::field(
            "allocations",
            format!("must be a list of entries, not {}", kind(other)),
        )),
    }
    problems
}

fn unknown_fields(object: &Map<String, Value>, allowed: &[&str], path: &str) -> Vec<Problem> {
    object
        .keys()
        .filter(|k| !allowed.contains(&k.as_str()))
        .map(|k| {
            let at = if path.is_empty() {
                shown(k)
            } else {
                format!("{path}.{}", shown(k))
            };
            Problem::field(at, format!("unknown field; allowed here: {}", allowed.join(", ")))
        })
        .collect()
}

#[derive(Clone, Copy)]
enum Expected {
    String,
    Number,
    Bool,
}

impl Expected {
    fn check(self, value: &Value, path: &str) -> Option<Problem> {
        if value.is_null() {
            return Some(Problem::field(
                path,
                "is null, which means nothing here: send a value or leave the field out",
            ));
        }
        let ok = match (self, value) {
            (Expected::String, Value::String(_)) | (Expected::Bool, Value::Bool(_)) => true,
            (Expected::Number, Value::Number(n)) => n.as_f64().is_some(),
            _ => false,
        };
        let wanted = match self {
            Expected::String => "a string",
            Expected::Number => "a number (a plain JSON number, not a string)",
            Expected::Bool => "true or false",
        };
        (!ok).then(|| Problem::field(path, format!("must be {wanted}, not {}", kind(value))))
    }
}

fn kind(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "a list",
        Value::Object(_) => "an object",
    }
}

/// A user-supplied string as echoed in a problem: at most 64 characters.
fn shown(s: &str) -> String {
    const MAX: usize = 64;
    if s.chars().count() <= MAX {
        s.to_owned()
    } else {
        let head: String = s.chars().take(MAX).collect();
        format!("{head}…")
    }
}

/// The meaning stage: a well-shaped body checked for everything else.
fn meaning(raw: RawBody, max_members: usize, thresholds: Thresholds) -> Result<AllocationBody, Vec<Problem>> {
    let mut problems = Vec::new();
    let ask = match (raw.allocations, raw.policy) {
        (Some(_), Some(_)) => {
            problems.push(Problem::general("send either allocations (a list) or policy, not both"));
            None
        }
        (None, None) => {
            problems.push(Problem::general(
                "nothing to do: send allocations (a list of {\"username\", one of set/add/top_up_to}) \
                 or a policy",
            ));
            None
        }
        (Some(entries), None) => {
            if raw.top_up_to.is_some() {
                problems.push(Problem::field(
                    "top_up_to",
                    "a top-level top_up_to only goes with a policy; put it in each allocations entry",
                ));
            }
            explicit(entries, max_members, &mut problems).map(Ask::Explicit)
        }
        (None, Some(policy)) => {
            if !POLICIES.contains(&policy.as_str()) {
                problems.push(Problem::field(
                    "policy",
                    format!("unknown policy '{}'; known: {}", shown(&policy), POLICIES.join(", ")),
                ));
            }
            match raw.top_up_to {
                None => {
                    problems.push(Problem::field(
                        "top_up_to",
                        "the critical policy needs top_up_to: the credits each critical member should have available",
                    ));
                    None
                }
                Some(x) => credits(&x, "top_up_to", None, &mut problems)
                    .map(|top_up_to| Ask::CriticalPolicy { top_up_to, thresholds }),
            }
        }
    };
    if let Some(r) = &raw.reason {
        let chars = r.chars().count();
        if r.trim().is_empty() {
            problems.push(Problem::field("reason", "is empty; say why, or omit it"));
        } else if chars > MAX_REASON_CHARS {
            problems.push(Problem::field(
                "reason",
                format!("{chars} characters, above {MAX_REASON_CHARS}; shorten it (a ticket reference will do)"),
            ));
        } else if r.chars().any(char::is_control) {
            problems.push(Problem::field(
                "reason",
                "contains control characters (newlines, tabs…); send one plain line",
            ));
        }
    }
    match ask {
        Some(ask) if problems.is_empty() => Ok(AllocationBody {
            ask,
            dry_run: raw.dry_run.unwrap_or(false),
            reason: raw.reason,
        }),
        _ => Err(problems),
    }
}

fn explicit(entries: Vec<RawEntry>, max_members: usize, problems: &mut Vec<Problem>) -> Option<Vec<Request>> {
    let before = problems.len();
    if entries.is_empty() {
        problems.push(Problem::field("allocations", "is empty; name at least one member"));
    }
    if entries.len() > max_members {
        problems.push(Problem::field(
            "allocations",
            format!(
                "{} members, above MAX_MEMBERS_PER_REQUEST ({max_members}); split the request",
                entries.len()
            ),
        ));
    }
    let mut seen: HashMap<String, usize> = HashMap::new();
    let mut requests = Vec::with_capacity(entries.len());
    for (i, entry) in entries.into_iter().enumerate() {
        let path = format!("allocations[{i}]");
        let Some(username) = entry.username else {
            problems.push(Problem::field(
                format!("{path}.username"),
                "missing: name the member by exact username",
            ));
            continue;
        };
        let mut named = |field: String, problem: String| {
            problems.push(Problem::field(field, problem).with_username(&username));
        };
        for problem in username_problems(&username) {
            named(format!("{path}.username"), problem);
        }
        if let Some(&first) = seen.get(&username) {
            named(
                format!("{path}.username"),
                format!("listed twice (allocations[{first}] and allocations[{i}]); send one entry per member"),
            );
        } else {
            seen.insert(username.clone(), i);
        }
        let actions: Vec<(&str, serde_json::Number)> =
            [("set", entry.set), ("add", entry.add), ("top_up_to", entry.top_up_to)]
                .into_iter()
                .filter_map(|(name, v)| v.map(|v| (name, v)))
                .collect();
        let (action, amount) = match actions.as_slice() {
            [] => {
                named(path.clone(), "needs one of set, add or top_up_to".into());
                continue;
            }
            [one] => one.clone(),
            several => {
                let names: Vec<&str> = several.iter().map(|(n, _)| *n).collect();
                named(
                    path.clone(),
                    format!("has {}: give exactly one of set, add or top_up_to", names.join(" and ")),
                );
                continue;
            }
        };
        let Some(credits) = credits(&amount, &format!("{path}.{action}"), Some(&username), problems) else {
            continue;
        };
        requests.push(match action {
            "set" => Request::Set { username, credits },
            "add" => Request::Add { username, credits },
            _ => Request::TopUpTo { username, credits },
        });
    }
    (problems.len() == before).then_some(requests)
}

/// A credit amount: an exact decimal (at most six places), ≥ 0 and at most [`MAX_CREDITS`].
fn credits(
    x: &serde_json::Number,
    field: &str,
    username: Option<&str>,
    problems: &mut Vec<Problem>,
) -> Option<Credits> {
    let problem = match Credits::parse_exact(&x.to_string()) {
        Err(e) => e.to_string(),
        Ok(c) if c.is_negative() => format!(
            "is negative ({c}); allocations are absolute and ≥ 0 (to lower one, use set with the smaller value)"
        ),
        Ok(c) if c > MAX_CREDITS => {
            format!("{c} is above the largest accepted amount ({MAX_CREDITS}); check for extra zeros")
        }
        Ok(c) => return Some(c),
    };
    let mut problem = Problem::field(field, problem);
    if let Some(u) = username {
        problem = problem.with_username(u);
    }
    problems.push(problem);
    None
}

/// Why `username` cannot be an ArcGIS username (allowed: letters, digits, `_ . @ -`).
pub fn username_problems(username: &str) -> Vec<String> {
    let mut problems = Vec::new();
    if username.is_empty() {
        problems.push("is empty: name the member by exact username".to_owned());
        return problems;
    }
    let chars = username.chars().count();
    if chars > MAX_USERNAME_CHARS {
        problems.push(format!(
            "{chars} characters, above {MAX_USERNAME_CHARS}: not an ArcGIS username"
        ));
    }
    if username.chars().any(char::is_whitespace) {
        problems.push("contains whitespace: ArcGIS usernames have none (check for stray spaces)".to_owned());
    }
    if username.chars().any(char::is_control) {
        problems.push("contains control characters".to_owned());
    }
    let mut bad: Vec<char> = username
        .chars()
        .filter(|c| !(c.is_alphanumeric() || matches!(c, '_' | '.' | '@' | '-')))
        .filter(|c| !c.is_whitespace() && !c.is_control())
        .collect();
    bad.dedup();
    if !bad.is_empty() {
        let listed: String = bad.iter().take(5).map(|c| format!("'{c}' ")).collect();
        problems.push(format!(
            "contains {}which ArcGIS usernames cannot have (allowed: letters, digits, _ . @ -)",
            listed
        ));
    }
    problems
}

#[cfg(test)]
mod tests {
    use super::*;

    fn problems(body: &str) -> Vec<Problem> {
        parse(body.as_bytes(), 3, Thresholds::default()).unwrap_err()
    }

    #[test]
    fn a_valid_body_of_each_kind() {
        let b = parse(
            br#"{"allocations":[{"username":"a.b@c-d_e","set":500},{"username":"x","add":0.5},{"username":"y","top_up_to":200}],"reason":"ticket 42"}"#,
            3,
            Thresholds::default(),
        )
        .unwrap();
        assert_eq!(
            b.ask,
            Ask::Explicit(vec![
                Request::Set {
                    username: "a.b@c-d_e".into(),
                    credits: Credits::whole(500)
                },
                Request::Add {
                    username: "x".into(),
                    credits: Credits::parse_exact("0.5").unwrap()
                },
                Request::TopUpTo {
                    username: "y".into(),
                    credits: Credits::whole(200)
                },
            ])
        );
        assert!(!b.dry_run);
        assert_eq!(b.reason.as_deref(), Some("ticket 42"));
        let p = parse(
            br#"{"policy":"critical","top_up_to":200,"dry_run":true}"#,
            3,
            Thresholds::default(),
        )
        .unwrap();
        assert!(p.dry_run);
        assert!(
            matches!(p.ask, Ask::CriticalPolicy { top_up_to, thresholds } if top_up_to == Credits::whole(200) && thresholds == Thresholds::default())
        );
    }

    #[test]
    fn every_shape_problem_is_named_together() {
        let p = problems(r#"{"allocations":[{"username":"a","set":"5","extra":1},7],"dryrun":true,"reason":5}"#);
        let fields: Vec<_> = p.iter().filter_map(|p| p.field.as_deref()).collect();
        assert!(fields.contains(&"dryrun"), "{p:?}");
        assert!(fields.contains(&"reason"), "{p:?}");
        assert!(fields.contains(&"allocations[0].extra"), "{p:?}");
        assert!(fields.contains(&"allocations[0].set"), "{p:?}");
        assert!(fields.contains(&"allocations[1]"), "{p:?}");
    }

    #[test]
    fn null_has_no_meaning_anywhere() {
        // `"dry_run": null` used to read as "not a dry run" and apply for real.
        for (body, field) in [
            (r#"{"policy":"critical","top_up_to":200,"dry_run":null}"#, "dry_run"),
            (r#"{"allocations":[{"username":"a","set":5}],"reason":null}"#, "reason"),
            (
                r#"{"allocations":null,"policy":"critical","top_up_to":1}"#,
                "allocations",
            ),
            (
                r#"{"allocations":[{"username":"a","set":null,"add":5}]}"#,
                "allocations[0].set",
            ),
            (
                r#"{"allocations":[{"username":null,"set":5}]}"#,
                "allocations[0].username",
            ),
            (r#"{"policy":null,"top_up_to":1}"#, "policy"),
        ] {
            let p = problems(body);
            assert!(
                p.iter()
                    .any(|p| p.field.as_deref() == Some(field) && p.problem.contains("null")),
                "{body}: {p:?}"
            );
        }
    }

    #[test]
    fn entries_must_be_objects() {
        // serde reads a JSON array as a struct by position: ["user", 100] was accepted.
        let p = problems(r#"{"allocations":[["jdoe", 100]]}"#);
        assert_eq!(p[0].field.as_deref(), Some("allocations[0]"), "{p:?}");
        assert!(p[0].problem.contains("must be an object"), "{p:?}");
        let p = problems(r#"{"allocations":[{"username":"a","set":5}, ["b", 1, 2, 3]]}"#);
        assert_eq!(p.len(), 1, "{p:?}");
    }

    #[test]
    fn amounts_are_exact_decimals() {
        let b = parse(
            br#"{"allocations":[{"username":"a","add":0.1},{"username":"b","set":250.1}]}"#,
            3,
            Thresholds::default(),
        )
        .unwrap();
        let Ask::Explicit(r) = b.ask else { panic!() };
        assert_eq!(r[0].credits().to_string(), "0.1");
        assert_eq!(r[1].credits().to_string(), "250.1");
        for (amount, says) in [
            ("0.30000000000000004", "more than 6 decimal places"),
            ("1e-7", "more than 6 decimal places"),
            ("-1", "negative"),
            ("1e10", "above the largest accepted amount"),
            ("1e300", "larger than any real amount"),
        ] {
            let p = problems(&format!(r#"{{"allocations":[{{"username":"a","add":{amount}}}]}}"#));
            assert!(p[0].problem.contains(says), "{amount}: {p:?}");
        }
    }

    #[test]
    fn usernames() {
        assert!(username_problems("jdoe_admin.x@org-1").is_empty());
        assert!(username_problems("jürgen").is_empty());
        assert!(!username_problems("a b").is_empty());
        assert!(!username_problems("a/b").is_empty());
        assert!(!username_problems("a\u{7}").is_empty());
        assert!(!username_problems(&"x".repeat(129)).is_empty());
        assert!(username_problems(&"x".repeat(128)).is_empty());
    }

    #[test]
    fn idempotency_keys() {
        assert!(check_idempotency_key("3f2c-uuid").is_ok());
        assert!(check_idempotency_key("").is_err());
        assert!(check_idempotency_key("é").is_err());
        assert!(check_idempotency_key(&"k".repeat(201)).is_err());
        assert_eq!(crate::apply::body_hash(b"abc").len(), 64);
    }
}
