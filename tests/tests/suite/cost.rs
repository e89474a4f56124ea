//! The cost meter counts right, and each operation stays within its DynamoDB budget: units are
//! deterministic for a given payload, so an operation that gets dearer fails here.

use serde_json::json;
use strata_core::Settings;
use strata_tests::cost::{Case, Meter, measure};
use strata_tests::fault_proxy::{FaultConfig, FaultProxy, metered_of};

/// The most each operation may take, one after the other, per operation: DynamoDB calls, WRU, RRU, and WRU
/// on its hot item (the class, the counter, the key every such operation writes). Units are deterministic
/// for a payload, so these are exact figures: an operation that gets dearer fails here, one that gets
/// cheaper should lower its line.
const BUDGETS: [(Case, f64, f64, f64, Option<f64>); 10] = [
    (Case::KvPut, 1.0, 1.0, 0.0, Some(1.0)),
    (Case::KvGet, 1.0, 0.0, 1.0, None),
    (Case::KvTx, 7.0, 12.0, 2.0, None),
    (Case::Issue, 4.0, 4.0, 0.0, Some(2.0)),
    (Case::IssueKeyed, 6.0, 6.0, 0.0, Some(2.0)),
    (Case::Increment, 1.0, 1.0, 0.0, Some(1.0)),
    (Case::IncrementKeyed, 3.1, 3.1, 0.0, Some(1.1)),
    (Case::Associate, 1.0, 4.0, 0.0, None),
    (Case::IncrementEventual, 1.2, 4.2, 0.1, None),
    (Case::IncrementEventualKeyed, 3.2, 6.2, 2.1, None),
];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_operation_stays_within_its_dynamodb_budget() {
    let mut rows = Vec::new();
    for (case, ..) in BUDGETS {
        rows.push(measure(case, 10, 1).await);
    }
    let table = strata_tests::cost::table(&rows);
    for ((case, calls, wru, rru, hot), row) in BUDGETS.iter().zip(&rows) {
        let within = |got: f64, most: f64| got <= most + 1e-9;
        assert!(
            within(row.calls, *calls)
                && within(row.wru, *wru)
                && within(row.rru, *rru)
                && within(row.hot.unwrap_or(0.0), hot.unwrap_or(0.0)),
            "{} over its budget ({calls} calls, {wru} WRU, {rru} RRU, {hot:?} on the hot item):\n{table}",
            case.label()
        );
    }
}

/// 20 issuers at once on one class: still 2 WRU on the class item per issue (it stays under 1 KB, whatever
/// the names and however many issues are in flight) and 4 WRU in all: 500 issues/s per class.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_issues_write_the_class_item_twice_at_1_wru() {
    for case in [Case::Issue, Case::IssueKeyed] {
        let row = measure(case, 60, 20).await;
        let table = strata_tests::cost::table(std::slice::from_ref(&row));
        assert!(row.hot.unwrap() <= 2.0 + 1e-9, "{table}");
        let most = if case == Case::Issue { 4.0 } else { 6.0 };
        assert!(row.wru <= most + 1e-9 && row.refused == 0.0, "{table}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_meter_counts_one_put_as_one_call_and_one_wru() {
    let meter = Meter::start(Settings::default()).await;
    meter.proxy.reset_stats();
    let r = meter
        .app
        .put("/kv/keys/one", json!({"value": "v".repeat(100)}))
        .await;
    assert!(r.status.is_success(), "{:?}", r.body);
    let stats = meter.proxy.stats();
    let total = stats.metered_total();
    assert_eq!(
        (total.calls, total.items, total.wru, total.rru),
        (1, 1, 1.0, 0.0)
    );
    let ((table, key), units) = stats.hottest_item().expect("the item written");
    assert_eq!(table, meter.through.tables.kv);
    assert!(key.contains("one"), "{key}");
    assert_eq!(units, 1.0);
    // The caller did not ask for the capacity and got an answer without it: the value came back whole.
    assert_eq!(r.body["value"], "v".repeat(100));

    // A value over 1 KB is billed per started KB; a strong read per started 4 KB.
    meter.proxy.reset_stats();
    meter
        .app
        .put("/kv/keys/one", json!({"value": "v".repeat(2500)}))
        .await;
    meter.app.get("/kv/keys/one").await;
    let total = meter.proxy.stats().metered_total();
    assert_eq!((total.calls, total.wru, total.rru), (2, 3.0, 1.0));
}

/// DynamoDB Local reports one item's units per table for a whole transaction; the meter sizes every item and
/// bills each twice, as DynamoDB does. A refused write is charged the floor.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_transaction_is_metered_as_dynamodb_bills_it() {
    let proxy = FaultProxy::start(
        strata_tests::dynamodb::endpoint(),
        1,
        FaultConfig::healthy().metered(),
    )
    .await;
    let (_, tables) = strata_tests::dynamodb::fresh_tables().await;
    let sdk = strata_tests::dynamodb::sdk_config(&proxy.url).await;
    let client = aws_sdk_dynamodb::Client::new(&sdk);
    use aws_sdk_dynamodb::types::{AttributeValue as A, Put, TransactWriteItem};
    let put = |pk: &str| {
        TransactWriteItem::builder()
            .put(
                Put::builder()
                    .table_name(&tables.kv)
                    .item("pk", A::S(pk.into()))
                    .build()
                    .unwrap(),
            )
            .build()
    };
    client
        .transact_write_items()
        .transact_items(put("a"))
        .transact_items(put("b"))
        .send()
        .await
        .unwrap();
    let m = proxy.stats().metered["TransactWriteItems"].clone();
    assert_eq!((m.calls, m.items, m.wru, m.rru), (1, 2, 4.0, 0.0));

    // Three items, one of 1.5 KB: 2 + 2 + 4 (DynamoDB Local itself says 2 for the lot).
    proxy.reset_stats();
    let big = TransactWriteItem::builder()
        .put(
            Put::builder()
                .table_name(&tables.kv)
                .item("pk", A::S("c".into()))
                .item("v", A::S("v".repeat(1500)))
                .build()
                .unwrap(),
        )
        .build();
    client
        .transact_write_items()
        .transact_items(put("a"))
        .transact_items(put("d"))
        .transact_items(big)
        .send()
        .await
        .unwrap();
    let m = proxy.stats().metered["TransactWriteItems"].clone();
    assert_eq!((m.calls, m.items, m.wru), (1, 3, 8.0));
    // Overwritten by a small one: billed by the larger size, before.
    proxy.reset_stats();
    client
        .transact_write_items()
        .transact_items(put("c"))
        .send()
        .await
        .unwrap();
    assert_eq!(proxy.stats().metered["TransactWriteItems"].wru, 4.0);

    proxy.reset_stats();
    let refused = client
        .put_item()
        .table_name(&tables.kv)
        .item("pk", A::S("a".into()))
        .condition_expression("attribute_not_exists(pk)")
        .send()
        .await;
    assert!(refused.is_err());
    let m = proxy.stats().metered["PutItem"].clone();
    assert_eq!((m.calls, m.refused, m.wru), (1, 1, 1.0));
}

