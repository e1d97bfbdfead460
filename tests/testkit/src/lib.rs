//! testkit: the real local servers credit-steward's tests, benchmarks and demo run against.
//!
//! - [`moto`]: one `moto_server` per process (Secrets Manager, DynamoDB, S3 emulator).
//! - [`lambda`]: the Lambda Runtime API emulator (`cargo lambda watch --only-lambda-apis`)
//!   and function processes: the real `bootstrap` binaries, each with its own environment.
//! - [`fixtures`]: the AWS-shaped events in `tests/fixtures/`.
//! - [`env`]: the loopback-only AWS environment every child process gets.
//!
//! Everything binds 127.0.0.1 on free ports and is stopped when its handle drops (or, for the
//! per-process moto, when the test process exits).

pub mod env;
pub mod fixtures;
pub mod lambda;
pub mod moto;
pub mod net;
