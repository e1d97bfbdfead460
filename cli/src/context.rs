//! Where the command's credentials and the deployment's resources come from.
//!
//! Resolved lazily, so `check` can report each source's failure as a finding and the
//! commands that need no AWS (a local secret file, `members`) never touch it.

use std::collections::HashMap;
use std::path::Path;
use std::time::Duration;

use anyhow::{Context as _, anyhow, bail};
use aws_config::SdkConfig;
use shared::arcgis::Client;
use shared::config::Config;
use shared::i18n::Lang;
use shared::secrets::{ArcgisSecret, SecretCache};
use tokio::sync::OnceCell;

use crate::args::SourceArgs;

/// The variable holding the secret's JSON itself (for scripts and CI).
pub const SECRET_VARIABLE: &str = "CREDIT_STEWARD_SECRET";

/// What a deployed stack says about itself.
#[derive(Debug, Clone, Default)]
pub struct Stack {
    /// Its name.
    pub name: String,
    /// Outputs by key (`LedgerTableName`, `ReportsBucketName`, `ApiUrl`…).
    pub outputs: HashMap<String, String>,
    /// Parameters by key (`ArcgisSecretArn`…).
    pub parameters: HashMap<String, String>,
}

/// Where the ArcGIS credentials were found, for messages.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SecretOrigin {
    /// `--secret-file`.
    File(String),
    /// `CREDIT_STEWARD_SECRET`.
    Variable,
    /// Secrets Manager.
    SecretsManager(String),
}

impl std::fmt::Display for SecretOrigin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            SecretOrigin::File(path) => write!(f, "file {path}"),
            SecretOrigin::Variable => write!(f, "variable {SECRET_VARIABLE}"),
            SecretOrigin::SecretsManager(id) => write!(f, "Secrets Manager secret {id}"),
        }
    }
}

/// The command's context.
pub struct Context {
    args: SourceArgs,
    lang: Lang,
    aws: OnceCell<SdkConfig>,
    stack: OnceCell<Option<Stack>>,
}

impl Context {
    /// A context over the parsed source arguments.
    pub fn new(args: SourceArgs, lang: Lang) -> Context {
        Context {
            args,
            lang,
            aws: OnceCell::new(),
            stack: OnceCell::new(),
        }
    }

    /// The AWS configuration: the usual chain (profiles, SSO, `AWS_ENDPOINT_URL`).
    pub async fn aws(&self) -> &SdkConfig {
        self.aws.get_or_init(shared::aws::default_chain_config).await
    }

    /// The stack named by `--stack`, read once; `None` without `--stack`.
    pub async fn stack(&self) -> anyhow::Result<Option<&Stack>> {
        let stack = self
            .stack
            .get_or_try_init(|| async {
                let Some(name) = &self.args.stack else {
                    return Ok::<_, anyhow::Error>(None);
                };
                let client = aws_sdk_cloudformation::Client::new(self.aws().await);
                let out = client.describe_stacks().stack_name(name).send().await.map_err(|e| {
                    anyhow!(
                        "could not read stack '{name}': {}. Check the name, the region (AWS_REGION or \
                         the profile's) and that your credentials may call cloudformation:DescribeStacks",
                        aws_sdk_cloudformation::error::DisplayErrorContext(&e)
                    )
                })?;
                let found = out
                    .stacks()
                    .first()
                    .ok_or_else(|| anyhow!("stack '{name}' was not found"))?;
                Ok(Some(Stack {
                    name: name.clone(),
                    outputs: found
                        .outputs()
                        .iter()
                        .filter_map(|o| Some((o.output_key()?.to_owned(), o.output_value()?.to_owned())))
                        .collect(),
                    parameters: found
                        .parameters()
                        .iter()
                        .filter_map(|p| Some((p.parameter_key()?.to_owned(), p.parameter_value()?.to_owned())))
                        .collect(),
                }))
            })
            .await?;
        Ok(stack.as_ref())
    }

    /// `--table`, else the stack's `LedgerTableName` output.
    pub async fn table(&self) -> anyhow::Result<Option<String>> {
        self.resource(self.args.table.as_ref(), "LedgerTableName").await
    }

