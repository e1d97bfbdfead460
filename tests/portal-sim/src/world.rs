//! The simulator's mutable state and what tests can inspect of it.
//!
//! One [`World`] per simulator behind a mutex. It owns the current org (allocations and
//! budgeting change), the consumption index that keeps balances equal to usage, the tokens,
//! and the records of everything credit-steward did: notifications, allocation calls, report
//! items and the (redacted) request log.

use std::cell::RefCell;
use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, LazyLock};

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::faults::{Behaviour, FaultState, Faults, UnlimitedAvailable};
use crate::org::{MemberRecord, Org, Role, UsageRecord, from_micros, micros};
use crate::wire::JavaNumber;

/// Who is calling, once the token has been checked.
#[derive(Debug, Clone, PartialEq)]
pub enum Caller {
    /// No token.
    Anonymous,
    /// A member, with their privileges.
    User {
        /// The signed-in username.
        username: String,
        /// Their role's privileges.
        privileges: Vec<String>,
    },
    /// An OAuth2 app token or an API key.
    App {
        /// The app's client id, or `apiKey`.
        client_id: String,
        /// Privileges registered on it.
        privileges: Vec<String>,
    },
}

impl Caller {
    /// Whether the caller holds `privilege`.
    pub fn has(&self, privilege: &str) -> bool {
        match self {
            Caller::Anonymous => false,
            Caller::User { privileges, .. } | Caller::App { privileges, .. } => {
                privileges.iter().any(|p| p == privilege)
            }
        }
    }

    /// Whether the caller may see org-private data (credits, emails).
    pub fn is_org_admin_viewer(&self) -> bool {
        self.has("portal:admin:viewUsers")
    }
}

/// A token the simulator issued.
#[derive(Debug, Clone)]
pub struct TokenInfo {
    /// Who it signs in.
    pub caller: Caller,
    /// Epoch ms; `None` never expires (API keys).
    pub expires: Option<i64>,
    /// `client=referer` binding.
    pub referer: Option<String>,
    /// Request sequence number it was issued at (for the "all tokens expire" fault).
    pub issued_seq: u64,
}

/// One createNotification call as recorded.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Notification {
    /// Request sequence number.
    pub seq: u64,
    /// `notificationChannelType`.
    pub channel: String,
    /// `subject`.
    pub subject: String,
    /// `message`.
    pub message: String,
    /// The usernames as sent.
    pub users: Vec<String>,
    /// Email addresses (email channel) or usernames (builtin) actually reached.
    pub delivered_to: Vec<String>,
    /// Usernames that could not be reached, with why.
    pub undeliverable: Vec<(String, String)>,
}

/// One assignUserCredits / unassignUserCredits call as applied: the write log.
///
/// Calls are recorded in the order the simulator applied them (`order`), with every
/// member's allocation before and after, so a test can replay the writes and hold them
/// against an audit trail, even when jitter or holds made requests overtake each other.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AllocationCall {
    /// Request sequence number: the order requests *arrived* in.
    pub seq: u64,
    /// Position among allocation calls in the order they were *applied*, from 1. Differs from
    /// the order of `seq` when requests overtook each other (latency jitter, holds).
    pub order: u64,
    /// `assign` or `unassign`.
    pub kind: String,
    /// One per entry sent, in the order sent (a username sent twice appears twice, the second
    /// `before` being the first `after`).
    pub entries: Vec<AllocationEntry>,
    /// Usernames the call did not change (the entries with `applied: false`).
    pub not_assigned: Vec<String>,
}

impl AllocationCall {
    /// `(username, allocation asked for)` per entry, as sent (`None` = unassign): the shape
    /// `entries` had before the write log carried before/after values.
    pub fn requested(&self) -> Vec<(String, Option<f64>)> {
        self.entries.iter().map(|e| (e.username.clone(), e.after)).collect()
    }
}

/// One member's change within an [`AllocationCall`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AllocationEntry {
    /// The username as sent.
    pub username: String,
    /// Whether the call changed this member's allocation (`false`: not a member of this org,
    /// listed in `not_assigned`).
    pub applied: bool,
    /// The allocation before the call; `None` = unlimited (or not a member, when not applied).
    pub before: Option<f64>,
    /// The allocation the call set (asked for, when not applied); `None` = unlimited
    /// (`unassign`).
    pub after: Option<f64>,
}

