//! The event files in `infra/events/` (real API Gateway HTTP API v2 payloads, the ones `sam local invoke -e`
//! and `cargo lambda invoke --data-file` take) driven through the very handlers the Lambdas run.

use http::StatusCode;
use serde_json::{Value, json};
use strata::routes;
use strata_http::route::Route;
use strata_tests::events;
use strata_tests::fixture::Fixture;

fn route_of(function: &str) -> Route {
    routes::all()
        .into_iter()
        .chain([routes::FALLBACK])
        .find(|r| r.function == function)
        .unwrap_or_else(|| panic!("no route is served by function {function}"))
}

/// The transaction id the `kv-tx-*` event files carry; tests swap in the id of a real transaction.
const EVENT_TX_ID: &str = "5f0c1e9a8b7d4c3e2f1a0b9c8d7e6f5a";

async fn invoke(f: &Fixture, function: &str) -> (StatusCode, Value) {
    invoke_in(f, function, EVENT_TX_ID).await
}

async fn invoke_in(f: &Fixture, function: &str, tx: &str) -> (StatusCode, Value) {
    let text = events::text(function);
    let text = text.replace(EVENT_TX_ID, tx);
    let request =
        lambda_http::request::from_str(&text).unwrap_or_else(|e| panic!("{function}.json: {e}"));
    let response = (route_of(function).handler)(&f.stores, request).await;
    let body = response.body().as_ref();
    let body = if body.is_empty() {
        Value::Null
    } else {
        serde_json::from_slice(body).unwrap()
    };
    (response.status(), body)
}

#[tokio::test]
async fn every_function_in_the_template_has_an_event_file() {
    for route in strata::template::Template::load().http_routes() {
        let file = events::dir().join(format!("{}.json", route.binary));
        assert!(
            file.is_file(),
            "{} has no event file {}",
            route.binary,
            file.display()
        );
    }
}

