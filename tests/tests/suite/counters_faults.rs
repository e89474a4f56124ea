//! The eventual-mode aggregator against DynamoDB Local's real stream, under redelivery, crashes, batches
//! that fail past their retries (folded by the re-scan), a re-scan racing the stream, faults from the
//! fault proxy while folding, and malformed log records; and the local server's counters (on both stores)
//! under `kill -9` and rate limiting.

use aws_sdk_dynamodb::types::AttributeValue;
use serde_json::{Value, json};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;
use strata_core::Settings;
use strata_core::counters::{CounterKey, Counters, Incremented, Mode};
use strata_dynamo::aggregator::Aggregator;
use strata_tests::fault_proxy::{FaultConfig, FaultKind, FaultProxy};
use strata_tests::server::Server;
use strata_tests::streams::StreamReader;

struct Setup {
    counters: Arc<dyn Counters>,
    aggregator: Aggregator,
    reader: StreamReader,
    client: aws_sdk_dynamodb::Client,
    tables: strata_dynamo::Tables,
}

async fn eventual_dynamodb() -> Setup {
    let (client, tables) = strata_tests::dynamodb::fresh_tables().await;
    let aggregator = Aggregator::new(client.clone(), &tables);
    let reader = StreamReader::open(strata_tests::dynamodb::endpoint(), &tables.counter_log).await;
    let settings = Settings {
        counter_mode: Mode::Eventual,
        ..Settings::default()
    };
    let stores = strata_dynamo::stores(client.clone(), tables.clone(), &settings);
    Setup {
        counters: stores.counters,
        aggregator,
        reader,
        client,
        tables,
    }
}

/// Another aggregator on the same tables: a second Lambda invocation (the schedule's, while the stream's
/// runs), or one whose client goes through the fault proxy at `endpoint`.
async fn aggregator_on(s: &Setup, endpoint: Option<&str>) -> Aggregator {
    let client = match endpoint {
        None => s.client.clone(),
        Some(url) => strata_dynamo::config::client(&strata_tests::dynamodb::sdk_config(url).await),
    };
    Aggregator::new(client, &s.tables)
}

/// `count` increments of `i + 1` over `keys` counters, every third one with an idempotency key; returns the
/// expected totals.
async fn log_increments(s: &Setup, keys: &[CounterKey], count: u64) -> Vec<u64> {
    let mut expected = vec![0; keys.len()];
    let batch = uuid::Uuid::new_v4().simple().to_string();
    for i in 0..count {
        let k = (i as usize) % keys.len();
        let request = format!("increment:{batch}-{i}");
        let request = (i % 3 == 0).then_some(request.as_str());
        s.counters
            .increment(&keys[k], i + 1, request)
            .await
            .unwrap();
        expected[k] += i + 1;
    }
    expected
}

async fn totals(s: &Setup, keys: &[CounterKey]) -> Vec<u64> {
    let mut out = Vec::new();
    for k in keys {
        out.push(s.counters.get(k).await.unwrap().unwrap_or(0));
    }
    out
}

fn keys(prefix: &str, n: usize) -> Vec<CounterKey> {
    (0..n)
        .map(|i| CounterKey::parse(&format!("{prefix}{i}")).unwrap())
        .collect()
}

