//! The monthly credits report item (see docs/arcgis.md, "Report items"): create, wait for it
//! with a deadline, download its CSV, delete it.
//!
//! A poll without a timeout hangs on a stuck item, a naive local-time start picks the wrong
//! month on a host off UTC, and items never deleted pile up in the admin's content. Here the
//! start is the 1st of the month at 00:00 UTC, the wait ends with a clear [`Error::Timeout`],
//! and the download follows redirects by hand so the token never reaches a storage host.

use std::time::{Duration, Instant};

use bytes::Bytes;
use chrono::{TimeZone, Utc};
use serde_json::Value;

use std::io::{BufRead, BufReader, Read};
use std::sync::Arc;

use crate::credits::report_csv::{self, CreditsReport, ReportCsvError};

use super::client::{self, Client, DecodeError};
use super::endpoint::{CREATE_REPORT, DELETE_ITEM, ITEM_DATA, ITEM_STATUS};
use super::error::{ApiError, Error};
use super::wire;

/// A failure to read the body that is not the transport's (the transport's is reported
/// instead when there is one).
fn io_error(e: std::io::Error) -> DecodeError {
    DecodeError::Json(serde_json::Error::io(e))
}

/// The most of a JSON answer read in place of a report file: an error envelope is far
/// smaller.
const ENVELOPE_MAX_BYTES: u64 = 64 * 1024;

/// Longest pause between two status polls.
const MAX_POLL_INTERVAL: Duration = Duration::from_secs(10);

/// How long a new report item may answer "item not found" before that means it, by default: a
/// new item can take seconds to become visible, and Esri's own client keeps asking for 15 s
/// (see docs/arcgis.md, "Report items").
pub const ITEM_VISIBILITY_GRACE: Duration = Duration::from_secs(15);

/// A report item in its owner's content.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReportItem {
    /// Item id.
    pub id: String,
    /// Username whose content holds it (the signed-in admin).
    pub owner: String,
}

/// The processing state of an item.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ItemStatus {
    /// Ready to download.
    Completed,
    /// ArcGIS gave up; the message says why.
    Failed(String),
    /// Still being generated (`processing`, `partial`, or a status this client does not know).
    Processing(String),
}

/// Epoch milliseconds of the 1st of `month` at 00:00 UTC: the `startTime` a monthly report
/// requires (see docs/arcgis.md, "Report items").
pub fn month_start_ms(year: i32, month: u32) -> Option<i64> {
    Utc.with_ymd_and_hms(year, month, 1, 0, 0, 0)
        .single()
        .map(|d| d.timestamp_millis())
}

impl Client {
    /// Starts a monthly credits report for (`year`, `month`) in `owner`'s content. Never
    /// retried once sent: a repeat would create a second item.
    pub async fn create_credits_report(&self, owner: &str, year: i32, month: u32) -> Result<ReportItem, Error> {
        let what = format!("credits report for {year}-{month:02} (community/users/{owner}/report)");
        let start = month_start_ms(year, month).ok_or_else(|| Error::InvalidInput {
            what: what.clone(),
            reason: "no such month".into(),
        })?;
        let url = self.url(&["community", "users", owner, "report"]);
        let params = [
            ("reportType", "org".to_owned()),
            ("reportSubType", "credits".to_owned()),
            ("timeDuration", "monthly".to_owned()),
            ("startTime", start.to_string()),
        ];
        let body = self.call(CREATE_REPORT, &url, &params, &what).await?;
        let id = wire::string(body.get("itemId")).ok_or_else(|| Error::Unexpected {
            what,
            reason: "no 'itemId' in the answer".into(),
        })?;
        tracing::info!(item = %id, owner, year, month, "credits report requested");
        Ok(ReportItem {
            id,
            owner: owner.to_owned(),
        })
    }

    /// The item's processing state (`content/users/<owner>/items/<id>/status`).
    pub async fn item_status(&self, item: &ReportItem) -> Result<ItemStatus, Error> {
        let what = format!("status of report item {}", item.id);
        let url = self.url(&["content", "users", &item.owner, "items", &item.id, "status"]);
        let body = self.call(ITEM_STATUS, &url, &[], &what).await?;
        Ok(parse_status(&body))
    }

    /// Polls until the item is completed, for at most the configured report deadline.
    pub async fn wait_for_report(&self, item: &ReportItem) -> Result<(), Error> {
        self.wait_for_report_within(item, self.inner.report_deadline).await
    }

