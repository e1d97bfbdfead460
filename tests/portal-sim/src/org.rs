//! The fixture: one ArcGIS Online organization as plain data.
//!
//! Everything the simulator serves is derived from an [`Org`]: the portal properties, the
//! members, the roles, the credentials that may sign in and the usage records. It is what
//! `--fixture org.json` loads and what the generator writes, and what `reset` restores.
//! Credit balances are *not* stored: a member's available credits are always computed as
//! allocation − consumption in the budgeting period, so usage and balances cannot disagree.

use std::sync::Arc;

use serde::{Deserialize, Serialize};

/// One organization, with everything the simulator needs to answer for it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Org {
    /// The 16-character org id (`portals/self.id`, `accountid:` in searches).
    pub id: String,
    /// `portals/self.name`.
    pub name: String,
    /// `<urlKey>.maps.arcgis.com`.
    pub url_key: String,
    /// The org's remaining credits at the fixture's reference time.
    pub available_credits: f64,
    /// `creditAssignments`: `Some(true)` = "enabled", `Some(false)` = "disabled", `None` = the key
    /// is absent (Esri's Python client treats that as disabled; see docs/arcgis.md, "Org
    /// properties (`portals/self`)").
    pub credit_assignments: Option<bool>,
    /// `defaultUserCreditAssignment`; `-1` means no default limit.
    pub default_user_credit_assignment: f64,
    /// Administrative contacts: usernames, not addresses (see docs/arcgis.md, "Org properties
    /// (`portals/self`)").
    pub contacts: Vec<String>,
    /// `maxTokenExpirationMinutes`; `-1` means the server maximum (two weeks).
    pub max_token_expiration_minutes: i64,
    /// Epoch ms from which consumption counts against allocations (budgeting enabled then).
    pub budget_period_start: i64,
    /// Epoch ms of the UTC day the fixture describes ("today" for the generated usage).
    pub as_of: i64,
    /// Custom and built-in roles referenced by members.
    pub roles: Vec<Role>,
    /// The org's members, sorted by username.
    pub members: Vec<MemberRecord>,
    /// Users of other organizations: visible to `community/users` searches without an
    /// `accountid:` filter, never members (so `assignUserCredits` refuses them).
    pub external_users: Vec<MemberRecord>,
    /// Built-in accounts that may call `generateToken` (the passwords of a simulated org).
    pub credentials: Vec<Credential>,
    /// OAuth2 applications that may use `client_credentials`.
    pub apps: Vec<AppCredential>,
    /// Long-lived API keys.
    pub api_keys: Vec<ApiKey>,
    /// Daily credit usage, sorted by day then username then service type. Shared: a usage
    /// answer aggregates a snapshot of it outside the world lock (writes copy it only while
    /// such an answer is being built).
    pub usage: Arc<Vec<UsageRecord>>,
}

/// A role: built-in (`roleId` absent on the wire) or custom (16-character `roleId`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Role {
    /// Key members refer to; for custom roles also the wire `roleId`.
    pub id: String,
    /// Display name.
    pub name: String,
    /// The base role ArcGIS reports in `role`: `org_admin`, `org_publisher` or `org_user`.
    pub base: String,
    /// Whether `id` is sent as `roleId` (custom and named built-in roles such as Viewer).
    pub has_role_id: bool,
    /// The real rights.
    pub privileges: Vec<String>,
}

/// One user account as stored (credit balances are derived, see the module docs).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct MemberRecord {
    /// Case-sensitive username.
    pub username: String,
    /// 32-hex user id; `community/users/<id>` accepts it too.
    pub id: String,
    /// `fullName`.
    pub full_name: String,
    /// `firstName`.
    pub first_name: String,
    /// `lastName`.
    pub last_name: String,
    /// `None` = the key is absent; `Some("")` = present but empty (both happen; see
    /// docs/arcgis.md, "Members: listing and exact lookup").
    pub email: Option<String>,
    /// Owning org id.
    pub org_id: String,
    /// Profile visibility: `public`, `org` (members of the same org) or `private` (the user and
    /// the org's administrators only). Whoever may not see a profile gets "User does not exist
    /// or is inaccessible", exactly as for a name nobody has.
    #[serde(default = "default_access")]
    pub access: String,
    /// Key into [`Org::roles`].
    pub role_id: String,
    /// `userLicenseTypeId`, e.g. `creatorUT`, `viewerUT`.
    pub user_type: String,
    /// `level`, a string on the wire.
    pub level: String,
    /// `disabled`.
    pub disabled: bool,
    /// The credit allocation; `None` = unlimited (`-1` on the wire).
    pub allocation: Option<f64>,
    /// Epoch ms, `-1` for never.
    pub last_login: i64,
    /// Epoch ms.
    pub created: i64,
    /// Epoch ms.
    pub modified: i64,
}

