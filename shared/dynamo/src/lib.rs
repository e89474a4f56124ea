//! strata's DynamoDB backend: the store ports on DynamoDB, with conditional writes and transactions.
//!
//! # Layout
//!
//! - [`config`]: the client (built once per process, with bounded retries and timeouts; `AWS_ENDPOINT_URL`
//!   points it at DynamoDB Local or LocalStack) and the table names, which the template passes in
//!   environment variables.
//! - [`error`]: SDK errors mapped to domain errors: throttling is `429`, outages `503` (both retryable), a
//!   failed condition is told apart so callers can turn it into the right domain answer.
//! - [`send`]: every call inside the request's deadline; writes that must not apply twice sent without
//!   blind retries.
//! - [`history`]: the tokens of an item's last writes, so a write whose answer was lost can tell whether
//!   it applied.
//! - [`kv`]: the key/value port: one `GetItem` or one `UpdateItem` per operation.
//! - [`ledger`]: stock certificates: the share-class item serializes numbering; four writes per issue,
//!   two of them (1 WRU each) on the class item. The writes are in `ledger::issue`, a keyed
//!   issue's wait for the HTTP layer's word in `ledger::settle`, the finishing of numbers whose request
//!   died in `ledger::recovery`, the items' keys and decoding in `ledger::item`.
//! - [`connections`]: WebSocket sessions' open transactions, with a TTL.
//! - [`counters`]: strong (`ADD` under a room guard) and eventual (log append only) counters; a keyed
//!   strong increment's token in the counter, and its removal once the answer is recorded, in
//!   `counters::tokens`; a keyed eventual increment's key kept by the log entry and the fold's marker.
//! - [`aggregator`]: folds the counter log into the totals exactly once: batches its stream delivers, a
//!   re-scan of the log (scheduled on AWS; in `strata serve --store dynamodb` in eventual mode, when it
//!   logged an entry and otherwise every 5 s); the markers of folded requests go to a table of their own.
//! - [`widgets`]: port-slot claims as one `TransactWriteItems` over both widgets.
//! - [`idempotency`]: `Idempotency-Key` records (claim, complete, release) with TTL.
//! - [`transfer`]: export (consistent scans; each class read with exactly its certificates) and import
//!   (puts that accept an identical existing item), for `strata export` and `import`.
//! - [`kv_tx`]: key/value transactions, kept in their own table so any instance can continue one; the
//!   commit is a single `TransactWriteItems`.

pub mod aggregator;
mod attr;
pub mod config;
pub mod connections;
pub mod counters;
pub mod error;
mod history;
pub mod idempotency;
pub mod kv;
pub mod kv_tx;
pub mod ledger;
mod send;
pub mod transfer;
pub mod widgets;

pub use attr::TTL;
pub use config::{Tables, stores, stores_from_env, stores_waking};
