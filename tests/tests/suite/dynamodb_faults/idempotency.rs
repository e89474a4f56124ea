//! Idempotency keys: a lost claim, a 429, a stale claimant.

use super::*;

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
    let kept = idempotency
        .complete("op:k", &stale, "fp", &stored("stale"))
        .await
        .unwrap();
    assert!(!kept, "the stale owner's answer is not kept");
    assert_eq!(t.proxy.stats().faults_of(FaultKind::AppliedThen500), 2);
    held().await;

    t.proxy.set(lost_answer("UpdateItem"));
    let kept = idempotency
        .complete("op:k", &fresh, "fp", &stored("fresh"))
        .await
        .unwrap();
    assert!(
        kept,
        "a retry of the owner's completion after a lost answer keeps it"
    );
    assert_eq!(t.proxy.stats().faults_of(FaultKind::AppliedThen500), 3);
    t.proxy.set(FaultConfig::healthy());
    assert_eq!(
        idempotency.claim("op:k", "fp").await.unwrap(),
        Claim::Replay(stored("fresh"))
    );
}
