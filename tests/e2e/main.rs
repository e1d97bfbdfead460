//! End-to-end tests: the real function binaries under the Lambda Runtime API emulator, talking
//! to portal-sim and to moto (Secrets Manager, DynamoDB, S3, SNS, SQS) — all on loopback, all started here.
//! Assertions read the simulator's records and the ledger table, not just the output.

mod allocate;
mod channels;
mod cli;
mod monthly;
mod scan;
mod support;
