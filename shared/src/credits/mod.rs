//! Credit domain logic: pure, no I/O.
//!
//! - [`amount`]: exact amounts of credits ([`amount::Credits`], micro-credits);
//! - [`percent`]: threshold percentages, exact to the hundredth;
//! - [`member`]: balances and target allocations;
//! - [`classify`]: who is running low (critical / warning / ok / skipped);
//! - [`service_types`]: service codes and readable labels;
//! - [`usage`]: usage time series from `portals/self/usage` and time windows;
//! - [`report_csv`]: the credits report CSV;
//! - [`aggregate`]: credits per service, per member, per member × service;
//! - [`plan`]: allocation plans with guardrails;
//! - [`forecast`]: burn rates and days until empty.

pub mod aggregate;
pub mod amount;
pub mod classify;
pub mod forecast;
pub mod member;
pub mod percent;
pub mod plan;
pub mod report_csv;
pub mod service_types;
pub mod usage;
