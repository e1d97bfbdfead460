//! What the client signs in with, and a string type that never prints itself.

use std::fmt;

/// A secret string (password, client secret, API key, token).
///
/// `Debug` prints `[REDACTED]` and there is no `Display`, so a secret cannot reach a log line,
/// an error message or a panic by accident; reading it takes an explicit [`Secret::expose`].
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    /// Wraps a secret value.
    pub fn new(value: impl Into<String>) -> Self {
        Secret(value.into())
    }

    /// The value itself, for the one place that must send it (a form field or header).
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("[REDACTED]")
    }
}

impl From<String> for Secret {
    fn from(value: String) -> Self {
        Secret(value)
    }
}

/// The three ways credit-steward can authenticate to ArcGIS Online.
///
/// Usernames and client ids are identifiers, not secrets, so they stay printable: error
/// messages name the account that failed to sign in.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Credentials {
    /// A built-in ArcGIS account, exchanged for a referer-bound token at `generateToken`.
    /// The recommended mode: the token carries the account's admin privileges.
    UserPassword {
        /// Case-sensitive ArcGIS username.
        username: String,
        /// The account's password.
        password: Secret,
    },
    /// An OAuth2 application, exchanged at `oauth2/token` with `client_credentials`.
    OAuthApp {
        /// The application's client id (public).
        client_id: String,
        /// The application's client secret.
        client_secret: Secret,
    },
    /// A long-lived API key, used as the token as-is (no refresh possible).
    ApiKey(Secret),
}

impl Credentials {
    /// A short, secret-free description for messages ("user 'admin'", "OAuth app 'abc'").
    pub fn describe(&self) -> String {
        match self {
            Credentials::UserPassword { username, .. } => format!("user '{username}'"),
            Credentials::OAuthApp { client_id, .. } => format!("OAuth app '{client_id}'"),
            Credentials::ApiKey(_) => "API key".to_owned(),
        }
    }

    /// Every secret value these credentials hold, so the client can scrub them from any
    /// server text it quotes in an error.
    pub(crate) fn secret_values(&self) -> Vec<&str> {
        match self {
            Credentials::UserPassword { password, .. } => vec![password.expose()],
            Credentials::OAuthApp { client_secret, .. } => vec![client_secret.expose()],
            Credentials::ApiKey(key) => vec![key.expose()],
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_never_shows_secret_values() {
        let creds = [
            Credentials::UserPassword {
                username: "admin".into(),
                password: Secret::new("hunter2"),
            },
            Credentials::OAuthApp {
                client_id: "app1".into(),
                client_secret: Secret::new("s3cr3t"),
            },
            Credentials::ApiKey(Secret::new("AAPKxyz")),
        ];
        for c in &creds {
            let dbg = format!("{c:?} {}", c.describe());
            for s in c.secret_values() {
                assert!(!dbg.contains(s), "{dbg}");
            }
            assert!(dbg.contains("[REDACTED]"));
        }
    }
}
