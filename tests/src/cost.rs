//! The DynamoDB cost meter: each operation of the API run against DynamoDB Local through the fault proxy's
//! metering mode ([`crate::fault_proxy::FaultConfig::metered`]), with strata's own client and the local
//! server's router, as `strata serve --store dynamodb` runs them; per operation the DynamoDB calls, WRU,
//! RRU, the WRU on its hot item (the one item every such operation writes: the class, the counter, the key)
//! and the price at on-demand list prices. `dynamodb-cost` prints the table; the budget tests in
//! `tests/suite/cost.rs` hold each operation to its figures.

use crate::fault_proxy::{FaultConfig, FaultProxy, Stats};
use crate::fixture::{App, Fixture};
use axum::body::Body;
use http::{Method, Request};
use serde_json::{Value, json};
use std::time::Duration;
use strata_core::Settings;

/// us-east-1 on-demand list prices, US$ per million, as of [`PRICES_DATE`].
pub const PRICE_WRU: f64 = 0.625;
pub const PRICE_RRU: f64 = 0.125;
/// API Gateway HTTP API requests plus Lambda requests (duration not included).
pub const PRICE_REQUEST: f64 = 1.00 + 0.20;
pub const PRICES_DATE: &str = "2026-12";

/// A holder name of the contract's maximum length (256 characters): a certificate at its largest.
pub fn longest_name() -> String {
    "N".repeat(256)
}

/// The operations measured.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Case {
    KvPut,
    KvGet,
    /// Begin, 1 read, 2 writes, commit.
    KvTx,
    Issue,
    IssueKeyed,
    Increment,
    IncrementKeyed,
    Associate,
    /// Every other operation that takes an `Idempotency-Key`, without and with one.
    ClassPut,
    ClassPutKeyed,
    /// Begin and commit with keys (the only keyed requests of a transaction measured).
    KvTxKeyed,
    WidgetCreate,
    WidgetCreateKeyed,
    AssociateKeyed,
    /// Eventual mode: logged, then folded by one re-scan at the end of the run (its share per increment).
    IncrementEventual,
    IncrementEventualKeyed,
}

impl Case {
    pub const ALL: [Case; 16] = [
        Case::KvPut,
        Case::KvGet,
        Case::KvTx,
        Case::Issue,
        Case::IssueKeyed,
        Case::Increment,
        Case::IncrementKeyed,
        Case::Associate,
        Case::ClassPut,
        Case::ClassPutKeyed,
        Case::KvTxKeyed,
        Case::WidgetCreate,
        Case::WidgetCreateKeyed,
        Case::AssociateKeyed,
        Case::IncrementEventual,
        Case::IncrementEventualKeyed,
    ];

    /// Each operation that takes an `Idempotency-Key`: the case without a key, the case with one, and how
    /// many of its requests carry the key.
    pub const KEYED: [(Case, Case, u32); 7] = [
        (Case::ClassPut, Case::ClassPutKeyed, 1),
        (Case::Issue, Case::IssueKeyed, 1),
        (Case::Increment, Case::IncrementKeyed, 1),
        (Case::IncrementEventual, Case::IncrementEventualKeyed, 1),
        (Case::KvTx, Case::KvTxKeyed, 2),
        (Case::WidgetCreate, Case::WidgetCreateKeyed, 1),
        (Case::Associate, Case::AssociateKeyed, 1),
    ];

