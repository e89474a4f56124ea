//! From SDK errors to domain errors.

use aws_sdk_dynamodb::error::{ProvideErrorMetadata, SdkError};
use aws_sdk_dynamodb::operation::transact_write_items::TransactWriteItemsError;
use strata_core::Error;

/// Error codes after which a retry can succeed: throttling and transient service faults.
const RETRYABLE: &[&str] = &[
    "ProvisionedThroughputExceededException",
    "ThrottlingException",
    "RequestLimitExceeded",
    "InternalServerError",
    "ServiceUnavailable",
    "TransactionInProgressException",
];

/// Whether the operation was refused because its condition expression did not hold.
pub fn is_condition_failed<E: ProvideErrorMetadata, R>(e: &SdkError<E, R>) -> bool {
    e.as_service_error()
        .and_then(ProvideErrorMetadata::code)
        .is_some_and(|code| code == "ConditionalCheckFailedException")
}

/// Any other failure: retryable ones become `503`, the rest are internal faults (logged with details).
pub fn store_error<E, R>(operation: &str, e: SdkError<E, R>) -> Error
where
    E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
    R: std::fmt::Debug,
{
    let code = e
        .as_service_error()
        .and_then(ProvideErrorMetadata::code)
        .map(str::to_owned);
    let retryable = match &e {
        SdkError::TimeoutError(_) | SdkError::DispatchFailure(_) | SdkError::ResponseError(_) => {
            true
        }
        SdkError::ServiceError(_) => code.as_deref().is_some_and(|c| RETRYABLE.contains(&c)),
        _ => false,
    };
    let detail = aws_sdk_dynamodb::error::DisplayErrorContext(&e);
    if retryable {
        tracing::warn!(operation, error = %detail, "DynamoDB unavailable");
        Error::unavailable("the store is busy or unavailable; retry shortly")
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
