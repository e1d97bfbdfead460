//! Every response field the client reads, per endpoint, with the evidence behind it.
//!
//! No machine here reaches ArcGIS Online: what the client expects of an answer rests on the
//! recorded public responses in `tests/fixtures/agol/` where there is one, and is marked
//! unverified (with how the code stays correct) where there is none. A test holds the two
//! together: a field marked recorded must appear in a recorded answer of its endpoint, a field
//! marked unverified must not (the mark would be stale), and every field the decoders read
//! must be listed here. So a new field cannot slip in on faith, and a field that disappears
//! from the evidence cannot go unnoticed (see docs/arcgis.md, "Unverified behaviour and the
//! switches that cover it").

/// Why the client may rely on a field.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Evidence {
    /// Present in at least one recorded answer of the endpoint.
    Recorded,
    /// In no recorded answer: the reason says why the code reads it anyway and how it copes
    /// when it is missing.
    Unverified(&'static str),
}

/// One field of one endpoint's answer that the client reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FieldRead {
    /// The answer it belongs to (names as in docs/arcgis.md, "Endpoints").
    pub endpoint: &'static str,
    /// Its path in the answer: `user.privileges`, `users[].assignedCredits`.
    pub path: &'static str,
    /// The evidence for it.
    pub evidence: Evidence,
}

const fn recorded(endpoint: &'static str, path: &'static str) -> FieldRead {
    FieldRead {
        endpoint,
        path,
        evidence: Evidence::Recorded,
    }
}

const fn unverified(endpoint: &'static str, path: &'static str, why: &'static str) -> FieldRead {
    FieldRead {
        endpoint,
        path,
        evidence: Evidence::Unverified(why),
    }
}

/// The answer of `generateToken`.
pub const GENERATE_TOKEN: &str = "generateToken";
/// The answer of `oauth2/token`.
pub const OAUTH_TOKEN: &str = "oauth2/token";
/// The answer of `portals/self`.
pub const PORTAL_SELF: &str = "portals/self";
/// A page of `portals/self/users`.
pub const ORG_USERS: &str = "portals/self/users";
/// A page of `portals/self/roles`.
pub const ROLES: &str = "portals/self/roles";
/// The answer of `community/users/<username>`.
pub const USER: &str = "community/users/{user}";
/// The answer of `assignUserCredits`.
pub const ASSIGN: &str = "portals/self/assignUserCredits";
/// The answer of `unassignUserCredits`.
pub const UNASSIGN: &str = "portals/self/unassignUserCredits";
/// The answer of `createNotification`.
pub const NOTIFY: &str = "portals/self/createNotification";
/// The answer of `portals/self/usage`.
pub const USAGE: &str = "portals/self/usage";
/// The answer of `community/users/<owner>/report`.
pub const CREATE_REPORT: &str = "community/users/{user}/report";
/// The answer of `content/users/<owner>/items/<id>/status`.
pub const ITEM_STATUS: &str = "content/users/{owner}/items/{id}/status";
/// The answer of `content/users/<owner>/items/<id>/delete`.
pub const ITEM_DELETE: &str = "content/users/{owner}/items/{id}/delete";
/// An error envelope, from any endpoint.
pub const ERROR: &str = "error envelope";

const PORTAL_USER: &str = "Esri's mock of portals/self leaves `user` empty; the same user object, with this field, \
    is recorded for community/users/<u>. Missing, the account is refused (no username: not an admin view; \
    no privileges: the missing ones are named)";
const APP_INFO: &str = "Esri's mock leaves `appInfo` empty; read for app and API-key tokens only, whose \
    privileges then count as missing";
const NO_ROLES: &str = "no recorded portals/self/roles page: read only to list an org of 10,000 members or more \
    by role, in the shape the simulator serves after Esri's Python client (arcgis 2.4.4 `_portalpy._roles_page`); \
    a page without `roles` or a role without `id` fails that listing";
const NO_LISTING: &str = "no recorded portals/self/users page: the recorded org page is the search's, whose list \
    is `results`; a page without `users` or `total` fails the listing";