    pub fn label(self) -> &'static str {
        match self {
            Case::KvPut => "KV PUT (100 B value)",
            Case::KvGet => "KV GET",
            Case::KvTx => "KV transaction: begin, 1 read, 2 writes, commit",
            Case::Issue => "certificate issue (256-char name)",
            Case::IssueKeyed => "certificate issue, `Idempotency-Key`",
            Case::Increment => "strong increment",
            Case::IncrementKeyed => "strong increment, `Idempotency-Key`",
            Case::Associate => "widget associate",
            Case::ClassPut => "share class set",
            Case::ClassPutKeyed => "share class set, `Idempotency-Key`",
            Case::KvTxKeyed => "KV transaction, `Idempotency-Key` on begin and commit",
            Case::WidgetCreate => "widget create",
            Case::WidgetCreateKeyed => "widget create, `Idempotency-Key`",
            Case::AssociateKeyed => "widget associate, `Idempotency-Key`",
            Case::IncrementEventual => "eventual increment, logged and folded",
            Case::IncrementEventualKeyed => {
                "eventual increment, `Idempotency-Key`, logged and folded"
            }
        }
    }

    /// The counter mode the case runs in.
    pub fn counter_mode(self) -> strata_core::counters::Mode {
        match self {
            Case::IncrementEventual | Case::IncrementEventualKeyed => {
                strata_core::counters::Mode::Eventual
            }
            _ => strata_core::counters::Mode::Strong,
        }
    }

    /// HTTP requests one operation takes (each an API Gateway request and a Lambda invocation on AWS).
    pub fn requests(self) -> u32 {
        match self {
            Case::KvTx | Case::KvTxKeyed => 5,
            _ => 1,
        }
    }

    /// Whether every operation of the case writes one shared item (its hot item).
    pub fn shared_item(self) -> bool {
        matches!(
            self,
            Case::KvPut
                | Case::Issue
                | Case::IssueKeyed
                | Case::Increment
                | Case::IncrementKeyed
                | Case::ClassPut
                | Case::ClassPutKeyed
        )
    }
}

/// One operation's cost, averaged over the operations of a run.
#[derive(Debug, Clone)]
pub struct Row {
    pub case: Case,
    pub clients: usize,
    pub ops: usize,
    pub calls: f64,
    pub wru: f64,
    pub rru: f64,
    /// WRU on the hot item per operation (cases with a shared item).
    pub hot: Option<f64>,
    /// Refused writes per operation (billed at the floor, see `fault_proxy::Metered`).
    pub refused: f64,
    pub stats: Stats,
}

impl Row {
    /// Operations per second one item takes: 1,000 WRU/s ÷ WRU on it.
    pub fn ceiling(&self) -> Option<f64> {
        self.hot.filter(|h| *h > 0.0).map(|h| 1000.0 / h)
    }

    /// US$ per million operations.
    pub fn dollars_per_million(&self) -> f64 {
        self.wru * PRICE_WRU
            + self.rru * PRICE_RRU
            + f64::from(self.case.requests()) * PRICE_REQUEST
    }
}

/// Stores on fresh tables reached through a metering proxy.
pub struct Meter {
    pub proxy: FaultProxy,
    pub app: App,
    pub through: crate::fixture::Through,
}

impl Meter {
    pub async fn start(settings: Settings) -> Self {
        let proxy = FaultProxy::start(
            crate::dynamodb::endpoint(),
            1,
            FaultConfig::healthy().metered(),
        )
        .await;
        let through = Fixture::dynamodb_through(&proxy.url, settings).await;
        Self {
            app: through.fixture.app.clone(),
            proxy,
            through,
        }
    }
}

/// Sends one request; anything but a success fails the run (a failure would be metered as an operation).
async fn send(app: &App, method: Method, path: &str, body: Value, key: Option<&str>) -> Value {
    let mut request = Request::builder()
        .method(method)
        .uri(path)
        .header("content-type", "application/json");
    if let Some(key) = key {
        request = request.header("idempotency-key", key);
    }
    let reply = app
        .send(request.body(Body::from(body.to_string())).unwrap())
        .await;
    assert!(
        reply.status.is_success(),
        "{path}: {} {}",
        reply.status,
        reply.body
    );
    reply.body
}

/// Setup before the metered run (not counted): what the operations need to exist.
async fn prepare(app: &App, case: Case, ops: usize, clients: usize) {
    let value = json!({"value": "v".repeat(100)});
    match case {
        Case::KvGet => {
            send(app, Method::PUT, "/kv/keys/hot", value, None).await;
        }
        Case::KvTx | Case::KvTxKeyed => {
            for c in 0..clients {
                send(
                    app,
                    Method::PUT,
                    &format!("/kv/keys/r{c}"),
                    value.clone(),
                    None,
                )
                .await;
            }
        }
        Case::Issue | Case::IssueKeyed => {
            // The default class's item is written by its first issue.
            send(app, Method::POST, "/certificates", issue_body(), None).await;
        }
        Case::Increment
        | Case::IncrementKeyed
        | Case::IncrementEventual
        | Case::IncrementEventualKeyed => {
            send(
                app,
                Method::POST,
                "/increment",
                json!({"key": "hot", "value": 1}),
                None,
            )
            .await;
        }
        Case::Associate | Case::AssociateKeyed => {
            for i in 0..ops {
                for side in ["a", "b"] {
                    let widget = json!({"serial_number": format!("w{i}{side}"), "name": "w", "ports": ["P"]});
                    send(app, Method::POST, "/widgets", widget, None).await;
                }
            }
        }
        Case::KvPut
        | Case::ClassPut
        | Case::ClassPutKeyed
        | Case::WidgetCreate
        | Case::WidgetCreateKeyed => {}
    }
}

