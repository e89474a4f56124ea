//! Idempotency keys belong to their caller: API Gateway's authorizer context (IAM principal or JWT subject)
//! scopes every key, so two callers using the same key get two independent results, and neither can block the
//! other's key or receive its answer. Driven with the recorded event files, as the Lambdas receive them.

use serde_json::{Value, json};
use strata::routes;
use strata_tests::fixture::Fixture;

fn event(function: &str) -> Value {
    let path = strata_tests::repo_root().join(format!("infra/events/{function}.json"));
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

/// `function`'s event file from `caller` (an authorizer context), with `key` and `body`.
fn from(function: &str, authorizer: &Value, key: &str, body: &str) -> lambda_http::Request {
    let mut e = event(function);
    e["requestContext"]["authorizer"] = authorizer.clone();
    e["headers"]["idempotency-key"] = json!(key);
    e["headers"]["content-length"] = json!(body.len().to_string());
    e["body"] = json!(body);
    lambda_http::request::from_str(&e.to_string()).unwrap()
}

fn iam(arn: &str) -> Value {
    json!({"iam": {"accessKey": "ASIAEXAMPLE", "accountId": "123456789012", "callerId": "AROAEXAMPLE:session",
                   "userArn": arn, "userId": "AROAEXAMPLE:session"}})
}

fn jwt(sub: &str) -> Value {
    json!({"jwt": {"claims": {"iss": "https://issuer.example.com", "sub": sub}, "scopes": ["strata/write"]}})
}

async fn call(
    f: &Fixture,
    function: &str,
    req: lambda_http::Request,
) -> lambda_http::Response<lambda_http::Body> {
    let route = routes::all()
        .into_iter()
        .find(|r| r.function == function)
        .unwrap();
    (route.handler)(&f.stores, req).await
}

fn json_of(r: &lambda_http::Response<lambda_http::Body>) -> Value {
    serde_json::from_slice(r.body().as_ref()).unwrap()
}

fn replayed(r: &lambda_http::Response<lambda_http::Body>) -> bool {
    r.headers()
        .get("idempotent-replayed")
        .is_some_and(|v| v == "true")
}

async fn two_callers_one_key(f: Fixture) {
    let body = r#"{"name": "Salt Bae", "amount": 10, "class": "CS"}"#;
    let callers = [
        iam("arn:aws:sts::123456789012:assumed-role/orders/one"),
        iam("arn:aws:sts::123456789012:assumed-role/orders/two"),
        jwt("user-3"),
        jwt("user-4"),
    ];
    let mut ids = Vec::new();
    for caller in &callers {
        let r = call(
            &f,
            "certificates-issue",
            from("certificates-issue", caller, "order-1", body),
        )
        .await;
        assert_eq!(r.status(), 201, "{}", json_of(&r));
        assert!(!replayed(&r), "another caller's answer was replayed");
        ids.push(json_of(&r)["id"].clone());
    }
    assert_eq!(
        ids,
        [json!("CS-1"), json!("CS-2"), json!("CS-3"), json!("CS-4")]
    );
    // Each caller's retry is its own replay.
    for (caller, id) in callers.iter().zip(&ids) {
        let r = call(
            &f,
            "certificates-issue",
            from("certificates-issue", caller, "order-1", body),
        )
        .await;
        assert_eq!((r.status().as_u16(), &json_of(&r)["id"]), (201, id));
        assert!(replayed(&r));
    }
    // Another body under the same key is refused for that caller only; a new caller may still use the key.
    let other = r#"{"name": "Salt Bae", "amount": 11, "class": "CS"}"#;
    let r = call(
        &f,
        "certificates-issue",
        from("certificates-issue", &callers[0], "order-1", other),
    )
    .await;
    assert_eq!(
        (r.status().as_u16(), json_of(&r)["error"]["code"].clone()),
        (422, json!("idempotency_key_reused"))
    );
    let r = call(
        &f,
        "certificates-issue",
        from("certificates-issue", &jwt("user-5"), "order-1", other),
    )
    .await;
    assert_eq!(
        (r.status().as_u16(), json_of(&r)["id"].clone()),
        (201, json!("CS-5"))
    );
}

#[tokio::test]
async fn embedded_the_same_key_from_two_callers_is_two_keys() {
    two_callers_one_key(Fixture::embedded().await).await;
}

#[tokio::test]
async fn dynamodb_the_same_key_from_two_callers_is_two_keys() {
    two_callers_one_key(Fixture::dynamodb().await).await;
}

/// A replay carries what the first answer carried: status, body, content type (any handler's, not just
/// JSON), and `idempotent-replayed: true`.
async fn replay_keeps_content_type(f: Fixture) {
    let caller = iam("arn:aws:sts::123456789012:assumed-role/orders/one");
    let answer = || async {
        http::Response::builder()
            .status(202)
            .header("content-type", "text/plain; charset=utf-8")
            .body(lambda_http::Body::Text("accepted\n".into()))
            .unwrap()
    };
    let req = || {
        from(
            "counters-increment",
            &caller,
            "text-1",
            r#"{"key": "k", "value": 1}"#,
        )
    };
    let first = strata_http::idempotency::run(&f.stores, req(), "text-test", |_, _| answer()).await;
    assert!(!replayed(&first));
    let again = strata_http::idempotency::run(&f.stores, req(), "text-test", |_, _| async {
        panic!("a replay runs nothing")
    })
    .await;
    assert!(replayed(&again));
    assert_eq!(again.status(), 202);
    assert_eq!(again.body().as_ref(), b"accepted\n");
    assert_eq!(
        again.headers().get("content-type").unwrap(),
        "text/plain; charset=utf-8",
        "a replay keeps the original content type"
    );
}

#[tokio::test]
async fn embedded_a_replay_keeps_the_original_content_type() {
    replay_keeps_content_type(Fixture::embedded().await).await;
}

#[tokio::test]
async fn dynamodb_a_replay_keeps_the_original_content_type() {
    replay_keeps_content_type(Fixture::dynamodb().await).await;
}
