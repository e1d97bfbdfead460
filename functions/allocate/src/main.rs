//! allocate: `POST /allocations` behind API Gateway (HTTP API, payload v2).
//!
//! Thin by design (lambda-conventions §0): configuration, the secret cache, the ledger and the
//! allocator are built once per cold start and fail fast with every problem listed; each
//! invocation is translated by [`handler`] into `credit_core::allocate` and back.

mod handler;

use lambda_http::{Error, run, service_fn, tracing};

#[tokio::main]
async fn main() -> Result<(), Error> {
    tracing::init_default_subscriber();
    let state = handler::State::from_env().await.inspect_err(|e| {
        tracing::error!(error = %e, "allocate cannot start");
    })?;
    run(service_fn(|request| handler::handle(&state, request))).await
}
