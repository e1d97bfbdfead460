//! credit-core: everything the three credit-steward Lambda functions share.
//!
//! Layout:
//! - [`arcgis`]: the ArcGIS Online REST client (auth, error envelope, retries, paging, batching).
//! - [`credits`]: pure credit domain logic (balances, classification, report aggregation,
//!   allocation planning, forecasting). No I/O.
//! - [`secrets`]: ArcGIS credentials read from AWS Secrets Manager, cached, never printed.
//! - [`connect`]: the ArcGIS client a warm container keeps, rebuilt when the secret changes.
//! - [`config`]: environment variables parsed once into a validated [`config::Config`].
//! - [`schedule`]: the three shapes a scheduled invocation arrives in, decoded alike.
//! - [`ledger`]: durable state in DynamoDB (alert levels, run claims, idempotency keys, audit).
//! - [`allocate`]: `POST /allocations`, HTTP-agnostic: validate, plan, apply, audit, replay.
//! - [`monthly`]: the monthly credits report: pick the month, read it, write CSV/JSON/HTML to
//!   S3, mail the admin contacts once per month.
//! - [`scan`]: scan-credits' workflow: classify, alert once per crossing, optional top-up.
//! - [`telemetry`]: one CloudWatch Embedded Metric Format line per run.

pub mod allocate;
pub mod arcgis;
pub mod config;
pub mod connect;
pub mod credits;
pub mod ledger;
pub mod monthly;
pub mod scan;
pub mod schedule;
pub mod secrets;
pub mod telemetry;
