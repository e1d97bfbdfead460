//! Where reports are archived: `reports/YYYY-MM/credits.{csv,json,html}` in `REPORT_BUCKET`.
//!
//! Keys depend on the month only, so a retried run overwrites its own objects instead of
//! adding new ones: S3 writes are idempotent here, which is why they may happen before the
//! run is claimed in the ledger (see the [`super`] docs). `credits.json` is written last, so
//! its presence means the month's three objects are complete.

use aws_config::SdkConfig;
use aws_sdk_s3::error::DisplayErrorContext;
use aws_sdk_s3::presigning::PresigningConfig;
use aws_sdk_s3::primitives::ByteStream;
use std::time::Duration;

use super::month::Month;

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
    /// The SDK call failed (after its own retries).
    #[error(
        "S3 {action} of s3://{bucket}/{key} failed: {detail}. Check REPORT_BUCKET, the bucket's \
        region and the function's IAM policy for {action} on {prefix}/*",
        prefix = key.split('/').next().unwrap_or_default()
    )]
    Sdk {
        /// `s3:PutObject` or `s3:GetObject`.
        action: &'static str,
        /// The bucket.
        bucket: String,
        /// The key.
        key: String,
        /// The SDK's error chain.
        detail: String,
    },
}

/// The reports bucket.
#[derive(Debug, Clone)]
pub struct ReportStore {
    client: aws_sdk_s3::Client,
    bucket: String,
}

impl ReportStore {
    /// A store over an existing client (tests pass one configured for moto).
    pub fn new(client: aws_sdk_s3::Client, bucket: impl Into<String>) -> ReportStore {
        ReportStore {
            client,
            bucket: bucket.into(),
        }
    }

    /// A store with the AWS config from the environment, on the ring-only HTTP client.
    pub async fn from_env(bucket: impl Into<String>) -> ReportStore {
        let sdk = crate::aws::lambda_config();
        ReportStore::new(
            aws_sdk_s3::Client::from_conf(s3_config(&sdk, endpoint_override_set())),
            bucket,
        )
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
        let err = |detail: String| StoreError::Sdk {
            action: "s3:GetObject",
            bucket: self.bucket.clone(),
            key: key.to_owned(),
            detail,
        };
        let config = PresigningConfig::expires_in(lifetime).map_err(|e| err(e.to_string()))?;
        let request = self
            .client
            .get_object()
            .bucket(&self.bucket)
            .key(key)
            .presigned(config)
            .await
            .map_err(|e| err(DisplayErrorContext(&e).to_string()))?;
        Ok(request.uri().to_owned())
    }

    /// Writes (or overwrites) one object.
    pub async fn put(&self, key: &str, body: Vec<u8>, content_type: &str) -> Result<(), StoreError> {
        self.client
            .put_object()
            .bucket(&self.bucket)
            .key(key)
            .content_type(content_type)
            .body(ByteStream::from(body))
            .send()
            .await
            .map_err(|e| StoreError::Sdk {
                action: "s3:PutObject",
                bucket: self.bucket.clone(),
                key: key.to_owned(),
                detail: DisplayErrorContext(&e).to_string(),
            })?;
        Ok(())
    }

    /// Reads one object; `Ok(None)` when it does not exist.
    ///
    /// Without `s3:ListBucket`, S3 answers a missing key with 403 instead of 404: that comes
    /// back as an error, and callers that only use the read as an optimisation treat it so.
    pub async fn get(&self, key: &str) -> Result<Option<Vec<u8>>, StoreError> {
        let err = |detail: String| StoreError::Sdk {
            action: "s3:GetObject",
            bucket: self.bucket.clone(),
            key: key.to_owned(),
            detail,
        };
        match self.client.get_object().bucket(&self.bucket).key(key).send().await {
            Ok(out) => {
                let bytes = out.body.collect().await.map_err(|e| err(e.to_string()))?;
                Ok(Some(bytes.to_vec()))
            }
            Err(e) if e.as_service_error().is_some_and(|s| s.is_no_such_key()) => Ok(None),
            Err(e) => Err(err(DisplayErrorContext(&e).to_string())),
        }
    }
}

/// Whether `AWS_ENDPOINT_URL_S3` or `AWS_ENDPOINT_URL` is set (an emulator such as moto),
/// for [`s3_config`]'s addressing.
pub fn endpoint_override_set() -> bool {
    ["AWS_ENDPOINT_URL_S3", "AWS_ENDPOINT_URL"]
        .iter()
        .any(|v| std::env::var(v).is_ok_and(|s| !s.trim().is_empty()))
}

/// The S3 client configuration for `sdk`: path-style addressing when an endpoint override is
/// set (emulators such as moto serve one host, not `<bucket>.<host>`), virtual-hosted
/// otherwise, as AWS recommends.
pub fn s3_config(sdk: &SdkConfig, endpoint_override: bool) -> aws_sdk_s3::Config {
    aws_sdk_s3::config::Builder::from(sdk)
        .force_path_style(path_style(sdk, endpoint_override))
        .build()
}

/// Whether to address buckets by path: when `AWS_ENDPOINT_URL(_S3)` is set
/// (`endpoint_override`) or the shared config carries an endpoint.
pub fn path_style(sdk: &SdkConfig, endpoint_override: bool) -> bool {
    endpoint_override || sdk.endpoint_url().is_some()
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

    #[test]
    fn path_style_only_with_an_endpoint_override() {
        let sdk = SdkConfig::builder()
            .behavior_version(aws_config::BehaviorVersion::latest())
            .build();
        assert!(!path_style(&sdk, false));
        assert!(path_style(&sdk, true));
        let sdk = SdkConfig::builder()
            .behavior_version(aws_config::BehaviorVersion::latest())
            .endpoint_url("http://127.0.0.1:5000")
            .build();
        assert!(path_style(&sdk, false));
        let _ = s3_config(&sdk, false);
    }
}
