//! The DynamoDB stores behind the fault proxy (`strata_tests::fault_proxy`): lost answers, 500s, resets,
//! delayed answers and throttling on the writes of each service, through the local server's router and
//! strata's own SDK client. Each test states a promise a retried or failed write must keep: a write counts
//! once, a lost answer is not reported as a failure that invites a second write, an allocated number is
//! never lost nor used twice.

use aws_sdk_dynamodb::types::AttributeValue;
use axum::body::Body;
use http::{Method, StatusCode};
use serde_json::{Value, json};
use std::collections::BTreeSet;
use std::time::{Duration, Instant};
use strata_core::Settings;
use strata_tests::fault_proxy::{FaultConfig, FaultKind, FaultProxy};
use strata_tests::fixture::{App, Fixture, Reply, Through};

struct Setup {
    proxy: FaultProxy,
    through: Through,
}

impl Setup {
    fn app(&self) -> &App {
        &self.through.fixture.app
    }
}

/// Fresh tables, the stores reached through a proxy that starts healthy.
async fn setup() -> Setup {
    let proxy = FaultProxy::start(
        strata_tests::dynamodb::endpoint(),
        7,
        FaultConfig::healthy(),
    )
    .await;
    let through = Fixture::dynamodb_through(&proxy.url, Settings::default()).await;
    Setup { proxy, through }
}

fn request(method: Method, path: &str, key: Option<&str>, body: &Value) -> http::Request<Body> {
    let mut builder = http::Request::builder()
        .method(method)
        .uri(path)
        .header("content-type", "application/json");
    if let Some(key) = key {
        builder = builder.header("idempotency-key", key);
    }
    builder.body(Body::from(body.to_string())).unwrap()
}

/// A `503` in the contract's error JSON, with `retry-after`.
fn assert_unavailable(r: &Reply, what: &str) {
    assert_eq!(
        r.status,
        StatusCode::SERVICE_UNAVAILABLE,
        "{what}: {:?}",
        r.body
    );
    assert_eq!(r.code(), "store_unavailable", "{what}: {:?}", r.body);
    assert!(
        r.body["error"]["message"]
            .as_str()
            .is_some_and(|m| !m.is_empty()),
        "{what}: {:?}",
        r.body
    );
    assert!(
        r.headers.contains_key("retry-after"),
        "{what}: no retry-after: {:?}",
        r.headers
    );
}

async fn counter_total(app: &App, key: &str) -> u64 {
    let r = app.get(&format!("/increment/{key}")).await;
    match r.status {
        StatusCode::NOT_FOUND => 0,
        StatusCode::OK => r.body[key].as_u64().unwrap(),
        other => panic!("GET /increment/{key}: {other} {:?}", r.body),
    }
}

// --- 1. Unkeyed strong increments -------------------------------------------------------------------------

