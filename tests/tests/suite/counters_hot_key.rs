//! One hot counter on the real `strata serve`: on DynamoDB (through the fault proxy, which counts writes per
//! item and write units) the eventual log is folded by the server's own fold loop, within the contract's
//! second and exactly once across `kill -9`; and the figures of 20 clients on one key in both modes, on
//! DynamoDB Local and on the embedded store (an `#[ignore]`d test that prints them:
//! `cargo nextest run -p strata-tests --run-ignored only -E 'test(hot_key_figures)' --no-capture`).

use serde_json::{Value, json};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};
use strata_tests::fault_proxy::{FaultConfig, FaultProxy};
use strata_tests::server::Server;

/// Fresh tables in the run's DynamoDB Local, and the environment and arguments of a `strata serve --store
/// dynamodb` on them through `proxy`.
async fn dynamodb_server_args(proxy: &FaultProxy) -> (Vec<(String, String)>, Vec<String>, String) {
    let prefix = format!("hot{}-", &uuid::Uuid::new_v4().simple().to_string()[..12]);
    strata::dynamodb_local::create_tables(
        &strata::dynamodb_local::local_client(strata_tests::dynamodb::endpoint()).await,
        &prefix,
    )
    .await
    .expect("tables are created");
    let env = [
        ("AWS_ENDPOINT_URL", proxy.url.as_str()),
        ("AWS_REGION", "us-east-1"),
        ("AWS_ACCESS_KEY_ID", "local"),
        ("AWS_SECRET_ACCESS_KEY", "local"),
    ]
    .map(|(k, v)| (k.to_owned(), v.to_owned()))
    .to_vec();
    let args = ["--store", "dynamodb", "--table-prefix", &prefix]
        .map(str::to_owned)
        .to_vec();
    (env, args, format!("{prefix}CounterTable"))
}

/// `clients` concurrent clients each sending `each` increments of 1 to `key` (stopping at the first
/// failure, as at a kill); returns (acknowledged, sent).
async fn load(base: &str, key: &str, clients: u64, each: u64) -> (u64, u64) {
    load_with(base, key, clients, each, true).await
}

/// The same; with `stop_on_failure` false a client goes on after a `503` (an outcome unknown: a loaded
/// machine can hold a DynamoDB Local answer past the SDK's attempt timeout) or a dropped connection.
async fn load_with(
    base: &str,
    key: &str,
    clients: u64,
    each: u64,
    stop_on_failure: bool,
) -> (u64, u64) {
    let http = reqwest::Client::new();
    let (acked, sent) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
    let tasks: Vec<_> = (0..clients)
        .map(|_| {
            let (http, acked, sent) = (http.clone(), acked.clone(), sent.clone());
            let (url, key) = (format!("{base}/increment"), key.to_owned());
            tokio::spawn(async move {
                for _ in 0..each {
                    sent.fetch_add(1, Ordering::SeqCst);
                    let answer = http
                        .post(&url)
                        .json(&json!({"key": key, "value": 1}))
                        .send()
                        .await;
                    match answer {
                        Ok(r) if r.status().is_success() => {
                            acked.fetch_add(1, Ordering::SeqCst);
                        }
                        _ if stop_on_failure => return,
                        _ => {}
                    }
                }
            })
        })
        .collect();
    for t in tasks {
        t.await.unwrap();
    }
    (acked.load(Ordering::SeqCst), sent.load(Ordering::SeqCst))
}

async fn total(base: &str, key: &str) -> Option<u64> {
    let r = reqwest::get(format!("{base}/increment/{key}")).await.ok()?;
    let body: Value = r.json().await.ok()?;
    body[key].as_u64()
}

