//! Counters (CONTRACT.md §4): exact totals, in one of two modes chosen per deployment.
//!
//! - Strong: an increment is in the total when it is acknowledged (`200` with the new total).
//! - Eventual: an increment is appended to a log (`202`), and a fold loop moves log entries into totals in the
//!   background, each exactly once, whatever crashes and redeliveries happen.
//!
//! Overflow (a total past 2^63 − 1) never happens, and one counter's overflow never touches another:
//!
//! - Strong mode refuses it when the increment arrives (`409 overflow` with the `room` left).
//! - Eventual mode refuses at once only an increment that no counter could take (over 2^63 − 1 by itself).
//!   Anything else is accepted without reading or writing the counter: that is what lets a hot counter take
//!   increments at the rate of its log instead of the rate of one item (on DynamoDB about 1,000 writes/s).
//!   An accepted increment that would take the total past 2^63 − 1 is refused when it is folded
//!   ([`fold`]): it is consumed without being counted, and the counter records it in its `refused` count,
//!   which `GET` shows (header `counter-refused`) and the fold loop logs. Checking at accept time would need
//!   the total, which is exactly the hot item eventual mode exists to avoid; a per-increment cap would have
//!   to be small enough that no burst could reach 2^63 − 1 before folding, which no fixed cap guarantees.
//!
//! With an idempotency key (the client's `Idempotency-Key`), an increment counts once however often it is
//! retried, even across crashes.

use crate::Error;
use async_trait::async_trait;

/// The largest total a counter can reach (and the largest single increment).
pub const MAX_TOTAL: u64 = i64::MAX as u64;
/// Longest counter key, in bytes of UTF-8.
pub const MAX_KEY_BYTES: usize = 1024;

/// How increments reach the totals; one per deployment. Spelled `strong` and `eventual`, on the command line
/// (with the `clap` feature, a `clap::ValueEnum`) and in `COUNTER_MODE` alike.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[cfg_attr(feature = "clap", derive(clap::ValueEnum))]
pub enum Mode {
    /// In the total when acknowledged.
    #[default]
    Strong,
    /// Logged when acknowledged, folded into the total within a second.
    Eventual,
}

impl Mode {
    /// The mode's name, as the command line and the template spell it.
    pub fn as_str(self) -> &'static str {
        match self {
            Mode::Strong => "strong",
            Mode::Eventual => "eventual",
        }
    }

    /// Parses `strong` or `eventual` (`400 invalid_counter_mode` otherwise).
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
    /// Validates a client's counter key (`400 invalid_field` otherwise).
    pub fn parse(raw: &str) -> Result<Self, Error> {
        if raw.is_empty() || raw.len() > MAX_KEY_BYTES || raw.chars().any(char::is_control) {
            return Err(Error::invalid_field(
                "key",
                format!("`key` must be 1 to {MAX_KEY_BYTES} bytes without control characters"),
            ));
        }
        Ok(Self(raw.to_owned()))
    }

    /// The key as given.
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
    /// Eventual mode, where the store keeps the `Idempotency-Key` itself ([`Counters::keeps_keys`]): an
    /// earlier attempt of this request was accepted, and this one adds nothing.
    AcceptedBefore,
}

/// `409 overflow`: the increment would take the total past [`MAX_TOTAL`]; `room` is what it can still take.
pub fn overflow(key: &CounterKey, room: u64, value: u64) -> Error {
    Error::conflict(
        "overflow",
        format!(
            "counter {} cannot take {value} more: its total would pass {MAX_TOTAL}",
            crate::error::quote(key.as_str())
        ),
    )
    .with("room", room)
}

/// `404 counter_not_found`: the counter was never incremented.
pub fn not_found(key: &str) -> Error {
    Error::not_found(
        "counter_not_found",
        format!("counter {} was never incremented", crate::error::quote(key)),
    )
}

