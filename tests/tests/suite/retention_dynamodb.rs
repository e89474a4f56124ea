//! Retention of idempotency and exactly-once records on DynamoDB Local, with a retention of seconds: every
//! such record carries a `ttl` of about its write time plus the retention; once the retention has passed, a
//! record DynamoDB has not deleted yet (its TTL deletes lazily; here TTL is off) is absent to every reader, so a reused key is a new request — never `422`, never the earlier answer; and every table
//! where the code writes `ttl` has TTL enabled in the template.

use aws_sdk_dynamodb::Client;
use aws_sdk_dynamodb::types::AttributeValue;
use http::StatusCode;
use serde_json::json;
use std::collections::HashMap;
use std::time::{Duration, SystemTime};
use strata::template::Template;
use strata_core::Settings;
use strata_core::certificates::{ClassCode, IssueRequest};
use strata_core::counters::{CounterKey, Incremented, Mode};
use strata_core::retention::CLOCK_SKEW_MARGIN;
use strata_core::time::epoch_seconds;
use strata_dynamo::aggregator::{Aggregator, Entry};
use strata_tests::fixture::{Fixture, Reply, Through};

type Item = HashMap<String, AttributeValue>;

const RETENTION: Duration = Duration::from_secs(2);

async fn dynamodb(mode: Mode) -> Through {
    let settings = Settings {
        retention: RETENTION,
        counter_mode: mode,
        ..Settings::default()
    };
    Fixture::dynamodb_through(strata_tests::dynamodb::endpoint(), settings).await
}

/// The same, on tables whose TTL deletion has not come round yet: DynamoDB deletes expired items up to
/// days late, DynamoDB Local within seconds. With TTL off, every expired record is still there when the
/// key is reused, which is the case every reader must handle.
async fn dynamodb_with_lazy_ttl(mode: Mode) -> Through {
    let t = dynamodb(mode).await;
    for table in [
        &t.tables.idempotency,
        &t.tables.ledger,
        &t.tables.counter_log,
    ] {
        let described = t
            .direct
            .describe_time_to_live()
            .table_name(table)
            .send()
            .await
            .expect("describe TTL");
        let status = described
            .time_to_live_description()
            .and_then(|d| d.time_to_live_status());
        if status != Some(&aws_sdk_dynamodb::types::TimeToLiveStatus::Enabled) {
            continue;
        }
        t.direct
            .update_time_to_live()
            .table_name(table)
            .time_to_live_specification(
                aws_sdk_dynamodb::types::TimeToLiveSpecification::builder()
                    .enabled(false)
                    .attribute_name(strata_dynamo::TTL)
                    .build()
                    .unwrap(),
            )
            .send()
            .await
            .expect("TTL off");
    }
    t
}

/// Sleeps until every record written before the call is past its retention, by any reader's clock: the
/// retention, the clock-skew margin, and 2 s for `ttl` values in whole seconds (rounded up, compared with
/// the clock rounded down).
async fn outlive_the_retention() {
    tokio::time::sleep(RETENTION + CLOCK_SKEW_MARGIN + Duration::from_millis(2500)).await;
}

fn now() -> u64 {
    epoch_seconds(SystemTime::now())
}

fn replayed(reply: &Reply) -> bool {
    reply.headers.contains_key("idempotent-replayed")
}

/// Every item of a table (the test's own, so small).
async fn items(client: &Client, table: &str) -> Vec<Item> {
    let mut all = Vec::new();
    let mut start = None;
    loop {
        let out = client
            .scan()
            .table_name(table)
            .consistent_read(true)
            .set_exclusive_start_key(start)
            .send()
            .await
            .expect("scan");
        all.extend(out.items.unwrap_or_default());
        match out.last_evaluated_key {
            Some(key) if !key.is_empty() => start = Some(key),
            _ => return all,
        }
    }
}

fn text<'a>(item: &'a Item, name: &str) -> &'a str {
    item.get(name)
        .and_then(|v| v.as_s().ok())
        .map(String::as_str)
        .unwrap_or("")
}

fn ttl(item: &Item) -> u64 {
    item.get(strata_dynamo::TTL)
        .and_then(|v| v.as_n().ok())
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("no {} on {item:?}", strata_dynamo::TTL))
}

/// The items of `table` whose attribute `name` starts with `prefix`.
async fn items_with(client: &Client, table: &str, name: &str, prefix: &str) -> Vec<Item> {
    items(client, table)
        .await
        .into_iter()
        .filter(|i| text(i, name).starts_with(prefix))
        .collect()
}

