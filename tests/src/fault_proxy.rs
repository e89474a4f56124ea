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
//! A slow mode (for deadline tests) adds a delay before forwarding any request, or those of one operation,
//! or those of one operation whose body contains a given text.
//! The configuration can be replaced at any time ([`FaultProxy::set`]), and [`FaultProxy::stats`] counts
//! requests per operation and table, writes per item (every write addressed by its key: `UpdateItem`,
//! `DeleteItem` and those actions of `TransactWriteItems`), write units (DynamoDB's rule for items up to
//! 1 KB: 1 per standard write, 2 per action of a transaction, condition checks included; refused and
//! cancelled writes are charged too) and the faults injected, per kind and per operation.

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

/// The faults the proxy injects.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum FaultKind {
    AppliedThenDelayed,
    AppliedThen500,
    Before500,
    Throttle,
    ResetMidAnswer,
}

impl FaultKind {
    pub const ALL: [FaultKind; 5] = [
        FaultKind::AppliedThenDelayed,
        FaultKind::AppliedThen500,
        FaultKind::Before500,
        FaultKind::Throttle,
        FaultKind::ResetMidAnswer,
    ];

    pub fn name(self) -> &'static str {
        match self {
            FaultKind::AppliedThenDelayed => "applied_then_delayed",
            FaultKind::AppliedThen500 => "applied_then_500",
            FaultKind::Before500 => "before_500",
            FaultKind::Throttle => "throttle",
            FaultKind::ResetMidAnswer => "reset_mid_answer",
        }
    }

    pub fn parse(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|k| k.name() == name)
    }

    /// Whether the write reaches DynamoDB.
    pub fn forwards(self) -> bool {
        !matches!(self, FaultKind::Before500 | FaultKind::Throttle)
    }
}

impl std::fmt::Display for FaultKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// The operations that are faulted.
pub const WRITE_OPERATIONS: [&str; 5] = [
    "PutItem",
    "UpdateItem",
    "DeleteItem",
    "TransactWriteItems",
    "BatchWriteItem",
];

/// Extra latency before forwarding.
#[derive(Debug, Clone)]
pub struct Slow {
    pub delay: Duration,
    /// Only requests of this operation (`GetItem`, ...); `None`: every request.
    pub operation: Option<String>,
    /// Only requests whose body contains this text (an expression's placeholder, `":committed"`, picks one
    /// kind of write among the `TransactWriteItems`); `None`: any body.
    pub body_contains: Option<String>,
}

/// What the proxy does; replaceable at runtime.
#[derive(Debug, Clone)]
pub struct FaultConfig {
    /// Per kind, the fraction of (matching) writes that get it. Kinds missing are off. If the rates add up
    /// past 1, every write is faulted and the later kinds get what is left.
    pub rates: BTreeMap<FaultKind, f64>,
    /// How long [`FaultKind::AppliedThenDelayed`] holds the answer.
    pub delay: Duration,
    /// Fault only these operations (`None`: every write operation); a read is faulted only when named.
    pub operations: Option<BTreeSet<String>>,
    /// Fault only writes that touch one of these tables (`None`: writes to any table).
    pub tables: Option<BTreeSet<String>>,
    /// At most this many faults more (each one injected counts it down); `None`: no limit.
    pub budget: Option<u64>,
    pub slow: Option<Slow>,
}

impl Default for FaultConfig {
    fn default() -> Self {
        Self::healthy()
    }
}

impl FaultConfig {
    /// Forward everything untouched.
    pub fn healthy() -> Self {
        Self {
            rates: BTreeMap::new(),
            delay: Duration::from_millis(3500),
            operations: None,
            tables: None,
            budget: None,
            slow: None,
        }
    }

    /// One kind at `rate`.
    pub fn only(kind: FaultKind, rate: f64) -> Self {
        Self::split(rate, &[kind])
    }

    /// `total` split evenly across `kinds`.
    pub fn split(total: f64, kinds: &[FaultKind]) -> Self {
        let mut config = Self::healthy();
        if !kinds.is_empty() {
            let each = total / kinds.len() as f64;
            config.rates = kinds.iter().map(|k| (*k, each)).collect();
        }
        config
    }

    /// Faults only on these operations.
    pub fn on(mut self, operations: &[&str]) -> Self {
        self.operations = Some(operations.iter().map(|o| o.to_string()).collect());
        self
    }