/// A report item in the admin's content.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ReportItem {
    /// 32-hex item id.
    pub id: String,
    /// Owner username.
    pub owner: String,
    /// Title.
    pub title: String,
    /// `reportSubType`.
    pub sub_type: String,
    /// `timeDuration`.
    pub duration: String,
    /// Epoch ms of the reported period's start.
    pub start_time: i64,
    /// Epoch ms of the period's end (exclusive).
    pub end_time: i64,
    /// Creation time (simulator clock, epoch ms).
    pub created: i64,
    /// Whether it was deleted.
    pub deleted: bool,
    /// Times the data was downloaded.
    pub downloads: u32,
}

/// One request as logged: secrets redacted.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RequestRecord {
    /// Sequence number, from 1.
    pub seq: u64,
    /// HTTP method.
    pub method: String,
    /// Stable endpoint name.
    pub endpoint: String,
    /// The path as requested.
    pub path: String,
    /// Query and form parameters, secrets replaced by `[redacted]`.
    pub params: Vec<(String, String)>,
    /// Whether a token was sent (parameter or header).
    pub authenticated: bool,
    /// HTTP status sent (200 for envelopes).
    pub status: u16,
    /// `error.code` when an envelope was sent, or the fault that was applied; `held:before`
    /// when the request was held before processing and its client left (never processed).
    pub outcome: String,
    /// Hold points the request met, in order: `before` (held before processing), `after`
    /// (processed, reply withheld), then `abandoned` if the client left (or the simulator
    /// stopped) while it was held. Empty for requests no hold caught.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub held: Vec<String>,
}

impl RequestRecord {
    /// The value of a logged parameter.
    pub fn param(&self, name: &str) -> Option<&str> {
        self.params
            .iter()
            .rev()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// Whether the request reached the operation and it succeeded.
    pub fn ok(&self) -> bool {
        self.outcome == "ok"
    }
}

/// A member's current credit state, for assertions.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MemberState {
    /// Username.
    pub username: String,
    /// Allocation; `None` = unlimited.
    pub allocation: Option<f64>,
    /// Credits consumed in the budgeting period.
    pub consumed: f64,
    /// `assignedCredits` as served (-1 = unlimited or budgeting off).
    pub assigned_credits: f64,
    /// `availableCredits` as served.
    pub available_credits: f64,
    /// `disabled`.
    pub disabled: bool,
    /// `userLicenseTypeId`.
    pub user_type: String,
    /// Email as stored.
    pub email: Option<String>,
    /// Base role.
    pub role: String,
}

/// A listing's `role` and `userLicenseType` filters.
type ListingFilters = (Option<String>, Option<String>);

/// Everything mutable.
pub struct World {
    /// The org as it is now.
    pub org: Org,
    /// username → index into `org.members`. Shared, like `org.usage`: a usage answer tells
    /// members from outsiders outside the world lock.
    pub by_username: Arc<HashMap<String, usize>>,
    /// user id → index into `org.members`.
    pub by_id: HashMap<String, usize>,
    /// username → micro-credits consumed since the budget period start.
    pub consumed: HashMap<String, i64>,
    /// Issued tokens.
    pub tokens: HashMap<String, TokenInfo>,
    /// Tokens issued before this sequence number are expired (the expiry fault).
    pub tokens_invalid_before: u64,
    /// Failed sign-ins per username.
    pub failed_logins: HashMap<String, u32>,
    /// Recorded notifications.
    pub notifications: Vec<Notification>,
    /// Recorded allocation calls.
    pub allocation_calls: Vec<AllocationCall>,
    /// Report items, including deleted ones.
    pub reports: Vec<ReportItem>,
    /// Request log.
    pub requests: Vec<RequestRecord>,
    /// Requests per endpoint name.
    pub counts: BTreeMap<String, u64>,
    /// Last request sequence number.
    pub seq: u64,
    /// Requests that reached the storage host carrying a token (must stay 0).
    pub storage_token_leaks: u64,
    /// Faults in force.
    pub(crate) faults: FaultState,
    /// Behaviour switches.
    pub behaviour: Behaviour,
    /// Counter for ids the simulator makes up.
    pub next_id: u64,
    /// Browser-style sign-ins in progress and unredeemed authorization codes.
    pub oauth: crate::api::auth::OAuthSessions,
    /// Which members a filtered listing (`role`, `userLicenseType`) selects, as indexes into
    /// `org.members`, kept once computed: a large org's filtered pages then cost their own
    /// size under the world lock, not a pass over every member each (ArcGIS answers pages
    /// in parallel; the lock would serialize those passes). Emptied by [`World::reindex`] and
    /// whenever the world is handed out for changes ([`crate::server::Sim::world`]).
    pub(crate) listings: RefCell<HashMap<ListingFilters, Arc<[usize]>>>,
}

