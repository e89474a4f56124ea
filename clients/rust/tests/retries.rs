//! The client's retry rules and typed errors against a scripted server that counts what it receives.

// Test code: a failed `unwrap` is a failed test.
#![allow(clippy::unwrap_used)]

use axum::Router;
use axum::body::Bytes;
use axum::http::{HeaderMap, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use strata_client::{Client, Counted, Error, IdempotencyKey, Outcome, RetryPolicy};

/// One request as the server saw it.
#[derive(Debug, Clone)]
struct Seen {
    method: Method,
    path: String,
    idempotency_key: Option<String>,
    authorization: Option<String>,
    body: Bytes,
}

/// The answers to give, in order; the last one repeats.
#[derive(Debug, Default)]
struct Script {
    answers: VecDeque<(u16, Option<&'static str>, &'static str)>,
    seen: Vec<Seen>,
}

async fn scripted(
    script: Arc<Mutex<Script>>,
) -> (String, Arc<Mutex<Script>>, tokio::task::JoinHandle<()>) {
    let state = script.clone();
    let app = Router::new().fallback(
        move |method: Method, uri: Uri, headers: HeaderMap, body: Bytes| {
            let state = state.clone();
            async move {
                let mut s = state.lock().unwrap();
                let header = |name: &str| headers.get(name).map(|v| v.to_str().unwrap().to_owned());
                let seen = Seen {
                    method,
                    path: uri.to_string(),
                    idempotency_key: header("idempotency-key"),
                    authorization: header("authorization"),
                    body,
                };
                s.seen.push(seen);
                let (status, retry_after, body) = if s.answers.len() > 1 {
                    s.answers.pop_front().unwrap()
                } else {
                    *s.answers.front().unwrap()
                };
                let mut response: Response = (
                    StatusCode::from_u16(status).unwrap(),
                    [("content-type", "application/json")],
                    body,
                )
                    .into_response();
                if let Some(seconds) = retry_after {
                    response
                        .headers_mut()
                        .insert("retry-after", seconds.parse().unwrap());
                }
                response
            }
        },
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let task = tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (base, script, task)
}

async fn server(
    answers: &[(u16, Option<&'static str>, &'static str)],
) -> (Client, Arc<Mutex<Script>>) {
    let script = Arc::new(Mutex::new(Script {
        answers: answers.iter().copied().collect(),
        seen: Vec::new(),
    }));
    let (base, script, _task) = scripted(script).await;
    let client = Client::builder(base)
        .retry(RetryPolicy {
            max_attempts: 4,
            max_total: Duration::from_secs(30),
            base_backoff: Duration::from_millis(1),
        })
        .build()
        .unwrap();
    (client, script)
}

fn seen(script: &Arc<Mutex<Script>>) -> Vec<Seen> {
    script.lock().unwrap().seen.clone()
}

const UNAVAILABLE: &str =
    r#"{"error":{"code":"store_unavailable","message":"the store did not answer in time"}}"#;
const TOTAL: &str = r#"{"key":"hits","value":7}"#;

#[tokio::test]
async fn an_error_answer_is_typed_with_its_code_message_status_and_fields() {
    let (client, script) = server(&[(
        409,
        None,
        r#"{"error":{"code":"insufficient_shares","message":"class CS has 10 shares left","remaining":10}}"#,
    )])
    .await;
    let issue = strata_client::CertificateIssue {
        name: "Ada".into(),
        amount: 20,
        class: "CS".into(),
    };
    let error = client.issue_certificate(&issue).await.unwrap_err();
    assert_eq!(error.status(), Some(409));
    assert_eq!(error.code(), Some("insufficient_shares"));
    let api = error.api().unwrap();
    assert_eq!(api.message, "class CS has 10 shares left");
    assert_eq!(api.detail_u64("remaining"), Some(10));
    assert_eq!(
        error.to_string(),
        "409 insufficient_shares: class CS has 10 shares left"
    );
    assert_eq!(error.outcome(), Outcome::NothingWritten);
    // A 4xx is final.
    assert_eq!(error.attempts(), 1);
    assert_eq!(seen(&script).len(), 1);
}

#[tokio::test]
async fn an_answer_not_in_strata_shape_keeps_its_message() {
    let (client, _) = server(&[(403, None, r#"{"message":"Forbidden"}"#)]).await;
    let error = client.get("k").await.unwrap_err();
    let api = error.api().unwrap();
    assert_eq!((api.status, api.code.as_str()), (403, ""));
    assert_eq!(api.message, "Forbidden");
    assert_eq!(error.to_string(), "403: Forbidden");
}

#[tokio::test]
async fn a_keyed_write_is_retried_on_503_with_the_same_key_after_retry_after() {
    let (client, script) = server(&[
        (503, Some("1"), UNAVAILABLE),
        (
            409,
            Some("1"),
            r#"{"error":{"code":"request_in_progress","message":"still running"}}"#,
        ),
        (200, None, TOTAL),
    ])
    .await;
    let counted = client.increment("hits", 7).await.unwrap();
    assert_eq!(
        counted,
        Counted::Total {
            key: "hits".into(),
            total: 7
        }
    );
    let seen = seen(&script);
    assert_eq!(seen.len(), 3);
    let key = seen[0].idempotency_key.clone().unwrap();
    assert!(
        seen.iter()
            .all(|s| s.idempotency_key.as_deref() == Some(&key))
    );
    assert!(seen.iter().all(|s| s.body == seen[0].body));
    assert!(
        seen.iter()
            .all(|s| s.method == Method::POST && s.path == "/increment")
    );
}

#[tokio::test]
async fn the_caller_s_key_is_sent_on_every_attempt() {
    let (client, script) = server(&[(503, Some("0"), UNAVAILABLE), (200, None, TOTAL)]).await;
    let key = IdempotencyKey::new("order-42").unwrap();
    client.increment_with_key("hits", 7, &key).await.unwrap();
    let keys: Vec<_> = seen(&script)
        .into_iter()
        .map(|s| s.idempotency_key)
        .collect();
    assert_eq!(
        keys,
        [Some("order-42".to_owned()), Some("order-42".to_owned())]
    );
    assert!(IdempotencyKey::new("has space").is_err());
    assert!(IdempotencyKey::new("").is_err());
}

#[tokio::test]
async fn a_retry_after_past_the_budget_is_not_waited_for() {
    let (client, script) = server(&[(503, Some("3600"), UNAVAILABLE), (200, None, TOTAL)]).await;
    let error = client.increment("hits", 7).await.unwrap_err();
    assert_eq!(error.code(), Some("store_unavailable"));
    assert_eq!(
        error.api().unwrap().retry_after,
        Some(Duration::from_secs(3600))
    );
    assert_eq!(error.outcome(), Outcome::Unknown);
    assert_eq!(seen(&script).len(), 1);
}

#[tokio::test]
async fn retries_stop_at_the_attempt_budget() {
    let (client, script) = server(&[(503, Some("0"), UNAVAILABLE)]).await;
    let error = client.get("k").await.unwrap_err();
    assert_eq!(error.attempts(), 4);
    assert_eq!(error.outcome(), Outcome::NothingWritten);
    assert_eq!(seen(&script).len(), 4);
}

#[tokio::test]
async fn an_unkeyed_write_is_not_retried_when_its_outcome_is_unknown() {
    let (client, script) = server(&[(503, Some("0"), UNAVAILABLE), (200, None, "{}")]).await;
    let error = client.put("k", "v").await.unwrap_err();
    assert_eq!(error.outcome(), Outcome::Unknown);
    assert_eq!(error.attempts(), 1);
    let seen = seen(&script);
    assert_eq!(seen.len(), 1);
    // No key: the server would not deduplicate it anyway.
    assert_eq!(seen[0].idempotency_key, None);
}

#[tokio::test]
async fn an_unkeyed_write_is_retried_when_nothing_ran() {
    let (client, script) = server(&[
        (
            429,
            Some("0"),
            r#"{"error":{"code":"rate_limited","message":"slow down"}}"#,
        ),
        (200, None, r#"{"key":"k","value":"v","version":3}"#),
    ])
    .await;
    let item = client.put("k", "v").await.unwrap();
    assert_eq!(item.version, 3);
    assert_eq!(seen(&script).len(), 2);
}

#[tokio::test]
async fn a_read_is_retried_on_503() {
    let (client, script) =
        server(&[(503, Some("0"), UNAVAILABLE), (200, None, r#"{"hits":12}"#)]).await;
    assert_eq!(client.counter("hits").await.unwrap(), 12);
    let seen = seen(&script);
    assert_eq!(seen.len(), 2);
    assert_eq!(seen[1].path, "/increment/hits");
}

#[tokio::test]
async fn the_token_is_sent_and_keys_are_percent_encoded() {
    let script = Arc::new(Mutex::new(Script {
        answers: [(200, None, r#"{"key":"a b/c","deleted":true}"#)].into(),
        seen: Vec::new(),
    }));
    let (base, script, _task) = scripted(script).await;
    let client = Client::builder(base).token("secret-token").build().unwrap();
    assert!(client.delete("a b/c").await.unwrap().deleted);
    let seen = seen(&script);
    assert_eq!(
        seen[0].authorization.as_deref(),
        Some("Bearer secret-token")
    );
    assert_eq!(seen[0].path, "/kv/keys/a%20b%2Fc");
}

#[tokio::test]
async fn a_request_that_cannot_connect_wrote_nothing() {
    // A port nothing listens on: bound, then released.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let client = Client::builder(format!("http://127.0.0.1:{port}"))
        .retry(RetryPolicy {
            max_attempts: 2,
            max_total: Duration::from_secs(30),
            base_backoff: Duration::from_millis(1),
        })
        .build()
        .unwrap();
    let error = client.put("k", "v").await.unwrap_err();
    assert!(matches!(error, Error::Transport { .. }), "{error:?}");
    assert_eq!(error.outcome(), Outcome::NothingWritten);
    // Never sent, so retried even though `PUT` is not deduplicated.
    assert_eq!(error.attempts(), 2);
}

const BEGUN: &str =
    r#"{"id":"0123456789abcdef0123456789abcdef","expires_at":"2026-11-23T05:00:00.123Z"}"#;
const COMMITTED: &str = r#"{"id":"0123456789abcdef0123456789abcdef","committed":true,"writes":0}"#;
const TX_PATH: &str = "/kv/transactions/0123456789abcdef0123456789abcdef";

#[tokio::test]
async fn a_transaction_runs_again_after_a_conflict_and_its_commit_is_keyed() {
    let (client, script) = server(&[
        (201, None, BEGUN),
        (
            409,
            None,
            r#"{"error":{"code":"conflict","message":"key a changed","key":"a"}}"#,
        ),
        (201, None, BEGUN),
        (200, None, COMMITTED),
    ])
    .await;
    let mut runs = 0;
    let value: Result<u32, Error> = client
        .transaction(|_tx| {
            runs += 1;
            let run = runs;
            async move { Ok(run) }
        })
        .await;
    assert_eq!(value.unwrap(), 2);
    let seen = seen(&script);
    let paths: Vec<_> = seen
        .iter()
        .map(|s| (s.method.as_str(), s.path.as_str()))
        .collect();
    let commit = format!("{TX_PATH}/commit");
    assert_eq!(
        paths,
        [
            ("POST", "/kv/transactions"),
            ("POST", commit.as_str()),
            ("POST", "/kv/transactions"),
            ("POST", commit.as_str()),
        ]
    );
    assert!(seen.iter().all(|s| s.idempotency_key.is_some()));
}

#[tokio::test]
async fn a_commit_whose_outcome_is_unknown_is_not_run_again() {
    let (client, script) = server(&[
        (201, None, BEGUN),
        (503, Some("0"), UNAVAILABLE),
        (
            404,
            None,
            r#"{"error":{"code":"transaction_not_found","message":"no such transaction"}}"#,
        ),
    ])
    .await;
    let mut runs = 0;
    let error = client
        .transaction(|_tx| {
            runs += 1;
            async { Ok::<_, Error>(()) }
        })
        .await
        .unwrap_err();
    // The retried commit found the transaction gone: it may have committed the first time.
    assert_eq!(error.code(), Some("transaction_not_found"));
    assert_eq!(error.outcome(), Outcome::Unknown);
    assert_eq!(runs, 1);
    let seen = seen(&script);
    assert_eq!(seen.len(), 3);
    // The same commit, with the same key.
    assert_eq!(seen[1].idempotency_key, seen[2].idempotency_key);
}

#[tokio::test]
async fn a_closure_error_rolls_the_transaction_back() {
    let (client, script) = server(&[
        (201, None, BEGUN),
        (
            200,
            None,
            r#"{"id":"0123456789abcdef0123456789abcdef","rolled_back":true}"#,
        ),
    ])
    .await;
    let error = client
        .transaction(|_tx| async { Err::<(), _>(Error::InvalidRequest("changed my mind".into())) })
        .await
        .unwrap_err();
    assert!(matches!(error, Error::InvalidRequest(_)), "{error:?}");
    let seen = seen(&script);
    assert_eq!(seen.len(), 2);
    assert_eq!(seen[1].path, format!("{TX_PATH}/rollback"));
}

#[tokio::test]
async fn a_buffered_transaction_write_is_retried() {
    let (client, script) = server(&[
        (503, Some("0"), UNAVAILABLE),
        (200, None, r#"{"key":"a","value":"1"}"#),
    ])
    .await;
    let tx = client.resume_transaction("0123456789abcdef0123456789abcdef");
    assert_eq!(tx.put("a", "1").await.unwrap().value, "1");
    let seen = seen(&script);
    assert_eq!(seen.len(), 2);
    assert_eq!(seen[1].path, format!("{TX_PATH}/keys/a"));
    assert_eq!(seen[1].body, seen[0].body);
}

#[tokio::test]
async fn commands_of_only_gets_are_retried_and_writes_are_not() {
    let (client, script) = server(&[
        (503, Some("0"), UNAVAILABLE),
        (200, None, "{\"status\": \"Ok\", \"result\": \"1\"}\n"),
    ])
    .await;
    let replies = client.commands("GET a\n\n  get b").await.unwrap();
    assert_eq!(replies, "{\"status\": \"Ok\", \"result\": \"1\"}\n");
    assert_eq!(seen(&script).len(), 2);

    let (client, script) = server(&[(503, Some("0"), UNAVAILABLE)]).await;
    let error = client.commands("GET a\nPUT a 2\n").await.unwrap_err();
    assert_eq!(error.outcome(), Outcome::Unknown);
    let seen = seen(&script);
    assert_eq!(seen.len(), 1);
    assert_eq!(seen[0].body, "GET a\nPUT a 2\n");
}

#[tokio::test]
async fn a_token_that_is_not_visible_ascii_is_refused_at_build() {
    for token in ["a\nb", "has space", ""] {
        let error = Client::builder("http://127.0.0.1:9")
            .jwt(token)
            .build()
            .unwrap_err();
        assert!(matches!(error, Error::Auth(_)), "{token:?}: {error:?}");
    }
}
