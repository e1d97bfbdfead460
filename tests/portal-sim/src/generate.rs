//! A deterministic generator of realistic organizations.
//!
//! Same [`GenParams`] → byte-identical [`Org`] JSON: the RNG is ChaCha8 seeded from `seed`,
//! every collection is built in a fixed order and nothing reads the clock. The org always
//! starts with the hand-placed [`special`] members that exercise ArcGIS's pitfalls
//! (custom admin role, `jdoe`/`jdoe2`/`jdoe_admin`, exactly 10 % and 50 % left, negative
//! balance, zero allocation, unlimited, disabled, viewer, missing and empty email, never
//! logged in); the rest are random members with a realistic mix.

use std::collections::HashMap;

use chrono::{Datelike, Duration, NaiveDate};
use rand::{RngExt, SeedableRng};
use rand_chacha::ChaCha8Rng;

use crate::org::{ApiKey, AppCredential, Credential, MemberRecord, Org, Role, SERVICE_TYPES, UsageRecord, from_millis};

/// The signed-in administrator of every generated org.
pub const ADMIN_USERNAME: &str = "steward_admin";
/// Its password (a simulated org's secret; never a real one).
pub const ADMIN_PASSWORD: &str = "sim-admin-password";
/// A member whose custom role ("Credit Officer", base `org_publisher`) carries the admin
/// privileges credit-steward needs: an admin-like role that is not `org_admin`.
pub const OFFICER_USERNAME: &str = "credit_officer";
/// Its password.
pub const OFFICER_PASSWORD: &str = "sim-officer-password";
/// A member whose custom role can view users but not manage credits.
pub const AUDITOR_USERNAME: &str = "auditor";
/// Its password.
pub const AUDITOR_PASSWORD: &str = "sim-auditor-password";
/// A member whose custom role reports `role: "org_admin"` with a `roleId` and every privilege
/// credit-steward needs: an administrator in all but the built-in role.
pub const CUSTOM_ADMIN_USERNAME: &str = "custom_admin";
/// Its password.
pub const CUSTOM_ADMIN_PASSWORD: &str = "sim-custom-admin-password";
/// A member whose custom role also reports `role: "org_admin"` with a `roleId`, but only
/// manages content: no `portal:admin:viewUsers`, `manageCredits` or `createReports`. Esri's
/// own client does not count such a role as an administrator; a check on `role` alone would.
pub const CONTENT_ADMIN_USERNAME: &str = "content_admin";
/// Its password.
pub const CONTENT_ADMIN_PASSWORD: &str = "sim-content-admin-password";
/// A member of another org whose profile is private: its lookup answers "User does not exist
/// or is inaccessible", like a name nobody has.
pub const PRIVATE_OUTSIDER_USERNAME: &str = "jdoe_private";
/// A member of another org with a public profile: its lookup answers the public view, without
/// `orgId`, role or credit fields.
pub const PUBLIC_OUTSIDER_USERNAME: &str = "jdoe_partner";
/// A plain member who may sign in (no admin privilege at all).
pub const USER_USERNAME: &str = "jdoe";
/// Its password.
pub const USER_PASSWORD: &str = "sim-user-password";
/// OAuth2 app with admin privileges registered.
pub const APP_CLIENT_ID: &str = "creditStewardApp";
/// Its secret.
pub const APP_CLIENT_SECRET: &str = "sim-app-secret";
/// An API key with admin privileges registered.
pub const API_KEY: &str = "AAPKsimulatedapikey0000000000000000";

/// Every admin privilege the simulator checks.
pub const ADMIN_PRIVILEGES: &[&str] = &[
    "portal:admin:viewUsers",
    "portal:admin:updateUsers",
    "portal:admin:manageCredits",
    "portal:admin:createReports",
    "portal:admin:manageWebsite",
    "portal:admin:viewItems",
    "portal:admin:deleteItems",
];

const USER_PRIVILEGES: &[&str] = &[
    "portal:user:createItem",
    "portal:user:joinGroup",
    "portal:user:shareToGroup",
    "premium:user:geocode",
    "premium:user:spatialanalysis",
];

