//! Strong increments: a lost answer counts once; with an `Idempotency-Key`, a retry counts nothing more
//! (after a lost answer, a `5xx`, a crash), through the request's token in the counter's item, which goes
//! once the answer is recorded, and stays otherwise until the retention has passed.

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

/// The strong counters store on the setup's tables through its proxy, as another process would run it.
async fn store(t: &Setup, retention: Duration) -> DynamoCounters {
    let sdk = strata_tests::dynamodb::sdk_config(&t.proxy.url).await;
    DynamoCounters::new(
        strata_dynamo::config::client(&sdk),
        t.through.tables.counters.clone(),
        t.through.tables.counter_log.clone(),
        t.through.tables.counter_markers.clone(),
        Mode::Strong,
        retention,
    )
}

const DAY: Duration = Duration::from_secs(86_400);

fn counter(key: &str) -> CounterKey {
    CounterKey::parse(key).unwrap()
}

/// The request tokens in the counter's item, read directly (not through the proxy).
async fn tokens(t: &Setup, key: &str) -> Vec<String> {
    let item = t
        .through
        .direct
        .get_item()
        .table_name(&t.through.tables.counters)
        .key("key", AttributeValue::S(key.to_owned()))
        .consistent_read(true)
        .send()
        .await
        .unwrap()
        .item
        .unwrap_or_default();
    let mut names: Vec<String> = item
        .into_keys()
        .filter(|name| name.len() == 23 && name.starts_with('t'))
        .collect();
    names.sort();
    names
}

