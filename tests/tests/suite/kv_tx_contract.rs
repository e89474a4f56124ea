//! Key/value transactions (CONTRACT.md §1): isolation, serializability, all-or-nothing, limits and expiry, on
//! every backend.

use http::StatusCode;
use serde_json::{Value, json};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;
use strata_core::Settings;
use strata_core::kv::tx::MAX_TX_KEYS;
use strata_tests::contract;
use strata_tests::fixture::{App, Fixture};

contract!(
    own_writes_are_visible_inside_and_invisible_outside_until_commit,
    rollback_discards_everything,
    a_read_key_changed_by_another_commit_is_a_conflict_and_nothing_is_written,
    an_absent_key_that_appears_is_a_conflict,
    blind_writes_do_not_conflict_and_the_later_commit_wins,
    the_conflict_names_the_first_changed_key,
    a_99_key_transaction_commits_and_the_100th_key_is_refused,
    writes_over_4_mb_are_refused_and_the_transaction_stays_usable,
    unknown_transactions_and_bad_input,
    a_retried_commit_with_an_idempotency_key_gets_the_original_answer,
    idle_transactions_expire,
    concurrent_read_modify_write_loses_no_update,
    readers_that_commit_never_see_half_a_commit,
    the_longest_keys_and_keys_that_look_like_markers_work_in_transactions,
);

async fn begin(app: &App) -> String {
    let r = app.post("/kv/transactions", json!({})).await;
    assert_eq!(r.status, StatusCode::CREATED, "{:?}", r.body);
    assert!(
        r.body["expires_at"]
            .as_str()
            .is_some_and(|t| t.ends_with('Z')),
        "{:?}",
        r.body
    );
    r.body["id"].as_str().unwrap().to_owned()
}

fn key_path(tx: &str, key: &str) -> String {
    format!("/kv/transactions/{tx}/keys/{key}")
}

async fn commit(app: &App, tx: &str) -> strata_tests::fixture::Reply {
    app.post(&format!("/kv/transactions/{tx}/commit"), json!({}))
        .await
}

async fn own_writes_are_visible_inside_and_invisible_outside_until_commit(f: Fixture) {
    let app = &f.app;
    app.put("/kv/keys/b", json!({"value": "old b"})).await;
    let tx = begin(app).await;
    let r = app
        .put(&key_path(&tx, "a"), json!({"value": "new a"}))
        .await;
    assert_eq!(
        (r.status, &r.body),
        (StatusCode::OK, &json!({"key": "a", "value": "new a"}))
    );
    assert_eq!(
        app.get(&key_path(&tx, "a")).await.body,
        json!({"key": "a", "value": "new a", "version": null})
    );
    assert_eq!(
        app.get("/kv/keys/a").await.status,
        StatusCode::NOT_FOUND,
        "invisible outside"
    );
    let r = app.delete(&key_path(&tx, "b")).await;
    assert_eq!((r.status, &r.body), (StatusCode::OK, &json!({"key": "b"})));
    assert_eq!(app.get(&key_path(&tx, "b")).await.code(), "key_not_found");
    assert_eq!(
        app.get("/kv/keys/b").await.body["value"],
        "old b",
        "invisible outside"
    );
    // a key the transaction did not write reads through to the store, with its version
    app.put("/kv/keys/c", json!({"value": "c"})).await;
    assert_eq!(
        app.get(&key_path(&tx, "c")).await.body,
        json!({"key": "c", "value": "c", "version": 1})
    );

    let r = commit(app, &tx).await;
    assert_eq!(
        (r.status, &r.body),
        (
            StatusCode::OK,
            &json!({"id": tx, "committed": true, "writes": 2})
        )
    );
    assert_eq!(
        app.get("/kv/keys/a").await.body,
        json!({"key": "a", "value": "new a", "version": 1})
    );
    assert_eq!(app.get("/kv/keys/b").await.status, StatusCode::NOT_FOUND);
    assert_eq!(
        app.put("/kv/keys/b", json!({"value": "b again"}))
            .await
            .body["version"],
        3
    );
    // a committed transaction is gone
    assert_eq!(commit(app, &tx).await.code(), "transaction_not_found");
    assert_eq!(
        app.get(&key_path(&tx, "a")).await.code(),
        "transaction_not_found"
    );
}

