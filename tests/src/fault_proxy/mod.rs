//! A fault-injecting DynamoDB endpoint: an HTTP/1.1 proxy on loopback in front of DynamoDB Local that
//! forwards every request (method, path, headers, body) and its answer, and on write operations injects the
//! faults a real DynamoDB endpoint and network produce, each at its own rate, drawn from a seeded
//! deterministic generator. Anything that takes `AWS_ENDPOINT_URL` (the local server, a Lambda binary, an
//! SDK client in a test) can be pointed at it.
//!
//! The operation comes from the `x-amz-target` header (`DynamoDB_20120810.PutItem` is `PutItem`), the
//! tables from the JSON body (`TableName`, each action's `TableName` in `TransactItems`, the keys of
//! `RequestItems`). Only writes (`PutItem`, `UpdateItem`, `DeleteItem`, `TransactWriteItems`,
//! `BatchWriteItem`) are faulted, and only those the configuration selects (by operation, by table), unless
//! the configuration names other operations (`Scan`, `Query`: a read's answer lost, or cut short); one
//! draw per selected request decides whether it is, and with which kind:
//!
//! - [`FaultKind::AppliedThenDelayed`]: forwarded, and the answer held back for [`FaultConfig::delay`]
//!   (3.5 s by default, past the SDK's 3 s attempt timeout) before it is sent: the client has given up on
//!   the attempt and retried by then, so the write reaches DynamoDB twice.
//! - [`FaultKind::AppliedThen500`]: forwarded (so it applies), the answer thrown away, `500
//!   InternalServerError` sent instead.
//! - [`FaultKind::Before500`]: not forwarded; the same `500`.
//! - [`FaultKind::Throttle`]: not forwarded; `400 ThrottlingException`.
//! - [`FaultKind::ResetMidAnswer`]: forwarded; the answer's status line and headers (with the full
//!   `content-length`) and the first half of its body are written and flushed, then the connection is
//!   closed without the rest (the body stream fails, and hyper drops the connection). The client reads a
//!   truncated body: for it the attempt failed, although the write applied.
//!
//! A metering mode ([`FaultConfig::metered`]) asks DynamoDB for the capacity every call consumed: it sets
//! `ReturnConsumedCapacity: INDEXES` on each request that does not ask for it, and takes `ConsumedCapacity`
//! back out of the answer before the caller sees it (so the caller gets the answer it asked for; a caller
//! that asked gets its own figures). [`Stats::metered`] then holds, per operation, the calls, items
//! written, WRU and RRU, and [`Stats::item_units`] the WRU per item; see [`Metered`] for how units are
//! counted.
//!
//! A slow mode (for deadline tests) adds a delay before forwarding any request, or those of one operation,
//! or those of one operation whose body contains a given text.
//! The configuration can be replaced at any time ([`FaultProxy::set`]), and [`FaultProxy::stats`] counts
//! requests per operation and table, writes per item (every write addressed by its key: `UpdateItem`,
//! `DeleteItem` and those actions of `TransactWriteItems`), write units (DynamoDB's rule for items up to
//! 1 KB: 1 per standard write, 2 per action of a transaction, condition checks included; refused and
//! cancelled writes are charged too) and the faults injected, per kind and per operation.

mod config;
mod forward;
mod metering;
mod request;
mod stats;

pub use config::{FaultConfig, FaultKind, Slow, WRITE_OPERATIONS};
pub use metering::{ItemUnits, item_size, metered_of};
pub use request::{canonical, operation_of, tables_of, writes_of};
pub use stats::{Metered, Stats};

use crate::crash::Rng;
use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::response::Response;
use http::{HeaderMap, HeaderName, HeaderValue, Request, StatusCode};
use serde_json::Value;
use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use forward::forward;

struct Shared {
    upstream: String,
    client: reqwest::Client,
    /// The configuration and the generator, under one lock: each write takes one draw, in arrival order.
    config: Mutex<(FaultConfig, Rng)>,
    stats: Mutex<Stats>,
    /// Metering: each table's key attributes, from `DescribeTable`.
    key_schemas: Mutex<BTreeMap<String, Vec<String>>>,
}

/// A running proxy; stops when dropped.
pub struct FaultProxy {
    pub url: String,
    pub addr: SocketAddr,
    shared: Arc<Shared>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for FaultProxy {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl FaultProxy {
    /// Listens on a free loopback port and forwards to `upstream` (`http://127.0.0.1:PORT`).
    pub async fn start(upstream: &str, seed: u64, config: FaultConfig) -> Self {
        Self::start_on("127.0.0.1:0".parse().unwrap(), upstream, seed, config)
            .await
            .expect("the proxy binds a loopback port")
    }

    pub async fn start_on(
        listen: SocketAddr,
        upstream: &str,
        seed: u64,
        config: FaultConfig,
    ) -> std::io::Result<Self> {
        let listener = tokio::net::TcpListener::bind(listen).await?;
        let addr = listener.local_addr()?;
        let shared = Arc::new(Shared {
            upstream: upstream.trim_end_matches('/').to_owned(),
            client: reqwest::Client::builder()
                .no_proxy()
                .build()
                .expect("an HTTP client"),
            config: Mutex::new((config, Rng::new(seed))),
            stats: Mutex::new(Stats::default()),
            key_schemas: Mutex::new(BTreeMap::new()),
        });
        let router = axum::Router::new()
            .fallback(forward)
            .with_state(shared.clone());
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, router).await;
        });
        Ok(Self {
            url: format!("http://{addr}"),
            addr,
            shared,
            task,
        })
    }

    /// Replaces the configuration (the generator goes on from where it is).
    pub fn set(&self, config: FaultConfig) {
        self.shared.config.lock().unwrap().0 = config;
    }

    pub fn config(&self) -> FaultConfig {
        self.shared.config.lock().unwrap().0.clone()
    }

    /// A copy of the counters so far.
    pub fn stats(&self) -> Stats {
        self.shared.stats.lock().unwrap().clone()
    }

    /// Zeroes the counters.
    pub fn reset_stats(&self) {
        *self.shared.stats.lock().unwrap() = Stats::default();
    }
}
