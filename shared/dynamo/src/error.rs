//! From SDK errors to domain errors.

use aws_sdk_dynamodb::config::http::HttpResponse;
use aws_sdk_dynamodb::error::{ProvideErrorMetadata, SdkError};
use aws_sdk_dynamodb::operation::transact_write_items::TransactWriteItemsError;
use strata_core::Error;

/// Error codes that mean DynamoDB throttled the request (capacity or request rate): `429 store_throttled`.
pub(crate) const THROTTLED: &[&str] = &[
    "ProvisionedThroughputExceededException",
    "ThrottlingException",
    "RequestLimitExceeded",
];

/// Error codes after which a retry can succeed, though not because of capacity: `503 store_unavailable`.
/// `TransactionConflictException`: the item is in the middle of another transaction right now.
const TRANSIENT: &[&str] = &[
    "InternalServerError",
    "ServiceUnavailable",
    "TransactionInProgressException",
    "TransactionConflictException",
];

/// DynamoDB throttled the request, even after the SDK's retries: `429` with `retry-after`.
pub fn throttled() -> Error {
    Error::new(
        strata_core::Kind::Throttled,
        "store_throttled",
        "the store is throttling requests; retry shortly",
    )
    .retry_after(1)
}

/// Whether the operation was refused because its condition expression did not hold.
pub fn is_condition_failed<E: ProvideErrorMetadata, R>(e: &SdkError<E, R>) -> bool {
    e.as_service_error()
        .and_then(ProvideErrorMetadata::code)
        .is_some_and(|code| code == "ConditionalCheckFailedException")
}

/// Any other failure. The SDK has already retried what it could (see [`crate::config`]): throttling becomes
/// `429`, an outage (connection failure, timeout, a 5xx or unreadable answer, a transient service error)
/// `503`, both with `retry-after`; the rest are internal faults (logged with details).
pub fn store_error<E>(operation: &str, e: SdkError<E, HttpResponse>) -> Error
where
    E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
{
    let code = e
        .as_service_error()
        .and_then(ProvideErrorMetadata::code)
        .map(str::to_owned);
    let throttling = code.as_deref().is_some_and(|c| THROTTLED.contains(&c));
    let transient = match &e {
        SdkError::TimeoutError(_) | SdkError::DispatchFailure(_) | SdkError::ResponseError(_) => {
            true
        }
        SdkError::ServiceError(service) => {
            code.as_deref().is_some_and(|c| TRANSIENT.contains(&c))
                || service.raw().status().is_server_error()
        }
        _ => false,
    };
    let detail = aws_sdk_dynamodb::error::DisplayErrorContext(&e);
    if throttling {
        tracing::warn!(operation, error = %detail, "DynamoDB throttled");
        throttled()
    } else if transient {
        tracing::warn!(operation, error = %detail, "DynamoDB unavailable");
        Error::unavailable("the store is unavailable; retry shortly")
    } else {
        Error::internal(format!("DynamoDB {operation} failed: {detail}"))
    }
}

/// The reasons a `TransactWriteItems` was cancelled (one code per action, in order), if that is what happened.
pub(crate) fn cancellation_codes<R>(
    e: &SdkError<TransactWriteItemsError, R>,
) -> Option<Vec<String>> {
    match e.as_service_error()? {
        TransactWriteItemsError::TransactionCanceledException(c) => Some(
            c.cancellation_reasons()
                .iter()
                .map(|r| r.code().unwrap_or("None").to_owned())
                .collect(),
        ),
        _ => None,
    }
}