/// The meter's arithmetic: an item's size by DynamoDB's rules, and a transaction's units from its actions'
/// sizes, each item twice.
#[test]
fn the_meter_sizes_items_and_transactions_as_dynamodb_bills_them() {
    let item = json!({"pk": {"S": "abc"}, "n": {"N": "12345"}, "m": {"M": {"k": {"BOOL": true}}}});
    // "pk" + "abc", "n" + 4 bytes for 5 digits, "m" + 3 + ("k" + 1 + 1)
    assert_eq!(strata_tests::fault_proxy::item_size(&item), 5 + 5 + 7);
    let request = json!({"TransactItems": [
        {"Update": {"TableName": "t", "Key": {"pk": {"S": "x"}}}},
        {"ConditionCheck": {"TableName": "t", "Key": {"pk": {"S": "y"}}}},
        {"Put": {"TableName": "u", "Item": {"pk": {"S": "z"}}}},
    ]});
    let (m, items) = metered_of(
        "TransactWriteItems",
        &request,
        &json!({}),
        true,
        Some(&[4.0, 2.0, 2.0]),
    );
    assert_eq!((m.calls, m.items, m.wru, m.rru), (1, 3, 8.0, 0.0));
    assert_eq!(
        items,
        vec![
            (("t".to_owned(), json!({"pk": {"S": "x"}}).to_string()), 4.0),
            (("t".to_owned(), json!({"pk": {"S": "y"}}).to_string()), 2.0),
        ]
    );
}

/// An idle `strata serve --store dynamodb` in strong mode makes no DynamoDB call (strong mode logs
/// nothing, so there is nothing to fold): one scan at start, then nothing. In eventual mode, having logged
/// nothing itself, it re-scans the log once per `LOCAL_RESCAN_IDLE` (for entries other processes left).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idle_server_in_strong_mode_makes_no_dynamodb_call() {
    let strata = env!("CARGO_BIN_EXE_strata-under-test");
    let window = std::time::Duration::from_secs(2);
    let (strong, stats) =
        strata_tests::cost::idle_calls_per_second(strata, &["--counter-mode", "strong"], window)
            .await;
    assert_eq!(strong, 0.0, "{stats}");
    let idle = strata_dynamo::aggregator::LOCAL_RESCAN_IDLE;
    let window = idle + std::time::Duration::from_secs(1);
    let (eventual, stats) =
        strata_tests::cost::idle_calls_per_second(strata, &["--counter-mode", "eventual"], window)
            .await;
    let scans = stats.by_operation.get("Scan").copied().unwrap_or(0);
    eprintln!("eventual, idle: {eventual:.2} calls/s; {stats}");
    // The window holds one or two re-scan times, never the 30 re-scans of one every 200 ms.
    assert!((1..=2).contains(&scans), "{stats}");
    assert_eq!(
        stats.total_requests(),
        scans,
        "nothing but re-scans: {stats}"
    );
}

