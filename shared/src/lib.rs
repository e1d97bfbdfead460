//! credit-core: everything the three credit-steward Lambda functions share.
//!
//! Layout:
//! - [`arcgis`]: the ArcGIS Online REST client (auth, error envelope, retries, paging, batching).
//! - [`credits`]: pure credit domain logic (balances, classification, report aggregation,
//!   allocation planning, forecasting). No I/O.
//! - [`secrets`]: ArcGIS credentials read from AWS Secrets Manager, cached, never printed.
//! - [`config`]: environment variables parsed once into a validated [`config::Config`].
//! - [`schedule`]: the three shapes a scheduled invocation arrives in, decoded alike.

pub mod arcgis;
pub mod config;
pub mod credits;
pub mod schedule;
pub mod secrets;