async fn rollback_discards_everything(f: Fixture) {
    let app = &f.app;
    let tx = begin(app).await;
    app.put(&key_path(&tx, "a"), json!({"value": "never"}))
        .await;
    let r = app
        .post(&format!("/kv/transactions/{tx}/rollback"), json!({}))
        .await;
    assert_eq!(
        (r.status, &r.body),
        (StatusCode::OK, &json!({"id": tx, "rolled_back": true}))
    );
    assert_eq!(app.get("/kv/keys/a").await.status, StatusCode::NOT_FOUND);
    for r in [
        app.post(&format!("/kv/transactions/{tx}/rollback"), json!({}))
            .await,
        commit(app, &tx).await,
        app.put(&key_path(&tx, "a"), json!({"value": "x"})).await,
    ] {
        assert_eq!(
            (r.status, r.code()),
            (StatusCode::NOT_FOUND, "transaction_not_found")
        );
    }
}

async fn a_read_key_changed_by_another_commit_is_a_conflict_and_nothing_is_written(f: Fixture) {
    let app = &f.app;
    app.put("/kv/keys/k", json!({"value": "1"})).await;
    let tx = begin(app).await;
    assert_eq!(app.get(&key_path(&tx, "k")).await.body["value"], "1");
    app.put(&key_path(&tx, "other"), json!({"value": "written?"}))
        .await;
    app.put(&key_path(&tx, "k"), json!({"value": "2"})).await;
    // someone else commits a change to k (here through another transaction)
    let t2 = begin(app).await;
    app.put(&key_path(&t2, "k"), json!({"value": "theirs"}))
        .await;
    assert_eq!(commit(app, &t2).await.status, StatusCode::OK);

    let r = commit(app, &tx).await;
    assert_eq!(
        (r.status, r.code()),
        (StatusCode::CONFLICT, "conflict"),
        "{:?}",
        r.body
    );
    assert_eq!(r.body["error"]["key"], "k");
    assert_eq!(
        app.get("/kv/keys/other").await.status,
        StatusCode::NOT_FOUND,
        "the failed transaction wrote nothing"
    );
    assert_eq!(app.get("/kv/keys/k").await.body["value"], "theirs");
    assert_eq!(
        commit(app, &tx).await.code(),
        "transaction_not_found",
        "a conflict ends the transaction"
    );
}

async fn an_absent_key_that_appears_is_a_conflict(f: Fixture) {
    let app = &f.app;
    for recreate in [false, true] {
        // the second round reads a deleted key (a tombstone) rather than one that never existed
        let key = if recreate {
            "was-deleted"
        } else {
            "never-existed"
        };
        if recreate {
            app.put(&format!("/kv/keys/{key}"), json!({"value": "x"}))
                .await;
            app.delete(&format!("/kv/keys/{key}")).await;
        }
        let tx = begin(app).await;
        assert_eq!(app.get(&key_path(&tx, key)).await.code(), "key_not_found");
        app.put(&key_path(&tx, "side-effect"), json!({"value": "x"}))
            .await;
        app.put(&format!("/kv/keys/{key}"), json!({"value": "appeared"}))
            .await;
        let r = commit(app, &tx).await;
        assert_eq!(
            (r.status, &r.body["error"]["key"]),
            (StatusCode::CONFLICT, &json!(key)),
            "{:?}",
            r.body
        );
        assert_eq!(
            app.get("/kv/keys/side-effect").await.status,
            StatusCode::NOT_FOUND
        );
    }
    // and a key still absent at commit validates fine
    let tx = begin(app).await;
    app.get(&key_path(&tx, "still-absent")).await;
    app.put(&key_path(&tx, "y"), json!({"value": "y"})).await;
    assert_eq!(commit(app, &tx).await.status, StatusCode::OK);
}

async fn blind_writes_do_not_conflict_and_the_later_commit_wins(f: Fixture) {
    let app = &f.app;
    let tx = begin(app).await;
    app.put(&key_path(&tx, "k"), json!({"value": "from tx"}))
        .await;
    app.delete(&key_path(&tx, "gone")).await;
    app.put("/kv/keys/k", json!({"value": "from outside"}))
        .await;
    app.put("/kv/keys/gone", json!({"value": "from outside"}))
        .await;
    assert_eq!(commit(app, &tx).await.body["writes"], 2);
    assert_eq!(
        app.get("/kv/keys/k").await.body,
        json!({"key": "k", "value": "from tx", "version": 2})
    );
    assert_eq!(app.get("/kv/keys/gone").await.status, StatusCode::NOT_FOUND);
}

