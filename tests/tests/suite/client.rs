//! `strata-client` against a real `strata serve`, through a proxy that loses answers: a keyed write whose
//! answer is lost after it applied is retried with its `Idempotency-Key`, takes effect once, and the caller
//! gets the original answer; an unkeyed write in the same spot is not retried. The retry rules themselves
//! (budgets, `retry-after`, which codes) are tested in `clients/rust/tests`.

use http_body_util::{BodyExt, Full};
use hyper::body::{Bytes, Incoming};
use serde_json::{Value, json};
use std::sync::{Arc, Mutex};
use strata_client::{CertificateIssue, Client, Counted, Error, Outcome};
use strata_tests::server::Server;

/// What the proxy does to the answer of the next request to a method and path, after forwarding it.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Fault {
    /// Closes the connection without answering.
    Drop,
    /// Answers `503 store_unavailable` instead.
    Unavailable,
}

/// One request the proxy forwarded, and strata's answer to it.
#[derive(Debug, Clone)]
struct Forwarded {
    method: String,
    path: String,
    idempotency_key: Option<String>,
    status: u16,
    replayed: bool,
    body: Value,
}

#[derive(Debug, Default)]
struct Proxy {
    upstream: String,
    fault: Option<(String, String, Fault)>,
    forwarded: Vec<Forwarded>,
}

/// Starts the proxy in front of `upstream`; returns its base URL and its state.
async fn proxy(upstream: &str) -> (String, Arc<Mutex<Proxy>>) {
    let state = Arc::new(Mutex::new(Proxy {
        upstream: upstream.to_owned(),
        ..Proxy::default()
    }));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let http = reqwest::Client::new();
    let shared = state.clone();
    // A dropped answer ends the connection with an error: that is the point.
    strata_tests::server::serve_http1(listener, move |req| {
        forward(shared.clone(), http.clone(), req)
    });
    (base, state)
}

async fn forward(
    state: Arc<Mutex<Proxy>>,
    http: reqwest::Client,
    req: hyper::Request<Incoming>,
) -> Result<hyper::Response<Full<Bytes>>, std::io::Error> {
    let method = req.method().clone();
    let path = req.uri().path_and_query().unwrap().to_string();
    let headers = req.headers().clone();
    let body = req.into_body().collect().await.unwrap().to_bytes();
    let upstream = state.lock().unwrap().upstream.clone();
    let mut request = http
        .request(method.clone(), format!("{upstream}{path}"))
        .body(body);
    for name in ["content-type", "idempotency-key", "authorization"] {
        if let Some(value) = headers.get(name) {
            request = request.header(name, value);
        }
    }
    let answer = request.send().await.unwrap();
    let status = answer.status().as_u16();
    let answer_headers = answer.headers().clone();
    let answer_body = answer.bytes().await.unwrap();
    let fault = {
        let mut state = state.lock().unwrap();
        state.forwarded.push(Forwarded {
            method: method.to_string(),
            path: path.clone(),
            idempotency_key: headers
                .get("idempotency-key")
                .map(|v| v.to_str().unwrap().to_owned()),
            status,
            replayed: answer_headers.contains_key("idempotent-replayed"),
            body: serde_json::from_slice(&answer_body).unwrap_or(Value::Null),
        });
        match &state.fault {
            Some((m, p, fault)) if *m == method.as_str() && *p == path => {
                let fault = *fault;
                state.fault = None;
                Some(fault)
            }
            _ => None,
        }
    };
    match fault {
        Some(Fault::Drop) => Err(std::io::Error::other("answer dropped")),
        Some(Fault::Unavailable) => Ok(hyper::Response::builder()
            .status(503)
            .header("content-type", "application/json")
            .header("retry-after", "1")
            .body(Full::from(
                json!({"error": {"code": "store_unavailable", "message": "the store did not confirm"}})
                    .to_string(),
            ))
            .unwrap()),
        None => {
            let mut response = hyper::Response::builder().status(status);
            for (name, value) in &answer_headers {
                if name != "content-length" && name != "transfer-encoding" {
                    response = response.header(name, value);
                }
            }
            Ok(response.body(Full::from(answer_body)).unwrap())
        }
    }
}

fn inject(state: &Arc<Mutex<Proxy>>, method: &str, path: &str, fault: Fault) {
    state.lock().unwrap().fault = Some((method.to_owned(), path.to_owned(), fault));
}

fn forwarded(state: &Arc<Mutex<Proxy>>, method: &str, path: &str) -> Vec<Forwarded> {
    let state = state.lock().unwrap();
    state
        .forwarded
        .iter()
        .filter(|f| f.method == method && f.path == path)
        .cloned()
        .collect()
}

async fn setup() -> (Server, tempfile::TempDir, Client, Arc<Mutex<Proxy>>) {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(crate::STRATA, dir.path(), &[]);
    let (base, state) = proxy(&server.base).await;
    let client = Client::builder(base).build().unwrap();
    (server, dir, client, state)
}