/// Everything the stream has delivered so far, as one event (polling until `count` entries arrived).
async fn delivered(
    reader: &mut StreamReader,
    count: usize,
) -> aws_lambda_events::event::dynamodb::Event {
    let mut all: aws_lambda_events::event::dynamodb::Event =
        serde_json::from_value(json!({"Records": []})).unwrap();
    for _ in 0..100 {
        all.records.extend(reader.next_event().await.records);
        if strata_counters::stream::entries(&all).len() >= count {
            return all;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!(
        "the stream delivered {} of {count} entries",
        strata_counters::stream::entries(&all).len()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_delivered_twice_counts_once() {
    let mut s = eventual_dynamodb().await;
    let key = CounterKey::parse("twice").unwrap();
    for v in 1..=5 {
        s.counters.increment(&key, v, None).await.unwrap();
    }
    s.counters
        .increment(&key, 100, Some("increment:k1"))
        .await
        .unwrap();
    let event = delivered(&mut s.reader, 6).await;
    let entries = strata_counters::stream::entries(&event);
    assert_eq!(s.aggregator.fold(entries.clone()).await.unwrap(), 6);
    assert_eq!(s.counters.get(&key).await.unwrap(), Some(115));
    // the same batch again (Lambda retries, or delivers twice): nothing more is counted
    assert_eq!(s.aggregator.fold(entries).await.unwrap(), 0);
    assert_eq!(s.counters.get(&key).await.unwrap(), Some(115));
    // and a late retry of the keyed request, after its entry was folded and deleted, is recognised: it
    // is answered as a replay, and the entry it logged again is consumed by the fold, not counted
    assert_eq!(
        s.counters
            .increment(&key, 100, Some("increment:k1"))
            .await
            .unwrap(),
        Incremented::AcceptedBefore
    );
    let later = strata_counters::stream::entries(&delivered(&mut s.reader, 1).await);
    assert_eq!(later.len(), 1, "{later:?}");
    s.aggregator.fold(later).await.unwrap();
    assert_eq!(s.counters.get(&key).await.unwrap(), Some(115));
    assert!(scanned(&s, &s.tables.counter_log).await.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crash_partway_through_a_fold_counts_everything_once_on_redelivery() {
    let mut s = eventual_dynamodb().await;
    let keys: Vec<CounterKey> = (0..4)
        .map(|i| CounterKey::parse(&format!("c{i}")).unwrap())
        .collect();
    // 250 entries: three chunks of the aggregator (up to 100 actions each: a delete per entry, an update
    // per counter)
    const N: u64 = 250;
    for i in 0..N {
        s.counters
            .increment(&keys[(i % 4) as usize], i + 1, None)
            .await
            .unwrap();
    }
    let event = delivered(&mut s.reader, N as usize).await;
    let entries = strata_counters::stream::entries(&event);
    s.aggregator.inject_failure_after_chunks(1);
    assert!(
        s.aggregator.fold(entries.clone()).await.is_err(),
        "the invocation failed after one chunk"
    );
    let partial: u64 = {
        let mut sum = 0;
        for k in &keys {
            sum += s.counters.get(k).await.unwrap().unwrap_or(0);
        }
        sum
    };
    assert!(
        partial > 0 && partial < (1..=N).sum::<u64>(),
        "one chunk was folded: {partial}"
    );
    // Lambda delivers the batch again: the rest is folded, the first chunk is not counted twice
    let rest = s.aggregator.fold(entries).await.unwrap();
    assert!(rest > 0 && rest < N as usize, "the rest: {rest}");
    for (i, k) in keys.iter().enumerate() {
        let expected: u64 = (0..N).filter(|n| n % 4 == i as u64).map(|n| n + 1).sum();
        assert_eq!(s.counters.get(k).await.unwrap(), Some(expected), "{k:?}");
    }
}

/// The stream's batch fails every retry (the mapping then gives up on it and describes it on its
/// `OnFailure` queue): nothing is counted, and the entries are still in the log. The schedule's re-scan
/// leaves entries younger than its age to the stream, then folds the rest, each once; a later redelivery
/// of the batch and another re-scan count nothing more.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_that_fails_past_its_retries_is_folded_by_the_rescan() {
    let mut s = eventual_dynamodb().await;
    let keys = keys("failed", 3);
    let expected = log_increments(&s, &keys, 40).await;
    let event = delivered(&mut s.reader, 40).await;
    let entries = strata_counters::stream::entries(&event);
    for _ in 0..3 {
        s.aggregator.inject_failure_after_chunks(0);
        assert!(s.aggregator.fold(entries.clone()).await.is_err());
    }
    assert_eq!(
        totals(&s, &keys).await,
        [0, 0, 0],
        "the failed batch counted nothing"
    );
    let young = s
        .aggregator
        .rescan(strata_dynamo::aggregator::RESCAN_AGE)
        .await
        .unwrap();
    assert_eq!(
        young.folded, 0,
        "entries younger than the re-scan's age are the stream's"
    );
    let rescan = strata_counters::aggregate::handle(&s.aggregator, scheduled_event()).await;
    assert!(
        rescan.is_ok(),
        "the schedule's event is handled: {rescan:?}"
    );
    let found = s.aggregator.rescan(Duration::ZERO).await.unwrap();
    assert_eq!((found.folded, found.malformed), (40, 0));
    assert_eq!(totals(&s, &keys).await, expected);
    assert_eq!(
        s.aggregator.fold(entries).await.unwrap(),
        0,
        "redelivered late"
    );
    assert_eq!(s.aggregator.rescan(Duration::ZERO).await.unwrap().folded, 0);
    assert_eq!(totals(&s, &keys).await, expected);
}

/// What EventBridge sends the aggregator on its schedule.
fn scheduled_event() -> Value {
    json!({
        "version": "0",
        "id": "53dc4d37-cffa-4f76-80c9-8b7d4a4d2eaa",
        "detail-type": "Scheduled Event",
        "source": "aws.events",
        "account": "123456789012",
        "time": "2026-12-01T10:00:00Z",
        "region": "eu-west-1",
        "resources": ["arn:aws:events:eu-west-1:123456789012:rule/strata-CounterAggregateRescan"],
        "detail": {}
    })
}

/// The stream's invocation and the schedule's re-scan fold the same entries at the same time, three
/// rounds: every entry is folded by exactly one of them, and the totals are exact.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_rescan_racing_the_stream_folds_each_entry_once() {
    let mut s = eventual_dynamodb().await;
    let keys = keys("raced", 2);
    let scheduled = aggregator_on(&s, None).await;
    let mut expected = vec![0; keys.len()];
    let mut logged = 0;
    for round in 0..3 {
        let more = log_increments(&s, &keys, 120).await;
        for (e, m) in expected.iter_mut().zip(more) {
            *e += m;
        }
        logged += 120;
        let event = delivered(&mut s.reader, 120).await;
        let entries = strata_counters::stream::entries(&event);
        let (by_stream, by_rescan) =
            tokio::join!(s.aggregator.fold(entries), scheduled.rescan(Duration::ZERO));
        let (by_stream, by_rescan) = (by_stream.unwrap(), by_rescan.unwrap().folded);
        eprintln!("round {round}: stream folded {by_stream}, re-scan {by_rescan}");
        assert_eq!(by_stream + by_rescan, 120, "round {round}: each entry once");
        assert_eq!(totals(&s, &keys).await, expected, "round {round}");
    }
    assert_eq!(scheduled.rescan(Duration::ZERO).await.unwrap().folded, 0);
    assert!(logged > 0);
}

/// Folding through the fault proxy: 30% of the aggregator's transactions faulted, of every kind (the
/// answer lost after applying, refused before, throttled, cut mid-answer, held past the attempt timeout),
/// over stream batches of 5 entries. A failed invocation is delivered again, as Lambda does, until it
/// succeeds; then a re-scan finds nothing left: every entry is counted exactly once.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn faults_while_folding_count_each_entry_once() {
    let mut s = eventual_dynamodb().await;
    let keys = keys("faulted", 3);
    let expected = log_increments(&s, &keys, 150).await;
    let event = delivered(&mut s.reader, 150).await;
    let entries = strata_counters::stream::entries(&event);
    let proxy = FaultProxy::start(
        strata_tests::dynamodb::endpoint(),
        16,
        FaultConfig::split(0.3, &FaultKind::ALL)
            .on(&["TransactWriteItems"])
            .with_delay(Duration::from_millis(3200)),
    )
    .await;
    let faulted = aggregator_on(&s, Some(&proxy.url)).await;
    let (mut folded, mut failures) = (0, 0);
    for batch in entries.chunks(5) {
        for attempt in 0.. {
            assert!(attempt < 30, "a batch never folded");
            match faulted.fold(batch.to_vec()).await {
                Ok(n) => {
                    folded += n;
                    break;
                }
                Err(e) => {
                    failures += 1;
                    eprintln!("a batch failed ({e}); delivered again");
                }
            }
        }
    }
    let stats = proxy.stats();
    eprintln!("{stats}; {failures} failed invocations");
    assert!(stats.total_faults() >= 5, "faults were injected: {stats}");
    assert_eq!(folded, 150, "each entry folded by exactly one invocation");
    assert_eq!(s.aggregator.rescan(Duration::ZERO).await.unwrap().folded, 0);
    assert_eq!(totals(&s, &keys).await, expected);
}

/// A log record that does not decode (here a value that is not a number) is neither folded nor dropped:
/// the stream's invocation reports it as the batch's failure (so Lambda retries from it and, past the
/// retries, sends the batch to the `OnFailure` queue), folds the rest, and the re-scan counts it as
/// malformed and leaves it in the log.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_malformed_log_record_is_reported_and_kept_never_dropped() {
    let mut s = eventual_dynamodb().await;
    let key = CounterKey::parse("malformed").unwrap();
    s.counters.increment(&key, 4, None).await.unwrap();
    s.client
        .put_item()
        .table_name(&s.tables.counter_log)
        .item("id", AttributeValue::S("u#not-a-number".into()))
        .item("key", AttributeValue::S("malformed".into()))
        .item("value", AttributeValue::S("lots".into()))
        .send()
        .await
        .unwrap();
    let mut event = delivered(&mut s.reader, 1).await;
    for _ in 0..50 {
        if event.records.len() >= 2 {
            break;
        }
        event.records.extend(s.reader.next_event().await.records);
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let decoded = strata_counters::stream::decode(&event);
    assert_eq!((decoded.entries.len(), decoded.malformed.len()), (1, 1));
    let answer =
        strata_counters::aggregate::handle(&s.aggregator, serde_json::to_value(&event).unwrap())
            .await
            .unwrap();
    assert_eq!(
        answer["batchItemFailures"],
        json!([{"itemIdentifier": decoded.malformed[0]}]),
        "{answer}"
    );
    assert_eq!(
        s.counters.get(&key).await.unwrap(),
        Some(4),
        "the rest was folded"
    );
    let found = s.aggregator.rescan(Duration::ZERO).await.unwrap();
    assert_eq!((found.folded, found.malformed), (0, 1));
    let kept = s
        .client
        .get_item()
        .table_name(&s.tables.counter_log)
        .key("id", AttributeValue::S("u#not-a-number".into()))
        .send()
        .await
        .unwrap();
    assert!(
        kept.item.is_some(),
        "the malformed record is still in the log"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_aggregate_event_file_drives_the_aggregator() {
    let (client, tables) = strata_tests::dynamodb::fresh_tables().await;
    let text = strata_tests::events::text("counters-aggregate");
    let event: aws_lambda_events::event::dynamodb::Event = serde_json::from_str(&text).unwrap();
    let entries = strata_counters::stream::entries(&event);
    assert_eq!(
        entries.len(),
        2,
        "INSERTs of increments only: not markers, not REMOVEs"
    );
    // the log items the event describes, as the increment Lambda would have written them
    for entry in &entries {
        client
            .put_item()
            .table_name(&tables.counter_log)
            .item("id", AttributeValue::S(entry.id.clone()))
            .item("key", AttributeValue::S(entry.key.clone()))
            .item("value", AttributeValue::N(entry.value.to_string()))
            .send()
            .await
            .unwrap();
    }
    let aggregator = Aggregator::new(client.clone(), &tables);
    assert_eq!(aggregator.fold(entries.clone()).await.unwrap(), 2);
    assert_eq!(aggregator.fold(entries).await.unwrap(), 0);
    let stores = strata_dynamo::stores(client, tables, &Settings::default());
    assert_eq!(
        stores
            .counters
            .get(&CounterKey::parse("hello world").unwrap())
            .await
            .unwrap(),
        Some(23)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn eventual_counts_survive_kill_9_under_load() {
    let dir = tempfile::tempdir().unwrap();
    let mut server = Server::start(crate::STRATA, dir.path(), &["--counter-mode", "eventual"]);
    let client = reqwest::Client::new();
    let (acked, sent) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
    let mut tasks = Vec::new();
    for _ in 0..20 {
        let (client, acked, sent, base) = (
            client.clone(),
            acked.clone(),
            sent.clone(),
            server.base.clone(),
        );
        tasks.push(tokio::spawn(async move {
            loop {
                sent.fetch_add(1, Ordering::SeqCst);
                let Ok(r) = client
                    .post(format!("{base}/increment"))
                    .json(&json!({"key": "hits", "value": 1}))
                    .send()
                    .await
                else {
                    return;
                };
                if r.status() != 202 {
                    return;
                }
                acked.fetch_add(1, Ordering::SeqCst);
            }
        }));
    }
    tokio::time::sleep(Duration::from_millis(1500)).await;
    server.kill9();
    for t in tasks {
        t.await.unwrap();
    }
    server.restart();
    let (acked, sent) = (acked.load(Ordering::SeqCst), sent.load(Ordering::SeqCst));
    assert!(acked > 100, "the load ran ({acked} acknowledged)");
    // The log left by the crash is folded after the restart, including entries logged but never
    // acknowledged, so reaching `acked` is not the end: wait until the total holds still for 2 s (40
    // rounds of the fold loop) — on a loaded machine folding the whole backlog can take a while.
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    let (mut settled, mut since) = (u64::MAX, std::time::Instant::now());
    loop {
        let r: Value = client
            .get(server.url("/increment/hits"))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        let total = r["hits"].as_u64().unwrap();
        if total != settled {
            (settled, since) = (total, std::time::Instant::now());
        } else if total >= acked && since.elapsed() >= Duration::from_secs(2) {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the total never settled: {total} (acknowledged {acked}, sent {sent})"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(
        settled >= acked && settled <= sent,
        "acknowledged {acked}, sent {sent}, counted {settled}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_rate_limit_refuses_the_excess_and_counts_nothing_of_it() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(crate::STRATA, dir.path(), &["--rate-limit", "50/600"]);
    let client = reqwest::Client::new();
    // 80 increments at once, well within the 12 s it takes to earn one more token (however loaded the
    // machine is)
    let requests = (0..80).map(|_| {
        let (client, url) = (client.clone(), server.url("/increment"));
        tokio::spawn(async move {
            client
                .post(url)
                .json(&json!({"key": "limited", "value": 1}))
                .send()
                .await
                .unwrap()
        })
    });
    let (mut ok, mut limited) = (0, 0);
    for r in futures_join(requests).await {
        match r.status().as_u16() {
            200 => ok += 1,
            429 => {
                assert!(r.headers().contains_key("retry-after"));
                let body: Value = r.json().await.unwrap();
                assert_eq!(body["error"]["code"], "rate_limited");
                limited += 1;
            }
            other => panic!("unexpected {other}"),
        }
    }
    assert_eq!((ok, limited), (50, 30));
    // another route has its own budget; the counter holds exactly what was accepted
    let r: Value = client
        .get(server.url("/increment/limited"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(r["limited"], 50);
}

async fn futures_join<T>(handles: impl Iterator<Item = tokio::task::JoinHandle<T>>) -> Vec<T> {
    let mut out = Vec::new();
    for h in handles.collect::<Vec<_>>() {
        out.push(h.await.unwrap());
    }
    out
}

/// A marker of a counted request, as the fold wrote it in the log table before markers moved to their own
/// table (and as strong mode still writes it there): `done#<request key>` and its `ttl`, an hour ahead.
async fn put_old_marker(s: &Setup, request: &str) {
    let ttl = strata_core::time::epoch_seconds(std::time::SystemTime::now()) + 3600;
    s.client
        .put_item()
        .table_name(&s.tables.counter_log)
        .item("id", AttributeValue::S(format!("done#{request}")))
        .item("ttl", AttributeValue::N(ttl.to_string()))
        .send()
        .await
        .unwrap();
}

/// Every item of `table`.
async fn scanned(s: &Setup, table: &str) -> Vec<std::collections::HashMap<String, AttributeValue>> {
    s.client
        .scan()
        .table_name(table)
        .consistent_read(true)
        .send()
        .await
        .unwrap()
        .items
        .unwrap_or_default()
}

/// The upgrade: a request counted before markers moved has its marker in the log table, and one logged
/// before then but not folded yet has its entry there as `r#<request key>`. Retried now, neither counts
/// again: the first's new entry would take its marker's id, which is there; the second's is logged as
/// `done#<request key>`, and the fold, finding the request's marker put by the other entry, consumes it
/// without counting.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_marked_or_logged_before_markers_moved_count_once_when_retried() {
    let s = eventual_dynamodb().await;
    let key = CounterKey::parse("upgraded").unwrap();
    put_old_marker(&s, "increment:counted").await;
    s.client
        .put_item()
        .table_name(&s.tables.counter_log)
        .item("id", AttributeValue::S("r#increment:pending".into()))
        .item("key", AttributeValue::S(key.as_str().into()))
        .item("value", AttributeValue::N("5".into()))
        .item(
            "at",
            AttributeValue::N(strata_core::time::now_millis().to_string()),
        )
        .send()
        .await
        .unwrap();
    // The counted one meets its old marker (a replay); the pending one is logged under its new id.
    for (request, answer) in [
        ("increment:counted", Incremented::AcceptedBefore),
        ("increment:pending", Incremented::Accepted),
    ] {
        let got = s.counters.increment(&key, 5, Some(request)).await.unwrap();
        assert_eq!(got, answer, "{request}");
    }
    // The pending request is in the log twice, under its old id and its new one; both are folded.
    assert_eq!(s.aggregator.rescan(Duration::ZERO).await.unwrap().folded, 2);
    assert_eq!(s.counters.get(&key).await.unwrap(), Some(5), "counted once");
    // Left: the old marker in the log (until it expires), the new one in the marker table.
    let log: Vec<_> = scanned(&s, &s.tables.counter_log).await;
    assert_eq!(log.len(), 1, "{log:?}");
    assert_eq!(
        log[0]["id"],
        AttributeValue::S("done#increment:counted".into())
    );
    let markers = scanned(&s, &s.tables.counter_markers).await;
    assert_eq!(markers.len(), 1, "{markers:?}");
    assert_eq!(
        markers[0]["id"],
        AttributeValue::S("done#increment:pending".into())
    );
    // Retried again, after everything was folded: both are replays; the pending one's entry, logged
    // again, is consumed by the next fold without being counted.
    for request in ["increment:counted", "increment:pending"] {
        let got = s.counters.increment(&key, 5, Some(request)).await.unwrap();
        assert_eq!(got, Incremented::AcceptedBefore, "{request}");
    }
    assert_eq!(s.aggregator.rescan(Duration::ZERO).await.unwrap().folded, 1);
    assert_eq!(s.counters.get(&key).await.unwrap(), Some(5));
    assert_eq!(
        scanned(&s, &s.tables.counter_log).await.len(),
        1,
        "the old marker only"
    );
}

/// The stream of the log: an old marker's record is not an increment; an entry is, whatever its id.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_stream_tells_entries_from_markers_left_in_the_log() {
    let mut s = eventual_dynamodb().await;
    let key = CounterKey::parse("streamed").unwrap();
    put_old_marker(&s, "increment:old").await;
    s.counters
        .increment(&key, 3, Some("increment:new"))
        .await
        .unwrap();
    s.counters.increment(&key, 4, None).await.unwrap();
    let event = delivered(&mut s.reader, 2).await;
    let mut ids: Vec<String> = strata_counters::stream::entries(&event)
        .into_iter()
        .map(|e| e.id)
        .collect();
    ids.sort();
    assert_eq!(ids.len(), 2, "{ids:?}");
    assert_eq!(ids[0], "done#increment:new");
    assert!(ids[1].starts_with("u#"), "{ids:?}");
}

/// A keyed eventual increment whose transaction applied but whose answer was lost (`kind`), folded while
/// the SDK waits to retry it: the retry, and the client's own retry after that, count nothing more.
async fn a_keyed_eventual_increment_with_a_lost_answer_counts_once(kind: FaultKind) {
    let s = eventual_dynamodb().await;
    let proxy = FaultProxy::start(
        strata_tests::dynamodb::endpoint(),
        7,
        FaultConfig::only(kind, 1.0)
            .on(&["TransactWriteItems"])
            .at_most(1)
            .with_delay(Duration::from_millis(3200)),
    )
    .await;
    let client =
        strata_dynamo::config::client(&strata_tests::dynamodb::sdk_config(&proxy.url).await);
    let settings = Settings {
        counter_mode: Mode::Eventual,
        ..Settings::default()
    };
    let through = strata_dynamo::stores(client, s.tables.clone(), &settings).counters;
    let key = CounterKey::parse("lost").unwrap();
    // The stream's fold, as soon as the entry is in the log.
    let folder = {
        let aggregator = aggregator_on(&s, None).await;
        tokio::spawn(async move {
            loop {
                if aggregator.rescan(Duration::ZERO).await.unwrap().folded > 0 {
                    return;
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        })
    };
    let answer = through.increment(&key, 9, Some("increment:lost")).await;
    eprintln!("{kind}: {answer:?}; {}", proxy.stats());
    assert_eq!(proxy.stats().faults_of(kind), 1, "the fault was injected");
    folder.await.unwrap();
    // The client retries (whatever it was answered), later: a replay, and the entry it logs again is
    // consumed by the next fold without being counted.
    assert_eq!(
        through
            .increment(&key, 9, Some("increment:lost"))
            .await
            .unwrap(),
        Incremented::AcceptedBefore
    );
    s.aggregator.rescan(Duration::ZERO).await.unwrap();
    assert_eq!(s.counters.get(&key).await.unwrap(), Some(9));
    assert!(scanned(&s, &s.tables.counter_log).await.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_keyed_eventual_increment_applied_then_500_counts_once() {
    a_keyed_eventual_increment_with_a_lost_answer_counts_once(FaultKind::AppliedThen500).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_keyed_eventual_increment_applied_then_delayed_counts_once() {
    a_keyed_eventual_increment_with_a_lost_answer_counts_once(FaultKind::AppliedThenDelayed).await
}

/// A fold whose transaction (entries deleted, markers put in the marker table, counters updated) applied
/// but whose answer was lost (`kind`): delivered again, and re-scanned, it counts nothing more; the
/// markers are in the marker table, and the keyed requests retried count nothing.
async fn a_fold_with_a_lost_answer_counts_once(kind: FaultKind) {
    let mut s = eventual_dynamodb().await;
    let keys = keys("refolded", 2);
    let expected = log_increments(&s, &keys, 12).await;
    let event = delivered(&mut s.reader, 12).await;
    let entries = strata_counters::stream::entries(&event);
    let proxy = FaultProxy::start(
        strata_tests::dynamodb::endpoint(),
        11,
        FaultConfig::only(kind, 1.0)
            .on(&["TransactWriteItems"])
            .at_most(1)
            .with_delay(Duration::from_millis(3200)),
    )
    .await;
    let faulted = aggregator_on(&s, Some(&proxy.url)).await;
    let first = faulted.fold(entries.clone()).await;
    eprintln!("{kind}: {first:?}; {}", proxy.stats());
    assert_eq!(proxy.stats().faults_of(kind), 1, "the fault was injected");
    // Lambda delivers the batch again (after a failure, or twice anyway), and the schedule re-scans.
    faulted.fold(entries.clone()).await.unwrap();
    assert_eq!(s.aggregator.fold(entries.clone()).await.unwrap(), 0);
    assert_eq!(s.aggregator.rescan(Duration::ZERO).await.unwrap().folded, 0);
    assert_eq!(totals(&s, &keys).await, expected);
    // Every third increment was keyed: 0, 3, 6, 9.
    assert_eq!(scanned(&s, &s.tables.counter_markers).await.len(), 4);
    assert!(scanned(&s, &s.tables.counter_log).await.is_empty());
    for entry in entries.iter().filter(|e| e.request().is_some()) {
        let key = CounterKey::parse(&entry.key).unwrap();
        let answer = s
            .counters
            .increment(&key, entry.value, entry.request())
            .await
            .unwrap();
        assert_eq!(answer, Incremented::AcceptedBefore);
    }
    // Their entries, logged again, are consumed without being counted.
    assert_eq!(s.aggregator.rescan(Duration::ZERO).await.unwrap().folded, 4);
    assert_eq!(totals(&s, &keys).await, expected);
    assert!(scanned(&s, &s.tables.counter_log).await.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fold_applied_then_500_counts_once() {
    a_fold_with_a_lost_answer_counts_once(FaultKind::AppliedThen500).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fold_applied_then_delayed_counts_once() {
    a_fold_with_a_lost_answer_counts_once(FaultKind::AppliedThenDelayed).await
}

/// An export carries every live marker, from the marker table and any left in the log, once per request;
/// an entry not yet folded whose request is marked already counts nothing, as the fold would consume it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_export_carries_the_markers_of_both_tables_and_counts_each_request_once() {
    use strata_core::transfer::{Record, Service, Transfer};
    let s = eventual_dynamodb().await;
    let key = CounterKey::parse("exported").unwrap();
    put_old_marker(&s, "increment:old").await;
    s.counters
        .increment(&key, 2, Some("increment:folded"))
        .await
        .unwrap();
    assert_eq!(s.aggregator.rescan(Duration::ZERO).await.unwrap().folded, 1);
    // A request logged before markers moved and retried since: in the log under both ids, unfolded.
    s.client
        .put_item()
        .table_name(&s.tables.counter_log)
        .item("id", AttributeValue::S("r#increment:twice".into()))
        .item("key", AttributeValue::S(key.as_str().into()))
        .item("value", AttributeValue::N("3".into()))
        .item("at", AttributeValue::N("1".into()))
        .send()
        .await
        .unwrap();
    s.counters
        .increment(&key, 3, Some("increment:twice"))
        .await
        .unwrap();
    let transfer = strata_dynamo::transfer::DynamoTransfer::new(
        s.client.clone(),
        s.tables.clone(),
        strata_core::defaults::RETENTION,
    );
    let records = transfer.export(&[Service::Counters]).await.unwrap();
    let mut requests: Vec<&str> = records
        .iter()
        .filter_map(|r| match r {
            Record::CounterRequest { id, .. } => Some(id.as_str()),
            _ => None,
        })
        .collect();
    requests.sort();
    assert_eq!(
        requests,
        ["increment:folded", "increment:old", "increment:twice"]
    );
    let total = records.iter().find_map(|r| match r {
        Record::Counter { key: k, total, .. } if k == key.as_str() => Some(*total),
        _ => None,
    });
    assert_eq!(total, Some(5), "{records:?}");
}

/// A keyed eventual increment through the HTTP layer, whose key the log keeps itself: no idempotency record
/// is written; a retry is a replay (`idempotent-replayed: true`) and another counter or value under the key
/// is `422`, both before the entry is folded and after; it counts once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_keyed_eventual_increment_is_replayed_or_refused_by_the_log_itself() {
    use http::StatusCode;
    let s = eventual_dynamodb().await;
    let settings = Settings {
        counter_mode: Mode::Eventual,
        ..Settings::default()
    };
    let stores = strata_dynamo::stores(s.client.clone(), s.tables.clone(), &settings);
    let app = strata_tests::fixture::App::new(stores);
    let send = |body: Value| {
        let app = app.clone();
        async move { app.post_keyed("/increment", "k1", body).await }
    };
    let replayed = |r: &strata_tests::fixture::Reply| {
        r.headers
            .get("idempotent-replayed")
            .is_some_and(|v| v == "true")
    };
    let first = send(json!({"key": "kept", "value": 7})).await;
    assert_eq!(first.status, StatusCode::ACCEPTED, "{:?}", first.body);
    assert!(!replayed(&first));
    for folded in [false, true] {
        if folded {
            s.aggregator.rescan(Duration::ZERO).await.unwrap();
        }
        let again = send(json!({"key": "kept", "value": 7})).await;
        assert_eq!(again.status, StatusCode::ACCEPTED, "{:?}", again.body);
        assert_eq!(again.body, first.body);
        assert!(replayed(&again), "folded: {folded}");
        for other in [
            json!({"key": "kept", "value": 8}),
            json!({"key": "other", "value": 7}),
        ] {
            let refused = send(other).await;
            assert_eq!(
                refused.status,
                StatusCode::UNPROCESSABLE_ENTITY,
                "folded: {folded}"
            );
            assert_eq!(refused.code(), "idempotency_key_reused");
        }
        // The request again, after another one under its key was logged: still its replay.
        let again = send(json!({"key": "kept", "value": 7})).await;
        assert_eq!(again.status, StatusCode::ACCEPTED, "{:?}", again.body);
        assert!(replayed(&again), "folded: {folded}");
    }
    s.aggregator.rescan(Duration::ZERO).await.unwrap();
    let key = CounterKey::parse("kept").unwrap();
    assert_eq!(s.counters.get(&key).await.unwrap(), Some(7), "counted once");
    let other = CounterKey::parse("other").unwrap();
    assert_eq!(s.counters.get(&other).await.unwrap(), None);
    assert!(
        scanned(&s, &s.tables.idempotency).await.is_empty(),
        "the HTTP layer wrote no record"
    );
    assert!(scanned(&s, &s.tables.counter_log).await.is_empty());
}

/// A keyed increment retried after the deployment switched counter modes (a restart with the other
/// `--counter-mode` on the same tables) counts once, whichever mode counted or logged it first: a strong
/// answer's record answers in eventual mode; a strong request that died holds its token, which the fold
/// honours; a request logged or folded in eventual mode is found by strong mode (its entry or its marker).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_keyed_increment_counts_once_across_a_switch_of_counter_mode() {
    use http::StatusCode;
    let s = eventual_dynamodb().await;
    let on = |mode: Mode| {
        let settings = Settings {
            counter_mode: mode,
            ..Settings::default()
        };
        strata_dynamo::stores(s.client.clone(), s.tables.clone(), &settings)
    };
    let (strong, eventual) = (on(Mode::Strong), on(Mode::Eventual));
    let total = |key: &str| {
        let counters = s.counters.clone();
        let key = CounterKey::parse(key).unwrap();
        async move { counters.get(&key).await.unwrap() }
    };
    let post = |stores: &strata_core::Stores, body: Value| {
        let app = strata_tests::fixture::App::new(stores.clone());
        async move { app.post_keyed("/increment", "switched", body).await }
    };

    // Counted in strong mode and recorded; retried in eventual mode: the record answers.
    let first = post(&strong, json!({"key": "a", "value": 5})).await;
    assert_eq!(first.status, StatusCode::OK, "{:?}", first.body);
    strong.counters.idle().await;
    let again = post(&eventual, json!({"key": "a", "value": 5})).await;
    assert_eq!((again.status, &again.body), (StatusCode::OK, &first.body));
    assert_eq!(
        again.headers.get("idempotent-replayed").unwrap(),
        "true",
        "a replay"
    );

    // Counted in strong mode by a request that died before its answer was recorded; retried in eventual
    // mode: logged, and the fold finds the request's token in the counter.
    let b = CounterKey::parse("b").unwrap();
    strong
        .counters
        .increment(&b, 3, Some("increment:died"))
        .await
        .unwrap();
    eventual
        .counters
        .increment(&b, 3, Some("increment:died"))
        .await
        .unwrap();

    // Logged in eventual mode: retried in strong mode before the fold, and after it.
    let c = CounterKey::parse("c").unwrap();
    let d = CounterKey::parse("d").unwrap();
    for key in [&c, &d] {
        eventual
            .counters
            .increment(key, 4, Some(&format!("increment:{}", key.as_str())))
            .await
            .unwrap();
    }
    s.aggregator.rescan(Duration::ZERO).await.unwrap();
    eventual
        .counters
        .increment(&d, 4, Some("increment:d2"))
        .await
        .unwrap();
    for (key, request) in [(&c, "increment:c"), (&d, "increment:d2")] {
        strong
            .counters
            .increment(key, 4, Some(request))
            .await
            .unwrap();
    }
    s.aggregator.rescan(Duration::ZERO).await.unwrap();

    assert_eq!(total("a").await, Some(5));
    assert_eq!(total("b").await, Some(3));
    assert_eq!(total("c").await, Some(4));
    assert_eq!(total("d").await, Some(8));
    assert!(scanned(&s, &s.tables.counter_log).await.is_empty());
}
