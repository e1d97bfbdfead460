//! monthly-report: the monthly credits report (issue 5), triggered on the 1st of each month.
//!
//! Thin on purpose: cold start reads the configuration (failing with every problem at once,
//! and with a clear message when `REPORT_BUCKET` or `LEDGER_TABLE` is missing), builds the
//! Secrets Manager cache, the S3 store and the DynamoDB ledger once, and hands each event to
//! [`credit_core::monthly`], where the month rules, the report and the once-only email live.
//! The event is checked before anything else happens: bad input fails without a request to
//! ArcGIS, AWS or anything else.

use chrono::Utc;
use credit_core::config::{Config, ConfigError};
use credit_core::connect::{ArcgisSource, ConnectError};
use credit_core::ledger::Ledger;
use credit_core::monthly::{self, Deps, MonthlyError, ReportSettings, ReportStore, RunSummary};
use credit_core::secrets::SecretCache;
use lambda_runtime::{Diagnostic, LambdaEvent, service_fn, tracing};
use serde_json::Value;

#[tokio::main]
async fn main() -> Result<(), lambda_runtime::Error> {
    tracing::init_default_subscriber();
    let config = Config::from_env().map_err(StartupError::Config)?;
    let bucket = config.report_bucket.clone().ok_or(StartupError::NoReportBucket)?;
    let table = config.ledger_table.clone().ok_or(StartupError::NoLedgerTable)?;
    let secrets = SecretCache::from_env(config.secret_ttl).await;
    let app = App {
        settings: ReportSettings::from_config(&config),
        arcgis: ArcgisSource::from_secret(secrets, config.arcgis_secret_id.clone()),
        store: ReportStore::from_env(bucket).await,
        ledger: Ledger::dynamo_from_env(table).await,
        config,
    };
    lambda_runtime::run(service_fn(|event: LambdaEvent<Value>| handler(&app, event))).await
}

/// Why the function cannot start: reported once at cold start, before any event is taken.
#[derive(Debug, thiserror::Error)]
enum StartupError {
    /// Every invalid or missing variable, together.
    #[error(transparent)]
    Config(ConfigError),
    /// The report has nowhere to go.
    #[error(
        "REPORT_BUCKET: required by monthly-report (the S3 bucket that receives \
        reports/YYYY-MM/credits.csv, .json and .html); set it to the reports bucket's name"
    )]
    NoReportBucket,
    /// Without the ledger a retried run would email the admin contacts again.
    #[error(
        "LEDGER_TABLE: required by monthly-report (the month's run claim makes the report email \
        go out once); set it to the ledger's DynamoDB table name"
    )]
    NoLedgerTable,
}

/// What every invocation shares, built once per container.
struct App {
    config: Config,
    settings: ReportSettings,
    arcgis: ArcgisSource,
    store: ReportStore,
    ledger: Ledger,
}

