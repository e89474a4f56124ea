//! KV single-key writes: a lost answer makes exactly one new version.

use super::*;

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
