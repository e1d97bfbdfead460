//! The ArcGIS client a warm Lambda container keeps between invocations.
//!
//! Every function needs the same thing: a [`Client`] built from the Secrets Manager secret,
//! kept while the secret is unchanged (its token and connection pool survive warm
//! invocations), rebuilt when the cached secret is refreshed (a rotated password is picked up
//! within the cache's TTL), and forgotten when ArcGIS refuses the credentials.

use std::sync::{Arc, Mutex, MutexGuard};

use crate::arcgis::{self, Client};
use crate::channels::ChannelSecrets;
use crate::config::Config;
use crate::secrets::{ArcgisSecret, SecretCache, SecretError};

/// Why no client could be had.
#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    /// The ArcGIS secret could not be read (the message names the secret and what to fix).
    #[error(transparent)]
    Secret(#[from] SecretError),
    /// The secret's portal URL or referer cannot be used. The message names the URL by
    /// scheme and host only ([`arcgis::redact_url`]): the secret's URL may carry a password.
    #[error("cannot use the ArcGIS secret's settings: {0}")]
    Client(#[source] arcgis::Error),
}

impl ConnectError {
    /// The Lambda `errorType` the functions report for it.
    pub fn kind(&self) -> &'static str {
        match self {
            ConnectError::Secret(_) => "SecretUnavailable",
            ConnectError::Client(_) => "InvalidSecret",
        }
    }
}

/// Where a function's ArcGIS client comes from.
pub enum ArcgisSource {
    /// Production: credentials from the Secrets Manager secret `secret_id`.
    Secret {
        /// The in-process secret cache.
        cache: SecretCache,
        /// `ARCGIS_SECRET_ID`.
        secret_id: String,
        /// The client built from the secret it was built from.
        current: Mutex<Option<(Arc<ArcgisSecret>, Client)>>,
    },
    /// Tests and local runs: a client already pointed at a simulator.
    Fixed(Client),
}

impl ArcgisSource {
    /// A source reading secret `secret_id` through `cache`.
    pub fn from_secret(cache: SecretCache, secret_id: String) -> Self {
        ArcgisSource::Secret {
            cache,
            secret_id,
            current: Mutex::new(None),
        }
    }

    /// The source the functions use: the secret named by `ARCGIS_SECRET_ID`, read through a
    /// Secrets Manager cache with `SECRET_TTL_SECS`, on the AWS configuration of the
    /// environment.
    pub fn from_config(config: &Config) -> Self {
        let cache = crate::secrets::SecretCache::from_env(config.secret_ttl);
        ArcgisSource::from_secret(cache, config.arcgis_secret_id.clone())
    }

    /// The client for the current secret, built with `config`'s settings.
    pub async fn client(&self, config: &Config) -> Result<Client, ConnectError> {
        match self {
            ArcgisSource::Secret {
                cache,
                secret_id,
                current,
            } => {
                let secret = cache.arcgis_secret(secret_id).await?;
                let mut slot = lock(current);
                if let Some((cached, client)) = slot.as_ref()
                    && (Arc::ptr_eq(cached, &secret) || **cached == *secret)
                {
                    return Ok(client.clone());
                }
                let client = Client::new(config.client_config(&secret)).map_err(ConnectError::Client)?;
                *slot = Some((secret, client.clone()));
                Ok(client)
            }
            ArcgisSource::Fixed(client) => Ok(client.clone()),
        }
    }

    /// The alert channels' webhooks of the secret the last [`ArcgisSource::client`] call read
    /// (none for a fixed client): read with the credentials, so a changed webhook is picked up
    /// within the cache's TTL like a rotated password.
    pub fn channel_secrets(&self) -> ChannelSecrets {
        match self {
            ArcgisSource::Secret { current, .. } => lock(current)
                .as_ref()
                .map(|(secret, _)| secret.channels.clone())
                .unwrap_or_default(),
            ArcgisSource::Fixed(_) => ChannelSecrets::default(),
        }
    }

    /// After ArcGIS refused the credentials: read the secret again next time (it may have been
    /// rotated since it was cached).
    pub fn forget_credentials(&self) {
        if let ArcgisSource::Secret {
            cache,
            secret_id,
            current,
        } = self
        {
            cache.invalidate(secret_id);
            *lock(current) = None;
        }
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}
