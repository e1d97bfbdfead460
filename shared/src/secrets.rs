//! ArcGIS credentials read from AWS Secrets Manager, cached in process, never printed.
//!
//! The secret (named by `ARCGIS_SECRET_ID`) is JSON in one of three shapes, each with
//! `portal_url` and an optional `referer`:
//! `{"username","password"}`, `{"client_id","client_secret"}` or `{"api_key"}`. It may also
//! hold the alert channels' webhooks (`slack_webhook_url`, `teams_webhook_url`, `webhook_url`
//! with `webhook_hmac_key`): whoever has such a URL can post, so they are secrets too.
//! Validation errors name keys, never values; the portal URL is shown as scheme and host only,
//! since it could carry a password or a token. The AWS client is configured as
//! [`crate::aws`] says (ring-only, `AWS_ENDPOINT_URL*` pointing it at a local emulator in tests).

#![warn(missing_docs)]

use std::collections::HashMap;
use std::fmt;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use aws_sdk_secretsmanager::error::DisplayErrorContext;
use serde_json::{Map, Value};

use crate::arcgis::{Credentials, Secret, redact_url};
use crate::channels::ChannelSecrets;

/// Keys a secret may hold.
const KNOWN_KEYS: [&str; 11] = [
    "portal_url",
    "referer",
    "username",
    "password",
    "client_id",
    "client_secret",
    "api_key",
    "slack_webhook_url",
    "teams_webhook_url",
    "webhook_url",
    "webhook_hmac_key",
];

/// The parsed ArcGIS secret.
#[derive(Clone, PartialEq, Eq)]
pub struct ArcgisSecret {
    /// The org URL (or its `/sharing/rest` URL).
    pub portal_url: String,
    /// A Referer to bind tokens to, overriding `ARCGIS_REFERER` when set.
    pub referer: Option<String>,
    /// How to sign in.
    pub credentials: Credentials,
    /// The alert channels' webhooks, when set (their `Debug` says which, never the URLs).
    pub channels: ChannelSecrets,
}

impl fmt::Debug for ArcgisSecret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // The portal URL is not secret but could carry userinfo or a token.
        f.debug_struct("ArcgisSecret")
            .field("portal", &redact_url(&self.portal_url))
            .field("referer", &self.referer)
            .field("credentials", &self.credentials)
            .field("channels", &self.channels)
            .finish()
    }
}

impl ArcgisSecret {
    /// Parses the secret's JSON text. Every problem is listed, by key name only.
    pub fn parse(text: &str) -> Result<ArcgisSecret, Vec<String>> {
        // Parse to a map first: serde's type errors can quote values, syntax errors cannot.
        let value: Value = serde_json::from_str(text).map_err(|e| vec![format!("not valid JSON ({e})")])?;
        let Value::Object(map) = value else {
            return Err(vec!["not a JSON object".to_owned()]);
        };
        let mut problems = Vec::new();
        let mut unexpected: Vec<&str> = map
            .keys()
            .map(String::as_str)
            .filter(|k| !KNOWN_KEYS.contains(k))
            .collect();
        unexpected.sort_unstable();
        if !unexpected.is_empty() {
            problems.push(format!(
                "unexpected keys: {} (allowed: {})",
                unexpected.join(", "),
                KNOWN_KEYS.join(", ")
            ));
        }
        let get = |key: &str, problems: &mut Vec<String>| -> Option<String> { field(&map, key, problems) };
        let portal_url = get("portal_url", &mut problems);
        let referer = get("referer", &mut problems);
        let username = get("username", &mut problems);
        let password = get("password", &mut problems);
        let client_id = get("client_id", &mut problems);
        let client_secret = get("client_secret", &mut problems);
        let api_key = get("api_key", &mut problems);
        let channels = ChannelSecrets {
            slack_webhook_url: get("slack_webhook_url", &mut problems).map(Secret::new),
            teams_webhook_url: get("teams_webhook_url", &mut problems).map(Secret::new),
            webhook_url: get("webhook_url", &mut problems).map(Secret::new),
            webhook_hmac_key: get("webhook_hmac_key", &mut problems).map(Secret::new),
        };
        problems.extend(channels.check());

        if !map.contains_key("portal_url") {
            problems.push("missing key: portal_url".to_owned());
        } else if let Some(url) = &portal_url {
            match crate::web_url::parse(url) {
                Err(e) => problems.push(format!("portal_url is {e}")),
                // Said now, by key: the client would refuse it later, less plainly.
                Ok(u) if !u.username().is_empty() || u.password().is_some() => problems.push(
                    "portal_url must not contain a user name or password (they go in the username and \
                     password keys)"
                        .to_owned(),
                ),
                Ok(_) => {}
            }
        }

        let shapes = [
            ("username + password", ["username", "password"].as_slice()),
            ("client_id + client_secret", ["client_id", "client_secret"].as_slice()),
            ("api_key", ["api_key"].as_slice()),
        ];
        let present: Vec<&(&str, &[&str])> = shapes
            .iter()
            .filter(|(_, keys)| keys.iter().any(|k| map.contains_key(*k)))
            .collect();
        match present.as_slice() {
            [] => problems.push(
                "missing credentials: expected username + password, client_id + client_secret, or api_key".to_owned(),
            ),
            [(_, keys)] => {
                for k in keys.iter().filter(|k| !map.contains_key(**k)) {
                    problems.push(format!("missing key: {k} (it goes with {})", keys.join(" + ")));
                }
            }
            several => problems.push(format!(
                "keys from several credential shapes ({}): keep exactly one",
                several.iter().map(|(name, _)| *name).collect::<Vec<_>>().join("; ")
            )),
        }
        if !problems.is_empty() {
            return Err(problems);
        }

        let credentials = match (username, password, client_id, client_secret, api_key) {
            (Some(username), Some(password), None, None, None) => Credentials::UserPassword {
                username,
                password: Secret::new(password),
            },
            (None, None, Some(client_id), Some(client_secret), None) => Credentials::OAuthApp {
                client_id,
                client_secret: Secret::new(client_secret),
            },
            (None, None, None, None, Some(key)) => Credentials::ApiKey(Secret::new(key)),
            // Unreachable after the shape checks, but answered, not panicked.
            _ => return Err(vec!["incomplete credentials".to_owned()]),
        };
        Ok(ArcgisSecret {
            portal_url: portal_url.unwrap_or_default(),
            referer,
            credentials,
            channels,
        })
    }
}