async fn the_conflict_names_the_first_changed_key(f: Fixture) {
    let app = &f.app;
    for k in ["a", "b", "c"] {
        app.put(&format!("/kv/keys/{k}"), json!({"value": "0"}))
            .await;
    }
    let tx = begin(app).await;
    for k in ["c", "b", "a"] {
        app.get(&key_path(&tx, k)).await;
    }
    app.put(&key_path(&tx, "z"), json!({"value": "z"})).await;
    app.put("/kv/keys/c", json!({"value": "1"})).await;
    app.put("/kv/keys/b", json!({"value": "1"})).await;
    assert_eq!(commit(app, &tx).await.body["error"]["key"], "b");
}

async fn a_99_key_transaction_commits_and_the_100th_key_is_refused(f: Fixture) {
    let app = &f.app;
    let tx = begin(app).await;
    for i in 0..MAX_TX_KEYS {
        let r = if i % 3 == 0 {
            app.get(&key_path(&tx, &format!("k{i:03}"))).await
        } else {
            app.put(
                &key_path(&tx, &format!("k{i:03}")),
                json!({"value": format!("v{i}")}),
            )
            .await
        };
        assert!(
            r.status == StatusCode::OK || r.code() == "key_not_found",
            "{i}: {:?}",
            r.body
        );
    }
    for r in [
        app.put(&key_path(&tx, "k100"), json!({"value": "x"})).await,
        app.get(&key_path(&tx, "k100")).await,
        app.delete(&key_path(&tx, "k100")).await,
    ] {
        assert_eq!(
            (r.status, r.code()),
            (StatusCode::PAYLOAD_TOO_LARGE, "transaction_too_large"),
            "{:?}",
            r.body
        );
    }
    // still usable: keys already in it can be rewritten
    assert_eq!(
        app.put(&key_path(&tx, "k000"), json!({"value": "x"}))
            .await
            .status,
        StatusCode::OK
    );
    let r = commit(app, &tx).await;
    assert_eq!(
        (r.status, &r.body["writes"]),
        (StatusCode::OK, &json!(67)),
        "{:?}",
        r.body
    );
    assert_eq!(app.get("/kv/keys/k098").await.body["value"], "v98");
    assert_eq!(app.get("/kv/keys/k000").await.body["value"], "x");
}

async fn writes_over_4_mb_are_refused_and_the_transaction_stays_usable(f: Fixture) {
    let app = &f.app;
    let tx = begin(app).await;
    let big = "x".repeat(200_000);
    for i in 0..19 {
        let r = app
            .put(
                &key_path(&tx, &format!("big{i:02}")),
                json!({ "value": big }),
            )
            .await;
        assert_eq!(r.status, StatusCode::OK, "{i}: {:?}", r.body);
    }
    let r = app
        .put(&key_path(&tx, "big19"), json!({ "value": big }))
        .await;
    assert_eq!(
        (r.status, r.code()),
        (StatusCode::PAYLOAD_TOO_LARGE, "transaction_too_large")
    );
    app.put(&key_path(&tx, "big00"), json!({"value": "small"}))
        .await;
    assert_eq!(
        app.put(&key_path(&tx, "big19"), json!({ "value": big }))
            .await
            .status,
        StatusCode::OK
    );
    let r = commit(app, &tx).await;
    assert_eq!(
        (r.status, &r.body["writes"]),
        (StatusCode::OK, &json!(20)),
        "{:?}",
        r.body
    );
    assert_eq!(
        app.get("/kv/keys/big19").await.body["value"]
            .as_str()
            .unwrap()
            .len(),
        big.len()
    );
}

