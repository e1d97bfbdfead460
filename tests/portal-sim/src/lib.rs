//! portal-sim: a stateful ArcGIS Online `sharing/rest` simulator.
//!
//! No machine of ours reaches ArcGIS Online, so every credit-steward test, benchmark and the
//! demo talk to this instead. It follows ArcGIS Online's behaviour as docs/arcgis.md records
//! it, quirks included: errors inside HTTP 200, HTML unless `f=json`, 1-based paging capped
//! at 100, search totals capped at 10,000, fuzzy search, `-1` for unlimited, allocations that
//! *set*, batch limits, slow report items, usage series as strings in Java number format.
//!
//! Layout:
//! - [`org`]: the fixture (an org as plain data) and the service-type table.
//! - [`generate`]: deterministic realistic orgs (`--members N --seed S`).
//! - [`endpoint`]: which operation a path names.
//! - [`wire`]: parameters, `f`, the error envelope, number formatting.
//! - [`api`]: the operations.
//! - [`world`]: mutable state and what tests inspect.
//! - [`faults`]: fault injection and behaviour switches; latency jitter, which makes
//!   concurrent writers race for real.
//! - [`delay`]: waits as precise as the latency they stand for.
//! - [`holds`]: hold points that park one request before or after processing, to kill a
//!   client at an exact moment of a write.
//! - [`server`]: HTTP serving, the loopback-only control API (`/_sim/...`), [`SimHandle`].
//!
//! Tests start it in-process: `portal_sim::start(org).await` binds `127.0.0.1:0`.

pub mod api;
pub mod delay;
pub mod endpoint;
pub mod faults;
pub mod generate;
pub mod holds;
pub mod org;
pub mod server;
pub mod wire;
pub mod world;

pub use endpoint::Endpoint;
pub use faults::{
    Behaviour, BucketLabel, CappedTotal, EnvelopeFault, Faults, HttpErrorFault, ListingCap, PastCap, RoleFilter,
    Trigger, UnlimitedAvailable,
};
pub use generate::{GenParams, generate};
pub use holds::{Hold, HoldPhase, HoldSpec, HoldStatus, HoldView};
pub use org::{Org, UsageRecord};
pub use server::{Sim, SimHandle, SimOptions, StateSnapshot, TlsIdentity, serve, start, start_with};
pub use world::{AllocationCall, AllocationEntry, MemberState, Notification, ReportItem, RequestRecord};