#[tokio::test(flavor = "multi_thread")]
async fn an_increment_whose_answer_is_lost_counts_once_and_gets_its_answer() {
    let (_server, _dir, client, proxy) = setup().await;
    client.increment("visits", 2).await.unwrap();
    inject(&proxy, "POST", "/increment", Fault::Drop);

    let counted = client.increment("visits", 5).await.unwrap();

    assert_eq!(
        counted,
        Counted::Total {
            key: "visits".into(),
            total: 7
        }
    );
    let attempts = forwarded(&proxy, "POST", "/increment");
    assert_eq!(attempts.len(), 3, "{attempts:?}");
    let (first, retry) = (&attempts[1], &attempts[2]);
    // The lost answer was strata's, the retry a replay of it under the same key.
    assert_eq!((first.status, first.replayed), (200, false));
    assert_eq!((retry.status, retry.replayed), (200, true));
    assert_eq!(first.idempotency_key, retry.idempotency_key);
    assert!(first.idempotency_key.is_some());
    assert_eq!(retry.body, first.body);
    assert_eq!(first.body, json!({"key": "visits", "value": 7}));
    assert_eq!(client.counter("visits").await.unwrap(), 7);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_certificate_whose_answer_is_a_503_is_issued_once() {
    let (_server, _dir, client, proxy) = setup().await;
    inject(&proxy, "POST", "/certificates", Fault::Unavailable);
    let issue = CertificateIssue {
        name: "Ada Lovelace".into(),
        amount: 100,
        class: "CS".into(),
    };

    let certificate = client.issue_certificate(&issue).await.unwrap();

    let attempts = forwarded(&proxy, "POST", "/certificates");
    assert_eq!(attempts.len(), 2, "{attempts:?}");
    assert_eq!((attempts[0].status, attempts[1].replayed), (201, true));
    assert_eq!(attempts[0].idempotency_key, attempts[1].idempotency_key);
    assert_eq!(attempts[1].body, attempts[0].body);
    assert_eq!(certificate.id, "CS-1");
    assert_eq!(attempts[0].body["id"], "CS-1");
    let page = client.certificates("CS", 0, 100).await.unwrap();
    assert_eq!(page.certificates, [certificate]);
    assert_eq!(client.share_class("CS").await.unwrap().issued, 100);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_put_whose_answer_is_lost_is_not_retried() {
    let (_server, _dir, client, proxy) = setup().await;
    inject(&proxy, "PUT", "/kv/keys/greeting", Fault::Drop);

    let error = client.put("greeting", "hello").await.unwrap_err();

    assert!(matches!(error, Error::Transport { .. }), "{error:?}");
    assert_eq!(error.outcome(), Outcome::Unknown);
    assert_eq!(error.attempts(), 1);
    assert_eq!(forwarded(&proxy, "PUT", "/kv/keys/greeting").len(), 1);
    // It did apply: reading is how the caller learns it.
    let item = client.get("greeting").await.unwrap();
    assert_eq!(item.value, "hello");
}

#[tokio::test(flavor = "multi_thread")]
async fn strata_s_errors_arrive_typed() {
    let (_server, _dir, client, _proxy) = setup().await;
    let error = client.get("absent").await.unwrap_err();
    assert_eq!(
        (error.status(), error.code()),
        (Some(404), Some("key_not_found"))
    );
    assert!(!error.api().unwrap().message.is_empty());
    assert_eq!(error.outcome(), Outcome::NothingWritten);

    let too_many = CertificateIssue {
        name: "Ada".into(),
        amount: 750_001,
        class: "PS".into(),
    };
    let error = client.issue_certificate(&too_many).await.unwrap_err();
    assert_eq!(error.code(), Some("insufficient_shares"));
    assert_eq!(error.api().unwrap().detail_u64("remaining"), Some(750_000));

    let error = client.widget("no-such-widget").await.unwrap_err();
    assert_eq!(error.code(), Some("widget_not_found"));
    assert_eq!(
        error.api().unwrap().detail_str("serial_number"),
        Some("no-such-widget")
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_token_protected_server_takes_the_client_s_token() {
    let dir = tempfile::tempdir().unwrap();
    let token = "client-suite-token-8c2e41";
    let server = Server::start(crate::STRATA, dir.path(), &["--auth-token", token]);
    let without = Client::builder(server.base.clone()).build().unwrap();
    let error = without.get("k").await.unwrap_err();
    assert_eq!(
        (error.status(), error.code()),
        (Some(401), Some("unauthorized"))
    );

    let with = Client::builder(server.base.clone())
        .token(token)
        .build()
        .unwrap();
    assert_eq!(with.put("k", "v").await.unwrap().value, "v");
    assert!(with.delete("k").await.unwrap().deleted);
}
