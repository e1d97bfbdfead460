//! Which sharing/rest operation a path names.
//!
//! Routing is one total `match` over path segments rather than a router table so that every
//! path, including garbage, gets an AGOL-style answer (`Invalid URL`), and so that the stable
//! endpoint names used by request counts and fault triggers live in one place.

use percent_encoding::percent_decode_str;

/// One sharing/rest operation, with the path parts it carries.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Endpoint {
    /// `sharing/rest` itself: the API's version (`currentVersion`).
    Root,
    /// `info`: how the portal signs callers in (token service URL).
    Info,
    /// `generateToken`.
    GenerateToken,
    /// `oauth2/token`.
    OAuthToken,
    /// `oauth2/authorize`: the sign-in page of the browser flow.
    OAuthAuthorize,
    /// `/sharing/oauth2/signin` (outside `sharing/rest`): the sign-in form's target.
    OAuthSignin,
    /// `portals/self` (or `portals/<orgId>`).
    PortalSelf,
    /// `portals/self/update`.
    PortalUpdate,
    /// `portals/self/users`: the member listing.
    OrgUsers,
    /// `portals/self/users/search`: org-scoped search.
    OrgUserSearch,
    /// `portals/self/assignUserCredits`.
    AssignCredits,
    /// `portals/self/unassignUserCredits`.
    UnassignCredits,
    /// `portals/self/createNotification`.
    CreateNotification,
    /// `portals/self/itemsstatus` (undocumented; Python's report poll).
    ItemsStatus,
    /// `portals/self/usage` (undocumented; the credits dashboard's source).
    Usage,
    /// `portals/self/roles`: the org's roles that carry a `roleId`.
    Roles,
    /// `community/users`: fuzzy search across orgs.
    CommunityUsers,
    /// `community/users/<username|id>`.
    User(String),
    /// `community/users/<me>/report`.
    UserReport(String),
    /// `content/users/<owner>/items/<id>/status`.
    ItemStatus(String, String),
    /// `content/users/<owner>/items/<id>/delete`.
    ItemDelete(String, String),
    /// `content/items/<id>/data`.
    ItemData(String),
    /// `content/items/<id>`: the item's properties.
    Item(String),
    /// A path under `portals/` naming another org.
    WrongPortal,
    /// Anything else.
    Invalid,
}

impl Endpoint {
    /// Routes a whole request path: `/sharing/rest[/...]`, the sign-in form's
    /// `/sharing/oauth2/signin`, and `Invalid` for everything else (Esri's client probes
    /// `/sharing/info` and friends and takes that answer as "no such service").
    ///
    /// Repeated slashes count as one, as the web servers in front of ArcGIS merge them: Esri's
    /// client posts its report-status poll to `//sharing/rest/portals/self/itemsstatus`.
    pub fn route(path: &str, org_id: &str) -> Endpoint {
        let merged;
        let path = if path.contains("//") {
            merged = path
                .split('/')
                .filter(|s| !s.is_empty())
                .fold(String::new(), |acc, s| acc + "/" + s);
            merged.as_str()
        } else {
            path
        };
        if path == "/sharing/oauth2/signin" {
            return Endpoint::OAuthSignin;
        }
        match path.strip_prefix("/sharing/rest") {
            Some("") => Endpoint::Root,
            Some(rest) if rest.starts_with('/') => Endpoint::parse(&rest[1..], org_id),
            _ => Endpoint::Invalid,
        }
    }

    /// Routes a path below `/sharing/rest/`. `org_id` is accepted in place of `self`.
    pub fn parse(rest_path: &str, org_id: &str) -> Endpoint {
        let segs: Vec<String> = rest_path
            .trim_matches('/')
            .split('/')
            .map(|s| percent_decode_str(s).decode_utf8_lossy().into_owned())
            .collect();
        let s: Vec<&str> = segs.iter().map(String::as_str).collect();
        match s.as_slice() {
            [""] => Endpoint::Root,
            ["info"] => Endpoint::Info,
            ["generateToken"] => Endpoint::GenerateToken,
            ["oauth2", "token"] => Endpoint::OAuthToken,
            ["oauth2", "authorize"] => Endpoint::OAuthAuthorize,
            ["portals", p, rest @ ..] if *p == "self" || *p == org_id => match rest {
                [] => Endpoint::PortalSelf,
                ["update"] => Endpoint::PortalUpdate,
                ["users"] => Endpoint::OrgUsers,
                ["users", "search"] => Endpoint::OrgUserSearch,
                ["assignUserCredits"] => Endpoint::AssignCredits,
                ["unassignUserCredits"] => Endpoint::UnassignCredits,
                ["createNotification"] => Endpoint::CreateNotification,
                ["itemsstatus"] => Endpoint::ItemsStatus,
                ["usage"] => Endpoint::Usage,
                ["roles"] => Endpoint::Roles,
                _ => Endpoint::Invalid,
            },
            ["portals", _, ..] => Endpoint::WrongPortal,
            ["community", "users"] => Endpoint::CommunityUsers,
            ["community", "users", u] if !u.is_empty() => Endpoint::User(u.to_string()),
            ["community", "users", u, "report"] if !u.is_empty() => Endpoint::UserReport(u.to_string()),
            ["content", "users", o, "items", id, "status"] => Endpoint::ItemStatus(o.to_string(), id.to_string()),
            ["content", "users", o, "items", id, "delete"] => Endpoint::ItemDelete(o.to_string(), id.to_string()),
            ["content", "items", id, "data"] => Endpoint::ItemData(id.to_string()),
            ["content", "items", id] if !id.is_empty() => Endpoint::Item(id.to_string()),
            _ => Endpoint::Invalid,
        }
    }

