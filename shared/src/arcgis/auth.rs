//! Credentials → access token, cached until shortly before it expires.
//!
//! `generateToken` (username/password, a token bound to our Referer), `oauth2/token`
//! (`client_credentials`) or a static API key. Tokens are refreshed ahead of expiry
//! (10 % of their lifetime, at most 5 minutes early), and [`Client::call_with`] signs in again
//! once when ArcGIS rejects one with 498/499.

use std::sync::atomic::Ordering;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde_json::Value;

use super::client::{Client, json_value};
use super::credentials::{Credentials, Secret};
use super::endpoint::{GENERATE_TOKEN, OAUTH_TOKEN};
use super::error::Error;

/// How early a token is refreshed: 10 % of its lifetime, at most five minutes (the Python
/// client's margin).
const MAX_REFRESH_MARGIN: Duration = Duration::from_secs(300);
/// The longest token lifetime believed: ArcGIS issues tokens for at most two weeks, so a
/// server claiming more (`expires_in: 1e30`) gets a refresh after two weeks instead of an
/// overflow.
const MAX_TOKEN_LIFETIME: Duration = Duration::from_secs(14 * 24 * 60 * 60);

/// A token handed to one call, with the sign-in it came from.
#[derive(Debug, Clone)]
pub(crate) struct Token {
    pub value: Secret,
    /// Which sign-in produced it, so a rejection only discards that token and not a newer one
    /// another task already obtained.
    pub generation: u64,
}

/// The cached token and when to stop using it.
#[derive(Debug)]
pub(crate) struct CachedToken {
    token: Token,
    /// `None` for API keys, which do not expire on a schedule we know.
    refresh_at: Option<Instant>,
}

impl CachedToken {
    fn fresh(&self, now: Instant) -> bool {
        self.refresh_at.is_none_or(|at| now < at)
    }
}

/// The instant to refresh a token that lives `lifetime` from `now` (at most
/// [`MAX_TOKEN_LIFETIME`], so the sum cannot overflow the clock).
pub(crate) fn refresh_deadline(now: Instant, lifetime: Duration) -> Instant {
    let lifetime = lifetime.min(MAX_TOKEN_LIFETIME);
    let margin = (lifetime / 10).min(MAX_REFRESH_MARGIN);
    now.checked_add(lifetime.saturating_sub(margin)).unwrap_or(now)
}

impl Client {
    /// A token valid for the next call, signing in when there is none or it is about to
    /// expire. Concurrent callers share one sign-in.
    pub(crate) async fn access_token(&self) -> Result<Token, Error> {
        if let Some(t) = self.cached_token() {
            return Ok(t);
        }
        let lock = self.inner.sign_in.lock();
        // Another task's sign-in may outlast this client's deadline: stop waiting at it.
        let _one_at_a_time = match self.deadline() {
            Some(deadline) => {
                tokio::time::timeout_at(deadline.into(), lock)
                    .await
                    .map_err(|_| Error::DeadlineReached {
                        what: format!("signing in as {}", self.inner.credentials.describe()),
                    })?
            }
            None => lock.await,
        };
        if let Some(t) = self.cached_token() {
            return Ok(t);
        }
        let (value, lifetime) = self.sign_in().await?;
        let generation = self.inner.token_generation.fetch_add(1, Ordering::Relaxed) + 1;
        let token = Token { value, generation };
        let refresh_at = lifetime.map(|l| refresh_deadline(Instant::now(), l));
        *self.inner.token.lock().unwrap_or_else(|p| p.into_inner()) = Some(CachedToken {
            token: token.clone(),
            refresh_at,
        });
        Ok(token)
    }

    fn cached_token(&self) -> Option<Token> {
        let guard = self.inner.token.lock().unwrap_or_else(|p| p.into_inner());
        guard
            .as_ref()
            .filter(|c| c.fresh(Instant::now()))
            .map(|c| c.token.clone())
    }

    /// Drops the cached token if it is still the one that was rejected.
    pub(crate) fn forget_token(&self, generation: u64) {
        let mut guard = self.inner.token.lock().unwrap_or_else(|p| p.into_inner());
        if guard.as_ref().is_some_and(|c| c.token.generation == generation) {
            *guard = None;
        }
    }

    /// Whether signing in again can yield a different token (not for a static API key).
    pub(crate) fn can_sign_in_again(&self) -> bool {
        !matches!(self.inner.credentials, Credentials::ApiKey(_))
    }

