//! The org's properties (`portals/self`) and what the signed-in account may do.
//!
//! Read fresh on every call (Esri's Python client caches them at login, so its org credits go
//! stale), and never read from an anonymous view: missing `availableCredits` or `user` is an
//! error, not 0 credits (see docs/arcgis.md, "Org properties (`portals/self`)").

use serde_json::Value;

use crate::credits::amount::Credits;

use super::client::Client;
use super::endpoint::PORTAL_SELF;
use super::error::{AccountRole, Error};
use super::wire;

/// Privilege to see every member's full record, credit fields and email included.
pub const VIEW_USERS: &str = "portal:admin:viewUsers";
/// Privilege to change credit budgeting and allocations.
pub const MANAGE_CREDITS: &str = "portal:admin:manageCredits";
/// Privilege to create org reports (the credits report item).
pub const CREATE_REPORTS: &str = "portal:admin:createReports";

/// The org properties credit-steward uses.
#[derive(Debug, Clone, PartialEq)]
pub struct OrgProperties {
    /// Org id, when given.
    pub id: Option<String>,
    /// Org name, for messages.
    pub name: Option<String>,
    /// Credits the org has left (may be 0 or negative).
    pub available_credits: Credits,
    /// Whether credit budgeting is on (`creditAssignments == "enabled"`; absent = off).
    pub budgeting_enabled: bool,
    /// Default allocation for new members; `None` when there is none (`-1`).
    pub default_user_credit_assignment: Option<Credits>,
    /// The org's administrative contacts: usernames, not email addresses.
    pub admin_contacts: Vec<String>,
    /// Who the token belongs to.
    pub signed_in: SignedIn,
    /// The org's home, `https://<urlKey>.<customBaseUrl>` (`https://acme.maps.arcgis.com`),
    /// where members' pages are (`/home/user.html?user=<username>`); `None` when the answer
    /// does not carry both fields.
    pub home_url: Option<String>,
}

/// The identity behind the token.
#[derive(Debug, Clone, PartialEq)]
pub enum SignedIn {
    /// A member account (generateToken or a user OAuth login).
    User(SignedInUser),
    /// An app or API-key token (`appInfo`, no `user`): only its registered privileges count.
    App {
        /// The app's id, when given.
        app_id: Option<String>,
        /// Privileges registered on the developer credentials, when ArcGIS lists them.
        privileges: Vec<String>,
    },
}

/// The signed-in member's role and privileges.
#[derive(Debug, Clone, PartialEq)]
pub struct SignedInUser {
    /// Exact username (the owner of report items).
    pub username: String,
    /// Base role: `org_admin`, `org_publisher` or `org_user` (custom roles keep the base here).
    pub role: Option<String>,
    /// Custom role id, when the role is custom.
    pub role_id: Option<String>,
    /// The real rights.
    pub privileges: Vec<String>,
}

/// Something credit-steward needs permission to do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Capability {
    /// Read every member's credits and change allocations.
    ManageCredits,
    /// Create the credits report item.
    CreateReports,
}

impl Capability {
    /// The privileges that grant it, to any role (see docs/arcgis.md, "Org properties
    /// (`portals/self`)").
    pub fn privileges(self) -> &'static [&'static str] {
        match self {
            Capability::ManageCredits => &[VIEW_USERS, MANAGE_CREDITS],
            Capability::CreateReports => &[CREATE_REPORTS],
        }
    }

    fn describe(self) -> &'static str {
        match self {
            Capability::ManageCredits => "read members' credits and manage allocations",
            Capability::CreateReports => "create the credits report",
        }
    }
}

impl OrgProperties {
    /// Ok if the token may do `capability`; otherwise an error naming the missing privileges
    /// (see [`SignedIn::ensure`]).
    pub fn ensure(&self, capability: Capability) -> Result<(), Error> {
        self.signed_in.ensure(capability)
    }