/// A string field: present and non-empty, or a problem naming the key (and only the key).
fn field(map: &Map<String, Value>, key: &str, problems: &mut Vec<String>) -> Option<String> {
    match map.get(key)? {
        Value::String(s) if !s.trim().is_empty() => Some(s.clone()),
        Value::String(_) => {
            problems.push(format!("key {key} is empty"));
            None
        }
        other => {
            let kind = match other {
                Value::Null => "null",
                Value::Bool(_) => "a boolean",
                Value::Number(_) => "a number",
                Value::Array(_) => "an array",
                _ => "an object",
            };
            problems.push(format!("key {key} must be a string, not {kind}"));
            None
        }
    }
}

/// Why the ArcGIS secret could not be had.
#[derive(Debug, thiserror::Error)]
pub enum SecretError {
    /// Secrets Manager has no secret by that id.
    #[error("secret '{id}' does not exist in Secrets Manager: check ARCGIS_SECRET_ID and the region")]
    NotFound {
        /// The secret id.
        id: String,
    },
    /// The call to Secrets Manager failed (permissions, network, throttling).
    #[error(
        "reading secret '{id}' from Secrets Manager failed: {detail}. Check the function's IAM \
        policy (secretsmanager:GetSecretValue) and network access"
    )]
    Fetch {
        /// The secret id.
        id: String,
        /// The SDK's error chain (it never contains the secret's value).
        detail: String,
    },
    /// The secret is binary or has no string value.
    #[error("secret '{id}' has no SecretString: store the ArcGIS credentials as JSON text")]
    NotText {
        /// The secret id.
        id: String,
    },
    /// The secret's JSON is not one of the accepted shapes.
    #[error("secret '{id}' is not valid ArcGIS credentials: {}. Expected JSON with portal_url and \
        username + password, client_id + client_secret, or api_key (optional referer)", problems.join("; "))]
    Invalid {
        /// The secret id.
        id: String,
        /// Each problem, naming keys, never values.
        problems: Vec<String>,
    },
}

/// The ArcGIS secret, fetched once and kept for a TTL (Lambda containers live for hours;
/// a rotated password is picked up within one TTL, or at once after [`SecretCache::invalidate`]).
pub struct SecretCache {
    client: aws_sdk_secretsmanager::Client,
    ttl: Duration,
    entries: Mutex<HashMap<String, (Instant, Arc<ArcgisSecret>)>>,
}