/// Oldest request-log entries are dropped past this, so a long demo cannot grow without bound.
const MAX_LOG: usize = 200_000;

impl World {
    /// Builds the state for `org`.
    pub fn new(org: Org, behaviour: Behaviour) -> Self {
        let mut w = World {
            by_username: Arc::default(),
            by_id: HashMap::new(),
            consumed: HashMap::new(),
            tokens: HashMap::new(),
            tokens_invalid_before: 0,
            failed_logins: HashMap::new(),
            notifications: Vec::new(),
            allocation_calls: Vec::new(),
            reports: Vec::new(),
            requests: Vec::new(),
            counts: BTreeMap::new(),
            seq: 0,
            storage_token_leaks: 0,
            faults: FaultState::new(Faults::default(), 0),
            behaviour,
            next_id: 1,
            oauth: Default::default(),
            listings: RefCell::default(),
            org,
        };
        w.reindex();
        // API keys are long-lived tokens: valid from the start, never expiring.
        for k in w.org.api_keys.clone() {
            let caller = Caller::App {
                client_id: "apiKey".into(),
                privileges: k.privileges,
            };
            w.tokens.insert(
                k.key,
                TokenInfo {
                    caller,
                    expires: None,
                    referer: None,
                    issued_seq: 0,
                },
            );
        }
        w
    }

    /// Rebuilds the indexes after the member list or usage changed.
    pub fn reindex(&mut self) {
        self.listings.get_mut().clear();
        self.org.members.sort_by(|a, b| a.username.cmp(&b.username));
        self.by_username = Arc::new(
            self.org
                .members
                .iter()
                .enumerate()
                .map(|(i, m)| (m.username.clone(), i))
                .collect(),
        );
        self.by_id = self
            .org
            .members
            .iter()
            .enumerate()
            .map(|(i, m)| (m.id.clone(), i))
            .collect();
        self.consumed.clear();
        let start = self.org.budget_period_start;
        for r in self.org.usage.iter() {
            if let (Some(u), true) = (&r.username, r.day >= start) {
                *self.consumed.entry(u.clone()).or_default() += micros(r.credits);
            }
        }
    }

    /// Appends to the request log, dropping the oldest entries past the cap.
    pub fn log(&mut self, rec: RequestRecord) {
        *self.counts.entry(rec.endpoint.clone()).or_default() += 1;
        if self.requests.len() >= MAX_LOG {
            self.requests.drain(..MAX_LOG / 10);
        }
        self.requests.push(rec);
    }

    /// Adds a hold event to a logged request (the client left while its reply was withheld).
    pub fn note_held(&mut self, seq: u64, event: &str) {
        if let Some(r) = self.requests.iter_mut().rev().find(|r| r.seq == seq) {
            r.held.push(event.into());
        }
    }

    /// A fresh 32-hex id, deterministic per simulator run.
    pub fn new_id(&mut self) -> String {
        self.next_id += 1;
        format!(
            "{:016x}{:016x}",
            0x5157_0000_0000_0000u64 | self.next_id,
            self.next_id.wrapping_mul(0x9E37_79B9_7F4A_7C15)
        )
    }

    /// Whether budgeting is on (`creditAssignments == "enabled"`; absent = off).
    pub fn budgeting(&self) -> bool {
        self.org.credit_assignments == Some(true)
    }

    /// A member by exact username.
    pub fn member(&self, username: &str) -> Option<&MemberRecord> {
        self.by_username.get(username).map(|&i| &self.org.members[i])
    }

    /// A member by exact username or id (`community/users/<x>` accepts both).
    pub fn member_by_name_or_id(&self, key: &str) -> Option<&MemberRecord> {
        self.member(key)
            .or_else(|| self.by_id.get(key).map(|&i| &self.org.members[i]))
    }

