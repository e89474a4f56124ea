//! Least privilege, proven both ways: every function is driven through its real handler on DynamoDB Local
//! (the event files of `infra/events/`, plus the requests that reach every code path that needs a grant,
//! lost answers and failed calls included), a recorder on the stores' client notes each `(IAM action,
//! table)` it asks for (`strata_tests::recorder`), and that must equal the DynamoDB grants of the function's
//! role in `template.yaml`: nothing it calls is missing (no `AccessDenied` after deploy), nothing granted
//! goes unused. Only the [`EXCEPTIONS`] may differ, each for the reason it gives.

use http::StatusCode;
use serde_json::{Value, json};
use serde_yaml::Value as Yaml;
use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;
use strata::template::Template;
use strata_core::{Settings, Stores};
use strata_dynamo::Tables;
use strata_http::route::Handler;
use strata_tests::fault_proxy::{FaultConfig, FaultKind, FaultProxy};
use strata_tests::recorder::{Grant, Recorder, UNATTRIBUTED, grants_of};

/// A grant that may differ from what the function's code calls, and why.
struct Exception {
    function: &'static str,
    action: &'static str,
    /// A table's logical id, or `<LogicalId>/stream` for its stream.
    resource: &'static str,
    reason: &'static str,
}

/// The stream reads of the aggregator: Lambda's event source mapping polls the stream with the function's
/// role and hands the records to the function, whose code never calls the streams API. These are the four
/// actions AWS documents for a DynamoDB event source, on that one stream.
const EVENT_SOURCE_MAPPING: &str = "read by Lambda's event source mapping with the function's role \
     (the actions AWS documents for a DynamoDB stream event source), not by the function's code";

const EXCEPTIONS: &[Exception] = &[
    Exception {
        function: "counters-aggregate",
        action: "dynamodb:DescribeStream",
        resource: "CounterLogTable/stream",
        reason: EVENT_SOURCE_MAPPING,
    },
    Exception {
        function: "counters-aggregate",
        action: "dynamodb:GetRecords",
        resource: "CounterLogTable/stream",
        reason: EVENT_SOURCE_MAPPING,
    },
    Exception {
        function: "counters-aggregate",
        action: "dynamodb:GetShardIterator",
        resource: "CounterLogTable/stream",
        reason: EVENT_SOURCE_MAPPING,
    },
    Exception {
        function: "counters-aggregate",
        action: "dynamodb:ListStreams",
        resource: "CounterLogTable/stream",
        reason: EVENT_SOURCE_MAPPING,
    },
];

// ---- template.yaml: each function's DynamoDB grants ----

fn tagged(value: &Yaml) -> Option<(String, &Yaml)> {
    match value {
        Yaml::Tagged(t) => Some((t.tag.to_string(), &t.value)),
        _ => None,
    }
}

/// `(logical id, attribute)` of `!GetAtt Id.Attribute`.
fn get_att(value: &Yaml) -> Option<(&str, &str)> {
    match tagged(value)? {
        (tag, v) if tag == "!GetAtt" => v.as_str()?.split_once('.'),
        _ => None,
    }
}

fn strings(value: &Yaml) -> Vec<String> {
    match value {
        Yaml::String(s) => vec![s.clone()],
        Yaml::Sequence(items) => items.iter().flat_map(strings).collect(),
        other => vec![format!("{other:?}")],
    }
}

/// A statement's resource as the recorder names it: `KvTable` (`!GetAtt KvTable.Arn`),
/// `CounterLogTable/stream` (`.StreamArn`), `KvTable/index/*` (`!Sub "${KvTable.Arn}/index/*"`).
fn resource_name(resource: &Yaml) -> String {
    if let Some((id, attribute)) = get_att(resource) {
        return match attribute {
            "Arn" => id.to_owned(),
            "StreamArn" => format!("{id}/stream"),
            other => format!("{id}.{other}"),
        };
    }
    if let Some((tag, Yaml::String(sub))) = tagged(resource)
        && tag == "!Sub"
        && let Some(rest) = sub.strip_prefix("${")
        && let Some((att, tail)) = rest.split_once('}')
        && let Some(id) = att.strip_suffix(".Arn")
    {
        return format!("{id}{tail}");
    }
    format!("{resource:?}")
}

