//! Where reports are archived: `reports/YYYY-MM/credits.{csv,json,html}` in `REPORT_BUCKET`.
//!
//! Keys depend on the month only, so a retried run overwrites its own objects instead of
//! adding new ones: S3 writes are idempotent here, which is why they may happen before the
//! run is claimed in the ledger (see the [`super`] docs). `credits.json` is written last, so
//! its presence means the month's three objects are complete.

use std::time::Duration;

use super::month::Month;
use crate::s3::{S3Client, S3Error};

/// The three objects of one month, in the order they are written.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReportKeys {
    /// `reports/YYYY-MM/credits.csv`
    pub csv: String,
    /// `reports/YYYY-MM/credits.html`
    pub html: String,
    /// `reports/YYYY-MM/credits.json` (written last).
    pub json: String,
}

impl ReportKeys {
    /// The keys for `month`.
    pub fn for_month(month: Month) -> ReportKeys {
        let prefix = format!("reports/{month}");
        ReportKeys {
            csv: format!("{prefix}/credits.csv"),
            html: format!("{prefix}/credits.html"),
            json: format!("{prefix}/credits.json"),
        }
    }
}

/// Content types, so a browser opening the object from the console renders it.
pub const CSV_CONTENT_TYPE: &str = "text/csv; charset=utf-8";
/// See [`CSV_CONTENT_TYPE`].
pub const HTML_CONTENT_TYPE: &str = "text/html; charset=utf-8";
/// See [`CSV_CONTENT_TYPE`].
pub const JSON_CONTENT_TYPE: &str = "application/json";

/// Why the bucket could not be read or written. Names the bucket, the key and the IAM action.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The S3 call failed (after its retries).
    #[error(
        "S3 {action} of s3://{bucket}/{key} failed: {source}. Check REPORT_BUCKET, the bucket's \
        region and the function's IAM policy for {action} on {prefix}/*",
        prefix = key.split('/').next().unwrap_or_default()
    )]
    S3 {
        /// `s3:PutObject` or `s3:GetObject`.
        action: &'static str,
        /// The bucket.
        bucket: String,
        /// The key.
        key: String,
        /// What S3 answered, or why it could not be asked.
        #[source]
        source: S3Error,
    },
}

/// The reports bucket.
#[derive(Debug, Clone)]
pub struct ReportStore {
    client: S3Client,
    bucket: String,
}

impl ReportStore {
    /// A store over an existing client (tests pass one configured for moto).
    pub fn new(client: S3Client, bucket: impl Into<String>) -> ReportStore {
        ReportStore {
            client,
            bucket: bucket.into(),
        }
    }

    /// A store with the AWS configuration of the Lambda environment.
    pub fn from_env(bucket: impl Into<String>) -> ReportStore {
        ReportStore::new(S3Client::new(&crate::aws::lambda_config()), bucket)
    }

    /// The bucket's name.
    pub fn bucket(&self) -> &str {
        &self.bucket
    }

    /// `s3://bucket/key`, for summaries and the email.
    pub fn uri(&self, key: &str) -> String {
        format!("s3://{}/{key}", self.bucket)
    }

    /// A link that opens `key` in a browser without AWS credentials for `lifetime` (an S3
    /// pre-signed GET, made locally: nothing is sent). Signing needs `s3:GetObject` on the key
    /// in the function's role, since S3 checks the signer's permissions when the link is used.
    pub async fn link(&self, key: &str, lifetime: Duration) -> Result<String, StoreError> {
        self.client
            .presigned_get(&self.bucket, key, lifetime)
            .await
            .map_err(|source| self.error("s3:GetObject", key, source))
    }

    /// Writes (or overwrites) one object.
    pub async fn put(&self, key: &str, body: Vec<u8>, content_type: &str) -> Result<(), StoreError> {
        self.client
            .put(&self.bucket, key, body, content_type)
            .await
            .map_err(|source| self.error("s3:PutObject", key, source))
    }

    /// Reads one object; `Ok(None)` when it does not exist.
    ///
    /// Without `s3:ListBucket`, S3 answers a missing key with 403 instead of 404: that comes
    /// back as an error, and callers that only use the read as an optimisation treat it so.
    pub async fn get(&self, key: &str) -> Result<Option<Vec<u8>>, StoreError> {
        self.client
            .get(&self.bucket, key)
            .await
            .map_err(|source| self.error("s3:GetObject", key, source))
    }

    fn error(&self, action: &'static str, key: &str, source: S3Error) -> StoreError {
        StoreError::S3 {
            action,
            bucket: self.bucket.clone(),
            key: key.to_owned(),
            source,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_depend_on_the_month_only() {
        let k = ReportKeys::for_month("2026-10".parse().unwrap());
        assert_eq!(k.csv, "reports/2026-10/credits.csv");
        assert_eq!(k.html, "reports/2026-10/credits.html");
        assert_eq!(k.json, "reports/2026-10/credits.json");
    }
}