fn default_access() -> String {
    "org".into()
}

/// A built-in account's sign-in secret.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Credential {
    /// Username (must be a member).
    pub username: String,
    /// Password.
    pub password: String,
}

/// An OAuth2 application registered in the org.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct AppCredential {
    /// `client_id`.
    pub client_id: String,
    /// `client_secret`.
    pub client_secret: String,
    /// Privileges registered on the app (see docs/arcgis.md, "Signing in").
    pub privileges: Vec<String>,
}

/// A long-lived API key (`AAPK…`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ApiKey {
    /// The key itself, used as a token.
    pub key: String,
    /// Privileges registered on the key.
    pub privileges: Vec<String>,
}

/// Credits one member (or nobody, for org-level usage such as storage) spent on one service
/// type on one UTC day.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct UsageRecord {
    /// Epoch ms of the UTC midnight that starts the day.
    pub day: i64,
    /// The member charged; `None` for usage not attributed to a member.
    pub username: Option<String>,
    /// Service type code (`geocode`, `spanalysis`, …).
    pub stype: String,
    /// Event type code.
    pub etype: String,
    /// Credits; sums are computed in micro-credits so they are exact.
    pub credits: f64,
    /// Number of operations.
    pub num: u64,
}

/// Credits in exact micro-credits, so that sums of usage records are exact (and values as
/// small as `2.0E-4` survive).
pub fn micros(credits: f64) -> i64 {
    (credits * 1_000_000.0).round() as i64
}

/// The inverse of [`micros`].
pub fn from_micros(m: i64) -> f64 {
    m as f64 / 1_000_000.0
}

/// Milli-credits (the generator's unit) as credits.
pub fn from_millis(m: i64) -> f64 {
    m as f64 / 1000.0
}

/// One AGOL service type: the code used by the usage endpoint and the label used as a column
/// header in the credits report.
#[derive(Debug, Clone, Copy)]
pub struct ServiceType {
    /// Usage-endpoint `stype` code.
    pub code: &'static str,
    /// Usage-endpoint `etype` code.
    pub etype: &'static str,
    /// Report column label.
    pub label: &'static str,
    /// Whether usage is charged to a member (storage is charged to the org).
    pub per_member: bool,
}

/// The service types the simulator knows, in report column order.
pub const SERVICE_TYPES: &[ServiceType] = &[
    ServiceType {
        code: "geocode",
        etype: "geocodecnt",
        label: "Geocoding",
        per_member: true,
    },
    ServiceType {
        code: "spanalysis",
        etype: "analysis",
        label: "Spatial Analysis",
        per_member: true,
    },
    ServiceType {
        code: "geoenrich",
        etype: "enrich",
        label: "GeoEnrichment",
        per_member: true,
    },
    ServiceType {
        code: "netanalysis",
        etype: "routing",
        label: "Network Analysis",
        per_member: true,
    },
    ServiceType {
        code: "tiles",
        etype: "tilegen",
        label: "Tile Generation",
        per_member: true,
    },
    ServiceType {
        code: "elevation",
        etype: "elevanalysis",
        label: "Elevation Analysis",
        per_member: true,
    },
    ServiceType {
        code: "demographics",
        etype: "demogmaps",
        label: "Demographics",
        per_member: true,
    },
    ServiceType {
        code: "intnotebks",
        etype: "notebookmins",
        label: "Notebooks",
        per_member: true,
    },
    ServiceType {
        code: "schdnotebks",
        etype: "notebookmins",
        label: "Scheduled Notebooks",
        per_member: true,
    },
    ServiceType {
        code: "featurestg",
        etype: "storagemb",
        label: "Feature Storage",
        per_member: false,
    },
    ServiceType {
        code: "filestg",
        etype: "storagemb",
        label: "File Storage",
        per_member: false,
    },
];

/// Looks a service type up by its code.
pub fn service_type(code: &str) -> Option<&'static ServiceType> {
    SERVICE_TYPES.iter().find(|s| s.code == code)
}