/// What to generate.
#[derive(Debug, Clone)]
pub struct GenParams {
    /// Number of members (at least the special members are always present).
    pub members: usize,
    /// RNG seed.
    pub seed: u64,
    /// The UTC day the org is "as of": usage runs over the 13 calendar months ending that day.
    pub as_of: NaiveDate,
    /// Whether credit budgeting is enabled.
    pub budgeting: bool,
}

impl GenParams {
    /// Budgeting on, the given size, seed and day.
    pub fn new(members: usize, seed: u64, as_of: NaiveDate) -> Self {
        GenParams {
            members,
            seed,
            as_of,
            budgeting: true,
        }
    }
}

const FIRST: &[&str] = &[
    "james",
    "mary",
    "robert",
    "patricia",
    "john",
    "jennifer",
    "michael",
    "linda",
    "david",
    "elizabeth",
    "william",
    "barbara",
    "richard",
    "susan",
    "joseph",
    "jessica",
    "thomas",
    "sarah",
    "camille",
    "lucas",
    "chloe",
    "hugo",
    "manon",
    "louis",
    "ines",
    "jules",
    "lea",
    "arthur",
    "emma",
    "nathan",
    "amina",
    "yusuf",
    "mei",
    "hiroshi",
    "priya",
    "arjun",
    "sofia",
    "mateo",
    "olga",
    "ivan",
    "fatima",
    "omar",
    "noah",
    "zoe",
    "liam",
    "anna",
    "paul",
    "marie",
];
const LAST: &[&str] = &[
    "smith",
    "johnson",
    "williams",
    "brown",
    "jones",
    "garcia",
    "miller",
    "davis",
    "rodriguez",
    "martinez",
    "martin",
    "bernard",
    "dubois",
    "thomas",
    "robert",
    "richard",
    "petit",
    "durand",
    "leroy",
    "moreau",
    "simon",
    "laurent",
    "lefebvre",
    "michel",
    "tanaka",
    "suzuki",
    "kim",
    "lee",
    "chen",
    "wang",
    "singh",
    "patel",
    "kowalski",
    "novak",
    "silva",
    "santos",
    "rossi",
    "russo",
    "muller",
    "schmidt",
    "nguyen",
    "tran",
    "haddad",
    "okafor",
    "mensah",
    "doe",
];
const USER_TYPES: &[(&str, u32)] = &[
    ("creatorUT", 50),
    ("viewerUT", 20),
    ("contributorUT", 10),
    ("GISProfessionalStdUT", 10),
    ("GISProfessionalAdvUT", 5),
    ("mobileWorkerUT", 5),
];
const ALLOCATIONS: &[f64] = &[100.0, 200.0, 250.0, 500.0, 1000.0, 2000.0];

fn day_ms(d: NaiveDate) -> i64 {
    d.and_hms_opt(0, 0, 0)
        .expect("midnight exists")
        .and_utc()
        .timestamp_millis()
}

fn hex_id(rng: &mut ChaCha8Rng, len: usize) -> String {
    const HEX: &[u8] = b"0123456789abcdef";
    (0..len).map(|_| HEX[rng.random_range(0..16)] as char).collect()
}

fn alnum_id(rng: &mut ChaCha8Rng, len: usize) -> String {
    const ALNUM: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";
    (0..len)
        .map(|_| ALNUM[rng.random_range(0..ALNUM.len())] as char)
        .collect()
}