    /// The stable name used in request counts, the request log and fault triggers.
    pub fn name(&self) -> &'static str {
        match self {
            Endpoint::Root => "root",
            Endpoint::Info => "info",
            Endpoint::GenerateToken => "generateToken",
            Endpoint::OAuthToken => "oauth2/token",
            Endpoint::OAuthAuthorize => "oauth2/authorize",
            Endpoint::OAuthSignin => "oauth2/signin",
            Endpoint::PortalSelf => "portals/self",
            Endpoint::PortalUpdate => "portals/self/update",
            Endpoint::OrgUsers => "portals/self/users",
            Endpoint::OrgUserSearch => "portals/self/users/search",
            Endpoint::AssignCredits => "portals/self/assignUserCredits",
            Endpoint::UnassignCredits => "portals/self/unassignUserCredits",
            Endpoint::CreateNotification => "portals/self/createNotification",
            Endpoint::ItemsStatus => "portals/self/itemsstatus",
            Endpoint::Usage => "portals/self/usage",
            Endpoint::Roles => "portals/self/roles",
            Endpoint::CommunityUsers => "community/users",
            Endpoint::User(_) => "community/users/{user}",
            Endpoint::UserReport(_) => "community/users/{user}/report",
            Endpoint::ItemStatus(..) => "content/users/{owner}/items/{id}/status",
            Endpoint::ItemDelete(..) => "content/users/{owner}/items/{id}/delete",
            Endpoint::ItemData(_) => "content/items/{id}/data",
            Endpoint::Item(_) => "content/items/{id}",
            Endpoint::WrongPortal => "portals/{other}",
            Endpoint::Invalid => "invalid",
        }
    }

    /// Operations that refuse GET (POST only; see docs/arcgis.md, "Base URL and request
    /// conventions").
    pub fn post_only(&self) -> bool {
        matches!(
            self,
            Endpoint::GenerateToken
                | Endpoint::OAuthSignin
                | Endpoint::AssignCredits
                | Endpoint::UnassignCredits
                | Endpoint::CreateNotification
                | Endpoint::PortalUpdate
                | Endpoint::ItemDelete(..)
        )
    }

    /// The member a request is about, for member-targeted faults.
    pub fn member(&self) -> Option<&str> {
        match self {
            Endpoint::User(u) | Endpoint::UserReport(u) => Some(u),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn routes_the_root_the_probes_and_the_sign_in_form() {
        assert_eq!(Endpoint::route("/sharing/rest", "ORG"), Endpoint::Root);
        assert_eq!(Endpoint::route("/sharing/rest/", "ORG"), Endpoint::Root);
        assert_eq!(Endpoint::route("/sharing/rest/info", "ORG"), Endpoint::Info);
        assert_eq!(Endpoint::route("/sharing/oauth2/signin", "ORG"), Endpoint::OAuthSignin);
        assert_eq!(
            Endpoint::route("/sharing/rest/oauth2/authorize", "ORG"),
            Endpoint::OAuthAuthorize
        );
        // Esri's client probes these; none is a sharing/rest operation.
        for probe in ["/sharing/info", "/sharing/sharing/rest/info", "/sharing/restx", "/info"] {
            assert_eq!(Endpoint::route(probe, "ORG"), Endpoint::Invalid, "{probe}");
        }
        assert_eq!(Endpoint::route("/sharing/rest/services", "ORG"), Endpoint::Invalid);
        assert_eq!(
            Endpoint::route("//sharing/rest/portals/self/itemsstatus", "ORG"),
            Endpoint::ItemsStatus
        );
    }

    #[test]
    fn routes_self_and_org_id_alike_and_rejects_other_orgs() {
        assert_eq!(Endpoint::parse("portals/self/users", "ORG"), Endpoint::OrgUsers);
        assert_eq!(Endpoint::parse("portals/ORG/users", "ORG"), Endpoint::OrgUsers);
        assert_eq!(Endpoint::parse("portals/OTHER/users", "ORG"), Endpoint::WrongPortal);
        assert_eq!(
            Endpoint::parse("community/users/j%20doe", "ORG"),
            Endpoint::User("j doe".into())
        );
        assert_eq!(Endpoint::parse("nope", "ORG"), Endpoint::Invalid);
        assert_eq!(
            Endpoint::parse("content/items/abc", "ORG"),
            Endpoint::Item("abc".into())
        );
        assert_eq!(Endpoint::parse("portals/self/roles", "ORG"), Endpoint::Roles);
        assert_eq!(Endpoint::parse("community/users//report", "ORG"), Endpoint::Invalid);
    }
}