    /// Polls until the item is completed, for at most `deadline` (requests in flight
    /// included): [`Error::Timeout`] after that, [`Error::JobFailed`] if ArcGIS gives up.
    /// "Item not found" within the visibility grace (15 s by default) means "not visible yet".
    pub async fn wait_for_report_within(&self, item: &ReportItem, deadline: Duration) -> Result<(), Error> {
        // Never wait past the invocation's own deadline, when the client has one.
        let deadline = self
            .deadline()
            .map_or(deadline, |d| deadline.min(d.saturating_duration_since(Instant::now())));
        let what = format!("report item {}", item.id);
        let started = Instant::now();
        let mut last_status = String::from("not yet checked");
        let mut interval = self.inner.report_poll_interval;
        let mut seen = false;
        let polling = async {
            loop {
                let status = match self.item_status(item).await {
                    // Once seen, an item that vanishes is gone, not late.
                    Err(e)
                        if !seen
                            && started.elapsed() < self.inner.report_visibility_grace
                            && e.root().api().is_some_and(ApiError::is_item_not_found) =>
                    {
                        ItemStatus::Processing("not visible yet".to_owned())
                    }
                    other => {
                        seen = true;
                        other?
                    }
                };
                match status {
                    ItemStatus::Completed => return Ok(()),
                    ItemStatus::Failed(message) => {
                        return Err(Error::JobFailed {
                            what: what.clone(),
                            message,
                        });
                    }
                    ItemStatus::Processing(status) => last_status = status,
                }
                tokio::time::sleep(interval).await;
                interval = interval.mul_f64(1.5).min(MAX_POLL_INTERVAL);
            }
        };
        match tokio::time::timeout(deadline, polling).await {
            Ok(result) => result,
            Err(_) => Err(Error::Timeout {
                what,
                waited: started.elapsed(),
                last_status,
            }),
        }
    }

    /// Downloads the item's data (the CSV). Redirects are followed by hand; the token and
    /// Referer are dropped as soon as a hop leaves the portal's origin.
    pub async fn download_report(&self, item: &ReportItem) -> Result<Bytes, Error> {
        let what = format!("download of report item {}", item.id);
        let url = self.url(&["content", "items", &item.id, "data"]);
        self.call_with(ITEM_DATA, &url, &[], &what, client::file).await
    }

    /// Downloads the item's CSV and parses it as it arrives ([`report_csv::read`]): a large
    /// org's report is never held whole. The outer error is the download's (retried like any
    /// read, each attempt parsing from the start); the inner one says the file is not a
    /// credits report we can read.
    pub async fn read_report(&self, item: &ReportItem) -> Result<Result<CreditsReport, ReportCsvError>, Error> {
        let what = format!("download of report item {}", item.id);
        let url = self.url(&["content", "items", &item.id, "data"]);
        let decode: client::StreamDecoder<Result<CreditsReport, ReportCsvError>> = Arc::new(|body: &mut dyn Read| {
            let mut body = BufReader::new(body);
            // An error envelope instead of the file (item not ready, no access): JSON, small.
            let starts_like_json = body
                .fill_buf()
                .map_err(io_error)?
                .iter()
                .find(|b| !b.is_ascii_whitespace())
                == Some(&b'{');
            if starts_like_json {
                let mut text = Vec::new();
                (&mut body)
                    .take(ENVELOPE_MAX_BYTES)
                    .read_to_end(&mut text)
                    .map_err(io_error)?;
                if let Some(api) = client::envelope_in(&text) {
                    return Err(DecodeError::Envelope(Box::new(api)));
                }
                // Not an envelope: the whole file, what was read first included.
                return Ok(report_csv::read(text.as_slice().chain(body)));
            }
            Ok(report_csv::read(body))
        });
        self.call_streamed(ITEM_DATA, &url, &[], &what, decode).await
    }

    /// Deletes the item so reports do not pile up in the admin's content.
    pub async fn delete_item(&self, item: &ReportItem) -> Result<(), Error> {
        let what = format!("delete of report item {}", item.id);
        let url = self.url(&["content", "users", &item.owner, "items", &item.id, "delete"]);
        let body = self.call(DELETE_ITEM, &url, &[], &what).await?;
        if body.get("success").and_then(Value::as_bool) == Some(false) {
            return Err(Error::Unexpected {
                what,
                reason: "ArcGIS answered success: false".into(),
            });
        }
        Ok(())
    }
}

/// Reads `{"status": ..., "statusMessage": ...}`.
pub fn parse_status(body: &Value) -> ItemStatus {
    let status = wire::string(body.get("status")).unwrap_or_else(|| "unknown".to_owned());
    match status.to_ascii_lowercase().as_str() {
        "completed" => ItemStatus::Completed,
        "failed" => {
            ItemStatus::Failed(wire::string(body.get("statusMessage")).unwrap_or_else(|| "no message".to_owned()))
        }
        _ => ItemStatus::Processing(status),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn month_start_is_utc_midnight_on_the_first() {
        assert_eq!(month_start_ms(2024, 3), Some(1_709_251_200_000));
        assert_eq!(month_start_ms(2023, 1), Some(1_672_531_200_000));
        assert_eq!(month_start_ms(2024, 13), None);
    }

    #[test]
    fn statuses() {
        assert_eq!(parse_status(&json!({"status":"completed"})), ItemStatus::Completed);
        assert_eq!(
            parse_status(&json!({"status":"failed","statusMessage":"boom"})),
            ItemStatus::Failed("boom".into())
        );
        assert_eq!(
            parse_status(&json!({"status":"partial"})),
            ItemStatus::Processing("partial".into())
        );
        assert_eq!(parse_status(&json!({})), ItemStatus::Processing("unknown".into()));
    }
}