    /// Faults only on writes that touch one of these tables.
    pub fn on_tables(mut self, tables: &[&str]) -> Self {
        self.tables = Some(tables.iter().map(|t| t.to_string()).collect());
        self
    }

    /// At most `n` faults, then healthy.
    pub fn at_most(mut self, n: u64) -> Self {
        self.budget = Some(n);
        self
    }

    pub fn with_delay(mut self, delay: Duration) -> Self {
        self.delay = delay;
        self
    }

    pub fn with_slow(mut self, delay: Duration, operation: Option<&str>) -> Self {
        self.slow = Some(Slow {
            delay,
            operation: operation.map(str::to_owned),
            body_contains: None,
        });
        self
    }

    /// Slow mode for the requests of `operation` whose body contains `text` only.
    pub fn with_slow_matching(mut self, delay: Duration, operation: &str, text: &str) -> Self {
        self.slow = Some(Slow {
            delay,
            operation: Some(operation.to_owned()),
            body_contains: Some(text.to_owned()),
        });
        self
    }

    /// The sum of the rates.
    pub fn total_rate(&self) -> f64 {
        self.rates.values().sum()
    }

    fn faults(&self, operation: &str, tables: &BTreeSet<String>) -> bool {
        // Writes, or the operations named (a read such as `Scan` only when named).
        self.operations
            .as_ref()
            .map_or(WRITE_OPERATIONS.contains(&operation), |ops| {
                ops.contains(operation)
            })
            && self
                .tables
                .as_ref()
                .is_none_or(|only| tables.iter().any(|t| only.contains(t)))
            && self.total_rate() > 0.0
            && self.budget != Some(0)
    }

    /// The kind for a draw `u` in `0..1`, if any.
    fn pick(&self, u: f64) -> Option<FaultKind> {
        let mut upto = 0.0;
        for (kind, rate) in &self.rates {
            upto += rate.max(0.0);
            if u < upto {
                return Some(*kind);
            }
        }
        None
    }
}

/// What went through the proxy.
#[derive(Debug, Clone, Default)]
pub struct Stats {
    /// Requests per operation.
    pub by_operation: BTreeMap<String, u64>,
    /// Requests per (operation, table); a request touching several tables counts once for each.
    pub by_table: BTreeMap<(String, String), u64>,
    pub faults: BTreeMap<FaultKind, u64>,
    pub faults_by_operation: BTreeMap<(FaultKind, String), u64>,
    /// Writes per item: `(table, key as JSON)` → writes addressed to it.
    pub by_item: BTreeMap<(String, String), u64>,
    /// Write units the requests cost, by DynamoDB's rule for items up to 1 KB.
    pub write_units: u64,
    /// Requests delayed by the slow mode.
    pub slowed: u64,
    /// Forwarded requests whose upstream call failed (answered `502`).
    pub upstream_errors: u64,
}

impl Stats {
    pub fn requests(&self, operation: &str) -> u64 {
        self.by_operation.get(operation).copied().unwrap_or(0)
    }

    pub fn requests_on(&self, operation: &str, table: &str) -> u64 {
        self.by_table
            .get(&(operation.to_owned(), table.to_owned()))
            .copied()
            .unwrap_or(0)
    }

    /// Writes to the item of `table` whose key is `key` (`{"key": {"S": "hot"}}`).
    pub fn writes_to(&self, table: &str, key: &Value) -> u64 {
        self.by_item
            .get(&(table.to_owned(), key.to_string()))
            .copied()
            .unwrap_or(0)
    }

    pub fn faults_of(&self, kind: FaultKind) -> u64 {
        self.faults.get(&kind).copied().unwrap_or(0)
    }

    pub fn total_faults(&self) -> u64 {
        self.faults.values().sum()
    }

    pub fn total_requests(&self) -> u64 {
        self.by_operation.values().sum()
    }
}

impl std::fmt::Display for Stats {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let ops: Vec<String> = self
            .by_operation
            .iter()
            .map(|(op, n)| format!("{op} {n}"))
            .collect();
        writeln!(
            f,
            "DynamoDB requests {} ({})",
            self.total_requests(),
            ops.join(", ")
        )?;
        let faults: Vec<String> = FaultKind::ALL
            .iter()
            .map(|k| format!("{k} {}", self.faults_of(*k)))
            .collect();
        write!(
            f,
            "faults injected  {} ({})",
            self.total_faults(),
            faults.join(", ")
        )?;
        if self.slowed > 0 {
            write!(f, "; {} slowed", self.slowed)?;
        }
        if self.upstream_errors > 0 {
            write!(f, "; {} upstream errors", self.upstream_errors)?;
        }
        Ok(())
    }
}

