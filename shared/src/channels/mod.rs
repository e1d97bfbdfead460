//! Alert channels beside the ArcGIS notification: an SNS topic, Slack and Microsoft Teams
//! incoming webhooks, and a generic HTTPS webhook signed with HMAC-SHA256. Each is optional
//! and independent: one failing neither blocks the others nor the ArcGIS alert.
//!
//! What they carry is one [`AlertMessage`] per run that reports crossings. Exactly once per
//! channel comes from the ledger's outbox ([`crate::ledger::alerts`], "The channels'
//! outbox"): the scan stages what each channel will owe with the alert state, and a channel
//! delivers (and settles) it after the commit; what failed is owed to the next run.
//!
//! # Retry semantics
//!
//! A channel's failure is [`Failure::Retry`] (kept, delivered by the next run) unless the
//! receiver refused the message itself: HTTP 400, 413 or 422 (or SNS's invalid-parameter
//! errors) are [`Failure::Refused`], since sending the same bytes again cannot succeed; the
//! message is dropped and the run reports it. Timeouts, connection errors, 5xx, 429 and the
//! other 4xx (a revoked or mistyped URL answers 401/403/404/410: fixing the secret makes the
//! next run deliver) are retried. Each channel stops at its first failure in a run, so a
//! channel that is down costs one request per run.
//!
//! The webhook URLs are secrets (whoever has one can post): they live in the Secrets
//! Manager secret, are held as [`Secret`], and no error or log line shows them: errors name
//! the channel and the HTTP status, never the URL (reqwest's errors are stripped of it).

pub mod message;
pub mod sns;

use std::fmt;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use hmac::{Hmac, Mac};
use serde::Serialize;
use sha2::Sha256;

use crate::arcgis::Secret;

pub use message::AlertMessage;
pub use sns::SnsTopic;

/// How long one delivery may take (connect included): a channel that hangs must not eat the
/// scan's time. Slack, Teams and SNS answer in well under a second.
pub const DELIVERY_TIMEOUT: Duration = Duration::from_secs(10);

/// The webhook's timestamp header: Unix seconds of the delivery.
pub const TIMESTAMP_HEADER: &str = "X-Credit-Steward-Timestamp";
/// The webhook's signature header: `sha256=` and the hex HMAC-SHA256 of
/// `timestamp + "." + body` under the shared key.
pub const SIGNATURE_HEADER: &str = "X-Credit-Steward-Signature";

/// An alert channel.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ChannelKind {
    /// An SNS topic (`ALERT_TOPIC_ARN`).
    Sns,
    /// A Slack incoming webhook (`slack_webhook_url` in the secret).
    Slack,
    /// A Microsoft Teams webhook (`teams_webhook_url` in the secret).
    Teams,
    /// A generic HTTPS webhook (`webhook_url` + `webhook_hmac_key` in the secret).
    Webhook,
}

impl ChannelKind {
    /// The name used in the ledger, the run's result and its log.
    pub fn as_str(self) -> &'static str {
        match self {
            ChannelKind::Sns => "sns",
            ChannelKind::Slack => "slack",
            ChannelKind::Teams => "teams",
            ChannelKind::Webhook => "webhook",
        }
    }

    /// The channel named `name` in the ledger.
    pub fn parse(name: &str) -> Option<ChannelKind> {
        [
            ChannelKind::Sns,
            ChannelKind::Slack,
            ChannelKind::Teams,
            ChannelKind::Webhook,
        ]
        .into_iter()
        .find(|k| k.as_str() == name)
    }
}

impl fmt::Display for ChannelKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Why a delivery failed, and whether it is worth retrying.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Failure {
    /// Down, slow or misconfigured: the message stays owed and the next run sends it.
    Retry(String),
    /// The receiver refused the message itself: it is dropped.
    Refused(String),
}

/// A failed delivery: the channel and why (never its URL).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{channel}: {}", self.detail())]
pub struct DeliveryError {
    /// The channel.
    pub channel: ChannelKind,
    /// What happened.
    pub failure: Failure,
}

