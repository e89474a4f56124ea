//! The key/value functions: single-key writes, transactions, and the line protocol over HTTP and the
//! WebSocket.

use super::driver::{Driver, assert_status, body, key, lost, no_key, param};
use super::*;

pub(super) async fn drive_kv(d: &Driver) {
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

pub(super) fn tx(e: &mut Value, id: &str) {
    param(e, "id", id);
}

pub(super) async fn begin(d: &Driver) -> String {
    let reply = d.call("kv-tx-begin", no_key).await;
    assert_status(&reply, StatusCode::CREATED, "kv-tx-begin");
    reply.json()["id"].as_str().unwrap().to_owned()
}

pub(super) async fn drive_kv_transactions(d: &Driver) {
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
pub(super) fn session() -> Vec<String> {
    let large = format!("PUT f {}", "v".repeat(600));
    [
        "PUT a 1", "GET a", "DEL a", "PUT b 1", "START", "GET b", "PUT c 2", "DEL d", &large,
        "GET f", "COMMIT", "START", "PUT e 1", "ROLLBACK", "START",
    ]
    .map(str::to_owned)
    .to_vec()
}

pub(super) async fn drive_line_protocol(d: &Driver) {
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
