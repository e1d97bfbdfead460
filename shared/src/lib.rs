//! shared: everything the three credit-steward Lambda functions have in common.
//!
//! Layout:
//! - [`arcgis`]: the ArcGIS Online REST client (auth, error envelope, retries, paging, batching).
//! - [`credits`]: pure credit domain logic (balances, classification, report aggregation,
//!   allocation planning, forecasting). No I/O.
//! - [`aws`]: the AWS SDK's configuration on Lambda (the environment only) and on an
//!   operator's machine (the full credential chain).
//! - [`s3`]: the four S3 calls made (put, get, a pre-signed link, a bucket check), signed
//!   with `aws-sigv4`.
//! - [`secrets`]: ArcGIS credentials read from AWS Secrets Manager, cached, never printed.
//! - [`connect`]: the ArcGIS client a warm container keeps, rebuilt when the secret changes.
//! - [`config`]: environment variables parsed once into a validated [`config::Config`].
//! - [`schedule`]: the three shapes a scheduled invocation arrives in, decoded alike.
//! - [`ledger`]: durable state in DynamoDB (alert levels, run claims, allocation requests, the
//!   allocation lock and budget, the audit trail).
//! - [`apply`]: the one path that changes allocations (allocate and the automatic top-up):
//!   claimed, locked, guard-railed, journaled, read back, audited, resumable.
//! - [`allocate`]: `POST /allocations`, HTTP-agnostic: validate, then apply, replay or resume.
//! - [`monthly`]: the monthly credits report: pick the month, read it, write CSV/JSON/HTML to
//!   S3, mail the admin contacts once per month.
//! - [`scan`]: scan-credits' workflow: classify, alert once per crossing, optional top-up.
//! - [`channels`]: the alert channels beside ArcGIS notifications (SNS, Slack, Teams, a
//!   signed webhook), each delivering a run's alert once.
//! - [`startup`]: why a function refuses to start, said once and readably.
//! - [`i18n`]: the message catalogue (English, French) and local number and date formats.
//! - [`member_text`]: text members wrote themselves (full names), made safe to show.
//! - [`web_url`]: the URLs an operator configures, parsed (host names in ASCII).
//! - [`logging`]: the functions' log lines, at the level and in the format Lambda asks for.
//! - [`telemetry`]: one CloudWatch Embedded Metric Format line per run.

pub mod allocate;
pub mod apply;
pub mod arcgis;
pub mod aws;
pub mod channels;
pub mod config;
pub mod connect;
pub mod credits;
pub mod i18n;
pub mod ledger;
pub mod logging;
pub mod member_text;
pub mod monthly;
pub mod s3;
pub mod scan;
pub mod schedule;
pub mod secrets;
pub mod startup;
pub mod telemetry;
pub mod web_url;