/// Function (its `Handler`) → `(role, its DynamoDB grants)`.
fn granted(t: &Template) -> BTreeMap<String, (String, BTreeSet<Grant>)> {
    let doc = t.doc();
    let mut all = BTreeMap::new();
    for (id, function) in t.resources_of_type("AWS::Serverless::Function") {
        let binary = function["Properties"]["Handler"]
            .as_str()
            .unwrap_or_else(|| panic!("{id}: no Handler"))
            .to_owned();
        let (role, _) = get_att(&function["Properties"]["Role"])
            .unwrap_or_else(|| panic!("{id}: no Role: !GetAtt"));
        let props = &doc["Resources"][role]["Properties"];
        let mut statements: Vec<Yaml> = Vec::new();
        for policy in props["Policies"].as_sequence().into_iter().flatten() {
            statements.extend(
                policy["PolicyDocument"]["Statement"]
                    .as_sequence()
                    .cloned()
                    .unwrap_or_default(),
            );
        }
        for arn in props["ManagedPolicyArns"]
            .as_sequence()
            .into_iter()
            .flatten()
        {
            if let Some((tag, Yaml::String(local))) = tagged(arn)
                && tag == "!Ref"
            {
                statements.extend(
                    doc["Resources"][local.as_str()]["Properties"]["PolicyDocument"]["Statement"]
                        .as_sequence()
                        .cloned()
                        .unwrap_or_default(),
                );
            }
        }
        let mut grants = BTreeSet::new();
        for s in statements {
            // `DescribeEndpoints` on "*" is every function's init call, not any handler's (the binary
            // opens its connection with it: `deadlines::a_lambda_calls_dynamodb_during_init_…` proves
            // the call, `template.rs` the one statement on "*" that grants it).
            let actions: Vec<String> = strings(&s["Action"])
                .into_iter()
                .filter(|a| a.starts_with("dynamodb:") && a != "dynamodb:DescribeEndpoints")
                .collect();
            let resources = match &s["Resource"] {
                Yaml::Sequence(items) => items.clone(),
                one => vec![one.clone()],
            };
            for action in &actions {
                for resource in &resources {
                    grants.insert((action.clone(), resource_name(resource)));
                }
            }
        }
        all.insert(binary, (role.to_owned(), grants));
    }
    all
}

// ---- driving the functions ----