/// Everything an invocation can fail with; [`Diagnostic::error_type`] says which.
#[derive(Debug, thiserror::Error)]
enum HandlerError {
    /// No ArcGIS client: the secret is unreadable or its settings unusable.
    #[error(transparent)]
    Connect(#[from] ConnectError),
    /// The report failed (see [`MonthlyError::kind`]), bad input included.
    #[error(transparent)]
    Report(#[from] MonthlyError),
}

impl From<HandlerError> for Diagnostic {
    fn from(e: HandlerError) -> Diagnostic {
        let error_type = match &e {
            HandlerError::Connect(e) => e.kind(),
            HandlerError::Report(r) => r.kind(),
        };
        Diagnostic {
            error_type: error_type.to_owned(),
            error_message: e.to_string(),
        }
    }
}

/// One invocation: the month is decided and checked first (no I/O), then the report is made.
async fn handler(app: &App, event: LambdaEvent<Value>) -> Result<RunSummary, HandlerError> {
    let now = Utc::now();
    let resolved = monthly::plan(event.payload, now).inspect_err(|e| {
        tracing::error!(kind = e.kind(), error = %e, "monthly-report refused its input");
    })?;
    let client = app.arcgis.client(&app.config).await?;
    let deps = Deps {
        client: &client,
        store: &app.store,
        ledger: &app.ledger,
        settings: &app.settings,
    };
    monthly::execute(resolved, deps, now).await.map_err(|e| {
        if e.is_sign_in_failure() {
            app.arcgis.forget_credentials();
        }
        tracing::error!(kind = e.kind(), error = %e, "monthly-report failed");
        e.into()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    use chrono::{DateTime, NaiveDate};
    use credit_core::arcgis::{Client, ClientConfig, Credentials, Secret};
    use credit_core::monthly::{Month, MonthFrom};
    use credit_core::schedule::{self, ReportInput};
    use lambda_runtime::Context;
    use portal_sim::generate::{ADMIN_PASSWORD, ADMIN_USERNAME};
    use portal_sim::{GenParams, generate};
    use serde_json::json;

    use testkit::fixtures::fixture;

    fn at(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
    }

    fn month(s: &str) -> Month {
        s.parse().unwrap()
    }

    #[test]
    fn every_schedule_shape_decodes_to_the_month_it_reports() {
        let now = at("2026-11-26T06:00:07Z");
        let cases = [
            ("scheduler-input-monthly.json", "2026-10", MonthFrom::Input),
            ("scheduler-default-envelope.json", "2026-10", MonthFrom::ScheduleTime),
            ("scheduler-input.json", "2026-10", MonthFrom::ScheduleTime),
        ];
        for (name, want, from) in cases {
            if name == "scheduler-input.json" {
                // scan-credits' Input: monthly-report refuses its keys rather than guess.
                let err = monthly::plan(fixture(name), now).unwrap_err();
                assert_eq!(err.kind(), "InvalidEvent", "{name}");
                assert!(err.to_string().contains("unknown field `dry_run`"), "{err}");
                continue;
            }
            let r = monthly::plan(fixture(name), now).unwrap_or_else(|e| panic!("{name}: {e}"));
            assert_eq!((r.month, r.from), (month(want), from), "{name}");
        }
        // The legacy rule's envelope: the month before its `time` (2015-10-08) — reportable
        // when the run happens then, refused as past the usage retention today.
        let legacy = fixture("eventbridge-scheduled-event.json");
        let run = schedule::decode::<ReportInput>(legacy.clone()).unwrap();
        assert_eq!(run.scheduled_time, Some(at("2015-10-08T16:53:06Z")));
        let r = monthly::plan(legacy.clone(), at("2015-10-08T16:53:07Z")).unwrap();
        assert_eq!((r.month, r.from), (month("2015-09"), MonthFrom::ScheduleTime));
        let err = monthly::plan(legacy, now).unwrap_err();
        assert_eq!(err.kind(), "MonthOutsideUsageRetention");
    }

    #[test]
    fn bad_input_maps_to_meaningful_error_types() {
        let now = at("2026-11-26T06:00:07Z");
        let cases = [
            (json!({"month": "2026-13"}), "InvalidMonth"),
            (json!({"month": "Oct 2026"}), "InvalidMonth"),
            (json!({"month": "2026-11"}), "MonthNotComplete"),
            (json!({"month": "2027-01"}), "MonthNotComplete"),
            (json!({"month": "2024-01"}), "MonthOutsideUsageRetention"),
            (json!({"month": 7}), "InvalidEvent"),
            (json!({"month": "2026-10", "bucket": "x"}), "InvalidEvent"),
            (json!("2026-10"), "InvalidEvent"),
        ];
        for (event, kind) in cases {
            let err = monthly::plan(event.clone(), now).unwrap_err();
            let d = Diagnostic::from(HandlerError::from(err));
            assert_eq!(d.error_type, kind, "{event}: {}", d.error_message);
            assert!(!d.error_message.is_empty());
        }
    }

    #[test]
    fn startup_errors_name_the_variable() {
        assert!(
            StartupError::NoReportBucket
                .to_string()
                .starts_with("REPORT_BUCKET: required")
        );
        assert!(
            StartupError::NoLedgerTable
                .to_string()
                .starts_with("LEDGER_TABLE: required")
        );
    }

    /// A store whose endpoint refuses connections: any S3 call would fail loudly.
    fn unreachable_store() -> ReportStore {
        let config = aws_sdk_s3::Config::builder()
            .behavior_version(aws_sdk_s3::config::BehaviorVersion::latest())
            .region(aws_sdk_s3::config::Region::new("us-east-1"))
            .credentials_provider(aws_sdk_s3::config::Credentials::new("t", "t", None, None, "tests"))
            .endpoint_url("http://127.0.0.1:1")
            .force_path_style(true)
            .http_client(credit_core::secrets::ring_http_client())
            .build();
        ReportStore::new(aws_sdk_s3::Client::from_conf(config), "reports")
    }

    #[tokio::test]
    async fn bad_input_fails_before_any_request() {
        let as_of = NaiveDate::from_ymd_opt(2026, 11, 26).unwrap();
        let sim = portal_sim::start(generate(&GenParams::new(20, 7, as_of)))
            .await
            .unwrap();
        let credentials = Credentials::UserPassword {
            username: ADMIN_USERNAME.to_owned(),
            password: Secret::new(ADMIN_PASSWORD),
        };
        let client = Client::new(ClientConfig::new(sim.rest_url(), credentials)).unwrap();
        let config = Config::from_lookup(|name| match name {
            "ARCGIS_SECRET_ID" => Some("test".to_owned()),
            "REPORT_BUCKET" => Some("reports".to_owned()),
            _ => None,
        })
        .unwrap();
        let app = App {
            settings: ReportSettings::from_config(&config),
            arcgis: ArcgisSource::Fixed(client),
            store: unreachable_store(),
            ledger: Ledger::memory(),
            config,
        };
        let event = LambdaEvent::new(json!({"month": "2026-13"}), Context::default());
        let err = handler(&app, event).await.unwrap_err();
        assert_eq!(Diagnostic::from(err).error_type, "InvalidMonth");
        assert_eq!(sim.total_requests(), 0, "nothing was asked of ArcGIS");
    }
}
