//! The DynamoDB stores behind the fault proxy (`strata_tests::fault_proxy`): lost answers, 500s, resets,
//! delayed answers and throttling on the writes of each service, through the local server's router and
//! strata's own SDK client. Each test states a promise a retried or failed write must keep: a write counts
//! once, a lost answer is not reported as a failure that invites a second write, an allocated number is
//! never lost nor used twice.

mod certificates;
mod counters;
mod idempotency;
mod kv;
mod kv_transactions;
mod widgets;

use aws_sdk_dynamodb::types::AttributeValue;
use axum::body::Body;
use http::{Method, StatusCode};
use serde_json::{Value, json};
use std::collections::BTreeSet;
use std::time::{Duration, Instant};
use strata_core::Settings;
use strata_core::counters::{CounterKey, Counters, Incremented, Mode};
use strata_core::retention::CLOCK_SKEW_MARGIN;
use strata_dynamo::counters::DynamoCounters;
use strata_tests::fault_proxy::{FaultConfig, FaultKind, FaultProxy};
use strata_tests::fixture::{App, Fixture, Reply, Through};

struct Setup {
    proxy: FaultProxy,
    through: Through,
}

impl Setup {
    fn app(&self) -> &App {
        &self.through.fixture.app
    }
}

/// Fresh tables, the stores reached through a proxy that starts healthy.
async fn setup() -> Setup {
    let proxy = FaultProxy::start(
        strata_tests::dynamodb::endpoint(),
        7,
        FaultConfig::healthy(),
    )
    .await;
    let through = Fixture::dynamodb_through(&proxy.url, Settings::default()).await;
    Setup { proxy, through }
}

fn request(method: Method, path: &str, key: Option<&str>, body: &Value) -> http::Request<Body> {
    let mut builder = http::Request::builder()
        .method(method)
        .uri(path)
        .header("content-type", "application/json");
    if let Some(key) = key {
        builder = builder.header("idempotency-key", key);
    }
    builder.body(Body::from(body.to_string())).unwrap()
}

/// A `503` in the contract's error JSON, with `retry-after`.
fn assert_unavailable(r: &Reply, what: &str) {
    assert_eq!(
        r.status,
        StatusCode::SERVICE_UNAVAILABLE,
        "{what}: {:?}",
        r.body
    );
    assert_eq!(r.code(), "store_unavailable", "{what}: {:?}", r.body);
    assert!(
        r.body["error"]["message"]
            .as_str()
            .is_some_and(|m| !m.is_empty()),
        "{what}: {:?}",
        r.body
    );
    assert!(
        r.headers.contains_key("retry-after"),
        "{what}: no retry-after: {:?}",
        r.headers
    );
}

async fn counter_total(app: &App, key: &str) -> u64 {
    let r = app.get(&format!("/increment/{key}")).await;
    match r.status {
        StatusCode::NOT_FOUND => 0,
        StatusCode::OK => r.body[key].as_u64().unwrap(),
        other => panic!("GET /increment/{key}: {other} {:?}", r.body),
    }
}

/// Loses the answer of the next `operation` (applied, then a 500).
async fn lose_next(t: &Setup, operation: &str) {
    t.proxy.set(
        FaultConfig::only(FaultKind::AppliedThen500, 1.0)
            .on(&[operation])
            .at_most(1),
    );
}
