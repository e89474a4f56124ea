//! strata's integration test harness.
//!
//! # Layout
//!
//! - [`dynamodb`]: one DynamoDB Local per test run (started on first use, stopped when the run ends), or the
//!   endpoint in `AWS_ENDPOINT_URL` (LocalStack, a DynamoDB Local of your own). Each test gets its own table
//!   prefix, so tests run in parallel and never see each other's data.
//! - [`fixture`]: a [`fixture::Fixture`] is one backend (embedded in a temp dir, or DynamoDB) plus an
//!   in-process [`fixture::App`] that answers HTTP requests through the local server's router: the contract
//!   suite runs the same assertions against both, and on the embedded store once more behind the token check
//!   of `strata serve --auth-token` (every request carrying the token).
//! - [`streams`]: DynamoDB Local's streams read and turned into real `DynamoDbEvent` payloads, for the
//!   counter aggregator.
//! - [`server`]: the real `strata` binary as a child process, for end-to-end tests (kill -9, SIGTERM).
//! - [`fault_proxy`]: a fault-injecting DynamoDB endpoint in front of DynamoDB Local (lost answers, 500s,
//!   throttling, connection resets, slow calls), with counters of what went through it (requests per
//!   operation and table, writes per item, write units). Its parts: the fault plan (`config`), what a
//!   request names (`request`), forwarding (`forward`), metering (`metering`) and the counters (`stats`).
//! - [`recorder`]: an SDK interceptor that records, per function under test, the IAM actions and tables of
//!   every DynamoDB request, for the least-privilege test.
//! - [`exhaustion`]: a server's peak memory and disk use, and a well-behaved client run alongside an attack.
//! - [`crash`]: crash-recovery rounds: mixed load on all four services, `kill -9` at a random moment, restart,
//!   and every invariant of the contract checked over everything acknowledged so far. The rounds are in
//!   `crash/mod.rs`; each service's clients and their check in a file of their own (`kv`, `certificates`,
//!   `widgets`, `counters`), beside the checking HTTP client (`http`) and the report (`report`).
//! - [`sigv4`]: API Gateway's check of a SigV4 signature (`execute-api`), for the tests that play its part:
//!   `strata connect`'s WebSocket upgrade, and `strata-client`'s signed requests.
//! - [`template`]: `template.yaml`'s intrinsic functions (`!Ref`, `!GetAtt`, `!If`) read out of its YAML.
//! - [`events`]: the recorded event files of `infra/events/`, one per function.
//!
//! The tests themselves are in `tests/suite/`.

// Test code: a failed `unwrap` is a failed test, and its types are no one's API.
#![allow(clippy::unwrap_used, missing_debug_implementations)]

pub mod cost;
pub mod crash;
pub mod dynamodb;
pub mod events;
pub mod exhaustion;
pub mod fault_proxy;
pub mod fixture;
pub mod recorder;
pub mod server;
pub mod sigv4;
pub mod streams;
pub mod template;

/// The repository root.
pub fn repo_root() -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("tests/ is in the repository")
        .to_owned()
}