    /// `--bucket`, else the stack's `ReportsBucketName` output.
    pub async fn bucket(&self) -> anyhow::Result<Option<String>> {
        self.resource(self.args.bucket.as_ref(), "ReportsBucketName").await
    }

    /// `--api`, else the stack's `ApiUrl` output.
    pub async fn api(&self) -> anyhow::Result<Option<String>> {
        self.resource(self.args.api.as_ref(), "ApiUrl").await
    }

    async fn resource(&self, given: Option<&String>, output: &str) -> anyhow::Result<Option<String>> {
        if let Some(given) = given {
            return Ok(Some(given.clone()));
        }
        Ok(self.stack().await?.and_then(|s| s.outputs.get(output).cloned()))
    }

    /// The language people read the command's output in.
    pub fn lang(&self) -> Lang {
        self.lang
    }

    /// The settings the functions would use, from the same variables (`CRITICAL_PERCENT`,
    /// `REPORT_SOURCE`…), with this command's ledger table and language.
    pub fn config(&self, secret_id: &str, table: Option<&str>) -> anyhow::Result<Config> {
        Config::from_lookup(|name| match name {
            "ARCGIS_SECRET_ID" => Some(secret_id.to_owned()),
            // The command's language, not the locale's `LANGUAGE` (often `en_US:en`).
            "LANGUAGE" => Some(self.lang.code().to_owned()),
            "LEDGER_TABLE" => table.map(str::to_owned).or_else(|| std::env::var(name).ok()),
            _ => std::env::var(name).ok(),
        })
        .map_err(|e| anyhow!("{e}"))
        .context("the settings in the environment are not valid (the same variables as the functions')")
    }

    /// The ArcGIS secret and where it came from.
    pub async fn secret(&self) -> anyhow::Result<(ArcgisSecret, SecretOrigin)> {
        if let Some(path) = &self.args.secret_file {
            let origin = SecretOrigin::File(path.display().to_string());
            return Ok((read_secret_file(path)?, origin));
        }
        if let Ok(text) = std::env::var(SECRET_VARIABLE)
            && !text.trim().is_empty()
        {
            let secret = ArcgisSecret::parse(&text)
                .map_err(|problems| anyhow!("{SECRET_VARIABLE} is not a usable secret: {}", problems.join("; ")))?;
            return Ok((secret, SecretOrigin::Variable));
        }
        let id = match &self.args.secret_id {
            Some(id) => id.clone(),
            None => match self.stack().await? {
                Some(stack) => stack
                    .parameters
                    .get("ArcgisSecretArn")
                    .cloned()
                    .ok_or_else(|| anyhow!("stack '{}' has no ArcgisSecretArn parameter", stack.name))?,
                None => bail!(
                    "no ArcGIS credentials: give --secret-file FILE, --secret-id ID or --stack NAME \
                     (or set {SECRET_VARIABLE} to the secret's JSON)"
                ),
            },
        };
        let cache = SecretCache::new(aws_sdk_secretsmanager::Client::new(self.aws().await), Duration::ZERO);
        let secret = cache.arcgis_secret(&id).await?;
        Ok(((*secret).clone(), SecretOrigin::SecretsManager(id)))
    }

    /// An ArcGIS client signed in (lazily) with the secret, and the settings it was built with.
    pub async fn client(&self) -> anyhow::Result<(Client, Config)> {
        let (secret, origin) = self.secret().await?;
        self.client_for(&secret, &origin)
    }

    /// An ArcGIS client for a secret already read (`check` reports the secret on its own
    /// line first, and reads it once).
    pub fn client_for(&self, secret: &ArcgisSecret, origin: &SecretOrigin) -> anyhow::Result<(Client, Config)> {
        let config = self.config(&origin.to_string(), None)?;
        let client =
            Client::new(config.client_config(secret)).map_err(|e| anyhow!("cannot use the secret's settings: {e}"))?;
        Ok((client, config))
    }
}

/// Reads and parses a local secret file, naming keys, never values.
fn read_secret_file(path: &Path) -> anyhow::Result<ArcgisSecret> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("could not read the secret file {}", path.display()))?;
    ArcgisSecret::parse(&text).map_err(|problems| {
        anyhow!(
            "the secret file {} is not usable: {}",
            path.display(),
            problems.join("; ")
        )
    })
}