/// What a counter holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Reading {
    /// Everything folded so far.
    pub total: u64,
    /// Eventual mode: accepted increments that were refused when folded, because they would have taken the
    /// total past [`MAX_TOTAL`].
    pub refused: u64,
}

/// The outcome of folding increments into one counter.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Folded {
    /// The total with the counted increments added.
    pub total: u64,
    /// Per increment, in the order given: counted (`true`) or refused (`false`).
    pub counted: Vec<bool>,
}

impl Folded {
    /// The sum of the counted increments.
    pub fn added(&self, values: &[u64]) -> u64 {
        values
            .iter()
            .zip(&self.counted)
            .filter(|(_, counted)| **counted)
            .map(|(v, _)| v)
            .sum()
    }

    /// How many increments were refused.
    pub fn refused(&self) -> u64 {
        self.counted.iter().filter(|c| !**c).count() as u64
    }
}

/// Folds increments, in log order, into a counter at `total`: each one that fits below [`MAX_TOTAL`] is
/// counted, each one that would pass it is refused (and a later, smaller one may still fit). Both backends
/// fold with this rule, so they agree on which increments a full counter refuses.
pub fn fold(total: u64, values: &[u64]) -> Folded {
    let mut total = total.min(MAX_TOTAL);
    let counted = values
        .iter()
        .map(|&v| {
            let fits = v <= MAX_TOTAL - total;
            if fits {
                total += v;
            }
            fits
        })
        .collect();
    Folded { total, counted }
}

/// The counter port.
#[async_trait]
pub trait Counters: Send + Sync {
    /// Strong or eventual: which answer an increment gets.
    fn mode(&self) -> Mode;
    /// Adds `value` (strong: to the total; eventual: to the log). `request_id` makes it count once.
    async fn increment(
        &self,
        key: &CounterKey,
        value: u64,
        request_id: Option<&str>,
    ) -> Result<Incremented, Error>;
    /// The counter as folded so far; `None` if it was never incremented.
    async fn read(&self, key: &CounterKey) -> Result<Option<Reading>, Error>;
    /// The total folded so far; `None` if the counter was never incremented.
    async fn get(&self, key: &CounterKey) -> Result<Option<u64>, Error> {
        Ok(self.read(key).await?.map(|r| r.total))
    }
    /// Whether this store keeps an increment's `Idempotency-Key` itself, in the one write that logs it:
    /// then the HTTP layer writes no record of its own. The store answers a retry with
    /// [`Incremented::AcceptedBefore`] and the same key with another counter or value with
    /// [`crate::idempotency::mismatch`].
    fn keeps_keys(&self) -> bool {
        false
    }
    /// The HTTP layer's word on a request this store ran with `request_id`: its answer is now recorded
    /// for its key (`recorded`), or never will be (released after a `5xx`, or the record's write failed).
    /// A store that keeps a request's memory in the item it wrote, so that a retry after a crash finds it,
    /// may let that memory go once the answer is recorded: a retry then gets the recorded answer. Never
    /// fails: a memory kept too long costs bytes, not correctness.
    async fn settled(&self, _request_id: &str, _recorded: bool) {}
    /// Waits until the writes this store queued to send on its own after a request (the removal of a
    /// settled request's memory) are sent, so a meter counts them before it reads its figures.
    async fn idle(&self) {}
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

    #[test]
    fn folding_counts_what_fits_and_refuses_the_rest() {
        let f = fold(MAX_TOTAL - 5, &[3, 3, 2, 0]);
        assert_eq!(f.counted, [true, false, true, true]);
        assert_eq!(
            (f.total, f.added(&[3, 3, 2, 0]), f.refused()),
            (MAX_TOTAL, 5, 1)
        );
        let f = fold(0, &[MAX_TOTAL, 1]);
        assert_eq!((f.total, f.refused()), (MAX_TOTAL, 1));
        assert_eq!(fold(7, &[]).total, 7);
    }
}