/// `ttl` is the retention (and the clock-skew margin) after a write made between `before` and `after`
/// (whole seconds; the value is rounded up).
fn assert_ttl_after_retention(item: &Item, before: u64, after: u64) {
    let keep = (RETENTION + CLOCK_SKEW_MARGIN).as_secs();
    // The ledger's record of a key is its issue's intent: it holds until `until` (ms), and DynamoDB keeps it
    // 30 days longer, so that a certificate whose request died is written from it, see the ledger.
    let intent = item
        .get("pk")
        .and_then(|v| v.as_s().ok())
        .is_some_and(|pk| pk.starts_with("req#"));
    let ttl = match item.get("until").and_then(|v| v.as_n().ok()) {
        Some(until) if intent => {
            let until: u64 = until.parse().unwrap();
            assert_eq!(ttl(item), until.div_ceil(1000) + 30 * 24 * 3600, "{item:?}");
            until.div_ceil(1000)
        }
        _ => ttl(item),
    };
    assert!(
        before + keep <= ttl && ttl <= after + keep + 1,
        "ttl {ttl} is not the retention after a write between {before} and {after}: {item:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_widget_create_key_reused_after_the_retention_runs_as_a_new_request() {
    let t = dynamodb_with_lazy_ttl(Mode::Strong).await;
    let app = &t.fixture.app;
    let alpha = json!({"serial_number": "A", "name": "alpha", "ports": ["P"]});
    let before = now();
    let first = app.post_keyed("/widgets", "same", alpha.clone()).await;
    assert_eq!(first.status, StatusCode::CREATED, "{:?}", first.body);
    let other = app
        .post_keyed(
            "/widgets",
            "other",
            json!({"serial_number": "C", "name": "gamma", "ports": ["Q"]}),
        )
        .await;
    assert_eq!(other.status, StatusCode::CREATED, "{:?}", other.body);
    let after = now();
    let records = items(&t.direct, &t.tables.idempotency).await;
    assert_eq!(records.len(), 2, "{records:?}");
    for record in &records {
        assert_ttl_after_retention(record, before, after);
    }

    outlive_the_retention().await;
    // Expired, not deleted: the lazy case every reader must handle.
    assert_eq!(items(&t.direct, &t.tables.idempotency).await.len(), 2);
    // The same body runs again: the widget exists, so this time it is a 409 (not the old 201 replayed).
    let again = app.post_keyed("/widgets", "same", alpha).await;
    assert_eq!(again.status, StatusCode::CONFLICT, "{:?}", again.body);
    assert_eq!(again.code(), "duplicate_serial_number");
    assert!(!replayed(&again));
    // Another body under the other key is a new request: a new widget, not 422.
    let delta = app
        .post_keyed(
            "/widgets",
            "other",
            json!({"serial_number": "D", "name": "delta", "ports": ["R"]}),
        )
        .await;
    assert_eq!(delta.status, StatusCode::CREATED, "{:?}", delta.body);
    assert_eq!(delta.body["serial_number"], "D");
    assert!(!replayed(&delta));
    assert_eq!(app.get("/widgets/D").await.status, StatusCode::OK);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_certificate_key_reused_after_the_retention_issues_a_new_certificate() {
    let t = dynamodb_with_lazy_ttl(Mode::Strong).await;
    let app = &t.fixture.app;
    let salt = json!({"name": "Salt Bae", "amount": 10, "class": "CS"});
    let before = now();
    let first = app.post_keyed("/certificates", "same", salt.clone()).await;
    assert_eq!(first.status, StatusCode::CREATED, "{:?}", first.body);
    assert_eq!(first.body["id"], "CS-1");
    let other = app
        .post_keyed(
            "/certificates",
            "other",
            json!({"name": "X", "amount": 5, "class": "CS"}),
        )
        .await;
    assert_eq!(other.body["id"], "CS-2", "{:?}", other.body);
    // The ledger's own records of the keys, at the port (no HTTP record in front of them).
    let ledger = &t.fixture.stores.ledger;
    let cs = ClassCode::parse("CS").unwrap();
    let request = |name: &str, amount| IssueRequest {
        class: cs.clone(),
        name: name.to_owned(),
        amount,
    };
    let port = ledger
        .issue(&request("port", 1), Some("port-key"))
        .await
        .unwrap();
    assert_eq!(port.number, 3);
    let after = now();
    let records = items_with(&t.direct, &t.tables.ledger, "pk", "req#").await;
    assert_eq!(
        records.len(),
        3,
        "{:?}",
        items(&t.direct, &t.tables.ledger).await
    );
    for record in &records {
        assert_ttl_after_retention(record, before, after);
    }
    for record in items(&t.direct, &t.tables.idempotency).await {
        assert_ttl_after_retention(&record, before, after);
    }

    outlive_the_retention().await;
    assert_eq!(
        items_with(&t.direct, &t.tables.ledger, "pk", "req#")
            .await
            .len(),
        3
    );
    // The same body issues a new certificate; the old one is not returned.
    let again = app.post_keyed("/certificates", "same", salt).await;
    assert_eq!(again.status, StatusCode::CREATED, "{:?}", again.body);
    assert_eq!(again.body["id"], "CS-4");
    assert_eq!(again.body["name"], "Salt Bae");
    assert!(!replayed(&again));
    // Another body is a new request too, not 422.
    let y = app
        .post_keyed(
            "/certificates",
            "other",
            json!({"name": "Y", "amount": 7, "class": "CS"}),
        )
        .await;
    assert_eq!(y.status, StatusCode::CREATED, "{:?}", y.body);
    assert_eq!(y.body["id"], "CS-5");
    assert_eq!(y.body["name"], "Y");
    // At the port: another request under the expired key is issued, not refused as a reuse.
    let reused = ledger
        .issue(&request("someone else", 2), Some("port-key"))
        .await
        .unwrap();
    assert_eq!((reused.number, reused.name.as_str()), (6, "someone else"));
    let class = app.get("/share-classes/CS").await;
    assert_eq!(
        class.body["issued"],
        10 + 5 + 1 + 10 + 7 + 2,
        "{:?}",
        class.body
    );
    // The earlier certificates are untouched.
    assert_eq!(app.get("/certificates/CS-1").await.body["name"], "Salt Bae");
    assert_eq!(app.get("/certificates/CS-2").await.body["name"], "X");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_increment_key_reused_after_the_retention_counts_again() {
    let t = dynamodb_with_lazy_ttl(Mode::Strong).await;
    let app = &t.fixture.app;
    let five = json!({"key": "hits", "value": 5});
    let before = now();
    let first = app.post_keyed("/increment", "same", five.clone()).await;
    assert_eq!(first.status, StatusCode::OK, "{:?}", first.body);
    assert_eq!(first.body["value"], 5);
    // The counter's own memory of the request, at the port (no HTTP record in front of it, and no word
    // that its answer was recorded): a token in the counter's item, holding when it was written.
    let counters = &t.fixture.stores.counters;
    let port = CounterKey::parse("port").unwrap();
    assert_eq!(
        counters
            .increment(&port, 3, Some("port-key"))
            .await
            .unwrap(),
        Incremented::Total(3)
    );
    let after = now();
    counters.idle().await;
    let tokens = |item: &Item| -> Vec<u64> {
        item.iter()
            .filter(|(name, _)| name.len() == 23 && name.starts_with('t'))
            .map(|(_, v)| v.as_n().unwrap().parse().unwrap())
            .collect()
    };
    let counter = |key: &'static str| {
        let direct = t.direct.clone();
        let table = t.tables.counters.clone();
        async move { items_with(&direct, &table, "key", key).await.remove(0) }
    };
    assert_eq!(
        tokens(&counter("hits").await),
        Vec::<u64>::new(),
        "the HTTP request's token went once its answer was recorded"
    );
    let kept = tokens(&counter("port").await);
    assert_eq!(kept.len(), 1, "{kept:?}");
    assert!((before * 1000..=(after + 1) * 1000).contains(&kept[0]));

    outlive_the_retention().await;
    assert_eq!(tokens(&counter("port").await), kept, "nothing removed it");
    let again = app.post_keyed("/increment", "same", five).await;
    assert_eq!(again.status, StatusCode::OK, "{:?}", again.body);
    assert_eq!(again.body["value"], 10, "counted again");
    assert!(!replayed(&again));
    assert_eq!(
        counters
            .increment(&port, 3, Some("port-key"))
            .await
            .unwrap(),
        Incremented::Total(6),
        "the expired marker does not stop the count"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_eventual_increment_key_reused_after_its_folded_marker_expired_counts_again() {
    let t = dynamodb_with_lazy_ttl(Mode::Eventual).await;
    let counters = &t.fixture.stores.counters;
    let aggregator = Aggregator::new(t.direct.clone(), &t.tables).with_retention(RETENTION);
    let key = CounterKey::parse("eventual").unwrap();
    // What the stream delivers for a keyed increment: its log entry, `done#<request key>`.
    let entry = || Entry {
        id: "done#port-key".to_owned(),
        key: key.as_str().to_owned(),
        value: 4,
        at: 0,
    };
    assert_eq!(
        counters.increment(&key, 4, Some("port-key")).await.unwrap(),
        Incremented::Accepted
    );
    let before = now();
    assert_eq!(aggregator.fold(vec![entry()]).await.unwrap(), 1);
    let after = now();
    // The marker is in the marker table; the log is empty.
    let markers = items_with(&t.direct, &t.tables.counter_markers, "id", "done#").await;
    assert_eq!(markers.len(), 1, "{markers:?}");
    assert!(items(&t.direct, &t.tables.counter_log).await.is_empty());
    assert_ttl_after_retention(&markers[0], before, after);
    assert_eq!(counters.get(&key).await.unwrap(), Some(4));

    outlive_the_retention().await;
    assert_eq!(
        counters.increment(&key, 4, Some("port-key")).await.unwrap(),
        Incremented::Accepted
    );
    // Accepted means logged: folding it counts it again.
    assert_eq!(aggregator.fold(vec![entry()]).await.unwrap(), 1);
    assert_eq!(counters.get(&key).await.unwrap(), Some(8));
}

/// A table's logical id in the template, from its name in this run (`t<uuid>-<LogicalId>`).
fn logical_id<'a>(template: &'a Template, name: &str) -> &'a str {
    let id = name.rsplit('-').next().unwrap_or(name);
    template
        .resources_of_type("AWS::DynamoDB::Table")
        .map(|(logical, _)| logical)
        .find(|logical| *logical == id)
        .unwrap_or_else(|| panic!("no table of the template is named like {name}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn every_table_the_code_writes_ttl_into_has_ttl_enabled_on_it_in_the_template() {
    let t = dynamodb(Mode::Strong).await;
    let app = &t.fixture.app;
    let stores = &t.fixture.stores;
    // One of each record that expires: idempotency records, a ledger request record, a folded counter marker,
    // an open transaction with a buffered write, a WebSocket session's transaction.
    let issued = app
        .post_keyed(
            "/certificates",
            "k1",
            json!({"name": "N", "amount": 1, "class": "CS"}),
        )
        .await;
    assert_eq!(issued.status, StatusCode::CREATED, "{:?}", issued.body);
    let counted = app
        .post_keyed("/increment", "k2", json!({"key": "c", "value": 1}))
        .await;
    assert_eq!(counted.status, StatusCode::OK, "{:?}", counted.body);
    // Strong increments keep their memory in the counter's item; the eventual fold leaves markers.
    let eventual = strata_dynamo::counters::DynamoCounters::new(
        t.direct.clone(),
        t.tables.counters.clone(),
        t.tables.counter_log.clone(),
        t.tables.counter_markers.clone(),
        Mode::Eventual,
        RETENTION,
    );
    let e = CounterKey::parse("e").unwrap();
    strata_core::counters::Counters::increment(&eventual, &e, 1, Some("k4"))
        .await
        .unwrap();
    let folded = Aggregator::new(t.direct.clone(), &t.tables)
        .with_retention(RETENTION)
        .fold(vec![Entry {
            id: "done#k4".to_owned(),
            key: "e".to_owned(),
            value: 1,
            at: 0,
        }])
        .await
        .unwrap();
    assert_eq!(folded, 1);
    let began = app.post_keyed("/kv/transactions", "k3", json!({})).await;
    assert_eq!(began.status, StatusCode::CREATED, "{:?}", began.body);
    let tx = began.body["id"].as_str().unwrap().to_owned();
    let put = app
        .put(
            &format!("/kv/transactions/{tx}/keys/a"),
            json!({"value": "1"}),
        )
        .await;
    assert_eq!(put.status, StatusCode::OK, "{:?}", put.body);
    let tx = strata_core::kv::tx::TxId::parse(&tx).unwrap();
    stores
        .connections
        .set_transaction("connection-1", Some(&tx))
        .await
        .unwrap();

    let template = Template::load();
    let tables = [
        &t.tables.kv,
        &t.tables.kv_tx,
        &t.tables.ledger,
        &t.tables.counters,
        &t.tables.counter_log,
        &t.tables.counter_markers,
        &t.tables.idempotency,
        &t.tables.ws_sessions,
        &t.tables.widgets,
    ];
    let mut expiring = Vec::new();
    for name in tables {
        if !items(&t.direct, name)
            .await
            .iter()
            .any(|i| i.contains_key(strata_dynamo::TTL))
        {
            continue;
        }
        let id = logical_id(&template, name);
        let spec = &template.doc()["Resources"][id]["Properties"]["TimeToLiveSpecification"];
        assert_eq!(
            spec["AttributeName"].as_str(),
            Some(strata_dynamo::TTL),
            "{id} holds items with {} but no TTL on it",
            strata_dynamo::TTL
        );
        assert_eq!(spec["Enabled"].as_bool(), Some(true), "{id}: TTL enabled");
        expiring.push(id);
    }
    expiring.sort();
    assert_eq!(
        expiring,
        [
            "CounterMarkerTable",
            "IdempotencyTable",
            "KvTxTable",
            "LedgerTable",
            "WsSessionTable"
        ]
    );
}
