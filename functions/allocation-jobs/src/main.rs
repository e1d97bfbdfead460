//! allocation-jobs: applies the allocation requests `POST /allocations` accepted with a 202,
//! one SQS message (a job id) at a time, through the same apply path as the API.
//!
//! Thin, as the Lambda runtime's SQS example: the settings, the secret cache and the ledger
//! are built once per cold start; each message is handed to [`shared::allocate::jobs::work`],
//! and the messages that are not finished are reported as batch item failures, so SQS
//! delivers them again (and, past the queue's redrive limit, to its dead-letter queue).

use aws_lambda_events::event::sqs::{BatchItemFailure, SqsBatchResponse, SqsEvent};
use chrono::Utc;
use lambda_runtime::{Error, LambdaEvent, service_fn};
use shared::allocate::AllocateSettings;
use shared::allocate::jobs::{self, Worked};
use shared::allocate::settings::LedgerTarget;
use shared::apply::Deadline;
use shared::config::Config;
use shared::connect::ArcgisSource;
use shared::ledger::Ledger;
use shared::startup::{self, Platform, StartupError};

/// The function's name, in messages.
const FUNCTION: &str = "allocation-jobs";

/// The template's timeout: the deadline used when the context carries no plausible one.
const FALLBACK_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(900);

/// Built once per cold start.
struct State {
    config: Config,
    settings: AllocateSettings,
    ledger: Ledger,
    arcgis: ArcgisSource,
}

impl State {
    fn from_env() -> Result<State, StartupError> {
        let config = Config::from_env()?;
        let settings = AllocateSettings::from_config(&config, Platform::from_env())?;
        let LedgerTarget::Table(table) = &settings.ledger else {
            return Err(StartupError::Required {
                variable: "LEDGER_TABLE",
                function: FUNCTION,
                why: "the jobs, their requests' journals and the audit trail live there",
            });
        };
        let ledger = Ledger::dynamo_from_env(table.clone());
        let arcgis = ArcgisSource::from_config(&config);
        Ok(State {
            config,
            settings,
            ledger,
            arcgis,
        })
    }
}

/// The allocator is bounded before the runtime's threads exist ([`shared::startup::block_on`]).
fn main() -> Result<(), Error> {
    shared::startup::block_on(serve())?
}

async fn serve() -> Result<(), Error> {
    shared::logging::init_logging();
    let state = State::from_env().map_err(|e| startup::refuse(FUNCTION, e))?;
    lambda_runtime::run(service_fn(|event: LambdaEvent<SqsEvent>| handle(&state, event))).await
}

/// Works on each message in turn (the event source delivers one at a time; the lock would
/// serialize them anyway) and reports the unfinished ones.
async fn handle(state: &State, event: LambdaEvent<SqsEvent>) -> Result<SqsBatchResponse, Error> {
    let mut response = SqsBatchResponse::default();
    for message in event.payload.records {
        let id = message.message_id.clone().unwrap_or_default();
        let owner = format!("{}/{id}", event.context.request_id);
        let deadline = Deadline::from_context(event.context.deadline, Utc::now(), FALLBACK_TIMEOUT);
        let body = message.body.as_deref().unwrap_or_default();
        let (worked, credentials_rejected) = jobs::work(
            &state.settings,
            &state.ledger,
            body,
            &owner,
            deadline,
            state.arcgis.client(&state.config),
        )
        .await;
        if credentials_rejected {
            tracing::warn!("ArcGIS rejected the credentials: the secret will be read again on the next attempt");
            state.arcgis.forget_credentials();
        }
        match worked {
            Worked::Finished { job_id, outcome } => {
                tracing::info!(job_id, outcome, message_id = id, "allocation job finished");
            }
            Worked::Retry { job_id, reason } => {
                tracing::warn!(
                    job_id,
                    reason,
                    message_id = id,
                    "allocation job left for another delivery"
                );
                let mut failure = BatchItemFailure::default();
                failure.item_identifier = id;
                response.batch_item_failures.push(failure);
            }
        }
    }
    Ok(response)
}
