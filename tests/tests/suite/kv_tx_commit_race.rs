//! A key/value transaction's commit on DynamoDB against a write of the same transaction that lands while
//! the commit is under way. The commit reads the transaction's items (`Query`) and then writes them all in
//! one `TransactWriteItems`; the fault proxy holds that one write (its body, and only its, names
//! `:committed`) while `PUT /kv/transactions/{id}/keys/b` is staged, with its own write (an `UpdateItem`
//! of the transaction's item) let through at once. The `200` of that PUT must count: either the commit answers `200` with `b` in it,
//! or the commit fails and commits nothing. A commit that answers `200` without `b` has dropped an
//! acknowledged write.

use http::StatusCode;
use serde_json::json;
use std::time::{Duration, Instant};
use strata_tests::fault_proxy::{FaultConfig, FaultProxy};
use strata_tests::fixture::App;

/// How long the proxy holds the commit's write: long enough to stage a key in between, shorter than the
/// SDK's 3 s attempt timeout (so the SDK does not retry it).
const HOLD: Duration = Duration::from_millis(2000);

/// DynamoDB stores on fresh tables, reached through a healthy fault proxy (seeded with `seed`).
async fn behind_proxy(seed: u64) -> (FaultProxy, App) {
    let (_, tables) = strata_tests::dynamodb::fresh_tables().await;
    let proxy = FaultProxy::start(
        strata_tests::dynamodb::endpoint(),
        seed,
        FaultConfig::healthy(),
    )
    .await;
    let sdk = strata_tests::dynamodb::sdk_config(&proxy.url).await;
    let app = App::new(strata_dynamo::stores(
        strata_dynamo::config::client(&sdk),
        tables,
        &strata_core::Settings::default(),
    ));
    (proxy, app)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_write_staged_during_the_commit_is_committed_or_the_commit_fails() {
    let started = Instant::now();
    let (proxy, app) = behind_proxy(11).await;

    let begun = app.post("/kv/transactions", json!({})).await;
    assert_eq!(begun.status, StatusCode::CREATED, "{}", begun.body);
    let tx = begun.body["id"].as_str().expect("an id").to_owned();
    let key = |k: &str| format!("/kv/transactions/{tx}/keys/{k}");
    let a = app.put(&key("a"), json!({"value": "1"})).await;
    assert_eq!(a.status, StatusCode::OK, "{}", a.body);

    proxy.set(FaultConfig::healthy().with_slow_matching(HOLD, "TransactWriteItems", ":committed"));
    proxy.reset_stats();
    let committing = {
        let app = app.clone();
        let path = format!("/kv/transactions/{tx}/commit");
        tokio::spawn(async move { app.post(&path, json!({})).await })
    };
    // The commit's write is being held: stage b now.
    let waited = Instant::now();
    while proxy.stats().slowed == 0 {
        assert!(
            waited.elapsed() < Duration::from_secs(10),
            "the commit's TransactWriteItems never reached the proxy: {}",
            proxy.stats()
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let staging = Instant::now();
    let b = app.put(&key("b"), json!({"value": "2"})).await;
    let staged_in = staging.elapsed();
    let still_held = !committing.is_finished();
    let commit = committing.await.unwrap();
    let stats = proxy.stats();
    proxy.set(FaultConfig::healthy());
    println!(
        "PUT b: {} in {staged_in:?} (commit still held: {still_held}); commit: {} {}; proxy: {stats}",
        b.status, commit.status, commit.body
    );
    assert!(
        still_held,
        "b was not staged while the commit's write was held (took {staged_in:?})"
    );
    assert!(
        staged_in < HOLD,
        "the PUT's own write was held ({staged_in:?}): {stats}"
    );

    let read = |k: &'static str| {
        let app = app.clone();
        async move {
            let r = app.get(&format!("/kv/keys/{k}")).await;
            match r.status {
                StatusCode::OK => Some(r.body["value"].as_str().unwrap().to_owned()),
                StatusCode::NOT_FOUND => None,
                other => panic!("GET /kv/keys/{k}: {other} {}", r.body),
            }
        }
    };
    let (stored_a, stored_b) = (read("a").await, read("b").await);
    println!("after the commit: a = {stored_a:?}, b = {stored_b:?}");
    if commit.status == StatusCode::OK {
        assert_eq!(stored_a.as_deref(), Some("1"), "committed without a");
        if b.status == StatusCode::OK {
            assert_eq!(
                stored_b.as_deref(),
                Some("2"),
                "PUT b answered 200 during the commit, the commit answered 200 ({}), and b is not \
                 committed: an acknowledged write was dropped",
                commit.body
            );
            assert_eq!(commit.body["writes"], 2, "{}", commit.body);
        } else {
            assert_eq!(stored_b, None, "b was refused ({}) yet committed", b.body);
        }
    } else {
        // A failed commit commits nothing, and says why in the contract's terms.
        assert!(commit.status.is_client_error() || commit.status.is_server_error());
        assert!(commit.body["error"]["code"].is_string(), "{}", commit.body);
        assert_eq!(
            (stored_a, stored_b),
            (None, None),
            "the commit failed ({} {}) but committed something",
            commit.status,
            commit.body
        );
    }
    println!("took {:.1} s", started.elapsed().as_secs_f64());
}

/// Two commits of one transaction at once (a client retrying while its first commit still runs): one
/// commits, the other answers `404` (the transaction is over) or a retryable `503` — never a `500`. The
/// proxy holds both commits' writes, so both have planned before either writes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_commits_of_one_transaction_at_once_commit_it_once_and_neither_fails_internally() {
    let (proxy, app) = behind_proxy(12).await;
    let begun = app.post("/kv/transactions", json!({})).await;
    let tx = begun.body["id"].as_str().expect("an id").to_owned();
    let put = app
        .put(
            &format!("/kv/transactions/{tx}/keys/once"),
            json!({"value": "1"}),
        )
        .await;
    assert_eq!(put.status, StatusCode::OK, "{}", put.body);

    proxy.set(FaultConfig::healthy().with_slow_matching(
        Duration::from_millis(1000),
        "TransactWriteItems",
        ":committed",
    ));
    let path = format!("/kv/transactions/{tx}/commit");
    let commit = || {
        let (app, path) = (app.clone(), path.clone());
        tokio::spawn(async move { app.post(&path, json!({})).await })
    };
    let (first, second) = (commit(), commit());
    let (first, second) = (first.await.unwrap(), second.await.unwrap());
    proxy.set(FaultConfig::healthy());
    let statuses = [first.status, second.status];
    println!(
        "commits: {} {} / {} {}",
        first.status, first.body, second.status, second.body
    );
    assert_eq!(
        statuses.iter().filter(|s| **s == StatusCode::OK).count(),
        1,
        "exactly one commit succeeds: {} {} / {} {}",
        first.status,
        first.body,
        second.status,
        second.body
    );
    for r in [&first, &second] {
        assert!(
            [
                StatusCode::OK,
                StatusCode::NOT_FOUND,
                StatusCode::SERVICE_UNAVAILABLE
            ]
            .contains(&r.status),
            "a racing commit answered {} {}",
            r.status,
            r.body
        );
    }
    let stored = app.get("/kv/keys/once").await;
    assert_eq!(
        (stored.status, stored.body["version"].clone()),
        (StatusCode::OK, json!(1))
    );
}
