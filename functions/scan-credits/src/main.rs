//! scan-credits: the daily credits watchdog (issue 4).
//!
//! Thin on purpose: cold start reads the configuration (failing with every problem at once),
//! builds the Secrets Manager cache and the DynamoDB ledger once, and hands each scheduled
//! event to [`credit_core::scan`], where the workflow and its once-only guarantees live. This
//! file only decodes the event (any of the three schedule shapes), picks the run key, writes
//! the run's metrics line, and maps errors to a meaningful Lambda `errorType`.

use std::io::Write;

use chrono::{DateTime, Utc};
use credit_core::config::{Config, ConfigError};
use credit_core::connect::{ArcgisSource, ConnectError};
use credit_core::ledger::Ledger;
use credit_core::scan::{self, ScanDeps, ScanError, ScanRequest, ScanSummary};
use credit_core::schedule::{self, EventError, ScanInput};
use credit_core::secrets::SecretCache;
use credit_core::telemetry;
use lambda_runtime::{Diagnostic, LambdaEvent, service_fn, tracing};
use serde_json::{Map, Value, json};

#[tokio::main]
async fn main() -> Result<(), lambda_runtime::Error> {
    tracing::init_default_subscriber();
    let config = Config::from_env().map_err(|e| refuse_to_start(StartupError::Config(e)))?;
    let table = config
        .ledger_table
        .clone()
        .ok_or_else(|| refuse_to_start(StartupError::NoLedgerTable))?;
    let secrets = SecretCache::from_env(config.secret_ttl).await;
    let ledger = Ledger::dynamo_from_env(table).await;
    let deps = Deps {
        arcgis: ArcgisSource::from_secret(secrets, config.arcgis_secret_id.clone()),
        ledger,
        config,
    };
    lambda_runtime::run(service_fn(|event: LambdaEvent<Value>| handler(&deps, event))).await
}

/// Why the function cannot start: reported once at cold start, before any event is taken.
#[derive(Debug, thiserror::Error)]
enum StartupError {
    /// Every invalid or missing variable, together.
    #[error(transparent)]
    Config(ConfigError),
    /// Without the ledger there is no run claim and no alert state, so no once-only email.
    #[error(
        "LEDGER_TABLE: required by scan-credits (run claims and alert state make each alert \
        email go out once); set it to the ledger's DynamoDB table name"
    )]
    NoLedgerTable,
}

/// Logs why the function cannot start (as one readable line, through the same subscriber as
/// every other log) before `main` returns the error and Lambda reports the failed init.
fn refuse_to_start(e: StartupError) -> StartupError {
    tracing::error!(error = %e, "scan-credits cannot start");
    e
}

/// What every invocation shares, built once per container.
struct Deps {
    arcgis: ArcgisSource,
    ledger: Ledger,
    config: Config,
}

