//! Fault injection and behaviour switches, changeable at runtime.
//!
//! Faults make the simulator misbehave the way the real service and its network do (latency,
//! 429/503 storms, expiring tokens, errors inside HTTP 200, broken bodies, dropped
//! connections). Behaviour switches choose between plausible readings of what docs/arcgis.md
//! marks unverified (whether the member list carries credit fields, how long a report takes…).
//! Both are plain serde data so the control endpoint and the in-process handle share one shape.
//!
//! [`Faults::latency_jitter_ms`] is what makes races between concurrent writers real in
//! tests: without it, requests sent at once are processed about in the order they were sent,
//! so the interleavings that lose an update between two writers almost never happen. With
//! it, each request waits a different random time before and after processing, so concurrent
//! requests overtake each other inside the simulator as they do on the way to ArcGIS.

use std::time::{Duration, Instant};

use rand::{RngExt, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};

/// When a fault fires. All conditions must hold; an empty trigger fires on every request.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Trigger {
    /// Only requests to this endpoint (names as in [`crate::Endpoint::name`], e.g.
    /// `portals/self/users`); `None` = any endpoint.
    pub endpoint: Option<String>,
    /// Fire on every Nth matching request (1-based: `2` fires on the 2nd, 4th, …).
    pub every_nth: Option<u64>,
    /// Fire at most this many times.
    pub times: Option<u64>,
    /// Fire only during this many milliseconds after the fault was set.
    pub for_ms: Option<u64>,
    /// Run the operation first, then misbehave (the client cannot tell whether it happened:
    /// a blindly retried `createNotification` then emails twice). For HTTP errors, malformed
    /// bodies and dropped connections.
    pub after_processing: bool,
}

/// A real HTTP error status with a non-JSON body (a gateway or throttling layer).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HttpErrorFault {
    /// 429, 502, 503 or 504.
    pub status: u16,
    /// Sent as `Retry-After` (seconds) when present.
    #[serde(default)]
    pub retry_after_secs: Option<u64>,
    /// When it fires.
    #[serde(default)]
    pub when: Trigger,
}

/// An application error inside HTTP 200, for an endpoint or for requests about one member.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EnvelopeFault {
    /// Only requests naming this member (path `community/users/<member>` or a `username`
    /// parameter); `None` = any request matching `when`.
    #[serde(default)]
    pub member: Option<String>,
    /// The envelope's `code`.
    pub code: u16,
    /// The envelope's `message`.
    pub message: String,
    /// When it fires.
    #[serde(default)]
    pub when: Trigger,
}

/// The faults in force.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Faults {
    /// Delay added before answering every `sharing/rest` request.
    pub latency_ms: u64,
    /// A random extra delay in `[0, latency_jitter_ms]`, drawn per request and split like
    /// `latency_ms` (half before processing, half after), so concurrent requests are processed
    /// in an order that differs from their sending order.
    pub latency_jitter_ms: u64,
    /// A non-JSON HTTP error.
    pub http_error: Option<HttpErrorFault>,
    /// After this many more requests, every token issued so far becomes invalid (498).
    /// API keys are long-lived and unaffected.
    pub expire_tokens_after: Option<u64>,
    /// An HTTP-200 error envelope.
    pub error_envelope: Option<EnvelopeFault>,
    /// A truncated JSON body with `Content-Type: application/json`.
    pub malformed_json: Option<Trigger>,
    /// The connection is closed without a complete response.
    pub drop_connection: Option<Trigger>,
}