fn issue_body() -> Value {
    json!({"name": longest_name(), "amount": 1, "class": "CS"})
}

/// One operation of `case`, the `i`-th of the run, by client `c`.
async fn operation(app: &App, case: Case, i: usize, c: usize) {
    let key = format!("k{}-{i}", uuid::Uuid::new_v4().simple());
    let value = json!({"value": "v".repeat(100)});
    match case {
        Case::KvPut => {
            send(app, Method::PUT, "/kv/keys/hot", value, None).await;
        }
        Case::KvGet => {
            send(app, Method::GET, "/kv/keys/hot", Value::Null, None).await;
        }
        Case::KvTx | Case::KvTxKeyed => {
            let keyed = case == Case::KvTxKeyed;
            let begin_key = format!("{key}-begin");
            let id = tx(app, keyed.then_some(begin_key.as_str())).await;
            let base = format!("/kv/transactions/{id}/keys");
            send(app, Method::GET, &format!("{base}/r{c}"), Value::Null, None).await;
            send(
                app,
                Method::PUT,
                &format!("{base}/a{c}"),
                value.clone(),
                None,
            )
            .await;
            send(app, Method::PUT, &format!("{base}/b{c}"), value, None).await;
            send(
                app,
                Method::POST,
                &format!("/kv/transactions/{id}/commit"),
                json!({}),
                keyed.then_some(key.as_str()),
            )
            .await;
        }
        Case::Issue => {
            send(app, Method::POST, "/certificates", issue_body(), None).await;
        }
        Case::IssueKeyed => {
            send(app, Method::POST, "/certificates", issue_body(), Some(&key)).await;
        }
        Case::Increment | Case::IncrementEventual => {
            send(
                app,
                Method::POST,
                "/increment",
                json!({"key": "hot", "value": 1}),
                None,
            )
            .await;
        }
        Case::IncrementKeyed | Case::IncrementEventualKeyed => {
            let body = json!({"key": "hot", "value": 1});
            send(app, Method::POST, "/increment", body, Some(&key)).await;
        }
        Case::Associate | Case::AssociateKeyed => {
            let body = json!({"peer": format!("w{i}b"), "port": "P"});
            let key = (case == Case::AssociateKeyed).then_some(key.as_str());
            let path = format!("/widgets/w{i}a/associations");
            send(app, Method::POST, &path, body, key).await;
        }
        Case::ClassPut | Case::ClassPutKeyed => {
            // Raising the authorization of one class: every such request writes the class item.
            let body = json!({"authorized": 1_000_000 + i});
            let key = (case == Case::ClassPutKeyed).then_some(key.as_str());
            send(app, Method::PUT, "/share-classes/CS", body, key).await;
        }
        Case::WidgetCreate | Case::WidgetCreateKeyed => {
            let widget =
                json!({"serial_number": format!("w{i}"), "name": "w", "ports": ["P", "R"]});
            let key = (case == Case::WidgetCreateKeyed).then_some(key.as_str());
            send(app, Method::POST, "/widgets", widget, key).await;
        }
    }
}

async fn tx(app: &App, key: Option<&str>) -> String {
    send(app, Method::POST, "/kv/transactions", json!({}), key).await["id"]
        .as_str()
        .expect("a transaction id")
        .to_owned()
}