/// A keyed strong increment whose `UpdateItem` applied but whose answer was lost (`kind`): the SDK sends
/// it again, which finds the request's token and counts nothing.
async fn keyed_increment_with_a_lost_answer_counts_once(kind: FaultKind) {
    let t = setup().await;
    t.proxy.set(
        FaultConfig::only(kind, 1.0)
            .on(&["UpdateItem"])
            .on_tables(&[&t.through.tables.counters])
            .at_most(1),
    );
    let body = json!({"key": "c", "value": 1});
    let r = t
        .app()
        .send(request(Method::POST, "/increment", Some("k-1"), &body))
        .await;
    t.proxy.set(FaultConfig::healthy());
    println!("{kind}: {} {:?}\n{}", r.status, r.body, t.proxy.stats());
    assert_eq!(t.proxy.stats().faults_of(kind), 1, "the fault was injected");
    assert!(
        t.proxy
            .stats()
            .requests_on("UpdateItem", &t.through.tables.counters)
            >= 2,
        "the SDK sent it again"
    );
    assert_eq!(
        (r.status, &r.body),
        (StatusCode::OK, &json!({"key": "c", "value": 1}))
    );
    assert_eq!(counter_total(t.app(), "c").await, 1, "{kind}: counted once");
    t.through.fixture.stores.counters.idle().await;
    assert_eq!(
        tokens(&t, "c").await,
        Vec::<String>::new(),
        "recorded: gone"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keyed_strong_increment_applied_then_500_counts_exactly_once() {
    keyed_increment_with_a_lost_answer_counts_once(FaultKind::AppliedThen500).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keyed_strong_increment_reset_mid_answer_counts_exactly_once() {
    keyed_increment_with_a_lost_answer_counts_once(FaultKind::ResetMidAnswer).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keyed_strong_increment_applied_then_delayed_counts_exactly_once() {
    keyed_increment_with_a_lost_answer_counts_once(FaultKind::AppliedThenDelayed).await
}

/// Every attempt of the SDK answered `500` after the first one applied: the client gets a `503`, the key
/// is released, the token stays, and the client's retry counts nothing more.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keyed_strong_increment_whose_answers_were_all_lost_counts_once_when_the_client_retries() {
    let t = setup().await;
    t.proxy.set(
        FaultConfig::only(FaultKind::AppliedThen500, 1.0)
            .on(&["UpdateItem"])
            .on_tables(&[&t.through.tables.counters])
            .at_most(u64::from(strata_dynamo::config::MAX_ATTEMPTS)),
    );
    let body = json!({"key": "c", "value": 2});
    let r = t
        .app()
        .send(request(Method::POST, "/increment", Some("k-1"), &body))
        .await;
    t.proxy.set(FaultConfig::healthy());
    println!("{} {:?}\n{}", r.status, r.body, t.proxy.stats());
    assert_unavailable(&r, "every attempt's answer lost");
    assert_eq!(counter_total(t.app(), "c").await, 2, "applied once");
    t.through.fixture.stores.counters.idle().await;
    assert_eq!(tokens(&t, "c").await.len(), 1, "not recorded: kept");
    let retry = t
        .app()
        .send(request(Method::POST, "/increment", Some("k-1"), &body))
        .await;
    assert_eq!(
        (retry.status, &retry.body),
        (StatusCode::OK, &json!({"key": "c", "value": 2}))
    );
    assert!(!retry.headers.contains_key("idempotent-replayed"));
    assert_eq!(
        counter_total(t.app(), "c").await,
        2,
        "the retry counted nothing"
    );
    t.through.fixture.stores.counters.idle().await;
    assert_eq!(tokens(&t, "c").await, Vec::<String>::new());
}

/// kill -9 between the counter's write and the record of the answer: the store's increment ran, and nobody
/// ever settled it. A retry once the claim has expired (here: there is none) runs the increment again,
/// which finds the token and counts nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_keyed_increment_whose_request_died_counts_nothing_more_when_retried() {
    let t = setup().await;
    let dying = store(&t, DAY).await;
    assert_eq!(
        dying
            .increment(&counter("c"), 3, Some("increment:k-crash"))
            .await
            .unwrap(),
        Incremented::Total(3)
    );
    drop(dying);
    let body = json!({"key": "c", "value": 3});
    let retry = t
        .app()
        .send(request(Method::POST, "/increment", Some("k-crash"), &body))
        .await;
    assert_eq!(
        (retry.status, &retry.body),
        (StatusCode::OK, &json!({"key": "c", "value": 3}))
    );
    assert_eq!(counter_total(t.app(), "c").await, 3);
    // Recorded now: the token goes, and the record answers from here on.
    t.through.fixture.stores.counters.idle().await;
    assert_eq!(tokens(&t, "c").await, Vec::<String>::new());
    let again = t
        .app()
        .send(request(Method::POST, "/increment", Some("k-crash"), &body))
        .await;
    assert_eq!(again.body, json!({"key": "c", "value": 3}));
    assert!(again.headers.contains_key("idempotent-replayed"));
}

/// An answer that was not recorded (released after a `5xx`, or its record's write failed) keeps the
/// token, so a retry counts nothing; once one is recorded the token goes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_token_stays_until_its_answer_is_recorded() {
    let t = setup().await;
    let counters = store(&t, DAY).await;
    let c = counter("c");
    assert_eq!(
        counters.increment(&c, 1, Some("r-1")).await.unwrap(),
        Incremented::Total(1)
    );
    counters.settled("r-1", false).await;
    counters.idle().await;
    assert_eq!(tokens(&t, "c").await.len(), 1);
    assert_eq!(
        counters.increment(&c, 1, Some("r-1")).await.unwrap(),
        Incremented::Total(1),
        "the retry counts nothing"
    );
    counters.settled("r-1", true).await;
    counters.idle().await;
    assert_eq!(tokens(&t, "c").await, Vec::<String>::new());
    assert_eq!(counters.get(&c).await.unwrap(), Some(1));
}

/// A settled token's removal rides on the process's next write of the counter, keyed or not; without one
/// it goes alone. A lost answer on either leaves nothing behind and counts nothing twice.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_settled_token_is_removed_by_the_next_write_or_alone() {
    let t = setup().await;
    let table = t.through.tables.counters.clone();
    let c = counter("c");
    // A delay no test outlasts: only a write can carry the removal.
    let counters = store(&t, DAY)
        .await
        .with_removal_delay(Duration::from_secs(3600));
    counters.increment(&c, 1, Some("r-1")).await.unwrap();
    counters.settled("r-1", true).await;
    assert_eq!(tokens(&t, "c").await.len(), 1, "queued, not sent");
    t.proxy.reset_stats();
    assert_eq!(
        counters.increment(&c, 1, Some("r-2")).await.unwrap(),
        Incremented::Total(2)
    );
    assert_eq!(t.proxy.stats().requests_on("UpdateItem", &table), 1);
    assert_eq!(tokens(&t, "c").await.len(), 1, "r-1's went, r-2's came");
    counters.settled("r-2", true).await;
    // The unkeyed increment that carries it loses its answer: it reads its history and answers; the
    // removal, queued again, is a no-op the next time.
    lose_next(&t, "UpdateItem").await;
    assert_eq!(
        counters.increment(&c, 1, None).await.unwrap(),
        Incremented::Total(3)
    );
    t.proxy.set(FaultConfig::healthy());
    assert_eq!(tokens(&t, "c").await, Vec::<String>::new());

    // Alone, after the delay, its answer lost once (the SDK sends it again).
    let counters = store(&t, DAY).await;
    counters.increment(&c, 1, Some("r-3")).await.unwrap();
    t.proxy.reset_stats();
    lose_next(&t, "UpdateItem").await;
    counters.settled("r-3", true).await;
    counters.idle().await;
    t.proxy.set(FaultConfig::healthy());
    assert_eq!(tokens(&t, "c").await, Vec::<String>::new());
    let stats = t.proxy.stats();
    assert_eq!(stats.faults_of(FaultKind::AppliedThen500), 1, "{stats}");
    assert_eq!(stats.requests_on("UpdateItem", &table), 2, "{stats}");
    assert_eq!(counters.get(&c).await.unwrap(), Some(4));
}

/// On Lambda the removal goes alone before the answer returns: a frozen or reaped instance would never
/// send it later.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_lambda_a_settled_token_is_removed_before_the_answer_returns() {
    let t = setup().await;
    let table = t.through.tables.counters.clone();
    let c = counter("c");
    let counters = store(&t, DAY)
        .await
        .with_removal_delay(Duration::from_secs(3600))
        .removing_before_the_answer(true);
    t.proxy.reset_stats();
    counters.increment(&c, 1, Some("r-1")).await.unwrap();
    counters.settled("r-1", true).await;
    assert_eq!(tokens(&t, "c").await, Vec::<String>::new());
    assert_eq!(t.proxy.stats().requests_on("UpdateItem", &table), 2);
}

