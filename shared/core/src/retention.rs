//! How long records kept for idempotency or exactly-once are honoured, the same rule on every store.
//!
//! Such a record (an `Idempotency-Key` response, a counted request's marker, the ledger's record of an issue
//! under a key) is written at some moment by one process and read later by another, each with its own
//! clock. A record written at `t` with the retention `r` holds until `t + r +` [`CLOCK_SKEW_MARGIN`]: the
//! margin keeps it for at least `r` by the clock of any reader whose clock is behind the writer's by less
//! than the margin, so no reader takes a record for expired early. Past that moment every reader treats the
//! record as absent, whether or not the store has removed it yet (DynamoDB's TTL deletes lazily, up to days
//! late), and a write may replace it: a key reused after its retention is a new request.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// How far apart two machines' clocks may be while records keep their full retention. Lambda instances
/// (and any NTP-synchronised host) are within milliseconds of each other; this is two orders of magnitude
/// more.
pub const CLOCK_SKEW_MARGIN: Duration = Duration::from_secs(2);

/// Until when a record written at `written` and kept for `retention` is honoured.
pub fn holds_until(written: SystemTime, retention: Duration) -> SystemTime {
    written + retention + CLOCK_SKEW_MARGIN
}

/// Whether a record that holds until `until` is gone at `now`: every reader then treats it as absent.
pub fn is_expired(until: SystemTime, now: SystemTime) -> bool {
    now > until
}

/// A DynamoDB TTL value (whole seconds since the epoch) for a record that holds until `until`, rounded up,
/// so DynamoDB never removes a record that a reader still honours. A record whose TTL value is below a
/// reader's [`crate::time::epoch_seconds`] of now is past `until`: conditions compare `ttl < :now`.
pub fn ttl_seconds(until: SystemTime) -> u64 {
    let since = until.duration_since(UNIX_EPOCH).unwrap_or(Duration::ZERO);
    since.as_secs() + u64::from(since.subsec_nanos() > 0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_record_holds_for_its_retention_and_the_margin_then_is_gone() {
        let written = UNIX_EPOCH + Duration::from_millis(1_000_500);
        let retention = Duration::from_secs(10);
        let until = holds_until(written, retention);
        assert!(!is_expired(until, written + retention));
        assert!(!is_expired(until, written + retention + CLOCK_SKEW_MARGIN));
        assert!(is_expired(
            until,
            written + retention + CLOCK_SKEW_MARGIN + Duration::from_millis(1)
        ));
    }

    #[test]
    fn the_ttl_value_never_comes_before_the_record_expires() {
        let written = UNIX_EPOCH + Duration::from_millis(1_000_500);
        let until = holds_until(written, Duration::from_secs(10));
        let ttl = ttl_seconds(until);
        assert!(UNIX_EPOCH + Duration::from_secs(ttl) >= until);
        assert_eq!(ttl, 1_013);
        // Whole seconds stay as they are.
        assert_eq!(ttl_seconds(UNIX_EPOCH + Duration::from_secs(7)), 7);
        // A reader comparing `ttl < now` (now in whole seconds, rounded down) sees it expired only past
        // `until`.
        let now = UNIX_EPOCH + Duration::from_secs(ttl + 1);
        assert!(ttl < crate::time::epoch_seconds(now) && is_expired(until, now));
    }
}