impl DeliveryError {
    /// The reason, without the channel.
    pub fn detail(&self) -> &str {
        match &self.failure {
            Failure::Retry(d) | Failure::Refused(d) => d,
        }
    }

    /// Whether the next run tries again.
    pub fn retried(&self) -> bool {
        matches!(self.failure, Failure::Retry(_))
    }
}

/// The channel settings kept in the Secrets Manager secret, beside the ArcGIS credentials.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct ChannelSecrets {
    /// `slack_webhook_url`.
    pub slack_webhook_url: Option<Secret>,
    /// `teams_webhook_url`.
    pub teams_webhook_url: Option<Secret>,
    /// `webhook_url`.
    pub webhook_url: Option<Secret>,
    /// `webhook_hmac_key`: the key receivers verify the signature with.
    pub webhook_hmac_key: Option<Secret>,
}

impl fmt::Debug for ChannelSecrets {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Which channels are set, never their values.
        f.debug_struct("ChannelSecrets")
            .field("slack", &self.slack_webhook_url.is_some())
            .field("teams", &self.teams_webhook_url.is_some())
            .field("webhook", &self.webhook_url.is_some())
            .finish()
    }
}

impl ChannelSecrets {
    /// The secret keys of the channels.
    pub const KEYS: [&'static str; 4] = [
        "slack_webhook_url",
        "teams_webhook_url",
        "webhook_url",
        "webhook_hmac_key",
    ];

    /// Checks what the secret holds for the channels; each problem names the key, never the
    /// value. URLs must be HTTPS (plain HTTP only to a loopback address: a local receiver).
    pub fn check(&self) -> Vec<String> {
        let mut problems = Vec::new();
        for (key, url) in [
            ("slack_webhook_url", &self.slack_webhook_url),
            ("teams_webhook_url", &self.teams_webhook_url),
            ("webhook_url", &self.webhook_url),
        ] {
            if let Some(url) = url
                && let Err(why) = check_url(url.expose())
            {
                problems.push(format!("{key} {why}"));
            }
        }
        match (&self.webhook_url, &self.webhook_hmac_key) {
            (Some(_), None) => problems
                .push("missing key: webhook_hmac_key (it goes with webhook_url: receivers verify with it)".into()),
            (None, Some(_)) => problems.push("webhook_hmac_key without webhook_url".into()),
            (Some(_), Some(key)) if key.expose().len() < 16 => {
                problems.push("webhook_hmac_key must be at least 16 characters".into())
            }
            _ => {}
        }
        problems
    }
}

fn check_url(url: &str) -> Result<(), String> {
    let parsed = crate::web_url::parse(url).map_err(|e| format!("is {e}"))?;
    let loopback = crate::web_url::is_loopback(&parsed);
    match parsed.scheme() {
        "https" => Ok(()),
        "http" if loopback => Ok(()),
        _ => Err("must be an https:// URL".to_owned()),
    }
}

/// The channels configured for a deployment.
pub struct Channels {
    sns: Option<SnsTopic>,
    slack: Option<Secret>,
    teams: Option<Secret>,
    webhook: Option<(Secret, Secret)>,
    http: Result<reqwest::Client, String>,
}

impl fmt::Debug for Channels {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Channels")
            .field("configured", &self.configured())
            .finish()
    }
}

impl Channels {
    /// No channel: the ArcGIS notification only.
    pub fn none() -> Channels {
        Channels::new(None, &ChannelSecrets::default())
    }

