//! allocate: `POST /allocations` behind API Gateway (HTTP API, payload v2).
//!
//! Thin by design, as in the Lambda runtime's own examples: the settings, the secret cache and
//! the ledger are built once per cold start and fail fast with every problem listed; each
//! invocation is translated by [`handler`] into `shared::allocate` and back.

mod handler;

use lambda_http::{Error, run, service_fn};
use shared::startup;

/// The allocator is bounded before the runtime's threads exist ([`shared::startup::block_on`]).
fn main() -> Result<(), Error> {
    shared::startup::block_on(serve())?
}

async fn serve() -> Result<(), Error> {
    shared::logging::init_logging();
    let state = handler::State::from_env().map_err(|e| startup::refuse("allocate", e))?;
    run(service_fn(|request| handler::handle(&state, request))).await
}