/// Everything an invocation can fail with; [`Diagnostic::error_type`] says which.
#[derive(Debug, thiserror::Error)]
enum HandlerError {
    /// The event is not one of the three schedule shapes, or its Input is invalid.
    #[error(transparent)]
    Event(#[from] EventError),
    /// No ArcGIS client: the secret is unreadable or its settings unusable.
    #[error(transparent)]
    Connect(#[from] ConnectError),
    /// The scan failed (see [`ScanError::kind`]).
    #[error(transparent)]
    Scan(#[from] ScanError),
    /// The summary could not be turned into JSON (a bug).
    #[error("could not serialize the scan summary: {0}")]
    Summary(#[source] serde_json::Error),
}

impl From<HandlerError> for Diagnostic {
    fn from(e: HandlerError) -> Diagnostic {
        let error_type = match &e {
            HandlerError::Event(_) => "InvalidEvent",
            HandlerError::Connect(e) => e.kind(),
            HandlerError::Scan(s) => s.kind(),
            HandlerError::Summary(_) => "InternalError",
        };
        Diagnostic {
            error_type: error_type.to_owned(),
            error_message: e.to_string(),
        }
    }
}

async fn handler(deps: &Deps, event: LambdaEvent<Value>) -> Result<Value, HandlerError> {
    handle(deps, event, &mut std::io::stdout()).await
}

/// The handler with its metrics sink as a parameter, so tests capture the EMF line.
async fn handle(deps: &Deps, event: LambdaEvent<Value>, metrics_out: &mut impl Write) -> Result<Value, HandlerError> {
    let (payload, context) = event.into_parts();
    let request = decode(payload, &context.request_id, Utc::now())?;
    tracing::info!(
        run_key = %request.run_key,
        dry_run = request.input.dry_run,
        "scan-credits starting"
    );
    let client = deps.arcgis.client(&deps.config).await?;
    let scan_deps = ScanDeps {
        client: &client,
        ledger: &deps.ledger,
        config: &deps.config,
    };
    let result = scan::scan(&scan_deps, &request).await;
    let summary = match &result {
        Ok(s) => Some(s),
        Err(e) => e.summary(),
    };
    if let Some(s) = summary {
        let outcome = result.as_ref().err().map_or("ok", ScanError::kind);
        if let Err(e) = emit_metrics(metrics_out, s, &request, outcome) {
            tracing::warn!(error = %e, "could not write the metrics line");
        }
    }
    match result {
        Ok(s) => serde_json::to_value(&s).map_err(HandlerError::Summary),
        Err(e) => {
            if e.is_sign_in_refused() {
                deps.arcgis.forget_credentials();
            }
            tracing::error!(kind = e.kind(), error = %e, "scan-credits failed");
            Err(e.into())
        }
    }
}

/// Decodes any of the three schedule shapes and picks the run key: the schedule time when the
/// event carries one (so every delivery of one firing shares it), else the request id.
fn decode(payload: Value, request_id: &str, now: DateTime<Utc>) -> Result<ScanRequest, HandlerError> {
    let run = schedule::decode::<ScanInput>(payload)?;
    Ok(ScanRequest {
        run_key: run.run_key(request_id),
        request_id: request_id.to_owned(),
        as_of: run.scheduled_time.unwrap_or(now),
        input: run.input,
        now,
    })
}

/// One EMF line with the run's numbers, and properties to find it by in Logs Insights. Every
/// invocation that got as far as a summary writes one, duplicate deliveries included (they
/// did read ArcGIS; `duplicate: true` tells them apart).
fn emit_metrics(
    out: &mut impl Write,
    summary: &ScanSummary,
    request: &ScanRequest,
    outcome: &str,
) -> std::io::Result<()> {
    let mut properties = Map::new();
    properties.insert("function".into(), json!("scan-credits"));
    properties.insert("run_key".into(), json!(summary.run_key));
    properties.insert("dry_run".into(), json!(summary.dry_run));
    properties.insert("duplicate".into(), json!(summary.duplicate_of.is_some()));
    properties.insert("outcome".into(), json!(outcome));
    telemetry::write_emf(out, request.now, &summary.metrics(), &properties)
}

#[cfg(test)]
mod tests {
    use super::*;

    use chrono::NaiveDate;
    use credit_core::arcgis::{Client, ClientConfig, Credentials, Secret};
    use lambda_runtime::Context;
    use portal_sim::generate::{ADMIN_PASSWORD, ADMIN_USERNAME};
    use portal_sim::{GenParams, generate};

    use testkit::fixtures::fixture;

    fn now() -> DateTime<Utc> {
        DateTime::parse_from_rfc3339("2026-11-26T06:00:07Z")
            .unwrap()
            .with_timezone(&Utc)
    }

    #[test]
    fn every_schedule_shape_decodes_to_its_schedule_time() {
        let cases = [
            ("scheduler-input.json", "2026-11-26T06:00:00Z"),
            ("scheduler-default-envelope.json", "2026-11-26T06:00:00Z"),
            ("eventbridge-scheduled-event.json", "2015-10-08T16:53:06Z"),
        ];
        for (name, key) in cases {
            let req = decode(fixture(name), "req-1", now()).unwrap_or_else(|e| panic!("{name}: {e}"));
            assert_eq!(req.run_key, key, "{name}");
            assert_eq!(req.as_of.to_rfc3339_opts(chrono::SecondsFormat::Secs, true), key);
            assert_eq!(
                req.input,
                ScanInput {
                    scheduled_time: req.input.scheduled_time,
                    ..ScanInput::default()
                }
            );
            assert_eq!((req.request_id.as_str(), req.now), ("req-1", now()));
        }
        // A manual invocation without a schedule time is keyed by its request id.
        let manual = decode(json!({"dry_run": true}), "req-2", now()).unwrap();
        assert_eq!(manual.run_key, "request:req-2");
        assert_eq!(manual.as_of, now());
        assert!(manual.input.dry_run);
    }

    #[test]
    fn a_bad_event_is_an_invalid_event_diagnostic() {
        let err = decode(json!({"dryRun": true}), "r", now()).unwrap_err();
        let d = Diagnostic::from(err);
        assert_eq!(d.error_type, "InvalidEvent");
        assert!(
            d.error_message.contains("unknown field `dryRun`"),
            "{}",
            d.error_message
        );
        let d = Diagnostic::from(decode(json!("hello"), "r", now()).unwrap_err());
        assert_eq!(d.error_type, "InvalidEvent");
    }

    #[tokio::test]
    async fn the_handler_scans_once_per_run_key_and_writes_one_metrics_line() {
        let as_of = NaiveDate::from_ymd_opt(2026, 11, 26).unwrap();
        let sim = portal_sim::start(generate(&GenParams::new(120, 7, as_of)))
            .await
            .unwrap();
        let credentials = Credentials::UserPassword {
            username: ADMIN_USERNAME.to_owned(),
            password: Secret::new(ADMIN_PASSWORD),
        };
        let client = Client::new(ClientConfig::new(sim.rest_url(), credentials)).unwrap();
        let config = Config::from_lookup(|name| (name == "ARCGIS_SECRET_ID").then(|| "test".to_owned())).unwrap();
        let deps = Deps {
            arcgis: ArcgisSource::Fixed(client),
            ledger: Ledger::memory(),
            config,
        };
        let event = |request_id: &str| {
            let mut context = Context::default();
            context.request_id = request_id.to_owned();
            LambdaEvent::new(fixture("scheduler-default-envelope.json"), context)
        };

        let mut metrics = Vec::new();
        let first = handle(&deps, event("req-1"), &mut metrics).await.unwrap();
        assert_eq!(first["run_key"], "2026-11-26T06:00:00Z");
        assert_eq!(first["notification"]["status"], "sent", "{first:#}");
        assert!(first["duplicate_of"].is_null());
        let line: Value = serde_json::from_slice(&metrics).unwrap();
        assert_eq!(line["MembersScanned"], first["members_scanned"]);
        assert_eq!(line["outcome"], "ok");

        // The same firing delivered again (another request id): nothing is sent.
        let again = handle(&deps, event("req-2"), &mut Vec::new()).await.unwrap();
        assert_eq!(again["duplicate_of"]["status"], "done");
        assert_eq!(again["notification"]["status"], "duplicate");
        assert_eq!(sim.notifications().len(), 1);
    }
}
