//! Unkeyed strong increments: a lost answer counts once.

use super::*;

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
