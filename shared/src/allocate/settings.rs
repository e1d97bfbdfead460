//! What `allocate` uses from the configuration, validated once at cold start.

use std::time::Duration;

use crate::apply::Applier;
use crate::config::Config;
use crate::credits::classify::{Limit, Thresholds};
use crate::startup::{Platform, StartupError};

/// The function's name, in messages.
const FUNCTION: &str = "allocate";

/// The template's timeout for allocate: the deadline used when the invocation's context does
/// not carry a plausible one (local emulators).
pub const FALLBACK_TIMEOUT: Duration = Duration::from_secs(30);

/// Whether calls without a caller identity are accepted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Anonymous {
    /// Refused with 401 (always, in AWS).
    Refused,
    /// Accepted under the name `unauthenticated-local` (`ALLOW_UNAUTHENTICATED`, local runs).
    AllowedLocally,
}

/// Where allocate keeps its requests and audit trail.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LedgerTarget {
    /// The DynamoDB table `LEDGER_TABLE`.
    Table(String),
    /// In memory, for a local run without a table (only with `ALLOW_UNAUTHENTICATED`).
    Memory,
}

/// Everything allocate needs, in domain types.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AllocateSettings {
    /// Guardrails and member cap: what every application is checked against.
    pub applier: Applier,
    /// Who the critical policy selects.
    pub thresholds: Thresholds,
    /// Anonymous calls.
    pub anonymous: Anonymous,
    /// The ledger.
    pub ledger: LedgerTarget,
    /// The queue of allocation jobs (`ALLOCATION_QUEUE_URL`); without one every request is
    /// answered synchronously.
    pub queue_url: Option<String>,
    /// Requests naming more members than this go to the queue.
    pub async_above: usize,
}

impl AllocateSettings {
    /// Builds the settings, refusing what cannot work: no ledger (no audit, no idempotency),
    /// `ALLOW_UNAUTHENTICATED` in AWS.
    pub fn from_config(config: &Config, platform: Platform) -> Result<AllocateSettings, StartupError> {
        let anonymous = match (config.allow_unauthenticated, platform) {
            (false, _) => Anonymous::Refused,
            (true, Platform::Local) => Anonymous::AllowedLocally,
            (true, Platform::Aws) => {
                return Err(StartupError::NotInAws {
                    variable: "ALLOW_UNAUTHENTICATED",
                    why: "calls without an authenticated caller are for local runs only: in AWS every \
                          allocation must be attributable to an IAM or JWT principal",
                });
            }
        };
        let ledger = match (&config.ledger_table, anonymous) {
            (Some(table), _) => LedgerTarget::Table(table.clone()),
            (None, Anonymous::AllowedLocally) => LedgerTarget::Memory,
            (None, Anonymous::Refused) => {
                return Err(StartupError::Required {
                    variable: "LEDGER_TABLE",
                    function: FUNCTION,
                    why: "the audit trail, idempotency keys, the allocation lock and the daily budget live there",
                });
            }
        };
        let thresholds = Thresholds::new(
            Limit::Percent(config.critical_percent),
            Limit::Percent(config.warning_percent),
        )
        .map_err(|e| StartupError::Invalid(format!("CRITICAL_PERCENT / WARNING_PERCENT: {e}")))?;
        Ok(AllocateSettings {
            applier: Applier::from_config(config),
            thresholds,
            anonymous,
            ledger,
            queue_url: config.allocation_queue_url.clone(),
            async_above: config.async_above_members,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(vars: &[(&str, &str)]) -> Config {
        Config::from_lookup(|name| {
            vars.iter()
                .find(|(k, _)| *k == name)
                .map(|(_, v)| (*v).to_owned())
                .or_else(|| (name == "ARCGIS_SECRET_ID").then(|| "s".to_owned()))
        })
        .unwrap()
    }

    #[test]
    fn allow_unauthenticated_is_refused_in_aws() {
        let c = config(&[("ALLOW_UNAUTHENTICATED", "true"), ("LEDGER_TABLE", "t")]);
        let err = AllocateSettings::from_config(&c, Platform::Aws).unwrap_err();
        assert!(
            err.to_string().starts_with("ALLOW_UNAUTHENTICATED: calls without"),
            "{err}"
        );
        let local = AllocateSettings::from_config(&c, Platform::Local).unwrap();
        assert_eq!(local.anonymous, Anonymous::AllowedLocally);
    }

    #[test]
    fn a_ledger_is_required_unless_local_and_anonymous() {
        let err = AllocateSettings::from_config(&config(&[]), Platform::Local).unwrap_err();
        assert!(
            err.to_string().starts_with("LEDGER_TABLE: required by allocate"),
            "{err}"
        );
        let s = AllocateSettings::from_config(&config(&[("ALLOW_UNAUTHENTICATED", "true")]), Platform::Local).unwrap();
        assert_eq!(s.ledger, LedgerTarget::Memory);
        let s = AllocateSettings::from_config(&config(&[("LEDGER_TABLE", "t")]), Platform::Aws).unwrap();
        assert_eq!(s.ledger, LedgerTarget::Table("t".into()));
        assert_eq!(s.anonymous, Anonymous::Refused);
        assert_eq!(s.applier.max_members, 500);
    }
}