/// Runs `ops` operations of `case` on fresh tables, by `clients` concurrent clients, and meters them.
pub async fn measure(case: Case, ops: usize, clients: usize) -> Row {
    let meter = Meter::start(Settings {
        counter_mode: case.counter_mode(),
        ..Settings::default()
    })
    .await;
    let aggregator = strata_dynamo::aggregator::Aggregator::new(
        strata_dynamo::config::client(&crate::dynamodb::sdk_config(&meter.proxy.url).await),
        &meter.through.tables,
    );
    prepare(&meter.app, case, ops, clients).await;
    // What the preparation logged is folded before the run.
    aggregator
        .rescan(Duration::ZERO)
        .await
        .expect("the log folds");
    meter.proxy.reset_stats();
    let mut tasks = Vec::new();
    for c in 0..clients {
        let app = meter.app.clone();
        tasks.push(tokio::spawn(async move {
            for i in (c..ops).step_by(clients) {
                operation(&app, case, i, c).await;
            }
        }));
    }
    for task in tasks {
        task.await.expect("a client finished");
    }
    if case.counter_mode() == strata_core::counters::Mode::Eventual {
        let folded = aggregator
            .rescan(Duration::ZERO)
            .await
            .expect("the log folds");
        assert_eq!(folded.folded, ops, "every increment of the run is folded");
    }
    // Writes the stores send on their own after the requests (a keyed increment's token removal, when no
    // later write carried it) are part of the operations' cost.
    meter.through.fixture.stores.counters.idle().await;
    let stats = meter.proxy.stats();
    row(case, ops, clients, stats)
}

/// The row of a run's counters.
pub fn row(case: Case, ops: usize, clients: usize, stats: Stats) -> Row {
    let total = stats.metered_total();
    let per = |x: f64| x / ops as f64;
    let hot = case
        .shared_item()
        .then(|| per(stats.hottest_item().map(|(_, units)| units).unwrap_or(0.0)));
    Row {
        case,
        clients,
        ops,
        calls: per(total.calls as f64),
        wru: per(total.wru),
        rru: per(total.rru),
        hot,
        refused: per(total.refused as f64),
        stats,
    }
}

/// DynamoDB calls per second a `strata serve --store dynamodb` (the binary at `strata`, with `extra`
/// flags) makes while no request arrives, over `window`.
pub async fn idle_calls_per_second(strata: &str, extra: &[&str], window: Duration) -> (f64, Stats) {
    let proxy = FaultProxy::start(
        crate::dynamodb::endpoint(),
        1,
        FaultConfig::healthy().metered(),
    )
    .await;
    let dir = tempfile::tempdir().expect("temp dir");
    let prefix = format!("t{}-", uuid::Uuid::new_v4().simple());
    let mut args = vec![
        "--store",
        "dynamodb",
        "--create-tables",
        "--table-prefix",
        &prefix,
    ];
    args.extend_from_slice(extra);
    let env: Vec<(String, String)> = [
        ("AWS_ENDPOINT_URL", proxy.url.as_str()),
        ("AWS_ACCESS_KEY_ID", "local"),
        ("AWS_SECRET_ACCESS_KEY", "local"),
        ("AWS_REGION", "us-east-1"),
    ]
    .iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect();
    let mut server = crate::server::Server::start_with_env(strata, dir.path(), &args, &env);
    // Let start-up (table creation, a first look at the counter log) pass, then count.
    tokio::time::sleep(Duration::from_secs(2)).await;
    proxy.reset_stats();
    tokio::time::sleep(window).await;
    let stats = proxy.stats();
    server.kill9();
    (stats.total_requests() as f64 / window.as_secs_f64(), stats)
}

/// The table, in markdown.
pub fn table(rows: &[Row]) -> String {
    let mut out = String::from(
        "| operation | clients | calls | WRU | RRU | WRU on the hot item | ceiling per class/key | $ per M |\n\
         |---|---:|---:|---:|---:|---:|---:|---:|\n",
    );
    for r in rows {
        let hot = r.hot.map_or("–".to_owned(), |h| format!("{h:.2}"));
        let ceiling = r.ceiling().map_or("–".to_owned(), |c| format!("{c:.0}/s"));
        out.push_str(&format!(
            "| {} | {} | {:.2} | {:.2} | {:.2} | {hot} | {ceiling} | {:.2} |\n",
            r.case.label(),
            r.clients,
            r.calls,
            r.wru,
            r.rru,
            r.dollars_per_million()
        ));
    }
    out
}
