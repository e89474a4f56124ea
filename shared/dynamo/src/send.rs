//! How strata sends a DynamoDB call: inside the request's deadline, and, for a write whose repetition would
//! count twice, without blind retries.
//!
//! The SDK retries throttling, 5xx answers, timeouts and dropped connections (see [`crate::config`]). For
//! `TransactWriteItems` that is safe: the SDK gives every call one `ClientRequestToken` for all its attempts,
//! and DynamoDB applies a token once. A conditional write whose condition fails once it applied (an entry
//! that is put only if absent) is safe too. A plain `UpdateItem` that adds or bumps is not: an attempt can
//! apply and lose its answer (a timeout, a 500 after the write, a reset connection), and the retry applies it
//! again. Those writes go through [`unrepeatable`]: the SDK retries nothing, throttling (which DynamoDB
//! refuses before applying) is retried here, and any failure that may have come after the write is handed
//! back as [`Sent::Unknown`], so the caller can look for the write's token and otherwise answer "outcome
//! unknown" instead of applying it twice.

use crate::config::{INITIAL_BACKOFF, MAX_ATTEMPTS, MAX_BACKOFF};
use crate::error::THROTTLED;
use aws_sdk_dynamodb::config::http::HttpResponse;
use aws_sdk_dynamodb::error::{ProvideErrorMetadata, SdkError};
use std::future::Future;
use std::time::Duration;
use strata_core::{Error, deadline};

/// A call's future, bounded by what is left of the request's deadline: past it, the call ends as a
/// timeout, which [`crate::error::store_error`] answers as `503` with `retry-after`.
pub(crate) trait WithinDeadline<T, E>:
    Future<Output = Result<T, SdkError<E, HttpResponse>>> + Sized
{
    async fn within_deadline(self) -> Result<T, SdkError<E, HttpResponse>> {
        match deadline::remaining() {
            None => self.await,
            // Nothing is sent once the deadline has passed: its answer could not be used.
            Some(Duration::ZERO) => Err(SdkError::timeout_error(
                "the request's deadline passed before the call was sent",
            )),
            Some(left) => match tokio::time::timeout(left, self).await {
                Ok(result) => result,
                Err(_) => Err(SdkError::timeout_error(
                    "the request's deadline passed before DynamoDB answered",
                )),
            },
        }
    }
}

impl<T, E, F> WithinDeadline<T, E> for F where
    F: Future<Output = Result<T, SdkError<E, HttpResponse>>>
{
}

/// The end of an [`unrepeatable`] write.
pub(crate) enum Sent<T, E> {
    /// DynamoDB answered: applied (`Ok`), or refused without applying (`Err`: a failed condition, a
    /// validation error, throttling that outlasted the retries).
    Answered(Result<T, SdkError<E, HttpResponse>>),
    /// The attempt failed in a way that may have come after DynamoDB applied it.
    Unknown(SdkError<E, HttpResponse>),
}

/// Whether DynamoDB refused `e` before applying anything: throttling and the other 4xx refusals. A 5xx, a
/// timeout, a dropped connection or an unreadable answer may all follow an applied write.
fn refused_before_applying<E: ProvideErrorMetadata>(e: &SdkError<E, HttpResponse>) -> bool {
    match e {
        SdkError::ServiceError(service) => {
            service.raw().status().is_client_error()
                || service.err().code().is_some_and(|c| THROTTLED.contains(&c))
        }
        SdkError::ConstructionFailure(_) => true,
        _ => false,
    }
}

fn throttled<E: ProvideErrorMetadata>(e: &SdkError<E, HttpResponse>) -> bool {
    e.as_service_error()
        .and_then(ProvideErrorMetadata::code)
        .is_some_and(|c| THROTTLED.contains(&c))
}

/// Sends a write that must not be applied twice. `attempt` makes one attempt, with the SDK's retries
/// turned off (see [`no_retries`]); throttled attempts are retried with the SDK's own backoff, within the
/// deadline; anything that may have applied ends the loop as [`Sent::Unknown`].
pub(crate) async fn unrepeatable<T, E, F, Fut>(mut attempt: F) -> Sent<T, E>
where
    E: ProvideErrorMetadata,
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, SdkError<E, HttpResponse>>>,
{
    let mut backoff = INITIAL_BACKOFF;
    for tried in 1.. {
        match attempt().within_deadline().await {
            Ok(out) => return Sent::Answered(Ok(out)),
            Err(e) if throttled(&e) && tried < MAX_ATTEMPTS => {
                // Full jitter, as the SDK's standard mode: a random wait up to the backoff.
                let wait = backoff.mul_f64(jitter());
                if deadline::remaining().is_some_and(|left| left <= wait) {
                    return Sent::Answered(Err(e));
                }
                tokio::time::sleep(wait).await;
                backoff = (backoff * 2).min(MAX_BACKOFF);
            }
            Err(e) if refused_before_applying(&e) => return Sent::Answered(Err(e)),
            Err(e) => return Sent::Unknown(e),
        }
    }
    unreachable!("the loop returns")
}

/// A config override that turns the SDK's retries off for one call (see [`unrepeatable`]).
pub(crate) fn no_retries() -> aws_sdk_dynamodb::config::Builder {
    aws_sdk_dynamodb::config::Builder::default()
        .retry_config(aws_sdk_dynamodb::config::retry::RetryConfig::disabled())
}

/// A number in `0.0..1.0` for jitter, from the clock's nanoseconds (no generator worth a dependency here).
pub(crate) fn jitter() -> f64 {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or(Duration::ZERO)
        .subsec_nanos();
    f64::from(nanos % 1000) / 1000.0
}

/// The answer when a write may or may not have been applied: `503` with `retry-after`, saying so.
pub(crate) fn outcome_unknown(operation: &str) -> Error {
    tracing::warn!(
        operation,
        "a write may have applied but DynamoDB's answer was lost"
    );
    Error::unavailable(
        "the store did not confirm the write, which may or may not have been applied; \
         retry with the same Idempotency-Key to apply it exactly once",
    )
}