impl fmt::Debug for SecretCache {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SecretCache")
            .field("ttl", &self.ttl)
            .finish_non_exhaustive()
    }
}

impl SecretCache {
    /// A cache over an existing Secrets Manager client.
    pub fn new(client: aws_sdk_secretsmanager::Client, ttl: Duration) -> Self {
        SecretCache {
            client,
            ttl,
            entries: Mutex::new(HashMap::new()),
        }
    }

    /// A cache over a client configured from the Lambda environment
    /// ([`crate::aws::lambda_config`]).
    pub fn from_env(ttl: Duration) -> Self {
        let config = crate::aws::lambda_config();
        Self::new(aws_sdk_secretsmanager::Client::new(&config), ttl)
    }

    /// The parsed secret `id`, from the cache when younger than the TTL.
    pub async fn arcgis_secret(&self, id: &str) -> Result<Arc<ArcgisSecret>, SecretError> {
        if let Some((at, secret)) = self.lock().get(id)
            && at.elapsed() < self.ttl
        {
            return Ok(secret.clone());
        }
        tracing::debug!(secret_id = id, "fetching ArcGIS secret");
        let output = self.client.get_secret_value().secret_id(id).send().await.map_err(|e| {
            if e.as_service_error()
                .is_some_and(|s| s.is_resource_not_found_exception())
            {
                SecretError::NotFound { id: id.to_owned() }
            } else {
                SecretError::Fetch {
                    id: id.to_owned(),
                    detail: DisplayErrorContext(&e).to_string(),
                }
            }
        })?;
        let text = output
            .secret_string()
            .ok_or_else(|| SecretError::NotText { id: id.to_owned() })?;
        let secret = Arc::new(ArcgisSecret::parse(text).map_err(|problems| SecretError::Invalid {
            id: id.to_owned(),
            problems,
        })?);
        tracing::info!(
            secret_id = id,
            credentials = secret.credentials.describe(),
            "ArcGIS secret loaded"
        );
        self.lock().insert(id.to_owned(), (Instant::now(), secret.clone()));
        Ok(secret)
    }

