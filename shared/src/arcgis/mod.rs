//! The ArcGIS Online sharing/rest client.
//!
//! Written to ArcGIS Online's real behaviour, quirks included (docs/arcgis.md lists each with
//! its public source): errors inside HTTP 200, `f=json` on every request, `-1` meaning
//! unlimited, 100 members per page and per allocation call, 25 recipients per notification
//! call.
//!
//! Layout, one concept per module:
//! - [`credentials`]: what the client signs in with; [`Secret`] never prints itself.
//! - `auth`: credentials → cached token, refreshed ahead of expiry, re-sign-in on 498/499.
//! - [`client`]: the HTTP core (f=json, Referer, token header, envelopes, retries, redirects,
//!   request counter) and [`ClientConfig`].
//! - `endpoint`: each operation declared once with its method and retry safety.
//! - [`error`]: the error envelope ([`ApiError`]) and the client's [`Error`].
//! - [`retry`]: backoff, `Retry-After`, and which failures are worth repeating.
//! - [`portal`]: org properties and the admin capability check.
//! - [`users`]: the complete member listing and exact lookup.
//! - [`allocation`], [`notify`]: batched writes ([`batch`] holds their per-member outcome).
//! - [`usage`]: credit usage series. [`report`]: the credits report item.
//! - [`fields`]: every answer field read, with its evidence (a recorded answer, or why not).

#![warn(missing_docs)]

pub mod allocation;
mod auth;
pub mod batch;
pub mod client;
pub mod credentials;
mod endpoint;
pub mod error;
pub mod fields;
pub mod limiter;
pub mod notify;
pub mod portal;
pub mod report;
pub mod retry;
pub mod usage;
pub mod users;
mod wire;

#[cfg(test)]
mod recorded;

pub use allocation::CreditAssignment;
pub use batch::{BatchOutcome, FailedBatch};
pub use client::{Client, ClientConfig};
pub use credentials::{Credentials, Secret};
pub use error::{ApiError, Error, TransportKind, redact_url};
pub use notify::{Notification, NotifyChannel};
pub use portal::{Capability, OrgProperties, SignedIn, SignedInUser};
pub use report::{ItemStatus, ReportItem};
pub use retry::{Idempotency, MAX_RETRY_AFTER, RetryPolicy};
pub use usage::{UsagePeriod, UsageQuery};
pub use users::{LISTING_CAP, ListingHint, ListingProblem, MemberList, Partition};
