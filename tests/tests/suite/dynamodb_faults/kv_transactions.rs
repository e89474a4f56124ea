//! KV transactions: begin, read, write, commit and rollback whose answers were lost.

use super::*;

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
