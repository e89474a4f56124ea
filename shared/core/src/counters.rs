//! Counters (CONTRACT.md §4): exact totals, in one of two modes chosen per deployment.
//!
//! - Strong: an increment is in the total when it is acknowledged (`200` with the new total).
//! - Eventual: an increment is appended to a log (`202`), and a folder moves log entries into totals in the
//!   background, each exactly once, whatever crashes and redeliveries happen.
//!
//! Overflow is refused when the increment is accepted, in both modes: every counter keeps the room left below
//! 2^63 − 1, reserved as soon as an increment is accepted, so folding can never overflow and one counter's
//! overflow never touches another. With an idempotency key (the client's `Idempotency-Key`), an increment
//! counts once however often it is retried, even across crashes.

use crate::Error;
use async_trait::async_trait;

/// The largest total a counter can reach (and the largest single increment).
pub const MAX_TOTAL: u64 = i64::MAX as u64;
/// Longest counter key, in bytes of UTF-8.
pub const MAX_KEY_BYTES: usize = 1024;

/// How increments reach the totals; one per deployment.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Mode {
    #[default]
    Strong,
    Eventual,
}

impl Mode {
    pub fn parse(raw: &str) -> Result<Self, Error> {
        match raw {
            "strong" => Ok(Mode::Strong),
            "eventual" => Ok(Mode::Eventual),
            other => Err(Error::invalid(
                "invalid_counter_mode",
                format!("counter mode is strong or eventual, not {other:?}"),
            )),
        }
    }
}

/// A counter key: 1 to 1024 bytes of UTF-8, without control characters (spaces are fine).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct CounterKey(String);

impl CounterKey {
    pub fn parse(raw: &str) -> Result<Self, Error> {
        if raw.is_empty() || raw.len() > MAX_KEY_BYTES || raw.chars().any(char::is_control) {
            return Err(Error::invalid_field(
                "key",
                format!("`key` must be 1 to {MAX_KEY_BYTES} bytes without control characters"),
            ));
        }
        Ok(Self(raw.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// The answer to an increment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Incremented {
    /// Strong mode: the total including this increment.
    Total(u64),
    /// Eventual mode: the increment is durably in the log.
    Accepted,
}

pub fn overflow(key: &CounterKey, room: u64, value: u64) -> Error {
    Error::conflict(
        "overflow",
        format!(
            "counter {:?} cannot take {value} more: its total would pass {MAX_TOTAL}",
            key.as_str()
        ),
    )
    .with("room", room)
}

pub fn not_found(key: &str) -> Error {
    Error::not_found(
        "counter_not_found",
        format!("counter {key:?} was never incremented"),
    )
}

/// The counter port.
#[async_trait]
pub trait Counters: Send + Sync {
    fn mode(&self) -> Mode;
    /// Adds `value` (strong: to the total; eventual: to the log). `request_id` makes it count once.
    async fn increment(
        &self,
        key: &CounterKey,
        value: u64,
        request_id: Option<&str>,
    ) -> Result<Incremented, Error>;
    /// The total folded so far; `None` if the counter was never incremented.
    async fn get(&self, key: &CounterKey) -> Result<Option<u64>, Error>;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_and_modes() {
        assert_eq!(
            CounterKey::parse("hello world").unwrap().as_str(),
            "hello world"
        );
        for bad in ["", "a\nb", &"k".repeat(1025)] {
            assert_eq!(CounterKey::parse(bad).unwrap_err().extra["field"], "key");
        }
        assert_eq!(Mode::parse("eventual").unwrap(), Mode::Eventual);
        assert!(Mode::parse("sometimes").is_err());
    }
}