    /// The channels of `sns` and `secrets` (already checked by [`ChannelSecrets::check`]).
    pub fn new(sns: Option<SnsTopic>, secrets: &ChannelSecrets) -> Channels {
        crate::arcgis::client::install_ring_provider();
        let http = reqwest::Client::builder()
            // A redirect would send the body (and its signature) somewhere not configured.
            .redirect(reqwest::redirect::Policy::none())
            .timeout(DELIVERY_TIMEOUT)
            .connect_timeout(DELIVERY_TIMEOUT / 2)
            .user_agent(concat!("credit-steward/", env!("CARGO_PKG_VERSION")))
            .build()
            // Fails only when TLS cannot start: each webhook delivery then fails with why.
            .map_err(|e| format!("the HTTP client could not start ({})", e.without_url()));
        Channels {
            sns,
            slack: secrets.slack_webhook_url.clone(),
            teams: secrets.teams_webhook_url.clone(),
            webhook: secrets.webhook_url.clone().zip(secrets.webhook_hmac_key.clone()),
            http,
        }
    }

    /// The configured channels, in a stable order.
    pub fn configured(&self) -> Vec<ChannelKind> {
        let mut kinds = Vec::new();
        if self.sns.is_some() {
            kinds.push(ChannelKind::Sns);
        }
        if self.slack.is_some() {
            kinds.push(ChannelKind::Slack);
        }
        if self.teams.is_some() {
            kinds.push(ChannelKind::Teams);
        }
        if self.webhook.is_some() {
            kinds.push(ChannelKind::Webhook);
        }
        kinds
    }

    /// Whether any channel is configured.
    pub fn any(&self) -> bool {
        !self.configured().is_empty()
    }

    /// Delivers `message` on `channel` (`late` when a later run delivers it).
    pub async fn send(&self, channel: ChannelKind, message: &AlertMessage, late: bool) -> Result<(), DeliveryError> {
        let fail = |failure| DeliveryError { channel, failure };
        let not_configured = || fail(Failure::Retry("not configured in this deployment any more".into()));
        match channel {
            ChannelKind::Sns => match &self.sns {
                Some(topic) => topic.publish(message, late).await.map_err(fail),
                None => Err(not_configured()),
            },
            ChannelKind::Slack => match &self.slack {
                Some(url) => self.post_json(url, &message.slack_body(late)).await.map_err(fail),
                None => Err(not_configured()),
            },
            ChannelKind::Teams => match &self.teams {
                Some(url) => self.post_json(url, &message.teams_body(late)).await.map_err(fail),
                None => Err(not_configured()),
            },
            ChannelKind::Webhook => match &self.webhook {
                Some((url, key)) => {
                    let body = message.webhook_body(late);
                    let timestamp = SystemTime::now()
                        .duration_since(UNIX_EPOCH)
                        .map(|d| d.as_secs())
                        .unwrap_or_default()
                        .to_string();
                    let signature = sign(key.expose().as_bytes(), &timestamp, &body);
                    let http = self.http.as_ref().map_err(|e| fail(Failure::Retry(e.clone())))?;
                    let request = http
                        .post(url.expose().trim())
                        .header(reqwest::header::CONTENT_TYPE, "application/json")
                        .header(TIMESTAMP_HEADER, &timestamp)
                        .header(SIGNATURE_HEADER, signature)
                        .body(body);
                    deliver(request).await.map_err(fail)
                }
                None => Err(not_configured()),
            },
        }
    }

    async fn post_json(&self, url: &Secret, body: &serde_json::Value) -> Result<(), Failure> {
        let http = self.http.as_ref().map_err(|e| Failure::Retry(e.clone()))?;
        deliver(http.post(url.expose().trim()).json(body)).await
    }
}

/// `sha256=` and the hex HMAC-SHA256 of `timestamp + "." + body` under `key`.
#[allow(clippy::expect_used, reason = "HMAC takes keys of any length")]
pub fn sign(key: &[u8], timestamp: &str, body: &[u8]) -> String {
    let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(key).expect("HMAC accepts any key length");
    mac.update(timestamp.as_bytes());
    mac.update(b".");
    mac.update(body);
    let digest = mac.finalize().into_bytes();
    let hex: String = digest.iter().map(|b| format!("{b:02x}")).collect();
    format!("sha256={hex}")
}

