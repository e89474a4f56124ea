//! Certificates when things go wrong: a Lambda that dies between allocating a number and writing the
//! certificate (DynamoDB), and `kill -9` of the local server under load.

use http::StatusCode;
use serde_json::{Value, json};
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use strata_core::Settings;
use strata_dynamo::ledger::DynamoLedger;
use strata_tests::fixture::App;
use strata_tests::server::Server;

/// The stores on fresh DynamoDB tables, with a ledger whose next issue "dies" after allocating.
async fn dynamo_with_faulty_ledger() -> (App, Arc<DynamoLedger>) {
    let (client, tables) = strata_tests::dynamodb::fresh_tables().await;
    let settings = Settings::default();
    let ledger = Arc::new(DynamoLedger::new(
        client.clone(),
        tables.ledger.clone(),
        settings.default_classes.clone(),
        settings.retention,
    ));
    let mut stores = strata_dynamo::stores(client, tables, &settings);
    stores.ledger = ledger.clone();
    (App::new(stores), ledger)
}

async fn numbers(app: &App, class: &str) -> Vec<u64> {
    let r = app
        .get(&format!("/certificates?class={class}&limit=1000"))
        .await;
    r.body["certificates"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["number"].as_u64().unwrap())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_death_between_allocation_and_write_leaves_no_gap() {
    let (app, ledger) = dynamo_with_faulty_ledger().await;
    assert_eq!(
        app.post(
            "/certificates",
            json!({"name": "a", "amount": 1, "class": "CS"})
        )
        .await
        .status,
        StatusCode::CREATED
    );
    ledger.inject_failure_after_allocation();
    let r = app
        .post(
            "/certificates",
            json!({"name": "lost?", "amount": 5, "class": "CS"}),
        )
        .await;
    assert_eq!(r.status, StatusCode::INTERNAL_SERVER_ERROR, "{:?}", r.body);
    // number 2 is allocated, its certificate not written yet: a read of it finishes it
    assert_eq!(app.get("/share-classes/CS").await.body["next_number"], 3);
    let got = app.get("/certificates/CS-2").await;
    assert_eq!(
        (got.status, &got.body["name"], &got.body["amount"]),
        (StatusCode::OK, &json!("lost?"), &json!(5))
    );
    // and numbering goes on with no gap
    assert_eq!(
        app.post(
            "/certificates",
            json!({"name": "c", "amount": 1, "class": "CS"})
        )
        .await
        .body["id"],
        "CS-3"
    );
    assert_eq!(numbers(&app, "CS").await, vec![1, 2, 3]);
    assert_eq!(app.get("/share-classes/CS").await.body["issued"], 7);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_listing_or_a_later_issue_finishes_what_a_dead_request_left() {
    let (app, ledger) = dynamo_with_faulty_ledger().await;
    ledger.inject_failure_after_allocation();
    assert_eq!(
        app.post(
            "/certificates",
            json!({"name": "dead", "amount": 2, "class": "PS"})
        )
        .await
        .status,
        StatusCode::INTERNAL_SERVER_ERROR
    );
    // the listing sees number 1 allocated but missing, and completes it
    assert_eq!(numbers(&app, "PS").await, vec![1]);
    ledger.inject_failure_after_allocation();
    assert_eq!(
        app.post(
            "/certificates",
            json!({"name": "dead too", "amount": 2, "class": "PS"})
        )
        .await
        .status,
        StatusCode::INTERNAL_SERVER_ERROR
    );
    // past the age at which others finish it
    tokio::time::sleep(strata_dynamo::ledger::ABANDONED + Duration::from_millis(200)).await;
    assert_eq!(
        app.post(
            "/certificates",
            json!({"name": "alive", "amount": 1, "class": "PS"})
        )
        .await
        .body["id"],
        "PS-3"
    );
    let got = app.get("/certificates/PS-2").await;
    assert_eq!(
        (got.status, &got.body["name"]),
        (StatusCode::OK, &json!("dead too"))
    );
    assert_eq!(numbers(&app, "PS").await, vec![1, 2, 3]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_retry_with_the_key_of_a_dead_request_gets_its_certificate() {
    let (app, ledger) = dynamo_with_faulty_ledger().await;
    let request = |key: &str| {
        http::Request::builder()
            .method("POST")
            .uri("/certificates")
            .header("idempotency-key", key)
            .body(axum::body::Body::from(
                json!({"name": "once", "amount": 4, "class": "CS"}).to_string(),
            ))
            .unwrap()
    };
    ledger.inject_failure_after_allocation();
    let r = app.send(request("k-1")).await;
    assert_eq!(r.status, StatusCode::INTERNAL_SERVER_ERROR);
    // the 5xx released the key: the retry runs again, and finds the number its first attempt took
    let r = app.send(request("k-1")).await;
    assert_eq!(
        (r.status, &r.body["id"]),
        (StatusCode::CREATED, &json!("CS-1")),
        "{:?}",
        r.body
    );
    assert_eq!(app.send(request("k-1")).await.body["id"], "CS-1");
    assert_eq!(numbers(&app, "CS").await, vec![1]);
    assert_eq!(app.get("/share-classes/CS").await.body["issued"], 4);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn acknowledged_certificates_survive_kill_9_under_load() {
    let dir = tempfile::tempdir().unwrap();
    let mut server = Server::start(crate::STRATA, dir.path(), &[]);
    let client = reqwest::Client::new();
    let acked: Arc<Mutex<BTreeMap<String, Value>>> = Arc::default();
    let mut tasks = Vec::new();
    for c in 0..20 {
        let (client, acked, base) = (client.clone(), acked.clone(), server.base.clone());
        tasks.push(tokio::spawn(async move {
            for i in 0u64.. {
                let class = if i % 3 == 0 { "PS" } else { "CS" };
                let body =
                    json!({"name": format!("client {c}"), "amount": 1 + i % 4, "class": class});
                let Ok(r) = client
                    .post(format!("{base}/certificates"))
                    .json(&body)
                    .send()
                    .await
                else {
                    return;
                };
                let Ok(certificate) = r.json::<Value>().await else {
                    return;
                };
                acked
                    .lock()
                    .unwrap()
                    .insert(certificate["id"].as_str().unwrap().to_owned(), certificate);
            }
        }));
    }
    tokio::time::sleep(Duration::from_millis(1500)).await;
    server.kill9();
    for t in tasks {
        t.await.unwrap();
    }
    server.restart();
    let acked = acked.lock().unwrap().clone();
    assert!(
        acked.len() > 100,
        "the load ran ({} certificates)",
        acked.len()
    );
    for (id, certificate) in &acked {
        let r: Value = client
            .get(server.url(&format!("/certificates/{id}")))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        assert_eq!(&r, certificate, "{id} was acknowledged");
    }
    for class in ["CS", "PS"] {
        let info: Value = client
            .get(server.url(&format!("/share-classes/{class}")))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        let mut numbers: Vec<u64> = Vec::new();
        let mut after = Value::from(0);
        while let Some(from) = after.as_u64() {
            let page: Value = client
                .get(server.url(&format!(
                    "/certificates?class={class}&after={from}&limit=1000"
                )))
                .send()
                .await
                .unwrap()
                .json()
                .await
                .unwrap();
            numbers.extend(
                page["certificates"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|c| c["number"].as_u64().unwrap()),
            );
            after = page["next_after"].clone();
        }
        let expected: Vec<u64> = (1..info["next_number"].as_u64().unwrap()).collect();
        assert!(
            numbers == expected,
            "{class} is not gapless: {} listed, next_number {}",
            numbers.len(),
            info["next_number"]
        );
        // and numbering continues where it stopped
        let next: Value = client
            .post(server.url("/certificates"))
            .json(&json!({"name": "after", "amount": 1, "class": class}))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        assert_eq!(next["number"], info["next_number"]);
    }
}
