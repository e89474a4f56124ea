//! strata's integration suite: one binary, so one DynamoDB Local serves the whole run.

// Test code: a failed `unwrap` is a failed test.
#![allow(clippy::unwrap_used)]

mod bench;
mod call;
mod callers;
mod certificates_contract;
mod certificates_faults;
mod client;
mod client_auth;
mod connect;
mod contract;
mod cost;
mod counters_contract;
mod counters_faults;
mod counters_hot_key;
mod crash_recovery;
mod deadlines;
mod dynamodb_faults;
mod e2e_kv;
mod exhaustion;
mod fault_proxy;
mod kv_contract;
mod kv_tx_commit_race;
mod kv_tx_contract;
mod lambda_events;
mod least_privilege;
mod line_protocol;
mod local_auth;
mod metrics;
mod openapi;
mod retention_dynamodb;
mod routes;
mod store_faults;
mod strangers;
mod template;
mod transfer;
mod widgets_contract;

/// The `strata` command of this very build, for end-to-end tests.
pub const STRATA: &str = env!("CARGO_BIN_EXE_strata-under-test");
