//! The shared crate's integration tests: one binary (ripgrep / zero2prod pattern).
//!
//! The ArcGIS client runs against portal-sim on 127.0.0.1; the Secrets Manager tests against a
//! `moto_server` this binary starts itself. Nothing leaves loopback.

// Tests and their helpers state expectations with unwrap, expect and panic!.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod support;

mod allocate;
mod auth;
mod channels;
mod faults;
mod jobs;
mod ledger;
mod listing;
mod lookup;
mod monthly;
/// The moto_server of this test binary (started once, stopped at exit).
use testkit::moto;
mod report;
mod scan;
mod secrets;
mod writes;
