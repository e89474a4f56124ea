//! Attribute values and clocks, the small vocabulary every item mapping here uses.

use aws_sdk_dynamodb::types::AttributeValue;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// The attribute every expiring item carries: when (whole seconds since the epoch) DynamoDB may delete it.
/// The template enables `TimeToLiveSpecification` on it for every table that holds such items. DynamoDB
/// deletes lazily (up to days late), so readers and conditional writes compare it (or a finer deadline
/// kept beside it) with the clock themselves, see [`strata_core::retention`].
pub const TTL: &str = "ttl";

/// A string attribute.
pub(crate) fn s(v: &str) -> AttributeValue {
    AttributeValue::S(v.to_owned())
}

/// A number attribute.
pub(crate) fn n(v: u64) -> AttributeValue {
    AttributeValue::N(v.to_string())
}

/// Milliseconds since the Unix epoch: deadlines and issue times are kept to the millisecond.
pub(crate) fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or(Duration::ZERO)
        .as_millis() as u64
}
