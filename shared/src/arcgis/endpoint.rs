//! The ArcGIS operations this client calls, each declared once with the properties that
//! govern how it is sent: method, whether it needs a token, and whether it may be retried.

use super::retry::Idempotency;

/// HTTP method of an operation. Reads go as GET (parameters in the query string, which never
/// holds a token); writes and sign-in go as form-encoded POST.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Method {
    Get,
    Post,
}

/// One ArcGIS REST operation.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Endpoint {
    /// The operation's name in messages ("assignUserCredits").
    pub name: &'static str,
    pub method: Method,
    pub idempotency: Idempotency,
    /// Whether the call carries the access token.
    pub authenticated: bool,
    /// Whether the response holds a credential, so error messages never quote its body.
    pub secret_response: bool,
    /// Whether the response is a file (not JSON), fetched following redirects by hand.
    pub download: bool,
}

const fn read(name: &'static str) -> Endpoint {
    Endpoint {
        name,
        method: Method::Get,
        idempotency: Idempotency::Idempotent,
        authenticated: true,
        secret_response: false,
        download: false,
    }
}

const fn write(name: &'static str, idempotency: Idempotency) -> Endpoint {
    Endpoint {
        name,
        method: Method::Post,
        idempotency,
        authenticated: true,
        secret_response: false,
        download: false,
    }
}

/// `generateToken`: a fresh token is harmless to request twice.
pub(crate) const GENERATE_TOKEN: Endpoint = Endpoint {
    name: "generateToken",
    method: Method::Post,
    idempotency: Idempotency::Idempotent,
    authenticated: false,
    secret_response: true,
    download: false,
};
/// `oauth2/token` with `client_credentials`.
pub(crate) const OAUTH_TOKEN: Endpoint = Endpoint {
    name: "oauth2/token",
    ..GENERATE_TOKEN
};
pub(crate) const PORTAL_SELF: Endpoint = read("portals/self");
pub(crate) const ORG_USERS: Endpoint = read("portals/self/users");
/// The org's roles: the `role` values an org too large for one listing is listed by.
pub(crate) const ROLES: Endpoint = read("portals/self/roles");
pub(crate) const USER: Endpoint = read("community/users");
pub(crate) const USAGE: Endpoint = read("portals/self/usage");
pub(crate) const ITEM_STATUS: Endpoint = read("item status");
/// A report's CSV: may redirect to a storage host.
pub(crate) const ITEM_DATA: Endpoint = Endpoint {
    download: true,
    ..read("item data")
};
/// Sets allocations. Not resent once it may have arrived: a resend after another writer
/// changed the member would undo that change, so the caller re-reads and decides.
pub(crate) const ASSIGN_CREDITS: Endpoint = write("assignUserCredits", Idempotency::AbsoluteWrite);
/// Removes allocations; resent only when never sent, like [`ASSIGN_CREDITS`].
pub(crate) const UNASSIGN_CREDITS: Endpoint = write("unassignUserCredits", Idempotency::AbsoluteWrite);
/// Sends emails: a repeat sends them again.
pub(crate) const CREATE_NOTIFICATION: Endpoint = write("createNotification", Idempotency::NotIdempotent);
/// Creates an item: a repeat creates a second report.
pub(crate) const CREATE_REPORT: Endpoint = write("report", Idempotency::NotIdempotent);
/// Deleting an already deleted item changes nothing.
pub(crate) const DELETE_ITEM: Endpoint = write("delete item", Idempotency::Idempotent);

// The properties nothing may weaken, checked at compile time: side effects and allocation
// writes are never retried blindly, and token answers are never quoted in errors.
const _: () = {
    assert!(matches!(CREATE_NOTIFICATION.idempotency, Idempotency::NotIdempotent));
    assert!(matches!(CREATE_REPORT.idempotency, Idempotency::NotIdempotent));
    assert!(matches!(ASSIGN_CREDITS.idempotency, Idempotency::AbsoluteWrite));
    assert!(matches!(UNASSIGN_CREDITS.idempotency, Idempotency::AbsoluteWrite));
    assert!(GENERATE_TOKEN.secret_response && OAUTH_TOKEN.secret_response);
    assert!(!GENERATE_TOKEN.authenticated && !OAUTH_TOKEN.authenticated);
};

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn side_effects_are_never_blindly_retried() {
        assert_eq!(CREATE_NOTIFICATION.idempotency, Idempotency::NotIdempotent);
        assert_eq!(CREATE_REPORT.idempotency, Idempotency::NotIdempotent);
        assert_eq!(ASSIGN_CREDITS.idempotency, Idempotency::AbsoluteWrite);
        assert_eq!(UNASSIGN_CREDITS.idempotency, Idempotency::AbsoluteWrite);
        for ep in [ORG_USERS, ROLES, USER, PORTAL_SELF, USAGE, ITEM_STATUS, ITEM_DATA] {
            assert_eq!(ep.idempotency, Idempotency::Idempotent, "{}", ep.name);
        }
    }
}
