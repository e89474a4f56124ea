//! Building responses, and the single mapping from domain errors to HTTP.

use crate::{Body, Response};
use http::StatusCode;
use http::header::{CONTENT_TYPE, RETRY_AFTER};
use serde::Serialize;
use strata_core::{Error, Kind};

/// A JSON response.
pub fn json(status: StatusCode, body: &impl Serialize) -> Response {
    // Serializing our own response types cannot fail: they hold only strings, numbers and maps.
    let bytes = serde_json::to_vec(body).expect("response bodies serialize");
    http::Response::builder()
        .status(status)
        // A static value: `&str` would be parsed and copied into a new header value on every response.
        .header(
            CONTENT_TYPE,
            http::HeaderValue::from_static("application/json"),
        )
        .body(Body::Text(
            String::from_utf8(bytes).expect("serde_json writes UTF-8"),
        ))
        .expect("a valid status and header")
}

/// A response with no body (`204`).
pub fn empty(status: StatusCode) -> Response {
    http::Response::builder()
        .status(status)
        .body(Body::Empty)
        .expect("a valid status")
}

/// The status of an error of this kind.
pub fn status_of(kind: Kind) -> StatusCode {
    match kind {
        Kind::Invalid => StatusCode::BAD_REQUEST,
        Kind::Forbidden => StatusCode::FORBIDDEN,
        Kind::NotFound => StatusCode::NOT_FOUND,
        Kind::Timeout => StatusCode::REQUEST_TIMEOUT,
        Kind::Conflict => StatusCode::CONFLICT,
        Kind::TooLarge => StatusCode::PAYLOAD_TOO_LARGE,
        Kind::UnsupportedMediaType => StatusCode::UNSUPPORTED_MEDIA_TYPE,
        Kind::IdempotencyMismatch => StatusCode::UNPROCESSABLE_ENTITY,
        Kind::Throttled => StatusCode::TOO_MANY_REQUESTS,
        Kind::Unavailable => StatusCode::SERVICE_UNAVAILABLE,
        Kind::Internal => StatusCode::INTERNAL_SERVER_ERROR,
    }
}

/// What a client is told about an error, over HTTP and over the line protocol alike: an internal fault is
/// reported without details; anything else says what is wrong. Logging is [`log`]'s (or [`log_error`]'s).
pub fn client_message(e: &Error) -> String {
    match e.kind {
        Kind::Internal => "an internal error occurred; it has been logged".to_owned(),
        _ => e.message.clone(),
    }
}

/// Logs an error that operators must see: an internal fault in full, a store that was unavailable. Other
/// errors are the client's and are not logged.
pub fn log(e: &Error) {
    log_details(e.kind, &e.code, &e.message);
}

fn log_details(kind: Kind, code: &str, message: &str) {
    match kind {
        Kind::Internal => tracing::error!(code = %code, message = %message, "internal error"),
        Kind::Unavailable => tracing::warn!(code = %code, message = %message, "store unavailable"),
        _ => {}
    }
}

/// What [`log_error`] logs of an error response, kept in its extensions by [`error`]: the client's body
/// does not hold the details of an internal fault.
#[derive(Debug, Clone)]
pub struct ErrorToLog {
    /// The error's kind: only internal and unavailable errors are kept.
    pub kind: Kind,
    /// The error's code.
    pub code: std::borrow::Cow<'static, str>,
    /// The full message, as the client may not see it.
    pub message: String,
}

/// Logs the error a response carries, if operators must see it (see [`log`]). Called once per response
/// where responses are observed: by [`crate::lambda`] for the Lambdas, by the local server's layers.
pub fn log_error<B>(response: &http::Response<B>) {
    if let Some(e) = response.extensions().get::<ErrorToLog>() {
        log_details(e.kind, &e.code, &e.message);
    }
}

/// The error JSON of the contract: `{"error": {"code", "message", ...extra}}`. Nothing is logged here: an
/// internal or unavailable error keeps what [`log_error`] logs in the response's extensions.
pub fn error(e: &Error) -> Response {
    let body = crate::openapi::Error {
        error: crate::openapi::ErrorDetail {
            code: e.code.to_string(),
            message: client_message(e),
            extra: e.extra.clone(),
        },
    };
    let mut response = json(status_of(e.kind), &body);
    // For the metrics, which count answers by code without reading bodies back.
    response
        .extensions_mut()
        .insert(crate::metrics::ErrorCode(e.code.clone()));
    if matches!(e.kind, Kind::Internal | Kind::Unavailable) {
        response.extensions_mut().insert(ErrorToLog {
            kind: e.kind,
            code: e.code.clone(),
            message: e.message.clone(),
        });
    }
    if let Some(seconds) = e.retry_after {
        response.headers_mut().insert(RETRY_AFTER, seconds.into());
    }
    response
}

/// A handler's result as its response: the error as the contract's error JSON.
pub fn from_result(result: Result<Response, Error>) -> Response {
    result.unwrap_or_else(|e| error(&e))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn body_json(r: &Response) -> serde_json::Value {
        serde_json::from_slice(r.body().as_ref()).unwrap()
    }

    #[test]
    fn errors_have_the_contract_shape_and_status() {
        let r = error(&Error::conflict("conflict", "key changed").with("key", "k"));
        assert_eq!(r.status(), 409);
        assert_eq!(r.headers()[CONTENT_TYPE], "application/json");
        assert_eq!(
            body_json(&r),
            json!({"error": {"code": "conflict", "message": "key changed", "key": "k"}})
        );
    }

    #[test]
    fn internal_errors_hide_details_and_unavailable_says_when_to_retry() {
        let r = error(&Error::internal("disk exploded at /var/secret"));
        assert_eq!(r.status(), 500);
        assert!(!String::from_utf8_lossy(r.body().as_ref()).contains("secret"));
        let r = error(&Error::unavailable("writer closed"));
        assert_eq!(
            (r.status().as_u16(), &r.headers()[RETRY_AFTER]),
            (503, &"1".parse::<http::HeaderValue>().unwrap())
        );
    }
}