/// Sends one request; the outcome by status, every error without the URL.
async fn deliver(request: reqwest::RequestBuilder) -> Result<(), Failure> {
    let response = request.send().await.map_err(|e| {
        Failure::Retry(if e.is_timeout() {
            format!("no answer within {} s", DELIVERY_TIMEOUT.as_secs())
        } else if e.is_connect() {
            "could not connect".to_owned()
        } else {
            format!("request failed ({})", e.without_url())
        })
    })?;
    let status = response.status();
    if status.is_success() {
        return Ok(());
    }
    let code = status.as_u16();
    // The receiver's own words help (Slack: "invalid_payload", "channel_is_archived"), but
    // kept short and to one line.
    let said: String = response
        .text()
        .await
        .unwrap_or_default()
        .chars()
        .filter(|c| !c.is_control())
        .take(120)
        .collect();
    let detail = if said.trim().is_empty() {
        format!("HTTP {code}")
    } else {
        format!("HTTP {code} ({})", said.trim())
    };
    Err(match code {
        400 | 413 | 422 => Failure::Refused(format!(
            "{detail}: the receiver refused the message; it is not sent again"
        )),
        401 | 403 | 404 | 410 => Failure::Retry(format!(
            "{detail}: the webhook URL is refused or gone; fix it in the secret, the next run delivers"
        )),
        _ => Failure::Retry(detail),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_signature_is_the_hmac_of_timestamp_dot_body() {
        // RFC 4231 test case 2 covers HMAC itself; here, what is signed and how it is spelled.
        let key = b"key";
        let expected = {
            let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(key).unwrap();
            mac.update(b"1700000000.{\"a\":1}");
            mac.finalize().into_bytes()
        };
        let hex: String = expected.iter().map(|b| format!("{b:02x}")).collect();
        assert_eq!(sign(key, "1700000000", b"{\"a\":1}"), format!("sha256={hex}"));
        assert_eq!(hex.len(), 64);
        // The known answer of HMAC-SHA256("key", "The quick brown fox jumps over the lazy dog").
        let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(key).unwrap();
        mac.update(b"The quick brown fox jumps over the lazy dog");
        let digest: String = mac.finalize().into_bytes().iter().map(|b| format!("{b:02x}")).collect();
        assert_eq!(
            digest,
            "f7bc83f430538424b13298e6aa6fb143ef4d59a14946175997479dbc2d1a3cd8"
        );
    }

    #[test]
    fn urls_must_be_https_except_to_loopback_and_problems_never_quote_them() {
        let secrets = |url: &str| ChannelSecrets {
            slack_webhook_url: Some(Secret::new(url)),
            ..ChannelSecrets::default()
        };
        assert!(secrets("https://hooks.slack.com/services/T/B/x").check().is_empty());
        assert!(secrets("http://127.0.0.1:9/hook").check().is_empty());
        let problems = secrets("http://hooks.example.com/services/T/B/secret-token").check();
        assert_eq!(problems, ["slack_webhook_url must be an https:// URL"]);
        let problems = secrets("not a url secret-token").check();
        assert_eq!(problems, ["slack_webhook_url is not a valid URL"]);
        let webhook = ChannelSecrets {
            webhook_url: Some(Secret::new("https://example.com/hook")),
            ..ChannelSecrets::default()
        };
        assert!(webhook.check()[0].starts_with("missing key: webhook_hmac_key"));
        assert_eq!(
            format!("{:?}", secrets("https://hooks.slack.com/services/T/B/secret-token")),
            "ChannelSecrets { slack: true, teams: false, webhook: false }"
        );
    }

    #[test]
    fn channel_names_round_trip() {
        for kind in [
            ChannelKind::Sns,
            ChannelKind::Slack,
            ChannelKind::Teams,
            ChannelKind::Webhook,
        ] {
            assert_eq!(ChannelKind::parse(kind.as_str()), Some(kind));
        }
        assert_eq!(ChannelKind::parse("email"), None);
    }
}
