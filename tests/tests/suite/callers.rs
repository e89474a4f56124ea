//! Idempotency keys belong to their caller: API Gateway's authorizer context (IAM principal or JWT subject)
//! scopes every key, so two callers using the same key get two independent results, and neither can block the
//! other's key or receive its answer; and one caller is one service or user, however many sessions it runs,
//! so a retry from another session of the same role is a replay. Driven with the recorded event files, as
//! the Lambdas receive them.

use serde_json::{Value, json};
use strata::routes;
use strata_tests::events;
use strata_tests::fixture::Fixture;

/// `function`'s event file from `caller` (an authorizer context), with `key` and `body`.
fn from(function: &str, authorizer: &Value, key: &str, body: &str) -> lambda_http::Request {
    let mut e = events::json(function);
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

/// A client-credentials token of an issuer that puts the client in `client_id`, not `sub`.
fn jwt_client(client_id: &str) -> Value {
    json!({"jwt": {"claims": {"iss": "https://issuer.example.com", "client_id": client_id}, "scopes": ["strata/write"]}})
}

/// A user of a Cognito identity pool, through the pool's role (every user of the pool assumes it).
fn cognito(identity: &str, session: &str) -> Value {
    json!({"iam": {"accessKey": "ASIAEXAMPLE", "accountId": "123456789012", "callerId": format!("AROAPOOL:{session}"),
                   "cognitoIdentity": {"amr": ["authenticated"], "identityId": identity,
                                       "identityPoolId": "us-east-1:0d3c5a8e-pool"},
                   "userArn": format!("arn:aws:sts::123456789012:assumed-role/pool-authenticated/{session}"),
                   "userId": format!("AROAPOOL:{session}")}})
}

/// No authorizer: `AuthMode=none`.
fn anonymous() -> Value {
    Value::Null
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
        iam("arn:aws:sts::123456789012:assumed-role/payments/one"),
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

/// One role is one caller: an SQS message redelivered to another worker (another session of the role)
/// after the first worker's answer was lost gets the first certificate back, not a second one.
async fn one_role_many_sessions(f: Fixture) {
    let body = r#"{"name": "Salt Bae", "amount": 10, "class": "CS"}"#;
    let first = iam("arn:aws:sts::123456789012:assumed-role/orders/worker-a");
    let redelivered = iam("arn:aws:sts::123456789012:assumed-role/orders/worker-b");
    let r = call(
        &f,
        "certificates-issue",
        from("certificates-issue", &first, "order-7", body),
    )
    .await;
    assert_eq!(
        (r.status().as_u16(), json_of(&r)["id"].clone()),
        (201, json!("CS-1"))
    );
    let again = call(
        &f,
        "certificates-issue",
        from("certificates-issue", &redelivered, "order-7", body),
    )
    .await;
    assert_eq!(
        (again.status().as_u16(), json_of(&again)["id"].clone()),
        (201, json!("CS-1")),
        "another session of the same role issued another certificate"
    );
    assert!(replayed(&again));
}

/// Every user of a Cognito identity pool assumes the pool's role, yet each is a caller of their own: one
/// cannot block another's key or be replayed another's answer. A token without `sub` is its `client_id`,
/// not anonymous; and no anonymous key spells a caller's.
async fn users_of_one_role_and_tokens_without_sub(f: Fixture) {
    let body = r#"{"name": "Salt Bae", "amount": 10, "class": "CS"}"#;
    let issue = |caller: Value, key: &str| {
        let req = from("certificates-issue", &caller, key, body);
        let f = &f;
        async move {
            let r = call(f, "certificates-issue", req).await;
            assert_eq!(r.status(), 201, "{}", json_of(&r));
            (json_of(&r)["id"].clone(), replayed(&r))
        }
    };
    let alice = issue(
        cognito("us-east-1:alice", "CognitoIdentityCredentials"),
        "k",
    )
    .await;
    let bob = issue(cognito("us-east-1:bob", "CognitoIdentityCredentials"), "k").await;
    assert_eq!(
        (alice, bob),
        ((json!("CS-1"), false), (json!("CS-2"), false))
    );
    let alice_again = issue(cognito("us-east-1:alice", "another-session"), "k").await;
    assert_eq!(alice_again, (json!("CS-1"), true));
    let service = issue(jwt_client("billing"), "k").await;
    let nobody = issue(anonymous(), "k").await;
    let other_service = issue(jwt_client("shipping"), "k").await;
    assert_eq!(
        [service, nobody, other_service],
        [
            (json!("CS-3"), false),
            (json!("CS-4"), false),
            (json!("CS-5"), false)
        ]
    );
    // An anonymous key shaped like a caller's stored key is a key of its own.
    let digest = strata_http::idempotency::caller(&from(
        "certificates-issue",
        &jwt_client("billing"),
        "k",
        body,
    ))
    .unwrap()
    .digest();
    let spelled = issue(anonymous(), &format!("{digest}:k")).await;
    assert_eq!(spelled, (json!("CS-6"), false));
}

#[tokio::test]
async fn embedded_one_role_with_many_sessions_is_one_caller() {
    one_role_many_sessions(Fixture::embedded().await).await;
}

#[tokio::test]
async fn dynamodb_one_role_with_many_sessions_is_one_caller() {
    one_role_many_sessions(Fixture::dynamodb().await).await;
}

#[tokio::test]
async fn embedded_each_user_of_one_role_and_each_client_is_a_caller() {
    users_of_one_role_and_tokens_without_sub(Fixture::embedded().await).await;
}

#[tokio::test]
async fn dynamodb_each_user_of_one_role_and_each_client_is_a_caller() {
    users_of_one_role_and_tokens_without_sub(Fixture::dynamodb().await).await;
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

/// A record keeps at most `MAX_RECORD_BODY_BYTES` of answer: a larger one is not kept (the key is released,
/// and a retry runs again), so no record passes DynamoDB's item limit. Input never makes such an answer: an
/// error quotes a short prefix of the value it refuses.
async fn records_are_bounded(f: Fixture) {
    use strata_core::idempotency::MAX_RECORD_BODY_BYTES;
    let caller = iam("arn:aws:sts::123456789012:assumed-role/orders/one");
    let huge = "x".repeat(1_000_000);
    let req = |key: &str| {
        from(
            "counters-increment",
            &caller,
            key,
            &json!({"key": "k", "value": huge}).to_string(),
        )
    };
    let refused = call(&f, "counters-increment", req("big-1")).await;
    assert_eq!(refused.status(), 400);
    assert!(
        refused.body().as_ref().len() < 1024,
        "the error echoes the value: {} bytes",
        refused.body().as_ref().len()
    );
    let again = call(&f, "counters-increment", req("big-1")).await;
    assert!(replayed(&again), "a small 400 is kept");
    let big = |n: usize| async move {
        http::Response::builder()
            .status(200)
            .body(lambda_http::Body::Text("y".repeat(n)))
            .unwrap()
    };
    let small = || {
        from(
            "counters-increment",
            &caller,
            "big-2",
            r#"{"key": "k", "value": 1}"#,
        )
    };
    let first = strata_http::idempotency::run(&f.stores, small(), "bound-test", |_, _| {
        big(MAX_RECORD_BODY_BYTES + 1)
    })
    .await;
    assert_eq!(first.body().as_ref().len(), MAX_RECORD_BODY_BYTES + 1);
    let retry =
        strata_http::idempotency::run(&f.stores, small(), "bound-test", |_, _| big(3)).await;
    assert!(!replayed(&retry), "an answer over the bound was kept");
    assert_eq!(retry.body().as_ref(), b"yyy");
}

#[tokio::test]
async fn embedded_idempotency_records_are_bounded() {
    records_are_bounded(Fixture::embedded().await).await;
}

#[tokio::test]
async fn dynamodb_idempotency_records_are_bounded() {
    records_are_bounded(Fixture::dynamodb().await).await;
}

/// `function`'s event file on transaction `tx`, from `caller`.
fn in_tx(function: &str, caller: &Value, tx: &str) -> lambda_http::Request {
    let text = events::text(function).replace("5f0c1e9a8b7d4c3e2f1a0b9c8d7e6f5a", tx);
    let mut e: Value = serde_json::from_str(&text).unwrap();
    e["requestContext"]["authorizer"] = caller.clone();
    lambda_http::request::from_str(&e.to_string()).unwrap()
}

/// A transaction belongs to the caller who began it: another caller who holds its id (a log line, a shared
/// link) can neither read its uncommitted writes nor keep it alive, fill, commit or roll it back
/// (`404 transaction_not_found`, naming the id it sent); another session of the same role can.
async fn transactions_belong_to_their_caller(f: Fixture) {
    let owner = iam("arn:aws:sts::123456789012:assumed-role/orders/one");
    let same_role = iam("arn:aws:sts::123456789012:assumed-role/orders/two");
    let begin = |caller: &Value| {
        let mut e = events::json("kv-tx-begin");
        e["requestContext"]["authorizer"] = caller.clone();
        lambda_http::request::from_str(&e.to_string()).unwrap()
    };
    let began = call(&f, "kv-tx-begin", begin(&owner)).await;
    assert_eq!(began.status(), 201);
    let tx = json_of(&began)["id"].as_str().unwrap().to_owned();
    assert_eq!(
        call(&f, "kv-tx-put", in_tx("kv-tx-put", &owner, &tx))
            .await
            .status(),
        200
    );
    for stranger in [
        iam("arn:aws:sts::123456789012:assumed-role/payments/one"),
        jwt("user-3"),
        anonymous(),
    ] {
        for function in [
            "kv-tx-get",
            "kv-tx-put",
            "kv-tx-delete",
            "kv-tx-commit",
            "kv-tx-rollback",
        ] {
            let r = call(&f, function, in_tx(function, &stranger, &tx)).await;
            assert_eq!(
                (r.status().as_u16(), json_of(&r)["error"]["code"].clone()),
                (404, json!("transaction_not_found")),
                "{function} by {stranger}"
            );
            assert!(
                json_of(&r)["error"]["message"]
                    .as_str()
                    .unwrap()
                    .contains(&tx),
                "the message names the id sent: {}",
                json_of(&r)
            );
        }
    }
    // Nothing the strangers did touched it: the owner's other session reads its write and commits it.
    let read = call(&f, "kv-tx-get", in_tx("kv-tx-get", &same_role, &tx)).await;
    assert_eq!(
        (read.status().as_u16(), json_of(&read)["value"].clone()),
        (200, json!("hello from a transaction"))
    );
    let committed = call(&f, "kv-tx-commit", in_tx("kv-tx-commit", &owner, &tx)).await;
    assert_eq!(
        (committed.status().as_u16(), json_of(&committed)),
        (200, json!({"id": tx, "committed": true, "writes": 1}))
    );
}

#[tokio::test]
async fn embedded_a_transaction_belongs_to_its_caller() {
    transactions_belong_to_their_caller(Fixture::embedded().await).await;
}

#[tokio::test]
async fn dynamodb_a_transaction_belongs_to_its_caller() {
    transactions_belong_to_their_caller(Fixture::dynamodb().await).await;
}
