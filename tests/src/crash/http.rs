//! The clients' hand-written HTTP, and the tally of error answers: every error answer checked against the
//! contract and counted, whether read here or returned by strata-client.

use reqwest::{Client, RequestBuilder, StatusCode};
use serde_json::Value;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use strata_client::ApiError;

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

    /// Requests sent again: by a hand-written client, by a campaign client calling strata-client again with
    /// the same key, or by strata-client within a call that failed (`attempts - 1`; the retries of a call
    /// that succeeded are not reported by it).
    pub(super) fn retried(&self, requests: u64) {
        self.tally.lock().unwrap().retries += requests;
    }

    /// The error answer (if any) a strata-client call ended with, checked and counted as [`Http::send`]
    /// does a raw one; and the retries within the call. Answers strata-client retried past are not seen.
    pub(super) fn check_client_error(&self, error: &strata_client::Error) {
        self.retried(u64::from(error.attempts().saturating_sub(1)));
        if let Some(e) = error.api() {
            let shaped = !e.code.is_empty() && !e.message.is_empty();
            let code = (!e.code.is_empty()).then_some(e.code.as_str());
            self.tally_error(e.status, code, shaped, e.retry_after.is_some(), || {
                format!("{} {}: {}", e.status, e.code, e.message)
            });
        }
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
        let code = json.and_then(|j| j["error"]["code"].as_str());
        let shaped = json
            .is_some_and(|j| j["error"]["code"].is_string() && j["error"]["message"].is_string());
        self.tally_error(status.as_u16(), code, shaped, retry_after, || {
            String::from_utf8_lossy(&body[..body.len().min(300)]).into_owned()
        });
    }

    /// Counts an error answer by status and code, and checks it: the error JSON (`shaped`), a documented
    /// status, `retry-after` on `429`/`503`. The first violation per status and code is kept as an example.
    fn tally_error(
        &self,
        status: u16,
        code: Option<&str>,
        shaped: bool,
        retry_after: bool,
        example: impl FnOnce() -> String,
    ) {
        let mut tally = self.tally.lock().unwrap();
        let label = format!("{status} {}", code.unwrap_or("(no code)"));
        let seen = tally.errors.entry(label.clone()).or_default();
        *seen += 1;
        let first = *seen == 1;
        let mut wrong = Vec::new();
        if !shaped {
            wrong.push("not the error JSON");
        }
        if !DOCUMENTED_ERRORS.contains(&status) {
            wrong.push("an undocumented status");
        }
        if matches!(status, 429 | 503) && !retry_after {
            wrong.push("no retry-after");
        }
        if !wrong.is_empty() {
            tally.contract_violations += 1;
            if first {
                tally.examples.push(format!(
                    "[error-contract] {label}: {}: {}",
                    wrong.join(", "),
                    example()
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

/// An error a keyed write ends with when strata-client spent its retry budget on answers that say "later"
/// (`429`, `503`, `409 request_in_progress`): still unsettled, to be called again with the same key.
pub(super) fn retry_later(error: &ApiError) -> bool {
    matches!(error.status, 429 | 503) || error.code == "request_in_progress"
}

/// How long a client waits before sending again after `429`/`503`: shorter than the `retry-after: 1` they
/// carry, to keep the load on during a round's short life.
pub(super) const RETRY_PAUSE: Duration = Duration::from_millis(200);

pub(super) async fn get_json(http: &Http, url: String) -> Option<(StatusCode, Value)> {
    match http.send(http.get(url)).await {
        Outcome::Answered(status, body) => Some((status, body)),
        _ => None,
    }
}