    /// Forgets `id`, so the next read fetches it again (after ArcGIS refused the credentials).
    pub fn invalidate(&self, id: &str) {
        self.lock().remove(id);
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, (Instant, Arc<ArcgisSecret>)>> {
        self.entries.lock().unwrap_or_else(|p| p.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const VALUES: [&str; 4] = [
        "hunter2-pass",
        "s3cr3t-client",
        "AAPK-key-value",
        "https://org.example.com",
    ];

    fn problems(text: &str) -> Vec<String> {
        ArcgisSecret::parse(text).unwrap_err()
    }

    #[test]
    fn three_shapes() {
        let s = ArcgisSecret::parse(
            r#"{"portal_url":"https://org.example.com","username":"admin","password":"hunter2-pass","referer":"r"}"#,
        )
        .unwrap();
        assert_eq!(s.referer.as_deref(), Some("r"));
        assert!(
            matches!(&s.credentials, Credentials::UserPassword { username, password }
            if username == "admin" && password.expose() == "hunter2-pass")
        );
        let s = ArcgisSecret::parse(r#"{"portal_url":"https://o","client_id":"app","client_secret":"s3cr3t-client"}"#)
            .unwrap();
        assert!(matches!(s.credentials, Credentials::OAuthApp { .. }));
        let s = ArcgisSecret::parse(r#"{"portal_url":"https://o","api_key":"AAPK-key-value"}"#).unwrap();
        assert!(matches!(s.credentials, Credentials::ApiKey(_)));
        assert_eq!(s.referer, None);
    }

    #[test]
    fn missing_and_unexpected_keys_are_named_together() {
        let p = problems(r#"{"username":"admin","passwd":"hunter2-pass"}"#);
        let all = p.join(" | ");
        assert!(all.contains("unexpected keys: passwd"), "{all}");
        assert!(all.contains("missing key: portal_url"), "{all}");
        assert!(all.contains("missing key: password"), "{all}");
        assert!(!all.contains("hunter2-pass"), "{all}");
    }

    #[test]
    fn ambiguous_empty_and_mistyped() {
        let all = problems(
            r#"{"portal_url":"https://o","username":"a","password":"hunter2-pass","api_key":"AAPK-key-value"}"#,
        )
        .join(" | ");
        assert!(all.contains("several credential shapes"), "{all}");
        let all = problems(r#"{"portal_url":"https://o","api_key":""}"#).join(" | ");
        assert!(all.contains("key api_key is empty"), "{all}");
        let all = problems(r#"{"portal_url":"https://o","username":"a","password":12345678}"#).join(" | ");
        assert!(
            all.contains("key password must be a string, not a number") && !all.contains("12345678"),
            "{all}"
        );
        let all = problems(r#"{"portal_url":"not a url","api_key":"AAPK-key-value"}"#).join(" | ");
        assert!(
            all.contains("portal_url is not a valid URL") && !all.contains("not a url"),
            "{all}"
        );
        assert!(problems(r#"{"portal_url":"https://o"}"#)[0].starts_with("missing credentials"));
        let all = problems(r#"{"portal_url":"https://sigé.maps.arcgis.com","api_key":"AAPK-key-value"}"#).join(" | ");
        assert!(
            all.contains("portal_url is not a valid URL: write an international host name in its ASCII form (xn--…)"),
            "{all}"
        );
    }

    #[test]
    fn bad_json_never_quotes_the_text() {
        let all = problems(r#"{"portal_url":"https://org.example.com","password":"hunter2-pass" "#).join(" ");
        assert!(all.starts_with("not valid JSON"), "{all}");
        for v in VALUES {
            assert!(!all.contains(v), "{all}");
        }
        assert_eq!(problems("[1]"), vec!["not a JSON object"]);
    }

    #[test]
    fn a_portal_url_with_credentials_is_refused_by_key_without_quoting_it() {
        let text =
            r#"{"portal_url":"https://user:pa55word@org.example.com/sharing/rest?token=SECRET123","api_key":"k"}"#;
        let all = problems(text).join(" | ");
        assert!(
            all.contains("portal_url must not contain a user name or password"),
            "{all}"
        );
        assert!(!all.contains("pa55word") && !all.contains("SECRET123"), "{all}");
        // A token in the query is not refused (the client drops the query) but never printed.
        let s = ArcgisSecret::parse(
            r#"{"portal_url":"https://org.example.com/p/sharing/rest?token=SECRET123","api_key":"k"}"#,
        )
        .unwrap();
        let dbg = format!("{s:?}");
        assert!(!dbg.contains("SECRET123") && !dbg.contains("/p/"), "{dbg}");
    }

    #[test]
    fn debug_and_errors_redact_values() {
        for text in [
            r#"{"portal_url":"https://org.example.com","username":"admin","password":"hunter2-pass"}"#,
            r#"{"portal_url":"https://org.example.com","client_id":"app","client_secret":"s3cr3t-client"}"#,
            r#"{"portal_url":"https://org.example.com","api_key":"AAPK-key-value"}"#,
        ] {
            let s = ArcgisSecret::parse(text).unwrap();
            let dbg = format!("{s:?}");
            for v in &VALUES[..3] {
                assert!(!dbg.contains(v), "{dbg}");
            }
            assert!(dbg.contains("https://org.example.com"), "{dbg}");
        }
        let e = SecretError::Invalid {
            id: "arcgis".into(),
            problems: problems(r#"{"api_key":"AAPK-key-value","x":1}"#),
        };
        assert!(!e.to_string().contains("AAPK-key-value"));
    }

    #[test]
    fn channel_webhooks_are_read_checked_and_never_shown() {
        let hook = "https://hooks.slack.com/services/T0/B0/slack-token-value";
        let s = ArcgisSecret::parse(&format!(
            r#"{{"portal_url":"https://org.example.com","api_key":"k","slack_webhook_url":"{hook}",
            "webhook_url":"https://hooks.example.org/in/webhook-token","webhook_hmac_key":"0123456789abcdef-key"}}"#
        ))
        .unwrap();
        assert_eq!(s.channels.slack_webhook_url.as_ref().map(Secret::expose), Some(hook));
        assert!(s.channels.teams_webhook_url.is_none());
        let dbg = format!("{s:?}");
        assert!(
            !dbg.contains("slack-token-value") && !dbg.contains("webhook-token") && !dbg.contains("abcdef-key"),
            "{dbg}"
        );
        let problems = problems(
            r#"{"portal_url":"https://org.example.com","api_key":"k","teams_webhook_url":"http://teams.example.com/x-token",
            "webhook_url":"https://hooks.example.org/in/webhook-token"}"#,
        );
        assert_eq!(
            problems,
            [
                "teams_webhook_url must be an https:// URL",
                "missing key: webhook_hmac_key (it goes with webhook_url: receivers verify with it)"
            ]
        );
        assert!(!problems.join(" ").contains("x-token"));
    }
}
