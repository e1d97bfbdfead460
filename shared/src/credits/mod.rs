//! Credit domain logic: pure, no I/O.
//!
//! - [`member`]: balances, target allocations and validated credit amounts;
//! - [`classify`]: who is running low (critical / warning / ok / skipped);
//! - [`service_types`]: service codes and readable labels;
//! - [`usage`]: usage time series from `portals/self/usage` and time windows;
//! - [`report_csv`]: the credits report CSV;
//! - [`aggregate`]: credits per service, per member, per member × service;
//! - [`plan`]: allocation plans with guardrails;
//! - [`forecast`]: burn rates and days until empty.

pub mod aggregate;
pub mod classify;
pub mod forecast;
pub mod member;
pub mod plan;
pub mod report_csv;
pub mod service_types;
mod tolerance;
pub mod usage;
