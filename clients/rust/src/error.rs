//! The errors a call can end with, and what each says about the data (CONTRACT.md, "Errors" and
//! "What a 503 or 429 means").

use serde_json::{Map, Value};
use std::time::Duration;

/// Whether a failed write may have changed anything.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// Nothing was written: a `4xx`, a read, a request that never reached the server, or a
    /// `429`/`503` whose code says nothing ran.
    NothingWritten,
    /// The write may or may not have been applied (a `5xx`, a `429`/`503` of a write, or an answer lost
    /// after the request was sent). Read the data before writing again without an `Idempotency-Key`.
    Unknown,
}

/// An error answer of strata: `{"error": {"code", "message", …}}`.
#[derive(Debug, Clone, PartialEq)]
pub struct ApiError {
    /// The HTTP status.
    pub status: u16,
    /// The contract's stable code, e.g. `key_not_found`. Empty for an answer not in strata's shape
    /// (API Gateway's own `{"message": …}`).
    pub code: String,
    /// A sentence for people; it may change.
    pub message: String,
    /// The extra fields some codes carry (`field`, `remaining`, `room`, …).
    pub details: Map<String, Value>,
    /// The `retry-after` header, if the answer had one.
    pub retry_after: Option<Duration>,
}

impl ApiError {
    /// Reads an error answer's body; one not in strata's shape keeps its `message`, if any.
    pub(crate) fn from_answer(status: u16, body: &[u8], retry_after: Option<Duration>) -> Self {
        let value: Value = serde_json::from_slice(body).unwrap_or(Value::Null);
        let (code, message, details) = match value.get("error").and_then(Value::as_object) {
            Some(error) => {
                let mut details = error.clone();
                let code = take_string(&mut details, "code");
                let message = take_string(&mut details, "message");
                (code, message, details)
            }
            None => {
                let message = value
                    .get("message")
                    .and_then(Value::as_str)
                    .map(str::to_owned)
                    .unwrap_or_else(|| String::from_utf8_lossy(body).into_owned());
                (String::new(), message, Map::new())
            }
        };
        Self {
            status,
            code,
            message,
            details,
            retry_after,
        }
    }

    /// An extra field as an integer (`remaining`, `room`, `issued`, …).
    pub fn detail_u64(&self, name: &str) -> Option<u64> {
        self.details.get(name).and_then(Value::as_u64)
    }

    /// An extra field as a string (`field`, `key`, `serial_number`, …).
    pub fn detail_str(&self, name: &str) -> Option<&str> {
        self.details.get(name).and_then(Value::as_str)
    }

    /// A `429`/`503` whose code says the request did not run at all, whatever the operation.
    pub(crate) fn nothing_ran(&self) -> bool {
        matches!(
            self.code.as_str(),
            "rate_limited"
                | "too_many_auth_failures"
                | "too_many_transactions"
                | "transaction_memory_full"
                | "too_many_connections"
                | "export_in_progress"
        )
    }

    /// `409 request_in_progress`: the first request with this key still runs.
    pub(crate) fn in_progress(&self) -> bool {
        self.status == 409 && self.code == "request_in_progress"
    }

    /// A `429` or `503`: "retry later".
    pub(crate) fn busy(&self) -> bool {
        self.status == 429 || self.status == 503
    }
}

impl std::fmt::Display for ApiError {
    /// `404 key_not_found: …`, or `403: …` for an answer without a code (API Gateway's own).
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.code.is_empty() {
            write!(f, "{}: {}", self.status, self.message)
        } else {
            write!(f, "{} {}: {}", self.status, self.code, self.message)
        }
    }
}

fn take_string(map: &mut Map<String, Value>, name: &str) -> String {
    match map.remove(name) {
        Some(Value::String(s)) => s,
        _ => String::new(),
    }
}

/// Why a call failed.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// strata answered with an error.
    #[error("{error}")]
    Api {
        /// The answer (boxed: it is the largest variant by far).
        error: Box<ApiError>,
        /// What the answer says about the data.
        outcome: Outcome,
        /// How many requests the call sent.
        attempts: u32,
    },
    /// No answer: the request could not be sent, or its answer was lost.
    #[error("no answer from strata: {source}")]
    Transport {
        /// The HTTP client's error.
        #[source]
        source: reqwest::Error,
        /// `NothingWritten` when the request never reached the server.
        outcome: Outcome,
        /// How many requests the call sent.
        attempts: u32,
    },
    /// A success answer that is not what the contract says it is.
    #[error("unexpected answer {status}: {message}")]
    UnexpectedAnswer {
        /// The HTTP status.
        status: u16,
        /// What was wrong with it.
        message: String,
    },
    /// The base URL or a header value cannot make a request.
    #[error("invalid request: {0}")]
    InvalidRequest(String),
    /// The request could not be authenticated: SigV4 without credentials or without a region, or two
    /// ways of authenticating at once. Nothing was sent.
    #[error("cannot authenticate the request: {0}")]
    Auth(String),
}

impl Error {
    /// The error answer, if strata sent one.
    pub fn api(&self) -> Option<&ApiError> {
        match self {
            Self::Api { error, .. } => Some(error.as_ref()),
            _ => None,
        }
    }

    /// The contract's code, if strata sent an error answer.
    pub fn code(&self) -> Option<&str> {
        self.api().map(|e| e.code.as_str())
    }

    /// The HTTP status, if there was an answer.
    pub fn status(&self) -> Option<u16> {
        match self {
            Self::Api { error, .. } => Some(error.status),
            Self::UnexpectedAnswer { status, .. } => Some(*status),
            _ => None,
        }
    }

    /// What the error says about the data. An unexpected answer was a success, so the write applied:
    /// it counts as `Unknown` here since its body could not be read.
    pub fn outcome(&self) -> Outcome {
        match self {
            Self::Api { outcome, .. } | Self::Transport { outcome, .. } => *outcome,
            Self::UnexpectedAnswer { .. } => Outcome::Unknown,
            Self::InvalidRequest(_) | Self::Auth(_) => Outcome::NothingWritten,
        }
    }

    /// A commit's `409 conflict`: a key the transaction read changed since it read it; nothing was
    /// written and the transaction is over.
    pub fn is_conflict(&self) -> bool {
        self.status() == Some(409) && self.code() == Some("conflict")
    }

    /// How many requests the call sent (0 when none could be built).
    pub fn attempts(&self) -> u32 {
        match self {
            Self::Api { attempts, .. } | Self::Transport { attempts, .. } => *attempts,
            _ => 0,
        }
    }
}
