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
    /// Fault only writes whose body contains this text (an item's key, `"cert#"`); `None`: any body.
    pub body_contains: Option<String>,
    /// At most this many faults more (each one injected counts it down); `None`: no limit.
    pub budget: Option<u64>,
    pub slow: Option<Slow>,
    /// Ask every call for its consumed capacity and count it ([`Stats::metered`]).
    pub meter: bool,
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
            body_contains: None,
            budget: None,
            slow: None,
            meter: false,
        }
    }

    /// With the metering mode on.
    pub fn metered(mut self) -> Self {
        self.meter = true;
        self
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

    /// Faults only on writes whose body contains `text`.
    pub fn matching(mut self, text: &str) -> Self {
        self.body_contains = Some(text.to_owned());
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

    fn faults(&self, operation: &str, tables: &BTreeSet<String>, body: &[u8]) -> bool {
        // Writes, or the operations named (a read such as `Scan` only when named).
        self.operations
            .as_ref()
            .map_or(WRITE_OPERATIONS.contains(&operation), |ops| {
                ops.contains(operation)
            })
            && self
                .body_contains
                .as_ref()
                .is_none_or(|text| contains(body, text))
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
    /// Metering mode: what each operation consumed.
    pub metered: BTreeMap<String, Metered>,
    /// Metering mode: WRU per item (`(table, key as JSON)`), for items written by key (see [`Metered`]).
    pub item_units: BTreeMap<(String, String), f64>,
}

/// What the calls of one operation consumed, as DynamoDB bills it.
///
/// Units of single-item calls, queries and scans are DynamoDB Local's figures (`ConsumedCapacity`, sized
/// from the items as DynamoDB sizes them): a call's `WriteCapacityUnits` and `ReadCapacityUnits` where the
/// answer splits them, else its `CapacityUnits` as write units for a write operation and read units for a
/// read. DynamoDB Local reports an empty `Query` or `Scan` as 0 units.
///
/// Transactions are sized by the meter itself: DynamoDB Local reports one item's units per table however
/// many items a transaction has there (2 for one small item, 2 for three). DynamoDB bills every item of a
/// transaction twice: a write by the larger of the item's sizes before and after, per started KB (a
/// condition check by the item's size), a read per started 4 KB. So the meter reads each item of a
/// transaction before forwarding it and after (calls of its own, not counted), computes its size by
/// DynamoDB's rules ([`item_size`]) and charges `2 × max(1, ⌈size / unit⌉)` per action. Exact for calls one
/// after the other; under concurrency another client's write between those reads can shift a figure.
/// `tests/suite/cost.rs` holds the meter to known calls.
///
/// A refused write (a failed condition, a cancelled transaction) is billed too, but its answer carries no
/// figure: it is counted in `refused` and charged the floor, 1 WRU per item (2 per action of a
/// transaction).
///
/// Per item: a write's units go to its key (`PutItem` has no key in its request, so its units count in the
/// totals only).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Metered {
    pub calls: u64,
    /// Items the calls wrote (an action of a transaction or a batch is one), condition checks included.
    pub items: u64,
    pub wru: f64,
    pub rru: f64,
    /// Writes refused by DynamoDB (charged the floor, see above).
    pub refused: u64,
}

impl Metered {
    fn add(&mut self, other: &Metered) {
        self.calls += other.calls;
        self.items += other.items;
        self.wru += other.wru;
        self.rru += other.rru;
        self.refused += other.refused;
    }
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

    /// Metering mode: everything, all operations together.
    pub fn metered_total(&self) -> Metered {
        let mut total = Metered::default();
        for m in self.metered.values() {
            total.add(m);
        }
        total
    }

    /// Metering mode: the item that took the most WRU, and how many.
    pub fn hottest_item(&self) -> Option<((String, String), f64)> {
        self.item_units
            .iter()
            .max_by(|a, b| a.1.total_cmp(b.1))
            .map(|(k, v)| (k.clone(), *v))
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

fn contains(body: &[u8], text: &str) -> bool {
    text.is_empty() || body.windows(text.len()).any(|w| w == text.as_bytes())
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

/// Write operations, whose `CapacityUnits` are write units.
fn is_write(operation: &str) -> bool {
    WRITE_OPERATIONS.contains(&operation)
}

/// An item (`(table, key as JSON)`) and the WRU a call spent on it.
pub type ItemUnits = ((String, String), f64);

/// A key as JSON with its attributes in name order, whatever order the request gave them in.
pub fn canonical(key: &Value) -> String {
    match key.as_object() {
        Some(fields) => {
            let sorted: BTreeMap<&String, &Value> = fields.iter().collect();
            serde_json::to_string(&sorted).unwrap_or_default()
        }
        None => key.to_string(),
    }
}

/// An item's size as DynamoDB counts it (DynamoDB JSON): attribute names plus values; a number about one
/// byte per two digits plus one, a map or list 3 bytes plus one per element.
pub fn item_size(item: &Value) -> usize {
    fn value(v: &Value) -> usize {
        let Some((kind, inner)) = v.as_object().and_then(|o| o.iter().next()) else {
            return 0;
        };
        match kind.as_str() {
            "S" | "B" => inner.as_str().map_or(0, str::len),
            "N" => {
                let digits = inner.as_str().map_or(0, |n| {
                    n.trim_start_matches('-')
                        .trim_start_matches('0')
                        .replace('.', "")
                        .len()
                });
                digits.div_ceil(2) + 1
            }
            "BOOL" | "NULL" => 1,
            "M" => {
                3 + inner
                    .as_object()
                    .map_or(0, |m| m.iter().map(|(k, v)| k.len() + value(v) + 1).sum())
            }
            "L" => {
                3 + inner
                    .as_array()
                    .map_or(0, |l| l.iter().map(|v| value(v) + 1).sum())
            }
            "SS" | "BS" => inner.as_array().map_or(0, |l| {
                l.iter().filter_map(Value::as_str).map(str::len).sum()
            }),
            "NS" => inner.as_array().map_or(0, |l| {
                l.iter()
                    .filter_map(Value::as_str)
                    .map(|n| n.len().div_ceil(2) + 1)
                    .sum()
            }),
            _ => 0,
        }
    }
    item.as_object()
        .map_or(0, |o| o.iter().map(|(k, v)| k.len() + value(v)).sum())
}

/// Per action of a transaction, the size of its item: as stored now (`answer` `None`: before the call), or
/// after it (`Put`: the item put; `Delete`: none; `TransactGetItems`: the item returned).
async fn action_sizes(
    shared: &Shared,
    headers: &HeaderMap,
    request: &Value,
    answer: Option<&Value>,
) -> Vec<usize> {
    let mut sizes = Vec::new();
    let actions = request["TransactItems"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    for (i, action) in actions.iter().enumerate() {
        let Some((kind, inner)) = action.as_object().and_then(|a| a.iter().next()) else {
            sizes.push(0);
            continue;
        };
        let table = inner["TableName"].as_str().unwrap_or_default();
        let size = match (kind.as_str(), answer) {
            ("Get", Some(answer)) => item_size(&answer["Responses"][i]["Item"]),
            ("Put", Some(_)) => item_size(&inner["Item"]),
            ("Delete", Some(_)) => 0,
            _ => {
                let key = match inner.get("Key") {
                    Some(key) => key.clone(),
                    None => key_of(shared, headers, table, &inner["Item"]).await,
                };
                let got = upstream_call(
                    shared,
                    headers,
                    "GetItem",
                    serde_json::json!({"TableName": table, "Key": key, "ConsistentRead": true}),
                )
                .await;
                item_size(&got["Item"])
            }
        };
        sizes.push(size);
    }
    sizes
}

/// The key of `item` in `table` (its key attributes from `DescribeTable`, asked once per table).
async fn key_of(shared: &Shared, headers: &HeaderMap, table: &str, item: &Value) -> Value {
    let known = shared.key_schemas.lock().unwrap().get(table).cloned();
    let names = match known {
        Some(names) => names,
        None => {
            let described = upstream_call(
                shared,
                headers,
                "DescribeTable",
                serde_json::json!({"TableName": table}),
            )
            .await;
            let names: Vec<String> = described["Table"]["KeySchema"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(|k| k["AttributeName"].as_str().map(str::to_owned))
                .collect();
            shared
                .key_schemas
                .lock()
                .unwrap()
                .insert(table.to_owned(), names.clone());
            names
        }
    };
    Value::Object(
        names
            .into_iter()
            .filter_map(|n| Some((n.clone(), item.get(&n)?.clone())))
            .collect(),
    )
}

/// A call of the meter's own, straight to DynamoDB (not counted), with the caller's credentials headers.
async fn upstream_call(
    shared: &Shared,
    headers: &HeaderMap,
    operation: &str,
    body: Value,
) -> Value {
    let mut call = shared.client.post(format!("{}/", shared.upstream));
    for (name, value) in headers {
        if passes(name) && name.as_str() != "x-amz-target" {
            call = call.header(name, value);
        }
    }
    let answer = call
        .header("x-amz-target", format!("DynamoDB_20120810.{operation}"))
        .body(body.to_string())
        .send()
        .await;
    match answer {
        Ok(answer) => answer.json().await.unwrap_or(Value::Null),
        Err(_) => Value::Null,
    }
}

/// A transaction's units per action, as DynamoDB bills it: twice the units of one item, a write by the
/// larger of its sizes before and after per started KB (at least 1), a read per started 4 KB.
fn transaction_units(operation: &str, before: &[usize], after: &[usize]) -> Vec<f64> {
    let per = if operation == "TransactGetItems" {
        4096
    } else {
        1024
    };
    before
        .iter()
        .zip(after)
        .map(|(b, a)| 2.0 * (*b.max(a)).div_ceil(per).max(1) as f64)
        .collect()
}

/// What one call consumed (see [`Metered`]), and the WRU per item written by key. `transaction`: a
/// transaction's units per action, computed by the meter (DynamoDB Local's own figure is wrong).
pub fn metered_of(
    operation: &str,
    request: &Value,
    answer: &Value,
    succeeded: bool,
    transaction: Option<&[f64]>,
) -> (Metered, Vec<ItemUnits>) {
    let write = is_write(operation);
    // (table, key) of each item the call writes; key `None` for a `PutItem` (not known here).
    let mut targets: Vec<(String, Option<String>)> = Vec::new();
    let mut floor = 0.0;
    match operation {
        "PutItem" | "UpdateItem" | "DeleteItem" => {
            if let Some(table) = request["TableName"].as_str() {
                targets.push((table.to_owned(), request.get("Key").map(canonical)));
            }
            floor = 1.0;
        }
        "TransactWriteItems" => {
            for action in request["TransactItems"].as_array().into_iter().flatten() {
                if let Some(inner) = action.as_object().and_then(|a| a.values().next())
                    && let Some(table) = inner["TableName"].as_str()
                {
                    targets.push((table.to_owned(), inner.get("Key").map(canonical)));
                    floor += 2.0;
                }
            }
        }
        "BatchWriteItem" => {
            for (table, writes) in request["RequestItems"].as_object().into_iter().flatten() {
                for _ in writes.as_array().into_iter().flatten() {
                    targets.push((table.clone(), None));
                    floor += 1.0;
                }
            }
        }
        _ => {}
    }
    let mut metered = Metered {
        calls: 1,
        items: targets.len() as u64,
        ..Metered::default()
    };
    let mut items = Vec::new();
    if let Some(units) = transaction {
        // The meter's own figures, one per action.
        let total: f64 = units.iter().sum();
        if write {
            metered.wru = total;
            for ((table, key), units) in targets.iter().zip(units) {
                if let Some(key) = key {
                    items.push(((table.clone(), key.clone()), *units));
                }
            }
        } else {
            metered.rru = total;
        }
        return (metered, items);
    }
    // Units per table, from DynamoDB's answer: one object, or a list (batches).
    let mut by_table: BTreeMap<String, f64> = BTreeMap::new();
    let consumed = match &answer["ConsumedCapacity"] {
        Value::Array(list) => list.clone(),
        Value::Null => Vec::new(),
        one => vec![one.clone()],
    };
    for c in &consumed {
        let units = |name: &str| c[name].as_f64();
        let total = units("CapacityUnits").unwrap_or(0.0);
        let (w, r) = match (units("WriteCapacityUnits"), units("ReadCapacityUnits")) {
            (None, None) if write => (total, 0.0),
            (None, None) => (0.0, total),
            (w, r) => (w.unwrap_or(0.0), r.unwrap_or(0.0)),
        };
        metered.wru += w;
        metered.rru += r;
        // The table's own share (indexes apart) is what its items cost.
        let table_w = c["Table"]["WriteCapacityUnits"]
            .as_f64()
            .or_else(|| c["Table"]["CapacityUnits"].as_f64().filter(|_| write))
            .unwrap_or(w);
        if let Some(table) = c["TableName"].as_str() {
            *by_table.entry(table.to_owned()).or_default() += table_w;
        }
    }
    let refused = answer["__type"].as_str().is_some_and(|t| {
        t.ends_with("ConditionalCheckFailedException")
            || t.ends_with("TransactionCanceledException")
    });
    if write && !succeeded && refused && consumed.is_empty() {
        metered.refused = 1;
        metered.wru += floor;
        let per = if operation == "TransactWriteItems" {
            2.0
        } else {
            1.0
        };
        for (table, key) in &targets {
            if let Some(key) = key {
                items.push(((table.clone(), key.clone()), per));
            }
        }
        return (metered, items);
    }
    for (table, key) in &targets {
        let on_table = targets.iter().filter(|(t, _)| t == table).count() as f64;
        if let Some(key) = key {
            let units = by_table.get(table).copied().unwrap_or(0.0) / on_table;
            items.push(((table.clone(), key.clone()), units));
        }
    }
    (metered, items)
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
    let (fault, slow, meter) = {
        let mut guard = shared.config.lock().unwrap();
        let (config, rng) = &mut *guard;
        let meter = config.meter;
        let fault = if config.faults(&operation, &tables, &body) {
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
                s.body_contains
                    .as_ref()
                    .is_none_or(|text| contains(&body, text))
            })
            .map(|s| s.delay);
        (fault, slow, meter)
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

    // Metering: the request as sent (to read its keys) and whether the caller asked for the capacity.
    let mut metering = None;
    let mut body = body;
    if meter && let Ok(mut request) = serde_json::from_slice::<Value>(&body) {
        let asked = request["ReturnConsumedCapacity"]
            .as_str()
            .is_some_and(|v| v != "NONE");
        if !asked && request.is_object() {
            request["ReturnConsumedCapacity"] = Value::from("INDEXES");
            body = Bytes::from(request.to_string());
        }
        metering = Some((request, asked));
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
    // Metering a transaction: DynamoDB Local's figure for one is wrong (one item's units per table, however
    // many items), so the meter sizes each item before and after, as DynamoDB bills it (see `Metered`).
    let transaction = meter
        && matches!(
            operation.as_str(),
            "TransactWriteItems" | "TransactGetItems"
        );
    let before = match (&metering, transaction) {
        (Some((request, _)), true) => {
            Some(action_sizes(&shared, &parts.headers, request, None).await)
        }
        _ => None,
    };
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
    let mut bytes = bytes;
    let mut rewritten = false;
    if let Some((request, asked)) = metering {
        let mut answer = serde_json::from_slice::<Value>(&bytes).unwrap_or(Value::Null);
        let units = match before {
            Some(before) if status.is_success() => {
                let after = action_sizes(&shared, &parts.headers, &request, Some(&answer)).await;
                Some(transaction_units(&operation, &before, &after))
            }
            _ => None,
        };
        let (metered, items) = metered_of(
            &operation,
            &request,
            &answer,
            status.is_success(),
            units.as_deref(),
        );
        {
            let mut stats = shared.stats.lock().unwrap();
            stats
                .metered
                .entry(operation.clone())
                .or_default()
                .add(&metered);
            for (item, units) in items {
                *stats.item_units.entry(item).or_default() += units;
            }
        }
        if !asked
            && let Some(fields) = answer.as_object_mut()
            && fields.remove("ConsumedCapacity").is_some()
        {
            bytes = Bytes::from(answer.to_string());
            rewritten = true;
        }
    }
    let delay = shared.config.lock().unwrap().0.delay;
    let mut response = Response::builder().status(status);
    for (name, value) in &headers {
        // A rewritten body no longer matches DynamoDB's checksum of it.
        if passes(name) && !(rewritten && name.as_str() == "x-amz-crc32") {
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