async fn unknown_transactions_and_bad_input(f: Fixture) {
    let app = &f.app;
    for id in ["0123456789abcdef0123456789abcdef", "not-an-id", "..%2F.."] {
        for r in [
            app.get(&key_path(id, "k")).await,
            app.put(&key_path(id, "k"), json!({"value": "v"})).await,
            app.delete(&key_path(id, "k")).await,
            commit(app, id).await,
            app.post(&format!("/kv/transactions/{id}/rollback"), json!({}))
                .await,
        ] {
            assert_eq!(
                (r.status, r.code()),
                (StatusCode::NOT_FOUND, "transaction_not_found"),
                "{id}: {:?}",
                r.body
            );
        }
    }
    let tx = begin(app).await;
    let r = app
        .put(&key_path(&tx, "a%20b"), json!({"value": "v"}))
        .await;
    assert_eq!(
        (r.status, r.code()),
        (StatusCode::BAD_REQUEST, "invalid_key")
    );
    let r = app.put(&key_path(&tx, "a"), json!({"value": 1})).await;
    assert_eq!(
        (r.status, r.code()),
        (StatusCode::BAD_REQUEST, "invalid_field")
    );
    let r = app
        .raw(http::Method::POST, "/kv/transactions", b"nope".to_vec())
        .await;
    assert_eq!(
        (r.status, r.code()),
        (StatusCode::BAD_REQUEST, "invalid_json")
    );
    let r = app
        .raw(http::Method::POST, "/kv/transactions", Vec::new())
        .await;
    assert_eq!(r.status, StatusCode::CREATED, "an empty body is fine");
    // refused requests changed nothing
    assert_eq!(commit(app, &tx).await.body["writes"], 0);
}

async fn idle_transactions_expire(f: Fixture) {
    let settings = Settings {
        tx_idle_timeout: Duration::from_millis(1500),
        ..Settings::default()
    };
    let fresh = if f.name == "embedded" {
        Fixture::embedded_with(settings).await
    } else {
        Fixture::dynamodb_with(settings).await
    };
    let f = match f.app.token() {
        Some(token) => fresh.with_auth_token(token),
        None => fresh,
    };
    let app = &f.app;
    // activity keeps it alive past the timeout...
    let alive = begin(app).await;
    for i in 0..4 {
        tokio::time::sleep(Duration::from_millis(600)).await;
        let r = app
            .put(&key_path(&alive, "k"), json!({"value": i.to_string()}))
            .await;
        assert_eq!(r.status, StatusCode::OK, "round {i}: {:?}", r.body);
    }
    assert_eq!(commit(app, &alive).await.status, StatusCode::OK);
    // ...and idleness ends it, with nothing written
    let idle = begin(app).await;
    app.put(&key_path(&idle, "never"), json!({"value": "x"}))
        .await;
    tokio::time::sleep(Duration::from_millis(2000)).await;
    let r = commit(app, &idle).await;
    assert_eq!(
        (r.status, r.code()),
        (StatusCode::NOT_FOUND, "transaction_not_found")
    );
    assert_eq!(
        app.get(&key_path(&idle, "never")).await.status,
        StatusCode::NOT_FOUND
    );
    assert_eq!(
        app.get("/kv/keys/never").await.status,
        StatusCode::NOT_FOUND
    );
}