/// Polls the total until it is `expected` (or, with `at_most`, holds still within `expected..=at_most`
/// for 2 s), at most `within`; returns the total and how long it took to reach it (its last change).
async fn settle(
    base: &str,
    key: &str,
    expected: u64,
    at_most: u64,
    within: Duration,
) -> (u64, Duration) {
    let started = Instant::now();
    let (mut last, mut since) = (None, Instant::now());
    loop {
        let now = total(base, key).await;
        if now != last {
            (last, since) = (now, Instant::now());
        }
        match now {
            Some(t) if t == expected && t == at_most => return (t, started.elapsed()),
            Some(t)
                if (expected..=at_most).contains(&t)
                    && since.elapsed() > Duration::from_secs(2) =>
            {
                return (t, since.saturating_duration_since(started));
            }
            _ => {}
        }
        assert!(
            started.elapsed() < within,
            "{key}: {now:?} after {within:?}, expected {expected}..={at_most}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// `strata serve --store dynamodb --counter-mode eventual` folds its log itself: the total is exact soon
/// after the last acknowledgement (the contract's second, asserted loosely: a loaded test machine may stall
/// any process), the counter's item is written far less than once per increment, and after `kill -9` in
/// the middle of a load the restarted server folds what was logged: acknowledged ≤ total ≤ sent.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn strata_serve_on_dynamodb_folds_the_eventual_log_exactly_once_across_kill_9() {
    let proxy = FaultProxy::start(
        strata_tests::dynamodb::endpoint(),
        7,
        FaultConfig::healthy(),
    )
    .await;
    let (env, mut args, counter_table) = dynamodb_server_args(&proxy).await;
    args.extend(["--counter-mode", "eventual"].map(str::to_owned));
    let dir = tempfile::tempdir().unwrap();
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let mut server = Server::start_with_env(crate::STRATA, dir.path(), &args, &env);
    let (acked, sent) = load(&server.base, "hits", 10, 30).await;
    assert_eq!((acked, sent), (300, 300));
    let (_, took) = settle(&server.base, "hits", 300, 300, Duration::from_secs(30)).await;
    eprintln!("300 increments folded {took:?} after the last acknowledgement");
    // No increment writes the counter's item: only folding does, once per chunk of up to 99 entries of
    // a folding round (one Scan of the log each), however slowly the load ran.
    let stats = proxy.stats();
    let writes = stats.writes_to(&counter_table, &json!({"key": {"S": "hits"}}));
    let rounds = stats.requests("Scan");
    eprintln!("{writes} writes to the counter's item for 300 increments, {rounds} folding rounds");
    assert!(
        writes >= 1 && writes <= rounds.min(300) + 300 / 99 + 1 && writes < 300,
        "{writes} writes to the counter's item for 300 increments ({rounds} rounds)"
    );

    // kill -9 while 10 clients increment; the restarted server folds the log left behind.
    let base = server.base.clone();
    let loading = tokio::spawn(async move { load(&base, "hits", 10, 1_000).await });
    // Killed mid-load, once the fold loop has folded some of it (however slowly a loaded machine runs).
    let started = Instant::now();
    while total(&server.base, "hits").await.unwrap_or(0) < 320 {
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "the load never ran"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    server.kill9();
    let (acked, sent) = loading.await.unwrap();
    // 20 folded were logged; of them at most one per client (10) can still have been waiting for its answer.
    assert!(acked >= 10, "the load ran ({acked} acknowledged)");
    server.restart();
    let (settled, _) = settle(
        &server.base,
        "hits",
        300 + acked,
        300 + sent,
        Duration::from_secs(60),
    )
    .await;
    eprintln!(
        "after kill -9: acknowledged {acked}, sent {sent}, counted {}",
        settled - 300
    );
}

/// One mode's run of the figures.
struct Figures {
    store: &'static str,
    mode: &'static str,
    increments: u64,
    /// Answered `503` (outcome unknown) or not at all.
    unknown: u64,
    accepted_in: Duration,
    exact_after: Duration,
    /// DynamoDB only: writes to the counter's item, and the write units of the whole run.
    item_writes: Option<u64>,
    write_units: Option<u64>,
}

async fn figures_of(store: &'static str, mode: &'static str, clients: u64, each: u64) -> Figures {
    let proxy = FaultProxy::start(
        strata_tests::dynamodb::endpoint(),
        5,
        FaultConfig::healthy(),
    )
    .await;
    let dir = tempfile::tempdir().unwrap();
    let (env, mut args, counter_table) = if store == "dynamodb" {
        dynamodb_server_args(&proxy).await
    } else {
        (Vec::new(), Vec::new(), String::new())
    };
    args.extend(["--counter-mode", mode].map(str::to_owned));
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let server = Server::start_with_env(crate::STRATA, dir.path(), &args, &env);
    proxy.reset_stats();
    let started = Instant::now();
    let (acked, sent) = load_with(&server.base, "hot", clients, each, false).await;
    let accepted_in = started.elapsed();
    // With unknown outcomes the total lands between the acknowledged and the sent, and "exact" is when it
    // stops moving.
    let (_, exact_after) = settle(&server.base, "hot", acked, sent, Duration::from_secs(600)).await;
    // What folding still writes after the total is exact is part of the cost: let it finish.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let stats = proxy.stats();
    let dynamodb = store == "dynamodb";
    Figures {
        store,
        mode,
        increments: acked,
        unknown: sent - acked,
        accepted_in,
        exact_after,
        item_writes: dynamodb
            .then(|| stats.writes_to(&counter_table, &json!({"key": {"S": "hot"}}))),
        write_units: dynamodb.then_some(stats.write_units),
    }
}

/// The hot-key figures: `STRATA_HOT_CLIENTS` clients (20) × `STRATA_HOT_INCREMENTS` increments of 1 (1,000)
/// on one key, strong and eventual, on `strata serve --store dynamodb` (DynamoDB Local through the fault
/// proxy, healthy) and on the embedded store, in one run. Printed, not asserted: they are benchmark figures
/// of this build and machine.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
#[ignore = "a benchmark: prints figures (about 2 minutes); run with --run-ignored only"]
async fn hot_key_figures() {
    let var = |name: &str, default: u64| {
        std::env::var(name)
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(default)
    };
    let (clients, each) = (
        var("STRATA_HOT_CLIENTS", 20),
        var("STRATA_HOT_INCREMENTS", 1_000),
    );
    let mut all = Vec::new();
    for store in ["dynamodb", "embedded"] {
        for mode in ["strong", "eventual"] {
            all.push(figures_of(store, mode, clients, each).await);
        }
    }
    println!(
        "\n{clients} clients x {each} increments of 1 on one key, strata serve (this build), one run:\n"
    );
    println!(
        "| store | mode | acknowledged (unknown) | accepted in | increments/s | total exact after last ack | writes to the counter's item per 1,000 | write units per increment |"
    );
    println!("|---|---|---|---|---|---|---|---|");
    for f in &all {
        let per_thousand = f
            .item_writes
            .map(|w| format!("{:.1}", w as f64 * 1000.0 / f.increments as f64))
            .unwrap_or_else(|| "-".into());
        let units = f
            .write_units
            .map(|u| format!("{:.2}", u as f64 / f.increments as f64))
            .unwrap_or_else(|| "-".into());
        println!(
            "| {} | {} | {} ({}) | {:.1} s | {:.0} | {} ms | {per_thousand} | {units} |",
            f.store,
            f.mode,
            f.increments,
            f.unknown,
            f.accepted_in.as_secs_f64(),
            f.increments as f64 / f.accepted_in.as_secs_f64(),
            f.exact_after.as_millis(),
        );
    }
}