/// Switches between plausible behaviours where ArcGIS's behaviour is unverified (see
/// docs/arcgis.md, "Unverified behaviour and the switches that cover it"), and toggles for
/// slow or failing background work.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Behaviour {
    /// Whether `portals/self/users` entries carry `assignedCredits`/`availableCredits`
    /// (unverified; see docs/arcgis.md, "Members: listing and exact lookup"). When false,
    /// clients must fetch `community/users/<u>`.
    pub list_includes_credits: bool,
    /// How long a report item stays `processing`.
    pub report_processing_ms: u64,
    /// Report items never leave `processing`.
    pub report_stuck: bool,
    /// Report items end `failed` instead of `completed`.
    pub report_fail: bool,
    /// The report download answers 302 to another host name (`localhost` instead of the
    /// address used), as storage redirects do.
    pub report_redirect: bool,
    /// The report CSV ends with a `Total` row. Off by default: the original notebook, run on
    /// real ArcGIS Online by its authors, sums every row, so a Total row would have doubled
    /// its figures; nothing records one. Kept for parsers, which must never sum it.
    pub report_total_row: bool,
    /// Usernames the search index has not caught up with (index lag): fuzzy searches miss them.
    pub search_hidden: Vec<String>,
    /// `generateToken` refuses plain HTTP, as the real service does.
    pub require_https_for_token: bool,
    /// Failed sign-ins before an account is locked out; `None` = never.
    pub lockout_after: Option<u32>,
    /// What an unlimited member's `availableCredits` holds: the org's remaining credits (as
    /// recorded live) or `-1` (as older mocks show).
    pub unlimited_available: UnlimitedAvailable,
    /// Whether a usage bucket's timestamp labels its start or its end (unverified; see
    /// docs/arcgis.md, "Usage buckets"). Defaults to the product's default, `start`, so tests
    /// run with matching conventions unless they choose otherwise.
    pub usage_bucket_label: BucketLabel,
    /// How long a new report item answers "item not found" (`CONT_0001`) before it becomes
    /// visible, as Esri's client waits out (up to 15 s).
    pub report_item_visible_after_ms: u64,
    /// The report CSV carries a `Full Name` column after `Username` (the recorded evidence says
    /// it has exactly one text column; kept as a switch for parsers).
    pub report_full_name_column: bool,
    /// Makes `portals/self/users` stop where search stops. `None` (the default) serves every
    /// member, as the documentation implies by naming no cap; whether the listing really has
    /// none is unverified (see docs/arcgis.md, "Members: listing and exact lookup"), so
    /// clients are tested against each way a cap could show.
    pub org_users_cap: Option<ListingCap>,
    /// What the listing's `role` filter matches (unverified): the member's role exactly, or
    /// also every custom role built on a base role.
    pub org_users_role_filter: RoleFilter,
}

/// How a capped `portals/self/users` answers once more members match than it serves.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ListingCap {
    /// Matches past this many are never served (search's documented cap is 10,000; tests
    /// use small caps on small orgs).
    pub at: usize,
    /// What `total` says when more members match.
    pub total: CappedTotal,
    /// What a page starting past the cap answers.
    pub past: PastCap,
}

impl Default for ListingCap {
    /// Search's documented behaviour at 10,000.
    fn default() -> Self {
        ListingCap {
            at: 10_000,
            total: CappedTotal::Cap,
            past: PastCap::Empty,
        }
    }
}

/// The `total` of a capped answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CappedTotal {
    /// The cap itself, as search documents ("if the total number is greater than this value,
    /// 10,000 will be returned"): a listing that reads that many looks complete.
    #[default]
    Cap,
    /// The true count, so a client can see that members were not served.
    True,
}

/// What a capped listing answers for a page that starts past the cap. Either way the last
/// page within the cap says `nextStart: -1`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PastCap {
    /// No users and `nextStart: -1`, as search answers.
    #[default]
    Empty,
    /// An error envelope (code 400, naming `start`), as search engines that refuse a result
    /// window past their limit answer.
    Error,
}

/// What `role=<value>` selects in `portals/self/users`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RoleFilter {
    /// Members whose role is exactly that one: `org_user` alone, a custom role by its id.
    /// Every member is in exactly one role.
    #[default]
    Exact,
    /// A base role (`org_admin`, `org_publisher`, `org_user`) also selects the custom roles
    /// built on it, so a custom role's members are in two partitions.
    Base,
}