    async fn sign_in(&self) -> Result<(Secret, Option<Duration>), Error> {
        let minutes = self.inner.token_minutes;
        let requested = Duration::from_secs(u64::from(minutes) * 60);
        let account = self.inner.credentials.describe();
        match &self.inner.credentials {
            Credentials::ApiKey(key) => Ok((key.clone(), None)),
            Credentials::UserPassword { username, password } => {
                let what = format!("generateToken for {account}");
                let params = [
                    ("username", username.clone()),
                    ("password", password.expose().to_owned()),
                    ("client", "referer".to_owned()),
                    ("referer", self.inner.referer_text.clone()),
                    ("expiration", minutes.to_string()),
                ];
                let body = self
                    .sign_in_request(GENERATE_TOKEN, &["generateToken"], &params, &what, &account)
                    .await?;
                let (token, lifetime) = parse_generate_token(&body, SystemTime::now(), requested)
                    .map_err(|reason| Error::Unexpected { what, reason })?;
                tracing::debug!(account, lifetime_s = lifetime.as_secs(), "signed in with generateToken");
                Ok((token, Some(lifetime)))
            }
            Credentials::OAuthApp {
                client_id,
                client_secret,
            } => {
                let what = format!("oauth2/token for {account}");
                let params = [
                    ("client_id", client_id.clone()),
                    ("client_secret", client_secret.expose().to_owned()),
                    ("grant_type", "client_credentials".to_owned()),
                    ("expiration", minutes.to_string()),
                ];
                let body = self
                    .sign_in_request(OAUTH_TOKEN, &["oauth2", "token"], &params, &what, &account)
                    .await?;
                let (token, lifetime) =
                    parse_oauth_token(&body, requested).map_err(|reason| Error::Unexpected { what, reason })?;
                tracing::debug!(
                    account,
                    lifetime_s = lifetime.as_secs(),
                    "signed in with client_credentials"
                );
                Ok((token, Some(lifetime)))
            }
        }
    }

    async fn sign_in_request(
        &self,
        endpoint: super::endpoint::Endpoint,
        path: &[&str],
        params: &[(&str, String)],
        what: &str,
        account: &str,
    ) -> Result<Value, Error> {
        let url = self.url(path);
        let exchange = super::client::Exchange {
            endpoint,
            url: &url,
            params,
            what,
        };
        match self.execute(&exchange, None, json_value).await {
            Ok(v) => Ok(v),
            // Refused credentials are not a transport problem: say so in terms of the secret.
            Err(e) => match e.root() {
                Error::Api { api, .. } => Err(Error::SignIn {
                    account: account.to_owned(),
                    api: api.clone(),
                }),
                _ => Err(e),
            },
        }
    }
}

/// Reads a `generateToken` answer: `token`, and `expires` in epoch milliseconds as a number or
/// a string. The lifetime is capped at what was requested, which also absorbs clock skew.
pub(crate) fn parse_generate_token(
    body: &Value,
    now: SystemTime,
    requested: Duration,
) -> Result<(Secret, Duration), String> {
    let token = body
        .get("token")
        .and_then(Value::as_str)
        .filter(|t| !t.is_empty())
        .ok_or("no 'token' in the generateToken response")?;
    let expires_ms = body.get("expires").and_then(|v| match v {
        Value::Number(n) => n.as_f64(),
        Value::String(s) => s.trim().parse::<f64>().ok(),
        _ => None,
    });
    let now_ms = now
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as f64)
        .unwrap_or(0.0);
    let lifetime = match expires_ms {
        Some(ms) if ms.is_finite() && ms > now_ms => Duration::from_millis((ms - now_ms) as u64).min(requested),
        // Missing, unparsable or already past by our clock: trust the requested lifetime.
        _ => requested,
    };
    Ok((Secret::new(token), lifetime))
}