struct Shared {
    upstream: String,
    client: reqwest::Client,
    /// The configuration and the generator, under one lock: each write takes one draw, in arrival order.
    config: Mutex<(FaultConfig, Rng)>,
    stats: Mutex<Stats>,
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

/// `DynamoDB_20120810.PutItem` → `PutItem`.
pub fn operation_of(headers: &HeaderMap) -> String {
    headers
        .get("x-amz-target")
        .and_then(|v| v.to_str().ok())
        .map(|t| t.rsplit('.').next().unwrap_or(t).to_owned())
        .unwrap_or_default()
}

/// The tables a request body names, each once.
pub fn tables_of(body: &[u8]) -> BTreeSet<String> {
    let mut tables = BTreeSet::new();
    let Ok(v) = serde_json::from_slice::<Value>(body) else {
        return tables;
    };
    if let Some(t) = v["TableName"].as_str() {
        tables.insert(t.to_owned());
    }
    for item in v["TransactItems"].as_array().into_iter().flatten() {
        if let Some(action) = item.as_object() {
            for inner in action.values() {
                if let Some(t) = inner["TableName"].as_str() {
                    tables.insert(t.to_owned());
                }
            }
        }
    }
    if let Some(items) = v["RequestItems"].as_object() {
        tables.extend(items.keys().cloned());
    }
    tables
}

/// The items a write request addresses by key (`UpdateItem`, `DeleteItem`, and the `Update` and `Delete`
/// actions of `TransactWriteItems`), as `(table, key as JSON)`, and the write units it costs.
pub fn writes_of(operation: &str, body: &[u8]) -> (Vec<(String, String)>, u64) {
    let Ok(v) = serde_json::from_slice::<Value>(body) else {
        return (Vec::new(), 0);
    };
    let keyed = |request: &Value| {
        Some((
            request["TableName"].as_str()?.to_owned(),
            request.get("Key")?.to_string(),
        ))
    };
    match operation {
        "UpdateItem" | "DeleteItem" => (keyed(&v).into_iter().collect(), 1),
        "PutItem" => (Vec::new(), 1),
        "BatchWriteItem" => {
            let units = v["RequestItems"]
                .as_object()
                .map(|tables| {
                    tables
                        .values()
                        .filter_map(Value::as_array)
                        .map(Vec::len)
                        .sum()
                })
                .unwrap_or(0);
            (Vec::new(), units as u64)
        }
        "TransactWriteItems" => {
            let actions = v["TransactItems"].as_array().cloned().unwrap_or_default();
            let items = actions
                .iter()
                .filter_map(|a| keyed(a.get("Update").or_else(|| a.get("Delete"))?))
                .collect();
            (items, 2 * actions.len() as u64)
        }
        _ => (Vec::new(), 0),
    }
}

fn error_answer(status: StatusCode, kind: &str, message: &str) -> Response {
    let body = serde_json::json!({
        "__type": format!("com.amazonaws.dynamodb.v20120810#{kind}"),
        "message": message,
    });
    Response::builder()
        .status(status)
        .header("content-type", "application/x-amz-json-1.0")
        .body(Body::from(body.to_string()))
        .expect("a valid response")
}

fn injected_500(message: &str) -> Response {
    error_answer(
        StatusCode::INTERNAL_SERVER_ERROR,
        "InternalServerError",
        message,
    )
}

/// Hop-by-hop and framing headers, which each side of the proxy sets for itself.
fn passes(name: &HeaderName) -> bool {
    !matches!(
        name.as_str(),
        "host" | "connection" | "content-length" | "transfer-encoding" | "keep-alive" | "upgrade"
    )
}

async fn forward(State(shared): State<Arc<Shared>>, request: Request<Body>) -> Response {
    let (parts, body) = request.into_parts();
    let Ok(body) = axum::body::to_bytes(body, 64 * 1024 * 1024).await else {
        return error_answer(StatusCode::BAD_REQUEST, "SerializationException", "body");
    };
    let operation = operation_of(&parts.headers);
    let tables = tables_of(&body);
    let (fault, slow) = {
        let mut guard = shared.config.lock().unwrap();
        let (config, rng) = &mut *guard;
        let fault = if config.faults(&operation, &tables) {
            // 53 random bits: a uniform draw in 0..1.
            let u = (rng.next_u64() >> 11) as f64 / (1u64 << 53) as f64;
            let kind = config.pick(u);
            if let (Some(_), Some(budget)) = (kind, config.budget.as_mut()) {
                *budget -= 1;
            }
            kind
        } else {
            None
        };
        let slow = config
            .slow
            .as_ref()
            .filter(|s| s.operation.as_ref().is_none_or(|o| *o == operation))
            .filter(|s| {
                s.body_contains.as_ref().is_none_or(|text| {
                    text.is_empty() || body.windows(text.len()).any(|w| w == text.as_bytes())
                })
            })
            .map(|s| s.delay);
        (fault, slow)
    };
    let (items, units) = writes_of(&operation, &body);
    {
        let mut stats = shared.stats.lock().unwrap();
        *stats.by_operation.entry(operation.clone()).or_default() += 1;
        for item in items {
            *stats.by_item.entry(item).or_default() += 1;
        }
        stats.write_units += units;
        for table in &tables {
            *stats
                .by_table
                .entry((operation.clone(), table.clone()))
                .or_default() += 1;
        }
        if let Some(kind) = fault {
            *stats.faults.entry(kind).or_default() += 1;
            *stats
                .faults_by_operation
                .entry((kind, operation.clone()))
                .or_default() += 1;
        }
        if slow.is_some() {
            stats.slowed += 1;
        }
    }
    if let Some(delay) = slow {
        tokio::time::sleep(delay).await;
    }
    match fault {
        Some(FaultKind::Before500) => return injected_500("injected: before 500"),
        Some(FaultKind::Throttle) => {
            return error_answer(
                StatusCode::BAD_REQUEST,
                "ThrottlingException",
                "injected throttle",
            );
        }
        _ => {}
    }

    let uri = parts
        .uri
        .path_and_query()
        .map(|p| p.as_str())
        .unwrap_or("/");
    let mut upstream = shared
        .client
        .request(parts.method.clone(), format!("{}{uri}", shared.upstream));
    for (name, value) in &parts.headers {
        if passes(name) {
            upstream = upstream.header(name, value);
        }
    }
    let answer = match upstream.body(body).send().await {
        Ok(answer) => answer,
        Err(e) => {
            shared.stats.lock().unwrap().upstream_errors += 1;
            return Response::builder()
                .status(StatusCode::BAD_GATEWAY)
                .body(Body::from(format!("upstream: {e}")))
                .unwrap();
        }
    };
    let status = answer.status();
    let headers = answer.headers().clone();
    let Ok(bytes) = answer.bytes().await else {
        shared.stats.lock().unwrap().upstream_errors += 1;
        return Response::builder()
            .status(StatusCode::BAD_GATEWAY)
            .body(Body::from("upstream body"))
            .unwrap();
    };
    let delay = shared.config.lock().unwrap().0.delay;
    let mut response = Response::builder().status(status);
    for (name, value) in &headers {
        if passes(name) {
            response = response.header(name, value);
        }
    }
    match fault {
        Some(FaultKind::AppliedThen500) => injected_500("injected: applied then 500"),
        Some(FaultKind::AppliedThenDelayed) => {
            tokio::time::sleep(delay).await;
            response.body(Body::from(bytes)).unwrap()
        }
        Some(FaultKind::ResetMidAnswer) => {
            let len = bytes.len();
            let half = bytes.slice(..len / 2);
            // The first half, a pause (hyper flushes what it has while the body is pending), then an error:
            // hyper closes the connection short of the announced length.
            let stream = futures_util::stream::unfold(0u8, move |step| {
                let half = half.clone();
                async move {
                    match step {
                        0 => Some((Ok::<Bytes, std::io::Error>(half), 1)),
                        1 => {
                            tokio::time::sleep(Duration::from_millis(50)).await;
                            Some((Err(std::io::Error::other("injected reset")), 2))
                        }
                        _ => None,
                    }
                }
            });
            response
                .header(
                    http::header::CONTENT_LENGTH,
                    HeaderValue::from(len.max(1) as u64),
                )
                .body(Body::from_stream(stream))
                .unwrap()
        }
        _ => response.body(Body::from(bytes)).unwrap(),
    }
}
