//! The clients' HTTP client: every error answer checked against the contract and counted.

use reqwest::{Client, RequestBuilder, StatusCode};
use serde_json::Value;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use super::report::Tally;

/// How a request ended.
pub(super) enum Outcome {
    Answered(StatusCode, Value),
    /// Never reached the server (the connection was refused): certainly no effect.
    NotSent,
    /// Sent, but no answer: the server died with it in flight.
    Unanswered,
}

/// The statuses an error answer may have (CONTRACT.md, "Status codes").
pub(super) const DOCUMENTED_ERRORS: [u16; 7] = [400, 404, 409, 413, 422, 429, 503];

/// An HTTP client that checks every error answer against the contract and counts them.
#[derive(Clone)]
pub struct Http {
    pub(super) client: Client,
    pub(super) tally: Arc<Mutex<Tally>>,
}

impl std::ops::Deref for Http {
    type Target = Client;
    fn deref(&self) -> &Client {
        &self.client
    }
}

impl Http {
    pub(super) fn new() -> Self {
        Self {
            client: Client::builder()
                .timeout(Duration::from_secs(20))
                .build()
                .unwrap(),
            tally: Arc::default(),
        }
    }

    pub(super) fn retried(&self) {
        self.tally.lock().unwrap().retries += 1;
    }

    pub(super) async fn send(&self, request: RequestBuilder) -> Outcome {
        match request.send().await {
            Ok(r) => {
                let status = r.status();
                let retry_after = r.headers().contains_key("retry-after");
                match r.bytes().await {
                    Ok(body) => {
                        let json: Option<Value> = serde_json::from_slice(&body).ok();
                        if status.as_u16() >= 400 {
                            self.check_error(status, retry_after, json.as_ref(), &body);
                        }
                        let value = if body.is_empty() {
                            Value::Null
                        } else {
                            json.unwrap_or_else(|| {
                                Value::String(String::from_utf8_lossy(&body).into())
                            })
                        };
                        Outcome::Answered(status, value)
                    }
                    Err(_) => Outcome::Unanswered,
                }
            }
            Err(e) if e.is_connect() => Outcome::NotSent,
            Err(_) => Outcome::Unanswered,
        }
    }

    pub(super) fn check_error(
        &self,
        status: StatusCode,
        retry_after: bool,
        json: Option<&Value>,
        body: &[u8],
    ) {
        let code = json
            .and_then(|j| j["error"]["code"].as_str())
            .unwrap_or("(no code)");
        let mut tally = self.tally.lock().unwrap();
        let label = format!("{} {code}", status.as_u16());
        let seen = tally.errors.entry(label.clone()).or_default();
        *seen += 1;
        let first = *seen == 1;
        let shaped = json
            .is_some_and(|j| j["error"]["code"].is_string() && j["error"]["message"].is_string());
        let mut wrong = Vec::new();
        if !shaped {
            wrong.push("not the error JSON");
        }
        if !DOCUMENTED_ERRORS.contains(&status.as_u16()) {
            wrong.push("an undocumented status");
        }
        if matches!(status.as_u16(), 429 | 503) && !retry_after {
            wrong.push("no retry-after");
        }
        if !wrong.is_empty() {
            tally.contract_violations += 1;
            if first {
                let body = String::from_utf8_lossy(&body[..body.len().min(300)]).into_owned();
                tally.examples.push(format!(
                    "[error-contract] {label}: {}: {body}",
                    wrong.join(", ")
                ));
            }
        }
    }
}

/// `429` and `503`: the request may or may not have been applied (a store call may have timed out after
/// the store applied it), exactly like a request whose answer never came.
pub(super) fn outcome_unknown(status: StatusCode) -> bool {
    matches!(status.as_u16(), 429 | 503)
}

/// How long a client waits before sending again after `429`/`503`: shorter than the `retry-after: 1` they
/// carry, to keep the load on during a round's short life.
pub(super) const RETRY_PAUSE: Duration = Duration::from_millis(200);

/// Path segments here are plain ASCII except for spaces.
pub(super) fn encode(segment: &str) -> String {
    segment.replace(' ', "%20")
}

pub(super) async fn get_json(http: &Http, url: String) -> Option<(StatusCode, Value)> {
    match http.send(http.get(url)).await {
        Outcome::Answered(status, body) => Some((status, body)),
        _ => None,
    }
}