/// After `n` keyed eventual increments, all folded, one idle re-scan: what it costs. The folds leave `n`
/// markers for the retention, in the marker table, which the re-scan does not read.
async fn idle_rescan_after(n: usize) -> strata_tests::fault_proxy::Metered {
    use strata_core::counters::{CounterKey, Mode};
    let proxy = FaultProxy::start(
        strata_tests::dynamodb::endpoint(),
        1,
        FaultConfig::healthy().metered(),
    )
    .await;
    let (_, tables) = strata_tests::dynamodb::fresh_tables().await;
    let client =
        strata_dynamo::config::client(&strata_tests::dynamodb::sdk_config(&proxy.url).await);
    let settings = Settings {
        counter_mode: Mode::Eventual,
        ..Settings::default()
    };
    let stores = strata_dynamo::stores(client.clone(), tables.clone(), &settings);
    let key = CounterKey::parse("idle").unwrap();
    let aggregator = strata_dynamo::aggregator::Aggregator::new(client, &tables);
    for i in 0..n {
        stores
            .counters
            .increment(&key, 1, Some(&format!("request-{i}")))
            .await
            .unwrap();
    }
    let folded = aggregator.rescan(std::time::Duration::ZERO).await.unwrap();
    assert_eq!(folded.folded, n, "the first re-scan folds every entry");
    let total = stores
        .counters
        .read(&key)
        .await
        .unwrap()
        .map_or(0, |r| r.total);
    assert_eq!(total, n as u64);
    proxy.reset_stats();
    let again = aggregator.rescan(std::time::Duration::ZERO).await.unwrap();
    assert_eq!(again.folded, 0, "nothing is left to fold");
    proxy.stats().metered_total()
}

/// The re-scan reads what is left to fold, not the markers kept for the retention: with everything
/// folded, it costs the same after 200 keyed increments as after none.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idle_rescan_costs_the_same_after_200_folded_keyed_increments_as_after_none() {
    let none = idle_rescan_after(0).await;
    let many = idle_rescan_after(200).await;
    eprintln!("idle re-scan after 0: {none:?}; after 200: {many:?}");
    assert_eq!(many.calls, 1, "{many:?}");
    assert!(
        many.rru <= none.rru + 1e-9,
        "after 0: {none:?}; after 200: {many:?}"
    );
}

/// `dynamodb-cost`, which `infra/bench/cost` runs, prints the table: each operation one after the other and
/// with concurrent clients.
#[test]
fn the_cost_command_prints_the_table() {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_dynamodb-cost"))
        .args(["--ops", "2", "--clients", "2"])
        // The run's DynamoDB Local (started here if this test is the first to need it).
        .env("AWS_ENDPOINT_URL", strata_tests::dynamodb::endpoint())
        .output()
        .expect("dynamodb-cost runs");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    for case in Case::ALL {
        assert_eq!(
            stdout.matches(&format!("| {} |", case.label())).count(),
            2,
            "{stdout}"
        );
    }
    assert!(
        stdout.contains("| certificate issue (256-char name) | 2 | 4.00 | 4.00 |"),
        "{stdout}"
    );
}

/// An `Idempotency-Key` costs at most 2 calls and 2 WRU more per keyed request than the same operation
/// without one (Powertools' price: the claim and the record of the answer), for every operation that takes
/// one, and at most 2 RRU more (an eventual increment, whose key the log keeps, reads the key's record
/// and its request's marker, 1 RRU each, where a record's writes and a check in its transaction would bill
/// 4 WRU). Per operation in a stream of them: what a run pays once, whatever its
/// length (its last keyed strong increment's token removal, which no later write carries; the re-scan that
/// folds a run's eventual increments), is left out by taking the difference of runs of 20 and 10.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idempotency_key_costs_at_most_two_calls_and_two_wru_more() {
    let mut lines = Vec::new();
    let mut over = Vec::new();
    for (plain, keyed, requests) in Case::KEYED {
        let (a, b) = (per_operation(plain).await, per_operation(keyed).await);
        let most = 2.0 * f64::from(requests) + 1e-9;
        let reads = 2.0 * f64::from(requests) + 1e-9;
        if b.0 - a.0 > most || b.1 - a.1 > most || b.2 - a.2 > reads {
            over.push(keyed.label());
        }
        lines.push(format!("{}: {a:?} calls, WRU, RRU", plain.label()));
        lines.push(format!("{}: {b:?}", keyed.label()));
    }
    assert!(
        over.is_empty(),
        "{over:?} cost too much more:\n{}",
        lines.join("\n")
    );
}

/// Calls, WRU and RRU per operation of `case` in a stream of them: runs of 20 and 10, their difference
/// over 10.
async fn per_operation(case: Case) -> (f64, f64, f64) {
    let (short, long) = (measure(case, 10, 1).await, measure(case, 20, 1).await);
    let more = |s: f64, l: f64| (l * 20.0 - s * 10.0) / 10.0;
    (
        more(short.calls, long.calls),
        more(short.wru, long.wru),
        more(short.rru, long.rru),
    )
}