fn pick_weighted<'a>(rng: &mut ChaCha8Rng, items: &'a [(&'a str, u32)]) -> &'a str {
    let total: u32 = items.iter().map(|(_, w)| w).sum();
    let mut r = rng.random_range(0..total);
    for (name, w) in items {
        if r < *w {
            return name;
        }
        r -= w;
    }
    items[0].0
}

fn roles(rng: &mut ChaCha8Rng) -> Vec<Role> {
    let strs = |p: &[&str]| p.iter().map(|s| s.to_string()).collect::<Vec<_>>();
    let mut admin = strs(ADMIN_PRIVILEGES);
    admin.extend(strs(USER_PRIVILEGES));
    let mut officer = strs(&[
        "portal:admin:viewUsers",
        "portal:admin:manageCredits",
        "portal:admin:createReports",
    ]);
    officer.extend(strs(USER_PRIVILEGES));
    let mut auditor = strs(&["portal:admin:viewUsers"]);
    auditor.extend(strs(USER_PRIVILEGES));
    let admin_like = admin.clone();
    let mut content_admin = strs(&[
        "portal:admin:viewItems",
        "portal:admin:updateItems",
        "portal:admin:deleteItems",
        "portal:admin:reassignItems",
    ]);
    content_admin.extend(strs(USER_PRIVILEGES));
    vec![
        Role {
            id: "org_admin".into(),
            name: "Administrator".into(),
            base: "org_admin".into(),
            has_role_id: false,
            privileges: admin,
        },
        Role {
            id: "org_publisher".into(),
            name: "Publisher".into(),
            base: "org_publisher".into(),
            has_role_id: false,
            privileges: strs(USER_PRIVILEGES),
        },
        Role {
            id: "org_user".into(),
            name: "User".into(),
            base: "org_user".into(),
            has_role_id: false,
            privileges: strs(&USER_PRIVILEGES[..3]),
        },
        Role {
            id: "iAAAAAAAAAAAAAAA".into(),
            name: "Viewer".into(),
            base: "org_user".into(),
            has_role_id: true,
            privileges: strs(&["portal:user:joinGroup"]),
        },
        Role {
            id: alnum_id(rng, 16),
            name: "Credit Officer".into(),
            base: "org_publisher".into(),
            has_role_id: true,
            privileges: officer,
        },
        Role {
            id: alnum_id(rng, 16),
            name: "Auditor".into(),
            base: "org_user".into(),
            has_role_id: true,
            privileges: auditor,
        },
        // Custom roles with administrative privileges report `org_admin` as their base (fixed
        // ids, so adding them did not change what every seed generates).
        Role {
            id: "cAdminFullRole01".into(),
            name: "Deputy Administrator".into(),
            base: "org_admin".into(),
            has_role_id: true,
            privileges: admin_like,
        },
        Role {
            id: "cAdminContent001".into(),
            name: "Content Administrator".into(),
            base: "org_admin".into(),
            has_role_id: true,
            privileges: content_admin,
        },
    ]
}

/// A hand-placed member: `(username, role index, user type, allocation, consumed in the
/// budget period, disabled, email, last login never)`.
struct Special {
    username: &'static str,
    role: usize,
    user_type: &'static str,
    allocation: Option<f64>,
    consumed: f64,
    disabled: bool,
    email: Option<&'static str>,
    never_logged_in: bool,
    access: &'static str,
}

/// The hand-placed members every generated org starts with, each there for one pitfall.
fn special() -> Vec<Special> {
    let s = |username, role, user_type, allocation, consumed| Special {
        username,
        role,
        user_type,
        allocation,
        consumed,
        disabled: false,
        email: Some("@"),
        never_logged_in: false,
        access: "org",
    };
    vec![
        s(ADMIN_USERNAME, 0, "creatorUT", None, 12.5),
        s(OFFICER_USERNAME, 4, "creatorUT", Some(500.0), 100.0),
        s(AUDITOR_USERNAME, 5, "creatorUT", Some(200.0), 20.0),
        // The near-duplicate trap: a fuzzy search for "jdoe" returns all three.
        s("jdoe", 1, "creatorUT", Some(1000.0), 400.0),
        s("jdoe2", 1, "creatorUT", Some(500.0), 480.0),
        s("jdoe_admin", 0, "creatorUT", None, 3.25),
        // Exactly on the thresholds: neither is below them.
        s("edge_10pct", 1, "creatorUT", Some(300.0), 270.0),
        s("edge_50pct", 1, "creatorUT", Some(1000.0), 500.0),
        // What a bare "set to 200" leaves after 950 were used: 200 assigned, −750 available.
        s("overspent", 1, "creatorUT", Some(200.0), 950.0),
        s("zero_alloc", 2, "creatorUT", Some(0.0), 0.0),
        s("unlimited_analyst", 1, "GISProfessionalAdvUT", None, 800.0),
        Special {
            disabled: true,
            ..s("disabled_member", 2, "creatorUT", Some(500.0), 480.0)
        },
        s("viewer_member", 3, "viewerUT", Some(100.0), 0.0),
        Special {
            email: None,
            ..s("no_email", 1, "creatorUT", Some(250.0), 240.0)
        },
        Special {
            email: Some(""),
            ..s("empty_email", 1, "creatorUT", Some(250.0), 150.0)
        },
        Special {
            never_logged_in: true,
            ..s("never_logged_in", 2, "creatorUT", Some(100.0), 0.0)
        },
        s(CUSTOM_ADMIN_USERNAME, 6, "creatorUT", None, 1.5),
        s(CONTENT_ADMIN_USERNAME, 7, "creatorUT", Some(300.0), 30.0),
        // A private profile: its org's administrators still see all of it.
        Special {
            access: "private",
            ..s("private_member", 1, "creatorUT", Some(400.0), 380.0)
        },
    ]
}

/// Splits `total` milli-credits into `parts` positive-or-zero amounts that sum exactly.
fn split_millis(rng: &mut ChaCha8Rng, total: i64, parts: usize) -> Vec<i64> {
    let mut cuts: Vec<i64> = (1..parts).map(|_| rng.random_range(0..=total)).collect();
    cuts.sort_unstable();
    let mut out = Vec::with_capacity(parts);
    let mut prev = 0;
    for c in cuts {
        out.push(c - prev);
        prev = c;
    }
    out.push(total - prev);
    out
}

fn member_usage(
    rng: &mut ChaCha8Rng,
    username: &str,
    consumed_in_budget: i64,
    first_day: NaiveDate,
    budget_start: NaiveDate,
    as_of: NaiveDate,
    out: &mut Vec<UsageRecord>,
) {
    let member_types: Vec<_> = SERVICE_TYPES.iter().filter(|s| s.per_member).collect();
    let mut push = |rng: &mut ChaCha8Rng, day: NaiveDate, m: i64| {
        if m == 0 {
            return;
        }
        let st = member_types[rng.random_range(0..member_types.len())];
        out.push(UsageRecord {
            day: day_ms(day),
            username: Some(username.to_string()),
            stype: st.code.into(),
            etype: st.etype.into(),
            credits: from_millis(m),
            num: (m / 40).max(1) as u64,
        });
    };
    // In the budget period: exactly `consumed_in_budget`, spread over a few days.
    let budget_days = (as_of - budget_start).num_days();
    if consumed_in_budget > 0 {
        let parts = rng.random_range(1..=6usize);
        for m in split_millis(rng, consumed_in_budget, parts) {
            let day = budget_start + Duration::days(rng.random_range(0..=budget_days));
            push(rng, day, m);
        }
    }
    // Before it: history that no longer counts against the allocation.
    let history_days = (budget_start - first_day).num_days();
    if history_days > 0 {
        for _ in 0..rng.random_range(0..8usize) {
            let day = first_day + Duration::days(rng.random_range(0..history_days));
            let m = rng.random_range(50..=60_000);
            push(rng, day, m);
        }
    }
}

/// Builds the org for `params`. Deterministic: same params, same org.
pub fn generate(params: &GenParams) -> Org {
    let mut rng = ChaCha8Rng::seed_from_u64(params.seed);
    let as_of = params.as_of;
    // 13 calendar months ending with the as-of month.
    let first_day = {
        let m0 = as_of.year() * 12 + as_of.month0() as i32 - 12;
        NaiveDate::from_ymd_opt(m0.div_euclid(12), m0.rem_euclid(12) as u32 + 1, 1).expect("valid month start")
    };
    let budget_start = as_of - Duration::days(89);
    let org_id = alnum_id(&mut rng, 16);
    let url_key = format!("sim{}", params.seed);
    let roles = roles(&mut rng);
    let domain = format!("{url_key}.example.org");

    let mut members = Vec::with_capacity(params.members.max(16));
    let mut usage = Vec::new();
    let make = |rng: &mut ChaCha8Rng,
                username: String,
                first: &str,
                last: &str,
                role: &Role,
                user_type: &str,
                allocation: Option<f64>,
                disabled: bool,
                email: Option<String>,
                never: bool|
     -> MemberRecord {
        let created = day_ms(first_day) - rng.random_range(1..2_000) * 86_400_000;
        let cap = |s: &str| {
            let mut c = s.chars();
            c.next()
                .map(|f| f.to_uppercase().chain(c).collect::<String>())
                .unwrap_or_default()
        };
        MemberRecord {
            id: hex_id(rng, 32),
            full_name: format!("{} {}", cap(first), cap(last)),
            first_name: cap(first),
            last_name: cap(last),
            email,
            org_id: org_id.clone(),
            role_id: role.id.clone(),
            user_type: user_type.into(),
            level: if user_type == "viewerUT" {
                "1".into()
            } else {
                "2".into()
            },
            disabled,
            allocation: if params.budgeting { allocation } else { None },
            last_login: if never {
                -1
            } else {
                day_ms(as_of) - rng.random_range(0..90 * 86_400_000i64)
            },
            created,
            modified: created + rng.random_range(0..400) * 86_400_000,
            access: "org".into(),
            username,
        }
    };

    for s in special().into_iter().take(params.members.max(1)) {
        let (first, last) = s.username.split_once('_').unwrap_or((s.username, "member"));
        let email = s.email.map(|e| {
            if e == "@" {
                format!("{}@{domain}", s.username)
            } else {
                e.to_string()
            }
        });
        let mut m = make(
            &mut rng,
            s.username.into(),
            first,
            last,
            &roles[s.role],
            s.user_type,
            s.allocation,
            s.disabled,
            email,
            s.never_logged_in,
        );
        m.access = s.access.into();
        member_usage(
            &mut rng,
            &m.username,
            (s.consumed * 1000.0) as i64,
            first_day,
            budget_start,
            as_of,
            &mut usage,
        );
        members.push(m);
    }

    let mut taken: std::collections::HashSet<String> = members.iter().map(|m| m.username.clone()).collect();
    // The suffix each first/last pair tried last: a 100,000-member org has ~45 members per
    // pair, and trying every suffix from 1 again made generation quadratic in that.
    let mut suffix: HashMap<(&str, &str), u32> = HashMap::new();
    while members.len() < params.members {
        let first = FIRST[rng.random_range(0..FIRST.len())];
        let last = LAST[rng.random_range(0..LAST.len())];
        let n = suffix.entry((first, last)).or_insert(1);
        let mut username = match *n {
            1 => format!("{first}_{last}"),
            k => format!("{first}_{last}{k}"),
        };
        while taken.contains(&username) {
            *n += 1;
            username = format!("{first}_{last}{n}");
        }
        taken.insert(username.clone());
        let user_type = pick_weighted(&mut rng, USER_TYPES);
        let role = match (user_type, rng.random_range(0..100)) {
            ("viewerUT", _) => &roles[3],
            (_, 0..2) => &roles[0],
            (_, 2..40) => &roles[1],
            _ => &roles[2],
        };
        let limited = rng.random_bool(0.7);
        let allocation = limited.then(|| ALLOCATIONS[rng.random_range(0..ALLOCATIONS.len())]);
        let disabled = rng.random_bool(0.03);
        let email = match rng.random_range(0..100) {
            0 => None,
            1 => Some(String::new()),
            _ => Some(format!("{username}@{domain}")),
        };
        let never = rng.random_bool(0.02);
        // Viewers cannot spend credits; others spend a share of their allocation.
        let consumed = match (user_type, allocation) {
            ("viewerUT", _) => 0,
            (_, Some(a)) => {
                let share = match rng.random_range(0..100) {
                    0..60 => rng.random_range(0.0..0.5),
                    60..80 => rng.random_range(0.5..0.9),
                    80..92 => rng.random_range(0.9..1.0),
                    _ => rng.random_range(1.0..1.3),
                };
                (a * share * 1000.0) as i64
            }
            (_, None) => rng.random_range(0..400_000),
        };
        let m = make(
            &mut rng, username, first, last, role, user_type, allocation, disabled, email, never,
        );
        member_usage(
            &mut rng,
            &m.username,
            consumed,
            first_day,
            budget_start,
            as_of,
            &mut usage,
        );
        members.push(m);
    }
    members.sort_by(|a, b| a.username.cmp(&b.username));

    // Org-level storage, charged to nobody, every day.
    let mut day = first_day;
    let daily_storage = (params.members as i64 * 20).max(500);
    while day <= as_of {
        for st in SERVICE_TYPES.iter().filter(|s| !s.per_member) {
            let m = rng.random_range(daily_storage / 2..=daily_storage);
            usage.push(UsageRecord {
                day: day_ms(day),
                username: None,
                stype: st.code.into(),
                etype: st.etype.into(),
                credits: from_millis(m),
                num: 1,
            });
        }
        day += Duration::days(1);
    }
    // By day, then username, then service type; usernames compared by their rank among the
    // (sorted, unique) members, so the 600,000 records of a large org sort on integers.
    let rank: HashMap<&str, usize> = members
        .iter()
        .enumerate()
        .map(|(i, m)| (m.username.as_str(), i))
        .collect();
    let mut order: Vec<(i64, Option<usize>, &'static str, usize)> = usage
        .iter()
        .enumerate()
        .map(|(i, r)| {
            let user = r.username.as_deref().map(|u| rank[u]);
            // The code as the table's `'static` text, so the records can be moved afterwards.
            let stype = SERVICE_TYPES.iter().find(|s| s.code == r.stype).map_or("", |s| s.code);
            (r.day, user, stype, i)
        })
        .collect();
    order.sort_unstable();
    let mut slots: Vec<Option<UsageRecord>> = usage.into_iter().map(Some).collect();
    let usage: Vec<UsageRecord> = order.iter().filter_map(|&(.., i)| slots[i].take()).collect();

    let mut external_users: Vec<MemberRecord> = [PUBLIC_OUTSIDER_USERNAME, "jdoe3"]
        .iter()
        .map(|u| {
            let other_org = alnum_id(&mut rng, 16);
            MemberRecord {
                username: u.to_string(),
                id: hex_id(&mut rng, 32),
                full_name: "John Doe".into(),
                first_name: "John".into(),
                last_name: "Doe".into(),
                email: Some(format!("{u}@partner.example.net")),
                org_id: other_org,
                access: "public".into(),
                role_id: "org_user".into(),
                user_type: "creatorUT".into(),
                level: "2".into(),
                disabled: false,
                allocation: None,
                last_login: day_ms(as_of),
                created: day_ms(first_day),
                modified: day_ms(first_day),
            }
        })
        .collect();
    // Fixed ids: drawing them would change what every seed generates after this point.
    external_users.push(MemberRecord {
        username: PRIVATE_OUTSIDER_USERNAME.into(),
        id: "0123456789abcdef0123456789abcdef".into(),
        access: "private".into(),
        org_id: "otherOrgPrivate1".into(),
        email: Some(format!("{PRIVATE_OUTSIDER_USERNAME}@partner.example.net")),
        ..external_users[0].clone()
    });

    let all_admin: Vec<String> = ADMIN_PRIVILEGES.iter().map(|s| s.to_string()).collect();
    Org {
        id: org_id,
        name: format!("Simulated Org {}", params.seed),
        url_key,
        // Large orgs hold tens of millions of credits: exercises exponent notation (5.0E7).
        available_credits: from_millis(params.members as i64 * 2_000_000 + rng.random_range(0..1_000_000i64)),
        credit_assignments: Some(params.budgeting),
        default_user_credit_assignment: if params.budgeting { 200.0 } else { -1.0 },
        contacts: [ADMIN_USERNAME, OFFICER_USERNAME]
            .iter()
            .filter(|u| members.iter().any(|m| m.username == **u))
            .map(|u| u.to_string())
            .collect(),
        max_token_expiration_minutes: -1,
        budget_period_start: day_ms(budget_start),
        as_of: day_ms(as_of),
        roles,
        members,
        external_users,
        credentials: vec![
            Credential {
                username: ADMIN_USERNAME.into(),
                password: ADMIN_PASSWORD.into(),
            },
            Credential {
                username: OFFICER_USERNAME.into(),
                password: OFFICER_PASSWORD.into(),
            },
            Credential {
                username: AUDITOR_USERNAME.into(),
                password: AUDITOR_PASSWORD.into(),
            },
            Credential {
                username: USER_USERNAME.into(),
                password: USER_PASSWORD.into(),
            },
            Credential {
                username: CUSTOM_ADMIN_USERNAME.into(),
                password: CUSTOM_ADMIN_PASSWORD.into(),
            },
            Credential {
                username: CONTENT_ADMIN_USERNAME.into(),
                password: CONTENT_ADMIN_PASSWORD.into(),
            },
        ],
        apps: vec![AppCredential {
            client_id: APP_CLIENT_ID.into(),
            client_secret: APP_CLIENT_SECRET.into(),
            privileges: all_admin.clone(),
        }],
        api_keys: vec![ApiKey {
            key: API_KEY.into(),
            privileges: all_admin,
        }],
        usage: usage.into(),
    }
}
