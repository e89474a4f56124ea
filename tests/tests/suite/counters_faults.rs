//! The eventual-mode aggregator against DynamoDB Local's real stream, under redelivery and crashes; and the
//! local server's counters under `kill -9` and rate limiting.

use aws_sdk_dynamodb::types::AttributeValue;
use serde_json::{Value, json};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;
use strata_core::Settings;
use strata_core::counters::{CounterKey, Counters, Mode};
use strata_dynamo::aggregator::Aggregator;
use strata_tests::server::Server;
use strata_tests::streams::StreamReader;

struct Setup {
    counters: Arc<dyn Counters>,
    aggregator: Aggregator,
    reader: StreamReader,
}

async fn eventual_dynamodb() -> Setup {
    let (client, tables) = strata_tests::dynamodb::fresh_tables().await;
    let aggregator = Aggregator::new(
        client.clone(),
        tables.counters.clone(),
        tables.counter_log.clone(),
    );
    let reader = StreamReader::open(strata_tests::dynamodb::endpoint(), &tables.counter_log).await;
    let settings = Settings {
        counter_mode: Mode::Eventual,
        ..Settings::default()
    };
    let stores = strata_dynamo::stores(client, tables, &settings);
    Setup {
        counters: stores.counters,
        aggregator,
        reader,
    }
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
    // and a late retry of the keyed request, after its entry was folded and deleted, is recognised
    s.counters
        .increment(&key, 100, Some("increment:k1"))
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    let later = strata_counters::stream::entries(&s.reader.next_event().await);
    assert!(later.is_empty(), "the retry appended nothing: {later:?}");
    assert_eq!(s.counters.get(&key).await.unwrap(), Some(115));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crash_partway_through_a_fold_counts_everything_once_on_redelivery() {
    let mut s = eventual_dynamodb().await;
    let keys: Vec<CounterKey> = (0..4)
        .map(|i| CounterKey::parse(&format!("c{i}")).unwrap())
        .collect();
    // 70 entries: three chunks of the aggregator
    for i in 0..70u64 {
        s.counters
            .increment(&keys[(i % 4) as usize], i + 1, None)
            .await
            .unwrap();
    }
    let event = delivered(&mut s.reader, 70).await;
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
        partial > 0 && partial < (1..=70).sum::<u64>(),
        "one chunk was folded: {partial}"
    );
    // Lambda delivers the batch again: the rest is folded, the first chunk is not counted twice
    assert_eq!(s.aggregator.fold(entries).await.unwrap(), 40);
    for (i, k) in keys.iter().enumerate() {
        let expected: u64 = (0..70u64)
            .filter(|n| n % 4 == i as u64)
            .map(|n| n + 1)
            .sum();
        assert_eq!(s.counters.get(k).await.unwrap(), Some(expected), "{k:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_aggregate_event_file_drives_the_aggregator() {
    let (client, tables) = strata_tests::dynamodb::fresh_tables().await;
    let text = std::fs::read_to_string(
        strata_tests::repo_root().join("infra/events/counters-aggregate.json"),
    )
    .unwrap();
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
    let aggregator = Aggregator::new(
        client.clone(),
        tables.counters.clone(),
        tables.counter_log.clone(),
    );
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
    // acknowledged, so reaching `acked` is not the end: wait until the total holds still for 2 s (40 folder
    // rounds) — on a loaded machine folding the whole backlog can take a while.
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