    /// The signed-in member's username, when the token is a member's.
    pub fn username(&self) -> Option<&str> {
        match &self.signed_in {
            SignedIn::User(u) => Some(&u.username),
            SignedIn::App { .. } => None,
        }
    }
}

impl SignedIn {
    /// Ok if the token may do `capability`; otherwise an error naming the missing privileges.
    /// Decided from the privileges alone, whatever the role: a custom role can report
    /// `role: "org_admin"` (with a `roleId`) and still lack the credit privileges, and would
    /// then pass a check on the role only to meet 403 halfway through a run (see
    /// docs/arcgis.md, "Org properties (`portals/self`)"). The built-in Administrator role is
    /// expected to list every privilege (no recorded answer shows its full list: Esri's mocks
    /// abbreviate it); if one does not, the error says so instead of guessing.
    pub fn ensure(&self, capability: Capability) -> Result<(), Error> {
        let (account, role, role_id, privileges) = match self {
            SignedIn::User(u) => (
                format!("user '{}'", u.username),
                u.role.clone(),
                u.role_id.clone(),
                &u.privileges,
            ),
            SignedIn::App { app_id, privileges } => (
                format!("app '{}'", app_id.as_deref().unwrap_or("unknown")),
                None,
                None,
                privileges,
            ),
        };
        let missing: Vec<String> = capability
            .privileges()
            .iter()
            .filter(|p| !privileges.iter().any(|have| have == *p))
            .map(|p| (*p).to_owned())
            .collect();
        if missing.is_empty() {
            Ok(())
        } else {
            Err(Error::MissingPrivileges {
                account,
                role: Box::new(AccountRole {
                    base: role,
                    custom_id: role_id,
                }),
                needed_for: capability.describe(),
                missing,
            })
        }
    }
}

impl Client {
    /// Reads `portals/self` now (never cached: org credits change between calls).
    pub async fn org_properties(&self) -> Result<OrgProperties, Error> {
        let url = self.url(&["portals", "self"]);
        let body = self
            .call(PORTAL_SELF, &url, &[], "portals/self (org properties)")
            .await?;
        let props = parse_org_properties(&body)?;
        if let Some(id) = &props.id {
            let _ = self.inner.org_id.set(id.clone());
        }
        Ok(props)
    }

    /// The org's id, from `portals/self` at most once per client.
    pub(crate) async fn org_id(&self) -> Result<&str, Error> {
        let id = self
            .inner
            .org_id
            .get_or_try_init(|| async {
                let url = self.url(&["portals", "self"]);
                let what = "portals/self (org id)";
                let body = self.call(PORTAL_SELF, &url, &[], what).await?;
                wire::string(body.get("id")).ok_or_else(|| Error::Unexpected {
                    what: what.to_owned(),
                    reason: "no 'id'".into(),
                })
            })
            .await?;
        Ok(id)
    }
}

/// Reads the org properties out of a `portals/self` body.
pub fn parse_org_properties(body: &Value) -> Result<OrgProperties, Error> {
    let available = body.get("availableCredits").and_then(Credits::from_json);
    let user = body.get("user").filter(|u| u.is_object());
    let app_info = body.get("appInfo").filter(|a| a.is_object());
    let signed_in = match (user, app_info) {
        (Some(u), _) => wire::string(u.get("username")).map(|username| {
            SignedIn::User(SignedInUser {
                username,
                role: wire::string(u.get("role")),
                role_id: wire::string(u.get("roleId")),
                privileges: wire::strings(u.get("privileges")),
            })
        }),
        (None, Some(app)) => Some(SignedIn::App {
            app_id: wire::string(app.get("appId")).or_else(|| wire::string(app.get("itemId"))),
            privileges: wire::strings(app.get("privileges")),
        }),
        (None, None) => None,
    };
    // A member's view without the org's credits: name the privileges that would show them,
    // which says more than "not an administrator" (a custom role can look like one).
    if let (None, Some(user @ SignedIn::User(_))) = (available, &signed_in) {
        user.ensure(Capability::ManageCredits)?;
    }
    let (Some(available_credits), Some(signed_in)) = (available, signed_in.clone()) else {
        let mut missing = Vec::new();
        if available.is_none() {
            missing.push("availableCredits");
        }
        if signed_in.is_none() {
            missing.push("user");
        }
        return Err(Error::NotAdminView {
            missing,
            app_token: app_info.is_some(),
        });
    };
    let default_user_credit_assignment = body
        .get("defaultUserCreditAssignment")
        .and_then(Credits::from_json)
        .filter(|n| !n.is_negative());
    Ok(OrgProperties {
        id: wire::string(body.get("id")),
        name: wire::string(body.get("name")),
        available_credits,
        budgeting_enabled: body.get("creditAssignments").and_then(Value::as_str) == Some("enabled"),
        default_user_credit_assignment,
        admin_contacts: wire::strings(body.get("contacts")),
        signed_in,
        home_url: home_url(body),
    })
}

