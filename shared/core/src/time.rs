//! Wall-clock time as the API shows it.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// Seconds since the Unix epoch (what DynamoDB TTL attributes hold).
pub fn epoch_seconds(at: SystemTime) -> u64 {
    at.duration_since(UNIX_EPOCH)
        .unwrap_or(Duration::ZERO)
        .as_secs()
}

/// Milliseconds since the Unix epoch: deadlines, issue times and log entries are kept to the millisecond.
pub fn epoch_millis(at: SystemTime) -> u64 {
    at.duration_since(UNIX_EPOCH)
        .unwrap_or(Duration::ZERO)
        .as_millis() as u64
}

/// [`epoch_millis`] of now.
pub fn now_millis() -> u64 {
    epoch_millis(SystemTime::now())
}

/// The moment `seconds` whole seconds after the Unix epoch.
pub fn from_epoch_seconds(seconds: u64) -> SystemTime {
    UNIX_EPOCH + Duration::from_secs(seconds)
}

/// RFC 3339 in UTC with millisecond precision, e.g. `2026-11-23T05:00:00.123Z`.
pub fn rfc3339(at: SystemTime) -> String {
    humantime::format_rfc3339_millis(at).to_string()
}