#[tokio::test]
async fn kv_events_drive_the_handlers() {
    let f = Fixture::embedded().await;
    assert_eq!(invoke(&f, "kv-get").await.0, StatusCode::NOT_FOUND);
    let (status, body) = invoke(&f, "kv-put").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        body,
        json!({"key": "greeting", "value": "hello, world — 3 * 3 = 9", "version": 1})
    );
    let (status, body) = invoke(&f, "kv-get").await;
    assert_eq!(
        (status, &body["value"]),
        (StatusCode::OK, &json!("hello, world — 3 * 3 = 9"))
    );
    assert_eq!(
        invoke(&f, "kv-delete").await,
        (StatusCode::OK, json!({"key": "greeting", "deleted": true}))
    );
    assert_eq!(invoke(&f, "kv-get").await.0, StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn system_events_drive_the_handlers() {
    let f = Fixture::embedded().await;
    assert_eq!(
        invoke(&f, "health").await,
        (StatusCode::OK, json!({"status": "ok", "store": "embedded"}))
    );
    let (status, body) = invoke(&f, "not-found").await;
    assert_eq!(
        (status, &body["error"]["code"]),
        (StatusCode::NOT_FOUND, &json!("route_not_found"))
    );
}

#[tokio::test]
async fn kv_transaction_events_drive_the_handlers() {
    let f = Fixture::embedded().await;
    // the events' own id names no transaction
    for function in [
        "kv-tx-get",
        "kv-tx-put",
        "kv-tx-delete",
        "kv-tx-commit",
        "kv-tx-rollback",
    ] {
        let (status, body) = invoke(&f, function).await;
        assert_eq!(
            (status, &body["error"]["code"]),
            (StatusCode::NOT_FOUND, &json!("transaction_not_found"))
        );
    }
    let (status, body) = invoke(&f, "kv-tx-begin").await;
    assert_eq!(status, StatusCode::CREATED);
    let tx = body["id"].as_str().unwrap().to_owned();
    assert_eq!(invoke_in(&f, "kv-tx-put", &tx).await.0, StatusCode::OK);
    let (status, body) = invoke_in(&f, "kv-tx-get", &tx).await;
    assert_eq!(
        (status, &body["value"]),
        (StatusCode::OK, &json!("hello from a transaction"))
    );
    assert_eq!(invoke_in(&f, "kv-tx-delete", &tx).await.0, StatusCode::OK);
    assert_eq!(
        invoke_in(&f, "kv-tx-commit", &tx).await,
        (
            StatusCode::OK,
            json!({"id": tx, "committed": true, "writes": 1})
        )
    );
    let (_, body) = invoke(&f, "kv-tx-begin").await;
    let tx = body["id"].as_str().unwrap().to_owned();
    assert_eq!(
        invoke_in(&f, "kv-tx-rollback", &tx).await,
        (StatusCode::OK, json!({"id": tx, "rolled_back": true}))
    );
}

#[tokio::test]
async fn certificate_events_drive_the_handlers() {
    let f = Fixture::embedded().await;
    assert_eq!(
        invoke(&f, "share-classes-get").await.0,
        StatusCode::NOT_FOUND
    );
    let (status, body) = invoke(&f, "share-classes-put").await;
    assert_eq!(
        (status, &body["authorized"]),
        (StatusCode::OK, &json!(1000))
    );
    assert_eq!(invoke(&f, "share-classes-get").await.1["remaining"], 1000);
    assert_eq!(
        invoke(&f, "certificates-get").await.0,
        StatusCode::NOT_FOUND
    );
    let (status, first) = invoke(&f, "certificates-issue").await;
    assert_eq!(
        (status, &first["id"]),
        (StatusCode::CREATED, &json!("RS-1"))
    );
    // the event carries an Idempotency-Key: invoking it again replays the same certificate
    assert_eq!(
        invoke(&f, "certificates-issue").await,
        (StatusCode::CREATED, first.clone())
    );
    assert_eq!(
        invoke(&f, "certificates-get").await,
        (StatusCode::OK, first.clone())
    );
    let (status, page) = invoke(&f, "certificates-list").await;
    assert_eq!(
        (status, page),
        (
            StatusCode::OK,
            json!({"certificates": [first], "next_after": null})
        )
    );
}

#[tokio::test]
async fn counter_events_drive_the_handlers() {
    let f = Fixture::embedded().await;
    assert_eq!(invoke(&f, "counters-get").await.0, StatusCode::NOT_FOUND);
    assert_eq!(
        invoke(&f, "counters-increment").await,
        (StatusCode::OK, json!({"key": "hello world", "value": 20}))
    );
    assert_eq!(
        invoke(&f, "counters-get").await,
        (StatusCode::OK, json!({"hello world": 20}))
    );
}

#[tokio::test]
async fn the_commands_event_drives_the_line_protocol() {
    let f = Fixture::embedded().await;
    let text = events::text("kv-commands");
    let request = lambda_http::request::from_str(&text).unwrap();
    let response = (route_of("kv-commands").handler)(&f.stores, request).await;
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(
        String::from_utf8(response.body().to_vec()).unwrap(),
        concat!(
            "{\"status\": \"Ok\"}\n",
            "{\"status\": \"Ok\", \"result\": \"hello, world\"}\n",
            "{\"status\": \"Ok\"}\n{\"status\": \"Ok\"}\n{\"status\": \"Ok\"}\n",
            "{\"status\": \"Ok\", \"result\": \"bonjour\"}\n"
        )
    );
}

/// A WebSocket event file with another message body.
fn ws_event(function: &str, body: Option<&str>) -> lambda_http::Request {
    let mut event: Value = serde_json::from_str(&events::text(function)).unwrap();
    if let Some(body) = body {
        event["body"] = json!(body);
    }
    lambda_http::request::from_str(&event.to_string())
        .unwrap_or_else(|e| panic!("{function}.json: {e}"))
}

async fn ws(f: &Fixture, function: &str, body: Option<&str>) -> (StatusCode, String) {
    let handler = match function {
        "ws-connect" => strata_http::handler!(strata_kv::websocket::connect),
        "ws-disconnect" => strata_http::handler!(strata_kv::websocket::disconnect),
        _ => strata_http::handler!(strata_kv::websocket::default),
    };
    let response = handler(&f.stores, ws_event(function, body)).await;
    (
        response.status(),
        String::from_utf8(response.body().to_vec()).unwrap(),
    )
}

#[tokio::test]
async fn websocket_events_keep_a_session_per_connection() {
    for f in [Fixture::embedded().await, Fixture::dynamodb().await] {
        assert_eq!(ws(&f, "ws-connect", None).await.0, StatusCode::OK);
        let ok = "{\"status\": \"Ok\"}".to_owned();
        assert_eq!(
            ws(&f, "ws-default", None).await,
            (StatusCode::OK, ok.clone())
        );
        assert_eq!(ws(&f, "ws-default", Some("START")).await.1, ok);
        assert_eq!(
            ws(
                &f,
                "ws-default",
                Some("PUT greeting changed in a transaction")
            )
            .await
            .1,
            ok
        );
        // the transaction lives between invocations: the next message sees it, the store does not
        assert_eq!(
            ws(&f, "ws-default", Some("GET greeting")).await.1,
            "{\"status\": \"Ok\", \"result\": \"changed in a transaction\"}"
        );
        assert_eq!(
            ws(&f, "ws-default", Some("START")).await.1,
            "{\"status\": \"Error\", \"mesg\": \"Transaction already in progress\"}"
        );
        assert_eq!(ws(&f, "ws-disconnect", None).await.0, StatusCode::OK);
        // $disconnect rolled it back
        let got = f
            .stores
            .kv
            .get(&strata_core::kv::Key::parse("greeting").unwrap())
            .await
            .unwrap()
            .unwrap();
        assert_eq!(got.value, "hello over a socket", "{}", f.name);
        assert_eq!(
            ws(&f, "ws-default", Some("COMMIT")).await.1,
            "{\"status\": \"Error\", \"mesg\": \"No transaction in progress\"}"
        );
    }
}

#[tokio::test]
async fn widget_events_drive_the_handlers() {
    let f = Fixture::embedded().await;
    assert_eq!(invoke(&f, "widgets-get").await.0, StatusCode::NOT_FOUND);
    let (status, body) = invoke(&f, "widgets-create").await;
    assert_eq!(
        (status, &body["free"]),
        (StatusCode::CREATED, &json!({"P": 1, "R": 2, "Q": 0}))
    );
    assert_eq!(
        invoke(&f, "widgets-associate").await.1["error"]["code"],
        "widget_not_found"
    );
    f.app
        .post(
            "/widgets",
            json!({"serial_number": "W-2002", "name": "Gear", "ports": ["R"]}),
        )
        .await;
    assert_eq!(
        invoke(&f, "widgets-associate").await,
        (
            StatusCode::CREATED,
            json!({"serial_number": "W-1001", "peer": "W-2002", "port": "R"})
        )
    );
    assert_eq!(
        invoke(&f, "widgets-get").await.1["associations"],
        json!([{"port": "R", "peer": "W-2002"}])
    );
    assert_eq!(
        invoke(&f, "widgets-dissociate").await.0,
        StatusCode::NO_CONTENT
    );
    assert_eq!(invoke(&f, "widgets-delete").await.0, StatusCode::NO_CONTENT);
    assert_eq!(invoke(&f, "widgets-get").await.0, StatusCode::NOT_FOUND);
}

/// A connections port whose first two reads both return before either caller goes on: two `$default`
/// invocations of one connection that overlap, as API Gateway runs them when messages arrive back to back.
struct Overlapping {
    inner: std::sync::Arc<dyn strata_core::kv::line::Connections>,
    waiting: std::sync::atomic::AtomicUsize,
    barrier: tokio::sync::Barrier,
}

#[async_trait::async_trait]
impl strata_core::kv::line::Connections for Overlapping {
    async fn transaction(
        &self,
        connection: &str,
    ) -> Result<Option<strata_core::kv::tx::TxId>, strata_core::Error> {
        use std::sync::atomic::Ordering;
        let tx = self.inner.transaction(connection).await?;
        if self
            .waiting
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
            .is_ok()
        {
            self.barrier.wait().await;
        }
        Ok(tx)
    }

    async fn set_transaction(
        &self,
        connection: &str,
        tx: Option<&strata_core::kv::tx::TxId>,
    ) -> Result<(), strata_core::Error> {
        self.inner.set_transaction(connection, tx).await
    }

    async fn replace_transaction(
        &self,
        connection: &str,
        expected: Option<&strata_core::kv::tx::TxId>,
        new: Option<&strata_core::kv::tx::TxId>,
    ) -> Result<bool, strata_core::Error> {
        self.inner
            .replace_transaction(connection, expected, new)
            .await
    }

    async fn forget(
        &self,
        connection: &str,
    ) -> Result<Option<strata_core::kv::tx::TxId>, strata_core::Error> {
        self.inner.forget(connection).await
    }
}

/// Two `START`s of one connection that overlap: one opens the transaction, the other is told one is in
/// progress; neither transaction is lost or left open behind the connection's back.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn overlapping_websocket_invocations_of_one_connection_keep_one_transaction() {
    overlapping_starts(Fixture::embedded().await).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn overlapping_websocket_invocations_of_one_connection_keep_one_transaction_on_dynamodb() {
    overlapping_starts(Fixture::dynamodb().await).await;
}

async fn overlapping_starts(mut f: Fixture) {
    {
        f.stores.connections = std::sync::Arc::new(Overlapping {
            inner: f.stores.connections.clone(),
            waiting: 2.into(),
            barrier: tokio::sync::Barrier::new(2),
        });
        let ok = "{\"status\": \"Ok\"}".to_owned();
        let in_progress =
            "{\"status\": \"Error\", \"mesg\": \"Transaction already in progress\"}".to_owned();
        let (a, b) = tokio::join!(
            ws(&f, "ws-default", Some("START")),
            ws(&f, "ws-default", Some("START"))
        );
        let mut replies = [a.1, b.1];
        replies.sort();
        assert_eq!(
            replies,
            [in_progress, ok.clone()],
            "{}: one START opens the transaction, the other is told it is in progress",
            f.name
        );
        assert_eq!(
            ws(&f, "ws-default", Some("PUT greeting inside")).await.1,
            ok
        );
        assert_eq!(ws(&f, "ws-default", Some("COMMIT")).await.1, ok);
        assert_eq!(
            ws(&f, "ws-default", Some("COMMIT")).await.1,
            "{\"status\": \"Error\", \"mesg\": \"No transaction in progress\"}",
            "{}",
            f.name
        );
        let got = f
            .stores
            .kv
            .get(&strata_core::kv::Key::parse("greeting").unwrap())
            .await
            .unwrap()
            .unwrap();
        assert_eq!(
            (got.value.as_str(), got.version),
            ("inside", 1),
            "{}",
            f.name
        );
    }
}

/// API Gateway's WebSocket messages are at most 128 KB: a longer reply would never arrive (the socket is
/// closed), so it is one `Error` line naming the limit instead, and a `GET` says where to read the value.
#[tokio::test]
async fn a_websocket_reply_over_the_message_limit_says_so() {
    let f = Fixture::embedded().await;
    let big = "b".repeat(200 * 1024);
    assert_eq!(
        ws(&f, "ws-default", Some(&format!("PUT big {big}")))
            .await
            .1,
        "{\"status\": \"Ok\"}"
    );
    let (status, reply) = ws(&f, "ws-default", Some("GET big")).await;
    assert_eq!(status, StatusCode::OK);
    assert!(reply.len() < 1024, "{} bytes", reply.len());
    assert_eq!(
        reply,
        "{\"status\": \"Error\", \"mesg\": \"Reply over the WebSocket's 131072-byte message limit (API Gateway); read this value over HTTP: GET /kv/keys/big\"}"
    );
    // Under the limit, the value itself.
    let fits = "f".repeat(100 * 1024);
    ws(&f, "ws-default", Some(&format!("PUT fits {fits}"))).await;
    let (_, reply) = ws(&f, "ws-default", Some("GET fits")).await;
    assert_eq!(
        reply,
        format!("{{\"status\": \"Ok\", \"result\": \"{fits}\"}}")
    );
}