/// The token of a request that died is removed by a later write that sees it, only once the retention
/// (and the clock-skew margin) has passed: its key is free then.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_requests_token_is_dropped_only_past_the_retention() {
    let t = setup().await;
    let c = counter("c");
    let counters = store(&t, DAY).await;
    counters.increment(&c, 1, Some("dead")).await.unwrap();
    counters.increment(&c, 1, None).await.unwrap();
    counters.increment(&c, 1, Some("r-1")).await.unwrap();
    counters.idle().await;
    assert_eq!(tokens(&t, "c").await.len(), 2, "within the retention: kept");

    // A process whose retention is 0 holds it past the clock-skew margin.
    let short = store(&t, Duration::ZERO).await;
    tokio::time::sleep(CLOCK_SKEW_MARGIN + Duration::from_millis(200)).await;
    short.increment(&c, 1, None).await.unwrap();
    short.idle().await;
    assert_eq!(tokens(&t, "c").await, Vec::<String>::new());
    // Its key is free: the same request counts again.
    assert_eq!(
        short.increment(&c, 1, Some("dead")).await.unwrap(),
        Incremented::Total(5)
    );
}

/// Counters an older version wrote: its keyed increments left a marker (`done#<key>`) in the log table and
/// no token. A retry of such a request counts nothing, for a retention from the counter's first keyed
/// increment with tokens, whether an unkeyed increment touched the counter first or not.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_an_older_version_counted_is_not_counted_again() {
    let t = setup().await;
    let counters = store(&t, DAY).await;
    let direct = &t.through.direct;
    let now = strata_core::time::epoch_seconds(std::time::SystemTime::now());
    let put = |table: &str, item: Vec<(&str, AttributeValue)>| {
        direct
            .put_item()
            .table_name(table)
            .set_item(Some(
                item.into_iter().map(|(k, v)| (k.to_owned(), v)).collect(),
            ))
            .send()
    };
    let n = |v: u64| AttributeValue::N(v.to_string());
    for key in ["old", "touched"] {
        put(
            &t.through.tables.counters,
            vec![
                ("key", AttributeValue::S(key.to_owned())),
                ("total", n(5)),
                ("room", n(strata_core::counters::MAX_TOTAL - 5)),
            ],
        )
        .await
        .unwrap();
    }
    for request in ["r-old", "r-old-2", "r-touched"] {
        put(
            &t.through.tables.counter_log,
            vec![
                ("id", AttributeValue::S(format!("done#{request}"))),
                ("ttl", n(now + 3600)),
            ],
        )
        .await
        .unwrap();
    }
    let (old, touched) = (counter("old"), counter("touched"));
    assert_eq!(
        counters.increment(&old, 5, Some("r-old")).await.unwrap(),
        Incremented::Total(5),
        "counted by the older version"
    );
    assert_eq!(
        counters.increment(&old, 1, Some("r-new")).await.unwrap(),
        Incremented::Total(6)
    );
    assert_eq!(
        counters.increment(&old, 5, Some("r-old-2")).await.unwrap(),
        Incremented::Total(6),
        "still looked for after the first token"
    );
    assert_eq!(
        counters.increment(&touched, 1, None).await.unwrap(),
        Incremented::Total(6)
    );
    assert_eq!(
        counters
            .increment(&touched, 5, Some("r-touched"))
            .await
            .unwrap(),
        Incremented::Total(6),
        "an unkeyed increment first changes nothing"
    );
    // An expired marker is no marker.
    put(
        &t.through.tables.counter_log,
        vec![
            ("id", AttributeValue::S("done#r-expired".to_owned())),
            ("ttl", n(now - 10)),
        ],
    )
    .await
    .unwrap();
    assert_eq!(
        counters
            .increment(&old, 1, Some("r-expired"))
            .await
            .unwrap(),
        Incremented::Total(7)
    );
}

/// 20 keyed increments at once on one counter: every write of the counter's item is 1 WRU (the item
/// stays under 1 KB with every token in flight), and an increment costs 3 calls and 3 WRU plus its share
/// of the removals no write carried.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn twenty_keyed_increments_at_once_write_the_counter_at_1_wru() {
    use strata_tests::cost::{Case, measure, table};
    let row = measure(Case::IncrementKeyed, 100, 20).await;
    let report = table(std::slice::from_ref(&row));
    let ((counters, key), units) = row.stats.hottest_item().unwrap();
    let writes = row.stats.by_item[&(counters, key)];
    println!("{report}{}", row.stats);
    assert_eq!(
        units, writes as f64,
        "1 WRU per write of the counter\n{report}"
    );
    let lone = writes as f64 / row.ops as f64 - 1.0;
    assert!(row.calls <= 3.0 + lone + 1e-9, "{report}");
    assert!(
        row.wru <= 3.0 + lone + 1e-9 && row.refused == 0.0,
        "{report}"
    );
}
