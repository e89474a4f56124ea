//! The fault-injecting DynamoDB endpoint (`strata_tests::fault_proxy`) against real DynamoDB Local, through
//! strata's own SDK client (`strata_dynamo::config::client`: 3 attempts, 3 s per attempt): each fault does
//! what it says, and the counters are right.

use aws_sdk_dynamodb::Client;
use aws_sdk_dynamodb::error::ProvideErrorMetadata;
use aws_sdk_dynamodb::types::{AttributeValue, Put, TransactWriteItem, WriteRequest};
use std::time::{Duration, Instant};
use strata_dynamo::Tables;
use strata_dynamo::config::MAX_ATTEMPTS;
use strata_tests::fault_proxy::{FaultConfig, FaultKind, FaultProxy};

struct Setup {
    proxy: FaultProxy,
    /// strata's client, through the proxy.
    client: Client,
    /// Straight to DynamoDB Local, to see what really got written.
    direct: Client,
    tables: Tables,
}

async fn setup(config: FaultConfig) -> Setup {
    let (direct, tables) = strata_tests::dynamodb::fresh_tables().await;
    let proxy = FaultProxy::start(strata_tests::dynamodb::endpoint(), 42, config).await;
    let sdk = strata_tests::dynamodb::sdk_config(&proxy.url).await;
    Setup {
        client: strata_dynamo::config::client(&sdk),
        proxy,
        direct,
        tables,
    }
}

fn s(v: &str) -> AttributeValue {
    AttributeValue::S(v.to_owned())
}

impl Setup {
    async fn put(
        &self,
        key: &str,
        only_if_absent: bool,
    ) -> Result<(), aws_sdk_dynamodb::error::SdkError<impl ProvideErrorMetadata + std::fmt::Debug>>
    {
        let mut put = self
            .client
            .put_item()
            .table_name(&self.tables.kv)
            .item("pk", s(key))
            .item("val", s("v"));
        if only_if_absent {
            put = put.condition_expression("attribute_not_exists(pk)");
        }
        put.send().await.map(drop)
    }