/// `https://<urlKey>.<customBaseUrl>`, when both are plain host labels (they come from the
/// org's settings and end up as links in emails, so anything else is left out).
fn home_url(body: &Value) -> Option<String> {
    let host_part = |v: Option<String>| {
        v.filter(|s| !s.is_empty() && s.chars().all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '.'))
    };
    let key = host_part(wire::string(body.get("urlKey")))?;
    let base = host_part(wire::string(body.get("customBaseUrl")))?;
    Some(format!("https://{key}.{base}"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn admin_body() -> Value {
        json!({
            "id": "LjjARY1mkhxulWPq", "name": "Org", "availableCredits": 5.0018196E7,
            "creditAssignments": "enabled", "defaultUserCreditAssignment": 100,
            "contacts": ["dcadmin", "other"],
            "user": {"username": "dcadmin", "role": "org_admin",
                "privileges": ["portal:user:createItem", VIEW_USERS, MANAGE_CREDITS, CREATE_REPORTS]}
        })
    }

    #[test]
    fn the_org_home_comes_from_its_url_key_and_base() {
        let mut body = admin_body();
        assert_eq!(parse_org_properties(&body).unwrap().home_url, None);
        body["urlKey"] = json!("acme");
        body["customBaseUrl"] = json!("maps.arcgis.com");
        assert_eq!(
            parse_org_properties(&body).unwrap().home_url.as_deref(),
            Some("https://acme.maps.arcgis.com")
        );
        body["urlKey"] = json!("evil.example/x?");
        assert_eq!(parse_org_properties(&body).unwrap().home_url, None);
    }

    #[test]
    fn reads_admin_view() {
        let p = parse_org_properties(&admin_body()).unwrap();
        assert_eq!(p.available_credits, Credits::whole(50_018_196));
        assert!(p.budgeting_enabled);
        assert_eq!(p.default_user_credit_assignment, Some(Credits::whole(100)));
        assert_eq!(p.admin_contacts, vec!["dcadmin", "other"]);
        assert_eq!(p.username(), Some("dcadmin"));
        p.ensure(Capability::ManageCredits).unwrap();
        p.ensure(Capability::CreateReports).unwrap();
    }

    #[test]
    fn absent_budgeting_is_disabled_and_minus_one_is_no_default() {
        let mut b = admin_body();
        b.as_object_mut().unwrap().remove("creditAssignments");
        b["defaultUserCreditAssignment"] = json!(-1);
        let p = parse_org_properties(&b).unwrap();
        assert!(!p.budgeting_enabled);
        assert_eq!(p.default_user_credit_assignment, None);
        b["creditAssignments"] = json!("disabled");
        assert!(!parse_org_properties(&b).unwrap().budgeting_enabled);
    }

    #[test]
    fn anonymous_view_is_an_error_not_zero() {
        let err = parse_org_properties(&json!({"id": "x", "name": "Org"})).unwrap_err();
        match &err {
            Error::NotAdminView { missing, app_token } => {
                assert_eq!(missing, &vec!["availableCredits", "user"]);
                assert!(!app_token);
            }
            other => panic!("{other:?}"),
        }
        assert!(err.to_string().contains("availableCredits or user"), "{err}");
        // A user but no credits: a non-admin's token, named by the privileges it lacks.
        let err = parse_org_properties(&json!({"user": {"username": "bob", "role": "org_user"}})).unwrap_err();
        assert!(
            matches!(err, Error::MissingPrivileges { ref missing, .. } if missing == &vec![VIEW_USERS, MANAGE_CREDITS])
        );
        // With the privileges and still no credits, the view itself is the problem.
        let privileged = json!({"user": {"username": "ops", "privileges": [VIEW_USERS, MANAGE_CREDITS]}});
        let err = parse_org_properties(&privileged).unwrap_err();
        assert!(matches!(err, Error::NotAdminView { ref missing, .. } if missing == &vec!["availableCredits"]));
    }

    #[test]
    fn custom_admin_role_by_privileges() {
        let mut b = admin_body();
        b["user"] = json!({"username": "ops", "role": "org_publisher", "roleId": "RDnHQBSBbsJuIkUp",
            "privileges": [VIEW_USERS, MANAGE_CREDITS]});
        let p = parse_org_properties(&b).unwrap();
        p.ensure(Capability::ManageCredits).unwrap();
        let err = p.ensure(Capability::CreateReports).unwrap_err();
        let msg = err.to_string();
        assert!(msg.contains(CREATE_REPORTS) && msg.contains("org_publisher"), "{msg}");
    }

    #[test]
    fn a_custom_role_reported_as_org_admin_needs_the_privileges_themselves() {
        let mut b = admin_body();
        b["user"] = json!({"username": "content_admin", "role": "org_admin", "roleId": "cAdminContent001",
            "privileges": ["portal:admin:viewItems", "portal:admin:updateItems"]});
        let err = parse_org_properties(&b)
            .unwrap()
            .ensure(Capability::ManageCredits)
            .unwrap_err();
        let msg = err.to_string();
        match &err {
            Error::MissingPrivileges { missing, role, .. } => {
                assert_eq!(missing, &vec![VIEW_USERS, MANAGE_CREDITS]);
                assert_eq!(role.custom_id.as_deref(), Some("cAdminContent001"));
            }
            other => panic!("{other:?}"),
        }
        assert!(
            msg.contains("custom role cAdminContent001, reported as org_admin"),
            "{msg}"
        );
        assert!(msg.contains("add these to the role"), "says what to do: {msg}");
        // The built-in role without a listed privilege is refused too: privileges decide.
        b["user"] = json!({"username": "a", "role": "org_admin", "privileges": [VIEW_USERS]});
        let err = parse_org_properties(&b)
            .unwrap()
            .ensure(Capability::ManageCredits)
            .unwrap_err();
        assert!(matches!(err, Error::MissingPrivileges { ref missing, .. } if missing == &vec![MANAGE_CREDITS]));
    }

    #[test]
    fn missing_privileges_are_named() {
        let mut b = admin_body();
        b["user"] = json!({"username": "u", "role": "org_user", "privileges": [VIEW_USERS]});
        let err = parse_org_properties(&b)
            .unwrap()
            .ensure(Capability::ManageCredits)
            .unwrap_err();
        match err {
            Error::MissingPrivileges { missing, .. } => assert_eq!(missing, vec![MANAGE_CREDITS]),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn app_token_uses_registered_privileges() {
        let b = json!({"availableCredits": 10, "appInfo": {"appId": "app1", "privileges": [VIEW_USERS]}});
        let p = parse_org_properties(&b).unwrap();
        assert_eq!(p.username(), None);
        assert!(p.ensure(Capability::ManageCredits).is_err());
        let b = json!({"appInfo": {"appId": "app1"}});
        assert!(matches!(
            parse_org_properties(&b),
            Err(Error::NotAdminView { app_token: true, .. })
        ));
    }
}
