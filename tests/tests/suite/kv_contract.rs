//! The key/value contract (CONTRACT.md §1, single-key operations), identical on every backend.

use http::{Method, StatusCode};
use serde_json::json;
use std::collections::HashMap;
use strata_tests::contract;
use strata_tests::fixture::Fixture;

contract!(
    values_round_trip_byte_for_byte_and_versions_increase,
    deletes_leave_nothing_and_versions_keep_growing,
    keys_are_any_utf8_without_whitespace,
    bad_input_is_refused_and_changes_nothing,
    concurrent_clients_lose_no_acknowledged_write,
    health_names_the_store,
);

async fn values_round_trip_byte_for_byte_and_versions_increase(f: Fixture) {
    let values = [
        "3 * 3 = 9",
        "{\"json\": [1, 2, {\"nested\": true}]}",
        "ünïcødé — 日本語 🚀",
        "",
        "  leading and trailing spaces  ",
        "line\nbreaks\tand\ttabs",
    ];
    for (i, value) in values.iter().enumerate() {
        let r = f.app.put("/kv/keys/a", json!({ "value": value })).await;
        assert_eq!(r.status, StatusCode::OK, "{}: {:?}", f.name, r.body);
        assert_eq!(
            r.body,
            json!({"key": "a", "value": value, "version": i + 1})
        );
        let r = f.app.get("/kv/keys/a").await;
        assert_eq!(r.status, StatusCode::OK);
        assert_eq!(
            r.body,
            json!({"key": "a", "value": value, "version": i + 1})
        );
    }
    let big = "x".repeat(strata_core::kv::MAX_VALUE_BYTES);
    assert_eq!(
        f.app
            .put("/kv/keys/big", json!({ "value": big }))
            .await
            .status,
        StatusCode::OK
    );
    assert_eq!(
        f.app.get("/kv/keys/big").await.body["value"]
            .as_str()
            .unwrap()
            .len(),
        big.len()
    );
}

async fn deletes_leave_nothing_and_versions_keep_growing(f: Fixture) {
    let r = f.app.get("/kv/keys/gone").await;
    assert_eq!(
        (r.status, r.code()),
        (StatusCode::NOT_FOUND, "key_not_found")
    );
    let r = f.app.delete("/kv/keys/gone").await;
    assert_eq!(
        (r.status, &r.body),
        (StatusCode::OK, &json!({"key": "gone", "deleted": false}))
    );

    f.app.put("/kv/keys/k", json!({"value": "one"})).await;
    let r = f.app.delete("/kv/keys/k").await;
    assert_eq!(r.body, json!({"key": "k", "deleted": true}));
    assert_eq!(f.app.get("/kv/keys/k").await.status, StatusCode::NOT_FOUND);
    assert_eq!(f.app.delete("/kv/keys/k").await.body["deleted"], false);
    // the delete took version 2: a re-created key never reuses a version it had before
    let r = f.app.put("/kv/keys/k", json!({"value": "two"})).await;
    assert_eq!(r.body["version"], 3);
}

async fn keys_are_any_utf8_without_whitespace(f: Fixture) {
    // percent-encoded in the path, decoded before use
    for (path, key) in [
        ("/kv/keys/%E2%82%AC%F0%9F%94%91", "€🔑"),
        ("/kv/keys/user:42%2Fname", "user:42/name"),
        ("/kv/keys/nested/path/key", "nested/path/key"),
        ("/kv/keys/Case", "Case"),
        ("/kv/keys/case", "case"),
    ] {
        let r = f.app.put(path, json!({"value": key})).await;
        assert_eq!(
            (r.status, &r.body["key"]),
            (StatusCode::OK, &json!(key)),
            "{path}"
        );
    }
    for (path, key) in [
        ("/kv/keys/Case", "Case"),
        ("/kv/keys/case", "case"),
        ("/kv/keys/user:42%2Fname", "user:42/name"),
    ] {
        assert_eq!(f.app.get(path).await.body["value"], key);
    }
    let longest = "k".repeat(strata_core::kv::MAX_KEY_BYTES);
    assert_eq!(
        f.app
            .put(&format!("/kv/keys/{longest}"), json!({"value": "v"}))
            .await
            .status,
        StatusCode::OK
    );
}