async fn concurrent_read_modify_write_loses_no_update(f: Fixture) {
    const CLIENTS: usize = 10;
    let per_client = if f.name == "embedded" { 20 } else { 8 };
    f.app.put("/kv/keys/counter", json!({"value": "0"})).await;
    let conflicts = Arc::new(AtomicUsize::new(0));
    let mut tasks = Vec::new();
    for _ in 0..CLIENTS {
        let (app, conflicts) = (f.app.clone(), conflicts.clone());
        tasks.push(tokio::spawn(async move {
            let mut done = 0;
            while done < per_client {
                let tx = begin(&app).await;
                let n: u64 = app.get(&key_path(&tx, "counter")).await.body["value"]
                    .as_str()
                    .unwrap()
                    .parse()
                    .unwrap();
                app.put(
                    &key_path(&tx, "counter"),
                    json!({"value": (n + 1).to_string()}),
                )
                .await;
                let r = commit(&app, &tx).await;
                match r.status {
                    StatusCode::OK => done += 1,
                    StatusCode::CONFLICT => {
                        assert_eq!(r.body["error"]["key"], "counter");
                        conflicts.fetch_add(1, Ordering::Relaxed);
                    }
                    other => panic!("unexpected {other}: {:?}", r.body),
                }
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    let total = f.app.get("/kv/keys/counter").await.body["value"]
        .as_str()
        .unwrap()
        .parse::<usize>()
        .unwrap();
    assert_eq!(
        total,
        CLIENTS * per_client,
        "{} conflicts retried",
        conflicts.load(Ordering::Relaxed)
    );
}

async fn readers_that_commit_never_see_half_a_commit(f: Fixture) {
    const KEYS: usize = 40;
    let app = &f.app;
    let rounds = if f.name == "embedded" { 60 } else { 15 };
    let stop = Arc::new(AtomicBool::new(false));
    let writer = {
        let (app, stop) = (app.clone(), stop.clone());
        tokio::spawn(async move {
            for round in 0..rounds {
                let tx = begin(&app).await;
                for k in 0..KEYS {
                    app.put(
                        &key_path(&tx, &format!("atom{k:02}")),
                        json!({"value": round.to_string()}),
                    )
                    .await;
                }
                assert_eq!(commit(&app, &tx).await.status, StatusCode::OK);
            }
            stop.store(true, Ordering::Relaxed);
        })
    };
    let mut readers = Vec::new();
    for r in 0..4 {
        let (app, stop) = (app.clone(), stop.clone());
        readers.push(tokio::spawn(async move {
            let (mut clean, mut conflicted) = (0, 0);
            let mut i = r;
            while !stop.load(Ordering::Relaxed) {
                let tx = begin(&app).await;
                let mut seen: Vec<Value> = Vec::new();
                for k in [
                    i % KEYS,
                    (i * 7 + 3) % KEYS,
                    (i * 13 + 5) % KEYS,
                    KEYS - 1 - i % KEYS,
                ] {
                    seen.push(
                        app.get(&key_path(&tx, &format!("atom{k:02}"))).await.body["value"].clone(),
                    );
                }
                i += 1;
                let r = commit(&app, &tx).await;
                match r.status {
                    StatusCode::OK => {
                        assert!(
                            seen.windows(2).all(|w| w[0] == w[1]),
                            "a committed reader saw {seen:?}"
                        );
                        clean += 1;
                    }
                    StatusCode::CONFLICT => conflicted += 1,
                    other => panic!("unexpected {other}: {:?}", r.body),
                }
            }
            (clean, conflicted)
        }));
    }
    writer.await.unwrap();
    let mut clean = 0;
    for r in readers {
        clean += r.await.unwrap().0;
    }
    assert!(clean > 0, "some readers committed");
}

async fn a_retried_commit_with_an_idempotency_key_gets_the_original_answer(f: Fixture) {
    let app = &f.app;
    let tx = begin(app).await;
    app.put(&key_path(&tx, "once"), json!({"value": "1"})).await;
    let commit_with_key = || {
        let request = http::Request::builder()
            .method(http::Method::POST)
            .uri(format!("/kv/transactions/{tx}/commit"))
            .header("idempotency-key", "commit-1")
            .body(axum::body::Body::empty())
            .unwrap();
        app.send(request)
    };
    let first = commit_with_key().await;
    assert_eq!(first.status, StatusCode::OK);
    // without the key a second commit is 404 (the transaction is over); with it, the answer is replayed
    let again = commit_with_key().await;
    assert_eq!((again.status, &again.body), (StatusCode::OK, &first.body));
    assert_eq!(commit(app, &tx).await.code(), "transaction_not_found");
}

/// Keys of the maximum length (1,024 bytes) and keys spelled like a store's internal markers are ordinary keys
/// inside a transaction: read, written, deleted and committed like any other.
async fn the_longest_keys_and_keys_that_look_like_markers_work_in_transactions(f: Fixture) {
    let app = &f.app;
    let long = "k".repeat(strata_core::kv::MAX_KEY_BYTES);
    let keys = [long.as_str(), "h", "k:h", "~"];
    app.put(&format!("/kv/keys/{long}"), json!({"value": "before"}))
        .await;
    let tx = begin(app).await;
    let r = app.get(&key_path(&tx, &long)).await;
    assert_eq!(
        (r.status, &r.body["value"]),
        (StatusCode::OK, &json!("before"))
    );
    for key in keys {
        let r = app
            .put(&key_path(&tx, key), json!({"value": format!("v {key}")}))
            .await;
        assert_eq!(r.status, StatusCode::OK, "{key}: {:?}", r.body);
        let r = app.get(&key_path(&tx, key)).await;
        assert_eq!(r.body["value"], format!("v {key}"), "{key}");
    }
    let r = app.delete(&key_path(&tx, "~")).await;
    assert_eq!(r.status, StatusCode::OK, "{:?}", r.body);
    let r = commit(app, &tx).await;
    assert_eq!(r.status, StatusCode::OK, "{:?}", r.body);
    for key in &keys[..3] {
        assert_eq!(
            app.get(&format!("/kv/keys/{key}")).await.body["value"],
            format!("v {key}"),
            "{key}"
        );
    }
    assert_eq!(app.get("/kv/keys/~").await.status, StatusCode::NOT_FOUND);
}