/// Every field the client reads.
pub const FIELDS_READ: &[FieldRead] = &[
    recorded(GENERATE_TOKEN, "token"),
    recorded(GENERATE_TOKEN, "expires"),
    recorded(OAUTH_TOKEN, "access_token"),
    recorded(OAUTH_TOKEN, "expires_in"),
    recorded(PORTAL_SELF, "id"),
    recorded(PORTAL_SELF, "name"),
    recorded(PORTAL_SELF, "availableCredits"),
    recorded(PORTAL_SELF, "creditAssignments"),
    recorded(PORTAL_SELF, "defaultUserCreditAssignment"),
    recorded(PORTAL_SELF, "contacts"),
    recorded(PORTAL_SELF, "urlKey"),
    recorded(PORTAL_SELF, "customBaseUrl"),
    recorded(PORTAL_SELF, "user"),
    recorded(PORTAL_SELF, "appInfo"),
    unverified(PORTAL_SELF, "user.username", PORTAL_USER),
    unverified(PORTAL_SELF, "user.role", PORTAL_USER),
    unverified(PORTAL_SELF, "user.roleId", PORTAL_USER),
    unverified(PORTAL_SELF, "user.privileges", PORTAL_USER),
    unverified(PORTAL_SELF, "appInfo.appId", APP_INFO),
    unverified(PORTAL_SELF, "appInfo.itemId", APP_INFO),
    unverified(PORTAL_SELF, "appInfo.privileges", APP_INFO),
    recorded(ORG_USERS, "total"),
    recorded(ORG_USERS, "nextStart"),
    unverified(ORG_USERS, "users", NO_LISTING),
    recorded(ORG_USERS, "users[].username"),
    recorded(ORG_USERS, "users[].fullName"),
    recorded(ORG_USERS, "users[].disabled"),
    unverified(
        ORG_USERS,
        "users[].userLicenseTypeId",
        "the recorded org page predates user types (it is recorded for community/users/<u>); missing, the \
         member is not taken for a viewer",
    ),
    recorded(ORG_USERS, "users[].assignedCredits"),
    recorded(ORG_USERS, "users[].availableCredits"),
    unverified(ROLES, "roles", NO_ROLES),
    unverified(ROLES, "roles[].id", NO_ROLES),
    unverified(ROLES, "nextStart", NO_ROLES),
    recorded(USER, "username"),
    recorded(USER, "fullName"),
    recorded(USER, "disabled"),
    recorded(USER, "userLicenseTypeId"),
    recorded(USER, "orgId"),
    recorded(USER, "assignedCredits"),
    recorded(USER, "availableCredits"),
    recorded(ASSIGN, "success"),
    recorded(ASSIGN, "notAssignedUsers"),
    unverified(
        ASSIGN,
        "notAssignedUsers[].username",
        "refusals are recorded as plain usernames; objects with a username are read too",
    ),
    recorded(UNASSIGN, "success"),
    recorded(UNASSIGN, "notUnAssignedUsers"),
    recorded(NOTIFY, "success"),
    recorded(USAGE, "data"),
    recorded(USAGE, "data[].username"),
    recorded(USAGE, "data[].credits"),
    unverified(
        USAGE,
        "data[].stype",
        "no recorded answer grouped by stype,etype; a series without it is unattributed to a service",
    ),
    unverified(
        USAGE,
        "data[].etype",
        "no recorded answer grouped by stype,etype; optional",
    ),
    unverified(
        CREATE_REPORT,
        "itemId",
        "no recorded answer of the report request; without it the run fails naming the answer",
    ),
    recorded(ITEM_STATUS, "status"),
    recorded(ITEM_STATUS, "statusMessage"),
    unverified(
        ITEM_DELETE,
        "success",
        "no recorded answer; only an explicit `success: false` is a failure",
    ),
    recorded(ERROR, "error"),
    recorded(ERROR, "error.code"),
    recorded(ERROR, "error.messageCode"),
    recorded(ERROR, "error.message"),
    recorded(ERROR, "error.details"),
    unverified(
        ERROR,
        "error.description",
        "Esri's Python client reads it; no recorded envelope carries one. Optional",
    ),
    recorded(ERROR, "error.error"),
    recorded(ERROR, "error.error_description"),
    recorded(ERROR, "code"),
    recorded(ERROR, "message"),
    recorded(ERROR, "status"),
    recorded(ERROR, "statusMessage"),
];

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use serde_json::Value;

    use super::*;
    use crate::arcgis::recorded::sample;

    /// The recorded answers of each endpoint: samples, or the part of one (a JSON pointer)
    /// that is that endpoint's answer.
    fn answers(endpoint: &str) -> Vec<Value> {
        let at = |name: &str, pointer: &str| {
            sample(name)
                .pointer(pointer)
                .cloned()
                .unwrap_or_else(|| panic!("{name} has no {pointer}"))
        };
        match endpoint {
            GENERATE_TOKEN => vec![at("01_generateToken_success.jsonc", "")],
            OAUTH_TOKEN => vec![at("03_oauth2_token.jsonc", "/success")],
            PORTAL_SELF => vec![
                at("04_portals_self_restjs.jsonc", ""),
                at("05_portals_self_docs_excerpt.jsonc", ""),
            ],
            // The org search page: the listing's paging fields, and the same user objects under
            // `results` (see `listing_path`).
            ORG_USERS => vec![at("09_org_user_search_page_restjs.jsonc", "")],
            USER => {
                let views = at("08_community_user_views_restjs.jsonc", "");
                let mut v: Vec<Value> = views.as_object().unwrap().values().cloned().collect();
                v.push(at("07_community_user_unlimited_live_capture.jsonc", ""));
                v
            }
            ASSIGN => vec![at("10_assignUserCredits_docs.jsonc", "/response")],
            UNASSIGN => vec![at("11_unassignUserCredits_docs.jsonc", "/response")],
            NOTIFY => vec![at("12_createNotification_restjs.jsonc", "/response_ok")],
            // Esri elided the docstring's answer: its top-level keys and two series remain.
            USAGE => {
                let s = sample("13_usage_by_member_docstring.jsonc");
                let mut root = serde_json::Map::new();
                for key in s["keys"].as_array().unwrap() {
                    root.insert(key.as_str().unwrap().to_owned(), Value::Null);
                }
                root.insert(
                    "data".into(),
                    Value::Array(vec![s["data[1]"].clone(), s["data[2]"].clone()]),
                );
                vec![Value::Object(root)]
            }
            ITEM_STATUS => vec![at("14_item_status_restjs.jsonc", "")],
            ERROR => {
                let all = sample("15_error_envelopes_restjs.jsonc");
                let mut v: Vec<Value> = all.as_object().unwrap().values().cloned().collect();
                v.push(at("02_generateToken_bad_password.jsonc", ""));
                v.push(at("03_oauth2_token.jsonc", "/error"));
                v.push(at("12_createNotification_restjs.jsonc", "/response_error"));
                v
            }
            CREATE_REPORT | ITEM_DELETE | ROLES => vec![],
            other => panic!("no answers known for {other}"),
        }
    }

    /// Whether `path` (`a.b`, `a[].b`) exists in `value`; `[]` means "in some element".
    fn has(value: &Value, path: &str) -> bool {
        let Some((head, rest)) = path.split_once('.') else {
            return value.get(path).is_some();
        };
        match head.strip_suffix("[]") {
            Some(key) => value
                .get(key)
                .and_then(Value::as_array)
                .is_some_and(|items| items.iter().any(|item| has(item, rest))),
            None => value.get(head).is_some_and(|inner| has(inner, rest)),
        }
    }

    /// The recorded org page is the search's: its users are under `results`, where the
    /// listing has `users`. The records are the same; the key itself stays unverified.
    fn listing_path(field: &FieldRead) -> String {
        match field.path.strip_prefix("users[].") {
            Some(rest) if field.endpoint == ORG_USERS => format!("results[].{rest}"),
            _ => field.path.to_owned(),
        }
    }

    #[test]
    fn recorded_fields_are_in_a_recorded_answer_and_unverified_ones_in_none() {
        let mut problems = Vec::new();
        for field in FIELDS_READ {
            let path = listing_path(field);
            let seen = answers(field.endpoint).iter().any(|a| has(a, &path));
            match (field.evidence, seen) {
                (Evidence::Recorded, false) => problems.push(format!(
                    "{} `{}` is marked recorded but no recorded answer has it: mark it unverified, saying \
                     how the code copes without it",
                    field.endpoint, field.path
                )),
                (Evidence::Unverified(_), true) => problems.push(format!(
                    "{} `{}` is marked unverified but a recorded answer has it: mark it recorded",
                    field.endpoint, field.path
                )),
                _ => {}
            }
        }
        assert!(problems.is_empty(), "{}", problems.join("\n"));
    }

    /// The sources of the decoders, and the endpoints each reads.
    const DECODERS: &[(&str, &str, &[&str])] = &[
        (
            "arcgis/auth.rs",
            include_str!("auth.rs"),
            &[GENERATE_TOKEN, OAUTH_TOKEN],
        ),
        ("arcgis/portal.rs", include_str!("portal.rs"), &[PORTAL_SELF]),
        (
            "arcgis/users.rs",
            include_str!("users.rs"),
            &[ORG_USERS, ROLES, USER, ERROR],
        ),
        (
            "arcgis/allocation.rs",
            include_str!("allocation.rs"),
            &[ASSIGN, UNASSIGN],
        ),
        ("arcgis/notify.rs", include_str!("notify.rs"), &[NOTIFY]),
        (
            "arcgis/report.rs",
            include_str!("report.rs"),
            &[CREATE_REPORT, ITEM_STATUS, ITEM_DELETE],
        ),
        ("arcgis/error.rs", include_str!("error.rs"), &[ERROR]),
        ("credits/usage.rs", include_str!("../credits/usage.rs"), &[USAGE]),
        ("arcgis/usage.rs", include_str!("usage.rs"), &[USAGE]),
    ];

    /// The JSON keys a source reads: `get("key")` and `text("key")` literals, and the fields of
    /// its `Wire*` serde structs in camelCase. Test modules are not decoders.
    fn keys_read(source: &str) -> BTreeSet<String> {
        let code = source.split("#[cfg(test)]").next().unwrap_or(source);
        let mut keys = BTreeSet::new();
        for call in ["get(\"", "text(\""] {
            for piece in code.split(call).skip(1) {
                if let Some(key) = piece.split('"').next()
                    && !key.is_empty()
                    && key.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
                {
                    keys.insert(key.to_owned());
                }
            }
        }
        for block in code.split("struct Wire").skip(1) {
            let body = block
                .split_once('{')
                .map_or("", |(_, b)| b.split('}').next().unwrap_or(""));
            for line in body.lines() {
                let line = line.trim();
                if line.starts_with("//") || line.starts_with('#') {
                    continue;
                }
                if let Some((name, _)) = line.split_once(':') {
                    let mut camel = String::new();
                    let mut upper = false;
                    for c in name.trim().chars() {
                        match (c, upper) {
                            ('_', _) => upper = true,
                            (c, true) => {
                                camel.extend(c.to_uppercase());
                                upper = false;
                            }
                            (c, false) => camel.push(c),
                        }
                    }
                    keys.insert(camel);
                }
            }
        }
        keys
    }

    #[test]
    fn every_field_a_decoder_reads_is_listed_with_its_evidence() {
        let mut problems = Vec::new();
        for (file, source, endpoints) in DECODERS {
            let listed: BTreeSet<&str> = FIELDS_READ
                .iter()
                .filter(|f| endpoints.contains(&f.endpoint) || f.endpoint == ERROR)
                .map(|f| f.path.rsplit(['.', ']']).next().unwrap_or(f.path))
                .collect();
            for key in keys_read(source) {
                if !listed.contains(key.as_str()) {
                    problems.push(format!(
                        "{file} reads `{key}`, which arcgis/fields.rs does not list for {endpoints:?}"
                    ));
                }
            }
        }
        assert!(problems.is_empty(), "{}", problems.join("\n"));
    }

    #[test]
    fn the_key_scan_sees_literals_and_wire_structs() {
        let keys = keys_read(
            "fn f(v: &Value) { v.get(\"availableCredits\"); text(\"stype\"); }\n\
             struct WirePage {\n    // a comment: not a field\n    next_start: Option<Value>,\n}\n\
             #[cfg(test)]\nmod tests { fn g(v: &Value) { v.get(\"testOnly\"); } }",
        );
        let expected: BTreeSet<String> = ["availableCredits", "stype", "nextStart"].map(String::from).into();
        assert_eq!(keys, expected);
    }
}
