//! testkit: the real local servers credit-steward's tests, benchmarks and demo run against.
//!
//! - [`apigw`]: an HTTP API in front of the allocate function that checks SigV4 signatures,
//!   as API Gateway's IAM authorizer does.
//! - [`arcgis`]: a generated org in portal-sim and an administrator's client for it.
//! - [`moto`]: one `moto_server` per process (Secrets Manager, DynamoDB, S3 emulator).
//! - [`lambda`]: the Lambda Runtime API emulator (`cargo lambda watch --only-lambda-apis`)
//!   and function processes: the real `bootstrap` binaries, each with its own environment.
//! - [`proxy`]: a Runtime API proxy that gives a function process's invocations a real
//!   deadline (`lambda-runtime-deadline-ms` = now + its timeout), as Lambda does.
//! - [`latency`]: a forwarding proxy adding a fixed delay per request (DynamoDB in benchmarks).
//! - [`receiver`]: a webhook receiver recording what the alert channels send.
//! - [`fixtures`]: the AWS-shaped events in `tests/fixtures/`.
//! - [`env`]: the loopback-only AWS environment every child process gets.
//!
//! Everything binds 127.0.0.1 on free ports and is stopped when its handle drops (or, for the
//! per-process moto, when the test process exits).

pub mod apigw;
pub mod arcgis;
pub mod env;
pub mod fixtures;
mod forward;
pub mod lambda;
pub mod latency;
pub mod moto;
pub mod net;
pub mod proxy;
pub mod receiver;