    /// Whether the item is in DynamoDB Local (read around the proxy).
    async fn stored(&self, key: &str) -> bool {
        self.direct
            .get_item()
            .table_name(&self.tables.kv)
            .key("pk", s(key))
            .consistent_read(true)
            .send()
            .await
            .expect("direct read")
            .item
            .is_some()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn healthy_forwards_everything_and_counts_per_operation_and_table() {
    let t = setup(FaultConfig::healthy()).await;
    t.put("a", false).await.expect("put through the proxy");
    let got = t
        .client
        .get_item()
        .table_name(&t.tables.kv)
        .key("pk", s("a"))
        .send()
        .await
        .expect("get through the proxy");
    assert_eq!(got.item.unwrap()["val"], s("v"));
    // A transaction over two tables and a batch write over two tables: each table counted once per request.
    t.client
        .transact_write_items()
        .transact_items(
            TransactWriteItem::builder()
                .put(
                    Put::builder()
                        .table_name(&t.tables.kv)
                        .item("pk", s("b"))
                        .build()
                        .unwrap(),
                )
                .build(),
        )
        .transact_items(
            TransactWriteItem::builder()
                .put(
                    Put::builder()
                        .table_name(&t.tables.widgets)
                        .item("serial", s("w"))
                        .build()
                        .unwrap(),
                )
                .build(),
        )
        .send()
        .await
        .expect("transaction through the proxy");
    let write = |attr: &str, key: &str| {
        WriteRequest::builder()
            .put_request(
                aws_sdk_dynamodb::types::PutRequest::builder()
                    .item(attr, s(key))
                    .build()
                    .unwrap(),
            )
            .build()
    };
    t.client
        .batch_write_item()
        .request_items(&t.tables.kv, vec![write("pk", "c"), write("pk", "d")])
        .request_items(&t.tables.widgets, vec![write("serial", "x")])
        .send()
        .await
        .expect("batch write through the proxy");
    assert!(t.stored("b").await && t.stored("c").await && t.stored("d").await);

    let stats = t.proxy.stats();
    println!("{stats}");
    assert_eq!(stats.requests("PutItem"), 1);
    assert_eq!(stats.requests_on("PutItem", &t.tables.kv), 1);
    assert_eq!(stats.requests_on("PutItem", &t.tables.widgets), 0);
    assert_eq!(stats.requests_on("GetItem", &t.tables.kv), 1);
    assert_eq!(stats.requests("TransactWriteItems"), 1);
    assert_eq!(stats.requests_on("TransactWriteItems", &t.tables.kv), 1);
    assert_eq!(
        stats.requests_on("TransactWriteItems", &t.tables.widgets),
        1
    );
    assert_eq!(stats.requests_on("BatchWriteItem", &t.tables.kv), 1);
    assert_eq!(stats.requests_on("BatchWriteItem", &t.tables.widgets), 1);
    assert_eq!(stats.total_requests(), 4);
    assert_eq!(stats.total_faults(), 0);
    assert!(stats.to_string().contains("PutItem 1"), "{stats}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn applied_then_500_writes_and_the_sdk_retries() {
    let t = setup(FaultConfig::only(FaultKind::AppliedThen500, 1.0).at_most(1)).await;
    t.put("k", false).await.expect("the retry succeeds");
    assert!(t.stored("k").await);
    let stats = t.proxy.stats();
    assert_eq!(stats.requests("PutItem"), 2, "{stats}");
    assert_eq!(stats.faults_of(FaultKind::AppliedThen500), 1, "{stats}");
    assert_eq!(
        stats.faults_by_operation[&(FaultKind::AppliedThen500, "PutItem".to_owned())],
        1
    );

    // The first attempt really applied: a conditional put on a fresh key fails on its own retry.
    t.proxy
        .set(FaultConfig::only(FaultKind::AppliedThen500, 1.0).at_most(1));
    let e = t
        .put("fresh", true)
        .await
        .expect_err("the retry finds the item");
    assert_eq!(
        e.as_service_error().and_then(|e| e.code()),
        Some("ConditionalCheckFailedException"),
        "{e:?}"
    );
    assert!(t.stored("fresh").await);

    // At rate 1 every attempt gets the 500: the SDK gives up after its attempts, with the 500.
    t.proxy.reset_stats();
    t.proxy
        .set(FaultConfig::only(FaultKind::AppliedThen500, 1.0));
    let e = t
        .put("always", false)
        .await
        .expect_err("every attempt fails");
    assert_eq!(e.raw_response().map(|r| r.status().as_u16()), Some(500));
    assert_eq!(
        e.as_service_error().and_then(|e| e.code()),
        Some("InternalServerError")
    );
    assert!(t.stored("always").await, "each attempt applied");
    assert_eq!(t.proxy.stats().requests("PutItem"), u64::from(MAX_ATTEMPTS));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn before_500_and_throttle_write_nothing() {
    let t = setup(FaultConfig::only(FaultKind::Before500, 1.0)).await;
    let e = t
        .put("b500", false)
        .await
        .expect_err("500 on every attempt");
    assert_eq!(e.raw_response().map(|r| r.status().as_u16()), Some(500));
    assert_eq!(
        e.as_service_error().and_then(|e| e.code()),
        Some("InternalServerError")
    );
    assert!(!t.stored("b500").await);
    let stats = t.proxy.stats();
    assert_eq!(
        stats.requests("PutItem"),
        u64::from(MAX_ATTEMPTS),
        "{stats}"
    );
    assert_eq!(
        stats.faults_of(FaultKind::Before500),
        u64::from(MAX_ATTEMPTS)
    );

    t.proxy.reset_stats();
    t.proxy.set(FaultConfig::only(FaultKind::Throttle, 1.0));
    let e = t
        .put("thr", false)
        .await
        .expect_err("throttled on every attempt");
    assert_eq!(e.raw_response().map(|r| r.status().as_u16()), Some(400));
    assert_eq!(
        e.as_service_error().and_then(|e| e.code()),
        Some("ThrottlingException")
    );
    assert!(!t.stored("thr").await);
    let stats = t.proxy.stats();
    assert_eq!(
        stats.requests("PutItem"),
        u64::from(MAX_ATTEMPTS),
        "{stats}"
    );
    assert_eq!(
        stats.faults_of(FaultKind::Throttle),
        u64::from(MAX_ATTEMPTS)
    );

    // Reads are never faulted, and healthy again at runtime means healthy.
    let got = t
        .client
        .get_item()
        .table_name(&t.tables.kv)
        .key("pk", s("thr"))
        .send()
        .await
        .expect("reads pass");
    assert!(got.item.is_none());
    t.proxy.set(FaultConfig::healthy());
    t.put("thr", false).await.expect("healthy again");
    assert!(t.stored("thr").await);
    let stats = t.proxy.stats();
    assert_eq!(stats.requests("PutItem"), u64::from(MAX_ATTEMPTS) + 1);
    assert_eq!(
        stats.faults_of(FaultKind::Throttle),
        u64::from(MAX_ATTEMPTS)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn applied_then_delayed_times_the_attempt_out_and_the_retry_finds_it_applied() {
    let t = setup(FaultConfig::only(FaultKind::AppliedThenDelayed, 1.0).at_most(1)).await;
    let started = Instant::now();
    let e = t
        .put("slow", true)
        .await
        .expect_err("the retry of the conditional put finds the item");
    let took = started.elapsed();
    assert_eq!(
        e.as_service_error().and_then(|e| e.code()),
        Some("ConditionalCheckFailedException"),
        "{e:?}"
    );
    assert!(
        took >= strata_dynamo::config::ATTEMPT_TIMEOUT,
        "the first attempt timed out: {took:?}"
    );
    assert!(t.stored("slow").await);
    let stats = t.proxy.stats();
    assert_eq!(stats.requests("PutItem"), 2, "{stats}");
    assert_eq!(stats.faults_of(FaultKind::AppliedThenDelayed), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reset_mid_answer_applies_and_cuts_the_answer_short() {
    let t = setup(FaultConfig::only(FaultKind::ResetMidAnswer, 1.0).at_most(1)).await;
    let e = t
        .put("reset", true)
        .await
        .expect_err("the retry of the conditional put finds the item");
    assert_eq!(
        e.as_service_error().and_then(|e| e.code()),
        Some("ConditionalCheckFailedException"),
        "{e:?}"
    );
    assert!(t.stored("reset").await);
    let stats = t.proxy.stats();
    assert_eq!(stats.requests("PutItem"), 2, "{stats}");
    assert_eq!(stats.faults_of(FaultKind::ResetMidAnswer), 1);

    // What a client sees on the wire: the status line and headers, then a body shorter than announced.
    t.proxy
        .set(FaultConfig::only(FaultKind::ResetMidAnswer, 1.0).at_most(1));
    let body = serde_json::json!({
        "TableName": t.tables.kv,
        "Item": {"pk": {"S": "raw"}},
        "ReturnConsumedCapacity": "TOTAL",
    });
    let answer = reqwest::Client::new()
        .post(&t.proxy.url)
        .header("x-amz-target", "DynamoDB_20120810.PutItem")
        .header("content-type", "application/x-amz-json-1.0")
        .header(
            "authorization",
            "AWS4-HMAC-SHA256 Credential=local/20250101/us-east-1/dynamodb/aws4_request, \
             SignedHeaders=content-type;host;x-amz-target, Signature=0",
        )
        .header("x-amz-date", "20250101T000000Z")
        .body(body.to_string())
        .send()
        .await
        .expect("the status line and headers arrive");
    let announced = answer.content_length().expect("content-length");
    assert!(announced > 0);
    assert!(
        answer.bytes().await.is_err(),
        "the body ends before its announced {announced} bytes"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_mode_delays_the_chosen_operation_until_switched_off() {
    let t =
        setup(FaultConfig::healthy().with_slow(Duration::from_millis(1200), Some("GetItem"))).await;
    t.put("s", false).await.unwrap();
    let get = || async {
        let started = Instant::now();
        t.client
            .get_item()
            .table_name(&t.tables.kv)
            .key("pk", s("s"))
            .send()
            .await
            .expect("get");
        started.elapsed()
    };
    let slow = get().await;
    assert!(slow >= Duration::from_millis(1200), "{slow:?}");
    t.proxy.set(FaultConfig::healthy());
    let fast = get().await;
    assert!(fast < Duration::from_millis(600), "{fast:?}");
    let stats = t.proxy.stats();
    assert_eq!(stats.slowed, 1, "{stats}");
    assert_eq!(stats.requests("GetItem"), 2);
}

/// The rates hold over many writes, and one seed makes the same decisions.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rates_split_across_kinds_and_are_deterministic() {
    let kinds = [FaultKind::Before500, FaultKind::Throttle];
    let run = || async {
        let t = setup(FaultConfig::split(0.4, &kinds)).await;
        let mut failed = Vec::new();
        for i in 0..60 {
            failed.push(t.put(&format!("k{i}"), false).await.is_err());
        }
        (t.proxy.stats(), failed)
    };
    let (a, failed_a) = run().await;
    let (b, failed_b) = run().await;
    assert_eq!(a.faults, b.faults, "same seed, same faults");
    assert_eq!(failed_a, failed_b);
    let writes = a.requests("PutItem");
    let faults = a.total_faults();
    // 40% of the attempts, each kind about half of them (binomial; these bounds are many sigmas wide).
    assert!(
        (writes as f64 * 0.2..writes as f64 * 0.6).contains(&(faults as f64)),
        "{a}"
    );
    for kind in kinds {
        assert!(a.faults_of(kind) > faults / 5, "{a}");
    }
    assert_eq!(a.faults_of(FaultKind::AppliedThen500), 0);
}
