//! The AWS SDK's configuration, in the two places this code runs.
//!
//! - **A Lambda function** ([`lambda_config`]): Lambda hands the execution role's credentials
//!   and the region to the process as environment variables, so that is all the functions
//!   read. `aws_config`'s default chain would also try profile files, SSO, web identity (STS),
//!   the ECS endpoint and instance metadata, none of which exists on Lambda; linking that chain
//!   costs each function about a megabyte and each cold start four chain resolutions.
//! - **An operator's machine** ([`default_chain_config`], the CLI): the full chain, with
//!   profiles and SSO.
//!
//! Both send their requests with reqwest ([`http::http_client`]) and honour the standard
//! `AWS_ENDPOINT_URL` and `AWS_ENDPOINT_URL_<SERVICE>` variables, which point the clients at
//! a local emulator in tests and benchmarks.

#![warn(missing_docs)]

pub mod http;

use std::sync::OnceLock;

use aws_config::environment::EnvironmentVariableCredentialsProvider;
use aws_config::{BehaviorVersion, Region, SdkConfig};
use aws_credential_types::provider::SharedCredentialsProvider;
use aws_runtime::env_config::EnvConfigValue;
use aws_types::os_shim_internal::Env;
use aws_types::service_config::{LoadServiceConfig, ServiceConfigKey};

/// The global endpoint override, also read per service as `AWS_ENDPOINT_URL_<SERVICE>`.
const ENDPOINT_URL: &str = "AWS_ENDPOINT_URL";

/// The configuration of a Lambda function's environment: credentials from
/// `AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY` and `AWS_SESSION_TOKEN`, the region from
/// `AWS_REGION` (or `AWS_DEFAULT_REGION`), endpoints from `AWS_ENDPOINT_URL*`. Retries,
/// timeouts and the clock are each client's defaults, as with the default chain.
///
/// Built once per process (Lambda sets these variables before it starts) and shared by every
/// client made from it, so a cold start builds one HTTP client and its TLS roots, not one
/// per AWS service.
pub fn lambda_config() -> SdkConfig {
    static CONFIG: OnceLock<SdkConfig> = OnceLock::new();
    CONFIG.get_or_init(|| lambda_config_from(Env::real())).clone()
}

fn lambda_config_from(env: Env) -> SdkConfig {
    let region = ["AWS_REGION", "AWS_DEFAULT_REGION"]
        .into_iter()
        .find_map(|name| env.get(name).ok().filter(|v| !v.trim().is_empty()))
        .map(Region::new);
    let endpoint_url = env.get(ENDPOINT_URL).ok().filter(|v| !v.trim().is_empty());
    let mut builder = SdkConfig::builder()
        .behavior_version(BehaviorVersion::latest())
        .region(region)
        // Read from the process's variables at each request, as the default chain's first link.
        .credentials_provider(SharedCredentialsProvider::new(
            EnvironmentVariableCredentialsProvider::new(),
        ))
        .http_client(http::http_client())
        .service_config(EnvEndpoints { env });
    builder.set_endpoint_url(endpoint_url);
    builder.build()
}

/// The usual chain (environment, profiles, SSO, web identity, instance metadata), on the
/// same HTTP client: for the CLI, which runs where people keep their credentials.
pub async fn default_chain_config() -> SdkConfig {
    aws_config::defaults(BehaviorVersion::latest())
        .http_client(http::http_client())
        .load()
        .await
}

/// Per-service settings from environment variables only (no profile file on Lambda): what
/// lets `AWS_ENDPOINT_URL_DYNAMODB` point one client elsewhere than the others.
#[derive(Debug)]
struct EnvEndpoints {
    env: Env,
}

impl LoadServiceConfig for EnvEndpoints {
    fn load_config(&self, key: ServiceConfigKey<'_>) -> Option<String> {
        EnvConfigValue::new()
            .env(key.env())
            .service_id(key.service_id())
            .load(&self.env, None)
            .map(|(value, _)| value.into_owned())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn endpoint_for(sdk: &SdkConfig, service_id: &str) -> Option<String> {
        // The key each generated client asks for (service id, variable, profile key).
        let key = ServiceConfigKey::builder()
            .service_id(service_id)
            .env(ENDPOINT_URL)
            .profile("endpoint_url")
            .build()
            .unwrap();
        sdk.service_config()?.load_config(key)
    }

    #[test]
    fn the_region_comes_from_lambda_variables() {
        let sdk = lambda_config_from(Env::from_slice(&[
            ("AWS_REGION", "eu-west-3"),
            ("AWS_DEFAULT_REGION", "x"),
        ]));
        assert_eq!(sdk.region().map(Region::as_ref), Some("eu-west-3"));
        assert!(sdk.credentials_provider().is_some());
        assert!(sdk.endpoint_url().is_none());
        assert_eq!(endpoint_for(&sdk, "DynamoDB"), None);

        let fallback = lambda_config_from(Env::from_slice(&[("AWS_DEFAULT_REGION", "us-west-2")]));
        assert_eq!(fallback.region().map(Region::as_ref), Some("us-west-2"));
        assert!(lambda_config_from(Env::from_slice(&[])).region().is_none());
    }

    #[test]
    fn a_service_endpoint_overrides_the_global_one_for_that_service_only() {
        let sdk = lambda_config_from(Env::from_slice(&[
            ("AWS_ENDPOINT_URL", "http://127.0.0.1:5000"),
            ("AWS_ENDPOINT_URL_DYNAMODB", "http://127.0.0.1:6000"),
        ]));
        assert_eq!(sdk.endpoint_url(), Some("http://127.0.0.1:5000"));
        assert_eq!(endpoint_for(&sdk, "DynamoDB").as_deref(), Some("http://127.0.0.1:6000"));
        assert_eq!(endpoint_for(&sdk, "S3").as_deref(), Some("http://127.0.0.1:5000"));
        assert_eq!(
            endpoint_for(&sdk, "Secrets Manager").as_deref(),
            Some("http://127.0.0.1:5000")
        );
    }
}