/// Reads an `oauth2/token` answer: `access_token` and `expires_in` in seconds, at most
/// [`MAX_TOKEN_LIFETIME`] whatever number the server sent.
pub(crate) fn parse_oauth_token(body: &Value, requested: Duration) -> Result<(Secret, Duration), String> {
    let token = body
        .get("access_token")
        .and_then(Value::as_str)
        .filter(|t| !t.is_empty())
        .ok_or("no 'access_token' in the oauth2/token response")?;
    let expires_in = body.get("expires_in").and_then(|v| match v {
        Value::Number(n) => n.as_f64(),
        Value::String(s) => s.trim().parse::<f64>().ok(),
        _ => None,
    });
    let lifetime = match expires_in {
        // `try_`: `from_secs_f64` panics on a value too large for a Duration.
        Some(s) if s > 0.0 => Duration::try_from_secs_f64(s).map_or(MAX_TOKEN_LIFETIME, |d| d.min(MAX_TOKEN_LIFETIME)),
        _ => requested,
    };
    Ok((Secret::new(token), lifetime))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    const HOUR: Duration = Duration::from_secs(3600);

    #[test]
    fn generate_token_expires_as_number_or_string() {
        let now = UNIX_EPOCH + Duration::from_secs(1_700_000_000);
        let in_30_min = 1_700_000_000_000u64 + 30 * 60 * 1000;
        for body in [
            json!({"token":"t1","expires":in_30_min,"ssl":true}),
            json!({"token":"t1","expires":in_30_min.to_string()}),
            json!({"token":"t1","expires":in_30_min as f64}),
        ] {
            let (tok, life) = parse_generate_token(&body, now, HOUR).unwrap();
            assert_eq!(tok.expose(), "t1");
            assert_eq!(life, Duration::from_secs(1800), "{body}");
        }
    }

    #[test]
    fn generate_token_lifetime_falls_back_and_is_capped() {
        let now = UNIX_EPOCH + Duration::from_secs(1_700_000_000);
        let (_, life) = parse_generate_token(&json!({"token":"t"}), now, HOUR).unwrap();
        assert_eq!(life, HOUR);
        let (_, life) = parse_generate_token(&json!({"token":"t","expires":1}), now, HOUR).unwrap();
        assert_eq!(life, HOUR);
        let far = 1_700_000_000_000u64 + 10 * 3_600_000;
        let (_, life) = parse_generate_token(&json!({"token":"t","expires":far}), now, HOUR).unwrap();
        assert_eq!(life, HOUR);
        assert!(parse_generate_token(&json!({"expires":far}), now, HOUR).is_err());
        assert!(parse_generate_token(&json!({"token":""}), now, HOUR).is_err());
    }

    #[test]
    fn oauth_expires_in_seconds() {
        let (tok, life) = parse_oauth_token(&json!({"access_token":"a","expires_in":1800}), HOUR).unwrap();
        assert_eq!((tok.expose(), life), ("a", Duration::from_secs(1800)));
        let (_, life) = parse_oauth_token(&json!({"access_token":"a","expires_in":"7200"}), HOUR).unwrap();
        assert_eq!(life, Duration::from_secs(7200));
        let (_, life) = parse_oauth_token(&json!({"access_token":"a"}), HOUR).unwrap();
        assert_eq!(life, HOUR);
        assert!(parse_oauth_token(&json!({"token":"a"}), HOUR).is_err());
    }

    #[test]
    fn an_oauth_expires_in_of_1e30_does_not_panic() {
        for huge in [json!(1e30), json!("1e30"), json!("inf"), json!(u64::MAX), json!(1e300)] {
            let body = json!({"access_token":"a","expires_in":huge});
            let (_, life) = parse_oauth_token(&body, HOUR).unwrap();
            assert_eq!(life, MAX_TOKEN_LIFETIME, "{body}");
        }
        let (_, life) = parse_oauth_token(&json!({"access_token":"a","expires_in":"NaN"}), HOUR).unwrap();
        assert_eq!(life, HOUR);
    }

    #[test]
    fn a_generate_token_expiry_centuries_ahead_does_not_panic() {
        let now = UNIX_EPOCH + Duration::from_secs(1_700_000_000);
        for huge in [json!(1e300), json!("1e300"), json!(u64::MAX), json!("inf")] {
            let (_, life) = parse_generate_token(&json!({"token":"t","expires":huge}), now, HOUR).unwrap();
            assert_eq!(life, HOUR);
        }
    }

    #[test]
    fn a_refresh_deadline_for_any_lifetime_does_not_panic() {
        let now = Instant::now();
        let at = refresh_deadline(now, Duration::MAX);
        assert_eq!(at - now, MAX_TOKEN_LIFETIME - MAX_REFRESH_MARGIN);
        assert_eq!(refresh_deadline(now, Duration::ZERO), now);
    }

    #[test]
    fn refresh_happens_ahead_of_expiry() {
        let now = Instant::now();
        // 60 min: 10 % is 6 min, capped at 5.
        assert_eq!(refresh_deadline(now, HOUR) - now, Duration::from_secs(55 * 60));
        // 2 min: 10 % = 12 s early.
        assert_eq!(
            refresh_deadline(now, Duration::from_secs(120)) - now,
            Duration::from_secs(108)
        );
    }
}