async fn bad_input_is_refused_and_changes_nothing(f: Fixture) {
    f.app.put("/kv/keys/a", json!({"value": "original"})).await;
    let too_long_key = "k".repeat(strata_core::kv::MAX_KEY_BYTES + 1);
    let big_value = "v".repeat(strata_core::kv::MAX_VALUE_BYTES + 1);
    let huge_body = format!(
        "{{\"value\":\"{}\"}}",
        "v".repeat(strata_http::MAX_BODY_BYTES)
    );
    let cases: Vec<(Method, String, Vec<u8>, StatusCode, &str)> = vec![
        (
            Method::PUT,
            "/kv/keys/a".into(),
            b"{not json".to_vec(),
            StatusCode::BAD_REQUEST,
            "invalid_json",
        ),
        (
            Method::PUT,
            "/kv/keys/a".into(),
            b"".to_vec(),
            StatusCode::BAD_REQUEST,
            "invalid_json",
        ),
        (
            Method::PUT,
            "/kv/keys/a".into(),
            b"[\"value\"]".to_vec(),
            StatusCode::BAD_REQUEST,
            "invalid_json",
        ),
        (
            Method::PUT,
            "/kv/keys/a".into(),
            b"{}".to_vec(),
            StatusCode::BAD_REQUEST,
            "invalid_field",
        ),
        (
            Method::PUT,
            "/kv/keys/a".into(),
            b"{\"valeu\":\"x\"}".to_vec(),
            StatusCode::BAD_REQUEST,
            "invalid_field",
        ),
        (
            Method::PUT,
            "/kv/keys/a".into(),
            b"{\"value\":42}".to_vec(),
            StatusCode::BAD_REQUEST,
            "invalid_field",
        ),
        (
            Method::PUT,
            "/kv/keys/a".into(),
            b"{\"value\":null}".to_vec(),
            StatusCode::BAD_REQUEST,
            "invalid_field",
        ),
        (
            Method::PUT,
            "/kv/keys/a".into(),
            b"{\"value\":[\"x\"]}".to_vec(),
            StatusCode::BAD_REQUEST,
            "invalid_field",
        ),
        (
            Method::PUT,
            "/kv/keys/a%20b".into(),
            b"{\"value\":\"x\"}".to_vec(),
            StatusCode::BAD_REQUEST,
            "invalid_key",
        ),
        (
            Method::PUT,
            "/kv/keys/a%09b".into(),
            b"{\"value\":\"x\"}".to_vec(),
            StatusCode::BAD_REQUEST,
            "invalid_key",
        ),
        (
            Method::PUT,
            "/kv/keys/a%00b".into(),
            b"{\"value\":\"x\"}".to_vec(),
            StatusCode::BAD_REQUEST,
            "invalid_key",
        ),
        (
            Method::PUT,
            "/kv/keys/%FF".into(),
            b"{\"value\":\"x\"}".to_vec(),
            StatusCode::BAD_REQUEST,
            "invalid_path",
        ),
        (
            Method::PUT,
            format!("/kv/keys/{too_long_key}"),
            b"{\"value\":\"x\"}".to_vec(),
            StatusCode::BAD_REQUEST,
            "invalid_key",
        ),
        (
            Method::PUT,
            "/kv/keys/a".into(),
            json!({"value": big_value}).to_string().into_bytes(),
            StatusCode::PAYLOAD_TOO_LARGE,
            "value_too_large",
        ),
        (
            Method::PUT,
            "/kv/keys/a".into(),
            huge_body.into_bytes(),
            StatusCode::PAYLOAD_TOO_LARGE,
            "body_too_large",
        ),
        (
            Method::GET,
            "/kv/keys/a%20b".into(),
            vec![],
            StatusCode::BAD_REQUEST,
            "invalid_key",
        ),
        (
            Method::DELETE,
            "/kv/keys/a%20b".into(),
            vec![],
            StatusCode::BAD_REQUEST,
            "invalid_key",
        ),
        (
            Method::GET,
            "/kv/nothing-here".into(),
            vec![],
            StatusCode::NOT_FOUND,
            "route_not_found",
        ),
        (
            Method::GET,
            "/kv/keys".into(),
            vec![],
            StatusCode::NOT_FOUND,
            "route_not_found",
        ),
        (
            Method::POST,
            "/kv/keys/a".into(),
            b"{\"value\":\"x\"}".to_vec(),
            StatusCode::NOT_FOUND,
            "route_not_found",
        ),
    ];
    for (method, path, body, status, code) in cases {
        let shown = format!("{method} {}", &path[..path.len().min(40)]);
        let r = f.app.raw(method, &path, body).await;
        assert_eq!(
            (r.status, r.code()),
            (status, code),
            "{}: {shown}: {:?}",
            f.name,
            r.body
        );
        assert!(
            r.body["error"]["message"]
                .as_str()
                .is_some_and(|m| !m.is_empty()),
            "{shown}: {:?}",
            r.body
        );
    }
    // nothing changed: the value and version are as before, and no refused key exists
    assert_eq!(
        f.app.get("/kv/keys/a").await.body,
        json!({"key": "a", "value": "original", "version": 1})
    );
    assert_eq!(f.app.get("/kv/keys/b").await.status, StatusCode::NOT_FOUND);
    assert_eq!(
        f.app
            .get(&format!("/kv/keys/{}", "k".repeat(1024)))
            .await
            .status,
        StatusCode::NOT_FOUND
    );
}

async fn concurrent_clients_lose_no_acknowledged_write(f: Fixture) {
    const CLIENTS: usize = 20;
    const ROUNDS: usize = 40;
    let mut tasks = Vec::new();
    for client in 0..CLIENTS {
        let app = f.app.clone();
        tasks.push(tokio::spawn(async move {
            let mut acked: HashMap<String, String> = HashMap::new();
            for round in 0..ROUNDS {
                // own keys, plus one key every client fights over
                let key = if round % 4 == 0 {
                    "shared".to_owned()
                } else {
                    format!("c{client}-{}", round % 5)
                };
                let value = format!("client {client} round {round}");
                let r = app
                    .put(&format!("/kv/keys/{key}"), json!({ "value": value }))
                    .await;
                assert_eq!(r.status, StatusCode::OK, "{:?}", r.body);
                acked.insert(key.clone(), value.clone());
                let r = app.get(&format!("/kv/keys/{key}")).await;
                assert_eq!(r.status, StatusCode::OK, "{:?}", r.body);
                if key != "shared" {
                    assert_eq!(
                        r.body["value"],
                        json!(value),
                        "a client reads its own acknowledged write"
                    );
                }
            }
            acked.remove("shared");
            acked
        }));
    }
    for task in tasks {
        for (key, value) in task.await.unwrap() {
            assert_eq!(
                f.app.get(&format!("/kv/keys/{key}")).await.body["value"],
                json!(value)
            );
        }
    }
    // every write to the shared key got its own version: CLIENTS * ROUNDS / 4 writes in all
    let shared = f.app.get("/kv/keys/shared").await;
    assert_eq!(shared.body["version"], json!(CLIENTS * ROUNDS / 4));
}

async fn health_names_the_store(f: Fixture) {
    let r = f.app.get("/health").await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(r.body, json!({"status": "ok", "store": f.name}));
}
