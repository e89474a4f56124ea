//! SigV4 with the standard AWS credential chain, which reads the process's environment: each case runs
//! this binary again with the environment it needs (a test cannot safely change its own), against a
//! local server that keeps the headers it receives.

// Test code: a failed `unwrap` is a failed test.
#![allow(clippy::unwrap_used)]

use axum::Router;
use axum::http::HeaderMap;
use std::process::Command;
use std::sync::{Arc, Mutex};
use strata_client::{Client, Error};

/// Set in a child's environment: the case it runs.
const CASE: &str = "STRATA_CLIENT_CHAIN_CASE";

/// No profile files, no instance metadata: the environment is the only place credentials can be.
const NOWHERE_ELSE: [(&str, &str); 3] = [
    ("AWS_CONFIG_FILE", "/nonexistent/aws/config"),
    (
        "AWS_SHARED_CREDENTIALS_FILE",
        "/nonexistent/aws/credentials",
    ),
    ("AWS_EC2_METADATA_DISABLED", "true"),
];

fn main() {
    match std::env::var(CASE) {
        Ok(case) => {
            let runtime = tokio::runtime::Runtime::new().unwrap();
            runtime.block_on(child(&case));
        }
        Err(_) => {
            parent(
                "signs",
                &[
                    ("AWS_ACCESS_KEY_ID", "AKIDFROMCHAIN"),
                    ("AWS_SECRET_ACCESS_KEY", "chain/secret"),
                    ("AWS_SESSION_TOKEN", "session-token-from-the-environment"),
                ],
            );
            println!("test credentials_from_the_environment_sign_each_request ... ok");
            parent("none", &[]);
            println!("test no_credentials_fail_the_first_call_and_send_nothing ... ok");
        }
    }
}

/// Runs `case` in a child with only `env` and [`NOWHERE_ELSE`] in its environment.
fn parent(case: &str, env: &[(&str, &str)]) {
    let output = Command::new(std::env::current_exe().unwrap())
        .env_clear()
        .env(CASE, case)
        .envs(NOWHERE_ELSE)
        .envs(env.iter().copied())
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "case {case}: {}\nstdout:\n{}\nstderr:\n{}",
        output.status,
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
}

async fn child(case: &str) {
    let seen: Arc<Mutex<Vec<HeaderMap>>> = Arc::default();
    let kept = seen.clone();
    let app = Router::new().fallback(move |headers: HeaderMap| {
        let kept = kept.clone();
        async move {
            kept.lock().unwrap().push(headers);
            (
                [("content-type", "application/json")],
                r#"{"key":"k","value":"v","version":1}"#,
            )
        }
    });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    let client = Client::builder(base)
        .sigv4_region("eu-west-3")
        .build()
        .unwrap();
    match case {
        "signs" => {
            client.put("k", "v").await.unwrap();
            client.get("k").await.unwrap();
            let seen = seen.lock().unwrap();
            assert_eq!(seen.len(), 2);
            for headers in seen.iter() {
                let authorization = headers["authorization"].to_str().unwrap();
                assert!(
                    authorization.starts_with("AWS4-HMAC-SHA256 Credential=AKIDFROMCHAIN/")
                        && authorization.contains("/eu-west-3/execute-api/aws4_request"),
                    "{authorization}"
                );
                assert_eq!(
                    headers["x-amz-security-token"],
                    "session-token-from-the-environment"
                );
            }
        }
        "none" => {
            let error = client.put("k", "v").await.unwrap_err();
            assert!(
                matches!(&error, Error::Auth(m) if m.contains("no AWS credentials")),
                "{error:?}"
            );
            assert_eq!(error.attempts(), 0);
            assert!(seen.lock().unwrap().is_empty());
        }
        other => panic!("no case {other}"),
    }
}