    /// The members (indexes into `org.members`, in its order) that `selects` keeps for the
    /// filters `key`, computed on the first request with these filters since the members last
    /// changed.
    pub(crate) fn listing(
        &self,
        key: (Option<&str>, Option<&str>),
        selects: impl Fn(&MemberRecord) -> bool,
    ) -> Arc<[usize]> {
        let key = (key.0.map(str::to_owned), key.1.map(str::to_owned));
        let mut listings = self.listings.borrow_mut();
        let found = listings.entry(key).or_insert_with(|| {
            let members = self.org.members.iter().enumerate();
            members.filter(|(_, m)| selects(m)).map(|(i, _)| i).collect()
        });
        Arc::clone(found)
    }

    /// A member's role (falls back to `org_user` if the fixture names an unknown role).
    pub fn role(&self, m: &MemberRecord) -> &Role {
        role_in(&self.org.roles, m)
    }

    /// Micro-credits consumed by `username` in the budgeting period.
    pub fn consumed_micros(&self, username: &str) -> i64 {
        self.consumed.get(username).copied().unwrap_or(0)
    }

    /// `(assignedCredits, availableCredits)` as served. A member without an allocation (or any
    /// member while budgeting is off, an unverified choice: allocations mean nothing then) has
    /// `assignedCredits: -1` and, as a live capture shows, the org's remaining credits in
    /// `availableCredits` (or `-1` with [`UnlimitedAvailable::MinusOne`]; see docs/arcgis.md,
    /// "Credit fields and the unlimited sentinel").
    pub fn credit_fields(&self, m: &MemberRecord) -> (f64, f64) {
        match (self.budgeting(), m.allocation) {
            (true, Some(a)) => (a, from_micros(micros(a) - self.consumed_micros(&m.username))),
            _ => match self.behaviour.unlimited_available {
                UnlimitedAvailable::OrgCredits => (-1.0, self.org.available_credits),
                UnlimitedAvailable::MinusOne => (-1.0, -1.0),
            },
        }
    }

    /// The user object. `private` adds what only the user and org admins see.
    pub fn user_json(&self, m: &MemberRecord, private: bool, with_credits: bool) -> Value {
        let credits = with_credits.then(|| self.credit_fields(m));
        serde_json::to_value(wire_user(m, private.then(|| (self.role(m), credits)))).unwrap_or(Value::Null)
    }

    /// A page of users copied out (records, and the roles once), so it can be rendered after
    /// the world lock is released; `private` says, per member, whether the caller sees the
    /// private fields.
    pub fn users_view(
        &self,
        page: &[&MemberRecord],
        private: impl Fn(&MemberRecord) -> bool,
        with_credits: bool,
    ) -> UsersView {
        UsersView {
            roles: self.org.roles.clone(),
            users: page
                .iter()
                .map(|m| {
                    let private = private(m);
                    let credits = (private && with_credits).then(|| self.credit_fields(m));
                    ListedUser {
                        record: (*m).clone(),
                        private,
                        credits,
                    }
                })
                .collect(),
        }
    }

    /// Current state of every member, for assertions.
    pub fn member_states(&self) -> Vec<MemberState> {
        self.org
            .members
            .iter()
            .map(|m| {
                let (assigned, available) = self.credit_fields(m);
                MemberState {
                    username: m.username.clone(),
                    allocation: m.allocation,
                    consumed: from_micros(self.consumed_micros(&m.username)),
                    assigned_credits: assigned,
                    available_credits: available,
                    disabled: m.disabled,
                    user_type: m.user_type.clone(),
                    email: m.email.clone(),
                    role: self.role(m).base.clone(),
                }
            })
            .collect()
    }

    /// Records consumption: the usage record, the member's balance and the org's credits all
    /// move together.
    pub fn consume(&mut self, rec: UsageRecord) -> Result<(), String> {
        if rec.credits < 0.0 || !rec.credits.is_finite() {
            return Err("credits must be a finite number >= 0".into());
        }
        if let Some(u) = &rec.username {
            if self.member(u).is_none() {
                return Err(format!("'{u}' is not a member"));
            }
            if rec.day >= self.org.budget_period_start {
                *self.consumed.entry(u.clone()).or_default() += micros(rec.credits);
            }
        }
        self.org.available_credits = from_micros(micros(self.org.available_credits) - micros(rec.credits));
        let pos = self.org.usage.partition_point(|r| r.day <= rec.day);
        Arc::make_mut(&mut self.org.usage).insert(pos, rec);
        Ok(())
    }
}

