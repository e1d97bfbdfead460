//! Org notifications (`portals/self/createNotification`; see docs/arcgis.md, "Notifications
//! (`createNotification`)"): at most 25 recipients per call, usernames comma-separated. Never
//! retried automatically once the request may have reached ArcGIS (a repeat emails everyone
//! again), so a failed batch is reported and the caller decides.

use std::collections::HashSet;
use std::fmt;
use std::str::FromStr;

use serde_json::Value;

use super::allocation::validate_usernames;
use super::batch::{self, BatchOutcome};
use super::client::Client;
use super::endpoint::CREATE_NOTIFICATION;
use super::error::Error;

/// Most recipients per `createNotification` call.
pub const NOTIFICATION_BATCH: usize = 25;

/// Where a notification goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum NotifyChannel {
    /// An email to the member's address (the default).
    #[default]
    Email,
    /// The notifications list in the ArcGIS Online home app.
    Builtin,
}

impl NotifyChannel {
    /// The `notificationChannelType` value.
    pub fn as_str(self) -> &'static str {
        match self {
            NotifyChannel::Email => "email",
            NotifyChannel::Builtin => "builtin",
        }
    }
}

impl fmt::Display for NotifyChannel {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for NotifyChannel {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.trim().to_ascii_lowercase().as_str() {
            "email" => Ok(NotifyChannel::Email),
            "builtin" => Ok(NotifyChannel::Builtin),
            other => Err(format!("'{other}' is not a channel (email or builtin)")),
        }
    }
}

/// A message to send to members.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Notification {
    /// Subject line.
    pub subject: String,
    /// Plain-text body.
    pub message: String,
    /// Delivery channel.
    pub channel: NotifyChannel,
}

impl Notification {
    /// An email, the default channel.
    pub fn email(subject: impl Into<String>, message: impl Into<String>) -> Self {
        Notification {
            subject: subject.into(),
            message: message.into(),
            channel: NotifyChannel::Email,
        }
    }
}

impl Client {
    /// Sends `notification` to `usernames` (duplicates dropped) in batches of 25. `Err` only
    /// for invalid input (nothing sent). A failed batch may or may not have been delivered
    /// (e.g. a timeout after ArcGIS accepted it); it is not resent.
    pub async fn notify(&self, usernames: &[String], notification: &Notification) -> Result<BatchOutcome, Error> {
        let what = format!("createNotification to {} members", usernames.len());
        let mut seen = HashSet::new();
        let recipients: Vec<String> = usernames.iter().filter(|u| seen.insert(u.as_str())).cloned().collect();
        validate_usernames(&what, recipients.iter().map(String::as_str))?;
        if let Some(bad) = recipients.iter().find(|u| u.contains(',')) {
            return Err(Error::InvalidInput {
                what,
                reason: format!("username '{bad}' contains a comma"),
            });
        }
        if notification.subject.trim().is_empty() || notification.message.trim().is_empty() {
            return Err(Error::InvalidInput {
                what,
                reason: "empty subject or message".into(),
            });
        }
        let url = &self.url(&["portals", "self", "createNotification"]);
        Ok(batch::run(
            &recipients,
            NOTIFICATION_BATCH,
            |u| u,
            |chunk: &[String]| async move {
                let what = format!(
                    "createNotification ({}) to {} members",
                    notification.channel,
                    chunk.len()
                );
                let params = [
                    ("notificationChannelType", notification.channel.as_str().to_owned()),
                    ("subject", notification.subject.clone()),
                    ("message", notification.message.clone()),
                    ("users", chunk.join(",")),
                ];
                let body = self.call(CREATE_NOTIFICATION, url, &params, &what).await?;
                if body.get("success").and_then(Value::as_bool) == Some(false) {
                    return Err(Error::Unexpected {
                        what,
                        reason: "ArcGIS answered success: false".into(),
                    });
                }
                Ok(Vec::new())
            },
        )
        .await)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn channel_parses_case_insensitively() {
        assert_eq!("Email".parse::<NotifyChannel>(), Ok(NotifyChannel::Email));
        assert_eq!(" builtin ".parse::<NotifyChannel>(), Ok(NotifyChannel::Builtin));
        assert!("push".parse::<NotifyChannel>().is_err());
        assert_eq!(NotifyChannel::default().as_str(), "email");
    }
}
