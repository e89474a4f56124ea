//! The counter functions, both modes, and the aggregator.

use super::driver::{Driver, assert_status, body, key, lost, param};
use super::*;

pub(super) fn increment(e: &mut Value, counter: &str, value: u64) {
    body(e, json!({"key": counter, "value": value}).to_string());
}

pub(super) async fn drive_counters(d: &Driver) {
    assert_status(
        &d.event("counters-get").await,
        StatusCode::NOT_FOUND,
        "counters-get",
    );
    assert_status(
        &d.event("counters-increment").await,
        StatusCode::OK,
        "counters-increment",
    );
    assert_status(
        &d.event("counters-get").await,
        StatusCode::OK,
        "counters-get",
    );
    let lost_add = d
        .faulted(lost("UpdateItem", 1), d.event("counters-increment"))
        .await;
    assert_status(
        &lost_add,
        StatusCode::OK,
        "unkeyed strong increment after a lost answer",
    );
    let keyed = d.call("counters-increment", |e| key(e, "inc-1")).await;
    assert_status(&keyed, StatusCode::OK, "keyed strong increment");
    // A counter an older version wrote (no time its tokens began): a keyed increment looks for the
    // request's marker that version left in the log.
    strata::dynamodb_local::local_client(strata_tests::dynamodb::endpoint())
        .await
        .put_item()
        .table_name(&d.tables.counters)
        .item(
            "key",
            aws_sdk_dynamodb::types::AttributeValue::S("older".into()),
        )
        .item(
            "total",
            aws_sdk_dynamodb::types::AttributeValue::N("1".into()),
        )
        .item(
            "room",
            aws_sdk_dynamodb::types::AttributeValue::N(
                (strata_core::counters::MAX_TOTAL - 1).to_string(),
            ),
        )
        .send()
        .await
        .unwrap();
    let older = d
        .call("counters-increment", |e| {
            increment(e, "older", 1);
            key(e, "inc-older");
        })
        .await;
    assert_status(
        &older,
        StatusCode::OK,
        "keyed increment of an older counter",
    );
    d.recorder
        .refuse_next("dynamodb:UpdateItem", "CounterTable", 1);
    let refused = d.call("counters-increment", |e| key(e, "inc-2")).await;
    assert_status(
        &refused,
        StatusCode::SERVICE_UNAVAILABLE,
        "keyed increment refused",
    );
    let too_big = d
        .call("counters-increment", |e| {
            increment(e, "hello world", u64::MAX)
        })
        .await;
    assert!(
        too_big.status.is_client_error(),
        "an increment no counter can take: {}",
        too_big.text
    );

    // Eventual: log entries (keyed ones checked against the folded marker), folded by the aggregator.
    let eventual = &d.eventual;
    let mut reader = strata_tests::streams::StreamReader::open(
        strata_tests::dynamodb::endpoint(),
        &d.tables.counter_log,
    )
    .await;
    for edit in [
        (|e: &mut Value| increment(e, "eventual", 2)) as fn(&mut Value),
        |e: &mut Value| {
            increment(e, "eventual", 3);
            key(e, "eventual-1");
        },
    ] {
        let reply = d.call_on(eventual, "counters-increment", edit).await;
        assert_status(&reply, StatusCode::ACCEPTED, "eventual increment");
    }
    // What the event source mapping delivers (read here with the test's own client), folded by the
    // function's code.
    let aggregator = strata_dynamo::aggregator::Aggregator::new(d.client.clone(), &d.tables);
    d.driven.lock().unwrap().insert("counters-aggregate");
    let mut folded = 0;
    for _ in 0..100 {
        let batch = reader.next_event().await;
        let entries = strata_counters::stream::entries(&batch);
        folded += d
            .recorder
            .run("counters-aggregate", aggregator.fold(entries))
            .await
            .expect("fold");
        if folded >= 2 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(folded, 2, "both eventual increments folded");
    // The schedule's re-scan, through the function's handler: it scans the log (nothing in it is old
    // enough to fold, and what it would fold takes the grants above).
    let rescan = d
        .recorder
        .run(
            "counters-aggregate",
            strata_counters::aggregate::handle(
                &aggregator,
                json!({
                    "version": "0",
                    "id": "0f3e5b8c-1d2a-4b6c-9e7f-8a9b0c1d2e3f",
                    "detail-type": "Scheduled Event",
                    "source": "aws.events",
                    "account": "123456789012",
                    "time": "2026-12-01T10:00:00Z",
                    "region": "eu-west-1",
                    "resources": [],
                    "detail": {}
                }),
            ),
        )
        .await;
    assert!(rescan.is_ok(), "the scheduled re-scan: {rescan:?}");
    let total = d
        .call_on(eventual, "counters-get", |e| param(e, "key", "eventual"))
        .await;
    assert_eq!(total.json(), json!({"eventual": 5}), "{}", total.text);
}