fn event(function: &str) -> Value {
    let path = strata_tests::repo_root().join(format!("infra/events/{function}.json"));
    serde_json::from_str(&std::fs::read_to_string(&path).unwrap())
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// The handler the Lambda binary runs for `function` (as `strata_api::lambda` picks it).
fn handler_of(function: &str) -> Handler {
    strata_api::function(function)
        .and_then(|f| f.handler())
        .unwrap_or_else(|| panic!("no HTTP or WebSocket handler serves function {function}"))
}

/// Edits of an event file.
fn body(e: &mut Value, body: impl Into<String>) {
    e["body"] = json!(body.into());
    e["isBase64Encoded"] = json!(false);
}
fn param(e: &mut Value, name: &str, value: &str) {
    e["pathParameters"][name] = json!(value);
}
fn key(e: &mut Value, idempotency_key: &str) {
    e["headers"]["idempotency-key"] = json!(idempotency_key);
}
fn no_key(e: &mut Value) {
    if let Some(headers) = e["headers"].as_object_mut() {
        headers.remove("idempotency-key");
    }
}

/// The stores of both counter modes on one recorded client through a fault proxy, and a client that goes
/// straight to DynamoDB Local for the test's own reads.
struct Driver {
    recorder: Recorder,
    strong: Stores,
    eventual: Stores,
    proxy: FaultProxy,
    /// The recorded client the stores use.
    client: aws_sdk_dynamodb::Client,
    tables: Tables,
    driven: std::sync::Mutex<BTreeSet<&'static str>>,
}

struct Reply {
    status: StatusCode,
    text: String,
}

impl Reply {
    fn json(&self) -> Value {
        serde_json::from_str(&self.text).unwrap_or(Value::Null)
    }
}

impl Driver {
    async fn new() -> Self {
        let endpoint = strata_tests::dynamodb::endpoint();
        let direct = strata::dynamodb_local::local_client(endpoint).await;
        let prefix = format!("t{}-", uuid::Uuid::new_v4().simple());
        let tables = strata::dynamodb_local::create_tables(&direct, &prefix)
            .await
            .expect("tables are created");
        let proxy = FaultProxy::start(endpoint, 14, FaultConfig::healthy()).await;
        let sdk = strata_tests::dynamodb::sdk_config(&proxy.url).await;
        let recorder = Recorder::new(&prefix);
        // strata's own client (retries, timeouts), as the Lambdas build it, with the recorder on it.
        let client = recorder.client(&strata_dynamo::config::client(&sdk));
        let strong = strata_dynamo::stores(client.clone(), tables.clone(), &Settings::default());
        let eventual = strata_dynamo::stores(
            client.clone(),
            tables.clone(),
            &Settings {
                counter_mode: strata_core::counters::Mode::Eventual,
                ..Settings::default()
            },
        );
        Self {
            recorder,
            strong,
            eventual,
            proxy,
            client,
            tables,
            driven: Default::default(),
        }
    }

    /// `function`'s event file, edited, through its handler, on the strong-counter stores.
    async fn call(&self, function: &'static str, edit: impl FnOnce(&mut Value)) -> Reply {
        self.call_on(&self.strong, function, edit).await
    }

    async fn call_on(
        &self,
        stores: &Stores,
        function: &'static str,
        edit: impl FnOnce(&mut Value),
    ) -> Reply {
        invoke(
            self.recorder.clone(),
            stores.clone(),
            function,
            self.request(function, edit),
        )
        .await
    }

    fn request(
        &self,
        function: &'static str,
        edit: impl FnOnce(&mut Value),
    ) -> lambda_http::Request {
        self.driven.lock().unwrap().insert(function);
        let mut e = event(function);
        edit(&mut e);
        lambda_http::request::from_str(&e.to_string())
            .unwrap_or_else(|err| panic!("{function}: {err}"))
    }

    /// The event file as it is.
    async fn event(&self, function: &'static str) -> Reply {
        self.call(function, |_| {}).await
    }

    /// Runs `f` with `config` on the proxy, then heals it.
    async fn faulted<F: Future>(&self, config: FaultConfig, f: F) -> F::Output {
        self.proxy.set(config);
        let out = f.await;
        self.proxy.set(FaultConfig::healthy());
        out
    }
}

/// One lost answer of `operation` (applied, then a 500).
fn lost(operation: &str, n: u64) -> FaultConfig {
    FaultConfig::only(FaultKind::AppliedThen500, 1.0)
        .on(&[operation])
        .at_most(n)
}

/// `request` through `function`'s handler, recorded as that function.
async fn invoke(
    recorder: Recorder,
    stores: Stores,
    function: &'static str,
    request: lambda_http::Request,
) -> Reply {
    let handler = handler_of(function);
    let response = recorder
        .run(
            function,
            strata_core::deadline::within(strata_http::REQUEST_BUDGET, handler(&stores, request)),
        )
        .await;
    Reply {
        status: response.status(),
        text: String::from_utf8_lossy(response.body().as_ref()).into_owned(),
    }
}

fn assert_status(reply: &Reply, status: StatusCode, what: &str) {
    assert_eq!(reply.status, status, "{what}: {}", reply.text);
}

async fn drive_kv(d: &Driver) {
    assert_status(&d.event("kv-get").await, StatusCode::NOT_FOUND, "kv-get");
    assert_status(&d.event("kv-put").await, StatusCode::OK, "kv-put");
    assert_status(&d.event("kv-get").await, StatusCode::OK, "kv-get");
    assert_status(&d.event("kv-delete").await, StatusCode::OK, "kv-delete");
    // A single-key write whose answer is lost reads the item back to see whether it applied.
    let put = d.faulted(lost("UpdateItem", 1), d.event("kv-put")).await;
    assert_status(&put, StatusCode::OK, "kv-put after a lost answer");
    let delete = d.faulted(lost("UpdateItem", 1), d.event("kv-delete")).await;
    assert_status(&delete, StatusCode::OK, "kv-delete after a lost answer");
}

fn tx(e: &mut Value, id: &str) {
    param(e, "id", id);
}

async fn begin(d: &Driver) -> String {
    let reply = d.call("kv-tx-begin", no_key).await;
    assert_status(&reply, StatusCode::CREATED, "kv-tx-begin");
    reply.json()["id"].as_str().unwrap().to_owned()
}

async fn drive_kv_transactions(d: &Driver) {
    assert_status(
        &d.event("kv-tx-get").await,
        StatusCode::NOT_FOUND,
        "kv-tx-get of the event's transaction",
    );
    // With an Idempotency-Key: claimed and completed; released when the operation fails.
    let keyed = d.call("kv-tx-begin", |e| key(e, "begin-1")).await;
    assert_status(&keyed, StatusCode::CREATED, "kv-tx-begin with a key");
    d.recorder.refuse_next("dynamodb:PutItem", "KvTxTable", 1);
    let refused = d.call("kv-tx-begin", |e| key(e, "begin-2")).await;
    assert_status(
        &refused,
        StatusCode::SERVICE_UNAVAILABLE,
        "kv-tx-begin refused",
    );

    // Read a key of the store (recorded for validation), write one, delete one, commit.
    d.call("kv-put", |e| param(e, "key", "read-me")).await;
    let id = begin(d).await;
    let read = d
        .call("kv-tx-get", |e| {
            tx(e, &id);
            param(e, "key", "read-me");
        })
        .await;
    assert_status(&read, StatusCode::OK, "kv-tx-get of a stored key");
    assert_status(
        &d.call("kv-tx-get", |e| {
            tx(e, &id);
            param(e, "key", "absent");
        })
        .await,
        StatusCode::NOT_FOUND,
        "kv-tx-get of an absent key",
    );
    assert_status(
        &d.call("kv-tx-put", |e| tx(e, &id)).await,
        StatusCode::OK,
        "kv-tx-put",
    );
    // its own write, read back
    assert_status(
        &d.call("kv-tx-get", |e| tx(e, &id)).await,
        StatusCode::OK,
        "kv-tx-get of its own write",
    );
    assert_status(
        &d.call("kv-tx-delete", |e| {
            tx(e, &id);
            param(e, "key", "gone");
        })
        .await,
        StatusCode::OK,
        "kv-tx-delete",
    );
    let commit = d
        .call("kv-tx-commit", |e| {
            tx(e, &id);
            key(e, "commit-1");
        })
        .await;
    assert_status(&commit, StatusCode::OK, "kv-tx-commit");

    // Writes too large for the transaction's item (a long value, a long key) read it first and go to
    // items of their own; a read of such a write reads its item.
    let id = begin(d).await;
    let large = json!({"value": "v".repeat(600)}).to_string();
    assert_status(
        &d.call("kv-tx-put", |e| {
            tx(e, &id);
            param(e, "key", "large");
            body(e, large.clone());
        })
        .await,
        StatusCode::OK,
        "kv-tx-put of a large value",
    );
    assert_status(
        &d.call("kv-tx-get", |e| {
            tx(e, &id);
            param(e, "key", "large");
        })
        .await,
        StatusCode::OK,
        "kv-tx-get of its own large write",
    );
    assert_status(
        &d.call("kv-tx-delete", |e| {
            tx(e, &id);
            param(e, "key", &"k".repeat(600));
        })
        .await,
        StatusCode::OK,
        "kv-tx-delete of a long key",
    );

    // A conflict: the key read changed before the commit, which marks the transaction failed.
    let id = begin(d).await;
    d.call("kv-tx-get", |e| {
        tx(e, &id);
        param(e, "key", "read-me");
    })
    .await;
    d.call("kv-put", |e| param(e, "key", "read-me")).await;
    let conflict = d.call("kv-tx-commit", |e| tx(e, &id)).await;
    assert_status(
        &conflict,
        StatusCode::CONFLICT,
        "kv-tx-commit after a conflict",
    );

    // A rollback that lands between the commit's plan and its transaction (held back by the proxy): the
    // header's guard fails, and the commit reads the header to tell why (ended: 404).
    let id = begin(d).await;
    d.call("kv-tx-put", |e| tx(e, &id)).await;
    let slow =
        FaultConfig::healthy().with_slow(Duration::from_millis(1500), Some("TransactWriteItems"));
    let slowed = d.proxy.stats().slowed;
    let (commit, rollback) = d
        .faulted(slow, async {
            tokio::join!(d.call("kv-tx-commit", |e| tx(e, &id)), async {
                // the commit's transaction has reached the proxy, which holds it
                let start = std::time::Instant::now();
                while d.proxy.stats().slowed == slowed {
                    assert!(start.elapsed() < Duration::from_secs(5), "no commit came");
                    tokio::time::sleep(Duration::from_millis(5)).await;
                }
                d.call("kv-tx-rollback", |e| tx(e, &id)).await
            })
        })
        .await;
    assert_status(
        &rollback,
        StatusCode::OK,
        "kv-tx-rollback during the commit",
    );
    assert_status(
        &commit,
        StatusCode::NOT_FOUND,
        "kv-tx-commit after the rollback",
    );

    // A commit that fails releases its key.
    let id = begin(d).await;
    d.recorder.refuse_next("dynamodb:Query", "KvTxTable", 1);
    let refused = d
        .call("kv-tx-commit", |e| {
            tx(e, &id);
            key(e, "commit-2");
        })
        .await;
    assert_status(
        &refused,
        StatusCode::SERVICE_UNAVAILABLE,
        "kv-tx-commit refused",
    );

    // Rollbacks: keyed, and one that fails and releases its key.
    let id = begin(d).await;
    let rollback = d
        .call("kv-tx-rollback", |e| {
            tx(e, &id);
            key(e, "rollback-1");
        })
        .await;
    assert_status(&rollback, StatusCode::OK, "kv-tx-rollback");
    let id = begin(d).await;
    d.recorder
        .refuse_next("dynamodb:UpdateItem", "KvTxTable", 1);
    let refused = d
        .call("kv-tx-rollback", |e| {
            tx(e, &id);
            key(e, "rollback-2");
        })
        .await;
    assert_status(
        &refused,
        StatusCode::SERVICE_UNAVAILABLE,
        "kv-tx-rollback refused",
    );
}

/// The line protocol's every command, over `POST /kv/commands` and over the WebSocket; inside the first
/// transaction a write too large for the transaction's item, read back.
fn session() -> Vec<String> {
    let large = format!("PUT f {}", "v".repeat(600));
    [
        "PUT a 1", "GET a", "DEL a", "PUT b 1", "START", "GET b", "PUT c 2", "DEL d", &large,
        "GET f", "COMMIT", "START", "PUT e 1", "ROLLBACK", "START",
    ]
    .map(str::to_owned)
    .to_vec()
}

async fn drive_line_protocol(d: &Driver) {
    // The last START is still open at the end of the body: it is rolled back.
    let reply = d
        .call("kv-commands", |e| body(e, session().join("\n")))
        .await;
    assert_status(&reply, StatusCode::OK, "kv-commands");
    assert!(!reply.text.contains("Error"), "kv-commands: {}", reply.text);
    let lost_put = d
        .faulted(
            lost("UpdateItem", 1),
            d.call("kv-commands", |e| body(e, "PUT a 2\n")),
        )
        .await;
    assert!(
        lost_put.text.contains("Ok"),
        "kv-commands: {}",
        lost_put.text
    );

    assert_status(&d.event("ws-connect").await, StatusCode::OK, "ws-connect");
    assert_status(&d.event("ws-default").await, StatusCode::OK, "ws-default");
    for line in session() {
        let reply = d.call("ws-default", |e| body(e, line.clone())).await;
        assert!(
            reply.status == StatusCode::OK && !reply.text.contains("Error"),
            "ws-default {line}: {}",
            reply.text
        );
    }
    // $disconnect with the last START still open rolls it back.
    assert_status(
        &d.event("ws-disconnect").await,
        StatusCode::OK,
        "ws-disconnect",
    );
}

fn class(e: &mut Value, code: &str) {
    param(e, "class", code);
}

fn issue(e: &mut Value, class: &str, amount: u64) {
    body(
        e,
        json!({"name": "Least Privilege", "amount": amount, "class": class}).to_string(),
    );
}

async fn drive_certificates(d: &Driver) {
    assert_status(
        &d.event("share-classes-get").await,
        StatusCode::NOT_FOUND,
        "share-classes-get",
    );
    assert_status(
        &d.event("share-classes-put").await,
        StatusCode::OK,
        "share-classes-put",
    );
    assert_status(
        &d.event("share-classes-get").await,
        StatusCode::OK,
        "share-classes-get",
    );
    let keyed = d.call("share-classes-put", |e| key(e, "class-1")).await;
    assert_status(&keyed, StatusCode::OK, "share-classes-put with a key");
    d.recorder
        .refuse_next("dynamodb:UpdateItem", "LedgerTable", 1);
    let refused = d.call("share-classes-put", |e| key(e, "class-2")).await;
    assert_status(
        &refused,
        StatusCode::SERVICE_UNAVAILABLE,
        "share-classes-put refused",
    );

    assert_status(
        &d.event("certificates-get").await,
        StatusCode::NOT_FOUND,
        "certificates-get",
    );
    // keyed (the event's own key), and its replay
    assert_status(
        &d.event("certificates-issue").await,
        StatusCode::CREATED,
        "certificates-issue",
    );
    assert_status(
        &d.event("certificates-issue").await,
        StatusCode::CREATED,
        "replay",
    );
    assert_status(
        &d.event("certificates-get").await,
        StatusCode::OK,
        "certificates-get",
    );
    assert_status(
        &d.event("certificates-list").await,
        StatusCode::OK,
        "certificates-list",
    );
    // Unkeyed, on a default class used for the first time (its item is written then).
    let first = d
        .call("certificates-issue", |e| {
            no_key(e);
            issue(e, "CS", 5);
        })
        .await;
    assert_status(
        &first,
        StatusCode::CREATED,
        "first issue of a default class",
    );
    assert_status(
        &d.call("share-classes-get", |e| class(e, "PS")).await,
        StatusCode::OK,
        "share-classes-get of a default class never written",
    );
    // The allocation's answer lost on every attempt: the class item is read to find the entry.
    let lost_allocation = d
        .faulted(
            lost("UpdateItem", 3),
            d.call("certificates-issue", |e| {
                no_key(e);
                issue(e, "CS", 5);
            }),
        )
        .await;
    assert_status(
        &lost_allocation,
        StatusCode::CREATED,
        "issue after lost allocations",
    );
    // The allocation refused outright with a key: the class item is read, nothing found, the key released.
    d.recorder
        .refuse_next("dynamodb:UpdateItem", "LedgerTable", 1);
    let refused = d
        .call("certificates-issue", |e| {
            key(e, "issue-2");
            issue(e, "CS", 5);
        })
        .await;
    assert_status(
        &refused,
        StatusCode::SERVICE_UNAVAILABLE,
        "certificates-issue refused",
    );
    // Numbers allocated whose certificates could not be written (the write fails on every attempt): the
    // next read and the next listing write them.
    let stranded = |amount| {
        d.faulted(
            FaultConfig::only(FaultKind::Before500, 1.0)
                .on(&["PutItem"])
                .matching("cert#")
                .at_most(u64::from(strata_dynamo::config::MAX_ATTEMPTS)),
            d.call("certificates-issue", move |e| {
                key(e, &format!("stranded-{amount}"));
                issue(e, "CS", amount);
            }),
        )
    };
    let pending = stranded(7).await;
    assert_status(
        &pending,
        StatusCode::CREATED,
        "issue whose certificate stays pending",
    );
    let id = pending.json()["id"].as_str().unwrap().to_owned();
    let got = d.call("certificates-get", |e| param(e, "id", &id)).await;
    assert_status(
        &got,
        StatusCode::OK,
        "certificates-get of a pending certificate",
    );
    assert_status(
        &stranded(8).await,
        StatusCode::CREATED,
        "another pending certificate",
    );
    let page = d
        .call("certificates-list", |e| {
            e["queryStringParameters"] = json!({"class": "CS", "after": "0", "limit": "100"});
            e["rawQueryString"] = json!("class=CS&after=0&limit=100");
        })
        .await;
    assert_status(
        &page,
        StatusCode::OK,
        "certificates-list with a pending certificate",
    );
    assert_eq!(
        page.json()["certificates"].as_array().map(Vec::len),
        Some(4),
        "{}",
        page.text
    );
}

fn increment(e: &mut Value, counter: &str, value: u64) {
    body(e, json!({"key": counter, "value": value}).to_string());
}

async fn drive_counters(d: &Driver) {
    assert_status(
        &d.event("counters-get").await,
        StatusCode::NOT_FOUND,
        "counters-get",
    );
    assert_status(
        &d.event("counters-increment").await,
        StatusCode::OK,
        "counters-increment",
    );
    assert_status(
        &d.event("counters-get").await,
        StatusCode::OK,
        "counters-get",
    );
    let lost_add = d
        .faulted(lost("UpdateItem", 1), d.event("counters-increment"))
        .await;
    assert_status(
        &lost_add,
        StatusCode::OK,
        "unkeyed strong increment after a lost answer",
    );
    let keyed = d.call("counters-increment", |e| key(e, "inc-1")).await;
    assert_status(&keyed, StatusCode::OK, "keyed strong increment");
    d.recorder
        .refuse_next("dynamodb:UpdateItem", "CounterTable", 1);
    let refused = d.call("counters-increment", |e| key(e, "inc-2")).await;
    assert_status(
        &refused,
        StatusCode::SERVICE_UNAVAILABLE,
        "keyed increment refused",
    );
    let too_big = d
        .call("counters-increment", |e| {
            increment(e, "hello world", u64::MAX)
        })
        .await;
    assert!(
        too_big.status.is_client_error(),
        "an increment no counter can take: {}",
        too_big.text
    );

    // Eventual: log entries (keyed ones checked against the folded marker), folded by the aggregator.
    let eventual = &d.eventual;
    let mut reader = strata_tests::streams::StreamReader::open(
        strata_tests::dynamodb::endpoint(),
        &d.tables.counter_log,
    )
    .await;
    for edit in [
        (|e: &mut Value| increment(e, "eventual", 2)) as fn(&mut Value),
        |e: &mut Value| {
            increment(e, "eventual", 3);
            key(e, "eventual-1");
        },
    ] {
        let reply = d.call_on(eventual, "counters-increment", edit).await;
        assert_status(&reply, StatusCode::ACCEPTED, "eventual increment");
    }
    // What the event source mapping delivers (read here with the test's own client), folded by the
    // function's code.
    let aggregator = strata_dynamo::aggregator::Aggregator::new(
        d.client.clone(),
        d.tables.counters.clone(),
        d.tables.counter_log.clone(),
    );
    d.driven.lock().unwrap().insert("counters-aggregate");
    let mut folded = 0;
    for _ in 0..100 {
        let batch = reader.next_event().await;
        let entries = strata_counters::stream::entries(&batch);
        folded += d
            .recorder
            .run("counters-aggregate", aggregator.fold(entries))
            .await
            .expect("fold");
        if folded >= 2 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(folded, 2, "both eventual increments folded");
    // The schedule's re-scan, through the function's handler: it scans the log (nothing in it is old
    // enough to fold, and what it would fold takes the grants above).
    let rescan = d
        .recorder
        .run(
            "counters-aggregate",
            strata_counters::aggregate::handle(
                &aggregator,
                json!({
                    "version": "0",
                    "id": "0f3e5b8c-1d2a-4b6c-9e7f-8a9b0c1d2e3f",
                    "detail-type": "Scheduled Event",
                    "source": "aws.events",
                    "account": "123456789012",
                    "time": "2026-12-01T10:00:00Z",
                    "region": "eu-west-1",
                    "resources": [],
                    "detail": {}
                }),
            ),
        )
        .await;
    assert!(rescan.is_ok(), "the scheduled re-scan: {rescan:?}");
    let total = d
        .call_on(eventual, "counters-get", |e| param(e, "key", "eventual"))
        .await;
    assert_eq!(total.json(), json!({"eventual": 5}), "{}", total.text);
}

fn widget(e: &mut Value, serial: &str, ports: &[&str]) {
    body(
        e,
        json!({"serial_number": serial, "name": "Least", "ports": ports}).to_string(),
    );
}

async fn drive_widgets(d: &Driver) {
    assert_status(
        &d.event("widgets-get").await,
        StatusCode::NOT_FOUND,
        "widgets-get",
    );
    assert_status(
        &d.event("widgets-create").await,
        StatusCode::CREATED,
        "widgets-create",
    );
    // no peer yet: refused, and told why from the widgets as they are
    assert_status(
        &d.event("widgets-associate").await,
        StatusCode::NOT_FOUND,
        "associate",
    );
    let peer = d
        .call("widgets-create", |e| {
            widget(e, "W-2002", &["R", "P"]);
            key(e, "widget-1");
        })
        .await;
    assert_status(&peer, StatusCode::CREATED, "widgets-create with a key");
    d.recorder.refuse_next("dynamodb:PutItem", "WidgetTable", 1);
    let refused = d
        .call("widgets-create", |e| {
            widget(e, "W-3003", &["R"]);
            key(e, "widget-2");
        })
        .await;
    assert_status(
        &refused,
        StatusCode::SERVICE_UNAVAILABLE,
        "widgets-create refused",
    );
    assert_status(
        &d.event("widgets-associate").await,
        StatusCode::CREATED,
        "associate",
    );
    assert_status(&d.event("widgets-get").await, StatusCode::OK, "widgets-get");
    assert_status(
        &d.event("widgets-dissociate").await,
        StatusCode::NO_CONTENT,
        "dissociate",
    );
    let keyed = d.call("widgets-associate", |e| key(e, "assoc-1")).await;
    assert_status(&keyed, StatusCode::CREATED, "associate with a key");
    d.recorder
        .refuse_next("dynamodb:UpdateItem", "WidgetTable", 1);
    let refused = d
        .call("widgets-associate", |e| {
            body(e, json!({"peer": "W-2002", "port": "P"}).to_string());
            key(e, "assoc-2");
        })
        .await;
    assert_status(
        &refused,
        StatusCode::SERVICE_UNAVAILABLE,
        "associate refused",
    );
    // a delete with an association releases the peer's slot in the same transaction
    assert_status(
        &d.event("widgets-delete").await,
        StatusCode::NO_CONTENT,
        "widgets-delete",
    );
    assert_status(
        &d.event("widgets-get").await,
        StatusCode::NOT_FOUND,
        "widgets-get",
    );
}

async fn drive_system(d: &Driver) {
    assert_status(&d.event("health").await, StatusCode::OK, "health");
    assert_status(
        &d.event("not-found").await,
        StatusCode::NOT_FOUND,
        "not-found",
    );
}

fn describe(grants: &BTreeSet<Grant>) -> String {
    grants
        .iter()
        .map(|(action, resource)| format!("{action} on {resource}"))
        .collect::<Vec<_>>()
        .join(", ")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn every_role_grants_exactly_what_its_function_calls() {
    let d = Driver::new().await;
    drive_system(&d).await;
    drive_kv(&d).await;
    drive_kv_transactions(&d).await;
    drive_line_protocol(&d).await;
    drive_certificates(&d).await;
    drive_counters(&d).await;
    drive_widgets(&d).await;

    let t = Template::load();
    let granted = granted(&t);
    let calls = d.recorder.calls();
    assert!(
        !calls.contains_key(UNATTRIBUTED),
        "DynamoDB calls outside any function: {}",
        describe(&calls[UNATTRIBUTED])
    );
    let driven: BTreeSet<String> = d
        .driven
        .lock()
        .unwrap()
        .iter()
        .map(|f| f.to_string())
        .collect();
    let functions: BTreeSet<String> = granted.keys().cloned().collect();
    assert_eq!(
        driven, functions,
        "every function of the template is driven, and only those"
    );

    let mut report = Vec::new();
    for (function, (role, grants)) in &granted {
        let used = calls.get(function).cloned().unwrap_or_default();
        let excepted = |(action, resource): &Grant| {
            EXCEPTIONS
                .iter()
                .any(|x| x.function == function && x.action == action && x.resource == resource)
        };
        let missing: BTreeSet<Grant> = used
            .difference(grants)
            .filter(|g| !excepted(g))
            .cloned()
            .collect();
        let unused: BTreeSet<Grant> = grants
            .difference(&used)
            .filter(|g| !excepted(g))
            .cloned()
            .collect();
        if !missing.is_empty() {
            report.push(format!(
                "{function} ({role}): missing grants: {}",
                describe(&missing)
            ));
        }
        if !unused.is_empty() {
            report.push(format!(
                "{function} ({role}): unused grants: {}",
                describe(&unused)
            ));
        }
    }
    // An exception holds only while it is a difference: granted, never called by the code.
    for x in EXCEPTIONS {
        let grant = (x.action.to_owned(), x.resource.to_owned());
        let (role, grants) = &granted[x.function];
        assert!(
            grants.contains(&grant),
            "exception {} on {} for {}: {role} no longer grants it; drop the exception",
            x.action,
            x.resource,
            x.function
        );
        assert!(
            !calls.get(x.function).is_some_and(|c| c.contains(&grant)),
            "exception {} on {} for {}: its code calls it now, so it is no exception ({})",
            x.action,
            x.resource,
            x.function,
            x.reason
        );
    }
    assert!(
        report.is_empty(),
        "template.yaml's roles differ from what the functions call:\n  {}",
        report.join("\n  ")
    );
}

/// The stream exceptions are for the one function whose event source is that stream.
#[test]
fn the_stream_exceptions_belong_to_the_stream_consumer() {
    let t = Template::load();
    for x in EXCEPTIONS {
        let (_, function) = t
            .resources_of_type("AWS::Serverless::Function")
            .find(|(_, f)| f["Properties"]["Handler"].as_str() == Some(x.function))
            .unwrap_or_else(|| panic!("no function {}", x.function));
        let table = x.resource.strip_suffix("/stream").expect("a stream");
        let consumes = function["Properties"]["Events"]
            .as_mapping()
            .into_iter()
            .flatten()
            .any(|(_, e)| {
                e["Type"].as_str() == Some("DynamoDB")
                    && get_att(&e["Properties"]["Stream"]) == Some((table, "StreamArn"))
            });
        assert!(
            consumes,
            "{}: {} is not its event source ({})",
            x.function, x.resource, x.reason
        );
    }
}

#[test]
fn transactions_and_batches_are_authorized_per_action_and_table() {
    let body = json!({"TransactItems": [
        {"Put": {"TableName": "p-A", "Item": {}}},
        {"Update": {"TableName": "p-B", "Key": {}}},
        {"Delete": {"TableName": "p-A", "Key": {}}},
        {"ConditionCheck": {"TableName": "p-C", "Key": {}}},
    ]});
    let name = |n: &str| n.strip_prefix("p-").unwrap().to_owned();
    let g = |a: &str, t: &str| (format!("dynamodb:{a}"), t.to_owned());
    assert_eq!(
        grants_of("TransactWriteItems", body.to_string().as_bytes(), name),
        BTreeSet::from([
            g("PutItem", "A"),
            g("UpdateItem", "B"),
            g("DeleteItem", "A"),
            g("ConditionCheckItem", "C")
        ])
    );
    let body =
        json!({"TransactItems": [{"Get": {"TableName": "p-A"}}, {"Get": {"TableName": "p-B"}}]});
    assert_eq!(
        grants_of("TransactGetItems", body.to_string().as_bytes(), name),
        BTreeSet::from([g("GetItem", "A"), g("GetItem", "B")])
    );
    let body = json!({"RequestItems": {"p-A": [], "p-B": []}});
    assert_eq!(
        grants_of("BatchWriteItem", body.to_string().as_bytes(), name),
        BTreeSet::from([g("BatchWriteItem", "A"), g("BatchWriteItem", "B")])
    );
    let body = json!({"TableName": "p-A", "IndexName": "byX"});
    assert_eq!(
        grants_of("Query", body.to_string().as_bytes(), name),
        BTreeSet::from([g("Query", "A/index/*")])
    );
}