/// A member's role among `roles`, `org_user` if the fixture names an unknown one. Borrowed,
/// not cloned: every rendered user asks for its role (100 per listing page).
fn role_in<'a>(roles: &'a [Role], m: &MemberRecord) -> &'a Role {
    static UNKNOWN: LazyLock<Role> = LazyLock::new(|| Role {
        id: "org_user".into(),
        name: "User".into(),
        base: "org_user".into(),
        has_role_id: false,
        privileges: Vec::new(),
    });
    roles.iter().find(|r| r.id == m.role_id).unwrap_or(&UNKNOWN)
}

/// A page of users detached from the world (see [`World::users_view`]).
pub struct UsersView {
    roles: Vec<Role>,
    users: Vec<ListedUser>,
}

/// One user of a [`UsersView`].
struct ListedUser {
    record: MemberRecord,
    /// Whether the caller sees the private fields.
    private: bool,
    /// `(assignedCredits, availableCredits)`, when shown and listed.
    credits: Option<(f64, f64)>,
}

impl UsersView {
    /// The user objects, ready to serialize.
    pub fn wire(&self) -> Vec<WireUser<'_>> {
        self.users
            .iter()
            .map(|u| {
                let private = u.private.then(|| (role_in(&self.roles, &u.record), u.credits));
                wire_user(&u.record, private)
            })
            .collect()
    }
}

/// The user object for `m`; `private` carries the role and the credit fields (when they are
/// listed) for callers who see what only the user and org admins see.
fn wire_user<'a>(m: &'a MemberRecord, private: Option<(&'a Role, Option<(f64, f64)>)>) -> WireUser<'a> {
    WireUser {
        username: &m.username,
        full_name: &m.full_name,
        first_name: &m.first_name,
        last_name: &m.last_name,
        description: (),
        tags: [],
        provider: "arcgis",
        created: m.created,
        modified: m.modified,
        culture: "en",
        region: "WO",
        units: "metric",
        thumbnail: (),
        private: private.map(|(role, credits)| WirePrivate {
            id: &m.id,
            org_id: &m.org_id,
            idp_username: (),
            access: &m.access,
            groups: [],
            role: &role.base,
            role_id: role.has_role_id.then_some(role.id.as_str()),
            privileges: &role.privileges,
            user_license_type_id: &m.user_type,
            level: &m.level,
            disabled: m.disabled,
            last_login: m.last_login,
            mfa_enabled: false,
            storage_usage: 0,
            storage_quota: 2_147_483_648,
            email: m.email.as_deref(),
            assigned_credits: credits.map(|(assigned, _)| JavaNumber(assigned)),
            available_credits: credits.map(|(_, available)| JavaNumber(available)),
        }),
    }
}

/// A user object as ArcGIS writes it (`null`s and constants included). Its public part is
/// what anyone may see, and exactly what Esri's own mocks show for it: no `id`, no `orgId`, no
/// role and no credit fields (see docs/arcgis.md, "Members: listing and exact lookup").
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
pub struct WireUser<'a> {
    username: &'a str,
    full_name: &'a str,
    first_name: &'a str,
    last_name: &'a str,
    description: (),
    tags: [(); 0],
    provider: &'static str,
    created: i64,
    modified: i64,
    culture: &'static str,
    region: &'static str,
    units: &'static str,
    thumbnail: (),
    #[serde(flatten)]
    private: Option<WirePrivate<'a>>,
}

/// What only the user and org admins see.
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct WirePrivate<'a> {
    id: &'a str,
    org_id: &'a str,
    idp_username: (),
    access: &'a str,
    groups: [(); 0],
    role: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    role_id: Option<&'a str>,
    privileges: &'a [String],
    user_license_type_id: &'a str,
    level: &'a str,
    disabled: bool,
    last_login: i64,
    mfa_enabled: bool,
    storage_usage: u64,
    storage_quota: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    email: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    assigned_credits: Option<JavaNumber>,
    #[serde(skip_serializing_if = "Option::is_none")]
    available_credits: Option<JavaNumber>,
}