/// An unkeyed strong increment whose `UpdateItem` applied but whose answer was lost (`kind`).
async fn unkeyed_increment_with_a_lost_answer_counts_once(kind: FaultKind) {
    let t = setup().await;
    t.proxy
        .set(FaultConfig::only(kind, 1.0).on(&["UpdateItem"]).at_most(1));
    let r = t
        .app()
        .post("/increment", json!({"key": "c", "value": 1}))
        .await;
    t.proxy.set(FaultConfig::healthy());
    println!("{kind}: {} {:?}\n{}", r.status, r.body, t.proxy.stats());
    assert_eq!(t.proxy.stats().faults_of(kind), 1, "the fault was injected");
    let total = counter_total(t.app(), "c").await;
    assert_eq!(total, 1, "{kind}: one increment of 1 counts exactly once");
    if r.status == StatusCode::OK {
        assert_eq!(r.body, json!({"key": "c", "value": 1}));
    } else {
        assert_unavailable(&r, kind.name());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unkeyed_strong_increment_applied_then_500_counts_exactly_once() {
    unkeyed_increment_with_a_lost_answer_counts_once(FaultKind::AppliedThen500).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unkeyed_strong_increment_reset_mid_answer_counts_exactly_once() {
    unkeyed_increment_with_a_lost_answer_counts_once(FaultKind::ResetMidAnswer).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unkeyed_strong_increment_applied_then_delayed_counts_exactly_once() {
    unkeyed_increment_with_a_lost_answer_counts_once(FaultKind::AppliedThenDelayed).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unkeyed_strong_increment_refused_with_500_counts_at_most_once_and_not_at_all_if_503() {
    let t = setup().await;
    t.proxy.set(
        FaultConfig::only(FaultKind::Before500, 1.0)
            .on(&["UpdateItem"])
            .at_most(1),
    );
    let r = t
        .app()
        .post("/increment", json!({"key": "c", "value": 1}))
        .await;
    t.proxy.set(FaultConfig::healthy());
    let total = counter_total(t.app(), "c").await;
    println!(
        "{} {:?}, total {total}\n{}",
        r.status,
        r.body,
        t.proxy.stats()
    );
    match r.status {
        StatusCode::OK => {
            assert_eq!(r.body, json!({"key": "c", "value": 1}));
            assert_eq!(total, 1);
        }
        _ => {
            assert_unavailable(&r, "before_500");
            assert_eq!(total, 0, "a 503 for a write that was never forwarded");
        }
    }
}

// --- 2. KV single-key writes ------------------------------------------------------------------------------

async fn lose_next(t: &Setup, operation: &str) {
    t.proxy.set(
        FaultConfig::only(FaultKind::AppliedThen500, 1.0)
            .on(&[operation])
            .at_most(1),
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kv_put_whose_answer_was_lost_makes_exactly_one_new_version() {
    let t = setup().await;
    let app = t.app();
    let r = app.put("/kv/keys/k", json!({"value": "a"})).await;
    assert_eq!((r.status, &r.body["version"]), (StatusCode::OK, &json!(1)));
    lose_next(&t, "UpdateItem").await;
    let r = app.put("/kv/keys/k", json!({"value": "b"})).await;
    t.proxy.set(FaultConfig::healthy());
    assert_eq!(t.proxy.stats().faults_of(FaultKind::AppliedThen500), 1);
    assert_eq!(
        (r.status, &r.body),
        (
            StatusCode::OK,
            &json!({"key": "k", "value": "b", "version": 2})
        ),
        "the second PUT made version 2"
    );
    let got = app.get("/kv/keys/k").await;
    assert_eq!(
        (got.status, &got.body),
        (
            StatusCode::OK,
            &json!({"key": "k", "value": "b", "version": 2})
        )
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kv_delete_whose_answer_was_lost_reports_deleted_and_versions_grow_by_one_per_write() {
    let t = setup().await;
    let app = t.app();
    assert_eq!(
        app.put("/kv/keys/k", json!({"value": "a"})).await.body["version"],
        1
    );
    lose_next(&t, "UpdateItem").await;
    let r = app.delete("/kv/keys/k").await;
    t.proxy.set(FaultConfig::healthy());
    assert_eq!(t.proxy.stats().faults_of(FaultKind::AppliedThen500), 1);
    assert_eq!(
        (r.status, &r.body),
        (StatusCode::OK, &json!({"key": "k", "deleted": true})),
        "the DELETE deleted the value"
    );
    assert_eq!(app.get("/kv/keys/k").await.status, StatusCode::NOT_FOUND);
    let r = app.put("/kv/keys/k", json!({"value": "c"})).await;
    assert_eq!(
        (r.status, &r.body["version"]),
        (StatusCode::OK, &json!(3)),
        "PUT 1, DELETE 2, PUT 3: {:?}",
        r.body
    );
    // And a PUT with a lost answer right after the delete makes one version too.
    lose_next(&t, "UpdateItem").await;
    let r = app.put("/kv/keys/k", json!({"value": "d"})).await;
    t.proxy.set(FaultConfig::healthy());
    assert_eq!(
        (r.status, &r.body["version"]),
        (StatusCode::OK, &json!(4)),
        "{:?}",
        r.body
    );
    assert_eq!(app.get("/kv/keys/k").await.body["version"], 4);
}

// --- 3. KV transactions -----------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kv_transaction_begin_whose_answer_was_lost_answers_an_id_that_works() {
    let t = setup().await;
    let app = t.app();
    lose_next(&t, "PutItem").await;
    let started = Instant::now();
    let r = app.post("/kv/transactions", json!({})).await;
    t.proxy.set(FaultConfig::healthy());
    println!(
        "{} {:?} after {:?}\n{}",
        r.status,
        r.body,
        started.elapsed(),
        t.proxy.stats()
    );
    assert_eq!(t.proxy.stats().faults_of(FaultKind::AppliedThen500), 1);
    assert!(
        r.status == StatusCode::CREATED || r.status == StatusCode::OK,
        "begin: {} {:?}",
        r.status,
        r.body
    );
    let id = r.body["id"].as_str().expect("an id").to_owned();
    let staged = app
        .put(
            &format!("/kv/transactions/{id}/keys/a"),
            json!({"value": "x"}),
        )
        .await;
    assert_eq!(staged.status, StatusCode::OK, "{:?}", staged.body);
    let committed = app
        .post(&format!("/kv/transactions/{id}/commit"), json!({}))
        .await;
    assert_eq!(
        (committed.status, &committed.body),
        (
            StatusCode::OK,
            &json!({"id": id, "committed": true, "writes": 1})
        )
    );
    assert_eq!(
        app.get("/kv/keys/a").await.body,
        json!({"key": "a", "value": "x", "version": 1})
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kv_transaction_rollback_whose_answer_was_lost_answers_rolled_back() {
    let t = setup().await;
    let app = t.app();
    let id = app.post("/kv/transactions", json!({})).await.body["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let staged = app
        .put(
            &format!("/kv/transactions/{id}/keys/a"),
            json!({"value": "x"}),
        )
        .await;
    assert_eq!(staged.status, StatusCode::OK, "{:?}", staged.body);
    lose_next(&t, "UpdateItem").await;
    let started = Instant::now();
    let r = app
        .post(&format!("/kv/transactions/{id}/rollback"), json!({}))
        .await;
    t.proxy.set(FaultConfig::healthy());
    println!(
        "{} {:?} after {:?}\n{}",
        r.status,
        r.body,
        started.elapsed(),
        t.proxy.stats()
    );
    assert_eq!(t.proxy.stats().faults_of(FaultKind::AppliedThen500), 1);
    assert_eq!(
        (r.status, &r.body),
        (StatusCode::OK, &json!({"id": id, "rolled_back": true})),
        "the rollback applied"
    );
    let commit = app
        .post(&format!("/kv/transactions/{id}/commit"), json!({}))
        .await;
    assert_ne!(commit.status, StatusCode::OK, "{:?}", commit.body);
    assert_eq!(app.get("/kv/keys/a").await.status, StatusCode::NOT_FOUND);
}

/// The next write whose body holds `marker` applies and its answer is lost (`kind`); the SDK retries it.
fn lose_matching(t: &Setup, operation: &str, marker: &str, kind: FaultKind) {
    t.proxy.reset_stats();
    t.proxy.set(
        FaultConfig::only(kind, 1.0)
            .on(&[operation])
            .matching(marker)
            .at_most(1),
    );
}

const LOST: [FaultKind; 2] = [FaultKind::AppliedThen500, FaultKind::ResetMidAnswer];

async fn begin_tx(app: &App) -> String {
    let r = app.post("/kv/transactions", json!({})).await;
    assert_eq!(r.status, StatusCode::CREATED, "{:?}", r.body);
    r.body["id"].as_str().unwrap().to_owned()
}

/// A read inside a transaction is recorded by one `UpdateItem` on the transaction's item: a retry of it
/// after it applied answers the read, and the read is validated once at commit (a change in between is a
/// conflict; no change commits).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kv_transaction_read_whose_answer_was_lost_is_answered_and_validated() {
    let t = setup().await;
    let app = t.app();
    app.put("/kv/keys/r", json!({"value": "a"})).await;
    for (i, kind) in LOST.into_iter().enumerate() {
        for changed in [false, true] {
            let id = begin_tx(app).await;
            let w = format!("w{i}{changed}");
            lose_matching(&t, "UpdateItem", ":max_keys", kind);
            let read = app.get(&format!("/kv/transactions/{id}/keys/r")).await;
            t.proxy.set(FaultConfig::healthy());
            assert_eq!(t.proxy.stats().faults_of(kind), 1, "{kind:?}");
            assert_eq!(read.status, StatusCode::OK, "{kind:?}: {:?}", read.body);
            assert_eq!(read.body["value"], "a", "{kind:?}: {:?}", read.body);
            let version = read.body["version"].as_u64().unwrap();
            let staged = app
                .put(
                    &format!("/kv/transactions/{id}/keys/{w}"),
                    json!({"value": "x"}),
                )
                .await;
            assert_eq!(staged.status, StatusCode::OK, "{:?}", staged.body);
            if changed {
                let r = app.put("/kv/keys/r", json!({"value": "a"})).await;
                assert_eq!(r.body["version"], version + 1);
            }
            let commit = app
                .post(&format!("/kv/transactions/{id}/commit"), json!({}))
                .await;
            if changed {
                assert_eq!(
                    commit.status,
                    StatusCode::CONFLICT,
                    "{kind:?}: {:?}",
                    commit.body
                );
                assert_eq!(commit.body["error"]["key"], "r");
                assert_eq!(
                    app.get(&format!("/kv/keys/{w}")).await.status,
                    StatusCode::NOT_FOUND
                );
            } else {
                assert_eq!(
                    (commit.status, &commit.body["writes"]),
                    (StatusCode::OK, &json!(1)),
                    "{kind:?}: {:?}",
                    commit.body
                );
                assert_eq!(app.get(&format!("/kv/keys/{w}")).await.body["version"], 1);
            }
        }
    }
}

/// A buffered write held in the transaction's item, whose answer was lost after it applied, is buffered
/// once: read back as written, committed once, and the transaction's key count is not charged twice (the
/// 99th distinct key is still accepted, the 100th refused).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kv_transaction_write_whose_answer_was_lost_is_buffered_once() {
    let t = setup().await;
    let app = t.app();
    for kind in LOST {
        let id = begin_tx(app).await;
        lose_matching(&t, "UpdateItem", ":inline_room", kind);
        let staged = app
            .put(
                &format!("/kv/transactions/{id}/keys/a"),
                json!({"value": "x"}),
            )
            .await;
        t.proxy.set(FaultConfig::healthy());
        assert_eq!(t.proxy.stats().faults_of(kind), 1, "{kind:?}");
        assert_eq!(staged.status, StatusCode::OK, "{kind:?}: {:?}", staged.body);
        for k in 0..98 {
            let r = app
                .put(
                    &format!("/kv/transactions/{id}/keys/k{k}"),
                    json!({"value": ""}),
                )
                .await;
            assert_eq!(r.status, StatusCode::OK, "{kind:?} k{k}: {:?}", r.body);
        }
        let over = app
            .put(
                &format!("/kv/transactions/{id}/keys/z"),
                json!({"value": "x"}),
            )
            .await;
        assert_eq!(
            over.status,
            StatusCode::PAYLOAD_TOO_LARGE,
            "{:?}",
            over.body
        );
        let read = app.get(&format!("/kv/transactions/{id}/keys/a")).await;
        assert_eq!(read.body["value"], "x", "{kind:?}: {:?}", read.body);
        let commit = app
            .post(&format!("/kv/transactions/{id}/commit"), json!({}))
            .await;
        assert_eq!(
            (commit.status, &commit.body["writes"]),
            (StatusCode::OK, &json!(99)),
            "{kind:?}: {:?}",
            commit.body
        );
    }
    assert_eq!(
        app.get("/kv/keys/a").await.body,
        json!({"key": "a", "value": "x", "version": 2}),
        "one version per commit"
    );
}

/// A write whose answer was lost after it applied counts its bytes once, whichever way it was written: the
/// transaction still takes exactly 4,000,000 bytes, not one more, and reads back the write.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kv_transaction_large_writes_whose_answers_were_lost_count_their_bytes_once() {
    let t = setup().await;
    let app = t.app();
    let big = strata_core::kv::MAX_VALUE_BYTES;
    // The write held in the header without reading it; the one decided on exact counts after that was
    // refused (the counts, upper bounds, show too many bytes held after a first write of the key); the
    // one too large for the header.
    for (operation, marker, size, before) in [
        ("UpdateItem", ":inline_room", 100, false),
        ("UpdateItem", ":seen", 300, true),
        ("TransactWriteItems", ":seen", big, false),
    ] {
        for kind in LOST {
            let id = begin_tx(app).await;
            let key = |k: &str| format!("/kv/transactions/{id}/keys/{k}");
            if before {
                let r = app
                    .put(&key("lost"), json!({"value": "w".repeat(size)}))
                    .await;
                assert_eq!(r.status, StatusCode::OK, "{:?}", r.body);
            }
            lose_matching(&t, operation, marker, kind);
            // "lost" + value: 4 + size bytes.
            let r = app
                .put(&key("lost"), json!({"value": "v".repeat(size)}))
                .await;
            t.proxy.set(FaultConfig::healthy());
            assert_eq!(t.proxy.stats().faults_of(kind), 1, "{operation} {kind:?}");
            assert_eq!(
                r.status,
                StatusCode::OK,
                "{operation} {kind:?}: {:?}",
                r.body
            );
            let mut left = strata_core::kv::tx::MAX_TX_BYTES - 4 - size;
            let mut k = 0;
            while left > 0 {
                // A key of 4 bytes ("b000") and the rest of the value.
                let value = (left - 4).min(big);
                let r = app
                    .put(
                        &key(&format!("b{k:03}")),
                        json!({"value": "v".repeat(value)}),
                    )
                    .await;
                assert_eq!(
                    r.status,
                    StatusCode::OK,
                    "{operation} {kind:?} {left}: {:?}",
                    r.body
                );
                left -= 4 + value;
                k += 1;
            }
            let over = app.put(&key("c"), json!({"value": ""})).await;
            assert_eq!(
                (over.status, over.code()),
                (StatusCode::PAYLOAD_TOO_LARGE, "transaction_too_large"),
                "{operation} {kind:?}: {:?}",
                over.body
            );
            let read = app.get(&key("lost")).await;
            assert_eq!(read.body["value"], "v".repeat(size), "{operation} {kind:?}");
            let r = app
                .post(&format!("/kv/transactions/{id}/rollback"), json!({}))
                .await;
            assert_eq!(r.status, StatusCode::OK, "{:?}", r.body);
        }
    }
}

/// A commit whose `TransactWriteItems` applied and lost its answer commits once: `200` with its writes,
/// each key one version further, and the transaction is over.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kv_transaction_commit_whose_answer_was_lost_commits_once() {
    let t = setup().await;
    let app = t.app();
    app.put("/kv/keys/r", json!({"value": "a"})).await;
    for (round, kind) in LOST.into_iter().enumerate() {
        let id = begin_tx(app).await;
        let key = |k: &str| format!("/kv/transactions/{id}/keys/{k}");
        assert_eq!(app.get(&key("r")).await.status, StatusCode::OK);
        app.put(&key("a"), json!({"value": format!("a{round}")}))
            .await;
        app.put(&key("b"), json!({"value": "v".repeat(2000)})).await;
        app.delete(&key("d")).await;
        lose_matching(&t, "TransactWriteItems", ":committed", kind);
        let commit = app
            .post(&format!("/kv/transactions/{id}/commit"), json!({}))
            .await;
        t.proxy.set(FaultConfig::healthy());
        assert_eq!(t.proxy.stats().faults_of(kind), 1, "{kind:?}");
        assert_eq!(
            (commit.status, &commit.body),
            (
                StatusCode::OK,
                &json!({"id": id, "committed": true, "writes": 3})
            ),
            "{kind:?}"
        );
        let version = round as u64 + 1;
        assert_eq!(
            app.get("/kv/keys/a").await.body,
            json!({"key": "a", "value": format!("a{round}"), "version": version})
        );
        assert_eq!(app.get("/kv/keys/b").await.body["version"], version);
        assert_eq!(app.get("/kv/keys/r").await.body["version"], 1);
        let again = app
            .post(&format!("/kv/transactions/{id}/commit"), json!({}))
            .await;
        assert_eq!(again.status, StatusCode::NOT_FOUND, "{:?}", again.body);
    }
}

// --- 4. Widgets -------------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn widget_create_whose_answer_was_lost_answers_201_not_duplicate() {
    let t = setup().await;
    let app = t.app();
    lose_next(&t, "PutItem").await;
    let r = app
        .post(
            "/widgets",
            json!({"serial_number": "W1", "name": "one", "ports": ["P", "R"]}),
        )
        .await;
    t.proxy.set(FaultConfig::healthy());
    assert_eq!(t.proxy.stats().faults_of(FaultKind::AppliedThen500), 1);
    let widget = json!({"serial_number": "W1", "name": "one", "ports": ["P", "R"], "associations": [], "free": {"P": 1, "R": 1, "Q": 0}});
    assert_eq!((r.status, &r.body), (StatusCode::CREATED, &widget));
    let got = app.get("/widgets/W1").await;
    assert_eq!((got.status, &got.body), (StatusCode::OK, &widget));
    // A second create of the same serial is still a duplicate.
    let again = app
        .post(
            "/widgets",
            json!({"serial_number": "W1", "name": "one", "ports": ["P", "R"]}),
        )
        .await;
    assert_eq!(again.status, StatusCode::CONFLICT, "{:?}", again.body);
}

// --- 5 and 7. Idempotency-Key -----------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keyed_increment_whose_key_claim_answer_was_lost_runs_instead_of_409_in_progress() {
    let t = setup().await;
    let app = t.app();
    t.proxy.set(
        FaultConfig::only(FaultKind::AppliedThen500, 1.0)
            .on(&["PutItem"])
            .on_tables(&[&t.through.tables.idempotency])
            .at_most(1),
    );
    let body = json!({"key": "c", "value": 1});
    let started = Instant::now();
    let r = app
        .send(request(Method::POST, "/increment", Some("k-1"), &body))
        .await;
    t.proxy.set(FaultConfig::healthy());
    println!(
        "{} {:?} after {:?}\n{}",
        r.status,
        r.body,
        started.elapsed(),
        t.proxy.stats()
    );
    assert_eq!(
        t.proxy
            .stats()
            .faults_by_operation
            .get(&(FaultKind::AppliedThen500, "PutItem".to_owned())),
        Some(&1)
    );
    assert_eq!(
        (r.status, &r.body),
        (StatusCode::OK, &json!({"key": "c", "value": 1})),
        "the first try runs"
    );
    let again = app
        .send(request(Method::POST, "/increment", Some("k-1"), &body))
        .await;
    assert_eq!(
        (again.status, &again.body),
        (StatusCode::OK, &json!({"key": "c", "value": 1}))
    );
    assert_eq!(counter_total(app, "c").await, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keyed_increment_answered_429_is_not_replayed_and_its_retry_runs() {
    let t = setup().await;
    let app = t.app();
    t.proxy.set(
        FaultConfig::only(FaultKind::Throttle, 1.0)
            .on(&["UpdateItem", "TransactWriteItems"])
            .on_tables(&[&t.through.tables.counters]),
    );
    let body = json!({"key": "c", "value": 1});
    let r = app
        .send(request(Method::POST, "/increment", Some("k-1"), &body))
        .await;
    t.proxy.set(FaultConfig::healthy());
    println!("{} {:?}\n{}", r.status, r.body, t.proxy.stats());
    assert_eq!(
        (r.status, r.code()),
        (StatusCode::TOO_MANY_REQUESTS, "store_throttled"),
        "{:?}",
        r.body
    );
    assert!(r.headers.contains_key("retry-after"), "{:?}", r.headers);
    let retry = app
        .send(request(Method::POST, "/increment", Some("k-1"), &body))
        .await;
    assert_eq!(
        (retry.status, &retry.body),
        (StatusCode::OK, &json!({"key": "c", "value": 1})),
        "the retry runs once the store is healthy"
    );
    assert!(
        !retry.headers.contains_key("idempotent-replayed"),
        "{:?}",
        retry.headers
    );
    assert_eq!(counter_total(app, "c").await, 1);
}

/// A request that outlived its key's claim (as one does past `IN_PROGRESS_TTL`), whose key another request
/// then claimed: its release and its completion, each answered `500` after DynamoDB applied it (so the SDK
/// sends it again), leave the other request's claim alone; that request's own completion, answered the
/// same way, is recognised as its own and kept.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stale_claimant_neither_releases_nor_completes_the_claim_of_the_request_that_took_the_key_over()
 {
    use strata_core::idempotency::{Claim, Stored};
    let t = setup().await;
    let idempotency = &t.through.fixture.stores.idempotency;
    let stored = |body: &str| Stored {
        status: 200,
        body: body.into(),
        content_type: None,
    };
    let Claim::Proceed(stale) = idempotency.claim("op:k", "fp").await.unwrap() else {
        panic!("a new key proceeds")
    };
    // Its claim expires, as it does 30 s later.
    t.through
        .direct
        .update_item()
        .table_name(&t.through.tables.idempotency)
        .key("id", AttributeValue::S("op:k".into()))
        .update_expression("SET #until = :past")
        .expression_attribute_names("#until", "until")
        .expression_attribute_values(":past", AttributeValue::N("1".into()))
        .send()
        .await
        .unwrap();
    let Claim::Proceed(fresh) = idempotency.claim("op:k", "fp").await.unwrap() else {
        panic!("an expired claim is taken over")
    };
    let held = async || {
        let e = idempotency.claim("op:k", "fp").await.unwrap_err();
        assert_eq!(e.code, "request_in_progress", "{e:?}");
    };
    let lost_answer = |operation: &str| {
        FaultConfig::only(FaultKind::AppliedThen500, 1.0)
            .on(&[operation])
            .on_tables(&[&t.through.tables.idempotency])
            .at_most(1)
    };

    t.proxy.set(lost_answer("DeleteItem"));
    idempotency.release("op:k", &stale).await.unwrap();
    assert_eq!(t.proxy.stats().faults_of(FaultKind::AppliedThen500), 1);
    held().await;

    t.proxy.set(lost_answer("UpdateItem"));
    idempotency
        .complete("op:k", &stale, "fp", &stored("stale"))
        .await
        .unwrap();
    assert_eq!(t.proxy.stats().faults_of(FaultKind::AppliedThen500), 2);
    held().await;

    t.proxy.set(lost_answer("UpdateItem"));
    idempotency
        .complete("op:k", &fresh, "fp", &stored("fresh"))
        .await
        .unwrap();
    assert_eq!(t.proxy.stats().faults_of(FaultKind::AppliedThen500), 3);
    t.proxy.set(FaultConfig::healthy());
    assert_eq!(
        idempotency.claim("op:k", "fp").await.unwrap(),
        Claim::Replay(stored("fresh"))
    );
}

// --- 6. Certificates --------------------------------------------------------------------------------------

async fn put_class(app: &App, class: &str, authorized: u64) {
    let r = app
        .put(
            &format!("/share-classes/{class}"),
            json!({"authorized": authorized}),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{:?}", r.body);
}

/// The whole listing of a class (one page of up to 1,000).
async fn listing(app: &App, class: &str) -> Vec<Value> {
    let r = app
        .get(&format!("/certificates?class={class}&limit=1000"))
        .await;
    assert_eq!(r.status, StatusCode::OK, "{:?}", r.body);
    r.body["certificates"].as_array().unwrap().clone()
}

fn assert_gapless(certificates: &[Value], what: &str) {
    let numbers: Vec<u64> = certificates
        .iter()
        .map(|c| c["number"].as_u64().unwrap())
        .collect();
    let expected: Vec<u64> = (1..=numbers.len() as u64).collect();
    assert_eq!(numbers, expected, "{what}: gapless from 1");
}

/// Each of an issue's writes (intent, allocation, certificate, the key's record, the slot's removal) with
/// its answer lost after it applied, as a `500` and as an answer held past the attempt's timeout: the SDK's
/// retry finds the write done, and the issue makes exactly one certificate; the numbering stays gapless,
/// the class item keeps no slot, and the same key at the ledger gets the same certificate.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn certificate_issue_with_a_lost_answer_on_each_of_its_writes_makes_one_certificate() {
    let t = setup().await;
    put_class(t.app(), "CS", 1000).await;
    let ledger_table = t.through.tables.ledger.clone();
    // (write, operation, text only its request body holds, keyed issues only)
    let writes = [
        ("intent", "PutItem", "#", false),
        ("allocation", "UpdateItem", ":cap", false),
        ("certificate", "PutItem", "cert#CS", false),
        ("record", "UpdateItem", ":number", true),
        ("removal", "UpdateItem", "REMOVE #pnum", false),
    ];
    let mut issued = Vec::new();
    for (write, operation, text, keyed_only) in writes {
        for kind in [FaultKind::AppliedThen500, FaultKind::AppliedThenDelayed] {
            for keyed in [false, true] {
                if keyed_only && !keyed {
                    continue;
                }
                // The intent's key is `int#…` or `req#…`: its body is told apart by that.
                let text = match (write, keyed) {
                    ("intent", false) => "int#",
                    ("intent", true) => "req#",
                    _ => text,
                };
                let name = format!("{write} {kind} keyed={keyed}");
                let key = format!("k-{write}-{kind}");
                t.proxy.reset_stats();
                t.proxy.set(
                    FaultConfig::only(kind, 1.0)
                        .on(&[operation])
                        .on_tables(&[&ledger_table])
                        .matching(text)
                        .at_most(1),
                );
                let body = json!({"name": name, "amount": 1, "class": "CS"});
                let r = t
                    .app()
                    .send(request(
                        Method::POST,
                        "/certificates",
                        keyed.then_some(key.as_str()),
                        &body,
                    ))
                    .await;
                t.proxy.set(FaultConfig::healthy());
                assert_eq!(t.proxy.stats().faults_of(kind), 1, "{name}: the fault hit");
                assert_eq!(r.status, StatusCode::CREATED, "{name}: {:?}", r.body);
                assert_eq!(r.body["name"], name.as_str());
                let number = r.body["number"].as_u64().unwrap();
                if keyed {
                    // The ledger's own record of the key (no HTTP record in front of it).
                    let again = t
                        .through
                        .fixture
                        .stores
                        .ledger
                        .issue(
                            &strata_core::certificates::IssueRequest {
                                class: strata_core::certificates::ClassCode::parse("CS").unwrap(),
                                name: name.clone(),
                                amount: 1,
                            },
                            Some(&format!("certificates-issue:{key}")),
                        )
                        .await
                        .unwrap();
                    assert_eq!(again.number, number, "{name}: the same certificate again");
                }
                issued.push((number, name));
            }
        }
    }
    let all = listing(t.app(), "CS").await;
    assert_gapless(&all, "CS");
    assert_eq!(
        all.len(),
        issued.len(),
        "one certificate per issue: {all:?}"
    );
    for (number, name) in &issued {
        assert_eq!(all[*number as usize - 1]["name"], name.as_str(), "{all:?}");
    }
    let class = t.app().get("/share-classes/CS").await.body;
    assert_eq!(class["issued"], issued.len(), "{class:?}");
    let item = t
        .through
        .direct
        .get_item()
        .table_name(&ledger_table)
        .key("pk", AttributeValue::S("class#CS".into()))
        .key("n", AttributeValue::N("0".into()))
        .consistent_read(true)
        .send()
        .await
        .unwrap()
        .item
        .unwrap();
    assert_eq!(
        item["pnum"].as_m().unwrap().len(),
        0,
        "every issue removed its slot: {item:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn certificate_issue_with_a_delayed_allocation_answer_makes_one_certificate_while_listed() {
    let t = setup().await;
    put_class(t.app(), "CS", 1000).await;
    t.proxy.set(
        FaultConfig::only(FaultKind::AppliedThenDelayed, 1.0)
            .on(&["UpdateItem"])
            .at_most(1),
    );
    let app = t.app().clone();
    let issue = tokio::spawn(async move {
        app.post(
            "/certificates",
            json!({"name": "delayed", "amount": 3, "class": "CS"}),
        )
        .await
    });
    // The allocation reaches DynamoDB at once; its answer comes 3.5 s later, after the SDK's retry.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let started = Instant::now();
    let mut reads = 0;
    while started.elapsed() < Duration::from_millis(3800) && !issue.is_finished() {
        let r = t.app().get("/certificates?class=CS").await;
        assert_eq!(r.status, StatusCode::OK, "{:?}", r.body);
        let class = t.app().get("/share-classes/CS").await;
        assert_eq!(class.status, StatusCode::OK, "{:?}", class.body);
        reads += 1;
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let r = issue.await.unwrap();
    t.proxy.set(FaultConfig::healthy());
    println!(
        "{} {:?} after {reads} listings\n{}",
        r.status,
        r.body,
        t.proxy.stats()
    );
    assert_eq!(t.proxy.stats().faults_of(FaultKind::AppliedThenDelayed), 1);
    assert_eq!(r.status, StatusCode::CREATED, "{:?}", r.body);
    let all = listing(t.app(), "CS").await;
    let ours = all.iter().filter(|c| c["name"] == "delayed").count();
    assert_eq!(ours, 1, "one certificate for the one request: {all:?}");
    assert_gapless(&all, "CS");
    let class = t.app().get("/share-classes/CS").await.body;
    assert_eq!(
        (&class["issued"], &class["next_number"]),
        (&json!(3), &json!(2)),
        "{class:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn certificate_issue_whose_certificate_write_fails_answers_201_and_the_certificate_appears() {
    let t = setup().await;
    let app = t.app();
    put_class(app, "CS", 1000).await;
    // The certificate's own write (its item is `cert#CS`) fails, after the number is allocated.
    t.proxy.set(
        FaultConfig::only(FaultKind::Before500, 1.0)
            .on(&["PutItem"])
            .matching("cert#CS"),
    );
    let r = app
        .post(
            "/certificates",
            json!({"name": "kept", "amount": 5, "class": "CS"}),
        )
        .await;
    t.proxy.set(FaultConfig::healthy());
    assert!(t.proxy.stats().faults_of(FaultKind::Before500) >= 1);
    assert_eq!(
        (r.status, &r.body["id"], &r.body["name"], &r.body["amount"]),
        (
            StatusCode::CREATED,
            &json!("CS-1"),
            &json!("kept"),
            &json!(5)
        ),
        "the number is allocated, so the certificate is issued: {:?}",
        r.body
    );
    let got = app.get("/certificates/CS-1").await;
    assert_eq!(
        (got.status, &got.body["name"], &got.body["amount"]),
        (StatusCode::OK, &json!("kept"), &json!(5)),
        "{:?}",
        got.body
    );
    let all = listing(app, "CS").await;
    assert_eq!(all.len(), 1, "{all:?}");
    assert_gapless(&all, "CS");
    let class = app.get("/share-classes/CS").await.body;
    assert_eq!(class["issued"], 5, "{class:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn certificate_pending_entries_are_capped_while_certificate_writes_fail() {
    let cap = strata_dynamo::ledger::MAX_PENDING;
    let t = setup().await;
    put_class(t.app(), "CS", 100_000).await;
    t.proxy.set(
        FaultConfig::only(FaultKind::Before500, 1.0)
            .on(&["PutItem"])
            .matching("cert#CS"),
    );
    // 16 in flight at a time: enough to fill the cap quickly, not so many that DynamoDB Local, shared by the
    // whole run, slows every other test past its attempt timeouts.
    let in_flight = std::sync::Arc::new(tokio::sync::Semaphore::new(16));
    let mut tasks = Vec::new();
    for i in 0..70 {
        let app = t.app().clone();
        let in_flight = in_flight.clone();
        tasks.push(tokio::spawn(async move {
            let _permit = in_flight.acquire_owned().await.unwrap();
            let started = Instant::now();
            let r = app
                .post(
                    "/certificates",
                    json!({"name": format!("holder {i}"), "amount": 1, "class": "CS"}),
                )
                .await;
            println!(
                "issue {i}: {} after {:?}: {}",
                r.status,
                started.elapsed(),
                r.body
            );
            (i, r)
        }));
    }
    let mut issued = BTreeSet::new();
    let mut refused = 0;
    for task in tasks {
        let (i, r) = task.await.unwrap();
        match r.status {
            StatusCode::CREATED => {
                issued.insert(r.body["id"].as_str().unwrap().to_owned());
            }
            _ => {
                assert_unavailable(&r, &format!("issue {i}"));
                refused += 1;
            }
        }
    }
    println!(
        "{} answered 201, {refused} answered 503\n{}",
        issued.len(),
        t.proxy.stats()
    );
    assert!(issued.len() <= cap, "{} answered 201", issued.len());
    assert_eq!(issued.len() + refused, 70);
    // The class item as DynamoDB holds it.
    let class = t
        .through
        .direct
        .get_item()
        .table_name(&t.through.tables.ledger)
        .key("pk", AttributeValue::S("class#CS".into()))
        .key("n", AttributeValue::N("0".into()))
        .consistent_read(true)
        .send()
        .await
        .unwrap()
        .item
        .expect("the class item");
    let pending = class
        .get("pnum")
        .and_then(|p| p.as_m().ok())
        .map(|m| m.len())
        .unwrap_or(0);
    assert_eq!(pending, cap, "the class item is full");
    // Full, it still takes 1 WRU a write: under 1 KB (DynamoDB's item size: names and values).
    let size: usize = class.iter().map(|(k, v)| k.len() + dynamo_size(v)).sum();
    assert!(size < 1024, "the class item is {size} bytes: {class:?}");
    t.proxy.set(FaultConfig::healthy());
    let all = listing(t.app(), "CS").await;
    assert_gapless(&all, "CS");
    let listed: BTreeSet<String> = all
        .iter()
        .map(|c| c["id"].as_str().unwrap().to_owned())
        .collect();
    assert!(
        issued.is_subset(&listed),
        "every 201 certificate is listed: missing {:?}",
        issued.difference(&listed).collect::<Vec<_>>()
    );
    // An issue may also answer 503 "outcome unknown" after its number was allocated (under this load an
    // allocation can outlast its attempt): listed then, but never more than the cap allowed to allocate.
    assert!(all.len() <= cap, "{} numbers allocated", all.len());
}

/// Deletes every idempotency record, as the table's TTL does when they expire: what remains is the
/// ledger's own record of the key.
async fn expire_idempotency_records(t: &Setup) {
    let direct = &t.through.direct;
    let table = &t.through.tables.idempotency;
    let items = direct
        .scan()
        .table_name(table)
        .send()
        .await
        .unwrap()
        .items
        .unwrap_or_default();
    assert!(!items.is_empty(), "the key's record is there");
    for item in items {
        direct
            .delete_item()
            .table_name(table)
            .key("id", item["id"].clone())
            .send()
            .await
            .unwrap();
    }
}

/// A keyed issue, then its idempotency record gone.
async fn issued_with_key_then_record_expired(t: &Setup, body: &Value) {
    let r = t
        .app()
        .send(request(Method::POST, "/certificates", Some("k-1"), body))
        .await;
    assert_eq!(
        (r.status, &r.body["id"]),
        (StatusCode::CREATED, &json!("CS-1"))
    );
    expire_idempotency_records(t).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn certificate_key_reused_with_another_body_is_422_after_its_idempotency_record_expired() {
    let t = setup().await;
    let app = t.app();
    issued_with_key_then_record_expired(&t, &json!({"name": "first", "amount": 3, "class": "CS"}))
        .await;
    let other = json!({"name": "second", "amount": 4, "class": "CS"});
    let r = app
        .send(request(Method::POST, "/certificates", Some("k-1"), &other))
        .await;
    assert_eq!(
        (r.status, r.code()),
        (StatusCode::UNPROCESSABLE_ENTITY, "idempotency_key_reused"),
        "{:?}",
        r.body
    );
    let all = listing(app, "CS").await;
    assert_eq!(all.len(), 1, "{all:?}");
    assert_eq!(app.get("/share-classes/CS").await.body["issued"], 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn certificate_keyed_retry_after_its_idempotency_record_expired_gets_the_same_certificate() {
    let t = setup().await;
    let app = t.app();
    let body = json!({"name": "first", "amount": 3, "class": "CS"});
    issued_with_key_then_record_expired(&t, &body).await;
    let r = app
        .send(request(Method::POST, "/certificates", Some("k-1"), &body))
        .await;
    assert_eq!(
        (r.status, &r.body["id"], &r.body["name"]),
        (StatusCode::CREATED, &json!("CS-1"), &json!("first")),
        "{:?}",
        r.body
    );
    let all = listing(app, "CS").await;
    assert_eq!(all.len(), 1, "one certificate for one key: {all:?}");
    assert_eq!(app.get("/share-classes/CS").await.body["issued"], 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn certificate_listing_of_1000_with_long_names_returns_all_1000_past_a_1_mb_query_page() {
    let t = setup().await;
    put_class(t.app(), "X", 100_000).await;
    let name = "𝄞".repeat(256);
    let started = Instant::now();
    let mut tasks = Vec::new();
    for worker in 0..8 {
        let app = t.app().clone();
        let name = name.clone();
        tasks.push(tokio::spawn(async move {
            for i in 0..125 {
                // Keyed, so that a retry after a 5xx never makes a second certificate.
                let key = format!("w{worker}-{i}");
                let body = json!({"name": name, "amount": 1, "class": "X"});
                let mut tries = 0;
                loop {
                    let r = app
                        .send(request(Method::POST, "/certificates", Some(&key), &body))
                        .await;
                    if r.status == StatusCode::CREATED {
                        break;
                    }
                    tries += 1;
                    assert!(
                        tries < 5
                            && (r.status.is_server_error() || r.status == StatusCode::CONFLICT),
                        "{key}: {} {:?}",
                        r.status,
                        r.body
                    );
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
            }
        }));
    }
    for task in tasks {
        task.await.unwrap();
    }
    println!("1000 issued in {:?}", started.elapsed());
    let class = t.app().get("/share-classes/X").await.body;
    assert_eq!(class["next_number"], 1001, "{class:?}");
    let r = t.app().get("/certificates?class=X&limit=1000").await;
    assert_eq!(r.status, StatusCode::OK);
    let all = r.body["certificates"].as_array().unwrap();
    assert_eq!(all.len(), 1000, "the whole page");
    assert_gapless(all, "X");
    assert!(all.iter().all(|c| c["name"] == json!(name)));
    assert_eq!(r.body["next_after"], Value::Null, "the last page");
    let r = t.app().get("/certificates?class=X&limit=999").await;
    let page = r.body["certificates"].as_array().unwrap();
    assert_eq!(
        (page.len(), &r.body["next_after"]),
        (999, &json!(999)),
        "a page short of the end says where the next one starts"
    );
    let r = t
        .app()
        .get("/certificates?class=X&after=999&limit=1000")
        .await;
    let page = r.body["certificates"].as_array().unwrap();
    assert_eq!(page.len(), 1);
    assert_eq!(
        (&page[0]["number"], &r.body["next_after"]),
        (&json!(1000), &Value::Null)
    );
}

/// An attribute value's size as DynamoDB counts it: strings by their bytes, numbers about one byte per two
/// digits plus one, maps 3 bytes plus their names and values, 1 byte per element.
fn dynamo_size(v: &AttributeValue) -> usize {
    match v {
        AttributeValue::S(s) => s.len(),
        AttributeValue::N(n) => n.len().div_ceil(2) + 1,
        AttributeValue::M(m) => {
            3 + m
                .iter()
                .map(|(k, v)| k.len() + dynamo_size(v) + 1)
                .sum::<usize>()
        }
        AttributeValue::Bool(_) | AttributeValue::Null(_) => 1,
        other => panic!("unexpected attribute {other:?}"),
    }
}