/// What `availableCredits` holds for a member without an allocation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum UnlimitedAvailable {
    /// The org's remaining credits, as a live capture shows (`assignedCredits: -1.0`,
    /// `availableCredits: 1.4562242E7`).
    #[default]
    OrgCredits,
    /// `-1`, as Esri's older test mocks show.
    MinusOne,
}

/// Which end of its bucket a usage timestamp names.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum BucketLabel {
    /// The label is the bucket's first instant: `[label, label + period)`.
    #[default]
    Start,
    /// The label is the instant the bucket ends: it covers `[label - period, label)`, so
    /// labels lie in `(startTime, endTime]` as in Esri's docstring.
    End,
}

impl Default for Behaviour {
    fn default() -> Self {
        Behaviour {
            list_includes_credits: true,
            report_processing_ms: 200,
            report_stuck: false,
            report_fail: false,
            report_redirect: true,
            report_total_row: false,
            search_hidden: Vec::new(),
            require_https_for_token: false,
            lockout_after: Some(5),
            unlimited_available: UnlimitedAvailable::OrgCredits,
            usage_bucket_label: BucketLabel::Start,
            report_item_visible_after_ms: 0,
            report_full_name_column: false,
            org_users_cap: None,
            org_users_role_filter: RoleFilter::Exact,
        }
    }
}

/// Counters that give a trigger its memory.
#[derive(Debug, Clone)]
pub(crate) struct TriggerState {
    set_at: Instant,
    seen: u64,
    fired: u64,
}

impl TriggerState {
    pub(crate) fn new() -> Self {
        TriggerState {
            set_at: Instant::now(),
            seen: 0,
            fired: 0,
        }
    }

    /// Counts a request and says whether the trigger fires for it.
    pub(crate) fn check(&mut self, t: &Trigger, endpoint: &str, now: Instant) -> bool {
        if t.endpoint.as_deref().is_some_and(|e| e != endpoint) {
            return false;
        }
        if let Some(ms) = t.for_ms
            && now.duration_since(self.set_at) > Duration::from_millis(ms)
        {
            return false;
        }
        self.seen += 1;
        if let Some(n) = t.every_nth
            && (n == 0 || !self.seen.is_multiple_of(n))
        {
            return false;
        }
        if t.times.is_some_and(|max| self.fired >= max) {
            return false;
        }
        self.fired += 1;
        true
    }
}

/// The faults plus the trigger counters, reset whenever faults are replaced.
#[derive(Debug, Clone)]
pub(crate) struct FaultState {
    pub(crate) faults: Faults,
    pub(crate) http_error: TriggerState,
    pub(crate) envelope: TriggerState,
    pub(crate) malformed: TriggerState,
    pub(crate) drop: TriggerState,
    /// Request sequence number at which all tokens expire.
    pub(crate) expire_tokens_at: Option<u64>,
    /// Draws the latency jitter. Seeded, so the draws are reproducible; the order requests
    /// arrive in is not, and need not be.
    jitter: ChaCha8Rng,
}

impl FaultState {
    pub(crate) fn new(faults: Faults, seq_now: u64) -> Self {
        FaultState {
            expire_tokens_at: faults.expire_tokens_after.map(|n| seq_now + n),
            faults,
            http_error: TriggerState::new(),
            envelope: TriggerState::new(),
            malformed: TriggerState::new(),
            drop: TriggerState::new(),
            jitter: ChaCha8Rng::seed_from_u64(0x6a17_7e55 ^ seq_now),
        }
    }

    /// This request's latency: `latency_ms` plus its random jitter.
    pub(crate) fn latency(&mut self) -> Duration {
        let jitter = match self.faults.latency_jitter_ms {
            0 => 0,
            j => self.jitter.random_range(0..=j),
        };
        Duration::from_millis(self.faults.latency_ms.saturating_add(jitter))
    }
}
